/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "mkdir-parents.h"
#include "write-full.h"
#include "settings-parser.h"
#include "mail-index-modseq.h"
#include "mailbox-list-private.h"
#include "mailbox-uidvalidity.h"
#include "mail-copy.h"
#include "index-pop3-uidl.h"
#include "mail-index-transaction-private.h"
#include "lmdb-storage.h"
#include "lmdb-settings.h"
#include "mailbox-watch.h"
#include "time-util.h"
#include "hostpid.h"

#include <stdio.h>

struct event_category event_category_lmdb = {
	.name = "lmdb",
	.parent = &event_category_storage,
};

extern struct mailbox lmdb_mailbox;

static struct mail_storage *lmdb_storage_alloc(void)
{
	struct lmdb_storage *storage;
	pool_t pool;

	pool = pool_alloconly_create("lmdb storage", 1024);
	storage = p_new(pool, struct lmdb_storage, 1);
	storage->storage = lmdb_storage;
	storage->storage.pool = pool;
	return &storage->storage;
}

static int
lmdb_get_size_setting(struct mail_user *user, const char *name,
		      size_t *value, const char **error_r)
{
	const char *str = mail_user_plugin_getenv(user, name);

	if (str == NULL || *str == '\0')
		return 0;
	return lmdb_settings_parse_size(name, str, value, error_r);
}

static int
lmdb_get_time_setting(struct mail_user *user, const char *name,
		      unsigned int *msecs, const char **error_r)
{
	const char *str, *error;

	str = mail_user_plugin_getenv(user, name);
	if (str == NULL || *str == '\0')
		return 0;
	if (settings_get_time_msecs(str, msecs, &error) < 0) {
		*error_r = t_strdup_printf("plugin { %s = %s }: %s",
					   name, str, error);
		return -1;
	}
	return 0;
}

static int
lmdb_storage_create(struct mail_storage *_storage, struct mail_namespace *ns,
		    const char **error_r)
{
	struct lmdb_storage *storage = LMDB_STORAGE(_storage);
	const char *root;

	ldb_settings_default(&storage->ldb_set);
	if (lmdb_get_size_setting(_storage->user, LMDB_SET_MAP_SIZE,
				  &storage->ldb_set.initial_map_size,
				  error_r) < 0 ||
	    lmdb_get_size_setting(_storage->user, LMDB_SET_MAX_SIZE,
				  &storage->ldb_set.max_map_size,
				  error_r) < 0 ||
	    lmdb_get_time_setting(_storage->user, LMDB_SET_LOCK_TIMEOUT,
				  &storage->ldb_set.lock_timeout_msecs,
				  error_r) < 0)
		return -1;
	if (storage->ldb_set.max_map_size < storage->ldb_set.initial_map_size)
		storage->ldb_set.initial_map_size = storage->ldb_set.max_map_size;
	storage->ldb_set.nosync =
		_storage->set->parsed_fsync_mode == FSYNC_MODE_NEVER;

	storage->list = ns->list;
	/* one storage (and LMDB environment) per root: without this, a second
	   lmdb namespace (lazy_expunge, public, ...) would share the first
	   one's storage and write its mail into the first root's LMDB */
	_storage->unique_root_dir =
		p_strdup(_storage->pool, ns->list->set.root_dir);
	root = mailbox_list_get_root_forced(ns->list, MAILBOX_LIST_PATH_TYPE_DIR);
	storage->env_path = p_strconcat(_storage->pool, root,
					"/"LDB_DIR_NAME, NULL);
	return 0;
}

static void lmdb_storage_destroy(struct mail_storage *_storage)
{
	struct lmdb_storage *storage = LMDB_STORAGE(_storage);

	if (storage->env != NULL) {
		ldb_env_set_map_grow_callback(storage->env, NULL, storage);
		ldb_env_unref(&storage->env);
	}
	index_storage_destroy(_storage);
}

/* A full filesystem is temporary and not the user's doing: LMTP answers
   451 and the MTA retries, instead of bouncing as for a quota (552), and
   IMAP says [UNAVAILABLE].  Stock maildir tempfails ENOSPC too.  A
   filesystem quota (EDQUOT) is the user's quota, as Dovecot treats it. */
static void lmdb_storage_set_space_error(struct mail_storage *storage, int ret)
{
	if (ret == LDB_ERR_QUOTA) {
		mail_storage_set_error(storage, MAIL_ERROR_NOQUOTA,
				       MAIL_ERRSTR_NO_QUOTA);
	} else {
		mail_storage_set_error(storage, MAIL_ERROR_UNAVAILABLE,
				       "Not enough disk space");
	}
}

long long lmdb_event_msecs(struct event *event)
{
	struct timeval created, now;

	event_get_create_time(event, &created);
	i_gettimeofday(&now);
	return timeval_diff_msecs(&now, &created);
}

/* The ldb layer tells us when the map grew; it never logs itself. */
static void lmdb_storage_map_grown(void *context, const char *path,
				   size_t old_size, size_t new_size,
				   bool adopted)
{
	struct lmdb_storage *storage = context;
	struct event_passthrough *e =
		event_create_passthrough(storage->storage.event)->
		set_name("lmdb_map_grow")->
		add_str("path", path)->
		add_int("old_size", old_size)->
		add_int("new_size", new_size)->
		add_str("reason", adopted ? "adopted" : "full");

	if (adopted) {
		e_debug(e->event(), "lmdb: Map of %s adopted from another "
			"process: %zu -> %zu bytes", path, old_size, new_size);
	} else {
		e_debug(e->event(), "lmdb: Map of %s was full, grown: "
			"%zu -> %zu bytes", path, old_size, new_size);
	}
}

