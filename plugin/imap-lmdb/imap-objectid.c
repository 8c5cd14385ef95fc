/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "hex-binary.h"
#include "sha2.h"
#include "message-id.h"
#include "mail-storage.h"
#include "imap-objectid.h"

#include <ctype.h>

/* 128 bits of SHA-256: collisions stay out of reach (2^64 messages) and the
   identifiers stay short. */
#define OBJECTID_HASH_BYTES 16

const char *const objectid_thread_headers[] = {
	"References", "In-Reply-To", "Message-ID", NULL
};

static bool objectid_char_is_plain(unsigned char c)
{
	return i_isalnum(c) || c == '-';
}

bool objectid_is_valid(const char *id)
{
	size_t len = 0;

	for (; id[len] != '\0'; len++) {
		if (!objectid_char_is_plain(id[len]) && id[len] != '_')
			return FALSE;
	}
	return len > 0 && len <= OBJECTID_MAX_LEN;
}

static const char *objectid_hash(char prefix, const char *data)
{
	unsigned char digest[SHA256_RESULTLEN];

	sha256_get_digest(data, strlen(data), digest);
	return t_strdup_printf("%c%s", prefix,
			       binary_to_hex(digest, OBJECTID_HASH_BYTES));
}

const char *objectid_mailboxid(const guid_128_t mailbox_guid)
{
	return t_strconcat("F", guid_128_to_string(mailbox_guid), NULL);
}

const char *objectid_emailid(const char *guid)
{
	string_t *str = t_str_new(strlen(guid) + 16);
	const unsigned char *p;

	i_assert(*guid != '\0');

	str_append_c(str, 'M');
	for (p = (const unsigned char *)guid; *p != '\0'; p++) {
		if (objectid_char_is_plain(*p))
			str_append_c(str, *p);
		else
			str_printfa(str, "_%02X", *p);
		if (str_len(str) > OBJECTID_MAX_LEN)
			return objectid_hash('S', guid);
	}
	return str_c(str);
}

static int objectid_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool objectid_emailid_to_guid(const char *id, const char **guid_r)
{
	string_t *guid;
	const char *p;
	int hi, lo;

	if (id[0] != 'M' || id[1] == '\0' || !objectid_is_valid(id))
		return FALSE;

	guid = t_str_new(strlen(id));
	for (p = id + 1; *p != '\0'; p++) {
		if (*p != '_') {
			str_append_c(guid, *p);
			continue;
		}
		if ((hi = objectid_hex_digit(p[1])) < 0 ||
		    (lo = objectid_hex_digit(p[2])) < 0)
			return FALSE;
		str_append_c(guid, (char)(hi * 16 + lo));
		p += 2;
	}
	/* exactly one spelling per GUID: "_41" for "A" is not ours, and
	   neither is a GUID with a NUL in it */
	if (strlen(str_c(guid)) != str_len(guid) ||
	    strcmp(objectid_emailid(str_c(guid)), id) != 0)
		return FALSE;
	*guid_r = str_c(guid);
	return TRUE;
}

int objectid_mail_thread_root(struct mail *mail, const char **root_r)
{
	const char *value, *msgid;
	unsigned int i;
	int ret;

	for (i = 0; objectid_thread_headers[i] != NULL; i++) {
		ret = mail_get_first_header(mail, objectid_thread_headers[i],
					    &value);
		if (ret < 0)
			return -1;
		if (ret == 0)
			continue;
		msgid = message_id_get_next(&value);
		if (msgid != NULL) {
			*root_r = msgid;
			return 1;
		}
	}
	return 0;
}

int objectid_mail_threadid(struct mail *mail, const char **id_r)
{
	const char *root;
	int ret;

	if ((ret = objectid_mail_thread_root(mail, &root)) <= 0)
		return ret;
	*id_r = objectid_hash('T', root);
	return 1;
}
