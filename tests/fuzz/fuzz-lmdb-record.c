/* libFuzzer target: the record codec of the LMDB layer (include/lmdb-db.h).

   The first input byte picks what the rest is fed to:
     0  ldb_msg_rec_decode(): a record that decodes must have its fields
        inside the input, its keyword list must walk to exactly
        keyword_count names, and (when no name holds a NUL byte) it must
        re-encode to the same bytes;
     1  ldb_mailbox_rec_decode(): decodes, re-encodes and decodes again to
        the same values;
     2  ldb_keyword_list_next() over a mailbox keyword list: every name
        lies inside the buffer and the walk always advances;
     3  the key parsers and ldb_body_info_decode();
     4  the other direction: a message record built from the input (the
        field bytes, then GUID, UIDL and keywords split at NUL bytes, within
        the limits ldb_msg_put() enforces) must encode to
        ldb_msg_rec_encoded_size() bytes and decode to the same fields.
   Any violated expectation abort()s, which libFuzzer reports as a crash. */

#include "lmdb-db.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(expr) do { if (!(expr)) abort(); } while (0)

static int within(const void *p, size_t len, const uint8_t *data, size_t size)
{
	const uint8_t *q = p;

	return q >= data && len <= size && q - data <= (ptrdiff_t)(size - len);
}

static void fuzz_msg_decode(const uint8_t *data, size_t size)
{
	struct ldb_msg_rec rec;
	const char *name, **names;
	size_t pos = 0, len;
	unsigned int n = 0;
	uint8_t *buf;
	int nul = 0;

	if (ldb_msg_rec_decode(data, size, &rec) < 0)
		return;
	CHECK(size >= LDB_MSG_REC_MIN_SIZE);
	CHECK(within(rec.guid, rec.guid_len, data, size));
	CHECK(within(rec.pop3_uidl, rec.pop3_uidl_len, data, size));
	CHECK(within(rec.keywords, rec.keywords_size, data, size));
	names = calloc(rec.keyword_count + 1, sizeof(*names));
	CHECK(names != NULL);
	while (ldb_msg_rec_keyword_next(&rec, &pos, &name, &len) > 0) {
		CHECK(n < rec.keyword_count);
		CHECK(len > 0 && within(name, len, data, size));
		nul |= memchr(name, '\0', len) != NULL;
		names[n] = strndup(name, len);
		CHECK(names[n] != NULL);
		n++;
	}
	CHECK(n == rec.keyword_count && pos == rec.keywords_size);
	nul |= memchr(rec.guid, '\0', rec.guid_len) != NULL;
	if (!nul) {
		/* canonical: encoding gives back the input */
		CHECK(ldb_msg_rec_encoded_size(&rec, names) == size);
		buf = malloc(size);
		CHECK(buf != NULL);
		ldb_msg_rec_encode(&rec, names, buf);
		CHECK(memcmp(buf, data, size) == 0);
		free(buf);
	}
	for (n = 0; names[n] != NULL; n++)
		free((void *)names[n]);
	free(names);
}

static void fuzz_mailbox_decode(const uint8_t *data, size_t size)
{
	struct ldb_mailbox_rec rec, rec2;
	uint8_t buf[LDB_MAILBOX_REC_SIZE];

	if (ldb_mailbox_rec_decode(data, size, &rec) < 0)
		return;
	CHECK(size >= LDB_MAILBOX_REC_SIZE && data[0] == 1);
	ldb_mailbox_rec_encode(&rec, buf);
	CHECK(ldb_mailbox_rec_decode(buf, sizeof(buf), &rec2) == 0);
	CHECK(memcmp(&rec, &rec2, sizeof(rec)) == 0);
	/* only the reserved bytes 1..3 and a tail may differ */
	CHECK(memcmp(buf + 4, data + 4, LDB_MAILBOX_REC_SIZE - 4) == 0);
}

static void fuzz_keyword_list(const uint8_t *data, size_t size)
{
	const char *name;
	size_t pos = 0, old, len;

	for (;;) {
		old = pos;
		if (ldb_keyword_list_next(data, size, &pos, &name, &len) <= 0)
			break;
		CHECK(pos > old && pos <= size);
		CHECK(len > 0 && pos == old + 2 + len);
		CHECK(within(name, len, data, size));
	}
	CHECK(pos <= size);
}

