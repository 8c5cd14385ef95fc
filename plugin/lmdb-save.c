/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Saving and copying.

   APPEND data streams into a temporary stream (memory, then an unlinked
   temp file), never into LMDB: no write transaction is open while a
   client's literal is still coming in.  The write transaction opens in
   commit_pre, under the index sync lock, after the UIDs are assigned.  It
   writes the bodies (or adds references to identical ones), the message
   records and the mailbox's next UID at once, and commits before the index
   does.  A crash between the two commits leaves LMDB records above the
   index's next UID, which the next sync adds to the index. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "istream.h"
#include "istream-crlf.h"
#include "ostream.h"
#include "str.h"
#include "iostream-temp.h"
#include "index-mail.h"
#include "mail-copy.h"
#include "index-pop3-uidl.h"
#include "mail-index-modseq.h"
#include "lmdb-storage.h"

struct lmdb_save_mail {
	uint32_t seq;
	uint32_t uid;
	/* the stored bytes; NULL for a copy that shares an existing body */
	struct istream *input;
	uint8_t hash[LDB_HASH_SIZE];
	bool shared_body;

	uoff_t physical_size, virtual_size;
	time_t received_date, save_date;
	const char *guid;
	const char *pop3_uidl;
	uint32_t pop3_order;
	uint8_t flags;
	uint64_t min_modseq;
	const char *const *keywords;
};

struct lmdb_save_context {
	struct mail_save_context ctx;

	struct lmdb_mailbox *mbox;
	struct mail_index_transaction *trans;
	struct lmdb_sync_context *sync_ctx;
	pool_t pool;
	ARRAY(struct lmdb_save_mail) mails;

	/* the mail being saved now */
	uint32_t seq;
	struct istream *input;
	struct ostream *output;

	uint32_t highest_pop3_uidl_seq;
	bool have_pop3_uidls:1;
	bool have_pop3_orders:1;
	bool failed:1;
	bool finished:1;
	bool lmdb_written:1;
	/* save_begin() added a mail that finish() hasn't handled yet */
	bool cur_mail_added:1;
};

#define LMDB_SAVECTX(s) container_of(s, struct lmdb_save_context, ctx)

struct mail_save_context *
lmdb_save_alloc(struct mailbox_transaction_context *t)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(t->box);
	struct lmdb_save_context *ctx;

	i_assert((t->flags & MAILBOX_TRANSACTION_FLAG_EXTERNAL) != 0);

	if (t->save_ctx != NULL) {
		/* use the existing allocated structure */
		ctx = LMDB_SAVECTX(t->save_ctx);
		ctx->failed = FALSE;
		ctx->finished = FALSE;
		return &ctx->ctx;
	}

	ctx = i_new(struct lmdb_save_context, 1);
	ctx->ctx.transaction = t;
	ctx->trans = t->itrans;
	ctx->mbox = mbox;
	ctx->pool = pool_alloconly_create("lmdb save", 4096);
	p_array_init(&ctx->mails, ctx->pool, 32);
	t->save_ctx = &ctx->ctx;
	return t->save_ctx;
}

static struct lmdb_save_mail *
lmdb_save_find(struct mailbox_transaction_context *t, uint32_t seq)
{
	struct lmdb_save_context *ctx;
	struct lmdb_save_mail *mail;

	if (t == NULL || t->save_ctx == NULL ||
	    strcmp(t->box->storage->name, LMDB_STORAGE_NAME) != 0)
		return NULL;
	ctx = LMDB_SAVECTX(t->save_ctx);
	array_foreach_modifiable(&ctx->mails, mail) {
		if (mail->seq == seq)
			return mail;
	}
	return NULL;
}

struct istream *
lmdb_save_get_input(struct mailbox_transaction_context *t, uint32_t seq,
		    uoff_t *size_r)
{
	struct lmdb_save_mail *mail = lmdb_save_find(t, seq);
	struct istream *input;

	if (mail == NULL)
		return NULL;
	*size_r = mail->physical_size;
	if (mail->input != NULL)
		return i_stream_create_limit(mail->input, UOFF_T_MAX);
	if (mail->shared_body &&
	    lmdb_body_istream_create(LMDB_MAILBOX(t->box), mail->hash,
				     &input) > 0)
		return input;
	return NULL;
}

