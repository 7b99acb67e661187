/* metrics.h - counters and gauges for Prometheus, written as a text file for node_exporter's
 * textfile collector ([metrics] textfile). Events are counted as they happen (dispatch calls the
 * hooks below); gauges are set just before each write. Loop thread only. */
#ifndef METRICS_H
#define METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An attempt on record: its outcome ("succeeded", "retry", "failed", "hold", "interrupted"),
 * whether it was billed ("yes", "no", "unknown") and, when an answer came, how long it took. */
void metrics_attempt(const char *provider, const char *outcome, const char *billed,
		     bool answered, int64_t latency_ms);
/* Money a call cost (known prices only), in currency. */
void metrics_cost(const char *provider, const char *currency, double amount);
void metrics_retry(const char *provider);
/* A provider went on hold, or was paused (a 429). */
void metrics_hold(const char *provider);
void metrics_pause(const char *provider);
/* A job published in done/ (true) or failed/. */
void metrics_finished(bool succeeded);

/* Gauges, set before a write: every provider's are zeroed first by metrics_begin(). */
void metrics_begin(void);
struct metrics_outputs {
	unsigned long uploads, upload_failures, webhooks_delivered, webhook_failures,
		webhooks_dropped, hooks_run;
	long jobs_waiting_for_store, outbox_backlog, webhook_endpoints_gone, webhooks_parked;
};
void metrics_provider_state(const char *provider, long in_flight, bool held, bool paused);
/* A provider's calls wait because one would pass a spend budget (keyshare.c). */
void metrics_provider_over_budget(const char *provider, bool over);
/* Results leaving the spool: the store's counters and the webhook outbox's (gauges: waiting,
 * backlog). */
void metrics_outputs(const struct metrics_outputs *o);
/* Jobs in new/, running/ and deferred/ (from memory: dispatch_counts), and the age of the oldest
 * in new/. */
void metrics_jobs(long new_jobs, long running, long deferred, double oldest_pending_s);

/* The whole exposition, in the Prometheus text format (no timestamps). Caller frees. */
char *metrics_render(void);
/* Writes metrics_render() to path through a temporary name in the same directory that does not
 * end in .prom (the collector reads only *.prom), then rename(2). -1 with errno on failure. */
int metrics_write(const char *path);
/* Forgets everything (tests, exit). */
void metrics_reset(void);

#endif
