/* log.c - one line per event on stderr. A line is written with a single write(2) so lines from
 * the loop and the I/O threads never interleave mid-line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "banned.h"

static enum log_level current_level = LOG_INFO;
static const char *level_tag[] = { "error: ", "warning: ", "", "debug: " };

void log_set_level(enum log_level level)
{
	current_level = level;
}

__attribute__((format(printf, 3, 0)))
static void emit(enum log_level level, const char *prefix, const char *fmt, va_list ap)
{
	char line[2048];
	if (level > current_level)
		return;
	int n = snprintf(line, sizeof(line), "%s %s", prefix, level_tag[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	/* Never let a control character from a job or the upstream reach the terminal. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len++] = '\n';
	(void)write_all(STDERR_FILENO, line, len);
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
