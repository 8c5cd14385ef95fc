/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The fts_lmdb index in LMDB.  See fts-lmdb-store.h for the schema.

   Writers are serialized by LMDB.  Several processes may index the same
   mailbox at once (doveadm index while indexer-worker runs): a batch only
   writes UIDs above the last UID it finds in its own transaction, and a
   batch started before a reset of the mailbox (UIDVALIDITY change,
   rescan) is dropped.  So postings and texts only ever hold data of the
   box id and UIDVALIDITY they were written for, and the last UID never
   covers a message whose data isn't there. */

#include "fts-lmdb-store.h"
#include "fts-lmdb-doc.h"

#include <stdlib.h>
#include <string.h>

#define FTS_LMDB_META_VERSION "fts_schema_version"
#define FTS_LMDB_META_NEXT_BOX "fts_next_box_id"
#define FTS_LMDB_POST_PREFIX_SIZE 13
/* keys deleted or blocks rewritten per maintenance transaction */
#define FTS_LMDB_MAINT_CHUNK 20000

struct fts_lmdb_store {
	struct ldb_env *env;
	unsigned int dbi_box, dbi_dead, dbi_post, dbi_doc, dbi_uid;
};

struct fts_lmdb_tuple {
	uint64_t gram;
	uint32_t uid;
	uint8_t space;
};

struct fts_lmdb_batch_doc {
	uint32_t uid;
	uint8_t flags;
	size_t off, size;
};

struct fts_lmdb_batch {
	uint8_t guid[LDB_GUID_SIZE];
	uint32_t uidvalidity, base, max_uid;

	struct fts_lmdb_tuple *tuples;
	size_t tuple_count, tuple_cap;
	struct fts_lmdb_batch_doc *docs;
	unsigned int doc_count, doc_cap;
	struct fts_lmdb_buf doc_data;
};

struct batch_write_ctx {
	struct fts_lmdb_store *store;
	struct fts_lmdb_batch *batch;
	struct fts_lmdb_uids tmp, tmp2;
	bool dropped;
	uint32_t new_last_uid;
};

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
		((uint32_t)p[2] << 8) | p[3];
}

static void *store_realloc(void *ptr, size_t count, size_t size)
{
	void *p;

	if (count != 0 && size > SIZE_MAX / count)
		abort();
	p = realloc(ptr, count * size);
	if (p == NULL && count * size != 0)
		abort();
	return p;
}

/* ---- open ---- */

static int store_check_version(struct fts_lmdb_store *store)
{
	struct ldb_txn *txn;
	uint32_t version;
	int ret;

	if ((ret = ldb_txn_begin(store->env, false, &txn)) < 0)
		return ret;
	ret = ldb_meta_get_u32(txn, FTS_LMDB_META_VERSION, &version);
	ldb_txn_abort(&txn);
	if (ret < 0)
		return ret;
	if (ret > 0)
		return version > FTS_LMDB_SCHEMA_VERSION ? LDB_ERR_VERSION : 0;
	if ((ret = ldb_txn_begin(store->env, true, &txn)) < 0)
		return ret;
	ret = ldb_meta_put_u32(txn, FTS_LMDB_META_VERSION,
			       FTS_LMDB_SCHEMA_VERSION);
	if (ret < 0) {
		ldb_txn_abort(&txn);
		return ret;
	}
	return ldb_txn_commit(&txn);
}

int fts_lmdb_store_open(const char *path, const struct ldb_settings *set,
			struct fts_lmdb_store **store_r, const char **error_r)
{
	struct fts_lmdb_store *store;
	int ret;

	*store_r = NULL;
	store = calloc(1, sizeof(*store));
	if (store == NULL)
		abort();
	if ((ret = ldb_env_open(path, set, &store->env, error_r)) < 0) {
		free(store);
		return ret;
	}
	if ((ret = ldb_dbi_open(store->env, "fts_box", &store->dbi_box)) < 0 ||
	    (ret = ldb_dbi_open(store->env, "fts_dead", &store->dbi_dead)) < 0 ||
	    (ret = ldb_dbi_open(store->env, "fts_post", &store->dbi_post)) < 0 ||
	    (ret = ldb_dbi_open(store->env, "fts_doc", &store->dbi_doc)) < 0 ||
	    (ret = ldb_dbi_open(store->env, "fts_uid", &store->dbi_uid)) < 0 ||
	    (ret = store_check_version(store)) < 0) {
		*error_r = ret == LDB_ERR_VERSION ?
			"index was written by a newer fts_lmdb schema" :
			ldb_env_last_error(store->env);
		ldb_env_unref(&store->env);
		free(store);
		return ret;
	}
	*store_r = store;
	return 0;
}

void fts_lmdb_store_close(struct fts_lmdb_store **_store)
{
	struct fts_lmdb_store *store = *_store;

	*_store = NULL;
	if (store == NULL)
		return;
	ldb_env_unref(&store->env);
	free(store);
}

const char *fts_lmdb_store_last_error(struct fts_lmdb_store *store)
{
	return ldb_env_last_error(store->env);
}

struct ldb_env *fts_lmdb_store_env(struct fts_lmdb_store *store)
{
	return store->env;
}

/* ---- codecs ---- */

void fts_lmdb_box_rec_encode(const struct fts_lmdb_box_rec *rec,
			     uint8_t buf[FTS_LMDB_BOX_REC_SIZE])
{
	memset(buf, 0, FTS_LMDB_BOX_REC_SIZE);
	buf[0] = 1;
	put_be32(buf + 4, rec->box_id);
	put_be32(buf + 8, rec->uidvalidity);
	put_be32(buf + 12, rec->last_uid);
	put_be32(buf + 16, rec->dead);
}

