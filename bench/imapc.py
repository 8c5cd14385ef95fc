"""Small, fast IMAP and LMTP clients for the benchmark (stdlib sockets).

imaplib builds every response in memory line by line; for 20,000-message
FETCH responses this client reads with one large buffer and can count
literal bytes instead of keeping them.  Commands are sent one at a time
(the figures are per-command latencies), except where a caller pipelines
explicitly.
"""

import re
import socket
import time

_LITERAL_RE = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ImapError(Exception):
    pass


class Imap:
    def __init__(self, host, port, user=None, password=None, timeout=600):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=1 << 20)
        self.tagn = 0
        self.greeting = self.rfile.readline()
        if not self.greeting.startswith(b"* OK"):
            raise ImapError("bad greeting %r" % self.greeting)
        if user is not None:
            self.check("LOGIN %s %s" % (quote(user), quote(password)))

    def close(self):
        try:
            self.command("LOGOUT")
        except (OSError, ImapError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _tag(self):
        self.tagn += 1
        return b"A%05d" % self.tagn

    def send(self, data):
        self.sock.sendall(data)

    def read_response(self, tag, keep=True):
        """Read until the tagged reply.  Returns (status_line, untagged,
        literal_bytes): untagged responses (with literals inline) if keep,
        else [] and only the byte count of literals."""
        untagged = []
        nlit = 0
        rl = self.rfile.readline
        while True:
            line = rl()
            if not line:
                raise ImapError("connection closed")
            parts = None
            while True:
                m = _LITERAL_RE.search(line)
                if not m:
                    break
                n = int(m.group(1))
                data = self.rfile.read(n)
                if len(data) != n:
                    raise ImapError("connection closed in literal")
                nlit += n
                if keep:
                    if parts is None:
                        parts = []
                    parts.append(line)
                    parts.append(data)
                line = rl()
                if not line:
                    raise ImapError("connection closed")
            if parts is not None:
                parts.append(line)
                line = b"".join(parts)
            if line.startswith(tag + b" "):
                return line, untagged, nlit
            if line.startswith(b"+"):
                continue
            if keep:
                untagged.append(line)

    def command(self, cmd, keep=True):
        """Send one command (str or bytes); return (status_line, untagged,
        literal_bytes).  Literals in cmd must be LITERAL+ ({n+})."""
        tag = self._tag()
        if isinstance(cmd, str):
            cmd = cmd.encode("utf-8")
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        return self.read_response(tag, keep)

    def check(self, cmd, keep=True):
        st, un, n = self.command(cmd, keep)
        if not st.split(b" ", 2)[1:2] == [b"OK"]:
            raise ImapError("%r -> %r" % (cmd[:200] if isinstance(cmd, (str, bytes)) else cmd, st))
        return un, n

    def timed(self, cmd, keep=True):
        t = time.perf_counter()
        un, n = self.check(cmd, keep)
        return time.perf_counter() - t, un, n

    def append(self, mailbox, msg, flags=""):
        """APPEND one message (CRLF bytes) with LITERAL+: one round trip."""
        tag = self._tag()
        self.sock.sendall(b"%s APPEND %s (%s) {%d+}\r\n" %
                          (tag, quote(mailbox).encode(), flags.encode(),
                           len(msg)) + msg + b"\r\n")
        st, _, _ = self.read_response(tag, keep=False)
        if b" OK" not in st[:12]:
            raise ImapError("APPEND -> %r" % st)

    def search(self, criteria, charset=None, uid=True):
        """SEARCH with criteria given as a list of atoms/strings; strings
        with non-ASCII or specials are sent as LITERAL+.  Returns
        (seconds, [uids])."""
        out = [b"UID SEARCH" if uid else b"SEARCH"]
        if charset:
            out.append(b"CHARSET " + charset.encode())
        for c in criteria:
            out.append(atom_or_literal(c))
        t = time.perf_counter()
        un, _ = self.check(b" ".join(out))
        dt = time.perf_counter() - t
        res = []
        for line in un:
            if line.startswith(b"* SEARCH"):
                res.extend(int(x) for x in line[8:].split())
        return dt, res


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ATOM_RE = re.compile(rb"^[A-Za-z0-9.:*_\\-]+$")


def atom_or_literal(c):
    if isinstance(c, str):
        b = c.encode("utf-8")
        if isinstance(c, Atom):
            return b
    else:
        b = c
    if _ATOM_RE.match(b) and not b.upper() in (b"NIL",):
        return b'"' + b + b'"'
    if all(32 <= x < 127 and x not in b'"\\' for x in b):
        return b'"' + b + b'"'
    return b"{%d+}\r\n" % len(b) + b


class Atom(str):
    """A search key keyword (sent as is, unquoted)."""


def uid_set(uids):
    """Compact IMAP set from sorted ints."""
    out = []
    start = prev = None
    for u in uids:
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            out.append("%d" % start if start == prev else "%d:%d" % (start, prev))
            start = prev = u
    if start is not None:
        out.append("%d" % start if start == prev else "%d:%d" % (start, prev))
    return ",".join(out)


# ------------------------------------------------------------ LMTP

class Lmtp:
    """LMTP with PIPELINING: MAIL, RCPT and DATA go out together, then the
    message; two round trips per delivery."""

    def __init__(self, host, port, timeout=600):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=1 << 16)
        self.reply()
        self.sock.sendall(b"LHLO bench.localhost\r\n")
        code, lines = self.reply()
        if code != 250 or not any(b"PIPELINING" in l for l in lines):
            raise ImapError("LHLO -> %r" % lines)

    def reply(self):
        lines = []
        while True:
            line = self.rfile.readline()
            if not line:
                raise ImapError("LMTP connection closed")
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def deliver(self, rcpt, msg, sender="bench@example.com"):
        """msg: CRLF bytes."""
        self.sock.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" %
                          (sender.encode(), rcpt.encode()))
        for want in (250, 250, 354):
            code, lines = self.reply()
            if code != want:
                raise ImapError("LMTP %d: %r" % (code, lines))
        if msg.startswith(b"."):
            msg = b"." + msg
        msg = msg.replace(b"\r\n.", b"\r\n..")
        if not msg.endswith(b"\r\n"):
            msg += b"\r\n"
        self.sock.sendall(msg + b".\r\n")
        code, lines = self.reply()
        if code != 250:
            raise ImapError("LMTP DATA %d: %r" % (code, lines))

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, ImapError):
            pass
        self.sock.close()
