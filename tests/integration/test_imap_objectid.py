"""RFC 8474 OBJECTID (EMAILID, THREADID, MAILBOXID) from the imap_lmdb
plugin (lib95_imap_lmdb_plugin.so), against real Dovecot instances.

Every test loads the plugin with
    protocol imap { mail_plugins = $mail_plugins imap_lmdb }
and talks raw IMAP over a socket (Imap below), so that what is compared is
exactly what a client would see.  The identifier formats under test are
documented in README.md ("OBJECTID for IMAP") and
plugin/imap-lmdb/imap-objectid.h.
"""

import os
import re
import socket

import pytest

import dovecot_harness

PLUGIN_FILE = "lib95_imap_lmdb_plugin.so"
IMAP_LMDB_CONFIG = """\
protocol imap {
  mail_plugins = $mail_plugins imap_lmdb
}
"""
LMDB = "lmdb:~/lmdb"
MAILDIR = "maildir:~/Maildir"
SDBOX = "sdbox:~/sdbox"
MDBOX = "mdbox:~/mdbox"

OBJECTID_RE = re.compile(rb"^[A-Za-z0-9_-]{1,255}$")
TIMING_RE = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)\.")


def _module_dir():
    return dovecot_harness.find_module_dir()


pytestmark = pytest.mark.skipif(
    not _module_dir() or
    not os.path.isfile(os.path.join(_module_dir() or "", PLUGIN_FILE)),
    reason="%s not built (make; set DOVECOT_LMDB_MODULE_DIR)" % PLUGIN_FILE)


# ================================================================ client

class Resp:
    def __init__(self, tagged, untagged):
        self.tagged = tagged
        self.untagged = untagged
        self.status = tagged.split(b" ", 2)[1]

    def __repr__(self):
        return "<Resp %r %r>" % (self.tagged, self.untagged)


class Imap:
    """A minimal raw IMAP client: sends bytes, returns every line."""

    def __init__(self, dovecot, user="testuser"):
        self.sock = socket.create_connection(
            (dovecot.host, dovecot.ports["imap"]), 30)
        self.f = self.sock.makefile("rb")
        self.n = 0
        self.greeting = self._line()
        self.login = self.ok("LOGIN %s %s" % (user, dovecot.users[user]))

    def _line(self):
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed after %r" % out)
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out
            out += self.f.read(int(m.group(1)))

    def run(self, cmd, literal=None):
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.n += 1
        tag = b"T%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + cmd + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + cmd + b" {%d+}\r\n" %
                              len(literal) + literal + b"\r\n")
        untagged = []
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                return Resp(line, untagged)
            untagged.append(line)

    def ok(self, cmd, literal=None):
        r = self.run(cmd, literal)
        assert r.status == b"OK", r
        return r

    def bad(self, cmd):
        r = self.run(cmd)
        assert r.status == b"BAD", r
        return r

    def append(self, box, msg):
        return self.ok('APPEND "%s" "01-Jan-2024 00:00:00 +0000"' % box, msg)

    def fetch(self, seqset, items, uid=False):
        """{uid or seq: {ITEM: value}}, value = b"(id)" atoms or b"NIL"."""
        r = self.ok("%sFETCH %s (UID %s)" % ("UID " if uid else "",
                                            seqset, items))
        out = {}
        for line in r.untagged:
            m = re.match(rb"^\* (\d+) FETCH \((.*)\)\r\n$", line)
            if not m:
                continue
            d = dict(re.findall(rb"([A-Z-]+) (\([^()]*\)|\S+)", m.group(2)))
            out[int(d[b"UID"])] = d
        return out

    def ids(self, seqset, item, uid=False):
        """{uid: id} of item (EMAILID or THREADID); None for NIL."""
        out = {}
        for uid_, d in self.fetch(seqset, item, uid).items():
            v = d[item.encode()]
            out[uid_] = None if v == b"NIL" else v.strip(b"()")
        return out

    def search(self, criteria):
        r = self.ok(criteria)
        for line in r.untagged:
            if line.startswith(b"* SEARCH"):
                return sorted(int(x) for x in line.split()[2:])
        raise AssertionError("no SEARCH response: %r" % r)

    def status_mailboxid(self, box):
        r = self.ok('STATUS "%s" (MAILBOXID)' % box)
        m = re.search(rb"MAILBOXID \(([^()]*)\)", r.untagged[0])
        return m.group(1)

    def close(self):
        try:
            self.run("LOGOUT")
        finally:
            self.f.close()
            self.sock.close()


