/* iopool.c - helper threads with a FIFO of work and an eventfd back to the loop.
 *
 * Two lists under one mutex: "todo" for the helpers, "finished" for the loop. A helper moves an
 * item from todo to finished and writes the eventfd; the loop drains finished and runs done().
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
	bool stopping;
	int efd;
};

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

static void *helper_main(void *arg)
{
	struct iopool *pool = arg;
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct work *w = queue_pop(&pool->todo);
		if (!w) {
			if (pool->stopping)
				break;
			pthread_cond_wait(&pool->wake, &pool->lock);
			continue;
		}
		pthread_mutex_unlock(&pool->lock);
		w->work(w->arg);
		pthread_mutex_lock(&pool->lock);
		queue_push(&pool->finished, w);
		uint64_t one = 1;
		(void)!write(pool->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void run_finished(struct iopool *pool)
{
	uint64_t count;
	(void)!read(pool->efd, &count, sizeof(count));
	pthread_mutex_lock(&pool->lock);
	struct work *list = pool->finished.head;
	pool->finished.head = pool->finished.tail = NULL;
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

void iopool_submit(struct iopool *pool, iopool_fn *work, iopool_fn *done, void *arg)
{
	struct work *w = xmalloc(sizeof(*w));
	w->work = work;
	w->done = done;
	w->arg = arg;
	pool->pending++;
	pthread_mutex_lock(&pool->lock);
	queue_push(&pool->todo, w);
	pthread_cond_signal(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
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
