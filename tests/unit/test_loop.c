/* test_loop.c - the event loop's timers: they run in due order, never early, a 0 ms timer on the
 * next turn, and timers that keep coming due never starve a ready fd; idle work waits for both.
 * A wake sent from another thread wakes a loop with nothing else to wake it, and wakes sent
 * together run their hook once; one sent later goes at the end of its sender's turn, before the
 * turn's log write (which may block). */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "util.h"
#include "tap.h"

struct trace {
	char order[16];
	size_t n;
	int64_t fired_mono[16];
	int again;               /* how often the timer asks to run again at once */
	int reads;               /* fd callbacks seen */
};

struct tick {
	struct trace *tr;
	char name;
};

static int64_t note(struct loop *loop, void *arg)
{
	(void)loop;
	struct tick *tk = arg;
	struct trace *tr = tk->tr;
	if (tr->n < sizeof(tr->order) - 1) {
		tr->fired_mono[tr->n] = mono_ms();
		tr->order[tr->n++] = tk->name;
	}
	return LOOP_TIMER_DONE;
}

static int64_t stop_loop(struct loop *loop, void *arg)
{
	(void)arg;
	loop_stop(loop);
	return LOOP_TIMER_DONE;
}

static void test_timers_run_in_due_order_and_never_early(void)
{
	static const struct {
		const char *what;
		int64_t ms[3];
		const char *want;
	} rows[] = {
		{ "added in due order", { 0, 5, 20 }, "abc" },
		{ "added in reverse", { 20, 5, 0 }, "cba" },
		{ "two at once", { 10, 0, 10 }, "bac" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct loop *loop = loop_new();
		struct trace tr = { 0 };
		struct tick ticks[3] = { { &tr, 'a' }, { &tr, 'b' }, { &tr, 'c' } };
		int64_t start = mono_ms();
		for (int k = 0; k < 3; k++)
			loop_add_timer(loop, rows[i].ms[k], note, &ticks[k]);
		loop_add_timer(loop, 40, stop_loop, NULL);
		ok(loop_run(loop) == 0, "%s: the loop ran", rows[i].what);
		is_str(tr.order, rows[i].want, "%s: the order", rows[i].what);
		bool early = false;
		for (size_t k = 0; k < tr.n; k++)
			early |= tr.fired_mono[k] - start < rows[i].ms[tr.order[k] - 'a'];
		ok(!early, "%s: no timer ran before it was due", rows[i].what);
		loop_free(loop);
	}
}

/* A turn that takes longer than the timers' spacing: when it ends, both are due. */
static int64_t slow_turn(struct loop *loop, void *arg)
{
	(void)loop;
	int64_t until = *(int64_t *)arg;
	while (mono_ms() < until)
		;
	return LOOP_TIMER_DONE;
}

static void test_timers_due_together_run_earliest_first(void)
{
	struct loop *loop = loop_new();
	struct trace tr = { 0 };
	struct tick late = { &tr, 'b' }, early = { &tr, 'a' };
	int64_t until = mono_ms() + 40;
	loop_add_timer(loop, 0, slow_turn, &until);
	loop_add_timer(loop, 20, note, &late);    /* before early in the loop's array */
	loop_add_timer(loop, 10, note, &early);
	loop_add_timer(loop, 60, stop_loop, NULL);
	loop_run(loop);
	is_str(tr.order, "ab", "timers found due together run earliest first");
	loop_free(loop);
}

static void test_deleted_timer_never_runs(void)
{
	struct loop *loop = loop_new();
	struct trace tr = { 0 };
	struct tick a = { &tr, 'a' }, b = { &tr, 'b' };
	uint64_t id = loop_add_timer(loop, 0, note, &a);
	loop_add_timer(loop, 1, note, &b);
	loop_del_timer(loop, id);
	loop_del_timer(loop, id);   /* twice is harmless */
	loop_add_timer(loop, 10, stop_loop, NULL);
	loop_run(loop);
	is_str(tr.order, "b", "a deleted timer does not run, the other does");
	loop_free(loop);
}

/* A wake-up armed for a long pause (intake's, the ready line's) moves earlier when something
 * ends sooner, and never later. */
static void test_a_wake_up_moves_earlier_never_later(void)
{
	struct loop *loop = loop_new();
	struct trace tr = { 0 };
	struct tick a = { &tr, 'a' };
	uint64_t timer = 0;
	int64_t due = 0, now = mono_ms();
	loop_arm_earlier(loop, &timer, &due, now + 600000, now, note, &a);
	loop_arm_earlier(loop, &timer, &due, now + 5, now, note, &a);
	loop_arm_earlier(loop, &timer, &due, now + 300000, now, note, &a);
	ok(due == now + 5, "due at the sooner end, not moved back later");
	loop_add_timer(loop, 50, stop_loop, NULL);
	loop_run(loop);
	is_str(tr.order, "a", "one wake-up, at the sooner end, not the pause's");
	loop_free(loop);
}

static int64_t again_at_once(struct loop *loop, void *arg)
{
	struct trace *tr = arg;
	if (tr->reads > 0 || ++tr->again > 100000) {
		loop_stop(loop);
		return LOOP_TIMER_DONE;
	}
	return 0;
}

static void on_readable(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)events;
	struct trace *tr = arg;
	char c;
	if (read(fd, &c, 1) == 1)
		tr->reads++;
}