int lmdb_storage_get_env(struct lmdb_storage *storage, struct ldb_env **env_r)
{
	struct mail_storage *_storage = &storage->storage;
	struct mailbox_list *list = storage->list;
	struct mailbox_permissions perm;
	const char *root, *error;
	int ret;

	if (storage->env != NULL) {
		*env_r = storage->env;
		return 0;
	}
	root = mailbox_list_get_root_forced(list, MAILBOX_LIST_PATH_TYPE_DIR);
	if (mailbox_list_mkdir_root(list, root, MAILBOX_LIST_PATH_TYPE_DIR) < 0) {
		mail_storage_copy_list_error(_storage, list);
		return -1;
	}
	mailbox_list_get_root_permissions(list, &perm);
	storage->ldb_set.file_mode = perm.file_create_mode;
	ret = ldb_env_open(storage->env_path, &storage->ldb_set,
			   &storage->env, &error);
	if (ret < 0) {
		if (ret == LDB_ERR_NOSPACE || ret == LDB_ERR_QUOTA) {
			lmdb_storage_set_space_error(_storage, ret);
		} else if (ret == LDB_ERR_LOCKED) {
			/* doveadm lmdb compact is running: temporary
			   (IMAP [INUSE], LMTP 451) */
			e_warning(_storage->event, "lmdb: %s", error);
			mail_storage_set_error(_storage, MAIL_ERROR_INUSE,
				"Mailbox database is being compacted, "
				"try again later");
		} else {
			mail_storage_set_critical(_storage, "lmdb: %s", error);
		}
		return -1;
	}
	ldb_env_set_map_grow_callback(storage->env, lmdb_storage_map_grown,
				      storage);
	e_debug(event_create_passthrough(_storage->event)->
		set_name("lmdb_env_open")->
		add_str("path", storage->env_path)->
		add_int("map_size", ldb_env_map_size(storage->env))->
		add_int("file_size", ldb_env_file_size(storage->env))->event(),
		"lmdb: Opened %s (map %zu bytes, file %lld bytes)",
		storage->env_path, ldb_env_map_size(storage->env),
		ldb_env_file_size(storage->env));
	*env_r = storage->env;
	return 0;
}

void lmdb_mailbox_set_ldb_error(struct mailbox *box, int ret,
				const char *func)
{
	struct lmdb_storage *storage = LMDB_STORAGE(box->storage);
	const char *error = storage->env == NULL ? "no environment" :
		ldb_env_last_error(storage->env);

	switch (ret) {
	case LDB_ERR_MAP_FULL:
		e_error(box->event, "lmdb: %s: %s", func, error);
		mail_storage_set_error(box->storage, MAIL_ERROR_NOQUOTA,
			"Mailbox database is full (lmdb_max_size)");
		break;
	case LDB_ERR_NOSPACE:
	case LDB_ERR_QUOTA:
		e_error(box->event, "lmdb: %s: %s", func, error);
		lmdb_storage_set_space_error(box->storage, ret);
		break;
	default:
		mailbox_set_critical(box, "lmdb: %s: %s", func, error);
		break;
	}
}

static int lmdb_storage_purge_fn(struct ldb_txn *txn, void *context)
{
	int *count_r = context;
	int ret;

	if ((ret = ldb_body_purge_unreferenced(txn)) < 0)
		return ret;
	*count_r = ret;
	return 0;
}

/* doveadm purge: free bodies that no message references any more.  Normal
   expunges free them at once; this sweeps what a bug or an older version
   could have left behind. */
static int lmdb_storage_purge(struct mail_storage *_storage)
{
	struct lmdb_storage *storage = LMDB_STORAGE(_storage);
	struct ldb_env *env;
	int ret, count = 0;

	if (lmdb_storage_get_env(storage, &env) < 0)
		return -1;
	if ((ret = ldb_write(env, lmdb_storage_purge_fn, &count)) < 0) {
		mail_storage_set_critical(_storage, "lmdb: purge: %s",
					  ldb_env_last_error(env));
		return -1;
	}
	e_debug(event_create_passthrough(_storage->event)->
		set_name("lmdb_purge")->
		add_int("bodies_removed", count)->event(),
		"lmdb: purge removed %d unreferenced bodies", count);
	return 0;
}

static void
lmdb_storage_get_list_settings(const struct mail_namespace *ns ATTR_UNUSED,
			       struct mailbox_list_settings *set)
{
	if (set->layout == NULL)
		set->layout = MAILBOX_LIST_NAME_FS;
	if (set->subscription_fname == NULL)
		set->subscription_fname = LMDB_SUBSCRIPTION_FILE_NAME;
	if (*set->maildir_name == '\0')
		set->maildir_name = LMDB_MAILDIR_NAME;
	if (*set->mailbox_dir_name == '\0')
		set->mailbox_dir_name = LMDB_MAILBOX_DIR_NAME;
}

