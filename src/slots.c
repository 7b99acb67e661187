/* slots.c - call slots: at most [spool] concurrency calls in flight, and the ready line, jobs
 * claimed ahead of a free slot.
 *
 * A slot is the call, not the job: when a call ends, the next one goes out at once, while the
 * ended call's job is still parsed and published (those are bounded apart: no more jobs held than
 * a concurrency's worth finishing beside the calls and the line). The ready line holds jobs
 * claimed, read and with their request built; a call that ends hands its slot to the oldest of
 * them, so a wave of answers costs the loop only the sends at first. The line is filled when the
 * loop has nothing else to do (loop_when_idle), a slice at a time, never beyond the calls that
 * ended in the last second, and not at all once the last call end is a second old. A job that
 * waited READY_WAIT_MS in the line goes back to new/ (keeping its place there): it never waits
 * the minutes of a long call while another host would have room for it. Providers whose limits are
 * shared with other hosts get no jobs claimed ahead: their place among every host's calls is
 * taken at the claim and must not idle in the line. For the same reason a retry waiting in
 * memory (deferral.c) for such a provider waits for a slot before its ticket, in a queue of its
 * own: a slot that frees goes to it before the line. A due retry whose provider is blocked (an
 * operator's pause, full, recovered answers to bill) waits in that queue too, and is looked at
 * again on the same news as the line.
 *
 * Descriptors: a call holds its socket, and its .partial only while the open files allow it
 * beside a socket for each of concurrency calls and a reserve for the rest; past that the
 * .partial gets its header and is closed, and the answer is written to it when the call ends
 * (dispatch.c), so 10 000 calls fit in 20 000 open files. A cancelled call's socket and .partial
 * count till the transfer thread closes them (http_cancelled_files): a thread stuck in a write
 * would else let every cancel and new call hold one more.
 *
 * Nothing here fails. A job in the line whose provider is held, paused by an operator or over
 * budget meanwhile goes back to new/ (it keeps its place there), and so does one whose provider
 * is paused for more than a second, or routed and paused (its route's other targets may serve
 * it); one whose provider is full, or paused for a moment, waits, at most READY_WAIT_MS like any
 * other. The line is walked when what it waits for may have changed, never on a poll. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "deferral.h"
#include "dispatch_impl.h"
#include "intake.h"
#include "log.h"
#include "loop.h"
#include "provider_state.h"
#include "slots.h"
#include "task.h"
#include "banned.h"

#define READY_MAX 1024           /* jobs in the ready line, at most */
#define CLAIM_AHEAD_SLICE 64     /* claims ahead per idle turn: the loop answers in between */
#define ENDS_FRESH_MS 1000       /* calls ending this recently: a slot is likely to free soon */
#define READY_WAIT_MS 2000       /* a job waits in the line this long at most, then goes back */
#define READY_PAUSE_MS 1000      /* a longer pause of its provider sends a job back at once */

struct slots {
	struct loop *loop;
	int n_calling;           /* at most [spool] concurrency */
	struct task *ready_head, *ready_tail; /* the ready line, oldest first */
	int n_ready;
	struct task *waits_head, *waits_tail; /* retries from memory waiting for a slot or their
					       * provider, oldest first: they get the next slot
					       * before the line */
	int n_waits;
	bool waits_moved;        /* a call ended or slots_recheck: look at the waiting retries */
	int ready_cap;           /* while claiming ahead: the line may grow to this; else 0 */
	bool ahead_stuck;        /* the last claim ahead took nothing: wait till something moves */
	int64_t ends_second;     /* calls ended in this second (mono s) and in the one before */
	int ends_this, ends_prev;
	int64_t last_end_ms;     /* mono_ms of the last call's end; 0: none yet */
	uint64_t ready_timer;    /* the line's next wake: a pause or rate window ends, a wait ends */
	int64_t ready_timer_due; /* mono_ms it fires at */
	bool ready_moved;        /* a job joined the line, a call ended or a wake came: walk it */
	bool ready_rejudge;      /* slots_recheck: walk it all, slot or not */
	int partials_held;       /* calls holding their .partial open */
	long ref_files_held;     /* reference images the calls in flight hold open (task.h) */
	long open_files_max;     /* RLIMIT_NOFILE as the daemon runs with it */
};

struct slots *slots_new(struct loop *loop)
{
	struct slots *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	struct rlimit nofile;
	s->open_files_max = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY
			    ? (long)nofile.rlim_cur : 0;
	return s;
}

