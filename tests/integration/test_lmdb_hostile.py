"""Hostile and broken input against the lmdb format: every case ends in a
clean NO or a correct answer, never a crash, a hang or a silent wrong
answer.  Where it means something, the answer is compared with a stock
maildir instance (LAYOUT=fs, so mailbox names follow the same rules) fed
the same input, and, for SEARCH, also with lmdb plus fts_lmdb when it is
built.

  * a 100,000-part MIME message, MIME nesting 1,000 deep, a 1 MB header
    line, a raw 8-bit binary body (literal8);
  * SEARCH keys of 1 character, 10 KB, all spaces, invalid UTF-8, and
    8-bit text in ISO-8859-1, ISO-8859-7, KOI8-R, Shift_JIS and UTF-8;
  * 10,000 mailboxes;
  * mailbox names with "..", "/", "%", "*" and 8-bit characters;
  * a database written by a newer schema version (refused, untouched);
  * a truncated, emptied or corrupted data.mdb (a clear error; the
    recovery path of README "Recovering a damaged database" works).

The malformed-MIME corpus (../shared/corpus/mime-edge-cases) is run by
test_lmdb_stress_limits.py::test_bad_input_like_maildir.
"""

import hashlib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

import dovecot_harness
from dovecot_harness import make_message

LMDB = "lmdb:~/lmdb"
MAILDIR = "maildir:~/Maildir:LAYOUT=fs"
FTS_CONFIG = "plugin {\n  fts = lmdb\n  fts_enforced = yes\n}\n"
TIMEOUT = 120


def fts_built(module_dir):
    return bool(module_dir) and os.path.exists(
        os.path.join(module_dir, "lib21_fts_lmdb_plugin.so"))


def env_dir(d, user="testuser"):
    return os.path.join(d.home(user), "lmdb", "mail.lmdb")


def data_mdb(d, user="testuser"):
    return os.path.join(env_dir(d, user), "data.mdb")


# ----------------------------------------------------------- raw client

class Raw:
    """A minimal IMAP client: literals go out byte for byte (imaplib
    rewrites line endings), LITERAL+ and literal8 are used as asked, and
    each command returns (status, code, untagged lines, tagged line)."""

    def __init__(self, d, user="testuser", timeout=TIMEOUT):
        self.sock = socket.create_connection((d.host, d.ports["imap"]),
                                             timeout)
        self.f = self.sock.makefile("rb")
        assert self._read().startswith(b"* OK")
        self.n = 0
        st, _, _, tagged = self.cmd(b"LOGIN %s %s" % (
            user.encode(), d.users[user].encode()))
        assert st == "OK", tagged

    def _read(self):
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("server closed the connection after %r"
                               % out[:300])
            out += line
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if not m:
                return out
            out += self.f.read(int(m.group(1)))

    def cmd(self, *parts):
        """parts: bytes, or ("lit", data) / ("lit8", data) literals."""
        self.n += 1
        tag = b"H%d" % self.n
        buf = [tag, b" "]
        for p in parts:
            if isinstance(p, tuple):
                kind, data = p
                buf.append(b"%s{%d+}\r\n" % (b"~" if kind == "lit8" else b"",
                                             len(data)))
                buf.append(data)
            else:
                buf.append(p if isinstance(p, bytes) else p.encode())
        self.sock.sendall(b"".join(buf) + b"\r\n")
        untagged = []
        while True:
            line = self._read()
            if line.startswith(tag + b" "):
                m = re.match(rb"\S+ (\w+) (?:\[([^\]]*)\])?", line)
                code = m.group(2).split(b" ")[0].decode() \
                    if m and m.group(2) else None
                return m.group(1).decode(), code, untagged, line
            untagged.append(line)

    def ok(self, *parts):
        st, code, untagged, tagged = self.cmd(*parts)
        assert st == "OK", tagged
        return untagged, tagged

    def search(self, *parts):
        """(status, code, sorted UIDs or None)."""
        st, code, untagged, _ = self.cmd(b"UID SEARCH ", *parts)
        uids = None
        for line in untagged:
            if line.startswith(b"* SEARCH"):
                uids = sorted(int(x) for x in line.split()[2:])
        return st, code, uids

    def close(self):
        try:
            self.cmd(b"LOGOUT")
        except (OSError, EOFError):
            pass
        self.sock.close()


