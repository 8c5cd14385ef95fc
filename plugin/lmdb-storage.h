#ifndef LMDB_STORAGE_H
#define LMDB_STORAGE_H

#include "index-storage.h"
#include "index-mail.h"
#include "lmdb-db.h"

#define LMDB_STORAGE_NAME "lmdb"
#define LMDB_MAILDIR_NAME "lmdb-Mails"
#define LMDB_MAILBOX_DIR_NAME "mailboxes"
#define LMDB_SUBSCRIPTION_FILE_NAME "subscriptions"
#define LMDB_UIDVALIDITY_FILE_NAME "lmdb-uidvalidity"
#define LMDB_GUID_FILE_NAME "lmdb-mailbox-guid"

/* plugin { } settings */
#define LMDB_SET_MAP_SIZE "lmdb_map_size"
#define LMDB_SET_MAX_SIZE "lmdb_max_size"
/* how long opening a user's mail waits for doveadm lmdb compact */
#define LMDB_SET_LOCK_TIMEOUT "lmdb_lock_timeout"

#define LMDB_INDEX_HEADER_MIN_SIZE (sizeof(uint32_t))
struct lmdb_index_header {
	/* increased every time a full mailbox rebuild is done */
	uint32_t rebuild_count;
	guid_128_t mailbox_guid;
	uint8_t flags; /* enum lmdb_index_header_flags */
	uint8_t unused[3];
};

enum lmdb_index_header_flags {
	LMDB_INDEX_HEADER_FLAG_HAVE_POP3_UIDLS = 0x01,
	LMDB_INDEX_HEADER_FLAG_HAVE_POP3_ORDERS = 0x02,
};

struct lmdb_storage {
	struct mail_storage storage;

	struct mailbox_list *list;
	const char *env_path;
	struct ldb_settings ldb_set;
	struct ldb_env *env;
};

struct lmdb_mailbox {
	struct mailbox box;
	struct lmdb_storage *storage;

	uint32_t hdr_ext_id;
	/* if non-zero, storage should be rebuilt (except if rebuild_count
	   has changed from this value) */
	uint32_t corrupted_rebuild_count;
	guid_128_t mailbox_guid;

	/* UIDs the index has but LMDB lacks: expunged by the next sync */
	ARRAY_TYPE(seq_range) lost_uids;
};

/* one message record, copied out of LMDB into a pool */
struct lmdb_msg {
	uint32_t uid;
	uint8_t flags;
	uint32_t pop3_order;
	time_t received_date, save_date;
	uoff_t physical_size, virtual_size;
	uint64_t modseq;
	uint8_t body_hash[LDB_HASH_SIZE];
	const char *guid;
	const char *pop3_uidl;
	ARRAY_TYPE(const_string) keywords;
};

#define LMDB_STORAGE(s) container_of(s, struct lmdb_storage, storage)
#define LMDB_MAILBOX(s) container_of(s, struct lmdb_mailbox, box)

extern struct mail_storage lmdb_storage;
extern struct mail_vfuncs lmdb_mail_vfuncs;

struct lmdb_mail {
	struct index_mail imail;
	/* the LMDB record, looked up once per mail */
	struct lmdb_msg msg;
	bool msg_loaded;
	/* the body stream, told about this mail until the mail closes */
	struct istream *body_input;
};
#define LMDB_MAIL(s) container_of(s, struct lmdb_mail, imail.mail.mail)

extern struct event_category event_category_lmdb;

struct mail *
lmdb_mail_alloc(struct mailbox_transaction_context *t,
		enum mail_fetch_field wanted_fields,
		struct mailbox_header_lookup_ctx *wanted_headers);

/* Milliseconds since event was created: the duration of an operation whose
   event was created when it began (the "duration" field metrics see). */
long long lmdb_event_msecs(struct event *event);

/* storage */
int lmdb_storage_get_env(struct lmdb_storage *storage, struct ldb_env **env_r);
/* Report an ldb error code on the mailbox: quota-like errors become
   user-facing errors, the rest are critical. */
void lmdb_mailbox_set_ldb_error(struct mailbox *box, int ret,
				const char *func);
int lmdb_read_header(struct lmdb_mailbox *mbox, struct lmdb_index_header *hdr,
		     bool log_error, bool *need_resize_r);
int lmdb_mailbox_create_indexes(struct mailbox *box,
				const struct mailbox_update *update,
				struct mail_index_transaction *trans);
