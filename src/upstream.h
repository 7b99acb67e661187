/* upstream.h - the two wire dialects APIYI speaks: building requests and reading responses.
 *
 * Pure functions: no I/O, no curl. The transport lives in http.c. Parsing never trusts the body:
 * every field is type-checked, sizes are bounded by the caller's cap on the body. */
#ifndef UPSTREAM_H
#define UPSTREAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct job;

enum dialect {
	DIALECT_OPENAI,          /* POST /v1/images/generations (JSON) or /v1/images/edits (multipart) */
	DIALECT_GEMINI,          /* POST /v1beta/models/{model}:generateContent */
};

/* Gemini-native for Nano Banana models ("gemini-*" containing "-image"), OpenAI for the rest. */
enum dialect upstream_dialect(const char *model);
const char *dialect_name(enum dialect d);

/* A model name: 1 to UPSTREAM_MODEL_MAX letters, digits, '.', '_', ':' and '-' (a job's "model"
 * has the same shape, job.c); a Gemini model, which goes into the URL path, has no ':'. */
#define UPSTREAM_MODEL_MAX 128
#define UPSTREAM_MODEL_RULE "a model is 1 to 128 letters, digits, '.', '_', ':' and '-', " \
	"with no ':' in a Gemini model (gemini-*-image*), which goes into the URL path"
/* 0 when model can be called; else -1 with what is wrong with it in why ("is empty", "has ' '
 * at byte offset 3"), never its text. */
int upstream_model_check(const char *model, char *why, size_t whysize);

/* One part of a multipart/form-data body (OpenAI edits). */
struct form_part {
	char *name;              /* "image[]", "mask", "prompt", ... */
	char *value;             /* owned; for a text part */
	char *filename;          /* owned; non-NULL for a file part */
	const char *mime;        /* static; for a file part */
	unsigned char *data;     /* owned; file bytes (NULL with from_fd) */
	size_t len;
	bool from_fd;            /* the bytes are the first len of a file the transfer reads, not
				  * copied: http_request's files[file], opened only for the call */
	int file;                /* with from_fd: the index of that file (ref_image.file) */
};

struct request {
	enum dialect dialect;
	char *url;               /* owned */
	char *body;              /* owned JSON body; NULL when parts are used */
	size_t body_len;
	struct form_part *parts; /* owned multipart parts; NULL for JSON */
	size_t n_parts;
};

/* A reference image, already read (or opened) and checked by the caller. Borrowed. */
struct ref_image {
	const unsigned char *data; /* NULL: the first len bytes of fd, for a multipart part only */
	size_t len;
	const char *mime;        /* from magic bytes: image/png, image/jpeg, image/webp */
	const char *name;        /* the multipart filename: pass a basename, never a spool path */
	int file;                /* with data NULL: which of the job's distinct files it is; the
				  * caller opens them for each call (http_request.files), the
				  * request holds no descriptor */
};

/* Builds the request for job with the resolved model. refs/mask may be NULL/0.
 * Returns 0, or -1 with a message for the user in err (e.g. n > 1 on a Gemini model). */
int upstream_build_request(const struct job *job, const char *model, const char *base_url,
			   const struct ref_image *refs, size_t n_refs, const struct ref_image *mask,
			   struct request *req, char *err, size_t errsize);
void request_release(struct request *req);

struct image {
	unsigned char *data;     /* owned, decoded bytes */
	size_t len;
	const char *ext;         /* static: "png", "jpg" or "webp" (from magic bytes) */
};

/* What a response body says, for the classifier and the result writer. */
struct response {
	bool is_json;            /* the body parsed as a JSON object */
	struct image *images;    /* owned; decoded inline images (b64_json, inlineData) */
	size_t n_images;
	char **urls;             /* owned; image URLs to download (data[].url, NB-OSS text parts) */
	size_t n_urls;
	int n_bad_images;        /* images that were not valid base64 or not PNG/JPEG/WebP, and
				  * unusable URLs */
	json_t *usage;           /* owned; "usage" or "usageMetadata" as returned; NULL if absent */
	/* The {"error":{...}} envelope, any of them NULL when absent or empty. Owned. A Google error
	 * embedded as a string in the message fills what the outer envelope left empty. */
	char *error_code;        /* string code, or a number printed as text ("429") */
	char *error_type;
	char *error_status;      /* Google's "status", e.g. RESOURCE_EXHAUSTED */
	char *error_message;
	/* Gemini-native facts */
	bool has_candidates;     /* "candidates" was a non-empty array */
	char *finish_reason;     /* of the first candidate; NULL if absent */
	char *finish_message;
	char *block_reason;      /* promptFeedback.blockReason */
	long candidates_tokens;  /* usageMetadata.candidatesTokenCount, -1 if absent */
	char *text;              /* text parts joined by "\n" (capped at 2000 bytes); NULL if none */
	int64_t retry_delay_ms;  /* google.rpc.RetryInfo retryDelay, -1 if absent */
};

/* Reads a response body of either dialect. Never fails: what it cannot read is left empty,
 * and is_json says whether the body was a JSON object at all. Every registered secret
 * (secret.h) is redacted from what it keeps, however the body spelt it (JSON escapes, base64). */
void upstream_parse_response(enum dialect d, const char *body, size_t len, struct response *out);
void response_release(struct response *resp);
/* Keeps at most n images, inline ones first, then URLs, in order; frees the others. Returns how
 * many were dropped: an upstream may return more than the job asked for. */
size_t response_keep_first(struct response *resp, size_t n);

/* "png", "jpg", "webp" from the first bytes, or NULL when not one of those. */
const char *image_ext_from_magic(const unsigned char *data, size_t len);
const char *image_mime_from_magic(const unsigned char *data, size_t len);

/* Standard base64 (RFC 4648, padding optional, no whitespace except CR/LF which is skipped).
 * A leading "data:...;base64," is stripped. Returns a malloc'd buffer, or NULL if invalid. */
unsigned char *base64_decode(const char *in, size_t inlen, size_t *outlen);

#endif
