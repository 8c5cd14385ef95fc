/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* A mail plugin with a deliberate use after free in its init.  Only
   `make test-asan` builds it (with ASan), and test_lmdb_sanitizers.py loads
   it to prove that an ASan error in a Dovecot mail process fails the run. */

#include "lib.h"

#include <stdlib.h>

struct module;

extern const char *asan_canary_plugin_version;
const char *asan_canary_plugin_version = DOVECOT_ABI_VERSION;

void asan_canary_plugin_init(struct module *module);
void asan_canary_plugin_deinit(void);

void asan_canary_plugin_init(struct module *module ATTR_UNUSED)
{
	volatile char *buf = malloc(8);

	free((void *)buf);
	buf[0] = 'x';	/* after free: only ASan sees it */
}

void asan_canary_plugin_deinit(void)
{
}
