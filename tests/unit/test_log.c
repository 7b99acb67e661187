/* test_log.c - telling the journal's stream from any other stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "tap.h"

int main(void)
{
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
