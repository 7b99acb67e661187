/* sidecar.c - the files kept beside a job in running/ while it is ours: the response of the call
 * in flight (.partial), a complete one (.response.STATUS), and for a routed job the call's target
 * (.target). Each starts with a header naming the job and the attempt, so a restart never takes
 * another job's file, or an attempt already recorded, for this one's.
 *
 * Sidecars are read as hostile: a file that is not ours for this job is ignored, with a log. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attempt.h"
#include "dispatch_impl.h"
#include "log.h"
#include "provider_state.h"
#include "sidecar.h"
#include "task.h"
#include "banned.h"

/* running/.ID@HOST.partial exists while a call may be in flight or its outcome is not yet
 * recorded; running/.ID@HOST.response.STATUS holds a complete response; for a routed job,
 * running/.ID@HOST.target names the call's provider/model. They are removed once the job has
 * left running/ with its records. */
char *sidecar_name(const struct task *t, const char *suffix)
{
	return xasprintf(".%s@%s.%s", t->id, t->d->spool->host_id, suffix);
}

static const struct {
	const char *suffix;
	bool then_more;   /* a prefix: a status, an attempt, ... follows */
	enum sidecar_kind kind;
} suffixes[] = {
	{ "partial", false, SIDECAR_KIND_CALL },
	{ "target", false, SIDECAR_KIND_CALL },
	{ "response.", true, SIDECAR_KIND_CALL },
	{ "left.", true, SIDECAR_KIND_CALL },
	{ "answered.", true, SIDECAR_KIND_CALL },
	{ "reclaim.", true, SIDECAR_KIND_CALL },
	{ "done", false, SIDECAR_KIND_STAGING },
	{ "failed", false, SIDECAR_KIND_STAGING },
	{ "putback.", true, SIDECAR_KIND_PUTBACK },
};

enum sidecar_kind sidecar_suffix_kind(const char *suffix)
{
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
		if (suffixes[i].then_more ? !strncmp(suffix, suffixes[i].suffix,
						     strlen(suffixes[i].suffix))
					  : !strcmp(suffix, suffixes[i].suffix))
			return suffixes[i].kind;
	return SIDECAR_KIND_NONE;
}

bool sidecar_is_ours(const struct dispatch *d, const struct stat *st)
{
	return !sidecar_not_ours_why(d, st, NULL, 0);
}

const char *sidecar_not_ours_why(const struct dispatch *d, const struct stat *st, char *why,
				 size_t size)
{
	if (!S_ISREG(st->st_mode))
		return "not a regular file";
	if (st->st_nlink != 1) {
		if (why)
			xsnprintf(why, size, "%ju links, not one", (uintmax_t)st->st_nlink);
		return why ? why : "more than one link";
	}
	if (!dispatch_written_by_daemon(d, st)) {
		if (why)
			xsnprintf(why, size, "owned by uid %ju, not the daemon's user",
				  (uintmax_t)st->st_uid);
		return why ? why : "not the daemon's user's";
	}
	return NULL;
}

char *sidecar_putback_name(const struct task *t, enum spool_dir from, uint64_t ino)
{
	return xasprintf(".%s@%s.putback.%c.%" PRIx64, t->id, t->d->spool->host_id,
			 from == SPOOL_DEFERRED ? 'd' : 'n', ino);
}

bool sidecar_putback_parse(const char *name, const char *host, char *id, enum spool_dir *from,
			   uint64_t *ino)
{
	const char *at = strchr(name, '@');
	size_t hlen = strlen(host);
	if (name[0] != '.' || !at || (size_t)(at - name - 1) > JOB_ID_MAX ||
	    strncmp(at + 1, host, hlen) || strncmp(at + 1 + hlen, ".putback.", 9))
		return false;
	const char *dir = at + 1 + hlen + 9, *hex = dir + 2;
	size_t nhex = strspn(hex, "0123456789abcdef");
	if ((dir[0] != 'n' && dir[0] != 'd') || dir[1] != '.' || !nhex || nhex > 16 || hex[nhex])
		return false;
	char part[JOB_ID_MAX + 1];
	xsnprintf(part, sizeof(part), "%.*s", (int)(at - name - 1), name + 1);
	if (job_id_from_name(part, id, JOB_ID_MAX + 1) < 0 || strcmp(id, part))
		return false;
	*from = dir[0] == 'd' ? SPOOL_DEFERRED : SPOOL_NEW;
	*ino = strtoull(hex, NULL, 16);
	return true;
}

