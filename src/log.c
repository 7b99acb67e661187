/* log.c - one line per event on stderr, written in the order the lines were made.
 *
 * Threads that hold their lines (log_hold: the loops, the I/O helpers) add them to one buffer,
 * written in one write(2) by log_flush: a loop flushes once per turn, before it sleeps, and a
 * helper after each item (or batch) it ran, so a later item that hangs holds none back. A busy
 * daemon logs several lines per job: a write per line was most of the loop's system calls. A
 * flush writes only when a line of its own thread waits (then every thread's lines go with it),
 * so a thread that turns once per job but logs nothing (libcurl's transfer thread) writes
 * nothing, nor takes a lock. A line of a thread that does not hold is written at once, after the
 * lines held, in the same write. At exit the held lines are written (atexit), and before an
 * abort for want of memory; any other crash (kill -9, a fault) loses them: at most the lines of
 * each loop's turn and each helper's pass it cut, or what waited for a stuck write (below).
 *
 * No thread waits for another's write. A write may stall for good (the log on a stalled NFS, a
 * full pipe to journald), so it is made outside the buffer's lock: the writer takes the whole
 * buffer under that lock (the other of two takes its place) and writes it after letting go. A
 * second lock, which only the writer holds, keeps writes one at a time and so in order; a thread
 * that finds it taken leaves its lines to that writer, which looks again for lines wanted before
 * it lets go. Meanwhile lines are kept up to HELD_CAP; past it they are dropped and counted (and
 * every later line with them until the buffer is taken, even one short enough to fit), and the
 * count is written where they would have been, once a write goes through again.
 *
 * In the daemon (log_start_writer) no thread but a writer of the log's own ever writes: the
 * others only add their lines and wake it. A stderr that takes nothing (a full pipe nobody
 * reads) then stops no loop, whichever thread's line came first; the lines wait, and are
 * dropped and counted, as above. The last flush before the process ends waits for that
 * writer EXIT_WAIT_MS at most, within the exit's deadline (util.h exit_wait_ms: the writer runs
 * while the exit waits for its other threads) but TAIL_WAIT_MS at least, for the last lines.
 *
 * Where the line goes decides its form. When stderr is the journal (systemd sets JOURNAL_STREAM
 * to the device and inode of the stream it gave us), each line starts with its syslog priority
 * "<3>" (error), "<4>" (warning), "<6>" (info) or "<7>" (debug), so `journalctl -p warning` shows
 * what needs an operator, and carries no time of its own (the journal stamps it). Anywhere else
 * (a terminal, a file, a pipe) a line starts with the local time, ISO 8601 with milliseconds. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "banned.h"

static enum log_level current_level = LOG_INFO;
static const char *level_tag[] = { "error: ", "warning: ", "", "debug: " };
static const char level_priority[] = { '3', '4', '6', '7' };
static int to_journal = -1;    /* -1 = not looked at yet */

/* The lines kept for one write. A line is at most LOG_LINE_MAX bytes; past HELD_MAX the lines kept
 * so far are written first, by the thread that adds the line, unless another thread is writing:
 * then they are kept up to HELD_CAP (a stalled write), and later ones dropped and counted. Of the
 * two buffers, one fills under held_lock while the writer writes the other. */
#define LOG_LINE_MAX 2048
#define HELD_MAX (64 * 1024)
#define HELD_CAP (1024 * 1024)
/* How long the last flush before the process ends waits for another thread's write: at most,
 * and at least once the exit's deadline has passed. */
#define EXIT_WAIT_MS 2000
#define TAIL_WAIT_MS 250
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;  /* never held over a write */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER; /* the writer's */
static char bufs[2][HELD_CAP + LOG_LINE_MAX];   /* room for a line saying what was dropped */
static char *held = bufs[0];
static size_t held_len;
static unsigned long dropped;            /* lines not kept since the last take */
static bool wanted;                      /* lines held are wanted out now (a flush that found the
					  * writer busy, a thread that does not hold) */
