/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* SEARCH EMAILID and THREADID (RFC 8474 section 6), through Dovecot's
   IMAP search register.

   Both keys come in through the register's fallback, which lib-storage
   calls for any key it has no entry for. Dovecot 2.3 can add register
   entries but never remove them, while a fallback is one pointer: this
   plugin chains in front of the stock one (which parses message sets)
   and puts it back at deinit, so nothing points into an unloaded module.

   - EMAILID "M..." is turned back into the message GUID and becomes a
     stock GUID search (the same as Dovecot's X-GUID key), so it works
     wherever a search key does: SEARCH, SORT, THREAD, NOT, OR, SEARCHRES.
   - THREADID, and EMAILID of the rare hashed "S..." form, can't be turned
     back into anything a mailbox can search for. They are answered by
     scanning the selected mailbox once, while the command parses its
     arguments, and become the set of UIDs found. That set is fixed at
     that moment: a CONTEXT=UPDATE search won't see later arrivals.

   A key that is not an objectid is a syntax error (BAD); an objectid this
   plugin did not hand out simply matches nothing. Without OBJECTID the
   keys go to the stock fallback, which answers "Unknown argument". */

#include "imap-common.h"
#include "array.h"
#include "str.h"
#include "seq-range-array.h"
#include "imap-util.h"
#include "mail-search-build.h"
#include "mail-search-parser.h"
#include "mail-search-register.h"
#include "imap-commands.h"
#include "imap-objectid.h"
#include "imap-lmdb-plugin.h"

/* "T" + 32 hex digits, "S" + 32 hex digits */
#define OBJECTID_HASHED_LEN 33

typedef int imap_lmdb_mail_id_func_t(struct mail *mail, const char **id_r);

struct imap_lmdb_scan {
	const char *key;
	const char *id;
	imap_lmdb_mail_id_func_t *get_id;
	enum mail_fetch_field fields;
	const char *const *headers;
};

static mail_search_register_fallback_t *next_fallback = NULL;

static struct mail_search_arg *
imap_lmdb_search_nothing(struct mail_search_build_context *ctx)
{
	struct mail_search_arg *sarg;

	sarg = mail_search_build_new(ctx, SEARCH_ALL);
	sarg->match_not = TRUE;
	return sarg;
}

static int imap_lmdb_mail_emailid(struct mail *mail, const char **id_r)
{
	const char *guid;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
		return -1;
	if (*guid == '\0')
		return 0;
	*id_r = objectid_emailid(guid);
	return 1;
}

static bool imap_lmdb_command_is_search(struct client_command_context *cmd)
{
	const char *name = cmd->name;

	if (strncasecmp(name, "UID ", 4) == 0)
		name += 4;
	return strcasecmp(name, "SEARCH") == 0 ||
		strcasecmp(name, "SORT") == 0 ||
		strcasecmp(name, "THREAD") == 0;
}

/* Add the UIDs of the messages in box whose ID equals scan->id. */
static int
imap_lmdb_scan_mailbox(struct event *event, struct mailbox *box,
		       const struct imap_lmdb_scan *scan,
		       ARRAY_TYPE(seq_range) *uids)
{
	struct mailbox_transaction_context *t;
	struct mailbox_header_lookup_ctx *headers = NULL;
	struct mail_search_args *args;
	struct mail_search_context *search_ctx;
	struct mail *mail;
	const char *id;
	unsigned int scanned = 0;
	int ret = 0, r = 0;

	args = mail_search_build_init();
	mail_search_build_add_all(args);
	if (scan->headers != NULL)
		headers = mailbox_header_lookup_init(box, scan->headers);
	t = mailbox_transaction_begin(box, 0, "imap-lmdb objectid search");
	search_ctx = mailbox_search_init(t, args, NULL, scan->fields, headers);
	mail_search_args_unref(&args);

	while (ret == 0 && mailbox_search_next(search_ctx, &mail)) {
		scanned++;
		T_BEGIN {
			r = scan->get_id(mail, &id);
			if (r > 0 && strcmp(id, scan->id) == 0)
				seq_range_array_add(uids, mail->uid);
		} T_END;
		if (r < 0 && !mail->expunged)
			ret = -1;
	}
	if (mailbox_search_deinit(&search_ctx) < 0)
		ret = -1;
	mailbox_header_lookup_unref(&headers);
	(void)mailbox_transaction_commit(&t);

	if (ret < 0) {
		e_error(event, "SEARCH %s: scanning %s failed: %s", scan->key,
			mailbox_get_vname(box),
			mailbox_get_last_internal_error(box, NULL));
	} else {
		e_debug(event, "SEARCH %s %s: %u of %u messages in %s",
			scan->key, scan->id, seq_range_count(uids), scanned,
			mailbox_get_vname(box));
	}
	return ret;
}

static struct mail_search_arg *
imap_lmdb_search_scan(struct mail_search_build_context *ctx,
		      struct client_command_context *cmd, struct event *event,
		      const struct imap_lmdb_scan *scan)
{
	struct mail_search_arg *sarg;
	ARRAY_TYPE(seq_range) uids;
	string_t *str;

	if (cmd->client->mailbox == NULL || !imap_lmdb_command_is_search(cmd)) {
		ctx->_error = p_strconcat(ctx->pool, scan->key,
			" works only in SEARCH, SORT and THREAD", NULL);
		return NULL;
	}

	p_array_init(&uids, ctx->pool, 16);
	if (imap_lmdb_scan_mailbox(event, cmd->client->mailbox,
				   scan, &uids) < 0) {
		ctx->_error = p_strconcat(ctx->pool, scan->key,
			" search failed: "MAIL_ERRSTR_CRITICAL_MSG, NULL);
		return NULL;
	}
	if (array_count(&uids) == 0)
		return imap_lmdb_search_nothing(ctx);

	/* as imap_search_uid() builds it: value.str is the set as text
	   (imap-search-args.c looks for "$" in it) */
	str = t_str_new(128);
	imap_write_seq_range(str, &uids);
	sarg = mail_search_build_new(ctx, SEARCH_UIDSET);
	sarg->value.str = p_strdup(ctx->pool, str_c(str));
	sarg->value.seqset = uids;
	return sarg;
}

/* The objectid argument of key, or NULL with the error set. */
static const char *
imap_lmdb_search_parse_id(struct mail_search_build_context *ctx,
			  const char *key)
{
	const char *value;

	if (mail_search_parse_string(ctx->parser, &value) < 0)
		return NULL;
	if (!objectid_is_valid(value)) {
		ctx->_error = p_strconcat(ctx->pool, "Invalid ", key, NULL);
		return NULL;
	}
	return p_strdup(ctx->pool, value);
}

static struct mail_search_arg *
imap_lmdb_search_emailid(struct mail_search_build_context *ctx,
			 struct client_command_context *cmd,
			 struct event *event)
{
	struct mail_search_arg *sarg;
	struct imap_lmdb_scan scan;
	const char *id, *guid;

	if ((id = imap_lmdb_search_parse_id(ctx, "EMAILID")) == NULL)
		return NULL;

	if (objectid_emailid_to_guid(id, &guid)) {
		sarg = mail_search_build_new(ctx, SEARCH_GUID);
		sarg->value.str = p_strdup(ctx->pool, guid);
		return sarg;
	}
	if (id[0] != 'S' || strlen(id) != OBJECTID_HASHED_LEN)
		return imap_lmdb_search_nothing(ctx);

	i_zero(&scan);
	scan.key = "EMAILID";
	scan.id = id;
	scan.get_id = imap_lmdb_mail_emailid;
	scan.fields = MAIL_FETCH_GUID;
	return imap_lmdb_search_scan(ctx, cmd, event, &scan);
}

static struct mail_search_arg *
imap_lmdb_search_threadid(struct mail_search_build_context *ctx,
			  struct client_command_context *cmd,
			  struct event *event)
{
	struct imap_lmdb_scan scan;
	const char *id;

	if ((id = imap_lmdb_search_parse_id(ctx, "THREADID")) == NULL)
		return NULL;
	if (id[0] != 'T' || strlen(id) != OBJECTID_HASHED_LEN)
		return imap_lmdb_search_nothing(ctx);

	i_zero(&scan);
	scan.key = "THREADID";
	scan.id = id;
	scan.get_id = objectid_mail_threadid;
	scan.headers = objectid_thread_headers;
	return imap_lmdb_search_scan(ctx, cmd, event, &scan);
}

static struct mail_search_arg *
imap_lmdb_search_fallback(struct mail_search_build_context *ctx,
			  const char *key)
{
	struct client_command_context *cmd = imap_lmdb_current_command();
	struct event *event;

	event = cmd == NULL ? NULL : imap_lmdb_client_event(cmd->client);
	if (event != NULL) {
		if (strcmp(key, "EMAILID") == 0)
			return imap_lmdb_search_emailid(ctx, cmd, event);
		if (strcmp(key, "THREADID") == 0)
			return imap_lmdb_search_threadid(ctx, cmd, event);
	}
	if (next_fallback != NULL)
		return next_fallback(ctx, key);
	ctx->_error = p_strconcat(ctx->pool, "Unknown argument ", key, NULL);
	return NULL;
}

void imap_lmdb_search_init(void)
{
	struct mail_search_register *reg = mail_search_register_get_imap();

	if (!mail_search_register_get_fallback(reg, &next_fallback))
		next_fallback = NULL;
	mail_search_register_fallback(reg, imap_lmdb_search_fallback);
}

void imap_lmdb_search_deinit(void)
{
	struct mail_search_register *reg = mail_search_register_get_imap();
	mail_search_register_fallback_t *cur;

	if (mail_search_register_get_fallback(reg, &cur) &&
	    cur == imap_lmdb_search_fallback)
		mail_search_register_fallback(reg, next_fallback);
	next_fallback = NULL;
}