bool sidecar_putback_parse_any(const char *name, char *host, char *id, enum spool_dir *from,
			       uint64_t *ino)
{
	const char *at = strchr(name, '@');
	/* A host id may hold ".putback." itself: each place it may end is tried. */
	for (const char *end = at ? strstr(at, ".putback.") : NULL; end; end = strstr(end + 1, ".putback.")) {
		if (end == at + 1 || (size_t)(end - at - 1) > NAME_MAX)
			continue;
		xsnprintf(host, NAME_MAX + 1, "%.*s", (int)(end - at - 1), at + 1);
		if (sidecar_putback_parse(name, host, id, from, ino))
			return true;
	}
	return false;
}

/* The target of a routed job's call, kept beside it before the call starts, so that a restart
 * reads a saved response in the right dialect and books an interrupted call to the right
 * target. Not fsynced: like .partial, it only has to survive the process. */
void sidecar_write_target(struct task *t)
{
	char *name = sidecar_name(t, "target");
	int fd = openat(t->d->spool->fd[SPOOL_RUNNING], name,
			O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		t->sidecars |= SIDECAR_TARGET;
		char *text = xasprintf("%s/%s\n", provider_state_name(t->prov), t->model);
		if (write_all(fd, text, strlen(text)) < 0)
			log_job(LOG_WARN, t->id, "cannot note the call's target: %s", strerror(errno));
		free(text);
		close(fd);
	}
	free(name);
}

/* "provider/model" from .ID@HOST.target (caller frees), NULL if there is none. */
char *sidecar_read_target(struct task *t)
{
	struct buf b;
	struct stat st;
	char *name = sidecar_name(t, "target");
	buf_init(&b, 512);
	enum spool_read rr = spool_read_file(t->d->spool->fd[SPOOL_RUNNING], name, 512, &b, &st);
	char *text = rr == SPOOL_READ_OK ? xstrndup(b.data, strcspn(b.data, "\n")) : NULL;
	buf_release(&b);
	free(name);
	return text;
}

/* Removes the sidecars t has; what a crash leaves behind, a restart removes (adopt, recover). */
void sidecar_drop(struct task *t)
{
	sidecar_unlink(t);
	t->sidecars = 0;
}

void sidecar_unlink(const struct task *t)
{
	int fd = t->d->spool->fd[SPOOL_RUNNING];
	bool unknown = t->sidecars & SIDECARS_UNKNOWN;
	if (unknown || (t->sidecars & SIDECAR_PARTIAL)) {
		char *partial = sidecar_name(t, "partial");
		unlinkat(fd, partial, 0);
		free(partial);
	}
	if ((unknown && t->routed) || (t->sidecars & SIDECAR_TARGET)) {
		char *target = sidecar_name(t, "target");
		unlinkat(fd, target, 0);
		free(target);
	}
	if ((t->sidecars & SIDECAR_RESPONSE) || (unknown && (t->res.status || t->res.transport == HTTP_DONE))) {
		char suffix[32];
		xsnprintf(suffix, sizeof(suffix), "response.%ld", t->res.status);
		char *response = sidecar_name(t, suffix);
		unlinkat(fd, response, 0);
		free(response);
	}
	if (t->answered_mark)
		unlinkat(fd, t->answered_mark, 0);
}

/* Our sidecars start with a line naming the job and the attempt (1-based, in this run) whose
 * response they hold. A restart then knows whether the records already account for that
 * response (a kill after the records were written but before the job moved on), and never takes
 * another job's file for this one's. */
#define SIDECAR_MAGIC "imgspool-sidecar"

size_t sidecar_write_header(struct task *t, int fd)
{
	char header[JOB_ID_MAX + 64];
	int n = xsnprintf(header, sizeof(header), SIDECAR_MAGIC " id=%s attempt=%zu\n", t->id,
			  attempt_count(t) + 1);
	return n > 0 && (size_t)n < sizeof(header) && write_all(fd, header, (size_t)n) == 0 ? (size_t)n : 0;
}

