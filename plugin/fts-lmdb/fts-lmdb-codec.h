#ifndef FTS_LMDB_CODEC_H
#define FTS_LMDB_CODEC_H

/*
 * Pure codecs of the fts_lmdb index: varints, posting blocks, sorted UID
 * sets and trigram extraction.  No Dovecot or LMDB headers, so that the
 * cmocka tests and the libFuzzer target link this file alone.  Memory comes
 * from malloc(); allocation failures abort, as Dovecot's allocators do.
 *
 * POSTING BLOCK (the value of a "fts_post" entry; its key carries the
 * block's first UID, see fts-lmdb-store.h):
 *     varint n            number of UIDs in the block, 1..FTS_LMDB_BLOCK_MAX_UIDS
 *     n-1 varints         delta of each following UID from the previous
 *                         one (>= 1, so UIDs strictly increase)
 * Varints are unsigned LEB128, at most 5 bytes for a u32, never overlong.
 *
 * GRAMS: three Unicode code points of the normalized text, 21 bits each,
 * packed into a u64 (first code point in the high bits; bit 63 clear).
 * Short grams answer keys of one and two code points: a bigram is
 * bit 63 + c1 << 21 + c2, a unigram bit 63 + bit 62 + c.  Gram windows
 * restart at CR, LF and at bytes that are not strict UTF-8, because
 * search keys never contain those: a key with CR or LF is left to Dovecot,
 * and a valid UTF-8 key can't match across an invalid byte.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define FTS_LMDB_BLOCK_MAX_UIDS 128
/* a block never needs more than this many bytes */
#define FTS_LMDB_BLOCK_MAX_SIZE (5 + (FTS_LMDB_BLOCK_MAX_UIDS - 1) * 5)

struct fts_lmdb_uids {
	uint32_t *v;
	size_t n, cap;
};

/* A set of distinct grams: v[0..n) in the order added (sorted after
   fts_lmdb_grams_finish()), with a hash table that keeps duplicates out.
   Zero-initialize. */
struct fts_lmdb_grams {
	uint64_t *v;
	size_t n, cap;
	/* open addressing; FTS_LMDB_GRAM_EMPTY marks a free slot */
	uint64_t *table;
	size_t table_cap;
	bool have_empty_value;
};

/* ---- varints ---- */
size_t fts_lmdb_varint_put(uint8_t *p, uint32_t value);
/* 0 = ok, -1 = truncated, too long or overlong */
int fts_lmdb_varint_get(const uint8_t **p, const uint8_t *end,
			uint32_t *value_r);

/* ---- UID sets: arrays sorted ascending without duplicates ---- */
void fts_lmdb_uids_push(struct fts_lmdb_uids *u, uint32_t uid);
void fts_lmdb_uids_reserve(struct fts_lmdb_uids *u, size_t n);
void fts_lmdb_uids_clear(struct fts_lmdb_uids *u);
void fts_lmdb_uids_free(struct fts_lmdb_uids *u);
void fts_lmdb_uids_copy(struct fts_lmdb_uids *dest,
			const struct fts_lmdb_uids *src);
bool fts_lmdb_uids_contains(const struct fts_lmdb_uids *u, uint32_t uid);
/* a = a AND b */
void fts_lmdb_uids_intersect(struct fts_lmdb_uids *a,
			     const struct fts_lmdb_uids *b);
/* a = a OR b */
void fts_lmdb_uids_union(struct fts_lmdb_uids *a,
			 const struct fts_lmdb_uids *b);
/* a = a AND NOT b */
void fts_lmdb_uids_remove(struct fts_lmdb_uids *a,
			  const struct fts_lmdb_uids *b);
/* sort and drop duplicates of an unsorted array */
void fts_lmdb_uids_normalize(struct fts_lmdb_uids *u);

/* ---- posting blocks ---- */
/* Encode uids[0..n) (strictly increasing, 1 <= n <= MAX_UIDS) into buf,
   which has room for FTS_LMDB_BLOCK_MAX_SIZE bytes.  Returns the size.
   uids[0] is not stored: it is the key's first UID. */
size_t fts_lmdb_block_encode(const uint32_t *uids, size_t n, uint8_t *buf);
/* Append the block's UIDs to out.  Returns 0, or -1 if the block is
   corrupt (its UIDs are then not appended). */
int fts_lmdb_block_decode(uint32_t first_uid, const void *data, size_t size,
			  struct fts_lmdb_uids *out);
/* The block's UID count and last UID without keeping them. 0 or -1. */
int fts_lmdb_block_info(uint32_t first_uid, const void *data, size_t size,
			uint32_t *count_r, uint32_t *last_uid_r);

/* ---- grams ---- */
uint64_t fts_lmdb_gram_pack(uint32_t c1, uint32_t c2, uint32_t c3);
uint64_t fts_lmdb_gram_pack2(uint32_t c1, uint32_t c2);
uint64_t fts_lmdb_gram_pack1(uint32_t c);
/* Decode one strict UTF-8 code point.  Returns its length, or 0 if the
   byte at p doesn't start a valid sequence (never reads past end). */
unsigned int fts_lmdb_utf8_get(const uint8_t *p, const uint8_t *end,
			       uint32_t *cp_r);
/* Add the trigrams of text to g, and with short_grams its unigrams and
   bigrams too.  Memory stays proportional to the distinct grams. */
void fts_lmdb_grams_add_text(struct fts_lmdb_grams *g, const void *text,
			     size_t size, bool short_grams);
void fts_lmdb_grams_add(struct fts_lmdb_grams *g, uint64_t gram);
/* sort (duplicates are never stored) */
void fts_lmdb_grams_finish(struct fts_lmdb_grams *g);
/* Sort v ascending (LSD radix sort through tmp, which has room for n;
   qsort()'s indirect comparisons dominated indexing). */
void fts_lmdb_sort_u64(uint64_t *v, uint64_t *tmp, size_t n);
void fts_lmdb_grams_clear(struct fts_lmdb_grams *g);
void fts_lmdb_grams_free(struct fts_lmdb_grams *g);

/* Analyse a normalized search key: its number of code points and its
   distinct grams (appended to g, sorted): trigrams when it has at least
   three code points, else its one short gram.  Returns
   0, or -1 if the key contains CR or LF or isn't valid UTF-8: such a key
   can't be answered from the index. */
int fts_lmdb_key_analyze(const void *key, size_t size,
			 struct fts_lmdb_grams *g, unsigned int *chars_r);

/* 64-bit FNV-1a of a header name, ASCII-lowercased: the "gram" of the
   header-name posting space. */
uint64_t fts_lmdb_name_hash(const void *name, size_t size);

#endif
