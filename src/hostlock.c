/* hostlock.c - running/.host.HOST: one daemon per host id on a spool.
 *
 * Made by writing a temporary file and link(2)ing it to the lock's name, which fails if the
 * name exists, on NFS too. An existing lock is judged (hostlock_judge): a live holder makes the
 * start fail with a message that says who holds it. A dead one is moved aside to a private name
 * and checked to be the very file judged (else it is linked back: live), then ours is linked;
 * of daemons taking over one stale lock at once, all but one find it moved, changed, or made
 * again (EEXIST), and refuse. Whose a lock is, is told by its content (pid, start time, host
 * name, boot id): through sshfs an inode number follows the name. A heartbeat that finds the
 * lock another daemon's says so, and main.c stops. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostlock.h"
#include "log.h"
#include "spool.h"
#include "util.h"
#include "banned.h"

#define LOCK_MAX_BYTES 4096

static char *our_text;          /* the content of the lock we hold (owned); NULL: none */
static bool io_warned;          /* the lock could not be read (said once until it can) */

static bool same_boot(const struct hostlock_owner *a, const struct hostlock_owner *b)
{
	return !strcmp(a->hostname, b->hostname) && !strcmp(a->boot_id, b->boot_id);
}

enum hostlock_verdict hostlock_judge(const struct hostlock_owner *found,
				     const struct hostlock_owner *self, int64_t age_ms,
				     int64_t lease_ms, bool alive)
{
	if (found && same_boot(found, self))
		return alive ? HOSTLOCK_HELD : HOSTLOCK_STALE;
	/* Another machine (two may share a host name), an earlier boot, or a lock we cannot read:
	 * only its heartbeat says whether its holder lives. */
	return age_ms <= lease_ms ? HOSTLOCK_HELD : HOSTLOCK_STALE;
}

bool hostlock_live(const struct hostlock_owner *found, bool by_daemon,
		   const struct hostlock_owner *self, int64_t age_ms, int64_t lease_ms, bool alive)
{
	return found && by_daemon && hostlock_judge(found, self, age_ms, lease_ms, alive) == HOSTLOCK_HELD;
}

