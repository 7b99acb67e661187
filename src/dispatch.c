/* dispatch.c - what happens to a job, from a name in new/ to a file in done/ or failed/.
 *
 * Everything here runs on the loop thread. Blocking work (parsing a large response, writing and
 * fsyncing results) goes to the I/O pool and comes back through a done() callback; while it is
 * away the task is touched by nobody else. A task's states:
 *
 *   (READY ->) CALLING -> PARSING -> (DOWNLOADING) -> (UPLOADING) -> PUBLISHING -> freed
 *                             \-> BACKOFF -> CALLING            (a retry)
 *                             \-> requeued to new/              (hold, shutdown)
 *
 * READY: claimed ahead, waiting in the ready line for a call slot (slots.c).
 *
 * Nothing a job does can end the daemon: every failure on a job's path ends in failed/ with a
 * reason, or leaves the job where a restart finds it.
 *
 * Here: a task's life, the call and its answer, the requeue, shutdown. Its other rooms share
 * dispatch_impl.h: task.c (the task object), intake.c (pending jobs, claims, the pump), slots.c
 * (calls in flight, the ready line), routing.c, provider_state.c, attempt.c (prices, records),
 * sidecar.c, deferral.c, download.c, finish.c (results, publication, events), recovery.c
 * (leases, crashes). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attempt.h"
#include "config.h"
#include "control.h"
#include "deferral.h"
#include "dirtrust.h"
#include "dispatch.h"
#include "dispatch_impl.h"
#include "exitwatch.h"
#include "download.h"
#include "finish.h"
#include "health.h"
#include "http.h"
#include "intake.h"
#include "iopool.h"
#include "job.h"
#include "keyshare.h"
#include "known.h"
#include "log.h"
#include "provider_state.h"
#include "outbox.h"
#include "loop.h"
#include "metrics.h"
#include "price.h"
#include "provider.h"
#include "record.h"
#include "recovery.h"
#include "refs.h"
#include "result.h"
#include "retry.h"
#include "route.h"
#include "scan.h"
#include "secret.h"
#include "sidecar.h"
#include "slots.h"
#include "spend.h"
#include "spool.h"
#include "store.h"
#include "task.h"
#include "tmpclean.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

#define REF_IMAGE_MAX (20u << 20)    /* bytes of one reference image */

static void job_limits_from_config(struct dispatch *d);

void dispatch_counts(const struct dispatch *d, struct dispatch_counts *out)
{
	*out = (struct dispatch_counts){ .running = d->n_tasks + d->others_running,
					 .deferred = d->deferred_jobs };
	for (size_t i = 0; i < d->n_pending; i++) {
		const struct pending *pe = &d->pending[i];
		if (pe->dir != SPOOL_NEW)
			continue;
		out->new_jobs++;
		if (pe->placed && (!out->oldest_pending_ns || pe->mtime_ns < out->oldest_pending_ns))
			out->oldest_pending_ns = pe->mtime_ns;
	}
}

void dispatch_scan(struct dispatch *d)
{
	dispatch_control(d);
	for (int i = 0; i < d->n_providers; i++)
		if (!provider_state_retired(d->providers[i]))
			provider_state_look_at_others(d->providers[i]);
	bool first = !d->new_scan.listings && !scan_busy(&d->new_scan);
	scan_start(&d->new_scan);
	if (!d->scan_timer)
		intake_list_new(d, first ? SCAN_FIRST_SLICE_MS : SCAN_SLICE_MS);
	deferral_scan(d);
	outbox_scan(d->outbox);
	if (!d->draining) {
		recovery_resume_publications(d, true);   /* first: a reclaimed job may need its staging */
		recovery_reclaim_stale(d);
	}
	tmpclean_start(d);   /* on a helper: a tmp/ of 200 000 files never holds up the loop */
}

