/* scratch_spool.h - the unit tests' scratch files and spools: every one in $TMPDIR (never a
 * hard-coded /tmp), and scratch_spool_remove() once a test has emptied its spool. Header-only,
 * like tap.h. */
#ifndef IMGSPOOL_TEST_SCRATCH_SPOOL_H
#define IMGSPOOL_TEST_SCRATCH_SPOOL_H

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "spool.h"

/* Puts the template "$TMPDIR/imgspool-TAG-XXXXXX" (else /tmp) into buf: make unit gives each
 * test a TMPDIR below build/, so a run that crashes leaves nothing in /tmp. 0, or -1 if too long. */
static inline int scratch_template(char *buf, size_t size, const char *tag)
{
	const char *tmp = getenv("TMPDIR");
	int n = snprintf(buf, size, "%s/imgspool-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
	return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Makes a scratch directory from scratch_template() into buf. buf, or NULL. */
static inline char *scratch_mkdtemp(char *buf, size_t size, const char *tag)
{
	return scratch_template(buf, size, tag) == 0 ? mkdtemp(buf) : NULL;
}

/* Makes a scratch file from scratch_template() into buf, open for reading and writing: its fd,
 * or -1. */
static inline int scratch_mkstemp(char *buf, size_t size, const char *tag)
{
	return scratch_template(buf, size, tag) == 0 ? mkstemp(buf) : -1;
}

/* Removes sp's state directories, closes it and removes its root, path. 0, or -1 when the test
 * left something in it (a state directory that is not empty stays, and so does path). */
static inline int scratch_spool_remove(struct spool *sp, const char *path)
{
	for (int d = 0; d < SPOOL_NDIRS; d++)
		unlinkat(sp->root_fd, spool_dir_name((enum spool_dir)d), AT_REMOVEDIR);
	spool_close(sp);
	return rmdir(path);
}

#endif
