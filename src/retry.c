/* retry.c - the classification table of spool-layout.md, as code.
 *
 * Order matters: a quota error wins over its HTTP status (APIYI sends an exhausted balance as a
 * 429 with the "saturated" message), and a refusal is recognised before a generic 4xx. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "retry.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

static void set(struct outcome *o, enum decision d, enum billed b, const char *code,
		const char *message)
{
	o->decision = d;
	o->billed = b;
	o->code = code;
	o->message = message;
}

static bool eq(const char *a, const char *b)
{
	return a && !strcmp(a, b);
}

static bool is_quota_code(const char *code)
{
	return eq(code, "insufficient_user_quota") || eq(code, "pre_consume_token_quota_failed") ||
	       eq(code, "insufficient_quota");
}

static bool is_refusal_code(const char *code)
{
	return eq(code, "moderation_blocked") || eq(code, "content_policy_violation");
}

static bool is_rate_code(const char *code, const char *status)
{
	return eq(code, "rate_limit_exceeded") || eq(code, "rate_limited") || eq(code, "429") ||
	       eq(status, "RESOURCE_EXHAUSTED");
}

static bool is_unavailable_code(const char *code, const char *status)
{
	return eq(code, "500") || eq(code, "502") || eq(code, "503") || eq(code, "504") ||
	       eq(code, "model_not_found") || eq(code, "do_request_failed") ||
	       eq(status, "UNAVAILABLE") || eq(status, "INTERNAL");
}

static bool is_auth_code(const char *code)
{
	return eq(code, "invalid_api_key") || eq(code, "invalid_token") || eq(code, "PERMISSION_DENIED") ||
	       eq(code, "UNAUTHENTICATED");
}

/* A Gemini 200 without an image, in APIYI's detection order. */
static const char *gemini_refusal(const struct response *r)
{
	if (r->block_reason)
		return "the prompt was blocked by the provider's safety filter";
	if (!r->has_candidates)
		return "the provider returned no candidates";
	if (r->candidates_tokens == 0)
		return "the image was rejected in review";
	if (r->finish_reason && strcmp(r->finish_reason, "STOP"))
		return "the image was blocked while it was generated";
	if (r->text)
		return "the model answered with text instead of an image";
	return "the provider returned no image";
}

static void copy_upstream(struct outcome *o, const struct response *r)
{
	const char *m = r->error_message ? r->error_message
		      : r->finish_message ? r->finish_message
		      : r->text ? r->text : "";
	o->upstream_message = m;
}

void retry_classify(const struct classify_input *in, struct outcome *o)
{
	const struct response *r = in->resp;
	memset(o, 0, sizeof(*o));
	o->retry_after_ms = -1;

	switch (in->transport) {
	case HTTP_NOT_SENT:
		set(o, DECIDE_RETRY, BILLED_NO, "network",
		    "could not reach the image service; will try again");
		return;
	case HTTP_TIMEOUT:
		set(o, DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "timeout",
		    "the image service did not answer in time; the attempt may have been charged");
		return;
	case HTTP_RESET:
	case HTTP_TRUNCATED:
		set(o, DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "network",
		    "the connection broke while the image was being returned; it may have been charged");
		return;
	case HTTP_TOO_BIG:
		set(o, DECIDE_FAIL, BILLED_YES, "bad_response",
		    "the image service returned more data than [limits] max_response_mb allows");
		return;
	case HTTP_DONE:
		break;
	}

	long s = in->status;
	const char *code = r->error_code;
	copy_upstream(o, r);
	if (s >= 200 && s < 300) {
		if (r->n_images > 0 || r->n_urls > 0) {
			set(o, DECIDE_SUCCEEDED, BILLED_YES, NULL, NULL);
			return;
		}
		/* A 2xx carrying only an error envelope: its code says what happened, as if it had
		 * come with the matching status. A refusal or an unknown code stays a billed refusal. */
		if (is_quota_code(code) || is_rate_code(code, r->error_status))
			s = 429;
		else if (is_auth_code(code) || is_auth_code(r->error_status))
			s = 401;
		else if (is_unavailable_code(code, r->error_status))
			s = 503;
	}
	if (s >= 200 && s < 300) {
		if (!r->is_json || r->n_bad_images > 0) {
			set(o, DECIDE_RETRY_BILLED, BILLED_YES, "bad_response",
			    "the image service returned a damaged answer");
			return;
		}
		if (r->candidates_tokens >= 0 || r->has_candidates || r->block_reason || r->finish_reason) {
			set(o, DECIDE_FAIL, BILLED_YES, "content_refused", gemini_refusal(r));
			return;
		}
		set(o, DECIDE_FAIL, BILLED_YES, "content_refused", "the provider returned no image");
		return;
	}

	if ((s == 429 || s == 403 || s == 402) && is_quota_code(code)) {
		set(o, DECIDE_HOLD, BILLED_NO, "quota_exhausted",
		    "the account's balance or quota is exhausted; jobs wait until it is topped up");
		return;
	}
	if ((s == 400 || s == 403) && is_refusal_code(code)) {
		set(o, DECIDE_FAIL, BILLED_NO, "content_refused",
		    "the request was refused by the provider's safety system; change the prompt");
		return;
	}
	if (s == 401 || (s == 403 && (is_auth_code(code) || !code || !*code))) {
		set(o, DECIDE_HOLD, BILLED_NO, "auth",
		    "the API key was refused; jobs wait until a working key is configured");
		return;
	}
	if (s == 429 || s == 500 || s == 502 || s == 503 || s == 504) {
		set(o, DECIDE_RETRY, BILLED_NO, s == 429 ? "rate_limited" : "upstream_unavailable",
		    s == 429 ? "the image service is busy (rate limited); will try again"
			     : "the image service is temporarily unavailable; will try again");
		o->retry_after_ms = retry_after_ms(in->retry_after, in->retry_after_ms, in->now_wall_ms,
						   3600 * 1000);
		if (o->retry_after_ms < 0 && r->retry_delay_ms >= 0)
			o->retry_after_ms = r->retry_delay_ms;
		return;
	}
	if (s == 524) {
		set(o, DECIDE_RETRY_BILLED, BILLED_UNKNOWN, "timeout",
		    "a proxy gave up waiting for the image service; the attempt may have been charged");
		return;
	}
	if (s == 403) {
		set(o, DECIDE_HOLD, BILLED_NO, "auth",
		    "the API key is not allowed to do this; jobs wait until the key works");
		return;
	}
	if (s >= 400 && s < 500) {
		set(o, DECIDE_FAIL, BILLED_NO, "invalid_request",
		    "the image service rejected the request as invalid");
		return;
	}
	set(o, DECIDE_RETRY, BILLED_NO, "upstream_unavailable",
	    "the image service answered with an unexpected error; will try again");
}

