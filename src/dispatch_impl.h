/* dispatch_impl.h - internal to the dispatch modules (dispatch.c and the files it was split
 * into); nothing else includes it. The public interface is dispatch.h.
 *
 * What the pieces share: the dispatcher (struct dispatch), a job it holds (struct task), a
 * name waiting in new/ or deferred/ (struct pending), and the functions one piece calls in
 * another. The rooms with a header of their own keep their state to themselves: slots.h,
 * provider_state.h, sidecar.h. Everything runs on the loop thread, but for the work a task
 * hands to the I/O pool (see dispatch.c). */
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
#include "upstream.h"
#include "util.h"

struct loop;
struct store;

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
	struct pending *pending;
	size_t n_pending, alloc_pending;
	bool disk_full;          /* free space under min_free_mb: claiming nothing */
	int64_t disk_checked;    /* mono_ms of the last look */
	int64_t tmp_cleaned;     /* mono_ms of the last clean-up of tmp/ */
	size_t n_sorted;         /* pending[0..n_sorted) is in order; what follows was added since */
	size_t n_unplaced;       /* entries not stat'ed yet, all after n_sorted */
	struct known known;      /* names in new/ and deferred/ that are pending or ignored */
	struct scan new_scan;    /* the listing of new/, a slice per turn of the loop */
	uint64_t scan_timer;     /* the next slice */
	uint64_t place_timer;    /* the next slice of pending_place */
	struct strset held;      /* ids of the tasks below */
	uint64_t heartbeat_timer;
	struct task *tasks;      /* every job this daemon holds */
	int n_tasks;
	long others_running;     /* other hosts' jobs in running/ at the last rescan */
	long deferred_jobs;      /* jobs in deferred/ at its last listing, with our moves since */
	struct slots *slots;     /* calls in flight, the ready line (slots.c) */
	bool draining;
	bool grace_over;
	int64_t drain_deadline;  /* mono_ms at which the grace period ends */
	uint64_t grace_timer;
	uint64_t wake_timer;     /* earliest paused provider */
	uint64_t deferred_timer; /* earliest job due in deferred/ */
	int64_t deferred_due;    /* its due time, wall ms */
	struct buf readbuf;
	struct spend spend;      /* costs in flight and of today, per provider */
	struct control control;  /* the operator's pause, hold and cancel requests */
	unsigned long control_acted; /* the control.reads whose holds and cancels of pending jobs
				      * intake acted on */
	struct health health;    /* cooldowns of route targets, by provider/model */
	uint64_t route_timer;    /* earliest end of a cooldown or pause a routed job waits for */
	int64_t route_due;
	struct keyshare *ks;     /* the providers' limits, shared with the other hosts */
};

/* ---- dispatch.c: a task's life -------------------------------------------------------------- */

void task_requeue(struct task *t, const char *why);
void task_leave_for_restart(struct task *t, const char *why);
void task_prepare_and_send(struct task *t);
void task_send_attempt(struct task *t);
/* The I/O pool's batch that saves and parses responses, and its done(). */
void task_parse_work(void **args, size_t n);
void task_parse_done(void *arg);
size_t dispatch_job_read_cap(const struct dispatch *d);
bool dispatch_written_by_daemon(const struct dispatch *d, const struct stat *st);

/* ---- intake.c: pending names, their claims, the pump ---------------------------------------- */

/* A slice of a listing of new/: about 20 ms, so the loop goes on; the first one after start-up
 * gets 300 ms: it lists all but the largest backlogs, so the first claims are in order. */
#define SCAN_SLICE_MS 20
#define SCAN_FIRST_SLICE_MS 300

char intake_known_dir(enum spool_dir dir);
void intake_pending_free(struct pending *pe);
/* file: as stat'ed, or NULL for a name never seen (not stat'ed yet). */
void intake_add(struct dispatch *d, enum spool_dir dir, const char *name,
		const struct file_id *file);
void intake_sweep(struct dispatch *d, enum spool_dir dir);
void intake_list_new(struct dispatch *d, int64_t budget_ms);
void intake_pump(struct dispatch *d);

/* ---- routing.c: the target of a routed job -------------------------------------------------- */

struct route_pick {
	enum route_verdict verdict;
	struct provider_state *prov;  /* ROUTE_CHOSEN */
	const char *model;            /* borrowed from the config, for this call only */
	char why[768];                /* ROUTE_NONE: what no target can do */
};

void routing_pick(struct dispatch *d, const struct route_config *r, const struct job *job,
		  const char *id, struct pending *pe, struct route_pick *pick);
bool routing_still_waits(struct dispatch *d, const struct pending *pe);
void routing_record_health(struct task *t);

/* ---- deferral.c: deferred/ ------------------------------------------------------------------ */

void deferral_schedule(struct task *t);
/* The move to deferred/ again, due at due, of a job a restart found in the middle of its
 * deferral (its records already hold it); a cancel fails it instead, as deferral_schedule's. */
void deferral_resume(struct task *t, int64_t due);
void deferral_scan(struct dispatch *d);
enum spool_dir deferral_dir(const struct task *t);
/* The I/O pool's move to deferred/ (or hold/), and its done(). */
void deferral_work(void *arg);
void deferral_done(void *arg);
/* A retry in memory whose time has come: it calls, or waits for what it needs. */
void deferral_retry(struct task *t);
/* A retry in memory is called off (a cancel): its timer, or its wait for a slot, ends. */
void deferral_call_off(struct task *t);

/* ---- recovery.c: leases, and what dead daemons left --------------------------------------- */

void recovery_start(struct dispatch *d);
/* The heartbeat timer's callback (arg: the dispatch), and its interval. */
int64_t recovery_heartbeat(struct loop *loop, void *arg);
int64_t recovery_heartbeat_interval_ms(const struct dispatch *d);
void recovery_reclaim_stale(struct dispatch *d);
void recovery_resume_publications(struct dispatch *d, bool others);

/* ---- download.c: images returned as URLs ---------------------------------------------------- */

void download_start(struct task *t);

/* ---- attempt.c: a call's price and record ---------------------------------------------------- */

struct price_quote attempt_quote(const struct dispatch *d, const struct job *job,
				 const char *model, const json_t *usage, int images);
void attempt_price(const struct task *t, struct attempt *a, enum billed billed,
		   const json_t *usage, int images);
void attempt_reserve(struct task *t);
void attempt_settle(struct task *t, bool billed, bool known, double cost);
void attempt_record(struct task *t, const struct attempt *a);
void attempt_judge_begin(struct task *t);
void attempt_judge(struct task *t);
void attempt_judged(struct task *t, bool counted);
size_t attempt_count(const struct task *t);

#endif
