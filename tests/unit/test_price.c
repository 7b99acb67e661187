/* test_price.c - the price calculator row by row: per image, by tier and quality, per million
 * tokens from either dialect's usage, estimates without usage, no price; the [prices] lines it
 * refuses; and the spend bookkeeping. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "price.h"
#include "spend.h"
#include "tap.h"

static const char *const table[][2] = {
	{ "currency", "USD" },
	{ "gpt-image-2-all", "0.03" },
	{ "flux-kontext-max", "0.07" },
	{ "flux-*", "0.035" },
	{ "gemini-3-pro-image*@4K", "0.24" },
	{ "gemini-3-pro-image*", "0.134" },
	{ "gpt-image-1@2K,high", "0.25" },
	{ "gpt-image-1@low", "0.011" },
	{ "gpt-image-1@high", "0.167" },
	{ "gpt-image-1", "0.042" },
	{ "gpt-image-2@input", "5" },
	{ "gpt-image-2@input_image", "8" },
	{ "gpt-image-2@output", "30" },
	{ "gpt-image-2", "0.053" },
	{ "gemini-3.1-flash-image*@input", "0.5" },
	{ "gemini-3.1-flash-image*@output", "60" },
	{ "tokens-only@output", "10" },
};

struct row {
	const char *name;
	const char *model, *size, *quality;
	int images;
	const char *usage;       /* JSON or NULL */
	bool known, from_tokens;
	double amount;
};

static const char openai_usage[] =
	"{\"input_tokens\":405,\"input_tokens_details\":{\"image_tokens\":388,\"text_tokens\":17},"
	"\"output_tokens\":196,\"output_tokens_details\":{\"image_tokens\":196,\"text_tokens\":0},"
	"\"total_tokens\":601}";
static const char gemini_usage[] =
	"{\"promptTokenCount\":276,\"candidatesTokenCount\":1120,\"totalTokenCount\":1396}";
static const char gemini_thoughts[] =
	"{\"promptTokenCount\":531,\"candidatesTokenCount\":0,\"thoughtsTokenCount\":293,"
	"\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":273},"
	"{\"modality\":\"IMAGE\",\"tokenCount\":258}]}";

static const struct row rows[] = {
	{ "per image", "gpt-image-2-all", NULL, NULL, 1, NULL, true, false, 0.03 },
	{ "per image, times images", "gpt-image-2-all", NULL, NULL, 3, NULL, true, false, 0.09 },
	{ "zero images count as one", "gpt-image-2-all", NULL, NULL, 0, NULL, true, false, 0.03 },
	{ "first matching pattern wins", "flux-kontext-max", NULL, NULL, 1, NULL, true, false, 0.07 },
	{ "a later, wider pattern", "flux-2-pro", NULL, NULL, 1, NULL, true, false, 0.035 },
	{ "4K tier", "gemini-3-pro-image-preview", "3840x2160", NULL, 1, NULL, true, false, 0.24 },
	{ "2K is not 4K", "gemini-3-pro-image-preview", "2048x2048", NULL, 1, NULL, true, false, 0.134 },
	{ "no size is 1K", "gemini-3-pro-image-preview", NULL, NULL, 1, NULL, true, false, 0.134 },
	{ "auto is 1K", "gemini-3-pro-image-preview", "auto", NULL, 1, NULL, true, false, 0.134 },
	{ "tier and quality", "gpt-image-1", "1536x1024", "high", 1, NULL, true, false, 0.25 },
	{ "quality only", "gpt-image-1", "1024x1024", "high", 1, NULL, true, false, 0.167 },
	{ "low quality", "gpt-image-1", NULL, "low", 1, NULL, true, false, 0.011 },
	{ "no quality is auto: the bare row", "gpt-image-1", NULL, NULL, 1, NULL, true, false, 0.042 },
	{ "medium: the bare row", "gpt-image-1", NULL, "medium", 2, NULL, true, false, 0.084 },
	{ "tokens, OpenAI usage with image input", "gpt-image-2", NULL, NULL, 1, openai_usage, true,
	  true, (17 * 5.0 + 388 * 8.0 + 196 * 30.0) / 1e6 },
	{ "tokens, Gemini usage", "gemini-3.1-flash-image-preview", NULL, NULL, 1, gemini_usage, true,
	  true, (276 * 0.5 + 1120 * 60.0) / 1e6 },
	{ "tokens, Gemini thoughts are output, image input at the input rate",
	  "gemini-3.1-flash-image-preview", NULL, NULL, 1, gemini_thoughts, true, true,
	  (531 * 0.5 + 293 * 60.0) / 1e6 },
	{ "tokens without usage: the per-image estimate", "gpt-image-2", NULL, NULL, 1, NULL, true,
	  false, 0.053 },
	{ "tokens, usage not an object: the estimate", "gpt-image-2", NULL, NULL, 1, "[1,2]", true,
	  false, 0.053 },
	{ "tokens, usage without counts: the estimate", "gpt-image-2", NULL, NULL, 1,
	  "{\"generated_images\":1}", true, false, 0.053 },
	{ "tokens without usage and no estimate: no price", "tokens-only", NULL, NULL, 1, NULL, false,
	  false, 0 },
	{ "tokens, output only", "tokens-only", NULL, NULL, 1, "{\"output_tokens\":1000}", true, true,
	  0.01 },
	{ "unknown model: no price", "dall-e-3", NULL, NULL, 1, NULL, false, false, 0 },
	{ "patterns are whole-name", "gpt-image-2-all-x", NULL, NULL, 1, NULL, false, false, 0 },
};

