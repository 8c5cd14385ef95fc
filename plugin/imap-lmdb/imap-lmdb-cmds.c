/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* MAILBOXID in STATUS and CREATE (RFC 8474 sections 4.1 and 4.3).

   Dovecot 2.3 has no hook inside either command, so both are replaced in
   the command table, and the stock functions stay one call away:

   - STATUS: a STATUS without MAILBOXID in its item list, or from a client
     without OBJECTID, goes to the stock function untouched. Otherwise this
     file runs the same steps as cmd-status.c (with the exported
     imap_status_*() functions) minus MAILBOXID, plus the mailbox GUID, and
     writes the STATUS line itself.
   - CREATE: for an OBJECTID client, the steps of cmd-create.c, with
     [MAILBOXID (...)] in the tagged OK. Others get the stock function.

   STATUS only peeks at the parsed arguments (imap_parser_read_args())
   before deciding: client_read_args() appends the arguments to the
   command's log fields on every call, so only the function that really
   runs the command may call it. */

#include "imap-common.h"
#include "str.h"
#include "imap-quote.h"
#include "imap-resp-code.h"
#include "imap-commands.h"
#include "imap-status.h"
#include "imap-objectid.h"
#include "imap-lmdb-plugin.h"

static command_func_t *stock_cmd_status = NULL;
static command_func_t *stock_cmd_create = NULL;

static bool imap_lmdb_status_wants_mailboxid(const struct imap_arg *list)
{
	for (; !IMAP_ARG_IS_EOL(list); list++) {
		if (imap_arg_atom_equals(list, "MAILBOXID"))
			return TRUE;
	}
	return FALSE;
}

/* imap_status_parse_items() of the list without its MAILBOXID atoms. */
static int
imap_lmdb_status_parse_items(struct client_command_context *cmd,
			     const struct imap_arg *list,
			     struct imap_status_items *items_r)
{
	struct imap_arg *rest;
	unsigned int i, n = 0;

	for (i = 0; !IMAP_ARG_IS_EOL(&list[i]); i++) ;
	rest = t_new(struct imap_arg, i + 1);
	for (i = 0; !IMAP_ARG_IS_EOL(&list[i]); i++) {
		if (!imap_arg_atom_equals(&list[i], "MAILBOXID"))
			rest[n++] = list[i];
	}
	rest[n].type = IMAP_ARG_EOL;

	if (n == 0) {
		i_zero(items_r);
		return 0;
	}
	return imap_status_parse_items(cmd, rest, items_r);
}

/* imap_status_send() with MAILBOXID at the end. */
static void
imap_lmdb_status_send(struct client *client, const char *mailbox_mutf7,
		      const struct imap_status_items *items,
		      const struct imap_status_result *result)
{
	const struct mailbox_status *status = &result->status;
	enum imap_status_item_flags flags = items->flags;
	string_t *str = t_str_new(128);

	str_append(str, "* STATUS ");
	imap_append_astring(str, mailbox_mutf7);
	str_append(str, " (");
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_MESSAGES))
		str_printfa(str, "MESSAGES %u ", status->messages);
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_RECENT))
		str_printfa(str, "RECENT %u ", status->recent);
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_UIDNEXT))
		str_printfa(str, "UIDNEXT %u ", status->uidnext);
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_UIDVALIDITY))
		str_printfa(str, "UIDVALIDITY %u ", status->uidvalidity);
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_UNSEEN))
		str_printfa(str, "UNSEEN %u ", status->unseen);
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_HIGHESTMODSEQ)) {
		str_printfa(str, "HIGHESTMODSEQ %"PRIu64" ",
			    status->highest_modseq);
	}
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_SIZE)) {
		str_printfa(str, "SIZE %"PRIu64" ",
			    result->metadata.virtual_size);
	}
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_X_SIZE)) {
		str_printfa(str, "X-SIZE %"PRIu64" ",
			    result->metadata.virtual_size);
	}
	if (HAS_ALL_BITS(flags, IMAP_STATUS_ITEM_X_GUID)) {
		str_printfa(str, "X-GUID %s ",
			    guid_128_to_string(result->metadata.guid));
	}
	str_printfa(str, "MAILBOXID (%s))",
		    objectid_mailboxid(result->metadata.guid));
	client_send_line(client, str_c(str));
}

