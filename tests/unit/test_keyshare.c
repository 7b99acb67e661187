/* test_keyshare.c - the shared limits: the rate's window row by row, ticket names, and the
 * gate itself with two "hosts" (two spool handles with their own host ids) on one directory:
 * concurrency, budgets with what the other host spent, a dead host's ticket, pause and hold. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <ftw.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "keyshare.h"
#include "spend.h"
#include "spool.h"
#include "util.h"
#include "said.h"
#include "scratch_spool.h"
#include "tap.h"

struct rate_row {
	const char *name;
	int64_t others[8];
	size_t n;
	int64_t me;
	long rpm;
	bool ok;
	int64_t retry_at;
};

static const struct rate_row rate_rows[] = {
	{ "nothing before: room", { 0 }, 0, 1000, 1, true, 0 },
	{ "one in the window, rpm 1: wait for it to leave", { 500 }, 1, 1000, 1, false, 500 + 60000 + 1 },
	{ "one in the window, rpm 2: room", { 500 }, 1, 1000, 2, true, 0 },
	{ "one just out of the window: room", { 1000 }, 1, 61000, 1, true, 0 },
	{ "one just inside: no room", { 1001 }, 1, 61000, 1, false, 61002 },
	{ "a later start (another host's) counts too", { 2000 }, 1, 1000, 1, false, 62001 },
	{ "three in, rpm 2: wait for the second oldest", { 30000, 10000, 20000 }, 3, 40000, 2, false,
	  20000 + 60000 + 1 },
	{ "old ones do not count", { 1, 2, 3, 50000 }, 4, 70000, 2, true, 0 },
};

struct ticket_row {
	const char *name;
	int rc;
	const char *host;
	micros reserve;
};

static const struct ticket_row ticket_rows[] = {
	{ "hostA~42-1~100000", 0, "hostA", 100000 },
	{ "render-07.example~1-99~0", 0, "render-07.example", 0 },
	{ "hostA~42-1", -1, NULL, 0 },
	{ "~42-1~5", -1, NULL, 0 },
	{ "hostA~42-1~-5", -1, NULL, 0 },
	{ "hostA~42-1~5x", -1, NULL, 0 },
	{ "hostA~42-1~5~6", -1, NULL, 0 },
};

/* Whether a listing of another provider's calls/ kept for a total budget may be used again. */
struct memo_row {
	const char *name;
	struct keyshare_seen before;
	int64_t listed_at_ms;
	struct keyshare_seen now;
	bool stands;
};

#define SEEN_SIZED(ino, mtime_ms, ctime_ms, size) \
	{ 1, ino, (int64_t)(mtime_ms) * 1000000, (int64_t)(ctime_ms) * 1000000, size }
#define SEEN(ino, mtime_ms, ctime_ms) SEEN_SIZED(ino, mtime_ms, ctime_ms, 4096)

