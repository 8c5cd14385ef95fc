#ifndef LMDB_SETTINGS_H
#define LMDB_SETTINGS_H

/* Parsing of the lmdb plugin { } settings, kept apart from lib-storage so
   that the libFuzzer target (tests/fuzz/fuzz-lmdb-settings.c) links it with
   libdovecot alone. */

#include <stddef.h>

/* the smallest lmdb_map_size / lmdb_max_size accepted */
#define LMDB_SETTINGS_MIN_SIZE (1024 * 1024)

/* Parse value, the setting called name: Dovecot's size syntax ("16M",
   "4 GiB", plain bytes), from 1M up to SIZE_MAX / 2.  0 = ok, -1 = invalid
   (*error_r names the setting and the value). */
int lmdb_settings_parse_size(const char *name, const char *value,
			     size_t *bytes_r, const char **error_r);

#endif
