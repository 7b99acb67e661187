/* cli_steer.c - the verbs that move jobs: hold, release, cancel, retry, purge, pause, resume.
 *
 * A job is taken out of new/, deferred/ or hold/ with the same one-winner rename(2) a daemon
 * claims with, so the CLI and the daemons never both act on one job. What only the daemon
 * holding a running job can do (cut its call, hold it at its next transition) and what every
 * daemon must obey (pause) is asked with a file in control/ (control.h).
 *
 * These verbs write hold/, failed/, done/ or control/: the daemon's user may, the clients of the
 * group recipe (contrib/README.md) may not, and are told so (CLI_DENIED). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "control.h"
#include "job.h"
#include "record.h"
#include "result.h"
#include "util.h"
#include "banned.h"

#define STEER_POLL_MS 100
#define CANCEL_WAIT_S 60         /* default -t: a rescan on another host takes poll_interval */

/* What one verb does to one job; arg is the verb's options. */
typedef int one_fn(struct cli *c, const char *id, const void *arg);

/* Checks every id on the command line (from optind) before acting on any, then acts on each
 * in turn; the worst exit code wins. */
static int each_id(struct cli *c, int argc, char **argv, const char *usage, one_fn *one,
		   const void *arg)
{
	if (optind < 1)
		optind = 1;   /* a verb without options never ran getopt */
	int n = argc - optind;
	if (n < 1)
		return cli_fail(c, CLI_USAGE, "usage: imgspool %s", usage);
	char (*ids)[JOB_ID_MAX + 1] = xcalloc((size_t)n, sizeof(*ids));
	int rc = CLI_OK;
	for (int i = 0; i < n && rc == CLI_OK; i++)
		if (!cli_task_id(argv[optind + i], ids[i], sizeof(ids[i])))
			rc = cli_fail(c, CLI_USAGE, "'%s' is not a valid task id", argv[optind + i]);
	for (int i = 0; rc != CLI_USAGE && i < n; i++) {
		int r = one(c, ids[i], arg);
		if (r > rc)
			rc = r;
	}
	free(ids);
	return rc;
}

static void pause_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* new/ or deferred/ -> hold/ID.json: the one-winner move. 0, or -1 with errno (ENOENT: someone
 * else moved it first). */
static int take_to_hold(struct cli *c, const struct cli_where *w, const char *id)
{
	if (cli_dir(c, SPOOL_HOLD) < 0)
		return -1;
	char name[JOB_ID_MAX + 8];
	xsnprintf(name, sizeof(name), "%s.json", id);
	if (spool_rename(&c->sp, w->dir, w->name, SPOOL_HOLD, name) < 0)
		return -1;
	spool_sync_dir(&c->sp, SPOOL_HOLD);
	return 0;
}

static int denied_or_error(struct cli *c, const char *what, const char *dir, int err)
{
	return cli_fail_errno(c, what, dir, err);
}

/* ---- hold, release ------------------------------------------------------------------------ */

static int hold_one(struct cli *c, const char *id, const void *unused)
{
	(void)unused;
	bool requested = false;
	for (int round = 0; round < 50; round++) {
		struct cli_where w;
		if (cli_locate(c, id, &w) < 0)
			return cli_fail(c, CLI_FAILED, "no job '%s'", id);
		switch (w.dir) {
		case SPOOL_NEW:
		case SPOOL_DEFERRED:
			if (take_to_hold(c, &w, id) == 0) {
				if (requested)
					control_withdraw(&c->sp, CONTROL_HOLD, id);
				printf("%s: held (was %s)\n", id, cli_state_word(w.dir));
				return CLI_OK;
			}
			if (errno != ENOENT && errno != ESTALE)
				return denied_or_error(c, "cannot move the job into", "hold/", errno);
			continue;   /* a daemon claimed it first: look again */
		case SPOOL_HOLD:
			printf("%s: held\n", id);
			return CLI_OK;
		case SPOOL_RUNNING:
			if (!requested && control_request(&c->sp, CONTROL_HOLD, id) < 0)
				return denied_or_error(c, "cannot write a request in", "control/", errno);
			requested = true;
			/* Still running once the request is there: its daemon will see it. */
			if (cli_locate(c, id, &w) == 0 && w.dir == SPOOL_RUNNING) {
				printf("%s: running on %s: goes to hold/ at its next transition (the call in "
				       "flight is not cut)\n", id, w.host);
				return CLI_OK;
			}
			continue;
		default:
			if (requested)
				control_withdraw(&c->sp, CONTROL_HOLD, id);
			return cli_fail(c, CLI_FAILED, "'%s' has already finished (%s)", id,
					cli_state_word(w.dir));
		}
	}
	return cli_fail(c, CLI_FAILED, "'%s' kept moving between states; try again", id);
}