struct bad {
	const char *key, *value, *needle;
};

static const struct bad bads[] = {
	{ "m", "cheap", "must be a number" },
	{ "m", "-1", "must be a number" },
	{ "m", "1e7", "must be a number" },
	{ "m", "nan", "must be a number" },
	{ "m", "", "must be a number" },
	{ "@4K", "1", "starts with a model pattern" },
	{ "m@8K", "1", "qualifier" },
	{ "m@", "1", "qualifier" },
	{ "m@high,low", "1", "one quality" },
	{ "m@1K,2K", "1", "one resolution tier" },
	{ "m@input,output", "1", "one token rate" },
	{ "currency", "usd", "capital letters" },
	{ "currency", "DOLLARSXX", "1 to 8" },
};

int main(void)
{
	struct price_table t;
	price_table_init(&t);
	ok(!strcmp(t.currency, "USD"), "the currency is USD unless the config names one");
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const char *why = price_table_add(&t, table[i][0], table[i][1]);
		ok(!why, "accepts %s = %s%s%s", table[i][0], table[i][1], why ? ": " : "", why ? why : "");
	}
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		json_t *usage = r->usage ? json_loads(r->usage, 0, NULL) : NULL;
		struct price_call c = { r->model, r->size, r->quality, r->images, usage };
		struct price_quote q = price_call(&t, &c);
		ok(q.known == r->known && q.from_tokens == r->from_tokens &&
		   fabs(q.amount - r->amount) < 1e-12, "%s: %s -> %s %.9f%s (got %s %.9f%s)", r->name,
		   r->model, r->known ? "" : "no price", r->amount, r->from_tokens ? " from tokens" : "",
		   q.known ? "" : "no price", q.amount, q.from_tokens ? " from tokens" : "");
		json_decref(usage);
	}
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const char *why = price_table_add(&t, bads[i].key, bads[i].value);
		ok(why && strstr(why, bads[i].needle), "refuses %s = %s (%s)", bads[i].key, bads[i].value,
		   why ? why : "accepted");
	}
	ok(!price_table_add(&t, "currency", "CNY") && !strcmp(t.currency, "CNY"), "currency = CNY");
	price_table_release(&t);

	const struct { const char *size, *tier; } tiers[] = {
		{ NULL, "1K" }, { "auto", "1K" }, { "1024x1024", "1K" }, { "1024x1536", "2K" },
		{ "2048x2048", "2K" }, { "2049x16", "4K" }, { "16x3840", "4K" },
	};
	for (size_t i = 0; i < sizeof(tiers) / sizeof(tiers[0]); i++)
		is_str(price_tier(tiers[i].size), tiers[i].tier, "tier of %s",
		       tiers[i].size ? tiers[i].size : "no size");

	/* The spend: reserves while in flight, settled costs per day, per provider and in all. */
	struct spend s;
	spend_init(&s);
	long day = spend_day(1764068523000);
	spend_call_started(&s, "a", 0.04, day);
	spend_call_started(&s, "a", 0.04, day);
	spend_call_started(&s, "b", 0.10, day);
	struct spend_view v = spend_get(&s, "a", day);
	ok(fabs(v.in_flight - 0.08) < 1e-12 && v.calls_in_flight == 2 && v.today == 0,
	   "two calls to a in flight: 0.08 reserved");
	spend_call_ended(&s, "a", 0.04, day);
	spend_add(&s, "a", true, true, 0.035, day);
	spend_call_ended(&s, "b", 0.10, day);
	spend_add(&s, "b", false, true, 0, day);
	spend_call_ended(&s, "a", 0.04, day);
	spend_add(&s, "a", true, false, 0, day);
	v = spend_get(&s, "a", day);
	ok(v.in_flight == 0 && v.calls_in_flight == 0 && fabs(v.today - 0.035) < 1e-12 &&
	   v.unpriced_today == 1, "a: 0.035 today, one billed call without a price");
	v = spend_get(&s, NULL, day);
	ok(fabs(v.today - 0.035) < 1e-12 && v.in_flight == 0, "all providers: a free call costs 0");
	spend_call_started(&s, "a", 0.5, day);
	v = spend_get(&s, NULL, day + 1);
	ok(v.today == 0 && fabs(v.in_flight - 0.5) < 1e-12, "a new day starts at 0; reserves carry");
	spend_add(&s, "a", true, true, 0.25, day + 1);
	v = spend_get(&s, "a", day + 1);
	ok(fabs(v.today - 0.25) < 1e-12, "today's spend after the rollover");
	ok(spend_get(&s, "a", day).today == 0, "yesterday is not kept");
	spend_release(&s);
	ok(spend_day(86400000 * 3 + 43200000) - spend_day(86400000 * 2 + 43200000) == 1,
	   "noon to noon is one day");
	return tap_done();
}
