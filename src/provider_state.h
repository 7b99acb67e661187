/* provider_state.h - a provider's state on the loop (provider_state.c): its flow control
 * (provider.c decides) with the timers, logs and metrics around it; holds and pauses shared with
 * the other hosts; the probe of a held provider; a call's place among every host's calls. Part
 * of the dispatcher: a provider_state is made for each configured provider and kept by name
 * across reloads; its fields are its own. */
#ifndef PROVIDER_STATE_H
#define PROVIDER_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "provider.h"

struct config;
struct dispatch;
struct job;
struct keyshare_ticket;
struct provider_config;
struct provider_state;

struct provider_state *provider_state_new(struct dispatch *d, const struct provider_config *cfg);
void provider_state_free(struct provider_state *p);
/* The state of the provider the running config calls name, NULL if none. */
struct provider_state *provider_state_find(struct dispatch *d, const char *name);
/* A reload: p takes its section of next (a hold, a pause, the calls in flight carry over), or,
 * gone from it, retires (old is kept for it until its last task ends), or is freed at once when
 * no task uses it. A retired p stays as it is. */
void provider_state_reload(struct provider_state *p, const struct config *next, struct config *old);
/* Borrowed: its section of the config (the retired one's, once gone from the file). */
const struct provider_config *provider_state_config(const struct provider_state *p);
const char *provider_state_name(const struct provider_state *p);
/* Gone from the config: lives on until its last task ends. */
bool provider_state_retired(const struct provider_state *p);
/* A task takes p (counted until provider_state_unuse); with may_probe, a held p lets it
 * through as its probe, one at a time: the return says whether it is. */
bool provider_state_use(struct provider_state *p, bool may_probe);
void provider_state_unuse(struct provider_state *p, bool was_probe);

void provider_state_hold(struct provider_state *p, const char *reason);
void provider_state_release(struct provider_state *p);
/* A call succeeded: a ramp after a pause widens. */
void provider_state_succeeded(struct provider_state *p);
void provider_state_hold_everywhere(struct provider_state *p, const char *reason);
void provider_state_pause_everywhere(struct provider_state *p, int64_t wait_ms);
void provider_state_look_at_others(struct provider_state *p);
void provider_state_keys_changed(struct provider_state *p);
/* Counts a call to p that went out, and one that ended. */
void provider_state_call_started(struct provider_state *p, int64_t now);
void provider_state_call_ended(struct provider_state *p);

/* On hold (the upstream refused its key or balance, or it has none), and letting a probe
 * through meanwhile. */
bool provider_state_held(const struct provider_state *p);
bool provider_state_probing(const struct provider_state *p);
/* Logged as over one of its budgets (shared with the other hosts). */
bool provider_state_over_budget(const struct provider_state *p);
/* Calls in flight to p from this host. */
int provider_state_calls(const struct provider_state *p);
/* Sets the metrics' gauges of p: calls in flight, held, paused, over budget. */
void provider_state_report_metrics(const struct provider_state *p, int64_t now);

bool provider_state_budgeted(const struct provider_state *p);
/* Why a call to p may not start at now (PROVIDER_FREE: it may), and until when (mono ms, -1:
 * until an event); an operator's pause (control/) counts as a hold. */
enum provider_block provider_state_block(const struct provider_state *p, int64_t now,
					 int64_t *until);
/* 0 if a call to p may start now; else the mono_ms at which to look again, or -1 when only an
 * event (a call ending, SIGHUP, a probe) can change it. */
int64_t provider_state_blocked_until(const struct provider_state *p, int64_t now);
/* What a call to p waits for at now, for a log line: "paused by an operator", "busy", ... */
const char *provider_state_wait_name(const struct provider_state *p, int64_t now);
int64_t provider_state_busy_until(const struct provider_state *p, int64_t now);
/* For a target chooser: 0 when p is available (not held, paused or over budget), else when it
 * may be (-1: after an event). Full is not unavailable. */
int64_t provider_state_unavailable_until(const struct provider_state *p, int64_t now);
/* A saved answer recovered under a budget goes to be judged (+1) or its cost is in the ledger
 * (-1): while any is out, no call under a budget is admitted; the last one wakes them. */
void provider_state_recovered_parse(struct dispatch *d, int delta);
bool provider_state_take_share(struct provider_state *p, const struct job *job, const char *model,
			       struct keyshare_ticket *out);
/* Whether p has limits or budgets kept with the other hosts (a ticket per call). */
bool provider_state_shared(const struct provider_state *p);

#endif
