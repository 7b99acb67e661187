/* test_sigwatch.c - how long the process may still run after each stop signal, and the thread
 * that takes SIGTERM and SIGINT: it arms that bound, then counts the signal for the loop. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "exitwatch.h"
#include "sigwatch.h"
#include "tap.h"

static void test_exit_bounds(void)
{
	static const struct {
		const char *name;
		int nth;
		int64_t grace_ms, want_ms;
	} rows[] = {
		{ "the first signal: the grace period, then the cut's bound", 1, 3000, 3000 + EXITWATCH_CUT_MS },
		{ "the first signal, no grace period: the cut's bound", 1, 0, EXITWATCH_CUT_MS },
		{ "the first signal, a long grace period", 1, 3600000, 3600000 + EXITWATCH_CUT_MS },
		{ "the second signal cuts: the cut's bound alone", 2, 3000, EXITWATCH_CUT_MS },
		{ "a third signal: no longer than the second's", 3, 3600000, EXITWATCH_CUT_MS },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(sigwatch_exit_bound_ms(rows[i].nth, rows[i].grace_ms) == rows[i].want_ms, "%s",
		   rows[i].name);
}

static pthread_mutex_t armed_lock = PTHREAD_MUTEX_INITIALIZER;
static int n_armed;
static int64_t armed_ms[4];
static char armed_after[4][160];

static void record_arm(int64_t ms, const char *after)
{
	pthread_mutex_lock(&armed_lock);
	if (n_armed < 4) {
		armed_ms[n_armed] = ms;
		snprintf(armed_after[n_armed], sizeof(armed_after[0]), "%s", after);
	}
	n_armed++;
	pthread_mutex_unlock(&armed_lock);
}

/* The signals counted on fd by now, waited for 10 s at most. */
static uint64_t taken(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t n = 0;
	if (poll(&p, 1, 10000) == 1 && read(fd, &n, sizeof(n)) != sizeof(n))
		n = 0;
	return n;
}

static void test_the_thread_arms_then_counts(void)
{
	int64_t none_at, none_grace;
	ok(!sigwatch_first(&none_at, &none_grace), "no first signal before one is taken");
	int fd = sigwatch_start(3000, record_arm);
	ok(fd >= 0, "the thread starts (%s)", fd < 0 ? strerror(errno) : "ok");
	if (fd < 0)
		return;
	sigset_t now;
	pthread_sigmask(SIG_BLOCK, NULL, &now);
	ok(sigismember(&now, SIGTERM) && sigismember(&now, SIGINT),
	   "SIGTERM and SIGINT are blocked in the caller, so in the threads it makes later");

	kill(getpid(), SIGTERM);
	ok(taken(fd) == 1, "a SIGTERM sent to the process is counted once");
	pthread_mutex_lock(&armed_lock);
	ok(n_armed == 1 && armed_ms[0] == 3000 + EXITWATCH_CUT_MS,
	   "the first armed the grace period and the cut's bound, before it was counted");
	is_str(armed_after[0], "SIGTERM (the grace period, 3 s, then 6 s)", "and says after what");
	pthread_mutex_unlock(&armed_lock);
	int64_t at_ms, grace_ms;
	ok(sigwatch_first(&at_ms, &grace_ms) && at_ms > 0 && grace_ms == 3000,
	   "the first signal's time and grace period are there for the loop's drain");

	/* The drain applies its grace period: the same, or one a reload lengthened since. */
	ok(!sigwatch_lengthen(3000, record_arm, "the same") && n_armed == 1,
	   "the drain on the grace period the bound counted on arms nothing");
	ok(!sigwatch_lengthen(1000, record_arm, "shorter") && n_armed == 1,
	   "nor on a shorter one (the bound stays)");
	ok(sigwatch_lengthen(60000, record_arm, "reloaded"), "a longer one arms again");
	pthread_mutex_lock(&armed_lock);
	ok(n_armed == 2 && armed_ms[1] <= 60000 + EXITWATCH_CUT_MS &&
	   armed_ms[1] > 60000 + EXITWATCH_CUT_MS - 5000,
	   "what is left of the first signal's bound on it (%lld ms)", (long long)armed_ms[1]);
	pthread_mutex_unlock(&armed_lock);

	sigwatch_set_grace_ms(60000);   /* a reload: only a first signal counts on it */
	kill(getpid(), SIGINT);
	ok(taken(fd) == 1, "a SIGINT is counted too");
	pthread_mutex_lock(&armed_lock);
	ok(n_armed == 3 && armed_ms[2] == EXITWATCH_CUT_MS, "the second armed the cut's bound alone");
	is_str(armed_after[2], "the cut (a second SIGINT)", "and says it is the cut");
	pthread_mutex_unlock(&armed_lock);
	ok(!sigwatch_lengthen(120000, record_arm, "too late") && n_armed == 3,
	   "after a second signal, no drain puts its bound off");

	uint64_t none;
	ok(read(fd, &none, sizeof(none)) < 0 && errno == EAGAIN, "nothing more is counted");
	int64_t at2, grace2;
	ok(sigwatch_first(&at2, &grace2) && at2 == at_ms && grace2 == 3000,
	   "a later signal or reload changes neither");
}

int main(void)
{
	test_exit_bounds();
	test_the_thread_arms_then_counts();
	return tap_done();
}
