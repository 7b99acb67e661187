/* cli.h - what the verbs of imgspool(1) share: the spool they act on, errors in one shape,
 * where a job is, and what is known about it. The CLI is a client of the spool protocol
 * (spool-layout.md) like any other: it shares spool.c, job.c, control.c and result.c with the
 * daemon, never its loop.
 *
 * Exit codes are in imgspool(1); every verb returns one of these. */
#ifndef CLI_H
#define CLI_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "config.h"
#include "job.h"
#include "record.h"
#include "result.h"
#include "spool.h"
#include "util.h"

enum cli_exit {
	CLI_OK = 0,              /* succeeded / done / acted on every job */
	CLI_FAILED = 1,          /* a job failed, or could not be acted on */
	CLI_USAGE = 2,           /* bad arguments, invalid job */
	CLI_PENDING = 3,         /* not finished in time */
	CLI_ERROR = 4,           /* no such job or spool, I/O error */
	CLI_DENIED = 5,          /* permission denied: the verb needs the daemon's user */
};

struct cli {
	const char *verb;
	const char *dir;         /* -d, -c's [spool] dir, IMGSPOOL_DIR, IMGSPOOL_CONFIG's, ./spool */
	const char *dir_from;    /* which of them, for messages: "-d", "-c", "$IMGSPOOL_DIR", ... */
	const struct config *cfg; /* the daemon's configuration, or NULL */
	const char *cfg_named;   /* how: "given with -c" or "named by $IMGSPOOL_CONFIG" */
	struct spool sp;
	bool attached;
};

/* Prints "imgspool: VERB: message" and returns code. */
int cli_fail(const struct cli *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for a failed system call on path: EACCES and EPERM say which user the verb needs
 * and return CLI_DENIED; everything else returns CLI_ERROR. */
int cli_fail_errno(const struct cli *c, const char *what, const char *path, int err);
/* Opens the spool (never creating it): CLI_OK, or an error said plainly ("no such spool"). */
int cli_attach(struct cli *c);
/* The fd of a state directory, created when an older spool lacks it (hold/, control/); -1 with
 * errno when it cannot be. */
int cli_dir(struct cli *c, enum spool_dir d);

/* Where a job is: its directory, its file name there, and the host holding it when running. */
struct cli_where {
	enum spool_dir dir;
	char name[NAME_MAX + 1];
	char host[NAME_MAX + 1];
};
/* Looks in every state directory; 0 when found, -1 when the job is nowhere. A job moving
 * between two directories while we look is looked for again; one being published (its job
 * file in its staging directory) for up to CLI_PUBLISH_WAIT_MS, then it is "running on HOST". */
#define CLI_PUBLISH_WAIT_MS 30000
#define CLI_PUBLISH_POLL_MS 20
int cli_locate(struct cli *c, const char *id, struct cli_where *w);
/* "pending", "running on HOST", "deferred", "held", "done", "failed". */
const char *cli_state_word(enum spool_dir d);
/* Whether a command-line id is a valid task id (a trailing .json is allowed); fills id. */
bool cli_task_id(const char *arg, char *id, size_t size);

/* The most the verbs read of a job file or a result: the largest job file any daemon reads
 * and the largest result any daemon writes, whatever its max_job_bytes, so every job a daemon
 * took can be shown, cancelled and retried. More is not a file of ours. */
#define CLI_READ_MAX (RECORD_FILE_MAX(CONFIG_JOB_BYTES_CEILING) > RESULT_READ_MAX \
		      ? RECORD_FILE_MAX(CONFIG_JOB_BYTES_CEILING) : RESULT_READ_MAX)
/* Reads d/name as hostile (spool_read_file, at most CLI_READ_MAX bytes) into text (initialised
 * here; the caller releases it). st gets the file's fstat. */
enum spool_read cli_read_text(struct cli *c, enum spool_dir d, const char *name, struct buf *text,
			      struct stat *st);
/* The same, parsed: the document (owned), or NULL with *rr saying why (SPOOL_READ_OK and NULL:
 * not JSON). */
json_t *cli_read_json(struct cli *c, enum spool_dir d, const char *name, enum spool_read *rr,
		      struct stat *st);

/* The CLI has no [retry] limits: the records' counters are only shown, never acted on. */
struct record_limits;
extern const struct record_limits cli_shown_limits;

