/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The fts_backend vfuncs of fts_lmdb.  Indexing: the fts plugin walks each
   message's keys; the first key of a new UID finishes the previous
   message, which is then read again and captured exactly
   (fts-lmdb-capture.c).  Of the build data only what the FTS parsers alone
   see is kept: html2text and fts_decoder/Tika output.  Messages collect in
   a batch that is written in one LMDB transaction, together with the
   mailbox's last indexed UID. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "ioloop.h"
#include "time-util.h"
#include "mail-user.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mailbox-list-private.h"
#include "mail-search.h"
#include "message-decoder.h"
#include "fts-lmdb-private.h"

struct lmdb_fts_backend_update_context {
	struct fts_backend_update_context ctx;

	struct mailbox *box;
	uint8_t guid[LDB_GUID_SIZE];
	uint32_t uidvalidity;
	struct fts_lmdb_batch *batch;
	bool box_failed;

	/* our own reads of the messages being indexed */
	struct mailbox_transaction_context *trans;
	struct mail *mail;

	uint32_t cur_uid;
	bool cur_extra;
	/* what only the FTS parsers see of the current message */
	buffer_t *extra;
	bool extra_truncated;

	struct message_decoder_context *decoder;
	struct fts_lmdb_doc_builder *builder;
	struct fts_lmdb_buf encoded;
	struct fts_lmdb_grams grams[FTS_LMDB_SPACE_COUNT];
	ARRAY_TYPE(uint32_t) expunges;
	unsigned int indexed;
};

#define LMDB_FTS_UPDATE_CTX(c) \
	container_of(c, struct lmdb_fts_backend_update_context, ctx)

static struct fts_backend *fts_backend_lmdb_alloc(void)
{
	struct lmdb_fts_backend *backend;

	backend = i_new(struct lmdb_fts_backend, 1);
	backend->backend = fts_backend_lmdb;
	return &backend->backend;
}

static int fts_backend_lmdb_init(struct fts_backend *_backend,
				 const char **error_r)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(_backend);
	struct mail_namespace *ns = _backend->ns;
	const char *root;

	if (fts_lmdb_settings_read(ns->user, &backend->set, error_r) < 0)
		return -1;
	if (ns->mail_set->mail_nfs_index) {
		*error_r = "fts_lmdb can't be used with mail_nfs_index=yes";
		return -1;
	}
	root = mailbox_list_get_root_forced(ns->list,
					    MAILBOX_LIST_PATH_TYPE_INDEX);
	backend->path = i_strconcat(root, "/"FTS_LMDB_DIR_NAME, NULL);
	backend->event = event_create(ns->user->event);
	event_add_category(backend->event, &event_category_fts_lmdb);
	event_set_append_log_prefix(backend->event, "fts-lmdb: ");
	backend->session_pool = pool_alloconly_create("fts-lmdb session", 512);
	p_array_init(&backend->conflicts, default_pool, 4);
	return 0;
}

static void fts_backend_lmdb_deinit(struct fts_backend *_backend)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(_backend);

	fts_lmdb_lookup_done(backend);
	fts_lmdb_store_close(&backend->store);
	fts_lmdb_doc_reader_free(&backend->reader);
	fts_lmdb_uids_free(&backend->live);
	fts_lmdb_uids_free(&backend->flagged);
	fts_lmdb_buf_free(&backend->flags);
	fts_lmdb_uids_free(&backend->missing);
	array_free(&backend->conflicts);
	pool_unref(&backend->session_pool);
	event_unref(&backend->event);
	i_free(backend->path);
	i_free(backend);
}

void fts_lmdb_backend_ldb_settings(struct lmdb_fts_backend *backend,
				   struct ldb_settings *set_r)
{
	struct mail_namespace *ns = backend->backend.ns;
	struct mailbox_permissions perm;

	mailbox_list_get_root_permissions(ns->list, &perm);
	ldb_settings_default(set_r);
	set_r->initial_map_size = backend->set.map_size;
	set_r->max_map_size = backend->set.max_size;
	set_r->nosync = ns->mail_set->parsed_fsync_mode == FSYNC_MODE_NEVER;
	set_r->file_mode = perm.file_create_mode;
}

