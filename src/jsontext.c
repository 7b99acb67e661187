/* jsontext.c - a jansson value's text as json_dumps() writes it (jansson 2.14's dump.c: the same
 * separators, indentation, escapes, numbers and failures), into one capped buffer. Fails (NULL)
 * where json_dumps does, past the cap, or deeper than JSONTEXT_MAX_DEPTH; never aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jsontext.h"
#include "util.h"
#include "banned.h"

#define INDENT(flags) ((flags) & JSON_MAX_INDENT)
#define PRECISION(flags) (((flags) >> 11) & 0x1F)
/* jansson refuses only a value put directly into itself: a deeper loop (a in b, b in a) is a
 * bug of ours that would recurse without end. Nothing we hold is this deep: jansson's parser
 * stops at 2048 levels, and we wrap what it parsed in a few more. */
#define JSONTEXT_MAX_DEPTH 4096
#define UNSUPPORTED_FLAGS (JSON_SORT_KEYS | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH | JSON_EMBED)

struct out {
	struct buf b;
	size_t flags;
	bool failed;
};

/* Most tokens fit in what the buffer has: copied without a call. */
static inline void put(struct out *o, const char *s, size_t n)
{
	if (o->b.len + n < o->b.alloc) {
		memcpy(o->b.data + o->b.len, s, n);
		o->b.len += n;
	} else if (!o->failed && buf_append(&o->b, s, n) < 0) {
		o->failed = true;
	}
}

/* jansson's dump_indent(): a new line and depth levels, or with space a blank unless compact. */
static void newline(struct out *o, int depth, bool space)
{
	static const char blanks[32] = "                                ";
	size_t n = (size_t)depth * INDENT(o->flags);
	if (!INDENT(o->flags)) {
		if (space && !(o->flags & JSON_COMPACT))
			put(o, " ", 1);
		return;
	}
	put(o, "\n", 1);
	while (n) {
		size_t k = n < sizeof(blanks) ? n : sizeof(blanks);
		put(o, blanks, k);
		n -= k;
	}
}

/* The length of the UTF-8 sequence at s (at most end - s bytes), 0 if it is not one: what
 * jansson's utf8_iterate() accepts (no overlong form, no surrogate, nothing past U+10FFFF). */
