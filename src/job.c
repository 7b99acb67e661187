/* job.c - the job file: turn a client's job JSON into a struct job, or say what is wrong.
 *
 * Any user of a shared spool can write a job file, so its bytes are hostile. Before jansson sees
 * them, a small scanner refuses NUL bytes, a byte order mark, a file that is not an object and
 * nesting deeper than the operator's limit (jansson recurses per level). Then every field is
 * checked against a table of known fields; an unknown field is an error, because a typo in a
 * field name must not run a paid job with defaults.
 *
 * Failure: JOB_INCOMPLETE when the bytes could still be the start of a job (empty, or cut off
 * in the middle), JOB_INVALID for everything else. The message is for a user, not a programmer,
 * and never quotes the file: only field names, small numbers and fixed words. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "jsontext.h"
#include "util.h"
#include "banned.h"

#define SIDE_MAX 16384          /* pixels on one side of a WxH size */
#define MODEL_MAX 128
#define PROVIDER_MAX 64
#define TIMEOUT_MAX 3600
#define KEY_ECHO_MAX 32         /* an unknown key longer than this is not repeated back */

static const char known_fields[] = "prompt, model, provider, size, n, quality, background, "
	"output_format, output_compression, moderation, timeout, images, mask, metadata, webhook_url";

void job_limits_default(struct job_limits *limits)
{
	limits->max_n = 4;
	limits->max_pixels_mp = 0;
	limits->max_depth = 32;
}

void job_release(struct job *job)
{
	free(job->prompt);
	free(job->model);
	free(job->provider);
	free(job->size);
	free(job->quality);
	free(job->background);
	free(job->output_format);
	free(job->moderation);
	/* All slots, not n_refs: a job released half-way may have filled more than it counted. */
	for (int i = 0; i < JOB_REFS_MAX; i++)
		free(job->refs[i]);
	free(job->mask);
	free(job->webhook_url);
	json_decref(job->metadata);
	json_decref(job->state);
	memset(job, 0, sizeof(*job));
}

__attribute__((format(printf, 4, 5)))
static enum job_parse_result fail(struct job_error *err, enum job_parse_result result,
				  const char *field, const char *fmt, ...)
{
	va_list ap;

	/* Field names are ours or checked short keys; a cut message is still a message. */
	if (xsnprintf(err->field, sizeof(err->field), "%s", field) < 0)
		err->field[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return result;
}

/* What a value is, in words, for "must be X, not Y". Never the value itself. */
static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "a list";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "a whole number";
	case JSON_REAL:
		return "a decimal number";
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_NULL:
		return "null";
	}
	return "something else";
}

/* ---- the scanner that runs before jansson ---- */

struct scan {
	size_t nonspace;         /* offset of the first byte that is not white space, len if none */
	int depth;               /* current nesting */
	bool too_deep;
	bool in_string;
	int escape;              /* 0; 1 after a backslash; 2..5 after \u and 0..3 hex digits */
	int utf8_need;           /* continuation bytes still missing in a string */
	unsigned char utf8_lead;
	size_t utf8_start;       /* where that unfinished character starts */
	size_t word_start;       /* where the bare word (number, true...) at the end starts */
};

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The second byte of a UTF-8 sequence has a narrower range after some lead bytes
 * (no overlong forms, no surrogates, nothing above U+10FFFF). */
static bool utf8_second_ok(unsigned char lead, unsigned char c)
{
	switch (lead) {
	case 0xE0:
		return c >= 0xA0 && c <= 0xBF;
	case 0xED:
		return c >= 0x80 && c <= 0x9F;
	case 0xF0:
		return c >= 0x90 && c <= 0xBF;
	case 0xF4:
		return c >= 0x80 && c <= 0x8F;
	}
	return c >= 0x80 && c <= 0xBF;
}

static void scan_string_byte(struct scan *s, const unsigned char *p, size_t i)
{
	unsigned char c = p[i];

	if (s->utf8_need) {
		bool second = i == s->utf8_start + 1;
		if ((c & 0xC0) == 0x80 && (!second || utf8_second_ok(s->utf8_lead, c))) {
			s->utf8_need--;
			return;
		}
		s->utf8_need = 0;   /* broken: jansson will say where */
	}
	if (s->escape == 1) {
		s->escape = c == 'u' ? 2 : 0;
	} else if (s->escape) {
		s->escape = is_hex(c) && s->escape < 5 ? s->escape + 1 : 0;
	} else if (c == '\\') {
		s->escape = 1;
	} else if (c == '"') {
		s->in_string = false;
		s->word_start = i + 1;
	} else if (c >= 0xC2 && c <= 0xF4) {
		s->utf8_lead = c;
		s->utf8_start = i;
		s->utf8_need = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
	}
}

/* One pass over the bytes: nesting depth (brackets inside strings do not count) and, for
 * telling a cut-off file from a broken one, what the file ends in. */