const char *lmdb_save_get_guid(struct mailbox_transaction_context *t,
			       uint32_t seq)
{
	struct lmdb_save_mail *mail = lmdb_save_find(t, seq);

	return mail == NULL || mail->guid == NULL ? "" : mail->guid;
}

static void lmdb_save_add_to_index(struct lmdb_save_context *ctx)
{
	struct mail_save_data *mdata = &ctx->ctx.data;
	enum mail_flags save_flags;

	save_flags = mdata->flags & ENUM_NEGATE(MAIL_RECENT);
	mail_index_append(ctx->trans, mdata->uid, &ctx->seq);
	mail_index_update_flags(ctx->trans, ctx->seq, MODIFY_REPLACE,
				save_flags);
	if (mdata->keywords != NULL) {
		mail_index_update_keywords(ctx->trans, ctx->seq,
					   MODIFY_REPLACE, mdata->keywords);
	}
	if (mdata->min_modseq != 0) {
		mail_index_update_modseq(ctx->trans, ctx->seq,
					 mdata->min_modseq);
	}
}

/* Fill the metadata that both saves and copies take from the save data. */
static void lmdb_save_fill_mail(struct lmdb_save_context *ctx,
				struct lmdb_save_mail *mail)
{
	struct mail_save_data *mdata = &ctx->ctx.data;
	const ARRAY_TYPE(keywords) *names;
	ARRAY_TYPE(const_string) kws;
	unsigned int i;

	mail->seq = ctx->seq;
	mail->flags = mdata->flags & MAIL_FLAGS_NONRECENT;
	mail->min_modseq = mdata->min_modseq;
	mail->received_date = mdata->received_date;
	mail->save_date = mdata->save_date != (time_t)-1 ?
		mdata->save_date : ioloop_time;
	if (mdata->guid != NULL)
		mail->guid = p_strdup(ctx->pool, mdata->guid);
	if (mdata->pop3_uidl != NULL) {
		mail->pop3_uidl = p_strdup(ctx->pool, mdata->pop3_uidl);
		ctx->have_pop3_uidls = TRUE;
		ctx->highest_pop3_uidl_seq =
			I_MAX(ctx->highest_pop3_uidl_seq, ctx->seq);
	}
	if (mdata->pop3_order != 0) {
		mail->pop3_order = mdata->pop3_order;
		ctx->have_pop3_orders = TRUE;
		ctx->highest_pop3_uidl_seq =
			I_MAX(ctx->highest_pop3_uidl_seq, ctx->seq);
	}
	if (mdata->keywords != NULL && mdata->keywords->count > 0) {
		names = mail_index_get_keywords(ctx->mbox->box.index);
		p_array_init(&kws, ctx->pool, mdata->keywords->count + 1);
		for (i = 0; i < mdata->keywords->count; i++) {
			const char *name = p_strdup(ctx->pool,
				array_idx_elem(names, mdata->keywords->idx[i]));
			array_push_back(&kws, &name);
		}
		array_append_zero(&kws);
		mail->keywords = array_front(&kws);
	}
}

int lmdb_save_begin(struct mail_save_context *_ctx, struct istream *input)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mail_storage *storage = _ctx->transaction->box->storage;
	struct istream *crlf_input;
	struct lmdb_save_mail *mail;
	string_t *prefix;

	lmdb_save_add_to_index(ctx);
	mail_set_seq_saving(_ctx->dest_mail, ctx->seq);

	/* normalize line endings exactly like maildir does */
	if (storage->set->mail_save_crlf)
		crlf_input = i_stream_create_crlf(input);
	else
		crlf_input = i_stream_create_lf(input);
	ctx->input = index_mail_cache_parse_init(_ctx->dest_mail, crlf_input);
	i_stream_unref(&crlf_input);

	prefix = t_str_new(256);
	mail_user_set_get_temp_prefix(prefix, storage->user->set);
	ctx->output = iostream_temp_create_named(str_c(prefix), 0,
						 "lmdb save");
	_ctx->data.output = ctx->output;

	if (_ctx->data.received_date == (time_t)-1)
		_ctx->data.received_date = ioloop_time;

	mail = array_append_space(&ctx->mails);
	mail->seq = ctx->seq;
	ctx->cur_mail_added = TRUE;
	return 0;
}

int lmdb_save_continue(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);

	if (ctx->failed)
		return -1;
	if (index_storage_save_continue(_ctx, ctx->input,
					_ctx->dest_mail) < 0) {
		ctx->failed = TRUE;
		return -1;
	}
	return 0;
}

