/* publish.c - finished jobs' way into done/ or failed/, fenced, several jobs at once (see
 * publish.h).
 *
 *   1. stage:  the batch's staging directory, running/.~SLOT@HOST.batch-DEST/ (one per helper
 *              thread and destination), gets each job's images and ID.result.json, and
 *              running/ the job file's final records under a temporary name; after the
 *              barrier they replace the job file (so every step after the first barrier
 *              changes names only);
 *   2. commit: rename(running/ID@HOST.json, STAGING/ID.json); ENOENT = fenced;
 *   3. clear:  the earlier run of the same id leaves done/ and failed/: job files first, then
 *              images, then results, each renamed into the staging directory (ID.old.N);
 *              images are looked for only where there is evidence of an earlier run;
 *   4. move in: images, then the result, a barrier, then the job file: DEST/ID.json;
 *   5. the batch's leftovers go (clean_batch), and its directory once empty: one mkdir and
 *      one rmdir per batch, not per job.
 *
 * A job may also be staged in a directory of its own, running/.ID@HOST.DEST/: where a restart
 * or a takeover of a batch's directory (publish_resume_batch) puts a job not yet committed, so
 * that its restart or its reclaimer commits it from there, as before batches.
 *
 * A batch does each step for all its jobs, then one barrier of its syncset (syncset.h) for all:
 * after the staged files, after the final records, after the images and results are in DEST,
 * after the job files. A job whose step fails drops out of the batch; a failed barrier fails
 * every job still in it (each is tried again, or resumed past its commit). The barriers after
 * the first only keep name changes in order: on a journaled ext4 (sync = auto) the journal
 * does that, and only the last one syncs.
 *
 * Steps 3-5 only rename to or from paths inside the staging directory, by name: once another
 * daemon has renamed that directory to its own name (it took a dead publisher's job over), they
 * all fail and change nothing. A crash after 2 is finished at the restart (publish_resume_batch,
 * publish_resume); before 2 the job is still in running/ and is published afresh, or, once its
 * records say "finished", committed from what it staged (moved to a directory of its own). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "publish.h"
#include "record.h"
#include "result.h"
#include "spool.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

/* A job file of ours, read back by a takeover: the largest any daemon writes, whatever its
 * max_job_bytes. */
#define JOB_READ_MAX RECORD_FILE_MAX(CONFIG_JOB_BYTES_CEILING)
/* Our own result document, read back by a resume: RESULT_READ_MAX (result.h), as imgspool. */
#define IMAGES_MAX 10000              /* ID.N.ext looked for when clearing an earlier run */

static const char *const image_exts[] = { "png", "jpg", "webp" };

char *publish_staging_name(const char *id, const char *host, int dest)
{
	return xasprintf(".%s@%s.%s", id, host, dest == SPOOL_DONE ? "done" : "failed");
}

/* PREFIX BODY@HOST SUFFIX, SUFFIX one for done/ and one for failed/, BODY and HOST not empty
 * (neither ids nor host ids hold an '@'): the destination, where the '@' and the suffix are. */
static bool split_name(const char *name, const char *prefix, const char *done, const char *failed,
		       const char **at, const char **end, int *dest)
{
	size_t len = strlen(name), plen = strlen(prefix), dlen = strlen(done), flen = strlen(failed);
	if (strncmp(name, prefix, plen))
		return false;
	if (len > plen + dlen && !strcmp(name + len - dlen, done))
		*dest = SPOOL_DONE, *end = name + len - dlen;
	else if (len > plen + flen && !strcmp(name + len - flen, failed))
		*dest = SPOOL_FAILED, *end = name + len - flen;
	else
		return false;
	return spool_split_at(name, plen, (size_t)(*end - name), at);
}

bool publish_parse_staging_name(const char *name, char **id, char **host, int *dest)
{
	const char *at, *end;
	if (!split_name(name, ".", ".done", ".failed", &at, &end, dest))
		return false;
	*id = xstrndup(name + 1, (size_t)(at - name - 1));
	*host = xstrndup(at + 1, (size_t)(end - at - 1));
	return true;
}

/* Errors that another try cannot mend; the others (ENOSPC, EDQUOT, EIO, ...) may pass. */
static enum publish_rc classify(int err)
{
	switch (err) {
	case EISDIR: case ENOTDIR: case ENOTEMPTY: case EEXIST: case ELOOP: case ENAMETOOLONG:
	case EINVAL: case EXDEV: case EMLINK:
		return PUBLISH_PERMANENT;
	default:
		return PUBLISH_RETRY;
	}
}

struct pub {
	struct spool *sp;
	int runfd;
	const int *dirs;         /* done/ and failed/ as pinned for its batch (pin_dirs) */
	const char *staging;     /* its name in running/ */
	const char *id;
	enum spool_dir dest;
	int aside;               /* old.N names used */
	bool search_images;      /* an earlier run is known: look for its images (ID.N.ext) */
	bool dest_job_known;     /* check_targets looked for DEST/ID.json: dest_job says if it */
	bool dest_job;           /* was there, so clear_job_files need not look again */
	char *err;
	size_t errsize;
};

static char *staged(const struct pub *p, const char *name)
{
	return xasprintf("%s/%s", p->staging, name);
}

/* A batch's own descriptors of done/ and failed/, held from its start to its end:
 * spool_recheck_dirs may swap a new directory in under sp->fd's numbers (dup3) at any moment,
 * and a job whose images went into the old done/ and its job file into the new would be
 * published without a result. Pins (spool_pin): the thread keeps them from batch to batch, so
 * a batch makes no system call for them unless a rescan swapped one in since. 0, or -1 with
 * errno. */
static int pin_dirs(struct spool *sp, int pins[2])
{
	pins[0] = spool_pin(sp, SPOOL_DONE);
	pins[1] = pins[0] < 0 ? -1 : spool_pin(sp, SPOOL_FAILED);
	if (pins[1] >= 0)
		return 0;
	if (pins[0] >= 0)
		spool_unpin(sp, SPOOL_DONE, pins[0]);
	pins[0] = -1;
	return -1;
}

static void unpin_dirs(struct spool *sp, int pins[2])
{
	if (pins[0] >= 0)
		spool_unpin(sp, SPOOL_DONE, pins[0]);
	if (pins[1] >= 0)
		spool_unpin(sp, SPOOL_FAILED, pins[1]);
}

/* Its pinned descriptor of done/ or failed/. */
static int dir_fd(const struct pub *p, enum spool_dir d)
{
	return p->dirs[d == SPOOL_FAILED];
}

/* ENOENT on a path inside the staging directory: fenced if the directory is gone. */
static enum publish_rc gone_or(const struct pub *p, enum publish_rc otherwise)
{
	if (spool_exists(p->runfd, p->staging))
		return otherwise;
	xsnprintf(p->err, p->errsize, "another daemon took the publication over (our lease ran out)");
	return PUBLISH_FENCED;
}

