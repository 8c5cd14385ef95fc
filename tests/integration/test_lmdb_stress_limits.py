"""Stress and limit tests of the lmdb mailbox format.

  * concurrency: 4 IMAP sessions of one user APPEND/STORE/COPY/EXPUNGE at
    once; nothing lost or duplicated, no deadlock, force-resync changes
    nothing;
  * map growth (lmdb_map_size = 1M) and a full map (lmdb_max_size = 4M):
    clean NO / LMTP failure, earlier mail still readable byte-exact, and
    after an EXPUNGE saves fit again;
  * default vsz_limit (256M): a 50 MB message round-trips;
  * bad input (8-bit, NUL, bare LF/CR, 0 bytes, the malformed MIME corpus)
    is answered exactly like maildir answers it.

NFS refusal is not tested here (no NFS): see the unit tests.
"""

import base64
import collections
import glob
import hashlib
import os
import re
import smtplib
import socket
import subprocess
import threading
import time

import pytest

import dovecot_harness
from dovecot_harness import make_message

CORPUS_DIR = os.environ.get("MIME_EDGE_CORPUS", os.path.join(
    dovecot_harness.REPO_ROOT, "..", "shared", "corpus", "mime-edge-cases"))

# what the plugin logs (e_error) when a save hits lmdb_max_size
MAP_FULL_LOG = (r"lmdb: \w[\w ]*: LMDB map of \S+ is full at its limit of "
                r"\d+ bytes \(plugin setting lmdb_max_size\)")


# ----------------------------------------------------------------- helpers

