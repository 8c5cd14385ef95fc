/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* doveadm lmdb check [--repair]

   1. Each mailbox's index against its LMDB records, under the mailbox's
      index sync lock (every LMDB write of a mailbox happens under it, so
      the comparison is exact):
        lost          the index has a UID that LMDB lacks (reads as
                      expunged; the next sync drops it)
        pending       LMDB has a record at or above the index's next UID
                      (a crash between the two commits of a save; the next
                      sync adds it)
        not_in_index  LMDB has a record below the index's next UID that
                      the index lacks
        uidvalidity   LMDB and the index disagree on UIDVALIDITY
   2. The whole environment, in one read transaction: every record's body
      exists (missing_body), every body's reference count equals the
      number of records that reference it (refcount, orphan_body), every
      chunk belongs to a body (orphan_chunk) and every body has all its
      chunks with the right sizes (bad_chunks), and every record belongs to
      a mailbox of the user (orphan_records, unknown_mailbox).
   3. The SHA-256 of every body, recomputed from its chunks, one short read
      transaction per body (hash_mismatch).

   --repair fixes what can be fixed without losing anything: reference
   counts, unreferenced bodies and orphan chunks (in one write transaction
   that recounts from scratch), and the mailboxes of part 1 by a
   force-resync, which rebuilds their index from LMDB.  It never deletes a
   message record. */

#include "lib.h"
#include "array.h"
#include "hex-binary.h"
#include "time-util.h"
#include "mail-index.h"
#include "doveadm-print.h"
#include "doveadm-lmdb.h"

enum check_problem {
	CHECK_LOST,
	CHECK_PENDING,
	CHECK_NOT_IN_INDEX,
	CHECK_UIDVALIDITY,
	CHECK_OPEN_FAILED,
	CHECK_CORRUPT_RECORD,
	CHECK_MISSING_BODY,
	CHECK_REFCOUNT,
	CHECK_ORPHAN_BODY,
	CHECK_ORPHAN_CHUNK,
	CHECK_BAD_CHUNKS,
	CHECK_HASH_MISMATCH,
	CHECK_ORPHAN_RECORDS,
	CHECK_UNKNOWN_MAILBOX,
};

static const char *const check_problem_names[] = {
	"lost", "pending", "not_in_index", "uidvalidity", "open_failed",
	"corrupt_record", "missing_body", "refcount", "orphan_body",
	"orphan_chunk", "bad_chunks", "hash_mismatch", "orphan_records",
	"unknown_mailbox",
};

struct check_report {
	enum check_problem problem;
	const char *mailbox, *object, *detail;
	bool repaired;
};

/* a message record's body reference, for counting per body */
struct check_ref {
	uint8_t hash[LDB_HASH_SIZE];
	uint8_t guid[LDB_GUID_SIZE];
	uint32_t uid;
};
ARRAY_DEFINE_TYPE(check_ref, struct check_ref);

struct check_body {
	uint8_t hash[LDB_HASH_SIZE];
	struct ldb_body_info info;
	/* chunks all present with the right sizes */
	bool complete;
};

struct lmdb_check_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	bool repair;

	/* per root */
	pool_t pool;
	const struct doveadm_lmdb_root *root;
	struct ldb_env *env;
	ARRAY_TYPE(doveadm_lmdb_mailbox) mailboxes;
	ARRAY(struct check_report) reports;
	ARRAY(struct check_ref) refs;
	ARRAY(struct check_body) bodies;
	unsigned int dbi_mailbox, dbi_msg, dbi_body, dbi_chunk;
	uint64_t messages;
	unsigned int repaired_bodies, repaired_chunks;
	/* mailboxes that need a force-resync */
	ARRAY(const struct doveadm_lmdb_mailbox *) resync;
};

static void check_report(struct lmdb_check_cmd_context *ctx,
			 enum check_problem problem, const char *mailbox,
			 const char *object, const char *detail)
{
	struct check_report *r = array_append_space(&ctx->reports);

	r->problem = problem;
	r->mailbox = p_strdup(ctx->pool, mailbox);
	r->object = p_strdup(ctx->pool, object);
	r->detail = p_strdup(ctx->pool, detail);
}

static const char *hash_hex(const uint8_t hash[LDB_HASH_SIZE])
{
	return binary_to_hex(hash, LDB_HASH_SIZE);
}

/* the mailbox name of a record's GUID, or the GUID in hex */
static const char *check_mailbox_name(struct lmdb_check_cmd_context *ctx,
				      const uint8_t guid[LDB_GUID_SIZE])
{
	const struct doveadm_lmdb_mailbox *mbox =
		doveadm_lmdb_mailbox_find(&ctx->mailboxes, guid);

	return mbox != NULL ? mbox->vname : guid_128_to_string(guid);
}

