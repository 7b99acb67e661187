/* loop.c - epoll + timerfd event loop, in the spirit of redis' ae.c.
 *
 * One timerfd is armed for the earliest timer. Timers live in a small array scanned linearly:
 * the daemon keeps a handful of them (curl's timeout, the rescan, the grace period, the next
 * deferred job), so a heap would buy nothing. Failures: epoll_wait errors other than EINTR end
 * loop_run with -1; everything else is reported to the caller. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "util.h"
#include "banned.h"

struct fd_watch {
	loop_fd_fn *fn;
	void *arg;
	bool used;
	uint32_t generation;     /* tells a reused fd number from the one an event was for */
};

struct timer {
	uint64_t id;
	int64_t due;             /* mono_ms */
	loop_timer_fn *fn;
	void *arg;
};

struct loop {
	int epfd;
	int tfd;
	struct fd_watch *watches; /* indexed by fd */
	int n_watches;
	struct timer *timers;
	size_t n_timers, alloc_timers;
	uint64_t next_timer_id;
	int64_t armed_for;        /* due time the timerfd is set to, -1 = disarmed */
	loop_hook_fn *before_sleep;
	void *before_sleep_arg;
	bool stop;
};

struct loop *loop_new(void)
{
	struct loop *loop = xcalloc(1, sizeof(*loop));
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	loop->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (loop->epfd < 0 || loop->tfd < 0)
		fatal("cannot create the event loop: %s", strerror(errno));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint32_t)loop->tfd };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->tfd, &ev) < 0)
		fatal("cannot watch the timerfd: %s", strerror(errno));
	loop->armed_for = -1;
	return loop;
}

void loop_free(struct loop *loop)
{
	if (!loop)
		return;
	close(loop->tfd);
	close(loop->epfd);
	free(loop->watches);
	free(loop->timers);
	free(loop);
}

int loop_add_fd(struct loop *loop, int fd, uint32_t events, loop_fd_fn *fn, void *arg)
{
	if (fd >= loop->n_watches) {
		int n = loop->n_watches ? loop->n_watches : 64;
		while (n <= fd)
			n *= 2;
		loop->watches = xrealloc(loop->watches, (size_t)n * sizeof(*loop->watches));
		memset(loop->watches + loop->n_watches, 0,
		       (size_t)(n - loop->n_watches) * sizeof(*loop->watches));
		loop->n_watches = n;
	}
	struct fd_watch *w = &loop->watches[fd];
	int op = w->used ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	uint32_t generation = w->used ? w->generation : w->generation + 1;
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)generation << 32 | (uint32_t)fd };
	if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
		return error("cannot watch fd %d: %s", fd, strerror(errno));
	*w = (struct fd_watch){ .fn = fn, .arg = arg, .used = true, .generation = generation };
	return 0;
}

void loop_del_fd(struct loop *loop, int fd)
{
	if (fd < 0 || fd >= loop->n_watches || !loop->watches[fd].used)
		return;
	/* The fd may already be closed (curl closes before telling us): ignore errors. */
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	loop->watches[fd].used = false;
}

/* Arms the timerfd for the earliest timer. A zero it_value would disarm it, so "now" is 1 ns. */
static void rearm(struct loop *loop)
{
	int64_t due = -1;
	for (size_t i = 0; i < loop->n_timers; i++)
		if (due < 0 || loop->timers[i].due < due)
			due = loop->timers[i].due;
	if (due == loop->armed_for)
		return;
	struct itimerspec its = { 0 };
	if (due >= 0) {
		int64_t delta = due - mono_ms();
		if (delta <= 0)
			its.it_value.tv_nsec = 1;
		else {
			its.it_value.tv_sec = delta / 1000;
			its.it_value.tv_nsec = (delta % 1000) * 1000000;
		}
	}
	timerfd_settime(loop->tfd, 0, &its, NULL);
	loop->armed_for = due;
}

uint64_t loop_add_timer(struct loop *loop, int64_t ms, loop_timer_fn *fn, void *arg)
{
	if (loop->n_timers == loop->alloc_timers) {
		loop->alloc_timers = loop->alloc_timers ? loop->alloc_timers * 2 : 16;
		loop->timers = xrealloc(loop->timers, loop->alloc_timers * sizeof(*loop->timers));
	}
	uint64_t id = ++loop->next_timer_id;
	loop->timers[loop->n_timers++] = (struct timer){
		.id = id, .due = mono_ms() + (ms < 0 ? 0 : ms), .fn = fn, .arg = arg,
	};
	rearm(loop);
	return id;
}

static struct timer *find_timer(struct loop *loop, uint64_t id);

void loop_del_timer(struct loop *loop, uint64_t id)
{
	struct timer *t = find_timer(loop, id);
	if (t) {
		*t = loop->timers[--loop->n_timers];
		rearm(loop);
	}
}

static struct timer *find_timer(struct loop *loop, uint64_t id)
{
	for (size_t i = 0; i < loop->n_timers; i++)
		if (loop->timers[i].id == id)
			return &loop->timers[i];
	return NULL;
}

/* Runs every timer due now, each at most once: a callback may add, remove or reschedule timers. */
static void run_timers(struct loop *loop)
{
	uint64_t expirations;
	(void)!read(loop->tfd, &expirations, sizeof(expirations));
	loop->armed_for = -1;
	int64_t now = mono_ms();
	size_t n_due = 0;
	uint64_t *due = xmalloc((loop->n_timers + 1) * sizeof(*due));
	for (size_t i = 0; i < loop->n_timers; i++)
		if (loop->timers[i].due <= now)
			due[n_due++] = loop->timers[i].id;
	for (size_t i = 0; i < n_due; i++) {
		struct timer *t = find_timer(loop, due[i]);
		if (!t)
			continue;
		int64_t next = t->fn(loop, t->arg);
		t = find_timer(loop, due[i]);
		if (!t)
			continue;
		if (next == LOOP_TIMER_DONE)
			*t = loop->timers[--loop->n_timers];
		else
			t->due = mono_ms() + (next < 0 ? 0 : next);
	}
	free(due);
	rearm(loop);
}

void loop_set_before_sleep(struct loop *loop, loop_hook_fn *fn, void *arg)
{
	loop->before_sleep = fn;
	loop->before_sleep_arg = arg;
}

int loop_run(struct loop *loop)
{
	struct epoll_event events[64];
	loop->stop = false;
	while (!loop->stop) {
		if (loop->before_sleep)
			loop->before_sleep(loop, loop->before_sleep_arg);
		if (loop->stop)
			break;
		int n = epoll_wait(loop->epfd, events, (int)ARRAY_SIZE(events), -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return error("epoll_wait failed: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			int fd = (int)(uint32_t)events[i].data.u64;
			uint32_t generation = (uint32_t)(events[i].data.u64 >> 32);
			if (fd == loop->tfd && generation == 0) {
				run_timers(loop);
				continue;
			}
			/* A callback earlier in this batch may have removed this watch, or even closed
			 * the fd and watched a new one with the same number: that one's turn is later. */
			struct fd_watch *w = fd < loop->n_watches ? &loop->watches[fd] : NULL;
			if (w && w->used && w->generation == generation)
				w->fn(loop, fd, events[i].events, w->arg);
		}
	}
	return 0;
}

void loop_stop(struct loop *loop)
{
	loop->stop = true;
}
