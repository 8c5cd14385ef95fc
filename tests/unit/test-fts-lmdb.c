/* cmocka unit tests of fts_lmdb's pure parts: the posting codec, UID set
   operations, gram extraction, the stored-text codec and matching, and
   the LMDB store (batches, appends and merges of posting lists, expunge,
   compaction, resets) against a real environment in a temporary
   directory.  Also the generic key-value API of the ldb layer it uses.

   Table-driven; failures print "got ..., want ...". */

#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "lmdb-db.h"
#include "fts-lmdb-codec.h"
#include "fts-lmdb-doc.h"
#include "fts-lmdb-store.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_UIDS 64
#define BOTH (FTS_LMDB_DOC_HEAD | FTS_LMDB_DOC_BODY)

/* ---- helpers ---- */

struct uidlist {
	size_t n;
	uint32_t v[MAX_UIDS];
};

static void uids_set(struct fts_lmdb_uids *u, const struct uidlist *l)
{
	fts_lmdb_uids_clear(u);
	for (size_t i = 0; i < l->n; i++)
		fts_lmdb_uids_push(u, l->v[i]);
}

static const char *uids_str(const uint32_t *v, size_t n)
{
	static char buf[2][4096];
	static int which;
	char *p = buf[which ^= 1];
	size_t len = 0;

	p[0] = '\0';
	for (size_t i = 0; i < n && len < sizeof(buf[0]) - 16; i++)
		len += snprintf(p + len, sizeof(buf[0]) - len, "%s%u",
				i == 0 ? "" : ",", v[i]);
	return p;
}

static void assert_uids(const char *what, const struct fts_lmdb_uids *got,
			const uint32_t *want, size_t want_n)
{
	if (got->n != want_n ||
	    (want_n > 0 && memcmp(got->v, want, want_n * sizeof(*want)) != 0))
		fail_msg("%s: got {%s}, want {%s}", what,
			 uids_str(got->v, got->n), uids_str(want, want_n));
}

static int rm_cb(const char *path, const struct stat *st, int flag,
		 struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

struct env_fixture {
	char dir[64];
	struct fts_lmdb_store *store;
};

static int env_setup(void **state)
{
	struct env_fixture *f = calloc(1, sizeof(*f));
	struct ldb_settings set;
	const char *error;

	strcpy(f->dir, "/tmp/test-fts-lmdb.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	ldb_settings_default(&set);
	set.initial_map_size = 1024 * 1024;
	set.max_map_size = 256 * 1024 * 1024;
	if (fts_lmdb_store_open(f->dir, &set, &f->store, &error) < 0)
		fail_msg("store open: %s", error);
	*state = f;
	return 0;
}

static int env_teardown(void **state)
{
	struct env_fixture *f = *state;

	fts_lmdb_store_close(&f->store);
	nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- varints and blocks ---- */

static void test_varint_roundtrip(void **state)
{
	static const uint32_t values[] = {
		0, 1, 127, 128, 255, 16383, 16384, 2097151, 2097152,
		268435455, 268435456, UINT32_MAX - 1, UINT32_MAX,
	};
	static const size_t sizes[] = { 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 5 };
	uint8_t buf[8];

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(values); i++) {
		const uint8_t *p = buf;
		uint32_t got;
		size_t len = fts_lmdb_varint_put(buf, values[i]);

		if (len != sizes[i])
			fail_msg("varint %u: got size %zu, want %zu",
				 values[i], len, sizes[i]);
		assert_int_equal(fts_lmdb_varint_get(&p, buf + len, &got), 0);
		if (got != values[i] || p != buf + len)
			fail_msg("varint %u: got %u", values[i], got);
		/* every truncation fails */
		for (size_t cut = 0; cut < len; cut++) {
			p = buf;
			assert_int_equal(fts_lmdb_varint_get(&p, buf + cut,
							     &got), -1);
		}
	}
}

static void test_varint_invalid(void **state)
{
	static const struct {
		uint8_t bytes[6];
		size_t len;
	} cases[] = {
		{ { 0x80, 0x00 }, 2 },			/* overlong 0 */
		{ { 0xff, 0x80, 0x00 }, 3 },		/* overlong */
		{ { 0xff, 0xff, 0xff, 0xff, 0x10 }, 5 },/* > 32 bits */
		{ { 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 }, 6 },/* 6 bytes */
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const uint8_t *p = cases[i].bytes;
		uint32_t v;

		if (fts_lmdb_varint_get(&p, cases[i].bytes + cases[i].len,
					&v) != -1)
			fail_msg("case %zu: accepted, got %u", i, v);
	}
}

static void test_block_roundtrip(void **state)
{
	static const struct uidlist cases[] = {
		{ 1, { 1 } },
		{ 2, { 1, 2 } },
		{ 3, { 5, 200, 70000 } },
		{ 2, { 1, UINT32_MAX } },
		{ 4, { 4000000000U, 4000000001U, 4100000000U, 4294967295U } },
	};
	struct fts_lmdb_uids got = { 0 }, want = { 0 };
	uint8_t buf[FTS_LMDB_BLOCK_MAX_SIZE];
	uint32_t count, last;
	size_t size;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		uids_set(&want, &cases[i]);
		size = fts_lmdb_block_encode(want.v, want.n, buf);
		fts_lmdb_uids_clear(&got);
		assert_int_equal(fts_lmdb_block_decode(want.v[0], buf, size,
						       &got), 0);
		assert_uids("block", &got, want.v, want.n);
		assert_int_equal(fts_lmdb_block_info(want.v[0], buf, size,
						     &count, &last), 0);
		assert_int_equal(count, want.n);
		assert_int_equal(last, want.v[want.n - 1]);
	}
	/* a full block of consecutive UIDs */
	fts_lmdb_uids_clear(&want);
	for (uint32_t uid = 10; uid < 10 + FTS_LMDB_BLOCK_MAX_UIDS; uid++)
		fts_lmdb_uids_push(&want, uid);
	size = fts_lmdb_block_encode(want.v, want.n, buf);
	assert_int_equal(size, 1 + 1 + (FTS_LMDB_BLOCK_MAX_UIDS - 1));
	fts_lmdb_uids_clear(&got);
	assert_int_equal(fts_lmdb_block_decode(10, buf, size, &got), 0);
	assert_uids("full block", &got, want.v, want.n);
	fts_lmdb_uids_free(&got);
	fts_lmdb_uids_free(&want);
}

static void test_block_corrupt(void **state)
{
	static const struct {
		const char *name;
		uint32_t first;
		uint8_t bytes[8];
		size_t len;
	} cases[] = {
		{ "empty", 1, { 0 }, 0 },
		{ "count 0", 1, { 0x00 }, 1 },
		{ "count > max", 1, { 0x81, 0x01 }, 2 },
		{ "zero delta", 1, { 0x02, 0x00 }, 2 },
		{ "missing delta", 1, { 0x03, 0x01 }, 2 },
		{ "trailing byte", 1, { 0x01, 0x05 }, 2 },
		{ "uid overflow", 0xfffffff0U, { 0x02, 0x7f }, 2 },
		{ "first uid 0", 0, { 0x01 }, 1 },
	};
	struct fts_lmdb_uids got = { 0 };
	uint32_t count, last;

	(void)state;
	fts_lmdb_uids_push(&got, 99);
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		if (fts_lmdb_block_decode(cases[i].first, cases[i].bytes,
					  cases[i].len, &got) != -1 ||
		    fts_lmdb_block_info(cases[i].first, cases[i].bytes,
					cases[i].len, &count, &last) != -1)
			fail_msg("%s: accepted", cases[i].name);
		/* a corrupt block appends nothing */
		if (got.n != 1)
			fail_msg("%s: got %zu uids, want 1", cases[i].name,
				 got.n);
	}
	fts_lmdb_uids_free(&got);
}

