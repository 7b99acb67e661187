/* test_record.c - what the daemon believes of the records in a job file: clamped counters,
 * dropped junk, a new run for a finished job, the same fields back out, and a size bounded
 * however many attempts a job makes (issue 8, item 4). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "util.h"
#include "tap.h"

static const struct record_limits lim = { .max_retries = 2, .max_billed_retries = 1,
					  .max_crash_requeues = 3 };

static const struct row {
	const char *name;
	const char *state;       /* the "imgspool" value as JSON, NULL = absent */
	int retry_count, billed_retries, crashes;
	size_t attempts;
	long long created, retry_at;
	const char *finished;
} rows[] = {
	{ "absent", NULL, 0, 0, 0, 0, 0, 0, "" },
	{ "not an object", "[1,2]", 0, 0, 0, 0, 0, 0, "" },
	{ "as written", "{\"retry_count\":1,\"billed_retries\":1,\"crashes\":2,\"attempts\":[{},{}],"
	  "\"created_at_ms\":1764000000000,\"retry_at_ms\":1764000005000}",
	  1, 1, 2, 2, 1764000000000LL, 1764000005000LL, "" },
	{ "negative counts buy nothing", "{\"retry_count\":-1000,\"billed_retries\":-5,\"crashes\":-1}",
	  0, 0, 0, 0, 0, 0, "" },
	{ "huge counts are clamped", "{\"retry_count\":99,\"billed_retries\":99,"
	  "\"crashes\":2147483647}", 2, 1, 4, 0, 0, 0, "" },
	{ "wrong types", "{\"retry_count\":\"1\",\"crashes\":1.5,\"attempts\":{},\"created_at_ms\":-3}",
	  0, 0, 0, 0, 0, 0, "" },
	{ "attempts that are not objects are dropped", "{\"attempts\":[1,{},\"x\",null,{}]}",
	  0, 0, 0, 2, 0, 0, "" },
	{ "times past 9999 are dropped", "{\"created_at_ms\":9223372036854775807}", 0, 0, 0, 0, 0, 0, "" },
	{ "finished", "{\"finished\":\"failed\",\"error_code\":\"timeout\",\"attempts\":[{}]}",
	  0, 0, 0, 1, 0, 0, "failed" },
	{ "a strange finished is ignored", "{\"finished\":\"maybe\"}", 0, 0, 0, 0, 0, 0, "" },
};

/* An attempt as result.c writes one; billed "yes" every third, "unknown" every seventh. */
static json_t *attempt(int i)
{
	const char *billed = i % 3 == 0 ? "yes" : i % 7 == 0 ? "unknown" : "no";
	char rid[32];
	xsnprintf(rid, sizeof(rid), "req-%d", i);
	return json_pack("{s:s, s:i, s:s, s:s, s:o, s:s, s:s, s:s, s:f, s:o, s:s}",
			 "started_at", "2026-11-29T08:01:01.361+00:00", "latency_ms", 10 + i,
			 "provider", "apiyi", "model", "gpt-image-2", "http_status",
			 strcmp(billed, "no") ? json_integer(200) : json_integer(403), "transport",
			 "done", "outcome", strcmp(billed, "no") ? "retry" : "hold", "billed", billed,
			 "cost", strcmp(billed, "no") ? 0.04 : 0.0, "error_code",
			 strcmp(billed, "no") ? json_null() : json_string("quota_exhausted"),
			 "request_id", rid);
}

static size_t text_len(const struct record *r)
{
	char *text = record_text(r);
	size_t n = strlen(text);
	free(text);
	return n;
}

/* A hold probed every 5 s for a week is about 120 000 attempts: the records stay a few KiB,
 * list the last ones, and every figure still counts them all. */