void lmdb_set_mailbox_corrupted(struct mailbox *box);
bool lmdb_header_have_flag(struct mailbox *box, uint8_t flag);
/* Look up a message record.  1 found, 0 not found, -1 error (set). */
int lmdb_msg_lookup(struct lmdb_mailbox *mbox, uint32_t uid, pool_t pool,
		    struct lmdb_msg *msg_r);
void lmdb_msg_from_rec(const struct ldb_msg_rec *rec, uint32_t uid,
		       pool_t pool, struct lmdb_msg *msg_r);
uint32_t lmdb_get_uidvalidity_next(struct mailbox_list *list);
/* The mailbox GUID is also kept in a small file in the mailbox directory,
   so that LMDB's records are found again when every index file is lost.
   1 = read, 0 = no file, -1 = error */
int lmdb_mailbox_guid_file_read(struct lmdb_mailbox *mbox, guid_128_t guid_r);
int lmdb_mailbox_guid_file_write(struct lmdb_mailbox *mbox,
				 const guid_128_t guid);
/* Remember that uid is in the index but not in LMDB. */
void lmdb_mailbox_add_lost_uid(struct lmdb_mailbox *mbox, uint32_t uid);

/* body stream: reads chunks in short read transactions */
/* 1 = created, 0 = body is missing (treat as expunged), -1 = error (set) */
int lmdb_body_istream_create(struct lmdb_mailbox *mbox,
			     const uint8_t hash[LDB_HASH_SIZE],
			     struct istream **input_r);
/* Let a body stream mark mail expunged when the body disappears while it
   is read (mail NULL: forget it). */
void lmdb_body_istream_set_mail(struct istream *input, struct mail *mail);
/* The body of mail vanished while it was read.  1 = its record is gone
   too: it was expunged, and mail is now marked so; 0 = the record is still
   there (corruption); -1 = error (set). */
int lmdb_mail_body_vanished(struct mail *mail);

/* saving */
struct mail_save_context *
lmdb_save_alloc(struct mailbox_transaction_context *_t);
int lmdb_save_begin(struct mail_save_context *ctx, struct istream *input);
int lmdb_save_continue(struct mail_save_context *ctx);
int lmdb_save_finish(struct mail_save_context *ctx);
void lmdb_save_cancel(struct mail_save_context *ctx);
int lmdb_copy(struct mail_save_context *ctx, struct mail *mail);
int lmdb_transaction_save_commit_pre(struct mail_save_context *ctx);
void lmdb_transaction_save_commit_post(struct mail_save_context *ctx,
		struct mail_index_transaction_commit_result *result);
void lmdb_transaction_save_rollback(struct mail_save_context *ctx);
/* The stream of a mail saved in this transaction, or NULL. */
struct istream *
lmdb_save_get_input(struct mailbox_transaction_context *t, uint32_t seq,
		    uoff_t *size_r);

/* GUID of a mail saved in this transaction */
const char *lmdb_save_get_guid(struct mailbox_transaction_context *t,
			       uint32_t seq);

/* syncing */
enum lmdb_sync_flags {
	LMDB_SYNC_FLAG_FORCE = 0x01,
	LMDB_SYNC_FLAG_FSYNC = 0x02,
	LMDB_SYNC_FLAG_FORCE_REBUILD = 0x04,
};

struct lmdb_sync_context {
	struct lmdb_mailbox *mbox;
	struct mail_index_sync_ctx *index_sync_ctx;
	struct mail_index_view *sync_view;
	struct mail_index_transaction *trans;
	enum lmdb_sync_flags flags;

	ARRAY_TYPE(seq_range) expunged_uids;
	ARRAY_TYPE(seq_range) changed_uids;
	/* records found in LMDB above the index's next_uid and appended */
	unsigned int recovered_count;
};

int lmdb_sync_begin(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags,
		    struct lmdb_sync_context **ctx_r);
int lmdb_sync_finish(struct lmdb_sync_context **ctx, bool success);
int lmdb_sync(struct lmdb_mailbox *mbox, enum lmdb_sync_flags flags);
struct mailbox_sync_context *
lmdb_storage_sync_init(struct mailbox *box, enum mailbox_sync_flags flags);
int lmdb_sync_index_rebuild(struct lmdb_mailbox *mbox, bool force);
/* Store the index's keyword names, in order, if LMDB's list is shorter. */
int lmdb_mirror_keyword_list(struct ldb_txn *txn, struct lmdb_mailbox *mbox);

#endif
