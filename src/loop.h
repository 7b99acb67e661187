/* loop.h - the event loop: fd watchers and timers over epoll (timers set epoll_wait's timeout, so
 * adding one costs no system call), a hook that runs before the loop sleeps, and work that waits
 * until nothing else is ready. Knows nothing of jobs. Single-threaded: call it from the loop
 * thread only, but for loop_wake_send. */
#ifndef LOOP_H
#define LOOP_H

#include <stdint.h>

struct loop;

/* events are EPOLLIN / EPOLLOUT / EPOLLERR / EPOLLHUP as epoll reports them. */
typedef void loop_fd_fn(struct loop *loop, int fd, uint32_t events, void *arg);
/* Returns the next interval in ms to run again, or LOOP_TIMER_DONE to be removed. */
typedef int64_t loop_timer_fn(struct loop *loop, void *arg);
typedef void loop_hook_fn(struct loop *loop, void *arg);

#define LOOP_TIMER_DONE (-1)

struct loop *loop_new(void);
void loop_free(struct loop *loop);

/* Adds a watch, or changes the events and callback of an existing one. */
int loop_add_fd(struct loop *loop, int fd, uint32_t events, loop_fd_fn *fn, void *arg);
/* Stops watching fd; call it before closing fd. */
void loop_del_fd(struct loop *loop, int fd);
/* Stops the callbacks for an fd that stays open and will likely be watched again for the same
 * events (an idle keep-alive connection): it stays in epoll, so watching it again costs no
 * system call. The first event while parked removes it. Call loop_del_fd before closing it. */
void loop_park_fd(struct loop *loop, int fd);

/* A timer firing after ms milliseconds (0 = on the next turn, without sleeping: the way to run
 * something soon but not from inside the current callback). Returns an id > 0. */
uint64_t loop_add_timer(struct loop *loop, int64_t ms, loop_timer_fn *fn, void *arg);
/* Removing an id that already fired and was removed is harmless. */
void loop_del_timer(struct loop *loop, uint64_t id);
/* Arms *timer (0: none; its callback sets it to 0 when it fires) to fire at wake, unless it
 * already fires at *due or sooner; wake, *due and now are on one clock (ms). */
void loop_arm_earlier(struct loop *loop, uint64_t *timer, int64_t *due, int64_t wake, int64_t now,
		      loop_timer_fn *fn, void *arg);

void loop_set_before_sleep(struct loop *loop, loop_hook_fn *fn, void *arg);
/* Work that may wait: fn runs once, on the first turn that finds no event ready and no timer
 * due (it costs that turn one epoll_wait that does not sleep). One at a time: a later call
 * replaces an earlier one not yet run. fn may ask again. */
void loop_when_idle(struct loop *loop, loop_hook_fn *fn, void *arg);

/* A wake-up another thread sends: fn runs on the loop's thread, once on a turn after one or
 * more loop_wake_send (the sender's work is to be found by fn, in a list under a lock, say).
 * Sending costs an eventfd write only when the loop sleeps or is about to: handing work to a
 * busy loop makes no system call. New and freed on the loop's thread. */
struct loop_wake;
struct loop_wake *loop_wake_new(struct loop *loop, loop_hook_fn *fn, void *arg);
/* A wake still queued by loop_wake_send_later is taken off its sender's queue here, from this
 * thread: free it only once the sender's thread is joined (or can no longer queue nor send). */
void loop_wake_free(struct loop_wake *w);
/* Any thread. */
void loop_wake_send(struct loop_wake *w);
/* From the thread of the loop from: sent when that loop's turn ends (before it looks at its
 * fds), so that work handed over piece by piece during a turn costs the other loop one wake;
 * at once when from is not running. */
void loop_wake_send_later(struct loop *from, struct loop_wake *w);
/* From the thread of the loop from: sends now what it queued (loop_wake_send_later), before
 * something that may block the rest of its turn. Nothing queued: no system call. */
void loop_wake_send_queued(struct loop *from);

/* Runs until loop_stop(). Returns 0, or -1 if epoll itself failed. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

#endif
