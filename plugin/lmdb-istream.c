/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* An istream over a body stored in chunks.  Each read() copies from one
   chunk inside its own short read transaction, so no read transaction is
   ever held while the client is being served (or across IDLE), and memory
   stays bounded by the stream buffer whatever the message size. */

#include "lib.h"
#include "istream-private.h"
#include "hex-binary.h"
#include "lmdb-storage.h"

struct lmdb_body_istream {
	struct istream_private istream;
	struct ldb_env *env;
	uint8_t hash[LDB_HASH_SIZE];
	uoff_t size;
	uint32_t chunk_size;
};

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

	idx = offset / bstream->chunk_size;
	within = offset % bstream->chunk_size;
	if ((ret = ldb_txn_begin(bstream->env, FALSE, &txn)) < 0) {
		io_stream_set_error(&stream->iostream, "%s",
				    ldb_env_last_error(bstream->env));
		stream->istream.stream_errno = EIO;
		return -1;
	}
	ret = ldb_body_chunk_get(txn, bstream->hash, idx, &data, &chunk_len);
	if (ret <= 0 || chunk_len <= within) {
		ldb_txn_abort(&txn);
		io_stream_set_error(&stream->iostream,
			"lmdb: body chunk %u is %s", idx,
			ret < 0 ? ldb_env_last_error(bstream->env) :
			"missing (expunged by another session?)");
		stream->istream.stream_errno = ret < 0 ? EIO : ESTALE;
		return -1;
	}
	n = I_MIN(avail, chunk_len - within);
	if (n > bstream->size - offset)
		n = bstream->size - offset;
	memcpy(stream->w_buffer + stream->pos,
	       (const unsigned char *)data + within, n);
	ldb_txn_abort(&txn);
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

int lmdb_body_istream_create(struct lmdb_mailbox *mbox,
			     const uint8_t hash[LDB_HASH_SIZE],
			     struct istream **input_r)
{
	struct lmdb_body_istream *bstream;
	struct ldb_body_info info;
	struct ldb_env *env;
	struct ldb_txn *txn;
	int ret;

	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	if ((ret = ldb_txn_begin(env, FALSE, &txn)) == 0) {
		ret = ldb_body_get_info(txn, hash, &info);
		ldb_txn_abort(&txn);
	}
	if (ret < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "body read");
		return -1;
	}
	if (ret == 0)
		return 0;
	if (info.chunk_size == 0 && info.size > 0) {
		mailbox_set_critical(&mbox->box,
			"lmdb: body record has chunk size 0");
		return -1;
	}

	bstream = i_new(struct lmdb_body_istream, 1);
	bstream->env = env;
	memcpy(bstream->hash, hash, LDB_HASH_SIZE);
	bstream->size = info.size;
	bstream->chunk_size = info.chunk_size == 0 ? 1 : info.chunk_size;
	bstream->istream.max_buffer_size = bstream->chunk_size;
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