def quote(s):
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def append(c, data, box=b"INBOX", lit="lit"):
    st, code, _, tagged = c.cmd(b"APPEND ", quote(box), b" ", (lit, data))
    if st != "OK":
        return st, None
    return st, int(re.search(rb"APPENDUID \d+ (\d+)", tagged).group(1))


def fetch_item(c, uid, item):
    """The value of one FETCH item (bytes, or None for NIL)."""
    untagged, _ = c.ok(b"UID FETCH %d (%s)" % (uid, item.encode()))
    data = b"".join(untagged)
    name = re.escape(item.split()[0].encode().replace(b".PEEK", b""))
    m = re.search(name + rb"(?:<\d+>)? (?:~?\{(\d+)\}\r\n)", data)
    if m:
        start = m.end()
        return data[start:start + int(m.group(1))]
    m = re.search(name + rb" (NIL|\"(?:[^\"\\]|\\.)*\"|\d+)", data)
    if m:
        v = m.group(1)
        return None if v == b"NIL" else v.strip(b'"')
    m = re.search(name + rb" (\(.*\))\)\r\n$", data, re.S)
    return m.group(1) if m else data


# ----------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pair(dovecot_run_dir):
    """(lmdb, maildir) instances shared by the input tests of this module;
    each test works in mailboxes of its own.  Their logs must stay clean
    (checked here, as the conftest fixtures do for theirs)."""
    made = []
    try:
        for name, loc, plugins in (("lmdb", LMDB, None),
                                   ("maildir", MAILDIR, [])):
            d = dovecot_harness.Dovecot(
                os.path.join(dovecot_run_dir, "hostile-input-" + name),
                mail_location=loc, mail_plugins=plugins)
            if plugins is None and not d.lmdb_module_available():
                pytest.skip("lib20_lmdb_plugin.so not built")
            made.append(d)
            d.start()
        yield made
    finally:
        problems = []
        for d in made:
            d.stop()
            problems += d.log_problems()
        if not problems and not os.environ.get("DOVECOT_TEST_KEEP"):
            for d in made:
                d.cleanup()
        assert not problems, "Dovecot log problems:\n" + "\n".join(problems)


_boxes = iter(range(1, 1000))


def new_box():
    """A mailbox name of its own for one case (the same in both)."""
    return b"case%d" % next(_boxes)


def both(pair, fn):
    """fn(instance) on lmdb and maildir; asserts the answers are equal."""
    got = [fn(d) for d in pair]
    assert got[0] == got[1], "lmdb answered %r\nmaildir answered %r" % (
        str(got[0])[:2000], str(got[1])[:2000])
    return got[0]


# ----------------------------------------------------------- MIME input

def many_parts(n):
    parts = [b"--b\r\n\r\npart %d\r\n" % i for i in range(n)]
    parts[0] = b"--b\r\n\r\nneedle-first\r\n"
    parts[-1] = b"--b\r\n\r\nneedle-last\r\n"
    return (b"From: a@example.com\r\nSubject: %d parts\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" % n +
            b"".join(parts) + b"--b--\r\n")


def deep_nesting(depth):
    head = [b"From: a@example.com\r\nSubject: nested %d\r\n"
            b"MIME-Version: 1.0\r\n" % depth]
    tail = []
    for i in range(depth):
        head.append(b"Content-Type: multipart/mixed; boundary=\"n%d\"\r\n"
                    b"\r\n--n%d\r\n" % (i, i))
        tail.insert(0, b"\r\n--n%d--\r\n" % i)
    head.append(b"Content-Type: text/plain\r\n\r\nneedle-deep")
    return b"".join(head + tail)


