/* dispatch.h - the job lifecycle on the loop: pending jobs in new/, claiming, the upstream call,
 * retries, downloads and publication. The only module that makes state decisions. */
#ifndef DISPATCH_H
#define DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct config;
struct spool;
struct dispatch;
struct spend_view;

struct dispatch *dispatch_new(struct loop *loop, struct config *cfg, struct spool *spool);
/* At the exit, first: the jobs no helper holds go back to new/; those a helper holds are noted
 * for their marks (sidecar.h), returned (*n_marks of them) to be made on another thread while
 * d is freed; helpers_idle: no helper may still write the spool. */
struct left_marks;
struct left_marks *dispatch_leave(struct dispatch *d, size_t *n_marks, bool *helpers_idle);
/* Makes them (and frees m), on any thread; blocks on a stalled disk. */
void dispatch_make_marks(struct left_marks *m);
/* False when a thread stuck in a write (an I/O helper) was left with d: nothing it may use may
 * be freed (the spool, the loop), and the process must end with _exit. */
bool dispatch_free(struct dispatch *d);

/* Start-up: jobs this host left in running/ go back to new/. */
void dispatch_recover(struct dispatch *d);
/* Full rescan of new/: the truth, whatever inotify said or missed. */
void dispatch_scan(struct dispatch *d);
/* control/ changed (an inotify hint, or a rescan): rereads the operator's requests and acts on
 * the jobs they name. */
void dispatch_control(struct dispatch *d);
/* A file arrived in new/ (an inotify hint). */
void dispatch_hint(struct dispatch *d, const char *name);
/* Claims and starts jobs while there is room; the loop's before-sleep hook. */
void dispatch_pump(struct dispatch *d);
/* SIGHUP: cfg (with its keys loaded) replaces the running config; dispatch takes a reference.
 * Calls in flight go on; a removed provider finishes its jobs on its old section; a lower
 * concurrency takes effect as calls end; held providers with a key are probed at once. */
void dispatch_reconfigure(struct dispatch *d, struct config *cfg);
/* SIGTERM: stop claiming, let calls finish within the grace period, counted from since_ms
 * (mono_ms of the signal), requeue the rest. */
void dispatch_drain(struct dispatch *d, int64_t since_ms);
/* What calls in flight may cost, and what today's calls cost, for one provider (or all when
 * provider is NULL), in the [prices] currency. For budgets and metrics. */
void dispatch_spend(const struct dispatch *d, const char *provider, struct spend_view *out);
/* A second SIGTERM: end the grace period now; calls cut are recorded as interrupted. */
void dispatch_cut(struct dispatch *d);
/* While draining: ms left of the grace period (0 once over or when not draining). */
int64_t dispatch_drain_left_ms(const struct dispatch *d);
/* Logs the jobs still held (id, what it waits for, how long). */
void dispatch_log_waiting(const struct dispatch *d);
/* Jobs per state, all hosts, from memory (never a listing, whatever the backlog): this daemon's
 * own moves count at once, other hosts' as of the last rescan. */
struct dispatch_counts {
	long new_jobs;           /* in new/: the pending queue's */
	long running;            /* in running/: ours, and the other hosts' */
	long deferred;           /* in deferred/ */
	int64_t oldest_pending_ns; /* the mtime of the oldest in new/ as listed, or 0 when none */
};
void dispatch_counts(const struct dispatch *d, struct dispatch_counts *out);
/* One line for systemd's STATUS=: pending, deferred, running, calls in flight, held providers. */
void dispatch_status(const struct dispatch *d, char *out, size_t size);
/* Counters of results leaving the spool, for metrics: uploads (failures, jobs waiting for the
 * store) and the outbox (deliveries, failures, dropped, backlog). Borrowed. */
struct store_stats;
struct outbox_stats;
const struct store_stats *dispatch_store_stats(const struct dispatch *d);
const struct outbox_stats *dispatch_outbox_stats(const struct dispatch *d);
bool dispatch_draining(const struct dispatch *d);
/* Sets the metrics' provider gauges: calls in flight, held, paused. */
void dispatch_report_metrics(const struct dispatch *d);
/* True once draining and nothing is left in flight. */
bool dispatch_drained(const struct dispatch *d);

#endif
