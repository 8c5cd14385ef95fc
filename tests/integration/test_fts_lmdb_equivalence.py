"""fts_lmdb returns exactly what Dovecot's own SEARCH returns.

The same messages go into two private Dovecots with the same mailbox
format: one with fts_lmdb, one without FTS.  Hundreds of queries (every
key type; short, infix, phrase, case, accent, address, NOT, OR and nested
keys) run on both, and every query must return the same UIDs.

The FTS instance runs with fts_enforced=yes (a failed FTS lookup fails the
SEARCH instead of quietly reading the mail) and with
fts_lmdb_parsed_text=no: with the default (yes) BODY and TEXT also match
html2text output, which Dovecot's own search doesn't see (README; tested
in test_fts_lmdb_integration.py).  The test also checks, from the
backend's debug log, that the index answered nearly every argument itself
with definite results.

Variables: FTS_EQUIV_SEED, FTS_EQUIV_MESSAGES (default 3000),
FTS_EQUIV_QUERIES (400), FTS_EQUIV_CORPUS (default ../shared/corpus,
relative to the repository), FTS_EQUIV_CORPUS_QUERIES (120).
"""

import concurrent.futures
import email
import email.policy
import os
import random
import re
import time

import pytest

import dovecot_harness
from fts_lmdb_corpus import QueryGen, generate_corpus, generate_queries
from fts_lmdb_util import (FTS_PLUGINS, PLAIN_CONFIG, fts_config,
                           info_log_mark, lookup_stats, query_text, raw_imap)

SEED = int(os.environ.get("FTS_EQUIV_SEED", "20260501"))
N_MESSAGES = int(os.environ.get("FTS_EQUIV_MESSAGES", "3000"))
N_QUERIES = int(os.environ.get("FTS_EQUIV_QUERIES", "400"))
N_CORPUS_QUERIES = int(os.environ.get("FTS_EQUIV_CORPUS_QUERIES", "120"))
SHARED_CORPUS = os.environ.get("FTS_EQUIV_CORPUS", os.path.join(
    dovecot_harness.REPO_ROOT, "..", "shared", "corpus"))
STRICT = "fts_lmdb_parsed_text = no"


def start_pair(factory, location):
    plugins = ["lmdb"] if location.startswith("lmdb:") else []
    fts = factory(mail_location=location, mail_plugins=plugins + FTS_PLUGINS,
                  extra_config=fts_config(STRICT))
    plain = factory(mail_location=location, mail_plugins=plugins,
                    extra_config=PLAIN_CONFIG)
    return fts, plain


def load(d, corpus):
    """APPEND every (mailbox, message) in order; same order = same UIDs."""
    conn = raw_imap(d)
    for box in sorted({b for b, _ in corpus}):
        if box != "INBOX":
            conn.create(box)
        conn.append_many(box, [m for b, m in corpus if b == box])
    conn.logout()


def load_maildir(d, corpus):
    """Write the messages straight into ~/Maildir (the same file names
    in both instances, so Dovecot gives them the same UIDs): much faster
    than APPEND for a big corpus."""
    home = os.path.join(d.home("testuser"), "Maildir")
    seq = {}
    for box, data in corpus:
        folder = home if box == "INBOX" else os.path.join(home, "." + box)
        if box not in seq:
            seq[box] = 0
            for sub in ("", "cur", "new", "tmp"):
                path = os.path.join(folder, sub)
                os.makedirs(path, exist_ok=True)
                os.chown(path, d.mail_uid, d.mail_gid)
            os.chown(home, d.mail_uid, d.mail_gid)
        seq[box] += 1
        name = os.path.join(folder, "cur", "%010d.M%dP0.equiv:2," %
                            (1700000000 + seq[box], seq[box]))
        with open(name, "wb") as f:
            f.write(data)
        os.chown(name, d.mail_uid, d.mail_gid)
    with open(os.path.join(home, "subscriptions"), "w") as f:
        f.write("".join("%s\n" % b for b in seq if b != "INBOX"))


