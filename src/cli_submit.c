/* cli_submit.c - imgspool submit: check jobs with the daemon's own parser and dialect rules,
 * then hand them to the spool the way spool-layout.md §2 says (tmp/, then rename into new/).
 *
 *   submit [-i ID] [FILE...]      one job per file (none or "-": one job on standard input)
 *   submit --jsonl FILE|-         one job per line
 *   --wait                        then wait for all of them, with counts as they change
 *   --max-job-bytes N             the daemons' [limits] max_job_bytes (over imgspool -c's)
 *
 * Every job is checked before any is submitted: one bad line submits nothing. A job is held to
 * the [limits] of the daemon's configuration (imgspool -c, $IMGSPOOL_CONFIG), else to a daemon's
 * defaults, and a refusal says which and where from: a daemon leaves a job larger than its
 * max_job_bytes in new/ unread, for ever, and fails one past its max_n, max_depth or
 * max_pixels_mp. Ids follow the maildir recipe (§3), so
 * no two clients collide. Bulk submissions write a batch of files into tmp/, make them durable
 * with one syncfs(2), then rename them in. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

#define JSONL_MAX (1u << 30)         /* a JSONL file, read whole */
#define BATCH 512                    /* files per syncfs */
#define ERRORS_SHOWN 20

struct submission {
	char *text;
	size_t len;
	char *where;                 /* "FILE" or "line N", for messages */
	char id[JOB_ID_MAX + 1];
};

static int read_all(const char *path, size_t max, struct buf *out)
{
	int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
	if (fd < 0)
		return -1;
	buf_init(out, max);
	char chunk[65536];
	ssize_t n;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (buf_append(out, chunk, (size_t)n) < 0) {
			errno = EFBIG;
			n = -1;
			break;
		}
	}
	int saved = errno;
	if (fd != STDIN_FILENO)
		close(fd);
	errno = saved;
	return n < 0 ? -1 : 0;
}

/* The daemon's checks, on this side: the parser, then the request builder, which refuses what
 * the model's dialect cannot express (n > 1 or a mask on a Gemini model). */
static int check_job(const char *text, size_t len, const struct job_limits *limits, char *msg,
		     size_t size)
{
	struct job job;
	struct job_error err;
	enum job_parse_result pr = job_parse(&job, text, len, limits, &err);
	if (pr != JOB_OK) {
		if (err.field[0])
			xsnprintf(msg, size, "invalid job (field \"%s\"): %s", err.field, err.message);
		else
			xsnprintf(msg, size, "invalid job: %s", err.message);
		job_release(&job);
		return -1;
	}
	if (job.state) {
		xsnprintf(msg, size, "invalid job (field \"imgspool\"): reserved for the daemon's records");
		job_release(&job);
		return -1;
	}
	struct ref_image refs[JOB_REFS_MAX], mask = { .data = (const unsigned char *)"", .mime = "image/png",
						      .name = "mask.png" };
	for (int i = 0; i < job.n_refs; i++)
		refs[i] = (struct ref_image){ .data = (const unsigned char *)"", .mime = "image/png",
					      .name = "ref.png" };
	struct request req;
	char err_text[512];
	/* Without a model the provider's default decides the dialect; OpenAI's rules are the
	 * common ones. */
	int rc = upstream_build_request(&job, job.model ? job.model : "default", "http://check",
					refs, (size_t)job.n_refs, job.mask ? &mask : NULL, &req,
					err_text, sizeof(err_text));
	if (rc < 0)
		xsnprintf(msg, size, "invalid job for model \"%s\": %s", job.model ? job.model : "default",
			  err_text);
	request_release(&req);
	job_release(&job);
	return rc;
}

void cli_make_id(char *id, size_t size, const struct timespec *ts, int pid, const char *hostname,
		 const unsigned char rnd[8])
{
	char host[64];
	xsnprintf(host, sizeof(host), "%s", hostname && *hostname ? hostname : "host");
	for (char *c = host; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		      *c == '-'))
			*c = '_';
	/* The 'r' keeps the id from ending in '.' and digits only, the daemon's own names (16
	 * hex digits are all decimal once in about 1 800 draws). */
	xsnprintf(id, size, "%lld.%06ld.%d.%s.r%02x%02x%02x%02x%02x%02x%02x%02x", (long long)ts->tv_sec,
		  ts->tv_nsec / 1000, pid, host, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
		  rnd[7]);
}

