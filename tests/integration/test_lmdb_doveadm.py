"""doveadm lmdb stats / check / compact / backup against a real Dovecot.

The doveadm plugin (build/lib20_doveadm_lmdb_plugin.so) is made visible to
doveadm with doveadm_plugins.py: a private mount namespace where a
temporary folder is bind-mounted over /usr/lib/dovecot/modules/doveadm.
The system is never modified.

Damage for `check` is planted with a minimal ctypes binding of liblmdb
(class Lmdb below), while no Dovecot process has the environment open.
"""

import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import smtplib
import subprocess
import threading
import time

import pytest

from dovecot_harness import make_message
from doveadm_plugins import doveadm_plugins_runner

FORMATS = ("table", "json", "tab", "flow")
EX_DATAERR = 65
EX_TEMPFAIL = 75


# ----------------------------------------------------------------- helpers

def env_dir(d, user="testuser"):
    return os.path.join(d.home(user), "lmdb", "mail.lmdb")


def parse_output(fmt, text):
    """doveadm output in fmt -> list of {field: str value}.  A table is
    for humans (padded columns, empty values invisible): its rows come
    back as {"_tokens": [words], "_line": text} under the header."""
    if fmt == "table":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        head = lines[0].split()
        return [{"_header": head, "_tokens": ln.split(), "_line": ln}
                for ln in lines[1:]]
    if fmt == "json":
        return [{k: str(v) for k, v in row.items()}
                for row in json.loads(text)]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if fmt == "tab":
        head = lines[0].split("\t")
        return [dict(zip(head, ln.split("\t"))) for ln in lines[1:]]
    if fmt == "flow":
        rows = []
        for ln in lines:
            keys = re.findall(r"(?:^| )([a-z_]+)=", ln)
            parts = re.split(r"(?:^| )(?:%s)=" % "|".join(keys), ln)[1:]
            rows.append(dict(zip(keys, (p.strip() for p in parts))))
        return rows
    raise ValueError(fmt)


def lmdb_rows(run, fmt, *args, expect_rc=0):
    res = run("-f", fmt, "lmdb", *args)
    assert res.returncode == expect_rc, (res.returncode, res.stdout,
                                         res.stderr)
    return parse_output(fmt, res.stdout)


def deliver(d, n, user="testuser", prefix="m", size=0):
    for i in range(n):
        body = "message %s %d\n" % (prefix, i) + "x" * size + "\n"
        d.lmtp_deliver(user, make_message("%s%d" % (prefix, i), body))


def fetch_state(d, user="testuser"):
    """Everything a restore or compaction must keep, as doveadm text."""
    fields = ("mailbox mailbox-guid uid guid flags date.received "
              "date.saved size.physical size.virtual pop3.uidl text")
    res = d.doveadm("-f", "json", "fetch", "-u", user, fields, "all")
    assert res.returncode == 0, res.stderr
    mails = json.loads(res.stdout)
    for m in mails:      # \Recent belongs to a session, not to the mail
        m["flags"] = " ".join(f for f in m["flags"].split()
                              if f != "\\Recent")
    mails.sort(key=lambda m: (m["mailbox"], int(m["uid"])))
    status = d.doveadm("-f", "flow", "mailbox", "status", "-u", user,
                       "messages uidnext uidvalidity guid", "*")
    assert status.returncode == 0, status.stderr
    subs = d.doveadm("mailbox", "list", "-s", "-u", user)
    return mails, sorted(status.stdout.splitlines()), \
        sorted(subs.stdout.splitlines())


def chown_tree(d, path):
    if not d.is_root:
        return
    for base, dirs, files in os.walk(path):
        os.chown(base, d.mail_uid, d.mail_gid)
        for name in files:
            os.lchown(os.path.join(base, name), d.mail_uid, d.mail_gid)


