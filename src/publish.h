/* publish.h - a finished job's way into done/ or failed/ (spool-layout.md §5, §10).
 *
 * Fenced: a daemon that lost a job never changes anything in done/ or failed/. Everything is
 * first staged in a directory of the lease holder's own, its batch's running/.~SLOT@HOST.
 * batch-done (or -failed) or the job's own running/.ID@HOST.done (or .failed); the commit is
 * one rename of running/ID@HOST.json into it, which fails once another daemon has reclaimed the
 * job. After that every change in done/ and failed/ is a rename whose source
 * or target is a path inside the staging directory, so it fails as well once another daemon
 * has taken that directory over (a publisher that died, or stalled past its lease). Runs on an
 * I/O helper thread; the loop keeps the staging directory's lease (its mtime) fresh. */
#ifndef PUBLISH_H
#define PUBLISH_H

#include <stdbool.h>
#include <stddef.h>

struct spool;
struct image;
struct strset;
struct syncset;

enum publish_rc {
	PUBLISH_OK = 0,
	PUBLISH_RETRY = -1,      /* disk full, quota, I/O error: try again later */
	PUBLISH_FENCED = -2,     /* another daemon holds the job: nothing was changed */
	PUBLISH_PERMANENT = -3,  /* trying again cannot help (a directory planted in the way) */
};

/* running/.ID@HOST.done or .failed (dest is SPOOL_DONE or SPOOL_FAILED). Caller frees. */
char *publish_staging_name(const char *id, const char *host, int dest);
/* Whether name is a staging directory's name; if so, its id, host and destination. */
bool publish_parse_staging_name(const char *name, char **id, char **host, int *dest);

/* One job to publish: images and result_json, then the job file running/running_name (first
 * rewritten with job_text, its final records, unless NULL), into dest (SPOOL_DONE or
 * SPOOL_FAILED): staged, committed, the earlier run's files of the same id removed from done/
 * and failed/ (job files first), the new files renamed in, the job file last. */
struct publish_job {
	int dest;
	const char *id;
	const char *running_name;
	const struct image *images;
	size_t n_images;
	const char *result_json;
	const char *job_text;
	bool earlier_runs;       /* its records say it ran before (resubmitted): clear its images */
	bool records_final;      /* its records in running/ may say finished (a pass of it failed,
				  * or a restart found them so): nothing is staged in place */
	bool gone;               /* the caller knows running_name is gone (reclaimed, or moved by
				  * a commit that an earlier pass made): not staged again */
	enum publish_rc rc;      /* out, with a description in err */
	bool committed;          /* out: its commit is made (now or before), whatever rc says: the
				  * publication is durable in its staging directory and is only
				  * ever finished from there (publish_resume), never failed */
	char *err;
	size_t errsize;
};

/* Publishes n jobs together (a group commit): each step is done for every job, then one
 * barrier of ss (syncset.h) makes that step durable for all of them before the next starts:
 * staged files (and whatever the caller wrote into ss before, e.g. outbox entries); final job
 * records; then, after the commits, images and results in dest; then the job files. No job
 * file reaches done/ or failed/ before its images and result are durable there, and each is
 * durable when this returns rc PUBLISH_OK. Every byte goes with the first barrier; where ss
 * leaves name changes to the journal (syncset_order), the barriers between them sync nothing
 * and the last makes them all durable. Helper thread. */
void publish_batch(struct spool *sp, struct publish_job *const *jobs, size_t n, struct syncset *ss);

/* running/.~SLOT@HOST.batch-done or .batch-failed: where one helper thread stages the jobs it
 * publishes together. The jobs' files keep their names in it (ID.json once committed). A task id
 * never starts with '~', and a daemon that knows only the staging directories of single jobs
 * (.ID@HOST.done) never takes these for one. Caller frees. */
char *publish_batch_name(const char *host, unsigned slot, int dest);
/* Whether name is a batch's staging directory; if so its host (caller frees) and destination
 * (either may be NULL). */
