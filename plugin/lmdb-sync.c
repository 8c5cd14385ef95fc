/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Syncing the index with LMDB.

   Under the index sync lock:
   - expunge requests delete the LMDB record and release the body, in one
     LMDB transaction that commits before the index does;
   - flag, keyword and modseq changes are mirrored into the LMDB records, so
     that nothing lives only in the index;
   - LMDB records at or above the index's next UID (left by a crash between
     the LMDB commit and the index commit of a save) are added to the
     index;
   - UIDs that a reader found missing from LMDB are expunged. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "mail-index-modseq.h"
#include "mailbox-recent-flags.h"
#include "index-rebuild.h"
#include "lmdb-storage.h"

#define LMDB_REBUILD_COUNT 3

static void lmdb_sync_add(struct lmdb_sync_context *ctx,
			  const struct mail_index_sync_rec *sync_rec)
{
	uint32_t seq, seq1, seq2, uid;

	switch (sync_rec->type) {
	case MAIL_INDEX_SYNC_TYPE_EXPUNGE:
		if (!mail_index_lookup_seq_range(ctx->sync_view,
						 sync_rec->uid1, sync_rec->uid2,
						 &seq1, &seq2)) {
			/* already expunged everything. nothing to do. */
			return;
		}
		for (seq = seq1; seq <= seq2; seq++) {
			mail_index_lookup_uid(ctx->sync_view, seq, &uid);
			if (!mail_index_transaction_is_expunged(ctx->trans, seq)) {
				mail_index_expunge(ctx->trans, seq);
				seq_range_array_add(&ctx->expunged_uids, uid);
			}
		}
		break;
	case MAIL_INDEX_SYNC_TYPE_FLAGS:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_ADD:
	case MAIL_INDEX_SYNC_TYPE_KEYWORD_REMOVE:
		seq_range_array_add_range(&ctx->changed_uids,
					  sync_rec->uid1, sync_rec->uid2);
		break;
	}
}

static void lmdb_sync_expunge_lost(struct lmdb_sync_context *ctx)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	struct seq_range_iter iter;
	unsigned int n = 0;
	uint32_t uid, seq;

	seq_range_array_iter_init(&iter, &mbox->lost_uids);
	while (seq_range_array_iter_nth(&iter, n++, &uid)) {
		if (mail_index_lookup_seq(ctx->sync_view, uid, &seq) &&
		    !mail_index_transaction_is_expunged(ctx->trans, seq)) {
			mail_index_expunge(ctx->trans, seq);
			seq_range_array_add(&ctx->expunged_uids, uid);
		}
	}
	array_clear(&mbox->lost_uids);
}

static const char *const *
lmdb_sync_keywords_from_msg(const struct lmdb_msg *msg)
{
	ARRAY_TYPE(const_string) kws;

	if (array_count(&msg->keywords) == 0)
		return NULL;
	t_array_init(&kws, array_count(&msg->keywords) + 1);
	array_append_array(&kws, &msg->keywords);
	array_append_zero(&kws);
	return array_front(&kws);
}

/* Add one LMDB record to the index in trans (recovery and rebuild). */
static uint32_t lmdb_sync_append_msg(struct mailbox *box,
				     struct mail_index_transaction *trans,
				     const struct lmdb_msg *msg)
{
	const char *const *names;
	struct mail_keywords *kw;
	uint32_t seq;

	mail_index_append(trans, msg->uid, &seq);
	mail_index_update_flags(trans, seq, MODIFY_REPLACE,
				msg->flags & MAIL_FLAGS_NONRECENT);
	names = lmdb_sync_keywords_from_msg(msg);
	if (names != NULL) {
		kw = mail_index_keywords_create(box->index, names);
		mail_index_update_keywords(trans, seq, MODIFY_REPLACE, kw);
		mail_index_keywords_unref(&kw);
	}
	if (msg->modseq != 0)
		mail_index_update_modseq(trans, seq, msg->modseq);
	return seq;
}

/* Records in LMDB at or above the index's next UID come from a crash
   between the two commits of a save: add them to the index. */
