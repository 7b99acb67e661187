/* publish.c - a finished job's way into done/ or failed/, fenced (see publish.h).
 *
 *   1. stage:  running/.ID@HOST.DEST/ gets the images and ID.result.json, each fsynced;
 *   2. commit: rename(running/ID@HOST.json, running/.ID@HOST.DEST/ID.json); ENOENT = fenced;
 *   3. clear:  the earlier run of the same id leaves done/ and failed/: job files first, then
 *              results and images, each renamed into the staging directory (old.N);
 *   4. move in: images, then the result, fsync, then the job file: DEST/ID.json;
 *   5. the staging directory is emptied and removed.
 *
 * Steps 3-5 only rename to or from paths inside the staging directory, by name: once another
 * daemon has renamed that directory to its own name (it took a dead publisher's job over), they
 * all fail and change nothing. A crash after 2 is finished by publish_resume() at the restart;
 * before 2 the job is still in running/ and is published afresh. */
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

static bool exists(int dirfd, const char *name)
{
	struct stat st;
	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
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
	if (exists(p->runfd, p->staging))
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

/* ID.ext and ID.N.ext in dir, except the names in keep. */
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
			if (!exists(p->sp->fd[dir], name))
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
 * stands beside files that are not its run's). keep: the new run's names in dest. */
static enum publish_rc clear_earlier_run(struct pub *p, char *const *keep, size_t n_keep)
{
	enum spool_dir other = p->dest == SPOOL_DONE ? SPOOL_FAILED : SPOOL_DONE;
	char *job = xasprintf("%s.json", p->id), *result = xasprintf("%s.result.json", p->id);
	enum publish_rc rc = put_aside(p, other, job);
	if (rc == PUBLISH_OK)
		rc = put_aside(p, p->dest, job);
	if (rc == PUBLISH_OK && (fsync(p->sp->fd[other]) < 0 || fsync(p->sp->fd[p->dest]) < 0))
		rc = failed_to(p, "fsync", other, ".", errno);
	if (rc == PUBLISH_OK)
		rc = put_aside(p, other, result);
	if (rc == PUBLISH_OK)
		rc = clear_images(p, other, NULL, 0);
	if (rc == PUBLISH_OK)
		rc = clear_images(p, p->dest, keep, n_keep);
	free(job);
	free(result);
	return rc;
}

/* The staged files named in names (images first, the result last), then the job file. */
static enum publish_rc move_in(struct pub *p, char *const *names, size_t n)
{
	int destfd = p->sp->fd[p->dest];
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
	/* The images and result must be durable before the job file says the job is finished. */
	if (fsync(destfd) < 0)
		return failed_to(p, "fsync", p->dest, ".", errno);
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
	if (out == PUBLISH_OK && (fsync(destfd) < 0 || fsync(p->runfd) < 0))
		out = failed_to(p, "fsync", p->dest, ".", errno);
	return out;
}

/* Empties and removes the staging directory, by paths through its name. */
static void remove_staging(const struct pub *p)
{
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
				    int sfd)
{
	if (spool_write_at(p->sp, sfd, name, data, len) == 0)
		return PUBLISH_OK;
	return failed_to(p, "write", SPOOL_RUNNING, name, errno);
}

/* A directory in the way of a name we must write would fail every try: say so before starting. */
static enum publish_rc check_targets(struct pub *p, char *const *names, size_t n)
{
	struct stat st;
	for (size_t i = 0; i < n; i++) {
		if (fstatat(p->sp->fd[p->dest], names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISDIR(st.st_mode)) {
			xsnprintf(p->err, p->errsize, "'%s/%s' is a directory, which the daemon never "
				  "makes: it cannot be replaced", spool_dir_name(p->dest), names[i]);
			return PUBLISH_PERMANENT;
		}
	}
	return PUBLISH_OK;
}

enum publish_rc publish_run(struct spool *sp, int dest, const char *id, const char *running_name,
			    const struct image *images, size_t n_images, const char *result_json,
			    const char *job_text, char *err, size_t errsize)
{
	char *staging = publish_staging_name(id, sp->host_id, dest);
	struct pub p = { .sp = sp, .runfd = sp->fd[SPOOL_RUNNING], .staging = staging, .id = id,
			 .dest = (enum spool_dir)dest, .err = err, .errsize = errsize };
	size_t n = n_images + 2;   /* images, result, job file */
	char **names = xcalloc(n, sizeof(*names));
	for (size_t i = 0; i < n_images; i++)
		names[i] = result_image_name(id, i, n_images, images[i].ext);
	names[n_images] = xasprintf("%s.result.json", id);
	names[n_images + 1] = xasprintf("%s.json", id);
	enum publish_rc rc = PUBLISH_OK;
	int sfd = -1;

	if (!spool_still_ours(sp, running_name)) {
		char *job_staged = staged(&p, names[n_images + 1]);
		bool committed = exists(p.runfd, job_staged);
		free(job_staged);
		if (committed) {   /* a retry after a failure past the commit */
			rc = publish_resume(sp, staging, err, errsize);
			goto out;
		}
		xsnprintf(err, errsize, "the job was reclaimed by another daemon (our lease ran out)");
		rc = PUBLISH_FENCED;
		goto out;
	}
	if ((rc = check_targets(&p, names, n)) != PUBLISH_OK)
		goto out;
	/* 1. Stage. */
	if (mkdirat(p.runfd, staging, 0777) < 0 && errno != EEXIST) {
		rc = failed_to(&p, "make", SPOOL_RUNNING, staging, errno);
		goto out;
	}
	sfd = openat(p.runfd, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0) {
		rc = failed_to(&p, "open", SPOOL_RUNNING, staging, errno);
		goto out;
	}
	for (size_t i = 0; i < n_images && rc == PUBLISH_OK; i++)
		rc = write_staged(&p, names[i], images[i].data, images[i].len, sfd);
	if (rc != PUBLISH_OK)
		goto out;
	crash_point("publish:images");
	rc = write_staged(&p, names[n_images], result_json, strlen(result_json), sfd);
	if (rc == PUBLISH_OK && (fsync(sfd) < 0 || fsync(p.runfd) < 0))
		rc = failed_to(&p, "fsync", SPOOL_RUNNING, staging, errno);
	if (rc != PUBLISH_OK)
		goto out;
	crash_point("publish:result");
	/* The job file's records get the final attempt and say the run is over: from here a
	 * restart only commits and finishes what is staged (its records say "finished"). */
	if (job_text && spool_rewrite_file(sp, SPOOL_RUNNING, running_name, job_text,
					   strlen(job_text)) < 0) {
		if (errno == ENOENT && !exists(p.runfd, running_name)) {
			xsnprintf(err, errsize, "the job was reclaimed by another daemon (our lease ran out)");
			rc = PUBLISH_FENCED;
			remove_staging(&p);
		} else {
			rc = failed_to(&p, "write", SPOOL_RUNNING, running_name, errno);
		}
		goto out;
	}
	crash_point("publish:rewritten");
	/* 2. Commit: only the lease holder has running/ID@HOST.json to move. */
	char *job_staged = staged(&p, names[n_images + 1]);
	int moved = renameat(p.runfd, running_name, p.runfd, job_staged);
	int saved = errno;
	free(job_staged);
	if (moved < 0) {
		if (saved == ENOENT && !exists(p.runfd, running_name)) {
			xsnprintf(err, errsize, "the job was reclaimed by another daemon (our lease ran out)");
			rc = PUBLISH_FENCED;
			remove_staging(&p);
		} else {
			rc = failed_to(&p, "move the job file from", SPOOL_RUNNING, running_name, saved);
		}
		goto out;
	}
	if (fsync(sfd) < 0 || fsync(p.runfd) < 0) {
		/* Committed all the same: the retry (or a restart) resumes from the staging dir. */
		rc = failed_to(&p, "fsync", SPOOL_RUNNING, staging, errno);
		goto out;
	}
	/* 3-5. */
	rc = clear_earlier_run(&p, names, n_images + 1);
	if (rc == PUBLISH_OK)
		rc = move_in(&p, names, n_images + 1);
	if (rc == PUBLISH_OK) {
		crash_point("publish:moved");
		remove_staging(&p);
	}
out:
	if (sfd >= 0)
		close(sfd);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(staging);
	return rc;
}

/* The new run's names from its staged result (NULL if the result has already been moved in). */
static char **staged_names(struct pub *p, size_t *n)
{
	char *result = xasprintf("%s.result.json", p->id), *path = staged(p, result);
	struct buf b;
	struct stat st;
	char **names = NULL;
	buf_init(&b, RESULT_READ_MAX);
	*n = 0;
	int sfd = openat(p->runfd, p->staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd >= 0 && spool_read_file(sfd, result, RESULT_READ_MAX, &b, &st) == SPOOL_READ_OK) {
		json_t *doc = json_loadb(b.data, b.len, 0, NULL);
		json_t *images = json_object_get(doc, "images"), *v;
		size_t i;
		names = xcalloc(json_array_size(images) + 1, sizeof(*names));
		json_array_foreach(images, i, v) {
			const char *name = json_string_value(v);
			if (name && name[0] != '.' && !strchr(name, '/'))
				names[(*n)++] = xstrdup(name);
		}
		names[(*n)++] = xstrdup(result);
		json_decref(doc);
	}
	if (sfd >= 0)
		close(sfd);
	buf_release(&b);
	free(path);
	free(result);
	return names;
}

enum publish_rc publish_commit_staged(struct spool *sp, const char *id, const char *running_name,
				      int dest, char *err, size_t errsize)
{
	char *staging = publish_staging_name(id, sp->host_id, dest);
	char *job = xasprintf("%s/%s.json", staging, id);
	enum publish_rc rc = PUBLISH_OK;
	int runfd = sp->fd[SPOOL_RUNNING];
	if (!exists(runfd, staging)) {
		xsnprintf(err, errsize, "nothing is staged in 'running/%s'", staging);
		rc = PUBLISH_PERMANENT;
	} else if (renameat(runfd, running_name, runfd, job) < 0) {
		xsnprintf(err, errsize, "cannot move 'running/%s' to 'running/%s': %s", running_name,
			  job, strerror(errno));
		rc = errno == ENOENT ? PUBLISH_FENCED : classify(errno);
	} else if (fsync(runfd) < 0) {
		xsnprintf(err, errsize, "cannot fsync 'running/': %s", strerror(errno));
		rc = PUBLISH_RETRY;
	}
	if (rc == PUBLISH_OK)
		rc = publish_resume(sp, staging, err, errsize);
	free(job);
	free(staging);
	return rc;
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
	struct pub p = { .sp = sp, .runfd = sp->fd[SPOOL_RUNNING], .staging = staging_name,
			 .id = id, .dest = (enum spool_dir)dest, .err = err, .errsize = errsize };
	char *job = xasprintf("%s.json", id), *job_staged = staged(&p, job);
	enum publish_rc rc = PUBLISH_OK;
	if (!exists(p.runfd, job_staged)) {
		/* Not committed. While its job is in running/ the staged files may still serve
		 * (publish_commit_staged); else (reclaimed, or moved in before a crash) they go. */
		char *running = xasprintf("%s@%s.json", id, host);
		if (!exists(p.runfd, running))
			remove_staging(&p);
		free(running);
		goto out;
	}
	size_t n;
	char **names = staged_names(&p, &n);
	if (names) {
		/* Not moved in yet: the earlier run may still be there. */
		rc = clear_earlier_run(&p, names, n);
		if (rc == PUBLISH_OK)
			rc = move_in(&p, names, n);
	} else {
		rc = move_in(&p, NULL, 0);
	}
	if (rc == PUBLISH_OK)
		remove_staging(&p);
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
out:
	free(job);
	free(job_staged);
	free(id);
	free(host);
	return rc;
}
