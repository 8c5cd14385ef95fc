#ifndef IMAP_LMDB_PLUGIN_H
#define IMAP_LMDB_PLUGIN_H

/* imap_lmdb: RFC 8474 OBJECTID (MAILBOXID, EMAILID, THREADID) for a stock
   Dovecot 2.3 imap process. The identifiers are computed in
   imap-objectid.c; this header glues the command, FETCH and SEARCH parts
   to the per-client state kept in imap-lmdb-plugin.c. */

struct client;
struct client_command_context;
struct mailbox;
struct module;

extern struct event_category event_category_imap_lmdb;

/* Returns the client's event (category "imap-lmdb") if OBJECTID is
   enabled for it: the user loaded imap_lmdb and every namespace uses a
   format that keeps the identifiers stable. NULL otherwise; the client
   then gets stock behaviour from everything this plugin touches. */
struct event *imap_lmdb_client_event(struct client *client);

/* The command whose function is running right now (a command hook sets it
   around every command function), or NULL. */
struct client_command_context *imap_lmdb_current_command(void);

/* Format the GUID of box as a MAILBOXID. Returns 0 and sets *id_r (data
   stack), or -1 after logging the error to event. */
int imap_lmdb_mailboxid(struct event *event, struct mailbox *box,
			const char **id_r);

/* imap-lmdb-cmds.c: STATUS (MAILBOXID), CREATE [MAILBOXID] */
void imap_lmdb_commands_init(void);
void imap_lmdb_commands_deinit(void);

/* imap-lmdb-fetch.c: FETCH EMAILID and THREADID */
void imap_lmdb_fetch_init(void);
void imap_lmdb_fetch_deinit(void);

/* imap-lmdb-search.c: SEARCH EMAILID and THREADID */
void imap_lmdb_search_init(void);
void imap_lmdb_search_deinit(void);

void imap_lmdb_plugin_init(struct module *module);
void imap_lmdb_plugin_deinit(void);

#endif