static void fuzz_keys(const uint8_t *data, size_t size)
{
	uint8_t guid[LDB_GUID_SIZE], hash[LDB_HASH_SIZE];
	uint8_t key[LDB_MSG_KEY_SIZE];
	struct ldb_body_info info;
	uint32_t uid, idx;

	if (ldb_msg_key_parse(data, size, guid, &uid) == 0) {
		CHECK(size == LDB_MSG_KEY_SIZE);
		ldb_msg_key(guid, uid, key);
		CHECK(memcmp(key, data, size) == 0);
	}
	if (ldb_chunk_key_parse(data, size, hash, &idx) == 0)
		CHECK(size == LDB_CHUNK_KEY_SIZE);
	if (ldb_body_info_decode(data, size, &info) == 0)
		CHECK(size == LDB_BODY_REC_SIZE);
}

/* the next NUL-terminated piece of data (at most 0xffff bytes) */
static const char *next_piece(const uint8_t **p, const uint8_t *end,
			      size_t *len_r)
{
	const uint8_t *nul = memchr(*p, '\0', end - *p);
	size_t len = (nul == NULL ? end : nul) - *p;
	char *s;

	if (len > 0xffff)
		len = 0xffff;
	s = strndup((const char *)*p, len);
	CHECK(s != NULL);
	*p += len + (*p + len < end ? 1 : 0);
	*len_r = len;
	return s;
}

static void fuzz_msg_encode(const uint8_t *data, size_t size)
{
	struct ldb_msg_rec rec, rec2;
	const uint8_t *p = data + 48, *end = data + size;
	const char *names[9], *guid, *uidl;
	size_t len, total, pos = 0;
	unsigned int i, n = 0;
	uint8_t *buf;

	if (size < 48)
		return;
	memset(&rec, 0, sizeof(rec));
	rec.flags = data[0];
	rec.pop3_order = ((uint32_t)data[1] << 24) | (data[2] << 16) |
		(data[3] << 8) | data[4];
	memcpy(&rec.received_date, data + 5, 8);
	memcpy(&rec.save_date, data + 13, 8);
	memcpy(&rec.physical_size, data + 21, 8);
	memcpy(&rec.virtual_size, data + 29, 8);
	memcpy(&rec.modseq, data + 37, 8);
	memcpy(rec.body_hash, data + 16, LDB_HASH_SIZE);
	guid = next_piece(&p, end, &rec.guid_len);
	uidl = next_piece(&p, end, &rec.pop3_uidl_len);
	rec.guid = guid;
	rec.pop3_uidl = uidl;
	while (p < end && n < 8) {
		names[n] = next_piece(&p, end, &len);
		if (len == 0)
			free((void *)names[n]);	/* ldb_msg_put() refuses "" */
		else
			n++;
	}
	names[n] = NULL;

	total = ldb_msg_rec_encoded_size(&rec, names);
	buf = malloc(total);
	CHECK(buf != NULL);
	ldb_msg_rec_encode(&rec, names, buf);
	CHECK(ldb_msg_rec_decode(buf, total, &rec2) == 0);
	CHECK(rec2.flags == rec.flags && rec2.pop3_order == rec.pop3_order &&
	      rec2.received_date == rec.received_date &&
	      rec2.save_date == rec.save_date &&
	      rec2.physical_size == rec.physical_size &&
	      rec2.virtual_size == rec.virtual_size &&
	      rec2.modseq == rec.modseq &&
	      memcmp(rec2.body_hash, rec.body_hash, LDB_HASH_SIZE) == 0);
	CHECK(rec2.guid_len == rec.guid_len &&
	      memcmp(rec2.guid, guid, rec.guid_len) == 0);
	CHECK(rec2.pop3_uidl_len == rec.pop3_uidl_len &&
	      memcmp(rec2.pop3_uidl, uidl, rec.pop3_uidl_len) == 0);
	CHECK(rec2.keyword_count == n);
	for (i = 0; i < n; i++) {
		const char *name;

		CHECK(ldb_msg_rec_keyword_next(&rec2, &pos, &name, &len) > 0);
		CHECK(len == strlen(names[i]) &&
		      memcmp(name, names[i], len) == 0);
		free((void *)names[i]);
	}
	CHECK(ldb_msg_rec_keyword_next(&rec2, &pos, &uidl, &len) == 0);
	free(buf);
	free((void *)rec.guid);
	free((void *)rec.pop3_uidl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 5) {
	case 0:
		fuzz_msg_decode(data + 1, size - 1);
		break;
	case 1:
		fuzz_mailbox_decode(data + 1, size - 1);
		break;
	case 2:
		fuzz_keyword_list(data + 1, size - 1);
		break;
	case 3:
		fuzz_keys(data + 1, size - 1);
		break;
	case 4:
		fuzz_msg_encode(data + 1, size - 1);
		break;
	}
	return 0;
}