/* The attempt number in a sidecar's first bytes, 0 when they are not our header for this job;
 * *body_at gets where the response starts. */
static long sidecar_attempt(const struct task *t, const char *data, size_t len, size_t *body_at)
{
	char want[JOB_ID_MAX + 32];
	xsnprintf(want, sizeof(want), SIDECAR_MAGIC " id=%s attempt=", t->id);
	size_t wlen = strlen(want);
	const char *nl = memchr(data, '\n', len < 256 ? len : 256);
	if (!nl || (size_t)(nl - data) <= wlen || memcmp(data, want, wlen))
		return 0;
	char num[24];
	if ((size_t)(nl - data) - wlen >= sizeof(num))
		return 0;
	xsnprintf(num, sizeof(num), "%.*s", (int)((size_t)(nl - data) - wlen), data + wlen);
	long attempt;
	if (parse_long(num, 1, 1000000, &attempt) < 0)
		return 0;
	*body_at = (size_t)(nl - data) + 1;
	return attempt;
}

/* The status of the response sidecar kept for t (so sidecar_drop removes it), 0 if none. */
long sidecar_saved_status(const struct task *t, const struct strset *hidden)
{
	char prefix[JOB_ID_MAX + 100];
	long status;
	xsnprintf(prefix, sizeof(prefix), ".%s@%s.response.", t->id, t->d->spool->host_id);
	for (size_t i = 0; i < hidden->cap; i++) {
		const char *name = hidden->slots[i];
		if (name && !strncmp(name, prefix, strlen(prefix)) &&
		    parse_long(name + strlen(prefix), 100, 999, &status) == 0)
			return status;
	}
	return 0;
}

/* Reads one of our sidecars as hostile: written by the daemon's user, one link, and our header
 * for this job. Returns the attempt it belongs to (0: not ours, ignored) and, when body is not
 * NULL, the response after the header. */
long sidecar_read(struct task *t, const char *name, struct buf *body, struct stat *st)
{
	struct dispatch *d = t->d;
	size_t cap = body ? (size_t)d->cfg->max_response_mb << 20 : 0;
	struct buf head;
	struct buf *b = body ? body : &head;
	size_t at = 0;
	long attempt = 0;
	buf_init(b, cap + 512);
	int fd = openat(d->spool->fd[SPOOL_RUNNING], name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, st) == 0 && sidecar_is_ours(d, st)) {
		char chunk[65536];
		ssize_t n;
		while ((n = read(fd, chunk, body ? sizeof(chunk) : 512)) > 0)
			if (buf_append(b, chunk, (size_t)n) < 0 || !body)
				break;
		if ((n >= 0 || !body) && b->data)
			attempt = sidecar_attempt(t, b->data, b->len, &at);
	}
	if (fd >= 0)
		close(fd);
	if (!attempt)
		log_job(LOG_WARN, t->id, "ignoring 'running/%s': not a file the daemon saved for this job",
			name);
	if (body && attempt) {
		memmove(b->data, b->data + at, b->len - at);
		b->len -= at;
		b->data[b->len] = '\0';
	}
	if (!body)
		buf_release(&head);
	return attempt;
}


/* A job a shutdown leaves in running/ on purpose (its paid response saved; its images still to
 * fetch, store or publish, or a helper still writing its publication at the exit) gets an empty
 * running/.ID@HOST.left.N, N the attempt of that response: its restart, or the host that
 * reclaims it, counts no death for it (recovery.c). Empty, so a full disk (a publication
 * waiting for room) still takes it. A response not saved gets no mark: the job is left as a
 * crash would leave it, and counted so. Only noted here: sidecar_left_marks_make makes them at the
 * exit, off the loop (a stalled disk must not hold the loop, nor the exit, for good). */
