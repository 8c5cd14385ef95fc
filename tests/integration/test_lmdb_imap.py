"""IMAP protocol tests of the lmdb mailbox format (mail_location lmdb:~/lmdb).

Every test runs against a private, real Dovecot (see conftest.py).  Most
commands go through RawImap, a tiny raw IMAP client on a socket: it sends
exactly the bytes given (so MULTIAPPEND and literals can be tested), keeps
every untagged response in order, and parses FETCH responses.  imaplib is
used for the LOGIN tests.
"""

import base64
import calendar
import imaplib
import os
import re
import socket
import ssl
import time

import pytest

from dovecot_harness import make_message

# The fixtures' default mail_location is lmdb:~/lmdb (conftest.py); setting
# DOVECOT_TEST_MAIL_LOCATION=maildir:~/Maildir runs the same tests against
# stock maildir as a reference.


# ======================================================= raw IMAP client

class Lit:
    """A literal in a command: {n}\\r\\n<data> (synchronizing unless plus)."""

    def __init__(self, data, plus=False):
        self.data = data if isinstance(data, bytes) else data.encode()
        self.plus = plus


class Resp:
    def __init__(self, tag, tagged, untagged):
        self.tag = tag
        self.tagged = tagged                  # b"T1 OK [..] text\r\n"
        self.untagged = untagged              # [b"* ...\r\n", ...]
        self.status = tagged.split(b" ", 2)[1].decode()

    def code(self, name):
        """Args of the response code [name ...] of the tagged line or of an
        untagged OK, as a list of bytes; None if absent."""
        for line in [self.tagged] + self.untagged:
            m = re.match(rb"^(?:\* |\S+ )OK \[" + name.encode() +
                         rb"(?: ([^\]]*))?\]", line)
            if m:
                return (m.group(1) or b"").split()
        return None

    def lines(self, word):
        """Untagged responses '* word ...' or '* n word ...'."""
        out = []
        for line in self.untagged:
            toks = line.rstrip(b"\r\n").split(b" ", 3)
            if len(toks) > 1 and toks[1].upper() == word.encode():
                out.append(line)
            elif len(toks) > 2 and toks[2].upper() == word.encode():
                out.append(line)
        return out

    def __repr__(self):
        return "<Resp %r untagged=%r>" % (self.tagged, self.untagged[:20])


class RawImap:
    def __init__(self, dovecot, tls=False, user="testuser", login=True):
        sock = socket.create_connection((dovecot.host,
                                         dovecot.ports["imaps" if tls
                                                       else "imap"]), 30)
        if tls:
            sock = dovecot.ssl_context().wrap_socket(sock)
        self.sock = sock
        self.f = sock.makefile("rb")
        self.greeting = self._read_response()
        assert self.greeting.startswith(b"* OK"), self.greeting
        self.n = 0
        if login:
            self.ok(b"LOGIN " + user.encode() + b" " +
                    dovecot.users[user].encode())

    def _read_response(self):
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed; got %r" % out)
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out
            out += self.f.read(int(m.group(1)))

    def run(self, *parts):
        """Send one command made of bytes and Lit parts; return Resp."""
        self.n += 1
        tag = b"T%d" % self.n
        untagged = []
        buf = tag + b" "
        for part in parts:
            if isinstance(part, str):
                part = part.encode()
            if isinstance(part, Lit):
                buf += b"{%d%s}\r\n" % (len(part.data),
                                        b"+" if part.plus else b"")
                if not part.plus:
                    self.sock.sendall(buf)
                    buf = b""
                    while True:
                        line = self._read_response()
                        if line.startswith(b"+"):
                            break
                        if line.startswith(tag + b" "):
                            return Resp(tag, line, untagged)
                        untagged.append(line)
                buf += part.data
            else:
                buf += part
        self.sock.sendall(buf + b"\r\n")
        while True:
            line = self._read_response()
            if line.startswith(tag + b" "):
                return Resp(tag, line, untagged)
            untagged.append(line)

    def ok(self, *parts):
        r = self.run(*parts)
        assert r.status == "OK", r
        return r

    def no(self, *parts):
        r = self.run(*parts)
        assert r.status == "NO", r
        return r

    def fetch(self, seqset, items, uid=False):
        """{seq: {ITEM: value}} parsed from the FETCH responses."""
        r = self.ok(b"UID " if uid else b"", b"FETCH ", seqset, b" ", items)
        return parse_fetches(r)

    def select(self, box, examine=False):
        return self.ok(b"EXAMINE " if examine else b"SELECT ", quote(box))

    def status(self, box, items=b"MESSAGES UIDNEXT UIDVALIDITY UNSEEN "
               b"HIGHESTMODSEQ RECENT"):
        r = self.ok(b"STATUS ", quote(box), b" (", items, b")")
        line = r.lines("STATUS")[0]
        toks = parse_tokens(line)
        vals = toks[-1]
        return {vals[i].decode().upper(): int(vals[i + 1])
                for i in range(0, len(vals), 2)}

    def append(self, box, msg, flags=b"", date=None):
        parts = [b"APPEND ", quote(box)]
        if flags:
            parts += [b" (", flags, b")"]
        if date:
            parts += [b' "', date.encode(), b'"']
        parts += [b" ", Lit(msg, plus=True)]
        r = self.ok(*parts)
        code = r.code("APPENDUID")
        assert code is not None, r
        return int(code[0]), int(code[1])

    def list(self, ref=b"", pattern=b"*", cmd=b"LIST", opts=b""):
        r = self.ok(cmd, b" ", opts, quote(ref), b" ", quote(pattern))
        out = {}
        for line in r.lines(cmd.decode().split()[0]):
            toks = parse_tokens(line)
            out[toks[-1].decode()] = [f.decode() for f in toks[2]]
        return out

    def logout(self):
        try:
            self.run(b"LOGOUT")
        finally:
            self.f.close()
            self.sock.close()


def quote(s):
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def parse_tokens(data):
    """Parse one response line (with literals) into nested lists.
    Atoms are bytes (BODY[...]<n> stays one atom), NIL is None, strings and
    literals are bytes too."""
    pos = 0
    stack = [[]]
    n = len(data)
    while pos < n:
        c = data[pos:pos + 1]
        if c in (b" ", b"\r", b"\n"):
            pos += 1
        elif c == b"(":
            stack.append([])
            pos += 1
        elif c == b")":
            lst = stack.pop()
            stack[-1].append(lst)
            pos += 1
        elif c == b'"':
            pos += 1
            s = b""
            while data[pos:pos + 1] != b'"':
                if data[pos:pos + 1] == b"\\":
                    pos += 1
                s += data[pos:pos + 1]
                pos += 1
            pos += 1
            stack[-1].append(s)
        elif c == b"{" or data[pos:pos + 2] == b"~{":   # literal(8)
            if c == b"~":
                pos += 1
            end = data.index(b"}\r\n", pos)
            size = int(data[pos + 1:end].rstrip(b"+"))
            pos = end + 3
            stack[-1].append(data[pos:pos + size])
            pos += size
        else:
            start = pos
            depth = 0
            while pos < n:
                ch = data[pos:pos + 1]
                if ch == b"[":
                    depth += 1
                elif ch == b"]":
                    depth -= 1
                elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                    break
                pos += 1
            atom = data[start:pos]
            stack[-1].append(None if atom.upper() == b"NIL" else atom)
    assert len(stack) == 1, data
    return stack[0]


def parse_fetches(resp):
    out = {}
    for line in resp.lines("FETCH"):
        toks = parse_tokens(line)
        seq = int(toks[1])
        items = toks[3]
        d = out.setdefault(seq, {})
        for i in range(0, len(items), 2):
            d[items[i].decode().upper()] = items[i + 1]
    return out


