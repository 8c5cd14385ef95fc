/* libFuzzer target: parsing of the lmdb plugin { } size settings
   (lmdb_map_size, lmdb_max_size) with lmdb_settings_parse_size(), which
   uses Dovecot's settings_get_size().

   The input is the setting's value (up to the first NUL byte).  A value
   that parses must be within [1M, SIZE_MAX / 2], must come out the same
   when parsed again, and must agree with the plain byte count written
   back; a refused one must come with an error that names the setting. */

#include "lib.h"
#include "lmdb-settings.h"

#include <stdlib.h>

#define CHECK(expr) do { if (!(expr)) abort(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	lib_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	T_BEGIN {
		const char *value = t_strndup(data, size), *error = NULL;
		size_t bytes = 0, bytes2 = 0;

		if (lmdb_settings_parse_size("lmdb_map_size", value, &bytes,
					     &error) == 0) {
			CHECK(bytes >= LMDB_SETTINGS_MIN_SIZE);
			CHECK(bytes <= SIZE_MAX / 2);
			CHECK(lmdb_settings_parse_size("lmdb_max_size",
				t_strdup_printf("%zu", bytes), &bytes2,
				&error) == 0);
			CHECK(bytes2 == bytes);
		} else {
			CHECK(error != NULL &&
			      strstr(error, "lmdb_map_size") != NULL);
		}
	} T_END;
	return 0;
}
