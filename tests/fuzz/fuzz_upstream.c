/* fuzz_upstream.c - libFuzzer entry point for the response side of upstream.c.
 *
 * Input: one byte choosing the dialect (even: OpenAI, odd: Gemini), then a response body as an
 * upstream or a gateway could send it. Checked, trapping on a broken promise of upstream.h:
 *   - upstream_parse_response() never fails: a body that is not a JSON object leaves everything
 *     empty; every image it keeps is non-empty with the extension its magic bytes say; every URL is
 *     an absolute http(s) URL of printable ASCII; the Gemini text is at most 2000 bytes of valid
 *     UTF-8; the strings it fills are never empty;
 *   - a body of at least 64 KiB takes another path (long strings are lifted out before jansson
 *     runs): the same body padded with white space past 64 KiB must read exactly the same;
 *   - base64_decode() on the whole input agrees with a plain decoder written here from the rules
 *     in upstream.h; image_ext_from_magic() and image_mime_from_magic() agree with each other;
 *   - jsontext_dump() writes what json_dumps() writes for the body parsed as JSON, compact and
 *     indented (results, records and request bodies are written with it);
 *   - a body jsontext_load() reads itself (job files and answers are read with it), with or
 *     without JSON_REJECT_DUPLICATES, is one json_loadb() accepts too, as the same tree in the
 *     same order.
 * Everything is released, so LeakSanitizer sees any leak. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsontext.h"
#include "upstream.h"
#include "fuzz.h"
#include "banned.h"

#define TEXT_MAX 2000           /* upstream.c: bytes of joined Gemini text */
#define URL_MAX 8192            /* upstream.c: longest URL taken */
#define TEXT_URLS_MAX 16        /* upstream.c: image links taken from Gemini text */
#define BIG_BODY (64 * 1024)    /* upstream.c: bodies from this size take the skeleton path */
#define BIG_STRING 1024         /* upstream.c: strings from this length are lifted out */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	json_object_seed(1);        /* reproducible key order */
	return 0;
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static bool ci_prefix(const char *s, size_t len, const char *prefix)
{
	size_t m = strlen(prefix);

	if (len < m)
		return false;
	for (size_t i = 0; i < m; i++) {
		char c = s[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != prefix[i])
			return false;
	}
	return true;
}

static bool nonempty_or_null(const char *s)
{
	return !s || s[0];
}

static void check_response(enum dialect d, const struct response *r)
{
	if (!r->is_json) {
		CHECK(!r->images && !r->n_images && !r->urls && !r->n_urls && !r->n_bad_images);
		CHECK(!r->usage && !r->error_code && !r->error_type && !r->error_status &&
		      !r->error_message);
		CHECK(!r->has_candidates && !r->finish_reason && !r->finish_message &&
		      !r->block_reason && !r->text);
		CHECK(r->candidates_tokens == -1 && r->retry_delay_ms == -1);
		return;
	}
	CHECK(!r->n_images == !r->images);
	for (size_t i = 0; i < r->n_images; i++) {
		const struct image *img = &r->images[i];
		CHECK(img->data && img->len > 0 && img->ext);
		CHECK(str_eq(img->ext, image_ext_from_magic(img->data, img->len)));
	}
	CHECK(!r->n_urls == !r->urls);
	for (size_t i = 0; i < r->n_urls; i++) {
		const char *u = r->urls[i];
		size_t n;
		CHECK(u);
		n = strlen(u);
		CHECK(n <= URL_MAX);
		CHECK((ci_prefix(u, n, "http://") && n > 7) || (ci_prefix(u, n, "https://") && n > 8));
		for (size_t k = 0; k < n; k++)
			CHECK((unsigned char)u[k] > 0x20 && (unsigned char)u[k] < 0x7f);
	}
	CHECK(r->n_bad_images >= 0);
	CHECK(!r->usage || json_is_object(r->usage));
	CHECK(nonempty_or_null(r->error_code) && nonempty_or_null(r->error_type) &&
	      nonempty_or_null(r->error_status) && nonempty_or_null(r->error_message));
	CHECK(nonempty_or_null(r->finish_reason) && nonempty_or_null(r->finish_message) &&
	      nonempty_or_null(r->block_reason));
	CHECK(r->candidates_tokens >= -1 && r->retry_delay_ms >= -1);
	if (r->text) {
		size_t n = strlen(r->text);
		json_t *valid;
		CHECK(n > 0 && n <= TEXT_MAX);
		valid = json_stringn(r->text, n);       /* NULL when not valid UTF-8 */
		CHECK(valid);
		json_decref(valid);
	}
	if (d == DIALECT_OPENAI) {
		CHECK(!r->has_candidates && !r->finish_reason && !r->finish_message &&
		      !r->block_reason && !r->text && r->candidates_tokens == -1);
	} else {
		CHECK(r->n_urls <= TEXT_URLS_MAX);      /* Gemini URLs come only from text parts */
	}
}