static int lmdb_sync_recover(struct lmdb_sync_context *ctx)
{
	struct lmdb_mailbox *mbox = ctx->mbox;
	const struct mail_index_header *hdr =
		mail_index_get_header(ctx->sync_view);
	struct ldb_mailbox_rec mrec;
	struct ldb_msg_iter *iter;
	struct ldb_msg_rec rec;
	struct lmdb_msg msg;
	struct ldb_env *env;
	struct ldb_txn *txn;
	uint32_t uid, next_uid = hdr->next_uid;
	int ret;

	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	if ((ret = ldb_txn_begin(env, FALSE, &txn)) < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "sync read");
		return -1;
	}
	ret = ldb_mailbox_get(txn, mbox->mailbox_guid, &mrec);
	if (ret <= 0 || mrec.next_uid <= hdr->next_uid) {
		ldb_txn_abort(&txn);
		if (ret < 0)
			lmdb_mailbox_set_ldb_error(&mbox->box, ret, "sync read");
		return ret < 0 ? -1 : 0;
	}
	iter = ldb_msg_iter_init(txn, mbox->mailbox_guid, hdr->next_uid);
	while ((ret = ldb_msg_iter_next(iter, &uid, &rec)) > 0) T_BEGIN {
		lmdb_msg_from_rec(&rec, uid, pool_datastack_create(), &msg);
		(void)lmdb_sync_append_msg(&mbox->box, ctx->trans, &msg);
		ctx->recovered_count++;
		next_uid = uid + 1;
	} T_END;
	if (ldb_msg_iter_deinit(&iter) < 0 && ret >= 0)
		ret = -1;
	ldb_txn_abort(&txn);
	if (ret < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "sync recover");
		return -1;
	}
	if (mrec.next_uid > next_uid) {
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, next_uid),
			&mrec.next_uid, sizeof(mrec.next_uid), FALSE);
	}
	if (ctx->recovered_count > 0) {
		e_warning(event_create_passthrough(mbox->box.event)->
			  set_name("lmdb_recover")->
			  add_int("messages", ctx->recovered_count)->event(),
			  "lmdb: Added %u messages that were "
			  "committed to LMDB but missing from the index",
			  ctx->recovered_count);
	}
	return 0;
}

int lmdb_mirror_keyword_list(struct ldb_txn *txn, struct lmdb_mailbox *mbox)
{
	const ARRAY_TYPE(keywords) *names =
		mail_index_get_keywords(mbox->box.index);
	ARRAY_TYPE(const_string) kws;
	const uint8_t *data;
	size_t size;
	unsigned int count = 0;
	int ret;

	if (array_count(names) == 0)
		return 0;
	ret = ldb_mailbox_keywords_get(txn, mbox->mailbox_guid, &data, &size,
				       &count);
	if (ret < 0)
		return ret;
	/* keywords are only ever added to an index */
	if (ret > 0 && count >= array_count(names))
		return 0;
	t_array_init(&kws, array_count(names) + 1);
	array_append_array(&kws, names);
	array_append_zero(&kws);
	return ldb_mailbox_keywords_put(txn, mbox->mailbox_guid,
					array_front(&kws));
}

struct lmdb_sync_write_ctx {
	struct lmdb_sync_context *ctx;
	const ARRAY_TYPE(keywords) *names;
};

static int lmdb_sync_write_changed(struct ldb_txn *txn,
				   struct lmdb_sync_write_ctx *wctx,
				   uint32_t uid)
{
	struct lmdb_sync_context *ctx = wctx->ctx;
	const struct mail_index_record *irec;
	ARRAY_TYPE(keyword_indexes) kw_idx;
	ARRAY_TYPE(const_string) kws;
	unsigned int idx;
	uint32_t seq;
	uint64_t modseq;

	if (!mail_index_lookup_seq(ctx->sync_view, uid, &seq) ||
	    seq_range_exists(&ctx->expunged_uids, uid))
		return 0;
	irec = mail_index_lookup(ctx->sync_view, seq);
	t_array_init(&kw_idx, 8);
	mail_index_lookup_keywords(ctx->sync_view, seq, &kw_idx);
	t_array_init(&kws, array_count(&kw_idx) + 1);
	array_foreach_elem(&kw_idx, idx) {
		if (idx < array_count(wctx->names)) {
			const char *name = array_idx_elem(wctx->names, idx);
			array_push_back(&kws, &name);
		}
	}
	array_append_zero(&kws);
	modseq = mail_index_modseq_lookup(ctx->sync_view, seq);
	return ldb_msg_update_flags(txn, ctx->mbox->mailbox_guid, uid,
				    irec->flags & MAIL_FLAGS_NONRECENT,
				    array_front(&kws), modseq);
}

