/* test_strandlog.c - a job left in running/ has its error said once, again when it changes, and
 * its quiet retries counted until it is settled (strandlog.h). */
#include <stdio.h>
#include <string.h>

#include "strandlog.h"
#include "util.h"
#include "tap.h"

static void test_says(void)
{
	const struct {
		const char *what;
		uint64_t said, line;
		bool want;
	} rows[] = {
		{ "the first line of a job", 0, 7, true },
		{ "the same line again", 7, 7, false },
		{ "another line (another step or errno)", 7, 9, true },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(strandlog_says(rows[i].said, rows[i].line) == rows[i].want, "%s: %s", rows[i].what,
		   rows[i].want ? "said" : "quiet");
}

static void test_retries_and_settling(void)
{
	struct strandlog sl;
	struct strset stranded;
	strandlog_init(&sl);
	strset_init(&stranded);
	strset_add(&stranded, "a");
	strset_add(&stranded, "b");
	for (int i = 0; i < 4; i++)
		strandlog_say(&sl, LOG_DEBUG, "a", "cannot move: %s", i < 3 ? "EIO" : "ENOSPC");
	strandlog_say(&sl, LOG_DEBUG, "b", "cannot move: %s", "EIO");
	ok(sl.n == 2 && !strcmp(sl.e[0].id, "a") && sl.e[0].retries == 3 && sl.e[1].retries == 0,
	   "each job's tries after its first are counted, said or not (%zu jobs)", sl.n);
	strandlog_settled(&sl, &stranded);
	ok(sl.n == 2, "both still left: both kept");
	strset_del(&stranded, "a");
	strandlog_settled(&sl, &stranded);
	ok(sl.n == 1 && !strcmp(sl.e[0].id, "b"), "the one settled is forgotten, the other kept");
	strandlog_say(&sl, LOG_DEBUG, "a", "cannot move: %s", "EIO");
	ok(sl.n == 2 && sl.e[1].retries == 0, "left again later: a new count");
	strset_release(&stranded);
	strandlog_release(&sl);
}

int main(void)
{
	test_says();
	test_retries_and_settling();
	return tap_done();
}