int fts_lmdb_box_rec_decode(const void *data, size_t size,
			    struct fts_lmdb_box_rec *rec_r)
{
	const uint8_t *p = data;

	memset(rec_r, 0, sizeof(*rec_r));
	if (size != FTS_LMDB_BOX_REC_SIZE || p[0] != 1)
		return LDB_ERR_CORRUPT;
	rec_r->box_id = get_be32(p + 4);
	rec_r->uidvalidity = get_be32(p + 8);
	rec_r->last_uid = get_be32(p + 12);
	rec_r->dead = get_be32(p + 16);
	return rec_r->box_id == 0 ? LDB_ERR_CORRUPT : 0;
}

void fts_lmdb_post_key(uint32_t box_id, uint8_t space, uint64_t gram,
		       uint32_t first_uid,
		       uint8_t key_r[FTS_LMDB_POST_KEY_SIZE])
{
	put_be32(key_r, box_id);
	key_r[4] = space;
	put_be64(key_r + 5, gram);
	put_be32(key_r + 13, first_uid);
}

static void doc_key(uint32_t box_id, uint32_t uid,
		    uint8_t key_r[FTS_LMDB_DOC_KEY_SIZE])
{
	put_be32(key_r, box_id);
	put_be32(key_r + 4, uid);
}

/* ---- reading ---- */

int fts_lmdb_store_box_get(struct ldb_txn *txn, struct fts_lmdb_store *store,
			   const uint8_t guid[LDB_GUID_SIZE],
			   struct fts_lmdb_box_rec *rec_r)
{
	const void *data;
	size_t size;
	int ret;

	ret = ldb_kv_get(txn, store->dbi_box, guid, LDB_GUID_SIZE,
			 &data, &size);
	if (ret <= 0)
		return ret;
	if (fts_lmdb_box_rec_decode(data, size, rec_r) < 0)
		return LDB_ERR_CORRUPT;
	return 1;
}

static int store_box_put(struct ldb_txn *txn, struct fts_lmdb_store *store,
			 const uint8_t guid[LDB_GUID_SIZE],
			 const struct fts_lmdb_box_rec *rec)
{
	uint8_t buf[FTS_LMDB_BOX_REC_SIZE];
	int ret;

	fts_lmdb_box_rec_encode(rec, buf);
	ret = ldb_kv_put(txn, store->dbi_box, guid, LDB_GUID_SIZE,
			 buf, sizeof(buf), 0);
	return ret < 0 ? ret : 0;
}

int fts_lmdb_store_postings(struct ldb_txn *txn, struct fts_lmdb_store *store,
			    uint32_t box_id, uint8_t space, uint64_t gram,
			    struct fts_lmdb_uids *out)
{
	uint8_t prefix[FTS_LMDB_POST_KEY_SIZE];
	struct ldb_cursor *cursor;
	const void *key = prefix, *data;
	size_t key_size = sizeof(prefix), size, orig = out->n;
	enum ldb_cursor_op op = LDB_CURSOR_SET_RANGE;
	bool sorted = true;
	int ret;

	fts_lmdb_post_key(box_id, space, gram, 0, prefix);
	if ((ret = ldb_cursor_open(txn, store->dbi_post, &cursor)) < 0)
		return ret;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		const uint8_t *k = key;
		size_t before = out->n;

		op = LDB_CURSOR_NEXT;
		if (key_size != FTS_LMDB_POST_KEY_SIZE ||
		    memcmp(k, prefix, FTS_LMDB_POST_PREFIX_SIZE) != 0)
			break;
		if (fts_lmdb_block_decode(get_be32(k + 13), data, size,
					  out) < 0) {
			ret = LDB_ERR_CORRUPT;
			break;
		}
		if (before > orig && out->v[before - 1] >= out->v[before])
			sorted = false;
	}
	ldb_cursor_close(&cursor);
	if (ret < 0)
		return ret;
	if (!sorted)
		fts_lmdb_uids_normalize(out);
	return 0;
}

int fts_lmdb_store_doc_get(struct ldb_txn *txn, struct fts_lmdb_store *store,
			   uint32_t box_id, uint32_t uid,
			   const void **data_r, size_t *size_r)
{
	uint8_t key[FTS_LMDB_DOC_KEY_SIZE];

	doc_key(box_id, uid, key);
	return ldb_kv_get(txn, store->dbi_doc, key, sizeof(key),
			  data_r, size_r);
}

int fts_lmdb_store_uids(struct ldb_txn *txn, struct fts_lmdb_store *store,
			uint32_t box_id, struct fts_lmdb_uids *live,
			struct fts_lmdb_uids *flagged, struct fts_lmdb_buf *flags)
{
	uint8_t prefix[FTS_LMDB_DOC_KEY_SIZE];
	struct ldb_cursor *cursor;
	const void *key = prefix, *data;
	size_t key_size = sizeof(prefix), size;
	enum ldb_cursor_op op = LDB_CURSOR_SET_RANGE;
	int ret;

	doc_key(box_id, 0, prefix);
	if ((ret = ldb_cursor_open(txn, store->dbi_uid, &cursor)) < 0)
		return ret;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		const uint8_t *k = key;

		op = LDB_CURSOR_NEXT;
		if (key_size != FTS_LMDB_DOC_KEY_SIZE ||
		    memcmp(k, prefix, 4) != 0)
			break;
		fts_lmdb_uids_push(live, get_be32(k + 4));
		if (flagged != NULL && size >= 1 &&
		    ((const uint8_t *)data)[0] != 0) {
			fts_lmdb_uids_push(flagged, get_be32(k + 4));
			fts_lmdb_buf_append(flags, data, 1);
		}
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? ret : 0;
}