static const struct memo_row memo_rows[] = {
	{ "never listed", SEEN(7, 1000, 1000), 0, SEEN(7, 1000, 1000), false },
	{ "unchanged, quiet for 10 s when listed", SEEN(7, 1000, 1000), 11000, SEEN(7, 1000, 1000), true },
	{ "unchanged, but changed 1 s before the listing (the same sshfs second could hide a change)",
	  SEEN(7, 10000, 10000), 11000, SEEN(7, 10000, 10000), false },
	{ "changed exactly the margin before: not yet", SEEN(7, 9000, 9000), 11000, SEEN(7, 9000, 9000), false },
	{ "changed a ms more than the margin before", SEEN(7, 8999, 8999), 11000, SEEN(7, 8999, 8999), true },
	{ "a name added since (mtime)", SEEN(7, 1000, 1000), 11000, SEEN(7, 12000, 12000), false },
	{ "mtime put back, ctime tells", SEEN(7, 1000, 1000), 11000, SEEN(7, 1000, 12000), false },
	{ "the directory replaced (inode)", SEEN(7, 1000, 1000), 11000, SEEN(8, 1000, 1000), false },
	{ "another file system (dev)", SEEN(7, 1000, 1000), 11000, { 2, 7, 1000000000, 1000000000, 4096 }, false },
	{ "a file written again in place, its times put back: the size tells", SEEN(7, 1000, 1000), 11000,
	  SEEN_SIZED(7, 1000, 1000, 90), false },
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

/* A host lock at path as a daemon on another machine writes it, last heartbeated age_s ago,
 * naming run (NULL: none, as an earlier release's). */
static bool make_lock(const char *path, time_t age_s, const char *run)
{
	char owner[256];
	snprintf(owner, sizeof(owner), "{\"pid\":4242,\"start_time\":7,\"hostname\":\"elsewhere\","
		 "\"boot_id\":\"other-boot\"%s%s%s}", run ? ",\"run\":\"" : "", run ? run : "",
		 run ? "\"" : "");
	struct timespec beat[2] = { { .tv_sec = time(NULL) - age_s }, { .tv_sec = time(NULL) - age_s } };
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	bool written = fd >= 0 && write(fd, owner, strlen(owner)) == (ssize_t)strlen(owner);
	return fd >= 0 && close(fd) == 0 && written && utimensat(AT_FDCWD, path, beat, 0) == 0;
}

/* A call of host C in provider's calls/ reserving reserve, last heartbeated 10 s ago, seen by
 * ks at a try to call caller under l (a 60 s lease): it is live, so the try gets live_block.
 * A reload makes the lease 4 s: at the next try C's call is dead, removed, and the call starts. */
static void shortened_lease(struct keyshare *ks, const char *dir, const char *provider,
			    const char *caller, struct keyshare_limits l, micros reserve,
			    enum provider_block live_block)
{
	char *path = xasprintf("%s/providers/%s/calls/hostC~5-1~%lld", dir, provider,
			       (long long)reserve);
	struct timespec quiet10[2] = { { .tv_sec = time(NULL) - 10 }, { .tv_sec = time(NULL) - 10 } };
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && close(fd) == 0 && utimensat(AT_FDCWD, path, quiet10, 0) == 0,
	   "%s: host C's call, last heartbeated 10 s ago", provider);
	struct keyshare_ticket t;
	struct keyshare_verdict v = keyshare_acquire(ks, caller, &l, keyshare_micros(1), &t);
	ok(v.block == live_block && access(path, F_OK) == 0,
	   "%s: under a 60 s lease it is live: a call to %s waits", provider, caller);
	l.lease_ms = 4000;
	v = keyshare_acquire(ks, caller, &l, keyshare_micros(1), &t);
	ok(v.block == PROVIDER_FREE && access(path, F_OK) < 0,
	   "%s: under a 4 s lease (a reload) it is dead at the next try: removed, the call starts (%s)",
	   provider, v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(ks, &t);
	unlink(path);
	free(path);
}

/* An operator removes path (a provider's directory, or all of providers/), that both hosts have
 * open, and B makes it again with a call to s: A counts it at its next try, without a failed
 * try (its old handles would fail, or see nothing). */
static void removed_while_open(struct keyshare *a, struct keyshare *b, const char *path,
			       const struct keyshare_limits *one)
{
	struct keyshare_ticket ta, tb;
	ok(nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "an operator removes '%s'", path);
	struct keyshare_verdict v = keyshare_acquire(b, "s", one, 0, &tb);
	ok(v.block == PROVIDER_FREE, "B makes it again, calling (%s)", v.which ? v.which : "free");
	v = keyshare_acquire(a, "s", one, 0, &ta);
	ok(v.block == PROVIDER_BUSY && v.which && !strcmp(v.which, "concurrency"),
	   "A counts B's call in the new one at once (%s)", v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(a, &ta);
	keyshare_release(b, &tb);
}

/* A daily budget of 1.00 alone, with a 60 s lease. */
static const struct keyshare_limits daily_1 = { .budget_daily = 1000000, .window_ms = 60000,
						.lease_ms = 60000 };

/* The text of path (at most 4 KiB), "" if it cannot be read. */
static const char *text_of(const char *path, char *text, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t got = fd >= 0 ? read(fd, text, size - 1) : -1;
	if (fd >= 0)
		close(fd);
	text[got > 0 ? got : 0] = '\0';
	return text;
}

/* A try of ks to call p for want under a daily 1.00: its verdict (the ticket given back). */
static struct keyshare_verdict try_call(struct keyshare *ks, double want)
{
	struct keyshare_ticket t;
	struct keyshare_verdict v = keyshare_acquire(ks, "p", &daily_1, keyshare_micros(want), &t);
	if (v.block == PROVIDER_FREE)
		keyshare_release(ks, &t);
	return v;
}

/* ledger/MONTH/ of this month in the spool at dir (owned). */
static char *month_dir(const char *dir)
{
	long month = keyshare_month(wall_ms());
	return xasprintf("%s/ledger/%04ld-%02ld", dir, month / 12, month % 12 + 1);
}

/* The file of sp's run (a daemon's run) there (owned). */
static char *run_file(const char *dir, const struct spool *sp)
{
	char *month = month_dir(dir), *path = xasprintf("%s/%s.%s.json", month, sp->host_id, sp->run);
	free(month);
	return path;
}

/* The copy of run (of host) that reader carried back, in ended/ there (owned). */
static char *copy_file(const char *dir, const char *host, const char *run, const char *reader)
{
	char *month = month_dir(dir);
	char *path = xasprintf("%s/ended/%s.%s.json.carried-%s", month, host, run, reader);
	free(month);
	return path;
}

/* ---- hosts A and B on one scratch spool ---------------------------------------------------- */

/* Two daemons' keyshares on one scratch spool (a third, C, when a test starts one), A live
 * throughout by its lock, heartbeated now, naming its run (as a daemon on another machine
 * writes it). */
struct hosts {
	char dir[PATH_MAX];
	char *ledgers, *lock;        /* ledger/, and A's lock in running/ */
	struct spool sa, sb, sc;
	struct keyshare *a, *b, *c;
	const char *tag;
};

static bool hosts_open(struct hosts *h, const char *tag)
{
	memset(h, 0, sizeof(*h));
	h->tag = tag;
	if (!scratch_mkdtemp(h->dir, sizeof(h->dir), tag))
		return false;
	h->ledgers = xasprintf("%s/ledger", h->dir);
	h->lock = xasprintf("%s/running/.host.hostA", h->dir);
	bool opened = spool_open(&h->sa, h->dir, "hostA") == 0 && spool_open(&h->sb, h->dir, "hostB") == 0;
	ok(opened && make_lock(h->lock, 0, h->sa.run),
	   "%s: hosts A and B on one spool, A's lock heartbeated now", tag);
	h->a = keyshare_new(&h->sa);
	h->b = keyshare_new(&h->sb);
	return true;
}

/* Host C starts (as a daemon does: a spool of its own, a new run). */
static struct keyshare *hosts_start_c(struct hosts *h)
{
	ok(spool_open(&h->sc, h->dir, "hostC") == 0, "%s: host C starts", h->tag);
	return h->c = keyshare_new(&h->sc);
}

/* Host A stops. */
static void hosts_stop_a(struct hosts *h)
{
	keyshare_free(h->a);
	spool_close(&h->sa);
	h->a = NULL;
}

/* Host A starts (again: a new run; its lock names it, heartbeated now). */
static void hosts_start_a(struct hosts *h)
{
	spool_open(&h->sa, h->dir, "hostA");
	make_lock(h->lock, 0, h->sa.run);
	h->a = keyshare_new(&h->sa);
}

static void hosts_restart_a(struct hosts *h)
{
	hosts_stop_a(h);
	hosts_start_a(h);
}

/* An operator removes ledger/ and makes it again. */
static bool hosts_clear_ledger(struct hosts *h)
{
	return nftw(h->ledgers, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(h->ledgers, 0777) == 0;
}

static void hosts_close(struct hosts *h)
{
	if (h->a)
		hosts_stop_a(h);
	keyshare_free(h->b);
	spool_close(&h->sb);
	if (h->c) {
		keyshare_free(h->c);
		spool_close(&h->sc);
	}
	nftw(h->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(h->ledgers);
	free(h->lock);
}

/* ledger/ removed and made again while host A, which spent 0.5 of a daily 1.00, is live (its
 * lock heartbeated) and has not written its run's file there yet: B never counts it as 0, it
 * waits for A's file. Once A has left, what B read of A's run is carried back into the next new
 * ledger/, for B and for a host that never read it; a lock older than a lease blocks nothing. */
static void cleared_ledger(struct spool *sa, struct keyshare *a, struct keyshare *b, const char *dir,
			   const struct keyshare_limits *money)
{
	char *ledgers = xasprintf("%s/ledger", dir), *lock = xasprintf("%s/running/.host.hostA", dir);
	char *a_ledger = run_file(dir, sa), *a_copy = copy_file(dir, "hostA", sa->run, "hostB");
	char text[4096];
	struct keyshare_ticket t;
	ok(make_lock(lock, 0, sa->run), "host A's lock in running/, heartbeated now: A is live");
	ok(nftw(ledgers, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(ledgers, 0777) == 0,
	   "an operator removes ledger/ and makes it again");
	bool waits = true;
	for (int try = 0; try < 2; try++) {
		struct keyshare_verdict v = keyshare_acquire(b, "p", money, keyshare_micros(0.6), &t);
		waits = waits && v.block == PROVIDER_BUSY && v.which &&
			!strcmp(v.which, "a live host's ledger not in a new ledger/") && v.retry_at > 0 &&
			!t.provider;
		if (v.block == PROVIDER_FREE)
			keyshare_release(b, &t);
	}
	ok(waits, "B's call of 0.6 waits for A's run's file, twice (A's 0.5 is not 0)");
	struct keyshare_verdict v = keyshare_acquire(a, "p", money, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_OVER_BUDGET && access(a_ledger, F_OK) == 0,
	   "A's next call writes its run's file in the new ledger/");
	v = keyshare_acquire(b, "p", money, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "B reads it: 0.5 + 0.6 is over 1.00 (spent %lld)", v.spent);
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);

	ok(unlink(lock) == 0, "A leaves (its lock removed)");
	ok(nftw(ledgers, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(ledgers, 0777) == 0,
	   "ledger/ removed and made again");
	v = keyshare_acquire(b, "p", money, keyshare_micros(0.6), &t);
	text_of(a_copy, text, sizeof(text));
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   strstr(text, "\"carried_by\":\"hostB\"") && strstr(text, "500000"),
	   "B, not waiting for a host that left, still counts its 0.5, and carries it back (%s)", text);
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	struct spool sc;
	ok(spool_open(&sc, dir, "hostC") == 0, "host C starts, never having read A's run");
	struct keyshare *c = keyshare_new(&sc);
	v = keyshare_acquire(c, "p", money, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "C counts A's 0.5 too (spent %lld)", v.spent);
	if (v.block == PROVIDER_FREE)
		keyshare_release(c, &t);
	keyshare_free(c);
	spool_close(&sc);

	ok(make_lock(lock, 120, sa->run), "a lock of A's not heartbeated for two minutes (A died)");
	ok(nftw(ledgers, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(ledgers, 0777) == 0,
	   "ledger/ removed and made again");
	v = keyshare_acquire(b, "p", money, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "B does not wait for a dead host: it counts what it read (%s)", v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	v = keyshare_acquire(b, "p", money, keyshare_micros(0.4), &t);
	ok(v.block == PROVIDER_FREE, "and 0.4 fits");
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	unlink(lock);

	/* A host that makes no budget check (no job) carries it back at its next rescan, before it
	 * writes its own: whoever finds B's file in the new ledger/ finds A's run too. (providers/p
	 * goes too, so that B's look checks every name now, not within 10 s.) */
	char *pdir = xasprintf("%s/providers/p", dir);
	ok(nftw(ledgers, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(ledgers, 0777) == 0 &&
	   nftw(pdir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "ledger/ (and providers/p) cleared");
	struct keyshare_view view;
	ok(keyshare_look(b, "p", &view) == 0 && access(a_copy, F_OK) == 0,
	   "B's next rescan carries A's run back");
	free(pdir);
	free(a_copy);
	free(a_ledger);
	free(lock);
	free(ledgers);
}

/* Host B judges host A's run ended while A only stalled (its lock a lease old: a paused VM, an
 * NFS stall), and carries its older reading of it back into a cleared ledger/. When A comes back
 * it writes its run's whole figure at its next look at ledger/: every host counts the larger,
 * not the older one, which would let B pass the budget (A spent 0.8, B read 0.5; 0.4 more is
 * 1.2 of 1.00). */
static void stalled_host_carried(void)
{
	struct hosts h;
	if (!hosts_open(&h, "stall"))
		return;
	char *a_ledger = run_file(h.dir, &h.sa), *a_copy = copy_file(h.dir, "hostA", h.sa.run, "hostB");
	char text[4096];
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "stall: A spends 0.5, B reads it (spent %lld)", v.spent);
	keyshare_spent(h.a, "p", keyshare_micros(0.3));
	ok(make_lock(h.lock, 120, h.sa.run) && hosts_clear_ledger(&h),
	   "stall: A spends 0.3 more (0.8), then stalls two minutes; ledger/ cleared meanwhile");
	v = try_call(h.b, 0.6);
	text_of(a_copy, text, sizeof(text));
	ok(v.block == PROVIDER_OVER_BUDGET && strstr(text, "\"carried_by\":\"hostB\"") &&
	   strstr(text, "500000"), "stall: B judges A's run ended and carries its 0.5 back (%s)", text);
	ok(utimensat(AT_FDCWD, h.lock, NULL, 0) == 0, "stall: A comes back (its lock heartbeated)");
	hosts_start_c(&h);
	v = try_call(h.c, 0.4);
	ok(v.block == PROVIDER_BUSY && v.which &&
	   !strcmp(v.which, "a live host's ledger not in a new ledger/"),
	   "stall: C's 0.4 waits: of A's run, live, there is only a copy carried back (%s)",
	   v.which ? v.which : "free");
	struct keyshare_view view;
	keyshare_look(h.a, "p", &view);
	v = try_call(h.a, 0.3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.8),
	   "stall: A looks and checks a budget: it counts its 0.8 (spent %lld)", v.spent);
	text_of(a_ledger, text, sizeof(text));
	ok(!strstr(text, "carried_by") && strstr(text, "800000"),
	   "stall: and writes its run's file again (%s)", text);
	v = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.8),
	   "stall: B's 0.4 does not fit: the larger, 0.8 + 0.4, is over 1.00 (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	ok(access(a_copy, F_OK) < 0,
	   "stall: B removes its copy, which can no longer matter: A's own file holds all it says");
	v = try_call(h.c, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.8),
	   "stall: so does C's, once A wrote its own (%s, spent %lld)", v.which ? v.which : "free",
	   v.spent);
	free(a_copy);
	free(a_ledger);
	hosts_close(&h);
}

/* How A's run's file is made unreadable for B. */
struct unreadable_row {
	const char *name;
	const char *content;     /* renamed into place (as a ledger is); NULL: a directory */
	size_t pad;              /* spaces after it */
};

static const struct unreadable_row unreadable_rows[] = {
	{ "torn (half a ledger)", "{\"host\":\"hostA\",\"day\":", 0 },
	{ "JSON but not a ledger", "[]", 0 },
	{ "a figure that is not a number", "{\"day\":1,\"month\":1,\"providers\":{\"p\":"
	  "{\"day_micros\":\"900000\",\"month_micros\":900000}}}", 0 },
	{ "another run's figures", "{\"host\":\"hostA\",\"run\":\"0123456789abcdef\",\"day\":1,"
	  "\"month\":1,\"providers\":{}}", 0 },
	{ "over the size cap", "{}", 70000 },
	/* A directory is no ledger at all: planted_directory. */
};

/* Puts content (+ pad spaces) at path in ledger/MONTH/ as a host would:
 * written under a dot-name and renamed into place; then path and its directory get quiet
 * times, so that what B read of them would be kept. */
static bool ledger_replace(const char *month, const char *path, const char *content, size_t pad)
{
	struct timespec quiet[2] = { { .tv_sec = time(NULL) - 60 }, { .tv_sec = time(NULL) - 60 } };
	char *tmp = xasprintf("%s/.hostA.json.tmp", month);
	char *text = xcalloc(strlen(content) + pad + 1, 1);
	memcpy(text, content, strlen(content));
	memset(text + strlen(content), ' ', pad);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
	bool done = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) &&
		    close(fd) == 0 && rename(tmp, path) == 0;
	free(text);
	free(tmp);
	return done && utimensat(AT_FDCWD, path, quiet, AT_SYMLINK_NOFOLLOW) == 0 &&
	       utimensat(AT_FDCWD, month, quiet, 0) == 0;
}

/* A's run's file (0.5 spent of a daily 1.00) made unreadable in each way: B never counts it as
 * 0, nor keeps it as read; it says so once; the fixed file is read at once, and said. */
static void unreadable_ledgers(struct spool *sa, struct keyshare *b, const char *dir,
			       const struct keyshare_limits *money)
{
	char *month = month_dir(dir), *path = run_file(dir, sa);
	char *log_path = xasprintf("%s/stderr-ledger", dir);
	char good[4096] = "";
	ok(*text_of(path, good, sizeof(good)), "A's run's file as written");
	for (size_t i = 0; i < sizeof(unreadable_rows) / sizeof(unreadable_rows[0]); i++) {
		const struct unreadable_row *r = &unreadable_rows[i];
		struct said said;
		struct keyshare_ticket t;
		ok(said_start(&said, log_path) && ledger_replace(month, path, r->content, r->pad),
		   "A's run's file %s", r->name);
		bool waits = true;
		for (int try = 0; try < 2; try++) {
			struct keyshare_verdict v = keyshare_acquire(b, "p", money, keyshare_micros(0.6), &t);
			waits = waits && v.block == PROVIDER_BUSY && v.which &&
				!strcmp(v.which, "an unreadable ledger") && v.retry_at > 0 && !t.provider;
			if (v.block == PROVIDER_FREE)
				keyshare_release(b, &t);
		}
		ok(waits, "%s: a call of 0.6 waits, twice (never counted as 0 spent)", r->name);
		ok(ledger_replace(month, path, good, 0), "%s: A's run's file fixed", r->name);
		struct keyshare_verdict v = keyshare_acquire(b, "p", money, keyshare_micros(0.6), &t);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
		   "%s: read again at the next try: 0.5 + 0.6 is over 1.00 (spent %lld)", r->name, v.spent);
		if (v.block == PROVIDER_FREE)
			keyshare_release(b, &t);
		v = keyshare_acquire(b, "p", money, keyshare_micros(0.4), &t);
		ok(v.block == PROVIDER_FREE, "%s: and 0.4 fits", r->name);
		if (v.block == PROVIDER_FREE)
			keyshare_release(b, &t);
		said_end(&said);
		unlink(log_path);
		ok(said_count(said.text, "cannot read") == 1 && said_count(said.text, "can be read again") == 1,
		   "%s: said once as it fails, once as it is read again", r->name);
	}
	free(log_path);
	free(path);
	free(month);
}

/* ledger/ that cannot be opened (a file in its place): no ledger can be shared. While B is the
 * only live host its own figures are all that was spent: its calls go on under them (they used
 * to wait for good). While another host is live, that host's spend is unknown: they wait. Each
 * change is said once, with why the open failed. */
static void unusable_ledger(void)
{
	char dir[PATH_MAX];
	if (!scratch_mkdtemp(dir, sizeof(dir), "keyshare-noledger"))
		return;
	struct spool sb;
	struct keyshare_ticket t;
	char *ledgers = xasprintf("%s/ledger", dir), *lock = xasprintf("%s/running/.host.hostA", dir);
	char *log_path = xasprintf("%s/said", dir);
	ok(spool_open(&sb, dir, "hostB") == 0, "no ledger: host B's spool");
	rmdir(ledgers);
	int fd = open(ledgers, O_WRONLY | O_CREAT | O_EXCL, 0644);
	struct said said;
	ok(fd >= 0 && close(fd) == 0 && said_start(&said, log_path),
	   "no ledger: a file where ledger/ belongs");
	struct keyshare *b = keyshare_new(&sb);
	struct keyshare_verdict v = keyshare_acquire(b, "p", &daily_1, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_FREE, "no ledger: B alone calls for 0.6 (%s)", v.which ? v.which : "free");
	/* Its cost cannot be written: its ticket stays, reserving 0.6 too (as in main). */
	if (v.block == PROVIDER_FREE)
		keyshare_release_spent(b, &t, keyshare_spent(b, "p", keyshare_micros(0.3)));
	v = keyshare_acquire(b, "p", &daily_1, keyshare_micros(0.5), &t);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.3),
	   "no ledger: its own 0.3 counts: 0.5 more is over 1.00 (spent %lld, reserved %lld)",
	   v.spent, v.reserved);
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	ok(make_lock(lock, 0, NULL), "no ledger: host A starts (its lock heartbeated now)");
	bool waits = true;
	for (int try = 0; try < 2; try++) {
		v = keyshare_acquire(b, "p", &daily_1, keyshare_micros(0.1), &t);
		waits = waits && v.block == PROVIDER_BUSY && v.which &&
			!strcmp(v.which, "a live host's spend, with no ledger/ to share it") &&
			v.retry_at > 0;
		if (v.block == PROVIDER_FREE)
			keyshare_release(b, &t);
	}
	ok(waits, "no ledger: with A live, B's call of 0.1 waits, twice (A's spend is unknown)");
	ok(make_lock(lock, 120, NULL), "no ledger: A's lock not heartbeated for two minutes (A died)");
	v = keyshare_acquire(b, "p", &daily_1, keyshare_micros(0.1), &t);
	ok(v.block == PROVIDER_FREE, "no ledger: alone again, B's 0.1 fits (%s)",
	   v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	said_end(&said);
	ok(strstr(said.text, "cannot open '") && strstr(said.text, "/ledger' (Not a directory)") &&
	   said_count(said.text, "and no other host is live:") == 2 &&
	   said_count(said.text, "host 'hostA' is live") == 1 &&
	   said_count(said.text, "wait while another host is live") == 1,
	   "no ledger: said at start-up, then once per change, with why the open failed:\n%s",
	   said.text);
	keyshare_free(b);
	spool_close(&sb);
	unlink(log_path);
	free(log_path);
	free(lock);
	free(ledgers);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* In a new ledger/ budgets wait for every live host's ledger; a file in running/ with a lock's
 * name that no daemon wrote (not a lock's content; with another user's uid too, in
 * test_hostlock) is no host, however fresh: it blocks nothing. */
static void forged_lock(void)
{
	char dir[PATH_MAX];
	if (!scratch_mkdtemp(dir, sizeof(dir), "keyshare-forged"))
		return;
	struct spool sb;
	struct keyshare_ticket t;
	char *lock = xasprintf("%s/running/.host.hostF", dir);
	ok(spool_open(&sb, dir, "hostB") == 0, "forged: host B's spool");
	int fd = open(lock, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && write(fd, "not a lock\n", 11) == 11 && close(fd) == 0,
	   "forged: running/.host.hostF, fresh, not a lock's content");
	struct keyshare *b = keyshare_new(&sb);
	struct keyshare_verdict v = keyshare_acquire(b, "p", &daily_1, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_FREE, "forged: B's call does not wait for hostF.json (%s)",
	   v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	ok(make_lock(lock, 0, NULL), "forged: a real lock of host F's, fresh");
	keyshare_free(b);
	b = keyshare_new(&sb);
	v = keyshare_acquire(b, "p", &daily_1, keyshare_micros(0.6), &t);
	ok(v.block == PROVIDER_BUSY && v.which &&
	   !strcmp(v.which, "a live host's ledger not in a new ledger/"),
	   "forged: B, started again, waits for live F's ledger (%s)", v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t);
	keyshare_free(b);
	spool_close(&sb);
	free(lock);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Host A, live, spent 0.5 of a daily 1.00 in its run 1 (B read it), and restarts after ledger/
 * was cleared: run 2 starts with a file of its own, 0. B puts what it read of run 1 back, where
 * a host that never read it (C) counts it too, and so does A. Nothing is counted twice: not by
 * B, not by C, not by A after it restarts again. A copy no daemon wrote, or whose content is
 * not its name's, counts for nothing. */
static void restarted_without_ledger(void)
{
	struct hosts h;
	if (!hosts_open(&h, "restart"))
		return;
	char text[4096], left[4096], run1[17];
	memcpy(run1, h.sa.run, sizeof(run1));
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "restart: A spends 0.5, B reads it (spent %lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "restart: A stops; ledger/ is cleared");
	hosts_start_a(&h);
	char *a_ledger = run_file(h.dir, &h.sa), *copy = copy_file(h.dir, "hostA", run1, "hostB");
	text_of(a_ledger, text, sizeof(text));
	ok(strstr(text, h.sa.run) && !strstr(text, "500000"),
	   "restart: A starts run 2: its file says 0 (%s)", text);
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   strstr(text_of(copy, left, sizeof(left)), "500000") &&
	   strstr(left, "\"carried_by\":\"hostB\""),
	   "restart: B still counts run 1's 0.5, and puts it back (%s, spent %lld: %s)",
	   v.which ? v.which : "free", v.spent, left);
	hosts_start_c(&h);
	v = try_call(h.c, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "restart: C, which never read run 1, counts it too (spent %lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "restart: ledger/ cleared again, B's copy with it; A restarts again");
	hosts_start_a(&h);
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   strstr(text_of(copy, text, sizeof(text)), "500000"),
	   "restart: B still counts run 1, and puts it back again (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	struct hosts_say { struct keyshare *ks; const char *who; } who[] = {
		{ h.a, "A" }, { h.b, "B" }, { h.c, "C" } };
	for (size_t i = 0; i < 3; i++) {
		v = try_call(who[i].ks, 0.6);
		struct keyshare_verdict fits = try_call(who[i].ks, 0.4);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
		   fits.block == PROVIDER_FREE,
		   "restart: %s counts run 1's 0.5 once: 0.6 is over, 0.4 fits (spent %lld, %s)",
		   who[i].who, v.spent, fits.which ? fits.which : "free");
	}
	hosts_restart_a(&h);
	v = try_call(h.a, 0.6);
	struct keyshare_verdict fits = try_call(h.a, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE,
	   "restart: A restarts with the files there: 0.5, not 1.0 (spent %lld, %s)", v.spent,
	   fits.which ? fits.which : "free");

	/* Copies no daemon wrote: another user's, and one whose content is not its name's. */
	char *forged = copy_file(h.dir, "hostA", run1, "hostY");
	char *misnamed = copy_file(h.dir, "hostA", run1, "hostZ");
	char *big = xstrdup(left), *at = strstr(big, "500000");
	if (at)
		memcpy(at, "900000", 6);
	char *of_y = big;
	int fd = open(forged, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && write(fd, of_y, strlen(of_y)) == (ssize_t)strlen(of_y) &&
	   fchown(fd, 65534, 65534) == 0 && close(fd) == 0,
	   "forged copy: 0.9 of run 1, of another user (nobody)");
	fd = open(misnamed, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && write(fd, big, strlen(big)) == (ssize_t)strlen(big) && close(fd) == 0,
	   "forged copy: and 0.9 under a name its content does not give");
	struct spool sd;
	ok(spool_open(&sd, h.dir, "hostD") == 0, "forged copy: host D starts");
	struct keyshare *d = keyshare_new(&sd);
	v = try_call(d, 0.6);
	fits = try_call(d, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE, "forged copy: D counts neither (spent %lld, %s)", v.spent,
	   fits.which ? fits.which : "free");
	keyshare_free(d);
	spool_close(&sd);
	free(big);
	free(misnamed);
	free(forged);
	free(copy);
	free(a_ledger);
	hosts_close(&h);
}

/* How a file of A's earlier run cannot be read when A starts again. */
struct own_unread_row {
	const char *name;
	const char *junk;        /* written over it while A is stopped; NULL: a second link */
	const char *said;        /* in the log line */
};

static const struct own_unread_row own_unread_rows[] = {
	{ "a second link", NULL, "more than one hard link" },
	{ "junk (not JSON)", "not a ledger at all", "not JSON" },
};

/* Host A alone spent 0.5 of a daily 1.00 in its run 1 and restarts while that run's file cannot
 * be read: it never takes that as no file. It does not write over it (run 2 writes only its
 * own), its budgeted calls wait (never counted as 0 spent), and it says so once, naming the
 * file and why, and what an operator does. Read again at the next try once readable: 0.5 is
 * counted, the file keeps it. Junk moved aside: A goes on without it. */
static void own_ledger_unreadable(void)
{
	for (size_t i = 0; i < sizeof(own_unread_rows) / sizeof(own_unread_rows[0]); i++) {
		const struct own_unread_row *r = &own_unread_rows[i];
		char dir[PATH_MAX];
		if (!scratch_mkdtemp(dir, sizeof(dir), "keyshare-ownread"))
			return;
		struct spool sa;
		ok(spool_open(&sa, dir, "hostA") == 0, "own %s: A", r->name);
		char *a_ledger = run_file(dir, &sa), *month = month_dir(dir);
		char *other = xasprintf("%s/.hostA.json.link", month);
		char *log_path = xasprintf("%s/stderr-own", dir);
		char text[4096], before[4096];
		struct keyshare *a = keyshare_new(&sa);
		keyshare_spent(a, "p", keyshare_micros(0.5));
		keyshare_free(a);
		spool_close(&sa);
		bool made;
		if (!r->junk) {
			made = link(a_ledger, other) == 0;
		} else {
			int fd = open(a_ledger, O_WRONLY | O_TRUNC);
			made = fd >= 0 && write(fd, r->junk, strlen(r->junk)) == (ssize_t)strlen(r->junk);
			made = fd >= 0 && close(fd) == 0 && made;
		}
		text_of(a_ledger, before, sizeof(before));
		ok(made && (r->junk || strstr(before, "500000")),
		   "own %s: A's run 1 spent 0.5 and stopped; its file then has %s", r->name, r->name);
		struct said said;
		ok(said_start(&said, log_path), "own %s: the log kept", r->name);
		spool_open(&sa, dir, "hostA");
		a = keyshare_new(&sa);
		struct keyshare_verdict v = try_call(a, 0.6);
		bool waits = v.block == PROVIDER_BUSY && v.which && v.retry_at > 0;
		v = try_call(a, 0.6);
		waits = waits && v.block == PROVIDER_BUSY;
		said_so_far(&said);
		int told = said_count(said.text, "cannot read");
		bool named = strstr(said.text, "hostA.") && strstr(said.text, r->said) &&
			     strstr(said.text, "moves it aside");
		said_end(&said);
		unlink(log_path);
		ok(waits, "own %s: A restarts (run 2); a call of 0.6 waits, twice (never counted as 0 "
		   "spent)", r->name);
		ok(!strcmp(text_of(a_ledger, text, sizeof(text)), before),
		   "own %s: run 1's file is not written over (%s)", r->name, text);
		ok(told == 1 && named, "own %s: said once, with the file, why, and what to do: %s",
		   r->name, said.text);
		if (!r->junk) {
			ok(unlink(other) == 0, "own %s: the other link goes", r->name);
			v = try_call(a, 0.6);
			ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
			   "own %s: read at the next try: 0.5 + 0.6 is over 1.00 (spent %lld)", r->name,
			   v.spent);
			ok(try_call(a, 0.4).block == PROVIDER_FREE &&
			   strstr(text_of(a_ledger, text, sizeof(text)), "500000"),
			   "own %s: 0.4 fits, and run 1's file still says 0.5 (%s)", r->name, text);
		} else {
			ok(rename(a_ledger, other) == 0, "own %s: an operator moves it aside", r->name);
			v = try_call(a, 0.6);
			ok(v.block == PROVIDER_FREE, "own %s: A goes on without it (%s)", r->name,
			   v.which ? v.which : "free");
		}
		keyshare_free(a);
		spool_close(&sa);
		free(log_path);
		free(other);
		free(month);
		free(a_ledger);
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	}
}

