/* util.c - allocation that aborts, the capped buffer, clocks, string set.
 * Allocation failure aborts: error paths in the rest of the code handle real-world failures only. */
#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "banned.h"

/* Through the logger, with every line held before it: an abort runs no atexit. Nothing allocates
 * under the logger's lock, so no thread that ran out of memory holds it. */
_Noreturn void out_of_memory(const char *what)
{
	error("out of memory %s", what);
	log_flush_all();
	abort();
}

static _Noreturn void out_of_memory_allocating(size_t size)
{
	char what[64];
	xsnprintf(what, sizeof(what), "allocating %zu bytes", size);
	out_of_memory(what);
}

void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		out_of_memory_allocating(size);
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (!p)
		out_of_memory_allocating(nmemb * size);
	return p;
}

void *xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);
	if (!p)
		out_of_memory_allocating(size);
	return p;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* The conversions of most of our formats (names, paths, headers, log lines): %s, %d, %i, %u and
 * their l, ll and z forms, and %%, with no flag, width or precision. */
static bool plain_format(const char *fmt)
{
	for (const char *f = fmt; (f = strchr(f, '%')); f++) {
		f++;
		if (*f == 'z' || (*f == 'l' && *++f == 'l'))
			f++;
		if (!*f || !strchr(f[-1] == '%' ? "%sdiu" : "diu", *f))
			return false;
	}
	return true;
}

struct sink {
	char *out;
	size_t room;   /* bytes that may be written before the NUL */
	size_t len;    /* of the whole text */
};

static void sink_put(struct sink *k, const char *s, size_t n)
{
	if (k->len < k->room)
		memcpy(k->out + k->len, s, n < k->room - k->len ? n : k->room - k->len);
	k->len += n;
}

static void sink_number(struct sink *k, unsigned long long v, bool negative)
{
	char digits[24], *d = digits + sizeof(digits);
	do
		*--d = (char)('0' + v % 10);
	while (v /= 10);
	if (negative)
		*--d = '-';
	sink_put(k, d, (size_t)(digits + sizeof(digits) - d));
}

/* A signed value's magnitude, LLONG_MIN's included. */
static void sink_signed(struct sink *k, long long v)
{
	sink_number(k, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, v < 0);
}

int xvsnprintf(char *out, size_t size, const char *fmt, va_list ap)
{
	if (!plain_format(fmt))
		return vsnprintf(out, size, fmt, ap);
	struct sink k = { .out = out, .room = size ? size - 1 : 0 };
	for (const char *f = fmt; *f;) {
		const char *pct = strchr(f, '%');
		if (!pct) {
			sink_put(&k, f, strlen(f));
			break;
		}
		sink_put(&k, f, (size_t)(pct - f));
		f = pct + 1;
		char len = *f == 'z' || *f == 'l' ? *f++ : 0;
		if (len == 'l' && *f == 'l') {
			len = 'L';
			f++;
		}
		char conv = *f++;
		if (conv == '%') {
			sink_put(&k, "%", 1);
		} else if (conv == 's') {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";   /* glibc's */
			sink_put(&k, s, strlen(s));
		} else if (conv == 'u') {
			sink_number(&k, len == 'z' ? va_arg(ap, size_t) : len == 'l' ? va_arg(ap, unsigned long) :
				    len == 'L' ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned), false);
		} else {
			sink_signed(&k, len == 'z' ? va_arg(ap, ssize_t) : len == 'l' ? va_arg(ap, long) :
				    len == 'L' ? va_arg(ap, long long) : va_arg(ap, int));
		}
	}
	if (size)
		out[k.len < k.room ? k.len : k.room] = '\0';
	if (k.len > INT_MAX) {
		errno = EOVERFLOW;
		return -1;
	}
	return (int)k.len;
}