void dispatch_hint(struct dispatch *d, const char *name)
{
	if (!name) {
		log_warn("inotify queue overflowed: rescanning new/");
		dispatch_scan(d);
		return;
	}
	enum known_look look = known_hint(&d->known, intake_known_dir(SPOOL_NEW), name);
	if (look != KNOWN_LOOK) {
		/* Queued already, it is read when it is claimed; a new one is stat'ed only if it
		 * has to wait its turn (pending_place). */
		if (look == KNOWN_NEW)
			intake_add(d, SPOOL_NEW, name, NULL);
		return;
	}
	struct stat st;
	if (fstatat(d->spool->fd[SPOOL_NEW], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	struct file_id file;
	spool_file_id(&file, &st);
	intake_add(d, SPOOL_NEW, name, &file);
}

void dispatch_pump(struct dispatch *d)
{
	slots_pump(d);
	intake_pump(d);
}

/* ---- providers ---------------------------------------------------------------------------- */

void dispatch_reconfigure(struct dispatch *d, struct config *cfg)
{
	struct config *old = d->cfg;
	/* Provider state carries over by name (a hold, a pause, the calls in flight); a provider
	 * gone from the file keeps its old section until its last job ends. */
	for (int i = d->n_providers - 1; i >= 0; i--)
		provider_state_reload(d->providers[i], cfg, old);
	d->cfg = config_ref(cfg);
	for (int i = 0; i < cfg->n_providers; i++) {
		struct provider_state *p = provider_state_find(d, cfg->providers[i].name);
		if (!p)
			provider_state_new(d, &cfg->providers[i]);
		else
			provider_state_keys_changed(p);
	}
	job_limits_from_config(d);
	config_unref(old);
	slots_recheck(d);   /* limits may have risen for the jobs in the ready line */
	outbox_enable_endpoints(d->outbox);   /* a reload enables endpoints that answered 410 */
}

/* ---- costs -------------------------------------------------------------------------------- */

void dispatch_spend(const struct dispatch *d, const char *provider, struct spend_view *out)
{
	*out = spend_get(&d->spend, provider, spend_day(wall_ms()));
}

const struct store_stats *dispatch_store_stats(const struct dispatch *d)
{
	return store_stats(d->store);
}

const struct outbox_stats *dispatch_outbox_stats(const struct dispatch *d)
{
	return outbox_stats(d->outbox);
}

/* Held here, or in running/ on another host at the last rescan (one that reclaimed it, or
 * died reclaiming it): its end is not known yet. */
static bool task_busy(void *arg, const char *task_id)
{
	struct dispatch *d = arg;
	return strset_has(&d->held, task_id) || strset_has(&d->others_ids, task_id);
}

/* At shutdown, a job whose paid response is saved (running/.ID@HOST.response.200) stays in
 * running/: the restart finishes it from that file, downloads included, without calling again. */
void task_leave_for_restart(struct task *t, const char *why)
{
	sidecar_mark_left(t);   /* so the restart counts no death for it */
	log_job(LOG_WARN, t->id, "shutdown: left in running/ %s; the restart finishes it without "
		"calling again", why);
	task_free(t);
}

bool task_leave_if_cut(struct task *t, const char *why)
{
	if (!t->d->grace_over)
		return false;
	task_leave_for_restart(t, why);
	return true;
}

/* ---- the upstream call ------------------------------------------------------------------------ */

static void decide(struct task *t)
{
	struct dispatch *d = t->d;
	const struct outcome *o = &t->outcome;
	switch (o->decision) {
	case DECIDE_SUCCEEDED:
		if (t->is_probe)
			provider_state_release(t->prov);
		provider_state_succeeded(t->prov);
		/* Only what the job asked for is fetched and kept: a response may carry any number. */
		t->images_dropped = response_keep_first(&t->resp, (size_t)(t->job.n > 0 ? t->job.n : 1));
		if (t->images_dropped)
			log_job(LOG_WARN, t->id, "the response had %zu image(s) more than the %d asked for: "
				"dropped", t->images_dropped, t->job.n);
		/* Inline images move to the task; URLs are fetched before publishing. */
		t->images = t->resp.images;
		t->n_images = t->resp.n_images;
		t->resp.images = NULL;
		t->resp.n_images = 0;
		t->next_url = 0;
		download_start(t);
		return;
	case DECIDE_HOLD:
		provider_state_hold_everywhere(t->prov, o->message);
		task_requeue(t, "provider on hold");
		return;
	case DECIDE_RETRY:
	case DECIDE_RETRY_BILLED:
		if (t->is_probe)
			provider_state_release(t->prov);
		if (d->draining) {
			task_requeue(t, "shutting down");
			return;
		}
		if (t->retry_count < d->cfg->max_retries &&
		    (o->decision == DECIDE_RETRY || t->billed_retries < d->cfg->max_billed_retries)) {
			deferral_schedule(t);
			return;
		}
		t->error_code = o->code;
		xsnprintf(task_words(t)->error_message, sizeof(t->words->error_message),
			  "%s (gave up after %zu attempts)", o->message, attempt_count(t));
		t->succeeded = false;
		finish_task(t);
		return;
	case DECIDE_FAIL:
		if (t->is_probe)
			provider_state_release(t->prov);
		t->error_code = o->code;
		xsnprintf(task_words(t)->error_message, sizeof(t->words->error_message), "%s",
			  o->message);
		t->succeeded = false;
		finish_task(t);
		return;
	}
}

/* A barrier failed with err: the responses it was to make durable are not saved. */
static void not_saved(void **args, size_t n, bool *save, int err)
{
	for (size_t i = 0; i < n; i++)
		if (save[i]) {
			((struct task *)args[i])->save_err = err;
			save[i] = false;
		}
}

/* Responses that arrived together are saved together (a group commit): every complete body is
 * made durable, one barrier (on a journaled ext4 written only: syncset_order); each is renamed
 * to its final name, one barrier when any was; then parsed. A response whose save failed somewhere is not saved (save_err says why): the job goes
 * on from memory. Its name stays as it is: its bytes are durable from the first barrier, and a
 * restart that finds a .response uses it rather than calling again. */
void task_parse_work(void **args, size_t n)
{
	struct spool *sp = ((struct task *)args[0])->d->spool;
	int dirfd = sp->fd[SPOOL_RUNNING];
	struct syncset ss;
	bool *save = xcalloc(n, sizeof(*save));
	size_t n_save = 0, renamed = 0;
	spool_syncset(sp, &ss, n);
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		/* A .partial closed during its call (slots_partial_room) is opened for these steps
		 * only: a wave of answers must not hold a descriptor each. */
		int fd = t->body_fd;
		if (fd < 0 && t->partial_closed && !t->res.body_fd_failed) {
			char *partial = sidecar_name(t, "partial");
			fd = openat(dirfd, partial, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
			free(partial);
			if (fd < 0) {
				t->save_err = errno;
				t->res.body_fd_failed = true;
			}
		}
		/* An upstream may quote the key back: nothing it sent is kept with a secret in it. */
		size_t len = secret_redact(t->res.body, t->res.body_len);
		if (len != t->res.body_len) {
			t->res.body[len] = '\0';
			t->res.body_len = len;
			off_t at = (off_t)t->sidecar_header;
			if (fd >= 0 && (ftruncate(fd, at) < 0 ||
					pwrite(fd, t->res.body, len, at) != (ssize_t)len)) {
				t->save_err = errno ? errno : EIO;
				t->res.body_fd_failed = true;
			}
		}
		/* A complete response is made durable under its final name before anyone acts on
		 * it: from here a crash finishes the job from the file instead of paying again. A
		 * body that never reached its file (above, write_closed_partial, a full disk while
		 * it arrived) is not saved either: save_err says why, or EIO. */
		if (t->res.transport != HTTP_DONE || !t->res.body_fd_failed)
			t->save_err = 0;
		else if (!t->save_err)
			t->save_err = EIO;
		if (fd >= 0 && t->res.transport == HTTP_DONE && !t->res.body_fd_failed) {
			stop_point("save:partial");   /* a test holds the helper here: a stalled disk */
			save[i] = syncset_data(&ss, fd, fd == t->body_fd) == 0;
			if (!save[i])
				t->save_err = errno;
			n_save += save[i];
		}
		if (fd != t->body_fd)
			close(fd);
	}
	/* Its bytes before its name: on a journaled ext4 written, not yet committed (the barrier
	 * after the renames commits both, in that order). */
	if (n_save && syncset_order(&ss) < 0)
		not_saved(args, n, save, errno);   /* left as .partial */
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		if (!save[i])
			continue;
		char suffix[32];
		xsnprintf(suffix, sizeof(suffix), "response.%ld", t->res.status);
		char *partial = sidecar_name(t, "partial"), *response = sidecar_name(t, suffix);
		if (renameat(dirfd, partial, dirfd, response) == 0) {
			t->sidecars = (t->sidecars & ~(unsigned)SIDECAR_PARTIAL) | SIDECAR_RESPONSE;
			syncset_dir(&ss, dirfd);
			renamed++;
		} else {
			save[i] = false;   /* gone: another host took the job (its fence says so) */
		}
		free(partial);
		free(response);
	}
	if (renamed && syncset_barrier(&ss) < 0)
		not_saved(args, n, save, errno);   /* the new names may not survive a crash */
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		if (save[i])
			crash_point("save:response");
		if (t->body_fd >= 0)
			close(t->body_fd);
		t->body_fd = -1;
		response_release(&t->resp);
		upstream_parse_response(t->dialect, t->res.body, t->res.body_len, &t->resp);
		free(t->res.body);
		t->res.body = NULL;
		attempt_judge(t);
	}
	attempt_bill(args, n);
	syncset_release(&ss);
	free(save);
}

