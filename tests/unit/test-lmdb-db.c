/* cmocka unit tests for the LMDB layer (include/lmdb-db.h, plugin/lmdb-db.c).

   Build:
     cc -std=gnu99 -Wall -W -Iinclude tests/unit/test-lmdb-db.c \
        plugin/lmdb-db.c -llmdb -lcrypto -lcmocka -o build/test-lmdb-db
   (add -fsanitize=address,undefined -g to check the codec for overreads)

   The MAP_RESIZED tests re-execute this binary (/proc/self/exe) with
   "--ldb-child-grow <path>" so that the second process opens the
   environment from scratch instead of inheriting the parent's MDB_env. */

#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "lmdb-db.h"

#include <lmdb.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define KIB ((size_t)1024)
#define MIB (1024 * KIB)
#define TINY_MAP (32 * (size_t)4096)
#define CHILD_ARG "--ldb-child-grow"

/* this binary, for the child of the MAP_RESIZED tests (readlink, not
   exec of /proc/self/exe, so that it also works under valgrind) */
static char self_exe[PATH_MAX];

/* ---- helpers ---- */

static uint32_t be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
		((uint32_t)p[2] << 8) | p[3];
}

static uint16_t be16(const uint8_t *p)
{
	return ((uint16_t)p[0] << 8) | p[1];
}

static void set_be16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8; p[1] = v & 0xff;
}

static void set_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void make_guid(uint8_t guid[LDB_GUID_SIZE], uint8_t first,
		      uint8_t last)
{
	memset(guid, 0x5a, LDB_GUID_SIZE);
	guid[0] = first;
	guid[LDB_GUID_SIZE - 1] = last;
}

/* deterministic pseudo-random bytes */
static void fill_pattern(uint8_t *buf, size_t size, uint32_t seed)
{
	uint32_t x = seed * 2654435761U + 1;
	size_t i;

	for (i = 0; i < size; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		buf[i] = x >> 24;
	}
}

static void hash_of(const void *data, size_t size, uint8_t hash[LDB_HASH_SIZE])
{
	struct ldb_sha256 *ctx = ldb_sha256_init();

	ldb_sha256_update(ctx, data, size);
	ldb_sha256_final(&ctx, hash);
	assert_null(ctx);
}

static void test_settings(struct ldb_settings *set, size_t initial,
			  size_t max)
{
	ldb_settings_default(set);
	set->allow_network_fs = true;
	set->nosync = true;
	set->initial_map_size = initial;
	set->max_map_size = max;
}

static int rm_cb(const char *path, const struct stat *st, int flag,
		 struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void rm_rf(const char *dir)
{
	(void)nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Is <path>/data.mdb mapped into this process? */
static bool data_file_mapped(const char *path)
{
	char line[8192], want[PATH_MAX + 16];
	bool found = false;
	FILE *f;

	snprintf(want, sizeof(want), "%s/data.mdb", path);
	f = fopen("/proc/self/maps", "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		size_t ll = strlen(line), wl = strlen(want);
		if (ll >= wl && strcmp(line + ll - wl, want) == 0)
			found = true;
	}
	fclose(f);
	return found;
}

/* ---- raw liblmdb access (only with no ldb_env open on the path) ---- */

struct raw_kv {
	const char *db;
	const void *key;
	size_t key_size;
	const void *val;
	size_t val_size;
};

static void raw_put(const char *path, const struct raw_kv *kvs,
		    unsigned int count)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	unsigned int i;

	(void)mkdir(path, 0700);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_set_mapsize(env, 4 * MIB), 0);
	assert_int_equal(mdb_env_open(env, path, MDB_NOSYNC, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	for (i = 0; i < count; i++) {
		MDB_val k = { kvs[i].key_size, (void *)kvs[i].key };
		MDB_val v = { kvs[i].val_size, (void *)kvs[i].val };

		assert_int_equal(mdb_dbi_open(txn, kvs[i].db, MDB_CREATE,
					      &dbi), 0);
		assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	}
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* 1 found (value copied to val_r, up to max), 0 not found */
static int raw_get(const char *path, const char *db, const void *key,
		   size_t key_size, void *val_r, size_t max, size_t *size_r)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { key_size, (void *)key }, v;
	int rc, ret;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, path, MDB_RDONLY, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	rc = mdb_get(txn, dbi, &k, &v);
	if (rc == MDB_NOTFOUND) {
		ret = 0;
	} else {
		assert_int_equal(rc, 0);
		*size_r = v.mv_size;
		memcpy(val_r, v.mv_data, v.mv_size < max ? v.mv_size : max);
		ret = 1;
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return ret;
}

/* ---- fixture ---- */

struct fixture {
	char dir[PATH_MAX];	/* mkdtemp directory */
	char path[PATH_MAX];	/* <dir>/mail.lmdb */
	struct ldb_env *env;
};

static int setup_dir(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char tmpl[] = "/tmp/test-lmdb-db.XXXXXX", *real;

	if (f == NULL || mkdtemp(tmpl) == NULL)
		return -1;
	/* canonical, so that /proc/self/maps matches */
	real = realpath(tmpl, NULL);
	if (real == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s", real);
	snprintf(f->path, sizeof(f->path), "%s/%s", real, LDB_DIR_NAME);
	free(real);
	*state = f;
	return 0;
}

static int open_env(struct fixture *f, size_t initial, size_t max)
{
	struct ldb_settings set;
	const char *error = NULL;
	int ret;

	test_settings(&set, initial, max);
	ret = ldb_env_open(f->path, &set, &f->env, &error);
	if (ret < 0)
		fprintf(stderr, "ldb_env_open(%s): %d %s\n", f->path, ret,
			error == NULL ? "" : error);
	return ret;
}

static int setup_env(void **state)
{
	struct fixture *f;

	if (setup_dir(state) < 0)
		return -1;
	f = *state;
	return open_env(f, 4 * MIB, 64 * MIB) < 0 ? -1 : 0;
}

static void abort_live_txns(void);

static int teardown(void **state)
{
	struct fixture *f = *state;

	abort_live_txns();
	while (f->env != NULL)
		ldb_env_unref(&f->env);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* Transactions a test has open.  A failed assertion longjmp()s out of the
   test; teardown then aborts them before closing the environment, since
   closing it under a live write transaction would leave a locked robust
   mutex unmapped and crash the following tests. */
static struct ldb_txn *live_txns[4];

static void txn_track(struct ldb_txn *txn, bool add)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(live_txns); i++) {
		if (live_txns[i] == (add ? NULL : txn)) {
			live_txns[i] = add ? txn : NULL;
			return;
		}
	}
	if (add)
		fail_msg("too many open transactions");
}

static struct ldb_txn *txn_begin(struct ldb_env *env, bool write)
{
	struct ldb_txn *txn;
	int ret = ldb_txn_begin(env, write, &txn);

	if (ret != 0)
		fail_msg("ldb_txn_begin: %d %s", ret, ldb_env_last_error(env));
	assert_non_null(txn);
	txn_track(txn, true);
	return txn;
}

static struct ldb_txn *wtxn(struct ldb_env *env)
{
	return txn_begin(env, true);
}

static struct ldb_txn *rtxn(struct ldb_env *env)
{
	return txn_begin(env, false);
}

static void txn_abort(struct ldb_txn **txn)
{
	txn_track(*txn, false);
	ldb_txn_abort(txn);
	assert_null(*txn);
}

static void commit(struct ldb_txn **txn)
{
	txn_track(*txn, false);
	assert_int_equal(ldb_txn_commit(txn), 0);
	assert_null(*txn);
}

static void abort_live_txns(void)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(live_txns); i++) {
		if (live_txns[i] != NULL)
			ldb_txn_abort(&live_txns[i]);
	}
}

static void init_msg(struct ldb_msg_rec *rec, const uint8_t hash[LDB_HASH_SIZE],
		     uint64_t tag)
{
	memset(rec, 0, sizeof(*rec));
	rec->flags = tag & 0x3f;
	rec->pop3_order = tag;
	rec->received_date = 1700000000 + tag;
	rec->save_date = 1700000100 + tag;
	rec->physical_size = 1000 + tag;
	rec->virtual_size = 1020 + tag;
	rec->modseq = tag;
	if (hash != NULL)
		memcpy(rec->body_hash, hash, LDB_HASH_SIZE);
}

/* write a body (all its chunks) with the given refcount (>= 1) */
static void put_body(struct ldb_txn *txn, const uint8_t *data, size_t size,
		     uint8_t hash_r[LDB_HASH_SIZE], unsigned int refs)
{
	uint32_t i, count = (size + LDB_CHUNK_SIZE - 1) / LDB_CHUNK_SIZE;
	size_t off;

	hash_of(data, size, hash_r);
	assert_int_equal(ldb_body_create(txn, hash_r, size, LDB_CHUNK_SIZE), 0);
	for (i = 0, off = 0; i < count; i++, off += LDB_CHUNK_SIZE) {
		size_t n = size - off < LDB_CHUNK_SIZE ? size - off :
			LDB_CHUNK_SIZE;
		assert_int_equal(ldb_body_chunk_put(txn, hash_r, i, data + off,
						    n), 0);
	}
	for (; refs > 1; refs--)
		assert_int_equal(ldb_body_ref(txn, hash_r), 1);
}

/* check that the body exists with this content and reference count */
static void check_body(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		       const uint8_t *data, size_t size, uint64_t refcount)
{
	struct ldb_body_info info;
	uint32_t i;
	size_t off = 0;

	assert_int_equal(ldb_body_get_info(txn, hash, &info), 1);
	assert_int_equal(info.refcount, refcount);
	assert_int_equal(info.size, size);
	assert_int_equal(info.chunk_size, LDB_CHUNK_SIZE);
	assert_int_equal(info.chunk_count,
			 (size + LDB_CHUNK_SIZE - 1) / LDB_CHUNK_SIZE);
	for (i = 0; i < info.chunk_count; i++) {
		const void *chunk;
		size_t n;

		assert_int_equal(ldb_body_chunk_get(txn, hash, i, &chunk, &n), 1);
		assert_true(off + n <= size);
		assert_memory_equal(chunk, data + off, n);
		off += n;
	}
	assert_int_equal(off, size);
}

/* check that neither the body nor any of its chunks exist */
static void check_body_gone(struct ldb_txn *txn,
			    const uint8_t hash[LDB_HASH_SIZE], uint32_t chunks)
{
	struct ldb_body_info info;
	const void *chunk;
	size_t n;
	uint32_t i;

	assert_int_equal(ldb_body_get_info(txn, hash, &info), 0);
	for (i = 0; i <= chunks; i++)
		assert_int_equal(ldb_body_chunk_get(txn, hash, i, &chunk, &n), 0);
}

/* ---- 1. key order and iteration ---- */

static const uint32_t order_uids[] = {
	0, 1, 2, 255, 256, 257, 65535, 65536, 16777215, 16777216,
	0x7fffffffU, 0x80000000U, 0xfffffffeU, 0xffffffffU
};

static void test_msg_key_order(void **state)
{
	/* guids in ascending memcmp order; 1 and 2 differ in the last byte
	   only, so the uid bytes follow directly after the difference */
	static const uint8_t guid_bytes[][2] = {
		{ 0x00, 0x00 }, { 0x00, 0x01 }, { 0x00, 0xff },
		{ 0x01, 0x00 }, { 0xff, 0xff },
	};
	const unsigned int nuids = N_ELEMENTS(order_uids);
	const unsigned int n = N_ELEMENTS(guid_bytes) * nuids;
	uint8_t (*keys)[LDB_MSG_KEY_SIZE] = calloc(n, LDB_MSG_KEY_SIZE);
	unsigned int g, u, i, j;

	(void)state;
	assert_non_null(keys);
	for (g = 0; g < N_ELEMENTS(guid_bytes); g++) {
		uint8_t guid[LDB_GUID_SIZE];

		make_guid(guid, guid_bytes[g][0], guid_bytes[g][1]);
		for (u = 0; u < nuids; u++) {
			uint8_t *key = keys[g * nuids + u];

			ldb_msg_key(guid, order_uids[u], key);
			/* layout: guid then big-endian uid */
			assert_memory_equal(key, guid, LDB_GUID_SIZE);
			assert_int_equal(be32(key + LDB_GUID_SIZE),
					 order_uids[u]);
		}
	}
	/* table order (guid, then numeric uid) == memcmp order, all pairs */
	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n; j++) {
			if (memcmp(keys[i], keys[j], LDB_MSG_KEY_SIZE) >= 0)
				fail_msg("key %u !< key %u (guid %u uid %u vs "
					 "guid %u uid %u)", i, j,
					 i / nuids, order_uids[i % nuids],
					 j / nuids, order_uids[j % nuids]);
		}
	}
	free(keys);
}