static void check_long_hold(void)
{
	struct record r;
	record_init(&r);
	const int n = 120000;
	long billed = 0;
	double cost = 0;
	bool estimated = false;
	for (int i = 1; i <= n; i++) {
		json_t *a = attempt(i);
		const char *b = json_string_value(json_object_get(a, "billed"));
		if (strcmp(b, "no")) {
			billed++;
			cost += 0.04;
			estimated |= !strcmp(b, "unknown");
		}
		record_add_attempt(r.attempts, &r.elided, a);
	}
	struct record_tally all = r.elided;
	size_t i;
	json_t *a;
	json_array_foreach(r.attempts, i, a)
		record_tally_add(&all, a);
	ok(json_array_size(r.attempts) == RECORD_ATTEMPTS_MAX &&
	   r.elided.attempts == n - RECORD_ATTEMPTS_MAX, "a long hold: %zu listed, %ld elided",
	   json_array_size(r.attempts), r.elided.attempts);
	is_str(json_string_value(json_object_get(json_array_get(r.attempts, RECORD_ATTEMPTS_MAX - 1),
						 "request_id")), "req-120000", "the last attempt is listed");
	ok(all.attempts == n && all.billed == billed && fabs(all.cost - cost) < 1e-6 &&
	   all.estimated == estimated && !all.cost_unknown,
	   "the counts are those of every attempt: %ld billed of %ld", all.billed, all.attempts);
	size_t len = text_len(&r);
	ok(len < 8192, "the records take %zu bytes", len);

	/* Written and read back (a deferral, a requeue): the tally survives, nothing doubles. */
	struct record lim_r;
	record_init(&lim_r);
	json_t *out = record_json(&r);
	record_restore(&lim_r, out, &lim);
	ok(lim_r.elided.attempts == r.elided.attempts && lim_r.elided.billed == r.elided.billed &&
	   fabs(lim_r.elided.cost - r.elided.cost) < 1e-6 && lim_r.elided.estimated == r.elided.estimated &&
	   json_equal(lim_r.attempts, r.attempts), "the tally survives a round trip");
	json_decref(out);

	/* A new run keeps this one's last attempts and its tally. */
	xsnprintf(lim_r.finished, sizeof(lim_r.finished), "succeeded");
	record_new_run(&lim_r, 5);
	json_t *run = json_array_get(lim_r.runs, 0);
	json_t *elided = json_object_get(run, "elided");
	ok(json_array_size(json_object_get(run, "attempts")) == RECORD_ATTEMPTS_MAX &&
	   json_integer_value(json_object_get(elided, "attempts")) == n - RECORD_ATTEMPTS_MAX &&
	   lim_r.elided.attempts == 0 && json_array_size(lim_r.attempts) == 0,
	   "an earlier run keeps its last attempts and the count of the others");
	out = record_json(&lim_r);
	struct record again;
	record_init(&again);
	record_restore(&again, out, &lim);
	ok(json_equal(again.runs, lim_r.runs), "an earlier run's tally survives a round trip");
	record_release(&again);
	json_decref(out);
	record_release(&lim_r);
	record_release(&r);
}

/* Records as a hostile writer would leave them, every field at its longest: what is not what
 * the daemon writes is dropped, and the text stays within RECORD_TEXT_MAX, this run whole. */