void task_parse_done(void *arg)
{
	struct task *t = arg;
	t->in_pool = false;
	if (t->recovered_parse)   /* its cost is in the ledger now (attempt_bill) */
		provider_state_recovered_parse(t->d, -1);
	t->recovered_parse = false;
	attempt_judged(t, !t->fenced);
	if (t->fenced) {
		log_job(LOG_WARN, t->id, "lost the job to another daemon (our lease ran out): "
			"dropping its response");
		sidecar_drop(t);
		task_free(t);
		return;
	}
	if (t->save_err)
		log_job(LOG_ERROR, t->id, "cannot make its response durable (%s): going on from memory; "
			"a crash before its outcome is recorded may call again", strerror(t->save_err));
	if (t->calling)   /* an answer other than a success held its slot until now */
		slots_call_ended(t);
	decide(t);
}

/* The response of a call whose .partial was closed goes there now, as http.c would have
 * written it while it arrived: before anyone acts on it. Closed again at once (the parse
 * opens it for its fsync): a wave of answers must not hold a descriptor each. */
static void write_closed_partial(struct task *t, struct http_result *res)
{
	char *partial = sidecar_name(t, "partial");
	int fd = openat(t->d->spool->fd[SPOOL_RUNNING], partial,
			O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || (res->body_len && write_all(fd, res->body, res->body_len) < 0)) {
		/* Not saved (task_parse_done says so): the job goes on from memory. */
		t->save_err = errno;
		res->body_fd_failed = true;
		log_job(LOG_WARN, t->id, "cannot %s 'running/%s' to write its answer: %s",
			fd < 0 ? "open" : "write", partial, strerror(errno));
	}
	free(partial);
	if (fd >= 0)
		close(fd);
	crash_point("call:answer-written");
}

static void call_done(void *arg, struct http_result *res)
{
	struct task *t = arg;
	t->xfer = NULL;
	t->body_fd = res->body_fd;   /* the .partial comes back with the answer */
	res->body_fd = -1;
	t->save_err = 0;
	if (t->partial_closed)
		write_closed_partial(t, res);
	/* A success gives its slot to the next call at once, while its job is parsed and
	 * published. Any other answer keeps it until it is classified: a refused key must hold
	 * the provider before another call goes out with it. */
	if (res->transport == HTTP_DONE && res->status >= 200 && res->status < 300)
		slots_call_ended(t);
	/* Pause the provider now, not after the body is parsed: calls must not start meanwhile.
	 * The classification may still hold it (an exhausted quota) or lengthen the pause. */
	if (res->transport == HTTP_DONE && res->status == 429) {
		int64_t wait = retry_after_ms(res->retry_after, res->retry_after_ms, wall_ms(), 3600000);
		provider_state_pause_everywhere(t->prov, wait > 0 ? wait : t->d->cfg->backoff_base_ms);
	}
	if (res->transport == HTTP_DONE) {   /* for the mark of an exit that cannot wait for it */
		t->answer_attempt = attempt_count(t) + 1;
		t->answer_status = res->status;
		t->answer_len = res->body_len;
	}
	free(t->res.body);
	t->res = *res;
	res->body = NULL;  /* stolen */
	secret_redact_str(t->res.request_id);
	secret_redact_str(t->res.retry_after);
	secret_redact_str(t->res.retry_after_ms);
	t->cur = (struct attempt){ .started_wall_ms = res->started_wall_ms,
				   .latency_ms = res->latency_ms,
				   .http_status = res->transport == HTTP_DONE ? res->status : 0,
				   .transport = http_transport_name(res->transport),
				   .request_id = t->res.request_id };
	/* A 35 MB body takes jansson a while: parse it off the loop. */
	t->state = T_PARSING;
	attempt_judge_begin(t);
	task_pool_submit_batched(t, task_parse_work, task_parse_done);
	slots_start_ready(t->d);   /* the next call goes out before this one's job is looked at */
}

static struct refs_owner refs_owner_of(const struct task *t)
{
	const struct dispatch *d = t->d;
	return (struct refs_owner){
		.uid = t->owner_uid, .gid = t->owner_gid,
		.trusted = dirtrust_owner_ok(t->owner_uid, (uint32_t)geteuid(), d->spool->own_uid),
	};
}

