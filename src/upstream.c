/* upstream.c - the two wire dialects APIYI speaks: building requests and reading responses.
 *
 * Requests: OpenAI Images (JSON for generations, multipart parts for edits with reference images)
 * or Gemini-native generateContent (JSON, references inline as base64). A job that the chosen
 * dialect cannot express (n > 1 or a mask on a Gemini model) is refused with a message for the
 * user, never silently changed.
 *
 * Responses: one parser for both dialects that never fails. It type-checks every field it reads and
 * keeps what it finds: inline images (decoded and checked by their magic bytes), image URLs, the
 * {"error":{...}} envelope (also when a gateway embeds Google's error JSON as a string inside its
 * own message), and Gemini's refusal signals (finishReason, blockReason, candidatesTokenCount, text).
 * Decisions (retry, fail, bill) are not made here: see retry.c.
 *
 * Pure functions: no I/O, no logging. Cost is linear in the size of the body. What a response
 * gives (strings, member names, decoded images) holds no secret registered in secret.c. */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "crypto.h"
#include "job.h"
#include "jsontext.h"
#include "secret.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

#define TEXT_MAX 2000            /* bytes of joined Gemini text kept in struct response */
#define URL_MAX 8192             /* longer "URLs" are not taken as image links */
#define TEXT_URLS_MAX 16         /* image links taken from the text parts of one response */
#define MARKDOWN_LOOKBACK 512    /* how far back "](" looks for the "![" that opens an image */

/* ---- small string helpers ---- */

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Whether the len bytes at s begin with prefix, ignoring ASCII case. s need not be terminated. */
static bool has_prefix_ci(const char *s, size_t len, const char *prefix)
{
	size_t m = strlen(prefix);
	if (len < m)
		return false;
	for (size_t i = 0; i < m; i++)
		if (tolower((unsigned char)s[i]) != tolower((unsigned char)prefix[i]))
			return false;
	return true;
}

static void set_err(char *err, size_t errsize, const char *msg)
{
	if (err && errsize)
		(void)xsnprintf(err, errsize, "%s", msg);
}

/* ---- magic bytes ---- */

const char *image_ext_from_magic(const unsigned char *data, size_t len)
{
	static const unsigned char png[8] = { 0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a };

	if (!data)
		return NULL;
	if (len >= sizeof(png) && memcmp(data, png, sizeof(png)) == 0)
		return "png";
	if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
		return "jpg";
	if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
		return "webp";
	return NULL;
}

const char *image_mime_from_magic(const unsigned char *data, size_t len)
{
	const char *ext = image_ext_from_magic(data, len);
	if (!ext)
		return NULL;
	if (!strcmp(ext, "png"))
		return "image/png";
	if (!strcmp(ext, "jpg"))
		return "image/jpeg";
	return "image/webp";
}

/* A static MIME type for a reference image: the caller's (borrowed) string mapped onto ours, else
 * what the magic bytes say. struct form_part keeps only static MIME strings. */
static const char *ref_mime(const struct ref_image *ref)
{
	static const char *const known[] = { "image/png", "image/jpeg", "image/webp" };
	const char *magic;

	if (ref->mime) {
		for (size_t i = 0; i < ARRAY_SIZE(known); i++)
			if (!strcmp(ref->mime, known[i]))
				return known[i];
		if (!strcmp(ref->mime, "image/jpg"))
			return "image/jpeg";
	}
	magic = image_mime_from_magic(ref->data, ref->len);
	return magic ? magic : "application/octet-stream";
}

/* ---- base64 ---- */

/* Value of each byte in the standard alphabet; 255 for everything else (CR, LF and '=' included). */
static const unsigned char b64_value[256] = {
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255, 255,  63,
	 52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255, 255, 255, 255,
	255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
	 15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255, 255,
	255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
	 41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
	255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};

