/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "module-context.h"
#include "settings-parser.h"
#include "mail-user.h"
#include "mail-storage-hooks.h"
#include "fts-user.h"
#include "fts-lmdb-plugin.h"

#define FTS_LMDB_USER_CONTEXT(obj) \
	MODULE_CONTEXT(obj, fts_lmdb_user_module)

struct fts_lmdb_user {
	union mail_user_module_context module_ctx;
};

const char *fts_lmdb_plugin_version = DOVECOT_ABI_VERSION;
const char *fts_lmdb_plugin_dependencies[] = { "fts", NULL };

struct event_category event_category_fts_lmdb = {
	.name = "fts-lmdb",
	.parent = &event_category_fts,
};

static MODULE_CONTEXT_DEFINE_INIT(fts_lmdb_user_module,
				  &mail_user_module_register);

enum setting_kind { SET_KIND_SIZE, SET_KIND_UINT, SET_KIND_BOOL };

static const struct {
	const char *name;
	enum setting_kind kind;
	size_t offset;
	const char *def;
} fts_lmdb_setting_defs[] = {
	{ "fts_lmdb_map_size", SET_KIND_SIZE,
	  offsetof(struct fts_lmdb_settings, map_size), "16M" },
	{ "fts_lmdb_max_size", SET_KIND_SIZE,
	  offsetof(struct fts_lmdb_settings, max_size), "4G" },
	{ "fts_lmdb_max_text", SET_KIND_SIZE,
	  offsetof(struct fts_lmdb_settings, max_text), "4M" },
	{ "fts_lmdb_batch_size", SET_KIND_UINT,
	  offsetof(struct fts_lmdb_settings, batch_size), "1000" },
	{ "fts_lmdb_batch_memory", SET_KIND_SIZE,
	  offsetof(struct fts_lmdb_settings, batch_memory), "32M" },
	{ "fts_lmdb_parsed_text", SET_KIND_BOOL,
	  offsetof(struct fts_lmdb_settings, parsed_text), "yes" },
};

static int fts_lmdb_setting_parse(enum setting_kind kind, const char *value,
				  void *dest, const char **error_r)
{
	switch (kind) {
	case SET_KIND_SIZE:
		return settings_get_size(value, dest, error_r);
	case SET_KIND_UINT:
		if (str_to_uint(value, dest) < 0 || *(unsigned int *)dest == 0) {
			*error_r = t_strdup_printf("%s: not a positive number",
						   value);
			return -1;
		}
		return 0;
	case SET_KIND_BOOL:
		if (strcasecmp(value, "yes") == 0)
			*(bool *)dest = TRUE;
		else if (strcasecmp(value, "no") == 0)
			*(bool *)dest = FALSE;
		else {
			*error_r = t_strdup_printf("%s: not yes or no", value);
			return -1;
		}
		return 0;
	}
	i_unreached();
}

int fts_lmdb_settings_read(struct mail_user *user,
			   struct fts_lmdb_settings *set_r,
			   const char **error_r)
{
	const char *value, *error;
	unsigned int i;
	void *dest;

	i_zero(set_r);
	for (i = 0; i < N_ELEMENTS(fts_lmdb_setting_defs); i++) {
		value = mail_user_plugin_getenv(user,
						fts_lmdb_setting_defs[i].name);
		if (value == NULL || *value == '\0')
			value = fts_lmdb_setting_defs[i].def;
		dest = PTR_OFFSET(set_r, fts_lmdb_setting_defs[i].offset);
		if (fts_lmdb_setting_parse(fts_lmdb_setting_defs[i].kind,
					   value, dest, &error) < 0) {
			*error_r = t_strdup_printf("Invalid %s: %s",
				fts_lmdb_setting_defs[i].name, error);
			return -1;
		}
	}
	if (set_r->max_size < set_r->map_size) {
		*error_r = "fts_lmdb_max_size is smaller than fts_lmdb_map_size";
		return -1;
	}
	return 0;
}

static void fts_lmdb_mail_user_deinit(struct mail_user *user)
{
	struct fts_lmdb_user *fuser = FTS_LMDB_USER_CONTEXT(user);

	fts_mail_user_deinit(user);
	fuser->module_ctx.super.deinit(user);
}

/* The fts plugin expects every backend to set up its user context:
   without it, allocating a mailbox crashes (fts_user_autoindex_exclude()
   in 2.3.17 and later). */
static void fts_lmdb_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct fts_lmdb_user *fuser;
	const char *name, *error;

	name = mail_user_plugin_getenv(user, "fts");
	if (name == NULL || strcmp(name, "lmdb") != 0)
		return;
	if (fts_mail_user_init(user, FALSE, &error) < 0) {
		e_error(user->event, "fts-lmdb: %s", error);
		return;
	}
	fuser = p_new(user->pool, struct fts_lmdb_user, 1);
	fuser->module_ctx.super = *v;
	user->vlast = &fuser->module_ctx.super;
	v->deinit = fts_lmdb_mail_user_deinit;
	MODULE_CONTEXT_SET(user, fts_lmdb_user_module, fuser);
}

static struct mail_storage_hooks fts_lmdb_mail_storage_hooks = {
	.mail_user_created = fts_lmdb_mail_user_created,
};

void fts_lmdb_plugin_init(struct module *module)
{
	fts_backend_register(&fts_backend_lmdb);
	mail_storage_hooks_add(module, &fts_lmdb_mail_storage_hooks);
}

void fts_lmdb_plugin_deinit(void)
{
	fts_backend_unregister(fts_backend_lmdb.name);
	mail_storage_hooks_remove(&fts_lmdb_mail_storage_hooks);
}
