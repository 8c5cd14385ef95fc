#ifndef LMDB_DB_H
#define LMDB_DB_H

/*
 * ldb: the LMDB layer of dovecot-lmdb.
 *
 * This is the only interface to LMDB.  plugin/lmdb-db.c is the only file
 * that includes <lmdb.h>.  The layer uses no Dovecot headers, so that the
 * cmocka unit tests link it with liblmdb and libcrypto alone.
 *
 * SCHEMA (version LDB_SCHEMA_VERSION)
 * ===================================
 * One environment per user mail root: <root>/mail.lmdb/{data,lock}.mdb.
 * All integers are big-endian, so keys sort the way scans need them.
 * Named databases:
 *
 *   "meta"     key: ASCII name                 value: see below
 *              "schema_version" -> u32 version of this schema.  A database
 *              written by a newer schema is refused, never rewritten.
 *              "chunk_size"     -> u32 body chunk size it was created with.
 *
 *   "mailbox"  key: mailbox GUID (16 bytes)     value (24 bytes):
 *                0  u8   record version (1)
 *                1  u8[3] zero
 *                4  u32  UIDVALIDITY
 *                8  u32  next UID: every UID below it was handed out
 *               12  u32  first recent UID mirrored from the index
 *                        (0 = unknown)
 *               16  u64  highest modseq mirrored from the index
 *              Mailboxes are keyed by GUID, never by name: RENAME touches
 *              nothing here.
 *              key: mailbox GUID (16) + 'K' (17 bytes)   value:
 *                u16 count N, then N times: u16 length L, L bytes
 *              The mailbox's keyword names in the index's order, so that
 *              a rebuilt index lists keywords in the same order.
 *
 *   "msg"      key: mailbox GUID (16) + UID (u32)   (20 bytes)
 *              value (>= 84 bytes):
 *                0  u8   record version (1)
 *                1  u8   system flags (\Answered..\Draft, Dovecot's bits)
 *                2  u16  keyword count K
 *                4  u32  POP3 order (0 = none)
 *                8  i64  received date (time_t)
 *               16  i64  save date (time_t)
 *               24  u64  physical size (bytes stored)
 *               32  u64  virtual size (CRLF size)
 *               40  u64  modseq mirrored from the index (0 = unknown,
 *                        meaning "not above the mailbox's highest modseq")
 *               48  u8[32] body reference: SHA-256 of the stored bytes
 *               80  u16  GUID length G, then G bytes (the message GUID as a
 *                        string; never hashed to 128 bits)
 *                   u16  POP3 UIDL length U, then U bytes
 *                   K times: u16 length L, then L bytes of keyword name
 *              Keywords are stored by name, because the index's keyword
 *              numbers are private to one index file.
 *
 *   "body"     key: SHA-256 of the stored bytes (32)   value (24 bytes):
 *                0  u64  reference count (number of "msg" records)
 *                8  u64  size in bytes
 *               16  u32  chunk size used
 *               20  u32  number of chunks
 *              A body whose count reaches 0 is deleted with its chunks in
 *              the same transaction.  COPY and MOVE add a reference and
 *              never copy bytes; identical deliveries are stored once.
 *
 *   "chunk"    key: SHA-256 (32) + chunk index (u32)   value: the bytes
 *              Bodies are cut into chunks (LDB_CHUNK_SIZE) so that large
 *              messages never need one huge contiguous overflow run.
 *
 * INVARIANTS (kept by the storage code, checked by the crash tests)
 *  - A "msg" record and its body are written in one transaction, which
 *    commits before the client gets OK.
 *  - "mailbox".next_uid is raised in that same transaction.
 *  - An expunge deletes the "msg" record and releases the body in one
 *    transaction, before the index commits the expunge.
 *
 * MAP SIZE
 * The map starts at ldb_settings.initial_map_size.  MDB_MAP_FULL aborts the
 * transaction, doubles the map up to max_map_size and runs the whole
 * transaction again (ldb_write()).  MDB_MAP_RESIZED is adopted at
 * transaction begin.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define LDB_SCHEMA_VERSION 1
#define LDB_DIR_NAME "mail.lmdb"
#define LDB_GUID_SIZE 16
#define LDB_HASH_SIZE 32
#define LDB_CHUNK_SIZE (64 * 1024)
#define LDB_MAILBOX_REC_SIZE 24
#define LDB_MSG_REC_MIN_SIZE 84
#define LDB_BODY_REC_SIZE 24
#define LDB_MSG_KEY_SIZE (LDB_GUID_SIZE + 4)
#define LDB_CHUNK_KEY_SIZE (LDB_HASH_SIZE + 4)

/* Return values: >= 0 success (1 = found, 0 = not found where it applies),
   negative = error. */
