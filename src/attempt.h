/* attempt.h - a call's price, its reservation in the spend, its judgement and record (attempt.c).
 * Part of the dispatcher. */
#ifndef ATTEMPT_H
#define ATTEMPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "price.h"
#include "result.h"
#include "retry.h"

struct dispatch;
struct job;
struct task;

struct price_quote attempt_quote(const struct dispatch *d, const struct job *job,
				 const char *model, const json_t *usage, int images);
void attempt_price(const struct task *t, struct attempt *a, enum billed billed,
		   const json_t *usage, int images);
void attempt_reserve(struct task *t);
void attempt_settle(struct task *t, bool billed, bool known, double cost);
void attempt_record(struct task *t, const struct attempt *a);
void attempt_judge_begin(struct task *t);
void attempt_judge(struct task *t);
void attempt_bill(void **tasks, size_t n);
void attempt_judged(struct task *t, bool counted);
void attempt_settle_at_cut(struct task *t, enum billed billed, bool known, double cost,
			   void (*next)(struct task *t));
void attempt_after_ledger(struct task *t, void (*next)(struct task *t));
void attempt_ledger_writer(struct dispatch *d, bool on);
size_t attempt_count(const struct task *t);

#endif
