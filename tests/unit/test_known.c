/* test_known.c - the names dispatch has looked at: ignored names come back when their file
 * changes, a listing forgets what is gone, and a listing stats only what it must. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "known.h"
#include "util.h"
#include "tap.h"

static const struct file_id base = { .dev = 1, .ino = 100, .size = 42, .mtime_ns = 5, .ctime_ns = 5,
				     .nlink = 1, .mode = 0100644 };

static void test_ignored_names_come_back_when_they_change(void)
{
	static const struct {
		const char *what;
		struct file_id later;
		bool queued_again;
	} rows[] = {
		{ "the same file", { 1, 100, 42, 5, 5, 1, 0100644 }, false },
		{ "a maildir delivery dropped its second link", { 1, 100, 42, 5, 9, 1, 0100644 }, true },
		{ "a job renamed over it (another inode)", { 1, 101, 42, 5, 5, 1, 0100644 }, true },
		{ "rewritten smaller (size)", { 1, 100, 10, 5, 5, 1, 0100644 }, true },
		{ "touched (mtime)", { 1, 100, 42, 6, 5, 1, 0100644 }, true },
		{ "a symlink replaced by a file (mode)", { 1, 100, 42, 5, 5, 1, 0120777 }, true },
		{ "link count only", { 1, 100, 42, 5, 5, 2, 0100644 }, true },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct known k;
		known_init(&k);
		ok(known_see(&k, 'n', "job.json", &base, 0), "%s: a new name is queued", rows[i].what);
		ok(!known_see(&k, 'n', "job.json", &base, 0), "%s: a queued name is not queued twice",
		   rows[i].what);
		known_ignore(&k, 'n', "job.json", &base, 0);
		ok(known_see(&k, 'n', "job.json", &rows[i].later, 0) == rows[i].queued_again,
		   "%s: %s", rows[i].what, rows[i].queued_again ? "looked at again" : "left alone");
		ok(!known_see(&k, 'n', "job.json", &rows[i].later, 0), "%s: then queued once only",
		   rows[i].what);
		known_release(&k);
	}
}

static void test_listing_forgets_what_is_gone(void)
{
	struct known k;
	known_init(&k);
	known_see(&k, 'n', "a", &base, 0);
	known_see(&k, 'n', "b", &base, 0);
	known_see(&k, 'd', "b", &base, 0);
	known_ignore(&k, 'n', "c", &base, 0);
	known_begin(&k, 'n');
	known_see(&k, 'n', "a", &base, 0);
	ok(known_sweep(&k, 'n') == 2, "a listing of new/ forgets the two names it did not see");
	ok(known_has(&k, 'n', "a") && !known_has(&k, 'n', "b") && !known_has(&k, 'n', "c"),
	   "the name it saw stays, the others go (ignored or not)");
	ok(known_has(&k, 'd', "b"), "the same name in deferred/ is another entry");
	known_forget(&k, 'n', "a");
	ok(!known_has(&k, 'n', "a") && known_count(&k) == 1, "forget");
	known_release(&k);
}

static void test_created_then_removed_names_leave_nothing(void)
{
	struct known k;
	known_init(&k);
	char name[32];
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 40000; i++) {
			xsnprintf(name, sizeof(name), "r%d-%d.json", round, i);
			known_ignore(&k, 'n', name, &base, 0);
		}
		known_begin(&k, 'n');
		known_sweep(&k, 'n');
	}
	ok(known_count(&k) == 0, "4 x 40000 ignored names, all removed: none left");
	ok(k.cap == 64, "and the table shrank back (%zu slots)", k.cap);
	known_release(&k);
}

/* What a listing costs: rows of (what is known of a name, what the listing says) -> nothing to
 * do, a new name (queued; scan.c stats only what is not a regular file), or a stat. */
