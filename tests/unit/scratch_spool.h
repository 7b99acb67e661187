/* scratch_spool.h - the unit tests' scratch spools: spool_open() in a mkdtemp(3) directory, and
 * scratch_spool_remove() once a test has emptied it. Header-only, like tap.h. */
#ifndef IMGSPOOL_TEST_SCRATCH_SPOOL_H
#define IMGSPOOL_TEST_SCRATCH_SPOOL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "spool.h"

/* Makes a scratch directory "imgspool-TAG-XXXXXX" in $TMPDIR (else /tmp) into buf: a run that
 * crashes leaves it where the harness cleans up. buf, or NULL. */
static inline char *scratch_mkdtemp(char *buf, size_t size, const char *tag)
{
	const char *tmp = getenv("TMPDIR");
	int n = snprintf(buf, size, "%s/imgspool-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
	return n > 0 && (size_t)n < size ? mkdtemp(buf) : NULL;
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