class Lmdb:
    """Just enough liblmdb (ctypes) to plant damage in an environment."""

    class Val(ctypes.Structure):
        _fields_ = [("mv_size", ctypes.c_size_t),
                    ("mv_data", ctypes.c_void_p)]

    MDB_FIRST, MDB_NEXT = 0, 8

    def __init__(self, path):
        lib = self.lib = ctypes.CDLL("liblmdb.so.0")
        vp, P = ctypes.c_void_p, ctypes.POINTER
        lib.mdb_env_create.argtypes = [P(vp)]
        lib.mdb_env_set_maxdbs.argtypes = [vp, ctypes.c_uint]
        lib.mdb_env_open.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint,
                                     ctypes.c_int]
        lib.mdb_env_close.argtypes = [vp]
        lib.mdb_txn_begin.argtypes = [vp, vp, ctypes.c_uint, P(vp)]
        lib.mdb_txn_commit.argtypes = [vp]
        lib.mdb_dbi_open.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint,
                                     P(ctypes.c_uint)]
        lib.mdb_put.argtypes = [vp, ctypes.c_uint, P(self.Val), P(self.Val),
                                ctypes.c_uint]
        lib.mdb_del.argtypes = [vp, ctypes.c_uint, P(self.Val), vp]
        lib.mdb_cursor_open.argtypes = [vp, ctypes.c_uint, P(vp)]
        lib.mdb_cursor_get.argtypes = [vp, P(self.Val), P(self.Val),
                                       ctypes.c_int]
        lib.mdb_cursor_close.argtypes = [vp]
        lib.mdb_strerror.restype = ctypes.c_char_p
        self.env = vp()
        self._ok(lib.mdb_env_create(ctypes.byref(self.env)))
        lib.mdb_env_set_maxdbs(self.env, 16)
        self._ok(lib.mdb_env_open(self.env, path.encode(), 0, 0o600))
        self.txn = vp()
        self._ok(lib.mdb_txn_begin(self.env, None, 0, ctypes.byref(self.txn)))
        self.dbis = {}

    def _ok(self, rc):
        if rc != 0:
            raise OSError(rc, self.lib.mdb_strerror(rc).decode())

    def _dbi(self, name):
        if name not in self.dbis:
            dbi = ctypes.c_uint()
            self._ok(self.lib.mdb_dbi_open(self.txn, name.encode(), 0,
                                           ctypes.byref(dbi)))
            self.dbis[name] = dbi.value
        return self.dbis[name]

    def _val(self, data):
        buf = ctypes.create_string_buffer(data, len(data))
        return self.Val(len(data), ctypes.cast(buf, ctypes.c_void_p)), buf

    def items(self, db):
        cur = ctypes.c_void_p()
        self._ok(self.lib.mdb_cursor_open(self.txn, self._dbi(db),
                                          ctypes.byref(cur)))
        out, op = [], self.MDB_FIRST
        k, v = self.Val(), self.Val()
        while self.lib.mdb_cursor_get(cur, ctypes.byref(k), ctypes.byref(v),
                                      op) == 0:
            op = self.MDB_NEXT
            out.append((ctypes.string_at(k.mv_data, k.mv_size),
                        ctypes.string_at(v.mv_data, v.mv_size)))
        self.lib.mdb_cursor_close(cur)
        return out

    def put(self, db, key, value):
        (k, kb), (v, vb) = self._val(key), self._val(value)
        self._ok(self.lib.mdb_put(self.txn, self._dbi(db), ctypes.byref(k),
                                  ctypes.byref(v), 0))

    def delete(self, db, key):
        k, kb = self._val(key)
        self._ok(self.lib.mdb_del(self.txn, self._dbi(db), ctypes.byref(k),
                                  None))

    def commit(self):
        self._ok(self.lib.mdb_txn_commit(self.txn))
        self.lib.mdb_env_close(self.env)


def msg_key(guid, uid):
    return guid + uid.to_bytes(4, "big")


def body_rec(refcount, size, chunk_size=65536, chunks=1):
    return (refcount.to_bytes(8, "big") + size.to_bytes(8, "big") +
            chunk_size.to_bytes(4, "big") + chunks.to_bytes(4, "big"))