/* Host A restarts twice after ledger/ was cleared: run 1 spent 0.5, run 2 0.2 (B read both),
 * run 3 starts. Both earlier runs count, each once: 0.7, for B and for A. */
static void restarted_twice(void)
{
	struct hosts h;
	if (!hosts_open(&h, "twice"))
		return;
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "twice: A's run 1 spends 0.5, B reads it (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "twice: ledger/ cleared; A restarts as run 2");
	hosts_start_a(&h);
	keyshare_spent(h.a, "p", keyshare_micros(0.2));
	v = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7),
	   "twice: run 2 spends 0.2; B counts 0.7 (spent %lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "twice: ledger/ cleared again; A restarts as run 3");
	hosts_start_a(&h);
	v = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7),
	   "twice: B still counts runs 1 and 2: 0.4 more is over 1.00 (spent %lld)", v.spent);
	v = try_call(h.a, 0.4);
	struct keyshare_verdict fits = try_call(h.a, 0.3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7) &&
	   fits.block == PROVIDER_FREE,
	   "twice: A counts B's copies: 0.7, each run once (spent %lld, %s)", v.spent,
	   fits.which ? fits.which : "free");
	v = try_call(h.b, 0.4);
	fits = try_call(h.b, 0.3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7) &&
	   fits.block == PROVIDER_FREE, "twice: and B counts each run once (spent %lld)", v.spent);
	hosts_close(&h);
}

/* A copy's name is known in advance (host, run, reader): another user who may write ledger/
 * puts a file there first. B's copy is put over it (rename), so B's reading is not lost. */
static void planted_copy(void)
{
	struct hosts h;
	if (!hosts_open(&h, "planted"))
		return;
	char text[4096], run1[17];
	memcpy(run1, h.sa.run, sizeof(run1));
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "planted: A's run 1 spends 0.5, B reads it (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "planted: A stops; ledger/ is cleared");
	char *month = month_dir(h.dir), *planted = copy_file(h.dir, "hostA", run1, "hostB");
	char *ended = xasprintf("%s/ended", month);
	int fd = mkdir(month, 0777) == 0 && mkdir(ended, 0777) == 0 ?
		 open(planted, O_WRONLY | O_CREAT | O_EXCL, 0644) : -1;
	free(ended);
	ok(fd >= 0 && write(fd, "{}", 2) == 2 && fchown(fd, 65534, 65534) == 0 && close(fd) == 0,
	   "planted: another user (nobody) makes B's copy's name first");
	hosts_start_a(&h);
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   strstr(text_of(planted, text, sizeof(text)), "500000"),
	   "planted: B still counts A's 0.5, and its copy replaces the planted file (%s; spent %lld)",
	   text, v.spent);
	v = try_call(h.a, 0.6);
	struct keyshare_verdict fits = try_call(h.a, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE, "planted: A counts it (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	free(planted);
	free(month);
	hosts_close(&h);
}

/* Host A stalls after spending 0.8 (B read 0.5 of it): its lock goes a lease without a beat,
 * its run's file is removed meanwhile, and B, judging the run ended, carries its 0.5 back, which
 * every host counts, waiting for nothing more. When A comes back, its first heartbeat is late by
 * the stall: it writes its whole 0.8 again at once, not at its next look at ledger/ (10 s later,
 * or its next billed call), so B's 0.4 no longer fits. */
static void stalled_host_beats(void)
{
	struct hosts h;
	if (!hosts_open(&h, "beat"))
		return;
	char *a_ledger = run_file(h.dir, &h.sa), *a_copy = copy_file(h.dir, "hostA", h.sa.run, "hostB");
	char text[4096];
	const int64_t lease_ms = 2;   /* A's beats every 0.5 ms: one 1 ms late is a stall */
	keyshare_beat(h.a, lease_ms);
	int64_t beat = mono_ms();
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "beat: A spends 0.5, B reads it (spent %lld)", v.spent);
	keyshare_spent(h.a, "p", keyshare_micros(0.3));
	ok(make_lock(h.lock, 120, h.sa.run) && unlink(a_ledger) == 0,
	   "beat: A spends 0.3 more (0.8), then stalls two minutes; its file is removed meanwhile");
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && strstr(text_of(a_copy, text, sizeof(text)),
						     "\"carried_by\":\"hostB\"") &&
	   strstr(text, "500000"), "beat: B judges A's run ended and carries its 0.5 back (%s)", text);
	v = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_FREE, "beat: while A stalls, B's 0.4 fits: A's 0.3 after B's reading is "
	   "not in any file (%s)", v.which ? v.which : "free");
	ok(utimensat(AT_FDCWD, h.lock, NULL, 0) == 0, "beat: A comes back (its lock heartbeated)");
	while (mono_ms() < beat + lease_ms / 2)
		;   /* a stall of half a lease, on the clock keyshare_beat reads */
	keyshare_beat(h.a, lease_ms);
	text_of(a_ledger, text, sizeof(text));
	ok(!strstr(text, "carried_by") && strstr(text, "800000"),
	   "beat: A's first beat, late, writes its 0.8 again (%s)", text);
	v = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.8),
	   "beat: B's 0.4 no longer fits: 0.8 + 0.4 is over 1.00 (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	free(a_copy);
	free(a_ledger);
	hosts_close(&h);
}

/* The copies of readings hosts left in ledger/ (names with ".carried-", at any depth), kept to
 * be put back as they were: a host slow to look leaves one again. */
struct carried { char *path[16], *text[16]; int n; };
static struct carried *carried_now;

static int carried_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_F && strstr(path + ftw->base, ".carried-") && carried_now->n < 16) {
		char *text = xcalloc((size_t)st->st_size + 1, 1);
		int fd = open(path, O_RDONLY);
		if (fd >= 0 && read(fd, text, (size_t)st->st_size) == st->st_size) {
			carried_now->path[carried_now->n] = xstrdup(path);
			carried_now->text[carried_now->n++] = text;
		} else {
			free(text);
		}
		if (fd >= 0)
			close(fd);
	}
	return 0;
}

static void carried_keep(struct hosts *h, struct carried *c)
{
	memset(c, 0, sizeof(*c));
	carried_now = c;
	nftw(h->ledgers, carried_one, 16, FTW_PHYS);
}

