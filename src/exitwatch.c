/* exitwatch.c - ends a process whose exit is stuck (see exitwatch.h). One thread, started at the
 * first arm, sleeps until the deadline armed; an arm that moves it wakes it. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exitwatch.h"
#include "iopool.h"
#include "log.h"
#include "util.h"
#include "banned.h"

_Static_assert(EXITWATCH_CUT_MS >= IOPOOL_FREE_WAIT_MS + EXITWATCH_WAITS_MS + EXITWATCH_LOG_MS + 1000,
	       "the cut's bound holds every bounded wait after it, and the loop's own work");

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t moved;      /* on CLOCK_MONOTONIC, made by the first arm */
static bool started;
static int64_t deadline_ms;       /* mono_ms */
static int64_t bound_ms;          /* of the arm that set deadline_ms, and what it counts from */
static char after_what[160];
static _Atomic int64_t deadline_seen;   /* deadline_ms for exitwatch_left_ms, 0 before an arm */
static void (*on_arm)(int64_t left_ms);

int64_t exitwatch_next_deadline(int64_t current, bool armed, int64_t now, int64_t ms,
				bool at_least)
{
	int64_t at = now + ms;
	if (!armed || (at_least ? at > current : at < current))
		return at;
	return current;
}

static void *watch(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	for (int64_t now; (now = mono_ms()) < deadline_ms;) {
		struct timespec ts = { .tv_sec = deadline_ms / 1000,
				       .tv_nsec = deadline_ms % 1000 * 1000000 };
		pthread_cond_timedwait(&moved, &lock, &ts);
	}
	char after[sizeof(after_what)];
	xsnprintf(after, sizeof(after), "%s", after_what);
	int64_t bound_s = bound_ms / 1000;
	pthread_mutex_unlock(&lock);
	exit_deadline_set(EXITWATCH_LOG_MS);   /* the last lines within the bound's margin */
	log_msg(LOG_ERROR, "the exit did not end %lld s after %s: a thread is stuck (a file "
		"operation on a stalled spool?); ending now, the spool left as a crash leaves it "
		"(the restart recovers it)", (long long)bound_s, after);
	log_flush_all();
	_exit(1);
}

static void arm(int64_t ms, const char *after, bool at_least)
{
	int64_t now = mono_ms();
	pthread_mutex_lock(&lock);
	int64_t at = exitwatch_next_deadline(deadline_ms, started, now, ms, at_least);
	if (started && at == deadline_ms) {
		pthread_mutex_unlock(&lock);
		return;
	}
	deadline_ms = at;
	bound_ms = ms;
	xsnprintf(after_what, sizeof(after_what), "%s", after);
	if (started) {
		pthread_cond_signal(&moved);
	} else {
		cond_init_monotonic(&moved);
		int err = thread_start_detached("imgspool-exit", watch, NULL);
		if (err == 0) {
			started = true;
		} else {
			pthread_cond_destroy(&moved);   /* the next arm makes it again, tries once more */
			pthread_mutex_unlock(&lock);
			log_warn("cannot start the exit's watch thread: %s; the exit is not bounded",
				 strerror(err));
			return;
		}
	}
	atomic_store(&deadline_seen, at);
	pthread_mutex_unlock(&lock);
	if (on_arm)
		on_arm(at - now);
}

void exitwatch_arm_after(int64_t ms, const char *after)
{
	arm(ms, after, false);
}

void exitwatch_arm_at_least(int64_t ms, const char *after)
{
	arm(ms, after, true);
}

void exitwatch_arm_cut(void)
{
	exitwatch_arm_at_least(EXITWATCH_CUT_MS, "the cut");
}

int64_t exitwatch_left_ms(void)
{
	int64_t at = atomic_load(&deadline_seen);
	if (!at)
		return -1;
	int64_t left = at - mono_ms();
	return left > 0 ? left : 0;
}

void exitwatch_on_arm(void (*fn)(int64_t left_ms))
{
	on_arm = fn;
}
