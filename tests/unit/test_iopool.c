/* test_iopool.c - the helper threads' order: items run in submission order, a batched item takes
 * every later item of its batch function with it (up to 256 a pass), never an item of another
 * kind, and done() runs once per item on the loop thread; a helper's log lines go out after
 * each item, not held back by the next one hanging; the pool's end waits at most
 * IOPOOL_FREE_WAIT_MS for a helper stuck in a write, and frees nothing it may still use. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "iopool.h"
#include "log.h"
#include "loop.h"
#include "util.h"
#include "full_pipe.h"
#include "tap.h"

#define ITEMS 600

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
/* What the helper ran, pass by pass: each pass is "kind first..last(count)". */
static char passes[64][64];
static int n_passes;
static int done_order[ITEMS], n_done;
static pthread_t loop_thread;
static bool done_off_loop;

static void record(char kind, void **args, size_t n)
{
	if (n_passes < 64)
		xsnprintf(passes[n_passes++], sizeof(passes[0]), "%c%d..%d(%zu)", kind,
			  (int)(intptr_t)args[0], (int)(intptr_t)args[n - 1], n);
}

/* The first item holds the only helper until every other item is submitted. */
static void blocker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&gate);
	pthread_mutex_unlock(&gate);
}

static void single(void *arg)
{
	record('u', &arg, 1);
}

static void batch_a(void **args, size_t n)
{
	record('a', args, n);
}

static void batch_b(void **args, size_t n)
{
	record('b', args, n);
}

static void done(void *arg)
{
	done_off_loop |= !pthread_equal(pthread_self(), loop_thread);
	if (n_done < ITEMS)
		done_order[n_done++] = (int)(intptr_t)arg;
}

static void test_order_and_batches(void)
{
	struct loop *loop = loop_new();
	loop_thread = pthread_self();
	struct iopool *pool = iopool_new(loop, 1);
	pthread_mutex_lock(&gate);
	iopool_submit(pool, blocker, done, (void *)(intptr_t)0);
	int id = 1;
	/* a1 u2 a3 b4 a5 u6, then 300 of a, 2 of b, u, 10 of a */
	iopool_submit_batched(pool, batch_a, done, (void *)(intptr_t)id++);
	iopool_submit(pool, single, done, (void *)(intptr_t)id++);
	iopool_submit_batched(pool, batch_a, done, (void *)(intptr_t)id++);
	iopool_submit_batched(pool, batch_b, done, (void *)(intptr_t)id++);
	iopool_submit_batched(pool, batch_a, done, (void *)(intptr_t)id++);
	iopool_submit(pool, single, done, (void *)(intptr_t)id++);
	for (int i = 0; i < 300; i++)
		iopool_submit_batched(pool, batch_a, done, (void *)(intptr_t)id++);
	for (int i = 0; i < 2; i++)
		iopool_submit_batched(pool, batch_b, done, (void *)(intptr_t)id++);
	iopool_submit(pool, single, done, (void *)(intptr_t)id++);
	for (int i = 0; i < 10; i++)
		iopool_submit_batched(pool, batch_a, done, (void *)(intptr_t)id++);
	int submitted = id;
	ok(iopool_pending(pool) == submitted, "%d items pending", submitted);
	pthread_mutex_unlock(&gate);
	iopool_free(pool);   /* waits for every item and runs the done() callbacks */

	/* The oldest waiting item goes first; a batch takes the later items of its function only,
	 * at most 256: a1 with a3, a5 and 253 of the 300; then u2, b4 with the two b's, u6, the
	 * rest of a (47 of the 300 and the last 10), then the last u. */
	const char *want[] = { "a1..259(256)", "u2..2(1)", "b4..308(3)", "u6..6(1)", "a260..319(57)",
			       "u309..309(1)" };
	ok(n_passes == (int)ARRAY_SIZE(want), "%zu passes after the first item (%d)",
	   ARRAY_SIZE(want), n_passes);
	for (size_t i = 0; i < ARRAY_SIZE(want) && (int)i < n_passes; i++)
		is_str(passes[i], want[i], "pass %zu", i + 1);
	ok(n_done == submitted, "done() ran once per item (%d)", n_done);
	bool each_once = true;
	static bool seen[ITEMS];
	for (int i = 0; i < n_done; i++) {
		each_once &= done_order[i] >= 0 && done_order[i] < submitted && !seen[done_order[i]];
		seen[done_order[i]] = true;
	}
	ok(each_once, "every item's done() ran, none twice");
	ok(!done_off_loop, "done() ran on the loop's thread");
	loop_free(loop);
}

static void logs_a_line(void *arg)
{
	(void)arg;
	log_info("written before the next item hangs");
}

static void nothing_done(void *arg)
{
	(void)arg;
}