static int lmdb_sync_write_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_sync_write_ctx *wctx = context;
	struct lmdb_sync_context *ctx = wctx->ctx;
	struct ldb_mailbox_rec mrec;
	struct seq_range_iter iter;
	unsigned int n;
	uint32_t uid, first_recent_uid;
	uint64_t highest;
	int ret;

	seq_range_array_iter_init(&iter, &ctx->expunged_uids); n = 0;
	while (seq_range_array_iter_nth(&iter, n++, &uid)) {
		if ((ret = ldb_msg_expunge(txn, ctx->mbox->mailbox_guid,
					   uid)) < 0)
			return ret;
	}
	seq_range_array_iter_init(&iter, &ctx->changed_uids); n = 0;
	while (seq_range_array_iter_nth(&iter, n++, &uid)) {
		T_BEGIN {
			ret = lmdb_sync_write_changed(txn, wctx, uid);
		} T_END;
		if (ret < 0)
			return ret;
	}
	if ((ret = ldb_mailbox_get(txn, ctx->mbox->mailbox_guid, &mrec)) < 0)
		return ret;
	/* an upper bound: this sync's own expunges get modseqs too */
	highest = mail_index_modseq_get_highest(ctx->sync_view) + 1 +
		seq_range_count(&ctx->expunged_uids);
	first_recent_uid =
		mail_index_get_header(ctx->sync_view)->first_recent_uid;
	if (ret > 0 && (mrec.highest_modseq < highest ||
			mrec.first_recent_uid != first_recent_uid)) {
		if (mrec.highest_modseq < highest)
			mrec.highest_modseq = highest;
		mrec.first_recent_uid = first_recent_uid;
		if ((ret = ldb_mailbox_put(txn, ctx->mbox->mailbox_guid,
					   &mrec)) < 0)
			return ret;
	}
	T_BEGIN {
		ret = lmdb_mirror_keyword_list(txn, ctx->mbox);
	} T_END;
	return ret < 0 ? ret : 0;
}

/* Apply the expunges and mirror the flag changes to LMDB, before the index
   commits them. */
static int lmdb_sync_write_lmdb(struct lmdb_sync_context *ctx)
{
	struct lmdb_sync_write_ctx wctx;
	struct ldb_env *env;
	struct event *event;
	unsigned int expunged, changed;
	int ret;

	if (array_count(&ctx->expunged_uids) == 0 &&
	    array_count(&ctx->changed_uids) == 0)
		return 0;
	if (lmdb_storage_get_env(ctx->mbox->storage, &env) < 0)
		return -1;
	wctx.ctx = ctx;
	wctx.names = mail_index_get_keywords(ctx->mbox->box.index);
	event = event_create(ctx->mbox->box.event);
	event_set_name(event, "lmdb_sync_write");
	if ((ret = ldb_write(env, lmdb_sync_write_fn, &wctx)) < 0) {
		lmdb_mailbox_set_ldb_error(&ctx->mbox->box, ret, "sync write");
		event_unref(&event);
		return -1;
	}
	expunged = seq_range_count(&ctx->expunged_uids);
	changed = seq_range_count(&ctx->changed_uids);
	event_add_int(event, "expunged", expunged);
	event_add_int(event, "changed", changed);
	e_debug(event, "lmdb: Wrote sync to LMDB: %u expunged, %u flag "
		"changes in %lld ms", expunged, changed,
		lmdb_event_msecs(event));
	event_unref(&event);
	return 0;
}

static bool lmdb_mailbox_has_lmdb_record(struct lmdb_mailbox *mbox)
{
	struct ldb_mailbox_rec rec;
	struct ldb_env *env;
	struct ldb_txn *txn;
	int ret;

	/* mailbox_open() syncs before it has read the GUID from the index
	   header: a lost index has only the GUID file to find LMDB's
	   records with */
	if (guid_128_is_empty(mbox->mailbox_guid))
		(void)lmdb_mailbox_guid_file_read(mbox, mbox->mailbox_guid);
	if (guid_128_is_empty(mbox->mailbox_guid) ||
	    lmdb_storage_get_env(mbox->storage, &env) < 0 ||
	    ldb_txn_begin(env, FALSE, &txn) < 0)
		return FALSE;
	ret = ldb_mailbox_get(txn, mbox->mailbox_guid, &rec);
	ldb_txn_abort(&txn);
	return ret > 0;
}