def same_uids(fts, plain, boxes):
    """Both instances gave each message the same UID (maildir: the file
    name is the GUID)."""
    for box in boxes:
        got = [d.doveadm("fetch", "-u", "testuser", "uid guid", "mailbox",
                         box, "all") for d in (fts, plain)]
        assert got[0].returncode == 0, got[0].stderr
        assert got[0].stdout == got[1].stdout and got[0].stdout


def load_both(fts, plain, corpus):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(load, d, corpus) for d in (fts, plain)]:
            f.result()


def index_all(d):
    start = time.monotonic()
    res = d.doveadm("index", "-u", "testuser", "*", timeout=900)
    assert res.returncode == 0, res.stderr
    return time.monotonic() - start


def run_queries(d, box, queries):
    conn = raw_imap(d)
    conn.select(box)
    out = []
    for q in queries:
        out.append(conn.uid_search(q))
    conn.logout()
    return out


def compare(fts, plain, box, queries):
    """Run queries on both instances; returns (mismatches, fts seconds,
    plain seconds, plain results).  The instance without FTS reads every
    message for each query: it gets two connections."""
    half = len(queries) // 2
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(run_queries, plain, box, queries[:half]),
                   pool.submit(run_queries, plain, box, queries[half:])]
        t1 = time.monotonic()
        got = run_queries(fts, box, queries)
        fts_secs = time.monotonic() - t1
        want = futures[0].result() + futures[1].result()
        plain_secs = time.monotonic() - t0
    bad = []
    for q, g, w in zip(queries, got, want):
        if g != w:
            missing = sorted(set(w) - set(g))
            extra = sorted(set(g) - set(w))
            bad.append("%s %s: %d want, missing %s, extra %s" %
                       (box, query_text(q), len(w), missing[:10], extra[:10]))
    return bad, fts_secs, plain_secs, want


def check_index_answered(fts, since, min_share=0.9):
    """Nearly every lookup handled all of its arguments, and no message
    went back to Dovecot as "maybe"."""
    stats = lookup_stats(fts, since)
    assert stats, "no fts-lmdb lookup was logged: FTS was not used"
    full = sum(1 for s in stats if s[1] == s[2])
    maybe = sum(s[4] for s in stats)
    assert full >= min_share * len(stats), \
        "only %d of %d lookups fully answered by the index" % (full,
                                                              len(stats))
    assert maybe == 0, "%d maybe results" % maybe
    return full, len(stats)


@pytest.mark.dovecot_config(mail_plugins=[])
def test_equivalence_generated(dovecot_factory):
    corpus, gen = generate_corpus(SEED, N_MESSAGES)
    fts, plain = start_pair(dovecot_factory, "maildir:~/Maildir")
    t0 = time.monotonic()
    load_both(fts, plain, corpus)
    load_secs = time.monotonic() - t0
    index_secs = index_all(fts)

    queries = generate_queries(SEED + 1, gen, N_QUERIES)
    per_box = {"INBOX": queries[:int(N_QUERIES * 0.7)],
               "Archive": queries[int(N_QUERIES * 0.7):int(N_QUERIES * 0.85)],
               "Lists": queries[int(N_QUERIES * 0.85):]}
    mark = info_log_mark(fts)
    bad, fts_secs, plain_secs, nonempty = [], 0.0, 0.0, 0
    for box, qs in per_box.items():
        b, f, p, want = compare(fts, plain, box, qs)
        bad += b
        fts_secs += f
        plain_secs += p
        nonempty += sum(1 for w in want if w)
    print("\nequivalence: %d messages (load %.1fs, index %.1fs), %d queries "
          "(%d with hits): fts %.2fs, no-fts %.2fs; %d differences" %
          (len(corpus), load_secs, index_secs, len(queries), nonempty,
           fts_secs, plain_secs, len(bad)))
    assert not bad, "%d of %d queries differ:\n%s" % (
        len(bad), len(queries), "\n".join(bad[:40]))
    assert nonempty > len(queries) // 3, "the queries hardly match anything"
    full, lookups = check_index_answered(fts, mark)
    print("%d of %d lookups fully answered by the index" % (full, lookups))


