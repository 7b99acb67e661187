/* sigwatch.h - SIGTERM and SIGINT taken by a thread of their own, whatever the loop is doing.
 * The loop read them from its signalfd: stuck in a file operation on a stalled spool (a
 * rescan's openat, a heartbeat's utimensat on an NFS server that stopped answering), it read
 * neither the first nor the second, and only SIGKILL ended the process. This thread bounds the
 * exit from the signal itself (exitwatch) and hands each signal on to the loop. */
#ifndef SIGWATCH_H
#define SIGWATCH_H

#include <stdbool.h>
#include <stdint.h>

/* Called for each signal taken, before the loop hears of it: from now on the process ends
 * within ms (exitwatch_arm_after in the daemon; a test's recorder in the unit test). */
typedef void sigwatch_arm_fn(int64_t ms, const char *after);

/* Blocks SIGTERM and SIGINT in the calling thread (so in every thread made after it: call it
 * before them) and starts the thread that alone takes them. Returns an eventfd (EFD_NONBLOCK)
 * that counts the signals taken since the loop last read it, or -1 with errno. Once only; the
 * eventfd stays open until the process ends (the thread may write it at any time). */
int sigwatch_start(int64_t grace_ms, sigwatch_arm_fn *arm);
/* The grace period a first signal counts on from now on: a reload publishes the one it applied.
 * (A reload the loop applies after the signal thread armed the bound, a SIGHUP read just before
 * the SIGTERM, is the drain's to count on: main.c arms the bound again for it.) */
void sigwatch_set_grace_ms(int64_t grace_ms);
/* When the first signal was taken (mono_ms) and the grace period its bound counted on; false
 * before it. The drain's grace period counts from it, as the exit's bound does. Set before the
 * loop hears of that signal. */
bool sigwatch_first(int64_t *at_ms, int64_t *grace_ms);
/* The drain applies grace_ms: when it is longer than the one the first signal's bound counted
 * on (a reload applied in between) and no second signal came, arm(what is left of the first
 * signal's bound on grace_ms, after), arm being one that may put the end off. Under the lock
 * the signal thread counts and arms with, so a second signal's bound is never put off by it.
 * Returns whether it armed. */
bool sigwatch_lengthen(int64_t grace_ms, sigwatch_arm_fn *arm, const char *after);
/* How long after the nth signal (1, 2, ...) the process may still run: the grace period and
 * the bound after the cut for the first, which starts the drain; the bound after the cut alone
 * for a later one, which cuts. */
int64_t sigwatch_exit_bound_ms(int nth, int64_t grace_ms);

#endif
