/* control.c - an operator's requests (pause, hold, cancel) as files in control/.
 *
 * The CLI writes them with the spool's temp -> fsync -> rename discipline; every daemon rereads
 * the directory when inotify says it changed and at each rescan, so daemons on other hosts see a
 * request within a poll interval. Names that are not requests are ignored. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "job.h"
#include "log.h"
#include "publish.h"
#include "spool.h"
#include "util.h"
#include "webhook.h"
#include "banned.h"

static const struct {
	enum control_kind kind;
	const char *prefix;
} prefixes[] = {
	{ CONTROL_PAUSE, "pause." },
	{ CONTROL_HOLD, "hold." },
	{ CONTROL_CANCEL, "cancel." },
	{ CONTROL_GONE, "gone." },
};

static bool is_endpoint_key(const char *arg)
{
	size_t n = strspn(arg, "0123456789abcdef");
	return n == WEBHOOK_ENDPOINT_KEY_LEN && !arg[n];
}

static bool valid_arg(enum control_kind kind, const char *arg)
{
	char id[JOB_ID_MAX + 1];
	if (kind == CONTROL_GONE)
		return is_endpoint_key(arg);
	if (kind != CONTROL_PAUSE)
		return job_id_from_name(arg, id, sizeof(id)) == 0 && !strcmp(id, arg);
	return name_is_plain(arg, 64);   /* a provider name, as config.c allows it */
}

enum control_kind control_parse_name(const char *name, const char **arg)
{
	*arg = "";
	if (!strcmp(name, "pause"))
		return CONTROL_PAUSE;
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
		size_t len = strlen(prefixes[i].prefix);
		if (!strncmp(name, prefixes[i].prefix, len) && valid_arg(prefixes[i].kind, name + len)) {
			*arg = name + len;
			return prefixes[i].kind;
		}
	}
	return CONTROL_NONE;
}

char *control_name(enum control_kind kind, const char *arg)
{
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
		if (prefixes[i].kind == kind && arg && *arg)
			return xasprintf("%s%s", prefixes[i].prefix, arg);
	return xstrdup("pause");
}

void control_init(struct control *c)
{
	c->pause_all = false;
	strset_init(&c->paused);
	strset_init(&c->hold);
	strset_init(&c->cancel);
	strset_init(&c->gone);
	c->requests = NULL;
	c->n_requests = 0;
	c->unseen = NULL;
	c->n_unseen = 0;
	c->next_sweep = 0;
	c->reads = 0;
	c->pause_changes = 0;
}

void control_release(struct control *c)
{
	strset_release(&c->paused);
	strset_release(&c->hold);
	strset_release(&c->cancel);
	strset_release(&c->gone);
	for (size_t i = 0; i < c->n_requests; i++)
		free(c->requests[i]);
	free(c->requests);
	for (size_t i = 0; i < c->n_unseen; i++)
		free(c->unseen[i].name);
	free(c->unseen);
}