static void make_id(char *id, size_t size)
{
	char host[64];
	unsigned char rnd[8];
	struct timespec ts;
	if (gethostname(host, sizeof(host)) < 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	clock_gettime(CLOCK_REALTIME, &ts);
	cli_make_id(id, size, &ts, (int)getpid(), host, rnd);
}

static void progress(bool tty, size_t done, size_t total)
{
	if (!tty || total < 2)
		return;
	int width = 40, filled = (int)(done * (size_t)width / total);
	fprintf(stderr, "\r[%.*s%*s] %zu/%zu", filled, "########################################",
		width - filled, "", done, total);
	if (done == total)
		fputc('\n', stderr);
	fflush(stderr);
}

/* Writes tmp/ID.json for a batch, syncs them all at once, renames them into new/. */
static int submit_batch(struct cli *c, struct submission *s, size_t n, size_t *submitted,
			size_t total, bool tty)
{
	int tmp = c->sp.fd[SPOOL_TMP], new = c->sp.fd[SPOOL_NEW];
	if (tmp < 0)
		return cli_fail(c, CLI_ERROR, "'%s' has no tmp/ directory", c->dir);
	for (size_t i = 0; i < n; i++) {
		char name[JOB_ID_MAX + 8];
		xsnprintf(name, sizeof(name), "%s.json", s[i].id);
		int fd = openat(tmp, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
		if (fd < 0 || write_all(fd, s[i].text, s[i].len) < 0 || (n == 1 && fsync(fd) < 0)) {
			int err = errno;
			if (fd >= 0) {
				close(fd);
				unlinkat(tmp, name, 0);
			}
			return cli_fail_errno(c, "cannot write", "tmp/", err);
		}
		close(fd);
	}
	if (n > 1)
		syncfs(tmp);
	for (size_t i = 0; i < n; i++) {
		char name[JOB_ID_MAX + 8];
		xsnprintf(name, sizeof(name), "%s.json", s[i].id);
		if (renameat(tmp, name, new, name) < 0) {
			int err = errno;
			unlinkat(tmp, name, 0);
			return cli_fail_errno(c, "cannot move a job into", "new/", err);
		}
		printf("%s\n", s[i].id);
		(*submitted)++;
	}
	fflush(stdout);
	progress(tty, *submitted, total);
	return CLI_OK;
}

/* --wait: counts of the submitted jobs by state, printed whenever they change. */
static int wait_all(struct cli *c, struct submission *s, size_t n)
{
	struct strset left;
	strset_init(&left);
	for (size_t i = 0; i < n; i++)
		strset_add(&left, s[i].id);
	bool tty = isatty(STDERR_FILENO);
	size_t done = 0, failed = 0;
	char last[128] = "";
	for (;;) {
		/* Finished jobs leave the set; the rest are counted where they are. */
		size_t running = 0;
		const enum spool_dir finished[] = { SPOOL_DONE, SPOOL_FAILED };
		for (size_t k = 0; k < ARRAY_SIZE(finished); k++) {
			struct spool_entry *e;
			long m = spool_list(&c->sp, finished[k], &e);
			for (long i = 0; i < m; i++) {
				char id[JOB_ID_MAX + 1];
				size_t len = strlen(e[i].name);
				if (len < 6 || strcmp(e[i].name + len - 5, ".json") ||
				    job_id_from_name(e[i].name, id, sizeof(id)) < 0 || !strset_del(&left, id))
					continue;
				*(finished[k] == SPOOL_DONE ? &done : &failed) += 1;
			}
			spool_entries_free(e, m);
		}
		struct spool_entry *e;
		long m = spool_list(&c->sp, SPOOL_RUNNING, &e);
		for (long i = 0; i < m; i++) {
			const char *at = strrchr(e[i].name, '@');
			if (!at)
				continue;
			char *id = xstrndup(e[i].name, (size_t)(at - e[i].name));
			running += strset_has(&left, id);
			free(id);
		}
		spool_entries_free(e, m);
		char line[128];
		xsnprintf(line, sizeof(line), "done %zu  failed %zu  running %zu  waiting %zu", done, failed,
			  running, left.count - running);
		if (strcmp(line, last)) {
			fprintf(stderr, tty ? "\r%s   " : "%s\n", line);
			fflush(stderr);
			xsnprintf(last, sizeof(last), "%s", line);
		}
		if (!left.count)
			break;
		struct timespec pause = { .tv_nsec = 250 * 1000000 };
		nanosleep(&pause, NULL);
	}
	if (tty)
		fputc('\n', stderr);
	strset_release(&left);
	return failed ? CLI_FAILED : CLI_OK;
}

int cli_submit(struct cli *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "jsonl", required_argument, NULL, 'l' },
		{ "wait", no_argument, NULL, 'w' },
		{ "max-job-bytes", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	const char *usage = "usage: imgspool submit [-i ID] [--wait] [--max-job-bytes N] [FILE...|-] | "
			    "--jsonl FILE|-";
	char given_id[JOB_ID_MAX + 1] = "";
	const char *jsonl = NULL;
	bool wait = false;
	long max_job_bytes = 0;
	int opt;
	while ((opt = getopt_long(argc, argv, "i:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			if (parse_long(optarg, 1024, CONFIG_JOB_BYTES_CEILING, &max_job_bytes) < 0)
				return cli_fail(c, CLI_USAGE, "--max-job-bytes takes the daemons' [limits] "
						"max_job_bytes: a number of bytes from 1024 to %ld",
						CONFIG_JOB_BYTES_CEILING);
			break;
		case 'i':
			if (!cli_task_id(optarg, given_id, sizeof(given_id)))
				return cli_fail(c, CLI_USAGE, "'%s' is not a valid task id (spool-layout.md §3)",
						optarg);
			break;
		case 'l':
			jsonl = optarg;
			break;
		case 'w':
			wait = true;
			break;
		default:
			return cli_fail(c, CLI_USAGE, "%s", usage);
		}
	}
	int nfiles = argc - optind;
	if (jsonl && nfiles)
		return cli_fail(c, CLI_USAGE, "%s", usage);
	static const char *standard_input[] = { "-" };
	if (given_id[0] && (jsonl || nfiles > 1))
		return cli_fail(c, CLI_USAGE, "-i names one job: it cannot be used with several");

	/* What the daemons allow: --max-job-bytes, else the daemon's configuration, else the
	 * defaults. A job refused only by these limits, not by the widest, is told where they came
	 * from. */
	struct job_limits limits, widest;
	char too_big_why[PATH_MAX + 200], config_from[PATH_MAX + 64] = "";
	if (c->cfg) {
		config_job_limits(c->cfg, &limits);
		xsnprintf(config_from, sizeof(config_from), "'%s' (%s)", c->cfg->path, c->cfg_named);
	} else {
		job_limits_default(&limits);
	}
	config_job_limits_widest(&widest);
	bool held_by_limits = false;
	if (max_job_bytes)
		xsnprintf(too_big_why, sizeof(too_big_why), ", the --max-job-bytes given");
	else if (c->cfg)
		xsnprintf(too_big_why, sizeof(too_big_why), ", the [limits] max_job_bytes of %s: its "
			  "daemons leave a larger job in new/ unread", config_from);
	else
		xsnprintf(too_big_why, sizeof(too_big_why), ", the daemon's default [limits] max_job_bytes: "
			  "a daemon leaves a larger job in new/ unread (one configured for more: imgspool -c "
			  "ITS_CONFIG, IMGSPOOL_CONFIG=ITS_CONFIG, or --max-job-bytes)");
	if (!max_job_bytes)
		max_job_bytes = c->cfg ? c->cfg->max_job_bytes : CONFIG_JOB_BYTES_DEFAULT;
	const size_t job_max = (size_t)max_job_bytes;

	struct submission *subs = NULL;
	size_t n = 0, alloc = 0, bad = 0;
	struct buf text;
	int rc = CLI_OK;
	/* No file: one job on standard input. */
	const char **inputs = jsonl ? &jsonl : nfiles ? (const char **)argv + optind : standard_input;
	int ninputs = jsonl || !nfiles ? 1 : nfiles;
	char **whole = xcalloc((size_t)ninputs, sizeof(*whole));
	for (int f = 0; f < ninputs; f++) {
		if (read_all(inputs[f], jsonl ? JSONL_MAX : job_max, &text) < 0) {
			rc = errno == EFBIG ? cli_fail(c, CLI_USAGE, "'%s' is larger than %zu bytes%s", inputs[f],
						       jsonl ? JSONL_MAX : job_max, jsonl ? "" : too_big_why)
			     : cli_fail(c, CLI_ERROR, "cannot read '%s': %s", inputs[f], strerror(errno));
			buf_release(&text);
			goto out;
		}
		size_t len;
		whole[f] = buf_detach(&text, &len);
		if (!whole[f])
			whole[f] = xstrdup("");
		char *p = whole[f], *end = whole[f] + len;
		for (long line = 1; p < end || (!jsonl && p == end && line == 1); line++) {
			char *nl = jsonl ? memchr(p, '\n', (size_t)(end - p)) : NULL;
			char *stop = nl ? nl : end;
			bool blank = true;
			for (char *q = p; q < stop; q++)
				blank &= *q == ' ' || *q == '\t' || *q == '\r';
			if (!(jsonl && blank)) {
				if (n == alloc) {
					alloc = alloc ? alloc * 2 : 64;
					subs = xrealloc(subs, alloc * sizeof(*subs));
				}
				subs[n] = (struct submission){ .text = p, .len = (size_t)(stop - p) };
				subs[n].where = jsonl ? xasprintf("%s line %ld", strcmp(inputs[f], "-") ?
								   inputs[f] : "standard input", line)
					: xstrdup(strcmp(inputs[f], "-") ? inputs[f] : "standard input");
				char msg[PATH_MAX + 700];
				bool too_big = subs[n].len > job_max;   /* a file is capped as it is read */
				if (too_big)
					xsnprintf(msg, sizeof(msg), "larger than %zu bytes%s", job_max, too_big_why);
				bool refused = too_big || check_job(p, subs[n].len, &limits, msg, sizeof(msg)) < 0;
				char wide_msg[PATH_MAX + 700];
				held_by_limits |= refused && !too_big &&
						  check_job(p, subs[n].len, &widest, wide_msg, sizeof(wide_msg)) == 0;
				if (refused && ++bad <= ERRORS_SHOWN)
					cli_fail(c, CLI_USAGE, "%s: %s", subs[n].where, msg);
				n++;
			}
			p = nl ? nl + 1 : end;
			if (!jsonl)
				break;
		}
	}
	if (held_by_limits)
		cli_fail(c, CLI_USAGE, "held to [limits] max_n = %d, max_depth = %d, max_pixels_mp = %d%s%s%s",
			 limits.max_n, limits.max_depth, limits.max_pixels_mp,
			 limits.max_pixels_mp ? "" : " (no limit)", c->cfg ? " of " : "",
			 c->cfg ? config_from : ", a daemon's defaults: for a daemon configured for more, "
			 "give its configuration (imgspool -c ITS_CONFIG, or IMGSPOOL_CONFIG=ITS_CONFIG)");
	if (bad) {
		rc = cli_fail(c, CLI_USAGE, "%zu of %zu job(s) invalid: nothing submitted", bad, n);
		goto out;
	}
	if (n == 0) {
		rc = cli_fail(c, CLI_USAGE, "no job in the input");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (given_id[0])
			xsnprintf(subs[i].id, sizeof(subs[i].id), "%s", given_id);
		else
			make_id(subs[i].id, sizeof(subs[i].id));
	}
	bool tty = isatty(STDERR_FILENO);
	size_t submitted = 0;
	for (size_t i = 0; i < n && rc == CLI_OK; i += BATCH)
		rc = submit_batch(c, subs + i, n - i < BATCH ? n - i : BATCH, &submitted, n, tty);
	if (rc == CLI_OK && wait)
		rc = wait_all(c, subs, n);
out:
	for (size_t i = 0; i < n; i++)
		free(subs[i].where);
	free(subs);
	for (int f = 0; f < ninputs; f++)
		free(whole[f]);
	free(whole);
	return rc;
}
