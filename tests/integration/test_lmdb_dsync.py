"""The lmdb format loses nothing: index rebuild, dsync migration and sync,
and replication between two servers.

Equality is checked with `doveadm fetch` of every field that matters
(uid, guid, flags and keywords, received and saved dates, physical and
virtual size, POP3 UIDL and order, mailbox GUID and the full text), plus
`doveadm mailbox status` (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ)."""

import json
import os
import re
import time

import pytest

from dovecot_harness import make_message, free_port, resolve_mail_user

USER = "testuser"
FIELDS = ("mailbox uid guid flags date.received date.saved size.physical "
          "size.virtual pop3.uidl pop3.order mailbox-guid text")
STATUS = "messages uidvalidity uidnext highestmodseq guid"


def fetch(d, location=None, fields=FIELDS, user=USER):
    """All messages of all mailboxes as sorted JSON-ish tuples."""
    args = ["-f", "json"]
    if location:
        args += ["-o", "mail_location=%s" % location]
    res = d.doveadm(*(args + ["fetch", "-u", user, fields,
                              "mailbox", "*", "all"]))
    assert res.returncode == 0, res.stderr
    recs = json.loads(res.stdout)
    return sorted(tuple(sorted(r.items())) for r in recs)


def assert_same_mail(got, want, flags_as_set=False, ignore=()):
    """Compare two fetch() results, reporting differing fields compactly.
    flags_as_set: dsync registers keywords in its own order, so the order
    of keywords in a FLAGS list can differ after a migration (sdbox and
    mdbox destinations show exactly the same); the set must not."""
    def index(recs):
        return {(dict(r)["mailbox"], dict(r)["uid"]): dict(r) for r in recs}
    g, w = index(got), index(want)
    if flags_as_set:
        for recs in (g, w):
            for r in recs.values():
                r["flags"] = " ".join(sorted(r["flags"].split()))
    problems = []
    for k in sorted(set(g) | set(w)):
        if k not in g or k not in w:
            problems.append("%s only in %s" % (k, "want" if k in w else "got"))
            continue
        for field in sorted(set(g[k]) | set(w[k])):
            if field in ignore:
                continue
            if g[k].get(field) != w[k].get(field):
                problems.append("%s %s: got %r want %r" % (
                    k, field, g[k].get(field, "")[:80],
                    w[k].get(field, "")[:80]))
    assert not problems, "\n".join(problems[:30])


def status(d, location=None, user=USER):
    args = []
    if location:
        args += ["-o", "mail_location=%s" % location]
    res = d.doveadm(*(args + ["mailbox", "status", "-u", user, STATUS, "*"]))
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines():
        name, rest = line.split(" ", 1)
        out[name] = dict(kv.split("=", 1) for kv in rest.split())
    return out


def modseqs(d, location=None, user=USER):
    out = {}
    for r in fetch(d, location, "mailbox uid modseq", user):
        f = dict(r)
        out[(f["mailbox"], f["uid"])] = int(f["modseq"])
    return out


def populate(conn, n=6, big=False):
    """Several mailboxes, nested ones, flags, keywords, internal dates,
    expunges and flag changes (so modseqs differ)."""
    for box in ("Work", "Work/Projects", "Work/Projects/2026", "Archive",
                "Caf&AOk-"):  # modified UTF-7 for "Cafe" with an accent
        assert conn.create(box)[0] == "OK"
    boxes = ["INBOX", "Work", "Work/Projects", "Work/Projects/2026",
             "Archive"]
    k = 0
    for box in boxes:
        for i in range(n):
            k += 1
            flags = [r"(\Seen)", r"(\Flagged $Important)", None,
                     r"(\Answered \Draft Custom_kw)", r"($Label1 $Label2)",
                     r"(\Seen \Deleted)"][i % 6]
            date = '"%02d-Mar-2021 1%d:0%d:00 +0%d00"' % (
                i + 1, i % 10, i % 10, i % 5)
            body = "message %d in %s\n" % (k, box) + \
                ("x" * 70 + "\n") * (k * 7 if big else 3)
            typ, _ = conn.append(box, flags, date,
                                 make_message("m%d %s" % (k, box), body))
            assert typ == "OK"
    # flag changes and expunges make the modseqs and UIDs interesting
    conn.select("INBOX")
    conn.store("1:3", "+FLAGS", r"(\Answered)")
    conn.store("2", "-FLAGS", r"($Important)")
    conn.select("Work")
    conn.store("1", "+FLAGS", r"(\Deleted)")
    conn.expunge()
    conn.store("2:*", "+FLAGS", r"(NewKeyword)")
    conn.select("Archive")
    conn.uid("STORE", "%d" % n, "+FLAGS", r"(\Deleted)")
    conn.expunge()
    conn.close()


