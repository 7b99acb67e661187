/* iopool.h - a few helper threads for blocking file work (fsync, big writes, parsing large bodies),
 * so that the loop never stalls on one job's disk I/O while every other job waits.
 *
 * The loop thread submits work; a helper runs work(arg); then done(arg) runs back on the loop
 * thread, woken through an eventfd. work() must touch only what arg owns: decisions and shared
 * state stay on the loop. */
#ifndef IOPOOL_H
#define IOPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct loop;
struct iopool;

typedef void iopool_fn(void *arg);
/* Runs n items (args in submission order) in one pass of one helper: a group commit. */
typedef void iopool_batch_fn(void **args, size_t n);

struct iopool *iopool_new(struct loop *loop, int threads);
void iopool_submit(struct iopool *pool, iopool_fn *work, iopool_fn *done, void *arg);
/* The same, but a helper runs it together with every other item of the same batch function
 * waiting at that moment; done(arg) still runs once per item. */
void iopool_submit_batched(struct iopool *pool, iopool_batch_fn *batch, iopool_fn *done, void *arg);
/* Work items submitted and not yet completed (their done() not yet run). */
int iopool_pending(const struct iopool *pool);
/* Waits for all work, runs the done() callbacks, stops the threads. A helper still stuck in
 * its item after IOPOOL_FREE_WAIT_MS (a write to a stalled NFS) is left running instead, and
 * the pool with it (false): then nothing a work item may touch may be freed (its args, the
 * loop, the spool, the configuration) and the process must end with _exit. */
#define IOPOOL_FREE_WAIT_MS 2000
bool iopool_free(struct iopool *pool);
/* Leaves the pool to its helpers, work still pending (a write stuck for the wait after a
 * grace cut): as iopool_free when it times out, without waiting or running a done(). */
void iopool_abandon(struct iopool *pool);
/* Whether iopool_free or iopool_abandon left a helper running. */
bool iopool_left_running(void);

#endif
