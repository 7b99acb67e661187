/* said.h - what the code under test logged: stderr kept in a file while a test runs, read back
 * whole or since the last look, and how often something was said. Header-only, like tap.h. */
#ifndef IMGSPOOL_TEST_SAID_H
#define IMGSPOOL_TEST_SAID_H

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"

struct said {
	int fd, stderr_fd;
	off_t at;               /* said_since has read up to here */
	char text[8192];        /* the last look */
};

/* From now on stderr goes to path, a new file. Whether it does. */
static inline bool said_start(struct said *s, const char *path)
{
	s->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	s->stderr_fd = dup(STDERR_FILENO);
	s->at = 0;
	s->text[0] = '\0';
	return s->fd >= 0 && s->stderr_fd >= 0 && dup2(s->fd, STDERR_FILENO) >= 0;
}

static inline const char *said_from(struct said *s, off_t from)
{
	log_flush_all();
	ssize_t got = pread(s->fd, s->text, sizeof(s->text) - 1, from);
	s->text[got > 0 ? got : 0] = '\0';
	return s->text;
}

/* Everything said so far, in s->text. */
static inline const char *said_so_far(struct said *s)
{
	return said_from(s, 0);
}

/* What was said since the last call, in s->text. */
static inline const char *said_since(struct said *s)
{
	said_from(s, s->at);
	s->at += (off_t)strlen(s->text);
	return s->text;
}

/* stderr back where it was; s->text holds everything said. */
static inline void said_end(struct said *s)
{
	said_so_far(s);
	dup2(s->stderr_fd, STDERR_FILENO);
	close(s->stderr_fd);
	close(s->fd);
}

/* How many times needle is in text. */
static inline int said_count(const char *text, const char *needle)
{
	int n = 0;
	for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle))
		n++;
	return n;
}

#endif
