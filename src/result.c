/* result.c - the result document: what a finished job's ID.result.json says, and the names of
 * its images. Pure; publish.c puts them in place. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsontext.h"
#include "record.h"
#include "result.h"
#include "spool.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

char *result_image_name(const char *id, size_t index, size_t n, const char *ext)
{
	if (n == 1)
		return xasprintf("%s.%s", id, ext);
	return xasprintf("%s.%zu.%s", id, index + 1, ext);
}

static json_t *time_json(int64_t wall)
{
	char buf[48];
	format_time_iso8601(wall, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *result_attempt_json(const struct attempt *a)
{
	json_t *o = json_object();
	json_object_set_new_nocheck(o, "started_at", time_json(a->started_wall_ms));
	json_object_set_new_nocheck(o, "latency_ms", json_integer(a->latency_ms));
	json_object_set_new_nocheck(o, "provider", str_or_null(a->provider));
	json_object_set_new_nocheck(o, "model", str_or_null(a->model));
	json_object_set_new_nocheck(o, "http_status", a->http_status ? json_integer(a->http_status) : json_null());
	json_object_set_new_nocheck(o, "transport", json_string(a->transport));
	json_object_set_new_nocheck(o, "outcome", json_string(a->outcome));
	json_object_set_new_nocheck(o, "billed", json_string(a->billed));
	json_object_set_new_nocheck(o, "cost", a->cost_known ? json_real(a->cost) : json_null());
	json_object_set_new_nocheck(o, "error_code", str_or_null(a->error_code));
	json_object_set_new_nocheck(o, "request_id",
			    a->request_id && *a->request_id ? json_string(a->request_id) : json_null());
	return o;
}

/* The job's cost: the sum of its attempts' costs; null when an attempt that may have been
 * billed has no price; an estimate when the billing of one is unknown. */
static json_t *cost_json(const struct record_tally *t, const char *currency)
{
	double sum = round(t->cost * 1e9) / 1e9;  /* 0.1 + 0.2 is 0.3 in a bill */
	return json_pack("{s:o, s:s, s:b}", "amount", t->cost_unknown ? json_null() : json_real(sum),
			 "currency", currency ? currency : "USD", "estimated", t->estimated);
}

static char *dump(json_t *o)
{
	char *text = jsontext_dump(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15),
				   SIZE_MAX, NULL);
	if (!text)
		out_of_memory("writing a result");   /* fails only so: its strings are UTF-8 */
	return text;
}

/* json_dumps with costs written as a person would (0.04, not 0.040000000000000001), and the
 * client's metadata spliced in as its bytes are: never re-serialised, which would change its
 * numbers and could make it several times larger (indented, or 1e-7 written out in full), so a
 * result is at most its metadata plus RESULT_HEADROOM, checked here before the metadata is
 * copied: NULL when what the daemon writes passes headroom (*own_len says how much). The layout
 * is for people to read; clients parse the JSON (spool-layout.md section 6). */
static char *dump_result(json_t *o, const char *metadata, size_t metadata_len, size_t headroom,
			 size_t *own_len)
{
	json_object_set_new_nocheck(o, "metadata", json_null());
	char *text = dump(o);
	static const char tail[] = "\"metadata\": null\n}";
	size_t len = strlen(text), tlen = strlen(tail);
	*own_len = len + 1;   /* and its last newline */
	if (*own_len > headroom) {
		free(text);
		return NULL;
	}
	if (!metadata || len < tlen || strcmp(text + len - tlen, tail))
		return text;
	static const char key[] = "\"metadata\": ";
	size_t at = len - tlen, klen = strlen(key);
	char *whole = xmalloc(at + klen + metadata_len + 3);
	memcpy(whole, text, at);
	memcpy(whole + at, key, klen);
	memcpy(whole + at + klen, metadata, metadata_len);
	memcpy(whole + at + klen + metadata_len, "\n}", 3);
	free(text);
	return whole;
}

/* The upstream's usage, unless it is too big to keep a result within RESULT_HEADROOM: indented
 * alone within RESULT_USAGE_MAX, it takes at most twice that one level deeper in the result.
 * Written out to measure it, but never past the cap: a usage of megabytes costs no copy. */
static json_t *usage_json(json_t *usage)
{
	if (!usage)
		return json_null();
	char *text = jsontext_dump(usage, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY,
				   RESULT_USAGE_MAX, NULL);
	bool fits = text;
	free(text);
	return fits ? json_incref(usage) : json_null();
}

static json_t *images_json(const struct result_info *r)
{
	json_t *images = json_array();
	for (size_t i = 0; i < r->n_images; i++) {
		char *name = result_image_name(r->task_id, i, r->n_images, r->images[i].ext);
		json_array_append_new(images, json_string(name));
		free(name);
	}
	return images;
}

