/* cli.c - what imgspool's verbs share: attaching to a spool, errors, finding a job, reading
 * what is known about it, ages and durations.
 *
 * Everything a client drops in the spool is read as hostile (spool_read_file: no symlinks, no
 * FIFOs, capped sizes); a file that is not what it should be is skipped, never trusted. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "publish.h"
#include "record.h"
#include "util.h"
#include "banned.h"

const struct record_limits cli_shown_limits = { .max_retries = 1000000,
						 .max_billed_retries = 1000000,
						 .max_crash_requeues = 1000000 };

const enum spool_dir cli_states[6] = { SPOOL_NEW, SPOOL_DEFERRED, SPOOL_RUNNING, SPOOL_HOLD,
				       SPOOL_FAILED, SPOOL_DONE };

const char *const cli_bucket_names[CLI_BUCKETS] = { "5m", "10m", "20m", "40m", "80m", "160m",
						    "320m", "640m", "more" };

int cli_fail(const struct cli *c, int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "imgspool: %s: %s\n", c->verb, msg);
	return code;
}

int cli_fail_errno(const struct cli *c, const char *what, const char *path, int err)
{
	/* submit and gallery write where any client may: no other user would do better. */
	bool client_verb = !strcmp(c->verb, "submit") || !strcmp(c->verb, "gallery");
	if ((err == EACCES || err == EPERM) && client_verb)
		return cli_fail(c, CLI_DENIED, "%s '%s': %s", what, path, strerror(err));
	if (err == EACCES || err == EPERM || err == EROFS)
		return cli_fail(c, CLI_DENIED, "%s '%s': %s: '%s' needs write access there, which the "
				"daemon's user has and the clients of the spool's group do not (imgspool(1), "
				"PERMISSIONS)", what, path, strerror(err), c->verb);
	return cli_fail(c, CLI_ERROR, "%s '%s': %s", what, path, strerror(err));
}

int cli_attach(struct cli *c)
{
	if (c->attached)
		return CLI_OK;
	if (spool_attach(&c->sp, c->dir) < 0) {
		int err = errno;
		spool_close(&c->sp);
		/* Which of the places a spool is named in named this one (imgspool(1)). */
		bool of_config = c->cfg && c->dir == c->cfg->spool_dir;
		char from[PATH_MAX + 64];
		if (of_config)
			xsnprintf(from, sizeof(from), "the [spool] dir of '%s' (%s)", c->cfg->path,
				  c->cfg_named);
		else
			xsnprintf(from, sizeof(from), "%s", c->dir_from ? c->dir_from : "?");
		const char *hint = "give the spool with -d or IMGSPOOL_DIR, or the daemon's "
				   "configuration with -c or IMGSPOOL_CONFIG";
		if (err == EINVAL)
			return cli_fail(c, CLI_ERROR, "'%s' is not a spool: it has no new/ directory "
					"(from %s; %s)", c->dir, from, hint);
		if (err == ENOENT || err == ENOTDIR)
			return cli_fail(c, CLI_ERROR, "no such spool '%s' (from %s; %s)", c->dir, from, hint);
		return cli_fail(c, CLI_ERROR, "cannot open the spool '%s' (from %s): %s", c->dir, from,
				strerror(err));
	}
	c->attached = true;
	return CLI_OK;
}

int cli_dir(struct cli *c, enum spool_dir d)
{
	if (c->sp.fd[d] >= 0)
		return c->sp.fd[d];
	const char *name = spool_dir_name(d);
	if (mkdirat(c->sp.root_fd, name, 0777) < 0 && errno != EEXIST)
		return -1;
	c->sp.fd[d] = openat(c->sp.root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return c->sp.fd[d];
}

bool cli_task_id(const char *arg, char *id, size_t size)
{
	return job_id_from_name(arg, id, size) == 0;
}

const char *cli_state_word(enum spool_dir d)
{
	switch (d) {
	case SPOOL_NEW:
		return "pending";
	case SPOOL_RUNNING:
		return "running";
	case SPOOL_DEFERRED:
		return "deferred";
	case SPOOL_HOLD:
		return "held";
	case SPOOL_DONE:
		return "done";
	case SPOOL_FAILED:
		return "failed";
	default:
		return "?";
	}
}

int cli_state_from_name(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(cli_states); i++)
		if (!strcmp(name, spool_dir_name(cli_states[i])))
			return (int)cli_states[i];
	return -1;
}

