/* test_retry.c - every row of the classification table in spool-layout.md §9, the Retry-After
 * forms, the backoff with an injected random source, and the redelivery of uploads and webhooks. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "retry.h"
#include "upstream.h"
#include "util.h"
#include "tap.h"

struct row {
	const char *name;
	enum http_transport transport;
	long status;
	const char *ra, *ra_ms;   /* headers */
	/* the parsed body */
	bool is_json;
	int n_images, n_urls, n_bad;
	const char *code, *message, *finish, *block, *text;
	bool has_candidates;
	long cand_tokens;
	int64_t retry_delay;
	/* want */
	enum decision decision;
	enum billed billed;
	const char *want_code;
	int64_t want_retry_after;
};

#define J .is_json = true
#define NOCAND .cand_tokens = -1, .retry_delay = -1

static const struct row rows[] = {
	{ "b64 success", HTTP_DONE, 200, "", "", J, 1, 0, 0, NULL, NULL, NULL, NULL, NULL, false, NOCAND,
	  DECIDE_SUCCEEDED, BILLED_YES, NULL, -1 },
	{ "url success", HTTP_DONE, 200, "", "", J, 0, 1, 0, NULL, NULL, NULL, NULL, NULL, false, NOCAND,
	  DECIDE_SUCCEEDED, BILLED_YES, NULL, -1 },
	{ "429 saturated", HTTP_DONE, 429, "", "", J, 0, 0, 0, NULL, "当前分组上游负载已饱和", NULL, NULL, NULL,
	  false, NOCAND, DECIDE_RETRY, BILLED_NO, "rate_limited", -1 },
	{ "429 retry-after seconds", HTTP_DONE, 429, "7", "", J, 0, 0, 0, NULL, "busy", NULL, NULL, NULL,
	  false, NOCAND, DECIDE_RETRY, BILLED_NO, "rate_limited", 7000 },
	{ "429 retry-after-ms wins", HTTP_DONE, 429, "7", "1500", J, 0, 0, 0, NULL, "busy", NULL, NULL,
	  NULL, false, NOCAND, DECIDE_RETRY, BILLED_NO, "rate_limited", 1500 },
	{ "429 google RetryInfo", HTTP_DONE, 429, "", "", J, 0, 0, 0, "429", "quota", NULL, NULL, NULL,
	  false, -1, 37000, DECIDE_RETRY, BILLED_NO, "rate_limited", 37000 },
	{ "500", HTTP_DONE, 500, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false, NOCAND,
	  DECIDE_RETRY, BILLED_NO, "upstream_unavailable", -1 },
	{ "502 empty body", HTTP_DONE, 502, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false,
	  NOCAND, DECIDE_RETRY, BILLED_NO, "upstream_unavailable", -1 },
	{ "503 model_not_found", HTTP_DONE, 503, "", "", J, 0, 0, 0, "model_not_found", "无可用渠道", NULL,
	  NULL, NULL, false, NOCAND, DECIDE_RETRY, BILLED_NO, "upstream_unavailable", -1 },
	{ "504", HTTP_DONE, 504, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false, NOCAND,
	  DECIDE_RETRY, BILLED_NO, "upstream_unavailable", -1 },
	{ "429 quota trap", HTTP_DONE, 429, "", "", J, 0, 0, 0, "insufficient_user_quota", "当前分组上游负载已饱和",
	  NULL, NULL, NULL, false, NOCAND, DECIDE_HOLD, BILLED_NO, "quota_exhausted", -1 },
	{ "403 quota", HTTP_DONE, 403, "", "", J, 0, 0, 0, "insufficient_user_quota", "用户额度不足", NULL,
	  NULL, NULL, false, NOCAND, DECIDE_HOLD, BILLED_NO, "quota_exhausted", -1 },
	{ "429 pre_consume quota", HTTP_DONE, 429, "", "", J, 0, 0, 0, "pre_consume_token_quota_failed",
	  "x", NULL, NULL, NULL, false, NOCAND, DECIDE_HOLD, BILLED_NO, "quota_exhausted", -1 },
	{ "connect refused", HTTP_NOT_SENT, 0, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false,
	  NOCAND, DECIDE_RETRY, BILLED_NO, "network", -1 },
	{ "timeout after send", HTTP_TIMEOUT, 0, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL,
	  false, NOCAND, DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "timeout", -1 },
	{ "reset mid-body", HTTP_RESET, 200, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false,
	  NOCAND, DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "network", -1 },
	{ "truncated body", HTTP_TRUNCATED, 200, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL,
	  false, NOCAND, DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "network", -1 },
	{ "524", HTTP_DONE, 524, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false, NOCAND,
	  DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "timeout", -1 },
	{ "400 moderation_blocked", HTTP_DONE, 400, "", "", J, 0, 0, 0, "moderation_blocked",
	  "rejected by the safety system", NULL, NULL, NULL, false, NOCAND, DECIDE_FAIL, BILLED_NO,
	  "content_refused", -1 },
	{ "403 moderation_blocked", HTTP_DONE, 403, "", "", J, 0, 0, 0, "moderation_blocked", "x", NULL,
	  NULL, NULL, false, NOCAND, DECIDE_FAIL, BILLED_NO, "content_refused", -1 },
	{ "400 content_policy_violation", HTTP_DONE, 400, "", "", J, 0, 0, 0, "content_policy_violation",
	  "x", NULL, NULL, NULL, false, NOCAND, DECIDE_FAIL, BILLED_NO, "content_refused", -1 },
	{ "gemini IMAGE_SAFETY", HTTP_DONE, 200, "", "", J, 0, 0, 0, NULL, NULL, "IMAGE_SAFETY", NULL,
	  NULL, true, 0, -1, DECIDE_FAIL, BILLED_YES, "content_refused", -1 },
	{ "gemini silent rejection", HTTP_DONE, 200, "", "", J, 0, 0, 0, NULL, NULL, "STOP", NULL, NULL,
	  true, 0, -1, DECIDE_FAIL, BILLED_YES, "content_refused", -1 },
	{ "gemini text only", HTTP_DONE, 200, "", "", J, 0, 0, 0, NULL, NULL, "STOP", NULL,
	  "I'm unable to help", true, 173, -1, DECIDE_FAIL, BILLED_YES, "content_refused", -1 },
	{ "gemini prompt blocked", HTTP_DONE, 200, "", "", J, 0, 0, 0, NULL, NULL, NULL,
	  "PROHIBITED_CONTENT", NULL, false, -1, -1, DECIDE_FAIL, BILLED_YES, "content_refused", -1 },
	{ "gemini candidates empty", HTTP_DONE, 200, "", "", J, 0, 0, 0, NULL, NULL, NULL, NULL, NULL,
	  false, -1, -1, DECIDE_FAIL, BILLED_YES, "content_refused", -1 },
	{ "openai data []", HTTP_DONE, 200, "", "", J, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false,
	  NOCAND, DECIDE_FAIL, BILLED_YES, "content_refused", -1 },
	{ "400 unknown_parameter", HTTP_DONE, 400, "", "", J, 0, 0, 0, "unknown_parameter", "x", NULL,
	  NULL, NULL, false, NOCAND, DECIDE_FAIL, BILLED_NO, "invalid_request", -1 },
	{ "404", HTTP_DONE, 404, "", "", J, 0, 0, 0, NULL, "x", NULL, NULL, NULL, false, NOCAND,
	  DECIDE_FAIL, BILLED_NO, "invalid_request", -1 },
	{ "413", HTTP_DONE, 413, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false, NOCAND,
	  DECIDE_FAIL, BILLED_NO, "invalid_request", -1 },
	{ "422", HTTP_DONE, 422, "", "", J, 0, 0, 0, NULL, "x", NULL, NULL, NULL, false, NOCAND,
	  DECIDE_FAIL, BILLED_NO, "invalid_request", -1 },
	{ "401 new-api", HTTP_DONE, 401, "", "", J, 0, 0, 0, "", "无效的令牌", NULL, NULL, NULL, false,
	  NOCAND, DECIDE_HOLD, BILLED_NO, "auth", -1 },
	{ "401 openai", HTTP_DONE, 401, "", "", J, 0, 0, 0, "invalid_api_key", "Incorrect API key", NULL,
	  NULL, NULL, false, NOCAND, DECIDE_HOLD, BILLED_NO, "auth", -1 },
	{ "403 forbidden", HTTP_DONE, 403, "", "", J, 0, 0, 0, NULL, "forbidden", NULL, NULL, NULL, false,
	  NOCAND, DECIDE_HOLD, BILLED_NO, "auth", -1 },
	{ "200 not json", HTTP_DONE, 200, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, false,
	  NOCAND, DECIDE_RETRY_BILLED, BILLED_YES, "bad_response", -1 },
	{ "200 bad base64", HTTP_DONE, 200, "", "", J, 0, 0, 1, NULL, NULL, NULL, NULL, NULL, false,
	  NOCAND, DECIDE_RETRY_BILLED, BILLED_YES, "bad_response", -1 },
	{ "body over the cap", HTTP_TOO_BIG, 200, "", "", false, 0, 0, 0, NULL, NULL, NULL, NULL, NULL,
	  false, NOCAND, DECIDE_FAIL, BILLED_YES, "bad_response", -1 },
};

