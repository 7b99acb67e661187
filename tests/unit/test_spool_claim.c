/* test_spool_claim.c - a claim's rename (spool_rename_claim) when its target is already there:
 * an EEXIST of RENAME_NOREPLACE is never taken for a lost NFS reply, even when the source is
 * gone by the time it is looked at (another host claimed it). renameat2 is interposed here: the
 * real system call, then what another host does right after it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spool.h"
#include "util.h"
#include "scratch_spool.h"
#include "tap.h"

/* What "another host" does right after the real renameat2. */
enum after {
	AFTER_NOTHING,
	AFTER_SOURCE_CLAIMED,   /* the source renamed away (another host's claim of it) */
	AFTER_REPLY_LOST,       /* the rename happened, its reply lost: ENOENT reported */
};

static enum after after;
static int source_fd = -1;
static const char *source_name, *claimed_by_other;

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
	      unsigned int flags)
{
	long rc = syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
	int err = errno;
	if (after == AFTER_SOURCE_CLAIMED && rc < 0)
		renameat(source_fd, source_name, source_fd, claimed_by_other);
	if (after == AFTER_REPLY_LOST && rc == 0) {
		errno = ENOENT;
		return -1;
	}
	errno = err;
	return (int)rc;
}

static void put(int dirfd, const char *name, const char *text)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ok(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text), "made running/%s",
	   name);
	if (fd >= 0)
		close(fd);
}

static bool holds(int dirfd, const char *name, const char *text)
{
	char buf[64] = "";
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	return n >= 0 && !strcmp(buf, text);
}

static void test_claim_over_ours(void)
{
	const struct {
		const char *what;
		enum after after;
		int want_rc, want_errno;
		const char *want_ours;        /* what running/j@h1.json holds after */
		bool source_left;             /* running/j@dead.json still there */
	} rows[] = {
		{ "EEXIST, the source still there", AFTER_NOTHING, -1, EEXIST, "ours", true },
		{ "EEXIST, the source claimed by another host meanwhile", AFTER_SOURCE_CLAIMED, -1,
		  EEXIST, "ours", false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char dir[PATH_MAX];
		struct spool sp;
		ok(scratch_mkdtemp(dir, sizeof(dir), "spool-claim") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
		int fd = sp.fd[SPOOL_RUNNING];
		put(fd, "j@h1.json", "ours");      /* a job of ours left in running/ */
		put(fd, "j@dead.json", "dead's");  /* a dead host's, to reclaim */
		source_fd = fd;
		source_name = "j@dead.json";
		claimed_by_other = "j@h2.json";
		after = rows[i].after;
		errno = 0;
		int rc = spool_rename_claim(&sp, SPOOL_RUNNING, "j@dead.json", "j@h1.json");
		int err = errno;
		after = AFTER_NOTHING;
		ok(rc == rows[i].want_rc && (rc == 0 || err == rows[i].want_errno),
		   "%s: %d (%s), not a claim", rows[i].what, rc, strerror(err));
		ok(holds(fd, "j@h1.json", rows[i].want_ours), "%s: the job of ours is untouched",
		   rows[i].what);
		ok(spool_exists(fd, "j@dead.json") == rows[i].source_left, "%s: the source %s",
		   rows[i].what, rows[i].source_left ? "stays" : "is the other host's");
		unlinkat(fd, "j@h1.json", 0);
		unlinkat(fd, "j@dead.json", 0);
		unlinkat(fd, "j@h2.json", 0);
		ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
	}
}

/* Any other error of a rename that did happen is still a lost reply: a claim. */
static void test_lost_reply(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "spool-claim") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	int fd = sp.fd[SPOOL_NEW];
	put(fd, "j.json", "job");
	after = AFTER_REPLY_LOST;
	int rc = spool_rename_claim(&sp, SPOOL_NEW, "j.json", "j@h1.json");
	after = AFTER_NOTHING;
	ok(rc == 0, "a rename whose reply was lost (ENOENT, source gone, target there) is a claim");
	ok(holds(sp.fd[SPOOL_RUNNING], "j@h1.json", "job"), "the job is claimed");
	unlinkat(sp.fd[SPOOL_RUNNING], "j@h1.json", 0);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

int main(void)
{
	test_claim_over_ours();
	test_lost_reply();
	return tap_done();
}
