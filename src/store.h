/* store.h - object storage: the images of a succeeded job uploaded to an S3-compatible bucket
 * before the job is published, so that a result in done/ means its images are in the bucket.
 *
 * Uploads are HTTP PUTs on the loop's libcurl multi, signed by libcurl (AWS SigV4); the body's
 * SHA-256 is computed on an I/O helper. A failed upload is retried with backoff for as long as
 * it takes: the generation is never paid again, the job just waits in running/. */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct http;
struct iopool;
struct config;
struct image;
struct store;
struct store_upload;

/* Counters for metrics. */
struct store_stats {
	uint64_t uploads;        /* objects stored */
	uint64_t failures;       /* failed PUTs (each retried) */
	uint64_t waiting;        /* jobs whose images are not all stored yet */
};

/* Once every image is stored: the images come back (owned again by the callee) with their
 * urls (owned by the callee, n of them, same order). */
typedef void store_done_fn(void *arg, struct image *images, char **urls, size_t n);

/* cfgp: where the current configuration is (it may be replaced by a reload). */
struct store *store_new(struct loop *loop, struct http *http, struct iopool *pool,
			struct config *const *cfgp);
void store_free(struct store *s);
const struct store_stats *store_stats(const struct store *s);

/* Uploads the images of task id, taking them (the array and their data) until done. Never
 * fails: failures are logged and retried until done or cancelled. */
struct store_upload *store_upload_start(struct store *s, const char *id,
					struct image *images, size_t n, store_done_fn *fn,
					void *arg);
/* Stops an upload and frees the images; the callback is not called. Safe while a helper
 * thread is hashing them (the last part of the clean-up is then left to that helper's end). */
void store_upload_cancel(struct store_upload *u);

/* Pure: the object key of an image file name (prefix + name), the URL a PUT goes to
 * (endpoint/bucket/key, path-style) and the URL written into results (public_url/key, or the
 * PUT URL). Callers free. */
char *store_object_key(const char *prefix, const char *image_name);
char *store_put_url(const char *endpoint, const char *bucket, const char *key);
char *store_public_url(const char *public_url, const char *endpoint, const char *bucket,
		       const char *key);
/* "image/png" for "png" etc. */
const char *store_content_type(const char *ext);

#endif