# ----------------------------------------------------------------- stats

@pytest.fixture(scope="module")
def populated(dovecot_module):
    """testuser: 6 messages in INBOX, 3 of them copied to Sub (shared
    bodies); user2: 2 messages; user3: nothing."""
    d = dovecot_module
    deliver(d, 6)
    deliver(d, 2, user="user2")
    imap = d.imap()
    imap.create("Sub")
    imap.select("INBOX")
    imap.copy("1:3", "Sub")
    imap.logout()
    return d


def check_table_matches(run, table_rows, *args):
    """The table shows the same rows as -f json (empty values vanish in
    a table's whitespace)."""
    json_rows = lmdb_rows(run, "json", *args)
    assert len(table_rows) == len(json_rows)
    assert table_rows[0]["_header"] == list(json_rows[0].keys())
    for t, j in zip(table_rows, json_rows):
        assert " ".join(t["_tokens"]) == \
            " ".join(" ".join(v.split()) for v in j.values() if v != "")
    return json_rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_stats_every_format(populated, fmt):
    run = doveadm_plugins_runner(populated)
    rows = lmdb_rows(run, fmt, "stats", "-u", "testuser")
    if fmt == "table":
        rows = check_table_matches(run, rows, "stats", "-u", "testuser")
    user = [r for r in rows if r["type"] == "user"]
    boxes = {r["mailbox"]: r for r in rows if r["type"] == "mailbox"}
    assert len(user) == 1 and set(boxes) == {"INBOX", "Sub"}, rows
    u = user[0]
    assert int(u["messages"]) == 9
    assert int(u["bodies"]) == 6             # the copies share bodies
    assert int(u["dedup_saved"]) > 0
    assert int(u["bytes_referenced"]) == \
        int(u["bytes_stored"]) + int(u["dedup_saved"])
    assert int(u["schema_version"]) == 1
    assert int(u["file_size"]) >= int(u["used_bytes"]) > 0
    assert int(u["map_size"]) >= int(u["file_size"])
    assert int(boxes["INBOX"]["messages"]) == 6
    assert int(boxes["Sub"]["messages"]) == 3
    assert int(boxes["Sub"]["bodies"]) == 3
    assert re.fullmatch(r"[0-9a-f]{32}", boxes["INBOX"]["guid"])


def test_stats_all_users_and_user_file(populated):
    run = doveadm_plugins_runner(populated)
    rows = lmdb_rows(run, "json", "stats", "-A")
    users = {r["username"]: r for r in rows if r["type"] == "user"}
    assert set(users) == {"testuser", "user2", "user3"}
    assert int(users["user2"]["messages"]) == 2
    assert int(users["user3"]["messages"]) == 0

    path = os.path.join(populated.root, "users.txt")
    with open(path, "w") as f:
        f.write("user2\nuser3\n")
    rows = lmdb_rows(run, "tab", "stats", "-F", path)
    # tab shows the username column's title, "Username"
    assert {r["Username"] for r in rows} == {"user2", "user3"}