static void scan(struct scan *s, const char *data, size_t len, int max_depth)
{
	const unsigned char *p = (const unsigned char *)data;

	memset(s, 0, sizeof(*s));
	s->nonspace = len;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (s->in_string) {
			scan_string_byte(s, p, i);
			continue;
		}
		if (s->nonspace == len && !is_space(c))
			s->nonspace = i;
		if (c == '"') {
			s->in_string = true;
		} else if (c == '[' || c == '{') {
			if (++s->depth > max_depth) {
				s->too_deep = true;
				return;
			}
		} else if (c == ']' || c == '}') {
			if (s->depth > 0)
				s->depth--;
		} else if (!is_space(c) && c != ',' && c != ':') {
			continue;   /* part of a bare word */
		}
		s->word_start = i + 1;
	}
}

static bool is_literal_prefix(const char *w, size_t n)
{
	static const char *const literals[] = { "true", "false", "null" };

	for (size_t i = 0; i < ARRAY_SIZE(literals); i++)
		if (n <= strlen(literals[i]) && !memcmp(w, literals[i], n))
			return true;
	return false;
}

/* Whether w could be the start of a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool is_number_prefix(const char *w, size_t n)
{
	enum { START, MINUS, ZERO, INT, DOT, FRAC, E, ESIGN, EXP } st = START;

	for (size_t i = 0; i < n; i++) {
		char c = w[i];
		bool digit = c >= '0' && c <= '9';
		bool e = c == 'e' || c == 'E';

		switch (st) {
		case START:
		case MINUS:
			if (c == '-' && st == START)
				st = MINUS;
			else if (digit)
				st = c == '0' ? ZERO : INT;
			else
				return false;
			break;
		case ZERO:
		case INT:
		case FRAC:
			if (digit && st != ZERO)
				break;
			if (c == '.' && st != FRAC)
				st = DOT;
			else if (e)
				st = E;
			else
				return false;
			break;
		case DOT:
			if (!digit)
				return false;
			st = FRAC;
			break;
		case E:
			if (c == '+' || c == '-')
				st = ESIGN;
			else if (digit)
				st = EXP;
			else
				return false;
			break;
		case ESIGN:
		case EXP:
			if (!digit)
				return false;
			st = EXP;
			break;
		}
	}
	return true;
}

/* jansson reports "premature end of input" only when the file stops between tokens or inside a
 * string. A file cut inside a token ("tru", "1.", "\u00", half of a UTF-8 character) gets a
 * syntax, UTF-8 or number error instead; it is still a file being written if the error is at
 * exactly that last, unfinished token. */
static bool cut_inside_token(const struct scan *s, const json_error_t *jerr, const char *data,
			     size_t len)
{
	enum json_error_code code = json_error_code(jerr);
	size_t pos = jerr->position < 0 ? 0 : (size_t)jerr->position;

	if (s->in_string && s->utf8_need)
		return code == json_error_invalid_utf8 && pos == s->utf8_start;
	if (pos != len)
		return false;
	if (s->in_string)
		return code == json_error_invalid_syntax && s->escape != 0;
	if (s->word_start >= len)
		return false;
	/* A number too large so far may still get a fraction or a negative exponent. */
	if (code == json_error_numeric_overflow)
		return is_number_prefix(data + s->word_start, len - s->word_start);
	return code == json_error_invalid_syntax &&
	       (is_literal_prefix(data + s->word_start, len - s->word_start) ||
		is_number_prefix(data + s->word_start, len - s->word_start));
}

static const char *json_problem(enum json_error_code code)
{
	switch (code) {
	case json_error_premature_end_of_input:
		return "unexpected end of input";
	case json_error_end_of_input_expected:
		return "unexpected text after the end of the object";
	case json_error_duplicate_key:
		return "a field name appears twice in one object";
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return "a string holds \\u0000, which is not allowed";
	case json_error_numeric_overflow:
		return "a number is too large";
	case json_error_stack_overflow:
		return "it is nested too deeply";
	default:
		return "syntax error";
	}
}

/* Only jansson's error code and position go into the message: its text quotes the input. */
static enum job_parse_result load_error(const struct scan *s, const json_error_t *jerr,
					const char *data, size_t len, struct job_error *err)
{
	enum json_error_code code = json_error_code(jerr);

	if (code == json_error_premature_end_of_input || cut_inside_token(s, jerr, data, len))
		return fail(err, JOB_INCOMPLETE, "",
			    "the file is not valid JSON: unexpected end of input at line %d, column %d",
			    jerr->line, jerr->column);
	if (code == json_error_invalid_utf8)
		return fail(err, JOB_INVALID, "",
			    "the file is not valid UTF-8 JSON: an invalid byte sequence at line %d, "
			    "column %d",
			    jerr->line, jerr->column);
	return fail(err, JOB_INVALID, "", "the file is not valid JSON: %s at line %d, column %d",
		    json_problem(code), jerr->line, jerr->column);
}