def valid_objectid(value):
    return value is not None and OBJECTID_RE.match(value) is not None


def msg(headers, body="body\n"):
    lines = ["From: a@example.com", "To: b@example.com",
             "Date: Mon, 01 Jan 2024 00:00:00 +0000"] + headers
    text = "\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")
    return text.encode()


def start(dovecot_factory, location, objectid=True, **kw):
    """An instance of location; with imap_lmdb unless objectid=False. The
    harness loads the lmdb plugin everywhere when it is built, so doveadm
    can write any format."""
    return dovecot_factory(mail_location=location,
                           extra_config=IMAP_LMDB_CONFIG if objectid else "",
                           **kw)


def other_location(d, location, user):
    """The other one of lmdb and maildir, in user's home, as a location."""
    fmt = MAILDIR if location == LMDB else LMDB
    driver, path = fmt.split(":", 1)
    return fmt, "%s:%s%s" % (driver, d.home(user), path[1:])


def capabilities(imap):
    r = imap.ok("CAPABILITY")
    return r.untagged[0].split()[2:]


# ================================================================ tests

@pytest.mark.parametrize("location", [LMDB, MAILDIR, SDBOX, MDBOX])
def test_capability_advertised(dovecot_factory, location):
    d = start(dovecot_factory, location)
    c = Imap(d)
    assert b"OBJECTID" in capabilities(c)
    # the capability sent with the LOGIN reply is the same one
    assert b"OBJECTID" in re.search(rb"\[CAPABILITY ([^\]]*)\]",
                                    c.login.tagged).group(1).split()
    c.close()


@pytest.mark.parametrize("location", [LMDB, MAILDIR, SDBOX, MDBOX])
def test_emailid_stable_across_copy_move_restart_resync(dovecot_factory,
                                                         location):
    d = start(dovecot_factory, location)
    c = Imap(d)
    c.ok("CREATE Copies")
    c.ok("CREATE Moved")
    c.append("INBOX", msg(["Subject: one", "Message-ID: <one@test>"]))
    c.append("INBOX", msg(["Subject: two", "Message-ID: <two@test>"]))
    c.ok("SELECT INBOX")
    orig = c.ids("1:*", "EMAILID", uid=True)
    one, two = orig[1], orig[2]
    assert valid_objectid(one) and valid_objectid(two)
    assert one != two

    c.ok("UID COPY 1 INBOX")                  # a copy in the same mailbox
    c.ok("UID COPY 1 Copies")                 # and in another one
    c.ok("UID COPY 2 Copies")
    c.ok("UID MOVE 2 Moved")                  # a move
    assert c.ids("1:*", "EMAILID", uid=True) == {1: one, 3: one}
    c.ok("SELECT Copies")
    assert c.ids("1:*", "EMAILID", uid=True) == {1: one, 2: two}
    c.ok("SELECT Moved")
    assert c.ids("1:*", "EMAILID", uid=True) == {1: two}
    c.ok("UID MOVE 1 Copies")                 # and moved again
    c.close()

    expect = {"INBOX": {1: one, 3: one}, "Copies": {1: one, 2: two, 3: two},
              "Moved": {}}

    def check():
        c = Imap(d)
        for box, want in expect.items():
            r = c.ok('SELECT "%s"' % box)
            got = c.ids("1:*", "EMAILID", uid=True) if want else {}
            assert got == want, (box, r)
        c.close()

    check()
    d.restart()
    check()
    res = d.doveadm("force-resync", "-u", "testuser", "*")
    assert res.returncode == 0, res.stderr
    check()