unsigned char *base64_decode(const char *in, size_t inlen, size_t *outlen)
{
	const unsigned char *p = (const unsigned char *)in, *end = p + inlen;
	unsigned char *out, *o;
	uint32_t acc = 0;
	int q = 0;               /* sextets in acc */

	if (!in)
		return NULL;
	/* "data:image/png;base64," (anything without a comma, ending in ";base64") */
	if (has_prefix_ci(in, inlen, "data:")) {
		const unsigned char *comma = memchr(p, ',', inlen);
		if (!comma || comma - p < 5 + 7 || !has_prefix_ci((const char *)comma - 7, 7, ";base64"))
			return NULL;
		p = comma + 1;
	}

	out = o = xmalloc((size_t)(end - p) / 4 * 3 + 3);
	while (p < end) {
		/* fast path: whole quanta of alphabet characters */
		if (q == 0) {
			while (end - p >= 4) {
				unsigned a = b64_value[p[0]], b = b64_value[p[1]];
				unsigned c = b64_value[p[2]], d = b64_value[p[3]];
				if ((a | b | c | d) & 0xc0)
					break;
				uint32_t v = a << 18 | b << 12 | c << 6 | d;
				o[0] = (unsigned char)(v >> 16);
				o[1] = (unsigned char)(v >> 8);
				o[2] = (unsigned char)v;
				o += 3;
				p += 4;
			}
			if (p == end)
				break;
		}
		unsigned char ch = *p++;
		unsigned v = b64_value[ch];
		if (v < 64) {
			acc = acc << 6 | v;
			if (++q == 4) {
				o[0] = (unsigned char)(acc >> 16);
				o[1] = (unsigned char)(acc >> 8);
				o[2] = (unsigned char)acc;
				o += 3;
				acc = 0;
				q = 0;
			}
		} else if (ch == '\r' || ch == '\n') {
			continue;
		} else if (ch == '=') {
			/* padding: only '=' (and CR/LF) may follow, and it must complete the quantum */
			int pads = 1;
			for (; p < end; p++) {
				if (*p == '=')
					pads++;
				else if (*p != '\r' && *p != '\n')
					goto invalid;
			}
			if (q < 2 || q + pads != 4)
				goto invalid;
			break;
		} else {
			goto invalid;
		}
	}
	if (q == 1)
		goto invalid;
	if (q == 2) {
		*o++ = (unsigned char)(acc >> 4);
	} else if (q == 3) {
		*o++ = (unsigned char)(acc >> 10);
		*o++ = (unsigned char)(acc >> 2);
	}
	*outlen = (size_t)(o - out);
	return out;

invalid:
	free(out);
	return NULL;
}

/* ---- dialects ---- */

enum dialect upstream_dialect(const char *model)
{
	if (model && starts_with(model, "gemini-") && strstr(model, "-image"))
		return DIALECT_GEMINI;
	return DIALECT_OPENAI;
}

const char *dialect_name(enum dialect d)
{
	return d == DIALECT_GEMINI ? "gemini" : "openai";
}

int upstream_model_check(const char *model, char *why, size_t whysize)
{
	size_t len = model ? strlen(model) : 0;
	if (!len)
		return xsnprintf(why, whysize, "is empty"), -1;
	if (len > UPSTREAM_MODEL_MAX)
		return xsnprintf(why, whysize, "is %zu bytes long, more than %d", len,
				 UPSTREAM_MODEL_MAX), -1;
	bool gemini = upstream_dialect(model) == DIALECT_GEMINI;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)model[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '-' || (c == ':' && !gemini))
			continue;
		if (c == ':')
			xsnprintf(why, whysize, "is a Gemini model with ':' at byte offset %zu", i);
		else if (c >= ' ' && c < 0x7f)
			xsnprintf(why, whysize, "has '%c' at byte offset %zu", c, i);
		else
			xsnprintf(why, whysize, "has the byte 0x%02x at byte offset %zu", c, i);
		return -1;
	}
	return 0;
}

/* ---- requests ---- */

void request_release(struct request *req)
{
	if (!req)
		return;
	free(req->url);
	free(req->body);
	for (size_t i = 0; i < req->n_parts; i++) {
		free(req->parts[i].name);
		free(req->parts[i].value);
		free(req->parts[i].filename);
		free(req->parts[i].data);
	}
	free(req->parts);
	memset(req, 0, sizeof(*req));
}

/* "{base}{path}" with one trailing "/" of base dropped. */
static char *join_url(const char *base, const char *path)
{
	size_t n = strlen(base);
	if (n && base[n - 1] == '/')
		n--;
	return xasprintf("%.*s%s", (int)n, base, path);
}

/* Sets key to a JSON string; -1 when value is not valid UTF-8. */
static int set_string(json_t *obj, const char *key, const char *value)
{
	json_t *s = json_string(value);
	if (!s)
		return -1;
	return json_object_set_new(obj, key, s);
}

/* Sets key to a JSON string when value is given; -1 with err when it is not valid UTF-8
 * (job.c should have refused it already). */
static int set_option(json_t *obj, const char *key, const char *value, char *err, size_t errsize)
{
	if (!value || set_string(obj, key, value) == 0)
		return 0;
	(void)xsnprintf(err, errsize, "\"%s\" is not valid UTF-8", key);
	return -1;
}

/* The optional OpenAI fields the job gave, in wire order, as JSON values: n only above 1,
 * output_compression only when given. Never response_format: gpt-image-2 answers 400. */
static int openai_options(const struct job *job, json_t *obj, char *err, size_t errsize)
{
	if (set_option(obj, "size", job->size, err, errsize) < 0)
		return -1;
	if (job->n > 1)
		json_object_set_new(obj, "n", json_integer(job->n));
	if (set_option(obj, "quality", job->quality, err, errsize) < 0 ||
	    set_option(obj, "background", job->background, err, errsize) < 0 ||
	    set_option(obj, "output_format", job->output_format, err, errsize) < 0)
		return -1;
	if (job->output_compression >= 0)
		json_object_set_new(obj, "output_compression", json_integer(job->output_compression));
	return set_option(obj, "moderation", job->moderation, err, errsize);
}

