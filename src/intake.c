/* intake.c - names waiting in new/ and deferred/, and their claims: the pending queue (in order
 * of arrival: the job file's mtime, then its name), the listing of new/ in slices, and the pump
 * that reads, checks and claims jobs while there is room.
 *
 * A slow file server never stalls the loop: listings and stats go in slices, a timer bringing
 * the loop back for the rest. A file that is not a job we can claim is logged once and left
 * alone until it changes; one whose name is not a task id goes to failed/. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "deferral.h"
#include "dispatch_impl.h"
#include "fileid.h"
#include "finish.h"
#include "intake.h"
#include "log.h"
#include "loop.h"
#include "provider_state.h"
#include "route.h"
#include "routing.h"
#include "sidecar.h"
#include "slots.h"
#include "task.h"
#include "webhook.h"
#include "banned.h"

/* The known set holds "n/NAME" and "d/NAME": the same name may be in new/ and deferred/. */
char intake_known_dir(enum spool_dir dir)
{
	return dir == SPOOL_NEW ? 'n' : 'd';
}

static void known_del(struct dispatch *d, enum spool_dir dir, const char *name)
{
	known_forget(&d->known, intake_known_dir(dir), name);
}

void intake_pending_free(struct pending *pe)
{
	free(pe->name);
	free(pe->provider);
	free(pe->route);
}

static int pending_cmp(const void *a, const void *b);
static void placed_before_unplaced(struct dispatch *d);

/* The queue's allocation: claims take entries from its front by moving d->pending on
 * (pending_head), so that a claim never moves a long backlog. */
static struct pending *pending_store(struct dispatch *d)
{
	return d->pending ? d->pending - d->pending_head : NULL;
}

void intake_release(struct dispatch *d)
{
	for (size_t i = 0; i < d->n_pending; i++)
		intake_pending_free(&d->pending[i]);
	free(pending_store(d));
	d->pending = NULL;
	d->n_pending = d->alloc_pending = d->pending_head = 0;
}

/* Room for one more at the end: the front claims freed, taken back (then at least half the
 * allocation is free, so this moves each entry once per as many additions), or more. */
static void pending_room(struct dispatch *d)
{
	if (d->pending_head + d->n_pending < d->alloc_pending)
		return;
	struct pending *store = pending_store(d);
	if (d->pending_head)
		memmove(store, d->pending, d->n_pending * sizeof(*store));
	d->pending_head = 0;
	if (2 * d->n_pending >= d->alloc_pending) {
		d->alloc_pending = d->alloc_pending ? 2 * d->alloc_pending : 256;
		store = xrealloc(store, d->alloc_pending * sizeof(*store));
	}
	d->pending = store;
}

/* file: as stat'ed, or NULL for a name never seen (not stat'ed yet). */
void intake_add(struct dispatch *d, enum spool_dir dir, const char *name,
		const struct file_id *file)
{
	if (!known_see(&d->known, intake_known_dir(dir), name, file, mono_ms()))
		return;
	pending_room(d);
	struct pending *pe = &d->pending[d->n_pending++];
	*pe = (struct pending){ .dir = dir, .name = xstrdup(name), .placed = file != NULL };
	if (file) {
		pe->file = *file;
		pe->mtime_ns = file->mtime_ns;
	}
	d->n_unplaced += !file;
	slots_pending_added(d);   /* the ready line may take it */
	size_t s = d->n_sorted;
	if (file && s == d->n_pending - 1 &&
	    (!s || pending_cmp(&d->pending[s - 1], &d->pending[s]) <= 0))
		d->n_sorted++;
	else if (file && d->n_unplaced)
		placed_before_unplaced(d);
}

/* A job with its place (a due one from deferred/) goes before those without (in no order yet),
 * so that start-up claims, which take the placed ones first, see it (claims_before_placed). */
