"""A seeded, deterministic corpus of tricky messages and a query set over
it, for the fts_lmdb equivalence test.

generate_corpus(seed, count) -> list of (mailbox, raw message bytes)
generate_queries(seed, corpus, count) -> list of criteria lists for
    RawImap.uid_search (bytes = atoms, str = strings)
corpus_queries(seed, messages, count) -> the same for real mail

The messages mix what makes substring search hard: RFC 2047 words in
several charsets, quoted-printable soft breaks inside words, base64
bodies, legacy charsets, HTML (entities, tags splitting words), nested
multiparts with preambles, forwarded messages, attachments, groups and
odd addresses, folded and whitespace-heavy subjects, duplicate and
custom headers, a 40 KB header, CJK, Greek, Cyrillic, decomposed accents,
ligatures, emoji, invalid UTF-8 and unknown charsets or encodings.
"""

import base64
import quopri
import random

WORDS = """
alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega
account address agenda answer archive budget calendar contract customer
deadline delivery document estimate feature finance forecast invoice
kernel ledger license meeting message network office payment pipeline
planning printer project quarter question receipt release report request
revenue review schedule server service shipping signature storage summary
supplier support ticket timeline training travel update upgrade vacation
vendor version warranty website workflow masticate masticates mastication
cafeteria carpet carpenter carpool strawberry blueberry raspberry
the and for with from this that have will your about which their there
what when where would could should other these those because between
""".split()

ACCENTED = ["café", "naïve", "Ångström", "Straße", "façade", "jalapeño",
            "crème", "brûlée", "Zürich", "São", "Łódź", "Dvořák",
            "smørrebrød", "œuvre", "ﬁnance", "İstanbul", "Ǆemal",
            "résumé", "coöperate", "Mañana"]
GREEK = ["Αθήνα", "ελληνικά", "σοφία", "ΣΟΦΙΑΣ", "λόγος"]
CYRILLIC = ["Москва", "привет", "ёлка", "Ёжик", "почта"]
CJK = ["東京", "中文", "日本語", "한국어", "検索", "郵便"]
EMOJI = ["😀", "🎉", "📧"]
PUNCT = ["C++", "e.g.", "50%", "$100", "can't", "well-known", "R&D",
         "foo_bar", "a/b", "x@y", "#hash", "(paren)", "[bracket]", "1.5.0"]
DECOMPOSED = ["cafe\u0301", "nai\u0308ve", "A\u030angstro\u0308m"]

DOMAINS = ["example.com", "example.org", "mail.example.net", "lists.test",
           "xn--bcher-kva.example", "sub.domain.example.co.uk"]
NAMES = ["Ann Lee", "Bob Stone", "Kim Park", "Hugo Müller", "Zoë Ångström",
         "Ivan Петров", "田中 太郎", "O'Brien, Pat", "Dr. Jekyll (MD)",
         "kim3", "Hkim391"]

CHARSETS = ["utf-8", "iso-8859-1", "iso-8859-2", "iso-8859-15",
            "windows-1252", "koi8-r", "iso-2022-jp", "gb2312"]

HEADER_NAMES = ["X-Mailer", "X-Tag", "x-tag", "X-Priority", "List-Id",
                "X-Encoded", "Keywords", "Comments", "X-Empty",
                "In-Reply-To", "References", "X-Spam-Score", "X-Long"]

PHRASES = [("quick", "brown", "fox"), ("lazy", "dog", "sleeps"),
           ("alpha", "beta", "gamma"), ("red", "green", "blue")]


def _encodable(word, charset):
    try:
        word.encode(charset)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _words_for(charset):
    pool = list(WORDS)
    for group in (ACCENTED, GREEK, CYRILLIC, CJK, PUNCT):
        pool += [w for w in group if _encodable(w, charset)]
    if charset == "utf-8":
        pool += EMOJI + DECOMPOSED
    return pool


