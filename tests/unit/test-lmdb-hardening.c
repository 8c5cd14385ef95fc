/* cmocka tests of the LMDB layer against damaged databases and of the
   inputs the fuzzers found worth keeping (issue 8).

   A data.mdb that was cut short must be refused with LDB_ERR_CORRUPT and
   an error that says "truncated": LMDB itself would map pages past the end
   of the file (SIGBUS), or take an empty file for a new database (every
   message would then read as expunged).  The record codec cases replay
   tests/fuzz/seeds/fuzz-lmdb-record through the same checks as the fuzzer
   does, so that a crash found by fuzzing stays fixed even where clang
   isn't installed. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "lmdb-db.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fixture {
	char dir[256];
	char env[300];
	char data[320];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test-lmdb-hardening.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->env, sizeof(f->env), "%s/mail.lmdb", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data.mdb", f->env);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int open_env(struct fixture *f, struct ldb_env **env_r,
		    const char **error_r)
{
	struct ldb_settings set;

	ldb_settings_default(&set);
	set.initial_map_size = 4 * 1024 * 1024;
	return ldb_env_open(f->env, &set, env_r, error_r);
}

static int put_fn(struct ldb_txn *txn, void *context)
{
	const unsigned int *count = context;
	struct ldb_mailbox_rec rec = { .uid_validity = 1, .next_uid = 1 };
	uint8_t guid[LDB_GUID_SIZE], hash[LDB_HASH_SIZE], chunk[4096];
	unsigned int i;
	int ret;

	memset(guid, 0x42, sizeof(guid));
	if ((ret = ldb_mailbox_put(txn, guid, &rec)) < 0)
		return ret;
	memset(hash, 0x17, sizeof(hash));
	memset(chunk, 'x', sizeof(chunk));
	for (i = 0; i < *count; i++) {
		hash[0] = chunk[0] = i;
		if ((ret = ldb_body_create(txn, hash, sizeof(chunk),
					   sizeof(chunk))) < 0 ||
		    (ret = ldb_body_chunk_put(txn, hash, 0, chunk,
					      sizeof(chunk))) < 0)
			return ret;
	}
	return 0;
}

/* a database of some 100 pages, closed again */
static void make_db(struct fixture *f)
{
	struct ldb_env *env;
	const char *error;
	unsigned int count = 100;

	assert_int_equal(open_env(f, &env, &error), 0);
	assert_int_equal(ldb_write(env, put_fn, &count), 0);
	ldb_env_unref(&env);
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void check_refused(struct fixture *f, off_t size)
{
	struct ldb_env *env = NULL;
	const char *error = NULL;

	assert_int_equal(truncate(f->data, size), 0);
	assert_int_equal(open_env(f, &env, &error), LDB_ERR_CORRUPT);
	assert_null(env);
	assert_non_null(error);
	if (strstr(error, "truncated") == NULL)
		fail_msg("got error \"%s\", want one about truncation", error);
	/* refused, not rewritten */
	assert_int_equal(file_size(f->data), size);
}

static void test_truncated_half(void **state)
{
	struct fixture *f = *state;

	make_db(f);
	check_refused(f, file_size(f->data) / 2);
}

static void test_truncated_one_page(void **state)
{
	struct fixture *f = *state;

	make_db(f);
	check_refused(f, 4096);
}

static void test_truncated_empty(void **state)
{
	struct fixture *f = *state;

	make_db(f);
	check_refused(f, 0);
}

static void test_intact_reopens(void **state)
{
	struct fixture *f = *state;
	struct ldb_env *env;
	const char *error;

	make_db(f);
	assert_int_equal(open_env(f, &env, &error), 0);
	ldb_env_unref(&env);
}

/* every seed of the record fuzzer (crash inputs included) */
static void test_record_fuzz_seeds(void **state)
{
	const char *dir = "tests/fuzz/seeds/fuzz-lmdb-record";
	unsigned char buf[65536];
	char path[PATH_MAX];
	struct dirent *de;
	unsigned int n = 0;
	DIR *d;

	(void)state;
	d = opendir(dir);
	if (d == NULL)
		skip();
	while ((de = readdir(d)) != NULL) {
		FILE *fp;
		size_t size;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fp = fopen(path, "rb");
		assert_non_null(fp);
		size = fread(buf, 1, sizeof(buf), fp);
		fclose(fp);
		LLVMFuzzerTestOneInput(buf, size);
		n++;
	}
	closedir(d);
	assert_true(n > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_intact_reopens,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_half,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_one_page,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_empty,
						setup, teardown),
		cmocka_unit_test(test_record_fuzz_seeds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