void sidecar_mark_left(struct task *t)
{
	bool saved = ((t->sidecars & SIDECAR_RESPONSE) && !t->save_err) ||
		     ((t->sidecars & SIDECARS_UNKNOWN) && t->res.status);
	/* committed: not in running/ (a helper may be setting it: then a mark too many, which the
	 * restart drops with the job's other sidecars once the job is out of running/) */
	if (!saved || t->fenced || (!t->in_pool && t->publish_committed))
		return;
	struct dispatch *d = t->d;
	char suffix[32];
	xsnprintf(suffix, sizeof(suffix), "left.%zu", attempt_count(t));
	d->left_marks = xrealloc(d->left_marks, (d->n_left_marks + 1) * sizeof(*d->left_marks));
	d->left_marks[d->n_left_marks++] = sidecar_name(t, suffix);
}

/* A job a helper still holds at the exit whose call's whole answer had arrived (being saved or
 * judged, or, lost at the cut, being billed or failed): an empty
 * running/.ID@HOST.answered.N.STATUS.BYTES tells the restart that the answer of attempt N came
 * (billed by its status) and how long its body is, so its .partial is finished from when whole,
 * else recorded as that answer, lost (recovery.c), never as a call cut in flight and paid
 * again. Noted here, made with the .left marks off the loop: nothing on an ordinary job's path. */
void sidecar_mark_answered(struct task *t)
{
	/* Saved under its final name (only the parse renames it: not while T_PARSING, which its
	 * helper may be doing now): the restart finishes from that file. */
	if (!t->answer_attempt || t->fenced ||
	    (t->state != T_PARSING && (t->sidecars & SIDECAR_RESPONSE) && !t->save_err))
		return;
	struct dispatch *d = t->d;
	char suffix[96];
	xsnprintf(suffix, sizeof(suffix), "answered.%zu.%ld.%zu", t->answer_attempt, t->answer_status,
		  t->answer_len);
	d->left_marks = xrealloc(d->left_marks, (d->n_left_marks + 1) * sizeof(*d->left_marks));
	d->left_marks[d->n_left_marks++] = sidecar_name(t, suffix);
}

/* The mark sidecar_mark_answered left for t (the highest attempt of the ours), kept in
 * t->answered_mark till the job leaves running/; out->attempt 0 when there is none. */
void sidecar_find_answered(struct task *t, const struct strset *hidden, struct sidecar_answered *out)
{
	int fd = t->d->spool->fd[SPOOL_RUNNING];
	char *prefix = sidecar_name(t, "answered.");
	size_t plen = strlen(prefix);
	*out = (struct sidecar_answered){ 0 };
	for (size_t i = 0; i < hidden->cap; i++) {
		const char *name = hidden->slots[i];
		char text[64], *status, *bytes;
		long attempt, code, len;
		struct stat st;
		if (!name || strncmp(name, prefix, plen) || strlen(name + plen) >= sizeof(text))
			continue;
		xsnprintf(text, sizeof(text), "%s", name + plen);
		status = strchr(text, '.');
		bytes = status ? strchr(status + 1, '.') : NULL;
		if (!bytes)
			continue;
		*status++ = '\0';
		*bytes++ = '\0';
		if (parse_long(text, 1, 1000000, &attempt) < 0 || parse_long(status, 100, 999, &code) < 0 ||
		    parse_long(bytes, 0, LONG_MAX, &len) < 0 || attempt <= out->attempt)
			continue;
		if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !sidecar_is_ours(t->d, &st)) {
			log_job(LOG_WARN, t->id, "ignoring 'running/%s': not a mark the daemon left for "
				"this job", name);
			continue;
		}
		*out = (struct sidecar_answered){ .attempt = attempt, .status = code, .len = (size_t)len };
		free(t->answered_mark);
		t->answered_mark = xstrdup(name);
	}
	free(prefix);
}

/* With t's answered mark m found: its .partial of that attempt, if its body is whole, is saved
 * as the parse saves one (synced, renamed .response.STATUS, running/ synced; hidden follows),
 * and the mark goes. True if so: the job is finished from that file, with no call. */
