/* test_control.c - the names of an operator's requests in control/ that the daemon itself
 * writes: gone webhook endpoints. */
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "tap.h"
#include "util.h"

static void test_gone_names(void)
{
	static const struct { const char *name; enum control_kind kind; const char *arg; } rows[] = {
		{ "gone.8f8810afab6d644b84d59f75a3a1be88", CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88" },
		{ "gone.8f8810afab6d644b84d59f75a3a1be8", CONTROL_NONE, "" },     /* 31 digits */
		{ "gone.8f8810afab6d644b84d59f75a3a1be880", CONTROL_NONE, "" },   /* 33 */
		{ "gone.8F8810AFAB6D644B84D59F75A3A1BE88", CONTROL_NONE, "" },    /* lower case only */
		{ "gone.8f8810afab6d644b84d59f75a3a1be8g", CONTROL_NONE, "" },
		{ "gone.", CONTROL_NONE, "" },
		{ "gone", CONTROL_NONE, "" },
		{ ".gone.8f8810afab6d644b84d59f75a3a1be88.h.1.tmp", CONTROL_NONE, "" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		const char *arg;
		enum control_kind k = control_parse_name(rows[i].name, &arg);
		ok(k == rows[i].kind, "\"%s\" is kind %d", rows[i].name, rows[i].kind);
		is_str(arg, rows[i].arg, "\"%s\" names \"%s\"", rows[i].name, rows[i].arg);
	}
	char *n = control_name(CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88");
	is_str(n, "gone.8f8810afab6d644b84d59f75a3a1be88", "a gone endpoint's file name");
	free(n);

	struct control c;
	control_init(&c);
	ok(!control_wants(&c, CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88"), "nothing gone at first");
	control_note(&c, CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88");
	ok(control_wants(&c, CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88"), "noted before it is read");
	ok(!control_wants(&c, CONTROL_HOLD, "8f8810afab6d644b84d59f75a3a1be88"), "kinds are apart");
	control_release(&c);
}

int main(void)
{
	test_gone_names();
	return tap_done();
}