/* ---- batches ---- */

struct fts_lmdb_batch *
fts_lmdb_batch_new(const uint8_t guid[LDB_GUID_SIZE], uint32_t uidvalidity,
		   uint32_t base_last_uid)
{
	struct fts_lmdb_batch *batch = calloc(1, sizeof(*batch));

	if (batch == NULL)
		abort();
	memcpy(batch->guid, guid, LDB_GUID_SIZE);
	batch->uidvalidity = uidvalidity;
	batch->base = base_last_uid;
	return batch;
}

void fts_lmdb_batch_free(struct fts_lmdb_batch **_batch)
{
	struct fts_lmdb_batch *batch = *_batch;

	*_batch = NULL;
	if (batch == NULL)
		return;
	free(batch->tuples);
	free(batch->docs);
	fts_lmdb_buf_free(&batch->doc_data);
	free(batch);
}

void fts_lmdb_batch_seen_uid(struct fts_lmdb_batch *batch, uint32_t uid)
{
	if (uid > batch->max_uid)
		batch->max_uid = uid;
}

void fts_lmdb_batch_add(struct fts_lmdb_batch *batch, uint32_t uid,
			uint8_t uid_flags, const void *doc, size_t doc_size,
			const uint8_t *spaces,
			const struct fts_lmdb_grams *const *grams,
			unsigned int space_count)
{
	struct fts_lmdb_batch_doc *d;
	unsigned int i;
	size_t j, need = 0;

	fts_lmdb_batch_seen_uid(batch, uid);
	for (i = 0; i < space_count; i++)
		need += grams[i]->n;
	if (batch->tuple_count + need > batch->tuple_cap) {
		size_t cap = batch->tuple_cap < 1024 ? 1024 : batch->tuple_cap;

		while (cap < batch->tuple_count + need)
			cap *= 2;
		batch->tuples = store_realloc(batch->tuples, cap,
					      sizeof(*batch->tuples));
		batch->tuple_cap = cap;
	}
	for (i = 0; i < space_count; i++) {
		for (j = 0; j < grams[i]->n; j++) {
			struct fts_lmdb_tuple *t =
				&batch->tuples[batch->tuple_count++];

			t->gram = grams[i]->v[j];
			t->uid = uid;
			t->space = spaces[i];
		}
	}
	if (batch->doc_count == batch->doc_cap) {
		batch->doc_cap = batch->doc_cap < 64 ? 64 : batch->doc_cap * 2;
		batch->docs = store_realloc(batch->docs, batch->doc_cap,
					    sizeof(*batch->docs));
	}
	d = &batch->docs[batch->doc_count++];
	d->uid = uid;
	d->flags = uid_flags;
	d->off = batch->doc_data.used;
	d->size = doc_size;
	fts_lmdb_buf_append(&batch->doc_data, doc, doc_size);
}

unsigned int fts_lmdb_batch_messages(const struct fts_lmdb_batch *batch)
{
	return batch->doc_count;
}

size_t fts_lmdb_batch_memory(const struct fts_lmdb_batch *batch)
{
	return batch->tuple_count * sizeof(*batch->tuples) +
		batch->doc_data.used +
		batch->doc_count * sizeof(*batch->docs);
}

uint32_t fts_lmdb_batch_base(const struct fts_lmdb_batch *batch)
{
	return batch->base;
}

static uint8_t tuple_digit(const struct fts_lmdb_tuple *t, unsigned int pass)
{
	return pass < 8 ? (uint8_t)(t->gram >> (pass * 8)) : t->space;
}

/* Sort by (space, gram), keeping the order of equal keys: messages are
   added in UID order, so each posting list comes out sorted.  An LSD
   radix sort, because qsort() dominated indexing time. */