/* The body of a JSON request, or -1 when it cannot be written (a string that is not UTF-8).
 * Steals root. */
static int finish_json(struct request *req, json_t *root, char *err, size_t errsize)
{
	req->body = jsontext_dump(root, JSON_COMPACT, SIZE_MAX, &req->body_len);
	json_decref(root);
	if (!req->body) {
		set_err(err, errsize, "cannot serialise the request body");
		return -1;
	}
	return 0;
}

static int build_openai_generation(const struct job *job, const char *model, struct request *req,
				   char *err, size_t errsize)
{
	json_t *root = json_object();

	if (set_string(root, "model", model) < 0) {
		set_err(err, errsize, "the model name is not valid UTF-8");
		goto fail;
	}
	if (set_string(root, "prompt", job->prompt) < 0) {
		set_err(err, errsize, "the prompt is not valid UTF-8");
		goto fail;
	}
	if (openai_options(job, root, err, errsize) < 0)
		goto fail;
	/* Never response_format: gpt-image-2 answers 400 unknown_parameter. */
	return finish_json(req, root, err, errsize);

fail:
	json_decref(root);
	return -1;
}

static void add_text_part(struct request *req, const char *name, const char *value)
{
	struct form_part *part = &req->parts[req->n_parts++];
	part->name = xstrdup(name);
	part->value = xstrdup(value);
}

static void add_file_part(struct request *req, const char *name, const struct ref_image *img)
{
	struct form_part *part = &req->parts[req->n_parts++];
	const char *ext = image_ext_from_magic(img->data, img->len);

	part->name = xstrdup(name);
	part->filename = img->name && *img->name ? xstrdup(img->name)
						 : xasprintf("image.%s", ext ? ext : "bin");
	part->mime = ref_mime(img);
	part->len = img->len;
	if (!img->data) {
		/* Read by the transfer: the bytes are never copied (review10 F3), and no descriptor
		 * is held between calls (review11 R1). */
		part->file = img->file;
		part->from_fd = true;
		return;
	}
	part->data = xmalloc(img->len);
	if (img->len)
		memcpy(part->data, img->data, img->len);
}

static int build_openai_edit(const struct job *job, const char *model,
			     const struct ref_image *refs, size_t n_refs, const struct ref_image *mask,
			     struct request *req, char *err, size_t errsize)
{
	json_t *opts = json_object();
	const char *key;
	json_t *value;

	if (openai_options(job, opts, err, errsize) < 0) {
		json_decref(opts);
		return -1;
	}
	req->parts = xcalloc(2 + n_refs + 1 + json_object_size(opts), sizeof(*req->parts));
	add_text_part(req, "model", model);
	add_text_part(req, "prompt", job->prompt);
	for (size_t i = 0; i < n_refs; i++)
		add_file_part(req, "image[]", &refs[i]);
	if (mask)
		add_file_part(req, "mask", mask);
	json_object_foreach(opts, key, value) {
		if (json_is_string(value)) {
			add_text_part(req, key, json_string_value(value));
		} else {
			char *num = xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(value));
			add_text_part(req, key, num);
			free(num);
		}
	}
	json_decref(opts);
	return 0;
}

/* Gemini's supported aspect ratios. */
static const struct {
	const char *name;
	int w, h;
} gemini_ratios[] = {
	{ "1:1", 1, 1 }, { "2:3", 2, 3 }, { "3:2", 3, 2 }, { "3:4", 3, 4 }, { "4:3", 4, 3 },
	{ "4:5", 4, 5 }, { "5:4", 5, 4 }, { "9:16", 9, 16 }, { "16:9", 16, 9 }, { "21:9", 21, 9 },
};

/* "WxH" with both sides 1..16384. */
static bool parse_size(const char *s, int *w, int *h)
{
	int v[2] = { 0, 0 };

	for (int i = 0; i < 2; i++) {
		int digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 6) {
			v[i] = v[i] * 10 + (*s++ - '0');
			digits++;
		}
		if (!digits || v[i] < 1 || v[i] > 16384)
			return false;
		if (i == 0 && *s++ != 'x')
			return false;
	}
	if (*s)
		return false;
	*w = v[0];
	*h = v[1];
	return true;
}

/* The supported ratio closest to w/h in log space: |log(r/q)| is smallest where max(r/q, q/r)
 * is, so no libm is needed. Ties go to the earlier table entry. */
static const char *closest_ratio(int w, int h)
{
	double r = (double)w / h, best = 0;
	const char *name = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(gemini_ratios); i++) {
		double d = r / ((double)gemini_ratios[i].w / gemini_ratios[i].h);
		if (d < 1)
			d = 1 / d;
		if (!name || d < best) {
			best = d;
			name = gemini_ratios[i].name;
		}
	}
	return name;
}

