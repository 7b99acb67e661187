/* recovery.c - what dead daemons leave behind: the heartbeat that keeps our jobs' leases (the
 * mtime of their files in running/), the jobs and publications of other hosts whose lease ran
 * out, and at start-up the jobs and publications a crash of ours left in running/.
 *
 * A response is never paid twice: a saved one finishes its job, and a call that was cut is
 * recorded as possibly billed before the job goes back to new/. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attempt.h"
#include "deferral.h"
#include "dispatch_impl.h"
#include "finish.h"
#include "hostlock.h"
#include "intake.h"
#include "log.h"
#include "outbox.h"
#include "provider_state.h"
#include "publish.h"
#include "recovery.h"
#include "sidecar.h"
#include "task.h"
#include "banned.h"

/* ---- leases: heartbeats and reclaiming the jobs of dead daemons ------------------------------- */


static void adopt_all(struct dispatch *d, struct strset *reclaimed);

/* How far ahead of the file server's clock a job's mtime in running/ must be to be a due time a
 * shutdown left (task_requeue), not a heartbeat seen through a clock measured a little off. */
#define LEFT_LEASE_MARGIN_MS 2000

int64_t recovery_heartbeat_interval_ms(const struct dispatch *d)
{
	/* Several beats per lease, so one slow write does not cost the lease. */
	return d->cfg->lease_timeout * 1000 / 4;
}

/* A job's lease is the mtime of its file in running/: touched here for every job we hold. */
int64_t recovery_heartbeat(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	int fd = d->spool->fd[SPOOL_RUNNING];
	keyshare_beat(d->ks, d->cfg->lease_timeout * 1000);   /* a late beat: a stall */
	keyshare_heartbeat_probes(d->ks);
	keyshare_retry_unwritten(d->ks);   /* tickets kept till a write of the ledger works */
	publish_heartbeat(d->spool);   /* the batches' staging directories */
	for (struct task *t = d->tasks; t; t = t->next) {
		keyshare_heartbeat(d->ks, &t->ticket);
		/* Every job held is beaten, in the I/O pool too (a slow fsync must not cost the
		 * lease), but for a deferral: its helper sets this very file's mtime to the due time
		 * and moves it out of running/ at once. */
		if (t->in_pool && t->state == T_DEFERRING)
			continue;
		/* A committed job's file is in its batch's staging directory, whose mtime is its
		 * lease (publish_heartbeat, above). A task never holds a job committed in a
		 * directory of its own (.ID@HOST.DEST: only a restart's or a reclaimer's commit, made
		 * and finished at once, else resumed and touched at rescans). */
		if (!t->publish_committed &&
		    utimensat(fd, t->running_name, NULL, AT_SYMLINK_NOFOLLOW) < 0 &&
		    errno == ENOENT && !t->fenced && !t->in_pool) {
			t->fenced = true;
			log_job(LOG_WARN, t->id, "its file in running/ is gone: another daemon reclaimed it");
		}
	}
	return recovery_heartbeat_interval_ms(d);
}

/* A reclaim's mark, running/.ID@ME.reclaim.OWNER, is a directory: OWNER's files of the job move
 * into it (MARK/SUFFIX), then out of it to our names (.ID@ME.SUFFIX), each rename naming the
 * mark by its path. A host that reclaims the job from us moves our marks along first of all our
 * files (take_sidecars), so once it has, every later rename of ours fails (ENOENT): a reclaimer
 * that stalled anywhere in its reclaim, however long, takes nothing it no longer holds, and what
 * it took before is ours under our names, which that host takes along (§10). A mark an earlier
 * release made (an empty file) is taken through the old way: straight to our names. */

/* How taking a dead host's files of a job along went. Only TAKE_ALL lets its mark go: with a
 * file left (TAKE_FAILED), the job waits in running/, not adopted, and the next rescan's
 * finish_reclaims tries again; adopted without it, a saved answer would be paid again. */
enum take {
	TAKE_ALL,      /* every file listed is ours (or went before we got to it) */
	TAKE_LOST,     /* our mark went meanwhile: another host holds the job */
	TAKE_FAILED,   /* a listing or a rename failed (said): the mark stays */
};

/* A file of a job reclaimed from owner that could not be taken (once a line: strandlog). */
static void say_not_taken(struct dispatch *d, const char *id, const char *what, const char *owner,
			  int err)
{
	strandlog_say(&d->strandlog, LOG_ERROR, id, "cannot take %s along from '%s': %s; its reclaim "
		      "mark stays and the job waits in running/, not run, until it is taken (tried "
		      "again at each rescan)", what, owner, strerror(err));
}

/* A mark of ours, made before a reclaim's rename: a directory; where one of an earlier release
 * (a file) is in the way, it is replaced. 0, or -1 with errno. */