static __thread bool holding;  /* this thread's lines wait for a flush */
static unsigned long held_writes;        /* buffers taken to be written so far */
static __thread unsigned long mine_until; /* held_writes + 1 while a line of this thread waits */
static __thread bool held_since_flush;   /* this thread held a line since its last flush */
/* The writer of log_start_writer: woken through writer_wake (under held_lock) when lines are
 * wanted; it signals written_wake when a write ends. */
static _Atomic bool writer_running;
static pthread_cond_t writer_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t written_wake;      /* on CLOCK_MONOTONIC (log_start_writer) */
static unsigned long held_written;       /* buffers taken and written so far: held_writes when
					  * the writer is through */

void log_set_level(enum log_level level)
{
	current_level = level;
}

bool log_enabled(enum log_level level)
{
	return level <= current_level;
}

static size_t format_line(char *line, enum log_level level, const char *prefix, const char *fmt,
			  va_list ap) __attribute__((format(printf, 4, 0)));
static size_t dropped_line(char *line, unsigned long n);

/* write_lock held: takes every line held (the other buffer takes its place) and writes them
 * outside held_lock. False if there was nothing to write. */
static bool write_held(void)
{
	pthread_mutex_lock(&held_lock);
	char *out = held;
	size_t len = held_len;
	unsigned long lost = dropped;
	bool take = len || lost;
	if (take) {
		held = out == bufs[0] ? bufs[1] : bufs[0];
		held_len = 0;
		dropped = 0;
		wanted = false;
		held_writes++;
	}
	pthread_mutex_unlock(&held_lock);
	if (lost)   /* where they would have been: after the lines kept before them */
		len += dropped_line(out + len, lost);
	if (take)
		(void)write_all(STDERR_FILENO, out, len);
	if (take && writer_running) {
		pthread_mutex_lock(&held_lock);
		held_written++;
		pthread_cond_broadcast(&written_wake);
		pthread_mutex_unlock(&held_lock);
	}
	return take;
}

static void *writer_main(void *arg);

static void log_start_writer_once(void)
{
	cond_init_monotonic(&written_wake);
	/* What was taken before it was written by the thread that took it. */
	pthread_mutex_lock(&held_lock);
	held_written = held_writes;
	pthread_mutex_unlock(&held_lock);
	if (thread_start_detached("imgspool-log", writer_main, NULL))
		return;   /* each thread writes, as before */
	writer_running = true;
}

static bool lines_wanted(void)
{
	return wanted && (held_len || dropped);
}

static void *writer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&held_lock);
	for (;;) {
		while (!lines_wanted())
			pthread_cond_wait(&writer_wake, &held_lock);
		pthread_mutex_unlock(&held_lock);
		pthread_mutex_lock(&write_lock);
		write_held();
		pthread_mutex_unlock(&write_lock);
		pthread_mutex_lock(&held_lock);
	}
	return NULL;
}

void log_start_writer(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, log_start_writer_once);
}

/* Lets go of write_lock. Lines wanted meanwhile, whose thread found it taken, are written now:
 * by this thread, or by the one that took the lock since (its take comes after them). */
static void writer_done(void)
{
	for (;;) {
		pthread_mutex_unlock(&write_lock);
		pthread_mutex_lock(&held_lock);
		bool again = wanted && (held_len || dropped);
		pthread_mutex_unlock(&held_lock);
		if (!again || pthread_mutex_trylock(&write_lock))
			return;
		write_held();
	}
}

/* Writes the lines held (wanted: set by the caller), unless another thread is writing: that
 * one writes them before it is done. */
static void write_wanted(void)
{
	if (writer_running) {   /* wanted is set: the writer wakes for it */
		pthread_mutex_lock(&held_lock);
		pthread_cond_signal(&writer_wake);
		pthread_mutex_unlock(&held_lock);
		return;
	}
	if (pthread_mutex_trylock(&write_lock))
		return;
	write_held();
	writer_done();
}