int control_read(struct control *c, struct spool *sp)
{
	/* The directory held, not what the name names now: spool_recheck_dirs follows a replaced
	 * control/ only when it is the daemon's user's (dirtrust.h), since whoever may write it is
	 * an operator. A client's spool (spool_attach) may lack it: looked up by name then. */
	int fd = sp->fd[SPOOL_CONTROL] >= 0 ?
		 openat(sp->fd[SPOOL_CONTROL], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) :
		 openat(sp->root_fd, spool_dir_name(SPOOL_CONTROL),
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT)
		return -1;
	struct spool_entry *e = NULL;
	long n = fd >= 0 ? spool_list_at(fd, false, false, &e) : 0;
	if (fd >= 0)
		close(fd);
	if (n < 0)
		return -1;
	struct control fresh;
	control_init(&fresh);
	bool pauses_changed = false;
	for (long i = 0; i < n; i++) {
		const char *name = e[i].name, *arg;
		enum control_kind kind = control_parse_name(name, &arg);
		switch (kind) {
		case CONTROL_PAUSE:
			if (*arg && strset_add(&fresh.paused, arg) && !strset_has(&c->paused, arg))
				pauses_changed = true;
			else if (!*arg)
				fresh.pause_all = true;
			break;
		case CONTROL_HOLD:
		case CONTROL_CANCEL:
			fresh.requests = xrealloc(fresh.requests,
						  (fresh.n_requests + 1) * sizeof(*fresh.requests));
			fresh.requests[fresh.n_requests++] = xstrdup(name);
			control_note(&fresh, kind, arg);
			break;
		case CONTROL_GONE:
			control_note(&fresh, kind, arg);
			break;
		case CONTROL_NONE:
			break;
		}
	}
	spool_entries_free(e, n);
	/* The sweep's memory outlives the listing. */
	fresh.unseen = c->unseen;
	fresh.n_unseen = c->n_unseen;
	fresh.next_sweep = c->next_sweep;
	fresh.reads = c->reads + 1;
	pauses_changed |= fresh.pause_all != c->pause_all || fresh.paused.count != c->paused.count;
	fresh.pause_changes = c->pause_changes + pauses_changed;
	c->unseen = NULL;
	c->n_unseen = 0;
	control_release(c);
	*c = fresh;
	return 0;
}

bool control_paused(const struct control *c, const char *provider)
{
	return c->pause_all || (provider && strset_has(&c->paused, provider));
}

/* The set of a job's or an endpoint's requests of kind; NULL for pauses. */
static struct strset *set_of(struct control *c, enum control_kind kind)
{
	switch (kind) {
	case CONTROL_HOLD:
		return &c->hold;
	case CONTROL_CANCEL:
		return &c->cancel;
	case CONTROL_GONE:
		return &c->gone;
	default:
		return NULL;
	}
}

bool control_wants(const struct control *c, enum control_kind kind, const char *id)
{
	const struct strset *set = set_of((struct control *)c, kind);
	return set && strset_has(set, id);
}

bool control_still_wants(struct control *c, struct spool *sp, enum control_kind kind,
			 const char *id)
{
	struct strset *set = set_of(c, kind);
	if (!set || !strset_has(set, id))
		return false;
	if (sp->fd[SPOOL_CONTROL] < 0)
		return true;   /* nothing to confirm with: what was read stands */
	char *name = control_name(kind, id);
	struct stat st;
	bool there = fstatat(sp->fd[SPOOL_CONTROL], name, &st, AT_SYMLINK_NOFOLLOW) == 0 ||
		     errno != ENOENT;
	free(name);
	if (!there)
		strset_del(set, id);
	return there;
}

void control_note(struct control *c, enum control_kind kind, const char *arg)
{
	struct strset *set = set_of(c, kind);
	if (set)
		strset_add(set, arg);
}

