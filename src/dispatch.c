/* dispatch.c - what happens to a job, from a name in new/ to a file in done/ or failed/.
 *
 * Everything here runs on the loop thread. Blocking work (parsing a large response, writing and
 * fsyncing results) goes to the I/O pool and comes back through a done() callback; while it is
 * away the task is touched by nobody else. A task's states:
 *
 *   CALLING -> PARSING -> (DOWNLOADING) -> (UPLOADING) -> PUBLISHING -> freed
 *                  \-> BACKOFF -> CALLING            (a retry)
 *                  \-> requeued to new/              (hold, shutdown)
 *
 * Nothing a job does can end the daemon: every failure on a job's path ends in failed/ with a
 * reason, or leaves the job where a restart finds it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "dispatch.h"
#include "dispatch_impl.h"
#include "health.h"
#include "http.h"
#include "iopool.h"
#include "job.h"
#include "keyshare.h"
#include "known.h"
#include "log.h"
#include "publish.h"
#include "outbox.h"
#include "loop.h"
#include "metrics.h"
#include "price.h"
#include "provider.h"
#include "record.h"
#include "result.h"
#include "retry.h"
#include "route.h"
#include "scan.h"
#include "secret.h"
#include "spend.h"
#include "spool.h"
#include "store.h"
#include "upstream.h"
#include "util.h"
#include "webhook.h"
#include "banned.h"

#define REF_IMAGE_MAX (20u << 20)    /* bytes of one reference image */
#define TMP_MAX_AGE_S (36 * 3600)    /* maildir's rule for abandoned files in tmp/ */

static void send_attempt(struct task *t);
static void job_limits_from_config(struct dispatch *d);
static void finish(struct task *t);
static void requeue(struct task *t, const char *why);
static char *job_text_with_state(const struct task *t, int64_t retry_at_ms, const char *finished);
static void control_forget(struct task *t);
static void record_health(struct task *t);

/* ---- pending queue ---------------------------------------------------------------------- */

/* The known set holds "n/NAME" and "d/NAME": the same name may be in new/ and deferred/. */
static char known_dir(enum spool_dir dir)
{
	return dir == SPOOL_NEW ? 'n' : 'd';
}

static void known_del(struct dispatch *d, enum spool_dir dir, const char *name)
{
	known_forget(&d->known, known_dir(dir), name);
}

static void pending_free(struct pending *pe)
{
	free(pe->name);
	free(pe->provider);
	free(pe->route);
}

static int pending_cmp(const void *a, const void *b);

/* file: as stat'ed, or NULL for a name never seen (not stat'ed yet). */
static void pending_add(struct dispatch *d, enum spool_dir dir, const char *name,
			const struct file_id *file)
{
	if (!known_see(&d->known, known_dir(dir), name, file, mono_ms()))
		return;
	if (d->n_pending == d->alloc_pending) {
		d->alloc_pending = d->alloc_pending ? 2 * d->alloc_pending : 256;
		d->pending = xrealloc(d->pending, d->alloc_pending * sizeof(*d->pending));
	}
	struct pending *pe = &d->pending[d->n_pending++];
	*pe = (struct pending){ .dir = dir, .name = xstrdup(name), .placed = file != NULL };
	if (file) {
		pe->file = *file;
		pe->mtime_ns = file->mtime_ns;
	}
	d->n_unplaced += !file;
	size_t s = d->n_sorted;
	if (file && s == d->n_pending - 1 &&
	    (!s || pending_cmp(&d->pending[s - 1], &d->pending[s]) <= 0))
		d->n_sorted++;
}

static int64_t place_more(struct loop *loop, void *arg);

/* Stats the entries not stat'ed yet (from from on), for their place in line, for about
 * budget_ms: a name that is gone leaves the queue. Returns true when none is left; else a
 * timer brings the loop back for the rest (a slow file server never stalls the loop). */
static bool pending_place(struct dispatch *d, size_t from, int64_t budget_ms)
{
	if (!d->n_unplaced)
		return true;
	size_t keep = from, i = from;
	int64_t end = mono_ms() + budget_ms;
	for (int n = 1; i < d->n_pending; i++, n++) {
		struct pending *pe = &d->pending[i];
		struct stat st;
		if (n % 64 == 0 && mono_ms() >= end)
			break;
		if (!pe->placed) {
			d->n_unplaced--;
			if (fstatat(d->spool->fd[pe->dir], pe->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				known_del(d, pe->dir, pe->name);
				pending_free(pe);
				continue;
			}
			spool_file_id(&pe->file, &st);
			pe->mtime_ns = pe->file.mtime_ns;
			pe->placed = true;
		}
		d->pending[keep++] = *pe;
	}
	if (keep != i)
		memmove(&d->pending[keep], &d->pending[i], (d->n_pending - i) * sizeof(*d->pending));
	d->n_pending = keep + (d->n_pending - i);
	if (from < d->n_sorted)
		d->n_sorted = 0;   /* the new mtimes may belong anywhere */
	if (d->n_unplaced && !d->place_timer)
		d->place_timer = loop_add_timer(d->loop, 0, place_more, d);
	return !d->n_unplaced;
}

static int64_t place_more(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->place_timer = 0;   /* the before-sleep hook pumps, and places the rest */
	return LOOP_TIMER_DONE;
}

static int pending_cmp(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Jobs start in order of arrival: the job file's mtime, then its name. What a listing added
 * since the last sort is sorted and merged in: a listing in slices does not sort the whole
 * backlog again at each turn of the loop. */
static void pending_sort(struct dispatch *d)
{
	size_t n = d->n_pending, s = d->n_sorted;
	if (s == n)
		return;
	qsort(d->pending + s, n - s, sizeof(*d->pending), pending_cmp);
	if (s && pending_cmp(&d->pending[s - 1], &d->pending[s]) > 0) {
		size_t j = n - s, k = n;   /* merged from the back; the new ones wait in a copy */
		struct pending *added = xmalloc(j * sizeof(*added));
		memcpy(added, d->pending + s, j * sizeof(*added));
		while (j > 0)
			d->pending[--k] = s > 0 && pending_cmp(&d->pending[s - 1], &added[j - 1]) > 0
					  ? d->pending[--s] : added[--j];
		free(added);
	}
	d->n_sorted = n;
}

/* After a full listing of dir: names it did not see are forgotten, and leave the queue. */
static void pending_sweep(struct dispatch *d, enum spool_dir dir)
{
	if (!known_sweep(&d->known, known_dir(dir)))
		return;
	size_t keep = 0, sorted = 0;
	for (size_t i = 0; i < d->n_pending; i++) {
		struct pending *pe = &d->pending[i];
		if (pe->dir != dir || known_has(&d->known, known_dir(dir), pe->name)) {
			sorted += i < d->n_sorted;
			d->pending[keep++] = *pe;
		} else {
			d->n_unplaced -= !pe->placed;
			pending_free(pe);
		}
	}
	d->n_pending = keep;
	d->n_sorted = sorted;
}

static void scan_deferred(struct dispatch *d);
static void resume_publications(struct dispatch *d, bool others);
static void reclaim_stale(struct dispatch *d);
static void adopt_all(struct dispatch *d);
static void arm_deferred(struct dispatch *d, int64_t due_wall_ms);

static int64_t deferred_due(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->deferred_timer = 0;
	scan_deferred(d);
	return LOOP_TIMER_DONE;
}

/* Jobs in deferred/ whose mtime has passed become pending; a timer waits for the next one. A job
 * is stat'ed when first listed (for its due time) and again once that time has come (it may
 * have been deferred again since, under the same name): not at every rescan in between. */
static void scan_deferred(struct dispatch *d)
{
	struct spool_entry *e;
	long n = spool_list_names(d->spool, SPOOL_DEFERRED, false, &e);
	if (n < 0)
		return;
	char key = known_dir(SPOOL_DEFERRED);
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
			pending_add(d, SPOOL_DEFERRED, e[i].name, &e[i].id);
			continue;
		}
		known_wait(&d->known, key, e[i].name, &e[i].id);
		if (!next_ns || e[i].mtime_ns < next_ns)
			next_ns = e[i].mtime_ns;
	}
	spool_entries_free(e, n);
	pending_sweep(d, SPOOL_DEFERRED);
	if (next_ns)
		arm_deferred(d, next_ns / 1000000);
}

int64_t dispatch_oldest_pending_ns(const struct dispatch *d)
{
	int64_t oldest = 0;
	for (size_t i = 0; i < d->n_pending; i++)
		if (d->pending[i].dir == SPOOL_NEW && d->pending[i].placed &&
		    (!oldest || d->pending[i].mtime_ns < oldest))
			oldest = d->pending[i].mtime_ns;
	return oldest;
}

static void scan_found(void *arg, enum spool_dir dir, const char *name, const struct file_id *id)
{
	pending_add(arg, dir, name, id);
}

/* A slice of a listing of new/: about 20 ms, so the loop goes on; the first one after start-up
 * gets 300 ms: it lists all but the largest backlogs, so the first claims are in order. */
#define SCAN_SLICE_MS 20
#define SCAN_FIRST_SLICE_MS 300

static int64_t list_more(struct loop *loop, void *arg);

static void list_new(struct dispatch *d, int64_t budget_ms)
{
	if (scan_step(&d->new_scan, budget_ms, mono_ms, scan_found, d)) {
		pending_sweep(d, SPOOL_NEW);
		log_debug("rescan of new/: %ld entries, %ld stat'ed, %zu pending, %zu known",
			  d->new_scan.entries, d->new_scan.stats, d->n_pending, known_count(&d->known));
	}
	if (scan_busy(&d->new_scan) && !d->scan_timer)
		d->scan_timer = loop_add_timer(d->loop, 0, list_more, d);
}

static int64_t list_more(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->scan_timer = 0;
	list_new(d, SCAN_SLICE_MS);
	return LOOP_TIMER_DONE;
}

void dispatch_scan(struct dispatch *d)
{
	dispatch_control(d);
	for (int i = 0; i < d->n_providers; i++)
		if (!d->providers[i]->retired)
			provider_state_look_at_others(d->providers[i]);
	bool first = !d->new_scan.listings && !scan_busy(&d->new_scan);
	scan_start(&d->new_scan);
	if (!d->scan_timer)
		list_new(d, first ? SCAN_FIRST_SLICE_MS : SCAN_SLICE_MS);
	scan_deferred(d);
	outbox_scan(d->outbox);
	if (!d->draining) {
		resume_publications(d, true);   /* first: a reclaimed job may need its staging */
		reclaim_stale(d);
	}
	if (!d->tmp_cleaned || mono_ms() - d->tmp_cleaned > 3600 * 1000) {
		d->tmp_cleaned = mono_ms();
		spool_clean_tmp(d->spool, TMP_MAX_AGE_S);
	}
}

