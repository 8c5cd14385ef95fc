/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "fts-lmdb-codec.h"

#include <stdlib.h>
#include <string.h>


static void *fts_lmdb_realloc(void *ptr, size_t count, size_t size)
{
	void *p;

	if (count != 0 && size > SIZE_MAX / count)
		abort();
	p = realloc(ptr, count * size);
	if (p == NULL && count * size != 0)
		abort();
	return p;
}

/* ---- varints ---- */

size_t fts_lmdb_varint_put(uint8_t *p, uint32_t value)
{
	size_t i = 0;

	while (value >= 0x80) {
		p[i++] = (value & 0x7f) | 0x80;
		value >>= 7;
	}
	p[i++] = value;
	return i;
}

int fts_lmdb_varint_get(const uint8_t **_p, const uint8_t *end,
			uint32_t *value_r)
{
	const uint8_t *p = *_p;
	uint32_t value = 0;
	unsigned int shift = 0, i;

	for (i = 0; i < 5; i++) {
		if (p >= end)
			return -1;
		if (i == 4 && (*p & 0xf0) != 0)
			return -1;
		value |= (uint32_t)(*p & 0x7f) << shift;
		if ((*p++ & 0x80) == 0) {
			/* a trailing zero byte would be an overlong form */
			if (i > 0 && p[-1] == 0)
				return -1;
			*_p = p;
			*value_r = value;
			return 0;
		}
		shift += 7;
	}
	return -1;
}

/* ---- UID sets ---- */

void fts_lmdb_uids_reserve(struct fts_lmdb_uids *u, size_t n)
{
	size_t cap;

	if (u->n + n <= u->cap)
		return;
	cap = u->cap < 16 ? 16 : u->cap;
	while (cap < u->n + n)
		cap *= 2;
	u->v = fts_lmdb_realloc(u->v, cap, sizeof(*u->v));
	u->cap = cap;
}

void fts_lmdb_uids_push(struct fts_lmdb_uids *u, uint32_t uid)
{
	fts_lmdb_uids_reserve(u, 1);
	u->v[u->n++] = uid;
}

void fts_lmdb_uids_clear(struct fts_lmdb_uids *u)
{
	u->n = 0;
}

void fts_lmdb_uids_free(struct fts_lmdb_uids *u)
{
	free(u->v);
	memset(u, 0, sizeof(*u));
}

void fts_lmdb_uids_copy(struct fts_lmdb_uids *dest,
			const struct fts_lmdb_uids *src)
{
	dest->n = 0;
	fts_lmdb_uids_reserve(dest, src->n);
	if (src->n > 0)
		memcpy(dest->v, src->v, src->n * sizeof(*src->v));
	dest->n = src->n;
}

bool fts_lmdb_uids_contains(const struct fts_lmdb_uids *u, uint32_t uid)
{
	size_t lo = 0, hi = u->n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (u->v[mid] < uid)
			lo = mid + 1;
		else if (u->v[mid] > uid)
			hi = mid;
		else
			return true;
	}
	return false;
}

