/* test_jsontext.c - jsontext_dump() writes what json_dumps() writes, byte for byte, and fails
 * where it fails: a table of values (escapes, UTF-8 good and bad, numbers at their edges,
 * nesting, empty containers) and generated trees, under every set of flags the daemon uses;
 * the cap. jsontext_load() reads what json_loadb() reads, the same tree in the same order, and
 * fails where it fails, with its error: a table of texts (which it reads itself, which it hands
 * to jansson), generated texts and the same with a byte changed. */
#include <float.h>
#include <stdbool.h>
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

/* A text, and whether jsontext_load reads it itself (else json_loadb does). */
static const struct load_row {
	const char *name;
	const char *text;
	size_t len;      /* 0: strlen */
	bool fast;
} load_rows[] = {
	{ "an answer", "{\"created\":1764400000,\"data\":[{\"b64_json\":\"iVBORw0KGgo=\"}],"
	  "\"usage\":{\"input_tokens\":17,\"output_tokens\":196}}", 0, true },
	{ "a job", " {\"prompt\": \"a lighthouse\", \"size\": \"1536x1024\", \"n\": 1,\n"
	  "\t\"metadata\": {\"order\": -42, \"ok\": true, \"no\": false, \"none\": null}}\r\n", 0, true },
	{ "escapes", "[\"a\\\"b\\\\c\\/d\\n\\t\\b\\f\\r\", \"\"]", 0, true },
	{ "escapes in a key", "{\"k\\\"\\n\": [], \"\": {}}", 0, true },
	{ "a \\u escape", "{\"a\": \"\\u00e9\"}", 0, false },
	{ "UTF-8", "{\"a\": \"\xc3\xa9\"}", 0, false },
	{ "invalid UTF-8", "{\"a\": \"\xc3\"}", 0, false },
	{ "a real", "[1.5]", 0, false },
	{ "an exponent", "[1e5]", 0, false },
	{ "minus zero", "[-0]", 0, true },
	{ "a leading zero", "[007]", 0, false },
	{ "18 digits", "[999999999999999999, -999999999999999999]", 0, true },
	{ "19 digits", "[9223372036854775807]", 0, false },
	{ "past json_int_t", "[9223372036854775808]", 0, false },
	{ "a minus alone", "[-]", 0, false },
	{ "a plus", "[+1]", 0, false },
	{ "a key twice", "{\"a\": 1, \"b\": 2, \"a\": 3}", 0, true },
	{ "garbage after", "{} x", 0, false },
	{ "a second value", "{}{}", 0, false },
	{ "a comma too many", "[1,]", 0, false },
	{ "an object's comma too many", "{\"a\":1,}", 0, false },
	{ "no colon", "{\"a\" 1}", 0, false },
	{ "a key not a string", "{1: 2}", 0, false },
	{ "a control character", "[\"a\tb\"]", 0, false },
	{ "DEL", "[\"a\x7f\"]", 0, true },
	{ "an unknown escape", "[\"\\x\"]", 0, false },
	{ "unterminated", "[\"abc", 0, false },
	{ "unclosed", "[1, 2", 0, false },
	{ "truex", "[truex]", 0, false },
	{ "true1", "[true1]", 0, false },
	{ "nul", "[nul]", 0, false },
	{ "a string alone", "\"a\"", 0, false },
	{ "a number alone", "1", 0, false },
	{ "empty", "", 0, false },
	{ "white space", " \n", 0, false },
	{ "a NUL byte after", "{}\0", 3, false },
	{ "a NUL byte in a string", "[\"a\0b\"]", 7, false },
	{ "a byte order mark", "\xef\xbb\xbf{}", 0, false },
	{ "vertical tab", "\v{}", 0, false },
};

static char *dump_or_null(const json_t *v)
{
	return v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) : NULL;
}

/* jsontext_load and json_loadb on text: the same tree in the same order, or both NULL with the
 * same error. */
