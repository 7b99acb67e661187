/* test_outbox.c - an outbox entry's name is never durable before its bytes: even where a
 * batch's barrier is one syncfs (sync = syncfs, or sync = auto and a batch of two jobs or more),
 * each entry's bytes are synced before its rename, because the journal may commit the rename
 * before the barrier, and after a crash the entry would be empty. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outbox.h"
#include "spool.h"
#include "syncset.h"
#include "util.h"
#include "scratch_spool.h"
#include "tap.h"

static void test_bytes_before_name(bool names_in_order)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "outbox") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	struct outbox_entry *e = xcalloc(2, sizeof(*e));
	e[0] = (struct outbox_entry){ xstrdup("m1.webhook@h1.json"), xstrdup("{\"target\":\"webhook\"}") };
	e[1] = (struct outbox_entry){ xstrdup("m1.exec@h1.json"), xstrdup("{\"target\":\"exec\"}") };
	struct outbox_batch b = { e, 2 };
	struct syncset ss;
	syncset_init(&ss, sp.root_fd, true);   /* its barrier is one syncfs */
	ss.names_in_order = names_in_order;
	ok(outbox_write_in(&sp, &b, &ss) == 0, "two entries written (%s)",
	   names_in_order ? "journaled ext4, sync = auto" : "sync = syncfs");
	ok(ss.calls == 2, "each entry's bytes were synced before its rename, not left to the "
	   "barrier (%lu syncs)", ss.calls);
	struct stat st;
	ok(fstatat(sp.fd[SPOOL_OUTBOX], e[0].name, &st, 0) == 0 && st.st_size == 20 &&
	   fstatat(sp.fd[SPOOL_OUTBOX], e[1].name, &st, 0) == 0, "both are in outbox/");
	ok(syncset_barrier(&ss) == 0, "the barrier");
	syncset_release(&ss);
	outbox_withdraw(&sp, &b);
	outbox_batch_release(&b);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

int main(void)
{
	test_bytes_before_name(false);
	test_bytes_before_name(true);
	return tap_done();
}
