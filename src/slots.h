/* slots.h - call slots: at most [spool] concurrency calls in flight, the ready line of jobs
 * claimed ahead of a free slot, and the retries from memory waiting for one (slots.c). Part of
 * the dispatcher: its functions take the dispatcher or one of its tasks. */
#ifndef SLOTS_H
#define SLOTS_H

#include <stdbool.h>
#include <stdint.h>

struct dispatch;
struct loop;
struct provider_state;
struct slots;
struct task;

struct slots *slots_new(struct loop *loop);
void slots_free(struct slots *s);
/* The open files that concurrency calls need: a socket each beside the reserve kept for the
 * rest (start-up warns when the limit is lower). */
long slots_open_files_needed(long concurrency);

/* Whether a call slot is free: fewer than [spool] concurrency calls in flight. */
bool slots_available(const struct dispatch *d);
/* Whether t's call may go out now (a slot is free and its provider takes it); if not, t waits
 * in the ready line (T_READY) and starts when a call ends. */
bool slots_take(struct task *t);
void slots_ready_remove(struct task *t);
/* A retry from memory (T_BACKOFF) with no ticket yet waits for a call slot, or for its provider:
 * slots_start_ready looks at it again (deferral_retry) when a call ends or after slots_recheck,
 * before the ready line; slots_unwait takes it out. */
void slots_wait(struct task *t);
void slots_unwait(struct task *t);
/* Whether t's call may open its reference images (t->ref_files_want) now beside the sockets
 * of concurrency calls, the other calls' images and the reserve; else it waits in the ready
 * line for a call to end. */
bool slots_ref_files_room(const struct dispatch *d, const struct task *t);
/* Whether a call may hold its .partial open (else it is closed after its header and the body
 * written when the call ends): a socket for each of concurrency calls comes first, and what
 * cancelled calls still hold open. */
bool slots_partial_room(const struct dispatch *d);
/* Counts a call that went out, and one that ended. */
void slots_call_started(struct task *t);
void slots_call_ended(struct task *t);
/* Starts the calls that may start: the retries waiting for a slot, then the ready line, oldest
 * first; a job in the line whose provider was held (or went over budget) meanwhile goes back
 * to new/. */
void slots_start_ready(struct dispatch *d);
/* What a job in the ready line, or a retry from memory, waits for may have changed without a
 * call ending (control/, a reload, a provider's ramp or hold, recovered answers billed): they
 * are looked at again at the next turn. */
void slots_recheck(struct dispatch *d);
/* A job joined the pending list: claims ahead, stuck for want of one, try again. */
void slots_pending_added(struct dispatch *d);
/* Whether a job for p may be claimed now: to call at once, or to wait in the ready line. */
bool slots_may_claim(const struct dispatch *d, const struct provider_state *p, int64_t now);
bool slots_may_claim_ahead(const struct dispatch *d, const struct provider_state *p, int64_t now);
/* Whether some provider not retired would take a job now: one that is not blocked, when a call
 * slot is free (slot_free: slots_available, or true to ask whether the providers alone would),
 * or one whose job may wait in the ready line. When none would, *earliest (unless NULL) is the
 * mono ms the first pause or rate window ends, 0 if only an event can change it. */
bool slots_some_provider_may_claim(const struct dispatch *d, int64_t now, bool slot_free,
				   int64_t *earliest);
/* How many more jobs may be claimed now (calls, the line, and the jobs held in all); none while
 * no provider would take one (slots_may_claim), so the pump reads no file only to wait. */
long slots_claim_room(const struct dispatch *d);
/* On every turn, before the claims: the line's calls, and its filling once the loop is idle. */
void slots_pump(struct dispatch *d);

#endif
