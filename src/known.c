/* known.c - the names dispatch has looked at: an open-addressing table of "D/NAME" keys, each
 * with the identity of the file last seen there, whether it was ignored, and the listing that
 * last saw it. Allocation failure aborts (xmalloc); nothing here fails otherwise. */
#include <stdlib.h>
#include <string.h>

#include "known.h"
#include "util.h"
#include "banned.h"

struct known_entry {
	struct file_id id;
	bool ignored;
	uint32_t seen;           /* the listing that last saw it */
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

static char *make_key(char dir, const char *name)
{
	return xasprintf("%c/%s", dir, name);
}

static struct known_entry *lookup(const struct known *k, char dir, const char *name)
{
	char *key = make_key(dir, name);
	bool found;
	size_t i = find(k, key, &found);
	free(key);
	return found ? k->slots[i] : NULL;
}

static struct known_entry *insert(struct known *k, char dir, const char *name)
{
	if ((k->count + k->tombstones + 1) * 2 > k->cap)
		resize(k);
	char *key = make_key(dir, name);
	bool found;
	size_t i = find(k, key, &found);
	if (!found) {
		size_t len = strlen(key);
		struct known_entry *e = xcalloc(1, sizeof(*e) + len + 1);
		memcpy(e->key, key, len + 1);
		if (k->slots[i] == &tombstone)
			k->tombstones--;
		k->slots[i] = e;
		k->count++;
	}
	free(key);
	return k->slots[i];
}

static void remove_at(struct known *k, size_t i)
{
	free(k->slots[i]);
	k->slots[i] = &tombstone;
	k->count--;
	k->tombstones++;
}

bool known_see(struct known *k, char dir, const char *name, const struct file_id *id)
{
	struct known_entry *e = lookup(k, dir, name);
	bool queue = !e || (e->ignored && !same_file(&e->id, id));
	if (!e)
		e = insert(k, dir, name);
	e->seen = k->listing;
	if (queue) {
		e->ignored = false;
		e->id = *id;
	}
	return queue;
}

void known_ignore(struct known *k, char dir, const char *name, const struct file_id *id)
{
	struct known_entry *e = insert(k, dir, name);
	e->ignored = true;
	e->id = *id;
	e->seen = k->listing;
}

void known_forget(struct known *k, char dir, const char *name)
{
	char *key = make_key(dir, name);
	bool found;
	size_t i = find(k, key, &found);
	free(key);
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

void known_begin(struct known *k)
{
	k->listing++;
}

size_t known_sweep(struct known *k, char dir)
{
	size_t forgotten = 0;
	for (size_t i = 0; i < k->cap; i++) {
		struct known_entry *e = k->slots[i];
		if (e && e != &tombstone && e->key[0] == dir && e->seen != k->listing) {
			remove_at(k, i);
			forgotten++;
		}
	}
	if (forgotten && k->count * 8 < k->cap && k->cap > 64)
		resize(k);
	return forgotten;
}