/* Puts back those of c that are gone; how many. */
static int carried_put_back(struct carried *c)
{
	int n = 0;
	for (int i = 0; i < c->n; i++) {
		char *dir = xstrdup(c->path[i]);
		*strrchr(dir, '/') = '\0';
		mkdir(dir, 0777);
		int fd = open(c->path[i], O_WRONLY | O_CREAT | O_EXCL, 0644);
		n += fd >= 0 && write(fd, c->text[i], strlen(c->text[i])) == (ssize_t)strlen(c->text[i]);
		if (fd >= 0)
			close(fd);
		free(dir);
	}
	return n;
}

static void carried_free(struct carried *c)
{
	for (int i = 0; i < c->n; i++) {
		free(c->path[i]);
		free(c->text[i]);
	}
}

/* A's run 1 spent 0.5 (B read it); A restarts after ledger/ is cleared, and B puts that reading
 * back for the other hosts. ledger/ is cleared once more while A's run 2 is live: B must put it
 * back again, else C, which never read run 1, counts 0 of it (and passes the budget by 0.5). */
static void cleared_again(void)
{
	struct hosts h;
	if (!hosts_open(&h, "again"))
		return;
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "again: A's run 1 spends 0.5, B reads it (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "again: A stops; ledger/ cleared");
	hosts_start_a(&h);
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "again: A starts run 2; B still counts run 1 (spent %lld)", v.spent);
	ok(hosts_clear_ledger(&h), "again: ledger/ cleared again, while run 2 is live");
	try_call(h.a, 0.1);   /* A writes its run's file again */
	try_call(h.b, 0.1);   /* B finds the new ledger/ */
	hosts_start_c(&h);
	v = try_call(h.c, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "again: C, which never read run 1, counts its 0.5: 0.6 more is over 1.00 (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	hosts_close(&h);
}

/* Two hosts read one run of A at different times: B 0.3, C 0.5. After ledger/ is cleared and A
 * restarts, both readings are put back, B's first: the run counts 0.5 (the larger), for A and
 * for a host that read neither, whatever order they are found in. */
static void two_readings(void)
{
	struct hosts h;
	if (!hosts_open(&h, "readings"))
		return;
	hosts_start_c(&h);
	keyshare_spent(h.a, "p", keyshare_micros(0.3));
	struct keyshare_verdict v = try_call(h.b, 0.8);
	ok(v.spent == keyshare_micros(0.3), "readings: A's run 1 spends 0.3, B reads it (%lld)", v.spent);
	keyshare_spent(h.a, "p", keyshare_micros(0.2));
	v = try_call(h.c, 0.8);
	ok(v.spent == keyshare_micros(0.5), "readings: 0.2 more, C reads 0.5 (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "readings: A stops; ledger/ cleared");
	hosts_start_a(&h);
	try_call(h.b, 0.1);   /* B puts its 0.3 back */
	try_call(h.a, 0.1);   /* A finds it */
	try_call(h.c, 0.1);   /* then C its 0.5 */
	v = try_call(h.a, 0.6);
	struct keyshare_verdict fits = try_call(h.a, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE,
	   "readings: A counts the larger, 0.5: 0.6 more is over (%s, spent %lld), 0.4 fits (%s)",
	   v.which ? v.which : "free", v.spent, fits.which ? fits.which : "free");
	struct spool sd;
	ok(spool_open(&sd, h.dir, "hostD") == 0, "readings: host D starts");
	struct keyshare *d = keyshare_new(&sd);
	v = try_call(d, 0.6);
	fits = try_call(d, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE, "readings: so does D, which read neither (%s, spent %lld; %s)",
	   v.which ? v.which : "free", v.spent, fits.which ? fits.which : "free");
	keyshare_free(d);
	spool_close(&sd);
	hosts_close(&h);
}

/* What a restarted run took in is known after a later restart too: A's run 1 spends 0.3, run 2
 * (ledger/ cleared before it) 0.2; ledger/ is cleared again, run 3 finds a reading of run 1 put
 * back, and restarts (run 4) before it finds run 2's. Run 2's reading holds run 1: A counts 0.5,
 * not 0.8 (a refusal of calls that fit). */
static void restarted_after_taking(void)
{
	struct hosts h;
	if (!hosts_open(&h, "taken"))
		return;
	struct carried first;
	keyshare_spent(h.a, "p", keyshare_micros(0.3));
	try_call(h.b, 0.1);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "taken: A's run 1 spends 0.3 (B reads it) and stops; ledger/ cleared");
	hosts_start_a(&h);
	try_call(h.b, 0.1);   /* B puts run 1 back */
	carried_keep(&h, &first);
	ok(first.n > 0, "taken: B's reading of run 1 is there (%d)", first.n);
	try_call(h.a, 0.1);
	keyshare_spent(h.a, "p", keyshare_micros(0.2));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "taken: run 2 spends 0.2: B counts 0.5 (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "taken: A stops; ledger/ cleared again");
	hosts_start_a(&h);
	ok(carried_put_back(&first) == first.n, "taken: run 3; B's reading of run 1 there again");
	try_call(h.a, 0.1);   /* run 3 finds it */
	hosts_restart_a(&h);  /* run 4, with run 3's file there */
	try_call(h.b, 0.1);   /* B finds run 4, leaves what it read of run 2 */
	try_call(h.a, 0.1);
	v = try_call(h.a, 0.6);
	struct keyshare_verdict fits = try_call(h.a, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE, "taken: A's run 4 counts 0.5, each run once (spent %lld, %s)",
	   v.spent, fits.which ? fits.which : "free");
	v = try_call(h.b, 0.6);
	fits = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
	   fits.block == PROVIDER_FREE, "taken: so does B (spent %lld, %s)", v.spent,
	   fits.which ? fits.which : "free");
	carried_free(&first);
	hosts_close(&h);
}

/* A restarts 33 times after its run 1 (0.3, read by B) lost its file, each run spending 0.01;
 * then a host slow to look puts B's reading of run 1 back once more: it is the same run,
 * counted once (0.63 in all, not 0.93). */
static void many_restarts(void)
{
	struct hosts h;
	if (!hosts_open(&h, "many"))
		return;
	struct carried first;
	keyshare_spent(h.a, "p", keyshare_micros(0.3));
	try_call(h.b, 0.1);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "many: A's run 1 spends 0.3 (B reads it) and stops; ledger/ cleared");
	hosts_start_a(&h);
	try_call(h.b, 0.1);   /* B puts run 1 back */
	carried_keep(&h, &first);
	try_call(h.a, 0.1);
	for (int i = 0; i < 33; i++) {
		hosts_restart_a(&h);
		keyshare_spent(h.a, "p", keyshare_micros(0.01));
	}
	int back = carried_put_back(&first);
	try_call(h.a, 0.1);
	struct keyshare_verdict v = try_call(h.a, 0.4);
	struct keyshare_verdict fits = try_call(h.a, 0.3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.63) &&
	   fits.block == PROVIDER_FREE,
	   "many: after 33 restarts and run 1's reading put back (%d), A counts it once: 0.63 "
	   "(spent %lld; 0.3 more: %s)",
	   back, v.spent, fits.which ? fits.which : "free");
	carried_free(&first);
	hosts_close(&h);
}

/* A run's file goes into ledger/MONTH/ended/ when the run ends (a clean exit), and a run that
 * holds its host's lock moves its host's earlier runs' files there (one left by a crash): the
 * month's directory keeps the live runs' files, and ended/ is counted as much. */
static void ended_runs(void)
{
	struct hosts h;
	if (!hosts_open(&h, "ended"))
		return;
	char *month = month_dir(h.dir), *run1 = run_file(h.dir, &h.sa);
	char *ended1 = xasprintf("%s/ended/%s", month, strrchr(run1, '/') + 1);
	char text[4096];
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "ended: A's run 1 spends 0.5, B reads it (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(access(run1, F_OK) < 0 && strstr(text_of(ended1, text, sizeof(text)), "500000"),
	   "ended: A stops: its run's file is in ended/ (%s)", text);
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "ended: B counts it there (%s, spent %lld)", v.which ? v.which : "free", v.spent);
	hosts_start_a(&h);
	char *run2 = run_file(h.dir, &h.sa);
	keyshare_spent(h.a, "p", keyshare_micros(0.2));
	text_of(run2, text, sizeof(text));
	hosts_stop_a(&h);
	int fd = open(run2, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) && close(fd) == 0,
	   "ended: run 2 spends 0.2 and crashes: its file left in the month's directory");
	hosts_start_a(&h);
	v = try_call(h.a, 0.4);
	struct keyshare_verdict fits = try_call(h.a, 0.3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7) &&
	   fits.block == PROVIDER_FREE && access(run2, F_OK) < 0,
	   "ended: run 3 moves it into ended/, and counts 0.7, each run once (spent %lld, %s)",
	   v.spent, fits.which ? fits.which : "free");
	v = try_call(h.b, 0.4);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7),
	   "ended: so does B (spent %lld)", v.spent);
	free(run2);
	free(ended1);
	free(run1);
	free(month);
	hosts_close(&h);
}

/* ---- the review's probes (review2): files planted, and a step of another host in between ---- */

/* A hook on statx (keyshare.c's look at a file or directory just before it reads it): when armed,
 * at the first statx of name in any directory, or of a directory itself ("") of inode ino, run(arg)
 * runs once, before the look: another host's step between two of this host's. */
static struct statx_hook {
	void (*run)(void *arg);
	void *arg;
	const char *name;            /* NULL: a directory's own look, of inode ino */
	ino_t ino;
	int fired;
	long counted;                /* statx calls made (every one, armed or not) */
} statx_hook;

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out)
{
	statx_hook.counted++;
	if (statx_hook.run) {
		struct stat st;
		bool hit = statx_hook.name ? !strcmp(path, statx_hook.name) :
			   !*path && fstat(dirfd, &st) == 0 && st.st_ino == statx_hook.ino;
		if (hit) {
			void (*run)(void *) = statx_hook.run;
			statx_hook.run = NULL;
			statx_hook.fired++;
			run(statx_hook.arg);
		}
	}
	return (int)syscall(SYS_statx, dirfd, path, flags, mask, out);
}

/* A ledger's text for run of host: provider p's figures day_micros dm, month_micros mm. */
static char *ledger_text(const char *host, const char *run, long day, long month, long long dm,
			 long long mm)
{
	return xasprintf("{\"host\":\"%s\",\"run\":\"%s\",\"day\":%ld,\"month\":%ld,\"providers\":"
			 "{\"p\":{\"day_micros\":%lld,\"month_micros\":%lld}}}", host, run, day, month,
			 dm, mm);
}

/* path made with text, owned by uid (-1: this user), its mtime 10 s back (a quiet file). */
static bool plant(const char *path, const char *text, uid_t uid)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct timespec quiet[2] = { { .tv_sec = time(NULL) - 10 }, { .tv_sec = time(NULL) - 10 } };
	bool made = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) &&
		    (uid == (uid_t)-1 || fchownat(fd, "", uid, uid, AT_EMPTY_PATH) == 0);
	return fd >= 0 && close(fd) == 0 && made && utimensat(AT_FDCWD, path, quiet, 0) == 0;
}

/* A total daily budget of 1.00 alone, with a 60 s lease. */
static const struct keyshare_limits total_1 = { .total_daily = 1000000, .window_ms = 60000,
						.lease_ms = 60000 };

struct ended_call {
	struct keyshare *ks;
	struct keyshare_ticket *t;
	double cost;
};

/* A's call to q ends: its cost written, then its ticket removed (as a daemon does). */
static void call_ends(void *arg)
{
	struct ended_call *c = arg;
	long day, month;
	keyshare_today(c->ks, &day, &month);
	struct keyshare_spend one = { .provider = "q", .amount = keyshare_micros(c->cost) };
	unsigned long gen = keyshare_spent_batch(c->ks, &one, 1, day, month);
	keyshare_release_spent(c->ks, c->t, gen);
}

/* F5: under a total budget, A's call to q (0.60) ends while B checks its call to p (0.50):
 * between B's look at the ledgers and its look at q's calls/. B must see it in one of them. */
static void ended_between_looks(void)
{
	struct hosts h;
	if (!hosts_open(&h, "between"))
		return;
	struct keyshare_ticket tq, tp;
	struct keyshare_verdict v = keyshare_acquire(h.a, "q", &total_1, keyshare_micros(0.6), &tq);
	ok(v.block == PROVIDER_FREE, "between: A calls q, reserving 0.60 of a total daily 1.00");
	char *calls = xasprintf("%s/providers/q/calls", h.dir);
	struct stat st;
	struct ended_call c = { h.a, &tq, 0.6 };
	statx_hook = (struct statx_hook){ .run = call_ends, .arg = &c,
					   .ino = stat(calls, &st) == 0 ? st.st_ino : 0 };
	v = keyshare_acquire(h.b, "p", &total_1, keyshare_micros(0.5), &tp);
	ok(statx_hook.fired == 1, "between: A's call ends (written, then its ticket gone) as B looks "
	   "at q's calls/");
	statx_hook.run = NULL;
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent + v.reserved == keyshare_micros(1.1),
	   "between: B counts it, spent or reserved: its 0.50 does not start (%s, spent %lld, "
	   "reserved %lld)", v.which ? v.which : "free", v.spent, v.reserved);
	if (v.block == PROVIDER_FREE)
		keyshare_release(h.b, &tp);
	free(calls);
	hosts_close(&h);
}

/* F7: an earlier release's ledger/HOST.json, read at start-up, still counts after the month's
 * directory is first opened. */
static void legacy_at_start(void)
{
	char dir[PATH_MAX];
	struct spool sb;
	if (!scratch_mkdtemp(dir, sizeof(dir), "legacy"))
		return;
	char *ledgers = xasprintf("%s/ledger", dir), *old = xasprintf("%s/hostOld.json", ledgers);
	long day = spend_day(wall_ms()), month = keyshare_month(wall_ms());
	char *text = ledger_text("hostOld", "0123456789abcdef", day, month, 900000, 900000);
	ok(mkdir(ledgers, 0777) == 0 && plant(old, text, (uid_t)-1),
	   "legacy: an earlier release's ledger/hostOld.json says 0.90 today");
	ok(spool_open(&sb, dir, "hostB") == 0, "legacy: host B starts on that spool");
	struct keyshare *b = keyshare_new(&sb);
	struct keyshare_verdict v = try_call(b, 0.2);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.9),
	   "legacy: B counts it: its 0.20 does not start (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	keyshare_free(b);
	spool_close(&sb);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(text);
	free(old);
	free(ledgers);
}