static int make_mark(int fd, const char *mark)
{
	struct stat st;
	if (mkdirat(fd, mark, 0700) == 0)
		return 0;
	if (errno != EEXIST || fstatat(fd, mark, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	if (S_ISDIR(st.st_mode))
		return 0;
	return unlinkat(fd, mark, 0) < 0 ? -1 : mkdirat(fd, mark, 0700);
}

/* Our mark is gone (ENOENT). That is another host's reclaim of the job from us only when our job
 * file went too: such a host renames the job first, then moves our marks (take_sidecars), so
 * TAKE_LOST. A mark gone beside a job still ours (or one not known to be gone) is no such
 * evidence: said, the mark made again so that finish_reclaims takes the rest, TAKE_FAILED. */
static enum take mark_gone(struct dispatch *d, const char *id, const char *owner, const char *mark)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	struct stat st;
	char *mine = spool_running_name(d->spool, id);
	bool ours = fstatat(fd, mine, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
	int err = ENOENT;
	free(mine);
	if (!ours)
		return TAKE_LOST;
	if (make_mark(fd, mark) < 0)
		err = errno;
	char *what = xasprintf("its files (its reclaim mark 'running/%s' went, the job still ours; "
			       "%s)", mark, err == ENOENT ? "made again" : "cannot make it again");
	say_not_taken(d, id, what, owner, err);
	free(what);
	return TAKE_FAILED;
}

/* What a rename of ours, from -> to, that failed with ENOENT says: it moved (a lost NFS reply,
 * §10: *moved set), the file went before we got to it (TAKE_ALL), our mark went (mark_gone).
 * Else (the file is there: a spurious ENOENT) it is said, TAKE_FAILED. */
static enum take after_enoent(struct dispatch *d, const char *id, const char *owner,
			      const char *from, const char *to, const char *mark, bool *moved)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	struct stat st;
	if (spool_exists(fd, to)) {
		*moved = true;
		return TAKE_ALL;
	}
	if (mark && fstatat(fd, mark, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return mark_gone(d, id, owner, mark);
	} else if (fstatat(fd, from, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
		return TAKE_ALL;
	}
	char *what = xasprintf("'running/%s' (its rename said it was gone)", from);
	say_not_taken(d, id, what, owner, ENOENT);
	free(what);
	return TAKE_FAILED;
}

/* Renames from -> to, a file of the job reclaimed from owner, through our mark (NULL: none):
 * *moved set when it moved. A failure is judged (after_enoent) or said, TAKE_FAILED. */
static enum take rename_taking(struct dispatch *d, const char *id, const char *owner,
			       const char *from, const char *to, const char *mark, bool *moved)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	if (renameat(fd, from, fd, to) == 0) {
		*moved = true;
		return TAKE_ALL;
	}
	int err = errno;
	if (err == ENOENT)
		return after_enoent(d, id, owner, from, to, mark, moved);
	char *what = xasprintf("'running/%s'", from);
	say_not_taken(d, id, what, owner, err);
	free(what);
	return TAKE_FAILED;
}

/* One file of the job, running/.ID@OWNER.SUFFIX, into our mark (or straight to .ID@ME.SUFFIX with
 * no mark), its suffix added to taken once it moved. TAKE_LOST when our mark went with the job
 * (the file is left where it is); any other failure is said, TAKE_FAILED. */
static enum take take_one(struct dispatch *d, const char *id, const char *owner, const char *from,
			  const char *sfx, const char *mark, struct strset *taken)
{
	char *to = mark ? xasprintf("%s/%s", mark, sfx)
			: xasprintf(".%s@%s.%s", id, d->spool->host_id, sfx);
	bool moved = false;
	enum take how = rename_taking(d, id, owner, from, to, mark, &moved);
	if (moved)
		strset_add(taken, sfx);
	free(to);
	return how;
}

/* The worse of two outcomes: lost over failed over all. */
static enum take take_worse(enum take a, enum take b)
{
	return a == TAKE_LOST || b == TAKE_LOST ? TAKE_LOST : a == TAKE_FAILED ? a : b;
}

/* Every sidecar of a reclaimed job comes along (.partial, each saved .response.STATUS, a
 * 524 as much as a 200, a shutdown's mark .left.N, and a put-back's new run), so a response
 * the dead host saved is used, never paid again, a job it left on purpose counts no death, and
 * a put-back whose claim it did not finish runs its new run; so does
 * its uncommitted staging directory (.ID@HOST.done/.failed), or its staged files in one of the
 * owner's batches' directories, which a job whose records say "finished" is published from.
 * Through mark (a directory of ours, else NULL: straight to our names). The owner's own marks
 * go first: the owner may be a reclaimer that stalled, moving files out of its mark; once the
 * mark is ours it cannot, and what it moved before is there to list (again). TAKE_LOST when our
 * mark went meanwhile (the job is another host's): nothing more is taken. TAKE_FAILED (said)
 * when running/ could not be listed or a file not renamed: the rest is taken all the same. The
 * suffixes taken are added to taken. */
static enum take take_sidecars(struct dispatch *d, const char *id, const char *owner,
			       const char *running_name, const char *mark, struct strset *taken)
{
	struct spool_entry *h;
	char *prefix = xasprintf(".%s@%s.", id, owner);
	size_t plen = strlen(prefix);
	enum take how = TAKE_ALL;
	size_t had = taken->count;
	long nh = spool_list_names(d->spool, SPOOL_RUNNING, true, &h);
	for (int pass = 0; pass < 2 && how != TAKE_LOST; pass++) {
		if (pass && taken->count > had) {   /* a mark of the owner's came: list again */
			spool_entries_free(h, nh);
			nh = spool_list_names(d->spool, SPOOL_RUNNING, true, &h);
		}
		if (nh < 0) {
			say_not_taken(d, id, "its files (running/ unlisted)", owner, errno);
			how = TAKE_FAILED;
			break;
		}
		for (long i = 0; i < nh && how != TAKE_LOST; i++) {
			const char *sfx = h[i].name + plen;
			bool is_mark = !strncmp(h[i].name, prefix, plen) && !strncmp(sfx, "reclaim.", 8);
			if (pass == 0) {
				if (is_mark)
					how = take_worse(how, take_one(d, id, owner, h[i].name, sfx,
								       mark, taken));
				continue;
			}
			if (publish_is_batch_name(h[i].name)) {
				publish_take_staged(d->spool, h[i].name, id, owner, running_name);
				continue;
			}
			if (strncmp(h[i].name, prefix, plen) ||
			    sidecar_suffix_kind(sfx) == SIDECAR_KIND_NONE)
				continue;
			how = take_worse(how, take_one(d, id, owner, h[i].name, sfx, mark, taken));
		}
	}
	spool_entries_free(h, nh);
	free(prefix);
	return how;
}

/* One file our mark holds, MARK/SUFFIX, out to our name .ID@ME.SUFFIX: a mark of a reclaimer we
 * took the job from becomes one of ours (.ID@ME.reclaim.OTHER), finished by finish_reclaims. By
 * the mark's path: fails once another host took it (TAKE_LOST). Any other failure is said
 * (TAKE_FAILED: the file stays in the mark, and so does the mark). *moved set when it moved. */
static enum take move_out(struct dispatch *d, const char *id, const char *owner, const char *mark,
			  const char *sfx, bool *moved)
{
	char *from = xasprintf("%s/%s", mark, sfx);
	char *to = xasprintf(".%s@%s.%s", id, d->spool->host_id, sfx);
	enum take how = rename_taking(d, id, owner, from, to, mark, moved);
	free(to);
	free(from);
	return how;
}

/* Everything our mark holds (a reclaim cut after it took files in) moves out: TAKE_FAILED (said)
 * when something could not be read or moved. *moved set when a file moved. */
static enum take empty_mark(struct dispatch *d, const char *id, const char *owner, const char *mark,
			    bool *moved)
{
	int mfd = openat(d->spool->fd[SPOOL_RUNNING], mark,
			 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = mfd >= 0 ? fdopendir(mfd) : NULL;
	struct dirent *de;
	enum take how = TAKE_ALL;
	if (!dir) {
		int err = errno;
		if (mfd >= 0)
			close(mfd);
		if (err == ENOENT)
			return mark_gone(d, id, owner, mark);
		char *what = xasprintf("what its mark 'running/%s' holds", mark);
		say_not_taken(d, id, what, owner, err);
		free(what);
		return TAKE_FAILED;
	}
	while ((errno = 0, de = readdir(dir)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			how = take_worse(how, move_out(d, id, owner, mark, de->d_name, moved));
	if (errno) {
		char *what = xasprintf("what its mark 'running/%s' holds", mark);
		say_not_taken(d, id, what, owner, errno);
		free(what);
		how = take_worse(how, TAKE_FAILED);
	}
	closedir(dir);
	return how;
}

/* dirfd/name and what it holds, down to depth directories (a reclaim's mark, whose job is gone
 * from running/: what it holds was taken for that job, staging directories and marks
 * included). */
static void remove_tree(int dirfd, const char *name, int depth)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(dir)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    unlinkat(fd, de->d_name, 0) < 0 && errno == EISDIR && depth > 1)
			remove_tree(fd, de->d_name, depth - 1);
	closedir(dir);
	unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* Removes a mark once what it guards is durable: a directory (left when it still holds a file:
 * finish_reclaims moves it out), or an earlier release's file. 0, or -1 with errno when it is
 * still there. */
static int remove_mark(int fd, const char *mark)
{
	int rc = unlinkat(fd, mark, AT_REMOVEDIR);
	if (rc < 0 && errno == ENOTDIR)
		rc = unlinkat(fd, mark, 0);
	return rc < 0 && errno != ENOENT ? -1 : 0;
}

/* Jobs of other hosts whose lease ran out, judged by the file server's clock, are taken over
 * with one rename (one winner), with the dead host's saved response if any, then handled as a
 * job of ours left by a crash. */
/* Whether running/name is ID@HOST.json of another HOST; fills id and owner (HOST). */
static bool other_hosts_job(const struct dispatch *d, const char *name, char id[JOB_ID_MAX + 1],
			    char owner[NAME_MAX + 1])
{
	return spool_running_id(name, id, JOB_ID_MAX + 1, owner, NAME_MAX + 1) &&
	       strcmp(owner, d->spool->host_id);
}

/* Other hosts' jobs in running/, from a listing of it: how many (for the metrics), and their
 * ids, whose end is not known yet (task_busy: their end events wait, ours or a dead host's). */
static void note_others(struct dispatch *d, const struct spool_entry *e, long n)
{
	char id[JOB_ID_MAX + 1], owner[NAME_MAX + 1];
	if (n < 0)
		return;
	d->others_running = 0;
	strset_release(&d->others_ids);
	strset_init(&d->others_ids);
	for (long i = 0; i < n; i++)
		if (other_hosts_job(d, e[i].name, id, owner)) {
			d->others_running++;
			strset_add(&d->others_ids, id);
		}
}

/* running/.ID@ME.reclaim.OWNER: made before the rename that reclaims running/ID@OWNER.json,
 * removed once OWNER's files of the job are ours (caller frees). */
static char *reclaim_mark_name(const struct dispatch *d, const char *id, const char *owner)
{
	return xasprintf(".%s@%s.reclaim.%s", id, d->spool->host_id, owner);
}

bool recovery_reclaim_mark_parse(const char *name, const char *host, char id[JOB_ID_MAX + 1],
				 char owner[NAME_MAX + 1])
{
	const char *at = strchr(name, '@');
	size_t hlen = strlen(host);
	if (name[0] != '.' || !at || (size_t)(at - name - 1) > JOB_ID_MAX || at == name + 1 ||
	    strncmp(at + 1, host, hlen) || strncmp(at + 1 + hlen, ".reclaim.", 9) ||
	    !at[1 + hlen + 9] || strlen(at + 1 + hlen + 9) > NAME_MAX)
		return false;
	xsnprintf(id, JOB_ID_MAX + 1, "%.*s", (int)(at - name - 1), name + 1);
	xsnprintf(owner, NAME_MAX + 1, "%s", at + 1 + hlen + 9);
	return true;
}

/* The job, reclaimed from owner as mine, takes along owner's files of it (through our mark, a
 * directory; NULL: straight) and its end events. TAKE_LOST, said, when our mark went meanwhile:
 * another host reclaimed the job from us, and takes what we took before. TAKE_FAILED, said,
 * when a file or an end event of owner's is left: the mark is to stay. */
static enum take take_from(struct dispatch *d, const char *id, const char *owner, const char *mine,
			   const char *mark, bool *took_events)
{
	struct strset taken;   /* into our mark, to move out */
	strset_init(&taken);
	enum take how = take_sidecars(d, id, owner, mine, mark, &taken);
	if (how == TAKE_LOST) {
		log_job(LOG_WARN, id, "reclaimed from '%s' but no longer ours: another host "
			"reclaimed it meanwhile; none of its files taken along", owner);
	} else {
		char why[NAME_MAX + 128] = "";
		int events = outbox_take_along(d->outbox, id, owner, why, sizeof(why));
		*took_events |= events > 0;
		if (events)
			log_job(LOG_INFO, id, "took along %d end event(s) '%s' had queued in "
				"outbox/: sent or taken back as the job ends", events, owner);
		if (why[0]) {
			strandlog_say(&d->strandlog, LOG_ERROR, id, "%s (an end event '%s' had "
				      "queued); its reclaim mark stays and the job waits in running/, not "
				      "run, until it is taken (tried again at each rescan)", why, owner);
			how = take_worse(how, TAKE_FAILED);
		}
	}
	/* What went in before the mark was taken from us went with it: none of these then. */
	bool moved = false;
	for (size_t i = 0; mark && how != TAKE_LOST && i < taken.cap; i++)
		if (taken.slots[i])
			how = take_worse(how, move_out(d, id, owner, mark, taken.slots[i], &moved));
	strset_release(&taken);
	return how;
}

/* Whether running/'s name changes reach the disk in the order they were made with no sync
 * between them (a journaled ext4 with sync = auto, syncset.h): then a mark needs no sync of its
 * own before the renames it guards, nor the renames one before the mark goes. */
static bool names_in_order(const struct spool *sp)
{
	return sync_names_in_order(sp->sync_mode, sp->fs_type,
				   sp->journal_kind != SPOOL_JOURNAL_NONE);
}

/* running/ (and outbox/, when entries were taken along) synced: the marks made durable before
 * the renames they guard, or the renames before the marks go, so that no power loss leaves a
 * rename without the mark that says whose files are left to take (§10). One sync per pass,
 * however many jobs it reclaims; none where the journal keeps names in order. 0, or -1 (said,
 * with what is done about it: then) when a sync failed. */
static int reclaim_barrier(struct dispatch *d, bool outbox_too, const char *what, const char *then)
{
	if (names_in_order(d->spool))
		return 0;
	if (spool_sync_dir(d->spool, SPOOL_RUNNING) == 0 &&
	    (!outbox_too || spool_sync_dir(d->spool, SPOOL_OUTBOX) == 0))
		return 0;
	log_warn("cannot sync running/%s %s: %s; %s", outbox_too ? " and outbox/" : "", what,
		 strerror(errno), then);
	return -1;
}

/* Reclaims a death or a stall cut between the rename of the job and those of its files: our
 * marks .ID@ME.reclaim.OWNER beside a running/ID@ME.json (ours, or taken along from a reclaimer
 * that died so, whose own marks came with them) say whose files are left to take. Those of an
 * owner whose running/ID@OWNER.json is there again are its own job's, not taken. A mark with
 * no job of ours is of a rename that never happened. What a mark holds (taken into it before
 * the cut) moves out to our names. Before the jobs are adopted, which then see every file.
 * A mark whose files could not all be taken (a rename failed, said) stays, and its job is
 * stranded: not adopted, nor sent back, till a rescan takes them (a pass that left one: in
 * retry, said already, as are the ids this pass reclaimed). The ids whose files it took are
 * added to reclaimed. True when a file moved (running/ is to be listed again). */
static bool finish_reclaims(struct dispatch *d, const struct spool_entry *h, long nh,
			    const struct strset *retry, struct strset *reclaimed)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	char id[JOB_ID_MAX + 1], owner[NAME_MAX + 1];
	bool moved = false, events = false;
	struct strset done;   /* marks to remove once what they guard is durable */
	strset_init(&done);
	for (long i = 0; i < nh; i++) {
		if (!recovery_reclaim_mark_parse(h[i].name, d->spool->host_id, id, owner) ||
		    strset_has(&d->held, id))
			continue;
		char *mine = spool_running_name(d->spool, id);
		char *theirs = xasprintf("%s@%s.json", id, owner);
		const char *mark = S_ISDIR(h[i].id.mode) ? h[i].name : NULL;
		bool ours = spool_exists(fd, mine);
		enum take how = TAKE_ALL;
		if (strcmp(owner, d->spool->host_id) && ours && !spool_exists(fd, theirs)) {
			if (!strset_has(retry, id) && !strset_has(reclaimed, id) &&
			    !strset_has(&d->stranded, id))
				log_job(LOG_WARN, id, "its reclaim from '%s' was cut before that host's "
					"files of it were taken along: taken now", owner);
			outbox_reclaims_begin(d->outbox);
			how = take_from(d, id, owner, mine, mark, &events);
			outbox_reclaims_end(d->outbox);
			if (how != TAKE_FAILED) {
				moved = true;
				strset_add(reclaimed, id);
			}
		}
		if (mark && how != TAKE_LOST)   /* what was taken into it before the cut */
			how = take_worse(how, empty_mark(d, id, owner, mark, &moved));
		if (how == TAKE_FAILED && ours)
			strset_add(&d->stranded, id);
		else if (how != TAKE_FAILED)
			strset_add(&done, h[i].name);
		free(theirs);
		free(mine);
	}
	/* Marks go only once the renames they guard are durable: else the next pass again. */
	if (moved && reclaim_barrier(d, events, "after taking the files of a reclaim that was cut",
				     "their reclaim marks stay till a rescan's sync works") < 0) {
		strset_release(&done);
		strset_init(&done);
	}
	for (size_t i = 0; i < done.cap; i++) {
		if (!done.slots[i] || remove_mark(fd, done.slots[i]) == 0 ||
		    !recovery_reclaim_mark_parse(done.slots[i], d->spool->host_id, id, owner))
			continue;
		int err = errno;
		char *mine = spool_running_name(d->spool, id);
		bool ours = spool_exists(fd, mine);
		free(mine);
		if (!ours)
			continue;
		/* Something came into it meanwhile (the next pass moves it out): the job waits. */
		strandlog_say(&d->strandlog, LOG_ERROR, id, "cannot remove its reclaim mark "
			      "'running/%s': %s; the job waits in running/, not run, until it is "
			      "(tried again at each rescan)", done.slots[i], strerror(err));
		strset_add(&d->stranded, id);
	}
	strset_release(&done);
	return moved;
}

/* Of a listing of running/'s hidden files, HOST's files of ID that a reclaim under way (a mark
 * .ID@OTHER.reclaim.HOST beside running/ID@OTHER.json) is to take along: "ID@HOST" in keep. */
static void note_reclaimed_files(const struct dispatch *d, const struct spool_entry *h, long nh,
				 struct strset *keep)
{
	char id[JOB_ID_MAX + 1], owner[NAME_MAX + 1];
	for (long i = 0; i < nh; i++) {
		const char *at = strchr(h[i].name, '@'), *r = at ? strstr(at, ".reclaim.") : NULL;
		if (!r || (size_t)(r - at - 1) > NAME_MAX)
			continue;
		char host[NAME_MAX + 1];
		xsnprintf(host, sizeof(host), "%.*s", (int)(r - at - 1), at + 1);
		if (!recovery_reclaim_mark_parse(h[i].name, host, id, owner))
			continue;
		char *job = xasprintf("%s@%s.json", id, host);
		if (spool_exists(d->spool->fd[SPOOL_RUNNING], job)) {
			char *key = xasprintf("%s@%s", id, owner);
			strset_add(keep, key);
			free(key);
		}
		free(job);
	}
}

/* A job of another host's to reclaim in this pass: its name in running/, and our mark. */
struct reclaim {
	char *name, *mark, *mine, owner[NAME_MAX + 1], id[JOB_ID_MAX + 1];
	int64_t idle_ms;
	bool keep_mark;   /* a file of the owner's is left: finish_reclaims tries again */
};

void recovery_reclaim_stale(struct dispatch *d)
{
	struct spool_entry *e;
	int fd = d->spool->fd[SPOOL_RUNNING];
	/* Names first: only other hosts' jobs are stat'ed for their lease, never our own. */
	long n = spool_list_names(d->spool, SPOOL_RUNNING, false, &e);
	int64_t now = 0;
	int64_t lease_ms = d->cfg->lease_timeout * 1000;
	bool took = false, events = false;
	note_others(d, e, n);
	char id[JOB_ID_MAX + 1], owner[NAME_MAX + 1];
	struct reclaim *r = NULL;
	size_t nr = 0;
	struct strset reclaimed;   /* ids taken over in this pass */
	strset_init(&reclaimed);
	int64_t began = mono_ms();   /* before the first rename */
	/* First every mark, one sync, then the renames they guard (§10). */
	for (long i = 0; i < n; i++) {
		const char *name = e[i].name;
		if (!other_hosts_job(d, name, id, owner))
			continue;
		if (!now && (now = spool_server_now(d->spool)) <= 0)
			break;
		if (spool_entry_stat(d->spool, SPOOL_RUNNING, &e[i]) < 0 ||
		    now - e[i].mtime_ns / 1000000 <= lease_ms)
			continue;
		/* Never over a job of ours of the same id: a task's, or one left here (stranded; an
		 * EEXIST is one of those, adopted below). */
		if (strset_has(&d->held, id) || strset_has(&d->stranded, id))
			continue;
		r = xrealloc(r, (nr + 1) * sizeof(*r));
		struct reclaim *one = &r[nr++];
		one->name = e[i].name;
		xsnprintf(one->id, sizeof(one->id), "%s", id);
		xsnprintf(one->owner, sizeof(one->owner), "%s", owner);
		one->mark = reclaim_mark_name(d, id, owner);
		one->mine = spool_running_name(d->spool, id);
		one->idle_ms = now - e[i].mtime_ns / 1000000;
		one->keep_mark = false;
		/* The mark says, should we die or stall before the owner's files are ours, whose
		 * they are (finish_reclaims), and every rename of them goes through it: with none,
		 * no reclaim (each would fail, taken for another host's reclaim of it, and the
		 * owner's saved answer be left behind and paid again). */
		if (make_mark(fd, one->mark) < 0) {
			log_job(LOG_WARN, id, "cannot make its reclaim mark 'running/%s': %s; not "
				"reclaimed from '%s' in this pass (tried again at the next rescan)",
				one->mark, strerror(errno), owner);
			remove_mark(fd, one->mark);   /* in case it was made all the same */
			free(one->mark);
			free(one->mine);
			nr--;
		}
	}
	/* Nor with marks that may not reach the disk before the renames they guard. */
	if (nr && reclaim_barrier(d, false, "after marking the jobs it reclaims", "none of them "
				  "reclaimed in this pass (tried again at the next rescan)") < 0) {
		for (size_t k = 0; k < nr; k++) {
			remove_mark(fd, r[k].mark);
			free(r[k].mark);
			free(r[k].mine);
		}
		nr = 0;
	}
	outbox_reclaims_begin(d->outbox);   /* outbox/ listed once for all the entries taken along */
	for (size_t k = 0; k < nr; k++) {
		struct reclaim *one = &r[k];
		if (spool_rename_claim(d->spool, SPOOL_RUNNING, one->name, one->mine) == 0) {
			/* Ours for a lease from now: a rename keeps the dead host's old mtime. Only
			 * now: touched before, a rename that failed would have given the dead host's
			 * job a lease. A host that takes it in between from its old mtime takes our
			 * mark first, and our renames below fail (§10). */
			utimensat(fd, one->mine, NULL, AT_SYMLINK_NOFOLLOW);
			log_job(LOG_WARN, one->id, "reclaimed from '%s' (no heartbeat for %" PRId64 " s)",
				one->owner, one->idle_ms / 1000);
			crash_point("reclaim:renamed");
			stop_point("reclaim:renamed");
			/* Stalled half a lease or more: the job may be another host's by now,
			 * with the owner's files (our mark tells it): not even tried. Else every
			 * rename goes through our mark, so a stall at any point takes nothing of
			 * a job another host holds by then. */
			if (mono_ms() - began < lease_ms / 2 || spool_exists(fd, one->mine))
				one->keep_mark = take_from(d, one->id, one->owner, one->mine,
							   one->mark, &events) == TAKE_FAILED;
			else   /* says so, and takes nothing */
				outbox_take_along(d->outbox, one->id, one->owner, NULL, 0);
			strset_add(&reclaimed, one->id);
			d->others_running--;   /* ours now */
			took = true;
		} else {
			int err = errno;
			remove_mark(fd, one->mark);   /* guards nothing: no sync */
			free(one->mark);
			one->mark = NULL;
			if (err == EEXIST)
				strset_add(&d->stranded, one->id);
		}
	}
	outbox_reclaims_end(d->outbox);
	/* The marks go once the renames they guard are durable: else finish_reclaims, later. */
	bool durable = !took || reclaim_barrier(d, events, "after taking the files of the jobs it "
						 "reclaimed", "their reclaim marks stay till a "
						 "rescan's sync works") == 0;
	for (size_t k = 0; k < nr; k++) {
		if (r[k].mark && !r[k].keep_mark && durable)   /* one still holding a file stays */
			remove_mark(fd, r[k].mark);
		free(r[k].mark);
		free(r[k].mine);
	}
	free(r);
	spool_entries_free(e, n);
	/* A put-back a restart or a claim could not settle, and jobs of ours a failed move left
	 * here (stranded), are tried again here (adopt_all); so is a reclaim whose mark stayed. */
	if (took || d->putbacks_unsettled || d->stranded.count)
		adopt_all(d, &reclaimed);
	strset_release(&reclaimed);
}

/* The records say the job was published (the result and images are durable in its staging
 * directory, publish.c) but the daemon died before the commit: only the rest is left to do. */
static void complete_publication(struct task *t, const char *finished)
{
	struct dispatch *d = t->d;
	enum spool_dir dest = strcmp(finished, "succeeded") ? SPOOL_FAILED : SPOOL_DONE;
	char err[512];
	/* Its end is decided: the events of it that a dead host queued before it staged the
	 * publication, held since the job was reclaimed, are ours to send once it is out. */
	bool released = t->events_held;
	if (released) {
		char *end = xasprintf("job.%s", finished);
		outbox_release_held(d->outbox, t->id, end);
		t->events_held = false;
		free(end);
	}
	if (publish_commit_staged(d->spool, t->id, t->running_name, dest, err, sizeof(err)) != PUBLISH_OK) {
		if (spool_still_ours(d->spool, t->running_name)) {   /* not committed: adopted again */
			strandlog_say(&d->strandlog, LOG_ERROR, t->id, "cannot finish publishing into "
				"%s/: %s; tried again at the next rescan", spool_dir_name(dest), err);
			strset_add(&d->stranded, t->id);
		} else {
			log_job(LOG_ERROR, t->id, "cannot finish publishing into %s/: %s; tried again "
				"at the next rescan", spool_dir_name(dest), err);
		}
	} else
		log_job(LOG_INFO, t->id, "%s: its publication, cut by a restart, is complete", finished);
	sidecar_drop(t);
	task_free(t);
	if (released)
		outbox_scan(d->outbox);
}

/* The attempt the saved response of t belongs to, 0 if none is ours. */
static long saved_attempt(struct task *t, const struct strset *hidden)
{
	struct stat st;
	long status = sidecar_saved_status(t, hidden);
	char suffix[32];
	xsnprintf(suffix, sizeof(suffix), "response.%ld", status);
	char *name = status ? sidecar_name(t, suffix) : NULL;
	long attempt = name ? sidecar_read(t, name, NULL, &st) : 0;
	free(name);
	return attempt;
}

/* When the call of the saved response for attempt started (its file's mtime), INT64_MAX if
 * none is saved. */
static int64_t saved_response_since(struct task *t, const struct strset *hidden, long attempt)
{
	struct stat st;
	long status = sidecar_saved_status(t, hidden);
	char suffix[32];
	xsnprintf(suffix, sizeof(suffix), "response.%ld", status);
	char *name = status ? sidecar_name(t, suffix) : NULL;
	bool found = name && sidecar_read(t, name, NULL, &st) == attempt;
	free(name);
	return found ? timespec_ms(&st.st_mtim) : INT64_MAX;
}

/* An attempt its host died before counting: recorded, and its cost counted in every host's
 * sight (the ledger). */
static void record_unaccounted(struct task *t, struct attempt *a, enum billed billed,
			       const json_t *usage)
{
	attempt_price(t, a, billed, usage, 0);
	attempt_record(t, a);
	if (billed != BILLED_NO && a->cost_known && provider_state_budgeted(t->prov))
		t->records_after_gen = keyshare_spent(t->d->ks, provider_state_name(t->prov),
						      keyshare_micros(a->cost));
}

#define RECOVERED_WHY "recovered from running/ after a restart"
#define RECLAIMED_WHY "reclaimed from a host whose lease ran out"

static void requeue_recovered(struct task *t)
{
	task_requeue(t, RECOVERED_WHY);
}

static void requeue_reclaimed(struct task *t)
{
	task_requeue(t, RECLAIMED_WHY);
}

/* The call of the next attempt that a death cut (its .partial): recorded as interrupted, maybe
 * billed. Unless its run marked its answer received (answered, sidecar_mark_answered) and its
 * body was not whole: then recorded as the cut records a lost answer, billed by its status
 * (answer_lost). True when that answer was billed: it is never called again. */
static bool record_cut_call(struct task *t, const struct strset *hidden, size_t accounted,
			    const struct sidecar_answered *answered)
{
	struct stat st;
	bool billed_answer = false;
	char *partial = sidecar_name(t, "partial");
	if (strset_has(hidden, partial) && sidecar_read(t, partial, NULL, &st) == (long)accounted + 1) {
		struct attempt a = { .started_wall_ms = t->created_wall_ms, .transport = "interrupted",
				     .outcome = "interrupted", .billed = "unknown", .request_id = "" };
		enum billed billed = BILLED_UNKNOWN;
		if (answered->attempt == (long)accounted + 1) {
			billed = retry_billed_by_status(answered->status);
			a = (struct attempt){ .started_wall_ms = timespec_ms(&st.st_mtim),
					      .transport = "done", .http_status = answered->status,
					      .outcome = billed == BILLED_YES ? "failed" : "retry",
					      .billed = billed_name(billed), .error_code = "response_lost",
					      .request_id = "" };
			billed_answer = billed == BILLED_YES;
		}
		record_unaccounted(t, &a, billed, NULL);
		/* as grace_over() does: the cut call may have been billed */
		t->billed_retries += billed == BILLED_UNKNOWN;
	}
	free(partial);
	return billed_answer;
}

/* A job failed "crashed": every call its files account for is in its attempts, so no money is
 * out of sight. The saved response of the next attempt is not judged (finishing from it may be
 * what killed the daemon): its status alone says whether it was billed
 * (retry_billed_by_status), and it is priced as the job's call, by the usage it carries (only
 * that is read of it). Else a call cut in flight is recorded as interrupted. */
static void record_before_crashed(struct task *t, const struct strset *hidden, const char *prefix,
				  size_t accounted, const struct sidecar_answered *answered)
{
	struct stat st;
	struct buf body = { 0 };
	for (size_t i = 0; i < hidden->cap; i++) {
		const char *name = hidden->slots[i];
		long status;
		if (!name || strncmp(name, prefix, strlen(prefix)) ||
		    parse_long(name + strlen(prefix), 100, 999, &status) < 0 ||
		    sidecar_read(t, name, &body, &st) != (long)accounted + 1) {
			buf_release(&body);
			continue;
		}
		/* Only its usage, which prices a call billed by tokens: a JSON read, nothing else. */
		json_t *root = json_loadb(body.data, body.len, 0, NULL);
		json_t *usage = json_object_get(root, "usage");
		buf_release(&body);
		enum billed billed = retry_billed_by_status(status);
		struct attempt a = { .started_wall_ms = timespec_ms(&st.st_mtim), .transport = "done",
				     .http_status = status, .outcome = "failed", .error_code = "crashed",
				     .billed = billed_name(billed), .request_id = "" };
		record_unaccounted(t, &a, billed, usage ? usage : json_object_get(root, "usageMetadata"));
		json_decref(root);
		return;
	}
	record_cut_call(t, hidden, accounted, answered);
}

/* A job of ours found in running/ at start-up: the run that claimed it died (died; else a
 * job this run left there, stranded, that counts no death). The records in its
 * file say which attempts are accounted for; each sidecar says which attempt it belongs to. A
 * response saved but not yet accounted for finishes the job from the file; one the records already
 * hold (the daemon died while moving the job on) is not applied twice: the move is done again.
 * An unaccounted call in flight is recorded as possibly billed and the job goes back to new/.
 * A job that was running through more than max_crash_requeues deaths fails, so a job that kills
 * the daemon cannot loop. reclaimed: taken over from a dead host by this run (what the log says
 * of it). */
static void adopt(struct dispatch *d, const char *id, const char *running_name,
		  struct strset *hidden, bool died, bool reclaimed)
{
	struct stat st;
	struct job_error jerr;
	struct record rec;
	struct task *t = task_new(d, id);
	int fd = d->spool->fd[SPOOL_RUNNING];
	enum spool_read rr = spool_read_file(fd, running_name, dispatch_job_read_cap(d), &d->readbuf, &st);
	if (rr == SPOOL_READ_GONE) {   /* another host reclaimed it meanwhile */
		strset_del(&d->unread_dead, id);
		log_job(LOG_ERROR, id, "cannot read 'running/%s': %s", running_name, spool_read_reason(rr));
		task_free(t);
		return;
	}
	/* A bad name's claim left what is not a plain file (an earlier release did, or its move
	 * failed): no run of it was ever paid for, and it must not block that bad name. */
	if (rr == SPOOL_READ_NOT_REGULAR && !strncmp(id, "badname-", 8) &&
	    intake_bad_name_aside(d, id, running_name, "left there by a bad name's claim") == 0) {
		strset_del(&d->unread_dead, id);
		task_free(t);
		return;
	}
	if (rr != SPOOL_READ_OK) {
		/* Its run may have been paid for: stranded, so no claim of a later version of the id
		 * renames over it (a plain rename where the file system lacks RENAME_NOREPLACE), and
		 * each rescan reads it again. */
		int err = errno;
		strandlog_say(&d->strandlog, LOG_ERROR, id, "cannot read 'running/%s': %s%s%s; left "
			      "in running/, no claim of its id until a rescan reads it", running_name,
			      spool_read_reason(rr), rr == SPOOL_READ_ERROR ? ": " : "",
			      rr == SPOOL_READ_ERROR ? strerror(err) : "");
		strset_add(&d->stranded, id);
		if (died)
			strset_add(&d->unread_dead, id);
		task_free(t);
		return;
	}
	died |= strset_del(&d->unread_dead, id);
	enum job_parse_result pr = job_parse(&t->job, d->readbuf.data, d->readbuf.len, &d->limits, &jerr);
	t->job_text = xstrndup(d->readbuf.data, d->readbuf.len);
	t->job_len = d->readbuf.len;
	t->created_wall_ms = timespec_ms(&st.st_mtim);
	t->events_held = outbox_holds(d->outbox, id);   /* taken along when it was reclaimed */
	/* A lease well beyond now (more than any error in measuring the file server's clock): a
	 * shutdown left a retry here, its lease running to its due time. */
	if (t->created_wall_ms > spool_server_now(d->spool) + LEFT_LEASE_MARGIN_MS)
		t->defer_floor = t->created_wall_ms;
	task_restore_state(t, &st, &rec);
	task_apply_record(t, &rec);
	long left_mark = sidecar_take_left(t, hidden);
	/* Its answer came whole before a stop its helper did not see through: saved now if its
	 * body is whole (finished from it below), else recorded as lost (record_cut_call). */
	struct sidecar_answered answered;
	sidecar_find_answered(t, hidden, &answered);
	if (answered.attempt)
		sidecar_save_answered(t, hidden, &answered);
	int64_t retry_at_ms = rec.retry_at_ms;
	t->res.status = sidecar_saved_status(t, hidden);   /* what sidecar_drop removes */
	/* Records that say "finished" with nothing staged (a staging directory lost): the job is
	 * finished again from its saved response, else it fails; it is never called again. */
	bool restage = false;
	char why[256];
	enum publish_staged staged = !rec.finished[0] ? PUBLISH_STAGED_NONE :
		publish_staged_state(d->spool, id, strcmp(rec.finished, "succeeded") ? SPOOL_FAILED
				     : SPOOL_DONE, why, sizeof(why));
	if (staged == PUBLISH_STAGED_WHOLE) {
		complete_publication(t, rec.finished);
		record_release(&rec);
		return;
	} else if (staged == PUBLISH_STAGED_BROKEN) {
		log_job(LOG_ERROR, id, "its records say it %s, but its staged publication is broken "
			"(%s): not publishing it, finishing it again from its saved response",
			rec.finished, why);
		restage = true;
	} else if (rec.finished[0]) {
		log_job(LOG_WARN, id, "its records say it %s, but nothing of its publication is "
			"staged: finishing it again from its saved response", rec.finished);
		restage = true;
	}
	t->records_final = rec.finished[0] != '\0';
	record_release(&rec);
	/* A death counts against the job only if a call of its may have been in flight: a .partial
	 * or a response on disk (or a finished record). A job that waited in the ready line made no
	 * call, and must not fail "crashed" without ever being tried. */
	char prefix[JOB_ID_MAX + 100];
	xsnprintf(prefix, sizeof(prefix), ".%s@%s.response.", id, d->spool->host_id);
	char *partial = sidecar_name(t, "partial");
	bool called = died && (restage || strset_has(hidden, partial) ||
			       sidecar_saved_status(t, hidden) != 0);
	free(partial);
	/* Restaging: the final attempt recorded is the saved response's, applied again below. */
	size_t accounted = attempt_count(t) - (restage && json_array_size(t->attempts) > 0);
	/* A publication the death cut may have queued its end's events: records that say finished
	 * did, and so may a pass over the saved response (after its call started). Should the job
	 * now end another way, they are taken back (finish_event). */
	int64_t response_since = saved_response_since(t, hidden, (long)accounted + 1);
	t->cut_events_since_ms = restage ? INT64_MIN : response_since;
	/* Its next step is its saved response: finishing it calls nothing. */
	bool from_response = response_since != INT64_MAX;
	/* Left by a shutdown on purpose, to be finished from its saved response (below), never
	 * called: no death either. */
	bool left = (left_mark && (size_t)left_mark == accounted + 1 &&
		     saved_attempt(t, hidden) == left_mark) ||
		    (answered.attempt && (size_t)answered.attempt == accounted + 1);
	if (called && !t->defer_floor && !left) {   /* a retry left by a shutdown: no death */
		t->crashes++;
		t->finish_crashes += from_response;
	}
	if (pr != JOB_OK) {
		finish_fail(t, "invalid_job", jerr.field, "%s", jerr.message);
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
		finish_fail(t, "invalid_job", "provider", "provider \"%s\" is not configured on this daemon",
			  t->job.provider);
		free(target);
		return;
	}
	task_set_provider(t, prov, model, false);
	free(target);
	/* What it paid for is not dropped for deaths during its calls: with its next step its
	 * saved response, only the deaths while it was finished from one count. They still do, as
	 * the parse, download, upload or publication may be what kills the daemon. */
	int deaths = from_response ? t->finish_crashes : t->crashes;
	if (deaths > d->cfg->max_crash_requeues) {
		if (!restage)   /* restaged: its records hold every attempt already */
			record_before_crashed(t, hidden, prefix, accounted, &answered);
		finish_fail(t, "crashed", NULL, from_response ?
			    "the daemon stopped %d times while this job was finished from its saved "
			    "response; it is not tried again" : "the daemon stopped %d times while this "
			    "job was running; it is not tried again", deaths);
		return;
	}
	/* Count this death in the file first: if finishing the job kills us again, the next start
	 * must see it. */
	char *text = called && !left ? task_job_text(t, retry_at_ms, NULL) : NULL;
	if (text && spool_write_file(d->spool, SPOOL_RUNNING, running_name, text, strlen(text)) < 0)
		log_job(LOG_WARN, id, "cannot record the restart in 'running/%s': %s", running_name,
			strerror(errno));
	free(text);
	crash_point("adopt:counted");

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
				deferral_resume(t, retry_at_ms);
				return;
			}
			task_requeue(t, reclaimed ? RECLAIMED_WHY : RECOVERED_WHY);
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
		attempt_judge_begin(t);
		/* Its ticket went with the restart, its cost is not in the ledger yet: no call under
		 * a budget may start before it is (§17, every call counted, reserved or spent). */
		if (t->judge_budgeted) {
			t->recovered_parse = true;
			provider_state_recovered_parse(d, +1);
		}
		task_pool_submit_batched(t, task_parse_work, task_parse_done);
		return;
	}
	if (restage) {
		finish_fail(t, "publish_failed", NULL, "its records say it finished, but its staged result "
			  "is gone and no saved response is left to finish it from: not called again");
		return;
	}
	if (record_cut_call(t, hidden, accounted, &answered)) {
		finish_fail(t, "response_lost", NULL, "its answer (HTTP %ld, billed) arrived as the "
			    "daemon was stopped, but was not saved whole before the exit; it is not "
			    "called again, since that call would be paid again: imgspool retry runs "
			    "it again", answered.status);
		return;
	}
	/* its cut call in the ledger first */
	attempt_after_ledger(t, reclaimed ? requeue_reclaimed : requeue_recovered);
}

enum recovery_putback recovery_putback_decide(bool ours, bool job_there, bool same_file,
					      bool job_has_files)
{
	if (!job_there)
		return RECOVERY_PUTBACK_DROP;     /* not claimed: the job is still where it was */
	if (same_file && ours)
		return RECOVERY_PUTBACK_INSTALL;  /* claimed, the old run's records still in place */
	/* The claim took a file put there after the read, or what is beside it is not the new run
	 * the daemon wrote (never believed): untouched, as the claim left it, the job file goes
	 * back to be claimed afresh, as when the claim had seen it (a job put back then gets its
	 * new run from that claim). With files of its own beside it, it is no such file: it is
	 * adopted as it is. */
	return job_has_files ? RECOVERY_PUTBACK_DROP : RECOVERY_PUTBACK_RETURN;
}

/* Whether hidden holds a file of running/ID@HOST.json's other than its put-back's. */
static bool job_has_files(const struct dispatch *d, const char *id, const struct strset *hidden)
{
	char *prefix = xasprintf(".%s@%s.", id, d->spool->host_id);
	size_t plen = strlen(prefix);
	bool found = false;
	for (size_t i = 0; i < hidden->cap && !found; i++)
		found = hidden->slots[i] && !strncmp(hidden->slots[i], prefix, plen) &&
			strncmp(hidden->slots[i] + plen, "putback.", 8);
	free(prefix);
	return found;
}

/* The new run of a job put back, written beside it before its claim (intake.c): a kill cut
 * that claim. Put in place of the job file if the claim took the file it was written for, else
 * removed (spool-layout.md §4, §10). Before the jobs are adopted, which then read what is
 * there. False when it could not be settled: it stays, and its job is not adopted before it
 * is (adopted now, the job file would still say the old run finished); the next rescan tries
 * again. */
static bool settle_putback(struct dispatch *d, const char *name, const char *id,
			   enum spool_dir from, uint64_t ino, const struct strset *hidden)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	struct stat st;
	char why[64];
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return true;   /* gone meanwhile */
	const char *not_ours = sidecar_not_ours_why(d, &st, why, sizeof(why));
	char *job = spool_running_name(d->spool, id);
	bool there = fstatat(fd, job, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
	bool has_files = job_has_files(d, id, hidden);
	enum recovery_putback what = recovery_putback_decide(!not_ours, there,
							     there && (uint64_t)st.st_ino == ino,
							     has_files);
	/* Never believed, and said, with what becomes of the job the user put back. */
	if (not_ours)
		log_job(LOG_WARN, id, "ignoring 'running/%s': not a file the daemon wrote (%s); %s",
			name, not_ours, what == RECOVERY_PUTBACK_RETURN ? "its job file goes back to be "
			"claimed afresh, as it is" : there ? "its job is recovered as it is"
			: "its job was not claimed");
	bool settled = true;
	switch (what) {
	case RECOVERY_PUTBACK_INSTALL:
		if (renameat(fd, name, fd, job) < 0) {
			strandlog_say(&d->strandlog, LOG_ERROR, id, "cannot put its new run in place "
				"from 'running/%s': %s; not recovered until it is (tried again at the "
				"next rescan)", name, strerror(errno));
			settled = false;
			break;
		}
		if (fsync(fd) < 0)
			log_job(LOG_WARN, id, "cannot sync running/ after putting its new run in place: %s",
				strerror(errno));
		log_job(LOG_INFO, id, "its claim as a job put back was cut: its new run, written "
			"before the claim, is recorded");
		break;
	case RECOVERY_PUTBACK_RETURN: {
		char *back = xasprintf("%s.json", id);
		struct intake_place went;
		/* Reclaimed with end events its dead host had queued (taken along, held): the
		 * file goes back to wait, and its real end brings its own. */
		outbox_drop_held(d->outbox, id, TASK_WAITS_AGAIN);
		settled = intake_return(d, job, id, from, back, &went, timespec_ms(&st.st_mtim),
					NULL) == 0;
		if (settled)
			log_job(LOG_INFO, id, "back to %s/ (its claim took a file that replaced the one "
				"read%s): claimed again as it is", spool_dir_name(went.dir), went.why);
		else
			strandlog_say(&d->strandlog, LOG_ERROR, id, "cannot move 'running/%s' back "
				"to %s/%s: %s; not recovered until it is (tried again at the next "
				"rescan)", job, spool_dir_name(went.dir), went.name, strerror(errno));
		free(back);
		/* Kept till then: without it, the file left in running/ would be taken for a
		 * job whose run finished, and failed publish_failed. */
		if (settled)
			unlinkat(fd, name, 0);
		break;
	}
	case RECOVERY_PUTBACK_DROP:
		unlinkat(fd, name, 0);
		break;
	}
	free(job);
	return settled;
}

/* Adopts every job of ours in running/ that no task holds, but for one whose put-back could
 * not be settled, or whose reclaim mark stays (stranded again: the next rescan calls this
 * again). The stranded ones this run left count no death; a job whose dead host's files were
 * only taken now does. reclaimed: the ids this run has just taken over (NULL: none), to which
 * finish_reclaims adds those whose files it took. */
static void adopt_all(struct dispatch *d, struct strset *reclaimed)
{
	struct spool_entry *e, *h;
	struct strset hidden, stranded = d->stranded, none;
	char id[JOB_ID_MAX + 1], host[NAME_MAX + 1];
	enum spool_dir from;
	uint64_t ino;
	strset_init(&hidden);
	strset_init(&none);
	if (!reclaimed)
		reclaimed = &none;
	strset_init(&d->stranded);   /* what is not settled below is added again */
	long nh = spool_list_hidden(d->spool, SPOOL_RUNNING, &h);
	/* A reclaimer's marks can come along with the files they took: a few rounds at most. */
	for (int round = 0; round < 8 && finish_reclaims(d, h, nh, &stranded, reclaimed); round++) {
		spool_entries_free(h, nh);
		nh = spool_list_hidden(d->spool, SPOOL_RUNNING, &h);
	}
	for (long i = 0; i < nh; i++)
		strset_add(&hidden, h[i].name);
	bool held_putback = false;   /* one of a job a task holds: settled once the task is done */
	for (long i = 0; i < nh; i++) {
		if (!sidecar_putback_parse(h[i].name, d->spool->host_id, id, &from, &ino) ||
		    strset_has(&d->stranded, id))   /* its reclaim's mark stays: not sent back */
			continue;
		if (strset_has(&d->held, id))
			held_putback = true;
		else if (!settle_putback(d, h[i].name, id, from, ino, &hidden))
			strset_add(&d->stranded, id);
	}
	spool_entries_free(h, nh);
	d->putbacks_unsettled = held_putback;
	long n = spool_list(d->spool, SPOOL_RUNNING, &e);
	note_others(d, e, n);   /* before a job adopted ends, and its events are looked at */
	for (long i = 0; i < n; i++) {
		if (spool_running_id(e[i].name, id, sizeof(id), host, sizeof(host)) &&
		    !strcmp(host, d->spool->host_id) && !strset_has(&d->held, id) &&
		    !strset_has(&d->stranded, id))
			adopt(d, id, e[i].name, &hidden,
			      !strset_has(&stranded, id) || strset_has(reclaimed, id),
			      strset_has(reclaimed, id));
	}
	spool_entries_free(e, n);
	strset_release(&stranded);
	strset_release(&hidden);
	strset_release(&none);
	strandlog_settled(&d->strandlog, &d->stranded);
}

/* The other hosts live on the spool (hostlock's reader), read once per pass when first needed. */
struct live_hosts {
	bool read;
	long n;        /* -1: not known (running/ or a lock could not be read) */
	char **hosts;
};

static bool host_gone(struct dispatch *d, struct live_hosts *lh, const char *host)
{
	if (!lh->read) {
		lh->n = hostlock_live_hosts(d->spool, d->cfg->lease_timeout * 1000, &lh->hosts, NULL);
		lh->read = true;
	}
	for (long i = 0; i < lh->n; i++)
		if (!strcmp(lh->hosts[i], host))
			return false;
	return lh->n >= 0;
}

static void live_hosts_release(struct live_hosts *lh)
{
	for (long i = 0; i < lh->n; i++)
		free(lh->hosts[i]);
	free(lh->hosts);
}

/* Whether from/ holds a file of id (ID.json or ID) that a claim could take. */
static bool job_waiting(const struct dispatch *d, enum spool_dir from, const char *id)
{
	char *json = xasprintf("%s.json", id);
	bool there = spool_exists(d->spool->fd[from], json) || spool_exists(d->spool->fd[from], id);
	free(json);
	return there;
}

/* Another host's put-back file (running/.ID@HOST.putback.D.INO), written before its claim, is
 * that host's to settle. Its host only looks gone (a stalled heartbeat looks like death) while
 * the job it was written for still waits in new/ or deferred/ (D): it may yet claim it, and a
 * kill then would leave the old run's "finished" alone in running/. So it is kept until the
 * job has left (claimed by any host: its claim settles it), looked at before running/ (a claim
 * moves it from there to here in one rename). With no running/ID@HOST.json then (a claimed job
 * takes it along to the host that reclaims it), older than a lease by the file server's clock,
 * and its host gone (its lock says so; never a live host's), the claim never happened and
 * nobody will settle it: the file is removed. */
static void drop_dead_hosts_putback(struct dispatch *d, struct spool_entry *e, const char *id,
				    const char *host, enum spool_dir from, int64_t *now,
				    struct live_hosts *lh)
{
	int fd = d->spool->fd[SPOOL_RUNNING];
	char *job = xasprintf("%s@%s.json", id, host);
	if (!*now)
		*now = spool_server_now(d->spool);
	if (*now > 0 && !job_waiting(d, from, id) && !spool_exists(fd, job) &&
	    spool_entry_stat(d->spool, SPOOL_RUNNING, e) == 0 &&
	    *now - e->mtime_ns / 1000000 > d->cfg->lease_timeout * 1000 && host_gone(d, lh, host) &&
	    unlinkat(fd, e->name, 0) == 0)
		log_job(LOG_INFO, id, "removed 'running/%s': the new run of a job put back, written by "
			"'%s' before a claim that never happened; that host is gone, and the job has "
			"left %s/", e->name, host, spool_dir_name(from));
	free(job);
}

/* host's sidecars whose job is no longer running/ID@HOST.json: ours after a crash, or a dead
 * host's once its publications were finished here, with its temporary files older than a lease
 * by the file server's clock now (ours went before the jobs were adopted; a host that lost its
 * lease may not finish what it was writing, one that is alive may). */
static void drop_orphan_sidecars(struct dispatch *d, const char *host, int64_t now)
{
	bool other = strcmp(host, d->spool->host_id);
	struct spool_entry *h;
	struct live_hosts live = { 0 };
	long nh = spool_list_hidden(d->spool, SPOOL_RUNNING, &h);
	char *host_part = xasprintf("@%s.", host);
	size_t hlen = strlen(host_part);
	struct strset reclaimed;   /* a reclaim under way takes them: never dropped */
	strset_init(&reclaimed);
	note_reclaimed_files(d, h, nh, &reclaimed);
	for (long i = 0; i < nh; i++) {
		const char *name = h[i].name, *at = strstr(name, host_part);
		char id[JOB_ID_MAX + 1];
		enum spool_dir from;
		uint64_t ino;
		if (sidecar_putback_parse(name, host, id, &from, &ino)) {
			/* Ours were settled before the jobs were adopted. */
			if (other && now > 0)
				drop_dead_hosts_putback(d, &h[i], id, host, from, &now, &live);
			continue;
		}
		if (other && spool_is_our_temp(name, host)) {
			/* Another host's file being written is its until its lease ran out. */
			if (now > 0 && spool_entry_stat(d->spool, SPOOL_RUNNING, &h[i]) == 0 &&
			    now - h[i].mtime_ns / 1000000 > d->cfg->lease_timeout * 1000)
				unlinkat(d->spool->fd[SPOOL_RUNNING], name, 0);
			continue;
		}
		if (!at || sidecar_suffix_kind(at + hlen) != SIDECAR_KIND_CALL)
			continue;
		char *job = xasprintf("%.*s@%s.json", (int)(at - name - 1), name + 1, host);
		char *key = xasprintf("%.*s@%s", (int)(at - name - 1), name + 1, host);
		if (!strset_has(&reclaimed, key) && !spool_exists(d->spool->fd[SPOOL_RUNNING], job) &&
		    unlinkat(d->spool->fd[SPOOL_RUNNING], name, 0) < 0 && errno == EISDIR)
			remove_tree(d->spool->fd[SPOOL_RUNNING], name, 3);   /* a reclaim's mark */
		free(key);
		free(job);
	}
	spool_entries_free(h, nh);
	strset_release(&reclaimed);
	free(host_part);
	live_hosts_release(&live);
}

/* A batch's staging directory, running/.~SLOT@HOST.batch-DEST/ (publish.c): ours, left by a
 * crash, at start-up; another host's once its lease ran out, taken over with one rename to a
 * name of ours (which keeps the name of the host whose jobs it holds). Its committed jobs are
 * finished from it; the others' staged files go with their job files (publish_resume_batch).
 * At a rescan, ours are resumed again: what a resume left (taken over, or of a slot no thread
 * of this process uses) and committed jobs no task holds (a resume at start-up that failed). */
static void resume_batch(struct dispatch *d, struct spool_entry *e, bool others, int64_t *now)
{
	char *host;
	int dest;
	if (!publish_parse_batch_name(e->name, &host, &dest))
		return;
	bool ours = !strcmp(host, d->spool->host_id);
	char *mine = NULL, *jobs_host = publish_batch_jobs_host(e->name);
	bool in_use = false;
	if (ours) {
		mine = xstrdup(e->name);
		/* A slot's directory may be a helper thread's at a rescan; a taken one never is. */
		in_use = others && strcmp(jobs_host, d->spool->host_id) == 0;
	} else if (others && spool_entry_stat(d->spool, SPOOL_RUNNING, e) == 0 &&
		   S_ISDIR(e->id.mode)) {
		if (!*now)
			*now = spool_server_now(d->spool);
		int64_t idle_ms = *now - e->mtime_ns / 1000000;
		int fd = d->spool->fd[SPOOL_RUNNING];
		mine = publish_taken_name(d->spool, jobs_host, dest);
		if (idle_ms > d->cfg->lease_timeout * 1000 && renameat(fd, e->name, fd, mine) == 0) {
			log_warn("took over the publications of '%s' staged in 'running/%s' (no "
				 "heartbeat for %" PRId64 " s)", jobs_host, e->name, idle_ms / 1000);
			crash_point("publish:taken");
		} else {
			free(mine);
			mine = NULL;
		}
	}
	if (mine) {
		publish_resume_batch(d->spool, mine, others ? &d->held : NULL, in_use);
		/* A dead host's: its sidecars of the jobs finished here are of no more use. */
		if (strcmp(jobs_host, d->spool->host_id)) {
			if (!*now)
				*now = spool_server_now(d->spool);
			drop_orphan_sidecars(d, jobs_host, *now);
		}
		free(mine);
	}
	free(jobs_host);
	free(host);
}

/* Publications staged in running/.ID@HOST.DEST/ (publish.c): ours, left by a crash, are
 * finished at start-up; another host's, whose lease (the directory's mtime, by the file
 * server's clock) ran out, are taken over with one rename, which the stalled publisher's later
 * renames then fail on, and finished here. The same for batches' directories (resume_batch). */
void recovery_resume_publications(struct dispatch *d, bool others)
{
	struct spool_entry *h;
	/* Names first: a rescan stats only other hosts' staging directories (for their lease),
	 * not the sidecars of every job in flight. */
	long nh = spool_list_names(d->spool, SPOOL_RUNNING, true, &h);
	int fd = d->spool->fd[SPOOL_RUNNING];
	int64_t now = 0;
	struct live_hosts live = { 0 };
	for (long i = 0; i < nh; i++) {
		char *id, *host, err[512];
		int dest;
		char pb_id[JOB_ID_MAX + 1], pb_host[NAME_MAX + 1];
		enum spool_dir pb_from;
		uint64_t pb_ino;
		if (others && sidecar_putback_parse_any(h[i].name, pb_host, pb_id, &pb_from, &pb_ino) &&
		    strcmp(pb_host, d->spool->host_id)) {
			drop_dead_hosts_putback(d, &h[i], pb_id, pb_host, pb_from, &now, &live);
			continue;
		}
		if (h[i].id.mode && !S_ISDIR(h[i].id.mode))
			continue;
		if (publish_is_batch_name(h[i].name)) {
			resume_batch(d, &h[i], others, &now);
			continue;
		}
		if (!publish_parse_staging_name(h[i].name, &id, &host, &dest))
			continue;
		bool ours = !strcmp(host, d->spool->host_id);
		bool held_here = others && strset_has(&d->held, id);   /* a task of ours has it */
		bool look = !ours && !held_here && others;
		if ((look || (ours && !held_here)) &&
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
		} else if (ours && held_here) {
			ours = false;   /* at a rescan, our own are being published by their task */
		}
		if (ours) {
			enum publish_rc rc = publish_resume(d->spool, mine, err, sizeof(err));
			if (rc == PUBLISH_OK) {
				log_job(LOG_INFO, id, "publication finished after a restart or takeover");
			} else {
				log_job(LOG_ERROR, id, "cannot finish its publication: %s", err);
				/* Tried again at the next rescan; ours meanwhile. */
				utimensat(fd, mine, NULL, AT_SYMLINK_NOFOLLOW);
			}
		}
		free(mine);
		free(id);
		free(host);
	}
	spool_entries_free(h, nh);
	live_hosts_release(&live);
}

void recovery_start(struct dispatch *d)
{
	struct spool_entry *h;
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
	recovery_resume_publications(d, false);
	adopt_all(d, NULL);
	/* Sidecars whose job has left running/ (a crash between the move and the clean-up). */
	drop_orphan_sidecars(d, d->spool->host_id, 0);
}

