/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* imap_lmdb: RFC 8474 OBJECTID for IMAP.

   The plugin decides per client, when the client is created, whether
   OBJECTID is on: the user must have loaded imap_lmdb, and every enabled
   namespace must name a format that keeps message and mailbox GUIDs
   stable (lmdb, maildir, sdbox/dbox, mdbox). Autodetected locations,
   mbox, imapc, pop3c and virtual keep the stock behaviour: no capability,
   and EMAILID, THREADID and MAILBOXID stay unknown words, exactly as
   without the plugin. The decision has to come from the settings: the
   capability goes out with the LOGIN reply, before Dovecot creates the
   namespaces.

   An OBJECTID client gets:
   - " OBJECTID" in its capability string;
   - "* OK [MAILBOXID (...)]" before the tagged OK of SELECT and EXAMINE,
     from a send_tagline override (client->v);
   - everything else from imap-lmdb-cmds.c, imap-lmdb-fetch.c and
     imap-lmdb-search.c, which all ask imap_lmdb_client_event() first. */

#include "imap-common.h"
#include "module-context.h"
#include "mail-storage-settings.h"
#include "imap-commands.h"
#include "imap-objectid.h"
#include "imap-lmdb-plugin.h"

#include <ctype.h>

#define IMAP_LMDB_CONTEXT(obj) \
	MODULE_CONTEXT(obj, imap_lmdb_imap_module)

struct imap_lmdb_client {
	union imap_module_context module_ctx;
	struct event *event;
};

struct event_category event_category_imap_lmdb = {
	.name = "imap-lmdb",
	.parent = &event_category_imap,
};

/* Formats whose message GUIDs survive COPY, MOVE, restarts, force-resync
   and dsync, and whose mailbox GUIDs survive RENAME, restarts,
   force-resync and dsync. README.md says what each one keeps where. */
static const char *const imap_lmdb_stable_drivers[] = {
	"lmdb", "maildir", "sdbox", "dbox", "mdbox", NULL
};

const char *imap_lmdb_plugin_version = DOVECOT_ABI_VERSION;
const char imap_lmdb_plugin_binary_dependency[] = "imap";

static struct module *imap_lmdb_module;
static imap_client_created_func_t *next_hook_client_created;
static struct client_command_context *imap_lmdb_cur_cmd = NULL;

static MODULE_CONTEXT_DEFINE_INIT(imap_lmdb_imap_module,
				  &imap_module_register);

struct event *imap_lmdb_client_event(struct client *client)
{
	struct imap_lmdb_client *iclient = IMAP_LMDB_CONTEXT(client);

	return iclient == NULL ? NULL : iclient->event;
}

struct client_command_context *imap_lmdb_current_command(void)
{
	return imap_lmdb_cur_cmd;
}

int imap_lmdb_mailboxid(struct event *event, struct mailbox *box,
			const char **id_r)
{
	struct mailbox_metadata metadata;

	if (mailbox_get_metadata(box, MAILBOX_METADATA_GUID, &metadata) < 0) {
		e_error(event, "Mailbox %s: GUID lookup failed: %s",
			mailbox_get_vname(box),
			mailbox_get_last_internal_error(box, NULL));
		return -1;
	}
	*id_r = objectid_mailboxid(metadata.guid);
	return 0;
}

/* The driver named by a mail location ("maildir:~/Maildir" -> "maildir"),
   or NULL when Dovecot would autodetect it. Same rule as lib-storage. */
static const char *imap_lmdb_location_driver(const char *location)
{
	const char *p = location;

	while (i_isalnum(*p) || *p == '_')
		p++;
	if (*p != ':' || p == location)
		return NULL;
	return t_strdup_until(location, p);
}

static bool
imap_lmdb_location_is_stable(struct event *event, struct mail_user *user,
			     const char *location, const char *ns_name)
{
	const char *driver;

	if (*location == '\0')
		location = mail_user_set_get_storage_set(user)->mail_location;
	driver = imap_lmdb_location_driver(location);
	if (driver != NULL &&
	    str_array_find(imap_lmdb_stable_drivers, driver))
		return TRUE;
	e_debug(event, "OBJECTID disabled: namespace '%s' uses %s, "
		"which does not keep identifiers stable", ns_name,
		driver == NULL ? "an autodetected format" :
		t_strdup_printf("the %s format", driver));
	return FALSE;
}