/* ---- UID sets ---- */

static void test_uid_set_ops(void **state)
{
	static const struct {
		struct uidlist a, b, and, or, not;
	} cases[] = {
		{ { 0 }, { 0 }, { 0 }, { 0 }, { 0 } },
		{ { 3, { 1, 2, 3 } }, { 0 }, { 0 }, { 3, { 1, 2, 3 } },
		  { 3, { 1, 2, 3 } } },
		{ { 0 }, { 2, { 4, 5 } }, { 0 }, { 2, { 4, 5 } }, { 0 } },
		{ { 4, { 1, 3, 5, 7 } }, { 4, { 2, 3, 6, 7 } }, { 2, { 3, 7 } },
		  { 6, { 1, 2, 3, 5, 6, 7 } }, { 2, { 1, 5 } } },
		{ { 3, { 1, 2, 3 } }, { 3, { 1, 2, 3 } }, { 3, { 1, 2, 3 } },
		  { 3, { 1, 2, 3 } }, { 0 } },
		{ { 2, { 1, 1000000 } }, { 10, { 2, 3, 4, 5, 6, 7, 8, 9, 10, 1000000 } },
		  { 1, { 1000000 } },
		  { 11, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1000000 } },
		  { 1, { 1 } } },
		{ { 1, { UINT32_MAX } }, { 1, { 1 } }, { 0 },
		  { 2, { 1, UINT32_MAX } }, { 1, { UINT32_MAX } } },
	};
	struct fts_lmdb_uids a = { 0 }, b = { 0 };
	char what[64];

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		uids_set(&a, &cases[i].a); uids_set(&b, &cases[i].b);
		fts_lmdb_uids_intersect(&a, &b);
		snprintf(what, sizeof(what), "case %zu AND", i);
		assert_uids(what, &a, cases[i].and.v, cases[i].and.n);

		uids_set(&a, &cases[i].a);
		fts_lmdb_uids_union(&a, &b);
		snprintf(what, sizeof(what), "case %zu OR", i);
		assert_uids(what, &a, cases[i].or.v, cases[i].or.n);

		uids_set(&a, &cases[i].a);
		fts_lmdb_uids_remove(&a, &b);
		snprintf(what, sizeof(what), "case %zu AND NOT", i);
		assert_uids(what, &a, cases[i].not.v, cases[i].not.n);

		uids_set(&a, &cases[i].a);
		for (size_t j = 0; j < cases[i].b.n; j++) {
			bool want = false;

			for (size_t k = 0; k < cases[i].a.n; k++)
				want |= cases[i].a.v[k] == cases[i].b.v[j];
			assert_int_equal(fts_lmdb_uids_contains(&a,
						cases[i].b.v[j]), want);
		}
	}
	fts_lmdb_uids_free(&a);
	fts_lmdb_uids_free(&b);
}

/* Intersections against a brute-force model on random sets, so that the
   galloping search is exercised on long runs. */
static void test_uid_set_random(void **state)
{
	struct fts_lmdb_uids a = { 0 }, b = { 0 }, want = { 0 };

	(void)state;
	srandom(42);
	for (int round = 0; round < 200; round++) {
		uint32_t range = 1 + random() % 5000;
		unsigned int na = random() % 300, nb = random() % 3000;

		fts_lmdb_uids_clear(&a); fts_lmdb_uids_clear(&b);
		for (unsigned int i = 0; i < na; i++)
			fts_lmdb_uids_push(&a, 1 + random() % range);
		for (unsigned int i = 0; i < nb; i++)
			fts_lmdb_uids_push(&b, 1 + random() % range);
		fts_lmdb_uids_normalize(&a);
		fts_lmdb_uids_normalize(&b);
		fts_lmdb_uids_clear(&want);
		for (size_t i = 0; i < a.n; i++) {
			for (size_t j = 0; j < b.n; j++) {
				if (a.v[i] == b.v[j])
					fts_lmdb_uids_push(&want, a.v[i]);
			}
		}
		fts_lmdb_uids_intersect(&a, &b);
		assert_uids("random AND", &a, want.v, want.n);
	}
	fts_lmdb_uids_free(&a);
	fts_lmdb_uids_free(&b);
	fts_lmdb_uids_free(&want);
}

/* ---- UTF-8 and grams ---- */

static void test_utf8_strict(void **state)
{
	static const struct {
		const char *name;
		const char *bytes;
		unsigned int len, want_len;
		uint32_t want_cp;
	} cases[] = {
		{ "ascii", "A", 1, 1, 'A' },
		{ "2-byte", "\xc3\xa9", 2, 2, 0xe9 },
		{ "3-byte", "\xe2\x82\xac", 3, 3, 0x20ac },
		{ "4-byte", "\xf0\x9f\x98\x80", 4, 4, 0x1f600 },
		{ "max", "\xf4\x8f\xbf\xbf", 4, 4, 0x10ffff },
		{ "overlong C0", "\xc0\x80", 2, 0, 0 },
		{ "overlong C1", "\xc1\xbf", 2, 0, 0 },
		{ "overlong E0", "\xe0\x80\x80", 3, 0, 0 },
		{ "surrogate", "\xed\xa0\x80", 3, 0, 0 },
		{ "overlong F0", "\xf0\x80\x80\x80", 4, 0, 0 },
		{ "too large", "\xf4\x90\x80\x80", 4, 0, 0 },
		{ "F5", "\xf5\x80\x80\x80", 4, 0, 0 },
		{ "lone continuation", "\x80", 1, 0, 0 },
		{ "truncated", "\xe2\x82", 2, 0, 0 },
		{ "lead then ascii", "\xc3" "A", 2, 0, 0 },
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const uint8_t *p = (const uint8_t *)cases[i].bytes;
		uint32_t cp = 0;
		unsigned int len = fts_lmdb_utf8_get(p, p + cases[i].len, &cp);

		if (len != cases[i].want_len ||
		    (len > 0 && cp != cases[i].want_cp))
			fail_msg("%s: got len %u cp %x, want len %u cp %x",
				 cases[i].name, len, cp, cases[i].want_len,
				 cases[i].want_cp);
	}
}