void log_flush(void)
{
	/* Most turns of a loop log nothing: those take no lock, so they never wait for another
	 * thread's write (a slow stderr) nor make one wait. */
	if (!held_since_flush)
		return;
	held_since_flush = false;
	pthread_mutex_lock(&held_lock);
	bool mine = mine_until == held_writes + 1;
	wanted |= mine;
	pthread_mutex_unlock(&held_lock);
	if (mine)
		write_wanted();
}

void log_hold(bool on)
{
	if (!on) {
		pthread_mutex_lock(&held_lock);
		wanted = true;
		pthread_mutex_unlock(&held_lock);
		write_wanted();
	}
	holding = on;
}

/* until: now by clock, plus what the exit leaves the log (exit_wait_ms), but at least
 * TAIL_WAIT_MS: the lines saying what the exit's other waits came to come last. */
static void flush_deadline(clockid_t clock, struct timespec *until)
{
	int64_t ms = exit_wait_ms(EXIT_WAIT_MS);
	ms = ms < TAIL_WAIT_MS ? TAIL_WAIT_MS : ms;
	clock_gettime(clock, until);
	until->tv_sec += (time_t)(ms / 1000);
	until->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until->tv_nsec >= 1000000000L) {
		until->tv_sec++;
		until->tv_nsec -= 1000000000L;
	}
}

bool log_flush_all(void)
{
	struct timespec until;
	if (writer_running) {
		/* Every line made by now, written by the writer: waited for EXIT_WAIT_MS at most. */
		flush_deadline(CLOCK_MONOTONIC, &until);
		pthread_mutex_lock(&held_lock);
		wanted = true;
		pthread_cond_signal(&writer_wake);
		bool left;
		while ((left = held_len || dropped || held_written != held_writes) &&
		       pthread_cond_timedwait(&written_wake, &held_lock, &until) == 0)
			;
		pthread_mutex_unlock(&held_lock);
		return !left;
	}
	flush_deadline(CLOCK_REALTIME, &until);
	/* Another thread's write stuck for good must not keep the process from ending. */
	if (pthread_mutex_timedlock(&write_lock, &until))
		return false;
	while (write_held())
		;
	pthread_mutex_unlock(&write_lock);
	return true;
}

static void flush_at_exit(void)
{
	log_flush_all();
}

static void register_flush_at_exit(void)
{
	atexit(flush_at_exit);
}

