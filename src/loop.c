/* loop.c - epoll event loop with timers, in the spirit of redis' ae.c.
 *
 * Timers cost no system call: the loop sleeps in epoll_wait for as long as the earliest timer
 * allows (ms, like the timers), and a timer already due (curl's "call me at once", a 0 ms
 * timer) runs on the next turn without sleeping at all. Timers live in a small array scanned
 * linearly: the daemon keeps a handful of them per job at most, so a heap would buy nothing.
 * Idle work (loop_when_idle) runs when a look at the fds finds nothing and no timer is due: work
 * that must never delay the answer to an event. Another thread wakes the loop with a loop_wake:
 * a flag the loop looks at every turn, and an eventfd written only when the loop sleeps (or is
 * about to), so a thread handing work to a busy loop makes no system call. The log lines of a turn are written together
 * before the loop sleeps (log_hold).
 * Failures: epoll_wait errors other than EINTR end loop_run with -1; everything else is
 * reported to the caller. */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "util.h"
#include "banned.h"

struct fd_watch {
	loop_fd_fn *fn;
	void *arg;
	bool used;               /* someone wants its events */
	uint32_t registered;     /* the events epoll watches for it; 0: not in epoll */
	uint32_t generation;     /* tells a reused fd number from the one an event was for */
};

struct timer {
	uint64_t id;
	int64_t due;             /* mono_ms */
	loop_timer_fn *fn;
	void *arg;
};

struct loop_wake {
	struct loop *loop;
	loop_hook_fn *fn;
	void *arg;
	atomic_bool sent;        /* since fn last ran */
	struct loop_wake *next;
	struct loop *queued_on;  /* the sending loop whose turn end sends it (loop_wake_send_later) */
	struct loop_wake *next_queued;
};

struct loop {
	int epfd;
	int wake_fd;             /* eventfd for loop_wake_send, -1 until a loop_wake is made */
	atomic_bool sleeping;    /* about to wait in epoll_wait, or waiting */
	struct loop_wake *wakes;
	struct loop_wake *queued; /* other loops' wakes to send at the end of this one's turn */
	struct fd_watch *watches; /* indexed by fd */
	int n_watches;
	struct timer *timers;
	size_t n_timers, alloc_timers;
	uint64_t next_timer_id;
	loop_hook_fn *before_sleep;
	void *before_sleep_arg;
	loop_hook_fn *idle;      /* runs once, when nothing else is ready (loop_when_idle) */
	void *idle_arg;
	bool stop;
	bool running;            /* in loop_run: loop_wake_send_later waits for the turn's end */
};

struct loop *loop_new(void)
{
	struct loop *loop = xcalloc(1, sizeof(*loop));
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		fatal("cannot create the event loop: %s", strerror(errno));
	loop->wake_fd = -1;
	return loop;
}

void loop_free(struct loop *loop)
{
	if (!loop)
		return;
	while (loop->wakes)
		loop_wake_free(loop->wakes);
	for (struct loop_wake *w = loop->queued; w; w = w->next_queued)
		w->queued_on = NULL;
	if (loop->wake_fd >= 0)
		close(loop->wake_fd);
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
	/* A parked fd watched again for the same events costs nothing. Any other is told to
	 * epoll, so an fd closed without loop_del_fd and reused is added again (MOD: ENOENT). */
	uint32_t generation = w->registered ? w->generation : w->generation + 1;
	if (w->used || w->registered != events) {
		int op = w->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
		struct epoll_event ev = { .events = events,
					  .data.u64 = (uint64_t)generation << 32 | (uint32_t)fd };
		int rc = epoll_ctl(loop->epfd, op, fd, &ev);
		if (rc < 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
			rc = epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev);
		if (rc < 0)
			return error("cannot watch fd %d: %s", fd, strerror(errno));
	}
	*w = (struct fd_watch){ .fn = fn, .arg = arg, .used = true, .registered = events,
				.generation = generation };
	return 0;
}

void loop_del_fd(struct loop *loop, int fd)
{
	if (fd < 0 || fd >= loop->n_watches || !loop->watches[fd].registered)
		return;
	/* The fd may already be closed (curl closes before telling us): ignore errors. */
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	loop->watches[fd].used = false;
	loop->watches[fd].registered = 0;
}

void loop_park_fd(struct loop *loop, int fd)
{
	if (fd >= 0 && fd < loop->n_watches)
		loop->watches[fd].used = false;
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
	return id;
}