static struct mailbox *
lmdb_mailbox_alloc(struct mail_storage *storage, struct mailbox_list *list,
		   const char *vname, enum mailbox_flags flags)
{
	struct lmdb_mailbox *mbox;
	struct index_mailbox_context *ibox;
	pool_t pool;

	/* lmdb keeps Dovecot's index as its fast state */
	flags &= ENUM_NEGATE(MAILBOX_FLAG_NO_INDEX_FILES);

	pool = pool_alloconly_create("lmdb mailbox", 1024*3);
	mbox = p_new(pool, struct lmdb_mailbox, 1);
	mbox->box = lmdb_mailbox;
	mbox->box.pool = pool;
	mbox->box.storage = storage;
	mbox->box.list = list;
	mbox->box.mail_vfuncs = &lmdb_mail_vfuncs;

	index_storage_mailbox_alloc(&mbox->box, vname, flags, MAIL_INDEX_PREFIX);

	ibox = INDEX_STORAGE_CONTEXT(&mbox->box);
	ibox->index_flags |= MAIL_INDEX_OPEN_FLAG_KEEP_BACKUPS |
		MAIL_INDEX_OPEN_FLAG_NEVER_IN_MEMORY;

	mbox->storage = LMDB_STORAGE(storage);
	p_array_init(&mbox->lost_uids, pool, 4);
	return &mbox->box;
}

int lmdb_read_header(struct lmdb_mailbox *mbox, struct lmdb_index_header *hdr,
		     bool log_error, bool *need_resize_r)
{
	struct mail_index_view *view;
	const void *data;
	size_t data_size;
	int ret = 0;

	i_assert(mbox->box.opened);

	view = mail_index_view_open(mbox->box.index);
	mail_index_get_header_ext(view, mbox->hdr_ext_id, &data, &data_size);
	if (data_size < LMDB_INDEX_HEADER_MIN_SIZE &&
	    (!mbox->box.creating || data_size != 0)) {
		if (log_error) {
			mailbox_set_critical(&mbox->box,
				"lmdb: Invalid lmdb header size");
		}
		ret = -1;
	} else {
		i_zero(hdr);
		memcpy(hdr, data, I_MIN(data_size, sizeof(*hdr)));
		if (guid_128_is_empty(hdr->mailbox_guid))
			ret = -1;
		else {
			/* data is valid. remember it in case mailbox
			   is being reset */
			mail_index_set_ext_init_data(mbox->box.index,
						     mbox->hdr_ext_id,
						     hdr, sizeof(*hdr));
		}
	}
	mail_index_view_close(&view);
	*need_resize_r = data_size < sizeof(*hdr);
	return ret;
}

bool lmdb_header_have_flag(struct mailbox *box, uint8_t flag)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	const void *data;
	size_t data_size;
	uint8_t flags = 0;
	unsigned int offset = offsetof(struct lmdb_index_header, flags);

	mail_index_get_header_ext(box->view, mbox->hdr_ext_id,
				  &data, &data_size);
	if (offset < data_size)
		flags = *((const uint8_t *)data + offset);
	return (flags & flag) != 0;
}

int lmdb_mailbox_guid_file_read(struct lmdb_mailbox *mbox, guid_128_t guid_r)
{
	const char *path;
	char buf[GUID_128_SIZE * 2 + 2];
	ssize_t ret;
	int fd;

	path = t_strconcat(mailbox_get_path(&mbox->box),
			   "/"LMDB_GUID_FILE_NAME, NULL);
	fd = open(path, O_RDONLY);
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		mailbox_set_critical(&mbox->box, "open(%s) failed: %m", path);
		return -1;
	}
	ret = read(fd, buf, sizeof(buf) - 1);
	i_close_fd(&fd);
	if (ret < 0) {
		mailbox_set_critical(&mbox->box, "read(%s) failed: %m", path);
		return -1;
	}
	buf[ret] = '\0';
	if (ret > 0 && buf[ret-1] == '\n')
		buf[ret-1] = '\0';
	if (guid_128_from_string(buf, guid_r) < 0 ||
	    guid_128_is_empty(guid_r)) {
		e_error(mbox->box.event, "lmdb: %s is corrupted: ignoring it",
			path);
		return 0;
	}
	return 1;
}

int lmdb_mailbox_guid_file_write(struct lmdb_mailbox *mbox,
				 const guid_128_t guid)
{
	const struct mailbox_permissions *perm;
	const char *path, *temp_path, *data;
	mode_t old_mask;
	int fd;

	path = t_strconcat(mailbox_get_path(&mbox->box),
			   "/"LMDB_GUID_FILE_NAME, NULL);
	/* a temp file of our own: two processes may write it at once (dsync
	   and an imap session), and a shared name let one rename the
	   other's file away or publish it half written */
	temp_path = t_strdup_printf("%s.%s.%s.tmp", path, my_hostname, my_pid);
	data = t_strconcat(guid_128_to_string(guid), "\n", NULL);
	perm = mailbox_get_permissions(&mbox->box);
	/* the mailbox's file mode and group, as its index files get */
	old_mask = umask(0);
	fd = open(temp_path, O_WRONLY | O_CREAT | O_TRUNC,
		  perm->file_create_mode);
	umask(old_mask);
	if (fd != -1 && perm->file_create_gid != (gid_t)-1 &&
	    fchown(fd, (uid_t)-1, perm->file_create_gid) < 0) {
		mailbox_set_critical(&mbox->box, "fchown(%s, -1, %ld) failed: "
				     "%m", temp_path,
				     (long)perm->file_create_gid);
		i_close_fd(&fd);
		i_unlink(temp_path);
		return -1;
	}
	if (fd == -1) {
		mailbox_set_critical(&mbox->box, "open(%s) failed: %m",
				     temp_path);
		return -1;
	}
	if (write_full(fd, data, strlen(data)) < 0 ||
	    (mbox->box.storage->set->parsed_fsync_mode != FSYNC_MODE_NEVER &&
	     fdatasync(fd) < 0)) {
		mailbox_set_critical(&mbox->box, "write(%s) failed: %m",
				     temp_path);
		i_close_fd(&fd);
		i_unlink(temp_path);
		return -1;
	}
	i_close_fd(&fd);
	if (rename(temp_path, path) < 0) {
		mailbox_set_critical(&mbox->box, "rename(%s, %s) failed: %m",
				     temp_path, path);
		i_unlink(temp_path);
		return -1;
	}
	return 0;
}