/* Whether stderr (the file f) holds text yet. */
static bool holds(FILE *f, const char *text)
{
	char buf[4096];
	ssize_t n = pread(fileno(f), buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	return strstr(buf, text) != NULL;
}

/* A helper holds its lines (log_hold); an item that hangs after one that logged (a hard-mounted
 * NFS that stopped answering) must not keep that line from stderr. */
static void test_lines_go_out_after_each_item(void)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	ok(f && saved >= 0 && dup2(fileno(f), STDERR_FILENO) >= 0, "stderr into a file");
	struct loop *loop = loop_new();
	struct iopool *pool = iopool_new(loop, 1);
	pthread_mutex_lock(&gate);
	iopool_submit(pool, logs_a_line, nothing_done, NULL);
	iopool_submit(pool, blocker, nothing_done, NULL);   /* hangs until the gate opens */
	int64_t deadline = mono_ms() + 10000;
	while (!holds(f, "written before the next item hangs") && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 5000000 }, NULL);
	bool out = holds(f, "written before the next item hangs");
	pthread_mutex_unlock(&gate);
	iopool_free(pool);
	loop_free(loop);
	dup2(saved, STDERR_FILENO);
	close(saved);
	fclose(f);
	ok(out, "the line of the item before the hang is on stderr while the next item hangs");
}

/* ---- the end of the pool does not wait for a helper stuck in a write ------------------------ */

static int stuck_fd = -1;
static pid_t stuck_tid;   /* atomic */
static int wrote;         /* atomic */

static void write_to_a_full_pipe(void *arg)
{
	(void)arg;
	__atomic_store_n(&stuck_tid, gettid(), __ATOMIC_SEQ_CST);
	char c = 'x';
	(void)!write(stuck_fd, &c, 1);
	__atomic_store_n(&wrote, 1, __ATOMIC_SEQ_CST);
}

/* Whether thread tid is in write(2) on fd (/proc/self/task/TID/syscall: "1 0xFD ..."). */
static bool in_write(pid_t tid, int fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	FILE *f = fopen(path, "r");
	unsigned long nr = 0, on = 0;
	bool writes = f && fscanf(f, "%lu 0x%lx", &nr, &on) == 2 && nr == 1 && on == (unsigned long)fd;
	if (f)
		fclose(f);
	return writes;
}

static int threads_now(void)
{
	DIR *dir = opendir("/proc/self/task");
	int n = 0;
	for (struct dirent *e; dir && (e = readdir(dir));)
		n += e->d_name[0] != '.';
	if (dir)
		closedir(dir);
	return n;
}

struct freer {
	struct iopool *pool;
	bool freed;
	int returned;   /* atomic */
};

static void *free_pool(void *arg)
{
	struct freer *f = arg;
	f->freed = iopool_free(f->pool);
	__atomic_store_n(&f->returned, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* A helper stuck in a write (an fsync on a stalled NFS; here a full pipe): the pool's end, and
 * so the daemon's exit, waits IOPOOL_FREE_WAIT_MS for it, then leaves it running with the pool
 * whole (it used to wait for ever). When the write goes through, the helper finishes its item
 * in that pool and ends (ASan: nothing it touches was freed). */
static void test_end_does_not_wait_for_a_stuck_helper(void)
{
	int fds[2];
	if (full_pipe(fds) < 0)
		return;
	stuck_fd = fds[1];
	int alone = threads_now();
	struct loop *loop = loop_new();
	struct iopool *pool = iopool_new(loop, 2);
	iopool_submit(pool, write_to_a_full_pipe, nothing_done, NULL);
	int64_t deadline = mono_ms() + 5000;
	pid_t tid = 0;
	while (!((tid = __atomic_load_n(&stuck_tid, __ATOMIC_SEQ_CST)) && in_write(tid, stuck_fd)) &&
	       mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	ok(tid && in_write(tid, stuck_fd), "a helper is stuck in its write");
	struct freer f = { .pool = pool };
	pthread_t freer;
	int64_t before = mono_ms();
	pthread_create(&freer, NULL, free_pool, &f);
	deadline = mono_ms() + IOPOOL_FREE_WAIT_MS + 5000;
	while (!__atomic_load_n(&f.returned, __ATOMIC_SEQ_CST) && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	int64_t took = mono_ms() - before;
	bool returned = __atomic_load_n(&f.returned, __ATOMIC_SEQ_CST);
	bool still_stuck = in_write(tid, stuck_fd);
	/* The write goes through: the helper ends its item (and, before, a join of it). */
	char buf[4096];
	deadline = mono_ms() + 10000;
	while (!__atomic_load_n(&wrote, __ATOMIC_SEQ_CST) && mono_ms() < deadline)
		if (read(fds[0], buf, sizeof(buf)) < 0)
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	pthread_join(freer, NULL);
	while (threads_now() > alone && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	ok(returned && took >= IOPOOL_FREE_WAIT_MS - 100 && still_stuck,
	   "the pool's end returned after %lld ms, the helper still stuck", (long long)took);
	ok(!f.freed && iopool_left_running(), "it says the helper was left, and freed nothing");
	ok(__atomic_load_n(&wrote, __ATOMIC_SEQ_CST) && threads_now() == alone,
	   "once its write went through, the helper ended in the pool left to it");
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	test_order_and_batches();
	test_lines_go_out_after_each_item();
	test_end_does_not_wait_for_a_stuck_helper();
	return tap_done();
}
