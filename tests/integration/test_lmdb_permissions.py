"""Permissions of the lmdb format's files, and where it writes.

  * The LMDB environment (mail.lmdb/, data.mdb, lock.mdb, compact.lock)
    and lmdb-mailbox-guid get the mailbox list's permissions, exactly as
    Dovecot's own index files: 0600/0700 and the mail user's ownership by
    default, 0660/2770 and the directory's group in a group-shared mail
    root.
  * A second system user can neither read nor open another user's
    environment: not with its own uid, not through Dovecot (doveadm with
    the other user's location), and the attempt changes nothing there.
  * Nothing is written outside the user's mail root: imap and lmtp run
    under strace, and every successful write-like system call (open for
    writing, mkdir, rename, unlink, link, chmod, chown, truncate) must be
    inside the mail root, except /dev/null and Dovecot's transient temp
    files in mail_temp_dir (created and unlinked at once, never left
    behind).  /tmp, /var/tmp and /dev/shm are also listed before and after
    for files of the test's own uid.

The harness runs every user with one mail uid, so the tests that need
two uids add a second system user ("dovecot-lmdb2") and move user2 to it.
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import time

import pytest

from dovecot_harness import make_message

SECOND_USER = "dovecot-lmdb2"
LMDB_FILES = ("data.mdb", "lock.mdb", "compact.lock")

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root (a second system uid)")


def env_dir(d, user="testuser"):
    return os.path.join(d.home(user), "lmdb", "mail.lmdb")


def populate(d, user="testuser"):
    c = d.imap(user)
    assert c.append("INBOX", None, None, make_message("one"))[0] == "OK"
    assert c.create("Box")[0] == "OK"
    assert c.append("Box", None, None,
                    make_message("big", "z" * 300000 + "\n"))[0] == "OK"
    c.select("INBOX")
    assert c.copy("1", "Box")[0] == "OK"
    c.logout()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def plugin_paths(d, user="testuser"):
    root = os.path.join(d.home(user), "lmdb")
    out = [os.path.join(root, "mail.lmdb", n) for n in LMDB_FILES]
    for box in ("INBOX", "Box"):
        out.append(os.path.join(root, "mailboxes", box, "lmdb-Mails",
                                "lmdb-mailbox-guid"))
    return out


# ----------------------------------------------------------------- modes

def test_files_private_and_owned(dovecot):
    populate(dovecot)
    root = os.path.join(dovecot.home("testuser"), "lmdb")
    dovecot_file = os.path.join(root, "dovecot.list.index.log")
    assert mode(dovecot_file) == 0o600
    assert mode(env_dir(dovecot)) == 0o700
    for path in plugin_paths(dovecot):
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, path
        assert (st.st_uid, st.st_gid) == (dovecot.mail_uid,
                                          dovecot.mail_gid), path
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            assert st.st_uid == dovecot.mail_uid, os.path.join(dirpath, n)
            # (Dovecot's own empty lmdb-uidvalidity.<hex> marker is 0444,
            # as dovecot-uidvalidity.<hex> is for maildir)
            if not re.match(r"lmdb-uidvalidity\.[0-9a-f]+$", n):
                assert not st.st_mode & 0o007, os.path.join(dirpath, n)


@needs_root
def test_group_shared_root(dovecot):
    """A 2770 root of group "mail": the plugin's files are 0660 and of that
    group, like Dovecot's own (the process umask must not interfere)."""
    dovecot.stop()
    root = os.path.join(dovecot.home("testuser"), "lmdb")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    gid = grp.getgrnam("mail").gr_gid
    os.chown(root, dovecot.mail_uid, gid)
    os.chmod(root, 0o2770)
    dovecot.start()
    populate(dovecot)
    want = mode(os.path.join(root, "dovecot.list.index.log"))
    assert want == 0o660
    assert mode(env_dir(dovecot)) == 0o2770
    for path in plugin_paths(dovecot):
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == want, (path, oct(st.st_mode))
        assert st.st_gid == gid, path


# ----------------------------------------------------------------- 2 uids

def second_uid():
    try:
        pw = pwd.getpwnam(SECOND_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group",
                        "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "--comment",
                        "dovecot-lmdb tests, second uid", SECOND_USER],
                       check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
        pw = pwd.getpwnam(SECOND_USER)
    return pw.pw_uid, pw.pw_gid