static void lmdb_update_header(struct lmdb_mailbox *mbox,
			       struct mail_index_transaction *trans,
			       const struct mailbox_update *update)
{
	struct lmdb_index_header hdr, new_hdr;
	bool need_resize;

	if (lmdb_read_header(mbox, &hdr, TRUE, &need_resize) < 0) {
		i_zero(&hdr);
		need_resize = TRUE;
	}

	new_hdr = hdr;
	if (update != NULL && !guid_128_is_empty(update->mailbox_guid)) {
		memcpy(new_hdr.mailbox_guid, update->mailbox_guid,
		       sizeof(new_hdr.mailbox_guid));
	} else if (guid_128_is_empty(new_hdr.mailbox_guid)) {
		/* a lost index: the GUID file still knows the mailbox */
		if (lmdb_mailbox_guid_file_read(mbox, new_hdr.mailbox_guid) <= 0)
			guid_128_generate(new_hdr.mailbox_guid);
	}
	/* The index header usually has its GUID already (the ext init data
	   written with a new log), so compare with the file, not the old
	   header: the file must exist for a lost index to find LMDB's
	   records again. */
	guid_128_t file_guid;
	if (lmdb_mailbox_guid_file_read(mbox, file_guid) <= 0 ||
	    !guid_128_equals(file_guid, new_hdr.mailbox_guid))
		(void)lmdb_mailbox_guid_file_write(mbox, new_hdr.mailbox_guid);

	if (need_resize) {
		mail_index_ext_resize_hdr(trans, mbox->hdr_ext_id,
					  sizeof(new_hdr));
	}
	if (memcmp(&hdr, &new_hdr, sizeof(hdr)) != 0) {
		mail_index_update_header_ext(trans, mbox->hdr_ext_id, 0,
					     &new_hdr, sizeof(new_hdr));
	}
	memcpy(mbox->mailbox_guid, new_hdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
}

uint32_t lmdb_get_uidvalidity_next(struct mailbox_list *list)
{
	const char *path;

	path = mailbox_list_get_root_forced(list, MAILBOX_LIST_PATH_TYPE_CONTROL);
	path = t_strconcat(path, "/"LMDB_UIDVALIDITY_FILE_NAME, NULL);
	return mailbox_uidvalidity_next(list, path);
}

struct lmdb_mailbox_put_ctx {
	const uint8_t *guid;
	const uint8_t *old_guid;
	struct ldb_mailbox_rec rec;
};

static int lmdb_mailbox_rec_put_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_mailbox_put_ctx *ctx = context;
	struct ldb_mailbox_rec old;
	int ret;

	if ((ret = ldb_mailbox_get(txn, ctx->guid, &old)) < 0)
		return ret;
	if (ret > 0) {
		/* never lower what LMDB already handed out */
		if (old.next_uid > ctx->rec.next_uid)
			ctx->rec.next_uid = old.next_uid;
		if (old.highest_modseq > ctx->rec.highest_modseq)
			ctx->rec.highest_modseq = old.highest_modseq;
	}
	return ldb_mailbox_put(txn, ctx->guid, &ctx->rec);
}

/* Write the mailbox's LMDB record from the index header in view. */
static int lmdb_mailbox_rec_write(struct lmdb_mailbox *mbox,
				  struct mail_index_view *view,
				  const struct mail_index_header *hdr,
				  const uint8_t *guid)
{
	struct lmdb_mailbox_put_ctx ctx;
	struct ldb_env *env;
	int ret;

	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	i_zero(&ctx);
	ctx.guid = guid;
	ctx.rec.uid_validity = hdr->uid_validity;
	ctx.rec.next_uid = hdr->next_uid;
	ctx.rec.highest_modseq = mail_index_modseq_get_highest(view);
	ctx.rec.first_recent_uid = hdr->first_recent_uid;
	if ((ret = ldb_write(env, lmdb_mailbox_rec_put_fn, &ctx)) < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "mailbox write");
		return -1;
	}
	return 0;
}