def _objectids(c, boxes):
    """{box: (MAILBOXID, {uid: {EMAILID, THREADID}})}"""
    out = {}
    for box in boxes:
        mailboxid = c.status_mailboxid(box)
        c.ok('SELECT "%s"' % box)
        out[box] = (mailboxid, c.fetch("1:*", "EMAILID THREADID", uid=True))
    return out


def _fill_for_dsync(d):
    c = Imap(d)
    c.ok("CREATE Archive")
    c.append("INBOX", msg(["Subject: p", "Message-ID: <p@test>"]))
    c.append("INBOX", msg(["Subject: r", "Message-ID: <r@test>",
                           "In-Reply-To: <p@test>", "References: <p@test>"]))
    c.ok("SELECT INBOX")
    c.ok("UID COPY 1:2 Archive")
    want = _objectids(c, ("INBOX", "Archive"))
    c.close()
    return want


@pytest.mark.parametrize("location", [LMDB, MAILDIR])
def test_objectids_survive_dsync(dovecot_factory, location):
    """doveadm backup keeps message and mailbox GUIDs, so a copy made by
    dsync (into user2, same format) has the same EMAILIDs, THREADIDs and
    MAILBOXIDs."""
    d = start(dovecot_factory, location)
    want = _fill_for_dsync(d)
    driver, path = location.split(":", 1)
    dest = "%s:%s%s" % (driver, d.home("user2"), path[1:])
    res = d.doveadm("backup", "-u", "testuser", dest)
    assert res.returncode == 0, res.stderr
    c = Imap(d, "user2")
    assert _objectids(c, ("INBOX", "Archive")) == want
    c.close()


@pytest.mark.parametrize("location", [LMDB, MAILDIR])
def test_objectids_survive_dsync_to_the_other_format(dovecot_factory,
                                                     location):
    """lmdb -> maildir and maildir -> lmdb: the IDs are functions of the
    GUIDs, and dsync keeps those whatever the formats."""
    src = start(dovecot_factory, location)
    if not src.lmdb_module_available():
        pytest.skip("lib20_lmdb_plugin.so not built")
    want = _fill_for_dsync(src)
    other, dest = other_location(src, location, "user2")
    res = src.doveadm("backup", "-u", "testuser", dest)
    assert res.returncode == 0, res.stderr
    src.stop()
    # user2 logs in to an instance whose mail_location is the other format
    dst = start(dovecot_factory, other)
    os.rmdir(dst.home("user2"))
    os.rename(src.home("user2"), dst.home("user2"))
    c = Imap(dst, "user2")
    assert _objectids(c, ("INBOX", "Archive")) == want
    c.close()