int cli_hold(struct cli *c, int argc, char **argv)
{
	return each_id(c, argc, argv, "hold ID...", hold_one, NULL);
}

/* A job that is about to run again (retry, release) must not carry its old run's requests: an
 * old hold or cancel would hold or cancel the new run. Called while no daemon may run the job
 * (it is in hold/, done/ or failed/), before it goes to new/. */
static int drop_requests(struct cli *c, const char *id)
{
	if (control_withdraw(&c->sp, CONTROL_CANCEL, id) < 0 ||
	    control_withdraw(&c->sp, CONTROL_HOLD, id) < 0)
		return denied_or_error(c, "cannot remove an earlier request from", "control/", errno);
	return CLI_OK;
}

static int release_one(struct cli *c, const char *id, const void *unused)
{
	(void)unused;
	struct cli_where w;
	if (cli_locate(c, id, &w) < 0)
		return cli_fail(c, CLI_FAILED, "no job '%s'", id);
	if (w.dir == SPOOL_RUNNING) {
		struct control ctl;
		control_init(&ctl);
		bool asked = control_read(&ctl, &c->sp) == 0 && control_wants(&ctl, CONTROL_HOLD, id);
		control_release(&ctl);
		if (!asked)
			return cli_fail(c, CLI_FAILED, "'%s' is not held (running on %s)", id, w.host);
		if (control_withdraw(&c->sp, CONTROL_HOLD, id) < 0)
			return denied_or_error(c, "cannot remove a request from", "control/", errno);
		printf("%s: hold request withdrawn (running on %s)\n", id, w.host);
		return CLI_OK;
	}
	if (w.dir != SPOOL_HOLD)
		return cli_fail(c, CLI_FAILED, "'%s' is not held (%s)", id, cli_state_word(w.dir));
	int rc = drop_requests(c, id);
	if (rc != CLI_OK)
		return rc;
	/* Its mtime, and so its place in line, is kept. */
	if (spool_rename(&c->sp, SPOOL_HOLD, w.name, SPOOL_NEW, w.name) < 0) {
		if (errno == ENOENT || errno == ESTALE)
			return cli_fail(c, CLI_FAILED, "'%s' left hold/ while being released", id);
		return denied_or_error(c, "cannot move the job into", "new/", errno);
	}
	spool_sync_dir(&c->sp, SPOOL_NEW);
	printf("%s: released to new/\n", id);
	return CLI_OK;
}

int cli_release(struct cli *c, int argc, char **argv)
{
	return each_id(c, argc, argv, "release ID...", release_one, NULL);
}

/* ---- cancel ------------------------------------------------------------------------------- */

/* A job's provider or model as its result names it: a job never claimed was never checked,
 * and a result is bounded by its metadata (RESULT_HEADROOM), so a longer one is not named. */
static const char *str_field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_string_length(v) <= 128 ? json_string_value(v) : NULL;
}

/* Finishes the cancellation of a job we hold in hold/, taken from "from" (NULL: it was held):
 * its result in failed/, then the job file, in the daemon's publication order (spool-layout.md
 * §5). A job file we cannot read goes back where it was: its records (what it was billed) would
 * be lost in a result written without them. */