void dispatch_hint(struct dispatch *d, const char *name)
{
	if (!name) {
		log_warn("inotify queue overflowed: rescanning new/");
		dispatch_scan(d);
		return;
	}
	enum known_look look = known_hint(&d->known, known_dir(SPOOL_NEW), name);
	if (look != KNOWN_LOOK) {
		/* Queued already, it is read when it is claimed; a new one is stat'ed only if it
		 * has to wait its turn (pending_place). */
		if (look == KNOWN_NEW)
			pending_add(d, SPOOL_NEW, name, NULL);
		return;
	}
	struct stat st;
	if (fstatat(d->spool->fd[SPOOL_NEW], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	struct file_id file;
	spool_file_id(&file, &st);
	pending_add(d, SPOOL_NEW, name, &file);
}

/* ---- providers ---------------------------------------------------------------------------- */

void dispatch_reconfigure(struct dispatch *d, struct config *cfg)
{
	struct config *old = d->cfg;
	/* Provider state carries over by name (a hold, a pause, the calls in flight); a provider
	 * gone from the file keeps its old section until its last job ends. */
	for (int i = d->n_providers - 1; i >= 0; i--) {
		struct provider_state *p = d->providers[i];
		if (p->retired)
			continue;
		const struct provider_config *next = config_provider(cfg, p->cfg->name);
		if (next && next->rpm != p->cfg->rpm)
			provider_rate_changed(&p->flow);
		/* A raised budget or limit is looked at again now. */
		provider_shared_block(&p->flow, PROVIDER_FREE, 0);
		if (next)
			p->cfg = next;
		else if (p->users) {
			log_info("provider '%s' is no longer configured: its %d job(s) finish first",
				 p->cfg->name, p->users);
			p->retired = config_ref(old);
		} else
			provider_state_free(p);
	}
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
	outbox_enable_endpoints(d->outbox);   /* a reload enables endpoints that answered 410 */
}

/* ---- costs -------------------------------------------------------------------------------- */

void dispatch_spend(const struct dispatch *d, const char *provider, struct spend_view *out)
{
	*out = spend_get(&d->spend, provider, spend_day(wall_ms()));
}

/* ---- tasks -------------------------------------------------------------------------------- */

static void task_free(struct task *t)
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
	if (t->xfer)
		http_cancel(d->http, t->xfer);
	if (t->calling)
		provider_ended(&t->prov->flow);
	if (t->reserved)   /* the call ended without an answer: it may have been billed */
		attempt_settle(t, true, t->reserve_known, t->reserve);
	keyshare_release(d->ks, &t->ticket);
	if (t->is_probe && t->prov)
		keyshare_probe_done(d->ks, t->prov->cfg->name);
	if (t->timer)
		loop_del_timer(d->loop, t->timer);
	/* A probe that ended without a verdict (a bad reference image, say) must not leave its
	 * held provider without a next probe. */
	if (t->is_probe && t->prov->flow.held && !t->prov->probe_timer && !t->prov->flow.probing &&
	    !t->prov->retired)
		t->prov->probe_timer = loop_add_timer(d->loop, d->cfg->hold_probe_interval * 1000,
						      provider_state_probe_due, t->prov);
	if (t->prov && --t->prov->users == 0 && t->prov->retired)
		provider_state_free(t->prov);
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
	free(t->result_json);
	free(t->result_provider);
	free(t->result_currency);
	free(t->final_job_text);
	free(t->job_text);
	if (t->body_fd >= 0)
		close(t->body_fd);
	free(t);
}

static struct task *task_new(struct dispatch *d, const char *id)
{
	struct task *t = xcalloc(1, sizeof(*t));
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

static void fail(struct task *t, const char *code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fail(struct task *t, const char *code, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->error_message, sizeof(t->error_message), fmt, ap);
	va_end(ap);
	t->succeeded = false;
	t->error_code = code;
	xsnprintf(t->error_field, sizeof(t->error_field), "%s", field ? field : "");
	finish(t);
}

/* Hands t to a helper thread; until done() runs, the loop must not touch t or its files. */
static void pool_submit(struct task *t, iopool_fn *work, iopool_fn *done)
{
	t->in_pool = true;
	iopool_submit(t->d->pool, work, done, t);
}

/* The same, in one pass with every other task waiting for the same batch work. */
static void pool_submit_batched(struct task *t, iopool_batch_fn *work, iopool_fn *done)
{
	t->in_pool = true;
	iopool_submit_batched(t->d->pool, work, done, t);
}

/* ---- publication (I/O pool) ---------------------------------------------------------------- */

/* A group commit: every task waiting to be published goes through one pass (publish_batch),
 * so their files and directories are synced together, a few barriers for the whole batch. */
static void publish_work(void **args, size_t n)
{
	struct spool *sp = ((struct task *)args[0])->d->spool;
	struct publish_job *jobs = xcalloc(n, sizeof(*jobs));
	struct publish_job **todo = xcalloc(n, sizeof(*todo));
	size_t m = 0;
	struct syncset ss;
	spool_syncset(sp, &ss, n);
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		if (!t->result_json)   /* the task's data is the pool's until publish_done */
			t->result_json = result_to_json(&t->result);
		/* Events are queued before the job is published (the batch's first barrier makes
		 * them durable): once it is, they cannot be lost. A job another daemon reclaimed is
		 * its to announce. */
		bool ours = spool_still_ours(sp, t->running_name);
		if (t->events.n && ours && outbox_write_in(sp, &t->events, &ss) < 0) {
			xsnprintf(t->publish_err, sizeof(t->publish_err), "cannot write outbox/: %s",
				  strerror(errno));
			t->publish_rc = PUBLISH_RETRY;
			continue;
		}
		jobs[i] = (struct publish_job){
			.dest = t->succeeded ? SPOOL_DONE : SPOOL_FAILED, .id = t->id,
			.running_name = t->running_name, .images = t->images, .n_images = t->n_images,
			.result_json = t->result_json, .job_text = t->final_job_text,
			.earlier_runs = t->runs_total > 0,
			.ours_checked = true, .ours = ours, .err = t->publish_err, .errsize = sizeof(t->publish_err) };
		todo[m++] = &jobs[i];
	}
	publish_batch(sp, todo, m, &ss);
	for (size_t i = 0; i < n; i++)
		if (jobs[i].id)
			((struct task *)args[i])->publish_rc = jobs[i].rc;
	syncset_release(&ss);
	free(todo);
	free(jobs);
}

static void publish_done(void *arg);

static int64_t publish_again(struct loop *loop, void *arg)
{
	(void)loop;
	struct task *t = arg;
	t->timer = 0;
	pool_submit_batched(t, publish_work, publish_done);
	return LOOP_TIMER_DONE;
}

static void publish_done(void *arg)
{
	struct task *t = arg;
	t->in_pool = false;
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
		char why[sizeof(t->publish_err)];
		xsnprintf(why, sizeof(why), "%s", t->publish_err);
		free(t->result_json);
		t->result_json = NULL;
		fail(t, "publish_failed", NULL, "the images were generated (and charged) but cannot be "
		     "published in done/: %s; they are in failed/ beside this result", why);
		return;
	}
	if (t->publish_rc == PUBLISH_PERMANENT) {
		log_job(LOG_ERROR, t->id, "cannot publish the result: %s; the job is left in running/ "
			"with its saved response and is not tried again until a restart", t->publish_err);
		task_free(t);
		return;
	}
	if (t->publish_rc < 0) {
		/* Disk full, quota, I/O error: the job stays in running/ and its result (maybe paid
		 * for) stays in memory; try again rather than lose it. */
		log_job(t->publish_failures++ ? LOG_DEBUG : LOG_ERROR, t->id,
			"cannot publish the result (%s); retrying every %lds", t->publish_err,
			t->d->cfg->disk_retry_interval);
		t->d->disk_checked = 0;   /* look at the free space again before claiming more */
		t->timer = loop_add_timer(t->d->loop, t->d->cfg->disk_retry_interval * 1000,
					  publish_again, t);
		return;
	}
	sidecar_drop(t);
	metrics_finished(t->succeeded);
	control_forget(t);
	if (t->succeeded)
		log_job(LOG_INFO, t->id, "done: %zu image(s) in done/ after %zu attempt(s)",
			t->n_images, attempt_count(t));
	else
		log_job(LOG_INFO, t->id, "failed: %s: %s", t->error_code, t->error_message);
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
static void queue_event(struct task *t, const char *state, json_t *data)
{
	struct dispatch *d = t->d;
	outbox_batch_release(&t->events);
	if (!events_wanted(d)) {
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
				   .now_ms = wall_ms() };
	outbox_event_entries(d->cfg, d->spool->host_id, &ev, data, &t->events);
	free(type);
	free(path);
}

const struct store_stats *dispatch_store_stats(const struct dispatch *d)
{
	return store_stats(d->store);
}

const struct outbox_stats *dispatch_outbox_stats(const struct dispatch *d)
{
	return outbox_stats(d->outbox);
}

static bool task_busy(void *arg, const char *task_id)
{
	struct dispatch *d = arg;
	return strset_has(&d->held, task_id);
}

static void upload_done(void *arg, struct image *images, char **urls, size_t n)
{
	struct task *t = arg;
	t->upload = NULL;
	t->images = images;
	t->n_images = n;
	t->urls = urls;
	finish(t);
}

/* What must happen before a result may be published: a succeeded job's images go to the store
 * first (the job waits in running/, leased, until they are there). True while it waits. */
static bool before_publish(struct task *t)
{
	struct dispatch *d = t->d;
	if (!t->succeeded || !t->n_images || t->urls || !config_store_enabled(d->cfg))
		return false;
	t->state = T_UPLOADING;
	t->upload = store_upload_start(d->store, t->id, t->images, t->n_images, upload_done, t);
	t->images = NULL;   /* the upload holds them until upload_done */
	return true;
}

static void finish(struct task *t)
{
	struct dispatch *d = t->d;
	if (t->xfer)
		http_cancel(d->http, t->xfer);
	t->xfer = NULL;
	if (before_publish(t))
		return;
	const struct outcome *o = &t->outcome;
	free(t->result_provider);
	free(t->result_currency);
	const char *provider = t->prov ? t->prov->cfg->name : t->job.provider;
	t->result_provider = provider ? xstrdup(provider) : NULL;
	t->result_currency = xstrdup(d->cfg->prices.currency);
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
		.metadata = t->job.metadata,
		.error_code = t->error_code,
		.error_message = t->error_message,
		.error_upstream_message = o->upstream_message[0] ? o->upstream_message : NULL,
		.error_field = t->error_field[0] ? t->error_field : NULL,
	};
	free(t->result_json);
	t->result_json = NULL;   /* built by publish_work, on the helper thread */
	free(t->final_job_text);
	t->final_job_text = t->job_text ? job_text_with_state(t, 0, t->succeeded ? "succeeded" : "failed")
					: NULL;
	if (events_wanted(d)) {   /* the data is the result parsed again: built here first */
		t->result_json = result_to_json(&t->result);
		queue_event(t, t->succeeded ? "succeeded" : "failed",
			    webhook_data_from_result(t->result_json));
	}
	t->state = T_PUBLISHING;
	pool_submit_batched(t, publish_work, publish_done);
}

/* ---- downloads of returned URLs ------------------------------------------------------------ */

/* At shutdown, a job whose paid response is saved (running/.ID@HOST.response.200) stays in
 * running/: the restart finishes it from that file, downloads included, without calling again. */
static void leave_for_restart(struct task *t, const char *why)
{
	log_job(LOG_WARN, t->id, "shutdown: left in running/ %s; the restart finishes it without "
		"calling again", why);
	task_free(t);
}

static void start_download(struct task *t);

static int64_t download_again(struct loop *loop, void *arg)
{
	(void)loop;
	struct task *t = arg;
	t->timer = 0;
	start_download(t);
	return LOOP_TIMER_DONE;
}

