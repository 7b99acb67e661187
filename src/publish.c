/* publish.c - finished jobs' way into done/ or failed/, fenced, several jobs at once (see
 * publish.h).
 *
 *   1. stage:  running/.ID@HOST.DEST/ gets the images and ID.result.json; the job file in
 *              running/ gets its final records;
 *   2. commit: rename(running/ID@HOST.json, running/.ID@HOST.DEST/ID.json); ENOENT = fenced;
 *   3. clear:  the earlier run of the same id leaves done/ and failed/: job files first, then
 *              images, then results, each renamed into the staging directory (old.N); images
 *              are looked for only where there is evidence of an earlier run (search_images);
 *   4. move in: images, then the result, a barrier, then the job file: DEST/ID.json;
 *   5. the staging directory is emptied and removed.
 *
 * A batch does each step for all its jobs, then one barrier of its syncset (syncset.h) for all:
 * after the staged files, after the final records, after the images and results are in DEST,
 * after the job files. A job whose step fails drops out of the batch; a failed barrier fails
 * every job still in it (each is tried again, or resumed past its commit).
 *
 * Steps 3-5 only rename to or from paths inside the staging directory, by name: once another
 * daemon has renamed that directory to its own name (it took a dead publisher's job over), they
 * all fail and change nothing. A crash after 2 is finished by publish_resume() at the restart;
 * before 2 the job is still in running/ and is published afresh, or, once its records say
 * "finished", committed from its staging directory, which a reclaimer takes along with the job
 * file (so a daemon fenced at its commit leaves that directory alone). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "publish.h"
#include "result.h"
#include "spool.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

#define RESULT_READ_MAX (4u << 20)    /* our own result document, read back by a resume */
#define IMAGES_MAX 10000              /* ID.N.ext looked for when clearing an earlier run */

static const char *const image_exts[] = { "png", "jpg", "webp" };

char *publish_staging_name(const char *id, const char *host, int dest)
{
	return xasprintf(".%s@%s.%s", id, host, dest == SPOOL_DONE ? "done" : "failed");
}