int fts_lmdb_backend_open(struct lmdb_fts_backend *backend)
{
	struct mail_namespace *ns = backend->backend.ns;
	struct ldb_settings set;
	const char *root, *error;

	if (backend->store != NULL)
		return 0;
	root = mailbox_list_get_root_forced(ns->list,
					    MAILBOX_LIST_PATH_TYPE_INDEX);
	if (mailbox_list_mkdir_root(ns->list, root,
				    MAILBOX_LIST_PATH_TYPE_INDEX) < 0)
		return -1;
	fts_lmdb_backend_ldb_settings(backend, &set);
	if (fts_lmdb_store_open(backend->path, &set, &backend->store,
				&error) < 0) {
		e_error(backend->event, "Couldn't open index %s: %s",
			backend->path, error);
		return -1;
	}
	if (backend->reader == NULL)
		backend->reader = fts_lmdb_doc_reader_new();
	e_debug(backend->event, "Opened index %s", backend->path);
	return 0;
}

int fts_lmdb_box_identity(struct mailbox *box, uint8_t guid_r[LDB_GUID_SIZE],
			  uint32_t *uidvalidity_r)
{
	struct mailbox_metadata metadata;
	struct mailbox_status status;

	if (mailbox_open(box) < 0 ||
	    mailbox_get_metadata(box, MAILBOX_METADATA_GUID, &metadata) < 0)
		return -1;
	mailbox_get_open_status(box, STATUS_UIDVALIDITY, &status);
	memcpy(guid_r, metadata.guid, LDB_GUID_SIZE);
	*uidvalidity_r = status.uidvalidity;
	return 0;
}

static int fts_lmdb_read_box(struct lmdb_fts_backend *backend,
			     const uint8_t guid[LDB_GUID_SIZE],
			     uint32_t uidvalidity, uint32_t *last_uid_r)
{
	struct fts_lmdb_box_rec rec;
	struct ldb_txn *txn = backend->txn;
	int ret;

	if (txn == NULL &&
	    (ret = ldb_txn_begin(fts_lmdb_store_env(backend->store), FALSE,
				 &txn)) < 0)
		return ret;
	ret = fts_lmdb_store_box_get(txn, backend->store, guid, &rec);
	if (txn != backend->txn)
		ldb_txn_abort(&txn);
	if (ret < 0)
		return ret;
	*last_uid_r = ret > 0 && rec.uidvalidity == uidvalidity ?
		rec.last_uid : 0;
	return 0;
}

static int
fts_backend_lmdb_get_last_uid(struct fts_backend *_backend,
			      struct mailbox *box, uint32_t *last_uid_r)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(_backend);
	uint8_t guid[LDB_GUID_SIZE];
	uint32_t uidvalidity;

	if (fts_lmdb_backend_open(backend) < 0 ||
	    fts_lmdb_box_identity(box, guid, &uidvalidity) < 0)
		return -1;
	if (fts_lmdb_read_box(backend, guid, uidvalidity, last_uid_r) < 0) {
		e_error(backend->event, "%s",
			fts_lmdb_store_last_error(backend->store));
		return -1;
	}
	return 0;
}

static struct fts_backend_update_context *
fts_backend_lmdb_update_init(struct fts_backend *_backend)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(_backend);
	struct lmdb_fts_backend_update_context *ctx;

	/* a lookup session that wasn't ended (an error path of the fts
	   plugin) must not keep a read snapshot while this one writes: a
	   growing map is remapped */
	fts_lmdb_lookup_done(backend);
	ctx = i_new(struct lmdb_fts_backend_update_context, 1);
	ctx->ctx.backend = _backend;
	ctx->extra = buffer_create_dynamic(default_pool, 1024);
	ctx->builder = fts_lmdb_doc_builder_new(backend->set.max_text);
	ctx->decoder = message_decoder_init(
		_backend->ns->user->default_normalizer, 0);
	i_array_init(&ctx->expunges, 64);
	return &ctx->ctx;
}

static void
fts_lmdb_update_flush(struct lmdb_fts_backend_update_context *ctx)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(ctx->ctx.backend);
	struct timeval start, end;
	unsigned int count;
	int ret;

	if (ctx->batch == NULL)
		return;
	count = fts_lmdb_batch_messages(ctx->batch);
	i_gettimeofday(&start);
	ret = fts_lmdb_batch_flush(backend->store, ctx->batch);
	i_gettimeofday(&end);
	if (ret < 0) {
		e_error(backend->event, "Indexing %s failed: %s",
			mailbox_get_vname(ctx->box),
			fts_lmdb_store_last_error(backend->store));
		ctx->ctx.failed = TRUE;
		ctx->box_failed = TRUE;
	} else if (ret == 0) {
		e_debug(backend->event, "%s was reset while it was indexed: "
			"dropped %u messages", mailbox_get_vname(ctx->box),
			count);
	} else if (count > 0) {
		e_debug(backend->event, "%s: wrote %u messages in %d ms, "
			"last UID %u", mailbox_get_vname(ctx->box), count,
			timeval_diff_msecs(&end, &start),
			fts_lmdb_batch_base(ctx->batch));
	}
}

