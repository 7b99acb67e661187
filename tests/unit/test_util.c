/* test_util.c - the capped buffer, the string set, the keyed hash, numbers and times, formatting. */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "result.h"
#include "upstream.h"
#include "util.h"
#include "tap.h"

static void test_buf(void)
{
	struct buf b;
	buf_init(&b, 10);
	ok(buf_append(&b, "hello", 5) == 0 && b.len == 5, "append within the cap");
	ok(buf_append(&b, "world", 5) == 0 && b.len == 10, "append up to the cap");
	ok(buf_append(&b, "!", 1) < 0 && b.len == 10, "one byte over the cap is refused");
	ok(!strcmp(b.data, "helloworld"), "contents NUL-terminated");
	size_t len;
	char *p = buf_detach(&b, &len);
	ok(len == 10 && b.data == NULL && b.len == 0, "detach empties the buffer");
	free(p);
	buf_init(&b, 1u << 20);
	char chunk[1000];
	memset(chunk, 'x', sizeof(chunk));
	int fails = 0;
	for (int i = 0; i < 1048; i++)
		fails += buf_append(&b, chunk, sizeof(chunk)) < 0;
	ok(b.len == 1048000 && fails == 0, "grows to 1 MB in chunks");
	ok(buf_append(&b, chunk, sizeof(chunk)) < 0, "refuses past 1 MiB");
	buf_release(&b);

	/* A size known in advance: one allocation of that size, not doubling's 4 KiB. */
	static const struct { const char *name; size_t max, reserve, append, want_alloc; } rows[] = {
		{ "an empty buffer reserved gets that size", 1000, 600, 600, 601 },
		{ "held to the cap", 100, 600, 100, 101 },
		{ "past the reservation, doubling goes on from it", 1u << 20, 600, 601, 1202 },
		{ "nothing reserved: 4 KiB as before", 1u << 20, 0, 600, 4096 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		buf_init(&b, rows[i].max);
		if (rows[i].reserve)
			buf_reserve(&b, rows[i].reserve);
		ok(!rows[i].reserve || (b.data && b.data[0] == '\0' && b.len == 0),
		   "%s: empty after the reservation", rows[i].name);
		ok(buf_append(&b, chunk, rows[i].append) == 0 && b.alloc == rows[i].want_alloc &&
		   b.len == rows[i].append && b.data[b.len] == '\0', "%s", rows[i].name);
		buf_release(&b);
	}
	buf_init(&b, 100);
	buf_append(&b, "abc", 3);
	buf_reserve(&b, 50);
	ok(b.alloc == 101 && !strcmp(b.data, "abc"), "a reservation below what is held changes nothing");
	buf_release(&b);
	buf_init(&b, 10000);
	buf_append(&b, "abc", 3);
	buf_reserve(&b, 5000);
	ok(b.alloc == 5001 && !strcmp(b.data, "abc"), "a larger one keeps the bytes");
	buf_release(&b);
}

static void test_strset(void)
{
	struct strset s;
	strset_init(&s);
	char key[32];
	for (int i = 0; i < 5000; i++) {
		xsnprintf(key, sizeof(key), "job-%d", i);
		strset_add(&s, key);
	}
	ok(s.count == 5000, "5000 keys added");
	ok(!strset_add(&s, "job-42"), "a duplicate is not added");
	int missing = 0;
	for (int i = 0; i < 5000; i += 2) {
		xsnprintf(key, sizeof(key), "job-%d", i);
		strset_del(&s, key);
	}
	for (int i = 0; i < 5000; i++) {
		xsnprintf(key, sizeof(key), "job-%d", i);
		missing += strset_has(&s, key) != (i % 2 == 1);
	}
	ok(missing == 0 && s.count == 2500, "deletes leave exactly the odd keys");
	for (int round = 0; round < 20; round++) {
		strset_add(&s, "churn");
		strset_del(&s, "churn");
	}
	ok(!strset_has(&s, "churn") && s.count == 2500, "add/delete churn is stable");
	strset_release(&s);
}

static void test_numbers_and_time(void)
{
	long v;
	ok(parse_long("42", 1, 100, &v) == 0 && v == 42, "parse 42");
	ok(parse_long("0", 1, 100, &v) < 0, "below min refused");
	ok(parse_long("101", 1, 100, &v) < 0, "above max refused");
	ok(parse_long("4x", 0, 100, &v) < 0, "trailing garbage refused");
	ok(parse_long("", 0, 100, &v) < 0, "empty refused");
	ok(parse_long("99999999999999999999", 0, 100, &v) < 0, "overflow refused");
	char out[48];
	setenv("TZ", "Asia/Shanghai", 1);
	tzset();
	format_time_iso8601(1764039723123, out, sizeof(out));
	is_str(out, "2025-11-25T11:02:03.123+08:00", "ISO 8601 with the local offset");
	setenv("TZ", "UTC", 1);
	tzset();
	format_time_iso8601(1764039723000, out, sizeof(out));
	is_str(out, "2025-11-25T03:02:03.000+00:00", "UTC offset");
	/* Written digit by digit: every field at its width, offsets west and in half hours, years
	 * printf writes (past 9999, before year 0), a buffer too small. */
	static const struct {
		const char *tz;
		int64_t ms;
		size_t size;
		const char *want;
	} times[] = {
		{ "America/St_Johns", 1764039723007, 48, "2025-11-24T23:32:03.007-03:30" },
		{ "Asia/Kolkata", 946684799999, 48, "2000-01-01T05:29:59.999+05:30" },
		{ "UTC", 0, 48, "1970-01-01T00:00:00.000+00:00" },
		{ "UTC", 253402300800000, 48, "10000-01-01T00:00:00.000+00:00" },
		{ "UTC", -62167219200001, 48, "-001-12-31T23:59:59.999+00:00" },
		{ "UTC", -61851600000000, 48, "0010-01-01T00:00:00.000+00:00" },
		{ "UTC", 1764039723000, 30, "2025-11-25T03:02:03.000+00:00" },
		{ "UTC", 1764039723000, 29, "" },
	};
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		setenv("TZ", times[i].tz, 1);
		tzset();
		memset(out, 'x', sizeof(out));
		format_time_iso8601(times[i].ms, out, times[i].size);
		is_str(out, times[i].want, "%s, %" PRId64 " ms, %zu bytes", times[i].tz, times[i].ms,
		       times[i].size);
	}
	setenv("TZ", "UTC", 1);
	tzset();
	char small[4];
	ok(xsnprintf(small, sizeof(small), "%s", "toolong") < 0, "xsnprintf reports truncation");
	/* xasprintf: a text that fits its first try, and one that does not. */
	char *shortish = xasprintf("%s.%s", "id", "json");
	is_str(shortish, "id.json", "xasprintf of a short text");
	char longer[600];
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	char *twice = xasprintf("<%s>", longer);
	ok(strlen(twice) == sizeof(longer) + 1 && twice[0] == '<' && twice[sizeof(longer)] == '>' &&
	   !strncmp(twice + 1, longer, sizeof(longer) - 1), "xasprintf of a text past its first try");
	free(shortish);
	free(twice);
}