/* F13: a budget check whose clock reads a day earlier than a spend's (a re-probed server clock a
 * little behind, across midnight) keeps this run's day figures. */
static void clock_steps_back(void)
{
	struct hosts h;
	if (!hosts_open(&h, "back"))
		return;
	long day, month;
	keyshare_today(h.a, &day, &month);
	struct keyshare_spend one = { .provider = "p", .amount = keyshare_micros(0.5) };
	keyshare_spent_batch(h.a, &one, 1, day + 1, month);
	struct keyshare_verdict v = try_call(h.a, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "back: A spent 0.5 on a day its next check's clock has not reached: counted (%s, spent "
	   "%lld)", v.which ? v.which : "free", v.spent);
	char *own = run_file(h.dir, &h.sa), text[4096];
	ok(strstr(text_of(own, text, sizeof(text)), "\"day_micros\":500000") != NULL,
	   "back: and its file still says it (%s)", text);
	free(own);
	hosts_close(&h);
}

/* F3: figures no ledger holds (near the largest integer), and a ticket reserving that much:
 * never a sum that wraps. */
static void huge_figures(void)
{
	struct hosts h;
	if (!hosts_open(&h, "huge"))
		return;
	long day, month;
	keyshare_today(h.b, &day, &month);
	char *mdir = month_dir(h.dir);
	char *path = xasprintf("%s/hostC.00000000000000c1.json", mdir);
	char *text = ledger_text("hostC", "00000000000000c1", day, month, 9223372036854775000LL,
				 9223372036854775000LL);
	ok(plant(path, text, (uid_t)-1), "huge: host C's file says 9.2e18 micros spent");
	struct keyshare_verdict v = try_call(h.b, 0.5);
	ok(v.block == PROVIDER_BUSY && v.which && !strcmp(v.which, "an unreadable ledger"),
	   "huge: not a ledger: B waits for it to be read (%s)", v.which ? v.which : "free");
	unlink(path);
	free(text);
	text = ledger_text("hostC", "00000000000000c1", day, month, 1000000000000001LL, 5);
	ok(plant(path, text, (uid_t)-1), "huge: and one just over 1e15");
	v = try_call(h.b, 0.5);
	ok(v.block == PROVIDER_BUSY && v.which && !strcmp(v.which, "an unreadable ledger"),
	   "huge: not a ledger either (%s)", v.which ? v.which : "free");
	unlink(path);
	char *ticket = xasprintf("%s/providers/p/calls/hostC~5-1~9223372036854775807", h.dir);
	ok(plant(ticket, "", (uid_t)-1), "huge: host C's ticket reserves the largest integer");
	v = try_call(h.b, 0.5);
	ok(v.block == PROVIDER_OVER_BUDGET && v.reserved > keyshare_micros(1),
	   "huge: B's 0.50 does not start: no sum wraps (%s, reserved %lld)",
	   v.which ? v.which : "free", v.reserved);
	unlink(ticket);
	free(ticket);
	free(text);
	free(path);
	free(mdir);
	hosts_close(&h);
}

/* F1, F2: files of another user (uid 12345) at run names count for nothing, are never waited
 * for, and are said once; one at a live run's own name is written over by that run. */
static void foreign_files(void)
{
	struct hosts h;
	if (!hosts_open(&h, "foreign"))
		return;
	long day, month;
	keyshare_today(h.b, &day, &month);
	char *mdir = month_dir(h.dir), *log_path = xasprintf("%s/stderr-foreign", h.dir);
	char *evil1 = xasprintf("%s/evil.0000000000000001.json", mdir);
	char *evil2 = xasprintf("%s/ended/evil.0000000000000002.json", mdir);
	char *text = ledger_text("evil", "0000000000000001", day, month, 950000, 950000);
	ok(plant(evil1, text, 12345), "foreign: another user's evil.RUN.json says 0.95 today");
	ok(plant(evil2, "junk", 12345), "foreign: and junk at a run's name in ended/");
	struct said said;
	ok(said_start(&said, log_path), "foreign: the log kept");
	struct keyshare_verdict v = try_call(h.b, 0.1), again = try_call(h.b, 0.1);
	said_end(&said);
	ok(v.block == PROVIDER_FREE && again.block == PROVIDER_FREE && v.spent == 0,
	   "foreign: B counts neither, nor waits: 0.10 starts, twice (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	ok(said_count(said.text, "evil.0000000000000001.json' is not written by this daemon's user") == 1 &&
	   said_count(said.text, "evil.0000000000000002.json' is not written by this daemon's user") == 1,
	   "foreign: each said once: %s", said.text);
	unlink(log_path);
	unlink(evil1);
	unlink(evil2);

	/* After a cleared ledger/, host C (which never read A) waits for A's run's file: another
	 * user's at its name is not it. A writes its own over it. */
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	ok(hosts_clear_ledger(&h), "foreign: A spent 0.5; ledger/ is cleared");
	struct keyshare *c = hosts_start_c(&h);
	char *a_file = run_file(h.dir, &h.sa);
	free(text);
	text = ledger_text("hostA", h.sa.run, day, month, 0, 0);
	ok(plant(a_file, text, 12345), "foreign: another user puts zeros at A's run's name");
	v = try_call(c, 0.6);
	ok(v.block == PROVIDER_BUSY, "foreign: C still waits for A's own file (%s)",
	   v.which ? v.which : "free");
	keyshare_beat(h.a, 0);
	keyshare_beat(h.a, 0);   /* late: A looks at its file now */
	struct stat st;
	ok(stat(a_file, &st) == 0 && st.st_uid == geteuid(),
	   "foreign: A writes its own file over it (uid %d)", (int)st.st_uid);
	v = try_call(c, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "foreign: C counts A's 0.5 (%s, spent %lld)", v.which ? v.which : "free", v.spent);
	free(text);
	text = ledger_text("hostA", h.sa.run, day, month, 500000, 500000);
	ok(plant(a_file, text, 12345), "foreign: another user puts A's own figures at its name");
	keyshare_beat(h.a, 0);
	keyshare_beat(h.a, 0);
	ok(stat(a_file, &st) == 0 && st.st_uid == geteuid(),
	   "foreign: A writes its own over that too (uid %d)", (int)st.st_uid);
	free(a_file);
	free(text);
	free(evil2);
	free(evil1);
	free(log_path);
	free(mdir);
	hosts_close(&h);
}

/* F2b: an earlier release's name ledger/HOST.json of another user: counts for nothing, never
 * waited for, said once. */
static void foreign_legacy(void)
{
	char dir[PATH_MAX];
	struct spool sb;
	if (!scratch_mkdtemp(dir, sizeof(dir), "foreign-legacy"))
		return;
	char *ledgers = xasprintf("%s/ledger", dir), *old = xasprintf("%s/evil.json", ledgers);
	char *log_path = xasprintf("%s/stderr-legacy", dir);
	ok(mkdir(ledgers, 0777) == 0 && plant(old, "junk", 12345),
	   "foreign legacy: another user's junk ledger/evil.json");
	struct said said;
	ok(said_start(&said, log_path) && spool_open(&sb, dir, "hostB") == 0,
	   "foreign legacy: host B starts on that spool");
	struct keyshare *b = keyshare_new(&sb);
	struct keyshare_verdict v = try_call(b, 0.2), again = try_call(b, 0.2);
	said_end(&said);
	ok(v.block == PROVIDER_FREE && again.block == PROVIDER_FREE,
	   "foreign legacy: B does not wait for it (%s)", v.which ? v.which : "free");
	ok(said_count(said.text, "evil.json' is not written by this daemon's user") == 1,
	   "foreign legacy: said once: %s", said.text);
	keyshare_free(b);
	spool_close(&sb);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(log_path);
	free(old);
	free(ledgers);
}

/* F4: a run's file whose day is not of its month, or after tomorrow, is not a ledger: it would
 * zero every day's figure read of that run. */
static void days_out_of_month(void)
{
	struct hosts h;
	if (!hosts_open(&h, "days"))
		return;
	long day, month;
	keyshare_today(h.b, &day, &month);
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "days: A spends 0.5 today, B reads it (%lld)", v.spent);
	char *mdir = month_dir(h.dir);
	char *ended = xasprintf("%s/ended/hostA.%s.json", mdir, h.sa.run);
	const long days[] = { day + 100000, day - 40, day + 2 };
	for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++) {
		char *text = ledger_text("hostA", h.sa.run, days[i], month, 0, 0);
		ok(plant(ended, text, (uid_t)-1), "days: A's run's file in ended/ says day %+ld",
		   days[i] - day);
		v = try_call(h.b, 0.6);
		ok(v.block == PROVIDER_BUSY && v.which && !strcmp(v.which, "an unreadable ledger"),
		   "days: not a ledger: B waits (%s, spent %lld)", v.which ? v.which : "free", v.spent);
		unlink(ended);
		v = try_call(h.b, 0.6);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
		   "days: once it goes, B still counts A's 0.5 today (spent %lld)", v.spent);
		free(text);
	}
	free(ended);
	free(mdir);
	hosts_close(&h);
}

struct moved {
	const char *from, *to;
};

static void move_it(void *arg)
{
	struct moved *m = arg;
	rename(m->from, m->to);
}

/* F11: A's run ends (its file moved into ended/) between B's listing of ledger/MONTH/ and its
 * read of that file: gone since listed is not unreadable; B lists again at once and counts it. */
static void ended_while_read(void)
{
	struct hosts h;
	if (!hosts_open(&h, "moved"))
		return;
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "moved: A spends 0.5, B reads it (%lld)", v.spent);
	keyshare_spent(h.a, "p", keyshare_micros(0.1));
	char *mdir = month_dir(h.dir), *from = run_file(h.dir, &h.sa);
	char *to = xasprintf("%s/ended/%s", mdir, strrchr(from, '/') + 1);
	struct moved m = { from, to };
	statx_hook = (struct statx_hook){ .run = move_it, .arg = &m, .name = strrchr(from, '/') + 1 };
	v = try_call(h.b, 0.5);
	ok(statx_hook.fired == 1 && access(to, F_OK) == 0,
	   "moved: A spends 0.1 more, and its file goes into ended/ as B is about to read it");
	statx_hook.run = NULL;
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.6),
	   "moved: B finds it in ended/ at once: 0.6 + 0.5 is over (%s, spent %lld)",
	   v.which ? v.which : "free", v.spent);
	free(to);
	free(from);
	free(mdir);
	hosts_close(&h);
}

/* F10: a carry back that fails (a directory at the copy's name) is said once, and not tried
 * again at every budget check (every 10 s). */
static void carry_fails(void)
{
	struct hosts h;
	if (!hosts_open(&h, "carry"))
		return;
	char run1[17];
	memcpy(run1, h.sa.run, sizeof(run1));
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "carry: A's run 1 spends 0.5, B reads it (%lld)", v.spent);
	hosts_stop_a(&h);
	ok(hosts_clear_ledger(&h), "carry: A stops; ledger/ is cleared");
	char *mdir = month_dir(h.dir), *ended = xasprintf("%s/ended", mdir);
	char *copy = copy_file(h.dir, "hostA", run1, "hostB");
	char *log_path = xasprintf("%s/stderr-carry", h.dir);
	ok(mkdir(mdir, 0777) == 0 && mkdir(ended, 0777) == 0 && mkdir(copy, 0777) == 0,
	   "carry: a directory at B's copy's name");
	hosts_start_a(&h);
	struct said said;
	ok(said_start(&said, log_path), "carry: the log kept");
	for (int i = 0; i < 3; i++)
		v = try_call(h.b, 0.6);
	ok(rmdir(copy) == 0, "carry: the directory goes");
	v = try_call(h.b, 0.6);
	said_end(&said);
	ok(said_count(said.text, "cannot carry run") == 1, "carry: said once in 4 checks: %s",
	   said.text);
	ok(access(copy, F_OK) < 0 && v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "carry: not tried again at the next check (within 10 s); B still counts 0.5 (spent %lld)",
	   v.spent);
	unlink(log_path);
	free(log_path);
	free(copy);
	free(ended);
	free(mdir);
	hosts_close(&h);
}

/* TZ set so that today and tomorrow are of one month (F12's test needs a tomorrow in the file's
 * month); the date caches (spend_day's) emptied. Returns the TZ to put back (owned, or NULL). */
static char *tz_mid_month(void)
{
	const char *was = getenv("TZ");
	char *old = was ? xstrdup(was) : NULL;
	const char *zones[] = { "UTC0", "WEST12", "EAST-14" };
	for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		setenv("TZ", zones[i], 1);
		tzset();
		time_t now = time(NULL), later = now + 86400;
		struct tm a, b;
		localtime_r(&now, &a);
		localtime_r(&later, &b);
		if (a.tm_mon == b.tm_mon)
			break;
	}
	spend_day(0);
	return old;
}

static void tz_back(char *old)
{
	if (old)
		setenv("TZ", old, 1);
	else
		unsetenv("TZ");
	tzset();
	spend_day(0);
	free(old);
}

/* F12: at midnight, A's day rolls first (its next spend is of tomorrow): B, whose day has not
 * rolled yet, still counts what A spent today. */
static void midnight(void)
{
	char *tz = tz_mid_month();
	struct hosts h;
	if (!hosts_open(&h, "midnight")) {
		tz_back(tz);
		return;
	}
	long day, month;
	keyshare_today(h.a, &day, &month);
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "midnight: A spends 0.5 today, B reads it (%lld)", v.spent);
	struct keyshare_spend one = { .provider = "p", .amount = keyshare_micros(0.1) };
	keyshare_spent_batch(h.a, &one, 1, day + 1, month);
	v = try_call(h.b, 0.6);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "midnight: A spends 0.1 tomorrow (its day rolled first): B, still today, counts A's 0.5 "
	   "of today (%s, spent %lld)", v.which ? v.which : "free", v.spent);
	hosts_close(&h);
	tz_back(tz);
}

