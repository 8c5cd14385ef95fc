/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* An istream over a body stored in chunks, addressed by its SHA-256,
   which is checked whenever the whole body is read.  A body of up to
   LMDB_BODY_COPY_MAX bytes is copied into memory when the stream is
   created, in the same read transaction that finds it, so an expunge by
   another session can never pull it away halfway through (maildir and
   dbox get the same from their open file descriptor).  A larger body is
   read chunk by chunk, each read() in its own short read transaction, so
   no read transaction is ever held while the client is being served (or
   across IDLE), and memory stays bounded by the stream buffer. */

#include "lib.h"
#include "istream-private.h"
#include "hex-binary.h"
#include "lmdb-storage.h"

#define LMDB_BODY_COPY_MAX (1024 * 1024)

struct lmdb_body_istream {
	struct istream_private istream;
	struct ldb_env *env;
	uint8_t hash[LDB_HASH_SIZE];
	uoff_t size;
	uint32_t chunk_size;
	/* the mail reading it, if any (lmdb_body_istream_set_mail()) */
	struct mail *mail;
	/* the whole body, for a body of up to LMDB_BODY_COPY_MAX bytes */
	unsigned char *copy;
	/* a larger body read from its start: hashed as it goes, and checked
	   against its SHA-256 when the last byte is read */
	struct ldb_sha256 *sha;
	uoff_t hashed;
};

static bool lmdb_body_hash_matches(struct ldb_sha256 **sha,
				   const uint8_t hash[LDB_HASH_SIZE])
{
	uint8_t digest[LDB_HASH_SIZE];

	ldb_sha256_final(sha, digest);
	return memcmp(digest, hash, LDB_HASH_SIZE) == 0;
}

/* Hash what read() just returned, if it continues what was hashed so far.
   Returns FALSE if that completed the body and it doesn't match. */
static bool lmdb_body_istream_hash(struct lmdb_body_istream *bstream,
				   uoff_t offset, const void *data, size_t n)
{
	if (bstream->sha == NULL || offset != bstream->hashed)
		return TRUE;
	ldb_sha256_update(bstream->sha, data, n);
	bstream->hashed += n;
	if (bstream->hashed < bstream->size)
		return TRUE;
	return lmdb_body_hash_matches(&bstream->sha, bstream->hash);
}

/* A chunk is gone: if the message's record is gone too, another session
   expunged it while we read (ENOENT, and the mail is marked expunged, so
   Dovecot answers "Message was expunged" instead of logging an error).
   A record that still points to a missing body is corruption. */
static void lmdb_body_istream_missing(struct lmdb_body_istream *bstream,
				      uint32_t idx)
{
	struct istream_private *stream = &bstream->istream;

	if (bstream->mail != NULL &&
	    lmdb_mail_body_vanished(bstream->mail) > 0) {
		io_stream_set_error(&stream->iostream,
			"lmdb: message was expunged while it was read");
		stream->istream.stream_errno = ENOENT;
		return;
	}
	io_stream_set_error(&stream->iostream, "lmdb: body chunk %u is "
			    "missing (database corrupted?)", idx);
	stream->istream.stream_errno = EIO;
}

static ssize_t lmdb_body_istream_read(struct istream_private *stream)
{
	struct lmdb_body_istream *bstream =
		container_of(stream, struct lmdb_body_istream, istream);
	uoff_t offset;
	uint32_t idx, within;
	struct ldb_txn *txn;
	const void *data;
	size_t avail, chunk_len, n;
	int ret;

	offset = stream->istream.v_offset + (stream->pos - stream->skip);
	if (offset >= bstream->size) {
		stream->istream.eof = TRUE;
		return -1;
	}
	if (!i_stream_try_alloc(stream, 1, &avail))
		return -2;
	if (bstream->copy != NULL) {
		n = I_MIN(avail, bstream->size - offset);
		memcpy(stream->w_buffer + stream->pos, bstream->copy + offset, n);
		stream->pos += n;
		return n;
	}

	idx = offset / bstream->chunk_size;
	within = offset % bstream->chunk_size;
	if ((ret = ldb_txn_begin(bstream->env, FALSE, &txn)) < 0) {
		io_stream_set_error(&stream->iostream, "%s",
				    ldb_env_last_error(bstream->env));
		stream->istream.stream_errno = EIO;
		return -1;
	}
	ret = ldb_body_chunk_get(txn, bstream->hash, idx, &data, &chunk_len);
	if (ret < 0) {
		ldb_txn_abort(&txn);
		io_stream_set_error(&stream->iostream, "lmdb: body chunk %u: %s",
				    idx, ldb_env_last_error(bstream->env));
		stream->istream.stream_errno = EIO;
		return -1;
	}
	if (ret == 0 || chunk_len <= within) {
		ldb_txn_abort(&txn);
		lmdb_body_istream_missing(bstream, idx);
		return -1;
	}
	n = I_MIN(avail, chunk_len - within);
	if (n > bstream->size - offset)
		n = bstream->size - offset;
	memcpy(stream->w_buffer + stream->pos,
	       (const unsigned char *)data + within, n);
	ldb_txn_abort(&txn);
	if (!lmdb_body_istream_hash(bstream, offset,
				    stream->w_buffer + stream->pos, n)) {
		io_stream_set_error(&stream->iostream, "lmdb: the body does "
				    "not match its SHA-256 (database "
				    "corrupted?)");
		stream->istream.stream_errno = EIO;
		return -1;
	}
	stream->pos += n;
	return n;
}

