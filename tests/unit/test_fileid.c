/* test_fileid.c - when inode numbers are not the files', and telling the file claimed from the
 * file read. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileid.h"
#include "util.h"
#include "scratch_spool.h"
#include "tap.h"

static void test_numbers_disagree(void)
{
	static const struct {
		const char *what;
		uint64_t listed, stated;
		bool want;
	} rows[] = {
		{ "a local file system: the same number", 1234, 1234, false },
		{ "getdents does not say (0)", 0, 1234, false },
		{ "sshfs: FUSE_UNKNOWN_INO listed, a node's number stat'ed", 0xffffffffu, 3, true },
		{ "another number", 1234, 1235, true },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(fileid_numbers_disagree(rows[i].listed, rows[i].stated) == rows[i].want, "%s",
		   rows[i].what);
}

static void put(int dirfd, const char *name, const char *text)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ok(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text), "'%s' written", name);
	close(fd);
}

static void test_claimed_is_read(const char *dir)
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ok(dirfd >= 0, "the scratch directory opened");
	ok(!fileid_numbers_by_name(dirfd), "empty: nothing tells, the numbers are trusted");
	const char *text = "{\"prompt\": \"the first\"}";
	put(dirfd, "j.json", text);
	ok(!fileid_numbers_by_name(dirfd), "here getdents and stat agree: the numbers are the files'");

	struct stat was_read, now;
	size_t len = strlen(text);
	ok(fstatat(dirfd, "j.json", &was_read, 0) == 0, "the file read");
	static const struct {
		const char *what;
		const char *now;   /* written in place (same inode), or NULL: left as read */
		bool by_name, want;
	} rows[] = {
		{ "numbers trusted, the same file", NULL, false, true },
		{ "numbers by name, the same bytes", NULL, true, true },
		{ "numbers trusted, the same inode: not read again", "{\"prompt\": \"the other\"}",
		  false, true },
		{ "numbers by name, other bytes of the same length", "{\"prompt\": \"the other\"}",
		  true, false },
		{ "numbers by name, longer", "{\"prompt\": \"the first\"} ", true, false },
		{ "numbers by name, shorter", "{\"prompt\": \"the first", true, false },
		{ "numbers by name, empty", "", true, false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		put(dirfd, "j.json", rows[i].now ? rows[i].now : text);
		ok(fstatat(dirfd, "j.json", &now, 0) == 0 &&
		   fileid_claimed_is_read(dirfd, "j.json", &now, &was_read, text, len,
					  rows[i].by_name) == rows[i].want, "%s", rows[i].what);
	}

	/* Another file renamed over the name: another inode, whatever its bytes. */
	put(dirfd, ".new", text);
	ok(renameat(dirfd, ".new", dirfd, "j.json") == 0 && fstatat(dirfd, "j.json", &now, 0) == 0,
	   "another file with the same bytes renamed over it");
	ok(!fileid_claimed_is_read(dirfd, "j.json", &now, &was_read, text, len, false) &&
	   !fileid_claimed_is_read(dirfd, "j.json", &now, &was_read, text, len, true),
	   "another inode is another file");
	ok(fileid_claimed_is_read(dirfd, "j.json", &now, &now, text, len, true),
	   "by name, that file is the one read when its bytes were");
	ok(unlinkat(dirfd, "j.json", 0) == 0 &&
	   !fileid_claimed_is_read(dirfd, "j.json", &now, &now, text, len, true),
	   "by name, a file gone is not the one read");
	close(dirfd);
}

int main(void)
{
	char dir[PATH_MAX];
	test_numbers_disagree();
	ok(scratch_mkdtemp(dir, sizeof(dir), "fileid") != NULL, "a scratch directory");
	test_claimed_is_read(dir);
	ok(rmdir(dir) == 0, "the scratch directory removed");
	return tap_done();
}