/* Close the output, as dbox does: a plugin (zlib, mail_crypt) may have
   wrapped it and must write its trailer. */
static void lmdb_save_end_output(struct lmdb_save_context *ctx)
{
	struct mail_save_data *mdata = &ctx->ctx.data;
	int ret;

	if (mdata->output != ctx->output)
		ret = o_stream_finish(mdata->output);
	else
		ret = o_stream_flush(mdata->output);
	if (ret < 0) {
		mail_set_critical(ctx->ctx.dest_mail, "write(%s) failed: %s",
				  o_stream_get_name(mdata->output),
				  o_stream_get_error(mdata->output));
		ctx->failed = TRUE;
	}
	if (mdata->output != ctx->output) {
		o_stream_ref(ctx->output);
		o_stream_destroy(&mdata->output);
	}
	mdata->output = NULL;
}

static int lmdb_save_hash_input(struct lmdb_save_context *ctx,
				struct lmdb_save_mail *mail)
{
	struct ldb_sha256 *sha = ldb_sha256_init();
	const unsigned char *data;
	size_t size;
	uoff_t total = 0;
	int ret;

	i_stream_seek(mail->input, 0);
	while ((ret = i_stream_read_more(mail->input, &data, &size)) > 0) {
		ldb_sha256_update(sha, data, size);
		total += size;
		i_stream_skip(mail->input, size);
	}
	ldb_sha256_final(&sha, mail->hash);
	if (mail->input->stream_errno != 0) {
		mail_set_critical(ctx->ctx.dest_mail, "read(%s) failed: %s",
				  i_stream_get_name(mail->input),
				  i_stream_get_error(mail->input));
		return -1;
	}
	i_stream_seek(mail->input, 0);
	return 0;
}

static void lmdb_save_finish_mail(struct lmdb_save_context *ctx)
{
	struct mail_save_context *_ctx = &ctx->ctx;
	struct lmdb_save_mail *mail = array_back_modifiable(&ctx->mails);
	uoff_t vsize;

	mail->input = iostream_temp_finish(&ctx->output, IO_BLOCK_SIZE);
	mail->physical_size = ctx->input->v_offset;
	lmdb_save_fill_mail(ctx, mail);
	if (mail->guid == NULL) {
		guid_128_t guid;

		guid_128_generate(guid);
		mail->guid = p_strdup(ctx->pool, guid_128_to_string(guid));
	}
	if (lmdb_save_hash_input(ctx, mail) < 0) {
		ctx->failed = TRUE;
		return;
	}
	if (mail_get_virtual_size(_ctx->dest_mail, &vsize) < 0)
		vsize = 0;
	mail->virtual_size = vsize;
}

int lmdb_save_finish(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mail_save_data *mdata = &_ctx->data;

	ctx->finished = TRUE;
	if (mdata->save_date != (time_t)-1) {
		struct index_mail *mail = INDEX_MAIL(_ctx->dest_mail);
		uint32_t t = mdata->save_date;

		index_mail_cache_add(mail, MAIL_CACHE_SAVE_DATE, &t, sizeof(t));
	}
	if (ctx->output != NULL) {
		lmdb_save_end_output(ctx);
		index_mail_cache_parse_deinit(_ctx->dest_mail,
					      mdata->received_date,
					      !ctx->failed);
		if (!ctx->failed) {
			index_mail_cache_pop3_data(_ctx->dest_mail,
						   mdata->pop3_uidl,
						   mdata->pop3_order);
			T_BEGIN {
				lmdb_save_finish_mail(ctx);
			} T_END;
		}
	} else {
		ctx->failed = TRUE;
	}

	if (ctx->failed && ctx->cur_mail_added) {
		struct lmdb_save_mail *mail;

		index_storage_save_abort_last(_ctx, ctx->seq);
		o_stream_destroy(&ctx->output);
		mail = array_back_modifiable(&ctx->mails);
		i_stream_unref(&mail->input);
		array_pop_back(&ctx->mails);
	}
	ctx->cur_mail_added = FALSE;
	i_stream_unref(&ctx->input);
	index_save_context_free(_ctx);
	return ctx->failed ? -1 : 0;
}

