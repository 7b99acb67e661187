/* control.h - an operator's requests to every daemon on a spool, as files in control/.
 *
 *   control/pause             no daemon starts a call, to any provider
 *   control/pause.PROVIDER    no daemon starts a call to PROVIDER
 *   control/hold.ID           the daemon holding running job ID moves it to hold/ at its next
 *                             transition instead of to deferred/ or new/
 *   control/cancel.ID         the daemon holding running job ID cuts its call and fails it with
 *                             error code "cancelled"
 *   control/gone.KEY          the webhook endpoint whose key (webhook_endpoint_key) is KEY
 *                             answered 410 Gone: no daemon sends to it until the file is removed
 *                             (by an operator, or by a daemon's reload); the file holds the URL
 *
 * Files are the protocol because they reach every daemon of a shared spool: inotify wakes the
 * local ones, rescans the others. A daemon removes hold.ID and cancel.ID once job ID has left
 * its running/. Written by imgspool (the CLI), read by the daemon (spool-layout.md §13). */
#ifndef CONTROL_H
#define CONTROL_H

#include <stdbool.h>

#include "util.h"

struct spool;

enum control_kind { CONTROL_NONE, CONTROL_PAUSE, CONTROL_HOLD, CONTROL_CANCEL, CONTROL_GONE };

/* The kind of request a file name in control/ is, and in *arg its provider or task id ("" for
 * a plain "pause"). Pure. CONTROL_NONE for anything else (temporary files, junk). */
enum control_kind control_parse_name(const char *name, const char **arg);

/* What the files in control/ asked for when they were last read. */
struct control {
	bool pause_all;
	struct strset paused;    /* provider names */
	struct strset hold;      /* task ids */
	struct strset cancel;    /* task ids */
	struct strset gone;      /* webhook endpoint keys */
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
/* The same with text in the file (a gone endpoint's URL, for the operator). */
int control_write(struct spool *sp, enum control_kind kind, const char *arg, const char *text);
/* Counts a request as read before the next control_read sees its file (one this daemon just
 * wrote). */
void control_note(struct control *c, enum control_kind kind, const char *arg);
/* Removes every request of kind from control/ and from c: the number removed, -1 with errno. */
long control_withdraw_all(struct control *c, struct spool *sp, enum control_kind kind);
/* Removes a request; 0 when it is gone (or was never there), -1 with errno. */
int control_withdraw(struct spool *sp, enum control_kind kind, const char *arg);

#endif