@pytest.mark.parametrize("location", [LMDB, MAILDIR, SDBOX, MDBOX])
def test_mailboxid_create_select_status_rename(dovecot_factory, location):
    d = start(dovecot_factory, location)
    c = Imap(d)
    r = c.ok("CREATE Projects")
    m = re.match(rb"^T\d+ OK \[MAILBOXID \(([^()]+)\)\] Create completed",
                 r.tagged)
    assert m, r
    created = m.group(1)
    assert valid_objectid(created)
    assert c.status_mailboxid("Projects") == created
    # STATUS with other items: same values as without MAILBOXID, plus it
    both = c.ok("STATUS Projects (MESSAGES UIDNEXT MAILBOXID UNSEEN)")
    plain = c.ok("STATUS Projects (MESSAGES UIDNEXT UNSEEN)")
    assert both.untagged == [plain.untagged[0].replace(
        b")\r\n", b" MAILBOXID (" + created + b"))\r\n")]

    # the mailbox name as a synchronizing literal: STATUS waits for it
    c.n += 1
    c.sock.sendall(b"L%d STATUS {8}\r\n" % c.n)
    assert c._line().startswith(b"+ ")
    c.sock.sendall(b"Projects (MAILBOXID MESSAGES)\r\n")
    assert c._line() == b"* STATUS Projects (MESSAGES 0 MAILBOXID (" + \
        created + b"))\r\n"
    assert c._line().startswith(b"L%d OK Status completed" % c.n)

    r = c.ok("SELECT Projects")
    assert b"* OK [MAILBOXID (" + created + b")] Ok\r\n" in r.untagged
    r = c.ok("EXAMINE INBOX")
    inbox = c.status_mailboxid("INBOX")
    assert b"* OK [MAILBOXID (" + inbox + b")] Ok\r\n" in r.untagged
    assert inbox != created and valid_objectid(inbox)
    c.ok("CLOSE")

    c.ok("RENAME Projects Archive")
    assert c.status_mailboxid("Archive") == created
    c.ok("CREATE Archive/2024")
    child = c.status_mailboxid("Archive/2024")
    c.ok("RENAME Archive Old")                 # with its child
    assert c.status_mailboxid("Old") == created
    assert c.status_mailboxid("Old/2024") == child
    c.close()

    d.restart()
    res = d.doveadm("force-resync", "-u", "testuser", "*")
    assert res.returncode == 0, res.stderr
    c = Imap(d)
    assert c.status_mailboxid("Old") == created
    assert c.status_mailboxid("Old/2024") == child
    assert c.status_mailboxid("INBOX") == inbox
    # a new mailbox under an old name is a new mailbox
    c.ok("DELETE Old/2024")
    r = c.ok("CREATE Old/2024")
    assert child not in r.tagged
    assert c.status_mailboxid("Old/2024") != child
    c.close()


@pytest.mark.parametrize("location", [LMDB, MAILDIR, SDBOX, MDBOX])
def test_objectids_survive_index_loss(dovecot_factory, location):
    """Every dovecot.index* file deleted. lmdb (LMDB records and the
    lmdb-mailbox-guid file) and maildir (file names and dovecot-uidlist)
    keep every ID and need nothing else. sdbox and mdbox need a
    force-resync, which rebuilds from the message files: the EMAILIDs come
    back, the MAILBOXIDs don't (their mailbox GUID lives only in the
    index), as README.md says."""
    d = start(dovecot_factory, location)
    c = Imap(d)
    c.ok("CREATE Box")
    c.append("Box", msg(["Subject: a", "Message-ID: <a@test>"]))
    c.append("INBOX", msg(["Subject: b", "Message-ID: <b@test>",
                           "References: <a@test>"]))
    before = _objectids(c, ("INBOX", "Box"))
    c.close()
    d.stop()
    home = d.home("testuser")
    for dirpath, _, files in os.walk(home):
        for name in files:
            if name.startswith("dovecot.") and ".index" in name:
                os.unlink(os.path.join(dirpath, name))
    d.start()
    dbox = location in (SDBOX, MDBOX)
    if dbox:
        res = d.doveadm("force-resync", "-u", "testuser", "*")
        assert res.returncode == 0, res.stderr
    c = Imap(d)
    after = _objectids(c, ("INBOX", "Box"))
    c.close()
    for box in before:
        assert after[box][1] == before[box][1], box        # EMAIL/THREADID
        if not dbox:
            assert after[box][0] == before[box][0], box    # MAILBOXID