void lmdb_save_cancel(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);

	ctx->failed = TRUE;
	(void)lmdb_save_finish(_ctx);
}

/* COPY and MOVE inside one LMDB environment: a new record that points at
   the same body.  No body bytes are copied. */
static int lmdb_copy_shared(struct lmdb_save_context *ctx, struct mail *mail)
{
	struct mail_save_context *_ctx = &ctx->ctx;
	struct mail_save_data *mdata = &_ctx->data;
	struct lmdb_mailbox *src_mbox = LMDB_MAILBOX(mail->box);
	struct lmdb_save_mail *smail;
	struct lmdb_msg msg;
	int ret;

	ret = lmdb_msg_lookup(src_mbox, mail->uid, ctx->pool, &msg);
	if (ret <= 0) {
		if (ret == 0)
			mail_set_expunged(mail);
		return -1;
	}
	lmdb_save_add_to_index(ctx);
	smail = array_append_space(&ctx->mails);
	if (mdata->received_date == (time_t)-1)
		mdata->received_date = msg.received_date;
	lmdb_save_fill_mail(ctx, smail);
	smail->shared_body = TRUE;
	memcpy(smail->hash, msg.body_hash, sizeof(smail->hash));
	smail->physical_size = msg.physical_size;
	smail->virtual_size = msg.virtual_size;
	if (smail->guid == NULL)
		smail->guid = msg.guid;
	if (smail->pop3_uidl == NULL && msg.pop3_uidl[0] != '\0' &&
	    ctx->mbox->box.inbox_user) {
		smail->pop3_uidl = msg.pop3_uidl;
		ctx->have_pop3_uidls = TRUE;
		ctx->highest_pop3_uidl_seq =
			I_MAX(ctx->highest_pop3_uidl_seq, ctx->seq);
	}

	index_copy_cache_fields(_ctx, mail, ctx->seq);
	mail_set_seq_saving(_ctx->dest_mail, ctx->seq);
	if (mdata->save_date != (time_t)-1) {
		uint32_t t = mdata->save_date;

		index_mail_cache_add(INDEX_MAIL(_ctx->dest_mail),
				     MAIL_CACHE_SAVE_DATE, &t, sizeof(t));
	}
	return 0;
}

static bool lmdb_copy_can_share(struct lmdb_save_context *ctx,
				struct mail *mail)
{
	struct lmdb_storage *src_storage, *dest_storage;
	struct ldb_env *src_env, *dest_env;

	if (strcmp(mail->box->storage->name, LMDB_STORAGE_NAME) != 0)
		return FALSE;
	src_storage = LMDB_STORAGE(mail->box->storage);
	dest_storage = ctx->mbox->storage;
	if (lmdb_storage_get_env(src_storage, &src_env) < 0 ||
	    lmdb_storage_get_env(dest_storage, &dest_env) < 0)
		return FALSE;
	/* one environment per path per process: same pointer, same DB */
	return src_env == dest_env;
}

int lmdb_copy(struct mail_save_context *_ctx, struct mail *mail)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mail *backend_mail;
	int ret;

	ctx->finished = TRUE;
	if (mail_get_backend_mail(mail, &backend_mail) < 0)
		return -1;
	if ((_ctx->transaction->flags & MAILBOX_TRANSACTION_FLAG_SYNC) != 0 &&
	    _ctx->data.save_date == (time_t)-1) {
		/* dsync copies the source mail without its save date: keep
		   it, so a migration or replica loses no date.  (An IMAP
		   COPY gets a new save date, as RFC 8514 wants.) */
		time_t save_date;

		if (mail_get_save_date(mail, &save_date) > 0)
			mailbox_save_set_save_date(_ctx, save_date);
	}
	if (lmdb_copy_can_share(ctx, backend_mail)) {
		T_BEGIN {
			ret = lmdb_copy_shared(ctx, backend_mail);
		} T_END;
		index_save_context_free(_ctx);
		return ret;
	}
	return mail_storage_copy(_ctx, mail);
}

/* ---- commit ---- */

struct lmdb_save_write_ctx {
	struct lmdb_save_context *ctx;
	const struct mail_index_header *hdr;
	/* An upper bound of the modseq the index will give these mails: the
	   sync view's highest modseq plus at most a few log records per mail.
	   The exact value is mirrored by later syncs; a rebuild only needs
	   "the same or higher". */
	uint64_t modseq_bound;
	unsigned char *chunk_buf;
	const char *error;
	/* for the lmdb_save_batch event; reset when the write is retried */
	unsigned int new_bodies;
	uint64_t new_bytes, total_bytes;
};

