/* test_known.c - the names dispatch has looked at: ignored names come back when their file
 * changes, and a listing forgets what is gone. */
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
		ok(known_see(&k, 'n', "job.json", &base), "%s: a new name is queued", rows[i].what);
		ok(!known_see(&k, 'n', "job.json", &base), "%s: a queued name is not queued twice",
		   rows[i].what);
		known_ignore(&k, 'n', "job.json", &base);
		ok(known_see(&k, 'n', "job.json", &rows[i].later) == rows[i].queued_again,
		   "%s: %s", rows[i].what, rows[i].queued_again ? "looked at again" : "left alone");
		ok(!known_see(&k, 'n', "job.json", &rows[i].later), "%s: then queued once only",
		   rows[i].what);
		known_release(&k);
	}
}

static void test_listing_forgets_what_is_gone(void)
{
	struct known k;
	known_init(&k);
	known_see(&k, 'n', "a", &base);
	known_see(&k, 'n', "b", &base);
	known_see(&k, 'd', "b", &base);
	known_ignore(&k, 'n', "c", &base);
	known_begin(&k);
	known_see(&k, 'n', "a", &base);
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
			known_ignore(&k, 'n', name, &base);
		}
		known_begin(&k);
		known_sweep(&k, 'n');
	}
	ok(known_count(&k) == 0, "4 x 40000 ignored names, all removed: none left");
	ok(k.cap == 64, "and the table shrank back (%zu slots)", k.cap);
	known_release(&k);
}

int main(void)
{
	test_ignored_names_come_back_when_they_change();
	test_listing_forgets_what_is_gone();
	test_created_then_removed_names_leave_nothing();
	return tap_done();
}