void slots_free(struct slots *s)
{
	if (!s)
		return;
	if (s->ready_timer)
		loop_del_timer(s->loop, s->ready_timer);
	free(s);
}

/* The line's size now: the calls that ended in the last second, within the bounds; none when
 * the last call ended more than a second ago (a long call is no promise of a slot). */
static int ready_max(const struct dispatch *d, int64_t now)
{
	const struct slots *s = d->slots;
	if (!s->last_end_ms || now - s->last_end_ms > ENDS_FRESH_MS)
		return 0;
	int n = s->ends_prev > s->ends_this ? s->ends_prev : s->ends_this;
	if (n > READY_MAX)
		n = READY_MAX;
	return d->cfg->concurrency < n ? (int)d->cfg->concurrency : n;
}

/* A task waits for a slot in one queue at a time: the ready line, or the retries' queue. */
static void queue_push(struct task **head, struct task **tail, struct task *t)
{
	t->ready_next = NULL;
	t->ready_prev = *tail;
	if (*tail)
		(*tail)->ready_next = t;
	else
		*head = t;
	*tail = t;
}

static void queue_remove(struct task **head, struct task **tail, struct task *t)
{
	if (t->ready_prev)
		t->ready_prev->ready_next = t->ready_next;
	else
		*head = t->ready_next;
	if (t->ready_next)
		t->ready_next->ready_prev = t->ready_prev;
	else
		*tail = t->ready_prev;
	t->ready_prev = t->ready_next = NULL;
}

static void ready_push(struct task *t)
{
	struct slots *s = t->d->slots;
	t->state = T_READY;
	t->ready_since_ms = mono_ms();
	s->ready_moved = true;
	queue_push(&s->ready_head, &s->ready_tail, t);
	s->n_ready++;
}

void slots_ready_remove(struct task *t)
{
	struct slots *s = t->d->slots;
	queue_remove(&s->ready_head, &s->ready_tail, t);
	t->state = T_CALLING;   /* what a task is between its claim and its call */
	s->n_ready--;
	s->ahead_stuck = false;
}

void slots_wait(struct task *t)
{
	struct slots *s = t->d->slots;
	slots_unwait(t);
	t->slot_waits = true;
	queue_push(&s->waits_head, &s->waits_tail, t);
	s->n_waits++;
}

void slots_unwait(struct task *t)
{
	struct slots *s = t->d->slots;
	if (t->slot_waits) {
		queue_remove(&s->waits_head, &s->waits_tail, t);
		s->n_waits--;
	}
	t->slot_waits = false;
}

/* The retries waiting for a slot or their provider go before the ready line (their jobs were
 * claimed first), each looked at once, oldest first, when a call ended or slots_recheck said
 * what they wait for may have changed: one still blocked waits again, at the back. */
static void start_waiting(struct dispatch *d)
{
	struct slots *s = d->slots;
	if (!s->waits_moved)
		return;
	s->waits_moved = false;
	for (int n = s->n_waits; n > 0 && s->waits_head && !d->draining; n--) {
		struct task *t = s->waits_head;
		slots_unwait(t);   /* its timer stays: deferral_retry keeps it if its wait ends then */
		deferral_retry(t);
	}
}

/* Descriptors kept for everything else: the spool, epoll, listings, hooks, and a helper's
 * batch of publications (iopool.c takes up to 256 at once), a file or directory each. */
#define FILES_KEPT (64 + 256)

static long files_reserve(const struct dispatch *d)
{
	const struct slots *s = d->slots;
	return FILES_KEPT + s->open_files_max / 16;
}

/* The smallest limit L that lets every call have its socket, and one call the files of a job's
 * reference images (its distinct files, at most JOB_REFS_MAX + 1), beside the reserve:
 * L - L/16 >= concurrency + JOB_REFS_MAX + 1 + FILES_KEPT. Other calls' images and a .partial
 * held open only use what is left above that: a call whose images do not fit waits for one to
 * end (slots_take). */
long slots_open_files_needed(long concurrency)
{
	long beside_sixteenth = concurrency + JOB_REFS_MAX + 1 + FILES_KEPT;
	return beside_sixteenth + (beside_sixteenth - 1) / 15;
}

bool slots_partial_room(const struct dispatch *d)
{
	const struct slots *s = d->slots;
	/* A cancelled call's socket and .partial may stay open past its end (http_cancel). */
	long cancelled = d->http ? http_cancelled_files(d->http) : 0;
	return s->open_files_max <= 0 ||
	       d->cfg->concurrency + s->partials_held + s->ref_files_held + cancelled + 1 +
	       files_reserve(d) <= s->open_files_max;
}

