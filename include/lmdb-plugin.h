#ifndef LMDB_PLUGIN_H
#define LMDB_PLUGIN_H

struct module;

extern const char *lmdb_plugin_version;

void lmdb_plugin_init(struct module *module);
void lmdb_plugin_deinit(void);

#endif
