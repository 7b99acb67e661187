/* tmpclean.h - files clients left unfinished in tmp/, removed off the loop (spool-layout.md §10).
 *
 * At the first rescan and hourly, files in tmp/ not modified for 36 hours (by the file server's
 * clock) are removed. A helper thread lists and stats tmp/ a slice of names at a time; the loop
 * only hands the slices over, so a tmp/ of 200 000 files, or 20 000 over sshfs at a round trip
 * each, never holds it up (no claim, heartbeat or rescan waits), and a shutdown waits for one
 * slice at most. */
#ifndef TMPCLEAN_H
#define TMPCLEAN_H

struct dispatch;

/* Starts a pass if none is under way and the last began an hour ago or more (or never). */
void tmpclean_start(struct dispatch *d);

#endif
