/* store.c - uploads of a job's images to S3-compatible object storage, on the loop.
 *
 * One upload per job: the images' SHA-256 are computed on an I/O helper, then each image is
 * PUT in turn to ENDPOINT/BUCKET/PREFIX+NAME, signed by libcurl (CURLOPT_AWS_SIGV4). libcurl
 * 7.88 (Debian 12) neither adds x-amz-content-sha256 nor URL-encodes the canonical path, so we
 * send the header ourselves and keep keys to URL-safe characters (config.c checks the prefix;
 * task ids and image names are safe by construction). A PUT is idempotent, so after a crash the
 * same bytes are simply stored again. Failures never give up: the job's paid result waits in
 * running/ and is retried with backoff; every failure is logged with its reason. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "crypto.h"
#include "http.h"
#include "iopool.h"
#include "log.h"
#include "loop.h"
#include "result.h"
#include "retry.h"
#include "secret.h"
#include "store.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

struct store {
	struct loop *loop;
	struct http *http;
	struct iopool *pool;
	struct config *const *cfgp;
	struct store_stats stats;
};

struct store_upload {
	struct store *s;
	char id[160];
	struct image *images;    /* owned until handed back */
	size_t n;
	char (*sha)[2 * CRYPTO_SHA256_LEN + 1];
	char **urls;
	size_t next;             /* image being stored */
	int failures;            /* in a row, for the backoff */
	bool hashing;            /* a helper owns the images */
	bool cancelled;          /* during hashing: free everything when the helper is done */
	struct http_xfer *xfer;
	uint64_t timer;
	store_done_fn *fn;
	void *arg;
};

char *store_object_key(const char *prefix, const char *image_name)
{
	return xasprintf("%s%s", prefix ? prefix : "", image_name);
}

static size_t trimmed_len(const char *s)
{
	size_t n = strlen(s);
	while (n && s[n - 1] == '/')
		n--;
	return n;
}

char *store_put_url(const char *endpoint, const char *bucket, const char *key)
{
	return xasprintf("%.*s/%s/%s", (int)trimmed_len(endpoint), endpoint, bucket, key);
}

char *store_public_url(const char *public_url, const char *endpoint, const char *bucket,
		       const char *key)
{
	if (!public_url)
		return store_put_url(endpoint, bucket, key);
	return xasprintf("%.*s/%s", (int)trimmed_len(public_url), public_url, key);
}

const char *store_content_type(const char *ext)
{
	if (!strcmp(ext, "jpg"))
		return "image/jpeg";
	if (!strcmp(ext, "webp"))
		return "image/webp";
	return "image/png";
}

struct store *store_new(struct loop *loop, struct http *http, struct iopool *pool,
			struct config *const *cfgp)
{
	struct store *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->http = http;
	s->pool = pool;
	s->cfgp = cfgp;
	return s;
}

void store_free(struct store *s)
{
	free(s);
}

const struct store_stats *store_stats(const struct store *s)
{
	return &s->stats;
}

static void upload_free(struct store_upload *u)
{
	for (size_t i = 0; i < u->n; i++) {
		if (u->images)
			free(u->images[i].data);
		if (u->urls)
			free(u->urls[i]);
	}
	free(u->images);
	free(u->urls);
	free(u->sha);
	u->s->stats.waiting--;
	free(u);
}

static void put_next(struct store_upload *u);

static int64_t put_again(struct loop *loop, void *arg)
{
	(void)loop;
	struct store_upload *u = arg;
	u->timer = 0;
	put_next(u);
	return LOOP_TIMER_DONE;
}

/* The reason for a log line: the store's own error code from its XML body if any. */
static void failure_reason(const struct http_result *res, char *out, size_t size)
{
	if (res->transport != HTTP_DONE) {
		xsnprintf(out, size, "%s: %s", http_transport_name(res->transport), res->detail);
		return;
	}
	const char *code = res->body ? strstr(res->body, "<Code>") : NULL;
	const char *end = code ? strstr(code, "</Code>") : NULL;
	if (code && end && end - code - 6 < 64)
		xsnprintf(out, size, "HTTP %ld %.*s", res->status, (int)(end - code - 6), code + 6);
	else
		xsnprintf(out, size, "HTTP %ld", res->status);
	secret_redact_str(out);   /* a store may quote the secret key back in its <Code> */
}