def mime_case(d, box, msg, fetches, searches, lit="lit"):
    c = Raw(d)
    try:
        c.ok(b"CREATE ", box)
        st, uid = append(c, msg, box, lit=lit)
        assert st == "OK"
        c.ok(b"SELECT ", box)
        out = [hashlib.sha256(fetch_item(c, uid, "BODY.PEEK[]") or b"")
               .hexdigest()]
        for item in fetches:
            v = fetch_item(c, uid, item)
            out.append((item, hashlib.sha256(v).hexdigest()
                        if isinstance(v, bytes) and len(v) > 200 else v))
        for key in searches:
            out.append((key, c.search(key)))
        return out
    finally:
        c.close()


def test_100000_mime_parts(pair):
    box = new_box()
    msg = many_parts(100000)
    t0 = time.monotonic()
    out = both(pair, lambda d: mime_case(
        d, box, msg, ["BODYSTRUCTURE", "RFC822.SIZE", "BODY.PEEK[1]",
                 "BODY.PEEK[9999]", "BODY.PEEK[100000]", "BINARY.SIZE[2]"],
        [b"BODY needle-first", b"BODY needle-last", b"TEXT \"part 99998\"",
         b"BODY nowhere"]))
    assert out[0] == hashlib.sha256(msg).hexdigest()
    assert out[-4][1][2] == [1]
    assert time.monotonic() - t0 < TIMEOUT


def test_mime_nesting_1000_deep(pair):
    box = new_box()
    msg = deep_nesting(1000)
    out = both(pair, lambda d: mime_case(
        d, box, msg, ["BODYSTRUCTURE", "BODY.PEEK[1]", "BODY.PEEK[1.1.1.1]",
                 "BODY.PEEK[" + ".".join(["1"] * 120) + "]"],
        [b"BODY needle-deep", b"TEXT n999", b"BODY nowhere"]))
    # (Dovecot parses 100 levels; below that both formats agree that the
    # rest is one opaque part)
    assert out[0] == hashlib.sha256(msg).hexdigest()


def test_1mb_header_line(pair):
    box = new_box()
    value = b"v" * (1024 * 1024) + b"needle-hdr"
    msg = (b"From: a@example.com\r\nSubject: long header\r\nX-Long: " +
           value + b"\r\nX-After: after\r\n\r\nbody\r\n")
    out = both(pair, lambda d: mime_case(
        d, box, msg, ["BODY.PEEK[HEADER.FIELDS (X-LONG)]",
                 "BODY.PEEK[HEADER.FIELDS (X-AFTER)]", "RFC822.SIZE",
                 "ENVELOPE"],
        [b"HEADER X-Long needle-hdr", b"HEADER X-After after",
         b"TEXT needle-hdr", b"HEADER X-Long nowhere"]))
    assert out[0] == hashlib.sha256(msg).hexdigest()
    assert out[-4][1][2] == [1]


def test_raw_binary_body(pair):
    box = new_box()
    body = bytes(range(256)) * 64 + b"\r\n"
    msg = (b"From: a@example.com\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n" + body)
    out = both(pair, lambda d: mime_case(
        d, box, msg, ["BINARY.PEEK[1]", "BINARY.SIZE[1]", "RFC822.SIZE",
                 "BODYSTRUCTURE"],
        [b"BODY needle", b"TEXT binary"], lit="lit8"))
    # the 8-bit body without NUL in a plain literal, too
    msg2 = msg.replace(b"\x00", b"\x01")
    box2 = new_box()
    both(pair, lambda d: mime_case(d, box2, msg2, ["BODY.PEEK[1]"],
                                   [b"TEXT binary"]))


# ----------------------------------------------------------- SEARCH keys

CHARSET_MSGS = [
    ("utf-8", "Grüße aus Köln, naïve café ✓ Привет κόσμε 日本語"),
    ("iso-8859-1", "Grüße aus Köln, café crème"),
    ("iso-8859-7", "Καλημέρα κόσμε"),
    ("koi8-r", "Привет, мир"),
    ("shift_jis", "日本語のテキスト"),
]

