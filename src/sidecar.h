/* sidecar.h - the files kept beside a job in running/ while it is ours: the response of the
 * call in flight (.partial), a complete one (.response.STATUS), a routed call's target
 * (.target); each with a header naming the job and the attempt (sidecar.c). */
#ifndef SIDECAR_H
#define SIDECAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

struct buf;
struct dispatch;
struct stat;
struct strset;
struct task;

/* A fresh claim has no sidecars; a job found in running/ after a restart may have any. */
enum { SIDECAR_PARTIAL = 1, SIDECAR_TARGET = 2, SIDECAR_RESPONSE = 4, SIDECARS_UNKNOWN = 8 };

/* ".ID@HOST.suffix" (caller frees). */
char *sidecar_name(const struct task *t, const char *suffix);
/* What a file beside a job is, by what follows ".ID@HOST." in its name. Pure. */
enum sidecar_kind {
	SIDECAR_KIND_NONE,      /* no file of a job's */
	SIDECAR_KIND_CALL,      /* .partial .target .response.STATUS .left.N, .reclaim.HOST (a
				 * reclaim under way, recovery.c): its calls' files */
	SIDECAR_KIND_STAGING,   /* .done .failed: its publication's staging (publish.c) */
	SIDECAR_KIND_PUTBACK,   /* .putback.D.INO (sidecar_putback_name) */
};
enum sidecar_kind sidecar_suffix_kind(const char *suffix);
/* Whether a file beside a job, as stat'ed without following a link, can be the daemon's: a
 * regular file of its user, one link. */
bool sidecar_is_ours(const struct dispatch *d, const struct stat *st);
/* NULL when it is, else why not (in why, of size bytes, when it is not NULL). */
const char *sidecar_not_ours_why(const struct dispatch *d, const struct stat *st, char *why,
				 size_t size);
void sidecar_write_target(struct task *t);
char *sidecar_read_target(struct task *t);
void sidecar_drop(struct task *t);
/* The same files, from a helper thread: t->sidecars is left for the loop to clear. */
void sidecar_unlink(const struct task *t);
size_t sidecar_write_header(struct task *t, int fd);
long sidecar_saved_status(const struct task *t, const struct strset *hidden);
long sidecar_read(struct task *t, const char *name, struct buf *body, struct stat *st);
/* A shutdown leaves t in running/ on purpose, its paid response saved: running/.ID@HOST.left.N
 * will say so to the restart (no death counted). Noted only: sidecar_left_marks_make makes them. */
void sidecar_mark_left(struct task *t);
/* The answer of t's call came whole but a helper still holds it at the exit:
 * running/.ID@HOST.answered.N.STATUS.BYTES will say so to the restart. Noted only, as .left. */
void sidecar_mark_answered(struct task *t);
struct sidecar_answered {
	long attempt;            /* 0: no mark */
	long status;
	size_t len;              /* of the body */
};
void sidecar_find_answered(struct task *t, const struct strset *hidden,
			   struct sidecar_answered *out);
bool sidecar_save_answered(struct task *t, struct strset *hidden,
			   const struct sidecar_answered *m);
/* At the exit: the marks noted, taken from d (NULL: none; *n of them), so d may be freed while
 * sidecar_left_marks_make makes them and syncs running/ (and frees m), on a thread the exit
 * waits for by its deadline (main.c): on a stalled disk the marks not made by then are skipped
 * (their restart counts a death), and that thread may still use running/'s descriptor. */
struct left_marks;
struct left_marks *sidecar_left_marks_take(struct dispatch *d, size_t *n);
void sidecar_left_marks_make(struct left_marks *m);
/* At adoption: removes t's marks and returns the attempt the one ours names, 0 if none. */
long sidecar_take_left(struct task *t, const struct strset *hidden);
/* The new run of a job put back, made durable before its claim and put in place of the job
 * file after it (spool-layout.md §4): running/.ID@HOST.putback.D.INO, D the directory it is
 * claimed from ('n' new/, 'd' deferred/), INO the inode of the file read, in hex, so that a
 * restart tells whether the claim took that very file (caller frees). */
char *sidecar_putback_name(const struct task *t, enum spool_dir from, uint64_t ino);
/* Whether name is such a file of host's; fills id (JOB_ID_MAX + 1 bytes), *from and *ino.
 * Pure. */
bool sidecar_putback_parse(const char *name, const char *host, char *id, enum spool_dir *from,
			   uint64_t *ino);
/* Whether name is such a file of any host's; fills host (NAME_MAX + 1 bytes) too. Pure. */
bool sidecar_putback_parse_any(const char *name, char *host, char *id, enum spool_dir *from,
			       uint64_t *ino);

#endif