/* fts_lmdb_gram_pack(), as a constant expression for the tables */
#define G(a, b, c) \
	(((uint64_t)(a) << 42) | ((uint64_t)(b) << 21) | (uint64_t)(c))

static void test_grams(void **state)
{
	static const struct {
		const char *name;
		const char *text;
		size_t n;
		uint64_t want[6];
	} cases[] = {
		{ "short", "AB", 0, { 0 } },
		{ "three", "ABC", 1, { G('A', 'B', 'C') } },
		{ "four", "ABCD", 2, { G('A', 'B', 'C'), G('B', 'C', 'D') } },
		{ "repeat", "AAAA", 1, { G('A', 'A', 'A') } },
		{ "LF resets", "AB\nCD", 0, { 0 } },
		{ "CR resets", "ABC\rDEF", 2, { G('A', 'B', 'C'), G('D', 'E', 'F') } },
		{ "invalid resets", "AB\xff" "CD", 0, { 0 } },
		{ "utf8", "\xc3\xa9t\xc3\xa9", 1, { G(0xe9, 't', 0xe9) } },
		{ "space kept", "A B", 1, { G('A', ' ', 'B') } },
	};
	struct fts_lmdb_grams g = { 0 };

	(void)state;
	assert_true(fts_lmdb_gram_pack(0x10ffff, 'A', 0xe9) ==
		    G(0x10ffff, 'A', 0xe9));
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		fts_lmdb_grams_clear(&g);
		fts_lmdb_grams_add_text(&g, cases[i].text,
					strlen(cases[i].text), false);
		fts_lmdb_grams_finish(&g);
		if (g.n != cases[i].n)
			fail_msg("%s: got %zu grams, want %zu", cases[i].name,
				 g.n, cases[i].n);
		for (size_t j = 0; j < g.n; j++) {
			bool found = false;

			for (size_t k = 0; k < cases[i].n; k++)
				found |= g.v[j] == cases[i].want[k];
			if (!found)
				fail_msg("%s: unexpected gram %llx",
					 cases[i].name,
					 (unsigned long long)g.v[j]);
			if (j > 0 && g.v[j - 1] >= g.v[j])
				fail_msg("%s: not sorted", cases[i].name);
		}
	}
	fts_lmdb_grams_free(&g);
}

/* Unigrams and bigrams, for keys of one and two characters: they never
   collide with trigrams, and windows restart like trigrams do. */
static void test_short_grams(void **state)
{
	struct fts_lmdb_grams g = { 0 };
	const uint64_t want[] = {
		fts_lmdb_gram_pack1('A'), fts_lmdb_gram_pack1('B'),
		fts_lmdb_gram_pack1(0x10ffff), fts_lmdb_gram_pack2('A', 'B'),
		G('A', 'B', 0x10ffff), fts_lmdb_gram_pack2('B', 0x10ffff),
	};

	(void)state;
	/* "AB\n\xf4\x8f\xbf\xbf" would give no AB+U+10FFFF gram */
	fts_lmdb_grams_add_text(&g, "AB\xf4\x8f\xbf\xbf", 6, true);
	fts_lmdb_grams_finish(&g);
	assert_int_equal(g.n, N_ELEMENTS(want));
	for (size_t i = 0; i < N_ELEMENTS(want); i++) {
		bool found = false;

		for (size_t j = 0; j < g.n; j++)
			found |= g.v[j] == want[i];
		if (!found)
			fail_msg("short gram %zu missing", i);
	}
	assert_true(fts_lmdb_gram_pack1(5) != fts_lmdb_gram_pack2(0, 5));
	assert_true(fts_lmdb_gram_pack2(1, 2) > G(0x10ffff, 0x10ffff, 0x10ffff));
	fts_lmdb_grams_clear(&g);
	fts_lmdb_grams_add_text(&g, "A\nB", 3, true);
	fts_lmdb_grams_finish(&g);
	assert_int_equal(g.n, 2);	/* no bigram across LF */
	fts_lmdb_grams_free(&g);
}

/* Many grams with duplicates, across table growth and clears: the set
   stays the distinct values, including 0 and the table's own "empty"
   marker UINT64_MAX. */
static void test_grams_distinct(void **state)
{
	struct fts_lmdb_grams g = { 0 };

	(void)state;
	for (int round = 0; round < 3; round++) {
		for (uint32_t i = 0; i < 100000; i++)
			fts_lmdb_grams_add(&g, (uint64_t)(i * 7919u % 50000u));
		fts_lmdb_grams_add(&g, UINT64_MAX);
	}
	assert_int_equal(g.n, 50001);
	fts_lmdb_grams_finish(&g);
	for (size_t i = 0; i < 50000; i++)
		assert_int_equal(g.v[i], i);
	assert_true(g.v[50000] == UINT64_MAX);
	fts_lmdb_grams_clear(&g);
	fts_lmdb_grams_add(&g, 7);
	fts_lmdb_grams_add(&g, UINT64_MAX);
	fts_lmdb_grams_add(&g, 7);
	assert_int_equal(g.n, 2);
	fts_lmdb_grams_free(&g);
}

