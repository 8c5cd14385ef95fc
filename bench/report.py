"""Render the benchmark results (bench/run.py's JSON) as docs/BENCHMARKS.md."""

import os
import re
import time

from queries import BODY_CLASSES, CLASSES

FORMATS = ["maildir", "sdbox", "mdbox", "lmdb"]
FTS_ENGINES = ["maildir+fts-lucene", "maildir+fts-xapian", "maildir+fts-squat",
               "maildir+fts_lmdb", "lmdb+fts_lmdb"]
FTS_LMDB = ["maildir+fts_lmdb", "lmdb+fts_lmdb"]


def f(v, nd=None):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if nd is None:
        a = abs(v)
        nd = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 0.1 else 3
    s = "{:,.{}f}".format(v, nd)
    return s


def mb(v):
    return None if v is None else v / 1e6


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.4999)) - 1))
    return s[k]


BODY_RE = re.compile(r'(^|[\s(])(BODY|TEXT) "')


def is_body_query(text):
    return bool(BODY_RE.search(text))


def class_times(search, queries, cls, body_only=False):
    out = []
    if not search:
        return out
    for i, (c, qt) in enumerate(queries):
        if body_only and not is_body_query(qt):
            continue
        if c == cls:
            out.extend(search["times"].get(str(i), search["times"].get(i, [])))
    return out


def counts_of(search):
    if not search:
        return {}
    return {int(k): v for k, v in search["counts"].items()}


def status(r):
    """Why a configuration has no figures, or None."""
    if r is None:
        return "not run"
    if r.get("not_built"):
        return "not built"
    if r.get("crashed"):
        return "crashes"
    if r.get("error"):
        return "failed"
    return None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# Why a target can be missed, and what to do next: the causes are
# structural (measured with callgrind and strace, see bench/PROFILING.md),
# so they hold for any run that misses the target.
MISSED = [
    ("100× faster",
     "Keys made of common trigrams (a frequent word, an infix, the NOT "
     "operand) leave thousands of candidates, and each one is verified by "
     "decompressing and scanning its stored text: the time follows the "
     "number of matches, not the index. Next: skip verification when the "
     "postings prove the match (keys of 3 characters or fewer, or "
     "position-aware postings) and verify from a cheaper store than one "
     "decompression per message."),
    ("faster than fts-xapian",
     "Same cause as above for frequent keys; fts-xapian answers from term "
     "lists without verifying (and so differs from Dovecot's search on the "
     "queries listed above). Next: as above."),
    ("zero mismatches",
     "See the mismatch list above: each one is a semantic difference from "
     "Dovecot's own search to fix in fts_lmdb."),
    ("index build",
     "See the fts_lmdb indexing profile below: trigram extraction, the "
     "batch flush and sorting the batch lead; on lmdb the SHA-256 check of "
     "every body read adds about a tenth. The fts-lucene anchor itself "
     "moves a lot with this machine's load."),
    ("index ≤ 30%",
     "The index keeps each message's normalized text (compressed) for "
     "verification besides the trigram postings of the body and header "
     "spaces. Next: measure the split, and verify against the mail itself "
     "(or a shared text store) instead of a second copy."),
    ("indexer peak RSS",
     "VmHWM counts every page of the mapped LMDB environments that doveadm "
     "touched (the FTS index, and on lmdb the mail too): page cache, not "
     "the indexer's own memory. Its own memory (RssAnon) is the batch of "
     "postings held before a commit. Next: cap the batch by bytes, not by "
     "messages."),
    ("APPEND 1 client",
     "One fsync'd LMDB commit per APPEND, as sdbox fsyncs one file; on this "
     "shared machine the two trade places from run to run."),
    ("APPEND 4 clients",
     "Every APPEND commits its own LMDB write transaction with fsync, and "
     "LMDB has a single writer, so 4 clients queue one behind the other; "
     "sdbox fsyncs 4 files at once. Next: group commit (one write "
     "transaction for the APPENDs that are waiting)."),
    ("FETCH BODY[]",
     "Since c9a0bd9 every body of up to 1 MiB is copied and checked against "
     "its SHA-256 when its stream opens (callgrind: fetch of 500 messages "
     "40 M → 191 M instructions, 136 M of them SHA-256), on top of one "
     "short read transaction per 64 KiB chunk and two when a body opens. "
     "Next: check small bodies at their last byte, as large ones already "
     "are, and read the message and body records in one transaction."),
    ("SELECT",
     "Open and sync run the same instructions as sdbox (callgrind); a new "
     "process also opens the LMDB environment (0.05–0.08 ms) and faults in "
     "its pages. The rest is within this machine's noise."),
    ("STATUS",
     "Same code cost as sdbox in callgrind; the difference is within this "
     "machine's noise (see the ranges of the interleaved rounds)."),
    ("bytes on disk",
     "No duplicates in this corpus for dedup to remove, and LMDB rounds "
     "each body to 4 KiB overflow pages as maildir rounds files to blocks. "
     "Next: compress bodies."),
]


