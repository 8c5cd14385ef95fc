/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#ifndef _GNU_SOURCE
#  define _GNU_SOURCE /* memmem() */
#endif

#include "fts-lmdb-doc.h"
#include "fts-lmdb-codec.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* payloads smaller than this are stored raw */
#define FTS_LMDB_DOC_COMPRESS_MIN 128
#define FTS_LMDB_DOC_ZSTD_LEVEL 3

struct fts_lmdb_doc_builder_hdr {
	size_t name_off, name_len;
	size_t value_off, value_len;
	size_t addr_off, addr_len;
	size_t lwsp_off, lwsp_len;
	uint8_t forms;
};

struct fts_lmdb_doc_builder {
	size_t max_text, text_used;
	uint8_t flags;
	struct fts_lmdb_buf hdr_text, body, extra;
	/* header names and address/LWSP forms */
	struct fts_lmdb_buf aux;
	struct fts_lmdb_doc_builder_hdr *hdrs;
	unsigned int hdr_count, hdr_cap;
	struct fts_lmdb_doc_hdr *view_hdrs;
	unsigned int view_cap;
	struct fts_lmdb_buf raw_head, raw_body;
	ZSTD_CCtx *cctx;
};

struct fts_lmdb_doc_reader {
	struct fts_lmdb_buf raw_head, raw_body;
	struct fts_lmdb_doc_hdr *hdrs;
	unsigned int hdr_cap;
	ZSTD_DCtx *dctx;
};

static void buf_reserve(struct fts_lmdb_buf *buf, size_t size)
{
	size_t cap;

	if (size <= buf->cap - buf->used)
		return;
	if (size > SIZE_MAX / 2 - buf->used)
		abort();
	cap = buf->cap < 256 ? 256 : buf->cap;
	while (cap < buf->used + size)
		cap *= 2;
	buf->data = realloc(buf->data, cap);
	if (buf->data == NULL)
		abort();
	buf->cap = cap;
}

void fts_lmdb_buf_append(struct fts_lmdb_buf *buf, const void *data,
			 size_t size)
{
	if (size == 0)
		return;
	buf_reserve(buf, size);
	memcpy(buf->data + buf->used, data, size);
	buf->used += size;
}

/* buf->data + off, but NULL for a buffer that never got data: NULL + 0
   is undefined behaviour (UBSan stops the doc fuzzer on it) */
static const uint8_t *buf_at(const struct fts_lmdb_buf *buf, size_t off)
{
	return buf->data == NULL ? NULL : buf->data + off;
}

void fts_lmdb_buf_free(struct fts_lmdb_buf *buf)
{
	free(buf->data);
	memset(buf, 0, sizeof(*buf));
}

static void buf_put_varint(struct fts_lmdb_buf *buf, size_t value)
{
	buf_reserve(buf, 5);
	buf->used += fts_lmdb_varint_put(buf->data + buf->used,
					 (uint32_t)value);
}

/* ---- building ---- */

struct fts_lmdb_doc_builder *fts_lmdb_doc_builder_new(size_t max_text)
{
	struct fts_lmdb_doc_builder *b = calloc(1, sizeof(*b));

	if (b == NULL)
		abort();
	/* the format's lengths are u32 varints */
	b->max_text = max_text == 0 || max_text > UINT32_MAX / 2 ?
		UINT32_MAX / 2 : max_text;
	return b;
}

void fts_lmdb_doc_builder_free(struct fts_lmdb_doc_builder **_b)
{
	struct fts_lmdb_doc_builder *b = *_b;

	*_b = NULL;
	if (b == NULL)
		return;
	fts_lmdb_buf_free(&b->hdr_text);
	fts_lmdb_buf_free(&b->body);
	fts_lmdb_buf_free(&b->extra);
	fts_lmdb_buf_free(&b->aux);
	fts_lmdb_buf_free(&b->raw_head);
	fts_lmdb_buf_free(&b->raw_body);
	free(b->hdrs);
	free(b->view_hdrs);
	if (b->cctx != NULL)
		ZSTD_freeCCtx(b->cctx);
	free(b);
}

void fts_lmdb_doc_builder_reset(struct fts_lmdb_doc_builder *b)
{
	b->hdr_text.used = b->body.used = b->extra.used = b->aux.used = 0;
	b->hdr_count = 0;
	b->text_used = 0;
	b->flags = 0;
}

