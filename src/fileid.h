/* fileid.h - telling one file from another on the spool's file system.
 *
 * On most file systems an inode number is its file's: a file renamed over a name has another
 * number than the one it replaced. sshfs (FUSE's high-level library without use_ino) numbers a
 * name instead: stat says the same number before and after another host renames a new file over
 * the name, and getdents says 0xffffffff (FUSE_UNKNOWN_INO) for every name. There a claim tells
 * the file read from the file claimed by their bytes. */
#ifndef FILEID_H
#define FILEID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* Whether what getdents said of an entry (listed: its d_ino, 0 where it does not say) and what
 * stat says (stated: its st_ino) prove that the numbers are not the files': they disagree. */
bool fileid_numbers_disagree(uint64_t listed, uint64_t stated);
/* Whether the inode numbers of dirfd's file system follow names rather than files: getdents and
 * stat disagree on an entry of dirfd (one on the same file system: not a mount point). False
 * when it cannot tell. */
bool fileid_numbers_by_name(int dirfd);
/* Whether the file at dirfd/name, stat'ed as claimed, is the one read (was_read: its fstat;
 * data, len: its bytes): the same device and inode, and where the numbers follow names (by_name) the
 * same bytes too, read again from dirfd/name. */
bool fileid_claimed_is_read(int dirfd, const char *name, const struct stat *claimed,
			    const struct stat *was_read, const char *data, size_t len, bool by_name);

#endif