def move_user(d, user, uid, gid):
    """Give user (of the harness's passwd-file) its own system uid."""
    lines = []
    with open(d.passwd_path) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == user:
                fields[2], fields[3] = str(uid), str(gid)
                line = ":".join(fields)
            lines.append(line)
    with open(d.passwd_path + ".new", "w") as f:
        f.writelines(lines)
    st = os.stat(d.passwd_path)
    os.chmod(d.passwd_path + ".new", stat.S_IMODE(st.st_mode))
    os.chown(d.passwd_path + ".new", st.st_uid, st.st_gid)
    os.rename(d.passwd_path + ".new", d.passwd_path)
    for dirpath, dirs, files in os.walk(d.home(user)):
        for n in [dirpath] + [os.path.join(dirpath, x) for x in files]:
            os.lchown(n, uid, gid)
    # passwd-file is re-read when its mtime or size changes: the new uid
    # may have the old one's length, and this may be the same second
    t = time.time() + 5
    os.utime(d.passwd_path, (t, t))
    for _ in range(100):
        res = d.doveadm("user", "-f", "uid", user)
        if res.stdout.strip() == str(uid):
            return
        time.sleep(0.1)
    raise AssertionError("%s still has the old uid: %r" % (user, res))


def as_uid(uid, gid):
    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return drop


def tree_state(path):
    out = {}
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns)
    return out


@needs_root
@pytest.mark.dovecot_log_allow(r"Permission denied", r"EACCES",
                               r"lmdb:.*mail\.lmdb")