bool sidecar_save_answered(struct task *t, struct strset *hidden, const struct sidecar_answered *m)
{
	int dirfd = t->d->spool->fd[SPOOL_RUNNING];
	char *partial = sidecar_name(t, "partial");
	struct stat st;
	char header[JOB_ID_MAX + 64];
	int hlen = snprintf(header, sizeof(header), SIDECAR_MAGIC " id=%s attempt=%ld\n", t->id,
			    m->attempt);
	bool whole = strset_has(hidden, partial) && sidecar_read(t, partial, NULL, &st) == m->attempt &&
		     hlen > 0 && st.st_size == (off_t)((size_t)hlen + m->len);
	bool saved = false;
	if (whole) {
		char suffix[32];
		xsnprintf(suffix, sizeof(suffix), "response.%ld", m->status);
		char *response = sidecar_name(t, suffix);
		int fd = openat(dirfd, partial, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		saved = fd >= 0 && fsync(fd) == 0 && renameat(dirfd, partial, dirfd, response) == 0 &&
			fsync(dirfd) == 0;
		if (fd >= 0)
			close(fd);
		if (saved) {
			strset_del(hidden, partial);
			strset_add(hidden, response);
			unlinkat(dirfd, t->answered_mark, 0);
			free(t->answered_mark);
			t->answered_mark = NULL;
		} else {
			log_job(LOG_WARN, t->id, "cannot save 'running/%s' as its response: %s", partial,
				strerror(errno));
		}
		free(response);
	}
	free(partial);
	return saved;
}

struct left_marks {
	int dirfd;               /* running/'s, borrowed: kept open while this thread may run */
	char **names;            /* owned, as the array */
	size_t n;
};

struct left_marks *sidecar_left_marks_take(struct dispatch *d, size_t *n)
{
	*n = d->n_left_marks;
	if (!d->n_left_marks)
		return NULL;
	struct left_marks *m = xmalloc(sizeof(*m));
	*m = (struct left_marks){ .dirfd = d->spool->fd[SPOOL_RUNNING], .names = d->left_marks,
				  .n = d->n_left_marks };
	d->left_marks = NULL;
	d->n_left_marks = 0;
	return m;
}

void sidecar_left_marks_make(struct left_marks *m)
{
	bool made = false;
	if (!m)
		return;
	stop_point("sidecar:left");   /* a test holds the thread here: a stalled disk */
	for (size_t i = 0; i < m->n; i++) {
		int fd = openat(m->dirfd, m->names[i], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
				O_CLOEXEC, 0600);
		if (fd >= 0 || errno == EEXIST)
			made = true;
		else
			log_warn("cannot make 'running/%s': %s: its job's restart counts a death for it",
				 m->names[i], strerror(errno));
		if (fd >= 0)
			close(fd);
		free(m->names[i]);
	}
	/* Their names durable with running/ (they hold no bytes). */
	if (made && fsync(m->dirfd) < 0)
		log_warn("cannot sync running/ for the jobs left there: %s (after a power cut their "
			 "restart may count a death for them)", strerror(errno));
	free(m->names);
	free(m);
}

/* Every mark of t's is removed before anything is done with the job, so a death while it is
 * finished counts. One is believed only if it is ours, as every sidecar (a regular file, one
 * link, the daemon's user), and only once: if it cannot be removed, it is not. No sync: only a
 * power cut could bring a removed mark back, and a power cut is no death of the job's making. */
long sidecar_take_left(struct task *t, const struct strset *hidden)
{
	int fd = t->d->spool->fd[SPOOL_RUNNING];
	char *prefix = sidecar_name(t, "left.");
	size_t plen = strlen(prefix);
	long mark = 0;
	for (size_t i = 0; i < hidden->cap; i++) {
		const char *name = hidden->slots[i];
		struct stat st;
		long attempt;
		if (!name || strncmp(name, prefix, plen) ||
		    parse_long(name + plen, 1, 1000000, &attempt) < 0)
			continue;
		bool ours = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && sidecar_is_ours(t->d, &st);
		if (unlinkat(fd, name, 0) < 0)
			log_job(LOG_WARN, t->id, "ignoring 'running/%s': cannot remove it: %s", name,
				strerror(errno));
		else if (!ours)
			log_job(LOG_WARN, t->id, "ignoring 'running/%s': not a mark the daemon left for "
				"this job", name);
		else
			mark = attempt;
	}
	free(prefix);
	return mark;
}