def render(data, profiling_path=None):
    R = data["results"]
    Q = data["queries"]
    m = data["machine"]
    c = data["corpus"]
    out = []
    w = out.append
    w("# Benchmarks: lmdb and fts_lmdb against Dovecot's formats and FTS backends\n")
    w("Written by `make bench` (bench/run.py) on %s. Every figure below comes "
      "from one run, with every configuration measured one after the other "
      "on the same machine and the same messages; read them as ratios "
      "between columns, not as absolute numbers.\n" %
      time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    w("- **Command:** `%s`" % data["args"]["command"])
    w("- **Machine:** %s cores (%s), %.1f GiB memory, load average %s at the "
      "start and %s at the end; %s, Linux %s. Other work ran on the machine "
      "during the run." %
      (m["nproc"], m["cpu"] or "?", m["mem"] / 2**30,
       "/".join("%.2f" % x for x in data["load_start"]),
       "/".join("%.2f" % x for x in data["load_end"]),
       m["dovecot"] and "Dovecot " + m["dovecot"], m["kernel"]))
    src = ("generated, seed %s (content mix of shared/docs/baseline.md)" %
           c.get("seed") if c.get("source") == "generated" else c.get("source"))
    w("- **Corpus:** %s: %s messages, %.1f MB; message size median %.1f KB, "
      "p99 %.0f KB, max %.2f MB. Sample mailbox: the first %d messages "
      "(%.1f MB)." %
      (src, f(c["count"], 0), c["bytes"] / 1e6, c["median"] / 1e3,
       c["p99"] / 1e3, c["max"] / 1e6, data["sample_n"],
       data["sample_bytes"] / 1e6))
    if m.get("git"):
        w("- **Code:** commit %s%s; modules built %s." % (
            m["git"], " plus %d uncommitted file(s) under plugin/ and "
            "include/" % m["git_dirty"] if m.get("git_dirty") else "",
            ", ".join("%s at %s" % kv for kv in sorted(m["modules"].items()))))
    w("- **Run time:** %.1f minutes end to end.\n" % (data["elapsed"] / 60))

    # ------------------------------------------------------------ formats
    w("## Mailbox formats (no FTS), %s messages in INBOX\n" % f(c["count"], 0))
    cols = [x for x in FORMATS if x in R]
    hdr = "| metric | " + " | ".join(cols) + " | lmdb ÷ sdbox | lmdb ÷ maildir | better |"
    w(hdr)
    w("|---" * (len(cols) + 4) + "|")

    def g(name, key):
        r = R.get(name)
        if not r or status(r):
            return None
        return r.get(key)

    def gsearch(name, cls_list, p=50):
        r = R.get(name)
        if not r or status(r) or not r.get("search"):
            return None
        xs = []
        for cls in cls_list:
            xs.extend(class_times(r["search"], Q, cls))
        return pct(xs, p)

    rows = [
        ("bulk load (`doveadm import`) msg/s", "import_msgs", "higher"),
        ("APPEND msg/s, 1 client", "append1_msgs", "higher"),
        ("APPEND msg/s, 4 concurrent clients", "append4_msgs", "higher"),
        ("LMTP delivery msg/s (1 connection, pipelined)", "lmtp_msgs", "higher"),
        ("SELECT ms, first after load", "select_first_ms", "lower"),
        ("SELECT ms, warm (median of 15)", "select_warm_ms", "lower"),
        ("STATUS ms (median of 15)", "status_ms", "lower"),
        ("FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE) s, first", "fetch_meta_first_s", "lower"),
        ("FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE) s, warm", "fetch_meta_warm_s", "lower"),
        ("FETCH 1:* BODY[] MB/s, first", "fetch_body_first_mbs", "higher"),
        ("FETCH 1:* BODY[] MB/s, warm", "fetch_body_warm_mbs", "higher"),
        ("STORE msg/s (one message per command, K messages)", "store_msgs", "higher"),
        ("COPY of K messages, ms (one UID COPY)", "copy_ms", "lower"),
        ("MOVE of K messages, ms (one UID MOVE)", "move_ms", "lower"),
        ("EXPUNGE of 10% of the mailbox, ms", "expunge_ms", "lower"),
    ]
    for label, key, better in rows:
        vals = [g(x, key) for x in cols]
        w("| %s | %s | %s | %s | %s |" % (
            label, " | ".join(f(v) for v in vals),
            f(ratio(g("lmdb", key), g("sdbox", key)), 2),
            f(ratio(g("lmdb", key), g("maildir", key)), 2), better))
    # disk
    cb = c["bytes"]
    vals = [g(x, "disk_bytes") for x in cols]
    w("| on-disk bytes per stored byte (mail + indexes) | %s | %s | %s | lower |" % (
        " | ".join(f(v / cb if v else None, 3) for v in vals),
        f(ratio(g("lmdb", "disk_bytes"), g("sdbox", "disk_bytes")), 2),
        f(ratio(g("lmdb", "disk_bytes"), g("maildir", "disk_bytes")), 2)))
    w("| on-disk MB (mail + indexes) | %s | | | lower |" %
      " | ".join(f(mb(v)) for v in vals))
    w("| of which Dovecot index files (dovecot.*) MB | %s | | | lower |" %
      " | ".join(f(mb(g(x, "disk_index_bytes"))) for x in cols))
    for label, key in (("imap peak RSS MB, FETCH phase", "rss_fetch"),):
        vals = [g(x, key) for x in cols]
        w("| %s | %s | %s | %s | lower |" % (
            label, " | ".join(f(mb(v)) for v in vals),
            f(ratio(g("lmdb", key), g("sdbox", key)), 2),
            f(ratio(g("lmdb", key), g("maildir", key)), 2)))
    vals = [(g(x, "mem_fetch") or {}).get("RssAnon") for x in cols]
    w("| imap own memory MB at the end of the FETCH phase (RssAnon) | %s | %s | %s | lower |" % (
        " | ".join(f(mb(v)) for v in vals),
        f(ratio(vals[cols.index("lmdb")] if "lmdb" in cols else None,
                vals[cols.index("sdbox")] if "sdbox" in cols else None), 2),
        f(ratio(vals[cols.index("lmdb")] if "lmdb" in cols else None,
                vals[cols.index("maildir")] if "maildir" in cols else None), 2)))
    vals = [(R[x].get("search") or {}).get("rss") if not status(R[x]) else None
            for x in cols]
    w("| imap peak RSS MB, SEARCH phase | %s | %s | %s | lower |" % (
        " | ".join(f(mb(v)) for v in vals),
        f(ratio(vals[cols.index("lmdb")] if "lmdb" in cols else None,
                vals[cols.index("sdbox")] if "sdbox" in cols else None), 2),
        f(ratio(vals[cols.index("lmdb")] if "lmdb" in cols else None,
                vals[cols.index("maildir")] if "maildir" in cols else None), 2)))
    for label, cl in (("SEARCH BODY/TEXT p50 ms (no FTS)", BODY_CLASSES),
                      ("SEARCH header keys p50 ms (no FTS)",
                       ["FROM address part", "SUBJECT", "HEADER"])):
        vals = [gsearch(x, cl) for x in cols]
        w("| %s | %s | %s | %s | lower |" % (
            label, " | ".join(f(v) for v in vals),
            f(ratio(gsearch("lmdb", cl), gsearch("sdbox", cl)), 2),
            f(ratio(gsearch("lmdb", cl), gsearch("maildir", cl)), 2)))
    k = g("lmdb", "modify_k") or g("maildir", "modify_k")
    w("\nK = %s. Ratios are lmdb's figure divided by the anchor's; the last "
      "column says which direction is better. Peak RSS (VmHWM) counts the "
      "pages of mapped files that the process touched: for lmdb that is "
      "the LMDB environment, page cache shared with every process and "
      "the kernel, so FETCH of the whole mailbox shows the whole mailbox "
      "there; RssAnon is the process's own memory.\n" % k)
    for x in cols:
        st = status(R[x])
        if st:
            w("- **%s:** %s. %s" % (x, st, R[x].get("error", "")))

    # ------------------------------------------------------------ h2h
    h2h_cols = [x for x in cols if (R[x].get("h2h") or {}).get("select_warm_ms")]
    H2H_ROWS = [("APPEND msg/s, 1 client", "append1_msgs", "higher"),
                ("APPEND msg/s, 4 concurrent clients", "append4_msgs", "higher"),
                ("SELECT ms, warm (new connection)", "select_warm_ms", "lower"),
                ("STATUS ms", "status_ms", "lower"),
                ("FETCH 1:* BODY[] MB/s, warm", "fetch_body_warm_mbs", "higher")]

    def hmed(name, key):
        xs = ((R.get(name) or {}).get("h2h") or {}).get(key) or []
        return pct(xs, 50) if xs else None

    if h2h_cols:
        nr = len(R[h2h_cols[0]]["h2h"]["select_warm_ms"])
        w("### Head-to-head, interleaved\n")
        w("The table above measures one configuration after the other, minutes "
          "apart, and this machine's load drifts in between. So after every "
          "configuration has run, the four format instances (still running, "
          "with their INBOX after the EXPUNGE above) are measured again in %d "
          "interleaved rounds: each round runs every format once, in a rotating "
          "order (5 SELECTs on new connections, 5 STATUS, FETCH 1:* BODY[], "
          "%s APPENDs with 1 client and again with 4). Median of the rounds, "
          "[lowest – highest] round. The lmdb-vs-sdbox targets are judged on "
          "these.\n" % (nr, data["args"].get("h2h_append", 200)))
        w("| metric | " + " | ".join(h2h_cols) + " | lmdb ÷ sdbox | lmdb ÷ maildir | better |")
        w("|---" * (len(h2h_cols) + 4) + "|")
        for label, key, better in H2H_ROWS:
            cells = []
            for x in h2h_cols:
                xs = R[x]["h2h"].get(key) or []
                cells.append("%s [%s – %s]" % (f(pct(xs, 50)), f(min(xs)), f(max(xs)))
                             if xs else "–")
            w("| %s | %s | %s | %s | %s |" % (
                label, " | ".join(cells),
                f(ratio(hmed("lmdb", key), hmed("sdbox", key)), 2),
                f(ratio(hmed("lmdb", key), hmed("maildir", key)), 2), better))
        w("")

    # ------------------------------------------------------------ FTS
    eng = [x for x in FTS_ENGINES if x in R]
    w("\n## FTS backends\n")
    w("Each engine indexes the same maildir (lmdb+fts_lmdb: the same mail in "
      "lmdb) with `doveadm index`, run directly (not through the indexer "
      "service), then compacts it with `doveadm fts optimize`. fts-xapian indexes only a few messages a second here, so it "
      "gets only the sample mailbox (the first %d messages); every engine "
      "indexes and searches the sample as well, for a like-for-like "
      "comparison.\n" % data["sample_n"])
    w("| metric | " + " | ".join(eng) + " |")
    w("|---" * (len(eng) + 1) + "|")

    def fi(name, key, sub):
        r = R.get(name)
        if not r:
            return "not run"
        st = status(r)
        if st:
            return st
        ix = r.get(key)
        if not ix:
            return "–"
        if sub == "msgs":
            return f(ix["msgs"] / ix["seconds"])
        if sub == "mbs":
            return f(ix["mail_bytes"] / 1e6 / ix["seconds"])
        if sub == "s":
            return f(ix["seconds"])
        if sub == "ratio":
            return "%s%%" % f(100.0 * ix["index_bytes"] / ix["mail_bytes"], 1)
        if sub == "opt":
            if ix.get("optimized_bytes") is None:
                return "–"
            if ix.get("optimize_rc"):
                return "optimize failed (%s)" % ix["optimize_rc"]
            return "%s%% (%s s)" % (f(100.0 * ix["optimized_bytes"] /
                                      ix["mail_bytes"], 1),
                                    f(ix["optimize_seconds"]))
        if sub == "rss":
            return f(ix["maxrss"] / 1e6)
        if sub == "anon":
            return f(mb(ix.get("peak_anon")))
        return "?"

    for label, key, sub in (
            ("`doveadm index` msg/s, INBOX", "index", "msgs"),
            ("`doveadm index` MB/s, INBOX", "index", "mbs"),
            ("`doveadm index` s, INBOX", "index", "s"),
            ("index bytes ÷ mail bytes, INBOX", "index", "ratio"),
            ("… after `doveadm fts optimize` (its time)", "index", "opt"),
            ("indexer (doveadm index) peak RSS MB (VmHWM), INBOX", "index", "rss"),
            ("indexer peak own memory MB (RssAnon, polled), INBOX", "index", "anon"),
            ("`doveadm index` msg/s, sample", "index_sample", "msgs"),
            ("index bytes ÷ mail bytes, sample", "index_sample", "ratio"),
            ("… after `doveadm fts optimize`, sample", "index_sample", "opt"),
            ("indexer peak RSS MB, sample", "index_sample", "rss")):
        w("| %s | %s |" % (label, " | ".join(fi(x, key, sub) for x in eng)))
    vals = []
    for x in eng:
        r = R[x]
        st = status(r)
        vals.append(st or f(mb((r.get("search") or r.get("search_sample") or {}).get("rss"))))
    w("| imap peak RSS MB (VmHWM), SEARCH phase | %s |" % " | ".join(vals))
    vals = []
    for x in eng:
        r = R[x]
        st = status(r)
        vals.append(st or f(mb(((r.get("search") or r.get("search_sample") or {}).get("mem") or {}).get("RssAnon"))))
    w("| imap own memory MB at the end of the SEARCH phase (RssAnon) | %s |" % " | ".join(vals))
    for x in eng:
        if R[x].get("crashed"):
            w("\n- **%s:** %s." % (x, R[x]["crashed"]))
        elif status(R[x]) == "not built":
            w("\n- **%s:** not built: `build/lib21_fts_lmdb_plugin.so` does "
              "not exist yet, so this column has no figures." % x)
        elif status(R[x]):
            w("\n- **%s:** %s" % (x, R[x].get("error")))

    # ------------------------------------------------------------ latency
    ref_name = next((x for x in FORMATS if x in R and not status(R[x])
                     and R[x].get("search")), None)
    for mbox, key, n in (("INBOX (%s messages)" % f(c["count"], 0), "search",
                          c["count"]),
                         ("sample (%d messages)" % data["sample_n"],
                          "search_sample", data["sample_n"])):
        w("\n## SEARCH latency per query class, %s\n" % mbox)
        cols2 = [x for x in FORMATS if x in R] + eng
        cols2 = [x for x in cols2 if not status(R[x]) and R[x].get(key)]
        if not cols2:
            w("(no figures)")
            continue
        w("p50 / p95 in ms over every query of the class and every timed "
          "pass. FTS engines: the first pass warms and is not timed, then "
          "3 timed passes. No-FTS on the big INBOX: one pass, timed, after the "
          "FETCH phase has warmed the caches (each query reads every "
          "message; sdbox and mdbox are not searched). Speed-up = no-FTS "
          "(%s) p50 ÷ the engine's p50.\n" % ref_name)
        w("| class | " + " | ".join(cols2) + " |")
        w("|---" * (len(cols2) + 1) + "|")
        for cls in CLASSES:
            cells = []
            base = pct(class_times(R[ref_name].get(key), Q, cls), 50) \
                if ref_name else None
            for x in cols2:
                ts = class_times(R[x][key], Q, cls)
                p50, p95 = pct(ts, 50), pct(ts, 95)
                cell = "%s / %s" % (f(p50), f(p95))
                if R[x] is not R.get(ref_name) and base and p50:
                    cell += " (%s×)" % f(base / p50, 0 if base / p50 >= 10 else 1)
                cells.append(cell)
            w("| %s | %s |" % (cls, " | ".join(cells)))

    # ------------------------------------------------------------ mismatches
    w("\n## Result counts against the no-FTS search\n")
    if ref_name is None:
        w("No reference: no format without FTS ran SEARCH in this run.\n")
    w("The reference is %s without FTS on the same messages. A query counts as "
      "a mismatch when its result count differs (or it fails).\n" % ref_name)
    # configurations that searched (or crashed or were not built: "·")
    others = [x for x in (FORMATS + FTS_ENGINES) if x in R and x != ref_name
              and (status(R[x]) or R[x].get("search") or
                   R[x].get("search_sample"))]
    w("| query class | query | reference | " + " | ".join(others) + " |")
    w("|---" * (len(others) + 3) + "|")
    mism = {x: [] for x in others}
    for key, label in ((("search", "INBOX"), ("search_sample", "sample"))
                       if ref_name else ()):
        ref = counts_of(R[ref_name].get(key))
        for i, (cls, qt) in enumerate(Q):
            cells = []
            for x in others:
                r = R[x]
                if status(r) or not r.get(key):
                    cells.append("·")
                    continue
                cnt = counts_of(r[key])
                got = cnt.get(i)
                errs = r[key].get("errors", {})
                if got is None and (str(i) in errs or i in errs):
                    cells.append("**error**")
                    mism[x].append((label, cls, qt, ref.get(i), "error"))
                elif got != ref.get(i):
                    cells.append("**%s**" % got)
                    mism[x].append((label, cls, qt, ref.get(i), got))
                else:
                    cells.append("=")
            w("| %s, %s | `%s` | %s | %s |" % (label, cls, qt, f(ref.get(i), 0),
                                              " | ".join(cells)))
    w("\n`=` same count as the reference; `·` not measured (not built, "
      "crashed, or the engine did not index that mailbox).\n")
    w("Mismatches per configuration: " + "; ".join(
        "%s %d" % (x, len(mism[x])) for x in others
        if not status(R[x])) + ".\n")

    # ------------------------------------------------------------ targets
    w("## Targets (issue 7)\n")
    w("| target | result | met? | why, and the next step (when missed) |")
    w("|---|---|---|---|")
    targets = []
    xap = R.get("maildir+fts-xapian")
    luc = R.get("maildir+fts-lucene")
    for x in FTS_LMDB:
        r = R.get(x)
        if r is None or ref_name is None:
            continue
        if status(r):
            targets.append(("%s: all FTS targets" % x, status(r), "no"))
            continue
        # 100x
        worst = None
        for cls in BODY_CLASSES:
            base = pct(class_times(R[ref_name].get("search"), Q, cls, True), 50)
            mine = pct(class_times(r.get("search"), Q, cls, True), 50)
            if base and mine:
                s = base / mine
                if worst is None or s < worst[0]:
                    worst = (s, cls)
        if worst:
            targets.append(("%s SEARCH BODY/TEXT p50 ≥ 100× faster than no-FTS, "
                            "every class (BODY/TEXT queries only)" % x,
                            "slowest class: %s, %s×" % (worst[1], f(worst[0], 0)),
                            "yes" if worst[0] >= 100 else "no"))
        if xap and not status(xap):
            slower = []
            for cls in CLASSES:
                a = pct(class_times(r.get("search_sample"), Q, cls), 50)
                b = pct(class_times(xap.get("search_sample"), Q, cls), 50)
                if a is not None and b is not None and a >= b:
                    slower.append("%s (%s vs %s ms)" % (cls, f(a), f(b)))
            targets.append(("%s faster than fts-xapian for every class "
                            "(sample)" % x,
                            "slower or equal: " + ", ".join(slower) if slower
                            else "faster in all %d classes" % len(CLASSES),
                            "no" if slower else "yes"))
        n_m = len(mism.get(x, []))
        targets.append(("%s: zero mismatches" % x, "%d mismatches" % n_m,
                        "yes" if n_m == 0 else "no"))
        ix = r.get("index")
        if ix:
            mine = ix["msgs"] / ix["seconds"]
            if luc and not status(luc) and luc.get("index"):
                lx = luc["index"]["msgs"] / luc["index"]["seconds"]
                targets.append(("%s index build ≥ 2× fts-lucene msg/s" % x,
                                "%s vs %s msg/s (%s×)" % (f(mine), f(lx),
                                                          f(mine / lx, 2)),
                                "yes" if mine >= 2 * lx else "no"))
            rat = ix["index_bytes"] / ix["mail_bytes"]
            opt = ix.get("optimized_bytes")
            if opt is not None and not ix.get("optimize_rc"):
                orat = opt / ix["mail_bytes"]
                targets.append(("%s index ≤ 30%% of mail" % x,
                                "%s%% after `doveadm index`, %s%% after "
                                "`doveadm fts optimize`" %
                                (f(100 * rat, 1), f(100 * orat, 1)),
                                "yes" if orat <= 0.30 else "no"))
            else:
                targets.append(("%s index ≤ 30%% of mail" % x,
                                "%s%%" % f(100 * rat, 1),
                                "yes" if rat <= 0.30 else "no"))
            anon = ix.get("peak_anon")
            targets.append(("%s indexer peak RSS ≤ 64 MB" % x,
                            "%s MB peak RSS (VmHWM, counts the mapped LMDB "
                            "pages it touched); %s MB of its own memory "
                            "(peak RssAnon)" % (f(ix["maxrss"] / 1e6),
                                                f(mb(anon))),
                            "yes" if ix["maxrss"] <= 64e6 else
                            ("VmHWM no; own memory yes" if anon and
                             anon <= 64e6 else "no")))
    lm, sd, md = R.get("lmdb"), R.get("sdbox"), R.get("maildir")
    if lm and sd and not status(lm) and not status(sd):
        h2h = bool(lm.get("h2h") and sd.get("h2h"))
        for key, label, hi in (("append1_msgs", "APPEND 1 client", True),
                               ("append4_msgs", "APPEND 4 clients", True),
                               ("fetch_body_first_mbs", "FETCH BODY[] first", True),
                               ("fetch_body_warm_mbs", "FETCH BODY[] warm", True),
                               ("select_first_ms", "SELECT first", False),
                               ("select_warm_ms", "SELECT warm", False),
                               ("status_ms", "STATUS", False)):
            if h2h and key in lm["h2h"]:
                a, b = hmed("lmdb", key), hmed("sdbox", key)
                label += " (interleaved rounds, median)"
            else:
                a, b = lm.get(key), sd.get(key)
            if a is None or b is None:
                continue
            ok = a >= b if hi else a <= b
            targets.append(("lmdb %s %s sdbox" % (label, "≥" if hi else "no slower than"),
                            "%s vs %s (%s×)" % (f(a), f(b), f(a / b, 2)),
                            "yes" if ok else "no"))
    if lm and md and not status(lm) and not status(md):
        a, b = lm["disk_bytes"], md["disk_bytes"]
        targets.append(("lmdb bytes on disk below maildir's",
                        "%s vs %s MB (%s×)" % (f(a / 1e6), f(b / 1e6), f(a / b, 2)),
                        "yes" if a < b else "no"))
    for t in targets:
        why = ""
        if t[2] != "yes":
            why = next((text for pat, text in MISSED if pat in t[0]), "")
        w("| %s | %s | %s | %s |" % (t + (why,)))
    w("")
    if lm and sd and not status(lm) and not status(sd) and \
            (lm.get("store_msgs") or 0) < (sd.get("store_msgs") or 0):
        w("Not a target, but the largest gap in the format table: **STORE** "
          "(%s msg/s for lmdb against %s for sdbox). Every STORE mirrors its "
          "flag change into LMDB in a write transaction committed with fsync; "
          "Dovecot's own formats never fsync a flag change under "
          "`mail_fsync = optimized`. See the profiling notes below for the "
          "options.\n" % (f(lm.get("store_msgs")), f(sd.get("store_msgs"))))

    # ------------------------------------------------------------ problems
    probs = [(x, R[x]) for x in R if R[x].get("log_problems") or R[x].get("error")]
    if probs:
        w("## Errors and log problems during the run\n")
        w("Every Error, Panic or Fatal line of each instance's log. Lines from "
          "fts-xapian or fts-squat are those backends' own (fts-xapian logs a "
          "QueryParserError for some of the queries).\n")
        for x, r in probs:
            if r.get("error"):
                w("- **%s** failed: `%s`" % (x, r["error"].replace("`", "'")[:400]))
            for line in r.get("log_problems", [])[:5]:
                w("- %s: `%s`" % (x, line.replace("`", "'")[:300]))
        w("")

    # ------------------------------------------------------------ method
    w("## How it is measured\n")
    w("""- Each configuration gets its own private Dovecot (tests/integration/dovecot_harness.py)
  on 127.0.0.1, with `vsz_limit = 2G` for imap, lmtp and indexer-worker in every
  configuration (the lmdb README asks for it above ~150 MB per user; fts-xapian asks for it too),
  `mail_fsync` at its default (`optimized`), and FTS with `fts_autoindex = no` and
  `fts_enforced = yes`, so that a search never silently falls back to a scan.
- The big mailbox (user `testuser`) and the sample (user `sample`) are bulk-loaded with
  `doveadm import` from the prepared corpus (a maildir `cur/`); the FTS configurations load
  with the FTS plugins switched off (`-o mail_plugins=…`), because fts-squat crashes there.
  The import rate is reported but is not an IMAP figure.
- APPEND uses IMAP (one message per APPEND, LITERAL+, one command at a time per client) into
  an empty INBOX of another user; the 4-client figure is 4 connections appending into the
  same INBOX at once. LMTP is one connection with PIPELINING (MAIL, RCPT and DATA sent
  together), one delivery after another, into another empty INBOX.
- SELECT "first" is the first SELECT after the load; warm SELECT and STATUS are medians of
  15 (SELECT on a new connection each time).
- FETCH runs over the whole INBOX, twice; BODY[] MB/s counts the literal bytes returned.
- On-disk size is the allocated size (st_blocks) of the user's whole home (mail, Dovecot
  indexes, LMDB environment) after the FETCH phase, divided by the corpus bytes.
- STORE sets \\Flagged on K messages, one `UID STORE` per message; COPY and MOVE are one
  `UID COPY`/`UID MOVE` of K messages into another folder; then \\Deleted is set on every
  10th remaining message and one EXPUNGE is timed.
- SEARCH runs every query of the set (%d queries, 12 classes) as `UID SEARCH` on the
  selected INBOX, one at a time; result counts come from the first pass.
- Peak RSS: VmHWM of the imap process that served the phase (one process per connection);
  for the indexer, the rusage of `doveadm index` (it indexes in its own process).
- fts-squat is only started to record how it fails on this Dovecot build.
""" % len(Q))
    w("### Query set\n")
    w("| # | class | query |")
    w("|---|---|---|")
    for i, (cls, qt) in enumerate(Q):
        w("| %d | %s | `%s` |" % (i, cls, qt))
    w("")
    if profiling_path and os.path.exists(profiling_path):
        with open(profiling_path) as fh:
            w(fh.read())
    return "\n".join(out) + "\n"
