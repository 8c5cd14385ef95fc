/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* doveadm lmdb stats, and what every doveadm lmdb command shares: finding
   a user's LMDB environments and the mailboxes that live in them. */

#include "lib.h"
#include "array.h"
#include "module-dir.h"
#include "mail-namespace.h"
#include "mailbox-list-iter.h"
#include "doveadm-print.h"
#include "doveadm-lmdb.h"

#include <sys/stat.h>

const char *doveadm_lmdb_plugin_version = DOVECOT_ABI_VERSION;

static bool doveadm_lmdb_ns_wanted(const struct mail_namespace *ns)
{
	return ns->type != MAIL_NAMESPACE_TYPE_SHARED &&
		ns->alias_for == NULL && ns->storage != NULL &&
		strcmp(ns->storage->name, LMDB_STORAGE_NAME) == 0;
}

void doveadm_lmdb_roots_get(struct mail_user *user, pool_t pool,
			    ARRAY_TYPE(doveadm_lmdb_root) *roots_r)
{
	struct mail_namespace *ns;
	struct doveadm_lmdb_root *root, *roots;
	struct lmdb_storage *storage;
	unsigned int i, count;

	p_array_init(roots_r, pool, 2);
	for (ns = user->namespaces; ns != NULL; ns = ns->next) {
		if (!doveadm_lmdb_ns_wanted(ns))
			continue;
		storage = LMDB_STORAGE(ns->storage);
		roots = array_get_modifiable(roots_r, &count);
		for (i = 0; i < count; i++) {
			if (roots[i].storage == storage)
				break;
		}
		root = i < count ? &roots[i] : NULL;
		if (root == NULL) {
			root = array_append_space(roots_r);
			root->storage = storage;
			p_array_init(&root->namespaces, pool, 2);
		}
		array_push_back(&root->namespaces, &ns);
	}
}

int doveadm_lmdb_roots_get_or_fail(struct doveadm_mail_cmd_context *ctx,
				   struct mail_user *user, pool_t pool,
				   ARRAY_TYPE(doveadm_lmdb_root) *roots_r)
{
	doveadm_lmdb_roots_get(user, pool, roots_r);
	if (array_count(roots_r) > 0)
		return 0;
	i_error("User %s has no lmdb mailboxes (mail_location is not lmdb:)",
		user->username);
	doveadm_mail_failed_error(ctx, MAIL_ERROR_NOTFOUND);
	return -1;
}

static int doveadm_lmdb_mailbox_cmp(const struct doveadm_lmdb_mailbox *m1,
				    const struct doveadm_lmdb_mailbox *m2)
{
	return memcmp(m1->guid, m2->guid, sizeof(m1->guid));
}

static void doveadm_lmdb_mailbox_add(struct mail_namespace *ns,
				     const char *vname, pool_t pool,
				     ARRAY_TYPE(doveadm_lmdb_mailbox) *mailboxes,
				     unsigned int *failed_r)
{
	struct doveadm_lmdb_mailbox *mbox;
	struct mailbox_metadata metadata;
	struct mailbox *box;

	box = mailbox_alloc(ns->list, vname, MAILBOX_FLAG_IGNORE_ACLS);
	if (mailbox_get_metadata(box, MAILBOX_METADATA_GUID, &metadata) < 0) {
		i_error("Opening mailbox %s failed: %s", vname,
			mailbox_get_last_internal_error(box, NULL));
		(*failed_r)++;
	} else {
		mbox = array_append_space(mailboxes);
		mbox->vname = p_strdup(pool, vname);
		mbox->ns = ns;
		memcpy(mbox->guid, metadata.guid, sizeof(mbox->guid));
	}
	mailbox_free(&box);
}