/* ENOENT renaming staged file from (a path in the staging directory) to dest/name: moved in
 * before a crash only if it is no longer staged. Still staged, it is dest that is gone (a
 * removed done/, whose rename fails so): tried again, in the directory made in its place once
 * a rescan has found it. */
static enum publish_rc move_in_gone(const struct pub *p, const char *from, const char *name)
{
	struct stat st;
	if (fstatat(p->runfd, from, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
		return gone_or(p, PUBLISH_OK);
	xsnprintf(p->err, p->errsize, "cannot move '%s' into %s/: the directory this daemon opened "
		  "is gone (removed); make '%s/' again, it is used from the next rescan on", name,
		  spool_dir_name(p->dest), spool_dir_name(p->dest));
	return PUBLISH_RETRY;
}

static enum publish_rc failed_to(const struct pub *p, const char *what, int dirfd_dir,
				 const char *name, int err)
{
	xsnprintf(p->err, p->errsize, "cannot %s '%s/%s': %s", what, spool_dir_name(dirfd_dir), name,
		  strerror(err));
	return classify(err);
}

/* An earlier run's file at dir/name goes into the staging directory (removed with it). A
 * directory there was never made by the daemon: it is left alone. */
static enum publish_rc put_aside(struct pub *p, enum spool_dir dir, const char *name)
{
	struct stat st;
	int dirfd = dir_fd(p, dir);
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
		return PUBLISH_OK;
	char old[NAME_MAX + 1];
	xsnprintf(old, sizeof(old), "%s.old.%d", p->id, p->aside++);
	char *to = staged(p, old);
	int rc = renameat(dirfd, name, p->runfd, to);
	int err = errno;
	free(to);
	if (rc == 0)
		return PUBLISH_OK;
	if (err == ENOENT)
		return gone_or(p, PUBLISH_OK);
	return failed_to(p, "remove the earlier run's", dir, name, err);
}

static bool in_set(const char *name, char *const *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(set[i], name))
			return true;
	return false;
}

/* ID.ext and ID.N.ext in dir, except the names in keep. About a dozen lookups, so only made
 * when an earlier run is known (search_images): the daemon removes an earlier run's images
 * before its result and its job file before both, so images never stand without one of them. */
static enum publish_rc clear_images(struct pub *p, enum spool_dir dir, char *const *keep,
				    size_t n_keep)
{
	char name[NAME_MAX + 1];
	enum publish_rc rc = PUBLISH_OK;
	for (size_t e = 0; e < ARRAY_SIZE(image_exts) && rc == PUBLISH_OK; e++) {
		xsnprintf(name, sizeof(name), "%s.%s", p->id, image_exts[e]);
		if (!in_set(name, keep, n_keep))
			rc = put_aside(p, dir, name);
	}
	for (int n = 1; n <= IMAGES_MAX && rc == PUBLISH_OK; n++) {
		bool any = false;
		for (size_t e = 0; e < ARRAY_SIZE(image_exts) && rc == PUBLISH_OK; e++) {
			xsnprintf(name, sizeof(name), "%s.%d.%s", p->id, n, image_exts[e]);
			if (!spool_exists(dir_fd(p, dir), name))
				continue;
			any = true;
			if (!in_set(name, keep, n_keep))
				rc = put_aside(p, dir, name);
		}
		if (!any)
			break;
	}
	return rc;
}

/* A job is in exactly one state, and its directory holds only its own run's files: the earlier
 * run of this id leaves both terminal directories, its job files first (so no job file ever
 * stands beside files that are not its run's). Part 1, the job files: *moved says whether any
 * was there (their removal must then be durable before part 2). */
static enum publish_rc clear_job_files(struct pub *p, struct syncset *ss, bool *moved)
{
	enum spool_dir other = p->dest == SPOOL_DONE ? SPOOL_FAILED : SPOOL_DONE;
	char *job = xasprintf("%s.json", p->id);
	int before = p->aside;
	enum publish_rc rc = put_aside(p, other, job);
	if (rc == PUBLISH_OK && (!p->dest_job_known || p->dest_job))
		rc = put_aside(p, p->dest, job);
	free(job);
	if (p->aside != before) {
		*moved = true;
		p->search_images = true;
		syncset_dir(ss, dir_fd(p, other));
		syncset_dir(ss, dir_fd(p, p->dest));
	}
	return rc;
}

/* Part 2: the earlier run's images, then its result (so that a crash between them leaves the
 * result as evidence). keep: the new run's names in dest; the result there is replaced by the
 * new one, which comes in after the images. */
static enum publish_rc clear_rest(struct pub *p, char *const *keep, size_t n_keep)
{
	enum spool_dir other = p->dest == SPOOL_DONE ? SPOOL_FAILED : SPOOL_DONE;
	char *result = xasprintf("%s.result.json", p->id);
	bool other_result = spool_exists(dir_fd(p, other), result);
	enum publish_rc rc = PUBLISH_OK;
	if (p->search_images || other_result) {
		rc = clear_images(p, other, NULL, 0);
		if (rc == PUBLISH_OK)
			rc = clear_images(p, p->dest, keep, n_keep);
		if (rc == PUBLISH_OK)
			crash_point("publish:cleared-images");
	}
	if (rc == PUBLISH_OK && other_result)
		rc = put_aside(p, other, result);
	free(result);
	return rc;
}

/* The staged files named in names (images first, the result last); the job file comes after a
 * barrier (move_in_job). */
static enum publish_rc move_in_files(struct pub *p, char *const *names, size_t n,
				     struct syncset *ss)
{
	int destfd = dir_fd(p, p->dest);
	syncset_dir(ss, destfd);
	for (size_t i = 0; i < n; i++) {
		char *from = staged(p, names[i]);
		int rc = renameat(p->runfd, from, destfd, names[i]);
		int err = errno;
		enum publish_rc out = rc == 0 ? PUBLISH_OK
				      : err == ENOENT ? move_in_gone(p, from, names[i])
				      : failed_to(p, "move the result into", p->dest, names[i], err);
		free(from);
		if (out != PUBLISH_OK)
			return out;
	}
	return PUBLISH_OK;
}

/* The job file, once the images and result are durable in dest: the job is published. */
static enum publish_rc move_in_job(struct pub *p, struct syncset *ss)
{
	int destfd = dir_fd(p, p->dest);
	char *job = xasprintf("%s.json", p->id), *from = staged(p, job);
	int rc = renameat(p->runfd, from, destfd, job);
	int err = errno;
	enum publish_rc out = PUBLISH_OK;
	if (rc < 0 && err == ENOENT)
		out = move_in_gone(p, from, job);
	else if (rc < 0)
		out = failed_to(p, "move the job file into", p->dest, job, err);
	free(job);
	free(from);
	syncset_dir(ss, destfd);
	syncset_dir(ss, p->runfd);
	return out;
}

static void sweep(int runfd, const char *name, const struct strset *keep);

/* Empties and removes the staging directory, by paths through its name. After a publication
 * it is empty: one rmdir; only what is left (a fenced or earlier run's files) is listed. */
static void remove_staging(const struct pub *p)
{
	if (unlinkat(p->runfd, p->staging, AT_REMOVEDIR) == 0 || errno != ENOTEMPTY)
		return;
	sweep(p->runfd, p->staging, NULL);
}

/* The earlier run's files put aside (ID.old.N), once the publication no longer needs them. */
static void drop_aside(struct pub *p)
{
	char old[NAME_MAX + 1];
	for (int i = 0; i < p->aside; i++) {
		xsnprintf(old, sizeof(old), "%s.old.%d", p->id, i);
		char *path = staged(p, old);
		unlinkat(p->runfd, path, 0);
		free(path);
	}
	p->aside = 0;
}

/* in_place only while the job's records cannot say finished: once they may, a restart commits
 * what it finds staged, which must then never be half-written. */
static enum publish_rc write_staged(struct pub *p, const char *name, const void *data, size_t len,
				    int sfd, struct syncset *ss, bool in_place)
{
	if (spool_write_staged(p->sp, sfd, name, data, len, ss, in_place) == 0)
		return PUBLISH_OK;
	return failed_to(p, "write", SPOOL_RUNNING, name, errno);
}

/* A directory in the way of a name we must write would fail every try: say so before starting.
 * Any other file already there (our result's name, say) is an earlier run's. The job file's
 * name is the last of names: whether it is there is kept for clear_job_files. */
static enum publish_rc check_targets(struct pub *p, char *const *names, size_t n)
{
	struct stat st;
	p->dest_job_known = true;
	for (size_t i = 0; i < n; i++) {
		if (fstatat(dir_fd(p, p->dest), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		p->search_images = true;
		p->dest_job |= i == n - 1;
		if (S_ISDIR(st.st_mode)) {
			xsnprintf(p->err, p->errsize, "'%s/%s' is a directory, which the daemon never "
				  "makes: it cannot be replaced", spool_dir_name(p->dest), names[i]);
			return PUBLISH_PERMANENT;
		}
	}
	return PUBLISH_OK;
}

/* One job of a batch on its way. */
struct item {
	struct publish_job *job;
	struct pub p;
	char *staging;
	char **names;            /* images, result, job file */
	size_t n_names;
	int sfd;
	bool own_sfd;            /* else the batch's, borrowed */
	bool alone;              /* staged in a directory of its own (.ID@HOST.DEST): removed when
				  * the job is published; else in a batch's, shared */
	bool live;               /* still going: rc OK and not finished another way */
	bool staged;             /* files of its were written into the staging directory */
	bool committed;
	bool rewritten;          /* its records say finished: what it staged may be its reclaimer's */
	bool moved_in;           /* a resume: images and result were moved in before a crash */
	char records_tmp[NAME_MAX + 1];  /* its final records, written with the staging: put in */
	int64_t records_at;      /* place after the first barrier ("" once done or given up) */
};

/* What it staged stays for its reclaimer if its records say finished, else goes (clean_batch). */
static void fenced(struct item *it)
{
	xsnprintf(it->p.err, it->p.errsize, "the job was reclaimed by another daemon (our lease ran out)");
	it->job->rc = PUBLISH_FENCED;
	it->live = false;
}

static void stop(struct item *it, enum publish_rc rc)
{
	it->job->rc = rc;
	if (rc != PUBLISH_OK)
		it->live = false;
}

/* A barrier failed: nothing it covered is known to be durable, so every job still going is
 * tried again (a committed one resumes from its staging directory). names_only: the steps
 * since the last barrier changed names and wrote no bytes (syncset_order). */
static bool barrier(struct item *items, size_t n, struct syncset *ss, const char *what,
		    bool names_only)
{
	if ((names_only ? syncset_order(ss) : syncset_barrier(ss)) == 0)
		return true;
	int err = errno;
	for (size_t i = 0; i < n; i++) {
		if (!items[i].live)
			continue;
		xsnprintf(items[i].p.err, items[i].p.errsize, "cannot make the %s durable (%s): %s",
			  what, ss->whole_fs ? "syncfs" : "fsync", strerror(err));
		stop(&items[i], PUBLISH_RETRY);
	}
	return false;
}

/* A staging directory of one helper thread's batches for one destination, opened (and made,
 * the first time or after a takeover) when its first job needs it. */
struct batchdir {
	char *name;
	int fd;
	bool finished_in;        /* a retry finished a job committed there: removed if empty */
};

static void finish_staged(struct spool *sp, const int *dirs, const char *staging,
			  struct publish_job *j, bool drop_old);
static char *committed_staging(struct spool *sp, const char *id, int dest);

/* The first step of a job: not known gone, nothing in the way, its staging directory open. */
static void prepare(struct spool *sp, struct item *it, struct batchdir *bd)
{
	struct publish_job *j = it->job;
	/* Not a fence (the rewrite and the commit are, and find a job file that is gone): it
	 * spares a reclaimed job's staging, and finishes one committed before from there. */
	if (j->gone) {
		it->live = false;
		char *where = committed_staging(sp, j->id, j->dest);
		if (!where)
			return fenced(it);
		j->committed = true;   /* a retry after a failure past the commit */
		finish_staged(sp, it->p.dirs, where, j, true);
		bd->finished_in |= !strcmp(where, bd->name);
		free(where);
		return;
	}
	enum publish_rc rc = check_targets(&it->p, it->names, it->n_names);
	if (rc != PUBLISH_OK)
		return stop(it, rc);
	if (bd->fd < 0) {
		if (mkdirat(it->p.runfd, bd->name, 0777) < 0 && errno != EEXIST)
			return stop(it, failed_to(&it->p, "make", SPOOL_RUNNING, bd->name, errno));
		bd->fd = openat(it->p.runfd, bd->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (bd->fd < 0)
		return stop(it, failed_to(&it->p, "open", SPOOL_RUNNING, bd->name, errno));
	it->sfd = bd->fd;
}

/* Step 1: the images and the result, in the staging directory. */
static void stage(struct item *it, struct syncset *ss)
{
	struct publish_job *j = it->job;
	enum publish_rc rc = PUBLISH_OK;
	it->staged = true;
	for (size_t i = 0; i < j->n_images && rc == PUBLISH_OK; i++)
		rc = write_staged(&it->p, it->names[i], j->images[i].data, j->images[i].len, it->sfd,
				  ss, !j->records_final);
	if (rc == PUBLISH_OK)
		crash_point("publish:images");
	if (rc == PUBLISH_OK)
		rc = write_staged(&it->p, it->names[j->n_images], j->result_json,
				  strlen(j->result_json), it->sfd, ss, !j->records_final);
	/* The final records' bytes too, so that after the first barrier only names change. */
	if (rc == PUBLISH_OK && j->job_text &&
	    spool_write_temp_in(it->p.sp, SPOOL_RUNNING, j->running_name, j->job_text,
				strlen(j->job_text), ss, it->records_tmp, &it->records_at) < 0)
		rc = failed_to(&it->p, "write", SPOOL_RUNNING, j->running_name, errno);
	syncset_dir(ss, it->p.runfd);   /* the staging directory's own entry */
	stop(it, rc);
}

/* The job file's records get the final attempt and say the run is over: from here a restart
 * only commits and finishes what is staged (its records say "finished"). */
static void rewrite(struct spool *sp, struct item *it, struct syncset *ss)
{
	struct publish_job *j = it->job;
	bool done = !it->records_tmp[0] || spool_replace_in(sp, SPOOL_RUNNING, it->records_tmp,
							    j->running_name, it->records_at, ss) == 0;
	it->records_tmp[0] = '\0';   /* in place, or removed */
	if (done) {
		it->rewritten = true;
		return;
	}
	if (errno == ENOENT && !spool_exists(it->p.runfd, j->running_name))
		fenced(it);
	else
		stop(it, failed_to(&it->p, "write", SPOOL_RUNNING, j->running_name, errno));
}

/* Step 2, the commit: only the lease holder has running/ID@HOST.json to move. */
static void commit(struct item *it, struct syncset *ss)
{
	struct publish_job *j = it->job;
	char *job_staged = staged(&it->p, it->names[it->n_names - 1]);
	int moved = renameat(it->p.runfd, j->running_name, it->p.runfd, job_staged);
	int saved = errno;
	free(job_staged);
	if (moved < 0) {
		if (saved == ENOENT && !spool_exists(it->p.runfd, j->running_name))
			fenced(it);
		else
			stop(it, failed_to(&it->p, "move the job file from", SPOOL_RUNNING,
					   j->running_name, saved));
		return;
	}
	it->committed = true;
	j->committed = true;
	syncset_dir(ss, it->sfd);
	syncset_dir(ss, it->p.runfd);
	crash_point("publish:committed");
}

/* Steps 3 and 4 for committed jobs, a barrier between each kind of move: the earlier run's
 * job files leave, then its results and images; the new images and results come in; then the
 * job files. Each job's names are names[0..n_names - 2] (the job file is not among them). */
static void finish_committed(struct item *items, size_t n, struct syncset *ss)
{
	bool cleared = false;
	for (size_t i = 0; i < n; i++)
		if (items[i].live && !items[i].moved_in)
			stop(&items[i], clear_job_files(&items[i].p, ss, &cleared));
	if (cleared && !barrier(items, n, ss, "removal of an earlier run's job file", true))
		return;
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		if (!it->live || it->moved_in)
			continue;
		enum publish_rc rc = clear_rest(&it->p, it->names, it->n_names - 1);
		if (rc == PUBLISH_OK)
			rc = move_in_files(&it->p, it->names, it->n_names - 1, ss);
		stop(it, rc);
	}
	/* The images and results must be durable before a job file says its job is finished. */
	if (!barrier(items, n, ss, "images and results", true))
		return;
	crash_point("publish:moved-in");
	stop_point("publish:moved-in");   /* a test replaces done/ here */
	for (size_t i = 0; i < n; i++) {
		if (items[i].live) {
			stop(&items[i], move_in_job(&items[i].p, ss));
			crash_point("publish:job-moved");
		}
	}
	if (!barrier(items, n, ss, "job files", false))
		return;
	for (size_t i = 0; i < n; i++) {
		if (!items[i].live)
			continue;
		crash_point("publish:moved");
		if (items[i].alone)
			remove_staging(&items[i].p);
		else
			drop_aside(&items[i].p);
	}
}

static void item_begin(struct spool *sp, const int *dirs, struct item *it,
		       struct publish_job *j, const char *staging, bool search_images)
{
	memset(it, 0, sizeof(*it));
	it->job = j;
	it->staging = xstrdup(staging);
	it->p = (struct pub){ .sp = sp, .runfd = sp->fd[SPOOL_RUNNING], .dirs = dirs,
			      .staging = it->staging,
			      .id = j->id, .dest = (enum spool_dir)j->dest, .err = j->err,
			      .errsize = j->errsize, .search_images = search_images };
}

static void item_init(struct spool *sp, const int *dirs, struct item *it,
		      struct publish_job *j, const char *staging)
{
	item_begin(sp, dirs, it, j, staging, j->earlier_runs);
	it->n_names = j->n_images + 2;
	it->names = xcalloc(it->n_names, sizeof(*it->names));
	for (size_t i = 0; i < j->n_images; i++)
		it->names[i] = result_image_name(j->id, i, j->n_images, j->images[i].ext);
	it->names[j->n_images] = xasprintf("%s.result.json", j->id);
	it->names[j->n_images + 1] = xasprintf("%s.json", j->id);
	it->sfd = -1;
	it->live = true;
	j->rc = PUBLISH_OK;
	j->committed = false;
	j->err[0] = '\0';
}

static void item_release(struct item *it)
{
	if (it->own_sfd && it->sfd >= 0)
		close(it->sfd);
	for (size_t i = 0; i < it->n_names; i++)
		free(it->names[i]);
	free(it->names);
	free(it->staging);
}

static bool any_live(const struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (items[i].live)
			return true;
	return false;
}

/* After a pass, a batch's directory keeps only its committed jobs that are not finished (a retry
 * or a restart finishes them from there), and what a job reclaimed after its final records
 * staged: its reclaimer, who reads "finished" in them, takes those files out (spool-layout §10).
 * What any other job that dropped out before its commit staged is of no use: a retry stages it
 * again, a restart finishes the job from its saved response. */
static void clean_batch(struct item *it)
{
	if (it->records_tmp[0])   /* written with the staging, never put in place */
		unlinkat(it->p.runfd, it->records_tmp, 0);
	if (it->committed || !it->staged || (it->rewritten && it->job->rc == PUBLISH_FENCED))
		return;
	for (size_t i = 0; i + 1 < it->n_names; i++) {
		char *path = staged(&it->p, it->names[i]);
		unlinkat(it->p.runfd, path, 0);
		free(path);
	}
}

/* Each helper thread stages in directories of its own, numbered in the order the threads first
 * publish: running/.~SLOT@HOST.batch-done and .batch-failed, made for a pass and removed after
 * it unless a job stays there (heartbeated by publish_heartbeat meanwhile). */
static atomic_uint batch_slots;
static _Thread_local int batch_slot = -1;

void publish_batch(struct spool *sp, struct publish_job *const *jobs, size_t n, struct syncset *ss)
{
	if (batch_slot < 0)
		batch_slot = (int)atomic_fetch_add(&batch_slots, 1);
	struct batchdir bd[2] = {
		{ publish_batch_name(sp->host_id, (unsigned)batch_slot, SPOOL_DONE), -1, false },
		{ publish_batch_name(sp->host_id, (unsigned)batch_slot, SPOOL_FAILED), -1, false },
	};
	int pins[2];
	int pinned = pin_dirs(sp, pins), pin_err = errno;
	struct item *items = xcalloc(n ? n : 1, sizeof(*items));
	for (size_t i = 0; i < n; i++)
		item_init(sp, pins, &items[i], jobs[i], bd[jobs[i]->dest == SPOOL_FAILED].name);
	for (size_t i = 0; i < n; i++) {
		if (pinned < 0)
			stop(&items[i], failed_to(&items[i].p, "open", (enum spool_dir)jobs[i]->dest,
						  ".", pin_err));
		else
			prepare(sp, &items[i], &bd[jobs[i]->dest == SPOOL_FAILED]);
	}
	/* 1. Stage every job; one barrier makes all their files (and what the caller wrote into
	 * ss before, the outbox) durable. */
	for (size_t i = 0; i < n; i++)
		if (items[i].live)
			stage(&items[i], ss);
	if (any_live(items, n) && barrier(items, n, ss, "staged images and results", false)) {
		crash_point("publish:result");
		for (size_t i = 0; i < n; i++)
			if (items[i].live)
				rewrite(sp, &items[i], ss);
		if (any_live(items, n) && barrier(items, n, ss, "final job records", true)) {
			crash_point("publish:rewritten");
			/* 2. Commit each; its durability comes with the next barrier, before any job
			 * file reaches done/ or failed/. */
			for (size_t i = 0; i < n; i++)
				if (items[i].live)
					commit(&items[i], ss);
			finish_committed(items, n, ss);
		}
	}
	for (size_t i = 0; i < n; i++) {
		clean_batch(&items[i]);
		item_release(&items[i]);
	}
	free(items);
	unpin_dirs(sp, pins);
	/* Removed once empty: what stays (a job not finished past its commit) keeps it. */
	for (size_t d = 0; d < ARRAY_SIZE(bd); d++) {
		if (bd[d].fd >= 0)
			close(bd[d].fd);
		if (bd[d].fd >= 0 || bd[d].finished_in)
			unlinkat(sp->fd[SPOOL_RUNNING], bd[d].name, AT_REMOVEDIR);
		free(bd[d].name);
	}
}

/* The "images" of a result of which head holds the first len bytes: the daemon writes its own
 * fields first, "images" among them at the start of a line, and the client's metadata last, so
 * a result's first RESULT_HEADROOM bytes hold them, however large it is (the whole is parsed
 * only when it is all there). NULL when head does not show them (not the daemon's layout). */
static json_t *images_in_head(const char *head, size_t len, bool whole)
{
	if (whole) {
		json_t *doc = json_loadb(head, len, 0, NULL);
		json_t *images = json_incref(json_object_get(doc, "images"));
		json_decref(doc);
		return images;
	}
	/* No string holds a raw newline: this is the top level's member, the first one so named. */
	static const char key[] = "\n  \"images\": ";
	const char *at = memmem(head, len, key, strlen(key));
	if (!at)
		return NULL;
	at += strlen(key);
	json_t *images = json_loadb(at, len - (size_t)(at - head), JSON_DISABLE_EOF_CHECK, NULL);
	if (json_is_array(images))
		return images;
	json_decref(images);
	return NULL;
}

/* The new run's names from the result staged in running/STAGING (open as sfd, or -1 with
 * errno sfd_err): its images, then the result, with room for one name more. NULL with *err:
 * ENOENT only if the result is not there (moved in before a crash, or lost); anything else (no
 * fd left, EIO, ESTALE, a result over the read cap) says nothing of where the files are. Only
 * the result's beginning is read (images_in_head), unless it is not laid out as ours. */
static char **staged_names(const char *id, int runfd, const char *staging, int sfd, int sfd_err,
			   size_t *n, int *err)
{
	char *result = xasprintf("%s.result.json", id);
	struct buf b;
	struct stat st;
	char **names = NULL;
	json_t *images = NULL;
	enum spool_read rr = SPOOL_READ_ERROR;
	buf_init(&b, RESULT_READ_MAX);
	*n = 0;
	*err = sfd_err;
	/* Two passes at most: the head, then the whole, taken as whole whatever its length (a
	 * file whose size changed since fstat, or an NFS or sshfs attribute cache, would else be
	 * read whole again on every pass). */
	for (int pass = 0; pass < 2 && sfd >= 0; pass++) {
		rr = spool_read_head(sfd, result, RESULT_READ_MAX, pass ? SIZE_MAX : RESULT_HEADROOM,
				     &b, &st);
		*err = rr == SPOOL_READ_GONE ? ENOENT : rr == SPOOL_READ_TOO_BIG ? EFBIG
		       : rr == SPOOL_READ_ERROR ? errno : EINVAL;
		bool whole = rr == SPOOL_READ_OK && (pass || b.len == (size_t)st.st_size);
		if (rr != SPOOL_READ_OK || (images = images_in_head(b.data, b.len, whole)) || whole)
			break;
	}
	if (rr == SPOOL_READ_OK) {
		json_t *v;
		size_t i;
		names = xcalloc(json_array_size(images) + 2, sizeof(*names));
		json_array_foreach(images, i, v) {
			const char *name = json_string_value(v);
			if (name && name[0] != '.' && !strchr(name, '/'))
				names[(*n)++] = xstrdup(name);
		}
		names[(*n)++] = xstrdup(result);
		json_decref(images);
		*err = 0;
	} else if (*err == ENOENT || sfd < 0) {
		/* Gone only if a look by its path says so: the directory itself may be gone too. */
		char *path = xasprintf("%s/%s", staging, result);
		*err = fstatat(runfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (sfd < 0 ? sfd_err : EIO)
		       : errno;
		free(path);
	}
	buf_release(&b);
	free(result);
	return names;
}

/* A publication staged in running/staging with no job in memory (a restart, a takeover): its
 * names come from its staged result, the job file's last; moved_in when the result is no longer
 * staged. A result that cannot be read is no evidence of that: the job is tried again, its
 * staging left alone. */
static void item_staged(struct spool *sp, const int *dirs, struct item *it,
			struct publish_job *j, const char *staging)
{
	/* A crash may have come between an earlier run's images and its result: search in full. */
	item_begin(sp, dirs, it, j, staging, true);
	it->sfd = openat(it->p.runfd, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int err = errno;
	it->own_sfd = true;
	it->alone = !publish_is_batch_name(staging);
	it->names = staged_names(j->id, it->p.runfd, staging, it->sfd, err, &it->n_names, &err);
	it->moved_in = !it->names && err == ENOENT;
	if (!it->names)
		it->names = xcalloc(1, sizeof(*it->names));
	it->names[it->n_names++] = xasprintf("%s.json", j->id);
	it->live = true;
	j->rc = PUBLISH_OK;
	j->err[0] = '\0';
	if (err && err != ENOENT) {
		xsnprintf(j->err, j->errsize, "cannot read its staged result in 'running/%s': %s",
			  staging, strerror(err));
		j->rc = PUBLISH_RETRY;
		it->live = false;
	}
}

/* Whether what is staged can be committed: the result is JSON whose "images" are file names
 * of the staging directory, each a regular file, not empty. */
static bool staged_whole(int sfd, const struct buf *b, char *why, size_t whysize)
{
	json_error_t jerr;
	json_t *doc = json_loadb(b->data, b->len, 0, &jerr), *images = json_object_get(doc, "images"), *v;
	struct stat st;
	size_t i;
	bool whole = json_is_array(images);
	if (!doc)
		xsnprintf(why, whysize, "its result is not JSON (%zu bytes): %s", b->len, jerr.text);
	else if (!whole)
		xsnprintf(why, whysize, "its result has no \"images\"");
	json_array_foreach(images, i, v) {
		const char *name = json_string_value(v);
		if (!whole)
			break;
		whole = name && name[0] != '.' && !strchr(name, '/') &&
			fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
			st.st_size > 0;
		if (!whole)
			xsnprintf(why, whysize, "its image '%s' is not there whole",
				  name ? name : "(not a string)");
	}
	json_decref(doc);
	return whole;
}

enum publish_staged publish_staged_state(struct spool *sp, const char *id, int dest, char *why,
					 size_t whysize)
{
	char *staging = publish_staging_name(id, sp->host_id, dest);
	char *result = xasprintf("%s.result.json", id);
	int sfd = openat(sp->fd[SPOOL_RUNNING], staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct buf b;
	struct stat st;
	buf_init(&b, RESULT_READ_MAX);
	enum spool_read rr = sfd < 0 ? (errno == ENOENT ? SPOOL_READ_GONE : SPOOL_READ_ERROR)
			     : spool_read_file(sfd, result, RESULT_READ_MAX, &b, &st);
	enum publish_staged state = PUBLISH_STAGED_WHOLE;
	why[0] = '\0';
	if (rr == SPOOL_READ_GONE)
		state = PUBLISH_STAGED_NONE;
	else if (rr == SPOOL_READ_OK)
		state = staged_whole(sfd, &b, why, whysize) ? PUBLISH_STAGED_WHOLE : PUBLISH_STAGED_BROKEN;
	/* Anything else (EIO, no fd left) says nothing of it: its commit says why it waits. */
	buf_release(&b);
	if (sfd >= 0)
		close(sfd);
	free(result);
	free(staging);
	return state;
}

bool publish_job_in_running(struct spool *sp, const char *id, const char *host)
{
	char *running = xasprintf("%s@%s.json", id, host);
	bool is = spool_exists(sp->fd[SPOOL_RUNNING], running);
	free(running);
	return is;
}

/* The commit and the rest, exactly as in a batch (commit(), finish_committed()). */
enum publish_rc publish_commit_staged(struct spool *sp, const char *id, const char *running_name,
				      int dest, char *err, size_t errsize)
{
	char *staging = publish_staging_name(id, sp->host_id, dest);
	struct publish_job j = { .dest = dest, .id = id, .running_name = running_name, .err = err,
				 .errsize = errsize };
	struct item it;
	int pins[2];
	int pinned = pin_dirs(sp, pins), pin_err = errno;
	item_staged(sp, pins, &it, &j, staging);
	if (it.live && pinned < 0) {
		j.rc = failed_to(&it.p, "open", (enum spool_dir)dest, ".", pin_err);
	} else if (!it.live) {
		;   /* j.rc says why */
	} else if (it.moved_in) {
		xsnprintf(err, errsize, "nothing is staged in 'running/%s'", staging);
		j.rc = PUBLISH_PERMANENT;
	} else {
		struct syncset ss;
		spool_syncset(sp, &ss, 1);
		commit(&it, &ss);
		finish_committed(&it, 1, &ss);
		syncset_release(&ss);
	}
	item_release(&it);
	unpin_dirs(sp, pins);
	free(staging);
	return j.rc;
}

enum publish_rc publish_resume(struct spool *sp, const char *staging_name, char *err,
			       size_t errsize)
{
	char *id, *host;
	int dest;
	if (!publish_parse_staging_name(staging_name, &id, &host, &dest)) {
		xsnprintf(err, errsize, "'running/%s' is not a staging directory", staging_name);
		return PUBLISH_PERMANENT;
	}
	int runfd = sp->fd[SPOOL_RUNNING];
	struct publish_job j = { .dest = dest, .id = id, .err = err, .errsize = errsize };
	char *job_staged = xasprintf("%s/%s.json", staging_name, id);
	if (spool_exists(runfd, job_staged)) {
		finish_staged(sp, NULL, staging_name, &j, false);
	} else {
		/* Not committed. While its job is in running/ the staged files may still serve
		 * (publish_commit_staged); else (reclaimed, or moved in before a crash) they go. */
		struct pub p = { .sp = sp, .runfd = runfd, .staging = staging_name, .id = id };
		if (!publish_job_in_running(sp, id, host))
			remove_staging(&p);
	}
	free(job_staged);
	free(id);
	free(host);
	return j.rc;
}

/* Every ID.old.N in a batch's directory: a try that failed past the commit may have put more
 * aside than the one that finishes the job (which starts counting at 0 again) dropped. */
static void drop_all_aside(int runfd, const char *staging, const char *id)
{
	int fd = openat(runfd, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	char *prefix = xasprintf("%s.old.", id);
	struct dirent *de;
	while ((de = readdir(dir)))
		if (!strncmp(de->d_name, prefix, strlen(prefix)))
			unlinkat(dirfd(dir), de->d_name, 0);
	free(prefix);
	closedir(dir);
}

/* dirs: its batch's pinned done/ and failed/, or NULL to pin its own. drop_old: a batch's
 * directory that no sweep empties next (a retry, a rescan of one in use) loses the job's every
 * ID.old.N. */
static void finish_staged(struct spool *sp, const int *dirs, const char *staging,
			  struct publish_job *j, bool drop_old)
{
	struct item it;
	struct syncset ss;
	int own[2] = { -1, -1 };
	int pinned = dirs ? 0 : pin_dirs(sp, own), pin_err = errno;
	item_staged(sp, dirs ? dirs : own, &it, j, staging);
	spool_syncset(sp, &ss, 1);
	if (it.live && pinned < 0) {
		j->rc = failed_to(&it.p, "open", (enum spool_dir)j->dest, ".", pin_err);
		it.live = false;
	}
	finish_committed(&it, 1, &ss);
	syncset_release(&ss);
	unpin_dirs(sp, own);
	if (j->rc == PUBLISH_OK && !it.alone && drop_old)
		drop_all_aside(sp->fd[SPOOL_RUNNING], staging, j->id);
	item_release(&it);
}

static const char *dest_suffix(int dest)
{
	return dest == SPOOL_DONE ? "done" : "failed";
}

char *publish_batch_name(const char *host, unsigned slot, int dest)
{
	return xasprintf(".~%u@%s.batch-%s", slot, host, dest_suffix(dest));
}

bool publish_parse_batch_name(const char *name, char **host, int *dest)
{
	const char *at, *end;
	int d;
	if (!split_name(name, ".~", ".batch-done", ".batch-failed", &at, &end, &d))
		return false;
	if (host)
		*host = xstrndup(at + 1, (size_t)(end - at - 1));
	if (dest)
		*dest = d;
	return true;
}

bool publish_is_batch_name(const char *name)
{
	return publish_parse_batch_name(name, NULL, NULL);
}

unsigned publish_batch_slots(void)
{
	return atomic_load(&batch_slots);
}

/* Batch directories of ours that a resume left jobs in (taken over, or of a slot this process
 * does not use): heartbeated with the slots' and tried again at each rescan until empty. Only
 * the loop thread (resumes, heartbeats) uses it. */
static struct strset kept_batches;
static bool kept_init;

static void keep_batch(const char *name, bool left)
{
	if (!kept_init) {
		strset_init(&kept_batches);
		kept_init = true;
	}
	if (left)
		strset_add(&kept_batches, name);
	else
		strset_del(&kept_batches, name);
}

/* Batch directories of ours where a resume left a committed job that no task holds (or that
 * could not be listed): only these are looked into again while a helper thread may be staging
 * in them. A task's own committed job is its to finish. Loop thread only. */
static struct strset orphaned_batches;

static void mark_orphans(const char *name, bool orphans)
{
	if (!orphaned_batches.cap)
		strset_init(&orphaned_batches);
	if (orphans)
		strset_add(&orphaned_batches, name);
	else
		strset_del(&orphaned_batches, name);
}

void publish_heartbeat(struct spool *sp)
{
	for (unsigned slot = 0; slot < publish_batch_slots(); slot++) {
		for (int d = SPOOL_DONE; d <= SPOOL_FAILED; d++) {
			char *name = publish_batch_name(sp->host_id, slot, d);
			utimensat(sp->fd[SPOOL_RUNNING], name, NULL, AT_SYMLINK_NOFOLLOW);
			free(name);
		}
	}
	for (size_t i = 0; kept_init && i < kept_batches.cap; i++)
		if (kept_batches.slots[i])
			utimensat(sp->fd[SPOOL_RUNNING], kept_batches.slots[i], NULL,
				  AT_SYMLINK_NOFOLLOW);
}

char *publish_taken_name(struct spool *sp, const char *from_host, int dest)
{
	unsigned seq;
	long pid = spool_temp_unique(&seq);
	return xasprintf(".~t%ld-%08x.%s@%s.batch-%s", pid, seq, from_host, sp->host_id,
			 dest_suffix(dest));
}

char *publish_batch_jobs_host(const char *name)
{
	char *host;
	if (!publish_parse_batch_name(name, &host, NULL))
		return NULL;
	const char *at = strchr(name, '@'), *dot;
	if (name[2] == 't' && (dot = memchr(name + 3, '.', (size_t)(at - name - 3))) && dot + 1 < at) {
		free(host);
		return xstrndup(dot + 1, (size_t)(at - dot - 1));
	}
	return host;
}

/* The staging directory that holds id's committed job file: its own, or one of our batches'
 * (a job stays in its batch's directory after a failure past its commit). NULL if none. */
static char *committed_staging(struct spool *sp, const char *id, int dest)
{
	int runfd = sp->fd[SPOOL_RUNNING];
	unsigned slots = publish_batch_slots();
	for (unsigned slot = 0; slot <= slots; slot++) {
		char *dir = slot == slots ? publish_staging_name(id, sp->host_id, dest)
					  : publish_batch_name(sp->host_id, slot, dest);
		char *job = xasprintf("%s/%s.json", dir, id);
		bool there = spool_exists(runfd, job);
		free(job);
		if (there)
			return dir;
		free(dir);
	}
	return NULL;
}

/* Gives a job not committed the files it staged in a batch's directory in a directory of its
 * own, running/.ID@HOST.DEST, as if it had been published alone: there its restart commits
 * them, or a reclaimer takes them along with its job file. The images first: the result, last,
 * says the job is staged there. */
static int split_off(struct spool *sp, const char *batch, const char *id, const char *host,
		     int dest)
{
	int runfd = sp->fd[SPOOL_RUNNING], rc = 0;
	char *alone = publish_staging_name(id, host, dest);
	int bfd = openat(runfd, batch, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	size_t n = 0;
	int err = errno;
	char **names = staged_names(id, runfd, batch, bfd, err, &n, &err);
	if (!names)
		errno = err, rc = -1;
	else if (mkdirat(runfd, alone, 0777) < 0 && errno != EEXIST)
		rc = -1;
	int afd = rc == 0 ? openat(runfd, alone, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	for (size_t i = 0; afd >= 0 && i < n && rc == 0; i++)
		if (renameat(bfd, names[i], afd, names[i]) < 0 && errno != ENOENT)
			rc = -1;
	/* Durable before the batch's directory goes. */
	if (rc == 0 && (afd < 0 || fsync(afd) < 0 || fsync(bfd) < 0 || fsync(runfd) < 0))
		rc = -1;
	int saved = errno;
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (afd >= 0)
		close(afd);
	if (bfd >= 0)
		close(bfd);
	free(alone);
	errno = saved;
	return rc;
}

/* Whether running/name's records say its run is over: only then does it need what it staged
 * (the restart or the reclaimer commits that); otherwise it is published afresh. */
static bool records_finished(struct spool *sp, const char *name)
{
	struct buf b;
	struct stat st;
	bool finished = false;
	buf_init(&b, JOB_READ_MAX);
	if (spool_read_file(sp->fd[SPOOL_RUNNING], name, JOB_READ_MAX, &b, &st) == SPOOL_READ_OK) {
		json_t *doc = json_loadb(b.data, b.len, 0, NULL);
		const char *f = json_string_value(json_object_get(json_object_get(doc, "imgspool"),
								  "finished"));
		finished = f && *f;
		json_decref(doc);
	}
	buf_release(&b);
	return finished;
}

/* Whether name is a file of one of the jobs in set (ID.json, ID.result.json, ID.ext, ID.N.ext,
 * ID.old.N: all start with "ID."). No key of set was ever deleted. */
static bool owned(const struct strset *set, const char *name)
{
	for (size_t i = 0; i < set->cap; i++) {
		const char *id = set->slots[i];
		size_t len = id ? strlen(id) : 0;
		if (id && !strncmp(name, id, len) && name[len] == '.')
			return true;
	}
	return false;
}

int publish_list_batch(struct spool *sp, const char *name, struct strset *committed,
		       struct strset *staged_ids)
{
	int fd = openat(sp->fd[SPOOL_RUNNING], name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		size_t len = strlen(de->d_name);
		bool result = len > 12 && !strcmp(de->d_name + len - 12, ".result.json");
		if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".json") ||
		    (result && !staged_ids))
			continue;
		char *id = xstrndup(de->d_name, len - (result ? 12 : 5));
		strset_add(result ? staged_ids : committed, id);
		free(id);
	}
	closedir(dir);
	return 0;
}

/* Removes what is in running/name but the files of the jobs in keep (NULL: none), by paths
 * through its name, then the directory itself if that leaves it empty. */
static void sweep(int runfd, const char *name, const struct strset *keep)
{
	int fd = openat(runfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (keep && owned(keep, de->d_name)))
			continue;
		char *path = xasprintf("%s/%s", name, de->d_name);
		unlinkat(runfd, path, 0);
		free(path);
	}
	closedir(dir);
	unlinkat(runfd, name, AT_REMOVEDIR);
}

/* Whose job file running/ID@HOST.json (HOST: the batch's jobs' host, else us, who may have
 * reclaimed it) says its run is finished: that host, else NULL. */
static const char *finished_in_running(struct spool *sp, const char *id, const char *host)
{
	const char *hosts[2] = { host, sp->host_id };
	for (size_t i = 0; i < ARRAY_SIZE(hosts); i++) {
		char *running = xasprintf("%s@%s.json", id, hosts[i]);
		bool finished = records_finished(sp, running);
		free(running);
		if (finished)
			return hosts[i];
		if (!strcmp(host, sp->host_id))
			break;
	}
	return NULL;
}

/* N of .~N@HOST.batch-DEST, else (taken over) UINT_MAX. */
static unsigned batch_slot_of(const char *name)
{
	char *end;
	unsigned long n = strtoul(name + 2, &end, 10);
	return name[2] >= '0' && name[2] <= '9' && *end == '@' && n < UINT_MAX ? (unsigned)n
									      : UINT_MAX;
}

bool publish_resume_batch(struct spool *sp, const char *name, const struct strset *held,
			  bool in_use)
{
	char *bhost;
	int dest;
	bool left = true;
	if (!publish_parse_batch_name(name, &bhost, &dest))
		return false;
	if (in_use && !(orphaned_batches.cap && strset_has(&orphaned_batches, name))) {
		free(bhost);
		return true;   /* nothing in it but what tasks hold: not even listed */
	}
	bool orphans = false;
	char *host = publish_batch_jobs_host(name);
	struct strset committed, staged_ids, unfinished;
	strset_init(&committed);
	strset_init(&staged_ids);
	strset_init(&unfinished);
	if (publish_list_batch(sp, name, &committed, in_use ? NULL : &staged_ids) < 0) {
		left = orphans = errno != ENOENT;
		goto out;
	}
	char err[512];
	for (size_t i = 0; i < committed.cap; i++) {
		if (!committed.slots[i])
			continue;
		if (held && strset_has(held, committed.slots[i])) {
			strset_add(&unfinished, committed.slots[i]);   /* its task finishes it */
			continue;
		}
		struct publish_job j = { .dest = dest, .id = committed.slots[i], .err = err,
					 .errsize = sizeof(err) };
		finish_staged(sp, NULL, name, &j, in_use);   /* else the sweep below takes them */
		if (j.rc == PUBLISH_OK) {
			log_job(LOG_INFO, j.id, "publication finished after a restart or takeover");
		} else {
			log_job(LOG_ERROR, j.id, "cannot finish its publication (staged in 'running/%s'): "
				"%s", name, err);
			strset_add(&unfinished, j.id);
			orphans = true;
		}
		crash_point("publish:batch-finished");
	}
	/* A directory a helper thread may be staging in: its other files are that pass's. */
	if (in_use)
		goto out;
	for (size_t i = 0; i < staged_ids.cap; i++) {
		const char *id = staged_ids.slots[i];
		if (!id || strset_has(&committed, id))
			continue;   /* finished above */
		const char *whose = finished_in_running(sp, id, host);
		if (!whose)
			continue;   /* its files go: its job is gone, or is to be staged afresh */
		if (split_off(sp, name, id, whose, dest) < 0) {
			log_job(LOG_ERROR, id, "cannot move its staged files out of 'running/%s': %s",
				name, strerror(errno));
			strset_add(&unfinished, id);
		}
		crash_point("publish:split");
	}
	sweep(sp->fd[SPOOL_RUNNING], name, &unfinished);
out:
	/* A slot no thread of ours has used yet: removed once empty (a thread that takes it up
	 * meanwhile makes it again, or tries its job again). */
	if (in_use && left && committed.count && batch_slot_of(name) >= publish_batch_slots())
		unlinkat(sp->fd[SPOOL_RUNNING], name, AT_REMOVEDIR);
	if (left)
		left = spool_exists(sp->fd[SPOOL_RUNNING], name);
	keep_batch(name, left && batch_slot_of(name) >= publish_batch_slots());   /* else beaten */
	mark_orphans(name, left && orphans);
	strset_release(&committed);
	strset_release(&staged_ids);
	strset_release(&unfinished);
	free(host);
	free(bhost);
	return left;
}

bool publish_take_staged(struct spool *sp, const char *batch, const char *id, const char *owner,
			 const char *running_name)
{
	int dest;
	char *host = publish_batch_jobs_host(batch), *bhost = NULL;
	bool took = false;
	char *result = xasprintf("%s/%s.result.json", batch, id);
	/* Only from the owner's own slots': one another host took over is that host's to sort. */
	if (host && !strcmp(host, owner) && publish_parse_batch_name(batch, &bhost, &dest) &&
	    !strcmp(bhost, owner) &&
	    spool_exists(sp->fd[SPOOL_RUNNING], result) && records_finished(sp, running_name)) {
		if (split_off(sp, batch, id, sp->host_id, dest) == 0)
			took = true;
		else
			log_job(LOG_ERROR, id, "cannot move its staged files out of 'running/%s': %s",
				batch, strerror(errno));
	}
	free(result);
	free(bhost);
	free(host);
	return took;
}