@pytest.mark.parametrize("location", [LMDB, MAILDIR])
def test_threadid_groups_replies(dovecot_factory, location):
    d = start(dovecot_factory, location)
    c = Imap(d)
    c.ok("CREATE Sent")
    mails = [
        msg(["Subject: parent", "Message-ID: <parent@test>"]),
        msg(["Subject: Re: parent", "Message-ID: <reply@test>",
             "In-Reply-To: <parent@test>", "References: <parent@test>"]),
        msg(["Subject: Re: Re: parent", "Message-ID: <reply2@test>",
             "In-Reply-To: <reply@test>",
             "References: <parent@test>\r\n <reply@test>"]),
        # a client that only sets In-Reply-To
        msg(["Subject: Re: parent", "Message-ID: <irt@test>",
             "In-Reply-To: <parent@test>"]),
        msg(["Subject: other", "Message-ID: <other@test>"]),
        msg(["Subject: no ids at all"]),
    ]
    for m in mails:
        c.append("INBOX", m)
    # the reply also sits in another mailbox, where its parent isn't
    c.append("Sent", mails[1])
    c.ok("SELECT INBOX")
    t = c.ids("1:*", "THREADID", uid=True)
    assert valid_objectid(t[1])
    assert t[1] == t[2] == t[3] == t[4]
    assert valid_objectid(t[5]) and t[5] != t[1]
    assert t[6] is None                          # THREADID NIL
    assert c.search("UID SEARCH THREADID %s" % t[1].decode()) == [1, 2, 3, 4]
    assert c.search("UID SEARCH THREADID %s" % t[5].decode()) == [5]
    assert c.search("UID SEARCH NOT THREADID %s" % t[1].decode()) == [5, 6]
    assert c.search("UID SEARCH THREADID %s SUBJECT Re:" %
                    t[1].decode()) == [2, 3, 4]
    assert c.search("UID SEARCH THREADID T00000000000000000000000000000000") \
        == []
    # ESEARCH, SEARCHRES and SORT take it like any other key
    r = c.ok("UID SEARCH RETURN (COUNT) THREADID %s" % t[1].decode())
    assert any(b"COUNT 4" in line for line in r.untagged), r
    c.ok("UID SEARCH RETURN (SAVE) THREADID %s" % t[5].decode())
    assert list(c.fetch("$", "FLAGS", uid=True)) == [5]
    r = c.ok("UID SORT (ARRIVAL) US-ASCII THREADID %s" % t[1].decode())
    assert r.untagged[0] == b"* SORT 1 2 3 4\r\n"
    r = c.ok("UID THREAD REFERENCES US-ASCII THREADID %s" % t[1].decode())
    assert sorted(int(x) for x in re.findall(rb"\d+", r.untagged[0])) == \
        [1, 2, 3, 4]

    c.ok("SELECT Sent")
    assert c.ids("1:*", "THREADID", uid=True) == {1: t[1]}
    c.close()
    d.restart()
    c = Imap(d)
    c.ok("SELECT INBOX")
    assert c.ids("1:*", "THREADID", uid=True) == t
    c.close()


@pytest.mark.parametrize("location", [LMDB, MAILDIR])
def test_search_emailid_finds_message_and_copies(dovecot_factory, location):
    d = start(dovecot_factory, location)
    c = Imap(d)
    c.ok("CREATE Other")
    c.append("INBOX", msg(["Subject: a", "Message-ID: <a@test>"]))
    c.append("INBOX", msg(["Subject: b", "Message-ID: <b@test>"]))
    c.ok("SELECT INBOX")
    ids = c.ids("1:*", "EMAILID", uid=True)
    a, b = ids[1].decode(), ids[2].decode()
    c.ok("UID COPY 1 INBOX")
    c.ok("UID COPY 1 INBOX")
    c.ok("UID COPY 1:2 Other")
    assert c.search("UID SEARCH EMAILID %s" % a) == [1, 3, 4]
    assert c.search("UID SEARCH EMAILID %s" % b) == [2]
    assert c.search("SEARCH EMAILID %s" % a) == [1, 3, 4]      # seqs
    assert c.search("UID SEARCH NOT EMAILID %s" % a) == [2]
    assert c.search("UID SEARCH OR EMAILID %s EMAILID %s" % (a, b)) == \
        [1, 2, 3, 4]
    assert c.search("UID SEARCH emailid %s" % a) == [1, 3, 4]  # key case
    # IDs are case-sensitive, and unknown ones match nothing
    assert c.search("UID SEARCH EMAILID %s" % a.swapcase()) == []
    assert c.search("UID SEARCH EMAILID M0") == []
    assert c.search("UID SEARCH EMAILID Sffff") == []
    # not an objectid at all: a syntax error
    r = c.bad("UID SEARCH EMAILID a.b")
    assert b"Invalid EMAILID" in r.tagged
    c.bad("UID SEARCH THREADID a+b")
    c.bad("UID SEARCH EMAILID")
    c.ok("SELECT Other")
    assert c.search("UID SEARCH EMAILID %s" % a) == [1]
    assert c.search("UID SEARCH EMAILID %s" % b) == [2]
    c.close()