static void test_key_analyze(void **state)
{
	static const struct {
		const char *key;
		int ret;
		unsigned int chars;
		size_t grams;
	} cases[] = {
		{ "A", 0, 1, 1 },
		{ "AB", 0, 2, 1 },
		{ "ABC", 0, 3, 1 },
		{ "ABAB", 0, 4, 2 },
		{ "AAAAA", 0, 5, 1 },
		{ "\xc3\xa9\xc3\xa9", 0, 2, 1 },
		{ "A\r\nB", -1, 0, 0 },
		{ "AB\n", -1, 0, 0 },
		{ "\xff", -1, 0, 0 },
	};
	struct fts_lmdb_grams g = { 0 };

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		unsigned int chars = 0;
		int ret;

		fts_lmdb_grams_clear(&g);
		ret = fts_lmdb_key_analyze(cases[i].key, strlen(cases[i].key),
					   &g, &chars);
		if (ret != cases[i].ret ||
		    (ret == 0 && (chars != cases[i].chars ||
				  g.n != cases[i].grams)))
			fail_msg("key %zu: got ret %d chars %u grams %zu, want "
				 "%d %u %zu", i, ret, chars, g.n, cases[i].ret,
				 cases[i].chars, cases[i].grams);
	}
	fts_lmdb_grams_free(&g);
}

/* ---- stored text ---- */

static struct fts_lmdb_doc_builder *build_sample(size_t max_text)
{
	struct fts_lmdb_doc_builder *b = fts_lmdb_doc_builder_new(max_text);
	static const char *subj_line = "SUBJECT: HELLO  WORLD\r\n";
	size_t off;

	fts_lmdb_doc_part_break(b);
	off = fts_lmdb_doc_append_hdr_text(b, "FROM: ", 6);
	(void)fts_lmdb_doc_append_hdr_text(b, "ANN <ANN@EXAMPLE.COM>", 21);
	(void)fts_lmdb_doc_append_hdr_text(b, "\r\n", 2);
	fts_lmdb_doc_add_header(b, "From", 4, off + 6, 21,
				"ANN <ANN@EXAMPLE.COM>", 21, NULL, 0);
	off = fts_lmdb_doc_append_hdr_text(b, subj_line, strlen(subj_line));
	fts_lmdb_doc_add_header(b, "subject", 7, off + 9, 12, NULL, 0,
				"HELLO WORLD", 11);
	off = fts_lmdb_doc_append_hdr_text(b, "X-EMPTY: \r\n", 11);
	fts_lmdb_doc_add_header(b, "X-Empty", 7, off + 9, 0, NULL, 0, NULL, 0);
	fts_lmdb_doc_append_body(b, "THE BODY TEXT", 13);
	fts_lmdb_doc_part_break(b);
	fts_lmdb_doc_append_body(b, "SECOND PART", 11);
	fts_lmdb_doc_append_extra(b, "HTML ONLY", 9);
	return b;
}

static void check_sample_doc(const struct fts_lmdb_doc *doc)
{
	static const struct {
		const char *key;
		bool headers, body, want;
	} text_cases[] = {
		{ "BODY TEXT", false, true, true },
		{ "SECOND", false, true, true },
		{ "TEXTSECOND", false, true, false },	/* parts don't join */
		{ "HTML ONLY", false, true, true },	/* extra is body */
		{ "HELLO  WORLD", true, false, true },
		{ "HELLO  WORLD", false, true, false },
		{ "FROM: ANN", true, true, true },
		{ "ANN@EXAMPLE", false, true, false },
		{ "NOWHERE", true, true, false },
	};
	static const struct {
		const char *field;
		enum fts_lmdb_hdr_form form;
		const char *key;
		int want;
	} hdr_cases[] = {
		{ "FROM", FTS_LMDB_FORM_PLAIN, "ANN@", 1 },
		{ "from", FTS_LMDB_FORM_ADDR, "<ANN@EXAMPLE.COM>", 1 },
		{ "Subject", FTS_LMDB_FORM_PLAIN, "HELLO  WORLD", 1 },
		{ "Subject", FTS_LMDB_FORM_LWSP, "HELLO  WORLD", 0 },
		{ "Subject", FTS_LMDB_FORM_LWSP, "HELLO WORLD", 1 },
		{ "Subject", FTS_LMDB_FORM_ADDR, "HELLO", -1 },
		{ "X-Empty", FTS_LMDB_FORM_PLAIN, "", 1 },
		{ "X-Empty", FTS_LMDB_FORM_PLAIN, "A", 0 },
		{ "X-Missing", FTS_LMDB_FORM_PLAIN, "", 0 },
		{ "To", FTS_LMDB_FORM_ADDR, "ANN", 0 },
		{ "Fro", FTS_LMDB_FORM_PLAIN, "", 0 },
		{ "Fromm", FTS_LMDB_FORM_PLAIN, "", 0 },
	};
	for (size_t i = 0; i < N_ELEMENTS(text_cases); i++) {
		bool got = fts_lmdb_doc_match_text(doc, text_cases[i].key,
			strlen(text_cases[i].key), text_cases[i].headers,
			text_cases[i].body);
		if (got != text_cases[i].want)
			fail_msg("text %s: got %d, want %d", text_cases[i].key,
				 got, text_cases[i].want);
	}
	for (size_t i = 0; i < N_ELEMENTS(hdr_cases); i++) {
		int got = fts_lmdb_doc_match_header(doc, hdr_cases[i].field,
			hdr_cases[i].form, hdr_cases[i].key,
			strlen(hdr_cases[i].key));
		if (got != hdr_cases[i].want)
			fail_msg("header %s %s: got %d, want %d",
				 hdr_cases[i].field, hdr_cases[i].key, got,
				 hdr_cases[i].want);
	}
}

static void test_doc_roundtrip(void **state)
{
	struct fts_lmdb_doc_builder *b = build_sample(0);
	struct fts_lmdb_doc_reader *r = fts_lmdb_doc_reader_new();
	struct fts_lmdb_buf enc = { 0 };
	struct fts_lmdb_doc doc;

	(void)state;
	fts_lmdb_doc_builder_view(b, &doc);
	check_sample_doc(&doc);
	fts_lmdb_doc_encode(b, &enc);
	assert_int_equal(fts_lmdb_doc_decode(r, enc.data, enc.used, BOTH,
					     &doc), 0);
	assert_int_equal(doc.flags, 0);
	assert_int_equal(doc.hdr_count, 3);
	check_sample_doc(&doc);

	/* one section only: the other reads as empty */
	assert_int_equal(fts_lmdb_doc_decode(r, enc.data, enc.used,
					     FTS_LMDB_DOC_HEAD, &doc), 0);
	assert_int_equal(doc.body_len, 0);
	assert_int_equal(doc.hdr_count, 3);
	assert_true(fts_lmdb_doc_match_text(&doc, "HELLO", 5, true, false));
	assert_int_equal(fts_lmdb_doc_decode(r, enc.data, enc.used,
					     FTS_LMDB_DOC_BODY, &doc), 0);
	assert_int_equal(doc.hdr_count, 0);
	assert_int_equal(doc.hdr_text_len, 0);
	assert_true(fts_lmdb_doc_match_text(&doc, "SECOND", 6, false, true));

	/* every truncation and every single-byte change decodes or fails
	   cleanly (ASan checks the reads) */
	for (size_t cut = 0; cut < enc.used; cut++)
		assert_int_equal(fts_lmdb_doc_decode(r, enc.data, cut, BOTH,
						     &doc), -1);
	for (size_t i = 0; i < enc.used; i++) {
		uint8_t saved = enc.data[i];

		for (int bit = 0; bit < 8; bit++) {
			enc.data[i] = saved ^ (1 << bit);
			if (fts_lmdb_doc_decode(r, enc.data, enc.used, BOTH,
						&doc) == 0)
				(void)fts_lmdb_doc_match_text(&doc, "E", 1,
							      true, true);
		}
		enc.data[i] = saved;
	}
	fts_lmdb_buf_free(&enc);
	fts_lmdb_doc_reader_free(&r);
	fts_lmdb_doc_builder_free(&b);
}

