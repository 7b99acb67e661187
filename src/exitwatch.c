/* exitwatch.c - ends a process whose exit is stuck, after the cut (see exitwatch.h). */
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "exitwatch.h"
#include "log.h"
#include "util.h"
#include "banned.h"

static int64_t watch_ms;

static void *watch(void *arg)
{
	(void)arg;
	struct timespec ts = { .tv_sec = watch_ms / 1000, .tv_nsec = watch_ms % 1000 * 1000000 };
	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts))
		;
	log_msg(LOG_ERROR, "the exit did not end %lld s after the cut: a thread is stuck (a write "
		"to a stalled spool?); ending now, the spool left as a crash leaves it (the restart "
		"recovers it)", (long long)(watch_ms / 1000));
	log_flush_all();
	_exit(1);
}

void exitwatch_arm(int64_t ms)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static bool armed;
	pthread_mutex_lock(&lock);
	bool start = !armed;
	armed = true;
	pthread_mutex_unlock(&lock);
	if (!start)
		return;
	watch_ms = ms;
	/* Its signals blocked: a SIGTERM must go to the loop's signalfd, never to this thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t thread;
	if (pthread_create(&thread, NULL, watch, NULL) == 0) {
		pthread_setname_np(thread, "imgspool-exit");
		pthread_detach(thread);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}