int lmdb_mailbox_create_indexes(struct mailbox *box,
				const struct mailbox_update *update,
				struct mail_index_transaction *trans)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct mail_index_transaction *new_trans = NULL;
	const struct mail_index_header *hdr;
	struct mail_index_header new_hdr;
	struct ldb_mailbox_rec rec;
	struct ldb_txn *txn;
	struct ldb_env *env = NULL;
	uint32_t uid_validity, uid_next;
	int ret;

	if (trans == NULL) {
		new_trans = mail_index_transaction_begin(box->view, 0);
		trans = new_trans;
	}
	hdr = mail_index_get_header(box->view);
	lmdb_update_header(mbox, trans, update);

	/* LMDB is the truth: a record that already exists for this GUID
	   (e.g. the index was lost) gives UIDVALIDITY and next UID. */
	i_zero(&rec);
	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		ret = -1;
	else if ((ret = ldb_txn_begin(env, FALSE, &txn)) == 0) {
		ret = ldb_mailbox_get(txn, mbox->mailbox_guid, &rec);
		ldb_txn_abort(&txn);
	}
	if (ret < 0) {
		if (env != NULL)
			lmdb_mailbox_set_ldb_error(box, ret, "mailbox read");
		if (new_trans != NULL)
			mail_index_transaction_rollback(&new_trans);
		return -1;
	}

	if (update != NULL && update->uid_validity != 0)
		uid_validity = update->uid_validity;
	else if (rec.uid_validity != 0)
		uid_validity = rec.uid_validity;
	else if (hdr->uid_validity != 0)
		uid_validity = hdr->uid_validity;
	else
		uid_validity = lmdb_get_uidvalidity_next(box->list);

	if (hdr->uid_validity != uid_validity) {
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, uid_validity),
			&uid_validity, sizeof(uid_validity), TRUE);
	}
	uid_next = hdr->next_uid;
	if (update != NULL && uid_next < update->min_next_uid)
		uid_next = update->min_next_uid;
	if (uid_next < rec.next_uid)
		uid_next = rec.next_uid;
	if (uid_next != hdr->next_uid) {
		mail_index_update_header(trans,
			offsetof(struct mail_index_header, next_uid),
			&uid_next, sizeof(uid_next), TRUE);
	}
	if (update != NULL && update->min_first_recent_uid != 0 &&
	    hdr->first_recent_uid < update->min_first_recent_uid) {
		uint32_t first_recent_uid = update->min_first_recent_uid;

		mail_index_update_header(trans,
			offsetof(struct mail_index_header, first_recent_uid),
			&first_recent_uid, sizeof(first_recent_uid), FALSE);
	}
	uint64_t min_modseq = rec.highest_modseq;
	if (update != NULL && update->min_highest_modseq > min_modseq)
		min_modseq = update->min_highest_modseq;
	if (min_modseq != 0 &&
	    mail_index_modseq_get_highest(box->view) < min_modseq) {
		mail_index_modseq_enable(box->index);
		mail_index_update_highest_modseq(trans, min_modseq);
	}

	if (box->inbox_user && box->creating) {
		/* initialize pop3-uidl header when creating mailbox
		   (not on mailbox_update()) */
		index_pop3_uidl_set_max_uid(box, trans, 0);
	}

	new_hdr = *hdr;
	new_hdr.uid_validity = uid_validity;
	new_hdr.next_uid = uid_next;
	if (update != NULL &&
	    new_hdr.first_recent_uid < update->min_first_recent_uid)
		new_hdr.first_recent_uid = update->min_first_recent_uid;
	if (rec.uid_validity != uid_validity || rec.next_uid < uid_next ||
	    rec.first_recent_uid != new_hdr.first_recent_uid) {
		if (lmdb_mailbox_rec_write(mbox, box->view, &new_hdr,
					   mbox->mailbox_guid) < 0) {
			if (new_trans != NULL)
				mail_index_transaction_rollback(&new_trans);
			return -1;
		}
	}
	if (new_trans != NULL) {
		if (mail_index_transaction_commit(&new_trans) < 0) {
			mailbox_set_index_error(box);
			return -1;
		}
	}
	return 0;
}

void lmdb_set_mailbox_corrupted(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct lmdb_index_header hdr;
	bool need_resize;

	if (lmdb_read_header(mbox, &hdr, TRUE, &need_resize) < 0 ||
	    hdr.rebuild_count == 0)
		mbox->corrupted_rebuild_count = 1;
	else
		mbox->corrupted_rebuild_count = hdr.rebuild_count;
}

static int lmdb_mailbox_alloc_index(struct lmdb_mailbox *mbox)
{
	struct lmdb_index_header hdr;

	if (index_storage_mailbox_alloc_index(&mbox->box) < 0)
		return -1;

	mbox->hdr_ext_id =
		mail_index_ext_register(mbox->box.index, "lmdb-hdr",
					sizeof(struct lmdb_index_header), 0, 0);
	/* set the initialization data in case the mailbox is created, or
	   its index was lost: then the GUID file gives the GUID back, so
	   that the rebuild finds the mailbox's LMDB records */
	i_zero(&hdr);
	if (lmdb_mailbox_guid_file_read(mbox, hdr.mailbox_guid) <= 0)
		guid_128_generate(hdr.mailbox_guid);
	mail_index_set_ext_init_data(mbox->box.index, mbox->hdr_ext_id,
				     &hdr, sizeof(hdr));
	return 0;
}

static int lmdb_mailbox_check_existence(struct mailbox *box)
{
	const char *box_path = mailbox_get_path(box);
	struct stat st;

	if (stat(box_path, &st) == 0)
		return 0;
	if (errno == ENOENT || errno == ENAMETOOLONG) {
		mail_storage_set_error(box->storage, MAIL_ERROR_NOTFOUND,
			T_MAIL_ERR_MAILBOX_NOT_FOUND(box->vname));
	} else if (errno == EACCES) {
		mailbox_set_critical(box, "%s",
			mail_error_eacces_msg("stat", box_path));
	} else {
		mailbox_set_critical(box, "stat(%s) failed: %m", box_path);
	}
	return -1;
}