static struct timer *find_timer(struct loop *loop, uint64_t id);

void loop_del_timer(struct loop *loop, uint64_t id)
{
	struct timer *t = find_timer(loop, id);
	if (t)
		*t = loop->timers[--loop->n_timers];
}

void loop_arm_earlier(struct loop *loop, uint64_t *timer, int64_t *due, int64_t wake, int64_t now,
		      loop_timer_fn *fn, void *arg)
{
	if (*timer && *due <= wake)
		return;
	if (*timer)
		loop_del_timer(loop, *timer);
	*due = wake;
	*timer = loop_add_timer(loop, wake > now ? wake - now : 0, fn, arg);
}

static struct timer *find_timer(struct loop *loop, uint64_t id)
{
	for (size_t i = 0; i < loop->n_timers; i++)
		if (loop->timers[i].id == id)
			return &loop->timers[i];
	return NULL;
}

/* How long epoll_wait may sleep: until the earliest timer (0 if one is due), -1 without one. */
static int wait_ms(const struct loop *loop, int64_t now)
{
	if (!loop->n_timers)
		return -1;
	int64_t due = loop->timers[0].due;
	for (size_t i = 1; i < loop->n_timers; i++)
		if (loop->timers[i].due < due)
			due = loop->timers[i].due;
	int64_t delta = due - now;
	return delta <= 0 ? 0 : delta > INT_MAX ? INT_MAX : (int)delta;
}

/* Runs every timer due now, each at most once: a callback may add, remove or reschedule timers. */
/* Due timers run earliest first (then in the order they were added): a slow turn may find
 * several due at once, in any order in the array. */
static int due_cmp(const void *a, const void *b)
{
	const struct timer *x = a, *y = b;
	if (x->due != y->due)
		return x->due < y->due ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static void run_timers(struct loop *loop, int64_t now)
{
	size_t n_due = 0;
	struct timer *due = NULL;
	for (size_t i = 0; i < loop->n_timers; i++)
		if (loop->timers[i].due <= now) {
			if (!due)
				due = xmalloc(loop->n_timers * sizeof(*due));
			due[n_due++] = loop->timers[i];
		}
	if (n_due > 1)
		qsort(due, n_due, sizeof(*due), due_cmp);
	for (size_t i = 0; i < n_due; i++) {
		struct timer *t = find_timer(loop, due[i].id);
		if (!t)
			continue;
		int64_t next = t->fn(loop, t->arg);
		t = find_timer(loop, due[i].id);
		if (!t)
			continue;
		if (next == LOOP_TIMER_DONE)
			*t = loop->timers[--loop->n_timers];
		else
			t->due = mono_ms() + (next < 0 ? 0 : next);
	}
	free(due);
}

void loop_when_idle(struct loop *loop, loop_hook_fn *fn, void *arg)
{
	loop->idle = fn;
	loop->idle_arg = arg;
}

static void drain_wake_fd(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)events;
	(void)arg;
	uint64_t count;
	(void)!read(fd, &count, sizeof(count));
}

struct loop_wake *loop_wake_new(struct loop *loop, loop_hook_fn *fn, void *arg)
{
	if (loop->wake_fd < 0) {
		loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (loop->wake_fd < 0)
			fatal("cannot create an eventfd: %s", strerror(errno));
		if (loop_add_fd(loop, loop->wake_fd, EPOLLIN, drain_wake_fd, NULL) < 0)
			fatal("cannot watch the loop's eventfd");
	}
	struct loop_wake *w = xcalloc(1, sizeof(*w));
	w->loop = loop;
	w->fn = fn;
	w->arg = arg;
	atomic_init(&w->sent, false);
	w->next = loop->wakes;
	loop->wakes = w;
	return w;
}

