"""Helpers of the fts_lmdb integration tests.

RawImap: a small IMAP client on a socket.  imaplib can't send non-ASCII
search keys, and appends one message per round trip; this one sends every
string as a LITERAL+ literal ({n+}) and pipelines APPENDs.

Also: configuration snippets for Dovecot instances with and without
fts_lmdb, and reading the fts-lmdb debug lines.
"""

import re
import socket

FTS_PLUGINS = ["fts", "fts_lmdb"]


def fts_config(extra=""):
    """plugin {} for an fts_lmdb instance.  fts_enforced=yes makes a failed
    FTS lookup fail the SEARCH instead of silently reading every mail, and
    the debug filter logs each lookup's summary to the info log."""
    return """
mail_fsync = never
log_debug = category=fts-lmdb
plugin {
  fts = lmdb
  fts_enforced = yes
%s
}
""" % extra


PLAIN_CONFIG = """
mail_fsync = never
"""


class ImapError(Exception):
    pass


def _astring(value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return b"{%d+}\r\n" % len(value) + value


class RawImap:
    def __init__(self, host, port, timeout=120):
        self.sock = socket.create_connection((host, port), timeout)
        self.buf = b""
        self.tag = 0
        self._readline()            # greeting

    def _readline(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ImapError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_response(self, tag):
        """Untagged lines (with literals inlined) until the tagged one."""
        untagged = []
        while True:
            line = self._readline()
            m = re.search(rb"\{(\d+)\}$", line)
            while m:
                n = int(m.group(1))
                while len(self.buf) < n:
                    self.buf += self.sock.recv(65536)
                line += b"\r\n" + self.buf[:n]
                self.buf = self.buf[n:]
                line += self._readline()
                m = re.search(rb"\{(\d+)\}$", line)
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1:]
                if not status.startswith(b"OK"):
                    raise ImapError(status.decode("utf-8", "replace"))
                return untagged
            untagged.append(line)

    def _next_tag(self):
        self.tag += 1
        return b"T%d" % self.tag

    def command(self, *parts):
        """parts: bytes are sent as they are, str values as literals."""
        tag = self._next_tag()
        out = [tag]
        for p in parts:
            out.append(_astring(p) if isinstance(p, str) else p)
        self.sock.sendall(b" ".join(out) + b"\r\n")
        return self._read_response(tag)

    def login(self, user, password):
        self.command(b"LOGIN", user, password)

    def select(self, mailbox):
        self.command(b"SELECT", mailbox)

    def create(self, mailbox):
        self.command(b"CREATE", mailbox)

    def append_many(self, mailbox, messages, window=200):
        """Pipelined APPENDs; returns the number appended."""
        pending = []
        done = 0
        for msg in messages:
            tag = self._next_tag()
            self.sock.sendall(tag + b" APPEND " + _astring(mailbox) +
                              b" " + _astring(msg) + b"\r\n")
            pending.append(tag)
            if len(pending) >= window:
                self._read_response(pending.pop(0))
                done += 1
        for tag in pending:
            self._read_response(tag)
            done += 1
        return done

    def uid_search(self, criteria):
        """criteria: list of bytes (atoms) and str (strings).  Returns the
        sorted list of UIDs."""
        lines = self.command(b"UID SEARCH CHARSET UTF-8", *criteria)
        uids = []
        for line in lines:
            if line.startswith(b"* SEARCH"):
                uids += [int(x) for x in line[8:].split()]
        return sorted(uids)

    def logout(self):
        try:
            self.command(b"LOGOUT")
        except (ImapError, OSError):
            pass
        self.sock.close()


def raw_imap(dovecot, user="testuser"):
    conn = RawImap(dovecot.host, dovecot.ports["imap"])
    conn.login(user, dovecot.users[user])
    return conn


LOOKUP_RE = re.compile(r"fts-lmdb: lookup (\S+): (\d+) of (\d+) args, "
                       r"(\d+) definite, (\d+) maybe")


def lookup_stats(dovecot, since=0):
    """[(mailbox, handled, args, definite, maybe)] from the debug log."""
    text = dovecot.info_log_text(since)
    return [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)),
             int(m.group(5))) for m in LOOKUP_RE.finditer(text)]


def info_log_mark(dovecot):
    import os
    try:
        return os.path.getsize(dovecot.info_log_path)
    except FileNotFoundError:
        return 0


def query_text(criteria):
    """A readable form of a criteria list, for failure messages."""
    out = []
    for p in criteria:
        out.append(p.decode() if isinstance(p, bytes) else '"%s"' % p)
    return " ".join(out)


