#ifndef FTS_LMDB_PLUGIN_H
#define FTS_LMDB_PLUGIN_H

#include "fts-api-private.h"

struct module;
struct mail_user;

/* plugin { } settings, read per user (see README.md) */
struct fts_lmdb_settings {
	/* initial and maximum LMDB map size of one namespace's index */
	uoff_t map_size, max_size;
	/* normalized text kept per message; a longer message is answered
	   as "maybe", so Dovecot reads it */
	uoff_t max_text;
	/* a write transaction holds at most this many messages or bytes */
	unsigned int batch_size;
	uoff_t batch_memory;
	/* BODY and TEXT also match the FTS parsers' text (html2text,
	   fts_decoder, fts_tika); "no" gives exactly Dovecot's own results */
	bool parsed_text;
};

extern const char *fts_lmdb_plugin_version;
extern const char *fts_lmdb_plugin_dependencies[];
extern struct fts_backend fts_backend_lmdb;
extern struct event_category event_category_fts_lmdb;

int fts_lmdb_settings_read(struct mail_user *user,
			   struct fts_lmdb_settings *set_r,
			   const char **error_r);

void fts_lmdb_plugin_init(struct module *module);
void fts_lmdb_plugin_deinit(void);

#endif