static const uint32_t iter_insert_uids[] = {
	65536, 1, 256, 255, 0xffffffffU, 2, 1000, 16777216, 65535
};

static void test_msg_iter_order(void **state)
{
	struct fixture *f = *state;
	/* B and C are adjacent in key order, A and D bracket them;
	   E has no records and sorts between A and B */
	uint8_t guids[4][LDB_GUID_SIZE], empty_guid[LDB_GUID_SIZE];
	static const struct {
		unsigned int guid;	/* 4 = empty_guid */
		uint32_t first_uid;
		uint32_t expect[N_ELEMENTS(iter_insert_uids)];
		unsigned int count;
	} cases[] = {
		{ 1, 0, { 1, 2, 255, 256, 1000, 65535, 65536, 16777216,
			  0xffffffffU }, 9 },
		{ 1, 1, { 1, 2, 255, 256, 1000, 65535, 65536, 16777216,
			  0xffffffffU }, 9 },
		{ 1, 3, { 255, 256, 1000, 65535, 65536, 16777216,
			  0xffffffffU }, 7 },
		{ 1, 256, { 256, 1000, 65535, 65536, 16777216,
			    0xffffffffU }, 6 },
		{ 1, 257, { 1000, 65535, 65536, 16777216, 0xffffffffU }, 5 },
		{ 1, 65536, { 65536, 16777216, 0xffffffffU }, 3 },
		{ 1, 0xfffffffeU, { 0xffffffffU }, 1 },
		{ 1, 0xffffffffU, { 0xffffffffU }, 1 },
		{ 2, 1, { 1, 2, 255, 256, 1000, 65535, 65536, 16777216,
			  0xffffffffU }, 9 },
		{ 2, 65537, { 16777216, 0xffffffffU }, 2 },
		{ 0, 0xffffffffU, { 0xffffffffU }, 1 },
		{ 3, 2, { 2, 255, 256, 1000, 65535, 65536, 16777216,
			  0xffffffffU }, 8 },
		{ 4, 0, { 0 }, 0 },
	};
	struct ldb_txn *txn;
	struct ldb_msg_rec rec;
	unsigned int g, i, c;

	make_guid(guids[0], 0x10, 0x00);
	make_guid(guids[1], 0x20, 0x01);
	make_guid(guids[2], 0x20, 0x02);
	make_guid(guids[3], 0x30, 0x00);
	make_guid(empty_guid, 0x18, 0x00);

	txn = wtxn(f->env);
	for (i = 0; i < N_ELEMENTS(iter_insert_uids); i++) {
		for (g = 0; g < 4; g++) {
			uint8_t hash[LDB_HASH_SIZE];

			memset(hash, g, sizeof(hash));
			init_msg(&rec, hash, iter_insert_uids[i]);
			/* physical_size identifies (guid, uid) */
			rec.physical_size = (uint64_t)iter_insert_uids[i] * 8 + g;
			assert_int_equal(ldb_msg_put(txn, guids[g],
						     iter_insert_uids[i], &rec,
						     NULL), 0);
		}
	}
	commit(&txn);

	txn = rtxn(f->env);
	for (c = 0; c < N_ELEMENTS(cases); c++) {
		const uint8_t *guid = cases[c].guid == 4 ? empty_guid :
			guids[cases[c].guid];
		struct ldb_msg_iter *iter;
		uint32_t uid;
		unsigned int got = 0;
		int ret;

		iter = ldb_msg_iter_init(txn, guid, cases[c].first_uid);
		assert_non_null(iter);
		while ((ret = ldb_msg_iter_next(iter, &uid, &rec)) == 1) {
			if (got >= cases[c].count)
				fail_msg("case %u: extra uid %u", c, uid);
			if (uid != cases[c].expect[got])
				fail_msg("case %u: got uid %u, expected %u",
					 c, uid, cases[c].expect[got]);
			assert_int_equal(rec.physical_size,
					 (uint64_t)uid * 8 + cases[c].guid);
			assert_int_equal(rec.body_hash[0], cases[c].guid);
			got++;
		}
		if (ret != 0)
			fail_msg("case %u: iter_next returned %d: %s", c, ret,
				 ldb_env_last_error(f->env));
		/* stays at the end */
		assert_int_equal(ldb_msg_iter_next(iter, &uid, &rec), 0);
		assert_int_equal(ldb_msg_iter_deinit(&iter), 0);
		assert_null(iter);
		if (got != cases[c].count)
			fail_msg("case %u: got %u uids, expected %u", c, got,
				 cases[c].count);
	}
	txn_abort(&txn);
}

/* ---- 2. record codec ---- */

static char long_kw[65536];		/* 65535 bytes: the longest possible */
static char mid_kw[1001];
static char long_guid[2001];
static char kw_many_buf[200][8];
static const char *kw_many[201];
static const char *const kw_none[] = { NULL };
static const char *const kw_one[] = { "$Forwarded", NULL };
static const char *const kw_8bit[] = {
	"\xc3\xa4pple", "\x80", "\xff\xfe\xfd", "a\x7f" "b", NULL
};
static const char *const kw_long[] = { "x", long_kw, "y", NULL };
static const char *const kw_mid[] = { mid_kw, "\xff", mid_kw, NULL };

static void init_codec_data(void)
{
	unsigned int i;

	for (i = 0; i < sizeof(long_kw) - 1; i++)
		long_kw[i] = 0x21 + i % 0x5e;
	for (i = 0; i < sizeof(mid_kw) - 1; i++)
		mid_kw[i] = 0x80 + i % 0x7f;	/* 8-bit, no NUL */
	for (i = 0; i < sizeof(long_guid) - 1; i++)
		long_guid[i] = 'a' + i % 26;
	for (i = 0; i < N_ELEMENTS(kw_many_buf); i++) {
		snprintf(kw_many_buf[i], sizeof(kw_many_buf[i]), "kw%u", i);
		kw_many[i] = kw_many_buf[i];
	}
	kw_many[N_ELEMENTS(kw_many_buf)] = NULL;
}