static void test_zero_ms_timers_do_not_starve_fds(void)
{
	struct loop *loop = loop_new();
	struct trace tr = { 0 };
	int p[2];
	ok(pipe(p) == 0, "a pipe");
	ok(write(p[1], "x", 1) == 1, "the pipe is readable");
	loop_add_fd(loop, p[0], EPOLLIN, on_readable, &tr);
	loop_add_timer(loop, 0, again_at_once, &tr);
	loop_run(loop);
	ok(tr.reads == 1, "the ready fd was served while a timer kept coming due");
	ok(tr.again < 10, "within a few turns (%d)", tr.again);
	loop_del_fd(loop, p[0]);
	close(p[0]);
	close(p[1]);
	loop_free(loop);
}

static int64_t stop_when_quiet(struct loop *loop, void *arg)
{
	(void)arg;
	loop_stop(loop);
	return LOOP_TIMER_DONE;
}

/* A parked fd (a kept-alive connection between its transfers) gets no callbacks; watched again,
 * it gets them again. */
static void test_parked_fds(void)
{
	struct loop *loop = loop_new();
	struct trace tr = { 0 };
	int p[2];
	ok(pipe(p) == 0, "a pipe");
	loop_add_fd(loop, p[0], EPOLLIN, on_readable, &tr);
	loop_park_fd(loop, p[0]);
	ok(write(p[1], "x", 1) == 1, "readable while parked");
	loop_add_timer(loop, 20, stop_when_quiet, NULL);
	loop_run(loop);
	ok(tr.reads == 0, "a parked fd's callback is not called");
	loop_add_fd(loop, p[0], EPOLLIN, on_readable, &tr);
	loop_add_timer(loop, 20, stop_when_quiet, NULL);
	loop_run(loop);
	ok(tr.reads == 1, "watched again after an event let it go, it is served");
	loop_park_fd(loop, p[0]);
	loop_add_fd(loop, p[0], EPOLLIN, on_readable, &tr);   /* still in epoll: nothing to do */
	ok(write(p[1], "y", 1) == 1, "readable again");
	loop_add_timer(loop, 20, stop_when_quiet, NULL);
	loop_run(loop);
	ok(tr.reads == 2, "parked and watched again at once, it is served");
	loop_del_fd(loop, p[0]);
	close(p[0]);
	close(p[1]);
	loop_free(loop);
}

struct idle_trace {
	struct trace *tr;
	int runs, wanted;        /* idle runs so far; how many it asks for */
	int reads_seen[4];       /* bytes read before each run */
	size_t timers_seen;      /* timers fired before the first run */
};

static void on_idle(struct loop *loop, void *arg)
{
	struct idle_trace *it = arg;
	if (!it->runs)
		it->timers_seen = it->tr->n;
	if (it->runs < 4)
		it->reads_seen[it->runs] = it->tr->reads;
	if (++it->runs < it->wanted)
		loop_when_idle(loop, on_idle, it);
	else
		loop_add_timer(loop, 20, stop_when_quiet, NULL);   /* and nothing more, meanwhile */
}

/* Idle work waits until every ready fd has been served and every due timer has run; it runs once
 * per request; asked again from itself, it runs again on the next quiet turn. */