static int control_fd(struct spool *sp)
{
	if (sp->fd[SPOOL_CONTROL] >= 0)
		return 0;
	const char *name = spool_dir_name(SPOOL_CONTROL);
	if (mkdirat(sp->root_fd, name, 0777) < 0 && errno != EEXIST)
		return -1;
	sp->fd[SPOOL_CONTROL] = openat(sp->root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return sp->fd[SPOOL_CONTROL] < 0 ? -1 : 0;
}

int control_request(struct spool *sp, enum control_kind kind, const char *arg)
{
	return control_write(sp, kind, arg, "");
}

int control_write(struct spool *sp, enum control_kind kind, const char *arg, const char *text)
{
	if (control_fd(sp) < 0)
		return -1;
	char *name = control_name(kind, arg);
	/* Its directory synced too, the one it went into (a rescan may swap control/ meanwhile). */
	int rc = spool_write_file(sp, SPOOL_CONTROL, name, text, strlen(text));
	free(name);
	return rc;
}

int control_withdraw(struct spool *sp, enum control_kind kind, const char *arg)
{
	if (sp->fd[SPOOL_CONTROL] < 0)
		return 0;
	char *name = control_name(kind, arg);
	int rc = unlinkat(sp->fd[SPOOL_CONTROL], name, 0);
	free(name);
	return rc < 0 && errno != ENOENT ? -1 : 0;
}

long control_withdraw_all(struct control *c, struct spool *sp, enum control_kind kind)
{
	struct strset *set = set_of(c, kind);
	if (set) {
		strset_release(set);
		strset_init(set);
	}
	if (sp->fd[SPOOL_CONTROL] < 0)
		return 0;
	struct spool_entry *e;
	long n = spool_list_at(sp->fd[SPOOL_CONTROL], false, false, &e);
	if (n < 0)
		return -1;
	long removed = 0;
	for (long i = 0; i < n; i++) {
		const char *arg;
		if (control_parse_name(e[i].name, &arg) == kind &&
		    unlinkat(sp->fd[SPOOL_CONTROL], e[i].name, 0) == 0)
			removed++;
	}
	spool_entries_free(e, n);
	return removed;
}

/* ---- requests that outlived their job -------------------------------------------------------- */

enum control_verdict control_judge(enum control_kind kind, enum control_where where,
				   int64_t age_ms, int64_t unseen_ms, int64_t lease_ms)
{
	if (kind != CONTROL_HOLD && kind != CONTROL_CANCEL)
		return CONTROL_KEEP;   /* pauses last until resumed; gone endpoints until enabled */
	if (where == CONTROL_JOB_LIVE || age_ms < lease_ms || unseen_ms < lease_ms)
		return CONTROL_KEEP;
	switch (where) {
	case CONTROL_JOB_HELD:
		/* A hold is fulfilled; a cancel is moot while nothing runs the job, and releasing it
		 * must not start a call only to cut it: imgspool cancel ends a held job. */
	case CONTROL_JOB_FINISHED:
		return CONTROL_CONSUME;
	case CONTROL_JOB_NOWHERE:
		return age_ms >= CONTROL_MAX_AGE_MS ? CONTROL_EXPIRE : CONTROL_KEEP;
	case CONTROL_JOB_LIVE:
		break;
	}
	return CONTROL_KEEP;
}

/* The ids of every job in running/, any host's: "ID@HOST.json", a publication's staging
 * directory ".ID@HOST.done" or ".ID@HOST.failed" (the job file is inside), and the jobs
 * committed in a batch's ".~SLOT@HOST.batch-done" (or -failed): their job files are inside. */
static void running_ids(struct spool *sp, struct strset *ids)
{
	for (int hidden = 0; hidden <= 1; hidden++) {
		struct spool_entry *e;
		long n = spool_list_names(sp, SPOOL_RUNNING, hidden, &e);
		for (long i = 0; i < n; i++) {
			char *id = NULL, *host = NULL;
			int dest;
			if (hidden && publish_is_batch_name(e[i].name)) {
				publish_list_batch(sp, e[i].name, ids, NULL);
			} else if (hidden && publish_parse_staging_name(e[i].name, &id, &host, &dest)) {
				strset_add(ids, id);
			} else if (!hidden) {
				char running_id[JOB_ID_MAX + 1];
				if (spool_running_id(e[i].name, running_id, sizeof(running_id), NULL, 0))
					strset_add(ids, running_id);
			}
			free(id);
			free(host);
		}
		spool_entries_free(e, n);
	}
}

static bool in_dir(struct spool *sp, enum spool_dir d, const char *id, const char *suffix)
{
	char name[JOB_ID_MAX + 8];
	xsnprintf(name, sizeof(name), "%s%s", id, suffix);
	return sp->fd[d] >= 0 && spool_exists(sp->fd[d], name);
}

/* Live states first, in the order a job moves forward through them; running/ is listed once
 * per sweep (*running, filled on first use). */
static enum control_where locate(struct spool *sp, const char *id, struct strset *running,
				 bool *listed)
{
	if (in_dir(sp, SPOOL_NEW, id, ".json") || in_dir(sp, SPOOL_NEW, id, "") ||
	    in_dir(sp, SPOOL_DEFERRED, id, ".json") || in_dir(sp, SPOOL_DEFERRED, id, ""))
		return CONTROL_JOB_LIVE;
	if (!*listed)
		running_ids(sp, running);
	*listed = true;
	if (strset_has(running, id))
		return CONTROL_JOB_LIVE;
	char name[JOB_ID_MAX + 8];   /* a version moved back as deferred/ID.N.json (job.h) */
	for (int n = 2; sp->fd[SPOOL_DEFERRED] >= 0 && n <= JOB_NUMBERED_MAX; n++) {
		job_numbered_name(id, n, name, sizeof(name));
		if (spool_exists(sp->fd[SPOOL_DEFERRED], name))
			return CONTROL_JOB_LIVE;
	}
	if (in_dir(sp, SPOOL_HOLD, id, ".json"))
		return CONTROL_JOB_HELD;
	if (in_dir(sp, SPOOL_DONE, id, ".json") || in_dir(sp, SPOOL_FAILED, id, ".json"))
		return CONTROL_JOB_FINISHED;
	return CONTROL_JOB_NOWHERE;
}

/* Since when request name has found its job not live (mono_now when first). */
static int64_t unseen_since(struct control *c, const char *name, int64_t mono_now)
{
	for (size_t i = 0; i < c->n_unseen; i++)
		if (!strcmp(c->unseen[i].name, name)) {
			c->unseen[i].listed = true;
			return c->unseen[i].since;
		}
	c->unseen = xrealloc(c->unseen, (c->n_unseen + 1) * sizeof(*c->unseen));
	c->unseen[c->n_unseen++] = (struct control_unseen){ xstrdup(name), mono_now, true };
	return mono_now;
}

/* Forgets the requests whose job was seen live, or that are gone. */
static void unseen_prune(struct control *c)
{
	size_t keep = 0;
	for (size_t i = 0; i < c->n_unseen; i++) {
		if (c->unseen[i].listed) {
			c->unseen[i].listed = false;
			c->unseen[keep++] = c->unseen[i];
		} else {
			free(c->unseen[i].name);
		}
	}
	c->n_unseen = keep;
}

void control_sweep(struct control *c, struct spool *sp, int64_t mono_now, int64_t lease_ms)
{
	if (!c->n_requests || mono_now < c->next_sweep || sp->fd[SPOOL_CONTROL] < 0)
		return;
	c->next_sweep = mono_now + lease_ms / 8;
	/* Ages by the file server's clock, which wrote the requests' mtimes: a host whose own
	 * clock is off does not take a fresh request for an old one. */
	int64_t server_now_ms = spool_server_now(sp);
	struct strset running;
	strset_init(&running);
	bool listed = false;
	for (size_t i = 0; i < c->n_requests; i++) {
		const char *name = c->requests[i], *id;
		enum control_kind kind = control_parse_name(name, &id);
		struct stat st;
		if (fstatat(sp->fd[SPOOL_CONTROL], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;   /* withdrawn since it was read */
		int64_t age = server_now_ms - timespec_ms(&st.st_mtim);
		if (age < lease_ms)
			continue;   /* young: its daemon acts on it; nothing to look up */
		enum control_where where = locate(sp, id, &running, &listed);
		if (where == CONTROL_JOB_LIVE)
			continue;
		int64_t unseen = mono_now - unseen_since(c, name, mono_now);
		enum control_verdict v = control_judge(kind, where, age, unseen, lease_ms);
		if (v == CONTROL_KEEP || unlinkat(sp->fd[SPOOL_CONTROL], name, 0) < 0)
			continue;
		if (v == CONTROL_CONSUME)
			log_job(LOG_INFO, id, "removed 'control/%s': the job is %s", name,
				where == CONTROL_JOB_HELD ? "held" : "finished");
		else
			log_job(LOG_WARN, id, "removed 'control/%s': %" PRId64 " minutes old, and no job "
				"'%s' anywhere in the spool", name, age / 60000, id);
		strset_del(kind == CONTROL_HOLD ? &c->hold : &c->cancel, id);
	}
	strset_release(&running);
	unseen_prune(c);
}