static void download_done(void *arg, struct http_result *res)
{
	struct task *t = arg;
	struct dispatch *d = t->d;
	t->xfer = NULL;
	res->body_len = secret_redact(res->body, res->body_len);
	const unsigned char *body = (const unsigned char *)res->body;
	const char *ext = image_ext_from_magic(body, res->body_len);
	if (res->transport == HTTP_DONE && res->status == 200 && ext) {
		t->images = xrealloc(t->images, (t->n_images + 1) * sizeof(*t->images));
		t->images[t->n_images++] = (struct image){ .data = (unsigned char *)res->body,
							  .len = res->body_len, .ext = ext };
		res->body = NULL;
		t->next_url++;
		t->download_tries = 0;
		start_download(t);
		return;
	}
	if (res->refused_address[0]) {
		fail(t, "download_failed", NULL, "the image was generated (and charged) but its URL "
		     "points at a loopback or private address (%s), which [limits] "
		     "allow_private_downloads does not allow", res->refused_address);
		return;
	}
	/* Only the download is repeated: the generation was paid for once. */
	t->download_tries++;
	const char *why = res->transport != HTTP_DONE ? http_transport_name(res->transport)
			  : res->status != 200 ? "an HTTP error" : "not a PNG, JPEG or WebP image";
	if (d->grace_over) {
		leave_for_restart(t, "while downloading its image");
		return;
	}
	if (t->download_tries >= d->cfg->download_attempts) {
		fail(t, "download_failed", NULL,
		     "the image was generated (and charged) but could not be downloaded: %s (HTTP %ld)",
		     why, res->status);
		return;
	}
	int64_t delay = 1000LL << (t->download_tries - 1);
	log_job(LOG_WARN, t->id, "download of image %zu failed (%s, HTTP %ld); retrying in %" PRId64 " ms",
		t->next_url + 1, why, res->status, delay);
	t->timer = loop_add_timer(d->loop, delay, download_again, t);
}

static void start_download(struct task *t)
{
	struct dispatch *d = t->d;
	if (t->next_url >= t->resp.n_urls) {
		t->succeeded = true;
		finish(t);
		return;
	}
	if (d->grace_over) {
		leave_for_restart(t, "before downloading its image");
		return;
	}
	t->state = T_DOWNLOADING;
	struct http_request req = {
		.url = t->resp.urls[t->next_url],
		.timeout_s = d->cfg->download_timeout,
		.connect_timeout_s = t->prov->cfg->connect_timeout,
		.max_body = (size_t)d->cfg->max_response_mb << 20,
		.follow_redirects = true,
		.ca_file = d->cfg->ca_file,
		.body_fd = -1,
		.public_only = !d->cfg->allow_private_downloads,
	};
	t->xfer = http_start(d->http, &req, download_done, t);
	if (!t->xfer)
		fail(t, "download_failed", NULL, "the returned image URL could not be fetched");
}

/* ---- the upstream call ------------------------------------------------------------------------ */

/* A retry waiting in memory (deferred/ could not be written) obeys what the pump obeys. */
static int64_t retry_due(struct loop *loop, void *arg)
{
	(void)loop;
	struct task *t = arg;
	t->timer = 0;
	if (t->d->draining || (t->prov->flow.held && !t->prov->flow.probing)) {
		requeue(t, t->d->draining ? "shutting down" : "provider on hold");
		return LOOP_TIMER_DONE;
	}
	int64_t until = provider_state_blocked_until(t->prov, mono_ms());
	if (until == 0 && !provider_state_take_share(t->prov, &t->job, t->model, &t->ticket))
		until = provider_state_blocked_until(t->prov, mono_ms());
	if (until != 0) {
		t->timer = loop_add_timer(t->d->loop, until > 0 ? until - mono_ms() : 1000, retry_due, t);
		return LOOP_TIMER_DONE;
	}
	send_attempt(t);
	return LOOP_TIMER_DONE;
}

/* The job file with our records ("imgspool") added, so they survive a move and a restart.
 * retry_at_ms: the due time when written for a deferral, else 0; finished: "succeeded" or
 * "failed" when written for the publication, else NULL. */
static char *job_text_with_state(const struct task *t, int64_t retry_at_ms, const char *finished)
{
	struct record r = {
		.attempts = t->attempts, .elided = t->elided,
		.runs = t->runs ? t->runs : json_array(),
		.runs_total = t->runs_total, .retry_count = t->retry_count,
		.billed_retries = t->billed_retries, .crashes = t->crashes,
		.created_at_ms = t->created_wall_ms, .retry_at_ms = retry_at_ms,
	};
	if (finished) {
		xsnprintf(r.finished, sizeof(r.finished), "%s", finished);
		xsnprintf(r.error_code, sizeof(r.error_code), "%s", t->error_code ? t->error_code : "");
	}
	char *records = record_text(&r);
	if (!t->runs)
		json_decref(r.runs);
	/* Spliced onto the client's bytes, never re-serialised: the file stays within the read cap. */
	char *text = job_with_records(t->job_text, t->job_len, records, NULL);
	free(records);
	return text;
}

static void arm_deferred(struct dispatch *d, int64_t due_wall_ms)
{
	if (d->deferred_timer && due_wall_ms >= d->deferred_due)
		return;
	if (d->deferred_timer)
		loop_del_timer(d->loop, d->deferred_timer);
	d->deferred_due = due_wall_ms;
	d->deferred_timer = loop_add_timer(d->loop, due_wall_ms - spool_server_now(d->spool) + 1,
					   deferred_due, d);
}

/* deferred/, or hold/ when an operator asked. Set on every path to defer_work: a zero
 * defer_dir is SPOOL_TMP, the clients' staging area, where the daemon never looks. */
static enum spool_dir defer_dir_for(const struct task *t)
{
	return control_wants(&t->d->control, CONTROL_HOLD, t->id) ? SPOOL_HOLD : SPOOL_DEFERRED;
}

static void defer_work(void *arg)
{
	struct task *t = arg;
	char *name = xasprintf("%s.json", t->id);
	t->publish_rc = outbox_write(t->d->spool, &t->events);
	if (t->publish_rc == 0)
		t->publish_rc = spool_move_rewritten(t->d->spool, t->running_name, t->defer_dir, name,
					     t->result_json, strlen(t->result_json), t->defer_due);
	if (t->publish_rc < 0)
		xsnprintf(t->publish_err, sizeof(t->publish_err), "%s", strerror(errno));
	free(name);
}

static void defer_done(void *arg)
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
			requeue(t, "shutting down");
			return;
		}
		log_job(LOG_WARN, t->id, "cannot move to deferred/ (%s); retrying from memory",
			t->publish_err);
		t->state = T_BACKOFF;
		t->timer = loop_add_timer(d->loop, t->defer_due - spool_server_now(d->spool), retry_due, t);
		return;
	}
	char when[48];
	format_time_iso8601(t->defer_due, when, sizeof(when));
	sidecar_drop(t);
	control_forget(t);
	if (t->defer_dir == SPOOL_HOLD) {
		log_job(LOG_INFO, t->id, "held: to hold/ instead of deferred/, as an operator asked "
			"(retry %d was due at %s)", t->retry_count, when);
		task_free(t);
		return;
	}
	log_job(LOG_INFO, t->id, "deferred: retry %d at %s (%s)", t->retry_count, when, t->outcome.code);
	arm_deferred(d, t->defer_due);
	bool queued = t->events.n;
	task_free(t);
	if (queued)
		outbox_scan(d->outbox);
}

/* Waits out the backoff in deferred/ (its mtime is the due time), freeing the slot meanwhile. */
static void schedule_retry(struct task *t)
{
	struct dispatch *d = t->d;
	const struct outcome *o = &t->outcome;
	int64_t delay = retry_backoff_ms(t->retry_count, d->cfg->backoff_base_ms,
					 d->cfg->backoff_cap_ms, random64());
	if (o->retry_after_ms > delay)
		delay = o->retry_after_ms;
	t->retry_count++;
	metrics_retry(t->prov->cfg->name);
	if (o->decision == DECIDE_RETRY_BILLED)
		t->billed_retries++;
	/* A 429 says the provider, not the job, is saturated: nobody calls it before the wait. */
	if (!strcmp(o->code, "rate_limited"))
		provider_state_pause_everywhere(t->prov, delay);
	t->defer_due = spool_server_now(d->spool) + delay;
	if (control_wants(&d->control, CONTROL_CANCEL, t->id)) {
		fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) before its retry");
		return;
	}
	t->defer_dir = defer_dir_for(t);
	t->result_json = job_text_with_state(t, t->defer_due, NULL);
	if (!t->result_json) {
		fail(t, "internal", NULL, "the job file could not be rewritten for a retry");
		return;
	}
	if (d->cfg->notify_deferrals) {
		char when[48];
		format_time_iso8601(t->defer_due, when, sizeof(when));
		queue_event(t, "deferred", json_pack("{s:s, s:s, s:s, s:s, s:[], s:[], s:n}",
						     "task_id", t->id, "status", "deferred",
						     "error_code", o->code, "retry_at", when,
						     "images", "urls", "cost"));
	}
	t->state = T_DEFERRING;
	pool_submit(t, defer_work, defer_done);
}

static void decide(struct task *t)
{
	struct dispatch *d = t->d;
	const struct outcome *o = &t->outcome;
	switch (o->decision) {
	case DECIDE_SUCCEEDED:
		if (t->is_probe)
			provider_state_release(t->prov);
		provider_succeeded(&t->prov->flow, provider_state_limits(t->prov).concurrency);
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
		start_download(t);
		return;
	case DECIDE_HOLD:
		provider_state_hold_everywhere(t->prov, o->message);
		requeue(t, "provider on hold");
		return;
	case DECIDE_RETRY:
	case DECIDE_RETRY_BILLED:
		if (t->is_probe)
			provider_state_release(t->prov);
		if (d->draining) {
			requeue(t, "shutting down");
			return;
		}
		if (t->retry_count < d->cfg->max_retries &&
		    (o->decision == DECIDE_RETRY || t->billed_retries < d->cfg->max_billed_retries)) {
			schedule_retry(t);
			return;
		}
		t->error_code = o->code;
		xsnprintf(t->error_message, sizeof(t->error_message), "%s (gave up after %zu attempts)",
			  o->message, attempt_count(t));
		t->succeeded = false;
		finish(t);
		return;
	case DECIDE_FAIL:
		if (t->is_probe)
			provider_state_release(t->prov);
		t->error_code = o->code;
		xsnprintf(t->error_message, sizeof(t->error_message), "%s", o->message);
		t->succeeded = false;
		finish(t);
		return;
	}
}

/* Responses that arrived together are saved together (a group commit): every complete body is
 * made durable, one barrier; each is renamed to its final name, one barrier; then parsed. */
static void parse_work(void **args, size_t n)
{
	struct spool *sp = ((struct task *)args[0])->d->spool;
	int dirfd = sp->fd[SPOOL_RUNNING];
	struct syncset ss;
	bool *save = xcalloc(n, sizeof(*save));
	size_t n_save = 0;
	spool_syncset(sp, &ss, n);
	for (size_t i = 0; i < n; i++) {
		struct task *t = args[i];
		/* An upstream may quote the key back: nothing it sent is kept with a secret in it. */
		size_t len = secret_redact(t->res.body, t->res.body_len);
		if (len != t->res.body_len) {
			t->res.body[len] = '\0';
			t->res.body_len = len;
			off_t at = (off_t)t->sidecar_header;
			if (t->body_fd >= 0 && (ftruncate(t->body_fd, at) < 0 ||
						pwrite(t->body_fd, t->res.body, len, at) != (ssize_t)len))
				t->res.body_fd_failed = true;
		}
		/* A complete response is made durable under its final name before anyone acts on
		 * it: from here a crash finishes the job from the file instead of paying again. */
		save[i] = t->body_fd >= 0 && t->res.transport == HTTP_DONE && !t->res.body_fd_failed &&
			  syncset_file(&ss, t->body_fd) == 0;
		n_save += save[i];
	}
	if (n_save && syncset_barrier(&ss) < 0)
		memset(save, 0, n * sizeof(*save));   /* left as .partial, as a failed fsync did */
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
		}
		free(partial);
		free(response);
	}
	if (n_save)
		syncset_barrier(&ss);
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
	}
	syncset_release(&ss);
	free(save);
}

