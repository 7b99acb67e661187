/* test_exitwatch.c - the process ends at the nearest deadline armed: a later arm brings the end
 * closer, never further. Each case runs in a child, which exitwatch ends with status 1. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exitwatch.h"
#include "util.h"
#include "tap.h"

/* The child's exit status and how long it ran, or -1 when it did not end within limit_ms. */
static int child_arming(int64_t first_ms, int64_t second_ms, int64_t limit_ms, int64_t *took)
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
		if (second_ms)
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

int main(void)
{
	static const struct {
		const char *name;
		int64_t first_ms, second_ms, min_ms;
	} rows[] = {
		{ "one arm: it ends then, status 1", 200, 0, 200 },
		{ "a nearer second arm brings the end closer", 60000, 200, 200 },
		{ "a further second arm does not put it off", 200, 60000, 200 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int64_t took = 0;
		int status = child_arming(rows[i].first_ms, rows[i].second_ms, 10000, &took);
		ok(status == 1 && took >= rows[i].min_ms, "%s (status %d after %lld ms)", rows[i].name,
		   status, (long long)took);
	}
	return tap_done();
}
