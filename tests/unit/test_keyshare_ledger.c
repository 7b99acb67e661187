/* test_keyshare_ledger.c - this host's ledger from several threads (keyshare.c, struct keyshare:
 * spent_lock and write_lock), also under ThreadSanitizer (make unit-tsan). Helper threads write
 * their batches (keyshare_spent_batch); the loop adds its spends (keyshare_spent) and never waits
 * for a helper's write: it leaves its own to the helper holding the write, which writes again
 * for a spend that came in meanwhile before it lets go. So at every quiet moment the ledger file
 * has every spend, and no ticket waits for a write that nobody will make.
 *
 * First one interleaving on purpose (a helper held by the stop point "ledger:writing", figures
 * in hand, while the loop spends), then threads racing freely, and racing while an operator
 * removes ledger/ (the loop opens the new one, under the helpers' writes). With the daemon's
 * writer set (keyshare_set_writer), the loop makes no write at all: a helper does. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "keyshare.h"
#include "spool.h"
#include "util.h"
#include "scratch_spool.h"
#include "tap.h"

#define HELPERS 3
#define BATCHES 30
#define LOOP_ALONE 10         /* the loop's calls once the helpers are through */

static struct keyshare *ks;
static long day, month;
static atomic_int batches_written;   /* by every helper */

struct helper {
	pthread_t thread;
	int batches;
	bool may_miss;               /* a write may fail (ledger/ removed meanwhile) */
	micros p_spent, q_spent;     /* what this helper added */
	atomic_bool done;
};

/* A helper thread judging answers: each batch is a call to p and one to q, written at once. */
static void *helper_run(void *arg)
{
	struct helper *h = arg;
	for (int i = 0; i < h->batches; i++) {
		struct keyshare_spend spends[2] = { { "p", 1000 + i }, { "q", 7 } };
		unsigned long gen = keyshare_spent_batch(ks, spends, 2, day, month);
		if (!keyshare_written(ks, gen) && !h->may_miss)
			return "a batch's own write did not take it";
		h->p_spent += spends[0].amount;
		h->q_spent += spends[1].amount;
		atomic_fetch_add(&batches_written, 1);
	}
	atomic_store(&h->done, true);
	return NULL;
}

/* The helper's verdict (NULL: all written), or a word that it did not end within 30 s. */
static const char *join(struct helper *h)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 30;
	void *verdict = NULL;
	if (pthread_timedjoin_np(h->thread, &verdict, &deadline) != 0)
		return "stuck for 30 s";
	return verdict;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static const char *run;   /* the run whose file is read (the spool's) */

/* day_micros of provider in the run's ledger file (ledger/MONTH/hostA.RUN.json), -1 if it
 * cannot be read. */
static micros file_says(const char *dir, const char *provider)
{
	char *path = xasprintf("%s/ledger/%04ld-%02ld/hostA.%s.json", dir, month / 12, month % 12 + 1,
			       run);
	json_t *doc = json_load_file(path, 0, NULL);
	free(path);
	json_t *v = json_object_get(json_object_get(json_object_get(doc, "providers"), provider),
				    "day_micros");
	micros got = json_is_integer(v) ? json_integer_value(v) : -1;
	json_decref(doc);
	return got;
}

static void pause_ms(long ms)
{
	nanosleep(&(struct timespec){ .tv_nsec = ms * 1000000 }, NULL);
}

/* Lets every helper held at the stop point go on (one that is not there yet is let go when it
 * gets there), until h is through; false if it is not within 20 s. */
static bool release_until_done(const char *fifo, struct helper *h)
{
	int64_t deadline = mono_ms() + 20000;
	while (!atomic_load(&h->done) && mono_ms() < deadline) {
		/* Opens only while a helper waits at the stop: it reads to our close. */
		int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0)
			close(fd);
		pause_ms(1);   /* polls, to a deadline */
	}
	return atomic_load(&h->done);
}

/* The daemon's writer (keyshare_set_writer): asked on the loop, a helper then writes. */
static atomic_int writes_asked;

static void write_wanted(void *arg)
{
	(void)arg;
	atomic_fetch_add(&writes_asked, 1);
}

static void *writer_run(void *arg)
{
	keyshare_write(arg);
	return NULL;
}