/* Large text is compressed; the cap marks the message partial. */
static void test_doc_compress_and_cap(void **state)
{
	struct fts_lmdb_doc_builder *b = fts_lmdb_doc_builder_new(0);
	struct fts_lmdb_doc_reader *r = fts_lmdb_doc_reader_new();
	struct fts_lmdb_buf enc = { 0 };
	struct fts_lmdb_doc doc;
	char line[64];

	(void)state;
	for (int i = 0; i < 2000; i++) {
		int len = snprintf(line, sizeof(line), "LINE %d OF TEXT\r\n", i);
		fts_lmdb_doc_append_body(b, line, len);
	}
	fts_lmdb_doc_encode(b, &enc);
	assert_true(enc.used < 20000);	/* the body section got compressed */
	assert_int_equal(fts_lmdb_doc_decode(r, enc.data, enc.used, BOTH,
					     &doc), 0);
	assert_true(fts_lmdb_doc_match_text(&doc, "LINE 1999 OF", 12, false,
					    true));
	fts_lmdb_doc_builder_free(&b);

	/* the cut records which part of the text it affected */
	b = fts_lmdb_doc_builder_new(100);
	fts_lmdb_doc_append_hdr_text(b, "SUBJECT: X\r\n", 12);
	fts_lmdb_doc_add_header(b, "Subject", 7, 9, 1, NULL, 0, "X", 1);
	fts_lmdb_doc_append_body(b, "0123456789", 10);
	assert_int_equal(fts_lmdb_doc_builder_flags(b), 0);
	for (int i = 0; i < 20; i++)
		fts_lmdb_doc_append_body(b, "0123456789", 10);
	assert_int_equal(fts_lmdb_doc_builder_flags(b),
			 FTS_LMDB_DOC_FLAG_CUT_BODY);
	fts_lmdb_doc_add_header(b, "To", 2, 0, 1, "Y", 1, NULL, 0);
	fts_lmdb_doc_append_hdr_text(b, "TO: Y\r\n", 7);
	assert_int_equal(fts_lmdb_doc_builder_flags(b),
			 FTS_LMDB_DOC_FLAG_CUT_BODY | FTS_LMDB_DOC_FLAG_CUT_HDRS |
			 FTS_LMDB_DOC_FLAG_CUT_HDR_TEXT);
	fts_lmdb_doc_builder_add_flags(b, FTS_LMDB_DOC_FLAG_PARTIAL | 0xf0);
	fts_lmdb_doc_encode(b, &enc);
	assert_int_equal(fts_lmdb_doc_peek_flags(enc.data, enc.used),
			 FTS_LMDB_DOC_FLAGS_ALL);
	assert_int_equal(fts_lmdb_doc_decode(r, enc.data, enc.used, BOTH,
					     &doc), 0);
	assert_int_equal(doc.flags, FTS_LMDB_DOC_FLAGS_ALL);
	/* header text, then the name and LWSP form of Subject */
	assert_int_equal(doc.body_len, 100 - 12 - 8);
	assert_int_equal(doc.hdr_count, 1);	/* "To" didn't fit */
	assert_int_equal(fts_lmdb_doc_match_header(&doc, "subject",
		FTS_LMDB_FORM_LWSP, "X", 1), 1);
	fts_lmdb_buf_free(&enc);
	fts_lmdb_doc_reader_free(&r);
	fts_lmdb_doc_builder_free(&b);
}

static void test_doc_grams(void **state)
{
	struct fts_lmdb_doc_builder *b = build_sample(0);
	struct fts_lmdb_grams grams[FTS_LMDB_SPACE_COUNT];
	uint8_t spaces[FTS_LMDB_SPACE_COUNT];
	struct fts_lmdb_doc doc;
	static const struct {
		uint8_t space;
		uint64_t gram;
		bool want;
	} cases[] = {
		{ FTS_LMDB_SPACE_BODY, G('T', 'H', 'E'), true },
		{ FTS_LMDB_SPACE_BODY, G('O', 'N', 'L'), true },	/* extra */
		{ FTS_LMDB_SPACE_BODY, G('X', 'T', 'S'), false },	/* across parts */
		{ FTS_LMDB_SPACE_BODY, 1ULL << 63 | 'T' << 21 | 'H', true },
		{ FTS_LMDB_SPACE_HDR, 3ULL << 62 | ':', true },
		{ FTS_LMDB_SPACE_SUBJECT, 3ULL << 62 | 'H', false },
		{ FTS_LMDB_SPACE_HDR, G('F', 'R', 'O'), true },
		{ FTS_LMDB_SPACE_HDR, G('T', 'H', 'E'), false },
		{ FTS_LMDB_SPACE_SUBJECT, G('O', ' ', 'W'), true },
		{ FTS_LMDB_SPACE_SUBJECT, G('O', ' ', ' '), false },
		{ FTS_LMDB_SPACE_FROM, G('<', 'A', 'N'), true },
		{ FTS_LMDB_SPACE_TO, G('<', 'A', 'N'), false },
		{ FTS_LMDB_SPACE_NAME, 0, true },	/* hash("from") below */
	};

	(void)state;
	memset(grams, 0, sizeof(grams));
	fts_lmdb_doc_builder_view(b, &doc);
	fts_lmdb_doc_grams(&doc, grams, spaces);
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		uint64_t gram = cases[i].space == FTS_LMDB_SPACE_NAME ?
			fts_lmdb_name_hash("FROM", 4) : cases[i].gram;
		bool found = false;

		for (size_t s = 0; s < FTS_LMDB_SPACE_COUNT; s++) {
			if (spaces[s] != cases[i].space)
				continue;
			for (size_t j = 0; j < grams[s].n; j++)
				found |= grams[s].v[j] == gram;
		}
		if (found != cases[i].want)
			fail_msg("gram case %zu (space %c): got %d, want %d", i,
				 cases[i].space, found, cases[i].want);
	}
	for (size_t s = 0; s < FTS_LMDB_SPACE_COUNT; s++)
		fts_lmdb_grams_free(&grams[s]);
	fts_lmdb_doc_builder_free(&b);
}