/* 1 = synced, 0 = needs a rebuild, -1 = error */
static int lmdb_sync_index(struct lmdb_sync_context *ctx)
{
	struct mailbox *box = &ctx->mbox->box;
	const struct mail_index_header *hdr;
	struct mail_index_sync_rec sync_rec;
	uint32_t seq1, seq2;

	hdr = mail_index_get_header(ctx->sync_view);
	if (hdr->uid_validity == 0) {
		/* newly created index file */
		if (hdr->next_uid == 1 &&
		    !lmdb_mailbox_has_lmdb_record(ctx->mbox)) {
			/* could be just a race condition where we opened the
			   mailbox between mkdir and index creation. fix this
			   silently. */
			if (lmdb_mailbox_create_indexes(box, NULL, ctx->trans) < 0)
				return -1;
			return 1;
		}
		/* the index was lost, but LMDB knows the mailbox */
		e_warning(box->event, "lmdb: Index is missing UIDVALIDITY: "
			  "rebuilding it from LMDB");
		lmdb_set_mailbox_corrupted(box);
		return 0;
	}

	/* mark the newly seen messages as recent */
	if (mail_index_lookup_seq_range(ctx->sync_view, hdr->first_recent_uid,
					hdr->next_uid, &seq1, &seq2))
		mailbox_recent_flags_set_seqs(box, ctx->sync_view, seq1, seq2);

	while (mail_index_sync_next(ctx->index_sync_ctx, &sync_rec))
		lmdb_sync_add(ctx, &sync_rec);
	lmdb_sync_expunge_lost(ctx);
	if (lmdb_sync_recover(ctx) < 0)
		return -1;
	if (lmdb_sync_write_lmdb(ctx) < 0)
		return -1;
	return 1;
}

static void lmdb_sync_context_free(struct lmdb_sync_context **_ctx)
{
	struct lmdb_sync_context *ctx = *_ctx;

	*_ctx = NULL;
	array_free(&ctx->expunged_uids);
	array_free(&ctx->changed_uids);
	i_free(ctx);
}

/* A crash between the LMDB commit and the index commit of a save leaves
   nothing in the index to sync, so MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES
   would skip the recovery: compare the two next UIDs first (one read). */
static bool lmdb_sync_lmdb_is_ahead(struct lmdb_mailbox *mbox)
{
	struct mail_index_view *view;
	struct ldb_mailbox_rec rec;
	struct ldb_env *env;
	struct ldb_txn *txn;
	uint32_t index_next_uid;
	int ret;

	if (guid_128_is_empty(mbox->mailbox_guid) ||
	    lmdb_storage_get_env(mbox->storage, &env) < 0)
		return FALSE;
	(void)mail_index_refresh(mbox->box.index);
	view = mail_index_view_open(mbox->box.index);
	index_next_uid = mail_index_get_header(view)->next_uid;
	mail_index_view_close(&view);

	if (ldb_txn_begin(env, FALSE, &txn) < 0)
		return TRUE; /* let the full sync report it */
	ret = ldb_mailbox_get(txn, mbox->mailbox_guid, &rec);
	ldb_txn_abort(&txn);
	return ret != 0 && (ret < 0 || rec.next_uid > index_next_uid);
}

int lmdb_sync_begin(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags,
		    struct lmdb_sync_context **ctx_r)
{
	const struct mail_index_header *hdr =
		mail_index_get_header(mbox->box.view);
	struct lmdb_sync_context *ctx;
	enum mail_index_sync_flags sync_flags;
	unsigned int i;
	int ret;
	bool rebuild, force_rebuild;

	force_rebuild = (flags & LMDB_SYNC_FLAG_FORCE_REBUILD) != 0;
	rebuild = force_rebuild ||
		(hdr->flags & MAIL_INDEX_HDR_FLAG_FSCKD) != 0 ||
		mbox->corrupted_rebuild_count != 0;

	ctx = i_new(struct lmdb_sync_context, 1);
	ctx->mbox = mbox;
	ctx->flags = flags;
	i_array_init(&ctx->expunged_uids, 32);
	i_array_init(&ctx->changed_uids, 32);

