/* intake.h - jobs waiting in new/ and deferred/ (struct pending), in order, and their claims; the
 * pump (intake.c). Part of the dispatcher. */
#ifndef INTAKE_H
#define INTAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
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
/* Whether a put-back's claim, stalled_ms after its new run was written beside it, is not made:
 * half a lease or more. Other hosts remove a put-back file of a host gone by its lock once it is
 * older than a lease and its job has left new/ or deferred/ (spool-layout.md §10); claimed by a
 * host that stalled that long, a new file of the id there would be taken without one. Pure. */
bool intake_claim_stalled(int64_t stalled_ms, int64_t lease_ms);
/* Where a job of ours goes back to: asked as dir/name, and where it went (intake_return). */
struct intake_place {
	enum spool_dir dir;
	char name[JOB_ID_MAX + sizeof(".9.json")];   /* up to a numbered name (job.h) */
	char why[JOB_ID_MAX + 96];   /* "" where asked, else why not, for a log line */
};
/* What is not a plain file at running/RUNNING_NAME of a bad name's id ("badname-HASH"; was: what
 * it is, for the log): removed if it holds no data, else moved aside to a dotfile in new/. 0, or
 * -1 (said) when it stays. */
int intake_bad_name_aside(struct dispatch *d, const char *id, const char *running_name,
			  const char *was);

/* The places, in order, a job asked back to asked/asked_name (id's file) tries: that one; from
 * new/, deferred/ under that name (new/ holds another version of the id: due at once, both
 * run); then deferred/ under the id's other name (ID or ID.json; deferred/ holds another
 * version too: no client writes there, nor does a deferral under that name); then deferred/'s
 * numbered names, ID.2.json to ID.9.json (job_numbered_name), so that a job left in running/
 * does not wait for an operator while every other name of its id is taken. hold/ is only
 * itself. Fills place with step number step (0 first); false past the last. Pure. */
bool intake_return_place(enum spool_dir asked, const char *asked_name, const char *id, int step,
			 struct intake_place *place);
/* A job of ours (its id) goes back from running/running_name to asked/name (new/, deferred/ or
 * hold/): as it is (records NULL), or rewritten with records and due_wall_ms as its mtime. Never
 * over a file there: the next place (intake_return_place) instead, due at due_wall_ms (its
 * mtime; its place in line in new/ is a time past: due at once), so every version runs, one
 * at a time. 0, or -1 with errno (EEXIST: every place is taken); *went is where it went, or
 * the last place tried. */
int intake_return(struct dispatch *d, const char *running_name, const char *id,
		  enum spool_dir asked, const char *name, struct intake_place *went,
		  int64_t due_wall_ms, const char *records);

#endif