static void
fts_lmdb_update_add_extra(struct lmdb_fts_backend_update_context *ctx,
			  normalizer_func_t *normalizer)
{
	buffer_t *norm;

	if (ctx->extra->used == 0)
		return;
	/* parser and decoder output isn't always normalized: html2text
	   decodes entities, a decoder script prints what it likes */
	norm = t_buffer_create(ctx->extra->used + 64);
	if (normalizer(ctx->extra->data, ctx->extra->used, norm) < 0) {
		fts_lmdb_doc_builder_add_flags(ctx->builder,
					       FTS_LMDB_DOC_FLAG_CUT_BODY);
	}
	fts_lmdb_doc_append_extra(ctx->builder, norm->data, norm->used);
}

static void
fts_lmdb_update_capture(struct lmdb_fts_backend_update_context *ctx,
			uint32_t uid)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(ctx->ctx.backend);
	normalizer_func_t *normalizer = backend->backend.ns->user->default_normalizer;
	const struct fts_lmdb_grams *grams[FTS_LMDB_SPACE_COUNT];
	uint8_t spaces[FTS_LMDB_SPACE_COUNT];
	struct fts_lmdb_doc doc;
	const char *error;
	unsigned int i;

	if (ctx->trans == NULL) {
		ctx->trans = mailbox_transaction_begin(ctx->box, 0,
						       "fts-lmdb indexing");
		ctx->mail = mail_alloc(ctx->trans, 0, NULL);
	}
	if (!mail_set_uid(ctx->mail, uid)) {
		/* expunged meanwhile */
		fts_lmdb_batch_seen_uid(ctx->batch, uid);
		return;
	}
	fts_lmdb_doc_builder_reset(ctx->builder);
	if (fts_lmdb_capture_mail(ctx->mail, normalizer, ctx->decoder,
				  ctx->builder, &error) < 0) {
		if (ctx->mail->expunged) {
			/* expunged while it was read: as above */
			fts_lmdb_batch_seen_uid(ctx->batch, uid);
			return;
		}
		e_error(backend->event, "%s UID %u: %s (indexed as partial)",
			mailbox_get_vname(ctx->box), uid, error);
	}
	fts_lmdb_update_add_extra(ctx, normalizer);
	if (ctx->extra_truncated) {
		fts_lmdb_doc_builder_add_flags(ctx->builder,
					       FTS_LMDB_DOC_FLAG_CUT_BODY);
	}
	fts_lmdb_doc_encode(ctx->builder, &ctx->encoded);
	fts_lmdb_doc_builder_view(ctx->builder, &doc);
	fts_lmdb_doc_grams(&doc, ctx->grams, spaces);
	for (i = 0; i < FTS_LMDB_SPACE_COUNT; i++)
		grams[i] = &ctx->grams[i];
	fts_lmdb_batch_add(ctx->batch, uid, doc.flags,
			   ctx->encoded.data, ctx->encoded.used,
			   spaces, grams, FTS_LMDB_SPACE_COUNT);
	ctx->indexed++;
}

static void
fts_lmdb_update_finish_uid(struct lmdb_fts_backend_update_context *ctx)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(ctx->ctx.backend);
	uint32_t uid = ctx->cur_uid;

	ctx->cur_uid = 0;
	ctx->cur_extra = FALSE;
	if (uid == 0 || ctx->box_failed || ctx->batch == NULL) {
		buffer_set_used_size(ctx->extra, 0);
		return;
	}
	T_BEGIN {
		fts_lmdb_update_capture(ctx, uid);
	} T_END;
	buffer_set_used_size(ctx->extra, 0);
	ctx->extra_truncated = FALSE;
	if (fts_lmdb_batch_messages(ctx->batch) >= backend->set.batch_size ||
	    fts_lmdb_batch_memory(ctx->batch) >= backend->set.batch_memory)
		fts_lmdb_update_flush(ctx);
}