int cli_finished_states(const struct cli *c, int argc, char **argv, bool want[2])
{
	want[0] = want[1] = optind == argc;
	for (int i = optind; i < argc; i++) {
		if (!strcmp(argv[i], "done"))
			want[0] = true;
		else if (!strcmp(argv[i], "failed"))
			want[1] = true;
		else
			return cli_fail(c, CLI_USAGE, "'%s': %s takes finished jobs only (done, failed)",
					argv[i], c->verb);
	}
	return CLI_OK;
}

bool cli_is_job_file(enum spool_dir d, const char *name)
{
	size_t len = strlen(name);
	if (name[0] == '.')
		return false;
	if (d == SPOOL_RUNNING)
		return spool_running_id(name, NULL, 0, NULL, 0);
	if (d == SPOOL_NEW)
		return !(len > 12 && !strcmp(name + len - 12, ".result.json"));
	return len > 5 && !strcmp(name + len - 5, ".json") &&
	       !(len > 12 && !strcmp(name + len - 12, ".result.json"));
}

void cli_index_init(struct cli_index *ix)
{
	memset(ix, 0, sizeof(*ix));
}

int cli_index_add(struct cli *c, struct cli_index *ix, enum spool_dir d)
{
	int fd = c->sp.fd[d];
	int dfd = fd >= 0 ? openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dir) {
		int err = fd < 0 ? ENOENT : errno;
		if (dfd >= 0)
			close(dfd);
		errno = err;
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		/* Only job files are looked at: in done/ two names in three are results and images. */
		if (!cli_is_job_file(d, de->d_name))
			continue;
		struct stat st;
		/* A name that vanished between readdir and stat was taken by someone else. */
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		size_t len = strlen(de->d_name) + 1;
		if (ix->n == ix->alloc) {
			ix->alloc = ix->alloc ? ix->alloc * 2 : 256;
			ix->jobs = xrealloc(ix->jobs, ix->alloc * sizeof(*ix->jobs));
		}
		if (ix->names_len + len > ix->names_alloc) {
			ix->names_alloc = ix->names_alloc ? ix->names_alloc * 2 : 16384;
			while (ix->names_len + len > ix->names_alloc)
				ix->names_alloc *= 2;
			ix->names = xrealloc(ix->names, ix->names_alloc);
		}
		memcpy(ix->names + ix->names_len, de->d_name, len);
		ix->jobs[ix->n++] = (struct cli_job){ .mtime_ns = timespec_ns(&st.st_mtim),
						      .name = ix->names_len, .dir = d };
		ix->names_len += len;
	}
	closedir(dir);
	return 0;
}

const char *cli_index_name(const struct cli_index *ix, size_t i)
{
	return ix->names + ix->jobs[i].name;
}

static int oldest_first(const void *a, const void *b, void *arg)
{
	const struct cli_job *x = a, *y = b;
	const char *names = arg;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(names + x->name, names + y->name);
}

/* Ids compared as strcmp would compare them: a name is its id and ".json". */
static int id_cmp(const char *x, const char *y)
{
	size_t lx = strlen(x), ly = strlen(y);
	lx -= lx > 5 ? 5 : 0;
	ly -= ly > 5 ? 5 : 0;
	int r = memcmp(x, y, lx < ly ? lx : ly);
	return r ? r : (lx > ly) - (lx < ly);
}

static int newest_first(const void *a, const void *b, void *arg)
{
	const struct cli_job *x = a, *y = b;
	const char *names = arg;
	int64_t xm = x->mtime_ns / 1000000, ym = y->mtime_ns / 1000000;
	if (xm != ym)
		return xm < ym ? 1 : -1;
	return id_cmp(names + x->name, names + y->name);
}

void cli_index_sort(struct cli_index *ix, bool newest)
{
	if (ix->n)
		qsort_r(ix->jobs, ix->n, sizeof(*ix->jobs), newest ? newest_first : oldest_first,
			ix->names);
}

void cli_index_release(struct cli_index *ix)
{
	free(ix->jobs);
	free(ix->names);
	cli_index_init(ix);
}