bool slots_ref_files_room(const struct dispatch *d, const struct task *t)
{
	const struct slots *s = d->slots;
	/* With none held, the first always goes: the limit asked for makes room for one call's
	 * (a lower limit was warned of at start; an open that fails then waits, task.h). */
	return s->open_files_max <= 0 || !t->ref_files_want || !s->ref_files_held ||
	       d->cfg->concurrency + s->ref_files_held + t->ref_files_want + files_reserve(d) <=
	       s->open_files_max;
}

bool slots_available(const struct dispatch *d)
{
	const struct slots *s = d->slots;
	return s->n_calling < d->cfg->concurrency;
}

void slots_call_started(struct task *t)
{
	struct slots *s = t->d->slots;
	t->calling = true;
	s->n_calling++;
	s->ref_files_held += t->ref_files_held;
	if (t->body_fd >= 0) {
		t->partial_held = true;
		s->partials_held++;
	}
	provider_state_call_started(t->prov, mono_ms());
}

void slots_call_ended(struct task *t)
{
	struct dispatch *d = t->d;
	struct slots *s = d->slots;
	int64_t now = mono_ms();
	/* Stuck claims ahead look at the pending list again only if this end may let more in:
	 * its provider was at a limit, or the line may grow. */
	bool unstick = false;
	int max_before = 0;
	if (s->ahead_stuck) {
		int64_t until;
		max_before = ready_max(d, now);
		unstick = provider_state_block(t->prov, now, &until) == PROVIDER_BUSY;
	}
	s->last_end_ms = now;
	s->ready_moved = s->waits_moved = true;
	int64_t second = now / 1000;
	if (second != s->ends_second) {
		s->ends_prev = second == s->ends_second + 1 ? s->ends_this : 0;
		s->ends_this = 0;
		s->ends_second = second;
	}
	s->ends_this++;
	if (s->ahead_stuck && (unstick || ready_max(d, now) > max_before))
		s->ahead_stuck = false;
	t->calling = false;
	s->n_calling--;
	s->ref_files_held -= t->ref_files_held;
	t->ref_files_held = 0;
	if (t->partial_held)
		s->partials_held--;
	t->partial_held = false;
	provider_state_call_ended(t->prov);
}

bool slots_take(struct task *t)
{
	int64_t until;
	if (slots_available(t->d) && slots_ref_files_room(t->d, t) &&
	    (t->is_probe || provider_state_block(t->prov, mono_ms(), &until) == PROVIDER_FREE))
		return true;
	ready_push(t);
	return false;
}

bool slots_may_claim_ahead(const struct dispatch *d, const struct provider_state *p, int64_t now)
{
	const struct slots *s = d->slots;
	if (s->n_ready >= s->ready_cap || ready_max(d, now) == 0 || provider_state_shared(p))
		return false;
	int64_t until;
	enum provider_block b = provider_state_block(p, now, &until);
	return b == PROVIDER_FREE || b == PROVIDER_BUSY;
}

bool slots_may_claim(const struct dispatch *d, const struct provider_state *p, int64_t now)
{
	return (slots_available(d) && provider_state_blocked_until(p, now) == 0) ||
	       slots_may_claim_ahead(d, p, now);
}

bool slots_some_provider_may_claim(const struct dispatch *d, int64_t now, bool slot_free,
				   int64_t *earliest)
{
	int64_t first = 0;
	for (int i = 0; i < d->n_providers; i++) {
		const struct provider_state *p = d->providers[i];
		if (provider_state_retired(p))
			continue;
		int64_t until = provider_state_blocked_until(p, now);
		if ((slot_free && until == 0) || slots_may_claim_ahead(d, p, now))
			return true;
		if (until > 0 && (!first || until < first))
			first = until;
	}
	if (earliest)
		*earliest = first;
	return false;
}

long slots_claim_room(const struct dispatch *d)
{
	const struct slots *s = d->slots;
	int64_t now = mono_ms();
	/* The check claim_read makes once it knows the job's provider, made before, so that no
	 * job file is read only to wait (and be read again). */
	if (!slots_some_provider_may_claim(d, now, slots_available(d), NULL))
		return 0;
	long conc = d->cfg->concurrency;
	long calls = conc - s->n_calling;
	/* The line's room lapses with the calls' ends (ready_max), as slots_may_claim_ahead says. */
	long ahead = ready_max(d, now) > 0 ? s->ready_cap - s->n_ready : 0;
	long by_calls = (calls > 0 ? calls : 0) + (ahead > 0 ? ahead : 0);
	long by_held = 2 * conc + ready_max(d, now) - d->n_tasks;
	long room = by_calls < by_held ? by_calls : by_held;
	return room > 0 ? room : 0;
}

