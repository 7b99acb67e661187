/* route.c - the target chooser and what a target can serve (see route.h). Pure. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "route.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

uint64_t route_hash(const char *s, uint64_t salt)
{
	uint64_t h = 14695981039346656037ULL ^ (salt * 0x9e3779b97f4a7c15ULL);
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	/* FNV alone spreads ids that differ in their last digit poorly over small moduli. */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h;
}

static bool in_list(const char *list, const char *item)
{
	size_t n = strlen(item);
	for (const char *p = list; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == n && !strncmp(p, item, n))
			return true;
		p = comma ? comma + 1 : NULL;
	}
	return false;
}

bool route_can_serve(const struct route_target *tg, const struct job *job, char *why,
		     size_t whysize)
{
	const char *m = tg->model;
	int n = job->n > 0 ? job->n : 1;
	if (upstream_dialect(m) == DIALECT_GEMINI) {
		const char *option = job->background ? "background" : job->output_format ? "output_format"
				     : job->output_compression >= 0 ? "output_compression"
				     : job->quality && strcmp(job->quality, "auto") ? "quality"
				     : job->moderation && strcmp(job->moderation, "auto") ? "moderation" : NULL;
		if (n > 1)
			return xsnprintf(why, whysize, "%s makes one image per call", m), false;
		if (job->mask)
			return xsnprintf(why, whysize, "%s takes no mask", m), false;
		if (option)
			return xsnprintf(why, whysize, "%s has no \"%s\"", m, option), false;
		int w, h;
		if (fnmatch("gemini-2.5-flash-image*", m, 0) == 0 && job->size &&
		    job_size_dimensions(job->size, &w, &h) && (w > 1024 || h > 1024))
			return xsnprintf(why, whysize, "%s makes 1K images only", m), false;
	}
	if (tg->max_n && n > tg->max_n)
		return xsnprintf(why, whysize, "%s/%s makes at most %ld image(s) per call", tg->provider,
				 m, tg->max_n), false;
	if (tg->max_refs >= 0 && job->n_refs > tg->max_refs)
		return tg->max_refs ? xsnprintf(why, whysize, "%s/%s takes at most %ld reference images",
						tg->provider, m, tg->max_refs)
				    : xsnprintf(why, whysize, "%s/%s takes no reference images",
						tg->provider, m), false;
	if (tg->sizes && job->size && !in_list(tg->sizes, job->size))
		return xsnprintf(why, whysize, "%s/%s does not make size %s", tg->provider, m,
				 job->size), false;
	return true;
}

/* The earliest of two "when to look again" times, where 0 is never set and -1 is "an event". */
static int64_t earliest(int64_t a, int64_t b)
{
	if (a <= 0)
		return b == 0 ? a : b > 0 || a == 0 ? b : a;
	return b > 0 && b < a ? b : a;
}

static bool usable(const struct target_view *v, int i, int avoid)
{
	return v[i].can_serve && v[i].unavailable_until == 0 && i != avoid;
}

/* Among the weighted targets passing keep(), the one the hash picks by weight; -1 if none. */
static int pick_by_weight(const struct route_config *r, const struct target_view *v, int avoid,
			  bool only_usable, uint64_t hash)
{
	uint64_t total = 0;
	for (size_t i = 0; i < r->n_targets; i++)
		if (!r->targets[i].fallback && v[i].can_serve && (!only_usable || usable(v, (int)i, avoid)))
			total += (uint64_t)r->targets[i].weight;
	if (!total)
		return -1;
	uint64_t point = hash % total;
	for (size_t i = 0; i < r->n_targets; i++) {
		if (r->targets[i].fallback || !v[i].can_serve || (only_usable && !usable(v, (int)i, avoid)))
			continue;
		if (point < (uint64_t)r->targets[i].weight)
			return (int)i;
		point -= (uint64_t)r->targets[i].weight;
	}
	return -1;
}

static int cheapest(const struct route_config *r, const struct target_view *v, int avoid)
{
	int best = -1;
	for (size_t i = 0; i < r->n_targets; i++) {
		if (r->targets[i].fallback || !usable(v, (int)i, avoid) || v[i].busy_until)
			continue;
		if (best < 0 || (v[i].priced && (!v[best].priced || v[i].price < v[best].price)))
			best = (int)i;
	}
	return best;
}

struct route_choice route_choose(const struct route_config *r, const char *task_id,
				 const struct target_view *v, int avoid)
{
	struct route_choice c = { .verdict = ROUTE_NONE, .target = -1 };
	bool any = false;
	int64_t when = 0, busy_when = 0;
	for (size_t i = 0; i < r->n_targets; i++) {
		if (!v[i].can_serve)
			continue;
		any = true;
		when = earliest(when, v[i].unavailable_until);
		if (usable(v, (int)i, avoid))
			busy_when = earliest(busy_when, v[i].busy_until);
	}
	if (!any)
		return c;
	int t = -1;
	if (r->cheapest) {
		t = cheapest(r, v, avoid);
		if (t < 0 && busy_when) {   /* every cheap one is full: wait for room */
			c.verdict = ROUTE_WAIT;
			c.wait_until = busy_when;
			return c;
		}
	} else {
		int primary = pick_by_weight(r, v, avoid, false, route_hash(task_id, 0));
		t = primary >= 0 && usable(v, primary, avoid) ? primary
		    : pick_by_weight(r, v, avoid, true, route_hash(task_id, 1));
	}
	for (size_t i = 0; t < 0 && i < r->n_targets; i++)
		if (r->targets[i].fallback && usable(v, (int)i, avoid))
			t = (int)i;
	if (t < 0 && avoid >= 0 && v[avoid].can_serve && v[avoid].unavailable_until == 0)
		t = avoid;           /* nowhere else to go: the same target again */
	if (t < 0) {
		c.verdict = ROUTE_WAIT;
		c.wait_until = when;
		return c;
	}
	if (v[t].busy_until) {       /* its target is full: the job waits its turn there */
		c.verdict = ROUTE_WAIT;
		c.target = t;
		c.wait_until = v[t].busy_until;
		return c;
	}
	c.verdict = ROUTE_CHOSEN;
	c.target = t;
	return c;
}