static bool present(int dirfd, const char *name)
{
	struct stat st;
	return dirfd >= 0 && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

enum running_find { RUNNING_NONE, RUNNING_FILE, RUNNING_PUBLISHING };

/* A staging directory ".ID@HOST.done" or ".ID@HOST.failed" of id (spool-layout §5); fills host. */
static bool is_staging_of(const char *name, const char *id, char *host, size_t size)
{
	char *staged_id, *staged_host;
	int dest;
	if (!publish_parse_staging_name(name, &staged_id, &staged_host, &dest))
		return false;
	bool of = !strcmp(staged_id, id) && xsnprintf(host, size, "%s", staged_host) >= 0;
	free(staged_id);
	free(staged_host);
	return of;
}

/* running/ID@HOST.json: the only state whose file name is not ID.json. A job whose job file
 * sits in a staging directory, its own running/.ID@HOST.(done|failed)/ID.json or its batch's
 * running/.~SLOT@HOST.batch-(done|failed)/ID.json, is being published: its commit is made,
 * its move into done/ or failed/ is under way. */
static enum running_find find_running(struct cli *c, const char *id, struct cli_where *w)
{
	int fd = c->sp.fd[SPOOL_RUNNING];
	if (fd < 0)
		return RUNNING_NONE;
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dir) {
		if (dfd >= 0)
			close(dfd);
		return RUNNING_NONE;
	}
	enum running_find found = RUNNING_NONE;
	char host[NAME_MAX + 1], staged[2 * NAME_MAX + 2], running_id[JOB_ID_MAX + 1];
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (spool_running_id(de->d_name, running_id, sizeof(running_id), host, sizeof(host)) &&
		    !strcmp(running_id, id)) {
			xsnprintf(w->name, sizeof(w->name), "%s", de->d_name);
			xsnprintf(w->host, sizeof(w->host), "%s", host);
			found = RUNNING_FILE;
			break;
		}
		/* A batch's taken over: its jobs' host's, not its taker's (publish_batch_jobs_host). */
		char *batch_host = NULL;
		bool staging = found == RUNNING_NONE &&
			       (is_staging_of(de->d_name, id, host, sizeof(host)) ||
				((batch_host = publish_batch_jobs_host(de->d_name)) &&
				 xsnprintf(host, sizeof(host), "%s", batch_host) >= 0));
		free(batch_host);
		if (staging && xsnprintf(staged, sizeof(staged), "%s/%s.json", de->d_name, id) >= 0 &&
		    present(fd, staged)) {
			xsnprintf(w->name, sizeof(w->name), "%s@%s.json", id, host);
			xsnprintf(w->host, sizeof(w->host), "%s", host);
			found = RUNNING_PUBLISHING;   /* a running/ID@HOST.json may still follow */
		}
	}
	closedir(dir);
	return found;
}

int cli_locate(struct cli *c, const char *id, struct cli_where *w)
{
	/* In the order a job travels, finished states last: a job moving on while we look is
	 * seen in the next directory. Three rounds for a job caught between two renames; more
	 * while it is being published, whose fsyncs on a loaded file server can take seconds. */
	static const enum spool_dir order[] = { SPOOL_NEW, SPOOL_HOLD, SPOOL_DEFERRED };
	int64_t publishing_until = -1;
	memset(w, 0, sizeof(*w));
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
			xsnprintf(w->name, sizeof(w->name), "%s.json", id);
			if (present(c->sp.fd[order[i]], w->name)) {
				w->dir = order[i];
				return 0;
			}
			/* A client may name it ID in new/; a version moved back where ID.json was
			 * taken is deferred/ID (spool-layout.md §5). */
			if (order[i] != SPOOL_HOLD && present(c->sp.fd[order[i]], id)) {
				xsnprintf(w->name, sizeof(w->name), "%s", id);
				w->dir = order[i];
				return 0;
			}
			/* A version moved back while both were taken: deferred/ID.N.json. */
			for (int n = 2; order[i] == SPOOL_DEFERRED && n <= JOB_NUMBERED_MAX; n++) {
				job_numbered_name(id, n, w->name, sizeof(w->name));
				if (present(c->sp.fd[order[i]], w->name)) {
					w->dir = order[i];
					return 0;
				}
			}
		}
		enum running_find r = find_running(c, id, w);
		struct cli_where publishing = *w;
		if (r == RUNNING_FILE) {
			w->dir = SPOOL_RUNNING;
			return 0;
		}
		xsnprintf(w->name, sizeof(w->name), "%s.json", id);
		/* failed/ before done/: a job retried from failed/ has no file left there. */
		if (present(c->sp.fd[SPOOL_FAILED], w->name)) {
			w->dir = SPOOL_FAILED;
			return 0;
		}
		if (present(c->sp.fd[SPOOL_DONE], w->name)) {
			w->dir = SPOOL_DONE;
			return 0;
		}
		if (r == RUNNING_PUBLISHING) {
			int64_t now = mono_ms();
			if (publishing_until < 0)
				publishing_until = now + CLI_PUBLISH_WAIT_MS;
			if (now >= publishing_until) {
				/* Its publisher may have died: another host or a restart finishes it. */
				*w = publishing;
				w->dir = SPOOL_RUNNING;
				return 0;
			}
			struct timespec pause = { .tv_nsec = CLI_PUBLISH_POLL_MS * 1000000L };
			nanosleep(&pause, NULL);
			round = -1;   /* look everywhere again */
		}
	}
	return -1;
}