static void test_classify(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct image img = { 0 };
		char *url = "http://x/y.png";
		struct response resp = {
			.is_json = r->is_json, .images = r->n_images ? &img : NULL,
			.n_images = (size_t)r->n_images, .urls = r->n_urls ? &url : NULL,
			.n_urls = (size_t)r->n_urls, .n_bad_images = r->n_bad,
			.error_code = (char *)r->code, .error_message = (char *)r->message,
			.finish_reason = (char *)r->finish, .block_reason = (char *)r->block,
			.text = (char *)r->text, .has_candidates = r->has_candidates,
			.candidates_tokens = r->cand_tokens, .retry_delay_ms = r->retry_delay,
		};
		struct classify_input in = { .transport = r->transport, .status = r->status,
					     .retry_after = r->ra, .retry_after_ms = r->ra_ms,
					     .resp = &resp, .now_wall_ms = 1764000000000 };
		struct outcome o;
		retry_classify(&in, &o);
		ok(o.decision == r->decision, "%s: decision %s (%d)", r->name, decision_name(o.decision),
		   o.decision);
		ok(o.billed == r->billed, "%s: billed %s", r->name, billed_name(o.billed));
		is_str(o.code, r->want_code, "%s: code", r->name);
		ok(o.retry_after_ms == r->want_retry_after, "%s: retry after %lld", r->name,
		   (long long)o.retry_after_ms);
		ok(r->decision == DECIDE_SUCCEEDED || (o.message && *o.message),
		   "%s: a friendly message", r->name);
		if (r->message)
			ok(!strcmp(o.upstream_message, r->message), "%s: upstream text kept", r->name);
	}
}