void fts_lmdb_doc_builder_add_flags(struct fts_lmdb_doc_builder *b,
				    uint8_t flags)
{
	b->flags |= flags & FTS_LMDB_DOC_FLAGS_ALL;
}

uint8_t fts_lmdb_doc_builder_flags(const struct fts_lmdb_doc_builder *b)
{
	return b->flags;
}

/* How much of size still fits under max_text; if not all, cut_flag says
   what is now incomplete. */
static size_t builder_room(struct fts_lmdb_doc_builder *b, size_t size,
			   uint8_t cut_flag)
{
	size_t room = b->max_text - b->text_used;

	if (size > room) {
		b->flags |= cut_flag;
		size = room;
	}
	b->text_used += size;
	return size;
}

size_t fts_lmdb_doc_append_hdr_text(struct fts_lmdb_doc_builder *b,
				    const void *data, size_t size)
{
	size_t off = b->hdr_text.used;

	fts_lmdb_buf_append(&b->hdr_text, data,
			    builder_room(b, size, FTS_LMDB_DOC_FLAG_CUT_HDR_TEXT));
	return off;
}

void fts_lmdb_doc_append_body(struct fts_lmdb_doc_builder *b,
			      const void *data, size_t size)
{
	fts_lmdb_buf_append(&b->body, data,
			    builder_room(b, size, FTS_LMDB_DOC_FLAG_CUT_BODY));
}

void fts_lmdb_doc_append_extra(struct fts_lmdb_doc_builder *b,
			       const void *data, size_t size)
{
	fts_lmdb_buf_append(&b->extra, data,
			    builder_room(b, size, FTS_LMDB_DOC_FLAG_CUT_BODY));
}

void fts_lmdb_doc_part_break(struct fts_lmdb_doc_builder *b)
{
	if (b->hdr_text.used > 0)
		fts_lmdb_doc_append_hdr_text(b, "\n", 1);
	if (b->body.used > 0)
		fts_lmdb_doc_append_body(b, "\n", 1);
}

static size_t builder_aux(struct fts_lmdb_doc_builder *b, const void *data,
			  size_t size)
{
	size_t off = b->aux.used;

	fts_lmdb_buf_append(&b->aux, data, size);
	return off;
}

void fts_lmdb_doc_add_header(struct fts_lmdb_doc_builder *b,
			     const void *name, size_t name_len,
			     size_t value_off, size_t value_len,
			     const void *addr, size_t addr_len,
			     const void *lwsp, size_t lwsp_len)
{
	struct fts_lmdb_doc_builder_hdr *h;
	size_t extra = name_len + (addr != NULL ? addr_len : 0) +
		(lwsp != NULL ? lwsp_len : 0);

	/* a header whose text didn't fit can't be answered exactly */
	if (value_off > b->hdr_text.used ||
	    value_len > b->hdr_text.used - value_off ||
	    builder_room(b, extra, FTS_LMDB_DOC_FLAG_CUT_HDRS) < extra) {
		b->flags |= FTS_LMDB_DOC_FLAG_CUT_HDRS;
		return;
	}
	if (b->hdr_count == b->hdr_cap) {
		b->hdr_cap = b->hdr_cap < 16 ? 16 : b->hdr_cap * 2;
		b->hdrs = realloc(b->hdrs, b->hdr_cap * sizeof(*b->hdrs));
		if (b->hdrs == NULL)
			abort();
	}
	h = &b->hdrs[b->hdr_count++];
	memset(h, 0, sizeof(*h));
	h->name_off = builder_aux(b, name, name_len);
	h->name_len = name_len;
	h->value_off = value_off;
	h->value_len = value_len;
	if (addr != NULL) {
		h->forms |= FTS_LMDB_HDR_FORM_ADDR;
		h->addr_off = builder_aux(b, addr, addr_len);
		h->addr_len = addr_len;
	}
	if (lwsp != NULL) {
		h->forms |= FTS_LMDB_HDR_FORM_LWSP;
		h->lwsp_off = builder_aux(b, lwsp, lwsp_len);
		h->lwsp_len = lwsp_len;
	}
}

void fts_lmdb_doc_builder_view(struct fts_lmdb_doc_builder *b,
			       struct fts_lmdb_doc *doc_r)
{
	unsigned int i;

