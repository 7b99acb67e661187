/* webhook.h - Standard Webhooks (standardwebhooks.com, spec 1.0): the events a finished job
 * sends, their ids and signatures. Pure: delivery, retries and durability are outbox.c's. */
#ifndef WEBHOOK_H
#define WEBHOOK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

#define WEBHOOK_ID_LEN 36        /* "msg_" + 32 hex digits */

/* The webhook-id of an event: "msg_" + the first 32 hex digits of SHA-256(task id, type, seq).
 * The same on every retry and after a restart, so receivers can drop duplicates; without '.',
 * which the signed content uses as its separator (task ids may contain dots). seq tells one
 * deferral of a job from the next (0 for terminal events). */
void webhook_id(const char *task_id, const char *type, int seq, char out[WEBHOOK_ID_LEN + 1]);
/* An endpoint's key, for control/gone.KEY: the first 32 hex digits of SHA-256(url). */
#define WEBHOOK_ENDPOINT_KEY_LEN 32
void webhook_endpoint_key(const char *url, char out[WEBHOOK_ENDPOINT_KEY_LEN + 1]);
/* "v1," + base64 HMAC-SHA256 over "id.timestamp.body" keyed with the secret's bytes. */
char *webhook_signature(const unsigned char *key, size_t key_len, const char *id,
			int64_t timestamp_s, const char *body, size_t body_len);
/* The body: {"type", "timestamp" (ISO 8601 UTC), "data"}; steals data (a job's end:
 * result_event_data(), the values of its result). */
char *webhook_body(const char *type, int64_t wall_ms, json_t *data);
/* Whether a job may send its events to url: it must start with one of [notify]
 * job_url_prefixes (space-separated). */
bool webhook_job_url_allowed(const struct config *cfg, const char *url);

#endif
