/* test_result.c - the result's cost: the sum of its attempts', null without a price, an
 * estimate with a call of unknown billing; costs printed as people write them; metadata kept to
 * the last digit. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "job.h"
#include "record.h"
#include "result.h"
#include "task.h"
#include "tap.h"
#include "upstream.h"
#include "util.h"
#include "webhook.h"

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

static char *repeat(int c, size_t n)
{
	char *s = xmalloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* The largest usage an upstream may have kept (RESULT_USAGE_MAX indented alone), in the shape
 * that grows most one level deeper in the result: lines as short as lines go. */
static size_t indented_len(json_t *v)
{
	char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	size_t len = strlen(text);
	free(text);
	return len;
}

static json_t *largest_usage(void)
{
	json_t *usage = json_array();
	while (json_array_size(usage) < (RESULT_USAGE_MAX - 2) / 5)   /* "\n  0," each */
		json_array_append_new(usage, json_integer(0));
	while (indented_len(usage) <= RESULT_USAGE_MAX)
		json_array_append_new(usage, json_integer(0));
	json_array_remove(usage, json_array_size(usage) - 1);
	return usage;
}

/* The worst case: the largest job file any daemon accepts (max_job_bytes at its ceiling, all of
 * it metadata), and every other part at the most the daemon lets it be: a 128-character id, the
 * longest provider and model, 10 images ([limits] max_n's ceiling) stored under the longest
 * URLs, 16 of the longest attempts and a tally past any real one, the largest usage kept, the
 * longest error texts with every byte escaped. The result must stay within RESULT_FILE_MAX, so
 * that a resumed publication and imgspool read it; if any part stops being bounded this fails. */
