/* test_crypto.c - SHA-256, HMAC-SHA256 and base64 against the published test vectors
 * (FIPS 180-2, RFC 4231, RFC 4648). */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "tap.h"

static void hex(const unsigned char *md, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int main(void)
{
	char h[65];
	crypto_sha256_hex("abc", 3, h);
	is_str(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256 abc");
	crypto_sha256_hex("", 0, h);
	is_str(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256 empty");

	unsigned char md[32];
	const char *data = "what do ya want for nothing?";
	crypto_hmac_sha256("Jefe", 4, data, strlen(data), md);
	hex(md, 32, h);
	is_str(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "hmac rfc4231 #2");

	static const struct { const char *plain, *b64; } rows[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
		{ "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *enc = crypto_base64_encode(rows[i].plain, strlen(rows[i].plain));
		is_str(enc, rows[i].b64, "base64 encode '%s'", rows[i].plain);
		free(enc);
		size_t n = 99;
		unsigned char *dec = crypto_base64_decode(rows[i].b64, &n);
		ok(dec && n == strlen(rows[i].plain) && !memcmp(dec, rows[i].plain, n),
		   "base64 decode '%s'", rows[i].b64);
		free(dec);
	}
	static const char *bad[] = { "Zg=", "Z===", "Zm9v\n", "Zm=v", "Zm9*", "=Zm9" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n;
		unsigned char *dec = crypto_base64_decode(bad[i], &n);
		ok(!dec, "base64 refuses '%s'", bad[i]);
		free(dec);
	}
	return tap_done();
}
