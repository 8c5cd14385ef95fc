#!/usr/bin/python3
"""make bench: lmdb and fts_lmdb against Dovecot's formats and FTS backends.

Every configuration runs in its own private Dovecot on 127.0.0.1 (the
integration tests' harness), loaded with the same messages and measured the
same way, one after the other in one run, so the ratios between columns
mean something even on a busy machine.  The output, and how each figure is
measured, is docs/BENCHMARKS.md.

    python3 bench/run.py [--n 20000] [--corpus DIR|MBOX] [--only a,b]

Files: corpus.py (seeded generator, or CORPUS=DIR/mbox), queries.py (the
SEARCH query set), imapc.py (raw IMAP/LMTP clients), report.py (the
Markdown), profile.py (callgrind of doveadm operations against lmdb),
PROFILING.md (the profiling notes appended to the report).
"""

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)

from dovecot_harness import Dovecot, find_module_dir  # noqa: E402
import corpus as corpusmod  # noqa: E402
import imapc  # noqa: E402
import queries as qmod  # noqa: E402
import report  # noqa: E402

USERS = {"testuser": "pass", "sample": "pass", "app1": "pass",
         "app4": "pass", "lmtpuser": "pass", "h2h1": "pass", "h2h4": "pass"}

# Configurations kept running after their own suite for the interleaved
# head-to-head rounds at the end.
H2H = ("maildir", "sdbox", "mdbox", "lmdb")

SERVICE_LIMITS = """
service imap {
  vsz_limit = 2G
}
service lmtp {
  vsz_limit = 2G
}
service indexer-worker {
  vsz_limit = 2G
}
"""


class Config:
    def __init__(self, name, location, plugins, fts=None, fts_settings="",
                 base_plugins=()):
        self.name = name
        self.location = location
        self.plugins = list(plugins)
        self.fts = fts
        self.fts_settings = fts_settings
        self.base_plugins = list(base_plugins)

    def extra_config(self):
        text = SERVICE_LIMITS
        plugin = ""
        if self.fts:
            plugin += ("  fts = %s\n  fts_autoindex = no\n  fts_enforced = yes\n"
                       % self.fts) + self.fts_settings
        if plugin:
            text += "plugin {\n%s}\n" % plugin
        return text


def all_configs(fts_lmdb_built):
    L = ["lmdb"]
    cfgs = [
        Config("maildir", "maildir:~/Maildir", []),
        Config("sdbox", "sdbox:~/sdbox", []),
        Config("mdbox", "mdbox:~/mdbox", []),
        Config("lmdb", "lmdb:~/lmdb", L),
        Config("maildir+fts-lucene", "maildir:~/Maildir",
               ["fts", "fts_lucene"], fts="lucene"),
        Config("maildir+fts-xapian", "maildir:~/Maildir",
               ["fts", "fts_xapian"], fts="xapian",
               fts_settings="  fts_xapian = partial=3 full=20 verbose=0\n"),
        Config("maildir+fts-squat", "maildir:~/Maildir",
               ["fts", "fts_squat"], fts="squat"),
    ]
    for base, loc, bp in (("maildir", "maildir:~/Maildir", []),
                          ("lmdb", "lmdb:~/lmdb", L)):
        c = Config("%s+fts_lmdb" % base, loc, bp + ["fts", "fts_lmdb"],
                   fts="lmdb", base_plugins=bp)
        c.not_built = not fts_lmdb_built
        cfgs.append(c)
    for c in cfgs:
        if c.fts and not c.base_plugins and c.location.startswith("lmdb"):
            c.base_plugins = L
        if not hasattr(c, "not_built"):
            c.not_built = False
    return cfgs


# ------------------------------------------------------------ helpers

