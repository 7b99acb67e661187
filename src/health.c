/* health.c - cooldowns of targets after free failures in a row (see health.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "retry.h"
#include "util.h"
#include "banned.h"

void health_init(struct health *h)
{
	h->entries = NULL;
	h->n = 0;
}

void health_release(struct health *h)
{
	for (size_t i = 0; i < h->n; i++)
		free(h->entries[i].key);
	free(h->entries);
	health_init(h);
}

enum health_event health_event_of(const struct outcome *o)
{
	switch (o->decision) {
	case DECIDE_SUCCEEDED:
	case DECIDE_FAIL:        /* it answered: a refusal or a bad request is the job's */
		return HEALTH_WORKS;
	case DECIDE_RETRY:
		return !strcmp(o->code, "upstream_unavailable") || !strcmp(o->code, "network")
		       ? HEALTH_FREE_FAILURE : HEALTH_NEUTRAL;
	case DECIDE_RETRY_BILLED:
	case DECIDE_HOLD:
		break;
	}
	return HEALTH_NEUTRAL;
}

static struct health_entry *find(const struct health *h, const char *provider, const char *model)
{
	size_t plen = strlen(provider);
	for (size_t i = 0; i < h->n; i++) {
		const char *k = h->entries[i].key;
		if (!strncmp(k, provider, plen) && k[plen] == '/' && !strcmp(k + plen + 1, model))
			return &h->entries[i];
	}
	return NULL;
}

int64_t health_record(struct health *h, const char *provider, const char *model,
		      enum health_event ev, const struct health_policy *p, int64_t now,
		      uint64_t random)
{
	struct health_entry *e = find(h, provider, model);
	if (ev == HEALTH_NEUTRAL || p->failures <= 0)
		return 0;
	if (ev == HEALTH_WORKS) {
		if (e) {   /* healthy targets take no room */
			free(e->key);
			*e = h->entries[--h->n];
		}
		return 0;
	}
	if (!e) {
		h->entries = xrealloc(h->entries, (h->n + 1) * sizeof(*h->entries));
		e = &h->entries[h->n++];
		*e = (struct health_entry){ .key = xasprintf("%s/%s", provider, model) };
	}
	if (now < e->cooling_until)
		return 0;  /* calls sent before the cooldown began, failing late */
	e->failures++;
	if (e->failures < p->failures && !e->tripped)
		return 0;
	int64_t jitter = p->cooldown_ms * p->jitter_pct / 100;
	e->cooling_until = now + p->cooldown_ms + (jitter > 0 ? (int64_t)(random % (uint64_t)(jitter + 1)) : 0);
	e->failures = 0;
	e->tripped = true;
	return e->cooling_until;
}

int64_t health_cooling_until(const struct health *h, const char *provider, const char *model,
			     int64_t now)
{
	const struct health_entry *e = find(h, provider, model);
	return e && now < e->cooling_until ? e->cooling_until : 0;
}
