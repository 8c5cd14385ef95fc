/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The LMDB layer.  See include/lmdb-db.h for the schema.  This file must stay
   usable outside Dovecot: it includes no Dovecot headers and reports errors
   through return codes and ldb_env_last_error().

   Error recovery follows Postfix's slmdb: MDB_MAP_FULL aborts the
   transaction, grows the map by a factor up to a hard limit and runs the
   whole transaction again; MDB_MAP_RESIZED adopts the size another process
   chose; MDB_READERS_FULL clears stale readers and retries a few times. */

#include "lmdb-db.h"

#include <lmdb.h>
#include <openssl/evp.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/vfs.h>
#include <sys/statvfs.h>
#include <sys/resource.h>

#define LDB_MAX_DBS 16
#define LDB_RETRY_LIMIT 8
#define LDB_DEFAULT_INITIAL_MAP (16UL * 1024 * 1024)
#define LDB_DEFAULT_MAX_MAP (4UL * 1024 * 1024 * 1024)
/* address space left for the heap when the map grows under RLIMIT_AS */
#define LDB_AS_MARGIN (48UL * 1024 * 1024)

#ifndef NFS_SUPER_MAGIC
#  define NFS_SUPER_MAGIC 0x6969
#endif
#define LDB_SMB_SUPER_MAGIC 0x517B
#define LDB_CIFS_MAGIC 0xFF534D42
#define LDB_SMB2_MAGIC 0xFE534D42
#define LDB_CEPH_MAGIC 0x00c36400
#define LDB_FUSE_MAGIC 0x65735546

struct ldb_env {
	struct ldb_env *next;
	int refcount;
	char *path;
	dev_t dev;
	ino_t ino;
	MDB_env *env;
	MDB_dbi dbi_meta, dbi_mailbox, dbi_msg, dbi_body, dbi_chunk;
	struct ldb_settings set;
	size_t map_size;
	/* <path>/compact.lock, flock()ed shared while the env is open */
	int lock_fd;
	ldb_map_grow_callback_t *grow_callback;
	void *grow_context;
	char error[512];
};

struct ldb_txn {
	struct ldb_env *env;
	MDB_txn *txn;
	bool write;
	/* set when a put hit MDB_MAP_FULL: the txn is poisoned */
	bool map_full;
};

struct ldb_msg_iter {
	struct ldb_txn *txn;
	MDB_cursor *cursor;
	uint8_t guid[LDB_GUID_SIZE];
	uint8_t key[LDB_MSG_KEY_SIZE];
	bool started;
	int error;
};

struct ldb_sha256 {
	EVP_MD_CTX *ctx;
};

static struct ldb_env *ldb_envs = NULL;

static void ldb_set_error(struct ldb_env *env, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ldb_set_error(struct ldb_env *env, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(env->error, sizeof(env->error), fmt, args);
	va_end(args);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8; p[1] = v & 0xff;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = (v >> 16) & 0xff;
	p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, v & 0xffffffffU);
}

