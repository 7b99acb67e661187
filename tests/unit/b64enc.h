/* b64enc.h - large upstream bodies for test_upstream.c and `make bench` (bench_parse.c): a plain
 * base64 encoder (the daemon only decodes) and a Gemini answer carrying one big image.
 * Header-only, for tests/unit and tests/bench. */
#ifndef IMGSPOOL_TEST_B64ENC_H
#define IMGSPOOL_TEST_B64ENC_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static inline char *test_b64(const unsigned char *d, size_t n, size_t *outlen)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) |
			     (i + 2 < n ? d[i + 2] : 0);
		*o++ = a[v >> 18];
		*o++ = a[(v >> 12) & 63];
		*o++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
		*o++ = i + 2 < n ? a[v & 63] : '=';
	}
	*o = '\0';
	*outlen = (size_t)(o - out);
	return out;
}

/* A Gemini answer with one inline PNG of raw_len bytes (PNG magic, then pseudo-random bytes,
 * the same every time); *raw gets the image bytes. Both are the caller's to free. */
static inline char *test_gemini_image_body(size_t raw_len, unsigned char **raw)
{
	static const unsigned char png_magic[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	size_t b64_len;
	uint32_t x = 12345;

	*raw = xmalloc(raw_len);
	memcpy(*raw, png_magic, sizeof(png_magic));
	for (size_t i = sizeof(png_magic); i < raw_len; i++) {
		x = x * 1103515245u + 12345u;
		(*raw)[i] = (unsigned char)(x >> 16);
	}
	char *b64 = test_b64(*raw, raw_len, &b64_len);
	char *body = xasprintf("{\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"%s\"}}]},"
			       "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"candidatesTokenCount\":2000}}", b64);
	free(b64);
	return body;
}

#endif