/* Everything about the raw bytes, before jansson sees them. */
static enum job_parse_result check_bytes(const char *data, size_t len, int max_depth,
					 struct scan *s, struct job_error *err)
{
	if (memchr(data, '\0', len))
		return fail(err, JOB_INVALID, "",
			    "the file contains a NUL byte, which JSON does not allow");
	if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3))
		return fail(err, JOB_INVALID, "",
			    "the file starts with a byte order mark; save it as UTF-8 without one");
	scan(s, data, len, max_depth);
	if (s->nonspace == len)
		return fail(err, JOB_INCOMPLETE, "", "the file is empty");
	if (data[s->nonspace] != '{')
		return fail(err, JOB_INVALID, "",
			    "the file must hold one JSON object, starting with {");
	if (s->too_deep)
		return fail(err, JOB_INVALID, "",
			    "the file is nested more than %d levels deep, which is not allowed",
			    max_depth);
	return JOB_OK;
}

/* ---- fields ---- */

typedef enum job_parse_result (*field_fn)(struct job *job, const char *name, json_t *v,
					  const struct job_limits *limits, struct job_error *err);

static enum job_parse_result get_int(const char *name, json_t *v, json_int_t min, json_int_t max,
				     int *out, struct job_error *err)
{
	if (!json_is_integer(v))
		return fail(err, JOB_INVALID, name,
			    "\"%s\" must be an integer from %" JSON_INTEGER_FORMAT " to %"
			    JSON_INTEGER_FORMAT ", not %s", name, min, max, json_kind(v));
	json_int_t n = json_integer_value(v);
	if (n < min || n > max)
		return fail(err, JOB_INVALID, name,
			    "\"%s\" must be an integer from %" JSON_INTEGER_FORMAT " to %"
			    JSON_INTEGER_FORMAT ", not %" JSON_INTEGER_FORMAT, name, min, max, n);
	*out = (int)n;
	return JOB_OK;
}

/* values is NULL-terminated; the list is spelled out in the message so the user can pick. */
static enum job_parse_result get_enum(const char *name, json_t *v, const char *const *values,
				      char **out, struct job_error *err)
{
	char list[256] = "";
	size_t used = 0;

	if (json_is_string(v)) {
		for (size_t i = 0; values[i]; i++) {
			if (!strcmp(json_string_value(v), values[i])) {
				*out = xstrdup(values[i]);
				return JOB_OK;
			}
		}
	}
	for (size_t i = 0; values[i]; i++) {
		int n = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", values[i]);
		if (n < 0 || (size_t)n >= sizeof(list) - used)
			break;
		used += (size_t)n;
	}
	if (!json_is_string(v))
		return fail(err, JOB_INVALID, name, "\"%s\" must be one of %s, not %s", name, list,
			    json_kind(v));
	return fail(err, JOB_INVALID, name, "\"%s\" must be one of %s", name, list);
}

/* A short name from a fixed character set (it ends up in a URL path or a config lookup). */
static enum job_parse_result get_token(const char *name, json_t *v, size_t max,
				       const char *punct, const char *shown, char **out,
				       struct job_error *err)
{
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	bool good = json_is_string(v) && len >= 1 && len <= max;

	for (size_t i = 0; good && i < len; i++)
		good = is_alnum(s[i]) || (i > 0 && s[i] && strchr(punct, s[i]));
	if (!good)
		return fail(err, JOB_INVALID, name,
			    "\"%s\" must be a name of 1 to %zu letters, digits and %s, starting with a "
			    "letter or digit%s%s", name, max, shown, json_is_string(v) ? "" : ", not ",
			    json_is_string(v) ? "" : json_kind(v));
	*out = xstrndup(s, len);
	return JOB_OK;
}

static size_t utf8_count(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}

static enum job_parse_result parse_prompt(struct job *job, const char *name, json_t *v,
					  const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	if (!json_is_string(v))
		return fail(err, JOB_INVALID, name, "\"%s\" must be a string, not %s", name,
			    json_kind(v));

	const char *s = json_string_value(v);
	size_t len = json_string_length(v), chars = utf8_count(s, len);
	bool blank = true;

	for (size_t i = 0; blank && i < len; i++)
		blank = is_space((unsigned char)s[i]) || s[i] == '\f' || s[i] == '\v';
	if (!len)
		return fail(err, JOB_INVALID, name, "\"%s\" is empty", name);
	if (blank)
		return fail(err, JOB_INVALID, name, "\"%s\" is only white space", name);
	if (chars > JOB_PROMPT_MAX)
		return fail(err, JOB_INVALID, name,
			    "\"%s\" is too long: %zu characters, at most %d are allowed", name, chars,
			    JOB_PROMPT_MAX);
	job->prompt = xstrndup(s, len);
	return JOB_OK;
}

static enum job_parse_result parse_model(struct job *job, const char *name, json_t *v,
					 const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	return get_token(name, v, MODEL_MAX, "._:-", ". _ : -", &job->model, err);
}

