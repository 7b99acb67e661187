/* strandlog.h - what the daemon says of the jobs it left in running/ (dispatch's stranded set:
 * a move out failed, a put-back not settled). Each rescan tries again to settle them; an error
 * said at every try (every poll_interval, for as long as a disk fails) would drown the log. So
 * a job's error is said once, and again only when it changes (another step, another errno);
 * once the job is no longer left there, one line says so, with how many tries failed quietly.
 * Allocation failure aborts (xmalloc); nothing here fails otherwise. */
#ifndef STRANDLOG_H
#define STRANDLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "util.h"

struct strandlog_entry {
	char *id;          /* owned */
	uint64_t said;     /* str_hash of the last line said */
	long retries;      /* tries that failed since the first, said or not */
};

struct strandlog {
	struct strandlog_entry *e;
	size_t n, cap;
};

void strandlog_init(struct strandlog *sl);
void strandlog_release(struct strandlog *sl);
/* Whether a line (its hash) is said, for a job whose last line said had hash said (0: none
 * yet). Pure. */
bool strandlog_says(uint64_t said, uint64_t line);
/* A line about job id left in running/: logged at level when strandlog_says, else counted. */
void strandlog_say(struct strandlog *sl, enum log_level level, const char *id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Jobs said of that are no longer in stranded: one line each, with the count of tries that
 * failed after the first, and forgotten. */
void strandlog_settled(struct strandlog *sl, const struct strset *stranded);

#endif
