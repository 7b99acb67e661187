/* deferral.c - a retry waits out its backoff in deferred/, where the job file's mtime is its due
 * time: the move there (or to hold/ when an operator asked), and the jobs coming due again.
 * When deferred/ cannot be written, the retry waits in memory instead and the job stays in
 * running/, where a restart finds it; a shutdown tries deferred/ again, with its due time,
 * before new/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deferral.h"
#include "dispatch_impl.h"
#include "finish.h"
#include "intake.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "provider_state.h"
#include "sidecar.h"
#include "slots.h"
#include "task.h"
#include "banned.h"

static int64_t deferred_due(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->deferred_timer = 0;
	deferral_scan(d);
	return LOOP_TIMER_DONE;
}

/* Jobs in deferred/ whose mtime has passed become pending; a timer waits for the next one. A job
 * is stat'ed when first listed (for its due time) and again once that time has come (it may
 * have been deferred again since, under the same name): not at every rescan in between. */
void deferral_scan(struct dispatch *d)
{
	struct spool_entry *e;
	long n = spool_list_at(d->spool->fd[SPOOL_DEFERRED], false, false, &e);
	/* Said once, not at every rescan; again when it changes. */
	int err = n < 0 ? errno : 0;
	if (err && err != d->deferred_list_err)
		error("cannot read '%s/deferred': %s", d->spool->path, strerror(err));
	else if (!err && d->deferred_list_err)
		log_info("'%s/deferred' can be read again", d->spool->path);
	d->deferred_list_err = err;
	if (n < 0)
		return;
	d->deferred_jobs = n;
	char key = intake_known_dir(SPOOL_DEFERRED);
	/* Due times are the file server's: another host's clock may be off. */
	int64_t now_ns = n ? spool_server_now(d->spool) * 1000000 : 0, next_ns = 0, now = mono_ms();
	known_begin(&d->known, key);
	for (long i = 0; i < n; i++) {
		unsigned type = e[i].id.mode ? IFTODT(e[i].id.mode) : DT_UNKNOWN;
		enum known_look look = known_listed(&d->known, key, e[i].name, e[i].id.ino, type, now);
		const struct file_id *waits = known_waiting(&d->known, key, e[i].name);
		if (look == KNOWN_UNCHANGED && (!waits || waits->mtime_ns > now_ns)) {
			if (waits && (!next_ns || waits->mtime_ns < next_ns))
				next_ns = waits->mtime_ns;
			continue;   /* queued, ignored, or not due yet */
		}
		if (spool_entry_stat(d->spool, SPOOL_DEFERRED, &e[i]) < 0) {
			known_forget(&d->known, key, e[i].name);
			continue;
		}
		if (e[i].mtime_ns <= now_ns) {
			intake_add(d, SPOOL_DEFERRED, e[i].name, &e[i].id);
			continue;
		}
		known_wait(&d->known, key, e[i].name, &e[i].id);
		if (!next_ns || e[i].mtime_ns < next_ns)
			next_ns = e[i].mtime_ns;
	}
	spool_entries_free(e, n);
	intake_sweep(d, SPOOL_DEFERRED);
	if (next_ns)
		deferral_arm(d, next_ns / 1000000);
}

static int64_t retry_due(struct loop *loop, void *arg)
{
	(void)loop;
	struct task *t = arg;
	t->timer = 0;
	slots_unwait(t);
	deferral_retry(t);
	return LOOP_TIMER_DONE;
}

/* A waiting retry's timer, to fire at until (mono ms; 0: none). Every call's end judges the
 * waiting retries again: one whose wait ends at the same time keeps the timer it has. */
static void retry_timer_set(struct task *t, int64_t until)
{
	if (t->timer && t->timer_due == until)
		return;
	if (t->timer)
		loop_del_timer(t->d->loop, t->timer);
	t->timer = 0;
	t->timer_due = until;
	if (until > 0)
		t->timer = loop_add_timer(t->d->loop, until - mono_ms(), retry_due, t);
}

/* A retry waiting in memory (deferred/ could not be written) obeys what the pump obeys. Once
 * due, a retry that cannot call waits in slots.c's queue of retries, which is walked when what
 * it waits for may have changed: a call ends (a slot, its provider's own calls, the ramp), or
 * slots_recheck (control/ changed: an operator's pause or resume; a reload; a hold; the answers
 * recovered from before a restart are billed). Nothing else ends those waits, so they have no
 * timer. A wait that ends with time (a 429's pause, a rate window) has one besides; so do the
 * waits that only another host can end (every host's calls fill the shared concurrency or
 * rate, a budget is spent): a call ending elsewhere sends this host no event, so it looks
 * again when keyshare says (a quarter to half a second while full, poll_interval over
 * budget), a few file operations each time (spool-layout.md §17). */
