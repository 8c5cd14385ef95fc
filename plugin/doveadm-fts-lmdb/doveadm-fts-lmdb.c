/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* doveadm fts-lmdb stats|check [-u USER] [MAILBOX]: the fts_lmdb index of
   each of the user's namespaces (<index root>/fts-lmdb/).

   The module links its own copy of the fts_lmdb store (fts-lmdb-store.c
   and the ldb layer) and reads the index with it, so it needs neither the
   fts plugins loaded nor their symbols.  It opens mailboxes without
   syncing them, so fts_lmdb in the same process never opens the index
   itself meanwhile. */

#include "lib.h"
#include "array.h"
#include "guid.h"
#include "module-dir.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mailbox-list-iter.h"
#include "doveadm-mail.h"
#include "doveadm-print.h"
#include "fts-lmdb-store.h"

#include <sys/stat.h>
#include <sysexits.h>

#define FTS_LMDB_META_VERSION "fts_schema_version"

const char *doveadm_fts_lmdb_plugin_version = DOVECOT_ABI_VERSION;
void doveadm_fts_lmdb_plugin_init(struct module *module);
void doveadm_fts_lmdb_plugin_deinit(void);

struct fts_lmdb_cmd_context {
	struct doveadm_mail_cmd_context ctx;
	const char *mailbox;
	bool check;
	unsigned int problems;
};

/* a mailbox of the namespace */
struct fl_mailbox {
	const char *vname;
	guid_128_t guid;
};
ARRAY_DEFINE_TYPE(fl_mailbox, struct fl_mailbox);