/* Field 22 of /proc/PID/stat, after the command name in parentheses (which may hold spaces). */
static uint64_t process_start_time(long pid)
{
	char path[64], text[1024];
	xsnprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	char *p = strrchr(text, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static bool process_alive(const struct hostlock_owner *o)
{
	if (o->pid <= 0 || (kill((pid_t)o->pid, 0) < 0 && errno != EPERM))
		return false;
	uint64_t start = process_start_time(o->pid);
	return !start || !o->start_time || start == o->start_time;
}

static void read_first_line(const char *path, char *out, size_t size)
{
	out[0] = '\0';
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	if (fgets(out, (int)size, f))
		out[strcspn(out, "\n")] = '\0';
	fclose(f);
}

static void self_owner(struct hostlock_owner *o)
{
	memset(o, 0, sizeof(*o));
	o->pid = (long)getpid();
	o->start_time = process_start_time(o->pid);
	if (gethostname(o->hostname, sizeof(o->hostname) - 1) < 0)
		xsnprintf(o->hostname, sizeof(o->hostname), "?");
	read_first_line("/proc/sys/kernel/random/boot_id", o->boot_id, sizeof(o->boot_id));
}

static char *owner_json(const struct hostlock_owner *o)
{
	json_t *doc = json_pack("{s:I, s:I, s:s, s:s, s:s}", "pid", (json_int_t)o->pid, "start_time",
				(json_int_t)o->start_time, "hostname", o->hostname, "boot_id", o->boot_id,
				"run", o->run);
	char *text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return text;
}

static bool owner_parse(const char *text, size_t len, struct hostlock_owner *o)
{
	json_t *doc = json_loadb(text, len, 0, NULL);
	json_t *host = json_object_get(doc, "hostname"), *boot = json_object_get(doc, "boot_id");
	bool good = json_is_integer(json_object_get(doc, "pid")) && json_is_string(host) &&
		    json_is_string(boot);
	if (good) {
		memset(o, 0, sizeof(*o));
		o->pid = (long)json_integer_value(json_object_get(doc, "pid"));
		o->start_time = (uint64_t)json_integer_value(json_object_get(doc, "start_time"));
		xsnprintf(o->hostname, sizeof(o->hostname), "%s", json_string_value(host));
		xsnprintf(o->boot_id, sizeof(o->boot_id), "%s", json_string_value(boot));
		const char *run = json_string_value(json_object_get(doc, "run"));
		xsnprintf(o->run, sizeof(o->run), "%s", run ? run : "");
	}
	json_decref(doc);
	return good;
}

#define LOCK_PREFIX ".host."

static char *lock_name(const struct spool *sp)
{
	return xasprintf(LOCK_PREFIX "%s", sp->host_id);
}

bool hostlock_name_host(const char *name, char *host, size_t size)
{
	const size_t pre = strlen(LOCK_PREFIX);
	size_t len = strlen(name);
	if (strncmp(name, LOCK_PREFIX, pre) || len == pre || len - pre >= size)
		return false;
	const char *end = name + len;
	if (len > 4 && !strcmp(end - 4, ".tmp")) {
		/* ".RANDOM.tmp" (spool_write_temp): 8 hex digits, after ".PID": digits */
		const char *rnd = end - 4 - 9, *p;
		if (rnd > name + pre && *rnd == '.' && strspn(rnd + 1, "0123456789abcdef") == 8) {
			for (p = rnd - 1; p > name + pre && *p >= '0' && *p <= '9'; p--)
				;
			if (*p == '.' && p < rnd - 1 && p > name + pre)
				return false;
		}
	}
	memcpy(host, name + pre, len - pre);
	host[len - pre] = '\0';
	return true;
}

/* Writes our record to a temporary file in running/; its name goes to tmp. */
static int write_temp(struct spool *sp, const char *text, char *tmp)
{
	return spool_write_temp(sp, sp->fd[SPOOL_RUNNING], "host", text, strlen(text), tmp);
}

static uint64_t inode_of(int dirfd, const char *name)
{
	struct stat st;
	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_ino : 0;
}

/* link(2)s the temporary file tmp (inode ino) to the lock's name: fails with EEXIST if a lock is
 * there. A lost NFS reply (the retransmission fails) shows as our inode at the name. */
static int link_lock(int dirfd, const char *tmp, uint64_t ino, const char *name)
{
	if (linkat(dirfd, tmp, dirfd, name, 0) == 0)
		return 0;
	int e = errno;
	if (ino && inode_of(dirfd, name) == ino)
		return 0;
	errno = e;
	return -1;
}

/* A lock as read: what tells the file judged from any other put at its name since. The content
 * counts too: through sshfs an inode number follows the name, not the file. */
struct lock_seen {
	enum spool_read rr;
	struct stat st;
	struct buf text;
};

/* Two links are a lock too, judged by its content and age like one: a kill between the link of
 * our temporary file to the lock's name and its unlink leaves them (so does a lock put back by
 * take_over, for a moment). Only daemons write in running/. */
static void lock_read(int dirfd, const char *name, struct lock_seen *seen)
{
	buf_init(&seen->text, LOCK_MAX_BYTES);
	seen->rr = spool_read_linked(dirfd, name, LOCK_MAX_BYTES, 2, &seen->text, &seen->st);
}

/* Whether a lock (name, host's) is a live daemon's: read and judged as a start would judge it,
 * and written by the daemon's user. -1 with errno when it cannot be read (an I/O error): that
 * says nothing of its host. */
static int lock_live(struct spool *sp, const char *name, const struct hostlock_owner *self,
		     int64_t now, int64_t lease_ms, struct hostlock_owner *found_out)
{
	struct lock_seen seen;
	struct hostlock_owner found = { 0 };
	lock_read(sp->fd[SPOOL_RUNNING], name, &seen);
	int rc = -1, err = errno;
	if (seen.rr != SPOOL_READ_ERROR) {
		bool read = seen.rr == SPOOL_READ_OK;
		bool readable = read && owner_parse(seen.text.data, seen.text.len, &found);
		bool alive = readable && same_boot(&found, self) && process_alive(&found);
		rc = hostlock_live(readable ? &found : NULL, read && spool_written_by_daemon(sp, &seen.st),
				   self, read ? now - timespec_ms(&seen.st.st_mtim) : 0, lease_ms, alive);
	}
	*found_out = found;
	buf_release(&seen.text);
	errno = err;
	return rc;
}

static void free_names(char **names)
{
	for (size_t i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

long hostlock_live_hosts(struct spool *sp, int64_t lease_ms, char ***hosts, char ***runs)
{
	struct spool_entry *l;
	long n = spool_list_names(sp, SPOOL_RUNNING, true, &l), live = 0;
	if (n < 0)
		return -1;
	*hosts = xcalloc((size_t)n + 1, sizeof(**hosts));
	if (runs)
		*runs = xcalloc((size_t)n + 1, sizeof(**runs));
	struct hostlock_owner self;
	self_owner(&self);
	int64_t now = spool_server_now(sp);
	for (long i = 0; i < n && live >= 0; i++) {
		char host[NAME_MAX + 1];
		if (!hostlock_name_host(l[i].name, host, sizeof(host)) || !strcmp(host, sp->host_id))
			continue;
		struct hostlock_owner found;
		int rc = lock_live(sp, l[i].name, &self, now, lease_ms, &found);
		if (rc > 0 && runs)
			(*runs)[live] = xstrdup(found.run);
		if (rc > 0)
			(*hosts)[live++] = xstrdup(host);
		else if (rc < 0)
			live = -1;
	}
	int err = errno;
	spool_entries_free(l, n);
	if (live < 0) {
		free_names(*hosts);
		*hosts = NULL;
		if (runs) {
			free_names(*runs);
			*runs = NULL;
		}
		errno = err;
	}
	return live;
}

bool hostlock_names_run(struct spool *sp)
{
	struct lock_seen seen;
	struct hostlock_owner found;
	char *name = lock_name(sp);
	lock_read(sp->fd[SPOOL_RUNNING], name, &seen);
	bool ours = seen.rr == SPOOL_READ_OK && owner_parse(seen.text.data, seen.text.len, &found) &&
		    !strcmp(found.run, sp->run);
	buf_release(&seen.text);
	free(name);
	return ours;
}

static bool lock_same(const struct lock_seen *a, const struct lock_seen *b)
{
	return a->rr == SPOOL_READ_OK && b->rr == SPOOL_READ_OK && a->st.st_dev == b->st.st_dev &&
	       a->st.st_ino == b->st.st_ino && a->st.st_size == b->st.st_size &&
	       timespec_ns(&a->st.st_mtim) == timespec_ns(&b->st.st_mtim) &&
	       a->text.len == b->text.len &&
	       (!a->text.len || !memcmp(a->text.data, b->text.data, a->text.len));
}

/* Whether a lock read is the one we hold. Through sshfs an inode number follows the name, not
 * the file: what was written tells (pid, its start time, host name and boot id are ours alone). */
static bool is_ours(const struct lock_seen *seen)
{
	return our_text && seen->rr == SPOOL_READ_OK && seen->text.len == strlen(our_text) &&
	       !memcmp(seen->text.data, our_text, seen->text.len);
}

enum takeover { TAKEN, LIVE, GONE, FAILED };

/* Replaces the stale lock judged (seen) by ours (tmp). It is moved aside first, to a name of our
 * own: of several daemons doing this at once only one moves it, and what it moved is checked to
 * be the very lock judged (a lock made or heartbeated since is live and put back). Then ours is
 * linked, which fails if another daemon made a lock at the free name in between. */
static enum takeover take_over(int dirfd, const char *name, const char *tmp, uint64_t ino,
			       const char *aside, const struct lock_seen *seen, char *err,
			       size_t errsize)
{
	struct lock_seen moved;
	enum takeover rc;
	if (renameat(dirfd, name, dirfd, aside) < 0) {
		int e = errno;
		bool gone = e == ENOENT || e == ESTALE;
		/* NFS may lose the reply to a rename that worked: our private name then exists. */
		if (!gone || !inode_of(dirfd, aside)) {
			if (gone)
				return GONE;   /* another daemon moved it first: look again */
			xsnprintf(err, errsize, "cannot move the stale host lock 'running/%s' aside: %s",
				  name, strerror(e));
			return FAILED;
		}
	}
	stop_point("hostlock:aside");
	lock_read(dirfd, aside, &moved);
	if (!lock_same(&moved, seen)) {
		/* Not the lock judged: another daemon's, made or heartbeated meanwhile. */
		if (linkat(dirfd, aside, dirfd, name, 0) < 0 && errno != EEXIST)
			log_warn("cannot put the host lock 'running/%s' back from 'running/%s': %s", name,
				 aside, strerror(errno));
		rc = LIVE;
	} else {
		if (link_lock(dirfd, tmp, ino, name) == 0) {
			rc = TAKEN;
		} else if (errno == EEXIST) {
			rc = LIVE;             /* another daemon made its lock at the free name */
		} else {
			xsnprintf(err, errsize, "cannot make the host lock 'running/%s': %s", name,
				  strerror(errno));
			rc = FAILED;
		}
	}
	unlinkat(dirfd, aside, 0);
	buf_release(&moved.text);
	return rc;
}

#define LOCK_TRIES 5   /* a lock that changes under us this often: give up and say so */

int hostlock_acquire(struct spool *sp, int64_t lease_ms, char *err, size_t errsize)
{
	struct hostlock_owner self, found;
	char tmp[NAME_MAX + 1], aside[NAME_MAX + 1];
	char *name = lock_name(sp), *text = NULL;
	int dirfd = sp->fd[SPOOL_RUNNING], rc = -1;
	struct lock_seen seen = { 0 };
	self_owner(&self);
	xsnprintf(self.run, sizeof(self.run), "%s", sp->run);
	text = owner_json(&self);
	if (write_temp(sp, text, tmp) < 0) {
		xsnprintf(err, errsize, "cannot write the host lock in '%s/running': %s", sp->path,
			  strerror(errno));
		goto out;
	}
	unsigned seq;
	long pid = spool_temp_unique(&seq);
	if (spool_temp_name(aside, sizeof(aside), "host-stale", sp->host_id, pid, seq) < 0) {
		xsnprintf(err, errsize, "host_id '%s' is too long", sp->host_id);
		goto drop_temp;
	}
	uint64_t ino = inode_of(dirfd, tmp);
	for (int tries = 0;; tries++) {
		if (tries == LOCK_TRIES) {
			xsnprintf(err, errsize, "the host lock 'running/%s' keeps changing: other daemons "
				  "with host_id '%s' are starting; give each daemon its own host_id", name,
				  sp->host_id);
			goto drop_temp;
		}
		if (link_lock(dirfd, tmp, ino, name) == 0)
			goto taken;
		if (errno != EEXIST) {
			xsnprintf(err, errsize, "cannot make the host lock 'running/%s': %s", name,
				  strerror(errno));
			goto drop_temp;
		}
		stop_point("hostlock:exists");
		buf_release(&seen.text);
		lock_read(dirfd, name, &seen);
		if (seen.rr == SPOOL_READ_GONE)
			continue;   /* removed since our link failed (its holder stopped): again */
		bool readable = seen.rr == SPOOL_READ_OK && owner_parse(seen.text.data, seen.text.len, &found);
		/* Anything but a regular file there was planted: never replaced, the start fails. */
		int64_t age_ms = seen.rr == SPOOL_READ_OK ?
				 spool_server_now(sp) - timespec_ms(&seen.st.st_mtim) : 0;
		bool alive = readable && same_boot(&found, &self) && process_alive(&found);
		if (hostlock_judge(readable ? &found : NULL, &self, age_ms, lease_ms, alive) == HOSTLOCK_HELD) {
			if (readable)
				xsnprintf(err, errsize, "another imgspoold runs with host_id '%s' on this "
					  "spool (pid %ld on host '%s', lock 'running/%s' heartbeated %" PRId64
					  " s ago): give each daemon its own host_id", sp->host_id, found.pid,
					  found.hostname, name, age_ms / 1000);
			else
				xsnprintf(err, errsize, "the host lock 'running/%s' for host_id '%s' exists "
					  "and is not a lock this daemon can read (%s); if no daemon runs with "
					  "this host_id, remove it", name, sp->host_id,
					  spool_read_reason(seen.rr));
			goto drop_temp;
		}
		stop_point("hostlock:stale");
		switch (take_over(dirfd, name, tmp, ino, aside, &seen, err, errsize)) {
		case TAKEN:
			log_warn("took over the host lock 'running/%s' of a daemon that is gone (pid %ld "
				 "on '%s')", name, readable ? found.pid : 0L, readable ? found.hostname : "?");
			goto taken;
		case LIVE:
			xsnprintf(err, errsize, "another imgspoold with host_id '%s' took the host lock "
				  "'running/%s' over at the same moment: give each daemon its own host_id",
				  sp->host_id, name);
			goto drop_temp;
		case GONE:
			continue;
		case FAILED:
			goto drop_temp;
		}
	}
taken:
	rc = 0;
	free(our_text);
	our_text = text;
	text = NULL;
	/* A kill before this unlink leaves the lock with two links: a later start judges it all
	 * the same (lock_read), and recovery removes the temporary name. */
	stop_point("hostlock:linked");
	unlinkat(dirfd, tmp, 0);
	fsync(dirfd);
	stop_point("hostlock:taken");
	goto out;
drop_temp:
	unlinkat(dirfd, tmp, 0);
out:
	buf_release(&seen.text);
	free(text);
	free(name);
	return rc;
}

/* Makes the lock again after it vanished (removed by hand): only if nobody else made one. */
static int remake(struct spool *sp, const char *name)
{
	char tmp[NAME_MAX + 1];
	int dirfd = sp->fd[SPOOL_RUNNING];
	if (write_temp(sp, our_text, tmp) < 0)
		return -1;
	int rc = link_lock(dirfd, tmp, inode_of(dirfd, tmp), name);
	unlinkat(dirfd, tmp, 0);
	return rc;
}

int hostlock_heartbeat(struct spool *sp, char *err, size_t errsize)
{
	if (!our_text)
		return 0;
	char *name = lock_name(sp);
	int dirfd = sp->fd[SPOOL_RUNNING], rc = 0;
	struct hostlock_owner found;
	struct lock_seen seen;
	lock_read(dirfd, name, &seen);
	if (seen.rr == SPOOL_READ_GONE && remake(sp, name) == 0) {
		log_warn("the host lock 'running/%s' had been removed: made again", name);
		goto out;
	}
	if (seen.rr == SPOOL_READ_GONE) {
		buf_release(&seen.text);
		lock_read(dirfd, name, &seen);   /* another daemon made it first */
	}
	/* A file server's hiccup, a lock removed that could not be made again (a full disk), or
	 * more links than a lock ever has say nothing of who holds it: look again next time. */
	if (seen.rr == SPOOL_READ_ERROR || seen.rr == SPOOL_READ_GONE ||
	    seen.rr == SPOOL_READ_LINKED) {
		if (!io_warned)
			log_warn("cannot read the host lock 'running/%s': %s", name,
				 seen.rr == SPOOL_READ_ERROR ? strerror(errno) : spool_read_reason(seen.rr));
		io_warned = true;
		goto out;
	}
	if (is_ours(&seen)) {
		io_warned = false;
		utimensat(dirfd, name, NULL, AT_SYMLINK_NOFOLLOW);
		goto out;
	}
	char who[400];
	if (seen.rr == SPOOL_READ_OK && owner_parse(seen.text.data, seen.text.len, &found))
		xsnprintf(who, sizeof(who), "another imgspoold (pid %ld on host '%s') holds it now",
			  found.pid, found.hostname);
	else
		xsnprintf(who, sizeof(who), "another file is there (%s)",
			  seen.rr == SPOOL_READ_OK ? "not a lock" : spool_read_reason(seen.rr));
	xsnprintf(err, errsize, "the host lock 'running/%s' of host_id '%s' is no longer ours: %s; "
		  "stopping at once, leaving the spool to it (two daemons must never share a host_id)",
		  name, sp->host_id, who);
	rc = -1;
out:
	buf_release(&seen.text);
	free(name);
	return rc;
}

/* Removes the lock if it is still ours: a read and an unlink of running/. At the exit, on the
 * thread the exit waits for by its deadline (main.c): on a stalled NFS that thread is left and
 * the lock with it, as a crash leaves it; the restart replaces it once this process is gone. */
void hostlock_release(struct spool *sp)
{
	if (!our_text)
		return;
	struct lock_seen seen;
	char *name = lock_name(sp);
	stop_point("hostlock:release");   /* a test holds the thread here: a stalled disk */
	lock_read(sp->fd[SPOOL_RUNNING], name, &seen);
	if (is_ours(&seen))
		unlinkat(sp->fd[SPOOL_RUNNING], name, 0);
	buf_release(&seen.text);
	free(our_text);
	our_text = NULL;
	free(name);
}
