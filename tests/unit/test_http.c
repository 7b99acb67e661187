/* test_http.c - which addresses a download may connect to (http_ip_is_public). */
#include <stdbool.h>

#include "http.h"
#include "tap.h"

static const struct {
	const char *addr;
	bool is_public;
} rows[] = {
	{ "93.184.215.14", true },
	{ "8.8.8.8", true },
	{ "127.0.0.1", false },
	{ "127.255.1.2", false },
	{ "10.1.2.3", false },
	{ "172.16.0.1", false },
	{ "172.31.255.255", false },
	{ "172.32.0.1", true },
	{ "192.168.1.1", false },
	{ "169.254.169.254", false },
	{ "100.64.0.1", false },
	{ "0.0.0.0", false },
	{ "224.0.0.1", false },
	{ "255.255.255.255", false },
	{ "2606:2800:220:1:248:1893:25c8:1946", true },
	{ "::1", false },
	{ "::", false },
	{ "fd00::1", false },
	{ "fe80::1", false },
	{ "ff02::1", false },
	{ "::ffff:127.0.0.1", false },
	{ "::ffff:10.0.0.1", false },
	{ "::ffff:93.184.215.14", true },
	{ "64:ff9b::a9fe:a9fe", false },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(http_ip_is_public(rows[i].addr) == rows[i].is_public, "%s is %s", rows[i].addr,
		   rows[i].is_public ? "public" : "not public");
	ok(!http_ip_is_public("not an address"), "an unreadable address is not public");
	return tap_done();
}
