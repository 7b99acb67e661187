/* fileid.c - telling one file from another on the spool's file system: whether its inode
 * numbers are its files', and whether a file claimed is the one read.
 *
 * A listing or a read that fails says "cannot tell": the numbers are trusted, the file claimed
 * is not the one read (the claim then puts it back and reads it afresh). */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "fileid.h"
#include "banned.h"

/* Entries looked at by fileid_numbers_by_name: the spool's root holds about ten. */
#define FILEID_PROBE_ENTRIES 16

bool fileid_numbers_disagree(uint64_t listed, uint64_t stated)
{
	return listed && listed != stated;
}

bool fileid_numbers_by_name(int dirfd)
{
	struct stat dir_st, st;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return false;
	DIR *dir = fstat(fd, &dir_st) == 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		close(fd);
		return false;
	}
	bool by_name = false;
	struct dirent *de;
	for (int n = 0; !by_name && n < FILEID_PROBE_ENTRIES && (de = readdir(dir)); ) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		n++;
		/* A mount point's d_ino is the directory under it: not a disagreement. */
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dir_st.st_dev)
			by_name = fileid_numbers_disagree((uint64_t)de->d_ino, (uint64_t)st.st_ino);
	}
	closedir(dir);
	return by_name;
}

/* Whether the file at dirfd/name holds exactly len bytes, data. */
static bool holds(int dirfd, const char *name, const char *data, size_t len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	char buf[8192];
	size_t at = 0;
	bool same = true;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n == 0)
			break;
		if (n < 0 || (size_t)n > len - at || memcmp(buf, data + at, (size_t)n)) {
			same = false;
			break;
		}
		at += (size_t)n;
	}
	close(fd);
	return same && at == len;
}

bool fileid_claimed_is_read(int dirfd, const char *name, const struct stat *claimed,
			    const struct stat *was_read, const char *data, size_t len, bool by_name)
{
	if (claimed->st_ino != was_read->st_ino || claimed->st_dev != was_read->st_dev)
		return false;
	return !by_name || holds(dirfd, name, data, len);
}
