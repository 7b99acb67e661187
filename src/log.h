/* log.h - one logger for the daemon: one line per event on stderr.
 * Lines about a job start with the job id; daemon lines start with "imgspoold:". Before those,
 * a line carries its syslog priority ("<4>") when stderr is the journal, else the local time. */
#ifndef LOG_H
#define LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
/* Whether lines of level are written: to skip working out what only such a line would say. */
bool log_enabled(enum log_level level);
/* Looks once whether stderr is the journal; call before any thread logs. Kept lines are
 * written at exit. */
void log_init(void);
/* on: this thread's lines are kept until a log_flush (or until they fill the buffer), then
 * written in one write(2) with every thread's kept lines: the loop holds its lines for a turn.
 * A line of a thread that does not hold is written at once, after the kept ones. off: writes
 * what is kept, and this thread's lines go out at once again. */
void log_hold(bool on);
/* From now on only a thread of the log's own writes to stderr: every other thread's lines,
 * kept or not, are handed to it, so none waits for a write that stalls (a full pipe). */
void log_start_writer(void);
/* Writes the kept lines, every thread's, if one of this thread's is among them. */
void log_flush(void);
/* Writes every kept line, whoever's: before the process ends (at exit, before an abort).
 * False when a write stuck for EXIT_WAIT_MS (2 s) kept some from going out. */
bool log_flush_all(void);
/* Whether fd is the stream JOURNAL_STREAM ("DEVICE:INODE") names. */
bool log_stream_is_journal(const char *journal_stream, int fd);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line about one job: "<id> <message>". */
void log_job(enum log_level level, const char *id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Logs at LOG_ERROR and returns -1, so failure paths read: return error("cannot open '%s'", p); */
int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For start-up failures and broken invariants only: logs and exits 1. */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
