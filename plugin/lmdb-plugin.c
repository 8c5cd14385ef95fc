/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "mail-storage-private.h"
#include "lmdb-storage.h"
#include "lmdb-plugin.h"

const char *lmdb_plugin_version = DOVECOT_ABI_VERSION;

/* The class may be registered by more than one module instance (doveadm
   loads mail_plugins, and a test harness may load it twice): count. */
static int lmdb_class_refcount = 0;

void lmdb_plugin_init(struct module *module ATTR_UNUSED)
{
	if (lmdb_class_refcount++ == 0)
		mail_storage_class_register(&lmdb_storage);
}

void lmdb_plugin_deinit(void)
{
	if (--lmdb_class_refcount == 0)
		mail_storage_class_unregister(&lmdb_storage);
}
