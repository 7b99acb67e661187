/* task.c - a job this daemon holds (struct task, task.h): the object itself. Made at the claim
 * (or when recovery finds the job in running/), given its provider, filled from the records of
 * earlier runs, its job file rewritten with them, handed to the I/O pool, and freed, letting go
 * of everything it held: its slot or place in the ready line, its call, its ticket among every
 * host's calls, its provider, its images and events. What happens to it between, its life, is
 * dispatch.c's. Nothing here fails. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attempt.h"
#include "control.h"
#include "dispatch_impl.h"
#include "http.h"
#include "iopool.h"
#include "keyshare.h"
#include "log.h"
#include "loop.h"
#include "outbox.h"
#include "provider_state.h"
#include "record.h"
#include "sidecar.h"
#include "slots.h"
#include "spool.h"
#include "store.h"
#include "task.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

struct task *task_new(struct dispatch *d, const char *id)
{
	struct task *t = xcalloc(1, sizeof(*t));
	t->cut_events_since_ms = INT64_MAX;
	t->d = d;
	xsnprintf(t->id, sizeof(t->id), "%s", id);
	t->running_name = spool_running_name(d->spool, id);
	t->claimed_mono = mono_ms();
	t->attempts = json_array();
	t->body_fd = -1;
	t->sidecars = SIDECARS_UNKNOWN;
	strset_add(&d->held, id);
	t->next = d->tasks;
	if (d->tasks)
		d->tasks->prev = t;
	d->tasks = t;
	d->n_tasks++;
	return t;
}

void task_free(struct task *t)
{
	struct dispatch *d = t->d;
	if (t->prev)
		t->prev->next = t->next;
	else
		d->tasks = t->next;
	if (t->next)
		t->next->prev = t->prev;
	d->n_tasks--;
	strset_del(&d->held, t->id);
	if (t->state == T_READY)
		slots_ready_remove(t);
	slots_unwait(t);
	if (t->xfer)
		http_cancel(d->http, t->xfer);
	if (t->calling)
		slots_call_ended(t);
	if (t->reserved)   /* the call ended without an answer: it may have been billed */
		attempt_settle(t, true, t->reserve_known, t->reserve);
	keyshare_release(d->ks, &t->ticket);
	if (t->timer)
		loop_del_timer(d->loop, t->timer);
	if (t->prov)
		provider_state_unuse(t->prov, t->is_probe);
	store_upload_cancel(t->upload);
	outbox_batch_release(&t->events);
	for (size_t i = 0; i < t->n_images; i++) {
		free(t->images[i].data);
		if (t->urls)
			free(t->urls[i]);
	}
	free(t->images);
	free(t->urls);
	json_decref(t->attempts);
	json_decref(t->runs);
	free(t->res.body);
	response_release(&t->resp);
	request_release(&t->req);
	job_release(&t->job);
	free(t->model);
	free(t->running_name);
	free(t->answered_mark);
	free(t->result_json);
	free(t->result_provider);
	free(t->result_currency);
	free(t->final_job_text);
	free(t->job_text);
	free(t->words);
	if (t->body_fd >= 0)
		close(t->body_fd);
	free(t);
}

struct task_words *task_words(struct task *t)
{
	if (!t->words)
		t->words = xcalloc(1, sizeof(*t->words));
	return t->words;
}

/* model: the target's, for a routed job; NULL: the job's own or the provider's default. */
void task_set_provider(struct task *t, struct provider_state *prov, const char *model,
		       bool may_probe)
{
	t->prov = prov;
	t->is_probe = provider_state_use(prov, may_probe);
	t->routed = model != NULL;
	t->model = xstrdup(model ? model : t->job.model ? t->job.model
			   : provider_state_config(prov)->model);
	t->dialect = upstream_dialect(t->model);
}

/* Takes the daemon's records back from a job file (st: its fstat) into t and rec. Records in a
 * file another user wrote are ignored; the rest are held to record.c's rule: they can only use
 * up budget. rec keeps what the caller decides on (finished, retry_at_ms). */
