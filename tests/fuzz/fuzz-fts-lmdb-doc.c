/* libFuzzer target: the stored-text decoder.

   The input is decoded as a stored value; whatever decodes is searched
   and its grams extracted, so every pointer the decoder hands out gets
   read.  The input is also built into a message text and must come back
   unchanged through encode and decode. */

#include "fts-lmdb-codec.h"
#include "fts-lmdb-doc.h"

#include <stdlib.h>
#include <string.h>

static struct fts_lmdb_doc_reader *reader;
static struct fts_lmdb_doc_builder *builder;

static void use_doc(const struct fts_lmdb_doc *doc)
{
	struct fts_lmdb_grams grams[FTS_LMDB_SPACE_COUNT];
	uint8_t spaces[FTS_LMDB_SPACE_COUNT];

	(void)fts_lmdb_doc_match_text(doc, "A", 1, true, true);
	(void)fts_lmdb_doc_match_text(doc, "\xc3\xa9t\xc3\xa9", 5, true, true);
	(void)fts_lmdb_doc_match_header(doc, "From", FTS_LMDB_FORM_ADDR,
					"@", 1);
	(void)fts_lmdb_doc_match_header(doc, "Subject", FTS_LMDB_FORM_LWSP,
					"", 0);
	(void)fts_lmdb_doc_match_header(doc, "X", FTS_LMDB_FORM_PLAIN, "X", 1);
	memset(grams, 0, sizeof(grams));
	fts_lmdb_doc_grams(doc, grams, spaces);
	for (unsigned int i = 0; i < FTS_LMDB_SPACE_COUNT; i++)
		fts_lmdb_grams_free(&grams[i]);
}

static void roundtrip(const uint8_t *data, size_t size)
{
	struct fts_lmdb_buf enc = { NULL, 0, 0 };
	struct fts_lmdb_doc doc;
	size_t half = size / 2, off;

	fts_lmdb_doc_builder_reset(builder);
	off = fts_lmdb_doc_append_hdr_text(builder, data, half);
	fts_lmdb_doc_add_header(builder, data, half < 8 ? half : 8, off, half,
				data, half, NULL, 0);
	fts_lmdb_doc_append_body(builder, data + half, size - half);
	fts_lmdb_doc_encode(builder, &enc);
	if (fts_lmdb_doc_decode(reader, enc.data, enc.used,
				FTS_LMDB_DOC_HEAD | FTS_LMDB_DOC_BODY,
				&doc) < 0)
		abort();
	if (doc.hdr_text_len != half || doc.body_len != size - half ||
	    memcmp(doc.hdr_text, data, half) != 0 ||
	    memcmp(doc.body, data + half, size - half) != 0 ||
	    doc.hdr_count != 1 || doc.hdrs[0].value_len != half)
		abort();
	fts_lmdb_buf_free(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fts_lmdb_doc doc;

	if (reader == NULL) {
		reader = fts_lmdb_doc_reader_new();
		builder = fts_lmdb_doc_builder_new(0);
	}
	if (fts_lmdb_doc_decode(reader, data, size,
				FTS_LMDB_DOC_HEAD | FTS_LMDB_DOC_BODY,
				&doc) == 0)
		use_doc(&doc);
	if (fts_lmdb_doc_decode(reader, data, size, FTS_LMDB_DOC_BODY,
				&doc) == 0)
		use_doc(&doc);
	roundtrip(data, size);
	return 0;
}