void doveadm_lmdb_mailboxes_get(const struct doveadm_lmdb_root *root,
				pool_t pool,
				ARRAY_TYPE(doveadm_lmdb_mailbox) *mailboxes_r,
				unsigned int *failed_r)
{
	const enum mailbox_list_iter_flags iter_flags =
		MAILBOX_LIST_ITER_RAW_LIST | MAILBOX_LIST_ITER_NO_AUTO_BOXES |
		MAILBOX_LIST_ITER_SKIP_ALIASES;
	struct mailbox_list_iterate_context *iter;
	const struct mailbox_info *info;
	struct mail_namespace *ns;

	*failed_r = 0;
	p_array_init(mailboxes_r, pool, 16);
	array_foreach_elem(&root->namespaces, ns) {
		iter = mailbox_list_iter_init(ns->list, "*", iter_flags);
		while ((info = mailbox_list_iter_next(iter)) != NULL) {
			if ((info->flags & (MAILBOX_NOSELECT |
					    MAILBOX_NONEXISTENT)) != 0)
				continue;
			T_BEGIN {
				doveadm_lmdb_mailbox_add(ns, info->vname, pool,
							 mailboxes_r, failed_r);
			} T_END;
		}
		if (mailbox_list_iter_deinit(&iter) < 0) {
			i_error("Listing mailboxes failed: %s",
				mailbox_list_get_last_internal_error(ns->list,
								     NULL));
			(*failed_r)++;
		}
	}
	array_sort(mailboxes_r, doveadm_lmdb_mailbox_cmp);
}

const struct doveadm_lmdb_mailbox *
doveadm_lmdb_mailbox_find(const ARRAY_TYPE(doveadm_lmdb_mailbox) *mailboxes,
			  const uint8_t guid[LDB_GUID_SIZE])
{
	const struct doveadm_lmdb_mailbox *boxes;
	unsigned int lo = 0, hi, mid;
	int cmp;

	boxes = array_get(mailboxes, &hi);
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		cmp = memcmp(boxes[mid].guid, guid, GUID_128_SIZE);
		if (cmp == 0)
			return &boxes[mid];
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

bool doveadm_lmdb_root_has_db(const struct doveadm_lmdb_root *root)
{
	const char *path;
	struct stat st;

	path = t_strconcat(root->storage->env_path, "/data.mdb", NULL);
	return stat(path, &st) == 0 || errno != ENOENT;
}

int doveadm_lmdb_root_env(struct doveadm_mail_cmd_context *ctx,
			  const struct doveadm_lmdb_root *root,
			  struct ldb_env **env_r)
{
	struct mail_storage *storage = &root->storage->storage;

	if (lmdb_storage_get_env(root->storage, env_r) < 0) {
		i_error("Opening %s failed: %s", root->storage->env_path,
			mail_storage_get_last_internal_error(storage, NULL));
		doveadm_mail_failed_storage(ctx, storage);
		return -1;
	}
	return 0;
}

void doveadm_lmdb_failed_ldb(struct doveadm_mail_cmd_context *ctx,
			     struct ldb_env *env, const char *what)
{
	i_error("lmdb: %s failed: %s", what, ldb_env_last_error(env));
	doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
}

/* ---- doveadm lmdb stats ---- */

struct lmdb_stats_counts {
	uint64_t messages, bodies, bytes_referenced, bytes_stored;
};

struct lmdb_hash {
	uint8_t hash[LDB_HASH_SIZE];
};
ARRAY_DEFINE_TYPE(lmdb_hash, struct lmdb_hash);

static int lmdb_hash_cmp(const struct lmdb_hash *h1,
			 const struct lmdb_hash *h2)
{
	return memcmp(h1->hash, h2->hash, sizeof(h1->hash));
}

/* One mailbox: its records, and the distinct bodies they reference. */
static int lmdb_stats_mailbox(struct ldb_txn *txn,
			      const uint8_t guid[LDB_GUID_SIZE],
			      struct lmdb_stats_counts *counts_r)
{
	ARRAY_TYPE(lmdb_hash) hashes;
	const struct lmdb_hash *h, *prev = NULL;
	struct ldb_msg_iter *iter;
	struct ldb_msg_rec rec;
	struct ldb_body_info info;
	uint32_t uid;
	int ret;

	i_zero(counts_r);
	t_array_init(&hashes, 64);
	iter = ldb_msg_iter_init(txn, guid, 1);
	while ((ret = ldb_msg_iter_next(iter, &uid, &rec)) > 0) {
		counts_r->messages++;
		counts_r->bytes_referenced += rec.physical_size;
		h = array_append_space(&hashes);
		memcpy((void *)h->hash, rec.body_hash, LDB_HASH_SIZE);
	}
	if (ldb_msg_iter_deinit(&iter) < 0 || ret < 0)
		return -1;
	array_sort(&hashes, lmdb_hash_cmp);
	array_foreach(&hashes, h) {
		if (prev != NULL && lmdb_hash_cmp(prev, h) == 0)
			continue;
		prev = h;
		if ((ret = ldb_body_get_info(txn, h->hash, &info)) < 0)
			return -1;
		if (ret > 0) {
			counts_r->bodies++;
			counts_r->bytes_stored += info.size;
		}
	}
	return 0;
}

/* The whole environment: every record and every body. */
static int lmdb_stats_env(struct ldb_txn *txn, unsigned int msg_dbi,
			  unsigned int body_dbi,
			  struct lmdb_stats_counts *counts_r)
{
	struct ldb_cursor *cursor;
	struct ldb_msg_rec rec;
	struct ldb_body_info info;
	enum ldb_cursor_op op = LDB_CURSOR_FIRST;
	const void *key, *data;
	size_t key_size, size;
	int ret;

	i_zero(counts_r);
	if (ldb_cursor_open(txn, msg_dbi, &cursor) < 0)
		return -1;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		op = LDB_CURSOR_NEXT;
		counts_r->messages++;
		if (ldb_msg_rec_decode(data, size, &rec) == 0)
			counts_r->bytes_referenced += rec.physical_size;
	}
	ldb_cursor_close(&cursor);
	if (ret < 0 || ldb_cursor_open(txn, body_dbi, &cursor) < 0)
		return -1;
	op = LDB_CURSOR_FIRST;
	while ((ret = ldb_cursor_get(cursor, op, &key, &key_size,
				     &data, &size)) > 0) {
		op = LDB_CURSOR_NEXT;
		counts_r->bodies++;
		if (ldb_body_info_decode(data, size, &info) == 0)
			counts_r->bytes_stored += info.size;
	}
	ldb_cursor_close(&cursor);
	return ret < 0 ? -1 : 0;
}

