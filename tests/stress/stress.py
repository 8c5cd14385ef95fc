#!/usr/bin/env python3
"""Concurrency stress test of the lmdb mailbox format (and fts_lmdb).

    python3 tests/stress/stress.py [--seconds N] [--users N] [--sessions N]

(`make stress`; STRESS_SECONDS sets the default duration, 60 s).  Python
standard library only.  It starts a private Dovecot (the integration
harness, tests/integration/dovecot_harness.py) with `mail_location =
lmdb:~/lmdb`, plus `fts fts_lmdb` and `fts = lmdb` when
lib21_fts_lmdb_plugin.so is in the module directory, and then, for the
given time:

  * --sessions IMAP sessions for each of --users users run a random mix of
    APPEND, FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, IDLE, STATUS and
    reconnects, all against the same few mailboxes of their user;
  * --lmtp threads deliver over LMTP, to one user or to several at once.

How the expectations stay exact although sessions race: every session
works only on the messages it "owns" (the ones it appended, copied or
moved, or an LMTP delivery it claimed by finding it with SEARCH HEADER),
always by UID (UID STORE/COPY/MOVE/EXPUNGE; never a plain EXPUNGE or
CLOSE).  So the flags and contents of its messages can only change
through it, and each of its FETCH and SEARCH answers about them is
checked at once.  A SEARCH over the whole mailbox is checked too: every
returned UID whose content is known must match.

At the end, with all clients stopped, every mailbox of every user must
hold exactly the acknowledged messages (UIDs, flags, keywords, sizes and
SHA-256 of the full text), the LMTP deliveries nobody claimed must be in
INBOX once each, and a set of SEARCH queries (flags, keywords, BODY, TEXT,
SUBJECT, HEADER, sizes, NOT/OR, 8-bit keys) must answer exactly what
client-side matching of the known content answers.  Then Dovecot is
stopped, every dovecot.index* file is deleted, and the same check runs
again against the index rebuilt from LMDB alone (--no-rebuild skips it).

The Dovecot log must have no Error/Panic/Fatal line.  The report gives
commands/s and every error; the exit status is 0 only with 0 errors.
"""

import argparse
import base64
import collections
import hashlib
import os
import quopri
import random
import re
import shutil
import smtplib
import socket
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "integration"))

import dovecot_harness  # noqa: E402

FTS_PLUGIN_FILE = "lib21_fts_lmdb_plugin.so"

# ----------------------------------------------------------- vocabulary
# Every search word has "qz", which nothing else in a message has, so
# plain substring matching on the client is exactly what IMAP SEARCH does.
WORDS = ["qzapple", "qzbanana", "qzcherry", "qzdamson", "qzelder",
         "qzfig", "qzguava", "qzhazel", "qzindigo", "qzjuniper", "qzkiwi",
         "qzlemon", "qzmango", "qznutmeg", "qzolive", "qzpapaya",
         "qzquince", "qzraisin", "qzsesame", "qztomato"]
UWORDS = ["qzgrüße", "qzкошка", "qzδέλτα", "qz日本語", "qzçedille"]
ALL_WORDS = WORDS + UWORDS
FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do "
          "eiusmod tempor incididunt ut labore et dolore magna aliba "
          "enim ad minim veniam nostrud exercitation ullamco laboris nisi "
          "aliip ex ea commodo consetat duis aute irure in reprehenderit "
          "voluptate velit esse cillum fugiat nulla pariatur").split()
assert not any("q" in w for w in FILLER)
SYSTEM_FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft",
                "\\Deleted"]
KEYWORDS = ["$Label1", "kwred", "kwblue", "kwgreen"]
ALL_FLAGS = SYSTEM_FLAGS + KEYWORDS
MAILBOXES = ["INBOX", "Archive", "Work", "Lists/dev", "Ärchiv"]


def mutf7(name):
    """IMAP modified UTF-7 of a mailbox name (RFC 3501 5.1.3)."""
    out, buf = [], ""

    def flush():
        if buf:
            b = base64.b64encode(buf.encode("utf-16-be")).rstrip(b"=")
            out.append("&" + b.decode().replace("/", ",") + "-")
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            buf = ""
            out.append("&-" if ch == "&" else ch)
        else:
            buf += ch
    flush()
    return "".join(out)


# ----------------------------------------------------------- messages

class Content:
    """One message's bytes and what a search must find in it."""

    def __init__(self, token, data, subject_words, body_words):
        self.token = token
        self.data = data
        self.size = len(data)
        self.sha = hashlib.sha256(data).hexdigest()
        self.subject_words = set(subject_words)
        self.body_words = set(body_words)
        # substring matching, as SEARCH does ("qz" is in every word)
        self.subject_text = "\n".join(sorted(subject_words))
        self.body_text = "\n".join(sorted(body_words))
        # LMTP adds trace headers in front: data is then only the tail
        self.lmtp = False

    def stored(self, data):
        """The Content of what the server stored for this LMTP message."""
        c = Content(self.token, data, self.subject_words, self.body_words)
        return c

    def matches(self, data):
        """True if data (a FETCH BODY[]) is this message."""
        if self.lmtp:
            return data.endswith(self.data) and data.startswith(
                b"Return-Path: ")
        return hashlib.sha256(data).hexdigest() == self.sha


def _filler_lines(rng, nbytes, words):
    """Text lines of about nbytes with each of words somewhere in it."""
    lines, size = [], 0
    words = list(words)
    while size < nbytes or words:
        line = " ".join(rng.choice(FILLER) for _ in range(rng.randint(5, 12)))
        if words and rng.random() < 0.5:
            w = words.pop()
            parts = line.split(" ")
            parts.insert(rng.randint(0, len(parts)), w)
            line = " ".join(parts)
        lines.append(line)
        size += len(line.encode()) + 2
    return lines


