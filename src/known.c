/* known.c - the names dispatch has looked at: an open-addressing table of "D/NAME" keys, each
 * with what the listing said of it (inode, type), whether it is queued or ignored (and then the
 * identity of the file ignored and when to look at it again), and the listing that last saw it.
 * Allocation failure aborts (xmalloc); nothing here fails otherwise. */
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "known.h"
#include "util.h"
#include "banned.h"

enum entry_state {
	FRESH,                   /* listed, not yet stat'ed */
	QUEUED,                  /* pending: read when it is claimed */
	IGNORED,                 /* not a job as it is (id): stat'ed again at recheck_at */
	WAITING,                 /* deferred/ until its mtime (id) */
};

struct known_entry {
	struct file_id id;       /* an ignored or waiting entry's file, as last stat'ed */
	uint64_t listed_ino;     /* d_ino as listed (0: not said) */
	uint8_t listed_type;     /* d_type as listed (DT_UNKNOWN: not said) */
	uint8_t state;
	uint32_t seen;           /* the listing that last saw it */
	int64_t recheck_at;      /* IGNORED: when to stat it again */
	int64_t backoff_ms;      /* IGNORED: the wait before the next re-check after that */
	char key[];              /* "D/NAME" */
};

static struct known_entry tombstone;

static bool same_file(const struct file_id *a, const struct file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns && a->nlink == b->nlink &&
	       a->mode == b->mode;
}

void known_init(struct known *k)
{
	*k = (struct known){ .cap = 64 };
	k->slots = xcalloc(k->cap, sizeof(*k->slots));
}

void known_release(struct known *k)
{
	for (size_t i = 0; i < k->cap; i++)
		if (k->slots[i] != &tombstone)
			free(k->slots[i]);
	free(k->slots);
	*k = (struct known){ 0 };
}

static size_t find(const struct known *k, const char *key, bool *found)
{
	size_t mask = k->cap - 1, i = (size_t)str_hash(key) & mask, first_free = SIZE_MAX;
	for (;; i = (i + 1) & mask) {
		struct known_entry *e = k->slots[i];
		if (!e) {
			*found = false;
			return first_free != SIZE_MAX ? first_free : i;
		}
		if (e == &tombstone) {
			if (first_free == SIZE_MAX)
				first_free = i;
		} else if (!strcmp(e->key, key)) {
			*found = true;
			return i;
		}
	}
}

/* Rehashes into a table sized for what is left: it shrinks as well as grows. */
static void resize(struct known *k)
{
	struct known_entry **old = k->slots;
	size_t old_cap = k->cap;
	k->cap = 64;
	while (k->cap < k->count * 4)
		k->cap *= 2;
	k->slots = xcalloc(k->cap, sizeof(*k->slots));
	k->tombstones = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i] && old[i] != &tombstone) {
			bool found;
			k->slots[find(k, old[i]->key, &found)] = old[i];
		}
	}
	free(old);
}

/* "D/NAME" in key, which has room for name and 3 bytes more. */
static void make_key(char *key, char dir, const char *name, size_t len)
{
	key[0] = dir;
	key[1] = '/';
	memcpy(key + 2, name, len + 1);
}

/* Names come from getdents and inotify: a path component, at most NAME_MAX bytes. */
static size_t find_name(const struct known *k, char dir, const char *name, bool *found)
{
	char key[NAME_MAX + 3];
	size_t len = strlen(name);
	if (len > NAME_MAX)
		abort();   /* not a directory entry's name: a caller's bug */
	make_key(key, dir, name, len);
	return find(k, key, found);
}

static struct known_entry *lookup(const struct known *k, char dir, const char *name)
{
	bool found;
	size_t i = find_name(k, dir, name, &found);
	return found ? k->slots[i] : NULL;
}

/* The generation of dir's listing in progress (or last). */
static uint32_t *listing_of(struct known *k, char dir)
{
	int i = 0;
	while (i < KNOWN_MAX_DIRS && k->dirs[i] && k->dirs[i] != dir)
		i++;
	if (i == KNOWN_MAX_DIRS)
		abort();   /* a caller with more directories than the table was made for */
	k->dirs[i] = dir;
	return &k->listing[i];
}

static struct known_entry *insert(struct known *k, char dir, const char *name)
{
	if ((k->count + k->tombstones + 1) * 2 > k->cap)
		resize(k);
	bool found;
	size_t i = find_name(k, dir, name, &found);
	if (!found) {
		size_t len = strlen(name);
		struct known_entry *e = xcalloc(1, sizeof(*e) + len + 3);
		make_key(e->key, dir, name, len);
		e->seen = *listing_of(k, dir);
		if (k->slots[i] == &tombstone)
			k->tombstones--;
		k->slots[i] = e;
		k->count++;
	}
	return k->slots[i];
}