struct codec_case {
	const char *name;
	uint8_t flags;
	uint32_t pop3_order;
	int64_t received_date, save_date;
	uint64_t physical_size, virtual_size, modseq;
	const char *guid;		/* NULL = none */
	const char *uidl;		/* NULL = none */
	const char *const *keywords;
	bool check_all_truncations;
};

static const struct codec_case codec_cases[] = {
	{ "minimal", 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, true },
	{ "no keywords array", 0x01, 1, 1, 1, 1, 1, 1, NULL, NULL, kw_none, true },
	{ "guid only", 0x02, 0, 1700000000, 1700000001, 1234, 1260, 5,
	  "f0e1d2c3b4a5968778695a4b3c2d1e0f", NULL, NULL, true },
	{ "uidl only", 0x04, 7, 1700000000, 1700000001, 1234, 1260, 5,
	  NULL, "0000000a4f3e2d1c", NULL, true },
	{ "guid+uidl+1 keyword", 0x0f, 3, -1, -2, 1, 2, 3,
	  "guid", "uidl", kw_one, true },
	{ "8-bit keywords", 0x20, 0, 0, 0, 0, 0, 0,
	  "\xff\x00", "\x80\x81", kw_8bit, true },
	{ "extremes max", 0xff, 0xffffffffU, INT64_MAX, INT64_MAX,
	  UINT64_MAX, UINT64_MAX, UINT64_MAX, "g", "u", kw_one, true },
	{ "extremes negative", 0x80, 0x80000000U, INT64_MIN, INT64_MIN + 1,
	  0x8000000000000000ULL, 0x7fffffffffffffffULL, 1,
	  NULL, NULL, kw_8bit, true },
	{ "negative dates", 0x00, 0, -86400LL * 365 * 70, -1, 0, 0, 0,
	  "x", NULL, NULL, true },
	{ "200 keywords", 0x3f, 42, 1, 2, 3, 4, 5, "g", "u", kw_many, true },
	{ "1000-byte keywords", 0x3f, 42, 1, 2, 3, 4, 5, long_guid, long_guid,
	  kw_mid, true },
	{ "65535-byte keyword", 0x3f, 42, 1, 2, 3, 4, 5, long_guid, "u",
	  kw_long, true },
};

static unsigned int kw_count(const char *const *kw)
{
	unsigned int n = 0;

	while (kw != NULL && kw[n] != NULL)
		n++;
	return n;
}

static size_t str_len(const char *s)
{
	/* "\xff\x00" style strings are NUL-terminated at the first NUL */
	return s == NULL ? 0 : strlen(s);
}

static void codec_rec(const struct codec_case *c, unsigned int idx,
		      struct ldb_msg_rec *rec)
{
	unsigned int i;

	memset(rec, 0, sizeof(*rec));
	rec->flags = c->flags;
	rec->pop3_order = c->pop3_order;
	rec->received_date = c->received_date;
	rec->save_date = c->save_date;
	rec->physical_size = c->physical_size;
	rec->virtual_size = c->virtual_size;
	rec->modseq = c->modseq;
	for (i = 0; i < LDB_HASH_SIZE; i++)
		rec->body_hash[i] = i * 7 + idx;
	rec->guid = c->guid;
	rec->guid_len = str_len(c->guid);
	rec->pop3_uidl = c->uidl;
	rec->pop3_uidl_len = str_len(c->uidl);
}

/* encode into a malloc()ed buffer of exactly the encoded size */
static uint8_t *codec_encode(const struct ldb_msg_rec *rec,
			     const char *const *keywords, size_t *size_r)
{
	size_t size = ldb_msg_rec_encoded_size(rec, keywords);
	uint8_t *buf = malloc(size);

	assert_non_null(buf);
	memset(buf, 0xa5, size);	/* unwritten bytes show up */
	ldb_msg_rec_encode(rec, keywords, buf);
	*size_r = size;
	return buf;
}

static void check_decoded(const struct ldb_msg_rec *exp,
			  const char *const *keywords,
			  const struct ldb_msg_rec *got)
{
	unsigned int i, n = kw_count(keywords);
	size_t pos = 0, kwsize = 0, len;
	const char *name;

	assert_int_equal(got->flags, exp->flags);
	assert_int_equal(got->pop3_order, exp->pop3_order);
	assert_true(got->received_date == exp->received_date);
	assert_true(got->save_date == exp->save_date);
	assert_true(got->physical_size == exp->physical_size);
	assert_true(got->virtual_size == exp->virtual_size);
	assert_true(got->modseq == exp->modseq);
	assert_memory_equal(got->body_hash, exp->body_hash, LDB_HASH_SIZE);
	assert_int_equal(got->guid_len, exp->guid_len);
	if (exp->guid_len > 0)
		assert_memory_equal(got->guid, exp->guid, exp->guid_len);
	assert_int_equal(got->pop3_uidl_len, exp->pop3_uidl_len);
	if (exp->pop3_uidl_len > 0)
		assert_memory_equal(got->pop3_uidl, exp->pop3_uidl,
				    exp->pop3_uidl_len);
	assert_int_equal(got->keyword_count, n);
	for (i = 0; i < n; i++) {
		assert_int_equal(ldb_msg_rec_keyword_next(got, &pos, &name,
							  &len), 1);
		assert_int_equal(len, strlen(keywords[i]));
		assert_memory_equal(name, keywords[i], len);
		kwsize += 2 + len;
	}
	assert_int_equal(ldb_msg_rec_keyword_next(got, &pos, &name, &len), 0);
	assert_int_equal(got->keywords_size, kwsize);
}

static void test_msg_codec_roundtrip(void **state)
{
	unsigned int c, i;

	(void)state;
	for (c = 0; c < N_ELEMENTS(codec_cases); c++) {
		const struct codec_case *cc = &codec_cases[c];
		struct ldb_msg_rec rec, dec;
		unsigned int n = kw_count(cc->keywords);
		size_t size, size2, expect_size, off;
		uint8_t *buf, *buf2;

		print_message("codec case: %s\n", cc->name);
		codec_rec(cc, c, &rec);
		/* schema: 80 fixed bytes, u16 G + G, u16 U + U, (u16 L + L)*K */
		expect_size = 80 + 2 + rec.guid_len + 2 + rec.pop3_uidl_len;
		for (i = 0; i < n; i++)
			expect_size += 2 + strlen(cc->keywords[i]);
		buf = codec_encode(&rec, cc->keywords, &size);
		assert_int_equal(size, expect_size);

		/* the documented byte layout */
		assert_int_equal(buf[0], 1);
		assert_int_equal(buf[1], cc->flags);
		assert_int_equal(be16(buf + 2), n);
		assert_int_equal(be32(buf + 4), cc->pop3_order);
		assert_memory_equal(buf + 48, rec.body_hash, LDB_HASH_SIZE);
		assert_int_equal(be16(buf + 80), rec.guid_len);
		off = 82 + rec.guid_len;
		assert_int_equal(be16(buf + off), rec.pop3_uidl_len);

		assert_int_equal(ldb_msg_rec_decode(buf, size, &dec), 0);
		check_decoded(&rec, cc->keywords, &dec);
		/* decoded pointers point into the buffer */
		assert_true(dec.keywords == buf + off + 2 + rec.pop3_uidl_len);

		/* re-encoding the decoded record gives the same bytes */
		buf2 = codec_encode(&dec, cc->keywords, &size2);
		assert_int_equal(size2, size);
		assert_memory_equal(buf2, buf, size);
		free(buf2);
		free(buf);
	}
}

/* Every proper prefix of a valid encoding must fail to decode.  The prefix
   is placed at the very end of a heap block so that ASan catches any read
   past it. */
static void test_msg_codec_truncation(void **state)
{
	unsigned int c;

	(void)state;
	for (c = 0; c < N_ELEMENTS(codec_cases); c++) {
		const struct codec_case *cc = &codec_cases[c];
		struct ldb_msg_rec rec, dec;
		uint8_t *enc, *block;
		size_t size, len;

		codec_rec(cc, c, &rec);
		enc = codec_encode(&rec, cc->keywords, &size);
		block = malloc(size);
		assert_non_null(block);
		for (len = 0; len < size; len++) {
			uint8_t *p = block + size - len;
			int ret;

			memcpy(p, enc, len);
			ret = ldb_msg_rec_decode(p, len, &dec);
			if (ret >= 0)
				fail_msg("%s: truncated to %zu of %zu bytes "
					 "decoded (%d)", cc->name, len, size, ret);
		}
		/* and the full one still decodes */
		memcpy(block, enc, size);
		assert_int_equal(ldb_msg_rec_decode(block, size, &dec), 0);
		free(block);
		free(enc);
	}
}

