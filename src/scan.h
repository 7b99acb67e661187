/* scan.h - a listing of new/ (or deferred/) against the names the daemon knows, a slice at a
 * time.
 *
 * Each name comes with its inode and type from getdents; known.h decides which need a stat (a
 * name never seen, another file at a known name, an ignored entry due for a re-check). So a
 * rescan that finds nothing new stats nothing, whatever the backlog. A listing that does not fit
 * in one slice goes on in the next (scan_step), so neither the loop nor the first claims after
 * start-up wait for a whole large directory. */
#ifndef SCAN_H
#define SCAN_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>

#include "known.h"
#include "spool.h"

struct scan {
	struct spool *sp;
	struct known *known;
	enum spool_dir dir;
	char key;                /* dir's prefix in the known set */
	DIR *listing;            /* the listing in progress, or NULL */
	bool again;              /* asked for while one was in progress: another one after it */
	long entries;            /* names seen by the listing in progress (or the last one) */
	long stats;              /* and the stat calls it made */
	long listings;           /* listings finished */
};

/* A name to queue, as stat'ed (lstat: never followed); id is NULL for a regular file never
 * seen before, which is not stat'ed: its mtime only matters once it has to wait its turn. */
typedef void scan_found_fn(void *arg, enum spool_dir dir, const char *name,
			   const struct file_id *id);

void scan_init(struct scan *s, struct spool *sp, struct known *k, enum spool_dir dir, char key);
void scan_release(struct scan *s);
/* Begins a listing; while one is in progress, asks for another once it ends (a name that
 * arrived meanwhile may sit where the listing has already read). */
void scan_start(struct scan *s);
bool scan_busy(const struct scan *s);
/* Lists for about budget_ms (now_ms: mono_ms, the clock of the budget and of known.h's
 * re-checks): each name to queue goes to found. Returns true when the listing ended; the caller
 * then sweeps the names it did not see (known_sweep) and calls scan_step again if
 * scan_busy() says another listing was asked for. */
bool scan_step(struct scan *s, int64_t budget_ms, int64_t (*now_ms)(void), scan_found_fn *found,
	       void *arg);

#endif
