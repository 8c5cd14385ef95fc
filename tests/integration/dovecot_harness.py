"""Start a private, throw-away Dovecot on 127.0.0.1 for integration tests.

Everything an instance needs lives under one root directory: its own
dovecot.conf (no !include of /etc/dovecot), base_dir, state_dir, logs, a
self-signed certificate, a passwd-file and the users' homes.  The system
Dovecot (config and service) is never touched.

Typical use::

    d = Dovecot("/tmp/x", mail_location="maildir:~/Maildir")
    d.start()
    imap = d.imap()                 # logged in as "testuser"
    d.lmtp_deliver("testuser", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    print(d.doveadm("fetch", "-u", "testuser", "uid", "all").stdout)
    d.stop()
    d.check_log_clean()

Which uid the mail processes run as
-----------------------------------
Dovecot refuses mail access as root ("Mail access not allowed for root"),
so when the harness runs as root the users in the passwd-file get the uid and
gid of a dedicated, unprivileged system user: $DOVECOT_TEST_MAIL_USER if set,
else "dovecot-lmdb", which is created with ``useradd --system`` when missing
(falling back to "nobody" if it cannot be created).  first_valid_uid/gid are
lowered to that uid/gid.  The homes are chowned to it, and the instance root
must be traversable (o+x) by it.  When the harness runs as a normal user,
everything (master, login, auth, mail) runs as that user instead.

The plugin modules
------------------
mail_plugin_dir replaces Dovecot's module folder rather than adding to it, so
each instance gets ``<root>/modules`` holding symlinks to everything in
/usr/lib/dovecot/modules plus every lib*.so of the module dir
($DOVECOT_LMDB_MODULE_DIR, $LMDB_PLUGIN_DIR, or the first of <repo>/build,
<repo>/plugin, <repo>/plugin/.libs that holds a lib*lmdb*.so).  Note that
doveadm loads its *own* plugins (modules/doveadm/) only from the compiled-in
/usr/lib/dovecot/modules/doveadm; mail_plugin_dir does not change that.

$DOVECOT_TEST_EXTRA_CONFIG, if set, is appended to every instance's
dovecot.conf after its own extra_config (`make test-asan` uses it to give
every Dovecot process the ASan runtime through import_environment).
"""

import grp
import imaplib
import os
import poplib
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SYSTEM_MODULE_DIR = "/usr/lib/dovecot/modules"
DOVECOT_BIN = os.environ.get("DOVECOT_BIN", "/usr/sbin/dovecot")
DOVEADM_BIN = os.environ.get("DOVEADM_BIN", "/usr/bin/doveadm")
DEFAULT_MAIL_USER = "dovecot-lmdb"
LMDB_PLUGIN_FILE = "lib20_lmdb_plugin.so"

DEFAULT_USERS = {"testuser": "pass", "user2": "pass2", "user3": "pass3"}

# Lines that make a log "dirty".
LOG_PROBLEM_RE = re.compile(r"\b(Error|Panic|Fatal):")


class DovecotError(Exception):
    pass


# ----------------------------------------------------------------- helpers

