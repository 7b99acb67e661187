/* test_syncset.c - how a batch of jobs is made durable: one syncfs per barrier only on a local
 * disk file system and for a batch large enough, else each file and each directory once; the
 * [spool] sync values; that a barrier syncs each directory once however often it was named;
 * and that a barrier between name changes alone is left to ext4's journal only where it has
 * one, with sync = auto, and never after a file was written. */
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <unistd.h>

#include "syncset.h"
#include "scratch_spool.h"
#include "tap.h"

#define NFS 0x6969L
#define FUSE 0x65735546L
#define XFS 0x58465342L

struct row {
	const char *name;
	enum sync_mode mode;
	long fs;
	size_t jobs;
	bool whole_fs;
};

static const struct row rows[] = {
	{ "auto, ext4, one job: each file", SYNC_AUTO, EXT4_SUPER_MAGIC, 1, false },
	{ "auto, ext4, two jobs: syncfs", SYNC_AUTO, EXT4_SUPER_MAGIC, 2, true },
	{ "auto, xfs, 64 jobs: syncfs", SYNC_AUTO, XFS, 64, true },
	{ "auto, btrfs, 8 jobs: syncfs", SYNC_AUTO, BTRFS_SUPER_MAGIC, 8, true },
	{ "auto, tmpfs, 8 jobs: syncfs", SYNC_AUTO, TMPFS_MAGIC, 8, true },
	{ "auto, NFS, 64 jobs: each file (syncfs is no barrier there)", SYNC_AUTO, NFS, 64, false },
	{ "auto, FUSE (sshfs), 64 jobs: each file", SYNC_AUTO, FUSE, 64, false },
	{ "auto, an unknown file system: each file", SYNC_AUTO, 0x12345678L, 64, false },
	{ "fsync, ext4, 64 jobs: each file", SYNC_FILES, EXT4_SUPER_MAGIC, 64, false },
	{ "syncfs, ext4, one job: syncfs", SYNC_FS, EXT4_SUPER_MAGIC, 1, true },
	{ "syncfs, NFS: still each file", SYNC_FS, NFS, 64, false },
	{ "syncfs, FUSE: still each file", SYNC_FS, FUSE, 1, false },
	{ "a sign-extended f_type still matches", SYNC_AUTO, (long)(int)XFS, 4, true },
};

struct order_row {
	const char *name;
	enum sync_mode mode;
	long fs;
	bool journal;
	bool in_order;
};