enum corrupt_op {
	CORRUPT_NONE,		/* control: must decode */
	CORRUPT_SET_U8,		/* buf[offset] = value */
	CORRUPT_SET_U16,	/* be16 at offset = value */
	CORRUPT_ADD_U16,	/* be16 at offset += value (mod 2^16) */
	CORRUPT_APPEND,		/* append value bytes of 0x00 */
	CORRUPT_APPEND_ZERO_KW,	/* keyword count + 1, append u16 0 */
};

/* offsets in the base record below: guid "gg" (2), uidl "uuu" (3),
   keywords "k1", "key2" */
#define BASE_GUID_LEN_OFF 80
#define BASE_UIDL_LEN_OFF (82 + 2)
#define BASE_KW1_OFF (BASE_UIDL_LEN_OFF + 2 + 3)
#define BASE_KW2_OFF (BASE_KW1_OFF + 2 + 2)

static const struct corrupt_case {
	const char *name;
	enum corrupt_op op;
	size_t offset;
	unsigned int value;
	bool ok;
} corrupt_cases[] = {
	{ "unmodified", CORRUPT_NONE, 0, 0, true },
	{ "flags changed (control)", CORRUPT_SET_U8, 1, 0xff, true },
	{ "version 0", CORRUPT_SET_U8, 0, 0, false },
	{ "version 2", CORRUPT_SET_U8, 0, 2, false },
	{ "version 255", CORRUPT_SET_U8, 0, 255, false },
	{ "trailing 1 byte", CORRUPT_APPEND, 0, 1, false },
	{ "trailing 2 bytes", CORRUPT_APPEND, 0, 2, false },
	{ "trailing 100 bytes", CORRUPT_APPEND, 0, 100, false },
	{ "keyword count + 1", CORRUPT_ADD_U16, 2, 1, false },
	{ "keyword count - 1", CORRUPT_ADD_U16, 2, 0xffff, false },
	{ "keyword count 0", CORRUPT_SET_U16, 2, 0, false },
	{ "keyword count 65535", CORRUPT_SET_U16, 2, 0xffff, false },
	{ "guid length + 1", CORRUPT_ADD_U16, BASE_GUID_LEN_OFF, 1, false },
	{ "guid length 65535", CORRUPT_SET_U16, BASE_GUID_LEN_OFF, 0xffff, false },
	{ "uidl length + 1", CORRUPT_ADD_U16, BASE_UIDL_LEN_OFF, 1, false },
	{ "uidl length 65535", CORRUPT_SET_U16, BASE_UIDL_LEN_OFF, 0xffff, false },
	{ "first keyword length beyond end", CORRUPT_SET_U16, BASE_KW1_OFF,
	  200, false },
	{ "last keyword length + 1", CORRUPT_ADD_U16, BASE_KW2_OFF, 1, false },
	{ "last keyword length 65535", CORRUPT_SET_U16, BASE_KW2_OFF,
	  0xffff, false },
	{ "last keyword length - 1", CORRUPT_ADD_U16, BASE_KW2_OFF, 0xffff,
	  false },
	{ "first keyword length 0", CORRUPT_SET_U16, BASE_KW1_OFF, 0, false },
	{ "last keyword length 0", CORRUPT_SET_U16, BASE_KW2_OFF, 0, false },
	{ "extra zero-length keyword", CORRUPT_APPEND_ZERO_KW, 0, 0, false },
};

static void test_msg_codec_corrupt(void **state)
{
	static const char *const keywords[] = { "k1", "key2", NULL };
	struct ldb_msg_rec rec, dec;
	uint8_t *enc;
	size_t size;
	unsigned int c;

	(void)state;
	memset(&rec, 0, sizeof(rec));
	rec.guid = "gg"; rec.guid_len = 2;
	rec.pop3_uidl = "uuu"; rec.pop3_uidl_len = 3;
	enc = codec_encode(&rec, keywords, &size);
	/* the offsets above describe this encoding */
	assert_int_equal(be16(enc + BASE_GUID_LEN_OFF), 2);
	assert_int_equal(be16(enc + BASE_UIDL_LEN_OFF), 3);
	assert_int_equal(be16(enc + BASE_KW1_OFF), 2);
	assert_int_equal(be16(enc + BASE_KW2_OFF), 4);
	assert_int_equal(BASE_KW2_OFF + 2 + 4, size);

	for (c = 0; c < N_ELEMENTS(corrupt_cases); c++) {
		const struct corrupt_case *cc = &corrupt_cases[c];
		size_t bsize = size;
		uint8_t *buf = malloc(size + 128);
		int ret;

		assert_non_null(buf);
		memcpy(buf, enc, size);
		switch (cc->op) {
		case CORRUPT_NONE:
			break;
		case CORRUPT_SET_U8:
			buf[cc->offset] = cc->value;
			break;
		case CORRUPT_SET_U16:
			set_be16(buf + cc->offset, cc->value);
			break;
		case CORRUPT_ADD_U16:
			set_be16(buf + cc->offset,
				 be16(buf + cc->offset) + cc->value);
			break;
		case CORRUPT_APPEND:
			memset(buf + bsize, 0, cc->value);
			bsize += cc->value;
			break;
		case CORRUPT_APPEND_ZERO_KW:
			set_be16(buf + 2, be16(buf + 2) + 1);
			set_be16(buf + bsize, 0);
			bsize += 2;
			break;
		}
		/* exact-size copy so that ASan sees overreads */
		uint8_t *exact = malloc(bsize);
		assert_non_null(exact);
		memcpy(exact, buf, bsize);
		ret = ldb_msg_rec_decode(exact, bsize, &dec);
		if (cc->ok && ret != 0)
			fail_msg("%s: decode failed (%d)", cc->name, ret);
		if (!cc->ok && ret >= 0)
			fail_msg("%s: corrupted record decoded", cc->name);
		if (!cc->ok)
			assert_int_equal(ret, LDB_ERR_CORRUPT);
		free(exact);
		free(buf);
	}
	free(enc);
}

static void test_mailbox_codec(void **state)
{
	static const struct {
		struct ldb_mailbox_rec rec;
		uint8_t bytes[LDB_MAILBOX_REC_SIZE];
	} cases[] = {
		{ { 0, 0, 0 },
		  { 1, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
		    0, 0, 0, 0, 0, 0, 0, 0 } },
		{ { 1, 2, 3 },
		  { 1, 0, 0, 0,  0, 0, 0, 1,  0, 0, 0, 2,  0, 0, 0, 0,
		    0, 0, 0, 0, 0, 0, 0, 3 } },
		{ { 0x01020304, 0x05060708, 0x1122334455667788ULL },
		  { 1, 0, 0, 0,  1, 2, 3, 4,  5, 6, 7, 8,  0, 0, 0, 0,
		    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 } },
		{ { 0xffffffffU, 0xffffffffU, UINT64_MAX },
		  { 1, 0, 0, 0,  0xff, 0xff, 0xff, 0xff,
		    0xff, 0xff, 0xff, 0xff,  0, 0, 0, 0,
		    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff } },
	};
	static const uint8_t bad_versions[] = { 0, 2, 0xff };
	unsigned int c, i;

	(void)state;
	for (c = 0; c < N_ELEMENTS(cases); c++) {
		struct ldb_mailbox_rec dec;
		uint8_t buf[LDB_MAILBOX_REC_SIZE], *p;
		size_t len;

		memset(buf, 0xa5, sizeof(buf));
		ldb_mailbox_rec_encode(&cases[c].rec, buf);
		assert_memory_equal(buf, cases[c].bytes, sizeof(buf));
		p = malloc(sizeof(buf));
		assert_non_null(p);
		memcpy(p, buf, sizeof(buf));
		assert_int_equal(ldb_mailbox_rec_decode(p, sizeof(buf), &dec), 0);
		assert_int_equal(dec.uid_validity, cases[c].rec.uid_validity);
		assert_int_equal(dec.next_uid, cases[c].rec.next_uid);
		assert_true(dec.highest_modseq == cases[c].rec.highest_modseq);
		free(p);
		for (len = 0; len < sizeof(buf); len++) {
			p = malloc(len);
			assert_true(len == 0 || p != NULL);
			memcpy(p, buf, len);
			if (ldb_mailbox_rec_decode(p, len, &dec) >= 0)
				fail_msg("case %u: %zu-byte prefix decoded", c,
					 len);
			free(p);
		}
		for (i = 0; i < N_ELEMENTS(bad_versions); i++) {
			buf[0] = bad_versions[i];
			assert_int_equal(ldb_mailbox_rec_decode(buf, sizeof(buf),
								&dec),
					 LDB_ERR_CORRUPT);
		}
	}
}

