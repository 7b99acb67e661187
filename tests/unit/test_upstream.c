/* test_upstream.c - upstream.c: dialect choice, request bodies, response parsing, base64, magic.
 * The response rows are the bodies of shared/upstream-api.md §6, byte for byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "job.h"
#include "upstream.h"
#include "util.h"
#include "b64enc.h"
#include "secret.h"
#include "tap.h"
#include "banned.h"

/* The complete 1x1 PNG of §6.1. */
#define PNG_B64 "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

static const unsigned char jpeg_bytes[] = { 0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0 };
static const unsigned char webp_bytes[] = { 'R', 'I', 'F', 'F', 4, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', ' ' };

static unsigned char *png_bytes;
static size_t png_len;

/* A job as job_parse() leaves it when only the prompt was given. */
static struct job job_default(void)
{
	struct job job;
	memset(&job, 0, sizeof(job));
	job.prompt = "a cat";
	job.n = 1;
	job.output_compression = -1;
	return job;
}

/* ---- dialects ---- */

static void test_dialect(void)
{
	static const struct {
		const char *model;
		enum dialect want;
	} rows[] = {
		{ "gemini-3-pro-image-preview", DIALECT_GEMINI },
		{ "gemini-3-pro-image", DIALECT_GEMINI },
		{ "gemini-2.5-flash-image", DIALECT_GEMINI },
		{ "gemini-2.5-flash-image-preview", DIALECT_GEMINI },
		{ "gemini-3.1-flash-image-preview", DIALECT_GEMINI },
		{ "gemini-3.1-flash-lite-image", DIALECT_GEMINI },
		{ "gpt-image-2", DIALECT_OPENAI },
		{ "gpt-image-2-all", DIALECT_OPENAI },
		{ "gpt-image-1-mini", DIALECT_OPENAI },
		{ "flux-2-pro", DIALECT_OPENAI },
		{ "flux-kontext-max", DIALECT_OPENAI },
		{ "seedream-4-5-251128", DIALECT_OPENAI },
		{ "doubao-seedream-4-0-250828", DIALECT_OPENAI },
		{ "gemini-2.5-flash", DIALECT_OPENAI },       /* a text model: no "-image" */
		{ "my-gemini-3-pro-image", DIALECT_OPENAI },  /* does not start with gemini- */
		{ "imagen-4.0-generate", DIALECT_OPENAI },
		{ "something-unknown", DIALECT_OPENAI },
		{ "", DIALECT_OPENAI },
		{ NULL, DIALECT_OPENAI },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		ok(upstream_dialect(rows[i].model) == rows[i].want, "dialect of '%s' is %s",
		   rows[i].model ? rows[i].model : "(null)", dialect_name(rows[i].want));
	is_str(dialect_name(DIALECT_OPENAI), "openai", "dialect_name openai");
	is_str(dialect_name(DIALECT_GEMINI), "gemini", "dialect_name gemini");
}

/* ---- OpenAI generations ---- */

static void test_openai_generation(void)
{
	static const struct {
		const char *name;
		const char *base;
		const char *size, *quality, *background, *output_format, *moderation;
		int n, compression;
		const char *want_url;
		const char *want_body;       /* compared with json_equal */
	} rows[] = {
		{ "prompt only", "https://api.apiyi.com", NULL, NULL, NULL, NULL, NULL, 1, -1,
		  "https://api.apiyi.com/v1/images/generations",
		  "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\"}" },
		{ "base with trailing slash", "https://api.apiyi.com/", NULL, NULL, NULL, NULL, NULL, 1, -1,
		  "https://api.apiyi.com/v1/images/generations",
		  "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\"}" },
		{ "every field, n=1 omitted", "http://127.0.0.1:8080", "1536x1024", "high", "opaque", "jpeg",
		  "low", 1, 80, "http://127.0.0.1:8080/v1/images/generations",
		  "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\",\"size\":\"1536x1024\",\"quality\":\"high\","
		  "\"background\":\"opaque\",\"output_format\":\"jpeg\",\"output_compression\":80,"
		  "\"moderation\":\"low\"}" },
		{ "n=3 sent", "https://api.apiyi.com", NULL, NULL, NULL, NULL, NULL, 3, -1,
		  "https://api.apiyi.com/v1/images/generations",
		  "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\",\"n\":3}" },
		{ "output_compression 0 is sent", "https://api.apiyi.com", NULL, NULL, NULL, "webp", NULL, 1, 0,
		  "https://api.apiyi.com/v1/images/generations",
		  "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\",\"output_format\":\"webp\","
		  "\"output_compression\":0}" },
		{ "size auto passed through", "https://api.apiyi.com", "auto", "auto", "transparent", "png",
		  "auto", 1, -1, "https://api.apiyi.com/v1/images/generations",
		  "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\",\"size\":\"auto\",\"quality\":\"auto\","
		  "\"background\":\"transparent\",\"output_format\":\"png\",\"moderation\":\"auto\"}" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct job job = job_default();
		struct request req;
		char err[256];
		job.size = (char *)rows[i].size;
		job.quality = (char *)rows[i].quality;
		job.background = (char *)rows[i].background;
		job.output_format = (char *)rows[i].output_format;
		job.moderation = (char *)rows[i].moderation;
		job.n = rows[i].n;
		job.output_compression = rows[i].compression;

		int rc = upstream_build_request(&job, "gpt-image-2", rows[i].base, NULL, 0, NULL, &req,
						err, sizeof(err));
		ok(rc == 0, "openai gen %s: built", rows[i].name);
		ok(req.dialect == DIALECT_OPENAI, "openai gen %s: dialect", rows[i].name);
		is_str(req.url, rows[i].want_url, "openai gen %s: url", rows[i].name);
		ok(req.parts == NULL && req.n_parts == 0, "openai gen %s: no multipart", rows[i].name);
		ok(req.body && req.body_len == strlen(req.body), "openai gen %s: body_len", rows[i].name);
		json_t *got = req.body ? json_loads(req.body, 0, NULL) : NULL;
		json_t *want = json_loads(rows[i].want_body, 0, NULL);
		ok(want && json_equal(got, want), "openai gen %s: body fields", rows[i].name);
		ok(!json_object_get(got, "response_format"), "openai gen %s: no response_format",
		   rows[i].name);
		if (!json_equal(got, want))
			printf("#   body: %s\n", req.body ? req.body : "(null)");
		json_decref(got);
		json_decref(want);
		request_release(&req);
		ok(!req.url && !req.body && !req.parts, "openai gen %s: released", rows[i].name);
	}

	/* exact bytes: compact, keys in wire order */
	struct job job = job_default();
	struct request req;
	char err[256];
	job.size = "1024x1024";
	job.quality = "high";
	ok(upstream_build_request(&job, "gpt-image-2", "https://api.apiyi.com", NULL, 0, NULL, &req, err,
				  sizeof(err)) == 0, "openai gen exact: built");
	is_str(req.body, "{\"model\":\"gpt-image-2\",\"prompt\":\"a cat\",\"size\":\"1024x1024\",\"quality\":\"high\"}",
	       "openai gen exact: compact body in order");
	request_release(&req);

	/* a prompt with quotes, newlines and non-ASCII survives */
	job = job_default();
	job.prompt = "say \"hi\"\n猫 🐱";
	ok(upstream_build_request(&job, "flux-2-pro", "https://api.apiyi.com", NULL, 0, NULL, &req, err,
				  sizeof(err)) == 0, "openai gen escapes: built");
	json_t *got = json_loads(req.body ? req.body : "", 0, NULL);
	is_str(json_string_value(json_object_get(got, "prompt")), job.prompt, "openai gen escapes: prompt round-trips");
	is_str(json_string_value(json_object_get(got, "model")), "flux-2-pro", "openai gen escapes: model is the resolved one");
	json_decref(got);
	request_release(&req);

	/* failures leave req released */
	static const struct {
		const char *name;
		const char *prompt, *quality, *model, *base;
		bool mask;
		const char *want_err;
	} bad[] = {
		{ "invalid UTF-8 prompt", "a \xff cat", NULL, "gpt-image-2", "https://api.apiyi.com", false,
		  "the prompt is not valid UTF-8" },
		{ "invalid UTF-8 quality", "a cat", "hi\xc3", "gpt-image-2", "https://api.apiyi.com", false,
		  "\"quality\" is not valid UTF-8" },
		{ "no model", "a cat", NULL, "", "https://api.apiyi.com", false, "no model to call" },
		{ "no base", "a cat", NULL, "gpt-image-2", "", false, "no base URL for the provider" },
		{ "mask without refs", "a cat", NULL, "gpt-image-2", "https://api.apiyi.com", true,
		  "a mask needs at least one reference image" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct ref_image mask = { png_bytes, png_len, "image/png", "mask.png", -1 };
		job = job_default();
		job.prompt = (char *)bad[i].prompt;
		job.quality = (char *)bad[i].quality;
		memset(&req, 0xa5, sizeof(req));
		int rc = upstream_build_request(&job, bad[i].model, bad[i].base, NULL, 0,
						bad[i].mask ? &mask : NULL, &req, err, sizeof(err));
		ok(rc == -1, "openai refuse %s: -1", bad[i].name);
		is_str(err, bad[i].want_err, "openai refuse %s: message", bad[i].name);
		ok(!req.url && !req.body && !req.parts && !req.n_parts, "openai refuse %s: req released",
		   bad[i].name);
		request_release(&req);
	}
}

/* ---- OpenAI edits (multipart) ---- */

static void test_openai_edit(void)
{
	struct ref_image refs[2] = {
		{ png_bytes, png_len, "image/png", "first.png", -1 },
		{ jpeg_bytes, sizeof(jpeg_bytes), "image/jpeg", "second.jpg", -1 },
	};
	struct ref_image mask = { png_bytes, png_len, "image/png", "mask.png", -1 };
	static const struct {
		const char *name, *value, *filename, *mime;
	} want[] = {
		{ "model", "gpt-image-2", NULL, NULL },
		{ "prompt", "a cat", NULL, NULL },
		{ "image[]", NULL, "first.png", "image/png" },
		{ "image[]", NULL, "second.jpg", "image/jpeg" },
		{ "mask", NULL, "mask.png", "image/png" },
		{ "size", "1024x1536", NULL, NULL },
		{ "n", "2", NULL, NULL },
		{ "quality", "medium", NULL, NULL },
		{ "background", "opaque", NULL, NULL },
		{ "output_format", "jpeg", NULL, NULL },
		{ "output_compression", "50", NULL, NULL },
		{ "moderation", "low", NULL, NULL },
	};
	const struct ref_image *file_src[] = { NULL, NULL, &refs[0], &refs[1], &mask };
	struct job job = job_default();
	struct request req;
	char err[256];

	job.size = "1024x1536";
	job.n = 2;
	job.quality = "medium";
	job.background = "opaque";
	job.output_format = "jpeg";
	job.output_compression = 50;
	job.moderation = "low";
	ok(upstream_build_request(&job, "gpt-image-2", "https://api.apiyi.com/", refs, 2, &mask, &req, err,
				  sizeof(err)) == 0, "edit: built");
	is_str(req.url, "https://api.apiyi.com/v1/images/edits", "edit: url");
	ok(req.body == NULL && req.body_len == 0, "edit: no JSON body");
	ok(req.n_parts == ARRAY_SIZE(want), "edit: %zu parts (got %zu)", ARRAY_SIZE(want), req.n_parts);
	for (size_t i = 0; i < ARRAY_SIZE(want) && i < req.n_parts; i++) {
		const struct form_part *p = &req.parts[i];
		is_str(p->name, want[i].name, "edit part %zu: name", i);
		is_str(p->value, want[i].value, "edit part %zu: value", i);
		is_str(p->filename, want[i].filename, "edit part %zu: filename", i);
		is_str(p->mime, want[i].mime, "edit part %zu: mime", i);
		if (i < ARRAY_SIZE(file_src) && file_src[i]) {
			const struct ref_image *src = file_src[i];
			ok(p->len == src->len && p->data && !memcmp(p->data, src->data, src->len) &&
			   p->data != src->data, "edit part %zu: data copied", i);
		} else {
			ok(p->data == NULL && p->len == 0, "edit part %zu: no data", i);
		}
	}
	request_release(&req);
	ok(!req.parts && !req.n_parts && !req.url, "edit: released");

	/* refs only, nothing optional: model, prompt, image[] */
	job = job_default();
	ok(upstream_build_request(&job, "gpt-image-1", "https://api.apiyi.com", refs, 1, NULL, &req, err,
				  sizeof(err)) == 0, "edit minimal: built");
	ok(req.n_parts == 3, "edit minimal: 3 parts");
	if (req.n_parts == 3) {
		is_str(req.parts[0].name, "model", "edit minimal: model first");
		is_str(req.parts[1].name, "prompt", "edit minimal: prompt second");
		is_str(req.parts[2].name, "image[]", "edit minimal: image[] third");
	}
	request_release(&req);

	/* a reference without a name gets one from its bytes */
	struct ref_image anon = { webp_bytes, sizeof(webp_bytes), "image/webp", NULL, -1 };
	ok(upstream_build_request(&job, "gpt-image-2", "https://api.apiyi.com", &anon, 1, NULL, &req, err,
				  sizeof(err)) == 0, "edit unnamed: built");
	if (req.n_parts == 3) {
		is_str(req.parts[2].filename, "image.webp", "edit unnamed: filename from magic");
		is_str(req.parts[2].mime, "image/webp", "edit unnamed: mime");
	}
	request_release(&req);
}

/* ---- Gemini ---- */

static json_t *image_config(const struct request *req, json_t **root)
{
	*root = req->body ? json_loads(req->body, 0, NULL) : NULL;
	return json_object_get(json_object_get(*root, "generationConfig"), "imageConfig");
}

static void test_gemini_request(void)
{
	static const struct {
		const char *model, *size;
		const char *ratio, *image_size;   /* NULL: absent; both NULL: no imageConfig */
	} rows[] = {
		{ "gemini-3-pro-image-preview", "1024x1024", "1:1", "1K" },
		{ "gemini-3-pro-image-preview", "1536x1024", "3:2", "2K" },
		{ "gemini-3-pro-image-preview", "3840x2160", "16:9", "4K" },
		{ "gemini-3-pro-image-preview", "1024x1536", "2:3", "2K" },
		{ "gemini-3-pro-image-preview", "2048x1152", "16:9", "2K" },
		{ "gemini-3-pro-image-preview", "2160x3840", "9:16", "4K" },
		{ "gemini-3-pro-image-preview", "2048x2048", "1:1", "2K" },
		{ "gemini-3-pro-image-preview", "2049x2049", "1:1", "4K" },
		{ "gemini-3-pro-image-preview", "1025x1024", "1:1", "2K" },
		{ "gemini-3-pro-image-preview", "512x512", "1:1", "1K" },
		{ "gemini-3-pro-image-preview", "1024x768", "4:3", "1K" },
		{ "gemini-3-pro-image-preview", "768x1024", "3:4", "1K" },
		{ "gemini-3-pro-image-preview", "1200x1500", "4:5", "2K" },
		{ "gemini-3-pro-image-preview", "1500x1200", "5:4", "2K" },
		{ "gemini-3-pro-image-preview", "2520x1080", "21:9", "4K" },
		{ "gemini-3-pro-image-preview", "4000x1000", "21:9", "4K" },
		{ "gemini-3-pro-image-preview", "1000x4000", "9:16", "4K" },
		{ "gemini-3.1-flash-image-preview", "1920x1080", "16:9", "2K" },
		{ "gemini-3.1-flash-lite-image", "1080x1350", "4:5", "2K" },
		{ "gemini-3-pro-image-preview", "auto", NULL, NULL },
		{ "gemini-3-pro-image-preview", NULL, NULL, NULL },
		{ "gemini-2.5-flash-image", "1536x1024", "3:2", NULL },
		{ "gemini-2.5-flash-image", "3840x2160", "16:9", NULL },
		{ "gemini-2.5-flash-image", "1024x1024", "1:1", NULL },
		{ "gemini-2.5-flash-image-preview", "2048x1152", "16:9", NULL },
		{ "gemini-2.5-flash-image", "auto", NULL, NULL },
	};

	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct job job = job_default();
		struct request req;
		char err[256];
		json_t *root, *ic;
		job.size = (char *)rows[i].size;
		int rc = upstream_build_request(&job, rows[i].model, "https://api.apiyi.com", NULL, 0, NULL,
						&req, err, sizeof(err));
		ok(rc == 0, "gemini %s %s: built", rows[i].model, rows[i].size ? rows[i].size : "(none)");
		ic = image_config(&req, &root);
		if (!rows[i].ratio && !rows[i].image_size) {
			ok(root && !ic, "gemini %s %s: no imageConfig", rows[i].model,
			   rows[i].size ? rows[i].size : "(none)");
		} else {
			is_str(json_string_value(json_object_get(ic, "aspectRatio")), rows[i].ratio,
			       "gemini %s %s: aspectRatio", rows[i].model, rows[i].size);
			is_str(json_string_value(json_object_get(ic, "imageSize")), rows[i].image_size,
			       "gemini %s %s: imageSize", rows[i].model, rows[i].size);
			ok(json_object_get(ic, "imageSize") ? rows[i].image_size != NULL : rows[i].image_size == NULL,
			   "gemini %s %s: imageSize presence", rows[i].model, rows[i].size);
		}
		json_decref(root);
		request_release(&req);
	}

	/* the whole body, with two references; OpenAI-only fields ignored */
	struct ref_image refs[2] = {
		{ png_bytes, png_len, "image/png", "a.png", -1 },
		{ jpeg_bytes, sizeof(jpeg_bytes), "image/jpeg", "b.jpg", -1 },
	};
	struct job job = job_default();
	struct request req;
	char err[256];
	size_t jpeg_b64_len;
	char *jpeg_b64 = test_b64(jpeg_bytes, sizeof(jpeg_bytes), &jpeg_b64_len);
	job.prompt = "put the cat in the hat";
	job.size = "1536x1024";
	job.quality = "high";
	job.background = "transparent";
	job.output_format = "webp";
	job.output_compression = 70;
	job.moderation = "low";
	ok(upstream_build_request(&job, "gemini-3-pro-image-preview", "https://api.apiyi.com/", refs, 2, NULL,
				  &req, err, sizeof(err)) == 0, "gemini body: built");
	ok(req.dialect == DIALECT_GEMINI, "gemini body: dialect");
	is_str(req.url, "https://api.apiyi.com/v1beta/models/gemini-3-pro-image-preview:generateContent",
	       "gemini body: url (trailing slash of base dropped)");
	ok(!req.parts && !req.n_parts, "gemini body: no multipart");
	json_t *want = json_pack("{s:[{s:[{s:s},{s:{s:s,s:s}},{s:{s:s,s:s}}]}],"
				 "s:{s:[s],s:{s:s,s:s}}}",
				 "contents", "parts", "text", "put the cat in the hat",
				 "inlineData", "mimeType", "image/png", "data", PNG_B64,
				 "inlineData", "mimeType", "image/jpeg", "data", jpeg_b64,
				 "generationConfig", "responseModalities", "IMAGE",
				 "imageConfig", "aspectRatio", "3:2", "imageSize", "2K");
	json_t *got = req.body ? json_loads(req.body, 0, NULL) : NULL;
	ok(want && json_equal(got, want), "gemini body: exact document");
	if (!json_equal(got, want))
		printf("#   body: %s\n", req.body ? req.body : "(null)");
	ok(req.body && req.body_len == strlen(req.body), "gemini body: body_len");
	json_decref(got);
	json_decref(want);
	free(jpeg_b64);
	request_release(&req);

	/* the base64 encoder, through the request: every length mod 3, and all byte values */
	static const size_t lens[] = { 0, 1, 2, 3, 4, 5, 6, 256, 1000 };
	unsigned char all[1000];
	for (size_t i = 0; i < sizeof(all); i++)
		all[i] = (unsigned char)(i * 7 + 3);
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		struct ref_image ref = { all, lens[i], "image/png", "x.png", -1 };
		size_t want_len, got_len = 0;
		char *want_b64 = test_b64(all, lens[i], &want_len);
		job = job_default();
		ok(upstream_build_request(&job, "gemini-3-pro-image-preview", "https://api.apiyi.com", &ref, 1,
					  NULL, &req, err, sizeof(err)) == 0, "gemini encode %zu: built", lens[i]);
		got = req.body ? json_loads(req.body, 0, NULL) : NULL;
		const char *data = json_string_value(json_object_get(json_object_get(json_array_get(
			json_object_get(json_array_get(json_object_get(got, "contents"), 0), "parts"), 1),
			"inlineData"), "data"));
		is_str(data, want_b64, "gemini encode %zu: base64 text", lens[i]);
		unsigned char *back = data ? base64_decode(data, strlen(data), &got_len) : NULL;
		ok(back && got_len == lens[i] && !memcmp(back, all, lens[i]), "gemini encode %zu: decodes back",
		   lens[i]);
		free(back);
		free(want_b64);
		json_decref(got);
		request_release(&req);
	}

	/* refusals */
	static const struct {
		const char *name, *model, *size;
		int n;
		bool mask;
		const char *want_err;
	} bad[] = {
		{ "n=2", "gemini-3-pro-image-preview", NULL, 2, false,
		  "n > 1 is not supported for Gemini image models; submit one job per image" },
		{ "n=4 flash", "gemini-3.1-flash-image-preview", "1024x1024", 4, false,
		  "n > 1 is not supported for Gemini image models; submit one job per image" },
		{ "mask", "gemini-3-pro-image-preview", NULL, 1, true,
		  "masks are only supported by OpenAI-style models" },
		{ "size not WxH", "gemini-3-pro-image-preview", "big", 1, false,
		  "size must be \"WxH\" or \"auto\"" },
		{ "size 0x10", "gemini-3-pro-image-preview", "0x10", 1, false,
		  "size must be \"WxH\" or \"auto\"" },
		{ "model with a slash", "gemini-3-pro-image/../x", NULL, 1, false,
		  "the model name has characters that cannot go in a URL path" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct ref_image mask = { png_bytes, png_len, "image/png", "mask.png", -1 };
		job = job_default();
		job.n = bad[i].n;
		job.size = (char *)bad[i].size;
		memset(&req, 0x5a, sizeof(req));
		int rc = upstream_build_request(&job, bad[i].model, "https://api.apiyi.com", refs, 1,
						bad[i].mask ? &mask : NULL, &req, err, sizeof(err));
		ok(rc == -1, "gemini refuse %s: -1", bad[i].name);
		is_str(err, bad[i].want_err, "gemini refuse %s: message", bad[i].name);
		ok(!req.url && !req.body && !req.parts && !req.n_parts, "gemini refuse %s: req released",
		   bad[i].name);
	}

	/* a small err buffer is truncated, not overflowed */
	char small[8];
	job = job_default();
	job.n = 2;
	ok(upstream_build_request(&job, "gemini-3-pro-image-preview", "https://api.apiyi.com", NULL, 0, NULL,
				  &req, small, sizeof(small)) == -1 && !strcmp(small, "n > 1 i"),
	   "gemini refuse: err truncated to its size");
}

/* ---- responses ---- */

struct resp_row {
	const char *name;
	enum dialect d;
	const char *body;
	bool not_json;
	size_t images;
	const char *ext0;             /* ext of images[0] */
	size_t urls;
	const char *url0, *url1;
	int bad;
	bool usage;
	const char *code, *type, *status, *message;
	const char *retry;            /* retry_delay_ms as text; NULL = -1 */
	bool candidates;
	const char *finish, *finish_msg, *block;
	const char *tokens;           /* candidates_tokens as text; NULL = -1 */
	const char *text;
};

#define MSG_65 "{\n  \"error\": {\n    \"code\": 503,\n    \"message\": \"The model is overloaded. Please try again later.\",\n    \"status\": \"UNAVAILABLE\"\n  }\n}\n"
#define FINISH_MSG_69A "Unable to show the generated image. … You will not be charged for this request."

static const struct resp_row resp_rows[] = {
	/* §6.1 */
	{ .name = "6.1 b64 success with usage", .d = DIALECT_OPENAI,
	  .body = "{\"created\":1776832476,\n"
		  " \"data\":[{\"b64_json\":\"" PNG_B64 "\"}],\n"
		  " \"usage\":{\"input_tokens\":17,\"input_tokens_details\":{\"image_tokens\":0,\"text_tokens\":17},\n"
		  "          \"output_tokens\":196,\"output_tokens_details\":{\"image_tokens\":196,\"text_tokens\":0},\"total_tokens\":213}}",
	  .images = 1, .ext0 = "png", .usage = true },
	{ .name = "6.1 legacy -all data URI", .d = DIALECT_OPENAI,
	  .body = "{\"created\":1776832476,\"data\":[{\"b64_json\":\"data:image/png;base64," PNG_B64 "\"}],"
		  "\"usage\":{\"input_tokens\":17,\"output_tokens\":196,\"total_tokens\":213}}",
	  .images = 1, .ext0 = "png", .usage = true },
	/* §6.2 */
	{ .name = "6.2 url success", .d = DIALECT_OPENAI,
	  .body = "{\"created\":1776832476,\"data\":[{\"url\":\"http://127.0.0.1:8080/results/abc/sample.jpeg?signature=x\"}]}",
	  .urls = 1, .url0 = "http://127.0.0.1:8080/results/abc/sample.jpeg?signature=x" },
	{ .name = "6.2 seedream variant", .d = DIALECT_OPENAI,
	  .body = "{\"model\":\"seedream-4-5-251128\",\"created\":1776832476,\"data\":[{\"url\":\"https://tos.example.com/a.jpeg\",\"size\":\"2048x2048\"},"
		  "{\"url\":\"https://tos.example.com/b.jpeg\",\"size\":\"2048x2048\"}],"
		  "\"usage\":{\"generated_images\":1,\"output_tokens\":16384,\"total_tokens\":16384}}",
	  .urls = 2, .url0 = "https://tos.example.com/a.jpeg", .url1 = "https://tos.example.com/b.jpeg", .usage = true },
	/* §6.3 */
	{ .name = "6.3 gemini success", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"" PNG_B64 "\"}}]},\n"
		  "  \"finishReason\":\"STOP\",\"index\":0}],\n"
		  " \"usageMetadata\":{\"promptTokenCount\":276,\"candidatesTokenCount\":1120,\"totalTokenCount\":1396},\n"
		  " \"modelVersion\":\"gemini-3-pro-image-preview\"}",
	  .images = 1, .ext0 = "png", .usage = true, .candidates = true, .finish = "STOP", .tokens = "1120" },
	{ .name = "6.3 text part before the image", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Here is your cat.\"},"
		  "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"" PNG_B64 "\"}}]},"
		  "\"finishReason\":\"STOP\",\"index\":0}],"
		  "\"usageMetadata\":{\"promptTokenCount\":276,\"candidatesTokenCount\":1130,\"totalTokenCount\":1406}}",
	  .images = 1, .ext0 = "png", .usage = true, .candidates = true, .finish = "STOP", .tokens = "1130",
	  .text = "Here is your cat." },
	{ .name = "6.3 snake_case inline_data, mimeType lies", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"inline_data\":{\"mime_type\":\"image/jpeg\",\"data\":\"" PNG_B64 "\"}}]},"
		  "\"finishReason\":\"STOP\"}]}",
	  .images = 1, .ext0 = "png", .candidates = true, .finish = "STOP" },
	{ .name = "6.3 NB-OSS markdown image in text", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"![image](https://oss.apiyi.com/nb/2026/abc123.png)\"}]},"
		  "\"finishReason\":\"STOP\",\"index\":0}],"
		  "\"usageMetadata\":{\"promptTokenCount\":276,\"candidatesTokenCount\":1120,\"totalTokenCount\":1396}}",
	  .urls = 1, .url0 = "https://oss.apiyi.com/nb/2026/abc123.png", .usage = true, .candidates = true,
	  .finish = "STOP", .tokens = "1120", .text = "![image](https://oss.apiyi.com/nb/2026/abc123.png)" },
	{ .name = "6.3 NB-OSS bare URL alone in text", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" https://oss.apiyi.com/nb/abc?sig=Zx%2F1&exp=9 \\n\"}]},\"finishReason\":\"STOP\"}]}",
	  .urls = 1, .url0 = "https://oss.apiyi.com/nb/abc?sig=Zx%2F1&exp=9", .candidates = true,
	  .finish = "STOP", .text = " https://oss.apiyi.com/nb/abc?sig=Zx%2F1&exp=9 \n" },
	{ .name = "6.3 NB-OSS URL in a sentence, twice", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"图片链接：https://oss.apiyi.com/nb/x.JPEG。\"},"
		  "{\"text\":\"Download: https://oss.apiyi.com/nb/x.JPEG.\"}]},\"finishReason\":\"STOP\"}]}",
	  .urls = 1, .url0 = "https://oss.apiyi.com/nb/x.JPEG", .candidates = true, .finish = "STOP",
	  .text = "图片链接：https://oss.apiyi.com/nb/x.JPEG。\nDownload: https://oss.apiyi.com/nb/x.JPEG." },
	{ .name = "refusal text with a policy link is no image", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"I can't help. See https://policies.google.com/terms for details.\"}]},\"finishReason\":\"STOP\"}]}",
	  .candidates = true, .finish = "STOP", .text = "I can't help. See https://policies.google.com/terms for details." },
	{ .name = "every candidate, every part", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"one\"},{\"inlineData\":{\"data\":\"" PNG_B64 "\"}}]},\"finishReason\":\"STOP\"},"
		  "{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"/9j/4AAQSkZJRgA=\"}},{\"text\":\"two\"}]},\"finishReason\":\"OTHER\"}]}",
	  .images = 2, .ext0 = "png", .candidates = true, .finish = "STOP", .text = "one\ntwo" },
	{ .name = "thought parts skipped", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"thinking\",\"thought\":true},"
		  "{\"inlineData\":{\"data\":\"/9j/4AAQSkZJRgA=\"},\"thought\":true},"
		  "{\"inlineData\":{\"data\":\"UklGRgQAAABXRUJQVlA4IA==\"}}]},\"finishReason\":\"STOP\"}]}",
	  .images = 1, .ext0 = "webp", .candidates = true, .finish = "STOP" },
	/* §6.4 */
	{ .name = "6.4 429 saturated", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"当前分组上游负载已饱和，请稍后再试 (request id: 20260715212753274771513fAg1k3QO)\",\n"
		  "          \"type\":\"new_api_error\",\"param\":\"\",\"code\":null}}",
	  .type = "new_api_error", .message = "当前分组上游负载已饱和，请稍后再试 (request id: 20260715212753274771513fAg1k3QO)" },
	{ .name = "6.4 429 quota trap", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"当前分组上游负载已饱和，请稍后再试\",\"type\":\"insufficient_quota\",\"code\":\"insufficient_user_quota\"}}",
	  .code = "insufficient_user_quota", .type = "insufficient_quota", .message = "当前分组上游负载已饱和，请稍后再试" },
	{ .name = "6.4 google 429 RetryInfo", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"code\":429,\"message\":\"You exceeded your current quota, please check your plan and billing details.\",\n"
		  "  \"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"37s\"}]}}",
	  .code = "429", .status = "RESOURCE_EXHAUSTED",
	  .message = "You exceeded your current quota, please check your plan and billing details.", .retry = "37000" },
	{ .name = "google 429 QuotaFailure then RetryInfo 1.5s", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":["
		  "{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[]},"
		  "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"1.5s\"}]}}",
	  .code = "429", .status = "RESOURCE_EXHAUSTED", .message = "quota", .retry = "1500" },
	{ .name = "RetryInfo with a bad delay is ignored", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":["
		  "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"soon\"}]}}",
	  .code = "429", .status = "RESOURCE_EXHAUSTED", .message = "quota" },
	/* §6.5 */
	{ .name = "6.5 503 model_not_found", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"message\":\"分组 default 下模型 gemini-3-pro-image-preview 无可用渠道（distributor） (request id: 2026…)\",\n"
		  "          \"type\":\"new_api_error\",\"param\":\"\",\"code\":\"model_not_found\"}}",
	  .code = "model_not_found", .type = "new_api_error",
	  .message = "分组 default 下模型 gemini-3-pro-image-preview 无可用渠道（distributor） (request id: 2026…)" },
	{ .name = "6.5 503 embedded google error", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"message\":\"{\\n  \\\"error\\\": {\\n    \\\"code\\\": 503,\\n    \\\"message\\\": \\\"The model is overloaded. Please try again later.\\\",\\n    \\\"status\\\": \\\"UNAVAILABLE\\\"\\n  }\\n}\\n\",\"code\":503,\"status\":\"\"}}",
	  .code = "503", .status = "UNAVAILABLE", .message = MSG_65 },
	{ .name = "embedded error fills an absent code, RetryInfo inside", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"message\":\"upstream said: {\\\"error\\\":{\\\"code\\\":429,\\\"status\\\":\\\"RESOURCE_EXHAUSTED\\\","
		  "\\\"details\\\":[{\\\"@type\\\":\\\"type.googleapis.com/google.rpc.RetryInfo\\\",\\\"retryDelay\\\":\\\"20s\\\"}]}} (request id: 1)\","
		  "\"type\":\"upstream_error\"}}",
	  .code = "429", .type = "upstream_error", .status = "RESOURCE_EXHAUSTED", .retry = "20000",
	  .message = "upstream said: {\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"20s\"}]}} (request id: 1)" },
	{ .name = "google 503 plain", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}",
	  .code = "503", .status = "UNAVAILABLE", .message = "The model is overloaded. Please try again later." },
	/* §6.6 */
	{ .name = "6.6 400 unknown_parameter", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"Unknown parameter: 'response_format'. (request id: 2026…)\",\"type\":\"invalid_request_error\",\"param\":\"response_format\",\"code\":\"unknown_parameter\"}}",
	  .code = "unknown_parameter", .type = "invalid_request_error",
	  .message = "Unknown parameter: 'response_format'. (request id: 2026…)" },
	{ .name = "6.6 400 invalid_image_file", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"Invalid image file or mode for image 1, please check your image file.\",\"type\":\"invalid_request_error\",\"param\":\"image\",\"code\":\"invalid_image_file\"}}",
	  .code = "invalid_image_file", .type = "invalid_request_error",
	  .message = "Invalid image file or mode for image 1, please check your image file." },
	{ .name = "6.6 400 invalid_value", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"Invalid value: 'hd'. Supported values are: 'low', 'medium', 'high', and 'auto'.\",\"type\":\"invalid_request_error\",\"param\":\"quality\",\"code\":\"invalid_value\"}}",
	  .code = "invalid_value", .type = "invalid_request_error",
	  .message = "Invalid value: 'hd'. Supported values are: 'low', 'medium', 'high', and 'auto'." },
	{ .name = "6.6 gemini 400 INVALID_ARGUMENT", .d = DIALECT_GEMINI,
	  .body = "{\"error\":{\"code\":400,\"message\":\"…\",\"status\":\"INVALID_ARGUMENT\"}}",
	  .code = "400", .status = "INVALID_ARGUMENT", .message = "…" },
	/* §6.7 */
	{ .name = "6.7 401 new_api (empty code)", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"无效的令牌 (request id: 20240903132633756782166AeCxdlyd)\",\"type\":\"new_api_error\",\"param\":\"\",\"code\":\"\"}}",
	  .type = "new_api_error", .message = "无效的令牌 (request id: 20240903132633756782166AeCxdlyd)" },
	{ .name = "6.7 401 openai", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"Incorrect API key provided: sk-…\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}",
	  .code = "invalid_api_key", .type = "invalid_request_error", .message = "Incorrect API key provided: sk-…" },
	{ .name = "6.7 403 quota", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"用户额度不足, 剩余额度: ＄0.000000\",\"type\":\"new_api_error\",\"code\":\"insufficient_user_quota\"}}",
	  .code = "insufficient_user_quota", .type = "new_api_error", .message = "用户额度不足, 剩余额度: ＄0.000000" },
	/* §6.8 */
	{ .name = "6.8 moderation_blocked", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"message\":\"Your request was rejected by the safety system. If you believe this is an error, contact us at help.openai.com and include the request ID b68e1d8f-…. safety_violations=[sexual]. (request id: 2026…)\",\n"
		  "          \"type\":\"image_generation_user_error\",\"param\":null,\"code\":\"moderation_blocked\",\n"
		  "          \"moderation_details\":{\"moderation_stage\":\"output\",\"categories\":[\"sexual\"]}}}",
	  .code = "moderation_blocked", .type = "image_generation_user_error",
	  .message = "Your request was rejected by the safety system. If you believe this is an error, contact us at help.openai.com and include the request ID b68e1d8f-…. safety_violations=[sexual]. (request id: 2026…)" },
	{ .name = "6.8 content_policy_violation", .d = DIALECT_OPENAI,
	  .body = "{\"error\":{\"code\":\"content_policy_violation\",\"message\":\"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.\",\"param\":null,\"type\":\"invalid_request_error\"}}",
	  .code = "content_policy_violation", .type = "invalid_request_error",
	  .message = "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system." },
	/* §6.9 */
	{ .name = "6.9a output blocked IMAGE_SAFETY", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":null},\"finishReason\":\"IMAGE_SAFETY\",\n"
		  "  \"finishMessage\":\"" FINISH_MSG_69A "\",\"index\":0}],\n"
		  " \"usageMetadata\":{\"promptTokenCount\":531,\"candidatesTokenCount\":0,\"totalTokenCount\":824,\"thoughtsTokenCount\":293},\n"
		  " \"modelVersion\":\"gemini-3-pro-image-preview\"}",
	  .usage = true, .candidates = true, .finish = "IMAGE_SAFETY", .finish_msg = FINISH_MSG_69A, .tokens = "0" },
	{ .name = "6.9b silent review rejection", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":12,\"candidatesTokenCount\":0}}",
	  .usage = true, .candidates = true, .finish = "STOP", .tokens = "0" },
	{ .name = "6.9c text-only refusal", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"I'm unable to help with this task.\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":40,\"candidatesTokenCount\":173}}",
	  .usage = true, .candidates = true, .finish = "STOP", .tokens = "173", .text = "I'm unable to help with this task." },
	{ .name = "6.9d prompt blocked", .d = DIALECT_GEMINI,
	  .body = "{\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":12559,\"totalTokenCount\":12559}}",
	  .usage = true, .block = "PROHIBITED_CONTENT" },
	{ .name = "6.9e candidates []", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":12,\"totalTokenCount\":12}}",
	  .usage = true },
	{ .name = "6.9e candidates null", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":null,\"promptFeedback\":{\"blockReason\":\"OTHER\"}}",
	  .block = "OTHER" },
	{ .name = "6.9e no content", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"finishReason\":\"NO_IMAGE\",\"index\":0}],\"usageMetadata\":{\"candidatesTokenCount\":0}}",
	  .usage = true, .candidates = true, .finish = "NO_IMAGE", .tokens = "0" },
	/* broken bodies */
	{ .name = "malformed JSON", .d = DIALECT_OPENAI, .body = "{\"data\":[{\"b64_json\":\"iVBOR", .not_json = true },
	{ .name = "502 HTML", .d = DIALECT_GEMINI, .body = "<html><body>502 Bad Gateway</body></html>", .not_json = true },
	{ .name = "empty body", .d = DIALECT_OPENAI, .body = "", .not_json = true },
	{ .name = "JSON array", .d = DIALECT_GEMINI, .body = "[{\"candidates\":[]}]", .not_json = true },
	{ .name = "JSON string", .d = DIALECT_OPENAI, .body = "\"error\"", .not_json = true },
	{ .name = "two documents", .d = DIALECT_OPENAI, .body = "{} {}", .not_json = true },
	{ .name = "empty object", .d = DIALECT_OPENAI, .body = "{}" },
	{ .name = "bad base64", .d = DIALECT_OPENAI,
	  .body = "{\"data\":[{\"b64_json\":\"iVBORw0KGgo AAAA!\"}]}", .bad = 1 },
	{ .name = "base64 of non-image bytes", .d = DIALECT_OPENAI,
	  .body = "{\"data\":[{\"b64_json\":\"aGVsbG8gd29ybGQ=\"}]}", .bad = 1 },
	{ .name = "b64_json not a string", .d = DIALECT_OPENAI, .body = "{\"data\":[{\"b64_json\":42}]}", .bad = 1 },
	{ .name = "url not http", .d = DIALECT_OPENAI,
	  .body = "{\"data\":[{\"url\":\"ftp://x/a.png\"},{\"url\":\"http://ok.example/a.png\"},{\"url\":\"https://sp ace/a.png\"}]}",
	  .urls = 1, .url0 = "http://ok.example/a.png", .bad = 2 },
	{ .name = "url as data URI", .d = DIALECT_OPENAI,
	  .body = "{\"data\":[{\"url\":\"data:image/png;base64," PNG_B64 "\"}]}", .images = 1, .ext0 = "png" },
	{ .name = "mixed good and bad", .d = DIALECT_OPENAI,
	  .body = "{\"data\":[{\"b64_json\":\"" PNG_B64 "\"},{\"b64_json\":\"aGVsbG8=\"},{\"b64_json\":\"/9j/4AAQSkZJRgA=\"}]}",
	  .images = 2, .ext0 = "png", .bad = 1 },
	{ .name = "gemini bad inline data", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"-_-_\"}}]},\"finishReason\":\"STOP\"}]}",
	  .candidates = true, .finish = "STOP", .bad = 1 },
	{ .name = "gemini inline data not an image", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"R0lGODlhAQABAAAAACw=\"}}]},\"finishReason\":\"STOP\"}]}",
	  .candidates = true, .finish = "STOP", .bad = 1 },
	{ .name = "wrong types everywhere", .d = DIALECT_GEMINI,
	  .body = "{\"candidates\":[7,{\"content\":[]},{\"content\":{\"parts\":{}}}],\"promptFeedback\":[],"
		  "\"usageMetadata\":{\"candidatesTokenCount\":\"12\"},\"error\":{\"code\":true,\"message\":5,\"status\":[]}}",
	  .usage = true, .candidates = true },
	{ .name = "error as a plain string", .d = DIALECT_OPENAI, .body = "{\"error\":\"bad things\"}",
	  .message = "bad things" },
	{ .name = "error null with data", .d = DIALECT_OPENAI,
	  .body = "{\"error\":null,\"data\":[{\"b64_json\":\"" PNG_B64 "\"}]}", .images = 1, .ext0 = "png" },
	{ .name = "openai body parsed as openai ignores gemini fields", .d = DIALECT_OPENAI,
	  .body = "{\"candidates\":[{\"finishReason\":\"STOP\"}]}" },
};

static bool num_eq(long long got, const char *want)
{
	if (!want)
		return got == -1;
	char buf[32];
	(void)xsnprintf(buf, sizeof(buf), "%lld", got);
	return !strcmp(buf, want);
}

static void test_responses(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(resp_rows); i++) {
		const struct resp_row *r = &resp_rows[i];
		struct response out;
		const char *n = r->name;

		upstream_parse_response(r->d, r->body, strlen(r->body), &out);
		ok(out.is_json == !r->not_json, "%s: is_json", n);
		ok(out.n_images == r->images, "%s: %zu images (got %zu)", n, r->images, out.n_images);
		if (r->images && out.n_images)
			is_str(out.images[0].ext, r->ext0, "%s: ext", n);
		ok(out.n_urls == r->urls, "%s: %zu urls (got %zu)", n, r->urls, out.n_urls);
		if (r->urls && out.n_urls)
			is_str(out.urls[0], r->url0, "%s: url 0", n);
		if (r->urls > 1 && out.n_urls > 1)
			is_str(out.urls[1], r->url1, "%s: url 1", n);
		ok(out.n_bad_images == r->bad, "%s: %d bad images (got %d)", n, r->bad, out.n_bad_images);
		ok((out.usage != NULL) == r->usage, "%s: usage %s", n, r->usage ? "kept" : "absent");
		is_str(out.error_code, r->code, "%s: error_code", n);
		is_str(out.error_type, r->type, "%s: error_type", n);
		is_str(out.error_status, r->status, "%s: error_status", n);
		is_str(out.error_message, r->message, "%s: error_message", n);
		ok(num_eq(out.retry_delay_ms, r->retry), "%s: retry_delay_ms %s (got %lld)", n,
		   r->retry ? r->retry : "-1", (long long)out.retry_delay_ms);
		ok(out.has_candidates == r->candidates, "%s: has_candidates", n);
		is_str(out.finish_reason, r->finish, "%s: finish_reason", n);
		is_str(out.finish_message, r->finish_msg, "%s: finish_message", n);
		is_str(out.block_reason, r->block, "%s: block_reason", n);
		ok(num_eq(out.candidates_tokens, r->tokens), "%s: candidates_tokens %s (got %ld)", n,
		   r->tokens ? r->tokens : "-1", out.candidates_tokens);
		is_str(out.text, r->text, "%s: text", n);
		response_release(&out);
		ok(!out.images && !out.urls && !out.usage && !out.text && !out.error_message,
		   "%s: released", n);
	}

	/* the decoded bytes and the usage object themselves */
	struct response out;
	const struct resp_row *r = &resp_rows[0];
	upstream_parse_response(DIALECT_OPENAI, r->body, strlen(r->body), &out);
	ok(out.n_images == 1 && out.images[0].len == png_len && !memcmp(out.images[0].data, png_bytes, png_len),
	   "6.1: image bytes are the decoded PNG");
	ok(json_integer_value(json_object_get(out.usage, "total_tokens")) == 213, "6.1: usage.total_tokens 213");
	response_release(&out);
	response_release(&out);
	ok(out.candidates_tokens == -1 && out.retry_delay_ms == -1, "release twice is safe");

	/* every refusal finishReason of §6.9e */
	static const char *const reasons[] = { "SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
					       "IMAGE_OTHER", "NO_IMAGE", "OTHER", "IMAGE_RECITATION" };
	for (size_t i = 0; i < ARRAY_SIZE(reasons); i++) {
		char *body = xasprintf("{\"candidates\":[{\"content\":{\"parts\":[]},\"finishReason\":\"%s\",\"index\":0}],"
				       "\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":0}}", reasons[i]);
		upstream_parse_response(DIALECT_GEMINI, body, strlen(body), &out);
		is_str(out.finish_reason, reasons[i], "6.9e finishReason %s", reasons[i]);
		ok(out.has_candidates && out.n_images == 0 && out.candidates_tokens == 0,
		   "6.9e finishReason %s: no image, 0 tokens", reasons[i]);
		response_release(&out);
		free(body);
	}

	/* a zeroed struct can be released */
	memset(&out, 0, sizeof(out));
	response_release(&out);
	ok(1, "response_release on a zeroed struct");

	/* NULL body */
	upstream_parse_response(DIALECT_OPENAI, NULL, 0, &out);
	ok(!out.is_json && out.candidates_tokens == -1 && out.retry_delay_ms == -1, "NULL body: empty");
	response_release(&out);

	/* the body is not assumed terminated: only len bytes are read */
	static const char padded[] = "{\"data\":[]}garbage";
	upstream_parse_response(DIALECT_OPENAI, padded, 11, &out);
	ok(out.is_json, "len bounds the body");
	response_release(&out);
}

