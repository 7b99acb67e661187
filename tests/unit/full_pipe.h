/* full_pipe.h - a pipe with no room left, for the unit tests of writes that stall (a stderr that
 * does not drain, a spool on a stalled NFS). Header-only, like tap.h. */
#ifndef IMGSPOOL_TEST_FULL_PIPE_H
#define IMGSPOOL_TEST_FULL_PIPE_H

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

/* A pipe whose write end (blocking) has no room left: the next write there waits for a read.
 * Returns the bytes in it, -1 if there is no pipe. */
static inline ssize_t full_pipe(int fd[2])
{
	if (pipe2(fd, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	char fill[4096] = { 0 };
	ssize_t in = 0, n;
	while ((n = write(fd[1], fill, sizeof(fill))) > 0 || (n = write(fd[1], fill, 1)) > 0)
		in += n;
	fcntl(fd[1], F_SETFL, 0);
	return in;
}

#endif