def add_pop3_uidls_maildir(d, user=USER):
    """Give every INBOX message of a maildir user a POP3 UIDL and order,
    the way a migrated POP3 server's dovecot-uidlist carries them."""
    path = os.path.join(d.home(user), "Maildir", "dovecot-uidlist")
    lines = open(path).read().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        uid, rest = line.split(" ", 1)
        out.append("%s P%s O%s %s" % (uid, "UIDL-%s-old" % uid,
                                      int(uid) + 100, rest))
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def remove_index_files(home, also_list_index=False):
    n = 0
    for dirpath, _, files in os.walk(home):
        for f in files:
            if f.startswith("dovecot.index") or \
               (also_list_index and f.startswith("dovecot.list.index")):
                os.unlink(os.path.join(dirpath, f))
                n += 1
    return n


@pytest.mark.parametrize("also_list_index", [False, True])
def test_force_resync_rebuilds_index_from_lmdb(dovecot_factory,
                                               also_list_index):
    d = dovecot_factory(mail_location="maildir:~/Maildir")
    conn = d.imap()
    populate(conn)
    conn.logout()
    add_pop3_uidls_maildir(d)
    # move everything into lmdb with dsync, so lmdb holds POP3 UIDLs too
    res = d.doveadm("backup", "-u", USER, "lmdb:~/lmdb")
    assert res.returncode == 0, res.stderr
    loc = "lmdb:~/lmdb"
    # more activity directly on lmdb: flags, keywords, modseqs
    res = d.doveadm("-o", "mail_location=" + loc, "flags", "add", "-u", USER,
                    "$AfterMigration", "mailbox", "Work", "uid", "2:3")
    assert res.returncode == 0, res.stderr
    before = fetch(d, loc)
    st_before = status(d, loc)
    ms_before = modseqs(d, loc)
    assert any(dict(r)["pop3.uidl"].startswith("UIDL-") for r in before)
    assert any("$AfterMigration" in dict(r)["flags"] for r in before)

    lmdb_home = os.path.join(d.home(USER), "lmdb")
    assert remove_index_files(lmdb_home, also_list_index) > 5
    res = d.doveadm("-o", "mail_location=" + loc, "force-resync", "-u",
                    USER, "*")
    assert res.returncode == 0, res.stderr

    assert_same_mail(fetch(d, loc), before)
    st_after = status(d, loc)
    assert set(st_after) == set(st_before)
    for box, st in st_before.items():
        for key in ("messages", "uidvalidity", "uidnext", "guid"):
            assert st_after[box][key] == st[key], (box, key)
        assert int(st_after[box]["highestmodseq"]) >= \
            int(st["highestmodseq"]), box
    ms_after = modseqs(d, loc)
    assert set(ms_after) == set(ms_before)
    for k, v in ms_before.items():
        assert ms_after[k] >= v, k


@pytest.mark.dovecot_log_allow(r"Rebuilding index", r"Index is missing")
def test_lost_index_heals_itself_over_imap(dovecot):
    """No force-resync: opening a mailbox whose index files are gone
    rebuilds it from LMDB by itself, as sdbox does."""
    conn = dovecot.imap()
    populate(conn, n=3)
    conn.select("Work/Projects")
    typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    conn.logout()
    st_before = status(dovecot)
    remove_index_files(os.path.join(dovecot.home(USER), "lmdb"))
    conn = dovecot.imap()
    typ2, data2 = conn.select("Work/Projects")
    assert typ2 == "OK"
    assert conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")[1] == data
    conn.logout()
    st_after = status(dovecot)
    for box in st_before:
        assert st_after[box]["uidvalidity"] == st_before[box]["uidvalidity"]
        assert st_after[box]["uidnext"] == st_before[box]["uidnext"]