def build_message(rng, token):
    """A new message with a unique token: (Content)."""
    subj = rng.sample(WORDS, rng.randint(1, 2))
    body = rng.sample(ALL_WORDS, rng.randint(1, 4))
    r = rng.random()
    size = (rng.randint(100, 3000) if r < 0.85 else
            rng.randint(20000, 120000) if r < 0.98 else
            rng.randint(200000, 400000))
    text = "\r\n".join(_filler_lines(rng, size, body)) + "\r\n"
    subject = "stress " + " ".join(subj)
    if rng.random() < 0.2:
        subject = "=?UTF-8?B?%s?=" % base64.b64encode(
            subject.encode()).decode()
    hdr = ("From: Stress Sender <sender@example.com>\r\n"
           "To: rcpt@example.com\r\n"
           "Subject: %s\r\n"
           "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
           "Message-ID: <%s@stress.test>\r\n"
           "X-Stress-Token: %s\r\n"
           "MIME-Version: 1.0\r\n" % (subject, token, token))
    kind = rng.choice(["8bit", "8bit", "qp", "base64", "multipart"])
    raw = text.encode("utf-8")
    if kind == "8bit":
        msg = (hdr + "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + raw
    elif kind == "qp":
        enc = quopri.encodestring(raw).replace(b"\r\n", b"\n") \
            .replace(b"\n", b"\r\n")
        msg = (hdr + "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: quoted-printable\r\n\r\n") \
            .encode() + enc
    elif kind == "base64":
        msg = (hdr + "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n").encode() + \
            base64.encodebytes(raw).replace(b"\n", b"\r\n")
    else:
        att = base64.encodebytes(bytes(rng.getrandbits(8) for _ in
                                       range(rng.randint(10, 3000))))
        bnd = "bnd-" + token
        msg = (hdr + "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
               "preamble\r\n--%s\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n" % (bnd, bnd)
               ).encode() + raw + (
            "\r\n--%s\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" % bnd).encode() + \
            att.replace(b"\n", b"\r\n") + ("\r\n--%s--\r\n" % bnd).encode()
    return Content(token, msg, subj, body)


# ----------------------------------------------------------- IMAP client

class ImapError(Exception):
    pass


class Lit:
    def __init__(self, data):
        self.data = data if isinstance(data, bytes) else data.encode()


def quote(s):
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def parse_tokens(data):
    """One response (with literals) as nested lists of bytes/None."""
    pos, n, stack = 0, len(data), [[]]
    while pos < n:
        c = data[pos:pos + 1]
        if c in (b" ", b"\r", b"\n"):
            pos += 1
        elif c == b"(":
            stack.append([])
            pos += 1
        elif c == b")":
            lst = stack.pop()
            stack[-1].append(lst)
            pos += 1
        elif c == b'"':
            pos += 1
            s = bytearray()
            while data[pos:pos + 1] != b'"':
                if data[pos:pos + 1] == b"\\":
                    pos += 1
                s += data[pos:pos + 1]
                pos += 1
            pos += 1
            stack[-1].append(bytes(s))
        elif c == b"{" or data[pos:pos + 2] == b"~{":
            if c == b"~":
                pos += 1
            end = data.index(b"}\r\n", pos)
            size = int(data[pos + 1:end].rstrip(b"+"))
            pos = end + 3
            stack[-1].append(data[pos:pos + size])
            pos += size
        else:
            start, depth = pos, 0
            while pos < n:
                ch = data[pos:pos + 1]
                if ch == b"[":
                    depth += 1
                elif ch == b"]":
                    depth -= 1
                elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                    break
                pos += 1
            atom = data[start:pos]
            stack[-1].append(None if atom.upper() == b"NIL" else atom)
    return stack[0]


def uid_set(uids):
    """'1:3,7' for a collection of UIDs."""
    uids = sorted(set(uids))
    out, i = [], 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else "%d:%d" % (uids[i], uids[j]))
        i = j + 1
    return ",".join(out).encode()


def parse_uid_set(s):
    out = []
    for part in s.decode().split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


class Imap:
    def __init__(self, stats, host, port, user, password, timeout=60):
        self.stats = stats
        self.sock = socket.create_connection((host, port), timeout)
        self.f = self.sock.makefile("rb")
        self.n = 0
        self.selected = None
        greeting = self._read()
        if not greeting.startswith(b"* OK"):
            raise ImapError("greeting: %r" % greeting[:200])
        self.ok("LOGIN", b"LOGIN " + quote(user) + b" " + quote(password))

    def _read(self):
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                raise ImapError("connection closed by server after %r"
                                % out[:200])
            out += line
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if not m:
                return out
            out += self.f.read(int(m.group(1)))

    def _send(self, parts):
        self.n += 1
        tag = b"S%d" % self.n
        buf = [tag, b" "]
        for p in parts:
            if isinstance(p, Lit):
                buf += [b"{%d+}\r\n" % len(p.data), p.data]
            else:
                buf.append(p.encode() if isinstance(p, str) else p)
        self.sock.sendall(b"".join(buf) + b"\r\n")
        return tag

    def _wait(self, tag):
        untagged = []
        while True:
            line = self._read()
            if line.startswith(tag + b" "):
                return line, untagged
            untagged.append(line)

    def run(self, name, *parts):
        """(status, tagged line, untagged lines); counts the command."""
        t0 = time.monotonic()
        tag = self._send(parts)
        tagged, untagged = self._wait(tag)
        self.stats.command(name, time.monotonic() - t0)
        status = tagged.split(b" ", 2)[1].decode(errors="replace")
        return status, tagged, untagged

    def ok(self, name, *parts):
        status, tagged, untagged = self.run(name, *parts)
        if status != "OK":
            raise ImapError("%s: %s" % (name, tagged.decode(
                "utf-8", "replace").strip()[:300]))
        return tagged, untagged

    def idle(self, seconds):
        t0 = time.monotonic()
        tag = self._send([b"IDLE"])
        while True:
            line = self._read()
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" "):
                raise ImapError("IDLE: %r" % line)
        # what arrives meanwhile stays in the socket buffer until DONE
        time.sleep(seconds)
        self.sock.sendall(b"DONE\r\n")
        tagged, untagged = self._wait(tag)
        self.stats.command("IDLE", time.monotonic() - t0 - seconds)
        if tagged.split(b" ", 2)[1] != b"OK":
            raise ImapError("IDLE: %r" % tagged)
        return untagged

    def select(self, box):
        if self.selected != box:
            self.selected = None
            self.ok("SELECT", b"SELECT ", quote(mutf7(box)))
            self.selected = box

    def close(self):
        try:
            self.run("LOGOUT", b"LOGOUT")
        except (OSError, ImapError):
            pass
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def fetch_items(untagged):
    """[{ITEM: value}] of the FETCH responses in untagged."""
    out = []
    for line in untagged:
        if not re.match(rb"^\* \d+ FETCH ", line):
            continue
        toks = parse_tokens(line)
        items = toks[3]
        d = {}
        for i in range(0, len(items) - 1, 2):
            key = items[i].decode().upper() if isinstance(
                items[i], bytes) else str(items[i])
            d[key] = items[i + 1]
        out.append(d)
    return out