static void worst_case(void)
{
	size_t meta_len = (size_t)CONFIG_JOB_BYTES_CEILING - strlen("{\"prompt\":\"x\",\"metadata\":}");
	char *meta = repeat('x', meta_len);
	meta[0] = meta[meta_len - 1] = '"';
	json_t *attempts = json_array();
	for (int i = 0; i < RECORD_ATTEMPTS_MAX; i++)
		json_array_append_new(attempts, longest_attempt());
	json_t *usage = largest_usage();
	struct task_words *w = NULL;   /* the buffers the daemon's texts live in */
	char *message = repeat('\x01', sizeof(w->error_message) - 1);   /* each written \u0001 */
	char *upstream = repeat('\x01', sizeof(w->upstream_message) - 1);
	char *field = repeat('\x01', sizeof(w->error_field) - 1);
	char *id = repeat('i', JOB_ID_MAX);
	char *provider = repeat('"', 64);     /* each written \" */
	char *model = repeat('"', 200);       /* a config line holds no more (inih) */
	struct image images[10];
	char *urls[10];
	for (size_t i = 0; i < 10; i++) {
		images[i].ext = "webp";
		urls[i] = repeat('\\', 200 + 200 + JOB_ID_MAX + 10);   /* public_url/prefix/name */
	}
	struct record_tally elided = { .attempts = 1000000000L, .billed = 1000000000L,
				       .cost = 999999999999.123456, .estimated = true };
	struct result_info info = { .task_id = id, .succeeded = false, .provider = provider,
				    .model = model, .dialect = "openai", .images = images,
				    .n_images = 10, .images_dropped = SIZE_MAX, .urls = urls,
				    .attempts = attempts, .elided = &elided, .retry_count = INT32_MAX,
				    .created_wall_ms = -62135596800000, .updated_wall_ms = INT64_MAX / 4,
				    .latency_ms = INT64_MAX, .usage = usage, .currency = "ABCDEFGH",
				    .metadata = meta, .metadata_len = meta_len,
				    .error_code = "upstream_unavailable", .error_message = message,
				    .error_upstream_message = upstream, .error_field = field };
	size_t own = 0;
	char *text = result_to_json(&info, &own);
	size_t len = text ? strlen(text) : 0;
	json_t *doc = text ? json_loadb(text, len, 0, NULL) : NULL;
	printf("# the worst case: %zu bytes besides its metadata (RESULT_HEADROOM %u)\n", own,
	       RESULT_HEADROOM);
	ok(text && own <= RESULT_HEADROOM && len <= meta_len + RESULT_HEADROOM &&
	   len <= RESULT_FILE_MAX(CONFIG_JOB_BYTES_CEILING) && len <= RESULT_READ_MAX,
	   "the worst result is within its metadata and RESULT_HEADROOM (%zu + %zu bytes)", meta_len,
	   own);
	ok(doc && !json_is_null(json_object_get(doc, "usage")) &&
	   json_array_size(json_object_get(doc, "attempts")) == RECORD_ATTEMPTS_MAX &&
	   json_array_size(json_object_get(doc, "urls")) == 10 &&
	   json_string_length(json_object_get(doc, "metadata")) == meta_len - 2,
	   "it parses, with every part in it");
	json_decref(doc);
	free(text);
	/* An upstream's usage of any size: left out. */
	json_t *deep = json_array(), *in = deep;
	for (int i = 0; i < 2000; i++) {
		json_t *next = json_array();
		json_array_append_new(in, next);
		in = next;
	}
	info.usage = deep;
	text = result_to_json(&info, &own);
	doc = text ? json_loadb(text, strlen(text), 0, NULL) : NULL;
	ok(doc && json_is_null(json_object_get(doc, "usage")), "an upstream's usage too big for it: null");
	json_decref(doc);
	free(text);
	json_decref(deep);

	/* A part that is not bounded (here the attempts): no result but the trimmed one, which
	 * still has every count, the images and urls, and fits. */
	for (int i = 0; i < 200; i++)
		json_array_append_new(attempts, longest_attempt());
	info.usage = usage;
	text = result_to_json(&info, &own);
	ok(!text && own > RESULT_HEADROOM, "an unbounded part makes no result (%zu bytes)", own);
	info.trimmed = true;
	info.error_code = "publish_failed";
	text = result_to_json(&info, &own);
	len = text ? strlen(text) : 0;
	doc = text ? json_loadb(text, len, 0, NULL) : NULL;
	json_t *err = json_object_get(doc, "error");
	ok(doc && own <= RESULT_HEADROOM && len <= meta_len + RESULT_HEADROOM &&
	   json_array_size(json_object_get(doc, "attempts")) == 0 &&
	   json_integer_value(json_object_get(doc, "attempts_elided")) == 1000000000L &&
	   json_integer_value(json_object_get(doc, "billed_attempts")) == 1000000000L &&
	   json_array_size(json_object_get(doc, "urls")) == 10 &&
	   json_is_null(json_object_get(doc, "usage")) &&
	   !strcmp(json_string_value(json_object_get(err, "code")), "publish_failed") &&
	   json_is_null(json_object_get(err, "upstream_message")) && !json_object_get(err, "field") &&
	   json_string_length(json_object_get(doc, "metadata")) == meta_len - 2,
	   "the trimmed result: bounded (%zu bytes besides its metadata), every count, no list", own);
	json_decref(doc);
	free(text);
	/* A test's headroom (IMGSPOOLD_RESULT_HEADROOM): what passes it makes no result. */
	struct result_info small = { .task_id = "t", .succeeded = true, .currency = "USD",
				     .headroom = 100 };
	text = result_to_json(&small, &own);
	ok(!text && own > 100, "a result past a smaller headroom: none (%zu bytes)", own);
	small.headroom = own;
	text = result_to_json(&small, NULL);
	ok(text && strlen(text) == own, "one that fits it exactly: written (%zu bytes)", own);
	free(text);

	for (size_t i = 0; i < 10; i++)
		free(urls[i]);
	free(model);
	free(provider);
	free(id);
	free(field);
	free(upstream);
	free(message);
	json_decref(usage);
	json_decref(attempts);
	free(meta);
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
	char *text = result_to_json(info, NULL);
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

/* What a job's event said when its data was the result document parsed again: the reference
 * result_event_data() must match byte for byte in the webhook's body. */
static json_t *copy_or_null(json_t *v)
{
	return v ? json_deep_copy(v) : json_null();
}

static json_t *data_from_document(const char *result_json)
{
	json_t *r = json_loads(result_json, 0, NULL);
	json_t *data = json_object();
	json_object_set_new(data, "task_id", copy_or_null(json_object_get(r, "task_id")));
	json_object_set_new(data, "status", copy_or_null(json_object_get(r, "status")));
	json_object_set_new(data, "error_code",
			    copy_or_null(json_object_get(json_object_get(r, "error"), "code")));
	json_t *images = json_object_get(r, "images"), *urls = json_object_get(r, "urls");
	json_object_set_new(data, "images", images ? json_deep_copy(images) : json_array());
	json_object_set_new(data, "urls", urls ? json_deep_copy(urls) : json_array());
	json_object_set_new(data, "cost", copy_or_null(json_object_get(r, "cost")));
	json_decref(r);
	return data;
}

/* The event's data is built from what the result is built from, never by writing the result
 * and parsing it again (on the loop, for a result as big as its metadata): byte for byte the
 * body it was, for costs whose 15 and 12 digits round differently too. */
static void event_data_is_the_documents(void)
{
	static const double costs[] = { 0, 0.04, 0.1 + 0.2, 1e-7, 0.123456789012499999,
					0.12345678901250001, 0.1234567890124999, 0.5000000000004999, 1234567.890124999, 1520699.669575002, 8667178.646504996, 1234567.8901234567, 1e300, 3.0000000000004999,
					0.07 * 3, 2.5e-13 };
	struct image images[3] = { { .ext = "png" }, { .ext = "jpg" }, { .ext = "webp" } };
	char *urls[3] = { "https://s.example.com/a%20b/t.1.png", "https://s.example.com/\u00e9",
			  "https://s.example.com/t.3.webp" };
	static const char meta[] = "{\"n\": [1.10, 1e-7]}";
	size_t n_rows = 0, same = 0;
	for (size_t c = 0; c < sizeof(costs) / sizeof(costs[0]); c++)
		for (int variant = 0; variant < 6; variant++) {
			struct record_tally elided = { .attempts = 3, .billed = 2, .cost = costs[c],
						       .estimated = variant & 1,
						       .cost_unknown = variant == 4 };
			struct result_info info = {
				.task_id = "t.1-x", .succeeded = variant < 3, .provider = "apiyi",
				.model = "gpt-image-2", .dialect = "openai", .images = images,
				.n_images = (size_t)variant % 4, .urls = variant == 2 ? urls : NULL,
				.elided = variant == 5 ? NULL : &elided, .currency = "EUR",
				.metadata = meta, .metadata_len = strlen(meta),
				.error_code = variant == 3 ? "content_refused" : NULL,
				.error_message = "refused" };
			char *doc = result_to_json(&info, NULL);
			char *want = webhook_body("job.x", 1764068523104, data_from_document(doc));
			char *got = webhook_body("job.x", 1764068523104, result_event_data(&info));
			n_rows++;
			if (!strcmp(want, got))
				same++;
			else
				printf("# differs:\n#   %s\n#   %s\n", want, got);
			free(got);
			free(want);
			free(doc);
		}
	ok(same == n_rows, "the event's data is the result document's, byte for byte (%zu of %zu)",
	   same, n_rows);
	/* What it costs, for a result as big as a job's metadata may be (1 MiB). */
	struct buf big;
	buf_init(&big, 2 << 20);
	buf_append(&big, "[", 1);
	while (big.len < (1 << 20) - 8)
		buf_append(&big, "1.5e-7,", 7);
	buf_append(&big, "0]", 2);
	struct result_info info = { .task_id = "t", .succeeded = true, .currency = "USD",
				    .metadata = big.data, .metadata_len = big.len };
	size_t before = jansson_allocated;
	json_t *data = result_event_data(&info);
	size_t direct = jansson_allocated - before;
	json_decref(data);
	before = jansson_allocated;
	char *doc = result_to_json(&info, NULL);
	data = data_from_document(doc);
	size_t reparsed = jansson_allocated - before;
	json_decref(data);
	free(doc);
	printf("# jansson bytes allocated for a job's event with 1 MiB of metadata: %zu (the result "
	       "written and parsed again: %zu)\n", direct, reparsed);
	ok(direct < 4096, "an event's data costs no copy of the result (%zu bytes allocated)", direct);
	buf_release(&big);
}

int main(void)
{
	json_set_alloc_funcs(counting_malloc, free);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		json_t *attempts = json_loads(r->attempts, 0, NULL);
		struct result_info info = { .task_id = "t", .succeeded = true, .attempts = attempts,
					    .currency = "USD" };
		char *text = result_to_json(&info, NULL);
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
	char *text = result_to_json(&info, NULL);
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
	text = result_to_json(&info, NULL);
	doc = json_loads(text, 0, NULL);
	ok(doc && json_is_null(json_object_get(doc, "metadata")), "no metadata: null");
	json_decref(doc);
	free(text);
	json_decref(meta);

	/* Attempts no longer listed (record.h) still count: billed_attempts, cost, and how many. */
	struct record_tally elided = { .attempts = 40, .billed = 3, .cost = 0.12, .estimated = true };
	info.elided = &elided;
	text = result_to_json(&info, NULL);
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
	text = result_to_json(&info, NULL);
	doc = json_loads(text, 0, NULL);
	ok(json_is_null(json_object_get(json_object_get(doc, "cost"), "amount")),
	   "an elided attempt without a price: null");
	json_decref(doc);
	free(text);
	info.elided = NULL;
	text = result_to_json(&info, NULL);
	doc = json_loads(text, 0, NULL);
	ok(json_integer_value(json_object_get(doc, "attempts_elided")) == 0 &&
	   json_is_integer(json_object_get(doc, "attempts_elided")), "none elided: 0");
	json_decref(doc);
	free(text);
	json_decref(attempts);
	worst_case();
	usage_measured();
	event_data_is_the_documents();
	return tap_done();
}