static enum job_parse_result parse_provider(struct job *job, const char *name, json_t *v,
					    const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	return get_token(name, v, PROVIDER_MAX, "_-", "_ -", &job->provider, err);
}

/* 1..SIDE_MAX written plainly: digits only, no sign, no leading zero. */
static bool parse_side(const char **p, int *out)
{
	const char *s = *p;
	int v = 0;

	if (*s < '1' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (*s - '0');
		if (v > SIDE_MAX)
			return false;
	}
	*p = s;
	*out = v;
	return true;
}

bool job_size_dimensions(const char *size, int *w, int *h)
{
	const char *p = size;
	int pw, ph;

	if (!p || !parse_side(&p, &pw) || *p++ != 'x' || !parse_side(&p, &ph) || *p)
		return false;
	*w = pw;
	*h = ph;
	return true;
}

static enum job_parse_result parse_size(struct job *job, const char *name, json_t *v,
					const struct job_limits *limits, struct job_error *err)
{
	int w, h;

	if (json_is_string(v) && !strcmp(json_string_value(v), "auto")) {
		job->size = xstrdup("auto");
		return JOB_OK;
	}
	if (!json_is_string(v) || !job_size_dimensions(json_string_value(v), &w, &h))
		return fail(err, JOB_INVALID, name,
			    "\"%s\" must be \"auto\" or WIDTHxHEIGHT such as 1024x1536 (each side from 1 "
			    "to %d, a lowercase x, no spaces)%s%s", name, SIDE_MAX,
			    json_is_string(v) ? "" : ", not ", json_is_string(v) ? "" : json_kind(v));
	if (limits->max_pixels_mp > 0 &&
	    (long long)w * h > (long long)limits->max_pixels_mp * 1000000)
		return fail(err, JOB_INVALID, name,
			    "\"%s\" is too large: %dx%d is more than the %d megapixels (%lld pixels) "
			    "allowed per image here", name, w, h, limits->max_pixels_mp,
			    (long long)limits->max_pixels_mp * 1000000);
	job->size = xstrdup(json_string_value(v));
	return JOB_OK;
}

static enum job_parse_result parse_n(struct job *job, const char *name, json_t *v,
				     const struct job_limits *limits, struct job_error *err)
{
	return get_int(name, v, 1, limits->max_n, &job->n, err);
}

static enum job_parse_result parse_quality(struct job *job, const char *name, json_t *v,
					   const struct job_limits *limits, struct job_error *err)
{
	static const char *const values[] = { "low", "medium", "high", "auto", "xhigh", "max", NULL };

	(void)limits;
	/* The most common mistake, from DALL-E examples: say so instead of a bare "not allowed". */
	if (json_is_string(v) && (!strcmp(json_string_value(v), "hd") ||
				  !strcmp(json_string_value(v), "standard")))
		return fail(err, JOB_INVALID, name,
			    "\"%s\" \"%s\" is a DALL-E value; use one of low, medium, high, auto, "
			    "xhigh, max", name, json_string_value(v));
	return get_enum(name, v, values, &job->quality, err);
}

static enum job_parse_result parse_background(struct job *job, const char *name, json_t *v,
					      const struct job_limits *limits, struct job_error *err)
{
	static const char *const values[] = { "transparent", "opaque", "auto", NULL };

	(void)limits;
	return get_enum(name, v, values, &job->background, err);
}

static enum job_parse_result parse_output_format(struct job *job, const char *name, json_t *v,
						 const struct job_limits *limits,
						 struct job_error *err)
{
	static const char *const values[] = { "png", "jpeg", "webp", NULL };

	(void)limits;
	return get_enum(name, v, values, &job->output_format, err);
}

static enum job_parse_result parse_output_compression(struct job *job, const char *name,
						      json_t *v, const struct job_limits *limits,
						      struct job_error *err)
{
	(void)limits;
	return get_int(name, v, 0, 100, &job->output_compression, err);
}

static enum job_parse_result parse_moderation(struct job *job, const char *name, json_t *v,
					      const struct job_limits *limits, struct job_error *err)
{
	static const char *const values[] = { "auto", "low", NULL };

	(void)limits;
	return get_enum(name, v, values, &job->moderation, err);
}

static enum job_parse_result parse_timeout(struct job *job, const char *name, json_t *v,
					   const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	return get_int(name, v, 1, TIMEOUT_MAX, &job->timeout, err);
}

/* The lexical rules for a path relative to the spool root; NULL when it passes. The file is
 * opened later without following symlinks: this only keeps the name inside the tree. */
