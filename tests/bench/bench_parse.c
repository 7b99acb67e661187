/* bench_parse.c - `make bench`: how long upstream_parse_response() takes on the bodies that
 * test_upstream.c checks for correctness (a 35 MB Gemini answer, hostile text parts).
 * Prints figures of the optimized build; asserts nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upstream.h"
#include "util.h"
#include "b64enc.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best of a few runs: the figure least disturbed by a shared machine. */
static void bench(const char *what, const char *body, size_t len)
{
	double best = 1e9;
	for (int run = 0; run < 3; run++) {
		struct response out;
		double t0 = now();
		upstream_parse_response(DIALECT_GEMINI, body, len, &out);
		double took = now() - t0;
		response_release(&out);
		if (took < best)
			best = took;
	}
	printf("  %-28s %8.1f ms  (%.1f MB, best of 3)\n", what, best * 1000, (double)len / 1e6);
}

static void buf_text(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

static char *text_body(const char *piece, int times, size_t *len)
{
	struct buf b;
	buf_init(&b, 8u << 20);
	buf_text(&b, "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"");
	for (int i = 0; i < times; i++)
		buf_text(&b, piece);
	buf_text(&b, "\"}]}}]}");
	return buf_detach(&b, len);
}

int main(void)
{
	size_t len;
	unsigned char *raw;
	char *body = test_gemini_image_body(26u << 20, &raw);
	free(raw);
	printf("upstream_parse_response (optimized build):\n");
	bench("35 MB Gemini image body", body, strlen(body));
	free(body);

	body = text_body("http:/h![](hh", 300000, &len);
	bench("hostile text part", body, len);
	free(body);
	body = text_body("https://a.b/c ", 200000, &len);
	bench("many non-image links", body, len);
	free(body);
	return 0;
}