def search_uids(untagged):
    for line in untagged:
        if line.startswith(b"* SEARCH"):
            return set(int(x) for x in line.split()[2:])
    raise ImapError("no SEARCH response")


def flags_of(v):
    return frozenset(x.decode() for x in v if x.decode() != "\\Recent")


# ----------------------------------------------------------- search keys
# A key is a tuple; render() makes IMAP bytes, match() the expectation.

def render(key):
    kind = key[0]
    if kind == "flag":
        name = key[1]
        if name in SYSTEM_FLAGS:
            return [(name[1:].upper() if key[2] else
                     "UN" + name[1:].upper()).encode()]
        return [(b"KEYWORD " if key[2] else b"UNKEYWORD ") + name.encode()]
    if kind in ("body", "text", "subject"):
        w = key[1].encode("utf-8")
        val = quote(w) if w.isascii() else Lit(w)
        return [kind.upper().encode() + b" ", val]
    if kind == "header":
        return [b"HEADER X-Stress-Token ", quote(key[1])]
    if kind in ("larger", "smaller"):
        return [b"%s %d" % (kind.upper().encode(), key[1])]
    if kind == "not":
        return [b"NOT "] + render(key[1])
    if kind == "or":
        return [b"OR "] + render(key[1]) + [b" "] + render(key[2])
    if kind == "and":
        out = [b"("]
        for i, k in enumerate(key[1]):
            out += ([b" "] if i else []) + render(k)
        return out + [b")"]
    raise ValueError(key)


def match(key, flags, content):
    kind = key[0]
    if kind == "flag":
        return (key[1] in flags) == key[2]
    if kind == "body":
        return key[1] in content.body_text
    if kind == "subject":
        return key[1] in content.subject_text
    if kind == "text":
        return key[1] in content.body_text or key[1] in content.subject_text
    if kind == "header":
        return content.token == key[1]
    if kind == "larger":
        return content.size > key[1]
    if kind == "smaller":
        return content.size < key[1]
    if kind == "not":
        return not match(key[1], flags, content)
    if kind == "or":
        return match(key[1], flags, content) or match(key[2], flags, content)
    if kind == "and":
        return all(match(k, flags, content) for k in key[1])
    raise ValueError(key)


def needs_charset(parts):
    return any(isinstance(p, Lit) for p in parts)


def random_text_key(rng):
    w = rng.choice(ALL_WORDS)
    kind = rng.choice(["body", "body", "text", "subject"])
    if kind == "subject":
        w = rng.choice(WORDS)
    return (kind, w)


def random_key(rng, depth=0):
    r = rng.random()
    if depth < 2 and r < 0.12:
        return ("not", random_key(rng, depth + 1))
    if depth < 2 and r < 0.24:
        return ("or", random_key(rng, depth + 1), random_key(rng, depth + 1))
    if depth < 2 and r < 0.32:
        return ("and", [random_key(rng, depth + 1) for _ in range(2)])
    if r < 0.55:
        return ("flag", rng.choice(ALL_FLAGS), rng.random() < 0.6)
    if r < 0.62:
        return (rng.choice(["larger", "smaller"]),
                rng.choice([500, 2000, 10000, 100000]))
    return random_text_key(rng)


def search_parts(prefix, key):
    parts = render(key)
    head = [b"UID SEARCH "] + ([b"CHARSET UTF-8 "] if needs_charset(parts)
                               else [])
    return head + prefix + parts


# ----------------------------------------------------------- model

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.max_latency = collections.defaultdict(float)
        self.errors = []
        self.checks = collections.Counter()

    def command(self, name, secs):
        with self.lock:
            self.counts[name] += 1
            if secs > self.max_latency[name]:
                self.max_latency[name] = secs

    def check(self, what, n=1):
        with self.lock:
            self.checks[what] += n

    def error(self, who, text):
        with self.lock:
            self.errors.append("%s: %s" % (who, text))

    def total(self):
        with self.lock:
            return sum(self.counts.values())


class Msg:
    __slots__ = ("token", "flags")

    def __init__(self, token, flags):
        self.token = token
        self.flags = frozenset(flags)


