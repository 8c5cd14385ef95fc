/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* doveadm lmdb compact and doveadm lmdb backup: both are LMDB copies
   (mdb_env_copy2).

   compact rewrites data.mdb without its free pages, under the exclusive
   compact lock (see include/lmdb-db.h): it runs only while no process has
   the environment open, and processes that open it meanwhile wait for it.

   backup copies the environment in one read transaction, which is a
   consistent snapshot while the user keeps working, then the mailbox
   directory tree (names, subscriptions, the lmdb-mailbox-guid files)
   without Dovecot's index files: a restored snapshot is force-resynced,
   which rebuilds every index from LMDB. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "str.h"
#include "strnum.h"
#include "file-copy.h"
#include "time-util.h"
#include "mail-namespace.h"
#include "mailbox-list.h"
#include "doveadm-print.h"
#include "doveadm-lmdb.h"

#include <dirent.h>
#include <sys/stat.h>

#define LMDB_COMPACT_DEFAULT_WAIT_SECS 5
#define LMDB_BACKUP_MANIFEST "dovecot-lmdb-backup.txt"

/* ---- doveadm lmdb compact ---- */

struct lmdb_compact_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	unsigned int wait_secs;
};

static void lmdb_compact_print(const char *path, const char *result,
			       const struct ldb_compact_result *res,
			       long long msecs)
{
	doveadm_print(path);
	doveadm_print(result);
	doveadm_print_num(res->size_before < 0 ? 0 : res->size_before);
	doveadm_print_num(res->size_after < 0 ? 0 : res->size_after);
	doveadm_print_num(msecs < 0 ? 0 : msecs);
}

static void lmdb_compact_event(struct event *event, const char *result,
			       const struct ldb_compact_result *res,
			       long long msecs, const char *error)
{
	event_add_str(event, "result", result);
	event_add_int(event, "size_before", res->size_before);
	event_add_int(event, "size_after", res->size_after);
	if (error == NULL) {
		e_debug(event, "lmdb: Compacted %s: %lld -> %lld bytes in "
			"%lld ms", event_find_field_recursive_str(event, "path"),
			res->size_before, res->size_after, msecs);
	} else {
		e_debug(event, "lmdb: Compacting %s: %s",
			event_find_field_recursive_str(event, "path"), error);
	}
}