static bool
imap_lmdb_user_is_stable(struct event *event, struct mail_user *user)
{
	struct mail_namespace_settings *const *ns_set;
	unsigned int i, count;
	bool ret = TRUE;

	if (!array_is_created(&user->set->namespaces) ||
	    array_count(&user->set->namespaces) == 0)
		return imap_lmdb_location_is_stable(event, user, "", "inbox");

	ns_set = array_get(&user->set->namespaces, &count);
	for (i = 0; i < count && ret; i++) {
		if (ns_set[i]->disabled)
			continue;
		T_BEGIN {
			ret = imap_lmdb_location_is_stable(event, user,
				ns_set[i]->location, ns_set[i]->name);
		} T_END;
	}
	return ret;
}

static void
imap_lmdb_send_tagline(struct client_command_context *cmd, const char *data)
{
	struct client *client = cmd->client;
	struct imap_lmdb_client *iclient = IMAP_LMDB_CONTEXT(client);
	const char *id;

	/* RFC 8474 section 4.2: MAILBOXID in an untagged OK of every
	   successful SELECT and EXAMINE. The tagged OK is the last thing
	   both send, after client->mailbox is set. */
	if (str_begins(data, "OK ") && client->mailbox != NULL &&
	    (strcasecmp(cmd->name, "SELECT") == 0 ||
	     strcasecmp(cmd->name, "EXAMINE") == 0) &&
	    imap_lmdb_mailboxid(iclient->event, client->mailbox, &id) == 0) {
		client_send_line(client, t_strdup_printf(
			"* OK [MAILBOXID (%s)] Ok", id));
	}
	iclient->module_ctx.super.send_tagline(cmd, data);
}

static void imap_lmdb_client_destroy(struct client *client, const char *reason)
{
	struct imap_lmdb_client *iclient = IMAP_LMDB_CONTEXT(client);

	event_unref(&iclient->event);
	iclient->module_ctx.super.destroy(client, reason);
}

static void imap_lmdb_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct imap_lmdb_client *iclient;
	struct event *event;

	if (mail_user_is_plugin_loaded(client->user, imap_lmdb_module)) {
		event = event_create(client->event);
		event_add_category(event, &event_category_imap_lmdb);
		event_set_append_log_prefix(event, "imap-lmdb: ");
		if (!imap_lmdb_user_is_stable(event, client->user)) {
			event_unref(&event);
		} else {
			iclient = p_new(client->pool,
					struct imap_lmdb_client, 1);
			iclient->module_ctx.super = client->v;
			iclient->event = event;
			client->v.send_tagline = imap_lmdb_send_tagline;
			client->v.destroy = imap_lmdb_client_destroy;
			MODULE_CONTEXT_SET(client, imap_lmdb_imap_module,
					   iclient);
			client_add_capability(client, "OBJECTID");
			e_debug(event, "OBJECTID enabled");
		}
	}

	if (next_hook_client_created != NULL)
		next_hook_client_created(clientp);
}

static void imap_lmdb_command_pre(struct client_command_context *cmd)
{
	imap_lmdb_cur_cmd = cmd;
}

static void imap_lmdb_command_post(struct client_command_context *cmd)
{
	if (imap_lmdb_cur_cmd == cmd)
		imap_lmdb_cur_cmd = NULL;
}

void imap_lmdb_plugin_init(struct module *module)
{
	imap_lmdb_module = module;
	next_hook_client_created =
		imap_client_created_hook_set(imap_lmdb_client_created);
	command_hook_register(imap_lmdb_command_pre, imap_lmdb_command_post);
	imap_lmdb_commands_init();
	imap_lmdb_fetch_init();
	imap_lmdb_search_init();
}

void imap_lmdb_plugin_deinit(void)
{
	imap_lmdb_search_deinit();
	imap_lmdb_fetch_deinit();
	imap_lmdb_commands_deinit();
	command_hook_unregister(imap_lmdb_command_pre, imap_lmdb_command_post);
	imap_client_created_hook_set(next_hook_client_created);
}
