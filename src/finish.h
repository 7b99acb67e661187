/* finish.h - the end of a job this daemon holds (finish.c): its result, its images stored
 * first, its events queued, its publication into done/ or failed/. Part of the dispatcher. */
#ifndef FINISH_H
#define FINISH_H

#include <jansson.h>

struct task;

/* Ends t in failed/ with code, the field at fault (NULL: none) and a message. */
void finish_fail(struct task *t, const char *code, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Ends t as it stands: in done/ when it succeeded, else in failed/ (finish_fail sets why). */
void finish_task(struct task *t);
/* The outbox entries of an event of t ([notify]), written before its next move. */
void finish_event(struct task *t, const char *state, json_t *data);

#endif