def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def unique_blob(size, seed):
    """size bytes of CRLF-terminated base64 lines, unique per seed."""
    raw = hashlib.sha256(seed.encode()).digest() + os.urandom(size * 3 // 4)
    text = base64.b64encode(raw)
    lines = [text[i:i + 76] for i in range(0, len(text), 76)]
    out = b"\r\n".join(lines)[:size - 2] + b"\r\n"
    return out


def big_message(subject, size, seed):
    hdr = make_message(subject, "", headers={"X-Test-Id": seed})
    return hdr + unique_blob(size, seed)


def appenduid(data):
    """UID from the APPENDUID response code of an APPEND answer."""
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert m, "no APPENDUID in %r" % (data,)
    return int(m.group(2))


def fetch_items(conn, uidset, items):
    """{uid: (response text without literals, [literals])} of a UID FETCH
    through imaplib."""
    typ, data = conn.uid("FETCH", uidset, items)
    assert typ == "OK", (typ, data)
    msgs = []
    for part in data:
        if part is None:
            continue
        head = part[0] if isinstance(part, tuple) else part
        if re.match(rb"\d+ \(", head) or not msgs:
            msgs.append([b"", []])
        msgs[-1][0] += head
        if isinstance(part, tuple):
            msgs[-1][1].append(part[1])
    res = {}
    for meta, lits in msgs:
        m = re.search(rb"\bUID (\d+)", meta)
        if m is None:
            continue        # unsolicited flag update (another session)
        uid = int(m.group(1))
        if uid in res and not lits:
            continue        # ditto, with UID as a UID command is running
        assert uid not in res or not res[uid][1], \
            "UID %d twice in one FETCH: %r" % (uid, msgs)
        res[uid] = (meta, lits)
    return res


def flags_of(meta):
    m = re.search(rb"FLAGS \(([^)]*)\)", meta)
    assert m, meta
    return frozenset(f for f in m.group(1).decode().split() if f != "\\Recent")


def tid_of(literal):
    m = re.match(rb"X-Test-Id: (\S+)\r\n", literal, re.I)
    assert m, literal
    return m.group(1).decode()


def mailbox_snapshot(conn, box):
    """STATUS numbers and [(uid, flags, x-test-id, sha256 of BODY[])]."""
    typ, data = conn.status(box, "(MESSAGES UIDNEXT UIDVALIDITY)")
    assert typ == "OK", data
    status = data[0]
    typ, _ = conn.select(box, readonly=True)
    assert typ == "OK"
    msgs = fetch_items(conn, "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS "
                       "(X-TEST-ID)] BODY.PEEK[])")
    rows = []
    for uid, (meta, lits) in sorted(msgs.items()):
        assert len(lits) == 2, (meta, lits)
        rows.append((uid, flags_of(meta), tid_of(lits[0]),
                     hashlib.sha256(lits[1]).hexdigest()))
    conn.close()
    return status, rows


def session_pids(d, comm):
    pids = []
    for pid in dovecot_harness._session_pids(d.master_pid):
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == comm:
                    pids.append(pid)
        except OSError:
            pass
    return pids


def data_mdb(d, user="testuser"):
    return os.path.join(d.home(user), "lmdb", "mail.lmdb", "data.mdb")


class RawImap:
    """A minimal IMAP client that sends literals byte for byte (imaplib
    rewrites bare LF/CR to CRLF) and returns raw response lines."""

    def __init__(self, d, user="testuser", timeout=60):
        self.sock = socket.create_connection((d.host, d.ports["imap"]),
                                             timeout)
        self.f = self.sock.makefile("rb")
        self.n = 0
        assert self.f.readline().startswith(b"* OK")
        tagged, _ = self.command(b"LOGIN %s %s" % (
            user.encode(), d.users[user].encode()))
        assert tagged.split()[1] == b"OK", tagged

    def _line(self):
        buf = b""
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("server closed the connection after %r" % buf)
            buf += line
            m = re.search(rb"~?\{(\d+)\}\r\n$", line)
            if not m:
                return buf
            n = int(m.group(1))
            lit = self.f.read(n)
            assert len(lit) == n
            buf += lit

    def command(self, cmd, literal=None):
        """(tagged line, [untagged lines]).  literal: sent as a
        synchronizing literal appended to cmd."""
        self.n += 1
        tag = b"R%d" % self.n
        untagged = []
        if literal is None:
            self.sock.sendall(tag + b" " + cmd + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + cmd + b" {%d}\r\n" % len(literal))
            while True:
                line = self._line()
                if line.startswith(b"+"):
                    self.sock.sendall(literal + b"\r\n")
                    break
                if line.startswith(tag + b" "):
                    return line, untagged       # refused before the literal
                untagged.append(line)
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                return line, untagged
            untagged.append(line)

    def close(self):
        try:
            self.command(b"LOGOUT")
        except (OSError, EOFError):
            pass
        self.f.close()
        self.sock.close()


# ------------------------------------------------------------ concurrency

N_CLIENTS = 4
N_APPENDS = 500


def _client(d, cid, result):
    """One IMAP session: N_APPENDS appends mixed with STORE, COPY and
    EXPUNGE of its own messages.  Fills result with what must survive."""
    sent = {}                 # tid -> bytes
    inbox = {}                # tid -> expected flags
    second = {}               # tid -> expected flags of the copy
    conn = d.imap(timeout=90)
    try:
        assert conn.select("INBOX")[0] == "OK"
        for i in range(N_APPENDS):
            tid = "c%d-%04d" % (cid, i)
            msg = make_message("client %d msg %d" % (cid, i),
                               "client %d message %d\n%s\n" %
                               (cid, i, ("%s\n" % tid) * (i % 250)),
                               headers={"X-Test-Id": tid})
            sent[tid] = msg
            typ, data = conn.append("INBOX", None, None, msg)
            assert typ == "OK", (tid, typ, data)
            uid = appenduid(data)
            flags = set()
            if i % 5 == 0:
                typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT",
                                     r"(\Flagged $Client%d)" % cid)
                assert typ == "OK", (tid, data)
                flags |= {"\\Flagged", "$Client%d" % cid}
            if i % 10 == 1:
                # read while the others write
                got = fetch_items(conn, str(uid), "(UID BODY.PEEK[])")
                assert got[uid][1][0] == crlf(msg), tid
            if i % 7 == 0:
                typ, data = conn.uid("COPY", str(uid), "Second")
                assert typ == "OK", (tid, data)
                second[tid] = frozenset(flags)
            if i % 3 == 0:
                typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT",
                                     r"(\Deleted)")
                assert typ == "OK", (tid, data)
                typ, data = conn.uid("EXPUNGE", str(uid))
                assert typ == "OK", (tid, data)
            else:
                inbox[tid] = frozenset(flags)
            if i % 50 == 49:
                assert conn.noop()[0] == "OK"
        conn.logout()
    except BaseException as e:
        result["error"] = "%s: %r" % (type(e).__name__, e)
        return
    result.update(sent=sent, inbox=inbox, second=second)