static int lmdb_save_write_body(struct ldb_txn *txn,
				struct lmdb_save_write_ctx *wctx,
				struct lmdb_save_mail *mail)
{
	const unsigned char *data;
	size_t size, fill = 0;
	uint64_t total = 0;
	uint32_t idx = 0;
	uoff_t body_size;
	int ret;

	wctx->total_bytes += mail->physical_size;
	if ((ret = ldb_body_ref(txn, mail->hash)) != 0)
		return ret < 0 ? ret : 0;
	if (mail->input == NULL) {
		/* a copy whose source body vanished meanwhile */
		wctx->error = "source message was expunged";
		return LDB_ERR_INTERNAL;
	}
	if (i_stream_get_size(mail->input, TRUE, &body_size) <= 0) {
		wctx->error = "can't get size of saved message";
		return LDB_ERR_INTERNAL;
	}
	if ((ret = ldb_body_create(txn, mail->hash, body_size,
				   LDB_CHUNK_SIZE)) < 0)
		return ret;

	i_stream_seek(mail->input, 0);
	while ((ret = i_stream_read_more(mail->input, &data, &size)) > 0) {
		size_t n = I_MIN(size, LDB_CHUNK_SIZE - fill);

		memcpy(wctx->chunk_buf + fill, data, n);
		fill += n;
		total += n;
		i_stream_skip(mail->input, n);
		if (fill == LDB_CHUNK_SIZE) {
			if ((ret = ldb_body_chunk_put(txn, mail->hash, idx++,
					wctx->chunk_buf, fill)) < 0)
				return ret;
			fill = 0;
		}
	}
	if (mail->input->stream_errno != 0) {
		wctx->error = t_strdup_printf("read(%s) failed: %s",
			i_stream_get_name(mail->input),
			i_stream_get_error(mail->input));
		return LDB_ERR_INTERNAL;
	}
	if (fill > 0 && (ret = ldb_body_chunk_put(txn, mail->hash, idx++,
					wctx->chunk_buf, fill)) < 0)
		return ret;
	if (total != body_size) {
		wctx->error = "saved message changed size";
		return LDB_ERR_INTERNAL;
	}
	wctx->new_bodies++;
	wctx->new_bytes += total;
	return 0;
}

static int lmdb_save_write_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_save_write_ctx *wctx = context;
	struct lmdb_save_context *ctx = wctx->ctx;
	struct lmdb_save_mail *mail;
	struct ldb_mailbox_rec mrec;
	struct ldb_msg_rec rec;
	int ret;

	wctx->new_bodies = 0;
	wctx->new_bytes = wctx->total_bytes = 0;
	if ((ret = ldb_mailbox_get(txn, ctx->mbox->mailbox_guid, &mrec)) < 0)
		return ret;
	if (ret == 0) {
		i_zero(&mrec);
		mrec.next_uid = 1;
	}
	mrec.uid_validity = wctx->hdr->uid_validity;
	mrec.first_recent_uid = wctx->hdr->first_recent_uid;
	if (mrec.highest_modseq < wctx->modseq_bound)
		mrec.highest_modseq = wctx->modseq_bound;

	array_foreach_modifiable(&ctx->mails, mail) {
		if ((ret = lmdb_save_write_body(txn, wctx, mail)) < 0)
			return ret;
		i_zero(&rec);
		rec.flags = mail->flags;
		rec.pop3_order = mail->pop3_order;
		rec.received_date = mail->received_date;
		rec.save_date = mail->save_date;
		rec.physical_size = mail->physical_size;
		rec.virtual_size = mail->virtual_size;
		rec.modseq = I_MAX(wctx->modseq_bound, mail->min_modseq);
		if (mrec.highest_modseq < rec.modseq)
			mrec.highest_modseq = rec.modseq;
		memcpy(rec.body_hash, mail->hash, sizeof(rec.body_hash));
		rec.guid = mail->guid;
		rec.guid_len = strlen(mail->guid);
		rec.pop3_uidl = mail->pop3_uidl;
		rec.pop3_uidl_len = mail->pop3_uidl == NULL ? 0 :
			strlen(mail->pop3_uidl);
		if ((ret = ldb_msg_put(txn, ctx->mbox->mailbox_guid, mail->uid,
				       &rec, mail->keywords)) < 0)
			return ret;
		if (mrec.next_uid <= mail->uid)
			mrec.next_uid = mail->uid + 1;
	}
	if ((ret = ldb_mailbox_put(txn, ctx->mbox->mailbox_guid, &mrec)) < 0)
		return ret;
	return lmdb_mirror_keyword_list(txn, ctx->mbox);
}

