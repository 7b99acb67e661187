/* finish.c - the end of a job this daemon holds, on the loop and in the I/O pool: its result
 * (result_info) built from the task, a succeeded job's images stored first when [store] is set
 * (the job waits in running/, leased), its events queued ([notify]), then its publication into
 * done/ or failed/ as a group commit of every task waiting for one (publish.c does the files).
 * A publication that fails is tried again every disk_retry_interval, from its staging once it
 * is committed; one that cannot succeed sends a paid result to failed/ with its images; a job
 * another daemon reclaimed is not published twice. Nothing here ends the daemon. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attempt.h"
#include "config.h"
#include "dispatch_impl.h"
#include "keyshare.h"
#include "finish.h"
#include "job.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "outbox.h"
#include "provider_state.h"
#include "publish.h"
#include "result.h"
#include "sidecar.h"
#include "spool.h"
#include "store.h"
#include "syncset.h"
#include "task.h"
#include "util.h"
#include "webhook.h"
#include "banned.h"

/* A group commit: every task waiting to be published goes through one pass (publish_batch),
 * so their files and directories are synced together, a few barriers for the whole batch. */
/* A published job's bulk (its images' bytes, the answer parsed, the texts written), freed on
 * the helper that made or last used most of it: the loop then only logs the job and frees the
 * task. Nothing on the loop reads these while the task is the pool's. */
static void drop_published(struct task *t)
{
	for (size_t i = 0; i < t->n_images; i++) {
		free(t->images[i].data);
		t->images[i].data = NULL;
	}
	t->result.images = NULL;
	t->result.usage = NULL;   /* the answer's */
	response_release(&t->resp);
	free(t->result_json);
	t->result_json = NULL;
	free(t->final_job_text);
	t->final_job_text = NULL;
}

static void publish_work(void **args, size_t n)
{
	struct spool *sp = ((struct task *)args[0])->d->spool;
	stop_point("publish:staging");   /* a test holds the helper here: a stalled disk */
	struct publish_job *jobs = xcalloc(n, sizeof(*jobs));
	struct publish_job **todo = xcalloc(n, sizeof(*todo));
	/* What each pass says when it fails, kept in the task's words only then. */
	char (*errs)[sizeof(((struct task_words *)0)->publish_err)] = xcalloc(n, sizeof(*errs));
	size_t m = 0;
	struct syncset ss;
	spool_syncset(sp, &ss, n);
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		/* A cost the loop counted (a cancel's, a restart's): in the ledger before the
		 * records that count it leave running/ (attempt_after_ledger). */
		if (t->records_after_gen && !keyshare_written(t->d->ks, t->records_after_gen))
			keyshare_write(t->d->ks);
		if (!t->result_json) {   /* the task's data is the pool's until publish_done */
			size_t own;
			t->result_json = result_to_json(&t->result, &own);
			if (!t->result_json) {   /* failed in publish_done, nothing written */
				t->result_over = own;
				continue;
			}
		}
		if (!t->final_job_text && t->job_text)
			t->final_job_text = task_job_text(t, 0, t->succeeded ? "succeeded" : "failed");
		/* Events are queued before the job is published (the batch's first barrier makes
		 * them durable): once it is, they cannot be lost. A job another daemon reclaimed is
		 * its to announce, so with events its file is looked for first; without, the
		 * rewrite and the commit find it gone (they are the fence). */
		bool gone = t->fenced || t->publish_committed ||
			    (t->events.n && !spool_still_ours(sp, t->running_name));
		if (t->events.n && !gone && outbox_write_in(sp, &t->events, &ss) < 0) {
			int err = errno;
			xsnprintf(task_words(t)->publish_err, sizeof(t->words->publish_err),
				  "cannot write outbox/: %s", strerror(err));
			t->publish_rc = PUBLISH_RETRY;
			continue;
		}
		jobs[i] = (struct publish_job){
			.dest = t->succeeded ? SPOOL_DONE : SPOOL_FAILED, .id = t->id,
			.running_name = t->running_name, .images = t->images, .n_images = t->n_images,
			.result_json = t->result_json, .job_text = t->final_job_text,
			.earlier_runs = t->runs_total > 0, .records_final = t->records_final,
			.gone = gone, .err = errs[i], .errsize = sizeof(errs[i]) };
		todo[m++] = &jobs[i];
	}
	publish_batch(sp, todo, m, &ss);
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		if (jobs[i].id) {
			t->publish_rc = jobs[i].rc;
			/* Read by the loop's heartbeat: set in publish_done, on the loop. */
			t->publish_pass_committed = jobs[i].committed;
			/* Past its rewrite a failed pass leaves records that say finished. */
			t->records_final |= t->publish_rc != PUBLISH_OK;
			if (t->publish_rc == PUBLISH_OK) {
				sidecar_unlink(t);   /* the job has left running/ with its records */
				drop_published(t);
			} else
				memcpy(task_words(t)->publish_err, errs[i], sizeof(errs[i]));
		}
	}
	syncset_release(&ss);
	free(errs);
	free(todo);
	free(jobs);
}