SEARCH_KEYS = [
    ("1 char", [b"BODY a"]),
    ("1 char 8-bit", [b"CHARSET UTF-8 BODY ", ("lit", "é".encode())]),
    ("10 KB", [b"BODY ", ("lit", b"x" * 10240)]),
    ("10 KB text", [b"TEXT ", ("lit", ("Köln " * 2048).encode())]),
    ("all spaces", [b"BODY \"          \""]),
    ("one space", [b"TEXT \" \""]),
    ("empty", [b"BODY \"\""]),
    ("invalid UTF-8", [b"CHARSET UTF-8 BODY ", ("lit", b"\xff\xfe\xc3(")]),
    ("invalid UTF-8 mixed", [b"CHARSET UTF-8 TEXT ",
                             ("lit", b"K\xc3\xb6ln\xc3")]),
    ("UTF-8", [b"CHARSET UTF-8 BODY ", ("lit", "Grüße".encode())]),
    ("UTF-8 case", [b"CHARSET UTF-8 BODY ", ("lit", "GRÜSSE".encode())]),
    ("ISO-8859-1", [b"CHARSET ISO-8859-1 BODY ",
                    ("lit", "café".encode("iso-8859-1"))]),
    ("ISO-8859-7", [b"CHARSET ISO-8859-7 BODY ",
                    ("lit", "κόσμε".encode("iso-8859-7"))]),
    ("KOI8-R", [b"CHARSET KOI8-R TEXT ", ("lit", "Привет".encode("koi8-r"))]),
    ("Shift_JIS", [b"CHARSET Shift_JIS BODY ",
                   ("lit", "日本語".encode("shift_jis"))]),
    ("8-bit without CHARSET", [b"BODY ", ("lit", "café".encode())]),
    ("unknown charset", [b"CHARSET X-NO-SUCH BODY ", ("lit", b"caf\xe9")]),
    ("OR of 8-bit", [b"CHARSET UTF-8 OR BODY ", ("lit", "мир".encode()),
                     b" SUBJECT ", ("lit", "κόσμε".encode())]),
]


def charset_messages():
    out = []
    for cs, text in CHARSET_MSGS:
        subj = "=?%s?B?%s?=" % (cs, __import__("base64").b64encode(
            text.split(",")[0].encode(cs)).decode())
        out.append(("From: a@example.com\r\nSubject: %s\r\n"
                    "MIME-Version: 1.0\r\n"
                    "Content-Type: text/plain; charset=%s\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n\r\n"
                    % (subj, cs)).encode() + text.encode(cs) + b"\r\n")
    out.append(make_message("plain ascii", "a plain body with x and spaces"
                            "          in it\n" + "x" * 10300 + "\n"))
    return out


def search_answers(d, box=b"INBOX"):
    c = Raw(d)
    try:
        if box != b"INBOX":
            c.ok(b"CREATE ", box)
        for m in charset_messages():
            assert append(c, m, box)[0] == "OK"
        c.ok(b"SELECT ", box)
        return [(name, c.search(*parts)) for name, parts in SEARCH_KEYS]
    finally:
        c.close()


def test_search_keys(pair, dovecot_factory):
    box = new_box()
    answers = both(pair, lambda d: search_answers(d, box))
    named = dict(answers)
    assert named["ISO-8859-1"][2] == [1, 2]
    assert named["KOI8-R"][2] == [1, 4]
    assert named["unknown charset"][:2] == ("NO", "BADCHARSET")
    if fts_built(pair[0].module_dir):
        # fts_lmdb answers from its index: the same answers
        fts = dovecot_factory(mail_location=LMDB,
                              mail_plugins=["lmdb", "fts", "fts_lmdb"],
                              extra_config=FTS_CONFIG)
        assert search_answers(fts) == answers


# ----------------------------------------------------------- mailboxes

# Creating mailboxes one at a time with the mailbox list index on is
# quadratic in Dovecot 2.3 itself, for every format (2,000 CREATEs: lmdb
# 49 s, maildir 95 s; without the list index: 3 s).  So they are created
# without it, and the list index is then built once, as after an upgrade.
@pytest.mark.dovecot_config(extra_config="mail_fsync = never\n"
                            "mailbox_list_index = no\n")
