/* watch.h - inotify on new/ as a wake-up hint. The directory scan stays the truth: inotify is
 * blind to other hosts' writes on a network file system and drops events when its queue
 * overflows, so on overflow the owner is told to rescan everything. */
#ifndef WATCH_H
#define WATCH_H

struct loop;
struct watch;

/* name is the file that arrived; NULL means "events were lost: rescan". */
typedef void watch_fn(void *arg, const char *name);

/* Watches the directory open as dirfd (path names it, for the messages and where /proc is not
 * mounted). Returns NULL (logged) if inotify is unavailable; the daemon then relies on rescans
 * alone. A directory replaced under its name is watched again by a new watch. */
struct watch *watch_new(struct loop *loop, int dirfd, const char *path, watch_fn *fn, void *arg);
/* The same for any change to a directory's names: arrivals, and removals too (control/). */
struct watch *watch_changes(struct loop *loop, int dirfd, const char *path, watch_fn *fn,
			    void *arg);
void watch_free(struct watch *w);

#endif
