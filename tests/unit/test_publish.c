/* test_publish.c - the names of staging directories in running/ (spool-layout §5, §10): a batch's
 * (.~SLOT@HOST.batch-DEST, or .~tN.FROM@HOST.batch-DEST once taken over) and a job's own
 * (.ID@HOST.DEST). Each parser takes only its own kind, so a daemon that knows only a job's
 * kind never takes a batch's for one. And what a restart finds staged before it commits it: a
 * result cut short or naming an image not there whole is broken, never published. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "publish.h"
#include "spool.h"
#include "scratch_spool.h"
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

/* What a restart finds staged for job j before it commits it (publish_staged_state). */
struct staged_row {
	const char *what;
	const char *result;      /* NULL: no result staged */
	const char *image;       /* j.png's bytes; NULL: not there */
	enum publish_staged want;
};

static const struct staged_row staged_rows[] = {
	{ "nothing staged", NULL, NULL, PUBLISH_STAGED_NONE },
	{ "a result and its image", "{\"images\": [\"j.png\"]}", "png", PUBLISH_STAGED_WHOLE },
	{ "a failed job's result, no image", "{\"images\": []}", NULL, PUBLISH_STAGED_WHOLE },
	{ "a result cut to 0 bytes", "", "png", PUBLISH_STAGED_BROKEN },
	{ "a result cut short", "{\"images\": [\"j.p", "png", PUBLISH_STAGED_BROKEN },
	{ "a result without images", "{\"status\": \"succeeded\"}", "png", PUBLISH_STAGED_BROKEN },
	{ "its image missing", "{\"images\": [\"j.png\"]}", NULL, PUBLISH_STAGED_BROKEN },
	{ "its image empty", "{\"images\": [\"j.png\"]}", "", PUBLISH_STAGED_BROKEN },
	{ "an image name that leaves it", "{\"images\": [\"../j.png\"]}", "png", PUBLISH_STAGED_BROKEN },
};

static void put(int dirfd, const char *name, const char *text)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ok(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) && close(fd) == 0,
	   "wrote %s", name);
}

static void test_staged_state(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "publish-staged") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	int runfd = sp.fd[SPOOL_RUNNING];
	char why[256];
	for (size_t i = 0; i < sizeof(staged_rows) / sizeof(staged_rows[0]); i++) {
		const struct staged_row *r = &staged_rows[i];
		mkdirat(runfd, ".j@h1.done", 0777);
		int sfd = openat(runfd, ".j@h1.done", O_RDONLY | O_DIRECTORY);
		if (r->result)
			put(sfd, "j.result.json", r->result);
		if (r->image)
			put(sfd, "j.png", r->image);
		enum publish_staged got = publish_staged_state(&sp, "j", SPOOL_DONE, why, sizeof(why));
		ok(got == r->want, "%s: %d (%s)", r->what, (int)got, why);
		ok((got == PUBLISH_STAGED_BROKEN) == (why[0] != '\0'), "%s: a reason only if broken",
		   r->what);
		unlinkat(sfd, "j.result.json", 0);
		unlinkat(sfd, "j.png", 0);
		close(sfd);
		unlinkat(runfd, ".j@h1.done", AT_REMOVEDIR);
	}
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

int main(void)
{
	test_staged_state();
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
