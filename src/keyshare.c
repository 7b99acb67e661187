/* keyshare.c - a provider's limits shared by every daemon on the spool (see keyshare.h).
 *
 * How it fails: a file operation that fails is logged once per provider and kind; the gate
 * then says BUSY and is tried again a second later (never a call it could not count), and a
 * pause or hold that cannot be written stays local to this host. A directory removed by hand
 * (and perhaps made again by another host) is found by its name again at its next use: at
 * once after a failure it makes, and before a look at a provider's pause and hold (a look in a
 * removed directory fails at nothing); one moved aside, every RECHECK_MS. The spool root is
 * never left: one its path no longer names is only said. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "hostlock.h"
#include "keyshare.h"
#include "log.h"
#include "spend.h"
#include "spool.h"
#include "util.h"
#include "banned.h"

#define LEDGER_MAX_BYTES (64u << 10)
#define START_GRACE_MS 10000      /* starts older than window + margin + this are removed */
#define RECHECK_MS 10000          /* a provider's open directories checked against their names */
#define PAUSE_CLOCK_GRAIN_MS 1000 /* spool_server_now's error, from a whole-second mtime */
#define RUNS_HELD_MAX 32          /* earlier runs a ledger lists; past it the oldest go (their
				     readings are then counted twice, never lost) */
#define SIDE_INFIX ".carried-"    /* HOST.json.carried-READER.RUN: a reading of an earlier run */

/* A reading (a directory's listing, a ledger) kept until what was read changes
 * (keyshare_listing_stands). */
struct memo {
	struct keyshare_seen seen;       /* the directory (or file) just before it was read */
	int64_t listed_at;               /* file server ms, before that; 0: never */
};

struct pdir {
	char *name;
	int fd, calls, starts;       /* providers/NAME, its calls/ and starts/; -1 until made */
	bool probe_ours;
	bool warned;
	int64_t checked_at;          /* mono ms the handles were last found current; 0: check */
	struct memo calls_memo;      /* for a total budget: what its calls/ reserved then */
	micros calls_reserved;
	int64_t calls_oldest_beat;   /* file server ms: every ticket in calls/ was heartbeated
					since, as of the last look that stat'ed them (count_calls);
					0: not known. Kept apart from the lease, which a reload
					may shorten (may_hold_dead) */
};

/* Another host's ledger as last read, used again while its file stands (ledger_refresh). */
struct kept_ledger {
	char *name;
	json_t *doc;                 /* owned; NULL: it could not be read then */
	struct memo memo;
	bool unreadable;             /* its last read failed: budgets wait for it (ledger_sum) */
	bool listed;                 /* in the last listing of ledger/ */
	bool vanished;               /* read before, gone from ledger/ since: doc is still counted,
					and carried back if its host has left (ledger_doubts) */
	bool carried;                /* vanished, and carried back (or tried once) */
	size_t host_len;             /* "HOST.json", its host's ledger's name, is name[0..host_len) */
	bool side;                   /* a reading of an earlier run of HOST that another host left
					beside HOST.json (side_leave); never waited for */
	bool junk_said;              /* a side file no daemon wrote, said once */
	json_t *earlier;             /* owned: the reading of its host's earlier run that its file
					now lacks (it says "base_lost"); counted with it, and left
					beside it until that host has taken it in */
};

struct spent {
	char *provider;
	micros day, month;
};

/* The ticket of a call whose cost is not in the ledger file yet: it stays in calls/ until a
 * write takes the figures of generation gen (its cost reserved meanwhile in every host's sight). */
struct unwritten {
	struct keyshare_ticket ticket;
	unsigned long gen;
};

struct keyshare {
	struct spool *sp;
	int providers_fd, ledger_fd;
	struct pdir **dirs;          /* each apart: pdir() adds while callers hold others */
	size_t n_dirs;
	long pid;
	unsigned long seq;
	/* Our own ledger is added to on the loop and by the helper threads that judge answers
	 * (keyshare_spent_batch). spent_lock guards the figures (day, month, spent, spent_gen),
	 * held only to read or change them; write_lock keeps one write of the ledger at a time,
	 * and guards ledger_fd's changes (the loop only reads it without) and ledger_warned. Its
	 * holder lets it go only under spent_lock, once it found no figure left unwritten (or a
	 * write failed): so the loop, which never waits for it, may add a spend and leave its
	 * write to the holder when its trylock fails (ledger_write_try). */
	pthread_mutex_t spent_lock, write_lock;
	long day, month;             /* of the figures below */
	struct spent *spent;
	size_t n_spent;
	unsigned long spent_gen;     /* changes of the figures */
	unsigned long written_gen;   /* spent_gen of what the ledger file last took (both locks
				      * to change it, either to read it) */
	bool ledger_warned;
	struct unwritten *unwritten; /* on the loop: tickets kept till their cost is written */
	size_t n_unwritten;
	struct memo ledger_memo;     /* ledger/ when kept was last brought up to date */
	struct kept_ledger *kept;
	size_t n_kept;
	/* ledger/ opened anew, this host's or a ledger read before gone from it: until it holds
	 * the ledger of every live host, budgets wait (ledger_doubts). */
	bool ledger_doubt;
	bool doubt_said;
	int ledger_errno;            /* why ledger/ could not be opened (ledger_fd < 0) */
	enum { UNUSABLE_UNSAID, UNUSABLE_WAITS, UNUSABLE_ALONE } unusable_said;
	char doubt_about[NAME_MAX + 1];    /* what budgets wait for, as said */
	int64_t lease_ms;            /* the last acquire's: a host lock older than this is a left host's */
	struct memo own_memo;        /* this host's own ledger file when last found whole */
	/* This run took in its own file, or found none there (ENOENT): its figures hold all that
	 * file could say (what this run wrote, or an older reading carried back), so one that
	 * cannot be read is written over. Until then it is not (ledger_take_own). On the loop. */
	bool own_known;
	/* Its own file there but not read yet (why, as said): never written over (what earlier
	 * runs spent may be in it only), budgets wait, and it is read again at each try
	 * (ledger_sum). "": read, or none. Set on the loop under spent_lock. */
	char own_unread[160];
	int64_t checked_at;          /* mono ms providers/ and ledger/ were last found current */
	int64_t beat_at;             /* mono ms of the last keyshare_beat; 0: none yet */
	int64_t refreshed_at;        /* mono ms of the last rescan's ledger_refresh; 0: none */
	bool counts_ledgers;         /* it has checked a budget: it reads the other hosts' ledgers */
	struct memo providers_memo;  /* for a total budget: the names in providers/ then */
	char **provider_names;
	size_t n_provider_names;
	/* Runs: a ledger says which run of its host wrote it ("run", new at every start), whether
	 * that run started without its own file ("base_lost": what earlier runs spent is not in
	 * it, but for "runs_held"), and the earlier runs its figures hold. Under spent_lock. */
	char run[17];
	bool base_lost;
	json_t *runs_held;           /* owned: an array of run ids */
	json_t *runs_taken;          /* owned: {run: what taking in a side file of that run added}
					this run (side_take), so a later reading that holds it adds
					only what it says beyond */
	struct side_taken { char *name; unsigned long gen; } *sides_taken;  /* on the loop: side
					files of this host taken in, removed once gen is written */
	size_t n_sides_taken;
};

micros keyshare_micros(double amount)
{
	return (micros)llround(amount * 1e6);
}

