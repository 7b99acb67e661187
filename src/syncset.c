/* syncset.c - group commit barriers (see syncset.h).
 *
 * Failures: an fsync or syncfs error is returned with errno; the caller fails the whole batch
 * with it (every job of it is tried again), since what the barrier covered is unknown. */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "syncset.h"
#include "util.h"
#include "banned.h"

#ifndef XFS_SUPER_MAGIC
#define XFS_SUPER_MAGIC 0x58465342
#endif

int sync_mode_parse(const char *text, enum sync_mode *out)
{
	static const struct { const char *name; enum sync_mode mode; } modes[] = {
		{ "auto", SYNC_AUTO }, { "fsync", SYNC_FILES }, { "syncfs", SYNC_FS },
	};
	for (size_t i = 0; text && i < ARRAY_SIZE(modes); i++) {
		if (!strcmp(text, modes[i].name)) {
			*out = modes[i].mode;
			return 0;
		}
	}
	return -1;
}

bool sync_fs_is_barrier(long fs_type)
{
	switch ((unsigned long)fs_type & 0xffffffffUL) {
	case EXT4_SUPER_MAGIC:      /* ext2, ext3 and ext4 share it */
	case XFS_SUPER_MAGIC:
	case BTRFS_SUPER_MAGIC:
	case TMPFS_MAGIC:
		return true;
	default:                    /* NFS, FUSE (sshfs), CIFS, overlay, unknown: file by file */
		return false;
	}
}

bool sync_whole_fs(enum sync_mode mode, long fs_type, size_t n_jobs)
{
	if (mode == SYNC_FILES || !sync_fs_is_barrier(fs_type))
		return false;
	return mode == SYNC_FS || n_jobs >= SYNC_FS_MIN_JOBS;
}

bool sync_names_in_order(enum sync_mode mode, long fs_type, bool journal)
{
	return mode == SYNC_AUTO && journal &&
	       ((unsigned long)fs_type & 0xffffffffUL) == EXT4_SUPER_MAGIC;
}

void syncset_init(struct syncset *s, int fs_fd, bool whole_fs)
{
	memset(s, 0, sizeof(*s));
	s->fs_fd = fs_fd;
	s->whole_fs = whole_fs;
}

void syncset_release(struct syncset *s)
{
	free(s->data);
	free(s->dirs);
	memset(s, 0, sizeof(*s));
}

bool syncset_each_file(const struct syncset *s)
{
	return !s->whole_fs;
}

#define DATA_WRITE (SYNC_FILE_RANGE_WRITE)
#define DATA_WAIT (SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)

int syncset_file(struct syncset *s, int fd)
{
	if (s->whole_fs) {
		s->written = true;
		return 0;
	}
	return syncset_bytes(s, fd);
}

int syncset_bytes(struct syncset *s, int fd)
{
	s->written = true;
	s->calls++;
	/* On a journaled ext4 a file's fsync commits the journal, once per file: its bytes written
	 * out are enough, the barrier's directory fsyncs commit them with the names after them. */
	if (s->names_in_order)
		return sync_file_range(fd, 0, 0, DATA_WAIT);
	return fsync(fd);
}

void syncset_dir(struct syncset *s, int dirfd)
{
	if (s->whole_fs)
		return;
	for (size_t i = 0; i < s->n_dirs; i++)
		if (s->dirs[i] == dirfd)
			return;
	if (s->n_dirs == s->cap_dirs) {
		s->cap_dirs = s->cap_dirs ? s->cap_dirs * 2 : 8;
		s->dirs = xrealloc(s->dirs, s->cap_dirs * sizeof(*s->dirs));
	}
	s->dirs[s->n_dirs++] = dirfd;
}

static int wait_data(struct syncset *s);

int syncset_barrier(struct syncset *s)
{
	int rc = wait_data(s), err = errno;
	if (s->whole_fs) {
		s->calls++;
		if (syncfs(s->fs_fd) < 0 && rc == 0)
			rc = -1, err = errno;
	}
	for (size_t i = 0; i < s->n_dirs; i++) {
		s->calls++;
		if (fsync(s->dirs[i]) < 0 && rc == 0)
			rc = -1, err = errno;
	}
	s->n_dirs = 0;
	s->written = false;
	errno = err;
	return rc;
}

int syncset_data(struct syncset *s, int fd, bool keep)
{
	if (!s->names_in_order)
		return syncset_file(s, fd);
	s->calls++;
	if (!keep)
		return sync_file_range(fd, 0, 0, DATA_WAIT);
	if (s->n_data == s->cap_data) {
		s->cap_data = s->cap_data ? s->cap_data * 2 : 16;
		s->data = xrealloc(s->data, s->cap_data * sizeof(*s->data));
	}
	s->data[s->n_data++] = fd;
	return sync_file_range(fd, 0, 0, DATA_WRITE);
}

/* Waits for the writeback syncset_data started: 0, or -1 with errno. */
static int wait_data(struct syncset *s)
{
	int rc = 0, err = 0;
	for (size_t i = 0; i < s->n_data; i++)
		if (sync_file_range(s->data[i], 0, 0, DATA_WAIT) < 0 && rc == 0)
			rc = -1, err = errno;
	s->n_data = 0;
	errno = err;
	return rc;
}

int syncset_order(struct syncset *s)
{
	if (!s->names_in_order || s->written)
		return syncset_barrier(s);
	return wait_data(s);
}
