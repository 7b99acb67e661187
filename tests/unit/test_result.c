/* test_result.c - the result's cost: the sum of its attempts', null without a price, an
 * estimate with a call of unknown billing; costs printed as people write them; metadata kept to
 * the last digit. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "result.h"
#include "tap.h"
#include "util.h"

struct row {
	const char *name;
	const char *attempts;    /* JSON array */
	bool null_amount;
	double amount;
	bool estimated;
};

static const struct row rows[] = {
	{ "no attempt costs 0", "[]", false, 0, false },
	{ "a billed image", "[{\"billed\":\"yes\",\"cost\":0.04}]", false, 0.04, false },
	{ "free failures cost 0", "[{\"billed\":\"no\",\"cost\":0},{\"billed\":\"no\",\"cost\":0},"
	  "{\"billed\":\"yes\",\"cost\":0.1}]", false, 0.1, false },
	{ "an unknown billing counts at its price and makes an estimate",
	  "[{\"billed\":\"unknown\",\"cost\":0.2},{\"billed\":\"yes\",\"cost\":0.1}]", false, 0.3, true },
	{ "a billed call with no price: null", "[{\"billed\":\"yes\",\"cost\":null}]", true, 0, false },
	{ "a free call needs no price", "[{\"billed\":\"no\",\"cost\":null}]", false, 0, false },
	{ "an old record without cost, billed: null", "[{\"billed\":\"yes\"}]", true, 0, false },
	{ "an old record without cost, free: 0", "[{\"billed\":\"no\"}]", false, 0, false },
	{ "unknown billing without a price: null, estimated",
	  "[{\"billed\":\"unknown\",\"cost\":null}]", true, 0, true },
};

/* The longest attempt the records keep (record.c: each field at its bound). */
static json_t *longest_attempt(void)
{
	char provider[65], model[129], request_id[128];
	memset(provider, 'p', 64);
	provider[64] = '\0';
	memset(model, 'm', 128);
	model[128] = '\0';
	memset(request_id, 'r', 127);
	request_id[127] = '\0';
	struct attempt a = { .started_wall_ms = -62135596800000, .latency_ms = INT64_MAX,
			     .provider = provider, .model = model, .http_status = 599,
			     .transport = "interrupted", .outcome = "interrupted", .billed = "unknown",
			     .error_code = "upstream_unavailable_xxxxxxxxxxxxxxxxxxxxxxxxxxx",
			     .request_id = request_id, .cost_known = true, .cost = -1.2345678901234e-300 };
	return result_attempt_json(&a);
}

/* A result is at most its metadata (the client's bytes, however deep) plus RESULT_HEADROOM:
 * with the most the daemon writes of everything else, and an upstream's usage of any size. */
static void bound(void)
{
	enum { DEPTH = 31, UNITS = 20000 };
	struct buf meta;
	buf_init(&meta, 1 << 24);
	buf_append(&meta, "[", 1);
	for (int u = 0; u < UNITS; u++) {
		for (int i = 0; i < DEPTH; i++)
			buf_append(&meta, "[", 1);
		buf_append(&meta, "1e-7", 4);
		for (int i = 0; i < DEPTH; i++)
			buf_append(&meta, "]", 1);
		buf_append(&meta, u + 1 < UNITS ? "," : "]", 1);
	}
	json_t *attempts = json_array();
	for (int i = 0; i < 16; i++)
		json_array_append_new(attempts, longest_attempt());
	json_t *usage = json_array(), *deep = usage;   /* nested as deep as jansson parses */
	for (int i = 0; i < 2000; i++) {
		json_t *in = json_array();
		json_array_append_new(deep, in);
		deep = in;
	}
	char message[512], quoted[512];
	memset(message, 'e', sizeof(message) - 1);
	message[sizeof(message) - 1] = '\0';
	memset(quoted, '\x01', sizeof(quoted) - 1);   /* each written as \u0001 */
	quoted[sizeof(quoted) - 1] = '\0';
	struct record_tally elided = { .attempts = LONG_MAX, .billed = LONG_MAX, .cost = 1e300 };
	struct result_info info = { .task_id = "t", .succeeded = false, .provider = "p",
				    .model = "m", .dialect = "openai", .attempts = attempts,
				    .elided = &elided, .retry_count = INT32_MAX, .currency = "USD",
				    .usage = usage, .metadata = meta.data, .metadata_len = meta.len,
				    .error_code = "invalid_job", .error_message = message,
				    .error_upstream_message = quoted, .error_field = "metadata" };
	char *text = result_to_json(&info);
	size_t len = strlen(text);
	json_t *doc = json_loads(text, 0, NULL);
	ok(doc && len <= meta.len + RESULT_HEADROOM,
	   "a result is within its metadata and RESULT_HEADROOM (%zu + %zu bytes)", meta.len,
	   len - meta.len);
	ok(json_is_null(json_object_get(doc, "usage")), "an upstream's usage too big for it: null");
	json_decref(doc);
	free(text);
	json_decref(usage);
	json_decref(attempts);
	buf_release(&meta);
}

/* Bytes jansson allocated (json_set_alloc_funcs): what writing a result costs in copies. */
static size_t jansson_allocated;

static void *counting_malloc(size_t size)
{
	jansson_allocated += size;
	return malloc(size);
}

static size_t allocated_by_result(const struct result_info *info, size_t *len)
{
	size_t before = jansson_allocated;
	char *text = result_to_json(info);
	*len = strlen(text);
	free(text);
	return jansson_allocated - before;
}

/* An upstream's usage is measured, never written out to be measured: one too big for the result
 * costs no copy of itself, one that fits costs only its place in the result. */