long keyshare_month(int64_t wall_msec)
{
	time_t t = (time_t)(wall_msec / 1000);
	struct tm tm;
	if (!localtime_r(&t, &tm))
		return (long)(wall_msec / 86400000 / 31);
	return (long)(tm.tm_year + 1900) * 12 + tm.tm_mon;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

bool keyshare_rate_ok(const int64_t *others, size_t n, int64_t me, long rpm, int64_t window_ms,
		      int64_t *retry_at)
{
	int64_t *in = xcalloc(n + 1, sizeof(*in));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (me - others[i] < window_ms)
			in[k++] = others[i];
	bool ok = (long)k + 1 <= rpm;
	if (!ok) {
		/* Room for one more once all but rpm - 1 of them have left the window. */
		qsort(in, k, sizeof(*in), cmp_i64);
		*retry_at = in[k - (size_t)rpm] + window_ms + 1;
	}
	free(in);
	return ok;
}

int keyshare_parse_ticket(const char *name, char *host, size_t hostsize, micros *reserve)
{
	const char *a = strchr(name, '~'), *b = a ? strchr(a + 1, '~') : NULL;
	if (!a || !b || a == name || (size_t)(a - name) >= hostsize || strchr(b + 1, '~'))
		return -1;
	char *end;
	errno = 0;
	long long r = strtoll(b + 1, &end, 10);
	if (errno || *end || end == b + 1 || r < 0)
		return -1;
	memcpy(host, name, (size_t)(a - name));
	host[a - name] = '\0';
	*reserve = r;
	return 0;
}

bool keyshare_listing_stands(const struct keyshare_seen *before, int64_t listed_at_ms,
			     const struct keyshare_seen *now)
{
	return listed_at_ms > 0 && before->dev == now->dev && before->ino == now->ino &&
	       before->mtime_ns == now->mtime_ns && before->ctime_ns == now->ctime_ns &&
	       before->size == now->size &&
	       before->mtime_ns / 1000000 < listed_at_ms - KEYSHARE_CLOCK_MARGIN_MS;
}

/* ---- files ---------------------------------------------------------------------------------- */

static int open_dir(int at, const char *name)
{
	if (mkdirat(at, name, 0777) < 0 && errno != EEXIST)
		return -1;
	return openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Opens ledger/ (making it if need be) into ledger_fd; why it cannot goes to ledger_errno. */
static int ledger_open(struct keyshare *ks)
{
	ks->ledger_fd = open_dir(ks->sp->root_fd, "ledger");
	ks->ledger_errno = ks->ledger_fd < 0 ? errno : 0;
	if (ks->ledger_fd >= 0 && ks->unusable_said != UNUSABLE_UNSAID) {
		log_info("'%s/ledger' can be opened again: budgets are shared with other hosts",
			 ks->sp->path);
		ks->unusable_said = UNUSABLE_UNSAID;
	}
	return ks->ledger_fd;
}

/* Whether the directory open as fd is still the one named name in at. An operator may remove a
 * provider's directory and another host make it again: a handle on the removed one lists no
 * tickets and sees no pause or hold, without an error. */
static bool dir_current(int at, const char *name, int fd)
{
	struct stat held, named;
	return fstat(fd, &held) == 0 && held.st_nlink > 0 &&
	       fstatat(at, name, &named, AT_SYMLINK_NOFOLLOW) == 0 && held.st_dev == named.st_dev &&
	       held.st_ino == named.st_ino;
}

static void close_dir(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Lets go of p's directories (pdir_open opens them again by name) and what was read in them. */
static void pdir_close(struct pdir *p)
{
	close_dir(&p->fd);
	close_dir(&p->calls);
	close_dir(&p->starts);
	p->calls_memo.listed_at = p->calls_oldest_beat = 0;
}

/* Closes p's handles that no longer name its directories (checked every RECHECK_MS, or at once
 * after a failure: checked_at 0); pdir_open() opens them again. */
static void pdir_recheck(struct pdir *p, int providers_fd)
{
	int64_t now = mono_ms();
	if (p->fd < 0 || (p->checked_at && now - p->checked_at < RECHECK_MS))
		return;
	p->checked_at = now;
	if (!dir_current(providers_fd, p->name, p->fd))
		pdir_close(p);
	if (p->calls >= 0 && !dir_current(p->fd, "calls", p->calls))
		close_dir(&p->calls);
	if (p->starts >= 0 && !dir_current(p->fd, "starts", p->starts))
		close_dir(&p->starts);
	if (p->calls < 0)
		p->calls_memo.listed_at = p->calls_oldest_beat = 0;
}

/* This host's own file in ledger/: taken in, not there (ENOENT only), or there but unread. */
enum own_file { OWN_TAKEN, OWN_NONE, OWN_UNREAD };
static enum own_file ledger_take_own(struct keyshare *ks);
static void ledger_own_ensure(struct keyshare *ks);

/* providers/ and ledger/ checked against their names (a provider's handles go with
 * providers/), opened again by name (also when they could not be opened before); and the spool
 * root against its path, which the spool says (spool_root_recheck: never followed). A ledger/
 * without this host's ledger (new, or its file removed) gets it at once, even with nothing
 * spent: other hosts count what it spent from that file only, and wait for it. */
static void top_dirs_recheck(struct keyshare *ks)
{
	int64_t now = mono_ms();
	if (ks->checked_at && now - ks->checked_at < RECHECK_MS)
		return;
	ks->checked_at = now;
	spool_root_recheck(ks->sp);
	if (ks->providers_fd < 0 || !dir_current(ks->sp->root_fd, "providers", ks->providers_fd)) {
		close_dir(&ks->providers_fd);
		ks->providers_fd = open_dir(ks->sp->root_fd, "providers");
		ks->providers_memo.listed_at = 0;
		for (size_t i = 0; i < ks->n_dirs; i++)
			pdir_close(ks->dirs[i]);
	}
	if (ks->ledger_fd < 0 || !dir_current(ks->sp->root_fd, "ledger", ks->ledger_fd)) {
		/* A helper may be writing through it: the loop does not wait, it looks again next
		 * time (the helper's write fails in the old directory, and is made again). */
		if (pthread_mutex_trylock(&ks->write_lock) != 0) {
			ks->checked_at = 0;
			return;
		}
		close_dir(&ks->ledger_fd);
		ledger_open(ks);
		ledger_take_own(ks);
		pthread_mutex_unlock(&ks->write_lock);
		ks->ledger_memo.listed_at = ks->own_memo.listed_at = 0;
		ks->ledger_doubt = true;
	}
	ledger_own_ensure(ks);
}

/* Every handle is checked against its name at its next use: after a file operation failed, as
 * a directory removed by hand (and perhaps made again by another host) makes it fail. */
static void recheck_soon(struct keyshare *ks, struct pdir *p)
{
	ks->checked_at = 0;
	if (p)
		p->checked_at = 0;
}

/* The pdir of provider, made if new; its handles not opened yet (pdir_open). */
static struct pdir *pdir_of(struct keyshare *ks, const char *provider)
{
	for (size_t i = 0; i < ks->n_dirs; i++)
		if (!strcmp(ks->dirs[i]->name, provider))
			return ks->dirs[i];
	ks->dirs = xrealloc(ks->dirs, (ks->n_dirs + 1) * sizeof(*ks->dirs));
	struct pdir *p = ks->dirs[ks->n_dirs++] = xcalloc(1, sizeof(*p));
	*p = (struct pdir){ .name = xstrdup(provider), .fd = -1, .calls = -1, .starts = -1 };
	return p;
}

/* Opens p's directories (made if need be), checked against their names when due; if one cannot
 * be opened, perhaps providers/ itself was removed: every name is checked, and once more. */
static bool pdir_open(struct keyshare *ks, struct pdir *p)
{
	for (int tries = 0; tries < 2; tries++) {
		top_dirs_recheck(ks);
		pdir_recheck(p, ks->providers_fd);
		if (p->fd < 0 && ks->providers_fd >= 0)
			p->fd = open_dir(ks->providers_fd, p->name);
		if (p->fd >= 0 && p->calls < 0)
			p->calls = open_dir(p->fd, "calls");
		if (p->fd >= 0 && p->starts < 0)
			p->starts = open_dir(p->fd, "starts");
		if (p->fd >= 0 && p->calls >= 0 && p->starts >= 0) {
			if (!p->checked_at)
				p->checked_at = mono_ms();
			return true;
		}
		if (!tries)
			recheck_soon(ks, p);   /* not after the last: the others' handles stand */
	}
	if (!p->warned)
		log_warn("cannot use '%s/providers/%s' for the limits shared with other hosts: %s",
			 ks->sp->path, p->name, strerror(errno));
	p->warned = true;
	return false;
}

/* provider's pdir with its directories open, or NULL. */
static struct pdir *pdir(struct keyshare *ks, const char *provider)
{
	struct pdir *p = pdir_of(ks, provider);
	return pdir_open(ks, p) ? p : NULL;
}

/* The same, providers/NAME checked against its name now: for what other hosts must see at once
 * (a pause, a hold, a probe, and looking for theirs at each rescan). In a removed directory
 * nothing fails that would tell: no pause or hold is found there, and one removed there is
 * still in the new one. */
static struct pdir *pdir_checked(struct keyshare *ks, const char *provider)
{
	struct pdir *p = pdir_of(ks, provider);
	if (p->fd >= 0 && !dir_current(ks->providers_fd, p->name, p->fd))
		recheck_soon(ks, p);
	return pdir_open(ks, p) ? p : NULL;
}

/* Whether an operation in one of ks's directories failed as in a directory removed (and perhaps
 * made again by another host): worth checking the names and one more try. */
static bool gone(int err)
{
	return err == ENOENT || err == ESTALE;
}

static int create_empty(int dirfd, const char *name, const char *content)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0)
		return -1;
	if (content && write(fd, content, strlen(content)) < 0) {
		int e = errno;
		close(fd);
		unlinkat(dirfd, name, 0);
		errno = e;
		return -1;
	}
	return close(fd);
}

/* Where in a provider's directory create_in makes a file. */
enum pdir_part { IN_PROVIDER, IN_CALLS, IN_STARTS };

static int pdir_fd(const struct pdir *p, enum pdir_part in)
{
	return in == IN_CALLS ? p->calls : in == IN_STARTS ? p->starts : p->fd;
}

/* create_empty in providers/NAME or its calls/ or starts/; if that directory was removed (an
 * operator's clean-up of calls/ or starts/ alone, or all of it), and perhaps made again by
 * another host, in the new one, in the same try. */
static int create_in(struct keyshare *ks, struct pdir *p, enum pdir_part in, const char *name,
		     const char *content)
{
	int made = create_empty(pdir_fd(p, in), name, content);
	if (made < 0 && gone(errno)) {
		recheck_soon(ks, p);
		made = pdir_open(ks, p) ? create_empty(pdir_fd(p, in), name, content) : -1;
	}
	return made;
}

static int64_t statx_ns(const struct statx_timestamp *t)
{
	return timespec_ns(&(struct timespec){ .tv_sec = t->tv_sec, .tv_nsec = t->tv_nsec });
}

/* name in dirfd ("": dirfd itself) as the file server says it is now: forced past the client's
 * attribute cache (NFS actimeo, FUSE), so that a reading kept is never trusted on a cache's
 * word. -1 also for a directory removed (no links: pdir_recheck opens its successor). */
static int seen_now(int dirfd, const char *name, struct keyshare_seen *out)
{
	struct statx st;
	int flags = AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC | (*name ? 0 : AT_EMPTY_PATH);
	if (statx(dirfd, name, flags, STATX_BASIC_STATS, &st) < 0)
		return -1;
	if (st.stx_nlink == 0) {
		errno = ESTALE;
		return -1;
	}
	*out = (struct keyshare_seen){ .dev = makedev(st.stx_dev_major, st.stx_dev_minor),
				       .ino = st.stx_ino, .size = (int64_t)st.stx_size,
				       .mtime_ns = statx_ns(&st.stx_mtime),
				       .ctime_ns = statx_ns(&st.stx_ctime) };
	return 0;
}

/* A fresh look at name in dirfd ("": dirfd itself), taken just before reading it: what a
 * reading made now is a reading of. listed_at 0 if it cannot be seen. */
static struct memo memo_look(struct keyshare *ks, int dirfd, const char *name)
{
	/* The time first: a change after the stat gets an mtime at least this late. */
	struct memo look = { .listed_at = spool_server_now(ks->sp) };
	if (seen_now(dirfd, name, &look.seen) < 0)
		look.listed_at = 0;
	return look;
}

/* memo_look of providers/ or ledger/ (*fd, one of ks's): if it is gone (removed, and perhaps
 * made again by another host), every name is checked at once and the new one looked at; a
 * removed directory lists empty, without an error. */
static struct memo top_look(struct keyshare *ks, const int *fd)
{
	struct memo look = memo_look(ks, *fd, "");
	if (!look.listed_at) {
		recheck_soon(ks, NULL);
		top_dirs_recheck(ks);
		look = memo_look(ks, *fd, "");
	}
	return look;
}

/* Whether the reading kept under memo still stands, by a fresh look (memo_look). */
static bool memo_stands(const struct memo *memo, const struct memo *look)
{
	return look->listed_at && keyshare_listing_stands(&memo->seen, memo->listed_at, &look->seen);
}

/* ---- the ledger: what each host's calls cost ------------------------------------------------ */

static struct spent *own_spent(struct keyshare *ks, const char *provider)
{
	for (size_t i = 0; i < ks->n_spent; i++)
		if (!strcmp(ks->spent[i].provider, provider))
			return &ks->spent[i];
	ks->spent = xrealloc(ks->spent, (ks->n_spent + 1) * sizeof(*ks->spent));
	ks->spent[ks->n_spent] = (struct spent){ .provider = xstrdup(provider) };
	return &ks->spent[ks->n_spent++];
}

/* A new day or month starts at zero. */
static void roll(struct keyshare *ks, long day, long month)
{
	for (size_t i = 0; i < ks->n_spent; i++) {
		if (day != ks->day)
			ks->spent[i].day = 0;
		if (month != ks->month)
			ks->spent[i].month = 0;
	}
	/* What earlier runs spent in an earlier month counts no more (month 0: nothing read yet). */
	if (ks->month && month != ks->month) {
		json_array_clear(ks->runs_held);
		json_object_clear(ks->runs_taken);
		ks->base_lost = false;
	}
	ks->day = day;
	ks->month = month;
}

/* Adds one ledger document's figures for provider (NULL: every provider) to *day, *month. */
static void ledger_add(json_t *doc, const char *provider, long day, long month, micros *d,
		       micros *m)
{
	json_t *provs = json_object_get(doc, "providers"), *v;
	const char *key;
	bool same_day = json_integer_value(json_object_get(doc, "day")) == day;
	bool same_month = json_integer_value(json_object_get(doc, "month")) == month;
	json_object_foreach(provs, key, v) {
		if (provider && strcmp(key, provider))
			continue;
		if (same_day)
			*d += json_integer_value(json_object_get(v, "day_micros"));
		if (same_month)
			*m += json_integer_value(json_object_get(v, "month_micros"));
	}
}

/* The run that wrote a ledger (or the reading of one), NULL if it does not say (an earlier
 * release's). */
static const char *doc_run(json_t *doc)
{
	return json_string_value(json_object_get(doc, "run"));
}

static bool doc_base_lost(json_t *doc)
{
	return json_is_true(json_object_get(doc, "base_lost"));
}

static bool runs_list(json_t *runs, const char *run)
{
	size_t i;
	json_t *v;
	json_array_foreach(runs, i, v)
		if (!strcmp(json_string_value(v), run))
			return true;
	return false;
}

/* Whether doc's figures hold what run spent: its own run, or one it took in. A run not said
 * (an earlier release's reading) is held: nothing is added for it. */
static bool doc_holds(json_t *doc, const char *run)
{
	const char *own = doc_run(doc);
	return !run || !own || !strcmp(own, run) || runs_list(json_object_get(doc, "runs_held"), run);
}

/* Whether doc has a ledger's shape (ledger_text): a figure that is not a number would be
 * counted as 0, a run that is not a string never told apart. */
static bool ledger_shaped(json_t *doc)
{
	json_t *provs = json_object_get(doc, "providers"), *v;
	json_t *run = json_object_get(doc, "run"), *lost = json_object_get(doc, "base_lost");
	json_t *held = json_object_get(doc, "runs_held");
	const char *key;
	size_t i;
	if (!json_is_integer(json_object_get(doc, "day")) ||
	    !json_is_integer(json_object_get(doc, "month")) || !json_is_object(provs) ||
	    (run && !json_is_string(run)) || (lost && !json_is_boolean(lost)) ||
	    (held && !json_is_array(held)))
		return false;
	json_array_foreach(held, i, v)
		if (!json_is_string(v))
			return false;
	json_object_foreach(provs, key, v)
		if (!json_is_integer(json_object_get(v, "day_micros")) ||
		    !json_is_integer(json_object_get(v, "month_micros")))
			return false;
	return true;
}

/* A ledger file, or NULL and why not (*why, static); st: as it was read. */
static json_t *read_ledger_st(int dirfd, const char *name, const char **why, struct stat *st)
{
	struct buf b;
	buf_init(&b, LEDGER_MAX_BYTES);
	json_t *doc = NULL;
	enum spool_read r = spool_read_file(dirfd, name, LEDGER_MAX_BYTES, &b, st);
	*why = spool_read_reason(r);
	if (r == SPOOL_READ_OK) {
		doc = json_loadb(b.data, b.len, 0, NULL);
		*why = doc ? "not a ledger" : "not JSON (torn, or not written by imgspoold)";
		if (doc && ledger_shaped(doc))
			*why = NULL;
		else {
			json_decref(doc);
			doc = NULL;
		}
	}
	buf_release(&b);
	return doc;
}

static json_t *read_ledger(int dirfd, const char *name, const char **why)
{
	struct stat st;
	return read_ledger_st(dirfd, name, why, &st);
}

/* "HOST.json.carried-READER.RUN": where READER leaves its reading of run RUN of HOST. */
static char *side_name(const char *host, const char *reader, const char *run)
{
	return xasprintf("%s.json" SIDE_INFIX "%s.%s", host, reader, run);
}

/* Whether name is want, or want with a random suffix ".XXXXXXXXXXXXXXXX" (16 hex digits): the
 * name side_leave takes when one planted under want is not a daemon's. */
static bool side_named(const char *name, const char *want)
{
	size_t n = strlen(want);
	if (strncmp(name, want, n))
		return false;
	if (!name[n])
		return true;
	return name[n] == '.' && strlen(name + n + 1) == 16 &&
	       strspn(name + n + 1, "0123456789abcdef") == 16;
}

/* A side file (side_leave), or NULL: only one a daemon wrote (its user's, or root's, as a
 * host lock, §10), a ledger's shape, and the name its content gives. Anything else counts for
 * nothing (never waited for either: a host's own ledger says what it spent). */
static json_t *read_side(struct keyshare *ks, const char *name, const char **why)
{
	struct stat st;
	json_t *doc = read_ledger_st(ks->ledger_fd, name, why, &st);
	const char *host = json_string_value(json_object_get(doc, "host"));
	const char *reader = json_string_value(json_object_get(doc, "carried_by"));
	const char *run = doc_run(doc);
	char *want = host && reader && run ? side_name(host, reader, run) : NULL;
	if (!doc && !st.st_mode)
		*why = NULL;   /* gone: taken in by its host */
	if (doc && (!spool_written_by_daemon(ks->sp, &st) || !want || !side_named(name, want))) {
		*why = !spool_written_by_daemon(ks->sp, &st) ? "not written by this daemon's user"
							     : "not a reading of a host's earlier run";
		json_decref(doc);
		doc = NULL;
	}
	free(want);
	return doc;
}

static void runs_add(struct keyshare *ks, const char *run)
{
	if (runs_list(ks->runs_held, run))
		return;
	if (json_array_size(ks->runs_held) >= RUNS_HELD_MAX)
		json_array_remove(ks->runs_held, 0);
	json_array_append_new(ks->runs_held, json_string(run));
}

/* Takes in doc, this host's own file: each figure the larger of the file's and the one in
 * memory, on the later of their days (months): both say what this host spent. Returns whether
 * the file falls short of what this host knows it spent, or was put back by another host
 * ("carried_by": a reading, perhaps older than this host's last write): either way this host
 * must write it again. spent_lock held. */
static bool own_take_in(struct keyshare *ks, json_t *doc)
{
	long day = (long)json_integer_value(json_object_get(doc, "day"));
	long month = (long)json_integer_value(json_object_get(doc, "month"));
	json_t *provs = json_object_get(doc, "providers"), *v;
	const char *key, *run = doc_run(doc);
	roll(ks, day > ks->day ? day : ks->day, month > ks->month ? month : ks->month);
	/* What an earlier run spent and these figures lack (this host restarted without its file):
	 * added to what this run spent, and listed as held, with the runs that one held. */
	bool earlier = month == ks->month && !doc_holds(doc, ks->run) && !runs_list(ks->runs_held, run);
	json_object_foreach(provs, key, v) {
		struct spent *s = own_spent(ks, key);
		micros d = json_integer_value(json_object_get(v, "day_micros"));
		micros m = json_integer_value(json_object_get(v, "month_micros"));
		if (day == ks->day && (earlier || d > s->day))
			s->day = earlier ? s->day + d : d;
		if (month == ks->month && (earlier || m > s->month))
			s->month = earlier ? s->month + m : m;
	}
	if (earlier) {
		size_t i;
		json_array_foreach(json_object_get(doc, "runs_held"), i, v)
			runs_add(ks, json_string_value(v));
		runs_add(ks, run);
		ks->base_lost = ks->base_lost || doc_base_lost(doc);
	}
	bool shorter = earlier || json_object_get(doc, "carried_by") != NULL;
	for (size_t i = 0; i < ks->n_spent && !shorter; i++) {
		v = json_object_get(provs, ks->spent[i].provider);
		micros d = day == ks->day ? json_integer_value(json_object_get(v, "day_micros")) : 0;
		micros m = month == ks->month ? json_integer_value(json_object_get(v, "month_micros")) : 0;
		shorter = d < ks->spent[i].day || m < ks->spent[i].month;
	}
	return shorter;
}

/* This host's own file's name in ledger/: "HOST.json". */
static void own_ledger_name(const struct keyshare *ks, char *name, size_t size)
{
	xsnprintf(name, size, "%s.json", ks->sp->host_id);
}

/* A ledger's text. Fails only for want of memory: its strings are UTF-8 (a host id, provider
 * names, or what was read as JSON). */
static char *ledger_dump(const json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (!text)
		out_of_memory("writing a ledger");
	return text;
}

/* This host's own file is there but could not be read (why; err: errno of the read): it is
 * not written over, and budgets wait until it is read or gone. Said once per reason. */
static void own_unreadable(struct keyshare *ks, const char *name, const char *why, int err)
{
	char said[sizeof(ks->own_unread)];
	if (why == spool_read_reason(SPOOL_READ_ERROR) || why == spool_read_reason(SPOOL_READ_GONE))
		xsnprintf(said, sizeof(said), "%s: %s", why, strerror(err));
	else
		xsnprintf(said, sizeof(said), "%s", why);
	bool same = !strcmp(said, ks->own_unread);
	pthread_mutex_lock(&ks->spent_lock);
	memcpy(ks->own_unread, said, sizeof(said));
	pthread_mutex_unlock(&ks->spent_lock);
	ks->own_memo.listed_at = 0;
	if (!same)
		log_warn("cannot read this host's own ledger '%s/ledger/%s' (%s): it is not written "
			 "over, and no call to a provider under a budget starts on this host until it "
			 "can be read (tried again at each try); if it stays so, an operator moves it "
			 "aside: this host then starts without it, and what its earlier runs spent is "
			 "counted only from other hosts' readings", ks->sp->path, name, said);
}

/* Whether this host's own file is known to be readable or absent (it may be written). */
static bool own_readable(struct keyshare *ks)
{
	return !ks->own_unread[0];
}

/* Takes in this host's own file in ledger/, if there is one: what an earlier run spent (at
 * start-up, or once ledger/ could be opened; own_take_in). The caller keeps writers out
 * (write_lock held, or no helper yet). Only a file that is not there (ENOENT) is none: one
 * that cannot be read is OWN_UNREAD (own_unreadable), never taken as none. */

static enum own_file ledger_take_own(struct keyshare *ks)
{
	char name[NAME_MAX + 1];
	own_ledger_name(ks, name, sizeof(name));
	const char *why;
	struct stat st;
	if (ks->ledger_fd < 0)
		return OWN_NONE;
	json_t *doc = read_ledger_st(ks->ledger_fd, name, &why, &st);
	int err = errno;
	if (!doc) {
		if (fstatat(ks->ledger_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
			ks->own_known = true;
			return OWN_NONE;
		}
		if (!ks->own_known)
			own_unreadable(ks, name, why, err);
		return OWN_UNREAD;
	}
	ks->own_known = true;
	pthread_mutex_lock(&ks->spent_lock);
	own_take_in(ks, doc);
	pthread_mutex_unlock(&ks->spent_lock);
	json_decref(doc);
	return OWN_TAKEN;
}

/* The figures as the ledger file says them (spent_lock held). */
static char *ledger_text(struct keyshare *ks)
{
	json_t *provs = json_object();
	for (size_t i = 0; i < ks->n_spent; i++)
		json_object_set_new(provs, ks->spent[i].provider,
				    json_pack("{s:I, s:I}", "day_micros", (json_int_t)ks->spent[i].day,
					      "month_micros", (json_int_t)ks->spent[i].month));
	json_t *doc = json_pack("{s:s, s:s, s:i, s:i, s:o}", "host", ks->sp->host_id, "run", ks->run,
				"day", (int)ks->day, "month", (int)ks->month, "providers", provs);
	if (ks->base_lost)
		json_object_set_new(doc, "base_lost", json_true());
	if (json_array_size(ks->runs_held))
		json_object_set_new(doc, "runs_held", json_deep_copy(ks->runs_held));
	char *text = ledger_dump(doc);
	json_decref(doc);
	return text;
}

/* Writes the figures until the file has the latest, or a write failed; write_lock held on
 * entry, let go here under spent_lock (see struct keyshare). Each writer takes the latest
 * figures, so the file never goes back to older ones, and spends added meanwhile (a helper's
 * waiting its turn, the loop's that found the lock taken) go in the same or the next write. */
static void ledger_write_locked(struct keyshare *ks)
{
	char name[NAME_MAX + 1];
	own_ledger_name(ks, name, sizeof(name));
	bool ok = true;
	pthread_mutex_lock(&ks->spent_lock);
	while (ok && own_readable(ks) && ks->written_gen < ks->spent_gen) {
		unsigned long gen = ks->spent_gen;
		char *text = ledger_text(ks);
		/* Durable: a spend forgotten in a crash would let the budget be spent twice. One with
		 * nothing spent (a start-up's) lost is only missing, and written again. */
		bool durable = ks->n_spent > 0;
		pthread_mutex_unlock(&ks->spent_lock);
		stop_point("ledger:writing");
		ok = ks->ledger_fd >= 0 &&
		     spool_write_at(ks->sp, ks->ledger_fd, name, text, strlen(text), 0, durable) == 0;
		int err = ks->ledger_fd >= 0 ? errno : ks->ledger_errno;
		free(text);
		if (!ok && !ks->ledger_warned)
			log_warn("cannot write '%s/ledger/%s' (%s): other hosts do not see what this "
				 "one spends; the tickets of calls not in it stay until it is written",
				 ks->sp->path, name, strerror(err));
		else if (ok && ks->ledger_warned)
			log_info("'%s/ledger/%s' is written again", ks->sp->path, name);
		ks->ledger_warned = !ok;
		pthread_mutex_lock(&ks->spent_lock);
		if (ok)
			ks->written_gen = gen;
	}
	pthread_mutex_unlock(&ks->write_lock);
	pthread_mutex_unlock(&ks->spent_lock);
}

/* On the loop: writes the figures if unwritten, unless a helper is writing them, which then
 * writes these too (it checks again under spent_lock before it lets write_lock go). */
static void ledger_write_try(struct keyshare *ks)
{
	pthread_mutex_lock(&ks->spent_lock);
	bool mine = own_readable(ks) && ks->written_gen < ks->spent_gen &&
		    pthread_mutex_trylock(&ks->write_lock) == 0;
	pthread_mutex_unlock(&ks->spent_lock);
	if (mine)
		ledger_write_locked(ks);
}

void keyshare_today(struct keyshare *ks, long *day, long *month)
{
	int64_t now = spool_server_now(ks->sp);
	*day = spend_day(now);
	*month = keyshare_month(now);
}

static const char *ledger_doubts(struct keyshare *ks, int64_t lease_ms);

/* ledger/ without this host's ledger, cleared perhaps: the ledgers read before that are gone
 * from it too are looked for by name (ledger_refresh finds them at a budget check, which this
 * host may not make for long), and those of hosts that left carried back (ledger_doubts). */
static void ledger_vanished(struct keyshare *ks)
{
	long day, month;
	keyshare_today(ks, &day, &month);
	for (size_t i = 0; i < ks->n_kept; i++) {
		struct kept_ledger *k = &ks->kept[i];
		struct stat st;
		if (k->doc && !k->vanished && !k->side &&
		    json_integer_value(json_object_get(k->doc, "month")) == month &&
		    fstatat(ks->ledger_fd, k->name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
			k->vanished = true;
			k->listed = false;
			ks->ledger_doubt = true;
		}
	}
	if (ks->lease_ms)
		ledger_doubts(ks, ks->lease_ms);
}

/* Writes this host's ledger if ledger/ lacks it (at start-up, in a new ledger/, or removed
 * alone), even with nothing spent: the hosts that read ledger/ wait for the file of every live
 * host (ledger_doubts), and this one's being gone means others' may be too. The ledgers it
 * carries back go first: a host that finds this one's there finds them too. Written again,
 * too, if the file there falls short of what this host spent: another host judged this one
 * gone while it stalled (a paused VM, an NFS stall) and carried an older reading of it back
 * (ledger_carry), which every host would count, and wait for nothing more, until this host's
 * next billed call. The file is read only when it changed since it was last found whole. */
static void ledger_own_ensure(struct keyshare *ks)
{
	char name[NAME_MAX + 1];
	own_ledger_name(ks, name, sizeof(name));
	if (ks->ledger_fd < 0)
		return;
	struct memo now = memo_look(ks, ks->ledger_fd, name);
	if (now.listed_at) {
		if (memo_stands(&ks->own_memo, &now))
			return;
		const char *why;
		struct stat st;
		json_t *doc = read_ledger_st(ks->ledger_fd, name, &why, &st);
		if (!doc && !ks->own_known) {
			/* Not taken in yet: it may hold what earlier runs spent, so it is never
			 * written over. Gone since listed (ENOENT): written at the next look. */
			int err = errno;
			if (fstatat(ks->ledger_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
				own_unreadable(ks, name, why, err);
			return;
		}
		if (doc && !own_readable(ks))
			log_info("'%s/ledger/%s', this host's own ledger, can be read again: taken in, "
				 "budgets count it", ks->sp->path, name);
		bool said = !own_readable(ks);
		pthread_mutex_lock(&ks->spent_lock);
		ks->own_unread[0] = '\0';
		ks->own_known = true;
		bool due = ks->written_gen < ks->spent_gen;   /* a write of it all comes anyway */
		bool shorter = !doc || own_take_in(ks, doc);
		if (shorter && !due)
			ks->spent_gen++;
		pthread_mutex_unlock(&ks->spent_lock);
		bool carried = doc && json_object_get(doc, "carried_by");
		if (carried)
			log_warn("'%s/ledger/%s' was carried back by another host, which judged this one "
				 "gone: written again with all this host spent", ks->sp->path, name);
		else if (doc && shorter && !due && !said)
			log_warn("'%s/ledger/%s' says less than this host spent: written again",
				 ks->sp->path, name);
		json_decref(doc);
		if (!shorter) {
			ks->own_memo = now;
			return;
		}
	} else if (errno != ENOENT) {
		return;
	} else {
		ledger_vanished(ks);
		long day, month;
		keyshare_today(ks, &day, &month);
		if (!own_readable(ks))
			log_info("'%s/ledger/%s', this host's own ledger that could not be read, is gone: "
				 "this host goes on without it (what its earlier runs spent is counted "
				 "only from other hosts' readings)", ks->sp->path, name);
		pthread_mutex_lock(&ks->spent_lock);
		/* Never taken in (moved aside unread): as a start without it. */
		ks->base_lost = ks->base_lost || !ks->own_known;
		ks->own_known = true;
		ks->own_unread[0] = '\0';
		roll(ks, day > ks->day ? day : ks->day, month > ks->month ? month : ks->month);
		ks->spent_gen++;
		pthread_mutex_unlock(&ks->spent_lock);
		ks->ledger_doubt = true;
	}
	ks->own_memo.listed_at = 0;
	ledger_write_try(ks);
}

/* Adds the spends to the figures; returns their generation (0: nothing added). */
static unsigned long spent_add(struct keyshare *ks, const struct keyshare_spend *spends, size_t n,
			       long day, long month)
{
	unsigned long gen = 0;
	pthread_mutex_lock(&ks->spent_lock);
	/* Only forward: a helper's day may be older than one the loop has already rolled to. */
	roll(ks, day > ks->day ? day : ks->day, month > ks->month ? month : ks->month);
	for (size_t i = 0; i < n; i++) {
		if (spends[i].amount <= 0)
			continue;
		struct spent *s = own_spent(ks, spends[i].provider);
		s->day += spends[i].amount;
		s->month += spends[i].amount;
		gen = ks->spent_gen + 1;
	}
	if (gen)
		ks->spent_gen = gen;
	pthread_mutex_unlock(&ks->spent_lock);
	return gen;
}

unsigned long keyshare_spent_batch(struct keyshare *ks, const struct keyshare_spend *spends,
				   size_t n, long day, long month)
{
	unsigned long gen = spent_add(ks, spends, n, day, month);
	if (gen) {
		pthread_mutex_lock(&ks->write_lock);
		stop_point("ledger:locked");
		ledger_write_locked(ks);
	}
	return gen;
}

unsigned long keyshare_spent(struct keyshare *ks, const char *provider, micros amount)
{
	long day, month;
	keyshare_today(ks, &day, &month);
	struct keyshare_spend one = { .provider = provider, .amount = amount };
	unsigned long gen = spent_add(ks, &one, 1, day, month);
	ledger_write_try(ks);
	return gen;
}

bool keyshare_written(struct keyshare *ks, unsigned long gen)
{
	pthread_mutex_lock(&ks->spent_lock);
	bool written = gen <= ks->written_gen;
	pthread_mutex_unlock(&ks->spent_lock);
	return written;
}

/* Releases the kept tickets whose cost the ledger file has now. */
static void release_written(struct keyshare *ks)
{
	size_t keep = 0;
	for (size_t i = 0; i < ks->n_unwritten; i++) {
		if (keyshare_written(ks, ks->unwritten[i].gen))
			keyshare_release(ks, &ks->unwritten[i].ticket);
		else
			ks->unwritten[keep++] = ks->unwritten[i];
	}
	if (keep < ks->n_unwritten && !keep)
		log_info("every call's cost is in the ledger: the tickets kept for them are gone");
	ks->n_unwritten = keep;
}

bool keyshare_release_spent(struct keyshare *ks, struct keyshare_ticket *t, unsigned long gen)
{
	release_written(ks);
	if (!keyshare_written(ks, gen))
		ledger_write_try(ks);
	if (!t->provider || keyshare_written(ks, gen)) {
		keyshare_release(ks, t);
		return true;
	}
	ks->unwritten = xrealloc(ks->unwritten, (ks->n_unwritten + 1) * sizeof(*ks->unwritten));
	ks->unwritten[ks->n_unwritten++] = (struct unwritten){ .ticket = *t, .gen = gen };
	*t = (struct keyshare_ticket){ 0 };   /* stolen */
	return false;
}

void keyshare_retry_unwritten(struct keyshare *ks)
{
	if (!ks->n_unwritten)
		return;
	ledger_write_try(ks);
	release_written(ks);
	for (size_t i = 0; i < ks->n_unwritten; i++)
		keyshare_heartbeat(ks, &ks->unwritten[i].ticket);
}

/* Puts doc into ledger/ as name, durably, by link(2): never over a file there. 0, or -1 and
 * errno (EEXIST: one is there). */
static int ledger_link(struct keyshare *ks, const char *name, json_t *doc)
{
	char *text = ledger_dump(doc), tmp[NAME_MAX + 1];
	int rc = spool_write_temp(ks->sp, ks->ledger_fd, name, text, strlen(text), tmp);
	if (rc == 0) {
		rc = linkat(ks->ledger_fd, tmp, ks->ledger_fd, name, 0);
		int e = errno;
		unlinkat(ks->ledger_fd, tmp, 0);
		if (rc == 0)
			fsync(ks->ledger_fd);
		errno = e;
	}
	free(text);
	return rc;
}

/* Leaves what this host read of an earlier run of k's host beside its ledger, which lacks it:
 * its host takes it in (side_take), and meanwhile every host counts it (ledger_sum), also one
 * that never read that run. */
static void side_leave(struct keyshare *ks, const struct kept_ledger *k, json_t *earlier)
{
	json_t *doc = json_deep_copy(earlier);
	char *host = xasprintf("%.*s", (int)(k->host_len - 5), k->name);
	json_object_set_new(doc, "host", json_string(host));   /* as its name says */
	json_object_set_new(doc, "carried_by", json_string(ks->sp->host_id));
	char *name = side_name(host, ks->sp->host_id, doc_run(doc));
	int rc = ledger_link(ks, name, doc), err = rc < 0 ? errno : 0;
	const char *why = NULL;
	json_t *there = err == EEXIST ? read_side(ks, name, &why) : NULL;
	if (err == EEXIST && !there && why) {
		/* Its name is known in advance: anyone who may write ledger/ can put a file there
		 * first. One that is not a daemon's is left alone, and this one goes under a name no
		 * one can guess. */
		char *planted = name;
		name = xasprintf("%s.%016" PRIx64, planted, random64());
		log_warn("'%s/ledger/%s' is %s: what this host read of the earlier run of '%s' is "
			 "left as '%s' instead", ks->sp->path, planted, why, host, name);
		free(planted);
		rc = ledger_link(ks, name, doc);
		err = rc < 0 ? errno : 0;
	}
	json_decref(there);
	if (rc == 0)
		log_info("'%s/ledger/%s' is of a run of its host that started without it: what this "
			 "host read of its earlier run is left beside it, as '%s'", ks->sp->path,
			 k->name, name);
	else if (err != EEXIST)
		log_warn("cannot leave '%s/ledger/%s' (%s): what host '%s' spent in its earlier run "
			 "counts on this host only", ks->sp->path, name, strerror(err), host);
	ks->ledger_memo.listed_at = 0;   /* to find it there */
	free(name);
	free(host);
	json_decref(doc);
}

/* A reading of run doc that also holds earlier, a reading of a run doc lacks (as own_take_in
 * takes one in): earlier's figures added to doc's (a day's only if of the same day), its run and
 * the runs it held listed in "runs_held". Owned. */
static json_t *reading_merged(json_t *doc, json_t *earlier)
{
	json_t *out = json_deep_copy(doc);
	long day = (long)json_integer_value(json_object_get(doc, "day"));
	bool same_day = json_integer_value(json_object_get(earlier, "day")) == day;
	json_t *provs = json_object_get(out, "providers"), *v, *held = json_array();
	const char *key;
	size_t i;
	json_object_foreach(json_object_get(earlier, "providers"), key, v) {
		json_t *to = json_object_get(provs, key);
		if (!to)
			json_object_set_new(provs, key, to = json_pack("{s:I, s:I}", "day_micros",
								       (json_int_t)0, "month_micros",
								       (json_int_t)0));
		json_int_t d = json_integer_value(json_object_get(v, "day_micros"));
		json_int_t m = json_integer_value(json_object_get(v, "month_micros"));
		json_object_set_new(to, "day_micros", json_integer(
			json_integer_value(json_object_get(to, "day_micros")) + (same_day ? d : 0)));
		json_object_set_new(to, "month_micros", json_integer(
			json_integer_value(json_object_get(to, "month_micros")) + m));
	}
	json_array_foreach(json_object_get(doc, "runs_held"), i, v)
		json_array_append(held, v);
	json_array_foreach(json_object_get(earlier, "runs_held"), i, v)
		if (!runs_list(held, json_string_value(v)))
			json_array_append(held, v);
	if (!runs_list(held, doc_run(earlier)))
		json_array_append_new(held, json_string(doc_run(earlier)));
	while (json_array_size(held) > RUNS_HELD_MAX)
		json_array_remove(held, 0);
	json_object_set_new(out, "runs_held", held);
	if (doc_base_lost(earlier))
		json_object_set_new(out, "base_lost", json_true());
	return out;
}

/* k's host wrote its ledger anew (next, just read; old: what was read before): if a run that
 * started without its file wrote it, and it lacks the run read before, that reading is kept
 * as k->earlier, counted with it and left beside it; one next holds is let go. One kept from
 * before that old lacks too is merged into it, not dropped (a host restarted twice without its
 * ledger: both earlier runs count). One kept from before that a newer run still lacks is left
 * again (a cleared ledger/ took its file). */
static void earlier_keep(struct keyshare *ks, struct kept_ledger *k, json_t *old, json_t *next)
{
	long day, month;
	keyshare_today(ks, &day, &month);
	micros d = 0, m = 0;
	if (old)
		ledger_add(old, NULL, day, month, &d, &m);
	bool new_run = old && !doc_holds(next, doc_run(old));
	if (m && new_run && doc_base_lost(next)) {
		json_t *kept = k->earlier && doc_run(k->earlier) && !doc_holds(old, doc_run(k->earlier)) &&
					       json_integer_value(json_object_get(k->earlier, "month")) == month
				       ? reading_merged(old, k->earlier)
				       : json_incref(old);
		json_decref(k->earlier);
		k->earlier = kept;
	}
	if (k->earlier && (!doc_base_lost(next) || doc_holds(next, doc_run(k->earlier)) ||
			   json_integer_value(json_object_get(k->earlier, "month")) != month)) {
		json_decref(k->earlier);
		k->earlier = NULL;
	}
	if (k->earlier && new_run)
		side_leave(ks, k, k->earlier);
}

/* Reads another host's ledger (or a side file) again; a read that fails is said once, as is
 * the first that works after it. */
static void ledger_reread(struct keyshare *ks, struct kept_ledger *k, const struct memo *now)
{
	const char *why;
	json_t *old = k->doc;
	if (k->side) {
		k->doc = read_side(ks, k->name, &why);
		k->memo = *now;
		if (!k->doc && why && !k->junk_said)
			log_warn("'%s/ledger/%s' is %s: it counts for nothing", ks->sp->path, k->name, why);
		k->junk_said = !k->doc;
		json_decref(old);
		return;
	}
	k->doc = read_ledger(ks->ledger_fd, k->name, &why);
	if (k->doc)
		earlier_keep(ks, k, old, k->doc);
	json_decref(old);
	k->memo = *now;
	if (!k->doc) {
		k->memo.listed_at = 0;
		if (!k->unreadable)
			log_warn("cannot read '%s/ledger/%s' (%s): what that host spent is not known, so "
				 "no call to a provider under a budget starts until it can be read",
				 ks->sp->path, k->name, why);
	} else if (k->unreadable) {
		log_info("'%s/ledger/%s' can be read again: budgets count it", ks->sp->path, k->name);
	}
	k->unreadable = !k->doc;
}

/* Removes the side files taken in whose figures the ledger file has now. */
static void sides_remove_written(struct keyshare *ks)
{
	size_t keep = 0;
	for (size_t i = 0; i < ks->n_sides_taken; i++) {
		struct side_taken *t = &ks->sides_taken[i];
		if (keyshare_written(ks, t->gen) && ks->ledger_fd >= 0) {
			unlinkat(ks->ledger_fd, t->name, 0);
			free(t->name);
		} else {
			ks->sides_taken[keep++] = *t;
		}
	}
	ks->n_sides_taken = keep;
}

/* doc (a reading of an earlier run) less what taking in readings of runs it holds added
 * already this run (taken: side_take's), each figure no less than 0: a reading of run R2 that
 * holds R1, taken in after a reading of R1, adds only what it says beyond it, so no run counts
 * twice, whatever order the side files are found in. A reading taken whose runs doc holds only
 * in part is not taken off (both counted whole: more, never less). Owned. */
static json_t *reading_beyond(json_t *doc, json_t *taken)
{
	json_t *out = json_deep_copy(doc), *had, *v, *f;
	long day = (long)json_integer_value(json_object_get(doc, "day"));
	const char *run, *key;
	size_t i;
	json_object_foreach(taken, run, had) {
		bool within = doc_holds(doc, run);
		json_array_foreach(json_object_get(had, "runs_held"), i, v)
			within = within && doc_holds(doc, json_string_value(v));
		if (!within)
			continue;
		bool same_day = json_integer_value(json_object_get(had, "day")) == day;
		json_object_foreach(json_object_get(had, "providers"), key, f) {
			json_t *to = json_object_get(json_object_get(out, "providers"), key);
			if (!to)
				continue;
			json_int_t d = json_integer_value(json_object_get(to, "day_micros"));
			json_int_t m = json_integer_value(json_object_get(to, "month_micros"));
			d -= same_day ? json_integer_value(json_object_get(f, "day_micros")) : 0;
			m -= json_integer_value(json_object_get(f, "month_micros"));
			json_object_set_new(to, "day_micros", json_integer(d > 0 ? d : 0));
			json_object_set_new(to, "month_micros", json_integer(m > 0 ? m : 0));
		}
	}
	return out;
}

/* A reading of an earlier run of this host that another host left beside its ledger
 * (side_leave): what that run spent, unless these figures hold it already, is added to them
 * (own_take_in), written, and then the file removed (sides_remove_written), so that nothing is
 * added twice, here or in a later run (the ledger lists the runs it holds). */
static void side_take(struct keyshare *ks, const char *name)
{
	for (size_t i = 0; i < ks->n_sides_taken; i++)
		if (!strcmp(ks->sides_taken[i].name, name))
			return;   /* taken, not written yet */
	const char *why;
	json_t *doc = read_side(ks, name, &why);
	if (!doc)
		return;   /* not a daemon's: counts for nothing, left alone */
	pthread_mutex_lock(&ks->spent_lock);
	const char *run = doc_run(doc);
	bool adds = ks->base_lost && !runs_list(ks->runs_held, run) && strcmp(run, ks->run) &&
		    json_integer_value(json_object_get(doc, "month")) == ks->month;
	if (adds) {
		json_t *beyond = reading_beyond(doc, ks->runs_taken);
		own_take_in(ks, beyond);
		json_object_set_new(ks->runs_taken, run, beyond);
	}
	unsigned long gen = adds ? ++ks->spent_gen : ks->spent_gen;
	pthread_mutex_unlock(&ks->spent_lock);
	if (adds)
		log_info("took in '%s/ledger/%s': what another host read of this host's run '%s', "
			 "which its ledger lacked", ks->sp->path, name, run);
	ks->sides_taken = xrealloc(ks->sides_taken, (ks->n_sides_taken + 1) * sizeof(*ks->sides_taken));
	ks->sides_taken[ks->n_sides_taken++] = (struct side_taken){ .name = xstrdup(name), .gen = gen };
	json_decref(doc);
	ledger_write_try(ks);
}

/* Brings the other hosts' ledgers kept in memory up to date: ledger/ is listed again only when
 * it changed, and a ledger read again only when its file did (a ledger is only ever replaced,
 * renamed into ledger/). Both judged by keyshare_listing_stands on the file server's word, so
 * what is used is what reading every file now would give (spool-layout.md §17). A ledger that
 * could not be read is never kept: it, and ledger/, are read again at the next refresh. */
static void ledger_refresh(struct keyshare *ks)
{
	struct memo next = top_look(ks, &ks->ledger_fd);
	struct spool_entry *l;
	if (!next.listed_at || memo_stands(&ks->ledger_memo, &next))
		return;   /* unchanged; or not to be seen now, and what was kept is better than nothing */
	long n = spool_list_at(ks->ledger_fd, false, false, &l);
	if (n < 0) {
		ks->ledger_memo.listed_at = 0;
		return;   /* what was kept is better than nothing */
	}
	ks->ledger_memo = next;
	char own[NAME_MAX + 1];
	own_ledger_name(ks, own, sizeof(own));
	for (size_t i = 0; i < ks->n_kept; i++)
		ks->kept[i].listed = false;
	for (long i = 0; i < n; i++) {
		size_t len = strlen(l[i].name);
		bool json = len > 5 && !strcmp(l[i].name + len - 5, ".json");
		const char *side = json ? NULL : strstr(l[i].name, ".json" SIDE_INFIX);
		size_t host_len = side ? (size_t)(side - l[i].name) + 5 : len;
		if (!strcmp(l[i].name, own) || (!side && !json))
			continue;
		if (side && host_len == strlen(own) && !strncmp(l[i].name, own, host_len)) {
			side_take(ks, l[i].name);
			continue;
		}
		struct kept_ledger *k = NULL;
		for (size_t j = 0; j < ks->n_kept && !k; j++)
			if (!strcmp(ks->kept[j].name, l[i].name))
				k = &ks->kept[j];
		if (!k) {
			ks->kept = xrealloc(ks->kept, (ks->n_kept + 1) * sizeof(*ks->kept));
			k = &ks->kept[ks->n_kept++];
			*k = (struct kept_ledger){ .name = xstrdup(l[i].name), .host_len = host_len,
						   .side = side != NULL };
		}
		k->listed = true;
		struct memo now = memo_look(ks, ks->ledger_fd, k->name);
		if (!memo_stands(&k->memo, &now))
			ledger_reread(ks, k, &now);
	}
	spool_entries_free(l, n);
	size_t kept = 0;
	long day, month;
	keyshare_today(ks, &day, &month);
	for (size_t i = 0; i < ks->n_kept; i++) {
		struct kept_ledger *k = &ks->kept[i];
		if (k->listed) {
			if (k->unreadable)
				ks->ledger_memo.listed_at = 0;   /* not kept as read: again next time */
			k->vanished = k->carried = false;
			ks->kept[kept++] = *k;
			continue;
		}
		if (k->side) {   /* taken in by its host (or cleared): its host's file says it now */
			json_decref(k->doc);
			free(k->name);
			continue;
		}
		/* Gone (with ledger/, or alone): its host's spend is not 0. What was read of it still
		 * counts (if of this month), and budgets wait till its host, if live, has written it
		 * again. */
		ks->ledger_doubt = true;
		if (k->doc && json_integer_value(json_object_get(k->doc, "month")) == month) {
			k->vanished = true;
			ks->kept[kept++] = *k;
			continue;
		}
		json_decref(k->doc);
		json_decref(k->earlier);
		if (k->unreadable)
			log_info("'%s/ledger/%s' is gone: budgets no longer wait for it to be read",
				 ks->sp->path, k->name);
		free(k->name);
	}
	ks->n_kept = kept;
	sides_remove_written(ks);
}

/* Whether name in ledger/ is host's ledger, "HOST.json". */
static bool ledger_of(const char *name, const char *host)
{
	size_t n = strlen(host);
	return !strncmp(name, host, n) && !strcmp(name + n, ".json");
}

/* Puts what this host last read of a host that has left into ledger/ again (k vanished from
 * it): its file is gone and no one will write it again, so the hosts that never read it would
 * count it as 0. link(2): never over a file there (its host's own, come back, or another
 * host's carried one). */
static void ledger_carry(struct keyshare *ks, struct kept_ledger *k)
{
	json_object_set_new(k->doc, "carried_by", json_string(ks->sp->host_id));
	int rc = ledger_link(ks, k->name, k->doc);
	if (rc == 0)
		log_info("'%s/ledger/%s' was gone and its host has left: what this host last read of "
			 "it is carried back", ks->sp->path, k->name);
	else if (errno != EEXIST)
		log_warn("cannot carry '%s/ledger/%s' back (%s): what its host spent counts on this "
			 "host only", ks->sp->path, k->name, strerror(errno));
	ks->ledger_memo.listed_at = 0;   /* to find it there */
}

static void free_hosts(char **hosts, long n)
{
	for (long i = 0; i < n; i++)
		free(hosts[i]);
	free(hosts);
}

/* While ledger/ cannot be opened (unreadable, a file in its place): what budgets wait for,
 * or NULL. No ledger can be shared, so another live host's spend is unknown: budgeted calls
 * wait while one is live. Alone, this host's own figures are every host's: it goes on. Looked
 * at every try, as a host may start meanwhile; ledger/ is opened again every 10 s. */
static const char *ledger_unusable(struct keyshare *ks, int64_t lease_ms)
{
	char **live = NULL;
	long n = hostlock_live_hosts(ks->sp, lease_ms, &live);
	int err = errno;
	xsnprintf(ks->doubt_about, sizeof(ks->doubt_about), "%s", n > 0 ? live[0] : "running");
	free_hosts(live, n);
	if (n == 0) {
		if (ks->unusable_said != UNUSABLE_ALONE)
			log_warn("cannot open '%s/ledger' (%s) and no other host is live: calls to a "
				 "provider under a budget count what this host spent only, which is "
				 "all that was spent while it runs alone", ks->sp->path,
				 strerror(ks->ledger_errno));
		ks->unusable_said = UNUSABLE_ALONE;
		return NULL;
	}
	if (ks->unusable_said != UNUSABLE_WAITS) {
		if (n < 0)
			log_warn("cannot open '%s/ledger' (%s), nor read '%s/running' (%s) to know "
				 "whether another host is live: no call to a provider under a budget "
				 "starts until one of them can", ks->sp->path,
				 strerror(ks->ledger_errno), ks->sp->path, strerror(err));
		else
			log_warn("cannot open '%s/ledger' (%s) and host '%s' is live: what it spent "
				 "is unknown, so no call to a provider under a budget starts until "
				 "'%s/ledger' can be opened or no other host is live", ks->sp->path,
				 strerror(ks->ledger_errno), ks->doubt_about, ks->sp->path);
	}
	ks->unusable_said = UNUSABLE_WAITS;
	return "ledger";
}

/* While ledger/ is in doubt (opened anew, or a ledger read before gone from it): what budgets
 * wait for — a live host's ledger not (readably) in it yet — or NULL once there is none; the
 * ledgers of hosts that have left are carried back meanwhile. A host writes its own ledger as
 * soon as it finds ledger/ without it (every 10 s at most), so a live host is waited for that
 * long; one that left (a lock older than a lease, or none) never. */
static const char *ledger_unusable(struct keyshare *ks, int64_t lease_ms);

static const char *ledger_doubts(struct keyshare *ks, int64_t lease_ms)
{
	if (ks->ledger_fd < 0)
		return ledger_unusable(ks, lease_ms);
	if (!ks->ledger_doubt)
		return NULL;
	char **live = NULL;
	long n = hostlock_live_hosts(ks->sp, lease_ms, &live);
	int err = errno;
	const char *missing = n < 0 ? "running" : NULL;
	for (long i = 0; i < n && !missing; i++) {
		xsnprintf(ks->doubt_about, sizeof(ks->doubt_about), "%s.json", live[i]);
		missing = ks->doubt_about;
		/* Not one carried back (a reading, older perhaps): a live host writes its own over
		 * it (ledger_own_ensure). */
		for (size_t j = 0; j < ks->n_kept; j++)
			if (ledger_of(ks->kept[j].name, live[i]) && ks->kept[j].listed &&
			    ks->kept[j].doc && !json_object_get(ks->kept[j].doc, "carried_by"))
				missing = NULL;
	}
	/* A vanished ledger still counts here as read (ledger_sum); for the other hosts, that of
	 * a host that left is put back, once. */
	for (size_t j = 0; j < ks->n_kept && n >= 0; j++) {
		struct kept_ledger *k = &ks->kept[j];
		bool left = k->vanished && !k->carried;
		for (long i = 0; i < n && left; i++)
			left = !ledger_of(k->name, live[i]);
		if (left)
			ledger_carry(ks, k);
		k->carried = k->carried || left;
	}
	free_hosts(live, n);
	if (!missing) {
		if (ks->doubt_said)
			log_info("'%s/ledger' holds the ledger of every live host: budgets count them "
				 "again", ks->sp->path);
		ks->ledger_doubt = ks->doubt_said = false;
		return NULL;
	}
	if (!ks->doubt_said && n < 0)
		log_warn("cannot read '%s/%s' (%s), so not every live host's ledger is known to be in "
			 "'%s/ledger': no call to a provider under a budget starts until it can",
			 ks->sp->path, missing, strerror(err), ks->sp->path);
	else if (!ks->doubt_said)
		log_warn("'%s/ledger' is new or was cleared, and '%s' of a live host is not in it yet: "
			 "no call to a provider under a budget starts until it is (that host writes it "
			 "within 10 s, or leaves)", ks->sp->path, missing);
	ks->doubt_said = true;
	return missing;
}

/* A reading of an earlier run (of the kept ledgers i, a side file's or its earlier one). */
static json_t *earlier_of(const struct kept_ledger *k)
{
	return k->side ? k->doc : k->earlier;
}

static bool same_host(const struct kept_ledger *a, const struct kept_ledger *b)
{
	return a->host_len == b->host_len && !strncmp(a->name, b->name, a->host_len);
}

/* Adds what the earlier runs of hosts spent that their ledgers lack (they started without
 * them: "base_lost", and these runs are not in their "runs_held"), by the readings of them
 * kept here and left beside them by other hosts: for each run the largest reading, unless a
 * reading of a later run holds it. */
static void earlier_sum(struct keyshare *ks, const char *provider, long day, long month,
			micros *d, micros *m, micros *td, micros *tm)
{
	for (size_t i = 0; i < ks->n_kept; i++) {
		json_t *doc = earlier_of(&ks->kept[i]);
		const char *run = doc ? doc_run(doc) : NULL;
		if (!run)
			continue;
		bool counted = false;
		micros most[4] = { 0 };
		for (size_t j = 0; j < ks->n_kept && !counted; j++) {
			const struct kept_ledger *o = &ks->kept[j];
			json_t *other = earlier_of(o);
			if (!same_host(o, &ks->kept[i]))
				continue;
			if (!o->side && o->doc)   /* its host's own file */
				counted = !doc_base_lost(o->doc) || doc_holds(o->doc, run);
			if (!other || !doc_run(other))
				continue;
			if (strcmp(doc_run(other), run)) {
				counted = counted || doc_holds(other, run);   /* a later run holds it */
				continue;
			}
			counted = counted || j < i;   /* the same run: with the first of them */
			micros r[4] = { 0 };
			ledger_add(other, provider, day, month, &r[0], &r[1]);
			ledger_add(other, NULL, day, month, &r[2], &r[3]);
			for (int q = 0; q < 4; q++)
				most[q] = r[q] > most[q] ? r[q] : most[q];
		}
		if (counted)
			continue;
		*d += most[0];
		*m += most[1];
		*td += most[2];
		*tm += most[3];
	}
}

/* What every host spent today and this month: on provider (d, m) and on all (td, tm).
 * Returns why a host's spend is unknown (*which: a ledger that cannot be read, or a live host's
 * not in a new ledger/ yet), or NULL. */
static const char *ledger_sum(struct keyshare *ks, const char *provider, long day, long month,
			      micros *d, micros *m, micros *td, micros *tm, const char **which)
{
	*d = *m = *td = *tm = 0;
	ks->counts_ledgers = true;
	pthread_mutex_lock(&ks->spent_lock);
	roll(ks, day, month);
	pthread_mutex_unlock(&ks->spent_lock);
	/* First: it may take in what another host read of an earlier run of this one (side_take). */
	if (ks->ledger_fd >= 0)
		ledger_refresh(ks);
	/* This host's own file unreadable: read again at each try, before its figures count. */
	if (!own_readable(ks) && ks->ledger_fd >= 0)
		ledger_own_ensure(ks);
	pthread_mutex_lock(&ks->spent_lock);
	for (size_t i = 0; i < ks->n_spent; i++) {
		if (!strcmp(ks->spent[i].provider, provider)) {
			*d += ks->spent[i].day;
			*m += ks->spent[i].month;
		}
		*td += ks->spent[i].day;
		*tm += ks->spent[i].month;
	}
	pthread_mutex_unlock(&ks->spent_lock);
	const char *unreadable = NULL;
	for (size_t i = 0; i < ks->n_kept; i++) {
		if (ks->kept[i].unreadable && !unreadable)
			unreadable = ks->kept[i].name;
		if (!ks->kept[i].doc || ks->kept[i].side)
			continue;
		ledger_add(ks->kept[i].doc, provider, day, month, d, m);
		ledger_add(ks->kept[i].doc, NULL, day, month, td, tm);
	}
	if (ks->n_kept)
		earlier_sum(ks, provider, day, month, d, m, td, tm);
	*which = "an unreadable ledger";
	if (unreadable)
		return unreadable;
	if (!own_readable(ks)) {
		own_ledger_name(ks, ks->doubt_about, sizeof(ks->doubt_about));
		return ks->doubt_about;
	}
	*which = ks->ledger_fd < 0 ? "a live host's spend, with no ledger/ to share it" :
				      "a live host's ledger not in a new ledger/";
	return ledger_doubts(ks, ks->lease_ms);
}

/* ---- the gate ------------------------------------------------------------------------------- */

bool keyshare_needed(const struct keyshare_limits *l)
{
	return l->concurrency || l->rpm || l->budget_daily || l->budget_monthly || l->total_daily ||
	       l->total_monthly;
}

/* Calls in flight in calls/ and what they reserve; with_stat removes dead hosts' tickets
 * (not heartbeated for a lease) first, and says since when (file server ms) every ticket there
 * was heartbeated (oldest_beat, may be NULL): those it saw were heartbeated at their mtime at
 * the latest, and one made after the listing has an mtime no earlier than the listing, less
 * the clock margin. reaped (may be NULL): whether it removed any. -1 on error. */
static int count_calls(struct keyshare *ks, const struct pdir *p, const char *mine,
		       bool with_stat, int64_t lease_ms, long *count, micros *reserved,
		       int64_t *oldest_beat, bool *reaped)
{
	struct spool_entry *l;
	*count = 0;
	*reserved = 0;
	if (oldest_beat)
		*oldest_beat = 0;
	if (reaped)
		*reaped = false;
	int64_t listed_at = with_stat ? spool_server_now(ks->sp) : 0;
	int64_t oldest = listed_at - KEYSHARE_CLOCK_MARGIN_MS;
	long n = spool_list_at(p->calls, false, with_stat, &l);
	if (n < 0)
		return -1;
	int64_t now = with_stat ? spool_server_now(ks->sp) : 0;
	for (long i = 0; i < n; i++) {
		char host[128];
		micros r;
		int64_t age_ms = now - l[i].mtime_ns / 1000000;
		if (keyshare_parse_ticket(l[i].name, host, sizeof(host), &r) < 0)
			continue;
		if (with_stat && age_ms > lease_ms && (!mine || strcmp(l[i].name, mine))) {
			if (unlinkat(p->calls, l[i].name, 0) == 0) {
				log_info("a call of host '%s' to provider '%s' was not heartbeated for %" PRId64
					 " s: its share of the limits is free again", host, p->name,
					 age_ms / 1000);
				if (reaped)
					*reaped = true;
			}
			continue;
		}
		if (l[i].mtime_ns / 1000000 < oldest)
			oldest = l[i].mtime_ns / 1000000;
		(*count)++;
		*reserved += r;
	}
	spool_entries_free(l, n);
	if (oldest_beat && with_stat)
		*oldest_beat = oldest;
	return 0;
}

/* Whether a ticket in p's calls/ may have gone a lease without a heartbeat since the last look
 * that stat'ed them: only then is it worth stat'ing them again. The lease is today's: a reload
 * that shortens it applies to the tickets already seen. */
static bool may_hold_dead(const struct pdir *p, int64_t now, int64_t lease_ms)
{
	return now >= p->calls_oldest_beat + lease_ms;
}

/* The provider names in providers/, listed again only when it changed; those listed last while
 * it cannot be listed. */
static void provider_names(struct keyshare *ks)
{
	struct memo next = top_look(ks, &ks->providers_fd);
	if (!next.listed_at || memo_stands(&ks->providers_memo, &next))
		return;
	struct spool_entry *l;
	long n = spool_list_at(ks->providers_fd, false, false, &l);
	if (n < 0) {
		ks->providers_memo.listed_at = 0;
		return;
	}
	for (size_t i = 0; i < ks->n_provider_names; i++)
		free(ks->provider_names[i]);
	free(ks->provider_names);
	ks->providers_memo = next;
	ks->n_provider_names = 0;
	ks->provider_names = xcalloc((size_t)n + 1, sizeof(*ks->provider_names));
	for (long i = 0; i < n; i++)
		ks->provider_names[ks->n_provider_names++] = xstrdup(l[i].name);
	spool_entries_free(l, n);
}

/* What the calls in flight to p reserve, its calls/ listed again only when it changed. */
static int calls_reserved(struct keyshare *ks, struct pdir *p, micros *out)
{
	struct memo next = memo_look(ks, p->calls, "");
	if (!memo_stands(&p->calls_memo, &next)) {
		if (!next.listed_at) {   /* removed, and perhaps made again: open it anew */
			p->checked_at = 0;
			if (!pdir(ks, p->name))
				return -1;
			next = memo_look(ks, p->calls, "");
		}
		long count;
		p->calls_memo = next;
		if (count_calls(ks, p, NULL, false, 0, &count, &p->calls_reserved, NULL, NULL) < 0) {
			p->calls_memo.listed_at = 0;
			return -1;
		}
	}
	*out = p->calls_reserved;
	return 0;
}

/* What every provider's calls in flight reserve (for a total budget): own's, as just counted,
 * and the others' (spool-layout.md §17: each calls/ is listed again only when it changed). */
static micros reserved_everywhere(struct keyshare *ks, const struct pdir *own, micros own_reserved)
{
	micros sum = own_reserved;
	provider_names(ks);
	for (size_t i = 0; i < ks->n_provider_names; i++) {
		if (!strcmp(ks->provider_names[i], own->name))
			continue;
		struct pdir *p = pdir(ks, ks->provider_names[i]);
		micros r;
		if (p && calls_reserved(ks, p, &r) == 0)
			sum += r;
	}
	return sum;
}

/* A total budget counts the tickets of providers this host may never call, so it removes the
 * dead hosts' tickets there as it does its own provider's (else, with no live host calling
 * that provider, they would count for ever). A provider's calls/ is stat'ed again only once
 * one of its tickets may have outlived its lease since (count_calls): about once a lease. */
static void reap_others(struct keyshare *ks, const struct pdir *own, int64_t lease_ms)
{
	provider_names(ks);
	for (size_t i = 0; i < ks->n_provider_names; i++) {
		if (!strcmp(ks->provider_names[i], own->name))
			continue;
		struct pdir *p = pdir(ks, ks->provider_names[i]);
		if (!p || !may_hold_dead(p, spool_server_now(ks->sp), lease_ms))
			continue;
		long count;
		bool reaped;
		p->calls_memo = memo_look(ks, p->calls, "");   /* the listing below is of this */
		if (count_calls(ks, p, NULL, true, lease_ms, &count, &p->calls_reserved,
				&p->calls_oldest_beat, &reaped) < 0 || reaped)
			p->calls_memo.listed_at = 0;   /* listed again: it changed, by us at least */
	}
}

void keyshare_release(struct keyshare *ks, struct keyshare_ticket *t)
{
	if (!t->provider)
		return;
	struct pdir *p = pdir(ks, t->provider);
	if (p && t->call)
		unlinkat(p->calls, t->call, 0);
	free(t->provider);
	free(t->call);
	free(t->start);
	*t = (struct keyshare_ticket){ 0 };
}

/* Takes back a ticket that may not stand, and its start: that call never happened. */
static void withdraw(struct keyshare *ks, struct pdir *p, struct keyshare_ticket *t)
{
	if (t->start)
		unlinkat(p->starts, t->start, 0);
	keyshare_release(ks, t);
}

static int64_t jitter_ms(int64_t base)
{
	return base + (int64_t)(random64() % (uint64_t)(base + 1));
}

/* The starts in the window (other than mine), removing those long gone. */
static int rate_check(struct pdir *p, const struct keyshare_limits *l,
		      const char *mine, int64_t me, struct keyshare_verdict *v)
{
	struct spool_entry *names;
	long listed = spool_list_at(p->starts, false, false, &names);
	if (listed < 0)
		return -1;
	int64_t window = l->window_ms + KEYSHARE_CLOCK_MARGIN_MS;
	int64_t *times = xcalloc((size_t)listed + 1, sizeof(*times));
	size_t n = 0;
	for (long i = 0; i < listed; i++) {
		char *end;
		long long t = strtoll(names[i].name, &end, 10);
		if (*end != '~' || !strcmp(names[i].name, mine))
			continue;
		if (me - t > window + START_GRACE_MS) {
			unlinkat(p->starts, names[i].name, 0);
			continue;
		}
		times[n++] = t;
	}
	int64_t retry_at = 0;
	bool ok = keyshare_rate_ok(times, n, me, l->rpm, window, &retry_at);
	if (!ok) {
		*v = (struct keyshare_verdict){ .block = PROVIDER_BUSY, .retry_at = retry_at,
						.counted = (long)n + 1, .which = "rpm" };
	}
	free(times);
	spool_entries_free(names, listed);
	return ok ? 0 : 1;
}

static bool budget_check(struct keyshare *ks, const struct pdir *p, const struct keyshare_limits *l,
			 micros reserved, struct keyshare_verdict *v)
{
	if (!l->budget_daily && !l->budget_monthly && !l->total_daily && !l->total_monthly)
		return true;
	int64_t now = spool_server_now(ks->sp);
	long day = spend_day(now), month = keyshare_month(now);
	micros d, m, td, tm;
	const char *which;
	if (ledger_sum(ks, p->name, day, month, &d, &m, &td, &tm, &which)) {
		/* Its host's spend unknown: never counted as 0, nor as an older reading (a ledger
		 * only grows within a day). Read again at the next try. */
		*v = (struct keyshare_verdict){ .block = PROVIDER_BUSY, .retry_at = now + 1000,
						.which = which };
		return false;
	}
	struct check { micros budget, spent, reserved; const char *which; } checks[4] = {
		{ l->budget_daily, d, reserved, "daily" },
		{ l->budget_monthly, m, reserved, "monthly" },
		{ 0, 0, 0, "total daily" },
		{ 0, 0, 0, "total monthly" },
	};
	if (l->total_daily || l->total_monthly) {
		micros all = reserved_everywhere(ks, p, reserved);
		checks[2] = (struct check){ l->total_daily, td, all, "total daily" };
		checks[3] = (struct check){ l->total_monthly, tm, all, "total monthly" };
	}
	for (int i = 0; i < 4; i++) {
		if (checks[i].budget && checks[i].spent + checks[i].reserved > checks[i].budget) {
			*v = (struct keyshare_verdict){ .block = PROVIDER_OVER_BUDGET,
							.spent = checks[i].spent,
							.reserved = checks[i].reserved,
							.budget = checks[i].budget, .which = checks[i].which,
							.retry_at = -1 };
			return false;
		}
	}
	return true;
}

struct keyshare_verdict keyshare_acquire(struct keyshare *ks, const char *provider,
					 const struct keyshare_limits *l, micros reserve,
					 struct keyshare_ticket *out)
{
	struct keyshare_verdict v = { .block = PROVIDER_FREE };
	struct keyshare_verdict failed = { .block = PROVIDER_BUSY, .which = "a file error" };
	*out = (struct keyshare_ticket){ 0 };
	struct pdir *p = pdir_of(ks, provider);
	int64_t now = spool_server_now(ks->sp);
	failed.retry_at = now + 1000;
	ks->lease_ms = l->lease_ms;
	if (!pdir_open(ks, p))
		return failed;
	ks->seq++;
	out->provider = xstrdup(provider);
	out->reserve = reserve > 0 ? reserve : 0;
	out->call = xasprintf("%s~%ld-%lu~%lld", ks->sp->host_id, ks->pid, ks->seq, out->reserve);
	if (create_in(ks, p, IN_CALLS, out->call, NULL) < 0)
		goto file_error;
	if (l->rpm) {
		out->start = xasprintf("%" PRId64 "~%s~%ld-%lu", now, ks->sp->host_id, ks->pid, ks->seq);
		if (create_in(ks, p, IN_STARTS, out->start, NULL) < 0) {
			free(out->start);
			out->start = NULL;
			goto file_error;
		}
	}
	/* Only now, with ours written, count: whoever writes last sees everyone before it. */
	long count;
	micros reserved;
	if (count_calls(ks, p, out->call, false, l->lease_ms, &count, &reserved, NULL, NULL) < 0)
		goto file_error;
	if (p->warned)
		log_info("provider '%s': its limits are kept with other hosts again", provider);
	p->warned = false;   /* a failure from now on is said again */
	bool over_count = l->concurrency && count > l->concurrency;
	if (over_count || !budget_check(ks, p, l, reserved, &v)) {
		if (v.block == PROVIDER_BUSY) {   /* an unreadable ledger: no dead ticket changes that */
			withdraw(ks, p, out);
			return v;
		}
		/* Perhaps a dead host's tickets: look closer (a stat of each) before saying no, once
		 * one may have outlived its lease since the last look. */
		if (may_hold_dead(p, now, l->lease_ms) &&
		    count_calls(ks, p, out->call, true, l->lease_ms, &count, &reserved,
				&p->calls_oldest_beat, NULL) < 0)
			goto file_error;
		if (l->total_daily || l->total_monthly)
			reap_others(ks, p, l->lease_ms);
		v = (struct keyshare_verdict){ .block = PROVIDER_FREE };
		if (l->concurrency && count > l->concurrency) {
			withdraw(ks, p, out);
			return (struct keyshare_verdict){ .block = PROVIDER_BUSY, .counted = count,
							  .retry_at = now + jitter_ms(250),
							  .which = "concurrency" };
		}
		if (!budget_check(ks, p, l, reserved, &v)) {
			withdraw(ks, p, out);
			return v;
		}
	}
	if (l->rpm) {
		int rc = rate_check(p, l, out->start, now, &v);
		if (rc != 0) {
			withdraw(ks, p, out);
			if (rc < 0)
				return failed;
			v.retry_at += jitter_ms(100) - 100;
			return v;
		}
	}
	v.counted = count;
	return v;

file_error:
	if (!p->warned)
		log_warn("cannot keep the limits of provider '%s' with other hosts ('%s/providers/%s': "
			 "%s): no call to it starts until that works", provider, ks->sp->path, provider,
			 strerror(errno));
	p->warned = true;
	withdraw(ks, p, out);
	p->checked_at = 0;   /* perhaps its directory was removed: look before the next try */
	return failed;
}

void keyshare_heartbeat(struct keyshare *ks, const struct keyshare_ticket *t)
{
	struct pdir *p = t->provider ? pdir(ks, t->provider) : NULL;
	/* A ticket removed meanwhile (its directory removed by hand, or taken for a dead host's
	 * after a stall) is made again: the call is still in flight. */
	if (p && t->call && utimensat(p->calls, t->call, NULL, AT_SYMLINK_NOFOLLOW) < 0 &&
	    gone(errno))
		create_in(ks, p, IN_CALLS, t->call, NULL);
}

void keyshare_heartbeat_probes(struct keyshare *ks)
{
	for (size_t i = 0; i < ks->n_dirs; i++) {
		struct pdir *p = ks->dirs[i]->probe_ours ? pdir(ks, ks->dirs[i]->name) : NULL;
		/* Gone with its directory: made again, unless another host probes meanwhile. */
		if (p && utimensat(p->fd, "probe", NULL, AT_SYMLINK_NOFOLLOW) < 0 && gone(errno) &&
		    create_in(ks, p, IN_PROVIDER, "probe", ks->sp->host_id) < 0)
			p->probe_ours = false;
	}
}

bool keyshare_beat_late(int64_t last_mono, int64_t now_mono, int64_t lease_ms)
{
	return last_mono > 0 && now_mono - last_mono >= lease_ms / 2;
}

void keyshare_beat(struct keyshare *ks, int64_t lease_ms)
{
	int64_t now = mono_ms();
	bool late = keyshare_beat_late(ks->beat_at, now, lease_ms);
	ks->beat_at = now;
	if (!late)
		return;
	/* Stalled (a paused VM, an NFS stall): its host lock too, so other hosts may have judged
	 * it gone and carried an older reading of its ledger back, which they count, waiting for
	 * nothing more, until this host writes its own over it (ledger_own_ensure): now, not at
	 * its next look at ledger/ (within 10 s). */
	ks->checked_at = 0;
	ks->own_memo.listed_at = 0;
	top_dirs_recheck(ks);
}

/* ---- pauses and holds ----------------------------------------------------------------------- */

int keyshare_look(struct keyshare *ks, const char *provider, struct keyshare_view *out)
{
	*out = (struct keyshare_view){ 0 };
	struct pdir *p = pdir_checked(ks, provider);
	if (!p)
		return -1;
	/* A host that reads ledgers, idle or not, finds a restarted host's new run every 10 s too:
	 * it leaves its reading of the earlier run there (earlier_keep), and takes in those of its
	 * own (side_take), without waiting for a budget check. A stat of ledger/ when unchanged. */
	int64_t now = mono_ms();
	if (ks->counts_ledgers && ks->ledger_fd >= 0 &&
	    (!ks->refreshed_at || now - ks->refreshed_at >= RECHECK_MS)) {
		ks->refreshed_at = now;
		ledger_refresh(ks);
	}
	struct stat st;
	if (fstatat(p->fd, "pause", &st, AT_SYMLINK_NOFOLLOW) == 0)
		out->paused_until = timespec_ms(&st.st_mtim);
	struct buf b;
	buf_init(&b, sizeof(out->hold_reason) - 1);
	if (spool_read_file(p->fd, "hold", sizeof(out->hold_reason) - 1, &b, &st) == SPOOL_READ_OK) {
		out->held = true;
		xsnprintf(out->hold_reason, sizeof(out->hold_reason), "%.*s", (int)b.len,
			  b.data ? b.data : "");
		char *nl = strchr(out->hold_reason, '\n');
		if (nl)
			*nl = '\0';
	}
	buf_release(&b);
	return 0;
}

int64_t keyshare_pause(struct keyshare *ks, const char *provider, int64_t until)
{
	struct pdir *p = pdir_checked(ks, provider);
	struct stat st;
	/* Never ends early for any host: this host's estimate of the server's clock, read from a
	 * whole-second mtime (sshfs), may be up to a second behind it; and whole seconds, rounded
	 * up, for a file system without finer. */
	until = (until + PAUSE_CLOCK_GRAIN_MS + 999) / 1000 * 1000;
	if (!p)
		return until;
	if (fstatat(p->fd, "pause", &st, AT_SYMLINK_NOFOLLOW) == 0 && timespec_ms(&st.st_mtim) >= until)
		return timespec_ms(&st.st_mtim);
	char text[160];
	xsnprintf(text, sizeof(text), "%s: a 429; no calls before the mtime of this file\n",
		  ks->sp->host_id);
	if (spool_write_at(ks->sp, p->fd, "pause", text, strlen(text), until, false) < 0)
		log_warn("cannot share the pause of provider '%s' with other hosts: %s", provider,
			 strerror(errno));
	return until;
}

void keyshare_hold(struct keyshare *ks, const char *provider, const char *reason)
{
	struct pdir *p = pdir_checked(ks, provider);
	char text[512];
	xsnprintf(text, sizeof(text), "%s (seen by %s)\n", reason, ks->sp->host_id);
	if (p && spool_write_at(ks->sp, p->fd, "hold", text, strlen(text), 0, true) < 0)
		log_warn("cannot share the hold of provider '%s' with other hosts: %s", provider,
			 strerror(errno));
}

void keyshare_unhold(struct keyshare *ks, const char *provider)
{
	struct pdir *p = pdir_checked(ks, provider);
	if (!p)
		return;
	if (unlinkat(p->fd, "hold", 0) == 0)
		fsync(p->fd);
	keyshare_probe_done(ks, provider);
}

bool keyshare_probe_claim(struct keyshare *ks, const char *provider, int64_t lease_ms)
{
	struct pdir *p = pdir_checked(ks, provider);
	if (!p)
		return true;   /* the spool cannot say: this host decides alone */
	if (p->probe_ours)
		return true;
	for (int tries = 0; tries < 3; tries++) {
		if (create_empty(p->fd, "probe", ks->sp->host_id) == 0) {
			p->probe_ours = true;
			return true;
		}
		int e = errno;
		struct stat st;
		if (fstatat(p->fd, "probe", &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT && (e == EEXIST || e == EPERM))
				continue;   /* its prober just finished */
			/* Not a race (sshfs says EPERM where others say EEXIST): a file error. The
			 * spool cannot say, so this host decides alone. */
			return true;
		}
		if (spool_server_now(ks->sp) - timespec_ms(&st.st_mtim) <= lease_ms)
			return false;
		unlinkat(p->fd, "probe", 0);   /* its prober died */
	}
	return false;
}

void keyshare_probe_done(struct keyshare *ks, const char *provider)
{
	struct pdir *p = pdir(ks, provider);
	if (p && p->probe_ours)
		unlinkat(p->fd, "probe", 0);
	if (p)
		p->probe_ours = false;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

struct keyshare *keyshare_new(struct spool *sp)
{
	struct keyshare *ks = xcalloc(1, sizeof(*ks));
	ks->sp = sp;
	ks->pid = (long)getpid();
	pthread_mutex_init(&ks->spent_lock, NULL);
	pthread_mutex_init(&ks->write_lock, NULL);
	ks->providers_fd = open_dir(sp->root_fd, "providers");
	if (ks->providers_fd < 0)
		log_warn("cannot open '%s/providers' (%s): limits, pauses and holds are not shared "
			 "with other hosts", sp->path, strerror(errno));
	if (ledger_open(ks) < 0)
		log_warn("cannot open '%s/ledger' (%s): budgets cannot be shared with other hosts; "
			 "calls to a provider under a budget wait while another host is live, and "
			 "count what this host spent only while none is (tried again every 10 s)",
			 sp->path, strerror(ks->ledger_errno));
	xsnprintf(ks->run, sizeof(ks->run), "%016" PRIx64, random64());
	ks->runs_held = json_array();
	ks->runs_taken = json_object();
	/* Without its own file, what its earlier runs spent is not known to this run: other hosts'
	 * readings of them are taken in (side_take). */
	if (ledger_take_own(ks) == OWN_NONE)
		ks->base_lost = true;
	ks->ledger_doubt = true;   /* a ledger/ never read: as a new one */
	ledger_own_ensure(ks);
	return ks;
}

void keyshare_recover(struct keyshare *ks)
{
	struct spool_entry *l, *calls;
	long n = ks->providers_fd < 0 ? -1 : spool_list_at(ks->providers_fd, false, false, &l);
	if (n < 0)
		return;
	for (long i = 0; i < n; i++) {
		struct pdir *p = pdir(ks, l[i].name);
		long n_calls = p ? spool_list_at(p->calls, false, false, &calls) : -1;
		if (n_calls < 0)
			continue;
		for (long j = 0; j < n_calls; j++) {
			char host[128];
			micros r;
			if (keyshare_parse_ticket(calls[j].name, host, sizeof(host), &r) == 0 &&
			    !strcmp(host, ks->sp->host_id))
				unlinkat(p->calls, calls[j].name, 0);
		}
		spool_entries_free(calls, n_calls);
		struct buf b;
		struct stat st;
		buf_init(&b, 128);
		if (spool_read_file(p->fd, "probe", 128, &b, &st) == SPOOL_READ_OK &&
		    b.len == strlen(ks->sp->host_id) && !memcmp(b.data, ks->sp->host_id, b.len))
			unlinkat(p->fd, "probe", 0);
		buf_release(&b);
	}
	spool_entries_free(l, n);
}

void keyshare_free(struct keyshare *ks)
{
	if (!ks)
		return;
	/* Their costs' last chance (releasing needs the directories); tickets still unwritten stay
	 * for the restart to remove. */
	ledger_write_try(ks);
	release_written(ks);
	for (size_t i = 0; i < ks->n_unwritten; i++) {
		free(ks->unwritten[i].ticket.provider);
		free(ks->unwritten[i].ticket.call);
		free(ks->unwritten[i].ticket.start);
	}
	free(ks->unwritten);
	for (size_t i = 0; i < ks->n_dirs; i++) {
		struct pdir *p = ks->dirs[i];
		if (p->probe_ours)
			unlinkat(p->fd, "probe", 0);
		int fds[] = { p->fd, p->calls, p->starts };
		for (int j = 0; j < 3; j++)
			if (fds[j] >= 0)
				close(fds[j]);
		free(p->name);
		free(p);
	}
	free(ks->dirs);
	for (size_t i = 0; i < ks->n_provider_names; i++)
		free(ks->provider_names[i]);
	free(ks->provider_names);
	for (size_t i = 0; i < ks->n_spent; i++)
		free(ks->spent[i].provider);
	free(ks->spent);
	for (size_t i = 0; i < ks->n_kept; i++) {
		free(ks->kept[i].name);
		json_decref(ks->kept[i].doc);
		json_decref(ks->kept[i].earlier);
	}
	free(ks->kept);
	for (size_t i = 0; i < ks->n_sides_taken; i++)
		free(ks->sides_taken[i].name);
	free(ks->sides_taken);
	json_decref(ks->runs_held);
	json_decref(ks->runs_taken);
	if (ks->providers_fd >= 0)
		close(ks->providers_fd);
	if (ks->ledger_fd >= 0)
		close(ks->ledger_fd);
	pthread_mutex_destroy(&ks->spent_lock);
	pthread_mutex_destroy(&ks->write_lock);
	free(ks);
}
