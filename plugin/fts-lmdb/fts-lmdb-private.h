#ifndef FTS_LMDB_PRIVATE_H
#define FTS_LMDB_PRIVATE_H

#include "unichar.h"
#include "fts-lmdb-plugin.h"
#include "fts-lmdb-codec.h"
#include "fts-lmdb-doc.h"
#include "fts-lmdb-store.h"

struct mail;
struct mailbox;
struct message_decoder_context;

struct lmdb_fts_backend {
	struct fts_backend backend;
	struct event *event;
	struct fts_lmdb_settings set;
	char *path;
	struct fts_lmdb_store *store;
	struct fts_lmdb_doc_reader *reader;

	/* lookup session: from the first lookup() to lookup_done() */
	struct ldb_txn *txn;
	bool session_analyzed;
	/* header names that the query searches with different forms */
	ARRAY_TYPE(const_string) conflicts;
	pool_t session_pool;
	/* cached per mailbox of the session */
	struct mailbox *cache_box;
	struct fts_lmdb_box_rec cache_rec;
	bool cache_rec_ok;
	/* indexed UIDs; those whose text lacks something, with their
	   FTS_LMDB_DOC_FLAG_* in flags; those without text that should have
	   it */
	struct fts_lmdb_uids live, flagged, missing;
	struct fts_lmdb_buf flags;
};

#define LMDB_FTS_BACKEND(b) \
	container_of(b, struct lmdb_fts_backend, backend)

/* Open the index of the backend's namespace if it isn't yet.
   0 = ok, -1 = error (logged). */
int fts_lmdb_backend_open(struct lmdb_fts_backend *backend);
void fts_lmdb_backend_ldb_settings(struct lmdb_fts_backend *backend,
				   struct ldb_settings *set_r);
/* The mailbox's GUID and UIDVALIDITY (the mailbox is opened if needed). */
int fts_lmdb_box_identity(struct mailbox *box, uint8_t guid_r[LDB_GUID_SIZE],
			  uint32_t *uidvalidity_r);

/* Fill b with the normalized text that Dovecot's own SEARCH looks at in
   mail: see fts-lmdb-doc.h.  decoder is kept across messages, as
   message-search.c keeps its own (charset translations get reused); it
   must have been created with normalizer, the user's.  0 = ok, -1 = the mail couldn't be read (b
   is marked partial, *error_r says why). */
int fts_lmdb_capture_mail(struct mail *mail, normalizer_func_t *normalizer,
			  struct message_decoder_context *decoder,
			  struct fts_lmdb_doc_builder *b,
			  const char **error_r);

/* doveadm fts rescan / optimize (fts-lmdb-maint.c) */
int fts_lmdb_rescan(struct lmdb_fts_backend *backend);
int fts_lmdb_optimize(struct lmdb_fts_backend *backend);

int fts_lmdb_lookup(struct lmdb_fts_backend *backend, struct mailbox *box,
		    struct mail_search_arg *args,
		    enum fts_lookup_flags flags, struct fts_result *result);
void fts_lmdb_lookup_done(struct lmdb_fts_backend *backend);

#endif
