/* log.c - one line per event on stderr, written in the order the lines were made.
 *
 * Threads that hold their lines (log_hold: the loops, the I/O helpers) add them to one buffer,
 * written in one write(2) by log_flush: a loop flushes once per turn, before it sleeps, and a
 * helper after each item (or batch) it ran, so a later item that hangs holds none back. A busy daemon logs several lines per job: a write per line
 * was most of the loop's system calls. A flush writes only when a line of its own thread waits
 * (then every thread's lines go with it), so a thread that turns once per job but logs nothing
 * (libcurl's transfer thread) writes nothing, nor takes the lock. A line of a thread that does not hold is written
 * at once, after the lines held, in the same write. One lock covers the buffer and every write,
 * so lines keep their order and never interleave mid-line. At exit the held lines are written
 * (atexit), and before an abort for want of memory; any other crash (kill -9, a fault) loses
 * them: at most the lines of each loop's turn and each helper's pass it cut.
 *
 * Where the line goes decides its form. When stderr is the journal (systemd sets JOURNAL_STREAM
 * to the device and inode of the stream it gave us), each line starts with its syslog priority
 * "<3>" (error), "<4>" (warning), "<6>" (info) or "<7>" (debug), so `journalctl -p warning` shows
 * what needs an operator, and carries no time of its own (the journal stamps it). Anywhere else
 * (a terminal, a file, a pipe) a line starts with the local time, ISO 8601 with milliseconds. */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "banned.h"

static enum log_level current_level = LOG_INFO;
static const char *level_tag[] = { "error: ", "warning: ", "", "debug: " };
static const char level_priority[] = { '3', '4', '6', '7' };
static int to_journal = -1;    /* -1 = not looked at yet */

/* The lines kept for one write. A line is at most LOG_LINE_MAX bytes; past HELD_MAX the lines kept
 * so far are written first. */
#define LOG_LINE_MAX 2048
#define HELD_MAX (64 * 1024)
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static char held[HELD_MAX];
static size_t held_len;
static __thread bool holding;  /* this thread's lines wait for a flush */
static unsigned long held_writes;        /* writes of held lines so far */
static __thread unsigned long mine_until; /* held_writes + 1 while a line of this thread waits */
static __thread bool held_since_flush;   /* this thread held a line since its last flush */

void log_set_level(enum log_level level)
{
	current_level = level;
}

bool log_enabled(enum log_level level)
{
	return level <= current_level;
}

/* Lock held. */
static void write_held(void)
{
	if (held_len) {
		(void)write_all(STDERR_FILENO, held, held_len);
		held_writes++;
	}
	held_len = 0;
}

void log_flush(void)
{
	/* Most turns of a loop log nothing: those take no lock, so they never wait for another
	 * thread's write (a slow stderr) nor make one wait. */
	if (!held_since_flush)
		return;
	held_since_flush = false;
	pthread_mutex_lock(&held_lock);
	if (mine_until == held_writes + 1)
		write_held();
	pthread_mutex_unlock(&held_lock);
}

void log_hold(bool on)
{
	pthread_mutex_lock(&held_lock);
	if (!on)
		write_held();
	holding = on;
	pthread_mutex_unlock(&held_lock);
}

void log_flush_all(void)
{
	pthread_mutex_lock(&held_lock);
	write_held();
	pthread_mutex_unlock(&held_lock);
}

static void register_flush_at_exit(void)
{
	atexit(log_flush_all);
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

/* The local time of a line, ISO 8601 with milliseconds. Formatting a date (localtime_r, eight
 * fields) is most of a line's cost, so each thread keeps the last second's and writes only the
 * milliseconds: the zone offset can only change on a second's boundary. */
static void stamp_now(char *out, size_t size)
{
	static __thread int64_t cached_sec = INT64_MIN;
	static __thread char cached[48];
	static __thread size_t ms_at;        /* where the three digits of the milliseconds are */
	int64_t now = wall_ms(), ms = (now % 1000 + 1000) % 1000, sec = (now - ms) / 1000;
	if (sec != cached_sec) {
		format_time_iso8601(now, cached, sizeof(cached));
		const char *dot = strchr(cached, '.');
		ms_at = dot ? (size_t)(dot + 1 - cached) : 0;
		cached_sec = ms_at ? sec : INT64_MIN;
	}
	size_t len = strnlen(cached, size - 1);
	memcpy(out, cached, len);
	out[len] = '\0';
	if (ms_at && ms_at + 3 < size) {
		out[ms_at] = (char)('0' + ms / 100);
		out[ms_at + 1] = (char)('0' + ms / 10 % 10);
		out[ms_at + 2] = (char)('0' + ms % 10);
	}
}

__attribute__((format(printf, 3, 0)))
static void emit(enum log_level level, const char *prefix, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX], stamp[48];
	if (level > current_level)
		return;
	if (to_journal < 0)
		log_init();
	if (to_journal)
		xsnprintf(stamp, sizeof(stamp), "<%c>", level_priority[level]);
	else {
		stamp_now(stamp, sizeof(stamp) - 1);
		size_t sl = strlen(stamp);
		stamp[sl] = ' ';
		stamp[sl + 1] = '\0';
	}
	/* stamp, prefix, ' ', tag: copied, not formatted (a printf costs as much as a stamp) */
	size_t n = 0;
	const char *parts[] = { stamp, prefix, " ", level_tag[level] };
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		size_t pl = strnlen(parts[i], sizeof(line) / 2 - n);
		memcpy(line + n, parts[i], pl);
		n += pl;
	}
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	size_t len = n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	/* Never let a control character from a job or the upstream reach the terminal. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len++] = '\n';
	pthread_mutex_lock(&held_lock);
	if (held_len + len > sizeof(held))
		write_held();
	memcpy(held + held_len, line, len);
	held_len += len;
	mine_until = held_writes + 1;
	held_since_flush = holding;
	if (!holding)
		write_held();
	pthread_mutex_unlock(&held_lock);
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
