/* cmocka unit tests for the LMDB layer's maintenance functions: the
   compact lock, ldb_env_get_stat(), the scan decoders, ldb_body_set_refcount(),
   ldb_env_copy(), ldb_env_compact() and the map-grow callback.

   The lock tests fork: a child never uses an environment of its parent
   (LMDB forbids that); it opens its own, or only takes flock()s. */

#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "lmdb-db.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define MIB ((size_t)1024 * 1024)
#define BODY_SIZE (150 * 1024)

struct fixture {
	char dir[PATH_MAX];
	char path[PATH_MAX];	/* <dir>/mail.lmdb */
	struct ldb_env *env;
};

/* ---- helpers ---- */

static void settings(struct ldb_settings *set, size_t initial, size_t max)
{
	ldb_settings_default(set);
	set->allow_network_fs = true;
	set->nosync = true;
	set->initial_map_size = initial;
	set->max_map_size = max;
	set->lock_timeout_msecs = 200;
}

static int rm_cb(const char *path, const struct stat *st, int flag,
		 struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char tmpl[] = "/tmp/test-lmdb-maint.XXXXXX";

	if (f == NULL || mkdtemp(tmpl) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s", tmpl);
	snprintf(f->path, sizeof(f->path), "%s/%s", tmpl, LDB_DIR_NAME);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ldb_env_unref(&f->env);
	(void)nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void open_env(struct fixture *f, size_t initial, size_t max)
{
	struct ldb_settings set;
	const char *error;

	settings(&set, initial, max);
	assert_int_equal(ldb_env_open(f->path, &set, &f->env, &error), 0);
}

static void body_bytes(uint8_t *buf, size_t size, uint32_t seed)
{
	uint32_t x = seed * 2654435761U + 7;
	size_t i;

	for (i = 0; i < size; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		buf[i] = x >> 24;
	}
}

static void hash_of(const uint8_t *data, size_t size,
		    uint8_t hash[LDB_HASH_SIZE])
{
	struct ldb_sha256 *sha = ldb_sha256_init();

	ldb_sha256_update(sha, data, size);
	ldb_sha256_final(&sha, hash);
}

struct bodies_ctx {
	uint32_t first, count;
};

/* bodies with seeds first..first+count-1, BODY_SIZE bytes each */
static int put_bodies_fn(struct ldb_txn *txn, void *context)
{
	const struct bodies_ctx *ctx = context;
	static uint8_t buf[BODY_SIZE];
	uint8_t hash[LDB_HASH_SIZE];
	uint32_t i, idx, off;
	int ret;

	for (i = ctx->first; i < ctx->first + ctx->count; i++) {
		body_bytes(buf, sizeof(buf), i);
		hash_of(buf, sizeof(buf), hash);
		if ((ret = ldb_body_create(txn, hash, sizeof(buf),
					   LDB_CHUNK_SIZE)) < 0)
			return ret;
		for (idx = 0, off = 0; off < sizeof(buf); idx++) {
			size_t n = sizeof(buf) - off < LDB_CHUNK_SIZE ?
				sizeof(buf) - off : LDB_CHUNK_SIZE;

			if ((ret = ldb_body_chunk_put(txn, hash, idx,
						      buf + off, n)) < 0)
				return ret;
			off += n;
		}
	}
	return 0;
}

static int drop_bodies_fn(struct ldb_txn *txn, void *context)
{
	const struct bodies_ctx *ctx = context;
	static uint8_t buf[BODY_SIZE];
	uint8_t hash[LDB_HASH_SIZE];
	uint32_t i;
	int ret;

	for (i = ctx->first; i < ctx->first + ctx->count; i++) {
		body_bytes(buf, sizeof(buf), i);
		hash_of(buf, sizeof(buf), hash);
		if ((ret = ldb_body_set_refcount(txn, hash, 0)) <= 0)
			return ret < 0 ? ret : -1;
	}
	return 0;
}

/* the body of seed is there, and its chunks hash back to its key */
static void assert_body_intact(struct ldb_env *env, uint32_t seed)
{
	static uint8_t buf[BODY_SIZE];
	uint8_t hash[LDB_HASH_SIZE], got[LDB_HASH_SIZE];
	struct ldb_body_info info;
	struct ldb_sha256 *sha;
	struct ldb_txn *txn;
	const void *data;
	size_t size;
	uint32_t idx;

	body_bytes(buf, sizeof(buf), seed);
	hash_of(buf, sizeof(buf), hash);
	assert_int_equal(ldb_txn_begin(env, false, &txn), 0);
	assert_int_equal(ldb_body_get_info(txn, hash, &info), 1);
	assert_int_equal(info.size, BODY_SIZE);
	sha = ldb_sha256_init();
	for (idx = 0; idx < info.chunk_count; idx++) {
		assert_int_equal(ldb_body_chunk_get(txn, hash, idx, &data,
						    &size), 1);
		ldb_sha256_update(sha, data, size);
	}
	ldb_sha256_final(&sha, got);
	ldb_txn_abort(&txn);
	assert_memory_equal(got, hash, LDB_HASH_SIZE);
}

static long long file_size(const char *dir)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	return stat(path, &st) < 0 ? -1 : (long long)st.st_size;
}

static long long now_msecs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---- decoders ---- */

static void test_key_parsers(void **state)
{
	static const struct {
		size_t size;
		int want;
	} msg_cases[] = {
		{ LDB_MSG_KEY_SIZE, 0 }, { LDB_MSG_KEY_SIZE - 1, -1 },
		{ LDB_MSG_KEY_SIZE + 1, -1 }, { LDB_GUID_SIZE + 1, -1 },
		{ 0, -1 },
	}, chunk_cases[] = {
		{ LDB_CHUNK_KEY_SIZE, 0 }, { LDB_CHUNK_KEY_SIZE - 1, -1 },
		{ LDB_CHUNK_KEY_SIZE + 4, -1 }, { LDB_HASH_SIZE, -1 },
	}, body_cases[] = {
		{ LDB_BODY_REC_SIZE, 0 }, { LDB_BODY_REC_SIZE - 1, -1 },
		{ LDB_BODY_REC_SIZE + 1, -1 }, { 0, -1 },
	};
	uint8_t buf[64], guid[LDB_GUID_SIZE], hash[LDB_HASH_SIZE];
	struct ldb_body_info info;
	uint32_t uid, idx;
	unsigned int i;

	(void)state;
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = i;
	for (i = 0; i < N_ELEMENTS(msg_cases); i++) {
		int got = ldb_msg_key_parse(buf, msg_cases[i].size, guid,
					    &uid);
		if (got != msg_cases[i].want)
			fail_msg("msg key size %zu: got %d, want %d",
				 msg_cases[i].size, got, msg_cases[i].want);
	}
	for (i = 0; i < N_ELEMENTS(chunk_cases); i++) {
		int got = ldb_chunk_key_parse(buf, chunk_cases[i].size, hash,
					      &idx);
		if (got != chunk_cases[i].want)
			fail_msg("chunk key size %zu: got %d, want %d",
				 chunk_cases[i].size, got, chunk_cases[i].want);
	}
	for (i = 0; i < N_ELEMENTS(body_cases); i++) {
		int got = ldb_body_info_decode(buf, body_cases[i].size, &info);
		if (got != body_cases[i].want)
			fail_msg("body record size %zu: got %d, want %d",
				 body_cases[i].size, got, body_cases[i].want);
	}
	/* values: big-endian, after the GUID or hash */
	assert_int_equal(ldb_msg_key_parse(buf, LDB_MSG_KEY_SIZE, guid, &uid),
			 0);
	assert_memory_equal(guid, buf, LDB_GUID_SIZE);
	assert_int_equal(uid, 0x10111213);
	assert_int_equal(ldb_chunk_key_parse(buf, LDB_CHUNK_KEY_SIZE, hash,
					     &idx), 0);
	assert_int_equal(idx, 0x20212223);
	assert_int_equal(ldb_body_info_decode(buf, LDB_BODY_REC_SIZE, &info),
			 0);
	assert_int_equal(info.refcount, 0x0001020304050607ULL);
	assert_int_equal(info.size, 0x08090a0b0c0d0e0fULL);
	assert_int_equal(info.chunk_size, 0x10111213);
	assert_int_equal(info.chunk_count, 0x14151617);
}

/* ---- stat, set_refcount, compaction ---- */

static void test_stat_compact_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx all = { 1, 24 }, most = { 1, 20 };
	struct ldb_settings set;
	struct ldb_env_stat st;
	struct ldb_compact_result res;
	const char *error;
	uint32_t i;

	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &all), 0);
	assert_int_equal(ldb_env_get_stat(f->env, &st), 0);
	assert_int_equal(st.entries_body, 24);
	assert_int_equal(st.entries_chunk, 24 * 3);
	assert_int_equal(st.schema_version, LDB_SCHEMA_VERSION);
	assert_true(st.page_size > 0 && st.pages_total > 0);
	assert_int_equal(st.readers, 0);
	assert_int_equal(st.processes, 0);

	/* set_refcount(0) removes the bodies and their chunks */
	assert_int_equal(ldb_write(f->env, drop_bodies_fn, &most), 0);
	assert_int_equal(ldb_env_get_stat(f->env, &st), 0);
	assert_int_equal(st.entries_body, 4);
	assert_int_equal(st.entries_chunk, 4 * 3);
	assert_true(st.pages_free * st.page_size > 20 * BODY_SIZE / 2);

	/* open in this process: refused, file untouched */
	settings(&set, 1 * MIB, 64 * MIB);
	long long before = file_size(f->path);
	assert_int_equal(ldb_env_compact(f->path, &set, 100, &res, &error),
			 LDB_ERR_LOCKED);
	assert_non_null(strstr(error, "open in this process"));
	assert_int_equal(file_size(f->path), before);

	ldb_env_unref(&f->env);
	assert_int_equal(ldb_env_compact(f->path, &set, 100, &res, &error), 0);
	assert_int_equal(res.size_before, before);
	assert_int_equal(res.size_after, file_size(f->path));
	assert_true(res.size_after < before - 20 * BODY_SIZE / 2);

	open_env(f, 1 * MIB, 64 * MIB);
	for (i = 21; i <= 24; i++)
		assert_body_intact(f->env, i);
	assert_int_equal(ldb_env_get_stat(f->env, &st), 0);
	assert_int_equal(st.entries_body, 4);
	/* and it takes new writes */
	struct bodies_ctx more = { 100, 3 };
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &more), 0);
	assert_body_intact(f->env, 101);
}

