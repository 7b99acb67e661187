/* dirtrust.h - whom the daemon trusts with the spool's directories (spool-layout.md §12).
 *
 * Whoever may rename in the spool's root may put her own directory at running/ or control/;
 * whoever owns running/ may put files there that pass for the daemon's. So the root must be
 * owned by the daemon's user (or root) and, when its group or others may write it, carry the
 * sticky bit; every state directory must be owned by the daemon's user (or root); and those
 * whose contents the daemon trusts (running/, control/, outbox/, ledger/, providers/) must be
 * writable by no one else. Pure: the caller gives the owner and mode it found. */
#ifndef IMGSPOOL_DIRTRUST_H
#define IMGSPOOL_DIRTRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a directory is to the daemon. */
enum dirtrust_kind {
	DIRTRUST_ROOT,       /* the spool's root: its entries are the state directories */
	DIRTRUST_CLIENTS,    /* tmp/, new/: clients write here */
	DIRTRUST_DAEMON,     /* deferred/, done/, failed/, hold/: only the daemon writes here */
	DIRTRUST_TRUSTED,    /* running/, control/, outbox/, ledger/, providers/: what is there is believed */
};

enum dirtrust_verdict {
	DIRTRUST_OK,
	DIRTRUST_OWNER,          /* owned by someone else than the daemon's user or root: refused */
	DIRTRUST_NO_STICKY,      /* a root others may write without the sticky bit: refused */
	DIRTRUST_WRITABLE,       /* a trusted directory group or others may write: refused */
	DIRTRUST_WARN_WRITABLE,  /* a directory of the daemon's group or others may write: said */
};

/* Whether a file owned by uid is the daemon's: its user (euid), root, or the owner its own
 * files get on the spool's file system (own_uid: an NFS server's mapping, root squashed). */
bool dirtrust_owner_ok(uint32_t uid, uint32_t euid, uint32_t own_uid);

/* The verdict on a directory of kind owned by uid with mode (st_mode). */
enum dirtrust_verdict dirtrust_judge(enum dirtrust_kind kind, uint32_t uid, uint32_t mode,
				     uint32_t euid, uint32_t own_uid);

/* Why v, for the log: "is owned by uid 23456, not ...", with what to do about it. */
void dirtrust_explain(char *out, size_t size, enum dirtrust_verdict v, uint32_t uid,
		      uint32_t mode, uint32_t euid);

#endif