def test_stats_unknown_command_without_lmdb_plugin(populated):
    """Without lmdb in mail_plugins doveadm says which plugin to load."""
    run = doveadm_plugins_runner(populated)
    res = run("-o", "mail_plugins=", "lmdb", "stats", "-u", "testuser")
    assert res.returncode != 0
    assert "Try to set mail_plugins=lmdb" in res.stderr, res.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_clean_every_format(populated, fmt):
    run = doveadm_plugins_runner(populated)
    rows = lmdb_rows(run, fmt, "check", "-u", "testuser")
    if fmt == "table":
        rows = check_table_matches(run, rows, "check", "-u", "testuser")
    assert [r["problem"] for r in rows] == ["summary"], rows
    assert rows[0]["repaired"] == "yes"
    assert "9 messages, 6 bodies, 2 mailboxes; 0 problems" in \
        rows[0]["detail"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_compact_every_format(populated, fmt):
    run = doveadm_plugins_runner(populated)
    before = fetch_state(populated, "user2")
    rows = lmdb_rows(run, fmt, "compact", "-u", "user2")
    size = os.path.getsize(os.path.join(env_dir(populated, "user2"),
                                        "data.mdb"))
    if fmt == "table":
        assert len(rows) == 1 and rows[0]["_header"] == [
            "environment", "result", "size_before", "size_after",
            "duration_msecs"]
        assert rows[0]["_tokens"][1:2] == ["compacted"]
        assert int(rows[0]["_tokens"][3]) == size
    else:
        assert len(rows) == 1 and rows[0]["result"] == "compacted", rows
        assert int(rows[0]["size_after"]) == size
    assert fetch_state(populated, "user2") == before


# ----------------------------------------------------------------- check

def plant_damage(d):
    """Damage testuser's environment in every repairable and two
    unrepairable ways; returns what was planted."""
    lm = Lmdb(env_dir(d))
    boxes = {}
    inbox_guid = None
    for k, v in lm.items("msg"):
        boxes.setdefault(k[:16], []).append((int.from_bytes(k[16:], "big"),
                                             v))
    bodies = dict(lm.items("body"))
    # INBOX has 4 messages, Sub 1
    for guid, recs in boxes.items():
        if len(recs) == 4:
            inbox_guid = guid
    inbox = dict(boxes[inbox_guid])
    hash_of = {uid: rec[48:80] for uid, rec in inbox.items()}

    # refcount: body of uid 2 claims 6 references
    h2 = hash_of[2]
    lm.put("body", h2, body_rec(6, int.from_bytes(bodies[h2][8:16], "big")))
    # hash mismatch: flip a byte of uid 2's content
    chunk = dict(lm.items("chunk"))[h2 + b"\0\0\0\0"]
    lm.put("chunk", h2 + b"\0\0\0\0", bytes([chunk[0] ^ 1]) + chunk[1:])
    # orphan chunk
    lm.put("chunk", os.urandom(32) + b"\0\0\0\0", b"stray chunk")
    # orphan body (consistent, just unreferenced)
    content = b"Subject: orphan\r\n\r\nnobody references me\r\n"
    oh = hashlib.sha256(content).digest()
    lm.put("body", oh, body_rec(1, len(content)))
    lm.put("chunk", oh + b"\0\0\0\0", content)
    # lost: the index keeps uid 3, LMDB loses it (its body becomes orphan)
    lm.delete("msg", msg_key(inbox_guid, 3))
    # pending: a record far above the index's next UID (shares uid 4's
    # body, whose refcount is now one short)
    lm.put("msg", msg_key(inbox_guid, 50), inbox[4])
    # orphan records: a record of a mailbox GUID the user doesn't have
    stray_guid = os.urandom(16)
    lm.put("msg", msg_key(stray_guid, 1), inbox[1])
    lm.commit()
    return {"stray_guid": stray_guid.hex(), "hash2": h2.hex(),
            "hash1": hash_of[1].hex()}


def problems(rows):
    return sorted((r["problem"], r["object"]) for r in rows
                  if r["problem"] != "summary")


def msg_count(d):
    lm = Lmdb(env_dir(d))
    n = len(lm.items("msg"))
    lm.commit()
    return n


@pytest.mark.dovecot_log_allow(r"lmdb")
def test_check_reports_and_repairs(dovecot):
    d = dovecot
    run = doveadm_plugins_runner(d)
    deliver(d, 4)
    imap = d.imap()
    imap.create("Sub")
    imap.select("INBOX")
    imap.copy("1", "Sub")
    imap.logout()
    planted = plant_damage(d)

    rows = lmdb_rows(run, "json", "check", "-u", "testuser",
                     expect_rc=EX_DATAERR)
    found = problems(rows)
    kinds = sorted({p for p, o in found})
    assert kinds == ["hash_mismatch", "lost", "orphan_body", "orphan_chunk",
                     "orphan_records", "pending", "refcount"], found
    assert ("lost", "uid 3") in found and ("pending", "uid 50") in found
    assert ("hash_mismatch", planted["hash2"]) in found
    assert ("orphan_records", planted["stray_guid"]) in found
    assert len([1 for p, o in found if p == "orphan_body"]) == 2
    assert all(r["repaired"] == "no" for r in rows)

    n_before = msg_count(d)
    rows = lmdb_rows(run, "tab", "check", "-u", "testuser", "--repair",
                     expect_rc=EX_DATAERR)
    unrepaired = sorted(r["problem"] for r in rows
                        if r["repaired"] != "yes")
    assert unrepaired == ["hash_mismatch", "orphan_records", "summary"], rows
    assert msg_count(d) == n_before      # never deletes a message record

    rows = lmdb_rows(run, "flow", "check", "-u", "testuser",
                     expect_rc=EX_DATAERR)
    assert sorted(p for p, o in problems(rows)) == \
        ["hash_mismatch", "orphan_records"], rows

    # the index now matches LMDB: uid 3 gone, uid 50 recovered
    imap = d.imap()
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", "ALL")
    assert data[0].split() == [b"1", b"2", b"4", b"50"]
    imap.logout()

    # orphan records come back as the check's detail says
    res = d.doveadm("mailbox", "create", "-u", "testuser", "-g",
                    planted["stray_guid"], "Recovered")
    assert res.returncode == 0, res.stderr
    res = d.doveadm("force-resync", "-u", "testuser", "Recovered")
    assert res.returncode == 0, res.stderr
    res = d.doveadm("-f", "flow", "fetch", "-u", "testuser", "uid",
                    "mailbox", "Recovered")
    assert res.stdout.split() == ["uid=1"], res.stdout
    rows = lmdb_rows(run, "json", "check", "-u", "testuser",
                     expect_rc=EX_DATAERR)
    assert [p for p, o in problems(rows)] == ["hash_mismatch"], rows


# ----------------------------------------------------------------- compact

def test_compact_shrinks_keeps_mail_and_respects_users(dovecot):
    d = dovecot
    run = doveadm_plugins_runner(d)
    deliver(d, 24, size=20000)
    imap = d.imap()
    imap.select("INBOX")
    imap.store("1:20", "+FLAGS", "\\Deleted")
    imap.expunge()
    imap.logout()
    rows = lmdb_rows(run, "json", "stats", "-u", "testuser")
    assert int(rows[0]["free_bytes"]) > 200000, rows
    before = fetch_state(d)

    # a user with an open session: not compacted, exit code "try later"
    imap = d.imap()
    imap.select("INBOX")
    data_mdb = os.path.join(env_dir(d), "data.mdb")
    ino = os.stat(data_mdb).st_ino
    res = run("lmdb", "compact", "-u", "testuser", "-w", "1")
    assert res.returncode == EX_TEMPFAIL, (res.stdout, res.stderr)
    assert "busy" in res.stdout and "is active" in res.stderr
    assert os.stat(data_mdb).st_ino == ino
    imap.logout()
    time.sleep(0.3)

    rows = lmdb_rows(run, "tab", "compact", "-u", "testuser")
    assert rows[0]["result"] == "compacted"
    assert int(rows[0]["size_after"]) < int(rows[0]["size_before"]) - 200000
    assert os.stat(data_mdb).st_ino != ino
    assert fetch_state(d) == before
    rows = lmdb_rows(run, "json", "check", "-u", "testuser")
    assert problems(rows) == []
    # and the compacted file keeps working for writes
    deliver(d, 1, prefix="after")
    assert len(fetch_state(d)[0]) == len(before[0]) + 1 == 5


def test_opener_waits_for_compaction(dovecot):
    """A session that opens the environment while compact.lock is held
    exclusively waits, then works (compact holds it while it copies)."""
    d = dovecot
    deliver(d, 2)
    lock_path = os.path.join(env_dir(d), "compact.lock")
    fd = os.open(lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    result = {}

    def session():
        imap = d.imap()
        result["select"] = imap.select("INBOX")
        imap.logout()
        result["done"] = time.monotonic()

    t = threading.Thread(target=session)
    t.start()
    time.sleep(1.0)
    released = time.monotonic()
    assert "done" not in result          # it waits for the lock
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(30)
    assert result["done"] >= released
    assert result["select"][0] == "OK" and result["select"][1] == [b"2"]


# ----------------------------------------------------------------- backup

def populate_for_backup(d):
    deliver(d, 5)
    imap = d.imap()
    imap.create("Archive/2024")
    imap.create("Sent")
    imap.subscribe("Archive/2024")
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Seen \\Flagged $Label1)")
    imap.store("2", "+FLAGS", "(\\Answered custom)")
    imap.copy("1:2", "Archive/2024")
    imap.uid("MOVE", "3", "Sent")
    imap.store("4", "+FLAGS", "\\Deleted")
    imap.expunge()
    imap.logout()


def test_backup_hot_and_restore(dovecot):
    d = dovecot
    run = doveadm_plugins_runner(d)
    populate_for_backup(d)
    state = fetch_state(d)
    backups = os.path.join(d.root, "backups")
    os.makedirs(backups)
    chown_tree(d, backups)
    dest = os.path.join(backups, "testuser-1")

    # hot: the user has a session with INBOX selected during the backup
    imap = d.imap()
    imap.select("INBOX")
    rows = lmdb_rows(run, "json", "backup", "-u", "testuser", dest)
    imap.noop()
    assert len(rows) == 1 and int(rows[0]["messages"]) == 6, rows
    assert rows[0]["dest"] == dest
    names = [n for _, _, files in os.walk(dest) for n in files]
    assert "data.mdb" in names and "lmdb-mailbox-guid" in names
    assert not [n for n in names if n.startswith("dovecot.index")]
    # later changes are not in the backup
    imap.store("1", "+FLAGS", "\\Draft")
    imap.logout()
    deliver(d, 1, prefix="later")
    assert fetch_state(d) != state

    # a second backup into a non-empty DEST is refused
    res = run("lmdb", "backup", "-u", "testuser", dest)
    assert res.returncode != 0 and "not empty" in res.stderr

    # restore into a fresh mail root, exactly as README says
    root = os.path.join(d.home("testuser"), "lmdb")
    shutil.rmtree(root)
    shutil.copytree(dest, root, symlinks=True)
    chown_tree(d, root)
    res = d.doveadm("force-resync", "-u", "testuser", "*")
    assert res.returncode == 0, res.stderr
    assert fetch_state(d) == state
    rows = lmdb_rows(run, "tab", "check", "-u", "testuser")
    assert problems(rows) == []


@pytest.mark.parametrize("fmt", ("table", "tab", "flow"))
def test_backup_formats(populated, fmt):
    run = doveadm_plugins_runner(populated)
    dest = os.path.join(populated.root, "bk-%s" % fmt)
    os.makedirs(dest)
    chown_tree(populated, dest)
    rows = lmdb_rows(run, fmt, "backup", "-u", "user2", dest)
    if fmt == "table":
        assert rows[0]["_header"] == ["source", "dest", "messages",
                                      "lmdb_bytes", "files", "duration_msecs"]
        rows = [dict(zip(rows[0]["_header"], rows[0]["_tokens"]))]
    assert int(rows[0]["messages"]) == 2 and int(rows[0]["lmdb_bytes"]) > 0


# ----------------------------------------------------------------- events

METRICS = "".join("""
metric %s {
  filter = event=%s
}
""" % (n, n) for n in ("lmdb_save_batch", "lmdb_env_open",
                        "lmdb_index_rebuild", "lmdb_sync_write",
                        "lmdb_check", "lmdb_compact"))


def test_events_reach_metrics_and_debug_log(dovecot_factory):
    d = dovecot_factory(stats=True,
                        extra_config=METRICS + "mail_debug = yes\n")
    deliver(d, 2)
    imap = d.imap()
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "\\Seen")
    imap.logout()
    res = d.doveadm("force-resync", "-u", "testuser", "INBOX")
    assert res.returncode == 0, res.stderr
    run = doveadm_plugins_runner(d)
    for cmd in ("check", "compact"):
        res = run("lmdb", cmd, "-u", "testuser")
        assert res.returncode == 0 and res.stderr == "", res.stderr
    counts = {}
    for _ in range(50):
        res = d.doveadm("-f", "tab", "stats", "dump")
        assert res.returncode == 0, res.stderr
        rows = parse_output("tab", res.stdout)
        counts = {r["metric_name"]: int(r["count"]) for r in rows}
        if all(counts.get(n, 0) > 0 for n in ("lmdb_save_batch",
                                               "lmdb_index_rebuild",
                                               "lmdb_sync_write",
                                               "lmdb_check",
                                               "lmdb_compact")):
            break
        time.sleep(0.1)
    assert counts.get("lmdb_save_batch") == 2, counts
    assert counts.get("lmdb_env_open", 0) >= 2, counts
    assert counts.get("lmdb_index_rebuild", 0) >= 1, counts
    assert counts.get("lmdb_sync_write", 0) >= 1, counts
    assert counts.get("lmdb_check") == 1, counts
    assert counts.get("lmdb_compact") == 1, counts
    info = d.info_log_text()
    assert re.search(r"lmtp\(testuser\).*Debug: .*lmdb: Committed 1 "
                     r"messages", info), info[-3000:]


