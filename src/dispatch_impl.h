/* dispatch_impl.h - internal to the dispatch modules (dispatch.c and the files it was split
 * into); nothing else includes it. The public interface is dispatch.h.
 *
 * What the pieces share: the dispatcher (struct dispatch), and the functions of dispatch.c the
 * others call. Each room has its header (task.h, intake.h, slots.h, routing.h, provider_state.h,
 * attempt.h, sidecar.h, deferral.h, download.h, finish.h, recovery.h); slots.c and
 * provider_state.c keep their state to themselves. Everything runs on the loop thread, but for
 * the work a task hands to the I/O pool (see dispatch.c). */
#ifndef DISPATCH_IMPL_H
#define DISPATCH_IMPL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "config.h"
#include "control.h"
#include "health.h"
#include "http.h"
#include "iopool.h"
#include "job.h"
#include "keyshare.h"
#include "known.h"
#include "outbox.h"
#include "price.h"
#include "provider.h"
#include "record.h"
#include "result.h"
#include "retry.h"
#include "route.h"
#include "scan.h"
#include "spend.h"
#include "spool.h"
#include "strandlog.h"
#include "upstream.h"
#include "util.h"

struct loop;
struct pending;
struct store;

struct dispatch {
	struct loop *loop;
	struct config *cfg;
	struct spool *spool;
	struct http *http;
	struct iopool *pool;
	struct store *store;
	struct outbox *outbox;   /* webhooks and hooks of finished jobs */
	char cwd[PATH_MAX];      /* for absolute result paths when [spool] dir is relative */
	struct job_limits limits;
	struct provider_state **providers; /* one per provider, and those retired by a reload */
	int n_providers;
	struct pending *pending;   /* the queue: pending_head entries into its allocation */
	size_t n_pending, alloc_pending, pending_head;
	bool disk_full;          /* free space under min_free_mb: claiming nothing */
	int64_t disk_checked;    /* mono_ms of the last look */
	int64_t tmp_cleaned;     /* mono_ms of the last clean-up of tmp/ */
	struct tmpclean *tmp_clean; /* the pass under way on a helper (tmpclean.c), or NULL */
	size_t n_sorted;         /* pending[0..n_sorted) is in order; what follows was added since */
	size_t n_unplaced;       /* entries not stat'ed yet, all after n_sorted */
	struct known known;      /* names in new/ and deferred/ that are pending or ignored */
	struct scan new_scan;    /* the listing of new/, a slice per turn of the loop */
	uint64_t scan_timer;     /* the next slice */
	uint64_t place_timer;    /* the next slice of pending_place */
	int64_t startup_claims_at; /* mono ms from which start-up claims need not wait for every
				      job's place (intake.c); 0 before the first listing */
	bool placed_once;        /* the first listing of new/ done and every job placed */
	struct strset held;      /* ids of the tasks below */
	uint64_t heartbeat_timer;
	struct task *tasks;      /* every job this daemon holds */
	int n_tasks;
	long others_running;     /* other hosts' jobs in running/ at the last rescan */
	struct strset others_ids;   /* and their ids: their end is not known yet (outbox) */
	long deferred_jobs;      /* jobs in deferred/ at its last listing, with our moves since */
	struct slots *slots;     /* calls in flight, the ready line (slots.c) */
	bool draining;
	bool grace_over;
	int64_t drain_deadline;  /* mono_ms at which the grace period ends */
	uint64_t grace_timer;
	char **left_marks;       /* running/ names of the marks of jobs left there (sidecar.c) */
	size_t n_left_marks;
	int64_t cut_pool_deadline; /* mono_ms after which the exit waits for no helper's work */
	bool putbacks_unsettled; /* a put-back's new run left in running/: settled at a rescan */
	struct strset stranded;  /* ids of jobs of ours left in running/ with no task (a move out
				  * failed, a put-back not settled): no claim of the id replaces
				  * one; each rescan settles them (recovery.c adopt_all) */
	struct strandlog strandlog; /* what was said of them: each error once (strandlog.h) */
	struct strset unread_dead;  /* of them, those a start-up could not read: their death
				     * is counted once they are (recovery.c adopt) */
	uint64_t wake_timer;     /* earliest paused provider */
	int64_t wake_due;        /* when wake_timer fires (mono_ms) */
	uint64_t deferred_timer; /* earliest job due in deferred/ */
	int64_t deferred_due;    /* its due time, wall ms */
	int deferred_list_err;   /* errno of deferred/'s listing, said once while it lasts; 0: read */
	struct buf readbuf;
	struct spend spend;      /* costs in flight and of today, per provider */
	struct control control;  /* the operator's pause, hold and cancel requests */
	unsigned long control_acted; /* the control.reads whose holds and cancels of pending jobs
				      * intake acted on */
	unsigned long pauses_seen;   /* control.pause_changes the waiting jobs were rechecked for */
	struct health health;    /* cooldowns of route targets, by provider/model */
	uint64_t route_timer;    /* earliest end of a cooldown or pause a routed job waits for */
	int64_t route_due;
	struct keyshare *ks;     /* the providers' limits, shared with the other hosts */
	int recovered_unbilled;  /* saved answers recovered under a budget, not yet in the ledger:
				  * calls under a budget wait meanwhile (provider_state.c) */
};

/* dispatch.c: a task's life */
void task_requeue(struct task *t, const char *why);
void task_leave_for_restart(struct task *t, const char *why);
/* Past the grace period's cut, a job about to start a wait that may outlast it (a timer, a
 * download, an upload) leaves for the restart instead: grace_over() walks the tasks only once.
 * Whether it left (t is then freed). */
bool task_leave_if_cut(struct task *t, const char *why);
void task_prepare_and_send(struct task *t);
void task_send_attempt(struct task *t);
/* The I/O pool's batch that saves and parses responses, and its done(). */
void task_parse_work(void **args, size_t n);
void task_parse_done(void *arg);
size_t dispatch_job_read_cap(const struct dispatch *d);
bool dispatch_written_by_daemon(const struct dispatch *d, const struct stat *st);

#endif
