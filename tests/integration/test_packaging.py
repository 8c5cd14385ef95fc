"""The Debian package and `make install`, tested without touching the system.

1. A copy of the source tree (never the shared build/: dh_auto_clean would
   delete it) is built with `dpkg-buildpackage -us -uc -b`.
2. The .deb's metadata and file list are checked, and `dpkg --dry-run -i`
   confirms that it installs on this Debian (its dependencies are met).
3. The .deb is unpacked into a temporary root (`dpkg -x`) and loaded into a
   Dovecot started from a copy of the system's /etc/dovecot: dovecot.conf
   and conf.d exactly as installed, the package's example snippet copied in
   as the README says, the instance's auth (a passwd-file instead of PAM)
   and private settings (ports, base_dir, logs, mail_location,
   mail_plugin_dir pointing at the unpacked modules plus links to the
   system's) in conf.d/99-test-instance.conf.  Mail goes in over LMTP,
   comes out over IMAP, and the package's doveadm plugin reports it.
4. `make install DESTDIR=…` puts every file where dovecot-config says and
   never overwrites an existing conf.d file.

Takes about a minute (the package build dominates).  Needs dpkg-dev and
debhelper (scripts/install-deps.sh test); skipped without them or with
DOVECOT_LMDB_SKIP_PACKAGING=1.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

import dovecot_harness
from dovecot_harness import Dovecot, make_message, REPO_ROOT
from doveadm_plugins import doveadm_plugins_runner

MODULEDIR = "usr/lib/dovecot/modules"
DOCDIR = "usr/share/doc/dovecot-lmdb"
NOT_SOURCE = ("build", ".git", ".pytest_cache", "__pycache__")


def _need_tools():
    if os.environ.get("DOVECOT_LMDB_SKIP_PACKAGING"):
        pytest.skip("DOVECOT_LMDB_SKIP_PACKAGING is set")
    for tool in ("dpkg-buildpackage", "dh", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip("%s not installed (scripts/install-deps.sh test)"
                        % tool)
    if not os.path.isdir(os.path.join(REPO_ROOT, "debian")):
        pytest.skip("no debian/ directory")


def _run(cmd, **kw):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, **kw)
    assert res.returncode == 0, "%s failed:\n%s" % (cmd, res.stdout[-4000:])
    return res.stdout


@pytest.fixture(scope="module")
def workdir():
    path = tempfile.mkdtemp(prefix="dovecot-lmdb-pkg-")
    os.chmod(path, 0o755)
    yield path
    if not os.environ.get("DOVECOT_TEST_KEEP"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def built(workdir):
    """(path of the .deb, path of the built source copy)"""
    _need_tools()
    src = os.path.join(workdir, "dovecot-lmdb")
    shutil.copytree(REPO_ROOT, src, symlinks=True,
                    ignore=shutil.ignore_patterns(*NOT_SOURCE))
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck noddebs parallel=%d"
               % (os.cpu_count() or 2))
    _run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
         timeout=900)
    debs = [n for n in os.listdir(workdir)
            if n.startswith("dovecot-lmdb_") and n.endswith(".deb")]
    assert len(debs) == 1, os.listdir(workdir)
    return os.path.join(workdir, debs[0]), src


def test_deb_contents_and_dependencies(built):
    deb, _ = built
    info = _run(["dpkg-deb", "-f", deb, "Package", "Depends", "Architecture"])
    with open("/usr/share/dovecot/dovecot-abi") as f:
        abi = f.read().strip()
    assert "dovecot-abi-%s" % abi in info, info
    files = {line.split()[-1].lstrip(".")
             for line in _run(["dpkg-deb", "-c", deb]).splitlines()}
    for want in ("/%s/lib20_lmdb_plugin.so" % MODULEDIR,
                 "/%s/doveadm/lib20_doveadm_lmdb_plugin.so" % MODULEDIR,
                 "/%s/examples/90-lmdb.conf" % DOCDIR):
        assert want in files, sorted(files)
    # nothing in /etc: enabling is the admin's step (README)
    assert not [f for f in files if f.startswith("/etc/")], sorted(files)
    # installable here: every dependency is satisfied
    _run(["dpkg", "--dry-run", "-i", deb])


class SystemLayoutDovecot(Dovecot):
    """A harness instance whose config is a copy of /etc/dovecot, with the
    package's example snippet and the instance's own settings added."""

    def __init__(self, root, snippet, **kw):
        super().__init__(root, **kw)
        self.snippet = snippet

    def write_config(self):
        own = super().write_config()
        etc = os.path.join(self.root, "etc", "dovecot")
        if os.path.isdir(etc):
            shutil.rmtree(etc)
        shutil.copytree("/etc/dovecot", etc, symlinks=True)
        # the copy is relocated: its paths into /etc/dovecot point into
        # the copy, whose private/ gets the instance's certificate
        for base, _, files in os.walk(etc):
            for name in files:
                path = os.path.join(base, name)
                with open(path, errors="surrogateescape") as f:
                    text = f.read()
                text = text.replace("/etc/dovecot/", etc + "/")
                if name == "10-auth.conf":
                    # the admin's choice of auth: a passwd-file, not PAM
                    text = text.replace("\n!include auth-system.conf.ext",
                                        "\n#!include auth-system.conf.ext")
                with open(path, "w", errors="surrogateescape") as f:
                    f.write(text)
        os.makedirs(os.path.join(etc, "private"), exist_ok=True)
        for src, dst in (("cert.pem", "dovecot.pem"),
                         ("key.pem", "dovecot.key")):
            shutil.copy(os.path.join(self.ssl_dir, src),
                        os.path.join(etc, "private", dst))
        # README: cp /usr/share/doc/dovecot-lmdb/examples/90-lmdb.conf ...
        shutil.copy(self.snippet, os.path.join(etc, "conf.d"))
        shutil.copy(own, os.path.join(etc, "conf.d",
                                      "99-test-instance.conf"))
        self.config_path = os.path.join(etc, "dovecot.conf")
        return self.config_path


def test_deb_loads_into_dovecot_from_system_layout(built, workdir):
    deb, _ = built
    root = os.path.join(workdir, "root")
    _run(["dpkg", "-x", deb, root])
    modules = os.path.join(root, MODULEDIR)
    d = SystemLayoutDovecot(
        os.path.join(workdir, "instance"),
        snippet=os.path.join(root, DOCDIR, "examples", "90-lmdb.conf"),
        module_dir=modules, mail_location="lmdb:~/lmdb",
        mail_plugins=[])     # only the package's snippet enables lmdb
    try:
        d.start()
        conf = _run(["doveconf", "-c", d.config_path, "-h", "mail_plugins"])
        assert "lmdb" in conf.split(), conf
        msg = make_message("packaged", "delivered through the .deb\n")
        d.lmtp_deliver("testuser", msg)
        imap = d.imap()
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1].endswith(msg)
        imap.logout()
        assert os.path.isfile(os.path.join(d.home("testuser"), "lmdb",
                                           "mail.lmdb", "data.mdb"))
        run = doveadm_plugins_runner(d, plugins=[os.path.join(
            modules, "doveadm", "lib20_doveadm_lmdb_plugin.so")])
        res = run("-f", "tab", "lmdb", "stats", "-u", "testuser")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[1].startswith("user\t\t\t1\t1\t")
    finally:
        d.stop()
    d.check_log_clean()
    d.cleanup()


def test_make_install_destdir_keeps_admin_conf(built, workdir):
    _, src = built
    dest = os.path.join(workdir, "destdir")
    out = _run(["make", "-C", src, "install", "DESTDIR=" + dest])
    conf = os.path.join(dest, "etc/dovecot/conf.d/90-lmdb.conf")
    for path in ("%s/lib20_lmdb_plugin.so" % MODULEDIR,
                 "%s/doveadm/lib20_doveadm_lmdb_plugin.so" % MODULEDIR,
                 "%s/examples/90-lmdb.conf" % DOCDIR,
                 "etc/dovecot/conf.d/90-lmdb.conf"):
        assert os.path.isfile(os.path.join(dest, path)), (path, out)
    with open(conf, "a") as f:
        f.write("# the admin's edit\n")
    out = _run(["make", "-C", src, "install", "DESTDIR=" + dest])
    assert "kept existing" in out
    with open(conf) as f:
        assert f.read().endswith("# the admin's edit\n")
    # the modules went where dovecot-config says
    moduledir = _run(["sh", "-c", ". /usr/lib/dovecot/dovecot-config && "
                      "echo $dovecot_moduledir"]).strip()
    assert os.path.isfile(os.path.join(dest + moduledir,
                                       "lib20_lmdb_plugin.so"))