static void lmdb_save_batch_event(struct event *event,
				  const struct lmdb_save_write_ctx *wctx,
				  unsigned int count)
{
	event_add_int(event, "messages", count);
	event_add_int(event, "bytes", wctx->total_bytes);
	event_add_int(event, "new_bodies", wctx->new_bodies);
	event_add_int(event, "new_bytes", wctx->new_bytes);
	event_add_int(event, "dedup_bodies", count - wctx->new_bodies);
	e_debug(event, "lmdb: Committed %u messages (%"PRIu64" bytes; %u new "
		"bodies, %"PRIu64" bytes written) in %lld ms", count,
		wctx->total_bytes, wctx->new_bodies, wctx->new_bytes,
		lmdb_event_msecs(event));
}

static int lmdb_save_write(struct lmdb_save_context *ctx,
			   const struct mail_index_header *hdr)
{
	struct lmdb_save_write_ctx wctx;
	struct ldb_env *env;
	struct event *event;
	int ret;

	if (lmdb_storage_get_env(ctx->mbox->storage, &env) < 0)
		return -1;
	i_zero(&wctx);
	wctx.ctx = ctx;
	wctx.hdr = hdr;
	wctx.modseq_bound =
		mail_index_modseq_get_highest(ctx->sync_ctx->sync_view) +
		3 * (uint64_t)array_count(&ctx->mails) + 3;
	wctx.chunk_buf = i_malloc(LDB_CHUNK_SIZE);
	event = event_create(ctx->mbox->box.event);
	event_set_name(event, "lmdb_save_batch");
	T_BEGIN {
		ret = ldb_write(env, lmdb_save_write_fn, &wctx);
		if (ret < 0 && wctx.error != NULL) {
			mailbox_set_critical(&ctx->mbox->box,
					     "lmdb: save: %s", wctx.error);
		} else if (ret < 0) {
			lmdb_mailbox_set_ldb_error(&ctx->mbox->box, ret,
						   "save");
		}
	} T_END;
	i_free(wctx.chunk_buf);
	if (ret == 0)
		lmdb_save_batch_event(event, &wctx, array_count(&ctx->mails));
	event_unref(&event);
	return ret < 0 ? -1 : 0;
}

static void lmdb_save_update_header_flags(struct lmdb_save_context *ctx)
{
	struct mail_index_view *sync_view = ctx->sync_ctx->sync_view;
	uint32_t ext_id = ctx->mbox->hdr_ext_id;
	unsigned int offset = offsetof(struct lmdb_index_header, flags);
	const void *data;
	size_t data_size;
	uint8_t old_flags = 0, flags;

	mail_index_get_header_ext(sync_view, ext_id, &data, &data_size);
	if (offset < data_size)
		old_flags = *((const uint8_t *)data + offset);
	else
		mail_index_ext_resize_hdr(ctx->trans, ext_id, offset + 1);

	flags = old_flags;
	if (ctx->have_pop3_uidls)
		flags |= LMDB_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS;
	if (ctx->have_pop3_orders)
		flags |= LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS;
	if (flags != old_flags)
		mail_index_update_header_ext(ctx->trans, ext_id, offset,
					     &flags, 1);
}

static uint32_t lmdb_save_lmdb_next_uid(struct lmdb_save_context *ctx)
{
	struct ldb_mailbox_rec rec;
	struct ldb_env *env;
	struct ldb_txn *txn;

	if (lmdb_storage_get_env(ctx->mbox->storage, &env) < 0 ||
	    ldb_txn_begin(env, FALSE, &txn) < 0)
		return 0;
	if (ldb_mailbox_get(txn, ctx->mbox->mailbox_guid, &rec) <= 0)
		rec.next_uid = 0;
	ldb_txn_abort(&txn);
	return rec.next_uid;
}