static const struct order_row order_rows[] = {
	{ "auto, ext4 with a journal: the journal keeps names in order", SYNC_AUTO,
	  EXT4_SUPER_MAGIC, true, true },
	{ "auto, ext4 without a journal: every barrier syncs", SYNC_AUTO, EXT4_SUPER_MAGIC, false,
	  false },
	{ "fsync, ext4 with a journal: every barrier syncs, as asked", SYNC_FILES, EXT4_SUPER_MAGIC,
	  true, false },
	{ "syncfs, ext4 with a journal: every barrier syncs, as asked", SYNC_FS, EXT4_SUPER_MAGIC,
	  true, false },
	{ "auto, xfs: every barrier syncs", SYNC_AUTO, XFS, true, false },
	{ "auto, tmpfs: every barrier syncs", SYNC_AUTO, TMPFS_MAGIC, true, false },
	{ "auto, NFS: every barrier syncs", SYNC_AUTO, NFS, true, false },
	{ "a sign-extended f_type still matches", SYNC_AUTO, (long)(int)EXT4_SUPER_MAGIC, true, true },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(order_rows) / sizeof(order_rows[0]); i++) {
		const struct order_row *r = &order_rows[i];
		ok(sync_names_in_order(r->mode, r->fs, r->journal) == r->in_order, "%s", r->name);
	}

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		ok(sync_whole_fs(r->mode, r->fs, r->jobs) == r->whole_fs, "%s", r->name);
	}

	enum sync_mode m = SYNC_FILES;
	ok(sync_mode_parse("auto", &m) == 0 && m == SYNC_AUTO, "sync = auto");
	ok(sync_mode_parse("fsync", &m) == 0 && m == SYNC_FILES, "sync = fsync");
	ok(sync_mode_parse("syncfs", &m) == 0 && m == SYNC_FS, "sync = syncfs");
	ok(sync_mode_parse("fdatasync", &m) < 0 && sync_mode_parse("", &m) < 0 &&
	   sync_mode_parse(NULL, &m) < 0, "anything else is refused");

	/* Each file by itself, then each directory once per barrier. */
	int a = open(".", O_RDONLY | O_DIRECTORY), b = open("/", O_RDONLY | O_DIRECTORY);
	ok(a >= 0 && b >= 0, "two directories");
	struct syncset s;
	syncset_init(&s, a, false);
	ok(syncset_each_file(&s), "file by file: each file is fsynced as it is written");
	ok(syncset_file(&s, a) == 0 && s.calls == 1, "a file: one fsync");
	for (int i = 0; i < 5; i++) {
		syncset_dir(&s, a);
		syncset_dir(&s, b);
	}
	ok(s.n_dirs == 2, "a directory named five times is synced once");
	ok(syncset_barrier(&s) == 0 && s.calls == 3 && s.n_dirs == 0, "the barrier: one fsync each");
	ok(syncset_barrier(&s) == 0 && s.calls == 3, "an empty barrier syncs nothing");
	syncset_release(&s);

	syncset_init(&s, a, true);
	ok(!syncset_each_file(&s), "whole file system: files are not fsynced one by one");
	ok(syncset_file(&s, a) == 0 && s.calls == 0, "a file: nothing");
	syncset_dir(&s, a);
	syncset_dir(&s, b);
	ok(syncset_barrier(&s) == 0 && s.calls == 1, "the barrier: one syncfs for everything");
	syncset_release(&s);

	syncset_init(&s, -1, true);
	ok(syncset_barrier(&s) < 0, "a failed syncfs fails the barrier");
	syncset_release(&s);

	/* Barriers that only keep name changes in order. */
	syncset_init(&s, a, true);
	ok(syncset_order(&s) == 0 && s.calls == 1, "without a journal's order: a full barrier");
	s.names_in_order = true;
	syncset_dir(&s, a);
	ok(syncset_order(&s) == 0 && s.calls == 1, "names only, in order: no sync");
	ok(syncset_file(&s, a) == 0 && syncset_order(&s) == 0 && s.calls == 2,
	   "a file written since the last barrier: its bytes are synced");
	ok(syncset_order(&s) == 0 && s.calls == 2, "and after that barrier names only again: none");
	syncset_release(&s);

	/* A file's bytes before a name change (a saved response before its rename). */
	char path[PATH_MAX];
	int f = scratch_mkstemp(path, sizeof(path), "syncset");
	ok(f >= 0 && write(f, "response", 8) == 8, "a file written");
	unlink(path);
	syncset_init(&s, a, true);
	ok(syncset_data(&s, f, true) == 0 && s.calls == 0 && syncset_order(&s) == 0 &&
	   s.calls == 1, "without a journal's order: its bytes go with a full barrier");
	s.names_in_order = true;
	ok(syncset_data(&s, f, true) == 0 && s.n_data == 1 && syncset_order(&s) == 0 &&
	   s.n_data == 0 && s.calls == 2, "in order: its writeback is started, then waited for, "
	   "no barrier");
	ok(syncset_data(&s, f, false) == 0 && s.n_data == 0 && s.calls == 3,
	   "a file not kept open: waited for at once");
	ok(syncset_data(&s, f, true) == 0 && syncset_barrier(&s) == 0 && s.n_data == 0 &&
	   s.calls == 5, "a full barrier waits for it too, then syncs");
	ok(syncset_data(&s, -1, true) < 0 && syncset_order(&s) < 0 && s.n_data == 0,
	   "a failed writeback fails the barrier");
	syncset_release(&s);
	close(f);

	char path2[PATH_MAX];
	f = scratch_mkstemp(path2, sizeof(path2), "syncset");
	unlink(path2);
	syncset_init(&s, a, false);
	s.names_in_order = true;
	ok(f >= 0 && write(f, "image", 5) == 5 && syncset_file(&s, f) == 0 && s.calls == 1 &&
	   s.written, "file by file, in order: its bytes written out (no fsync: no commit of its own)");
	ok(syncset_file(&s, -1) < 0, "a file that cannot be written out fails");
	syncset_dir(&s, a);
	ok(syncset_barrier(&s) == 0 && s.calls == 3, "the barrier fsyncs the directory: the commit");
	syncset_release(&s);
	close(f);

	syncset_init(&s, a, false);
	s.names_in_order = true;
	syncset_dir(&s, a);
	syncset_dir(&s, b);
	ok(syncset_order(&s) == 0 && s.calls == 0 && s.n_dirs == 2,
	   "file by file: the directories wait for the next barrier");
	ok(syncset_barrier(&s) == 0 && s.calls == 2, "which syncs them");
	syncset_release(&s);
	close(a);
	close(b);
	return tap_done();
}