static void tuples_sort(struct fts_lmdb_tuple *tuples, size_t n)
{
	struct fts_lmdb_tuple *src = tuples, *dest, *tmp, *swap;
	size_t count[256], i, sum, c;
	unsigned int pass;

	if (n < 2)
		return;
	tmp = dest = store_realloc(NULL, n, sizeof(*tmp));
	for (pass = 0; pass < 9; pass++) {
		memset(count, 0, sizeof(count));
		for (i = 0; i < n; i++)
			count[tuple_digit(&src[i], pass)]++;
		if (count[tuple_digit(&src[0], pass)] == n)
			continue;
		for (i = 0, sum = 0; i < 256; i++) {
			c = count[i];
			count[i] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			dest[count[tuple_digit(&src[i], pass)]++] = src[i];
		swap = src; src = dest; dest = swap;
	}
	if (src != tuples)
		memcpy(tuples, src, n * sizeof(*tuples));
	free(tmp);
}

static int post_write_blocks(struct ldb_txn *txn, struct fts_lmdb_store *store,
			     uint32_t box_id, uint8_t space, uint64_t gram,
			     const uint32_t *uids, size_t n)
{
	uint8_t key[FTS_LMDB_POST_KEY_SIZE], buf[FTS_LMDB_BLOCK_MAX_SIZE];
	size_t i, chunk, size;
	int ret;

	for (i = 0; i < n; i += chunk) {
		chunk = n - i;
		if (chunk > FTS_LMDB_BLOCK_MAX_UIDS)
			chunk = FTS_LMDB_BLOCK_MAX_UIDS;
		fts_lmdb_post_key(box_id, space, gram, uids[i], key);
		size = fts_lmdb_block_encode(uids + i, chunk, buf);
		ret = ldb_kv_put(txn, store->dbi_post, key, sizeof(key),
				 buf, size, 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Read every block of (space, gram): their UIDs into all, their first
   UIDs into firsts. */
static int post_read_all(struct ldb_txn *txn, struct fts_lmdb_store *store,
			 const uint8_t prefix[FTS_LMDB_POST_KEY_SIZE],
			 struct fts_lmdb_uids *all, struct fts_lmdb_uids *firsts)
{
	uint8_t start[FTS_LMDB_POST_KEY_SIZE];
	struct ldb_cursor *cursor;
	const void *key = start, *data;
	size_t key_size = sizeof(start), size;
	enum ldb_cursor_op op = LDB_CURSOR_SET_RANGE;
	int ret;

	/* from the gram's first block, whatever UID prefix carries */
	memcpy(start, prefix, FTS_LMDB_POST_PREFIX_SIZE);
	put_be32(start + FTS_LMDB_POST_PREFIX_SIZE, 0);

	if ((ret = ldb_cursor_open(txn, store->dbi_post, &cursor)) < 0)
		return ret;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		const uint8_t *k = key;

		op = LDB_CURSOR_NEXT;
		if (key_size != FTS_LMDB_POST_KEY_SIZE ||
		    memcmp(k, prefix, FTS_LMDB_POST_PREFIX_SIZE) != 0)
			break;
		fts_lmdb_uids_push(firsts, get_be32(k + 13));
		if (fts_lmdb_block_decode(get_be32(k + 13), data, size,
					  all) < 0) {
			ret = LDB_ERR_CORRUPT;
			break;
		}
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? ret : 0;
}

/* Replace all blocks of (space, gram) by blocks of uids. */
static int post_rewrite(struct ldb_txn *txn, struct fts_lmdb_store *store,
			const uint8_t prefix[FTS_LMDB_POST_KEY_SIZE],
			const struct fts_lmdb_uids *firsts,
			const struct fts_lmdb_uids *uids)
{
	uint8_t key[FTS_LMDB_POST_KEY_SIZE];
	size_t i;
	int ret;

	memcpy(key, prefix, FTS_LMDB_POST_PREFIX_SIZE);
	for (i = 0; i < firsts->n; i++) {
		put_be32(key + 13, firsts->v[i]);
		if ((ret = ldb_kv_del(txn, store->dbi_post, key,
				      sizeof(key))) < 0)
			return ret;
	}
	return post_write_blocks(txn, store, get_be32(prefix), prefix[4],
				 ((uint64_t)get_be32(prefix + 5) << 32) |
				 get_be32(prefix + 9), uids->v, uids->n);
}

/* New UIDs that don't simply follow the existing ones (a mailbox
   re-indexed after rescan lowered its last UID): merge. */
static int post_merge(struct ldb_txn *txn, struct batch_write_ctx *w,
		      const uint8_t prefix[FTS_LMDB_POST_KEY_SIZE],
		      const uint32_t *uids, size_t n)
{
	struct fts_lmdb_uids add = { (uint32_t *)uids, n, n };
	int ret;

	fts_lmdb_uids_clear(&w->tmp);
	fts_lmdb_uids_clear(&w->tmp2);
	if ((ret = post_read_all(txn, w->store, prefix, &w->tmp,
				 &w->tmp2)) < 0)
		return ret;
	fts_lmdb_uids_normalize(&w->tmp);
	fts_lmdb_uids_union(&w->tmp, &add);
	return post_rewrite(txn, w->store, prefix, &w->tmp2, &w->tmp);
}

/* Add uids (sorted, distinct) to the postings of (space, gram). */
static int post_append(struct ldb_txn *txn, struct batch_write_ctx *w,
		       struct ldb_cursor *cursor, uint32_t box_id,
		       uint8_t space, uint64_t gram,
		       const uint32_t *uids, size_t n)
{
	uint8_t seek[FTS_LMDB_POST_KEY_SIZE], prev[FTS_LMDB_POST_KEY_SIZE];
	uint8_t buf[FTS_LMDB_BLOCK_MAX_SIZE];
	const void *key = seek, *data;
	size_t key_size = sizeof(seek), size, take;
	uint32_t count, last;
	int ret;

	fts_lmdb_post_key(box_id, space, gram, uids[0], seek);
	ret = ldb_cursor_get(cursor, LDB_CURSOR_SET_RANGE, &key, &key_size,
			     NULL, NULL);
	if (ret < 0)
		return ret;
	if (ret > 0 && key_size == sizeof(seek) &&
	    memcmp(key, seek, FTS_LMDB_POST_PREFIX_SIZE) == 0) {
		/* a block starts at or after our first UID */
		return post_merge(txn, w, seek, uids, n);
	}
	ret = ldb_cursor_get(cursor, ret > 0 ? LDB_CURSOR_PREV :
			     LDB_CURSOR_LAST, &key, &key_size, &data, &size);
	if (ret < 0)
		return ret;
	if (ret == 0 || key_size != sizeof(seek) ||
	    memcmp(key, seek, FTS_LMDB_POST_PREFIX_SIZE) != 0) {
		/* the first postings of this gram */
		return post_write_blocks(txn, w->store, box_id, space, gram,
					 uids, n);
	}
	memcpy(prev, key, sizeof(prev));
	if (fts_lmdb_block_info(get_be32(prev + 13), data, size,
				&count, &last) < 0)
		return LDB_ERR_CORRUPT;
	if (last >= uids[0])
		return post_merge(txn, w, seek, uids, n);
	if (count < FTS_LMDB_BLOCK_MAX_UIDS) {
		/* fill the last block first */
		fts_lmdb_uids_clear(&w->tmp);
		if (fts_lmdb_block_decode(get_be32(prev + 13), data, size,
					  &w->tmp) < 0)
			return LDB_ERR_CORRUPT;
		take = FTS_LMDB_BLOCK_MAX_UIDS - count;
		if (take > n)
			take = n;
		fts_lmdb_uids_reserve(&w->tmp, take);
		memcpy(w->tmp.v + w->tmp.n, uids, take * sizeof(*uids));
		w->tmp.n += take;
		size = fts_lmdb_block_encode(w->tmp.v, w->tmp.n, buf);
		ret = ldb_kv_put(txn, w->store->dbi_post, prev, sizeof(prev),
				 buf, size, 0);
		if (ret < 0)
			return ret;
		uids += take;
		n -= take;
	}
	return n == 0 ? 0 : post_write_blocks(txn, w->store, box_id, space,
					       gram, uids, n);
}

static int store_mark_dead(struct ldb_txn *txn, struct fts_lmdb_store *store,
			   uint32_t box_id)
{
	uint8_t key[4];
	int ret;

	put_be32(key, box_id);
	ret = ldb_kv_put(txn, store->dbi_dead, key, sizeof(key), "", 0, 0);
	return ret < 0 ? ret : 0;
}

static int store_new_box_id(struct ldb_txn *txn, uint32_t *box_id_r)
{
	uint32_t next;
	int ret;

	if ((ret = ldb_meta_get_u32(txn, FTS_LMDB_META_NEXT_BOX, &next)) < 0)
		return ret;
	if (ret == 0 || next == 0)
		next = 1;
	if (next == UINT32_MAX)
		return LDB_ERR_INTERNAL;
	*box_id_r = next;
	return ldb_meta_put_u32(txn, FTS_LMDB_META_NEXT_BOX, next + 1);
}

/* Find (or create) the record the batch may write into. */
static int batch_write_box(struct ldb_txn *txn, struct batch_write_ctx *w,
			   struct fts_lmdb_box_rec *rec)
{
	struct fts_lmdb_batch *batch = w->batch;
	int ret;

	ret = fts_lmdb_store_box_get(txn, w->store, batch->guid, rec);
	if (ret < 0)
		return ret;
	if (ret > 0 && rec->uidvalidity == batch->uidvalidity) {
		if (rec->last_uid < batch->base)
			w->dropped = true;
		return 0;
	}
	if (batch->base != 0) {
		/* reset (or forgotten) by another process meanwhile */
		w->dropped = true;
		return 0;
	}
	if (ret > 0 && (ret = store_mark_dead(txn, w->store, rec->box_id)) < 0)
		return ret;
	memset(rec, 0, sizeof(*rec));
	rec->uidvalidity = batch->uidvalidity;
	return store_new_box_id(txn, &rec->box_id);
}

static int batch_write_docs(struct ldb_txn *txn, struct batch_write_ctx *w,
			    const struct fts_lmdb_box_rec *rec)
{
	struct fts_lmdb_batch *batch = w->batch;
	uint8_t key[FTS_LMDB_DOC_KEY_SIZE];
	unsigned int i;
	int ret;

	for (i = 0; i < batch->doc_count; i++) {
		const struct fts_lmdb_batch_doc *d = &batch->docs[i];

		if (d->uid <= rec->last_uid)
			continue;
		doc_key(rec->box_id, d->uid, key);
		ret = ldb_kv_put(txn, w->store->dbi_doc, key, sizeof(key),
				 batch->doc_data.data + d->off, d->size, 0);
		if (ret < 0)
			return ret;
		ret = ldb_kv_put(txn, w->store->dbi_uid, key, sizeof(key),
				 &d->flags, 1, 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int batch_write_postings(struct ldb_txn *txn,
				struct batch_write_ctx *w,
				const struct fts_lmdb_box_rec *rec)
{
	struct fts_lmdb_batch *batch = w->batch;
	struct fts_lmdb_uids group = { NULL, 0, 0 };
	struct ldb_cursor *cursor;
	size_t i = 0, j;
	int ret;

	if ((ret = ldb_cursor_open(txn, w->store->dbi_post, &cursor)) < 0)
		return ret;
	while (i < batch->tuple_count && ret >= 0) {
		const struct fts_lmdb_tuple *t = &batch->tuples[i];
		bool sorted = true;

		fts_lmdb_uids_clear(&group);
		for (j = i; j < batch->tuple_count &&
		     batch->tuples[j].space == t->space &&
		     batch->tuples[j].gram == t->gram; j++) {
			uint32_t uid = batch->tuples[j].uid;

			if (uid <= rec->last_uid)
				continue;
			if (group.n > 0 && group.v[group.n - 1] >= uid)
				sorted = false;
			fts_lmdb_uids_push(&group, uid);
		}
		if (!sorted) {
			/* the same UID twice, or not added in UID order */
			fts_lmdb_uids_normalize(&group);
		}
		if (group.n > 0) {
			ret = post_append(txn, w, cursor, rec->box_id,
					  t->space, t->gram, group.v, group.n);
		}
		i = j;
	}
	ldb_cursor_close(&cursor);
	fts_lmdb_uids_free(&group);
	return ret;
}

static int batch_write(struct ldb_txn *txn, void *context)
{
	struct batch_write_ctx *w = context;
	struct fts_lmdb_box_rec rec;
	int ret;

	w->dropped = false;
	if ((ret = batch_write_box(txn, w, &rec)) < 0)
		return ret;
	if (w->dropped)
		return 0;
	if ((ret = batch_write_docs(txn, w, &rec)) < 0 ||
	    (ret = batch_write_postings(txn, w, &rec)) < 0)
		return ret;
	if (w->batch->max_uid > rec.last_uid)
		rec.last_uid = w->batch->max_uid;
	w->new_last_uid = rec.last_uid;
	return store_box_put(txn, w->store, w->batch->guid, &rec);
}

static void batch_empty(struct fts_lmdb_batch *batch)
{
	batch->tuple_count = 0;
	batch->doc_count = 0;
	batch->doc_data.used = 0;
	batch->max_uid = 0;
}

int fts_lmdb_batch_flush(struct fts_lmdb_store *store,
			 struct fts_lmdb_batch *batch)
{
	struct batch_write_ctx w;
	int ret;

	if (batch->max_uid == 0)
		return 1;
	memset(&w, 0, sizeof(w));
	w.store = store;
	w.batch = batch;
	tuples_sort(batch->tuples, batch->tuple_count);
	ret = ldb_write(store->env, batch_write, &w);
	fts_lmdb_uids_free(&w.tmp);
	fts_lmdb_uids_free(&w.tmp2);
	batch_empty(batch);
	if (ret < 0)
		return ret;
	if (w.dropped)
		return 0;
	batch->base = w.new_last_uid;
	return 1;
}

/* ---- expunge and maintenance ---- */

struct expunge_ctx {
	struct fts_lmdb_store *store;
	const uint8_t *guid;
	uint32_t uidvalidity;
	/* box_id 0: any */
	uint32_t box_id;
	const uint32_t *uids;
	size_t count;
	uint32_t max_last_uid;
	/* compaction: the dead count it removed */
	uint32_t dead_removed;
	int deleted;
};

static int store_delete_texts(struct ldb_txn *txn, struct expunge_ctx *ctx,
			      uint32_t box_id)
{
	uint8_t key[FTS_LMDB_DOC_KEY_SIZE];
	size_t i;
	int ret, ret2;

	for (i = 0; i < ctx->count; i++) {
		doc_key(box_id, ctx->uids[i], key);
		ret = ldb_kv_del(txn, ctx->store->dbi_doc, key, sizeof(key));
		if (ret < 0)
			return ret;
		ret2 = ldb_kv_del(txn, ctx->store->dbi_uid, key, sizeof(key));
		if (ret2 < 0)
			return ret2;
		if (ret > 0 || ret2 > 0)
			ctx->deleted++;
	}
	return 0;
}

static int expunge_write(struct ldb_txn *txn, void *context)
{
	struct expunge_ctx *ctx = context;
	struct fts_lmdb_box_rec rec;
	int ret;

	ctx->deleted = 0;
	ret = fts_lmdb_store_box_get(txn, ctx->store, ctx->guid, &rec);
	if (ret <= 0)
		return ret;
	if ((ctx->box_id != 0 && rec.box_id != ctx->box_id) ||
	    (ctx->box_id == 0 && rec.uidvalidity != ctx->uidvalidity))
		return 0;
	if ((ret = store_delete_texts(txn, ctx, rec.box_id)) < 0)
		return ret;
	if (ctx->deleted == 0 && rec.last_uid <= ctx->max_last_uid)
		return 0;
	rec.dead += ctx->deleted;
	if (rec.last_uid > ctx->max_last_uid)
		rec.last_uid = ctx->max_last_uid;
	return store_box_put(txn, ctx->store, ctx->guid, &rec);
}

int fts_lmdb_store_expunge(struct fts_lmdb_store *store,
			   const uint8_t guid[LDB_GUID_SIZE],
			   uint32_t uidvalidity, const uint32_t *uids,
			   size_t count)
{
	struct expunge_ctx ctx;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	ctx.store = store;
	ctx.guid = guid;
	ctx.uidvalidity = uidvalidity;
	ctx.uids = uids;
	ctx.count = count;
	ctx.max_last_uid = UINT32_MAX;
	if ((ret = ldb_write(store->env, expunge_write, &ctx)) < 0)
		return ret;
	return ctx.deleted;
}

int fts_lmdb_store_box_repair(struct fts_lmdb_store *store,
			      const uint8_t guid[LDB_GUID_SIZE],
			      uint32_t box_id, const uint32_t *extra_uids,
			      size_t extra_count, uint32_t max_last_uid)
{
	struct expunge_ctx ctx;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	ctx.store = store;
	ctx.guid = guid;
	ctx.box_id = box_id;
	ctx.uids = extra_uids;
	ctx.count = extra_count;
	ctx.max_last_uid = max_last_uid;
	if ((ret = ldb_write(store->env, expunge_write, &ctx)) < 0)
		return ret;
	return ctx.deleted;
}

int fts_lmdb_store_boxes(struct fts_lmdb_store *store,
			 struct fts_lmdb_box_entry **boxes_r,
			 size_t *count_r)
{
	struct fts_lmdb_box_entry *boxes = NULL;
	struct ldb_txn *txn;
	struct ldb_cursor *cursor;
	const void *key, *data;
	size_t key_size, size, count = 0, cap = 0;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	struct fts_lmdb_box_rec rec;
	int ret;

	*boxes_r = NULL;
	*count_r = 0;
	if ((ret = ldb_txn_begin(store->env, false, &txn)) < 0)
		return ret;
	if ((ret = ldb_cursor_open(txn, store->dbi_box, &cursor)) < 0) {
		ldb_txn_abort(&txn);
		return ret;
	}
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		op = LDB_CURSOR_NEXT;
		if (key_size != LDB_GUID_SIZE ||
		    fts_lmdb_box_rec_decode(data, size, &rec) < 0)
			continue;
		if (count == cap) {
			cap = cap < 16 ? 16 : cap * 2;
			boxes = store_realloc(boxes, cap, sizeof(*boxes));
		}
		memcpy(boxes[count].guid, key, LDB_GUID_SIZE);
		boxes[count++].rec = rec;
	}
	ldb_cursor_close(&cursor);
	ldb_txn_abort(&txn);
	if (ret < 0) {
		free(boxes);
		return ret;
	}
	*boxes_r = boxes;
	*count_r = count;
	return 0;
}

static int box_drop_write(struct ldb_txn *txn, void *context)
{
	struct expunge_ctx *ctx = context;
	struct fts_lmdb_box_rec rec;
	int ret;

	ret = fts_lmdb_store_box_get(txn, ctx->store, ctx->guid, &rec);
	if (ret <= 0)
		return ret;
	if ((ret = store_mark_dead(txn, ctx->store, rec.box_id)) < 0)
		return ret;
	ret = ldb_kv_del(txn, ctx->store->dbi_box, ctx->guid, LDB_GUID_SIZE);
	return ret < 0 ? ret : 0;
}

int fts_lmdb_store_box_drop(struct fts_lmdb_store *store,
			    const uint8_t guid[LDB_GUID_SIZE])
{
	struct expunge_ctx ctx;

	memset(&ctx, 0, sizeof(ctx));
	ctx.store = store;
	ctx.guid = guid;
	return ldb_write(store->env, box_drop_write, &ctx);
}

struct purge_ctx {
	struct fts_lmdb_store *store;
	bool any_left, done_one;
};

/* Delete up to *budget keys of dbi that start with prefix.
   Returns 1 if all are gone, 0 if the budget ran out. */
static int delete_prefix(struct ldb_txn *txn, unsigned int dbi,
			 const uint8_t *prefix, size_t prefix_size,
			 unsigned int *budget)
{
	struct ldb_cursor *cursor;
	const void *key;
	size_t key_size;
	int ret;

	if ((ret = ldb_cursor_open(txn, dbi, &cursor)) < 0)
		return ret;
	for (;;) {
		if (*budget == 0) {
			ret = 0;
			break;
		}
		key = prefix;
		key_size = prefix_size;
		ret = ldb_cursor_get(cursor, LDB_CURSOR_SET_RANGE, &key,
				     &key_size, NULL, NULL);
		if (ret <= 0 || key_size < prefix_size ||
		    memcmp(key, prefix, prefix_size) != 0) {
			ret = ret < 0 ? ret : 1;
			break;
		}
		if ((ret = ldb_cursor_del(cursor)) < 0)
			break;
		(*budget)--;
	}
	ldb_cursor_close(&cursor);
	return ret;
}

static int purge_write(struct ldb_txn *txn, void *context)
{
	struct purge_ctx *ctx = context;
	struct fts_lmdb_store *store = ctx->store;
	struct ldb_cursor *cursor;
	const void *key;
	size_t key_size;
	uint8_t prefix[4];
	unsigned int budget = FTS_LMDB_MAINT_CHUNK;
	int ret;

	ctx->any_left = false;
	ctx->done_one = false;
	if ((ret = ldb_cursor_open(txn, store->dbi_dead, &cursor)) < 0)
		return ret;
	ret = ldb_cursor_get(cursor, LDB_CURSOR_FIRST, &key, &key_size,
			     NULL, NULL);
	if (ret > 0 && key_size == sizeof(prefix))
		memcpy(prefix, key, sizeof(prefix));
	ldb_cursor_close(&cursor);
	if (ret <= 0)
		return ret;
	if (key_size != sizeof(prefix)) {
		/* not ours: drop it */
		ctx->any_left = true;
		ret = ldb_kv_del(txn, store->dbi_dead, key, key_size);
		return ret < 0 ? ret : 0;
	}
	ctx->any_left = true;
	if ((ret = delete_prefix(txn, store->dbi_post, prefix, 4,
				 &budget)) <= 0 ||
	    (ret = delete_prefix(txn, store->dbi_doc, prefix, 4,
				 &budget)) <= 0 ||
	    (ret = delete_prefix(txn, store->dbi_uid, prefix, 4,
				 &budget)) <= 0)
		return ret;
	ctx->done_one = true;
	ret = ldb_kv_del(txn, store->dbi_dead, prefix, sizeof(prefix));
	return ret < 0 ? ret : 0;
}

int fts_lmdb_store_purge_dead(struct fts_lmdb_store *store)
{
	struct purge_ctx ctx;
	int ret, purged = 0;

	memset(&ctx, 0, sizeof(ctx));
	ctx.store = store;
	do {
		if ((ret = ldb_write(store->env, purge_write, &ctx)) < 0)
			return ret;
		if (ctx.done_one)
			purged++;
	} while (ctx.any_left);
	return purged;
}

struct compact_ctx {
	struct fts_lmdb_store *store;
	uint32_t box_id, snapshot_last_uid;
	const struct fts_lmdb_uids *live;
	/* where this transaction starts, and where the next one will */
	uint8_t resume[FTS_LMDB_POST_KEY_SIZE], next[FTS_LMDB_POST_KEY_SIZE];
	bool finished;
	int dropped, dropped_total;
	struct fts_lmdb_uids all, firsts, kept;
};

/* Read the group of blocks that starts at the first key >= from, and the
   first key after it.  Returns 1 = got a group, 0 = no more groups. */
static int compact_read_group(struct ldb_txn *txn, struct compact_ctx *ctx,
			      const uint8_t *from,
			      uint8_t group_r[FTS_LMDB_POST_KEY_SIZE])
{
	int ret;
	const void *key = from;
	size_t key_size = FTS_LMDB_POST_KEY_SIZE;
	struct ldb_cursor *cursor;

	if ((ret = ldb_cursor_open(txn, ctx->store->dbi_post, &cursor)) < 0)
		return ret;
	ret = ldb_cursor_get(cursor, LDB_CURSOR_SET_RANGE, &key, &key_size,
			     NULL, NULL);
	ldb_cursor_close(&cursor);
	if (ret <= 0)
		return ret;
	if (key_size != FTS_LMDB_POST_KEY_SIZE ||
	    get_be32(key) != ctx->box_id)
		return 0;
	memcpy(group_r, key, FTS_LMDB_POST_KEY_SIZE);
	put_be32(group_r + 13, 0);
	fts_lmdb_uids_clear(&ctx->all);
	fts_lmdb_uids_clear(&ctx->firsts);
	return post_read_all(txn, ctx->store, group_r, &ctx->all,
			     &ctx->firsts) < 0 ? LDB_ERR_CORRUPT : 1;
}

static void compact_next_prefix(uint8_t key[FTS_LMDB_POST_KEY_SIZE])
{
	int i;

	/* the smallest key after every key with this 13-byte prefix */
	put_be32(key + 13, 0);
	for (i = FTS_LMDB_POST_PREFIX_SIZE - 1; i >= 0; i--) {
		if (++key[i] != 0)
			break;
	}
}

static int compact_write(struct ldb_txn *txn, void *context)
{
	struct compact_ctx *ctx = context;
	uint8_t group[FTS_LMDB_POST_KEY_SIZE];
	unsigned int blocks = 0;
	size_t i, need;
	int ret;

	ctx->dropped = 0;
	ctx->finished = false;
	memcpy(ctx->next, ctx->resume, sizeof(ctx->next));
	while (blocks < FTS_LMDB_MAINT_CHUNK) {
		ret = compact_read_group(txn, ctx, ctx->next, group);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			ctx->finished = true;
			return 0;
		}
		blocks += ctx->firsts.n;
		fts_lmdb_uids_clear(&ctx->kept);
		for (i = 0; i < ctx->all.n; i++) {
			uint32_t uid = ctx->all.v[i];

			if (uid > ctx->snapshot_last_uid ||
			    fts_lmdb_uids_contains(ctx->live, uid))
				fts_lmdb_uids_push(&ctx->kept, uid);
		}
		fts_lmdb_uids_normalize(&ctx->kept);
		need = (ctx->kept.n + FTS_LMDB_BLOCK_MAX_UIDS - 1) /
			FTS_LMDB_BLOCK_MAX_UIDS;
		if (ctx->kept.n != ctx->all.n || need < ctx->firsts.n) {
			ctx->dropped += ctx->all.n - ctx->kept.n;
			ret = post_rewrite(txn, ctx->store, group,
					   &ctx->firsts, &ctx->kept);
			if (ret < 0)
				return ret;
		}
		memcpy(ctx->next, group, sizeof(group));
		compact_next_prefix(ctx->next);
	}
	return 0;
}

static int compact_finish_write(struct ldb_txn *txn, void *context)
{
	struct expunge_ctx *ctx = context;
	struct fts_lmdb_box_rec rec;
	int ret;

	ret = fts_lmdb_store_box_get(txn, ctx->store, ctx->guid, &rec);
	if (ret <= 0 || rec.box_id != ctx->box_id)
		return ret;
	rec.dead = rec.dead > ctx->dead_removed ?
		rec.dead - ctx->dead_removed : 0;
	return store_box_put(txn, ctx->store, ctx->guid, &rec);
}

static int compact_snapshot(struct fts_lmdb_store *store,
			    const uint8_t guid[LDB_GUID_SIZE],
			    struct fts_lmdb_box_rec *rec_r,
			    struct fts_lmdb_uids *live)
{
	struct ldb_txn *txn;
	int ret;

	if ((ret = ldb_txn_begin(store->env, false, &txn)) < 0)
		return ret;
	ret = fts_lmdb_store_box_get(txn, store, guid, rec_r);
	if (ret > 0 && rec_r->dead > 0 &&
	    fts_lmdb_store_uids(txn, store, rec_r->box_id, live, NULL,
				NULL) < 0)
		ret = -1;
	ldb_txn_abort(&txn);
	return ret;
}

int fts_lmdb_store_compact_box(struct fts_lmdb_store *store,
			       const uint8_t guid[LDB_GUID_SIZE])
{
	struct fts_lmdb_box_rec rec;
	struct fts_lmdb_uids live = { NULL, 0, 0 };
	struct compact_ctx ctx;
	struct expunge_ctx fin;
	int ret;

	ret = compact_snapshot(store, guid, &rec, &live);
	if (ret <= 0 || rec.dead == 0) {
		fts_lmdb_uids_free(&live);
		return ret < 0 ? ret : 0;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.store = store;
	ctx.box_id = rec.box_id;
	ctx.snapshot_last_uid = rec.last_uid;
	ctx.live = &live;
	fts_lmdb_post_key(rec.box_id, 0, 0, 0, ctx.resume);
	do {
		if ((ret = ldb_write(store->env, compact_write, &ctx)) < 0)
			break;
		ctx.dropped_total += ctx.dropped;
		memcpy(ctx.resume, ctx.next, sizeof(ctx.resume));
	} while (!ctx.finished);
	if (ret >= 0) {
		memset(&fin, 0, sizeof(fin));
		fin.store = store;
		fin.guid = guid;
		fin.box_id = rec.box_id;
		fin.dead_removed = rec.dead;
		ret = ldb_write(store->env, compact_finish_write, &fin);
	}
	fts_lmdb_uids_free(&live);
	fts_lmdb_uids_free(&ctx.all);
	fts_lmdb_uids_free(&ctx.firsts);
	fts_lmdb_uids_free(&ctx.kept);
	return ret < 0 ? ret : ctx.dropped_total;
}
