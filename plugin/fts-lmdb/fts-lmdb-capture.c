/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Capture, for one message, exactly the text that Dovecot's own SEARCH
   (index-search.c, message-search.c) compares search keys with.  The fts
   plugin's build path shows backends a different text: html2text output
   instead of the HTML, addresses re-parsed after decoding, and no
   whitespace-compressed Subject.  Results computed from it could not be
   definite, so the message is read once more here and parsed with the
   same library calls, flags and order as message_search_msg() and
   search_header_arg(). */

#include "lib.h"
#include "str.h"
#include "istream.h"
#include "rfc822-parser.h"
#include "message-address.h"
#include "message-parser.h"
#include "message-decoder.h"
#include "message-header-decode.h"
#include "mail-storage.h"
#include "fts-lmdb-private.h"

struct fts_lmdb_capture {
	struct fts_lmdb_doc_builder *b;
	normalizer_func_t *normalizer;
	struct message_decoder_context *decoder;
	struct message_part *prev_part;
	bool content_type_text;
};

/* message-search.c: parse_content_type() */
static void capture_parse_content_type(struct fts_lmdb_capture *ctx,
				       struct message_header_line *hdr)
{
	struct rfc822_parser_context parser;
	string_t *content_type;

	rfc822_parser_init(&parser, hdr->full_value, hdr->full_value_len, NULL);
	rfc822_skip_lwsp(&parser);

	content_type = t_str_new(64);
	(void)rfc822_parse_content_type(&parser, content_type);
	ctx->content_type_text =
		strncasecmp(str_c(content_type), "text/", 5) == 0 ||
		strncasecmp(str_c(content_type), "message/", 8) == 0;
	rfc822_parser_deinit(&parser);
}

/* message-search.c: handle_header() */
static void capture_handle_header(struct fts_lmdb_capture *ctx,
				  struct message_header_line *hdr)
{
	if (hdr->name_len == 12 &&
	    strcasecmp(hdr->name, "Content-Type") == 0) {
		if (hdr->continues) {
			hdr->use_full_value = TRUE;
			return;
		}
		T_BEGIN {
			capture_parse_content_type(ctx, hdr);
		} T_END;
	}
}

/* index-search.c: compress_lwsp() */
static void capture_compress_lwsp(string_t *dest, const unsigned char *src,
				  size_t src_len)
{
	bool prev_lwsp = TRUE;
	size_t i;

	for (i = 0; i < src_len; i++) {
		if (IS_LWSP(src[i])) {
			if (!prev_lwsp) {
				prev_lwsp = TRUE;
				str_append_c(dest, ' ');
			}
		} else {
			prev_lwsp = FALSE;
			str_append_c(dest, src[i]);
		}
	}
}

static bool capture_is_address_header(const char *name)
{
	return strcasecmp(name, "From") == 0 ||
		strcasecmp(name, "To") == 0 ||
		strcasecmp(name, "Cc") == 0 ||
		strcasecmp(name, "Bcc") == 0;
}

/* A top-level header as search_header_arg() sees it: the decoded value
   (already in the hdr text at value_off), and for FROM/TO/CC/BCC and
   SUBJECT the forms SEARCH_HEADER_ADDRESS and _COMPRESS_LWSP match. */
static void capture_root_header(struct fts_lmdb_capture *ctx,
				const struct message_header_line *hdr,
				size_t value_off, size_t value_len,
				normalizer_func_t *normalizer)
{
	buffer_t *addr = NULL, *lwsp = NULL;
	string_t *str;

	if (capture_is_address_header(hdr->name)) {
		struct message_address *list;

		list = message_address_parse(pool_datastack_create(),
					     hdr->full_value,
					     hdr->full_value_len, UINT_MAX,
					     MESSAGE_ADDRESS_PARSE_FLAG_FILL_MISSING);
		str = t_str_new(hdr->full_value_len + 16);
		message_address_write(str, list);
		addr = t_buffer_create(str_len(str) + 16);
		message_header_decode_utf8(str_data(str), str_len(str), addr,
					   normalizer);
	} else if (strcasecmp(hdr->name, "Subject") == 0) {
		str = t_str_new(hdr->full_value_len + 1);
		capture_compress_lwsp(str, hdr->full_value,
				      hdr->full_value_len);
		lwsp = t_buffer_create(str_len(str) + 16);
		message_header_decode_utf8(str_data(str), str_len(str), lwsp,
					   normalizer);
	}
	fts_lmdb_doc_add_header(ctx->b, hdr->name, hdr->name_len,
				value_off, value_len,
				addr == NULL ? NULL : addr->data,
				addr == NULL ? 0 : addr->used,
				lwsp == NULL ? NULL : lwsp->data,
				lwsp == NULL ? 0 : lwsp->used);
}