/* HTTP 200 whose body is only an {"error":{...}} envelope: classified by its code. */
static const struct envelope_row {
	const char *name;
	const char *code, *status;  /* error.code, Google's error.status */
	enum decision decision;
	enum billed billed;
	const char *want_code;
} envelope_rows[] = {
	{ "200 insufficient_user_quota", "insufficient_user_quota", NULL, DECIDE_HOLD, BILLED_NO,
	  "quota_exhausted" },
	{ "200 pre_consume quota", "pre_consume_token_quota_failed", NULL, DECIDE_HOLD, BILLED_NO,
	  "quota_exhausted" },
	{ "200 rate_limit_exceeded", "rate_limit_exceeded", NULL, DECIDE_RETRY, BILLED_NO,
	  "rate_limited" },
	{ "200 google 429 RESOURCE_EXHAUSTED", "429", "RESOURCE_EXHAUSTED", DECIDE_RETRY, BILLED_NO,
	  "rate_limited" },
	{ "200 invalid_api_key", "invalid_api_key", NULL, DECIDE_HOLD, BILLED_NO, "auth" },
	{ "200 google PERMISSION_DENIED", "403", "PERMISSION_DENIED", DECIDE_HOLD, BILLED_NO, "auth" },
	{ "200 google 503 UNAVAILABLE", "503", "UNAVAILABLE", DECIDE_RETRY, BILLED_NO,
	  "upstream_unavailable" },
	{ "200 model_not_found", "model_not_found", NULL, DECIDE_RETRY, BILLED_NO,
	  "upstream_unavailable" },
	{ "200 moderation_blocked", "moderation_blocked", NULL, DECIDE_FAIL, BILLED_YES,
	  "content_refused" },
	{ "200 unknown code", "something_else", NULL, DECIDE_FAIL, BILLED_YES, "content_refused" },
};

static void test_envelope_200(void)
{
	for (size_t i = 0; i < sizeof(envelope_rows) / sizeof(envelope_rows[0]); i++) {
		const struct envelope_row *r = &envelope_rows[i];
		struct response resp = { .is_json = true, .error_code = (char *)r->code,
					 .error_status = (char *)r->status, .error_message = "oops",
					 .candidates_tokens = -1, .retry_delay_ms = -1 };
		struct classify_input in = { .transport = HTTP_DONE, .status = 200, .retry_after = "",
					     .retry_after_ms = "", .resp = &resp,
					     .now_wall_ms = 1764000000000 };
		struct outcome o;
		retry_classify(&in, &o);
		ok(o.decision == r->decision, "%s: decision %s", r->name, decision_name(o.decision));
		ok(o.billed == r->billed, "%s: billed %s", r->name, billed_name(o.billed));
		is_str(o.code, r->want_code, "%s: code", r->name);
	}
}

