/* syncset.h - group commit: several jobs' files and directories made durable together.
 *
 * A helper thread that handles a batch of jobs writes all their files, then calls one barrier:
 * either each file was fsynced as it was written and the barrier fsyncs every directory touched
 * once, or nothing was fsynced and the barrier is one syncfs(2) of the spool's file system.
 * Everything written before a barrier is durable once it returns, whatever the batch's size.
 *
 * syncfs is a full barrier only on local disk file systems (ext4, xfs, btrfs, tmpfs); on NFS it
 * does not cover metadata the way fsync does, on FUSE (sshfs) it sends nothing to the server,
 * and on a disk shared with a busy writer it waits for that writer's dirty pages too. So it is
 * used only where it is known to be a barrier, and only for a batch large enough to pay.
 *
 * A barrier between two steps that only change names (renames, unlinks: no new bytes since the
 * last barrier) is there to keep the later names from becoming durable before the earlier. A
 * journaled ext4 keeps that order by itself: every name change joins the running transaction,
 * and transactions commit one after the other, whole, so after a crash the names changed are
 * those up to some point, never a later one without an earlier one. There such a barrier
 * (syncset_order) costs nothing; the next full barrier makes everything durable. */
#ifndef SYNCSET_H
#define SYNCSET_H

#include <stdbool.h>
#include <stddef.h>

enum sync_mode {
	SYNC_AUTO,               /* syncfs for batches of at least SYNC_FS_MIN_JOBS on a local fs */
	SYNC_FILES,              /* always each file, then each directory */
	SYNC_FS,                 /* always syncfs, where it is a barrier; else as SYNC_FILES */
};
#define SYNC_FS_MIN_JOBS 2

/* Parses "auto", "fsync", "syncfs": 0, or -1 if it is none. */
int sync_mode_parse(const char *text, enum sync_mode *out);
/* Whether the file system (statfs f_type) is one where syncfs makes every file and directory
 * entry durable. */
bool sync_fs_is_barrier(long fs_type);
/* Pure: whether a batch of n_jobs on that file system uses one syncfs per barrier. */
bool sync_whole_fs(enum sync_mode mode, long fs_type, size_t n_jobs);
/* Pure: whether name changes may be left to the file system's journal to keep in order
 * (syncset_order is free): ext4 with a journal, and only with sync = auto (fsync and syncfs
 * sync at every step, as they say). */
bool sync_names_in_order(enum sync_mode mode, long fs_type, bool journal);

struct syncset {
	int fs_fd;               /* any fd on the spool's file system, for syncfs */
	bool whole_fs;
	bool names_in_order;     /* sync_names_in_order: syncset_order needs no sync */
	bool written;            /* a file was written (syncset_file) since the last barrier */
	int *dirs;               /* directories to fsync at the next barrier (SYNC_FILES) */
	size_t n_dirs, cap_dirs;
	int *data;               /* names_in_order: files whose writeback syncset_order awaits */
	size_t n_data, cap_data;
	unsigned long calls;     /* fsync/syncfs calls made, for the log */
};

void syncset_init(struct syncset *s, int fs_fd, bool whole_fs);
void syncset_release(struct syncset *s);
/* Whether a file written into this batch must be fsynced as it is written (before its rename). */
bool syncset_each_file(const struct syncset *s);
/* fsyncs fd if each file is synced on its own: 0 or -1 with errno. Every file written into the
 * batch is named here, synced or not (its bytes need a barrier). */
int syncset_file(struct syncset *s, int fd);
/* As syncset_file, but even when the barrier is one syncfs: for a file renamed to a final name
 * before the next barrier, whose name must never be durable before its bytes (a journal may
 * commit the rename in between; with delayed allocation the file would then be empty). */
int syncset_bytes(struct syncset *s, int fd);
/* Remembers a directory whose entries changed (borrowed fd, open until the barrier). */
void syncset_dir(struct syncset *s, int dirfd);
/* Makes everything written and renamed since the last barrier durable: 0 or -1 with errno.
 * Forgets the directories either way. */
int syncset_barrier(struct syncset *s);
/* The bytes of fd must be durable before the name changes that follow the next syncset_order
 * are. Where names are kept in order, its writeback starts now and syncset_order waits for it
 * (keep: fd stays open until then; else it is waited for now) before any rename: with delayed
 * allocation the journal would commit a rename before blocks not yet written back, but once
 * their writeback has completed (sync_file_range with WAIT_AFTER) their allocation is in the
 * running transaction or an earlier one and the data has reached the disk's cache, which the
 * commit flushes before its commit block, so the next barrier makes both durable. Elsewhere
 * it is syncset_file. 0, or -1 with errno. */
int syncset_data(struct syncset *s, int fd, bool keep);
/* A barrier wanted only to keep the name changes after it behind those before it: where the
 * file system keeps them in order (names_in_order), only the writeback of syncset_data's files
 * is waited for, unless another file was written since the last barrier (the directories are
 * synced by the next barrier); elsewhere syncset_barrier. */
int syncset_order(struct syncset *s);

#endif