static void test_set_refcount(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx one = { 7, 1 };
	static uint8_t buf[BODY_SIZE];
	uint8_t hash[LDB_HASH_SIZE], missing[LDB_HASH_SIZE] = { 0 };
	struct ldb_body_info info;
	struct ldb_txn *txn;

	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &one), 0);
	body_bytes(buf, sizeof(buf), 7);
	hash_of(buf, sizeof(buf), hash);
	assert_int_equal(ldb_txn_begin(f->env, true, &txn), 0);
	assert_int_equal(ldb_body_set_refcount(txn, hash, 5), 1);
	assert_int_equal(ldb_body_set_refcount(txn, missing, 5), 0);
	assert_int_equal(ldb_body_get_info(txn, hash, &info), 1);
	assert_int_equal(info.refcount, 5);
	assert_int_equal(info.chunk_count, 3);
	assert_int_equal(ldb_txn_commit(&txn), 0);
}

static void test_compact_cleans_leftover_tmp(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx two = { 1, 2 };
	struct ldb_settings set;
	struct ldb_compact_result res;
	char tmp[PATH_MAX + 32];
	const char *error;
	int fd;

	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &two), 0);
	ldb_env_unref(&f->env);
	/* an interrupted run left its copy behind */
	snprintf(tmp, sizeof(tmp), "%s/compact.tmp", f->path);
	assert_int_equal(mkdir(tmp, 0700), 0);
	snprintf(tmp, sizeof(tmp), "%s/compact.tmp/data.mdb", f->path);
	fd = open(tmp, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "junk", 4), 4);
	close(fd);

	settings(&set, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_env_compact(f->path, &set, 100, &res, &error), 0);
	snprintf(tmp, sizeof(tmp), "%s/compact.tmp", f->path);
	assert_int_equal(access(tmp, F_OK), -1);
	open_env(f, 1 * MIB, 64 * MIB);
	assert_body_intact(f->env, 1);
	assert_body_intact(f->env, 2);
}