void deferral_retry(struct task *t)
{
	if (t->d->draining || (provider_state_held(t->prov) && !provider_state_probing(t->prov))) {
		if (t->d->draining)
			deferral_leave(t, "shutting down");
		else
			task_requeue(t, "provider on hold");
		return;
	}
	int64_t until = provider_state_blocked_until(t->prov, mono_ms());
	/* No slot of ours: wait for one (a call ending frees it) before taking a ticket among
	 * every host's calls, which would idle in the ready line meanwhile. */
	if (until == 0 && !slots_available(t->d) && provider_state_shared(t->prov)) {
		retry_timer_set(t, 0);
		slots_wait(t);
		return;
	}
	if (until == 0 && !provider_state_take_share(t->prov, &t->job, t->model, &t->ticket))
		until = provider_state_blocked_until(t->prov, mono_ms());
	if (until != 0) {
		if (log_enabled(LOG_DEBUG))
			log_job(LOG_DEBUG, t->id, "its retry waits for provider '%s' (%s)",
				provider_state_name(t->prov), provider_state_wait_name(t->prov, mono_ms()));
		slots_wait(t);
		retry_timer_set(t, until > 0 ? until : 0);
		return;
	}
	retry_timer_set(t, 0);
	task_send_attempt(t);
}

/* At shutdown a retry waiting in memory goes where its deferral would have put it, deferred/
 * with its due time as mtime, so that no host (nor this one restarted) calls before its
 * backoff is over; to new/ (keeping that mtime) only when deferred/ still cannot be written,
 * and left in running/ when new/ cannot take its records either (task_requeue).
 * A hold or a cancel sends it to hold/, as any requeue at shutdown (task_requeue). */
void deferral_leave(struct task *t, const char *why)
{
	struct dispatch *d = t->d;
	deferral_call_off(t);
	t->state = T_BACKOFF;   /* from a failed move too: task_requeue keeps its due time */
	if (control_wants(&d->control, CONTROL_HOLD, t->id) ||
	    control_wants(&d->control, CONTROL_CANCEL, t->id)) {
		task_requeue(t, why);
		return;
	}
	task_drop_held_events(t, TASK_WAITS_AGAIN);
	char *name = xasprintf("%s.json", t->id);
	char *text = task_job_text(t, t->defer_due, NULL);
	int rc = text ? spool_move_rewritten(d->spool, t->running_name, SPOOL_DEFERRED, name, text,
					     strlen(text), t->defer_due, SPOOL_NOREPLACE_IF_NATIVE)
		      : -1;
	int err = errno;
	bool written = text != NULL;
	free(text);
	free(name);
	if (rc < 0) {
		log_job(LOG_WARN, t->id, "cannot move to deferred/ (%s): to new/ instead, where any "
			"host may call it before its due time", written ? strerror(err) : "no records");
		task_requeue(t, why);
		return;
	}
	char when[48];
	format_time_iso8601(t->defer_due, when, sizeof(when));
	log_job(LOG_INFO, t->id, "deferred (%s): retry %d at %s (%s)", why, t->retry_count, when,
		t->outcome.code);
	sidecar_drop(t);
	task_control_forget(t);
	task_free(t);
}

void deferral_call_off(struct task *t)
{
	if (t->timer)
		loop_del_timer(t->d->loop, t->timer);
	t->timer = 0;
	slots_unwait(t);
}

void deferral_arm(struct dispatch *d, int64_t due_wall_ms)
{
	if (d->deferred_timer && due_wall_ms >= d->deferred_due)
		return;
	if (d->deferred_timer)
		loop_del_timer(d->loop, d->deferred_timer);
	d->deferred_due = due_wall_ms;
	d->deferred_timer = loop_add_timer(d->loop, due_wall_ms - spool_server_now(d->spool) + 1,
					   deferred_due, d);
}

/* deferred/, or hold/ when an operator asked. Set on every path to deferral_work: a zero
 * defer_dir is SPOOL_TMP, the clients' staging area, where the daemon never looks. */
enum spool_dir deferral_dir(const struct task *t)
{
	return control_wants(&t->d->control, CONTROL_HOLD, t->id) ? SPOOL_HOLD : SPOOL_DEFERRED;
}

void deferral_work(void *arg)
{
	struct task *t = arg;
	char *name = xasprintf("%s.json", t->id);
	t->publish_rc = outbox_write(t->d->spool, &t->events);
	if (t->publish_rc == 0)
		t->publish_rc = spool_move_rewritten(t->d->spool, t->running_name, t->defer_dir, name,
					     t->result_json, strlen(t->result_json), t->defer_due,
					     SPOOL_NOREPLACE_IF_NATIVE);
	if (t->publish_rc < 0) {
		int err = errno;
		xsnprintf(task_words(t)->publish_err, sizeof(t->words->publish_err), "%s",
			  strerror(err));
	}
	free(name);
}