enum ldb_error {
	LDB_ERR_INTERNAL = -1,	/* see ldb_env_last_error() */
	LDB_ERR_MAP_FULL = -2,	/* map is at max_map_size */
	LDB_ERR_NOSPACE = -3,	/* disk full (ENOSPC, or a short write) */
	LDB_ERR_CORRUPT = -4,	/* a record failed to decode */
	LDB_ERR_NOMEM = -5,	/* mmap failed: address space (vsz_limit) */
	LDB_ERR_VERSION = -6,	/* database written by a newer schema */
	LDB_ERR_QUOTA = -7,	/* filesystem quota (EDQUOT) */
	LDB_ERR_LOCKED = -8,	/* compact.lock busy: try again later */
};

struct ldb_settings {
	size_t initial_map_size;
	size_t max_map_size;
	/* skip fsync at commit (mail_fsync=never) */
	bool nosync;
	/* refuse NFS/CIFS; turned off only by unit tests */
	bool allow_network_fs;
	/* permissions of created files */
	unsigned int file_mode;
	/* how long ldb_env_open() waits for a running compaction
	   (compact.lock) before failing with LDB_ERR_LOCKED */
	unsigned int lock_timeout_msecs;
};

struct ldb_env;
struct ldb_txn;
struct ldb_msg_iter;

struct ldb_mailbox_rec {
	uint32_t uid_validity;
	uint32_t next_uid;
	uint64_t highest_modseq;
	uint32_t first_recent_uid;
};

struct ldb_msg_rec {
	uint8_t flags;
	uint32_t pop3_order;
	int64_t received_date;
	int64_t save_date;
	uint64_t physical_size;
	uint64_t virtual_size;
	uint64_t modseq;
	uint8_t body_hash[LDB_HASH_SIZE];
	/* not NUL-terminated; point into the decoded buffer */
	const char *guid;
	size_t guid_len;
	const char *pop3_uidl;
	size_t pop3_uidl_len;
	unsigned int keyword_count;
	const uint8_t *keywords;	/* encoded keyword list */
	size_t keywords_size;
};

struct ldb_body_info {
	uint64_t refcount;
	uint64_t size;
	uint32_t chunk_size;
	uint32_t chunk_count;
};

void ldb_settings_default(struct ldb_settings *set_r);

/* Open the environment in directory path (created if missing), or return
   the one this process already has open for it (refcounted, so there is
   one MDB_env per path per process). */
int ldb_env_open(const char *path, const struct ldb_settings *set,
		 struct ldb_env **env_r, const char **error_r);
void ldb_env_unref(struct ldb_env **env);
/* Last error message of this environment (static buffer of the env). */
const char *ldb_env_last_error(struct ldb_env *env);
size_t ldb_env_map_size(struct ldb_env *env);
const char *ldb_env_path(struct ldb_env *env);
/* Size of data.mdb in bytes, or -1 */
long long ldb_env_file_size(struct ldb_env *env);
/* Check that path is not on a network filesystem.  Returns 0 if OK. */
int ldb_path_check_local(const char *path, const char **error_r);

int ldb_txn_begin(struct ldb_env *env, bool write, struct ldb_txn **txn_r);
int ldb_txn_commit(struct ldb_txn **txn);
void ldb_txn_abort(struct ldb_txn **txn);

/* Run fn inside a write transaction and commit it.  On a full map the
   transaction is aborted, the map grown and fn run again from scratch, so
   fn must compute everything from the transaction and its context.  fn
   returns < 0 to abort (that value is returned). */
typedef int ldb_write_fn_t(struct ldb_txn *txn, void *context);
int ldb_write(struct ldb_env *env, ldb_write_fn_t *fn, void *context);

