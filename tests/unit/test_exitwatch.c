/* test_exitwatch.c - the process ends at the deadline armed: a later arm brings the end closer,
 * never further, but one that asks for at least its time (the cut) puts it off when it was
 * nearer. Each case runs in a child, which exitwatch ends with status 1. */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exitwatch.h"
#include "util.h"
#include "tap.h"

/* The child's exit status and how long it ran, or -1 when it did not end within limit_ms. */
static void test_next_deadline(void)
{
	static const struct {
		const char *name;
		int64_t current;
		bool armed;
		int64_t now, ms;
		bool at_least;
		int64_t want;
	} rows[] = {
		{ "the first arm: now + ms", 0, false, 1000, 6000, false, 7000 },
		{ "the first arm, at least: now + ms", 0, false, 1000, 6000, true, 7000 },
		{ "a nearer arm brings the end closer", 20000, true, 1000, 6000, false, 7000 },
		{ "a further arm does not put it off", 5000, true, 1000, 6000, false, 5000 },
		{ "the cut late: it gets its time from now, the end put off", 5000, true, 3000, 6000,
		  true, 9000 },
		{ "the cut on time: the end armed before already leaves it its time", 9000, true, 3000,
		  6000, true, 9000 },
		{ "the cut early (a second signal): the further end stays", 60000, true, 3000, 6000,
		  true, 60000 },
		{ "an equal end moves nothing", 7000, true, 1000, 6000, true, 7000 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(exitwatch_next_deadline(rows[i].current, rows[i].armed, rows[i].now, rows[i].ms,
					   rows[i].at_least) == rows[i].want, "%s", rows[i].name);
}

static int64_t told_left_ms = -1;

static void record_left(int64_t left_ms)
{
	told_left_ms = left_ms;
}

static int child_arming(int64_t first_ms, int64_t second_ms, bool second_at_least,
			int64_t limit_ms, int64_t *took)
{
	int64_t started = mono_ms();
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, STDERR_FILENO);   /* its line, said by exitwatch, is not the test's */
		exitwatch_arm_after(first_ms, "the first arm");
		if (second_ms && second_at_least)
			exitwatch_arm_at_least(second_ms, "the second arm");
		else if (second_ms)
			exitwatch_arm_after(second_ms, "the second arm");
		for (;;)
			pause();
	}
	int status;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (mono_ms() - started > limit_ms) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		struct timespec tick = { 0, 10 * 1000000 };
		nanosleep(&tick, NULL);
	}
	*took = mono_ms() - started;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The hook hears of every move of the deadline, with the time left, and of nothing else. */
static void test_told_of_every_move(void)
{
	exitwatch_on_arm(record_left);
	ok(exitwatch_left_ms() == -1, "nothing armed: no time left said");
	exitwatch_arm_after(60000, "a signal");
	ok(told_left_ms > 59000 && told_left_ms <= 60000, "the first arm is told (%lld ms left)",
	   (long long)told_left_ms);
	told_left_ms = -1;
	exitwatch_arm_after(120000, "a further one");
	ok(told_left_ms == -1, "an arm that moves nothing is not told");
	exitwatch_arm_at_least(120000, "the cut");
	ok(told_left_ms > 119000 && told_left_ms <= 120000, "one that puts the end off is told");
	int64_t left = exitwatch_left_ms();
	ok(left > 119000 && left <= 120000, "and the time left is that (%lld ms)", (long long)left);
}

int main(void)
{
	test_next_deadline();
	static const struct {
		const char *name;
		int64_t first_ms, second_ms;
		bool second_at_least;
		int64_t min_ms, max_ms;
	} rows[] = {
		{ "one arm: it ends then, status 1", 200, 0, false, 200, 5000 },
		{ "a nearer second arm brings the end closer", 60000, 200, false, 200, 5000 },
		{ "a further second arm does not put it off", 200, 60000, false, 200, 5000 },
		{ "a further second arm asking at least its time puts it off", 200, 700, true, 700, 5000 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int64_t took = 0;
		int status = child_arming(rows[i].first_ms, rows[i].second_ms, rows[i].second_at_least,
					  10000, &took);
		ok(status == 1 && took >= rows[i].min_ms && took < rows[i].max_ms,
		   "%s (status %d after %lld ms)", rows[i].name, status, (long long)took);
	}
	/* Last: it arms this process's own watch, far enough off not to fire. */
	test_told_of_every_move();
	return tap_done();
}
