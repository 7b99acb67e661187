/* iopool.c - helper threads with a FIFO of work and an eventfd back to the loop.
 *
 * Under one mutex: the work to do, one queue ("lane") per batch function (and one for items that
 * are not batched), and a "finished" list for the loop. Every item carries its submission number;
 * a helper takes the oldest head of all lanes and, when it is batched, the items after it in its
 * lane (a group commit: one pass, one set of fsyncs for all of them), up to BATCH_MAX: O(batch)
 * under the lock, however long the other lanes are. It moves what it ran to finished and writes
 * the eventfd once per pass, unless an earlier write is still unread. The loop swaps the whole
 * finished list out under the lock and runs done() for each.
 * Failures: thread or eventfd creation at start-up is fatal; nothing later can fail. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "iopool.h"
#include "log.h"
#include "loop.h"
#include "util.h"
#include "banned.h"

struct work {
	iopool_fn *work;
	iopool_batch_fn *batch;  /* instead of work: runs every waiting item of the batch at once */
	iopool_fn *done;
	void *arg;
	uint64_t seq;            /* submission order, across lanes */
	struct work *next;
};

struct queue {
	struct work *head, *tail;
};

/* The items waiting for one batch function (NULL: items that are not batched). */
struct lane {
	iopool_batch_fn *batch;
	struct queue todo;
};

/* Batch functions are a handful, fixed in the code (dispatch has one). */
#define LANES_MAX 8

struct iopool {
	struct loop *loop;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct lane lanes[LANES_MAX];
	int n_lanes;
	uint64_t submitted;      /* the next item's seq */
	struct queue finished;
	pthread_t *threads;
	int n_threads;
	int pending;             /* loop thread only */
	int idle;                /* helpers waiting on wake */
	bool stopping;
	bool woken;              /* the eventfd was written and finished not yet drained */
	int efd;
};

#define BATCH_MAX 256           /* items one pass takes: a pass's latency stays bounded */

static void queue_push(struct queue *q, struct work *w)
{
	w->next = NULL;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
}

/* The lane of the oldest item waiting, or NULL; lock held. */
static struct lane *oldest_lane(struct iopool *pool)
{
	struct lane *oldest = NULL;
	for (int i = 0; i < pool->n_lanes; i++) {
		struct work *w = pool->lanes[i].todo.head;
		if (w && (!oldest || w->seq < oldest->todo.head->seq))
			oldest = &pool->lanes[i];
	}
	return oldest;
}

/* Takes the first item of lane and, for a batched lane, up to BATCH_MAX in all, in order, as a
 * list; their args in args. Lock held. */
static size_t take(struct lane *lane, struct work **list, void **args)
{
	struct work *w = lane->todo.head, *last = w;
	size_t n = 1;
	args[0] = w->arg;
	while (lane->batch && n < BATCH_MAX && last->next) {
		last = last->next;
		args[n++] = last->arg;
	}
	lane->todo.head = last->next;
	if (!lane->todo.head)
		lane->todo.tail = NULL;
	last->next = NULL;
	*list = w;
	return n;
}

static void *helper_main(void *arg)
{
	struct iopool *pool = arg;
	void **args = xcalloc(BATCH_MAX, sizeof(*args));
	/* A name of its own, so a trace (make bench syscalls) tells it from the other threads. */
	pthread_setname_np(pthread_self(), "imgspool-io");
	/* Its log lines go out with the loop's turn, or after each item or batch it ran. */
	log_hold(true);
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct lane *lane = oldest_lane(pool);
		if (!lane) {
			if (pool->stopping)
				break;
			pool->idle++;
			pthread_cond_wait(&pool->wake, &pool->lock);
			pool->idle--;
			continue;
		}
		struct work *list;
		size_t n = take(lane, &list, args);
		pthread_mutex_unlock(&pool->lock);
		if (list->batch)
			list->batch(args, n);
		else
			list->work(list->arg);
		/* Its lines go out now, not when it next finds no work: the next item may hang (a
		 * hard-mounted NFS that stopped answering) for as long as it likes. */
		log_flush();
		pthread_mutex_lock(&pool->lock);
		while (list) {
			struct work *next = list->next;
			queue_push(&pool->finished, list);
			list = next;
		}
		if (!pool->woken) {
			uint64_t one = 1;
			pool->woken = true;
			(void)!write(pool->efd, &one, sizeof(one));
		}
	}
	pthread_mutex_unlock(&pool->lock);
	log_hold(false);
	free(args);
	return NULL;
}

static void run_finished(struct iopool *pool)
{
	uint64_t count;
	(void)!read(pool->efd, &count, sizeof(count));
	pthread_mutex_lock(&pool->lock);
	struct work *list = pool->finished.head;
	pool->finished.head = pool->finished.tail = NULL;
	pool->woken = false;
	pthread_mutex_unlock(&pool->lock);
	while (list) {
		struct work *w = list;
		list = w->next;
		pool->pending--;
		w->done(w->arg);
		free(w);
	}
}

