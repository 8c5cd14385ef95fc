"""Smoke tests of the harness itself, against stock maildir (no plugin)."""

import email
import imaplib
import os
import poplib
import smtplib
import ssl

import pytest

import dovecot_harness
from dovecot_harness import make_message

pytestmark = pytest.mark.dovecot_config("maildir:~/Maildir", mail_plugins=[])


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_imap_login_plain(dovecot):
    conn = dovecot.imap(login=False)
    assert not isinstance(conn.sock, ssl.SSLSocket)
    assert "AUTH=PLAIN" in conn.capabilities
    conn.login("testuser", "pass")
    typ, data = conn.select("INBOX")
    assert typ == "OK" and data == [b"0"]
    conn.logout()
    bad = dovecot.imap(login=False)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login("testuser", "wrong")
    bad.logout()


def test_imap_tls(dovecot):
    conn = dovecot.imaps("user2")
    assert isinstance(conn.sock, ssl.SSLSocket)
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()
    st = dovecot.imap(login=False)
    st.starttls(ssl_context=dovecot.ssl_context())
    st.login("testuser", "pass")
    assert isinstance(st.sock, ssl.SSLSocket)
    st.logout()


def test_append_fetch(dovecot):
    msg = make_message("append test", "line one\nline two\n")
    conn = dovecot.imap()
    typ, _ = conn.append("INBOX", r"(\Seen \Flagged)", None, msg)
    assert typ == "OK"
    conn.select("INBOX")
    typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    assert typ == "OK"
    meta, body = data[0]
    assert b"\\Seen" in meta and b"\\Flagged" in meta
    assert body == crlf(msg)
    assert conn.create("Archive")[0] == "OK"
    assert conn.uid("COPY", "1", "Archive")[0] == "OK"
    assert conn.status("Archive", "(MESSAGES)")[1] == [b'Archive (MESSAGES 1)']
    conn.logout()


def test_pop3_retr_uidl(dovecot):
    msgs = [make_message("pop %d" % i, "body %d\n" % i) for i in range(2)]
    for m in msgs:
        dovecot.lmtp_deliver("testuser", m)
    pop = dovecot.pop3()
    count, _ = pop.stat()
    assert count == 2
    _, uidls, _ = pop.uidl()
    uids = [line.split()[1] for line in uidls]
    assert len(set(uids)) == 2
    _, lines, _ = pop.retr(2)
    parsed = email.message_from_bytes(b"\r\n".join(lines))
    assert parsed["Subject"] == "pop 1"
    pop.quit()
    pops = dovecot.pop3s("testuser")
    assert [l.split()[1] for l in pops.uidl()[1]] == uids
    pops.quit()
    bad = dovecot.pop3(login=False)
    bad.user("testuser")
    with pytest.raises(poplib.error_proto):
        bad.pass_("wrong")
    bad.close()


def test_lmtp_delivery(dovecot):
    msg = make_message("to both", "hello\n")
    res = dovecot.lmtp_deliver(["testuser@example.com", "user2"], msg)
    assert all(code == 250 for code, _ in res.values())
    for user in ("testuser", "user2"):
        conn = dovecot.imap(user)
        conn.select("INBOX", readonly=True)
        typ, data = conn.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"to both" in data[0][1]
        conn.logout()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        dovecot.lmtp_deliver("nosuchuser", msg)


def test_doveadm_fetch(dovecot):
    dovecot.lmtp_deliver("testuser", make_message("doveadm one", "x\n"))
    dovecot.lmtp_deliver("testuser", make_message("doveadm two", "y\n"))
    res = dovecot.doveadm("-f", "flow", "fetch", "-u", "testuser",
                          "uid hdr.subject", "mailbox", "INBOX", "all")
    assert res.returncode == 0, res.stderr
    assert "uid=1 hdr.subject=doveadm one" in res.stdout
    assert "uid=2 hdr.subject=doveadm two" in res.stdout
    # Same through the running doveadm-server unix socket.
    sock = os.path.join(dovecot.base_dir, "doveadm-server")
    res = dovecot.doveadm("-f", "flow", "search", "-u", "testuser",
                          "-S", sock, "mailbox", "INBOX", "all")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    res = dovecot.doveadm("mailbox", "status", "-u", "user2", "messages",
                          "INBOX", check=True)
    assert res.stdout.split() == ["INBOX", "messages=0"]


def test_restart_keeps_mail(dovecot):
    dovecot.lmtp_deliver("testuser", make_message("survives", "z\n"))
    pid = dovecot.master_pid
    dovecot.restart()
    assert dovecot.master_pid != pid
    conn = dovecot.imap()
    assert conn.select("INBOX") == ("OK", [b"1"])
    conn.logout()


@pytest.mark.dovecot_log_allow(r"synthetic harness check")
def test_log_check_detects_errors(dovecot):
    dovecot.check_log_clean()
    mark = dovecot.log_mark()
    with open(dovecot.log_path, "a") as f:
        f.write("Jan 01 00:00:00 imap(x): Error: synthetic harness check\n")
    with pytest.raises(AssertionError, match="synthetic"):
        dovecot.check_log_clean()
    with pytest.raises(AssertionError):
        dovecot.check_log_clean(since=mark)
    dovecot.check_log_clean(allowed_patterns=[r"synthetic"])


@pytest.mark.parametrize("dovecot", [
    "maildir:~/Maildir:LAYOUT=fs",
    {"mail_location": "mbox:~/mail:INBOX=~/mbox-inbox"},
], indirect=True)
def test_parametrized_mail_location(dovecot):
    dovecot.lmtp_deliver("user2", make_message("param", "p\n"))
    conn = dovecot.imap("user2")
    assert conn.select("INBOX")[1] == [b"1"]
    conn.logout()


_shared = []


@pytest.mark.parametrize("n", [1, 2])
def test_module_scoped_instance(dovecot_module, n):
    _shared.append(dovecot_module.root)
    dovecot_module.lmtp_deliver("user3", make_message("shared %d" % n, "s\n"))
    conn = dovecot_module.imap("user3")
    assert conn.select("INBOX")[1] == [str(n).encode()]
    conn.logout()
    assert len(set(_shared)) == 1


def test_lmdb_plugin_loads(dovecot_factory):
    """With the plugin built, loading it must not disturb maildir users."""
    if not dovecot_harness.lmdb_module_available():
        pytest.skip("%s not built" % dovecot_harness.LMDB_PLUGIN_FILE)
    d = dovecot_factory(mail_location="maildir:~/Maildir", mail_plugins=["lmdb"])
    d.lmtp_deliver("testuser", make_message("with plugin", "w\n"))
    conn = d.imap()
    assert conn.select("INBOX")[1] == [b"1"]
    conn.logout()
    assert d.doveadm("mailbox", "list", "-u", "testuser").returncode == 0


def test_module_dir_overrides_system_modules(dovecot_factory, tmp_path):
    """lib*.so in the module dir replace same-named system modules."""
    mod = tmp_path / "mods"
    mod.mkdir()
    os.symlink("/usr/lib/dovecot/modules/lib20_zlib_plugin.so",
               str(mod / "lib20_zlib_plugin.so"))
    d = dovecot_factory(module_dir=str(mod), mail_plugins=["zlib"])
    assert os.readlink(os.path.join(d.plugin_dir, "lib20_zlib_plugin.so")) \
        == str(mod / "lib20_zlib_plugin.so")
    assert os.path.islink(os.path.join(d.plugin_dir, "lib10_quota_plugin.so"))
    assert "$mail_plugins zlib" in open(d.config_path).read()
    conn = d.imap()
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()