/* first index in v[lo..n) whose value is >= uid (galloping search) */
static size_t uids_seek(const uint32_t *v, size_t lo, size_t n, uint32_t uid)
{
	size_t step = 1, hi = lo, mid;

	while (hi < n && v[hi] < uid) {
		lo = hi + 1;
		hi += step;
		step *= 2;
	}
	if (hi > n)
		hi = n;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void fts_lmdb_uids_intersect(struct fts_lmdb_uids *a,
			     const struct fts_lmdb_uids *b)
{
	size_t i, j = 0, out = 0;

	for (i = 0; i < a->n && j < b->n; i++) {
		j = uids_seek(b->v, j, b->n, a->v[i]);
		if (j < b->n && b->v[j] == a->v[i])
			a->v[out++] = a->v[i];
	}
	a->n = out;
}

void fts_lmdb_uids_remove(struct fts_lmdb_uids *a,
			  const struct fts_lmdb_uids *b)
{
	size_t i, j = 0, out = 0;

	for (i = 0; i < a->n; i++) {
		j = uids_seek(b->v, j, b->n, a->v[i]);
		if (j < b->n && b->v[j] == a->v[i])
			continue;
		a->v[out++] = a->v[i];
	}
	a->n = out;
}

void fts_lmdb_uids_union(struct fts_lmdb_uids *a,
			 const struct fts_lmdb_uids *b)
{
	uint32_t *v;
	size_t i = 0, j = 0, n = 0;

	if (b->n == 0)
		return;
	if (a->n == 0) {
		fts_lmdb_uids_copy(a, b);
		return;
	}
	v = fts_lmdb_realloc(NULL, a->n + b->n, sizeof(*v));
	while (i < a->n || j < b->n) {
		if (j == b->n || (i < a->n && a->v[i] < b->v[j]))
			v[n++] = a->v[i++];
		else if (i == a->n || b->v[j] < a->v[i])
			v[n++] = b->v[j++];
		else {
			v[n++] = a->v[i++];
			j++;
		}
	}
	free(a->v);
	a->cap = a->n + b->n;
	a->v = v;
	a->n = n;
}

static int uid_cmp(const void *p1, const void *p2)
{
	uint32_t a = *(const uint32_t *)p1, b = *(const uint32_t *)p2;

	return a < b ? -1 : (a > b ? 1 : 0);
}

void fts_lmdb_uids_normalize(struct fts_lmdb_uids *u)
{
	size_t i, out = 0;

	if (u->n == 0)
		return;
	qsort(u->v, u->n, sizeof(*u->v), uid_cmp);
	for (i = 0; i < u->n; i++) {
		if (out == 0 || u->v[out - 1] != u->v[i])
			u->v[out++] = u->v[i];
	}
	u->n = out;
}

/* ---- posting blocks ---- */

size_t fts_lmdb_block_encode(const uint32_t *uids, size_t n, uint8_t *buf)
{
	size_t i, size;

	size = fts_lmdb_varint_put(buf, n);
	for (i = 1; i < n; i++)
		size += fts_lmdb_varint_put(buf + size, uids[i] - uids[i - 1]);
	return size;
}

static int block_walk(uint32_t first_uid, const void *data, size_t size,
		      struct fts_lmdb_uids *out, uint32_t *count_r,
		      uint32_t *last_r)
{
	const uint8_t *p = data, *end = p + size;
	uint32_t n, i, delta, uid = first_uid;
	size_t orig = out == NULL ? 0 : out->n;

	if (fts_lmdb_varint_get(&p, end, &n) < 0 ||
	    n == 0 || n > FTS_LMDB_BLOCK_MAX_UIDS || first_uid == 0)
		return -1;
	if (out != NULL) {
		fts_lmdb_uids_reserve(out, n);
		out->v[out->n++] = uid;
	}
	for (i = 1; i < n; i++) {
		if (fts_lmdb_varint_get(&p, end, &delta) < 0 || delta == 0 ||
		    delta > UINT32_MAX - uid)
			goto corrupt;
		uid += delta;
		if (out != NULL)
			out->v[out->n++] = uid;
	}
	if (p != end)
		goto corrupt;
	*count_r = n;
	*last_r = uid;
	return 0;
corrupt:
	if (out != NULL)
		out->n = orig;
	return -1;
}

int fts_lmdb_block_decode(uint32_t first_uid, const void *data, size_t size,
			  struct fts_lmdb_uids *out)
{
	uint32_t count, last;

	return block_walk(first_uid, data, size, out, &count, &last);
}

int fts_lmdb_block_info(uint32_t first_uid, const void *data, size_t size,
			uint32_t *count_r, uint32_t *last_uid_r)
{
	return block_walk(first_uid, data, size, NULL, count_r, last_uid_r);
}

/* ---- grams ---- */

uint64_t fts_lmdb_gram_pack(uint32_t c1, uint32_t c2, uint32_t c3)
{
	return ((uint64_t)c1 << 42) | ((uint64_t)c2 << 21) | c3;
}

uint64_t fts_lmdb_gram_pack2(uint32_t c1, uint32_t c2)
{
	return (1ULL << 63) | ((uint64_t)c1 << 21) | c2;
}

uint64_t fts_lmdb_gram_pack1(uint32_t c)
{
	return (1ULL << 63) | (1ULL << 62) | c;
}

unsigned int fts_lmdb_utf8_get(const uint8_t *p, const uint8_t *end,
			       uint32_t *cp_r)
{
	uint32_t cp;
	unsigned int len, i;
	uint8_t lo = 0x80, hi = 0xbf;

	if (p[0] < 0x80) {
		*cp_r = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2; cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3; cp = p[0] & 0x0f;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4; cp = p[0] & 0x07;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < len)
		return 0;
	for (i = 1; i < len; i++) {
		if (p[i] < lo || p[i] > hi)
			return 0;
		lo = 0x80; hi = 0xbf;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	*cp_r = cp;
	return len;
}

static void sort_u64_small(uint64_t *v, size_t n)
{
	size_t i, j;

	for (i = 1; i < n; i++) {
		uint64_t x = v[i];

		for (j = i; j > 0 && v[j - 1] > x; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
}

void fts_lmdb_sort_u64(uint64_t *v, uint64_t *tmp, size_t n)
{
	size_t count[256], i, sum, c;
	uint64_t *src = v, *dest = tmp, *swap;
	unsigned int shift;

	if (n < 64) {
		sort_u64_small(v, n);
		return;
	}
	for (shift = 0; shift < 64; shift += 8) {
		memset(count, 0, sizeof(count));
		for (i = 0; i < n; i++)
			count[(src[i] >> shift) & 0xff]++;
		/* a byte that is the same everywhere needs no pass */
		if (count[(src[0] >> shift) & 0xff] == n)
			continue;
		for (i = 0, sum = 0; i < 256; i++) {
			c = count[i];
			count[i] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			dest[count[(src[i] >> shift) & 0xff]++] = src[i];
		swap = src; src = dest; dest = swap;
	}
	if (src != v)
		memcpy(v, src, n * sizeof(*v));
}

#define FTS_LMDB_GRAM_EMPTY UINT64_MAX

void fts_lmdb_grams_finish(struct fts_lmdb_grams *g)
{
	uint64_t *tmp;

	if (g->n < 64) {
		sort_u64_small(g->v, g->n);
		return;
	}
	tmp = fts_lmdb_realloc(NULL, g->n, sizeof(*tmp));
	fts_lmdb_sort_u64(g->v, tmp, g->n);
	free(tmp);
}

static size_t gram_slot(const struct fts_lmdb_grams *g, uint64_t gram)
{
	/* Fibonacci hashing; table_cap is a power of two */
	return (size_t)((gram * 0x9e3779b97f4a7c15ULL) >> 32) &
		(g->table_cap - 1);
}

static void grams_table_insert(struct fts_lmdb_grams *g, uint64_t gram)
{
	size_t i = gram_slot(g, gram);

	while (g->table[i] != FTS_LMDB_GRAM_EMPTY)
		i = (i + 1) & (g->table_cap - 1);
	g->table[i] = gram;
}

static void grams_table_grow(struct fts_lmdb_grams *g)
{
	size_t i;

	free(g->table);
	g->table_cap = g->table_cap < 256 ? 256 : g->table_cap * 2;
	g->table = fts_lmdb_realloc(NULL, g->table_cap, sizeof(*g->table));
	memset(g->table, 0xff, g->table_cap * sizeof(*g->table));
	for (i = 0; i < g->n; i++) {
		if (g->v[i] != FTS_LMDB_GRAM_EMPTY)
			grams_table_insert(g, g->v[i]);
	}
}

void fts_lmdb_grams_add(struct fts_lmdb_grams *g, uint64_t gram)
{
	size_t i;

	if (gram == FTS_LMDB_GRAM_EMPTY) {
		/* can't live in the table */
		if (g->have_empty_value)
			return;
		g->have_empty_value = true;
	} else {
		/* keep the table at most half full */
		if (g->table_cap < 2 * (g->n + 1))
			grams_table_grow(g);
		i = gram_slot(g, gram);
		while (g->table[i] != FTS_LMDB_GRAM_EMPTY) {
			if (g->table[i] == gram)
				return;
			i = (i + 1) & (g->table_cap - 1);
		}
		g->table[i] = gram;
	}
	if (g->n == g->cap) {
		g->cap = g->cap < 256 ? 256 : g->cap * 2;
		g->v = fts_lmdb_realloc(g->v, g->cap, sizeof(*g->v));
	}
	g->v[g->n++] = gram;
}

void fts_lmdb_grams_add_text(struct fts_lmdb_grams *g, const void *text,
			     size_t size, bool short_grams)
{
	const uint8_t *p = text, *end;
	uint32_t cp, c1 = 0, c2 = 0;
	unsigned int len, have = 0;

	if (size == 0)
		return;		/* text may be NULL: NULL + 0 is undefined */
	end = p + size;

	while (p < end) {
		len = fts_lmdb_utf8_get(p, end, &cp);
		if (len == 0 || cp == '\r' || cp == '\n') {
			have = 0;
			p += len == 0 ? 1 : len;
			continue;
		}
		p += len;
		if (short_grams) {
			fts_lmdb_grams_add(g, fts_lmdb_gram_pack1(cp));
			if (have >= 1)
				fts_lmdb_grams_add(g, fts_lmdb_gram_pack2(c2, cp));
		}
		if (have >= 2)
			fts_lmdb_grams_add(g, fts_lmdb_gram_pack(c1, c2, cp));
		else
			have++;
		c1 = c2;
		c2 = cp;
	}
}

void fts_lmdb_grams_clear(struct fts_lmdb_grams *g)
{
	size_t i, slot;

	if (g->table_cap > 64 * (g->n + 1024)) {
		/* a huge message grew the table: don't keep paying for it */
		free(g->table);
		g->table = NULL;
		g->table_cap = 0;
	} else if (g->table != NULL && g->n * 8 < g->table_cap) {
		/* few values in a big table: free just their slots (linear
		   probing: clearing every value's slot empties the table) */
		for (i = 0; i < g->n; i++) {
			if (g->v[i] == FTS_LMDB_GRAM_EMPTY)
				continue;
			slot = gram_slot(g, g->v[i]);
			while (g->table[slot] != g->v[i])
				slot = (slot + 1) & (g->table_cap - 1);
			g->table[slot] = FTS_LMDB_GRAM_EMPTY;
		}
	} else if (g->table != NULL) {
		memset(g->table, 0xff, g->table_cap * sizeof(*g->table));
	}
	g->n = 0;
	g->have_empty_value = false;
}

void fts_lmdb_grams_free(struct fts_lmdb_grams *g)
{
	free(g->v);
	free(g->table);
	memset(g, 0, sizeof(*g));
}

int fts_lmdb_key_analyze(const void *key, size_t size,
			 struct fts_lmdb_grams *g, unsigned int *chars_r)
{
	const uint8_t *p = key, *end = p + size;
	unsigned int len, chars = 0;
	uint32_t cp, cps[2] = { 0, 0 };

	while (p < end) {
		len = fts_lmdb_utf8_get(p, end, &cp);
		if (len == 0 || cp == '\r' || cp == '\n')
			return -1;
		p += len;
		if (chars < 2)
			cps[chars] = cp;
		chars++;
	}
	*chars_r = chars;
	if (chars >= 3)
		fts_lmdb_grams_add_text(g, key, size, false);
	else if (chars == 2)
		fts_lmdb_grams_add(g, fts_lmdb_gram_pack2(cps[0], cps[1]));
	else if (chars == 1)
		fts_lmdb_grams_add(g, fts_lmdb_gram_pack1(cps[0]));
	fts_lmdb_grams_finish(g);
	return 0;
}

uint64_t fts_lmdb_name_hash(const void *name, size_t size)
{
	const uint8_t *p = name;
	uint64_t h = 14695981039346656037ULL;
	size_t i;

	for (i = 0; i < size; i++) {
		uint8_t c = p[i];

		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		h ^= c;
		h *= 1099511628211ULL;
	}
	return h;
}