/* cmd_status() for an item list with MAILBOXID in it */
static bool cmd_status_mailboxid(struct client_command_context *cmd)
{
	struct client *client = cmd->client;
	const struct imap_arg *args, *list;
	struct imap_status_items items, wanted;
	struct imap_status_result result;
	struct mail_namespace *ns;
	const char *mailbox, *orig_mailbox;
	bool selected_mailbox;

	if (!client_read_args(cmd, 2, 0, &args))
		return FALSE;
	if (!imap_arg_get_astring(&args[0], &mailbox) ||
	    !imap_arg_get_list(&args[1], &list)) {
		client_send_command_error(cmd, "Invalid arguments.");
		return TRUE;
	}
	if (imap_lmdb_status_parse_items(cmd, list, &items) < 0)
		return TRUE;

	orig_mailbox = mailbox;
	ns = client_find_namespace(cmd, &mailbox);
	if (ns == NULL)
		return TRUE;

	event_add_str(cmd->global_event, "mailbox", mailbox);
	selected_mailbox = client->mailbox != NULL &&
		mailbox_equals(client->mailbox, ns, mailbox);
	wanted = items;
	wanted.flags |= IMAP_STATUS_ITEM_X_GUID;
	if (imap_status_get(cmd, ns, mailbox, &wanted, &result) < 0) {
		client_send_tagline(cmd, result.errstr);
		return TRUE;
	}

	imap_lmdb_status_send(client, orig_mailbox, &items, &result);
	if (!selected_mailbox)
		client_send_tagline(cmd, "OK Status completed.");
	else {
		client_send_tagline(cmd, "OK ["IMAP_RESP_CODE_CLIENTBUG"] "
				    "Status on selected mailbox completed.");
	}
	return TRUE;
}

static bool cmd_status_objectid(struct client_command_context *cmd)
{
	const struct imap_arg *args, *list;

	if (imap_lmdb_client_event(cmd->client) == NULL ||
	    imap_parser_read_args(cmd->parser, 2, 0, &args) < 2 ||
	    !imap_arg_get_list(&args[1], &list) ||
	    !imap_lmdb_status_wants_mailboxid(list))
		return stock_cmd_status(cmd);
	return cmd_status_mailboxid(cmd);
}

/* cmd_create() with [MAILBOXID (...)] in the tagged OK */
static bool cmd_create_objectid(struct client_command_context *cmd)
{
	struct event *event = imap_lmdb_client_event(cmd->client);
	struct mail_namespace *ns;
	const char *mailbox, *orig_mailbox, *id;
	struct mailbox *box;
	bool directory;
	size_t len;

	if (event == NULL)
		return stock_cmd_create(cmd);

	/* <mailbox> */
	if (!client_read_string_args(cmd, 1, &mailbox))
		return FALSE;

	orig_mailbox = mailbox;
	ns = client_find_namespace(cmd, &mailbox);
	if (ns == NULL)
		return TRUE;

	len = strlen(orig_mailbox);
	if (len == 0 || orig_mailbox[len-1] != mail_namespace_get_sep(ns))
		directory = FALSE;
	else {
		/* only a hint that children follow: no mailbox, no ID */
		directory = TRUE;
		if (len == strlen(mailbox))
			mailbox = t_strndup(mailbox, len-1);
	}

	box = mailbox_alloc(ns->list, mailbox, 0);
	event_add_str(cmd->global_event, "mailbox", mailbox_get_vname(box));
	if (mailbox_create(box, NULL, directory) < 0)
		client_send_box_error(cmd, box);
	else if (directory || imap_lmdb_mailboxid(event, box, &id) < 0)
		client_send_tagline(cmd, "OK Create completed.");
	else {
		client_send_tagline(cmd, t_strdup_printf(
			"OK [MAILBOXID (%s)] Create completed.", id));
	}
	mailbox_free(&box);
	return TRUE;
}

static void
imap_lmdb_command_replace(const char *name, command_func_t *func,
			  command_func_t **stock_r)
{
	struct command *cmd = command_find(name);
	enum command_flags flags;

	i_assert(cmd != NULL);
	*stock_r = cmd->func;
	flags = cmd->flags;
	command_unregister(name);
	command_register(name, func, flags);
}

static void
imap_lmdb_command_restore(const char *name, command_func_t *func,
			  command_func_t **stock)
{
	struct command *cmd = command_find(name);
	enum command_flags flags;

	if (cmd != NULL && cmd->func == func) {
		flags = cmd->flags;
		command_unregister(name);
		command_register(name, *stock, flags);
	}
	*stock = NULL;
}

void imap_lmdb_commands_init(void)
{
	imap_lmdb_command_replace("STATUS", cmd_status_objectid,
				  &stock_cmd_status);
	imap_lmdb_command_replace("CREATE", cmd_create_objectid,
				  &stock_cmd_create);
}

void imap_lmdb_commands_deinit(void)
{
	imap_lmdb_command_restore("CREATE", cmd_create_objectid,
				  &stock_cmd_create);
	imap_lmdb_command_restore("STATUS", cmd_status_objectid,
				  &stock_cmd_status);
}