static void lmdb_stats_print(const char *type, const char *vname,
			     const char *guid,
			     const struct lmdb_stats_counts *counts,
			     const struct ldb_env_stat *st, long long file_size)
{
	uint64_t used = (st->pages_total - st->pages_free) * st->page_size;

	doveadm_print(type);
	doveadm_print(vname);
	doveadm_print(guid);
	doveadm_print_num(counts->messages);
	doveadm_print_num(counts->bodies);
	doveadm_print_num(counts->bytes_referenced);
	doveadm_print_num(counts->bytes_stored);
	doveadm_print_num(counts->bytes_referenced > counts->bytes_stored ?
			  counts->bytes_referenced - counts->bytes_stored : 0);
	doveadm_print_num(file_size < 0 ? 0 : (uintmax_t)file_size);
	doveadm_print_num(used);
	doveadm_print_num(st->pages_free * st->page_size);
	doveadm_print_num(st->map_size);
	doveadm_print_num(st->readers);
	doveadm_print_num(st->processes);
	doveadm_print_num(st->schema_version);
}

static int lmdb_stats_mailboxes(struct ldb_env *env,
				const ARRAY_TYPE(doveadm_lmdb_mailbox) *boxes,
				const struct ldb_env_stat *st,
				long long file_size)
{
	const struct doveadm_lmdb_mailbox *mbox;
	struct lmdb_stats_counts counts;
	struct ldb_txn *txn;
	int ret = 0;

	/* one short read transaction per mailbox */
	array_foreach(boxes, mbox) {
		if (ldb_txn_begin(env, FALSE, &txn) < 0)
			return -1;
		T_BEGIN {
			ret = lmdb_stats_mailbox(txn, mbox->guid, &counts);
		} T_END;
		ldb_txn_abort(&txn);
		if (ret < 0)
			return -1;
		lmdb_stats_print("mailbox", mbox->vname,
				 guid_128_to_string(mbox->guid), &counts,
				 st, file_size);
	}
	return 0;
}

