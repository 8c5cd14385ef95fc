#!/usr/bin/python3
"""Callgrind instruction counts of doveadm operations against lmdb.

    python3 bench/profile.py [--n 500] [--tag NAME] [--format lmdb]

Starts a private Dovecot (for the userdb lookup doveadm needs), then runs,
each under valgrind --tool=callgrind, as the mail user:

  save      doveadm import of N generated messages into an empty INBOX
  fetch     doveadm fetch text all         (every body, through the istream)
  fetchmeta doveadm fetch 'hdr.subject imap.bodystructure' all
  copy      doveadm copy of every message into another folder
  status    doveadm mailbox status (open, sync, STATUS) of INBOX
  index     doveadm index INBOX (with --fts: fts_lmdb)
  load      the save operation without valgrind (--ops load,status)

and prints the total instructions of each and the inclusive cost of the
plugin's functions (plugin/lmdb-*.c).  Instruction counts do not depend on
the machine's load, so before/after comparisons are stable.  Output files
stay in <workdir>/prof/<tag>/.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)

from dovecot_harness import Dovecot  # noqa: E402
import corpus as corpusmod  # noqa: E402

OPS = {
    "save": lambda ctl, src: ["import", "-u", "testuser", "-s",
                              "maildir:%s:INDEX=MEMORY:CONTROL=%s" % (src, ctl),
                              "", "all"],
    "fetch": lambda ctl, src: ["fetch", "-u", "testuser", "text", "all"],
    "fetchmeta": lambda ctl, src: ["fetch", "-u", "testuser",
                                   "hdr.subject imap.bodystructure", "all"],
    "copy": lambda ctl, src: ["copy", "-u", "testuser", "Copied", "mailbox",
                              "INBOX", "all"],
    "index": lambda ctl, src: ["index", "-u", "testuser", "INBOX"],
    "status": lambda ctl, src: ["mailbox", "status", "-u", "testuser",
                                "messages uidnext unseen highestmodseq",
                                "INBOX"],
}
# "load" = the save operation without valgrind (to profile the others on a
# big mailbox)


def total(cg):
    with open(cg) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return None


def plugin_functions(cg, limit=12):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", cg],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S*plugin/\S+):(\S+)", line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)),
                         os.path.basename(m.group(3)), m.group(4)))
    return rows[:limit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--format", default="lmdb")
    ap.add_argument("--ops", default="save,fetch,fetchmeta,copy")
    ap.add_argument("--workdir", default="/var/tmp/dovecot-lmdb-bench")
    ap.add_argument("--fts", action="store_true",
                    help="load fts + fts_lmdb (fts = lmdb), for --ops load,index")
    args = ap.parse_args()

    base = os.path.join(args.workdir, "prof")
    os.makedirs(base, exist_ok=True)
    src = os.path.join(base, "corpus-%d-s%d" % (args.n, args.seed))
    corpusmod.generate(src, args.n, args.seed)
    out = os.path.join(base, args.tag)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    os.chmod(out, 0o1777)
    root = os.path.join(base, "inst-%s" % args.tag)
    shutil.rmtree(root, ignore_errors=True)
    loc = {"lmdb": "lmdb:~/lmdb", "sdbox": "sdbox:~/sdbox",
           "maildir": "maildir:~/Maildir", "mdbox": "mdbox:~/mdbox"}[args.format]
    plugins = ["lmdb"] if args.format == "lmdb" else []
    extra = "plugin {\n  lmdb_map_size = 64M\n%s}\n" % (
        "  fts = lmdb\n  fts_autoindex = no\n" if args.fts else "")
    d = Dovecot(root, mail_location=loc,
                mail_plugins=plugins + (["fts", "fts_lmdb"] if args.fts else []),
                users={"testuser": "pass"}, extra_config=extra)
    d.start()
    ctl = os.path.join(root, "ctl")
    os.makedirs(ctl)
    os.chown(ctl, d.mail_uid, d.mail_gid)
    # doveadm drops to the mail user only after valgrind has opened its
    # output file: run it as that user from the start (the config and the
    # TLS key it reads must then be readable).
    for p in os.listdir(d.ssl_dir):
        os.chmod(os.path.join(d.ssl_dir, p), 0o644)
    results = []
    try:
        if "copy" in args.ops:
            d.doveadm("mailbox", "create", "-u", "testuser", "Copied",
                      check=True)
        for op in args.ops.split(","):
            if op == "load":
                d.doveadm(*OPS["save"](ctl, src), check=True, timeout=3600)
                continue
            cgf = os.path.join(out, "%s.%%p.cg" % op)
            cmd = ["runuser", "-u", d.mail_user, "--", "valgrind",
                   "--tool=callgrind", "--trace-children=yes",
                   "--callgrind-out-file=%s" % cgf,
                   "/usr/bin/doveadm", "-c", d.config_path] + OPS[op](ctl, src)
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                print("%s failed: %s" % (op, r.stderr[-1500:]))
                continue
            cgs = [os.path.join(out, n) for n in os.listdir(out)
                   if n.startswith(op + ".") and n.endswith(".cg")]
            cg = max(cgs, key=os.path.getsize)
            results.append((op, total(cg), plugin_functions(cg)))
    finally:
        d.stop()
    print("# callgrind, %s, %d messages, tag %s" % (args.format, args.n, args.tag))
    for op, tot, funcs in results:
        print("\n%-10s %15s instructions" % (op, "{:,}".format(tot or 0)))
        for ir, p, fn, name in funcs:
            print("    %15s %5.1f%%  %s:%s" % ("{:,}".format(ir), p, fn, name))


if __name__ == "__main__":
    main()