/* What ls, show, stat and gallery show about one job, from its file and result. */
struct cli_info {
	char id[JOB_ID_MAX + 1];
	enum spool_dir dir;
	char host[NAME_MAX + 1];     /* running only */
	int64_t mtime_ms;            /* of the job file in its directory */
	int64_t age_from_ms;         /* submission for active jobs, the finish for done/failed */
	int64_t next_retry_ms;       /* deferred: the job file's mtime */
	char provider[72];
	char model[136];
	char error_code[48];
	int attempts;
	bool has_cost;
	double cost;
	char currency[8];
	json_t *doc;                 /* owned: the result (done/failed) or the job file, or NULL */
};
/* Fills info for the job file name in dir (mtime_ms known from a listing, or -1 to stat).
 * Returns 0, or -1 when the file is gone or is not a job. Keeps doc when keep_doc: the whole
 * result (or job file), or, past CLI_PARSE_WHOLE_MAX, only the members info and the gallery
 * use (never the metadata). */
#define CLI_PARSE_WHOLE_MAX (64u << 10)
int cli_info_read(struct cli *c, enum spool_dir dir, const char *name, int64_t mtime_ms,
		  bool keep_doc, struct cli_info *info);
void cli_info_release(struct cli_info *info);

/* Whether name is a job file of state d: ID.json (or ID in new/), ID@HOST.json in running/;
 * never a result, an image or a hidden name. Pure. */
bool cli_is_job_file(enum spool_dir d, const char *name);

/* The job files of state directories, with their mtimes and nothing else: what ls, stat and
 * gallery keep of 100 000 jobs is this index (about 70 bytes a job), never their documents,
 * which they read one at a time. */
struct cli_job {
	int64_t mtime_ns;
	size_t name;             /* offset in the index's names */
	enum spool_dir dir;
};
struct cli_index {
	struct cli_job *jobs;
	size_t n, alloc;
	char *names;             /* owned: the names, each NUL-terminated */
	size_t names_len, names_alloc;
};
void cli_index_init(struct cli_index *ix);
/* Adds the job files of d (one fstatat each, for its mtime); 0, or -1 with errno. */
int cli_index_add(struct cli *c, struct cli_index *ix, enum spool_dir d);
/* Oldest first (mtime, then name), as the daemon takes them; or newest first (mtime to the
 * millisecond, then id), as the gallery shows them. */
void cli_index_sort(struct cli_index *ix, bool newest_first);
const char *cli_index_name(const struct cli_index *ix, size_t i);
void cli_index_release(struct cli_index *ix);

/* The states a user may name on the command line, in the order ls shows them. */
extern const enum spool_dir cli_states[6];
/* The arguments from optind on, done and/or failed (both when none): want[0] done, want[1]
 * failed. CLI_OK, or CLI_USAGE said. */
int cli_finished_states(const struct cli *c, int argc, char **argv, bool want[2]);
/* Parses a state name ("new", "hold", ...); -1 if it is not one. */
int cli_state_from_name(const char *name);

/* "90m", "12h", "30d", "45s" or plain seconds; -1 when not a duration. Pure. */
int64_t cli_parse_duration(const char *s);
/* qshape's buckets: index 0 for up to 5 minutes, then doubling (10m .. 640m), 8 for more. */
#define CLI_BUCKETS 9
int cli_age_bucket(int64_t age_ms);
extern const char *const cli_bucket_names[CLI_BUCKETS];
/* "45s", "12m", "3h", "2d": a short age for a table. */
void cli_format_age(int64_t ms, char *out, size_t size);

/* A new task id by the recipe of spool-layout.md §3 (time, pid, host, "r" and 16 hex digits
 * of rnd), valid for any host name and any rnd. Pure. */
struct timespec;
void cli_make_id(char *id, size_t size, const struct timespec *ts, int pid, const char *hostname,
		 const unsigned char rnd[8]);

/* The verbs: argv[0] is the verb's name. Each in a file of its own group. */
int cli_submit(struct cli *c, int argc, char **argv);      /* cli_submit.c */
int cli_status(struct cli *c, int argc, char **argv);      /* cli_query.c */
int cli_show(struct cli *c, int argc, char **argv);
int cli_wait(struct cli *c, int argc, char **argv);
int cli_ls(struct cli *c, int argc, char **argv);
int cli_stat(struct cli *c, int argc, char **argv);
int cli_hold(struct cli *c, int argc, char **argv);        /* cli_steer.c */
int cli_release(struct cli *c, int argc, char **argv);
int cli_cancel(struct cli *c, int argc, char **argv);
int cli_retry(struct cli *c, int argc, char **argv);
int cli_purge(struct cli *c, int argc, char **argv);
int cli_pause(struct cli *c, int argc, char **argv);
int cli_resume(struct cli *c, int argc, char **argv);
int cli_gallery(struct cli *c, int argc, char **argv);     /* cli_gallery.c */

#endif