bool publish_parse_batch_name(const char *name, char **host, int *dest);
bool publish_is_batch_name(const char *name);
/* How many batch slots this process has used (their directories may exist). */
unsigned publish_batch_slots(void);
/* The lease of this process's batch directories: their mtimes, touched now. */
void publish_heartbeat(struct spool *sp);
/* A name of our own for a batch's directory taken over from from_host:
 * .~tPID-N.FROM_HOST@HOST.batch-DEST. Caller frees. */
char *publish_taken_name(struct spool *sp, const char *from_host, int dest);
/* Whose jobs a batch's directory holds: its host's, or FROM_HOST's for one taken over. Caller
 * frees; NULL if name is not a batch's. */
char *publish_batch_jobs_host(const char *name);
/* Finishes what a batch's directory holds (ours after a crash, or one just taken over from a dead
 * host, renamed to publish_taken_name): its committed jobs are finished from it, but those in
 * held (NULL: none), whose tasks finish them; a job not committed whose job file, still
 * running/ID@HOST.json (HOST: whose batch it was) or already running/ID@US.json, says its run is
 * finished gets its staged files in a directory of its own, .ID@THAT_HOST.DEST, where its
 * restart or its reclaimer commits them; everything else goes, and the directory with it.
 * in_use (a directory a helper thread may be staging in): only committed jobs are finished,
 * and only in a directory where an earlier resume left one that no task holds (else it is not
 * even listed: a task finishes its own).
 * Logs each finished job. Returns whether the directory is still there: it is then heartbeated
 * (publish_heartbeat) and should be resumed again at the next rescan. */
bool publish_resume_batch(struct spool *sp, const char *name, const struct strset *held,
			  bool in_use);
/* A job just reclaimed from owner (its file now running_name): if its records say finished and
 * batch, one of owner's own slots' directories (not one taken over), holds its staged result,
 * its staged files move to a directory of ours, .ID@US.DEST, from which its adoption commits
 * them. Whether they moved. */
bool publish_take_staged(struct spool *sp, const char *batch, const char *id, const char *owner,
			 const char *running_name);
/* The ids of the jobs committed in running/name, a batch's directory (their job files are
 * there), and of those whose result is staged there (staged_ids may be NULL): 0, or -1 if it
 * cannot be listed. */
int publish_list_batch(struct spool *sp, const char *name, struct strset *committed,
		       struct strset *staged_ids);

/* What our staging directory of id for dest (SPOOL_DONE or SPOOL_FAILED) holds, before a restart
 * commits it: a broken publication (why says how) must never be published. Reads the whole
 * result. */
enum publish_staged {
	PUBLISH_STAGED_NONE,     /* no result staged */
	PUBLISH_STAGED_WHOLE,    /* a result and its images, or a result that cannot be read now */
	PUBLISH_STAGED_BROKEN,   /* a result that is no JSON, or names an image not there whole */
};
enum publish_staged publish_staged_state(struct spool *sp, const char *id, int dest, char *why,
					 size_t whysize);

/* Whether running/ID@HOST.json exists: a staging directory of that host is then not committed,
 * and moves only with its job (a reclaim), never by a takeover of the publication. */
bool publish_job_in_running(struct spool *sp, const char *id, const char *host);

/* A restart found running/running_name with records saying it was finished: everything was
 * staged before that rewrite, so only the commit and the rest are left to do (the same steps as
 * in publish_batch). */
enum publish_rc publish_commit_staged(struct spool *sp, const char *id, const char *running_name,
				      int dest, char *err, size_t errsize);

/* Finishes the publication staged in running/staging_name, a job's own directory (ours: after a
 * crash, or taken over from a dead host): if it was committed, completes it; if not, removes it
 * unless its job is still in running/. */
enum publish_rc publish_resume(struct spool *sp, const char *staging_name, char *err,
			       size_t errsize);

#endif