def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def disk_bytes(path, name_filter=None):
    """Allocated bytes (st_blocks) under path, each inode once; only files
    whose name passes name_filter, if given."""
    seen = set()
    total = 0
    for d, dirs, files in os.walk(path):
        for n in (files if name_filter else dirs + files):
            if name_filter and not name_filter(n):
                continue
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def session_pids(master, comm):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                s = f.read()
        except OSError:
            continue
        c = s[s.index("(") + 1:s.rindex(")")]
        fields = s.rsplit(")", 1)[1].split()
        if c == comm and fields[0] != "Z" and int(fields[3]) == master:
            out.append(int(name))
    return out


def proc_mem(pid):
    """{'VmHWM', 'VmRSS', 'RssAnon', 'RssFile', 'RssShmem'} in bytes, or {}.
    VmHWM is the peak RSS; it counts the pages of mapped files (an LMDB
    environment is one) that the process touched, which are page cache
    shared with every other process, not memory of its own."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        return {}
    return out


def vm_hwm(pid):
    """Peak RSS in bytes of pid (VmHWM), or None."""
    return proc_mem(pid).get("VmHWM")


class ImapSession:
    """An IMAP connection whose server process we know (for its VmHWM)."""

    def __init__(self, d, user):
        before = set(session_pids(d.master_pid, "imap"))
        self.c = imapc.Imap(d.host, d.ports["imap"], user, d.users[user])
        self.pid = None
        for _ in range(50):
            new = set(session_pids(d.master_pid, "imap")) - before
            if len(new) == 1:
                self.pid = new.pop()
                break
            time.sleep(0.01)

    def peak_rss(self):
        return vm_hwm(self.pid) if self.pid else None

    def mem(self):
        return proc_mem(self.pid) if self.pid else {}

    def close(self):
        self.c.close()


def median(xs):
    return statistics.median(xs) if xs else None


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.4999)) - 1))
    return s[k]


def to_crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ------------------------------------------------------------ the runner

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.results = collections.OrderedDict()
        self.live = {}
        self.module_dir = find_module_dir()

    # -- corpus
    def prepare_corpus(self):
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o755)
        if self.args.corpus:
            dest = os.path.join(self.work, "corpus-real")
            log("preparing corpus from %s" % self.args.corpus)
            self.meta = corpusmod.load_real(dest, self.args.corpus,
                                            self.args.n_given)
        else:
            dest = os.path.join(self.work, "corpus-%d-s%d" %
                                (self.args.n, self.args.seed))
            log("generating corpus: %d messages, seed %d" %
                (self.args.n, self.args.seed))
            t = time.time()
            self.meta = corpusmod.generate(dest, self.args.n, self.args.seed)
            log("corpus ready in %.1fs: %d messages, %.1f MB" %
                (time.time() - t, self.meta["count"], self.meta["bytes"] / 1e6))
        self.corpus = dest
        self.paths = corpusmod.message_paths(dest)
        self.n = len(self.paths)
        # The sample: the first SAMPLE_N messages, for fts-xapian (which
        # indexes a few messages per second) and like-for-like searches.
        self.sample_n = min(self.n, self.args.sample_n)
        self.sample = os.path.join(self.work, "sample-%d" % self.sample_n)
        if not (os.path.isdir(self.sample) and
                len(os.listdir(os.path.join(self.sample, "cur"))) ==
                self.sample_n and self.meta.get("source") == "generated"):
            shutil.rmtree(self.sample, ignore_errors=True)
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(self.sample, sub))
            for p in self.paths[:self.sample_n]:
                os.link(p, os.path.join(self.sample, "cur",
                                        os.path.basename(p)))
            for d, _, _ in os.walk(self.sample):
                os.chmod(d, 0o755)
        self.sample_bytes = sum(os.path.getsize(p)
                                for p in self.paths[:self.sample_n])
        # APPEND and LMTP use messages from the corpus, as CRLF.
        k = max(self.args.append_n, self.args.lmtp_n, self.args.h2h_append)
        self.crlf = [to_crlf(open(p, "rb").read())
                     for p in self.paths[:min(self.n, k)]]
        if self.meta.get("planted"):
            self.queries = qmod.generated(self.meta["planted"])
        else:
            self.queries = qmod.from_real(self.paths)

    # -- instance
    def instance(self, cfg):
        root = os.path.join(self.work, "inst", cfg.name.replace("+", "-"))
        if os.path.exists(root):
            Dovecot(root).cleanup() if False else shutil.rmtree(root)
        d = Dovecot(root, mail_location=cfg.location,
                    mail_plugins=cfg.plugins, users=USERS,
                    extra_config=cfg.extra_config(),
                    module_dir=self.module_dir)
        d.start()
        return d

    def import_mail(self, d, cfg, user, src):
        ctl = os.path.join(d.root, "importctl-%s" % user)
        os.makedirs(ctl, exist_ok=True)
        os.chown(ctl, d.mail_uid, d.mail_gid)
        args = []
        if cfg.fts:
            # load without the FTS backend (fts-squat crashes in import)
            args = ["-o", "mail_plugins=%s" % " ".join(cfg.base_plugins)]
        t = time.perf_counter()
        r = d.doveadm(*(args + ["import", "-u", user, "-s",
                                "maildir:%s:INDEX=MEMORY:CONTROL=%s" %
                                (src, ctl), "", "all"]), timeout=7200)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError("doveadm import into %s failed (%s): %s" %
                               (user, r.returncode, r.stderr[-800:]))
        shutil.rmtree(ctl, ignore_errors=True)
        return dt

    # -- phases
    def phase_select_status(self, d, res):
        s = ImapSession(d, "testuser")
        dt, _, _ = s.c.timed("SELECT INBOX")
        res["select_first_ms"] = dt * 1000
        s.close()
        sel, stat = [], []
        for _ in range(15):
            s = ImapSession(d, "testuser")
            dt, _, _ = s.c.timed("SELECT INBOX")
            sel.append(dt * 1000)
            s.close()
        s = ImapSession(d, "testuser")
        for _ in range(15):
            dt, _, _ = s.c.timed("STATUS INBOX (MESSAGES UIDNEXT UNSEEN)")
            stat.append(dt * 1000)
        s.close()
        res["select_warm_ms"] = median(sel)
        res["status_ms"] = median(stat)

    def phase_fetch(self, d, res):
        s = ImapSession(d, "testuser")
        s.c.check("SELECT INBOX")
        dt, _, _ = s.c.timed("FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)",
                             keep=False)
        res["fetch_meta_first_s"] = dt
        dt, _, _ = s.c.timed("FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)",
                             keep=False)
        res["fetch_meta_warm_s"] = dt
        dt, _, nbytes = s.c.timed("FETCH 1:* BODY.PEEK[]", keep=False)
        res["fetch_body_first_mbs"] = nbytes / 1e6 / dt
        dt, _, nbytes = s.c.timed("FETCH 1:* BODY.PEEK[]", keep=False)
        res["fetch_body_warm_mbs"] = nbytes / 1e6 / dt
        res["fetch_body_bytes"] = nbytes
        res["rss_fetch"] = s.peak_rss()
        res["mem_fetch"] = s.mem()
        s.close()

    def phase_search(self, d, user, passes, res, key):
        """Run the query set `passes` times (the first pass warms)."""
        s = ImapSession(d, user)
        s.c.check("SELECT INBOX")
        counts = {}
        times = collections.defaultdict(list)
        errors = {}
        for p in range(passes):
            for i, q in enumerate(self.queries):
                try:
                    dt, uids = s.c.search(q.criteria, q.charset)
                except imapc.ImapError as e:
                    errors[i] = str(e)[:200]
                    if "closed" in str(e):
                        raise
                    continue
                if p == 0:
                    counts[i] = len(uids)
                if p > 0 or passes == 1:
                    times[i].append(dt * 1000)
        res[key] = {"counts": counts, "times": dict(times),
                    "errors": errors, "rss": s.peak_rss(), "mem": s.mem()}
        s.close()

    def phase_modify(self, d, res):
        s = ImapSession(d, "testuser")
        un, _ = s.c.check("SELECT INBOX")
        uids = []
        _, un = s.c.search([imapc.Atom("ALL")])
        uids = un
        k = min(1000, len(uids) // 4)
        res["modify_k"] = k
        t = time.perf_counter()
        for u in uids[:k]:
            s.c.check("UID STORE %d +FLAGS (\\Flagged)" % u)
        res["store_msgs"] = k / (time.perf_counter() - t)
        s.c.check("CREATE Copied")
        s.c.check("CREATE Moved")
        dt, _, _ = s.c.timed("UID COPY %s Copied" % imapc.uid_set(uids[k:2 * k]))
        res["copy_ms"] = dt * 1000
        dt, _, _ = s.c.timed("UID MOVE %s Moved" % imapc.uid_set(uids[2 * k:3 * k]))
        res["move_ms"] = dt * 1000
        rest = uids[:2 * k] + uids[3 * k:]
        dele = rest[::10]
        dt, _, _ = s.c.timed("UID STORE %s +FLAGS.SILENT (\\Deleted)" %
                             imapc.uid_set(dele))
        res["expunge_n"] = len(dele)
        dt, _, _ = s.c.timed("EXPUNGE", keep=False)
        res["expunge_ms"] = dt * 1000
        s.close()

    def phase_append(self, d, res):
        msgs = self.crlf[:self.args.append_n]
        s = ImapSession(d, "app1")
        t = time.perf_counter()
        for m in msgs:
            s.c.append("INBOX", m)
        res["append1_msgs"] = len(msgs) / (time.perf_counter() - t)
        s.close()
        conns = [ImapSession(d, "app4") for _ in range(4)]
        # INBOX is created on first use; 4 sessions creating it at once
        # race in Dovecot itself (mdbox answers ALREADYEXISTS).
        conns[0].c.check("STATUS INBOX (MESSAGES)")
        errs = []

        def worker(c, part):
            try:
                for m in part:
                    c.c.append("INBOX", m)
            except Exception as e:      # noqa: BLE001
                errs.append(e)
        threads = [threading.Thread(target=worker, args=(c, msgs[i::4]))
                   for i, c in enumerate(conns)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        res["append4_msgs"] = len(msgs) / (time.perf_counter() - t)
        for c in conns:
            c.close()
        if errs:
            raise errs[0]

    def phase_lmtp(self, d, res):
        msgs = self.crlf[:self.args.lmtp_n]
        lm = imapc.Lmtp(d.host, d.ports["lmtp"])
        t = time.perf_counter()
        for m in msgs:
            lm.deliver("lmtpuser", m)
        res["lmtp_msgs"] = len(msgs) / (time.perf_counter() - t)
        lm.close()

    def fts_index(self, d, user, res, key, limit=None):
        """doveadm index of user's INBOX; killed after `limit` seconds."""
        home = d.home(user)
        before = disk_bytes(home)
        errpath = os.path.join(d.root, "index-%s.err" % user)
        t = time.perf_counter()
        with open(errpath, "wb") as ef:
            p = subprocess.Popen(["/usr/bin/doveadm", "-c", d.config_path,
                                  "index", "-u", user, "INBOX"],
                                 stdout=subprocess.DEVNULL, stderr=ef)
            # wait4 gives the rusage of doveadm itself: its peak RSS
            # (VmHWM).  Poll /proc as well, for the peak of its own
            # (anonymous) memory apart from mapped LMDB/index files.
            peak_anon = 0
            killed = False
            while True:
                wpid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if wpid != 0:
                    break
                if limit and not killed and time.perf_counter() - t > limit:
                    p.kill()
                    killed = True
                peak_anon = max(peak_anon,
                                proc_mem(p.pid).get("RssAnon", 0))
                time.sleep(0.05)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        with open(errpath, "rb") as f:
            err = f.read().decode("utf-8", "replace")
        res[key] = {"seconds": dt, "rc": p.returncode, "killed": killed,
                    "maxrss": ru.ru_maxrss * 1024,
                    "peak_anon": peak_anon,
                    "index_bytes": disk_bytes(home) - before,
                    "stderr": err[-400:]}
        return p.returncode

    # -- per configuration
    def run_format(self, cfg, d, res):
        log("  import %d messages" % self.n)
        dt = self.import_mail(d, cfg, "testuser", self.corpus)
        res["import_msgs"] = self.n / dt
        self.import_mail(d, cfg, "sample", self.sample)
        log("  SELECT / STATUS")
        self.phase_select_status(d, res)
        log("  FETCH")
        self.phase_fetch(d, res)
        res["disk_bytes"] = disk_bytes(d.home("testuser"))
        res["disk_index_bytes"] = disk_bytes(d.home("testuser"),
                                             lambda n: n.startswith("dovecot."))
        if cfg.name in ("maildir", "lmdb"):
            # maildir is the reference for result counts and the no-FTS
            # anchor; lmdb's counts must equal it.  One pass each: a no-FTS
            # body search reads every message (seconds per query at 20k),
            # and the FETCH phase has already warmed the caches.
            log("  SEARCH (%d queries)" % len(self.queries))
            self.phase_search(d, "testuser", 1, res, "search")
            self.phase_search(d, "sample", 3, res, "search_sample")
        log("  STORE / COPY / MOVE / EXPUNGE")
        self.phase_modify(d, res)
        log("  APPEND (%d messages, 1 and 4 clients)" % self.args.append_n)
        self.phase_append(d, res)
        log("  LMTP (%d messages)" % self.args.lmtp_n)
        self.phase_lmtp(d, res)

    def run_fts(self, cfg, d, res):
        if cfg.fts == "squat":
            return self.run_squat(cfg, d, res)
        full = cfg.fts != "xapian"
        if full:
            log("  import %d messages" % self.n)
            self.import_mail(d, cfg, "testuser", self.corpus)
        self.import_mail(d, cfg, "sample", self.sample)
        if full:
            log("  doveadm index (%d messages)" % self.n)
            self.fts_index(d, "testuser", res, "index")
            res["index"]["msgs"] = self.n
            res["index"]["mail_bytes"] = self.meta["bytes"]
        log("  doveadm index sample (%d messages)" % self.sample_n)
        self.fts_index(d, "sample", res, "index_sample",
                       limit=self.args.index_limit)
        res["index_sample"]["msgs"] = self.sample_n
        res["index_sample"]["mail_bytes"] = self.sample_bytes
        if res["index_sample"]["killed"]:
            res["error"] = ("doveadm index of the %d-message sample did not "
                            "finish in %d s; killed" %
                            (self.sample_n, self.args.index_limit))
            return
        # fts_lmdb leaves a freshly built index about twice its compacted
        # size until `doveadm fts optimize`: measure both.
        for user, key in ((("testuser", "index"),) if full else ()) + \
                (("sample", "index_sample"),):
            home = d.home(user)
            before = disk_bytes(home) - res[key]["index_bytes"]
            t = time.perf_counter()
            r = d.doveadm("fts", "optimize", "-u", user, timeout=1800)
            res[key]["optimize_seconds"] = time.perf_counter() - t
            res[key]["optimize_rc"] = r.returncode
            res[key]["optimized_bytes"] = disk_bytes(home) - before
        if full:
            log("  SEARCH")
            self.phase_search(d, "testuser", 4, res, "search")
        log("  SEARCH sample")
        self.phase_search(d, "sample", 4, res, "search_sample")

    def run_squat(self, cfg, d, res):
        self.import_mail(d, cfg, "sample", self.sample)
        notes = []
        try:
            s = ImapSession(d, "sample")
            s.c.check("SELECT INBOX")
            notes.append("SELECT works")
            s.close()
        except (imapc.ImapError, OSError) as e:
            time.sleep(0.3)
            sig = "signal 11" in d.log_text()
            notes.append("crashes on SELECT (%s)" %
                         ("SIGSEGV" if sig else str(e)))
        r = d.doveadm("index", "-u", "sample", "INBOX")
        notes.append("`doveadm index` %s" %
                     ("crashes (SIGSEGV)" if r.returncode == -11 else
                      "exits %s" % r.returncode))
        res["crashed"] = "; ".join(notes)

    def run_config(self, cfg):
        res = collections.OrderedDict(name=cfg.name)
        if cfg.not_built:
            res["not_built"] = True
            log("%s: not built (build/lib21_fts_lmdb_plugin.so missing)" %
                cfg.name)
            return res
        log("%s: starting" % cfg.name)
        t0 = time.time()
        d = self.instance(cfg)
        try:
            if cfg.fts:
                self.run_fts(cfg, d, res)
            else:
                self.run_format(cfg, d, res)
        except Exception as e:      # noqa: BLE001
            res["error"] = "%s: %s" % (type(e).__name__, str(e)[:600])
            log("%s: FAILED %s\n%s" % (cfg.name, e, traceback.format_exc()))
        finally:
            res["seconds"] = time.time() - t0
            if (cfg.name in H2H and "error" not in res and
                    self.args.h2h_rounds > 0):
                self.live[cfg.name] = (cfg, d, res)
            else:
                self.finish_instance(cfg, d, res)
        log("%s: done in %.0fs" % (cfg.name, res["seconds"]))
        return res

    def finish_instance(self, cfg, d, res):
        d.stop()
        allowed = [r"signal 11"] if cfg.fts == "squat" else []
        res["log_problems"] = d.log_problems(allowed)[:10]
        if not self.args.keep:
            d.cleanup()

    # -- interleaved head-to-head
    def h2h_round(self, d, out):
        sel, stat = [], []
        for _ in range(5):
            s = ImapSession(d, "testuser")
            dt, _, _ = s.c.timed("SELECT INBOX")
            sel.append(dt * 1000)
            s.close()
        s = ImapSession(d, "testuser")
        for _ in range(5):
            dt, _, _ = s.c.timed("STATUS INBOX (MESSAGES UIDNEXT UNSEEN)")
            stat.append(dt * 1000)
        s.c.check("SELECT INBOX")
        dt, _, nbytes = s.c.timed("FETCH 1:* BODY.PEEK[]", keep=False)
        s.close()
        out["select_warm_ms"].append(median(sel))
        out["status_ms"].append(median(stat))
        out["fetch_body_warm_mbs"].append(nbytes / 1e6 / dt)
        msgs = self.crlf[:self.args.h2h_append]
        s = ImapSession(d, "h2h1")
        t = time.perf_counter()
        for m in msgs:
            s.c.append("INBOX", m)
        out["append1_msgs"].append(len(msgs) / (time.perf_counter() - t))
        s.close()
        conns = [ImapSession(d, "h2h4") for _ in range(4)]
        conns[0].c.check("STATUS INBOX (MESSAGES)")
        errs = []

        def worker(c, part):
            try:
                for m in part:
                    c.c.append("INBOX", m)
            except Exception as e:      # noqa: BLE001
                errs.append(e)
        threads = [threading.Thread(target=worker, args=(c, msgs[i::4]))
                   for i, c in enumerate(conns)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        out["append4_msgs"].append(len(msgs) / (time.perf_counter() - t))
        for c in conns:
            c.close()
        if errs:
            raise errs[0]

    def run_h2h(self):
        if not self.live:
            return
        names = list(self.live)
        log("head-to-head: %d interleaved rounds over %s" %
            (self.args.h2h_rounds, ", ".join(names)))
        data = {n: collections.defaultdict(list) for n in names}
        for r in range(self.args.h2h_rounds):
            # rotate the order so that no format always goes first
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                cfg, d, res = self.live[n]
                try:
                    self.h2h_round(d, data[n])
                except Exception as e:      # noqa: BLE001
                    res.setdefault("h2h_error", str(e)[:300])
                    log("head-to-head %s: %s" % (n, e))
        for n in names:
            cfg, d, res = self.live[n]
            res["h2h"] = {k: v for k, v in data[n].items()}
            self.finish_instance(cfg, d, res)
        self.live = {}

    def run(self):
        t0 = time.time()
        self.load_start = os.getloadavg()
        self.prepare_corpus()
        fts_built = bool(self.module_dir) and os.path.isfile(
            os.path.join(self.module_dir, "lib21_fts_lmdb_plugin.so"))
        cfgs = all_configs(fts_built)
        if self.args.only:
            want = set(self.args.only.split(","))
            cfgs = [c for c in cfgs if c.name in want]
        self.live = {}
        try:
            for cfg in cfgs:
                self.results[cfg.name] = self.run_config(cfg)
                with open(os.path.join(self.work, "results.partial.json"),
                          "w") as f:
                    json.dump(self.results, f, indent=1, default=str)
            self.run_h2h()
        finally:
            for cfg, d, res in self.live.values():
                self.finish_instance(cfg, d, res)
        self.elapsed = time.time() - t0
        self.load_end = os.getloadavg()
        return self.results


def machine_info():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dv = subprocess.run(["dovecot", "--version"], capture_output=True,
                        text=True).stdout.strip()
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain",
                            "plugin", "include"], capture_output=True,
                           text=True).stdout.strip()
    mods = {}
    mdir = find_module_dir()
    for name in ("lib20_lmdb_plugin.so", "lib21_fts_lmdb_plugin.so"):
        path = os.path.join(mdir or "", name)
        if os.path.exists(path):
            mods[name] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(
                os.path.getmtime(path)))
    return {"nproc": os.cpu_count(), "mem": mem, "cpu": cpu, "dovecot": dv,
            "kernel": os.uname().release, "git": head,
            "git_dirty": len(dirty.splitlines()), "modules": mods}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=None,
                    help="messages to generate (default 20000)")
    ap.add_argument("--corpus", default=os.environ.get("CORPUS") or None,
                    help="folder of message files, or an mbox")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sample-n", type=int, default=400,
                    help="size of the sample mailbox (fts-xapian)")
    ap.add_argument("--append-n", type=int, default=1000)
    ap.add_argument("--lmtp-n", type=int, default=1000)
    ap.add_argument("--index-limit", type=int, default=420,
                    help="seconds allowed for indexing the sample")
    ap.add_argument("--h2h-rounds", type=int, default=5,
                    help="interleaved head-to-head rounds of the formats")
    ap.add_argument("--h2h-append", type=int, default=200,
                    help="messages APPENDed per head-to-head round")
    ap.add_argument("--only", default=None,
                    help="comma-separated configuration names")
    ap.add_argument("--workdir", default="/var/tmp/dovecot-lmdb-bench")
    ap.add_argument("--out", default=os.path.join(REPO, "docs",
                                                  "BENCHMARKS.md"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true",
                    help="keep each instance's directory")
    args = ap.parse_args()
    env_n = os.environ.get("N")
    args.n_given = args.n or (int(env_n) if env_n else None)
    args.n = args.n_given or 20000
    args.command = " ".join(["python3", "bench/run.py"] + sys.argv[1:])
    if os.environ.get("BENCH_COMMAND"):
        args.command = os.environ["BENCH_COMMAND"]
    b = Bench(args)
    b.run()
    info = machine_info()
    data = {"args": {k: v for k, v in vars(args).items()},
            "machine": info, "load_start": b.load_start,
            "load_end": b.load_end, "elapsed": b.elapsed,
            "corpus": {k: v for k, v in b.meta.items() if k != "planted"},
            "sample_n": b.sample_n, "sample_bytes": b.sample_bytes,
            "queries": [(q.cls, q.text) for q in b.queries],
            "results": b.results}
    jpath = args.json or os.path.join(args.workdir, "results.json")
    with open(jpath, "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False, default=str)
    md = report.render(data, os.path.join(HERE, "PROFILING.md"))
    print(md)
    if args.out and args.out != "-":
        with open(args.out, "w") as f:
            f.write(md)
        log("wrote %s (raw figures: %s)" % (args.out, jpath))


if __name__ == "__main__":
    main()
