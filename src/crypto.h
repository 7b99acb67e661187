/* crypto.h - the few primitives that results leaving the spool need: SHA-256 (S3's
 * x-amz-content-sha256), HMAC-SHA256 (webhook signatures) and base64, all from OpenSSL's
 * libcrypto. Pure and thread-safe: hashing a large image may run on an I/O helper thread. */
#ifndef CRYPTO_H
#define CRYPTO_H

#include <stddef.h>

#define CRYPTO_SHA256_LEN 32

void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN]);
/* Lower-case hex of the SHA-256 of data; out holds 65 bytes. */
void crypto_sha256_hex(const void *data, size_t len, char out[2 * CRYPTO_SHA256_LEN + 1]);
void crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
			unsigned char out[CRYPTO_SHA256_LEN]);
/* Standard base64 with padding (RFC 4648 §4); caller frees. */
char *crypto_base64_encode(const void *data, size_t len);
/* Decodes standard base64 (padding required, no white space); returns a buffer the caller
 * frees with its length in *out_len, or NULL if text is not base64. */
unsigned char *crypto_base64_decode(const char *text, size_t *out_len);

#endif
