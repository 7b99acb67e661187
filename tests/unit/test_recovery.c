/* test_recovery.c - what a restart does with the new run of a job put back that a kill left
 * beside it in running/ (recovery_putback_decide, spool-layout §4, §10): put in place only over
 * the very file its claim read; a claim never made leaves the job where it was; a claim that
 * took a file put there since sends that file back, unless it has files of its own beside it;
 * a file there that is not the daemon's is never put in place. */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "job.h"
#include "recovery.h"
#include "tap.h"

struct row {
	const char *what;
	bool ours, job_there, same_file, job_has_files;
	enum recovery_putback want;
};

static const struct row rows[] = {
	{ "killed before the claim's rename", true, false, false, false, RECOVERY_PUTBACK_DROP },
	{ "killed before the claim, a job of the id left in running/ with files", true, false, false,
	  true, RECOVERY_PUTBACK_DROP },
	{ "killed after the claim of the file read", true, true, true, false,
	  RECOVERY_PUTBACK_INSTALL },
	{ "the file read claimed, taken over with its files", true, true, true, true,
	  RECOVERY_PUTBACK_INSTALL },
	{ "the claim took a file that replaced the one read", true, true, false, false,
	  RECOVERY_PUTBACK_RETURN },
	{ "another job file of the id in running/, with its saved files", true, true, false, true,
	  RECOVERY_PUTBACK_DROP },
	/* A file at a put-back's name that is not the daemon's: never put in place; the job the
	 * user put back is claimed afresh as it is (its new run then written by that claim). */
	{ "not the daemon's, beside the very file its name says was read", false, true, true, false,
	  RECOVERY_PUTBACK_RETURN },
	{ "not the daemon's, beside another file", false, true, false, false,
	  RECOVERY_PUTBACK_RETURN },
	{ "not the daemon's, no job file of the id in running/", false, false, false, false,
	  RECOVERY_PUTBACK_DROP },
	{ "not the daemon's, beside a job with files of its own", false, true, true, true,
	  RECOVERY_PUTBACK_DROP },
};

static const char *name(enum recovery_putback p)
{
	return p == RECOVERY_PUTBACK_DROP ? "drop" : p == RECOVERY_PUTBACK_INSTALL ? "install"
	       : p == RECOVERY_PUTBACK_RETURN ? "return" : "?";
}

/* The mark a reclaimer makes before its rename of a dead host's job (spool-layout §10). */
static const struct {
	const char *name, *host;
	bool want;
	const char *id, *owner;
} marks[] = {
	{ ".pt@hostB.reclaim.hostA", "hostB", true, "pt", "hostA" },
	{ ".pt@hostB.reclaim.host.a.b", "hostB", true, "pt", "host.a.b" },
	{ ".pt@hostB.reclaim.hostA", "hostC", false, NULL, NULL },   /* another host's */
	{ ".pt@hostB.reclaim.", "hostB", false, NULL, NULL },        /* no owner */
	{ ".pt@hostB.response.200", "hostB", false, NULL, NULL },
	{ "pt@hostB.reclaim.hostA", "hostB", false, NULL, NULL },    /* not a dotfile */
	{ ".@hostB.reclaim.hostA", "hostB", false, NULL, NULL },     /* no id */
	{ ".pt@hostBB.reclaim.hostA", "hostB", false, NULL, NULL },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		char id[JOB_ID_MAX + 1] = "", owner[NAME_MAX + 1] = "";
		bool got = recovery_reclaim_mark_parse(marks[i].name, marks[i].host, id, owner);
		ok(got == marks[i].want && (!got || (!strcmp(id, marks[i].id) &&
						     !strcmp(owner, marks[i].owner))),
		   "mark %s of %s: %s (id '%s', owner '%s')", marks[i].name, marks[i].host,
		   got ? "parsed" : "not parsed", id, owner);
	}
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		is_str(name(recovery_putback_decide(r->ours, r->job_there, r->same_file,
						    r->job_has_files)),
		       name(r->want), "%s", r->what);
	}
	return tap_done();
}