static void parse_done(void *arg)
{
	struct task *t = arg;
	t->in_pool = false;
	if (t->fenced) {
		log_job(LOG_WARN, t->id, "lost the job to another daemon (our lease ran out): "
			"dropping its response");
		sidecar_drop(t);
		task_free(t);
		return;
	}
	struct classify_input in = {
		.transport = t->res.transport,
		.status = t->res.status,
		.retry_after = t->res.retry_after,
		.retry_after_ms = t->res.retry_after_ms,
		.resp = &t->resp,
		.now_wall_ms = wall_ms(),
	};
	retry_classify(&in, &t->outcome);
	/* The body was redacted, but a parsed string may have spelt a secret with JSON escapes. */
	secret_redact_str(t->outcome.upstream_message);
	secret_redact_json(t->resp.usage);
	struct attempt *a = &t->cur;
	a->outcome = decision_name(t->outcome.decision);
	a->billed = billed_name(t->outcome.billed);
	a->error_code = t->outcome.code;
	attempt_price(t, a, t->outcome.billed, t->resp.usage,
		      (int)(t->resp.n_images + t->resp.n_urls));
	record_health(t);
	attempt_settle(t, t->outcome.billed != BILLED_NO, a->cost_known, a->cost);
	attempt_record(t, a);
	log_job(LOG_INFO, t->id, "attempt %zu: HTTP %ld (%s) in %" PRId64 " ms: %s%s%s",
		attempt_count(t),
		t->res.status, http_transport_name(t->res.transport), t->res.latency_ms, a->outcome,
		t->outcome.code ? " " : "", t->outcome.code ? t->outcome.code : "");
	decide(t);
}