static void remove_at(struct known *k, size_t i)
{
	free(k->slots[i]);
	k->slots[i] = &tombstone;
	k->count--;
	k->tombstones++;
}

/* Compares what two listings said, where both said something. */
static bool listed_differs(uint64_t a, uint64_t b)
{
	return a && b && a != b;
}

enum known_look known_listed(struct known *k, char dir, const char *name, uint64_t ino,
			     unsigned type, int64_t now)
{
	struct known_entry *e = lookup(k, dir, name);
	if (!e) {
		e = insert(k, dir, name);
		e->state = FRESH;
		e->listed_ino = ino;
		e->listed_type = (uint8_t)type;
		return KNOWN_NEW;
	}
	e->seen = *listing_of(k, dir);
	bool moved = listed_differs(e->listed_ino, ino) ||
		     listed_differs(e->listed_type == DT_UNKNOWN ? 0 : e->listed_type,
				    type == DT_UNKNOWN ? 0 : type);
	if (ino)
		e->listed_ino = ino;
	if (type != DT_UNKNOWN)
		e->listed_type = (uint8_t)type;
	switch (e->state) {
	case QUEUED:
		return KNOWN_UNCHANGED;   /* whatever is there now is read when it is claimed */
	case IGNORED:
		return moved || now >= e->recheck_at ? KNOWN_LOOK : KNOWN_UNCHANGED;
	case WAITING:
		return moved ? KNOWN_LOOK : KNOWN_UNCHANGED;
	default:
		return KNOWN_NEW;
	}
}

enum known_look known_hint(const struct known *k, char dir, const char *name)
{
	const struct known_entry *e = lookup(k, dir, name);
	return !e || e->state == FRESH ? KNOWN_NEW : e->state == QUEUED ? KNOWN_UNCHANGED : KNOWN_LOOK;
}

bool known_see(struct known *k, char dir, const char *name, const struct file_id *id, int64_t now)
{
	struct known_entry *e = lookup(k, dir, name);
	if (!e)
		e = insert(k, dir, name);
	e->seen = *listing_of(k, dir);
	if (e->state == QUEUED || (e->state == IGNORED && !id))
		return false;   /* an ignored name is queued again only on evidence that it changed */
	if (e->state == IGNORED && same_file(&e->id, id)) {
		if (now < e->recheck_at)
			return false;   /* an early look (a hint): the schedule stays as it was */
		e->recheck_at = now + e->backoff_ms;
		e->backoff_ms = e->backoff_ms * 2 < KNOWN_RECHECK_MAX_MS ? e->backoff_ms * 2
			      : KNOWN_RECHECK_MAX_MS;
		return false;
	}
	e->state = QUEUED;
	return true;
}

void known_ignore(struct known *k, char dir, const char *name, const struct file_id *id,
		  int64_t now)
{
	struct known_entry *e = insert(k, dir, name);
	e->state = IGNORED;
	e->id = *id;
	e->seen = *listing_of(k, dir);
	e->recheck_at = now + KNOWN_RECHECK_MIN_MS;
	e->backoff_ms = 2 * KNOWN_RECHECK_MIN_MS;
}

void known_wait(struct known *k, char dir, const char *name, const struct file_id *id)
{
	struct known_entry *e = insert(k, dir, name);
	e->state = WAITING;
	e->id = *id;
	e->seen = *listing_of(k, dir);
}

const struct file_id *known_waiting(const struct known *k, char dir, const char *name)
{
	const struct known_entry *e = lookup(k, dir, name);
	return e && e->state == WAITING ? &e->id : NULL;
}

void known_forget(struct known *k, char dir, const char *name)
{
	bool found;
	size_t i = find_name(k, dir, name, &found);
	if (found)
		remove_at(k, i);
}

bool known_has(const struct known *k, char dir, const char *name)
{
	return lookup(k, dir, name) != NULL;
}

size_t known_count(const struct known *k)
{
	return k->count;
}

void known_begin(struct known *k, char dir)
{
	*listing_of(k, dir) = ++k->generation;
}

size_t known_sweep(struct known *k, char dir)
{
	size_t forgotten = 0;
	uint32_t listing = *listing_of(k, dir);
	for (size_t i = 0; i < k->cap; i++) {
		struct known_entry *e = k->slots[i];
		if (e && e != &tombstone && e->key[0] == dir && e->seen != listing) {
			remove_at(k, i);
			forgotten++;
		}
	}
	if (forgotten && k->count * 8 < k->cap && k->cap > 64)
		resize(k);
	return forgotten;
}
