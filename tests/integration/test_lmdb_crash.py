"""Crash tests of the lmdb mailbox format ("the lmdb format loses nothing").

The tests SIGKILL `imap` and `lmtp` processes in the middle of APPEND
(single and MULTIAPPEND, sometimes mid-literal), COPY, MOVE, STORE, EXPUNGE
and LMTP DATA, and now and then the whole Dovecot (or restart it cleanly).
Commands are pipelined in batches so that kills land inside operations.
A kill fires either after a random delay of 0-50 ms, or the moment the
LMDB meta page shows a new transaction (read from data.mdb), which hits the
window "LMDB committed, index not".

Every message carries a unique X-Crash-Id header.  A model of each mailbox
knows what was acknowledged (tagged OK, LMTP 250) and what is uncertain
(commands that never got their answer).  After each round of kills it is
checked against a fresh IMAP session, then against `doveadm fetch`, then
`doveadm force-resync -u testuser '*'` runs and both views must be the
same as before:

  * every message whose APPEND, COPY, MOVE or LMTP delivery got OK is there,
    with byte-exact BODY[] (sha256), under the UID the server announced;
  * a message that was expunged with OK, or that was seen gone, never comes
    back, and no UID below the last UIDNEXT ever shows up anew;
  * flags and keywords stored with OK persist; unacknowledged ones are
    either old or new;
  * an unacknowledged APPEND/COPY/MOVE/delivery adds its messages at most
    once, at UIDs at or above the UIDNEXT seen before it, with exact bytes;
    a MOVE never loses a message; a half-sent literal or DATA adds nothing;
  * UIDVALIDITY never changes, UIDNEXT never goes backwards, no duplicate
    UIDs, message GUIDs never change;
  * an APPEND whose LMDB transaction was seen committed is never lost.

The log must be clean except for the master's "child N killed with
signal 9" lines.

LMDB_CRASH_ITERATIONS (default 30) is the number of kills of the random
test; the commit-window test does half as many (at least 10).
LMDB_CRASH_SEED makes a run repeatable (the seed is printed).  Run the full
100+ kills with LMDB_CRASH_ITERATIONS=100.
"""

import base64
import collections
import hashlib
import os
import random
import re
import signal
import socket
import struct
import threading
import time

import pytest

import dovecot_harness
from dovecot_harness import make_message

ITERATIONS = int(os.environ.get("LMDB_CRASH_ITERATIONS", "30"))
SEED = int(os.environ.get("LMDB_CRASH_SEED", "0")) or \
    random.SystemRandom().randrange(1, 2 ** 31)

USER = "testuser"
BOXES = ("INBOX", "Crash2", "Crash3")
FLAG_POOL = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft",
             "$Crash1", "$Crash2")
MAX_BOX_MESSAGES = 60

# the master logs this (as the child's Fatal) for every process we kill
KILLED_LOG = (r"Fatal: master: service\((imap|lmtp)\): child \d+ "
              r"killed with signal 9\b")
RECOVERED_LOG = re.compile(r"lmdb: Added (\d+) messages that were committed "
                           r"to LMDB but missing from the index")

LIT_RE = re.compile(rb"\{(\d+)\}\r\n$")
FETCH_RE = re.compile(rb"^\* \d+ FETCH \(")


# ----------------------------------------------------------------- helpers

def uidset(uids):
    """IMAP sequence set of a collection of UIDs."""
    uids = sorted(uids)
    out, i = [], 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else "%d:%d" % (uids[i], uids[j]))
        i = j + 1
    return ",".join(out).encode()


def parse_uidset(text):
    """UIDs of an IMAP UID set, in the order given."""
    out = []
    for part in text.decode().split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        else:
            out.append(int(part))
    return out


def quote(name):
    return b'"' + name.encode() + b'"'


def flag_list(flags):
    return b"(" + " ".join(sorted(flags)).encode() + b")"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def crash_id(body):
    hdr = body.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"^X-Crash-Id: (\S+)\r?$", hdr, re.M)
    return m.group(1).decode() if m else None


def proc_children(master_pid, comm):
    """Live children of the master whose comm is comm."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        pcomm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if pcomm == comm and fields[0] != "Z" and \
                int(fields[1]) == master_pid:
            pids.append(int(name))
    return pids


def server_pid(sock, master_pid, comm):
    """The pid of the master's child `comm` that holds the server end of
    our TCP connection sock (found by the socket's inode)."""
    mine = "%04X" % sock.getsockname()[1]
    peer = "%04X" % sock.getpeername()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1].endswith(":" + peer) and \
                    parts[2].endswith(":" + mine):
                inode = parts[9]
    assert inode, "no server socket for %s" % (sock,)
    target = "socket:[%s]" % inode
    for _ in range(200):
        for pid in proc_children(master_pid, comm):
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                        return pid
                except OSError:
                    pass
        time.sleep(0.01)
    raise AssertionError("no %s process holds %s" % (comm, target))


def wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    for pid in pids:
        while dovecot_harness._pid_alive(pid) and \
                time.monotonic() < deadline:
            time.sleep(0.002)