static void test_retry_after(void)
{
	int64_t now = 1764000000000; /* 2025-11-24T16:00:00Z */
	struct { const char *ra, *ms; int64_t want; } v[] = {
		{ "", "", -1 },
		{ "7", "", 7000 },
		{ "0.5", "", 500 },
		{ "", "250", 250 },
		{ "9", "250", 250 },
		{ "Mon, 24 Nov 2025 16:00:30 GMT", "", 30000 },
		{ "Mon, 24 Nov 2025 15:59:00 GMT", "", 0 },
		{ "soon", "", -1 },
		{ "-3", "", -1 },
		{ "999999", "", 3600000 },
		{ "1e300", "", 3600000 },
		{ "inf", "", 3600000 },
		{ "nan", "", -1 },
		{ "", "1e30", 3600000 },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int64_t got = retry_after_ms(v[i].ra, v[i].ms, now, 3600000);
		ok(got == v[i].want, "retry-after '%s' / ms '%s' -> %lld (want %lld)", v[i].ra, v[i].ms,
		   (long long)got, (long long)v[i].want);
	}
}

static void test_backoff(void)
{
	/* The random source decides where in [0, ceiling] we land: test both ends. */
	ok(retry_backoff_ms(0, 5000, 300000, 0) == 0, "attempt 0, random 0 -> 0");
	ok(retry_backoff_ms(0, 5000, 300000, 5000) == 5000, "attempt 0, top -> base");
	ok(retry_backoff_ms(1, 5000, 300000, 10000) == 10000, "attempt 1 ceiling 2*base");
	ok(retry_backoff_ms(2, 5000, 300000, 20000) == 20000, "attempt 2 ceiling 4*base");
	ok(retry_backoff_ms(2, 5000, 300000, 20001) == 0, "wraps within [0, ceiling]");
	ok(retry_backoff_ms(30, 5000, 300000, 300000) == 300000, "capped");
	ok(retry_backoff_ms(30, 5000, 300000, UINT64_MAX) <= 300000, "never above the cap");
	ok(retry_backoff_ms(3, 0, 300000, 12345) == 0, "base 0 -> no wait");
	static const struct { int failure; int64_t base, cap; uint64_t random; int64_t want; } re[] = {
		{ 1, 1000, 60000, 0, 1000 },          /* the first wait is the base */
		{ 1, 1000, 60000, 250, 750 },         /* less up to a quarter */
		{ 1, 1000, 60000, 251, 1000 },        /* random wraps within the quarter */
		{ 2, 1000, 60000, 0, 2000 },
		{ 4, 1000, 60000, 0, 8000 },
		{ 40, 1000, 60000, 0, 60000 },        /* capped */
		{ 40, 1000, 60000, 15000, 45000 },
		{ 3, 0, 60000, 7, 0 },
		/* Downloads of returned image URLs: base 1 s, [limits] download_retry_cap 30 s. The
		 * 19th wait (before try 20, the most download_attempts allows) was 2^18 s, 3 days. */
		{ 5, 1000, 30000, 0, 16000 },
		{ 19, 1000, 30000, 0, 30000 },
		{ 19, 1000, 30000, 7500, 22500 },
	};
	for (size_t i = 0; i < sizeof(re) / sizeof(re[0]); i++)
		ok(retry_redelivery_ms(re[i].failure, re[i].base, re[i].cap, re[i].random) == re[i].want,
		   "redelivery row %zu: failure %d -> %lld", i, re[i].failure, (long long)re[i].want);
	/* All 19 waits of 20 tries fit in the shortest link lifetime (FLUX, about 10 minutes:
	 * shared/upstream-api.md §1.8), however the random values fall. */
	int64_t waits_max = 0;
	for (int f = 1; f < 20; f++)
		waits_max += retry_redelivery_ms(f, 1000, 30000, 0);
	ok(waits_max == 451000 && waits_max < 600000, "download: 19 waits add up to %lld ms",
	   (long long)waits_max);
	int64_t spread_min = INT64_MAX, spread_max = 0;
	for (uint64_t r = 0; r < 1000; r++) {
		int64_t v = retry_backoff_ms(3, 1000, 60000, r * 7919);
		spread_min = v < spread_min ? v : spread_min;
		spread_max = v > spread_max ? v : spread_max;
	}
	ok(spread_min < 1000 && spread_max > 7000 && spread_max <= 8000, "full jitter spreads over [0, 8000]");
}