/* The reference images checked at the claim, opened again for this call (review11 R1): -1 when
 * the job was failed (a file replaced meanwhile) or sent back to wait (out of descriptors). */
static int open_refs_again(struct task *t, int *fds)
{
	const struct refs_owner owner = refs_owner_of(t);
	const char *paths[JOB_REFS_MAX + 1];
	for (int i = 0; i < t->job.n_refs; i++)
		paths[i] = t->job.refs[i];
	paths[t->job.n_refs] = t->job.mask;
	bool transient;
	char why[320];
	if (refs_reopen(t->d->spool->root_fd, paths, &owner, &t->refs, fds, &transient, why,
			sizeof(why)) == 0)
		return 0;
	if (transient) {
		log_job(LOG_WARN, t->id, "%s: back to new/", why);
		task_requeue(t, "out of file descriptors for its reference images");
	} else {
		finish_fail(t, "invalid_request", "images", "%s", why);
	}
	return -1;
}

void task_send_attempt(struct task *t)
{
	struct dispatch *d = t->d;
	const struct provider_config *p = provider_state_config(t->prov);
	if (!slots_take(t))
		return;   /* in the ready line until a call ends */
	if (!p->api_key) {
		provider_state_hold(t->prov, p->key_problem);
		task_requeue(t, "no API key");
		return;
	}
	int ref_fds[JOB_REFS_MAX + 1];
	if (t->ref_files_want && open_refs_again(t, ref_fds) < 0)
		return;
	long timeout = config_call_timeout(d->cfg, p, t->model, t->job.size);
	if (t->job.timeout > 0)
		timeout = t->job.timeout < d->cfg->timeout_min ? d->cfg->timeout_min
			: t->job.timeout > d->cfg->timeout_max ? d->cfg->timeout_max : t->job.timeout;
	struct http_request req = {
		.url = t->req.url,
		.bearer = p->api_key,
		.body = t->req.body,
		.body_len = t->req.body_len,
		.parts = t->req.parts,
		.n_parts = t->req.n_parts,
		.files = ref_fds,
		.n_files = t->ref_files_want,
		.timeout_s = timeout,
		.connect_timeout_s = p->connect_timeout,
		.max_body = (size_t)d->cfg->max_response_mb << 20,
		.ca_file = d->cfg->ca_file,
	};
	sidecar_drop(t);   /* an earlier attempt's response must never be mistaken for this one's */
	if (t->routed)
		sidecar_write_target(t);
	char *partial = sidecar_name(t, "partial");
	if (t->body_fd >= 0)
		close(t->body_fd);
	t->call_started_wall = wall_ms();
	t->body_fd = openat(d->spool->fd[SPOOL_RUNNING], partial,
			    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (t->body_fd < 0)
		log_job(LOG_WARN, t->id, "cannot keep the response on disk (%s): memory only",
			strerror(errno));
	else
		t->sidecars |= SIDECAR_PARTIAL;
	t->sidecar_header = t->body_fd >= 0 ? sidecar_write_header(t, t->body_fd) : 0;
	free(partial);
	/* Past what the open files allow beside a socket per call, the .partial (its header marks
	 * the call as maybe started) is closed till the call ends: the body is written then. */
	t->partial_closed = t->body_fd >= 0 && t->sidecar_header && !slots_partial_room(d);
	if (t->partial_closed) {
		close(t->body_fd);
		t->body_fd = -1;
		crash_point("call:partial-closed");
	}
	req.body_fd = t->body_fd;
	t->state = T_CALLING;
	t->xfer = http_start(d->http, &req, call_done, t);
	if (!t->xfer) {
		finish_fail(t, "internal", NULL, "the request could not be set up");
		return;
	}
	t->ref_files_held = t->ref_files_want;   /* the transfer's, closed when it is let go of */
	slots_call_started(t);
	t->body_fd = -1;   /* the transfer's till call_done: http_cancel closes it (see http.h) */
	attempt_reserve(t);
}

/* ---- claiming --------------------------------------------------------------------------------- */

/* Opens (and, for a dialect that inlines them, reads) the reference images; on failure fails
 * the task and returns -1. */
static int load_refs(struct task *t, struct refs_loaded *loaded)
{
	struct dispatch *d = t->d;
	/* Read for the job's submitter: nothing she could not read herself (refs.h). */
	const struct refs_owner owner = refs_owner_of(t);
	const char *paths[JOB_REFS_MAX + 1];
	for (int i = 0; i < t->job.n_refs; i++)
		paths[i] = t->job.refs[i];
	paths[t->job.n_refs] = t->job.mask;
	int bad = 0;
	char why[160], field[32];
	if (refs_load(loaded, d->spool->root_fd, paths, t->job.n_refs + 1, &owner, REF_IMAGE_MAX,
		      (size_t)d->cfg->max_refs_mb << 20, upstream_dialect(t->model) == DIALECT_GEMINI,
		      &bad, why, sizeof(why)) == 0)
		return 0;
	if (loaded->transient) {   /* other jobs' files, or the system's: this one waits (R1) */
		log_job(LOG_WARN, t->id, "cannot open its reference images now (%s): back to new/",
			why);
		task_requeue(t, "out of file descriptors for its reference images");
		return -1;
	}
	if (bad == REFS_BAD_TOTAL) {
		finish_fail(t, "invalid_request", "images", "%s, [limits] max_refs_mb (each mention "
			  "of a file counted: each is sent)", why);
		return -1;
	}
	if (bad == t->job.n_refs)
		xsnprintf(field, sizeof(field), "mask");
	else
		xsnprintf(field, sizeof(field), "images[%d]", bad);
	finish_fail(t, "invalid_request", field, "reference image \"%s\" cannot be used: %s (a path "
		  "relative to the spool root, outside its state directories, through no symlink, of "
		  "a file its submitter may read)", field, why);
	return -1;
}

void task_prepare_and_send(struct task *t)
{
	struct refs_loaded loaded;
	char err[512];
	if (load_refs(t, &loaded) < 0)
		goto out;
	if (upstream_build_request(&t->job, t->model, provider_state_config(t->prov)->base_url,
				   loaded.img, (size_t)t->job.n_refs,
				   t->job.mask ? &loaded.img[t->job.n_refs] : NULL, &t->req, err,
				   sizeof(err)) < 0) {
		finish_fail(t, "invalid_request", NULL, "%s", err);
		goto out;
	}
	/* Checked now; opened again by each call (task_send_attempt): none held meanwhile. */
	if (upstream_dialect(t->model) != DIALECT_GEMINI) {
		t->refs = loaded.checked;
		t->ref_files_want = loaded.checked.n;
	}
	task_send_attempt(t);
out:
	refs_loaded_release(&loaded);
}

/* running/ back to new/, for a job that did not finish here (hold, shutdown). */
void task_requeue(struct task *t, const char *why)
{
	/* A cancel ends the job as it does at the claim; when shutting down, imgspool cancel
	 * finishes it from hold/. */
	if (!t->d->draining && control_still_wants(&t->d->control, t->d->spool, CONTROL_CANCEL, t->id)) {
		log_job(LOG_INFO, t->id, "cancelled by an operator instead of going back (%s)", why);
		finish_fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) before its "
			  "next call");
		return;
	}
	task_drop_held_events(t, TASK_WAITS_AGAIN);
	char *name = xasprintf("%s.json", t->id);
	/* A hold, or while draining a cancel (imgspool cancel finishes it from hold/), sends it to
	 * hold/. */
	enum spool_dir dest = control_wants(&t->d->control, CONTROL_HOLD, t->id) ||
			      control_wants(&t->d->control, CONTROL_CANCEL, t->id) ? SPOOL_HOLD : SPOOL_NEW;
	/* Attempts made so far (some maybe billed) stay with the job; its mtime keeps its place,
	 * or, for a retry waiting in memory, its due time (as in deferred/). */
	bool waits = t->state == T_BACKOFF && t->defer_due > 0;
	int64_t mtime = waits ? t->defer_due : t->created_wall_ms;
	char *text = attempt_count(t) ? task_job_text(t, 0, NULL) : NULL;
	struct intake_place went = { .dir = dest };
	int rc = text ? intake_return(t->d, t->running_name, t->id, dest, name, &went, mtime, text)
		      : -1;
	int err = errno;
	/* Without room for the records, the job itself must still not stay stuck in running/. At
	 * shutdown, a job with attempts stays there instead, as a crash would leave it: moved
	 * without its records, it would lose attempts (billed retries refunded) and its saved
	 * response; its sidecars tell the restart, or another host once its lease is out, what
	 * was done (spool-layout.md §10, §11). A retry's lease runs to its due time. EEXIST: the
	 * records are written, only every place for it is taken. */
	bool leave = rc < 0 && t->d->draining && attempt_count(t);
	if (rc < 0 && (!text || err != EEXIST) && spool_still_ours(t->d->spool, t->running_name)) {
		/* Its place in line: the claim stamped its mtime for the lease. Set back in running/,
		 * as spool_move_rewritten does: in new/ another host may claim it at once. */
		struct timespec times[2] = {
			{ .tv_nsec = UTIME_NOW },
			{ .tv_sec = mtime / 1000, .tv_nsec = mtime % 1000 * 1000000 },
		};
		if (mtime > 0 && (!leave || waits))
			utimensat(t->d->spool->fd[SPOOL_RUNNING], t->running_name, times, AT_SYMLINK_NOFOLLOW);
		if (leave) {
			log_job(LOG_WARN, t->id, "shutdown: cannot write its records (%s): left in "
				"running/ with its saved files, for the restart", text ? strerror(err) : "no records");
			free(text);
			free(name);
			task_free(t);
			return;
		}
		rc = intake_return(t->d, t->running_name, t->id, dest, name, &went, mtime, NULL);
		err = errno;
	}
	free(text);
	if (rc == 0) {
		sidecar_drop(t);
		task_control_forget(t);
		log_job(LOG_INFO, t->id, "back to %s/ (%s%s)", spool_dir_name(went.dir), why, went.why);
	} else {
		strandlog_say(&t->d->strandlog, LOG_ERROR, t->id, "cannot move 'running/%s' back to "
			"%s/: %s; left in running/, %s", t->running_name, spool_dir_name(went.dir), strerror(err), t->d->draining
			? "for the restart" : "no claim of its id until the next rescan moves it");
		strset_add(&t->d->stranded, t->id);
	}
	free(name);
	task_free(t);
}