/* one namespace's index, opened */
struct fl_index {
	struct fts_lmdb_cmd_context *ctx;
	struct mail_namespace *ns;
	const char *path;
	struct fts_lmdb_store *store;
	struct ldb_env *env;
	unsigned int dbi_post, dbi_doc, dbi_uid, dbi_dead;
	struct fts_lmdb_box_entry *boxes;
	size_t box_count;
	ARRAY_TYPE(fl_mailbox) mailboxes;
};

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
		((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static const char *fl_ns_name(struct mail_namespace *ns)
{
	return ns->prefix_len == 0 ? "" : ns->prefix;
}

static void fl_problem(struct fl_index *idx, const char *mailbox,
		       const char *problem, const char *detail)
{
	idx->ctx->problems++;
	doveadm_print(fl_ns_name(idx->ns));
	doveadm_print(mailbox);
	doveadm_print(problem);
	doveadm_print(detail);
}

static void fl_mailboxes_get(struct fl_index *idx, pool_t pool)
{
	const enum mailbox_list_iter_flags iter_flags =
		MAILBOX_LIST_ITER_RAW_LIST | MAILBOX_LIST_ITER_NO_AUTO_BOXES |
		MAILBOX_LIST_ITER_SKIP_ALIASES;
	struct mailbox_list_iterate_context *iter;
	const struct mailbox_info *info;
	struct mailbox_metadata metadata;
	struct fl_mailbox *mbox;
	struct mailbox *box;

	p_array_init(&idx->mailboxes, pool, 16);
	iter = mailbox_list_iter_init(idx->ns->list, "*", iter_flags);
	while ((info = mailbox_list_iter_next(iter)) != NULL) {
		if ((info->flags & (MAILBOX_NOSELECT |
				    MAILBOX_NONEXISTENT)) != 0)
			continue;
		box = mailbox_alloc(idx->ns->list, info->vname,
				    MAILBOX_FLAG_IGNORE_ACLS);
		if (mailbox_get_metadata(box, MAILBOX_METADATA_GUID,
					 &metadata) < 0) {
			i_error("Opening mailbox %s failed: %s", info->vname,
				mailbox_get_last_internal_error(box, NULL));
			doveadm_mail_failed_mailbox(&idx->ctx->ctx, box);
		} else {
			mbox = array_append_space(&idx->mailboxes);
			mbox->vname = p_strdup(pool, info->vname);
			memcpy(mbox->guid, metadata.guid, sizeof(mbox->guid));
		}
		mailbox_free(&box);
	}
	if (mailbox_list_iter_deinit(&iter) < 0) {
		i_error("Listing mailboxes failed: %s",
			mailbox_list_get_last_internal_error(idx->ns->list,
							     NULL));
		doveadm_mail_failed_error(&idx->ctx->ctx, MAIL_ERROR_TEMP);
	}
}

static const char *fl_vname(struct fl_index *idx,
			    const uint8_t guid[LDB_GUID_SIZE])
{
	const struct fl_mailbox *mbox;

	array_foreach(&idx->mailboxes, mbox) {
		if (memcmp(mbox->guid, guid, GUID_128_SIZE) == 0)
			return mbox->vname;
	}
	return NULL;
}

/* The UIDs of box_id's rows in a "box id + UID" keyed database. */
static int fl_box_uids(struct ldb_txn *txn, unsigned int dbi,
		       uint32_t box_id, struct fts_lmdb_uids *uids)
{
	struct ldb_cursor *cursor;
	uint8_t start[4];
	const void *key;
	size_t key_size;
	int ret;

	put_be32(start, box_id);
	key = start;
	key_size = sizeof(start);
	if ((ret = ldb_cursor_open(txn, dbi, &cursor)) < 0)
		return ret;
	ret = ldb_cursor_get(cursor, LDB_CURSOR_SET_RANGE, &key, &key_size,
			     NULL, NULL);
	while (ret > 0 && key_size == FTS_LMDB_DOC_KEY_SIZE &&
	       get_be32(key) == box_id) {
		fts_lmdb_uids_push(uids, get_be32((const uint8_t *)key + 4));
		ret = ldb_cursor_get(cursor, LDB_CURSOR_NEXT, &key, &key_size,
				     NULL, NULL);
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? ret : 0;
}

static int fl_open(struct fl_index *idx)
{
	struct ldb_settings set;
	struct mailbox_permissions perm;
	const char *error;

	mailbox_list_get_root_permissions(idx->ns->list, &perm);
	ldb_settings_default(&set);
	set.file_mode = perm.file_create_mode;
	if (fts_lmdb_store_open(idx->path, &set, &idx->store, &error) < 0) {
		i_error("fts-lmdb: Opening %s failed: %s", idx->path, error);
		return -1;
	}
	idx->env = fts_lmdb_store_env(idx->store);
	if (ldb_dbi_open(idx->env, "fts_post", &idx->dbi_post) < 0 ||
	    ldb_dbi_open(idx->env, "fts_doc", &idx->dbi_doc) < 0 ||
	    ldb_dbi_open(idx->env, "fts_uid", &idx->dbi_uid) < 0 ||
	    ldb_dbi_open(idx->env, "fts_dead", &idx->dbi_dead) < 0 ||
	    fts_lmdb_store_boxes(idx->store, &idx->boxes,
				 &idx->box_count) < 0) {
		i_error("fts-lmdb: Reading %s failed: %s", idx->path,
			fts_lmdb_store_last_error(idx->store));
		return -1;
	}
	return 0;
}

/* ---- stats ---- */

static void fl_stats_row(struct fl_index *idx, const char *type,
			 const char *vname, const char *guid,
			 const struct fts_lmdb_box_rec *rec, uint64_t docs,
			 long long size, uint32_t version)
{
	doveadm_print(type);
	doveadm_print(fl_ns_name(idx->ns));
	doveadm_print(vname);
	doveadm_print(guid);
	doveadm_print_num(rec->box_id);
	doveadm_print_num(rec->uidvalidity);
	doveadm_print_num(docs);
	doveadm_print_num(rec->dead);
	doveadm_print_num(rec->last_uid);
	doveadm_print_num(size < 0 ? 0 : (uintmax_t)size);
	doveadm_print_num(version);
}

static int fl_stats(struct fl_index *idx)
{
	struct fts_lmdb_box_rec total;
	struct fts_lmdb_uids uids = { NULL, 0, 0 };
	struct ldb_txn *txn;
	const char *vname;
	uint64_t all_docs = 0;
	uint32_t version = 0;
	size_t i;
	int ret;

	if (ldb_txn_begin(idx->env, FALSE, &txn) < 0)
		return -1;
	if (ldb_meta_get_u32(txn, FTS_LMDB_META_VERSION, &version) < 0 ||
	    ldb_kv_count(txn, idx->dbi_doc, &all_docs) < 0) {
		ldb_txn_abort(&txn);
		return -1;
	}
	i_zero(&total);
	for (i = 0; i < idx->box_count; i++)
		total.dead += idx->boxes[i].rec.dead;
	if (idx->ctx->mailbox == NULL) {
		fl_stats_row(idx, "namespace", "", "", &total, all_docs,
			     ldb_env_file_size(idx->env), version);
	}
	for (i = 0, ret = 0; i < idx->box_count && ret == 0; i++) {
		const struct fts_lmdb_box_entry *e = &idx->boxes[i];

		vname = fl_vname(idx, e->guid);
		if (idx->ctx->mailbox != NULL &&
		    (vname == NULL || strcmp(vname, idx->ctx->mailbox) != 0))
			continue;
		uids.n = 0;
		ret = fl_box_uids(txn, idx->dbi_doc, e->rec.box_id, &uids);
		fl_stats_row(idx, "mailbox", vname == NULL ? "" : vname,
			     guid_128_to_string(e->guid), &e->rec, uids.n,
			     0, version);
	}
	ldb_txn_abort(&txn);
	fts_lmdb_uids_free(&uids);
	return ret < 0 ? -1 : 0;
}

/* ---- check ---- */

static bool fl_box_id_known(struct fl_index *idx, struct ldb_txn *txn,
			    uint32_t box_id)
{
	const void *data;
	size_t i, size;
	uint8_t key[4];

	for (i = 0; i < idx->box_count; i++) {
		if (idx->boxes[i].rec.box_id == box_id)
			return TRUE;
	}
	put_be32(key, box_id);
	return ldb_kv_get(txn, idx->dbi_dead, key, sizeof(key),
			  &data, &size) > 0;
}

/* Every key of dbi must start with a known (or dropped) box id. */
static int fl_check_box_ids(struct fl_index *idx, struct ldb_txn *txn,
			    unsigned int dbi, const char *dbname)
{
	struct ldb_cursor *cursor;
	const void *key;
	size_t key_size;
	uint8_t next[4];
	uint32_t box_id;
	int ret;

	if ((ret = ldb_cursor_open(txn, dbi, &cursor)) < 0)
		return ret;
	ret = ldb_cursor_get(cursor, LDB_CURSOR_FIRST, &key, &key_size,
			     NULL, NULL);
	while (ret > 0) {
		if (key_size < 4) {
			fl_problem(idx, "", "bad_key",
				   t_strdup_printf("%s: key of %zu bytes",
						   dbname, key_size));
			ret = ldb_cursor_get(cursor, LDB_CURSOR_NEXT, &key,
					     &key_size, NULL, NULL);
			continue;
		}
		box_id = get_be32(key);
		if (!fl_box_id_known(idx, txn, box_id)) {
			fl_problem(idx, "", "unknown_box_id",
				   t_strdup_printf("%s: box id %u", dbname,
						   box_id));
		}
		if (box_id == UINT32_MAX)
			break;
		/* jump to the next box id */
		put_be32(next, box_id + 1);
		key = next;
		key_size = sizeof(next);
		ret = ldb_cursor_get(cursor, LDB_CURSOR_SET_RANGE, &key,
				     &key_size, NULL, NULL);
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? ret : 0;
}

static void fl_check_uids(struct fl_index *idx, const char *vname,
			  const struct fts_lmdb_box_rec *rec,
			  const struct fts_lmdb_uids *uids,
			  const struct fts_lmdb_uids *mbox, const char *what)
{
	size_t i;

	for (i = 0; i < uids->n; i++) {
		if (uids->v[i] > rec->last_uid) {
			fl_problem(idx, vname, "uid_beyond_last_uid",
				   t_strdup_printf("%s UID %u > last UID %u",
						   what, uids->v[i],
						   rec->last_uid));
		}
		if (mbox != NULL && !fts_lmdb_uids_contains(mbox, uids->v[i])) {
			fl_problem(idx, vname, "expunged_uid",
				   t_strdup_printf("%s UID %u is not in the "
						   "mailbox", what,
						   uids->v[i]));
		}
	}
}

static int fl_check_box(struct fl_index *idx, struct ldb_txn *txn,
			const struct fts_lmdb_box_entry *e, const char *vname)
{
	struct fts_lmdb_uids docs = { NULL, 0, 0 }, live = { NULL, 0, 0 };
	struct fts_lmdb_uids mbox = { NULL, 0, 0 };
	struct mailbox_status status;
	struct mailbox *box = NULL;
	const char *name = vname != NULL ? vname :
		guid_128_to_string(e->guid);
	uint32_t seq, count, uid;
	size_t i;
	int ret;

	if ((ret = fl_box_uids(txn, idx->dbi_doc, e->rec.box_id, &docs)) < 0 ||
	    (ret = fl_box_uids(txn, idx->dbi_uid, e->rec.box_id, &live)) < 0)
		goto out;
	for (i = 0; i < docs.n; i++) {
		if (!fts_lmdb_uids_contains(&live, docs.v[i])) {
			fl_problem(idx, name, "doc_without_uid",
				   t_strdup_printf("text of UID %u has no "
						   "fts_uid row", docs.v[i]));
		}
	}
	if (vname == NULL) {
		/* the mailbox is gone: rescan drops its data */
		fl_check_uids(idx, name, &e->rec, &live, NULL, "indexed");
		goto out;
	}
	box = mailbox_alloc(idx->ns->list, vname, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_open(box) < 0 ||
	    mailbox_get_status(box, STATUS_UIDNEXT | STATUS_UIDVALIDITY,
			       &status) < 0) {
		i_error("Opening mailbox %s failed: %s", vname,
			mailbox_get_last_internal_error(box, NULL));
		doveadm_mail_failed_mailbox(&idx->ctx->ctx, box);
		goto out;
	}
	if (status.uidvalidity != e->rec.uidvalidity) {
		/* stale: the next indexing drops it */
		fl_check_uids(idx, name, &e->rec, &live, NULL, "indexed");
		goto out;
	}
	if (e->rec.last_uid >= status.uidnext) {
		fl_problem(idx, name, "last_uid_beyond_uidnext",
			   t_strdup_printf("last UID %u, mailbox UIDNEXT %u",
					   e->rec.last_uid, status.uidnext));
	}
	count = mail_index_view_get_messages_count(box->view);
	fts_lmdb_uids_reserve(&mbox, count);
	for (seq = 1; seq <= count; seq++) {
		mail_index_lookup_uid(box->view, seq, &uid);
		fts_lmdb_uids_push(&mbox, uid);
	}
	fl_check_uids(idx, name, &e->rec, &live, &mbox, "indexed");
out:
	if (box != NULL)
		mailbox_free(&box);
	fts_lmdb_uids_free(&docs);
	fts_lmdb_uids_free(&live);
	fts_lmdb_uids_free(&mbox);
	return ret;
}

static int fl_check(struct fl_index *idx)
{
	struct ldb_txn *txn;
	const char *vname;
	uint32_t version;
	size_t i, j;
	int ret;

	if (ldb_txn_begin(idx->env, FALSE, &txn) < 0)
		return -1;
	ret = ldb_meta_get_u32(txn, FTS_LMDB_META_VERSION, &version);
	if (ret == 0)
		fl_problem(idx, "", "schema_version", "no schema version");
	else if (ret > 0 && version != FTS_LMDB_SCHEMA_VERSION) {
		fl_problem(idx, "", "schema_version",
			   t_strdup_printf("schema version %u, expected %u",
					   version, FTS_LMDB_SCHEMA_VERSION));
	}
	for (i = 0; i < idx->box_count; i++) {
		for (j = 0; j < i; j++) {
			if (idx->boxes[j].rec.box_id ==
			    idx->boxes[i].rec.box_id) {
				fl_problem(idx, "", "duplicate_box_id",
					   t_strdup_printf("box id %u",
						idx->boxes[i].rec.box_id));
			}
		}
	}
	if (ret >= 0 && idx->ctx->mailbox == NULL) {
		if ((ret = fl_check_box_ids(idx, txn, idx->dbi_post,
					    "fts_post")) == 0 &&
		    (ret = fl_check_box_ids(idx, txn, idx->dbi_doc,
					    "fts_doc")) == 0)
			ret = fl_check_box_ids(idx, txn, idx->dbi_uid,
					       "fts_uid");
	}
	for (i = 0; i < idx->box_count && ret >= 0; i++) {
		vname = fl_vname(idx, idx->boxes[i].guid);
		if (idx->ctx->mailbox != NULL &&
		    (vname == NULL || strcmp(vname, idx->ctx->mailbox) != 0))
			continue;
		T_BEGIN {
			ret = fl_check_box(idx, txn, &idx->boxes[i], vname);
		} T_END;
	}
	ldb_txn_abort(&txn);
	return ret < 0 ? -1 : 0;
}

/* ---- the commands ---- */

static bool fl_ns_wanted(const struct mail_namespace *ns)
{
	return ns->type != MAIL_NAMESPACE_TYPE_SHARED &&
		ns->alias_for == NULL && ns->list != NULL;
}

static int fl_run_ns(struct fts_lmdb_cmd_context *ctx,
		     struct mail_namespace *ns)
{
	struct fl_index idx;
	const char *root;
	struct stat st;
	int ret;

	i_zero(&idx);
	idx.ctx = ctx;
	idx.ns = ns;
	if (!mailbox_list_get_root_path(ns->list, MAILBOX_LIST_PATH_TYPE_INDEX,
					&root))
		return 0;
	idx.path = t_strconcat(root, "/"FTS_LMDB_DIR_NAME, NULL);
	if (stat(t_strconcat(idx.path, "/data.mdb", NULL), &st) < 0) {
		if (errno != ENOENT) {
			i_error("stat(%s/data.mdb) failed: %m", idx.path);
			doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
			return -1;
		}
		/* never indexed: don't create an index to report it */
		if (!ctx->check && ctx->mailbox == NULL) {
			struct fts_lmdb_box_rec rec;

			i_zero(&rec);
			fl_stats_row(&idx, "namespace", "", "", &rec, 0, 0, 0);
		}
		return 0;
	}
	fl_mailboxes_get(&idx, ctx->ctx.pool);
	if ((ret = fl_open(&idx)) == 0)
		ret = ctx->check ? fl_check(&idx) : fl_stats(&idx);
	if (ret < 0 && idx.store != NULL) {
		i_error("fts-lmdb: %s failed: %s", idx.path,
			fts_lmdb_store_last_error(idx.store));
	}
	if (ret < 0)
		doveadm_mail_failed_error(&ctx->ctx, MAIL_ERROR_TEMP);
	free(idx.boxes);
	fts_lmdb_store_close(&idx.store);
	return ret;
}

static int cmd_fts_lmdb_run(struct doveadm_mail_cmd_context *_ctx,
			    struct mail_user *user)
{
	struct fts_lmdb_cmd_context *ctx =
		container_of(_ctx, struct fts_lmdb_cmd_context, ctx);
	struct mail_namespace *ns;
	int ret = 0, ret2;

	ctx->problems = 0;
	for (ns = user->namespaces; ns != NULL; ns = ns->next) {
		if (!fl_ns_wanted(ns))
			continue;
		T_BEGIN {
			ret2 = fl_run_ns(ctx, ns);
		} T_END;
		if (ret2 < 0)
			ret = -1;
	}
	if (ctx->problems > 0 && _ctx->exit_code == 0)
		_ctx->exit_code = EX_DATAERR;
	return ret;
}

static void cmd_fts_lmdb_init(struct doveadm_mail_cmd_context *_ctx,
			      const char *const args[])
{
	static const char *const num_fields[] = {
		"box_id", "uidvalidity", "documents", "dead_uids", "last_uid",
		"index_size", "schema_version",
	};
	struct fts_lmdb_cmd_context *ctx =
		container_of(_ctx, struct fts_lmdb_cmd_context, ctx);
	unsigned int i;

	if (args[0] != NULL && args[1] != NULL) {
		doveadm_mail_help_name(ctx->check ? "fts-lmdb check" :
				       "fts-lmdb stats");
	}
	ctx->mailbox = p_strdup(_ctx->pool, args[0]);
	if (ctx->check) {
		doveadm_print_header_simple("namespace");
		doveadm_print_header_simple("mailbox");
		doveadm_print_header_simple("problem");
		doveadm_print_header("detail", "detail",
				     DOVEADM_PRINT_HEADER_FLAG_EXPAND);
		return;
	}
	doveadm_print_header_simple("type");
	doveadm_print_header_simple("namespace");
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("guid");
	for (i = 0; i < N_ELEMENTS(num_fields); i++) {
		doveadm_print_header(num_fields[i], num_fields[i],
				     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
				     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	}
}

static struct doveadm_mail_cmd_context *cmd_fts_lmdb_alloc(bool check)
{
	struct fts_lmdb_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct fts_lmdb_cmd_context);
	ctx->check = check;
	ctx->ctx.v.init = cmd_fts_lmdb_init;
	ctx->ctx.v.run = cmd_fts_lmdb_run;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	return &ctx->ctx;
}

static struct doveadm_mail_cmd_context *cmd_fts_lmdb_stats_alloc(void)
{
	return cmd_fts_lmdb_alloc(FALSE);
}

static struct doveadm_mail_cmd_context *cmd_fts_lmdb_check_alloc(void)
{
	return cmd_fts_lmdb_alloc(TRUE);
}

static struct doveadm_cmd_ver2 doveadm_cmd_fts_lmdb_stats = {
	.name = "fts-lmdb stats",
	.mail_cmd = cmd_fts_lmdb_stats_alloc,
	.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "[<mailbox>]",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('\0', "mailbox", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
};

static struct doveadm_cmd_ver2 doveadm_cmd_fts_lmdb_check = {
	.name = "fts-lmdb check",
	.mail_cmd = cmd_fts_lmdb_check_alloc,
	.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX "[<mailbox>]",
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAM('\0', "mailbox", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
};

void doveadm_fts_lmdb_plugin_init(struct module *module ATTR_UNUSED)
{
	doveadm_cmd_register_ver2(&doveadm_cmd_fts_lmdb_stats);
	doveadm_cmd_register_ver2(&doveadm_cmd_fts_lmdb_check);
}

void doveadm_fts_lmdb_plugin_deinit(void)
{
}
