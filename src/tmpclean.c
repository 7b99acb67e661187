/* tmpclean.c - tmp/'s clean-up, a slice at a time on an I/O helper (tmpclean.h).
 *
 * A pass holds its own descriptor of tmp/ (a rescan may swap the spool's) and reads it with
 * getdents64 into a buffer of its own, so a slice picks up where the last one stopped and
 * nothing of the listing is kept between slices but that buffer. A name gone before its stat
 * or its unlink was someone else's to take; a directory is left (unlinkat without AT_REMOVEDIR).
 * A listing that fails ends the pass, logged; the next pass is an hour later. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dispatch_impl.h"
#include "iopool.h"
#include "log.h"
#include "spool.h"
#include "tmpclean.h"
#include "util.h"
#include "banned.h"

#define TMP_MAX_AGE_S (36 * 3600)    /* maildir's rule for abandoned files in tmp/ */
#define TMPCLEAN_EVERY_MS (3600 * 1000)
#define TMPCLEAN_SLICE 256           /* names stat'ed a slice: 0.3 s over sshfs */

struct tmpclean {
	struct dispatch *d;
	int fd;                  /* owned: tmp/ as this pass found it */
	int64_t limit_ns;        /* what was last modified before this goes */
	_Alignas(struct dirent64) char buf[32768];
	ssize_t got, off;        /* buf[off..got) is still to be looked at */
	bool end;
	int err;                 /* the listing's errno, when it failed */
};

/* On a helper: up to TMPCLEAN_SLICE names of tmp/, each stat'ed and removed when old. */
static void slice_work(void *arg)
{
	struct tmpclean *c = arg;
	for (int n = 0; n < TMPCLEAN_SLICE && !c->end;) {
		if (c->off >= c->got) {
			c->got = getdents64(c->fd, c->buf, sizeof(c->buf));
			c->off = 0;
			c->err = c->got < 0 ? errno : 0;
			c->end = c->got <= 0;
			continue;
		}
		const struct dirent64 *de = (const struct dirent64 *)(c->buf + c->off);
		c->off += de->d_reclen;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		n++;
		struct stat st;
		if (fstatat(c->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    timespec_ns(&st.st_mtim) < c->limit_ns && unlinkat(c->fd, de->d_name, 0) == 0)
			log_info("removed 'tmp/%s': left unfinished for more than %d hours", de->d_name,
				 TMP_MAX_AGE_S / 3600);
	}
}

/* On the loop: the next slice, unless the pass is over or the daemon is stopping. */
static void slice_done(void *arg)
{
	struct tmpclean *c = arg;
	struct dispatch *d = c->d;
	if (!c->end && !d->draining) {
		iopool_submit(d->pool, slice_work, slice_done, c);
		return;
	}
	if (c->err)
		log_warn("cannot read '%s/tmp' to remove what clients left there: %s", d->spool->path,
			 strerror(c->err));
	close(c->fd);
	d->tmp_clean = NULL;
	free(c);
}

void tmpclean_start(struct dispatch *d)
{
	if (d->tmp_clean || d->draining ||
	    (d->tmp_cleaned && mono_ms() - d->tmp_cleaned < TMPCLEAN_EVERY_MS))
		return;
	d->tmp_cleaned = mono_ms();
	int fd = openat(d->spool->fd[SPOOL_TMP], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		log_warn("cannot open '%s/tmp' to remove what clients left there: %s", d->spool->path,
			 strerror(errno));
		return;
	}
	struct tmpclean *c = xcalloc(1, sizeof(*c));
	c->d = d;
	c->fd = fd;
	c->limit_ns = (spool_server_now(d->spool) / 1000 - TMP_MAX_AGE_S) * 1000000000;
	d->tmp_clean = c;
	iopool_submit(d->pool, slice_work, slice_done, c);
}