/* Our records ("imgspool") get room of their own beyond max_job_bytes (record.h bounds them),
 * so a job near the limit is never locked out by its history. Files are read up to this cap; the
 * client's part of a file in new/ is then held to max_job_bytes. */
size_t dispatch_job_read_cap(const struct dispatch *d)
{
	return RECORD_FILE_MAX(d->cfg->max_job_bytes);
}

/* What the job parser is allowed, from the running config. */
static void job_limits_from_config(struct dispatch *d)
{
	config_job_limits(d->cfg, &d->limits);
	d->readbuf.max = dispatch_job_read_cap(d);
}

/* Whether the daemon's user wrote a file: its owner is our user, the owner of running/ (the
 * same user, seen through an NFS uid mapping), or root (who can do anything the daemon can, and
 * runs `imgspool retry` for it). Clients of another user can write new/ (and, on a spool set up
 * wrongly, running/): what they wrote is never taken for our records or for a response we
 * saved (spool-layout.md §4, §10). */
bool dispatch_written_by_daemon(const struct dispatch *d, const struct stat *st)
{
	return spool_written_by_daemon(d->spool, st);
}

/* ---- an operator's requests (control/) ---------------------------------------------------- */

/* Cuts the call in flight: the upstream may have started (and may charge for) it. */
static void cancel_call(struct task *t)
{
	if (t->xfer)
		http_cancel(t->d->http, t->xfer);
	t->xfer = NULL;
	if (t->calling)
		slots_call_ended(t);
	int64_t now = wall_ms();
	struct attempt a = { .started_wall_ms = t->call_started_wall,
			     .latency_ms = now - t->call_started_wall, .transport = "interrupted",
			     .outcome = "interrupted", .billed = "unknown", .error_code = "cancelled",
			     .request_id = "" };
	attempt_price(t, &a, BILLED_UNKNOWN, NULL, 0);
	attempt_settle(t, true, a.cost_known, a.cost);
	record_add_attempt(t->attempts, &t->elided, result_attempt_json(&a));
	finish_fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) while its call was in "
		  "flight; the upstream may still charge for that call");
}