static int64_t ready_wake(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	struct slots *s = d->slots;
	s->ready_timer = 0;   /* the before-sleep hook starts what may start */
	s->ready_moved = true;
	return LOOP_TIMER_DONE;
}

/* Wakes the loop at wake (mono_ms) unless it already wakes earlier. */
static void arm_ready(struct dispatch *d, int64_t wake, int64_t now)
{
	struct slots *s = d->slots;
	loop_arm_earlier(d->loop, &s->ready_timer, &s->ready_timer_due, wake, now, ready_wake, d);
}

void slots_pending_added(struct dispatch *d)
{
	d->slots->ahead_stuck = false;
}

void slots_recheck(struct dispatch *d)
{
	struct slots *s = d->slots;
	s->ready_moved = s->ready_rejudge = s->waits_moved = true;
}

void slots_start_ready(struct dispatch *d)
{
	struct slots *s = d->slots;
	/* The line is walked on news only: a job joins, a call ends, slots_recheck, or the timer
	 * armed below for what ends with time (a pause, a rate window, the look again at every
	 * host's calls that a shared limit set, a job's wait in the line). Only while a slot is
	 * free, but after slots_recheck: a job whose provider was held or paused meanwhile goes
	 * back now, slot or not. */
	start_waiting(d);
	if (!s->ready_head || !s->ready_moved)
		return;
	int64_t now = mono_ms(), wake = 0;
	bool rejudge = s->ready_rejudge;
	s->ready_moved = s->ready_rejudge = false;
	/* Waited long enough here: back to new/, where any host with a slot may take it. */
	while (s->ready_head && !d->draining && now - s->ready_head->ready_since_ms >= READY_WAIT_MS) {
		struct task *old = s->ready_head;
		slots_ready_remove(old);
		task_requeue(old, "no call slot came free within 2 s");
	}
	struct task *t = s->ready_head, *next;
	for (; t && (rejudge || slots_available(d)) && !d->draining; t = next) {
		next = t->ready_next;
		int64_t until = 0;
		enum provider_block b = t->is_probe ? PROVIDER_FREE : provider_state_block(t->prov, now, &until);
		/* Paused for long, or routed (other targets may serve it): back to new/ now. */
		if (b == PROVIDER_PAUSED && (t->routed || until < 0 || until - now > READY_PAUSE_MS)) {
			slots_ready_remove(t);
			task_requeue(t, "its provider is paused");
			continue;
		}
		if (b == PROVIDER_BUSY || b == PROVIDER_PAUSED) {
			if (until > 0 && (!wake || until < wake))
				wake = until;
			continue;
		}
		if (b == PROVIDER_FREE && (!slots_available(d) || !slots_ref_files_room(d, t)))
			continue;   /* rejudged: it waits for a slot, or for room for its images */
		slots_ready_remove(t);
		if (b == PROVIDER_FREE)
			task_send_attempt(t);
		else
			task_requeue(t, b == PROVIDER_OVER_BUDGET ? "provider over budget" :
				     control_paused(&d->control, provider_state_name(t->prov)) ?
				     "its provider is paused by an operator" : "provider on hold");
	}
	if (s->ready_head && !d->draining) {
		int64_t give_up = s->ready_head->ready_since_ms + READY_WAIT_MS;
		if (!wake || give_up < wake)
			wake = give_up;
	}
	if (wake)
		arm_ready(d, wake, now);
}

static void claim_ahead(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	struct slots *s = d->slots;
	int before = s->n_ready, max = ready_max(d, mono_ms());
	s->ready_cap = s->n_ready + CLAIM_AHEAD_SLICE < max ? s->n_ready + CLAIM_AHEAD_SLICE : max;
	intake_pump(d);
	s->ready_cap = 0;
	/* Placing waiting names in line is progress too. */
	s->ahead_stuck = s->n_ready <= before && !d->n_unplaced;
}

void slots_pump(struct dispatch *d)
{
	struct slots *s = d->slots;
	slots_start_ready(d);
	if (!s->ready_cap && !s->ahead_stuck && !d->draining && d->n_pending &&
	    s->n_ready < ready_max(d, mono_ms()))
		loop_when_idle(d->loop, claim_ahead, d);
}