/* What store.c and outbox.c do after a failed delivery: every row a clock, a Retry-After and a
 * random value. */
static void test_redeliver(void)
{
	static const struct redelivery_rule webhook = { 5000, 3600000, 259200000 };  /* defaults */
	static const struct redelivery_rule upload = { 2000, 120000, 0 };
	static const struct {
		const char *name;
		const struct redelivery_rule *rule;
		int failures;
		int64_t first, now, asked;
		uint64_t random;
		enum redelivery_verdict want;
		int64_t want_delay;
	} redeliver_rows[] = {
		{ "webhook: first failure waits the base", &webhook, 1, 0, 1000, -1, 0,
		  REDELIVER_LATER, 5000 },
		{ "webhook: less up to a quarter", &webhook, 1, 0, 1000, -1, 1250, REDELIVER_LATER, 3750 },
		{ "webhook: doubling", &webhook, 3, 0, 60000, -1, 0, REDELIVER_LATER, 20000 },
		{ "webhook: capped at an hour", &webhook, 30, 0, 60000, -1, 0, REDELIVER_LATER, 3600000 },
		{ "webhook: a longer Retry-After wins", &webhook, 1, 0, 1000, 30000, 0,
		  REDELIVER_LATER, 30000 },
		{ "webhook: a shorter Retry-After does not", &webhook, 3, 0, 1000, 1000, 0,
		  REDELIVER_LATER, 20000 },
		{ "webhook: Retry-After 0 does not hurry it", &webhook, 1, 0, 1000, 0, 0,
		  REDELIVER_LATER, 5000 },
		{ "webhook: at the deadline, once more", &webhook, 9, 1000, 1000 + 259200000, -1, 0,
		  REDELIVER_LATER, 1280000 },
		{ "webhook: past the deadline, given up", &webhook, 9, 1000, 1001 + 259200000, -1, 0,
		  REDELIVER_GIVE_UP, 0 },
		{ "webhook: given up whatever it asked", &webhook, 2, 0, 259200001, 5000, 0,
		  REDELIVER_GIVE_UP, 0 },
		{ "webhook: a clock that went back is not past it", &webhook, 2, 5000, 0, -1, 0,
		  REDELIVER_LATER, 10000 },
		{ "upload: never given up", &upload, 1000, 0, INT64_MAX / 2, -1, 0, REDELIVER_LATER, 120000 },
		{ "upload: first wait", &upload, 1, 0, 0, -1, 500, REDELIVER_LATER, 1500 },
		{ "upload: random wraps within the quarter", &upload, 1, 0, 0, -1, 501, REDELIVER_LATER, 2000 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(redeliver_rows); i++) {
		int64_t delay = -7;
		enum redelivery_verdict v = retry_redeliver(redeliver_rows[i].rule, redeliver_rows[i].failures, redeliver_rows[i].first,
							    redeliver_rows[i].now, redeliver_rows[i].asked, redeliver_rows[i].random,
							    &delay);
		ok(v == redeliver_rows[i].want && delay == redeliver_rows[i].want_delay, "redeliver: %s (got %s, %lld ms)",
		   redeliver_rows[i].name, v == REDELIVER_GIVE_UP ? "give up" : "later", (long long)delay);
	}
}

/* An answer judged by its status alone (a crashed job's saved one, one lost at exit). */
static void test_billed_by_status(void)
{
	static const struct { long status; enum billed want; } by_status[] = {
		{ 200, BILLED_YES }, { 201, BILLED_YES }, { 299, BILLED_YES }, { 524, BILLED_UNKNOWN },
		{ 199, BILLED_NO }, { 300, BILLED_NO }, { 400, BILLED_NO }, { 429, BILLED_NO },
		{ 500, BILLED_NO }, { 503, BILLED_NO }, { 0, BILLED_NO },
	};
	for (size_t i = 0; i < ARRAY_SIZE(by_status); i++)
		ok(retry_billed_by_status(by_status[i].status) == by_status[i].want,
		   "billed by status alone: %ld is %s", by_status[i].status, billed_name(by_status[i].want));
}

int main(void)
{
	test_classify();
	test_billed_by_status();
	test_envelope_200();
	test_retry_after();
	test_backoff();
	test_redeliver();
	return tap_done();
}
