/* libFuzzer target: how fts_lmdb splits a (normalized) search key into
   grams, fts_lmdb_key_analyze(), against the grams it indexes for a text,
   fts_lmdb_grams_add_text().

   Input: key, then optionally 0xff and a text prefix, 0xff and a suffix.
   A key that is accepted must have sorted, distinct grams and as many
   code points as a strict UTF-8 walk finds; and every gram of the key
   must be among the grams indexed for prefix + key + suffix.  That is
   what makes a lookup free of false negatives: a message holding the key
   is always a candidate.  A refused key must hold CR, LF or bytes that
   are not strict UTF-8.  Header-name hashes ignore ASCII case. */

#include "fts-lmdb-codec.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(expr) do { if (!(expr)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool gram_in(const struct fts_lmdb_grams *g, uint64_t gram)
{
	size_t lo = 0, hi = g->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (g->v[mid] == gram)
			return true;
		if (g->v[mid] < gram)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static unsigned int count_chars(const uint8_t *p, const uint8_t *end,
				bool *valid_r)
{
	unsigned int chars = 0, len;
	uint32_t cp;

	*valid_r = true;
	while (p < end) {
		len = fts_lmdb_utf8_get(p, end, &cp);
		if (len == 0 || cp == '\r' || cp == '\n') {
			*valid_r = false;
			len = len == 0 ? 1 : len;
		} else {
			CHECK(cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff));
		}
		CHECK(len <= 4 && len <= (size_t)(end - p));
		p += len;
		chars++;
	}
	return chars;
}

static void check_name_hash(const uint8_t *key, size_t size)
{
	uint8_t *lower = malloc(size + 1);
	size_t i;

	CHECK(lower != NULL);
	for (i = 0; i < size; i++) {
		lower[i] = key[i] >= 'A' && key[i] <= 'Z' ?
			key[i] + 32 : key[i];
	}
	CHECK(fts_lmdb_name_hash(key, size) ==
	      fts_lmdb_name_hash(lower, size));
	free(lower);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fts_lmdb_grams kg, tg;
	const uint8_t *key = data, *pre = NULL, *suf = NULL, *sep;
	size_t key_len = size, pre_len = 0, suf_len = 0, i;
	unsigned int chars = 0, walked;
	uint8_t *text;
	bool valid;

	if ((sep = memchr(data, 0xff, size)) != NULL) {
		key_len = sep - data;
		pre = sep + 1;
		pre_len = data + size - pre;
		if ((sep = memchr(pre, 0xff, pre_len)) != NULL) {
			pre_len = sep - pre;
			suf = sep + 1;
			suf_len = data + size - suf;
		}
	}
	memset(&kg, 0, sizeof(kg));
	memset(&tg, 0, sizeof(tg));
	check_name_hash(key, key_len);
	walked = count_chars(key, key + key_len, &valid);
	if (fts_lmdb_key_analyze(key, key_len, &kg, &chars) < 0) {
		CHECK(!valid);
		fts_lmdb_grams_free(&kg);
		return 0;
	}
	CHECK(valid && chars == walked);
	for (i = 1; i < kg.n; i++)
		CHECK(kg.v[i - 1] < kg.v[i]);
	CHECK(chars == 0 ? kg.n == 0 : kg.n >= 1);
	if (chars >= 3)
		CHECK(kg.n <= chars - 2);

	text = malloc(pre_len + key_len + suf_len + 1);
	CHECK(text != NULL);
	if (pre_len > 0)
		memcpy(text, pre, pre_len);
	memcpy(text + pre_len, key, key_len);
	if (suf_len > 0)
		memcpy(text + pre_len + key_len, suf, suf_len);
	fts_lmdb_grams_add_text(&tg, text, pre_len + key_len + suf_len,
				chars < 3);
	fts_lmdb_grams_finish(&tg);
	for (i = 0; i < kg.n; i++)
		CHECK(gram_in(&tg, kg.v[i]));
	free(text);
	fts_lmdb_grams_free(&kg);
	fts_lmdb_grams_free(&tg);
	return 0;
}