class UserModel:
    def __init__(self, name, password):
        self.name = name
        self.password = password
        self.lock = threading.Lock()
        self.contents = {}                 # token -> Content
        self.appended_tokens = []          # reusable for identical APPENDs
        self.unclaimed = []                # LMTP tokens in INBOX, no owner
        self.uid_token = {b: {} for b in MAILBOXES}   # every UID ever seen
        self.uidvalidity = {}
        self.sessions = []

    def expected(self):
        """{box: {uid: Msg}} of every owned message (quiescent only)."""
        out = {b: {} for b in MAILBOXES}
        for s in self.sessions:
            for box, msgs in s.own.items():
                for uid, m in msgs.items():
                    if uid in out[box]:
                        raise AssertionError("%s/%s uid %d owned twice"
                                             % (self.name, box, uid))
                    out[box][uid] = m
        return out


class Session(threading.Thread):
    """One IMAP client of one user, looping on random operations."""

    OPS = [("append", 18), ("fetch", 14), ("store", 14), ("search", 14),
           ("search_all", 6), ("copy", 7), ("move", 7), ("expunge", 9),
           ("idle", 4), ("status", 4), ("claim", 5), ("reconnect", 1)]

    def __init__(self, run, user, idx, seed):
        super().__init__(name="%s-s%d" % (user.name, idx), daemon=True)
        self.run_ = run
        self.user = user
        self.rng = random.Random(seed)
        self.own = {b: {} for b in MAILBOXES}
        self.imap = None
        self.n_tokens = 0
        self.ops = [o for o, _ in self.OPS]
        self.weights = [w for _, w in self.OPS]

    # ---------------------------------------------------------- helpers

    def connect(self):
        if self.imap is not None:
            self.imap.close()
        d = self.run_.dovecot
        self.imap = Imap(self.run_.stats, d.host, d.ports["imap"],
                         self.user.name, self.user.password,
                         self.run_.timeout)

    def new_token(self):
        self.n_tokens += 1
        return "%s%s%06d%s" % (self.user.name, self.name[-3:], self.n_tokens,
                               os.urandom(4).hex())

    def owned_count(self):
        return sum(len(m) for m in self.own.values())

    def pick_box(self, nonempty=False):
        boxes = [b for b in MAILBOXES if not nonempty or self.own[b]]
        return self.rng.choice(boxes) if boxes else None

    def pick_uids(self, box, k=None):
        uids = list(self.own[box])
        k = k or self.rng.choice([1, 1, 2, 3, 5, 10])
        return sorted(self.rng.sample(uids, min(k, len(uids))))

    def fail(self, text):
        self.run_.stats.error(self.name, text)

    def note_uid(self, box, uid, token):
        with self.user.lock:
            old = self.user.uid_token[box].get(uid)
            self.user.uid_token[box][uid] = token
        if old is not None and old != token:
            self.fail("%s: UID %d reused (was %s, now %s)" %
                      (box, uid, old, token))

    # ---------------------------------------------------------- ops

    def op_append(self):
        box = self.pick_box()
        flags = set(self.rng.sample(ALL_FLAGS, self.rng.randint(0, 3)))
        with self.user.lock:
            reuse = (self.user.appended_tokens and self.rng.random() < 0.1)
            content = (self.user.contents[self.rng.choice(
                self.user.appended_tokens)] if reuse else None)
        if content is None:
            content = build_message(self.rng, self.new_token())
            with self.user.lock:
                self.user.contents[content.token] = content
        tagged, untagged = self.imap.ok(
            "APPEND", b"APPEND ", quote(mutf7(box)), b" (",
            " ".join(sorted(flags)).encode(), b") ", Lit(content.data))
        m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
        if not m:
            raise ImapError("APPEND without APPENDUID: %r" % tagged)
        uid = int(m.group(2))
        self.check_uidvalidity(box, int(m.group(1)))
        self.own[box][uid] = Msg(content.token, flags)
        self.note_uid(box, uid, content.token)
        if not reuse:
            with self.user.lock:
                self.user.appended_tokens.append(content.token)

    def check_uidvalidity(self, box, uv):
        with self.user.lock:
            old = self.user.uidvalidity.setdefault(box, uv)
        if old != uv:
            self.fail("%s: UIDVALIDITY changed %d -> %d" % (box, old, uv))

    def op_fetch(self):
        box = self.pick_box(nonempty=True)
        if box is None:
            return
        self.imap.select(box)
        uids = self.pick_uids(box)
        items = (b"(UID FLAGS RFC822.SIZE BODY.PEEK[])"
                 if self.rng.random() < 0.6 else
                 b"(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
                 b"(X-Stress-Token)])")
        _, untagged = self.imap.ok("FETCH", b"UID FETCH ", uid_set(uids),
                                   b" ", items)
        got = {}
        for d in fetch_items(untagged):
            if "UID" in d and ("BODY[]" in d or any(
                    k.startswith("BODY[HEADER") for k in d)):
                got[int(d["UID"])] = d
        for uid in uids:
            msg = self.own[box][uid]
            content = self.user.contents[msg.token]
            d = got.get(uid)
            if d is None:
                self.fail("%s: FETCH UID %d: no answer" % (box, uid))
                continue
            if flags_of(d["FLAGS"]) != msg.flags:
                self.fail("%s: UID %d flags %s, expected %s" % (
                    box, uid, sorted(flags_of(d["FLAGS"])),
                    sorted(msg.flags)))
            if int(d["RFC822.SIZE"]) != content.size:
                self.fail("%s: UID %d RFC822.SIZE %s, expected %d" % (
                    box, uid, d["RFC822.SIZE"], content.size))
            if "BODY[]" in d:
                if not content.matches(d["BODY[]"] or b""):
                    self.fail("%s: UID %d body differs" % (box, uid))
            else:
                hdr = [v for k, v in d.items() if k.startswith("BODY[")][0]
                if msg.token.encode() not in (hdr or b""):
                    self.fail("%s: UID %d header %r lacks token %s" % (
                        box, uid, hdr, msg.token))
        self.run_.stats.check("fetch", len(uids))

    def op_store(self):
        box = self.pick_box(nonempty=True)
        if box is None:
            return
        self.imap.select(box)
        uids = self.pick_uids(box)
        flags = set(self.rng.sample(ALL_FLAGS, self.rng.randint(0, 3)))
        mode = self.rng.choice(["+FLAGS", "-FLAGS", "FLAGS"])
        if mode != "FLAGS" and not flags:
            flags = {self.rng.choice(ALL_FLAGS)}
        silent = self.rng.random() < 0.5
        _, untagged = self.imap.ok(
            "STORE", b"UID STORE ", uid_set(uids), b" ", mode.encode(),
            b".SILENT" if silent else b"", b" (",
            " ".join(sorted(flags)).encode(), b")")
        for uid in uids:
            m = self.own[box][uid]
            new = (m.flags | flags if mode == "+FLAGS" else
                   m.flags - flags if mode == "-FLAGS" else frozenset(flags))
            self.own[box][uid] = Msg(m.token, new)
        if not silent:
            for d in fetch_items(untagged):
                if "UID" in d and int(d["UID"]) in self.own[box] and \
                        "FLAGS" in d:
                    uid = int(d["UID"])
                    if flags_of(d["FLAGS"]) != self.own[box][uid].flags:
                        self.fail("%s: STORE answer for UID %d: %s, expected"
                                  " %s" % (box, uid,
                                           sorted(flags_of(d["FLAGS"])),
                                           sorted(self.own[box][uid].flags)))

    def op_search(self):
        """An exact check restricted to this session's own messages."""
        box = self.pick_box(nonempty=True)
        if box is None:
            return
        self.imap.select(box)
        uids = self.pick_uids(box, self.rng.choice([5, 20, 1000]))
        key = random_key(self.rng)
        _, untagged = self.imap.ok(
            "SEARCH", *search_parts([b"UID ", uid_set(uids), b" "], key))
        got = search_uids(untagged)
        want = set(u for u in uids if match(
            key, self.own[box][u].flags,
            self.user.contents[self.own[box][u].token]))
        if got != want:
            self.fail("%s: SEARCH %s over own UIDs: got %s, expected %s" % (
                box, b"".join(p.data if isinstance(p, Lit) else p
                              for p in render(key)), sorted(got),
                sorted(want)))
        self.run_.stats.check("search")

    def op_search_all(self):
        """A text search over the whole mailbox: no false positive among
        the known UIDs, and none of this session's matches missing."""
        box = self.pick_box()
        self.imap.select(box)
        key = random_text_key(self.rng)
        if self.rng.random() < 0.3:
            with self.user.lock:
                if self.user.contents:
                    key = ("header", self.rng.choice(
                        list(self.user.contents)))
        _, untagged = self.imap.ok("SEARCH", *search_parts([], key))
        got = search_uids(untagged)
        with self.user.lock:
            known = dict(self.user.uid_token[box])
        for uid in got:
            tok = known.get(uid)
            if tok is not None and not match(key, frozenset(),
                                             self.user.contents[tok]):
                self.fail("%s: SEARCH %r returned UID %d (%s), which does "
                          "not match" % (box, key, uid, tok))
        for uid, m in self.own[box].items():
            if match(key, m.flags, self.user.contents[m.token]) and \
                    uid not in got:
                self.fail("%s: SEARCH %r missed own UID %d" % (box, key, uid))
        self.run_.stats.check("search")

    def _copy_move(self, move):
        src = self.pick_box(nonempty=True)
        if src is None:
            return
        self.imap.select(src)
        dest = self.pick_box()
        if move and dest == src:
            dest = self.rng.choice([b for b in MAILBOXES if b != src])
        uids = self.pick_uids(src)
        name = "MOVE" if move else "COPY"
        tagged, untagged = self.imap.ok(
            name, b"UID " + name.encode() + b" ", uid_set(uids), b" ",
            quote(mutf7(dest)))
        m = None
        for line in untagged + [tagged]:
            m = re.search(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]", line)
            if m:
                break
        if not m:
            raise ImapError("%s without COPYUID: %r" % (name, tagged))
        self.check_uidvalidity(dest, int(m.group(1)))
        srcs, dsts = parse_uid_set(m.group(2)), parse_uid_set(m.group(3))
        if sorted(srcs) != uids or len(dsts) != len(srcs):
            self.fail("%s %s -> %s: COPYUID %r for UIDs %s" % (
                name, src, dest, m.group(0), uids))
            return
        moved = {}
        for s, d in zip(srcs, dsts):
            moved[d] = self.own[src][s]
        if move:
            for s in srcs:
                del self.own[src][s]
        for d, msg in moved.items():
            self.own[dest][d] = Msg(msg.token, msg.flags)
            self.note_uid(dest, d, msg.token)

    def op_copy(self):
        self._copy_move(False)

    def op_move(self):
        self._copy_move(True)

    def op_expunge(self):
        box = self.pick_box(nonempty=True)
        if box is None:
            return
        self.imap.select(box)
        uids = self.pick_uids(box)
        self.imap.ok("STORE", b"UID STORE ", uid_set(uids),
                     b" +FLAGS.SILENT (\\Deleted)")
        _, untagged = self.imap.ok("EXPUNGE", b"UID EXPUNGE ", uid_set(uids))
        for uid in uids:
            del self.own[box][uid]

    def op_idle(self):
        self.imap.select(self.pick_box())
        self.imap.idle(self.rng.uniform(0.05, 0.6))

    def op_status(self):
        box = self.pick_box()
        _, untagged = self.imap.ok(
            "STATUS", b"STATUS ", quote(mutf7(box)),
            b" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        m = re.search(rb"UIDVALIDITY (\d+)", b"".join(untagged))
        if m:
            self.check_uidvalidity(box, int(m.group(1)))
        else:
            self.fail("STATUS %s without UIDVALIDITY" % box)

    def op_claim(self):
        with self.user.lock:
            if not self.user.unclaimed:
                return
            tok = self.user.unclaimed.pop(
                self.rng.randrange(len(self.user.unclaimed)))
        self.imap.select("INBOX")
        # SEARCH sees only what the session knows of: sync first
        self.imap.ok("NOOP", b"NOOP")
        _, untagged = self.imap.ok("SEARCH", *search_parts(
            [], ("header", tok)))
        got = search_uids(untagged)
        if len(got) != 1:
            self.fail("INBOX: SEARCH HEADER X-Stress-Token %s found %s, "
                      "expected one LMTP delivery" % (tok, sorted(got)))
            if not got:
                return
        uid = min(got)
        _, untagged = self.imap.ok("FETCH", b"UID FETCH %d (UID "
                                   b"BODY.PEEK[])" % uid)
        data = [d["BODY[]"] for d in fetch_items(untagged)
                if "BODY[]" in d and int(d.get("UID", 0)) == uid]
        with self.user.lock:
            content = self.user.contents[tok]
        if not data or not content.matches(data[0] or b""):
            self.fail("INBOX: LMTP delivery %s (UID %d) differs: %r" % (
                tok, uid, data[:1]))
            return
        with self.user.lock:
            self.user.contents[tok] = content.stored(data[0])
        self.own["INBOX"][uid] = Msg(tok, ())
        self.note_uid("INBOX", uid, tok)
        self.run_.stats.check("claim")

    def op_reconnect(self):
        self.connect()

    # ---------------------------------------------------------- loop

    def run(self):
        try:
            self.connect()
        except Exception as e:
            self.fail("connect: %s" % e)
            return
        cap = self.run_.max_owned
        while time.monotonic() < self.run_.deadline:
            op = self.rng.choices(self.ops, self.weights)[0]
            if op == "append" and self.owned_count() > cap:
                op = "expunge"
            try:
                getattr(self, "op_" + op)()
            except (ImapError, OSError, smtplib.SMTPException) as e:
                self.fail("%s: %s: %s" % (op, type(e).__name__, e))
                try:
                    self.connect()
                except Exception as e2:
                    self.fail("reconnect: %s" % e2)
                    return
            except Exception:
                self.fail("%s: %s" % (op, traceback.format_exc()))
                return
        self.imap.close()


class LmtpWorker(threading.Thread):
    def __init__(self, run, idx, seed):
        super().__init__(name="lmtp%d" % idx, daemon=True)
        self.run_ = run
        self.rng = random.Random(seed)
        self.n = 0

    def run(self):
        d = self.run_.dovecot
        while time.monotonic() < self.run_.deadline:
            users = self.rng.sample(self.run_.users,
                                    self.rng.choice([1, 1, 1, 2]))
            # deliveries nobody claimed pile up in INBOX: keep the data
            # at a steady state, or a long run only measures growth
            users = [u for u in users
                     if len(u.unclaimed) < self.run_.max_unclaimed]
            if not users:
                time.sleep(0.05)
                continue
            self.n += 1
            tok = "lmtp%s%05d%s" % (self.name[-1], self.n,
                                    os.urandom(4).hex())
            content = build_message(self.rng, tok)
            content.lmtp = True
            for u in users:
                with u.lock:
                    u.contents[tok] = content
            t0 = time.monotonic()
            try:
                d.lmtp_deliver([u.name for u in users], content.data)
            except (smtplib.SMTPException, OSError) as e:
                self.run_.stats.error(self.name, "LMTP to %s: %s" % (
                    [u.name for u in users], e))
                continue
            self.run_.stats.command("LMTP", time.monotonic() - t0)
            for u in users:
                with u.lock:
                    u.unclaimed.append(tok)
            time.sleep(self.rng.uniform(0, 0.05))


# ----------------------------------------------------------- verification

class Verifier:
    def __init__(self, run):
        self.run_ = run
        self.stats = run.stats

    def fail(self, who, text):
        self.stats.error("verify " + who, text)

    def user(self, u, phase):
        d = self.run_.dovecot
        imap = Imap(self.stats, d.host, d.ports["imap"], u.name, u.password,
                    self.run_.timeout)
        try:
            expected = u.expected()
            _, untagged = imap.ok("LIST", b'LIST "" "*"')
            listed = set()
            for line in untagged:
                toks = parse_tokens(line)
                if len(toks) >= 5 and toks[1] == b"LIST":
                    listed.add(toks[-1].decode())
            for box in MAILBOXES:
                if mutf7(box) not in listed:
                    self.fail(u.name, "%s: %s missing from LIST" % (phase,
                                                                    box))
                self.mailbox(imap, u, box, expected[box], phase)
        finally:
            imap.close()

    def mailbox(self, imap, u, box, expected, phase):
        who = "%s/%s (%s)" % (u.name, box, phase)
        imap.select(box)
        tagged, untagged = imap.ok(
            "FETCH", b"UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[])")
        server = {}
        for d in fetch_items(untagged):
            if "UID" in d and "BODY[]" in d:
                server[int(d["UID"])] = d
        unclaimed = collections.Counter(u.unclaimed if box == "INBOX"
                                        else [])
        model = {}          # uid -> (flags, Content) for the searches
        for uid, m in expected.items():
            d = server.pop(uid, None)
            content = u.contents[m.token]
            if d is None:
                self.fail(who, "acknowledged UID %d (%s) is missing" % (
                    uid, m.token))
                continue
            if flags_of(d["FLAGS"]) != m.flags:
                self.fail(who, "UID %d flags %s, expected %s" % (
                    uid, sorted(flags_of(d["FLAGS"])), sorted(m.flags)))
            if not content.matches(d["BODY[]"] or b""):
                self.fail(who, "UID %d (%s) text differs" % (uid, m.token))
            if int(d["RFC822.SIZE"]) != content.size:
                self.fail(who, "UID %d RFC822.SIZE %s != %d" % (
                    uid, d["RFC822.SIZE"], content.size))
            model[uid] = (m.flags, content)
        for uid, d in sorted(server.items()):
            data = d["BODY[]"] or b""
            m = re.search(rb"\r\nX-Stress-Token: (\w+)\r\n", data)
            tok = m and m.group(1).decode()
            if not tok or unclaimed[tok] == 0 or \
                    not u.contents[tok].matches(data):
                self.fail(who, "unexpected UID %d: %r" % (uid, data[:300]))
                continue
            unclaimed[tok] -= 1
            if flags_of(d["FLAGS"]):
                self.fail(who, "unclaimed LMTP UID %d has flags %s" % (
                    uid, sorted(flags_of(d["FLAGS"]))))
            model[uid] = (frozenset(), u.contents[tok].stored(data))
        lost = [t for t, n in unclaimed.items() if n > 0]
        if lost:
            self.fail(who, "%d acknowledged LMTP deliveries missing: %s" % (
                len(lost), lost[:10]))
        self.stats.check("messages", len(model))
        _, untagged = imap.ok("STATUS", b"STATUS ", quote(mutf7(box)),
                              b" (MESSAGES)")
        m = re.search(rb"MESSAGES (\d+)", b"".join(untagged))
        if not m or int(m.group(1)) != len(model):
            self.fail(who, "STATUS MESSAGES %s, expected %d" % (
                m and m.group(1), len(model)))
        self.searches(imap, who, model)

    def searches(self, imap, who, model):
        rng = random.Random(len(model))
        keys = ([("flag", f, True) for f in ALL_FLAGS] +
                [("flag", f, False) for f in ALL_FLAGS[:3]] +
                [("body", w) for w in ALL_WORDS] +
                [("text", w) for w in rng.sample(ALL_WORDS, 5)] +
                [("subject", w) for w in rng.sample(WORDS, 5)] +
                [("body", "qz"), ("text", "qz"), ("larger", 10000),
                 ("smaller", 2000)] +
                [random_key(rng) for _ in range(15)])
        toks = sorted(set(c.token for _, c in model.values()))
        keys += [("header", t) for t in rng.sample(toks, min(5, len(toks)))]
        for key in keys:
            _, untagged = imap.ok("SEARCH", *search_parts([], key))
            got = search_uids(untagged)
            want = set(uid for uid, (fl, c) in model.items()
                       if match(key, fl, c))
            if got != want:
                self.fail(who, "SEARCH %r: %d extra %s, %d missing %s" % (
                    key, len(got - want), sorted(got - want)[:10],
                    len(want - got), sorted(want - got)[:10]))
            self.stats.check("final searches")


# ----------------------------------------------------------- the run

class StressRun:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.timeout = args.timeout
        self.max_owned = args.max_owned
        self.max_unclaimed = args.max_unclaimed
        self.users = [UserModel("stress%d" % i, "pw%d" % i)
                      for i in range(args.users)]
        module_dir = args.module_dir or dovecot_harness.find_module_dir()
        self.fts = args.fts == "yes" or (
            args.fts == "auto" and module_dir is not None and
            os.path.isfile(os.path.join(module_dir, FTS_PLUGIN_FILE)))
        plugins = ["lmdb"] + (["fts", "fts_lmdb"] if self.fts else [])
        extra = ("protocol imap {\n  mail_max_userip_connections = 200\n}\n"
                 "service imap-login {\n  process_min_avail = 2\n}\n")
        if args.vsz_limit != "default":
            # each process maps mail.lmdb and fts_lmdb's index: the 256M
            # default runs out within minutes here (see README, vsz_limit)
            extra += "default_vsz_limit = %s\n" % args.vsz_limit
        if self.fts:
            extra += ("plugin {\n  fts = lmdb\n  fts_enforced = yes\n"
                      "  fts_autoindex = yes\n}\n")
        extra += args.extra_config
        self.root = args.root or tempfile.mkdtemp(prefix="dovecot-lmdb-stress-")
        os.chmod(self.root, 0o755)
        self.dovecot = dovecot_harness.Dovecot(
            os.path.join(self.root, "dovecot"), module_dir=module_dir,
            mail_location="lmdb:~/lmdb", mail_plugins=plugins,
            extra_config=extra,
            users={u.name: u.password for u in self.users})
        self.deadline = 0
        self.allowed_log = [re.compile(p) for p in args.log_allow]

    def log_problems(self, since, extra_allowed=()):
        allowed = self.allowed_log + [re.compile(p) for p in extra_allowed]
        return [line for line in self.dovecot.log_problems(since=since)
                if not any(a.search(line) for a in allowed)]

    def run(self):
        a = self.args
        d = self.dovecot
        if not d.lmdb_module_available():
            raise SystemExit("stress: %s not built (module dir %s)" % (
                dovecot_harness.LMDB_PLUGIN_FILE, d.module_dir))
        d.start()
        try:
            return self._run(a, d)
        finally:
            d.stop()

    def _prepare(self, d):
        for u in self.users:
            imap = Imap(self.stats, d.host, d.ports["imap"], u.name,
                        u.password, self.timeout)
            for box in MAILBOXES[1:]:
                imap.ok("CREATE", b"CREATE ", quote(mutf7(box)))
            imap.close()

    def _run(self, a, d):
        self._prepare(d)
        rng = random.Random(a.seed)
        threads = []
        for u in self.users:
            for i in range(a.sessions):
                s = Session(self, u, i, rng.getrandbits(64))
                u.sessions.append(s)
                threads.append(s)
        threads += [LmtpWorker(self, i, rng.getrandbits(64))
                    for i in range(a.lmtp)]
        print("stress: %d s, %d users x %d IMAP sessions + %d LMTP "
              "threads, fts_lmdb %s, seed %d, root %s" % (
                  a.seconds, len(self.users), a.sessions, a.lmtp,
                  "on" if self.fts else "off", a.seed, self.root),
              flush=True)
        start = time.monotonic()
        self.deadline = start + a.seconds
        for t in threads:
            t.start()
        last = start
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=1)
            now = time.monotonic()
            if now - last >= a.progress:
                last = now
                print("  %4.0f s: %d commands, %d errors" % (
                    now - start, self.stats.total(), len(self.stats.errors)),
                    flush=True)
            if now > self.deadline + a.timeout + 30:
                self.stats.error("main", "threads still running %.0f s "
                                 "after the deadline: %s" % (
                                     now - self.deadline,
                                     [t.name for t in threads
                                      if t.is_alive()]))
                break
        elapsed = time.monotonic() - start
        total = self.stats.total()
        for p in self.log_problems(0):
            self.stats.error("dovecot log", p)
        mark = d.log_mark()
        v = Verifier(self)
        for u in self.users:
            try:
                v.user(u, "final")
            except (ImapError, OSError) as e:
                self.stats.error("verify " + u.name, "%s" % e)
        if not a.no_rebuild:
            self.rebuild_check(d, v)
        for p in self.log_problems(mark, [r"Rebuilding index",
                                          r"Index is missing"]
                                   if not a.no_rebuild else []):
            self.stats.error("dovecot log", p)
        self.report(elapsed, total)
        return 0 if not self.stats.errors else 1

    def rebuild_check(self, d, v):
        """Delete every dovecot.index* file and check again: all of it
        must come back from LMDB."""
        d.stop()
        removed = 0
        for u in self.users:
            for dirpath, _, files in os.walk(d.home(u.name)):
                for f in files:
                    if f.startswith("dovecot.index") or \
                            f.startswith("dovecot.list.index"):
                        os.unlink(os.path.join(dirpath, f))
                        removed += 1
        d.start()
        for u in self.users:
            try:
                v.user(u, "index rebuilt from LMDB")
            except (ImapError, OSError) as e:
                self.stats.error("verify " + u.name, "after rebuild: %s" % e)
        print("rebuild check: removed %d index files" % removed)

    def report(self, elapsed, total):
        s = self.stats
        print("commands: %d in %.1f s = %.1f commands/s" % (
            total, elapsed, total / elapsed if elapsed else 0))
        print("  " + ", ".join("%s %d" % (k, v) for k, v in
                               sorted(s.counts.items())))
        print("  max latency: " + ", ".join(
            "%s %.2fs" % (k, v) for k, v in sorted(s.max_latency.items())))
        print("checked: " + ", ".join("%s %d" % (k, v) for k, v in
                                      sorted(s.checks.items())))
        print("errors: %d" % len(s.errors))
        for e in s.errors[:50]:
            print("  " + e)
        if len(s.errors) > 50:
            print("  ... and %d more" % (len(s.errors) - 50))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float,
                   default=float(os.environ.get("STRESS_SECONDS", 60)))
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--sessions", type=int, default=4,
                   help="IMAP sessions per user")
    p.add_argument("--lmtp", type=int, default=2, help="LMTP threads")
    p.add_argument("--seed", type=int,
                   default=int(os.environ.get("STRESS_SEED",
                                              random.randrange(1 << 30))))
    p.add_argument("--fts", choices=["auto", "yes", "no"],
                   default=os.environ.get("STRESS_FTS", "auto"))
    p.add_argument("--module-dir", default=None)
    p.add_argument("--root", default=None,
                   help="directory for the instance (default: a new one "
                   "under /tmp, removed after a clean run)")
    p.add_argument("--keep", action="store_true",
                   help="keep the instance directory")
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds one command may take before it counts "
                   "as a hang")
    p.add_argument("--max-owned", type=int, default=150,
                   help="messages one session keeps before it expunges "
                   "instead of appending")
    p.add_argument("--max-unclaimed", type=int, default=100,
                   help="LMTP deliveries per user that no session has "
                   "claimed yet, beyond which LMTP waits")
    p.add_argument("--vsz-limit", default="1G",
                   help="default_vsz_limit of the instance ('default': "
                   "Dovecot's 256M)")
    p.add_argument("--no-rebuild", action="store_true",
                   help="skip the check against an index rebuilt from LMDB")
    p.add_argument("--extra-config", default=os.environ.get(
        "STRESS_EXTRA_CONFIG", ""), help="appended to dovecot.conf")
    p.add_argument("--log-allow", action="append", default=[],
                   help="regex of Dovecot log errors to tolerate")
    p.add_argument("--progress", type=float, default=10)
    args = p.parse_args(argv)
    run = StressRun(args)
    rc = 1
    try:
        rc = run.run()
    finally:
        if rc == 0 and not args.keep and not args.root:
            run.dovecot.cleanup()
            shutil.rmtree(run.root, ignore_errors=True)
        else:
            print("instance kept in %s" % run.root)
    return rc


if __name__ == "__main__":
    sys.exit(main())
