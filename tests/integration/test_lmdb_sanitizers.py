"""Self-checks of `make test-asan` (skipped in a normal run).

`make test-asan` builds the modules with ASan and UBSan into build/asan and
runs the whole integration suite against them: every Dovecot process gets
the sanitizer runtimes with LD_PRELOAD through import_environment, an error
aborts the process and writes a report into $DOVECOT_TEST_ASAN, and any
report fails the run.  These tests prove that the setup really catches
something: the modules under test are the instrumented ones, and a mail
plugin with a deliberate use after free (asan-canary-plugin.c) is caught.
(UBSan's reports go to the Dovecot log as Error lines, which fail any
test, and the process aborts.)
"""

import glob
import imaplib
import os
import subprocess
import time

import pytest

import dovecot_harness

REPORTS = os.environ.get("DOVECOT_TEST_ASAN")

pytestmark = pytest.mark.skipif(not REPORTS, reason="only under make test-asan")


def test_modules_are_instrumented(dovecot):
    for name in ("lib20_lmdb_plugin.so", "lib21_fts_lmdb_plugin.so"):
        path = os.path.join(dovecot.module_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                assert b"libasan.so" in f.read(), path
    res = subprocess.run(["doveconf", "-c", dovecot.config_path, "-h",
                          "import_environment"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert "LD_PRELOAD=" in res.stdout and "libasan" in res.stdout, \
        res.stdout


@pytest.mark.dovecot_config(mail_plugins=["lmdb", "asan_canary"])
@pytest.mark.dovecot_log_allow(r"killed with signal 6",
                               r"Internal login failure",
                               r"Login process died")
def test_use_after_free_is_caught(dovecot):
    before = set(glob.glob(os.path.join(REPORTS, "*")))
    with pytest.raises((imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError,
                        EOFError)):
        conn = dovecot.imap()
        conn.select("INBOX")
    new = []
    deadline = time.monotonic() + 20
    while not new and time.monotonic() < deadline:
        new = [p for p in glob.glob(os.path.join(REPORTS, "*"))
               if p not in before]
        time.sleep(0.1)
    assert new, "no ASan report in %s" % REPORTS
    text = ""
    for p in new:
        with open(p, errors="replace") as f:
            text += f.read()
        os.unlink(p)          # expected: not a failure of the run
    assert "heap-use-after-free" in text, text
    assert "asan_canary_plugin_init" in text, text
    deadline = time.monotonic() + 10
    while "killed with signal 6" not in dovecot.log_text() and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert "killed with signal 6" in dovecot.log_text()
