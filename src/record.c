/* record.c - the daemon's records in a job file, read as hostile and written back, bounded.
 *
 * Reading never fails: what is malformed or out of bounds is clamped or dropped, always towards
 * fewer calls. Every attempt, whether restored or just made, goes through one cleaning (known
 * fields of bounded size) and one trimming (the last RECORD_ATTEMPTS_MAX listed, the rest tallied),
 * the same for this run and earlier ones; earlier runs are cut to RECORD_RUNS_MAX and, should
 * they still not fit, to RECORD_TEXT_MAX bytes. So a record survives any number of moves at a
 * size known in advance. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsontext.h"
#include "record.h"
#include "util.h"
#include "banned.h"

#define COUNT_MAX 1000000000L        /* a tally's count: far past any real job, overflows nothing */
#define COST_MAX 1e12

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
static long clamp_long(const json_t *o, const char *key, long max)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	return json_integer_value(v) > max ? max : (long)json_integer_value(v);
}

static int clamp_int(const json_t *o, const char *key, int max)
{
	return (int)clamp_long(o, key, max);
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

/* ---- tallies ---- */

/* Attempts whose billing is unknown count as billed: a user reconciling cost wants the upper
 * bound. An attempt without a well-formed "billed" is taken as unknown. */
void record_tally_add(struct record_tally *t, const json_t *attempt)
{
	const char *billed = json_string_value(json_object_get(attempt, "billed"));
	bool free_call = billed && !strcmp(billed, "no");
	const json_t *cost = json_object_get(attempt, "cost");
	if (t->attempts < COUNT_MAX)
		t->attempts++;
	if (!free_call && t->billed < COUNT_MAX)
		t->billed++;
	if (json_is_number(cost))
		t->cost += json_number_value(cost);
	else if (!free_call)
		t->cost_unknown = true;
	if (!free_call && (!billed || strcmp(billed, "yes")))
		t->estimated = true;
}

static json_t *tally_json(const struct record_tally *t)
{
	return json_pack("{s:I, s:I, s:o, s:b}", "attempts", (json_int_t)t->attempts, "billed",
			 (json_int_t)t->billed, "cost",
			 t->cost_unknown ? json_null() : json_real(round(t->cost * 1e9) / 1e9),
			 "estimated", t->estimated);
}

/* A tally as written, held to the same rule: counts clamped, a cost that is not a sane number
 * is unknown when anything may have been billed. */
static void tally_restore(struct record_tally *t, const json_t *v)
{
	memset(t, 0, sizeof(*t));
	if (!json_is_object(v))
		return;
	t->attempts = clamp_long(v, "attempts", COUNT_MAX);
	t->billed = clamp_long(v, "billed", t->attempts);
	const json_t *cost = json_object_get(v, "cost");
	double c = json_is_number(cost) ? json_number_value(cost) : -1;
	if (c >= 0 && c < COST_MAX)
		t->cost = c;
	else
		t->cost_unknown = t->billed > 0;
	t->estimated = json_is_true(json_object_get(v, "estimated"));
}

/* ---- attempts ---- */

/* A string of printable ASCII without quotes or backslashes, at most max bytes: what the daemon
 * writes, one byte each in JSON, so an attempt's size is bounded. */
static bool plain_string(const json_t *v, size_t max)
{
	const char *s = json_string_value(v);
	if (!s || json_string_length(v) > max)
		return false;
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

enum field_kind { F_STRING, F_COUNT, F_STATUS, F_COST, F_CODE };

/* The fields of an attempt, in the order result.c writes them. */
static const struct attempt_field {
	const char *key;
	enum field_kind kind;
	size_t max;              /* bytes of a string */
	bool nullable;
} attempt_fields[] = {
	{ "started_at", F_STRING, 40, false }, { "latency_ms", F_COUNT, 0, false },
	{ "provider", F_STRING, 64, true }, { "model", F_STRING, 128, true },
	{ "http_status", F_STATUS, 0, true }, { "transport", F_STRING, 16, false },
	{ "outcome", F_STRING, 16, false }, { "billed", F_STRING, 16, false },
	{ "cost", F_COST, 0, true }, { "error_code", F_CODE, 0, true },
	{ "request_id", F_STRING, 127, true },
};

static bool field_good(const struct attempt_field *f, const json_t *v)
{
	if (json_is_null(v))
		return f->nullable;
	switch (f->kind) {
	case F_STRING:
		return plain_string(v, f->max);
	case F_COUNT:
		return json_is_integer(v) && json_integer_value(v) >= 0 &&
		       json_integer_value(v) < (json_int_t)COST_MAX;
	case F_STATUS:
		return json_is_integer(v) && json_integer_value(v) >= 100 && json_integer_value(v) <= 999;
	case F_COST:
		return json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) < COST_MAX;
	case F_CODE:
		return json_is_string(v) && is_code(json_string_value(v));
	}
	return false;
}

/* One attempt with only the fields the daemon writes (result.c), each of bounded size; a field
 * that is not what the daemon would write is null where null is allowed, else left out (a
 * missing "billed" counts as unknown). */
static json_t *clean_attempt(const json_t *a)
{
	json_t *o = json_object();
	for (size_t i = 0; i < ARRAY_SIZE(attempt_fields); i++) {
		const struct attempt_field *f = &attempt_fields[i];
		json_t *v = json_object_get(a, f->key);
		if (v && field_good(f, v))
			json_object_set(o, f->key, v);
		else if (v && f->nullable)
			json_object_set_new(o, f->key, json_null());
		else if (f->kind == F_COUNT && json_is_integer(v))   /* a clock stepped back */
			json_object_set_new(o, f->key, json_integer(0));
	}
	return o;
}

/* Keeps the last max attempts listed; the others go into elided. */
static void keep_last(json_t *attempts, struct record_tally *elided, size_t max)
{
	while (json_array_size(attempts) > max) {
		record_tally_add(elided, json_array_get(attempts, 0));
		json_array_remove(attempts, 0);
	}
}

void record_add_attempt(json_t *attempts, struct record_tally *elided, json_t *attempt)
{
	json_array_append_new(attempts, clean_attempt(attempt));
	json_decref(attempt);
	keep_last(attempts, elided, RECORD_ATTEMPTS_MAX);
}

/* A run's attempts as written: the objects among them, cleaned, the last ones listed. */
static json_t *restore_attempts(const json_t *v, struct record_tally *elided)
{
	json_t *out = json_array();
	size_t i;
	json_t *a;
	json_array_foreach(v, i, a)
		if (json_is_object(a))
			record_add_attempt(out, elided, json_incref(a));
	return out;
}

/* ---- runs ---- */

/* How a run ended, as the publication writes it. */
static bool is_status(const char *s)
{
	return !strcmp(s, "succeeded") || !strcmp(s, "failed");
}

static const char *run_status(const char *s)
{
	return s && is_status(s) ? s : "unfinished";
}

static json_t *run_json(json_int_t number, const char *status, const char *error_code,
			int64_t created_at_ms, json_t *attempts, const struct record_tally *elided)
{
	json_t *run = json_pack("{s:I, s:s, s:o, s:I, s:o}", "run", number, "status",
				run_status(status), "error_code",
				error_code && is_code(error_code) ? json_string(error_code) : json_null(),
				"created_at_ms", (json_int_t)created_at_ms, "attempts", attempts);
	if (elided->attempts)
		json_object_set_new_nocheck(run, "elided", tally_json(elided));
	return run;
}

/* An earlier run as written, rebuilt from what the daemon would write. */
static json_t *restore_run(const json_t *v)
{
	struct record_tally elided;
	tally_restore(&elided, json_object_get(v, "elided"));
	json_t *attempts = restore_attempts(json_object_get(v, "attempts"), &elided);
	return run_json(clamp_long(v, "run", 1000000), json_string_value(json_object_get(v, "status")),
			json_string_value(json_object_get(v, "error_code")), time_ms(v, "created_at_ms"),
			attempts, &elided);
}

static void copy_string(char *out, size_t size, const json_t *v, bool (*allowed)(const char *))
{
	const char *s = json_string_value(v);
	out[0] = '\0';
	if (s && allowed(s))
		xsnprintf(out, size, "%s", s);
}

void record_restore(struct record *r, const json_t *state, const struct record_limits *lim)
{
	record_release(r);
	record_init(r);
	if (!json_is_object(state))
		return;
	tally_restore(&r->elided, json_object_get(state, "elided"));
	json_decref(r->attempts);
	r->attempts = restore_attempts(json_object_get(state, "attempts"), &r->elided);
	const json_t *runs = json_object_get(state, "runs");
	size_t n = json_array_size(runs);
	for (size_t i = n > RECORD_RUNS_MAX ? n - RECORD_RUNS_MAX : 0; i < n; i++)
		if (json_is_object(json_array_get(runs, i)))
			json_array_append_new(r->runs, restore_run(json_array_get(runs, i)));
	const json_t *total = json_object_get(state, "runs_total");
	r->runs_total = (long)json_array_size(r->runs);
	if (json_is_integer(total) && json_integer_value(total) > r->runs_total &&
	    json_integer_value(total) < 1000000)
		r->runs_total = (long)json_integer_value(total);
	r->retry_count = clamp_int(state, "retry_count", lim->max_retries);
	r->billed_retries = clamp_int(state, "billed_retries", lim->max_billed_retries);
	r->crashes = clamp_int(state, "crashes", lim->max_crash_requeues + 1);
	r->finish_crashes = clamp_int(state, "finish_crashes", lim->max_crash_requeues + 1);
	r->created_at_ms = time_ms(state, "created_at_ms");
	r->retry_at_ms = time_ms(state, "retry_at_ms");
	copy_string(r->finished, sizeof(r->finished), json_object_get(state, "finished"), is_status);
	copy_string(r->error_code, sizeof(r->error_code), json_object_get(state, "error_code"), is_code);
}

void record_new_run(struct record *r, int64_t created_at_ms)
{
	json_array_append_new(r->runs, run_json((json_int_t)r->runs_total + 1, r->finished,
						r->error_code, r->created_at_ms, r->attempts,
						&r->elided));
	while (json_array_size(r->runs) > RECORD_RUNS_MAX)
		json_array_remove(r->runs, 0);
	r->runs_total++;
	r->attempts = json_array();
	memset(&r->elided, 0, sizeof(r->elided));
	r->retry_count = r->billed_retries = r->crashes = r->finish_crashes = 0;
	r->created_at_ms = created_at_ms;
	r->retry_at_ms = 0;
	r->finished[0] = r->error_code[0] = '\0';
}

/* The compact text's length of v, or SIZE_MAX past RECORD_TEXT_MAX. */
static size_t text_len_within_cap(const json_t *v)
{
	size_t len;
	char *text = jsontext_dump(v, JSON_COMPACT | JSON_PRESERVE_ORDER, RECORD_TEXT_MAX, &len);
	free(text);
	return text ? len : SIZE_MAX;
}

/* Puts runs (stolen) in o's "runs" (there, empty) without its oldest ones, as many as o's
 * compact text needs to fit RECORD_TEXT_MAX. Each is measured once: o's text is its text with
 * "runs":[] plus the runs' texts and a comma between two (a dump of o per run dropped was
 * quadratic in the records' size). */
static void set_runs_that_fit(json_t *o, json_t *runs)
{
	size_t len = text_len_within_cap(o);
	size_t n = json_array_size(runs), first = n;
	while (len != SIZE_MAX && first > 0) {   /* the newest that fit, counted from the last */
		size_t run = text_len_within_cap(json_array_get(runs, first - 1));
		size_t more = run == SIZE_MAX ? SIZE_MAX : run + (first < n);
		if (more > RECORD_TEXT_MAX - len)
			break;
		len += more;
		first--;
	}
	for (size_t i = 0; i < first; i++)
		json_array_remove(runs, 0);
	json_object_set_new_nocheck(o, "runs", runs);
}

json_t *record_json(const struct record *r)
{
	json_t *o = json_pack("{s:O, s:i, s:i, s:I, s:i}", "attempts", r->attempts, "retry_count",
			      r->retry_count, "billed_retries", r->billed_retries, "created_at_ms",
			      (json_int_t)r->created_at_ms, "crashes", r->crashes);
	if (r->finish_crashes)
		json_object_set_new_nocheck(o, "finish_crashes", json_integer(r->finish_crashes));
	if (r->elided.attempts)
		json_object_set_new_nocheck(o, "elided", tally_json(&r->elided));
	if (r->retry_at_ms)
		json_object_set_new_nocheck(o, "retry_at_ms", json_integer((json_int_t)r->retry_at_ms));
	if (r->finished[0]) {
		json_object_set_new_nocheck(o, "finished", json_string(r->finished));
		json_object_set_new_nocheck(o, "error_code",
				    r->error_code[0] ? json_string(r->error_code) : json_null());
	}
	if (r->runs_total) {
		/* Earlier runs give way to this one: a file the daemon wrote must stay readable. */
		json_object_set_new_nocheck(o, "runs", json_array());
		json_object_set_new_nocheck(o, "runs_total", json_integer(r->runs_total));
		set_runs_that_fit(o, json_copy(r->runs));
	}
	return o;
}

char *record_text(const struct record *r)
{
	json_t *o = record_json(r);
	char *text = jsontext_dump(o, JSON_COMPACT | JSON_PRESERVE_ORDER, SIZE_MAX, NULL);
	json_decref(o);
	if (!text)
		out_of_memory("writing a job's record");   /* fails only so: its strings are UTF-8 */
	return text;
}