/* ---- the store ---- */

static const uint8_t guid1[16] = "mailbox-guid-001";
static const uint8_t guid2[16] = "mailbox-guid-002";

/* one message with one body gram, "doc" text: its UID as a string */
static void batch_add_uid(struct fts_lmdb_batch *batch, uint32_t uid,
			  const uint64_t *grams, size_t n)
{
	struct fts_lmdb_grams g = { 0 };
	const struct fts_lmdb_grams *gp = &g;
	uint8_t space = FTS_LMDB_SPACE_BODY;
	char text[16];

	for (size_t i = 0; i < n; i++)
		fts_lmdb_grams_add(&g, grams[i]);
	fts_lmdb_grams_finish(&g);
	snprintf(text, sizeof(text), "%u", uid);
	fts_lmdb_batch_add(batch, uid, 0, text, strlen(text), &space, &gp, 1);
	fts_lmdb_grams_free(&g);
}

static void read_postings(struct fts_lmdb_store *store, const uint8_t *guid,
			  uint64_t gram, struct fts_lmdb_uids *out,
			  struct fts_lmdb_box_rec *rec_r)
{
	struct ldb_txn *txn;

	fts_lmdb_uids_clear(out);
	assert_int_equal(ldb_txn_begin(fts_lmdb_store_env(store), false,
				       &txn), 0);
	assert_int_equal(fts_lmdb_store_box_get(txn, store, guid, rec_r), 1);
	assert_int_equal(fts_lmdb_store_postings(txn, store, rec_r->box_id,
						 FTS_LMDB_SPACE_BODY, gram,
						 out), 0);
	ldb_txn_abort(&txn);
}

/* The UIDs as stored, block by block: duplicates and disorder show. */
static size_t stored_postings(struct fts_lmdb_store *store, uint32_t box_id,
			      uint64_t gram)
{
	uint8_t prefix[FTS_LMDB_POST_KEY_SIZE];
	struct fts_lmdb_uids all = { 0 };
	struct ldb_cursor *cursor;
	struct ldb_txn *txn;
	unsigned int dbi;
	const void *key = prefix, *data;
	size_t key_size = sizeof(prefix), size, n;
	enum ldb_cursor_op op = LDB_CURSOR_SET_RANGE;

	fts_lmdb_post_key(box_id, FTS_LMDB_SPACE_BODY, gram, 0, prefix);
	assert_int_equal(ldb_dbi_open(fts_lmdb_store_env(store), "fts_post",
				      &dbi), 0);
	assert_int_equal(ldb_txn_begin(fts_lmdb_store_env(store), false,
				       &txn), 0);
	assert_int_equal(ldb_cursor_open(txn, dbi, &cursor), 0);
	while (ldb_cursor_get(cursor, op, &key, &key_size, &data, &size) > 0 &&
	       memcmp(key, prefix, 13) == 0) {
		const uint8_t *k = key;
		uint32_t first = (uint32_t)k[13] << 24 | k[14] << 16 |
			k[15] << 8 | k[16];

		op = LDB_CURSOR_NEXT;
		if (all.n > 0 && first <= all.v[all.n - 1])
			fail_msg("block %u overlaps the previous one", first);
		assert_int_equal(fts_lmdb_block_decode(first, data, size,
						       &all), 0);
	}
	ldb_cursor_close(&cursor);
	ldb_txn_abort(&txn);
	n = all.n;
	fts_lmdb_uids_free(&all);
	return n;
}

static void read_live(struct fts_lmdb_store *store, uint32_t box_id,
		      struct fts_lmdb_uids *out)
{
	struct ldb_txn *txn;

	fts_lmdb_uids_clear(out);
	assert_int_equal(ldb_txn_begin(fts_lmdb_store_env(store), false,
				       &txn), 0);
	assert_int_equal(fts_lmdb_store_uids(txn, store, box_id, out, NULL,
					     NULL), 0);
	ldb_txn_abort(&txn);
}

/* Appends across flushes fill the last block, postings spanning several
   blocks read back in order, and the last UID moves with the data. */
static void test_store_append(void **state)
{
	struct env_fixture *f = *state;
	struct fts_lmdb_batch *batch = fts_lmdb_batch_new(guid1, 7, 0);
	struct fts_lmdb_uids got = { 0 }, want = { 0 };
	struct fts_lmdb_box_rec rec;
	const uint64_t every = 1, odd = 2;

	for (uint32_t uid = 1; uid <= 700; uid++) {
		uint64_t grams[2] = { every, odd };

		batch_add_uid(batch, uid, grams, uid % 2 == 1 ? 2 : 1);
		fts_lmdb_uids_push(&want, uid);
		/* uneven flush sizes, so blocks fill across flushes */
		if (uid % 97 == 0)
			assert_int_equal(fts_lmdb_batch_flush(f->store, batch), 1);
	}
	assert_int_equal(fts_lmdb_batch_flush(f->store, batch), 1);
	read_postings(f->store, guid1, every, &got, &rec);
	assert_uids("every", &got, want.v, want.n);
	assert_int_equal(stored_postings(f->store, rec.box_id, every), 700);
	assert_int_equal(rec.last_uid, 700);
	assert_int_equal(rec.uidvalidity, 7);
	read_postings(f->store, guid1, odd, &got, &rec);
	assert_int_equal(got.n, 350);
	for (size_t i = 0; i < got.n; i++)
		assert_int_equal(got.v[i], 2 * i + 1);
	read_postings(f->store, guid1, 3, &got, &rec);
	assert_int_equal(got.n, 0);
	read_live(f->store, rec.box_id, &got);
	assert_uids("live", &got, want.v, want.n);
	fts_lmdb_batch_free(&batch);
	fts_lmdb_uids_free(&got);
	fts_lmdb_uids_free(&want);
}

/* Two indexers of one mailbox: the second batch started from the same
   base only writes what the first didn't; after a lowered last UID
   (rescan) re-added UIDs merge into the existing lists. */
