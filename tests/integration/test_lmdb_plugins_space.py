"""Space management of the lmdb format, and the Dovecot plugins that admins
combine with a mailbox format (issue 3, "The lmdb format loses nothing").

Space
  * `doveadm purge` (the storage purge vfunc) removes bodies with no
    reference left (planted with lmdb-utils' mdb_load) and keeps the rest;
  * churn: appending and expunging the same 5 MB ten times leaves data.mdb
    at a plateau (freed pages are reused);
  * at lmdb_max_size APPEND gets NO [OVERQUOTA] and LMTP 552 5.2.2 (a
    quota); on a full disk (an 8 MB tmpfs, skipped when mount is not
    permitted) NO [UNAVAILABLE] and LMTP 451 (temporary: the MTA retries);
    either way earlier mail stays byte-exact and saving works again once
    space is freed.

Plugins
  * quota (count backend): STORAGE/MESSAGE values from doveadm and from
    GETQUOTAROOT across APPEND, COPY, MOVE and EXPUNGE; APPEND over quota
    gets NO [OVERQUOTA], LMTP 552 5.2.2 (452 4.2.2 with
    quota_full_tempfail = yes);
  * zlib and mail_crypt (global EC keys), alone and together: BODY[],
    RFC822.SIZE, size.physical and size.virtual equal a plain maildir's, and
    the bytes in data.mdb are really compressed / encrypted;
  * lazy_expunge, into a mailbox of the same LMDB (the body is shared) and
    into a namespace with its own LMDB (the body is copied);
  * a virtual mailbox as a COPY source: the copy is byte-exact and shares
    the body of its backend message.

Needs lmdb-utils (mdb_stat, mdb_load) and openssl; skips cleanly without.
"""

import base64
import hashlib
import os
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from dovecot_harness import make_message

# what the plugin logs (e_error) when a save hits lmdb_max_size
MAP_FULL_LOG = (r"lmdb: \w[\w ]*: LMDB map of \S+ is full at its limit of "
                r"\d+ bytes \(plugin setting lmdb_max_size\)")
# ... and what Dovecot and the plugin log when the disk is full
DISK_FULL_LOG = r"No space left on device|ENOSPC|Not enough disk space"


# ----------------------------------------------------------------- helpers

def env_dir(d, user="testuser", root="lmdb"):
    return os.path.join(d.home(user), root, "mail.lmdb")


def data_mdb(d, user="testuser", root="lmdb"):
    return os.path.join(env_dir(d, user, root), "data.mdb")


def need_tool(name):
    if shutil.which(name) is None:
        pytest.skip("%s not installed (apt-get install lmdb-utils)" % name)


