/* test_spool_rewrite.c - spool_rewrite_file replaces a job file that is there and never
 * recreates one another daemon took away (the fence of a publication). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"
#include "util.h"
#include "scratch_spool.h"
#include "tap.h"

static char *slurp(int dirfd, const char *name)
{
	char buf[256];
	int fd = openat(dirfd, name, O_RDONLY);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return xstrdup(buf);
}

int main(void)
{
	char dir[PATH_MAX];
	if (!scratch_mkdtemp(dir, sizeof(dir), "rewrite"))
		return 1;
	char *root = xasprintf("%s/spool", dir);
	struct spool sp;
	ok(spool_open(&sp, root, "h1") == 0, "a spool");
	int fd = sp.fd[SPOOL_RUNNING];
	ok(spool_write_file(&sp, SPOOL_RUNNING, "a@h1.json", "old", 3) == 0, "written");
	ok(spool_rewrite_file(&sp, SPOOL_RUNNING, "a@h1.json", "new", 3) == 0, "rewritten");
	char *got = slurp(fd, "a@h1.json");
	is_str(got, "new", "the new content is in place");
	free(got);
	errno = 0;
	ok(spool_rewrite_file(&sp, SPOOL_RUNNING, "gone@h1.json", "x", 1) < 0 && errno == ENOENT,
	   "a job file that is gone is not recreated (ENOENT)");
	got = slurp(fd, "gone@h1.json");
	ok(!got, "and nothing was created");
	free(got);
	struct spool_entry *h;
	long nh = spool_list_hidden(&sp, SPOOL_RUNNING, &h);
	ok(nh == 0, "no temporary file is left behind (%ld)", nh);
	spool_entries_free(h, nh);
	unlinkat(fd, "a@h1.json", 0);
	ok(scratch_spool_remove(&sp, root) == 0, "the scratch spool removed");
	rmdir(dir);
	free(root);
	return tap_done();
}
