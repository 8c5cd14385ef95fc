/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "istream.h"
#include "str.h"
#include "index-mail.h"
#include "index-pop3-uidl.h"
#include "lmdb-storage.h"

struct mail *
lmdb_mail_alloc(struct mailbox_transaction_context *t,
		enum mail_fetch_field wanted_fields,
		struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct lmdb_mail *mail;
	pool_t pool;

	pool = pool_alloconly_create("mail", 2048);
	mail = p_new(pool, struct lmdb_mail, 1);
	index_mail_init(&mail->imail, t, wanted_fields, wanted_headers,
			pool, NULL);
	return &mail->imail.mail.mail;
}

static void lmdb_mail_forget_body(struct lmdb_mail *mail)
{
	if (mail->body_input != NULL) {
		lmdb_body_istream_set_mail(mail->body_input, NULL);
		i_stream_unref(&mail->body_input);
	}
}

static void lmdb_mail_close(struct mail *_mail)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);

	lmdb_mail_forget_body(mail);
	index_mail_close(_mail);
	mail->msg_loaded = FALSE;
}

/* The index has the mail but LMDB doesn't: it was expunged by another
   process (or a crash left the index behind).  Never corruption. */
static void lmdb_mail_set_expunged(struct mail *_mail)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);

	mail_index_refresh(_mail->box->index);
	if (!mail_index_is_expunged(_mail->transaction->view, _mail->seq)) {
		e_debug(mail_event(_mail), "lmdb: uid=%u is in the index but not in "
			"LMDB: treating it as expunged", _mail->uid);
		lmdb_mailbox_add_lost_uid(mbox, _mail->uid);
	}
	mail_set_expunged(_mail);
}

int lmdb_mail_body_vanished(struct mail *_mail)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);
	struct lmdb_msg msg;
	int ret;

	T_BEGIN {
		ret = lmdb_msg_lookup(mbox, _mail->uid,
				      pool_datastack_create(), &msg);
	} T_END;
	if (ret != 0)
		return ret < 0 ? -1 : 0;
	lmdb_mail_set_expunged(_mail);
	return 1;
}

/* 1 = record loaded, 0 = mail is being saved (no record yet), -1 = error */
static int lmdb_mail_get_msg(struct mail *_mail, const struct lmdb_msg **msg_r)
{
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);
	int ret;

	if (mail->msg_loaded && mail->msg.uid == _mail->uid) {
		*msg_r = &mail->msg;
		return 1;
	}
	if (_mail->saving)
		return 0;
	ret = lmdb_msg_lookup(mbox, _mail->uid, mail->imail.mail.data_pool,
			      &mail->msg);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		lmdb_mail_set_expunged(_mail);
		return -1;
	}
	mail->msg_loaded = TRUE;
	*msg_r = &mail->msg;
	return 1;
}

static int lmdb_mail_get_received_date(struct mail *_mail, time_t *date_r)
{
	struct index_mail *imail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &imail->data;
	const struct lmdb_msg *msg;
	int ret;

	if (index_mail_get_received_date(_mail, date_r) == 0)
		return 0;
	if ((ret = lmdb_mail_get_msg(_mail, &msg)) <= 0)
		return ret < 0 ? -1 : index_mail_get_received_date(_mail, date_r);
	data->received_date = msg->received_date;
	*date_r = data->received_date;
	return 0;
}

static int lmdb_mail_get_save_date(struct mail *_mail, time_t *date_r)
{
	struct index_mail *imail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &imail->data;
	const struct lmdb_msg *msg;
	int ret;

	/* LMDB first: while saving, index-mail caches "now" as the save date
	   even when the saver (dsync) gave the original one, which the
	   record has. */
	if (_mail->saving || data->save_date != (time_t)-1) {
		if (index_mail_get_save_date(_mail, date_r) > 0)
			return 1;
	}
	if ((ret = lmdb_mail_get_msg(_mail, &msg)) < 0)
		return -1;
	if (ret == 0) {
		if (index_mail_get_save_date(_mail, date_r) > 0)
			return 1;
		*date_r = data->save_date = ioloop_time;
		return 1;
	}
	data->save_date = msg->save_date;
	*date_r = data->save_date;
	return 1;
}

static int lmdb_mail_get_physical_size(struct mail *_mail, uoff_t *size_r)
{
	struct index_mail *imail = INDEX_MAIL(_mail);
	struct index_mail_data *data = &imail->data;
	const struct lmdb_msg *msg;
	int ret;

	if (index_mail_get_physical_size(_mail, size_r) == 0)
		return 0;
	if ((ret = lmdb_mail_get_msg(_mail, &msg)) <= 0)
		return -1;
	data->physical_size = msg->physical_size;
	*size_r = data->physical_size;
	return 0;
}

static int lmdb_mail_get_virtual_size(struct mail *_mail, uoff_t *size_r)
{
	struct index_mail *imail = INDEX_MAIL(_mail);
	const struct lmdb_msg *msg;
	int ret;

	if (index_mail_get_cached_virtual_size(imail, size_r))
		return 0;
	if ((ret = lmdb_mail_get_msg(_mail, &msg)) < 0)
		return -1;
	if (ret == 0 || msg->virtual_size == 0)
		return index_mail_get_virtual_size(_mail, size_r);
	imail->data.virtual_size = msg->virtual_size;
	*size_r = imail->data.virtual_size;
	return 0;
}