static size_t utf8_length(const unsigned char *s, const unsigned char *end)
{
	size_t n = s[0] < 0xC2 ? 0 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : s[0] < 0xF5 ? 4 : 0;
	if (!n || (size_t)(end - s) < n)
		return 0;
	uint32_t cp = s[0] & (0x7F >> n);
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

#define ROW16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
/* The bytes a string's text must look at: control characters, '"', '\\', and the first byte
 * of each UTF-8 sequence (checked, as jansson does); every other byte is copied as it is. */
static const unsigned char special[] = {
	ROW16(1), ROW16(1),
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* '"' */
	ROW16(0), ROW16(0),
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,       /* '\\' */
	ROW16(0), ROW16(0),
	ROW16(1), ROW16(1), ROW16(1), ROW16(1), ROW16(1), ROW16(1), ROW16(1), ROW16(1),
};
_Static_assert(sizeof(special) == 256, "a byte each");

static void string(struct out *o, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str, *end = s + len, *run = s;
	while (s < end && !special[*s])
		s++;
	/* Most strings (keys, names, times) are plain ASCII: one copy, quotes and all. */
	if (s == end && o->b.len + len + 2 < o->b.alloc) {
		char *p = o->b.data + o->b.len;
		p[0] = '"';
		memcpy(p + 1, str, len);
		p[len + 1] = '"';
		o->b.len += len + 2;
		return;
	}
	put(o, "\"", 1);
	while (s < end) {
		unsigned char c = *s;
		if (!special[c]) {
			s++;
			continue;
		}
		if (c >= 0x80) {
			size_t n = utf8_length(s, end);
			if (!n) {
				o->failed = true;
				return;
			}
			s += n;
			continue;
		}
		put(o, (const char *)run, (size_t)(s - run));
		char esc[8] = { '\\', (char)c };
		size_t n = 2;
		switch (c) {
		case '"': case '\\': break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04X", c);
		}
		put(o, esc, n);
		run = ++s;
	}
	put(o, (const char *)run, (size_t)(s - run));
	put(o, "\"", 1);
}

static void integer(struct out *o, json_int_t v)
{
	char digits[24], *p = digits + sizeof(digits);
	uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
	do
		*--p = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--p = '-';
	put(o, p, (size_t)(digits + sizeof(digits) - p));
}

/* jansson's jsonp_dtostr(): %.17g (or the precision asked), ".0" when it would read back as an
 * integer, the exponent without '+' and leading zeros. */
static void real(struct out *o, double v)
{
	char text[100];
	int precision = PRECISION(o->flags) ? (int)PRECISION(o->flags) : 17;
	int n = snprintf(text, sizeof(text), "%.*g", precision, v);
	if (n < 0 || (size_t)n + 3 >= sizeof(text)) {
		o->failed = true;
		return;
	}
	size_t len = (size_t)n;
	if (!strchr(text, '.') && !strchr(text, 'e')) {
		memcpy(text + len, ".0", 3);
		len += 2;
	}
	char *start = strchr(text, 'e');
	if (start) {
		start++;
		char *digits = start + 1;
		if (*start == '-')
			start++;
		while (*digits == '0')
			digits++;
		if (digits != start) {
			memmove(start, digits, len - (size_t)(digits - text) + 1);
			len -= (size_t)(digits - start);
		}
	}
	put(o, text, len);
}

/* What follows a member of an array or object at depth: a comma and the next line, or the line
 * of the closing bracket. */
static void after_member(struct out *o, int depth, bool more)
{
	if (more) {
		put(o, ",", 1);
		newline(o, depth + 1, true);
	} else {
		newline(o, depth, false);
	}
}

static void value(struct out *o, const json_t *v, int depth)
{
	if (depth > JSONTEXT_MAX_DEPTH) {
		o->failed = true;
		return;
	}
	switch (json_typeof(v)) {
	case JSON_NULL:
		put(o, "null", 4);
		break;
	case JSON_TRUE:
		put(o, "true", 4);
		break;
	case JSON_FALSE:
		put(o, "false", 5);
		break;
	case JSON_INTEGER:
		integer(o, json_integer_value(v));
		break;
	case JSON_REAL:
		real(o, json_real_value(v));
		break;
	case JSON_STRING:
		string(o, json_string_value(v), json_string_length(v));
		break;
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		put(o, "[", 1);
		if (n)
			newline(o, depth + 1, false);
		for (size_t i = 0; i < n && !o->failed; i++) {
			value(o, json_array_get(v, i), depth + 1);
			after_member(o, depth, i + 1 < n);
		}
		put(o, "]", 1);
		break;
	}
	case JSON_OBJECT: {
		const char *sep = o->flags & JSON_COMPACT ? ":" : ": ";
		void *it = json_object_iter((json_t *)v);
		put(o, "{", 1);
		if (it)
			newline(o, depth + 1, false);
		while (it && !o->failed) {
			void *next = json_object_iter_next((json_t *)v, it);
			string(o, json_object_iter_key(it), json_object_iter_key_len(it));
			put(o, sep, strlen(sep));
			value(o, json_object_iter_value(it), depth + 1);
			after_member(o, depth, next != NULL);
			it = next;
		}
		put(o, "}", 1);
		break;
	}
	}
}

