/* hostlock.c - running/.host.HOST: one daemon per host id on a spool.
 *
 * Made by writing a temporary file and link(2)ing it to the lock's name, which fails if the
 * name exists, on NFS too. An existing lock is judged (hostlock_judge): a live holder makes the
 * start fail with a message that says who holds it; a dead one is replaced by rename(2). Two
 * daemons taking over the same stale lock in the same instant are told apart by reading the
 * lock back: the one whose inode is not there refuses. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostlock.h"
#include "log.h"
#include "spool.h"
#include "util.h"
#include "banned.h"

#define LOCK_MAX_BYTES 4096

static uint64_t our_inode;      /* of the lock we hold; 0: none */
static bool lost_logged;

enum hostlock_verdict hostlock_judge(const struct hostlock_owner *found,
				     const struct hostlock_owner *self, int64_t age_ms,
				     int64_t lease_ms, bool alive)
{
	bool this_boot = found && !strcmp(found->hostname, self->hostname) &&
			 !strcmp(found->boot_id, self->boot_id);
	if (this_boot)
		return alive ? HOSTLOCK_HELD : HOSTLOCK_STALE;
	/* Another machine (two may share a host name), an earlier boot, or a lock we cannot read:
	 * only its heartbeat says whether its holder lives. */
	return age_ms <= lease_ms ? HOSTLOCK_HELD : HOSTLOCK_STALE;
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
	json_t *doc = json_pack("{s:I, s:I, s:s, s:s}", "pid", (json_int_t)o->pid, "start_time",
				(json_int_t)o->start_time, "hostname", o->hostname, "boot_id", o->boot_id);
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
	}
	json_decref(doc);
	return good;
}

static char *lock_name(const struct spool *sp)
{
	return xasprintf(".host.%s", sp->host_id);
}

/* Writes our record to a temporary file in running/; its name goes to tmp. */
static int write_temp(struct spool *sp, const char *text, char *tmp, size_t size)
{
	unsigned rnd = 0;
	(void)!getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK);
	if (spool_temp_name(tmp, size, "host", sp->host_id, (long)getpid(), rnd) < 0)
		return -1;
	int dirfd = sp->fd[SPOOL_RUNNING];
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	int rc = write_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0 ? -1 : 0;
	if (close(fd) < 0)
		rc = -1;
	if (rc < 0)
		unlinkat(dirfd, tmp, 0);
	return rc;
}

static uint64_t inode_of(int dirfd, const char *name)
{
	struct stat st;
	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_ino : 0;
}

int hostlock_acquire(struct spool *sp, int64_t lease_ms, char *err, size_t errsize)
{
	struct hostlock_owner self, found;
	char tmp[NAME_MAX + 1];
	char *name = lock_name(sp), *text = NULL;
	int dirfd = sp->fd[SPOOL_RUNNING], rc = -1;
	self_owner(&self);
	text = owner_json(&self);
	if (write_temp(sp, text, tmp, sizeof(tmp)) < 0) {
		xsnprintf(err, errsize, "cannot write the host lock in '%s/running': %s", sp->path,
			  strerror(errno));
		goto out;
	}
	uint64_t ino = inode_of(dirfd, tmp);
	/* link() fails if the lock exists; a lost NFS reply shows as our inode at the name. */
	if (linkat(dirfd, tmp, dirfd, name, 0) == 0 || inode_of(dirfd, name) == ino) {
		rc = 0;
		goto taken;
	}
	if (errno != EEXIST) {
		xsnprintf(err, errsize, "cannot make the host lock 'running/%s': %s", name, strerror(errno));
		goto drop_temp;
	}
	struct buf b;
	struct stat st;
	buf_init(&b, LOCK_MAX_BYTES);
	enum spool_read rr = spool_read_file(dirfd, name, LOCK_MAX_BYTES, &b, &st);
	bool readable = rr == SPOOL_READ_OK && owner_parse(b.data, b.len, &found);
	buf_release(&b);
	/* Anything but a regular file there was planted: never replaced, the start fails. */
	int64_t age_ms = rr == SPOOL_READ_OK ? spool_server_now(sp) - timespec_ms(&st.st_mtim) : 0;
	bool this_boot = readable && !strcmp(found.hostname, self.hostname) &&
			 !strcmp(found.boot_id, self.boot_id);
	bool alive = this_boot && process_alive(&found);
	if (hostlock_judge(readable ? &found : NULL, &self, age_ms, lease_ms, alive) == HOSTLOCK_HELD) {
		if (readable)
			xsnprintf(err, errsize, "another imgspoold runs with host_id '%s' on this spool "
				  "(pid %ld on host '%s', lock 'running/%s' heartbeated %" PRId64 " s ago): "
				  "give each daemon its own host_id", sp->host_id, found.pid,
				  found.hostname, name, age_ms / 1000);
		else
			xsnprintf(err, errsize, "the host lock 'running/%s' for host_id '%s' exists and "
				  "is not a lock this daemon can read (%s); if no daemon runs with this "
				  "host_id, remove it", name, sp->host_id, spool_read_reason(rr));
		goto drop_temp;
	}
	/* Stale: its holder is dead. Replace it, then read it back: of two daemons doing this at
	 * once, only the one whose file is there goes on. */
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		xsnprintf(err, errsize, "cannot replace the stale host lock 'running/%s': %s", name,
			  strerror(errno));
		goto drop_temp;
	}
	if (inode_of(dirfd, name) != ino) {
		xsnprintf(err, errsize, "another imgspoold with host_id '%s' started at the same moment",
			  sp->host_id);
		goto out;
	}
	log_warn("took over the host lock 'running/%s' of a daemon that is gone (pid %ld on '%s')",
		 name, readable ? found.pid : 0L, readable ? found.hostname : "?");
	rc = 0;
	goto out_ok;
taken:
	unlinkat(dirfd, tmp, 0);
out_ok:
	our_inode = ino;
	lost_logged = false;
	fsync(dirfd);
	goto out;
drop_temp:
	unlinkat(dirfd, tmp, 0);
out:
	free(text);
	free(name);
	return rc;
}

void hostlock_heartbeat(struct spool *sp)
{
	if (!our_inode)
		return;
	char *name = lock_name(sp);
	int dirfd = sp->fd[SPOOL_RUNNING];
	if (inode_of(dirfd, name) != our_inode) {
		if (!lost_logged)
			log_msg(LOG_ERROR, "the host lock 'running/%s' is no longer ours: another daemon "
				"with host_id '%s' took it over; two daemons must never share a host_id",
				name, sp->host_id);
		lost_logged = true;
	} else {
		utimensat(dirfd, name, NULL, AT_SYMLINK_NOFOLLOW);
	}
	free(name);
}

void hostlock_release(struct spool *sp)
{
	if (!our_inode)
		return;
	char *name = lock_name(sp);
	if (inode_of(sp->fd[SPOOL_RUNNING], name) == our_inode)
		unlinkat(sp->fd[SPOOL_RUNNING], name, 0);
	our_inode = 0;
	free(name);
}
