/* hostlock.h - one daemon per host id on a spool (spool-layout.md §10).
 *
 * running/.host.HOST holds who runs as HOST: pid, process start time, host name, boot id and the
 * daemon's run (new at every start: other hosts tell from it that a run has ended). It
 * is made with link(2) (atomic and NFS-safe) and heartbeated (its mtime) with the job leases. A
 * second daemon with the same host id refuses to start while the holder lives: on the same
 * machine (same host name and boot id) by looking at the process, so a restart after kill -9
 * starts at once; otherwise (another machine, an earlier boot) by the lock's age on the file
 * server's clock, which must exceed lease_timeout. */
#ifndef HOSTLOCK_H
#define HOSTLOCK_H

#include <stdbool.h>
#include <stdint.h>

struct spool;

struct hostlock_owner {
	long pid;
	uint64_t start_time;     /* /proc/PID/stat field 22: tells a reused pid apart */
	char hostname[256];
	char boot_id[64];
	char run[33];            /* the daemon's run (spool.h), "" in an earlier release's lock */
};

enum hostlock_verdict {
	HOSTLOCK_HELD,           /* a live daemon holds it: refuse to start */
	HOSTLOCK_STALE,          /* its holder is gone: take it over */
};

/* The pure decision. found: the lock's content (NULL if unreadable), self: us, age_ms: the lock's
 * age by the file server's clock, alive: whether found's process runs here (only asked when
 * found is from this machine's current boot). */
enum hostlock_verdict hostlock_judge(const struct hostlock_owner *found,
				     const struct hostlock_owner *self, int64_t age_ms,
				     int64_t lease_ms, bool alive);

/* Whether a lock found in running/ names a live daemon: one written by the daemon's user
 * (by_daemon), whose owner could be read (found), that hostlock_judge says is held. A file
 * anyone else put there, or that no daemon wrote, is no host. */
bool hostlock_live(const struct hostlock_owner *found, bool by_daemon,
		   const struct hostlock_owner *self, int64_t age_ms, int64_t lease_ms, bool alive);
/* The host id of a name in running/ if it is a host lock (".host.HOST"); a lock's temporary
 * names (".host.HOST.PID.RANDOM.tmp") are none. */
bool hostlock_name_host(const char *name, char *host, size_t size);
/* The ids of the other hosts live on sp (hostlock_live), in *hosts (each and the array freed
 * by the caller); and, if runs is not NULL, the run each lock names ("" for none) in *runs,
 * alike. -1 with errno if running/ or a lock in it cannot be read. */
long hostlock_live_hosts(struct spool *sp, int64_t lease_ms, char ***hosts, char ***runs);

/* Whether running/.host.HOST of sp's host id names sp's run (this daemon holds it): every
 * other run of this host has ended. */
bool hostlock_names_run(struct spool *sp);

/* Takes running/.host.HOST for sp's host id. Returns 0, or -1 with why in err (another daemon
 * holds it, or it cannot be written). */
int hostlock_acquire(struct spool *sp, int64_t lease_ms, char *err, size_t errsize);
/* Refreshes the lock's mtime (and makes it again if it was removed). -1 with why in err when
 * the lock is another daemon's now: two daemons share the host id, and this one must stop. */
int hostlock_heartbeat(struct spool *sp, char *err, size_t errsize);
/* Removes the lock if it is still ours (a clean exit). Blocks on a stalled disk: the exit runs
 * it on a thread of its own, waited for by its deadline (main.c); one left stuck may still use
 * sp's running/ and the lock's memory, so sp must not be closed and the process must end with
 * _exit. */
void hostlock_release(struct spool *sp);

#endif