static void usage_measured(void)
{
	json_t *big = json_array(), *fits = json_array();
	for (int i = 0; i < 100000; i++)   /* about 700 KB indented */
		json_array_append_new(big, json_integer(123456));
	for (int i = 0; i < 1500; i++)     /* about 10 KiB */
		json_array_append_new(fits, json_integer(123456));
	struct result_info info = { .task_id = "t", .succeeded = true, .currency = "USD" };
	size_t len_none, len_big, len_fits;
	size_t none = allocated_by_result(&info, &len_none);
	info.usage = big;
	size_t over = allocated_by_result(&info, &len_big);
	info.usage = fits;
	size_t with = allocated_by_result(&info, &len_fits);
	printf("# jansson bytes allocated per result: %zu without usage, %zu with a usage too big "
	       "(left out), %zu with a usage of %zu bytes (result %zu bytes)\n", none, over, with,
	       len_fits - len_none, len_fits);
	ok(len_big == len_none && over <= none + 4096,
	   "a usage too big for a result is left out without being written out (%zu bytes allocated, "
	   "%zu without a usage)", over, none);
	ok(with - none <= 5 * (len_fits - len_none),
	   "a usage that fits is written once, in the result (%zu bytes allocated for its %zu)",
	   with - none, len_fits - len_none);
	json_decref(big);
	json_decref(fits);
}

int main(void)
{
	json_set_alloc_funcs(counting_malloc, free);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		json_t *attempts = json_loads(r->attempts, 0, NULL);
		struct result_info info = { .task_id = "t", .succeeded = true, .attempts = attempts,
					    .currency = "USD" };
		char *text = result_to_json(&info);
		json_t *doc = json_loads(text, 0, NULL);
		json_t *cost = json_object_get(doc, "cost"), *amount = json_object_get(cost, "amount");
		bool got_null = json_is_null(amount);
		ok(got_null == r->null_amount && (got_null || fabs(json_number_value(amount) - r->amount) < 1e-12) &&
		   json_is_boolean(json_object_get(cost, "estimated")) &&
		   json_boolean_value(json_object_get(cost, "estimated")) == r->estimated &&
		   !strcmp(json_string_value(json_object_get(cost, "currency")), "USD"), "%s", r->name);
		json_decref(doc);
		json_decref(attempts);
		free(text);
	}

	struct attempt a = { .started_wall_ms = 1764068523000, .provider = "apiyi", .model = "m",
			     .transport = "done", .outcome = "succeeded", .billed = "yes",
			     .request_id = "", .cost_known = true, .cost = 0.04 };
	json_t *attempts = json_array();
	json_array_append_new(attempts, result_attempt_json(&a));
	json_array_append_new(attempts, result_attempt_json(&a));
	static const char meta_text[] = "{\"ratio\":0.30000000000000004,\"n\":[1,2.5, 1.10,1e-7]}";
	json_t *meta = json_loads(meta_text, 0, NULL);
	struct result_info info = { .task_id = "t", .succeeded = true, .attempts = attempts,
				    .currency = "USD", .metadata = meta_text,
				    .metadata_len = strlen(meta_text) };
	char *text = result_to_json(&info);
	ok(strstr(text, "\"cost\": 0.04,") != NULL, "an attempt's cost reads 0.04");
	ok(strstr(text, "\"amount\": 0.08,") != NULL, "the total reads 0.08");
	ok(strstr(text, "0.30000000000000004") != NULL, "metadata keeps every digit");
	ok(strstr(text, "\"metadata\": {\"ratio\":0.30000000000000004,\"n\":[1,2.5, 1.10,1e-7]}\n}\n"),
	   "metadata is the client's bytes, verbatim");
	ok(strstr(text, "\"provider\": \"apiyi\"") && strstr(text, "\"model\": \"m\""),
	   "the attempt names its provider and model");
	json_t *doc = json_loads(text, 0, NULL);
	ok(doc && json_equal(json_object_get(doc, "metadata"), meta), "the result parses, metadata equal");
	json_decref(doc);
	free(text);
	info.metadata = NULL;
	text = result_to_json(&info);
	doc = json_loads(text, 0, NULL);
	ok(doc && json_is_null(json_object_get(doc, "metadata")), "no metadata: null");
	json_decref(doc);
	free(text);
	json_decref(meta);

	/* Attempts no longer listed (record.h) still count: billed_attempts, cost, and how many. */
	struct record_tally elided = { .attempts = 40, .billed = 3, .cost = 0.12, .estimated = true };
	info.elided = &elided;
	text = result_to_json(&info);
	doc = json_loads(text, 0, NULL);
	json_t *cost = json_object_get(doc, "cost");
	ok(json_integer_value(json_object_get(doc, "billed_attempts")) == 5 &&
	   json_integer_value(json_object_get(doc, "attempts_elided")) == 40 &&
	   json_array_size(json_object_get(doc, "attempts")) == 2 &&
	   fabs(json_number_value(json_object_get(cost, "amount")) - 0.2) < 1e-12 &&
	   json_is_true(json_object_get(cost, "estimated")),
	   "elided attempts count in billed_attempts and cost");
	json_decref(doc);
	free(text);
	elided.cost_unknown = true;
	text = result_to_json(&info);
	doc = json_loads(text, 0, NULL);
	ok(json_is_null(json_object_get(json_object_get(doc, "cost"), "amount")),
	   "an elided attempt without a price: null");
	json_decref(doc);
	free(text);
	info.elided = NULL;
	text = result_to_json(&info);
	doc = json_loads(text, 0, NULL);
	ok(json_integer_value(json_object_get(doc, "attempts_elided")) == 0 &&
	   json_is_integer(json_object_get(doc, "attempts_elided")), "none elided: 0");
	json_decref(doc);
	free(text);
	json_decref(attempts);
	bound();
	usage_measured();
	return tap_done();
}