/* F6: thousands of ended runs (a crash-looping daemon leaves ~8600 a day). After one more run
 * ends, a check looks at the new file only, not at every file in ended/ again; and a name whose
 * run is no run id (16 hex digits) is nobody's ledger. */
static void many_ended(void)
{
	struct hosts h;
	if (!hosts_open(&h, "thousands"))
		return;
	long day, month;
	keyshare_today(h.b, &day, &month);
	char *mdir = month_dir(h.dir);
	bool made = true;
	enum { RUNS = 300 };
	for (int r = 0; r < RUNS + 1; r++) {
		char run[17], *path;
		snprintf(run, sizeof(run), "%016x", r + 1);
		path = r < RUNS ? xasprintf("%s/ended/hostC.%s.json", mdir, run) :
				  xasprintf("%s/hostC.%s.json", mdir, run);
		char *text = ledger_text("hostC", run, day, month, 1000, 1000);
		made = made && plant(path, text, (uid_t)-1);
		free(text);
		free(path);
	}
	struct keyshare_verdict v = try_call(h.b, 0.8);
	ok(made && v.block == PROVIDER_OVER_BUDGET && v.spent == (RUNS + 1) * 1000,
	   "thousands: %d ended runs of host C and one live, 0.001 each: B counts them (0.8 more is over) (spent %lld)",
	   RUNS, v.spent);
	char from[PATH_MAX], to[PATH_MAX];
	snprintf(from, sizeof(from), "%s/hostC.%016x.json", mdir, RUNS + 1);
	snprintf(to, sizeof(to), "%s/ended/hostC.%016x.json", mdir, RUNS + 1);
	ok(rename(from, to) == 0, "thousands: the live run ends: its file into ended/");
	long before = statx_hook.counted;
	v = try_call(h.b, 0.8);
	long looks = statx_hook.counted - before;
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == (RUNS + 1) * 1000 && looks < 20,
	   "thousands: B's next check looks at what changed, not at all %d files again (%ld statx, "
	   "spent %lld)", RUNS + 1, looks, v.spent);
	char *junk = xasprintf("%s/hostC.zzzz.json", mdir);
	ok(plant(junk, "junk", (uid_t)-1), "thousands: junk at a name whose run is no run id");
	v = try_call(h.b, 0.1);
	ok(v.block == PROVIDER_FREE, "thousands: not a run's file: B neither reads it nor waits (%s)",
	   v.which ? v.which : "free");
	free(junk);
	free(mdir);
	hosts_close(&h);
}

/* F9: a directory planted at a run's own file's name (a rename cannot replace one, unlike any
 * other file) blocked that run's writes for good: its spend unseen by the other hosts, its
 * tickets kept. The run gets past it and says so: one of the daemon's user is moved aside;
 * another user's is left, and the run writes HOST.RUN~1.json from then on. Every host counts the
 * run once (0.5 then 0.7 in all, never 1.2, nor 0.5 as on the old code), C too, which never read
 * its first file, and none waits for the directory. */
static const struct planted_row {
	const char *owner;
	uid_t uid;                   /* -1: the daemon's user (this one) */
	const char *written;         /* the run's file's name after it: HOST.RUN + this + .json */
} planted_rows[] = {
	{ "the daemon's user's", (uid_t)-1, "" },
	{ "another user's", 4242, "~1" },
};

static void planted_directory(void)
{
	for (size_t i = 0; i < sizeof(planted_rows) / sizeof(planted_rows[0]); i++) {
		const struct planted_row *r = &planted_rows[i];
		struct hosts h;
		if (!hosts_open(&h, "planted-dir"))
			return;
		char *path = run_file(h.dir, &h.sa), *month = month_dir(h.dir);
		char *written = xasprintf("%s/hostA.%s%s.json", month, h.sa.run, r->written);
		char *log_path = xasprintf("%s/said", h.dir), text[4096];
		keyshare_spent(h.a, "p", keyshare_micros(0.5));
		struct keyshare_verdict v = try_call(h.b, 0.6);
		ok(v.spent == keyshare_micros(0.5), "planted, %s: A spends 0.5, B reads it", r->owner);
		struct said said;
		ok(unlink(path) == 0 && mkdir(path, 0777) == 0 &&
		   (r->uid == (uid_t)-1 || chown(path, r->uid, r->uid) == 0) &&
		   said_start(&said, log_path),
		   "planted, %s: a directory in place of A's run's file", r->owner);
		keyshare_spent(h.a, "p", keyshare_micros(0.2));
		said_end(&said);
		unlink(log_path);
		ok(strstr(text_of(written, text, sizeof(text)), "700000") &&
		   said_count(said.text, "is a directory") == 1,
		   "planted, %s: A's next write gets past it, into %s, and says so once (%s)", r->owner,
		   strrchr(written, '/') + 1, said.text);
		v = try_call(h.b, 0.31);
		struct keyshare_verdict fits = try_call(h.b, 0.3);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7) &&
		   fits.block == PROVIDER_FREE,
		   "planted, %s: B counts A's run once: 0.7 (spent %lld, %s), 0.3 fits (%s)", r->owner,
		   v.spent, v.which ? v.which : "free", fits.which ? fits.which : "free");
		v = try_call(hosts_start_c(&h), 0.31);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.7),
		   "planted, %s: so does C, which never read its first file (spent %lld, %s)", r->owner,
		   v.spent, v.which ? v.which : "free");
		free(log_path);
		free(written);
		free(month);
		free(path);
		hosts_close(&h);
	}
}

/* A crashed host that never comes back left its run's file in ledger/MONTH/, listed (and its
 * files stat'ed) whenever any live run writes, for the rest of the month. Any host moves it into
 * ended/ at its next look (every 10 s) once the run has ended by its host lock, as recovery.c
 * judges a host gone; and only then. It counts as before, once, for B and for C. */
static const struct gone_row {
	const char *lock;            /* A's host lock, as B finds it */
	time_t age;                  /* s since its heartbeat */
	const char *run;             /* the run it names: NULL A's, "" none (no lock at all) */
	bool moved;
} gone_rows[] = {
	{ "heartbeated now, naming A's run", 0, NULL, false },
	{ "a lease old (A crashed)", 120, NULL, true },
	{ "naming another run (A restarted)", 0, "0123456789abcdef", true },
	{ "gone", 0, "", true },
};

static void gone_hosts_files(void)
{
	for (size_t i = 0; i < sizeof(gone_rows) / sizeof(gone_rows[0]); i++) {
		const struct gone_row *r = &gone_rows[i];
		struct hosts h;
		if (!hosts_open(&h, "gone"))
			return;
		char *path = run_file(h.dir, &h.sa), *month = month_dir(h.dir);
		char *ended = xasprintf("%s/ended/%s", month, strrchr(path, '/') + 1);
		keyshare_spent(h.a, "p", keyshare_micros(0.5));
		struct keyshare_verdict v = try_call(h.b, 0.6);
		ok(v.spent == keyshare_micros(0.5), "gone, a lock %s: B reads A's 0.5", r->lock);
		long day, month_no;
		keyshare_today(h.b, &day, &month_no);
		char *next = r->run && *r->run ? xasprintf("%s/hostA.%s.json", month, r->run) : NULL;
		char *nothing = next ? ledger_text("hostA", r->run, day, month_no, 0, 0) : NULL;
		ok(r->run && !*r->run ? unlink(h.lock) == 0 :
		   make_lock(h.lock, r->age, r->run ? r->run : h.sa.run) &&
		   (!next || plant(next, nothing, (uid_t)-1)),
		   "gone: A's lock %s%s", r->lock, next ? ", whose run's file is there" : "");
		free(nothing);
		free(next);
		struct keyshare_view view;
		ok(keyshare_look(h.b, "p", &view) == 0 &&
		   (access(path, F_OK) < 0) == r->moved && (access(ended, F_OK) == 0) == r->moved,
		   "gone, a lock %s: B's next look %s", r->lock,
		   r->moved ? "moves A's run's file into ended/" : "leaves A's run's file where it is");
		v = try_call(h.b, 0.6);
		struct keyshare_verdict fits = try_call(h.b, 0.5);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) &&
		   fits.block == PROVIDER_FREE, "gone, a lock %s: B counts it once (spent %lld, %s)",
		   r->lock, v.spent, fits.which ? fits.which : "free");
		v = try_call(hosts_start_c(&h), 0.6);
		ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
		   "gone, a lock %s: so does C (spent %lld, %s)", r->lock, v.spent,
		   v.which ? v.which : "free");
		free(ended);
		free(month);
		free(path);
		hosts_close(&h);
	}
}

/* When a copy carried back can no longer matter (keyshare_copy_moot): its run's own file says
 * as much of every month figure and of the day figures a reader may count today (today, and the
 * day before for a reader whose day has not rolled). Today is day 100. */