/* ---- 1. index against LMDB ---- */

static void check_index_uid(struct lmdb_check_cmd_context *ctx,
			    const struct doveadm_lmdb_mailbox *mbox,
			    enum check_problem problem, uint32_t uid,
			    const char *detail, unsigned int *count)
{
	(*count)++;
	check_report(ctx, problem, mbox->vname, t_strdup_printf("uid %u", uid),
		     detail);
}

/* Merge the index's UIDs with LMDB's records.  Returns problems found. */
static unsigned int
check_index_merge(struct lmdb_check_cmd_context *ctx,
		  const struct doveadm_lmdb_mailbox *mbox,
		  struct mail_index_view *view, struct ldb_txn *txn)
{
	const struct mail_index_header *hdr = mail_index_get_header(view);
	uint32_t seq = 1, count = mail_index_view_get_messages_count(view);
	uint32_t idx_uid = 0, uid;
	struct ldb_msg_iter *iter;
	struct ldb_msg_rec rec;
	unsigned int problems = 0;
	int ret;

	iter = ldb_msg_iter_init(txn, mbox->guid, 1);
	ret = ldb_msg_iter_next(iter, &uid, &rec);
	while (ret >= 0 && (seq <= count || ret > 0)) {
		if (seq <= count)
			mail_index_lookup_uid(view, seq, &idx_uid);
		if (ret == 0 || (seq <= count && idx_uid < uid)) {
			check_index_uid(ctx, mbox, CHECK_LOST, idx_uid,
					"in the index but not in LMDB: reads "
					"as expunged", &problems);
			seq++;
			continue;
		}
		if (seq > count || uid < idx_uid) {
			if (uid >= hdr->next_uid) {
				check_index_uid(ctx, mbox, CHECK_PENDING, uid,
					"in LMDB above the index's next UID: "
					"the next sync adds it", &problems);
			} else {
				check_index_uid(ctx, mbox, CHECK_NOT_IN_INDEX,
					uid, "in LMDB but not in the index",
					&problems);
			}
		} else {
			seq++;
		}
		ret = ldb_msg_iter_next(iter, &uid, &rec);
	}
	if (ldb_msg_iter_deinit(&iter) < 0) {
		check_report(ctx, CHECK_CORRUPT_RECORD, mbox->vname, "",
			     ldb_env_last_error(ctx->env));
		problems++;
	}
	return problems;
}

static unsigned int
check_index_uidvalidity(struct lmdb_check_cmd_context *ctx,
			const struct doveadm_lmdb_mailbox *mbox,
			struct mail_index_view *view, struct ldb_txn *txn)
{
	const struct mail_index_header *hdr = mail_index_get_header(view);
	struct ldb_mailbox_rec mrec;

	if (ldb_mailbox_get(txn, mbox->guid, &mrec) <= 0 ||
	    mrec.uid_validity == 0 || mrec.uid_validity == hdr->uid_validity)
		return 0;
	check_report(ctx, CHECK_UIDVALIDITY, mbox->vname, "",
		     t_strdup_printf("index %u, LMDB %u", hdr->uid_validity,
				     mrec.uid_validity));
	return 1;
}

/* Compare one mailbox; 1 = problems found, 0 = none, -1 = error. */
static int check_mailbox_index(struct lmdb_check_cmd_context *ctx,
			       const struct doveadm_lmdb_mailbox *mbox)
{
	struct mailbox *box;
	struct mail_index_sync_ctx *sync_ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	struct ldb_txn *txn;
	unsigned int problems = 0;
	int ret = 0;

	box = mailbox_alloc(mbox->ns->list, mbox->vname,
			    MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_open(box) < 0) {
		check_report(ctx, CHECK_OPEN_FAILED, mbox->vname, "",
			     mailbox_get_last_internal_error(box, NULL));
		mailbox_free(&box);
		return 1;
	}
	/* the index sync lock: saves and expunges of this mailbox wait */
	if (mail_index_sync_begin(box->index, &sync_ctx, &view, &trans, 0) <= 0) {
		check_report(ctx, CHECK_OPEN_FAILED, mbox->vname, "",
			     mail_index_get_error_message(box->index));
		mailbox_free(&box);
		return 1;
	}
	if (mail_index_get_header(view)->uid_validity != 0) {
		if (ldb_txn_begin(ctx->env, FALSE, &txn) < 0)
			ret = -1;
		else {
			problems += check_index_uidvalidity(ctx, mbox, view, txn);
			problems += check_index_merge(ctx, mbox, view, txn);
			ldb_txn_abort(&txn);
		}
	}
	mail_index_sync_rollback(&sync_ctx);
	mailbox_free(&box);
	return ret < 0 ? -1 : (problems > 0 ? 1 : 0);
}

