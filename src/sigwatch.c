/* sigwatch.c - SIGTERM and SIGINT taken by a thread of their own (see sigwatch.h). It only
 * waits for them (sigwaitinfo), arms the exit's bound and counts them on an eventfd: it takes
 * no lock of the loop's and touches no file, so a stalled spool never holds it. SIGHUP and the
 * rest stay on the loop's signalfd. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "exitwatch.h"
#include "sigwatch.h"
#include "util.h"
#include "banned.h"

static int count_fd = -1;
/* Held while a signal is counted and its bound armed, and while the drain lengthens the first
 * one's: never across a file operation. */
static pthread_mutex_t arming = PTHREAD_MUTEX_INITIALIZER;
static int n_taken;
static _Atomic int64_t grace_now_ms;
static _Atomic int64_t first_at_ms;   /* mono_ms of the first signal, 0 before it */
static _Atomic int64_t first_grace_ms;   /* the grace period its bound counted on */
static sigwatch_arm_fn *arm_exit;

int64_t sigwatch_exit_bound_ms(int nth, int64_t grace_ms)
{
	return nth <= 1 ? grace_ms + EXITWATCH_CUT_MS : EXITWATCH_CUT_MS;
}

static void stop_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
}

static void *take_signals(void *arg)
{
	(void)arg;
	sigset_t set;
	stop_set(&set);
	for (int nth = 1;; nth++) {
		siginfo_t si;
		int sig;
		while ((sig = sigwaitinfo(&set, &si)) < 0)
			;   /* EINTR: nothing else ends it */
		const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
		pthread_mutex_lock(&arming);
		n_taken = nth;
		int64_t grace = atomic_load(&grace_now_ms);
		if (nth == 1) {   /* before the loop can hear of it */
			atomic_store(&first_grace_ms, grace);
			atomic_store(&first_at_ms, mono_ms());
		}
		char after[160];
		if (nth == 1)
			xsnprintf(after, sizeof(after), "%s (the grace period, %lld s, then %d s)", name,
				  (long long)(grace / 1000), EXITWATCH_CUT_MS / 1000);
		else
			xsnprintf(after, sizeof(after), "the cut (a second %s)", name);
		arm_exit(sigwatch_exit_bound_ms(nth, grace), after);
		pthread_mutex_unlock(&arming);
		uint64_t one = 1;
		while (write(count_fd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
	}
	return NULL;
}

bool sigwatch_first(int64_t *at_ms, int64_t *grace_ms)
{
	*grace_ms = atomic_load(&first_grace_ms);
	*at_ms = atomic_load(&first_at_ms);
	return *at_ms != 0;
}

bool sigwatch_lengthen(int64_t grace_ms, sigwatch_arm_fn *arm, const char *after)
{
	pthread_mutex_lock(&arming);
	int64_t at = atomic_load(&first_at_ms);
	bool longer = n_taken == 1 && grace_ms > atomic_load(&first_grace_ms);
	if (longer)
		arm(at + sigwatch_exit_bound_ms(1, grace_ms) - mono_ms(), after);
	pthread_mutex_unlock(&arming);
	return longer;
}

void sigwatch_set_grace_ms(int64_t grace_ms)
{
	atomic_store(&grace_now_ms, grace_ms);
}

int sigwatch_start(int64_t grace_ms, sigwatch_arm_fn *arm)
{
	sigset_t set;
	stop_set(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigwatch_set_grace_ms(grace_ms);
	arm_exit = arm;
	count_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (count_fd < 0)
		return -1;
	/* Every other signal blocked in it: SIGHUP goes to the loop's signalfd; it waits for its
	 * two with sigwaitinfo. */
	int rc = thread_start_detached("imgspool-sig", take_signals, NULL);
	if (rc) {
		close(count_fd);
		count_fd = -1;
		errno = rc;
		return -1;
	}
	return count_fd;
}