/* Rereads control/ and acts on our jobs: a cancel cuts a call or a backoff; a hold moves a job
 * waiting in memory to hold/. Everything else is decided at the job's next transition. */
void dispatch_control(struct dispatch *d)
{
	if (control_read(&d->control, d->spool) < 0)
		log_debug("cannot read control/: %s", strerror(errno));
	control_sweep(&d->control, d->spool, mono_ms(), d->cfg->lease_timeout * 1000);
	if (d->control.pause_changes != d->pauses_seen)
		slots_recheck(d);   /* a provider paused or resumed: jobs waiting for it may go */
	d->pauses_seen = d->control.pause_changes;
	struct task *t = d->tasks, *next;
	for (; t; t = next) {
		next = t->next;
		if (t->in_pool || t->fenced)
			continue;
		bool cancel = control_wants(&d->control, CONTROL_CANCEL, t->id);
		if (cancel && t->state == T_CALLING) {
			log_job(LOG_INFO, t->id, "cancelled by an operator: cutting the call in flight");
			cancel_call(t);
		} else if (cancel && t->state == T_READY) {
			slots_ready_remove(t);
			finish_fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) "
				  "before its call");
		} else if (t->state == T_READY && control_wants(&d->control, CONTROL_HOLD, t->id)) {
			task_requeue(t, "held by an operator");
		} else if (cancel && t->state == T_BACKOFF) {
			deferral_call_off(t);
			finish_fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) before its retry");
		} else if (t->state == T_BACKOFF && control_wants(&d->control, CONTROL_HOLD, t->id)) {
			task_requeue(t, "held by an operator");
		}
	}
}

/* ---- start-up and shutdown -------------------------------------------------------------------- */

void dispatch_recover(struct dispatch *d)
{
	recovery_start(d);
}

/* After the cut's ledger write (attempt_settle_at_cut): a lost answer's job goes on. */
static void answer_lost_settled(struct task *t)
{
	if (retry_billed_by_status(t->answer_status) != BILLED_YES) {
		t->billed_retries += retry_billed_by_status(t->answer_status) == BILLED_UNKNOWN;
		task_requeue(t, "shutdown: the grace period ended before its answer was saved");
		return;
	}
	log_job(LOG_WARN, t->id, "its answer (HTTP %ld) arrived, but its write to running/ is stuck "
		"and the grace period ended: failing it rather than paying for a second call",
		t->answer_status);
	finish_fail(t, "response_lost", NULL, "its answer (HTTP %ld, billed) arrived as the daemon was "
		    "stopped, but could not be written to the spool before the exit (a stalled disk?); "
		    "it is not called again, since that call would be paid again: imgspool retry runs "
		    "it again", t->answer_status);
}

/* At the cut, a call whose whole answer arrived while libcurl's thread is stuck writing it into
 * the .partial (a stalled disk): it is lost with the process, but it was received, billed by its
 * status alone. A billed one is never called again (that call would be paid again): the job
 * fails response_lost. Another goes back to new/ as a cut call does. */
static bool answer_lost(struct task *t, struct http_result *ans)
{
	/* Its write ended after http_deliver ran: saved whole, delivered as any answer is. */
	if (!http_cancel_unless_done(t->d->http, t->xfer))
		return false;
	enum billed billed = retry_billed_by_status(ans->status);
	secret_redact_str(ans->request_id);
	struct attempt a = { .started_wall_ms = ans->started_wall_ms, .latency_ms = ans->latency_ms,
			     .http_status = ans->status, .transport = "done",
			     .outcome = billed == BILLED_YES ? "failed" : "retry",
			     .billed = billed_name(billed), .error_code = "response_lost",
			     .request_id = ans->request_id };
	t->xfer = NULL;
	if (t->calling)
		slots_call_ended(t);
	t->answer_attempt = attempt_count(t) + 1;
	t->answer_status = ans->status;
	t->answer_len = ans->body_len;
	attempt_price(t, &a, billed, NULL, 0);
	attempt_record(t, &a);
	attempt_settle_at_cut(t, billed, a.cost_known, a.cost, answer_lost_settled);
	return true;
}

static void cut_call_settled(struct task *t)
{
	task_requeue(t, "shutdown: the grace period ended");
}

/* Wakes the loop, which then stops (dispatch_drained) whatever the helpers still do. */
static int64_t pool_wait_over(struct loop *loop, void *arg)
{
	(void)loop;
	((struct dispatch *)arg)->grace_timer = 0;
	return LOOP_TIMER_DONE;
}