char *jsontext_dump(const json_t *v, size_t flags, size_t cap, size_t *len)
{
	if (!v || (flags & UNSUPPORTED_FLAGS) ||
	    (!(flags & JSON_ENCODE_ANY) && !json_is_object(v) && !json_is_array(v)))
		return NULL;
	struct out o = { .flags = flags };
	buf_init(&o.b, cap == SIZE_MAX ? SIZE_MAX - 1 : cap);
	value(&o, v, 0);
	if (o.failed) {
		buf_release(&o.b);
		return NULL;
	}
	o.b.data[o.b.len] = '\0';
	/* The buffer grows from 4 KiB: a request body lives as long as its call, so a short text
	 * would hold 4 KiB per call in flight (40 MB at 10 000). Shrunk in place. */
	if (o.b.alloc - o.b.len > 256) {
		o.b.data = xrealloc(o.b.data, o.b.len + 1);
		o.b.alloc = o.b.len + 1;
	}
	return buf_detach(&o.b, len);
}

/* ---- reading ----------------------------------------------------------------------------------
 * jansson's lexer takes every byte through a callback, a UTF-8 check and a buffer append: about
 * 150 instructions a byte, 50 000 for a 330-byte answer. The text most documents are made of
 * (ASCII, integers, the usual escapes, a modest depth) is read here straight into the same tree;
 * anything else goes back to json_loadb, which then decides alone, errors included. */

#define LOAD_MAX_DEPTH 64   /* deeper: jansson's parser (its own limit is 2048) */
#define LOAD_INT_DIGITS 18  /* an integer this long cannot overflow json_int_t */

struct reader {
	const char *p, *end;
	size_t flags;
	int depth;
};

static void skip_space(struct reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int unescaped(char c)
{
	switch (c) {
	case '"': return '"';
	case '\\': return '\\';
	case '/': return '/';
	case 'b': return '\b';
	case 'f': return '\f';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	default: return -1;   /* \u and anything else: jansson's */
	}
}

/* A string from after its opening quote: *s and *len name its bytes, in the text when it has no
 * escape, else in *held (the caller frees). false: not ours to read. */
static bool read_string(struct reader *r, const char **s, size_t *len, char **held)
{
	const char *start = r->p, *c = start;
	bool escapes = false;
	for (;; c++) {
		if (c >= r->end)
			return false;
		unsigned char b = (unsigned char)*c;
		if (b == '"')
			break;
		if (b < 0x20 || b >= 0x80)
			return false;   /* control characters fail, UTF-8 is checked: jansson's */
		if (b == '\\') {
			if (c + 1 >= r->end || unescaped(c[1]) < 0)
				return false;
			escapes = true;
			c++;
		}
	}
	r->p = c + 1;
	*held = NULL;
	if (!escapes) {
		*s = start;
		*len = (size_t)(c - start);
		return true;
	}
	char *o = *held = xmalloc((size_t)(c - start) + 1);
	for (const char *i = start; i < c; i++)
		*o++ = *i == '\\' ? (char)unescaped(*++i) : *i;
	*s = *held;
	*len = (size_t)(o - *held);
	return true;
}

static json_t *read_value(struct reader *r);

static json_t *read_number(struct reader *r)
{
	const char *c = r->p;
	bool negative = c < r->end && *c == '-';
	c += negative;
	const char *digits = c;
	json_int_t v = 0;
	for (; c < r->end && *c >= '0' && *c <= '9'; c++)
		if (c - digits < LOAD_INT_DIGITS)
			v = v * 10 + (*c - '0');
	size_t n = (size_t)(c - digits);
	/* No digit, a leading zero, past 18 digits, or a fraction or exponent: jansson's. */
	if (n == 0 || n > LOAD_INT_DIGITS || (n > 1 && *digits == '0') ||
	    (c < r->end && (*c == '.' || *c == 'e' || *c == 'E')))
		return NULL;
	r->p = c;
	return json_integer(negative ? -v : v);
}

static json_t *read_word(struct reader *r, const char *word, size_t n, json_t *v)
{
	/* jansson reads a run of letters, then names it. */
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) ||
	    (r->p + n < r->end && ((r->p[n] | 0x20) >= 'a' && (r->p[n] | 0x20) <= 'z')))
		return NULL;
	r->p += n;
	return v;
}

/* After a member of an array or object: 1 at a comma (another follows), 0 at close (read past
 * it), -1 otherwise. */
