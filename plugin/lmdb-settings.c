/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "settings-parser.h"
#include "lmdb-settings.h"

int lmdb_settings_parse_size(const char *name, const char *value,
			     size_t *bytes_r, const char **error_r)
{
	const char *error;
	uoff_t bytes;

	if (settings_get_size(value, &bytes, &error) < 0) {
		*error_r = t_strdup_printf("plugin { %s = %s }: %s",
					   name, value, error);
		return -1;
	}
	if (bytes < LMDB_SETTINGS_MIN_SIZE) {
		*error_r = t_strdup_printf("plugin { %s = %s }: "
					   "must be at least 1M", name, value);
		return -1;
	}
	if (bytes > SIZE_MAX / 2) {
		*error_r = t_strdup_printf("plugin { %s = %s }: "
					   "must be at most %zu bytes",
					   name, value, SIZE_MAX / 2);
		return -1;
	}
	*bytes_r = bytes;
	return 0;
}