static void lmdb_body_istream_seek(struct istream_private *stream,
				   uoff_t v_offset, bool mark ATTR_UNUSED)
{
	stream->istream.v_offset = v_offset;
	stream->skip = stream->pos = 0;
}

static int lmdb_body_istream_stat(struct istream_private *stream,
				  bool exact ATTR_UNUSED)
{
	struct lmdb_body_istream *bstream =
		container_of(stream, struct lmdb_body_istream, istream);

	stream->statbuf.st_size = bstream->size;
	return 0;
}

static void lmdb_body_istream_destroy(struct iostream_private *stream)
{
	struct lmdb_body_istream *bstream =
		container_of(stream, struct lmdb_body_istream,
			     istream.iostream);

	uint8_t digest[LDB_HASH_SIZE];

	if (bstream->sha != NULL)
		ldb_sha256_final(&bstream->sha, digest);
	i_free(bstream->copy);
	i_stream_free_buffer(&bstream->istream);
}

/* Copy all chunks of the body into *copy_r (in the transaction that found
   its record, so they must all be there).  0 = ok, -1 = error (set). */
static int
lmdb_body_copy(struct lmdb_mailbox *mbox, struct ldb_txn *txn,
	       const uint8_t hash[LDB_HASH_SIZE],
	       const struct ldb_body_info *info, unsigned char **copy_r)
{
	unsigned char *copy = i_malloc(I_MAX(info->size, 1));
	struct ldb_sha256 *sha;
	uoff_t offset = 0;
	const void *data;
	size_t size;
	uint32_t idx;
	int ret = 1;

	for (idx = 0; offset < info->size && ret > 0; idx++) {
		ret = ldb_body_chunk_get(txn, hash, idx, &data, &size);
		if (ret > 0 && (size == 0 || size > info->size - offset))
			ret = 0;
		if (ret > 0) {
			memcpy(copy + offset, data, size);
			offset += size;
		}
	}
	if (ret <= 0) {
		i_free(copy);
		if (ret < 0)
			lmdb_mailbox_set_ldb_error(&mbox->box, ret, "body read");
		else {
			mailbox_set_critical(&mbox->box, "lmdb: body %s: chunk "
				"%u is missing or has the wrong size "
				"(database corrupted?)",
				binary_to_hex(hash, LDB_HASH_SIZE), idx - 1);
		}
		return -1;
	}
	/* the address is the content's SHA-256: never serve other bytes */
	sha = ldb_sha256_init();
	ldb_sha256_update(sha, copy, info->size);
	if (!lmdb_body_hash_matches(&sha, hash)) {
		i_free(copy);
		mailbox_set_critical(&mbox->box, "lmdb: body %s does not match "
				     "its SHA-256 (database corrupted?)",
				     binary_to_hex(hash, LDB_HASH_SIZE));
		return -1;
	}
	*copy_r = copy;
	return 0;
}

int lmdb_body_istream_create(struct lmdb_mailbox *mbox,
			     const uint8_t hash[LDB_HASH_SIZE],
			     struct istream **input_r)
{
	struct lmdb_body_istream *bstream;
	struct ldb_body_info info;
	struct ldb_env *env;
	struct ldb_txn *txn;
	unsigned char *copy = NULL;
	int ret;

	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	if ((ret = ldb_txn_begin(env, FALSE, &txn)) < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "body read");
		return -1;
	}
	ret = ldb_body_get_info(txn, hash, &info);
	if (ret < 0)
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "body read");
	else if (ret > 0 && info.chunk_size == 0 && info.size > 0) {
		mailbox_set_critical(&mbox->box,
			"lmdb: body record has chunk size 0");
		ret = -1;
	} else if (ret > 0 && info.size <= LMDB_BODY_COPY_MAX) {
		if (lmdb_body_copy(mbox, txn, hash, &info, &copy) < 0)
			ret = -1;
	}
	ldb_txn_abort(&txn);
	if (ret <= 0)
		return ret;

	bstream = i_new(struct lmdb_body_istream, 1);
	bstream->env = env;
	memcpy(bstream->hash, hash, LDB_HASH_SIZE);
	bstream->size = info.size;
	bstream->chunk_size = info.chunk_size == 0 ? 1 : info.chunk_size;
	bstream->copy = copy;
	if (copy == NULL)
		bstream->sha = ldb_sha256_init();
	bstream->istream.max_buffer_size = bstream->chunk_size;
	bstream->istream.iostream.destroy = lmdb_body_istream_destroy;
	bstream->istream.read = lmdb_body_istream_read;
	bstream->istream.seek = lmdb_body_istream_seek;
	bstream->istream.stat = lmdb_body_istream_stat;
	bstream->istream.istream.readable_fd = FALSE;
	bstream->istream.istream.blocking = TRUE;
	bstream->istream.istream.seekable = TRUE;
	*input_r = i_stream_create(&bstream->istream, NULL, -1, 0);
	i_stream_set_name(*input_r, t_strdup_printf("lmdb body %s",
		binary_to_hex(hash, LDB_HASH_SIZE)));
	return 1;
}

void lmdb_body_istream_set_mail(struct istream *input, struct mail *mail)
{
	struct lmdb_body_istream *bstream =
		container_of(input->real_stream, struct lmdb_body_istream,
			     istream);

	bstream->mail = mail;
}