def test_10000_mailboxes(dovecot):
    n = 10000
    c = Raw(dovecot, timeout=600)
    t0 = time.monotonic()
    # pipelined: all CREATEs go out before the first answer is read
    cmds = b"".join(b"C%d CREATE box%05d\r\n" % (i, i) for i in range(n))
    c.sock.sendall(cmds)
    oks = 0
    while oks < n:
        line = c._read()
        if re.match(rb"C\d+ ", line):
            assert b" OK " in line, line
            oks += 1
    created = time.monotonic() - t0
    assert append(c, make_message("last"), b"box09999")[0] == "OK"
    c.close()

    dovecot.extra_config = "mail_fsync = never\n"
    dovecot.stop()
    dovecot.start()
    c = Raw(dovecot, timeout=600)
    untagged, _ = c.ok(b'LIST "" "*"')
    names = [ln for ln in untagged if ln.startswith(b"* LIST")]
    assert len(names) == n + 1
    st, _, untagged, _ = c.cmd(b"STATUS box09998 (MESSAGES UIDNEXT)")
    assert st == "OK" and b"MESSAGES 0" in b"".join(untagged)
    c.ok(b"SELECT box05000")
    assert append(c, make_message("middle"), b"box05000")[0] == "OK"
    c.ok(b"RENAME box00001 renamed")
    c.ok(b"DELETE box00002")
    untagged, _ = c.ok(b'LIST "" "*" RETURN (STATUS (MESSAGES))')
    assert len([ln for ln in untagged if ln.startswith(b"* LIST")]) == n
    assert b"box09999 (MESSAGES 1)" in b"".join(untagged)
    c.close()
    res = dovecot.doveadm("mailbox", "status", "-u", "testuser", "messages",
                          "box09999")
    assert res.returncode == 0 and "messages=1" in res.stdout, res
    print("\n%d mailboxes created in %.1f s, all checks in %.1f s"
          % (n, created, time.monotonic() - t0))
    assert time.monotonic() - t0 < 300


MAILBOX_NAMES = [b"a..b", b"..", b"../escape", b"a/../b", b"a/./b",
                 b"a//b", b"/leading", b"trailing/", b"x%y", b"x*y",
                 b"%", b"*", b"..%*", b"&AOQ-bc", b"&AOQ-/../&AOQ-",
                 b"\xc3\xa4bc", b"a\xff", b"~testuser", b".", b"-"]


def mailbox_names(d):
    c = Raw(d)
    out = []
    try:
        for name in MAILBOX_NAMES:
            st, code, _, tagged = c.cmd(b"CREATE ", quote(name))
            row = [name, st, code]
            if st == "OK":
                untagged, _ = c.ok(b'LIST "" ', quote(name))
                row.append(sorted(ln.split(b'"/" ', 1)[-1].strip()
                                  for ln in untagged))
                row.append(append(c, make_message("in box"), name)[0])
                st2, _, untagged, _ = c.cmd(b"STATUS ", quote(name),
                                            b" (MESSAGES)")
                row.append((st2, b"MESSAGES 1" in b"".join(untagged)))
                row.append(c.cmd(b"DELETE ", quote(name))[0])
            out.append(row)
        st, _, untagged, _ = c.cmd(b'LIST "" "*"')
        # \Marked and \UnMarked say how each format tracks new mail
        out.append(sorted(re.sub(rb" ?\\(Un)?Marked", b"", ln)
                          for ln in untagged))
        return out
    finally:
        c.close()


def listing(path):
    out = set()
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            out.add(os.path.join(dirpath, n))
    return out


def test_mailbox_names(pair):
    homes = [os.path.dirname(d.home("testuser")) for d in pair]
    before = [listing(h) for h in homes]
    both(pair, mailbox_names)
    for d, home, old in zip(pair, homes, before):
        root = os.path.join(d.home("testuser"),
                            "lmdb" if d is pair[0] else "Maildir")
        new = [p for p in listing(home) - old
               if p != root and not p.startswith(root + os.sep)]
        assert not new, "written outside the mail root: %s" % new


# ----------------------------------------------------------- damaged data

def fill(d, n=20):
    c = Raw(d)
    msgs = [make_message("m%d" % i, ("line %d of %d\n" % (i, n)) * (50 + i))
            for i in range(n)]
    for m in msgs:
        assert append(c, m)[0] == "OK"
    c.ok(b"CREATE Other")
    c.close()
    return msgs


