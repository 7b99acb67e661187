/* recovery.h - leases, and what dead daemons left: reclaim, adopt, resume publications
 * (recovery.c). Part of the dispatcher. */
#ifndef RECOVERY_H
#define RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

struct dispatch;
struct loop;

void recovery_start(struct dispatch *d);
/* The heartbeat timer's callback (arg: the dispatch), and its interval. */
int64_t recovery_heartbeat(struct loop *loop, void *arg);
int64_t recovery_heartbeat_interval_ms(const struct dispatch *d);
void recovery_reclaim_stale(struct dispatch *d);
void recovery_resume_publications(struct dispatch *d, bool others);

#endif