int64_t retry_after_ms(const char *ra, const char *ra_ms, int64_t now_wall_ms, int64_t cap_ms)
{
	int64_t ms = -1;
	char *end;
	/* Clamp before converting: a double out of int64_t's range is undefined behaviour. */
	if (ra_ms && *ra_ms) {
		double v = strtod(ra_ms, &end);
		if (end != ra_ms && !*end && v >= 0 && !isnan(v))
			ms = v > (double)cap_ms ? cap_ms : (int64_t)v;
	}
	if (ms < 0 && ra && *ra) {
		double v = strtod(ra, &end);
		if (end != ra && !*end && v >= 0 && !isnan(v)) {
			ms = v * 1000 > (double)cap_ms ? cap_ms : (int64_t)(v * 1000);
		} else {
			struct tm tm;
			memset(&tm, 0, sizeof(tm));
			const char *rest = strptime(ra, "%a, %d %b %Y %H:%M:%S GMT", &tm);
			if (rest && !*rest) {
				int64_t when = (int64_t)timegm(&tm) * 1000;
				ms = when > now_wall_ms ? when - now_wall_ms : 0;
			}
		}
	}
	if (ms > cap_ms)
		ms = cap_ms;
	return ms;
}

/* min(cap_ms, base_ms * 2^doublings), doubling no further once at the cap (no overflow). */
static int64_t doubled_capped(int64_t base_ms, int doublings, int64_t cap_ms)
{
	int64_t v = base_ms;
	for (int i = 0; i < doublings && v < cap_ms; i++)
		v *= 2;
	return v > cap_ms ? cap_ms : v;
}

int64_t retry_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t random)
{
	int64_t ceiling = doubled_capped(base_ms, attempt, cap_ms);
	if (ceiling <= 0)
		return 0;
	return (int64_t)(random % ((uint64_t)ceiling + 1));
}

int64_t retry_redelivery_ms(int failure, int64_t base_ms, int64_t cap_ms, uint64_t random)
{
	int64_t wait = doubled_capped(base_ms, failure - 1, cap_ms);
	if (wait <= 0)
		return 0;
	return wait - (int64_t)(random % ((uint64_t)wait / 4 + 1));
}

enum redelivery_verdict retry_redeliver(const struct redelivery_rule *rule, int failures,
					int64_t first_ms, int64_t now_ms, int64_t asked_ms,
					uint64_t random, int64_t *delay_ms)
{
	*delay_ms = 0;
	if (rule->give_up_after_ms > 0 && now_ms - first_ms > rule->give_up_after_ms)
		return REDELIVER_GIVE_UP;
	int64_t delay = retry_redelivery_ms(failures, rule->base_ms, rule->cap_ms, random);
	*delay_ms = asked_ms > delay ? asked_ms : delay;
	return REDELIVER_LATER;
}

const char *decision_name(enum decision d)
{
	static const char *names[] = {
		[DECIDE_SUCCEEDED] = "succeeded", [DECIDE_RETRY] = "retry",
		[DECIDE_RETRY_BILLED] = "retry", [DECIDE_FAIL] = "failed", [DECIDE_HOLD] = "hold",
	};
	return names[d];
}

enum billed retry_billed_by_status(long status)
{
	return status >= 200 && status < 300 ? BILLED_YES : status == 524 ? BILLED_UNKNOWN : BILLED_NO;
}

const char *billed_name(enum billed b)
{
	static const char *names[] = { [BILLED_NO] = "no", [BILLED_YES] = "yes",
				       [BILLED_UNKNOWN] = "unknown" };
	return names[b];
}
