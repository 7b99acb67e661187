/* record.h - the daemon's records in a job file (its "imgspool" key): what they hold, and what
 * the daemon believes of them.
 *
 * A job file is a client's file: whatever the daemon once wrote into it may come back changed.
 * So the records are only ever read through record_restore(), which holds them to one rule: no
 * content of a job file can buy more calls than submitting the same job fresh. Counters are
 * clamped to [0, their limit], so a record can only use up budget, never add to it. Pure: no I/O;
 * whether the file's writer is trusted at all is the caller's decision (spool-layout.md §4). */
#ifndef RECORD_H
#define RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define RECORD_RUNS_MAX 8            /* earlier runs kept; the oldest go first */
#define RECORD_RUN_ATTEMPTS_MAX 16   /* attempts kept of each earlier run; its last ones */

struct record_limits {
	int max_retries;
	int max_billed_retries;
	int max_crash_requeues;
};

struct record {
	json_t *attempts;        /* owned array: this run's attempts, never NULL */
	json_t *runs;            /* owned array: earlier runs, oldest first, never NULL */
	long runs_total;         /* earlier runs ever, kept ones included (runs are numbered) */
	int retry_count;         /* calls after the first, this run */
	int billed_retries;      /* of those, after an attempt that may have been billed */
	int crashes;             /* daemon deaths while this run was in running/ */
	int64_t created_at_ms;   /* this run's submission, 0 = not recorded */
	int64_t retry_at_ms;     /* written by a deferral: when the next call is due; 0 = none */
	char finished[16];       /* "succeeded" or "failed" once the run was published, else "" */
	char error_code[48];     /* the finished run's error.code, "" if none */
};

void record_init(struct record *r);
void record_release(struct record *r);
/* Reads state (the "imgspool" object; NULL or not an object = no records) into r, holding every
 * value to the rule above: counters outside [0, limit] or not integers are clamped, attempts that
 * are not objects are dropped, runs beyond the caps are cut. */
void record_restore(struct record *r, const json_t *state, const struct record_limits *limits);
/* Ends the run r holds (a finished one, resubmitted by hand or by `imgspool retry`) and starts a
 * fresh one with a full budget: the old run goes to runs, with its status, error code and last
 * attempts. */
void record_new_run(struct record *r, int64_t created_at_ms);
/* The records as the JSON object to store under "imgspool". */
json_t *record_json(const struct record *r);

#endif
