/* exitwatch.h - a bound on the exit, whatever thread is stuck.
 * The exit's own waits are bounded (the helpers' work after the cut 2 s, then every other wait
 * together EXITWATCH_WAITS_MS), but the loop itself may be stuck in a file operation on a spool
 * whose file system stopped answering (a stalled NFS), before the cut or after it: then no
 * signal was read and the process went on for ever. sigwatch.c arms it when SIGTERM or SIGINT
 * comes, the drain and the cut arm it again. */
#ifndef EXITWATCH_H
#define EXITWATCH_H

#include <stdbool.h>
#include <stdint.h>

/* The waits of the exit once the loop has ended, run at once and sharing this deadline
 * (util.h exit_wait_ms): the helpers (iopool_free), libcurl's thread (http_free), running/'s
 * part (the marks of jobs left, then the host lock's removal, main.c) and the log's writer (which
 * gets EXITWATCH_LOG_MS more for the last lines). */
#define EXITWATCH_WAITS_MS 2000
#define EXITWATCH_LOG_MS 250
/* What the cut needs, from its start, whatever is stuck: the helpers' work 2 s
 * (IOPOOL_FREE_WAIT_MS, on the loop), then the exit's waits EXITWATCH_WAITS_MS and the log's
 * last lines, 4.25 s in all (measured: 2.1 s with a helper, or libcurl's thread and the host
 * lock's removal, stuck for good; 4.06 s with a helper that ends just before its 2 s, then
 * those two stuck), and 1.75 s for the loop's own work in the cut (the jobs it sends back to
 * new/, each a write and a rename) on a slow, not stalled, disk. It was 15 s when the cut's
 * ledger write was the loop's and the exit's waits added up. Checked at compile time. */
#define EXITWATCH_CUT_MS 6000

/* Where the deadline goes after an arm: now + ms when it is the first, or nearer than the
 * current one, or when at_least and further; else it stays. Pure (table-tested). */
int64_t exitwatch_next_deadline(int64_t current, bool armed, int64_t now, int64_t ms,
				bool at_least);
/* From now on the process ends within ms: if it is still there then, it logs "the exit did not
 * end N s after AFTER" and ends with _exit(1), leaving the spool as a crash would (the restart
 * recovers it). A later arm can only bring the end closer; after is copied. Thread-safe. */
void exitwatch_arm_after(int64_t ms, const char *after);
/* The same, but the process gets at least ms from now, the end put off when it was nearer:
 * the cut (a loop slow to reach it leaves it its time), a drain counting on a grace period a
 * reload lengthened. Every such end is itself bounded by what the arms before allowed the loop
 * to take. */
void exitwatch_arm_at_least(int64_t ms, const char *after);
/* exitwatch_arm_at_least(EXITWATCH_CUT_MS, "the cut"). */
void exitwatch_arm_cut(void);
/* Milliseconds left before the process is ended, -1 while nothing is armed. */
int64_t exitwatch_left_ms(void);
/* fn(ms left) is called after every arm that moved the deadline, on the arming thread, outside
 * exitwatch's lock (the daemon tells systemd, notify.h): it must not block. Set once, before
 * any arm. */
void exitwatch_on_arm(void (*fn)(int64_t left_ms));

#endif