/* Formatted once: most texts (names, paths, headers) fit the first try. */
char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char first[256];
	va_start(ap, fmt);
	int n = xvsnprintf(first, sizeof(first), fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	char *p = xmalloc((size_t)n + 1);
	if ((size_t)n < sizeof(first)) {
		memcpy(p, first, (size_t)n + 1);
		return p;
	}
	va_start(ap, fmt);
	xvsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

int xsnprintf(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = xvsnprintf(out, size, fmt, ap);
	va_end(ap);
	return (n < 0 || (size_t)n >= size) ? -1 : n;
}

void buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->max = max;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
	if (len > b->max - b->len)
		return -1;
	if (b->len + len + 1 > b->alloc) {
		size_t want = b->alloc ? b->alloc : 4096;
		while (want < b->len + len + 1)
			want *= 2;
		if (want > b->max + 1)
			want = b->max + 1;
		b->data = xrealloc(b->data, want);
		b->alloc = want;
	}
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

void buf_reserve(struct buf *b, size_t want)
{
	if (want > b->max)
		want = b->max;
	if (want + 1 > b->alloc) {
		b->data = xrealloc(b->data, want + 1);
		b->alloc = want + 1;
		if (!b->len)
			b->data[0] = '\0';
	}
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

char *buf_detach(struct buf *b, size_t *len)
{
	char *p = b->data ? b->data : xstrdup("");
	if (len)
		*len = b->len;
	b->data = NULL;
	b->len = b->alloc = 0;
	return p;
}

void buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}

/* A client may set any mtime (touch -d 2300-01-01): the products must not overflow. Times in ms
 * stop at a quarter of the range, so that differences of two of them cannot overflow either. */
static int64_t scaled(int64_t sec, long nsec, int64_t per_sec, int64_t limit)
{
	if (sec >= limit / per_sec)
		return limit;
	if (sec <= -(limit / per_sec))
		return -limit;
	return sec * per_sec + nsec / (1000000000 / per_sec);
}

int64_t timespec_ns(const struct timespec *ts)
{
	return scaled((int64_t)ts->tv_sec, ts->tv_nsec, 1000000000, INT64_MAX);
}

int64_t timespec_ms(const struct timespec *ts)
{
	return scaled((int64_t)ts->tv_sec, ts->tv_nsec, 1000, INT64_MAX / 4);
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return timespec_ms(&ts);
}

/* ThreadSanitizer (gcc 12's) does not intercept pthread_clockjoin_np: it would take the thread
 * for alive and report races on what it used. Its builds join by the wall clock. */
#ifdef __SANITIZE_THREAD__
#define JOIN_CLOCK CLOCK_REALTIME
#define clockjoin(thread, clock, until) pthread_timedjoin_np(thread, NULL, until)
#else
#define JOIN_CLOCK CLOCK_MONOTONIC
#define clockjoin(thread, clock, until) pthread_clockjoin_np(thread, NULL, clock, until)
#endif

bool join_within(pthread_t thread, int64_t ms)
{
	struct timespec until;
	clock_gettime(JOIN_CLOCK, &until);
	until.tv_sec += (time_t)(ms / 1000);
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	if (clockjoin(thread, JOIN_CLOCK, &until) == ETIMEDOUT) {
		pthread_detach(thread);
		return false;
	}
	return true;
}

int thread_start_detached(const char *name, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t thread;
	int rc = pthread_create(&thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return rc;
	pthread_setname_np(thread, name);
	pthread_detach(thread);
	return 0;
}

void cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
}

static _Atomic int64_t exit_deadline;   /* mono_ms, 0: not set */

void exit_deadline_set(int64_t ms)
{
	int64_t none = 0;
	atomic_compare_exchange_strong(&exit_deadline, &none, mono_ms() + ms);
}

int64_t exit_wait_ms(int64_t bound)
{
	int64_t until = atomic_load(&exit_deadline);
	if (!until)
		return bound;
	int64_t left = until - mono_ms();
	return left < 0 ? 0 : left < bound ? left : bound;
}

int64_t mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

int64_t wall_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

/* n (0 <= n < 10^width) in width decimal digits, zero-padded. */
static void digits(char *out, long n, int width)
{
	for (int i = width - 1; i >= 0; i--, n /= 10)
		out[i] = (char)('0' + n % 10);
}

void format_time_iso8601(int64_t wall_msec, char *out, size_t size)
{
	int64_t ms = (wall_msec % 1000 + 1000) % 1000;   /* before 1970 too */
	time_t sec = (time_t)((wall_msec - ms) / 1000);
	struct tm tm;
	/* A year past what struct tm holds (a planted mtime): print the epoch rather than garbage. */
	if (!localtime_r(&sec, &tm)) {
		sec = 0;
		ms = 0;
		localtime_r(&sec, &tm);
	}
	long off = tm.tm_gmtoff;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	long year = tm.tm_year + 1900L;
	if (year < 0 || year > 9999) {   /* rare: printf pads and signs it */
		if (xsnprintf(out, size, "%04ld-%02d-%02dT%02d:%02d:%02d.%03d%c%02ld:%02ld",
			      year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			      (int)ms, sign, off / 3600, (off % 3600) / 60) < 0 && size)
			out[0] = '\0';
		return;
	}
	/* The usual case without printf, which costs more than the rest of a result's fields:
	 * YYYY-MM-DDTHH:MM:SS.mmm+HH:MM, every field its fixed width. */
	char text[30];
	digits(text, year, 4);
	text[4] = '-';
	digits(text + 5, tm.tm_mon + 1, 2);
	text[7] = '-';
	digits(text + 8, tm.tm_mday, 2);
	text[10] = 'T';
	digits(text + 11, tm.tm_hour, 2);
	text[13] = ':';
	digits(text + 14, tm.tm_min, 2);
	text[16] = ':';
	digits(text + 17, tm.tm_sec, 2);
	text[19] = '.';
	digits(text + 20, ms, 3);
	text[23] = sign;
	digits(text + 24, off / 3600 % 100, 2);
	text[26] = ':';
	digits(text + 27, (off % 3600) / 60, 2);
	text[29] = '\0';
	if (size >= sizeof(text))
		memcpy(out, text, sizeof(text));
	else if (size)
		out[0] = '\0';
}

int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* FNV-1a: the keys are short file names, so a simple hash is plenty. */
#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do {							\
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);	\
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;			\
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;			\
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);	\
	} while (0)