static int64_t grace_over(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->grace_timer = 0;
	d->grace_over = true;
	exitwatch_arm_cut();   /* the cut's time from now: the loop may yet stick in a write */
	/* A helper's work (a publication, a save) gets as long as the exit gives a stuck one. */
	d->cut_pool_deadline = mono_ms() + IOPOOL_FREE_WAIT_MS;
	d->grace_timer = loop_add_timer(d->loop, IOPOOL_FREE_WAIT_MS, pool_wait_over, d);
	http_deliver(d->http);   /* answers handed over by now go their way: not cut */
	stop_point("dispatch:grace-cut");   /* a test lets a stuck write end here */
	bool handed_over_since = false;
	struct task *t = d->tasks, *next;
	for (; t; t = next) {
		next = t->next;
		struct http_result ans;
		enum http_cut cut = HTTP_CUT_CANCELLED;
		if (t->state == T_CALLING) {
			stop_point("dispatch:cut-call");   /* a test lets an answer end here */
			cut = http_cut(d->http, t->xfer, &ans);
		}
		if (t->state == T_CALLING && cut == HTTP_CUT_DONE) {
			handed_over_since = true;   /* ended since http_deliver: delivered, not cut */
		} else if (t->state == T_CALLING && cut == HTTP_CUT_ANSWERED) {
			handed_over_since |= !answer_lost(t, &ans);
		} else if (t->state == T_CALLING) {
			/* The call may finish upstream and be billed: keep it on record. */
			struct attempt a = { .started_wall_ms = wall_ms(), .transport = "interrupted",
					     .outcome = "interrupted", .billed = "unknown", .request_id = "" };
			attempt_price(t, &a, BILLED_UNKNOWN, NULL, 0);
			attempt_record(t, &a);
			t->billed_retries++;
			t->xfer = NULL;   /* cancelled by http_cut */
			if (t->calling)
				slots_call_ended(t);
			if (t->reserved)   /* settled now, not by task_free: off the loop */
				attempt_settle_at_cut(t, BILLED_UNKNOWN, t->reserve_known, t->reserve,
						      cut_call_settled);
			else
				cut_call_settled(t);
		} else if (t->state == T_BACKOFF) {
			deferral_leave(t, "shutdown: the grace period ended");
		} else if (t->state == T_READY) {
			task_requeue(t, "shutdown: the grace period ended");
		} else if (t->state == T_PUBLISHING && !t->in_pool) {
			/* Waiting for disk space: the job stays in running/ with its saved response;
			 * the restart finishes it. */
			task_leave_for_restart(t, "until there is room to publish");
		} else if (t->state == T_UPLOADING) {
			/* Its response is saved: the restart stores the images and publishes. */
			task_leave_for_restart(t, "until its images are stored");
		} else if (t->state == T_DOWNLOADING) {
			task_leave_for_restart(t, "while downloading its image");
		}
	}
	if (handed_over_since)
		http_deliver(d->http);
	return LOOP_TIMER_DONE;
}

void dispatch_drain(struct dispatch *d, int64_t since_ms)
{
	if (d->draining)
		return;
	d->draining = true;
	d->drain_deadline = since_ms + d->cfg->grace_period * 1000;
	int64_t left = d->drain_deadline - mono_ms();
	log_info("shutting down: claiming nothing more; %d job(s) in flight get up to %lds to finish%s",
		 d->n_tasks, d->cfg->grace_period, d->cfg->grace_period_auto ?
		 " (grace_period: the longest call allowed; a second SIGTERM or SIGINT cuts them)" : "");
	struct task *t = d->tasks, *next;
	for (; t; t = next) {
		next = t->next;
		if (t->state == T_BACKOFF)
			deferral_leave(t, "shutdown");   /* keeps its due time */
		else if (t->state == T_READY)
			task_requeue(t, "shutdown");
	}
	dispatch_log_waiting(d);
	d->grace_timer = loop_add_timer(d->loop, left > 0 ? left : 0, grace_over, d);
}

void dispatch_cut(struct dispatch *d)
{
	if (!d->draining || d->grace_over)
		return;
	log_warn("second signal: cutting the %d job(s) still in flight; a call cut may still be "
		 "billed and is recorded as interrupted", d->n_tasks);
	if (d->grace_timer)
		loop_del_timer(d->loop, d->grace_timer);
	grace_over(d->loop, d);
}

int64_t dispatch_drain_left_ms(const struct dispatch *d)
{
	if (!d->draining || d->grace_over)
		return 0;
	int64_t left = d->drain_deadline - mono_ms();
	return left > 0 ? left : 0;
}

void dispatch_log_waiting(const struct dispatch *d)
{
	char line[1024];
	size_t len = 0;
	int shown = 0;
	line[0] = '\0';
	for (const struct task *t = d->tasks; t; t = t->next) {
		if (shown == 8) {
			xsnprintf(line + len, sizeof(line) - len, ", ...");
			break;
		}
		int n = snprintf(line + len, sizeof(line) - len, "%s%s (%s, %" PRId64 " s)",
				 shown ? ", " : "", t->id, t->state == T_CALLING ? "call in flight" :
				 t->state == T_DOWNLOADING ? "downloading" : "writing",
				 (mono_ms() - t->claimed_mono) / 1000);
		if (n < 0 || (size_t)n >= sizeof(line) - len)
			break;
		len += (size_t)n;
		shown++;
	}
	if (d->n_tasks)
		log_info("waiting for %d job(s): %s", d->n_tasks, line);
}

void dispatch_status(const struct dispatch *d, char *out, size_t size)
{
	int calls = 0;
	for (int i = 0; i < d->n_providers; i++)
		calls += provider_state_calls(d->providers[i]);
	/* As the metrics count: the pending queue also holds due deferred jobs. */
	struct dispatch_counts c;
	dispatch_counts(d, &c);
	int n = snprintf(out, size, "%ld pending, %ld deferred, %d running (%d calls in flight)",
			 c.new_jobs, c.deferred, d->n_tasks, calls);
	const char *sep = ", held: ";
	for (int i = 0; i < d->n_providers && n >= 0 && (size_t)n < size; i++) {
		if (!provider_state_held(d->providers[i]) || provider_state_retired(d->providers[i]))
			continue;
		n += snprintf(out + n, size - (size_t)n, "%s%s", sep,
			      provider_state_name(d->providers[i]));
		sep = ", ";
	}
	sep = ", over budget: ";
	for (int i = 0; i < d->n_providers && n >= 0 && (size_t)n < size; i++) {
		if (!provider_state_over_budget(d->providers[i]) ||
		    provider_state_retired(d->providers[i]))
			continue;
		n += snprintf(out + n, size - (size_t)n, "%s%s", sep,
			      provider_state_name(d->providers[i]));
		sep = ", ";
	}
}