static bool str_eq_nullable(const char *a, const char *b)
{
	return a && b ? !strcmp(a, b) : a == b;
}

static void buf_str(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

static void test_text_cap(void)
{
	struct buf b;
	struct response out;

	/* 3000 ASCII bytes: cut at 2000 */
	buf_init(&b, 1 << 20);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 3000; i++)
		buf_str(&b, "a");
	buf_str(&b, "\"},{\"text\":\"more\"}]}}]}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.text && strlen(out.text) == 2000, "text capped at 2000 bytes (got %zu)", out.text ? strlen(out.text) : 0);
	response_release(&out);
	buf_release(&b);

	/* a 2-byte character across the cap is dropped whole */
	buf_init(&b, 1 << 20);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 1999; i++)
		buf_str(&b, "a");
	buf_str(&b, "\xc3\xa9tail\"}]}}]}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.text && strlen(out.text) == 1999, "text cut at a UTF-8 boundary (got %zu)", out.text ? strlen(out.text) : 0);
	response_release(&out);
	buf_release(&b);

	/* many text parts: still capped, and joined by newlines */
	buf_init(&b, 1 << 20);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[");
	for (int i = 0; i < 1000; i++)
		buf_str(&b, i ? ",{\"text\":\"abc\"}" : "{\"text\":\"abc\"}");
	buf_str(&b, "]}}]}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.text && strlen(out.text) <= 2000 && !strncmp(out.text, "abc\nabc\n", 8),
	   "many text parts joined and capped");
	response_release(&out);
	buf_release(&b);
}

/* A 35 MB body (a 4K Gemini answer) parses correctly, and so do hostile text parts; how fast
 * they parse is `make bench`'s figure (tests/bench/bench_parse.c), never a test's. */
static void test_big_body(void)
{
	size_t raw_len = 26u << 20;
	unsigned char *raw;
	struct response out;
	char *body = test_gemini_image_body(raw_len, &raw);

	upstream_parse_response(DIALECT_GEMINI, body, strlen(body), &out);
	ok(out.n_images == 1 && out.images[0].len == raw_len && !memcmp(out.images[0].data, raw, raw_len),
	   "35 MB body: image decoded (%zu bytes of body)", strlen(body));
	response_release(&out);
	free(body);
	free(raw);

	/* 4 MB of "http:/h" and "![](" fragments in one text part */
	struct buf b;
	buf_init(&b, 8u << 20);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 300000; i++)
		buf_str(&b, "http:/h![](hh");
	buf_str(&b, "\"}]}}]}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.n_urls == 0 && out.text && strlen(out.text) <= 2000, "hostile text: no urls, text capped");
	response_release(&out);

	/* 4 MB of links that are not images */
	buf_reset(&b);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 200000; i++)
		buf_str(&b, "https://a.b/c ");
	buf_str(&b, "\"}]}}]}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.n_urls == 0, "many non-image links: none taken");
	response_release(&out);

	/* many image links: at most 16 taken */
	buf_reset(&b);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 100; i++) {
		char link[64];
		int n = xsnprintf(link, sizeof(link), "https://x.example/%d.png ", i);
		buf_append(&b, link, (size_t)n);
	}
	buf_str(&b, "\"}]}}]}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.n_urls == 16, "image links in text capped at 16 (got %zu)", out.n_urls);
	response_release(&out);
	buf_release(&b);
}

/* Bodies of 64 KiB and more take the skeleton path: every kind of long string must come out
 * as jansson alone would give it. */
static void test_big_body_strings(void)
{
	size_t raw_len = 150000, b64_len;
	unsigned char *raw = xmalloc(raw_len);
	struct buf b;
	struct response out;

	memcpy(raw, png_bytes, 8);
	for (size_t i = 8; i < raw_len; i++)
		raw[i] = (unsigned char)(i * 131 + (i >> 7));
	char *b64 = test_b64(raw, raw_len, &b64_len);

	/* the '/' of the base64 escaped as "\/" (PHP's json_encode does it), a long key, a long ASCII
	 * text, a long non-ASCII text and a long text with "\n" escapes */
	buf_init(&b, 1u << 22);
	buf_str(&b, "{\"");
	for (int i = 0; i < 2000; i++)
		buf_str(&b, "k");
	buf_str(&b, "\":1,\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"data:image\\/png;base64,");
	for (size_t i = 0; i < b64_len; i++)
		buf_str(&b, b64[i] == '/' ? "\\/" : (char[]){ b64[i], 0 });
	buf_str(&b, "\"}},{\"text\":\"");
	for (int i = 0; i < 1500; i++)
		buf_str(&b, "ab");
	buf_str(&b, "\"}]},\"finishReason\":\"STOP\"},{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 1000; i++)
		buf_str(&b, "\xc3\xa9");
	buf_str(&b, "\"},{\"text\":\"");
	for (int i = 0; i < 1000; i++)
		buf_str(&b, "x\\n");
	buf_str(&b, "\"}]}}],\"usageMetadata\":{\"candidatesTokenCount\":1120}}");
	ok(b.len >= 64 * 1024, "big strings: body of %zu bytes takes the skeleton path", b.len);
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.is_json, "big strings: is_json");
	ok(out.n_images == 1 && out.images[0].len == raw_len && !memcmp(out.images[0].data, raw, raw_len),
	   "big strings: escaped-slash base64 decoded");
	ok(out.n_bad_images == 0, "big strings: no bad image");
	ok(out.text && strlen(out.text) == 2000 && !strncmp(out.text, "ababab", 6),
	   "big strings: long ASCII text restored and capped");
	ok(out.candidates_tokens == 1120 && str_eq_nullable(out.finish_reason, "STOP"), "big strings: other fields");
	response_release(&out);

	/* the same texts alone: non-ASCII and escaped texts come back exactly */
	buf_reset(&b);
	buf_str(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < 1000; i++)
		buf_str(&b, "\xc3\xa9");
	buf_str(&b, "\"}]}}],\"pad\":\"");
	for (int i = 0; i < 70000; i++)
		buf_str(&b, "p");
	buf_str(&b, "\"}");
	upstream_parse_response(DIALECT_GEMINI, b.data, b.len, &out);
	ok(out.text && strlen(out.text) == 2000 && !memcmp(out.text, "\xc3\xa9\xc3\xa9", 4),
	   "big strings: long UTF-8 text parsed by jansson");
	response_release(&out);

	buf_reset(&b);
	buf_str(&b, "{\"error\":{\"message\":\"");
	for (int i = 0; i < 40000; i++)
		buf_str(&b, "m\\n");
	buf_str(&b, "\",\"code\":\"\\u00010\",\"type\":\"");
	for (int i = 0; i < 30000; i++)
		buf_str(&b, "t");
	buf_str(&b, "\"}}");
	upstream_parse_response(DIALECT_OPENAI, b.data, b.len, &out);
	ok(out.error_message && strlen(out.error_message) == 80000 && !strncmp(out.error_message, "m\nm\n", 4),
	   "big strings: escaped message unescaped by jansson");
	ok(out.error_type && strlen(out.error_type) == 30000 && out.error_type[29999] == 't',
	   "big strings: long plain type restored");
	ok(out.error_code && !strcmp(out.error_code, "\x01" "0"), "big strings: a look-alike placeholder is left alone");
	response_release(&out);

	/* what jansson rejects stays rejected */
	buf_reset(&b);
	buf_str(&b, "{\"data\":[{\"b64_json\":\"");
	buf_append(&b, b64, b64_len);
	buf_str(&b, "\t\"}]}");
	upstream_parse_response(DIALECT_OPENAI, b.data, b.len, &out);
	ok(!out.is_json, "big strings: a raw tab in a string is not JSON");
	response_release(&out);

	buf_reset(&b);
	buf_str(&b, "{\"data\":[{\"b64_json\":\"");
	buf_append(&b, b64, b64_len);
	upstream_parse_response(DIALECT_OPENAI, b.data, b.len, &out);
	ok(!out.is_json, "big strings: an unterminated string is not JSON");
	response_release(&out);

	buf_reset(&b);
	buf_str(&b, "{\"data\":[{\"b64_json\":\"");
	buf_append(&b, b64, b64_len);
	buf_str(&b, "\"}]} trailing");
	upstream_parse_response(DIALECT_OPENAI, b.data, b.len, &out);
	ok(!out.is_json, "big strings: trailing garbage is not JSON");
	response_release(&out);

	buf_reset(&b);
	buf_str(&b, "{\"data\":[{\"b64_json\":\"");
	buf_append(&b, b64, b64_len);
	buf_str(&b, "\"},{\"b64_json\":\"");
	buf_append(&b, b64, b64_len);
	buf_str(&b, "\"}],\"usage\":{\"total_tokens\":5}}");
	upstream_parse_response(DIALECT_OPENAI, b.data, b.len, &out);
	ok(out.is_json && out.n_images == 2 && out.images[1].len == raw_len &&
	   !memcmp(out.images[1].data, raw, raw_len) && out.usage, "big strings: two b64_json images");
	response_release(&out);

	buf_release(&b);
	free(b64);
	free(raw);
}

/* ---- base64 ---- */

static void test_base64(void)
{
	static const struct {
		const char *in;
		size_t len;        /* 0: strlen(in) */
		const char *want;  /* NULL: invalid */
		size_t want_len;   /* 0: strlen(want) */
	} rows[] = {
		/* RFC 4648 §10 */
		{ "", 0, "", 0 },
		{ "Zg==", 0, "f", 0 },
		{ "Zm8=", 0, "fo", 0 },
		{ "Zm9v", 0, "foo", 0 },
		{ "Zm9vYg==", 0, "foob", 0 },
		{ "Zm9vYmE=", 0, "fooba", 0 },
		{ "Zm9vYmFy", 0, "foobar", 0 },
		/* without padding */
		{ "Zg", 0, "f", 0 },
		{ "Zm8", 0, "fo", 0 },
		{ "Zm9vYg", 0, "foob", 0 },
		{ "Zm9vYmE", 0, "fooba", 0 },
		/* CR/LF skipped anywhere */
		{ "Zm9v\r\nYmFy", 0, "foobar", 0 },
		{ "Z\nm\n9\nv\nY\nm\nF\ny\n", 0, "foobar", 0 },
		{ "Zm9vYg==\r\n", 0, "foob", 0 },
		{ "Zm9vYg=\r\n=", 0, "foob", 0 },
		{ "\r\n", 0, "", 0 },
		/* data: prefixes */
		{ "data:image/png;base64,Zm9vYmFy", 0, "foobar", 0 },
		{ "data:;base64,Zm9v", 0, "foo", 0 },
		{ "DATA:image/png;BASE64,Zm9v", 0, "foo", 0 },
		{ "data:application/octet-stream;base64,", 0, "", 0 },
		/* binary output */
		{ "AP8A/w==", 0, "\x00\xff\x00\xff", 4 },
		{ "+/+/", 0, "\xfb\xff\xbf", 0 },
		/* not taken */
		{ "data:image/png,Zm9v", 0, NULL, 0 },
		{ "data:image/png;base64;Zm9v", 0, NULL, 0 },
		{ "data:base64,Zm9v", 0, NULL, 0 },
		{ "Zm9v YmFy", 0, NULL, 0 },
		{ " Zm9v", 0, NULL, 0 },
		{ "Zm9v\tYmFy", 0, NULL, 0 },
		{ "Zm9-", 0, NULL, 0 },
		{ "Zm9_", 0, NULL, 0 },
		{ "Z", 0, NULL, 0 },
		{ "Zm9vY", 0, NULL, 0 },
		{ "Zm9vY=", 0, NULL, 0 },
		{ "Zm=v", 0, NULL, 0 },
		{ "Zg=", 0, NULL, 0 },
		{ "Zg===", 0, NULL, 0 },
		{ "Zm8==", 0, NULL, 0 },
		{ "Zm9v=", 0, NULL, 0 },
		{ "=", 0, NULL, 0 },
		{ "==", 0, NULL, 0 },
		{ "Zm9vYmFy====", 0, NULL, 0 },
		{ "Zg==Zg==", 0, NULL, 0 },
		{ "Zg==\r\nZg", 0, NULL, 0 },
		{ "Zm9v\0YmFy", 9, NULL, 0 },
		{ "Zm9v\xc3\xa9", 0, NULL, 0 },
		{ "Zm9v.", 0, NULL, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		size_t inlen = rows[i].len ? rows[i].len : strlen(rows[i].in);
		size_t outlen = 12345;
		unsigned char *got = base64_decode(rows[i].in, inlen, &outlen);
		if (!rows[i].want) {
			ok(got == NULL, "base64 row %zu ('%s') is invalid", i, rows[i].in);
		} else {
			size_t want_len = rows[i].want_len ? rows[i].want_len : strlen(rows[i].want);
			ok(got && outlen == want_len && !memcmp(got, rows[i].want, want_len),
			   "base64 row %zu ('%s') decodes to %zu bytes", i, rows[i].in, want_len);
		}
		free(got);
	}

	/* only inlen bytes are read (the row above ends in "==", the byte after it is not looked at) */
	char unterminated[4] = { 'Z', 'm', '9', 'v' };
	size_t outlen;
	unsigned char *got = base64_decode(unterminated, sizeof(unterminated), &outlen);
	ok(got && outlen == 3 && !memcmp(got, "foo", 3), "base64 of an unterminated buffer");
	free(got);
	ok(base64_decode(NULL, 0, &outlen) == NULL, "base64 of NULL is invalid");

	/* MIME-style 76-column lines of a longer input */
	unsigned char bytes[300];
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (unsigned char)(255 - i);
	size_t b64_len;
	char *b64 = test_b64(bytes, sizeof(bytes), &b64_len);
	struct buf b;
	buf_init(&b, 4096);
	for (size_t i = 0; i < b64_len; i += 76) {
		buf_append(&b, b64 + i, b64_len - i < 76 ? b64_len - i : 76);
		buf_str(&b, "\r\n");
	}
	got = base64_decode(b.data, b.len, &outlen);
	ok(got && outlen == sizeof(bytes) && !memcmp(got, bytes, sizeof(bytes)), "base64 with CRLF every 76 columns");
	free(got);
	buf_release(&b);
	free(b64);
}

/* ---- magic ---- */

static void test_magic(void)
{
	static const struct {
		const char *name;
		const unsigned char *data;
		size_t len;
		const char *ext, *mime;
	} rows[] = {
		{ "png", (const unsigned char *)"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, "png", "image/png" },
		{ "png header only", (const unsigned char *)"\x89PNG\r\n\x1a\n", 8, "png", "image/png" },
		{ "png truncated", (const unsigned char *)"\x89PNG\r\n\x1a", 7, NULL, NULL },
		{ "png with LF only", (const unsigned char *)"\x89PNG\n\x1a\n\n", 8, NULL, NULL },
		{ "jpeg", jpeg_bytes, sizeof(jpeg_bytes), "jpg", "image/jpeg" },
		{ "jpeg 3 bytes", (const unsigned char *)"\xff\xd8\xff", 3, "jpg", "image/jpeg" },
		{ "jpeg 2 bytes", (const unsigned char *)"\xff\xd8", 2, NULL, NULL },
		{ "webp", webp_bytes, sizeof(webp_bytes), "webp", "image/webp" },
		{ "webp 12 bytes", (const unsigned char *)"RIFF\0\0\0\0WEBP", 12, "webp", "image/webp" },
		{ "webp 11 bytes", (const unsigned char *)"RIFF\0\0\0\0WEB", 11, NULL, NULL },
		{ "riff wave", (const unsigned char *)"RIFF\0\0\0\0WAVEfmt ", 16, NULL, NULL },
		{ "gif", (const unsigned char *)"GIF89a\1\0\1\0", 10, NULL, NULL },
		{ "text", (const unsigned char *)"hello world", 11, NULL, NULL },
		{ "empty", (const unsigned char *)"", 0, NULL, NULL },
		{ "NULL", NULL, 0, NULL, NULL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		is_str(image_ext_from_magic(rows[i].data, rows[i].len), rows[i].ext, "magic ext %s", rows[i].name);
		is_str(image_mime_from_magic(rows[i].data, rows[i].len), rows[i].mime, "magic mime %s", rows[i].name);
	}
}

/* More images than asked for: the first n are kept, inline ones before URLs. */
static void test_keep_first(void)
{
	static const struct { size_t inline_n, urls, keep, want_inline, want_urls, want_dropped; } v[] = {
		{ 0, 60, 1, 0, 1, 59 }, { 3, 0, 1, 1, 0, 2 }, { 2, 2, 3, 2, 1, 1 },
		{ 1, 0, 4, 1, 0, 0 }, { 0, 0, 1, 0, 0, 0 }, { 2, 3, 2, 2, 0, 3 },
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct response r = { .candidates_tokens = -1, .retry_delay_ms = -1 };
		r.n_images = v[i].inline_n;
		r.images = xcalloc(r.n_images + 1, sizeof(*r.images));
		for (size_t k = 0; k < r.n_images; k++)
			r.images[k].data = xmalloc(8);
		r.n_urls = v[i].urls;
		r.urls = xcalloc(r.n_urls + 1, sizeof(*r.urls));
		for (size_t k = 0; k < r.n_urls; k++)
			r.urls[k] = xasprintf("http://x/%zu.png", k);
		size_t dropped = response_keep_first(&r, v[i].keep);
		ok(dropped == v[i].want_dropped && r.n_images == v[i].want_inline &&
		   r.n_urls == v[i].want_urls && (!r.n_urls || !strcmp(r.urls[0], "http://x/0.png")),
		   "keep %zu of %zu inline + %zu urls: %zu inline, %zu urls, %zu dropped", v[i].keep,
		   v[i].inline_n, v[i].urls, r.n_images, r.n_urls, dropped);
		response_release(&r);
	}
}

/* A secret an upstream quotes back however it spells it (F2): JSON escapes in a member name
 * of "usage", in a message, in text cut at its cap; base64 in an inline image. */
static void test_secrets_redacted(void)
{
	static const char key[] = "sk-test-0123456789abcdef";
	static const char escaped[] = "sk\\u002dtest\\u002d0123456789abcdef";
	struct response out;
	secret_register(key);

	char *body = xasprintf("{\"data\":[],\"usage\":{\"total_tokens\":2,\"%s\":1}}", escaped);
	upstream_parse_response(DIALECT_OPENAI, body, strlen(body), &out);
	char *usage = json_dumps(out.usage, JSON_COMPACT | JSON_SORT_KEYS);
	is_str(usage, "{\"[redacted]\":1,\"total_tokens\":2}", "a usage member named by the key");
	free(usage);
	response_release(&out);
	free(body);

	body = xasprintf("{\"error\":{\"message\":\"bad token %s\",\"code\":\"x\"}}", escaped);
	upstream_parse_response(DIALECT_OPENAI, body, strlen(body), &out);
	is_str(out.error_message, "bad token [redacted]", "the key escaped in a message");
	response_release(&out);
	free(body);

	/* the key escaped right where the text is cut: redacted before the cut, no prefix kept */
	char pad[2000 - 8 + 1];   /* the text cap is 2000 bytes (test_text_cap) */
	memset(pad, 'a', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	body = xasprintf("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"%s%s\"}]}}]}", pad,
			 escaped);
	upstream_parse_response(DIALECT_GEMINI, body, strlen(body), &out);
	ok(out.text && !strstr(out.text, "sk-test"), "the key escaped at the text's cap");
	response_release(&out);
	free(body);

	/* the key inside an image's bytes, which base64 hides from the raw body's redaction */
	size_t raw_len = png_len + sizeof(key) - 1, b64_len;
	unsigned char *raw = xmalloc(raw_len);
	memcpy(raw, png_bytes, png_len);
	memcpy(raw + png_len, key, sizeof(key) - 1);
	char *b64 = test_b64(raw, raw_len, &b64_len);
	body = xasprintf("{\"data\":[{\"b64_json\":\"%s\"}]}", b64);
	upstream_parse_response(DIALECT_OPENAI, body, strlen(body), &out);
	ok(out.n_images == 1 && !memmem(out.images[0].data, out.images[0].len, key, sizeof(key) - 1) &&
	   out.images[0].len == png_len + strlen(SECRET_MARK), "the key in an inline image's bytes");
	response_release(&out);
	free(body);
	free(b64);
	free(raw);
	secret_clear();
}

int main(void)
{
	png_bytes = base64_decode(PNG_B64, strlen(PNG_B64), &png_len);
	if (!ok(png_bytes && png_len > 8, "the §6.1 PNG decodes"))
		return tap_done();

	test_dialect();
	test_openai_generation();
	test_openai_edit();
	test_gemini_request();
	test_responses();
	test_text_cap();
	test_big_body();
	test_big_body_strings();
	test_base64();
	test_magic();
	test_keep_first();
	test_secrets_redacted();

	free(png_bytes);
	return tap_done();
}