static void call_done(void *arg, struct http_result *res)
{
	struct task *t = arg;
	t->xfer = NULL;
	t->calling = false;
	provider_ended(&t->prov->flow);
	/* Pause the provider now, not after the body is parsed: calls must not start meanwhile.
	 * The classification may still hold it (an exhausted quota) or lengthen the pause. */
	if (res->transport == HTTP_DONE && res->status == 429) {
		int64_t wait = retry_after_ms(res->retry_after, res->retry_after_ms, wall_ms(), 3600000);
		provider_state_pause_everywhere(t->prov, wait > 0 ? wait : t->d->cfg->backoff_base_ms);
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
	pool_submit_batched(t, parse_work, parse_done);
}

static void send_attempt(struct task *t)
{
	struct dispatch *d = t->d;
	const struct provider_config *p = t->prov->cfg;
	if (!p->api_key) {
		provider_state_hold(t->prov, p->key_problem);
		requeue(t, "no API key");
		return;
	}
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
	req.body_fd = t->body_fd;
	t->state = T_CALLING;
	t->xfer = http_start(d->http, &req, call_done, t);
	if (!t->xfer) {
		fail(t, "internal", NULL, "the request could not be set up");
		return;
	}
	t->calling = true;
	struct provider_limits limits = provider_state_limits(t->prov);
	provider_started(&t->prov->flow, &limits, mono_ms());
	attempt_reserve(t);
}

/* ---- claiming --------------------------------------------------------------------------------- */

/* Reads the reference images; on failure fails the task and returns -1. */
static int load_refs(struct task *t, struct ref_image *refs, struct ref_image *mask,
		     struct buf *bufs)
{
	struct dispatch *d = t->d;
	for (int i = 0; i <= t->job.n_refs; i++) {
		bool is_mask = i == t->job.n_refs;
		const char *path = is_mask ? t->job.mask : t->job.refs[i];
		if (!path)
			continue;
		struct buf *b = &bufs[i];
		buf_init(b, REF_IMAGE_MAX);
		enum spool_read rc = spool_read_beneath(d->spool, path, REF_IMAGE_MAX, b);
		char field[32];
		if (is_mask)
			xsnprintf(field, sizeof(field), "mask");
		else
			xsnprintf(field, sizeof(field), "images[%d]", i);
		if (rc != SPOOL_READ_OK) {
			fail(t, "invalid_request", field,
			     "reference image \"%s\" cannot be used: %s (paths are relative to the spool "
			     "root and may not leave it or pass through a symlink)", field,
			     rc == SPOOL_READ_GONE ? "no such file" : spool_read_reason(rc));
			return -1;
		}
		const char *mime = image_mime_from_magic((unsigned char *)b->data, b->len);
		if (!mime) {
			fail(t, "invalid_request", field, "reference image \"%s\" is not a PNG, JPEG or WebP image",
			     field);
			return -1;
		}
		struct ref_image *r = is_mask ? mask : &refs[i];
		*r = (struct ref_image){ .data = (unsigned char *)b->data, .len = b->len, .mime = mime,
					 .name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path };
	}
	return 0;
}

static void prepare_and_send(struct task *t)
{
	struct ref_image refs[JOB_REFS_MAX], mask = { 0 };
	struct buf bufs[JOB_REFS_MAX + 1];
	int n_bufs = t->job.n_refs + 1;
	char err[512];
	for (int i = 0; i < n_bufs; i++)
		buf_init(&bufs[i], 0);
	if (load_refs(t, refs, &mask, bufs) < 0)
		goto out;
	if (upstream_build_request(&t->job, t->model, t->prov->cfg->base_url, refs,
				   (size_t)t->job.n_refs, t->job.mask ? &mask : NULL, &t->req, err,
				   sizeof(err)) < 0) {
		fail(t, "invalid_request", NULL, "%s", err);
		goto out;
	}
	send_attempt(t);
out:
	for (int i = 0; i < n_bufs; i++)
		buf_release(&bufs[i]);
}

/* running/ back to new/, for a job that did not finish here (hold, shutdown). */
static void requeue(struct task *t, const char *why)
{
	char *name = xasprintf("%s.json", t->id);
	/* An operator's hold (or a cancel, which imgspool then finishes from hold/) wins. */
	enum spool_dir dest = control_wants(&t->d->control, CONTROL_HOLD, t->id) ||
			      control_wants(&t->d->control, CONTROL_CANCEL, t->id) ? SPOOL_HOLD : SPOOL_NEW;
	/* Attempts made so far (some maybe billed) stay with the job; its mtime keeps its place. */
	char *text = attempt_count(t) ? job_text_with_state(t, 0, NULL) : NULL;
	int rc = text ? spool_move_rewritten(t->d->spool, t->running_name, dest, name, text,
					     strlen(text), t->created_wall_ms) : -1;
	/* Without room for the records, the job itself must still not stay stuck in running/. */
	if (rc < 0 && spool_still_ours(t->d->spool, t->running_name))
		rc = spool_rename(t->d->spool, SPOOL_RUNNING, t->running_name, dest, name);
	free(text);
	if (rc == 0) {
		sidecar_drop(t);
		control_forget(t);
	}
	if (rc < 0)
		log_job(LOG_ERROR, t->id, "cannot move 'running/%s' back to %s/: %s; a restart will",
			t->running_name, spool_dir_name(dest), strerror(errno));
	else
		log_job(LOG_INFO, t->id, "back to %s/ (%s)", spool_dir_name(dest), why);
	free(name);
	task_free(t);
}

/* A file in new/ that is not a job we can claim: logged once, then left alone until it changes.
 * st: the file as it was read (st_mode 0 when it could not be opened: a symlink). */
static void ignore_entry(struct dispatch *d, const struct pending *pe, const struct stat *st,
			 const char *why)
{
	struct file_id file = pe->file;
	struct stat now;
	if (st && st->st_mode) {
		spool_file_id(&file, st);
	} else if (!pe->placed) {
		/* Never stat'ed: what is there now, unless it is a file again (replaced), which
		 * the next listing brings back. */
		if (fstatat(d->spool->fd[pe->dir], pe->name, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
		    S_ISREG(now.st_mode)) {
			known_del(d, pe->dir, pe->name);
			return;
		}
		spool_file_id(&file, &now);
	}
	log_warn("ignoring '%s/%s': %s", spool_dir_name(pe->dir), pe->name, why);
	known_ignore(&d->known, known_dir(pe->dir), pe->name, &file, mono_ms());
}

enum start { STARTED, SKIPPED, WAIT };

/* Our records ("imgspool") get room of their own beyond max_job_bytes (record.h bounds them),
 * so a job near the limit is never locked out by its history. Files are read up to this cap; the
 * client's part of a file in new/ is then held to max_job_bytes. */
static size_t job_read_cap(const struct dispatch *d)
{
	return (size_t)d->cfg->max_job_bytes + RECORD_HEADROOM;
}

/* What the job parser is allowed, from the running config. */
static void job_limits_from_config(struct dispatch *d)
{
	job_limits_default(&d->limits);
	d->limits.max_n = (int)d->cfg->max_n;
	d->limits.max_depth = (int)d->cfg->max_depth;
	d->limits.max_pixels_mp = (int)d->cfg->max_pixels_mp;
	d->readbuf.max = job_read_cap(d);
}

/* model: the target's, for a routed job; NULL: the job's own or the provider's default. */
static void set_provider(struct task *t, struct provider_state *prov, const char *model)
{
	t->prov = prov;
	prov->users++;
	if (prov->flow.held) {
		t->is_probe = true;
		prov->flow.probing = false;  /* one probe at a time */
	}
	t->routed = model != NULL;
	t->model = xstrdup(model ? model : t->job.model ? t->job.model : prov->cfg->model);
	t->dialect = upstream_dialect(t->model);
}

/* A regular file in new/ whose name is not a valid task id goes to failed/ under a safe name
 * ("badname-" and a hash of the name), with a result saying why; anything else is ignored. */
static void refuse_bad_name(struct dispatch *d, struct pending *pe)
{
	struct stat st;
	if (pe->dir != SPOOL_NEW ||
	    fstatat(d->spool->fd[SPOOL_NEW], pe->name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		ignore_entry(d, pe, NULL, "not a valid task id, and not a plain file");
		return;
	}
	uint64_t h = 14695981039346656037ULL;
	for (const char *c = pe->name; *c; c++)
		h = (h ^ (unsigned char)*c) * 1099511628211ULL;
	char id[32];
	xsnprintf(id, sizeof(id), "badname-%016" PRIx64, h);
	struct task *t = task_new(d, id);
	if (spool_rename(d->spool, SPOOL_NEW, pe->name, SPOOL_RUNNING, t->running_name) < 0) {
		known_del(d, pe->dir, pe->name);
		task_free(t);
		return;
	}
	known_del(d, pe->dir, pe->name);
	t->created_wall_ms = timespec_ms(&st.st_mtim);
	log_job(LOG_INFO, id, "claimed: a file in new/ whose name is not a valid task id");
	fail(t, "invalid_job", "", "the file name is not a valid task id: use 1-128 letters, digits, "
	     "'.', '_' or '-', starting with a letter or digit, optionally followed by \".json\" "
	     "(spool-layout.md §3); the file was renamed to %s.json", id);
}

/* Whether the daemon's user wrote a file: its owner is our user, the owner of running/ (the
 * same user, seen through an NFS uid mapping), or root (who can do anything the daemon can, and
 * runs `imgspool retry` for it). Clients of another user can write new/ (and, on a spool set up
 * wrongly, running/): what they wrote is never taken for our records or for a response we
 * saved (spool-layout.md §4, §10). */
bool dispatch_written_by_daemon(const struct dispatch *d, const struct stat *st)
{
	struct stat running;
	return st->st_uid == geteuid() || st->st_uid == 0 ||
	       (fstat(d->spool->fd[SPOOL_RUNNING], &running) == 0 && st->st_uid == running.st_uid);
}

/* Takes the daemon's records back from a job file (st: its fstat) into t and rec. Records in a
 * file another user wrote are ignored; the rest are held to record.c's rule: they can only use
 * up budget. rec keeps what the caller decides on (finished, retry_at_ms). */
static void restore_state(struct task *t, const struct stat *st, struct record *rec)
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
static void apply_record(struct task *t, const struct record *rec)
{
	json_decref(t->attempts);
	t->attempts = json_incref(rec->attempts);
	t->elided = rec->elided;
	json_decref(t->runs);
	t->runs = json_incref(rec->runs);
	t->runs_total = rec->runs_total;
	t->retry_count = rec->retry_count;
	t->billed_retries = rec->billed_retries;
	t->crashes = rec->crashes;
	if (rec->created_at_ms > 0)
		t->created_wall_ms = rec->created_at_ms;
}

/* ---- routes: where a job whose model names a route goes ---------------------------------- */

static int64_t route_wake(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->route_timer = 0;   /* the before-sleep hook pumps */
	return LOOP_TIMER_DONE;
}

/* Wakes the pump when a cooldown or pause that routed jobs wait for ends. */
static void route_wake_at(struct dispatch *d, int64_t due)
{
	if (due <= 0 || (d->route_timer && d->route_due <= due))
		return;
	if (d->route_timer)
		loop_del_timer(d->loop, d->route_timer);
	d->route_due = due;
	int64_t delay = due - mono_ms();
	d->route_timer = loop_add_timer(d->loop, delay > 0 ? delay : 1, route_wake, d);
}

static bool is_route_target(const struct config *cfg, const char *provider, const char *model)
{
	for (size_t i = 0; i < cfg->n_routes; i++)
		for (size_t k = 0; k < cfg->routes[i].n_targets; k++) {
			const struct route_target *tg = &cfg->routes[i].targets[k];
			if (!strcmp(tg->provider, provider) && !strcmp(tg->model, model))
				return true;
		}
	return false;
}

/* A target that failed for free too often in a row cools down (health.c). */
static void record_health(struct task *t)
{
	struct dispatch *d = t->d;
	const char *provider = t->prov->cfg->name;
	if (!is_route_target(d->cfg, provider, t->model))
		return;   /* only routes read it; a job's own model names do not fill the table */
	struct health_policy p = { .failures = d->cfg->cooldown_failures,
				   .cooldown_ms = d->cfg->cooldown_time * 1000,
				   .jitter_pct = d->cfg->cooldown_jitter };
	int64_t until = health_record(&d->health, provider, t->model, health_event_of(&t->outcome),
				      &p, mono_ms(), random64());
	if (until)
		log_warn("%s/%s failed %ld times in a row for free: cooling down for %" PRId64 " ms; its "
			 "routes send jobs elsewhere", provider, t->model, p.failures, until - mono_ms());
}

/* When can each target of r take job: served, available, busy, priced (route.h). */
static void target_views(struct dispatch *d, const struct route_config *r, const struct job *job,
			 struct target_view *v, char *why, size_t whysize)
{
	int64_t now = mono_ms();
	size_t used = 0;
	why[0] = '\0';
	for (size_t i = 0; i < r->n_targets; i++) {
		const struct route_target *tg = &r->targets[i];
		struct provider_state *p = provider_state_find(d, tg->provider);
		char reason[256];
		v[i] = (struct target_view){ .can_serve = p && route_can_serve(tg, job, reason, sizeof(reason)) };
		if (!v[i].can_serve) {
			int n = snprintf(why + used, whysize - used, "%s%s", used ? "; " : "", reason);
			used = n > 0 && used + (size_t)n < whysize ? used + (size_t)n : used;
			continue;
		}
		v[i].unavailable_until = provider_unavailable_until(&p->flow, now);
		if (!v[i].unavailable_until)
			v[i].unavailable_until = health_cooling_until(&d->health, tg->provider, tg->model, now);
		v[i].busy_until = provider_state_busy_until(p, now);
		struct price_call c = { .model = tg->model, .size = job->size, .quality = job->quality,
					.images = job->n };
		struct price_quote q = price_call(&d->cfg->prices, &c);
		v[i].priced = q.known;
		v[i].price = q.amount;
	}
}

/* The target of the job's last call if it failed and may be retried: the next avoids it. */
static int failed_target(const struct route_config *r, const struct job *job)
{
	json_t *attempts = json_object_get(job->state, "attempts");
	json_t *last = json_array_get(attempts, json_array_size(attempts) - 1);
	const char *outcome = json_string_value(json_object_get(last, "outcome"));
	const char *provider = json_string_value(json_object_get(last, "provider"));
	const char *model = json_string_value(json_object_get(last, "model"));
	if (!outcome || !provider || !model || (strcmp(outcome, "retry") && strcmp(outcome, "interrupted")))
		return -1;
	for (size_t i = 0; i < r->n_targets; i++)
		if (!strcmp(r->targets[i].provider, provider) && !strcmp(r->targets[i].model, model))
			return (int)i;
	return -1;
}

struct route_pick {
	enum route_verdict verdict;
	struct provider_state *prov;  /* ROUTE_CHOSEN */
	const char *model;            /* borrowed from the config, for this call only */
	char why[768];                /* ROUTE_NONE: what no target can do */
};

/* Chooses the target of a routed job; on ROUTE_WAIT, pe remembers what it waits for, so the
 * pump need not reread its file until something changes. */
static void pick_target(struct dispatch *d, const struct route_config *r, const struct job *job,
			const char *id, struct pending *pe, struct route_pick *pick)
{
	struct target_view v[ROUTE_MAX_TARGETS];
	target_views(d, r, job, v, pick->why, sizeof(pick->why));
	struct route_choice c = route_choose(r, id, v, failed_target(r, job));
	pick->verdict = c.verdict;
	if (c.verdict == ROUTE_CHOSEN) {
		pick->prov = provider_state_find(d, r->targets[c.target].provider);
		pick->model = r->targets[c.target].model;
	}
	if (c.verdict != ROUTE_WAIT)
		return;
	free(pe->route);
	pe->route = xstrdup(r->name);
	pe->route_target = c.target;
	pe->route_mask = 0;
	for (size_t i = 0; i < r->n_targets; i++)
		pe->route_mask |= v[i].can_serve ? 1u << i : 0;
	route_wake_at(d, c.wait_until);
}

/* Whether a job waiting for its route must still wait: its busy target is still busy, or no
 * target that can serve it is free. */
static bool route_still_waits(struct dispatch *d, const struct pending *pe)
{
	const struct route_config *r = config_route(d->cfg, pe->route);
	int64_t now = mono_ms();
	for (size_t i = 0; r && i < r->n_targets; i++) {
		const struct route_target *tg = &r->targets[i];
		struct provider_state *p = provider_state_find(d, tg->provider);
		if (!(pe->route_mask & (1u << i)) || !p)
			continue;
		bool available = !provider_unavailable_until(&p->flow, now) &&
				 !health_cooling_until(&d->health, tg->provider, tg->model, now);
		if (pe->route_target == (int)i)
			return available && provider_state_busy_until(p, now);
		if (pe->route_target < 0 && available && !provider_state_busy_until(p, now))
			return false;
	}
	return r && pe->route_target < 0;
}

/* Reads, checks and claims one pending file. */
static enum start try_start(struct dispatch *d, struct pending *pe)
{
	char id[JOB_ID_MAX + 1];
	struct stat st;
	struct job job;
	struct job_error jerr;
	int dirfd = d->spool->fd[pe->dir];

	if (pe->provider) {
		struct provider_state *p = provider_state_find(d, pe->provider);
		if (p && provider_state_blocked_until(p, mono_ms()))
			return WAIT;
	}
	if (pe->route && route_still_waits(d, pe))
		return WAIT;
	if (job_id_from_name(pe->name, id, sizeof(id)) < 0) {
		refuse_bad_name(d, pe);
		return SKIPPED;
	}
	/* The same id again (ID and ID.json, or resubmitted while running): one at a time. */
	if (strset_has(&d->held, id))
		return WAIT;
	enum spool_read rr = spool_read_file(dirfd, pe->name, job_read_cap(d), &d->readbuf, &st);
	if (rr == SPOOL_READ_GONE) {
		known_del(d, pe->dir, pe->name);
		return SKIPPED;
	}
	if (rr == SPOOL_READ_ERROR) {
		/* Perhaps transient (NFS): the next rescan tries again. */
		log_debug("cannot read '%s/%s': %s", spool_dir_name(pe->dir), pe->name, strerror(errno));
		known_del(d, pe->dir, pe->name);
		return SKIPPED;
	}
	if (rr != SPOOL_READ_OK) {
		ignore_entry(d, pe, &st, spool_read_reason(rr));
		return SKIPPED;
	}
	enum job_parse_result pr = job_parse(&job, d->readbuf.data, d->readbuf.len, &d->limits, &jerr);
	int64_t mtime_ms = timespec_ms(&st.st_mtim);
	if (pr == JOB_INCOMPLETE && pe->dir == SPOOL_NEW &&
	    spool_server_now(d->spool) - mtime_ms < d->cfg->settle_time * 1000) {
		/* Probably still being written (a plain cp into new/): its close or a rescan brings
		 * it back. */
		known_del(d, pe->dir, pe->name);
		return SKIPPED;
	}
	/* The record headroom is for the daemon's records: the client's bytes are held to
	 * max_job_bytes, all of them unless the records are the daemon's. */
	size_t client_bytes = pr == JOB_OK && job.state && dispatch_written_by_daemon(d, &st)
			      ? job_client_bytes(d->readbuf.data, d->readbuf.len) : d->readbuf.len;
	if (pe->dir == SPOOL_NEW && client_bytes > (size_t)d->cfg->max_job_bytes) {
		job_release(&job);
		ignore_entry(d, pe, &st, spool_read_reason(SPOOL_READ_TOO_BIG));
		return SKIPPED;
	}
	struct provider_state *prov = NULL;
	struct keyshare_ticket ticket = { 0 };
	const struct route_config *route = pr == JOB_OK ? config_route(d->cfg, job.model) : NULL;
	struct route_pick pick = { .verdict = ROUTE_CHOSEN };
	if (route && !job.provider) {
		pick_target(d, route, &job, id, pe, &pick);
		/* The chosen target's provider keeps its shared limits too. */
		if (pick.verdict == ROUTE_WAIT ||
		    (pick.prov && !provider_state_take_share(pick.prov, &job, pick.model, &ticket))) {
			job_release(&job);
			return WAIT;
		}
		prov = pick.prov;
	} else if (pr == JOB_OK) {
		prov = provider_state_find(d, job.provider);
		if (prov && (provider_state_blocked_until(prov, mono_ms()) ||
			     !provider_state_take_share(prov, &job, NULL, &ticket))) {
			free(pe->provider);   /* set before when it waited for another reason */
			pe->provider = xstrdup(prov->cfg->name);
			job_release(&job);
			return WAIT;
		}
	}

	struct task *t = task_new(d, id);
	t->ticket = ticket;   /* from here task_free gives it back if the call never starts */
	/* The lease is the mtime in running/, and rename keeps the old one: refresh it first, so
	 * no other host ever sees our fresh claim as stale. */
	utimensat(dirfd, pe->name, NULL, AT_SYMLINK_NOFOLLOW);
	if (spool_rename(d->spool, pe->dir, pe->name, SPOOL_RUNNING, t->running_name) < 0) {
		if (errno != ENOENT)
			log_job(LOG_ERROR, id, "cannot claim '%s/%s': %s", spool_dir_name(pe->dir),
				pe->name, strerror(errno));
		known_del(d, pe->dir, pe->name);
		job_release(&job);
		task_free(t);
		return SKIPPED;
	}
	known_del(d, pe->dir, pe->name);
	crash_point("claim:claimed");
	t->sidecars = 0;   /* a job leaves running/ without them; a crash's are the restart's */
	t->job = job;
	t->job_text = xstrndup(d->readbuf.data, d->readbuf.len);
	t->job_len = d->readbuf.len;
	t->created_wall_ms = mtime_ms;
	struct record rec;
	restore_state(t, &st, &rec);
	/* A finished job put back by hand (or `imgspool retry`): a new run with a fresh budget; the
	 * old one is kept in the records' history. */
	if (rec.finished[0]) {
		log_job(LOG_INFO, id, "resubmitted after it had %s: run %ld starts with a fresh budget",
			rec.finished, rec.runs_total + 2);
		record_new_run(&rec, mtime_ms);
	}
	apply_record(t, &rec);
	record_release(&rec);
	/* The file we claimed must be the one we read: a client may have replaced it in between. */
	struct stat claimed;
	if (fstatat(d->spool->fd[SPOOL_RUNNING], t->running_name, &claimed, AT_SYMLINK_NOFOLLOW) < 0 ||
	    claimed.st_ino != st.st_ino || claimed.st_dev != st.st_dev) {
		requeue(t, "replaced while being claimed");
		return SKIPPED;
	}
	if (pr != JOB_OK) {
		log_job(LOG_INFO, id, "claimed: invalid job file");
		fail(t, "invalid_job", jerr.field, "%s", jerr.message);
		return STARTED;
	}
	if (route && job.provider) {
		fail(t, "invalid_job", "provider", "\"model\" names route \"%s\", which chooses the "
		     "provider: leave \"provider\" out", route->name);
		return STARTED;
	}
	if (route && pick.verdict == ROUTE_NONE) {
		fail(t, "invalid_request", NULL, "no target of route \"%s\" can do all this job asks: %s",
		     route->name, pick.why);
		return STARTED;
	}
	if (t->job.webhook_url && !webhook_job_url_allowed(d->cfg, t->job.webhook_url)) {
		log_job(LOG_INFO, id, "claimed: a webhook_url the configuration does not allow");
		free(t->job.webhook_url);
		t->job.webhook_url = NULL;   /* its events go to [notify] url, if any */
		fail(t, "invalid_job", "webhook_url", "\"webhook_url\" is not under one of the URL "
		     "prefixes that [notify] job_url_prefixes allows");
		return STARTED;
	}
	if (!prov) {
		log_job(LOG_INFO, id, "claimed: unknown provider");
		fail(t, "invalid_job", "provider", "provider \"%s\" is not configured on this daemon",
		     job.provider);
		return STARTED;
	}
	set_provider(t, prov, route ? pick.model : NULL);
	log_job(LOG_INFO, id, "claimed%s: %s%s%sprovider %s, model %s (%s)%s",
		pe->dir == SPOOL_DEFERRED ? " from deferred/" : "", route ? "route " : "",
		route ? route->name : "", route ? " to " : "", prov->cfg->name, t->model,
		dialect_name(t->dialect), t->is_probe ? ", probing the held provider" : "");
	prepare_and_send(t);
	return STARTED;
}

static int64_t wake_pump(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->wake_timer = 0;   /* the before-sleep hook pumps */
	return LOOP_TIMER_DONE;
}

/* Whether some provider would take a call now. If none would, pumping would only reread files:
 * instead a timer wakes the loop when the earliest pause or rate window ends. */
static bool any_provider_ready(struct dispatch *d)
{
	int64_t now = mono_ms(), earliest = 0;
	for (int i = 0; i < d->n_providers; i++) {
		if (d->providers[i]->retired)
			continue;
		int64_t until = provider_state_blocked_until(d->providers[i], now);
		if (until == 0)
			return true;
		if (until > 0 && (!earliest || until < earliest))
			earliest = until;
	}
	if (earliest && !d->wake_timer)
		d->wake_timer = loop_add_timer(d->loop, earliest - now, wake_pump, d);
	return false;
}

/* Whether there is room to publish what we would claim; looked at once a second at most. */
static bool disk_has_room(struct dispatch *d)
{
	int64_t now = mono_ms();
	if (now - d->disk_checked < 1000 && d->disk_checked)
		return !d->disk_full;
	d->disk_checked = now;
	long free_mb = spool_free_mb(d->spool);
	bool full = free_mb >= 0 && free_mb < d->cfg->min_free_mb;
	if (full != d->disk_full)
		log_msg(full ? LOG_ERROR : LOG_INFO, full ? "the spool's file system has %ld MiB free, "
			"under min_free_mb %ld: claiming nothing until there is room" :
			"the spool's file system has %ld MiB free again (min_free_mb %ld): claiming",
			free_mb, d->cfg->min_free_mb);
	d->disk_full = full;
	if (full && !d->wake_timer)
		d->wake_timer = loop_add_timer(d->loop, 1000, wake_pump, d);
	return !full;
}

void dispatch_pump(struct dispatch *d)
{
	if (d->draining || d->n_pending == 0 || d->n_tasks >= d->cfg->concurrency ||
	    !any_provider_ready(d) || !disk_has_room(d)) {
		pending_place(d, d->n_sorted, SCAN_SLICE_MS);   /* what waits gets its place in line */
		return;
	}
	/* Order matters only when not every entry can start now: new names are stat'ed then. */
	bool all_fit = d->n_pending <= (size_t)(d->cfg->concurrency - d->n_tasks);
	/* A claim waits until every waiting job has its place, so the oldest starts first. */
	if (!all_fit && !pending_place(d, d->n_sorted, SCAN_SLICE_MS))
		return;
	pending_sort(d);
	size_t sorted = d->n_pending;
	size_t keep = 0;   /* entries that must wait are compacted to the front */
	size_t i = 0;
	for (; i < d->n_pending && d->n_tasks < d->cfg->concurrency; i++) {
		struct pending *pe = &d->pending[i];
		if (try_start(d, pe) == WAIT) {
			d->pending[keep++] = *pe;
			continue;
		}
		d->n_unplaced -= !pe->placed;
		pending_free(pe);
	}
	/* Move the untried tail down behind the waiting ones. */
	if (keep != i)
		memmove(&d->pending[keep], &d->pending[i], (d->n_pending - i) * sizeof(*d->pending));
	/* Compacting keeps the order; anything added meanwhile is sorted in next time. */
	d->n_sorted = d->n_pending == sorted ? keep + (sorted - i) : 0;
	d->n_pending = keep + (d->n_pending - i);
	pending_place(d, 0, INT64_MAX / 2);   /* those that wait: a concurrency's worth at most */
	any_provider_ready(d);   /* arms the wake-up timer if something is paused */
}

/* ---- an operator's requests (control/) ---------------------------------------------------- */

/* The job left our running/: its requests are fulfilled, or moot. */
static void control_forget(struct task *t)
{
	struct dispatch *d = t->d;
	if (control_wants(&d->control, CONTROL_HOLD, t->id))
		control_withdraw(d->spool, CONTROL_HOLD, t->id);
	if (control_wants(&d->control, CONTROL_CANCEL, t->id))
		control_withdraw(d->spool, CONTROL_CANCEL, t->id);
}

/* Cuts the call in flight: the upstream may have started (and may charge for) it. */
static void cancel_call(struct task *t)
{
	if (t->xfer)
		http_cancel(t->d->http, t->xfer);
	t->xfer = NULL;
	if (t->calling)
		provider_ended(&t->prov->flow);
	t->calling = false;
	int64_t now = wall_ms();
	struct attempt a = { .started_wall_ms = t->call_started_wall,
			     .latency_ms = now - t->call_started_wall, .transport = "interrupted",
			     .outcome = "interrupted", .billed = "unknown", .error_code = "cancelled",
			     .request_id = "" };
	attempt_price(t, &a, BILLED_UNKNOWN, NULL, 0);
	attempt_settle(t, true, a.cost_known, a.cost);
	record_add_attempt(t->attempts, &t->elided, result_attempt_json(&a));
	fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) while its call was in "
	     "flight; the upstream may still charge for that call");
}

/* Rereads control/ and acts on our jobs: a cancel cuts a call or a backoff; a hold moves a job
 * waiting in memory to hold/. Everything else is decided at the job's next transition. */
void dispatch_control(struct dispatch *d)
{
	if (control_read(&d->control, d->spool) < 0)
		log_debug("cannot read control/: %s", strerror(errno));
	control_sweep(&d->control, d->spool, mono_ms(), d->cfg->lease_timeout * 1000);
	struct task *t = d->tasks, *next;
	for (; t; t = next) {
		next = t->next;
		if (t->in_pool || t->fenced)
			continue;
		bool cancel = control_wants(&d->control, CONTROL_CANCEL, t->id);
		if (cancel && t->state == T_CALLING) {
			log_job(LOG_INFO, t->id, "cancelled by an operator: cutting the call in flight");
			cancel_call(t);
		} else if (cancel && t->state == T_BACKOFF) {
			if (t->timer)
				loop_del_timer(d->loop, t->timer);
			t->timer = 0;
			fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) before its retry");
		} else if (t->state == T_BACKOFF && control_wants(&d->control, CONTROL_HOLD, t->id)) {
			requeue(t, "held by an operator");
		}
	}
}

