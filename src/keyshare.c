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

#include "dirtrust.h"
#include "hostlock.h"
#include "keyshare.h"
#include "log.h"
#include "spend.h"
#include "spool.h"
#include "util.h"
#include "banned.h"

#define LEDGER_MAX_BYTES (64u << 10)
#define LEDGER_FIGURE_MAX 1000000000000000LL   /* 1e15 micros: a figure beyond is not a ledger's */
#define MICROS_MAX LLONG_MAX
#define START_GRACE_MS 10000      /* starts older than window + margin + this are removed */
#define RECHECK_MS 10000          /* a provider's open directories checked against their names */
#define PAUSE_CLOCK_GRAIN_MS 1000 /* spool_server_now's error, from a whole-second mtime */
#define COPY_INFIX ".json.carried-"   /* HOST.RUN.json.carried-READER: a copy READER keeps */
/* Names read at most from a listing of ledger/MONTH/ (the live runs' files: a few per host) and
 * of its ended/ (a run's file per run that ended this month: thousands a day from a daemon that
 * crash-loops). A runaway or hostile directory past them is not read (each check would cost
 * O(names)): budgets wait instead, since what it holds is unknown (ledger_sum). */
#define LEDGER_MONTH_NAMES_MAX 4096
#define LEDGER_ENDED_NAMES_MAX 262144
#define OWN_SUFFIX_MAX 9999          /* HOST.RUN~N.json: a run's file past an obstacle at its name */

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
	bool untrusted_said;         /* one of its directories others may write, said */
	int64_t checked_at;          /* mono ms the handles were last found current; 0: check */
	struct memo calls_memo;      /* for a total budget: what its calls/ reserved then */
	micros calls_reserved;
	int64_t calls_oldest_beat;   /* file server ms: every ticket in calls/ was heartbeated
					since, as of the last look that stat'ed them (count_calls);
					0: not known. Kept apart from the lease, which a reload
					may shorten (may_hold_dead) */
};

/* A run of a host (other than this one): the largest figures read of it (figures_take), from
 * any file that holds them, and kept when those files go. */
struct run_seen {
	char *host, *run;            /* owned */
	json_t *figures;             /* owned: {"day", "prev_day", "providers": {NAME:
					{"day_micros", "month_micros", "prev_micros"}}}: prev, the
					day before its latest, for a reader whose day has not rolled */
	bool covered;                /* a file in the last listing holds all of it (runs_cover) */
	bool carry_said;             /* a carry back that failed, said once */
	int64_t carry_failed_at;     /* mono ms of the last carry back that failed; 0: none */
};

/* A file of ledger/MONTH/ (or an earlier release's in ledger/) as last read. */
struct kept_file {
	char *name, *host, *run, *reader;   /* owned; reader: a copy's carrier */
	bool copy;                   /* a copy carried back by another host, not the run's own file */
	enum where { IN_MONTH, IN_ENDED, IN_OLD } where;   /* ledger/MONTH/, its ended/, or ledger/
					itself (an earlier release's: old_scan) */
	json_t *doc;                 /* owned; NULL: it could not be read then */
	struct memo memo;
	bool listed;                 /* in the last listing */
	bool unreadable;             /* a run's own file whose last read failed: budgets wait */
	bool foreign;                /* not written by the daemon's user (file_foreign): it counts
					for nothing and is never waited for */
	bool junk_said;              /* a copy that counts for nothing, or a foreign file, said once */
};

/* An index of ks->files (by name and where) or ks->runs (by host and run): open addressing,
 * a slot holds a position + 1 (0: empty), at most half full. With thousands of ended runs (a
 * daemon that crash-loops leaves thousands a day) a lookup per file listed stays O(1). */