	if (b->view_cap < b->hdr_count) {
		b->view_cap = b->hdr_cap;
		b->view_hdrs = realloc(b->view_hdrs,
				       b->view_cap * sizeof(*b->view_hdrs));
		if (b->view_hdrs == NULL)
			abort();
	}
	for (i = 0; i < b->hdr_count; i++) {
		const struct fts_lmdb_doc_builder_hdr *h = &b->hdrs[i];
		struct fts_lmdb_doc_hdr *v = &b->view_hdrs[i];

		v->name = buf_at(&b->aux, h->name_off);
		v->name_len = h->name_len;
		v->value = buf_at(&b->hdr_text, h->value_off);
		v->value_len = h->value_len;
		v->addr = buf_at(&b->aux, h->addr_off);
		v->addr_len = h->addr_len;
		v->lwsp = buf_at(&b->aux, h->lwsp_off);
		v->lwsp_len = h->lwsp_len;
		v->forms = h->forms;
	}
	memset(doc_r, 0, sizeof(*doc_r));
	doc_r->flags = b->flags;
	doc_r->hdr_text = b->hdr_text.data;
	doc_r->hdr_text_len = b->hdr_text.used;
	doc_r->body = b->body.data;
	doc_r->body_len = b->body.used;
	doc_r->extra = b->extra.data;
	doc_r->extra_len = b->extra.used;
	doc_r->hdr_count = b->hdr_count;
	doc_r->hdrs = b->view_hdrs;
}

static void buf_put_bytes(struct fts_lmdb_buf *buf, const void *data,
			  size_t size)
{
	buf_put_varint(buf, size);
	fts_lmdb_buf_append(buf, data, size);
}

static void builder_serialize(struct fts_lmdb_doc_builder *b)
{
	struct fts_lmdb_buf *head = &b->raw_head, *body = &b->raw_body;
	unsigned int i;

	head->used = body->used = 0;
	buf_put_bytes(head, b->hdr_text.data, b->hdr_text.used);
	buf_put_varint(head, b->hdr_count);
	for (i = 0; i < b->hdr_count; i++) {
		const struct fts_lmdb_doc_builder_hdr *h = &b->hdrs[i];

		buf_put_bytes(head, buf_at(&b->aux, h->name_off), h->name_len);
		buf_put_varint(head, h->value_off);
		buf_put_varint(head, h->value_len);
		fts_lmdb_buf_append(head, &h->forms, 1);
		if ((h->forms & FTS_LMDB_HDR_FORM_ADDR) != 0) {
			buf_put_bytes(head, buf_at(&b->aux, h->addr_off),
				      h->addr_len);
		}
		if ((h->forms & FTS_LMDB_HDR_FORM_LWSP) != 0) {
			buf_put_bytes(head, buf_at(&b->aux, h->lwsp_off),
				      h->lwsp_len);
		}
	}
	buf_put_bytes(body, b->body.data, b->body.used);
	buf_put_bytes(body, b->extra.data, b->extra.used);
}

/* Append one section: codec, sizes and the (maybe compressed) payload. */
static void encode_section(struct fts_lmdb_doc_builder *b,
			   const struct fts_lmdb_buf *raw,
			   struct fts_lmdb_buf *out)
{
	uint8_t head[1 + 5 + 5];
	size_t head_len, bound, csize;

	if (raw->used >= FTS_LMDB_DOC_COMPRESS_MIN) {
		if (b->cctx == NULL && (b->cctx = ZSTD_createCCtx()) == NULL)
			abort();
		bound = ZSTD_compressBound(raw->used);
		/* room for the largest header, moved down afterwards */
		buf_reserve(out, sizeof(head) + bound);
		csize = ZSTD_compressCCtx(b->cctx,
					  out->data + out->used + sizeof(head),
					  bound, raw->data, raw->used,
					  FTS_LMDB_DOC_ZSTD_LEVEL);
		if (!ZSTD_isError(csize) && csize < raw->used) {
			head[0] = FTS_LMDB_DOC_CODEC_ZSTD;
			head_len = 1 + fts_lmdb_varint_put(head + 1, raw->used);
			head_len += fts_lmdb_varint_put(head + head_len, csize);
			memmove(out->data + out->used + head_len,
				out->data + out->used + sizeof(head), csize);
			memcpy(out->data + out->used, head, head_len);
			out->used += head_len + csize;
			return;
		}
	}
	head[0] = FTS_LMDB_DOC_CODEC_RAW;
	head_len = 1 + fts_lmdb_varint_put(head + 1, raw->used);
	head_len += fts_lmdb_varint_put(head + head_len, raw->used);
	fts_lmdb_buf_append(out, head, head_len);
	fts_lmdb_buf_append(out, raw->data, raw->used);
}