int lmdb_transaction_save_commit_pre(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct mailbox_transaction_context *_t = _ctx->transaction;
	const struct mail_index_header *hdr;
	struct lmdb_save_mail *mail;
	struct seq_range_iter iter;
	unsigned int n = 0;
	uint32_t first_uid;
	int i;

	i_assert(ctx->finished);

	if (array_count(&ctx->mails) == 0) {
		/* the mail must be freed in the commit_pre() */
		return 0;
	}

	/* A sync that recovered crash leftovers appends them in its own
	   transaction; commit it first so the new UIDs come after them. */
	for (i = 0;; i++) {
		if (lmdb_sync_begin(ctx->mbox, LMDB_SYNC_FLAG_FORCE |
				    LMDB_SYNC_FLAG_FSYNC, &ctx->sync_ctx) < 0) {
			lmdb_transaction_save_rollback(_ctx);
			return -1;
		}
		if (ctx->sync_ctx->recovered_count == 0 || i >= 2)
			break;
		if (lmdb_sync_finish(&ctx->sync_ctx, TRUE) < 0) {
			lmdb_transaction_save_rollback(_ctx);
			return -1;
		}
	}

	lmdb_save_update_header_flags(ctx);

	/* assign UIDs for new messages */
	hdr = mail_index_get_header(ctx->sync_ctx->sync_view);
	first_uid = I_MAX(hdr->next_uid, lmdb_save_lmdb_next_uid(ctx));
	mail_index_append_finish_uids(ctx->trans, first_uid,
				      &_t->changes->saved_uids);
	seq_range_array_iter_init(&iter, &_t->changes->saved_uids);
	array_foreach_modifiable(&ctx->mails, mail) {
		if (!seq_range_array_iter_nth(&iter, n++, &mail->uid))
			i_unreached();
		if (ctx->highest_pop3_uidl_seq == mail->seq) {
			index_pop3_uidl_set_max_uid(&ctx->mbox->box,
						    ctx->trans, mail->uid);
		}
	}

	if (lmdb_save_write(ctx, hdr) < 0) {
		lmdb_transaction_save_rollback(_ctx);
		return -1;
	}
	ctx->lmdb_written = TRUE;
	_t->changes->uid_validity = hdr->uid_validity;
	return 0;
}

static void lmdb_save_free(struct lmdb_save_context *ctx)
{
	struct lmdb_save_mail *mail;

	array_foreach_modifiable(&ctx->mails, mail)
		i_stream_unref(&mail->input);
	o_stream_destroy(&ctx->output);
	pool_unref(&ctx->pool);
	i_free(ctx);
}

void lmdb_transaction_save_commit_post(struct mail_save_context *_ctx,
		struct mail_index_transaction_commit_result *result)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);

	_ctx->transaction = NULL; /* transaction is already freed */

	if (array_count(&ctx->mails) == 0) {
		ctx->lmdb_written = FALSE;
		lmdb_transaction_save_rollback(_ctx);
		return;
	}
	mail_index_sync_set_commit_result(ctx->sync_ctx->index_sync_ctx,
					  result);
	if (lmdb_sync_finish(&ctx->sync_ctx, TRUE) < 0)
		ctx->failed = TRUE;
	i_assert(ctx->finished);
	lmdb_save_free(ctx);
}

static int lmdb_save_undo_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_save_context *ctx = context;
	const struct lmdb_save_mail *mail;
	int ret;

	array_foreach(&ctx->mails, mail) {
		if ((ret = ldb_msg_expunge(txn, ctx->mbox->mailbox_guid,
					   mail->uid)) < 0)
			return ret;
	}
	return 0;
}

void lmdb_transaction_save_rollback(struct mail_save_context *_ctx)
{
	struct lmdb_save_context *ctx = LMDB_SAVECTX(_ctx);
	struct ldb_env *env;

	ctx->failed = TRUE;
	if (!ctx->finished)
		lmdb_save_cancel(_ctx);
	if (ctx->lmdb_written &&
	    lmdb_storage_get_env(ctx->mbox->storage, &env) == 0) {
		/* the index refused what LMDB already has: take it back, so
		   a failed APPEND doesn't reappear at the next sync */
		(void)ldb_write(env, lmdb_save_undo_fn, ctx);
	}
	if (ctx->sync_ctx != NULL)
		(void)lmdb_sync_finish(&ctx->sync_ctx, FALSE);
	lmdb_save_free(ctx);
}
