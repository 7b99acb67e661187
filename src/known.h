/* known.h - the names of new/ and deferred/ the daemon has looked at, and what it decided.
 *
 * A name is queued (pending, at most once) or ignored (not something it can claim: a symlink, a
 * FIFO, a file with two links, an over-size file; logged once). An ignored name is looked at
 * again as soon as its file changes: another inode, size, mtime, ctime or link count (a maildir
 * delivery drops its second link; a job is renamed over a symlink). A full listing of a
 * directory forgets every name it did not see, so the set never outlives the entries. */
#ifndef KNOWN_H
#define KNOWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

struct known_entry;
struct known {
	struct known_entry **slots;
	size_t cap, count, tombstones;
	uint32_t listing;        /* generation of the listing in progress */
};

void known_init(struct known *k);
void known_release(struct known *k);

/* Notes that dir/name exists as id. Returns true when it should be queued now (never seen, or
 * ignored and changed since); it is then known as queued. */
bool known_see(struct known *k, char dir, const char *name, const struct file_id *id);
/* dir/name, as it was when listed (id), is not a job: not queued again until it changes. */
void known_ignore(struct known *k, char dir, const char *name, const struct file_id *id);
/* dir/name is gone, claimed, or to be looked at afresh by the next listing. */
void known_forget(struct known *k, char dir, const char *name);
bool known_has(const struct known *k, char dir, const char *name);
size_t known_count(const struct known *k);

/* A full listing of dir: known_begin, then known_see for every entry, then known_sweep, which
 * forgets the names of dir the listing did not see and returns how many. */
void known_begin(struct known *k);
size_t known_sweep(struct known *k, char dir);

#endif