static int lmdb_compact_root(struct lmdb_compact_cmd_context *ctx,
			     const struct doveadm_lmdb_root *root)
{
	struct lmdb_storage *storage = root->storage;
	struct ldb_compact_result res;
	struct event *event;
	const char *data_path, *error, *result;
	struct stat st;
	long long msecs;
	int ret;

	i_zero(&res);
	data_path = t_strconcat(storage->env_path, "/data.mdb", NULL);
	if (stat(data_path, &st) < 0 && errno == ENOENT) {
		/* the user never stored mail */
		lmdb_compact_print(storage->env_path, "empty", &res, 0);
		return 0;
	}
	event = event_create(storage->storage.event);
	event_set_name(event, "lmdb_compact");
	event_add_str(event, "path", storage->env_path);
	ret = ldb_env_compact(storage->env_path, &storage->ldb_set,
			      ctx->wait_secs * 1000, &res, &error);
	msecs = lmdb_event_msecs(event);
	if (ret == 0)
		result = "compacted";
	else if (ret == LDB_ERR_LOCKED)
		result = "busy";
	else
		result = "failed";
	lmdb_compact_event(event, result, &res, msecs, ret < 0 ? error : NULL);
	event_unref(&event);
	lmdb_compact_print(storage->env_path, result, &res, msecs);
	if (ret == LDB_ERR_LOCKED) {
		i_warning("lmdb compact: %s: user %s is active; not compacted "
			  "(try again when the user is logged out, or with a "
			  "longer -w)", error, storage->storage.user->username);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	if (ret < 0) {
		i_error("lmdb compact: %s", error);
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
		return -1;
	}
	return 0;
}

static int cmd_lmdb_compact_run(struct doveadm_mail_cmd_context *_ctx,
				struct mail_user *user)
{
	struct lmdb_compact_cmd_context *ctx =
		container_of(_ctx, struct lmdb_compact_cmd_context, ctx);
	ARRAY_TYPE(doveadm_lmdb_root) roots;
	const struct doveadm_lmdb_root *root;
	int ret = 0;

	if (doveadm_lmdb_roots_get_or_fail(_ctx, user, _ctx->pool,
					   &roots) < 0)
		return -1;
	array_foreach(&roots, root) T_BEGIN {
		if (lmdb_compact_root(ctx, root) < 0)
			ret = -1;
	} T_END;
	return ret;
}

static bool cmd_lmdb_compact_parse_arg(struct doveadm_mail_cmd_context *_ctx,
				       int c)
{
	struct lmdb_compact_cmd_context *ctx =
		container_of(_ctx, struct lmdb_compact_cmd_context, ctx);

	if (c != 'w')
		return FALSE;
	if (str_to_uint(optarg, &ctx->wait_secs) < 0 ||
	    ctx->wait_secs > 3600) {
		i_error("Invalid -w value: %s", optarg);
		return FALSE;
	}
	return TRUE;
}

static void cmd_lmdb_compact_init(struct doveadm_mail_cmd_context *ctx
				  ATTR_UNUSED, const char *const args[])
{
	if (args[0] != NULL)
		doveadm_mail_help_name("lmdb compact");
	doveadm_print_header_simple("environment");
	doveadm_print_header_simple("result");
	doveadm_print_header("size_before", "size_before",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	doveadm_print_header("size_after", "size_after",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	doveadm_print_header("duration_msecs", "duration_msecs",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
}

static struct doveadm_mail_cmd_context *cmd_lmdb_compact_alloc(void)
{
	struct lmdb_compact_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_compact_cmd_context);
	ctx->wait_secs = LMDB_COMPACT_DEFAULT_WAIT_SECS;
	ctx->ctx.getopt_args = "w:";
	ctx->ctx.v.parse_arg = cmd_lmdb_compact_parse_arg;
	ctx->ctx.v.init = cmd_lmdb_compact_init;
	ctx->ctx.v.run = cmd_lmdb_compact_run;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	return &ctx->ctx;
}

struct doveadm_cmd_ver2 doveadm_cmd_lmdb_compact = {
	.name = "lmdb compact",
	.mail_cmd = cmd_lmdb_compact_alloc,
	.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "[-w <wait secs>]",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('w', "wait", CMD_PARAM_INT64, 0)
DOVEADM_CMD_PARAMS_END
};

/* ---- doveadm lmdb backup ---- */

struct lmdb_backup_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	const char *dest;
	unsigned int files;
};

/* Dovecot's index files are left out: the restore rebuilds them from
   LMDB, and a copy taken while they change could be torn. */
static bool lmdb_backup_skip(const char *name, bool top)
{
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return TRUE;
	if (top && strcmp(name, LDB_DIR_NAME) == 0)
		return TRUE;
	return str_begins(name, "dovecot.index") ||
		str_begins(name, "dovecot.list.index") ||
		str_begins(name, "dovecot-lmdb-backup") ||
		(strlen(name) > 5 &&
		 strcmp(name + strlen(name) - 5, ".lock") == 0);
}

static int lmdb_backup_tree(struct lmdb_backup_cmd_context *ctx,
			    const char *src, const char *dest, bool top)
{
	struct dirent *d;
	struct stat st;
	const char *s, *t;
	DIR *dir;
	int ret = 0;

	if ((dir = opendir(src)) == NULL) {
		if (errno == ENOENT)
			return 0;
		i_error("opendir(%s) failed: %m", src);
		return -1;
	}
	if (!top && mkdir(dest, 0700) < 0 && errno != EEXIST) {
		i_error("mkdir(%s) failed: %m", dest);
		ret = -1;
	}
	while (ret == 0 && (d = readdir(dir)) != NULL) T_BEGIN {
		if (!lmdb_backup_skip(d->d_name, top)) {
			s = t_strconcat(src, "/", d->d_name, NULL);
			t = t_strconcat(dest, "/", d->d_name, NULL);
			if (lstat(s, &st) < 0) {
				if (errno != ENOENT) {
					i_error("lstat(%s) failed: %m", s);
					ret = -1;
				}
			} else if (S_ISDIR(st.st_mode)) {
				ret = lmdb_backup_tree(ctx, s, t, FALSE);
			} else if (S_ISREG(st.st_mode)) {
				/* a file deleted meanwhile is no error */
				if (file_copy(s, t, FALSE) < 0 &&
				    errno != ENOENT)
					ret = -1;
				else
					ctx->files++;
			}
		}
	} T_END;
	if (closedir(dir) < 0)
		i_error("closedir(%s) failed: %m", src);
	return ret;
}

/* DEST must be new or empty: a backup never overwrites anything. */
static int lmdb_backup_mkdest(const char *dest)
{
	struct dirent *d;
	DIR *dir;
	bool empty = TRUE;

	if (mkdir(dest, 0700) == 0)
		return 0;
	if (errno != EEXIST) {
		i_error("mkdir(%s) failed: %m", dest);
		return -1;
	}
	if ((dir = opendir(dest)) == NULL) {
		i_error("opendir(%s) failed: %m", dest);
		return -1;
	}
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			empty = FALSE;
	}
	(void)closedir(dir);
	if (!empty) {
		i_error("Backup destination %s is not empty", dest);
		return -1;
	}
	return 0;
}

static int lmdb_backup_manifest(const struct doveadm_lmdb_root *root,
				const char *dest, const char *src_root,
				const struct ldb_env_stat *st)
{
	const char *path = t_strconcat(dest, "/"LMDB_BACKUP_MANIFEST, NULL);
	string_t *str = t_str_new(512);
	FILE *f;

	str_printfa(str, "dovecot-lmdb backup\n"
		    "user: %s\nsource: %s\ntime: %s\n"
		    "lmdb transaction: %"PRIu64"\nschema version: %u\n"
		    "messages: %"PRIu64"\nbodies: %"PRIu64"\n\n"
		    "Restore: copy this directory's contents into the user's "
		    "empty mail root (%s),\nowned by the user, then run\n"
		    "  doveadm force-resync -u %s '*'\n"
		    "which rebuilds every mailbox's index from LMDB.\n",
		    root->storage->storage.user->username, src_root,
		    t_strflocaltime("%Y-%m-%d %H:%M:%S %z", ioloop_time),
		    st->txn_id, st->schema_version, st->entries_msg,
		    st->entries_body, src_root,
		    root->storage->storage.user->username);
	if ((f = fopen(path, "w")) == NULL) {
		i_error("fopen(%s) failed: %m", path);
		return -1;
	}
	if (fwrite(str_data(str), 1, str_len(str), f) != str_len(str) ||
	    fclose(f) != 0) {
		i_error("write(%s) failed: %m", path);
		return -1;
	}
	return 0;
}

static void lmdb_backup_print(const char *src_root, const char *dest,
			      const struct ldb_env_stat *st, long long size,
			      unsigned int files, long long msecs)
{
	doveadm_print(src_root);
	doveadm_print(dest);
	doveadm_print_num(st->entries_msg);
	doveadm_print_num(size < 0 ? 0 : size);
	doveadm_print_num(files);
	doveadm_print_num(msecs < 0 ? 0 : msecs);
}

/* The LMDB snapshot, then the tree.  LMDB first: its snapshot is the
   backup's point in time. */
static int lmdb_backup_copy(struct lmdb_backup_cmd_context *ctx,
			    const struct doveadm_lmdb_root *root,
			    const char *src_root, const char *dest,
			    struct ldb_env_stat *st_r, off_t *size_r)
{
	const char *env_dest = t_strconcat(dest, "/"LDB_DIR_NAME, NULL);
	struct ldb_env *env;
	struct stat st;

	if (!doveadm_lmdb_root_has_db(root)) {
		i_error("lmdb backup: %s has no LMDB database yet (no mail "
			"stored)", root->storage->env_path);
		return -1;
	}
	if (lmdb_backup_mkdest(dest) < 0 ||
	    doveadm_lmdb_root_env(&ctx->ctx, root, &env) < 0)
		return -1;
	if (mkdir(env_dest, 0700) < 0) {
		i_error("mkdir(%s) failed: %m", env_dest);
		return -1;
	}
	if (ldb_env_get_stat(env, st_r) < 0 ||
	    ldb_env_copy(env, env_dest, TRUE) < 0) {
		doveadm_lmdb_failed_ldb(&ctx->ctx, env, "backup");
		return -1;
	}
	ctx->files = 0;
	if (lmdb_backup_tree(ctx, src_root, dest, TRUE) < 0 ||
	    lmdb_backup_manifest(root, dest, src_root, st_r) < 0)
		return -1;
	*size_r = stat(t_strconcat(env_dest, "/data.mdb", NULL), &st) < 0 ?
		-1 : st.st_size;
	return 0;
}

static int lmdb_backup_root(struct lmdb_backup_cmd_context *ctx,
			    const struct doveadm_lmdb_root *root,
			    const char *dest)
{
	struct mail_namespace *ns = array_idx_elem(&root->namespaces, 0);
	const char *src_root;
	struct ldb_env_stat st;
	struct event *event;
	off_t size;
	long long msecs;

	src_root = mailbox_list_get_root_forced(ns->list,
						MAILBOX_LIST_PATH_TYPE_DIR);
	event = event_create(root->storage->storage.event);
	event_set_name(event, "lmdb_backup");
	event_add_str(event, "path", root->storage->env_path);
	event_add_str(event, "dest", dest);
	if (lmdb_backup_copy(ctx, root, src_root, dest, &st, &size) < 0) {
		event_unref(&event);
		return -1;
	}
	msecs = lmdb_event_msecs(event);
	lmdb_backup_print(src_root, dest, &st, size, ctx->files, msecs);
	event_add_int(event, "messages", st.entries_msg);
	event_add_int(event, "bytes", size);
	event_add_int(event, "files", ctx->files);
	e_debug(event, "lmdb: Backed up %s to %s: %"PRIu64" messages, "
		"%lld bytes, %u files in %lld ms", src_root, dest,
		st.entries_msg, (long long)size, ctx->files, msecs);
	event_unref(&event);
	return 0;
}

static int cmd_lmdb_backup_run(struct doveadm_mail_cmd_context *_ctx,
			       struct mail_user *user)
{
	struct lmdb_backup_cmd_context *ctx =
		container_of(_ctx, struct lmdb_backup_cmd_context, ctx);
	ARRAY_TYPE(doveadm_lmdb_root) roots;
	const struct doveadm_lmdb_root *root;
	const char *dest;
	unsigned int i = 0;
	int ret = 0;

	if (doveadm_lmdb_roots_get_or_fail(_ctx, user, _ctx->pool,
					   &roots) < 0)
		return -1;
	/* the usual single root goes into DEST itself; more roots (e.g. a
	   public namespace on lmdb) into DEST/lmdb-root-N */
	if (array_count(&roots) > 1 && lmdb_backup_mkdest(ctx->dest) < 0) {
		doveadm_mail_failed_error(_ctx, MAIL_ERROR_NOTPOSSIBLE);
		return -1;
	}
	array_foreach(&roots, root) T_BEGIN {
		dest = array_count(&roots) == 1 ? ctx->dest :
			t_strdup_printf("%s/lmdb-root-%u", ctx->dest, i);
		if (lmdb_backup_root(ctx, root, dest) < 0) {
			if (_ctx->exit_code == 0)
				doveadm_mail_failed_error(_ctx,
					MAIL_ERROR_NOTPOSSIBLE);
			ret = -1;
		}
		i++;
	} T_END;
	return ret;
}

static void cmd_lmdb_backup_init(struct doveadm_mail_cmd_context *_ctx,
				 const char *const args[])
{
	struct lmdb_backup_cmd_context *ctx =
		container_of(_ctx, struct lmdb_backup_cmd_context, ctx);

	if (args[0] == NULL || args[1] != NULL)
		doveadm_mail_help_name("lmdb backup");
	if (_ctx->iterate_all_users || args[0][0] != '/') {
		i_fatal_status(EX_USAGE, "lmdb backup: give one user (-u) and "
			       "an absolute DEST path");
	}
	ctx->dest = p_strdup(_ctx->pool, args[0]);
	doveadm_print_header_simple("source");
	doveadm_print_header_simple("dest");
	doveadm_print_header("messages", "messages",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	doveadm_print_header("lmdb_bytes", "lmdb_bytes",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	doveadm_print_header("files", "files",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	doveadm_print_header("duration_msecs", "duration_msecs",
			     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
			     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
}

static struct doveadm_mail_cmd_context *cmd_lmdb_backup_alloc(void)
{
	struct lmdb_backup_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct lmdb_backup_cmd_context);
	ctx->ctx.v.init = cmd_lmdb_backup_init;
	ctx->ctx.v.run = cmd_lmdb_backup_run;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	return &ctx->ctx;
}

struct doveadm_cmd_ver2 doveadm_cmd_lmdb_backup = {
	.name = "lmdb backup",
	.mail_cmd = cmd_lmdb_backup_alloc,
	.usage = "-u <user> <dest dir>",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('\0', "dest", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
};
