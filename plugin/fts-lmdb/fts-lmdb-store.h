#ifndef FTS_LMDB_STORE_H
#define FTS_LMDB_STORE_H

/*
 * The fts_lmdb index in LMDB, through the ldb layer (include/lmdb-db.h).
 * No Dovecot headers, so the cmocka tests drive it against a real
 * environment in a temporary directory.
 *
 * SCHEMA (version FTS_LMDB_SCHEMA_VERSION)
 * =======================================
 * One environment per mail namespace: <index root>/fts-lmdb/.  All
 * integers are big-endian.  Named databases:
 *
 *   "meta"     "fts_schema_version" -> u32; a newer version is refused.
 *              "fts_next_box_id"    -> u32 next free box id.
 *              (ldb_env_open() also keeps its own keys here, and creates
 *              the mail format's databases, which stay empty.)
 *
 *   "fts_box"  key: mailbox GUID (16)          value (20 bytes):
 *                0  u8   record version (1)
 *                1  u8[3] zero
 *                4  u32  box id: the prefix of this mailbox's keys below
 *                8  u32  UIDVALIDITY the data belongs to
 *               12  u32  last UID: every UID up to it was indexed.  It is
 *                        written in the same transaction as the postings
 *                        and texts of those UIDs.
 *               16  u32  expunged UIDs still in the postings
 *              A mailbox whose UIDVALIDITY changed gets a new box id, so
 *              its old data can never answer for the new messages.
 *
 *   "fts_dead" key: box id (4)                 value: empty
 *              Box ids whose data "doveadm fts optimize" deletes.
 *
 *   "fts_post" key: box id (4) + space (1) + gram (8) + first UID (4)
 *              value: a posting block (fts-lmdb-codec.h) of UIDs that
 *              contain the gram in that space; the first is the key's.
 *              UIDs only grow, so new postings append to the last block.
 *
 *   "fts_doc"  key: box id (4) + UID (4)       value: the message's text
 *              (fts-lmdb-doc.h), used to verify every candidate.
 *
 *   "fts_uid"  key: box id (4) + UID (4)       value: u8 flags
 *              (FTS_LMDB_DOC_FLAG_*: what the text lacks).  The indexed
 *              UIDs, small enough to scan for NOT.
 *
 * POSTING SPACES: 'B' body and extra text, 'H' all header lines, 'S' the
 * whitespace-compressed Subject, 'F' 'T' 'C' 'D' the address forms of
 * From, To, Cc and Bcc, 'N' header names (gram = fts_lmdb_name_hash()).
 *
 * Expunges delete the "fts_doc" and "fts_uid" rows at once (a candidate
 * without its text is no match) and leave the postings to optimize.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "lmdb-db.h"
#include "fts-lmdb-codec.h"
#include "fts-lmdb-doc.h"

#define FTS_LMDB_SCHEMA_VERSION 1
#define FTS_LMDB_DIR_NAME "fts-lmdb"
#define FTS_LMDB_BOX_REC_SIZE 20
#define FTS_LMDB_POST_KEY_SIZE 17
#define FTS_LMDB_DOC_KEY_SIZE 8


struct fts_lmdb_store;
struct fts_lmdb_batch;

struct fts_lmdb_box_rec {
	uint32_t box_id;
	uint32_t uidvalidity;
	uint32_t last_uid;
	uint32_t dead;
};

struct fts_lmdb_box_entry {
	uint8_t guid[LDB_GUID_SIZE];
	struct fts_lmdb_box_rec rec;
};

int fts_lmdb_store_open(const char *path, const struct ldb_settings *set,
			struct fts_lmdb_store **store_r, const char **error_r);
void fts_lmdb_store_close(struct fts_lmdb_store **store);
const char *fts_lmdb_store_last_error(struct fts_lmdb_store *store);
struct ldb_env *fts_lmdb_store_env(struct fts_lmdb_store *store);

/* codecs, exposed for the unit tests */
void fts_lmdb_box_rec_encode(const struct fts_lmdb_box_rec *rec,
			     uint8_t buf[FTS_LMDB_BOX_REC_SIZE]);
int fts_lmdb_box_rec_decode(const void *data, size_t size,
			    struct fts_lmdb_box_rec *rec_r);
void fts_lmdb_post_key(uint32_t box_id, uint8_t space, uint64_t gram,
		       uint32_t first_uid,
		       uint8_t key_r[FTS_LMDB_POST_KEY_SIZE]);