def _backup_roundtrip(d, src_loc, dst_loc, with_uidls):
    """doveadm backup src -> dst, then the fetch diff.  maildir, sdbox and
    mdbox can't be given a save date (Dovecot stamps the time of the copy,
    whatever dsync passes), so date.saved is compared only when the
    destination is lmdb, which keeps it."""
    before = fetch(d, src_loc)
    if with_uidls:
        assert any(dict(r)["pop3.uidl"].startswith("UIDL-") for r in before)
    res = d.doveadm("-o", "mail_location=" + src_loc, "backup", "-u", USER,
                    dst_loc)
    assert res.returncode == 0, res.stderr
    after = fetch(d, dst_loc)
    ignore = () if dst_loc.startswith("lmdb:") else ("date.saved",)
    assert_same_mail(after, before, flags_as_set=True, ignore=ignore)
    st_src, st_dst = status(d, src_loc), status(d, dst_loc)
    assert set(st_src) == set(st_dst)
    for box in st_src:
        for key in ("messages", "uidvalidity", "uidnext", "guid"):
            assert st_src[box][key] == st_dst[box][key], (box, key)
    return after


def test_dsync_backup_all_directions(dovecot_factory):
    """maildir -> lmdb, lmdb -> maildir, sdbox -> lmdb, lmdb -> lmdb, each
    lossless by the doveadm fetch diff."""
    d = dovecot_factory(mail_location="maildir:~/Maildir")
    conn = d.imap()
    populate(conn, big=True)
    conn.logout()
    add_pop3_uidls_maildir(d)
    maildir = "maildir:~/Maildir"
    orig = _backup_roundtrip(d, maildir, "lmdb:~/lmdb", True)
    # lmdb -> maildir (a fresh one)
    _backup_roundtrip(d, "lmdb:~/lmdb", "maildir:~/Maildir2", True)
    # sdbox -> lmdb: make an sdbox copy first, then migrate that
    _backup_roundtrip(d, maildir, "sdbox:~/sdbox", True)
    assert_same_mail(_backup_roundtrip(d, "sdbox:~/sdbox", "lmdb:~/lmdb2",
                                       True),
                     orig, flags_as_set=True, ignore=("date.saved",))
    # lmdb -> lmdb keeps everything, save dates included
    assert_same_mail(_backup_roundtrip(d, "lmdb:~/lmdb", "lmdb:~/lmdb3",
                                       True), orig)
    # mdbox -> lmdb too, for admins coming from mdbox
    _backup_roundtrip(d, maildir, "mdbox:~/mdbox", True)
    assert_same_mail(_backup_roundtrip(d, "mdbox:~/mdbox", "lmdb:~/lmdb4",
                                       True),
                     orig, flags_as_set=True, ignore=("date.saved",))


def test_dsync_incremental_backup_and_two_way_sync(dovecot_factory):
    d = dovecot_factory(mail_location="lmdb:~/lmdb")
    conn = d.imap()
    populate(conn, n=4)
    conn.logout()
    a, b = "lmdb:~/lmdb", "lmdb:~/replica"
    assert d.doveadm("backup", "-u", USER, b).returncode == 0
    assert_same_mail(fetch(d, b), fetch(d, a), flags_as_set=True)

    # changes on A only, then an incremental backup
    conn = d.imap()
    conn.append("INBOX", r"(\Seen)", None, make_message("new on A", "a\n"))
    conn.select("Work/Projects")
    conn.store("1", "+FLAGS", r"(\Flagged KwA)")
    conn.store("2", "+FLAGS", r"(\Deleted)")
    conn.expunge()
    conn.logout()
    assert d.doveadm("mailbox", "rename", "-u", USER,
                     "Archive", "Archive2021").returncode == 0
    res = d.doveadm("backup", "-u", USER, b)
    assert res.returncode == 0, res.stderr
    assert_same_mail(fetch(d, b), fetch(d, a), flags_as_set=True)

    # changes on both sides, then a two-way sync
    conn = d.imap()
    conn.append("Work", None, None, make_message("new on A again", "a2\n"))
    conn.logout()
    res = d.doveadm("-o", "mail_location=" + b, "save", "-u", USER, "-m",
                    "INBOX", input=make_message("new on B", "b\n").decode())
    assert res.returncode == 0, res.stderr
    res = d.doveadm("-o", "mail_location=" + b, "flags", "add", "-u", USER,
                    "KwB", "mailbox", "INBOX", "uid", "1")
    assert res.returncode == 0, res.stderr
    res = d.doveadm("sync", "-u", USER, b)
    assert res.returncode == 0, res.stderr
    fa, fb = fetch(d, a), fetch(d, b)
    assert_same_mail(fb, fa, flags_as_set=True)
    joined = repr(fa)
    assert "new on B" in joined and "new on A again" in joined
    assert "KwB" in joined and "KwA" in joined