void dispatch_report_metrics(const struct dispatch *d)
{
	int64_t now = mono_ms();
	for (int i = 0; i < d->n_providers; i++)
		provider_state_report_metrics(d->providers[i], now);
	const struct store_stats *s = store_stats(d->store);
	const struct outbox_stats *o = outbox_stats(d->outbox);
	metrics_outputs(&(struct metrics_outputs){
		.uploads = s->uploads, .upload_failures = s->failures,
		.jobs_waiting_for_store = (long)s->waiting, .webhooks_delivered = o->delivered,
		.webhook_failures = o->failures, .webhooks_dropped = o->dropped,
		.hooks_run = o->hooks_run, .outbox_backlog = o->backlog,
		.webhook_endpoints_gone = o->gone, .webhooks_parked = o->parked });
}

bool dispatch_draining(const struct dispatch *d)
{
	return d->draining;
}

bool dispatch_drained(const struct dispatch *d)
{
	return d->draining && ((d->n_tasks == 0 && iopool_pending(d->pool) == 0) ||
			       (d->grace_over && mono_ms() >= d->cut_pool_deadline));
}

struct dispatch *dispatch_new(struct loop *loop, struct config *cfg, struct spool *spool)
{
	struct dispatch *d = xcalloc(1, sizeof(*d));
	d->loop = loop;
	d->cfg = cfg;
	d->spool = spool;
	d->http = http_new(loop, cfg->concurrency * 2);
	d->pool = iopool_new(loop, (int)cfg->io_threads);
	d->store = store_new(loop, d->http, d->pool, &d->cfg);
	d->outbox = outbox_new(loop, d->http, d->pool, spool, &d->cfg, &d->control, task_busy, d);
	if (!getcwd(d->cwd, sizeof(d->cwd)))
		d->cwd[0] = '\0';
	d->slots = slots_new(loop);
	known_init(&d->known);
	scan_init(&d->new_scan, spool, &d->known, SPOOL_NEW, intake_known_dir(SPOOL_NEW));
	strset_init(&d->held);
	strset_init(&d->stranded);
	strset_init(&d->unread_dead);
	strset_init(&d->others_ids);
	strandlog_init(&d->strandlog);
	spend_init(&d->spend);
	control_init(&d->control);
	health_init(&d->health);
	d->ks = keyshare_new(spool);
	attempt_ledger_writer(d, true);   /* the loop never writes the ledger */
	d->heartbeat_timer = loop_add_timer(loop, recovery_heartbeat_interval_ms(d), recovery_heartbeat,
					    d);
	buf_init(&d->readbuf, dispatch_job_read_cap(d));
	job_limits_from_config(d);
	config_ref(cfg);
	for (int i = 0; i < cfg->n_providers; i++)
		provider_state_new(d, &cfg->providers[i]);
	return d;
}

struct left_marks *dispatch_leave(struct dispatch *d, size_t *n_marks, bool *helpers_idle)
{
	/* A job a helper still holds past the cut's wait (a write stuck) is its: left as a crash
	 * leaves it, but its publication from a saved response counts no death at the restart,
	 * and an answer it held is not taken for a call cut in flight. */
	attempt_ledger_writer(d, false);   /* the loop is over: a write now is the exit's own */
	*helpers_idle = iopool_pending(d->pool) == 0;
	for (struct task *t = d->tasks, *next; t; t = next) {
		next = t->next;
		if (!t->in_pool)
			task_requeue(t, "shutdown");
		else if (t->state == T_PUBLISHING)
			sidecar_mark_left(t);
		if (t->in_pool)
			sidecar_mark_answered(t);
	}
	return sidecar_left_marks_take(d, n_marks);
}

void dispatch_make_marks(struct left_marks *m)
{
	sidecar_left_marks_make(m);
}

bool dispatch_free(struct dispatch *d)
{
	if (!d)
		return true;
	attempt_ledger_writer(d, false);   /* the pool stops: no more work for it */
	if (iopool_pending(d->pool) > 0) {
		iopool_abandon(d->pool);
		return false;   /* a helper stuck in a write may use any of d */
	}
	if (!iopool_free(d->pool))
		return false;
	store_free(d->store);   /* after the pool: a cancelled upload's hashing ends there */
	outbox_free(d->outbox); /* before http: it cancels its deliveries */
	http_free(d->http);
	while (d->n_providers)
		provider_state_free(d->providers[0]);
	free(d->providers);
	if (d->grace_timer)
		loop_del_timer(d->loop, d->grace_timer);
	if (d->wake_timer)
		loop_del_timer(d->loop, d->wake_timer);
	slots_free(d->slots);
	loop_when_idle(d->loop, NULL, NULL);   /* the claims ahead were d's */
	if (d->deferred_timer)
		loop_del_timer(d->loop, d->deferred_timer);
	intake_release(d);
	if (d->scan_timer)
		loop_del_timer(d->loop, d->scan_timer);
	if (d->place_timer)
		loop_del_timer(d->loop, d->place_timer);
	scan_release(&d->new_scan);
	known_release(&d->known);
	strset_release(&d->held);
	strset_release(&d->stranded);
	strset_release(&d->unread_dead);
	strset_release(&d->others_ids);
	strandlog_release(&d->strandlog);
	spend_release(&d->spend);
	control_release(&d->control);
	health_release(&d->health);
	if (d->route_timer)
		loop_del_timer(d->loop, d->route_timer);
	keyshare_free(d->ks);
	if (d->heartbeat_timer)
		loop_del_timer(d->loop, d->heartbeat_timer);
	buf_release(&d->readbuf);
	config_unref(d->cfg);
	free(d);
	return true;
}