static int cancel_from_hold(struct cli *c, const char *id, const char *was,
			    const struct cli_where *from)
{
	char name[JOB_ID_MAX + 8];
	xsnprintf(name, sizeof(name), "%s.json", id);
	enum spool_read rr;
	struct stat st;
	struct buf text;   /* kept: the result copies the client's metadata as it is written */
	rr = cli_read_text(c, SPOOL_HOLD, name, &text, &st);
	json_t *job = rr == SPOOL_READ_OK ? json_loadb(text.data, text.len, 0, NULL) : NULL;
	if (rr != SPOOL_READ_OK)
		buf_release(&text);
	if (rr == SPOOL_READ_GONE)
		return cli_fail(c, CLI_FAILED, "'%s' left hold/ while being cancelled", id);
	if (rr != SPOOL_READ_OK) {
		bool back = from && spool_rename(&c->sp, SPOOL_HOLD, name, from->dir, from->name) == 0;
		if (back)
			spool_sync_dir(&c->sp, from->dir);
		char why[128];
		if (rr == SPOOL_READ_TOO_BIG)
			xsnprintf(why, sizeof(why), "is %lld bytes, more than any daemon reads (max_job_bytes "
				  "of %ld MiB at most, and %u KiB of records)", (long long)st.st_size,
				  CONFIG_JOB_BYTES_CEILING >> 20, RECORD_HEADROOM >> 10);
		else
			xsnprintf(why, sizeof(why), "cannot be read: %s", spool_read_reason(rr));
		return cli_fail(c, CLI_FAILED, "'%s' not cancelled: its job file %s; it is still %s "
				"(in %s/)", id, why, back ? was : "held",
				spool_dir_name(back ? from->dir : SPOOL_HOLD));
	}
	/* Read as the daemon reads them: the attempts listed and the tally of earlier ones. */
	struct record rec;
	record_init(&rec);
	record_restore(&rec, json_object_get(job, "imgspool"), &cli_shown_limits);
	int64_t created = rec.created_at_ms;
	char message[160];
	xsnprintf(message, sizeof(message), "cancelled by an operator (imgspool cancel) while %s", was);
	size_t metadata_len = 0;
	const char *metadata = json_is_object(job) ? job_member_bytes(text.data, text.len, "metadata",
								      &metadata_len) : NULL;
	struct result_info r = {
		.task_id = id,
		.succeeded = false,
		.provider = str_field(job, "provider"),
		.model = str_field(job, "model"),
		.attempts = rec.attempts,
		.elided = &rec.elided,
		.retry_count = rec.retry_count,
		.created_wall_ms = created > 0 ? created
				   : (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000,
		.updated_wall_ms = wall_ms(),
		.metadata = metadata,
		.metadata_len = metadata_len,
		.error_code = "cancelled",
		.error_message = message,
	};
	char *result = result_to_json(&r, NULL);
	if (!result) {
		/* Too big only by what the job file says of itself (a model of megabytes): its own
		 * words stay in the job file, beside the result. */
		r.trimmed = true;
		r.provider = r.model = NULL;
		result = result_to_json(&r, NULL);
	}
	record_release(&rec);
	json_decref(job);
	buf_release(&text);
	char *result_name = xasprintf("%s.result.json", id);
	int rc = spool_write_file(&c->sp, SPOOL_FAILED, result_name, result, strlen(result));
	free(result);
	if (rc < 0) {
		int err = errno;
		free(result_name);
		return denied_or_error(c, "cannot write the result in", "failed/", err);
	}
	if (spool_rename(&c->sp, SPOOL_HOLD, name, SPOOL_FAILED, name) < 0) {
		int err = errno;
		unlinkat(c->sp.fd[SPOOL_FAILED], result_name, 0);
		free(result_name);
		if (err == ENOENT || err == ESTALE)
			return cli_fail(c, CLI_FAILED, "'%s' left hold/ while being cancelled", id);
		return denied_or_error(c, "cannot move the job into", "failed/", err);
	}
	free(result_name);
	spool_sync_dir(&c->sp, SPOOL_FAILED);
	spool_sync_dir(&c->sp, SPOOL_HOLD);
	control_withdraw(&c->sp, CONTROL_CANCEL, id);
	control_withdraw(&c->sp, CONTROL_HOLD, id);
	printf("%s: cancelled (was %s)\n", id, was);
	return CLI_OK;
}

/* What the result of a job that was running when we asked says about the cancel. */
static int report_running_cancel(struct cli *c, const char *id, enum spool_dir dir, const char *host)
{
	control_withdraw(&c->sp, CONTROL_CANCEL, id);
	struct cli_info info;
	char name[JOB_ID_MAX + 8];
	xsnprintf(name, sizeof(name), "%s.json", id);
	if (cli_info_read(c, dir, name, -1, false, &info) == 0 && dir == SPOOL_FAILED &&
	    !strcmp(info.error_code, "cancelled")) {
		printf("%s: cancelled while running on %s: its call was cut, and the upstream may still "
		       "charge for it (billed: unknown)\n", id, host);
		return CLI_OK;
	}
	return cli_fail(c, CLI_FAILED, "'%s' finished (%s%s%s) before the cancel reached it", id,
			cli_state_word(dir), info.error_code[0] ? ": " : "", info.error_code);
}

static int cancel_one(struct cli *c, const char *id, const void *wait_s)
{
	long seconds = *(const long *)wait_s;
	bool requested = false;
	char host[NAME_MAX + 1] = "";
	int64_t deadline = mono_ms() + seconds * 1000;
	for (;;) {
		struct cli_where w;
		if (cli_locate(c, id, &w) < 0) {
			if (requested)
				control_withdraw(&c->sp, CONTROL_CANCEL, id);
			return cli_fail(c, CLI_FAILED, "no job '%s'", id);
		}
		switch (w.dir) {
		case SPOOL_NEW:
		case SPOOL_DEFERRED:
			if (take_to_hold(c, &w, id) == 0)
				return cancel_from_hold(c, id, cli_state_word(w.dir), &w);
			if (errno != ENOENT && errno != ESTALE)
				return denied_or_error(c, "cannot move the job into", "hold/", errno);
			continue;   /* claimed first by a daemon: look again */
		case SPOOL_HOLD:
			return cancel_from_hold(c, id, requested ? "running" : "held", NULL);
		case SPOOL_RUNNING:
			xsnprintf(host, sizeof(host), "%s", w.host);
			if (!requested && control_request(&c->sp, CONTROL_CANCEL, id) < 0)
				return denied_or_error(c, "cannot write a request in", "control/", errno);
			requested = true;
			break;
		default:
			if (requested)
				return report_running_cancel(c, id, w.dir, host);
			return cli_fail(c, CLI_FAILED, "'%s' has already finished (%s)", id,
					cli_state_word(w.dir));
		}
		if (mono_ms() >= deadline)
			return cli_fail(c, CLI_PENDING, "'%s' is still running on %s after %lds: the request "
					"stays in control/cancel.%s until that daemon acts on it (is it alive?)",
					id, host, seconds, id);
		pause_ms(STEER_POLL_MS);
	}
}

int cli_cancel(struct cli *c, int argc, char **argv)
{
	long seconds = CANCEL_WAIT_S;
	int opt;
	while ((opt = getopt(argc, argv, "t:")) != -1) {
		if (opt != 't' || parse_long(optarg, 1, 86400, &seconds) < 0)
			return cli_fail(c, CLI_USAGE, "usage: imgspool cancel [-t SECONDS] ID...");
	}
	return each_id(c, argc, argv, "cancel [-t SECONDS] ID...", cancel_one, &seconds);
}

/* ---- retry -------------------------------------------------------------------------------- */

/* Names in dir that belong to job id's earlier run: ID.result.json and its images. */
static bool is_run_file(const char *name, const char *id)
{
	size_t idlen = strlen(id);
	if (strncmp(name, id, idlen) || name[idlen] != '.')
		return false;
	const char *rest = name + idlen + 1;
	if (!strcmp(rest, "result.json"))
		return true;
	while (*rest >= '0' && *rest <= '9')
		rest++;
	if (*rest == '.' && rest != name + idlen + 1)
		rest++;
	return !strcmp(rest, "png") || !strcmp(rest, "jpg") || !strcmp(rest, "webp");
}

static void remove_run_files(struct cli *c, enum spool_dir d, const char *id)
{
	int fd = c->sp.fd[d];
	/* The images, then the result: a retry cut short never leaves images without their result
	 * (a later run clears an earlier run's images only where it finds evidence of it). */
	const char *exts[] = { "png", "jpg", "webp" };
	char name[JOB_ID_MAX + 32];
	for (size_t e = 0; e < ARRAY_SIZE(exts); e++) {
		xsnprintf(name, sizeof(name), "%s.%s", id, exts[e]);
		unlinkat(fd, name, 0);
		for (int i = 1; i <= 16; i++) {
			xsnprintf(name, sizeof(name), "%s.%d.%s", id, i, exts[e]);
			if (is_run_file(name, id))
				unlinkat(fd, name, 0);
		}
	}
	xsnprintf(name, sizeof(name), "%s.result.json", id);
	unlinkat(fd, name, 0);
}

/* The job file to put back in new/: its records must say that the run is over, so the daemon
 * starts a new run with a fresh budget and keeps this one in its history (spool-layout.md §4).
 * A daemon's publication writes "finished"; a job published before it did gets it from its
 * result (such a daemon listed every attempt). The records are spliced onto the client's bytes
 * (data) as the daemon does. NULL when the file needs no change. */
static char *text_for_retry(const char *data, size_t len, json_t *job, json_t *result,
			    size_t *out_len)
{
	json_t *state = json_object_get(job, "imgspool");
	if (json_is_string(json_object_get(state, "finished")))
		return NULL;
	struct record rec;
	record_init(&rec);
	record_restore(&rec, state, &cli_shown_limits);
	const char *status = json_string_value(json_object_get(result, "status"));
	xsnprintf(rec.finished, sizeof(rec.finished), "%s",
		  status && !strcmp(status, "succeeded") ? "succeeded" : "failed");
	const char *code = json_string_value(json_object_get(json_object_get(result, "error"), "code"));
	xsnprintf(rec.error_code, sizeof(rec.error_code), "%s", code ? code : "");
	if (!json_object_get(state, "attempts")) {
		size_t i;
		json_t *a;
		json_array_foreach(json_object_get(result, "attempts"), i, a)
			if (json_is_object(a))
				record_add_attempt(rec.attempts, &rec.elided, json_incref(a));
	}
	char *records = record_text(&rec);
	record_release(&rec);
	char *text = job_with_records(data, len, records, out_len);
	free(records);
	return text;
}

static int retry_one(struct cli *c, const char *id, const void *again_flag)
{
	bool again = *(const bool *)again_flag;
	struct cli_where w;
	if (cli_locate(c, id, &w) < 0)
		return cli_fail(c, CLI_FAILED, "no job '%s'", id);
	if (w.dir != SPOOL_FAILED && !(again && w.dir == SPOOL_DONE))
		return cli_fail(c, CLI_FAILED, "'%s' is %s: retry takes failed jobs (and done ones with "
				"--again)", id, cli_state_word(w.dir));
	int fd = c->sp.fd[w.dir];
	struct buf text;
	struct stat st;
	json_t *job = NULL;
	char *job_bytes = NULL;
	size_t job_len = 0;
	/* The client's bytes are kept: the records are spliced onto them, as the daemon does. */
	if (cli_read_text(c, w.dir, w.name, &text, &st) == SPOOL_READ_OK) {
		job = json_loadb(text.data, text.len, 0, NULL);
		job_bytes = buf_detach(&text, &job_len);
	}
	buf_release(&text);
	char *result_name = xasprintf("%s.result.json", id);
	enum spool_read rr;
	json_t *result = cli_read_json(c, w.dir, result_name, &rr, &st);
	free(result_name);
	int rc = CLI_OK;
	if (!json_is_object(job)) {
		rc = cli_fail(c, CLI_FAILED, "'%s': its job file is not JSON: nothing to run again", id);
		goto out;
	}
	rc = drop_requests(c, id);
	if (rc != CLI_OK)
		goto out;
	size_t fresh_len = 0;
	char *fresh = text_for_retry(job_bytes, job_len, job, result, &fresh_len);
	/* Rewritten in place if need be (a finished job is nobody's), held while its old run's
	 * files go, then released: at every moment the job is in exactly one state. */
	int r = fresh ? spool_write_file(&c->sp, w.dir, w.name, fresh, fresh_len) : 0;
	free(fresh);
	struct timespec now[2] = { { .tv_nsec = UTIME_NOW }, { .tv_nsec = UTIME_NOW } };
	if (r == 0)
		r = utimensat(fd, w.name, now, AT_SYMLINK_NOFOLLOW);
	if (r < 0) {
		rc = denied_or_error(c, "cannot rewrite the job in", spool_dir_name(w.dir), errno);
		goto out;
	}
	if (cli_dir(c, SPOOL_HOLD) < 0 || spool_rename(&c->sp, w.dir, w.name, SPOOL_HOLD, w.name) < 0) {
		rc = errno == ENOENT ? cli_fail(c, CLI_FAILED, "'%s' moved while being retried", id)
		     : denied_or_error(c, "cannot move the job into", "hold/", errno);
		goto out;
	}
	remove_run_files(c, w.dir, id);
	spool_sync_dir(&c->sp, w.dir);
	if (spool_rename(&c->sp, SPOOL_HOLD, w.name, SPOOL_NEW, w.name) < 0) {
		rc = cli_fail(c, CLI_ERROR, "'%s' is in hold/: cannot move it to new/: %s (imgspool "
			      "release %s)", id, strerror(errno), id);
		goto out;
	}
	spool_sync_dir(&c->sp, SPOOL_NEW);
	printf("%s: back to new/ with a fresh retry budget (was %s)\n", id, cli_state_word(w.dir));
out:
	free(job_bytes);
	json_decref(job);
	json_decref(result);
	return rc;
}

int cli_retry(struct cli *c, int argc, char **argv)
{
	static const struct option longopts[] = { { "again", no_argument, NULL, 'a' }, { NULL, 0, NULL, 0 } };
	bool again = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (opt != 'a')
			return cli_fail(c, CLI_USAGE, "usage: imgspool retry [--again] ID...");
		again = true;
	}
	return each_id(c, argc, argv, "retry [--again] ID...", retry_one, &again);
}