/* ---- reading (in a read or write transaction) ---- */
/* 1 found, 0 not, < 0 error */
int fts_lmdb_store_box_get(struct ldb_txn *txn, struct fts_lmdb_store *store,
			   const uint8_t guid[LDB_GUID_SIZE],
			   struct fts_lmdb_box_rec *rec_r);
/* Append the UIDs of (space, gram) to out, sorted. */
int fts_lmdb_store_postings(struct ldb_txn *txn, struct fts_lmdb_store *store,
			    uint32_t box_id, uint8_t space, uint64_t gram,
			    struct fts_lmdb_uids *out);
/* 1 found (data valid until the transaction ends), 0 not, < 0 error */
int fts_lmdb_store_doc_get(struct ldb_txn *txn, struct fts_lmdb_store *store,
			   uint32_t box_id, uint32_t uid,
			   const void **data_r, size_t *size_r);
/* The indexed UIDs; if flagged isn't NULL, also those with flags, and
   their flags in flags (one byte each). */
int fts_lmdb_store_uids(struct ldb_txn *txn, struct fts_lmdb_store *store,
			uint32_t box_id, struct fts_lmdb_uids *live,
			struct fts_lmdb_uids *flagged, struct fts_lmdb_buf *flags);

/* ---- indexing: a batch is written in one transaction ---- */
/* base_last_uid: the box's last UID when indexing started (0 if it had
   no record or another UIDVALIDITY). */
struct fts_lmdb_batch *
fts_lmdb_batch_new(const uint8_t guid[LDB_GUID_SIZE], uint32_t uidvalidity,
		   uint32_t base_last_uid);
void fts_lmdb_batch_free(struct fts_lmdb_batch **batch);
/* A message was processed (even one without text, e.g. expunged). */
void fts_lmdb_batch_seen_uid(struct fts_lmdb_batch *batch, uint32_t uid);
/* Add a message: its encoded text and the distinct grams of each space
   (spaces[i] with grams[i]). */
void fts_lmdb_batch_add(struct fts_lmdb_batch *batch, uint32_t uid,
			uint8_t uid_flags, const void *doc, size_t doc_size,
			const uint8_t *spaces,
			const struct fts_lmdb_grams *const *grams,
			unsigned int space_count);
unsigned int fts_lmdb_batch_messages(const struct fts_lmdb_batch *batch);
/* memory the batch holds, in bytes */
size_t fts_lmdb_batch_memory(const struct fts_lmdb_batch *batch);
/* Write the batch in one transaction and empty it.  Returns 1 written,
   0 dropped because another process reset the mailbox meanwhile, < 0
   error (the batch is emptied too: the index is then only behind). */
int fts_lmdb_batch_flush(struct fts_lmdb_store *store,
			 struct fts_lmdb_batch *batch);
/* The base for the next flush (after a successful one: the new last UID) */
uint32_t fts_lmdb_batch_base(const struct fts_lmdb_batch *batch);

/* ---- expunge and maintenance ---- */
/* Delete the texts of uids; returns how many existed, or < 0. */
int fts_lmdb_store_expunge(struct fts_lmdb_store *store,
			   const uint8_t guid[LDB_GUID_SIZE],
			   uint32_t uidvalidity, const uint32_t *uids,
			   size_t count);
/* All mailbox records (malloc()ed array in *boxes_r). */
int fts_lmdb_store_boxes(struct fts_lmdb_store *store,
			 struct fts_lmdb_box_entry **boxes_r,
			 size_t *count_r);
/* Forget a mailbox: its data is deleted by the next purge. */
int fts_lmdb_store_box_drop(struct fts_lmdb_store *store,
			    const uint8_t guid[LDB_GUID_SIZE]);
/* Repair: delete the texts of extra_uids and lower last_uid to at most
   max_last_uid.  Only if the record still has box_id. */
int fts_lmdb_store_box_repair(struct fts_lmdb_store *store,
			      const uint8_t guid[LDB_GUID_SIZE],
			      uint32_t box_id, const uint32_t *extra_uids,
			      size_t extra_count, uint32_t max_last_uid);
/* Delete all data of dropped box ids, in short transactions.  Returns
   the number of box ids purged, or < 0. */
int fts_lmdb_store_purge_dead(struct fts_lmdb_store *store);
/* Drop expunged UIDs from the mailbox's postings and merge small blocks,
   in short transactions.  Returns the number of postings dropped. */
int fts_lmdb_store_compact_box(struct fts_lmdb_store *store,
			       const uint8_t guid[LDB_GUID_SIZE]);

#endif