bool publish_parse_staging_name(const char *name, char **id, char **host, int *dest)
{
	size_t len = strlen(name), sfx;
	int d;
	if (name[0] != '.')
		return false;
	if (len > 6 && !strcmp(name + len - 5, ".done"))
		d = SPOOL_DONE, sfx = 5;
	else if (len > 8 && !strcmp(name + len - 7, ".failed"))
		d = SPOOL_FAILED, sfx = 7;
	else
		return false;
	char *body = xstrndup(name + 1, len - 1 - sfx);
	char *at = strchr(body, '@');   /* neither ids nor host ids hold an '@' */
	if (!at || at == body || !at[1] || strchr(at + 1, '@')) {
		free(body);
		return false;
	}
	*id = xstrndup(body, (size_t)(at - body));
	*host = xstrdup(at + 1);
	*dest = d;
	free(body);
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

/* ENOENT on a path inside the staging directory: fenced if the directory is gone. */
static enum publish_rc gone_or(const struct pub *p, enum publish_rc otherwise)
{
	if (spool_exists(p->runfd, p->staging))
		return otherwise;
	xsnprintf(p->err, p->errsize, "another daemon took the publication over (our lease ran out)");
	return PUBLISH_FENCED;
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
	int dirfd = p->sp->fd[dir];
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
		return PUBLISH_OK;
	char old[32];
	xsnprintf(old, sizeof(old), "old.%d", p->aside++);
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
			if (!spool_exists(p->sp->fd[dir], name))
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
		syncset_dir(ss, p->sp->fd[other]);
		syncset_dir(ss, p->sp->fd[p->dest]);
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
	bool other_result = spool_exists(p->sp->fd[other], result);
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
	int destfd = p->sp->fd[p->dest];
	syncset_dir(ss, destfd);
	for (size_t i = 0; i < n; i++) {
		char *from = staged(p, names[i]);
		int rc = renameat(p->runfd, from, destfd, names[i]);
		int err = errno;
		free(from);
		if (rc < 0 && err == ENOENT) {
			enum publish_rc g = gone_or(p, PUBLISH_OK);   /* else moved in before a crash */
			if (g != PUBLISH_OK)
				return g;
		} else if (rc < 0) {
			return failed_to(p, "move the result into", p->dest, names[i], err);
		}
	}
	return PUBLISH_OK;
}

/* The job file, once the images and result are durable in dest: the job is published. */
static enum publish_rc move_in_job(struct pub *p, struct syncset *ss)
{
	int destfd = p->sp->fd[p->dest];
	char *job = xasprintf("%s.json", p->id), *from = staged(p, job);
	int rc = renameat(p->runfd, from, destfd, job);
	int err = errno;
	enum publish_rc out = PUBLISH_OK;
	if (rc < 0 && err == ENOENT)
		out = gone_or(p, PUBLISH_OK);
	else if (rc < 0)
		out = failed_to(p, "move the job file into", p->dest, job, err);
	free(job);
	free(from);
	syncset_dir(ss, destfd);
	syncset_dir(ss, p->runfd);
	return out;
}

/* Empties and removes the staging directory, by paths through its name. After a publication
 * it is empty: one rmdir; only what is left (a fenced or earlier run's files) is listed. */
static void remove_staging(const struct pub *p)
{
	if (unlinkat(p->runfd, p->staging, AT_REMOVEDIR) == 0 || errno != ENOTEMPTY)
		return;
	int fd = openat(p->runfd, p->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char *path = staged(p, de->d_name);
		unlinkat(p->runfd, path, 0);
		free(path);
	}
	closedir(dir);
	unlinkat(p->runfd, p->staging, AT_REMOVEDIR);
}

static enum publish_rc write_staged(struct pub *p, const char *name, const void *data, size_t len,
				    int sfd, struct syncset *ss)
{
	if (spool_write_in(p->sp, sfd, name, data, len, ss) == 0)
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
		if (fstatat(p->sp->fd[p->dest], names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
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
	bool live;               /* still going: rc OK and not finished another way */
	bool committed;
	bool moved_in;           /* a resume: images and result were moved in before a crash */
};

/* staged: our staging directory is removed, unless the job file already has its final
 * records: a reclaimer then publishes the job from that directory (it takes it along). */
static void fenced(struct item *it, bool staged)
{
	xsnprintf(it->p.err, it->p.errsize, "the job was reclaimed by another daemon (our lease ran out)");
	it->job->rc = PUBLISH_FENCED;
	it->live = false;
	if (staged)
		remove_staging(&it->p);
}

static void stop(struct item *it, enum publish_rc rc)
{
	it->job->rc = rc;
	if (rc != PUBLISH_OK)
		it->live = false;
}

/* A barrier failed: nothing it covered is known to be durable, so every job still going is
 * tried again (a committed one resumes from its staging directory). */
static bool barrier(struct item *items, size_t n, struct syncset *ss, const char *what)
{
	if (syncset_barrier(ss) == 0)
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

/* The first step of a job: still ours, nothing in the way, its staging directory open. */
static void prepare(struct spool *sp, struct item *it)
{
	struct publish_job *j = it->job;
	/* Not a fence (the commit is): it spares a reclaimed job's staging. */
	if (!(j->ours_checked ? j->ours : spool_still_ours(sp, j->running_name))) {
		char *job_staged = staged(&it->p, it->names[it->n_names - 1]);
		bool committed = spool_exists(it->p.runfd, job_staged);
		free(job_staged);
		it->live = false;
		if (committed) {   /* a retry after a failure past the commit */
			j->committed = true;
			j->rc = publish_resume(sp, it->staging, j->err, j->errsize);
		}
		else
			fenced(it, false);
		return;
	}
	enum publish_rc rc = check_targets(&it->p, it->names, it->n_names);
	if (rc != PUBLISH_OK)
		return stop(it, rc);
	if (mkdirat(it->p.runfd, it->staging, 0777) < 0 && errno != EEXIST)
		return stop(it, failed_to(&it->p, "make", SPOOL_RUNNING, it->staging, errno));
	it->sfd = openat(it->p.runfd, it->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (it->sfd < 0)
		return stop(it, failed_to(&it->p, "open", SPOOL_RUNNING, it->staging, errno));
}

/* Step 1: the images and the result, in the staging directory. */
static void stage(struct item *it, struct syncset *ss)
{
	struct publish_job *j = it->job;
	enum publish_rc rc = PUBLISH_OK;
	for (size_t i = 0; i < j->n_images && rc == PUBLISH_OK; i++)
		rc = write_staged(&it->p, it->names[i], j->images[i].data, j->images[i].len, it->sfd, ss);
	if (rc == PUBLISH_OK)
		crash_point("publish:images");
	if (rc == PUBLISH_OK)
		rc = write_staged(&it->p, it->names[j->n_images], j->result_json,
				  strlen(j->result_json), it->sfd, ss);
	syncset_dir(ss, it->p.runfd);   /* the staging directory's own entry */
	stop(it, rc);
}

/* The job file's records get the final attempt and say the run is over: from here a restart
 * only commits and finishes what is staged (its records say "finished"). */
static void rewrite(struct spool *sp, struct item *it, struct syncset *ss)
{
	struct publish_job *j = it->job;
	if (!j->job_text || spool_rewrite_in(sp, SPOOL_RUNNING, j->running_name, j->job_text,
					     strlen(j->job_text), ss) == 0)
		return;
	if (errno == ENOENT && !spool_exists(it->p.runfd, j->running_name))
		fenced(it, true);
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
			fenced(it, false);   /* its records say "finished": the staging goes along */
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
	if (cleared && !barrier(items, n, ss, "removal of an earlier run's job file"))
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
	if (!barrier(items, n, ss, "images and results"))
		return;
	crash_point("publish:moved-in");
	for (size_t i = 0; i < n; i++) {
		if (items[i].live) {
			stop(&items[i], move_in_job(&items[i].p, ss));
			crash_point("publish:job-moved");
		}
	}
	if (!barrier(items, n, ss, "job files"))
		return;
	for (size_t i = 0; i < n; i++) {
		if (items[i].live) {
			crash_point("publish:moved");
			remove_staging(&items[i].p);
		}
	}
}

static void item_init(struct spool *sp, struct item *it, struct publish_job *j)
{
	memset(it, 0, sizeof(*it));
	it->job = j;
	it->staging = publish_staging_name(j->id, sp->host_id, j->dest);
	it->p = (struct pub){ .sp = sp, .runfd = sp->fd[SPOOL_RUNNING], .staging = it->staging,
			      .id = j->id, .dest = (enum spool_dir)j->dest, .err = j->err,
			      .errsize = j->errsize, .search_images = j->earlier_runs };
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
	if (it->sfd >= 0)
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

void publish_batch(struct spool *sp, struct publish_job *const *jobs, size_t n, struct syncset *ss)
{
	struct item *items = xcalloc(n ? n : 1, sizeof(*items));
	for (size_t i = 0; i < n; i++)
		item_init(sp, &items[i], jobs[i]);
	for (size_t i = 0; i < n; i++)
		prepare(sp, &items[i]);
	/* 1. Stage every job; one barrier makes all their files (and what the caller wrote into
	 * ss before, the outbox) durable. */
	for (size_t i = 0; i < n; i++)
		if (items[i].live)
			stage(&items[i], ss);
	if (any_live(items, n) && barrier(items, n, ss, "staged images and results")) {
		crash_point("publish:result");
		for (size_t i = 0; i < n; i++)
			if (items[i].live)
				rewrite(sp, &items[i], ss);
		if (any_live(items, n) && barrier(items, n, ss, "final job records")) {
			crash_point("publish:rewritten");
			/* 2. Commit each; its durability comes with the next barrier, before any job
			 * file reaches done/ or failed/. */
			for (size_t i = 0; i < n; i++)
				if (items[i].live)
					commit(&items[i], ss);
			finish_committed(items, n, ss);
		}
	}
	for (size_t i = 0; i < n; i++)
		item_release(&items[i]);
	free(items);
}

/* The new run's names from the result staged in sfd: its images, then the result, with room for
 * one name more (NULL if the result is not there: moved in before a crash, or lost). */
static char **staged_names(const char *id, int sfd, size_t *n)
{
	char *result = xasprintf("%s.result.json", id);
	struct buf b;
	struct stat st;
	char **names = NULL;
	buf_init(&b, RESULT_READ_MAX);
	*n = 0;
	if (sfd >= 0 && spool_read_file(sfd, result, RESULT_READ_MAX, &b, &st) == SPOOL_READ_OK) {
		json_t *doc = json_loadb(b.data, b.len, 0, NULL);
		json_t *images = json_object_get(doc, "images"), *v;
		size_t i;
		names = xcalloc(json_array_size(images) + 2, sizeof(*names));
		json_array_foreach(images, i, v) {
			const char *name = json_string_value(v);
			if (name && name[0] != '.' && !strchr(name, '/'))
				names[(*n)++] = xstrdup(name);
		}
		names[(*n)++] = xstrdup(result);
		json_decref(doc);
	}
	buf_release(&b);
	free(result);
	return names;
}

/* A publication staged in running/staging with no job in memory (a restart, a takeover): its
 * names come from its staged result, the job file's last; moved_in when the result is no longer
 * staged. */
static void item_staged(struct spool *sp, struct item *it, struct publish_job *j,
			const char *staging)
{
	memset(it, 0, sizeof(*it));
	it->job = j;
	it->staging = xstrdup(staging);
	/* A crash may have come between an earlier run's images and its result: search in full. */
	it->p = (struct pub){ .sp = sp, .runfd = sp->fd[SPOOL_RUNNING], .staging = it->staging,
			      .id = j->id, .dest = (enum spool_dir)j->dest, .err = j->err,
			      .errsize = j->errsize, .search_images = true };
	it->sfd = openat(it->p.runfd, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	it->names = staged_names(j->id, it->sfd, &it->n_names);
	it->moved_in = !it->names;
	if (!it->names)
		it->names = xcalloc(1, sizeof(*it->names));
	it->names[it->n_names++] = xasprintf("%s.json", j->id);
	it->live = true;
	j->rc = PUBLISH_OK;
	j->err[0] = '\0';
}

static char *staged_result_name(const char *id, const char *host, int dest)
{
	char *staging = publish_staging_name(id, host, dest);
	char *path = xasprintf("%s/%s.result.json", staging, id);
	free(staging);
	return path;
}

bool publish_is_staged(struct spool *sp, const char *id, int dest)
{
	char *result = staged_result_name(id, sp->host_id, dest);
	bool is = spool_exists(sp->fd[SPOOL_RUNNING], result);
	free(result);
	return is;
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
	item_staged(sp, &it, &j, staging);
	if (it.moved_in) {
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
		struct item it;
		struct syncset ss;
		item_staged(sp, &it, &j, staging_name);
		spool_syncset(sp, &ss, 1);
		finish_committed(&it, 1, &ss);
		syncset_release(&ss);
		item_release(&it);
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
