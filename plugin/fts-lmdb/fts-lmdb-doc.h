#ifndef FTS_LMDB_DOC_H
#define FTS_LMDB_DOC_H

/*
 * The stored text of one message: exactly the normalized text Dovecot's
 * own SEARCH looks at, so that every candidate from the postings can be
 * verified and returned as a definite result.  Pure C plus libzstd (no
 * Dovecot or LMDB headers): the unit tests and the fuzzer link it alone.
 *
 * VALUE (the value of a "fts_doc" entry)
 *     u8     format version (1)
 *     u8     flags: what the text lacks (FTS_LMDB_DOC_FLAG_*); searches
 *            that need a missing piece answer the message as "maybe", so
 *            Dovecot reads it
 *     the "head" section, then the "body" section, each:
 *       u8     codec: 0 raw, 1 zstd frame
 *       varint size of the section's payload
 *       varint size stored, then the stored bytes
 * Header searches decompress only "head", BODY only "body".
 *
 * HEAD PAYLOAD (varints are those of fts-lmdb-codec.h)
 *     varint len, bytes   "hdr" text: every header line of every MIME part
 *                         as message_search() sees it for TEXT: normalized
 *                         name, the raw separator, the decoded and
 *                         normalized value, CRLF.  Parts are separated by
 *                         LF.
 *     varint count        top-level headers, in message order, each:
 *       varint len, bytes   raw header name (matched ASCII case-insensitively,
 *                           like strcasecmp() in index-search.c)
 *       varint off, varint len   its decoded value, a slice of "hdr" text
 *                           (what HEADER <name> <key> searches)
 *       u8 forms           0x01 address form follows, 0x02 LWSP form follows
 *       [varint len, bytes] address form: message_address_write() of the
 *                           raw value, then decoded (FROM/TO/CC/BCC)
 *       [varint len, bytes] whitespace-compressed form, then decoded
 *                           (SUBJECT)
 *
 * BODY PAYLOAD
 *     varint len, bytes   "body" text: the decoded, normalized bodies of
 *                         text and message parts, as for BODY; parts
 *                         separated by LF.
 *     varint len, bytes   "extra" text: what only the FTS parsers see
 *                         (html2text output, fts_decoder/Tika text),
 *                         normalized; searched by BODY and TEXT.
 *
 * Search keys that contain CR or LF are never answered from this text, so
 * LF separators and CRLF line ends can't create or hide a match.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define FTS_LMDB_DOC_VERSION 1
/* the message couldn't be read completely: nothing is certain */
#define FTS_LMDB_DOC_FLAG_PARTIAL 0x01
/* fts_lmdb_max_text cut: a top-level header (HEADER, FROM, SUBJECT...) */
#define FTS_LMDB_DOC_FLAG_CUT_HDRS 0x02
/* ... header lines (TEXT) */
#define FTS_LMDB_DOC_FLAG_CUT_HDR_TEXT 0x04
/* ... the body or extra text (BODY, TEXT) */
#define FTS_LMDB_DOC_FLAG_CUT_BODY 0x08
#define FTS_LMDB_DOC_FLAGS_ALL 0x0f
#define FTS_LMDB_DOC_CODEC_RAW 0
#define FTS_LMDB_DOC_CODEC_ZSTD 1
/* which sections fts_lmdb_doc_decode() decompresses */
#define FTS_LMDB_DOC_HEAD 0x01
#define FTS_LMDB_DOC_BODY 0x02
/* a stored payload larger than this is corrupt */
#define FTS_LMDB_DOC_MAX_RAW (512U * 1024 * 1024)

#define FTS_LMDB_HDR_FORM_ADDR 0x01
#define FTS_LMDB_HDR_FORM_LWSP 0x02

struct fts_lmdb_buf {
	uint8_t *data;
	size_t used, cap;
};

enum fts_lmdb_hdr_form {
	FTS_LMDB_FORM_PLAIN,
	FTS_LMDB_FORM_ADDR,
	FTS_LMDB_FORM_LWSP,
};

struct fts_lmdb_doc_hdr {
	const uint8_t *name;
	size_t name_len;
	const uint8_t *value;
	size_t value_len;
	const uint8_t *addr;
	size_t addr_len;
	const uint8_t *lwsp;
	size_t lwsp_len;
	uint8_t forms;
};

struct fts_lmdb_doc {
	uint8_t flags;
	const uint8_t *hdr_text, *body, *extra;
	size_t hdr_text_len, body_len, extra_len;
	unsigned int hdr_count;
	const struct fts_lmdb_doc_hdr *hdrs;
};