static int lmdb_mailbox_open(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct lmdb_index_header hdr;
	struct ldb_env *env;
	bool need_resize;

	if (lmdb_mailbox_check_existence(box) < 0)
		return -1;
	/* fail early, with a clear error, if the environment can't be
	   opened (NFS, vsz_limit, newer schema) */
	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	if (lmdb_mailbox_alloc_index(mbox) < 0)
		return -1;
	if (index_storage_mailbox_open(box, FALSE) < 0)
		return -1;
	mail_index_set_fsync_mode(box->index,
				  box->storage->set->parsed_fsync_mode,
				  MAIL_INDEX_FSYNC_MASK_APPENDS |
				  MAIL_INDEX_FSYNC_MASK_EXPUNGES);

	if (box->creating) {
		/* wait for mailbox creation to initialize the index */
		return 0;
	}

	/* get/generate mailbox guid */
	if (lmdb_read_header(mbox, &hdr, FALSE, &need_resize) < 0) {
		/* looks like the mailbox is corrupted */
		(void)lmdb_sync(mbox, LMDB_SYNC_FLAG_FORCE);
		if (lmdb_read_header(mbox, &hdr, TRUE, &need_resize) < 0)
			i_zero(&hdr);
	}

	if (guid_128_is_empty(hdr.mailbox_guid)) {
		/* regenerate it */
		if (lmdb_mailbox_create_indexes(box, NULL, NULL) < 0 ||
		    lmdb_read_header(mbox, &hdr, TRUE, &need_resize) < 0)
			return -1;
	}
	memcpy(mbox->mailbox_guid, hdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	return 0;
}

static void lmdb_mailbox_close(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);

	if (mbox->corrupted_rebuild_count != 0 ||
	    array_count(&mbox->lost_uids) > 0)
		(void)lmdb_sync(mbox, 0);
	index_storage_mailbox_close(box);
}

static int lmdb_mailbox_create_locked(struct mailbox *box,
				      const struct mailbox_update *update)
{
	struct mail_index_sync_ctx *sync_ctx;
	struct mail_index_view *view;
	struct mail_index_transaction *trans;
	int ret;

	/* use syncing as a lock */
	ret = mail_index_sync_begin(box->index, &sync_ctx, &view, &trans, 0);
	if (ret <= 0) {
		i_assert(ret != 0);
		mailbox_set_index_error(box);
		return -1;
	}
	if (mail_index_get_header(view)->uid_validity == 0) {
		if (lmdb_mailbox_create_indexes(box, update, trans) < 0) {
			mail_index_sync_rollback(&sync_ctx);
			return -1;
		}
	}
	return mail_index_sync_commit(&sync_ctx);
}

static int
lmdb_mailbox_create(struct mailbox *box, const struct mailbox_update *update,
		    bool directory)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	struct lmdb_index_header hdr;
	bool need_resize;
	int ret;

	if ((ret = index_storage_mailbox_create(box, directory)) <= 0)
		return ret;
	if (mailbox_open(box) < 0)
		return -1;
	if (mail_index_get_header(box->view)->uid_validity != 0 &&
	    !box->storage->rebuilding_list_index) {
		mail_storage_set_error(box->storage, MAIL_ERROR_EXISTS,
				       "Mailbox already exists");
		return -1;
	}
	if (lmdb_mailbox_create_locked(box, update) < 0)
		return -1;
	if (directory || !guid_128_is_empty(mbox->mailbox_guid))
		return 0;

	/* another process just created the mailbox. read the mailbox_guid. */
	if (lmdb_read_header(mbox, &hdr, FALSE, &need_resize) < 0) {
		mailbox_set_critical(box,
			"lmdb: Failed to read newly created lmdb header");
		return -1;
	}
	memcpy(mbox->mailbox_guid, hdr.mailbox_guid,
	       sizeof(mbox->mailbox_guid));
	i_assert(!guid_128_is_empty(mbox->mailbox_guid));
	return 0;
}

static int
lmdb_mailbox_get_metadata(struct mailbox *box,
			  enum mailbox_metadata_items items,
			  struct mailbox_metadata *metadata_r)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);

	if (index_mailbox_get_metadata(box, items, metadata_r) < 0)
		return -1;
	if ((items & MAILBOX_METADATA_GUID) != 0) {
		memcpy(metadata_r->guid, mbox->mailbox_guid,
		       sizeof(metadata_r->guid));
	}
	return 0;
}

struct lmdb_rekey_ctx {
	const uint8_t *old_guid, *new_guid;
};