static void test_store_concurrent_and_merge(void **state)
{
	struct env_fixture *f = *state;
	struct fts_lmdb_batch *a = fts_lmdb_batch_new(guid1, 1, 0);
	struct fts_lmdb_batch *b = fts_lmdb_batch_new(guid1, 1, 0);
	struct fts_lmdb_uids got = { 0 };
	struct fts_lmdb_box_rec rec;
	const uint64_t gram = 5;
	uint32_t want[] = { 1, 2, 3, 4, 5, 6, 7, 8 };

	for (uint32_t uid = 1; uid <= 5; uid++)
		batch_add_uid(a, uid, &gram, 1);
	for (uint32_t uid = 1; uid <= 8; uid++)
		batch_add_uid(b, uid, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, a), 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, b), 1);
	read_postings(f->store, guid1, gram, &got, &rec);
	assert_uids("concurrent", &got, want, 8);
	assert_int_equal(rec.last_uid, 8);

	/* rescan lowered the last UID to 2; UIDs 3..8 come again, plus 9 */
	assert_int_equal(fts_lmdb_store_box_repair(f->store, guid1, rec.box_id,
						   NULL, 0, 2), 0);
	fts_lmdb_batch_free(&a);
	a = fts_lmdb_batch_new(guid1, 1, 2);
	for (uint32_t uid = 3; uid <= 9; uid++)
		batch_add_uid(a, uid, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, a), 1);
	read_postings(f->store, guid1, gram, &got, &rec);
	{
		uint32_t want9[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
		assert_uids("merged", &got, want9, 9);
	}
	assert_int_equal(rec.last_uid, 9);
	/* merged, not stored twice */
	assert_int_equal(stored_postings(f->store, rec.box_id, gram), 9);

	/* the same over several full blocks */
	assert_int_equal(fts_lmdb_store_box_repair(f->store, guid1, rec.box_id,
						   NULL, 0, 0), 0);
	fts_lmdb_batch_free(&a);
	a = fts_lmdb_batch_new(guid1, 1, 0);
	for (uint32_t uid = 1; uid <= 400; uid++)
		batch_add_uid(a, uid, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, a), 1);
	assert_int_equal(stored_postings(f->store, rec.box_id, gram), 400);
	fts_lmdb_batch_free(&a);
	fts_lmdb_batch_free(&b);
	fts_lmdb_uids_free(&got);
}

/* A UIDVALIDITY change gives the mailbox a new box id; a batch begun
   before a reset is dropped; purge deletes the old box's keys. */
static void test_store_reset(void **state)
{
	struct env_fixture *f = *state;
	struct fts_lmdb_batch *batch = fts_lmdb_batch_new(guid2, 100, 0);
	struct fts_lmdb_uids got = { 0 };
	struct fts_lmdb_box_rec rec;
	uint32_t old_id;
	const uint64_t gram = 9;
	uint32_t want[] = { 1 };

	batch_add_uid(batch, 1, &gram, 1);
	batch_add_uid(batch, 2, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, batch), 1);
	read_postings(f->store, guid2, gram, &got, &rec);
	old_id = rec.box_id;
	/* an indexer that read last UID 2 before the reset */
	fts_lmdb_batch_free(&batch);
	struct fts_lmdb_batch *stale = fts_lmdb_batch_new(guid2, 100, 2);
	batch_add_uid(stale, 3, &gram, 1);

	batch = fts_lmdb_batch_new(guid2, 101, 0);
	batch_add_uid(batch, 1, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, batch), 1);
	read_postings(f->store, guid2, gram, &got, &rec);
	assert_int_not_equal(rec.box_id, old_id);
	assert_int_equal(rec.uidvalidity, 101);
	assert_uids("after reset", &got, want, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, stale), 0);
	read_postings(f->store, guid2, gram, &got, &rec);
	assert_uids("stale batch dropped", &got, want, 1);
	assert_int_equal(rec.last_uid, 1);

	assert_int_equal(fts_lmdb_store_purge_dead(f->store), 1);
	read_live(f->store, old_id, &got);
	assert_int_equal(got.n, 0);
	assert_int_equal(fts_lmdb_store_purge_dead(f->store), 0);

	/* dropping the mailbox */
	assert_int_equal(fts_lmdb_store_box_drop(f->store, guid2), 0);
	assert_int_equal(fts_lmdb_store_purge_dead(f->store), 1);
	read_live(f->store, rec.box_id, &got);
	assert_int_equal(got.n, 0);
	fts_lmdb_batch_free(&batch);
	fts_lmdb_batch_free(&stale);
	fts_lmdb_uids_free(&got);
}

/* Expunge deletes texts at once; optimize drops the UIDs from the
   postings and repacks blocks. */
static void test_store_expunge_compact(void **state)
{
	struct env_fixture *f = *state;
	struct fts_lmdb_batch *batch = fts_lmdb_batch_new(guid1, 3, 0);
	struct fts_lmdb_uids got = { 0 }, want = { 0 }, expunge = { 0 };
	struct fts_lmdb_box_rec rec;
	struct ldb_txn *txn;
	const void *data;
	size_t size;
	const uint64_t gram = 77;

	for (uint32_t uid = 1; uid <= 1000; uid++)
		batch_add_uid(batch, uid, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, batch), 1);
	for (uint32_t uid = 1; uid <= 1000; uid++) {
		if (uid % 3 == 0 || uid > 900)
			fts_lmdb_uids_push(&expunge, uid);
		else
			fts_lmdb_uids_push(&want, uid);
	}
	assert_int_equal(fts_lmdb_store_expunge(f->store, guid1, 3, expunge.v,
						expunge.n), (int)expunge.n);
	/* a wrong UIDVALIDITY expunges nothing */
	assert_int_equal(fts_lmdb_store_expunge(f->store, guid1, 4, want.v,
						want.n), 0);
	read_postings(f->store, guid1, gram, &got, &rec);
	assert_int_equal(got.n, 1000);
	assert_int_equal(rec.dead, expunge.n);
	read_live(f->store, rec.box_id, &got);
	assert_uids("live after expunge", &got, want.v, want.n);
	assert_int_equal(ldb_txn_begin(fts_lmdb_store_env(f->store), false,
				       &txn), 0);
	assert_int_equal(fts_lmdb_store_doc_get(txn, f->store, rec.box_id, 3,
						&data, &size), 0);
	assert_int_equal(fts_lmdb_store_doc_get(txn, f->store, rec.box_id, 4,
						&data, &size), 1);
	assert_memory_equal(data, "4", 1);
	ldb_txn_abort(&txn);

	assert_int_equal(fts_lmdb_store_compact_box(f->store, guid1),
			 (int)expunge.n);
	read_postings(f->store, guid1, gram, &got, &rec);
	assert_uids("compacted", &got, want.v, want.n);
	assert_int_equal(rec.dead, 0);
	assert_int_equal(fts_lmdb_store_compact_box(f->store, guid1), 0);

	/* appends after compaction still go to the end */
	batch_add_uid(batch, 1001, &gram, 1);
	assert_int_equal(fts_lmdb_batch_flush(f->store, batch), 1);
	fts_lmdb_uids_push(&want, 1001);
	read_postings(f->store, guid1, gram, &got, &rec);
	assert_uids("append after compact", &got, want.v, want.n);
	assert_int_equal(stored_postings(f->store, rec.box_id, gram), want.n);
	fts_lmdb_batch_free(&batch);
	fts_lmdb_uids_free(&got);
	fts_lmdb_uids_free(&want);
	fts_lmdb_uids_free(&expunge);
}