static void
fts_lmdb_update_expunges(struct lmdb_fts_backend_update_context *ctx)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(ctx->ctx.backend);
	const uint32_t *uids;
	unsigned int count;
	int ret;

	uids = array_get(&ctx->expunges, &count);
	if (count == 0 || backend->store == NULL)
		return;
	ret = fts_lmdb_store_expunge(backend->store, ctx->guid,
				     ctx->uidvalidity, uids, count);
	if (ret < 0) {
		e_error(backend->event, "Expunging from %s failed: %s",
			mailbox_get_vname(ctx->box),
			fts_lmdb_store_last_error(backend->store));
		ctx->ctx.failed = TRUE;
	} else {
		e_debug(backend->event, "%s: expunged %d of %u messages",
			mailbox_get_vname(ctx->box), ret, count);
	}
	array_clear(&ctx->expunges);
}

static void
fts_lmdb_update_close_box(struct lmdb_fts_backend_update_context *ctx)
{
	fts_lmdb_update_finish_uid(ctx);
	if (ctx->box != NULL && !ctx->box_failed)
		fts_lmdb_update_flush(ctx);
	if (ctx->box != NULL)
		fts_lmdb_update_expunges(ctx);
	array_clear(&ctx->expunges);
	fts_lmdb_batch_free(&ctx->batch);
	if (ctx->mail != NULL)
		mail_free(&ctx->mail);
	if (ctx->trans != NULL)
		mailbox_transaction_rollback(&ctx->trans);
	ctx->box = NULL;
	ctx->box_failed = FALSE;
}

static void
fts_lmdb_update_open_box(struct lmdb_fts_backend_update_context *ctx,
			 struct mailbox *box)
{
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(ctx->ctx.backend);
	uint32_t last_uid;

	ctx->box = box;
	if (fts_lmdb_backend_open(backend) < 0 ||
	    fts_lmdb_box_identity(box, ctx->guid, &ctx->uidvalidity) < 0) {
		ctx->box_failed = TRUE;
		ctx->ctx.failed = TRUE;
		return;
	}
	if (fts_lmdb_read_box(backend, ctx->guid, ctx->uidvalidity,
			      &last_uid) < 0) {
		e_error(backend->event, "%s",
			fts_lmdb_store_last_error(backend->store));
		ctx->box_failed = TRUE;
		ctx->ctx.failed = TRUE;
		return;
	}
	ctx->batch = fts_lmdb_batch_new(ctx->guid, ctx->uidvalidity,
					last_uid);
}

static int
fts_backend_lmdb_update_deinit(struct fts_backend_update_context *_ctx)
{
	struct lmdb_fts_backend_update_context *ctx = LMDB_FTS_UPDATE_CTX(_ctx);
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(_ctx->backend);
	int ret;

	fts_lmdb_update_close_box(ctx);
	ret = _ctx->failed ? -1 : 0;
	if (ctx->indexed > 0)
		e_debug(backend->event, "Indexed %u messages", ctx->indexed);
	buffer_free(&ctx->extra);
	fts_lmdb_doc_builder_free(&ctx->builder);
	message_decoder_deinit(&ctx->decoder);
	fts_lmdb_buf_free(&ctx->encoded);
	for (unsigned int i = 0; i < FTS_LMDB_SPACE_COUNT; i++)
		fts_lmdb_grams_free(&ctx->grams[i]);
	array_free(&ctx->expunges);
	i_free(ctx);
	return ret;
}

static void
fts_backend_lmdb_update_set_mailbox(struct fts_backend_update_context *_ctx,
				    struct mailbox *box)
{
	struct lmdb_fts_backend_update_context *ctx = LMDB_FTS_UPDATE_CTX(_ctx);

	if (ctx->box == box)
		return;
	fts_lmdb_update_close_box(ctx);
	if (box != NULL)
		fts_lmdb_update_open_box(ctx, box);
}

static void
fts_backend_lmdb_update_expunge(struct fts_backend_update_context *_ctx,
				uint32_t uid)
{
	struct lmdb_fts_backend_update_context *ctx = LMDB_FTS_UPDATE_CTX(_ctx);

	if (!ctx->box_failed)
		array_push_back(&ctx->expunges, &uid);
}

/* Body parts where the fts plugin's text differs from the raw part:
   text/html (html2text) and anything that isn't text or a message, which
   only reaches us through fts_decoder or fts_tika. */
static bool fts_lmdb_key_is_extra(const struct fts_backend_build_key *key)
{
	const char *type = key->body_content_type;

	if (type == NULL)
		return FALSE;
	if (strcasecmp(type, "text/html") == 0 ||
	    strcasecmp(type, "application/xhtml+xml") == 0)
		return TRUE;
	return strncasecmp(type, "text/", 5) != 0 &&
		strncasecmp(type, "message/", 8) != 0;
}

