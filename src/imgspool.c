/* imgspool.c - the client: submit a job, read its status, wait for it. Nothing but the spool
 * protocol of spool-layout.md; it never talks to the daemon.
 *
 *   imgspool -d SPOOL submit [-i ID] [FILE]   validate the job (FILE or stdin), write it to
 *                                             tmp/, rename it into new/, print its id
 *   imgspool -d SPOOL status ID               print the job's state; for a finished job, its
 *                                             result file; exit 0 done, 1 failed, 3 not finished
 *   imgspool -d SPOOL wait [-t SECONDS] ID    wait until the job is finished, then as status
 *
 * Exit codes: 0 succeeded / submitted, 1 failed, 2 usage or invalid job, 3 not finished, 4 not
 * found or I/O error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "job.h"
#include "util.h"
#include "banned.h"

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_PENDING = 3, EXIT_ERROR = 4 };

static _Noreturn void usage(void)
{
	fprintf(stderr, "usage: imgspool -d SPOOL submit [-i ID] [FILE]\n"
			"       imgspool -d SPOOL status ID\n"
			"       imgspool -d SPOOL wait [-t SECONDS] ID\n");
	exit(EXIT_USAGE);
}

static int read_input(const char *path, struct buf *out)
{
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
	if (fd < 0) {
		fprintf(stderr, "imgspool: cannot open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	char chunk[65536];
	ssize_t n;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (buf_append(out, chunk, (size_t)n) < 0) {
			fprintf(stderr, "imgspool: the job is larger than %zu bytes\n", out->max);
			n = -1;
			errno = EFBIG;
			break;
		}
	}
	if (path)
		close(fd);
	return n < 0 ? -1 : 0;
}

/* maildir's recipe (spool-layout.md §3): time, pid, host, randomness. */
static void make_id(char *id, size_t size)
{
	char host[64];
	unsigned char rnd[8];
	struct timespec ts;
	if (gethostname(host, sizeof(host)) < 0)
		xsnprintf(host, sizeof(host), "host");
	host[sizeof(host) - 1] = '\0';
	for (char *c = host; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		      *c == '-'))
			*c = '_';
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	clock_gettime(CLOCK_REALTIME, &ts);
	xsnprintf(id, size, "%lld.%06ld.%d.%s.%02x%02x%02x%02x%02x%02x%02x%02x", (long long)ts.tv_sec,
		  ts.tv_nsec / 1000, (int)getpid(), host, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
		  rnd[5], rnd[6], rnd[7]);
}

static int submit(const char *spool, int argc, char **argv)
{
	char id[JOB_ID_MAX + 1] = "";
	int opt;
	optind = 1;
	while ((opt = getopt(argc, argv, "i:")) != -1) {
		if (opt != 'i')
			usage();
		if (job_id_from_name(optarg, id, sizeof(id)) < 0) {
			fprintf(stderr, "imgspool: '%s' is not a valid task id (spool-layout.md §3)\n", optarg);
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1)
		usage();
	struct buf text;
	buf_init(&text, 1 << 20);
	if (read_input(optind < argc ? argv[optind] : NULL, &text) < 0)
		return EXIT_ERROR;
	/* The daemon would fail an invalid job in failed/; say so now instead. */
	struct job job;
	struct job_limits limits;
	struct job_error err;
	job_limits_default(&limits);
	limits.max_n = 10;   /* the daemon's operator sets the real cap */
	enum job_parse_result pr = job_parse(&job, text.data, text.len, &limits, &err);
	job_release(&job);
	if (pr != JOB_OK) {
		fprintf(stderr, "imgspool: invalid job%s%s%s: %s\n", err.field[0] ? " (field \"" : "",
			err.field, err.field[0] ? "\")" : "", err.message);
		buf_release(&text);
		return EXIT_USAGE;
	}
	if (!id[0])
		make_id(id, sizeof(id));
	char *tmp = xasprintf("%s/tmp/%s.json", spool, id), *dst = xasprintf("%s/new/%s.json", spool, id);
	int rc = EXIT_ERROR;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0 || write_all(fd, text.data, text.len) < 0 || fsync(fd) < 0) {
		fprintf(stderr, "imgspool: cannot write '%s': %s\n", tmp, strerror(errno));
	} else if (close(fd) < 0 || (fd = -1, rename(tmp, dst) < 0)) {
		fprintf(stderr, "imgspool: cannot move '%s' to '%s': %s\n", tmp, dst, strerror(errno));
	} else {
		fd = -1;
		printf("%s\n", id);
		rc = EXIT_DONE;
	}
	if (fd >= 0)
		close(fd);
	if (rc != EXIT_DONE)
		unlink(tmp);
	free(tmp);
	free(dst);
	buf_release(&text);
	return rc;
}