static void test_mailbox_put_get(void **state)
{
	struct fixture *f = *state;
	static const struct ldb_mailbox_rec recs[] = {
		{ 1, 1, 0 }, { 0xffffffffU, 0xffffffffU, UINT64_MAX },
		{ 1700000000, 42, 99 },
	};
	uint8_t guid[LDB_GUID_SIZE], other[LDB_GUID_SIZE];
	struct ldb_mailbox_rec got;
	struct ldb_txn *txn;
	unsigned int i;

	make_guid(guid, 0x40, 1);
	make_guid(other, 0x40, 2);
	for (i = 0; i < N_ELEMENTS(recs); i++) {
		txn = wtxn(f->env);
		assert_int_equal(ldb_mailbox_put(txn, guid, &recs[i]), 0);
		commit(&txn);
		txn = rtxn(f->env);
		assert_int_equal(ldb_mailbox_get(txn, guid, &got), 1);
		assert_int_equal(got.uid_validity, recs[i].uid_validity);
		assert_int_equal(got.next_uid, recs[i].next_uid);
		assert_true(got.highest_modseq == recs[i].highest_modseq);
		assert_int_equal(ldb_mailbox_get(txn, other, &got), 0);
		txn_abort(&txn);
	}
	/* an aborted write leaves nothing behind */
	txn = wtxn(f->env);
	assert_int_equal(ldb_mailbox_put(txn, other, &recs[0]), 0);
	txn_abort(&txn);
	txn = rtxn(f->env);
	assert_int_equal(ldb_mailbox_get(txn, other, &got), 0);
	txn_abort(&txn);
}

/* a record stored through the environment comes back identical */
static void test_msg_put_get(void **state)
{
	struct fixture *f = *state;
	uint8_t guid[LDB_GUID_SIZE];
	struct ldb_txn *txn;
	struct ldb_msg_rec rec, got;
	unsigned int c;

	make_guid(guid, 0x41, 0);
	txn = wtxn(f->env);
	for (c = 0; c < N_ELEMENTS(codec_cases); c++) {
		codec_rec(&codec_cases[c], c, &rec);
		assert_int_equal(ldb_msg_put(txn, guid, c + 1, &rec,
					     codec_cases[c].keywords), 0);
	}
	commit(&txn);
	txn = rtxn(f->env);
	for (c = 0; c < N_ELEMENTS(codec_cases); c++) {
		int ret;

		codec_rec(&codec_cases[c], c, &rec);
		ret = ldb_msg_get(txn, guid, c + 1, &got);
		if (ret != 1)
			fail_msg("%s: ldb_msg_get = %d: %s", codec_cases[c].name,
				 ret, ldb_env_last_error(f->env));
		check_decoded(&rec, codec_cases[c].keywords, &got);
	}
	assert_int_equal(ldb_msg_get(txn, guid, c + 1, &got), 0);
	txn_abort(&txn);
}

/* keywords the record format can't hold are refused, never stored as a
   record that no longer decodes */
static void test_msg_put_bad_keywords(void **state)
{
	struct fixture *f = *state;
	static char too_long[65537];
	static const char *const kw_empty[] = { "ok", "", NULL };
	static const char *const kw_too_long[] = { too_long, NULL };
	static const char *const *const bad[] = { kw_empty, kw_too_long };
	static const char *const good[] = { "fine", NULL };
	uint8_t guid[LDB_GUID_SIZE];
	struct ldb_msg_rec rec, got;
	struct ldb_msg_iter *iter;
	struct ldb_txn *txn;
	unsigned int i;
	uint32_t uid;

	memset(too_long, 'k', sizeof(too_long) - 1);
	make_guid(guid, 0x42, 0);
	init_msg(&rec, NULL, 5);
	txn = wtxn(f->env);
	assert_int_equal(ldb_msg_put(txn, guid, 1, &rec, good), 0);
	for (i = 0; i < N_ELEMENTS(bad); i++) {
		assert_true(ldb_msg_put(txn, guid, 2 + i, &rec, bad[i]) < 0);
		assert_true(ldb_msg_update_flags(txn, guid, 1, 0, bad[i], 1) < 0);
	}
	commit(&txn);

	/* the mailbox still iterates cleanly, record 1 unchanged */
	txn = rtxn(f->env);
	iter = ldb_msg_iter_init(txn, guid, 0);
	assert_int_equal(ldb_msg_iter_next(iter, &uid, &got), 1);
	assert_int_equal(uid, 1);
	check_decoded(&rec, good, &got);
	assert_int_equal(ldb_msg_iter_next(iter, &uid, &got), 0);
	assert_int_equal(ldb_msg_iter_deinit(&iter), 0);
	txn_abort(&txn);
}

/* ---- 3. environment ---- */

static void test_env_refcount(void **state)
{
	struct fixture *f = *state;
	struct ldb_settings set;
	struct ldb_env *env2, *env3;
	struct ldb_txn *txn;
	const char *error;
	char alias[PATH_MAX + 32];
	uint32_t v;

	assert_int_equal(open_env(f, 1 * MIB, 64 * MIB), 0);
	assert_non_null(f->env);
	assert_string_equal(ldb_env_path(f->env), f->path);
	assert_int_equal(ldb_env_map_size(f->env), 1 * MIB);
	assert_true(ldb_env_file_size(f->env) > 0);
	assert_true(data_file_mapped(f->path));

	/* second open, with other settings and another spelling of the
	   path: the same env, settings of the first open */
	test_settings(&set, 2 * MIB, 64 * MIB);
	snprintf(alias, sizeof(alias), "%s/./%s", f->dir, LDB_DIR_NAME);
	assert_int_equal(ldb_env_open(alias, &set, &env2, &error), 0);
	assert_ptr_equal(env2, f->env);
	assert_int_equal(ldb_env_map_size(env2), 1 * MIB);

	/* first unref: still open and usable through the other reference */
	ldb_env_unref(&f->env);
	assert_null(f->env);
	assert_true(data_file_mapped(f->path));
	txn = rtxn(env2);
	assert_int_equal(ldb_meta_get_u32(txn, "schema_version", &v), 1);
	txn_abort(&txn);
	assert_int_equal(ldb_env_open(f->path, &set, &env3, &error), 0);
	assert_ptr_equal(env3, env2);
	ldb_env_unref(&env3);
	assert_null(env3);
	assert_true(data_file_mapped(f->path));

	/* last unref closes */
	ldb_env_unref(&env2);
	assert_null(env2);
	assert_false(data_file_mapped(f->path));
	ldb_env_unref(&env2);	/* NULL is fine */

	/* reopen: a new env, so the new settings apply */
	assert_int_equal(ldb_env_open(f->path, &set, &f->env, &error), 0);
	assert_int_equal(ldb_env_map_size(f->env), 2 * MIB);
	assert_true(data_file_mapped(f->path));
}

static void test_env_meta(void **state)
{
	struct fixture *f = *state;
	struct ldb_txn *txn;
	uint32_t v = 12345;

	txn = rtxn(f->env);
	assert_int_equal(ldb_meta_get_u32(txn, "schema_version", &v), 1);
	assert_int_equal(v, LDB_SCHEMA_VERSION);
	assert_int_equal(ldb_meta_get_u32(txn, "chunk_size", &v), 1);
	assert_int_equal(v, LDB_CHUNK_SIZE);
	v = 12345;
	assert_int_equal(ldb_meta_get_u32(txn, "no_such_key", &v), 0);
	assert_int_equal(v, 12345);
	txn_abort(&txn);
}

static void test_env_schema_version(void **state)
{
	struct fixture *f = *state;
	static const struct {
		uint32_t version;
		uint8_t size;
		int expect;
	} cases[] = {
		{ LDB_SCHEMA_VERSION, 4, 0 },
		{ LDB_SCHEMA_VERSION + 1, 4, LDB_ERR_VERSION },
		{ 0x01000000, 4, LDB_ERR_VERSION },
		{ 0xffffffffU, 4, LDB_ERR_VERSION },
		{ LDB_SCHEMA_VERSION, 3, LDB_ERR_CORRUPT },
	};
	unsigned int c;

	for (c = 0; c < N_ELEMENTS(cases); c++) {
		struct ldb_settings set;
		struct raw_kv kv;
		uint8_t val[4], got[4];
		const char *error = NULL;
		size_t got_size = 0;
		int ret;

		rm_rf(f->path);
		set_be32(val, cases[c].version);
		kv.db = "meta";
		kv.key = "schema_version";
		kv.key_size = strlen("schema_version");
		kv.val = val;
		kv.val_size = cases[c].size;
		raw_put(f->path, &kv, 1);

		test_settings(&set, 1 * MIB, 64 * MIB);
		ret = ldb_env_open(f->path, &set, &f->env, &error);
		if (ret != cases[c].expect)
			fail_msg("case %u: open returned %d, expected %d (%s)",
				 c, ret, cases[c].expect,
				 ret < 0 ? error : "");
		if (ret < 0) {
			assert_null(f->env);
			assert_non_null(error);
			assert_true(error[0] != '\0');
			assert_false(data_file_mapped(f->path));
		} else {
			uint32_t v;
			struct ldb_txn *txn = rtxn(f->env);

			assert_int_equal(ldb_meta_get_u32(txn, "schema_version",
							  &v), 1);
			assert_int_equal(v, LDB_SCHEMA_VERSION);
			txn_abort(&txn);
			ldb_env_unref(&f->env);
		}
		/* never rewritten */
		assert_int_equal(raw_get(f->path, "meta", "schema_version",
					 strlen("schema_version"), got,
					 sizeof(got), &got_size), 1);
		assert_int_equal(got_size, cases[c].size);
		assert_memory_equal(got, val, got_size);
	}
}

/* ---- 4. map full ---- */

struct body_write_ctx {
	const uint8_t *data;
	size_t size;
	uint8_t hash[LDB_HASH_SIZE];
	const uint8_t *guid;	/* NULL: no msg record */
	uint32_t uid;
	unsigned int calls;
};

