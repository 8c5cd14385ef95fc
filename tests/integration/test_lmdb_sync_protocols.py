"""CONDSTORE/QRESYNC, IDLE, POP3, LMTP and GUIDs on the lmdb mailbox format.

Every test runs against a private Dovecot with mail_location = lmdb:~/lmdb
(the conftest default).  IMAP is spoken over a raw socket (RawImap) where
untagged responses matter (MODSEQ, VANISHED, IDLE pushes); imaplib is used
for plain byte-exact fetches.  LMDB's own bookkeeping is read with
`mdb_stat -a` (lmdb-utils) to check content-addressed body sharing.
"""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from dovecot_harness import make_message

PUSH_TIMEOUT = 2.0


# ------------------------------------------------------------ helpers

class RawImap:
    """Minimal IMAP client: tagged commands, untagged responses with
    literals folded in, deadlines that never break the stream."""

    def __init__(self, d, user="testuser", login=True, timeout=30):
        self.sock = socket.create_connection((d.host, d.ports["imap"]),
                                             timeout)
        self.buf = b""
        self.n = 0
        self.timeout = timeout
        greeting = self.read_response()
        assert greeting.startswith(b"* OK"), greeting
        if login:
            self.ok("LOGIN %s %s" % (user, d.users[user]))

    # --- reading
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("IMAP read timed out")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("IMAP connection closed")
        self.buf += data

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def _bytes(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, timeout=None):
        """One response line, any literals included verbatim."""
        deadline = time.monotonic() + (timeout or self.timeout)
        line = self._line(deadline)
        out = line
        while True:
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if not m:
                return out
            out += self._bytes(int(m.group(1)), deadline)
            line = self._line(deadline)
            out += line

    # --- commands
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, text, timeout=None):
        """Run a command; returns (untagged responses, tagged line)."""
        self.n += 1
        tag = "T%d" % self.n
        self.send("%s %s\r\n" % (tag, text))
        untagged = []
        while True:
            resp = self.read_response(timeout)
            if resp.startswith(tag.encode() + b" "):
                return untagged, resp.rstrip(b"\r\n")
            untagged.append(resp.rstrip(b"\r\n"))

    def ok(self, text, timeout=None):
        untagged, tagged = self.cmd(text, timeout)
        assert tagged.split()[1] == b"OK", (text, tagged, untagged)
        return untagged, tagged

    def append(self, mailbox, msg, flags=""):
        self.n += 1
        tag = "T%d" % self.n
        flags = "(%s) " % flags if flags else ""
        self.send("%s APPEND %s %s{%d}\r\n" % (tag, mailbox, flags, len(msg)))
        resp = self.read_response()
        assert resp.startswith(b"+"), resp
        self.send(msg + b"\r\n")
        while True:
            resp = self.read_response()
            if resp.startswith(tag.encode() + b" "):
                assert resp.split()[1] == b"OK", resp
                m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", resp)
                return int(m.group(2)) if m else None

    # --- IDLE
    def idle(self):
        self.n += 1
        self.idle_tag = "T%d" % self.n
        self.send("%s IDLE\r\n" % self.idle_tag)
        self.pushed = []
        while True:
            resp = self.read_response()
            if resp.startswith(b"+"):
                return
            self.pushed.append(resp.rstrip(b"\r\n"))

    def wait_for(self, pattern, timeout=PUSH_TIMEOUT):
        """Read pushed untagged responses until one matches pattern."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        for resp in self.pushed:
            if rx.search(resp):
                self.pushed.remove(resp)
                return resp
        while True:
            remaining = deadline - time.monotonic()
            try:
                resp = self.read_response(max(remaining, 0.001))
            except TimeoutError:
                raise AssertionError("no %r within %ss; got %r"
                                     % (pattern, timeout, self.pushed))
            resp = resp.rstrip(b"\r\n")
            if rx.search(resp):
                return resp
            self.pushed.append(resp)

    def done(self):
        self.send("DONE\r\n")
        while True:
            resp = self.read_response()
            if resp.startswith(self.idle_tag.encode() + b" "):
                assert resp.split()[1] == b"OK", resp
                return
            self.pushed.append(resp.rstrip(b"\r\n"))

    def close(self):
        try:
            self.cmd("LOGOUT", timeout=5)
        except (OSError, EOFError, TimeoutError):
            pass
        self.sock.close()


def resp_code(lines, name):
    """Integer of '[NAME n]' in any of lines, or None."""
    for line in lines:
        m = re.search(rb"\[" + name.encode() + rb" (\d+)\]", line)
        if m:
            return int(m.group(1))
    return None


def fetch_map(untagged):
    """{seq: line} of the '* n FETCH' responses."""
    out = {}
    for line in untagged:
        m = re.match(rb"\* (\d+) FETCH ", line)
        if m:
            out[int(m.group(1))] = line
    return out


def modseq_of(line):
    m = re.search(rb"MODSEQ \((\d+)\)", line)
    assert m, line
    return int(m.group(1))


def uid_of(line):
    m = re.search(rb"UID (\d+)", line)
    assert m, line
    return int(m.group(1))


def env_dir(d, user="testuser"):
    return os.path.join(d.home(user), "lmdb", "mail.lmdb")


def mdb_entries(d, user="testuser"):
    """{database name: entry count} from `mdb_stat -a`."""
    if shutil.which("mdb_stat") is None:
        pytest.skip("mdb_stat (lmdb-utils) not installed")
    res = subprocess.run(["mdb_stat", "-a", env_dir(d, user)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    counts, name = {}, None
    for line in res.stdout.splitlines():
        m = re.match(r"Status of (.*?):?$", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"\s+Entries: (\d+)", line)
        if m and name is not None:
            counts[name] = int(m.group(1))
            name = None
    for db in ("body", "msg", "chunk"):
        counts.setdefault(db, 0)
    return counts


def imap_fetch_bodies(d, user="testuser", mailbox="INBOX"):
    """[(uid, BODY[] bytes)] of mailbox, via imaplib."""
    conn = d.imap(user)
    try:
        typ, data = conn.select(mailbox, readonly=True)
        assert typ == "OK", data
        if data == [b"0"]:
            return []
        typ, data = conn.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        assert typ == "OK", data
        out = []
        for item in data:
            if isinstance(item, tuple):
                out.append((uid_of(item[0]), item[1]))
        return out
    finally:
        conn.logout()


LMTP_HEADER_RE = re.compile(
    rb"^((Return-Path|Delivered-To|Received): .*\r\n([ \t].*\r\n)*)*$")


def assert_delivered(stored, msg):
    """stored is msg byte-exact, after the headers LMTP prepends."""
    assert stored.endswith(msg), (stored[:400], msg[:400])
    prefix = stored[:len(stored) - len(msg)]
    assert LMTP_HEADER_RE.match(prefix), prefix


def big_message(size, subject="big"):
    line = "x" * 70 + "\n"
    body = "".join("%06d %s" % (i, line) for i in range(size // 79 + 1))
    return make_message(subject, body)


# ------------------------------------------------------------ CONDSTORE

def _append_n(imap, n, prefix="msg"):
    for i in range(n):
        imap.append("INBOX", make_message("%s %d" % (prefix, i),
                                          "body %d\n" % i))


def test_condstore_enable_select_highestmodseq(dovecot):
    c = RawImap(dovecot)
    untagged, _ = c.ok("ENABLE CONDSTORE")
    assert any(l.startswith(b"* ENABLED") and b"CONDSTORE" in l
               for l in untagged), untagged
    _append_n(c, 2)
    untagged, tagged = c.ok("SELECT INBOX")
    hms = resp_code(untagged, "HIGHESTMODSEQ")
    assert hms is not None and hms > 0, untagged
    assert b"[READ-WRITE]" in tagged
    c.close()

    c = RawImap(dovecot)
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    assert resp_code(untagged, "HIGHESTMODSEQ") == hms
    untagged, _ = c.ok("FETCH 1:* (MODSEQ)")
    fm = fetch_map(untagged)
    assert sorted(fm) == [1, 2]
    assert all(0 < modseq_of(l) <= hms for l in fm.values())
    c.close()


def test_condstore_store_bumps_modseq(dovecot):
    c = RawImap(dovecot)
    c.ok("ENABLE CONDSTORE")
    _append_n(c, 3)
    untagged, _ = c.ok("SELECT INBOX")
    hms0 = resp_code(untagged, "HIGHESTMODSEQ")
    before = {s: modseq_of(l)
              for s, l in fetch_map(c.ok("FETCH 1:* (MODSEQ)")[0]).items()}

    untagged, _ = c.ok("STORE 2 +FLAGS (\\Flagged)")
    fm = fetch_map(untagged)
    assert list(fm) == [2], untagged
    assert b"\\Flagged" in fm[2]
    ms2 = modseq_of(fm[2])
    assert ms2 > hms0 and ms2 > before[2]

    after = {s: modseq_of(l)
             for s, l in fetch_map(c.ok("FETCH 1:* (MODSEQ FLAGS)")[0]).items()}
    assert after[2] == ms2
    assert after[1] == before[1] and after[3] == before[3]

    # HIGHESTMODSEQ seen by a fresh session went up to the new modseq
    st, _ = c.ok("STATUS INBOX (HIGHESTMODSEQ)")
    m = re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(st))
    assert m and int(m.group(1)) == ms2, st
    c2 = RawImap(dovecot)
    untagged, _ = c2.ok("SELECT INBOX (CONDSTORE)")
    assert resp_code(untagged, "HIGHESTMODSEQ") == ms2
    c2.close()

    # a second store bumps again
    untagged, _ = c.ok("UID STORE 1 +FLAGS.SILENT (\\Seen)")
    fm = fetch_map(untagged)
    # silent store still reports MODSEQ under CONDSTORE (RFC 7162 3.1.3)
    assert 1 in fm and modseq_of(fm[1]) > ms2, untagged
    c.close()


def test_condstore_fetch_changedsince(dovecot):
    c = RawImap(dovecot)
    _append_n(c, 5)
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    hms = resp_code(untagged, "HIGHESTMODSEQ")
    c.ok("STORE 2 +FLAGS (\\Answered)")
    c.ok("STORE 4 +FLAGS (keyword1)")

    untagged, _ = c.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % hms)
    fm = fetch_map(untagged)
    assert sorted(fm) == [2, 4], untagged
    assert b"\\Answered" in fm[2] and b"keyword1" in fm[4]
    assert all(modseq_of(l) > hms for l in fm.values())

    # UID FETCH variant, and a modseq past everything returns nothing
    top = max(modseq_of(l) for l in fm.values())
    untagged, _ = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % top)
    assert fetch_map(untagged) == {}, untagged
    untagged, _ = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % (top - 1))
    fm = fetch_map(untagged)
    assert list(fm) == [4] and uid_of(fm[4]) == 4, untagged

    # a change made by another session is seen through CHANGEDSINCE too
    c2 = RawImap(dovecot)
    c2.ok("SELECT INBOX")
    c2.ok("STORE 5 +FLAGS (\\Deleted)")
    c2.close()
    untagged, _ = c.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % top)
    fm = fetch_map(untagged)
    assert list(fm) == [5] and b"\\Deleted" in fm[5], untagged
    c.close()


def test_condstore_unchangedsince_conflict(dovecot):
    c = RawImap(dovecot)
    _append_n(c, 3)
    c.ok("SELECT INBOX (CONDSTORE)")
    untagged, _ = c.ok("FETCH 1:3 (MODSEQ)")
    ms = {s: modseq_of(l) for s, l in fetch_map(untagged).items()}

    # message 2 gets changed behind our back (another session)
    c2 = RawImap(dovecot)
    c2.ok("SELECT INBOX")
    c2.ok("STORE 2 +FLAGS (\\Flagged)")
    c2.close()

    base = max(ms.values())
    untagged, tagged = c.ok(
        "STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % base)
    assert b"[MODIFIED 2]" in tagged, (tagged, untagged)
    # 1 and 3 were stored, 2 was not
    untagged, _ = c.ok("FETCH 1:3 (FLAGS)")
    fm = fetch_map(untagged)
    assert b"\\Seen" in fm[1] and b"\\Seen" in fm[3]
    assert b"\\Seen" not in fm[2] and b"\\Flagged" in fm[2]

    # UNCHANGEDSINCE 0 always fails
    untagged, tagged = c.ok("UID STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
    assert b"[MODIFIED 1]" in tagged, tagged
    untagged, _ = c.ok("UID FETCH 1 (FLAGS)")
    assert b"\\Draft" not in fetch_map(untagged)[1]
    c.close()


def test_qresync_vanished_earlier_and_uid_expunge(dovecot):
    c = RawImap(dovecot)
    untagged, _ = c.ok("ENABLE QRESYNC")
    assert any(b"QRESYNC" in l for l in untagged), untagged
    _append_n(c, 5)
    untagged, _ = c.ok("SELECT INBOX")
    uidvalidity = resp_code(untagged, "UIDVALIDITY")
    hms = resp_code(untagged, "HIGHESTMODSEQ")
    assert uidvalidity and hms
    c.close()

    # another session expunges UID 3 and flags UID 5
    c2 = RawImap(dovecot)
    c2.ok("SELECT INBOX")
    c2.ok("UID STORE 3 +FLAGS (\\Deleted)")
    untagged, _ = c2.ok("EXPUNGE")
    assert b"* 3 EXPUNGE" in untagged, untagged
    c2.ok("UID STORE 5 +FLAGS (\\Flagged)")
    c2.close()

    c = RawImap(dovecot)
    c.ok("ENABLE QRESYNC")
    untagged, _ = c.ok("SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, hms))
    vanished = [l for l in untagged if l.startswith(b"* VANISHED")]
    assert vanished == [b"* VANISHED (EARLIER) 3"], untagged
    fm = fetch_map(untagged)
    assert [uid_of(l) for l in fm.values()] == [5], untagged
    assert b"\\Flagged" in list(fm.values())[0]
    hms2 = resp_code(untagged, "HIGHESTMODSEQ")
    assert hms2 > hms
    exists = [l for l in untagged if l.endswith(b" EXISTS")]
    assert exists == [b"* 4 EXISTS"], untagged

    # wrong UIDVALIDITY: no VANISHED
    c3 = RawImap(dovecot)
    c3.ok("ENABLE QRESYNC")
    untagged, _ = c3.ok("SELECT INBOX (QRESYNC (%d %d))"
                        % (uidvalidity + 1, hms))
    assert not any(l.startswith(b"* VANISHED") for l in untagged), untagged
    c3.close()

    # UID EXPUNGE with QRESYNC: VANISHED instead of EXPUNGE
    c.ok("UID STORE 4 +FLAGS (\\Deleted)")
    untagged, _ = c.ok("UID EXPUNGE 4")
    assert b"* VANISHED 4" in untagged, untagged
    assert not any(l.endswith(b" EXPUNGE") for l in untagged), untagged
    untagged, _ = c.ok("UID SEARCH ALL")
    assert untagged == [b"* SEARCH 1 2 5"], untagged
    c.close()

    # and the later QRESYNC select sees both expunges
    c = RawImap(dovecot)
    c.ok("ENABLE QRESYNC")
    untagged, _ = c.ok("SELECT INBOX (QRESYNC (%d %d 1:5))"
                       % (uidvalidity, hms))
    vanished = [l for l in untagged if l.startswith(b"* VANISHED")]
    assert vanished == [b"* VANISHED (EARLIER) 3:4"], untagged
    c.close()


def test_highestmodseq_survives_restart(dovecot):
    c = RawImap(dovecot)
    _append_n(c, 3)
    c.ok("SELECT INBOX (CONDSTORE)")
    for flag in ("\\Seen", "\\Flagged", "\\Answered", "kw1"):
        c.ok("STORE 1:3 +FLAGS (%s)" % flag)
    c.ok("UID STORE 2 +FLAGS (\\Deleted)")
    c.ok("UID EXPUNGE 2")
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    hms = resp_code(untagged, "HIGHESTMODSEQ")
    ms = {uid_of(l): modseq_of(l) for l in
          fetch_map(c.ok("FETCH 1:* (UID MODSEQ)")[0]).values()}
    c.close()

    dovecot.restart()
    c = RawImap(dovecot)
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    hms2 = resp_code(untagged, "HIGHESTMODSEQ")
    assert hms2 >= hms, (hms, hms2)
    ms2 = {uid_of(l): modseq_of(l) for l in
           fetch_map(c.ok("FETCH 1:* (UID MODSEQ)")[0]).values()}
    assert set(ms2) == {1, 3}
    assert all(ms2[u] >= ms[u] for u in ms2), (ms, ms2)
    # a store after the restart goes above everything seen before
    untagged, _ = c.ok("STORE 1 -FLAGS (kw1)")
    assert modseq_of(fetch_map(untagged)[1]) > hms
    c.close()

    dovecot.restart()
    c = RawImap(dovecot)
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    assert resp_code(untagged, "HIGHESTMODSEQ") > hms
    c.close()


def _index_files(d, user="testuser"):
    out = []
    for root, _dirs, files in os.walk(os.path.join(d.home(user), "lmdb")):
        if "mail.lmdb" in root:
            continue
        out += [os.path.join(root, f) for f in files
                if f.startswith("dovecot.index")]
    return out


def test_highestmodseq_survives_index_loss(dovecot):
    """LMDB mirrors the highest modseq: losing every index file must not
    make HIGHESTMODSEQ go backwards (clients would miss changes)."""
    c = RawImap(dovecot)
    _append_n(c, 2)
    c.ok("SELECT INBOX (CONDSTORE)")
    for i in range(5):
        c.ok("STORE 1:2 %sFLAGS (\\Flagged)" % "+-"[i % 2])
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    hms = resp_code(untagged, "HIGHESTMODSEQ")
    uidvalidity = resp_code(untagged, "UIDVALIDITY")
    flags = c.ok("UID FETCH 1:* (FLAGS)")[0]
    c.close()

    dovecot.stop()
    files = _index_files(dovecot)
    assert files, "no index files found"
    for f in files:
        os.unlink(f)
    dovecot.start()
    c = RawImap(dovecot)
    untagged, _ = c.ok("SELECT INBOX (CONDSTORE)")
    assert resp_code(untagged, "HIGHESTMODSEQ") >= hms, (hms, untagged)
    assert b"* 2 EXISTS" in untagged, untagged
    assert resp_code(untagged, "UIDVALIDITY") == uidvalidity
    # (a rebuilt index may mark the mails \Recent again)
    assert [l.replace(b" \\Recent", b"").replace(b"\\Recent", b"")
            for l in c.ok("UID FETCH 1:* (FLAGS)")[0]] == flags
    c.close()


# ------------------------------------------------------------ IDLE

def test_idle_push_append_store_expunge(dovecot):
    a = RawImap(dovecot)
    b = RawImap(dovecot)
    b.append("INBOX", make_message("first", "one\n"))
    untagged, _ = a.ok("SELECT INBOX")
    assert b"* 1 EXISTS" in untagged
    a.idle()

    b.append("INBOX", make_message("second", "two\n"))
    a.wait_for(rb"^\* 2 EXISTS$")

    b.ok("SELECT INBOX")
    b.ok("STORE 1 +FLAGS (\\Flagged)")
    line = a.wait_for(rb"^\* 1 FETCH \(.*FLAGS \(")
    assert b"\\Flagged" in line, line

    b.ok("STORE 2 +FLAGS (\\Deleted)")
    line = a.wait_for(rb"^\* 2 FETCH \(.*FLAGS \(")
    assert b"\\Deleted" in line
    b.ok("EXPUNGE")
    a.wait_for(rb"^\* 2 EXPUNGE$")

    a.done()
    untagged, _ = a.ok("UID SEARCH ALL")
    assert untagged == [b"* SEARCH 1"], untagged
    a.close()
    b.close()


def test_idle_push_lmtp_delivery(dovecot):
    a = RawImap(dovecot)
    untagged, _ = a.ok("SELECT INBOX")
    assert b"* 0 EXISTS" in untagged
    a.idle()
    msg = make_message("via lmtp", "pushed\n")
    dovecot.lmtp_deliver("testuser", msg)
    a.wait_for(rb"^\* 1 EXISTS$")
    dovecot.lmtp_deliver("testuser", make_message("again", "x\n"))
    a.wait_for(rb"^\* 2 EXISTS$")
    a.done()
    untagged, _ = a.ok("FETCH 1 (BODY.PEEK[])")
    body = untagged[0]
    m = re.match(rb"\* 1 FETCH \(BODY\[\] \{(\d+)\}\r\n", body)
    assert m, body[:200]
    stored = body[m.end():m.end() + int(m.group(1))]
    assert_delivered(stored, msg)
    a.close()


def test_idle_with_condstore_reports_modseq(dovecot):
    a = RawImap(dovecot)
    b = RawImap(dovecot)
    b.append("INBOX", make_message("m", "m\n"))
    untagged, _ = a.ok("SELECT INBOX (CONDSTORE)")
    hms = resp_code(untagged, "HIGHESTMODSEQ")
    a.idle()
    b.ok("SELECT INBOX")
    b.ok("STORE 1 +FLAGS (\\Seen)")
    line = a.wait_for(rb"^\* 1 FETCH \(")
    assert b"\\Seen" in line and modseq_of(line) > hms, line
    a.done()
    a.close()
    b.close()


# ------------------------------------------------------------ POP3

def _pop_uidls(pop):
    _, lines, _ = pop.uidl()
    return {int(l.split()[0]): l.split()[1].decode() for l in lines}


def _pop_body(lines):
    return b"\r\n".join(lines) + b"\r\n"


def test_pop3_lists_and_retr_exact(dovecot):
    m1 = make_message("pop lmtp", "line one\n.dot line\n..two dots\n.\nend\n")
    m2 = make_message("pop append", "appended\r\n.leading dot\r\n")
    dovecot.lmtp_deliver("testuser", m1)
    c = RawImap(dovecot)
    c.append("INBOX", m2)
    c.close()
    stored = dict(imap_fetch_bodies(dovecot))
    assert len(stored) == 2
    assert_delivered(stored[1], m1)
    assert stored[2] == m2

    pop = dovecot.pop3()
    count, total = pop.stat()
    assert count == 2
    _, listing, _ = pop.list()
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in listing}
    assert sizes == {1: len(stored[1]), 2: len(stored[2])}
    assert total == len(stored[1]) + len(stored[2])
    for n in (1, 2):
        _, lines, octets = pop.retr(n)
        assert _pop_body(lines) == stored[n]
    _, lines, _ = pop.top(2, 0)
    assert b"Subject: pop append" in lines
    pop.quit()


def test_pop3_uidl_stable(dovecot):
    for i in range(3):
        dovecot.lmtp_deliver("testuser", make_message("u%d" % i, "%d\n" % i))
    pop = dovecot.pop3()
    u1 = _pop_uidls(pop)
    pop.quit()
    assert len(u1) == 3 and len(set(u1.values())) == 3

    pop = dovecot.pop3()
    assert _pop_uidls(pop) == u1
    pop.quit()

    dovecot.restart()
    pop = dovecot.pop3()
    assert _pop_uidls(pop) == u1
    # single-message UIDL form agrees
    assert pop.uidl(2).split()[2].decode() == u1[2]
    pop.quit()


def test_pop3_dele_quit_and_rset(dovecot):
    msgs = [make_message("d%d" % i, "body %d\n" % i) for i in range(4)]
    for m in msgs:
        dovecot.lmtp_deliver("testuser", m)
    pop = dovecot.pop3()
    u0 = _pop_uidls(pop)
    pop.quit()
    bodies0 = mdb_entries(dovecot)["body"]

    # DELE + RSET keeps the message
    pop = dovecot.pop3()
    pop.dele(1)
    pop.rset()
    pop.quit()
    pop = dovecot.pop3()
    assert pop.stat()[0] == 4
    assert _pop_uidls(pop) == u0
    pop.quit()

    # DELE + QUIT removes it (IMAP no longer sees it)
    pop = dovecot.pop3()
    pop.dele(2)
    assert pop.stat()[0] == 3     # hidden within the session already
    pop.quit()
    c = RawImap(dovecot)
    untagged, _ = c.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in untagged
    untagged, _ = c.ok("UID SEARCH ALL")
    assert untagged == [b"* SEARCH 1 3 4"], untagged
    untagged, _ = c.ok("UID SEARCH SUBJECT d1")
    assert untagged == [b"* SEARCH"], untagged
    c.close()
    assert mdb_entries(dovecot)["msg"] == 3
    assert mdb_entries(dovecot)["body"] == bodies0 - 1

    # remaining UIDLs unchanged, renumbered
    pop = dovecot.pop3()
    u1 = _pop_uidls(pop)
    assert sorted(u1.values()) == sorted(v for k, v in u0.items() if k != 2)
    assert u1 == {1: u0[1], 2: u0[3], 3: u0[4]}
    _, lines, _ = pop.retr(2)
    assert b"Subject: d2" in lines
    pop.quit()

    # delete another one; the rest keep their UIDLs
    pop = dovecot.pop3()
    pop.dele(1)
    pop.quit()
    dovecot.restart()
    pop = dovecot.pop3()
    assert _pop_uidls(pop) == {1: u0[3], 2: u0[4]}
    pop.quit()


# ------------------------------------------------------------ LMTP

def test_lmtp_single_and_multiple_recipients(dovecot):
    m1 = make_message("solo", "only testuser\n")
    res = dovecot.lmtp_deliver("testuser", m1)
    assert res["testuser"][0] == 250
    m2 = make_message("duo", "both users\n.dotted\n")
    res = dovecot.lmtp_deliver(["testuser", "user2@localhost"], m2)
    assert set(res) == {"testuser", "user2@localhost"}
    assert all(code == 250 for code, _ in res.values())

    t = imap_fetch_bodies(dovecot, "testuser")
    u2 = imap_fetch_bodies(dovecot, "user2")
    assert [uid for uid, _ in t] == [1, 2]
    assert [uid for uid, _ in u2] == [1]
    assert_delivered(t[0][1], m1)
    assert_delivered(t[1][1], m2)
    assert_delivered(u2[0][1], m2)
    assert imap_fetch_bodies(dovecot, "user3") == []
    # each user has an environment of its own
    assert mdb_entries(dovecot, "testuser")["msg"] == 2
    assert mdb_entries(dovecot, "user2")["msg"] == 1
    assert mdb_entries(dovecot, "user2")["body"] == 1


@pytest.mark.dovecot_config(extra_config="""
protocol lmtp {
  lmtp_add_received_header = no
}
""")
def test_lmtp_identical_delivery_stored_once(dovecot):
    msg = big_message(2 * 1024 * 1024, "dedup")
    assert len(msg) >= 2 * 1024 * 1024
    dovecot.lmtp_deliver("testuser", msg)
    e1 = mdb_entries(dovecot)
    assert e1["msg"] == 1 and e1["body"] == 1
    chunks = e1["chunk"]
    assert chunks >= 2 * 1024 * 1024 // (64 * 1024)

    dovecot.lmtp_deliver("testuser", msg)
    e2 = mdb_entries(dovecot)
    assert e2["msg"] == 2
    assert e2["body"] == 1, e2
    assert e2["chunk"] == chunks, e2

    bodies = imap_fetch_bodies(dovecot)
    assert len(bodies) == 2
    assert bodies[0][1] == bodies[1][1]
    assert_delivered(bodies[0][1], msg)

    # the same message to two users: each env holds it once
    dovecot.lmtp_deliver(["user2", "user3"], msg)
    for user in ("user2", "user3"):
        e = mdb_entries(dovecot, user)
        assert e["msg"] == 1 and e["body"] == 1, (user, e)
        (_, stored), = imap_fetch_bodies(dovecot, user)
        assert_delivered(stored, msg)

    # expunging one copy keeps the shared body for the other
    c = RawImap(dovecot)
    c.ok("SELECT INBOX")
    c.ok("UID STORE 1 +FLAGS (\\Deleted)")
    c.ok("UID EXPUNGE 1")
    c.close()
    e3 = mdb_entries(dovecot)
    assert e3["msg"] == 1 and e3["body"] == 1 and e3["chunk"] == chunks
    (_, stored), = imap_fetch_bodies(dovecot)
    assert_delivered(stored, msg)


def test_append_identical_stored_once(dovecot):
    msg = big_message(300 * 1024, "append dedup")
    c = RawImap(dovecot)
    c.append("INBOX", msg)
    e1 = mdb_entries(dovecot)
    c.append("INBOX", msg)
    e2 = mdb_entries(dovecot)
    assert (e1["msg"], e1["body"]) == (1, 1)
    assert (e2["msg"], e2["body"]) == (2, 1), e2
    assert e2["chunk"] == e1["chunk"]
    c.close()
    assert [b for _, b in imap_fetch_bodies(dovecot)] == [msg, msg]


def test_copy_adds_no_body(dovecot):
    c = RawImap(dovecot)
    for i in range(2):
        c.append("INBOX", make_message("c%d" % i, "copy me %d\n" % i))
    c.ok("CREATE Archive")
    e1 = mdb_entries(dovecot)
    assert (e1["msg"], e1["body"]) == (2, 2)
    c.ok("SELECT INBOX")
    untagged, tagged = c.ok("UID COPY 1 Archive")
    assert b"COPYUID" in tagged
    e2 = mdb_entries(dovecot)
    assert e2["msg"] == e1["msg"] + 1
    assert e2["body"] == e1["body"] and e2["chunk"] == e1["chunk"]
    c.ok("UID COPY 1:2 INBOX")
    e3 = mdb_entries(dovecot)
    assert e3["msg"] == e1["msg"] + 3 and e3["body"] == e1["body"]
    c.close()
    inbox = imap_fetch_bodies(dovecot)
    archive = imap_fetch_bodies(dovecot, mailbox="Archive")
    assert [u for u, _ in inbox] == [1, 2, 3, 4]
    assert inbox[2][1] == inbox[0][1] and inbox[3][1] == inbox[1][1]
    assert archive == [(1, inbox[0][1])]


# ------------------------------------------------------------ GUIDs

def _doveadm_fetch(d, fields, *query, user="testuser"):
    res = d.doveadm("fetch", "-u", user, fields, *query)
    assert res.returncode == 0, res.stderr
    mails = []
    for block in res.stdout.split("\f"):
        rec = {}
        for line in block.strip("\n").splitlines():
            k, _, v = line.partition(": ")
            if k:
                rec[k] = v.strip()
        if rec:
            mails.append(rec)
    return mails


def test_guids_and_copy(dovecot):
    c = RawImap(dovecot)
    c.append("INBOX", make_message("g1", "guid one\n"))
    c.append("INBOX", make_message("g2", "guid two\n"))
    c.ok("CREATE Other")
    c.close()

    mails = _doveadm_fetch(dovecot, "uid guid mailbox-guid", "all")
    assert len(mails) == 2, mails
    for m in mails:
        assert re.fullmatch(r"\S+", m.get("guid", "")), m
        assert re.fullmatch(r"[0-9a-f]{32}", m.get("mailbox-guid", "")), m
    assert mails[0]["guid"] != mails[1]["guid"]
    assert mails[0]["mailbox-guid"] == mails[1]["mailbox-guid"]
    inbox_guid = mails[0]["mailbox-guid"]
    guid_by_uid = {m["uid"]: m["guid"] for m in mails}

    c = RawImap(dovecot)
    c.ok("SELECT INBOX")
    untagged, _ = c.ok("UID FETCH 1:* (X-GUID)")
    xg = {uid_of(l): re.search(rb"X-GUID (\S+?)\)?$", l).group(1).decode()
          for l in fetch_map(untagged).values()}
    assert xg == {1: guid_by_uid["1"], 2: guid_by_uid["2"]}
    c.ok("UID COPY 2 Other")
    c.ok("UID COPY 1 INBOX")
    c.close()

    other = _doveadm_fetch(dovecot, "uid guid mailbox-guid mailbox",
                           "mailbox", "Other")
    assert len(other) == 1
    assert other[0]["guid"] == guid_by_uid["2"]
    assert other[0]["mailbox-guid"] != inbox_guid
    assert re.fullmatch(r"[0-9a-f]{32}", other[0]["mailbox-guid"])

    inbox = _doveadm_fetch(dovecot, "uid guid mailbox-guid", "mailbox",
                           "INBOX")
    assert {m["uid"]: m["guid"] for m in inbox} == {
        "1": guid_by_uid["1"], "2": guid_by_uid["2"], "3": guid_by_uid["1"]}
    assert {m["mailbox-guid"] for m in inbox} == {inbox_guid}

    # GUIDs and mailbox GUID survive a restart
    dovecot.restart()
    again = _doveadm_fetch(dovecot, "uid guid mailbox-guid", "mailbox",
                           "INBOX")
    assert again == inbox
    st = dovecot.doveadm("mailbox", "status", "-u", "testuser", "guid",
                         "INBOX")
    assert st.returncode == 0 and inbox_guid in st.stdout, st