static int
lmdb_mail_get_special(struct mail *_mail, enum mail_fetch_field field,
		      const char **value_r)
{
	struct index_mail *imail = INDEX_MAIL(_mail);
	const struct lmdb_msg *msg;
	int ret;

	switch (field) {
	case MAIL_FETCH_GUID:
		if ((ret = lmdb_mail_get_msg(_mail, &msg)) < 0)
			return -1;
		if (ret == 0) {
			*value_r = lmdb_save_get_guid(_mail->transaction,
						      _mail->seq);
			return 0;
		}
		*value_r = msg->guid;
		return 0;
	case MAIL_FETCH_UIDL_BACKEND:
		if (!lmdb_header_have_flag(_mail->box,
				LMDB_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS) ||
		    !index_pop3_uidl_can_exist(_mail)) {
			*value_r = "";
			return 0;
		}
		if ((ret = lmdb_mail_get_msg(_mail, &msg)) < 0)
			return -1;
		*value_r = ret == 0 ? "" : msg->pop3_uidl;
		index_pop3_uidl_update_exists(_mail, (*value_r)[0] != '\0');
		return 0;
	case MAIL_FETCH_POP3_ORDER:
		if (!lmdb_header_have_flag(_mail->box,
				LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS) ||
		    !index_pop3_uidl_can_exist(_mail)) {
			*value_r = "";
			return 0;
		}
		if ((ret = lmdb_mail_get_msg(_mail, &msg)) < 0)
			return -1;
		if (ret == 0 || msg->pop3_order == 0)
			*value_r = "";
		else {
			*value_r = p_strdup_printf(imail->mail.data_pool, "%u",
						   msg->pop3_order);
		}
		return 0;
	default:
		break;
	}
	return index_mail_get_special(_mail, field, value_r);
}

static int
lmdb_mail_get_stream(struct mail *_mail, bool get_body ATTR_UNUSED,
		     struct message_size *hdr_size,
		     struct message_size *body_size,
		     struct istream **stream_r)
{
	struct index_mail *imail = INDEX_MAIL(_mail);
	struct lmdb_mail *mail = LMDB_MAIL(_mail);
	struct mail_private *pmail = &imail->mail;
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(_mail->box);
	const struct lmdb_msg *msg;
	struct istream *input;
	uoff_t size;
	int ret;

	if (imail->data.stream == NULL) {
		if (!mail_stream_access_start(_mail))
			return -1;
		if ((ret = lmdb_mail_get_msg(_mail, &msg)) < 0)
			return -1;
		if (ret == 0) {
			input = lmdb_save_get_input(_mail->transaction,
						    _mail->seq, &size);
			if (input == NULL) {
				mail_set_critical(_mail, "lmdb: Mail being "
						  "saved has no stream yet");
				return -1;
			}
		} else {
			ret = lmdb_body_istream_create(mbox, msg->body_hash,
						       &input);
			if (ret <= 0) {
				if (ret == 0)
					lmdb_mail_set_expunged(_mail);
				return -1;
			}
			lmdb_mail_forget_body(mail);
			lmdb_body_istream_set_mail(input, _mail);
			mail->body_input = input;
			i_stream_ref(input);
		}
		if (pmail->v.istream_opened != NULL) {
			if (pmail->v.istream_opened(_mail, &input) < 0) {
				i_stream_unref(&input);
				return -1;
			}
		}
		imail->data.stream = input;
		index_mail_set_read_buffer_size(_mail, input);
	}
	return index_mail_init_stream(imail, hdr_size, body_size, stream_r);
}

struct mail_vfuncs lmdb_mail_vfuncs = {
	.close = lmdb_mail_close,
	.free = index_mail_free,
	.set_seq = index_mail_set_seq,
	.set_uid = index_mail_set_uid,
	.set_uid_cache_updates = index_mail_set_uid_cache_updates,
	.prefetch = index_mail_prefetch,
	.precache = index_mail_precache,
	.add_temp_wanted_fields = index_mail_add_temp_wanted_fields,

	.get_flags = index_mail_get_flags,
	.get_keywords = index_mail_get_keywords,
	.get_keyword_indexes = index_mail_get_keyword_indexes,
	.get_modseq = index_mail_get_modseq,
	.get_pvt_modseq = index_mail_get_pvt_modseq,
	.get_parts = index_mail_get_parts,
	.get_date = index_mail_get_date,
	.get_received_date = lmdb_mail_get_received_date,
	.get_save_date = lmdb_mail_get_save_date,
	.get_virtual_size = lmdb_mail_get_virtual_size,
	.get_physical_size = lmdb_mail_get_physical_size,
	.get_first_header = index_mail_get_first_header,
	.get_headers = index_mail_get_headers,
	.get_header_stream = index_mail_get_header_stream,
	.get_stream = lmdb_mail_get_stream,
	.get_binary_stream = index_mail_get_binary_stream,
	.get_special = lmdb_mail_get_special,
	.get_backend_mail = index_mail_get_backend_mail,
	.update_flags = index_mail_update_flags,
	.update_keywords = index_mail_update_keywords,
	.update_modseq = index_mail_update_modseq,
	.update_pvt_modseq = index_mail_update_pvt_modseq,
	.update_pop3_uidl = NULL,
	.expunge = index_mail_expunge,
	.set_cache_corrupted = index_mail_set_cache_corrupted,
	.istream_opened = index_mail_opened,
};