/* Characters a model name may have to be put in the URL path unescaped. */
static bool model_is_path_safe(const char *model)
{
	if (!*model)
		return false;
	for (const char *p = model; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return false;
	return true;
}

/* quality, background, output_format, output_compression and moderation have no Gemini
 * equivalent and are ignored here: the output format follows the model (its magic bytes
 * decide the file extension), and Gemini has no moderation knob. */
static int build_gemini(const struct job *job, const char *model,
			const struct ref_image *refs, size_t n_refs, const struct ref_image *mask,
			const char *base_url, struct request *req, char *err, size_t errsize)
{
	json_t *root, *parts, *config, *text;
	int w = 0, h = 0;

	if (job->n > 1) {
		set_err(err, errsize,
			"n > 1 is not supported for Gemini image models; submit one job per image");
		return -1;
	}
	if (mask) {
		set_err(err, errsize, "masks are only supported by OpenAI-style models");
		return -1;
	}
	if (!model_is_path_safe(model)) {
		set_err(err, errsize, "the model name has characters that cannot go in a URL path");
		return -1;
	}
	if (job->size && strcmp(job->size, "auto") && !parse_size(job->size, &w, &h)) {
		set_err(err, errsize, "size must be \"WxH\" or \"auto\"");
		return -1;
	}

	root = json_object();
	parts = json_array();
	json_object_set_new(root, "contents",
			    json_pack("[{s:o}]", "parts", parts));
	text = json_string(job->prompt);
	if (!text) {
		set_err(err, errsize, "the prompt is not valid UTF-8");
		json_decref(root);
		return -1;
	}
	json_array_append_new(parts, json_pack("{s:o}", "text", text));
	for (size_t i = 0; i < n_refs; i++) {
		char *b64 = crypto_base64_encode(refs[i].data, refs[i].len);
		json_array_append_new(parts, json_pack("{s:{s:s,s:o}}", "inlineData",
						       "mimeType", ref_mime(&refs[i]),
						       "data", json_stringn_nocheck(b64, strlen(b64))));
		free(b64);
	}

	config = json_pack("{s:[s]}", "responseModalities", "IMAGE");
	if (job->size && strcmp(job->size, "auto")) {
		json_t *image = json_object();
		int edge = w > h ? w : h;
		json_object_set_new(image, "aspectRatio", json_string(closest_ratio(w, h)));
		/* Gen-1 (gemini-2.5-flash-image*) is 1K only and fails when imageSize is present. */
		if (!starts_with(model, "gemini-2.5-flash-image"))
			json_object_set_new(image, "imageSize",
					    json_string(edge <= 1024 ? "1K" : edge <= 2048 ? "2K" : "4K"));
		json_object_set_new(config, "imageConfig", image);
	}
	json_object_set_new(root, "generationConfig", config);

	char *path = xasprintf("/v1beta/models/%s:generateContent", model);
	req->url = join_url(base_url, path);
	free(path);
	return finish_json(req, root, err, errsize);
}

int upstream_build_request(const struct job *job, const char *model, const char *base_url,
			   const struct ref_image *refs, size_t n_refs, const struct ref_image *mask,
			   struct request *req, char *err, size_t errsize)
{
	int rc;

	memset(req, 0, sizeof(*req));
	if (err && errsize)
		err[0] = '\0';
	if (!model || !*model) {
		set_err(err, errsize, "no model to call");
		return -1;
	}
	if (!base_url || !*base_url) {
		set_err(err, errsize, "no base URL for the provider");
		return -1;
	}
	if (!job->prompt) {
		set_err(err, errsize, "no prompt");
		return -1;
	}
	if (!refs)
		n_refs = 0;
	req->dialect = upstream_dialect(model);

	if (req->dialect == DIALECT_GEMINI) {
		rc = build_gemini(job, model, refs, n_refs, mask, base_url, req, err, errsize);
	} else if (n_refs == 0) {
		if (mask) {
			set_err(err, errsize, "a mask needs at least one reference image");
			rc = -1;
		} else {
			req->url = join_url(base_url, "/v1/images/generations");
			rc = build_openai_generation(job, model, req, err, errsize);
		}
	} else {
		req->url = join_url(base_url, "/v1/images/edits");
		rc = build_openai_edit(job, model, refs, n_refs, mask, req, err, errsize);
	}
	if (rc < 0) {
		enum dialect d = req->dialect;
		request_release(req);
		req->dialect = d;
	}
	return rc;
}

/* ---- responses ---- */

void response_release(struct response *resp)
{
	if (!resp)
		return;
	for (size_t i = 0; i < resp->n_images; i++)
		free(resp->images[i].data);
	free(resp->images);
	for (size_t i = 0; i < resp->n_urls; i++)
		free(resp->urls[i]);
	free(resp->urls);
	json_decref(resp->usage);
	free(resp->error_code);
	free(resp->error_type);
	free(resp->error_status);
	free(resp->error_message);
	free(resp->finish_reason);
	free(resp->finish_message);
	free(resp->block_reason);
	free(resp->text);
	memset(resp, 0, sizeof(*resp));
	resp->candidates_tokens = -1;
	resp->retry_delay_ms = -1;
}

size_t response_keep_first(struct response *resp, size_t n)
{
	size_t dropped = 0;
	while (resp->n_images > n) {
		free(resp->images[--resp->n_images].data);
		dropped++;
	}
	size_t room = n - resp->n_images;
	while (resp->n_urls > room) {
		free(resp->urls[--resp->n_urls]);
		dropped++;
	}
	return dropped;
}

/* A copy of a non-empty JSON string, else NULL. An empty code or status says nothing, so it is
 * reported as absent. */
static char *dup_nonempty(const json_t *v)
{
	if (!json_is_string(v) || json_string_length(v) == 0)
		return NULL;
	return xstrndup(json_string_value(v), json_string_length(v));
}

/* A code is a string or an integer (Google's {"code":429}). */
static char *dup_code(const json_t *v)
{
	if (json_is_integer(v))
		return xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
	return dup_nonempty(v);
}

static void push_image(struct response *out, unsigned char *data, size_t len, const char *ext)
{
	/* grow by doubling: capacity is the next power of two at or above n_images */
	size_t n = out->n_images;
	if ((n & (n - 1)) == 0)
		out->images = xrealloc(out->images, (n ? 2 * n : 1) * sizeof(*out->images));
	out->images[n].data = data;
	out->images[n].len = len;
	out->images[n].ext = ext;
	out->n_images++;
}

static void push_url(struct response *out, const char *url, size_t len)
{
	size_t n = out->n_urls;
	if ((n & (n - 1)) == 0)
		out->urls = xrealloc(out->urls, (n ? 2 * n : 1) * sizeof(*out->urls));
	out->urls[n] = xstrndup(url, len);
	out->n_urls++;
}

/* Decodes one inline base64 image into out->images, or counts it as bad. */
static void take_inline(struct response *out, const json_t *v)
{
	size_t len;
	unsigned char *data;
	const char *ext;

	if (!json_is_string(v)) {
		out->n_bad_images++;
		return;
	}
	data = base64_decode(json_string_value(v), json_string_length(v), &len);
	if (data)   /* the raw body's redaction never saw these bytes: base64 hid them */
		len = secret_redact((char *)data, len);
	ext = data ? image_ext_from_magic(data, len) : NULL;
	if (!ext) {
		free(data);
		out->n_bad_images++;
		return;
	}
	push_image(out, data, len, ext);
}

/* An absolute http(s) URL of printable ASCII without spaces. */
static bool is_http_url(const char *s, size_t len)
{
	size_t scheme;

	if (has_prefix_ci(s, len, "http://"))
		scheme = 7;
	else if (has_prefix_ci(s, len, "https://"))
		scheme = 8;
	else
		return false;
	if (len <= scheme || len > URL_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* "retryDelay":"37s" / "1.5s" → milliseconds, or -1. */
static int64_t parse_duration_ms(const char *s)
{
	int64_t secs = 0, ms = 0;
	int digits = 0;

	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (secs > 100000000)          /* > ~3 years: not a delay we can use */
			return -1;
		secs = secs * 10 + (*s - '0');
	}
	if (!digits)
		return -1;
	if (*s == '.') {
		int frac = 0;
		for (s++; *s >= '0' && *s <= '9'; s++, frac++)
			if (frac < 3)
				ms = ms * 10 + (*s - '0');
		if (!frac)
			return -1;
		for (; frac < 3; frac++)
			ms *= 10;
	}
	if (strcmp(s, "s") != 0)
		return -1;
	return secs * 1000 + ms;
}

/* google.rpc.RetryInfo in an error's details[]. */
static int64_t find_retry_delay(const json_t *error)
{
	const json_t *details = json_object_get(error, "details"), *d;
	size_t i;

	json_array_foreach(details, i, d) {
		const char *type = json_string_value(json_object_get(d, "@type"));
		const char *delay = json_string_value(json_object_get(d, "retryDelay"));
		if (type && delay && ends_with(type, "google.rpc.RetryInfo")) {
			int64_t ms = parse_duration_ms(delay);
			if (ms >= 0)
				return ms;
		}
	}
	return -1;
}

/* A gateway may carry Google's whole error JSON as the text of its own message (§6.5). What that
 * inner error says fills in what the outer envelope left empty; the outer message is kept. */
static void parse_embedded_error(const char *msg, size_t len, struct response *out)
{
	const char *brace = memchr(msg, '{', len);
	json_t *inner_root, *inner;

	if (!brace || !strstr(brace, "\"error\""))
		return;
	inner_root = json_loadb(brace, len - (size_t)(brace - msg), JSON_DISABLE_EOF_CHECK, NULL);
	inner = json_object_get(inner_root, "error");
	if (json_is_object(inner)) {
		if (!out->error_code)
			out->error_code = dup_code(json_object_get(inner, "code"));
		if (!out->error_status)
			out->error_status = dup_nonempty(json_object_get(inner, "status"));
		if (!out->error_type)
			out->error_type = dup_nonempty(json_object_get(inner, "type"));
		if (out->retry_delay_ms < 0)
			out->retry_delay_ms = find_retry_delay(inner);
	}
	json_decref(inner_root);
}

static void parse_error(const json_t *root, struct response *out)
{
	const json_t *error = json_object_get(root, "error"), *msg;

	if (json_is_string(error)) {            /* {"error":"text"}: some gateways */
		out->error_message = dup_nonempty(error);
		return;
	}
	if (!json_is_object(error))
		return;
	out->error_code = dup_code(json_object_get(error, "code"));
	out->error_type = dup_nonempty(json_object_get(error, "type"));
	out->error_status = dup_nonempty(json_object_get(error, "status"));
	msg = json_object_get(error, "message");
	out->error_message = dup_nonempty(msg);
	out->retry_delay_ms = find_retry_delay(error);
	if (out->error_message)
		parse_embedded_error(json_string_value(msg), json_string_length(msg), out);
}

static void parse_openai(const json_t *root, struct response *out)
{
	const json_t *data = json_object_get(root, "data"), *item, *usage;
	size_t i;

	json_array_foreach(data, i, item) {
		const json_t *b64 = json_object_get(item, "b64_json");
		const json_t *url = json_object_get(item, "url");
		if (b64 && !json_is_null(b64)) {
			take_inline(out, b64);
		} else if (json_is_string(url)) {
			const char *s = json_string_value(url);
			size_t len = json_string_length(url);
			if (is_http_url(s, len))
				push_url(out, s, len);
			else if (has_prefix_ci(s, len, "data:"))   /* a data: URI is an inline image */
				take_inline(out, url);
			else
				out->n_bad_images++;
		}
	}
	usage = json_object_get(root, "usage");
	if (json_is_object(usage))
		out->usage = json_incref((json_t *)usage);
}

/* Joins a text part onto text ("\n" between parts), cut at a UTF-8 boundary at the cap. */
static void append_text(struct buf *text, const char *s, size_t len)
{
	size_t room;

	if (!len)
		return;
	if (text->len && buf_append(text, "\n", 1) < 0)
		return;
	room = text->max - text->len;
	if (len > room) {
		len = room;
		while (len && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	(void)buf_append(text, s, len);
}

static bool url_terminator(unsigned char c)
{
	return c <= 0x20 || c >= 0x7f || strchr("\"'<>()[]{}`\\|^", c) != NULL;
}

/* Whether the path of url (before any ? or #) ends in an image file extension. */
static bool url_has_image_ext(const char *url, size_t len)
{
	static const char *const exts[] = { ".png", ".jpg", ".jpeg", ".webp" };
	size_t end = 0;

	while (end < len && url[end] != '?' && url[end] != '#')
		end++;
	for (size_t i = 0; i < ARRAY_SIZE(exts); i++) {
		size_t m = strlen(exts[i]);
		if (end >= m && has_prefix_ci(url + end - m, m, exts[i]))
			return true;
	}
	return false;
}

/* Whether the "](" just before position at in s closes a Markdown image "![...]". */
static bool in_markdown_image(const char *s, size_t at)
{
	if (at < 4 || s[at - 1] != '(' || s[at - 2] != ']')
		return false;
	for (size_t i = at - 2, steps = 0; i > 0 && steps < MARKDOWN_LOOKBACK; i--, steps++) {
		if (s[i - 1] == '\n')
			return false;
		if (s[i - 1] == '[')
			return i >= 2 && s[i - 2] == '!';
	}
	return false;
}

static bool have_url(const struct response *out, const char *url, size_t len)
{
	for (size_t i = 0; i < out->n_urls; i++)
		if (strlen(out->urls[i]) == len && memcmp(out->urls[i], url, len) == 0)
			return true;
	return false;
}

/* Image links in a text part (the NB-OSS group answers with a URL instead of inlineData):
 * a Markdown image "![..](URL)", a URL whose path ends in .png/.jpg/.jpeg/.webp, or a part that is
 * nothing but one URL. Other links (a policy page in a refusal) are not images and are left. */
static void scan_text_urls(const char *s, size_t len, struct response *out, int *taken)
{
	size_t i = 0, first = 0;

	while (first < len && isspace((unsigned char)s[first]))
		first++;
	while (i + 7 < len && *taken < TEXT_URLS_MAX) {
		size_t start = i, end;
		if ((s[i] != 'h' && s[i] != 'H') ||
		    (!has_prefix_ci(s + i, len - i, "http://") && !has_prefix_ci(s + i, len - i, "https://"))) {
			i++;
			continue;
		}
		const char *hit = s + start;
		for (end = start; end < len && !url_terminator((unsigned char)s[end]); end++)
			;
		while (end > start && strchr(".,;:!?", s[end - 1]))
			end--;
		i = end > start ? end : start + 1;

		size_t n = end - start, trail = end;
		while (trail < len && (isspace((unsigned char)s[trail]) || strchr(".,;:!?", s[trail])))
			trail++;
		bool alone = first == start && trail == len;
		if (!is_http_url(hit, n))
			continue;
		if (!(in_markdown_image(s, start) || url_has_image_ext(hit, n) || alone))
			continue;
		if (have_url(out, hit, n))
			continue;
		push_url(out, hit, n);
		(*taken)++;
	}
}

static void parse_gemini(const json_t *root, struct response *out)
{
	const json_t *candidates = json_object_get(root, "candidates"), *cand, *usage, *count;
	struct buf text;
	int text_urls = 0;
	size_t i, j;

	buf_init(&text, TEXT_MAX);
	out->has_candidates = json_is_array(candidates) && json_array_size(candidates) > 0;
	json_array_foreach(candidates, i, cand) {
		const json_t *parts = json_object_get(json_object_get(cand, "content"), "parts"), *part;
		if (i == 0) {
			out->finish_reason = dup_nonempty(json_object_get(cand, "finishReason"));
			out->finish_message = dup_nonempty(json_object_get(cand, "finishMessage"));
		}
		json_array_foreach(parts, j, part) {
			const json_t *inl, *t;
			if (!json_is_object(part))
				continue;
			/* thinking output (interim images, reasoning text) is not the answer */
			if (json_is_true(json_object_get(part, "thought")))
				continue;
			inl = json_object_get(part, "inlineData");
			if (!inl)
				inl = json_object_get(part, "inline_data");
			if (json_is_object(inl)) {
				/* mimeType is not trusted: the magic bytes decide */
				take_inline(out, json_object_get(inl, "data"));
				continue;
			}
			t = json_object_get(part, "text");
			if (json_is_string(t)) {
				append_text(&text, json_string_value(t), json_string_length(t));
				scan_text_urls(json_string_value(t), json_string_length(t), out,
					       &text_urls);
			}
		}
	}
	if (text.len)
		out->text = buf_detach(&text, NULL);
	buf_release(&text);

	out->block_reason = dup_nonempty(json_object_get(json_object_get(root, "promptFeedback"),
							 "blockReason"));
	usage = json_object_get(root, "usageMetadata");
	if (json_is_object(usage)) {
		out->usage = json_incref((json_t *)usage);
		count = json_object_get(usage, "candidatesTokenCount");
		if (json_is_integer(count) && json_integer_value(count) >= 0 &&
		    json_integer_value(count) <= LONG_MAX)
			out->candidates_tokens = (long)json_integer_value(count);
	}
}

/* ---- large bodies ----
 *
 * jansson lexes a string one character at a time: ~0.75 s for the 35 MB of a 4K Gemini answer.
 * So a large body is first scanned (memchr, linear) for its long strings that need no unescaping
 * beyond "\/" and hold printable ASCII only (base64 payloads, data: URIs, long plain texts); each
 * is replaced by a short placeholder "\u0001<index>" in a skeleton that jansson parses quickly, and
 * the original bytes are put back into the parsed strings afterwards. What jansson would have
 * accepted or rejected is unchanged: the strings replaced are valid JSON string content by
 * construction, and every other byte goes through json_loadb as before. */

#define BIG_BODY (64 * 1024)     /* smaller bodies are parsed as they are */
#define BIG_STRING 1024          /* strings at least this long are taken out of the skeleton */

struct span {
	size_t off, len;
	bool slashes;            /* contains "\/" to unescape */
	bool used;
};

struct skeleton {
	struct buf text;
	struct span *spans;
	size_t n_spans;
};

/* 1 when s[0..n) is printable ASCII without escapes, 2 when its only escapes are "\/", else 0. */
static int big_string_kind(const char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	int kind = 1;
	size_t i = 0;

	/* eight bytes at a time while none is below 0x20, above 0x7e or a backslash */
	for (; n - i >= 8; i += 8) {
		uint64_t w, bs;
		memcpy(&w, s + i, 8);
		bs = w ^ (ones * '\\');
		if (((w - ones * 0x20) & ~w & highs) | (((w + ones) | w) & highs) |
		    ((bs - ones) & ~bs & highs))
			break;
	}
	for (; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c > 0x7e)
			return 0;
		if (c == '\\') {
			if (i + 1 >= n || s[i + 1] != '/')
				return 0;
			kind = 2;
			i++;
		}
	}
	return kind;
}

/* Builds the skeleton; false when there is nothing to take out or the body is not lexically
 * JSON (an unterminated string): then the body is parsed as it is. */
static bool skeleton_build(const char *body, size_t len, struct skeleton *sk)
{
	const char *p = body, *end = body + len;
	size_t copied = 0, cap = 0;

	memset(sk, 0, sizeof(*sk));
	buf_init(&sk->text, len + 1);
	/* outside strings, a '"' can only open one */
	while (p < end && (p = memchr(p, '"', (size_t)(end - p)))) {
		const char *s = p + 1, *cur = s, *q = NULL;
		for (;;) {
			const char *bs;
			if (!q || q < cur) {
				q = cur < end ? memchr(cur, '"', (size_t)(end - cur)) : NULL;
				if (!q)
					goto fail;
			}
			bs = memchr(cur, '\\', (size_t)(q - cur));
			if (!bs)
				break;
			cur = bs + 2;    /* the escaped character, which may be the '"' at q */
		}
		size_t n = (size_t)(q - s);
		int kind = n >= BIG_STRING ? big_string_kind(s, n) : 0;
		/* Only values are lifted out: skeleton_restore() puts back values, never keys. */
		const char *after = q + 1;
		while (after < end && (*after == ' ' || *after == '\t' || *after == '\n' || *after == '\r'))
			after++;
		if (after < end && *after == ':')
			kind = 0;
		if (kind) {
			char ph[32];
			int phlen = xsnprintf(ph, sizeof(ph), "\\u0001%zu", sk->n_spans);
			if (sk->n_spans == cap) {
				cap = cap ? 2 * cap : 16;
				sk->spans = xrealloc(sk->spans, cap * sizeof(*sk->spans));
			}
			sk->spans[sk->n_spans++] = (struct span){ (size_t)(s - body), n, kind == 2, false };
			if (buf_append(&sk->text, body + copied, (size_t)(s - body) - copied) < 0 ||
			    buf_append(&sk->text, ph, (size_t)phlen) < 0)
				goto fail;
			copied = (size_t)(q - body);
		}
		p = q + 1;
	}
	if (!sk->n_spans || buf_append(&sk->text, body + copied, len - copied) < 0)
		goto fail;
	return true;

fail:
	buf_release(&sk->text);
	free(sk->spans);
	memset(sk, 0, sizeof(*sk));
	return false;
}

/* Puts the original bytes back into every placeholder string under v. */
static void skeleton_restore(json_t *v, const char *body, struct skeleton *sk)
{
	const char *key;
	json_t *child;
	size_t i;

	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v), idx = 0;
		if (n < 2 || n > 21 || s[0] != '\x01')
			return;
		for (i = 1; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return;
			idx = idx * 10 + (size_t)(s[i] - '0');
		}
		if (idx >= sk->n_spans || sk->spans[idx].used)
			return;
		struct span *sp = &sk->spans[idx];
		sp->used = true;
		if (!sp->slashes) {
			json_string_setn_nocheck(v, body + sp->off, sp->len);
			return;
		}
		char *plain = xmalloc(sp->len), *o = plain;
		for (const char *c = body + sp->off, *e = c + sp->len; c < e; c++) {
			if (*c == '\\')
				c++;    /* "\/" by big_string_kind() */
			*o++ = *c;
		}
		json_string_setn_nocheck(v, plain, (size_t)(o - plain));
		free(plain);
	} else if (json_is_object(v)) {
		json_object_foreach(v, key, child)
			skeleton_restore(child, body, sk);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child)
			skeleton_restore(child, body, sk);
	}
}