static int after_member_read(struct reader *r, char close)
{
	skip_space(r);
	if (r->p < r->end && *r->p == ',') {
		r->p++;
		skip_space(r);
		return 1;
	}
	if (r->p < r->end && *r->p == close) {
		r->p++;
		return 0;
	}
	return -1;
}

/* An array or object from its opening bracket: true if it is empty (read past its close). */
static bool read_empty(struct reader *r, char close)
{
	r->p++;
	skip_space(r);
	if (r->p < r->end && *r->p == close) {
		r->p++;
		return true;
	}
	return false;
}

static json_t *read_array(struct reader *r)
{
	json_t *a = json_array();
	if (read_empty(r, ']'))
		return a;
	int more = 1;
	while (more > 0) {
		json_t *v = read_value(r);
		more = v && json_array_append_new(a, v) == 0 ? after_member_read(r, ']') : -1;
	}
	if (more == 0)
		return a;
	json_decref(a);
	return NULL;
}

static json_t *read_object(struct reader *r)
{
	json_t *o = json_object();
	if (read_empty(r, '}'))
		return o;
	int more = 1;
	while (more > 0) {
		const char *key;
		size_t key_len;
		char *held;
		if (r->p >= r->end || *r->p != '"')
			break;
		r->p++;
		if (!read_string(r, &key, &key_len, &held))
			break;
		skip_space(r);
		json_t *v = NULL;
		if (r->p < r->end && *r->p == ':') {
			r->p++;
			skip_space(r);
			v = read_value(r);
		}
		/* A key twice: the last value, in the first one's place (jansson's), or refused. */
		if (v && (r->flags & JSON_REJECT_DUPLICATES) && json_object_getn(o, key, key_len)) {
			json_decref(v);
			v = NULL;
		}
		bool set = v && json_object_setn_new_nocheck(o, key, key_len, v) == 0;
		free(held);
		more = set ? after_member_read(r, '}') : -1;
	}
	if (more == 0)
		return o;
	json_decref(o);
	return NULL;
}

static json_t *read_value(struct reader *r)
{
	if (r->p >= r->end)
		return NULL;
	switch (*r->p) {
	case '{':
	case '[': {
		if (r->depth >= LOAD_MAX_DEPTH)
			return NULL;
		r->depth++;
		json_t *v = *r->p == '{' ? read_object(r) : read_array(r);
		r->depth--;
		return v;
	}
	case '"': {
		const char *s;
		size_t len;
		char *held;
		r->p++;
		if (!read_string(r, &s, &len, &held))
			return NULL;
		json_t *v = json_stringn_nocheck(s, len);
		free(held);
		return v;
	}
	case 't':
		return read_word(r, "true", 4, json_true());
	case 'f':
		return read_word(r, "false", 5, json_false());
	case 'n':
		return read_word(r, "null", 4, json_null());
	default:
		return read_number(r);
	}
}

json_t *jsontext_load_fast(const char *text, size_t len, size_t flags)
{
	if (!text || (flags & ~(size_t)JSON_REJECT_DUPLICATES))
		return NULL;
	struct reader r = { .p = text, .end = text + len, .flags = flags };
	skip_space(&r);
	if (r.p >= r.end || (*r.p != '{' && *r.p != '['))
		return NULL;   /* without JSON_DECODE_ANY jansson wants an object or an array */
	json_t *v = read_value(&r);
	skip_space(&r);
	if (v && r.p != r.end) {
		json_decref(v);   /* something after it: jansson's "end of file expected" */
		v = NULL;
	}
	return v;
}

json_t *jsontext_load(const char *text, size_t len, size_t flags, json_error_t *error)
{
	json_t *v = jsontext_load_fast(text, len, flags);
	if (!v)
		return json_loadb(text, len, flags, error);
	if (error) {   /* as json_loadb leaves it when it succeeds, but position 0 (no caller reads it) */
		memset(error, 0, sizeof(*error));
		error->line = error->column = -1;
		xsnprintf(error->source, sizeof(error->source), "<buffer>");
	}
	return v;
}
