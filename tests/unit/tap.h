/* tap.h - a minimal TAP producer for the C unit tests: table rows + a loop, one "ok" per check. */
#ifndef TAP_H
#define TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_count, tap_failed;

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

__attribute__((format(printf, 4, 5), unused))
static int tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	tap_count++;
	printf("%sok %d - ", pass ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!pass) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	return pass;
}

#define is_str(got, want, ...) \
	(ok((got) && (want) ? !strcmp((got), (want)) : (got) == (want), __VA_ARGS__) ? 1 : \
	 (printf("#   got:  '%s'\n#   want: '%s'\n", (got) ? (got) : "(null)", (want) ? (want) : "(null)"), 0))

static inline int tap_done(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

#endif
