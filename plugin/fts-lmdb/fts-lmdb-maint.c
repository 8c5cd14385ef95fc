/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* doveadm fts rescan and doveadm fts optimize. */

#include "lib.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "fts-lmdb-private.h"

/* The mailbox's UIDs, in order. */
static void maint_box_uids(struct mailbox *box, struct fts_lmdb_uids *uids)
{
	uint32_t seq, count, uid;

	count = mail_index_view_get_messages_count(box->view);
	fts_lmdb_uids_reserve(uids, count);
	for (seq = 1; seq <= count; seq++) {
		mail_index_lookup_uid(box->view, seq, &uid);
		fts_lmdb_uids_push(uids, uid);
	}
}

static int maint_index_uids(struct lmdb_fts_backend *backend,
			    uint32_t box_id, struct fts_lmdb_uids *live)
{
	struct ldb_txn *txn;
	int ret;

	ret = ldb_txn_begin(fts_lmdb_store_env(backend->store), FALSE, &txn);
	if (ret < 0)
		return ret;
	ret = fts_lmdb_store_uids(txn, backend->store, box_id, live, NULL,
				  NULL);
	ldb_txn_abort(&txn);
	return ret;
}

/* Compare one mailbox with its index: texts of UIDs the mailbox no longer
   has are deleted, and the last UID goes back below the first message
   that should be indexed but isn't, so that it gets indexed again. */
static int maint_rescan_existing(struct lmdb_fts_backend *backend,
				 struct mailbox *box,
				 const struct fts_lmdb_box_entry *entry)
{
	struct fts_lmdb_uids mbox = { NULL, 0, 0 }, live = { NULL, 0, 0 };
	struct fts_lmdb_uids extra = { NULL, 0, 0 };
	uint32_t last_uid = entry->rec.last_uid;
	size_t i;
	int ret;

	maint_box_uids(box, &mbox);
	if ((ret = maint_index_uids(backend, entry->rec.box_id, &live)) < 0)
		goto out;
	fts_lmdb_uids_copy(&extra, &live);
	fts_lmdb_uids_remove(&extra, &mbox);
	for (i = 0; i < mbox.n && mbox.v[i] <= entry->rec.last_uid; i++) {
		if (!fts_lmdb_uids_contains(&live, mbox.v[i])) {
			last_uid = mbox.v[i] - 1;
			break;
		}
	}
	if (extra.n > 0 || last_uid != entry->rec.last_uid) {
		e_debug(backend->event, "rescan %s: %zu extra, last UID %u -> %u",
			mailbox_get_vname(box), extra.n, entry->rec.last_uid,
			last_uid);
		ret = fts_lmdb_store_box_repair(backend->store, entry->guid,
						entry->rec.box_id, extra.v,
						extra.n, last_uid);
	}
out:
	fts_lmdb_uids_free(&mbox);
	fts_lmdb_uids_free(&live);
	fts_lmdb_uids_free(&extra);
	return ret < 0 ? ret : 0;
}

static int maint_rescan_box(struct lmdb_fts_backend *backend,
			    const struct fts_lmdb_box_entry *entry)
{
	struct mail_namespace *ns = backend->backend.ns;
	struct mailbox *box;
	enum mail_error error;
	uint8_t guid[LDB_GUID_SIZE];
	uint32_t uidvalidity;
	int ret = 0;

	box = mailbox_alloc_guid(ns->list, entry->guid, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_open(box) < 0 ||
	    mailbox_sync(box, 0) < 0 ||
	    fts_lmdb_box_identity(box, guid, &uidvalidity) < 0) {
		(void)mailbox_get_last_error(box, &error);
		if (error == MAIL_ERROR_NOTFOUND) {
			e_debug(backend->event, "rescan: mailbox %s is gone",
				guid_128_to_string(entry->guid));
			ret = fts_lmdb_store_box_drop(backend->store,
						      entry->guid);
		} else {
			e_error(backend->event, "rescan: %s",
				mailbox_get_last_internal_error(box, NULL));
			ret = -1;
		}
	} else if (uidvalidity != entry->rec.uidvalidity) {
		e_debug(backend->event, "rescan %s: UIDVALIDITY changed",
			mailbox_get_vname(box));
		ret = fts_lmdb_store_box_drop(backend->store, entry->guid);
	} else {
		ret = maint_rescan_existing(backend, box, entry);
	}
	mailbox_free(&box);
	return ret;
}

int fts_lmdb_rescan(struct lmdb_fts_backend *backend)
{
	struct fts_lmdb_box_entry *boxes;
	size_t i, count;
	int ret = 0;

	if (fts_lmdb_backend_open(backend) < 0)
		return -1;
	fts_lmdb_lookup_done(backend);
	if (fts_lmdb_store_boxes(backend->store, &boxes, &count) < 0) {
		e_error(backend->event, "rescan: %s",
			fts_lmdb_store_last_error(backend->store));
		return -1;
	}
	for (i = 0; i < count; i++) {
		int ret2;

		T_BEGIN {
			ret2 = maint_rescan_box(backend, &boxes[i]);
		} T_END;
		if (ret2 < 0) {
			e_error(backend->event, "rescan failed: %s",
				fts_lmdb_store_last_error(backend->store));
			ret = -1;
		}
	}
	free(boxes);
	return ret;
}

/* Give the free pages back to the filesystem.  Only possible while no
   process has the index open (LDB_ERR_LOCKED otherwise, which is no
   error: the pages are reused for new postings anyway). */
static void maint_shrink(struct lmdb_fts_backend *backend)
{
	struct ldb_compact_result res;
	struct ldb_settings set;
	const char *error;
	int ret;

	fts_lmdb_store_close(&backend->store);
	fts_lmdb_backend_ldb_settings(backend, &set);
	ret = ldb_env_compact(backend->path, &set, 0, &res, &error);
	if (ret == LDB_ERR_LOCKED) {
		e_debug(backend->event, "optimize: index in use, not shrunk: %s",
			error);
	} else if (ret < 0) {
		e_error(backend->event, "optimize: shrinking %s failed: %s",
			backend->path, error);
	} else {
		e_debug(backend->event, "optimize: %s shrunk from %lld to "
			"%lld bytes", backend->path, res.size_before,
			res.size_after);
	}
}

int fts_lmdb_optimize(struct lmdb_fts_backend *backend)
{
	struct fts_lmdb_box_entry *boxes;
	size_t i, count;
	int ret, dropped;

	if (fts_lmdb_backend_open(backend) < 0)
		return -1;
	fts_lmdb_lookup_done(backend);
	if ((ret = fts_lmdb_store_boxes(backend->store, &boxes, &count)) < 0)
		goto failed;
	for (i = 0; i < count && ret >= 0; i++) {
		if (boxes[i].rec.dead == 0)
			continue;
		dropped = fts_lmdb_store_compact_box(backend->store,
						     boxes[i].guid);
		if (dropped < 0)
			ret = dropped;
		else {
			e_debug(backend->event, "optimize: dropped %d postings "
				"of %u expunged messages", dropped,
				boxes[i].rec.dead);
		}
	}
	free(boxes);
	if (ret >= 0 && (ret = fts_lmdb_store_purge_dead(backend->store)) > 0)
		e_debug(backend->event, "optimize: purged %d old mailbox ids", ret);
	if (ret >= 0) {
		maint_shrink(backend);
		return 0;
	}
failed:
	e_error(backend->event, "optimize failed: %s",
		fts_lmdb_store_last_error(backend->store));
	return -1;
}