/* posting spaces (see fts-lmdb-store.h) */
#define FTS_LMDB_SPACE_BODY 'B'
#define FTS_LMDB_SPACE_HDR 'H'
#define FTS_LMDB_SPACE_SUBJECT 'S'
#define FTS_LMDB_SPACE_FROM 'F'
#define FTS_LMDB_SPACE_TO 'T'
#define FTS_LMDB_SPACE_CC 'C'
#define FTS_LMDB_SPACE_BCC 'D'
#define FTS_LMDB_SPACE_NAME 'N'
#define FTS_LMDB_SPACE_COUNT 8

struct fts_lmdb_grams;
struct fts_lmdb_doc_builder;
struct fts_lmdb_doc_reader;

void fts_lmdb_buf_append(struct fts_lmdb_buf *buf, const void *data,
			 size_t size);
void fts_lmdb_buf_free(struct fts_lmdb_buf *buf);

/* ---- building ---- */
/* max_text: bytes of text kept per message (0 = unlimited) */
struct fts_lmdb_doc_builder *fts_lmdb_doc_builder_new(size_t max_text);
void fts_lmdb_doc_builder_free(struct fts_lmdb_doc_builder **b);
void fts_lmdb_doc_builder_reset(struct fts_lmdb_doc_builder *b);
/* Record that the text lacks something (FTS_LMDB_DOC_FLAG_*), e.g. the
   message couldn't be read completely. */
void fts_lmdb_doc_builder_add_flags(struct fts_lmdb_doc_builder *b,
				    uint8_t flags);
/* FTS_LMDB_DOC_FLAG_* of what was built so far */
uint8_t fts_lmdb_doc_builder_flags(const struct fts_lmdb_doc_builder *b);
/* Append to the "hdr" text.  Returns the offset the data starts at. */
size_t fts_lmdb_doc_append_hdr_text(struct fts_lmdb_doc_builder *b,
				    const void *data, size_t size);
void fts_lmdb_doc_append_body(struct fts_lmdb_doc_builder *b,
			      const void *data, size_t size);
void fts_lmdb_doc_append_extra(struct fts_lmdb_doc_builder *b,
			       const void *data, size_t size);
/* Start a new MIME part: an LF in "hdr" and "body" (if not empty). */
void fts_lmdb_doc_part_break(struct fts_lmdb_doc_builder *b);
/* A top-level header whose decoded value is hdr text [off, off+len).
   addr/lwsp may be NULL when that form doesn't apply. */
void fts_lmdb_doc_add_header(struct fts_lmdb_doc_builder *b,
			     const void *name, size_t name_len,
			     size_t value_off, size_t value_len,
			     const void *addr, size_t addr_len,
			     const void *lwsp, size_t lwsp_len);
/* Read back what was built (pointers valid until the next change). */
void fts_lmdb_doc_builder_view(struct fts_lmdb_doc_builder *b,
			       struct fts_lmdb_doc *doc_r);
/* Serialize into out (replacing its contents). */
void fts_lmdb_doc_encode(struct fts_lmdb_doc_builder *b,
			 struct fts_lmdb_buf *out);

/* ---- reading ---- */
struct fts_lmdb_doc_reader *fts_lmdb_doc_reader_new(void);
void fts_lmdb_doc_reader_free(struct fts_lmdb_doc_reader **r);
/* Decode a stored value; only the sections in parts (FTS_LMDB_DOC_HEAD,
   _BODY) are decompressed, the others read as empty.  The result points
   into the reader and stays valid until its next decode.  0 = ok,
   -1 = corrupt. */
int fts_lmdb_doc_decode(struct fts_lmdb_doc_reader *r, const void *data,
			size_t size, unsigned int parts,
			struct fts_lmdb_doc *doc_r);
/* The flags byte of a stored value without decoding it; -1 if corrupt. */
int fts_lmdb_doc_peek_flags(const void *data, size_t size);

/* ---- matching (byte substrings of normalized text) ---- */
/* key in the hdr text (headers) and/or the body and extra text (body) */
bool fts_lmdb_doc_match_text(const struct fts_lmdb_doc *doc,
			     const void *key, size_t key_len,
			     bool headers, bool body);
/* Any top-level header named field (ASCII case-insensitive) whose form
   contains key; key_len 0 asks only whether such a header exists.
   Returns 1 / 0, or -1 if a header of that name lacks the form. */
int fts_lmdb_doc_match_header(const struct fts_lmdb_doc *doc,
			      const char *field, enum fts_lmdb_hdr_form form,
			      const void *key, size_t key_len);
bool fts_lmdb_hdr_name_eq(const uint8_t *name, size_t name_len,
			  const char *field);

/* The distinct grams of each posting space of doc, unsorted: grams[i] (an
   array of FTS_LMDB_SPACE_COUNT) receives those of space spaces_r[i]. */
void fts_lmdb_doc_grams(const struct fts_lmdb_doc *doc,
			struct fts_lmdb_grams *grams, uint8_t *spaces_r);

#endif