# ------------------------------------------------------------ replication

def _replication_config(mail_user, my_port, peer_port):
    return """
mail_plugins = $mail_plugins notify replication
service replicator {{
  process_min_avail = 1
  unix_listener replicator-doveadm {{
    user = {u}
    mode = 0600
  }}
}}
service aggregator {{
  fifo_listener replication-notify-fifo {{
    user = {u}
    mode = 0600
  }}
  unix_listener replication-notify {{
    user = {u}
    mode = 0600
  }}
}}
service doveadm {{
  inet_listener {{
    address = 127.0.0.1
    port = {me}
  }}
}}
doveadm_port = {peer}
doveadm_password = replication-secret
replication_full_sync_interval = 1h
replication_dsync_parameters = -d -N -l 10 -U
plugin {{
  mail_replica = tcp:127.0.0.1:{peer}
}}
""".format(u=mail_user, me=my_port, peer=peer_port)


def _wait_for(pred, timeout=75, step=0.5):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = pred()
        if last:
            return last
        time.sleep(step)
    return last


def _imap_view(d):
    conn = d.imap()
    out = {}
    typ, boxes = conn.list()
    for line in boxes:
        name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
        if conn.select('"%s"' % name, readonly=True)[0] != "OK":
            continue
        typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        msgs = []
        for item in data:
            if isinstance(item, tuple):
                meta = item[0].decode()
                uid = re.search(r"UID (\d+)", meta).group(1)
                flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1)
                msgs.append((int(uid), " ".join(sorted(flags.split())),
                             item[1]))
        out[name] = sorted(msgs)
    conn.logout()
    return out


@pytest.mark.dovecot_log_allow(
    # the replicator may try the peer before its doveadm listener is up
    r"replicator: Error: .*(Connection refused|Disconnected)",
    r"doveadm\(.*: (Error|Fatal): .*Connection refused",
    # Both servers replicate to each other; when their dsyncs of one user
    # cross, one waits for the other's mailbox sync lock and gives up
    # after the lock timeout, then the replicator retries.  Dovecot's own
    # sdbox shows exactly the same with this setup.
    r"doveadm\(.*: Error: Failed to lock mailbox .* for dsyncing",
    r"doveadm\(.*: Error: .*Remote command returned error",
    r"replicator: Error: .*")
@pytest.mark.parametrize("location", ["lmdb:~/lmdb"])
def test_replication_between_two_servers(dovecot_factory, location):
    pa, pb = free_port(), free_port()
    while pb == pa:
        pb = free_port()
    mail_user = resolve_mail_user()[0]
    a = dovecot_factory(mail_location=location,
                        extra_config=_replication_config(mail_user, pa, pb))
    b = dovecot_factory(mail_location=location,
                        extra_config=_replication_config(mail_user, pb, pa))

    # APPEND on A shows on B
    conn = a.imap()
    assert conn.append("INBOX", r"(\Seen)", None,
                       make_message("replicate me", "one\n"))[0] == "OK"
    assert conn.create("Projects")[0] == "OK"
    assert conn.append("Projects", None, None,
                       make_message("in projects", "two\n"))[0] == "OK"
    conn.logout()
    assert _wait_for(lambda: _imap_view(b) == _imap_view(a)), \
        "APPEND/CREATE did not replicate"

    # STORE on B shows on A
    conn = b.imap()
    conn.select("INBOX")
    assert conn.store("1", "+FLAGS", r"(\Flagged ReplKw)")[0] == "OK"
    conn.logout()
    assert _wait_for(lambda: _imap_view(a) == _imap_view(b) and
                     "ReplKw" in str(_imap_view(a)["INBOX"])), \
        "STORE did not replicate"

    # EXPUNGE on A shows on B
    conn = a.imap()
    conn.select("Projects")
    conn.store("1", "+FLAGS", r"(\Deleted)")
    conn.expunge()
    conn.logout()
    assert _wait_for(lambda: _imap_view(b).get("Projects") == []), \
        "EXPUNGE did not replicate"

    # RENAME on B shows on A
    conn = b.imap()
    assert conn.rename("Projects", "Projects2026")[0] == "OK"
    conn.logout()
    assert _wait_for(lambda: "Projects2026" in _imap_view(a) and
                     "Projects" not in _imap_view(a)), \
        "RENAME did not replicate"
    assert _imap_view(a) == _imap_view(b)