static void check_same(const struct response *a, const struct response *b)
{
	CHECK(a->is_json == b->is_json);
	CHECK(a->n_images == b->n_images && a->n_urls == b->n_urls);
	CHECK(a->n_bad_images == b->n_bad_images);
	for (size_t i = 0; i < a->n_images; i++)
		CHECK(a->images[i].len == b->images[i].len &&
		      !memcmp(a->images[i].data, b->images[i].data, a->images[i].len) &&
		      str_eq(a->images[i].ext, b->images[i].ext));
	for (size_t i = 0; i < a->n_urls; i++)
		CHECK(str_eq(a->urls[i], b->urls[i]));
	CHECK(!a->usage == !b->usage);
	CHECK(!a->usage || json_equal(a->usage, b->usage));
	CHECK(str_eq(a->error_code, b->error_code) && str_eq(a->error_type, b->error_type) &&
	      str_eq(a->error_status, b->error_status) &&
	      str_eq(a->error_message, b->error_message));
	CHECK(a->has_candidates == b->has_candidates);
	CHECK(str_eq(a->finish_reason, b->finish_reason) &&
	      str_eq(a->finish_message, b->finish_message) &&
	      str_eq(a->block_reason, b->block_reason));
	CHECK(a->candidates_tokens == b->candidates_tokens);
	CHECK(str_eq(a->text, b->text));
	CHECK(a->retry_delay_ms == b->retry_delay_ms);
}

static void check_released(const struct response *r)
{
	CHECK(!r->images && !r->n_images && !r->urls && !r->n_urls && !r->usage && !r->text &&
	      !r->error_code && !r->error_type && !r->error_status && !r->error_message &&
	      !r->finish_reason && !r->finish_message && !r->block_reason);
}

/* Whether the body has a run of BIG_STRING bytes without a '"': then the skeleton path would
 * lift a string out, and is worth comparing with the plain path. */
static bool has_long_run(const char *s, size_t len)
{
	size_t run = 0;

	for (size_t i = 0; i < len; i++) {
		run = s[i] == '"' ? 0 : run + 1;
		if (run >= BIG_STRING)
			return true;
	}
	return false;
}

/* ---- base64: a plain second decoder ---- */

