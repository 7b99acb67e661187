/* price.c - the [prices] table and what a call costs. Pure: no clock, no I/O.
 *
 * Fails by refusing a line (with a reason for the config error) or by answering "no price":
 * a call whose model no row fits is never priced at zero. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "price.h"
#include "util.h"
#include "banned.h"

static const char *const qualities[] = { "low", "medium", "high", "auto", "xhigh", "max" };

void price_table_init(struct price_table *t)
{
	memset(t, 0, sizeof(*t));
	xsnprintf(t->currency, sizeof(t->currency), "USD");
}

void price_table_release(struct price_table *t)
{
	for (size_t i = 0; i < t->n_rows; i++)
		free(t->rows[i].pattern);
	free(t->rows);
	price_table_init(t);
}

static const char *set_currency(struct price_table *t, const char *value)
{
	size_t n = strlen(value);
	if (n < 1 || n > PRICE_CURRENCY_MAX)
		return "currency must be a code of 1 to 8 letters, such as USD or CNY";
	for (const char *c = value; *c; c++)
		if (!isupper((unsigned char)*c))
			return "currency must be a code of 1 to 8 capital letters, such as USD or CNY";
	xsnprintf(t->currency, sizeof(t->currency), "%s", value);
	return NULL;
}

/* One qualifier after '@' into row; NULL or a reason. */
static const char *qualify(struct price_row *row, const char *q)
{
	if (!strcmp(q, "1K") || !strcmp(q, "2K") || !strcmp(q, "4K")) {
		if (row->tier[0])
			return "a [prices] key names at most one resolution tier";
		xsnprintf(row->tier, sizeof(row->tier), "%s", q);
		return NULL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(qualities); i++) {
		if (strcmp(q, qualities[i]))
			continue;
		if (row->quality[0])
			return "a [prices] key names at most one quality";
		xsnprintf(row->quality, sizeof(row->quality), "%s", q);
		return NULL;
	}
	enum price_kind kind = !strcmp(q, "input") ? PRICE_INPUT
			     : !strcmp(q, "input_image") ? PRICE_INPUT_IMAGE
			     : !strcmp(q, "output") ? PRICE_OUTPUT : PRICE_IMAGE;
	if (kind == PRICE_IMAGE)
		return "a [prices] key is PATTERN or PATTERN@QUALIFIERS, each qualifier one of 1K 2K 4K, "
		       "low medium high auto xhigh max, input input_image output";
	if (row->kind != PRICE_IMAGE)
		return "a [prices] key names at most one token rate";
	row->kind = kind;
	return NULL;
}

const char *price_table_add(struct price_table *t, const char *key, const char *value)
{
	if (!strcmp(key, "currency"))
		return set_currency(t, value);
	char *end;
	double amount = strtod(value, &end);
	if (end == value || *end || !isfinite(amount) || amount < 0 || amount > 1e6)
		return "a [prices] amount must be a number from 0 to 1000000 (per image, or per million "
		       "tokens for an input/output rate)";
	struct price_row row = { .kind = PRICE_IMAGE, .amount = amount };
	const char *at = strchr(key, '@');
	if (at == key)
		return "a [prices] key starts with a model pattern";
	const char *reason = NULL;
	if (at) {
		char *quals = xstrdup(at + 1), *save = NULL;
		for (char *q = strtok_r(quals, ",", &save); q && !reason; q = strtok_r(NULL, ",", &save))
			reason = qualify(&row, q);
		if (!reason && !at[1])
			reason = "a [prices] key has a qualifier after '@'";
		free(quals);
	}
	if (reason)
		return reason;
	row.pattern = xstrndup(key, at ? (size_t)(at - key) : strlen(key));
	t->rows = xrealloc(t->rows, (t->n_rows + 1) * sizeof(*t->rows));
	t->rows[t->n_rows++] = row;
	return NULL;
}

const char *price_tier(const char *size)
{
	int w = 0, h = 0;
	if (!size || !strchr(size, 'x') || sscanf(size, "%dx%d", &w, &h) != 2)
		return "1K";
	int edge = w > h ? w : h;
	return edge <= 1024 ? "1K" : edge <= 2048 ? "2K" : "4K";
}

