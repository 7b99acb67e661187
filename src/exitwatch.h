/* exitwatch.h - a bound on the exit after the cut, whatever thread is stuck.
 * The exit's own waits are bounded (2 s each), but the loop itself may be stuck in a write to
 * a spool whose file system stopped answering (a stalled NFS): then no signal is read, and only
 * SIGKILL ended the process. */
#ifndef EXITWATCH_H
#define EXITWATCH_H

#include <stdint.h>

/* Longer than every bounded wait of the exit after the cut put together (the helpers' work,
 * iopool_free, http_free, the marks of jobs left, the host lock, the log: 2 s each). */
#define EXITWATCH_CUT_MS 15000

/* From now on the process ends within ms: if it is still there then, it says so and ends with
 * _exit(1), leaving the spool as a crash would (the restart recovers it). Once only. */
void exitwatch_arm(int64_t ms);

#endif