static int lmdb_mailbox_rekey_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_rekey_ctx *ctx = context;
	struct ldb_mailbox_rec mrec;
	struct ldb_msg_iter *iter;
	struct ldb_msg_rec rec;
	uint32_t uid;
	int ret;

	/* move every record: put under the new key with a new body
	   reference, then expunge the old one (which drops its reference) */
	for (;;) {
		ARRAY_TYPE(const_string) kws;
		const char *name;
		size_t pos = 0, len;
		struct ldb_msg_rec crec;

		iter = ldb_msg_iter_init(txn, ctx->old_guid, 1);
		ret = ldb_msg_iter_next(iter, &uid, &rec);
		if (ret > 0) {
			/* copy out before writing */
			t_array_init(&kws, rec.keyword_count + 1);
			while (ldb_msg_rec_keyword_next(&rec, &pos, &name, &len) > 0) {
				const char *kw = t_strndup(name, len);
				array_push_back(&kws, &kw);
			}
			array_append_zero(&kws);
			crec = rec;
			crec.guid = t_strndup(rec.guid, rec.guid_len);
			crec.pop3_uidl = t_strndup(rec.pop3_uidl,
						   rec.pop3_uidl_len);
		}
		if (ldb_msg_iter_deinit(&iter) < 0 && ret >= 0)
			ret = -1;
		if (ret <= 0)
			break;
		if ((ret = ldb_body_ref(txn, crec.body_hash)) < 0 ||
		    (ret = ldb_msg_put(txn, ctx->new_guid, uid, &crec,
				       array_front(&kws))) < 0 ||
		    (ret = ldb_msg_expunge(txn, ctx->old_guid, uid)) < 0)
			return ret;
	}
	if (ret < 0)
		return ret;
	if ((ret = ldb_mailbox_get(txn, ctx->old_guid, &mrec)) < 0)
		return ret;
	if (ret > 0) {
		if ((ret = ldb_mailbox_put(txn, ctx->new_guid, &mrec)) < 0 ||
		    (ret = ldb_mailbox_delete(txn, ctx->old_guid)) < 0)
			return ret;
	}
	return 0;
}

static int
lmdb_mailbox_update(struct mailbox *box, const struct mailbox_update *update)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	guid_128_t old_guid;
	int ret;

	if (!box->opened) {
		if (mailbox_open(box) < 0)
			return -1;
	}
	memcpy(old_guid, mbox->mailbox_guid, sizeof(old_guid));
	if (lmdb_mailbox_create_indexes(box, update, NULL) < 0)
		return -1;
	if (!guid_128_is_empty(old_guid) &&
	    !guid_128_equals(old_guid, mbox->mailbox_guid)) {
		/* dsync changed the mailbox GUID: move the records */
		struct lmdb_rekey_ctx ctx = {
			.old_guid = old_guid,
			.new_guid = mbox->mailbox_guid,
		};
		struct ldb_env *env;

		if (lmdb_storage_get_env(mbox->storage, &env) < 0)
			return -1;
		T_BEGIN {
			ret = ldb_write(env, lmdb_mailbox_rekey_fn, &ctx);
		} T_END;
		if (ret < 0) {
			lmdb_mailbox_set_ldb_error(box, ret, "mailbox rekey");
			return -1;
		}
	}
	return index_storage_mailbox_update_common(box, update);
}

struct lmdb_delete_ctx {
	const uint8_t *guid;
};

static int lmdb_mailbox_delete_fn(struct ldb_txn *txn, void *context)
{
	struct lmdb_delete_ctx *ctx = context;
	int ret;

	ret = ldb_mailbox_delete(txn, ctx->guid);
	return ret < 0 ? ret : 0;
}

static int lmdb_mailbox_delete(struct mailbox *box)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(box);
	guid_128_t guid;
	struct lmdb_delete_ctx ctx;
	struct ldb_env *env;
	bool have_guid;
	int ret;

	/* index_storage_mailbox_delete() expunges every message through the
	   normal path first, which releases their bodies. */
	if (index_storage_mailbox_delete(box) < 0)
		return -1;
	have_guid = !guid_128_is_empty(mbox->mailbox_guid);
	memcpy(guid, mbox->mailbox_guid, sizeof(guid));
	if (!have_guid)
		return 0;
	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	ctx.guid = guid;
	if ((ret = ldb_write(env, lmdb_mailbox_delete_fn, &ctx)) < 0) {
		lmdb_mailbox_set_ldb_error(box, ret, "mailbox delete");
		return -1;
	}
	return 0;
}

static void lmdb_notify_changes(struct mailbox *box)
{
	const char *dir, *path;

	if (box->notify_callback == NULL)
		mailbox_watch_remove_all(box);
	else {
		if (mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_INDEX,
					&dir) <= 0)
			return;
		path = t_strdup_printf("%s/"MAIL_INDEX_PREFIX".log", dir);
		mailbox_watch_add(box, path);
	}
}

static int
lmdb_transaction_commit(struct mailbox_transaction_context *t,
			struct mail_transaction_commit_changes *changes_r)
{
	struct lmdb_mailbox *mbox = LMDB_MAILBOX(t->box);
	bool changed_flags = t->itrans != NULL &&
		(array_is_created(&t->itrans->updates) ||
		 array_is_created(&t->itrans->keyword_updates) ||
		 array_is_created(&t->itrans->modseq_updates));

	if (index_transaction_commit(t, changes_r) < 0)
		return -1;
	/* Mirror flag and keyword changes into LMDB right away, so that
	   they never live only in the index, even if no later sync comes. */
	if (changed_flags)
		(void)lmdb_sync(mbox, 0);
	return 0;
}

void lmdb_mailbox_add_lost_uid(struct lmdb_mailbox *mbox, uint32_t uid)
{
	seq_range_array_add(&mbox->lost_uids, uid);
}

