/* test_spool.c - the names the spool module makes (every one fits, for every valid id and host),
 * its writers (a staged file's too) and listings, and which journals a batch's renames may be
 * left to; what a state directory's name names later, and the directories followed; pins kept
 * from one to the next until a directory is swapped. */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "spool.h"
#include "util.h"
#include "said.h"
#include "scratch_spool.h"
#include "tap.h"

static char *repeat(char c, size_t n)
{
	char *s = xmalloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void test_temp_names(void)
{
	char *id = repeat('i', 128), *host = repeat('h', 64), *other = repeat('o', 64);
	char *running = xasprintf("%s@%s.json", id, host);
	char *sidecar = xasprintf(".%s@%s.response.200", id, host);
	char *result = xasprintf("%s.result.json", id);
	char *image = xasprintf("%s.16.webp", id);
	const struct {
		const char *what, *name;
	} rows[] = {
		{ "a short name", "cat.json" },
		{ "a 128-char id's result", result },
		{ "a 128-char id's 16th image", image },
		{ "ID@HOST.json with a 128-char id and a 64-char host id", running },
		{ "the response sidecar of that job", sidecar },
		{ "a name holding another host's name", "x@other.json" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char tmp[NAME_MAX + 1];
		int rc = spool_temp_name(tmp, sizeof(tmp), rows[i].name, host, 4194304, 0xffffffffu);
		ok(rc == 0 && strlen(tmp) <= NAME_MAX, "%s: the temporary name fits (%zu bytes)",
		   rows[i].what, strlen(tmp));
		ok(spool_is_our_temp(tmp, host), "%s: recognised as ours", rows[i].what);
		ok(!spool_is_our_temp(tmp, other), "%s: not another host's", rows[i].what);
		ok(tmp[0] == '.', "%s: a dot-name, ignored by clients", rows[i].what);
	}
	ok(strlen(running) <= NAME_MAX && strlen(sidecar) <= NAME_MAX,
	   "running/ names and sidecars fit as they are");
	char a[NAME_MAX + 1], b[NAME_MAX + 1];
	char *running2 = xasprintf("%s@%s.json", id, other);
	spool_temp_name(a, sizeof(a), running, host, 1, 1);
	spool_temp_name(b, sizeof(b), running2, host, 1, 1);
	ok(strcmp(a, b) != 0, "two long names that share a prefix get different temporary names");
	static const char *not_ours[] = { "h.json", ".h.json", ".x.hh.1.2.tmp", ".x.h.1.zz.tmp",
					  ".x.h.1.tmp", ".nfs0000000123" };
	for (size_t i = 0; i < sizeof(not_ours) / sizeof(not_ours[0]); i++)
		ok(!spool_is_our_temp(not_ours[i], "h"), "not a temporary name of h: %s", not_ours[i]);
	ok(spool_is_our_temp(".x.h.123.0a1b2c3d.tmp", "h"), "the plain form is recognised");
	free(running2);
	free(id);
	free(host);
	free(other);
	free(running);
	free(sidecar);
	free(result);
	free(image);
}

/* The pid is cached, so a forked child must still name its files with its own. */
static void test_temp_unique(void)
{
	unsigned a, b;
	ok(spool_temp_unique(&a) == (long)getpid(), "the pid is this process's");
	ok(spool_temp_unique(&b) == (long)getpid() && b != a, "two names get different numbers");
	int pipefd[2];
	ok(pipe(pipefd) == 0, "a pipe for the child's answer");
	pid_t child = fork();
	if (child == 0) {
		unsigned c;
		char verdict = spool_temp_unique(&c) == (long)getpid() ? 'y' : 'n';
		_exit(write(pipefd[1], &verdict, 1) == 1 ? 0 : 1);
	}
	char verdict = 0;
	ok(child > 0 && read(pipefd[0], &verdict, 1) == 1 && verdict == 'y',
	   "a forked child names its files with its own pid");
	waitpid(child, NULL, 0);
	close(pipefd[0]);
	close(pipefd[1]);
}

/* spool_read_file stops at a short read that reached the size fstat saw: every size must still
 * come back whole, around the read chunk (64 KiB) too. */
static void test_read_whole_files(void)
{
	static const size_t sizes[] = { 0, 1, 24, 65535, 65536, 65537, 131072, 200000 };
	char dir[PATH_MAX];
	ok(scratch_mkdtemp(dir, sizeof(dir), "read") != NULL, "a scratch directory");
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *data = xmalloc(sizes[i] + 1);
		for (size_t k = 0; k < sizes[i]; k++)
			data[k] = (char)('a' + k % 26);
		int fd = openat(dirfd, "f", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		ok(fd >= 0 && write_all(fd, data, sizes[i]) == 0 && close(fd) == 0, "%zu bytes written",
		   sizes[i]);
		struct buf b;
		struct stat st;
		buf_init(&b, 1 << 20);
		enum spool_read rr = spool_read_file(dirfd, "f", 1 << 20, &b, &st);
		ok(rr == SPOOL_READ_OK && b.len == sizes[i] &&
		   (!sizes[i] || !memcmp(b.data, data, sizes[i])),
		   "%zu bytes read back whole", sizes[i]);
		buf_release(&b);
		free(data);
	}
	unlinkat(dirfd, "f", 0);
	close(dirfd);
	rmdir(dir);
}

/* The one writer every module uses outside the state directories (keyshare's pause, hold and
 * ledger, the host lock), and the listing of any directory of the spool. */
static void test_write_at_and_list_at(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "spool-write") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	int dirfd = sp.root_fd;
	int64_t until = 4102444800000;   /* 2100-01-01: a pause's end, kept as the file's mtime */
	ok(spool_write_at(&sp, dirfd, "pause", "p\n", 2, until, false) == 0, "a pause written");
	struct stat st;
	ok(fstatat(dirfd, "pause", &st, 0) == 0 && timespec_ms(&st.st_mtim) == until &&
	   st.st_size == 2, "its mtime is the pause's end, set before it was renamed into place");
	ok(spool_write_at(&sp, dirfd, "ledger.json", "{}", 2, 0, true) == 0 &&
	   fstatat(dirfd, "ledger.json", &st, 0) == 0 && st.st_size == 2, "a durable write");
	char tmp[NAME_MAX + 1];
	ok(spool_write_temp(&sp, dirfd, "host", "me", 2, tmp) == 0 && spool_is_our_temp(tmp, "h1") &&
	   fstatat(dirfd, tmp, &st, 0) == 0 && st.st_size == 2,
	   "a temporary file left for its caller to link: '%s'", tmp);
	unsigned seq;
	long pid = spool_temp_unique(&seq);
	char want[NAME_MAX + 1];
	spool_temp_name(want, sizeof(want), "host", "h1", pid, seq - 1);
	ok(!strcmp(tmp, want), "named by the cheap scheme (pid asked once, a counter): '%s'", want);
	unlinkat(dirfd, tmp, 0);

	struct spool_entry *e;
	long n = spool_list_at(dirfd, false, false, &e);
	long plain = 0;
	for (long i = 0; i < n; i++)
		plain += !strcmp(e[i].name, "pause") || !strcmp(e[i].name, "ledger.json");
	ok(plain == 2, "both listed by name (%ld entries with the state directories)", n);
	spool_entries_free(e, n);
	n = spool_list_at(dirfd, false, true, &e);
	ok(n > 0 && !strcmp(e[n - 1].name, "pause") && e[n - 1].mtime_ns == until * 1000000,
	   "listed with stat: sorted by mtime, the pause (in 2100) last");
	spool_entries_free(e, n);
	n = spool_list_at(dirfd, true, false, &e);
	ok(n == 0, "no temporary file is left behind");
	spool_entries_free(e, n);
	ok(spool_list_at(-1, false, false, &e) < 0 && errno == EBADF && !e, "a bad dirfd fails");

	/* More names than one read of the directory returns (its buffer is 32 KB). */
	int many = openat(sp.fd[SPOOL_NEW], ".", O_RDONLY | O_DIRECTORY);
	const int N = 3000;
	for (int i = 0; i < N; i++) {
		char name[64];
		xsnprintf(name, sizeof(name), "%sjob-with-a-longish-name-%05d.json", i % 3 ? "" : ".", i);
		int fd = openat(many, name, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd >= 0)
			close(fd);
	}
	long shown = spool_list_at(many, false, false, &e), hidden_n;
	bool names_ok = shown == N - N / 3;
	for (long i = 0; names_ok && i < shown; i++)
		names_ok = e[i].name[0] != '.' && strlen(e[i].name) == 34 && (e[i].id.mode & S_IFREG);
	spool_entries_free(e, shown);
	struct spool_entry *h;
	hidden_n = spool_list_at(many, true, false, &h);
	ok(names_ok && hidden_n == N / 3, "%d names over several reads: %ld listed, %ld hidden", N,
	   shown, hidden_n);
	for (long i = 0; i < hidden_n; i++)
		unlinkat(many, h[i].name, 0);
	spool_entries_free(h, hidden_n);
	shown = spool_list_at(many, false, false, &e);
	for (long i = 0; i < shown; i++)
		unlinkat(many, e[i].name, 0);
	spool_entries_free(e, shown);
	close(many);

	unlinkat(dirfd, "pause", 0);
	unlinkat(dirfd, "ledger.json", 0);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

/* A staging directory's file: a new name is written in place; one already there (a retry's,
 * perhaps counted by the records) is replaced by another file, never rewritten where it is. */
static void test_write_staged(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "spool-staged") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	int runfd = sp.fd[SPOOL_RUNNING];
	mkdirat(runfd, ".~0@h1.batch-done", 0777);
	int sfd = openat(runfd, ".~0@h1.batch-done", O_RDONLY | O_DIRECTORY);
	struct syncset ss;
	syncset_init(&ss, sp.root_fd, false);
	struct stat first, second;
	ok(spool_write_staged(&sp, sfd, "x.png", "abc", 3, &ss, true) == 0 &&
	   fstatat(sfd, "x.png", &first, 0) == 0 && first.st_size == 3, "a new name written");
	ok(spool_write_staged(&sp, sfd, "x.png", "defgh", 5, &ss, true) == 0 &&
	   fstatat(sfd, "x.png", &second, 0) == 0 && second.st_size == 5 &&
	   second.st_ino != first.st_ino, "a name already there replaced by another file");
	/* Not in place (the records may say finished): through a temporary name, whole. */
	ok(spool_write_staged(&sp, sfd, "y.png", "ijk", 3, &ss, false) == 0 &&
	   fstatat(sfd, "y.png", &first, 0) == 0 && first.st_size == 3, "a new name written whole");
	mkdirat(sfd, "d.png", 0777);
	ok(spool_write_staged(&sp, sfd, "d.png", "abc", 3, &ss, true) < 0, "a directory in the way fails");
	struct spool_entry *e;
	long n = spool_list_at(sfd, true, false, &e);
	ok(n == 0, "no temporary file is left behind (%ld)", n);
	spool_entries_free(e, n);
	ok(syncset_barrier(&ss) == 0, "the barrier syncs what was written");
	syncset_release(&ss);
	unlinkat(sfd, "x.png", 0);
	unlinkat(sfd, "y.png", 0);
	unlinkat(sfd, "d.png", AT_REMOVEDIR);
	close(sfd);
	unlinkat(runfd, ".~0@h1.batch-done", AT_REMOVEDIR);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

/* A file written aside under a name of the caller's (a put-back's new run): written whole, and
 * a leftover at that name (a kill's) is replaced, never a reason not to go on. */
static void test_write_aside(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "spool-aside") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	int runfd = sp.fd[SPOOL_RUNNING];
	struct stat first, second;
	ok(spool_write_aside(&sp, SPOOL_RUNNING, ".j@h1.putback.n.1", "abc", 3) == 0 &&
	   fstatat(runfd, ".j@h1.putback.n.1", &first, 0) == 0 && first.st_size == 3,
	   "a new name written");
	ok(spool_write_aside(&sp, SPOOL_RUNNING, ".j@h1.putback.n.1", "defgh", 5) == 0 &&
	   fstatat(runfd, ".j@h1.putback.n.1", &second, 0) == 0 && second.st_size == 5,
	   "a leftover at the name replaced");
	mkdirat(runfd, ".d@h1.putback.n.1", 0777);
	ok(spool_write_aside(&sp, SPOOL_RUNNING, ".d@h1.putback.n.1", "abc", 3) < 0,
	   "a directory in the way fails");
	struct spool_entry *e;
	long n = spool_list_at(runfd, true, false, &e);
	ok(n == 2, "nothing else is left behind (%ld)", n);
	spool_entries_free(e, n);
	unlinkat(runfd, ".j@h1.putback.n.1", 0);
	unlinkat(runfd, ".d@h1.putback.n.1", AT_REMOVEDIR);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool is removed");
}

/* running/ID@HOST.json, as every reader of running/ parses it (spool_running_id): control's
 * sweep, recovery, imgspool. */
static void test_running_ids(void)
{
	static const struct {
		const char *name, *id, *host;   /* id NULL: not a job file of running/ */
	} rows[] = {
		{ "cat-1@render-07.json", "cat-1", "render-07" },
		{ "a.b_c@h.json", "a.b_c", "h" },
		{ "cat-1@render-07.json.json", "cat-1", "render-07.json" },
		{ "@h.json", NULL, NULL },
		{ "cat@.json", NULL, NULL },
		{ "cat.json", NULL, NULL },
		{ "cat@h", NULL, NULL },
		{ "cat@h.json.tmp", NULL, NULL },
		{ "a@b@h.json", NULL, NULL },
		{ ".cat@h.json", NULL, NULL },
		{ ".cat@h.done", NULL, NULL },
		{ ".~0@h.batch-done", NULL, NULL },
		{ ".cat@h.partial", NULL, NULL },
		{ "@.json", NULL, NULL },
		{ ".json", NULL, NULL },
		{ "", NULL, NULL },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char id[16] = "", host[16] = "";
		bool is = spool_running_id(rows[i].name, id, sizeof(id), host, sizeof(host));
		ok(rows[i].id ? is && !strcmp(id, rows[i].id) && !strcmp(host, rows[i].host) : !is,
		   "spool_running_id, row %zu \"%s\": %s \"%s\" \"%s\"", i, rows[i].name,
		   is ? "yes" : "no", id, host);
		ok(spool_running_id(rows[i].name, NULL, 0, NULL, 0) == (rows[i].id != NULL),
		   "spool_running_id, row %zu, without buffers", i);
	}
	char small[5];
	ok(!spool_running_id("cat-1@h.json", small, sizeof(small), NULL, 0) &&
	   spool_running_id("cat@h.json", small, sizeof(small), NULL, 0) && !strcmp(small, "cat"),
	   "an id that does not fit its buffer is refused, never cut");
}

/* Which file systems' journals a batch's renames may be left to: the text of journal_task and
 * options as the kernel writes them (options one a line), and the devices of the directories. */
static void test_journal_decide(void)
{
	const char *plain = "rw\nbsddf\nnogrpid\ndelalloc\nbarrier\nauto_da_alloc\ncommit=5\n";
	const char *async = "rw\ndelalloc\njournal_checksum\njournal_async_commit\nbarrier\n";
	const char *nobarrier = "rw\ndelalloc\nnobarrier\n";
	const char *both = "rw\njournal_async_commit\nnobarrier\n";
	const char *lookalike = "rw\nnojournal_async_commit_x\njournal_async_commits\n";
	const dev_t same[] = { 7, 7, 7 }, other[] = { 7, 9, 7 };
	const struct {
		const char *name, *task, *options;
		const dev_t *devs;
		enum spool_journal want;
	} rows[] = {
		{ "a journal, barriers, every directory on the root's device", "jbd2/loop0-8\n", plain,
		  same, SPOOL_JOURNAL_ORDERED },
		{ "no journal", "<none>\n", plain, same, SPOOL_JOURNAL_NONE },
		{ "journal_task unread", NULL, plain, same, SPOOL_JOURNAL_NONE },
		{ "journal_task empty", "", plain, same, SPOOL_JOURNAL_NONE },
		{ "options unread", "jbd2/loop0-8\n", NULL, same, SPOOL_JOURNAL_NONE },
		{ "journal_async_commit: commit block not behind a flush", "jbd2/sda1-8\n", async,
		  same, SPOOL_JOURNAL_NONE },
		{ "journal_async_commit in a comma-separated list", "jbd2/sda1-8\n",
		  "rw,journal_async_commit", same, SPOOL_JOURNAL_NONE },
		{ "nobarrier: journaled, nothing durable", "jbd2/sda1-8\n", nobarrier, same,
		  SPOOL_JOURNAL_NO_BARRIER },
		{ "barrier=0 is nobarrier", "jbd2/sda1-8\n", "rw,barrier=0", same,
		  SPOOL_JOURNAL_NO_BARRIER },
		{ "journal_async_commit and nobarrier: the async commit decides", "jbd2/sda1-8\n",
		  both, same, SPOOL_JOURNAL_NONE },
		{ "only whole option words count", "jbd2/sda1-8\n", lookalike, same,
		  SPOOL_JOURNAL_ORDERED },
		{ "done/ on another device than the root", "jbd2/sda1-8\n", plain, other,
		  SPOOL_JOURNAL_NONE },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(spool_journal_decide(rows[i].task, rows[i].options, 7, rows[i].devs, 3) ==
		   rows[i].want, "spool_journal_decide: %s", rows[i].name);
}

/* What a state directory's name names, against the directory opened: followed, kept, refused. */
static void test_dir_judge(void)
{
	const struct spool_dir_id opened = { .dev = 7, .ino = 100, .btime_ns = 5 };
	const uint64_t root_dev = 7, root_mount = 30;
	const struct {
		const char *name;
		bool alive;
		struct spool_dir_look look;
		uint64_t root_mount;
		enum spool_dir_verdict want;
	} rows[] = {
		{ "the directory opened", true, { .mode = S_IFDIR, .id = opened, .mount = 30 },
		  root_mount, SPOOL_DIR_SAME },
		{ "the directory opened, no birth time said", true,
		  { .mode = S_IFDIR, .id = { 7, 100, 0 }, .mount = 30 }, root_mount, SPOOL_DIR_SAME },
		{ "its inode number, no birth time, the one held removed (ext4 reuses numbers)", false,
		  { .mode = S_IFDIR, .id = { 7, 100, 0 }, .mount = 30 }, root_mount,
		  SPOOL_DIR_REPLACED },
		{ "its inode number, born later", true,
		  { .mode = S_IFDIR, .id = { 7, 100, 9 }, .mount = 30 }, root_mount,
		  SPOOL_DIR_REPLACED },
		{ "another directory, the same mount", true,
		  { .mode = S_IFDIR, .id = { 7, 101, 9 }, .mount = 30 }, root_mount,
		  SPOOL_DIR_REPLACED },
		{ "another directory, mounts unknown", true,
		  { .mode = S_IFDIR, .id = { 7, 101, 9 }, .mount = 31 }, 0, SPOOL_DIR_REPLACED },
		{ "the directory opened through another mount of it", true,
		  { .mode = S_IFDIR, .id = opened, .mount = 31 }, root_mount, SPOOL_DIR_SAME },
		{ "another file system", true,
		  { .mode = S_IFDIR, .id = { 8, 101, 9 }, .mount = 31 }, root_mount,
		  SPOOL_DIR_OTHER_FS },
		{ "the spool's file system through another mount (a bind mount)", true,
		  { .mode = S_IFDIR, .id = { 7, 101, 9 }, .mount = 31 }, root_mount,
		  SPOOL_DIR_OTHER_MOUNT },
		{ "nothing there", true, { .err = ENOENT }, root_mount, SPOOL_DIR_MISSING },
		{ "a file there", true, { .mode = S_IFREG, .id = { 7, 102, 9 }, .mount = 30 },
		  root_mount, SPOOL_DIR_NOT_DIR },
		{ "a symlink there", true, { .mode = S_IFLNK, .id = { 7, 103, 9 }, .mount = 30 },
		  root_mount, SPOOL_DIR_NOT_DIR },
		{ "opened: not a directory", true, { .err = ENOTDIR }, root_mount, SPOOL_DIR_NOT_DIR },
		{ "opened: a symlink", true, { .err = ELOOP }, root_mount, SPOOL_DIR_NOT_DIR },
		{ "no permission to look", true, { .err = EACCES }, root_mount, SPOOL_DIR_UNREADABLE },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(spool_dir_judge(&opened, rows[i].alive, &rows[i].look, root_dev,
				   rows[i].root_mount) == rows[i].want, "spool_dir_judge: %s", rows[i].name);
}

/* An operator replaces state directories under a spool opened: each is followed at the next
 * recheck, said once, under the same descriptor number; a missing one or a file in its place
 * is said once and kept; the root is never followed. */
static void test_recheck_dirs(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "spool-recheck") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	char *log_path = xasprintf("%s.log", dir), *path = NULL, *aside = NULL;
	struct said said;
	ok(said_start(&said, log_path), "the log kept");
	ok(spool_recheck_dirs(&sp) == 0 && !*said_since(&said), "nothing replaced, nothing said");

	int fd = sp.fd[SPOOL_DEFERRED];
	path = xasprintf("%s/deferred", dir);
	aside = xasprintf("%s/deferred.old", dir);
	ok(rename(path, aside) == 0 && mkdir(path, 0777) == 0, "deferred/ moved aside, a new one made");
	ok(spool_recheck_dirs(&sp) == SPOOL_BIT(SPOOL_DEFERRED) && sp.fd[SPOOL_DEFERRED] == fd,
	   "deferred/ followed, under the same descriptor number");
	ok(said_count(said_since(&said), "deferred' was replaced") == 1, "said once");
	char *now_at = xasprintf("what is left in the old one, now '%s', stays there", aside);
	ok(strstr(said.text, now_at) != NULL, "saying where the old one is, with what was left in it");
	free(now_at);
	ok(spool_write_file(&sp, SPOOL_DEFERRED, "x.json", "{}", 2) == 0, "a file written in deferred/");
	char *in_new = xasprintf("%s/x.json", path), *in_old = xasprintf("%s/x.json", aside);
	ok(access(in_new, F_OK) == 0 && access(in_old, F_OK) < 0, "it is in the new deferred/");
	ok(spool_recheck_dirs(&sp) == 0 && !*said_since(&said), "then nothing more");
	unlink(in_new);
	rmdir(aside);
	free(in_new);
	free(in_old);
	free(path);
	free(aside);

	path = xasprintf("%s/done", dir);
	ok(rmdir(path) == 0 && spool_recheck_dirs(&sp) == 0 && spool_recheck_dirs(&sp) == 0,
	   "done/ removed: nothing followed, nothing made");
	ok(said_count(said_since(&said), "done' is gone") == 1 && access(path, F_OK) < 0,
	   "said once, done/ not made again");
	ok(mkdir(path, 0777) == 0 && spool_recheck_dirs(&sp) == SPOOL_BIT(SPOOL_DONE) &&
	   said_count(said_since(&said), "done' was replaced") == 1,
	   "made again by the operator: followed, said");
	ok(strstr(said.text, "(removed and made again)") && !strstr(said.text, "what is left"),
	   "a removed one had nothing left in it");
	free(path);

	path = xasprintf("%s/failed", dir);
	aside = xasprintf("%s/failed.old", dir);
	int file = -1;
	ok(rename(path, aside) == 0 && (file = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644)) >= 0 &&
	   close(file) == 0, "a file in the place of failed/");
	ok(spool_recheck_dirs(&sp) == 0 && spool_recheck_dirs(&sp) == 0 &&
	   said_count(said_since(&said), "failed' is no longer a directory") == 1,
	   "not followed, said once");
	ok(unlink(path) == 0 && rename(aside, path) == 0 && spool_recheck_dirs(&sp) == 0 &&
	   said_count(said_since(&said), "failed' is again the directory") == 1,
	   "the old one back: kept, said");
	free(path);
	free(aside);

	aside = xasprintf("%s.moved", dir);
	ok(rename(dir, aside) == 0 && mkdir(dir, 0777) == 0, "the spool moved aside, a new one made");
	ok(!spool_root_recheck(&sp) && spool_recheck_dirs(&sp) == 0, "its directories not followed");
	ok(said_count(said_since(&said), "is no longer the directory this daemon opened") == 1,
	   "said once");
	ok(rmdir(dir) == 0 && rename(aside, dir) == 0 && spool_root_recheck(&sp) &&
	   said_count(said_since(&said), "is again the directory this daemon opened") == 1,
	   "back: said");
	free(aside);

	said_end(&said);
	unlink(log_path);
	free(log_path);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static uint64_t ino_of(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static void *pin_on_a_thread(void *arg)
{
	struct spool *sp = arg;
	int fd = spool_pin(sp, SPOOL_DONE);
	spool_unpin(sp, SPOOL_DONE, fd);
	return (void *)(intptr_t)fd;
}

/* A thread keeps its pin of a directory from one to the next (a batch's publication pins done/
 * and failed/ with no system call), takes a new one at its first pin after a recheck swapped
 * the directory, and closes the old one then; a pin under way across the swap keeps the old
 * directory to its end, nested pins included. A thread's ending closes what it kept, and so
 * does spool_close on its own thread. */
static void test_pins_kept(void)
{
	char dir[128];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "spool-pins") && spool_open(&sp, dir, "h1") == 0,
	   "a scratch spool");
	int first = spool_pin(&sp, SPOOL_DONE);
	spool_unpin(&sp, SPOOL_DONE, first);
	ok(first >= 0 && is_open(first) && first != sp.fd[SPOOL_DONE], "a pin kept open once ended");
	int again = spool_pin(&sp, SPOOL_DONE), nested = spool_pin(&sp, SPOOL_DONE);
	ok(again == first && nested == first, "the next pin and one inside it: the same descriptor");
	spool_unpin(&sp, SPOOL_DONE, nested);
	spool_unpin(&sp, SPOOL_DONE, again);

	char *path = xasprintf("%s/done", dir), *aside = xasprintf("%s/done.old", dir);
	uint64_t old_ino = ino_of(first);
	int outer = spool_pin(&sp, SPOOL_DONE);
	ok(rename(path, aside) == 0 && mkdir(path, 0777) == 0, "done/ moved aside, a new one made");
	ok(spool_pin(&sp, SPOOL_DONE) == outer, "before the recheck: still the one held");
	spool_unpin(&sp, SPOOL_DONE, outer);
	int stderr_saved = dup(STDERR_FILENO), devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	dup2(devnull, STDERR_FILENO);   /* the recheck says the swap: not this test's output */
	ok(spool_recheck_dirs(&sp) == SPOOL_BIT(SPOOL_DONE), "the new done/ swapped in");
	log_flush_all();
	dup2(stderr_saved, STDERR_FILENO);
	close(stderr_saved);
	close(devnull);
	int inner = spool_pin(&sp, SPOOL_DONE);
	ok(inner == outer && ino_of(inner) == old_ino, "a pin under way keeps the old one to its end");
	spool_unpin(&sp, SPOOL_DONE, inner);
	spool_unpin(&sp, SPOOL_DONE, outer);
	int swapped = spool_pin(&sp, SPOOL_DONE);
	spool_unpin(&sp, SPOOL_DONE, swapped);
	ok(swapped >= 0 && ino_of(swapped) == ino_of(sp.fd[SPOOL_DONE]) && ino_of(swapped) != old_ino,
	   "the first pin after it: the new done/");
	ok(!is_open(first) || ino_of(first) != old_ino, "the old one's descriptor closed then");
	rmdir(aside);
	free(aside);
	free(path);

	pthread_t thread;
	void *got = NULL;
	ok(pthread_create(&thread, NULL, pin_on_a_thread, &sp) == 0 && pthread_join(thread, &got) == 0,
	   "a thread pins done/ and ends");
	int on_thread = (int)(intptr_t)got;
	ok(on_thread >= 0 && !is_open(on_thread), "its kept pin closed at its end");

	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
	ok(!is_open(swapped), "spool_close closes its thread's kept pins");
}

int main(void)
{
	test_pins_kept();
	test_dir_judge();
	test_recheck_dirs();
	test_journal_decide();
	test_running_ids();
	test_temp_names();
	test_temp_unique();
	test_read_whole_files();
	test_write_at_and_list_at();
	test_write_staged();
	test_write_aside();
	return tap_done();
}
