/* download.h - images a response returns as URLs, fetched before the publication (download.c).
 * Part of the dispatcher. */
#ifndef DOWNLOAD_H
#define DOWNLOAD_H

struct task;

void download_start(struct task *t);

#endif
