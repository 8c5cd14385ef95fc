/* libFuzzer target: the posting codec and the UID set operations.

   Input: u32 first UID (big-endian), then a posting block.  A block that
   decodes must re-encode to the same bytes (the encoding is canonical) and
   agree with fts_lmdb_block_info().  The input bytes also seed two UID
   sets whose intersection, union and difference are checked against a
   naive model. */

#include "fts-lmdb-codec.h"

#include <stdlib.h>
#include <string.h>

static void check_block(const uint8_t *data, size_t size)
{
	struct fts_lmdb_uids uids = { NULL, 0, 0 };
	uint8_t buf[FTS_LMDB_BLOCK_MAX_SIZE];
	uint32_t first, count, last;
	size_t len;
	int ret;

	if (size < 4)
		return;
	first = ((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) |
		((uint32_t)data[2] << 8) | data[3];
	ret = fts_lmdb_block_decode(first, data + 4, size - 4, &uids);
	if (fts_lmdb_block_info(first, data + 4, size - 4, &count,
				&last) != ret)
		abort();
	if (ret == 0) {
		if (uids.n != count || uids.n == 0 || uids.v[0] != first ||
		    uids.v[uids.n - 1] != last)
			abort();
		for (size_t i = 1; i < uids.n; i++) {
			if (uids.v[i] <= uids.v[i - 1])
				abort();
		}
		len = fts_lmdb_block_encode(uids.v, uids.n, buf);
		if (len != size - 4 || memcmp(buf, data + 4, len) != 0)
			abort();
	} else if (uids.n != 0) {
		abort();
	}
	fts_lmdb_uids_free(&uids);
}

static void make_set(const uint8_t *data, size_t size, unsigned int stride,
		     struct fts_lmdb_uids *set)
{
	uint32_t uid = 0;

	for (size_t i = 0; i < size; i += stride) {
		uid += 1 + data[i] % 8;
		fts_lmdb_uids_push(set, uid);
	}
}

static void check_sets(const uint8_t *data, size_t size)
{
	struct fts_lmdb_uids a = { NULL, 0, 0 }, b = { NULL, 0, 0 };
	struct fts_lmdb_uids r = { NULL, 0, 0 };
	size_t n_and = 0, n_or = 0, n_not = 0;

	make_set(data, size, 2, &a);
	if (size > 1)
		make_set(data + 1, size - 1, 3, &b);
	for (size_t i = 0; i < a.n; i++) {
		bool in_b = fts_lmdb_uids_contains(&b, a.v[i]);

		n_and += in_b;
		n_not += !in_b;
	}
	n_or = a.n + b.n - n_and;
	fts_lmdb_uids_copy(&r, &a);
	fts_lmdb_uids_intersect(&r, &b);
	if (r.n != n_and)
		abort();
	for (size_t i = 0; i < r.n; i++) {
		if (!fts_lmdb_uids_contains(&a, r.v[i]) ||
		    !fts_lmdb_uids_contains(&b, r.v[i]))
			abort();
	}
	fts_lmdb_uids_copy(&r, &a);
	fts_lmdb_uids_union(&r, &b);
	if (r.n != n_or)
		abort();
	fts_lmdb_uids_copy(&r, &a);
	fts_lmdb_uids_remove(&r, &b);
	if (r.n != n_not)
		abort();
	fts_lmdb_uids_free(&a);
	fts_lmdb_uids_free(&b);
	fts_lmdb_uids_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fts_lmdb_grams g = { NULL, 0, 0, 0 };
	unsigned int chars;

	check_block(data, size);
	check_sets(data, size);
	/* gram extraction never reads past the input */
	fts_lmdb_grams_add_text(&g, data, size, true);
	fts_lmdb_grams_finish(&g);
	for (size_t i = 1; i < g.n; i++) {
		if (g.v[i] <= g.v[i - 1])
			abort();
	}
	fts_lmdb_grams_clear(&g);
	(void)fts_lmdb_key_analyze(data, size, &g, &chars);
	fts_lmdb_grams_free(&g);
	return 0;
}