def apply_expunges(uids, resp):
    """The UID list after the '* n EXPUNGE' responses of resp (in order)."""
    uids = list(uids)
    for line in resp.lines("EXPUNGE"):
        del uids[int(line.split()[1]) - 1]
    return uids


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def imap_date(epoch, offset_minutes=0):
    """IMAP date-time string of epoch shown in the given UTC offset."""
    t = time.gmtime(epoch + offset_minutes * 60)
    sign = "-" if offset_minutes < 0 else "+"
    off = abs(offset_minutes)
    return "%02d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        t.tm_mday, ("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"
                    .split())[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min,
        t.tm_sec, sign, off // 60, off % 60)


def parse_imap_date(s):
    if isinstance(s, bytes):
        s = s.decode()
    m = re.match(r"^\s*(\d+)-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) "
                 r"([+-])(\d\d)(\d\d)$", s)
    assert m, s
    mon = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split() \
        .index(m.group(2)) + 1
    t = calendar.timegm((int(m.group(3)), mon, int(m.group(1)),
                         int(m.group(4)), int(m.group(5)), int(m.group(6))))
    off = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    return t - off if m.group(7) == "+" else t + off


def flagset(v):
    return set(x.decode() for x in v)


def uids_of(c, criteria=b"ALL"):
    r = c.ok(b"UID SEARCH ", criteria)
    line = r.lines("SEARCH")[0]
    return [int(x) for x in line.split()[2:]]


def seqs_of(c, criteria):
    r = c.ok(b"SEARCH ", criteria)
    line = r.lines("SEARCH")[0]
    return [int(x) for x in line.split()[2:]]


# ======================================================= test messages

ATTACHMENT = bytes(range(256)) * 8 + b"\x00\xff tail"

MULTIPART = crlf(b"""From: Alice Example <alice@example.com>
To: Bob <bob@example.org>, carol@example.net
Cc: "Dave, D." <dave@example.com>
Subject: =?UTF-8?B?R3LDvMOfZSBtdWx0aXBhcnQ=?=
Date: Tue, 02 Jan 2024 10:11:12 +0100
Message-ID: <multi-1@example.com>
In-Reply-To: <parent@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer-bnd"

This is a multi-part message in MIME format.
--outer-bnd
Content-Type: multipart/alternative; boundary="alt-bnd"

--alt-bnd
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 au lait, line one.
Soft=
 break and =3D sign.
--alt-bnd
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<html><body><p>Hello <b>HTML</b></p></body></html>
--alt-bnd--
--outer-bnd
Content-Type: application/octet-stream; name="data.bin"
Content-Disposition: attachment; filename="data.bin"
Content-Transfer-Encoding: base64

""" + base64.encodebytes(ATTACHMENT) + b"""
--outer-bnd
Content-Type: message/rfc822

From: inner@example.com
To: outer@example.com
Subject: inner message
Date: Wed, 03 Jan 2024 01:02:03 +0000
Message-ID: <inner-1@example.com>

Inner body line.
--outer-bnd--
Epilogue text.
""")

EIGHTBIT = crlf(
    "From: =?ISO-8859-1?Q?J=F6rg?= <joerg@example.de>\n"
    "To: testuser@example.com\n"
    "Subject: 8bit body\n"
    "Date: Thu, 04 Jan 2024 12:00:00 -0500\n"
    "Message-ID: <eightbit@example.de>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Grüße aus Köln ✓ – naïve café\n"
    "Second line ÄÖÜ.\n".encode("utf-8"))

BARE_LF = (b"From: lf@example.com\nTo: testuser@example.com\n"
           b"Subject: bare LF line endings\n"
           b"Date: Fri, 05 Jan 2024 08:00:00 +0000\n\n"
           b"line a\nline b\n\nline d\n")

NO_BODY = crlf(b"From: nobody@example.com\nSubject: empty body\n"
               b"Date: Sat, 06 Jan 2024 00:00:00 +0000\n\n")

NO_FINAL_NEWLINE = crlf(b"From: x@example.com\nSubject: no final newline\n"
                        b"Date: Sat, 06 Jan 2024 00:00:01 +0000\n\n"
                        b"last line") .rstrip(b"\r\n")


def big_message():
    """> 3 LMDB body chunks (64 KiB) with a recognisable pattern."""
    lines = [b"%06d abcdefghijklmnopqrstuvwxyz0123456789" % i
             for i in range(5000)]
    return crlf(b"From: big@example.com\nSubject: big message\n"
                b"Date: Sun, 07 Jan 2024 00:00:00 +0000\n\n" +
                b"\n".join(lines) + b"\n")


CORPUS = [("plain", make_message("plain one", "hello\nworld\n")),
          ("multipart", MULTIPART),
          ("8bit", EIGHTBIT),
          ("barelf", BARE_LF),
          ("nobody", NO_BODY),
          ("nofinalnl", NO_FINAL_NEWLINE),
          ("big", big_message())]

# BINARY parts to fetch for each corpus message
BINARY_PARTS = {"multipart": ["1.1", "1.2", "2", "3"],
                "8bit": ["1"], "plain": ["1"], "barelf": ["1"],
                "nobody": ["1"], "nofinalnl": ["1"], "big": ["1"]}

BASE_DATE = calendar.timegm((2023, 6, 15, 12, 30, 45))


# ======================================================= LOGIN

def test_login_plaintext_port(dovecot):
    conn = dovecot.imap(login=False)
    assert not isinstance(conn.sock, ssl.SSLSocket)
    typ, _ = conn.login("testuser", "pass")
    assert typ == "OK"
    typ, data = conn.select("INBOX")
    assert typ == "OK" and data == [b"0"]
    conn.logout()
    bad = dovecot.imap(login=False)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login("testuser", "wrong")
    bad.logout()
    # the lmdb storage really is in use
    if dovecot.mail_location.startswith("lmdb:"):
        assert os.path.isdir(os.path.join(dovecot.home("testuser"), "lmdb"))


def test_login_tls_port(dovecot):
    conn = dovecot.imaps(login=False)
    assert isinstance(conn.sock, ssl.SSLSocket)
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert conn.login("user2", "pass2")[0] == "OK"
    msg = make_message("over tls", "secret body\n")
    assert conn.append("INBOX", None, None, msg)[0] == "OK"
    conn.select("INBOX")
    typ, data = conn.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == msg
    conn.logout()
    raw = RawImap(dovecot, tls=True, user="user2")
    assert raw.status("INBOX")["MESSAGES"] == 1
    raw.logout()
    # user2's mail is not visible to testuser
    other = RawImap(dovecot)
    assert other.status("INBOX")["MESSAGES"] == 0
    other.logout()


# ======================================================= mailboxes

def test_create_delete_list(dovecot):
    c = RawImap(dovecot)
    c.ok(b'CREATE "Projects"')
    c.ok(b'CREATE "Projects/2024"')
    c.ok(b'CREATE "Deep/a/b/"')          # trailing separator, parents too
    c.ok(b'CREATE "Caf&AOk-"')             # mUTF-7 name
    c.no(b'CREATE "Projects"')             # already exists
    c.status("INBOX")                      # INBOX exists once opened
    c.no(b'CREATE "INBOX"')
    boxes = c.list()
    for name in ("INBOX", "Projects", "Projects/2024", "Deep", "Deep/a",
                 "Deep/a/b", "Caf&AOk-"):
        assert name in boxes, boxes
    assert "\\HasChildren" in boxes["Projects"]
    assert "\\HasNoChildren" in boxes["Projects/2024"]
    assert set(c.list(pattern=b"Projects/%")) == {"Projects/2024"}
    assert set(c.list(pattern=b"%")) >= {"INBOX", "Projects", "Deep"}
    assert "Projects/2024" not in c.list(pattern=b"%")

    uid_ok = c.append("Projects/2024", make_message("in child"))
    assert uid_ok[1] == 1
    assert c.status("Projects/2024")["MESSAGES"] == 1
    old_uv = c.status("Projects/2024")["UIDVALIDITY"]
    c.ok(b'DELETE "Projects/2024"')
    boxes = c.list()
    assert "Projects/2024" not in boxes
    assert "\\HasNoChildren" in boxes["Projects"]
    c.no(b'DELETE "Projects/2024"')        # no longer exists
    c.no(b'STATUS "Projects/2024" (MESSAGES)')
    c.no(b'SELECT "Projects/2024"')
    # recreating gives an empty mailbox with a new UIDVALIDITY
    c.ok(b'CREATE "Projects/2024"')
    st = c.status("Projects/2024")
    assert st["MESSAGES"] == 0 and st["UIDNEXT"] == 1
    assert st["UIDVALIDITY"] != old_uv
    c.select("Projects/2024")
    assert uids_of(c) == []
    c.ok(b"CLOSE")
    c.ok(b'DELETE "Caf&AOk-"')
    c.no(b'DELETE "INBOX"')
    assert "Caf&AOk-" not in c.list()
    c.logout()
    # the same after a restart
    dovecot.restart()
    c = RawImap(dovecot)
    boxes = c.list()
    assert {"Projects", "Projects/2024", "Deep/a/b"} <= set(boxes)
    assert "Caf&AOk-" not in boxes
    c.logout()


def test_delete_selected_and_nonempty(dovecot):
    c = RawImap(dovecot)
    c.ok(b"CREATE Full")
    for i in range(3):
        c.append("Full", make_message("full %d" % i))
    c.select("Full")
    c.ok(b"DELETE Full")
    # Dovecot disconnects a client whose selected mailbox it deleted
    with pytest.raises((EOFError, OSError)):
        c.run(b"NOOP")
    c = RawImap(dovecot)
    c.no(b"SELECT Full")
    assert "Full" not in c.list()
    c.ok(b"CREATE Full")
    assert c.status("Full")["MESSAGES"] == 0
    c.logout()


def test_rename_simple(dovecot):
    c = RawImap(dovecot)
    c.ok(b"CREATE Old")
    msgs = [make_message("ren %d" % i, "body %d\n" % i) for i in range(3)]
    for m in msgs:
        c.append("Old", m, flags=b"\\Flagged")
    before = c.status("Old")
    c.ok(b"RENAME Old New")
    assert "Old" not in c.list()
    assert "New" in c.list()
    c.no(b"SELECT Old")
    after = c.status("New")
    for k in ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"):
        assert after[k] == before[k], (k, before, after)
    c.select("New")
    f = c.fetch(b"1:*", b"(UID FLAGS BODY.PEEK[])")
    assert [f[s]["BODY[]"] for s in sorted(f)] == msgs
    assert all("\\Flagged" in flagset(f[s]["FLAGS"]) for s in f)
    # the old name can be reused for a new, empty mailbox
    c.ok(b"CREATE Old")
    st_old = c.status("Old")
    assert st_old["MESSAGES"] == 0 and st_old["UIDNEXT"] == 1
    assert st_old["UIDVALIDITY"] != before["UIDVALIDITY"]
    c.append("Old", make_message("new in Old"))
    assert c.status("New")["MESSAGES"] == 3
    c.no(b"RENAME Nonexistent Whatever")
    c.ok(b"CREATE Other")
    c.no(b"RENAME New Other")              # target exists
    c.logout()


def test_rename_parent_with_children(dovecot):
    c = RawImap(dovecot)
    names = ["Parent", "Parent/Child", "Parent/Child/Grand", "Parent/Sib"]
    for n in names:
        c.ok(b"CREATE ", quote(n))
    c.ok(b"CREATE ParentX")                # prefix-alike, must not move
    content = {}
    for i, n in enumerate(names):
        content[n] = [make_message("%s %d" % (n, j), "in %s #%d\n" % (n, j))
                      for j in range(i + 1)]
        for m in content[n]:
            c.append(n, m)
    c.append("ParentX", make_message("px"))
    before = {n: c.status(n) for n in names}
    c.ok(b"SUBSCRIBE Parent/Child")

    c.ok(b"RENAME Parent Moved/Renamed")
    boxes = c.list()
    for n in names:
        assert n not in boxes, boxes
        new = "Moved/Renamed" + n[len("Parent"):]
        assert new in boxes, boxes
    assert "ParentX" in boxes and c.status("ParentX")["MESSAGES"] == 1
    c.logout()

    def check(c):
        for n in names:
            new = "Moved/Renamed" + n[len("Parent"):]
            st = c.status(new)
            for k in ("MESSAGES", "UIDVALIDITY", "UIDNEXT"):
                assert st[k] == before[n][k], (n, k, before[n], st)
            c.select(new, examine=True)
            f = c.fetch(b"1:*", b"(BODY.PEEK[])")
            assert [f[s]["BODY[]"] for s in sorted(f)] == content[n]
        c.no(b"SELECT Parent/Child")

    c = RawImap(dovecot)
    check(c)
    c.logout()
    dovecot.restart()
    c = RawImap(dovecot)
    check(c)
    # a renamed child can get new mail and renaming back works too
    uv, uid = c.append("Moved/Renamed/Child", make_message("after rename"))
    assert uv == before["Parent/Child"]["UIDVALIDITY"]
    assert uid == before["Parent/Child"]["UIDNEXT"]
    c.ok(b"RENAME Moved/Renamed Parent")
    assert c.status("Parent/Child/Grand")["MESSAGES"] == 3
    assert c.status("Parent/Child")["MESSAGES"] == 3
    c.logout()


def test_rename_inbox(dovecot):
    c = RawImap(dovecot)
    msgs = [make_message("inbox %d" % i) for i in range(2)]
    for m in msgs:
        c.append("INBOX", m)
    r = c.run(b"RENAME INBOX Saved")
    if r.status == "NO":
        # as with maildir, where INBOX is the root directory
        assert b"[CANNOT]" in r.tagged, r
        assert c.status("INBOX")["MESSAGES"] == 2
        assert "Saved" not in c.list()
        c.logout()
        return
    assert r.status == "OK", r
    # RFC 3501: messages move, INBOX remains and is empty
    assert c.status("INBOX")["MESSAGES"] == 0
    assert c.status("Saved")["MESSAGES"] == 2
    c.select("Saved")
    f = c.fetch(b"1:*", b"(BODY.PEEK[])")
    assert [f[s]["BODY[]"] for s in sorted(f)] == msgs
    c.logout()


def test_subscribe_lsub(dovecot):
    c = RawImap(dovecot)
    for n in (b"Sub1", b"Sub2", b"Sub1/Kid"):
        c.ok(b"CREATE ", n)
    c.ok(b"SUBSCRIBE Sub1")
    c.ok(b"SUBSCRIBE Sub1/Kid")
    c.no(b"SUBSCRIBE NotExisting")          # Dovecot refuses this
    c.ok(b"CREATE NotExisting")
    c.ok(b"SUBSCRIBE NotExisting")
    c.ok(b"DELETE NotExisting")             # subscription stays
    lsub = c.list(cmd=b"LSUB")
    assert {"Sub1", "Sub1/Kid", "NotExisting"} <= set(lsub)
    assert "Sub2" not in lsub
    sub = c.list(opts=b"(SUBSCRIBED) ")
    assert "\\Subscribed" in sub["Sub1"]
    assert "\\NonExistent" in sub["NotExisting"]
    assert "Sub2" not in sub
    # plain LIST with RETURN (SUBSCRIBED)
    r = c.ok(b'LIST "" "*" RETURN (SUBSCRIBED)')
    sub_flags = {parse_tokens(l)[-1].decode(): flagset(parse_tokens(l)[2])
                 for l in r.lines("LIST")}
    assert "\\Subscribed" in sub_flags["Sub1"]
    assert "\\Subscribed" not in sub_flags["Sub2"]
    c.ok(b"UNSUBSCRIBE Sub1")
    lsub = c.list(cmd=b"LSUB")
    assert "Sub1" not in lsub or "\\Noselect" in lsub["Sub1"]
    assert "Sub1/Kid" in lsub
    c.ok(b"UNSUBSCRIBE NotExisting")
    c.logout()
    dovecot.restart()
    c = RawImap(dovecot)
    sub = c.list(opts=b"(SUBSCRIBED) ")
    assert set(sub) == {"Sub1/Kid"} | ({"Sub1"} if "Sub1" in sub else set())
    assert "\\Subscribed" in sub["Sub1/Kid"]
    assert "Sub1" not in sub or "\\Subscribed" not in sub["Sub1"]
    c.logout()


def test_status(dovecot):
    c = RawImap(dovecot)
    c.ok(b"CREATE Stat")
    st0 = c.status("Stat")
    assert st0["MESSAGES"] == 0 and st0["UNSEEN"] == 0
    assert st0["UIDNEXT"] == 1 and st0["UIDVALIDITY"] > 0
    c.append("Stat", make_message("a"), flags=b"\\Seen")
    c.append("Stat", make_message("b"))
    c.append("Stat", make_message("c"), flags=b"\\Flagged")
    st = c.status("Stat")
    assert st["MESSAGES"] == 3
    assert st["UNSEEN"] == 2
    assert st["UIDNEXT"] == 4
    assert st["RECENT"] == 3
    assert st["UIDVALIDITY"] == st0["UIDVALIDITY"]
    assert st["HIGHESTMODSEQ"] > st0["HIGHESTMODSEQ"]
    # a flag change raises HIGHESTMODSEQ and changes UNSEEN
    c.select("Stat")
    c.ok(b"STORE 2 +FLAGS.SILENT (\\Seen)")
    c.ok(b"CLOSE")
    st2 = c.status("Stat")
    assert st2["UNSEEN"] == 1
    assert st2["HIGHESTMODSEQ"] > st["HIGHESTMODSEQ"]
    assert st2["RECENT"] == 0           # SELECT took the \Recent flags
    # STATUS of another session sees the same
    c2 = RawImap(dovecot)
    assert c2.status("Stat") == st2
    c2.logout()
    c.no(b"STATUS Nonexistent (MESSAGES)")
    c.logout()


# ======================================================= SELECT / EXAMINE

def test_select_and_examine(dovecot):
    for i in range(3):
        dovecot.lmtp_deliver("testuser", make_message("sel %d" % i))
    c = RawImap(dovecot)
    r = c.select("INBOX", examine=True)
    assert b"[READ-ONLY]" in r.tagged
    assert r.lines("EXISTS")[0].split()[1] == b"3"
    assert r.lines("RECENT")[0].split()[1] == b"3"
    uidvalidity = int(r.code("UIDVALIDITY")[0])
    assert int(r.code("UIDNEXT")[0]) == 4
    assert r.lines("FLAGS")
    # read-only: STORE/EXPUNGE change nothing (Dovecot answers STORE with
    # "OK Store ignored with read-only mailbox"), FETCH BODY[] does not
    # set \Seen
    r = c.run(b"STORE 1 +FLAGS (\\Deleted)")
    assert r.status == "NO" or b"ignored" in r.tagged, r
    assert not r.lines("FETCH")
    r = c.run(b"UID STORE 1:* +FLAGS (\\Flagged)")
    assert r.status == "NO" or b"ignored" in r.tagged, r
    r = c.run(b"EXPUNGE")
    assert not r.lines("EXPUNGE")
    f = c.fetch(b"1", b"(FLAGS BODY[])")
    assert "\\Seen" not in flagset(f[1]["FLAGS"])
    f = c.fetch(b"1:*", b"(FLAGS)")
    assert all(flagset(f[s]["FLAGS"]) <= {"\\Recent"} for s in f), f
    c.ok(b"CLOSE")
    # EXAMINE again: the messages are still \Recent
    r = c.select("INBOX", examine=True)
    assert r.lines("RECENT")[0].split()[1] == b"3"
    c.ok(b"CLOSE")

    r = c.select("INBOX")
    assert b"[READ-WRITE]" in r.tagged
    assert int(r.code("UIDVALIDITY")[0]) == uidvalidity
    assert r.lines("RECENT")[0].split()[1] == b"3"
    assert b"\\*" in r.code("PERMANENTFLAGS")[0] + b"".join(
        r.code("PERMANENTFLAGS"))
    f = c.fetch(b"1:*", b"(FLAGS)")
    assert all("\\Recent" in flagset(f[s]["FLAGS"]) for s in f)
    c.ok(b"STORE 1 +FLAGS (\\Flagged)")
    f = c.fetch(b"1", b"(BODY[])")
    f = c.fetch(b"1", b"(FLAGS)")
    assert {"\\Seen", "\\Flagged"} <= flagset(f[1]["FLAGS"])
    c.logout()

    c = RawImap(dovecot)
    r = c.select("INBOX")
    assert r.lines("RECENT")[0].split()[1] == b"0"
    assert r.lines("EXISTS")[0].split()[1] == b"3"
    # the unseen code points at the first unseen message
    assert r.code("UNSEEN") == [b"2"]
    c.no(b"SELECT Nonexistent")
    c.logout()


# ======================================================= APPEND

def test_append_flags_and_internaldate(dovecot):
    c = RawImap(dovecot)
    cases = [
        ("\\Seen \\Flagged", imap_date(BASE_DATE, 0)),
        ("\\Answered \\Draft $Forwarded MyKeyword", imap_date(BASE_DATE + 1, 150)),
        ("", imap_date(BASE_DATE + 86400 * 200, -420)),
        ("\\Deleted", imap_date(946684799, 0)),       # 1999-12-31 23:59:59
    ]
    msgs = []
    for i, (flags, date) in enumerate(cases):
        msg = make_message("appended %d" % i, "body %d\n" % i)
        msgs.append(msg)
        uv, uid = c.append("INBOX", msg, flags=flags.encode(), date=date)
        assert uid == i + 1
    # without a date the INTERNALDATE is "now"
    now = time.time()
    c.append("INBOX", make_message("no date"))
    # a bad date and bad flags are refused
    # (synchronizing literals: the server refuses before the data is sent)
    r = c.run(b'APPEND INBOX "31-Foo-2020 00:00:00 +0000" ',
              Lit(make_message("x")))
    assert r.status == "BAD"
    r = c.run(b'APPEND INBOX (\\Bogus) ', Lit(make_message("x")))
    assert r.status in ("BAD", "NO")
    r = c.run(b"APPEND Nonexistent ", Lit(b"Subject: x\r\n\r\ny\r\n"))
    assert r.status == "NO" and b"TRYCREATE" in r.tagged

    def check(c):
        c.select("INBOX")
        f = c.fetch(b"1:*", b"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert len(f) == 5
        for i, (flags, date) in enumerate(cases):
            d = f[i + 1]
            assert int(d["UID"]) == i + 1
            assert flagset(d["FLAGS"]) - {"\\Recent"} == set(flags.split())
            # exact instant; and exact string when sent in the server's zone
            got = d["INTERNALDATE"].decode()
            assert parse_imap_date(got) == parse_imap_date(date), (got, date)
            if got[-5:] == date[-5:]:
                assert got == date
            assert d["BODY[]"] == msgs[i]
            assert int(d["RFC822.SIZE"]) == len(msgs[i])
        assert abs(parse_imap_date(f[5]["INTERNALDATE"]) - now) < 120
        c.logout()

    check(c)
    dovecot.restart()
    check(RawImap(dovecot))


def test_internaldate_exact_in_utc(dovecot_factory):
    d = dovecot_factory(extra_config="import_environment = $import_environment TZ=UTC\n")
    c = RawImap(d)
    dates = ["01-Feb-2020 00:00:00 +0000", "29-Feb-2024 23:59:59 +0000",
             "17-Jul-1996 02:44:25 +0000"]
    for i, dt in enumerate(dates):
        c.append("INBOX", make_message("d%d" % i), date=dt)
    c.select("INBOX")
    f = c.fetch(b"1:*", b"(INTERNALDATE)")
    assert [f[s]["INTERNALDATE"].decode() for s in sorted(f)] == dates
    c.logout()
    d.restart()
    c = RawImap(d)
    c.select("INBOX")
    f = c.fetch(b"1:*", b"(INTERNALDATE)")
    assert [f[s]["INTERNALDATE"].decode() for s in sorted(f)] == dates
    c.logout()


def test_multiappend(dovecot):
    c = RawImap(dovecot)
    c.ok(b"CREATE Multi")
    c.append("Multi", make_message("existing"))
    m1 = make_message("multi one", "first\n")
    m2 = make_message("multi two", "second\n")
    m3 = MULTIPART
    r = c.ok(b"APPEND Multi (\\Seen) ", Lit(m1),
             b" (\\Flagged) \"05-Mar-2021 14:15:16 +0000\" ", Lit(m2),
             b" ", Lit(m3))
    code = r.code("APPENDUID")
    assert code is not None, r
    uidvalidity = int(code[0])
    assert code[1] == b"2:4"
    assert uidvalidity == c.status("Multi")["UIDVALIDITY"]
    c.select("Multi")
    f = c.fetch(b"2:4", b"(UID FLAGS INTERNALDATE BODY.PEEK[])", uid=True)
    assert [f[s]["BODY[]"] for s in sorted(f)] == [m1, m2, m3]
    assert "\\Seen" in flagset(f[2]["FLAGS"])
    assert "\\Flagged" in flagset(f[3]["FLAGS"])
    assert "\\Seen" not in flagset(f[3]["FLAGS"])
    assert flagset(f[4]["FLAGS"]) <= {"\\Recent"}
    assert parse_imap_date(f[3]["INTERNALDATE"]) == \
        parse_imap_date("05-Mar-2021 14:15:16 +0000")
    c.ok(b"CLOSE")

    # two messages with LITERAL+ as in the brief: two UIDs in APPENDUID
    r = c.ok(b"APPEND INBOX (\\Seen) ", Lit(m1, plus=True),
             b" (\\Flagged) ", Lit(m2, plus=True))
    code = r.code("APPENDUID")
    assert code[1] == b"1:2"

    # a failing MULTIAPPEND saves nothing (atomic)
    before = c.status("Multi")
    r = c.run(b"APPEND Multi ", Lit(m1), b" \"bad-date\" ", Lit(m2))
    assert r.status in ("BAD", "NO")
    after = c.status("Multi")
    assert after["MESSAGES"] == before["MESSAGES"]
    c.logout()


# ======================================================= FETCH

def test_fetch_items(dovecot):
    c = RawImap(dovecot)
    caps = c.ok(b"CAPABILITY").lines("CAPABILITY")[0].split()
    assert b"BINARY" in caps
    date = "02-Jan-2024 10:11:12 +0000"
    uv, uid = c.append("INBOX", MULTIPART, flags=b"\\Answered $Label1",
                       date=date)
    big = big_message()
    c.append("INBOX", big)
    c.select("INBOX")
    f = c.fetch(b"1", b"(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")[1]
    assert flagset(f["FLAGS"]) == {"\\Answered", "$Label1", "\\Recent"}
    assert parse_imap_date(f["INTERNALDATE"]) == parse_imap_date(date)
    assert int(f["RFC822.SIZE"]) == len(MULTIPART)
    env = f["ENVELOPE"]
    assert env[0] == b"Tue, 02 Jan 2024 10:11:12 +0100"
    assert env[1] == b"=?UTF-8?B?R3LDvMOfZSBtdWx0aXBhcnQ=?="
    assert env[2] == [[b"Alice Example", None, b"alice", b"example.com"]]
    assert env[3] == env[2] and env[4] == env[2]     # sender, reply-to
    assert env[5] == [[b"Bob", None, b"bob", b"example.org"],
                      [None, None, b"carol", b"example.net"]]
    assert env[6] == [[b"Dave, D.", None, b"dave", b"example.com"]]
    assert env[7] is None
    assert env[8] == b"<parent@example.com>"
    assert env[9] == b"<multi-1@example.com>"

    f = c.fetch(b"1", b"(BODYSTRUCTURE)")[1]
    bs = f["BODYSTRUCTURE"]
    # (( text/plain )( text/html ) "alternative" ..)( application ) (message) "mixed"
    alt, att, inner = bs[0], bs[1], bs[2]
    assert bs[3].upper() == b"MIXED"
    assert alt[0][0].upper() == b"TEXT" and alt[0][1].upper() == b"PLAIN"
    assert alt[0][5].upper() == b"QUOTED-PRINTABLE"
    assert alt[1][1].upper() == b"HTML"
    assert alt[2].upper() == b"ALTERNATIVE"
    assert att[0].upper() == b"APPLICATION" and att[1].upper() == b"OCTET-STREAM"
    assert att[5].upper() == b"BASE64"
    raw2 = c.fetch(b"1", b"(BODY.PEEK[2])")[1]["BODY[2]"]
    assert base64.b64decode(raw2) == ATTACHMENT
    assert int(att[6]) == len(raw2)                   # body size in octets
    assert [x.upper() for x in att[8][0:1]] == [b"ATTACHMENT"]
    assert inner[0].upper() == b"MESSAGE" and inner[1].upper() == b"RFC822"
    assert inner[7][1] == b"inner message"            # inner envelope
    # BODY (non-extensible) too
    f = c.fetch(b"1", b"(BODY)")[1]
    assert f["BODY"][3].upper() == b"MIXED"

    f = c.fetch(b"1", b"(FLAGS BODY[])")[1]
    assert f["BODY[]"] == MULTIPART
    assert "\\Seen" in flagset(f["FLAGS"])       # BODY[] sets \Seen
    f = c.fetch(b"1", b"(BODY.PEEK[HEADER.FIELDS (Subject From X-None)])")[1]
    assert f["BODY[HEADER.FIELDS (SUBJECT FROM X-NONE)]"] == (
        b"From: Alice Example <alice@example.com>\r\n"
        b"Subject: =?UTF-8?B?R3LDvMOfZSBtdWx0aXBhcnQ=?=\r\n\r\n")
    f = c.fetch(b"1", b"(BODY.PEEK[HEADER.FIELDS.NOT (Subject From To Cc Date "
                b"Message-ID In-Reply-To MIME-Version)])")[1]
    assert list(f.values())[0] == (
        b'Content-Type: multipart/mixed; boundary="outer-bnd"\r\n\r\n')
    hdr_end = MULTIPART.index(b"\r\n\r\n") + 4
    f = c.fetch(b"1", b"(BODY.PEEK[HEADER] BODY.PEEK[TEXT] RFC822.HEADER "
                b"BODY.PEEK[2.MIME] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] "
                b"BODY.PEEK[1.1])")[1]
    assert f["BODY[HEADER]"] == MULTIPART[:hdr_end]
    assert f["RFC822.HEADER"] == MULTIPART[:hdr_end]
    assert f["BODY[TEXT]"] == MULTIPART[hdr_end:]
    assert f["BODY[2.MIME]"].startswith(b"Content-Type: application/octet-stream")
    assert f["BODY[3.HEADER]"].startswith(b"From: inner@example.com\r\n")
    # the CRLF before a boundary belongs to the boundary (RFC 2046)
    assert f["BODY[3.TEXT]"] == b"Inner body line."
    assert f["BODY[1.1]"] == (b"Caf=C3=A9 au lait, line one.\r\n"
                              b"Soft=\r\n break and =3D sign.")
    # partial fetches
    f = c.fetch(b"1", b"(BODY.PEEK[]<0.10> BODY.PEEK[]<100.50> "
                b"BODY.PEEK[TEXT]<5.7>)")[1]
    assert f["BODY[]<0>"] == MULTIPART[:10]
    assert f["BODY[]<100>"] == MULTIPART[100:150]
    assert f["BODY[TEXT]<5>"] == MULTIPART[hdr_end + 5:hdr_end + 12]
    f = c.fetch(b"1", b"(BODY.PEEK[]<%d.100>)" % (len(MULTIPART) - 10))[1]
    assert f["BODY[]<%d>" % (len(MULTIPART) - 10)] == MULTIPART[-10:]
    f = c.fetch(b"1", b"(BODY.PEEK[]<%d.5>)" % (len(MULTIPART) + 10))[1]
    assert list(f.values())[0] == b""
    # partial crossing an LMDB chunk boundary (64 KiB) of a big message
    for off in (65530, 65536, 131070, len(big) - 3):
        f = c.fetch(b"2", b"(BODY.PEEK[]<%d.20>)" % off)[2]
        assert f["BODY[]<%d>" % off] == big[off:off + 20], off
    f = c.fetch(b"2", b"(RFC822.SIZE BODY.PEEK[])")[2]
    assert f["BODY[]"] == big and int(f["RFC822.SIZE"]) == len(big)

    # BINARY: decoded content of a part
    f = c.fetch(b"1", b"(BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.1] "
                b"BINARY.SIZE[1.1] BINARY.PEEK[2]<0.5>)")[1]
    assert f["BINARY[2]"] == ATTACHMENT
    assert int(f["BINARY.SIZE[2]"]) == len(ATTACHMENT)
    qp = "Café au lait, line one.\r\nSoft break and = sign.".encode()
    assert f["BINARY[1.1]"] == qp
    assert int(f["BINARY.SIZE[1.1]"]) == len(qp)
    assert f["BINARY[2]<0>"] == ATTACHMENT[:5]
    c.append("INBOX", EIGHTBIT)
    f = c.fetch(b"3", b"(BINARY.PEEK[1] BINARY.SIZE[1])")[3]
    body8 = EIGHTBIT[EIGHTBIT.index(b"\r\n\r\n") + 4:]
    assert f["BINARY[1]"] == body8
    assert int(f["BINARY.SIZE[1]"]) == len(body8)
    c.logout()


def test_fetch_savedate(dovecot):
    c = RawImap(dovecot)
    caps = c.ok(b"CAPABILITY").lines("CAPABILITY")[0].split()
    # Dovecot 2.3.19.1 advertises SAVEDATE (RFC 8514) and always handles
    # FETCH SAVEDATE; date.saved of doveadm is checked as well below.
    assert b"SAVEDATE" in caps
    t0 = int(time.time())
    c.append("INBOX", make_message("saved"), date="01-Jan-2001 00:00:00 +0000")
    c.select("INBOX")
    f = c.fetch(b"1", b"(SAVEDATE INTERNALDATE)")[1]
    assert f["SAVEDATE"] is not None
    saved = parse_imap_date(f["SAVEDATE"])
    assert t0 - 5 <= saved <= time.time() + 5
    assert parse_imap_date(f["INTERNALDATE"]) == 978307200
    time.sleep(1.1)
    c.ok(b"COPY 1 INBOX")
    f = c.fetch(b"2", b"(SAVEDATE INTERNALDATE)")[2]
    saved2 = parse_imap_date(f["SAVEDATE"])
    assert saved2 > saved                  # a copy is saved anew
    assert parse_imap_date(f["INTERNALDATE"]) == 978307200
    c.logout()
    # doveadm's date.saved reads the same mail_get_save_date()
    res = dovecot.doveadm("-f", "flow", "fetch", "-u", "testuser",
                          "uid date.saved", "mailbox", "INBOX", "all")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2, res.stdout
    for line in lines:
        m = re.match(r"uid=\d+ date.saved=(\S+ \S+)", line)
        assert m, line
        # doveadm prints the local time of its process (our TZ)
        st = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
        assert int(st) in (saved, saved2), (line, saved, saved2)
    # the save date survives a restart (read from LMDB, not "now")
    time.sleep(1.1)
    dovecot.restart()
    c = RawImap(dovecot)
    c.select("INBOX")
    f = c.fetch(b"1:2", b"(SAVEDATE)")
    assert parse_imap_date(f[1]["SAVEDATE"]) == saved
    assert parse_imap_date(f[2]["SAVEDATE"]) == saved2
    c.logout()


def _fetch_corpus(c, n):
    """Every FETCH item of interest, message by message, as raw bytes."""
    out = {}
    for seq in range(1, n + 1):
        name = CORPUS[seq - 1][0]
        items = (b"(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
                 b"BODY BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] "
                 b"RFC822.HEADER BODY.PEEK[HEADER.FIELDS (SUBJECT FROM TO DATE)] "
                 b"BODY.PEEK[]<17.300> BODY.PEEK[1] BODY.PEEK[1.MIME]")
        for p in BINARY_PARTS[name]:
            items += b" BINARY.PEEK[%s] BINARY.SIZE[%s]" % (p.encode(),
                                                             p.encode())
        items += b")"
        r = c.ok(b"FETCH %d " % seq, items)
        fetch = [l for l in r.untagged if re.match(rb"\* \d+ FETCH", l)]
        assert len(fetch) == 1, r
        out[name] = fetch[0]
    return out


def test_fetch_identical_to_maildir(dovecot_factory):
    """The same messages APPENDed to lmdb and to maildir give byte-identical
    FETCH responses (ENVELOPE, BODYSTRUCTURE, BODY[], RFC822.SIZE, BINARY
    ...), before and after a restart (when the index cache is cold)."""
    lm = dovecot_factory(mail_location="lmdb:~/lmdb")
    md = dovecot_factory(mail_location="maildir:~/Maildir", mail_plugins=[])
    results = {}
    for name, d in (("lmdb", lm), ("maildir", md)):
        c = RawImap(d)
        for i, (_, msg) in enumerate(CORPUS):
            c.append("INBOX", msg, flags=b"\\Seen $Tag%d" % i,
                     date=imap_date(BASE_DATE + i * 3600, 60))
        c.select("INBOX")
        results[name] = _fetch_corpus(c, len(CORPUS))
        c.logout()
    for name, _ in CORPUS:
        assert results["lmdb"][name] == results["maildir"][name], name
    # sanity: the responses hold the real content
    assert MULTIPART in results["lmdb"]["multipart"]
    assert ATTACHMENT in results["lmdb"]["multipart"]

    # delivered with LMTP too (both get the same Return-Path/Received
    # headers apart from timestamps/ids, so compare the parsed body parts)
    for d in (lm, md):
        for name, msg in CORPUS:
            d.lmtp_deliver("testuser", msg)

    lm.restart()
    c = RawImap(lm)
    c.select("INBOX")
    cold = _fetch_corpus(c, len(CORPUS))
    # the maildir session was the first to select: it still saw \Recent
    results["maildir"] = {k: v.replace(b" \\Recent", b"")
                          for k, v in results["maildir"].items()}
    for name, _ in CORPUS:
        assert cold[name] == results["maildir"][name], (
            name, cold[name][:300], results["maildir"][name][:300])

    def lmtp_parts(c):
        out = []
        for seq in range(len(CORPUS) + 1, 2 * len(CORPUS) + 1):
            name = CORPUS[seq - len(CORPUS) - 1][0]
            f = c.fetch(b"%d" % seq, b"(BODY.PEEK[TEXT] BODYSTRUCTURE "
                        b"BINARY.PEEK[%s])" % BINARY_PARTS[name][-1].encode())
            out.append(f[seq])
        return out
    lm_parts = lmtp_parts(c)
    c.logout()
    c = RawImap(md)
    c.select("INBOX")
    md_parts = lmtp_parts(c)
    c.logout()
    assert lm_parts == md_parts


# ======================================================= STORE

def test_store_flags_and_keywords(dovecot):
    c = RawImap(dovecot)
    for i in range(4):
        c.append("INBOX", make_message("store %d" % i))
    c.select("INBOX")
    r = c.ok(b"STORE 1 +FLAGS (\\Seen \\Flagged)")
    f = parse_fetches(r)
    assert flagset(f[1]["FLAGS"]) == {"\\Seen", "\\Flagged", "\\Recent"}
    r = c.ok(b"STORE 1 -FLAGS (\\Flagged)")
    assert flagset(parse_fetches(r)[1]["FLAGS"]) == {"\\Seen", "\\Recent"}
    r = c.ok(b"STORE 2 FLAGS (\\Answered \\Draft)")
    assert flagset(parse_fetches(r)[2]["FLAGS"]) == {"\\Answered", "\\Draft",
                                                     "\\Recent"}
    r = c.ok(b"STORE 2 FLAGS (\\Deleted)")
    assert flagset(parse_fetches(r)[2]["FLAGS"]) == {"\\Deleted", "\\Recent"}
    # keywords
    r = c.ok(b"STORE 3 +FLAGS ($Important Work todo-1)")
    assert flagset(parse_fetches(r)[3]["FLAGS"]) == {
        "$Important", "Work", "todo-1", "\\Recent"}
    untagged_flags = r.lines("FLAGS")
    assert untagged_flags and b"Work" in untagged_flags[0]
    r = c.ok(b"STORE 3 -FLAGS (Work)")
    assert flagset(parse_fetches(r)[3]["FLAGS"]) == {"$Important", "todo-1",
                                                     "\\Recent"}
    r = c.ok(b"UID STORE 4 FLAGS (Personal \\Seen)")
    f = parse_fetches(r)
    assert flagset(f[4]["FLAGS"]) == {"Personal", "\\Seen", "\\Recent"}
    assert int(f[4]["UID"]) == 4
    # .SILENT returns no FETCH
    r = c.ok(b"STORE 1:4 +FLAGS.SILENT (Shared)")
    assert not r.lines("FETCH")
    c.ok(b"STORE 1 -FLAGS.SILENT (Shared)")
    # keywords are searchable
    assert seqs_of(c, b"KEYWORD Shared") == [2, 3, 4]
    assert seqs_of(c, b"KEYWORD todo-1") == [3]
    assert seqs_of(c, b"UNKEYWORD Shared") == [1]
    expected = {1: {"\\Seen"}, 2: {"\\Deleted", "Shared"},
                3: {"$Important", "todo-1", "Shared"},
                4: {"Personal", "\\Seen", "Shared"}}

    def check(c):
        r = c.select("INBOX")
        f = c.fetch(b"1:*", b"(FLAGS)")
        got = {s: flagset(f[s]["FLAGS"]) - {"\\Recent"} for s in f}
        assert got == expected
        flags_line = r.lines("FLAGS")[0]
        for kw in (b"$Important", b"todo-1", b"Personal", b"Shared"):
            assert kw in flags_line
        c.logout()

    c.logout()
    check(RawImap(dovecot))            # other session after LOGOUT
    dovecot.restart()
    check(RawImap(dovecot))            # after a restart
    c = RawImap(dovecot, tls=True)
    c.select("INBOX")
    c.ok(b"STORE 3 FLAGS ()")
    c.logout()
    dovecot.restart()
    c = RawImap(dovecot)
    c.select("INBOX")
    assert flagset(c.fetch(b"3", b"(FLAGS)")[3]["FLAGS"]) == set()
    c.logout()


def test_store_concurrent_sessions(dovecot):
    a = RawImap(dovecot)
    b = RawImap(dovecot)
    a.append("INBOX", make_message("shared"))
    a.select("INBOX")
    b.select("INBOX")
    a.ok(b"STORE 1 +FLAGS (\\Flagged Blue)")
    r = b.ok(b"NOOP")
    f = parse_fetches(r)
    assert {"\\Flagged", "Blue"} <= flagset(f[1]["FLAGS"])
    # new mail from LMTP and from another session's APPEND
    msg = make_message("delivered", "while selected\n")
    dovecot.lmtp_deliver("testuser", msg)
    r = b.ok(b"NOOP")
    assert [l.split()[1] for l in r.lines("EXISTS")] == [b"2"]
    r1 = a.ok(b"APPEND INBOX ", Lit(MULTIPART, plus=True))
    r2 = a.ok(b"NOOP")
    exists = r1.lines("EXISTS") + r2.lines("EXISTS")
    assert exists and exists[-1].split()[1] == b"3"
    r = b.ok(b"NOOP")
    assert [l.split()[1] for l in r.lines("EXISTS")] == [b"3"]
    f = b.fetch(b"2:3", b"(UID BODY.PEEK[TEXT] RFC822.SIZE)")
    assert f[2]["BODY[TEXT]"] == b"while selected\r\n"
    assert int(f[3]["UID"]) == 3 and int(f[3]["RFC822.SIZE"]) == len(MULTIPART)
    a.logout()
    b.logout()


# ======================================================= EXPUNGE

def test_expunge(dovecot):
    c = RawImap(dovecot)
    caps = c.ok(b"CAPABILITY").lines("CAPABILITY")[0].split()
    assert b"UIDPLUS" in caps
    msgs = [make_message("exp %d" % i, "body %d\n" % i) for i in range(6)]
    for m in msgs:
        c.append("INBOX", m)
    c.select("INBOX")
    c.ok(b"STORE 2,4,5 +FLAGS.SILENT (\\Deleted)")
    r = c.ok(b"EXPUNGE")
    assert len(r.lines("EXPUNGE")) == 3
    assert apply_expunges([1, 2, 3, 4, 5, 6], r) == [1, 3, 6]
    assert uids_of(c) == [1, 3, 6]
    f = c.fetch(b"1:*", b"(UID BODY.PEEK[])")
    assert [f[s]["BODY[]"] for s in sorted(f)] == [msgs[0], msgs[2], msgs[5]]
    # UID EXPUNGE only expunges the given UIDs
    c.ok(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
    r = c.ok(b"UID EXPUNGE 3")
    assert apply_expunges([1, 3, 6], r) == [1, 6]
    assert uids_of(c) == [1, 6]
    r = c.ok(b"UID EXPUNGE 2:5")     # no such (remaining) UIDs: no-op
    assert not r.lines("EXPUNGE")
    c.ok(b"STORE 1 -FLAGS.SILENT (\\Deleted)")
    r = c.ok(b"UID EXPUNGE 1:*")
    assert apply_expunges([1, 6], r) == [1]
    assert uids_of(c) == [1]
    # CLOSE expunges too
    c.append("INBOX", make_message("closed"), flags=b"\\Deleted")
    c.ok(b"CLOSE")
    c.logout()

    c = RawImap(dovecot)
    st = c.status("INBOX")
    assert st["MESSAGES"] == 1 and st["UIDNEXT"] == 8
    c.logout()
    dovecot.restart()
    c = RawImap(dovecot)
    c.select("INBOX")
    f = c.fetch(b"1:*", b"(UID BODY.PEEK[])")
    assert list(f) == [1] and int(f[1]["UID"]) == 1
    assert f[1]["BODY[]"] == msgs[0]
    c.logout()


def test_expunge_seen_by_other_session(dovecot):
    a = RawImap(dovecot)
    for i in range(3):
        a.append("INBOX", make_message("o %d" % i))
    b = RawImap(dovecot)
    a.select("INBOX")
    b.select("INBOX")
    b.fetch(b"1:3", b"(FLAGS RFC822.SIZE)")
    a.ok(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.ok(b"EXPUNGE")
    # b has not seen the expunge yet: fetching its body fails softly
    # (no server error), the other messages are still served
    r = b.run(b"FETCH 1:3 (BODY.PEEK[])")
    assert r.status in ("OK", "NO"), r
    if r.status == "NO":
        assert b"EXPUNGEISSUED" in r.tagged, r
    got = parse_fetches(r)
    assert 1 in got and 3 in got
    assert b"o 0" in got[1]["BODY[]"] and b"o 2" in got[3]["BODY[]"]
    r = b.ok(b"NOOP")
    assert apply_expunges([1, 2, 3], r) == [1, 3]
    assert uids_of(b) == [1, 3]
    a.logout()
    b.logout()


# ======================================================= COPY / MOVE

def test_copy_and_move(dovecot):
    c = RawImap(dovecot)
    caps = c.ok(b"CAPABILITY").lines("CAPABILITY")[0].split()
    assert b"MOVE" in caps
    c.ok(b"CREATE Dest")
    c.ok(b"CREATE Dest2")
    c.append("Dest", make_message("pre-existing"))
    msgs = [make_message("cp %d" % i, "copy body %d\n" % i) for i in range(4)]
    msgs[3] = MULTIPART
    for i, m in enumerate(msgs):
        c.append("INBOX", m, flags=b"\\Flagged Kw%d" % i,
                 date=imap_date(BASE_DATE + i, 0))
    dest_uv = c.status("Dest")["UIDVALIDITY"]
    c.select("INBOX")
    src = c.fetch(b"1:*", b"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[] "
                  b"BODYSTRUCTURE ENVELOPE)")

    r = c.ok(b"COPY 2:4 Dest")
    code = r.code("COPYUID")
    assert code == [b"%d" % dest_uv, b"2:4", b"2:4"], r
    r = c.ok(b"UID COPY 1 Dest")
    assert r.code("COPYUID") == [b"%d" % dest_uv, b"1", b"5"]
    c.no(b"COPY 1 Nonexistent")
    # source untouched
    assert uids_of(c) == [1, 2, 3, 4]
    st = c.status("Dest")
    assert st["MESSAGES"] == 5 and st["UIDNEXT"] == 6

    # MOVE: COPYUID in an untagged OK, source expunged
    r = c.ok(b"UID MOVE 2,4 Dest2")
    code = r.code("COPYUID")
    dest2_uv = c.status("Dest2")["UIDVALIDITY"]
    assert code == [b"%d" % dest2_uv, b"2,4", b"1:2"], r
    assert apply_expunges([1, 2, 3, 4], r) == [1, 3]
    assert uids_of(c) == [1, 3]
    r = c.ok(b"MOVE 1 Dest2")
    assert r.code("COPYUID") == [b"%d" % dest2_uv, b"1", b"3"]
    assert apply_expunges([1, 3], r) == [3]
    assert uids_of(c) == [3]
    c.ok(b"CLOSE")

    def check_copy(box, mapping):
        """mapping: dest uid -> source uid"""
        c.select(box, examine=True)
        f = c.fetch(b"1:*", b"(UID FLAGS INTERNALDATE RFC822.SIZE "
                    b"BODY.PEEK[] BODYSTRUCTURE ENVELOPE)")
        by_uid = {int(v["UID"]): v for v in f.values()}
        for duid, suid in mapping.items():
            d, s = by_uid[duid], src[suid]
            for k in ("BODY[]", "RFC822.SIZE", "INTERNALDATE",
                      "BODYSTRUCTURE", "ENVELOPE"):
                assert d[k] == s[k], (box, duid, k)
            assert flagset(d["FLAGS"]) - {"\\Recent"} == \
                flagset(s["FLAGS"]) - {"\\Recent"}
        c.ok(b"CLOSE")

    check_copy("Dest", {2: 2, 3: 3, 4: 4, 5: 1})
    check_copy("Dest2", {1: 2, 2: 4, 3: 1})
    # the copies are independent: expunging the source keeps them
    c.select("INBOX")
    c.ok(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
    c.ok(b"EXPUNGE")
    c.ok(b"CLOSE")
    c.logout()
    dovecot.restart()
    c = RawImap(dovecot)
    assert c.status("INBOX")["MESSAGES"] == 0
    check_copy("Dest", {2: 2, 3: 3, 4: 4, 5: 1})
    check_copy("Dest2", {1: 2, 2: 4, 3: 1})
    # copy within the same mailbox
    c.select("Dest")
    r = c.ok(b"UID COPY 5 Dest")
    assert r.code("COPYUID")[2] == b"6"
    f = c.fetch(b"5:6", b"(BODY.PEEK[])", uid=True)
    bodies = [v["BODY[]"] for v in f.values()]
    assert bodies == [msgs[0], msgs[0]]
    c.logout()


# ======================================================= SEARCH

def test_search(dovecot):
    c = RawImap(dovecot)
    specs = [
        # subject, from, body, extra headers, flags, date
        ("Quarterly report", "alice@example.com", "numbers are up\n",
         {"X-Priority": "1"}, b"\\Seen", "01-Feb-2024 10:00:00 +0000"),
        ("Lunch plans", "bob@example.org", "pizza or sushi?\n",
         {}, b"\\Flagged", "15-Feb-2024 10:00:00 +0000"),
        ("Re: Quarterly report", "carol@example.net",
         "see the attached numbers\n" + "filler line\n" * 300,
         {"X-Priority": "3"}, b"\\Seen \\Answered", "01-Mar-2024 10:00:00 +0000"),
        ("Zebra", "alice@example.com", "striped animals\n",
         {"X-Mailer": "ZooMail 2"}, b"$Work", "20-Mar-2024 10:00:00 +0000"),
    ]
    for subj, frm, body, hdrs, flags, date in specs:
        c.append("INBOX", make_message(subj, body, sender=frm, headers=hdrs),
                 flags=flags, date=date)
    c.append("INBOX", MULTIPART, date="21-Mar-2024 10:00:00 +0000")
    c.append("INBOX", EIGHTBIT, flags=b"\\Deleted",
             date="22-Mar-2024 10:00:00 +0000")
    c.select("INBOX")

    def s(crit):
        return seqs_of(c, crit)

    assert s(b"ALL") == [1, 2, 3, 4, 5, 6]
    assert s(b"SUBJECT quarterly") == [1, 3]
    assert s(b"SUBJECT \"Lunch plans\"") == [2]
    assert s(b"FROM alice") == [1, 4, 5]
    assert s(b"FROM bob@example.org") == [2]
    assert s(b"TO bob@example.org") == [5]
    assert s(b"CC dave") == [5]
    assert s(b"BODY sushi") == [2]
    assert s(b"BODY numbers") == [1, 3]
    assert s(b"BODY \"au lait\"") == [5]          # QP-decoded part
    assert s(b"TEXT pizza") == [2]
    assert s(b"TEXT zoomail") == [4]              # TEXT includes headers
    assert s(b"BODY zoomail") == []
    r = c.ok(b"SEARCH CHARSET UTF-8 BODY ", Lit("Köln".encode(), plus=True))
    assert r.lines("SEARCH")[0].split()[2:] == [b"6"]
    assert s(b"HEADER X-Priority 1") == [1]
    assert s(b"HEADER X-Priority \"\"") == [1, 3]
    assert s(b"HEADER X-Mailer zoo") == [4]
    assert s(b"HEADER Message-ID <multi-1@example.com>") == [5]
    assert s(b"SEEN") == [1, 3]
    assert s(b"UNSEEN") == [2, 4, 5, 6]
    assert s(b"FLAGGED") == [2]
    assert s(b"ANSWERED") == [3]
    assert s(b"DELETED") == [6]
    assert s(b"UNDELETED SEEN") == [1, 3]
    assert s(b"KEYWORD $Work") == [4]
    assert s(b"RECENT") == [1, 2, 3, 4, 5, 6]
    assert s(b"NEW") == [2, 4, 5, 6]
    assert s(b"2:4") == [2, 3, 4]
    assert s(b"UID 2:4") == [2, 3, 4]
    assert s(b"UID 5:*") == [5, 6]
    assert s(b"UID 1,3,100") == [1, 3]
    assert uids_of(c, b"UID 4:*") == [4, 5, 6]
    assert s(b"SINCE 1-Mar-2024") == [3, 4, 5, 6]
    assert s(b"BEFORE 15-Feb-2024") == [1]
    assert s(b"ON 15-Feb-2024") == [2]
    assert s(b"SINCE 10-Feb-2024 BEFORE 21-Mar-2024") == [2, 3, 4]
    assert s(b"SENTSINCE 2-Jan-2024 SENTBEFORE 3-Jan-2024") == [5]
    assert s(b"SENTON 04-Jan-2024") == [6]
    sizes = {k: int(v["RFC822.SIZE"])
             for k, v in c.fetch(b"1:*", b"(RFC822.SIZE)").items()}
    assert s(b"LARGER 3000") == sorted(k for k, v in sizes.items() if v > 3000)
    assert s(b"LARGER 3000") and s(b"SMALLER 3000")
    assert s(b"SMALLER %d" % sizes[2]) == sorted(
        k for k, v in sizes.items() if v < sizes[2])
    assert s(b"LARGER %d" % sizes[3]) == sorted(
        k for k, v in sizes.items() if v > sizes[3])
    assert s(b"NOT SEEN") == [2, 4, 5, 6]
    assert s(b"NOT FROM alice") == [2, 3, 6]
    assert s(b"OR FLAGGED ANSWERED") == [2, 3]
    assert s(b"OR SUBJECT zebra BODY sushi") == [2, 4]
    assert s(b"NOT OR SEEN FLAGGED") == [4, 5, 6]
    assert s(b"(OR SEEN FLAGGED) FROM bob") == [2]
    assert s(b"SUBJECT nomatchatall") == []
    # ESEARCH and UID SEARCH RETURN
    r = c.ok(b"UID SEARCH RETURN (MIN MAX COUNT) FROM alice")
    line = r.lines("ESEARCH")[0]
    assert b"MIN 1" in line and b"MAX 5" in line and b"COUNT 3" in line
    c.logout()
    # the same results after a restart (no cached data)
    dovecot.restart()
    c = RawImap(dovecot)
    c.select("INBOX")
    assert seqs_of(c, b"BODY numbers") == [1, 3]
    assert seqs_of(c, b"HEADER X-Mailer zoo") == [4]
    assert seqs_of(c, b"OR SUBJECT zebra BODY sushi") == [2, 4]
    assert seqs_of(c, b"SINCE 1-Mar-2024 NOT DELETED") == [3, 4, 5]
    c.logout()


# ======================================================= UID stability

def test_uids_stable_across_restart(dovecot):
    c = RawImap(dovecot)
    c.ok(b"CREATE Other")
    for i in range(5):
        c.append("INBOX", make_message("uid %d" % i, "uid body %d\n" % i))
    c.append("Other", make_message("other"))
    c.select("INBOX")
    c.ok(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    c.ok(b"EXPUNGE")
    st = {b: c.status(b) for b in ("INBOX", "Other")}
    f = c.fetch(b"1:*", b"(UID BODY.PEEK[])")
    before = {int(v["UID"]): v["BODY[]"] for v in f.values()}
    assert sorted(before) == [1, 3, 4, 5]
    c.logout()

    for _ in range(2):
        dovecot.restart()
        c = RawImap(dovecot)
        for b in ("INBOX", "Other"):
            now = c.status(b)
            for k in ("UIDVALIDITY", "UIDNEXT", "MESSAGES"):
                assert now[k] == st[b][k], (b, k, st[b], now)
        r = c.select("INBOX")
        assert int(r.code("UIDVALIDITY")[0]) == st["INBOX"]["UIDVALIDITY"]
        assert int(r.code("UIDNEXT")[0]) == 6
        f = c.fetch(b"1:*", b"(UID BODY.PEEK[])")
        assert {int(v["UID"]): v["BODY[]"] for v in f.values()} == before
        c.logout()
    # different mailboxes get different UIDVALIDITYs
    assert st["INBOX"]["UIDVALIDITY"] != st["Other"]["UIDVALIDITY"]


def test_uidnext_not_reused_after_expunging_highest(dovecot):
    c = RawImap(dovecot)
    for i in range(3):
        c.append("INBOX", make_message("hi %d" % i))
    c.select("INBOX")
    c.ok(b"UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    c.ok(b"UID EXPUNGE 3")
    assert uids_of(c) == [1, 2]
    uv = c.status("INBOX")["UIDVALIDITY"]
    c.logout()
    dovecot.restart()
    c = RawImap(dovecot)
    st = c.status("INBOX")
    assert st["UIDNEXT"] == 4 and st["UIDVALIDITY"] == uv
    assert st["MESSAGES"] == 2
    assert c.append("INBOX", make_message("new")) == (uv, 4)
    c.select("INBOX")
    c.ok(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
    c.ok(b"EXPUNGE")
    c.logout()
    # an emptied mailbox keeps its UIDNEXT too
    dovecot.restart()
    c = RawImap(dovecot)
    st = c.status("INBOX")
    assert st["MESSAGES"] == 0 and st["UIDNEXT"] == 5
    assert st["UIDVALIDITY"] == uv
    assert c.append("INBOX", make_message("newer")) == (uv, 5)
    c.logout()


def test_state_survives_lost_index_files(dovecot):
    """LMDB holds UIDs, UIDVALIDITY, flags and keywords: with every
    dovecot.index* file deleted, a restarted Dovecot shows the same state
    (and UIDNEXT/HIGHESTMODSEQ do not go backwards)."""
    if not dovecot.mail_location.startswith("lmdb:"):
        pytest.skip("only lmdb keeps this state outside the index files")
    c = RawImap(dovecot)
    c.ok(b"CREATE Box/Sub")
    msgs = [make_message("lost %d" % i, "lost body %d\n" % i) for i in range(5)]
    for i, m in enumerate(msgs):
        c.append("INBOX", m, flags=[b"\\Seen", b"\\Flagged kwA",
                                    b"", b"\\Answered kwB", b"kwA"][i],
                 date=imap_date(BASE_DATE + i * 60, 0))
        c.append("Box/Sub", m)
    c.select("INBOX")
    c.ok(b"STORE 2,5 +FLAGS.SILENT (\\Deleted)")
    c.ok(b"EXPUNGE")                        # UIDs 1,3,4 remain, UIDNEXT 6
    c.ok(b"STORE 1 +FLAGS.SILENT (kwC)")
    items = b"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"
    before = c.fetch(b"1:*", items)
    st = {b: c.status(b) for b in ("INBOX", "Box/Sub")}
    c.logout()
    dovecot.stop()
    removed = []
    for dirpath, _, files in os.walk(os.path.join(dovecot.home("testuser"),
                                                  "lmdb")):
        for name in files:
            if name.startswith("dovecot.index"):
                os.unlink(os.path.join(dirpath, name))
                removed.append(name)
    assert "dovecot.index.log" in removed
    dovecot.start()
    c = RawImap(dovecot)
    for b in ("INBOX", "Box/Sub"):
        now = c.status(b)
        for k in ("UIDVALIDITY", "UIDNEXT", "MESSAGES", "UNSEEN"):
            assert now[k] == st[b][k], (b, k, st[b], now)
        assert now["HIGHESTMODSEQ"] >= st[b]["HIGHESTMODSEQ"]
    c.select("INBOX")
    after = c.fetch(b"1:*", items)
    strip = lambda f: {s: dict(v, FLAGS=flagset(v["FLAGS"]) - {"\\Recent"})
                       for s, v in f.items()}
    assert strip(after) == strip(before)
    assert c.append("INBOX", make_message("new")) == \
        (st["INBOX"]["UIDVALIDITY"], 6)
    c.logout()
