/* test_jsontext.c - jsontext_dump() writes what json_dumps() writes, byte for byte, and fails
 * where it fails: a table of values (escapes, UTF-8 good and bad, numbers at their edges,
 * nesting, empty containers) and generated trees, under every set of flags the daemon uses;
 * the cap. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <malloc.h>   /* malloc_usable_size: what a text holds */
#include <string.h>

#include "jsontext.h"
#include "tap.h"

static const size_t flag_sets[] = {
	0,
	JSON_COMPACT,
	JSON_COMPACT | JSON_PRESERVE_ORDER,
	JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15),
	JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12),
	JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY,
	JSON_INDENT(31) | JSON_COMPACT,
	JSON_INDENT(1),
	JSON_ENCODE_ANY,
	JSON_REAL_PRECISION(1),
	JSON_REAL_PRECISION(31) | JSON_ENCODE_ANY,
};

/* Same text, or both NULL; says which flags differ. */
static int same_as_jansson(const json_t *v, const char *name)
{
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		char *want = json_dumps(v, flag_sets[i]);
		size_t len = 12345;
		char *got = jsontext_dump(v, flag_sets[i], SIZE_MAX, &len);
		int pass = want && got ? !strcmp(want, got) && len == strlen(want) : want == got;
		if (!pass) {
			ok(0, "%s, flags 0x%zx: as json_dumps writes it", name, flag_sets[i]);
			printf("#   got:  '%s'\n#   want: '%s'\n", got ? got : "(null)",
			       want ? want : "(null)");
		}
		free(want);
		free(got);
		if (!pass)
			return 0;
	}
	return 1;
}

struct row {
	const char *name;
	const char *json;     /* parsed with JSON_DECODE_ANY | JSON_ALLOW_NUL */
};

static const struct row rows[] = {
	{ "an empty object", "{}" },
	{ "an empty array", "[]" },
	{ "nested empties", "{\"a\":{},\"b\":[],\"c\":[[],{}],\"d\":[{}]}" },
	{ "scalars", "[null,true,false,0,-1,9223372036854775807,-9223372036854775808]" },
	{ "reals", "[0.0,-0.0,0.04,0.1,1e21,1e-7,1.5e300,-2.5e-300,123456789012345678.0,"
		   "0.30000000000000004,1.7976931348623157e308,5e-324,100.0,1e100,3.14159]" },
	{ "escapes", "[\"quote \\\" backslash \\\\ slash / tab \\t nl \\n cr \\r bs \\b ff \\f\"]" },
	{ "control characters", "[\"\\u0001\\u001f\\u0000x\\u007f\\u0010\"]" },
	{ "UTF-8 of every length", "[\"\\u00e9 \\u20ac \\ud83d\\ude00 \\uffff \\ud7ff \\ue000\"]" },
	{ "keys escaped", "{\"\":1,\"a\\\"b\":2,\"\\n\":3,\"\\u00e9\":4}" },
	{ "a result's shape", "{\"task_id\":\"b1\",\"status\":\"succeeded\",\"images\":[\"b1.png\"],"
			      "\"attempts\":[{\"started_at\":\"2026-11-29T20:05:53.335+00:00\","
			      "\"cost\":null,\"latency_ms\":1}],\"cost\":{\"amount\":0.04,"
			      "\"currency\":\"USD\",\"estimated\":false},\"usage\":{\"a\":{\"b\":"
			      "{\"c\":[1,2,{\"d\":[]}]}}},\"metadata\":null}" },
	{ "a string alone", "\"alone\"" },
	{ "a number alone", "42" },
	{ "a real alone", "2.5" },
	{ "null alone", "null" },
};

/* A deterministic random tree: every type, strings from a set that has every escape. */
static uint64_t seed = 88172645463325252u;

static uint64_t next(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return seed;
}