bool log_stream_is_journal(const char *journal_stream, int fd)
{
	unsigned long long dev, ino;
	struct stat st;
	char end;
	if (!journal_stream || sscanf(journal_stream, "%llu:%llu%c", &dev, &ino, &end) != 2)
		return false;
	return fstat(fd, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void log_init(void)
{
	to_journal = log_stream_is_journal(getenv("JOURNAL_STREAM"), STDERR_FILENO);
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, register_flush_at_exit);
}

/* The local time of a line, ISO 8601 with milliseconds, at out (room for 48 bytes); returns its
 * length. Formatting a date (localtime_r, eight fields) is most of a line's cost, so each thread
 * keeps the last second's and writes only the milliseconds: the zone offset can only change on
 * a second's boundary. */
static size_t stamp_now(char *out)
{
	static __thread int64_t cached_sec = INT64_MIN;
	static __thread char cached[48];
	static __thread size_t cached_len;
	static __thread size_t ms_at;        /* where the three digits of the milliseconds are */
	int64_t now = wall_ms(), ms = (now % 1000 + 1000) % 1000, sec = (now - ms) / 1000;
	if (sec != cached_sec) {
		format_time_iso8601(now, cached, sizeof(cached));
		cached_len = strlen(cached);
		const char *dot = strchr(cached, '.');
		ms_at = dot && (size_t)(dot - cached) + 4 <= cached_len ? (size_t)(dot + 1 - cached) : 0;
		cached_sec = ms_at ? sec : INT64_MIN;
	}
	memcpy(out, cached, cached_len);
	if (ms_at) {
		out[ms_at] = (char)('0' + ms / 100);
		out[ms_at + 1] = (char)('0' + ms / 10 % 10);
		out[ms_at + 2] = (char)('0' + ms % 10);
	}
	return cached_len;
}

/* Its stamp, prefix and level, copied (a line's printf cost was half in them), then the text. */
static size_t format_line(char *line, enum log_level level, const char *prefix, const char *fmt,
			  va_list ap)
{
	size_t n = 0;
	if (to_journal) {
		line[n++] = '<';
		line[n++] = level_priority[level];
		line[n++] = '>';
	} else {
		n = stamp_now(line);
		line[n++] = ' ';
	}
	size_t plen = strnlen(prefix, LOG_LINE_MAX / 2), tlen = strlen(level_tag[level]);
	memcpy(line + n, prefix, plen);
	n += plen;
	line[n++] = ' ';
	memcpy(line + n, level_tag[level], tlen);
	n += tlen;
	int m = xvsnprintf(line + n, LOG_LINE_MAX - n - 1, fmt, ap);
	size_t len = n + (m < 0 ? 0 : (size_t)m);
	if (len > LOG_LINE_MAX - 2)
		len = LOG_LINE_MAX - 2;
	/* Never let a control character from a job or the upstream reach the terminal. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len++] = '\n';
	return len;
}

__attribute__((format(printf, 4, 5)))
static size_t format_line_of(char *line, enum log_level level, const char *prefix, const char *fmt,
			     ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t len = format_line(line, level, prefix, fmt, ap);
	va_end(ap);
	return len;
}

/* The line that stands for n lines dropped, into line (LOG_LINE_MAX bytes of room). */
static size_t dropped_line(char *line, unsigned long n)
{
	return format_line_of(line, LOG_WARN, "imgspoold:", "%lu log line(s) dropped here: stderr "
			      "took no write for as long as %d KiB of lines came (a stalled journal "
			      "or file system?)", n, HELD_CAP / 1024);
}

__attribute__((format(printf, 3, 0)))
static void emit(enum log_level level, const char *prefix, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	if (level > current_level)
		return;
	if (to_journal < 0)
		log_init();
	size_t len = format_line(line, level, prefix, fmt, ap);
	pthread_mutex_lock(&held_lock);
	while (held_len + len > HELD_MAX) {
		if (!writer_running && pthread_mutex_trylock(&write_lock) == 0) {
			/* Nobody writes: this thread does, as the buffer would overflow. */
			pthread_mutex_unlock(&held_lock);
			write_held();
			writer_done();
			pthread_mutex_lock(&held_lock);
			continue;
		}
		wanted = true;   /* past HELD_MAX: the writer takes them as soon as it is free */
		pthread_cond_signal(&writer_wake);
		/* Another thread writes (maybe stuck): kept, within the cap, unless a line was
		 * dropped since the last take: the count goes where that line was lost, so every
		 * later line is dropped too, or it would come out before the count. */
		if (!dropped && held_len + len <= HELD_CAP)
			break;
		dropped++;
		pthread_mutex_unlock(&held_lock);
		return;
	}
	memcpy(held + held_len, line, len);
	held_len += len;
	mine_until = held_writes + 1;
	held_since_flush = holding;
	wanted |= !holding;
	/* The writer is woken under this lock already: not a second time under write_wanted's. */
	bool wake_writer = !holding && writer_running;
	if (wake_writer)
		pthread_cond_signal(&writer_wake);
	pthread_mutex_unlock(&held_lock);
	if (!holding && !wake_writer)
		write_wanted();
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(level, "imgspoold:", fmt, ap);
	va_end(ap);
}

void log_job(enum log_level level, const char *id, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(level, id, fmt, ap);
	va_end(ap);
}

int error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(LOG_ERROR, "imgspoold:", fmt, ap);
	va_end(ap);
	return -1;
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(LOG_ERROR, "imgspoold:", fmt, ap);
	va_end(ap);
	exit(1);
}