	sync_flags = index_storage_get_sync_flags(&mbox->box);
	if (!rebuild && (flags & LMDB_SYNC_FLAG_FORCE) == 0 &&
	    array_count(&mbox->lost_uids) == 0 &&
	    !lmdb_sync_lmdb_is_ahead(mbox))
		sync_flags |= MAIL_INDEX_SYNC_FLAG_REQUIRE_CHANGES;
	if ((flags & LMDB_SYNC_FLAG_FSYNC) != 0)
		sync_flags |= MAIL_INDEX_SYNC_FLAG_FSYNC;
	/* don't write unnecessary dirty flag updates */
	sync_flags |= MAIL_INDEX_SYNC_FLAG_AVOID_FLAG_UPDATES;

	for (i = 0;; i++) {
		ret = index_storage_expunged_sync_begin(&mbox->box,
				&ctx->index_sync_ctx, &ctx->sync_view,
				&ctx->trans, sync_flags);
		if (mail_index_reset_fscked(mbox->box.index))
			lmdb_set_mailbox_corrupted(&mbox->box);
		if (ret <= 0) {
			lmdb_sync_context_free(&ctx);
			*ctx_r = NULL;
			return ret;
		}

		if (rebuild)
			ret = 0;
		else {
			if ((ret = lmdb_sync_index(ctx)) > 0)
				break;
		}

		/* failure. keep the index locked while we're doing a
		   rebuild. */
		if (ret == 0) {
			if (i >= LMDB_REBUILD_COUNT) {
				mailbox_set_critical(&ctx->mbox->box,
					"lmdb: Index keeps breaking");
				ret = -1;
			} else {
				/* do a full resync and try again. */
				rebuild = FALSE;
				ret = lmdb_sync_index_rebuild(mbox,
							      force_rebuild);
			}
		}
		mail_index_sync_rollback(&ctx->index_sync_ctx);
		array_clear(&ctx->expunged_uids);
		array_clear(&ctx->changed_uids);
		ctx->recovered_count = 0;
		if (ret < 0) {
			index_storage_expunging_deinit(&ctx->mbox->box);
			lmdb_sync_context_free(&ctx);
			*ctx_r = NULL;
			return -1;
		}
	}
	*ctx_r = ctx;
	return 0;
}

static void lmdb_sync_notify_expunges(struct lmdb_sync_context *ctx)
{
	struct mailbox *box = &ctx->mbox->box;
	struct seq_range_iter iter;
	unsigned int n = 0;
	uint32_t uid;

	if (array_count(&ctx->expunged_uids) == 0)
		return;
	box->tmp_sync_view = ctx->sync_view;
	seq_range_array_iter_init(&iter, &ctx->expunged_uids);
	while (seq_range_array_iter_nth(&iter, n++, &uid))
		mailbox_sync_notify(box, uid, MAILBOX_SYNC_TYPE_EXPUNGE);
	mailbox_sync_notify(box, 0, 0);
	box->tmp_sync_view = NULL;
}

int lmdb_sync_finish(struct lmdb_sync_context **_ctx, bool success)
{
	struct lmdb_sync_context *ctx = *_ctx;
	struct mail_storage *storage = ctx->mbox->box.storage;
	int ret = success ? 0 : -1;

	*_ctx = NULL;
	if (success) {
		mail_index_view_ref(ctx->sync_view);
		if (mail_index_sync_commit(&ctx->index_sync_ctx) < 0) {
			mailbox_set_index_error(&ctx->mbox->box);
			ret = -1;
		} else {
			lmdb_sync_notify_expunges(ctx);
		}
		mail_index_view_close(&ctx->sync_view);
	} else {
		mail_index_sync_rollback(&ctx->index_sync_ctx);
	}
	if (storage->rebuild_list_index)
		ret = mail_storage_list_index_rebuild_and_set_uncorrupted(storage);

	index_storage_expunging_deinit(&ctx->mbox->box);
	lmdb_sync_context_free(&ctx);
	return ret;
}

int lmdb_sync(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags)
{
	struct lmdb_sync_context *sync_ctx;

	if (lmdb_sync_begin(mbox, flags, &sync_ctx) < 0)
		return -1;
	if (sync_ctx == NULL)
		return 0;
	return lmdb_sync_finish(&sync_ctx, TRUE);
}