static int body_write_fn(struct ldb_txn *txn, void *context)
{
	struct body_write_ctx *ctx = context;
	uint32_t i, count = (ctx->size + LDB_CHUNK_SIZE - 1) / LDB_CHUNK_SIZE;
	size_t off;
	int ret;

	ctx->calls++;
	if ((ret = ldb_body_create(txn, ctx->hash, ctx->size,
				   LDB_CHUNK_SIZE)) < 0)
		return ret;
	for (i = 0, off = 0; i < count; i++, off += LDB_CHUNK_SIZE) {
		size_t n = ctx->size - off < LDB_CHUNK_SIZE ?
			ctx->size - off : LDB_CHUNK_SIZE;

		if ((ret = ldb_body_chunk_put(txn, ctx->hash, i,
					      ctx->data + off, n)) < 0)
			return ret;
	}
	if (ctx->guid != NULL) {
		struct ldb_msg_rec rec;

		init_msg(&rec, ctx->hash, ctx->uid);
		rec.physical_size = ctx->size;
		if ((ret = ldb_msg_put(txn, ctx->guid, ctx->uid, &rec,
				       NULL)) < 0)
			return ret;
	}
	return 0;
}

static void body_ctx_init(struct body_write_ctx *ctx, size_t size,
			  uint32_t seed, const uint8_t *guid, uint32_t uid)
{
	uint8_t *data = malloc(size);

	assert_non_null(data);
	fill_pattern(data, size, seed);
	memset(ctx, 0, sizeof(*ctx));
	ctx->data = data;
	ctx->size = size;
	hash_of(data, size, ctx->hash);
	ctx->guid = guid;
	ctx->uid = uid;
}

static void check_msg_body(struct ldb_env *env, const uint8_t *guid,
			   const struct body_write_ctx *ctx)
{
	struct ldb_txn *txn = rtxn(env);
	struct ldb_msg_rec rec;

	check_body(txn, ctx->hash, ctx->data, ctx->size, 1);
	if (guid != NULL) {
		assert_int_equal(ldb_msg_get(txn, guid, ctx->uid, &rec), 1);
		assert_memory_equal(rec.body_hash, ctx->hash, LDB_HASH_SIZE);
		assert_int_equal(rec.physical_size, ctx->size);
	}
	txn_abort(&txn);
}

static void test_map_full_grows(void **state)
{
	struct fixture *f = *state;
	struct body_write_ctx ctx;
	uint8_t guid[LDB_GUID_SIZE];
	size_t before;

	assert_int_equal(open_env(f, TINY_MAP, 16 * MIB), 0);
	before = ldb_env_map_size(f->env);
	assert_int_equal(before, TINY_MAP);

	make_guid(guid, 0x50, 0);
	body_ctx_init(&ctx, 5 * MIB + 123, 1, guid, 7);
	assert_int_equal(ldb_write(f->env, body_write_fn, &ctx), 0);
	assert_true(ctx.calls > 1);		/* it was retried */
	assert_true(ldb_env_map_size(f->env) > before);
	assert_true(ldb_env_map_size(f->env) <= 16 * MIB);
	assert_true(ldb_env_file_size(f->env) > (long long)ctx.size);
	check_msg_body(f->env, guid, &ctx);

	/* and after closing and reopening with the tiny initial size */
	ldb_env_unref(&f->env);
	assert_int_equal(open_env(f, TINY_MAP, 16 * MIB), 0);
	assert_true(ldb_env_map_size(f->env) >=
		    (size_t)ldb_env_file_size(f->env));
	check_msg_body(f->env, guid, &ctx);
	free((void *)ctx.data);
}

static void test_map_full_at_limit(void **state)
{
	struct fixture *f = *state;
	struct body_write_ctx small1, big, small2;
	uint8_t guid[LDB_GUID_SIZE];
	struct ldb_mailbox_rec mbox = { 1234, 2, 1 }, got;
	struct ldb_txn *txn;
	const size_t max = 2 * TINY_MAP;

	assert_int_equal(open_env(f, TINY_MAP, max), 0);
	make_guid(guid, 0x51, 0);

	/* committed before the failure */
	body_ctx_init(&small1, 3000, 2, guid, 1);
	txn = wtxn(f->env);
	assert_int_equal(ldb_mailbox_put(txn, guid, &mbox), 0);
	assert_int_equal(body_write_fn(txn, &small1), 0);
	commit(&txn);

	body_ctx_init(&big, 4 * MIB, 3, guid, 2);
	assert_int_equal(ldb_write(f->env, body_write_fn, &big),
			 LDB_ERR_MAP_FULL);
	assert_true(big.calls >= 2);
	assert_int_equal(ldb_env_map_size(f->env), max);
	assert_non_null(strstr(ldb_env_last_error(f->env), "full"));

	/* nothing of the failed write, everything of the earlier one */
	txn = rtxn(f->env);
	check_body_gone(txn, big.hash, 64);
	assert_int_equal(ldb_msg_get(txn, guid, 2, &(struct ldb_msg_rec){0}), 0);
	assert_int_equal(ldb_mailbox_get(txn, guid, &got), 1);
	assert_int_equal(got.uid_validity, 1234);
	txn_abort(&txn);
	check_msg_body(f->env, guid, &small1);

	/* a later small write still works */
	body_ctx_init(&small2, 5000, 4, guid, 3);
	assert_int_equal(ldb_write(f->env, body_write_fn, &small2), 0);
	check_msg_body(f->env, guid, &small2);
	check_msg_body(f->env, guid, &small1);

	/* and so does a fresh open of the same data */
	ldb_env_unref(&f->env);
	assert_int_equal(open_env(f, TINY_MAP, max), 0);
	check_msg_body(f->env, guid, &small1);
	check_msg_body(f->env, guid, &small2);

	free((void *)small1.data);
	free((void *)small2.data);
	free((void *)big.data);
}

/* ---- 5. MAP_RESIZED ---- */

#define CHILD_BODY_SIZE (4 * MIB + 17)
#define CHILD_SEED 77
#define CHILD_UID 42

static void child_guid(uint8_t guid[LDB_GUID_SIZE])
{
	make_guid(guid, 0x60, 0x42);
}

/* runs in a freshly exec'd process: open, grow the map, write */
static int child_grow(const char *path)
{
	struct ldb_settings set;
	struct ldb_env *env;
	struct body_write_ctx ctx;
	uint8_t guid[LDB_GUID_SIZE], *data;
	const char *error;
	int ret;

	test_settings(&set, TINY_MAP, 64 * MIB);
	if (ldb_env_open(path, &set, &env, &error) < 0) {
		fprintf(stderr, "child: open: %s\n", error);
		return 2;
	}
	child_guid(guid);
	data = malloc(CHILD_BODY_SIZE);
	if (data == NULL)
		return 3;
	fill_pattern(data, CHILD_BODY_SIZE, CHILD_SEED);
	memset(&ctx, 0, sizeof(ctx));
	ctx.data = data;
	ctx.size = CHILD_BODY_SIZE;
	hash_of(data, ctx.size, ctx.hash);
	ctx.guid = guid;
	ctx.uid = CHILD_UID;
	if ((ret = ldb_write(env, body_write_fn, &ctx)) < 0) {
		fprintf(stderr, "child: write: %d %s\n", ret,
			ldb_env_last_error(env));
		return 4;
	}
	if (ldb_env_map_size(env) <= TINY_MAP)
		return 5;
	ldb_env_unref(&env);
	free(data);
	return 0;
}

