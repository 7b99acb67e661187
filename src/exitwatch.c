/* exitwatch.c - ends a process whose exit is stuck (see exitwatch.h). One thread, started at the
 * first arm, sleeps until the nearest deadline armed so far; an arm that brings it closer wakes
 * it. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exitwatch.h"
#include "log.h"
#include "util.h"
#include "banned.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sooner;     /* on CLOCK_MONOTONIC, made by the first arm */
static bool started;
static int64_t deadline_ms;       /* mono_ms */
static int64_t bound_ms;          /* of the arm that set deadline_ms, and what it counts from */
static char after_what[160];

static void *watch(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	for (int64_t now; (now = mono_ms()) < deadline_ms;) {
		struct timespec ts = { .tv_sec = deadline_ms / 1000,
				       .tv_nsec = deadline_ms % 1000 * 1000000 };
		pthread_cond_timedwait(&sooner, &lock, &ts);
	}
	char after[sizeof(after_what)];
	xsnprintf(after, sizeof(after), "%s", after_what);
	int64_t bound_s = bound_ms / 1000;
	pthread_mutex_unlock(&lock);
	log_msg(LOG_ERROR, "the exit did not end %lld s after %s: a thread is stuck (a file "
		"operation on a stalled spool?); ending now, the spool left as a crash leaves it "
		"(the restart recovers it)", (long long)bound_s, after);
	log_flush_all();
	_exit(1);
}

void exitwatch_arm_after(int64_t ms, const char *after)
{
	int64_t at = mono_ms() + ms;
	pthread_mutex_lock(&lock);
	if (started && at >= deadline_ms) {
		pthread_mutex_unlock(&lock);
		return;
	}
	deadline_ms = at;
	bound_ms = ms;
	xsnprintf(after_what, sizeof(after_what), "%s", after);
	if (started) {
		pthread_cond_signal(&sooner);
		pthread_mutex_unlock(&lock);
		return;
	}
	cond_init_monotonic(&sooner);
	int err = thread_start_detached("imgspool-exit", watch, NULL);
	if (err == 0) {
		started = true;
	} else {
		pthread_cond_destroy(&sooner);   /* the next arm makes it again and tries once more */
		log_warn("cannot start the exit's watch thread: %s; the exit is not bounded",
			 strerror(err));
	}
	pthread_mutex_unlock(&lock);
}

void exitwatch_arm(int64_t ms)
{
	exitwatch_arm_after(ms, "the cut");
}
