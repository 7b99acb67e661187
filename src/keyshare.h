/* keyshare.h - one API key, many hosts: a provider's limits kept by every daemon on the spool,
 * through files in providers/NAME/ and ledger/ (spool-layout.md §17).
 *
 *   providers/NAME/calls/HOST~PID-SEQ~RESERVE   a call in flight (lease: mtime, heartbeated);
 *                                               RESERVE: what it may cost, in micro-units
 *   providers/NAME/starts/T~HOST~PID-SEQ        a call started at T (file server ms): the rate
 *   providers/NAME/pause                        a 429 pause, until the file's mtime
 *   providers/NAME/hold                         the provider is held (the file says why)
 *   providers/NAME/probe                        the host probing the hold (lease: mtime)
 *   ledger/MONTH/HOST.RUN.json                  what run RUN of HOST spent, today and in MONTH
 *                                               (HOST.RUN~N.json past a directory at that name)
 *   ledger/MONTH/ended/HOST.RUN.json            the same once the run has ended (moved by it at
 *                                               its exit, or by the host's next run)
 *   ledger/MONTH/ended/HOST.RUN.json.carried-READER   READER's copy of an ended run whose
 *                                               files went (a cleared ledger/)
 *
 * The gate (keyshare_acquire) is optimistic and never trusts a lock: a host first writes its
 * ticket (and its start), then lists what is there, and withdraws if it counts more than the
 * limit. Whoever wrote last sees everyone before it, so the limits hold however hosts race;
 * two hosts racing for the last place may both withdraw and look again a moment later.
 * Only create, rename and unlink decide anything, so this works on NFS and sshfs (no flock,
 * no O_EXCL over a live file). File times are judged by the file server's clock; sshfs keeps
 * whole seconds, which the rate's window allows for (KEYSHARE_CLOCK_MARGIN_MS).
 *
 * A total budget counts every provider's calls: another provider's calls/ is listed again only
 * when its directory changed (keyshare_listing_stands), so a quiet provider costs one stat.
 * Likewise ledger/MONTH/ is listed again only when it changed, and a run's file read again only
 * when its file did. Those stats ask the file server (AT_STATX_FORCE_SYNC), never a cache.
 * Each run (new at every start, named in the host lock) writes only its own file, whose
 * figures only grow; every host counts, per run, the largest figure it has read of it (files,
 * copies, and what it read of files gone since), so nothing is counted twice, in any order. A
 * ledger/ opened anew, or one a live run's file is gone from, is in doubt until it holds the
 * file of every live host's run (a host lock in running/ heartbeated within the lease); what was
 * read of a run that has ended is carried back into it. Each run writes its file whenever
 * ledger/ lacks it, even with nothing spent.
 *
 * Failing file operations never stop calls: the host logs once and decides on its own (but
 * budgeted calls wait while a host's spend cannot be known). */
#ifndef KEYSHARE_H
#define KEYSHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "provider.h"

struct spool;

/* Start times are the writer's estimate of the file server's clock (whole seconds on sshfs,
 * and the estimate itself within a second): a start counts while younger than the window
 * plus this. */
#define KEYSHARE_CLOCK_MARGIN_MS 2000

/* Money in micro-units of the [prices] currency: sums without rounding drift. */
typedef long long micros;
micros keyshare_micros(double amount);

struct keyshare_limits {
	long concurrency;        /* calls in flight across all hosts, 0 = no shared limit */
	long rpm;                /* calls started across all hosts per window, 0 = none */
	int64_t window_ms;
	int64_t lease_ms;        /* a ticket not heartbeated for this long is a dead host's */
	micros budget_daily, budget_monthly;        /* the provider's, 0 = none */
	micros total_daily, total_monthly;          /* all providers together, 0 = none */
};

struct keyshare_ticket {
	char *provider;          /* owned; NULL: no ticket */
	char *call;              /* name in calls/ */
	char *start;             /* name in starts/, or NULL */
	micros reserve;
};

struct keyshare_verdict {
	enum provider_block block;   /* PROVIDER_FREE: the ticket is ours */
	int64_t retry_at;            /* file server ms to look again; -1: after an event */
	long counted;                /* calls in flight, or starts in the window, or spend seen */
	micros spent, reserved;      /* for OVER_BUDGET: what the window holds */
	micros budget;
	const char *which;           /* "daily", "monthly", "total daily", "total monthly"; for BUSY
				      * "concurrency", "rpm", "a file error", "an unreadable ledger",
				      * "a live host's ledger not in a new ledger/", "a ledger directory
				      * with too many names" */
};

struct keyshare_view {
	bool held;
	char hold_reason[256];
	int64_t paused_until;        /* file server ms, 0 = no pause file */
};

struct keyshare *keyshare_new(struct spool *sp);
void keyshare_free(struct keyshare *ks);
/* Start-up: this host's tickets and probe from an earlier run are gone with it. */
void keyshare_recover(struct keyshare *ks);

/* Whether a provider's limits need the gate at all. */
bool keyshare_needed(const struct keyshare_limits *l);
/* Takes a ticket for one call to provider that may cost reserve, or says why not. */
struct keyshare_verdict keyshare_acquire(struct keyshare *ks, const char *provider,
					 const struct keyshare_limits *l, micros reserve,
					 struct keyshare_ticket *out);
void keyshare_release(struct keyshare *ks, struct keyshare_ticket *t);
/* At each heartbeat of the leases (every lease_ms/4): one late by half a lease or more means
 * the loop stalled, long enough perhaps for other hosts to judge this one gone and carry an
 * older reading of its run back; its run's file is looked at, and written again, at once. */
