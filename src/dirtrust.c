/* dirtrust.c - whom the daemon trusts with the spool's directories (dirtrust.h). Pure. */
#include <sys/stat.h>

#include "dirtrust.h"
#include "util.h"
#include "banned.h"

bool dirtrust_owner_ok(uint32_t uid, uint32_t euid, uint32_t own_uid)
{
	return uid == euid || uid == 0 || uid == own_uid;
}

enum dirtrust_verdict dirtrust_judge(enum dirtrust_kind kind, uint32_t uid, uint32_t mode,
				     uint32_t euid, uint32_t own_uid)
{
	if (!dirtrust_owner_ok(uid, euid, own_uid))
		return DIRTRUST_OWNER;
	bool writable = mode & (S_IWGRP | S_IWOTH);
	switch (kind) {
	case DIRTRUST_ROOT:
		/* With the sticky bit only a directory's owner may rename or remove it. */
		return writable && !(mode & S_ISVTX) ? DIRTRUST_NO_STICKY : DIRTRUST_OK;
	case DIRTRUST_TRUSTED:
		return writable ? DIRTRUST_WRITABLE : DIRTRUST_OK;
	case DIRTRUST_DAEMON:
		return writable ? DIRTRUST_WARN_WRITABLE : DIRTRUST_OK;
	case DIRTRUST_CLIENTS:
		break;
	}
	return DIRTRUST_OK;
}

void dirtrust_explain(char *out, size_t size, enum dirtrust_verdict v, uint32_t uid,
		      uint32_t mode, uint32_t euid)
{
	unsigned perm = mode & 07777;
	switch (v) {
	case DIRTRUST_OK:
		xsnprintf(out, size, "is the daemon's");
		break;
	case DIRTRUST_OWNER:
		xsnprintf(out, size, "is owned by uid %u, not by the daemon's user (uid %u) or root: "
			  "its owner could put there what the daemon would take for its own; chown "
			  "it to the daemon's user", uid, euid);
		break;
	case DIRTRUST_NO_STICKY:
		xsnprintf(out, size, "is writable by its group or others (mode %04o) without the "
			  "sticky bit: a client could rename the state directories and put her own "
			  "in their place; chmod +t it", perm);
		break;
	case DIRTRUST_WRITABLE:
		xsnprintf(out, size, "is writable by its group or others (mode %04o): only the "
			  "daemon's user may write running/, control/, outbox/, ledger/ and "
			  "providers/, whose contents the daemon believes; chmod go-w it", perm);
		break;
	case DIRTRUST_WARN_WRITABLE:
		xsnprintf(out, size, "is writable by its group or others (mode %04o): clients "
			  "could move or remove what the daemon put there; chmod go-w it", perm);
		break;
	}
}
