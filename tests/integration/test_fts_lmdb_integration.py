"""fts_lmdb against a real Dovecot: indexing triggers, maintenance,
concurrency, crashes and limits.

Each test derives its expected UIDs from the messages it creates and, where
it matters, compares with a search that Dovecot answers by reading the
mail.  The index itself is inspected through liblmdb (FtsIndex), as
another process would see it.
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from dovecot_harness import make_message
from fts_lmdb_util import (FTS_PLUGINS, FtsIndex, fts_config, fts_index_path,
                           info_log_mark, lookup_stats, raw_imap, trigram)

pytestmark = pytest.mark.dovecot_config(
    "maildir:~/Maildir", mail_plugins=FTS_PLUGINS, extra_config=fts_config())


def msg(i, body, subject=None, headers=None):
    return make_message(subject or "message %d" % i, body, headers=headers)


def deliver(d, messages, box="INBOX"):
    conn = raw_imap(d)
    conn.append_many(box, messages)
    conn.logout()


def search(d, criteria, box="INBOX"):
    conn = raw_imap(d)
    conn.select(box)
    try:
        return conn.uid_search(criteria)
    finally:
        conn.logout()


def fts_lookup(d, *query, box="INBOX"):
    """doveadm fts lookup: (definite UIDs, maybe UIDs) straight from the
    backend, without Dovecot reading any mail."""
    res = d.doveadm("fts", "lookup", "-u", "testuser", "mailbox", box, *query)
    assert res.returncode == 0, res.stderr
    definite, maybe = set(), set()
    for line in res.stdout.splitlines():
        target = definite
        if line.startswith(" - maybe:"):
            target, line = maybe, line.split(":", 1)[1]
        elif ":" in line:
            line = line.split(":", 1)[1]
        for part in line.replace("no results", "").split(","):
            part = part.strip()
            if not part:
                continue
            lo, _, hi = part.partition(":")
            target.update(range(int(lo), int(hi or lo) + 1))
    return definite, maybe


def index(d, box="INBOX", timeout=300):
    res = d.doveadm("index", "-u", "testuser", box, timeout=timeout)
    assert res.returncode == 0, res.stderr


def box_record(d, root="Maildir"):
    idx = FtsIndex(fts_index_path(d, root=root))
    try:
        recs = list(idx.boxes().values())
    finally:
        idx.close()
    assert len(recs) == 1, recs
    return recs[0]


# ---- indexing triggers ----

def test_search_indexes_and_append_is_incremental(dovecot):
    deliver(dovecot, [msg(i, "alpha %d common\n" % i) for i in range(10)])
    mark = info_log_mark(dovecot)
    assert search(dovecot, [b"BODY", "common"]) == list(range(1, 11))
    # the SEARCH indexed everything, and the index answered it
    assert box_record(dovecot)[2] == 10
    stats = lookup_stats(dovecot, mark)
    assert stats and all(s[1] == s[2] and s[4] == 0 for s in stats), stats
    assert fts_lookup(dovecot, "body", "common") == (set(range(1, 11)), set())

    deliver(dovecot, [msg(i, "beta %d common\n" % i) for i in range(10, 15)])
    # not indexed yet: the backend knows only the first ten
    assert fts_lookup(dovecot, "body", "common")[0] == set(range(1, 11))
    assert search(dovecot, [b"BODY", "common"]) == list(range(1, 16))
    assert search(dovecot, [b"BODY", "beta 12"]) == [13]
    assert box_record(dovecot)[2] == 15
    assert fts_lookup(dovecot, "body", "common")[0] == set(range(1, 16))


@pytest.mark.dovecot_config(extra_config=fts_config("fts_autoindex = yes"))
def test_autoindex_through_indexer_worker(dovecot):
    for i in range(5):
        dovecot.lmtp_deliver("testuser", msg(i, "delivered %d zebra\n" % i))
    # no SEARCH: indexer-worker indexes on its own after each delivery
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if fts_lookup(dovecot, "body", "zebra")[0] == set(range(1, 6)):
            break
        time.sleep(0.2)
    assert fts_lookup(dovecot, "body", "zebra")[0] == set(range(1, 6))
    assert "indexer-worker" in dovecot.info_log_text()


# ---- semantics that need a real Dovecot ----

def test_non_ascii_encodings(dovecot_factory):
    """The same words in UTF-8, ISO-8859-1/2, RFC 2047, quoted-printable
    and base64 are found exactly where Dovecot's own search finds them
    (its normalizer decides about case and accents)."""
    import base64
    import quopri
    d = dovecot_factory()
    plain = dovecot_factory(mail_plugins=[], extra_config="")
    word, latin2 = "Café Zürich", "Łódź"
    bodies = [
        ("utf-8", "8bit", word.encode()),
        ("iso-8859-1", "quoted-printable",
         quopri.encodestring(word.encode("iso-8859-1"))),
        ("iso-8859-2", "base64", base64.encodebytes(latin2.encode("iso-8859-2"))),
        ("utf-8", "base64", base64.encodebytes(("x " + word).encode())),
        ("utf-8", "8bit", "Cafe\u0301 Zu\u0308rich".encode()),
    ]
    msgs = []
    for i, (cs, cte, data) in enumerate(bodies):
        head = ("From: a@b.c\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?= %d\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=%s\r\n"
                "Content-Transfer-Encoding: %s\r\n\r\n" % (i, cs, cte))
        msgs.append(head.encode() + data.replace(b"\n", b"\r\n"))
    for inst in (d, plain):
        deliver(inst, msgs)
    zurich = [1, 2, 4, 5]
    for key, want in (("café zürich", zurich), ("CAFÉ ZÜRICH", zurich),
                      ("zür", zurich), ("łódź", [3]), ("ŁÓDŹ", [3]),
                      ("cafe zurich", None), ("cafe", None), ("e z", None),
                      ("lodz", None)):
        got = search(d, [b"BODY", key])
        assert got == search(plain, [b"BODY", key]), key
        if want is not None:
            assert got == want, key
    assert search(d, [b"SUBJECT", "grüße"]) == [1, 2, 3, 4, 5]
    definite, maybe = fts_lookup(d, "body", "zürich")
    assert definite == set(zurich) and not maybe


def test_html_text_found_as_definite(dovecot_factory):
    """With fts_lmdb_parsed_text=yes (the default), BODY also matches what
    html2text makes of an HTML part, which Dovecot's own search doesn't
    see; the raw markup still matches too."""
    d = dovecot_factory()
    plain = dovecot_factory(mail_plugins=[], extra_config="")
    html = ("From: a@b.c\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            "<p>caf&#233; <b>au</b> lait</p>\r\n").encode()
    for inst in (d, plain):
        deliver(inst, [html, msg(2, "café au lait in plain text\n")])
    # html2text decodes the entity: only the FTS text has "café"
    assert search(plain, [b"BODY", "café"]) == [2]
    assert search(d, [b"BODY", "café"]) == [1, 2]
    assert fts_lookup(d, "body", "café") == ({1, 2}, set())
    for key in ("<b>au</b>", "&#233;"):
        assert search(d, [b"BODY", key]) == search(plain, [b"BODY", key]) \
            == [1]


def test_fts_decoder_attachment(dovecot_factory):
    """Attachment text from fts_decoder is found, as a definite result."""
    d0 = dovecot_factory(extra_config="")    # only to learn the paths
    script = os.path.join(d0.root, "decoder.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nif [ \"$1\" = \"\" ]; then\n"
                "  printf 'application/x-fts-test ftst\\n\\n'\n  exit 0\nfi\n"
                "exec cat\n")
    os.chmod(script, 0o755)
    d0.stop()
    config = fts_config("fts_decoder = fts-test-decoder") + """