static void test_a_listing_stats_only_what_it_must(void)
{
	enum { NONE, QUEUED, IGNORED, WAITING };
	static const struct {
		const char *what;
		int before;             /* NONE, or queued / ignored at time 0 as base */
		uint64_t ino;           /* what the listing says */
		unsigned type;
		int64_t now;
		enum known_look want;
	} rows[] = {
		{ "a name never seen", NONE, 100, DT_REG, 0, KNOWN_NEW },
		{ "a name never seen, type not said", NONE, 0, DT_UNKNOWN, 0, KNOWN_NEW },
		{ "a queued job, listed again", QUEUED, 100, DT_REG, 0, KNOWN_UNCHANGED },
		{ "a queued job, much later", QUEUED, 100, DT_REG, 3600000, KNOWN_UNCHANGED },
		{ "a queued job, inode and type not said", QUEUED, 0, DT_UNKNOWN, 0, KNOWN_UNCHANGED },
		{ "a queued job replaced by another file", QUEUED, 101, DT_REG, 0, KNOWN_UNCHANGED },
		{ "an ignored entry, before its re-check", IGNORED, 100, DT_REG, KNOWN_RECHECK_MIN_MS - 1, KNOWN_UNCHANGED },
		{ "an ignored entry, at its re-check", IGNORED, 100, DT_REG, KNOWN_RECHECK_MIN_MS, KNOWN_LOOK },
		{ "an ignored entry, another inode", IGNORED, 101, DT_REG, 1, KNOWN_LOOK },
		{ "an ignored symlink, now a file", IGNORED, 100, DT_LNK, 1, KNOWN_LOOK },
		{ "an ignored entry, the file system says nothing", IGNORED, 0, DT_UNKNOWN, 1, KNOWN_UNCHANGED },
		{ "a deferred job waiting, listed again", WAITING, 100, DT_REG, 3600000, KNOWN_UNCHANGED },
		{ "a deferred job waiting, deferred again (inode)", WAITING, 101, DT_REG, 0, KNOWN_LOOK },
	};
	static const char *const names[] = { "nothing", "new", "a stat" };
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct known k;
		known_init(&k);
		if (rows[i].before != NONE) {
			known_begin(&k, 'n');
			ok(known_listed(&k, 'n', "job.json", 100, DT_REG, 0) == KNOWN_NEW,
			   "%s: first listed, new", rows[i].what);
			if (rows[i].before == QUEUED)
				ok(known_see(&k, 'n', "job.json", &base, 0), "%s: queued", rows[i].what);
			else if (rows[i].before == WAITING)
				known_wait(&k, 'n', "job.json", &base);
			else
				known_ignore(&k, 'n', "job.json", &base, 0);
			ok((known_waiting(&k, 'n', "job.json") != NULL) == (rows[i].before == WAITING),
			   "%s: waits or not", rows[i].what);
			known_sweep(&k, 'n');
		}
		known_begin(&k, 'n');
		enum known_look got = known_listed(&k, 'n', "job.json", rows[i].ino, rows[i].type, rows[i].now);
		ok(got == rows[i].want, "%s: %s (got %s)", rows[i].what, names[rows[i].want], names[got]);
		ok(known_sweep(&k, 'n') == 0 && known_has(&k, 'n', "job.json"),
		   "%s: seen by the listing, so kept", rows[i].what);
		known_release(&k);
	}
}

/* An ignored entry that stays the same is looked at less and less often, up to a limit; a hint
 * (inotify: closed after writing, renamed over) is looked at at once. */
static void test_ignored_entries_are_rechecked_with_a_backoff(void)
{
	struct known k;
	known_init(&k);
	known_ignore(&k, 'n', "x", &base, 0);
	ok(known_hint(&k, 'n', "x") == KNOWN_LOOK, "a hint about an ignored name: stat it at once");
	ok(known_hint(&k, 'n', "y") == KNOWN_NEW, "a hint about a name never seen: queue it");
	ok(!known_see(&k, 'n', "x", NULL, 0), "an ignored name is not queued without a stat");
	int64_t now = 0, last_wait = 0;
	int rechecks = 0;
	bool doubling = true, queued = false;
	for (int64_t t = 0; t <= 10 * 60 * 1000; t += 100) {
		if (known_listed(&k, 'n', "x", 100, DT_REG, t) != KNOWN_LOOK)
			continue;
		rechecks++;
		int64_t wait = t - now;
		if (rechecks > 1 && wait < KNOWN_RECHECK_MAX_MS && wait != 2 * last_wait)
			doubling = false;
		if (wait > KNOWN_RECHECK_MAX_MS + 100)
			doubling = false;
		last_wait = wait;
		now = t;
		if (known_see(&k, 'n', "x", &base, t))
			queued = true;
	}
	ok(!queued, "an ignored entry that stays the same is never queued");
	ok(doubling, "the waits double from %d ms up to %d ms", KNOWN_RECHECK_MIN_MS,
	   KNOWN_RECHECK_MAX_MS);
	ok(rechecks >= 10 && rechecks <= 20, "10 minutes of an unchanged ignored entry: %d stats",
	   rechecks);
	struct file_id later = base;
	later.nlink = 2;
	ok(known_see(&k, 'n', "x", &later, now + 1), "changed: queued");
	ok(known_hint(&k, 'n', "x") == KNOWN_UNCHANGED, "a hint about a queued name: nothing to do");
	known_release(&k);
}