def test_maildir_emailid_is_an_encoded_guid(dovecot_factory):
    """maildir GUIDs are file names ("<time>.M<usec>P<pid>.<host>,S=,W=");
    the EMAILID spells the characters the RFC doesn't allow as _XX and the
    GUID can be read back from it."""
    d = start(dovecot_factory, MAILDIR)
    c = Imap(d)
    c.append("INBOX", msg(["Subject: a"]))
    c.ok("SELECT INBOX")
    f = c.fetch("1", "EMAILID X-GUID")[1]
    guid = f[b"X-GUID"].strip(b'"')
    eid = f[b"EMAILID"].strip(b"()")
    assert b"." in guid
    assert valid_objectid(eid)
    decoded = re.sub(rb"_([0-9A-F]{2})",
                     lambda m: bytes([int(m.group(1), 16)]), eid[1:])
    assert eid[:1] == b"M" and decoded == guid
    c.close()


@pytest.mark.parametrize("location", [LMDB, MAILDIR])
def test_client_without_objectid_sees_no_difference(dovecot_factory,
                                                    location):
    """The same session against the same format with and without the
    plugin. Apart from the capability and the MAILBOXID response codes that
    RFC 8474 adds to CREATE and SELECT (and that RFC 3501 clients ignore),
    every byte is the same."""
    script = [
        "CAPABILITY", "CREATE Work", "CREATE Work/Sub", "LIST \"\" *",
        ("APPEND INBOX (\\Seen) \"01-Jan-2024 00:00:00 +0000\"",
         msg(["Subject: s1", "Message-ID: <s1@test>"])),
        ("APPEND INBOX \"02-Jan-2024 00:00:00 +0000\"",
         msg(["Subject: s2", "Message-ID: <s2@test>",
              "References: <s1@test>"])),
        "SELECT INBOX", "FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE "
        "ENVELOPE BODY.PEEK[HEADER.FIELDS (Subject)])",
        "UID SEARCH ALL", "SEARCH SUBJECT s2", "SEARCH 1:*",
        "UID SEARCH UID 1:* NOT DELETED", "THREAD REFERENCES US-ASCII ALL",
        "SORT (SUBJECT) US-ASCII ALL", "COPY 1:2 Work", "MOVE 1 Work/Sub",
        "STATUS Work (MESSAGES UIDNEXT UNSEEN RECENT HIGHESTMODSEQ)",
        "STATUS Work (MESSAGES)", "EXAMINE Work", "FETCH 1:* (UID FLAGS)",
        "RENAME Work/Sub Work/Sub2", "LIST \"\" *", "DELETE Work/Sub2",
        # words this plugin gives a meaning to, from a client that never
        # saw OBJECTID: stock answers, whatever the plugin does for others
        "FETCH 1 (EMAILID)", "STATUS INBOX (MAILBOXID)",
        "SEARCH EMAILID Mabc", "SEARCH THREADID Tabc",
        "STATUS INBOX (MESSAGES FOO)", "STATUS INBOX ()",
        "STATUS INBOX MESSAGES", "CREATE", "CREATE \"\"", "LOGOUT",
    ]
    # the CAPABILITY and EMAILID/MAILBOXID commands differ by design when
    # the plugin is on; they are compared separately below
    transcripts = {}
    for objectid in (False, True):
        d = start(dovecot_factory, location, objectid=objectid)
        c = Imap(d)
        lines = []
        for step in script:
            cmd, lit = step if isinstance(step, tuple) else (step, None)
            if cmd == "LOGOUT":
                c.sock.sendall(b"Z LOGOUT\r\n")
                lines.append(c.f.read())
                break
            r = c.run(cmd, lit)
            lines.append(b"".join(r.untagged) + r.tagged)
        c.f.close()
        c.sock.close()
        d.stop()
        transcripts[objectid] = lines

    def normalize(text, objectid):
        text = TIMING_RE.sub(b".", text)
        text = re.sub(rb"UIDVALIDITY \d+", b"UIDVALIDITY x", text)
        text = re.sub(rb"(APPENDUID|COPYUID) \d+", rb"\1 x", text)
        if objectid:
            text = text.replace(b" OBJECTID", b"")
            text = re.sub(rb"\* OK \[MAILBOXID \([A-Za-z0-9_-]+\)\] Ok\r\n",
                          b"", text)
            text = re.sub(rb"\[MAILBOXID \([A-Za-z0-9_-]+\)\] ", b"", text)
        return text

    stock, plugin = transcripts[False], transcripts[True]
    assert len(stock) == len(plugin)
    for step, a, b in zip(script, stock, plugin):
        step = step[0] if isinstance(step, tuple) else step
        if step.startswith(("FETCH 1 (EMAILID", "STATUS INBOX (MAILBOXID",
                            "SEARCH EMAILID", "SEARCH THREADID")):
            # an OBJECTID server answers these; stock Dovecot says BAD
            assert b" BAD " in a, a
            assert b" OK " in b, b
            continue
        assert normalize(a, False) == normalize(b, True), step
    # the differences the normalisation hid are exactly the RFC 8474 ones
    joined = b"".join(plugin)
    assert b" OBJECTID" in plugin[0]
    assert re.search(rb"OK \[MAILBOXID \(F[0-9a-f]{32}\)\] Create", joined)
    assert re.search(rb"\* OK \[MAILBOXID \(F[0-9a-f]{32}\)\] Ok", joined)