static void test_map_resized(void **state)
{
	struct fixture *f = *state;
	struct body_write_ctx child, mine;
	uint8_t guid[LDB_GUID_SIZE], mguid[LDB_GUID_SIZE];
	struct ldb_mailbox_rec mbox = { 9, 10, 11 }, got;
	struct ldb_txn *txn;
	size_t before;
	int status;
	pid_t pid;

	assert_int_equal(open_env(f, TINY_MAP, 64 * MIB), 0);
	make_guid(mguid, 0x61, 0);
	txn = wtxn(f->env);
	assert_int_equal(ldb_mailbox_put(txn, mguid, &mbox), 0);
	commit(&txn);
	before = ldb_env_map_size(f->env);
	assert_int_equal(before, TINY_MAP);

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(self_exe, "test-lmdb-db", CHILD_ARG, f->path,
		      (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* the child's data lies beyond our map */
	assert_true(ldb_env_file_size(f->env) > (long long)before);

	/* read: adopts the new size */
	child_guid(guid);
	body_ctx_init(&child, CHILD_BODY_SIZE, CHILD_SEED, guid, CHILD_UID);
	check_msg_body(f->env, guid, &child);
	assert_true(ldb_env_map_size(f->env) > before);
	assert_true(ldb_env_map_size(f->env) >=
		    (size_t)ldb_env_file_size(f->env));
	txn = rtxn(f->env);
	assert_int_equal(ldb_mailbox_get(txn, mguid, &got), 1);
	assert_int_equal(got.next_uid, 10);
	txn_abort(&txn);

	/* write more */
	body_ctx_init(&mine, 3 * MIB, 78, mguid, 1);
	assert_int_equal(ldb_write(f->env, body_write_fn, &mine), 0);
	check_msg_body(f->env, mguid, &mine);
	check_msg_body(f->env, guid, &child);
	free((void *)child.data);
	free((void *)mine.data);
}

/* The same, but the parent starts with a write transaction. */
static void test_map_resized_write_first(void **state)
{
	struct fixture *f = *state;
	struct body_write_ctx child, mine;
	uint8_t guid[LDB_GUID_SIZE];
	int status;
	pid_t pid;

	assert_int_equal(open_env(f, TINY_MAP, 64 * MIB), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(self_exe, "test-lmdb-db", CHILD_ARG, f->path,
		      (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	child_guid(guid);
	body_ctx_init(&mine, 100 * KIB, 79, guid, 1);
	assert_int_equal(ldb_write(f->env, body_write_fn, &mine), 0);
	assert_int_equal(mine.calls, 1);
	assert_true(ldb_env_map_size(f->env) > TINY_MAP);
	body_ctx_init(&child, CHILD_BODY_SIZE, CHILD_SEED, guid, CHILD_UID);
	check_msg_body(f->env, guid, &child);
	check_msg_body(f->env, guid, &mine);
	free((void *)child.data);
	free((void *)mine.data);
}

/* ---- 6. hashing and reference counts ---- */

static void test_sha256_vectors(void **state)
{
	static const struct {
		const char *input;
		size_t repeat;		/* input repeated this many times */
		size_t split;		/* fed in pieces of this size (0 = all) */
		const char *hex;
	} cases[] = {
		{ "", 1, 0, "e3b0c44298fc1c149afbf4c8996fb924"
			    "27ae41e4649b934ca495991b7852b855" },
		{ "abc", 1, 0, "ba7816bf8f01cfea414140de5dae2223"
			       "b00361a396177a9cb410ff61f20015ad" },
		{ "abc", 1, 1, "ba7816bf8f01cfea414140de5dae2223"
			       "b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  1, 7, "248d6a61d20638b8e5c026930c3e6039"
			"a33ce45964ff2167f6ecedd419db06c1" },
		{ "a", 1000000, 0, "cdc76e5c9914fb9281a1c7e284d73e67"
				   "f1809a48a497200e046d39ccc7112cd0" },
	};
	unsigned int c;

	(void)state;
	for (c = 0; c < N_ELEMENTS(cases); c++) {
		size_t len = strlen(cases[c].input) * cases[c].repeat, off, i;
		uint8_t hash[LDB_HASH_SIZE], expect[LDB_HASH_SIZE];
		struct ldb_sha256 *ctx;
		char *data = malloc(len + 1);

		assert_non_null(data);
		for (i = 0; i < cases[c].repeat; i++)
			memcpy(data + i * strlen(cases[c].input),
			       cases[c].input, strlen(cases[c].input));
		for (i = 0; i < LDB_HASH_SIZE; i++)
			assert_int_equal(sscanf(cases[c].hex + 2 * i, "%2hhx",
						&expect[i]), 1);
		ctx = ldb_sha256_init();
		if (cases[c].split == 0) {
			ldb_sha256_update(ctx, data, len);
		} else {
			for (off = 0; off < len; off += cases[c].split) {
				size_t n = len - off < cases[c].split ?
					len - off : cases[c].split;
				ldb_sha256_update(ctx, data + off, n);
			}
		}
		ldb_sha256_final(&ctx, hash);
		assert_null(ctx);
		assert_memory_equal(hash, expect, LDB_HASH_SIZE);
		free(data);
	}
}

static void test_body_refcount(void **state)
{
	struct fixture *f = *state;
	uint8_t ga[LDB_GUID_SIZE], gb[LDB_GUID_SIZE], hash[LDB_HASH_SIZE];
	uint8_t missing[LDB_HASH_SIZE];
	const size_t size = 2 * LDB_CHUNK_SIZE + 1000;
	struct ldb_body_info info;
	struct ldb_msg_rec rec, got;
	struct ldb_txn *txn;
	uint8_t *data = malloc(size);

	assert_non_null(data);
	fill_pattern(data, size, 5);
	make_guid(ga, 0x70, 0);
	make_guid(gb, 0x70, 1);
	memset(missing, 0xee, sizeof(missing));

	txn = wtxn(f->env);
	put_body(txn, data, size, hash, 1);
	assert_int_equal(ldb_body_get_info(txn, hash, &info), 1);
	assert_int_equal(info.refcount, 1);
	assert_int_equal(info.chunk_count, 3);
	assert_int_equal(ldb_body_ref(txn, hash), 1);
	assert_int_equal(ldb_body_get_info(txn, hash, &info), 1);
	assert_int_equal(info.refcount, 2);
	/* two messages (say a COPY to another mailbox) share the body */
	init_msg(&rec, hash, 1);
	assert_int_equal(ldb_msg_put(txn, ga, 1, &rec, NULL), 0);
	init_msg(&rec, hash, 2);
	assert_int_equal(ldb_msg_put(txn, gb, 5, &rec, NULL), 0);
	/* missing bodies */
	assert_int_equal(ldb_body_ref(txn, missing), 0);
	assert_int_equal(ldb_body_unref(txn, missing), 0);
	assert_int_equal(ldb_body_get_info(txn, missing, &info), 0);
	commit(&txn);

	txn = rtxn(f->env);
	check_body(txn, hash, data, size, 2);
	txn_abort(&txn);

	/* first expunge: the body stays */
	txn = wtxn(f->env);
	assert_int_equal(ldb_msg_expunge(txn, ga, 1), 1);
	assert_int_equal(ldb_msg_expunge(txn, ga, 1), 0);
	assert_int_equal(ldb_msg_expunge(txn, gb, 4), 0);
	commit(&txn);
	txn = rtxn(f->env);
	assert_int_equal(ldb_msg_get(txn, ga, 1, &got), 0);
	assert_int_equal(ldb_msg_get(txn, gb, 5, &got), 1);
	check_body(txn, hash, data, size, 1);
	txn_abort(&txn);

	/* second expunge: body and chunks go */
	txn = wtxn(f->env);
	assert_int_equal(ldb_msg_expunge(txn, gb, 5), 1);
	check_body_gone(txn, hash, 3);
	commit(&txn);
	txn = rtxn(f->env);
	assert_int_equal(ldb_msg_get(txn, gb, 5, &got), 0);
	check_body_gone(txn, hash, 3);
	txn_abort(&txn);

	/* unref on the now missing body */
	txn = wtxn(f->env);
	assert_int_equal(ldb_body_unref(txn, hash), 0);
	/* create + unref directly: gone at once */
	put_body(txn, data, size, hash, 1);
	assert_int_equal(ldb_body_unref(txn, hash), 1);
	check_body_gone(txn, hash, 3);
	commit(&txn);
	free(data);
}

static void test_mailbox_delete(void **state)
{
	struct fixture *f = *state;
	/* A is deleted; B and P are its neighbours in key order */
	uint8_t ga[LDB_GUID_SIZE], gb[LDB_GUID_SIZE], gp[LDB_GUID_SIZE];
	uint8_t hx[LDB_HASH_SIZE], hy[LDB_HASH_SIZE], hz[LDB_HASH_SIZE];
	uint8_t dx[1000], dy[LDB_CHUNK_SIZE + 1], dz[300];
	struct ldb_mailbox_rec mbox = { 1, 100, 5 }, got;
	struct ldb_msg_rec rec;
	struct ldb_msg_iter *iter;
	struct ldb_txn *txn;
	uint32_t uid;

	make_guid(gp, 0x80, 0xff);
	make_guid(ga, 0x81, 0x00);
	make_guid(gb, 0x81, 0x01);
	fill_pattern(dx, sizeof(dx), 10);
	fill_pattern(dy, sizeof(dy), 11);
	fill_pattern(dz, sizeof(dz), 12);

	txn = wtxn(f->env);
	/* P has messages but no mailbox record */
	assert_int_equal(ldb_mailbox_put(txn, ga, &mbox), 0);
	assert_int_equal(ldb_mailbox_put(txn, gb, &mbox), 0);
	put_body(txn, dx, sizeof(dx), hx, 2);	/* A:1, A:0xffffffff */
	put_body(txn, dy, sizeof(dy), hy, 1);	/* A:7 */
	put_body(txn, dz, sizeof(dz), hz, 3);	/* A:8, B:1, P:0xffffffff */
	init_msg(&rec, hx, 1);
	assert_int_equal(ldb_msg_put(txn, ga, 1, &rec, NULL), 0);
	assert_int_equal(ldb_msg_put(txn, ga, 0xffffffffU, &rec, NULL), 0);
	init_msg(&rec, hy, 7);
	assert_int_equal(ldb_msg_put(txn, ga, 7, &rec, NULL), 0);
	init_msg(&rec, hz, 8);
	assert_int_equal(ldb_msg_put(txn, ga, 8, &rec, NULL), 0);
	assert_int_equal(ldb_msg_put(txn, gb, 1, &rec, NULL), 0);
	assert_int_equal(ldb_msg_put(txn, gp, 0xffffffffU, &rec, NULL), 0);
	commit(&txn);

	txn = wtxn(f->env);
	assert_int_equal(ldb_mailbox_delete(txn, ga), 1);
	commit(&txn);

	txn = rtxn(f->env);
	assert_int_equal(ldb_mailbox_get(txn, ga, &got), 0);
	iter = ldb_msg_iter_init(txn, ga, 0);
	assert_int_equal(ldb_msg_iter_next(iter, &uid, &rec), 0);
	assert_int_equal(ldb_msg_iter_deinit(&iter), 0);
	check_body_gone(txn, hx, 1);
	check_body_gone(txn, hy, 2);
	check_body(txn, hz, dz, sizeof(dz), 2);
	/* the neighbours are untouched */
	assert_int_equal(ldb_mailbox_get(txn, gb, &got), 1);
	assert_int_equal(ldb_mailbox_get(txn, gp, &got), 0);
	assert_int_equal(ldb_msg_get(txn, gb, 1, &rec), 1);
	assert_int_equal(ldb_msg_get(txn, gp, 0xffffffffU, &rec), 1);
	txn_abort(&txn);

	/* deleting it again: nothing there */
	txn = wtxn(f->env);
	assert_int_equal(ldb_mailbox_delete(txn, ga), 0);
	/* no mailbox record (0), but its messages are still released */
	assert_int_equal(ldb_mailbox_delete(txn, gp), 0);
	assert_int_equal(ldb_mailbox_delete(txn, gb), 1);
	check_body_gone(txn, hz, 1);
	iter = ldb_msg_iter_init(txn, gp, 0);
	assert_int_equal(ldb_msg_iter_next(iter, &uid, &rec), 0);
	assert_int_equal(ldb_msg_iter_deinit(&iter), 0);
	commit(&txn);
}

static void test_update_flags(void **state)
{
	struct fixture *f = *state;
	static const char *const kw_init[] = { "a", "b", NULL };
	static const char *const kw_junk[] = { "$Junk", NULL };
	static const char *const kw_8bit_long[] = {
		"\xe2\x82\xac", mid_kw, "$Label1", NULL
	};
	static const struct {
		uint8_t flags;
		const char *const *keywords;
		uint64_t modseq;
		uint64_t expect_modseq;
	} steps[] = {
		{ 0x05, kw_junk, 20, 20 },
		{ 0x00, NULL, 15, 20 },		/* modseq never falls */
		{ 0x7f, kw_8bit_long, 21, 21 },
		{ 0x01, kw_none, 0, 21 },
		{ 0x02, kw_init, UINT64_MAX, UINT64_MAX },
		{ 0x03, kw_junk, 22, UINT64_MAX },
	};
	uint8_t guid[LDB_GUID_SIZE], hash[LDB_HASH_SIZE];
	struct ldb_msg_rec orig, got, exp;
	struct ldb_txn *txn;
	unsigned int i;

	make_guid(guid, 0x90, 0);
	memset(hash, 0x3c, sizeof(hash));
	init_msg(&orig, hash, 10);
	orig.flags = 0x01;
	orig.received_date = -5;
	orig.physical_size = UINT64_MAX;
	orig.guid = "msg-guid-123";
	orig.guid_len = strlen(orig.guid);
	orig.pop3_uidl = "UIDL-7";
	orig.pop3_uidl_len = strlen(orig.pop3_uidl);

	txn = wtxn(f->env);
	assert_int_equal(ldb_msg_put(txn, guid, 3, &orig, kw_init), 0);
	/* neighbours, which must not change */
	assert_int_equal(ldb_msg_put(txn, guid, 2, &orig, kw_init), 0);
	assert_int_equal(ldb_msg_put(txn, guid, 4, &orig, kw_init), 0);
	commit(&txn);

	for (i = 0; i < N_ELEMENTS(steps); i++) {
		int ret;

		txn = wtxn(f->env);
		ret = ldb_msg_update_flags(txn, guid, 3, steps[i].flags,
					   steps[i].keywords, steps[i].modseq);
		if (ret != 1)
			fail_msg("step %u: update returned %d: %s", i, ret,
				 ldb_env_last_error(f->env));
		commit(&txn);

		exp = orig;
		exp.flags = steps[i].flags;
		exp.modseq = steps[i].expect_modseq;
		txn = rtxn(f->env);
		assert_int_equal(ldb_msg_get(txn, guid, 3, &got), 1);
		check_decoded(&exp, steps[i].keywords, &got);
		assert_int_equal(ldb_msg_get(txn, guid, 2, &got), 1);
		check_decoded(&orig, kw_init, &got);
		assert_int_equal(ldb_msg_get(txn, guid, 4, &got), 1);
		check_decoded(&orig, kw_init, &got);
		txn_abort(&txn);
	}

	txn = wtxn(f->env);
	assert_int_equal(ldb_msg_update_flags(txn, guid, 5, 1, NULL, 1), 0);
	assert_int_equal(ldb_msg_get(txn, guid, 5, &got), 0);
	commit(&txn);
}

static void test_purge_unreferenced(void **state)
{
	struct fixture *f = *state;
	uint8_t live_data[LDB_CHUNK_SIZE + 10], live[LDB_HASH_SIZE];
	uint8_t dead[3][LDB_HASH_SIZE], chunk_keys[3][LDB_CHUNK_KEY_SIZE];
	uint8_t body_recs[3][LDB_BODY_REC_SIZE], chunk_data[3][100];
	struct raw_kv kvs[6];
	struct ldb_txn *txn;
	unsigned int i, n = 0;

	assert_int_equal(open_env(f, 4 * MIB, 64 * MIB), 0);
	fill_pattern(live_data, sizeof(live_data), 20);
	txn = wtxn(f->env);
	put_body(txn, live_data, sizeof(live_data), live, 1);
	commit(&txn);
	ldb_env_unref(&f->env);
	assert_false(data_file_mapped(f->path));

	/* bodies with refcount 0, as a bug or an older version left them:
	   0 and 2 have one chunk, 1 has none.  Their hashes surround the
	   live one in key order. */
	for (i = 0; i < 3; i++) {
		uint32_t chunks = i == 1 ? 0 : 1;

		memset(dead[i], i == 0 ? 0x00 : i == 1 ? 0x7f : 0xff,
		       LDB_HASH_SIZE);
		memset(body_recs[i], 0, LDB_BODY_REC_SIZE);
		set_be32(body_recs[i] + 12, chunks ? 100 : 0);	/* size */
		set_be32(body_recs[i] + 16, LDB_CHUNK_SIZE);
		set_be32(body_recs[i] + 20, chunks);
		kvs[n++] = (struct raw_kv){ "body", dead[i], LDB_HASH_SIZE,
					    body_recs[i], LDB_BODY_REC_SIZE };
		if (chunks) {
			memcpy(chunk_keys[i], dead[i], LDB_HASH_SIZE);
			set_be32(chunk_keys[i] + LDB_HASH_SIZE, 0);
			fill_pattern(chunk_data[i], 100, 30 + i);
			kvs[n++] = (struct raw_kv){ "chunk", chunk_keys[i],
						    LDB_CHUNK_KEY_SIZE,
						    chunk_data[i], 100 };
		}
	}
	raw_put(f->path, kvs, n);

	assert_int_equal(open_env(f, 4 * MIB, 64 * MIB), 0);
	txn = rtxn(f->env);
	for (i = 0; i < 3; i++) {
		struct ldb_body_info info;

		assert_int_equal(ldb_body_get_info(txn, dead[i], &info), 1);
		assert_int_equal(info.refcount, 0);
	}
	txn_abort(&txn);

	txn = wtxn(f->env);
	assert_int_equal(ldb_body_purge_unreferenced(txn), 3);
	commit(&txn);
	txn = wtxn(f->env);
	assert_int_equal(ldb_body_purge_unreferenced(txn), 0);
	for (i = 0; i < 3; i++)
		check_body_gone(txn, dead[i], 1);
	check_body(txn, live, live_data, sizeof(live_data), 1);
	commit(&txn);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_msg_key_order),
		cmocka_unit_test_setup_teardown(test_msg_iter_order,
						setup_env, teardown),
		cmocka_unit_test(test_msg_codec_roundtrip),
		cmocka_unit_test(test_msg_codec_truncation),
		cmocka_unit_test(test_msg_codec_corrupt),
		cmocka_unit_test(test_mailbox_codec),
		cmocka_unit_test_setup_teardown(test_mailbox_put_get,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_msg_put_get,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_msg_put_bad_keywords,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_env_refcount,
						setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_env_meta,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_env_schema_version,
						setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_map_full_grows,
						setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_map_full_at_limit,
						setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_map_resized,
						setup_dir, teardown),
		cmocka_unit_test_setup_teardown(test_map_resized_write_first,
						setup_dir, teardown),
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test_setup_teardown(test_body_refcount,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_mailbox_delete,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_update_flags,
						setup_env, teardown),
		cmocka_unit_test_setup_teardown(test_purge_unreferenced,
						setup_dir, teardown),
	};

	ssize_t len;

	if (argc == 3 && strcmp(argv[1], CHILD_ARG) == 0)
		return child_grow(argv[2]);
	len = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (len <= 0) {
		perror("readlink(/proc/self/exe)");
		return 1;
	}
	self_exe[len] = '\0';
	init_codec_data();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