/* Tickets in providers/p/calls/ of the spool at dir, -1 if it cannot be listed. */
static long tickets_in(const char *dir)
{
	char *calls_dir = xasprintf("%s/providers/p/calls", dir);
	struct spool_entry *left;
	int calls_fd = open(calls_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	long n = calls_fd >= 0 ? spool_list_at(calls_fd, false, false, &left) : -1;
	if (n >= 0)
		spool_entries_free(left, n);
	if (calls_fd >= 0)
		close(calls_fd);
	free(calls_dir);
	return n;
}

/* With a writer set, the loop (this thread) never writes the ledger: its spends ask for one
 * write, once, and its ticket is kept until a helper's write is through (a stalled file server
 * would stall the loop). *want_p gets what was spent. */
static void loop_never_writes(const char *dir, micros *want_p)
{
	struct keyshare_limits l = { .budget_daily = keyshare_micros(1e6), .window_ms = 60000,
				     .lease_ms = 60000 };
	struct keyshare_ticket t;
	keyshare_set_writer(ks, write_wanted, NULL);
	ok(keyshare_acquire(ks, "p", &l, 100, &t).block == PROVIDER_FREE, "writer: a ticket");
	micros before = file_says(dir, "p");
	keyshare_spent(ks, "p", 30);
	unsigned long gen = keyshare_spent(ks, "p", 20);
	ok(atomic_load(&writes_asked) == 1 && !keyshare_written(ks, gen) &&
	   file_says(dir, "p") == before,
	   "writer: the loop's two spends ask for one write (%d), and write nothing themselves",
	   atomic_load(&writes_asked));
	ok(keyshare_release_spent(ks, &t, gen) && !t.provider && tickets_in(dir) == 1,
	   "writer: the call's ticket is kept for that write (not said as a failed one)");
	pthread_t helper;
	pthread_create(&helper, NULL, writer_run, ks);
	pthread_join(helper, NULL);
	keyshare_write_done(ks);
	*want_p += 50;
	ok(keyshare_written(ks, gen) && file_says(dir, "p") == *want_p && tickets_in(dir) == 0,
	   "writer: a helper writes both (p %lld, want %lld); then the ticket goes",
	   file_says(dir, "p"), *want_p);
	keyshare_spent(ks, "p", 10);
	ok(atomic_load(&writes_asked) == 2, "writer: a spend after that write asks again");
	pthread_create(&helper, NULL, writer_run, ks);
	pthread_join(helper, NULL);
	*want_p += 10;
	keyshare_set_writer(ks, NULL, NULL);
}

/* Helpers write batches while the loop takes tickets under a budget (reading the figures),
 * spends, and releases them or keeps them till their cost is written, then spends a few times
 * alone. With remove_ledger an operator removes ledger/ once a third of the batches are in.
 * Every spend must end in the ledger file; *want_p and *want_q get what was spent. */
static void race(const char *dir, bool remove_ledger, micros *want_p, micros *want_q)
{
	const char *how = remove_ledger ? "ledger/ removed meanwhile" : "racing";
	struct keyshare_limits l = { .budget_daily = keyshare_micros(1e6), .window_ms = 60000,
				     .lease_ms = 60000 };
	struct helper helpers[HELPERS];
	atomic_store(&batches_written, 0);
	for (int i = 0; i < HELPERS; i++) {
		helpers[i] = (struct helper){ .batches = BATCHES, .may_miss = remove_ledger };
		pthread_create(&helpers[i].thread, NULL, helper_run, &helpers[i]);
	}
	char *ledger_dir = xasprintf("%s/ledger", dir);
	unsigned long last = 0;
	int calls = 0, acquired = 0, kept = 0, alone = 0, seen = 0;
	bool removed = !remove_ledger;
	/* A call of the loop per batch a helper wrote, then some with no helper (its own writes). */
	int64_t deadline = mono_ms() + 60000;
	while (alone < LOOP_ALONE && mono_ms() < deadline) {
		int now = atomic_load(&batches_written);
		if (now == seen && now < HELPERS * BATCHES) {
			sched_yield();   /* waits for a helper, to a deadline */
			continue;
		}
		seen = now;
		/* Helpers' files come and go in it: removed at the first try that finds it empty. */
		if (!removed && now >= HELPERS * BATCHES / 3)
			removed = nftw(ledger_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0;
		alone += now == HELPERS * BATCHES;
		struct keyshare_ticket t;
		acquired += keyshare_acquire(ks, "p", &l, 100, &t).block == PROVIDER_FREE;
		last = keyshare_spent(ks, "p", 100);
		kept += !keyshare_release_spent(ks, &t, last);
		*want_p += 100;
		calls++;
	}
	ok(removed, "%s: ledger/ removed", how);
	ok(acquired == calls, "%s: the loop took a ticket for each of its %d calls (%d)", how, calls,
	   acquired);
	printf("# %s: %d of the loop's %d tickets waited for a helper's write\n", how, kept, calls);
	for (int i = 0; i < HELPERS; i++) {
		const char *failed = join(&helpers[i]);
		ok(!failed, "%s: helper %d: every batch written (%s)", how, i, failed ? failed : "yes");
		*want_p += helpers[i].p_spent;
		*want_q += helpers[i].q_spent;
	}
	ok(keyshare_written(ks, last), "%s: once all are quiet, the loop's last spend is written", how);
	ok(file_says(dir, "p") == *want_p && file_says(dir, "q") == *want_q,
	   "%s: the file has every spend: p %lld (want %lld), q %lld (want %lld)", how,
	   file_says(dir, "p"), *want_p, file_says(dir, "q"), *want_q);
	free(ledger_dir);
}

int main(void)
{
	char dir[PATH_MAX];
	if (!scratch_mkdtemp(dir, sizeof(dir), "keyshare-ledger"))
		return 1;
	struct spool sp;
	if (spool_open(&sp, dir, "hostA") < 0)
		return 1;
	run = sp.run;
	ks = keyshare_new(&sp);
	keyshare_today(ks, &day, &month);

	/* One helper holds the write, its figures taken, when the loop spends: the loop does not
	 * wait, and the helper writes the loop's spend too before it lets go. */
	char *fifo = xasprintf("%s/stop.fifo", dir);
	ok(mkfifo(fifo, 0600) == 0, "a FIFO to hold a helper at 'ledger:writing'");
	setenv("IMGSPOOLD_STOP_AT", "ledger:writing", 1);   /* before any thread starts */
	setenv("IMGSPOOLD_STOP_FIFO", fifo, 1);
	struct helper one = { .batches = 1 };
	pthread_create(&one.thread, NULL, helper_run, &one);
	int held = -1;
	for (int64_t deadline = mono_ms() + 20000; held < 0 && mono_ms() < deadline; pause_ms(1))
		held = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);   /* polls, to a deadline */
	ok(held >= 0, "the helper is in its write, holding it");
	unsigned long gen = keyshare_spent(ks, "p", 50);
	ok(gen && !keyshare_written(ks, gen), "the loop's spend returns at once, not written yet");
	close(held);
	ok(release_until_done(fifo, &one), "the helper goes on and is through");
	const char *failed = join(&one);
	ok(!failed, "its batch is written (%s)", failed ? failed : "yes");
	ok(keyshare_written(ks, gen), "so is the loop's spend: the helper wrote again before letting go");
	micros want_p = 1000 + 50, want_q = 7;
	ok(file_says(dir, "p") == want_p && file_says(dir, "q") == want_q,
	   "the file has both (p %lld, want %lld)", file_says(dir, "p"), want_p);
	unsetenv("IMGSPOOLD_STOP_AT");   /* every thread joined */
	unsetenv("IMGSPOOLD_STOP_FIFO");
	atomic_store(&batches_written, 0);
	loop_never_writes(dir, &want_p);

	/* Then freely; and again with ledger/ removed meanwhile (another host, or this one, makes
	 * it again: the ledger goes on there, every spend in it). */
	race(dir, false, &want_p, &want_q);
	race(dir, true, &want_p, &want_q);
	keyshare_retry_unwritten(ks);   /* the daemon's heartbeat: releases the kept tickets */
	long n = tickets_in(dir);
	ok(n == 0, "no ticket is left in calls/ (%ld)", n);

	free(fifo);
	keyshare_free(ks);
	spool_close(&sp);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
