#ifndef DOVEADM_LMDB_H
#define DOVEADM_LMDB_H

/* doveadm lmdb {stats,check,compact,backup}: the storage's maintenance
   commands.  This module uses the lmdb storage's symbols (lmdb_storage_*,
   ldb_*), so doveadm loads it only after mail_plugins loaded
   lib20_lmdb_plugin.so; it shares that module's one environment per path. */

#include "guid.h"
#include "doveadm-mail.h"
#include "lmdb-storage.h"

struct doveadm_cmd_ver2;

/* One LMDB environment of a user: an lmdb storage, and the namespaces
   whose mailboxes live in it. */
struct doveadm_lmdb_root {
	struct lmdb_storage *storage;
	ARRAY(struct mail_namespace *) namespaces;
};
ARRAY_DEFINE_TYPE(doveadm_lmdb_root, struct doveadm_lmdb_root);

/* A mailbox of a root, with the GUID that keys its LMDB records. */
struct doveadm_lmdb_mailbox {
	const char *vname;
	struct mail_namespace *ns;
	guid_128_t guid;
};
ARRAY_DEFINE_TYPE(doveadm_lmdb_mailbox, struct doveadm_lmdb_mailbox);

/* The lmdb storages of the user's private and public namespaces, one per
   environment (shared namespaces hold other users' mail). */
void doveadm_lmdb_roots_get(struct mail_user *user, pool_t pool,
			    ARRAY_TYPE(doveadm_lmdb_root) *roots_r);
/* Same, but fail the command with a message if the user has none. */
int doveadm_lmdb_roots_get_or_fail(struct doveadm_mail_cmd_context *ctx,
				   struct mail_user *user, pool_t pool,
				   ARRAY_TYPE(doveadm_lmdb_root) *roots_r);
/* The selectable mailboxes of root, sorted by GUID.  Opening a mailbox
   whose index is lost rebuilds it, as any IMAP SELECT would.  Mailboxes
   that fail to open are logged and counted in *failed_r. */
void doveadm_lmdb_mailboxes_get(const struct doveadm_lmdb_root *root,
				pool_t pool,
				ARRAY_TYPE(doveadm_lmdb_mailbox) *mailboxes_r,
				unsigned int *failed_r);
/* The mailbox of guid in a sorted array, or NULL. */
const struct doveadm_lmdb_mailbox *
doveadm_lmdb_mailbox_find(const ARRAY_TYPE(doveadm_lmdb_mailbox) *mailboxes,
			  const uint8_t guid[LDB_GUID_SIZE]);
/* FALSE if the root has no LMDB database yet (the user never stored
   mail): the commands then report that instead of creating one. */
bool doveadm_lmdb_root_has_db(const struct doveadm_lmdb_root *root);
/* Open the root's environment; logs and fails ctx on error. */
int doveadm_lmdb_root_env(struct doveadm_mail_cmd_context *ctx,
			  const struct doveadm_lmdb_root *root,
			  struct ldb_env **env_r);
void doveadm_lmdb_failed_ldb(struct doveadm_mail_cmd_context *ctx,
			     struct ldb_env *env, const char *what);

extern struct doveadm_cmd_ver2 doveadm_cmd_lmdb_stats;
extern struct doveadm_cmd_ver2 doveadm_cmd_lmdb_check;
extern struct doveadm_cmd_ver2 doveadm_cmd_lmdb_compact;
extern struct doveadm_cmd_ver2 doveadm_cmd_lmdb_backup;

extern const char *doveadm_lmdb_plugin_version;
void doveadm_lmdb_plugin_init(struct module *module);
void doveadm_lmdb_plugin_deinit(void);

#endif