/* ---- leases: heartbeats and reclaiming the jobs of dead daemons ------------------------------- */

static int64_t heartbeat_interval_ms(const struct dispatch *d)
{
	/* Several beats per lease, so one slow write does not cost the lease. */
	return d->cfg->lease_timeout * 1000 / 4;
}

/* A job's lease is the mtime of its file in running/: touched here for every job we hold. */
static int64_t heartbeat(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	int fd = d->spool->fd[SPOOL_RUNNING];
	keyshare_heartbeat_probes(d->ks);
	for (struct task *t = d->tasks; t; t = t->next) {
		keyshare_heartbeat(d->ks, &t->ticket);
		/* Every job held is beaten, in the I/O pool too (a slow fsync must not cost the
		 * lease), but for a deferral: its helper sets this very file's mtime to the due time
		 * and moves it out of running/ at once. */
		if (t->in_pool && t->state == T_DEFERRING)
			continue;
		if (t->state == T_PUBLISHING) {
			/* Past its commit the job's lease is its staging directory's mtime. */
			char *staging = publish_staging_name(t->id, d->spool->host_id,
							     t->succeeded ? SPOOL_DONE : SPOOL_FAILED);
			utimensat(fd, staging, NULL, AT_SYMLINK_NOFOLLOW);
			free(staging);
		}
		if (utimensat(fd, t->running_name, NULL, AT_SYMLINK_NOFOLLOW) < 0 &&
		    errno == ENOENT && !t->fenced && !t->in_pool) {
			t->fenced = true;
			log_job(LOG_WARN, t->id, "its file in running/ is gone: another daemon reclaimed it");
		}
	}
	return heartbeat_interval_ms(d);
}

