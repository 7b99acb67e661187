/* control.h - an operator's requests to every daemon on a spool, as files in control/.
 *
 *   control/pause             no daemon starts a call, to any provider
 *   control/pause.PROVIDER    no daemon starts a call to PROVIDER
 *   control/hold.ID           the daemon holding running job ID moves it to hold/ at its next
 *                             transition instead of to deferred/ or new/
 *   control/cancel.ID         the daemon holding running job ID cuts its call and fails it with
 *                             error code "cancelled"
 *   control/gone.KEY          the webhook endpoint whose key (webhook_endpoint_key) is KEY
 *                             answered 410 Gone: no daemon sends to it until the file is removed
 *                             (by an operator, by a daemon's reload, or by a daemon once no
 *                             event waits for it after give_up_after); the file holds the URL
 *                             without its credentials (url_redacted)
 *
 * Files are the protocol because they reach every daemon of a shared spool: inotify wakes the
 * local ones, rescans the others. A daemon removes hold.ID and cancel.ID once job ID has left
 * its running/; control_sweep removes those whose job finished, or is nowhere, for good.
 * Written by imgspool (the CLI), read by the daemon (spool-layout.md §15). */
#ifndef CONTROL_H
#define CONTROL_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct spool;

enum control_kind { CONTROL_NONE, CONTROL_PAUSE, CONTROL_HOLD, CONTROL_CANCEL, CONTROL_GONE };

/* The kind of request a file name in control/ is, and in *arg its provider or task id ("" for
 * a plain "pause"). Pure. CONTROL_NONE for anything else (temporary files, junk). */
enum control_kind control_parse_name(const char *name, const char **arg);

/* Where the job a hold.ID or cancel.ID names is, as the spool shows it. */
enum control_where {
	CONTROL_JOB_LIVE,        /* new/, deferred/, running/ of any host (a publication's too) */
	CONTROL_JOB_HELD,        /* hold/ */
	CONTROL_JOB_FINISHED,    /* done/ or failed/ only */
	CONTROL_JOB_NOWHERE,
};
enum control_verdict {
	CONTROL_KEEP,
	CONTROL_CONSUME,         /* its job finished, or is held: fulfilled, or moot */
	CONTROL_EXPIRE,          /* its job is nowhere, and the request is older than the max age */
};
/* A request older than this whose job is nowhere in the spool is removed. */
#define CONTROL_MAX_AGE_MS (3600 * 1000)
/* What becomes of a job's request (hold, cancel): age_ms is its age by the file server's
 * clock; unseen_ms how long this daemon has found its job not live at every look (0 at the
 * first). Nothing is removed within a lease of either, so a job between two renames, or not
 * yet visible to this host (NFS attribute caches), keeps its request. Pure. */
enum control_verdict control_judge(enum control_kind kind, enum control_where where,
				   int64_t age_ms, int64_t unseen_ms, int64_t lease_ms);

/* A job's request whose job was not live when last looked at, and since when (mono ms). */
struct control_unseen {
	char *name;
	int64_t since;
	bool listed;             /* still in control/ at the last sweep */
};

/* What the files in control/ asked for when they were last read. */
struct control {
	bool pause_all;
	struct strset paused;    /* provider names */
	struct strset hold;      /* task ids */
	struct strset cancel;    /* task ids */
	struct strset gone;      /* webhook endpoint keys */
	char **requests;         /* the file names of holds and cancels */
	size_t n_requests;
	/* Carried from one read to the next, for control_sweep. */
	struct control_unseen *unseen;
	size_t n_unseen;
	int64_t next_sweep;      /* mono ms */
	unsigned long reads;     /* successful control_reads so far */
	unsigned long pause_changes; /* those that found a pause made or removed */
};

void control_init(struct control *c);
void control_release(struct control *c);
/* Rereads control/ (a missing directory asks for nothing). Returns 0 or -1 with errno, keeping
 * what was known before. */
int control_read(struct control *c, struct spool *sp);
bool control_paused(const struct control *c, const char *provider);
bool control_wants(const struct control *c, enum control_kind kind, const char *id);

/* control_wants, confirmed by one stat of the request's file: what was read may be stale (a
 * request withdrawn since, by imgspool retry or release on another host). Only a job that has
 * a request pays the stat. A request found gone is forgotten. */
bool control_still_wants(struct control *c, struct spool *sp, enum control_kind kind,
			 const char *id);

/* The file name of a request ("pause", "pause.NAME", "hold.ID", "cancel.ID"); caller frees. */
char *control_name(enum control_kind kind, const char *arg);
/* Writes a request durably (temporary name, fsync, rename), creating control/ when missing.
 * Returns 0 or -1 with errno. */
int control_request(struct spool *sp, enum control_kind kind, const char *arg);
/* The same with text in the file (a gone endpoint's URL, for the operator). */
int control_write(struct spool *sp, enum control_kind kind, const char *arg, const char *text);
/* Counts a request as read before the next control_read sees its file (one this daemon just
 * wrote). */
void control_note(struct control *c, enum control_kind kind, const char *arg);
/* Removes every request of kind from control/ and from c: the number removed, -1 with errno. */
long control_withdraw_all(struct control *c, struct spool *sp, enum control_kind kind);
/* The daemon's look at the holds and cancels read last (at most every lease/8): removes those
 * control_judge says are done with, each with a log line. Ages are judged by the file
 * server's clock (spool_server_now); mono_now is the local monotonic clock. */
void control_sweep(struct control *c, struct spool *sp, int64_t mono_now, int64_t lease_ms);
/* Removes a request; 0 when it is gone (or was never there), -1 with errno. */
int control_withdraw(struct spool *sp, enum control_kind kind, const char *arg);

#endif
