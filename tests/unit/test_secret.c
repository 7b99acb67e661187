/* test_secret.c - redaction of registered secrets: every occurrence, short secrets, JSON (its
 * strings and its member names). */
#include <stdlib.h>
#include <string.h>

#include "secret.h"
#include "util.h"
#include "tap.h"

struct row {
	const char *name, *in, *want;
};

static const struct row rows[] = {
	{ "no secret", "nothing here", "nothing here" },
	{ "whole", "sk-test-0123456789abcdef", "[redacted]" },
	{ "in a message", "bad token sk-test-0123456789abcdef (request id: 1)",
	  "bad token [redacted] (request id: 1)" },
	{ "twice, back to back", "sk-test-0123456789abcdefsk-test-0123456789abcdef",
	  "[redacted][redacted]" },
	{ "a second secret", "webhook whsec_abcdefghijkl, key sk-test-0123456789abcdef",
	  "webhook [redacted], key [redacted]" },
	{ "shorter than the mark", "pin 4321!", "pin ****!" },
	{ "a prefix is not the secret", "sk-test-0123456789abcde", "sk-test-0123456789abcde" },
};

int main(void)
{
	secret_register("sk-test-0123456789abcdef");
	secret_register("sk-test-0123456789abcdef");   /* twice: no harm */
	secret_register("whsec_abcdefghijkl");
	secret_register("4321");
	secret_register("abc");                        /* too short to register */
	secret_register(NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *s = xstrdup(rows[i].in);
		secret_redact_str(s);
		is_str(s, rows[i].want, "%s", rows[i].name);
		free(s);
	}
	char body[] = "{\"m\":\"sk-test-0123456789abcdef\"}";
	size_t len = secret_redact(body, strlen(body));
	ok(len == strlen("{\"m\":\"[redacted]\"}") && !memcmp(body, "{\"m\":\"[redacted]\"}", len),
	   "a body shrinks in place");
	json_t *doc = json_pack("{s:s, s:[s, i], s:{s:s}}", "a", "x sk-test-0123456789abcdef",
				"b", "abc", 4, "c", "d", "whsec_abcdefghijkl");
	secret_redact_json(doc);
	char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	is_str(text, "{\"a\":\"x [redacted]\",\"b\":[\"abc\",4],\"c\":{\"d\":\"[redacted]\"}}",
	       "every string inside JSON");
	free(text);
	json_decref(doc);
	doc = json_pack("{s:{s:i, s:i, s:{s:s}}}", "usage", "total_tokens", 2,
			"sk-test-0123456789abcdef", 1, "x whsec_abcdefghijkl", "k", "v");
	secret_redact_json(doc);
	text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	is_str(text, "{\"usage\":{\"[redacted]\":1,\"total_tokens\":2,\"x [redacted]\":{\"k\":\"v\"}}}",
	       "member names inside JSON");
	free(text);
	json_decref(doc);

	/* a variable's value is kept from its first read, through its removal (a reload's read) */
	setenv("TEST_SECRET_KEY", "sk-env-0123456789", 1);
	is_str(secret_env("TEST_SECRET_KEY"), "sk-env-0123456789", "a variable read");
	ok(!secret_env("TEST_SECRET_UNSET") && !secret_env(NULL), "unset: NULL");
	setenv("TEST_SECRET_UNSET", "later", 1);
	ok(!secret_env("TEST_SECRET_UNSET"), "set later: still what the first read saw");
	secret_env_scrub();
	ok(!getenv("TEST_SECRET_KEY"), "scrubbed from the environment");
	is_str(secret_env("TEST_SECRET_KEY"), "sk-env-0123456789", "kept after the scrub");
	secret_clear();
	char *s = xstrdup("sk-test-0123456789abcdef");
	secret_redact_str(s);
	is_str(s, "sk-test-0123456789abcdef", "cleared: nothing is redacted");
	free(s);
	return tap_done();
}