/* A schema written by a newer version is refused. */
static void test_store_version(void **state)
{
	struct env_fixture *f = *state;
	struct fts_lmdb_store *store2;
	struct ldb_settings set;
	struct ldb_txn *txn;
	const char *error;

	assert_int_equal(ldb_txn_begin(fts_lmdb_store_env(f->store), true,
				       &txn), 0);
	assert_int_equal(ldb_meta_put_u32(txn, "fts_schema_version",
					  FTS_LMDB_SCHEMA_VERSION + 1), 0);
	assert_int_equal(ldb_txn_commit(&txn), 0);
	fts_lmdb_store_close(&f->store);
	ldb_settings_default(&set);
	assert_int_equal(fts_lmdb_store_open(f->dir, &set, &store2, &error),
			 LDB_ERR_VERSION);
	assert_non_null(strstr(error, "newer"));
	assert_int_equal(fts_lmdb_store_open(f->dir, &set, &f->store, &error),
			 LDB_ERR_VERSION);
	f->store = NULL;
}

/* ---- the ldb generic key-value API ---- */

static void test_ldb_kv(void **state)
{
	struct env_fixture *f = *state;
	struct ldb_env *env = fts_lmdb_store_env(f->store);
	struct ldb_cursor *cursor;
	struct ldb_txn *txn;
	unsigned int dbi, dbi2;
	const void *key, *data;
	size_t key_size, size;
	uint64_t count;
	void *reserved;
	static const char *keys[] = { "a", "b", "bb", "c" };

	assert_int_equal(ldb_dbi_open(env, "kvtest", &dbi), 0);
	assert_int_equal(ldb_dbi_open(env, "kvtest", &dbi2), 0);
	assert_int_equal(dbi, dbi2);
	assert_int_equal(ldb_txn_begin(env, true, &txn), 0);
	for (size_t i = 0; i < N_ELEMENTS(keys); i++)
		assert_int_equal(ldb_kv_put(txn, dbi, keys[i], strlen(keys[i]),
					    keys[i], strlen(keys[i]), 0), 1);
	assert_int_equal(ldb_kv_put(txn, dbi, "a", 1, "x", 1,
				    LDB_PUT_NOOVERWRITE), 0);
	assert_int_equal(ldb_kv_put(txn, dbi, "d", 1, "d", 1,
				    LDB_PUT_APPEND), 1);
	assert_int_equal(ldb_kv_reserve(txn, dbi, "e", 1, 3, &reserved), 0);
	memcpy(reserved, "eee", 3);
	assert_int_equal(ldb_kv_count(txn, dbi, &count), 0);
	assert_int_equal(count, 6);
	assert_int_equal(ldb_kv_del(txn, dbi, "zz", 2), 0);
	assert_int_equal(ldb_kv_del(txn, dbi, "d", 1), 1);
	assert_int_equal(ldb_txn_commit(&txn), 0);

	assert_int_equal(ldb_txn_begin(env, false, &txn), 0);
	assert_int_equal(ldb_kv_get(txn, dbi, "e", 1, &data, &size), 1);
	assert_memory_equal(data, "eee", 3);
	assert_int_equal(ldb_kv_get(txn, dbi, "d", 1, &data, &size), 0);
	assert_int_equal(ldb_cursor_open(txn, dbi, &cursor), 0);
	key = "ba"; key_size = 2;
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_SET_RANGE, &key,
					 &key_size, &data, &size), 1);
	assert_int_equal(key_size, 2);
	assert_memory_equal(key, "bb", 2);
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_PREV, &key,
					 &key_size, NULL, NULL), 1);
	assert_memory_equal(key, "b", 1);
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_LAST, &key,
					 &key_size, NULL, NULL), 1);
	assert_memory_equal(key, "e", 1);
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_NEXT, &key,
					 &key_size, NULL, NULL), 0);
	key = "c"; key_size = 1;
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_SET, &key,
					 &key_size, &data, &size), 1);
	assert_memory_equal(data, "c", 1);
	key = "cc"; key_size = 2;
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_SET, &key,
					 &key_size, &data, &size), 0);
	ldb_cursor_close(&cursor);
	ldb_txn_abort(&txn);

	/* cursor delete */
	assert_int_equal(ldb_txn_begin(env, true, &txn), 0);
	assert_int_equal(ldb_cursor_open(txn, dbi, &cursor), 0);
	assert_int_equal(ldb_cursor_get(cursor, LDB_CURSOR_FIRST, &key,
					 &key_size, NULL, NULL), 1);
	assert_int_equal(ldb_cursor_del(cursor), 0);
	ldb_cursor_close(&cursor);
	assert_int_equal(ldb_kv_count(txn, dbi, &count), 0);
	assert_int_equal(count, 4);
	assert_int_equal(ldb_txn_commit(&txn), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varint_roundtrip),
		cmocka_unit_test(test_varint_invalid),
		cmocka_unit_test(test_block_roundtrip),
		cmocka_unit_test(test_block_corrupt),
		cmocka_unit_test(test_uid_set_ops),
		cmocka_unit_test(test_uid_set_random),
		cmocka_unit_test(test_utf8_strict),
		cmocka_unit_test(test_grams),
		cmocka_unit_test(test_short_grams),
		cmocka_unit_test(test_grams_distinct),
		cmocka_unit_test(test_key_analyze),
		cmocka_unit_test(test_doc_roundtrip),
		cmocka_unit_test(test_doc_compress_and_cap),
		cmocka_unit_test(test_doc_grams),
		cmocka_unit_test_setup_teardown(test_store_append,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_store_concurrent_and_merge,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_store_reset,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_store_expunge_compact,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_store_version,
						env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_ldb_kv,
						env_setup, env_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