/* A hint (a file closed after writing, renamed over, in new/) about an ignored name that turns
 * out unchanged is a look at once, outside the schedule: it neither delays the next re-check
 * nor grows the back-off, however many hints come. */
static void test_hints_do_not_grow_the_backoff(void)
{
	struct known k;
	known_init(&k);
	known_ignore(&k, 'n', "x", &base, 0);
	int hints = 0;
	for (int64_t t = 100; t < KNOWN_RECHECK_MIN_MS; t += 100) {
		if (known_hint(&k, 'n', "x") == KNOWN_LOOK && !known_see(&k, 'n', "x", &base, t))
			hints++;
	}
	ok(hints == 9, "9 hints about an unchanged ignored name: each looked at, none queued");
	ok(known_listed(&k, 'n', "x", 100, DT_REG, KNOWN_RECHECK_MIN_MS - 1) == KNOWN_UNCHANGED,
	   "the re-check is not due before its time");
	ok(known_listed(&k, 'n', "x", 100, DT_REG, KNOWN_RECHECK_MIN_MS) == KNOWN_LOOK,
	   "and due at its time, as if no hint had come");
	ok(!known_see(&k, 'n', "x", &base, KNOWN_RECHECK_MIN_MS), "unchanged: not queued");
	int64_t next = KNOWN_RECHECK_MIN_MS + 2 * KNOWN_RECHECK_MIN_MS;
	ok(known_listed(&k, 'n', "x", 100, DT_REG, next - 1) == KNOWN_UNCHANGED &&
	   known_listed(&k, 'n', "x", 100, DT_REG, next) == KNOWN_LOOK,
	   "the next wait is the first doubling (%d ms), not grown by the hints",
	   2 * KNOWN_RECHECK_MIN_MS);
	struct file_id later = base;
	later.size = 43;
	ok(known_hint(&k, 'n', "x") == KNOWN_LOOK && known_see(&k, 'n', "x", &later, next + 1),
	   "a hint about a change queues it at once");
	known_release(&k);
}

/* A deferred job waits with the identity it was stat'ed as, and is queued when due. */
static void test_a_deferred_job_waits_then_is_queued(void)
{
	struct known k;
	known_init(&k);
	struct file_id due = base;
	due.mtime_ns = 7000;
	known_begin(&k, 'd');
	ok(known_listed(&k, 'd', "j.json", 100, DT_REG, 0) == KNOWN_NEW, "first listed: new");
	known_wait(&k, 'd', "j.json", &due);
	const struct file_id *w = known_waiting(&k, 'd', "j.json");
	ok(w && w->mtime_ns == 7000, "it waits until its mtime");
	ok(known_sweep(&k, 'd') == 0, "a waiting name seen by the listing stays");
	known_begin(&k, 'd');
	ok(known_sweep(&k, 'd') == 1 && !known_has(&k, 'd', "j.json"), "and goes when it is gone");
	known_wait(&k, 'd', "j.json", &due);
	ok(known_see(&k, 'd', "j.json", &due, 0), "due: queued");
	ok(!known_waiting(&k, 'd', "j.json") && known_hint(&k, 'd', "j.json") == KNOWN_UNCHANGED,
	   "then it is queued, not waiting");
	known_release(&k);
}

/* Listings of new/ and deferred/ may overlap (a slice of new/, then all of deferred/). */
static void test_listings_of_two_directories_overlap(void)
{
	struct known k;
	known_init(&k);
	known_see(&k, 'n', "a", &base, 0);
	known_see(&k, 'd', "a", &base, 0);
	known_begin(&k, 'n');
	known_listed(&k, 'n', "a", 100, DT_REG, 0);
	known_begin(&k, 'd');
	ok(known_sweep(&k, 'd') == 1, "deferred/'s listing saw nothing: its name goes");
	ok(known_sweep(&k, 'n') == 0 && known_has(&k, 'n', "a"),
	   "new/'s listing, begun before, still counts what it saw");
	known_release(&k);
}

int main(void)
{
	test_ignored_names_come_back_when_they_change();
	test_listing_forgets_what_is_gone();
	test_created_then_removed_names_leave_nothing();
	test_a_listing_stats_only_what_it_must();
	test_ignored_entries_are_rechecked_with_a_backoff();
	test_hints_do_not_grow_the_backoff();
	test_listings_of_two_directories_overlap();
	test_a_deferred_job_waits_then_is_queued();
	return tap_done();
}
