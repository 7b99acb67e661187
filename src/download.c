/* download.c - the images a response returns as URLs, fetched before the job is published.
 * Only a download is repeated when it fails, never the generation that was paid for; a URL
 * pointing at a private address is refused unless [limits] allows it. */
#include <inttypes.h>
#include <stdlib.h>

#include "dispatch_impl.h"
#include "download.h"
#include "finish.h"
#include "log.h"
#include "loop.h"
#include "provider_state.h"
#include "retry.h"
#include "secret.h"
#include "task.h"
#include "banned.h"

/* The first wait before a download is tried again; the waits double up to [limits]
 * download_retry_cap, less up to a quarter at random, so the links of a batch that failed
 * together are not fetched again all at once. */
#define DOWNLOAD_RETRY_BASE_MS 1000

static int64_t download_again(struct loop *loop, void *arg)
{
	(void)loop;
	struct task *t = arg;
	t->timer = 0;
	download_start(t);
	return LOOP_TIMER_DONE;
}

static void download_done(void *arg, struct http_result *res)
{
	struct task *t = arg;
	struct dispatch *d = t->d;
	t->xfer = NULL;
	res->body_len = secret_redact(res->body, res->body_len);
	const unsigned char *body = (const unsigned char *)res->body;
	const char *ext = image_ext_from_magic(body, res->body_len);
	if (res->transport == HTTP_DONE && res->status == 200 && ext) {
		t->images = xrealloc(t->images, (t->n_images + 1) * sizeof(*t->images));
		t->images[t->n_images++] = (struct image){ .data = (unsigned char *)res->body,
							  .len = res->body_len, .ext = ext };
		res->body = NULL;
		t->next_url++;
		t->download_tries = 0;
		download_start(t);
		return;
	}
	if (res->refused_address[0]) {
		finish_fail(t, "download_failed", NULL, "the image was generated (and charged) but its URL "
			  "points at a loopback or private address (%s), which [limits] "
			  "allow_private_downloads does not allow", res->refused_address);
		return;
	}
	/* Only the download is repeated: the generation was paid for once. */
	t->download_tries++;
	const char *why = res->transport != HTTP_DONE ? http_transport_name(res->transport)
			  : res->status != 200 ? "an HTTP error" : "not a PNG, JPEG or WebP image";
	if (task_leave_if_cut(t, "while downloading its image"))
		return;
	if (t->download_tries >= d->cfg->download_attempts) {
		finish_fail(t, "download_failed", NULL,
			  "the image was generated (and charged) but could not be downloaded: %s (HTTP %ld)",
			  why, res->status);
		return;
	}
	int64_t delay = retry_redelivery_ms(t->download_tries, DOWNLOAD_RETRY_BASE_MS,
					    d->cfg->download_retry_cap * 1000, random64());
	log_job(LOG_WARN, t->id, "download of image %zu failed (%s, HTTP %ld); retrying in %" PRId64 " ms",
		t->next_url + 1, why, res->status, delay);
	t->timer = loop_add_timer(d->loop, delay, download_again, t);
}

void download_start(struct task *t)
{
	struct dispatch *d = t->d;
	if (t->next_url >= t->resp.n_urls) {
		t->succeeded = true;
		finish_task(t);
		return;
	}
	if (task_leave_if_cut(t, "before downloading its image"))
		return;
	t->state = T_DOWNLOADING;
	struct http_request req = {
		.url = t->resp.urls[t->next_url],
		.timeout_s = d->cfg->download_timeout,
		.connect_timeout_s = provider_state_config(t->prov)->connect_timeout,
		.max_body = (size_t)d->cfg->max_response_mb << 20,
		.follow_redirects = true,
		.ca_file = d->cfg->ca_file,
		.body_fd = -1,
		.public_only = !d->cfg->allow_private_downloads,
	};
	t->xfer = http_start(d->http, &req, download_done, t);
	if (!t->xfer)
		finish_fail(t, "download_failed", NULL, "the returned image URL could not be fetched");
}