struct mailbox_sync_context *
lmdb_storage_sync_init(struct mailbox *box, enum mailbox_sync_flags flags)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	enum lmdb_sync_flags lmdb_sync_flags = 0;
	int ret = 0;

	if (mail_index_reset_fscked(box->index))
		lmdb_set_mailbox_corrupted(box);
	if (index_mailbox_want_full_sync(&mbox->box, flags) ||
	    mbox->corrupted_rebuild_count != 0 ||
	    array_count(&mbox->lost_uids) > 0) {
		if ((flags & MAILBOX_SYNC_FLAG_FORCE_RESYNC) != 0)
			lmdb_sync_flags |= LMDB_SYNC_FLAG_FORCE_REBUILD;
		ret = lmdb_sync(mbox, lmdb_sync_flags);
	}
	return index_mailbox_sync_init(box, flags, ret < 0);
}

/* ---- rebuild: the index from LMDB alone ---- */

static void lmdb_sync_rebuild_update_header(struct index_rebuild_context *ctx)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(ctx->box);
	struct lmdb_index_header hdr;
	bool need_resize;

	if (lmdb_read_header(mbox, &hdr, FALSE, &need_resize) < 0)
		i_zero(&hdr);
	if (guid_128_is_empty(hdr.mailbox_guid))
		memcpy(hdr.mailbox_guid, mbox->mailbox_guid,
		       sizeof(hdr.mailbox_guid));
	if (guid_128_is_empty(hdr.mailbox_guid))
		guid_128_generate(hdr.mailbox_guid);
	if (++hdr.rebuild_count == 0)
		hdr.rebuild_count = 1;
	/* LMDB records are found by their POP3 data, so claim both flags;
	   the lookups return "" for mails without them */
	hdr.flags |= LMDB_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS |
		LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS;
	memcpy(mbox->mailbox_guid, hdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	/* mailbox is being reset. this gets written directly there */
	mail_index_set_ext_init_data(ctx->box->index, mbox->hdr_ext_id,
				     &hdr, sizeof(hdr));
}

static unsigned int lmdb_rebuild_uidvalidity(struct mailbox_list *list)
{
	return lmdb_get_uidvalidity_next(list);
}

static void lmdb_sync_rebuild_keywords(struct mailbox *box,
				       struct ldb_txn *txn)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	ARRAY_TYPE(const_string) names;
	struct mail_keywords *kw;
	const uint8_t *data;
	const char *name;
	size_t size, pos = 0, len;
	unsigned int count;

	if (ldb_mailbox_keywords_get(txn, mbox->mailbox_guid, &data, &size,
				     &count) <= 0)
		return;
	t_array_init(&names, count + 1);
	while (ldb_keyword_list_next(data, size, &pos, &name, &len) > 0) {
		const char *kwname = t_strndup(name, len);
		array_push_back(&names, &kwname);
	}
	array_append_zero(&names);
	kw = mail_index_keywords_create(box->index, array_front(&names));
	mail_index_keywords_unref(&kw);
}

static int lmdb_sync_rebuild_records(struct index_rebuild_context *ctx,
				     struct ldb_mailbox_rec *mrec_r,
				     uint32_t *last_uid_r,
				     unsigned int *count_r)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(ctx->box);
	struct ldb_msg_iter *iter;
	struct ldb_msg_rec rec;
	struct lmdb_msg msg;
	struct ldb_env *env;
	struct ldb_txn *txn;
	uint32_t uid, seq;
	int ret;

	*last_uid_r = 0;
	i_zero(mrec_r);
	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	if ((ret = ldb_txn_begin(env, FALSE, &txn)) < 0) {
		lmdb_mailbox_set_ldb_error(ctx->box, ret, "rebuild read");
		return -1;
	}
	if ((ret = ldb_mailbox_get(txn, mbox->mailbox_guid, mrec_r)) < 0) {
		ldb_txn_abort(&txn);
		lmdb_mailbox_set_ldb_error(ctx->box, ret, "rebuild read");
		return -1;
	}
	if (mrec_r->uid_validity != 0) {
		mail_index_update_header(ctx->trans,
			offsetof(struct mail_index_header, uid_validity),
			&mrec_r->uid_validity, sizeof(mrec_r->uid_validity),
			TRUE);
	}
	/* register the keywords in their old order first, so that the
	   rebuilt index lists them in the same order */
	T_BEGIN {
		lmdb_sync_rebuild_keywords(ctx->box, txn);
	} T_END;
	iter = ldb_msg_iter_init(txn, mbox->mailbox_guid, 1);
	while ((ret = ldb_msg_iter_next(iter, &uid, &rec)) > 0) T_BEGIN {
		lmdb_msg_from_rec(&rec, uid, pool_datastack_create(), &msg);
		/* unknown modseq: the mailbox's is an upper bound of it */
		if (msg.modseq == 0)
			msg.modseq = mrec_r->highest_modseq;
		seq = lmdb_sync_append_msg(ctx->box, ctx->trans, &msg);
		/* cache and vsize from the old index, when the UID matches;
		   flags and keywords then come from LMDB, the truth */
		index_rebuild_index_metadata(ctx, seq, uid);
		mail_index_update_flags(ctx->trans, seq, MODIFY_REPLACE,
					msg.flags & MAIL_FLAGS_NONRECENT);
		*last_uid_r = uid;
		(*count_r)++;
	} T_END;
	if (ldb_msg_iter_deinit(&iter) < 0 && ret >= 0)
		ret = -1;
	ldb_txn_abort(&txn);
	if (ret < 0) {
		lmdb_mailbox_set_ldb_error(ctx->box, ret, "rebuild scan");
		return -1;
	}
	return 0;
}