static void capture_decoded_header(struct fts_lmdb_capture *ctx,
				   const struct message_block *raw,
				   const struct message_header_line *dec,
				   normalizer_func_t *normalizer)
{
	size_t value_off;

	/* message-search.c: search_header() looks at these four pieces */
	(void)fts_lmdb_doc_append_hdr_text(ctx->b, dec->name, dec->name_len);
	(void)fts_lmdb_doc_append_hdr_text(ctx->b, dec->middle,
					   dec->middle_len);
	value_off = fts_lmdb_doc_append_hdr_text(ctx->b, dec->full_value,
						 dec->full_value_len);
	if (!dec->no_newline)
		(void)fts_lmdb_doc_append_hdr_text(ctx->b, "\r\n", 2);

	if (raw->part->parent == NULL && !raw->hdr->eoh) T_BEGIN {
		capture_root_header(ctx, raw->hdr, value_off,
				    dec->full_value_len, normalizer);
	} T_END;
}

/* message-search.c: message_search_more_get_decoded(), without
   MESSAGE_SEARCH_FLAG_SKIP_HEADERS.  Header lines go to the hdr text and
   bodies to the body text, so BODY can skip the headers, as that flag
   does: it only hides Content-Type and -Transfer-Encoding from the
   search, the decoder sees them either way. */
static void capture_block(struct fts_lmdb_capture *ctx,
			  struct message_block *raw)
{
	struct message_header_line *hdr = raw->hdr;
	struct message_block decoded;

	if (raw->part != ctx->prev_part) {
		/* message_search_reset() */
		ctx->content_type_text = TRUE;
		message_decoder_decode_reset(ctx->decoder);
		ctx->prev_part = raw->part;
		fts_lmdb_doc_part_break(ctx->b);
		if (hdr == NULL) {
			/* back in a multipart's epilogue */
			ctx->content_type_text = FALSE;
		}
	}
	if (hdr != NULL)
		capture_handle_header(ctx, hdr);
	else if (!ctx->content_type_text)
		return;
	if (!message_decoder_decode_next_block(ctx->decoder, raw, &decoded))
		return;
	if (decoded.hdr != NULL) {
		capture_decoded_header(ctx, raw, decoded.hdr,
				       ctx->normalizer);
	}
	else
		fts_lmdb_doc_append_body(ctx->b, decoded.data, decoded.size);
}

int fts_lmdb_capture_mail(struct mail *mail, normalizer_func_t *normalizer,
			  struct message_decoder_context *decoder,
			  struct fts_lmdb_doc_builder *b,
			  const char **error_r)
{
	const struct message_parser_settings parser_set = {
		.hdr_flags = MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE,
	};
	struct fts_lmdb_capture ctx;
	struct message_parser_ctx *parser;
	struct message_block raw;
	struct message_part *parts;
	struct istream *input;
	int ret;

	if (mail_get_stream_because(mail, NULL, NULL, "fts-lmdb indexing",
				    &input) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		fts_lmdb_doc_builder_add_flags(b, FTS_LMDB_DOC_FLAG_PARTIAL);
		return -1;
	}
	i_zero(&ctx);
	ctx.b = b;
	ctx.normalizer = normalizer;
	ctx.decoder = decoder;
	/* message_search_msg_real(): message_search_reset() */
	ctx.content_type_text = TRUE;
	message_decoder_decode_reset(decoder);

	parser = message_parser_init(pool_datastack_create(), input,
				     &parser_set);
	while ((ret = message_parser_parse_next_block(parser, &raw)) > 0)
		capture_block(&ctx, &raw);
	message_parser_deinit(&parser, &parts);
	if (input->stream_errno != 0) {
		*error_r = t_strdup_printf("read(%s) failed: %s",
					   i_stream_get_name(input),
					   i_stream_get_error(input));
		fts_lmdb_doc_builder_add_flags(b, FTS_LMDB_DOC_FLAG_PARTIAL);
		return -1;
	}
	return 0;
}