@pytest.mark.parametrize("dovecot", [
    {},
    # the map grows from 1M while four processes write
    {"extra_config": "plugin {\n  lmdb_map_size = 1M\n}\n"},
], ids=["default-map", "map-1M"], indirect=True)
def test_concurrent_clients(dovecot):
    imap = dovecot.imap()
    assert imap.create("Second")[0] == "OK"
    imap.logout()

    results = [dict() for _ in range(N_CLIENTS)]
    threads = [threading.Thread(target=_client, args=(dovecot, c, results[c]),
                                daemon=True, name="imap-client-%d" % c)
               for c in range(N_CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1, 150 - (time.monotonic() - start)))
    elapsed = time.monotonic() - start
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, "deadlock? %s still running after %.0fs" % (stuck,
                                                                   elapsed)
    for c, r in enumerate(results):
        assert "error" not in r, "client %d failed: %r" % (c, r["error"])
    print("\n%d clients x %d APPENDs (+STORE/COPY/EXPUNGE): %.1fs, "
          "data.mdb %d bytes" % (N_CLIENTS, N_APPENDS, elapsed,
                                 os.path.getsize(data_mdb(dovecot))))
    assert elapsed < 120, "too slow: %.1fs" % elapsed
    if "lmdb_map_size = 1M" in dovecot.extra_config:
        assert os.path.getsize(data_mdb(dovecot)) > 1024 * 1024

    sent, exp_inbox, exp_second = {}, {}, {}
    for r in results:
        sent.update(r["sent"])
        exp_inbox.update(r["inbox"])
        exp_second.update(r["second"])

    conn = dovecot.imap()
    snaps = {}
    for box, expected in (("INBOX", exp_inbox), ("Second", exp_second)):
        status, rows = mailbox_snapshot(conn, box)
        snaps[box] = (status, rows)
        ids = collections.Counter(tid for _, _, tid, _ in rows)
        dups = sorted(t for t, n in ids.items() if n > 1)
        assert not dups, "%s: duplicated messages %s" % (box, dups[:20])
        lost = sorted(set(expected) - set(ids))
        extra = sorted(set(ids) - set(expected))
        assert not lost, "%s: lost %d messages: %s" % (box, len(lost),
                                                       lost[:20])
        assert not extra, "%s: %d messages that should be gone: %s" % (
            box, len(extra), extra[:20])
        for uid, flags, tid, digest in rows:
            assert flags == expected[tid], (box, uid, tid, flags)
            assert digest == hashlib.sha256(crlf(sent[tid])).hexdigest(), \
                (box, uid, tid, "body differs")
        assert int(re.search(rb"MESSAGES (\d+)", status).group(1)) == \
            len(expected)
    conn.logout()

    res = dovecot.doveadm("force-resync", "-u", "testuser", "*")
    assert res.returncode == 0, res.stderr
    assert "Error" not in res.stderr and "Panic" not in res.stderr, res.stderr
    conn = dovecot.imap()
    for box in ("INBOX", "Second"):
        assert mailbox_snapshot(conn, box) == snaps[box], \
            "force-resync changed %s" % box
    conn.logout()
    dovecot.check_log_clean()


# ------------------------------------------------------------ map size