static json_t *load_body(const char *body, size_t len)
{
	struct skeleton sk;
	json_t *root;

	/* a body that itself has "\u0001" could forge a placeholder: parse it as it is */
	if (len < BIG_BODY || memmem(body, len, "\\u0001", 6) || !skeleton_build(body, len, &sk))
		return jsontext_load(body, len, 0, NULL);
	root = json_loadb(sk.text.data, sk.text.len, 0, NULL);   /* its placeholders are \u escapes */
	if (root)
		skeleton_restore(root, body, &sk);
	buf_release(&sk.text);
	free(sk.spans);
	return root;
}

void upstream_parse_response(enum dialect d, const char *body, size_t len, struct response *out)
{
	json_t *root;

	memset(out, 0, sizeof(*out));
	out->candidates_tokens = -1;
	out->retry_delay_ms = -1;
	if (!body)
		return;
	root = load_body(body, len);
	if (!json_is_object(root)) {
		json_decref(root);
		return;
	}
	out->is_json = true;
	/* The raw body was redacted, but a string (or a member name) may spell a secret with
	 * escapes ("sk\u002d..."): redacted once decoded, before anything is taken from it. A body
	 * without a backslash spells every string as its bytes. */
	if (memchr(body, '\\', len))
		secret_redact_json(root);
	parse_error(root, out);
	if (d == DIALECT_GEMINI)
		parse_gemini(root, out);
	else
		parse_openai(root, out);
	json_decref(root);
}