void keyshare_beat(struct keyshare *ks, int64_t lease_ms);
bool keyshare_beat_late(int64_t last_mono, int64_t now_mono, int64_t lease_ms);
/* Refreshes the ticket's lease; and of the probes this host holds. */
void keyshare_heartbeat(struct keyshare *ks, const struct keyshare_ticket *t);
void keyshare_heartbeat_probes(struct keyshare *ks);
/* The daemon's loop never writes the ledger (a stalled file server would stall it): where
 * it would, it calls wanted(arg) instead, on the loop, which has a helper thread run
 * keyshare_write and then keyshare_write_done back on the loop. Asked once until a write is
 * through. Without one (NULL: start-up, the exit, unit tests) the loop writes itself. */
void keyshare_set_writer(struct keyshare *ks, void (*wanted)(void *arg), void *arg);
/* On a helper thread: writes the figures not written yet (durable), waiting for a write under
 * way. */
void keyshare_write(struct keyshare *ks);
/* On the loop, after keyshare_write: the tickets kept for costs now written go. */
void keyshare_write_done(struct keyshare *ks);
/* A billed (or maybe billed) call cost amount: added to this host's ledger, and written
 * (durable) by the writer (keyshare_set_writer), or by a helper writing it now, which then
 * writes this too. On the loop. Returns the figures' generation that holds it, for
 * keyshare_written. */
unsigned long keyshare_spent(struct keyshare *ks, const char *provider, micros amount);
/* Whether the ledger file has the figures of generation gen (0: nothing to write). */
bool keyshare_written(struct keyshare *ks, unsigned long gen);
/* After a call: its ticket goes if the ledger file has its cost (generation gen); else it is
 * kept, heartbeated and released once a write took it (keyshare_write_done, or
 * keyshare_retry_unwritten). False when it is kept because the last write failed. On the
 * loop. */
bool keyshare_release_spent(struct keyshare *ks, struct keyshare_ticket *t, unsigned long gen);
/* At each heartbeat: has the ledger written again if tickets wait for it. */
void keyshare_retry_unwritten(struct keyshare *ks);
/* Today and this month by the file server's clock, for keyshare_spent_batch. On the loop. */
void keyshare_today(struct keyshare *ks, long *day, long *month);
struct keyshare_spend {
	const char *provider;    /* borrowed */
	micros amount;
};
/* keyshare_spent for several calls at once, with one write of the ledger (durable) when it
 * returns, waiting for a write under way; day and month from keyshare_today. Returns the
 * generation (keyshare_written says whether the write took it). The one function here, with
 * keyshare_written, a helper thread may call (while the keyshare lives). */
unsigned long keyshare_spent_batch(struct keyshare *ks, const struct keyshare_spend *spends,
				   size_t n, long day, long month);

/* What the spool says about provider now: a hold, a pause. */
int keyshare_look(struct keyshare *ks, const char *provider, struct keyshare_view *out);
/* A 429: pause the provider everywhere until until (file server ms, as this host estimates
 * it); returns the end of the shared pause (until plus the estimate's error, a second, rounded
 * up to a second; or a later one already there). */
int64_t keyshare_pause(struct keyshare *ks, const char *provider, int64_t until);
/* A refused key or an exhausted balance: hold it everywhere. */
void keyshare_hold(struct keyshare *ks, const char *provider, const char *reason);
/* A probe worked: release it everywhere. */
void keyshare_unhold(struct keyshare *ks, const char *provider);
/* One host probes a shared hold: true if this one may (it holds providers/NAME/probe). */
bool keyshare_probe_claim(struct keyshare *ks, const char *provider, int64_t lease_ms);
void keyshare_probe_done(struct keyshare *ks, const char *provider);

/* Pure parts, for the unit tests. */
/* Whether a start at me may stand among the starts times[0..n) (itself included), and if
 * not, when (server ms) enough of them will have left the window. */
bool keyshare_rate_ok(const int64_t *times, size_t n, int64_t me, long rpm, int64_t window_ms,
		      int64_t *retry_at);
/* A directory or file as the file server saw it: what changes when a name is added or removed
 * in a directory, or a file is replaced (renamed over) or written. */
struct keyshare_seen {
	uint64_t dev, ino;
	int64_t mtime_ns, ctime_ns;
	int64_t size;
};
/* Whether what was read of a directory (its listing) or a file (a ledger), at listed_at_ms
 * (file server ms, taken before it was seen as before; 0: never read), still stands for it as
 * seen now: the same one, unchanged, and its mtime then already KEYSHARE_CLOCK_MARGIN_MS older
 * than the reading, since a change in the same clock tick (a second on sshfs), or within the
 * clock estimate's error, could leave the mtime as it was. */
bool keyshare_listing_stands(const struct keyshare_seen *before, int64_t listed_at_ms,
			     const struct keyshare_seen *now);
/* Whether a copy carried back (HOST.RUN.json.carried-READER, as read) can no longer matter to
 * any reader beside file, its run's own ledger (as read): file says at least as much of every
 * provider's month, and of the day figures a reader may still count on today (its today, and
 * the day before, for a reader whose day has not rolled at midnight). */
bool keyshare_copy_moot(json_t *copy, json_t *file, long today);
/* "HOST~PID-SEQ~RESERVE": the host and the reserve; -1 if not a ticket's name. */
int keyshare_parse_ticket(const char *name, char *host, size_t hostsize, micros *reserve);
/* The local calendar month of a wall-clock time, as year * 12 + month - 1. */
long keyshare_month(int64_t wall_msec);

#endif
