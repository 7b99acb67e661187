/* control.h - an operator's requests to every daemon on a spool, as files in control/.
 *
 *   control/pause             no daemon starts a call, to any provider
 *   control/pause.PROVIDER    no daemon starts a call to PROVIDER
 *   control/hold.ID           the daemon holding running job ID moves it to hold/ at its next
 *                             transition instead of to deferred/ or new/
 *   control/cancel.ID         the daemon holding running job ID cuts its call and fails it with
 *                             error code "cancelled"
 *
 * Files are the protocol because they reach every daemon of a shared spool: inotify wakes the
 * local ones, rescans the others. A daemon removes hold.ID and cancel.ID once job ID has left
 * its running/. Written by imgspool (the CLI), read by the daemon (spool-layout.md §13). */
#ifndef CONTROL_H
#define CONTROL_H

#include <stdbool.h>

#include "util.h"

struct spool;

enum control_kind { CONTROL_NONE, CONTROL_PAUSE, CONTROL_HOLD, CONTROL_CANCEL };

/* The kind of request a file name in control/ is, and in *arg its provider or task id ("" for
 * a plain "pause"). Pure. CONTROL_NONE for anything else (temporary files, junk). */
enum control_kind control_parse_name(const char *name, const char **arg);

/* What the files in control/ asked for when they were last read. */
struct control {
	bool pause_all;
	struct strset paused;    /* provider names */
	struct strset hold;      /* task ids */
	struct strset cancel;    /* task ids */
};

void control_init(struct control *c);
void control_release(struct control *c);
/* Rereads control/ (a missing directory asks for nothing). Returns 0 or -1 with errno, keeping
 * what was known before. */
int control_read(struct control *c, struct spool *sp);
bool control_paused(const struct control *c, const char *provider);
bool control_wants(const struct control *c, enum control_kind kind, const char *id);

/* The file name of a request ("pause", "pause.NAME", "hold.ID", "cancel.ID"); caller frees. */
char *control_name(enum control_kind kind, const char *arg);
/* Writes a request durably (temporary name, fsync, rename), creating control/ when missing.
 * Returns 0 or -1 with errno. */
int control_request(struct spool *sp, enum control_kind kind, const char *arg);
/* Removes a request; 0 when it is gone (or was never there), -1 with errno. */
int control_withdraw(struct spool *sp, enum control_kind kind, const char *arg);

#endif
