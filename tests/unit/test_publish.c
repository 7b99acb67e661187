/* test_publish.c - the names of staging directories in running/ (spool-layout §5, §10): a batch's
 * (.~SLOT@HOST.batch-DEST, or .~tN.FROM@HOST.batch-DEST once taken over) and a job's own
 * (.ID@HOST.DEST). Each parser takes only its own kind, so a daemon that knows only a job's
 * kind never takes a batch's for one. */
#include <stdlib.h>
#include <string.h>

#include "publish.h"
#include "spool.h"
#include "tap.h"

struct row {
	const char *name;
	bool batch;              /* publish_parse_batch_name takes it */
	const char *host;        /* then: its host */
	int dest;
	const char *jobs_host;   /* whose jobs it holds */
	bool staging;            /* publish_parse_staging_name takes it */
};

static const struct row rows[] = {
	{ ".~0@hostA.batch-done", true, "hostA", SPOOL_DONE, "hostA", false },
	{ ".~12@host.with.dots.batch-failed", true, "host.with.dots", SPOOL_FAILED,
	  "host.with.dots", false },
	{ ".~t42-0000abcd.deadhost@alive.batch-done", true, "alive", SPOOL_DONE, "deadhost", false },
	{ ".~t42-0000abcd.dead.host@alive.batch-failed", true, "alive", SPOOL_FAILED, "dead.host",
	  false },
	{ ".job-1@hostA.done", false, NULL, 0, NULL, true },
	{ ".job-1@hostA.failed", false, NULL, 0, NULL, true },
	{ ".~0@hostA.done", false, NULL, 0, NULL, true },   /* not a batch's: no "batch-" */
	{ ".~0@hostA.batch-gone", false, NULL, 0, NULL, false },
	{ ".~0hostA.batch-done", false, NULL, 0, NULL, false },
	{ ".~0@a@b.batch-done", false, NULL, 0, NULL, false },
	{ ".~@hostA.batch-done", false, NULL, 0, NULL, false },
	{ ".~0@.batch-done", false, NULL, 0, NULL, false },
	{ "~0@hostA.batch-done", false, NULL, 0, NULL, false },
	{ ".job@hostA.partial", false, NULL, 0, NULL, false },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		char *host = NULL, *id = NULL, *shost = NULL;
		int dest = -1, sdest = -1;
		bool batch = publish_parse_batch_name(r->name, &host, &dest);
		ok(batch == r->batch, "%s: %s a batch's", r->name, r->batch ? "is" : "is not");
		ok(publish_is_batch_name(r->name) == r->batch, "%s: publish_is_batch_name", r->name);
		if (batch && r->batch) {
			is_str(host, r->host, "%s: host", r->name);
			ok(dest == r->dest, "%s: destination", r->name);
			char *jobs = publish_batch_jobs_host(r->name);
			is_str(jobs, r->jobs_host, "%s: whose jobs", r->name);
			free(jobs);
		}
		bool staging = publish_parse_staging_name(r->name, &id, &shost, &sdest);
		ok(staging == r->staging, "%s: %s a job's staging directory", r->name,
		   r->staging ? "is" : "is not");
		free(host);
		free(id);
		free(shost);
	}
	/* What publish_batch makes is what the parsers take. */
	char *name = publish_batch_name("hostA", 3, SPOOL_FAILED), *host = NULL;
	int dest = -1;
	is_str(name, ".~3@hostA.batch-failed", "a batch's name");
	ok(publish_parse_batch_name(name, &host, &dest) && !strcmp(host, "hostA") &&
	   dest == SPOOL_FAILED, "read back");
	free(host);
	free(name);
	return tap_done();
}