static void publish_done(void *arg);

/* RESULT_HEADROOM, or less from IMGSPOOLD_RESULT_HEADROOM: a test hook (spool-layout.md §6) that
 * makes a result too big without a bug. Read on the loop only. */
static size_t result_headroom(void)
{
	static long headroom = -1;
	if (headroom < 0) {
		const char *v = getenv("IMGSPOOLD_RESULT_HEADROOM");
		if (!v || parse_long(v, 1, RESULT_HEADROOM, &headroom) < 0)
			headroom = RESULT_HEADROOM;
	}
	return (size_t)headroom;
}

static int64_t publish_again(struct loop *loop, void *arg)
{
	(void)loop;
	struct task *t = arg;
	t->timer = 0;
	task_pool_submit_batched(t, publish_work, publish_done);
	return LOOP_TIMER_DONE;
}

static void publish_done(void *arg)
{
	struct task *t = arg;
	t->in_pool = false;
	if (t->result_over) {
		/* A part that should be bounded was not (a bug): the job fails with a result of only
		 * what is bounded by construction, its paid images beside it, its records whole. */
		size_t over = t->result_over;
		t->result_over = 0;
		t->result_trimmed = true;
		log_job(LOG_ERROR, t->id, "its result would take %zu bytes besides its metadata, more "
			"than a result may (%zu): failing it with the attempts, usage and upstream "
			"message left out", over, result_headroom());
		char images[160] = "";
		if (t->n_images)
			xsnprintf(images, sizeof(images), "; its %zu image(s) were generated (and "
				  "charged) and are in failed/ beside this result", t->n_images);
		finish_fail(t, "publish_failed", NULL, "the result would take %zu bytes besides the "
			    "job's metadata, more than the %zu a result may: it lists none of its "
			    "attempts (the job file's records do) and no usage%s", over,
			    result_headroom(), images);
		return;
	}
	t->publish_committed |= t->publish_pass_committed;
	if (t->publish_rc == PUBLISH_OK)
		t->sidecars = 0;   /* removed by publish_work */
	if (t->publish_rc != PUBLISH_OK && t->publish_rc != PUBLISH_FENCED && t->publish_committed) {
		/* Past its commit the job file is in its staging directory: the publication can only
		 * be finished from there, whatever the error (a directory planted in done/ after the
		 * check, a full disk). It is neither failed nor called again, its events stay
		 * queued, and it is tried again until it goes through. */
		log_job(t->publish_stuck_said ? LOG_DEBUG : LOG_ERROR, t->id,
			"cannot finish publishing into %s/: %s; its publication is committed (durable "
			"in running/): finishing it from there, tried again every %lds",
			t->succeeded ? "done" : "failed", task_words(t)->publish_err,
			t->d->cfg->disk_retry_interval);
		t->publish_stuck_said = true;
		/* A restart finishes it (recovery_resume_publications). */
		if (task_leave_if_cut(t, "with its publication committed"))
			return;
		t->timer = loop_add_timer(t->d->loop, t->d->cfg->disk_retry_interval * 1000,
					  publish_again, t);
		return;
	}
	/* Events written for a publication that did not happen: the reclaimer, the failure
	 * below or a restart announces the job's real end. */
	if (t->publish_rc == PUBLISH_FENCED || t->publish_rc == PUBLISH_PERMANENT)
		outbox_withdraw(t->d->spool, &t->events);
	if (t->publish_rc == PUBLISH_FENCED) {
		log_job(LOG_WARN, t->id, "lost the job to another daemon (our lease ran out): "
			"not publishing a second result");
		sidecar_drop(t);
		task_free(t);
		return;
	}
	if (t->publish_rc == PUBLISH_PERMANENT && t->succeeded) {
		/* Trying again cannot help: the job ends in failed/, its paid images beside it. */
		char why[sizeof(t->words->publish_err)];
		xsnprintf(why, sizeof(why), "%s", task_words(t)->publish_err);
		free(t->result_json);
		t->result_json = NULL;
		finish_fail(t, "publish_failed", NULL, "the images were generated (and charged) but cannot be "
			  "published in done/: %s; they are in failed/ beside this result", why);
		return;
	}
	if (t->publish_rc == PUBLISH_PERMANENT) {
		log_job(LOG_ERROR, t->id, "cannot publish the result: %s; the job is left in running/ "
			"with its saved response and is not tried again until a restart",
			task_words(t)->publish_err);
		task_free(t);
		return;
	}
	if (t->publish_rc < 0) {
		/* Disk full, quota, I/O error: the job stays in running/ and its result (maybe paid
		 * for) stays in memory; try again rather than lose it. */
		log_job(t->publish_failures++ ? LOG_DEBUG : LOG_ERROR, t->id,
			"cannot publish the result (%s); retrying every %lds",
			task_words(t)->publish_err, t->d->cfg->disk_retry_interval);
		t->d->disk_checked = 0;   /* look at the free space again before claiming more */
		if (task_leave_if_cut(t, "until there is room to publish"))
			return;
		t->timer = loop_add_timer(t->d->loop, t->d->cfg->disk_retry_interval * 1000,
					  publish_again, t);
		return;
	}
	metrics_finished(t->succeeded);   /* its sidecars went in publish_work */
	task_control_forget(t);
	task_drop_held_events(t, "its publication's events announce its end to their targets");
	if (t->succeeded)
		log_job(LOG_INFO, t->id, "done: %zu image(s) in done/ after %zu attempt(s)",
			t->n_images, attempt_count(t));
	else
		log_job(LOG_INFO, t->id, "failed: %s: %s", t->error_code,
			task_words(t)->error_message);
	struct dispatch *d = t->d;
	bool queued = t->events.n;
	task_free(t);
	if (queued)
		outbox_scan(d->outbox);   /* its events may go now */
}