static int b64_sextet(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* upstream.h: RFC 4648 standard alphabet, padding optional (but only to complete a last quantum
 * of 2 or 3 characters), CR/LF skipped anywhere, a leading "data:...;base64," (case-insensitive, no comma inside) stripped. */
static unsigned char *ref_base64(const char *in, size_t len, size_t *outlen)
{
	const char *p = in, *end = in + len;
	char *clean;
	unsigned char *out;
	size_t n = 0, chars, pads = 0, o = 0, bits = 0;
	uint32_t acc = 0;

	if (ci_prefix(in, len, "data:")) {
		const char *comma = memchr(in, ',', len);
		if (!comma || comma - in < 12 || !ci_prefix(comma - 7, 7, ";base64"))
			return NULL;
		p = comma + 1;
	}
	clean = malloc((size_t)(end - p) + 1);
	CHECK(clean);
	for (; p < end; p++)
		if (*p != '\r' && *p != '\n')
			clean[n++] = *p;
	for (chars = 0; chars < n && b64_sextet((unsigned char)clean[chars]) >= 0; chars++)
		;
	for (pads = 0; chars + pads < n && clean[chars + pads] == '='; pads++)
		;
	if (chars + pads != n || chars % 4 == 1 ||
	    (pads && (chars % 4 < 2 || chars % 4 + pads != 4))) {
		free(clean);
		return NULL;
	}
	out = malloc(chars / 4 * 3 + 3);
	CHECK(out);
	for (size_t i = 0; i < chars; i++) {
		acc = acc << 6 | (uint32_t)b64_sextet((unsigned char)clean[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	free(clean);
	*outlen = o;
	return out;
}

static void check_base64(const char *in, size_t len)
{
	size_t got_len = 0, want_len = 0;
	unsigned char *got = base64_decode(in, len, &got_len);
	unsigned char *want = ref_base64(in, len, &want_len);

	CHECK(!got == !want);
	if (got) {
		CHECK(got_len == want_len && !memcmp(got, want, got_len));
		CHECK(str_eq(image_ext_from_magic(got, got_len),
			     image_ext_from_magic(want, want_len)));
	}
	free(got);
	free(want);
}

static void check_magic(const unsigned char *data, size_t len)
{
	const char *ext = image_ext_from_magic(data, len);
	const char *mime = image_mime_from_magic(data, len);

	CHECK(!ext == !mime);
	if (ext)
		CHECK((!strcmp(ext, "png") && !strcmp(mime, "image/png")) ||
		      (!strcmp(ext, "jpg") && !strcmp(mime, "image/jpeg")) ||
		      (!strcmp(ext, "webp") && !strcmp(mime, "image/webp")));
}

static void check_jsontext(const char *body, size_t len)
{
	static const size_t flag_sets[] = {
		JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY,
		JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY,
	};
	json_t *v = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

	if (!v)
		return;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		char *want = json_dumps(v, flag_sets[i]);
		size_t got_len = 0;
		char *got = jsontext_dump(v, flag_sets[i], SIZE_MAX, &got_len);

		CHECK(want ? got && !strcmp(want, got) && got_len == strlen(want) : !got);
		free(want);
		free(got);
	}
	json_decref(v);
}

static void check_jsontext_load(const char *body, size_t len)
{
	static const size_t flag_sets[] = { 0, JSON_REJECT_DUPLICATES };

	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		json_t *got = jsontext_load_fast(body, len, flag_sets[i]);
		json_t *want = got ? json_loadb(body, len, flag_sets[i], NULL) : NULL;
		char *got_text = got ? json_dumps(got, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		char *want_text = want ? json_dumps(want, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

		CHECK(!got || (want_text && got_text && !strcmp(want_text, got_text)));
		free(got_text);
		free(want_text);
		json_decref(got);
		json_decref(want);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum dialect d;
	const char *body;
	size_t len;
	struct response resp;

	check_magic(data, size);
	check_base64((const char *)data, size);
	if (size < 1)
		return 0;
	d = data[0] & 1 ? DIALECT_GEMINI : DIALECT_OPENAI;
	body = (const char *)data + 1;
	len = size - 1;

	upstream_parse_response(d, body, len, &resp);
	check_response(d, &resp);
	check_jsontext(body, len);
	check_jsontext_load(body, len);

	if (len < BIG_BODY && has_long_run(body, len)) {
		/* white space after the object does not change it, but moves it onto the big path */
		size_t plen = BIG_BODY + 1;
		char *padded = malloc(plen);
		struct response big;

		CHECK(padded);
		memcpy(padded, body, len);
		memset(padded + len, ' ', plen - len);
		upstream_parse_response(d, padded, plen, &big);
		check_response(d, &big);
		check_same(&resp, &big);
		response_release(&big);
		free(padded);
	}

	response_release(&resp);
	check_released(&resp);
	upstream_parse_response(d, NULL, 0, &resp);     /* "never fails", even without a body */
	check_response(d, &resp);
	CHECK(!resp.is_json);
	response_release(&resp);
	return 0;
}