@pytest.mark.dovecot_config(extra_config="plugin {\n  lmdb_map_size = 1M\n}\n")
def test_map_grows_from_1m(dovecot):
    conn = dovecot.imap()
    msgs = {}
    for i in range(40):
        msg = big_message("grow %d" % i, 200 * 1024, "grow-%d" % i)
        typ, data = conn.append("INBOX", None, None, msg)
        assert typ == "OK", (i, typ, data)
        msgs[appenduid(data)] = msg
    size = os.path.getsize(data_mdb(dovecot))
    assert size > 1024 * 1024, "data.mdb is only %d bytes" % size
    assert size >= 40 * 200 * 1024, size
    conn.logout()

    conn = dovecot.imap()
    conn.select("INBOX")
    got = fetch_items(conn, "1:*", "(UID BODY.PEEK[])")
    assert sorted(got) == sorted(msgs)
    for uid, (meta, lits) in got.items():
        assert lits[0] == msgs[uid], uid
    conn.logout()
    dovecot.check_log_clean()


@pytest.mark.dovecot_config(
    extra_config="plugin {\n  lmdb_map_size = 1M\n  lmdb_max_size = 4M\n}\n")
@pytest.mark.dovecot_log_allow(MAP_FULL_LOG)
def test_map_full_is_clean_no(dovecot):
    conn = dovecot.imap()
    stored = {}
    refused = None
    for i in range(40):          # 40 x 200 KB = 8 MB: twice the limit
        msg = big_message("full %d" % i, 200 * 1024, "full-%d" % i)
        typ, data = conn.append("INBOX", None, None, msg)  # BAD would raise
        if typ != "OK":
            refused = (i, typ, data)
            break
        stored[appenduid(data)] = msg
    assert refused is not None, "40 x 200 KB fit into a 4M map?"
    i, typ, data = refused
    no_text = data[0]
    assert typ == "NO", refused
    assert b"full" in data[0].lower() or b"quota" in data[0].lower(), refused
    assert len(stored) >= 5, "only %d messages fit in 4M" % len(stored)
    assert os.path.getsize(data_mdb(dovecot)) <= 4 * 1024 * 1024

    # the same session keeps working
    assert conn.noop()[0] == "OK"
    assert conn.select("INBOX")[0] == "OK"
    got = fetch_items(conn, "1:*", "(UID BODY.PEEK[])")
    assert sorted(got) == sorted(stored)
    for uid, (meta, lits) in got.items():
        assert lits[0] == stored[uid], uid
    typ, data = conn.uid("STORE", "%d" % min(stored), "+FLAGS", r"(\Seen)")
    assert typ == "OK", data

    # LMTP at the limit: a clean 4xx/5xx reply, no crash
    msg = big_message("lmtp full", 300 * 1024, "lmtp-full")
    with pytest.raises(smtplib.SMTPException) as exc:
        dovecot.lmtp_deliver("testuser", msg)
    err = exc.value
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        (code, reply), = err.recipients.values()
    else:
        code, reply = err.smtp_code, err.smtp_error
    assert 400 <= code < 600, (code, reply)

    # still serving; the refused mails left nothing behind
    conn2 = dovecot.imap()
    conn2.select("INBOX")
    got = fetch_items(conn2, "1:*", "(UID BODY.PEEK[])")
    assert {u: lits[0] for u, (m, lits) in got.items()} == stored
    conn2.logout()
    assert conn.noop()[0] == "OK"
    print("\nfull map: %d x 200 KB stored; APPEND %r; LMTP %d %r"
          % (len(stored), no_text, code, reply))

    # expunging frees pages that later saves reuse: the user recovers
    victims = sorted(stored)[:len(stored) // 2]
    typ, _ = conn.uid("STORE", ",".join(map(str, victims)), "+FLAGS.SILENT",
                      r"(\Deleted)")
    assert typ == "OK"
    assert conn.expunge()[0] == "OK"
    for uid in victims:
        del stored[uid]
    for i in range(2):
        msg = big_message("after %d" % i, 200 * 1024, "after-%d" % i)
        typ, data = conn.append("INBOX", None, None, msg)
        assert typ == "OK", ("no recovery after EXPUNGE", data)
        stored[appenduid(data)] = msg
    got = fetch_items(conn, "1:*", "(UID BODY.PEEK[])")
    assert {u: lits[0] for u, (m, lits) in got.items()} == stored
    conn.logout()
    assert os.path.getsize(data_mdb(dovecot)) <= 4 * 1024 * 1024

    problems = dovecot.log_problems([MAP_FULL_LOG])
    assert not problems, problems
    assert not re.search(r"Panic:|Fatal:|signal \d+|core dumped",
                         dovecot.log_text()), dovecot.log_text()[-3000:]


# ------------------------------------------------------------ vsz_limit

@pytest.mark.skipif(bool(os.environ.get("DOVECOT_TEST_ASAN")),
                    reason="make test-asan lifts vsz_limit (ASan's shadow "
                    "memory needs the address space)")
def test_50mb_message_default_vsz_limit(dovecot):
    # the harness config must not raise vsz_limit
    with open(dovecot.config_path) as f:
        assert not re.search(r"^\s*(default_)?vsz_limit\s*=", f.read(),
                             re.M), "the harness config sets a vsz_limit"
    out = subprocess.run(["doveconf", "-c", dovecot.config_path,
                          "default_vsz_limit"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, check=True).stdout
    assert out.split("=", 1)[1].strip() == "256 M", out

    conn = dovecot.imap(timeout=120)
    conn.select("INBOX")
    pids = session_pids(dovecot, "imap")
    assert pids, "no imap process found"
    with open("/proc/%d/limits" % pids[0]) as f:
        limits = f.read()
    m = re.search(r"Max address space\s+(\d+)", limits)
    assert m and int(m.group(1)) == 256 * 1024 * 1024, limits

    msg = big_message("fifty", 50 * 1024 * 1024, "fifty")
    want = hashlib.sha256(crlf(msg)).hexdigest()
    t0 = time.monotonic()
    typ, data = conn.append("INBOX", None, None, msg)
    assert typ == "OK", (typ, data)
    uid = appenduid(data)
    t_append = time.monotonic() - t0
    conn.logout()

    conn = dovecot.imap(timeout=120)
    conn.select("INBOX")
    got = fetch_items(conn, str(uid), "(UID RFC822.SIZE)")
    size = int(re.search(rb"RFC822.SIZE (\d+)", got[uid][0]).group(1))
    assert size == len(crlf(msg))
    # whole BODY[] in one literal
    got = fetch_items(conn, str(uid), "(UID BODY.PEEK[])")
    assert hashlib.sha256(got[uid][1][0]).hexdigest() == want
    del got
    # and in 8 MB partial fetches
    h = hashlib.sha256()
    step = 8 * 1024 * 1024
    for off in range(0, size, step):
        part = fetch_items(conn, str(uid),
                           "(UID BODY.PEEK[]<%d.%d>)" % (off, step))
        h.update(part[uid][1][0])
    assert h.hexdigest() == want
    conn.logout()
    print("\n50 MB APPEND: %.1fs, total %.1fs" % (t_append,
                                                   time.monotonic() - t0))
    dovecot.check_log_clean()


# ------------------------------------------------------------ bad input

def corpus_files():
    files = []
    for path in sorted(glob.glob(os.path.join(CORPUS_DIR, "**", "*"),
                                 recursive=True)):
        if os.path.isfile(path) and path.rsplit(".", 1)[-1] in (
                "raw", "eml", "txt"):
            files.append(path)
    return files


def odd_inputs():
    hdr = (b"From: a@example.com\r\nTo: b@example.com\r\n"
           b"Subject: odd\r\nMessage-ID: <odd@example.com>\r\n")
    return [
        ("8bit-body", hdr + b"\r\n" + bytes(range(0x80, 0x100)) +
         b"\r\nmore \xe4\xf6\xfc \xff\xfe\r\n"),
        ("8bit-header", b"Subject: \xe4\xf6\xfc\xff\r\nFrom: \xc3\xa4 "
         b"<a@example.com>\r\n\r\nbody\r\n"),
        ("nul-body", hdr + b"\r\nbefore\x00after\r\n\x00\x00\x00\r\nend\r\n"),
        ("nul-header", b"Subject: a\x00b\r\n" + hdr + b"\r\nbody\r\n"),
        ("bare-lf", hdr.replace(b"\r\n", b"\n") + b"\nline 1\nline 2\n\n"),
        ("mixed-eol", hdr + b"\nline 1\nline 2\r\nline 3\rline 4\n"),
        ("bare-cr", hdr.replace(b"\r\n", b"\r") + b"\rline 1\rline 2\r"),
        ("no-eol-at-end", hdr + b"\r\nlast line without newline"),
        ("headers-only", hdr),
        ("no-header-sep", b"just some text\r\nwithout headers\r\n"),
        ("zero-bytes", b""),
        ("one-byte", b"x"),
    ]


FETCH_ITEMS = (b"(UID RFC822.SIZE FLAGS BODY.PEEK[] BODY.PEEK[HEADER] "
               b"BODY.PEEK[TEXT] BODYSTRUCTURE ENVELOPE)")


def _norm(line):
    line = re.sub(rb"\[APPENDUID \d+ ", b"[APPENDUID X ", line)
    line = re.sub(rb"\[UIDVALIDITY \d+\]", b"[UIDVALIDITY X]", line)
    line = re.sub(rb" \([0-9.]+ \+ [0-9.]+( \+ [0-9.]+)? secs\)", b"", line)
    return line


def test_bad_input_like_maildir(dovecot_factory):
    lmdb = dovecot_factory(mail_location="lmdb:~/lmdb")
    mdir = dovecot_factory(mail_location="maildir:~/Maildir",
                           mail_plugins=[])
    cases = odd_inputs()
    for path in corpus_files():
        with open(path, "rb") as f:
            cases.append((os.path.relpath(path, CORPUS_DIR), f.read()))
    # the shared corpus sits beside the checkout (as in CI); without it,
    # only the built-in odd inputs run
    if os.path.isdir(CORPUS_DIR):
        assert len(cases) > 100, "corpus in %s looks empty" % CORPUS_DIR

    clients = {"lmdb": RawImap(lmdb), "maildir": RawImap(mdir)}
    for c in clients.values():
        tagged, _ = c.command(b"SELECT INBOX")
        assert b" OK " in tagged
    stored = 0
    uids = {}
    for name, body in cases:
        answers = {}
        for kind, c in clients.items():
            tagged, untagged = c.command(b"APPEND INBOX", body)
            answers[kind] = _norm(tagged)
            assert tagged.split()[1] in (b"OK", b"NO"), (name, kind, tagged)
        assert answers["lmdb"] == answers["maildir"], (name, answers)
        if b" OK " not in answers["lmdb"]:
            continue
        stored += 1
        uid = re.search(rb"\[APPENDUID X (\d+)\]", answers["lmdb"]).group(1)
        uids[name] = uid
        fetched = {}
        for kind, c in clients.items():
            tagged, untagged = c.command(b"UID FETCH " + uid + b" " +
                                         FETCH_ITEMS)
            assert b" OK " in tagged, (name, kind, tagged)
            fetched[kind] = [u for u in untagged if b" FETCH " in u]
        assert fetched["lmdb"] == fetched["maildir"], name
    assert stored > 100
    # FETCH BODY[] shows NULs as 0x80; BINARY[] shows the stored bytes
    binary = {}
    for kind, c in clients.items():
        tagged, untagged = c.command(b"UID FETCH " + uids["nul-body"] +
                                     b" (BINARY.PEEK[1])")
        assert b" OK " in tagged, (kind, tagged)
        binary[kind] = untagged
    assert binary["lmdb"] == binary["maildir"]
    assert b"before\x00after" in binary["lmdb"][0]
    for c in clients.values():
        c.close()

    # again from fresh sessions: nothing cached in the process any more
    fetched = {}
    for kind, d in (("lmdb", lmdb), ("maildir", mdir)):
        c = RawImap(d)
        tagged, untagged = c.command(b"EXAMINE INBOX")
        assert b" OK " in tagged
        tagged, untagged = c.command(b"UID FETCH 1:* " + FETCH_ITEMS)
        assert b" OK " in tagged
        fetched[kind] = [u for u in untagged if b" FETCH " in u]
        c.close()
    assert len(fetched["lmdb"]) == stored
    for a, b in zip(fetched["lmdb"], fetched["maildir"]):
        assert a == b
    lmdb.check_log_clean()
    mdir.check_log_clean()