/* Whether finished jobs have events to send ([notify]): if not, none is built. */
static bool events_wanted(const struct dispatch *d)
{
	return config_notify_enabled(d->cfg) || d->cfg->notify_exec;
}

/* The outbox entries of an event of t ([notify]): none when nothing is configured. */
void finish_event(struct task *t, const char *state, json_t *data)
{
	struct dispatch *d = t->d;
	outbox_batch_release(&t->events);
	bool terminal = !strcmp(state, "succeeded") || !strcmp(state, "failed");
	/* A dead host's end events held here: their targets hear the end reached here too. They
	 * go once the publication, whose entries are for them, is out (publish_done). */
	struct outbox_targets held = { 0 };
	if (terminal && t->events_held)
		outbox_held_targets(d->outbox, t->id, &held);
	if (terminal && t->cut_events_since_ms != INT64_MAX) {
		const char *other = t->succeeded ? "job.failed" : "job.succeeded";
		if (outbox_withdraw_since(d->outbox, t->id, other, t->cut_events_since_ms, &held) > 0)
			log_job(LOG_INFO, t->id, "took back the %s event queued by the publication a "
				"restart cut: it %s", other, t->succeeded ? "succeeded" : "failed");
	}
	if (!events_wanted(d) && !held.n_urls && !held.exec) {
		json_decref(data);
		return;
	}
	char *type = xasprintf("job.%s", state);
	char *path = xasprintf("%s%s%s/%s/%s.result.json", d->spool->path[0] == '/' ? "" : d->cwd,
			       d->spool->path[0] == '/' ? "" : "/", d->spool->path,
			       t->succeeded ? "done" : "failed", t->id);
	struct outbox_event ev = { .task_id = t->id, .type = type, .state = state,
				   .seq = strcmp(state, "deferred") ? 0 : t->retry_count,
				   .job_url = t->job.webhook_url, .result_path = path,
				   .now_ms = wall_ms(), .held = &held };
	outbox_event_entries(d->cfg, d->spool->host_id, &ev, data, &t->events);
	outbox_targets_release(&held);
	free(type);
	free(path);
}