void loop_wake_free(struct loop_wake *w)
{
	if (!w)
		return;
	if (w->queued_on)
		for (struct loop_wake **p = &w->queued_on->queued; *p; p = &(*p)->next_queued)
			if (*p == w) {
				*p = w->next_queued;
				break;
			}
	for (struct loop_wake **p = &w->loop->wakes; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	free(w);
}

/* Any thread. The flag first, then the look at sleeping; the loop sets sleeping first, then
 * looks at the flags (both sequentially consistent): one of the two sees the other's write. */
void loop_wake_send(struct loop_wake *w)
{
	if (atomic_exchange(&w->sent, true))
		return;   /* sent before and not yet run: the loop will see it */
	if (atomic_load(&w->loop->sleeping)) {
		/* EAGAIN (a full counter) leaves the fd readable: the loop wakes all the same. */
		uint64_t one = 1;
		while (write(w->loop->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
	}
}

void loop_wake_send_later(struct loop *from, struct loop_wake *w)
{
	if (!from->running)
		return loop_wake_send(w);
	if (w->queued_on)
		return;
	w->queued_on = from;
	w->next_queued = from->queued;
	from->queued = w;
}

void loop_wake_send_queued(struct loop *loop)
{
	while (loop->queued) {
		struct loop_wake *w = loop->queued;
		loop->queued = w->next_queued;
		w->queued_on = NULL;
		loop_wake_send(w);
	}
}

/* Runs the wakes sent since their last run; returns whether any ran. */
static bool run_wakes(struct loop *loop)
{
	bool ran = false;
	for (struct loop_wake *w = loop->wakes, *next; w; w = next) {
		next = w->next;   /* fn may free w */
		if (atomic_exchange(&w->sent, false)) {
			w->fn(loop, w->arg);
			ran = true;
		}
	}
	return ran;
}

/* Whether a wake was sent and has not run yet. */
static bool wakes_sent(struct loop *loop)
{
	for (struct loop_wake *w = loop->wakes; w; w = w->next)
		if (atomic_load(&w->sent))
			return true;
	return false;
}

void loop_set_before_sleep(struct loop *loop, loop_hook_fn *fn, void *arg)
{
	loop->before_sleep = fn;
	loop->before_sleep_arg = arg;
}

int loop_run(struct loop *loop)
{
	struct epoll_event events[64];
	bool polled = true;      /* whether the last turn looked at the fds */
	int rc = 0;
	loop->stop = false;
	loop->running = true;
	/* A turn's log lines go out in one write, before the loop sleeps. */
	log_hold(true);
	while (!loop->stop) {
		if (loop->wakes)
			run_wakes(loop);
		if (loop->before_sleep)
			loop->before_sleep(loop, loop->before_sleep_arg);
		if (loop->stop)
			break;
		int64_t now = mono_ms();
		int timeout = wait_ms(loop, now);
		/* A timer due now runs without a system call, but never twice in a row without a
		 * look at the fds: timers that keep coming due must not starve them. */
		if (timeout == 0 && polled) {
			polled = false;
			run_timers(loop, now);
			continue;
		}
		polled = true;
		/* The turn's hand-overs go before its log lines: a log write may block (a stalled
		 * journal or disk), and the other thread's work must not wait for it. */
		loop_wake_send_queued(loop);
		log_flush();
		/* Idle work waits for a look that finds nothing ready: then it runs, and the loop
		 * turns again before it sleeps. */
		int wait = loop->idle ? 0 : timeout;
		/* About to sleep: a wake sent from now on writes the eventfd; one sent before is
		 * seen here, and the loop only looks at its fds. */
		if (wait != 0 && loop->wakes) {
			atomic_store(&loop->sleeping, true);
			if (wakes_sent(loop))
				wait = 0;
		}
		int n = epoll_wait(loop->epfd, events, (int)ARRAY_SIZE(events), wait);
		if (loop->wakes)
			atomic_store(&loop->sleeping, false);
		if (n == 0 && loop->idle && timeout != 0 && !(loop->wakes && wakes_sent(loop))) {
			loop_hook_fn *fn = loop->idle;
			loop->idle = NULL;
			fn(loop, loop->idle_arg);
			continue;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = error("epoll_wait failed: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			int fd = (int)(uint32_t)events[i].data.u64;
			uint32_t generation = (uint32_t)(events[i].data.u64 >> 32);
			/* A callback earlier in this batch may have removed this watch, or even closed
			 * the fd and watched a new one with the same number: that one's turn is later. */
			struct fd_watch *w = fd < loop->n_watches ? &loop->watches[fd] : NULL;
			if (!w || !w->registered || w->generation != generation)
				continue;
			if (w->used)
				w->fn(loop, fd, events[i].events, w->arg);
			else
				loop_del_fd(loop, fd);   /* parked, and something happened: let go */
		}
		if (loop->n_timers)
			run_timers(loop, mono_ms());
	}
	loop_wake_send_queued(loop);
	loop->running = false;
	log_hold(false);
	return rc;
}

void loop_stop(struct loop *loop)
{
	loop->stop = true;
}