static void placed_before_unplaced(struct dispatch *d)
{
	size_t u = d->n_sorted, last = d->n_pending - 1;
	while (u < last && d->pending[u].placed)
		u++;
	if (u < last) {
		struct pending tmp = d->pending[u];
		d->pending[u] = d->pending[last];
		d->pending[last] = tmp;
	}
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
	bool stated = false;
	for (; i < d->n_pending; i++) {
		struct pending *pe = &d->pending[i];
		struct stat st;
		/* The clock after every stat: one may take a round trip to a slow file server. */
		if (stated && mono_ms() >= end)
			break;
		stated = !pe->placed;
		if (!pe->placed) {
			d->n_unplaced--;
			if (fstatat(d->spool->fd[pe->dir], pe->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				known_del(d, pe->dir, pe->name);
				intake_pending_free(pe);
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
 * since the last sort (up to n) is sorted and merged in: a listing in slices does not sort the
 * whole backlog again at each turn of the loop. */
static void pending_sort(struct dispatch *d, size_t n)
{
	size_t s = d->n_sorted;
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

/* Keeps the pending entries keep_fn keeps, in their order (a sorted one stays sorted). */
static void pending_filter(struct dispatch *d,
			   bool (*keep_fn)(struct dispatch *d, struct pending *pe, void *arg), void *arg)
{
	size_t keep = 0, sorted = 0;
	for (size_t i = 0; i < d->n_pending; i++) {
		struct pending *pe = &d->pending[i];
		if (keep_fn(d, pe, arg)) {
			sorted += i < d->n_sorted;
			d->pending[keep++] = *pe;
		} else {
			d->n_unplaced -= !pe->placed;
			intake_pending_free(pe);
		}
	}
	d->n_pending = keep;
	d->n_sorted = sorted;
}

static bool still_listed(struct dispatch *d, struct pending *pe, void *arg)
{
	enum spool_dir dir = *(const enum spool_dir *)arg;
	return pe->dir != dir || known_has(&d->known, intake_known_dir(dir), pe->name);
}

/* After a full listing of dir: names it did not see are forgotten, and leave the queue. */
void intake_sweep(struct dispatch *d, enum spool_dir dir)
{
	if (known_sweep(&d->known, intake_known_dir(dir)))
		pending_filter(d, still_listed, &dir);
}

static void scan_found(void *arg, enum spool_dir dir, const char *name, const struct file_id *id)
{
	intake_add(arg, dir, name, id);
}

static int64_t list_more(struct loop *loop, void *arg);

void intake_list_new(struct dispatch *d, int64_t budget_ms)
{
	if (!d->startup_claims_at)
		d->startup_claims_at = mono_ms() + SCAN_FIRST_SLICE_MS;
	if (scan_step(&d->new_scan, budget_ms, mono_ms, scan_found, d)) {
		intake_sweep(d, SPOOL_NEW);
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
	intake_list_new(d, SCAN_SLICE_MS);
	return LOOP_TIMER_DONE;
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
	known_ignore(&d->known, intake_known_dir(pe->dir), pe->name, &file, mono_ms());
}

enum start { STARTED, SKIPPED, WAIT };

/* A pending job an operator asked to hold: to hold/ with one rename, as imgspool hold does, so
 * its mtime (its place in line, or its due time) is kept. */
static enum start hold_pending(struct dispatch *d, struct pending *pe, const char *id)
{
	char *name = xasprintf("%s.json", id);
	if (spool_rename(d->spool, pe->dir, pe->name, SPOOL_HOLD, name) == 0) {
		log_job(LOG_INFO, id, "held by an operator before its call: %s/ to hold/",
			spool_dir_name(pe->dir));
		control_withdraw(d->spool, CONTROL_HOLD, id);   /* fulfilled */
		if (pe->dir == SPOOL_DEFERRED && d->deferred_jobs > 0)
			d->deferred_jobs--;
	} else if (errno != ENOENT) {
		log_job(LOG_ERROR, id, "cannot hold '%s/%s': %s", spool_dir_name(pe->dir), pe->name,
			strerror(errno));
	}
	known_del(d, pe->dir, pe->name);
	free(name);
	return SKIPPED;
}

bool intake_return_place(enum spool_dir asked, const char *asked_name, const char *id, int step,
			 struct intake_place *place)
{
	size_t len = strlen(id);
	/* The bare name of an id ending in ".json" would name another id. */
	bool has_other_name = len < 5 || strcmp(id + len - 5, ".json");
	int other_step = asked == SPOOL_NEW ? 2 : 1;
	int numbered_step = has_other_name ? other_step + 1 : other_step;   /* ID.2.json */
	int last = asked == SPOOL_HOLD ? 0 : numbered_step + JOB_NUMBERED_MAX - 2;
	if (step < 0 || step > last)
		return false;
	place->dir = step ? SPOOL_DEFERRED : asked;
	if (step >= numbered_step) {
		int n = step - numbered_step + 2;
		job_numbered_name(id, n, place->name, sizeof(place->name));
		xsnprintf(place->why, sizeof(place->why), "; %s other versions of it: as "
			  "deferred/%s", asked == SPOOL_NEW ? "new/ and deferred/ hold" :
			  "deferred/ holds", place->name);
		return true;
	}
	if (step != other_step) {
		xsnprintf(place->name, sizeof(place->name), "%s", asked_name);
		xsnprintf(place->why, sizeof(place->why), "%s",
			  step ? "; new/ holds a later version of it" : "");
		return true;
	}
	xsnprintf(place->name, sizeof(place->name), strcmp(asked_name, id) ? "%s" : "%s.json", id);
	xsnprintf(place->why, sizeof(place->why), "; %s another version of it: as deferred/%s",
		  asked == SPOOL_NEW ? "new/ and deferred/ hold" : "deferred/ holds", place->name);
	return true;
}

int intake_return(struct dispatch *d, const char *running_name, const char *id,
		  enum spool_dir asked, const char *name, struct intake_place *went,
		  int64_t due_wall_ms, const char *records)
{
	for (int step = 0; intake_return_place(asked, name, id, step, went); step++) {
		int rc = records ? spool_move_rewritten(d->spool, running_name, went->dir, went->name,
							records, strlen(records), due_wall_ms,
							SPOOL_NEVER_REPLACE)
				 : spool_rename_noreplace(d->spool, SPOOL_RUNNING, running_name,
							  went->dir, went->name);
		if (rc < 0 && errno == EEXIST)
			continue;
		if (rc < 0)
			return -1;
		if (went->dir == SPOOL_DEFERRED) {   /* counted, and claimed when due, not at the next listing */
			d->deferred_jobs++;
			deferral_arm(d, due_wall_ms);
		}
		return 0;
	}
	errno = EEXIST;
	return -1;
}

/* The file claimed is not the one read: another host or a client replaced it between the read
 * and the claim. It goes back where it was, as they wrote it, with its own mtime (its due time in
 * deferred/, its place in line in new/), never rewritten with what was read before, and is
 * claimed afresh when its time comes: a hold or cancel of its id then applies to it as to any
 * waiting job. Never over another version written meanwhile (intake_return: to deferred/
 * then); should no place take it, it stays in running/, stranded: no claim of its id replaces
 * it, and the next rescan moves it. So that the rescan, or a restart, moves it as it is rather
 * than adopt it (a job put back by hand says its run finished: adopted, it would fail
 * publish_failed), a claim that wrote no put-back file writes one now, from the bytes read
 * (read_ino, the inode read, is not the one claimed: settled, it goes back, §10). Whether it
 * went back. */
static bool requeue_replaced(struct task *t, const struct pending *pe, const struct stat *claimed,
			     uint64_t read_ino, bool putback_written)
{
	struct dispatch *d = t->d;
	struct intake_place went;
	bool back = intake_return(d, t->running_name, t->id, pe->dir, pe->name, &went,
				  timespec_ms(&claimed->st_mtim), NULL) == 0;
	if (!back) {
		int err = errno;
		char *mark = putback_written ? NULL : sidecar_putback_name(t, pe->dir, read_ino);
		if (mark && spool_write_aside(d->spool, SPOOL_RUNNING, mark, t->job_text, t->job_len) < 0)
			log_job(LOG_ERROR, t->id, "cannot note in 'running/%s' that the file claimed is "
				"to go back: %s", mark, strerror(errno));
		free(mark);
		strandlog_say(&d->strandlog, LOG_ERROR, t->id, "cannot move 'running/%s' back to "
			"%s/%s: %s; left in running/, no claim of its id until the next rescan moves it",
			t->running_name, spool_dir_name(went.dir), went.name, strerror(err));
		strset_add(&d->stranded, t->id);
	} else {
		log_job(LOG_INFO, t->id, "back to %s/ (replaced while being claimed%s): claimed again "
			"as it is now", spool_dir_name(went.dir), went.why);
	}
	task_free(t);
	return back;
}

/* A finished job put back: until its file says otherwise, running/ holds the old run's
 * "finished", which every reader after a crash (recovery, publish) would take for this run's. So
 * the new run's records are durable beside the file read before the claim's rename
 * (sidecar_putback_name: a restart puts them in place if the claim took that file, else removes
 * them), and take the job file's place after it (spool-layout §4, §10). NULL, logged, when they
 * cannot be written: the job is not claimed now. */
static char *putback_written(struct task *t, const struct pending *pe, const struct stat *read_st)
{
	struct dispatch *d = t->d;
	char *name = sidecar_putback_name(t, pe->dir, (uint64_t)read_st->st_ino);
	char *text = task_job_text(t, 0, NULL);
	int rc = spool_write_aside(d->spool, SPOOL_RUNNING, name, text, strlen(text));
	free(text);
	if (rc == 0) {
		crash_point("claim:putback-written");
		stop_point("claim:putback-written");
		return name;
	}
	log_job(LOG_ERROR, t->id, "cannot record its new run in 'running/%s' before its claim: %s; "
		"claimed later", name, strerror(errno));
	d->disk_checked = 0;   /* look at the free space again before claiming more */
	free(name);
	return NULL;
}

/* The new run written beside a job put back, of no use once its claim did not go through, or
 * took another file than the one read (requeue_replaced), or once the job goes back
 * (task_requeue): removed, but only when its job file has left running/ (job_left). Left alone
 * there, that file would say the old run finished, and be failed publish_failed; so should its
 * move fail, this one stays, for the rescan that settles it (recovery.c) as a restart would. */
static void putback_drop(struct dispatch *d, char *putback, bool job_left)
{
	if (!putback)
		return;
	if (job_left)
		unlinkat(d->spool->fd[SPOOL_RUNNING], putback, 0);
	else
		d->putbacks_unsettled = true;
	free(putback);
}

static void putback_requeue(struct task *t, char *putback, const char *why)
{
	struct dispatch *d = t->d;
	char *job = xstrdup(t->running_name);
	task_requeue(t, why);
	putback_drop(d, putback, !spool_exists(d->spool->fd[SPOOL_RUNNING], job));
	free(job);
}

/* The new run's records in place of the old run's, in running/, one rename (which needs no sync
 * of its own: until it is durable, the file beside the job says the same to a restart). Should
 * it fail, they are written over the job file, and only once that is durable is the file beside
 * it removed (never left beside a job whose records go on changing: a restart would put it
 * back); should that fail, the job goes back as it was, and is claimed again later. */
static bool putback_put_in_place(struct task *t, char *putback)
{
	struct spool *sp = t->d->spool;
	int fd = sp->fd[SPOOL_RUNNING];
	if (renameat(fd, putback, fd, t->running_name) == 0) {
		crash_point("claim:putback-recorded");
		free(putback);
		return true;
	}
	log_job(LOG_WARN, t->id, "cannot put its new run's records in place from 'running/%s': %s; "
		"writing them over its job file", putback, strerror(errno));
	char *text = task_job_text(t, 0, NULL);
	int rc = spool_rewrite_file(sp, SPOOL_RUNNING, t->running_name, text, strlen(text));
	if (rc == 0)
		rc = fsync(fd);
	free(text);
	if (rc < 0) {
		log_job(LOG_ERROR, t->id, "cannot record its new run in 'running/%s': %s",
			t->running_name, strerror(errno));
		t->d->disk_checked = 0;   /* look at the free space again before claiming more */
	} else if (unlinkat(fd, putback, 0) == 0 || errno == ENOENT) {
		free(putback);
		return true;
	} else {
		log_job(LOG_ERROR, t->id, "cannot remove 'running/%s': %s", putback, strerror(errno));
	}
	putback_requeue(t, putback, "its new run could not be recorded");
	return false;
}

bool intake_claim_stalled(int64_t stalled_ms, int64_t lease_ms)
{
	return stalled_ms >= lease_ms / 2;
}

/* Reads, checks and claims one pending file. */
static enum start claim_read(struct dispatch *d, struct pending *pe, const char *id, bool cancelled,
			     int readfd, const struct stat *read_st)
{
	struct stat st = *read_st;
	struct job job;
	struct job_error jerr;
	stop_point("claim:read");
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
	if (cancelled) {
		/* failed below, after the claim, without a route, a provider or a ticket */
	} else if (route && !job.provider) {
		routing_pick(d, route, &job, id, pe, &pick);
		/* The chosen target's provider keeps its shared limits too. */
		if (pick.verdict == ROUTE_WAIT ||
		    (pick.prov && (!slots_may_claim(d, pick.prov, mono_ms()) ||
				   !provider_state_take_share(pick.prov, &job, pick.model, &ticket)))) {
			job_release(&job);
			return WAIT;
		}
		prov = pick.prov;
	} else if (pr == JOB_OK) {
		prov = provider_state_find(d, job.provider);
		if (prov && (!slots_may_claim(d, prov, mono_ms()) ||
			     !provider_state_take_share(prov, &job, NULL, &ticket))) {
			free(pe->provider);   /* set before when it waited for another reason */
			pe->provider = xstrdup(provider_state_name(prov));
			job_release(&job);
			return WAIT;
		}
	}

	struct task *t = task_new(d, id);
	t->ticket = ticket;   /* from here task_free gives it back if the call never starts */
	t->job = job;         /* and frees the job */
	t->job_text = xstrndup(d->readbuf.data, d->readbuf.len);
	t->job_len = d->readbuf.len;
	t->owner_uid = (uint32_t)st.st_uid;
	t->owner_gid = (uint32_t)st.st_gid;
	t->created_wall_ms = mtime_ms;
	struct record rec;
	task_restore_state(t, &st, &rec);
	/* A finished job put back by hand (or `imgspool retry`): a new run with a fresh budget; the
	 * old one is kept in the records' history. */
	bool put_back = rec.finished[0];
	char finished[sizeof(rec.finished)];   /* how the old run ended, for the log */
	long run = rec.runs_total + 2;
	if (put_back) {
		xsnprintf(finished, sizeof(finished), "%s", rec.finished);
		record_new_run(&rec, mtime_ms);
	}
	task_apply_record(t, &rec);
	record_release(&rec);
	/* Its new run is made durable beside it before the claim, so that no kill leaves the old
	 * run's "finished" alone in running/ (spool-layout §4). Any other job: no system call. */
	int64_t written_at = put_back ? mono_ms() : 0;
	char *putback = put_back ? putback_written(t, pe, &st) : NULL;
	if (put_back && !putback) {
		known_del(d, pe->dir, pe->name);
		task_free(t);
		return SKIPPED;
	}
	/* The lease is the mtime in running/, and rename keeps the old one: refresh it first, so
	 * no other host ever sees our fresh claim as stale. The inode read, not the name: a file
	 * put there since keeps its mtime (its due time or place in line). */
	futimens(readfd, NULL);
	/* Stalled since its new run was written (a paused VM, a slow disk): other hosts may have
	 * taken it for a dead host's file and removed it, and a kill right after a claim would
	 * leave the old run's "finished" alone in running/. Read again instead: no system call. */
	int64_t stalled = putback ? mono_ms() - written_at : 0;
	if (putback && intake_claim_stalled(stalled, d->cfg->lease_timeout * 1000)) {
		log_job(LOG_WARN, id, "stalled %" PRId64 " ms between writing its new run in "
			"'running/%s' and its claim, half a lease or more: not claimed, read again",
			stalled, putback);
		known_del(d, pe->dir, pe->name);
		putback_drop(d, putback, true);
		task_free(t);
		return SKIPPED;
	}
	if (spool_rename_claim(d->spool, pe->dir, pe->name, t->running_name) < 0) {
		if (errno == EEXIST) {   /* one of ours no task holds: settled first (stranded) */
			strandlog_say(&d->strandlog, LOG_ERROR, id, "cannot claim '%s/%s': 'running/%s' "
				"is there, left by an earlier run of the id; claimed once a rescan has "
				"settled that one",
				spool_dir_name(pe->dir), pe->name, t->running_name);
			strset_add(&d->stranded, id);
		} else if (errno != ENOENT) {
			log_job(LOG_ERROR, id, "cannot claim '%s/%s': %s", spool_dir_name(pe->dir),
				pe->name, strerror(errno));
		}
		known_del(d, pe->dir, pe->name);
		putback_drop(d, putback, true);   /* the job was not claimed */
		task_free(t);
		return SKIPPED;
	}
	known_del(d, pe->dir, pe->name);
	if (pe->dir == SPOOL_DEFERRED && d->deferred_jobs > 0)
		d->deferred_jobs--;
	crash_point("claim:claimed");
	stop_point("claim:claimed");
	t->sidecars = 0;   /* a job leaves running/ without them; a crash's are the restart's */
	/* The file we claimed must be the one we read: a client may have replaced it in between
	 * (where inode numbers follow names, sshfs, its bytes tell). */
	struct stat claimed;
	int running_fd = d->spool->fd[SPOOL_RUNNING];
	if (fstatat(running_fd, t->running_name, &claimed, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !fileid_claimed_is_read(running_fd, t->running_name, &claimed, &st, t->job_text,
				    t->job_len, d->spool->ino_by_name)) {
		bool back = requeue_replaced(t, pe, &claimed, (uint64_t)st.st_ino, putback != NULL);
		putback_drop(d, putback, back);
		return SKIPPED;
	}
	if (put_back) {
		log_job(LOG_INFO, id, "resubmitted after it had %s: run %ld starts with a fresh budget",
			finished, run);
		if (!putback_put_in_place(t, putback))
			return SKIPPED;
	}
	if (cancelled) {
		log_job(LOG_INFO, id, "claimed: cancelled by an operator before its call");
		finish_fail(t, "cancelled", NULL, "cancelled by an operator (imgspool cancel) before its call");
		return STARTED;
	}
	if (pr != JOB_OK) {
		log_job(LOG_INFO, id, "claimed: invalid job file");
		finish_fail(t, "invalid_job", jerr.field, "%s", jerr.message);
		return STARTED;
	}
	if (route && job.provider) {
		finish_fail(t, "invalid_job", "provider", "\"model\" names route \"%s\", which chooses the "
			  "provider: leave \"provider\" out", route->name);
		return STARTED;
	}
	if (route && pick.verdict == ROUTE_NONE) {
		finish_fail(t, "invalid_request", NULL, "no target of route \"%s\" can do all this job asks: %s",
			  route->name, pick.why);
		return STARTED;
	}
	if (t->job.webhook_url && !webhook_job_url_allowed(d->cfg, t->job.webhook_url)) {
		log_job(LOG_INFO, id, "claimed: a webhook_url the configuration does not allow");
		free(t->job.webhook_url);
		t->job.webhook_url = NULL;   /* its events go to [notify] url, if any */
		finish_fail(t, "invalid_job", "webhook_url", "\"webhook_url\" is not under one of the URL "
			  "prefixes that [notify] job_url_prefixes allows");
		return STARTED;
	}
	if (!prov) {
		log_job(LOG_INFO, id, "claimed: unknown provider");
		finish_fail(t, "invalid_job", "provider", "provider \"%s\" is not configured on this daemon",
			  job.provider);
		return STARTED;
	}
	task_set_provider(t, prov, route ? pick.model : NULL, true);
	log_job(LOG_INFO, id, "claimed%s: %s%s%sprovider %s, model %s (%s)%s",
		pe->dir == SPOOL_DEFERRED ? " from deferred/" : "", route ? "route " : "",
		route ? route->name : "", route ? " to " : "", provider_state_name(prov), t->model,
		dialect_name(t->dialect), t->is_probe ? ", probing the held provider" : "");
	task_prepare_and_send(t);
	return STARTED;
}


/* What is not a plain file at running/RUNNING_NAME, a bad name's (id "badname-HASH") claim's
 * (a client's FIFO, directory or hard link), never stays there, where it would keep the bad
 * name waiting for ever: removed when it holds no data of its own (a FIFO, a socket, a device
 * node, a symlink, one more link of a file, an empty directory), else moved aside to
 * new/.ID.put-aside.MS, a dotfile the daemon ignores, said. 0, or -1 (said) when it stays. */
int intake_bad_name_aside(struct dispatch *d, const char *id, const char *running_name,
			  const char *was)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	struct stat st;
	if (fstatat(fd, running_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -1;
	if (unlinkat(fd, running_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) == 0) {
		log_job(LOG_WARN, id, "removed 'running/%s' (%s, not a plain file), which holds no "
			"data of its own", running_name, was);
		return 0;
	}
	char aside[64];
	xsnprintf(aside, sizeof(aside), ".%s.put-aside.%" PRId64, id, wall_ms());
	if (spool_rename_noreplace(d->spool, SPOOL_RUNNING, running_name, SPOOL_NEW, aside) == 0) {
		log_job(LOG_WARN, id, "moved 'running/%s' (%s, not a plain file, holding data) aside "
			"to 'new/%s', a dotfile the daemon ignores: look at it, and remove it",
			running_name, was, aside);
		return 0;
	}
	log_job(LOG_ERROR, id, "cannot move 'running/%s' (%s, not a plain file) aside to 'new/%s': "
		"%s; no file of that bad name is answered till it is removed", running_name, was,
		aside, strerror(errno));
	return -1;
}

/* What a client put at a bad name between its check and its rename (a FIFO, a directory, a
 * hard link), now in running/: back to new/ under its name, where it is ignored; if the name
 * was taken again meanwhile, removed or moved aside (intake_bad_name_aside). */
static void bad_name_put_back(struct task *t, const struct pending *pe)
{
	struct dispatch *d = t->d;
	if (spool_rename_noreplace(d->spool, SPOOL_RUNNING, t->running_name, SPOOL_NEW, pe->name) == 0) {
		log_job(LOG_INFO, t->id, "back to new/ (replaced while being claimed): 'new/%s' is not a "
			"plain file now, and is ignored", pe->name);
	} else {
		char *was = xasprintf("what replaced 'new/%s' while it was being claimed, new/ having "
				      "another file of that name again", pe->name);
		intake_bad_name_aside(d, t->id, t->running_name, was);
		free(was);
	}
	task_free(t);
}

/* A regular file in new/ whose name is not a valid task id goes to failed/ under a safe name
 * ("badname-" and a hash of the name), with a result saying why; anything else is ignored. Only
 * the file looked at is moved, as a claim does: opened and checked, renamed (never over one in
 * running/), and if the rename took another (a FIFO or a directory put there meanwhile), that
 * goes back to new/, where it is ignored. The same bad name again waits for the first. */
static enum start refuse_bad_name(struct dispatch *d, struct pending *pe)
{
	/* SHA-256, not FNV: a client could give a name of FNV's of another's bad name, and
	 * replace its result. Stable, so any host or client finds it. */
	char hex[2 * CRYPTO_SHA256_LEN + 1], id[32];
	crypto_sha256_hex(pe->name, strlen(pe->name), hex);
	xsnprintf(id, sizeof(id), "badname-%.16s", hex);
	if (pe->dir == SPOOL_NEW && (strset_has(&d->held, id) || strset_has(&d->stranded, id)))
		return WAIT;
	struct stat st;
	enum spool_read rr = pe->dir != SPOOL_NEW ? SPOOL_READ_NOT_REGULAR :
			     spool_read_file(d->spool->fd[SPOOL_NEW], pe->name,
					     dispatch_job_read_cap(d), &d->readbuf, &st);
	if (rr == SPOOL_READ_GONE || rr == SPOOL_READ_ERROR) {
		known_del(d, pe->dir, pe->name);
		return SKIPPED;
	}
	if (rr != SPOOL_READ_OK) {
		ignore_entry(d, pe, NULL, rr == SPOOL_READ_TOO_BIG ? spool_read_reason(rr) :
			     "not a valid task id, and not a plain file");
		return SKIPPED;
	}
	stop_point("claim:badname");
	struct task *t = task_new(d, id);
	t->job_text = xstrndup(d->readbuf.data, d->readbuf.len);
	t->job_len = d->readbuf.len;
	t->created_wall_ms = timespec_ms(&st.st_mtim);
	known_del(d, pe->dir, pe->name);
	if (spool_rename_claim(d->spool, SPOOL_NEW, pe->name, t->running_name) < 0) {
		task_free(t);
		return SKIPPED;
	}
	/* What the rename took is judged, not what was read: another plain file put there is a
	 * bad name all the same; anything else never leaves for failed/. */
	struct stat claimed = { 0 };
	if (fstatat(d->spool->fd[SPOOL_RUNNING], t->running_name, &claimed, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(claimed.st_mode) || claimed.st_nlink != 1) {
		stop_point("claim:badname-taken");
		bad_name_put_back(t, pe);
		return SKIPPED;
	}
	log_job(LOG_INFO, id, "claimed: a file in new/ whose name is not a valid task id");
	finish_fail(t, "invalid_job", "", "the file name is not a valid task id: use 1-128 letters, digits, "
		  "'.', '_' or '-', starting with a letter or digit, optionally followed by \".json\" "
		  "(spool-layout.md §3); the file was renamed to %s.json", id);
	return STARTED;
}

static enum start try_start(struct dispatch *d, struct pending *pe)
{
	char id[JOB_ID_MAX + 1];
	struct stat st;
	int dirfd = d->spool->fd[pe->dir];

	if (job_id_from_listed(pe->name, pe->dir == SPOOL_DEFERRED, id, sizeof(id)) < 0)
		return refuse_bad_name(d, pe);
	/* The same id again (ID and ID.json, or resubmitted while running): one at a time; and
	 * never over one of ours left in running/ (stranded), whose run may have been paid for. */
	if (strset_has(&d->held, id) || strset_has(&d->stranded, id))
		return WAIT;
	/* A hold or cancel already read (asked while the job waited in new/ or deferred/, or that
	 * a host running it had not seen) is honoured before its provider is asked for a slot or a
	 * shared ticket: a paused provider must not keep it waiting. Looked up in memory; only a
	 * job with a request pays a stat, which tells a request withdrawn since (retry, release). */
	bool cancelled = control_still_wants(&d->control, d->spool, CONTROL_CANCEL, id);
	if (!cancelled && control_still_wants(&d->control, d->spool, CONTROL_HOLD, id))
		return hold_pending(d, pe, id);
	if (!cancelled && pe->provider) {
		struct provider_state *p = provider_state_find(d, pe->provider);
		if (p && !slots_may_claim(d, p, mono_ms()))
			return WAIT;
	}
	if (!cancelled && pe->route && routing_still_waits(d, pe))
		return WAIT;
	int readfd;
	enum spool_read rr = spool_read_keep(dirfd, pe->name, dispatch_job_read_cap(d), &d->readbuf, &st,
					     &readfd);
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
	enum start started = claim_read(d, pe, id, cancelled, readfd, &st);
	close(readfd);
	return started;
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
	int64_t now = mono_ms(), earliest;
	if (slots_some_provider_may_claim(d, now, true, &earliest))
		return true;
	if (earliest)
		loop_arm_earlier(d->loop, &d->wake_timer, &d->wake_due, earliest, now, wake_pump, d);
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
	if (full)
		loop_arm_earlier(d->loop, &d->wake_timer, &d->wake_due, now + 1000, now, wake_pump, d);
	return !full;
}

/* Whether a pending job stays in the queue: one an operator asked to cancel or hold (looked up
 * in memory) is acted on now, unless that must wait. */
static bool not_requested(struct dispatch *d, struct pending *pe, void *arg)
{
	(void)arg;
	char id[JOB_ID_MAX + 1];
	bool asked = job_id_from_listed(pe->name, pe->dir == SPOOL_DEFERRED, id, sizeof(id)) == 0 &&
		     (control_wants(&d->control, CONTROL_CANCEL, id) ||
		      control_wants(&d->control, CONTROL_HOLD, id));
	return !asked || try_start(d, pe) == WAIT;
}

/* Pending jobs an operator asked to cancel or hold need no call: they are acted on whatever
 * the providers and the slots say, once after each read of control/ that found requests
 * (the queue is not walked at every turn of the loop while a request waits for its job). */
static void pump_requested(struct dispatch *d)
{
	if (d->draining || d->control_acted == d->control.reads)
		return;
	d->control_acted = d->control.reads;
	if (d->control.cancel.count || d->control.hold.count)
		pending_filter(d, not_requested, NULL);
}

/* Notes the first full placement: the first listing of new/ done and every job placed once. */
static void note_placed_once(struct dispatch *d)
{
	if (d->new_scan.listings > 0 && !scan_busy(&d->new_scan) && !d->n_unplaced)
		d->placed_once = true;
}

/* Whether claims go ahead before every waiting job has its place: only at start-up, once
 * SCAN_FIRST_SLICE_MS have passed since the first listing began (a backlog on a slow or cold
 * file server must not keep the first call waiting for a stat of every job), and until the
 * first listing of new/ is done and every job was placed once. Then the jobs placed so far go
 * in their order, the rest are placed between claims (spool-layout.md §3). */
static bool claims_before_placed(struct dispatch *d)
{
	note_placed_once(d);
	return !d->placed_once && d->startup_claims_at && mono_ms() >= d->startup_claims_at;
}

void intake_pump(struct dispatch *d)
{
	pump_requested(d);
	if (d->draining || d->n_pending == 0 || slots_claim_room(d) == 0 ||
	    !any_provider_ready(d) || !disk_has_room(d)) {
		pending_place(d, d->n_sorted, SCAN_SLICE_MS);   /* what waits gets its place in line */
		return;
	}
	/* Order matters only when not every entry can start now: new names are stat'ed then. */
	bool all_fit = d->n_pending <= (size_t)slots_claim_room(d);
	/* A claim waits until every waiting job has its place, so the oldest starts first; at
	 * start-up past a bound, among those placed so far (the first ones after n_sorted). */
	bool early = false;
	if (!all_fit && !pending_place(d, d->n_sorted, SCAN_SLICE_MS)) {
		if (!claims_before_placed(d))
			return;
		early = true;
	}
	note_placed_once(d);
	size_t listed = d->n_pending, sorted = listed;
	if (early)
		for (sorted = d->n_sorted; sorted < listed && d->pending[sorted].placed; sorted++)
			;
	pending_sort(d, sorted);
	size_t keep = 0;   /* entries that must wait are compacted to the front */
	size_t i = 0;
	for (; i < sorted && slots_claim_room(d) > 0; i++) {
		struct pending *pe = &d->pending[i];
		if (try_start(d, pe) == WAIT) {
			d->pending[keep++] = *pe;
			continue;
		}
		d->n_unplaced -= !pe->placed;
		intake_pending_free(pe);
	}
	/* The waiting ones go just before the untried tail, which stays where it is: a claim
	 * moves a concurrency's worth of entries at most, never the backlog behind them. */
	if (keep != i) {
		memmove(&d->pending[i - keep], &d->pending[0], keep * sizeof(*d->pending));
		d->pending += i - keep;
		d->pending_head += i - keep;
	}
	/* Compacting keeps the order; anything added meanwhile is sorted in next time. */
	d->n_sorted = d->n_pending == listed ? keep + (sorted - i) : 0;
	d->n_pending = keep + (d->n_pending - i);
	if (!early)   /* those that wait: a concurrency's worth at most; early, all are placed */
		pending_place(d, 0, INT64_MAX / 2);
	any_provider_ready(d);   /* arms the wake-up timer if something is paused */
}