void lmdb_msg_from_rec(const struct ldb_msg_rec *rec, uint32_t uid,
		       pool_t pool, struct lmdb_msg *msg_r)
{
	const char *name;
	size_t pos = 0, len;

	i_zero(msg_r);
	msg_r->uid = uid;
	msg_r->flags = rec->flags;
	msg_r->pop3_order = rec->pop3_order;
	msg_r->received_date = (time_t)rec->received_date;
	msg_r->save_date = (time_t)rec->save_date;
	msg_r->physical_size = rec->physical_size;
	msg_r->virtual_size = rec->virtual_size;
	msg_r->modseq = rec->modseq;
	memcpy(msg_r->body_hash, rec->body_hash, sizeof(msg_r->body_hash));
	msg_r->guid = p_strndup(pool, rec->guid, rec->guid_len);
	msg_r->pop3_uidl = p_strndup(pool, rec->pop3_uidl, rec->pop3_uidl_len);
	p_array_init(&msg_r->keywords, pool, rec->keyword_count + 1);
	while (ldb_msg_rec_keyword_next(rec, &pos, &name, &len) > 0) {
		const char *kw = p_strndup(pool, name, len);
		array_push_back(&msg_r->keywords, &kw);
	}
}

int lmdb_msg_lookup(struct lmdb_mailbox *mbox, uint32_t uid, pool_t pool,
		    struct lmdb_msg *msg_r)
{
	struct ldb_env *env;
	struct ldb_txn *txn;
	struct ldb_msg_rec rec;
	int ret;

	if (lmdb_storage_get_env(mbox->storage, &env) < 0)
		return -1;
	if ((ret = ldb_txn_begin(env, FALSE, &txn)) < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "read");
		return -1;
	}
	ret = ldb_msg_get(txn, mbox->mailbox_guid, uid, &rec);
	if (ret > 0)
		lmdb_msg_from_rec(&rec, uid, pool, msg_r);
	ldb_txn_abort(&txn);
	if (ret < 0) {
		lmdb_mailbox_set_ldb_error(&mbox->box, ret, "message read");
		return -1;
	}
	return ret;
}

struct mail_storage lmdb_storage = {
	.name = LMDB_STORAGE_NAME,
	.class_flags = MAIL_STORAGE_CLASS_FLAG_UNIQUE_ROOT |
		MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_GUIDS |
		MAIL_STORAGE_CLASS_FLAG_HAVE_MAIL_SAVE_GUIDS |
		MAIL_STORAGE_CLASS_FLAG_BINARY_DATA,
	.event_category = &event_category_lmdb,

	.v = {
		.alloc = lmdb_storage_alloc,
		.create = lmdb_storage_create,
		.destroy = lmdb_storage_destroy,
		.get_list_settings = lmdb_storage_get_list_settings,
		.mailbox_alloc = lmdb_mailbox_alloc,
		.purge = lmdb_storage_purge,
		.list_index_rebuild = mail_storage_list_index_rebuild,
	}
};

struct mailbox lmdb_mailbox = {
	.v = {
		.is_readonly = index_storage_is_readonly,
		.enable = index_storage_mailbox_enable,
		.exists = index_storage_mailbox_exists,
		.open = lmdb_mailbox_open,
		.close = lmdb_mailbox_close,
		.free = index_storage_mailbox_free,
		.create_box = lmdb_mailbox_create,
		.update_box = lmdb_mailbox_update,
		.delete_box = lmdb_mailbox_delete,
		.rename_box = index_storage_mailbox_rename,
		.get_status = index_storage_get_status,
		.get_metadata = lmdb_mailbox_get_metadata,
		.set_subscribed = index_storage_set_subscribed,
		.attribute_set = index_storage_attribute_set,
		.attribute_get = index_storage_attribute_get,
		.attribute_iter_init = index_storage_attribute_iter_init,
		.attribute_iter_next = index_storage_attribute_iter_next,
		.attribute_iter_deinit = index_storage_attribute_iter_deinit,
		.list_index_has_changed = index_storage_list_index_has_changed,
		.list_index_update_sync = index_storage_list_index_update_sync,
		.sync_init = lmdb_storage_sync_init,
		.sync_next = index_mailbox_sync_next,
		.sync_deinit = index_mailbox_sync_deinit,
		.notify_changes = lmdb_notify_changes,
		.transaction_begin = index_transaction_begin,
		.transaction_commit = lmdb_transaction_commit,
		.transaction_rollback = index_transaction_rollback,
		.mail_alloc = lmdb_mail_alloc,
		.search_init = index_storage_search_init,
		.search_deinit = index_storage_search_deinit,
		.search_next_nonblock = index_storage_search_next_nonblock,
		.search_next_update_seq = index_storage_search_next_update_seq,
		.search_next_match_mail = index_storage_search_next_match_mail,
		.save_alloc = lmdb_save_alloc,
		.save_begin = lmdb_save_begin,
		.save_continue = lmdb_save_continue,
		.save_finish = lmdb_save_finish,
		.save_cancel = lmdb_save_cancel,
		.copy = lmdb_copy,
		.transaction_save_commit_pre = lmdb_transaction_save_commit_pre,
		.transaction_save_commit_post = lmdb_transaction_save_commit_post,
		.transaction_save_rollback = lmdb_transaction_save_rollback,
		.is_inconsistent = index_storage_is_inconsistent,
	}
};