/* SipHash-1-3 (Aumasson and Bernstein; the variant of CPython's and Rust's hash tables). */
uint64_t siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	const unsigned char *p = data;
	uint64_t last = (uint64_t)len << 56;
	for (; len >= 8; p += 8, len -= 8) {
		uint64_t m = 0;
		for (int i = 7; i >= 0; i--)
			m = m << 8 | p[i];
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t i = 0; i < len; i++)
		last |= (uint64_t)p[i] << (8 * i);
	v3 ^= last;
	SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static uint64_t hash_key[2];

static void hash_key_draw(void)
{
	if (getrandom(hash_key, sizeof(hash_key), 0) != (ssize_t)sizeof(hash_key)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		hash_key[0] = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) *
			      6364136223846793005ULL;
		hash_key[1] = ((uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&ts) *
			      1442695040888963407ULL;
	}
}

uint64_t str_hash(const char *s)
{
	pthread_once(&hash_once, hash_key_draw);
	return siphash13(hash_key[0], hash_key[1], s, strlen(s));
}

static char tombstone[1];

void strset_init(struct strset *s)
{
	s->cap = 64;
	s->slots = xcalloc(s->cap, sizeof(*s->slots));
	s->count = 0;
	s->tombstones = 0;
}

static size_t strset_find(const struct strset *s, const char *key, bool *found)
{
	size_t mask = s->cap - 1, i = (size_t)str_hash(key) & mask, first_free = SIZE_MAX;
	for (;; i = (i + 1) & mask) {
		char *slot = s->slots[i];
		if (!slot) {
			*found = false;
			return first_free != SIZE_MAX ? first_free : i;
		}
		if (slot == tombstone) {
			if (first_free == SIZE_MAX)
				first_free = i;
		} else if (!strcmp(slot, key)) {
			*found = true;
			return i;
		}
	}
}

static void strset_grow(struct strset *s)
{
	char **old = s->slots;
	size_t old_cap = s->cap;
	if (s->count * 4 >= s->cap)
		s->cap *= 2;
	s->slots = xcalloc(s->cap, sizeof(*s->slots));
	s->tombstones = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i] && old[i] != tombstone) {
			bool found;
			s->slots[strset_find(s, old[i], &found)] = old[i];
		}
	}
	free(old);
}

bool strset_has(const struct strset *s, const char *key)
{
	bool found;
	strset_find(s, key, &found);
	return found;
}

bool strset_add(struct strset *s, const char *key)
{
	if ((s->count + s->tombstones + 1) * 2 > s->cap)
		strset_grow(s);
	bool found;
	size_t i = strset_find(s, key, &found);
	if (found)
		return false;
	if (s->slots[i] == tombstone)
		s->tombstones--;
	s->slots[i] = xstrdup(key);
	s->count++;
	return true;
}

bool strset_del(struct strset *s, const char *key)
{
	bool found;
	size_t i = strset_find(s, key, &found);
	if (!found)
		return false;
	free(s->slots[i]);
	s->slots[i] = tombstone;
	s->count--;
	s->tombstones++;
	return true;
}

void strset_release(struct strset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		if (s->slots[i] != tombstone)
			free(s->slots[i]);
	free(s->slots);
	s->slots = NULL;
	s->cap = s->count = s->tombstones = 0;
}

uint64_t random64(void)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint64_t)mono_ms() * 6364136223846793005ULL;
	return r;
}

/* Read once (pthread_once): without IMGSPOOLD_CRASH_AT a pass costs no lock. */
static pthread_once_t crash_once = PTHREAD_ONCE_INIT;
static char crash_name[64];   /* the point named; "" when none is */
static long crash_nth;

static void crash_point_arm(void)
{
	const char *want = getenv("IMGSPOOLD_CRASH_AT");
	want = want ? want : "";
	const char *hash = strchr(want, '#');
	crash_nth = 1;
	if (hash && parse_long(hash + 1, 1, 1000000, &crash_nth) < 0)
		crash_nth = 1;
	xsnprintf(crash_name, sizeof(crash_name), "%.*s",
		  hash ? (int)(hash - want) : (int)strlen(want), want);
}