/* ---- purge -------------------------------------------------------------------------------- */

/* The task id a file of a finished job belongs to: ID.json, ID.result.json, ID.EXT, ID.N.EXT. */
static bool run_file_id(const char *name, char *id, size_t size)
{
	size_t len = strlen(name);
	const char *suffixes[] = { ".result.json", ".json", ".png", ".jpg", ".webp" };
	for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
		size_t sl = strlen(suffixes[i]);
		if (len <= sl || strcmp(name + len - sl, suffixes[i]))
			continue;
		size_t end = len - sl;
		if (i >= 2) {   /* an image: maybe ID.N.EXT */
			size_t k = end;
			while (k > 0 && name[k - 1] >= '0' && name[k - 1] <= '9')
				k--;
			if (k < end && k > 1 && name[k - 1] == '.')
				end = k - 1;
		}
		return xsnprintf(id, size, "%.*s", (int)end, name) >= 0 && id[0] &&
		       (i == 1 ? job_id_from_name(name, id, size) == 0 : true);
	}
	return false;
}

int cli_purge(struct cli *c, int argc, char **argv)
{
	static const struct option longopts[] = { { "older-than", required_argument, NULL, 'o' },
						  { NULL, 0, NULL, 0 } };
	const char *usage = "usage: imgspool purge --older-than DURATION [done] [failed]";
	int64_t older = -1;
	int opt;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (opt != 'o' || (older = cli_parse_duration(optarg)) < 0)
			return cli_fail(c, CLI_USAGE, "%s (DURATION: 90m, 12h, 30d)", usage);
	}
	if (older < 0)
		return cli_fail(c, CLI_USAGE, "%s", usage);
	bool want[2];   /* done, failed */
	int rc = cli_finished_states(c, argc, argv, want);
	if (rc != CLI_OK)
		return rc;
	int64_t cutoff_ns = (wall_ms() - older) * 1000000;
	for (int k = 0; k < 2; k++) {
		if (!want[k])
			continue;
		enum spool_dir d = k ? SPOOL_FAILED : SPOOL_DONE;
		int fd = c->sp.fd[d];
		struct spool_entry *e;
		long n = spool_list(&c->sp, d, &e);
		if (n < 0)
			return cli_fail(c, CLI_ERROR, "cannot read '%s/': %s", spool_dir_name(d), strerror(errno));
		struct strset gone;
		strset_init(&gone);
		long jobs = 0;
		/* Job files first, then images, results last: a purge cut short never leaves a job file
		 * without its result, nor images with neither (a later run of the id would not clear
		 * them, spool-layout.md §15). */
		for (long i = 0; i < n; i++) {
			char id[JOB_ID_MAX + 1];
			size_t len = strlen(e[i].name);
			if (e[i].mtime_ns >= cutoff_ns || len < 6 || strcmp(e[i].name + len - 5, ".json") ||
			    (len > 12 && !strcmp(e[i].name + len - 12, ".result.json")) ||
			    job_id_from_name(e[i].name, id, sizeof(id)) < 0)
				continue;
			if (unlinkat(fd, e[i].name, 0) < 0) {
				if (errno == ENOENT)
					continue;
				rc = denied_or_error(c, "cannot remove a job from", spool_dir_name(d), errno);
				break;
			}
			strset_add(&gone, id);
			jobs++;
		}
		spool_sync_dir(&c->sp, d);
		for (int results = 0; results < 2; results++) {
			for (long i = 0; i < n && gone.count; i++) {
				char id[JOB_ID_MAX + 1];
				size_t len = strlen(e[i].name);
				bool is_result = len > 12 && !strcmp(e[i].name + len - 12, ".result.json");
				if (is_result == (bool)results && run_file_id(e[i].name, id, sizeof(id)) &&
				    strset_has(&gone, id))
					unlinkat(fd, e[i].name, 0);
			}
		}
		strset_release(&gone);
		spool_entries_free(e, n);
		printf("purged %ld job(s) from %s/\n", jobs, spool_dir_name(d));
		if (rc != CLI_OK)
			break;
	}
	return rc;
}