/* The job's state from the file system alone; NULL when it is nowhere. */
static const char *state_of(const char *spool, const char *id, char *owner, size_t osize)
{
	static const char *dirs[] = { "done", "failed", "new", "deferred" };
	struct stat st;
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char *p = xasprintf("%s/%s/%s.json", spool, dirs[i], id);
		int found = lstat(p, &st) == 0;
		free(p);
		if (found)
			return dirs[i];
	}
	char *running = xasprintf("%s/running", spool);
	DIR *dir = opendir(running);
	free(running);
	const char *state = NULL;
	struct dirent *de;
	size_t idlen = strlen(id);
	while (dir && (de = readdir(dir))) {
		if (!strncmp(de->d_name, id, idlen) && de->d_name[idlen] == '@') {
			xsnprintf(owner, osize, "%.*s", (int)(strlen(de->d_name) - idlen - 6),
				  de->d_name + idlen + 1);
			state = "running";
			break;
		}
	}
	if (dir)
		closedir(dir);
	return state;
}

static int status(const char *spool, const char *id, bool quiet_pending)
{
	char owner[128] = "";
	const char *state = state_of(spool, id, owner, sizeof(owner));
	if (!state) {
		if (!quiet_pending)
			fprintf(stderr, "imgspool: no job '%s' in '%s'\n", id, spool);
		return EXIT_ERROR;
	}
	if (strcmp(state, "done") && strcmp(state, "failed")) {
		if (!quiet_pending)
			printf("%s%s%s\n", state, owner[0] ? " on " : "", owner);
		return EXIT_PENDING;
	}
	char *path = xasprintf("%s/%s/%s.result.json", spool, state, id);
	struct buf text;
	buf_init(&text, 16 << 20);
	int rc = read_input(path, &text);
	free(path);
	if (rc == 0)
		fwrite(text.data, 1, text.len, stdout);
	buf_release(&text);
	return rc < 0 ? EXIT_ERROR : !strcmp(state, "done") ? EXIT_DONE : EXIT_FAILED;
}

static int wait_for_job(const char *spool, int argc, char **argv)
{
	long seconds = 0;
	int opt;
	optind = 1;
	while ((opt = getopt(argc, argv, "t:")) != -1) {
		if (opt != 't' || parse_long(optarg, 1, 86400 * 30, &seconds) < 0)
			usage();
	}
	if (argc - optind != 1)
		usage();
	const char *id = argv[optind];
	int64_t deadline = seconds ? mono_ms() + seconds * 1000 : 0;
	/* Polling is the protocol's way for any client on any host (NFS sends no events). */
	for (;;) {
		char owner[128];
		const char *state = state_of(spool, id, owner, sizeof(owner));
		if (state && (!strcmp(state, "done") || !strcmp(state, "failed")))
			return status(spool, id, false);
		if (deadline && mono_ms() > deadline) {
			fprintf(stderr, "imgspool: job '%s' not finished after %lds (%s)\n", id, seconds,
				state ? state : "not found");
			return EXIT_PENDING;
		}
		struct timespec pause = { .tv_nsec = 200 * 1000000 };
		nanosleep(&pause, NULL);
	}
}

int main(int argc, char **argv)
{
	const char *spool = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "+d:h")) != -1) {
		if (opt != 'd')
			usage();
		spool = optarg;
	}
	if (!spool || optind >= argc)
		usage();
	const char *cmd = argv[optind];
	int sub_argc = argc - optind;
	char **sub_argv = argv + optind;
	if (!strcmp(cmd, "submit"))
		return submit(spool, sub_argc, sub_argv);
	if (!strcmp(cmd, "status") && sub_argc == 2)
		return status(spool, sub_argv[1], false);
	if (!strcmp(cmd, "wait"))
		return wait_for_job(spool, sub_argc, sub_argv);
	usage();
}