static const char *path_problem(const char *p, size_t len)
{
	if (!len)
		return "it is empty";
	if (p[0] == '/')
		return "it starts with /; give it relative to the spool directory";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 || c == 0x7F || (c == 0xC2 && i + 1 < len &&
					      (unsigned char)p[i + 1] < 0xA0))
			return "it contains a control character";
		if (c == '\\')
			return "it contains a backslash; use / between directories";
	}
	for (size_t start = 0; start <= len;) {
		const char *slash = memchr(p + start, '/', len - start);
		size_t end = slash ? (size_t)(slash - p) : len;
		if (end == start)
			return "it contains an empty part (two slashes in a row, "
			       "or a slash at the end)";
		if (end - start == 2 && p[start] == '.' && p[start + 1] == '.')
			return "it contains .., which would leave the spool directory";
		start = end + 1;
	}
	return NULL;
}

static enum job_parse_result get_path(const char *name, json_t *v, char **out,
				      struct job_error *err)
{
	const char *problem;

	if (!json_is_string(v))
		return fail(err, JOB_INVALID, name,
			    "\"%s\" must be a string with a path relative to the spool directory, not %s",
			    name, json_kind(v));
	if (json_string_length(v) >= JOB_PATH_MAX)
		return fail(err, JOB_INVALID, name,
			    "\"%s\" is not an allowed path: it is longer than %d bytes", name,
			    JOB_PATH_MAX - 1);
	problem = path_problem(json_string_value(v), json_string_length(v));
	if (problem)
		return fail(err, JOB_INVALID, name, "\"%s\" is not an allowed path: %s", name,
			    problem);
	*out = xstrndup(json_string_value(v), json_string_length(v));
	return JOB_OK;
}

static enum job_parse_result parse_images(struct job *job, const char *name, json_t *v,
					  const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > JOB_REFS_MAX)
		return fail(err, JOB_INVALID, name,
			    "\"%s\" must be a list of 1 to %d paths relative to the spool directory%s%s",
			    name, JOB_REFS_MAX, json_is_array(v) ? "" : ", not ",
			    json_is_array(v) ? "" : json_kind(v));
	for (size_t i = 0; i < json_array_size(v); i++) {
		char elem[32];
		enum job_parse_result r;

		xsnprintf(elem, sizeof(elem), "%s[%zu]", name, i);
		r = get_path(elem, json_array_get(v, i), &job->refs[i], err);
		if (r != JOB_OK)
			return r;
		job->n_refs++;
	}
	return JOB_OK;
}

static enum job_parse_result parse_mask(struct job *job, const char *name, json_t *v,
					const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	return get_path(name, v, &job->mask, err);
}

static enum job_parse_result parse_metadata(struct job *job, const char *name, json_t *v,
					    const struct job_limits *limits, struct job_error *err)
{
	(void)name;
	(void)limits;
	(void)err;
	job->metadata = json_incref(v);
	return JOB_OK;
}

/* Where this job's events go instead of [notify] url. Only its form is checked here: whether the
 * daemon's configuration allows it is decided when the job is claimed. */
static enum job_parse_result parse_webhook_url(struct job *job, const char *name, json_t *v,
					       const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	bool good = len <= 2048 && url_is_http(s) && url_unprintable_at(s, len) == len;
	if (!good)
		return fail(err, JOB_INVALID, name, "\"%s\" must be an http:// or https:// URL of at most "
			    "2048 printable ASCII characters", name);
	job->webhook_url = xstrndup(s, len);
	return JOB_OK;
}

/* The daemon's own bookkeeping, written back into the job file when a job is deferred. */
static enum job_parse_result parse_state(struct job *job, const char *name, json_t *v,
					 const struct job_limits *limits, struct job_error *err)
{
	(void)limits;
	if (!json_is_object(v))
		return fail(err, JOB_INVALID, name, "\"imgspool\" is reserved for the daemon's own records");
	job->state = json_incref(v);
	return JOB_OK;
}

static const struct field {
	const char *name;
	field_fn parse;
} fields[] = {
	{ "prompt", parse_prompt },
	{ "model", parse_model },
	{ "provider", parse_provider },
	{ "size", parse_size },
	{ "n", parse_n },
	{ "quality", parse_quality },
	{ "background", parse_background },
	{ "output_format", parse_output_format },
	{ "output_compression", parse_output_compression },
	{ "moderation", parse_moderation },
	{ "timeout", parse_timeout },
	{ "images", parse_images },
	{ "mask", parse_mask },
	{ "metadata", parse_metadata },
	{ "webhook_url", parse_webhook_url },
	{ "imgspool", parse_state },
};

static const struct field *field_find(const char *key)
{
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		if (!strcmp(key, fields[i].name))
			return &fields[i];
	return NULL;
}