/* Every sidecar of a reclaimed job comes along (.partial and each saved .response.STATUS, a
 * 524 as much as a 200), so a response the dead host saved is used, never paid again; so does
 * its uncommitted staging directory (.ID@HOST.done/.failed), which a job whose records say
 * "finished" is published from. */
static void take_sidecars(struct dispatch *d, const char *id, const char *owner)
{
	struct spool_entry *h;
	int fd = d->spool->fd[SPOOL_RUNNING];
	char *prefix = xasprintf(".%s@%s.", id, owner);
	size_t plen = strlen(prefix);
	long nh = spool_list_hidden(d->spool, SPOOL_RUNNING, &h);
	for (long i = 0; i < nh; i++) {
		const char *sfx = h[i].name + plen;
		if (strncmp(h[i].name, prefix, plen) ||
		    (strcmp(sfx, "partial") && strcmp(sfx, "target") && strncmp(sfx, "response.", 9) &&
		     strcmp(sfx, "done") && strcmp(sfx, "failed")))
			continue;
		char *to = xasprintf(".%s@%s.%s", id, d->spool->host_id, sfx);
		renameat(fd, h[i].name, fd, to);
		free(to);
	}
	spool_entries_free(h, nh);
	free(prefix);
}

/* Jobs of other hosts whose lease ran out, judged by the file server's clock, are taken over
 * with one rename (one winner), with the dead host's saved response if any, then handled as a
 * job of ours left by a crash. */
static void reclaim_stale(struct dispatch *d)
{
	struct spool_entry *e;
	/* Names first: only other hosts' jobs are stat'ed for their lease, never our own. */
	long n = spool_list_names(d->spool, SPOOL_RUNNING, false, &e);
	int64_t now = 0;
	int64_t lease_ms = d->cfg->lease_timeout * 1000;
	bool took = false;
	for (long i = 0; i < n; i++) {
		const char *name = e[i].name, *at = strrchr(name, '@');
		size_t len = strlen(name);
		if (!at || len < 6 || strcmp(name + len - 5, ".json") ||
		    ((size_t)(name + len - 5 - at - 1) == strlen(d->spool->host_id) &&
		     !strncmp(at + 1, d->spool->host_id, strlen(d->spool->host_id))))
			continue;
		if (!now && (now = spool_server_now(d->spool)) <= 0)
			break;
		if (spool_entry_stat(d->spool, SPOOL_RUNNING, &e[i]) < 0 ||
		    now - e[i].mtime_ns / 1000000 <= lease_ms)
			continue;
		char *owner = xstrndup(at + 1, (size_t)(name + len - 5 - at - 1));
		char *id = xstrndup(name, (size_t)(at - name));
		if (strcmp(owner, d->spool->host_id) && !strset_has(&d->held, id)) {
			char *mine = spool_running_name(d->spool, id);
			if (spool_rename(d->spool, SPOOL_RUNNING, name, SPOOL_RUNNING, mine) == 0) {
				log_job(LOG_WARN, id, "reclaimed from '%s' (no heartbeat for %" PRId64 " s)",
					owner, (now - e[i].mtime_ns / 1000000) / 1000);
				take_sidecars(d, id, owner);
				took = true;
			}
			free(mine);
		}
		free(owner);
		free(id);
	}
	spool_entries_free(e, n);
	if (took)
		adopt_all(d);
}

/* ---- start-up and shutdown -------------------------------------------------------------------- */

/* The records say the job was published (the result and images are durable in its staging
 * directory, publish.c) but the daemon died before the commit: only the rest is left to do. */
static void complete_publication(struct task *t, const char *finished)
{
	struct dispatch *d = t->d;
	enum spool_dir dest = strcmp(finished, "succeeded") ? SPOOL_FAILED : SPOOL_DONE;
	char err[512];
	if (publish_commit_staged(d->spool, t->id, t->running_name, dest, err, sizeof(err)) != PUBLISH_OK)
		log_job(LOG_ERROR, t->id, "cannot finish publishing into %s/: %s; a restart will",
			spool_dir_name(dest), err);
	else
		log_job(LOG_INFO, t->id, "%s: its publication, cut by a restart, is complete", finished);
	sidecar_drop(t);
	task_free(t);
}

/* A job of ours found in running/ at start-up: the run that claimed it died. The records in its
 * file say which attempts are accounted for; each sidecar says which attempt it belongs to. A
 * response saved but not yet accounted for finishes the job from the file; one the records already
 * hold (the daemon died while moving the job on) is not applied twice: the move is done again.
 * An unaccounted call in flight is recorded as possibly billed and the job goes back to new/.
 * A job that was running through more than max_crash_requeues deaths fails, so a job that kills
 * the daemon cannot loop. */
static void adopt(struct dispatch *d, const char *id, const char *running_name,
		  const struct strset *hidden)
{
	struct stat st;
	struct job_error jerr;
	struct record rec;
	struct task *t = task_new(d, id);
	int fd = d->spool->fd[SPOOL_RUNNING];
	enum spool_read rr = spool_read_file(fd, running_name, job_read_cap(d), &d->readbuf, &st);
	if (rr != SPOOL_READ_OK) {
		log_job(LOG_ERROR, id, "cannot read 'running/%s': %s", running_name, spool_read_reason(rr));
		task_free(t);
		return;
	}
	enum job_parse_result pr = job_parse(&t->job, d->readbuf.data, d->readbuf.len, &d->limits, &jerr);
	t->job_text = xstrndup(d->readbuf.data, d->readbuf.len);
	t->job_len = d->readbuf.len;
	t->created_wall_ms = timespec_ms(&st.st_mtim);
	restore_state(t, &st, &rec);
	apply_record(t, &rec);
	int64_t retry_at_ms = rec.retry_at_ms;
	t->res.status = sidecar_saved_status(t, hidden);   /* what sidecar_drop removes */
	/* Records that say "finished" with nothing staged (a staging directory lost): the job is
	 * finished again from its saved response, else it fails; it is never called again. */
	bool restage = false;
	if (rec.finished[0] && publish_is_staged(d->spool, id, strcmp(rec.finished, "succeeded") ?
						 SPOOL_FAILED : SPOOL_DONE)) {
		complete_publication(t, rec.finished);
		record_release(&rec);
		return;
	} else if (rec.finished[0]) {
		log_job(LOG_WARN, id, "its records say it %s, but nothing of its publication is "
			"staged: finishing it again from its saved response", rec.finished);
		restage = true;
	}
	record_release(&rec);
	t->crashes++;
	if (pr != JOB_OK) {
		fail(t, "invalid_job", jerr.field, "%s", jerr.message);
		return;
	}
	/* A routed job: the target its call went to, else its route's first. */
	const struct route_config *route = t->job.provider ? NULL : config_route(d->cfg, t->job.model);
	char *target = route ? sidecar_read_target(t) : NULL, *slash = target ? strchr(target, '/') : NULL;
	if (slash)
		*slash = '\0';
	bool listed = false;   /* a note naming no target of the route is not believed */
	for (size_t i = 0; slash && route && i < route->n_targets; i++)
		listed |= !strcmp(route->targets[i].provider, target) &&
			  !strcmp(route->targets[i].model, slash + 1);
	struct provider_state *prov = !route ? provider_state_find(d, t->job.provider)
				      : listed ? provider_state_find(d, target) : NULL;
	const char *model = listed ? slash + 1 : NULL;
	if (route && !prov) {
		prov = provider_state_find(d, route->targets[0].provider);
		model = route->targets[0].model;
	}
	if (!prov) {
		fail(t, "invalid_job", "provider", "provider \"%s\" is not configured on this daemon",
		     t->job.provider);
		free(target);
		return;
	}
	bool was_probing = prov->flow.probing;
	set_provider(t, prov, model);
	free(target);
	t->is_probe = false;
	prov->flow.probing = was_probing;
	if (t->crashes > d->cfg->max_crash_requeues) {
		fail(t, "crashed", NULL,
		     "the daemon stopped %d times while this job was running; it is not tried again",
		     t->crashes);
		return;
	}
	/* Count this death in the file first: if finishing the job kills us again, the next start
	 * must see it. */
	char *text = job_text_with_state(t, retry_at_ms, NULL);
	if (text && spool_write_file(d->spool, SPOOL_RUNNING, running_name, text, strlen(text)) < 0)
		log_job(LOG_WARN, id, "cannot record the restart in 'running/%s': %s", running_name,
			strerror(errno));
	free(text);
	crash_point("adopt:counted");

	/* Restaging: the final attempt recorded is the saved response's, applied again below. */
	size_t accounted = attempt_count(t) - (restage && json_array_size(t->attempts) > 0);
	char prefix[JOB_ID_MAX + 100];
	xsnprintf(prefix, sizeof(prefix), ".%s@%s.response.", id, d->spool->host_id);
	for (size_t i = 0; i < hidden->cap; i++) {
		const char *name = hidden->slots[i];
		long status;
		if (!name || strncmp(name, prefix, strlen(prefix)) ||
		    parse_long(name + strlen(prefix), 100, 999, &status) < 0)
			continue;
		struct buf body;
		long attempt = sidecar_read(t, name, &body, &st);
		if (attempt && (size_t)attempt <= accounted) {
			/* Already in the records: the daemon died moving the job on. Move it again. */
			buf_release(&body);
			if (restage)
				continue;
			if (retry_at_ms) {
				log_job(LOG_INFO, id, "recovered in the middle of its deferral: deferring again");
				json_t *last = json_array_get(t->attempts, json_array_size(t->attempts) - 1);
				t->outcome.code = "restart";
				if (json_is_string(json_object_get(last, "error_code")))
					t->outcome.code = json_string_value(json_object_get(last, "error_code"));
				t->defer_due = retry_at_ms;
				t->defer_dir = defer_dir_for(t);
				t->result_json = job_text_with_state(t, retry_at_ms, NULL);
				t->state = T_DEFERRING;
				pool_submit(t, defer_work, defer_done);
				return;
			}
			requeue(t, "recovered from running/ after a restart");
			return;
		}
		if (attempt != (long)accounted + 1) {
			buf_release(&body);
			continue;
		}
		/* A complete response on disk, not yet accounted for: no second call. */
		if (restage)
			json_array_remove(t->attempts, json_array_size(t->attempts) - 1);
		t->res = (struct http_result){ .transport = HTTP_DONE, .status = status };
		t->res.body = buf_detach(&body, &t->res.body_len);
		t->res.started_wall_ms = timespec_ms(&st.st_mtim);
		t->cur = (struct attempt){ .started_wall_ms = t->res.started_wall_ms,
					   .transport = "done", .http_status = status, .request_id = "" };
		log_job(LOG_INFO, id, "recovered with its response (HTTP %ld) saved before a restart: "
			"finishing without calling again", status);
		t->state = T_PARSING;
		pool_submit_batched(t, parse_work, parse_done);
		return;
	}
	if (restage) {
		fail(t, "publish_failed", NULL, "its records say it finished, but its staged result "
		     "is gone and no saved response is left to finish it from: not called again");
		return;
	}
	char *partial = sidecar_name(t, "partial");
	if (strset_has(hidden, partial) && sidecar_read(t, partial, NULL, &st) == (long)accounted + 1) {
		struct attempt a = { .started_wall_ms = t->created_wall_ms, .transport = "interrupted",
				     .outcome = "interrupted", .billed = "unknown", .request_id = "" };
		attempt_price(t, &a, BILLED_UNKNOWN, NULL, 0);
		attempt_record(t, &a);
		t->billed_retries++;   /* as grace_over() does: the cut call may have been billed */
		/* Its host died before counting it: counted here, in every host's sight. */
		if (a.cost_known && provider_state_budgeted(prov))
			keyshare_spent(d->ks, prov->cfg->name, keyshare_micros(a.cost));
	}
	free(partial);
	requeue(t, "recovered from running/ after a restart");
}