def _doveadm_search(d, query):
    res = d.doveadm("search", "-u", "testuser", *query)
    assert res.returncode == 0, res.stderr
    return sorted(res.stdout.split("\n"))


@pytest.mark.dovecot_config(mail_plugins=[])
@pytest.mark.parametrize("location", ["sdbox:~/sdbox", "mdbox:~/mdbox",
                                      "lmdb:~/lmdb"])
def test_equivalence_formats(dovecot_factory, location):
    """A smaller corpus over the other formats, and searches of several
    mailboxes at once (doveadm search over all mailboxes)."""
    if location.startswith("lmdb:") and \
            not dovecot_harness.lmdb_module_available():
        pytest.skip("lib20_lmdb_plugin.so not built")
    corpus, gen = generate_corpus(SEED + 10, 400)
    fts, plain = start_pair(dovecot_factory, location)
    load_both(fts, plain, corpus)
    index_all(fts)
    queries = generate_queries(SEED + 11, gen, 80)
    mark = info_log_mark(fts)
    bad = compare(fts, plain, "INBOX", queries)[0]
    assert not bad, "\n".join(bad)
    check_index_answered(fts, mark)

    r = random.Random(SEED)
    multi = [["mailbox", "*", "body", "INV-2023-00%d" % r.randrange(10)],
             ["mailbox", "*", "text", "ANN"],
             ["mailbox", "*", "subject", "re"],
             ["mailbox", "*", "from", "example.org"],
             ["mailbox", "*", "(", "body", "alpha beta", "or", "body",
              "zeta", ")"],
             ["mailbox", "*", "not", "body", "the"]]
    for q in multi:
        got, want = _doveadm_search(fts, q), _doveadm_search(plain, q)
        # GUIDs differ between instances: compare the UIDs per mailbox
        got = sorted(line.split()[1:] for line in got if line)
        want = sorted(line.split()[1:] for line in want if line)
        assert len(got) == len(want) and got == want, q


# ---- real mail from ../shared/corpus ----

def _read_corpus(root):
    """[(mailbox, bytes)] from every message file under root."""
    out = []
    for sub, box in (("spamassassin", "sa"), ("mime-edge-cases", "mime")):
        top = os.path.join(root, sub)
        if not os.path.isdir(top):
            continue
        for dirpath, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".md") or name.startswith("."):
                    continue
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
                if data.startswith(b"From "):
                    data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                if not data.strip():
                    continue
                data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                out.append((box, data))
    return out


def _corpus_samples(messages, seed):
    """Texts, subjects, addresses and headers of real messages, to draw
    queries from (parsing is best effort: it only picks keys)."""
    r = random.Random(seed)
    texts, subjects, addrs, headers = [], [], [], []
    for _, data in r.sample(messages, min(600, len(messages))):
        try:
            msg = email.message_from_bytes(data, policy=email.policy.compat32)
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    payload = part.get_payload(decode=True) or b""
                    cs = part.get_content_charset() or "latin-1"
                    try:
                        texts.append(payload.decode(cs, "replace")[:3000])
                    except LookupError:
                        texts.append(payload.decode("latin-1")[:3000])
            subjects.append(str(email.header.make_header(
                email.header.decode_header(msg.get("Subject", "")))))
            for a in re.findall(r"[\w.+-]+@[\w.-]+", msg.get("From", "")):
                addrs.append(a)
            for k, v in list(msg.items())[:12]:
                headers.append((k, str(v)[:200]))
        except Exception:       # noqa: BLE001 - malformed mail is expected
            continue
    return texts, subjects, addrs or ["nobody@example.com"], headers


