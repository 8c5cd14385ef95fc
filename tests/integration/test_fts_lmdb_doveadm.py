"""doveadm fts-lmdb stats / check against a real Dovecot with fts_lmdb.

The doveadm plugin (build/lib21_doveadm_fts_lmdb_plugin.so) is made visible
to doveadm with doveadm_plugins.py (a private mount namespace); the system
is never modified.  Damage for `check` is planted with liblmdb through
ctypes while no Dovecot process has the index open.
"""

import ctypes
import struct

import pytest

from dovecot_harness import make_message
from doveadm_plugins import doveadm_plugins_runner
from fts_lmdb_util import FTS_PLUGINS, FtsIndex, fts_config, fts_index_path
from fts_lmdb_util import _MdbVal
from test_lmdb_doveadm import EX_DATAERR, FORMATS, parse_output

pytestmark = pytest.mark.dovecot_config(
    "maildir:~/Maildir", mail_plugins=FTS_PLUGINS, extra_config=fts_config())

PLUGIN = "lib21_doveadm_fts_lmdb_plugin.so"


def runner(d):
    return doveadm_plugins_runner(d, required=(PLUGIN,))


def deliver(d, n, box="INBOX", user="testuser"):
    for i in range(n):
        d.lmtp_deliver(user, make_message("subject %d" % i,
                                          "body text number %d\n" % i))


def index(d, box="INBOX"):
    res = d.doveadm("index", "-u", "testuser", box)
    assert res.returncode == 0, res.stderr


def rows(run, fmt, cmd, *args, expect_rc=0):
    res = run("-f", fmt, "fts-lmdb", cmd, *args)
    assert res.returncode == expect_rc, (res.returncode, res.stdout,
                                         res.stderr)
    return parse_output(fmt, res.stdout)


def stats_rows(run, *args):
    """stats as json: list of dicts with ints for the number fields."""
    out = []
    for r in rows(run, "json", "stats", *args):
        out.append({k: (int(v) if k not in ("type", "namespace", "mailbox",
                                            "guid") else v)
                    for k, v in r.items()})
    return out


def box_row(stats, vname):
    found = [r for r in stats if r["type"] == "mailbox"
             and r["mailbox"] == vname]
    assert len(found) == 1, stats
    return found[0]


@pytest.fixture
def indexed(dovecot):
    deliver(dovecot, 5)
    index(dovecot)
    return dovecot


@pytest.mark.parametrize("fmt", FORMATS)
def test_stats_every_format(indexed, fmt):
    run = runner(indexed)
    got = rows(run, fmt, "stats", "-u", "testuser")
    if fmt == "table":
        head = got[0]["_header"]
        assert head[:4] == ["type", "namespace", "mailbox", "guid"] or \
            "documents" in head
        lines = [r["_line"] for r in got]
        inbox = [ln for ln in lines if " INBOX " in ln]
        assert len(inbox) == 1, lines
        toks = inbox[0].split()
        # type mailbox guid box_id uidvalidity documents dead last_uid ...
        assert toks[0] == "mailbox"
        assert toks[-7 + 2:-7 + 5] == ["5", "0", "5"], toks
        return
    by_type = {}
    for r in got:
        by_type.setdefault(r["type"], []).append(r)
    assert len(by_type["namespace"]) == 1
    assert int(by_type["namespace"][0]["documents"]) == 5
    assert int(by_type["namespace"][0]["index_size"]) > 0
    assert int(by_type["namespace"][0]["schema_version"]) == 1
    inbox = [r for r in by_type["mailbox"] if r["mailbox"] == "INBOX"]
    assert len(inbox) == 1, got
    assert int(inbox[0]["documents"]) == 5
    assert int(inbox[0]["last_uid"]) == 5
    assert int(inbox[0]["dead_uids"]) == 0
    assert len(inbox[0]["guid"]) == 32


def test_stats_follows_indexing_and_expunge(indexed):
    d, run = indexed, runner(indexed)
    deliver(d, 3)
    assert box_row(stats_rows(run, "-u", "testuser"),
                   "INBOX")["last_uid"] == 5
    index(d)
    row = box_row(stats_rows(run, "-u", "testuser"), "INBOX")
    assert (row["documents"], row["last_uid"]) == (8, 8)

    res = d.doveadm("expunge", "-u", "testuser", "mailbox", "INBOX",
                    "uid", "2:4")
    assert res.returncode == 0, res.stderr
    row = box_row(stats_rows(run, "-u", "testuser"), "INBOX")
    assert (row["documents"], row["dead_uids"], row["last_uid"]) == (5, 3, 8)
    assert rows(run, "json", "check", "-u", "testuser") == []

    assert d.doveadm("fts", "optimize", "-u", "testuser").returncode == 0
    row = box_row(stats_rows(run, "-u", "testuser"), "INBOX")
    assert (row["documents"], row["dead_uids"]) == (5, 0)