@pytest.mark.parametrize("location", ["mbox:~/mail:INBOX=~/mail/inbox"])
def test_unstable_format_keeps_stock_behaviour(dovecot_factory, location):
    """mbox keeps no message GUID anywhere but its index: OBJECTID is not
    advertised, and the plugin changes nothing, byte for byte."""
    script = ["CAPABILITY", "CREATE Box",
              ("APPEND INBOX \"01-Jan-2024 00:00:00 +0000\"",
               msg(["Subject: m", "Message-ID: <m@test>"])),
              "SELECT INBOX", "FETCH 1 (UID EMAILID)",
              "FETCH 1 (UID THREADID)", "STATUS Box (MAILBOXID)",
              "STATUS Box (MESSAGES)", "SEARCH EMAILID Mabc",
              "SEARCH THREADID Tabc", "SEARCH ALL"]
    out = {}
    for objectid in (False, True):
        d = start(dovecot_factory, location, objectid=objectid)
        c = Imap(d)
        logged_in = c.login.tagged
        res = []
        for step in script:
            cmd, lit = step if isinstance(step, tuple) else (step, None)
            r = c.run(cmd, lit)
            res.append(b"".join(r.untagged) + r.tagged)
        c.close()
        d.stop()
        text = TIMING_RE.sub(b".", logged_in + b"".join(res))
        out[objectid] = re.sub(rb"(UIDVALIDITY|APPENDUID) \d+", rb"\1 x",
                               text)
    assert b"OBJECTID" not in out[True]
    assert out[True] == out[False]