def mdb_entries(d, user="testuser", root="lmdb"):
    """{database name: entry count} from `mdb_stat -a`."""
    need_tool("mdb_stat")
    res = subprocess.run(["mdb_stat", "-a", env_dir(d, user, root)],
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


def mdb_map_size(d, user="testuser"):
    res = subprocess.run(["mdb_stat", "-e", env_dir(d, user)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    m = re.search(r"Map size: (\d+)", res.stdout)
    assert m, res.stdout
    return int(m.group(1))


def mdb_dump_values(d, db, user="testuser"):
    """[(key bytes, value bytes)] of one named database (mdb_dump)."""
    need_tool("mdb_dump")
    res = subprocess.run(["mdb_dump", "-s", db, env_dir(d, user)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    body = res.stdout.split("HEADER=END\n", 1)[1].split("DATA=END", 1)[0]
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    return [(bytes.fromhex(k), bytes.fromhex(v))
            for k, v in zip(lines[::2], lines[1::2])]


def as_mail_user(d):
    """subprocess kwargs that run a tool as the mail uid (when root)."""
    if d.is_root:
        return {"user": d.mail_uid, "group": d.mail_gid}
    return {}


def mdb_load(d, db, pairs, user="testuser"):
    """Add raw (key, value) pairs to a named database with mdb_load."""
    need_tool("mdb_load")
    text = "VERSION=3\nformat=bytevalue\ntype=btree\nmapsize=%d\n" \
           "HEADER=END\n" % mdb_map_size(d, user)
    for k, v in pairs:
        text += " %s\n %s\n" % (k.hex(), v.hex())
    text += "DATA=END\n"
    res = subprocess.run(["mdb_load", "-N", "-s", db, env_dir(d, user)],
                         input=text, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=60,
                         **as_mail_user(d))
    assert res.returncode == 0, res.stderr


def unique_blob(size, seed):
    """About size bytes of CRLF-terminated base64 lines, unique per seed."""
    raw = hashlib.sha256(seed.encode()).digest() + os.urandom(size * 3 // 4)
    text = base64.b64encode(raw)[:max(size - 2, 1)]
    return b"".join(text[i:i + 76] + b"\r\n" for i in range(0, len(text), 76))


def big_message(subject, size, seed):
    return make_message(subject, "", headers={"X-Test-Id": seed}) + \
        unique_blob(size, seed)


def appenduid(data):
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert m, "no APPENDUID in %r" % (data,)
    return int(m.group(2))


def append(conn, box, msg, flags=None):
    typ, data = conn.append(box, flags, None, msg)
    assert typ == "OK", (typ, data)
    return appenduid(data)


def fetch(conn, uidset, items):
    """{uid: (meta bytes, [literals])} of a UID FETCH through imaplib."""
    typ, data = conn.uid("FETCH", uidset, items)
    assert typ == "OK", (typ, data)
    res, cur = {}, None
    for part in data:
        if part is None:
            continue
        head = part[0] if isinstance(part, tuple) else part
        if re.match(rb"\d+ \(", head):
            cur = [b"", []]
            m = re.search(rb"\bUID (\d+)", head)
            if m:
                res[int(m.group(1))] = cur
        if cur is None:
            continue
        cur[0] += head
        if isinstance(part, tuple):
            cur[1].append(part[1])
    return {u: (m, lits) for u, (m, lits) in res.items()}


def bodies(conn, box):
    """{uid: BODY[]} of a mailbox (selected read-only)."""
    typ, data = conn.select(box, readonly=True)
    assert typ == "OK", data
    if data == [b"0"]:
        return {}
    return {u: lits[0] for u, (m, lits) in
            fetch(conn, "1:*", "(BODY.PEEK[])").items()}


def expunge_uids(conn, box, uids):
    assert conn.select(box)[0] == "OK"
    typ, data = conn.uid("STORE", ",".join(map(str, uids)), "+FLAGS.SILENT",
                         r"(\Deleted)")
    assert typ == "OK", data
    typ, data = conn.uid("EXPUNGE", ",".join(map(str, uids)))
    assert typ == "OK", data


def smtp_failure(exc):
    """(code, reply) of a failed lmtp_deliver()."""
    err = exc.value
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        (code, reply), = err.recipients.values()
    elif isinstance(err, smtplib.SMTPServerDisconnected):
        # an lmtp process of the old config shutting down after a reload
        code, reply = 421, str(err).encode()
    else:
        code, reply = err.smtp_code, err.smtp_error
    return code, reply


def doveadm_ok(d, *args):
    res = d.doveadm(*args)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout


def doveadm_fetch(d, fields, box, user="testuser"):
    """[{field: value}] of `doveadm -f tab fetch`, sorted by uid."""
    out = doveadm_ok(d, "-f", "tab", "fetch", "-u", user, fields,
                     "mailbox", box, "all")
    lines = out.splitlines()
    if not lines:
        return []
    names = lines[0].split("\t")
    rows = [dict(zip(names, ln.split("\t"))) for ln in lines[1:]]
    return sorted(rows, key=lambda r: int(r.get("uid", 0)))


def no_fatal(d):
    """No crash: the master's own SIGTERM at stop() is fine."""
    assert not re.search(r"Panic:|Fatal:|core dumped|signal (6|7|9|11)\b",
                         d.log_text()), d.log_text()[-3000:]


# ================================================================ space

def test_purge_removes_unreferenced_bodies(dovecot):
    """doveadm purge deletes refcount-0 bodies with their chunks, and only
    those: referenced bodies (also one shared by two messages) stay."""
    conn = dovecot.imap()
    conn.create("Archive")
    msgs = {"INBOX": {}, "Archive": {}}
    for i in range(3):
        msg = big_message("live %d" % i, 100 * 1024, "live-%d" % i)
        msgs["INBOX"][append(conn, "INBOX", msg)] = msg
    conn.select("INBOX")
    typ, data = conn.uid("COPY", "1", "Archive")      # a shared body
    assert typ == "OK", data
    msgs["Archive"][1] = msgs["INBOX"][1]
    conn.logout()

    before = mdb_entries(dovecot)
    assert before["body"] == 3 and before["msg"] == 4, before
    live_chunks = before["chunk"]
    assert live_chunks == 3 * 2, before          # 100 KB = 2 x 64 KiB

    # plant what a bug or an older version could leave: two bodies whose
    # reference count is 0, one with 3 chunks, one with none
    dead = []
    for n_chunks in (3, 0):
        h = hashlib.sha256(os.urandom(32)).digest()
        size = 64 * 1024 * n_chunks - 10 if n_chunks else 0
        rec = (0).to_bytes(8, "big") + size.to_bytes(8, "big") + \
            (64 * 1024).to_bytes(4, "big") + n_chunks.to_bytes(4, "big")
        mdb_load(dovecot, "body", [(h, rec)])
        chunks = []
        for idx in range(n_chunks):
            n = 64 * 1024 if idx < n_chunks - 1 else 64 * 1024 - 10
            chunks.append((h + idx.to_bytes(4, "big"), os.urandom(n)))
        if chunks:
            mdb_load(dovecot, "chunk", chunks)
        dead.append(h)
    planted = mdb_entries(dovecot)
    assert planted["body"] == 5 and planted["chunk"] == live_chunks + 3, \
        planted

    # the planted bodies don't disturb normal use
    conn = dovecot.imap()
    assert bodies(conn, "INBOX") == msgs["INBOX"]
    conn.logout()

    doveadm_ok(dovecot, "purge", "-u", "testuser")
    after = mdb_entries(dovecot)
    assert after["body"] == 3, after
    assert after["chunk"] == live_chunks, after
    assert after["msg"] == 4, after
    keys = {k for k, v in mdb_dump_values(dovecot, "body")}
    assert not keys & set(dead)
    for k, v in mdb_dump_values(dovecot, "body"):
        assert int.from_bytes(v[:8], "big") >= 1, (k.hex(), v.hex())

    # idempotent, and every message is still there byte-exact
    doveadm_ok(dovecot, "purge", "-u", "testuser")
    assert mdb_entries(dovecot) == after
    conn = dovecot.imap()
    for box, want in msgs.items():
        assert bodies(conn, box) == want, box
    # the shared body is referenced twice: expunging one copy keeps it
    expunge_uids(conn, "INBOX", [1])
    assert bodies(conn, "Archive") == msgs["Archive"]
    conn.logout()
    doveadm_ok(dovecot, "purge", "-u", "testuser")
    assert mdb_entries(dovecot)["body"] == 3
    conn = dovecot.imap()
    assert bodies(conn, "Archive") == msgs["Archive"]
    conn.logout()
    dovecot.check_log_clean()


def test_churn_reaches_a_plateau(dovecot):
    """Append and expunge 5 MB ten times: data.mdb stops growing."""
    sizes = []
    conn = dovecot.imap()
    keep = make_message("keeper", "stays all along\n")
    keep_uid = append(conn, "INBOX", keep)
    for rnd in range(10):
        uids = [append(conn, "INBOX", big_message("churn %d.%d" % (rnd, i),
                                                  1024 * 1024,
                                                  "churn-%d-%d" % (rnd, i)))
                for i in range(5)]
        expunge_uids(conn, "INBOX", uids)
        sizes.append(os.path.getsize(data_mdb(dovecot)))
    print("\ndata.mdb after each round (MB): %s" %
          " ".join("%.1f" % (s / 1048576.0) for s in sizes))
    assert mdb_entries(dovecot)["body"] == 1
    assert sizes[-1] <= 2 * sizes[1], sizes
    assert max(sizes[2:]) <= 2 * sizes[1], sizes
    assert bodies(conn, "INBOX") == {keep_uid: keep}
    conn.logout()
    dovecot.check_log_clean()


def check_full_is_clean(d, conn, stored, filler, free_fn, label,
                        resp_code, lmtp_code):
    """Shared part of the size-limit and disk-full cases.

    filler(i) makes the next message; APPEND until a NO, then check the NO
    (with resp_code), the LMTP reply (lmtp_code), byte-exactness, and that
    saving works again after free_fn()."""
    refused = None
    for i in range(200):
        msg = filler(i)
        typ, data = conn.append("INBOX", None, None, msg)   # BAD raises
        if typ != "OK":
            refused = (i, typ, data)
            break
        stored[appenduid(data)] = msg
    assert refused is not None, "%s: never full" % label
    i, typ, data = refused
    assert typ == "NO", refused
    assert data[0].startswith(b"[%s] " % resp_code.encode()), refused
    assert re.search(rb"full|quota|space", data[0], re.I), refused
    no_text = data[0]
    assert len(stored) >= 2, (label, len(stored))

    # the session still works, everything stored is byte-exact
    assert conn.noop()[0] == "OK"
    assert bodies(conn, "INBOX") == stored

    # LMTP: a clean 4xx/5xx, never a dropped connection
    with pytest.raises(smtplib.SMTPException) as exc:
        d.lmtp_deliver("testuser", filler(1000))
    code, reply = smtp_failure(exc)
    assert code == lmtp_code, (code, reply)
    assert not isinstance(exc.value, smtplib.SMTPServerDisconnected)

    # a fresh session sees exactly what was acknowledged
    conn2 = d.imap()
    assert bodies(conn2, "INBOX") == stored
    conn2.logout()

    # freeing space makes saving work again
    free_fn(conn)
    msg = filler(2000)
    typ, data = conn.append("INBOX", None, None, msg)
    assert typ == "OK", ("%s: no recovery after freeing space" % label, data)
    stored[appenduid(data)] = msg
    d.lmtp_deliver("testuser", make_message("after", "delivered again\n"))
    conn.select("INBOX")
    got = bodies(conn, "INBOX")
    assert {u: b for u, b in got.items() if u in stored} == stored
    assert len(got) == len(stored) + 1
    print("\n%s: %d stored, APPEND %r, LMTP %d %r"
          % (label, len(stored), no_text, code, reply))


@pytest.mark.dovecot_config(
    extra_config="plugin {\n  lmdb_map_size = 1M\n  lmdb_max_size = 3M\n}\n")
@pytest.mark.dovecot_log_allow(MAP_FULL_LOG)
def test_size_limit_clean_no(dovecot):
    conn = dovecot.imap()
    stored = {}

    def free(conn):
        victims = sorted(stored)[:len(stored) // 2]
        expunge_uids(conn, "INBOX", victims)
        for uid in victims:
            del stored[uid]

    check_full_is_clean(dovecot, conn, stored,
                        lambda i: big_message("limit %d" % i, 300 * 1024,
                                              "limit-%d" % i),
                        free, "lmdb_max_size", "OVERQUOTA", 552)
    conn.logout()
    assert os.path.getsize(data_mdb(dovecot)) <= 3 * 1024 * 1024
    doveadm_ok(dovecot, "force-resync", "-u", "testuser", "INBOX")
    no_fatal(dovecot)


@pytest.mark.dovecot_log_allow(DISK_FULL_LOG, MAP_FULL_LOG)
def test_disk_full_clean_no(dovecot_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    d = dovecot_factory()
    mail_root = os.path.join(d.home("testuser"), "lmdb")
    assert not os.path.exists(mail_root)
    os.makedirs(mail_root)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700,uid=%d,gid=%d"
         % (d.mail_uid, d.mail_gid), "tmpfs", mail_root],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        os.rmdir(mail_root)
        pytest.skip("mount -t tmpfs is not permitted here: %s"
                    % res.stdout.strip())
    try:
        conn = d.imap()
        stored = {}

        def free(conn):
            victims = sorted(stored)[:len(stored) // 2]
            expunge_uids(conn, "INBOX", victims)
            for uid in victims:
                del stored[uid]

        check_full_is_clean(d, conn, stored,
                            lambda i: big_message("disk %d" % i, 400 * 1024,
                                                  "disk-%d" % i),
                            free, "disk full", "UNAVAILABLE", 451)
        conn.logout()
        d.stop()
        d.start()
        conn = d.imap()
        assert len(bodies(conn, "INBOX")) == len(stored) + 1
        conn.logout()
        no_fatal(d)
    finally:
        d.stop()
        res = subprocess.run(["umount", mail_root], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", mail_root])


# ================================================================ quota

QUOTA_CONFIG = """\
plugin {
  quota = count:User quota
  quota_rule = *:storage=100K:messages=10
  quota_vsizes = yes
}
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
"""


def quota_doveadm(d):
    """(storage KB, messages) from `doveadm quota get`."""
    out = doveadm_ok(d, "-f", "tab", "quota", "get", "-u", "testuser")
    vals = {}
    for line in out.splitlines()[1:]:
        cols = line.split("\t")
        vals[cols[1]] = (int(cols[2]), cols[3])
    assert vals["STORAGE"][1] == "100" and vals["MESSAGE"][1] == "10", out
    return vals["STORAGE"][0], vals["MESSAGE"][0]


def quota_imap(conn):
    typ, data = conn.getquotaroot("INBOX")
    assert typ == "OK", data
    flat = []
    for x in data:
        flat += x if isinstance(x, list) else [x]
    text = b" ".join(x for x in flat if isinstance(x, bytes))
    m = re.search(rb"\"?User quota\"? \(STORAGE (\d+) 100 "
                  rb"MESSAGE (\d+) 10\)", text)
    assert m, data
    return int(m.group(1)), int(m.group(2))


@pytest.mark.dovecot_config(mail_plugins=["lmdb", "quota"],
                            extra_config=QUOTA_CONFIG)
def test_quota_count(dovecot):
    conn = dovecot.imap()
    conn.create("Archive")
    sizes = {}                      # (box, uid) -> bytes

    def check():
        want_kb = (sum(sizes.values()) + 1023) // 1024
        want = (want_kb, len(sizes))
        assert quota_doveadm(dovecot) == want, sizes
        assert quota_imap(conn) == want, sizes

    check()
    for i in range(4):
        msg = big_message("q %d" % i, 8000 + 1000 * i, "q-%d" % i)
        sizes[("INBOX", append(conn, "INBOX", msg))] = len(msg)
    check()
    conn.select("INBOX")
    typ, data = conn.uid("COPY", "1:2", "Archive")
    assert typ == "OK", data
    sizes[("Archive", 1)] = sizes[("INBOX", 1)]
    sizes[("Archive", 2)] = sizes[("INBOX", 2)]
    check()
    typ, data = conn.uid("MOVE", "3", "Archive")
    assert typ == "OK", data
    sizes[("Archive", 3)] = sizes.pop(("INBOX", 3))
    check()
    expunge_uids(conn, "INBOX", [1])
    del sizes[("INBOX", 1)]
    check()
    expunge_uids(conn, "Archive", [3])
    del sizes[("Archive", 3)]
    check()

    # storage over quota: APPEND and COPY get NO [OVERQUOTA]
    before = dict(sizes)
    big = big_message("too big", 100 * 1024 - sum(sizes.values()) + 500,
                      "too-big")
    typ, data = conn.append("INBOX", None, None, big)
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
    check()
    # LMTP over quota: 552 5.2.2 (quota_full_tempfail = no).  LMTP may go
    # over by quota_grace (10%) with its last mail, so go over that too.
    lmtp_big = big_message("too big lmtp", 100 * 1024 -
                           sum(sizes.values()) + 15 * 1024, "too-big-lmtp")
    assert len(lmtp_big) < 100 * 1024     # not simply above the limit
    with pytest.raises(smtplib.SMTPException) as exc:
        dovecot.lmtp_deliver("testuser", lmtp_big)
    code, reply = smtp_failure(exc)
    assert code == 552 and b"5.2.2" in reply, (code, reply)
    check()

    # messages over quota: fill up to 10, the 11th is refused
    while len(sizes) < 10:
        msg = make_message("small %d" % len(sizes), "x\n")
        sizes[("INBOX", append(conn, "INBOX", msg))] = len(msg)
    check()
    typ, data = conn.append("INBOX", None, None, make_message("11th", "x\n"))
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
    conn.select("Archive")
    typ, data = conn.uid("COPY", "1", "INBOX")
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
    check()
    with pytest.raises(smtplib.SMTPException) as exc:
        dovecot.lmtp_deliver("testuser", make_message("lmtp 11th", "x\n"))
    code, reply = smtp_failure(exc)
    assert code == 552, (code, reply)
    assert set(before) <= set(sizes)

    # expunging frees quota; doveadm quota recalc agrees with the counts
    expunge_uids(conn, "INBOX", [uid for box, uid in sizes
                                 if box == "INBOX"][-3:])
    for key in [k for k in sizes if k[0] == "INBOX"][-3:]:
        del sizes[key]
    check()
    doveadm_ok(dovecot, "quota", "recalc", "-u", "testuser")
    check()
    dovecot.lmtp_deliver("testuser", make_message("fits again", "x\n"))
    conn.logout()
    assert quota_doveadm(dovecot)[1] == len(sizes) + 1

    # quota_full_tempfail = yes turns the LMTP refusal into 452 4.2.2
    with open(dovecot.config_path, "a") as f:
        f.write("quota_full_tempfail = yes\n")
    dovecot.reload()
    deadline = time.monotonic() + 10
    while True:
        with pytest.raises(smtplib.SMTPException) as exc:
            dovecot.lmtp_deliver("testuser", lmtp_big)
        code, reply = smtp_failure(exc)
        if code not in (552, 421) or time.monotonic() > deadline:
            break
        time.sleep(0.2)           # an lmtp process of the old config
    assert code == 452 and b"4.2.2" in reply, (code, reply)
    assert quota_doveadm(dovecot)[1] == len(sizes) + 1
    dovecot.check_log_clean()


# ================================================================ zlib/crypt

MARKER = "PLAINTEXT-MARKER-7f3a9c"


def make_keys(dirpath):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    priv = os.path.join(dirpath, "ecprivkey.pem")
    pub = os.path.join(dirpath, "ecpubkey.pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey",
                    "-noout", "-out", priv + ".ec"], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # PKCS#8 form, as the mail_crypt docs convert it
    subprocess.run(["openssl", "pkey", "-in", priv + ".ec", "-out", priv],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for p in (priv, pub):
        os.chmod(p, 0o644)
    return priv, pub


def plugin_config(plugins, keydir):
    lines = []
    if "zlib" in plugins:
        lines += ["  zlib_save = gz", "  zlib_save_level = 6"]
    if "mail_crypt" in plugins:
        priv, pub = make_keys(keydir)
        lines += ["  mail_crypt_global_private_key = <%s" % priv,
                  "  mail_crypt_global_public_key = <%s" % pub,
                  "  mail_crypt_save_version = 2"]
    return "plugin {\n%s\n}\n" % "\n".join(lines)


def sample_messages():
    text = ("%s line of a compressible, secret body\n" % MARKER) * 400
    return [
        make_message("crlf", text),
        # bare LF: physical and virtual sizes differ
        make_message("lf", "short LF body %s\n" % MARKER).replace(b"\r\n",
                                                                 b"\n"),
        big_message("big", 300 * 1024, "zc-big") +
        (MARKER + "\r\n").encode(),
        make_message("empty body", ""),
    ]


def store_samples(d, msgs):
    """Append the samples, LMTP-deliver the first, COPY two; return
    {box: ([(uid, RFC822.SIZE, literals)], doveadm sizes)} without the LMTP
    mail, whose trace headers differ per instance, and that mail's
    (RFC822.SIZE, BODY[], BODY[TEXT], size.physical, size.virtual)."""
    conn = d.imap()
    conn.create("Archive")
    for msg in msgs:
        append(conn, "INBOX", msg)
    d.lmtp_deliver("testuser", msgs[0])
    lmtp_uid = len(msgs) + 1
    conn.select("INBOX")
    typ, data = conn.uid("COPY", "1:2", "Archive")
    assert typ == "OK", data
    facts, lmtp = {}, None
    for box in ("INBOX", "Archive"):
        conn.select(box, readonly=True)
        got = fetch(conn, "1:*", "(RFC822.SIZE BODY.PEEK[] "
                    "BODY.PEEK[HEADER] BODY.PEEK[TEXT])")
        sizes = doveadm_fetch(d, "uid size.physical size.virtual", box)
        rows = []
        for uid, (meta, lits) in sorted(got.items()):
            size = int(re.search(rb"RFC822\.SIZE (\d+)", meta).group(1))
            if box == "INBOX" and uid == lmtp_uid:
                row, = [r for r in sizes if r["uid"] == str(uid)]
                lmtp = (size, lits[0], lits[2], int(row["size.physical"]),
                        int(row["size.virtual"]))
                continue
            rows.append((uid, size, tuple(lits)))
        facts[box] = (rows, [r for r in sizes if box != "INBOX" or
                             r["uid"] != str(lmtp_uid)])
    conn.logout()
    assert lmtp is not None
    return facts, lmtp


@pytest.mark.parametrize("plugins", [["zlib"], ["mail_crypt"],
                                     ["zlib", "mail_crypt"]])
def test_zlib_mail_crypt_roundtrip(dovecot_factory, tmp_path, plugins):
    ref = dovecot_factory(mail_location="maildir:~/Maildir", mail_plugins=[])
    msgs = sample_messages()
    want, want_lmtp = store_samples(ref, msgs)
    ref.stop()

    d = dovecot_factory(mail_plugins=["lmdb"] + plugins,
                        extra_config=plugin_config(plugins, str(tmp_path)))
    got, got_lmtp = store_samples(d, msgs)
    for box in want:
        assert got[box][0] == want[box][0], box          # IMAP, byte-exact
        assert got[box][1] == want[box][1], box          # doveadm sizes
    # the LMTP copy: same text; sizes consistent with its own trace headers
    size, full, text, phys, virt = got_lmtp
    assert text == want_lmtp[2] == msgs[0].split(b"\r\n\r\n", 1)[1]
    assert full.endswith(msgs[0])
    assert size == virt == len(full), got_lmtp[0::3]
    assert phys == len(full) - full.count(b"\r\n"), (phys, len(full))
    assert size - want_lmtp[0] == len(full) - len(want_lmtp[1])
    # sanity of the reference itself
    rows = want["INBOX"][0]
    assert rows[0][2][0] == msgs[0] and rows[0][1] == len(msgs[0])
    phys = [int(r["size.physical"]) for r in want["INBOX"][1]]
    assert phys[1] == len(msgs[1]), phys               # LF stays LF

    # survives a restart (nothing from a cache of the saving process)
    d.stop()
    d.start()
    conn = d.imap()
    conn.select("INBOX", readonly=True)
    for uid, size, lits in want["INBOX"][0]:
        (meta, glits), = fetch(conn, str(uid), "(RFC822.SIZE BODY.PEEK[])"
                               ).values()
        assert glits[0] == lits[0], uid
        assert b"RFC822.SIZE %d" % size in meta, (uid, meta)
    conn.logout()

    # what LMDB holds is really compressed / encrypted
    with open(data_mdb(d), "rb") as f:
        raw = f.read()
    assert MARKER.encode() not in raw, "plaintext body in data.mdb"
    assert b"secret body" not in raw
    if plugins[0] == "zlib" and len(plugins) == 1:
        assert b"\x1f\x8b\x08" in raw, "no gzip stream in data.mdb"
    if "mail_crypt" in plugins:
        assert b"CRYPTED\x03\x07" in raw, "no mail_crypt header in data.mdb"
    stored = {k: int.from_bytes(v[8:16], "big")
              for k, v in mdb_dump_values(d, "body")}
    # 4 distinct messages (the LMTP one is the same text, but encryption
    # and gzip headers may make it a fifth body)
    assert len(stored) in (4, 5), stored
    if plugins == ["zlib"]:
        # the compressible 30 KB text is stored in far fewer bytes
        assert min(stored.values()) < len(msgs[0]) // 5, stored
    d.check_log_clean()


# ================================================================ lazy_expunge

LAZY_MAILBOX = """\
plugin {
  lazy_expunge = .EXPUNGED
}
"""

LAZY_NAMESPACE = """\
namespace expunged {
  prefix = .EXPUNGED/
  hidden = yes
  list = no
  separator = /
  location = lmdb:~/expunged
}
plugin {
  lazy_expunge = .EXPUNGED/
}
"""


@pytest.mark.parametrize("mode", ["mailbox", "namespace"])
def test_lazy_expunge(dovecot_factory, mode):
    d = dovecot_factory(
        mail_plugins=["lmdb", "lazy_expunge"],
        extra_config=LAZY_MAILBOX if mode == "mailbox" else LAZY_NAMESPACE)
    conn = d.imap()
    msgs = {}
    for i in range(3):
        msg = big_message("lazy %d" % i, 20 * 1024 * (i + 1), "lazy-%d" % i)
        msgs[append(conn, "INBOX", msg, r"(\Flagged)")] = msg
    before = mdb_entries(d)
    expunge_uids(conn, "INBOX", [1, 3])
    assert bodies(conn, "INBOX") == {2: msgs[2]}

    dest = ".EXPUNGED" if mode == "mailbox" else ".EXPUNGED/INBOX"
    got = bodies(conn, dest)
    assert sorted(got.values()) == sorted([msgs[1], msgs[3]])
    conn.select(dest, readonly=True)
    for uid, (meta, lits) in fetch(conn, "1:*", "(FLAGS RFC822.SIZE)"
                                   ).items():
        assert rb"\Flagged" in meta, meta
        assert b"RFC822.SIZE %d" % len(got[uid]) in meta, meta
    after = mdb_entries(d)
    if mode == "mailbox":
        # a MOVE inside one LMDB: records move, bodies stay shared
        assert after["body"] == before["body"] == 3, (before, after)
        assert after["msg"] == 3, after
    else:
        # a separate LMDB: copied over, then released here
        assert after["body"] == 1 and after["msg"] == 1, after
        other = mdb_entries(d, root="expunged")
        assert other["body"] == 2 and other["msg"] == 2, other

    # expunging in the lazy_expunge mailbox really expunges
    expunge_uids(conn, dest, sorted(got)[:1])
    assert len(bodies(conn, dest)) == 1
    assert bodies(conn, "INBOX") == {2: msgs[2]}
    conn.logout()
    if mode == "mailbox":
        assert mdb_entries(d)["body"] == 2
    d.check_log_clean()


# ================================================================ virtual

VIRTUAL_CONFIG = """\
namespace virtual {
  prefix = virtual/
  separator = /
  location = virtual:~/virtual
}
"""


def test_virtual_mailbox_as_copy_source(dovecot_factory):
    d = dovecot_factory(mail_plugins=["lmdb", "virtual"],
                        extra_config=VIRTUAL_CONFIG)
    home = d.home("testuser")
    for name, rule in (("all", "INBOX\n  all\n"),
                       ("flagged", "INBOX\nArchive\n  flagged\n")):
        vdir = os.path.join(home, "virtual", name)
        os.makedirs(vdir)
        with open(os.path.join(vdir, "dovecot-virtual"), "w") as f:
            f.write(rule)
    if d.is_root:
        for dirpath, dirs, files in os.walk(os.path.join(home, "virtual")):
            for n in [dirpath] + [os.path.join(dirpath, x) for x in files]:
                os.chown(n, d.mail_uid, d.mail_gid)

    conn = d.imap()
    conn.create("Archive")
    conn.create("Copies")
    msgs = {}
    for i in range(4):
        msg = big_message("virt %d" % i, 70 * 1024 + i, "virt-%d" % i)
        flags = r"(\Flagged)" if i % 2 else None
        msgs[append(conn, "INBOX", msg, flags)] = msg
    before = mdb_entries(d)
    assert before["body"] == 4
    src_sizes = sorted((r["size.physical"], r["size.virtual"]) for r in
                       doveadm_fetch(d, "uid size.physical size.virtual",
                                     "INBOX"))
    # CRLF input stored LF-only (mail_save_crlf = no), as maildir does
    assert sorted(int(v) for p, v in src_sizes) == \
        sorted(len(m) for m in msgs.values())

    vall = bodies(conn, "virtual/all")
    assert sorted(vall.values()) == sorted(msgs.values())
    conn.select("virtual/all")
    typ, data = conn.uid("COPY", "1:*", "Copies")
    assert typ == "OK", data
    assert sorted(bodies(conn, "Copies").values()) == sorted(msgs.values())
    conn.select("virtual/flagged")
    typ, data = conn.uid("COPY", "1:*", "Archive")
    assert typ == "OK", data
    flagged = [msgs[u] for u in sorted(msgs) if u % 2 == 0]
    assert sorted(bodies(conn, "Archive").values()) == sorted(flagged)

    after = mdb_entries(d)
    assert after["body"] == 4, (before, after)      # shared, not copied
    assert after["chunk"] == before["chunk"], (before, after)
    assert after["msg"] == 4 + 4 + 2, after

    # the copies stand on their own: expunge every source message
    expunge_uids(conn, "INBOX", sorted(msgs))
    assert sorted(bodies(conn, "Copies").values()) == sorted(msgs.values())
    assert sorted(bodies(conn, "Archive").values()) == sorted(flagged)
    assert bodies(conn, "virtual/all") == {}
    # and the copies' sizes are the sources' sizes
    assert sorted((r["size.physical"], r["size.virtual"]) for r in
                  doveadm_fetch(d, "uid size.physical size.virtual",
                                "Copies")) == src_sizes
    typ, data = conn.select("Copies", readonly=True)
    got = fetch(conn, "1:*", "(RFC822.SIZE)")
    assert sorted(int(re.search(rb"RFC822\.SIZE (\d+)", m).group(1))
                  for m, lits in got.values()) == \
        sorted(len(m) for m in msgs.values())
    conn.logout()
    assert mdb_entries(d)["body"] == 4
    d.check_log_clean()