/* ---- the compact lock between processes ---- */

/* Child: open the environment, tell the parent, keep it open for
   hold_msecs, exit. */
static pid_t child_holding_env(const char *path, unsigned int hold_msecs)
{
	int fds[2];
	char c;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ldb_settings set;
		struct ldb_env *env;
		const char *error;

		close(fds[0]);
		settings(&set, 1 * MIB, 64 * MIB);
		if (ldb_env_open(path, &set, &env, &error) < 0)
			_exit(2);
		if (write(fds[1], "x", 1) != 1)
			_exit(3);
		usleep(hold_msecs * 1000);
		ldb_env_unref(&env);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	return pid;
}

static void wait_child(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_compact_waits_for_users(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx one = { 3, 1 };
	struct ldb_settings set;
	struct ldb_compact_result res;
	struct ldb_env_stat st;
	const char *error;
	long long start;
	pid_t pid;

	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &one), 0);
	settings(&set, 1 * MIB, 64 * MIB);

	/* another process has it open: busy after the wait (fork with no
	   environment open, so that the child opens its own) */
	ldb_env_unref(&f->env);
	pid = child_holding_env(f->path, 600);
	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_env_get_stat(f->env, &st), 0);
	assert_int_equal(st.processes, 1);
	ldb_env_unref(&f->env);
	start = now_msecs();
	assert_int_equal(ldb_env_compact(f->path, &set, 50, &res, &error),
			 LDB_ERR_LOCKED);
	assert_non_null(strstr(error, "in use by another process"));
	assert_true(now_msecs() - start < 500);
	/* ... and done once it closes it within the wait */
	assert_int_equal(ldb_env_compact(f->path, &set, 5000, &res, &error),
			 0);
	wait_child(pid);
	open_env(f, 1 * MIB, 64 * MIB);
	assert_body_intact(f->env, 3);
}

