/* known.h - the names of new/ and deferred/ the daemon has looked at, and what it decided.
 *
 * A name is queued (pending, at most once) or ignored (not something it can claim: a symlink, a
 * FIFO, a file with two links, an over-size file; logged once). An ignored name is looked at
 * again as soon as its file changes: another inode, size, mtime, ctime or link count (a maildir
 * delivery drops its second link; a job is renamed over a symlink). A full listing of a
 * directory forgets every name it did not see, so the set never outlives the entries.
 *
 * What a listing costs: getdents gives each name with its inode and type (d_ino, d_type). A
 * queued name listed again with the same inode and type needs no stat at all: its file is read
 * when it is claimed, and the claim's rename says whether it is still there. A name never seen,
 * or another inode or type at a known name, is stat'ed once. An ignored name is stat'ed again
 * (its size, mtime, ctime or link count may change in place) at most every KNOWN_RECHECK_MIN_MS
 * at first, backing off to KNOWN_RECHECK_MAX_MS while it stays the same; a change announced by
 * inotify (known_hint) is looked at at once, and if the file is the same after all, the
 * schedule of re-checks is left as it was.
 *
 * sshfs lists every name with d_ino 0xffffffff (fileid.h): there only another type shows another
 * file at a known name; an ignored one's re-checks see it by its size or mtime, and a queued
 * one's claim by its bytes. */
#ifndef KNOWN_H
#define KNOWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

#define KNOWN_RECHECK_MIN_MS 1000
#define KNOWN_RECHECK_MAX_MS 60000
#define KNOWN_MAX_DIRS 4

struct known_entry;
struct known {
	struct known_entry **slots;
	size_t cap, count, tombstones;
	uint32_t generation;                /* of the last listing begun, any directory */
	char dirs[KNOWN_MAX_DIRS];          /* the directories listed so far... */
	uint32_t listing[KNOWN_MAX_DIRS];   /* ...and the generation of each one's listing */
};

void known_init(struct known *k);
void known_release(struct known *k);

enum known_look {
	KNOWN_UNCHANGED,         /* nothing to do: queued already, or ignored and not due */
	KNOWN_NEW,               /* never seen: queue it (known_see), a stat can wait for its claim */
	KNOWN_LOOK,              /* stat it and call known_see (known_forget if it is gone) */
};
/* A listing found dir/name with inode ino and type (a DT_* value; 0 and DT_UNKNOWN: the file
 * system does not say). KNOWN_LOOK for another inode or type than listed before at an ignored
 * name, or an ignored name whose re-check is due at now (ms, any monotonic clock). Either way
 * the name counts as seen by the listing. */
enum known_look known_listed(struct known *k, char dir, const char *name, uint64_t ino,
			     unsigned type, int64_t now);
/* inotify says dir/name arrived or was written: KNOWN_UNCHANGED when it is queued already,
 * KNOWN_NEW when never seen, KNOWN_LOOK when ignored (it may have changed). */
enum known_look known_hint(const struct known *k, char dir, const char *name);
/* Notes that dir/name exists as id (NULL: not stat'ed, for a name never seen). Returns true
 * when it should be queued now (never queued, or ignored and changed since); it is then known
 * as queued. An ignored name found unchanged at its re-check is re-checked later, backing off;
 * found unchanged before its re-check was due (a hint), it keeps its schedule. */
bool known_see(struct known *k, char dir, const char *name, const struct file_id *id, int64_t now);
/* dir/name, as it was when listed (id), is not a job: not queued again until it changes. */
void known_ignore(struct known *k, char dir, const char *name, const struct file_id *id,
		  int64_t now);
/* dir/name (deferred/, as id) waits until its mtime: not queued, and not stat'ed again by a
 * listing that shows the same inode and type (known_listed says KNOWN_UNCHANGED). */
void known_wait(struct known *k, char dir, const char *name, const struct file_id *id);
/* The file a waiting name was last stat'ed as, or NULL when it does not wait. */
const struct file_id *known_waiting(const struct known *k, char dir, const char *name);
/* dir/name is gone, claimed, or to be looked at afresh by the next listing. */
void known_forget(struct known *k, char dir, const char *name);
bool known_has(const struct known *k, char dir, const char *name);
size_t known_count(const struct known *k);

/* A full listing of dir: known_begin, then known_listed (or known_see) for every entry, then
 * known_sweep, which forgets the names of dir the listing did not see and returns how many.
 * Listings of different directories may overlap. */
void known_begin(struct known *k, char dir);
size_t known_sweep(struct known *k, char dir);

#endif