static void test_file_times(void)
{
	static const struct {
		const char *name;
		int64_t sec;
		long nsec;
		int64_t want_ns, want_ms;
	} rows[] = {
		{ "an ordinary mtime", 1764039723, 123456789, 1764039723123456789, 1764039723123 },
		{ "the epoch", 0, 0, 0, 0 },
		{ "before 1970", -2, 500000000, -1500000000, -1500 },
		{ "year 2262, the last ns", 9223372035, 0, 9223372035000000000, 9223372035000 },
		{ "year 2300 (touch -d) saturates the ns", 10413792000, 0, INT64_MAX, 10413792000000 },
		{ "the largest time_t saturates both", INT64_MAX, 999999999, INT64_MAX, INT64_MAX / 4 },
		{ "the smallest time_t saturates both", INT64_MIN, 0, -INT64_MAX, -(INT64_MAX / 4) },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct timespec ts = { .tv_sec = (time_t)rows[i].sec, .tv_nsec = rows[i].nsec };
		ok(timespec_ns(&ts) == rows[i].want_ns, "%s: ns", rows[i].name);
		ok(timespec_ms(&ts) == rows[i].want_ms, "%s: ms", rows[i].name);
	}
	char out[48];
	setenv("TZ", "UTC", 1);
	tzset();
	format_time_iso8601(INT64_MAX / 4, out, sizeof(out));
	ok(out[0] != '\0', "a time past struct tm still prints: %s", out);
	format_time_iso8601(-1500, out, sizeof(out));
	is_str(out, "1969-12-31T23:59:58.500+00:00", "before 1970");
}

