/* test_webhook.c - Standard Webhooks signatures (the specification's own example), event ids,
 * endpoint keys, the event body built from a result, and which per-job URLs a configuration allows. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "crypto.h"
#include "record.h"
#include "result.h"
#include "upstream.h"
#include "webhook.h"
#include "tap.h"

int main(void)
{
	/* The example of standard-webhooks/spec: secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw. */
	size_t key_len;
	unsigned char *key = crypto_base64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key_len);
	const char *body = "{\"test\": 2432232314}";
	char *sig = webhook_signature(key, key_len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
				      strlen(body));
	is_str(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "the specification's example");
	free(sig);
	free(key);

	char a[WEBHOOK_ID_LEN + 1], b[WEBHOOK_ID_LEN + 1], c[WEBHOOK_ID_LEN + 1];
	webhook_id("cat.1", "job.succeeded", 0, a);
	webhook_id("cat.1", "job.succeeded", 0, b);
	ok(!strcmp(a, b) && strlen(a) == WEBHOOK_ID_LEN && !strncmp(a, "msg_", 4) && !strchr(a, '.'),
	   "an id is stable, msg_ + 32 hex, without dots: %s", a);
	webhook_id("cat.1", "job.failed", 0, b);
	webhook_id("cat.1", "job.deferred", 1, c);
	ok(strcmp(a, b) && strcmp(b, c), "events of one task differ");
	webhook_id("cat.1", "job.deferred", 2, a);
	ok(strcmp(a, c), "two deferrals differ");

	/* control/gone.KEY: sha256sum of the URL, its first 32 hex digits. */
	char k[WEBHOOK_ENDPOINT_KEY_LEN + 1];
	webhook_endpoint_key("https://app.example.com/hooks/imgspool", k);
	is_str(k, "8f8810afab6d644b84d59f75a3a1be88", "an endpoint's key is its URL's SHA-256");

	/* A job's end: the values of its result (result_event_data). */
	struct record_tally elided = { .attempts = 2, .billed = 1, .cost = 0.04 };
	struct result_info info = { .task_id = "t1", .succeeded = false, .currency = "USD",
				    .elided = &elided, .error_code = "content_refused" };
	char *text = webhook_body("job.failed", 1764068523104, result_event_data(&info));
	is_str(text, "{\"type\":\"job.failed\",\"timestamp\":\"2025-11-25T11:02:03.104Z\",\"data\":"
		     "{\"task_id\":\"t1\",\"status\":\"failed\",\"error_code\":\"content_refused\","
		     "\"images\":[],\"urls\":[],\"cost\":{\"amount\":0.04,\"currency\":\"USD\","
		     "\"estimated\":false}}}", "the event body");
	free(text);
	struct image images[2] = { { .ext = "png" }, { .ext = "webp" } };
	char *urls[2] = { "https://img.example.com/t2.1.png", "https://img.example.com/t2.2.webp" };
	info = (struct result_info){ .task_id = "t2", .succeeded = true, .images = images,
				     .n_images = 2, .urls = urls };
	text = webhook_body("job.succeeded", 0, result_event_data(&info));
	is_str(text, "{\"type\":\"job.succeeded\",\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"data\":"
		     "{\"task_id\":\"t2\",\"status\":\"succeeded\",\"error_code\":null,"
		     "\"images\":[\"t2.1.png\",\"t2.2.webp\"],\"urls\":[\"https://img.example.com/t2.1.png\","
		     "\"https://img.example.com/t2.2.webp\"],\"cost\":{\"amount\":0.0,\"currency\":\"USD\","
		     "\"estimated\":false}}}", "a succeeded job's images and urls, in order");
	free(text);

	struct config cfg = { .notify_url_prefixes = "https://hooks.example.com/a/  http://127.0.0.1:9/x/" };
	static const struct { const char *url; bool want; } rows[] = {
		{ "https://hooks.example.com/a/1", true },
		{ "http://127.0.0.1:9/x/y", true },
		{ "https://hooks.example.com/b", false },
		{ "https://hooks.example.com.evil/a/", false },
		{ "https://hooks.example.com/", false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(webhook_job_url_allowed(&cfg, rows[i].url) == rows[i].want, "%s allowed: %d",
		   rows[i].url, rows[i].want);
	cfg.notify_url_prefixes = NULL;
	ok(!webhook_job_url_allowed(&cfg, "https://hooks.example.com/a/1"), "no prefixes: none");
	return tap_done();
}
