/* test_store.c - object keys and URLs of stored images: prefix + file name, path-style PUT
 * URLs, public URLs, trailing slashes, content types. */
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "tap.h"

int main(void)
{
	static const struct {
		const char *prefix, *name, *endpoint, *bucket, *public_url;
		const char *key, *put, *pub;
	} rows[] = {
		{ NULL, "a.png", "http://127.0.0.1:9000", "imgs", NULL,
		  "a.png", "http://127.0.0.1:9000/imgs/a.png", "http://127.0.0.1:9000/imgs/a.png" },
		{ "renders/", "cat-1.2.png", "https://s3.eu-west-3.amazonaws.com/", "b-1", NULL,
		  "renders/cat-1.2.png", "https://s3.eu-west-3.amazonaws.com/b-1/renders/cat-1.2.png",
		  "https://s3.eu-west-3.amazonaws.com/b-1/renders/cat-1.2.png" },
		{ "img-", "x.webp", "https://h", "bb1", "https://cdn.example.com//",
		  "img-x.webp", "https://h/bb1/img-x.webp", "https://cdn.example.com/img-x.webp" },
		{ "a/b/", "1764.0.1.h.9f.jpg", "http://h:1", "bkt", "https://cdn/p",
		  "a/b/1764.0.1.h.9f.jpg", "http://h:1/bkt/a/b/1764.0.1.h.9f.jpg", "https://cdn/p/a/b/1764.0.1.h.9f.jpg" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *key = store_object_key(rows[i].prefix, rows[i].name);
		char *put = store_put_url(rows[i].endpoint, rows[i].bucket, key);
		char *pub = store_public_url(rows[i].public_url, rows[i].endpoint, rows[i].bucket, key);
		is_str(key, rows[i].key, "row %zu key", i);
		is_str(put, rows[i].put, "row %zu PUT URL", i);
		is_str(pub, rows[i].pub, "row %zu public URL", i);
		free(key);
		free(put);
		free(pub);
	}
	is_str(store_content_type("png"), "image/png", "png");
	is_str(store_content_type("jpg"), "image/jpeg", "jpg");
	is_str(store_content_type("webp"), "image/webp", "webp");
	return tap_done();
}