class LmdbMeta:
    """Reads the transaction id of the newest LMDB meta page of data.mdb:
    it changes the moment a write transaction commits."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY)
        head = os.pread(self.fd, 64, 0)
        magic, = struct.unpack_from("<I", head, 16)
        assert magic == 0xBEEFC0DE, "not an LMDB file: %s" % path
        # mm_dbs[FREE_DBI].md_pad holds the page size
        self.psize, = struct.unpack_from("<I", head, 40)
        # page header 16 + magic, version, address, mapsize, 2 dbs, last_pg
        self.off = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8

    def txnid(self):
        a = os.pread(self.fd, 8, self.off)
        b = os.pread(self.fd, 8, self.psize + self.off)
        return max(struct.unpack("<Q", a)[0], struct.unpack("<Q", b)[0])

    def close(self):
        os.close(self.fd)


class ImapConn:
    """A raw IMAP client: pipelined commands, LITERAL+, and reading what
    came back after the server process was killed."""

    def __init__(self, d, timeout=60):
        self.sock = socket.create_connection((d.host, d.ports["imap"]),
                                             timeout)
        self.f = self.sock.makefile("rb")
        self.n = 0
        line = self.f.readline()
        assert line.startswith(b"* OK"), line
        tagged, _ = self.command(b'LOGIN %s "%s"' % (
            USER.encode(), d.users[USER].encode()))
        assert tagged.split()[1] == b"OK", tagged

    def tag(self):
        self.n += 1
        return b"C%d" % self.n

    def read_response(self):
        """(text with literals replaced by {}, [literals])"""
        parts, lits = [], []
        while True:
            line = self.f.readline()
            if not line.endswith(b"\r\n"):
                raise EOFError("connection closed")
            m = LIT_RE.search(line)
            if m is None:
                parts.append(line)
                return b"".join(parts), lits
            parts.append(line[:m.start()] + b"{}")
            n = int(m.group(1))
            lit = self.f.read(n)
            if len(lit) != n:
                raise EOFError("connection closed in a literal")
            lits.append(lit)

    def command(self, cmd):
        """(tagged line, [(untagged text, literals)])"""
        tag = self.tag()
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        untagged = []
        while True:
            text, lits = self.read_response()
            if text.startswith(tag + b" "):
                return text, untagged
            untagged.append((text, lits))

    def drain(self):
        """Every complete response until the connection ends."""
        out = []
        try:
            while True:
                out.append(self.read_response())
        except (EOFError, OSError):
            pass
        return out

    def close(self):
        try:
            self.sock.sendall(b"Z LOGOUT\r\n")
            self.drain()
        except OSError:
            pass
        self.f.close()
        self.sock.close()


class LmtpConn:
    """An LMTP session brought up to the point where DATA is accepted."""

    def __init__(self, d, timeout=60):
        self.sock = socket.create_connection((d.host, d.ports["lmtp"]),
                                             timeout)
        self.f = self.sock.makefile("rb")
        assert self.f.readline().startswith(b"220")
        self._cmd(b"LHLO localhost", b"250")
        self._cmd(b"MAIL FROM:<sender@example.com>", b"250")
        self._cmd(b"RCPT TO:<%s>" % USER.encode(), b"250")
        self._cmd(b"DATA", b"354")

    def _cmd(self, line, code):
        self.sock.sendall(line + b"\r\n")
        while True:
            reply = self.f.readline()
            assert reply.startswith(code), (line, reply)
            if reply[3:4] != b"-":
                return reply

    def final_reply(self):
        try:
            return self.f.readline()
        except OSError:
            return b""

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


# ----------------------------------------------------------------- model

class Msg:
    """A message the model knows the UID of."""

    def __init__(self, cid, flags, digest, must=True):
        self.cid = cid
        self.flags = set(flags)     # possible flag sets (frozensets)
        self.sha = digest
        self.must = must            # False: it may be gone


class Cand:
    """A message an unanswered (or UID-less) command may have added."""

    def __init__(self, cid, flags, digest, min_uid, required=False,
                 lmtp=False, move_src=None):
        self.cid = cid
        self.flags = set(flags)
        self.sha = digest           # None: an LMTP delivery (headers added)
        self.min_uid = min_uid
        self.required = required
        self.lmtp = lmtp
        self.move_src = move_src    # (box, uid) of a MOVE's source
        self.found = None


class BoxModel:
    def __init__(self, name):
        self.name = name
        self.uidvalidity = None
        self.uidnext = 1            # highest UIDNEXT known
        self.seen_uidnext = 1       # UIDNEXT of the last observation
        self.msgs = {}              # uid -> Msg
        self.cands = []


class Obs:
    def __init__(self, uid, flags, body):
        self.uid = uid
        self.flags = flags
        self.body = body
        self.sha = sha(body)
        self.cid = crash_id(body)


class CrashError(AssertionError):
    pass


# ----------------------------------------------------------------- the rig

class CrashRig:
    def __init__(self, d, rng, label):
        self.d = d
        self.rng = rng
        self.label = label
        self.boxes = {name: BoxModel(name) for name in BOXES}
        self.sent = {}              # cid -> bytes as sent
        self.ncid = 0
        self.tainted = set()        # (box, uid) touched by an unanswered cmd
        self.guids = {}             # (box, uid) -> message GUID
        self.hist = collections.defaultdict(list)   # (box, uid) -> events
        self.events = []            # what happened since the last check
        self.stats = collections.Counter()
        # an APPEND whose LMDB commit was seen must survive (only where
        # nothing else can write LMDB between the send and the kill)
        self.strict_commit = False
        self.lmdb_path = os.path.join(d.home(USER), "lmdb", "mail.lmdb",
                                      "data.mdb")

    # ---- messages

    def new_message(self, big=None):
        self.ncid += 1
        cid = "%s%05d" % (self.label, self.ncid)
        r = self.rng.random()
        if big or (big is None and r < 0.06):
            size = self.rng.randrange(300 * 1024, 1200 * 1024)
        elif r < 0.30:
            size = self.rng.randrange(20 * 1024, 200 * 1024)
        else:
            size = self.rng.randrange(200, 8 * 1024)
        raw = base64.b64encode(self.rng.randbytes(size * 3 // 4 + 3))
        body = b"\r\n".join(raw[i:i + 76] for i in range(0, len(raw), 76))
        msg = make_message("crash %s" % cid, "", headers={
            "X-Crash-Id": cid}) + body + b"\r\n"
        self.sent[cid] = msg
        return cid, msg

    def random_flags(self):
        return frozenset(f for f in FLAG_POOL if self.rng.random() < 0.3)

    # ---- processes

    def kill(self, pids):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(pids)
        return pids

    def hard_kill_dovecot(self):
        """SIGKILL the master and every process of its session at once."""
        master = self.d.master_pid
        os.killpg(master, signal.SIGKILL)
        self.d.stop()
        self.stats["dovecot hard kill"] += 1

    # ---- a batch: pipelined IMAP commands and/or an LMTP DATA, killed

    def known(self, box, exclude=()):
        bm = self.boxes[box]
        return [uid for uid, m in sorted(bm.msgs.items())
                if m.must and len(m.flags) == 1 and
                (box, uid) not in self.tainted and uid not in exclude]

    def pick(self, uids, lo, hi):
        if not uids:
            return []
        n = min(len(uids), self.rng.randint(lo, hi))
        return sorted(self.rng.sample(uids, n))

    def plan_imap(self, sel):
        """A list of ops on the selected mailbox sel (and APPENDs)."""
        ops, used = [], set()
        nops = self.rng.choice((1, 1, 2, 3))
        for _ in range(nops):
            kinds = ["append", "append", "copy", "move", "store", "expunge"]
            if len(self.boxes[sel].msgs) > MAX_BOX_MESSAGES:
                kinds += ["expunge", "expunge", "move"]
            kind = self.rng.choice(kinds)
            avail = self.known(sel, used)
            if kind != "append" and not avail:
                kind = "append"
            if kind == "append":
                box = self.rng.choice(BOXES)
                n = self.rng.choice((1, 1, 2, 4, 8, 16, 32))
                msgs = []
                for _ in range(n):
                    cid, data = self.new_message()
                    msgs.append((cid, data, self.random_flags()))
                partial = n == 1 and self.rng.random() < 0.15
                if partial:
                    cid, data = self.new_message(big=True)
                    msgs = [(cid, data, frozenset())]
                ops.append(("append", box, msgs, partial))
            elif kind in ("copy", "move"):
                dst = self.rng.choice([b for b in BOXES if b != sel])
                uids = self.pick(avail, 1, 40)
                used.update(uids)
                ops.append((kind, dst, uids))
            elif kind == "store":
                uids = self.pick(avail, 1, 40)
                used.update(uids)
                mode = self.rng.choice(("+FLAGS", "-FLAGS", "FLAGS"))
                ops.append(("store", mode, uids, self.random_flags()))
            else:
                # Only UIDs already \Deleted: a UID EXPUNGE pipelined
                # right after the STORE that sets \Deleted may search a
                # view without it, expunge nothing and still say OK
                # (Dovecot core does that for maildir and sdbox too).
                bm = self.boxes[sel]
                deleted = [u for u in avail
                           if "\\Deleted" in next(iter(bm.msgs[u].flags))]
                uids = self.pick(deleted or avail, 1, 30)
                used.update(uids)
                if deleted:
                    ops.append(("expunge", uids))
                else:
                    ops.append(("store", "+FLAGS", uids,
                                frozenset(["\\Deleted"])))
        return ops

    def encode_ops(self, ops):
        """(payload, [(op, [tags])], partial tail to send after a pause)"""
        payload, tagged, tail = b"", [], b""
        for op in ops:
            tags = []
            if op[0] == "append":
                _, box, msgs, partial = op
                tag = self.conn.tag()
                cmd = tag + b" APPEND " + quote(box)
                for i, (cid, data, flags) in enumerate(msgs):
                    cmd += b" " + flag_list(flags) + b" {%d+}\r\n" % len(data)
                    if partial:
                        half = self.rng.randrange(1, len(data))
                        payload += cmd + data[:half]
                        cmd, tail = b"", data[half:] + b"\r\n"
                    else:
                        cmd += data
                payload += cmd + (b"" if partial else b"\r\n")
                tags.append(tag)
            elif op[0] in ("copy", "move"):
                tag = self.conn.tag()
                payload += tag + b" UID %s %s %s\r\n" % (
                    op[0].upper().encode(), uidset(op[2]), quote(op[1]))
                tags.append(tag)
            elif op[0] == "store":
                tag = self.conn.tag()
                payload += tag + b" UID STORE %s %s.SILENT %s\r\n" % (
                    uidset(op[2]), op[1].encode(), flag_list(op[3]))
                tags.append(tag)
            else:
                tag = self.conn.tag()
                payload += tag + b" UID EXPUNGE %s\r\n" % uidset(op[1])
                tags.append(tag)
            tagged.append((op, tags))
            if tail:
                break           # nothing after a half-sent literal
        return payload, tagged, tail

    def run_batch(self, trigger="delay", imap=True, lmtp=False,
                  hard=False, ops=None):
        """Send one batch, kill it, and fold what was answered into the
        model.  Returns True if the trigger saw an LMDB commit."""
        sel = self.rng.choice(BOXES)
        self.conn = None
        victims = []
        planned, payload, tail = [], b"", b""
        if imap:
            self.conn = ImapConn(self.d)
            tagged, _ = self.conn.command(b"SELECT " + quote(sel))
            assert tagged.split()[1] == b"OK", tagged
            victims.append(server_pid(self.conn.sock, self.d.master_pid,
                                      "imap"))
            ops = ops if ops is not None else self.plan_imap(sel)
            payload, planned, tail = self.encode_ops(ops)
        lconn, lcid, lpayload, ltail = None, None, b"", b""
        if lmtp:
            lcid, data = self.new_message()
            lconn = LmtpConn(self.d)
            victims.append(server_pid(lconn.sock, self.d.master_pid,
                                      "lmtp"))
            lpayload = data + b".\r\n"
            if self.rng.random() < 0.2:         # kill in the middle of DATA
                half = self.rng.randrange(1, len(data))
                lpayload, ltail = data[:half], data[half:] + b".\r\n"
            lmtp_min_uid = self.boxes["INBOX"].uidnext

        if tail or ltail:
            trigger = "delay"
        meta = LmdbMeta(self.lmdb_path) if trigger == "commit" else None
        txn0 = meta.txnid() if meta else None
        committed = False

        def send(sock, first, rest):
            try:
                sock.sendall(first)
                if rest:
                    time.sleep(0.25)
                    sock.sendall(rest)
            except OSError:
                pass

        threads = []
        if trigger == "commit":
            # nothing can commit before the last byte is in: send from here
            if self.conn:
                send(self.conn.sock, payload, b"")
            if lconn:
                send(lconn.sock, lpayload, b"")
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if meta.txnid() != txn0:
                    committed = True
                    break
        else:
            for sock, first, rest in ((self.conn and self.conn.sock,
                                       payload, tail),
                                      (lconn and lconn.sock,
                                       lpayload, ltail)):
                if sock is not None and first:
                    th = threading.Thread(target=send,
                                          args=(sock, first, rest),
                                          daemon=True)
                    th.start()
                    threads.append(th)
            time.sleep(self.rng.uniform(0, self.rng.choice((0.005, 0.05))))
        self.event("batch on %s, trigger %s%s, %s" % (
            sel, trigger, " (saw commit)" if committed else "",
            "hard kill" if hard else "killed %s" % victims))
        if hard:
            self.hard_kill_dovecot()
        else:
            self.kill(victims)
        self.stats["kills"] += 1
        if meta:
            meta.close()
        for th in threads:
            th.join(10)

        if self.conn:
            self.fold_imap(sel, planned, self.conn.drain(), committed,
                           bool(tail))
            self.conn.close()
        if lconn:
            reply = lconn.final_reply() if not ltail else b""
            lconn.close()
            acked = reply.startswith(b"250")
            self.stats["lmtp %s" % ("acked" if acked else "killed")] += 1
            self.boxes["INBOX"].cands.append(Cand(
                lcid, {frozenset()}, None, lmtp_min_uid, required=acked,
                lmtp=True))
        if hard:
            self.d.start()
        return committed

    def fold_imap(self, sel, planned, responses, committed, partial):
        done = {}
        copyuids = []
        for text, _ in responses:
            m = re.match(rb"^(C\d+) (OK|NO|BAD)\b", text)
            if m:
                done[m.group(1)] = text
                if m.group(2) != b"OK":
                    raise CrashError("%s: command failed: %r" % (
                        self.where(), text))
            m = re.search(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]", text)
            if m and text.startswith(b"* "):
                copyuids.append(m)      # MOVE sends it untagged
        for op, tags in planned:
            oks = [t in done for t in tags]
            kind = op[0]
            self.event("%s %s %s %s" % (
                kind, sel, [o for o in op[1:] if not isinstance(o, list)]
                if kind == "append" else op[1:],
                [done[t].strip()[:60] for t in tags if t in done]))
            self.stats["%s %s" % (kind, "acked" if all(oks) else "killed")] \
                += 1
            if kind == "append":
                self.fold_append(op, done.get(tags[0]),
                                 committed and self.strict_commit and
                                 len(planned) == 1 and not partial)
            elif kind in ("copy", "move"):
                m = None
                if oks[0]:
                    m = re.search(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]",
                                  done[tags[0]])
                    for u in copyuids if m is None else ():
                        if sorted(parse_uidset(u.group(2))) == op[2]:
                            m = u
                    assert m, "%s: no COPYUID: %r" % (self.where(),
                                                      done[tags[0]])
                self.fold_copy(sel, op, m)
            elif kind == "store":
                self.fold_store(sel, op[2], op[1], op[3], oks[0])
            else:
                bm = self.boxes[sel]
                for uid in op[1]:
                    self.note(sel, uid, "%s EXPUNGE" % (
                        "acked" if oks[0] else "unanswered"))
                    if oks[0]:
                        del bm.msgs[uid]
                    else:
                        bm.msgs[uid].must = False
                        self.tainted.add((sel, uid))

    def fold_append(self, op, ok, committed):
        _, box, msgs, _ = op
        bm = self.boxes[box]
        if ok is None:
            for cid, data, flags in msgs:
                bm.cands.append(Cand(cid, {flags}, sha(data), bm.uidnext,
                                     required=committed))
            return
        m = re.search(rb"\[APPENDUID (\d+) ([\d:,]+)\]", ok)
        assert m, "%s: no APPENDUID: %r" % (self.where(), ok)
        self.check_uidvalidity(bm, int(m.group(1)))
        uids = parse_uidset(m.group(2))
        assert len(uids) == len(msgs), (self.where(), ok)
        for uid, (cid, data, flags) in zip(uids, msgs):
            self.add_known(bm, uid, Msg(cid, {flags}, sha(data)))

    def fold_copy(self, sel, op, copyuid):
        kind, dst, uids = op
        src, dm = self.boxes[sel], self.boxes[dst]
        if copyuid is None:
            for uid in uids:
                m = src.msgs[uid]
                dm.cands.append(Cand(
                    m.cid, m.flags, m.sha, dm.uidnext,
                    move_src=(sel, uid) if kind == "move" else None))
                self.tainted.add((sel, uid))
                self.note(sel, uid, "unanswered %s to %s" % (kind, dst))
                if kind == "move":
                    m.must = False
            return
        self.check_uidvalidity(dm, int(copyuid.group(1)))
        srcs = parse_uidset(copyuid.group(2))
        dsts = parse_uidset(copyuid.group(3))
        assert sorted(srcs) == sorted(uids), (self.where(), op, srcs)
        for s, u in zip(srcs, dsts):
            m = src.msgs[s]
            self.add_known(dm, u, Msg(m.cid, m.flags, m.sha))
            self.note(sel, s, "acked %s to %s UID %d" % (kind, dst, u))
            if kind == "move":
                del src.msgs[s]

    def fold_store(self, box, uids, mode, flags, ok):
        bm = self.boxes[box]
        for uid in uids:
            m = bm.msgs[uid]
            new = set()
            for old in m.flags:
                if mode == "+FLAGS":
                    new.add(old | flags)
                elif mode == "-FLAGS":
                    new.add(old - flags)
                else:
                    new.add(flags)
            self.note(box, uid, "%s %s %s %s" % (
                "acked" if ok else "unanswered", mode, sorted(flags),
                [sorted(f) for f in new]))
            if ok:
                m.flags = new
            else:
                m.flags |= new
                self.tainted.add((box, uid))

    def add_known(self, bm, uid, msg):
        if uid in bm.msgs or uid < bm.seen_uidnext:
            raise CrashError("%s: %s: UID %d handed out again (for %s)" % (
                self.where(), bm.name, uid, msg.cid))
        bm.msgs[uid] = msg
        bm.uidnext = max(bm.uidnext, uid + 1)
        self.note(bm.name, uid, "acked as %s" % msg.cid)

    def check_uidvalidity(self, bm, uidvalidity):
        if bm.uidvalidity is None:
            bm.uidvalidity = uidvalidity
        elif bm.uidvalidity != uidvalidity:
            raise CrashError("%s: %s: UIDVALIDITY changed %d -> %d" % (
                self.where(), bm.name, bm.uidvalidity, uidvalidity))

    def note(self, box, uid, what):
        self.hist[(box, uid)].append("kill %d: %s" % (self.stats["kills"],
                                                      what))

    def event(self, what):
        self.events.append("kill %d: %s" % (self.stats["kills"], what))

    def history(self, box, uid):
        return "; ".join(self.hist.get((box, uid), ["no history"]))

    def where(self):
        return "seed %d, kill %d" % (SEED, self.stats["kills"])

    # ---- observing and checking

    def observe(self):
        """{box: (uidvalidity, uidnext, {uid: Obs})} from a fresh session.
        A message that the index has and LMDB lacks reads as expunged; a
        NOOP then drops it, so a box is read until it reads cleanly."""
        conn = ImapConn(self.d)
        views = {}
        try:
            for box in BOXES:
                for attempt in range(5):
                    view = self.observe_box(conn, box)
                    if view is not None:
                        break
                    self.stats["observe retried"] += 1
                    self.event("%s read as expunged: NOOP" % box)
                    conn.command(b"NOOP")
                else:
                    raise CrashError("%s: %s never reads cleanly" % (
                        self.where(), box))
                if view is not False:
                    views[box] = view
        finally:
            conn.close()
        return views

    def observe_box(self, conn, box):
        tagged, unt = conn.command(b"SELECT " + quote(box))
        if tagged.split()[1] != b"OK":
            if b"NONEXISTENT" in tagged:
                return False
            raise CrashError("%s: SELECT %s: %r" % (self.where(), box,
                                                    tagged))
        text = b"".join(t for t, _ in unt)
        uidvalidity = int(re.search(rb"\[UIDVALIDITY (\d+)\]", text).group(1))
        uidnext = int(re.search(rb"\[UIDNEXT (\d+)\]", text).group(1))
        exists = int(re.search(rb"\* (\d+) EXISTS", text).group(1))
        msgs = {}
        if exists == 0:
            return uidvalidity, uidnext, msgs
        tagged, unt = conn.command(b"UID FETCH 1:* (UID FLAGS BODY.PEEK[])")
        clean = tagged.split()[1] == b"OK"
        for text, lits in unt:
            if not FETCH_RE.match(text):
                if re.match(rb"\* \d+ EXPUNGE", text):
                    clean = False
                continue
            uid = int(re.search(rb"\bUID (\d+)", text).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", text).group(1)
            flags = frozenset(f for f in flags.decode().split()
                              if f != "\\Recent")
            if len(lits) != 1:
                clean = False
                continue
            if uid in msgs:
                raise CrashError("%s: %s: UID %d twice in one FETCH" % (
                    self.where(), box, uid))
            msgs[uid] = Obs(uid, flags, lits[0])
        if len(msgs) != exists:
            clean = False
        if not clean:
            return None
        return uidvalidity, uidnext, msgs

    def body_ok(self, obs, cid, cand_or_msg):
        if cand_or_msg.sha is not None:
            return obs.sha == cand_or_msg.sha
        # LMTP prepends Return-Path, Delivered-To and Received
        data = self.sent[cid]
        if not obs.body.endswith(data):
            return False
        prefix = obs.body[:-len(data)]
        return prefix.startswith(b"Return-Path: ") and \
            prefix.endswith(b"\r\n") and b"\r\n\r\n" not in prefix

    def verify(self, views=None):
        """Check the server against the model, then adopt what it shows."""
        views = views if views is not None else self.observe()
        errors = []
        for box in BOXES:
            bm = self.boxes[box]
            if box not in views:
                if bm.msgs and any(m.must for m in bm.msgs.values()):
                    errors.append("%s: mailbox is gone" % box)
                continue
            uidvalidity, uidnext, msgs = views[box]
            if bm.uidvalidity is None:
                bm.uidvalidity = uidvalidity
            elif uidvalidity != bm.uidvalidity:
                errors.append("%s: UIDVALIDITY changed %d -> %d" % (
                    box, bm.uidvalidity, uidvalidity))
            if uidnext < bm.uidnext:
                errors.append("%s: UIDNEXT went backwards: %d < %d" % (
                    box, uidnext, bm.uidnext))
            cands = sorted(bm.cands, key=lambda c: (not c.required,
                                                    c.move_src is None))
            for uid, obs in sorted(msgs.items()):
                if uid >= uidnext:
                    errors.append("%s: UID %d >= UIDNEXT %d" % (box, uid,
                                                                 uidnext))
                m = bm.msgs.get(uid)
                if m is not None:
                    if obs.cid != m.cid:
                        errors.append("%s: UID %d holds %s, not %s" % (
                            box, uid, obs.cid, m.cid))
                    elif not self.body_ok(obs, m.cid, m):
                        errors.append("%s: UID %d (%s): body changed" % (
                            box, uid, m.cid))
                    if obs.flags not in m.flags:
                        errors.append("%s: UID %d (%s): flags %s, expected "
                                      "one of %s [%s]" % (
                                          box, uid, m.cid,
                                          sorted(obs.flags),
                                          [sorted(f) for f in m.flags],
                                          self.history(box, uid)))
                    continue
                if uid < bm.seen_uidnext:
                    errors.append("%s: UID %d (%s) appeared below the "
                                  "UIDNEXT %d seen before (resurrected?) "
                                  "[%s]" % (box, uid, obs.cid,
                                            bm.seen_uidnext,
                                            self.history(box, uid)))
                    continue
                for c in cands:
                    if c.found is None and c.cid == obs.cid and \
                            uid >= c.min_uid and obs.flags in c.flags and \
                            self.body_ok(obs, c.cid, c):
                        c.found = uid
                        break
                else:
                    errors.append("%s: unexpected message UID %d (%s, "
                                  "flags %s, %d bytes)" % (
                                      box, uid, obs.cid, sorted(obs.flags),
                                      len(obs.body)))
            for uid, m in sorted(bm.msgs.items()):
                if m.must and uid not in msgs:
                    errors.append("%s: UID %d (%s) is lost [%s]" % (
                        box, uid, m.cid, self.history(box, uid)))
            for c in bm.cands:
                if c.required and c.found is None:
                    errors.append("%s: %s was acknowledged (or committed to "
                                  "LMDB) but is lost" % (box, c.cid))
        # a MOVE may leave both copies, never none
        for box in BOXES:
            for c in self.boxes[box].cands:
                if c.move_src and c.found is None:
                    sbox, suid = c.move_src
                    if suid not in views.get(sbox, (0, 0, {}))[2]:
                        errors.append("MOVE of %s UID %d (%s) to %s lost it"
                                      % (sbox, suid, c.cid, box))
        if errors:
            raise CrashError("%s:\n  %s\nsince the last check:\n  %s" % (
                self.where(), "\n  ".join(errors),
                "\n  ".join(self.events)))
        self.events = []
        # adopt what the server shows
        for box, (uidvalidity, uidnext, msgs) in views.items():
            bm = self.boxes[box]
            new = {}
            for uid, obs in msgs.items():
                old = bm.msgs.get(uid)
                digest = old.sha if old and old.sha else obs.sha
                new[uid] = Msg(obs.cid, {obs.flags}, digest)
                if old is None or old.flags != {obs.flags}:
                    self.note(box, uid, "seen as %s %s" % (
                        obs.cid, sorted(obs.flags)))
            bm.msgs = new
            bm.cands = []
            bm.uidnext = bm.seen_uidnext = uidnext
        self.tainted.clear()
        self.stats["verifications"] += 1
        return views

    @staticmethod
    def imap_view(views):
        return {box: (v[0], v[1], {uid: (o.cid, o.flags, o.sha)
                                   for uid, o in v[2].items()})
                for box, v in views.items()}

    def doveadm_view(self):
        res = self.d.doveadm("fetch", "-u", USER,
                             "mailbox uid guid flags size.physical", "all")
        assert res.returncode == 0, (self.where(), res.stderr)
        assert not dovecot_harness.LOG_PROBLEM_RE.search(res.stderr), \
            (self.where(), res.stderr)
        if res.stderr.strip():
            self.event("doveadm fetch: %s" % res.stderr.strip())
        view = {}
        for rec in res.stdout.split("\f"):
            fields = dict(line.split(": ", 1) if ": " in line
                          else (line.rstrip(":"), "")
                          for line in rec.strip("\n").split("\n") if line)
            if not fields:
                continue
            flags = frozenset(f for f in fields["flags"].split()
                              if f != "\\Recent")
            key = (fields["mailbox"], int(fields["uid"]))
            assert key not in view, (self.where(), "doveadm: twice", key)
            view[key] = (fields["guid"], flags, int(fields["size.physical"]))
        return view

    def check_resync(self, views):
        """doveadm agrees with IMAP; force-resync changes nothing."""
        before = self.doveadm_view()
        imap_keys = {(box, uid): o for box, v in views.items()
                     for uid, o in v[2].items()}
        errors = []
        if set(before) != set(imap_keys):
            errors.append("doveadm and IMAP list different messages: "
                          "only doveadm %s, only IMAP %s" % (
                              sorted(set(before) - set(imap_keys))[:10],
                              sorted(set(imap_keys) - set(before))[:10]))
        for key, (guid, flags, size) in before.items():
            o = imap_keys.get(key)
            if o is not None:
                if flags != o.flags:
                    errors.append("%s: doveadm flags %s, IMAP %s" % (
                        key, sorted(flags), sorted(o.flags)))
                stored = len(o.body.replace(b"\r\n", b"\n"))
                if size not in (stored, len(o.body)):
                    errors.append("%s: size.physical %d, body %d" % (
                        key, size, stored))
            old = self.guids.setdefault(key, guid)
            if old != guid:
                errors.append("%s: GUID changed %s -> %s" % (key, old, guid))
        res = self.d.doveadm("force-resync", "-u", USER, "*")
        if res.returncode != 0 or \
                dovecot_harness.LOG_PROBLEM_RE.search(res.stderr):
            errors.append("force-resync failed: %s" % res.stderr)
        after = self.doveadm_view()
        if after != before:
            diff = sorted(set(before.items()) ^ set(after.items()))
            errors.append("force-resync changed doveadm fetch: %s" % diff[:10])
        views2 = self.observe()
        if self.imap_view(views2) != self.imap_view(views):
            a, b = self.imap_view(views), self.imap_view(views2)
            for box in BOXES:
                if a.get(box) != b.get(box):
                    va, vb = a.get(box), b.get(box)
                    errors.append("force-resync changed %s: uidvalidity/"
                                  "uidnext %s -> %s, messages only before %s"
                                  ", only after %s" % (
                                      box, va and va[:2], vb and vb[:2],
                                      sorted(set(va[2].items()) -
                                             set(vb[2].items()))[:5]
                                      if va and vb else None,
                                      sorted(set(vb[2].items()) -
                                             set(va[2].items()))[:5]
                                      if va and vb else None))
        if errors:
            raise CrashError("%s:\n  %s" % (self.where(),
                                            "\n  ".join(errors)))
        self.stats["force-resyncs"] += 1

    def full_check(self):
        if self.rng.random() < 0.3:
            # let doveadm be the first to open the mailboxes after a crash
            self.event("doveadm fetch first")
            self.doveadm_view()
        views = self.verify()
        self.check_resync(views)

    def recovered_count(self):
        return sum(int(m.group(1)) for m in
                   RECOVERED_LOG.finditer(self.d.log_text()))

    def setup(self):
        conn = ImapConn(self.d)
        for box in BOXES[1:]:
            tagged, _ = conn.command(b"CREATE " + quote(box))
            assert tagged.split()[1] == b"OK", tagged
        conn.close()
        # a few acknowledged messages to start with
        conn = ImapConn(self.d)
        conn.command(b"SELECT INBOX")
        self.conn = conn
        for box in BOXES:
            msgs = [self.new_message() + (self.random_flags(),)
                    for _ in range(6)]
            payload, planned, _ = self.encode_ops([("append", box, msgs,
                                                    False)])
            conn.sock.sendall(payload)
            tag = planned[0][1][0]
            while True:
                text, _ = conn.read_response()
                if text.startswith(tag + b" "):
                    break
            self.fold_append(planned[0][0], text, False)
        conn.close()
        self.full_check()

    def report(self, elapsed):
        print("\n[%s] seed %d: %d kills in %.1fs, %d recovered by sync; %s"
              % (self.label, SEED, self.stats["kills"], elapsed,
                 self.recovered_count(),
                 ", ".join("%s %d" % kv for kv in sorted(self.stats.items())
                           if kv[0] != "kills")))


# ----------------------------------------------------------------- tests

@pytest.mark.dovecot_log_allow(KILLED_LOG)
def test_crash_random_kills(dovecot):
    """SIGKILL imap/lmtp at random points of APPEND, COPY, MOVE, STORE,
    EXPUNGE and LMTP DATA; sometimes the whole Dovecot."""
    rng = random.Random(SEED)
    rig = CrashRig(dovecot, rng, "r")
    start = time.monotonic()
    rig.setup()
    kills = 0
    while kills < ITERATIONS:
        for _ in range(rng.choice((1, 1, 2, 3))):
            r = rng.random()
            lmtp = r < 0.25
            imap = not lmtp or r < 0.10
            trigger = "commit" if imap and not lmtp and rng.random() < 0.3 \
                else "delay"
            hard = kills % 10 == 9 and kills > 0
            rig.run_batch(trigger=trigger, imap=imap, lmtp=lmtp, hard=hard)
            kills += 1
            if kills % 10 == 4:
                rig.event("restart")
                dovecot.restart()
                rig.stats["dovecot restarts"] += 1
            if kills >= ITERATIONS:
                break
        rig.full_check()
    rig.report(time.monotonic() - start)


@pytest.mark.dovecot_log_allow(KILLED_LOG)
def test_crash_lmdb_committed_index_not(dovecot):
    """Kill APPEND the moment its LMDB transaction commits, before the index
    commits.  The next opener (IMAP SELECT, the next APPEND, LMTP, doveadm)
    must add the message under a consistent UID."""
    rng = random.Random(SEED + 1)
    rig = CrashRig(dovecot, rng, "w")
    rig.strict_commit = True
    start = time.monotonic()
    rig.setup()
    n = max(10, ITERATIONS // 2)
    committed = 0
    for i in range(n):
        msgs = [rig.new_message(big=False) + (rig.random_flags(),)
                for _ in range(rng.choice((1, 1, 3)))]
        box = rng.choice(BOXES)
        if rig.run_batch(trigger="commit",
                         ops=[("append", box, msgs, False)]):
            committed += 1
        after = rng.choice(("imap", "append", "lmtp", "doveadm", "chain"))
        rig.stats["next: %s" % after] += 1
        if after == "chain" and i + 1 < n:
            continue
        if after == "append":
            # the next save recovers the leftovers first
            cid, data = rig.new_message(big=False)
            rig.conn = ImapConn(dovecot)
            payload, planned, _ = rig.encode_ops(
                [("append", box, [(cid, data, frozenset())], False)])
            rig.conn.sock.sendall(payload)
            tag = planned[0][1][0]
            while True:
                text, _ = rig.conn.read_response()
                if text.startswith(tag + b" "):
                    break
            assert text.split()[1] == b"OK", text
            rig.fold_append(planned[0][0], text, False)
            rig.conn.close()
        elif after == "lmtp":
            cid, data = rig.new_message(big=False)
            inbox = rig.boxes["INBOX"]
            dovecot.lmtp_deliver(USER, data)
            inbox.cands.append(Cand(cid, {frozenset()}, None, inbox.uidnext,
                                    required=True, lmtp=True))
        elif after == "doveadm":
            rig.doveadm_view()
        rig.verify()
    rig.check_resync(rig.verify())
    recovered = rig.recovered_count()
    rig.report(time.monotonic() - start)
    assert committed >= n // 2, \
        "only %d of %d kills saw the LMDB commit" % (committed, n)
    assert recovered >= 1, \
        "no kill landed between the LMDB and the index commit " \
        "(%d kills saw the LMDB commit)" % committed