/* ---- pause, resume ------------------------------------------------------------------------ */

static int provider_arg(struct cli *c, int argc, char **argv, const char **provider)
{
	*provider = NULL;
	if (argc > 2)
		return cli_fail(c, CLI_USAGE, "usage: imgspool %s [PROVIDER]", c->verb);
	if (argc == 2) {
		char *name = control_name(CONTROL_PAUSE, argv[1]);
		const char *arg;
		bool ok = control_parse_name(name, &arg) == CONTROL_PAUSE && *arg;
		free(name);
		if (!ok)
			return cli_fail(c, CLI_USAGE, "'%s' is not a provider name", argv[1]);
		*provider = argv[1];
	}
	return CLI_OK;
}

int cli_pause(struct cli *c, int argc, char **argv)
{
	const char *provider;
	int rc = provider_arg(c, argc, argv, &provider);
	if (rc != CLI_OK)
		return rc;
	if (control_request(&c->sp, CONTROL_PAUSE, provider) < 0)
		return denied_or_error(c, "cannot write a request in", "control/", errno);
	printf("paused %s%s: no daemon on this spool starts a call%s until imgspool resume (calls in "
	       "flight finish)\n", provider ? "provider " : "every provider", provider ? provider : "",
	       provider ? " to it" : "");
	return CLI_OK;
}