def snapshot(d):
    """FLAGS and the text of every message, or the failure."""
    c = Raw(d)
    try:
        st, code, untagged, tagged = c.cmd(b"SELECT INBOX")
        if st != "OK":
            return ("SELECT", st, code)
        st, code, untagged, tagged = c.cmd(b"UID FETCH 1:* (BODY.PEEK[])")
        if st != "OK":
            return ("FETCH", st, code)
        return hashlib.sha256(b"".join(untagged)).hexdigest()
    except EOFError as e:
        return ("disconnected", str(e)[:100])
    finally:
        try:
            c.close()
        except OSError:
            pass


def lmtp_code(d):
    try:
        d.lmtp_deliver("testuser", make_message("via lmtp"))
        return 250
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]


def mdb_copy(src_dir, dest_dir):
    os.makedirs(dest_dir)
    res = subprocess.run(["mdb_copy", src_dir, dest_dir],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout


def restore(d, backup):
    """README: stop, put the copy back, start."""
    d.stop()
    shutil.copyfile(os.path.join(backup, "data.mdb"), data_mdb(d))
    d.start()


needs_lmdb_utils = pytest.mark.skipif(
    shutil.which("mdb_copy") is None or shutil.which("mdb_load") is None,
    reason="lmdb-utils not installed")


@needs_lmdb_utils
@pytest.mark.dovecot_log_allow(r"schema version 2 is newer than this "
                               r"plugin's 1: refusing to touch it")
def test_newer_schema_version_refused(dovecot):
    fill(dovecot, 3)
    dovecot.stop()
    env = env_dir(dovecot)
    # meta/schema_version = 2, in mdb_load's own hex format
    dump = ("VERSION=3\nformat=bytevalue\ndatabase=meta\ntype=btree\n"
            "HEADER=END\n %s\n 00000002\nDATA=END\n"
            % b"schema_version".hex())
    res = subprocess.run(["mdb_load", "-s", "meta", env], input=dump,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout
    with open(data_mdb(dovecot), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    dovecot.start()
    mark = dovecot.log_mark()
    c = Raw(dovecot)
    st, code, _, tagged = c.cmd(b"SELECT INBOX")
    assert st == "NO", tagged
    st, code, _, tagged = c.cmd(b"APPEND INBOX ", ("lit", make_message("x")))
    assert st == "NO", tagged
    c.close()
    assert lmtp_code(dovecot) // 100 == 4        # retried, not bounced
    dovecot.stop()
    assert re.search(r"schema version 2 is newer than this plugin's 1",
                     dovecot.log_text(mark))
    with open(data_mdb(dovecot), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest, \
            "the newer database was modified"
    dovecot.start()


@needs_lmdb_utils
@pytest.mark.parametrize("damage", ["half", "one-page", "empty"])
@pytest.mark.dovecot_log_allow(r"data\.mdb is truncated")
def test_truncated_data_mdb(dovecot, damage):
    fill(dovecot)
    good = snapshot(dovecot)
    backup = os.path.join(dovecot.root, "backup")
    mdb_copy(env_dir(dovecot), backup)
    dovecot.stop()
    path = data_mdb(dovecot)
    size = os.path.getsize(path)
    os.truncate(path, {"half": size // 2, "one-page": 4096,
                       "empty": 0}[damage])
    dovecot.start()
    mark = dovecot.log_mark()
    got = snapshot(dovecot)
    assert got[:2] == ("SELECT", "NO"), got
    assert lmtp_code(dovecot) // 100 == 4
    time.sleep(0.3)
    assert "data.mdb is truncated" in dovecot.log_text(mark)
    assert "signal" not in dovecot.log_text(mark)
    # the index was left alone: restoring the copy brings everything back
    restore(dovecot, backup)
    assert snapshot(dovecot) == good


@needs_lmdb_utils
@pytest.mark.parametrize("size", [3000, 3 * 1024 * 1024],
                         ids=["small", "3MB"])
@pytest.mark.dovecot_log_allow(r"does not match its SHA-256")
def test_corrupted_body(dovecot, size):
    marker = b"MARKER-%d-0123456789" % size
    msg = make_message("target", "x" * size + "\n") + marker + b"\r\n"
    c = Raw(dovecot)
    assert append(c, make_message("intact"))[0] == "OK"
    assert append(c, msg)[0] == "OK"
    c.close()
    backup = os.path.join(dovecot.root, "backup")
    mdb_copy(env_dir(dovecot), backup)
    dovecot.stop()
    path = data_mdb(dovecot)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        i = data.find(marker)
        assert i >= 0
        while i >= 0:             # live page and stale copies alike
            data[i] ^= 0x20
            i = data.find(marker, i + 1)
        f.seek(0)
        f.write(data)
    dovecot.start()
    mark = dovecot.log_mark()
    c = Raw(dovecot)
    c.ok(b"SELECT INBOX")
    assert fetch_item(c, 1, "BODY.PEEK[]") is not None   # the other one
    try:
        st, code, untagged, tagged = c.cmd(b"UID FETCH 2 (BODY.PEEK[])")
        body = b"".join(untagged)
        assert st == "NO" or marker.swapcase() not in body, \
            "the corrupted text was served"
        assert marker not in body or st == "NO"
    except EOFError:
        pass        # a large body fails after its literal began
    c.close()
    time.sleep(0.3)
    assert "does not match its SHA-256" in dovecot.log_text(mark)
    restore(dovecot, backup)
    c = Raw(dovecot)
    c.ok(b"SELECT INBOX")
    assert fetch_item(c, 2, "BODY.PEEK[]") == msg
    c.close()


@needs_lmdb_utils
@pytest.mark.dovecot_log_allow(r"mdb_env_open|Invalid argument|not an LMDB")
def test_corrupted_meta_pages(dovecot):
    fill(dovecot, 3)
    dovecot.stop()
    with open(data_mdb(dovecot), "r+b") as f:
        for page in (0, 4096):        # both meta pages: magic and version
            f.seek(page + 16)
            f.write(b"\xde\xad\xbe\xef" * 2)
    dovecot.start()
    mark = dovecot.log_mark()
    got = snapshot(dovecot)
    assert got[:2] == ("SELECT", "NO"), got
    assert lmtp_code(dovecot) // 100 == 4
    time.sleep(0.3)
    log = dovecot.log_text(mark)
    assert "mdb_env_open" in log and "signal" not in log, log


# ----------------------------------------------------------- resources

@pytest.mark.skipif(bool(os.environ.get("DOVECOT_TEST_ASAN")),
                    reason="make test-asan lifts vsz_limit")
@pytest.mark.dovecot_config(extra_config=(
    "service lmtp {\n  vsz_limit = 150M\n}\n"
    "service imap {\n  vsz_limit = 150M\n}\n"
    "plugin {\n  lmdb_map_size = 1M\n}\n"))
@pytest.mark.dovecot_log_allow(r"can't grow beyond \d+ bytes: the process "
                               r"has reached its address space limit")
def test_address_space_limit_is_temporary(dovecot):
    """A map that can't grow within vsz_limit is the server's limit, not
    the user's quota: LMTP must answer 4xx (the MTA retries), never 552
    (a bounce), and everything stored so far stays readable."""
    last = None
    for i in range(400):
        msg = make_message("fill %d" % i, os.urandom(500000).hex() + "\n")
        try:
            dovecot.lmtp_deliver("testuser", msg)
            last = msg
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            break
    else:
        pytest.fail("the map never hit the address space limit")
    assert code // 100 == 4, (code, text)
    assert b"Mailbox database is full" not in text
    assert "raise the service's vsz_limit" in dovecot.log_text()
    c = Raw(dovecot)
    untagged, _ = c.ok(b"SELECT INBOX")
    n = int(re.search(rb"\* (\d+) EXISTS", b"".join(untagged)).group(1))
    assert n == i
    assert fetch_item(c, n, "BODY.PEEK[]").endswith(last)   # + LMTP trace
    c.close()