static void on_eventfd(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)fd;
	(void)events;
	run_finished(arg);
}

struct iopool *iopool_new(struct loop *loop, int threads)
{
	struct iopool *pool = xcalloc(1, sizeof(*pool));
	pool->loop = loop;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool->efd < 0)
		fatal("cannot create an eventfd: %s", strerror(errno));
	if (loop_add_fd(loop, pool->efd, EPOLLIN, on_eventfd, pool) < 0)
		fatal("cannot watch the I/O pool's eventfd");
	pool->n_threads = threads;
	pool->threads = xcalloc((size_t)threads, sizeof(*pool->threads));
	for (int i = 0; i < threads; i++) {
		int rc = pthread_create(&pool->threads[i], NULL, helper_main, pool);
		if (rc)
			fatal("cannot start an I/O helper thread: %s", strerror(rc));
	}
	return pool;
}

/* The lane of batch, made on its first use; lock held. */
static struct lane *lane_of(struct iopool *pool, iopool_batch_fn *batch)
{
	for (int i = 0; i < pool->n_lanes; i++)
		if (pool->lanes[i].batch == batch)
			return &pool->lanes[i];
	if (pool->n_lanes == LANES_MAX)
		fatal("more than %d batch functions in the I/O pool", LANES_MAX);
	pool->lanes[pool->n_lanes] = (struct lane){ .batch = batch };
	return &pool->lanes[pool->n_lanes++];
}

static void submit(struct iopool *pool, iopool_fn *work, iopool_batch_fn *batch, iopool_fn *done,
		   void *arg)
{
	struct work *w = xmalloc(sizeof(*w));
	w->work = work;
	w->batch = batch;
	w->done = done;
	w->arg = arg;
	pool->pending++;
	pthread_mutex_lock(&pool->lock);
	w->seq = pool->submitted++;
	queue_push(&lane_of(pool, batch)->todo, w);
	/* A busy helper takes this item on its next pass: only an idle one needs waking. Signalled
	 * after the unlock, so the woken helper does not block on the mutex at once; an idle
	 * helper counted here is in pthread_cond_wait (idle changes under the lock), so it cannot
	 * miss it, and a helper that took the item first costs only a spurious wake-up. */
	bool wake = pool->idle > 0;
	pthread_mutex_unlock(&pool->lock);
	if (wake)
		pthread_cond_signal(&pool->wake);
}

void iopool_submit(struct iopool *pool, iopool_fn *work, iopool_fn *done, void *arg)
{
	submit(pool, work, NULL, done, arg);
}

void iopool_submit_batched(struct iopool *pool, iopool_batch_fn *batch, iopool_fn *done, void *arg)
{
	submit(pool, NULL, batch, done, arg);
}

int iopool_pending(const struct iopool *pool)
{
	return pool->pending;
}

/* A pool whose helper did not end in time (iopool_free), kept whole: that helper may still use
 * any of it, and the process is ending. */
static struct iopool *left_running;

bool iopool_left_running(void)
{
	return left_running != NULL;
}

void iopool_abandon(struct iopool *pool)
{
	left_running = pool;
	log_warn("%d item(s) of the I/O helpers not done %d ms after the grace period's cut (stuck "
		 "in a write, a stalled disk?): exiting without them, as after a crash",
		 pool->pending, IOPOOL_FREE_WAIT_MS);
}

bool iopool_free(struct iopool *pool)
{
	if (!pool)
		return true;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	/* One deadline for all: a helper stuck in a write (an fsync on a stalled NFS) must not
	 * keep the process from ending. What it was doing is crash-safe (a publication, a save):
	 * the disk then holds what a kill -9 would leave, which a restart finishes. */
	int64_t until = mono_ms() + exit_wait_ms(IOPOOL_FREE_WAIT_MS);
	int stuck = 0;
	for (int i = 0; i < pool->n_threads; i++) {
		int64_t left = until - mono_ms();
		stuck += !join_within(pool->threads[i], left > 0 ? left : 0);
	}
	if (stuck) {
		left_running = pool;
		log_warn("%d I/O helper thread(s) have not ended %d ms after the stop (stuck in a "
			 "write, a stalled disk?): exiting without them, as after a crash", stuck,
			 IOPOOL_FREE_WAIT_MS);
		return false;
	}
	/* Helpers drained the lanes before stopping; run what they finished. */
	while (pool->pending > 0)
		run_finished(pool);
	loop_del_fd(pool->loop, pool->efd);
	close(pool->efd);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->wake);
	free(pool->threads);
	free(pool);
	return true;
}
