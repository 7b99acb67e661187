/* test_record.c - what the daemon believes of the records in a job file: clamped counters,
 * dropped junk, a new run for a finished job, and the same fields back out. */
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
	return tap_done();
}