void task_restore_state(struct task *t, const struct stat *st, struct record *rec)
{
	struct dispatch *d = t->d;
	const json_t *state = t->job.state;
	struct record_limits lim = { .max_retries = (int)d->cfg->max_retries,
				     .max_billed_retries = (int)d->cfg->max_billed_retries,
				     .max_crash_requeues = (int)d->cfg->max_crash_requeues };
	if (state && !dispatch_written_by_daemon(d, st)) {
		log_job(LOG_WARN, t->id, "ignoring the \"imgspool\" records in a job file written by uid "
			"%u, not by the daemon's user: the job runs as if submitted fresh",
			(unsigned)st->st_uid);
		state = NULL;
	}
	record_init(rec);
	record_restore(rec, state, &lim);
}

/* Puts the records into the task. */
void task_apply_record(struct task *t, const struct record *rec)
{
	json_decref(t->attempts);
	t->attempts = json_incref(rec->attempts);
	t->elided = rec->elided;
	json_decref(t->runs);
	/* None: NULL, not an empty array held through the call. */
	t->runs = json_array_size(rec->runs) || rec->runs_total ? json_incref(rec->runs) : NULL;
	t->runs_total = rec->runs_total;
	t->retry_count = rec->retry_count;
	t->billed_retries = rec->billed_retries;
	t->crashes = rec->crashes;
	t->finish_crashes = rec->finish_crashes;
	if (rec->created_at_ms > 0)
		t->created_wall_ms = rec->created_at_ms;
}

/* The job file with our records ("imgspool") added, so they survive a move and a restart.
 * retry_at_ms: the due time when written for a deferral, else 0; finished: "succeeded" or
 * "failed" when written for the publication, else NULL. */
char *task_job_text(const struct task *t, int64_t retry_at_ms, const char *finished)
{
	/* record_json reads runs only when there were runs. */
	json_t *none = t->runs || !t->runs_total ? NULL : json_array();
	struct record r = {
		.attempts = t->attempts, .elided = t->elided,
		.runs = t->runs ? t->runs : none,
		.runs_total = t->runs_total, .retry_count = t->retry_count,
		.billed_retries = t->billed_retries, .crashes = t->crashes,
		.finish_crashes = t->finish_crashes,
		.created_at_ms = t->created_wall_ms, .retry_at_ms = retry_at_ms,
	};
	if (finished) {
		xsnprintf(r.finished, sizeof(r.finished), "%s", finished);
		xsnprintf(r.error_code, sizeof(r.error_code), "%s", t->error_code ? t->error_code : "");
	}
	char *records = record_text(&r);
	json_decref(none);
	/* Spliced onto the client's bytes, never re-serialised: the file stays within the read cap. */
	char *text = job_with_records(t->job_text, t->job_len, records, NULL);
	free(records);
	return text;
}

/* Hands t to a helper thread; until done() runs, the loop must not touch t or its files. */
void task_pool_submit(struct task *t, iopool_fn *work, iopool_fn *done)
{
	t->in_pool = true;
	iopool_submit(t->d->pool, work, done, t);
}

/* The same, in one pass with every other task waiting for the same batch work. */
void task_pool_submit_batched(struct task *t, iopool_batch_fn *work, iopool_fn *done)
{
	t->in_pool = true;
	iopool_submit_batched(t->d->pool, work, done, t);
}

void task_drop_held_events(struct task *t, const char *why)
{
	if (!t->events_held)
		return;
	t->events_held = false;
	outbox_drop_held(t->d->outbox, t->id, why);
}

/* The job left our running/: its requests are fulfilled, or moot. */
void task_control_forget(struct task *t)
{
	struct dispatch *d = t->d;
	if (control_wants(&d->control, CONTROL_HOLD, t->id))
		control_withdraw(d->spool, CONTROL_HOLD, t->id);
	if (control_wants(&d->control, CONTROL_CANCEL, t->id))
		control_withdraw(d->spool, CONTROL_CANCEL, t->id);
}