def free_port(host="127.0.0.1"):
    """A TCP port that is free right now on host (bind to 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_module_dir():
    """The directory holding the built plugin .so files, or None."""
    for var in ("DOVECOT_LMDB_MODULE_DIR", "LMDB_PLUGIN_DIR"):
        val = os.environ.get(var)
        if val:
            return os.path.abspath(val)
    for cand in ("build", "plugin", os.path.join("plugin", ".libs")):
        path = os.path.join(REPO_ROOT, cand)
        if os.path.isdir(path) and any(
                n.startswith("lib") and "lmdb" in n and n.endswith(".so")
                for n in os.listdir(path)):
            return path
    return None


def lmdb_module_available(module_dir=None):
    """True if lib20_lmdb_plugin.so is in module_dir (default: found one)."""
    module_dir = module_dir or find_module_dir()
    return bool(module_dir) and os.path.isfile(
        os.path.join(module_dir, LMDB_PLUGIN_FILE))


def make_message(subject="test", body="hello\n", sender="sender@example.com",
                 to="testuser@example.com", headers=None):
    """A small RFC 5322 message as CRLF bytes."""
    lines = ["From: %s" % sender, "To: %s" % to, "Subject: %s" % subject,
             "Date: Mon, 01 Jan 2024 00:00:00 +0000",
             "Message-ID: <%s@dovecot-lmdb.test>" % os.urandom(8).hex(),
             "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    text = "\r\n".join(lines) + "\r\n\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
    return text.encode("utf-8")


def _pid_alive(pid):
    """True if pid exists and is not a zombie (PID 1 here may not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _session_pids(sid):
    """Live (non-zombie) pids whose session id is sid."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0]=state [1]=ppid [2]=pgrp [3]=session
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


def resolve_mail_user():
    """(name, uid, gid) that the mail processes run as.  See module doc."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_name, pw.pw_uid, pw.pw_gid
    name = os.environ.get("DOVECOT_TEST_MAIL_USER", DEFAULT_MAIL_USER)
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_MAIL_USER:
            raise DovecotError("DOVECOT_TEST_MAIL_USER=%s does not exist" % name)
        res = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
             "--comment", "dovecot-lmdb integration tests", name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            if res.returncode != 0:
                pw = pwd.getpwnam("nobody")
            else:
                raise
    if pw.pw_uid == 0:
        raise DovecotError("mail user %s has uid 0; Dovecot refuses that" % name)
    return pw.pw_name, pw.pw_uid, pw.pw_gid


# ----------------------------------------------------------------- Dovecot

class Dovecot:
    """One private Dovecot instance rooted at ``root``.

    Parameters:
      root          directory for everything (created; made o+x).
      mail_location e.g. 'lmdb:~/lmdb' or 'maildir:~/Maildir'.
      module_dir    dir with built lib*.so (default: find_module_dir()).
      extra_config  text appended to dovecot.conf (later settings win).
      mail_plugins  None = 'lmdb' if lib20_lmdb_plugin.so is in module_dir,
                    else nothing; or an explicit list such as ['lmdb'] or [].
      users         {name: password}; default DEFAULT_USERS.
      ports         {'imap':..,'imaps':..,'pop3':..,'pop3s':..,'lmtp':..};
                    missing ones are chosen free at write time.
      foreground    True: run `dovecot -F` as our child (tests).
                    False: let it daemonize (demo); found again via master.pid.
      stats         False (default): stats_writer_socket_path is emptied, so
                    processes do not talk to the stats service.  Otherwise a
                    process spawned just before stop() logs "Error: conn
                    unix:stats-writer: Timeout waiting for handshake".
    """

    SERVICES = ("imap", "imaps", "pop3", "pop3s", "lmtp")

    def __init__(self, root, mail_location="lmdb:~/lmdb", module_dir=None,
                 extra_config="", mail_plugins=None, users=None, ports=None,
                 foreground=True, host="127.0.0.1", stats=False):
        self.root = os.path.abspath(root)
        self.mail_location = mail_location
        self.module_dir = module_dir if module_dir is not None else find_module_dir()
        self.extra_config = extra_config
        self.users = dict(users or DEFAULT_USERS)
        self.host = host
        self.foreground = foreground
        self.stats = stats
        if mail_plugins is None:
            mail_plugins = ["lmdb"] if self.lmdb_module_available() else []
        self.mail_plugins = list(mail_plugins)
        self.ports = dict(ports or {})
        self.mail_user, self.mail_uid, self.mail_gid = resolve_mail_user()
        self.is_root = os.geteuid() == 0
        # Runs auth, stats, ... (Debian's package creates "dovecot").
        self.internal_user = "dovecot" if self.is_root else self.mail_user

        # Unix socket paths are limited to 107 bytes and base_dir holds
        # names like "token-login/imap-urlauth": a long root gets its
        # base_dir in a short directory under /tmp (root/run links to it).
        self.base_dir = os.path.join(self.root, "run")
        self._own_base_dir = None
        if len(self.base_dir) > 70:
            link = self.base_dir
            if os.path.islink(link):
                self.base_dir = os.readlink(link)
            else:
                os.makedirs(self.root, exist_ok=True)
                self.base_dir = tempfile.mkdtemp(prefix="dovecot-lmdb-run-",
                                                 dir="/tmp")
                os.chmod(self.base_dir, 0o755)
                os.symlink(self.base_dir, link)
            self._own_base_dir = self.base_dir
        self.state_dir = os.path.join(self.root, "state")
        self.config_path = os.path.join(self.root, "dovecot.conf")
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.info_log_path = os.path.join(self.root, "dovecot-info.log")
        self.startup_log_path = os.path.join(self.root, "dovecot-startup.log")
        self.passwd_path = os.path.join(self.root, "passwd")
        self.plugin_dir = os.path.join(self.root, "modules")
        self.ssl_dir = os.path.join(self.root, "ssl")
        self.homes_dir = os.path.join(self.root, "home")
        self.pid_file = os.path.join(self.base_dir, "master.pid")
        self._proc = None
        self._master_pid = None
        self._started_at = 0.0

    # ------------------------------------------------------------ setup

    def lmdb_module_available(self):
        return lmdb_module_available(self.module_dir) if self.module_dir else False

    def home(self, user):
        return os.path.join(self.homes_dir, user)

    def _check_traversable(self):
        if not self.is_root:
            return
        path = self.root
        while True:
            st = os.stat(path)
            if not st.st_mode & 0o001:
                raise DovecotError(
                    "%s is not o+x; mail uid %d cannot reach %s" %
                    (path, self.mail_uid, self.root))
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent

    def _make_ssl(self):
        os.makedirs(self.ssl_dir, exist_ok=True)
        cert = os.path.join(self.ssl_dir, "cert.pem")
        key = os.path.join(self.ssl_dir, "key.pem")
        dh = os.path.join(self.ssl_dir, "dh.pem")
        if not (os.path.exists(cert) and os.path.exists(key)):
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                 "-days", "1", "-subj", "/CN=localhost",
                 "-keyout", key, "-out", cert],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            os.chmod(key, 0o600)
        if not os.path.exists(dh):
            # RFC 7919 group: instant, unlike `openssl dhparam`.
            subprocess.run(
                ["openssl", "genpkey", "-genparam", "-algorithm", "DH",
                 "-pkeyopt", "group:ffdhe2048", "-out", dh],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return cert, key, dh

    def _make_plugin_dir(self):
        if os.path.isdir(self.plugin_dir):
            shutil.rmtree(self.plugin_dir)
        os.makedirs(self.plugin_dir)
        for name in sorted(os.listdir(SYSTEM_MODULE_DIR)):
            os.symlink(os.path.join(SYSTEM_MODULE_DIR, name),
                       os.path.join(self.plugin_dir, name))
        if self.module_dir and os.path.isdir(self.module_dir):
            for name in sorted(os.listdir(self.module_dir)):
                if name.startswith("lib") and name.endswith(".so"):
                    link = os.path.join(self.plugin_dir, name)
                    if os.path.lexists(link):
                        os.unlink(link)
                    os.symlink(os.path.join(self.module_dir, name), link)

    def _make_users(self):
        os.makedirs(self.homes_dir, exist_ok=True)
        lines = []
        for user, password in self.users.items():
            home = self.home(user)
            if not os.path.isdir(home):
                os.makedirs(home, mode=0o700)
                if self.is_root:
                    os.chown(home, self.mail_uid, self.mail_gid)
            lines.append("%s:{PLAIN}%s:%d:%d::%s::\n" %
                         (user, password, self.mail_uid, self.mail_gid, home))
        with open(self.passwd_path, "w") as f:
            f.writelines(lines)
        # Read by the auth process, which runs as default_internal_user.
        os.chmod(self.passwd_path, 0o640)
        if self.is_root:
            os.chown(self.passwd_path, 0, grp.getgrnam(self.internal_user).gr_gid)

    def _pick_ports(self):
        for svc in self.SERVICES:
            if not self.ports.get(svc):
                port = free_port(self.host)
                while port in self.ports.values():
                    port = free_port(self.host)
                self.ports[svc] = port

    def config_text(self, cert, key, dh):
        internal = self.internal_user
        if self.is_root:
            login = "dovenull"
            ids = ("first_valid_uid = %d\nfirst_valid_gid = %d\n" %
                   (min(self.mail_uid, 500), min(self.mail_gid, 500) or 1))
            chroot = ""
        else:
            login = self.mail_user
            ids = ("default_internal_group = %s\n"
                   "first_valid_uid = %d\nfirst_valid_gid = %d\n" %
                   (grp.getgrgid(self.mail_gid).gr_name, self.mail_uid,
                    self.mail_gid))
            # A non-root master cannot chroot anything.
            chroot = "  chroot =\n"
            ids += "".join("service %s {\n  chroot =\n}\n" % svc for svc in
                           ("anvil", "ipc", "imap-urlauth-login"))
        plugins = " ".join(self.mail_plugins)
        p = self.ports
        return """\
# Generated by tests/integration/dovecot_harness.py -- private instance.
instance_name = dovecot-lmdb-test
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log_path}
info_log_path = {info_log_path}
debug_log_path = {info_log_path}

protocols = imap pop3 lmtp
listen = {host}
default_internal_user = {internal}
default_login_user = {login}
{ids}
mail_location = {mail_location}
mail_plugin_dir = {plugin_dir}
mail_plugins = $mail_plugins {plugins}

ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_dh = <{dh}
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_username_format = %Ln
postmaster_address = postmaster@localhost
hostname = localhost
{stats}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
}}

service imap-login {{
{chroot}  inet_listener imap {{
    address = {host}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
{chroot}  inet_listener pop3 {{
    address = {host}
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = {host}
    port = {pop3s}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {lmtp}
  }}
}}
service doveadm {{
  unix_listener doveadm-server {{
    mode = 0600
  }}
}}
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}

{extra}
{env_extra}
""".format(base_dir=self.base_dir, state_dir=self.state_dir,
           log_path=self.log_path, info_log_path=self.info_log_path,
           host=self.host, internal=internal, login=login, ids=ids,
           mail_location=self.mail_location, plugin_dir=self.plugin_dir,
           plugins=plugins, cert=cert, key=key, dh=dh,
           passwd=self.passwd_path, chroot=chroot, extra=self.extra_config,
           env_extra=os.environ.get("DOVECOT_TEST_EXTRA_CONFIG", ""),
           stats="" if self.stats else "stats_writer_socket_path =\n",
           imap=p["imap"], imaps=p["imaps"], pop3=p["pop3"],
           pop3s=p["pop3s"], lmtp=p["lmtp"])

    def write_config(self):
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        self._check_traversable()
        os.makedirs(self.state_dir, exist_ok=True)
        cert, key, dh = self._make_ssl()
        self._make_plugin_dir()
        self._make_users()
        self._pick_ports()
        with open(self.config_path, "w") as f:
            f.write(self.config_text(cert, key, dh))
        for path in (self.log_path, self.info_log_path):
            open(path, "a").close()
        return self.config_path

    # ------------------------------------------------------------ lifecycle

    @property
    def master_pid(self):
        if self._master_pid is not None:
            return self._master_pid
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def is_running(self):
        pid = self.master_pid
        return pid is not None and _pid_alive(pid)

    def start(self, timeout=30):
        if self.is_running():
            raise DovecotError("already running (pid %s)" % self.master_pid)
        self.write_config()
        cmd = [DOVECOT_BIN, "-c", self.config_path]
        if self.foreground:
            cmd.insert(1, "-F")
        with open(self.startup_log_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True)
        if self.foreground:
            self._master_pid = self._proc.pid
        else:
            # The launcher forks the real master and exits.
            rc = self._proc.wait(timeout)
            self._proc = None
            if rc != 0:
                raise DovecotError("dovecot failed to start (rc %d):\n%s" %
                                   (rc, self.startup_log()))
        self._wait_ready(timeout)
        self._started_at = time.monotonic()
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        while pending:
            if self._proc is not None and self._proc.poll() is not None:
                raise DovecotError("dovecot exited with %s during start:\n%s\n%s"
                                   % (self._proc.returncode,
                                      self.startup_log(), self.log_text()))
            for svc, port in list(pending.items()):
                try:
                    socket.create_connection((self.host, port), 0.5).close()
                    del pending[svc]
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                raise DovecotError("ports %s not accepting after %ss:\n%s\n%s"
                                   % (pending, timeout, self.startup_log(),
                                      self.log_text()))
            if pending:
                time.sleep(0.05)
        if self.foreground or self._master_pid is None:
            for _ in range(int(timeout * 20)):
                if self.master_pid is not None:
                    break
                time.sleep(0.05)

    def stop(self, timeout=30):
        """SIGTERM the master by pid; wait for it and its whole session."""
        pid = self.master_pid
        if pid is None:
            return
        # A SIGTERM while freshly spawned children still initialize makes
        # the master wait its full 5 s for them; half a second avoids it.
        time.sleep(max(0.0, self._started_at + 0.5 - time.monotonic()))
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._proc.wait()
            self._proc = None
        else:
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        # The master setsid()s (or was started in its own session): wait for
        # the children it leaves behind (log, stats, ...), kill stragglers.
        while _session_pids(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in _session_pids(pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._master_pid = None
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass

    def cleanup(self):
        """Stop and delete everything of this instance (root, base_dir)."""
        self.stop()
        if self._own_base_dir:
            shutil.rmtree(self._own_base_dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, timeout=30):
        self.stop(timeout)
        return self.start(timeout)

    def reload(self):
        """SIGHUP: re-read dovecot.conf."""
        os.kill(self.master_pid, signal.SIGHUP)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ clients

    def _password(self, user, password):
        return self.users[user] if password is None else password

    @staticmethod
    def ssl_context():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def imap(self, user="testuser", password=None, login=True, timeout=30):
        """imaplib.IMAP4 on the plain port, logged in unless login=False."""
        conn = imaplib.IMAP4(self.host, self.ports["imap"], timeout=timeout)
        if login:
            conn.login(user, self._password(user, password))
        return conn

    def imaps(self, user="testuser", password=None, login=True, timeout=30):
        conn = imaplib.IMAP4_SSL(self.host, self.ports["imaps"],
                                 ssl_context=self.ssl_context(),
                                 timeout=timeout)
        if login:
            conn.login(user, self._password(user, password))
        return conn

    def pop3(self, user="testuser", password=None, login=True, timeout=30):
        conn = poplib.POP3(self.host, self.ports["pop3"], timeout=timeout)
        if login:
            conn.user(user)
            conn.pass_(self._password(user, password))
        return conn

    def pop3s(self, user="testuser", password=None, login=True, timeout=30):
        conn = poplib.POP3_SSL(self.host, self.ports["pop3s"],
                               context=self.ssl_context(), timeout=timeout)
        if login:
            conn.user(user)
            conn.pass_(self._password(user, password))
        return conn

    def lmtp(self, timeout=30):
        conn = smtplib.LMTP(self.host, self.ports["lmtp"], timeout=timeout)
        conn.ehlo_or_helo_if_needed()
        return conn

    def lmtp_deliver(self, rcpt, msg, sender="sender@example.com"):
        """Deliver msg (bytes or str) to one or more recipients over LMTP.

        Returns {rcpt: (code, reply)} with one final reply per recipient
        (LMTP answers DATA once per accepted RCPT).  Raises
        smtplib.SMTPException if a recipient was refused or delivery failed.
        """
        rcpts = [rcpt] if isinstance(rcpt, str) else list(rcpt)
        if isinstance(msg, str):
            msg = msg.encode("utf-8")
        conn = self.lmtp()
        try:
            code, resp = conn.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, resp, sender)
            for r in rcpts:
                code, resp = conn.rcpt(r)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({r: (code, resp)})
            code, resp = conn.data(msg)
            results = {rcpts[0]: (code, resp)}
            for r in rcpts[1:]:
                results[r] = conn.getreply()
            failed = {r: cr for r, cr in results.items() if cr[0] != 250}
            if failed:
                raise smtplib.SMTPRecipientsRefused(failed)
            return results
        finally:
            try:
                conn.quit()
            except smtplib.SMTPException:
                conn.close()

    def doveadm(self, *args, check=False, input=None, timeout=120):
        """Run `doveadm -c dovecot.conf ARGS...`; returns CompletedProcess (text)."""
        return subprocess.run(
            [DOVEADM_BIN, "-c", self.config_path] + [str(a) for a in args],
            input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, timeout=timeout, check=check)

    # ------------------------------------------------------------ logs

    @staticmethod
    def _read(path, since=0):
        try:
            with open(path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self, since=0):
        """The error log (log_path) from byte offset since."""
        return self._read(self.log_path, since)

    def info_log_text(self, since=0):
        return self._read(self.info_log_path, since)

    def startup_log(self):
        return self._read(self.startup_log_path)

    def log_mark(self):
        """Current size of the error log, for log_text(since=...)."""
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_problems(self, allowed_patterns=(), since=0):
        allowed = [re.compile(p) for p in allowed_patterns]
        text = self.log_text(since)
        if since == 0:
            text += self.startup_log()
        return [line for line in text.splitlines()
                if LOG_PROBLEM_RE.search(line)
                and not any(a.search(line) for a in allowed)]

    def check_log_clean(self, allowed_patterns=(), since=0):
        """AssertionError listing every Error:/Panic:/Fatal: line not
        matched by one of allowed_patterns (regexes)."""
        bad = self.log_problems(allowed_patterns, since)
        if bad:
            raise AssertionError("Dovecot log %s has %d problem line(s):\n%s"
                                 % (self.log_path, len(bad), "\n".join(bad)))

    def __repr__(self):
        return "<Dovecot %s %s ports=%s>" % (self.root, self.mail_location,
                                             self.ports)
