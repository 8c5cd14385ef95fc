"""Run doveadm with this repository's doveadm plugins, without installing them.

doveadm loads its own plugins (lib*_doveadm_*_plugin.so) only from the
compiled-in /usr/lib/dovecot/modules/doveadm; mail_plugin_dir does not
change that.  To test the build tree's doveadm plugins without touching the
system, each doveadm run happens in a private mount namespace
(``unshare -m``, so the mount is invisible outside and vanishes with the
process) where a temporary directory is bind-mounted over that folder.  The
directory holds copies of the system's doveadm plugins (copies, not links:
links into the folder would point into the mount itself) plus links to the
build tree's lib*_doveadm_*.so.

When that is impossible (not root, or no unshare/mount), the plugins are
used from the system folder if `make install` put them there; otherwise the
tests that need them skip.

Usage::

    from doveadm_plugins import doveadm_plugins_runner
    run = doveadm_plugins_runner(d)      # d: a started Dovecot (harness)
    res = run("lmdb", "stats", "-u", "testuser")       # CompletedProcess
    res = run("-f", "json", "lmdb", "stats", "-u", "testuser")
"""

import os
import shutil
import subprocess
import tempfile

import pytest

import dovecot_harness

SYSTEM_DOVEADM_MODULE_DIR = os.path.join(dovecot_harness.SYSTEM_MODULE_DIR,
                                         "doveadm")


def build_doveadm_modules(module_dir=None):
    """The build tree's lib*_doveadm_*_plugin.so files (full paths)."""
    module_dir = module_dir or dovecot_harness.find_module_dir()
    if not module_dir or not os.path.isdir(module_dir):
        return []
    return sorted(os.path.join(module_dir, n) for n in os.listdir(module_dir)
                  if n.startswith("lib") and "_doveadm_" in n
                  and n.endswith(".so"))


_unshare_ok = None


def unshare_works():
    """True if `unshare -m` + `mount --bind` work here (root, capable)."""
    global _unshare_ok
    if _unshare_ok is None:
        _unshare_ok = False
        if os.geteuid() == 0 and shutil.which("unshare") and \
                shutil.which("mount"):
            tmp = tempfile.mkdtemp(prefix="dovecot-lmdb-ns-")
            try:
                res = subprocess.run(
                    ["unshare", "-m", "--propagation", "private", "sh", "-c",
                     'mount --bind "$0" "$1"', tmp, tmp],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    timeout=30)
                _unshare_ok = res.returncode == 0
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return _unshare_ok


def make_module_dir(root, plugins):
    """root/doveadm-modules: copies of the system doveadm plugins, then
    links to plugins (ours win on a name clash)."""
    path = os.path.join(root, "doveadm-modules")
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    os.chmod(path, 0o755)
    if os.path.isdir(SYSTEM_DOVEADM_MODULE_DIR):
        for name in os.listdir(SYSTEM_DOVEADM_MODULE_DIR):
            src = os.path.join(SYSTEM_DOVEADM_MODULE_DIR, name)
            if os.path.isfile(src):
                shutil.copy2(src, os.path.join(path, name))
    for plugin in plugins:
        link = os.path.join(path, os.path.basename(plugin))
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.abspath(plugin), link)
    return path


def doveadm_plugins_runner(d, plugins=None,
                           required=("lib20_doveadm_lmdb_plugin.so",),
                           wrapper=()):
    """A function run(*args, check=False, input=None, timeout=120) that runs
    `doveadm -c <d's config> ARGS` with plugins (default: the build tree's
    doveadm plugins) visible to doveadm.  wrapper (e.g. valgrind and its
    options) goes in front of doveadm.  Skips the test if that can't be
    arranged."""
    plugins = build_doveadm_modules(d.module_dir) if plugins is None \
        else list(plugins)
    names = {os.path.basename(p) for p in plugins}
    missing = [r for r in required if r not in names]
    base = list(wrapper) + [dovecot_harness.DOVEADM_BIN, "-c", d.config_path]

    if not missing and unshare_works():
        mod_dir = make_module_dir(d.root, plugins)
        prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                  'd=$1; shift; mount --bind "$d" "$0" && exec "$@"',
                  SYSTEM_DOVEADM_MODULE_DIR, mod_dir]
    elif all(os.path.exists(os.path.join(SYSTEM_DOVEADM_MODULE_DIR, r))
             for r in required):
        prefix = []      # installed with `make install`
    else:
        pytest.skip("doveadm plugins %s: not built, and neither unshare -m "
                    "(needs root) nor an installed copy is available"
                    % (missing or list(required)))

    def run(*args, check=False, input=None, timeout=120):
        return subprocess.run(prefix + base + [str(a) for a in args],
                              input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              timeout=timeout, check=check)
    return run