static long count_of(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_integer(v) && json_integer_value(v) >= 0 ? (long)json_integer_value(v) : -1;
}

bool price_usage_tokens(const json_t *usage, long *input, long *input_image, long *output)
{
	*input = *input_image = *output = 0;
	if (!json_is_object(usage))
		return false;
	long in = count_of(usage, "input_tokens"), out = count_of(usage, "output_tokens");
	if (in >= 0 || out >= 0) {                     /* OpenAI */
		*input = in > 0 ? in : 0;
		*output = out > 0 ? out : 0;
		long img = count_of(json_object_get(usage, "input_tokens_details"), "image_tokens");
		*input_image = img > 0 && img <= *input ? img : 0;
		return true;
	}
	in = count_of(usage, "promptTokenCount");
	out = count_of(usage, "candidatesTokenCount");
	if (in < 0 && out < 0)
		return false;
	*input = in > 0 ? in : 0;
	*output = out > 0 ? out : 0;
	long thoughts = count_of(usage, "thoughtsTokenCount");
	if (thoughts > 0)
		*output += thoughts;                   /* Google bills thinking as output */
	const json_t *details = json_object_get(usage, "promptTokensDetails"), *d;
	size_t i;
	json_array_foreach(details, i, d) {
		const char *modality = json_string_value(json_object_get(d, "modality"));
		long n = count_of(d, "tokenCount");
		if (modality && !strcmp(modality, "IMAGE") && n > 0)
			*input_image += n;
	}
	if (*input_image > *input)
		*input_image = *input;
	return true;
}

static bool row_fits(const struct price_row *r, const struct price_call *c, const char *tier,
		     const char *quality)
{
	return (!r->tier[0] || !strcmp(r->tier, tier)) &&
	       (!r->quality[0] || !strcmp(r->quality, quality)) &&
	       pattern_match(r->pattern, c->model);
}

/* The token rates of the rows that share the first token row's pattern and qualifiers. */
static double token_cost(const struct price_table *t, size_t first, const struct price_call *c,
			 const char *tier, const char *quality, long in, long in_image, long out)
{
	const struct price_row *head = &t->rows[first];
	double rate[4] = { 0 };
	bool have[4] = { false };
	for (size_t i = first; i < t->n_rows; i++) {
		const struct price_row *r = &t->rows[i];
		if (r->kind == PRICE_IMAGE || have[r->kind] || strcmp(r->pattern, head->pattern) ||
		    strcmp(r->tier, head->tier) || strcmp(r->quality, head->quality) ||
		    !row_fits(r, c, tier, quality))
			continue;
		rate[r->kind] = r->amount;
		have[r->kind] = true;
	}
	double image_rate = have[PRICE_INPUT_IMAGE] ? rate[PRICE_INPUT_IMAGE] : rate[PRICE_INPUT];
	return ((double)(in - in_image) * rate[PRICE_INPUT] + (double)in_image * image_rate +
		(double)out * rate[PRICE_OUTPUT]) / 1e6;
}

struct price_quote price_call(const struct price_table *t, const struct price_call *c)
{
	struct price_quote q = { 0 };
	const char *tier = price_tier(c->size);
	const char *quality = c->quality ? c->quality : "auto";
	long in, in_image, out;
	bool have_tokens = price_usage_tokens(c->usage, &in, &in_image, &out);
	if (!c->model)
		return q;
	for (size_t i = 0; i < t->n_rows; i++) {
		const struct price_row *r = &t->rows[i];
		if (!row_fits(r, c, tier, quality))
			continue;
		if (r->kind == PRICE_IMAGE) {
			q.known = true;
			q.amount = r->amount * (c->images > 0 ? c->images : 1);
			return q;
		}
		if (have_tokens) {
			q.known = q.from_tokens = true;
			q.amount = token_cost(t, i, c, tier, quality, in, in_image, out);
			return q;
		}
		/* No usage (the call timed out, say): look on for a per-image estimate. */
	}
	return q;
}