/* meta */
int ldb_meta_get_u32(struct ldb_txn *txn, const char *name, uint32_t *value_r);

/* mailbox records: 1 found, 0 not found, < 0 error */
int ldb_mailbox_get(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		    struct ldb_mailbox_rec *rec_r);
int ldb_mailbox_put(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		    const struct ldb_mailbox_rec *rec);
int ldb_mailbox_delete(struct ldb_txn *txn,
		       const uint8_t guid[LDB_GUID_SIZE]);
/* The mailbox's keyword names in index order.  get: 1 found (*data_r is
   valid until the transaction ends; walk it with
   ldb_keyword_list_next()), 0 none. */
int ldb_mailbox_keywords_get(struct ldb_txn *txn,
			     const uint8_t guid[LDB_GUID_SIZE],
			     const uint8_t **data_r, size_t *size_r,
			     unsigned int *count_r);
int ldb_mailbox_keywords_put(struct ldb_txn *txn,
			     const uint8_t guid[LDB_GUID_SIZE],
			     const char *const *keywords);
int ldb_keyword_list_next(const uint8_t *data, size_t size, size_t *pos,
			  const char **name_r, size_t *len_r);

/* message records */
int ldb_msg_get(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		uint32_t uid, struct ldb_msg_rec *rec_r);
/* keywords: NULL-terminated array or NULL */
int ldb_msg_put(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		uint32_t uid, const struct ldb_msg_rec *rec,
		const char *const *keywords);
/* Rewrite the mirrored flags, keywords and modseq of an existing record.
   Returns 1 if updated, 0 if no such record. */
int ldb_msg_update_flags(struct ldb_txn *txn,
			 const uint8_t guid[LDB_GUID_SIZE], uint32_t uid,
			 uint8_t flags, const char *const *keywords,
			 uint64_t modseq);
/* Delete the record and release its body reference.
   Returns 1 if deleted, 0 if there was no such record. */
int ldb_msg_expunge(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		    uint32_t uid);

/* Iterate the records of one mailbox with uid >= first_uid, in UID order.
   The record points into the map and is valid until the next call. */
struct ldb_msg_iter *
ldb_msg_iter_init(struct ldb_txn *txn, const uint8_t guid[LDB_GUID_SIZE],
		  uint32_t first_uid);
/* 1 = got one, 0 = end, < 0 error */
int ldb_msg_iter_next(struct ldb_msg_iter *iter, uint32_t *uid_r,
		      struct ldb_msg_rec *rec_r);
int ldb_msg_iter_deinit(struct ldb_msg_iter **iter);

/* record codec (pure functions, exposed for the unit tests) */
size_t ldb_msg_rec_encoded_size(const struct ldb_msg_rec *rec,
				const char *const *keywords);
void ldb_msg_rec_encode(const struct ldb_msg_rec *rec,
			const char *const *keywords, uint8_t *buf);
int ldb_msg_rec_decode(const void *data, size_t size,
		       struct ldb_msg_rec *rec_r);
/* Walk rec->keywords: *pos starts at 0.  Returns 1 and the next keyword,
   or 0 at the end. */
int ldb_msg_rec_keyword_next(const struct ldb_msg_rec *rec, size_t *pos,
			     const char **name_r, size_t *len_r);
void ldb_mailbox_rec_encode(const struct ldb_mailbox_rec *rec,
			    uint8_t buf[LDB_MAILBOX_REC_SIZE]);
int ldb_mailbox_rec_decode(const void *data, size_t size,
			   struct ldb_mailbox_rec *rec_r);
void ldb_msg_key(const uint8_t guid[LDB_GUID_SIZE], uint32_t uid,
		 uint8_t key_r[LDB_MSG_KEY_SIZE]);

/* bodies */
struct ldb_sha256;
struct ldb_sha256 *ldb_sha256_init(void);
void ldb_sha256_update(struct ldb_sha256 *ctx, const void *data, size_t size);
void ldb_sha256_final(struct ldb_sha256 **ctx,
		      uint8_t hash_r[LDB_HASH_SIZE]);

/* 1 = found, 0 = no such body */
int ldb_body_get_info(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		      struct ldb_body_info *info_r);
/* Add one reference to an existing body.  1 = done, 0 = no such body. */
int ldb_body_ref(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE]);
/* Drop one reference; the body and its chunks go when it reaches 0.
   1 = done, 0 = no such body. */
