/* intake.h - jobs waiting in new/ and deferred/ (struct pending), in order, and their claims; the
 * pump (intake.c). Part of the dispatcher. */
#ifndef INTAKE_H
#define INTAKE_H

#include <stdint.h>

#include "spool.h"

struct dispatch;

struct pending {
	enum spool_dir dir;      /* new/ or deferred/ */
	char *name;
	int64_t mtime_ns;
	struct file_id file;     /* as listed: an ignored entry is looked at again when it changes */
	bool placed;             /* mtime_ns and file are known (a new name is stat'ed only once it
				  * has to wait its turn: pending_place) */
	char *provider;          /* once read: the provider it waits for, so it is not reread */
	char *route;             /* or the route it waits for, */
	uint32_t route_mask;     /* the targets of it that can serve the job, */
	int route_target;        /* and the busy one it waits for (-1: any of them) */
};

/* A slice of a listing of new/: about 20 ms, so the loop goes on; the first one after start-up
 * gets 300 ms: it lists all but the largest backlogs, so the first claims are in order. */
#define SCAN_SLICE_MS 20
#define SCAN_FIRST_SLICE_MS 300

char intake_known_dir(enum spool_dir dir);
void intake_pending_free(struct pending *pe);
/* Frees the queue and what it holds. */
void intake_release(struct dispatch *d);
/* file: as stat'ed, or NULL for a name never seen (not stat'ed yet). */
void intake_add(struct dispatch *d, enum spool_dir dir, const char *name,
		const struct file_id *file);
void intake_sweep(struct dispatch *d, enum spool_dir dir);
void intake_list_new(struct dispatch *d, int64_t budget_ms);
void intake_pump(struct dispatch *d);
/* A job of ours goes back from running/running_name to *dir/name (new/, deferred/ or hold/):
 * as it is (records NULL), or rewritten with records and due_wall_ms as its mtime. Never over
 * a file there: when new/ holds another version of the id (a client submitted it again
 * meanwhile), to deferred/ instead, due at due_wall_ms (its mtime; its place in line in new/
 * is a time past: due at once), so both run, one at a time. 0, or -1 with errno (EEXIST: that
 * place is taken too); *dir is the directory it went to, or the last one tried. */
int intake_return(struct dispatch *d, const char *running_name, enum spool_dir *dir,
		  const char *name, int64_t due_wall_ms, const char *records);
/* "" when went is asked, else why not (for a log line). */
const char *intake_return_why(enum spool_dir asked, enum spool_dir went);

#endif