void fts_lmdb_doc_encode(struct fts_lmdb_doc_builder *b,
			 struct fts_lmdb_buf *out)
{
	uint8_t head[2];

	builder_serialize(b);
	head[0] = FTS_LMDB_DOC_VERSION;
	head[1] = b->flags;
	out->used = 0;
	fts_lmdb_buf_append(out, head, sizeof(head));
	encode_section(b, &b->raw_head, out);
	encode_section(b, &b->raw_body, out);
}

/* ---- reading ---- */

struct fts_lmdb_doc_reader *fts_lmdb_doc_reader_new(void)
{
	struct fts_lmdb_doc_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
		abort();
	return r;
}

void fts_lmdb_doc_reader_free(struct fts_lmdb_doc_reader **_r)
{
	struct fts_lmdb_doc_reader *r = *_r;

	*_r = NULL;
	if (r == NULL)
		return;
	fts_lmdb_buf_free(&r->raw_head);
	fts_lmdb_buf_free(&r->raw_body);
	free(r->hdrs);
	if (r->dctx != NULL)
		ZSTD_freeDCtx(r->dctx);
	free(r);
}

int fts_lmdb_doc_peek_flags(const void *data, size_t size)
{
	const uint8_t *p = data;

	if (size < 2 + 3 + 3 || p[0] != FTS_LMDB_DOC_VERSION ||
	    (p[1] & ~FTS_LMDB_DOC_FLAGS_ALL) != 0)
		return -1;
	return p[1];
}

static int get_bytes(const uint8_t **p, const uint8_t *end,
		     const uint8_t **data_r, size_t *size_r)
{
	uint32_t len;

	if (fts_lmdb_varint_get(p, end, &len) < 0 ||
	    len > (size_t)(end - *p))
		return -1;
	*data_r = *p;
	*size_r = len;
	*p += len;
	return 0;
}

struct doc_section {
	uint8_t codec;
	uint32_t raw_size;
	const uint8_t *stored;
	size_t stored_size;
};

static int read_section(const uint8_t **p, const uint8_t *end,
			struct doc_section *sec_r)
{
	if (*p >= end)
		return -1;
	sec_r->codec = *(*p)++;
	if (sec_r->codec > FTS_LMDB_DOC_CODEC_ZSTD ||
	    fts_lmdb_varint_get(p, end, &sec_r->raw_size) < 0 ||
	    sec_r->raw_size > FTS_LMDB_DOC_MAX_RAW ||
	    get_bytes(p, end, &sec_r->stored, &sec_r->stored_size) < 0)
		return -1;
	if (sec_r->codec == FTS_LMDB_DOC_CODEC_RAW &&
	    sec_r->stored_size != sec_r->raw_size)
		return -1;
	return 0;
}

/* The section's payload, decompressed into buf if needed. */
static int section_payload(struct fts_lmdb_doc_reader *r,
			   const struct doc_section *sec,
			   struct fts_lmdb_buf *buf,
			   const uint8_t **data_r, size_t *size_r)
{
	size_t dsize;

	if (sec->codec == FTS_LMDB_DOC_CODEC_RAW) {
		*data_r = sec->stored;
		*size_r = sec->stored_size;
		return 0;
	}
	if (ZSTD_getFrameContentSize(sec->stored, sec->stored_size) !=
	    sec->raw_size)
		return -1;
	if (r->dctx == NULL && (r->dctx = ZSTD_createDCtx()) == NULL)
		abort();
	buf->used = 0;
	buf_reserve(buf, (size_t)sec->raw_size + 1);
	dsize = ZSTD_decompressDCtx(r->dctx, buf->data, sec->raw_size,
				    sec->stored, sec->stored_size);
	if (ZSTD_isError(dsize) || dsize != sec->raw_size)
		return -1;
	buf->used = dsize;
	*data_r = buf->data;
	*size_r = dsize;
	return 0;
}

static int reader_hdr(const uint8_t **p, const uint8_t *end,
		      const struct fts_lmdb_doc *doc,
		      struct fts_lmdb_doc_hdr *h)
{
	uint32_t off, len;

