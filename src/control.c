/* control.c - an operator's requests (pause, hold, cancel) as files in control/.
 *
 * The CLI writes them with the spool's temp -> fsync -> rename discipline; every daemon rereads
 * the directory when inotify says it changed and at each rescan, so daemons on other hosts see a
 * request within a poll interval. Names that are not requests are ignored. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "job.h"
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
}

void control_release(struct control *c)
{
	strset_release(&c->paused);
	strset_release(&c->hold);
	strset_release(&c->cancel);
	strset_release(&c->gone);
}

int control_read(struct control *c, struct spool *sp)
{
	int fd = openat(sp->root_fd, spool_dir_name(SPOOL_CONTROL),
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct control fresh;
	control_init(&fresh);
	if (fd < 0 && errno != ENOENT) {
		control_release(&fresh);
		return -1;
	}
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (fd >= 0 && !dir) {
		close(fd);
		control_release(&fresh);
		return -1;
	}
	struct dirent *de;
	while (dir && (de = readdir(dir))) {
		const char *arg;
		enum control_kind kind = control_parse_name(de->d_name, &arg);
		switch (kind) {
		case CONTROL_PAUSE:
			if (*arg)
				strset_add(&fresh.paused, arg);
			else
				fresh.pause_all = true;
			break;
		case CONTROL_HOLD:
		case CONTROL_CANCEL:
		case CONTROL_GONE:
			control_note(&fresh, kind, arg);
			break;
		case CONTROL_NONE:
			break;
		}
	}
	if (dir)
		closedir(dir);
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
	int rc = spool_write_file(sp, SPOOL_CONTROL, name, text, strlen(text));
	if (rc == 0)
		rc = spool_sync_dir(sp, SPOOL_CONTROL);
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
	DIR *dir = sp->fd[SPOOL_CONTROL] >= 0 ? spool_opendir(sp, SPOOL_CONTROL) : NULL;
	if (!dir)
		return sp->fd[SPOOL_CONTROL] >= 0 ? -1 : 0;
	long removed = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		const char *arg;
		if (control_parse_name(de->d_name, &arg) == kind &&
		    unlinkat(sp->fd[SPOOL_CONTROL], de->d_name, 0) == 0)
			removed++;
	}
	closedir(dir);
	return removed;
}