static void test_idle_work_waits_for_ready_fds_and_due_timers(void)
{
	struct loop *loop = loop_new();
	struct trace tr = { 0 };
	struct tick tk = { &tr, 'a' };
	struct idle_trace it = { .tr = &tr, .wanted = 2 };
	int p[2];
	ok(pipe(p) == 0, "a pipe");
	ok(write(p[1], "xyz", 3) == 3, "three bytes to read, one per turn");
	loop_add_fd(loop, p[0], EPOLLIN, on_readable, &tr);   /* a byte a turn: ready till drained */
	loop_add_timer(loop, 0, note, &tk);
	loop_when_idle(loop, on_idle, &it);
	loop_run(loop);
	ok(it.reads_seen[0] == 3, "idle work ran after the ready fd was drained (%d of 3 read)",
	   it.reads_seen[0]);
	ok(it.timers_seen == 1, "and after the due timer ran");
	ok(it.runs == 2, "asked again from itself, it ran again, and no more (%d)", it.runs);
	loop_del_fd(loop, p[0]);
	close(p[0]);
	close(p[1]);
	loop_free(loop);
}

struct waker {
	struct loop_wake *w;
	atomic_int runs;         /* of the hook, on the loop's thread */
	int want;                /* runs that end the loop */
};

static void on_wake(struct loop *loop, void *arg)
{
	struct waker *wk = arg;
	if (atomic_fetch_add(&wk->runs, 1) + 1 == wk->want)
		loop_stop(loop);
}

/* Sends a wake once the hook ran for the one before: each finds the loop asleep, or about to
 * sleep. A lost wake leaves the loop asleep till the test's deadline. */
static void *send_wakes(void *arg)
{
	struct waker *wk = arg;
	for (int i = 0; i < wk->want; i++) {
		loop_wake_send(wk->w);
		int64_t deadline = mono_ms() + 5000;
		while (atomic_load(&wk->runs) < i + 1 && mono_ms() < deadline)
			sched_yield();
	}
	return NULL;
}

static void test_wakes_from_another_thread(void)
{
	struct loop *loop = loop_new();
	struct waker wk = { .want = 20 };
	wk.w = loop_wake_new(loop, on_wake, &wk);
	pthread_t t;
	pthread_create(&t, NULL, send_wakes, &wk);
	uint64_t deadline = loop_add_timer(loop, 10000, stop_loop, NULL);
	loop_run(loop);   /* nothing but the wakes (and the 10 s deadline) ends its sleeps */
	pthread_join(t, NULL);
	loop_del_timer(loop, deadline);
	ok(atomic_load(&wk.runs) == 20, "20 wakes sent one at a time to a sleeping loop ran its hook "
	   "20 times (%d)", atomic_load(&wk.runs));

	/* Sent three times before the loop turns: the hook runs once, on the first turn. */
	struct waker three = { .want = -1 };
	three.w = loop_wake_new(loop, on_wake, &three);
	for (int i = 0; i < 3; i++)
		loop_wake_send(three.w);
	loop_add_timer(loop, 0, stop_loop, NULL);   /* the turn after */
	loop_run(loop);
	ok(atomic_load(&three.runs) == 1, "three wakes sent before a turn ran the hook once (%d)",
	   atomic_load(&three.runs));
	loop_wake_free(three.w);
	loop_free(loop);   /* frees wk.w */
}

/* One turn of loop: its wakes' hooks run at the start of a turn. */
static void one_turn(struct loop *loop)
{
	loop_add_timer(loop, 0, stop_loop, NULL);
	loop_run(loop);
}

struct later {
	struct loop *other;
	struct waker *wk;
	int runs_in_turn;        /* the other loop's hook runs while the sender's turn went on */
};

static int64_t send_later_thrice(struct loop *loop, void *arg)
{
	struct later *l = arg;
	for (int i = 0; i < 3; i++)
		loop_wake_send_later(loop, l->wk->w);
	one_turn(l->other);
	l->runs_in_turn = atomic_load(&l->wk->runs);
	return LOOP_TIMER_DONE;
}

static int64_t queue_then_free(struct loop *loop, void *arg)
{
	struct later *l = arg;
	loop_wake_send_later(loop, l->wk->w);
	loop_free(l->other);   /* and its wakes */
	l->other = NULL;
	return LOOP_TIMER_DONE;
}