static int lmdb_stats_root(struct doveadm_mail_cmd_context *ctx,
			   const struct doveadm_lmdb_root *root)
{
	ARRAY_TYPE(doveadm_lmdb_mailbox) boxes;
	struct lmdb_stats_counts counts;
	struct ldb_env_stat st;
	struct ldb_env *env;
	struct ldb_txn *txn;
	unsigned int msg_dbi, body_dbi, failed;
	long long file_size;
	int ret;

	if (!doveadm_lmdb_root_has_db(root)) {
		/* never stored mail: don't create a database to report it */
		i_zero(&counts);
		i_zero(&st);
		lmdb_stats_print("user", "", "", &counts, &st, 0);
		return 0;
	}
	doveadm_lmdb_mailboxes_get(root, ctx->pool, &boxes, &failed);
	if (failed > 0)
		doveadm_mail_failed_error(ctx, MAIL_ERROR_TEMP);
	if (doveadm_lmdb_root_env(ctx, root, &env) < 0)
		return -1;
	if (ldb_dbi_open(env, LDB_DB_MSG, &msg_dbi) < 0 ||
	    ldb_dbi_open(env, LDB_DB_BODY, &body_dbi) < 0 ||
	    ldb_env_get_stat(env, &st) < 0 ||
	    ldb_txn_begin(env, FALSE, &txn) < 0) {
		doveadm_lmdb_failed_ldb(ctx, env, "stats");
		return -1;
	}
	ret = lmdb_stats_env(txn, msg_dbi, body_dbi, &counts);
	ldb_txn_abort(&txn);
	file_size = ldb_env_file_size(env);
	if (ret == 0) {
		lmdb_stats_print("user", "", "", &counts, &st, file_size);
		ret = lmdb_stats_mailboxes(env, &boxes, &st, file_size);
	}
	if (ret < 0) {
		doveadm_lmdb_failed_ldb(ctx, env, "stats");
		return -1;
	}
	return 0;
}

static int cmd_lmdb_stats_run(struct doveadm_mail_cmd_context *ctx,
			      struct mail_user *user)
{
	ARRAY_TYPE(doveadm_lmdb_root) roots;
	const struct doveadm_lmdb_root *root;
	int ret = 0;

	if (doveadm_lmdb_roots_get_or_fail(ctx, user, ctx->pool, &roots) < 0)
		return -1;
	array_foreach(&roots, root) {
		if (lmdb_stats_root(ctx, root) < 0)
			ret = -1;
	}
	return ret;
}

static void cmd_lmdb_stats_init(struct doveadm_mail_cmd_context *ctx
				ATTR_UNUSED, const char *const args[])
{
	static const char *const num_fields[] = {
		"messages", "bodies", "bytes_referenced", "bytes_stored",
		"dedup_saved", "file_size", "used_bytes", "free_bytes",
		"map_size", "readers", "processes", "schema_version",
	};
	unsigned int i;

	if (args[0] != NULL)
		doveadm_mail_help_name("lmdb stats");
	doveadm_print_header_simple("type");
	doveadm_print_header_simple("mailbox");
	doveadm_print_header_simple("guid");
	for (i = 0; i < N_ELEMENTS(num_fields); i++) {
		doveadm_print_header(num_fields[i], num_fields[i],
				     DOVEADM_PRINT_HEADER_FLAG_NUMBER |
				     DOVEADM_PRINT_HEADER_FLAG_RIGHT_JUSTIFY);
	}
}

static struct doveadm_mail_cmd_context *cmd_lmdb_stats_alloc(void)
{
	struct doveadm_mail_cmd_context *ctx;

	ctx = doveadm_mail_cmd_alloc(struct doveadm_mail_cmd_context);
	ctx->v.init = cmd_lmdb_stats_init;
	ctx->v.run = cmd_lmdb_stats_run;
	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	return ctx;
}

struct doveadm_cmd_ver2 doveadm_cmd_lmdb_stats = {
	.name = "lmdb stats",
	.mail_cmd = cmd_lmdb_stats_alloc,
	.usage = DOVEADM_CMD_MAIL_USAGE_PREFIX,
DOVEADM_CMD_PARAMS_START
DOVEADM_CMD_MAIL_COMMON
DOVEADM_CMD_PARAMS_END
};

void doveadm_lmdb_plugin_init(struct module *module ATTR_UNUSED)
{
	doveadm_cmd_register_ver2(&doveadm_cmd_lmdb_stats);
	doveadm_cmd_register_ver2(&doveadm_cmd_lmdb_check);
	doveadm_cmd_register_ver2(&doveadm_cmd_lmdb_compact);
	doveadm_cmd_register_ver2(&doveadm_cmd_lmdb_backup);
}

void doveadm_lmdb_plugin_deinit(void)
{
}