void crash_point(const char *name)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static long seen;
	pthread_once(&crash_once, crash_point_arm);
	if (!crash_name[0] || strcmp(crash_name, name))
		return;
	pthread_mutex_lock(&lock);
	bool die = ++seen == crash_nth;
	pthread_mutex_unlock(&lock);
	/* A kill -9 stands for a crash of the daemon's state, not of its log: the lines made
	 * before it go out first (2 s at most, as at exit), else the writer thread's lag loses
	 * them and a test that reads them fails at random. */
	if (die) {
		log_flush_all();
		raise(SIGKILL);
	}
}

bool url_is_http(const char *s)
{
	return s && (!strncmp(s, "https://", 8) || !strncmp(s, "http://", 7));
}

/* The parts of a URL: [0, host) the scheme and "://", [host, authority) userinfo@host:port,
 * end where a query, fragment or line end starts; *at the last '@' of the authority, or NULL. */
static void url_split(const char *url, size_t *host, size_t *authority, size_t *end, const char **at)
{
	*end = strcspn(url, "?#\r\n");   /* a query or fragment; a file's line end */
	const char *scheme = strstr(url, "://");
	*host = scheme && (size_t)(scheme - url) < *end ? (size_t)(scheme - url) + 3 : 0;
	*authority = *host + strcspn(url + *host, "/?#\r\n");
	*at = memrchr(url + *host, '@', *authority - *host);
}

char *url_redacted(const char *url)
{
	size_t host, authority, end;
	const char *at;
	url_split(url, &host, &authority, &end, &at);
	if (!at)
		return xstrndup(url, end);
	size_t after = (size_t)(at + 1 - url);
	char *out = xmalloc(end - (after - host) + 1);
	memcpy(out, url, host);
	memcpy(out + host, url + after, end - after);
	out[end - (after - host)] = '\0';
	return out;
}

const char *url_secret_part(const char *url)
{
	size_t host, authority, end;
	const char *at;
	url_split(url, &host, &authority, &end, &at);
	if (at)
		return "credentials (user:password@ before the host)";
	if (url[end] == '?')
		return "a query ('?' and what follows)";
	if (url[end] == '#')
		return "a fragment ('#' and what follows)";
	return NULL;
}

size_t url_unprintable_at(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f)
		i++;
	return i;
}

/* With IMGSPOOLD_STOP_FIFO naming a FIFO, only the thread at the point waits: until the test
 * opens the FIFO to write and closes it (the loop goes on meanwhile). Else the process stops. */
/* With IMGSPOOLD_STOP_FIFO=PATH, the point NAME waits on PATH.NAME if there is one, else on
 * PATH: a test lets the threads held at two points go one at a time. */
static void stop_here(const char *name)
{
	const char *fifo = getenv("IMGSPOOLD_STOP_FIFO");
	char own[PATH_MAX];
	int fd = -1;
	if (fifo && xsnprintf(own, sizeof(own), "%s.%s", fifo, name) < (int)sizeof(own))
		fd = open(own, O_RDONLY | O_CLOEXEC);
	if (fifo && fd < 0)
		fd = open(fifo, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		raise(SIGSTOP);
		return;
	}
	char c;
	ssize_t got;
	while ((got = read(fd, &c, 1)) > 0 || (got < 0 && errno == EINTR))
		;
	close(fd);
}

/* Once stop_points_fix ran, IMGSPOOLD_STOP_AT as it was then: getenv scans the whole
 * environment, and a job passes several stop points. */
static bool stop_fixed;
static char *stop_at;

void stop_points_fix(void)
{
	const char *want = getenv("IMGSPOOLD_STOP_AT");
	stop_at = want ? xstrdup(want) : NULL;
	stop_fixed = true;
}

void stop_point(const char *name)
{
	const char *want = stop_fixed ? stop_at : getenv("IMGSPOOLD_STOP_AT");
	if (!want)
		return;
	size_t len = strlen(name);
	for (const char *p = want; p && *p; p += strcspn(p, ","), p += *p == ',') {
		if (!strncmp(p, name, len) && (p[len] == ',' || !p[len])) {
			stop_here(name);
			return;
		}
	}
}

bool pattern_match(const char *pattern, const char *name)
{
	size_t special = strcspn(pattern, "*?[\\");
	if (!pattern[special])
		return !strcmp(pattern, name);
	if (pattern[special] == '*' && !pattern[special + 1])
		return !strncmp(pattern, name, special);
	return fnmatch(pattern, name, 0) == 0;
}

bool name_is_plain(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (!n || n > max)
		return false;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') && !(*s >= '0' && *s <= '9') &&
		    *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}