int cli_resume(struct cli *c, int argc, char **argv)
{
	const char *provider;
	int rc = provider_arg(c, argc, argv, &provider);
	if (rc != CLI_OK)
		return rc;
	if (provider) {
		if (control_withdraw(&c->sp, CONTROL_PAUSE, provider) < 0)
			return denied_or_error(c, "cannot remove a request from", "control/", errno);
		struct control ctl;
		control_init(&ctl);
		bool all = control_read(&ctl, &c->sp) == 0 && ctl.pause_all;
		control_release(&ctl);
		printf("resumed provider %s%s\n", provider,
		       all ? " (but every provider is still paused: imgspool resume)" : "");
		return CLI_OK;
	}
	/* Without a provider: every pause goes. */
	int fd = c->sp.fd[SPOOL_CONTROL];
	if (fd >= 0) {
		struct spool_entry *e;
		long n = spool_list(&c->sp, SPOOL_CONTROL, &e);
		for (long i = 0; i < n; i++) {
			const char *arg;
			if (control_parse_name(e[i].name, &arg) == CONTROL_PAUSE &&
			    unlinkat(fd, e[i].name, 0) < 0 && errno != ENOENT) {
				rc = denied_or_error(c, "cannot remove a request from", "control/", errno);
				break;
			}
		}
		spool_entries_free(e, n);
	}
	if (rc == CLI_OK)
		printf("resumed every provider\n");
	return rc;
}