static json_t *random_value(int depth)
{
	static const char *strings[] = { "", "a", "\"", "\\", "/", "\x01", "\x1f", "\x7f", "\t\n",
					 "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "plain text",
					 "mixed \"q\" \xc3\xa9 \x02 end" };
	static const double reals[] = { 0.5, -1e-300, 1e300, 0.1, 2.0, 1e16, 1e17, 123.456,
					-0.0, DBL_MIN, DBL_MAX, 1.0 / 3 };
	int kind = (int)(next() % (depth > 4 ? 6 : 8));
	switch (kind) {
	case 0: return json_null();
	case 1: return json_boolean(next() & 1);
	case 2: return json_integer((json_int_t)next());
	case 3: return json_real(reals[next() % (sizeof(reals) / sizeof(reals[0]))]);
	case 4:
	case 5: {
		const char *s = strings[next() % (sizeof(strings) / sizeof(strings[0]))];
		return json_string(s);
	}
	case 6: {
		json_t *a = json_array();
		for (int n = (int)(next() % 5); n > 0; n--)
			json_array_append_new(a, random_value(depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		for (int n = (int)(next() % 5); n > 0; n--) {
			char key[32];
			snprintf(key, sizeof(key), "k%d\"%c", n, (int)('a' + next() % 26));
			json_object_set_new(o, key, random_value(depth + 1));
		}
		return o;
	}
	}
}

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		json_error_t e;
		json_t *v = json_loads(rows[i].json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
		if (!ok(v, "%s: parses (%s)", rows[i].name, v ? "" : e.text))
			continue;
		ok(same_as_jansson(v, rows[i].name), "%s: as json_dumps writes it", rows[i].name);
		json_decref(v);
	}

	/* Strings json_dumps refuses: not UTF-8 (a daemon string made with _nocheck). */
	static const char *bad[] = { "\xff", "\xc0\x80", "\xc3", "\xe0\x80\x80", "\xed\xa0\x80",
				     "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "ok\x80", "\xe2\x82" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *v = json_pack("{s:[o]}", "k", json_stringn_nocheck(bad[i], strlen(bad[i])));
		char name[64];
		snprintf(name, sizeof(name), "invalid UTF-8 #%zu", i);
		ok(same_as_jansson(v, name), "%s: NULL as from json_dumps", name);
		ok(!jsontext_dump(v, JSON_COMPACT, SIZE_MAX, NULL), "%s: NULL", name);
		json_decref(v);
	}

	int generated = 1;
	for (int i = 0; i < 3000 && generated; i++) {
		json_t *v = random_value(0);
		char name[48];
		snprintf(name, sizeof(name), "generated tree #%d", i);
		generated = same_as_jansson(v, name);
		json_decref(v);
	}
	ok(generated, "3000 generated trees: as json_dumps writes them");

	/* The cap: the whole text fits at its exact length, not a byte less. */
	json_t *v = json_pack("{s:s, s:[i, i]}", "name", "value", "list", 1, 2);
	size_t len = 0;
	char *whole = jsontext_dump(v, JSON_INDENT(2), SIZE_MAX, &len);
	char *exact = jsontext_dump(v, JSON_INDENT(2), len, NULL);
	is_str(exact, whole, "a cap of the text's length: the whole text");
	ok(!jsontext_dump(v, JSON_INDENT(2), len - 1, NULL), "a cap a byte short: NULL");
	free(whole);
	free(exact);
	json_decref(v);

	/* A short text holds about its length, not the 4 KiB its buffer grew from: request bodies
	 * live as long as their calls. */
	v = json_pack("{s:s}", "prompt", "a cat");
	char *short_text = jsontext_dump(v, JSON_COMPACT, SIZE_MAX, &len);
	ok(short_text && malloc_usable_size(short_text) < 512, "a %zu-byte text holds %zu bytes",
	   len, short_text ? malloc_usable_size(short_text) : 0);
	free(short_text);
	json_decref(v);

	/* A loop jansson lets through (a in b, b in a) fails instead of recursing without end; a
	 * tree as deep as jansson's parser allows is still written. */
	json_t *a = json_array(), *b = json_array();
	json_array_append(a, b);
	json_array_append(b, a);
	ok(!jsontext_dump(a, JSON_COMPACT, SIZE_MAX, NULL), "a loop of two arrays: NULL");
	json_array_clear(b);   /* breaks the loop, so both are freed */
	json_decref(a);
	json_decref(b);
	json_t *deep = json_array();
	for (int i = 0; i < 2048; i++)
		deep = json_pack("[o]", deep);
	char *deep_text = jsontext_dump(deep, JSON_COMPACT, SIZE_MAX, &len);
	ok(deep_text && len == 2 * 2049, "2049 levels: written whole");
	free(deep_text);
	json_decref(deep);

	/* Flags it does not implement fail, never write something else than json_dumps would. */
	static const size_t unsupported[] = { JSON_SORT_KEYS, JSON_ENSURE_ASCII, JSON_ESCAPE_SLASH,
					      JSON_EMBED };
	v = json_pack("{s:s, s:[i]}", "b", "/\u00e9", "a", 1);
	for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
		ok(!jsontext_dump(v, JSON_COMPACT | unsupported[i], SIZE_MAX, NULL),
		   "flag 0x%zx, which it does not implement: NULL", unsupported[i]);
	json_decref(v);
	return tap_done();
}