static bool loads_as_jansson(const char *text, size_t len, size_t flags)
{
	json_error_t got_err, want_err;
	json_t *got = jsontext_load(text, len, flags, &got_err);
	json_t *want = json_loadb(text, len, flags, &want_err);
	char *got_text = dump_or_null(got), *want_text = dump_or_null(want);
	bool same = got_text && want_text ? !strcmp(got_text, want_text) :
		    !got && !want && !strcmp(got_err.text, want_err.text) &&
		    got_err.position == want_err.position;
	if (same && got)
		same = !strcmp(got_err.text, want_err.text) && got_err.line == want_err.line &&
		       got_err.column == want_err.column && !strcmp(got_err.source, want_err.source);
	free(got_text);
	free(want_text);
	json_decref(got);
	json_decref(want);
	return same;
}

static void check_load(void)
{
	for (size_t i = 0; i < sizeof(load_rows) / sizeof(load_rows[0]); i++) {
		const struct load_row *w = &load_rows[i];
		size_t len = w->len ? w->len : strlen(w->text);
		json_t *fast = jsontext_load_fast(w->text, len, 0);
		ok(!fast == !w->fast, "%s: %s", w->name, w->fast ? "read here" : "read by jansson");
		json_decref(fast);
		ok(loads_as_jansson(w->text, len, 0) &&
		   loads_as_jansson(w->text, len, JSON_REJECT_DUPLICATES),
		   "%s: as json_loadb reads it, duplicates allowed or not", w->name);
	}
	json_t *last = jsontext_load("{\"a\": 1, \"b\": 2, \"a\": 3}", 24, 0, NULL);
	char *text = dump_or_null(last);
	is_str(text, "{\"a\":3,\"b\":2}", "a key twice: the last value, in the first one's place");
	free(text);
	json_decref(last);
	ok(!jsontext_load_fast("{\"a\": 1, \"a\": 1}", 16, JSON_REJECT_DUPLICATES),
	   "a key twice, refused: jansson says so");
	ok(!jsontext_load_fast("{}", 2, JSON_DECODE_ANY), "other flags: jansson's");

	/* 64 levels read here, 65 by jansson. */
	char deep[2 * 65 + 1];
	for (int levels = 64; levels <= 65; levels++) {
		memset(deep, '[', (size_t)levels);
		memset(deep + levels, ']', (size_t)levels);
		json_t *v = jsontext_load_fast(deep, 2 * (size_t)levels, 0);
		ok(!v == (levels > 64) && loads_as_jansson(deep, 2 * (size_t)levels, 0),
		   "%d levels: %s, as json_loadb reads them", levels, v ? "read here" : "jansson's");
		json_decref(v);
	}

	/* Generated texts, and each with one byte changed to one that means something to JSON. */
	static const char bytes[] = "\"\\,:[]{}0-e. xtn\x01\x80";
	int generated = 1, changed = 1, fast = 0;
	for (int i = 0; i < 3000 && generated && changed; i++) {
		json_t *v = random_value(0);
		char *t = json_dumps(v, i % 2 ? JSON_COMPACT | JSON_PRESERVE_ORDER :
				     JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(v);
		if (!t)
			continue;   /* not an object or an array */
		size_t len = strlen(t);
		json_t *read = jsontext_load_fast(t, len, 0);
		fast += read != NULL;
		json_decref(read);
		generated = loads_as_jansson(t, len, 0) && loads_as_jansson(t, len, JSON_REJECT_DUPLICATES);
		for (int k = 0; k < 8 && changed && len; k++) {
			t[next() % len] = bytes[next() % (sizeof(bytes) - 1)];
			changed = loads_as_jansson(t, len, 0) &&
				  loads_as_jansson(t, len, JSON_REJECT_DUPLICATES);
		}
		if (!generated || !changed)
			printf("# text #%d differs from jansson's reading\n", i);
		free(t);
	}
	ok(generated, "generated texts: as json_loadb reads them");
	ok(changed, "the same with bytes changed: as json_loadb reads them, or fails as it fails");
	ok(fast >= 250, "%d of them read here (the rest have reals, UTF-8 or control characters)", fast);
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
	check_load();
	return tap_done();
}