static void check_worst_case(void)
{
	char big[200000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	char s40[41], s64[65], s128[129], s127[128];
	memset(s40, '9', 40), s40[40] = '\0';
	memset(s64, 'p', 64), s64[64] = '\0';
	memset(s128, 'm', 128), s128[128] = '\0';
	memset(s127, 'r', 127), s127[127] = '\0';
	json_t *worst = json_pack("{s:s, s:I, s:s, s:s, s:i, s:s, s:s, s:s, s:f, s:s, s:s, s:s}",
				  "started_at", s40, "latency_ms", (json_int_t)999999999999LL,
				  "provider", s64, "model", s128, "http_status", 999,
				  "transport", "xxxxxxxxxxxxxxxx", "outcome", "xxxxxxxxxxxxxxxx",
				  "billed", "xxxxxxxxxxxxxxxx", "cost", 123456789.123456789,
				  "error_code", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstu",
				  "request_id", s127, "junk", big);
	json_t *state = json_pack("{s:[], s:[], s:i}", "attempts", "runs", "runs_total", 999999);
	for (int i = 0; i < 3000; i++)
		json_array_append(json_object_get(state, "attempts"), worst);
	for (int k = 0; k < 20; k++) {
		json_t *run = json_pack("{s:i, s:s, s:s, s:I, s:[], s:s}", "run", k + 1, "status",
					"failed", "error_code", "timeout", "created_at_ms",
					(json_int_t)1764000000000LL, "attempts", "junk", big);
		for (int i = 0; i < 40; i++)
			json_array_append(json_object_get(run, "attempts"), worst);
		json_array_append_new(json_object_get(state, "runs"), run);
	}
	struct record r;
	record_init(&r);
	record_restore(&r, state, &lim);
	json_t *first = json_array_get(r.attempts, 0);
	ok(json_array_size(r.attempts) == RECORD_ATTEMPTS_MAX && !json_object_get(first, "junk") &&
	   json_object_size(first) == 11, "a hostile attempt keeps the daemon's %zu fields",
	   json_object_size(first));
	size_t len = text_len(&r);
	ok(len <= RECORD_TEXT_MAX, "the worst records take %zu bytes of %u", len, RECORD_TEXT_MAX);
	json_t *out = record_json(&r);
	ok(json_equal(json_object_get(out, "attempts"), r.attempts) &&
	   json_array_size(json_object_get(out, "runs")) >= 1,
	   "this run is whole, earlier runs give way (%zu of %zu kept)",
	   json_array_size(json_object_get(out, "runs")), json_array_size(r.runs));
	json_decref(out);
	/* Strings the daemon never writes: too long, or not plain ASCII. */
	json_t *bad = json_pack("{s:[{s:s, s:s, s:s, s:i, s:f}]}", "attempts", "request_id",
				"a\"quote", "model", big, "billed", "yes", "http_status", 70000,
				"cost", -1.0);
	record_restore(&r, bad, &lim);
	json_t *a = json_array_get(r.attempts, 0);
	ok(json_object_size(a) == 5 && json_object_get(a, "billed") &&
	   json_is_null(json_object_get(a, "request_id")) && json_is_null(json_object_get(a, "model")) &&
	   json_is_null(json_object_get(a, "http_status")) && json_is_null(json_object_get(a, "cost")),
	   "strange fields of an attempt are null or dropped (%zu left)", json_object_size(a));
	json_decref(bad);
	record_release(&r);
	json_decref(state);
	json_decref(worst);
}

/* A tally as written is clamped like every counter: it can only say more was spent. */
static const struct tally_row {
	const char *name;
	const char *elided;
	long attempts, billed;
	bool cost_unknown, estimated;
} tally_rows[] = {
	{ "as written", "{\"attempts\":5,\"billed\":2,\"cost\":0.08,\"estimated\":true}", 5, 2,
	  false, true },
	{ "negative counts", "{\"attempts\":-5,\"billed\":-2}", 0, 0, false, false },
	{ "more billed than made", "{\"attempts\":3,\"billed\":9,\"cost\":0}", 3, 3, false, false },
	{ "a cost that is no number", "{\"attempts\":3,\"billed\":1,\"cost\":\"x\"}", 3, 1, true,
	  false },
	{ "a negative cost", "{\"attempts\":3,\"billed\":1,\"cost\":-4}", 3, 1, true, false },
	{ "not an object", "[1]", 0, 0, false, false },
};

static void check_tally_rows(void)
{
	for (size_t i = 0; i < sizeof(tally_rows) / sizeof(tally_rows[0]); i++) {
		const struct tally_row *w = &tally_rows[i];
		char text[256];
		xsnprintf(text, sizeof(text), "{\"elided\":%s}", w->elided);
		json_t *state = json_loads(text, 0, NULL);
		struct record r;
		record_init(&r);
		record_restore(&r, state, &lim);
		ok(r.elided.attempts == w->attempts && r.elided.billed == w->billed &&
		   r.elided.cost_unknown == w->cost_unknown && r.elided.estimated == w->estimated,
		   "elided, %s: %ld %ld", w->name, r.elided.attempts, r.elided.billed);
		record_release(&r);
		json_decref(state);
	}
}

/* An earlier run's status is what a publication writes, or "unfinished". */
static void check_run_status(void)
{
	static const struct {
		const char *status_json;
		const char *want;
	} status_rows[] = {
		{ "\"succeeded\"", "succeeded" }, { "\"failed\"", "failed" },
		{ "\"maybe\"", "unfinished" }, { "\"Failed\"", "unfinished" },
		{ "5", "unfinished" }, { "null", "unfinished" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(status_rows); i++) {
		char *text = xasprintf("{\"runs\":[{\"run\":1,\"status\":%s}]}", status_rows[i].status_json);
		json_t *state = json_loads(text, 0, NULL);
		struct record r;
		record_init(&r);
		record_restore(&r, state, &lim);
		const char *got = json_string_value(json_object_get(json_array_get(r.runs, 0), "status"));
		is_str(got, status_rows[i].want, "a run whose status is %s", status_rows[i].status_json);
		record_release(&r);
		json_decref(state);
		free(text);
	}
}

/* Earlier runs give way, oldest first, to the byte: records whose text is exactly
 * RECORD_TEXT_MAX keep every run, one byte more drops the oldest, and each run dropped gives
 * back its text and a comma (an unpadded run, {"run":1,"status":"failed","pad":""}, is 36
 * bytes); records too big with the newest run alone keep none. */
static const struct fit_row {
	const char *name;
	size_t pad_run;          /* which of the three runs is padded (0 the oldest) */
	long over;               /* bytes past the text with all three that just fits */
	size_t kept;
	bool full;               /* the text kept is exactly RECORD_TEXT_MAX */
} fit_rows[] = {
	{ "exactly full", 0, 0, 3, true },
	{ "a byte short", 0, -1, 3, false },
	{ "a byte over", 0, 1, 2, false },
	{ "over by the oldest run and its comma", 1, 37, 2, true },
	{ "a byte more", 1, 38, 1, false },
	{ "over by two runs", 2, 74, 1, true },
	{ "a byte more than two", 2, 75, 0, false },
};

static void fit_record(struct record *r, size_t pad_run, size_t pad)
{
	record_init(r);
	r->runs_total = 3;
	for (int i = 0; i < 3; i++) {
		char *text = xcalloc(1, pad + 1);
		memset(text, 'p', (size_t)i == pad_run ? pad : 0);
		json_array_append_new(r->runs, json_pack("{s:i, s:s, s:s}", "run", i + 1, "status",
							 "failed", "pad", text));
		free(text);
	}
}

static void check_runs_that_fit(void)
{
	for (size_t i = 0; i < sizeof(fit_rows) / sizeof(fit_rows[0]); i++) {
		const struct fit_row *w = &fit_rows[i];
		struct record r;
		fit_record(&r, w->pad_run, 0);
		size_t pad = RECORD_TEXT_MAX - text_len(&r) + (size_t)w->over;
		record_release(&r);
		fit_record(&r, w->pad_run, pad);
		json_t *out = record_json(&r);
		json_t *runs = json_object_get(out, "runs");
		size_t kept = json_array_size(runs);
		json_t *newest = json_array_get(runs, kept ? kept - 1 : 0);
		size_t len = text_len(&r);
		ok(kept == w->kept && (!kept || json_integer_value(json_object_get(newest, "run")) == 3) &&
		   len <= RECORD_TEXT_MAX && (len == RECORD_TEXT_MAX) == w->full,
		   "%s: %zu runs kept, the newest last, %zu bytes", w->name, kept, len);
		json_decref(out);
		record_release(&r);
	}
	/* Too big without any run: none kept. */
	struct record r;
	fit_record(&r, 0, 0);
	for (int i = 0; i < 400; i++)
		json_array_append_new(r.attempts, attempt(i));
	json_t *out = record_json(&r);
	ok(json_array_size(json_object_get(out, "runs")) == 0 && json_object_get(out, "runs_total"),
	   "records too big without runs keep none, and their count");
	json_decref(out);
	record_release(&r);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *w = &rows[i];
		json_t *state = w->state ? json_loads(w->state, 0, NULL) : NULL;
		struct record r;
		record_init(&r);
		record_restore(&r, state, &lim);
		ok(r.retry_count == w->retry_count && r.billed_retries == w->billed_retries &&
		   r.crashes == w->crashes, "%s: counters %d %d %d", w->name, r.retry_count,
		   r.billed_retries, r.crashes);
		ok(json_array_size(r.attempts) == w->attempts, "%s: %zu attempts", w->name,
		   json_array_size(r.attempts));
		ok(r.created_at_ms == w->created && r.retry_at_ms == w->retry_at, "%s: times", w->name);
		is_str(r.finished, w->finished, "%s: finished", w->name);
		/* Written back and read again: the same. */
		json_t *out = record_json(&r);
		struct record again;
		record_init(&again);
		record_restore(&again, out, &lim);
		ok(again.retry_count == r.retry_count && again.crashes == r.crashes &&
		   json_array_size(again.attempts) == json_array_size(r.attempts) &&
		   again.retry_at_ms == r.retry_at_ms && !strcmp(again.finished, r.finished),
		   "%s: survives a round trip", w->name);
		record_release(&again);
		json_decref(out);
		record_release(&r);
		json_decref(state);
	}

	/* A finished run resubmitted: a fresh budget, the old run kept, runs bounded. */
	struct record r;
	record_init(&r);
	json_t *state = json_loads("{\"finished\":\"failed\",\"error_code\":\"upstream_unavailable\","
				   "\"retry_count\":2,\"billed_retries\":1,\"crashes\":1,"
				   "\"attempts\":[{\"n\":1},{\"n\":2}],\"created_at_ms\":5}", 0, NULL);
	record_restore(&r, state, &lim);
	record_new_run(&r, 1000);
	ok(r.retry_count == 0 && r.billed_retries == 0 && r.crashes == 0 &&
	   json_array_size(r.attempts) == 0 && r.created_at_ms == 1000 && !r.finished[0],
	   "a new run starts with a fresh budget");
	json_t *run = json_array_get(r.runs, 0);
	ok(json_array_size(r.runs) == 1 && r.runs_total == 1 &&
	   json_integer_value(json_object_get(run, "run")) == 1 &&
	   !strcmp(json_string_value(json_object_get(run, "status")), "failed") &&
	   !strcmp(json_string_value(json_object_get(run, "error_code")), "upstream_unavailable") &&
	   json_array_size(json_object_get(run, "attempts")) == 2, "the old run is kept");
	for (int i = 0; i < 20; i++) {
		xsnprintf(r.finished, sizeof(r.finished), "failed");
		record_new_run(&r, 2000 + i);
	}
	ok(json_array_size(r.runs) == RECORD_RUNS_MAX && r.runs_total == 21,
	   "runs are bounded: %zu kept of %ld", json_array_size(r.runs), r.runs_total);
	json_t *out = record_json(&r);
	struct record again;
	record_init(&again);
	record_restore(&again, out, &lim);
	ok(again.runs_total == 21 && json_array_size(again.runs) == RECORD_RUNS_MAX,
	   "run numbering survives a round trip");
	record_release(&again);
	json_decref(out);
	json_decref(state);
	record_release(&r);
	check_run_status();
	check_long_hold();
	check_worst_case();
	check_tally_rows();
	check_runs_that_fit();
	return tap_done();
}
