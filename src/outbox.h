/* outbox.h - durable deliveries of job events: webhooks and the completion hook.
 *
 * An event becomes one file per target in outbox/ ("MSGID.webhook@HOST.json",
 * "MSGID.exec@HOST.json"), written and fsynced before the job is published; the file's mtime
 * is its next attempt. The loop delivers due entries of its own host, removes an entry when
 * it is done (a 2xx, given up, the hook ended) and otherwise rewrites it with one more attempt
 * and a later mtime. An endpoint that answered 410 Gone gets nothing (control/gone.KEY) until
 * an operator enables it again. A restart delivers whatever is left. See spool-layout.md §14. */
#ifndef OUTBOX_H
#define OUTBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct http;
struct iopool;
struct spool;
struct config;
struct control;
struct hooks;
struct outbox;
struct syncset;

struct outbox_entry {
	char *name;
	char *text;
};

/* The entries an event makes: a webhook (to job_url, or [notify] url) and, for a terminal
 * state, the hook. Empty when neither is configured. Pure but for allocation. */
struct outbox_batch {
	struct outbox_entry *e;
	size_t n;
};
/* Where the end events of a dead host's run, held here for the job (outbox_take_along), were
 * to go: webhook URLs and the hook. The job's end goes there too. */
struct outbox_targets {
	char **urls;             /* owned, each once */
	size_t n_urls;
	bool exec;
};
struct outbox_event {
	const char *task_id;
	const char *type;        /* job.succeeded, job.failed, job.deferred */
	const char *state;       /* succeeded, failed, deferred */
	int seq;                 /* tells deferrals apart; 0 for terminal events */
	const char *job_url;     /* the job's webhook_url, NULL = [notify] url */
	const char *result_path; /* absolute, for the hook */
	int64_t now_ms;
	const struct outbox_targets *held;   /* a terminal event's held targets, or NULL */
};
/* Besides this daemon's own targets, a terminal event goes to each held target that none of
 * them is: a URL of its own as MSGID.webhook.KEY@HOST.json (KEY as control/gone.KEY's), the
 * hook as MSGID.exec@HOST.json when no exec is configured here (a daemon that has one takes it
 * over, outbox_scan). Each entry once. */
void outbox_event_entries(const struct config *cfg, const char *host_id,
			  const struct outbox_event *ev, json_t *data, struct outbox_batch *out);
/* Writes the entries durably (temp, fsync, rename; then fsync of outbox/). Helper thread. */
int outbox_write(struct spool *sp, const struct outbox_batch *b);
/* The same within a batch (a group commit): durable at ss's next barrier. */
int outbox_write_in(struct spool *sp, const struct outbox_batch *b, struct syncset *ss);
/* Takes written entries back: their job was not published after all (fenced, or it ends
 * another way). Before the task leaves the busy set, so none was delivered. Loop thread. */
void outbox_withdraw(struct spool *sp, const struct outbox_batch *b);
/* Takes back the entries of task_id's event of type that this host wrote at or after since_ms
 * (created_at_ms): those of a publication a restart cut, when the job ends another way (an
 * earlier run's, written before, stay). Loop thread, before the task leaves the busy set.
 * Returns how many. */
int outbox_withdraw_since(struct outbox *o, const char *task_id, const char *type,
			  int64_t since_ms, const struct outbox_targets *held);
/* A job reclaimed from from_host: the entries of its end events (job.succeeded, job.failed)
 * that host queued, or held itself, are held by this host for the job's run here, renamed
 * MSGID.TARGET@HOST.held: never sent as they are, nor taken over; so are those of any other
 * host whose job file of the id is not in running/ (a reclaimer that died before taking them
 * along), and this host's own (one listing of outbox/ per pass, logged). Loop thread.
 * Returns how many of from_host's. An entry that could not be taken (a failure but ENOENT, or
 * outbox/ unlisted) is said in why (its first, with errno; "" when all were; why may be NULL):
 * the reclaim is not done, and is tried again. */
int outbox_take_along(struct outbox *o, const char *task_id, const char *from_host, char *why,
		      size_t why_len);
/* Around a pass of reclaims: outbox/ is listed once, at the first outbox_take_along, for all
 * of them. Loop thread. */
void outbox_reclaims_begin(struct outbox *o);
void outbox_reclaims_end(struct outbox *o);
/* Whether this host holds entries of task_id's end events (one listing of outbox/ the first
 * time). Loop thread. */
bool outbox_holds(struct outbox *o, const char *task_id);
/* The targets of the entries this host holds for task_id (each read once). Loop thread. */
void outbox_held_targets(struct outbox *o, const char *task_id, struct outbox_targets *out);
void outbox_targets_release(struct outbox_targets *t);
/* The job's run here is over: its held entries go, but for those of end (a job.* type, NULL =
 * none), which become entries to send (when the dead host's staged publication is completed).
 * Loop thread: before the job leaves running/, or once its publication, whose entries go to
 * the held targets too, is out. Returns how many were removed. */
int outbox_release_held(struct outbox *o, const char *task_id, const char *end);
/* The job goes back to wait (or ends another way): the entries held for it are removed, and
 * when there were any, a line says so and why. Loop thread. Returns how many. */
int outbox_drop_held(struct outbox *o, const char *task_id, const char *why);
void outbox_batch_release(struct outbox_batch *b);

struct outbox_stats {
	uint64_t delivered;      /* webhooks answered 2xx */
	uint64_t failures;       /* attempts that failed (each retried) */
	uint64_t dropped;        /* given up */
	uint64_t hooks_run;
	long backlog;            /* entries seen in outbox/ at the last scan */
	long gone;               /* endpoints disabled now (control/gone.*, every host's) */
	long parked;             /* our entries waiting for such an endpoint */
};

/* busy(arg, task_id): true while the daemon holds that job (it is not published yet), or any
 * host's file of it was in running/ at the last rescan: its end is not known yet. */
typedef bool outbox_busy_fn(void *arg, const char *task_id);

/* control (borrowed) is the daemon's view of control/, reread by its owner: the endpoints
 * that answered 410 Gone. */
struct outbox *outbox_new(struct loop *loop, struct http *http, struct iopool *pool,
			  struct spool *spool, struct config *const *cfgp, struct control *control,
			  outbox_busy_fn *busy, void *busy_arg);
/* Cancels deliveries in flight and kills running hooks: their entries stay for the next start. */
void outbox_free(struct outbox *o);
/* Looks at outbox/ and starts what is due (after a publication, on a timer, on each rescan). */
void outbox_scan(struct outbox *o);
const struct outbox_stats *outbox_stats(const struct outbox *o);
/* Enables every webhook endpoint that answered 410 Gone (a reload): removes control/gone.*
 * and sends what was parked for them. */
void outbox_enable_endpoints(struct outbox *o);

#endif