def test_stats_mailbox_argument_and_all_users(indexed):
    d, run = indexed, runner(indexed)
    assert d.doveadm("mailbox", "create", "-u", "testuser",
                     "Other").returncode == 0
    got = stats_rows(run, "-u", "testuser", "INBOX")
    assert [r["mailbox"] for r in got] == ["INBOX"]
    assert rows(run, "json", "stats", "-u", "testuser", "Other") == []
    res = run("-f", "tab", "fts-lmdb", "stats", "-A")
    assert res.returncode == 0, res.stderr
    assert "INBOX" in res.stdout


def test_stats_never_indexed_creates_nothing(dovecot):
    run = runner(dovecot)
    deliver(dovecot, 1)
    got = stats_rows(run, "-u", "testuser")
    assert [(r["type"], r["documents"]) for r in got] == [("namespace", 0)]
    import os
    assert not os.path.exists(fts_index_path(dovecot))
    assert rows(run, "json", "check", "-u", "testuser") == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_clean_every_format(indexed, fmt):
    res = runner(indexed)("-f", fmt, "fts-lmdb", "check", "-u", "testuser")
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "last_uid" not in res.stdout
    assert "Error" not in res.stderr


def put(path, dbname, key, value):
    """Write one key with liblmdb, as a damaged index would have it."""
    idx = FtsIndex(path, write=True)
    try:
        lib = idx.lib
        txn = idx._txn(write=True)
        dbi = idx._dbi(txn, dbname)
        k = _MdbVal(len(key), ctypes.cast(ctypes.c_char_p(key),
                                          ctypes.c_void_p))
        v = _MdbVal(len(value), ctypes.cast(ctypes.c_char_p(value),
                                            ctypes.c_void_p))
        rc = lib.mdb_put(txn, dbi, ctypes.byref(k), ctypes.byref(v), 0)
        if rc != 0:
            lib.mdb_txn_abort(txn)
            idx._check(rc)
        idx._check(lib.mdb_txn_commit(txn))
    finally:
        idx.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_reports_damage(indexed, fmt):
    d, run = indexed, runner(indexed)
    path = fts_index_path(d)
    idx = FtsIndex(path)
    try:
        (guid, rec), = idx.boxes().items()
    finally:
        idx.close()
    box_id, uidvalidity, last_uid, dead = rec
    assert last_uid == 5
    # last UID far beyond UIDNEXT, and a text of an unknown box id
    put(path, "fts_box", guid,
        struct.pack(">B3xIIII", 1, box_id, uidvalidity, 100, dead))
    put(path, "fts_uid", struct.pack(">II", box_id + 77, 1), b"\0")

    got = rows(run, fmt, "check", "-u", "testuser", expect_rc=EX_DATAERR)
    if fmt == "table":
        text = "\n".join(r["_line"] for r in got)
        assert "last_uid_beyond_uidnext" in text
        assert "unknown_box_id" in text
        return
    probs = {r["problem"]: r for r in got}
    assert set(probs) == {"last_uid_beyond_uidnext", "unknown_box_id"}, got
    assert probs["last_uid_beyond_uidnext"]["mailbox"] == "INBOX"
    assert "last UID 100" in probs["last_uid_beyond_uidnext"]["detail"]
    assert "box id %d" % (box_id + 77) in probs["unknown_box_id"]["detail"]
    # stats shows the damaged record as it is
    assert box_row(stats_rows(run, "-u", "testuser"),
                   "INBOX")["last_uid"] == 100


def test_check_reports_text_of_expunged_message(indexed):
    d, run = indexed, runner(indexed)
    path = fts_index_path(d)
    idx = FtsIndex(path)
    try:
        (guid, rec), = idx.boxes().items()
    finally:
        idx.close()
    box_id = rec[0]
    res = d.doveadm("expunge", "-u", "testuser", "mailbox", "INBOX", "uid", "3")
    assert res.returncode == 0, res.stderr
    # a UID row that the expunge should have deleted
    put(path, "fts_uid", struct.pack(">II", box_id, 3), b"\0")
    got = rows(run, "json", "check", "-u", "testuser", "INBOX",
               expect_rc=EX_DATAERR)
    assert [r["problem"] for r in got] == ["expunged_uid"], got
    assert "UID 3" in got[0]["detail"]