static void test_wakes_sent_at_the_turns_end(void)
{
	struct loop *sender = loop_new(), *other = loop_new();
	struct waker wk = { .want = -1 };
	wk.w = loop_wake_new(other, on_wake, &wk);
	struct later l = { .other = other, .wk = &wk };
	loop_add_timer(sender, 0, send_later_thrice, &l);
	loop_add_timer(sender, 1, stop_loop, NULL);   /* a later turn */
	loop_run(sender);
	ok(l.runs_in_turn == 0, "a wake sent later is not sent while its sender's turn goes on (%d)",
	   l.runs_in_turn);
	one_turn(other);
	ok(atomic_load(&wk.runs) == 1, "three sent later in one turn ran the hook once (%d)",
	   atomic_load(&wk.runs));
	loop_wake_send_later(sender, wk.w);   /* the sender does not run: sent at once */
	one_turn(other);
	ok(atomic_load(&wk.runs) == 2, "one sent later by a loop that does not run is sent at once "
	   "(%d)", atomic_load(&wk.runs));
	/* Queued, then freed with its loop before the sender's turn ends (ASan sees a use). */
	loop_add_timer(sender, 0, queue_then_free, &l);
	loop_add_timer(sender, 1, stop_loop, NULL);
	loop_run(sender);
	ok(l.other == NULL, "a wake queued by a sender and freed before its turn ended is forgotten");
	loop_free(sender);
}

/* ---- a turn's hand-overs do not wait for its log write ------------------------------------- */

struct blocked_log {
	struct loop *other;
	struct waker wk;
	int read_fd;             /* of the full pipe that stands for stderr */
	bool wake_first;         /* the hand-over came while the log write was blocked */
	atomic_bool running;     /* the other loop turns (past its log_hold) */
};

/* Makes room in the pipe, so the log write ends. */
static void drain(struct blocked_log *b)
{
	char room[4096];
	if (read(b->read_fd, room, sizeof(room)) <= 0)
		ok(0, "room in the pipe");
}

/* On the other loop's thread. */
static void handed_over(struct loop *loop, void *arg)
{
	struct blocked_log *b = arg;
	b->wake_first = true;
	drain(b);
	loop_stop(loop);
}

static int64_t never_handed_over(struct loop *loop, void *arg)
{
	drain(arg);
	loop_stop(loop);
	return LOOP_TIMER_DONE;
}

static int64_t note_running(struct loop *loop, void *arg)
{
	(void)loop;
	atomic_store(&((struct blocked_log *)arg)->running, true);
	return LOOP_TIMER_DONE;
}

static void *run_other(void *arg)
{
	struct blocked_log *b = arg;
	loop_add_timer(b->other, 0, note_running, b);
	loop_add_timer(b->other, 10000, never_handed_over, b);
	loop_run(b->other);
	return NULL;
}

static int64_t log_and_hand_over(struct loop *loop, void *arg)
{
	struct blocked_log *b = arg;
	log_warn("a line held for the turn's end");
	loop_wake_send_later(loop, b->wk.w);
	return LOOP_TIMER_DONE;
}

/* stderr is a full pipe: the turn's log write blocks (a stalled journal). The wake the turn
 * queued must reach the other loop all the same, which then makes room. */
static void test_hand_overs_before_the_log_write(void)
{
	int p[2], saved_stderr = dup(STDERR_FILENO);
	if (!ok(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0 && saved_stderr >= 0, "a pipe for stderr"))
		return;
	char fill[4096] = { 0 };
	while (write(p[1], fill, sizeof(fill)) > 0 || write(p[1], fill, 1) > 0)
		;
	fcntl(p[1], F_SETFL, 0);
	struct loop *sender = loop_new();
	struct blocked_log b = { .other = loop_new(), .read_fd = p[0] };
	b.wk.w = loop_wake_new(b.other, handed_over, &b);
	pthread_t t;
	pthread_create(&t, NULL, run_other, &b);
	int64_t deadline = mono_ms() + 5000;
	while (!atomic_load(&b.running) && mono_ms() < deadline)
		sched_yield();
	dup2(p[1], STDERR_FILENO);
	loop_add_timer(sender, 0, log_and_hand_over, &b);
	loop_add_timer(sender, 1, stop_loop, NULL);
	loop_run(sender);
	dup2(saved_stderr, STDERR_FILENO);
	pthread_join(t, NULL);
	ok(b.wake_first, "a wake queued in a turn reached the other loop while the turn's log "
	   "write was blocked");
	loop_free(b.other);
	loop_free(sender);
	close(saved_stderr);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	test_timers_run_in_due_order_and_never_early();
	test_timers_due_together_run_earliest_first();
	test_deleted_timer_never_runs();
	test_a_wake_up_moves_earlier_never_later();
	test_zero_ms_timers_do_not_starve_fds();
	test_parked_fds();
	test_idle_work_waits_for_ready_fds_and_due_timers();
	test_wakes_from_another_thread();
	test_wakes_sent_at_the_turns_end();
	test_hand_overs_before_the_log_write();
	return tap_done();
}