WORDS_FOR = {cs: _words_for(cs) for cs in CHARSETS}


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.addresses = []
        for i in range(60):
            local = self.r.choice(["kim", "ann", "bob", "sales", "info",
                                   "no-reply", "first.last", "user+tag",
                                   "hkim", "Kim3"]) + str(self.r.randrange(500))
            self.addresses.append(local + "@" + self.r.choice(DOMAINS))
        self.addresses += ["kim3@example.com", "hkim391@example.com",
                           "KIM3@EXAMPLE.COM"]
        # text that went into the messages, for drawing queries
        self.body_samples = []
        self.subject_samples = []
        self.header_samples = []

    # ---- pieces ----

    def word(self, charset="utf-8"):
        r = self.r
        w = r.choice(WORDS_FOR[charset])
        case = r.random()
        if case < 0.15:
            w = w.upper()
        elif case < 0.3:
            w = w.capitalize()
        return w

    def sentence(self, charset="utf-8", n=None):
        r = self.r
        n = n or r.randrange(4, 16)
        words = [self.word(charset) for _ in range(n)]
        x = r.random()
        if x < 0.08:
            words.insert(r.randrange(len(words) + 1),
                         "INV-2023-%04d" % r.randrange(100))
        elif x < 0.16:
            p = r.choice(PHRASES)
            if r.random() < 0.4:
                p = tuple(reversed(p))
            pos = r.randrange(len(words) + 1)
            words[pos:pos] = list(p)
        elif x < 0.2:
            words.append(r.choice(self.addresses))
        sep = " " if r.random() < 0.9 else r.choice(["  ", "\t", " - ",
                                                      ", "])
        return sep.join(words) + r.choice([".", "!", "?", "", ":"])

    def paragraph(self, charset="utf-8"):
        lines = [self.sentence(charset)
                 for _ in range(self.r.randrange(1, 8))]
        text = "\n".join(lines)
        self.body_samples.append(text)
        return text

    def address(self):
        r = self.r
        addr = r.choice(self.addresses)
        kind = r.random()
        if kind < 0.3:
            return addr
        name = r.choice(NAMES)
        if kind < 0.45:
            return "%s <%s>" % (self.encode_word(name), addr)
        if kind < 0.6:
            return '"%s" <%s>' % (name.replace('"', ''), addr)
        if kind < 0.7 and all(ord(c) < 128 for c in name) and \
                "," not in name and "(" not in name:
            return "%s <%s>" % (name, addr)
        if kind < 0.75:
            return "<%s>" % addr
        if kind < 0.8:
            return "%s (%s)" % (addr, r.choice(["comment", "Ann Lee"]))
        return "%s <%s>" % (self.encode_word(name, force=True), addr)

    def address_list(self, maxn=4):
        r = self.r
        if r.random() < 0.05:
            return "undisclosed-recipients:;"
        if r.random() < 0.05:
            return "Team: %s, %s;" % (self.address(), self.address())
        if r.random() < 0.03:
            return "not an address at all"
        return ", ".join(self.address() for _ in range(r.randrange(1, maxn + 1)))

    def encode_word(self, text, force=False):
        """Maybe an RFC 2047 encoded word (B or Q, some charset)."""
        r = self.r
        if not force and all(ord(c) < 128 for c in text) and \
                r.random() < 0.7:
            return text
        charsets = [cs for cs in CHARSETS if _encodable(text, cs)]
        cs = r.choice(charsets) if charsets else "utf-8"
        data = text.encode(cs)
        if r.random() < 0.5:
            enc = base64.b64encode(data).decode()
            return "=?%s?B?%s?=" % (cs, enc)
        q = quopri.encodestring(data, header=True).decode()
        q = q.replace("?", "=3F").replace("\n", "")
        return "=?%s?Q?%s?=" % (cs, q)

    def subject(self):
        r = self.r
        kind = r.random()
        words = [self.word() for _ in range(r.randrange(1, 8))]
        if r.random() < 0.1:
            words.insert(0, "INV-2023-%04d" % r.randrange(100))
        if r.random() < 0.08:
            words[1:1] = list(r.choice(PHRASES))
        text = " ".join(words)
        self.subject_samples.append(text)
        if kind < 0.4:
            return text
        if kind < 0.55:
            # runs of spaces and tabs: SUBJECT compresses them
            return r.choice(["  ", "\t", " \t "]).join(words) + \
                r.choice(["", "  ", "\t"])
        if kind < 0.7:
            # several encoded words
            return " ".join(self.encode_word(w, force=r.random() < 0.5)
                            for w in words)
        if kind < 0.8:
            # folded
            half = len(words) // 2 or 1
            return " ".join(words[:half]) + "\r\n\t" + " ".join(words[half:])
        if kind < 0.9:
            return "Re: Fwd: " + self.encode_word(text, force=True)
        if kind < 0.95:
            return "[list-%d] %s" % (r.randrange(5), text)
        return ""

    # ---- bodies ----

    def text_part(self, ctype="text/plain", charset=None, cte=None,
                  text=None):
        r = self.r
        charset = charset or r.choice(CHARSETS[:6] + ["utf-8"] * 4)
        wcs = charset if charset in WORDS_FOR else "utf-8"
        text = text if text is not None else "\n\n".join(
            self.paragraph(wcs) for _ in range(r.randrange(1, 4)))
        if charset == "x-unknown":
            data = text.encode("utf-8")
        else:
            data = text.encode(charset, "replace")
        if cte is None:
            if charset in ("iso-2022-jp",):
                cte = "7bit"
            else:
                cte = r.choice(["8bit", "quoted-printable", "base64",
                                "quoted-printable"])
        if cte == "7bit" and any(b >= 128 for b in data):
            cte = "quoted-printable"
        return self.mime_leaf(ctype + "; charset=" + charset, cte, data)

    def mime_leaf(self, ctype, cte, data, extra_headers=""):
        if cte == "quoted-printable":
            body = quopri.encodestring(data.replace(b"\n", b"\r\n"))
            # short soft-broken lines split words
            if self.r.random() < 0.5:
                body = _qp_rewrap(body, self.r.randrange(20, 60))
        elif cte == "base64":
            body = base64.encodebytes(data)
        else:
            body = data
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        head = "Content-Type: %s\r\nContent-Transfer-Encoding: %s\r\n%s" % (
            ctype, cte, extra_headers)
        return head.encode() + b"\r\n" + body

    def html_part(self):
        r = self.r
        paras = []
        for _ in range(r.randrange(1, 4)):
            words = self.sentence().split(" ")
            out = []
            for w in words:
                x = r.random()
                if x < 0.1:
                    out.append("<b>%s</b>" % w)
                elif x < 0.15 and len(w) > 3:
                    # a tag inside a word
                    out.append("%s<i>%s</i>" % (w[:2], w[2:]))
                elif x < 0.2:
                    out.append(w.replace("é", "&eacute;").replace("&", "&amp;"))
                elif x < 0.23:
                    out.append(w + "&nbsp;")
                else:
                    out.append(w)
            paras.append("<p>" + " ".join(out) + "</p>")
        html = ("<html><head><style>p {color: red}</style></head><body>"
                "<div class=\"msg\">%s</div></body></html>" % "\n".join(paras))
        return self.text_part("text/html", "utf-8",
                              r.choice(["8bit", "quoted-printable"]), html)

    def attachment(self):
        r = self.r
        kind = r.random()
        if kind < 0.4:
            data = bytes(r.randrange(256) for _ in range(r.randrange(100, 3000)))
            return self.mime_leaf("application/pdf; name=\"doc.pdf\"", "base64",
                                  data, "Content-Disposition: attachment; "
                                  "filename=\"doc.pdf\"\r\n")
        if kind < 0.7:
            rows = "\n".join(",".join(self.word() for _ in range(4))
                             for _ in range(r.randrange(2, 10)))
            self.body_samples.append(rows)
            return self.mime_leaf("text/csv; charset=utf-8",
                                  r.choice(["base64", "8bit"]),
                                  rows.encode(), "Content-Disposition: "
                                  "attachment; filename=\"t.csv\"\r\n")
        data = bytes(r.randrange(256) for _ in range(500))
        return self.mime_leaf("image/png", "base64", data,
                              "Content-Disposition: inline\r\n")

    def multipart(self, subtype, parts, preamble=True):
        r = self.r
        boundary = "b%08x" % r.randrange(1 << 32)
        out = [b"Content-Type: multipart/%s; boundary=\"%s\"\r\n\r\n" %
               (subtype.encode(), boundary.encode())]
        if preamble and r.random() < 0.5:
            out.append(b"PREAMBLEWORD this text is not searched\r\n")
        for p in parts:
            out.append(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n")
        out.append(b"--" + boundary.encode() + b"--\r\n")
        if preamble and r.random() < 0.3:
            out.append(b"EPILOGUEWORD trailing text\r\n")
        return b"".join(out)

    def body(self, depth=0):
        """(top-level Content-* header bytes + CRLF + body) of a message."""
        r = self.r
        kind = r.random()
        if kind < 0.40 or depth > 1:
            return self.text_part()
        if kind < 0.60:
            return self.multipart("alternative", [self.text_part(),
                                                  self.html_part()])
        if kind < 0.72:
            parts = [self.text_part()] + [self.attachment()
                                          for _ in range(r.randrange(1, 3))]
            return self.multipart("mixed", parts)
        if kind < 0.78:
            inner = self.multipart("alternative", [self.text_part(),
                                                   self.html_part()])
            return self.multipart("mixed", [inner, self.attachment()])
        if kind < 0.84:
            fwd = self.headers(forwarded=True) + self.body(depth + 1)
            return self.multipart("mixed", [
                self.text_part(),
                b"Content-Type: message/rfc822\r\n\r\n" + fwd])
        if kind < 0.88:
            return self.html_part()
        if kind < 0.90:
            # no Content-Type at all: text/plain us-ascii
            text = self.paragraph("utf-8")
            self.body_samples.append(text)
            return b"\r\n" + text.encode("ascii", "replace").replace(
                b"\n", b"\r\n")
        if kind < 0.92:
            return self.text_part(charset="x-unknown", cte="8bit")
        if kind < 0.94:
            text = self.paragraph()
            return self.mime_leaf("text/plain; charset=utf-8", "x-uuencode",
                                  text.encode())
        if kind < 0.96:
            # invalid UTF-8 declared as UTF-8
            data = self.paragraph().encode() + b" bad\xff\xfebytes \xc3( end"
            return self.mime_leaf("text/plain; charset=utf-8", "8bit", data)
        if kind < 0.98:
            long_line = " ".join(self.word() for _ in range(2000))
            self.body_samples.append(long_line)
            return self.text_part(charset="utf-8", cte="8bit", text=long_line)
        return self.text_part("text/enriched", "utf-8")

    def headers(self, forwarded=False, big=False):
        r = self.r
        h = []
        h.append("From: " + self.address_list(1 if r.random() < 0.9 else 2))
        if r.random() < 0.95:
            h.append("To: " + self.address_list())
        if r.random() < 0.3:
            h.append("Cc: " + self.address_list())
        if r.random() < 0.1:
            h.append("Bcc: " + self.address_list(2))
        subj = self.subject()
        if r.random() < 0.97:
            h.append("Subject: " + subj)
        h.append("Date: Mon, %d Jan 2024 %02d:%02d:00 +0000" %
                 (r.randrange(1, 29), r.randrange(24), r.randrange(60)))
        h.append("Message-ID: <%08x.%d@%s>" % (r.randrange(1 << 32),
                                                r.randrange(1000),
                                                r.choice(DOMAINS)))
        if not forwarded:
            for _ in range(r.randrange(0, 3)):
                h.append("Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n"
                         "\tby mail.example.com with ESMTP id %08X;\r\n"
                         "\tMon, 1 Jan 2024 00:00:00 +0000" %
                         (r.randrange(9), r.choice(DOMAINS), r.randrange(9),
                          r.choice(DOMAINS), r.randrange(255),
                          r.randrange(1 << 32)))
            for name in r.sample(HEADER_NAMES, r.randrange(0, 4)):
                if name == "X-Long" and not big:
                    continue
                h.append("%s: %s" % (name, self.header_value(name)))
                if r.random() < 0.1:
                    h.append("%s: %s" % (name, self.header_value(name)))
        if big:
            h.append("X-Long: " + " ".join(self.word()
                                           for _ in range(6000))[:40000])
        h.append("MIME-Version: 1.0")
        return ("\r\n".join(h) + "\r\n").encode("utf-8")

    def header_value(self, name):
        r = self.r
        if name == "X-Empty":
            return ""
        if name == "X-Encoded":
            return self.encode_word(r.choice(ACCENTED + GREEK + CJK),
                                    force=True)
        if name in ("In-Reply-To", "References"):
            return "<%08x@%s>" % (r.randrange(1 << 32), r.choice(DOMAINS))
        if name == "List-Id":
            return "Project list <project.lists.test>"
        value = " ".join(self.word() for _ in range(r.randrange(1, 5)))
        self.header_samples.append((name, value))
        return value

    def message(self, big=False):
        return self.headers(big=big) + self.body()


def _qp_rewrap(body, width):
    """Re-wrap quoted-printable lines with soft breaks every width chars."""
    out = []
    for line in body.split(b"\r\n"):
        plain = line.rstrip(b"=") if line.endswith(b"=") else line
        soft = line.endswith(b"=")
        while len(plain) > width:
            cut = width
            # never cut inside an =XX escape
            while cut > 0 and b"=" in plain[max(0, cut - 2):cut]:
                cut -= 1
            if cut == 0:
                break
            out.append(plain[:cut] + b"=")
            plain = plain[cut:]
        out.append(plain + (b"=" if soft else b""))
    return b"\r\n".join(out)


def generate_corpus(seed, count, mailboxes=("INBOX", "Archive", "Lists")):
    """[(mailbox, message bytes)] and the generator (for query samples)."""
    g = Gen(seed)
    out = []
    weights = [0.65, 0.2, 0.15][:len(mailboxes)]
    for i in range(count):
        box = g.r.choices(mailboxes, weights)[0]
        out.append((box, g.message(big=(i % 1500 == 7))))
    return out, g


# ---- queries ----

def _case_variant(r, key):
    x = r.random()
    if x < 0.25:
        return key.lower()
    if x < 0.5:
        return key.upper()
    if x < 0.6:
        return key.swapcase()
    return key


def _infix(r, text, lo=1, hi=12):
    text = text.replace("\n", " ")
    if not text:
        return "x"
    n = r.randrange(lo, hi + 1)
    start = r.randrange(max(1, len(text) - n + 1))
    return text[start:start + n]


class QueryGen:
    def __init__(self, seed, gen=None, texts=None, addresses=None,
                 subjects=None, headers=None):
        self.r = random.Random(seed)
        self.texts = texts if texts is not None else gen.body_samples
        self.subjects = subjects if subjects is not None else \
            gen.subject_samples
        self.addresses = addresses if addresses is not None else \
            gen.addresses
        self.headers = headers if headers is not None else gen.header_samples
        self.vocab = [w for t in self.texts[:500] for w in t.split()]

    def key(self, kind):
        """A search string for a key of this kind."""
        r = self.r
        x = r.random()
        if kind in ("FROM", "TO", "CC", "BCC"):
            a = r.choice(self.addresses)
            y = r.random()
            if y < 0.3:
                return _case_variant(r, a)
            if y < 0.5:
                return a.split("@")[0]
            if y < 0.65:
                return "@" + a.split("@")[1]
            if y < 0.8:
                return _infix(r, a, 1, 6)
            return r.choice(NAMES + ["Müller", "Петров", "田中", "o'brien",
                                     '"', "<", "undisclosed", "Team",
                                     "kim3@example.com", "m3@ex"])
        if kind == "SUBJECT":
            s = r.choice(self.subjects) if self.subjects else "x"
            if x < 0.3:
                return _case_variant(r, _infix(r, s, 1, 15))
            if x < 0.45:
                words = s.split()
                i = r.randrange(len(words)) if words else 0
                return "  ".join(words[i:i + 2]) if x < 0.35 else \
                    " ".join(words[i:i + 2])
            if x < 0.55:
                return r.choice(["Re:", "Fwd", "[list-1]", "INV-2023-00",
                                 "re: fwd:"])
        if x < 0.3 and self.vocab:
            return _case_variant(r, r.choice(self.vocab))
        if x < 0.55 and self.texts:
            return _infix(r, r.choice(self.texts), 1, 14)
        if x < 0.65 and self.vocab:
            w = r.choice(self.vocab)
            return _infix(r, w, 1, max(1, len(w) - 1))
        if x < 0.72:
            p = r.choice(PHRASES)
            return " ".join(p if r.random() < 0.5 else reversed(p))
        if x < 0.8:
            return r.choice(ACCENTED + GREEK + CYRILLIC + CJK + EMOJI +
                            PUNCT + DECOMPOSED + ["cafe", "CAFE", "strasse",
                                                  "STRASSE", "ss", "fi",
                                                  "i", "é", "ë", "中", "日本"])
        if x < 0.86:
            return "INV-2023-%04d" % r.randrange(110)
        if x < 0.9:
            return r.choice(["PREAMBLEWORD", "EPILOGUEWORD", "<div", "nbsp",
                             "&eacute;", "class=", "bad", "bytes",
                             "=?utf-8?", "Content-Type", "boundary"])
        if x < 0.95:
            return r.choice(["a", "e", "x", "q", "z", "ab", "th", "zz",
                             "1", "00", "@", ".", "-", " ", "é", "ü"])
        return "".join(r.choice("abcdefghij") for _ in range(r.randrange(3, 9)))

    def simple(self):
        r = self.r
        kind = r.choices(["BODY", "TEXT", "SUBJECT", "FROM", "TO", "CC",
                          "BCC", "HEADER"],
                         [30, 20, 14, 10, 8, 5, 3, 10])[0]
        if kind != "HEADER":
            return [kind.encode(), self.key(kind)]
        if self.headers and r.random() < 0.6:
            name, value = r.choice(self.headers)
            key = _infix(r, value, 1, 10) if r.random() < 0.8 else ""
        else:
            name = r.choice(HEADER_NAMES + ["Subject", "From", "To",
                                            "Message-ID", "Received",
                                            "Date", "X-Nonexistent",
                                            "MIME-Version",
                                            "Content-Type"])
            key = "" if r.random() < 0.4 else self.key("BODY")
        name = _case_variant(r, name)
        return [b"HEADER", name, key]

    def query(self):
        r = self.r
        x = r.random()
        if x < 0.5:
            return self.simple()
        if x < 0.65:
            return self.simple() + self.simple()
        if x < 0.75:
            return [b"NOT"] + self.simple()
        if x < 0.85:
            return [b"OR"] + self.simple() + self.simple()
        if x < 0.9:
            return [b"OR", b"("] + self.simple() + [b"NOT"] + \
                self.simple() + [b")", b"("] + self.simple() + \
                self.simple() + [b")"]
        if x < 0.93:
            # mixed with keys fts doesn't handle
            return self.simple() + r.choice([[b"UID", b"1:500"],
                                             [b"SMALLER", b"4000"],
                                             [b"NOT", b"DELETED"]])
        if x < 0.96:
            # one header searched in two forms
            a = r.choice(self.addresses)
            return [b"FROM", a.split("@")[0], b"HEADER", "From",
                    _infix(r, a, 2, 5)]
        return [b"NOT", b"("] + self.simple() + [b"OR"] + self.simple() + \
            self.simple() + [b")"]


def generate_queries(seed, gen, count):
    q = QueryGen(seed, gen)
    return [q.query() for _ in range(count)]