/* Whether an unknown key may be repeated back to the user: short printable ASCII only. */
static bool key_echoable(const char *key, size_t len)
{
	if (!len || len > KEY_ECHO_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (key[i] < 0x20 || key[i] > 0x7E || key[i] == '"' || key[i] == '\\')
			return false;
	return true;
}

/* Edit distance, for "did you mean". Both strings are at most KEY_ECHO_MAX bytes here. */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[KEY_ECHO_MAX + 1];

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static enum job_parse_result unknown_field(const char *key, size_t len, struct job_error *err)
{
	const char *guess = NULL;

	if (!key_echoable(key, len))
		return fail(err, JOB_INVALID, "",
			    "the job has an unknown field; the known fields are %s", known_fields);
	for (size_t i = 0; i < ARRAY_SIZE(fields) && !guess; i++) {
		size_t d = distance(key, fields[i].name);
		if (d <= 2 && d * 2 < strlen(fields[i].name))
			guess = fields[i].name;
	}
	if (guess)
		return fail(err, JOB_INVALID, key,
			    "unknown field \"%s\" (did you mean \"%s\"?); the known fields are %s", key,
			    guess, known_fields);
	return fail(err, JOB_INVALID, key, "unknown field \"%s\"; the known fields are %s", key,
		    known_fields);
}

static enum job_parse_result check_fields(struct job *job, json_t *root,
					  const struct job_limits *limits, struct job_error *err)
{
	const char *key;
	json_t *v;
	enum job_parse_result r;

	/* Unknown fields first: a misspelt field makes any other complaint beside the point. */
	json_object_foreach(root, key, v) {
		if (!field_find(key))
			return unknown_field(key, strlen(key), err);
	}
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		v = json_object_get(root, fields[i].name);
		if (!v)
			continue;
		r = fields[i].parse(job, fields[i].name, v, limits, err);
		if (r != JOB_OK)
			return r;
	}
	if (!job->prompt)
		return fail(err, JOB_INVALID, "prompt",
			    "the job has no \"prompt\": it must say what image to make");
	if (job->output_compression >= 0 && (!job->output_format ||
					     !strcmp(job->output_format, "png")))
		return fail(err, JOB_INVALID, "output_compression",
			    "\"output_compression\" only applies to jpeg and webp: set \"output_format\" "
			    "to \"jpeg\" or \"webp\", or leave \"output_compression\" out");
	if (job->mask && !job->n_refs)
		return fail(err, JOB_INVALID, "mask",
			    "\"mask\" needs \"images\": a mask applies to the first reference image");
	return JOB_OK;
}

enum job_parse_result job_parse(struct job *job, const char *data, size_t len,
				const struct job_limits *limits, struct job_error *err)
{
	struct job_limits defaults;
	struct job_error scratch;
	struct scan s;
	json_error_t jerr;
	json_t *root = NULL;
	enum job_parse_result r;

	memset(job, 0, sizeof(*job));
	job->n = 1;
	job->output_compression = -1;
	if (!err)
		err = &scratch;
	err->field[0] = '\0';
	err->message[0] = '\0';
	if (!limits) {
		job_limits_default(&defaults);
		limits = &defaults;
	}
	if (!data)
		len = 0, data = "";

	r = check_bytes(data, len, limits->max_depth, &s, err);
	if (r != JOB_OK)
		goto out;
	root = jsontext_load(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		r = load_error(&s, &jerr, data, len, err);
		goto out;
	}
	if (!json_is_object(root)) {
		r = fail(err, JOB_INVALID, "", "the file must hold one JSON object, starting with {");
		goto out;
	}
	r = check_fields(job, root, limits, err);

out:
	json_decref(root);
	if (r != JOB_OK)
		job_release(job);
	return r;
}

/* ---- task ids ---- */

static bool id_char(char c, bool first)
{
	return is_alnum(c) || (!first && (c == '_' || c == '.' || c == '-'));
}

/* Names the daemon writes beside a job (ID.result.json, ID.1.png) must never be taken for a job:
 * an id may not end in ".result", in "." and digits, or in a bare ".". */
static bool id_suffix_reserved(const char *id, size_t len)
{
	size_t i = len;

	if (len >= 7 && !memcmp(id + len - 7, ".result", 7))
		return true;
	while (i > 0 && id[i - 1] >= '0' && id[i - 1] <= '9')
		i--;
	return i > 0 && id[i - 1] == '.';
}

int job_id_from_name(const char *name, char *id, size_t idsize)
{
	size_t len = strlen(name);

	/* "ID.json" and "ID" name the same task. */
	if (len > 5 && !strcmp(name + len - 5, ".json"))
		len -= 5;
	if (len == 0 || len > JOB_ID_MAX || len + 1 > idsize)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (!id_char(name[i], i == 0))
			return -1;
	if (id_suffix_reserved(name, len))
		return -1;
	memcpy(id, name, len);
	id[len] = '\0';
	return 0;
}

void job_numbered_name(const char *id, int n, char *name, size_t size)
{
	xsnprintf(name, size, "%s.%d.json", id, n);
}