service fts-test-decoder {
  executable = script %s
  user = %s
  unix_listener fts-test-decoder {
    mode = 0666
  }
}
""" % (script, d0.internal_user)
    d = dovecot_factory(extra_config=config)
    boundary = "zz1"
    attached = ("From: a@b.c\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/mixed; boundary=%s\r\n\r\n"
                "--%s\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
                "--%s\r\nContent-Type: application/x-fts-test\r\n"
                "Content-Disposition: attachment; filename=\"a.ftst\"\r\n\r\n"
                "quarterly kumquat figures\r\n--%s--\r\n" %
                ((boundary,) * 4)).encode()
    deliver(d, [attached, msg(2, "no attachment here\n")])
    assert search(d, [b"BODY", "kumquat"]) == [1]
    assert fts_lookup(d, "body", "kumquat") == ({1}, set())
    # Dovecot's own search skips application/* parts
    assert search(d, [b"NOT", b"BODY", "kumquat"]) == [2]


# ---- expunge and maintenance ----

def _plain_expunge(d, uids, box="INBOX"):
    """Expunge through an instance without fts, so the index misses it."""
    conn = raw_imap(d)
    conn.select(box)
    conn.command(b"UID STORE", ",".join(map(str, uids)).encode(),
                 b"+FLAGS.SILENT (\\Deleted)")
    conn.command(b"EXPUNGE")
    conn.logout()


def test_expunge_from_imap_and_doveadm(dovecot):
    deliver(dovecot, [msg(i, "gizmo %d\n" % i) for i in range(1, 9)])
    index(dovecot)
    _plain_expunge(dovecot, [2, 3])
    res = dovecot.doveadm("expunge", "-u", "testuser", "mailbox", "INBOX",
                          "uid", "5")
    assert res.returncode == 0, res.stderr
    want = [1, 4, 6, 7, 8]
    assert search(dovecot, [b"BODY", "gizmo"]) == want
    # the texts are gone at once, in the index itself
    assert fts_lookup(dovecot, "body", "gizmo") == (set(want), set())
    rec = box_record(dovecot)
    assert rec[3] == 3, rec      # three dead UIDs left for optimize
    idx = FtsIndex(fts_index_path(dovecot))
    assert idx.uids(rec[0]) == want
    idx.close()


def test_rescan_repairs_and_optimize_compacts(dovecot_factory):
    d = dovecot_factory()
    deliver(d, [msg(i, "widget %d QQX\n" % i) for i in range(1, 11)])
    index(d)
    rec = box_record(d)
    box_id = rec[0]
    d.stop()
    # 1. expunges the index never heard of: an fts-less Dovecot on the
    #    same mail
    plain = dovecot_factory(mail_plugins=[], extra_config="")
    os.rename(plain.homes_dir, plain.homes_dir + ".unused")
    os.symlink(d.homes_dir, plain.homes_dir)
    _plain_expunge(plain, [3, 4])
    plain.stop()
    # 2. a message whose text got lost
    idx = FtsIndex(fts_index_path(d), write=True)
    for db in ("fts_doc", "fts_uid"):
        idx.delete(db, box_id.to_bytes(4, "big") + (7).to_bytes(4, "big"))
    idx.close()
    d.start()
    live = [1, 2, 5, 6, 7, 8, 9, 10]
    # Still exact before any repair: UID 7 goes back to Dovecot ("maybe")
    assert search(d, [b"BODY", "widget"]) == live
    definite, maybe = fts_lookup(d, "body", "widget")
    assert definite == {1, 2, 3, 4, 5, 6, 8, 9, 10} and maybe == {7}

    res = d.doveadm("fts", "rescan", "-u", "testuser")
    assert res.returncode == 0, res.stderr
    rec = box_record(d)
    assert rec[2] == 6, rec          # re-index from UID 7 on
    idx = FtsIndex(fts_index_path(d))
    assert idx.uids(box_id) == [1, 2, 5, 6, 8, 9, 10]
    idx.close()
    index(d)
    assert fts_lookup(d, "body", "widget") == (set(live), set())
    assert search(d, [b"BODY", "widget"]) == live

    # optimize drops the expunged UIDs from the postings
    gram = trigram("QQX")
    idx = FtsIndex(fts_index_path(d))
    assert idx.postings(box_id, "B", gram) == list(range(1, 11))
    idx.close()
    data = os.path.join(fts_index_path(d), "data.mdb")
    size_before = os.path.getsize(data)
    res = d.doveadm("fts", "optimize", "-u", "testuser")
    assert res.returncode == 0, res.stderr
    # nothing else had the index open, so its free pages went back
    assert os.path.getsize(data) < size_before
    idx = FtsIndex(fts_index_path(d))
    assert idx.postings(box_id, "B", gram) == live
    assert idx.boxes()[list(idx.boxes())[0]][3] == 0
    idx.close()
    assert search(d, [b"BODY", "qqx"]) == live


def test_uidvalidity_change_reindexes(dovecot):
    deliver(dovecot, [msg(i, "sprocket %d\n" % i) for i in range(1, 6)])
    index(dovecot)
    old = box_record(dovecot)
    res = dovecot.doveadm("mailbox", "update", "-u", "testuser",
                          "--uid-validity", str(old[1] + 1000), "INBOX")
    assert res.returncode == 0, res.stderr
    # the old data can't answer for the new UIDVALIDITY ...
    assert fts_lookup(dovecot, "body", "sprocket") == (set(), set())
    # ... so the next search re-indexes
    assert search(dovecot, [b"BODY", "sprocket"]) == [1, 2, 3, 4, 5]
    new = box_record(dovecot)
    assert new[1] == old[1] + 1000 and new[0] != old[0] and new[2] == 5
    idx = FtsIndex(fts_index_path(dovecot))
    assert old[0] in idx.post_box_ids()
    idx.close()
    assert dovecot.doveadm("fts", "optimize", "-u",
                           "testuser").returncode == 0
    idx = FtsIndex(fts_index_path(dovecot))
    assert idx.post_box_ids() == [new[0]]
    idx.close()


# ---- several processes, crashes ----

@pytest.mark.dovecot_config(extra_config=fts_config("fts_autoindex = yes\n"
                                                   "  fts_lmdb_batch_size = 7"))
def test_concurrent_lmtp_and_search(dovecot):
    """lmtp delivers (and indexer-worker indexes) while imap searches.  All
    messages contain "common", so every search must return exactly the
    UIDs 1..n of its mailbox view: no holes, nothing missing."""
    total = 150
    errors = []
    searched = threading.Condition()
    state = {"rounds": 0}

    def deliver_all():
        # interleave on purpose: after each batch of deliveries, wait until
        # the searcher has run a full round, so searches overlap the
        # deliveries however loaded the machine is
        try:
            for i in range(total):
                if i % 10 == 0:
                    with searched:
                        seen = state["rounds"]
                        searched.wait_for(
                            lambda: state["rounds"] > seen, timeout=30)
                dovecot.lmtp_deliver("testuser",
                                     msg(i, "common token%04d\n" % i))
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(e)

    conn = raw_imap(dovecot)
    conn.select("INBOX")
    t = threading.Thread(target=deliver_all)
    t.start()
    rounds = during = 0
    try:
        while t.is_alive() or rounds < 3:
            delivering = t.is_alive()
            got = conn.uid_search([b"BODY", "common"])
            assert got == list(range(1, len(got) + 1)), got
            assert conn.uid_search([b"NOT", b"BODY", "common"]) == []
            if got:
                last = len(got) - 1
                assert conn.uid_search([b"BODY", "token%04d" % last]) == \
                    [last + 1]
            conn.command(b"NOOP")
            rounds += 1
            during += delivering and t.is_alive()
            with searched:
                state["rounds"] = rounds
                searched.notify_all()
    finally:
        t.join()
        conn.logout()
    assert not errors, errors
    # searches ran while lmtp (and indexer-worker) were writing
    assert during >= 1, "no search overlapped the deliveries"
    assert search(dovecot, [b"BODY", "common"]) == list(range(1, total + 1))


def _write_maildir(d, count, text):
    """count messages straight into Maildir/cur (fast), owned by the mail
    user; Dovecot finds them at the next sync."""
    cur = os.path.join(d.home("testuser"), "Maildir", "cur")
    for sub in ("cur", "new", "tmp"):
        path = os.path.join(d.home("testuser"), "Maildir", sub)
        os.makedirs(path, exist_ok=True)
        os.chown(path, d.mail_uid, d.mail_gid)
        os.chown(os.path.dirname(path), d.mail_uid, d.mail_gid)
    for i in range(count):
        name = os.path.join(cur, "%d.M%dP1.test:2," % (1000000 + i, i))
        with open(name, "wb") as f:
            f.write(msg(i, text(i)))
        os.chown(name, d.mail_uid, d.mail_gid)


@pytest.mark.dovecot_config(extra_config=fts_config("fts_lmdb_batch_size = 50"))
def test_killed_indexer_leaves_index_behind(dovecot):
    total = 3000
    _write_maildir(dovecot, total, lambda i: "common filler %d %s\n" %
                   (i, "lorem ipsum dolor sit amet " * 40))
    assert dovecot.doveadm("mailbox", "status", "-u", "testuser",
                           "messages", "INBOX").returncode == 0
    proc = subprocess.Popen(["/usr/bin/doveadm", "-c", dovecot.config_path,
                             "index", "-u", "testuser", "INBOX"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    path = fts_index_path(dovecot)
    last = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if os.path.exists(os.path.join(path, "data.mdb")):
            idx = FtsIndex(path)
            recs = list(idx.boxes().values())
            idx.close()
            last = recs[0][2] if recs else 0
            if last >= 200:
                break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < last < total, "indexer was not caught mid-way (%d)" % last
    rec = box_record(dovecot)
    # behind, never wrong: exactly the UIDs up to the last indexed one
    definite, maybe = fts_lookup(dovecot, "body", "common")
    assert definite == set(range(1, rec[2] + 1)) and not maybe
    assert rec[2] < total
    assert search(dovecot, [b"BODY", "filler 2999"]) == [3000]
    assert search(dovecot, [b"BODY", "common"]) == list(range(1, total + 1))
    assert box_record(dovecot)[2] == total


# ---- limits ----

def _doveadm_peak_rss_mb(d, *args):
    """Run doveadm; returns its peak RSS in MB, sampled from VmHWM of
    /proc/PID/status.  (getrusage()/wait4() would report the forking
    Python process's own size, which the child inherits until exec.)"""
    proc = subprocess.Popen(["/usr/bin/doveadm", "-c", d.config_path] +
                            list(args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peak_kb = 0
    while proc.poll() is None:
        try:
            with open("/proc/%d/status" % proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    assert proc.returncode == 0
    assert peak_kb > 0, "doveadm exited before it could be measured"
    return peak_kb / 1024


@pytest.mark.dovecot_config(extra_config=fts_config(
    "fts_lmdb_max_text = 1M") + "\nimap_max_line_length = 128k\n")
@pytest.mark.skipif(bool(os.environ.get("DOVECOT_TEST_ASAN")),
                    reason="measures memory: not under make test-asan")
def test_big_header_and_50mb_message(dovecot):
    """A 40 KB header and a 50 MB message index with bounded memory; the
    big message is answered as "maybe" beyond fts_lmdb_max_text, so Dovecot
    confirms it by reading it, and the result stays exact."""
    long_header = " ".join("w%05d" % i for i in range(6500))[:40000]
    big_body = ("".join("line %07d of a very large message\n" % i
                        for i in range(1400000)) + "needle at the end\n")
    assert len(big_body) > 50 * 1000 * 1000
    deliver(dovecot, [msg(1, "small\n", headers={"X-Long": long_header}),
                      msg(2, big_body), msg(3, "no needle\n")])
    peak = _doveadm_peak_rss_mb(dovecot, "index", "-u", "testuser", "INBOX")
    print("\ndoveadm index of a 50 MB message: peak RSS %d MB" % peak)
    # the message's text is cut at fts_lmdb_max_text (1M here), and the
    # message itself is streamed, never held in memory
    assert box_record(dovecot)[2] == 3
    assert peak < 64, "doveadm index peaked at %d MB" % peak
    assert search(dovecot, [b"HEADER", "X-Long", "w06499"]) == []
    assert search(dovecot, [b"HEADER", "X-Long", "w05000 w05001"]) == [1]
    # the big message's headers fit: header searches stay exact for it
    assert fts_lookup(dovecot, "header", "X-Long", "w05000") == ({1}, set())
    definite, maybe = fts_lookup(dovecot, "body", "needle at the end")
    assert 2 in maybe and 2 not in definite
    assert search(dovecot, [b"BODY", "needle at the end"]) == [2]
    assert search(dovecot, [b"BODY", "line 0000007 of"]) == [2]


# ---- memory errors ----

VALGRIND_SUPP = os.path.join(os.path.dirname(__file__),
                             "valgrind-fts-lmdb.supp")


@pytest.mark.skipif(not os.path.exists("/usr/bin/valgrind"),
                    reason="valgrind is not installed")
@pytest.mark.skipif(bool(os.environ.get("DOVECOT_TEST_ASAN")),
                    reason="not under make test-asan")
@pytest.mark.dovecot_config(extra_config=fts_config("fts_lmdb_batch_size = 10"))
def test_fts_paths_under_valgrind(dovecot):
    """doveadm index, search, fts lookup, expunge, rescan and optimize
    under valgrind memcheck: no invalid access and no definite leak.
    (doveadm re-executes itself through doveconf: --trace-children.)"""
    from fts_lmdb_corpus import generate_corpus
    corpus, _ = generate_corpus(5, 60)
    deliver(dovecot, [m for _, m in corpus])
    vg = ["valgrind", "-q", "--trace-children=yes", "--error-exitcode=99",
          "--leak-check=full", "--errors-for-leak-kinds=definite",
          "--num-callers=30", "--suppressions=" + VALGRIND_SUPP,
          "/usr/bin/doveadm", "-c", dovecot.config_path]
    for args in (["index", "-u", "testuser", "INBOX"],
                 ["search", "-u", "testuser", "mailbox", "INBOX", "(", "from",
                  "kim", "or", "subject", "a", ")", "not", "text", "zz"],
                 ["fts", "lookup", "-u", "testuser", "mailbox", "INBOX",
                  "text", "e"],
                 ["expunge", "-u", "testuser", "mailbox", "INBOX", "uid",
                  "1:10"],
                 ["fts", "rescan", "-u", "testuser"],
                 ["fts", "optimize", "-u", "testuser"]):
        res = subprocess.run(vg + args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=600)
        errors = "\n".join(line for line in res.stderr.splitlines()
                           if "could not unlink" not in line)
        assert res.returncode == 0, "doveadm %s (%d):\n%s" % (
            " ".join(args), res.returncode, errors[-8000:])
