/* test_result.c - the result's cost: the sum of its attempts', null without a price, an
 * estimate with a call of unknown billing; costs printed as people write them; metadata kept to
 * the last digit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "result.h"
#include "tap.h"

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

int main(void)
{
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
	json_t *meta = json_loads("{\"ratio\":0.30000000000000004,\"n\":[1,2.5]}", 0, NULL);
	struct result_info info = { .task_id = "t", .succeeded = true, .attempts = attempts,
				    .currency = "USD", .metadata = meta };
	char *text = result_to_json(&info);
	ok(strstr(text, "\"cost\": 0.04,") != NULL, "an attempt's cost reads 0.04");
	ok(strstr(text, "\"amount\": 0.08,") != NULL, "the total reads 0.08");
	ok(strstr(text, "0.30000000000000004") != NULL, "metadata keeps every digit");
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
	return tap_done();
}