static void test_open_waits_for_compaction(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx one = { 5, 1 };
	struct ldb_settings set;
	char lock[PATH_MAX + 32];
	const char *error;
	long long start;
	int fd, ret;

	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &one), 0);
	ldb_env_unref(&f->env);

	/* what a compaction holds */
	snprintf(lock, sizeof(lock), "%s/%s", f->path, LDB_COMPACT_LOCK_NAME);
	fd = open(lock, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);

	settings(&set, 1 * MIB, 64 * MIB);
	set.lock_timeout_msecs = 150;
	start = now_msecs();
	ret = ldb_env_open(f->path, &set, &f->env, &error);
	assert_int_equal(ret, LDB_ERR_LOCKED);
	assert_null(f->env);
	assert_non_null(strstr(error, "is being compacted"));
	assert_true(now_msecs() - start >= 140);

	close(fd);
	assert_int_equal(ldb_env_open(f->path, &set, &f->env, &error), 0);
	assert_body_intact(f->env, 5);
}

/* ---- copy, map growth ---- */

static void test_copy_is_a_snapshot(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx first = { 1, 3 }, later = { 50, 2 };
	struct ldb_settings set;
	struct ldb_env *copy;
	struct ldb_env_stat st;
	char dest[PATH_MAX + 16];
	const char *error;

	open_env(f, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &first), 0);
	snprintf(dest, sizeof(dest), "%s/copy", f->dir);
	assert_int_equal(mkdir(dest, 0700), 0);
	assert_int_equal(ldb_env_copy(f->env, dest, true), 0);
	/* the original goes on; the copy doesn't change */
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &later), 0);

	settings(&set, 1 * MIB, 64 * MIB);
	assert_int_equal(ldb_env_open(dest, &set, &copy, &error), 0);
	assert_int_equal(ldb_env_get_stat(copy, &st), 0);
	assert_int_equal(st.entries_body, 3);
	assert_body_intact(copy, 2);
	ldb_env_unref(&copy);

	/* a non-empty or missing destination is an error */
	assert_true(ldb_env_copy(f->env, dest, false) < 0);
}

struct grow_log {
	unsigned int calls;
	size_t old_size, new_size;
	bool adopted;
};

static void grow_cb(void *context, const char *path, size_t old_size,
		    size_t new_size, bool adopted)
{
	struct grow_log *log = context;

	assert_non_null(path);
	log->calls++;
	log->old_size = old_size;
	log->new_size = new_size;
	log->adopted = adopted;
}

static void test_map_grow_callback(void **state)
{
	struct fixture *f = *state;
	struct bodies_ctx many = { 1, 12 };
	struct grow_log log = { 0, 0, 0, false }, other;

	open_env(f, 128 * 1024, 64 * MIB);
	ldb_env_set_map_grow_callback(f->env, grow_cb, &log);
	/* clearing with someone else's context keeps ours */
	ldb_env_set_map_grow_callback(f->env, NULL, &other);
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &many), 0);
	assert_true(log.calls >= 1);
	assert_false(log.adopted);
	assert_true(log.new_size > log.old_size);
	assert_int_equal(log.new_size, ldb_env_map_size(f->env));

	ldb_env_set_map_grow_callback(f->env, NULL, &log);
	log.calls = 0;
	struct bodies_ctx more = { 100, 24 };
	assert_int_equal(ldb_write(f->env, put_bodies_fn, &more), 0);
	assert_int_equal(log.calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_parsers),
		cmocka_unit_test_setup_teardown(test_stat_compact_keeps_data,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_refcount,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_cleans_leftover_tmp,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_waits_for_users,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_waits_for_compaction,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_is_a_snapshot,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_grow_callback,
						setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