def test_second_user_cannot_open_environment(dovecot):
    d = dovecot
    uid2, gid2 = second_uid()
    populate(d)
    move_user(d, "user2", uid2, gid2)
    populate(d, "user2")
    assert os.lstat(os.path.join(env_dir(d, "user2"),
                                 "data.mdb")).st_uid == uid2
    # a careless home that anyone may enter: the environment itself must
    # still keep the other uid out
    os.chmod(d.home("testuser"), 0o755)
    os.chmod(os.path.join(d.home("testuser"), "lmdb"), 0o755)
    env = env_dir(d)
    before = tree_state(os.path.join(d.home("testuser"), "lmdb"))
    probe = ("import os, sys\n"
             "env = sys.argv[1]\n"
             "for f in ('data.mdb', 'lock.mdb'):\n"
             "    try:\n"
             "        open(os.path.join(env, f), 'rb').read(1)\n"
             "        print('READ', f)\n"
             "    except PermissionError:\n"
             "        print('denied', f)\n"
             "try:\n"
             "    os.listdir(env); print('LISTED')\n"
             "except PermissionError:\n"
             "    print('denied listing')\n")
    res = subprocess.run(["/usr/bin/python3", "-c", probe, env],
                         preexec_fn=as_uid(uid2, gid2),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    assert "READ" not in res.stdout and "LISTED" not in res.stdout, \
        res.stdout
    if shutil.which("mdb_stat"):
        res = subprocess.run(["mdb_stat", env], preexec_fn=as_uid(uid2, gid2),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=60)
        assert res.returncode != 0, res.stdout
    # through Dovecot: user2 (uid2) pointed at testuser's mail
    res = d.doveadm("-o", "mail_location=lmdb:" +
                    os.path.join(d.home("testuser"), "lmdb"),
                    "mailbox", "status", "-u", "user2", "messages", "INBOX")
    assert res.returncode not in (0, -6, -11, 134, 139), res
    assert "Permission denied" in res.stderr or \
        "EACCES" in res.stderr, res.stderr
    # and user2's own mail still works; testuser's is untouched
    c = d.imap("user2")
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()
    assert tree_state(os.path.join(d.home("testuser"), "lmdb")) == before
    # and the other way round: testuser's uid can't read user2's
    res = subprocess.run(["/usr/bin/python3", "-c", probe,
                          env_dir(d, "user2")],
                         preexec_fn=as_uid(d.mail_uid, d.mail_gid),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    assert "READ" not in res.stdout and "LISTED" not in res.stdout, \
        res.stdout


# ----------------------------------------------------------------- writes

WRITE_CALLS = re.compile(
    r"^(?P<call>openat|open|creat|mkdir|mkdirat|rename|renameat2?|unlink|"
    r"unlinkat|rmdir|link|linkat|symlink|symlinkat|chmod|fchmodat|chown|"
    r"lchown|fchownat|truncate|utimensat)\((?P<args>.*)\) += (?P<ret>\S+)")
PATH_ARG = re.compile(r'(?:(?:AT_FDCWD|\d+)<(?P<dir>[^>]*)>, )?"(?P<path>'
                      r'(?:[^"\\]|\\.)*)"')


CHDIR = re.compile(r'^(?:chdir\("(?P<path>[^"]*)"\)|fchdir\(\d+<(?P<fd>[^>]*)>'
                   r'\)) += 0')


def traced_writes(trace_dir):
    """[(file, call, path)] of every successful write-like call."""
    out = []
    for name in sorted(os.listdir(trace_dir)):
        cwd = "/"
        with open(os.path.join(trace_dir, name), errors="replace") as f:
            for line in f:
                m = CHDIR.match(line)
                if m:
                    cwd = os.path.join(cwd, m.group("path") or m.group("fd"))
                    continue
                m = WRITE_CALLS.match(line)
                if not m or m.group("ret").startswith("-1"):
                    continue
                call, args = m.group("call"), m.group("args")
                if call in ("openat", "open") and not re.search(
                        r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND", args):
                    continue
                for pm in PATH_ARG.finditer(args):
                    path = pm.group("path")
                    if not path.startswith("/"):
                        path = os.path.join(pm.group("dir") or cwd, path)
                    out.append((name, call, os.path.normpath(path)))
    return out


def uid_files(uid, exclude):
    """Files of uid under /tmp, /var/tmp and /dev/shm, except under the
    test instances' own directory exclude."""
    out = set()
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        for dirpath, dirs, files in os.walk(top):
            dirs[:] = [x for x in dirs
                       if os.path.join(dirpath, x) != exclude]
            for n in dirs + files:
                p = os.path.join(dirpath, n)
                if p == exclude or p.startswith(exclude + "/"):
                    continue
                try:
                    if os.lstat(p).st_uid == uid:
                        out.add(p)
                except OSError:
                    pass
    return out


@needs_root
@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="strace is not installed")
def test_nothing_written_outside_mail_root(dovecot_factory, tmp_path):
    uid2, gid2 = second_uid()
    traces = str(tmp_path / "traces")
    os.makedirs(traces)
    extra = ""
    for svc in ("imap", "lmtp"):
        extra += ("service %s {\n  executable = /usr/bin/strace -D -ff -qq "
                  "-e trace=%%file,%%desc -y -o %s/%s /usr/lib/dovecot/%s\n"
                  "}\n" % (svc, traces, svc, svc))
    d = dovecot_factory(extra_config=extra)
    move_user(d, "user2", uid2, gid2)
    exclude = os.path.realpath(os.path.dirname(d.root))
    before = uid_files(uid2, exclude)
    populate(d, "user2")
    c = d.imap("user2")
    c.select("Box")
    c.store("1", "+FLAGS", "\\Deleted")
    c.expunge()
    c.search(None, "BODY", "zzz")
    c.rename("Box", "Renamed")
    c.create("Gone")
    c.delete("Gone")
    c.logout()
    d.lmtp_deliver("user2", make_message("lmtp small"))
    d.lmtp_deliver("user2", make_message("lmtp big", "y" * 300000 + "\n"))
    d.stop()
    root = os.path.join(d.home("user2"), "lmdb")
    writes = traced_writes(traces)
    assert any(p.startswith(root + "/mail.lmdb/") for _, _, p in writes), \
        "the trace saw no LMDB writes at all"
    outside = [(f, c, p) for f, c, p in writes
               if p != root and not p.startswith(root + "/") and
               p != "/dev/null"]
    temp = re.compile(r"^/tmp/dovecot\.(imap|lmtp)\.")
    created = {(f, p) for f, c, p in outside
               if temp.match(p) and c in ("openat", "open")}
    unlinked = {(f, p) for f, c, p in outside
                if temp.match(p) and c in ("unlink", "unlinkat")}
    assert created == unlinked, "temp files left behind: %s" % (
        created - unlinked)
    other = [w for w in outside if not temp.match(w[2])]
    assert not other, "written outside the mail root %s:\n%s" % (
        root, "\n".join("%s: %s %s" % w for w in other))
    assert uid_files(uid2, exclude) - before == set()
