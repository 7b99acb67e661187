/* webhook.c - the Standard Webhooks envelope, ids and signatures for job events.
 *
 * An event is small (never image bytes: links only) and its body is fixed when the event is
 * queued; only webhook-timestamp and the signature change from one attempt to the next. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "crypto.h"
#include "jsontext.h"
#include "util.h"
#include "webhook.h"
#include "banned.h"

void webhook_id(const char *task_id, const char *type, int seq, char out[WEBHOOK_ID_LEN + 1])
{
	char *input = seq ? xasprintf("%s\n%s\n%d", task_id, type, seq)
			  : xasprintf("%s\n%s", task_id, type);
	char hex[2 * CRYPTO_SHA256_LEN + 1];
	crypto_sha256_hex(input, strlen(input), hex);
	free(input);
	xsnprintf(out, WEBHOOK_ID_LEN + 1, "msg_%.32s", hex);
}

void webhook_endpoint_key(const char *url, char out[WEBHOOK_ENDPOINT_KEY_LEN + 1])
{
	char hex[2 * CRYPTO_SHA256_LEN + 1];
	crypto_sha256_hex(url, strlen(url), hex);
	xsnprintf(out, WEBHOOK_ENDPOINT_KEY_LEN + 1, "%.32s", hex);
}

char *webhook_signature(const unsigned char *key, size_t key_len, const char *id,
			int64_t timestamp_s, const char *body, size_t body_len)
{
	char head[96];
	int n = xsnprintf(head, sizeof(head), "%s.%lld.", id, (long long)timestamp_s);
	char *signed_content = xmalloc((size_t)n + body_len);
	memcpy(signed_content, head, (size_t)n);
	memcpy(signed_content + n, body, body_len);
	unsigned char mac[CRYPTO_SHA256_LEN];
	crypto_hmac_sha256(key, key_len, signed_content, (size_t)n + body_len, mac);
	free(signed_content);
	char *b64 = crypto_base64_encode(mac, sizeof(mac));
	char *sig = xasprintf("v1,%s", b64);
	free(b64);
	return sig;
}

char *webhook_body(const char *type, int64_t wall_ms, json_t *data)
{
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	char when[40];
	xsnprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
	json_t *o = json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", when, "data", data);
	/* 12 digits: a cost of 0.04 reads 0.04, not 0.040000000000000001. */
	char *text = jsontext_dump(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12),
				   SIZE_MAX, NULL);
	json_decref(o);
	if (!text)
		out_of_memory("writing a webhook's body");   /* fails only so: its strings are UTF-8 */
	return text;
}

bool webhook_job_url_allowed(const struct config *cfg, const char *url)
{
	const char *p = cfg->notify_url_prefixes;
	while (p && *p) {
		p += strspn(p, " \t");
		size_t n = strcspn(p, " \t");
		if (n && !strncmp(url, p, n))
			return true;
		p += n;
	}
	return false;
}
