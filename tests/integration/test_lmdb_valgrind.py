"""Sanitiser pass: the lmdb storage code under valgrind memcheck.

doveadm is a plain process that loads the plugin through mail_plugins, so
running it under valgrind checks the plugin's save, read, copy, expunge,
sync and rebuild paths for invalid reads/writes, uninitialised values and
use-after-free, with a real Dovecot configuration."""

import os
import shutil
import subprocess

import pytest

from dovecot_harness import DOVEADM_BIN, make_message

pytestmark = [
    pytest.mark.skipif(shutil.which("valgrind") is None,
                       reason="valgrind is not installed"),
    # make test-asan: doveadm is an ASan wrapper there
    pytest.mark.skipif(bool(os.environ.get("DOVECOT_TEST_ASAN")),
                       reason="not under make test-asan")]

VALGRIND = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=no",
            "--track-origins=yes", "--num-callers=30"]


def vg_doveadm(dovecot, *args, input=None):
    cmd = VALGRIND + [DOVEADM_BIN, "-c", dovecot.config_path] + list(args)
    res = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=300)
    assert res.returncode != 99, (
        "valgrind found errors in doveadm %s:\n%s" %
        (" ".join(args), res.stderr.decode(errors="replace")))
    assert res.returncode == 0, (
        "doveadm %s failed (%d):\n%s" %
        (" ".join(args), res.returncode, res.stderr.decode(errors="replace")))
    return res.stdout.decode(errors="replace")


def test_storage_paths_under_valgrind(dovecot):
    user = "testuser"
    msgs = [make_message("vg %d" % i, ("line %d\n" % i) * (50 + i * 300))
            for i in range(5)]
    big = make_message("vg big", "x" * 99 + "\n") * 1
    big += b"y" * (200 * 1024) + b"\n"
    for m in msgs + [big]:
        vg_doveadm(dovecot, "save", "-u", user, "-m", "INBOX", input=m)
    vg_doveadm(dovecot, "mailbox", "create", "-u", user, "Archive")
    vg_doveadm(dovecot, "copy", "-u", user, "Archive", "mailbox", "INBOX",
               "uid", "1:3")
    vg_doveadm(dovecot, "move", "-u", user, "Archive", "mailbox", "INBOX",
               "uid", "4")
    vg_doveadm(dovecot, "flags", "add", "-u", user, "\\Seen $Work",
               "mailbox", "*", "all")
    out = vg_doveadm(dovecot, "fetch", "-u", user,
                     "uid guid flags size.physical size.virtual text",
                     "mailbox", "*", "all")
    assert out.count("guid: ") == 2 + 3 + 1 + 3
    assert "$Work" in out
    vg_doveadm(dovecot, "expunge", "-u", user, "mailbox", "Archive",
               "uid", "1")
    vg_doveadm(dovecot, "force-resync", "-u", user, "*")
    out2 = vg_doveadm(dovecot, "fetch", "-u", user, "uid guid flags",
                      "mailbox", "*", "all")
    assert out2.count("guid: ") == 8
    vg_doveadm(dovecot, "mailbox", "rename", "-u", user, "Archive", "Old")
    vg_doveadm(dovecot, "mailbox", "delete", "-u", user, "Old")
    out3 = vg_doveadm(dovecot, "fetch", "-u", user, "uid", "mailbox", "*",
                      "all")
    assert out3.count("uid: ") == 5