enum spool_read cli_read_text(struct cli *c, enum spool_dir d, const char *name, struct buf *text,
			      struct stat *st)
{
	buf_init(text, CLI_READ_MAX);
	return spool_read_file(c->sp.fd[d], name, CLI_READ_MAX, text, st);
}

json_t *cli_read_json(struct cli *c, enum spool_dir d, const char *name, enum spool_read *rr,
		      struct stat *st)
{
	struct buf text;
	*rr = cli_read_text(c, d, name, &text, st);
	json_t *doc = *rr == SPOOL_READ_OK ? json_loadb(text.data, text.len, 0, NULL) : NULL;
	buf_release(&text);
	return doc;
}

/* A member a listing needs of a job file or a result larger than CLI_PARSE_WHOLE_MAX, and the
 * most bytes its value may take to be parsed: a longer one is shown as invalid. */
struct listed_member {
	const char *name;
	size_t max;
};

#define LISTED_NAME_MAX (4u << 10)   /* a provider or model name, as written */

/* Those members, found in one scan and each parsed alone when within its cap: the rest
 * (metadata of megabytes, nested deep, which jansson takes some thirty times its size to hold)
 * is scanned over, never parsed; so is a member past its cap (a 9 MB "provider" array of {}
 * took 690 MB to parse). With cut, text is the beginning of the file (cut short: the members
 * that end in it). NULL when text is not a JSON object. */
static json_t *members_of(const struct buf *text, bool cut, const struct listed_member *members,
			  size_t n)
{
	const char *names[16] = { NULL };
	struct job_span spans[16];
	for (size_t i = 0; i < n && i < ARRAY_SIZE(names) - 1; i++)
		names[i] = members[i].name;
	if (job_members_at(text->data, text->len, names, cut, spans) < 0)
		return NULL;
	json_t *doc = json_object();
	for (size_t i = 0; names[i]; i++) {
		size_t len = spans[i].end - spans[i].start;
		json_t *value = len && len <= members[i].max
				? json_loadb(text->data + spans[i].start, len, JSON_DECODE_ANY, NULL) : NULL;
		if (value)
			json_object_set_new(doc, names[i], value);
	}
	return doc;
}