# ---- reading (and damaging) an fts_lmdb index from the test ----

import ctypes
import os as _os
import struct


class _MdbVal(ctypes.Structure):
    _fields_ = [("mv_size", ctypes.c_size_t), ("mv_data", ctypes.c_void_p)]


_MDB_NOTFOUND = -30798
_MDB_RDONLY = 0x20000
_MDB_NOTLS = 0x200000
_MDB_NEXT = 8
_MDB_FIRST = 0


class FtsIndex:
    """Direct access to <root>/fts-lmdb with liblmdb through ctypes, as a
    second process would: for checks and for simulating damage."""

    def __init__(self, path, write=False):
        self.lib = ctypes.CDLL("liblmdb.so.0")
        self.env = ctypes.c_void_p()
        self._check(self.lib.mdb_env_create(ctypes.byref(self.env)))
        self.lib.mdb_env_set_maxdbs(self.env, 16)
        flags = _MDB_NOTLS | (0 if write else _MDB_RDONLY)
        self._check(self.lib.mdb_env_open(self.env, path.encode(), flags,
                                          0o600))
        self.write = write

    def _check(self, rc):
        if rc != 0:
            self.lib.mdb_strerror.restype = ctypes.c_char_p
            raise OSError(rc, self.lib.mdb_strerror(rc).decode())

    def close(self):
        self.lib.mdb_env_close(self.env)

    def _txn(self, write=False):
        txn = ctypes.c_void_p()
        self._check(self.lib.mdb_txn_begin(self.env, None,
                                           0 if write else _MDB_RDONLY,
                                           ctypes.byref(txn)))
        return txn

    def _dbi(self, txn, name):
        dbi = ctypes.c_uint()
        self._check(self.lib.mdb_dbi_open(txn, name.encode(), 0,
                                          ctypes.byref(dbi)))
        return dbi

    def items(self, name):
        txn = self._txn()
        try:
            dbi = self._dbi(txn, name)
            cur = ctypes.c_void_p()
            self._check(self.lib.mdb_cursor_open(txn, dbi, ctypes.byref(cur)))
            k, v = _MdbVal(), _MdbVal()
            op, out = _MDB_FIRST, []
            while self.lib.mdb_cursor_get(cur, ctypes.byref(k),
                                          ctypes.byref(v), op) == 0:
                out.append((ctypes.string_at(k.mv_data, k.mv_size),
                            ctypes.string_at(v.mv_data, v.mv_size)))
                op = _MDB_NEXT
            self.lib.mdb_cursor_close(cur)
            return out
        finally:
            self.lib.mdb_txn_abort(txn)

    def delete(self, name, key):
        txn = self._txn(write=True)
        dbi = self._dbi(txn, name)
        k = _MdbVal(len(key), ctypes.cast(ctypes.c_char_p(key),
                                          ctypes.c_void_p))
        rc = self.lib.mdb_del(txn, dbi, ctypes.byref(k), None)
        if rc != 0:
            self.lib.mdb_txn_abort(txn)
            self._check(rc)
        self._check(self.lib.mdb_txn_commit(txn))

    def boxes(self):
        """{guid bytes: (box_id, uidvalidity, last_uid, dead)}"""
        out = {}
        for k, v in self.items("fts_box"):
            if len(k) == 16 and len(v) == 20:
                out[k] = struct.unpack(">4xIIII", v)
        return out

    def uids(self, box_id):
        return [struct.unpack(">I", k[4:])[0] for k, _ in self.items("fts_uid")
                if struct.unpack(">I", k[:4])[0] == box_id]

    def postings(self, box_id, space, gram):
        """The UIDs of one posting list."""
        out = []
        prefix = struct.pack(">IcQ", box_id, space.encode(), gram)
        for k, v in self.items("fts_post"):
            if k[:13] != prefix:
                continue
            uid = struct.unpack(">I", k[13:])[0]
            n, pos = _varint(v, 0)
            out.append(uid)
            for _ in range(n - 1):
                d, pos = _varint(v, pos)
                uid += d
                out.append(uid)
        return out

    def post_box_ids(self):
        return sorted({struct.unpack(">I", k[:4])[0]
                       for k, _ in self.items("fts_post")})


def _varint(data, pos):
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7f) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def trigram(text):
    """The gram of a three-character normalized (here: ASCII uppercase)
    key, as fts-lmdb-codec.c packs it."""
    a, b, c = (ord(ch) for ch in text)
    return (a << 42) | (b << 21) | c


def fts_index_path(dovecot, user="testuser", root="Maildir"):
    return _os.path.join(dovecot.home(user), root, "fts-lmdb")
