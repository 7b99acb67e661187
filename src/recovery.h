/* recovery.h - leases, and what dead daemons left: reclaim, adopt, resume publications
 * (recovery.c). Part of the dispatcher. */
#ifndef RECOVERY_H
#define RECOVERY_H

#include <stdbool.h>
#include <limits.h>
#include <stdint.h>

#include "job.h"

struct dispatch;
struct loop;

void recovery_start(struct dispatch *d);
/* What a restart (or a reclaimer) does with the new run of a job put back that a kill left
 * beside it in running/ (sidecar_putback_name), from whether running/ID@HOST.json is there, is
 * the file its claim read (its inode), and has files of its own beside it, and whether the file
 * at the put-back's name is the daemon's own (a regular file of its user, one link): one that
 * is not is never put in place, and its job is claimed afresh as it is. Pure. */
enum recovery_putback {
	RECOVERY_PUTBACK_DROP,      /* removed: the job is adopted, or claimed, as it is */
	RECOVERY_PUTBACK_INSTALL,   /* renamed over the job file: the new run's records */
	RECOVERY_PUTBACK_RETURN,    /* removed, the job file back where it was claimed from */
};
enum recovery_putback recovery_putback_decide(bool ours, bool job_there, bool same_file,
					      bool job_has_files);
/* Whether name is HOST's mark running/.ID@HOST.reclaim.OWNER (made before the rename that
 * reclaims running/ID@OWNER.json, removed once OWNER's files of the job are HOST's); fills id
 * (JOB_ID_MAX + 1 bytes) and owner (NAME_MAX + 1). Pure. */
bool recovery_reclaim_mark_parse(const char *name, const char *host, char id[JOB_ID_MAX + 1],
				 char owner[NAME_MAX + 1]);
/* The heartbeat timer's callback (arg: the dispatch), and its interval. */
int64_t recovery_heartbeat(struct loop *loop, void *arg);
int64_t recovery_heartbeat_interval_ms(const struct dispatch *d);
void recovery_reclaim_stale(struct dispatch *d);
void recovery_resume_publications(struct dispatch *d, bool others);

#endif