static bool
fts_backend_lmdb_update_set_build_key(struct fts_backend_update_context *_ctx,
				      const struct fts_backend_build_key *key)
{
	struct lmdb_fts_backend_update_context *ctx = LMDB_FTS_UPDATE_CTX(_ctx);

	if (ctx->box_failed || ctx->batch == NULL)
		return FALSE;
	if (key->uid != ctx->cur_uid) {
		fts_lmdb_update_finish_uid(ctx);
		ctx->cur_uid = key->uid;
	}
	/* headers and plain bodies are captured from the message itself */
	if (key->type != FTS_BACKEND_BUILD_KEY_BODY_PART ||
	    !fts_lmdb_key_is_extra(key))
		return FALSE;
	if (ctx->extra->used > 0)
		buffer_append_c(ctx->extra, '\n');
	ctx->cur_extra = TRUE;
	return TRUE;
}

static void
fts_backend_lmdb_update_unset_build_key(struct fts_backend_update_context *_ctx)
{
	struct lmdb_fts_backend_update_context *ctx = LMDB_FTS_UPDATE_CTX(_ctx);

	ctx->cur_extra = FALSE;
}

static int
fts_backend_lmdb_update_build_more(struct fts_backend_update_context *_ctx,
				   const unsigned char *data, size_t size)
{
	struct lmdb_fts_backend_update_context *ctx = LMDB_FTS_UPDATE_CTX(_ctx);
	struct lmdb_fts_backend *backend = LMDB_FTS_BACKEND(_ctx->backend);
	size_t room;

	if (!ctx->cur_extra)
		return 0;
	room = backend->set.max_text > ctx->extra->used ?
		backend->set.max_text - ctx->extra->used : 0;
	if (size > room) {
		ctx->extra_truncated = TRUE;
		size = room;
	}
	buffer_append(ctx->extra, data, size);
	return 0;
}

static int fts_backend_lmdb_refresh(struct fts_backend *_backend)
{
	/* every lookup session takes a fresh snapshot anyway */
	fts_lmdb_lookup_done(LMDB_FTS_BACKEND(_backend));
	return 0;
}

static int
fts_backend_lmdb_lookup(struct fts_backend *_backend, struct mailbox *box,
			struct mail_search_arg *args,
			enum fts_lookup_flags flags, struct fts_result *result)
{
	return fts_lmdb_lookup(LMDB_FTS_BACKEND(_backend), box, args, flags,
			       result);
}

static void fts_backend_lmdb_lookup_done(struct fts_backend *_backend)
{
	fts_lmdb_lookup_done(LMDB_FTS_BACKEND(_backend));
}

static int fts_backend_lmdb_rescan(struct fts_backend *_backend)
{
	return fts_lmdb_rescan(LMDB_FTS_BACKEND(_backend));
}

static int fts_backend_lmdb_optimize(struct fts_backend *_backend)
{
	return fts_lmdb_optimize(LMDB_FTS_BACKEND(_backend));
}

struct fts_backend fts_backend_lmdb = {
	.name = "lmdb",
	/* Text arrives normalized by Dovecot's own normalizer, the one its
	   SEARCH uses.  Not TOKENIZED_INPUT: the arguments must reach
	   lookup() unexpanded.  Not FUZZY: matching is exact. */
	.flags = FTS_BACKEND_FLAG_NORMALIZE_INPUT,
	.v = {
		.alloc = fts_backend_lmdb_alloc,
		.init = fts_backend_lmdb_init,
		.deinit = fts_backend_lmdb_deinit,
		.get_last_uid = fts_backend_lmdb_get_last_uid,
		.update_init = fts_backend_lmdb_update_init,
		.update_deinit = fts_backend_lmdb_update_deinit,
		.update_set_mailbox = fts_backend_lmdb_update_set_mailbox,
		.update_expunge = fts_backend_lmdb_update_expunge,
		.update_set_build_key = fts_backend_lmdb_update_set_build_key,
		.update_unset_build_key = fts_backend_lmdb_update_unset_build_key,
		.update_build_more = fts_backend_lmdb_update_build_more,
		.refresh = fts_backend_lmdb_refresh,
		.rescan = fts_backend_lmdb_rescan,
		.optimize = fts_backend_lmdb_optimize,
		.can_lookup = fts_backend_default_can_lookup,
		.lookup = fts_backend_lmdb_lookup,
		.lookup_multi = NULL,
		.lookup_done = fts_backend_lmdb_lookup_done,
	},
};
