/* scan.c - listing new/ or deferred/ against the known names, a slice at a time.
 *
 * A name that vanishes between getdents and its stat was taken by someone else: it is
 * forgotten. A directory that cannot be read is logged and the listing ends without a sweep,
 * so nothing known is forgotten for it. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "scan.h"
#include "banned.h"

/* Names between two looks at the clock: a slice overruns its budget by at most this many. */
#define SCAN_CLOCK_EVERY 64

void scan_init(struct scan *s, struct spool *sp, struct known *k, enum spool_dir dir, char key)
{
	*s = (struct scan){ .sp = sp, .known = k, .dir = dir, .key = key };
}

void scan_release(struct scan *s)
{
	if (s->listing)
		closedir(s->listing);
	s->listing = NULL;
}

bool scan_busy(const struct scan *s)
{
	return s->listing || s->again;
}

void scan_start(struct scan *s)
{
	if (s->listing) {
		s->again = true;
		return;
	}
	s->again = false;
	s->listing = spool_opendir(s->sp, s->dir);
	if (!s->listing)
		return;
	s->entries = 0;
	s->stats = 0;
	known_begin(s->known, s->key);
}

static void look(struct scan *s, const struct dirent *de, int64_t now, scan_found_fn *found,
		 void *arg)
{
	s->entries++;
	enum known_look look = known_listed(s->known, s->key, de->d_name, de->d_ino, de->d_type, now);
	if (look == KNOWN_UNCHANGED)
		return;
	if (look == KNOWN_NEW && de->d_type == DT_REG) {
		found(arg, s->dir, de->d_name, NULL);   /* its stat waits until its place matters */
		return;
	}
	struct stat st;
	s->stats++;
	if (fstatat(s->sp->fd[s->dir], de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		known_forget(s->known, s->key, de->d_name);
		return;
	}
	struct file_id id;
	spool_file_id(&id, &st);
	found(arg, s->dir, de->d_name, &id);
}

bool scan_step(struct scan *s, int64_t budget_ms, int64_t (*now_ms)(void), scan_found_fn *found,
	       void *arg)
{
	if (!s->listing && s->again)
		scan_start(s);
	if (!s->listing)
		return false;
	int64_t now = now_ms(), end = now + budget_ms;
	for (int n = 1;; n++) {
		errno = 0;
		struct dirent *de = readdir(s->listing);
		if (!de) {
			int err = errno;
			closedir(s->listing);
			s->listing = NULL;
			if (err) {
				error("cannot read '%s/%s': %s", s->sp->path, spool_dir_name(s->dir),
				      strerror(err));
				return false;
			}
			s->listings++;
			return true;
		}
		if (de->d_name[0] != '.')
			look(s, de, now, found, arg);
		if (n % SCAN_CLOCK_EVERY == 0 && (now = now_ms()) >= end)
			return false;
	}
}
