#ifndef IMAP_OBJECTID_H
#define IMAP_OBJECTID_H

/* RFC 8474 object identifiers, as this plugin derives them. Every function
   returns data stack memory. The formats are documented in README.md
   ("OBJECTID for IMAP"); changing one changes identifiers that clients
   have cached, so don't.

     objectid  = 1*255(ALPHA / DIGIT / "_" / "-")     (RFC 8474 section 7)

     MAILBOXID = "F" 32*32HEXLOWER          the mailbox GUID
     EMAILID   = "M" esc(message GUID)      if that fits in 255 characters
               / "S" 32*32HEXLOWER          else: SHA-256(message GUID)
     THREADID  = "T" 32*32HEXLOWER          SHA-256(thread root Message-ID)

   esc() keeps A-Z, a-z, 0-9 and "-", and writes any other byte as "_"
   followed by two upper-case hex digits. It is injective, so the "M" form
   maps back to the GUID (SEARCH EMAILID becomes a GUID search). The GUIDs
   of lmdb, sdbox and mdbox are 32 lower-case hex digits and pass through
   unchanged. */

#include "guid.h"

#define OBJECTID_MAX_LEN 255

struct mail;

/* TRUE if id matches the objectid ABNF. */
bool objectid_is_valid(const char *id);

const char *objectid_mailboxid(const guid_128_t mailbox_guid);

/* guid is the message GUID as mail_get_special(MAIL_FETCH_GUID) gives it;
   it must not be empty. */
const char *objectid_emailid(const char *guid);
/* If id is an EMAILID of the "M" form, return TRUE and the GUID it was
   made from. FALSE for anything else (including the "S" form). */
bool objectid_emailid_to_guid(const char *id, const char **guid_r);

/* The thread root of a message: the first valid message-id in References,
   else in In-Reply-To, else its own Message-ID (without the <>). Returns 1
   if found, 0 if the message has none of them, -1 on error. */
int objectid_mail_thread_root(struct mail *mail, const char **root_r);
/* THREADID of mail: 1 and *id_r, 0 if there is none (THREADID NIL),
   -1 on error. */
int objectid_mail_threadid(struct mail *mail, const char **id_r);

/* The header fields objectid_mail_thread_root() reads, NULL-terminated. */
extern const char *const objectid_thread_headers[];

#endif
