/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* FETCH EMAILID and THREADID (RFC 8474 section 5.3), registered with
   imap_fetch_handlers_register(). Both are buffered handlers: they only
   append to the FETCH line. For a client without OBJECTID they fail the
   way an unknown item does. */

#include "imap-common.h"
#include "str.h"
#include "mail-storage-private.h"
#include "imap-fetch.h"
#include "imap-objectid.h"
#include "imap-lmdb-plugin.h"

static bool
imap_lmdb_fetch_allowed(struct imap_fetch_init_context *ctx)
{
	if (imap_lmdb_client_event(ctx->fetch_ctx->client) != NULL)
		return TRUE;
	ctx->error = t_strdup_printf("Unknown parameter: %s", ctx->name);
	return FALSE;
}

static int
fetch_emailid(struct imap_fetch_context *ctx, struct mail *mail,
	      void *context ATTR_UNUSED)
{
	const char *guid;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
		return -1;
	if (*guid == '\0') {
		/* only formats without GUIDs do this, and OBJECTID is off
		   for them; don't invent an ID that would not be stable */
		mail_set_critical(mail, "imap-lmdb: message has no GUID, "
				  "can't give it an EMAILID");
		return -1;
	}
	str_printfa(ctx->state.cur_str, "EMAILID (%s) ",
		    objectid_emailid(guid));
	return 1;
}

static bool fetch_emailid_init(struct imap_fetch_init_context *ctx)
{
	if (!imap_lmdb_fetch_allowed(ctx))
		return FALSE;
	ctx->fetch_ctx->fetch_data |= MAIL_FETCH_GUID;
	imap_fetch_add_handler(ctx, IMAP_FETCH_HANDLER_FLAG_BUFFERED,
			       "NIL", fetch_emailid, NULL);
	return TRUE;
}

static int
fetch_threadid(struct imap_fetch_context *ctx, struct mail *mail,
	       void *context ATTR_UNUSED)
{
	const char *id;
	int ret;

	if ((ret = objectid_mail_threadid(mail, &id)) < 0)
		return -1;
	if (ret == 0)
		str_append(ctx->state.cur_str, "THREADID NIL ");
	else
		str_printfa(ctx->state.cur_str, "THREADID (%s) ", id);
	return 1;
}

static bool fetch_threadid_init(struct imap_fetch_init_context *ctx)
{
	unsigned int i;

	if (!imap_lmdb_fetch_allowed(ctx))
		return FALSE;
	/* let the search prefetch (and the cache learn) these headers */
	for (i = 0; objectid_thread_headers[i] != NULL; i++) {
		array_push_back(&ctx->fetch_ctx->all_headers,
				&objectid_thread_headers[i]);
	}
	imap_fetch_add_handler(ctx, IMAP_FETCH_HANDLER_FLAG_BUFFERED,
			       "NIL", fetch_threadid, NULL);
	return TRUE;
}

static const struct imap_fetch_handler imap_lmdb_fetch_handlers[] = {
	{ "EMAILID", fetch_emailid_init },
	{ "THREADID", fetch_threadid_init },
};

void imap_lmdb_fetch_init(void)
{
	imap_fetch_handlers_register(imap_lmdb_fetch_handlers,
				     N_ELEMENTS(imap_lmdb_fetch_handlers));
}

void imap_lmdb_fetch_deinit(void)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(imap_lmdb_fetch_handlers); i++)
		imap_fetch_handler_unregister(imap_lmdb_fetch_handlers[i].name);
}