	memset(h, 0, sizeof(*h));
	if (get_bytes(p, end, &h->name, &h->name_len) < 0 ||
	    fts_lmdb_varint_get(p, end, &off) < 0 ||
	    fts_lmdb_varint_get(p, end, &len) < 0 ||
	    off > doc->hdr_text_len || len > doc->hdr_text_len - off ||
	    *p >= end)
		return -1;
	h->value = doc->hdr_text + off;
	h->value_len = len;
	h->forms = *(*p)++;
	if ((h->forms & ~(FTS_LMDB_HDR_FORM_ADDR | FTS_LMDB_HDR_FORM_LWSP)) != 0)
		return -1;
	if ((h->forms & FTS_LMDB_HDR_FORM_ADDR) != 0 &&
	    get_bytes(p, end, &h->addr, &h->addr_len) < 0)
		return -1;
	if ((h->forms & FTS_LMDB_HDR_FORM_LWSP) != 0 &&
	    get_bytes(p, end, &h->lwsp, &h->lwsp_len) < 0)
		return -1;
	return 0;
}

static int parse_head(struct fts_lmdb_doc_reader *r, const uint8_t *p,
		      const uint8_t *end, struct fts_lmdb_doc *doc)
{
	uint32_t count, i;

	if (get_bytes(&p, end, &doc->hdr_text, &doc->hdr_text_len) < 0 ||
	    fts_lmdb_varint_get(&p, end, &count) < 0)
		return -1;
	/* each header needs at least 4 bytes */
	if (count > (size_t)(end - p) / 4)
		return -1;
	if (count > r->hdr_cap) {
		r->hdr_cap = count;
		r->hdrs = realloc(r->hdrs, count * sizeof(*r->hdrs));
		if (r->hdrs == NULL)
			abort();
	}
	for (i = 0; i < count; i++) {
		if (reader_hdr(&p, end, doc, &r->hdrs[i]) < 0)
			return -1;
	}
	if (p != end)
		return -1;
	doc->hdr_count = count;
	doc->hdrs = r->hdrs;
	return 0;
}

static int parse_body(const uint8_t *p, const uint8_t *end,
		      struct fts_lmdb_doc *doc)
{
	if (get_bytes(&p, end, &doc->body, &doc->body_len) < 0 ||
	    get_bytes(&p, end, &doc->extra, &doc->extra_len) < 0 ||
	    p != end)
		return -1;
	return 0;
}

int fts_lmdb_doc_decode(struct fts_lmdb_doc_reader *r, const void *data,
			size_t size, unsigned int parts,
			struct fts_lmdb_doc *doc_r)
{
	const uint8_t *p = data, *end = p + size, *payload;
	struct doc_section head, body;
	size_t payload_size;
	int flags;

	memset(doc_r, 0, sizeof(*doc_r));
	if ((flags = fts_lmdb_doc_peek_flags(data, size)) < 0)
		return -1;
	p += 2;
	if (read_section(&p, end, &head) < 0 ||
	    read_section(&p, end, &body) < 0 || p != end)
		return -1;
	doc_r->flags = flags;
	if ((parts & FTS_LMDB_DOC_HEAD) != 0 &&
	    (section_payload(r, &head, &r->raw_head, &payload,
			     &payload_size) < 0 ||
	     parse_head(r, payload, payload + payload_size, doc_r) < 0))
		return -1;
	if ((parts & FTS_LMDB_DOC_BODY) != 0 &&
	    (section_payload(r, &body, &r->raw_body, &payload,
			     &payload_size) < 0 ||
	     parse_body(payload, payload + payload_size, doc_r) < 0))
		return -1;
	return 0;
}

/* ---- matching ---- */

static bool find(const uint8_t *text, size_t len, const void *key,
		 size_t key_len)
{
	if (key_len > len)
		return false;
	return memmem(text, len, key, key_len) != NULL;
}

bool fts_lmdb_doc_match_text(const struct fts_lmdb_doc *doc,
			     const void *key, size_t key_len,
			     bool headers, bool body)
{
	if (key_len == 0)
		return false;
	if (headers && find(doc->hdr_text, doc->hdr_text_len, key, key_len))
		return true;
	if (body && (find(doc->body, doc->body_len, key, key_len) ||
		     find(doc->extra, doc->extra_len, key, key_len)))
		return true;
	return false;
}

/* strcasecmp() semantics: the name ends at a NUL, ASCII case folds */
bool fts_lmdb_hdr_name_eq(const uint8_t *name, size_t name_len,
			  const char *field)
{
	size_t i;

	for (i = 0; i < name_len && name[i] != '\0'; i++) {
		uint8_t a = name[i], c = (uint8_t)field[i];

		if (c == '\0')
			return false;
		if (a >= 'A' && a <= 'Z')
			a += 'a' - 'A';
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (a != c)
			return false;
	}
	return field[i] == '\0';
}