static void copy_moot_rows(void)
{
	const struct { const char *what, *copy, *file; bool moot; } rows[] = {
		{ "the file says as much, the same day",
		  "{\"day\":100,\"p\":[5,9,0]}", "{\"day\":100,\"p\":[5,9]}", true },
		{ "the file says more",
		  "{\"day\":100,\"p\":[5,9,0]}", "{\"day\":100,\"p\":[7,12]}", true },
		{ "the file's month says less",
		  "{\"day\":100,\"p\":[5,9,0]}", "{\"day\":100,\"p\":[5,8]}", false },
		{ "the file's today says less",
		  "{\"day\":100,\"p\":[5,9,0]}", "{\"day\":100,\"p\":[4,9]}", false },
		{ "the copy's day is yesterday, the file a day on (a reader not rolled yet counts it)",
		  "{\"day\":99,\"p\":[5,9,0]}", "{\"day\":100,\"p\":[1,10]}", false },
		{ "the copy's day long past: its month is all that counts",
		  "{\"day\":97,\"p\":[5,9,0]}", "{\"day\":100,\"p\":[0,9]}", true },
		{ "the copy keeps yesterday's figure, the file does not",
		  "{\"day\":100,\"prev_day\":99,\"p\":[2,9,3]}", "{\"day\":100,\"p\":[2,9]}", false },
		{ "a provider the file lacks",
		  "{\"day\":100,\"p\":[5,9,0],\"q\":[0,1,0]}", "{\"day\":100,\"p\":[5,9]}", false },
		{ "a provider the file lacks, at 0",
		  "{\"day\":100,\"p\":[5,9,0],\"q\":[0,0,0]}", "{\"day\":100,\"p\":[5,9]}", true },
		{ "no file", "{\"day\":100,\"p\":[5,9,0]}", NULL, false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		/* Short forms: PROVIDER: [day_micros, month_micros(, prev_micros)]. */
		json_t *docs[2] = { NULL, NULL };
		const char *texts[2] = { rows[i].copy, rows[i].file };
		for (int d = 0; d < 2; d++) {
			json_t *in = texts[d] ? json_loads(texts[d], 0, NULL) : NULL, *v;
			const char *key;
			if (!in)
				continue;
			docs[d] = json_pack("{s:I, s:I, s:o}", "day",
					    json_integer_value(json_object_get(in, "day")), "prev_day",
					    json_integer_value(json_object_get(in, "prev_day")),
					    "providers", json_object());
			json_object_foreach(in, key, v) {
				if (!json_is_array(v))
					continue;
				json_t *f = json_pack("{s:O, s:O}", "day_micros", json_array_get(v, 0),
						      "month_micros", json_array_get(v, 1));
				if (json_array_size(v) > 2)
					json_object_set(f, "prev_micros", json_array_get(v, 2));
				json_object_set_new(json_object_get(docs[d], "providers"), key, f);
			}
			json_decref(in);
		}
		ok(keyshare_copy_moot(docs[0], docs[1], 100) == rows[i].moot, "a copy beside its run's file: %s: %s",
		   rows[i].what, rows[i].moot ? "moot" : "it may matter");
		json_decref(docs[0]);
		json_decref(docs[1]);
	}
}

/* A runaway or hostile ledger/MONTH/ with millions of names made every budget check cost
 * O(names). A listing reads 4096 names at most: past them, what the directory holds is not
 * known, so budgeted calls wait (counting too little would pass a budget), said once; once it
 * holds no more, they count again, and that is said too. */
static void crowded_month(void)
{
	struct hosts h;
	if (!hosts_open(&h, "crowded"))
		return;
	char *month = month_dir(h.dir), *log_path = xasprintf("%s/said", h.dir);
	enum { MOST = 4096 };   /* keyshare.c's LEDGER_MONTH_NAMES_MAX */
	keyshare_spent(h.a, "p", keyshare_micros(0.5));
	struct keyshare_verdict v = try_call(h.b, 0.6);
	ok(v.spent == keyshare_micros(0.5), "crowded: A spends 0.5, B reads it");
	bool made = true;
	/* With A's and B's files and ended/: 2 names too many. */
	for (int i = 0; i < MOST - 1 && made; i++) {
		char *junk = xasprintf("%s/junk.%d", month, i);
		int fd = open(junk, O_WRONLY | O_CREAT | O_EXCL, 0644);
		made = fd >= 0 && close(fd) == 0;
		free(junk);
	}
	struct said said;
	ok(made && said_start(&said, log_path), "crowded: %d names in ledger/MONTH/", MOST + 2);
	bool waits = true;
	for (int try = 0; try < 2; try++) {
		v = try_call(h.b, 0.1);
		waits = waits && v.block == PROVIDER_BUSY && v.which &&
			!strcmp(v.which, "a ledger directory with too many names");
	}
	ok(waits, "crowded: B's call of 0.1 waits, twice (%s)", v.which ? v.which : "free");
	char *junk0 = xasprintf("%s/junk.0", month), *junk1 = xasprintf("%s/junk.1", month);
	ok(unlink(junk0) == 0 && unlink(junk1) == 0, "crowded: two names fewer: %d in all", MOST);
	struct keyshare_verdict fits = try_call(h.b, 0.5);
	v = try_call(h.b, 0.6);
	said_end(&said);
	unlink(log_path);
	ok(fits.block == PROVIDER_FREE && v.block == PROVIDER_OVER_BUDGET &&
	   v.spent == keyshare_micros(0.5), "crowded: B counts A's 0.5 again: 0.5 fits, 0.6 does not "
	   "(%s, spent %lld)", fits.which ? fits.which : "free", v.spent);
	ok(said_count(said.text, "holds more than 4096 names") == 1 &&
	   said_count(said.text, "holds no more than 4096 names again") == 1,
	   "crowded: said once as it waits, once as it counts again");
	free(junk1);
	free(junk0);
	free(log_path);
	free(month);
	hosts_close(&h);
}

/* Whether a heartbeat is late enough to be a stall: half a lease since the last. */
static void beat_rows(void)
{
	const struct { const char *what; int64_t last, now, lease; bool late; } rows[] = {
		{ "the first beat", 0, 5000, 60000, false },
		{ "on time (a quarter lease)", 1000, 16000, 60000, false },
		{ "a little late", 1000, 30999, 60000, false },
		{ "half a lease late", 1000, 31000, 60000, true },
		{ "a lease late", 1000, 61000, 60000, true },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(keyshare_beat_late(rows[i].last, rows[i].now, rows[i].lease) == rows[i].late,
		   "a heartbeat %s: %s", rows[i].what, rows[i].late ? "a stall" : "no stall");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(rate_rows) / sizeof(rate_rows[0]); i++) {
		const struct rate_row *r = &rate_rows[i];
		int64_t retry = 0;
		bool got = keyshare_rate_ok(r->others, r->n, r->me, r->rpm, 60000, &retry);
		ok(got == r->ok && (got || retry == r->retry_at), "rate: %s (retry at %lld)", r->name,
		   (long long)retry);
	}
	for (size_t i = 0; i < sizeof(ticket_rows) / sizeof(ticket_rows[0]); i++) {
		const struct ticket_row *r = &ticket_rows[i];
		char host[64] = "";
		micros reserve = -1;
		int rc = keyshare_parse_ticket(r->name, host, sizeof(host), &reserve);
		ok(rc == r->rc && (rc < 0 || (!strcmp(host, r->host) && reserve == r->reserve)),
		   "ticket name '%s'", r->name);
	}
	ok(keyshare_micros(0.1) * 10 == keyshare_micros(1.0), "ten dimes are a dollar, exactly");
	for (size_t i = 0; i < sizeof(memo_rows) / sizeof(memo_rows[0]); i++) {
		const struct memo_row *r = &memo_rows[i];
		ok(keyshare_listing_stands(&r->before, r->listed_at_ms, &r->now) == r->stands,
		   "a kept listing %s: %s", r->stands ? "stands" : "is read again", r->name);
	}

	/* The gate with two hosts on one directory. */
	char dir[PATH_MAX];
	if (!scratch_mkdtemp(dir, sizeof(dir), "keyshare"))
		return 1;
	struct spool sa, sb;
	if (spool_open(&sa, dir, "hostA") < 0 || spool_open(&sb, dir, "hostB") < 0)
		return 1;
	struct keyshare *a = keyshare_new(&sa), *b = keyshare_new(&sb);
	struct keyshare_limits l = { .concurrency = 2, .window_ms = 60000, .lease_ms = 60000 };
	struct keyshare_ticket t1, t2, t3;
	ok(keyshare_acquire(a, "p", &l, 0, &t1).block == PROVIDER_FREE, "A takes the first place");
	ok(keyshare_acquire(b, "p", &l, 0, &t2).block == PROVIDER_FREE, "B takes the second");
	struct keyshare_verdict v = keyshare_acquire(a, "p", &l, 0, &t3);
	ok(v.block == PROVIDER_BUSY && !t3.provider, "a third waits, whoever asks (counted %ld)",
	   v.counted);
	keyshare_release(b, &t2);
	ok(keyshare_acquire(a, "p", &l, 0, &t3).block == PROVIDER_FREE, "B's place, once freed, is A's");
	keyshare_release(a, &t3);

	/* A dead host's ticket counts until its lease runs out. */
	char *path = xasprintf("%s/providers/p/calls/%s", dir, t1.call);
	struct timespec old[2] = { { .tv_sec = time(NULL) - 120 }, { .tv_sec = time(NULL) - 120 } };
	ok(utimensat(AT_FDCWD, path, old, 0) == 0, "A's ticket made two minutes old");
	ok(keyshare_acquire(b, "p", &l, 0, &t2).block == PROVIDER_FREE, "B takes a place");
	ok(keyshare_acquire(b, "p", &l, 0, &t3).block == PROVIDER_FREE,
	   "and the dead ticket's place too");
	ok(access(path, F_OK) < 0, "the dead ticket is gone");
	keyshare_release(b, &t2);
	keyshare_release(b, &t3);
	free(t1.provider); free(t1.call); free(t1.start);
	free(path);

	/* A reload that shortens the lease applies to the tickets already looked at. */
	struct keyshare_limits one_at_a_time = { .concurrency = 1, .window_ms = 60000,
						 .lease_ms = 60000 };
	ok(keyshare_acquire(a, "lease", &one_at_a_time, 0, &t1).block == PROVIDER_FREE,
	   "provider lease, one call at a time");
	keyshare_release(a, &t1);
	shortened_lease(a, dir, "lease", "lease", one_at_a_time, 0, PROVIDER_BUSY);

	/* Budgets: reservations of every host, then what each spent (the ledger). */
	struct keyshare_limits money = { .budget_daily = keyshare_micros(1.0), .window_ms = 60000,
					 .lease_ms = 60000 };
	ok(keyshare_acquire(a, "p", &money, keyshare_micros(0.4), &t1).block == PROVIDER_FREE, "A reserves 0.4");
	ok(keyshare_acquire(b, "p", &money, keyshare_micros(0.4), &t2).block == PROVIDER_FREE, "B reserves 0.4");
	v = keyshare_acquire(b, "p", &money, keyshare_micros(0.4), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.reserved == keyshare_micros(1.2) && v.retry_at == -1,
	   "a third 0.4 would pass 1.00: over budget (reserved %lld)", v.reserved);
	ok(keyshare_acquire(b, "p", &money, keyshare_micros(0.2), &t3).block == PROVIDER_FREE,
	   "0.2 fits exactly");
	keyshare_spent(a, "p", keyshare_micros(0.4));
	keyshare_release(a, &t1);
	keyshare_release(b, &t2);
	keyshare_release(b, &t3);
	v = keyshare_acquire(b, "p", &money, keyshare_micros(0.7), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.4),
	   "B sees what A spent (spent %lld)", v.spent);
	struct keyshare_limits total = { .total_daily = keyshare_micros(0.5), .window_ms = 60000,
					 .lease_ms = 60000 };
	ok(keyshare_acquire(b, "q", &total, keyshare_micros(0.2), &t3).block == PROVIDER_OVER_BUDGET,
	   "a total budget counts every provider's spend");
	/* A provider only another host knows (its own config has it) is counted in a total budget;
	 * meeting it must not move the providers this host is in the middle of using. */
	char *foreign = xasprintf("%s/providers/only-on-another-host", dir);
	ok(mkdir(foreign, 0777) == 0, "a provider directory of another host's");
	free(foreign);
	struct keyshare_limits total_rpm = { .total_daily = keyshare_micros(100), .rpm = 1000,
					     .window_ms = 60000, .lease_ms = 60000 };
	struct spool sb2;   /* another start of B's: a spool of its own, as a daemon's */
	spool_open(&sb2, dir, "hostB");
	struct keyshare *b2 = keyshare_new(&sb2);
	ok(keyshare_acquire(b2, "p", &total_rpm, keyshare_micros(0.01), &t3).block == PROVIDER_FREE &&
	   t3.start, "a call with a total budget and a rate, past a provider it never saw");
	keyshare_release(b2, &t3);
	keyshare_free(b2);
	spool_close(&sb2);
	/* A total budget keeps other providers' listings while they do not change; a call that
	 * another host starts there is still counted by the next acquire. */
	struct keyshare_limits tot = { .total_daily = keyshare_micros(100), .window_ms = 60000,
				       .lease_ms = 60000 };
	struct spool sa3;
	spool_open(&sa3, dir, "hostA");
	struct keyshare *a3 = keyshare_new(&sa3);
	char *rcalls = xasprintf("%s/providers/r/calls", dir);
	struct keyshare_ticket tr;
	ok(keyshare_acquire(b, "r", &tot, 0, &tr).block == PROVIDER_FREE, "provider r's directory exists");
	keyshare_release(b, &tr);
	struct timespec quiet[2] = { { .tv_sec = time(NULL) - 60 }, { .tv_sec = time(NULL) - 60 } };
	ok(utimensat(AT_FDCWD, rcalls, quiet, 0) == 0, "r's calls/ quiet for a minute");
	micros room = keyshare_micros(100) - keyshare_micros(0.4);   /* A spent 0.4 today */
	ok(keyshare_acquire(a3, "p", &tot, room - 10, &t1).block == PROVIDER_FREE,
	   "A fills the total budget but 10 micros (r's listing now kept)");
	keyshare_release(a3, &t1);
	char *ticket = xasprintf("%s/hostB~9-1~20", rcalls);
	int fd = open(ticket, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && close(fd) == 0, "B starts a call to r that reserves 20");
	ok(utimensat(AT_FDCWD, rcalls, quiet, 0) == 0, "and r's calls/ gets its old mtime back");
	v = keyshare_acquire(a3, "p", &tot, room - 10, &t1);
	ok(v.block == PROVIDER_OVER_BUDGET && v.which && !strcmp(v.which, "total daily"),
	   "A's next acquire counts it (the directory's ctime changed): over the total budget");
	unlink(ticket);
	free(ticket);
	free(rcalls);
	keyshare_free(a3);
	spool_close(&sa3);
	/* A dead host's call to a provider no live host calls still counts in a total budget only
	 * until its lease runs out: a host over the total budget removes it, as its own provider's. */
	struct spool sa4;
	spool_open(&sa4, dir, "hostA");
	struct keyshare *a4 = keyshare_new(&sa4);
	char *zcalls = xasprintf("%s/providers/z/calls", dir);
	char *zdir = xasprintf("%s/providers/z", dir);
	char *dead = xasprintf("%s/hostC~7-1~%lld", zcalls, (long long)keyshare_micros(99));
	ok(mkdir(zdir, 0777) == 0 && mkdir(zcalls, 0777) == 0, "provider z, that only a dead host called");
	fd = open(dead, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && close(fd) == 0 && utimensat(AT_FDCWD, dead, old, 0) == 0 &&
	   utimensat(AT_FDCWD, zcalls, quiet, 0) == 0,
	   "its ticket (reserving 99) not heartbeated for two minutes, z's calls/ quiet");
	v = keyshare_acquire(a4, "p", &tot, keyshare_micros(1), &t1);
	ok(v.block == PROVIDER_FREE && access(dead, F_OK) < 0,
	   "A, over the total budget only by it, removes it and calls (%s)", v.which ? v.which : "free");
	keyshare_release(a4, &t1);
	/* There too, a reload's shorter lease applies to the tickets already looked at. */
	char *ydir = xasprintf("%s/providers/y", dir), *ycalls = xasprintf("%s/calls", ydir);
	ok(mkdir(ydir, 0777) == 0 && mkdir(ycalls, 0777) == 0, "provider y, that no live host calls");
	shortened_lease(a4, dir, "y", "p", tot, keyshare_micros(99), PROVIDER_OVER_BUDGET);
	free(ycalls);
	free(ydir);
	fd = open(dead, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && close(fd) == 0 && utimensat(AT_FDCWD, zcalls, quiet, 0) == 0,
	   "a live host's call there reserving 99 (heartbeated now)");
	v = keyshare_acquire(a4, "p", &tot, keyshare_micros(1), &t1);
	ok(v.block == PROVIDER_OVER_BUDGET && access(dead, F_OK) == 0,
	   "counts, and stays: a live call is never removed");
	/* An operator removes z, and a host makes it again with a call: A's handle on the removed
	 * calls/ would list nothing. */
	ok(nftw(zdir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(zdir, 0777) == 0 &&
	   mkdir(zcalls, 0777) == 0, "z removed and made again");
	fd = open(dead, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && close(fd) == 0, "with a call reserving 99");
	v = keyshare_acquire(a4, "p", &tot, keyshare_micros(1), &t1);
	ok(v.block == PROVIDER_OVER_BUDGET, "A counts it in the new directory (%s)",
	   v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(a4, &t1);
	unlink(dead);
	free(dead);
	free(zcalls);
	free(zdir);
	keyshare_free(a4);
	spool_close(&sa4);
	struct spool sa2;
	spool_open(&sa2, dir, "hostA");
	struct keyshare *a2 = keyshare_new(&sa2);
	v = keyshare_acquire(a2, "p", &money, keyshare_micros(0.7), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.4),
	   "a restarted A remembers what it spent");
	keyshare_free(a2);
	spool_close(&sa2);
	/* B keeps A's ledger as read while it stands; a new one is read, whatever its times say. */
	char *ledgers = month_dir(dir), *aledger = run_file(dir, &sa);
	ok(utimensat(AT_FDCWD, aledger, quiet, 0) == 0 && utimensat(AT_FDCWD, ledgers, quiet, 0) == 0,
	   "A's ledger and ledger/ quiet for a minute");
	v = keyshare_acquire(b, "p", &money, keyshare_micros(0.7), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.4),
	   "B reads A's 0.4 (and keeps it)");
	v = keyshare_acquire(b, "p", &money, keyshare_micros(0.7), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.4), "and uses what it kept");
	keyshare_spent(a, "p", keyshare_micros(0.1));
	ok(utimensat(AT_FDCWD, aledger, quiet, 0) == 0 && utimensat(AT_FDCWD, ledgers, quiet, 0) == 0,
	   "A spends 0.1 more (a ledger of the same size), its times put back");
	v = keyshare_acquire(b, "p", &money, keyshare_micros(0.6), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "B reads the new one: 0.5 + 0.6 is over 1.00 (spent %lld)", v.spent);
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t3);
	free(ledgers);
	free(aledger);

	/* An operator removes a provider's directory and another host makes it again: a host that
	 * had it open goes on in the new one at its next try (its old handles would fail, or see
	 * nothing), without a failed try. */
	struct keyshare_view view;
	struct keyshare_limits one = { .concurrency = 1, .window_ms = 60000, .lease_ms = 60000 };
	ok(keyshare_acquire(a, "s", &one, 0, &t1).block == PROVIDER_FREE &&
	   keyshare_acquire(b, "s", &one, 0, &t2).block == PROVIDER_BUSY,
	   "A calls provider s, B waits for it");
	keyshare_release(a, &t1);
	char *sdir = xasprintf("%s/providers/s", dir);
	removed_while_open(a, b, sdir, &one);
	keyshare_pause(b, "s", spool_server_now(&sb) + 5000);
	ok(keyshare_look(a, "s", &view) == 0 && view.paused_until > 0, "and sees B's pause there");
	ok(keyshare_acquire(a, "s", &one, 0, &t1).block == PROVIDER_FREE, "and calls once B's call ended");
	keyshare_release(a, &t1);
	/* Removed and made again while A only looks (nothing fails that would tell it): A sees the
	 * new one at its next look (a rescan), as it would see a pause in the old one. */
	char *spause = xasprintf("%s/pause", sdir);
	ok(nftw(sdir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(sdir, 0777) == 0,
	   "providers/s removed and made again");
	fd = open(spause, O_WRONLY | O_CREAT | O_EXCL, 0644);
	struct timespec later[2] = { { .tv_sec = time(NULL) + 600 }, { .tv_sec = time(NULL) + 600 } };
	ok(fd >= 0 && close(fd) == 0 && utimensat(AT_FDCWD, spause, later, 0) == 0,
	   "with a pause of another host's in it");
	ok(keyshare_look(a, "s", &view) == 0 && view.paused_until > 0, "A sees the pause at its next look");
	keyshare_hold(b, "s", "key refused");
	ok(nftw(sdir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(sdir, 0777) == 0,
	   "B holds s; an operator removes providers/s, and makes it again");
	keyshare_hold(a, "s", "key refused");
	ok(keyshare_look(b, "s", &view) == 0 && view.held, "a hold A writes then is in the new one");
	ok(keyshare_probe_claim(b, "s", 60000), "B probes it");
	keyshare_unhold(b, "s");
	ok(keyshare_look(a, "s", &view) == 0 && !view.held, "and its release is A's too");
	free(spause);
	/* A call in flight whose ticket went with the directory gets it back at its next heartbeat,
	 * in the new one; a probe too. */
	ok(keyshare_acquire(a, "s", &one, 0, &t1).block == PROVIDER_FREE &&
	   keyshare_probe_claim(a, "s", 60000), "A calls s, and probes it");
	char *a_ticket = xasprintf("%s/calls/%s", sdir, t1.call), *sprobe = xasprintf("%s/probe", sdir);
	ok(nftw(sdir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 && mkdir(sdir, 0777) == 0,
	   "providers/s removed and made again");
	keyshare_heartbeat(a, &t1);
	keyshare_heartbeat_probes(a);
	ok(access(a_ticket, F_OK) == 0 && access(sprobe, F_OK) == 0,
	   "A's next heartbeat makes its ticket and its probe again there");
	keyshare_probe_done(a, "s");
	keyshare_release(a, &t1);
	free(a_ticket);
	free(sprobe);
	/* An operator removes starts/ alone (calls/ stays): the next call makes it again and goes
	 * on in the same try, as with calls/. */
	struct keyshare_limits rate = { .rpm = 100, .window_ms = 60000, .lease_ms = 60000 };
	ok(keyshare_acquire(a, "s", &rate, 0, &t1).block == PROVIDER_FREE && t1.start,
	   "A calls s under an rpm");
	keyshare_release(a, &t1);
	char *sstarts = xasprintf("%s/starts", sdir);
	ok(nftw(sstarts, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "an operator removes providers/s/starts");
	v = keyshare_acquire(a, "s", &rate, 0, &t1);
	char *a_start = t1.start ? xasprintf("%s/%s", sstarts, t1.start) : xstrdup("");
	ok(v.block == PROVIDER_FREE && access(a_start, F_OK) == 0,
	   "A's next call starts at once, its start in a new starts/ (%s)", v.which ? v.which : "free");
	if (v.block == PROVIDER_FREE)
		keyshare_release(a, &t1);
	free(a_start);
	free(sstarts);
	/* The same with all of providers/. */
	ok(keyshare_acquire(a, "s", &one, 0, &t1).block == PROVIDER_FREE, "A calls s");
	keyshare_release(a, &t1);
	char *providers = xasprintf("%s/providers", dir);
	removed_while_open(a, b, providers, &one);
	free(providers);
	free(sdir);

	/* ledger/ removed and made again: a host never counts the removed one as empty, and one
	 * that spent writes its ledger in the new one at once (A spent 0.5 today). */
	char *ledger_dir = xasprintf("%s/ledger", dir), *a_ledger = run_file(dir, &sa);
	ok(nftw(ledger_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "an operator removes ledger/");
	v = keyshare_acquire(a, "p", &money, keyshare_micros(0.6), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5) && access(a_ledger, F_OK) == 0,
	   "A still counts its 0.5 and writes it in a new ledger/ (spent %lld)", v.spent);
	v = keyshare_acquire(b, "p", &money, keyshare_micros(0.6), &t3);
	ok(v.block == PROVIDER_OVER_BUDGET && v.spent == keyshare_micros(0.5),
	   "B reads it there, not the removed ledger/ (spent %lld)", v.spent);
	if (v.block == PROVIDER_FREE)
		keyshare_release(b, &t3);
	unreadable_ledgers(&sa, b, dir, &money);
	cleared_ledger(&sa, a, b, dir, &money);
	stalled_host_carried();
	unusable_ledger();
	forged_lock();
	restarted_without_ledger();
	own_ledger_unreadable();
	restarted_twice();
	planted_copy();
	ended_runs();
	ended_between_looks();
	legacy_at_start();
	clock_steps_back();
	huge_figures();
	foreign_files();
	foreign_legacy();
	days_out_of_month();
	ended_while_read();
	carry_fails();
	midnight();
	many_ended();
	planted_directory();
	gone_hosts_files();
	copy_moot_rows();
	crowded_month();
	stalled_host_beats();
	beat_rows();
	cleared_again();
	two_readings();
	restarted_after_taking();
	many_restarts();
	free(a_ledger);
	free(ledger_dir);

	/* A shared concurrency past 1 024 (the old ceiling): every ticket counts, however many. */
	struct keyshare_limits many = { .concurrency = 1501, .window_ms = 60000, .lease_ms = 60000 };
	ok(keyshare_acquire(a, "big", &many, 0, &t1).block == PROVIDER_FREE, "provider big");
	keyshare_release(a, &t1);
	int made = 0;
	for (int i = 0; i < 1500; i++) {
		char *name = xasprintf("%s/providers/big/calls/hostC~8-%d~0", dir, i);
		fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0644);
		made += fd >= 0 && close(fd) == 0;
		free(name);
	}
	ok(made == 1500, "1 500 calls of host C in flight");
	v = keyshare_acquire(a, "big", &many, 0, &t1);
	ok(v.block == PROVIDER_FREE && v.counted == 1501, "A takes the 1 501st place (counted %ld)",
	   v.counted);
	v = keyshare_acquire(b, "big", &many, 0, &t2);
	ok(v.block == PROVIDER_BUSY && v.counted == 1502, "B waits: 1 502 would pass 1 501");
	keyshare_release(a, &t1);
	char *big = xasprintf("%s/providers/big", dir);
	nftw(big, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(big);

	/* Pause and hold, seen by the other host; one probe at a time. */
	int64_t until = keyshare_pause(a, "p", spool_server_now(&sa) + 5000);
	ok(keyshare_look(b, "p", &view) == 0 && view.paused_until == until && until % 1000 == 0,
	   "B sees A's pause, to the second");
	ok(keyshare_pause(a, "p", spool_server_now(&sa) + 1000) == until, "a shorter pause keeps the longer");
	/* A's estimate of the server's clock a second behind it (read from a whole-second mtime,
	 * as on sshfs): its pause still lasts the whole wait for every host. */
	int64_t measured = sa.clock_offset_ms;
	sa.clock_offset_ms = measured - 999;
	sa.clock_probed_mono = mono_ms();   /* no probe now to correct it */
	int64_t asked = wall_ms() + measured + 4000;
	until = keyshare_pause(a, "q", spool_server_now(&sa) + 4000);
	ok(until >= asked, "a pause written with a clock estimate a second behind ends no earlier "
	   "than its wait (%" PRId64 " ms short)", asked > until ? asked - until : 0);
	sa.clock_offset_ms = measured;
	sa.clock_probed_mono = 0;
	keyshare_hold(a, "p", "quota exhausted");
	ok(keyshare_look(b, "p", &view) == 0 && view.held && strstr(view.hold_reason, "quota exhausted"),
	   "B sees A's hold and why");
	ok(keyshare_probe_claim(b, "p", 60000), "B probes");
	ok(!keyshare_probe_claim(a, "p", 60000), "A does not, meanwhile");
	keyshare_unhold(b, "p");
	ok(keyshare_look(a, "p", &view) == 0 && !view.held, "B's probe released A");
	ok(keyshare_probe_claim(a, "p", 60000), "the next probe may be A's");
	keyshare_probe_done(a, "p");

	/* A provider directory that cannot be used stops its calls, said once; when it works
	 * again that is said, and a later failure is said again. */
	char *tdir = xasprintf("%s/providers/t", dir), *said_log = xasprintf("%s/said", dir);
	struct said t_said;
	ok(said_start(&t_said, said_log), "A's log kept");
	fd = open(tdir, O_WRONLY | O_CREAT | O_EXCL, 0644);
	bool failing = fd >= 0 && close(fd) == 0;   /* providers/t a file, not a directory */
	for (int i = 0; i < 2; i++) {
		v = keyshare_acquire(a, "t", &one, 0, &t1);
		failing &= v.block == PROVIDER_BUSY && !strcmp(v.which, "a file error");
	}
	bool works = unlink(tdir) == 0 && keyshare_acquire(a, "t", &one, 0, &t1).block == PROVIDER_FREE;
	keyshare_release(a, &t1);
	fd = nftw(tdir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ?
	     open(tdir, O_WRONLY | O_CREAT | O_EXCL, 0644) : -1;
	bool failing_again = fd >= 0 && close(fd) == 0 &&
			     keyshare_acquire(a, "t", &one, 0, &t1).block == PROVIDER_BUSY;
	unlink(tdir);
	said_end(&t_said);
	unlink(said_log);
	ok(failing && works && failing_again,
	   "providers/t a file: A's calls to it wait; removed: they go on; a file again: they wait");
	const char *again = strstr(t_said.text, "its limits are kept with other hosts again");
	ok(said_count(t_said.text, "warning: ") == 2 && again && said_count(again, "warning: ") == 1,
	   "said once as it fails, once as it works again, once as it fails again");
	free(said_log);
	free(tdir);

	/* A call whose cost the ledger cannot take keeps its ticket; a write at exit that works
	 * releases it (the directories it is released from still there then). */
	struct spool se;
	ok(spool_open(&se, dir, "hostE") == 0, "host E");
	struct keyshare *e = keyshare_new(&se);
	char *e_ledger = run_file(dir, &se);
	ok(access(e_ledger, F_OK) == 0, "E writes its ledger as it starts, with nothing spent");
	char *e_month = month_dir(dir);
	fd = nftw(e_month, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ?
	     open(e_month, O_WRONLY | O_CREAT | O_EXCL, 0644) : -1;
	ok(fd >= 0 && close(fd) == 0,
	   "something in the way of E's ledger (a file in place of its month's directory)");
	ok(keyshare_acquire(e, "p", &money, keyshare_micros(0.1), &t1).block == PROVIDER_FREE,
	   "E calls p");
	char *e_ticket = xasprintf("%s/providers/p/calls/%s", dir, t1.call);
	unsigned long gen = keyshare_spent(e, "p", keyshare_micros(0.1));
	ok(!keyshare_release_spent(e, &t1, gen) && access(e_ticket, F_OK) == 0,
	   "its cost cannot be written: its ticket stays");
	ok(unlink(e_month) == 0, "the way cleared");
	free(e_month);
	keyshare_free(e);
	ok(access(e_ticket, F_OK) < 0 && access(e_ledger, F_OK) == 0,
	   "E's exit writes the ledger and removes the ticket");
	spool_close(&se);
	free(e_ticket);
	free(e_ledger);

	/* The spool root moved aside and a new directory made at its path: A says so once (at its
	 * next look at its directories' names, every 10 s) and goes on with the one it opened, where
	 * its jobs are, and the hosts that still use it. */
	char *old_root = xasprintf("%s.old", dir), *log_path = xasprintf("%s/stderr", dir);
	struct said root_said;
	ok(said_start(&root_said, log_path) && rename(dir, old_root) == 0 && mkdir(dir, 0777) == 0,
	   "the spool moved aside, a new directory in its place");
	const char *said = "is no longer the directory this daemon opened";
	int64_t deadline = mono_ms() + 20000;
	while (!strstr(said_so_far(&root_said), said) && mono_ms() < deadline) {
		keyshare_look(a, "p", &view);
		if (!strstr(said_so_far(&root_said), said))
			nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);   /* polls, to a deadline */
	}
	said_end(&root_said);
	ok(strstr(root_said.text, said) != NULL, "A says the path names another directory now");
	ok(keyshare_acquire(a, "s", &one, 0, &t1).block == PROVIDER_FREE, "and goes on calling");
	char *ticket_there = xasprintf("%s/providers/s/calls/%s", old_root, t1.call);
	ok(access(ticket_there, F_OK) == 0, "with its ticket in the spool it opened");
	keyshare_release(a, &t1);
	free(ticket_there);
	rmdir(dir);
	rename(old_root, dir);
	free(log_path);
	free(old_root);

	keyshare_free(a);
	keyshare_free(b);
	spool_close(&sa);
	spool_close(&sb);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
