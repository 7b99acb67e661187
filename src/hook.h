/* hook.h - the completion hook ([notify] exec): a program run for a job that reached a
 * terminal state, as "PROGRAM TASK_ID STATE RESULT_PATH", on the loop without ever blocking it.
 *
 * No shell; a clean environment (PATH only: never the API key or any secret); the daemon's
 * limit of open files as it started, not as it raised it; its own process group, killed whole at
 * the time limit; stdout and stderr logged line by line. */
#ifndef HOOK_H
#define HOOK_H

#include <stdbool.h>

struct loop;
struct config;
struct hooks;

/* status: the exit code, or -1 when the hook could not start, was killed or died of a signal. */
typedef void hook_done_fn(void *arg, int status);

/* Remembers the limit of open files as it is now, at start-up, before the daemon raises its
 * own: every hook is started with it. */
void hooks_note_open_files(void);
struct hooks *hooks_new(struct loop *loop, struct config *const *cfgp);
/* Kills what still runs (at shutdown). */
void hooks_free(struct hooks *h);
/* Hooks running now, and whether another may start ([notify] exec_max). */
int hooks_running(const struct hooks *h);
bool hooks_room(const struct hooks *h);
/* Starts the hook; fn is called exactly once, from the loop, when it has ended. */
void hooks_run(struct hooks *h, const char *task_id, const char *state, const char *result_path,
	       hook_done_fn *fn, void *arg);

#endif
