/* watch.c - IN_CLOSE_WRITE and IN_MOVED_TO on new/: a file is announced only once it was
 * closed after writing (a plain cp) or renamed in (the maildir way), never half-written. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "util.h"
#include "watch.h"
#include "banned.h"

struct watch {
	struct loop *loop;
	int fd;
	watch_fn *fn;
	void *arg;
};

static void on_events(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)events;
	struct watch *w = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			break;   /* EAGAIN: drained */
		}
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				w->fn(w->arg, NULL);
			else if (ev->len && ev->name[0] != '.')
				w->fn(w->arg, ev->name);
			p += sizeof(*ev) + ev->len;
		}
		/* Room left for the longest event: the queue was empty, and epoll says when it is
		 * not (no read just to see EAGAIN). */
		if ((size_t)n <= sizeof(buf) - sizeof(struct inotify_event) - NAME_MAX - 1)
			break;
	}
}

static struct watch *watch_mask(struct loop *loop, int dirfd, const char *path, uint32_t mask,
			       watch_fn *fn, void *arg)
{
	struct watch *w = xcalloc(1, sizeof(*w));
	w->loop = loop;
	w->fn = fn;
	w->arg = arg;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		error("inotify is unavailable (%s): relying on rescans", strerror(errno));
		free(w);
		return NULL;
	}
	/* The directory open as dirfd, whatever its path names now (the spool's path may name
	 * another directory since start-up); the path where /proc is not mounted. */
	char proc[64];
	xsnprintf(proc, sizeof(proc), "/proc/self/fd/%d", dirfd);
	bool watched = (dirfd >= 0 && inotify_add_watch(w->fd, proc, mask | IN_ONLYDIR) >= 0) ||
		       inotify_add_watch(w->fd, path, mask | IN_ONLYDIR) >= 0;
	if (!watched || loop_add_fd(loop, w->fd, EPOLLIN, on_events, w) < 0) {
		error("cannot watch '%s' (%s): relying on rescans", path, strerror(errno));
		close(w->fd);
		free(w);
		return NULL;
	}
	return w;
}

struct watch *watch_new(struct loop *loop, int dirfd, const char *path, watch_fn *fn, void *arg)
{
	return watch_mask(loop, dirfd, path, IN_CLOSE_WRITE | IN_MOVED_TO, fn, arg);
}

struct watch *watch_changes(struct loop *loop, int dirfd, const char *path, watch_fn *fn,
			    void *arg)
{
	return watch_mask(loop, dirfd, path, IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE,
			  fn, arg);
}

void watch_free(struct watch *w)
{
	if (!w)
		return;
	loop_del_fd(w->loop, w->fd);
	close(w->fd);
	free(w);
}
