/* exitwatch.h - a bound on the exit, whatever thread is stuck.
 * The exit's own waits are bounded (the helpers' work after the cut 2 s, then every other wait
 * together EXITWATCH_WAITS_MS), but the loop itself may be stuck in a file operation on a spool
 * whose file system stopped answering (a stalled NFS), before the cut or after it: then no
 * signal was read and the process went on for ever. sigwatch.c arms it when SIGTERM or SIGINT
 * comes, the cut arms it again. */
#ifndef EXITWATCH_H
#define EXITWATCH_H

#include <stdint.h>

/* The waits of the exit once the loop has ended, run at once and sharing this deadline
 * (util.h exit_wait_ms): the helpers (iopool_free), libcurl's thread (http_free), running/'s
 * part (the marks of jobs left, then the host lock's removal, main.c) and the log's writer (which
 * gets 250 ms more for the last lines). */
#define EXITWATCH_WAITS_MS 2000
/* Longer than every bounded wait of the exit after the cut put together (the helpers' work 2 s,
 * then the rest EXITWATCH_WAITS_MS and the log's last lines), with room for a loop slowed by a
 * slow (not stalled) disk. */
#define EXITWATCH_CUT_MS 15000

/* From now on the process ends within ms: if it is still there then, it logs "the exit did not
 * end N s after AFTER" and ends with _exit(1), leaving the spool as a crash would (the restart
 * recovers it). A later arm can only bring the end closer; after is copied. Thread-safe. */
void exitwatch_arm_after(int64_t ms, const char *after);
/* exitwatch_arm_after(ms, "the cut"). */
void exitwatch_arm(int64_t ms);

#endif