@pytest.mark.dovecot_config(extra_config="plugin {\n  lmdb_lock_timeout = 1s\n}\n")
def test_compaction_past_lock_timeout_is_temporary(dovecot):
    """A compaction that outlasts lmdb_lock_timeout makes sessions fail
    temporarily: IMAP NO [INUSE], LMTP 451 (the MTA retries)."""
    d = dovecot
    deliver(d, 1)
    fd = os.open(os.path.join(env_dir(d), "compact.lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        imap = d.imap()
        typ, data = imap.select("INBOX")
        assert typ == "NO" and b"[INUSE]" in data[0], data
        imap.logout()
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            deliver(d, 1, prefix="while-compacting")
        assert list(e.value.recipients.values())[0][0] == 451
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    deliver(d, 1, prefix="after")
    imap = d.imap()
    assert imap.select("INBOX")[1] == [b"2"]
    imap.logout()
    assert "is being compacted" in d.log_text()


# ----------------------------------------------------------------- valgrind

VALGRIND = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=no",
            "--track-origins=yes", "--num-callers=30"]


@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed")
@pytest.mark.skipif(bool(os.environ.get("DOVECOT_TEST_ASAN")),
                    reason="not under make test-asan (ASan doveadm)")
@pytest.mark.dovecot_log_allow(r"lmdb")
def test_doveadm_lmdb_under_valgrind(dovecot):
    """Every command, including check --repair on a damaged environment,
    under valgrind memcheck."""
    d = dovecot
    run = doveadm_plugins_runner(d, wrapper=VALGRIND)
    deliver(d, 4)
    imap = d.imap()
    imap.create("Sub")
    imap.select("INBOX")
    imap.copy("1", "Sub")
    imap.logout()
    plant_damage(d)
    dest = os.path.join(d.root, "vg-backup")
    os.makedirs(dest)
    chown_tree(d, dest)
    for args, rc in ((("-f", "json", "lmdb", "stats", "-A"), 0),
                     (("lmdb", "check", "-u", "testuser"), EX_DATAERR),
                     (("lmdb", "check", "-u", "testuser", "--repair"),
                      EX_DATAERR),
                     (("lmdb", "compact", "-u", "testuser"), 0),
                     (("lmdb", "backup", "-u", "testuser", dest), 0)):
        res = run(*args, timeout=300)
        assert res.returncode != 99, "valgrind: %s\n%s" % (args, res.stderr)
        assert res.returncode == rc, (args, res.returncode, res.stderr)
