/* test_refs.c - which reference images a job's submitter may have the daemon read. */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "refs.h"
#include "util.h"
#include "scratch_spool.h"
#include "tap.h"

enum { CLIENT = 23456, ALICE = 12345, GROUP = 4242 };

static void test_may(void)
{
	static const struct refs_owner client = { CLIENT, GROUP, false }, daemon = { 0, 0, true };
	static const struct {
		const char *what;
		const struct refs_owner *who;
		uint32_t uid, gid, mode, want;
		bool may;
	} rows[] = {
		{ "her own 0600 file", &client, CLIENT, CLIENT, 0600, S_IROTH, true },
		{ "her own file she took read from (0060)", &client, CLIENT, GROUP, 0060, S_IROTH, false },
		{ "alice's 0600 file", &client, ALICE, ALICE, 0600, S_IROTH, false },
		{ "alice's 0644 file", &client, ALICE, ALICE, 0644, S_IROTH, true },
		{ "alice's 0640 file of the spool's group", &client, ALICE, GROUP, 0640, S_IROTH, true },
		{ "alice's 0640 file of her own group", &client, ALICE, ALICE, 0640, S_IROTH, false },
		{ "alice's 0700 directory", &client, ALICE, ALICE, 0700, S_IXOTH, false },
		{ "alice's 0755 directory", &client, ALICE, ALICE, 0755, S_IXOTH, true },
		{ "alice's 0750 directory of the spool's group", &client, ALICE, GROUP, 0750, S_IXOTH, true },
		{ "alice's 0744 directory: readable, not searchable", &client, ALICE, ALICE, 0744, S_IXOTH, false },
		{ "a job of the daemon's user or root: anything", &daemon, ALICE, ALICE, 0600, S_IROTH, true },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(refs_may(rows[i].who, rows[i].uid, rows[i].gid, rows[i].mode, rows[i].want) ==
		   rows[i].may, "%s", rows[i].what);
}

static void test_path_problem(void)
{
	static const struct {
		const char *path;
		bool refused;
	} rows[] = {
		{ "refs/cat.png", false }, { "cat.png", false }, { "done.png", false },
		{ "runningman/x.png", false }, { "done/x.png", true }, { "./done/x.png", true },
		{ "././running/.x@h.response.200", true }, { "new/x.json", true }, { "tmp/x", true },
		{ "ledger/2026-11/h.json", true }, { "providers/apiyi/x", true }, { "outbox/e", true },
		{ "refs/done/x.png", false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok((refs_path_problem(rows[i].path) != NULL) == rows[i].refused, "%s %s", rows[i].path,
		   rows[i].refused ? "refused" : "allowed");
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	xsnprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	ok(f && fputs(text, f) >= 0 && fclose(f) == 0, "'%s' written", name);
}

static void test_open(const char *dir)
{
	int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char sub[PATH_MAX], link[PATH_MAX], why[160];
	xsnprintf(sub, sizeof(sub), "%s/refs", dir);
	xsnprintf(link, sizeof(link), "%s/up", dir);
	ok(mkdir(sub, 0755) == 0 && symlink(".", link) == 0, "refs/ and a symlink up");
	put(sub, "a.png", "PNG");
	static const struct refs_owner owner = { CLIENT, GROUP, false };
	struct stat st;
	int fd = refs_open(root, "refs/a.png", &owner, 100, &st, why, sizeof(why));
	ok(fd >= 0 && st.st_size == 3, "refs/a.png opened");
	if (fd >= 0)
		close(fd);
	ok(refs_open(root, "up/refs/a.png", &owner, 100, &st, why, sizeof(why)) < 0 &&
	   strstr(why, "symlink"), "through a symlink: %s", why);
	ok(refs_open(root, "refs/a.png", &owner, 2, &st, why, sizeof(why)) < 0, "over max: %s", why);
	ok(refs_open(root, "refs/none.png", &owner, 100, &st, why, sizeof(why)) < 0 &&
	   !strcmp(why, "no such file"), "missing: %s", why);
	ok(refs_open(root, "refs", &owner, 100, &st, why, sizeof(why)) < 0, "a directory: %s", why);
	char file[PATH_MAX];
	xsnprintf(file, sizeof(file), "%s/a.png", sub);
	ok(chmod(file, 0600) == 0 && refs_open(root, "refs/a.png", &owner, 100, &st, why,
					       sizeof(why)) < 0 && strstr(why, "may not read it"),
	   "root's 0600 file, for a client: %s", why);
	ok(unlink(file) == 0 && rmdir(sub) == 0 && unlink(link) == 0, "cleaned up");
	close(root);
}

/* review11 R1: the files checked at the claim are opened again for each call, and must still be
 * the files checked; out of descriptors is a passing condition, not the job's fault. */
static void test_reopen(const char *dir)
{
	int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char sub[PATH_MAX], why[320];
	xsnprintf(sub, sizeof(sub), "%s/refs", dir);
	ok(mkdir(sub, 0755) == 0, "refs/");
	put(sub, "b.png", "\x89PNG\r\n\x1a\n one");
	static const struct refs_owner owner = { CLIENT, GROUP, false };
	const char *paths[] = { "refs/b.png", "refs/b.png", NULL };
	struct refs_loaded loaded;
	int bad = -1, fds[JOB_REFS_MAX + 1];
	bool transient = true;
	ok(refs_load(&loaded, root, paths, 3, &owner, 100, 1000, false, &bad, why, sizeof(why)) == 0 &&
	   loaded.checked.n == 1 && loaded.img[1].file == 0, "one distinct file of two mentions");
	struct refs_checked checked = loaded.checked;
	refs_loaded_release(&loaded);
	ok(refs_reopen(root, paths, &owner, &checked, fds, &transient, why, sizeof(why)) == 0 &&
	   fds[0] >= 0, "the same file, opened again");
	if (fds[0] >= 0)
		close(fds[0]);

	/* No descriptor free: a passing condition. */
	int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
	struct rlimit was, low;
	ok(lowest >= 0 && getrlimit(RLIMIT_NOFILE, &was) == 0, "the limit read");
	close(lowest);
	low = (struct rlimit){ .rlim_cur = (rlim_t)lowest, .rlim_max = was.rlim_max };
	int rc = setrlimit(RLIMIT_NOFILE, &low) == 0 ?
		 refs_reopen(root, paths, &owner, &checked, fds, &transient, why, sizeof(why)) : 0;
	ok(setrlimit(RLIMIT_NOFILE, &was) == 0, "the limit restored");
	ok(rc < 0 && transient && strstr(why, "out of file descriptors"), "EMFILE waits: %s", why);

	/* Another file put in its place (same size, another inode): refused for good. */
	put(sub, "c.png", "\x89PNG\r\n\x1a\n two");
	char from[PATH_MAX], to[PATH_MAX];
	xsnprintf(from, sizeof(from), "%s/c.png", sub);
	xsnprintf(to, sizeof(to), "%s/b.png", sub);
	ok(rename(from, to) == 0, "b.png replaced");
	ok(refs_reopen(root, paths, &owner, &checked, fds, &transient, why, sizeof(why)) < 0 &&
	   !transient && strstr(why, "changed"), "a replaced file is refused: %s", why);
	ok(unlink(to) == 0 && rmdir(sub) == 0, "cleaned up");
	close(root);
}

int main(void)
{
	char dir[PATH_MAX];
	test_may();
	test_path_problem();
	ok(scratch_mkdtemp(dir, sizeof(dir), "refs") != NULL, "a scratch directory");
	test_open(dir);
	test_reopen(dir);
	ok(rmdir(dir) == 0, "the scratch directory removed");
	return tap_done();
}