struct index {
	size_t *slot;
	size_t cap;                  /* a power of 2, or 0 */
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
	 * and guards ledger_fd's and write_fd's changes (the loop only reads ledger_fd without)
	 * and ledger_warned. Its
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
	bool write_failed;           /* the last write failed (spent_lock): kept tickets wait for a
					retry (keyshare_retry_unwritten) */
	/* Set (keyshare_set_writer): the loop never writes the ledger; it asks write_wanted(arg)
	 * for a helper's keyshare_write, once until a writer finds nothing left to write
	 * (write_queued, spent_lock). */
	void (*write_wanted)(void *arg);
	void *write_arg;
	bool write_queued;
	/* This run's file's name: HOST.RUN.json, or HOST.RUN~N.json once a directory of another
	 * user's blocked the one before (own_blocked). Changed by a writer (write_lock) under
	 * spent_lock; read under either. */
	char own_name[NAME_MAX + 1];
	int own_suffix;
	struct unwritten *unwritten; /* on the loop: tickets kept till their cost is written */
	size_t n_unwritten;
	int month_fd, ended_fd;      /* ledger/MONTH/ of month_open and its ended/, the loop's */
	long month_open;             /* 0: none yet */
	int write_fd;                /* ledger/MONTH/ of write_month, the writer's (write_lock) */
	long write_month;
	struct memo month_memo, ended_memo;   /* ledger/MONTH/, ended/, when last listed */
	bool lock_ours;              /* running/.host.HOST names this run: every other run of this
					host has ended (its files are moved into ended/) */
	struct kept_file *files;
	size_t n_files;
	struct run_seen *runs;       /* every other run read this month */
	size_t n_runs;
	struct index files_ix, runs_ix;
	bool old_unread;             /* an earlier release's ledger could not be read: again */
	/* ledger/ (or its month's directory) opened anew, or a run read before has lost its file
	 * while live: until every live host's run has its file there, budgets wait (ledger_doubts). */
	bool ledger_doubt;
	bool uncovered;              /* a run read before has no file that holds it: carry it back */
	bool crowded[2];             /* ledger/MONTH/ (IN_MONTH), its ended/ (IN_ENDED): more names
					than a listing reads, as of its last change: budgets wait */
	bool doubt_said;
	int ledger_errno;            /* why ledger/ could not be opened (ledger_fd < 0; write_lock) */
	int month_errno;             /* why ledger/MONTH/ could not be (month_fd < 0; the loop's) */
	bool month_untrusted;        /* ledger/MONTH/ or its ended/ others may write: budgets wait */
	enum { UNUSABLE_UNSAID, UNUSABLE_WAITS, UNUSABLE_ALONE } unusable_said;
	char doubt_about[NAME_MAX + 1];    /* what budgets wait for, as said */
	int64_t lease_ms;            /* the last acquire's: a host lock older than this is a left host's */
	struct memo own_memo;        /* this run's own file when last found whole */
	bool own_seen;               /* this run's file was there in this month's directory */
	int64_t checked_at;          /* mono ms providers/ and ledger/ were last found current */
	int64_t beat_at;             /* mono ms of the last keyshare_beat; 0: none yet */
	int64_t refreshed_at;        /* mono ms of the last rescan's ledger_refresh; 0: none */
	bool counts_ledgers;         /* it has checked a budget: it reads the other hosts' ledgers */
	struct memo providers_memo;  /* for a total budget: the names in providers/ then */
	char **provider_names;
	size_t n_provider_names;
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

/* fd, or -1 (EPERM, fd closed) when someone else than the daemon's user owns or may write the
 * directory: what is in it is believed as the hosts' own (spool_dir_trusted). */
static int trusted_or_refused(const struct spool *sp, int fd)
{
	if (fd >= 0 && !spool_dir_trusted(sp, fd)) {
		close(fd);
		errno = EPERM;
		return -1;
	}
	return fd;
}

/* ledger/ or providers/ in the root, made if need be: one a client made after an operator
 * removed it is moved aside (spool_shared_dir_make); refused (EPERM) when someone else than the
 * daemon's user owns or may write it. */
static int open_shared_dir(struct spool *sp, const char *name)
{
	if (spool_shared_dir_make(sp, name) < 0)
		return -1;
	return trusted_or_refused(sp, openat(sp->root_fd, name,
					     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

/* open_dir for a directory below ledger/ or providers/ (shown: its path in the spool, for the
 * log), refused (EPERM) as open_shared_dir's are. A spool of the old group recipe (umask 007)
 * left ledger/MONTH/ and providers/NAME/ writable by the group: a client could crowd them,
 * remove a host's spend or forge one. Said once while *said. */
static int open_below_shared(const struct keyshare *ks, int at, const char *name,
			     const char *shown, bool *said)
{
	int fd = open_dir(at, name);
	struct stat st;
	if (fd < 0 || spool_dir_trusted(ks->sp, fd))
		return fd;
	if (!*said && fstat(fd, &st) == 0) {
		uint32_t euid = (uint32_t)geteuid();
		char why[320];
		dirtrust_explain(why, sizeof(why),
				 dirtrust_judge(DIRTRUST_TRUSTED, (uint32_t)st.st_uid,
						(uint32_t)st.st_mode, euid, ks->sp->own_uid),
				 (uint32_t)st.st_uid, (uint32_t)st.st_mode, euid);
		log_warn("'%s/%s' %s (chmod -R go-w '%s/ledger' '%s/providers'; spool-layout.md "
			 "§12): what is there is not believed, so no call under a budget or a "
			 "limit shared there starts until it is the daemon's alone", ks->sp->path,
			 shown, why, ks->sp->path, ks->sp->path);
	}
	*said = true;
	close(fd);
	errno = EPERM;
	return -1;
}

/* Opens ledger/ (making it if need be) into ledger_fd; why it cannot goes to ledger_errno. */
static int ledger_open(struct keyshare *ks)
{
	ks->ledger_fd = open_shared_dir(ks->sp, "ledger");
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

/* dir_current, and still the daemon's alone (its mode or owner may change while it is held):
 * for the directories below ledger/ and providers/, opened again (and judged) when not. */
static bool dir_current_trusted(const struct spool *sp, int at, const char *name, int fd)
{
	return dir_current(at, name, fd) && spool_dir_trusted(sp, fd);
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
static void pdir_recheck(const struct spool *sp, struct pdir *p, int providers_fd)
{
	int64_t now = mono_ms();
	if (p->fd < 0 || (p->checked_at && now - p->checked_at < RECHECK_MS))
		return;
	p->checked_at = now;
	if (!dir_current_trusted(sp, providers_fd, p->name, p->fd))
		pdir_close(p);
	if (p->calls >= 0 && !dir_current_trusted(sp, p->fd, "calls", p->calls))
		close_dir(&p->calls);
	if (p->starts >= 0 && !dir_current_trusted(sp, p->fd, "starts", p->starts))
		close_dir(&p->starts);
	if (p->calls < 0)
		p->calls_memo.listed_at = p->calls_oldest_beat = 0;
}

/* "YYYY-MM": the directory in ledger/ of a month (as keyshare_month numbers it). */
static void month_dir_name(long month, char *name, size_t size)
{
	xsnprintf(name, size, "%04ld-%02ld", month / 12, month % 12 + 1);
}

static bool month_current(struct keyshare *ks);
static void old_scan(struct keyshare *ks);
static void ledger_own_ensure(struct keyshare *ks);

/* providers/, ledger/ and ledger/MONTH/ (with its ended/) checked against their names (a
 * provider's handles go with providers/), opened again by name (also when they could not be
 * opened before); and the spool root against its path, which the spool says
 * (spool_root_recheck: never followed). A ledger/ without this run's file (new, or its file
 * removed) gets it at once, even with nothing spent: other hosts count what this run spent from
 * that file only, and wait for it. */
static void top_dirs_recheck(struct keyshare *ks)
{
	int64_t now = mono_ms();
	if (ks->checked_at && now - ks->checked_at < RECHECK_MS)
		return;
	ks->checked_at = now;
	spool_root_recheck(ks->sp);
	if (ks->providers_fd < 0 || !dir_current(ks->sp->root_fd, "providers", ks->providers_fd)) {
		close_dir(&ks->providers_fd);
		ks->providers_fd = open_shared_dir(ks->sp, "providers");
		ks->providers_memo.listed_at = 0;
		for (size_t i = 0; i < ks->n_dirs; i++)
			pdir_close(ks->dirs[i]);
	}
	char month[16];
	month_dir_name(ks->month_open, month, sizeof(month));
	bool top = ks->ledger_fd < 0 || !dir_current(ks->sp->root_fd, "ledger", ks->ledger_fd);
	if (top || (ks->month_fd >= 0 &&
		    (!dir_current_trusted(ks->sp, ks->ledger_fd, month, ks->month_fd) ||
		     !dir_current_trusted(ks->sp, ks->month_fd, "ended", ks->ended_fd)))) {
		/* A helper may be writing through it: the loop does not wait, it looks again next
		 * time (the helper's write fails in the old directory, and is made again). */
		if (pthread_mutex_trylock(&ks->write_lock) != 0) {
			ks->checked_at = 0;
			return;
		}
		if (top) {
			close_dir(&ks->ledger_fd);
			ledger_open(ks);
		}
		close_dir(&ks->month_fd);
		close_dir(&ks->ended_fd);
		close_dir(&ks->write_fd);
		pthread_mutex_unlock(&ks->write_lock);
		month_current(ks);   /* first: a new month forgets what was read before */
		if (top)
			old_scan(ks);
		ks->month_memo.listed_at = ks->ended_memo.listed_at = ks->own_memo.listed_at = 0;
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
		pdir_recheck(ks->sp, p, ks->providers_fd);
		char shown[NAME_MAX + 32];
		xsnprintf(shown, sizeof(shown), "providers/%s", p->name);
		if (p->fd < 0 && ks->providers_fd >= 0)
			p->fd = open_below_shared(ks, ks->providers_fd, p->name, shown,
						  &p->untrusted_said);
		xsnprintf(shown, sizeof(shown), "providers/%s/calls", p->name);
		if (p->fd >= 0 && p->calls < 0)
			p->calls = open_below_shared(ks, p->fd, "calls", shown, &p->untrusted_said);
		xsnprintf(shown, sizeof(shown), "providers/%s/starts", p->name);
		if (p->fd >= 0 && p->starts < 0)
			p->starts = open_below_shared(ks, p->fd, "starts", shown, &p->untrusted_said);
		if (p->fd >= 0 && p->calls >= 0 && p->starts >= 0) {
			if (!p->checked_at)
				p->checked_at = mono_ms();
			if (p->untrusted_said)
				log_info("'%s/providers/%s' is the daemon's alone again: its limits "
					 "are kept there again", ks->sp->path, p->name);
			p->untrusted_said = false;
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

/* ---- the ledger: what each run of each host spent ------------------------------------------ */

/* This run's own file in ledger/MONTH/: "HOST.RUN.json" (or "HOST.RUN~N.json", own_blocked). */
static void own_ledger_name(struct keyshare *ks, char *name, size_t size)
{
	pthread_mutex_lock(&ks->spent_lock);
	xsnprintf(name, size, "%s", ks->own_name);
	pthread_mutex_unlock(&ks->spent_lock);
}

static struct spent *own_spent(struct keyshare *ks, const char *provider)
{
	for (size_t i = 0; i < ks->n_spent; i++)
		if (!strcmp(ks->spent[i].provider, provider))
			return &ks->spent[i];
	ks->spent = xrealloc(ks->spent, (ks->n_spent + 1) * sizeof(*ks->spent));
	ks->spent[ks->n_spent] = (struct spent){ .provider = xstrdup(provider) };
	return &ks->spent[ks->n_spent++];
}

/* A new day or month starts at zero (this run's figures; a new month's file is another). */
static void roll(struct keyshare *ks, long day, long month)
{
	for (size_t i = 0; i < ks->n_spent; i++) {
		if (day != ks->day)
			ks->spent[i].day = 0;
		if (month != ks->month)
			ks->spent[i].month = 0;
	}
	ks->day = day;
	ks->month = month;
}

/* a + b, at most MICROS_MAX (each is at least 0): a figure read from a file, or a ticket's
 * reserve in its name, never wraps a sum negative. */
static micros micros_add(micros a, micros b)
{
	micros sum;
	return __builtin_add_overflow(a, b, &sum) || sum > MICROS_MAX ? MICROS_MAX : sum;
}

static json_int_t figure(json_t *provider, const char *key)
{
	return json_integer_value(json_object_get(provider, key));
}

/* Sets f's figure key to v if v is larger. */
static void figure_raise(json_t *f, const char *key, json_int_t v)
{
	if (v > figure(f, key))
		json_object_set_new(f, key, json_integer(v));
}

/* Takes the larger of each of doc's figures into *figures (made if NULL): a run's figures only
 * grow, so the largest reading of it is its latest, whatever order the readings come in. The
 * day's figures of a later day replace those of an earlier one, which are kept as the previous
 * day's: at midnight a reader whose day has not rolled yet still counts them (figures_add). */
static void figures_take(json_t **figures, json_t *doc)
{
	if (!*figures)
		*figures = json_pack("{s:I, s:I, s:o}", "day", (json_int_t)0, "prev_day",
				     (json_int_t)0, "providers", json_object());
	json_int_t day = json_integer_value(json_object_get(doc, "day"));
	json_int_t had = json_integer_value(json_object_get(*figures, "day"));
	json_t *to = json_object_get(*figures, "providers"), *v, *f;
	const char *key;
	if (day > had) {
		json_object_foreach(to, key, f) {
			json_object_set_new(f, "prev_micros", json_integer(figure(f, "day_micros")));
			json_object_set_new(f, "day_micros", json_integer(0));
		}
		json_object_set_new(*figures, "prev_day", json_integer(had));
		json_object_set_new(*figures, "day", json_integer(day));
		had = day;
	}
	json_int_t prev = json_integer_value(json_object_get(*figures, "prev_day"));
	json_object_foreach(json_object_get(doc, "providers"), key, v) {
		f = json_object_get(to, key);
		if (!f)
			json_object_set_new(to, key, f = json_pack("{s:I, s:I, s:I}", "day_micros",
								   (json_int_t)0, "month_micros",
								   (json_int_t)0, "prev_micros",
								   (json_int_t)0));
		if (day == had)
			figure_raise(f, "day_micros", figure(v, "day_micros"));
		else if (day == prev)
			figure_raise(f, "prev_micros", figure(v, "day_micros"));
		figure_raise(f, "month_micros", figure(v, "month_micros"));
	}
}

/* Whether doc says at least every figure of figures: nothing of them is missing from it. */
static bool figures_held(json_t *doc, json_t *figures)
{
	json_int_t day = json_integer_value(json_object_get(doc, "day"));
	json_int_t want = json_integer_value(json_object_get(figures, "day"));
	json_t *provs = json_object_get(doc, "providers"), *f;
	const char *key;
	json_object_foreach(json_object_get(figures, "providers"), key, f) {
		json_t *v = json_object_get(provs, key);
		if (figure(v, "month_micros") < figure(f, "month_micros") ||
		    (day < want && figure(f, "day_micros") > 0) ||
		    (day == want && figure(v, "day_micros") < figure(f, "day_micros")))
			return false;
	}
	return true;
}

/* Adds a run's figures for provider (NULL: every provider) to *d (those of day: its latest
 * day's, or the day's before) and *m. */
static void figures_add(json_t *figures, const char *provider, long day, micros *d, micros *m)
{
	json_t *v;
	const char *key;
	bool same_day = json_integer_value(json_object_get(figures, "day")) == day;
	bool prev_day = !same_day && json_integer_value(json_object_get(figures, "prev_day")) == day;
	json_object_foreach(json_object_get(figures, "providers"), key, v) {
		if (provider && strcmp(key, provider))
			continue;
		if (same_day)
			*d = micros_add(*d, figure(v, "day_micros"));
		else if (prev_day)
			*d = micros_add(*d, figure(v, "prev_micros"));
		*m = micros_add(*m, figure(v, "month_micros"));
	}
}

/* Whether a figure read is one a ledger can hold: a sum of costs, at least 0 and at most
 * LEDGER_FIGURE_MAX (a billion dollars, in micros), so that no sum of them overflows. */
static bool figure_sane(json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) >= 0 &&
	       json_integer_value(v) <= LEDGER_FIGURE_MAX;
}

/* Whether doc has a ledger's shape (ledger_text): a figure that is not a number would be
 * counted as 0, a run that is not a string never told apart, a figure out of bounds
 * (figure_sane) would wrap a sum. */
static bool ledger_shaped(json_t *doc)
{
	json_t *provs = json_object_get(doc, "providers"), *v;
	json_t *run = json_object_get(doc, "run");
	const char *key;
	if (!json_is_integer(json_object_get(doc, "day")) ||
	    !json_is_integer(json_object_get(doc, "month")) || !json_is_object(provs) ||
	    (run && !json_is_string(run)))
		return false;
	json_object_foreach(provs, key, v)
		if (!figure_sane(json_object_get(v, "day_micros")) ||
		    !figure_sane(json_object_get(v, "month_micros")))
			return false;
	return true;
}

/* A ledger file, or NULL and why not (*why, static); st: as it was read (st_mode 0: not
 * opened); gone (may be NULL): no file has that name now. */
static json_t *read_ledger(int dirfd, const char *name, const char **why, struct stat *st,
			   bool *gone)
{
	struct buf b;
	buf_init(&b, LEDGER_MAX_BYTES);
	json_t *doc = NULL;
	memset(st, 0, sizeof(*st));
	enum spool_read r = spool_read_file(dirfd, name, LEDGER_MAX_BYTES, &b, st);
	*why = spool_read_reason(r);
	if (gone)
		*gone = r == SPOOL_READ_GONE;
	if (r == SPOOL_READ_NOT_REGULAR && !st->st_mode &&
	    fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) < 0)
		memset(st, 0, sizeof(*st));   /* a symlink: its owner, for file_foreign */
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

/* A ledger's text. Fails only for want of memory: its strings are UTF-8 (a host id, provider
 * names, or what was read as JSON). */
static char *ledger_dump(const json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (!text)
		out_of_memory("writing a ledger");
	return text;
}

/* This run's figures as its file says them (spent_lock held). Owned. */
static json_t *ledger_doc(struct keyshare *ks)
{
	json_t *provs = json_object();
	for (size_t i = 0; i < ks->n_spent; i++)
		json_object_set_new(provs, ks->spent[i].provider,
				    json_pack("{s:I, s:I}", "day_micros", (json_int_t)ks->spent[i].day,
					      "month_micros", (json_int_t)ks->spent[i].month));
	return json_pack("{s:s, s:s, s:i, s:i, s:o}", "host", ks->sp->host_id, "run", ks->sp->run,
			 "day", (int)ks->day, "month", (int)ks->month, "providers", provs);
}

/* ledger/MONTH/ for the writer (write_lock held): opened again when the month changes or a
 * write failed (ledger/ or the month's directory removed, perhaps made again). */
static int write_dir(struct keyshare *ks, long month)
{
	char name[16];
	if (ks->write_fd >= 0 && ks->write_month == month)
		return ks->write_fd;
	close_dir(&ks->write_fd);
	if (ks->ledger_fd < 0) {
		errno = ks->ledger_errno;
		return -1;
	}
	month_dir_name(month, name, sizeof(name));
	/* Not into one others may write (month_current says so): other hosts do not read it. */
	ks->write_fd = trusted_or_refused(ks->sp, open_dir(ks->ledger_fd, name));
	ks->write_month = month;
	return ks->write_fd;
}

/* A directory (a rename cannot replace one, unlike any other file) at this run's file's name
 * name in dirfd (ledger/MONTH/, month), where anyone who may write ledger/ may put one: the
 * run gets past it, and says so. One of the daemon's user (an operator's slip) is moved aside
 * as NAME.moved-aside.MS; another user's is left, and the run's file is named HOST.RUN~N.json
 * from now on (kept in name): the same run to every reader (ledger_name_parse), counted once
 * whatever its file's name. True if the write may be tried again. Off the loop (write_lock). */
static bool own_blocked(struct keyshare *ks, int dirfd, long month, char *name, size_t size)
{
	struct stat st;
	char dir[16];
	if (dirfd < 0 || fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return false;
	month_dir_name(month, dir, sizeof(dir));
	if (spool_written_by_daemon(ks->sp, &st)) {
		char aside[NAME_MAX + 1];
		xsnprintf(aside, sizeof(aside), "%s.moved-aside.%" PRId64, name, wall_ms());
		if (renameat(dirfd, name, dirfd, aside) == 0) {
			log_warn("'%s/ledger/%s/%s' is a directory, not this run's ledger: moved aside as "
				 "'%s', the ledger is written in its place", ks->sp->path, dir, name, aside);
			return true;
		}
	}
	pthread_mutex_lock(&ks->spent_lock);
	bool next = ks->own_suffix < OWN_SUFFIX_MAX;
	if (next) {
		ks->own_suffix++;
		xsnprintf(ks->own_name, sizeof(ks->own_name), "%s.%s~%d.json", ks->sp->host_id,
			  ks->sp->run, ks->own_suffix);
	}
	pthread_mutex_unlock(&ks->spent_lock);
	if (next)
		log_warn("'%s/ledger/%s/%s' is a directory %s put there, not this run's ledger: the "
			 "run's ledger is written as '%s.%s~%d.json' from now on (the same run: every "
			 "host counts it once)", ks->sp->path, dir, name,
			 spool_written_by_daemon(ks->sp, &st) ? "this daemon's user" : "another user",
			 ks->sp->host_id, ks->sp->run, ks->own_suffix);
	if (next)
		own_ledger_name(ks, name, size);
	return next;
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
	int obstacles = 0;
	pthread_mutex_lock(&ks->spent_lock);
	while (ok && ks->written_gen < ks->spent_gen) {
		unsigned long gen = ks->spent_gen;
		long month = ks->month;
		json_t *doc = ledger_doc(ks);
		char *text = ledger_dump(doc);
		json_decref(doc);
		/* Durable: a spend forgotten in a crash would let the budget be spent twice. One with
		 * nothing spent (a start-up's) lost is only missing, and written again. */
		bool durable = ks->n_spent > 0;
		pthread_mutex_unlock(&ks->spent_lock);
		stop_point("ledger:writing");
		int fd = write_dir(ks, month);
		ok = fd >= 0 && spool_write_at(ks->sp, fd, name, text, strlen(text), 0, durable) == 0;
		int err = errno;
		free(text);
		/* A directory at its name (a rename cannot replace one): got past, and tried again
		 * at once; a few times at most in one write. */
		if (!ok && (err == EISDIR || err == ENOTEMPTY || err == EEXIST) && obstacles++ < 3 &&
		    own_blocked(ks, fd, month, name, sizeof(name))) {
			pthread_mutex_lock(&ks->spent_lock);
			ok = true;
			continue;
		}
		if (!ok)
			close_dir(&ks->write_fd);   /* by name next time: perhaps it was removed */
		char dir[16];
		month_dir_name(month, dir, sizeof(dir));
		if (!ok && !ks->ledger_warned)
			log_warn("cannot write '%s/ledger/%s/%s' (%s): other hosts do not see what "
				 "this one spends; the tickets of calls not in it stay until it is "
				 "written", ks->sp->path, dir, name, strerror(err));
		else if (ok && ks->ledger_warned)
			log_info("'%s/ledger/%s/%s' is written again", ks->sp->path, dir, name);
		ks->ledger_warned = !ok;
		pthread_mutex_lock(&ks->spent_lock);
		if (ok)
			ks->written_gen = gen;
		ks->write_failed = !ok;
	}
	/* Nothing left, or a failure (tried again at a heartbeat): a spend from now on asks for a
	 * write of its own. */
	ks->write_queued = false;
	pthread_mutex_unlock(&ks->write_lock);
	pthread_mutex_unlock(&ks->spent_lock);
}

/* On the loop: writes the figures if unwritten, unless a helper is writing them, which then
 * writes these too (it checks again under spent_lock before it lets write_lock go). */
static void ledger_write_try(struct keyshare *ks)
{
	pthread_mutex_lock(&ks->spent_lock);
	bool mine = ks->written_gen < ks->spent_gen && pthread_mutex_trylock(&ks->write_lock) == 0;
	pthread_mutex_unlock(&ks->spent_lock);
	if (mine)
		ledger_write_locked(ks);
}

/* On the loop: the figures written soon, by a helper (keyshare_set_writer), unless one is
 * asked for already: it writes these too (it looks again under spent_lock before it is
 * through). Without a writer set (start-up, the exit), written here. */
static void ledger_write_soon(struct keyshare *ks)
{
	if (!ks->write_wanted) {
		ledger_write_try(ks);
		return;
	}
	pthread_mutex_lock(&ks->spent_lock);
	bool ask = ks->written_gen < ks->spent_gen && !ks->write_queued;
	ks->write_queued = ks->write_queued || ask;
	pthread_mutex_unlock(&ks->spent_lock);
	if (ask)
		ks->write_wanted(ks->write_arg);
}

void keyshare_set_writer(struct keyshare *ks, void (*wanted)(void *arg), void *arg)
{
	ks->write_wanted = wanted;
	ks->write_arg = arg;
	pthread_mutex_lock(&ks->spent_lock);
	ks->write_queued = false;   /* a writer asked before is not waited for */
	pthread_mutex_unlock(&ks->spent_lock);
}

void keyshare_write(struct keyshare *ks)
{
	pthread_mutex_lock(&ks->write_lock);
	ledger_write_locked(ks);
}

void keyshare_today(struct keyshare *ks, long *day, long *month)
{
	int64_t now = spool_server_now(ks->sp);
	*day = spend_day(now);
	*month = keyshare_month(now);
}

static void file_free(struct kept_file *f)
{
	free(f->name);
	free(f->reader);
	free(f->host);
	free(f->run);
	json_decref(f->doc);
}

/* What was read of another month goes (at a new month: its runs spent nothing in this one). */
static void runs_forget(struct keyshare *ks)
{
	for (size_t i = 0; i < ks->n_files; i++)
		file_free(&ks->files[i]);
	ks->n_files = 0;
	for (size_t i = 0; i < ks->n_runs; i++) {
		free(ks->runs[i].host);
		free(ks->runs[i].run);
		json_decref(ks->runs[i].figures);
	}
	ks->n_runs = 0;
	free(ks->files_ix.slot);
	free(ks->runs_ix.slot);
	ks->files_ix = ks->runs_ix = (struct index){ 0 };
}

/* ledger/MONTH/ of this month, opened (made if need be) for the loop's reading; at a new month
 * what was read of the last one goes. False if it cannot be opened (ledger_errno). */
static bool month_current(struct keyshare *ks)
{
	long day, month;
	char name[16];
	keyshare_today(ks, &day, &month);
	if (ks->month_fd >= 0 && ks->month_open == month)
		return true;
	if (ks->ledger_fd < 0)
		return false;
	close_dir(&ks->month_fd);
	close_dir(&ks->ended_fd);
	month_dir_name(month, name, sizeof(name));
	char shown[32];
	bool said = ks->month_untrusted;
	xsnprintf(shown, sizeof(shown), "ledger/%s", name);
	ks->month_fd = open_below_shared(ks, ks->ledger_fd, name, shown, &said);
	xsnprintf(shown, sizeof(shown), "ledger/%s/ended", name);
	ks->ended_fd = ks->month_fd >= 0 ?
		       open_below_shared(ks, ks->month_fd, "ended", shown, &said) : -1;
	if (ks->ended_fd < 0) {
		ks->month_errno = errno;
		ks->month_untrusted = errno == EPERM && said;
		close_dir(&ks->month_fd);
		return false;
	}
	if (ks->month_untrusted)
		log_info("'%s/ledger/%s' is the daemon's alone again: budgets count it again",
			 ks->sp->path, name);
	ks->month_untrusted = false;
	if (ks->month_open != month) {
		runs_forget(ks);
		ks->own_seen = false;
	}
	ks->month_open = month;
	ks->month_memo.listed_at = ks->ended_memo.listed_at = ks->own_memo.listed_at = 0;
	ks->crowded[IN_MONTH] = ks->crowded[IN_ENDED] = false;   /* read anew */
	return true;
}

/* FNV-1a of s, on from h, and of a separator after it. */
static uint64_t hash_str(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211u;
	return (h ^ 0xff) * 1099511628211u;
}

static uint64_t file_hash(const char *name, enum where where)
{
	return hash_str(14695981039346656037u ^ (uint64_t)where, name);
}

static uint64_t run_hash(const char *host, const char *run)
{
	return hash_str(hash_str(14695981039346656037u, host), run);
}

static void index_put(struct index *ix, uint64_t h, size_t pos)
{
	size_t mask = ix->cap - 1, i = (size_t)h & mask;
	while (ix->slot[i])
		i = (i + 1) & mask;
	ix->slot[i] = pos + 1;
}

/* ix emptied, with room for n and one more at most half full. */
static void index_make(struct index *ix, size_t n)
{
	size_t cap = 16;
	while (cap < 2 * (n + 1))
		cap *= 2;
	free(ix->slot);
	*ix = (struct index){ .slot = xcalloc(cap, sizeof(size_t)), .cap = cap };
}

/* What ks->files and ks->runs have in common: items kept in an array, found by key through an
 * index (table_find). */
struct table_kind {
	size_t size;                                     /* of an item */
	uint64_t (*hash)(const void *item);
	bool (*is)(const void *item, const void *key);   /* whether item is key's */
	void (*init)(void *item, const void *key);       /* a new (zeroed) item: key's, copied */
};

/* ix emptied and made again for the n items. */
static void index_rebuild(struct index *ix, const void *items, size_t n, const struct table_kind *k)
{
	index_make(ix, n);
	for (size_t i = 0; i < n; i++)
		index_put(ix, k->hash((const char *)items + i * k->size), i);
}

/* The item of *items (*n of them, indexed by ix) that is key's (its hash h); if none, a new one
 * appended when make (else NULL). */
static void *table_find(struct index *ix, void **items, size_t *n, const struct table_kind *k,
			const void *key, uint64_t h, bool make)
{
	for (size_t i = (size_t)h & (ix->cap - 1); ix->cap && ix->slot[i]; i = (i + 1) & (ix->cap - 1)) {
		void *item = (char *)*items + (ix->slot[i] - 1) * k->size;
		if (k->is(item, key))
			return item;
	}
	if (!make)
		return NULL;
	*items = xrealloc(*items, (*n + 1) * k->size);
	void *item = (char *)*items + *n * k->size;
	memset(item, 0, k->size);
	k->init(item, key);
	if (2 * (*n + 1) > ix->cap)
		index_rebuild(ix, *items, ++*n, k);
	else
		index_put(ix, h, (*n)++);
	return item;
}

struct run_key { const char *host, *run; };
struct file_key { const char *name; enum where where; };

static uint64_t run_item_hash(const void *item)
{
	const struct run_seen *r = item;
	return run_hash(r->host, r->run);
}

static bool run_is(const void *item, const void *key)
{
	const struct run_seen *r = item;
	const struct run_key *k = key;
	return !strcmp(r->host, k->host) && !strcmp(r->run, k->run);
}

static void run_init(void *item, const void *key)
{
	struct run_seen *r = item;
	const struct run_key *k = key;
	r->host = xstrdup(k->host);
	r->run = xstrdup(k->run);
}

static uint64_t file_item_hash(const void *item)
{
	const struct kept_file *f = item;
	return file_hash(f->name, f->where);
}

static bool file_is(const void *item, const void *key)
{
	const struct kept_file *f = item;
	const struct file_key *k = key;
	return f->where == k->where && !strcmp(f->name, k->name);
}

static void file_init(void *item, const void *key)
{
	struct kept_file *f = item;
	const struct file_key *k = key;
	f->name = xstrdup(k->name);
	f->where = k->where;
}

static const struct table_kind run_kind = { sizeof(struct run_seen), run_item_hash, run_is, run_init };
static const struct table_kind file_kind = { sizeof(struct kept_file), file_item_hash, file_is,
					     file_init };

/* ks->files indexed again (after a compaction). */
static void files_reindex(struct keyshare *ks)
{
	index_rebuild(&ks->files_ix, ks->files, ks->n_files, &file_kind);
}

/* The run host, run as read so far (made if new and make). */
static struct run_seen *run_of(struct keyshare *ks, const char *host, const char *run, bool make)
{
	struct run_key key = { host, run };
	return table_find(&ks->runs_ix, (void **)&ks->runs, &ks->n_runs, &run_kind, &key,
			  run_hash(host, run), make);
}

/* The file name of where as read so far (made if new). */
static struct kept_file *file_of(struct keyshare *ks, const char *name, enum where where)
{
	struct file_key key = { name, where };
	return table_find(&ks->files_ix, (void **)&ks->files, &ks->n_files, &file_kind, &key,
			  file_hash(name, where), true);
}

/* Whether run is a run id: 16 hex digits (spool.c's), or "legacy" (an earlier release's ledger
 * without one, carried back). Any other name is none: a name made up by anyone is not read. */
static bool run_id_ok(const char *run)
{
	return !strcmp(run, "legacy") ||
	       (strlen(run) == 16 && strspn(run, "0123456789abcdef") == 16);
}

/* What a name in ledger/MONTH/ is: a run's own file "HOST.RUN.json", or the copy of one that
 * host READER carried back "HOST.RUN.json.carried-READER" (RUN: run_id_ok). host, run and
 * reader of NAME_MAX + 1. */
enum ledger_name { NAME_OTHER, NAME_RUN, NAME_COPY };

static enum ledger_name ledger_name_parse(const char *name, char *host, char *run, char *reader)
{
	size_t len = strlen(name);
	const char *copy = strstr(name, COPY_INFIX), *dot;
	size_t base = copy ? (size_t)(copy - name) : len - 5;
	if (len >= NAME_MAX + 1 || (!copy && (len <= 5 || strcmp(name + len - 5, ".json"))) ||
	    (copy && !copy[strlen(COPY_INFIX)]))
		return NAME_OTHER;
	xsnprintf(host, NAME_MAX + 1, "%.*s", (int)base, name);
	dot = strrchr(host, '.');
	char *tilde = dot ? strchr(dot, '~') : NULL;
	long suffix;
	/* HOST.RUN~N.json: run RUN's file past an obstacle at its name (own_blocked). */
	if (tilde && (copy || tilde[1] == '0' || parse_long(tilde + 1, 1, OWN_SUFFIX_MAX, &suffix) < 0))
		return NAME_OTHER;
	if (tilde)
		*tilde = '\0';
	if (!dot || dot == host || !run_id_ok(dot + 1))
		return NAME_OTHER;
	xsnprintf(run, NAME_MAX + 1, "%s", dot + 1);
	host[dot - host] = '\0';
	xsnprintf(reader, NAME_MAX + 1, "%s", copy ? copy + strlen(COPY_INFIX) : "");
	return copy ? NAME_COPY : NAME_RUN;
}

/* Whether a file there (st as read; st_mode 0: gone) was written by another user than the
 * daemon's (spool_written_by_daemon): anyone who may write ledger/ may put any file at any name,
 * so such a file counts for nothing, and is never waited for: neither an overspend nor a stall
 * can be planted. */
static bool file_foreign(struct keyshare *ks, const struct stat *st)
{
	return st->st_mode && !spool_written_by_daemon(ks->sp, st);
}

/* The month (keyshare_month's numbering) of day (spend_day's: days since 1970-01-01 of the
 * local date): civil-from-days, Howard Hinnant. */
static long day_month(long day)
{
	long z = day + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	long doe = z - era * 146097;
	long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	long m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
	return y * 12 + m - 1;
}

/* Whether doc's day is one a ledger of month may say: of that month, and not after tomorrow
 * (a host's clock a little ahead). A later day would zero every day's figure read of that run
 * (figures_take). */
static bool day_sane(struct keyshare *ks, json_t *doc, long month)
{
	long today, this_month;
	keyshare_today(ks, &today, &this_month);
	json_int_t day = json_integer_value(json_object_get(doc, "day"));
	return day <= today + 1 && day_month((long)day) == month;
}

/* Why doc, read from f, is not what its name says (host, run, this month, a day of it; for a
 * copy, its carrier's), or NULL. */
static const char *file_mismatch(struct keyshare *ks, const struct kept_file *f, json_t *doc)
{
	const char *host = json_string_value(json_object_get(doc, "host"));
	const char *run = json_string_value(json_object_get(doc, "run"));
	const char *by = json_string_value(json_object_get(doc, "carried_by"));
	if (!host || !run || strcmp(host, f->host) || strcmp(run, f->run) ||
	    json_integer_value(json_object_get(doc, "month")) != ks->month_open ||
	    (f->copy && (!by || strcmp(by, f->reader))))
		return f->copy ? "not a copy of the run its name says" : "not the ledger its name says";
	if (!day_sane(ks, doc, ks->month_open))
		return "of a day not of its month, or after tomorrow";
	return NULL;
}

/* Reads a file of ledger/MONTH/ again; its figures go into its run's (figures_take). A run's own
 * file that cannot be read makes budgets wait (ledger_sum); a copy that is not a daemon's, or a
 * file of another user (file_foreign), counts for nothing. Each said once, as is the first read
 * that works after. True if the file is gone since listed (moved into ended/, or away): it is
 * then as not listed, and its directory is to be listed again. */
static bool file_reread(struct keyshare *ks, struct kept_file *f, const struct memo *now)
{
	const char *why;
	struct stat st;
	bool gone;
	json_decref(f->doc);
	f->doc = read_ledger(f->where == IN_ENDED ? ks->ended_fd : ks->month_fd, f->name, &why, &st,
			     &gone);
	if (gone) {
		f->listed = false;
		f->memo.listed_at = 0;
		return true;
	}
	/* A directory is no ledger (none is written so): nothing, never waited for. */
	bool dir = S_ISDIR(st.st_mode);
	f->foreign = dir || file_foreign(ks, &st);
	const char *wrong = dir ? "a directory, not a ledger" :
			    f->foreign ? "not written by this daemon's user" :
			    f->doc ? file_mismatch(ks, f, f->doc) : NULL;
	if (wrong) {
		json_decref(f->doc);
		f->doc = NULL;
		why = wrong;
	}
	f->memo = *now;
	char month[24];
	month_dir_name(ks->month_open, month, sizeof(month));
	if (f->where == IN_ENDED)
		xsnprintf(month + strlen(month), sizeof(month) - strlen(month), "/ended");
	if (f->copy || f->foreign) {
		if (!f->doc && !st.st_mode)
			f->memo.listed_at = 0;   /* not opened: looked at again */
		else if (!f->doc && !f->junk_said)
			log_warn("'%s/ledger/%s/%s' is %s: it counts for nothing", ks->sp->path, month,
				 f->name, why);
		f->junk_said = !f->doc && st.st_mode;
		f->unreadable = false;
	} else {
		if (!f->doc) {
			f->memo.listed_at = 0;
			if (!f->unreadable)
				log_warn("cannot read '%s/ledger/%s/%s' (%s): what that run of host '%s' "
					 "spent is not known, so no call to a provider under a budget starts "
					 "until it can be read%s", ks->sp->path, month, f->name, why, f->host,
					 strcmp(f->host, ks->sp->host_id) ? "" :
					 " (it is this host's, of an earlier run: never written over; if it "
					 "stays so, an operator moves it aside, and what it says is lost)");
		} else if (f->unreadable) {
			log_info("'%s/ledger/%s/%s' can be read again: budgets count it", ks->sp->path,
				 month, f->name);
		}
		f->unreadable = !f->doc;
	}
	if (f->doc)
		figures_take(&run_of(ks, f->host, f->run, true)->figures, f->doc);
	return false;
}

/* doc's string key, "" if none. */
static const char *json_str(json_t *doc, const char *key)
{
	const char *s = json_string_value(json_object_get(doc, key));
	return s ? s : "";
}

/* Whether doc (an earlier release's HOST.json) holds what run spent: its own, or one it took in. */
static bool old_holds(json_t *doc, const char *run)
{
	size_t i;
	json_t *v;
	if (!strcmp(json_str(doc, "run"), run))
		return true;
	json_array_foreach(json_object_get(doc, "runs_held"), i, v)
		if (json_is_string(v) && !strcmp(json_string_value(v), run))
			return true;
	return false;
}

/* The ledgers an earlier release left in ledger/ itself: HOST.json, and its readings of a host's
 * earlier runs HOST.json.carried-READER.RUN (a daemon's, of that host, not held by HOST.json).
 * Each is read as a run of its own (one without "run": "legacy"), counted once, like any other
 * (and carried back if ledger/ is cleared), and never written again. Read when ledger/ is opened;
 * again at each try while one cannot be read. */
static void old_scan(struct keyshare *ks)
{
	struct spool_entry *l;
	long day, month;
	keyshare_today(ks, &day, &month);
	ks->old_unread = false;
	for (size_t i = 0; i < ks->n_files; i++)
		if (ks->files[i].where == IN_OLD)
			ks->files[i].listed = false;
	long n = ks->ledger_fd >= 0 ? spool_list_at(ks->ledger_fd, false, false, &l) : -1;
	if (n < 0) {
		ks->old_unread = ks->ledger_fd >= 0;
		return;
	}
	for (int sides = 0; sides < 2; sides++) {
		for (long i = 0; i < n; i++) {
			size_t len = strlen(l[i].name);
			const char *side = strstr(l[i].name, COPY_INFIX);
			bool own = !side && len > 5 && !strcmp(l[i].name + len - 5, ".json");
			if (sides ? !side : !own)
				continue;
			const char *why;
			struct stat st;
			json_t *doc = read_ledger(ks->ledger_fd, l[i].name, &why, &st, NULL);
			char *host = xasprintf("%.*s", (int)(side ? (size_t)(side - l[i].name) : len - 5),
					       l[i].name);
			char *own_name = xasprintf("%s.json", host);
			const char *run = json_string_value(json_object_get(doc, "run"));
			struct kept_file *mine = NULL;
			for (size_t j = 0; j < ks->n_files && side; j++)
				if (ks->files[j].where == IN_OLD && ks->files[j].listed && !ks->files[j].copy &&
				    !strcmp(ks->files[j].name, own_name))
					mine = &ks->files[j];
			bool foreign = file_foreign(ks, &st);
			if (S_ISDIR(st.st_mode)) {   /* no ledger (ledger/MONTH/ are directories) */
				json_decref(doc);
				free(own_name);
				free(host);
				continue;
			}
			bool counts = doc && !foreign &&
				      json_integer_value(json_object_get(doc, "month")) == month &&
				      day_sane(ks, doc, month);
			if (side)   /* a reading of an earlier run: one held by its host's file is in it */
				counts = counts && run && spool_written_by_daemon(ks->sp, &st) &&
					 !strcmp(json_str(doc, "host"), host) &&
					 !(mine && mine->doc && old_holds(mine->doc, run));
			if (foreign && !side) {
				struct kept_file *f = file_of(ks, l[i].name, IN_OLD);
				if (!f->junk_said)
					log_warn("'%s/ledger/%s' is not written by this daemon's user: it "
						 "counts for nothing", ks->sp->path, l[i].name);
				f->junk_said = true;
				if (!f->host) {
					f->host = xstrdup(host);
					f->run = xstrdup("legacy");
				}
				f->foreign = true;
				f->unreadable = false;
			} else if (counts || (!doc && !side && st.st_mode)) {
				struct kept_file *f = file_of(ks, l[i].name, IN_OLD);
				free(f->host);
				free(f->run);
				f->host = xstrdup(host);
				f->run = xstrdup(run ? run : "legacy");
				f->copy = side != NULL;
				f->listed = true;
				json_decref(f->doc);
				f->doc = json_incref(doc);
				if (!doc && !f->unreadable)
					log_warn("cannot read '%s/ledger/%s', an earlier release's ledger "
						 "(%s): no call to a provider under a budget starts until it "
						 "can be read, or is moved aside", ks->sp->path, l[i].name, why);
				f->unreadable = !doc;
				ks->old_unread = ks->old_unread || !doc;
				if (doc)
					figures_take(&run_of(ks, host, f->run, true)->figures, doc);
			}
			json_decref(doc);
			free(own_name);
			free(host);
		}
	}
	spool_entries_free(l, n);
}

/* Whether each run read so far is still held by a file there: its own, an earlier release's, or
 * a copy that says all this host read of it. One that is not must be carried back, or, if its
 * run is live, written again by its host (ledger_doubts). */
static void runs_cover(struct keyshare *ks)
{
	for (size_t i = 0; i < ks->n_runs; i++)
		ks->runs[i].covered = false;
	for (size_t j = 0; j < ks->n_files; j++) {
		struct kept_file *f = &ks->files[j];
		struct run_seen *r = f->listed ? run_of(ks, f->host, f->run, false) : NULL;
		if (r && !r->covered)
			r->covered = (!f->copy && f->where != IN_OLD && !f->foreign) ||
				     (f->doc && figures_held(f->doc, r->figures));
	}
	for (size_t i = 0; i < ks->n_runs; i++)
		ks->uncovered = ks->uncovered || !ks->runs[i].covered;
}

/* Lists ledger/MONTH/ (where IN_MONTH) or its ended/ again if it changed since last listed
 * (memo), and reads again the files there that changed; true if it listed. A run's file is only
 * ever replaced, renamed into place, so both judged by keyshare_listing_stands on the file
 * server's word give what reading every file now would (spool-layout.md §17). A file that could
 * not be read is never kept: it, and its directory, are read again at the next refresh. This
 * host's earlier runs' files are moved into ended/ while its lock names this run. */
static bool dir_read(struct keyshare *ks, enum where where, int fd, struct spool_entry *l,
		     long n);

/* A directory of the ledger found crowded, or no more (dir_refresh): said as it changes. */
static void crowded_say(struct keyshare *ks, enum where where, bool crowded, long most)
{
	char month[24];
	month_dir_name(ks->month_open, month, sizeof(month));
	if (where == IN_ENDED)
		xsnprintf(month + strlen(month), sizeof(month) - strlen(month), "/ended");
	if (crowded && !ks->crowded[where])
		log_warn("'%s/ledger/%s' holds more than %ld names (a runaway or hostile directory?): "
			 "they are not read, so what was spent is not known and no call to a provider "
			 "under a budget starts until it holds fewer (it is read again when it changes)",
			 ks->sp->path, month, most);
	else if (!crowded && ks->crowded[where])
		log_info("'%s/ledger/%s' holds no more than %ld names again: budgets count it again",
			 ks->sp->path, month, most);
	ks->crowded[where] = crowded;
}

static bool dir_refresh(struct keyshare *ks, enum where where)
{
	int fd = where == IN_ENDED ? ks->ended_fd : ks->month_fd;
	struct memo *memo = where == IN_ENDED ? &ks->ended_memo : &ks->month_memo;
	struct memo next = where == IN_ENDED ? memo_look(ks, fd, "") : top_look(ks, &ks->month_fd);
	struct spool_entry *l;
	if (where == IN_MONTH)
		fd = ks->month_fd;   /* top_look may have opened it anew */
	if (!next.listed_at || memo_stands(memo, &next))
		return false;   /* unchanged; or not to be seen now, and what was kept is better */
	long most = where == IN_ENDED ? LEDGER_ENDED_NAMES_MAX : LEDGER_MONTH_NAMES_MAX;
	for (int pass = 0;; pass++) {
		long n = spool_list_at_most(fd, false, false, most, &l);
		if (n < 0 && errno == E2BIG) {
			crowded_say(ks, where, true, most);
			*memo = next;   /* read again once it changed */
			return pass > 0;
		}
		if (n < 0) {
			memo->listed_at = 0;
			return pass > 0;
		}
		crowded_say(ks, where, false, most);
		*memo = next;
		bool vanished = dir_read(ks, where, fd, l, n);
		spool_entries_free(l, n);
		if (!vanished)
			return true;
		/* A file gone since the listing (moved into ended/ by its run at its exit, or
		 * another's): not "unreadable", the listing is old; listed again at once, once. */
		next = memo_look(ks, fd, "");
		if (pass) {
			memo->listed_at = 0;
			return true;
		}
	}
}

/* Reads the files of a listing l of ledger/MONTH/ or its ended/ (dir_refresh); true if one was
 * gone since. */
static bool dir_read(struct keyshare *ks, enum where where, int fd, struct spool_entry *l, long n)
{
	struct memo *memo = where == IN_ENDED ? &ks->ended_memo : &ks->month_memo;
	bool vanished = false;
	for (size_t i = 0; i < ks->n_files; i++)
		ks->files[i].listed = ks->files[i].listed && ks->files[i].where != where;
	char host[NAME_MAX + 1], run[NAME_MAX + 1], reader[NAME_MAX + 1];
	for (long i = 0; i < n; i++) {
		enum ledger_name kind = ledger_name_parse(l[i].name, host, run, reader);
		if (kind == NAME_OTHER)
			continue;   /* host and run not set */
		bool mine = !strcmp(host, ks->sp->host_id);
		if (mine && !strcmp(run, ks->sp->run))
			continue;   /* this run's: it knows its figures */
		if (mine && kind == NAME_RUN && where == IN_MONTH && ks->lock_ours &&
		    renameat(fd, l[i].name, ks->ended_fd, l[i].name) == 0)
			continue;   /* an earlier run of this host: ended, found in ended/ next */
		struct kept_file *f = file_of(ks, l[i].name, where);
		if (!f->host) {
			f->host = xstrdup(host);
			f->run = xstrdup(run);
			f->reader = xstrdup(reader);
			f->copy = kind == NAME_COPY;
		}
		f->listed = true;
		/* A run's file in ended/ is final: its run writes no more, and one moved there
		 * again (over it) is another inode. Seen as read, with the same inode: kept, with
		 * no look (thousands of ended runs, each a statx at every listing). */
		if (where == IN_ENDED && kind == NAME_RUN && f->memo.listed_at &&
		    (f->doc || f->foreign) && f->memo.seen.ino == l[i].id.ino)
			continue;
		struct memo now = memo_look(ks, fd, f->name);
		if (!memo_stands(&f->memo, &now) && file_reread(ks, f, &now))
			vanished = true;
		else if (f->unreadable)
			memo->listed_at = 0;   /* not kept as read: again next time */
	}
	return vanished;
}

/* A day's figure of provider prov of doc (a ledger, or a copy, which keeps the day before its
 * latest too, prev_micros): what it says was spent on day. */
static json_int_t day_figure(json_t *doc, json_t *prov, long day)
{
	if (json_integer_value(json_object_get(doc, "day")) == day)
		return figure(prov, "day_micros");
	if (json_integer_value(json_object_get(doc, "prev_day")) == day)
		return figure(prov, "prev_micros");
	return 0;
}

bool keyshare_copy_moot(json_t *copy, json_t *file, long today)
{
	json_t *provs = json_object_get(file, "providers"), *c;
	const char *key;
	if (!copy || !file)
		return false;
	json_object_foreach(json_object_get(copy, "providers"), key, c) {
		json_t *f = json_object_get(provs, key);
		if (figure(f, "month_micros") < figure(c, "month_micros"))
			return false;
		for (long day = today - 1; day <= today; day++)
			if (day_figure(file, f, day) < day_figure(copy, c, day))
				return false;
	}
	return true;
}

/* The file of ks->files named name in where, if there is one. */
static struct kept_file *file_find(struct keyshare *ks, const char *name, enum where where)
{
	struct file_key key = { name, where };
	return table_find(&ks->files_ix, (void **)&ks->files, &ks->n_files, &file_kind, &key,
			  file_hash(name, where), false);
}

/* This host's copies in ended/ that can no longer matter (keyshare_copy_moot: the run's own
 * file, as last listed and read whole, holds all they say that any reader may still count)
 * are removed, so that copies do not pile up till their month ends. Only its own: it still
 * holds its reading of the run, and carries it back again should the run's file go. */
static void copies_drop(struct keyshare *ks)
{
	long today, month;
	keyshare_today(ks, &today, &month);
	for (size_t i = 0; i < ks->n_files; i++) {
		struct kept_file *f = &ks->files[i], *own = NULL;
		if (!f->copy || !f->listed || f->where != IN_ENDED || !f->doc ||
		    strcmp(f->reader, ks->sp->host_id))
			continue;
		char *name = xasprintf("%s.%s.json", f->host, f->run);
		for (int where = IN_MONTH; where <= IN_ENDED && !own; where++) {
			own = file_find(ks, name, (enum where)where);
			own = own && own->listed && own->doc && !own->foreign ? own : NULL;
		}
		free(name);
		if (!own || !keyshare_copy_moot(f->doc, own->doc, today) ||
		    unlinkat(ks->ended_fd, f->name, 0) < 0)
			continue;
		log_info("'%s/ledger/.../ended/%s' is removed: the run's own file, '%s', holds all it "
			 "says", ks->sp->path, f->name, own->name);
		f->listed = false;
		ks->ended_memo.listed_at = 0;   /* changed: listed again next time */
	}
}

/* Brings what was read of the other runs up to date: ledger/MONTH/, then its ended/ (a file
 * moved between them is in one at every moment: in the second if not in the first). What was
 * read of a run stays counted when its files go. */
static void ledger_refresh(struct keyshare *ks)
{
	if (!month_current(ks))
		return;
	if (ks->old_unread)
		old_scan(ks);
	bool listed = dir_refresh(ks, IN_MONTH);
	if (ks->ended_fd >= 0 && dir_refresh(ks, IN_ENDED))
		listed = true;
	if (!listed)
		return;
	size_t kept = 0;
	for (size_t i = 0; i < ks->n_files; i++) {
		struct kept_file *f = &ks->files[i];
		if (f->listed || f->where == IN_OLD) {
			ks->files[kept++] = *f;
			continue;
		}
		if (f->unreadable)
			log_info("'%s/ledger/.../%s' is gone: budgets no longer wait for it to be read",
				 ks->sp->path, f->name);
		file_free(f);
	}
	if (kept < ks->n_files) {
		ks->n_files = kept;
		files_reindex(ks);
	}
	runs_cover(ks);
	copies_drop(ks);
}

static void free_hosts(char **hosts, long n)
{
	for (long i = 0; hosts && i < n; i++)
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
	long n = hostlock_live_hosts(ks->sp, lease_ms, &live, NULL);
	int err = errno, why = ks->ledger_fd < 0 ? ks->ledger_errno : ks->month_errno;
	xsnprintf(ks->doubt_about, sizeof(ks->doubt_about), "%s", n > 0 ? live[0] : "running");
	free_hosts(live, n);
	if (n == 0) {
		if (ks->unusable_said != UNUSABLE_ALONE)
			log_warn("cannot open '%s/ledger' (%s) and no other host is live: calls to a "
				 "provider under a budget count what this host spent only, which is "
				 "all that was spent while it runs alone", ks->sp->path,
				 strerror(why));
		ks->unusable_said = UNUSABLE_ALONE;
		return NULL;
	}
	if (ks->unusable_said != UNUSABLE_WAITS) {
		if (n < 0)
			log_warn("cannot open '%s/ledger' (%s), nor read '%s/running' (%s) to know "
				 "whether another host is live: no call to a provider under a budget "
				 "starts until one of them can", ks->sp->path,
				 strerror(why), ks->sp->path, strerror(err));
		else
			log_warn("cannot open '%s/ledger' (%s) and host '%s' is live: what it spent "
				 "is unknown, so no call to a provider under a budget starts until "
				 "'%s/ledger' can be opened or no other host is live", ks->sp->path,
				 strerror(why), ks->doubt_about, ks->sp->path);
	}
	ks->unusable_said = UNUSABLE_WAITS;
	return "ledger";
}

/* Puts what this host read of a run that has ended, whose files are gone, back into
 * ledger/MONTH/ as HOST.RUN.json.carried-READER (READER: this host; no other writes that name),
 * so that a host that never read that run counts it too. 0, or -1. */
static int run_carry(struct keyshare *ks, struct run_seen *r)
{
	char month[16];
	month_dir_name(ks->month_open, month, sizeof(month));
	json_t *doc = json_deep_copy(r->figures);
	json_object_set_new(doc, "host", json_string(r->host));
	json_object_set_new(doc, "run", json_string(r->run));
	json_object_set_new(doc, "month", json_integer(ks->month_open));
	json_object_set_new(doc, "carried_by", json_string(ks->sp->host_id));
	char *name = xasprintf("%s.%s" COPY_INFIX "%s", r->host, r->run, ks->sp->host_id);
	char *text = ledger_dump(doc);
	int rc = spool_write_at(ks->sp, ks->ended_fd, name, text, strlen(text), 0, true);
	if (rc == 0)
		log_info("'%s/ledger/%s' has no file of run '%s' of host '%s', which has ended: what "
			 "this host read of it is carried back, as 'ended/%s'", ks->sp->path, month,
			 r->run, r->host, name);
	else if (!r->carry_said)
		log_warn("cannot carry run '%s' of host '%s' back into '%s/ledger/%s/ended' (%s): what "
			 "it spent counts on this host only (tried again every 10 s)", r->run, r->host,
			 ks->sp->path, month, strerror(errno));
	r->carry_said = rc < 0;
	r->carry_failed_at = rc < 0 ? mono_ms() : 0;
	ks->ended_memo.listed_at = 0;   /* to find it there */
	r->covered = rc == 0;
	free(text);
	free(name);
	json_decref(doc);
	return rc;
}

/* Whether a run-file (not a copy) of host, of run if run is not "", was in the last listing
 * and could be read: what its host wrote itself. */
static bool run_file_there(struct keyshare *ks, const char *host, const char *run)
{
	for (size_t j = 0; j < ks->n_files; j++) {
		struct kept_file *f = &ks->files[j];
		if (f->listed && !f->copy && f->doc && !strcmp(f->host, host) &&
		    (!*run || !strcmp(f->run, run)))
			return true;
	}
	return false;
}

/* After ledger/ (or its month's directory) was opened anew, or a run read before has lost its
 * files: what budgets wait for — a live host's run whose file is not (readably) there yet — or
 * NULL once there is none. Runs read before whose files are gone are carried back once they have
 * ended (run_carry); a live one is waited for: its host writes its file as soon as it finds it
 * gone (within 10 s). A host that left (a lock older than a lease, or none) is never waited for. */
static const char *ledger_doubts(struct keyshare *ks, int64_t lease_ms)
{
	if (ks->ledger_fd < 0 || ks->month_fd < 0 || ks->ended_fd < 0)
		return ledger_unusable(ks, lease_ms);
	if (!ks->ledger_doubt && !ks->uncovered)
		return NULL;
	char **live = NULL, **runs = NULL;
	long n = hostlock_live_hosts(ks->sp, lease_ms, &live, &runs);
	int err = errno;
	const char *missing = n < 0 ? "running" : NULL;
	if (n >= 0)
		ks->uncovered = false;
	for (size_t j = 0; j < ks->n_runs && n >= 0; j++) {
		struct run_seen *r = &ks->runs[j];
		bool live_run = false;
		for (long i = 0; i < n && !live_run; i++)
			live_run = !strcmp(live[i], r->host) && !strcmp(runs[i], r->run);
		if (r->covered)
			continue;
		if (live_run)
			ks->ledger_doubt = true;   /* its host writes it again */
		else if ((r->carry_failed_at && mono_ms() - r->carry_failed_at < RECHECK_MS) ||
			 run_carry(ks, r) < 0)
			ks->uncovered = true;   /* a failed carry: again at a rescan 10 s on, not at
						   every budget check */
	}
	for (long i = 0; i < n && !missing && ks->ledger_doubt; i++) {
		if (!run_file_there(ks, live[i], runs[i])) {
			xsnprintf(ks->doubt_about, sizeof(ks->doubt_about), *runs[i] ? "%s.%s.json" : "%s%s.json",
				  live[i], runs[i]);
			missing = ks->doubt_about;
		}
	}
	free_hosts(live, n);
	free_hosts(runs, n);
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

/* Whether run of host has ended by the host locks live (hostlock_live_hosts: hosts[0..n), the
 * run each names): its host's lock is gone, or a lease old (a crash), or names another run (a
 * restart). A lock that names none (an earlier release's) holds any run of its host. */
static bool run_ended(const char *host, const char *run, char **hosts, char **runs, long n)
{
	for (long i = 0; i < n; i++)
		if (!strcmp(hosts[i], host) && (!*runs[i] || !strcmp(runs[i], run)))
			return false;
	return true;
}

/* Every 10 s (keyshare_look): the files in ledger/MONTH/ of runs of other hosts that have
 * ended, crashed ones whose host never came back among them (a run that ends cleanly moves its
 * own, and a host's next run those of its earlier ones), go into ended/ by this host, so the
 * month's directory, listed whenever any live run writes, keeps the live runs' files only.
 * Only a file read whole (its figures counted here): the move is a rename, the same file
 * and figures in ended/, read there by every host (a file gone from ledger/MONTH/ between a
 * host's listing and its read is looked for again). Which hosts are live is hostlock's decision,
 * the one recovery.c's reclaims take. A run judged ended that only stalled writes its file in
 * ledger/MONTH/ again when it comes back; every host counts the larger. */
static void ledger_sweep_ended(struct keyshare *ks)
{
	bool any = false;
	for (size_t i = 0; i < ks->n_files && !any; i++) {
		struct kept_file *f = &ks->files[i];
		any = f->where == IN_MONTH && f->listed && !f->copy && f->doc && !f->foreign &&
		      strcmp(f->host, ks->sp->host_id);
	}
	if (!any || !ks->lease_ms || ks->month_fd < 0 || ks->ended_fd < 0)
		return;   /* nothing to move: no look at running/ */
	char **hosts = NULL, **runs = NULL, month[16];
	long n = hostlock_live_hosts(ks->sp, ks->lease_ms, &hosts, &runs);
	int moved = 0;
	month_dir_name(ks->month_open, month, sizeof(month));
	for (size_t i = 0; i < ks->n_files && n >= 0; i++) {
		struct kept_file *f = &ks->files[i];
		if (f->where != IN_MONTH || !f->listed || f->copy || !f->doc || f->foreign ||
		    !strcmp(f->host, ks->sp->host_id) || !run_ended(f->host, f->run, hosts, runs, n) ||
		    renameat(ks->month_fd, f->name, ks->ended_fd, f->name) < 0)
			continue;
		log_info("'%s/ledger/%s/%s' is of run '%s' of host '%s', which has ended (its host lock "
			 "gone, a lease old, or naming another run): moved into ended/, where it counts "
			 "as before", ks->sp->path, month, f->name, f->run, f->host);
		moved++;
	}
	free_hosts(hosts, n);
	free_hosts(runs, n);
	if (moved) {   /* read again where they are now */
		ks->month_memo.listed_at = ks->ended_memo.listed_at = 0;
		ledger_refresh(ks);
	}
}

/* This run's file in ledger/MONTH/, written if it is not there (at start-up, in a new or
 * cleared ledger/, at a new month), even with nothing spent: the hosts that read ledger/ wait
 * for the file of every live host's run (ledger_doubts); its being gone means others' may be
 * too. Written again, too, if the file there says less than this run spent (not its own write:
 * junk, or an operator's). The file is read only when it changed since it was last found whole;
 * the ended runs read before are carried back first, so a host that finds this one's file finds
 * them too. */
static void ledger_own_ensure(struct keyshare *ks)
{
	char name[NAME_MAX + 1];
	own_ledger_name(ks, name, sizeof(name));
	if (!month_current(ks))
		return;
	struct memo now = memo_look(ks, ks->month_fd, name);
	if (now.listed_at) {
		if (memo_stands(&ks->own_memo, &now))
			return;
		const char *why;
		struct stat st;
		json_t *doc = read_ledger(ks->month_fd, name, &why, &st, NULL);
		pthread_mutex_lock(&ks->spent_lock);
		json_t *mine = ledger_doc(ks);
		bool due = ks->written_gen < ks->spent_gen;   /* a write of it all comes anyway */
		bool whole = doc && !file_foreign(ks, &st) &&
			     json_integer_value(json_object_get(doc, "month")) == ks->month &&
			     figures_held(doc, mine);
		if (!whole && !due)
			ks->spent_gen++;
		pthread_mutex_unlock(&ks->spent_lock);
		json_decref(mine);
		json_decref(doc);
		ks->own_seen = true;
		if (whole) {
			ks->own_memo = now;
			return;
		}
		if (!due)
			log_warn("'%s/ledger/.../%s' says less than this run spent (%s): written again",
				 ks->sp->path, name, why ? why : "smaller figures");
	} else if (errno != ENOENT) {
		return;
	} else {
		long day, month;
		keyshare_today(ks, &day, &month);
		if (ks->own_seen) {   /* removed: the other runs' files perhaps with it */
			ks->ledger_doubt = true;
			ks->month_memo.listed_at = 0;
		}
		ks->own_seen = true;
		if (ks->counts_ledgers && ks->lease_ms) {
			ledger_refresh(ks);
			ledger_doubts(ks, ks->lease_ms);
		}
		pthread_mutex_lock(&ks->spent_lock);
		roll(ks, day > ks->day ? day : ks->day, month > ks->month ? month : ks->month);
		ks->spent_gen++;
		pthread_mutex_unlock(&ks->spent_lock);
	}
	ks->own_memo.listed_at = 0;
	ledger_write_soon(ks);
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
	ledger_write_soon(ks);
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
	if (!ks->write_wanted && !keyshare_written(ks, gen))
		ledger_write_try(ks);
	if (!t->provider || keyshare_written(ks, gen)) {
		keyshare_release(ks, t);
		return true;
	}
	ks->unwritten = xrealloc(ks->unwritten, (ks->n_unwritten + 1) * sizeof(*ks->unwritten));
	ks->unwritten[ks->n_unwritten++] = (struct unwritten){ .ticket = *t, .gen = gen };
	*t = (struct keyshare_ticket){ 0 };   /* stolen */
	/* Kept for a write under way (a helper's: released when it is through), or after a failed
	 * one (retried at a heartbeat). */
	pthread_mutex_lock(&ks->spent_lock);
	bool failed = ks->write_failed;
	pthread_mutex_unlock(&ks->spent_lock);
	return !failed;
}

void keyshare_write_done(struct keyshare *ks)
{
	release_written(ks);
}

void keyshare_retry_unwritten(struct keyshare *ks)
{
	if (!ks->n_unwritten)
		return;
	release_written(ks);
	if (ks->write_wanted) {
		ledger_write_soon(ks);   /* its done releases them (keyshare_write_done) */
	} else {
		ledger_write_try(ks);
		release_written(ks);
	}
	for (size_t i = 0; i < ks->n_unwritten; i++)
		keyshare_heartbeat(ks, &ks->unwritten[i].ticket);
}

/* What every run of every host spent today and this month: on provider (d, m) and on all (td,
 * tm): this run's figures, and for each other run the largest reading of it (files, copies,
 * and what was read of files gone since). Returns why a run's spend is unknown (*which: a
 * ledger that cannot be read, or a live host's run not in a new ledger/ yet), or NULL. */
static const char *ledger_sum(struct keyshare *ks, const char *provider, long day, long month,
			      micros *d, micros *m, micros *td, micros *tm, const char **which)
{
	*d = *m = *td = *tm = 0;
	ks->counts_ledgers = true;
	pthread_mutex_lock(&ks->spent_lock);
	/* Only forward: the server's clock as re-probed may step back a little (sshfs); a step back
	 * over midnight would zero this run's day figures, and rewrite its file smaller. */
	roll(ks, day > ks->day ? day : ks->day, month > ks->month ? month : ks->month);
	for (size_t i = 0; i < ks->n_spent; i++) {
		if (!strcmp(ks->spent[i].provider, provider)) {
			*d = micros_add(*d, ks->spent[i].day);
			*m = micros_add(*m, ks->spent[i].month);
		}
		*td = micros_add(*td, ks->spent[i].day);
		*tm = micros_add(*tm, ks->spent[i].month);
	}
	pthread_mutex_unlock(&ks->spent_lock);
	if (ks->ledger_fd >= 0)
		ledger_refresh(ks);
	for (size_t i = 0; i < ks->n_runs && ks->month_open == month; i++) {
		figures_add(ks->runs[i].figures, provider, day, d, m);
		figures_add(ks->runs[i].figures, NULL, day, td, tm);
	}
	*which = "a ledger directory others may write";
	if (ks->month_untrusted)
		return "ledger/MONTH";
	*which = "a ledger directory with too many names";
	if (ks->crowded[IN_MONTH] || ks->crowded[IN_ENDED])
		return ks->crowded[IN_MONTH] ? "ledger/MONTH" : "ledger/MONTH/ended";
	*which = "an unreadable ledger";
	for (size_t i = 0; i < ks->n_files; i++)
		if (ks->files[i].listed && ks->files[i].unreadable)
			return ks->files[i].name;
	*which = ks->ledger_fd < 0 || ks->month_fd < 0 ?
		 "a live host's spend, with no ledger/ to share it" :
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
		*reserved = micros_add(*reserved, r);
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
			sum = micros_add(sum, r);
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
	micros d, m, td, tm, all = reserved;
	const char *which;
	/* The other providers' calls in flight before the ledgers: a call that ends between the
	 * two looks is then in one of them (its cost is written before its ticket goes), never in
	 * neither (spool-layout.md §17). */
	if (l->total_daily || l->total_monthly)
		all = reserved_everywhere(ks, p, reserved);
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
		checks[2] = (struct check){ l->total_daily, td, all, "total daily" };
		checks[3] = (struct check){ l->total_monthly, tm, all, "total monthly" };
	}
	for (int i = 0; i < 4; i++) {
		if (checks[i].budget &&
		    micros_add(checks[i].spent, checks[i].reserved) > checks[i].budget) {
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
	 * its run ended and, its file gone, carried an older reading of it back, which they count,
	 * waiting for nothing more, until this run writes its own file again (ledger_own_ensure):
	 * now, not at its next look at ledger/ (within 10 s). */
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
	/* A host that reads ledgers, idle or not, finds every 10 s too that the files of runs it
	 * read are gone, and carries back those of runs that have ended (ledger_doubts), without
	 * waiting for a budget check. A stat of ledger/MONTH/ when unchanged. */
	int64_t now = mono_ms();
	if (ks->counts_ledgers && ks->ledger_fd >= 0 &&
	    (!ks->refreshed_at || now - ks->refreshed_at >= RECHECK_MS)) {
		ks->refreshed_at = now;
		ledger_refresh(ks);
		ledger_sweep_ended(ks);
		if (ks->uncovered && ks->lease_ms)
			ledger_doubts(ks, ks->lease_ms);
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
	xsnprintf(ks->own_name, sizeof(ks->own_name), "%s.%s.json", sp->host_id, sp->run);
	pthread_mutex_init(&ks->spent_lock, NULL);
	pthread_mutex_init(&ks->write_lock, NULL);
	ks->providers_fd = open_shared_dir(sp, "providers");
	if (ks->providers_fd < 0)
		log_warn("cannot open '%s/providers' (%s): limits, pauses and holds are not shared "
			 "with other hosts", sp->path, strerror(errno));
	if (ledger_open(ks) < 0)
		log_warn("cannot open '%s/ledger' (%s): budgets cannot be shared with other hosts; "
			 "calls to a provider under a budget wait while another host is live, and "
			 "count what this host spent only while none is (tried again every 10 s)",
			 sp->path, strerror(ks->ledger_errno));
	ks->month_fd = ks->ended_fd = ks->write_fd = -1;
	ks->lock_ours = hostlock_names_run(sp);
	month_current(ks);   /* first: a month's first opening forgets what was read before */
	old_scan(ks);
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
	/* This run ends: its file goes into ended/, out of the listing every budget check reads
	 * when ledger/MONTH/ changed. Only while the host lock names this run: a run of this host
	 * that still writes has none of its own. */
	char own[NAME_MAX + 1];
	own_ledger_name(ks, own, sizeof(own));
	if (ks->lock_ours && ks->month_fd >= 0 && ks->ended_fd >= 0)
		renameat(ks->month_fd, own, ks->ended_fd, own);
	runs_forget(ks);   /* and the indexes */
	free(ks->files);
	free(ks->runs);
	close_dir(&ks->ended_fd);
	close_dir(&ks->month_fd);
	close_dir(&ks->write_fd);
	if (ks->providers_fd >= 0)
		close(ks->providers_fd);
	if (ks->ledger_fd >= 0)
		close(ks->ledger_fd);
	pthread_mutex_destroy(&ks->spent_lock);
	pthread_mutex_destroy(&ks->write_lock);
	free(ks);
}