static json_t *urls_json(const struct result_info *r)
{
	json_t *urls = json_array();
	for (size_t i = 0; r->urls && i < r->n_images; i++)
		json_array_append_new(urls, json_string(r->urls[i]));
	return urls;
}

static const char *error_code(const struct result_info *r)
{
	return r->error_code ? r->error_code : "internal";
}

/* Every figure counts the attempts no longer listed too (record.h). */
static struct record_tally tally(const struct result_info *r)
{
	struct record_tally all = { 0 };
	if (r->elided)
		all = *r->elided;
	size_t i;
	json_t *a;
	json_array_foreach(r->attempts, i, a)
		record_tally_add(&all, a);
	return all;
}

char *result_to_json(const struct result_info *r, size_t *own_len)
{
	size_t own;
	own_len = own_len ? own_len : &own;
	json_t *o = json_object();
	json_object_set_new_nocheck(o, "task_id", json_string(r->task_id));
	json_object_set_new_nocheck(o, "status", json_string(r->succeeded ? "succeeded" : "failed"));
	json_object_set_new_nocheck(o, "provider", str_or_null(r->provider));
	json_object_set_new_nocheck(o, "model", str_or_null(r->model));
	json_object_set_new_nocheck(o, "dialect", str_or_null(r->dialect));
	json_object_set_new_nocheck(o, "images", images_json(r));
	json_object_set_new_nocheck(o, "images_dropped", json_integer((json_int_t)r->images_dropped));
	json_object_set_new_nocheck(o, "urls", urls_json(r));
	json_object_set_new_nocheck(o, "output_url", r->urls && r->n_images ? json_string(r->urls[0])
								  : json_null());
	json_object_set_new_nocheck(o, "retry_count", json_integer(r->retry_count));
	struct record_tally all = tally(r);
	/* Trimmed: every attempt is counted, none listed (the job file's records keep them). */
	json_t *attempts = r->attempts && !r->trimmed ? json_incref(r->attempts) : json_array();
	long elided = r->trimmed ? all.attempts : r->elided ? r->elided->attempts : 0;
	json_object_set_new_nocheck(o, "billed_attempts", json_integer((json_int_t)all.billed));
	json_object_set_new_nocheck(o, "attempts_elided", json_integer((json_int_t)elided));
	json_object_set_new_nocheck(o, "attempts", attempts);
	json_object_set_new_nocheck(o, "cost", cost_json(&all, r->currency));
	json_object_set_new_nocheck(o, "latency_ms", json_integer(r->latency_ms));
	json_object_set_new_nocheck(o, "usage", r->trimmed ? json_null() : usage_json(r->usage));
	if (!r->succeeded) {
		json_t *e = json_object();
		json_object_set_new_nocheck(e, "code", json_string(error_code(r)));
		json_object_set_new_nocheck(e, "message", json_string(r->error_message ? r->error_message : ""));
		json_object_set_new_nocheck(e, "upstream_message",
				    r->trimmed ? json_null() : str_or_null(r->error_upstream_message));
		if (r->error_field && !r->trimmed)
			json_object_set_new_nocheck(e, "field", json_string(r->error_field));
		json_object_set_new_nocheck(o, "error", e);
	} else {
		json_object_set_new_nocheck(o, "error", json_null());
	}
	json_object_set_new_nocheck(o, "created_at", time_json(r->created_wall_ms));
	json_object_set_new_nocheck(o, "updated_at", time_json(r->updated_wall_ms));
	/* A trimmed result is bounded by construction (test_result's worst case): always written. */
	size_t headroom = r->trimmed ? SIZE_MAX : r->headroom ? r->headroom : RESULT_HEADROOM;
	char *text = dump_result(o, r->metadata, r->metadata_len, headroom, own_len);
	json_decref(o);
	if (!text)
		return NULL;
	size_t len = strlen(text);
	char *with_nl = xrealloc(text, len + 2);
	with_nl[len] = '\n';
	with_nl[len + 1] = '\0';
	return with_nl;
}

/* A number as the result document says it (JSON_REAL_PRECISION(15)) and a reader parses it:
 * what an event built from the document carried. */
static double as_written(double v)
{
	char text[64];
	xsnprintf(text, sizeof(text), "%.15g", v);
	return strtod(text, NULL);
}

json_t *result_event_data(const struct result_info *r)
{
	struct record_tally all = tally(r);
	json_t *cost = cost_json(&all, r->currency);
	if (!cost)
		cost = json_null();   /* as a document without "cost" says: a sum past any double */
	json_t *amount = json_object_get(cost, "amount");
	if (json_is_real(amount))
		json_real_set(amount, as_written(json_real_value(amount)));
	return json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "task_id", r->task_id,
			 "status", r->succeeded ? "succeeded" : "failed",
			 "error_code", r->succeeded ? json_null() : json_string(error_code(r)),
			 "images", images_json(r), "urls", urls_json(r), "cost", cost);
}
