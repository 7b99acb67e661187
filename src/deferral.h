/* deferral.h - a retry waits out its backoff in deferred/ (or hold/), or in memory when deferred/
 * cannot be written (deferral.c). Part of the dispatcher. */
#ifndef DEFERRAL_H
#define DEFERRAL_H

#include <stdint.h>

#include "spool.h"

struct dispatch;
struct task;

void deferral_schedule(struct task *t);
/* The move to deferred/ again, due at due, of a job a restart found in the middle of its
 * deferral (its records already hold it); a cancel fails it instead, as deferral_schedule's. */
void deferral_resume(struct task *t, int64_t due);
void deferral_scan(struct dispatch *d);
/* Wakes deferral_scan at due_wall_ms (the file server's clock) unless it wakes earlier. */
void deferral_arm(struct dispatch *d, int64_t due_wall_ms);
enum spool_dir deferral_dir(const struct task *t);
/* The I/O pool's move to deferred/ (or hold/), and its done(). */
void deferral_work(void *arg);
void deferral_done(void *arg);
/* A retry in memory whose time has come: it calls, or waits for what it needs. */
void deferral_retry(struct task *t);
/* At shutdown, a retry in memory goes to deferred/ with its due time (else new/, or hold/ when
 * an operator asked), and t is freed. */
void deferral_leave(struct task *t, const char *why);
/* A retry in memory is called off (a cancel): its timer, or its wait for a slot, ends. */
void deferral_call_off(struct task *t);

#endif