static void test_url_is_http(void)
{
	static const struct {
		const char *url;
		bool want;
	} rows[] = {
		{ "https://hooks.example.com/x", true },
		{ "http://10.0.0.1:8080/", true },
		{ "https://", true },          /* the form only: what follows is checked by the caller */
		{ "HTTPS://example.com/", false },
		{ "ftp://example.com/", false },
		{ "http:/example.com", false },
		{ "https:", false },
		{ "", false },
		{ NULL, false },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		ok(url_is_http(rows[i].url) == rows[i].want, "url_is_http(%s)",
		   rows[i].url ? rows[i].url : "NULL");
}

static void test_image_names(void)
{
	char *a = result_image_name("cat", 0, 1, "png");
	char *b = result_image_name("cat", 1, 3, "jpg");
	is_str(a, "cat.png", "single image: ID.ext");
	is_str(b, "cat.2.jpg", "several images: ID.N.ext, 1-based");
	free(a);
	free(b);
}

static void test_url_redacted(void)
{
	static const struct {
		const char *url, *want;
	} rows[] = {
		{ "https://hooks.example.com/in", "https://hooks.example.com/in" },
		{ "https://hooks.example.com/in?token=s3cret", "https://hooks.example.com/in" },
		{ "https://hooks.example.com/in#s3cret", "https://hooks.example.com/in" },
		{ "https://user:t0ken@hooks.example.com/in", "https://hooks.example.com/in" },
		{ "https://user:t0ken@hooks.example.com:8443/in?a=b#c", "https://hooks.example.com:8443/in" },
		{ "https://t0ken@hooks.example.com", "https://hooks.example.com" },
		{ "https://a@b:t0k@en@hooks.example.com/x", "https://hooks.example.com/x" },
		{ "https://u:p@host?q=1", "https://host" },
		{ "https://hooks.example.com/users/@me?x", "https://hooks.example.com/users/@me" },
		{ "https://hooks.example.com/in\n", "https://hooks.example.com/in" },
		{ "https://u:p@hooks.example.com/in\r\n", "https://hooks.example.com/in" },
		{ "x?y://u:p@h/", "x" },
		{ "", "" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		char *got = url_redacted(rows[i].url);
		ok(!strcmp(got, rows[i].want), "url_redacted, row %zu: \"%s\" (want \"%s\")", i,
		   got, rows[i].want);
		free(got);
	}
}

static void test_url_secret_part(void)
{
	static const struct {
		const char *url, *want;   /* want: the start of the part named, or NULL */
	} rows[] = {
		{ "https://cdn.example.com/renders", NULL },
		{ "https://cdn.example.com/users/@me", NULL },
		{ "https://cdn.example.com:8443", NULL },
		{ "https://ak:sk@cdn.example.com", "credentials" },
		{ "https://sk@cdn.example.com/r", "credentials" },
		{ "https://cdn.example.com/r?token=sk", "a query" },
		{ "https://cdn.example.com?sk", "a query" },
		{ "https://cdn.example.com/r#sk", "a fragment" },
		{ "https://u:p@cdn.example.com/r?q", "credentials" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		const char *got = url_secret_part(rows[i].url);
		ok(rows[i].want ? got && !strncmp(got, rows[i].want, strlen(rows[i].want)) : !got,
		   "url_secret_part, row %zu: %s", i, got ? got : "none");
	}
}

static void test_url_unprintable_at(void)
{
	static const struct {
		const char *url;
		size_t want;   /* strlen(url): none */
	} rows[] = {
		{ "https://cdn.example.com/r~a-b_c.d%20e", 37 },
		{ "", 0 },
		{ " https://x", 0 },
		{ "https://x/a b", 11 },
		{ "https://x/\t", 10 },
		{ "https://x\x7f", 9 },
		{ "https://x/\xc2\x9b", 10 },
		{ "https://x/\xc3\xa9", 10 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		size_t got = url_unprintable_at(rows[i].url, strlen(rows[i].url));
		ok(got == rows[i].want, "url_unprintable_at, row %zu: %zu (want %zu)", i, got, rows[i].want);
	}
}

/* xvsnprintf and vsnprintf on the same format and arguments, at every size that matters: the
 * same length returned and the same bytes written. */
__attribute__((format(printf, 2, 3)))
static void same_as_vsnprintf(const char *name, const char *fmt, ...)
{
	va_list ap, again;
	va_start(ap, fmt);
	va_copy(again, ap);
	char whole[256];
	int want_len = vsnprintf(whole, sizeof(whole), fmt, ap);
	va_end(ap);
	va_end(again);
	bool same = true;
	size_t sizes[] = { 0, 1, 2, (size_t)want_len, (size_t)want_len + 1, sizeof(whole) };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && same; i++) {
		char got[256], want[256];
		memset(got, '#', sizeof(got));
		memset(want, '#', sizeof(want));
		va_start(ap, fmt);
		int g = xvsnprintf(sizes[i] ? got : NULL, sizes[i], fmt, ap);
		va_end(ap);
		va_start(ap, fmt);
		int w = vsnprintf(sizes[i] ? want : NULL, sizes[i], fmt, ap);
		va_end(ap);
		same = g == w && !memcmp(got, want, sizeof(got));
	}
	ok(same, "%s: \"%s\" as vsnprintf writes it (%d bytes)", name, whole, want_len);
}

static void test_format(void)
{
	const char *volatile none = NULL;   /* not seen as NULL by the format check */
	same_as_vsnprintf("names", "%s.%s", "id", "json");
	same_as_vsnprintf("a path", ".%s@%s.%s", "20261129.r1", "host-a", "done");
	same_as_vsnprintf("NULL", "<%s>", none);
	same_as_vsnprintf("empty", "%s", "");
	same_as_vsnprintf("no conversion", "plain text");
	same_as_vsnprintf("percent", "100%% of %s%%", "x");
	same_as_vsnprintf("int", "%d %i %d %d", INT_MIN, -5, 0, INT_MAX);
	same_as_vsnprintf("unsigned", "%u %u", 0u, UINT_MAX);
	same_as_vsnprintf("long", "%ld %ld %lu", LONG_MIN, LONG_MAX, ULONG_MAX);
	same_as_vsnprintf("long long", "%lld %lli %llu", LLONG_MIN, 42LL, ULLONG_MAX);
	same_as_vsnprintf("size", "%zu %zd %zd", SIZE_MAX, (ssize_t)-7, (ssize_t)SSIZE_MAX);
	same_as_vsnprintf("a log line", "claimed%s: %s%s%sprovider %s, model %s (%s)%s", "", "",
			  "", "", "apiyi", "gpt-image-2", "openai", "");
	/* Not plain: printf's own. */
	same_as_vsnprintf("width", "%08x.%5d", 0xbeefu, 42);
	same_as_vsnprintf("precision", "%.3s|%-4s|", "abcdef", "ab");
	same_as_vsnprintf("a real", "%.15g", 0.1);
	same_as_vsnprintf("a character and a pointer", "%c %p", 'x', (void *)0);
	same_as_vsnprintf("a long string", "%s%s%s", "0123456789012345678901234567890123456789",
			  "0123456789012345678901234567890123456789", "0123456789");
}

/* pattern_match gives fnmatch's answer for every pattern, fast paths or not. */
static void test_pattern_match(void)
{
	static const struct { const char *pattern, *name; bool want; } rows[] = {
		{ "gpt-image-2*", "gpt-image-2", true },
		{ "gpt-image-2*", "gpt-image-2-all", true },
		{ "gpt-image-2*", "gpt-image-1", false },
		{ "gpt-image-2*", "gpt-image-", false },
		{ "gpt-image-2*", "", false },
		{ "*", "", true },
		{ "*", "anything/at all", true },
		{ "flux-*", "flux-/x", true },          /* no FNM_PATHNAME: '*' takes '/' */
		{ "flux-*", ".flux-", false },
		{ "seedream", "seedream", true },       /* plain: the whole name */
		{ "seedream", "seedream4", false },
		{ "seedream", "seedrea", false },
		{ "", "", true },
		{ "", "x", false },
		{ "a*b", "axxb", true },                /* a '*' not at the end: fnmatch */
		{ "a*b", "axxc", false },
		{ "**", "ab", true },
		{ "gpt-?", "gpt-5", true },
		{ "gpt-[12]*", "gpt-2x", true },
		{ "gpt-[12]*", "gpt-3x", false },
		{ "gpt\\*", "gpt*", true },             /* an escaped '*' is not a wildcard */
		{ "gpt\\*", "gpt-x", false },
		{ "gpt-\\", "gpt-\\", false },          /* a lone trailing backslash: fnmatch decides */
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		bool got = pattern_match(rows[i].pattern, rows[i].name);
		bool libc = fnmatch(rows[i].pattern, rows[i].name, 0) == 0;
		ok(got == rows[i].want && got == libc, "pattern_match(\"%s\", \"%s\") is %s, as fnmatch's",
		   rows[i].pattern, rows[i].name, rows[i].want ? "a match" : "no match");
	}
}

/* SipHash-1-3 against CPython 3.11's hash of bytes with PYTHONHASHSEED=0, whose key is then zero:
 * hash(b"a") & (2**64 - 1) and so on. */
static void test_siphash(void)
{
	unsigned char seq[64];
	for (size_t i = 0; i < sizeof(seq); i++)
		seq[i] = (unsigned char)i;
	static const struct {
		const char *text;        /* NULL: the first len bytes of seq */
		size_t len;
		uint64_t want;
	} rows[] = {
		{ "a", 1, 0x407448d2b89b1813ULL },
		{ "abcdefg", 7, 0x6db12aae9070f506ULL },
		{ "abcdefgh", 8, 0x3f7b849c0b8e35eaULL },
		{ "n/x0123456789.json", 18, 0x6e58e7c846d308d4ULL },
		{ NULL, 15, 0xf30eb725bb91c9eaULL },
		{ NULL, 64, 0x75e05fd5bbc870c6ULL },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const void *in = rows[i].text ? (const void *)rows[i].text : seq;
		uint64_t got = siphash13(0, 0, in, rows[i].len);
		ok(got == rows[i].want, "siphash13 of %zu bytes: %016" PRIx64, rows[i].len, got);
	}
	ok(siphash13(1, 2, "a", 1) != siphash13(0, 0, "a", 1), "the key changes the hash");
	ok(str_hash("n/a") == str_hash("n/a") && str_hash("n/a") != str_hash("n/b"),
	   "str_hash: one key for the process");
}

#define FLOOD_BLOCKS 12           /* 2^12 names */
#define FLOOD_BITS 24

static uint64_t fnv1a(const char *s, uint64_t h, uint64_t mask)
{
	for (; *s; s++)
		h = ((h ^ (unsigned char)*s) * 1099511628211ULL) & mask;
	return h;
}

struct candidate {
	uint64_t state;
	char block[5];
};

static int by_state(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;
	return x->state < y->state ? -1 : x->state > y->state;
}

/* Names a client could pick against FNV-1a-64 (the tables' hash before): from each state, two
 * 4-character blocks leading to one low-24-bit state (a birthday search over candidates from a
 * fixed seed), chained, give 2^FLOOD_BLOCKS names of one low-24-bit hash: one probe chain in a
 * table of up to 2^24 slots. The keyed hash spreads them as it spreads any names. */
static void test_hash_flooding(void)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	const uint64_t mask = (1ULL << FLOOD_BITS) - 1;
	enum { N = 16384 };
	struct candidate *c = xcalloc(N, sizeof(*c));
	char pairs[FLOOD_BLOCKS][2][5];
	uint64_t h = fnv1a("n/x", 14695981039346656037ULL & mask, mask), rnd = 42;
	for (int b = 0; b < FLOOD_BLOCKS; b++) {
		bool found = false;
		while (!found) {
			for (size_t i = 0; i < N; i++) {
				for (int j = 0; j < 4; j++) {
					rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
					c[i].block[j] = alphabet[rnd % 36];
				}
				c[i].block[4] = '\0';
				c[i].state = fnv1a(c[i].block, h, mask);
			}
			qsort(c, N, sizeof(*c), by_state);
			for (size_t i = 1; i < N && !found; i++) {
				if (c[i].state == c[i - 1].state && strcmp(c[i].block, c[i - 1].block)) {
					memcpy(pairs[b][0], c[i - 1].block, 5);
					memcpy(pairs[b][1], c[i].block, 5);
					h = c[i].state;
					found = true;
				}
			}
		}
	}
	free(c);
	size_t n = (size_t)1 << FLOOD_BLOCKS, cap = 4 * n;   /* known.c's table: 4 slots a name */
	unsigned *fnv_load = xcalloc(cap, sizeof(*fnv_load)), *sip_load = xcalloc(cap, sizeof(*sip_load));
	unsigned char *str_load = xcalloc(cap, 1);
	size_t fnv_used = 0, sip_used = 0, sip_max = 0, str_used = 0;
	char key[3 + 4 * FLOOD_BLOCKS + 6];
	for (size_t i = 0; i < n; i++) {
		char *k = key;
		memcpy(k, "n/x", 3);
		k += 3;
		for (int b = 0; b < FLOOD_BLOCKS; b++, k += 4)
			memcpy(k, pairs[b][(i >> b) & 1], 4);
		memcpy(k, ".json", 6);
		size_t f = fnv1a(key, 14695981039346656037ULL, UINT64_MAX) & (cap - 1);
		size_t s2 = siphash13(0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL, key, strlen(key)) &
			    (cap - 1);
		fnv_used += !fnv_load[f]++;
		str_used += !str_load[str_hash(key) & (cap - 1)]++;
		sip_used += !sip_load[s2]++;
		sip_max = sip_load[s2] > sip_max ? sip_load[s2] : sip_max;
	}
	ok(fnv_used == 1, "%zu names of one FNV-1a bucket in %zu (got %zu buckets)", n, cap, fnv_used);
	/* n names over 4n buckets at random fill 4n(1 - e^-1/4) = 3 624 of them on average */
	ok(sip_used > 3400 && sip_max <= 8, "siphash13 with a fixed key: %zu buckets, at most %zu a "
	   "bucket", sip_used, sip_max);
	/* the tables' own hash, under the process's random key: 7 standard deviations below the mean
	 * would be needed to fail */
	ok(str_used > 3400, "str_hash: %zu buckets", str_used);
	free(fnv_load);
	free(sip_load);
	free(str_load);
}

int main(void)
{
	test_buf();
	test_pattern_match();
	test_strset();
	test_siphash();
	test_hash_flooding();
	test_numbers_and_time();
	test_format();
	test_file_times();
	test_url_is_http();
	test_url_redacted();
	test_url_secret_part();
	test_url_unprintable_at();
	test_image_names();
	return tap_done();
}