static void put_done(void *arg, struct http_result *res)
{
	struct store_upload *u = arg;
	struct store *s = u->s;
	const struct config *cfg = *s->cfgp;
	u->xfer = NULL;
	u->images[u->next].data = res->body_lent;   /* back from the transfer */
	res->body_lent = NULL;
	if (res->transport == HTTP_DONE && res->status >= 200 && res->status < 300) {
		s->stats.uploads++;
		u->failures = 0;
		u->next++;
		put_next(u);
		return;
	}
	char why[200];
	failure_reason(res, why, sizeof(why));
	s->stats.failures++;
	u->failures++;
	/* Never given up: the job's paid result waits in running/ for as long as it takes. */
	const struct redelivery_rule rule = { .base_ms = cfg->store_retry_base_ms,
					      .cap_ms = cfg->store_retry_cap_ms };
	int64_t delay;
	retry_redeliver(&rule, u->failures, 0, 0, -1, random64(), &delay);
	log_job(u->failures == 1 ? LOG_WARN : LOG_INFO, u->id,
		"upload of image %zu to the store failed (%s, failure %d); the job waits in running/ "
		"and tries again in %" PRId64 " ms", u->next + 1, why, u->failures, delay);
	u->timer = loop_add_timer(s->loop, delay, put_again, u);
}

static void put_next(struct store_upload *u)
{
	struct store *s = u->s;
	const struct config *cfg = *s->cfgp;
	if (u->next == u->n) {
		log_job(LOG_INFO, u->id, "%zu image(s) stored in bucket '%s'", u->n, cfg->store_bucket);
		struct image *images = u->images;
		char **urls = u->urls;
		u->images = NULL;
		u->urls = NULL;
		size_t n = u->n;
		u->n = 0;
		store_done_fn *fn = u->fn;
		void *arg = u->arg;
		upload_free(u);
		fn(arg, images, urls, n);
		return;
	}
	if (!config_store_enabled(cfg) || !cfg->store_secret_access_key) {
		/* Keys missing (or the store switched off by a reload): wait for SIGHUP. */
		u->failures++;
		log_job(u->failures == 1 ? LOG_WARN : LOG_DEBUG, u->id, "cannot upload: %s; waiting",
			config_store_enabled(cfg) ? cfg->store_key_problem : "no [store] configured");
		u->timer = loop_add_timer(s->loop, cfg->store_retry_cap_ms, put_again, u);
		return;
	}
	struct image *im = &u->images[u->next];
	char *name = result_image_name(u->id, u->next, u->n, im->ext);
	char *key = store_object_key(cfg->store_prefix, name);
	char *url = store_put_url(cfg->store_endpoint, cfg->store_bucket, key);
	free(u->urls[u->next]);
	u->urls[u->next] = store_public_url(cfg->store_public_url, cfg->store_endpoint,
					    cfg->store_bucket, key);
	char *sigv4 = xasprintf("aws:amz:%s:s3", cfg->store_region);
	char *userpwd = xasprintf("%s:%s", cfg->store_access_key_id, cfg->store_secret_access_key);
	char *sha = xasprintf("x-amz-content-sha256: %s", u->sha[u->next]);
	const char *headers[] = { sha, NULL };
	struct http_request req = {
		.url = url,
		.method = "PUT",
		.body_lent = im->data,
		.body_len = im->len,
		.content_type = store_content_type(im->ext),
		.headers = headers,
		.aws_sigv4 = sigv4,
		.userpwd = userpwd,
		.timeout_s = cfg->store_timeout,
		.connect_timeout_s = 10,
		.max_body = 64 << 10,
		.ca_file = cfg->ca_file,
		.body_fd = -1,
	};
	u->xfer = http_start(s->http, &req, put_done, u);
	if (u->xfer)
		im->data = NULL;   /* the transfer's till put_done: a cancel need not wait for libcurl */
	explicit_bzero(userpwd, strlen(userpwd));
	free(userpwd);
	free(sigv4);
	free(sha);
	free(url);
	free(key);
	free(name);
	if (!u->xfer) {
		u->failures++;
		u->timer = loop_add_timer(s->loop, cfg->store_retry_cap_ms, put_again, u);
	}
}

static void hash_work(void *arg)
{
	struct store_upload *u = arg;
	for (size_t i = 0; i < u->n; i++)
		crypto_sha256_hex(u->images[i].data, u->images[i].len, u->sha[i]);
}

static void hash_done(void *arg)
{
	struct store_upload *u = arg;
	u->hashing = false;
	if (u->cancelled) {
		upload_free(u);
		return;
	}
	put_next(u);
}

struct store_upload *store_upload_start(struct store *s, const char *id, struct image *images,
					size_t n, store_done_fn *fn, void *arg)
{
	struct store_upload *u = xcalloc(1, sizeof(*u));
	u->s = s;
	xsnprintf(u->id, sizeof(u->id), "%s", id);
	u->images = images;
	u->n = n;
	u->sha = xcalloc(n, sizeof(*u->sha));
	u->urls = xcalloc(n, sizeof(*u->urls));
	u->fn = fn;
	u->arg = arg;
	u->hashing = true;
	s->stats.waiting++;
	iopool_submit(s->pool, hash_work, hash_done, u);
	return u;
}

void store_upload_cancel(struct store_upload *u)
{
	if (!u)
		return;
	if (u->hashing) {
		u->cancelled = true;
		return;
	}
	if (u->xfer)
		http_cancel(u->s->http, u->xfer);
	if (u->timer)
		loop_del_timer(u->s->loop, u->timer);
	upload_free(u);
}
