/* test_log.c - telling the journal's stream from any other stderr; every line's time is the
 * time it was written, though each thread keeps the last second's date. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "tap.h"

static void test_line_times(void)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	if (!f || saved < 0 || dup2(fileno(f), STDERR_FILENO) < 0)
		return;
	char before[20][48], after[20][48];
	for (int i = 0; i < 20; i++) {
		format_time_iso8601(wall_ms(), before[i], sizeof(before[i]));
		log_info("line %d", i);
		format_time_iso8601(wall_ms(), after[i], sizeof(after[i]));
		for (volatile int spin = 0; spin < 200000; spin++)
			;   /* let the milliseconds move on between lines */
	}
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	char line[256];
	int i = 0, in_order = 0;
	while (i < 20 && fgets(line, sizeof(line), f)) {
		char *space = strchr(line, ' ');
		if (space)
			*space = '\0';
		in_order += strcmp(before[i], line) <= 0 && strcmp(line, after[i]) <= 0;
		i++;
	}
	ok(i == 20 && in_order == 20, "every line carries the time it was written (%d of %d)",
	   in_order, i);
	fclose(f);
}

int main(void)
{
	test_line_times();
	FILE *f = tmpfile();
	struct stat st;
	if (!f || fstat(fileno(f), &st) < 0)
		return 1;
	char *same = xasprintf("%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	char *other = xasprintf("%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
	char *trailing = xasprintf("%s:1", same);
	const struct { const char *value; bool want; } rows[] = {
		{ NULL, false }, { "", false }, { "journal", false }, { same, true },
		{ other, false }, { trailing, false },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		ok(log_stream_is_journal(rows[i].value, fileno(f)) == rows[i].want,
		   "JOURNAL_STREAM=%s -> %d", rows[i].value ? rows[i].value : "(unset)", rows[i].want);
	free(same);
	free(other);
	free(trailing);
	fclose(f);
	return tap_done();
}
