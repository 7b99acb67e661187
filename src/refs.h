/* refs.h - a job's reference images, found under the spool root as its submitter could find
 * them (spool-layout.md §4).
 *
 * The daemon may run as root, or as a user that may read what clients may not: a job must not
 * make it read, and upload, a file its submitter could not read herself (a confused deputy).
 * So each directory on the way must be searchable, and the file readable, by the job file's
 * owner, judged by the mode bits as the kernel would (owner, then group, then others; the job
 * file's group stands for hers), and no state directory may be named. Fails with a reason.
 * Its limits (spool-layout.md §4): her supplementary groups and POSIX ACLs are not seen. */
#ifndef IMGSPOOL_REFS_H
#define IMGSPOOL_REFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* Who submitted the job: the owner of its file. trusted: the daemon's user or root, who may
 * read anything the daemon may. */
struct refs_owner {
	uint32_t uid, gid;
	bool trusted;
};

/* Pure: whether owner may read (want S_IROTH) or search (S_IXOTH) a file of uid, gid, mode,
 * by the class of bits the kernel would look at. */
bool refs_may(const struct refs_owner *owner, uint32_t uid, uint32_t gid, uint32_t mode,
	      uint32_t want);

/* Pure: why path may not name a reference image (its first part is a state directory, or
 * one the daemon keeps for itself), or NULL. */
const char *refs_path_problem(const char *path);

/* Opens path under root_fd as owner could, one part at a time (no symlink, no part that is
 * not a directory on the way); the file must be regular, with one link, at most max bytes.
 * Returns its descriptor (st filled) or -1 with why (a sentence's end, for the job's error). */
int refs_open(int root_fd, const char *path, const struct refs_owner *owner, size_t max,
	      struct stat *st, char *why, size_t why_size);

#include "job.h"
#include "upstream.h"
#include "util.h"

/* The distinct files refs_load checked, as refs_reopen finds them again for each call: no
 * descriptor is held while a job waits for a slot or a retry (review11 R1). */
struct refs_checked {
	int n;                                   /* distinct files */
	int path[JOB_REFS_MAX + 1];              /* the first of the job's paths naming each */
	struct {
		uint64_t dev, ino, size;
		int64_t mtime_ns;
	} id[JOB_REFS_MAX + 1];
};

/* A job's reference images as a request takes them (upstream.h): each distinct path opened
 * once and checked. For a multipart call the transfer reads them (on its own thread, no copy)
 * from the files refs_reopen opens again for it, which must be the files checked; for a dialect
 * that inlines them (Gemini's base64) their bytes are read here. */
struct refs_loaded {
	struct ref_image img[JOB_REFS_MAX + 1];  /* the job's "images", then its mask */
	int fd[JOB_REFS_MAX + 1];                /* the distinct files, owned */
	int n_fd;
	struct buf bytes[JOB_REFS_MAX + 1];      /* each distinct file's bytes, when read */
	size_t total;                            /* bytes sent: each mention of a file counts */
	struct refs_checked checked;
	bool transient;          /* refs_load failed for want of descriptors: not the job's fault */
};
/* Which of the job's paths failed (refs_load). */
enum { REFS_BAD_TOTAL = -2 };
/* Opens paths[0..n) (NULL: none there, such as no mask) for owner: each file at most
 * max_each bytes, all of them at most max_total together (a file named twice counts twice: it
 * is sent twice), a PNG, JPEG or WebP by its bytes, read whole (once) only when read_bytes. 0, or -1 with *bad the index of the path refused
 * (REFS_BAD_TOTAL: the total) and why. Release it either way. */
int refs_load(struct refs_loaded *out, int root_fd, const char *const *paths, int n,
	      const struct refs_owner *owner, size_t max_each, size_t max_total, bool read_bytes,
	      int *bad, char *why, size_t why_size);
void refs_loaded_release(struct refs_loaded *out);

/* Whether errno, after a failed open, is the process's or the system's lack of descriptors:
 * a passing condition, never the job's fault. */
bool refs_errno_transient(int err);

/* Opens again, for owner as refs_open does, each file of checked (named by paths as given to
 * refs_load) into fds[0..checked->n): each must still be the file checked (device, inode, size
 * and mtime). 0, or -1 (none left open) with *transient set when descriptors ran out (the call
 * waits), else why the job cannot be sent. */
int refs_reopen(int root_fd, const char *const *paths, const struct refs_owner *owner,
		const struct refs_checked *checked, int *fds, bool *transient, char *why,
		size_t why_size);

#endif
