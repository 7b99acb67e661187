/* record.h - the daemon's records in a job file (its "imgspool" key): what they hold, and what
 * the daemon believes of them.
 *
 * A job file is a client's file: whatever the daemon once wrote into it may come back changed.
 * So the records are only ever read through record_restore(), which holds them to one rule: no
 * content of a job file can buy more calls than submitting the same job fresh. Counters are
 * clamped to [0, their limit], so a record can only use up budget, never add to it. Pure: no I/O;
 * whether the file's writer is trusted at all is the caller's decision (spool-layout.md §4).
 *
 * The records are bounded however long a job lives (a hold probed for days, a crash loop): a run
 * lists its last RECORD_ATTEMPTS_MAX attempts, and what the earlier ones add up to is kept in a
 * tally, so every figure derived from attempts (billed attempts, cost) stays right. */
#ifndef RECORD_H
#define RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define RECORD_RUNS_MAX 8            /* earlier runs kept; the oldest go first */
#define RECORD_ATTEMPTS_MAX 16       /* attempts listed of a run (this one or an earlier one):
				      * its last ones; the others are tallied */
#define RECORD_TEXT_MAX (48u << 10)  /* bytes of the records as written: earlier runs are dropped,
				      * oldest first, to stay within */
/* What a job file the daemon wrote may take beyond the client's bytes: the records and the
 * bytes that splice them in (job_with_records). The daemon reads files up to max_job_bytes plus
 * this, so a file it wrote is always readable. */
#define RECORD_HEADROOM (64u << 10)
/* The most a job file held to max_job_bytes may take once the daemon has written its records. */
#define RECORD_FILE_MAX(max_job_bytes) ((size_t)(max_job_bytes) + RECORD_HEADROOM)

/* What a run's attempts add up to (the rules of the result, spool-layout.md §6). */
struct record_tally {
	long attempts;           /* how many */
	long billed;             /* of those, billed "yes" or "unknown": the most paid for */
	double cost;             /* the sum of their costs */
	bool cost_unknown;       /* one that may have been billed has no price: no sum is right */
	bool estimated;          /* one's billing is unknown: the sum is an upper bound */
};

struct record_limits {
	int max_retries;
	int max_billed_retries;
	int max_crash_requeues;
};

struct record {
	json_t *attempts;        /* owned array: this run's last attempts, never NULL */
	struct record_tally elided; /* this run's earlier attempts, no longer listed */
	json_t *runs;            /* owned array: earlier runs, oldest first, never NULL (but for
				  * record_text, which reads it only when runs_total is not 0) */
	long runs_total;         /* earlier runs ever, kept ones included (runs are numbered) */
	int retry_count;         /* calls after the first, this run */
	int billed_retries;      /* of those, after an attempt that may have been billed */
	int crashes;             /* daemon deaths while this run was in running/ */
	int finish_crashes;      /* of those, deaths while it was finished from a saved response */
	int64_t created_at_ms;   /* this run's submission, 0 = not recorded */
	int64_t retry_at_ms;     /* written by a deferral: when the next call is due; 0 = none */
	char finished[16];       /* "succeeded" or "failed" once the run was published, else "" */
	char error_code[48];     /* the finished run's error.code, "" if none */
};

void record_init(struct record *r);
void record_release(struct record *r);
/* Reads state (the "imgspool" object; NULL or not an object = no records) into r, holding every
 * value to the rule above: counters outside [0, limit] or not integers are clamped, attempts that
 * are not objects are dropped, fields of an attempt that are not what the daemon writes are
 * dropped or cut, attempts and runs beyond the caps are tallied or cut. */
void record_restore(struct record *r, const json_t *state, const struct record_limits *limits);
/* Appends attempt (stolen; as result_attempt_json makes it, held to the same rules as a restored
 * one) to attempts; past RECORD_ATTEMPTS_MAX the oldest leave it for the elided tally. */
void record_add_attempt(json_t *attempts, struct record_tally *elided, json_t *attempt);
/* Counts one attempt object into t. */
void record_tally_add(struct record_tally *t, const json_t *attempt);
/* Ends the run r holds (a finished one, resubmitted by hand or by `imgspool retry`) and starts a
 * fresh one with a full budget: the old run goes to runs, with its status, error code, last
 * attempts and the tally of the others. */
void record_new_run(struct record *r, int64_t created_at_ms);
/* The records as the JSON object to store under "imgspool": at most RECORD_TEXT_MAX bytes as
 * compact JSON (record_text), this run always whole. */
json_t *record_json(const struct record *r);
/* The same as compact JSON text (caller frees). */
char *record_text(const struct record *r);

#endif
