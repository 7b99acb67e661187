/* util.h - allocation that aborts on failure, a capped growable buffer, clocks, small I/O helpers. */
#ifndef UTIL_H
#define UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation failure is not a condition we handle: these abort. */
/* Logs what could not be done for want of memory (after every line held) and aborts. */
_Noreturn void out_of_memory(const char *what);
void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2), nonnull(1)));

/* A growable byte buffer with a hard cap given at init. data is always NUL-terminated. */
struct buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t max;
};
void buf_init(struct buf *b, size_t max);
/* Returns -1 (and appends nothing) if the result would exceed max. */
int buf_append(struct buf *b, const void *data, size_t len);
/* Room for want bytes in all (held to max) before anything is appended: a size known in advance
 * takes one allocation of its own size, where growth by doubling would start at 4 KiB. */
void buf_reserve(struct buf *b, size_t want);
void buf_reset(struct buf *b);
/* Hands the bytes to the caller (who frees them) and leaves b empty. */
char *buf_detach(struct buf *b, size_t *len);
void buf_release(struct buf *b);

/* vsnprintf, the same bytes and length; formats of plain %s, %d, %u (and their l, ll, z forms)
 * and %% are written without printf's machinery, at a tenth of its cost. */
int xvsnprintf(char *out, size_t size, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
/* snprintf that reports truncation: returns -1 when out was too small. */
int xsnprintf(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

int64_t mono_ms(void);   /* CLOCK_MONOTONIC, milliseconds */
/* Joins thread, waiting at most ms by CLOCK_MONOTONIC (a step of the wall clock neither
 * shortens nor stretches it). False if it has not ended by then: it is detached, left running. */
bool join_within(pthread_t thread, int64_t ms);
/* Starts fn(arg) on a detached thread named name with every signal blocked in it (SIGTERM and
 * SIGINT belong to sigwatch's thread, SIGHUP to the loop's signalfd). 0, or an errno. */
int thread_start_detached(const char *name, void *(*fn)(void *), void *arg);
/* A condition whose timed waits count by CLOCK_MONOTONIC, as mono_ms does. */
void cond_init_monotonic(pthread_cond_t *cond);
/* The exit's waits for other threads (their joins, the log's writer) share one deadline, set
 * once as the exit begins: the threads it waits for run at once, so a stalled disk costs the
 * exit the longest of those waits, not their sum. exit_wait_ms(bound) is what a wait of at
 * most bound may take now: bound before the deadline is set, else what is left of it (0 past
 * it). Any thread. */
void exit_deadline_set(int64_t ms);
int64_t exit_wait_ms(int64_t bound);
/* A uniform 64-bit random value for jitter (getrandom; never blocks). */
uint64_t random64(void);
int64_t wall_ms(void);   /* CLOCK_REALTIME, milliseconds */
/* A file time in ns or ms, saturated instead of overflowing (ms at +-INT64_MAX/4). */
int64_t timespec_ns(const struct timespec *ts);
int64_t timespec_ms(const struct timespec *ts);
/* ISO 8601 with the local UTC offset, e.g. 2026-11-25T11:02:03.123+08:00. out must hold 40 bytes. */
void format_time_iso8601(int64_t wall_msec, char *out, size_t size);

/* write(2) until done; -1 with errno on failure. */
int write_all(int fd, const void *data, size_t len);
/* Parses a whole decimal number into [min, max]; -1 if it is not one. */
int parse_long(const char *s, long min, long max, long *out);
/* A test hook: when the environment variable IMGSPOOLD_CRASH_AT names this point ("NAME", or
 * "NAME#N" for its Nth pass), the process kills itself there with SIGKILL, so a test can prove
 * that a kill -9 at each step of a job's path ends as no kill would. The lines logged before it
 * are written first (log_flush_all). Without it, a no-op. */
void crash_point(const char *name);
/* The same with IMGSPOOLD_STOP_AT (a comma-separated list of points): the process stops itself
 * (SIGSTOP) at each, so a test can act at that moment and then let it go on with SIGCONT; with
 * IMGSPOOLD_STOP_FIFO=PATH only the thread there waits, till the test opens PATH (or PATH.NAME,
 * if that exists: a point of its own) and closes it. */
void stop_point(const char *name);
/* Reads IMGSPOOLD_STOP_AT once for all: later stop points never read the environment again.
 * Before any thread starts (the daemon's start-up); else every stop point reads it. */
void stop_points_fix(void);

/* SipHash-1-3 of data[0..len) under the key (k0, k1). */
uint64_t siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len);
/* A string's SipHash-1-3 under a key drawn from getrandom(2) at the first call: for hash tables
 * of names a client chooses (one who knew the hash could put them all in one probe chain) and
 * names of this process's own; never for a name another process or a restart must find again. */
uint64_t str_hash(const char *s);

/* A set of strings (open addressing). Keys are copied. */
struct strset {
	char **slots;
	size_t cap;
	size_t count;
	size_t tombstones;
};
void strset_init(struct strset *s);
bool strset_has(const struct strset *s, const char *key);
/* Returns true if key was added, false if it was already present. */
bool strset_add(struct strset *s, const char *key);
bool strset_del(struct strset *s, const char *key);
void strset_release(struct strset *s);

/* 1..max characters of [A-Za-z0-9._-]: provider, route and host names, safe in a file name. */
bool name_is_plain(const char *s, size_t max);
/* fnmatch(pattern, name, 0) == 0, the same answer for every pattern; a plain name, or one whose
 * only wildcard is a '*' at its end (the model patterns of [timeouts] and [prices]), is compared
 * without fnmatch, which reads the environment at every call. */
bool pattern_match(const char *pattern, const char *name);
/* Whether s (NULL allowed) starts with "https://" or "http://": where a configuration or a job
 * may send things. */
bool url_is_http(const char *s);
/* A URL as it may be shown (logs, files others read, imgspool stat): without its userinfo
 * ("user:token@"), query and fragment, which may hold credentials, and ending at a line end.
 * Caller frees. */
char *url_redacted(const char *url);
/* What url_redacted would take out of url, said for an error message ("credentials (...)", "a
 * query (...)", "a fragment (...)"), or NULL: a URL that goes into files as it is (results) must
 * have none. */
const char *url_secret_part(const char *url);
/* The offset of the first byte of s[0, len) a URL may not hold as it is (a control character,
 * a space, DEL or a byte past ASCII: RFC 3986 has them percent-encoded), or len when none. */
size_t url_unprintable_at(const char *s, size_t len);

#endif