void deferral_done(void *arg)
{
	struct task *t = arg;
	struct dispatch *d = t->d;
	t->in_pool = false;
	free(t->result_json);
	t->result_json = NULL;
	if (t->publish_rc < 0 && !spool_still_ours(d->spool, t->running_name)) {
		log_job(LOG_WARN, t->id, "lost the job to another daemon (our lease ran out)");
		sidecar_drop(t);
		task_free(t);
		return;
	}
	if (t->publish_rc < 0) {
		/* Cannot write deferred/ (disk full?): wait in memory instead; the job stays in
		 * running/, where a restart finds it. */
		if (d->draining) {
			deferral_leave(t, "shutting down");
			return;
		}
		log_job(LOG_WARN, t->id, "cannot move to deferred/ (%s); retrying from memory",
			task_words(t)->publish_err);
		t->state = T_BACKOFF;
		t->timer = loop_add_timer(d->loop, t->defer_due - spool_server_now(d->spool), retry_due, t);
		t->timer_due = 0;   /* by the file server's clock, not retry_timer_set's */
		return;
	}
	char when[48];
	format_time_iso8601(t->defer_due, when, sizeof(when));
	sidecar_drop(t);
	task_control_forget(t);
	if (t->defer_dir == SPOOL_HOLD) {
		log_job(LOG_INFO, t->id, "held: to hold/ instead of deferred/, as an operator asked "
			"(retry %d was due at %s)", t->retry_count, when);
		task_free(t);
		return;
	}
	log_job(LOG_INFO, t->id, "deferred: retry %d at %s (%s)", t->retry_count, when, t->outcome.code);
	d->deferred_jobs++;
	deferral_arm(d, t->defer_due);
	bool queued = t->events.n;
	task_free(t);
	if (queued)
		outbox_scan(d->outbox);
}

/* Waits out the backoff in deferred/ (its mtime is the due time), freeing the slot meanwhile. */
/* A retry an operator cancelled (a request still there, not withdrawn since it was read) ends
 * the job as cancelled instead: true when it did. */
static bool cancelled_before_retry(struct task *t)
{
	if (!control_still_wants(&t->d->control, t->d->spool, CONTROL_CANCEL, t->id))
		return false;
	finish_fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) before its retry");
	return true;
}

void deferral_resume(struct task *t, int64_t due)
{
	if (cancelled_before_retry(t))
		return;
	json_t *last = json_array_get(t->attempts, json_array_size(t->attempts) - 1);
	t->outcome.code = "restart";
	if (json_is_string(json_object_get(last, "error_code")))
		t->outcome.code = json_string_value(json_object_get(last, "error_code"));
	t->defer_due = due;
	t->defer_dir = deferral_dir(t);
	t->result_json = task_job_text(t, due, NULL);
	task_drop_held_events(t, TASK_WAITS_AGAIN);
	t->state = T_DEFERRING;
	task_pool_submit(t, deferral_work, deferral_done);
}

void deferral_schedule(struct task *t)
{
	struct dispatch *d = t->d;
	const struct outcome *o = &t->outcome;
	int64_t delay = retry_backoff_ms(t->retry_count, d->cfg->backoff_base_ms,
					 d->cfg->backoff_cap_ms, random64());
	if (o->retry_after_ms > delay)
		delay = o->retry_after_ms;
	t->retry_count++;
	metrics_retry(provider_state_name(t->prov));
	if (o->decision == DECIDE_RETRY_BILLED)
		t->billed_retries++;
	/* A 429 says the provider, not the job, is saturated: nobody calls it before the wait. */
	if (!strcmp(o->code, "rate_limited"))
		provider_state_pause_everywhere(t->prov, delay);
	t->defer_due = spool_server_now(d->spool) + delay;
	/* A saved response carries no Retry-After: the backoff a shutdown left stands. */
	if (t->defer_due < t->defer_floor)
		t->defer_due = t->defer_floor;
	if (cancelled_before_retry(t))
		return;
	t->defer_dir = deferral_dir(t);
	t->result_json = task_job_text(t, t->defer_due, NULL);
	if (!t->result_json) {
		finish_fail(t, "internal", NULL, "the job file could not be rewritten for a retry");
		return;
	}
	if (d->cfg->notify_deferrals) {
		char when[48];
		format_time_iso8601(t->defer_due, when, sizeof(when));
		finish_event(t, "deferred", json_pack("{s:s, s:s, s:s, s:s, s:[], s:[], s:n}",
						   "task_id", t->id, "status", "deferred",
						   "error_code", o->code, "retry_at", when,
						   "images", "urls", "cost"));
	}
	task_drop_held_events(t, TASK_WAITS_AGAIN);
	t->state = T_DEFERRING;
	task_pool_submit(t, deferral_work, deferral_done);
}