int job_id_from_listed(const char *name, bool numbered, char *id, size_t idsize)
{
	if (job_id_from_name(name, id, idsize) == 0)
		return 0;
	size_t len = strlen(name);
	/* ID.N.json: N one digit from 2, after an id (itself perhaps ending in ".json"). */
	if (!numbered || len < 9 || strcmp(name + len - 5, ".json") || name[len - 7] != '.' ||
	    name[len - 6] < '2' || name[len - 6] > '0' + JOB_NUMBERED_MAX)
		return -1;
	char bare[JOB_ID_MAX + sizeof(".json")];
	if (len - 7 > JOB_ID_MAX)
		return -1;
	/* As the id's own file name, so an id that ends in ".json" keeps it. */
	xsnprintf(bare, sizeof(bare), "%.*s.json", (int)(len - 7), name);
	return job_id_from_name(bare, id, idsize);
}

/* ---- the daemon's records in the client's bytes ---- */

/* A small scanner over a job file that jansson accepted (or any bytes: it never reads past len
 * and answers -1 to what is not a JSON object, a raw control byte included: imgspool show
 * prints the bytes of a file it accepts). It only finds where things are; the bytes
 * themselves are never rewritten, so a client's 1e300 or "\u00e9" stays as it was written. */
struct cursor {
	const char *p, *end;
};