static int check_indexes(struct lmdb_check_cmd_context *ctx)
{
	const struct doveadm_lmdb_mailbox *mbox;
	int ret;

	array_foreach(&ctx->mailboxes, mbox) {
		T_BEGIN {
			ret = check_mailbox_index(ctx, mbox);
		} T_END;
		if (ret < 0)
			return -1;
		if (ret > 0)
			array_push_back(&ctx->resync, &mbox);
	}
	return 0;
}

/* ---- 2. the whole environment ---- */

static int check_ref_cmp(const struct check_ref *r1,
			 const struct check_ref *r2)
{
	return memcmp(r1->hash, r2->hash, sizeof(r1->hash));
}

static void check_orphan_run(struct lmdb_check_cmd_context *ctx,
			     const uint8_t guid[LDB_GUID_SIZE],
			     unsigned int count)
{
	const char *guid_str = guid_128_to_string(guid);

	check_report(ctx, CHECK_ORPHAN_RECORDS, "", guid_str,
		t_strdup_printf("%u message records of a mailbox GUID the user "
			"has no mailbox for; recover them with: doveadm "
			"mailbox create -u USER -g %s NAME, then doveadm "
			"force-resync -u USER NAME", count, guid_str));
}

/* Every record: decodable, its body reference collected, its mailbox
   known.  Records are sorted by mailbox GUID, so unknown GUIDs come as
   runs. */
static int check_scan_records(struct lmdb_check_cmd_context *ctx,
			      struct ldb_txn *txn)
{
	struct ldb_cursor *cursor;
	struct ldb_msg_rec rec;
	struct check_ref *ref;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	uint8_t guid[LDB_GUID_SIZE], run_guid[LDB_GUID_SIZE];
	unsigned int run_count = 0;
	const void *key, *data;
	size_t key_size, size;
	uint32_t uid;
	int ret;