/* Adopts every job of ours in running/ that no task holds. */
static void adopt_all(struct dispatch *d)
{
	struct spool_entry *e, *h;
	struct strset hidden;
	char suffix[80];
	xsnprintf(suffix, sizeof(suffix), "@%s.json", d->spool->host_id);
	size_t slen = strlen(suffix);
	strset_init(&hidden);
	long nh = spool_list_hidden(d->spool, SPOOL_RUNNING, &h);
	for (long i = 0; i < nh; i++)
		strset_add(&hidden, h[i].name);
	spool_entries_free(h, nh);
	long n = spool_list(d->spool, SPOOL_RUNNING, &e);
	for (long i = 0; i < n; i++) {
		size_t len = strlen(e[i].name);
		if (len <= slen || strcmp(e[i].name + len - slen, suffix))
			continue;
		char *id = xstrndup(e[i].name, len - slen);
		if (!strset_has(&d->held, id))
			adopt(d, id, e[i].name, &hidden);
		free(id);
	}
	spool_entries_free(e, n);
	strset_release(&hidden);
}

/* Publications staged in running/.ID@HOST.DEST/ (publish.c): ours, left by a crash, are
 * finished at start-up; another host's, whose lease (the directory's mtime, by the file
 * server's clock) ran out, are taken over with one rename, which the stalled publisher's later
 * renames then fail on, and finished here. */
static void resume_publications(struct dispatch *d, bool others)
{
	struct spool_entry *h;
	/* Names first: a rescan stats only other hosts' staging directories (for their lease),
	 * not the sidecars of every job in flight. */
	long nh = spool_list_names(d->spool, SPOOL_RUNNING, true, &h);
	int fd = d->spool->fd[SPOOL_RUNNING];
	int64_t now = 0;
	for (long i = 0; i < nh; i++) {
		char *id, *host, err[512];
		int dest;
		if ((h[i].id.mode && !S_ISDIR(h[i].id.mode)) ||
		    !publish_parse_staging_name(h[i].name, &id, &host, &dest))
			continue;
		bool ours = !strcmp(host, d->spool->host_id);
		bool look = !ours && others && !strset_has(&d->held, id);
		if ((look || (ours && !others)) &&
		    (spool_entry_stat(d->spool, SPOOL_RUNNING, &h[i]) < 0 || !S_ISDIR(h[i].id.mode))) {
			free(id);
			free(host);
			continue;
		}
		char *mine = publish_staging_name(id, d->spool->host_id, dest);
		if (look && publish_job_in_running(d->spool, id, host)) {
			look = false;   /* not committed: it goes along with its job (take_sidecars) */
		} else if (look) {
			if (!now)
				now = spool_server_now(d->spool);
			if (now - h[i].mtime_ns / 1000000 > d->cfg->lease_timeout * 1000 &&
			    renameat(fd, h[i].name, fd, mine) == 0) {
				log_job(LOG_WARN, id, "took over the publication of '%s' (no heartbeat for "
					"%" PRId64 " s)", host, (now - h[i].mtime_ns / 1000000) / 1000);
				ours = true;
			}
		} else if (ours && others) {
			ours = false;   /* at a rescan, our own are being published by their task */
		}
		if (ours) {
			enum publish_rc rc = publish_resume(d->spool, mine, err, sizeof(err));
			if (rc == PUBLISH_OK)
				log_job(LOG_INFO, id, "publication finished after a restart or takeover");
			else
				log_job(LOG_ERROR, id, "cannot finish its publication: %s", err);
		}
		free(mine);
		free(id);
		free(host);
	}
	spool_entries_free(h, nh);
}

void dispatch_recover(struct dispatch *d)
{
	struct spool_entry *h;
	char suffix[80];
	xsnprintf(suffix, sizeof(suffix), "@%s.json", d->spool->host_id);

	/* First the operator's requests: a hold or cancel for a job the crash left in running/
	 * sends it to hold/, not back to new/ for another call. */
	if (control_read(&d->control, d->spool) < 0)
		log_debug("cannot read control/: %s", strerror(errno));
	/* Our calls in flight died with the run: their jobs are recovered below. */
	keyshare_recover(d->ks);
	/* Our temporary files from a run that died mid-write are garbage in every directory. */
	for (int dir = 0; dir < SPOOL_NDIRS; dir++) {
		if (dir == SPOOL_TMP)
			continue;
		long nh = spool_list_hidden(d->spool, (enum spool_dir)dir, &h);
		for (long i = 0; i < nh; i++) {
			if (spool_is_our_temp(h[i].name, d->spool->host_id))
				unlinkat(d->spool->fd[dir], h[i].name, 0);
		}
		spool_entries_free(h, nh);
	}
	resume_publications(d, false);
	adopt_all(d);

	/* Sidecars whose job has left running/ (a crash between the move and the clean-up). */
	long nh = spool_list_hidden(d->spool, SPOOL_RUNNING, &h);
	char host_part[80];
	xsnprintf(host_part, sizeof(host_part), "@%s.", d->spool->host_id);
	for (long i = 0; i < nh; i++) {
		const char *name = h[i].name, *at = strstr(name, host_part);
		if (!at || (strcmp(at + strlen(host_part), "partial") &&
			    strcmp(at + strlen(host_part), "target") &&
			    strncmp(at + strlen(host_part), "response.", 9)))
			continue;
		char *job = xasprintf("%.*s%s", (int)(at - name - 1), name + 1, suffix);
		struct stat st;
		if (fstatat(d->spool->fd[SPOOL_RUNNING], job, &st, AT_SYMLINK_NOFOLLOW) < 0)
			unlinkat(d->spool->fd[SPOOL_RUNNING], name, 0);
		free(job);
	}
	spool_entries_free(h, nh);
}

static int64_t grace_over(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->grace_timer = 0;
	d->grace_over = true;
	struct task *t = d->tasks, *next;
	for (; t; t = next) {
		next = t->next;
		if (t->state == T_CALLING) {
			/* The call may finish upstream and be billed: keep it on record. */
			struct attempt a = { .started_wall_ms = wall_ms(), .transport = "interrupted",
					     .outcome = "interrupted", .billed = "unknown", .request_id = "" };
			attempt_price(t, &a, BILLED_UNKNOWN, NULL, 0);
			attempt_record(t, &a);
			t->billed_retries++;
			requeue(t, "shutdown: the grace period ended");
		} else if (t->state == T_BACKOFF) {
			requeue(t, "shutdown: the grace period ended");
		} else if (t->state == T_PUBLISHING && !t->in_pool) {
			/* Waiting for disk space: the job stays in running/ with its saved response;
			 * the restart finishes it. */
			leave_for_restart(t, "until there is room to publish");
		} else if (t->state == T_UPLOADING) {
			/* Its response is saved: the restart stores the images and publishes. */
			leave_for_restart(t, "until its images are stored");
		} else if (t->state == T_DOWNLOADING) {
			leave_for_restart(t, "while downloading its image");
		}
	}
	return LOOP_TIMER_DONE;
}

void dispatch_drain(struct dispatch *d)
{
	if (d->draining)
		return;
	d->draining = true;
	d->drain_deadline = mono_ms() + d->cfg->grace_period * 1000;
	log_info("shutting down: claiming nothing more; %d job(s) in flight get up to %lds to finish%s",
		 d->n_tasks, d->cfg->grace_period, d->cfg->grace_period_auto ?
		 " (grace_period: the longest call allowed; a second SIGTERM or SIGINT cuts them)" : "");
	struct task *t = d->tasks, *next;
	for (; t; t = next) {
		next = t->next;
		if (t->state == T_BACKOFF)
			requeue(t, "shutdown");
	}
	dispatch_log_waiting(d);
	d->grace_timer = loop_add_timer(d->loop, d->cfg->grace_period * 1000, grace_over, d);
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

void dispatch_status(const struct dispatch *d, long deferred, char *out, size_t size)
{
	int calls = 0;
	for (int i = 0; i < d->n_providers; i++)
		calls += d->providers[i]->flow.active;
	int n = snprintf(out, size, "%zu pending, %ld deferred, %d running (%d calls in flight)",
			 d->n_pending, deferred, d->n_tasks, calls);
	const char *sep = ", held: ";
	for (int i = 0; i < d->n_providers && n >= 0 && (size_t)n < size; i++) {
		if (!d->providers[i]->flow.held || d->providers[i]->retired)
			continue;
		n += snprintf(out + n, size - (size_t)n, "%s%s", sep, d->providers[i]->cfg->name);
		sep = ", ";
	}
	sep = ", over budget: ";
	for (int i = 0; i < d->n_providers && n >= 0 && (size_t)n < size; i++) {
		if (!d->providers[i]->over_budget || d->providers[i]->retired)
			continue;
		n += snprintf(out + n, size - (size_t)n, "%s%s", sep, d->providers[i]->cfg->name);
		sep = ", ";
	}
}

void dispatch_report_metrics(const struct dispatch *d)
{
	int64_t now = mono_ms();
	for (int i = 0; i < d->n_providers; i++) {
		const struct provider_state *p = d->providers[i];
		metrics_provider_state(p->cfg->name, p->flow.active, p->flow.held && !p->retired,
				       now < p->flow.paused_until);
		metrics_provider_over_budget(p->cfg->name, p->over_budget && !p->retired);
	}
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
	return d->draining && d->n_tasks == 0 && iopool_pending(d->pool) == 0;
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
	known_init(&d->known);
	scan_init(&d->new_scan, spool, &d->known, SPOOL_NEW, known_dir(SPOOL_NEW));
	strset_init(&d->held);
	spend_init(&d->spend);
	control_init(&d->control);
	health_init(&d->health);
	d->ks = keyshare_new(spool);
	d->heartbeat_timer = loop_add_timer(loop, heartbeat_interval_ms(d), heartbeat, d);
	/* Only the daemon writes running/: where others can, only what its user wrote is trusted. */
	struct stat running;
	if (fstat(spool->fd[SPOOL_RUNNING], &running) == 0 && (running.st_mode & 022))
		log_warn("'running/' is writable by group or others (mode %03o): clients could disturb "
			 "running jobs; only files written by the daemon's user are trusted there",
			 (unsigned)(running.st_mode & 0777));
	buf_init(&d->readbuf, job_read_cap(d));
	job_limits_from_config(d);
	config_ref(cfg);
	for (int i = 0; i < cfg->n_providers; i++)
		provider_state_new(d, &cfg->providers[i]);
	return d;
}

void dispatch_free(struct dispatch *d)
{
	if (!d)
		return;
	while (d->tasks)
		requeue(d->tasks, "shutdown");
	iopool_free(d->pool);
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
	if (d->deferred_timer)
		loop_del_timer(d->loop, d->deferred_timer);
	for (size_t i = 0; i < d->n_pending; i++)
		pending_free(&d->pending[i]);
	free(d->pending);
	if (d->scan_timer)
		loop_del_timer(d->loop, d->scan_timer);
	if (d->place_timer)
		loop_del_timer(d->loop, d->place_timer);
	scan_release(&d->new_scan);
	known_release(&d->known);
	strset_release(&d->held);
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
}