static void skip_space(struct cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char ch = p[i];
		int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* Skips a string at c->p ('"'); with keys given (at most 32), *which says which of them it
 * spells (escapes decoded, as jansson sees it: "imgspo\u006fl" is "imgspool"), or -1. A raw
 * control byte in it is not JSON (jansson refuses it): -1, so no caller prints one. */
static int skip_string(struct cursor *c, const char *const *keys, size_t nkeys, long *which)
{
	size_t at = 0, klen[32];
	uint32_t same = 0;
	for (size_t k = 0; k < nkeys && k < 32; k++) {
		klen[k] = strlen(keys[k]);
		same |= 1u << k;
	}
	c->p++;
	while (c->p < c->end && *c->p != '"') {
		int ch = (unsigned char)*c->p++;
		if (ch < 0x20)
			return -1;
		if (ch == '\\') {
			if (c->p >= c->end)
				return -1;
			ch = *c->p++;
			if (ch == 'u') {
				if (c->end - c->p < 4 || (ch = hex4(c->p)) < 0)
					return -1;
				c->p += 4;
			} else {
				switch (ch) {
				case '"': case '\\': case '/': break;
				case 'b': ch = '\b'; break;
				case 'f': ch = '\f'; break;
				case 'n': ch = '\n'; break;
				case 'r': ch = '\r'; break;
				case 't': ch = '\t'; break;
				default: return -1;
				}
			}
		}
		for (uint32_t m = same; m; m &= m - 1) {
			int k = __builtin_ctz(m);
			if (at >= klen[k] || (unsigned char)keys[k][at] != ch)
				same &= ~(1u << k);
		}
		at++;
	}
	if (c->p >= c->end)
		return -1;
	c->p++;
	if (which) {
		*which = -1;
		for (uint32_t m = same; m; m &= m - 1)
			if (klen[__builtin_ctz(m)] == at) {
				*which = __builtin_ctz(m);
				break;
			}
	}
	return 0;
}

/* A byte JSON allows outside strings: white space, punctuation, and what numbers and
 * true/false/null are spelt with. Anything else (a control byte, say) is not JSON. */
static bool bare_byte(char ch)
{
	return (ch && strchr(" \t\n\r{}[],:+-.", ch)) || (ch >= '0' && ch <= '9') ||
	       (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* Skips one value: a string, an object or array (by depth, strings skipped whole), a scalar. */
static int skip_value(struct cursor *c)
{
	if (c->p >= c->end)
		return -1;
	if (*c->p == '"')
		return skip_string(c, NULL, 0, NULL);
	if (*c->p != '{' && *c->p != '[') {
		const char *start = c->p;
		while (c->p < c->end && !strchr(",}] \t\n\r", *c->p)) {
			if (!bare_byte(*c->p))
				return -1;
			c->p++;
		}
		return c->p > start ? 0 : -1;
	}
	size_t depth = 0;
	while (c->p < c->end) {
		char ch = *c->p;
		if (ch == '"') {
			if (skip_string(c, NULL, 0, NULL) < 0)
				return -1;
			continue;
		}
		if (!bare_byte(ch))
			return -1;
		c->p++;
		if (ch == '{' || ch == '[')
			depth++;
		else if ((ch == '}' || ch == ']') && --depth == 0)
			return 0;
	}
	return -1;
}

/* The object at c (after '{'), one member at a time: 1 with the member's key matched against
 * keys (*which, as skip_string), where its key and value begin and c after the value; 0 at
 * its closing brace, when only white space follows; -1 when it is not JSON. */
static int next_member(struct cursor *c, bool first, const char *const *keys, size_t nkeys,
		       long *which, const char **key, const char **value)
{
	skip_space(c);
	if (c->p < c->end && *c->p == '}') {
		c->p++;
		skip_space(c);
		return c->p == c->end ? 0 : -1;
	}
	if (!first) {
		if (c->p >= c->end || *c->p++ != ',')
			return -1;
		skip_space(c);
	}
	*key = c->p;
	if (c->p >= c->end || *c->p != '"' || skip_string(c, keys, nkeys, which) < 0)
		return -1;
	skip_space(c);
	if (c->p >= c->end || *c->p++ != ':')
		return -1;
	skip_space(c);
	*value = c->p;
	return skip_value(c) < 0 ? -1 : 1;
}

/* Past the '{' of the object data is, or -1 when it is not one. */
static int open_object(struct cursor *c)
{
	skip_space(c);
	if (c->p >= c->end || *c->p != '{')
		return -1;
	c->p++;
	return 0;
}

/* Where the first top-level member called name ("imgspool") is, from its key to the end of its
 * value ([start, end)), or, without one, where a member added last goes (start == end, after
 * the last value); and whether the object has other members (so a comma separates them). */
struct records_at {
	size_t start, end;
	bool found, others;
	size_t value, value_end;   /* the last member named so: its value (jansson keeps the last) */
	size_t count;              /* members named so; the first max of their values in spans */
};

static int find_member_all(const char *data, size_t len, const char *name, struct records_at *at,
			   struct job_span *spans, size_t max)
{
	struct cursor c = { data, data + len };
	memset(at, 0, sizeof(*at));
	if (open_object(&c) < 0)
		return -1;
	skip_space(&c);
	at->start = at->end = (size_t)(c.p - data);   /* empty: a member goes before its brace */
	for (bool first = true;; first = false) {
		long which;
		const char *key, *value;
		int r = next_member(&c, first, &name, 1, &which, &key, &value);
		if (r <= 0)
			return r;
		bool match = which == 0;
		if (match) {
			at->value = (size_t)(value - data);
			at->value_end = (size_t)(c.p - data);
			if (at->count < max)
				spans[at->count] = (struct job_span){ at->value, at->value_end };
			at->count++;
		}
		if (match && !at->found) {
			at->found = true;
			at->start = (size_t)(key - data);
			at->end = (size_t)(c.p - data);
		} else {
			at->others = true;
			if (!at->found)
				at->start = at->end = (size_t)(c.p - data);
		}
	}
}

static int find_member(const char *data, size_t len, const char *name, struct records_at *at)
{
	return find_member_all(data, len, name, at, NULL, 0);
}

long job_member_values(const char *data, size_t len, const char *name, struct job_span *spans,
		       size_t max)
{
	struct records_at at;
	if (find_member_all(data, len, name, &at, spans, max) < 0)
		return -1;
	return (long)at.count;
}

int job_members_at(const char *data, size_t len, const char *const *names, bool cut,
		   struct job_span *spans)
{
	size_t n = 0;
	while (names[n])
		n++;
	if (n > 32)
		return -1;
	memset(spans, 0, n * sizeof(*spans));
	struct cursor c = { data, data + len };
	if (open_object(&c) < 0)
		return -1;
	for (bool first = true;; first = false) {
		long which;
		const char *key, *value;
		int r = next_member(&c, first, names, n, &which, &key, &value);
		if (r < 0 && cut)
			return 0;   /* where data is cut */
		if (r <= 0)
			return r;
		size_t end = (size_t)(c.p - data);
		skip_space(&c);
		/* A number cut short looks whole: a value counts once something follows it. */
		if (which >= 0 && (!cut || c.p < c.end))
			spans[which] = (struct job_span){ (size_t)(value - data), end };
	}
}

char *job_with_records(const char *data, size_t len, const char *records, size_t *out_len)
{
	struct records_at at;
	if (find_member(data, len, "imgspool", &at) < 0)
		return NULL;
	/* The member is written whole, its key spelt plainly: its size is the records' plus 12. */
	const char *member = !at.found && at.others ? ",\"imgspool\":" : "\"imgspool\":";
	size_t mlen = strlen(member), rlen = strlen(records);
	size_t n = at.start + mlen + rlen + (len - at.end);
	char *out = xmalloc(n + 1);
	memcpy(out, data, at.start);
	memcpy(out + at.start, member, mlen);
	memcpy(out + at.start + mlen, records, rlen);
	memcpy(out + at.start + mlen + rlen, data + at.end, len - at.end);
	out[n] = '\0';
	if (out_len)
		*out_len = n;
	return out;
}

size_t job_client_bytes(const char *data, size_t len)
{
	struct records_at at;
	if (find_member(data, len, "imgspool", &at) < 0 || !at.found)
		return len;
	return len - (at.end - at.start) - (at.others ? 1 : 0);
}

const char *job_member_bytes(const char *data, size_t len, const char *name, size_t *value_len)
{
	struct records_at at;
	if (find_member(data, len, name, &at) < 0 || !at.found)
		return NULL;
	*value_len = at.value_end - at.value;
	return data + at.value;
}