int lmdb_sync_index_rebuild(struct lmdb_mailbox *mbox, bool force)
{
	struct index_rebuild_context *ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	struct lmdb_index_header hdr;
	struct ldb_mailbox_rec mrec;
	uint32_t last_uid, next_uid, old_next_uid, first_recent_uid;
	unsigned int count = 0;
	struct event *event;
	bool need_resize;
	int ret;

	if (!force && lmdb_read_header(mbox, &hdr, FALSE, &need_resize) == 0) {
		if (hdr.rebuild_count != mbox->corrupted_rebuild_count &&
		    hdr.rebuild_count != 0) {
			/* already rebuilt by someone else */
			return 0;
		}
	}
	if (guid_128_is_empty(mbox->mailbox_guid))
		(void)lmdb_mailbox_guid_file_read(mbox, mbox->mailbox_guid);
	e_warning(mbox->box.event, "lmdb: Rebuilding index from LMDB");
	event = event_create(mbox->box.event);
	event_set_name(event, "lmdb_index_rebuild");
	event_add_str(event, "forced", force ? "yes" : "no");

	view = mail_index_view_open(mbox->box.index);
	old_next_uid = mail_index_get_header(view)->next_uid;
	trans = mail_index_transaction_begin(view,
					MAIL_INDEX_TRANSACTION_FLAG_EXTERNAL);

	ctx = index_index_rebuild_init(&mbox->box, view, trans);
	ret = lmdb_sync_rebuild_records(ctx, &mrec, &last_uid, &count);
	lmdb_sync_rebuild_update_header(ctx);
	index_index_rebuild_deinit(&ctx, lmdb_rebuild_uidvalidity);

	if (ret == 0) {
		/* LMDB's UIDVALIDITY and next UID win over the old index */
		if (mrec.uid_validity != 0) {
			mail_index_update_header(trans,
				offsetof(struct mail_index_header, uid_validity),
				&mrec.uid_validity, sizeof(mrec.uid_validity),
				TRUE);
		}
		next_uid = I_MAX(mrec.next_uid, last_uid + 1);
		next_uid = I_MAX(next_uid, old_next_uid);
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, next_uid),
			&next_uid, sizeof(next_uid), FALSE);
		/* a rebuild doesn't make old mail \Recent again */
		first_recent_uid = mrec.first_recent_uid != 0 &&
			mrec.first_recent_uid <= next_uid ?
			mrec.first_recent_uid : next_uid;
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, first_recent_uid),
			&first_recent_uid, sizeof(first_recent_uid), FALSE);
		if (mrec.highest_modseq != 0) {
			mail_index_modseq_enable(mbox->box.index);
			mail_index_update_highest_modseq(trans,
							 mrec.highest_modseq);
		}
	}
	if (ret < 0)
		mail_index_transaction_rollback(&trans);
	else {
		mail_index_unset_fscked(trans);
		ret = mail_index_transaction_commit(&trans);
	}
	mail_index_view_close(&view);
	mbox->corrupted_rebuild_count = 0;
	event_add_int(event, "messages", count);
	event_add_str(event, "result", ret < 0 ? "failed" : "ok");
	e_debug(event, "lmdb: Index rebuild from LMDB %s: %u messages in "
		"%lld ms", ret < 0 ? "failed" : "done", count,
		lmdb_event_msecs(event));
	event_unref(&event);
	return ret;
}