static void upload_done(void *arg, struct image *images, char **urls, size_t n)
{
	struct task *t = arg;
	t->upload = NULL;
	t->images = images;
	t->n_images = n;
	t->urls = urls;
	finish_task(t);
}

/* What must happen before a result may be published: a succeeded job's images go to the store
 * first (the job waits in running/, leased, until they are there). True while it waits. */
static bool before_publish(struct task *t)
{
	struct dispatch *d = t->d;
	if (!t->succeeded || !t->n_images || t->urls || !config_store_enabled(d->cfg))
		return false;
	if (task_leave_if_cut(t, "until its images are stored"))   /* it may be down for hours */
		return true;
	t->state = T_UPLOADING;
	t->upload = store_upload_start(d->store, t->id, t->images, t->n_images, upload_done, t);
	t->images = NULL;   /* the upload holds them until upload_done, which gives them back */
	t->n_images = 0;
	return true;
}

void finish_task(struct task *t)
{
	struct dispatch *d = t->d;
	if (t->xfer)
		http_cancel(d->http, t->xfer);
	t->xfer = NULL;
	if (before_publish(t))
		return;
	const struct outcome *o = &t->outcome;
	const char *upstream_message = NULL;   /* bounded, for the result */
	if (o->upstream_message && o->upstream_message[0]) {
		struct task_words *w = task_words(t);
		xsnprintf(w->upstream_message, sizeof(w->upstream_message), "%s", o->upstream_message);
		upstream_message = w->upstream_message;
	}
	free(t->result_provider);
	free(t->result_currency);
	const char *provider = t->prov ? provider_state_name(t->prov) : t->job.provider;
	t->result_provider = provider ? xstrdup(provider) : NULL;
	t->result_currency = xstrdup(d->cfg->prices.currency);
	size_t metadata_len = 0;   /* the client's bytes: t->job_text lasts until the publication */
	const char *metadata = t->job.metadata && t->job_text
			       ? job_member_bytes(t->job_text, t->job_len, "metadata", &metadata_len) : NULL;
	t->result = (struct result_info){
		.task_id = t->id,
		.succeeded = t->succeeded,
		.provider = t->result_provider,
		.model = t->model,
		.dialect = t->model ? dialect_name(t->dialect) : NULL,
		.images = t->images,
		.n_images = t->n_images,
		.images_dropped = t->images_dropped,
		.urls = t->urls,
		.attempts = t->attempts,
		.elided = &t->elided,
		.retry_count = t->retry_count,
		.created_wall_ms = t->created_wall_ms,
		.updated_wall_ms = wall_ms(),
		.latency_ms = mono_ms() - t->claimed_mono,
		.usage = t->resp.usage,
		.currency = t->result_currency,
		.metadata = metadata,
		.metadata_len = metadata_len,
		.error_code = t->error_code,
		.error_message = t->words ? t->words->error_message : NULL,
		.error_upstream_message = upstream_message,
		.error_field = t->words && t->words->error_field[0] ? t->words->error_field : NULL,
		.trimmed = t->result_trimmed,
		.headroom = result_headroom(),
	};
	free(t->result_json);
	t->result_json = NULL;   /* built by publish_work, on the helper thread */
	free(t->final_job_text);
	t->final_job_text = NULL;   /* built by publish_work, on the helper thread */
	if (events_wanted(d) || t->events_held)   /* the result's values, not written on the loop */
		finish_event(t, t->succeeded ? "succeeded" : "failed", result_event_data(&t->result));
	t->state = T_PUBLISHING;
	task_pool_submit_batched(t, publish_work, publish_done);
}

void finish_fail(struct task *t, const char *code, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct task_words *w = task_words(t);
	vsnprintf(w->error_message, sizeof(w->error_message), fmt, ap);
	va_end(ap);
	t->succeeded = false;
	t->error_code = code;
	xsnprintf(w->error_field, sizeof(w->error_field), "%s", field ? field : "");
	finish_task(t);
}