static void copy_str(char *out, size_t size, json_t *v)
{
	const char *s = json_string_value(v);
	if (xsnprintf(out, size, "%s", s ? s : "") < 0)
		out[0] = '\0';
	/* Client data on an operator's terminal: no control characters, DEL and C1 (U+0080-U+009F,
	 * as UTF-8) included. */
	for (unsigned char *p = (unsigned char *)out; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
		else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			p[0] = p[1] = '?';
}

int cli_info_read(struct cli *c, enum spool_dir dir, const char *name, int64_t mtime_ms,
		  bool keep_doc, struct cli_info *info)
{
	memset(info, 0, sizeof(*info));
	info->dir = dir;
	if (dir == SPOOL_RUNNING) {
		if (!spool_running_id(name, info->id, sizeof(info->id), info->host, sizeof(info->host)))
			return -1;
	} else if (job_id_from_listed(name, dir == SPOOL_DEFERRED, info->id, sizeof(info->id)) < 0) {
		return -1;
	}
	int dirfd = c->sp.fd[dir];
	if (mtime_ms < 0) {
		struct stat st;
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -1;
		mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	}
	info->mtime_ms = info->age_from_ms = mtime_ms;
	if (dir == SPOOL_DEFERRED)
		info->next_retry_ms = mtime_ms;

	/* A finished job is described by its result; any other by its job file and records. */
	bool finished = dir == SPOOL_DONE || dir == SPOOL_FAILED;
	char *result_name = finished ? xasprintf("%s.result.json", info->id) : NULL;
	/* A result's own fields are within RESULT_HEADROOM; the records within RECORD_HEADROOM. */
	static const struct listed_member result_members[] = {
		{ "provider", LISTED_NAME_MAX }, { "model", LISTED_NAME_MAX },
		{ "error", RESULT_HEADROOM }, { "attempts", RESULT_HEADROOM },
		{ "attempts_elided", RESULT_HEADROOM }, { "cost", RESULT_HEADROOM },
		{ "images", RESULT_HEADROOM }, { "latency_ms", RESULT_HEADROOM },
	};
	static const struct listed_member job_members[] = {
		{ "provider", LISTED_NAME_MAX }, { "model", LISTED_NAME_MAX },
		{ "imgspool", RECORD_HEADROOM },
	};
	struct stat st;
	struct buf text;
	json_t *doc = NULL;
	/* Of a result only its first RESULT_HEADROOM bytes are read: the daemon writes its own
	 * fields first and the client's metadata last (publish.c resumes so too). */
	buf_init(&text, CLI_READ_MAX);
	if (spool_read_head(c->sp.fd[dir], finished ? result_name : name, CLI_READ_MAX,
			    finished ? RESULT_HEADROOM : SIZE_MAX, &text, &st) == SPOOL_READ_OK) {
		bool cut = text.len < (size_t)st.st_size;
		doc = !cut && text.len <= CLI_PARSE_WHOLE_MAX ? json_loadb(text.data, text.len, 0, NULL)
		      : finished ? members_of(&text, cut, result_members, ARRAY_SIZE(result_members))
		      : members_of(&text, false, job_members, ARRAY_SIZE(job_members));
	}
	buf_release(&text);
	free(result_name);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return 0;   /* listed, with what its name and mtime say */
	}
	copy_str(info->provider, sizeof(info->provider), json_object_get(doc, "provider"));
	copy_str(info->model, sizeof(info->model), json_object_get(doc, "model"));
	if (finished) {
		json_t *err = json_object_get(doc, "error");
		copy_str(info->error_code, sizeof(info->error_code), json_object_get(err, "code"));
		json_t *attempts = json_object_get(doc, "attempts");
		json_t *elided = json_object_get(doc, "attempts_elided");   /* not listed */
		info->attempts = (int)json_array_size(attempts);
		if (json_is_integer(elided) && json_integer_value(elided) > 0 &&
		    json_integer_value(elided) < 1000000000)
			info->attempts += (int)json_integer_value(elided);
		json_t *cost = json_object_get(doc, "cost");
		json_t *amount = json_object_get(cost, "amount");
		if (json_is_number(amount)) {
			info->has_cost = true;
			info->cost = json_number_value(amount);
			copy_str(info->currency, sizeof(info->currency), json_object_get(cost, "currency"));
		}
	} else {
		/* Read as the daemon reads them (record.h): what it would not believe is not shown. */
		struct record rec;
		record_init(&rec);
		record_restore(&rec, json_object_get(doc, "imgspool"), &cli_shown_limits);
		if (rec.created_at_ms &&
		    (dir == SPOOL_RUNNING || dir == SPOOL_DEFERRED || dir == SPOOL_HOLD))
			info->age_from_ms = rec.created_at_ms;
		json_t *last = json_array_get(rec.attempts, json_array_size(rec.attempts) - 1);
		copy_str(info->error_code, sizeof(info->error_code), json_object_get(last, "error_code"));
		info->attempts = (int)json_array_size(rec.attempts) + (int)rec.elided.attempts;
		record_release(&rec);
	}
	if (keep_doc)
		info->doc = doc;
	else
		json_decref(doc);
	return 0;
}

void cli_info_release(struct cli_info *info)
{
	json_decref(info->doc);
	info->doc = NULL;
}

int64_t cli_parse_duration(const char *s)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	int64_t unit;
	if (!strcmp(end, "") || !strcmp(end, "s"))
		unit = 1;
	else if (!strcmp(end, "m"))
		unit = 60;
	else if (!strcmp(end, "h"))
		unit = 3600;
	else if (!strcmp(end, "d"))
		unit = 86400;
	else if (!strcmp(end, "w"))
		unit = 7 * 86400;
	else
		return -1;
	if (errno || v < 0 || v > INT64_MAX / 1000 / unit)
		return -1;
	return v * unit * 1000;
}

int cli_age_bucket(int64_t age_ms)
{
	int64_t limit = 5 * 60 * 1000;
	for (int i = 0; i < CLI_BUCKETS - 1; i++, limit *= 2)
		if (age_ms <= limit)
			return i;
	return CLI_BUCKETS - 1;
}

void cli_format_age(int64_t ms, char *out, size_t size)
{
	int64_t s = ms / 1000;
	if (s < 0)
		s = 0;
	if (s < 120)
		xsnprintf(out, size, "%llds", (long long)s);
	else if (s < 120 * 60)
		xsnprintf(out, size, "%lldm", (long long)(s / 60));
	else if (s < 48 * 3600)
		xsnprintf(out, size, "%lldh", (long long)(s / 3600));
	else
		xsnprintf(out, size, "%lldd", (long long)(s / 86400));
}
