/* iopool.c - helper threads with a FIFO of work and an eventfd back to the loop.
 *
 * Two lists under one mutex: "todo" for the helpers, "finished" for the loop. A helper takes the
 * first item of todo and, when it is batched, every other waiting item of the same batch
 * function (a group commit: one pass, one set of fsyncs for all of them); it moves what it ran
 * to finished and writes the eventfd once per pass, unless an earlier write is still unread.
 * The loop swaps the whole finished list out under the lock and runs done() for each.
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
	struct work *next;
};

struct queue {
	struct work *head, *tail;
};

struct iopool {
	struct loop *loop;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct queue todo;
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

static struct work *queue_pop(struct queue *q)
{
	struct work *w = q->head;
	if (w) {
		q->head = w->next;
		if (!q->head)
			q->tail = NULL;
	}
	return w;
}

/* Moves the items of todo with w's batch function (w first, in order) to a list; lock held. */
static size_t take_batch(struct iopool *pool, struct work *w, struct work **list, void **args)
{
	struct queue batch = { NULL, NULL }, rest = { NULL, NULL };
	size_t n = 0;
	queue_push(&batch, w);
	args[n++] = w->arg;
	struct work *x;
	while ((x = queue_pop(&pool->todo))) {
		if (x->batch == w->batch && n < BATCH_MAX) {
			queue_push(&batch, x);
			args[n++] = x->arg;
		} else {
			queue_push(&rest, x);
		}
	}
	pool->todo = rest;
	*list = batch.head;
	return n;
}

static void *helper_main(void *arg)
{
	struct iopool *pool = arg;
	void **args = xcalloc(BATCH_MAX, sizeof(*args));
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct work *w = queue_pop(&pool->todo);
		if (!w) {
			if (pool->stopping)
				break;
			pool->idle++;
			pthread_cond_wait(&pool->wake, &pool->lock);
			pool->idle--;
			continue;
		}
		struct work *list = w;
		size_t n = 1;
		if (w->batch)
			n = take_batch(pool, w, &list, args);
		else
			w->next = NULL;   /* still points into todo */
		pthread_mutex_unlock(&pool->lock);
		if (w->batch)
			w->batch(args, n);
		else
			w->work(w->arg);
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
	queue_push(&pool->todo, w);
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

void iopool_free(struct iopool *pool)
{
	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < pool->n_threads; i++)
		pthread_join(pool->threads[i], NULL);
	/* Helpers drained todo before stopping; run what they finished. */
	while (pool->pending > 0)
		run_finished(pool);
	loop_del_fd(pool->loop, pool->efd);
	close(pool->efd);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->wake);
	free(pool->threads);
	free(pool);
}
