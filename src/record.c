/* record.c - the daemon's records in a job file, read as hostile and written back.
 *
 * Reading never fails: what is malformed or out of bounds is clamped or dropped, always towards
 * fewer calls. Writing is the same fields back, so a record survives any number of moves. */
#include <stdint.h>
#include <string.h>

#include "record.h"
#include "util.h"
#include "banned.h"

void record_init(struct record *r)
{
	memset(r, 0, sizeof(*r));
	r->attempts = json_array();
	r->runs = json_array();
}

void record_release(struct record *r)
{
	json_decref(r->attempts);
	json_decref(r->runs);
	memset(r, 0, sizeof(*r));
}

/* An integer member clamped to [0, max]; anything else is 0. */
static int clamp_int(const json_t *state, const char *key, int max)
{
	const json_t *v = json_object_get(state, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	return json_integer_value(v) > max ? max : (int)json_integer_value(v);
}

static int64_t time_ms(const json_t *state, const char *key)
{
	const json_t *v = json_object_get(state, key);
	/* Up to the year 9999: later than that is nonsense, and overflows nothing. */
	if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
	    json_integer_value(v) > 253402300799999LL)
		return 0;
	return (int64_t)json_integer_value(v);
}

/* The last max objects of an array, as a new array. */
static json_t *last_objects(const json_t *v, size_t max)
{
	json_t *out = json_array();
	size_t n = json_array_size(v), i = n > max ? n - max : 0;
	for (; i < n; i++)
		if (json_is_object(json_array_get(v, i)))
			json_array_append_new(out, json_deep_copy(json_array_get(v, i)));
	return out;
}

static void copy_string(char *out, size_t size, const json_t *v, bool (*allowed)(const char *))
{
	const char *s = json_string_value(v);
	out[0] = '\0';
	if (s && allowed(s))
		xsnprintf(out, size, "%s", s);
}

static bool is_status(const char *s)
{
	return !strcmp(s, "succeeded") || !strcmp(s, "failed");
}

static bool is_code(const char *s)
{
	size_t n = strlen(s);
	if (!n || n >= 48)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
			return false;
	return true;
}

void record_restore(struct record *r, const json_t *state, const struct record_limits *lim)
{
	record_release(r);
	record_init(r);
	if (!json_is_object(state))
		return;
	json_decref(r->attempts);
	r->attempts = last_objects(json_object_get(state, "attempts"), SIZE_MAX);
	json_decref(r->runs);
	r->runs = last_objects(json_object_get(state, "runs"), RECORD_RUNS_MAX);
	const json_t *total = json_object_get(state, "runs_total");
	r->runs_total = (long)json_array_size(r->runs);
	if (json_is_integer(total) && json_integer_value(total) > r->runs_total &&
	    json_integer_value(total) < 1000000)
		r->runs_total = (long)json_integer_value(total);
	r->retry_count = clamp_int(state, "retry_count", lim->max_retries);
	r->billed_retries = clamp_int(state, "billed_retries", lim->max_billed_retries);
	r->crashes = clamp_int(state, "crashes", lim->max_crash_requeues + 1);
	r->created_at_ms = time_ms(state, "created_at_ms");
	r->retry_at_ms = time_ms(state, "retry_at_ms");
	copy_string(r->finished, sizeof(r->finished), json_object_get(state, "finished"), is_status);
	copy_string(r->error_code, sizeof(r->error_code), json_object_get(state, "error_code"), is_code);
}

void record_new_run(struct record *r, int64_t created_at_ms)
{
	json_t *run = json_pack("{s:I, s:s, s:o, s:I, s:o}", "run", (json_int_t)r->runs_total + 1,
				"status", r->finished[0] ? r->finished : "unfinished", "error_code",
				r->error_code[0] ? json_string(r->error_code) : json_null(),
				"created_at_ms", (json_int_t)r->created_at_ms,
				"attempts", last_objects(r->attempts, RECORD_RUN_ATTEMPTS_MAX));
	json_array_append_new(r->runs, run);
	while (json_array_size(r->runs) > RECORD_RUNS_MAX)
		json_array_remove(r->runs, 0);
	r->runs_total++;
	json_array_clear(r->attempts);
	r->retry_count = r->billed_retries = r->crashes = 0;
	r->created_at_ms = created_at_ms;
	r->retry_at_ms = 0;
	r->finished[0] = r->error_code[0] = '\0';
}

json_t *record_json(const struct record *r)
{
	json_t *o = json_pack("{s:O, s:i, s:i, s:I, s:i}", "attempts", r->attempts, "retry_count",
			      r->retry_count, "billed_retries", r->billed_retries, "created_at_ms",
			      (json_int_t)r->created_at_ms, "crashes", r->crashes);
	if (r->retry_at_ms)
		json_object_set_new(o, "retry_at_ms", json_integer((json_int_t)r->retry_at_ms));
	if (r->finished[0]) {
		json_object_set_new(o, "finished", json_string(r->finished));
		json_object_set_new(o, "error_code",
				    r->error_code[0] ? json_string(r->error_code) : json_null());
	}
	if (r->runs_total) {
		json_object_set_new(o, "runs", json_incref(r->runs));
		json_object_set_new(o, "runs_total", json_integer(r->runs_total));
	}
	return o;
}