int fts_lmdb_doc_match_header(const struct fts_lmdb_doc *doc,
			      const char *field, enum fts_lmdb_hdr_form form,
			      const void *key, size_t key_len)
{
	const struct fts_lmdb_doc_hdr *h;
	unsigned int i;
	int ret = 0;

	for (i = 0; i < doc->hdr_count; i++) {
		h = &doc->hdrs[i];
		if (!fts_lmdb_hdr_name_eq(h->name, h->name_len, field))
			continue;
		if (key_len == 0)
			return 1;
		switch (form) {
		case FTS_LMDB_FORM_PLAIN:
			if (find(h->value, h->value_len, key, key_len))
				return 1;
			break;
		case FTS_LMDB_FORM_ADDR:
			if ((h->forms & FTS_LMDB_HDR_FORM_ADDR) == 0)
				ret = -1;
			else if (find(h->addr, h->addr_len, key, key_len))
				return 1;
			break;
		case FTS_LMDB_FORM_LWSP:
			if ((h->forms & FTS_LMDB_HDR_FORM_LWSP) == 0)
				ret = -1;
			else if (find(h->lwsp, h->lwsp_len, key, key_len))
				return 1;
			break;
		}
	}
	return ret;
}

/* ---- grams ---- */

static void doc_header_grams(const struct fts_lmdb_doc *doc,
			     struct fts_lmdb_grams *grams,
			     const uint8_t *spaces)
{
	static const struct {
		const char *name;
		uint8_t space;
	} addr_spaces[] = {
		{ "From", FTS_LMDB_SPACE_FROM },
		{ "To", FTS_LMDB_SPACE_TO },
		{ "Cc", FTS_LMDB_SPACE_CC },
		{ "Bcc", FTS_LMDB_SPACE_BCC },
	};
	unsigned int i, j, s;

	for (i = 0; i < doc->hdr_count; i++) {
		const struct fts_lmdb_doc_hdr *h = &doc->hdrs[i];

		for (s = 0; spaces[s] != FTS_LMDB_SPACE_NAME; s++) ;
		fts_lmdb_grams_add(&grams[s],
				   fts_lmdb_name_hash(h->name, h->name_len));
		if ((h->forms & FTS_LMDB_HDR_FORM_LWSP) != 0) {
			for (s = 0; spaces[s] != FTS_LMDB_SPACE_SUBJECT; s++) ;
			fts_lmdb_grams_add_text(&grams[s], h->lwsp,
						h->lwsp_len, false);
		}
		if ((h->forms & FTS_LMDB_HDR_FORM_ADDR) == 0)
			continue;
		for (j = 0; j < sizeof(addr_spaces) / sizeof(addr_spaces[0]); j++) {
			if (!fts_lmdb_hdr_name_eq(h->name, h->name_len,
						  addr_spaces[j].name))
				continue;
			for (s = 0; spaces[s] != addr_spaces[j].space; s++) ;
			fts_lmdb_grams_add_text(&grams[s], h->addr,
						h->addr_len, false);
		}
	}
}

void fts_lmdb_doc_grams(const struct fts_lmdb_doc *doc,
			struct fts_lmdb_grams *grams, uint8_t *spaces_r)
{
	static const uint8_t spaces[FTS_LMDB_SPACE_COUNT] = {
		FTS_LMDB_SPACE_BODY, FTS_LMDB_SPACE_HDR,
		FTS_LMDB_SPACE_SUBJECT, FTS_LMDB_SPACE_FROM,
		FTS_LMDB_SPACE_TO, FTS_LMDB_SPACE_CC,
		FTS_LMDB_SPACE_BCC, FTS_LMDB_SPACE_NAME,
	};
	unsigned int i;

	for (i = 0; i < FTS_LMDB_SPACE_COUNT; i++) {
		fts_lmdb_grams_clear(&grams[i]);
		spaces_r[i] = spaces[i];
	}
	/* short grams only where BODY and TEXT search: header searches
	   verify the few messages that have the header */
	fts_lmdb_grams_add_text(&grams[0], doc->body, doc->body_len, true);
	fts_lmdb_grams_add_text(&grams[0], doc->extra, doc->extra_len, true);
	fts_lmdb_grams_add_text(&grams[1], doc->hdr_text, doc->hdr_text_len,
				true);
	doc_header_grams(doc, grams, spaces);
}