@pytest.mark.dovecot_config(mail_plugins=[])
def test_equivalence_shared_corpus(dovecot_factory):
    if not os.path.isdir(SHARED_CORPUS):
        pytest.skip("no shared corpus at %s" % SHARED_CORPUS)
    corpus = _read_corpus(SHARED_CORPUS)
    if not corpus:
        pytest.skip("shared corpus at %s has no messages" % SHARED_CORPUS)
    fts, plain = start_pair(dovecot_factory, "maildir:~/Maildir")
    t0 = time.monotonic()
    for d in (fts, plain):
        load_maildir(d, corpus)
    boxes = sorted({b for b, _ in corpus})
    same_uids(fts, plain, boxes)
    load_secs = time.monotonic() - t0
    index_secs = index_all(fts)
    texts, subjects, addrs, headers = _corpus_samples(corpus, SEED)
    qg = QueryGen(SEED + 2, texts=texts, subjects=subjects,
                  addresses=addrs, headers=headers)
    queries = [qg.query() for _ in range(N_CORPUS_QUERIES)]
    mark = info_log_mark(fts)
    bad, fts_secs, plain_secs = [], 0.0, 0.0
    for i, box in enumerate(boxes):
        qs = queries if len(boxes) == 1 else \
            (queries[:int(len(queries) * 0.8)] if i == len(boxes) - 1
             else queries[int(len(queries) * 0.8):])
        b, f, p, _ = compare(fts, plain, box, qs)
        bad += b
        fts_secs += f
        plain_secs += p
    print("\nshared corpus: %d messages (load %.1fs, index %.1fs), %d "
          "queries: fts %.2fs, no-fts %.2fs; %d differences" %
          (len(corpus), load_secs, index_secs, len(queries), fts_secs,
           plain_secs, len(bad)))
    assert not bad, "%d queries differ:\n%s" % (len(bad), "\n".join(bad[:40]))
    full, lookups = check_index_answered(fts, mark)
    print("%d of %d lookups fully answered by the index" % (full, lookups))


# ---- how often fts-xapian disagrees (opt-in: it indexes slowly) ----

XAPIAN_MODULE = "/usr/lib/dovecot/modules/lib21_fts_xapian_plugin.so"


@pytest.mark.skipif(os.environ.get("FTS_EQUIV_XAPIAN") != "1",
                    reason="set FTS_EQUIV_XAPIAN=1 (needs dovecot-fts-xapian)")
@pytest.mark.dovecot_config(mail_plugins=[])
@pytest.mark.dovecot_log_allow(r"FTS Xapian")
def test_xapian_disagreement(dovecot_factory):
    """The same queries against fts-xapian (Debian's dovecot-fts-xapian):
    report how many differ from Dovecot's own search, next to fts_lmdb's
    count, which must be 0."""
    if not os.path.exists(XAPIAN_MODULE):
        pytest.skip("dovecot-fts-xapian is not installed")
    n = int(os.environ.get("FTS_EQUIV_XAPIAN_MESSAGES", "500"))
    corpus, gen = generate_corpus(SEED + 20, n)
    fts, plain = start_pair(dovecot_factory, "maildir:~/Maildir")
    xap = dovecot_factory(mail_location="maildir:~/Maildir",
                          mail_plugins=["fts", "fts_xapian"],
                          extra_config=PLAIN_CONFIG + """
plugin {
  fts = xapian
  fts_xapian = partial=3 full=20 verbose=0
  fts_enforced = yes
}
""")
    for d in (fts, plain, xap):
        load(d, corpus)
    index_all(fts)
    index_all(xap)
    queries = generate_queries(SEED + 21, gen, N_QUERIES)
    bad_lmdb = compare(fts, plain, "INBOX", queries)[0]
    bad_xapian = compare(xap, plain, "INBOX", queries)[0]
    print("\nfts-xapian: %d of %d queries differ from Dovecot's own search; "
          "fts_lmdb: %d" % (len(bad_xapian), len(queries), len(bad_lmdb)))
    for line in bad_xapian[:15]:
        print("  xapian: " + line)
    assert not bad_lmdb, "\n".join(bad_lmdb)