int ldb_body_unref(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE]);
/* Create a new body with reference count 1.  The caller then writes
   chunk_count chunks of chunk_size (the last may be shorter). */
int ldb_body_create(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		    uint64_t size, uint32_t chunk_size);
int ldb_body_chunk_put(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		       uint32_t idx, const void *data, size_t size);
/* data is valid until the transaction ends.  1 found, 0 missing. */
int ldb_body_chunk_get(struct ldb_txn *txn, const uint8_t hash[LDB_HASH_SIZE],
		       uint32_t idx, const void **data_r, size_t *size_r);
/* Delete bodies whose reference count is 0 (left by a bug or an older
   version); returns how many were removed, or < 0. */
int ldb_body_purge_unreferenced(struct ldb_txn *txn);


/* ---- generic key-value API ----
   For users of the layer that keep their own schema (the FTS backend, see
   plugin/fts-lmdb/fts-lmdb-store.h).  Keys and values are opaque bytes;
   data returned by get and cursor calls points into the map and is valid
   until the transaction ends or the next write in it. */

enum ldb_put_flags {
	/* fail with 0 instead of overwriting an existing key */
	LDB_PUT_NOOVERWRITE = 0x01,
	/* the key sorts after every key in the database (bulk loads) */
	LDB_PUT_APPEND = 0x02,
};

enum ldb_cursor_op {
	LDB_CURSOR_FIRST,
	LDB_CURSOR_LAST,
	LDB_CURSOR_NEXT,
	LDB_CURSOR_PREV,
	/* position at the first key >= the given key */
	LDB_CURSOR_SET_RANGE,
	/* position at exactly the given key */
	LDB_CURSOR_SET,
	LDB_CURSOR_CURRENT,
};

struct ldb_cursor;

/* Open the named database, creating it if missing, and return its handle.
   The handle is valid for as long as the environment stays open.  Call it
   with no transaction of this environment active in the process.  The
   environment must have been opened with room for it (LDB_MAX_DBS). */
int ldb_dbi_open(struct ldb_env *env, const char *name, unsigned int *dbi_r);

/* 1 = found, 0 = not found, < 0 error */
int ldb_kv_get(struct ldb_txn *txn, unsigned int dbi, const void *key,
	       size_t key_size, const void **data_r, size_t *size_r);
/* Returns 1 = stored, 0 = key exists (LDB_PUT_NOOVERWRITE), < 0 error. */
int ldb_kv_put(struct ldb_txn *txn, unsigned int dbi, const void *key,
	       size_t key_size, const void *data, size_t size,
	       enum ldb_put_flags flags);
/* Reserve size bytes for the value of key; the caller fills *data_r before
   the next write in this transaction.  0 = ok, < 0 error. */
int ldb_kv_reserve(struct ldb_txn *txn, unsigned int dbi, const void *key,
		   size_t key_size, size_t size, void **data_r);
/* 1 = deleted, 0 = not found, < 0 error */
int ldb_kv_del(struct ldb_txn *txn, unsigned int dbi, const void *key,
	       size_t key_size);
/* Number of entries in the database.  0 = ok, < 0 error. */
int ldb_kv_count(struct ldb_txn *txn, unsigned int dbi, uint64_t *count_r);

int ldb_cursor_open(struct ldb_txn *txn, unsigned int dbi,
		    struct ldb_cursor **cursor_r);
/* Move the cursor.  For SET and SET_RANGE, *key and *key_size give the key
   to look for.  On 1 (found), *key and *key_size, *data_r and *size_r point to
   the entry.  0 = no such entry (end of database), < 0 error.  data_r and
   size_r may be NULL. */
int ldb_cursor_get(struct ldb_cursor *cursor, enum ldb_cursor_op op,
		   const void **key, size_t *key_size,
		   const void **data_r, size_t *size_r);
/* Delete the entry at the cursor.  0 = ok, < 0 error. */
int ldb_cursor_del(struct ldb_cursor *cursor);
void ldb_cursor_close(struct ldb_cursor **cursor);

