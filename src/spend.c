/* spend.c - per-provider bookkeeping of costs in flight and of today (see spend.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spend.h"
#include "util.h"
#include "banned.h"

void spend_init(struct spend *s)
{
	s->entries = NULL;
	s->n = 0;
}

void spend_release(struct spend *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->entries[i].provider);
	free(s->entries);
	spend_init(s);
}

/* The entry of provider, rolled over to day (a new day starts at zero; reserves carry). */
static struct spend_entry *entry(struct spend *s, const char *provider, long day)
{
	struct spend_entry *e = NULL;
	for (size_t i = 0; i < s->n && !e; i++)
		if (!strcmp(s->entries[i].provider, provider))
			e = &s->entries[i];
	if (!e) {
		s->entries = xrealloc(s->entries, (s->n + 1) * sizeof(*s->entries));
		e = &s->entries[s->n++];
		*e = (struct spend_entry){ .provider = xstrdup(provider), .day = day };
	}
	if (e->day != day && day > e->day) {
		e->day = day;
		e->today = 0;
		e->unpriced_today = 0;
	}
	return e;
}

void spend_call_started(struct spend *s, const char *provider, double reserve, long day)
{
	struct spend_entry *e = entry(s, provider, day);
	e->in_flight += reserve;
	e->calls_in_flight++;
}

void spend_call_ended(struct spend *s, const char *provider, double reserve, long day)
{
	struct spend_entry *e = entry(s, provider, day);
	e->in_flight -= reserve;
	if (e->calls_in_flight > 0)
		e->calls_in_flight--;
	if (e->calls_in_flight == 0 || e->in_flight < 0)
		e->in_flight = 0;   /* no drift from rounding once nothing is in flight */
}

void spend_add(struct spend *s, const char *provider, bool billed, bool known, double cost,
	       long day)
{
	struct spend_entry *e = entry(s, provider, day);
	if (billed && known)
		e->today += cost;
	else if (billed)
		e->unpriced_today++;
}

struct spend_view spend_get(const struct spend *s, const char *provider, long day)
{
	struct spend_view v = { 0 };
	for (size_t i = 0; i < s->n; i++) {
		const struct spend_entry *e = &s->entries[i];
		if (provider && strcmp(e->provider, provider))
			continue;
		v.in_flight += e->in_flight;
		v.calls_in_flight += e->calls_in_flight;
		if (e->day == day) {
			v.today += e->today;
			v.unpriced_today += e->unpriced_today;
		}
	}
	return v;
}

long spend_day(int64_t wall_msec)
{
	/* Each call's reservation and settlement asks (localtime_r: 500 instructions); the
	 * local date, its zone's offset too, can only change on a second's boundary. */
	static __thread int64_t cached_sec = INT64_MIN;
	static __thread long cached_day;
	int64_t sec = wall_msec / 1000;
	if (sec == cached_sec)
		return cached_day;
	time_t t = (time_t)sec;
	struct tm tm;
	if (!localtime_r(&t, &tm))
		return (long)(wall_msec / 86400000);
	/* Days since 1970-01-01 of the local date (civil-from-days, Howard Hinnant). */
	long y = tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	long yoe = y - era * 400;
	long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	cached_sec = sec;
	cached_day = era * 146097 + doe - 719468;
	return cached_day;
}
