/* crypto.c - SHA-256, HMAC-SHA256 and base64 through OpenSSL's libcrypto.
 *
 * Hand-written crypto is a liability; libcrypto is on every Debian machine, maintained, and
 * already what libcurl links. Nothing here can fail short of allocation failure (which aborts). */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "util.h"
#include "banned.h"

void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN])
{
	SHA256(data, len, out);
}

void crypto_sha256_hex(const void *data, size_t len, char out[2 * CRYPTO_SHA256_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[CRYPTO_SHA256_LEN];
	crypto_sha256(data, len, md);
	for (size_t i = 0; i < CRYPTO_SHA256_LEN; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[2 * CRYPTO_SHA256_LEN] = '\0';
}

void crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
			unsigned char out[CRYPTO_SHA256_LEN])
{
	unsigned int out_len = CRYPTO_SHA256_LEN;
	if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &out_len))
		out_of_memory("computing an HMAC");   /* HMAC fails only so */
}

char *crypto_base64_encode(const void *data, size_t len)
{
	if (len > (size_t)INT_MAX / 4 * 3)
		abort();   /* EVP_EncodeBlock counts in int: no image comes near */
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static bool is_b64(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
	       c == '/';
}

unsigned char *crypto_base64_decode(const char *text, size_t *out_len)
{
	size_t len = strlen(text);
	if (len % 4)
		return NULL;
	size_t pad = 0;
	for (size_t i = 0; i < len; i++) {
		bool tail = i >= len - 2;
		if (text[i] == '=' && tail) {
			pad++;
			continue;
		}
		if (!is_b64(text[i]) || pad)
			return NULL;
	}
	unsigned char *out = xmalloc(len / 4 * 3 + 1);
	/* EVP_DecodeBlock counts padding as zero bytes: take them off. */
	int n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
	if (n < 0 || (size_t)n < pad) {
		free(out);
		return NULL;
	}
	*out_len = (size_t)n - pad;
	return out;
}