int ldb_meta_put_u32(struct ldb_txn *txn, const char *name, uint32_t value);

/* ---- maintenance: statistics, whole-database scans, compaction ----
   Used by the doveadm commands (doveadm lmdb stats/check/compact/backup).

   COMPACT LOCK
   Every ldb_env_open() takes a shared flock() on <env>/compact.lock and
   keeps it until the environment is closed in that process.  Compaction
   takes it exclusively, so it runs only while no process has the
   environment open, and processes that open it meanwhile wait (up to
   ldb_settings.lock_timeout_msecs) and then map the new file. */

#define LDB_COMPACT_LOCK_NAME "compact.lock"
#define LDB_DEFAULT_LOCK_TIMEOUT_MSECS 30000

/* names of the core databases, for ldb_dbi_open() and the cursor API */
#define LDB_DB_META "meta"
#define LDB_DB_MAILBOX "mailbox"
#define LDB_DB_MSG "msg"
#define LDB_DB_BODY "body"
#define LDB_DB_CHUNK "chunk"

struct ldb_env_stat {
	unsigned int page_size;
	/* pages in the file up to the high-water mark (last used + 1) */
	uint64_t pages_total;
	/* pages on the free list: reusable, returned to the filesystem
	   only by a compaction */
	uint64_t pages_free;
	size_t map_size;
	/* reader slots held by other processes (each process with the
	   environment open holds one while it reads), and the limit */
	unsigned int readers, max_readers;
	/* other processes that have the environment open (they hold
	   compact.lock shared; from /proc/locks) */
	unsigned int processes;
	/* the last committed transaction */
	uint64_t txn_id;
	uint32_t schema_version;
	uint64_t entries_mailbox, entries_msg, entries_body, entries_chunk;
};

/* Fill st_r (one short read transaction).  0 = ok, < 0 error. */
int ldb_env_get_stat(struct ldb_env *env, struct ldb_env_stat *st_r);

/* Called after the map of env was resized: grown because it was full
   (adopted = false), or adopted from another process that grew it.  Lets
   the caller log it; the layer itself never logs. */
typedef void ldb_map_grow_callback_t(void *context, const char *path,
				     size_t old_size, size_t new_size,
				     bool adopted);
/* Set (or with callback NULL, clear) the callback of env.  Clearing with a
   context other than the current one does nothing, so that each user of a
   shared environment removes only its own callback. */
void ldb_env_set_map_grow_callback(struct ldb_env *env,
				   ldb_map_grow_callback_t *callback,
				   void *context);

/* Decoders for scanning the core databases with the cursor API.
   0 = ok, -1 = malformed. */
int ldb_msg_key_parse(const void *key, size_t size,
		      uint8_t guid_r[LDB_GUID_SIZE], uint32_t *uid_r);
int ldb_chunk_key_parse(const void *key, size_t size,
			uint8_t hash_r[LDB_HASH_SIZE], uint32_t *idx_r);
int ldb_body_info_decode(const void *data, size_t size,
			 struct ldb_body_info *info_r);

/* Set a body's reference count (doveadm lmdb check --repair).  0 deletes
   the body and its chunks.  1 = done, 0 = no such body. */
int ldb_body_set_refcount(struct ldb_txn *txn,
			  const uint8_t hash[LDB_HASH_SIZE],
			  uint64_t refcount);

/* A consistent copy of the open environment into the existing, empty
   directory dest_dir (dest_dir/data.mdb), taken in one read transaction
   while other processes keep reading and writing.  compact leaves the
   free pages out.  The copy is fsynced.  0 = ok, < 0 error. */
int ldb_env_copy(struct ldb_env *env, const char *dest_dir, bool compact);

struct ldb_compact_result {
	long long size_before, size_after;
};

/* Compact the environment in directory path in place: wait up to
   wait_msecs for the exclusive compact lock, copy the environment with
   free pages left out into <path>/compact.tmp/, fsync it, and rename it
   over data.mdb.  LDB_ERR_LOCKED if a process (this one included) has the
   environment open; *error_r then says so.  0 = compacted. */
int ldb_env_compact(const char *path, const struct ldb_settings *set,
		    unsigned int wait_msecs,
		    struct ldb_compact_result *result_r,
		    const char **error_r);

#endif