static uint16_t get_be16(const uint8_t *p)
{
	return ((uint16_t)p[0] << 8) | p[1];
}

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
		((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
	return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

/* Allocation failed (with Dovecot, nearly always the service's vsz_limit):
   say so before abort(), or the log only shows "killed with signal 6".
   stderr of a Dovecot process goes to its log. */
static void ldb_out_of_memory(const char *func)
{
	fprintf(stderr, "lmdb: %s: out of memory (raise the service's "
		"vsz_limit)\n", func);
	abort();
}

void ldb_settings_default(struct ldb_settings *set_r)
{
	memset(set_r, 0, sizeof(*set_r));
	set_r->initial_map_size = LDB_DEFAULT_INITIAL_MAP;
	set_r->max_map_size = LDB_DEFAULT_MAX_MAP;
	set_r->file_mode = 0600;
	set_r->lock_timeout_msecs = LDB_DEFAULT_LOCK_TIMEOUT_MSECS;
}

/* LMDB reports a short write(), which is how a filling disk shows up while
   a commit writes its pages, as EIO.  Tell that apart from a real I/O error
   by the space left on the filesystem: after a short write it is (nearly)
   none. */
#define LDB_DISK_FULL_MARGIN (1024 * 1024)
static bool ldb_disk_is_full(struct ldb_env *env, unsigned long long *free_r)
{
	struct statvfs st;

	if (statvfs(env->path, &st) < 0)
		return false;
	*free_r = (unsigned long long)st.f_bavail * st.f_frsize;
	return *free_r < LDB_DISK_FULL_MARGIN;
}

/* Map an LMDB or errno code to our codes, remembering the message. */
static int ldb_map_error(struct ldb_env *env, int rc, const char *func)
{
	unsigned long long free_bytes;

	if (rc == EIO && ldb_disk_is_full(env, &free_bytes)) {
		ldb_set_error(env, "%s(%s) failed: No space left on device "
			      "(LMDB reported a short write as EIO; %llu "
			      "bytes free)", func, env->path, free_bytes);
		return LDB_ERR_NOSPACE;
	}
	ldb_set_error(env, "%s(%s) failed: %s", func, env->path,
		      mdb_strerror(rc));
	switch (rc) {
	case MDB_MAP_FULL:
		return LDB_ERR_MAP_FULL;
	case ENOSPC:
		return LDB_ERR_NOSPACE;
	case EDQUOT:
		return LDB_ERR_QUOTA;
	case ENOMEM:
		return LDB_ERR_NOMEM;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		return LDB_ERR_CORRUPT;
	default:
		return LDB_ERR_INTERNAL;
	}
}

int ldb_path_check_local(const char *path, const char **error_r)
{
	struct statfs sfs;

	if (statfs(path, &sfs) < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	switch ((unsigned long)sfs.f_type) {
	case NFS_SUPER_MAGIC:
		*error_r = "LMDB can't be used on NFS";
		return -1;
	case LDB_SMB_SUPER_MAGIC:
	case LDB_CIFS_MAGIC:
	case LDB_SMB2_MAGIC:
		*error_r = "LMDB can't be used on SMB/CIFS";
		return -1;
	case LDB_CEPH_MAGIC:
		*error_r = "LMDB can't be used on CephFS";
		return -1;
	default:
		return 0;
	}
}

static int ldb_env_set_map(struct ldb_env *env, size_t size)
{
	int rc = mdb_env_set_mapsize(env->env, size);

	if (rc != 0)
		return ldb_map_error(env, rc, "mdb_env_set_mapsize");
	env->map_size = size;
	return 0;
}

static size_t ldb_address_space_avail(void);

/* ldb_env_set_map() for a map that grows while in use: tells the
   callback, so that the storage can log it */
static int ldb_env_resize(struct ldb_env *env, size_t size, bool adopted)
{
	size_t old_size = env->map_size;
	int ret;

	if ((ret = ldb_env_set_map(env, size)) < 0)
		return ret;
	if (env->grow_callback != NULL && size != old_size) {
		env->grow_callback(env->grow_context, env->path, old_size,
				   size, adopted);
	}
	return 0;
}

/* Another process grew the database beyond our map.  LMDB's own answer
   (mdb_env_set_mapsize(env, 0)) maps the other process's size, and a
   failed remap leaves the environment without any map, so pick a size
   that holds the data and fits this process's address space limit. */
static int ldb_env_adopt_map(struct ldb_env *env)
{
	MDB_envinfo info;
	MDB_stat st;
	size_t need, size, avail;

	if (mdb_env_info(env->env, &info) != 0 ||
	    mdb_env_stat(env->env, &st) != 0)
		return ldb_env_set_map(env, 0);
	need = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
	size = env->map_size;
	while (size < need)
		size *= 2;
	if (size > env->set.max_map_size && need <= env->set.max_map_size)
		size = env->set.max_map_size;
	avail = ldb_address_space_avail();
	if (avail != (size_t)-1) {
		avail += env->map_size;
		avail -= avail % 4096;
		if (size > avail)
			size = avail;
		if (size < need) {
			ldb_set_error(env, "LMDB database %s needs a map of %zu "
				      "bytes, more than the process's address "
				      "space limit allows (raise the service's "
				      "vsz_limit)", env->path, need);
			return LDB_ERR_NOMEM;
		}
	}
	return ldb_env_resize(env, size, true);
}

/* Address space this process may still map, keeping a margin for the
   heap; (size_t)-1 if unlimited. */
static size_t ldb_address_space_avail(void)
{
	struct rlimit rl;
	unsigned long long pages = 0;
	size_t used, margin = LDB_AS_MARGIN;
	FILE *f;

	if (getrlimit(RLIMIT_AS, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return (size_t)-1;
	f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return (size_t)-1;
	if (fscanf(f, "%llu", &pages) != 1)
		pages = 0;
	fclose(f);
	used = (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
	if (used + margin >= rl.rlim_cur)
		return 0;
	return rl.rlim_cur - used - margin;
}

static int ldb_env_grow(struct ldb_env *env)
{
	size_t new_size, avail;
	MDB_envinfo info;

	if (mdb_env_info(env->env, &info) == 0 &&
	    info.me_mapsize > env->map_size)
		env->map_size = info.me_mapsize;
	if (env->map_size >= env->set.max_map_size) {
		ldb_set_error(env, "LMDB map of %s is full at its limit of "
			      "%zu bytes (plugin setting lmdb_max_size)",
			      env->path, env->set.max_map_size);
		return LDB_ERR_MAP_FULL;
	}
	new_size = env->map_size * 2;
	if (new_size > env->set.max_map_size || new_size < env->map_size)
		new_size = env->set.max_map_size;
	/* A failed remap leaves LMDB without a map at all, so never ask for
	   more address space than RLIMIT_AS (Dovecot's vsz_limit) leaves. */
	avail = ldb_address_space_avail();
	if (avail != (size_t)-1) {
		avail += env->map_size; /* the old map is released first */
		avail -= avail % 4096;
		if (new_size > avail)
			new_size = avail;
		if (new_size <= env->map_size) {
			/* not the user's quota: a temporary failure (LMTP
			   451), not lmdb_max_size's bounce (552) */
			ldb_set_error(env, "LMDB map of %s can't grow beyond "
				      "%zu bytes: the process has reached its "
				      "address space limit (raise the service's "
				      "vsz_limit)", env->path, env->map_size);
			return LDB_ERR_NOMEM;
		}
	}
	return ldb_env_resize(env, new_size, false);
}

/* LMDB writes both meta pages when it creates data.mdb, so a shorter file
   was cut short.  LMDB would take it for a new, empty database, and every
   message would read as expunged: refuse it instead. */
static int ldb_env_check_empty(struct ldb_env *env)
{
	char file[PATH_MAX];
	struct stat st;
	long page_size = sysconf(_SC_PAGESIZE);

	snprintf(file, sizeof(file), "%s/data.mdb", env->path);
	if (stat(file, &st) < 0 || st.st_size >= 2 * page_size)
		return 0;
	ldb_set_error(env, "%s is truncated to %lld bytes: restore it from "
		      "a backup (if this user never had mail, delete it)",
		      file, (long long)st.st_size);
	return LDB_ERR_CORRUPT;
}

/* A data.mdb cut short (a copy or restore that stopped early, a disk that
   filled outside LMDB) makes LMDB touch pages past the end of the file,
   which the kernel answers with SIGBUS: refuse it with an error instead. */
static int ldb_env_check_size(struct ldb_env *env)
{
	MDB_envinfo info;
	MDB_stat st;
	struct stat fst;
	unsigned long long need;
	mdb_filehandle_t fd;

	if (mdb_env_info(env->env, &info) != 0 ||
	    mdb_env_stat(env->env, &st) != 0 ||
	    mdb_env_get_fd(env->env, &fd) != 0 || fstat(fd, &fst) < 0)
		return 0;
	need = ((unsigned long long)info.me_last_pgno + 1) * st.ms_psize;
	if ((unsigned long long)fst.st_size >= need)
		return 0;
	ldb_set_error(env, "%s/data.mdb is truncated: it has %lld bytes, but "
		      "its pages reach %llu bytes (restore it from a backup)",
		      env->path, (long long)fst.st_size, need);
	return LDB_ERR_CORRUPT;
}

static int ldb_env_init_dbs(struct ldb_env *env)
{
	MDB_txn *txn;
	MDB_val key, val;
	uint8_t buf[4];
	uint32_t version;
	int rc, attempt;

	for (attempt = 0;; attempt++) {
		rc = mdb_txn_begin(env->env, NULL, 0, &txn);
		if (rc == MDB_MAP_RESIZED && attempt < LDB_RETRY_LIMIT) {
			if (ldb_env_adopt_map(env) < 0)
				return -1;
			continue;
		}
		if (rc != 0)
			return ldb_map_error(env, rc, "mdb_txn_begin");
		if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &env->dbi_meta)) != 0 ||
		    (rc = mdb_dbi_open(txn, "mailbox", MDB_CREATE, &env->dbi_mailbox)) != 0 ||
		    (rc = mdb_dbi_open(txn, "msg", MDB_CREATE, &env->dbi_msg)) != 0 ||
		    (rc = mdb_dbi_open(txn, "body", MDB_CREATE, &env->dbi_body)) != 0 ||
		    (rc = mdb_dbi_open(txn, "chunk", MDB_CREATE, &env->dbi_chunk)) != 0)
			goto fail;

		key.mv_data = "schema_version";
		key.mv_size = strlen(key.mv_data);
		rc = mdb_get(txn, env->dbi_meta, &key, &val);
		if (rc == 0) {
			if (val.mv_size != 4) {
				mdb_txn_abort(txn);
				ldb_set_error(env, "%s: corrupted schema_version",
					      env->path);
				return LDB_ERR_CORRUPT;
			}
			version = get_be32(val.mv_data);
			if (version > LDB_SCHEMA_VERSION) {
				mdb_txn_abort(txn);
				ldb_set_error(env, "%s: schema version %u is newer "
					      "than this plugin's %u: refusing to "
					      "touch it", env->path, version,
					      LDB_SCHEMA_VERSION);
				return LDB_ERR_VERSION;
			}
		} else if (rc == MDB_NOTFOUND) {
			put_be32(buf, LDB_SCHEMA_VERSION);
			val.mv_data = buf;
			val.mv_size = sizeof(buf);
			if ((rc = mdb_put(txn, env->dbi_meta, &key, &val, 0)) != 0)
				goto fail;
			key.mv_data = "chunk_size";
			key.mv_size = strlen(key.mv_data);
			put_be32(buf, LDB_CHUNK_SIZE);
			if ((rc = mdb_put(txn, env->dbi_meta, &key, &val, 0)) != 0)
				goto fail;
		} else {
			goto fail;
		}
		rc = mdb_txn_commit(txn);
		if (rc == MDB_MAP_FULL && attempt < LDB_RETRY_LIMIT) {
			if ((rc = ldb_env_grow(env)) < 0)
				return rc;
			continue;
		}
		if (rc != 0)
			return ldb_map_error(env, rc, "mdb_txn_commit");
		return 0;
	fail:
		mdb_txn_abort(txn);
		if (rc == MDB_MAP_FULL && attempt < LDB_RETRY_LIMIT) {
			if ((rc = ldb_env_grow(env)) < 0)
				return rc;
			continue;
		}
		return ldb_map_error(env, rc, "mdb_dbi_open");
	}
}

/* flock(fd, op) without blocking the process for longer than
   timeout_msecs.  0 = locked, LDB_ERR_LOCKED = timed out, -1 = error
   (errno set). */
static int ldb_flock_wait(int fd, int op, unsigned int timeout_msecs)
{
	struct timespec start, now;
	useconds_t delay = 1000;
	long long elapsed;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		if (flock(fd, op | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (now.tv_sec - start.tv_sec) * 1000LL +
			(now.tv_nsec - start.tv_nsec) / 1000000;
		if (elapsed >= timeout_msecs)
			return LDB_ERR_LOCKED;
		usleep(delay);
		if (delay < 100000)
			delay *= 2;
	}
}

static int ldb_lock_file_open(const char *dir, unsigned int mode)
{
	char path[4096];
	mode_t old_mask;
	int fd;

	snprintf(path, sizeof(path), "%s/"LDB_COMPACT_LOCK_NAME, dir);
	old_mask = umask(0);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode);
	umask(old_mask);
	if (fd == -1 && errno == EACCES)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd;
}

/* Keep <path>/compact.lock shared-locked for as long as the environment is
   open, so that a compaction never replaces the file under our map. */
static int ldb_env_lock_shared(struct ldb_env *env)
{
	int ret;

	env->lock_fd = ldb_lock_file_open(env->path, env->set.file_mode);
	if (env->lock_fd == -1) {
		ldb_set_error(env, "open(%s/"LDB_COMPACT_LOCK_NAME") failed: %s",
			      env->path, strerror(errno));
		return LDB_ERR_INTERNAL;
	}
	ret = ldb_flock_wait(env->lock_fd, LOCK_SH,
			     env->set.lock_timeout_msecs);
	if (ret == LDB_ERR_LOCKED) {
		ldb_set_error(env, "LMDB environment %s is being compacted "
			      "(%s held for over %u ms): try again later",
			      env->path, LDB_COMPACT_LOCK_NAME,
			      env->set.lock_timeout_msecs);
		return LDB_ERR_LOCKED;
	}
	if (ret < 0) {
		ldb_set_error(env, "flock(%s/"LDB_COMPACT_LOCK_NAME") failed: "
			      "%s", env->path, strerror(errno));
		return LDB_ERR_INTERNAL;
	}
	return 0;
}

static void ldb_env_free(struct ldb_env *env)
{
	if (env->env != NULL)
		mdb_env_close(env->env);
	/* closing the fd releases the shared compact lock: only after the
	   map is gone */
	if (env->lock_fd != -1)
		close(env->lock_fd);
	free(env->path);
	free(env);
}

int ldb_env_open(const char *path, const struct ldb_settings *set,
		 struct ldb_env **env_r, const char **error_r)
{
	static char errbuf[600];
	struct ldb_env *env;
	struct stat st;
	MDB_envinfo info;
	mode_t old_mask;
	int rc, dead, ret;
	unsigned int flags;

	*env_r = NULL;
	/* Files get exactly set->file_mode, the mailbox list's (0600, or
	   0660 in a group-shared root), as Dovecot's own files do, whatever
	   the process's umask; the directory gets x where the file mode has
	   r.  (Dovecot is single-threaded: changing the umask is safe.) */
	old_mask = umask(0);
	ret = mkdir(path, set->file_mode | ((set->file_mode & 0444) >> 2));
	umask(old_mask);
	if (ret < 0 && errno != EEXIST) {
		snprintf(errbuf, sizeof(errbuf), "mkdir(%s) failed: %s",
			 path, strerror(errno));
		*error_r = errbuf;
		return LDB_ERR_INTERNAL;
	}
	if (stat(path, &st) < 0) {
		snprintf(errbuf, sizeof(errbuf), "stat(%s) failed: %s",
			 path, strerror(errno));
		*error_r = errbuf;
		return LDB_ERR_INTERNAL;
	}
	for (env = ldb_envs; env != NULL; env = env->next) {
		if (env->dev == st.st_dev && env->ino == st.st_ino) {
			env->refcount++;
			*env_r = env;
			return 0;
		}
	}
	if (!set->allow_network_fs) {
		const char *error;

		if (ldb_path_check_local(path, &error) < 0) {
			snprintf(errbuf, sizeof(errbuf), "%s: %s", path, error);
			*error_r = errbuf;
			return LDB_ERR_INTERNAL;
		}
	}

	env = calloc(1, sizeof(*env));
	if (env == NULL || (env->path = strdup(path)) == NULL) {
		free(env);
		*error_r = "out of memory";
		return LDB_ERR_NOMEM;
	}
	env->refcount = 1;
	env->lock_fd = -1;
	env->dev = st.st_dev;
	env->ino = st.st_ino;
	env->set = *set;
	if (env->set.max_map_size < env->set.initial_map_size)
		env->set.max_map_size = env->set.initial_map_size;

	if ((rc = mdb_env_create(&env->env)) != 0) {
		env->env = NULL;
		ret = ldb_map_error(env, rc, "mdb_env_create");
		goto fail;
	}
	mdb_env_set_maxdbs(env->env, LDB_MAX_DBS);
	mdb_env_set_maxreaders(env->env, 510);
	if ((ret = ldb_env_set_map(env, set->initial_map_size)) < 0)
		goto fail;
	/* before the map: a compaction may be replacing data.mdb */
	if ((ret = ldb_env_lock_shared(env)) < 0)
		goto fail;
	/* NOTLS: read transactions are not tied to a thread, and Dovecot's
	   processes are single-threaded anyway.  NORDAHEAD: bodies are read
	   in chunks on demand. */
	flags = MDB_NOTLS | MDB_NORDAHEAD;
	if (set->nosync)
		flags |= MDB_NOSYNC;
	if ((ret = ldb_env_check_empty(env)) < 0)
		goto fail;
	old_mask = umask(0);
	rc = mdb_env_open(env->env, path, flags, set->file_mode);
	umask(old_mask);
	if (rc != 0) {
		ret = ldb_map_error(env, rc, "mdb_env_open");
		if (rc == ENOMEM) {
			ldb_set_error(env, "mdb_env_open(%s) failed: can't map "
				      "%zu bytes: raise vsz_limit of this "
				      "service", path, set->initial_map_size);
		}
		goto fail;
	}
	/* an existing database may be larger than our initial size */
	if (mdb_env_info(env->env, &info) == 0)
		env->map_size = info.me_mapsize;
	(void)mdb_reader_check(env->env, &dead);
	if ((ret = ldb_env_check_size(env)) < 0 ||
	    (ret = ldb_env_init_dbs(env)) < 0)
		goto fail;

	env->next = ldb_envs;
	ldb_envs = env;
	*env_r = env;
	return 0;
fail:
	snprintf(errbuf, sizeof(errbuf), "%s", env->error);
	*error_r = errbuf;
	ldb_env_free(env);
	return ret;
}

void ldb_env_unref(struct ldb_env **_env)
{
	struct ldb_env *env = *_env, **p;

	*_env = NULL;
	if (env == NULL || --env->refcount > 0)
		return;
	for (p = &ldb_envs; *p != NULL; p = &(*p)->next) {
		if (*p == env) {
			*p = env->next;
			break;
		}
	}
	ldb_env_free(env);
}

const char *ldb_env_last_error(struct ldb_env *env)
{
	return env->error[0] == '\0' ? "unknown LMDB error" : env->error;
}

size_t ldb_env_map_size(struct ldb_env *env)
{
	return env->map_size;
}

const char *ldb_env_path(struct ldb_env *env)
{
	return env->path;
}

long long ldb_env_file_size(struct ldb_env *env)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/data.mdb", env->path);
	if (stat(path, &st) < 0)
		return -1;
	return (long long)st.st_size;
}

int ldb_txn_begin(struct ldb_env *env, bool write, struct ldb_txn **txn_r)
{
	struct ldb_txn *txn;
	MDB_txn *mtxn;
	int rc, ret, attempt, dead;

	*txn_r = NULL;
	for (attempt = 0;; attempt++) {
		rc = mdb_txn_begin(env->env, NULL, write ? 0 : MDB_RDONLY,
				   &mtxn);
		if (rc == 0)
			break;
		if (attempt >= LDB_RETRY_LIMIT)
			return ldb_map_error(env, rc, "mdb_txn_begin");
		if (rc == MDB_MAP_RESIZED) {
			if ((ret = ldb_env_adopt_map(env)) < 0)
				return ret;
		} else if (rc == MDB_READERS_FULL) {
			(void)mdb_reader_check(env->env, &dead);
			if (dead == 0)
				usleep(10000 << attempt);
		} else {
			return ldb_map_error(env, rc, "mdb_txn_begin");
		}
	}
	txn = calloc(1, sizeof(*txn));
	if (txn == NULL) {
		mdb_txn_abort(mtxn);
		ldb_set_error(env, "out of memory");
		return LDB_ERR_NOMEM;
	}
	txn->env = env;
	txn->txn = mtxn;
	txn->write = write;
	*txn_r = txn;
	return 0;
}

int ldb_txn_commit(struct ldb_txn **_txn)
{
	struct ldb_txn *txn = *_txn;
	int rc, ret = 0;

	*_txn = NULL;
	if (txn->map_full) {
		mdb_txn_abort(txn->txn);
		ret = LDB_ERR_MAP_FULL;
	} else if ((rc = mdb_txn_commit(txn->txn)) != 0) {
		ret = ldb_map_error(txn->env, rc, "mdb_txn_commit");
	}
	free(txn);
	return ret;
}

void ldb_txn_abort(struct ldb_txn **_txn)
{
	struct ldb_txn *txn = *_txn;

	*_txn = NULL;
	if (txn == NULL)
		return;
	mdb_txn_abort(txn->txn);
	free(txn);
}

static int ldb_txn_error(struct ldb_txn *txn, int rc, const char *func)
{
	if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
		txn->map_full = true;
	return ldb_map_error(txn->env, rc, func);
}

/* Commit a tiny write (meta "schema_version" rewritten with its own value)
   so that the transaction ID advances.  LMDB reuses pages freed by commit N
   only from transaction N+2 on: right after an expunge freed space, a save
   at max_map_size would otherwise fail again and again, since failed
   transactions never commit. */
static int ldb_env_touch(struct ldb_env *env)
{
	MDB_txn *txn;
	MDB_val key, val;
	uint8_t buf[4];
	int rc;

	if ((rc = mdb_txn_begin(env->env, NULL, 0, &txn)) != 0)
		return ldb_map_error(env, rc, "mdb_txn_begin");
	key.mv_data = "schema_version";
	key.mv_size = strlen(key.mv_data);
	rc = mdb_get(txn, env->dbi_meta, &key, &val);
	if (rc == 0 && val.mv_size == sizeof(buf)) {
		memcpy(buf, val.mv_data, sizeof(buf));
		val.mv_data = buf;
		rc = mdb_put(txn, env->dbi_meta, &key, &val, 0);
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		return ldb_map_error(env, rc, "mdb_put");
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return ldb_map_error(env, rc, "mdb_txn_commit");
	return 0;
}

int ldb_write(struct ldb_env *env, ldb_write_fn_t *fn, void *context)
{
	struct ldb_txn *txn;
	int ret, attempt;
	bool touched = false;

	for (attempt = 0;; attempt++) {
		if ((ret = ldb_txn_begin(env, true, &txn)) < 0)
			return ret;
		ret = fn(txn, context);
		if (ret < 0) {
			bool full = txn->map_full;

			ldb_txn_abort(&txn);
			if (!full)
				return ret;
		} else {
			if ((ret = ldb_txn_commit(&txn)) == 0)
				return 0;
			if ((ret == LDB_ERR_NOSPACE ||
			     ret == LDB_ERR_QUOTA) && !touched) {
				/* disk full: pages an expunge just freed
				   are reusable only from the transaction
				   after next; advance once and retry */
				touched = true;
				if (ldb_env_touch(env) < 0)
					return ret;
				continue;
			}
			if (ret != LDB_ERR_MAP_FULL)
				return ret;
		}
		/* MDB_MAP_FULL: no transaction is active now, so the map can
		   be resized. */
		if (attempt >= LDB_RETRY_LIMIT * 4)
			return LDB_ERR_MAP_FULL;
		if ((ret = ldb_env_grow(env)) < 0) {
			/* at max_map_size or the address space limit: make
			   recently freed pages reusable, then try once more */
			if ((ret != LDB_ERR_MAP_FULL && ret != LDB_ERR_NOMEM) ||
			    touched)
				return ret;
			touched = true;
			if (ldb_env_touch(env) < 0) {
				(void)ldb_env_grow(env); /* its error text */
				return ret;
			}
		}
	}
}

static int ldb_get(struct ldb_txn *txn, MDB_dbi dbi, const void *key,
		   size_t key_size, MDB_val *val_r)
{
	MDB_val k = { key_size, (void *)key };
	int rc = mdb_get(txn->txn, dbi, &k, val_r);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_get");
	return 1;
}

static int ldb_put(struct ldb_txn *txn, MDB_dbi dbi, const void *key,
		   size_t key_size, const void *data, size_t size)
{
	MDB_val k = { key_size, (void *)key };
	MDB_val v = { size, (void *)data };
	int rc = mdb_put(txn->txn, dbi, &k, &v, 0);

	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_put");
	return 0;
}

static int ldb_del(struct ldb_txn *txn, MDB_dbi dbi, const void *key,
		   size_t key_size)
{
	MDB_val k = { key_size, (void *)key };
	int rc = mdb_del(txn->txn, dbi, &k, NULL);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_del");
	return 1;
}

int ldb_meta_get_u32(struct ldb_txn *txn, const char *name, uint32_t *value_r)
{
	MDB_val val;
	int ret;

	ret = ldb_get(txn, txn->env->dbi_meta, name, strlen(name), &val);
	if (ret <= 0)
		return ret;
	if (val.mv_size != 4) {
		ldb_set_error(txn->env, "%s: meta %s has size %zu",
			      txn->env->path, name, val.mv_size);
		return LDB_ERR_CORRUPT;
	}
	*value_r = get_be32(val.mv_data);
	return 1;
}

/* ---- mailbox records ---- */

void ldb_mailbox_rec_encode(const struct ldb_mailbox_rec *rec,
			    uint8_t buf[LDB_MAILBOX_REC_SIZE])
{
	memset(buf, 0, LDB_MAILBOX_REC_SIZE);
	buf[0] = 1;
	put_be32(buf + 4, rec->uid_validity);
	put_be32(buf + 8, rec->next_uid);
	put_be32(buf + 12, rec->first_recent_uid);
	put_be64(buf + 16, rec->highest_modseq);
}

int ldb_mailbox_rec_decode(const void *data, size_t size,
			   struct ldb_mailbox_rec *rec_r)
{
	const uint8_t *p = data;

	memset(rec_r, 0, sizeof(*rec_r));
	if (size < LDB_MAILBOX_REC_SIZE || p[0] != 1)
		return LDB_ERR_CORRUPT;
	rec_r->uid_validity = get_be32(p + 4);
	rec_r->next_uid = get_be32(p + 8);
	rec_r->first_recent_uid = get_be32(p + 12);
	rec_r->highest_modseq = get_be64(p + 16);
	return 0;
}

int ldb_mailbox_get(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		    struct ldb_mailbox_rec *rec_r)
{
	MDB_val val;
	int ret;

	ret = ldb_get(txn, txn->env->dbi_mailbox, guid, LDB_GUID_SIZE, &val);
	if (ret <= 0)
		return ret;
	if (ldb_mailbox_rec_decode(val.mv_data, val.mv_size, rec_r) < 0) {
		ldb_set_error(txn->env, "%s: corrupted mailbox record",
			      txn->env->path);
		return LDB_ERR_CORRUPT;
	}
	return 1;
}

int ldb_mailbox_put(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		    const struct ldb_mailbox_rec *rec)
{
	uint8_t buf[LDB_MAILBOX_REC_SIZE];

	ldb_mailbox_rec_encode(rec, buf);
	return ldb_put(txn, txn->env->dbi_mailbox, guid, LDB_GUID_SIZE,
		       buf, sizeof(buf));
}

int ldb_mailbox_delete(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE])
{
	struct ldb_msg_iter *iter;
	struct ldb_msg_rec rec;
	uint32_t uid;
	int ret;

	/* release whatever records are left first */
	for (;;) {
		iter = ldb_msg_iter_init(txn, guid, 1);
		ret = ldb_msg_iter_next(iter, &uid, &rec);
		if (ldb_msg_iter_deinit(&iter) < 0 && ret >= 0)
			ret = LDB_ERR_INTERNAL;
		if (ret <= 0)
			break;
		if ((ret = ldb_msg_expunge(txn, guid, uid)) < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	if ((ret = ldb_mailbox_keywords_put(txn, guid, NULL)) < 0)
		return ret;
	return ldb_del(txn, txn->env->dbi_mailbox, guid, LDB_GUID_SIZE);
}

static void ldb_mailbox_keywords_key(const uint8_t guid[LDB_GUID_SIZE],
				     uint8_t key_r[LDB_GUID_SIZE + 1])
{
	memcpy(key_r, guid, LDB_GUID_SIZE);
	key_r[LDB_GUID_SIZE] = 'K';
}

int ldb_keyword_list_next(const uint8_t *data, size_t size, size_t *pos,
			  const char **name_r, size_t *len_r)
{
	size_t len;

	if (*pos + 2 > size)
		return 0;
	len = get_be16(data + *pos);
	if (len == 0 || *pos + 2 + len > size)
		return 0;
	*name_r = (const char *)data + *pos + 2;
	*len_r = len;
	*pos += 2 + len;
	return 1;
}

int ldb_mailbox_keywords_get(struct ldb_txn *txn,
			     const uint8_t guid[LDB_GUID_SIZE],
			     const uint8_t **data_r, size_t *size_r,
			     unsigned int *count_r)
{
	uint8_t key[LDB_GUID_SIZE + 1];
	MDB_val val;
	int ret;

	ldb_mailbox_keywords_key(guid, key);
	ret = ldb_get(txn, txn->env->dbi_mailbox, key, sizeof(key), &val);
	if (ret <= 0)
		return ret;
	if (val.mv_size < 2) {
		ldb_set_error(txn->env, "%s: corrupted keyword list",
			      txn->env->path);
		return LDB_ERR_CORRUPT;
	}
	*count_r = get_be16(val.mv_data);
	*data_r = (const uint8_t *)val.mv_data + 2;
	*size_r = val.mv_size - 2;
	return 1;
}

int ldb_mailbox_keywords_put(struct ldb_txn *txn,
			     const uint8_t guid[LDB_GUID_SIZE],
			     const char *const *keywords)
{
	uint8_t key[LDB_GUID_SIZE + 1], *buf, *p;
	size_t size = 2, len;
	unsigned int i, count = 0;
	int ret;

	ldb_mailbox_keywords_key(guid, key);
	if (keywords == NULL || keywords[0] == NULL) {
		ret = ldb_del(txn, txn->env->dbi_mailbox, key, sizeof(key));
		return ret < 0 ? ret : 0;
	}
	for (i = 0; keywords[i] != NULL; i++) {
		len = strlen(keywords[i]);
		if (len == 0 || len > 0xffff || i >= 0xffff) {
			ldb_set_error(txn->env, "invalid keyword list");
			return LDB_ERR_INTERNAL;
		}
		size += 2 + len;
		count++;
	}
	buf = malloc(size);
	if (buf == NULL)
		return LDB_ERR_NOMEM;
	put_be16(buf, count);
	p = buf + 2;
	for (i = 0; i < count; i++) {
		len = strlen(keywords[i]);
		put_be16(p, len);
		memcpy(p + 2, keywords[i], len);
		p += 2 + len;
	}
	ret = ldb_put(txn, txn->env->dbi_mailbox, key, sizeof(key), buf, size);
	free(buf);
	return ret;
}

/* ---- message records ---- */

void ldb_msg_key(const uint8_t guid[LDB_GUID_SIZE], uint32_t uid,
		 uint8_t key_r[LDB_MSG_KEY_SIZE])
{
	memcpy(key_r, guid, LDB_GUID_SIZE);
	put_be32(key_r + LDB_GUID_SIZE, uid);
}

size_t ldb_msg_rec_encoded_size(const struct ldb_msg_rec *rec,
				const char *const *keywords)
{
	/* 80 fixed bytes + u16 GUID length + u16 UIDL length */
	size_t size = LDB_MSG_REC_MIN_SIZE + rec->guid_len + rec->pop3_uidl_len;
	unsigned int i;

	for (i = 0; keywords != NULL && keywords[i] != NULL; i++)
		size += 2 + strlen(keywords[i]);
	return size;
}

void ldb_msg_rec_encode(const struct ldb_msg_rec *rec,
			const char *const *keywords, uint8_t *buf)
{
	uint8_t *p;
	unsigned int i, count = 0;
	size_t len;

	while (keywords != NULL && keywords[count] != NULL)
		count++;
	buf[0] = 1;
	buf[1] = rec->flags;
	put_be16(buf + 2, count);
	put_be32(buf + 4, rec->pop3_order);
	put_be64(buf + 8, (uint64_t)rec->received_date);
	put_be64(buf + 16, (uint64_t)rec->save_date);
	put_be64(buf + 24, rec->physical_size);
	put_be64(buf + 32, rec->virtual_size);
	put_be64(buf + 40, rec->modseq);
	memcpy(buf + 48, rec->body_hash, LDB_HASH_SIZE);
	p = buf + 80;
	put_be16(p, rec->guid_len); p += 2;
	if (rec->guid_len > 0)
		memcpy(p, rec->guid, rec->guid_len);
	p += rec->guid_len;
	put_be16(p, rec->pop3_uidl_len); p += 2;
	if (rec->pop3_uidl_len > 0)
		memcpy(p, rec->pop3_uidl, rec->pop3_uidl_len);
	p += rec->pop3_uidl_len;
	for (i = 0; i < count; i++) {
		len = strlen(keywords[i]);
		put_be16(p, len); p += 2;
		memcpy(p, keywords[i], len); p += len;
	}
}

int ldb_msg_rec_decode(const void *data, size_t size,
		       struct ldb_msg_rec *rec_r)
{
	const uint8_t *p = data, *end = p + size;
	unsigned int i;
	size_t len;

	memset(rec_r, 0, sizeof(*rec_r));
	if (size < LDB_MSG_REC_MIN_SIZE || p[0] != 1)
		return LDB_ERR_CORRUPT;
	rec_r->flags = p[1];
	rec_r->keyword_count = get_be16(p + 2);
	rec_r->pop3_order = get_be32(p + 4);
	rec_r->received_date = (int64_t)get_be64(p + 8);
	rec_r->save_date = (int64_t)get_be64(p + 16);
	rec_r->physical_size = get_be64(p + 24);
	rec_r->virtual_size = get_be64(p + 32);
	rec_r->modseq = get_be64(p + 40);
	memcpy(rec_r->body_hash, p + 48, LDB_HASH_SIZE);
	p += 80;

	if (end - p < 2)
		return LDB_ERR_CORRUPT;
	len = get_be16(p); p += 2;
	if ((size_t)(end - p) < len)
		return LDB_ERR_CORRUPT;
	rec_r->guid = (const char *)p;
	rec_r->guid_len = len;
	p += len;

	if (end - p < 2)
		return LDB_ERR_CORRUPT;
	len = get_be16(p); p += 2;
	if ((size_t)(end - p) < len)
		return LDB_ERR_CORRUPT;
	rec_r->pop3_uidl = (const char *)p;
	rec_r->pop3_uidl_len = len;
	p += len;

	rec_r->keywords = p;
	for (i = 0; i < rec_r->keyword_count; i++) {
		if (end - p < 2)
			return LDB_ERR_CORRUPT;
		len = get_be16(p); p += 2;
		if ((size_t)(end - p) < len || len == 0)
			return LDB_ERR_CORRUPT;
		p += len;
	}
	if (p != end)
		return LDB_ERR_CORRUPT;
	rec_r->keywords_size = p - rec_r->keywords;
	return 0;
}

int ldb_msg_rec_keyword_next(const struct ldb_msg_rec *rec, size_t *pos,
			     const char **name_r, size_t *len_r)
{
	const uint8_t *p;
	size_t len;

	if (*pos + 2 > rec->keywords_size)
		return 0;
	p = rec->keywords + *pos;
	len = get_be16(p);
	if (*pos + 2 + len > rec->keywords_size)
		return 0;
	*name_r = (const char *)p + 2;
	*len_r = len;
	*pos += 2 + len;
	return 1;
}

static int ldb_msg_decode_checked(struct ldb_txn *txn, const MDB_val *val,
				  uint32_t uid, struct ldb_msg_rec *rec_r)
{
	if (ldb_msg_rec_decode(val->mv_data, val->mv_size, rec_r) < 0) {
		ldb_set_error(txn->env, "%s: corrupted message record uid=%u",
			      txn->env->path, uid);
		return LDB_ERR_CORRUPT;
	}
	return 0;
}

int ldb_msg_get(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		uint32_t uid, struct ldb_msg_rec *rec_r)
{
	uint8_t key[LDB_MSG_KEY_SIZE];
	MDB_val val;
	int ret;

	ldb_msg_key(guid, uid, key);
	ret = ldb_get(txn, txn->env->dbi_msg, key, sizeof(key), &val);
	if (ret <= 0)
		return ret;
	if ((ret = ldb_msg_decode_checked(txn, &val, uid, rec_r)) < 0)
		return ret;
	return 1;
}

int ldb_msg_put(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		uint32_t uid, const struct ldb_msg_rec *rec,
		const char *const *keywords)
{
	uint8_t key[LDB_MSG_KEY_SIZE];
	MDB_val k = { sizeof(key), key }, v;
	unsigned int i;
	size_t len;
	int rc;

	if (rec->guid_len > 0xffff || rec->pop3_uidl_len > 0xffff) {
		ldb_set_error(txn->env, "message GUID or UIDL too long");
		return LDB_ERR_INTERNAL;
	}
	/* the decoder refuses empty keywords; lengths and count are u16 */
	for (i = 0; keywords != NULL && keywords[i] != NULL; i++) {
		len = strlen(keywords[i]);
		if (len == 0 || len > 0xffff || i >= 0xffff) {
			ldb_set_error(txn->env, "keyword empty, too long or "
				      "too many keywords");
			return LDB_ERR_INTERNAL;
		}
	}
	ldb_msg_key(guid, uid, key);
	v.mv_size = ldb_msg_rec_encoded_size(rec, keywords);
	v.mv_data = NULL;
	rc = mdb_put(txn->txn, txn->env->dbi_msg, &k, &v, MDB_RESERVE);
	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_put");
	ldb_msg_rec_encode(rec, keywords, v.mv_data);
	return 0;
}

int ldb_msg_update_flags(struct ldb_txn *txn,
			 const uint8_t guid[LDB_GUID_SIZE], uint32_t uid,
			 uint8_t flags, const char *const *keywords,
			 uint64_t modseq)
{
	struct ldb_msg_rec rec;
	uint8_t *copy;
	uint8_t key[LDB_MSG_KEY_SIZE];
	MDB_val val;
	int ret;

	ldb_msg_key(guid, uid, key);
	ret = ldb_get(txn, txn->env->dbi_msg, key, sizeof(key), &val);
	if (ret <= 0)
		return ret;
	/* the value points into the map, which the put below may change */
	copy = malloc(val.mv_size);
	if (copy == NULL)
		return LDB_ERR_NOMEM;
	memcpy(copy, val.mv_data, val.mv_size);
	if ((ret = ldb_msg_decode_checked(txn, &val, uid, &rec)) == 0) {
		ldb_msg_rec_decode(copy, val.mv_size, &rec);
		rec.flags = flags;
		if (modseq > rec.modseq)
			rec.modseq = modseq;
		ret = ldb_msg_put(txn, guid, uid, &rec, keywords);
	}
	free(copy);
	return ret < 0 ? ret : 1;
}

int ldb_msg_expunge(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		    uint32_t uid)
{
	struct ldb_msg_rec rec;
	uint8_t key[LDB_MSG_KEY_SIZE], hash[LDB_HASH_SIZE];
	bool have_body;
	MDB_val val;
	int ret;

	ldb_msg_key(guid, uid, key);
	ret = ldb_get(txn, txn->env->dbi_msg, key, sizeof(key), &val);
	if (ret <= 0)
		return ret;
	/* copy the hash out: val points into the map, which the delete
	   changes.  A corrupted record leaves its body to the purge. */
	have_body = ldb_msg_rec_decode(val.mv_data, val.mv_size, &rec) == 0;
	if (have_body)
		memcpy(hash, rec.body_hash, sizeof(hash));
	if ((ret = ldb_del(txn, txn->env->dbi_msg, key, sizeof(key))) < 0)
		return ret;
	if (have_body && (ret = ldb_body_unref(txn, hash)) < 0)
		return ret;
	return 1;
}

struct ldb_msg_iter *
ldb_msg_iter_init(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		  uint32_t first_uid)
{
	struct ldb_msg_iter *iter;
	int rc;

	iter = calloc(1, sizeof(*iter));
	if (iter == NULL)
		ldb_out_of_memory("ldb_msg_iter_init");
	iter->txn = txn;
	memcpy(iter->guid, guid, LDB_GUID_SIZE);
	ldb_msg_key(guid, first_uid, iter->key);
	rc = mdb_cursor_open(txn->txn, txn->env->dbi_msg, &iter->cursor);
	if (rc != 0) {
		iter->cursor = NULL;
		iter->error = ldb_txn_error(txn, rc, "mdb_cursor_open");
	}
	return iter;
}

int ldb_msg_iter_next(struct ldb_msg_iter *iter, uint32_t *uid_r,
		      struct ldb_msg_rec *rec_r)
{
	MDB_val k, v;
	int rc, ret;

	if (iter->error < 0)
		return iter->error;
	if (!iter->started) {
		k.mv_size = sizeof(iter->key);
		k.mv_data = iter->key;
		rc = mdb_cursor_get(iter->cursor, &k, &v, MDB_SET_RANGE);
		iter->started = true;
	} else {
		rc = mdb_cursor_get(iter->cursor, &k, &v, MDB_NEXT);
	}
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0) {
		iter->error = ldb_txn_error(iter->txn, rc, "mdb_cursor_get");
		return iter->error;
	}
	if (k.mv_size != LDB_MSG_KEY_SIZE ||
	    memcmp(k.mv_data, iter->guid, LDB_GUID_SIZE) != 0)
		return 0;
	*uid_r = get_be32((const uint8_t *)k.mv_data + LDB_GUID_SIZE);
	ret = ldb_msg_decode_checked(iter->txn, &v, *uid_r, rec_r);
	if (ret < 0) {
		iter->error = ret;
		return ret;
	}
	return 1;
}

int ldb_msg_iter_deinit(struct ldb_msg_iter **_iter)
{
	struct ldb_msg_iter *iter = *_iter;
	int ret;

	*_iter = NULL;
	ret = iter->error;
	if (iter->cursor != NULL)
		mdb_cursor_close(iter->cursor);
	free(iter);
	return ret < 0 ? ret : 0;
}

/* ---- bodies ---- */

struct ldb_sha256 *ldb_sha256_init(void)
{
	struct ldb_sha256 *ctx = calloc(1, sizeof(*ctx));

	if (ctx == NULL || (ctx->ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx->ctx, EVP_sha256(), NULL) != 1)
		ldb_out_of_memory("ldb_sha256_init");
	return ctx;
}

void ldb_sha256_update(struct ldb_sha256 *ctx, const void *data, size_t size)
{
	if (EVP_DigestUpdate(ctx->ctx, data, size) != 1)
		abort();
}

void ldb_sha256_final(struct ldb_sha256 **_ctx, uint8_t hash_r[LDB_HASH_SIZE])
{
	struct ldb_sha256 *ctx = *_ctx;
	unsigned int len = LDB_HASH_SIZE;

	*_ctx = NULL;
	if (EVP_DigestFinal_ex(ctx->ctx, hash_r, &len) != 1)
		abort();
	EVP_MD_CTX_free(ctx->ctx);
	free(ctx);
}

static void ldb_body_info_encode(const struct ldb_body_info *info,
				 uint8_t buf[LDB_BODY_REC_SIZE])
{
	put_be64(buf, info->refcount);
	put_be64(buf + 8, info->size);
	put_be32(buf + 16, info->chunk_size);
	put_be32(buf + 20, info->chunk_count);
}

int ldb_body_get_info(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		      struct ldb_body_info *info_r)
{
	const uint8_t *p;
	MDB_val val;
	int ret;

	ret = ldb_get(txn, txn->env->dbi_body, hash, LDB_HASH_SIZE, &val);
	if (ret <= 0)
		return ret;
	if (val.mv_size != LDB_BODY_REC_SIZE) {
		ldb_set_error(txn->env, "%s: corrupted body record",
			      txn->env->path);
		return LDB_ERR_CORRUPT;
	}
	p = val.mv_data;
	info_r->refcount = get_be64(p);
	info_r->size = get_be64(p + 8);
	info_r->chunk_size = get_be32(p + 16);
	info_r->chunk_count = get_be32(p + 20);
	return 1;
}

static int ldb_body_put_info(struct ldb_txn *txn,
			     const uint8_t hash[LDB_HASH_SIZE],
			     const struct ldb_body_info *info)
{
	uint8_t buf[LDB_BODY_REC_SIZE];

	ldb_body_info_encode(info, buf);
	return ldb_put(txn, txn->env->dbi_body, hash, LDB_HASH_SIZE,
		       buf, sizeof(buf));
}

int ldb_body_ref(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE])
{
	struct ldb_body_info info;
	int ret;

	if ((ret = ldb_body_get_info(txn, hash, &info)) <= 0)
		return ret;
	info.refcount++;
	if ((ret = ldb_body_put_info(txn, hash, &info)) < 0)
		return ret;
	return 1;
}

static int ldb_body_delete(struct ldb_txn *txn,
			   const uint8_t hash[LDB_HASH_SIZE],
			   uint32_t chunk_count)
{
	uint8_t key[LDB_CHUNK_KEY_SIZE];
	uint32_t i;
	int ret;

	memcpy(key, hash, LDB_HASH_SIZE);
	for (i = 0; i < chunk_count; i++) {
		put_be32(key + LDB_HASH_SIZE, i);
		if ((ret = ldb_del(txn, txn->env->dbi_chunk, key,
				   sizeof(key))) < 0)
			return ret;
	}
	return ldb_del(txn, txn->env->dbi_body, hash, LDB_HASH_SIZE);
}

int ldb_body_unref(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE])
{
	struct ldb_body_info info;
	int ret;

	if ((ret = ldb_body_get_info(txn, hash, &info)) <= 0)
		return ret;
	if (info.refcount <= 1) {
		if ((ret = ldb_body_delete(txn, hash, info.chunk_count)) < 0)
			return ret;
		return 1;
	}
	info.refcount--;
	if ((ret = ldb_body_put_info(txn, hash, &info)) < 0)
		return ret;
	return 1;
}

int ldb_body_create(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		    uint64_t size, uint32_t chunk_size)
{
	struct ldb_body_info info;

	if (chunk_size == 0) {
		ldb_set_error(txn->env, "body chunk size 0");
		return LDB_ERR_INTERNAL;
	}
	info.refcount = 1;
	info.size = size;
	info.chunk_size = chunk_size;
	info.chunk_count = size == 0 ? 0 :
		(uint32_t)((size + chunk_size - 1) / chunk_size);
	return ldb_body_put_info(txn, hash, &info);
}

int ldb_body_chunk_put(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		       uint32_t idx, const void *data, size_t size)
{
	uint8_t key[LDB_CHUNK_KEY_SIZE];

	memcpy(key, hash, LDB_HASH_SIZE);
	put_be32(key + LDB_HASH_SIZE, idx);
	return ldb_put(txn, txn->env->dbi_chunk, key, sizeof(key), data, size);
}

int ldb_body_chunk_get(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		       uint32_t idx, const void **data_r, size_t *size_r)
{
	uint8_t key[LDB_CHUNK_KEY_SIZE];
	MDB_val val;
	int ret;

	memcpy(key, hash, LDB_HASH_SIZE);
	put_be32(key + LDB_HASH_SIZE, idx);
	ret = ldb_get(txn, txn->env->dbi_chunk, key, sizeof(key), &val);
	if (ret <= 0)
		return ret;
	*data_r = val.mv_data;
	*size_r = val.mv_size;
	return 1;
}

int ldb_body_purge_unreferenced(struct ldb_txn *txn)
{
	MDB_cursor *cursor;
	MDB_val k, v;
	uint8_t hash[LDB_HASH_SIZE];
	int rc, ret, count = 0;
	bool again = true;

	/* restart the scan after each delete: deleting under a cursor that
	   then moves is legal in LMDB, but this keeps it obviously right */
	while (again) {
		again = false;
		rc = mdb_cursor_open(txn->txn, txn->env->dbi_body, &cursor);
		if (rc != 0)
			return ldb_txn_error(txn, rc, "mdb_cursor_open");
		rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
		while (rc == 0) {
			if (k.mv_size == LDB_HASH_SIZE &&
			    v.mv_size == LDB_BODY_REC_SIZE &&
			    get_be64(v.mv_data) == 0) {
				uint32_t chunks =
					get_be32((const uint8_t *)v.mv_data + 20);

				memcpy(hash, k.mv_data, sizeof(hash));
				mdb_cursor_close(cursor);
				if ((ret = ldb_body_delete(txn, hash, chunks)) < 0)
					return ret;
				count++;
				again = true;
				break;
			}
			rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
		}
		if (!again) {
			mdb_cursor_close(cursor);
			if (rc != MDB_NOTFOUND)
				return ldb_txn_error(txn, rc, "mdb_cursor_get");
		}
	}
	return count;
}

/* ---- generic key-value API ---- */

struct ldb_cursor {
	struct ldb_txn *txn;
	MDB_cursor *cursor;
};

/* Existing databases are opened in a read transaction, so that opening
   them never waits for (or blocks) a writer; only a missing one costs a
   write transaction. */
int ldb_dbi_open(struct ldb_env *env, const char *name, unsigned int *dbi_r)
{
	struct ldb_txn *txn;
	MDB_dbi dbi;
	int rc, ret;

	for (int write = 0; write < 2; write++) {
		if ((ret = ldb_txn_begin(env, write != 0, &txn)) < 0)
			return ret;
		rc = mdb_dbi_open(txn->txn, name, write ? MDB_CREATE : 0, &dbi);
		if (rc == MDB_NOTFOUND && !write) {
			ldb_txn_abort(&txn);
			continue;
		}
		if (rc != 0) {
			ret = ldb_txn_error(txn, rc, "mdb_dbi_open");
			ldb_txn_abort(&txn);
			return ret;
		}
		if ((ret = ldb_txn_commit(&txn)) < 0)
			return ret;
		*dbi_r = dbi;
		return 0;
	}
	ldb_set_error(env, "mdb_dbi_open(%s, %s) failed", env->path, name);
	return LDB_ERR_INTERNAL;
}

int ldb_kv_get(struct ldb_txn *txn, unsigned int dbi, const void *key,
	       size_t key_size, const void **data_r, size_t *size_r)
{
	MDB_val val;
	int ret;

	ret = ldb_get(txn, dbi, key, key_size, &val);
	if (ret <= 0)
		return ret;
	*data_r = val.mv_data;
	*size_r = val.mv_size;
	return 1;
}

int ldb_kv_put(struct ldb_txn *txn, unsigned int dbi, const void *key,
	       size_t key_size, const void *data, size_t size,
	       enum ldb_put_flags flags)
{
	MDB_val k = { key_size, (void *)key };
	MDB_val v = { size, (void *)data };
	unsigned int mflags = 0;
	int rc;

	if ((flags & LDB_PUT_NOOVERWRITE) != 0)
		mflags |= MDB_NOOVERWRITE;
	if ((flags & LDB_PUT_APPEND) != 0)
		mflags |= MDB_APPEND;
	rc = mdb_put(txn->txn, dbi, &k, &v, mflags);
	if (rc == MDB_KEYEXIST && (flags & LDB_PUT_NOOVERWRITE) != 0)
		return 0;
	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_put");
	return 1;
}

int ldb_kv_reserve(struct ldb_txn *txn, unsigned int dbi, const void *key,
		   size_t key_size, size_t size, void **data_r)
{
	MDB_val k = { key_size, (void *)key };
	MDB_val v = { size, NULL };
	int rc;

	rc = mdb_put(txn->txn, dbi, &k, &v, MDB_RESERVE);
	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_put");
	*data_r = v.mv_data;
	return 0;
}

int ldb_kv_del(struct ldb_txn *txn, unsigned int dbi, const void *key,
	       size_t key_size)
{
	return ldb_del(txn, dbi, key, key_size);
}

int ldb_kv_count(struct ldb_txn *txn, unsigned int dbi, uint64_t *count_r)
{
	MDB_stat st;
	int rc;

	rc = mdb_stat(txn->txn, dbi, &st);
	if (rc != 0)
		return ldb_txn_error(txn, rc, "mdb_stat");
	*count_r = st.ms_entries;
	return 0;
}

int ldb_cursor_open(struct ldb_txn *txn, unsigned int dbi,
		    struct ldb_cursor **cursor_r)
{
	struct ldb_cursor *cursor;
	int rc;

	*cursor_r = NULL;
	cursor = calloc(1, sizeof(*cursor));
	if (cursor == NULL) {
		ldb_set_error(txn->env, "out of memory");
		return LDB_ERR_NOMEM;
	}
	rc = mdb_cursor_open(txn->txn, dbi, &cursor->cursor);
	if (rc != 0) {
		free(cursor);
		return ldb_txn_error(txn, rc, "mdb_cursor_open");
	}
	cursor->txn = txn;
	*cursor_r = cursor;
	return 0;
}

int ldb_cursor_get(struct ldb_cursor *cursor, enum ldb_cursor_op op,
		   const void **key, size_t *key_size,
		   const void **data_r, size_t *size_r)
{
	static const MDB_cursor_op ops[] = {
		[LDB_CURSOR_FIRST] = MDB_FIRST,
		[LDB_CURSOR_LAST] = MDB_LAST,
		[LDB_CURSOR_NEXT] = MDB_NEXT,
		[LDB_CURSOR_PREV] = MDB_PREV,
		[LDB_CURSOR_SET_RANGE] = MDB_SET_RANGE,
		[LDB_CURSOR_SET] = MDB_SET_KEY,
		[LDB_CURSOR_CURRENT] = MDB_GET_CURRENT,
	};
	MDB_val k = { 0, NULL }, v = { 0, NULL };
	int rc;

	if (op == LDB_CURSOR_SET || op == LDB_CURSOR_SET_RANGE) {
		k.mv_data = (void *)*key;
		k.mv_size = *key_size;
	}
	rc = mdb_cursor_get(cursor->cursor, &k, &v, ops[op]);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return ldb_txn_error(cursor->txn, rc, "mdb_cursor_get");
	*key = k.mv_data;
	*key_size = k.mv_size;
	if (data_r != NULL)
		*data_r = v.mv_data;
	if (size_r != NULL)
		*size_r = v.mv_size;
	return 1;
}

int ldb_cursor_del(struct ldb_cursor *cursor)
{
	int rc = mdb_cursor_del(cursor->cursor, 0);

	if (rc != 0)
		return ldb_txn_error(cursor->txn, rc, "mdb_cursor_del");
	return 0;
}

void ldb_cursor_close(struct ldb_cursor **_cursor)
{
	struct ldb_cursor *cursor = *_cursor;

	*_cursor = NULL;
	if (cursor == NULL)
		return;
	mdb_cursor_close(cursor->cursor);
	free(cursor);
}

int ldb_meta_put_u32(struct ldb_txn *txn, const char *name, uint32_t value)
{
	uint8_t buf[4];

	put_be32(buf, value);
	return ldb_put(txn, txn->env->dbi_meta, name, strlen(name),
		       buf, sizeof(buf));
}

/* ---- maintenance: statistics, scans, copies, compaction ---- */

void ldb_env_set_map_grow_callback(struct ldb_env *env,
				   ldb_map_grow_callback_t *callback,
				   void *context)
{
	if (callback == NULL && env->grow_context != context)
		return;
	env->grow_callback = callback;
	env->grow_context = callback == NULL ? NULL : context;
}

/* Pages on the free list: each FREE_DBI value is an ID list whose first
   word is its length (what `mdb_stat -f` adds up). */
static int ldb_count_free_pages(struct ldb_txn *txn, uint64_t *count_r)
{
	MDB_cursor *cursor;
	MDB_cursor_op op = MDB_FIRST;
	MDB_val k, v;
	size_t n;
	int rc;

	*count_r = 0;
	if ((rc = mdb_cursor_open(txn->txn, 0, &cursor)) != 0)
		return ldb_txn_error(txn, rc, "mdb_cursor_open");
	while ((rc = mdb_cursor_get(cursor, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		if (v.mv_size >= sizeof(size_t)) {
			memcpy(&n, v.mv_data, sizeof(n));
			*count_r += n;
		}
	}
	mdb_cursor_close(cursor);
	if (rc != MDB_NOTFOUND)
		return ldb_txn_error(txn, rc, "mdb_cursor_get");
	return 0;
}

static int ldb_dbi_entries(struct ldb_txn *txn, MDB_dbi dbi,
			   uint64_t *count_r)
{
	MDB_stat st;
	int rc;

	if ((rc = mdb_stat(txn->txn, dbi, &st)) != 0)
		return ldb_txn_error(txn, rc, "mdb_stat");
	*count_r = st.ms_entries;
	return 0;
}

/* mdb_reader_list() callback: one line per reader slot in use ("pid
   thread txnid"), after a header line.  Count other processes' slots. */
static int ldb_reader_count_line(const char *msg, void *context)
{
	unsigned int *count = context;
	char *end;
	long pid = strtol(msg, &end, 10);

	if (end != msg && pid > 0 && pid != (long)getpid())
		(*count)++;
	return 0;
}

/* Processes other than this one that hold <path>/compact.lock, i.e. have
   the environment open, from /proc/locks (Linux). */
static unsigned int ldb_env_count_openers(const char *path)
{
	char lock_path[4096], line[256], dev_ino[64];
	unsigned int count = 0;
	struct stat st;
	long pid;
	FILE *f;

	snprintf(lock_path, sizeof(lock_path), "%s/"LDB_COMPACT_LOCK_NAME,
		 path);
	if (stat(lock_path, &st) < 0 || (f = fopen("/proc/locks", "r")) == NULL)
		return 0;
	snprintf(dev_ino, sizeof(dev_ino), "%02x:%02x:%llu",
		 major(st.st_dev), minor(st.st_dev),
		 (unsigned long long)st.st_ino);
	while (fgets(line, sizeof(line), f) != NULL) {
		char type[16], field[64];

		if (sscanf(line, "%*s %15s %*s %*s %ld %63s", type, &pid,
			   field) == 3 && strcmp(type, "FLOCK") == 0 &&
		    strcmp(field, dev_ino) == 0 && pid != (long)getpid())
			count++;
	}
	fclose(f);
	return count;
}

int ldb_env_get_stat(struct ldb_env *env, struct ldb_env_stat *st_r)
{
	struct ldb_txn *txn;
	MDB_envinfo info;
	MDB_stat st;
	uint32_t version = 0;
	int ret, rc;

	memset(st_r, 0, sizeof(*st_r));
	if ((ret = ldb_txn_begin(env, false, &txn)) < 0)
		return ret;
	if ((rc = mdb_env_info(env->env, &info)) != 0 ||
	    (rc = mdb_env_stat(env->env, &st)) != 0) {
		ldb_txn_abort(&txn);
		return ldb_map_error(env, rc, "mdb_env_info");
	}
	st_r->page_size = st.ms_psize;
	st_r->pages_total = (uint64_t)info.me_last_pgno + 1;
	st_r->map_size = info.me_mapsize;
	(void)mdb_reader_list(env->env, ldb_reader_count_line, &st_r->readers);
	st_r->processes = ldb_env_count_openers(env->path);
	st_r->max_readers = info.me_maxreaders;
	st_r->txn_id = info.me_last_txnid;
	if ((ret = ldb_meta_get_u32(txn, "schema_version", &version)) < 0 ||
	    (ret = ldb_count_free_pages(txn, &st_r->pages_free)) < 0 ||
	    (ret = ldb_dbi_entries(txn, env->dbi_mailbox,
				   &st_r->entries_mailbox)) < 0 ||
	    (ret = ldb_dbi_entries(txn, env->dbi_msg,
				   &st_r->entries_msg)) < 0 ||
	    (ret = ldb_dbi_entries(txn, env->dbi_body,
				   &st_r->entries_body)) < 0 ||
	    (ret = ldb_dbi_entries(txn, env->dbi_chunk,
				   &st_r->entries_chunk)) < 0) {
		ldb_txn_abort(&txn);
		return ret;
	}
	st_r->schema_version = version;
	ldb_txn_abort(&txn);
	return 0;
}

int ldb_msg_key_parse(const void *key, size_t size,
		      uint8_t guid_r[LDB_GUID_SIZE], uint32_t *uid_r)
{
	if (size != LDB_MSG_KEY_SIZE)
		return -1;
	memcpy(guid_r, key, LDB_GUID_SIZE);
	*uid_r = get_be32((const uint8_t *)key + LDB_GUID_SIZE);
	return 0;
}

int ldb_chunk_key_parse(const void *key, size_t size,
			uint8_t hash_r[LDB_HASH_SIZE], uint32_t *idx_r)
{
	if (size != LDB_CHUNK_KEY_SIZE)
		return -1;
	memcpy(hash_r, key, LDB_HASH_SIZE);
	*idx_r = get_be32((const uint8_t *)key + LDB_HASH_SIZE);
	return 0;
}

int ldb_body_info_decode(const void *data, size_t size,
			 struct ldb_body_info *info_r)
{
	const uint8_t *p = data;

	if (size != LDB_BODY_REC_SIZE)
		return -1;
	info_r->refcount = get_be64(p);
	info_r->size = get_be64(p + 8);
	info_r->chunk_size = get_be32(p + 16);
	info_r->chunk_count = get_be32(p + 20);
	return 0;
}

int ldb_body_set_refcount(struct ldb_txn *txn,
			  const uint8_t hash[LDB_HASH_SIZE],
			  uint64_t refcount)
{
	struct ldb_body_info info;
	int ret;

	if ((ret = ldb_body_get_info(txn, hash, &info)) <= 0)
		return ret;
	if (refcount == 0) {
		if ((ret = ldb_body_delete(txn, hash, info.chunk_count)) < 0)
			return ret;
		return 1;
	}
	info.refcount = refcount;
	if ((ret = ldb_body_put_info(txn, hash, &info)) < 0)
		return ret;
	return 1;
}

/* mdb_env_copy2() leaves the copy unsynced: make it durable, with the
   permissions of the original. */
static int ldb_copy_sync(struct ldb_env *env, const char *dest_dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/data.mdb", dest_dir);
	if (chmod(path, env->set.file_mode) < 0 ||
	    (fd = open(path, O_RDONLY)) == -1) {
		ldb_set_error(env, "open(%s) failed: %s", path,
			      strerror(errno));
		return LDB_ERR_INTERNAL;
	}
	if (fsync(fd) < 0) {
		ldb_set_error(env, "fsync(%s) failed: %s", path,
			      strerror(errno));
		close(fd);
		return errno == ENOSPC ? LDB_ERR_NOSPACE : LDB_ERR_INTERNAL;
	}
	close(fd);
	if ((fd = open(dest_dir, O_RDONLY | O_DIRECTORY)) != -1) {
		(void)fsync(fd);
		close(fd);
	}
	return 0;
}

int ldb_env_copy(struct ldb_env *env, const char *dest_dir, bool compact)
{
	int rc;

	rc = mdb_env_copy2(env->env, dest_dir, compact ? MDB_CP_COMPACT : 0);
	if (rc != 0)
		return ldb_map_error(env, rc, "mdb_env_copy2");
	return ldb_copy_sync(env, dest_dir);
}

static bool ldb_env_is_open_here(const char *path)
{
	struct ldb_env *env;
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	for (env = ldb_envs; env != NULL; env = env->next) {
		if (env->dev == st.st_dev && env->ino == st.st_ino)
			return true;
	}
	return false;
}

static void ldb_rmdir_tmp(const char *tmp_dir)
{
	char path[4096 + 16];

	snprintf(path, sizeof(path), "%s/data.mdb", tmp_dir);
	(void)unlink(path);
	snprintf(path, sizeof(path), "%s/lock.mdb", tmp_dir);
	(void)unlink(path);
	(void)rmdir(tmp_dir);
}

/* The copy and the rename, under the exclusive compact lock.  env is a
   private handle that bypasses the process table (whose openers would
   want the shared lock we are holding exclusively). */
static int ldb_env_compact_locked(struct ldb_env *env,
				  struct ldb_compact_result *result_r)
{
	char data_path[4096], tmp_dir[4096], tmp_path[4096];
	struct stat st;
	int rc, ret, fd;

	snprintf(data_path, sizeof(data_path), "%s/data.mdb", env->path);
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/compact.tmp", env->path);
	snprintf(tmp_path, sizeof(tmp_path), "%s/compact.tmp/data.mdb",
		 env->path);
	if (stat(data_path, &st) < 0) {
		ldb_set_error(env, "stat(%s) failed: %s", data_path,
			      strerror(errno));
		return LDB_ERR_INTERNAL;
	}
	result_r->size_before = st.st_size;
	env->set.file_mode = st.st_mode & 0777;

	if ((rc = mdb_env_create(&env->env)) != 0) {
		env->env = NULL;
		return ldb_map_error(env, rc, "mdb_env_create");
	}
	mdb_env_set_maxdbs(env->env, LDB_MAX_DBS);
	/* the map must cover the file; mdb_env_open() raises it to the
	   size recorded in the file if that is larger */
	if ((rc = mdb_env_set_mapsize(env->env, (size_t)st.st_size)) != 0 ||
	    (rc = mdb_env_open(env->env, env->path, MDB_NOTLS | MDB_RDONLY,
			       env->set.file_mode)) != 0)
		return ldb_map_error(env, rc, "mdb_env_open");

	/* a compact.tmp left by an interrupted run is garbage */
	ldb_rmdir_tmp(tmp_dir);
	if (mkdir(tmp_dir, 0700) < 0) {
		ldb_set_error(env, "mkdir(%s) failed: %s", tmp_dir,
			      strerror(errno));
		return LDB_ERR_INTERNAL;
	}
	if ((ret = ldb_env_copy(env, tmp_dir, true)) < 0) {
		ldb_rmdir_tmp(tmp_dir);
		return ret;
	}
	mdb_env_close(env->env);
	env->env = NULL;
	if (stat(tmp_path, &st) == 0)
		result_r->size_after = st.st_size;
	if (rename(tmp_path, data_path) < 0) {
		ldb_set_error(env, "rename(%s, %s) failed: %s", tmp_path,
			      data_path, strerror(errno));
		ldb_rmdir_tmp(tmp_dir);
		return LDB_ERR_INTERNAL;
	}
	ldb_rmdir_tmp(tmp_dir);
	if ((fd = open(env->path, O_RDONLY | O_DIRECTORY)) != -1) {
		(void)fsync(fd);
		close(fd);
	}
	return 0;
}

int ldb_env_compact(const char *path, const struct ldb_settings *set,
		    unsigned int wait_msecs,
		    struct ldb_compact_result *result_r,
		    const char **error_r)
{
	static char errbuf[600];
	struct ldb_env env;
	int ret;

	memset(result_r, 0, sizeof(*result_r));
	memset(&env, 0, sizeof(env));
	env.path = (char *)path;
	env.set = *set;
	env.lock_fd = -1;
	*error_r = errbuf;
	if (ldb_env_is_open_here(path)) {
		snprintf(errbuf, sizeof(errbuf), "LMDB environment %s is open "
			 "in this process", path);
		return LDB_ERR_LOCKED;
	}
	env.lock_fd = ldb_lock_file_open(path, set->file_mode);
	if (env.lock_fd == -1) {
		snprintf(errbuf, sizeof(errbuf), "open(%s/%s) failed: %s",
			 path, LDB_COMPACT_LOCK_NAME, strerror(errno));
		return LDB_ERR_INTERNAL;
	}
	ret = ldb_flock_wait(env.lock_fd, LOCK_EX, wait_msecs);
	if (ret == LDB_ERR_LOCKED) {
		snprintf(errbuf, sizeof(errbuf), "LMDB environment %s is in "
			 "use by another process (waited %u ms for %s)",
			 path, wait_msecs, LDB_COMPACT_LOCK_NAME);
	} else if (ret < 0) {
		snprintf(errbuf, sizeof(errbuf), "flock(%s/%s) failed: %s",
			 path, LDB_COMPACT_LOCK_NAME, strerror(errno));
		ret = LDB_ERR_INTERNAL;
	} else {
		ret = ldb_env_compact_locked(&env, result_r);
		if (env.env != NULL)
			mdb_env_close(env.env);
		if (ret < 0)
			snprintf(errbuf, sizeof(errbuf), "%s", env.error);
	}
	close(env.lock_fd);
	return ret;
}