	if (ldb_cursor_open(txn, ctx->dbi_msg, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) T_BEGIN {
		op = LDB_CURSOR_NEXT;
		ctx->messages++;
		if (ldb_msg_key_parse(key, key_size, guid, &uid) < 0) {
			check_report(ctx, CHECK_CORRUPT_RECORD, "",
				     binary_to_hex(key, key_size),
				     "malformed message key");
		} else if (ldb_msg_rec_decode(data, size, &rec) < 0) {
			check_report(ctx, CHECK_CORRUPT_RECORD,
				     check_mailbox_name(ctx, guid),
				     t_strdup_printf("uid %u", uid),
				     "message record fails to decode");
		} else {
			ref = array_append_space(&ctx->refs);
			memcpy(ref->hash, rec.body_hash, sizeof(ref->hash));
			memcpy(ref->guid, guid, sizeof(ref->guid));
			ref->uid = uid;
			if (run_count > 0 &&
			    memcmp(run_guid, guid, sizeof(guid)) != 0) {
				check_orphan_run(ctx, run_guid, run_count);
				run_count = 0;
			}
			if (doveadm_lmdb_mailbox_find(&ctx->mailboxes,
						      guid) == NULL) {
				memcpy(run_guid, guid, sizeof(guid));
				run_count++;
			}
		}
	} T_END;
	if (run_count > 0)
		check_orphan_run(ctx, run_guid, run_count);
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

static void check_missing_body(struct lmdb_check_cmd_context *ctx,
			       const struct check_ref *ref)
{
	check_report(ctx, CHECK_MISSING_BODY,
		     check_mailbox_name(ctx, ref->guid),
		     t_strdup_printf("uid %u", ref->uid),
		     t_strdup_printf("body %s is missing: the message reads "
				     "as expunged", hash_hex(ref->hash)));
}

static void check_body_refs(struct lmdb_check_cmd_context *ctx,
			    const uint8_t hash[LDB_HASH_SIZE],
			    const struct ldb_body_info *info, uint64_t refs)
{
	if (refs == 0) {
		check_report(ctx, CHECK_ORPHAN_BODY, "", hash_hex(hash),
			     t_strdup_printf("no message references this "
					     "body (%"PRIu64" bytes, stored "
					     "refcount %"PRIu64")", info->size,
					     info->refcount));
	} else if (refs != info->refcount) {
		check_report(ctx, CHECK_REFCOUNT, "", hash_hex(hash),
			     t_strdup_printf("stored refcount %"PRIu64", "
					     "referenced by %"PRIu64" messages",
					     info->refcount, refs));
	}
}

/* Bodies (sorted by hash) merged with the sorted references. */
static int check_scan_bodies(struct lmdb_check_cmd_context *ctx,
			     struct ldb_txn *txn)
{
	const struct check_ref *refs;
	struct check_body *body;
	struct ldb_cursor *cursor;
	struct ldb_body_info info;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	const void *key, *data;
	size_t key_size, size;
	unsigned int i = 0, count;
	uint64_t n;
	int ret;

	array_sort(&ctx->refs, check_ref_cmp);
	refs = array_get(&ctx->refs, &count);
	if (ldb_cursor_open(txn, ctx->dbi_body, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) T_BEGIN {
		op = LDB_CURSOR_NEXT;
		if (key_size != LDB_HASH_SIZE ||
		    ldb_body_info_decode(data, size, &info) < 0) {
			check_report(ctx, CHECK_CORRUPT_RECORD, "",
				     binary_to_hex(key, key_size),
				     "body record fails to decode");
		} else {
			for (; i < count && memcmp(refs[i].hash, key,
						   LDB_HASH_SIZE) < 0; i++)
				check_missing_body(ctx, &refs[i]);
			for (n = 0; i < count && memcmp(refs[i].hash, key,
						LDB_HASH_SIZE) == 0; i++)
				n++;
			check_body_refs(ctx, key, &info, n);
			body = array_append_space(&ctx->bodies);
			memcpy(body->hash, key, LDB_HASH_SIZE);
			body->info = info;
		}
	} T_END;
	for (; i < count; i++)
		check_missing_body(ctx, &refs[i]);
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

static bool check_body_layout(const struct ldb_body_info *info)
{
	uint64_t chunks;

	if (info->chunk_size == 0)
		return info->size == 0 && info->chunk_count == 0;
	chunks = (info->size + info->chunk_size - 1) / info->chunk_size;
	return chunks == info->chunk_count;
}

static size_t check_chunk_want_size(const struct ldb_body_info *info,
				    uint32_t idx)
{
	if (idx + 1 < info->chunk_count)
		return info->chunk_size;
	return info->size - (uint64_t)idx * info->chunk_size;
}

/* A body's chunks end: were they all there?  *next is the next index the
   scan expected. */
static void check_body_done(struct lmdb_check_cmd_context *ctx,
			    struct check_body *body, uint32_t next,
			    bool bad_size)
{
	if (!check_body_layout(&body->info)) {
		check_report(ctx, CHECK_BAD_CHUNKS, "", hash_hex(body->hash),
			     "body record's chunk count doesn't match its "
			     "size");
	} else if (next != body->info.chunk_count || bad_size) {
		check_report(ctx, CHECK_BAD_CHUNKS, "", hash_hex(body->hash),
			     t_strdup_printf("%s (have %u of %u chunks)",
					     bad_size ? "chunk of wrong size" :
					     "chunks missing", next,
					     body->info.chunk_count));
	} else {
		body->complete = TRUE;
	}
}

/* Chunks (sorted by hash, index) merged with the sorted bodies. */
static int check_scan_chunks(struct lmdb_check_cmd_context *ctx,
			     struct ldb_txn *txn)
{
	struct check_body *bodies;
	struct ldb_cursor *cursor;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	uint8_t hash[LDB_HASH_SIZE];
	const void *key, *data;
	size_t key_size, size;
	unsigned int i = 0, count;
	uint32_t idx, next = 0;
	bool bad_size = FALSE;
	int ret, cmp;

	bodies = array_get_modifiable(&ctx->bodies, &count);
	if (ldb_cursor_open(txn, ctx->dbi_chunk, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) T_BEGIN {
		op = LDB_CURSOR_NEXT;
		if (ldb_chunk_key_parse(key, key_size, hash, &idx) < 0) {
			check_report(ctx, CHECK_ORPHAN_CHUNK, "",
				     binary_to_hex(key, key_size),
				     "malformed chunk key");
		} else {
			while (i < count &&
			       (cmp = memcmp(bodies[i].hash, hash,
					     LDB_HASH_SIZE)) < 0) {
				check_body_done(ctx, &bodies[i++], next,
						bad_size);
				next = 0; bad_size = FALSE;
			}
			if (i < count && cmp == 0 &&
			    idx < bodies[i].info.chunk_count) {
				if (idx != next)
					bad_size = TRUE;
				if (size != check_chunk_want_size(
						&bodies[i].info, idx))
					bad_size = TRUE;
				next = idx + 1;
			} else {
				check_report(ctx, CHECK_ORPHAN_CHUNK, "",
					t_strdup_printf("%s:%u", hash_hex(hash),
							idx),
					"chunk of no body");
			}
		}
	} T_END;
	for (; i < count; i++) {
		check_body_done(ctx, &bodies[i], next, bad_size);
		next = 0; bad_size = FALSE;
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

/* Mailbox records of GUIDs the user has no mailbox for, and no records:
   leftovers (orphan_records already reports those with records). */
static int check_scan_mailbox_records(struct lmdb_check_cmd_context *ctx,
				      struct ldb_txn *txn)
{
	struct ldb_cursor *cursor;
	struct ldb_msg_rec rec;
	struct ldb_msg_iter *iter;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	const void *key, *data;
	size_t key_size, size;
	uint32_t uid;
	int ret, ret2;

	if (ldb_cursor_open(txn, ctx->dbi_mailbox, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) T_BEGIN {
		op = LDB_CURSOR_NEXT;
		if (key_size == LDB_GUID_SIZE &&
		    doveadm_lmdb_mailbox_find(&ctx->mailboxes, key) == NULL) {
			iter = ldb_msg_iter_init(txn, key, 1);
			ret2 = ldb_msg_iter_next(iter, &uid, &rec);
			(void)ldb_msg_iter_deinit(&iter);
			if (ret2 == 0) {
				check_report(ctx, CHECK_UNKNOWN_MAILBOX, "",
					guid_128_to_string(key),
					"mailbox record without messages of a "
					"GUID the user has no mailbox for");
			}
		}
	} T_END;
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

static int check_structure(struct lmdb_check_cmd_context *ctx)
{
	struct ldb_txn *txn;
	int ret;

	if (ldb_txn_begin(ctx->env, FALSE, &txn) < 0)
		return -1;
	ret = check_scan_records(ctx, txn);
	if (ret == 0)
		ret = check_scan_bodies(ctx, txn);
	if (ret == 0)
		ret = check_scan_chunks(ctx, txn);
	if (ret == 0)
		ret = check_scan_mailbox_records(ctx, txn);
	ldb_txn_abort(&txn);
	return ret;
}

/* ---- 3. content hashes ---- */

/* 1 = matches, 0 = mismatch or vanished meanwhile (*vanished_r), -1 error */
static int check_body_hash(struct lmdb_check_cmd_context *ctx,
			   const struct check_body *body, bool *vanished_r)
{
	struct ldb_sha256 *sha;
	struct ldb_body_info info;
	struct ldb_txn *txn;
	uint8_t hash[LDB_HASH_SIZE];
	const void *data;
	size_t size;
	uint32_t idx;
	int ret;

	*vanished_r = FALSE;
	if (ldb_txn_begin(ctx->env, FALSE, &txn) < 0)
		return -1;
	if ((ret = ldb_body_get_info(txn, body->hash, &info)) <= 0) {
		/* expunged since the scan */
		ldb_txn_abort(&txn);
		*vanished_r = ret == 0;
		return ret < 0 ? -1 : 0;
	}
	sha = ldb_sha256_init();
	for (idx = 0; idx < info.chunk_count; idx++) {
		if ((ret = ldb_body_chunk_get(txn, body->hash, idx,
					      &data, &size)) <= 0)
			break;
		ldb_sha256_update(sha, data, size);
	}
	ldb_sha256_final(&sha, hash);
	ldb_txn_abort(&txn);
	if (ret < 0)
		return -1;
	return memcmp(hash, body->hash, sizeof(hash)) == 0 ? 1 : 0;
}

static int check_hashes(struct lmdb_check_cmd_context *ctx)
{
	const struct check_body *body;
	bool vanished;
	int ret;

	array_foreach(&ctx->bodies, body) {
		if (!body->complete)
			continue;
		if ((ret = check_body_hash(ctx, body, &vanished)) < 0)
			return -1;
		if (ret == 0 && !vanished) T_BEGIN {
			check_report(ctx, CHECK_HASH_MISMATCH, "",
				     hash_hex(body->hash),
				     "content doesn't match its SHA-256: the "
				     "body is corrupted");
		} T_END;
	}
	return 0;
}

/* ---- repair ---- */

struct check_repair_body {
	uint8_t hash[LDB_HASH_SIZE];
	uint64_t refs;
};
ARRAY_DEFINE_TYPE(check_repair_body, struct check_repair_body);

/* The body hashes of every decodable record, sorted. */
static int check_collect_hashes(struct ldb_txn *txn, unsigned int dbi_msg,
				ARRAY_TYPE(check_ref) *refs)
{
	struct ldb_cursor *cursor;
	struct ldb_msg_rec rec;
	struct check_ref *ref;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	const void *key, *data;
	size_t key_size, size;
	int ret;

	if (ldb_cursor_open(txn, dbi_msg, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		op = LDB_CURSOR_NEXT;
		if (ldb_msg_rec_decode(data, size, &rec) == 0) {
			ref = array_append_space(refs);
			memcpy(ref->hash, rec.body_hash, sizeof(ref->hash));
		}
	}
	ldb_cursor_close(&cursor);
	array_sort(refs, check_ref_cmp);
	return ret < 0 ? -1 : 0;
}

/* Bodies whose stored count differs from the sorted references. */
static int check_find_refcount_fixes(struct ldb_txn *txn, unsigned int dbi,
				     const ARRAY_TYPE(check_ref) *refs,
				     ARRAY_TYPE(check_repair_body) *fixes)
{
	const struct check_ref *r;
	struct check_repair_body *f;
	struct ldb_cursor *cursor;
	struct ldb_body_info info;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	const void *key, *data;
	size_t key_size, size;
	unsigned int i = 0, count;
	uint64_t n;
	int ret;

	r = array_get(refs, &count);
	if (ldb_cursor_open(txn, dbi, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		op = LDB_CURSOR_NEXT;
		if (key_size != LDB_HASH_SIZE ||
		    ldb_body_info_decode(data, size, &info) < 0)
			continue;
		while (i < count && memcmp(r[i].hash, key, LDB_HASH_SIZE) < 0)
			i++;
		for (n = 0; i < count &&
		     memcmp(r[i].hash, key, LDB_HASH_SIZE) == 0; i++)
			n++;
		if (n != info.refcount) {
			f = array_append_space(fixes);
			memcpy(f->hash, key, LDB_HASH_SIZE);
			f->refs = n;
		}
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

/* Recount every body's references from scratch inside the write
   transaction (ldb_write() may run this again after growing the map). */
static int check_repair_refcounts(struct ldb_txn *txn,
				  struct lmdb_check_cmd_context *ctx)
{
	ARRAY_TYPE(check_ref) refs;
	ARRAY_TYPE(check_repair_body) fixes;
	const struct check_repair_body *fix;

	t_array_init(&refs, 128);
	t_array_init(&fixes, 16);
	if (check_collect_hashes(txn, ctx->dbi_msg, &refs) < 0 ||
	    check_find_refcount_fixes(txn, ctx->dbi_body, &refs, &fixes) < 0)
		return -1;
	array_foreach(&fixes, fix) {
		if (ldb_body_set_refcount(txn, fix->hash, fix->refs) < 0)
			return -1;
		ctx->repaired_bodies++;
	}
	return 0;
}

/* Delete chunks of no body, or beyond their body's chunk count. */
static int check_repair_chunks(struct ldb_txn *txn,
			       struct lmdb_check_cmd_context *ctx)
{
	struct ldb_cursor *cursor;
	struct ldb_body_info info;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	uint8_t hash[LDB_HASH_SIZE];
	const void *key;
	size_t key_size;
	uint32_t idx;
	int ret, ret2;

	if (ldb_cursor_open(txn, ctx->dbi_chunk, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     NULL, NULL)) > 0) {
		op = LDB_CURSOR_NEXT;
		if (ldb_chunk_key_parse(key, key_size, hash, &idx) == 0) {
			ret2 = ldb_body_get_info(txn, hash, &info);
			if (ret2 < 0) {
				ret = -1;
				break;
			}
			if (ret2 > 0 && idx < info.chunk_count)
				continue;
		}
		if (ldb_cursor_del(cursor) < 0) {
			ret = -1;
			break;
		}
		ctx->repaired_chunks++;
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

static int check_repair_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_check_cmd_context *ctx = context;
	int ret;

	ctx->repaired_bodies = ctx->repaired_chunks = 0;
	T_BEGIN {
		ret = check_repair_refcounts(txn, ctx);
	} T_END;
	if (ret == 0)
		ret = check_repair_chunks(txn, ctx);
	return ret < 0 ? LDB_ERR_INTERNAL : 0;
}

static bool check_problem_is_body(enum check_problem problem)
{
	return problem == CHECK_REFCOUNT || problem == CHECK_ORPHAN_BODY ||
		problem == CHECK_ORPHAN_CHUNK;
}

static bool check_problem_is_index(enum check_problem problem)
{
	return problem == CHECK_LOST || problem == CHECK_PENDING ||
		problem == CHECK_NOT_IN_INDEX || problem == CHECK_UIDVALIDITY;
}

static int check_repair_bodies(struct lmdb_check_cmd_context *ctx)
{
	struct check_report *r;
	bool needed = FALSE;

	array_foreach_modifiable(&ctx->reports, r)
		needed = needed || check_problem_is_body(r->problem);
	if (!needed)
		return 0;
	if (ldb_write(ctx->env, check_repair_fn, ctx) < 0)
		return -1;
	array_foreach_modifiable(&ctx->reports, r) {
		if (check_problem_is_body(r->problem))
			r->repaired = TRUE;
	}
	return 0;
}

/* Force-resync a mailbox (its index is rebuilt from LMDB), then compare
   again: repaired only if it now agrees. */
static void check_repair_mailbox(struct lmdb_check_cmd_context *ctx,
				 const struct doveadm_lmdb_mailbox *mbox)
{
	struct check_report *r;
	struct mailbox *box;
	unsigned int count;
	int ret;

	box = mailbox_alloc(mbox->ns->list, mbox->vname,
			    MAILBOX_FLAG_IGNORE_ACLS);
	ret = mailbox_sync(box, MAILBOX_SYNC_FLAG_FORCE_RESYNC |
			   MAILBOX_SYNC_FLAG_FIX_INCONSISTENT);
	if (ret < 0) {
		i_error("Forcing a resync on mailbox %s failed: %s",
			mbox->vname, mailbox_get_last_internal_error(box, NULL));
	}
	mailbox_free(&box);
	if (ret < 0)
		return;
	/* compare again; the new reports are dropped */
	count = array_count(&ctx->reports);
	ret = check_mailbox_index(ctx, mbox);
	array_delete(&ctx->reports, count, array_count(&ctx->reports) - count);
	if (ret != 0)
		return;
	array_foreach_modifiable(&ctx->reports, r) {
		if (check_problem_is_index(r->problem) &&
		    strcmp(r->mailbox, mbox->vname) == 0)
			r->repaired = TRUE;
	}
}

static int check_repair(struct lmdb_check_cmd_context *ctx)
{
	const struct doveadm_lmdb_mailbox *mbox;

	if (check_repair_bodies(ctx) < 0)
		return -1;
	array_foreach_elem(&ctx->resync, mbox) T_BEGIN {
		check_repair_mailbox(ctx, mbox);
	} T_END;
	return 0;
}

/* ---- the command ---- */

static void check_print(struct lmdb_check_cmd_context *ctx,
			unsigned int *unrepaired_r)
{
	const struct check_report *r;

	*unrepaired_r = 0;
	array_foreach(&ctx->reports, r) {
		doveadm_print(ctx->root->storage->env_path);
		doveadm_print(r->mailbox);
		doveadm_print(check_problem_names[r->problem]);
		doveadm_print(r->object);
		doveadm_print(r->detail);
		doveadm_print(!ctx->repair ? "no" :
			      r->repaired ? "yes" : "no");
		if (!r->repaired)
			(*unrepaired_r)++;
	}
}

static void check_print_summary(struct lmdb_check_cmd_context *ctx,
				struct event *event, unsigned int unrepaired)
{
	unsigned int problems = array_count(&ctx->reports);

	doveadm_print(ctx->root->storage->env_path);
	doveadm_print("");
	doveadm_print("summary");
	doveadm_print("");
	doveadm_print(t_strdup_printf("%"PRIu64" messages, %u bodies, "
		"%u mailboxes; %u problems, %u repaired", ctx->messages,
		array_count(&ctx->bodies), array_count(&ctx->mailboxes),
		problems, problems - unrepaired));
	doveadm_print(unrepaired == 0 ? "yes" : "no");
	event_add_int(event, "messages", ctx->messages);
	event_add_int(event, "bodies", array_count(&ctx->bodies));
	event_add_int(event, "problems", problems);
	event_add_int(event, "repaired", problems - unrepaired);
	e_debug(event, "lmdb: Checked %s: %u problems, %u repaired in %lld ms",
		ctx->root->storage->env_path, problems, problems - unrepaired,
		lmdb_event_msecs(event));
}

static void check_print_no_db(const struct doveadm_lmdb_root *root)
{
	doveadm_print(root->storage->env_path);
	doveadm_print("");
	doveadm_print("summary");
	doveadm_print("");
	doveadm_print("no LMDB database yet (no mail stored)");
	doveadm_print("yes");
}

/* The three parts of the check, then the repair. */
static int check_run(struct lmdb_check_cmd_context *ctx)
{
	if (ldb_dbi_open(ctx->env, LDB_DB_MAILBOX, &ctx->dbi_mailbox) < 0 ||
	    ldb_dbi_open(ctx->env, LDB_DB_MSG, &ctx->dbi_msg) < 0 ||
	    ldb_dbi_open(ctx->env, LDB_DB_BODY, &ctx->dbi_body) < 0 ||
	    ldb_dbi_open(ctx->env, LDB_DB_CHUNK, &ctx->dbi_chunk) < 0 ||
	    check_indexes(ctx) < 0 || check_structure(ctx) < 0 ||
	    check_hashes(ctx) < 0)
		return -1;
	return ctx->repair ? check_repair(ctx) : 0;
}

static int check_root(struct lmdb_check_cmd_context *ctx,
		      const struct doveadm_lmdb_root *root)
{
	unsigned int failed, unrepaired;
	struct event *event;
	int ret;

	p_clear(ctx->pool);
	ctx->root = root;
	ctx->messages = 0;
	p_array_init(&ctx->reports, ctx->pool, 16);
	p_array_init(&ctx->refs, ctx->pool, 1024);
	p_array_init(&ctx->bodies, ctx->pool, 1024);
	p_array_init(&ctx->resync, ctx->pool, 4);
	if (!doveadm_lmdb_root_has_db(root)) {
		check_print_no_db(root);
		return 0;
	}
	doveadm_lmdb_mailboxes_get(root, ctx->pool, &ctx->mailboxes, &failed);
	if (failed > 0)
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
	if (doveadm_lmdb_root_env(&ctx->ctx, root, &ctx->env) < 0)
		return -1;
	event = event_create(root->storage->storage.event);
	event_set_name(event, "lmdb_check");
	event_add_str(event, "path", root->storage->env_path);
	event_add_str(event, "repair", ctx->repair ? "yes" : "no");
	if ((ret = check_run(ctx)) < 0)
		doveadm_lmdb_failed_ldb(&ctx->ctx, ctx->env, "check");
	else {
		check_print(ctx, &unrepaired);
		check_print_summary(ctx, event, unrepaired);
		if (unrepaired > 0 && ctx->ctx.exit_code == 0)
			ctx->ctx.exit_code = EX_DATAERR;
	}
	event_unref(&event);
	return ret;
}

static int cmd_lmdb_check_run(struct doveadm_mail_cmd_context *_ctx,
			      struct mail_user *user)
{
	struct lmdb_check_cmd_context *ctx =
		container_of(_ctx, struct lmdb_check_cmd_context, ctx);
	ARRAY_TYPE(doveadm_lmdb_root) roots;
	const struct doveadm_lmdb_root *root;
	int ret = 0;

	if (doveadm_lmdb_roots_get_or_fail(_ctx, user, _ctx->pool,
					   &roots) < 0)
		return -1;
	ctx->pool = pool_alloconly_create("lmdb check", 1024 * 64);
	array_foreach(&roots, root) {
		if (check_root(ctx, root) < 0)
			ret = -1;
	}
	pool_unref(&ctx->pool);
	return ret;
}

static bool cmd_lmdb_check_parse_arg(struct doveadm_mail_cmd_context *_ctx,
				     int c)
{
	struct lmdb_check_cmd_context *ctx =
		container_of(_ctx, struct lmdb_check_cmd_context, ctx);

	if (c != 'r')
		return FALSE;
	ctx->repair = TRUE;
	return TRUE;
}

static void cmd_lmdb_check_init(struct doveadm_mail_cmd_context *ctx
				ATTR_UNUSED, const char *const args[])
{
	if (args[0] != NULL)
		doveadm_mail_help_name("lmdb check");
	doveadm_print_header_simple("environment");
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("problem");
	doveadm_print_header_simple("object");
	doveadm_print_header("detail", "detail",
			     DOVEADM_PRINT_HEADER_FLAG_EXPAND);
	doveadm_print_header_simple("repaired");
}

static struct doveadm_mail_cmd_context *cmd_lmdb_check_alloc(void)
{
	struct lmdb_check_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_check_cmd_context);
	ctx->ctx.getopt_args = "r";
	ctx->ctx.v.parse_arg = cmd_lmdb_check_parse_arg;
	ctx->ctx.v.init = cmd_lmdb_check_init;
	ctx->ctx.v.run = cmd_lmdb_check_run;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	return &ctx->ctx;
}

struct doveadm_cmd_ver2 doveadm_cmd_lmdb_check = {
	.name = "lmdb check",
	.mail_cmd = cmd_lmdb_check_alloc,
	.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "[-r|--repair]",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('r', "repair", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAMS_END
};
