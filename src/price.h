/* price.h - what one upstream call costs: the [prices] table and a pure calculator.
 *
 * A row is "PATTERN[@QUALIFIER,...] = AMOUNT": PATTERN is a shell pattern over the model name;
 * qualifiers narrow it to a resolution tier (1K, 2K, 4K), a quality (low, medium, high, auto,
 * xhigh, max), or make it a token rate (input, input_image, output: AMOUNT per million tokens,
 * taken from the upstream's "usage"). Without a token qualifier AMOUNT is per image. Rows are
 * tried in file order and the first that fits the call wins; no row that fits means no price. */
#ifndef PRICE_H
#define PRICE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum price_kind {
	PRICE_IMAGE,             /* AMOUNT per image */
	PRICE_INPUT,             /* AMOUNT per million input tokens (all of them, or text only when
				  * an input_image rate exists) */
	PRICE_INPUT_IMAGE,       /* AMOUNT per million input image tokens */
	PRICE_OUTPUT,            /* AMOUNT per million output tokens */
};

struct price_row {
	char *pattern;           /* fnmatch(3) over the model name */
	char tier[3];            /* "1K", "2K", "4K", or "" for any */
	char quality[8];         /* or "" for any */
	enum price_kind kind;
	double amount;
};

#define PRICE_CURRENCY_MAX 8

struct price_table {
	struct price_row *rows;
	size_t n_rows;
	char currency[PRICE_CURRENCY_MAX + 1];  /* "USD" unless the config says otherwise */
};

/* One call as far as pricing cares. */
struct price_call {
	const char *model;
	const char *size;        /* the job's "size", NULL when not given (priced as 1K) */
	const char *quality;     /* NULL when not given (priced as "auto") */
	int images;              /* images billed: those returned, or those asked for */
	const json_t *usage;     /* borrowed "usage" / "usageMetadata", NULL when none came back */
};

struct price_quote {
	bool known;              /* some row priced the call */
	bool from_tokens;        /* computed from usage (else per image) */
	double amount;           /* in the table's currency; 0 when !known */
};

void price_table_init(struct price_table *t);
void price_table_release(struct price_table *t);
/* Adds one line of [prices] ("currency" or a row). Returns NULL, or a reason it is refused. */
const char *price_table_add(struct price_table *t, const char *key, const char *value);

/* What the call costs if it was billed. Token rows need usage; without it (a timeout) the
 * first per-image row that fits after them is the estimate. */
struct price_quote price_call(const struct price_table *t, const struct price_call *c);

/* "1K", "2K" or "4K" for a size: the long edge <= 1024, <= 2048, above ("auto"/NULL: "1K"). */
const char *price_tier(const char *size);

/* Input, input-image and output token counts from either dialect's usage; false if absent. */
bool price_usage_tokens(const json_t *usage, long *input, long *input_image, long *output);

#endif
