/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* lookup(): answer one level of a search from the index, with the
   semantics of Dovecot's own SEARCH.

   For each argument the postings give candidates (messages that have
   every gram of the key in the right posting space) and the stored text
   of each candidate decides (fts-lmdb-doc.h).  Results are definite.  Only
   messages the index can't answer exactly are "maybe", and Dovecot then
   reads them: those whose text was cut (fts_lmdb_max_text), those that
   should be indexed but have no text (expunged by another session but
   still in this one's view), and texts that fail to decode.

   Arguments left to Dovecot (match_always stays unset): keys containing
   CR or LF, BODY/TEXT "", ADDRESS searches of other headers than
   From/To/Cc/Bcc, and header arguments of one query that search the
   same header in different forms (e.g. FROM and HEADER FROM): Dovecot's
   index-search.c decodes such a header once, in the form of whichever
   argument it evaluates first, and that can't be reproduced per level. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "seq-range-array.h"
#include "mail-storage-private.h"
#include "mail-search.h"
#include "fts-lmdb-private.h"

enum query_kind {
	QUERY_TEXT,
	QUERY_BODY,
	QUERY_HEADER,
};

struct query_arg {
	struct mail_search_arg *arg;
	enum query_kind kind;
	enum fts_lmdb_hdr_form form;
	const char *field;
	uint8_t space;
	const unsigned char *key;
	size_t key_len;
	unsigned int chars;
	struct fts_lmdb_grams grams;
	/* the normalized key is empty: nothing matches */
	bool empty;
	/* HEADER <name> "": the header exists */
	bool exists;
	unsigned int cost;
};
ARRAY_DEFINE_TYPE(fts_lmdb_query_arg, struct query_arg);

struct query_ctx {
	struct lmdb_fts_backend *backend;
	uint32_t box_id;
	struct fts_lmdb_uids unknown, cand, tmp, tmp2;
};

struct header_use {
	const char *field;
	enum mail_search_arg_type type;
};
ARRAY_DEFINE_TYPE(header_use, struct header_use);

static const struct {
	const char *field;
	uint8_t space;
} address_spaces[] = {
	{ "From", FTS_LMDB_SPACE_FROM },
	{ "To", FTS_LMDB_SPACE_TO },
	{ "Cc", FTS_LMDB_SPACE_CC },
	{ "Bcc", FTS_LMDB_SPACE_BCC },
};

static bool is_header_arg(const struct mail_search_arg *arg)
{
	return arg->type == SEARCH_HEADER ||
		arg->type == SEARCH_HEADER_ADDRESS ||
		arg->type == SEARCH_HEADER_COMPRESS_LWSP;
}

/* Does Dovecot decode a header for this argument (see the file comment)? */
static bool header_arg_decodes(struct lmdb_fts_backend *backend,
			       const struct mail_search_arg *arg)
{
	normalizer_func_t *normalizer =
		backend->backend.ns->user->default_normalizer;
	string_t *str;

	if (arg->value.str == NULL || arg->value.str[0] == '\0' ||
	    arg->hdr_field_name == NULL)
		return FALSE;
	str = t_str_new(128);
	return normalizer(arg->value.str, strlen(arg->value.str), str) >= 0 &&
		str_len(str) > 0;
}

static void analyze_args(struct lmdb_fts_backend *backend,
			 const struct mail_search_arg *args,
			 ARRAY_TYPE(const_string) *conflicts,
			 ARRAY_TYPE(header_use) *uses)
{
	const struct header_use *use;
	struct header_use new_use;

	for (; args != NULL; args = args->next) {
		if (args->value.subargs != NULL)
			analyze_args(backend, args->value.subargs, conflicts,
				     uses);
		if (!is_header_arg(args) || !header_arg_decodes(backend, args))
			continue;
		array_foreach(uses, use) {
			if (strcasecmp(use->field, args->hdr_field_name) == 0 &&
			    use->type != args->type) {
				const char *name = p_strdup(
					backend->session_pool,
					args->hdr_field_name);
				array_push_back(conflicts, &name);
			}
		}
		new_use.field = args->hdr_field_name;
		new_use.type = args->type;
		array_push_back(uses, &new_use);
	}
}

static bool is_conflict(struct lmdb_fts_backend *backend, const char *field)
{
	const char *name;

	array_foreach_elem(&backend->conflicts, name) {
		if (strcasecmp(name, field) == 0)
			return TRUE;
	}
	return FALSE;
}

static bool query_arg_header(struct lmdb_fts_backend *backend,
			     struct mail_search_arg *arg, struct query_arg *qa)
{
	unsigned int i;

	qa->kind = QUERY_HEADER;
	qa->field = arg->hdr_field_name;
	if (qa->field == NULL || qa->field[0] == '\0' ||
	    is_conflict(backend, qa->field))
		return FALSE;
	switch (arg->type) {
	case SEARCH_HEADER:
		qa->form = FTS_LMDB_FORM_PLAIN;
		qa->space = FTS_LMDB_SPACE_HDR;
		return TRUE;
	case SEARCH_HEADER_ADDRESS:
		qa->form = FTS_LMDB_FORM_ADDR;
		for (i = 0; i < N_ELEMENTS(address_spaces); i++) {
			if (strcasecmp(qa->field, address_spaces[i].field) == 0) {
				qa->space = address_spaces[i].space;
				return TRUE;
			}
		}
		return FALSE;
	case SEARCH_HEADER_COMPRESS_LWSP:
		qa->form = FTS_LMDB_FORM_LWSP;
		qa->space = FTS_LMDB_SPACE_SUBJECT;
		return strcasecmp(qa->field, "Subject") == 0;
	default:
		i_unreached();
	}
}

static bool query_arg_init(struct lmdb_fts_backend *backend,
			   struct mail_search_arg *arg, struct query_arg *qa)
{
	normalizer_func_t *normalizer =
		backend->backend.ns->user->default_normalizer;
	string_t *str;

	i_zero(qa);
	qa->arg = arg;
	if (arg->no_fts || arg->value.str == NULL)
		return FALSE;
	if (arg->type == SEARCH_BODY || arg->type == SEARCH_TEXT) {
		qa->kind = arg->type == SEARCH_BODY ? QUERY_BODY : QUERY_TEXT;
		/* simplified into SEARCH_ALL before it reaches us */
		if (arg->value.str[0] == '\0')
			return FALSE;
	} else if (!is_header_arg(arg) || !query_arg_header(backend, arg, qa)) {
		return FALSE;
	} else if (arg->value.str[0] == '\0') {
		qa->exists = TRUE;
		qa->cost = 1;
		return TRUE;
	}
	str = t_str_new(128);
	if (normalizer(arg->value.str, strlen(arg->value.str), str) < 0)
		return FALSE;
	qa->key = str_data(str);
	qa->key_len = str_len(str);
	if (qa->key_len == 0) {
		/* index-search.c: no search context, never a match */
		qa->empty = TRUE;
		return TRUE;
	}
	if (fts_lmdb_key_analyze(qa->key, qa->key_len, &qa->grams,
				 &qa->chars) < 0) {
		fts_lmdb_grams_free(&qa->grams);
		return FALSE;
	}
	/* cheap and selective arguments first in AND levels */
	qa->cost = qa->chars >= 3 || qa->kind != QUERY_HEADER ? 2 : 4;
	if (arg->match_not)
		qa->cost++;
	return TRUE;
}

/* out = W AND every gram's postings in space */
static int query_grams(struct query_ctx *q, const struct query_arg *qa,
		       uint8_t space, const struct fts_lmdb_uids *w,
		       struct fts_lmdb_uids *out)
{
	struct lmdb_fts_backend *backend = q->backend;
	size_t i;
	int ret;

	fts_lmdb_uids_copy(out, w);
	for (i = 0; i < qa->grams.n && out->n > 0; i++) {
		fts_lmdb_uids_clear(&q->tmp);
		ret = fts_lmdb_store_postings(backend->txn, backend->store,
					      q->box_id, space, qa->grams.v[i],
					      &q->tmp);
		if (ret < 0)
			return ret;
		fts_lmdb_uids_intersect(out, &q->tmp);
	}
	return 0;
}

/* The candidates of qa in w, and whether they are certain matches. */
static int query_candidates(struct query_ctx *q, const struct query_arg *qa,
			    const struct fts_lmdb_uids *w, bool *exact_r)
{
	struct lmdb_fts_backend *backend = q->backend;
	int ret;

	*exact_r = FALSE;
	if (qa->kind == QUERY_HEADER) {
		/* messages that have a header of that name */
		fts_lmdb_uids_clear(&q->tmp2);
		ret = fts_lmdb_store_postings(backend->txn, backend->store,
			q->box_id, FTS_LMDB_SPACE_NAME,
			fts_lmdb_name_hash(qa->field, strlen(qa->field)),
			&q->tmp2);
		if (ret < 0)
			return ret;
		fts_lmdb_uids_intersect(&q->tmp2, w);
		w = &q->tmp2;
		if (qa->exists || qa->chars < 3) {
			fts_lmdb_uids_copy(&q->cand, w);
			return 0;
		}
		/* one gram of a space that holds exactly this form */
		*exact_r = qa->chars == 3 && qa->form != FTS_LMDB_FORM_PLAIN;
		return query_grams(q, qa, qa->space, w, &q->cand);
	}
	/* trigrams, or the short gram of a key of one or two characters;
	   the body space also holds the parsers' text */
	*exact_r = qa->chars <= 3 && backend->set.parsed_text;
	if ((ret = query_grams(q, qa, FTS_LMDB_SPACE_BODY, w, &q->cand)) < 0)
		return ret;
	if (qa->kind == QUERY_TEXT) {
		struct fts_lmdb_uids hdr = { NULL, 0, 0 };

		ret = query_grams(q, qa, FTS_LMDB_SPACE_HDR, w, &hdr);
		fts_lmdb_uids_union(&q->cand, &hdr);
		fts_lmdb_uids_free(&hdr);
	}
	return ret;
}

/* 1 match, 0 no match, -1 can't tell */
static int query_verify_doc(struct lmdb_fts_backend *backend,
			    const struct query_arg *qa,
			    struct fts_lmdb_doc *doc)
{
	if (qa->kind == QUERY_HEADER) {
		return fts_lmdb_doc_match_header(doc, qa->field, qa->form,
						 qa->key, qa->key_len);
	}
	if (!backend->set.parsed_text)
		doc->extra_len = 0;
	return fts_lmdb_doc_match_text(doc, qa->key, qa->key_len,
				       qa->kind == QUERY_TEXT, TRUE) ? 1 : 0;
}

static unsigned int query_doc_parts(const struct query_arg *qa)
{
	switch (qa->kind) {
	case QUERY_HEADER:
		return FTS_LMDB_DOC_HEAD;
	case QUERY_BODY:
		return FTS_LMDB_DOC_BODY;
	case QUERY_TEXT:
		break;
	}
	return FTS_LMDB_DOC_HEAD | FTS_LMDB_DOC_BODY;
}

/* m = the messages of w that match qa (without NOT). */
static int query_match(struct query_ctx *q, const struct query_arg *qa,
		       const struct fts_lmdb_uids *w, struct fts_lmdb_uids *m)
{
	struct lmdb_fts_backend *backend = q->backend;
	struct fts_lmdb_doc doc;
	const void *data;
	size_t i, size;
	bool exact;
	int ret;

	fts_lmdb_uids_clear(m);
	if (qa->empty || w->n == 0)
		return 0;
	if ((ret = query_candidates(q, qa, w, &exact)) < 0)
		return ret;
	if (exact) {
		fts_lmdb_uids_copy(m, &q->cand);
		return 0;
	}
	for (i = 0; i < q->cand.n; i++) {
		uint32_t uid = q->cand.v[i];

		ret = fts_lmdb_store_doc_get(backend->txn, backend->store,
					     q->box_id, uid, &data, &size);
		if (ret < 0)
			return ret;
		if (ret == 0 ||
		    fts_lmdb_doc_decode(backend->reader, data, size,
					query_doc_parts(qa), &doc) < 0) {
			fts_lmdb_uids_push(&q->unknown, uid);
			continue;
		}
		ret = query_verify_doc(backend, qa, &doc);
		if (ret > 0)
			fts_lmdb_uids_push(m, uid);
		else if (ret < 0)
			fts_lmdb_uids_push(&q->unknown, uid);
	}
	return 0;
}

static int query_cost_cmp(const struct query_arg *a, const struct query_arg *b)
{
	return (int)a->cost - (int)b->cost;
}

static int query_eval(struct query_ctx *q, ARRAY_TYPE(fts_lmdb_query_arg) *qargs,
		      bool and_args, const struct fts_lmdb_uids *universe,
		      struct fts_lmdb_uids *result)
{
	struct fts_lmdb_uids m = { NULL, 0, 0 }, w = { NULL, 0, 0 };
	struct query_arg *qa;
	int ret = 0;

	fts_lmdb_uids_clear(result);
	if (and_args) {
		array_sort(qargs, query_cost_cmp);
		fts_lmdb_uids_copy(result, universe);
		array_foreach_modifiable(qargs, qa) {
			if ((ret = query_match(q, qa, result, &m)) < 0)
				break;
			if (qa->arg->match_not)
				fts_lmdb_uids_remove(result, &m);
			else
				fts_lmdb_uids_copy(result, &m);
		}
	} else {
		array_foreach_modifiable(qargs, qa) {
			/* only messages no earlier argument matched */
			fts_lmdb_uids_copy(&w, universe);
			fts_lmdb_uids_remove(&w, result);
			if ((ret = query_match(q, qa, &w, &m)) < 0)
				break;
			if (qa->arg->match_not)
				fts_lmdb_uids_remove(&w, &m);
			else
				fts_lmdb_uids_copy(&w, &m);
			fts_lmdb_uids_union(result, &w);
		}
	}
	fts_lmdb_uids_free(&m);
	fts_lmdb_uids_free(&w);
	return ret;
}

static int lookup_session_begin(struct lmdb_fts_backend *backend)
{
	int ret;

	if (backend->txn != NULL)
		return 0;
	if (fts_lmdb_backend_open(backend) < 0)
		return -1;
	ret = ldb_txn_begin(fts_lmdb_store_env(backend->store), FALSE,
			    &backend->txn);
	if (ret < 0) {
		e_error(backend->event, "%s",
			fts_lmdb_store_last_error(backend->store));
		return -1;
	}
	backend->session_analyzed = FALSE;
	return 0;
}

void fts_lmdb_lookup_done(struct lmdb_fts_backend *backend)
{
	if (backend->txn != NULL)
		ldb_txn_abort(&backend->txn);
	if (array_is_created(&backend->conflicts))
		array_clear(&backend->conflicts);
	if (backend->session_pool != NULL)
		p_clear(backend->session_pool);
	backend->session_analyzed = FALSE;
	backend->cache_box = NULL;
	fts_lmdb_uids_clear(&backend->live);
	fts_lmdb_uids_clear(&backend->flagged);
	backend->flags.used = 0;
	fts_lmdb_uids_clear(&backend->missing);
}

/* Messages of the mailbox's view up to last_uid that have no text. */
static void lookup_missing(struct lmdb_fts_backend *backend,
			   struct mailbox *box, uint32_t last_uid)
{
	uint32_t seq, seq1, seq2, uid;
	size_t i = 0;

	mailbox_get_seq_range(box, 1, last_uid, &seq1, &seq2);
	if (seq1 == 0)
		return;
	for (seq = seq1; seq <= seq2; seq++) {
		mail_index_lookup_uid(box->view, seq, &uid);
		while (i < backend->live.n && backend->live.v[i] < uid)
			i++;
		if (i == backend->live.n || backend->live.v[i] != uid)
			fts_lmdb_uids_push(&backend->missing, uid);
	}
}

/* Load the mailbox's record and UID sets into the session cache.
   1 = ok, 0 = the mailbox isn't indexed, -1 = error */
static int lookup_box(struct lmdb_fts_backend *backend, struct mailbox *box)
{
	uint8_t guid[LDB_GUID_SIZE];
	uint32_t uidvalidity;
	int ret;

	if (backend->cache_box == box)
		return backend->cache_rec_ok ? 1 : 0;
	backend->cache_box = NULL;
	fts_lmdb_uids_clear(&backend->live);
	fts_lmdb_uids_clear(&backend->flagged);
	backend->flags.used = 0;
	fts_lmdb_uids_clear(&backend->missing);
	if (fts_lmdb_box_identity(box, guid, &uidvalidity) < 0)
		return -1;
	ret = fts_lmdb_store_box_get(backend->txn, backend->store, guid,
				     &backend->cache_rec);
	backend->cache_rec_ok = ret > 0 &&
		backend->cache_rec.uidvalidity == uidvalidity;
	if (ret >= 0 && backend->cache_rec_ok) {
		ret = fts_lmdb_store_uids(backend->txn, backend->store,
					  backend->cache_rec.box_id,
					  &backend->live, &backend->flagged,
					  &backend->flags);
	}
	if (ret < 0) {
		e_error(backend->event, "%s",
			fts_lmdb_store_last_error(backend->store));
		return -1;
	}
	if (backend->cache_rec_ok)
		lookup_missing(backend, box, backend->cache_rec.last_uid);
	backend->cache_box = box;
	return backend->cache_rec_ok ? 1 : 0;
}

static uint8_t query_arg_needs(const struct query_arg *qa)
{
	switch (qa->kind) {
	case QUERY_HEADER:
		return FTS_LMDB_DOC_FLAG_PARTIAL | FTS_LMDB_DOC_FLAG_CUT_HDRS;
	case QUERY_BODY:
		return FTS_LMDB_DOC_FLAG_PARTIAL | FTS_LMDB_DOC_FLAG_CUT_BODY;
	case QUERY_TEXT:
		break;
	}
	return FTS_LMDB_DOC_FLAGS_ALL;
}

static void lookup_lacking(struct lmdb_fts_backend *backend,
			   ARRAY_TYPE(fts_lmdb_query_arg) *qargs,
			   struct fts_lmdb_uids *out)
{
	const struct query_arg *qa;
	uint8_t mask = 0;
	size_t i;

	array_foreach(qargs, qa)
		mask |= query_arg_needs(qa);
	for (i = 0; i < backend->flagged.n; i++) {
		if ((backend->flags.data[i] & mask) != 0)
			fts_lmdb_uids_push(out, backend->flagged.v[i]);
	}
}

static void uids_to_ranges(const struct fts_lmdb_uids *uids,
			   ARRAY_TYPE(seq_range) *dest)
{
	size_t i, j;

	for (i = 0; i < uids->n; i = j) {
		for (j = i + 1; j < uids->n && uids->v[j] == uids->v[j - 1] + 1;
		     j++) ;
		seq_range_array_add_range(dest, uids->v[i], uids->v[j - 1]);
	}
}

static int lookup_level(struct lmdb_fts_backend *backend,
			ARRAY_TYPE(fts_lmdb_query_arg) *qargs, bool and_args,
			struct fts_result *result, size_t *definite_r,
			size_t *maybe_r)
{
	struct query_ctx q;
	struct fts_lmdb_uids universe = { NULL, 0, 0 }, found = { NULL, 0, 0 };
	struct fts_lmdb_uids maybe = { NULL, 0, 0 };
	int ret;

	i_zero(&q);
	q.backend = backend;
	q.box_id = backend->cache_rec.box_id;
	/* messages whose text lacks what these arguments search */
	lookup_lacking(backend, qargs, &maybe);
	fts_lmdb_uids_union(&maybe, &backend->missing);
	fts_lmdb_uids_copy(&universe, &backend->live);
	fts_lmdb_uids_remove(&universe, &maybe);

	ret = query_eval(&q, qargs, and_args, &universe, &found);
	if (ret < 0) {
		e_error(backend->event, "%s",
			fts_lmdb_store_last_error(backend->store));
	} else {
		fts_lmdb_uids_normalize(&q.unknown);
		fts_lmdb_uids_union(&maybe, &q.unknown);
		fts_lmdb_uids_remove(&found, &q.unknown);
		uids_to_ranges(&found, &result->definite_uids);
		uids_to_ranges(&maybe, &result->maybe_uids);
		*definite_r = found.n;
		*maybe_r = maybe.n;
	}
	fts_lmdb_uids_free(&universe);
	fts_lmdb_uids_free(&found);
	fts_lmdb_uids_free(&maybe);
	fts_lmdb_uids_free(&q.unknown);
	fts_lmdb_uids_free(&q.cand);
	fts_lmdb_uids_free(&q.tmp);
	fts_lmdb_uids_free(&q.tmp2);
	return ret < 0 ? -1 : 0;
}

int fts_lmdb_lookup(struct lmdb_fts_backend *backend, struct mailbox *box,
		    struct mail_search_arg *args,
		    enum fts_lookup_flags flags, struct fts_result *result)
{
	ARRAY_TYPE(fts_lmdb_query_arg) qargs;
	ARRAY_TYPE(header_use) uses;
	struct mail_search_arg *arg;
	struct query_arg qa, *qap;
	unsigned int arg_count = 0;
	size_t definite = 0, maybe = 0;
	bool handled;
	int ret;

	if (lookup_session_begin(backend) < 0)
		return -1;
	if (!backend->session_analyzed) {
		/* the first lookup of a search gets the whole argument tree */
		t_array_init(&uses, 8);
		analyze_args(backend, args, &backend->conflicts, &uses);
		backend->session_analyzed = TRUE;
	}
	t_array_init(&qargs, 8);
	for (arg = args; arg != NULL; arg = arg->next) {
		/* text arguments; the others aren't ours to answer */
		if (is_header_arg(arg) || arg->type == SEARCH_BODY ||
		    arg->type == SEARCH_TEXT)
			arg_count++;
		if (query_arg_init(backend, arg, &qa))
			array_push_back(&qargs, &qa);
	}
	/* e.g. the top level of OR (...) (...): nothing to look up here */
	ret = array_count(&qargs) == 0 ? 0 : lookup_box(backend, box);
	handled = ret > 0;
	if (handled) {
		ret = lookup_level(backend, &qargs,
				   (flags & FTS_LOOKUP_FLAG_AND_ARGS) != 0,
				   result, &definite, &maybe);
	}
	if (arg_count > 0) {
		/* not indexed (or another UIDVALIDITY): all left to Dovecot */
		e_debug(backend->event, "lookup %s: %u of %u args, "
			"%zu definite, %zu maybe", mailbox_get_vname(box),
			handled ? array_count(&qargs) : 0, arg_count,
			definite, maybe);
	}
	array_foreach_modifiable(&qargs, qap) {
		if (handled && ret == 0)
			qap->arg->match_always = TRUE;
		fts_lmdb_grams_free(&qap->grams);
	}
	return ret < 0 ? -1 : 0;
}
