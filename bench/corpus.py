"""Benchmark corpus: a deterministic, seeded generator, or a real folder/mbox.

Either way the result is a *prepared corpus*: a directory holding

  cur/          one file per message, LF line endings, named the way Dovecot's
                maildir names delivered mail (``<n>.bench,S=<size>,W=<vsize>:2,``)
                so it is a valid maildir ``cur/`` and can be imported or
                hard-linked as is;
  corpus.json   what it is (source, seed, count, sizes) and the planted items.

The generated mix follows /work/shared/docs/baseline.md: 55% text/plain,
10% quoted-printable and 5% base64 text, 30% multipart/alternative with
HTML, 5% with attachments, 8% RFC 2047 subjects in de/fr/es/ru/ja/zh/el/pl,
10% UTF-8 paragraphs, Zipf-distributed words, and planted test items
(phrases and reversed phrases, INV-2023-00NN tokens, e-mail addresses).

Message i depends only on (seed, i), so the corpus for N is a prefix of the
corpus for any larger N.
"""

import base64
import binascii
import bisect
import email.header
import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import time

GENERATOR_VERSION = 6

# ------------------------------------------------------------ vocabulary

_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r",
           "s", "t", "v", "w", "z", "br", "ch", "cl", "cr", "dr", "fl", "gr",
           "pl", "pr", "sh", "sl", "sp", "st", "str", "th", "tr", ""]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "y"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck",
          "rt", "x"]

VOCAB_SIZE = 40000
ZIPF_S = 1.0

# Non-ASCII words, per language (used in UTF-8 paragraphs and in subjects).
LANG_WORDS = {
    "de": ["Grüße", "Straße", "Mädchen", "über", "schön", "Käse", "Fußball",
           "Bücher", "Größe", "Prüfung", "Änderung", "Bestätigung"],
    "fr": ["café", "élève", "garçon", "être", "déjà", "façade", "naïve",
           "réunion", "données", "reçu", "après", "problème"],
    "es": ["año", "niño", "mañana", "señor", "corazón", "información",
           "reunión", "próxima", "también", "dirección"],
    "ru": ["привет", "спасибо", "письмо", "работа", "встреча", "отчёт",
           "пожалуйста", "документы", "вопрос", "сегодня"],
    "ja": ["東京", "会議", "資料", "確認", "お願い", "メール", "予定",
           "担当者", "報告書", "ありがとう"],
    "zh": ["北京", "会议", "报告", "邮件", "谢谢", "时间", "项目", "问题",
           "附件", "通知"],
    "el": ["καλημέρα", "ευχαριστώ", "συνάντηση", "έκθεση", "ερώτηση",
           "σήμερα", "αύριο", "έγγραφα"],
    "pl": ["dziękuję", "spotkanie", "źródło", "żółw", "łódź", "wiadomość",
           "proszę", "sprawozdanie", "gęś"],
}

FIRST_NAMES = ["kim", "lee", "ana", "bob", "eve", "max", "ivan", "lucia",
               "omar", "mei", "raj", "sara", "tom", "yuki", "olga", "piet",
               "nina", "carl", "zoe", "hugo", "ines", "jan", "li", "marta"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com",
           "lists.example.org", "corp.example"]
MAILERS = ["Mozilla Thunderbird 102.4", "Microsoft Outlook 16.0",
           "Apple Mail (2.3654)", "Mutt/2.2.9", "Roundcube Webmail/1.6",
           "Evolution 3.46", "K-9 Mail for Android", "Claws Mail 4.1"]

PHRASES = [("quarterly budget review meeting", 0.010,
            "meeting review budget quarterly", 0.003),
           ("orange submarine protocol", 0.005,
            "protocol submarine orange", 0.002)]


def build_vocab(seed):
    """VOCAB_SIZE distinct pseudo-words, shorter ones ranked first."""
    rng = random.Random("vocab-%s" % seed)
    words = set()
    out = []
    while len(out) < VOCAB_SIZE:
        n = rng.choice((1, 2, 2, 2, 3, 3, 3, 4))
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) +
                    rng.choice(_CODAS) for _ in range(n))
        if 2 <= len(w) <= 16 and w not in words and w.isalpha():
            words.add(w)
            out.append(w)
    # Natural languages rank short words first; keep it loosely so.
    out.sort(key=lambda w: (len(w) + rng.random() * 6))
    cum = list(itertools.accumulate(1.0 / (r + 2.7) ** ZIPF_S
                                    for r in range(len(out))))
    return out, cum


class Generator:
    def __init__(self, seed):
        self.seed = seed
        self.vocab, self.cum = build_vocab(seed)
        rng = random.Random("people-%s" % seed)
        self.addresses = []
        for i in range(3000):
            first = rng.choice(FIRST_NAMES)
            num = rng.randrange(1, 1000) if rng.random() < 0.8 else ""
            pre = rng.choice(["", "", "", "h", "j.", "dr."])
            self.addresses.append("%s%s%s@%s" % (pre, first, num,
                                                 rng.choice(DOMAINS)))
        # Planted: "kim3@example.com" occurs, and so do lookalikes
        # (hkim391@..., kim31@...) that a substring search must not lose.
        self.addresses[:4] = ["kim3@example.com", "hkim391@example.com",
                              "kim31@example.com", "ana.kim3@example.org"]
        self.addr_cum = list(itertools.accumulate(
            1.0 / (r + 1) ** 0.9 for r in range(len(self.addresses))))

    # -- pieces
    def words(self, rng, k):
        return rng.choices(self.vocab, cum_weights=self.cum, k=k)

    def address(self, rng):
        return rng.choices(self.addresses, cum_weights=self.addr_cum)[0]

    def text(self, rng, nbytes, utf8_langs=()):
        """Plain text of about nbytes, lines of ~11 words, paragraphs."""
        k = max(8, nbytes // 7)
        ws = self.words(rng, k)
        # Planted items, each as one element so it stays on one line.
        for phrase, p, rev, prev in PHRASES:
            if rng.random() < p:
                ws.insert(rng.randrange(len(ws)), phrase)
            if rng.random() < prev:
                ws.insert(rng.randrange(len(ws)), rev)
        if rng.random() < 0.02:
            ws.insert(rng.randrange(len(ws)),
                      "INV-2023-%04d" % rng.randrange(100))
        if rng.random() < 0.03:
            ws.insert(rng.randrange(len(ws)), self.address(rng))
        for lang in utf8_langs:
            lw = LANG_WORDS[lang]
            for _ in range(rng.randrange(3, 12)):
                ws.insert(rng.randrange(len(ws)), rng.choice(lw))
        lines = []
        for i in range(0, len(ws), 11):
            lines.append(" ".join(ws[i:i + 11]))
            if rng.random() < 0.15:
                lines.append("")
        if lines:
            lines[0] = lines[0][:1].upper() + lines[0][1:]
        return "\n".join(lines) + "\n"

    def subject(self, rng, i):
        ws = self.words(rng, rng.randrange(2, 8))
        if rng.random() < 0.05:
            ws.append("invoice")
        if rng.random() < 0.01:
            ws.append("INV-2023-%04d" % rng.randrange(100))
        s = " ".join(ws)
        s = s[:1].upper() + s[1:]
        prefix = rng.choice(["", "", "", "Re: ", "Fwd: ", "RE: "])
        return prefix + s

    def message(self, i):
        rng = random.Random("msg-%s-%d" % (self.seed, i))
        frm = self.address(rng)
        to = self.address(rng)
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                             time.gmtime(1672531200 + i * 1500 +
                                         rng.randrange(1500)))
        subject = self.subject(rng, i)
        langs = []
        if rng.random() < 0.10:
            langs = [rng.choice(sorted(LANG_WORDS))]
        if rng.random() < 0.08:
            lang = rng.choice(sorted(LANG_WORDS))
            subject = (subject + " " + " ".join(
                rng.sample(LANG_WORDS[lang], 2)))
            subj_hdr = email.header.Header(subject, "utf-8").encode()
        else:
            subj_hdr = subject
        # Body size: log-normal, median ~3 KB of text.
        size = int(min(600000, max(120, rng.lognormvariate(math.log(3400),
                                                           1.2))))
        body_text = self.text(rng, size, langs)
        charset = "utf-8" if langs else "us-ascii"
        hdr = ["From: %s <%s>" % (frm.split("@")[0].title(), frm),
               "To: %s" % to]
        if rng.random() < 0.2:
            hdr.append("Cc: %s" % self.address(rng))
        hdr += ["Subject: %s" % subj_hdr, "Date: %s" % date,
                "Message-ID: <%d.%s@mail.example.com>" %
                (i, hashlib.md5(b"%d" % i).hexdigest()[:12]),
                "X-Mailer: %s" % rng.choice(MAILERS)]
        if rng.random() < 0.25:
            hdr.append("List-Id: <dev.lists.example.org>")
        hdr.append("MIME-Version: 1.0")

        kind = rng.random()
        if kind < 0.55:
            part = self._plain(body_text, charset, "7bit" if not langs else "8bit")
        elif kind < 0.65:
            part = self._plain(body_text, "utf-8", "quoted-printable")
        elif kind < 0.70:
            part = self._plain(body_text, "utf-8", "base64")
        else:
            part = self._alternative(rng, body_text, i)
        if rng.random() < 0.05:
            part = self._with_attachment(rng, part, i)
        return ("\n".join(hdr) + "\n" + part).encode("utf-8")

    # -- MIME
    @staticmethod
    def _encode(text, cte):
        if cte == "quoted-printable":
            return binascii.b2a_qp(text.encode("utf-8")).decode("ascii")
        if cte == "base64":
            return base64.encodebytes(text.encode("utf-8")).decode("ascii")
        return text

    def _plain(self, text, charset, cte):
        return ("Content-Type: text/plain; charset=%s\n"
                "Content-Transfer-Encoding: %s\n\n%s" %
                (charset, cte, self._encode(text, cte)))

    def _alternative(self, rng, text, i):
        b = "=_alt_%d_%s" % (i, self.seed)
        html = "<html><body>\n" + "".join(
            "<p>%s</p>\n" % para.replace("\n", " ")
            for para in text.split("\n\n")) + "</body></html>\n"
        cte = rng.choice(["7bit", "quoted-printable", "quoted-printable"])
        if cte == "7bit":
            cte = "8bit"
        return ("Content-Type: multipart/alternative; boundary=\"%s\"\n\n"
                "This is a multi-part message in MIME format.\n\n"
                "--%s\nContent-Type: text/plain; charset=utf-8\n"
                "Content-Transfer-Encoding: %s\n\n%s\n"
                "--%s\nContent-Type: text/html; charset=utf-8\n"
                "Content-Transfer-Encoding: %s\n\n%s\n--%s--\n" %
                (b, b, cte, self._encode(text, cte), b, cte,
                 self._encode(html, cte), b))

    def _with_attachment(self, rng, inner, i):
        b = "=_mixed_%d_%s" % (i, self.seed)
        size = int(min(1400000, rng.lognormvariate(math.log(28000), 1.3)))
        if rng.random() < 0.4:
            rows = ["id,item,amount"]
            ws = self.words(rng, max(3, size // 20))
            for r in range(0, len(ws) - 1, 2):
                rows.append("%d,%s %s,%d" % (r, ws[r], ws[r + 1],
                                            rng.randrange(10000)))
            att = ("Content-Type: text/csv; charset=us-ascii; name=\"data%d.csv\"\n"
                   "Content-Disposition: attachment; filename=\"data%d.csv\"\n"
                   "Content-Transfer-Encoding: base64\n\n%s" %
                   (i, i, base64.encodebytes(
                       ("\n".join(rows) + "\n").encode()).decode()))
        else:
            blob = random.Random("blob-%d" % i).randbytes(size)
            att = ("Content-Type: application/pdf; name=\"doc%d.pdf\"\n"
                   "Content-Disposition: attachment; filename=\"doc%d.pdf\"\n"
                   "Content-Transfer-Encoding: base64\n\n%s" %
                   (i, i, base64.encodebytes(blob).decode()))
        return ("Content-Type: multipart/mixed; boundary=\"%s\"\n\n"
                "--%s\n%s\n--%s\n%s\n--%s--\n" % (b, b, inner, b, att, b))

    def planted(self):
        """Facts the query set is built from."""
        return {"vocab_head": self.vocab[:50],
                "vocab_rank": {str(r): self.vocab[r] for r in
                               (0, 1, 5, 10, 50, 200, 500, 2000, 8000,
                                20000, 30000, 39000)},
                "common4": [w for w in self.vocab[:1000] if len(w) >= 4][:3],
                "phrases": [(p, r) for p, _, r, _ in PHRASES]}


# ------------------------------------------------------------ prepared corpus

def _name(i, data):
    vsize = len(data) + data.count(b"\n")
    return "%08d.bench,S=%d,W=%d:2," % (i + 1, len(data), vsize)


def _write_prepared(dest, messages, meta):
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "cur"))
    os.makedirs(os.path.join(tmp, "new"))
    os.makedirs(os.path.join(tmp, "tmp"))
    sizes = []
    for i, data in enumerate(messages):
        with open(os.path.join(tmp, "cur", _name(i, data)), "wb") as f:
            f.write(data)
        sizes.append(len(data))
    meta["count"] = len(sizes)
    meta["bytes"] = sum(sizes)
    s = sorted(sizes)
    meta["median"] = s[len(s) // 2] if s else 0
    meta["p99"] = s[min(len(s) - 1, int(len(s) * 0.99))] if s else 0
    meta["max"] = s[-1] if s else 0
    with open(os.path.join(tmp, "corpus.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    for d, _, files in os.walk(dest):
        os.chmod(d, 0o755)
        for n in files:
            os.chmod(os.path.join(d, n), 0o644)
    return meta


def generate(dest, n, seed):
    """Generate (or reuse) the seeded corpus of n messages at dest."""
    meta_path = os.path.join(dest, "corpus.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta.get("source") == "generated" and meta.get("n") == n and
                meta.get("seed") == seed and
                meta.get("version") == GENERATOR_VERSION):
            return meta
    except (OSError, ValueError):
        pass
    gen = Generator(seed)
    meta = {"source": "generated", "n": n, "seed": seed,
            "version": GENERATOR_VERSION, "planted": gen.planted()}
    return _write_prepared(dest, (gen.message(i) for i in range(n)), meta)


def _split_mbox(data):
    msgs = []
    cur = None
    for line in data.split(b"\n"):
        if line.startswith(b"From "):
            if cur is not None:
                msgs.append(cur)
            cur = []
            continue
        if cur is None:
            cur = []
        if re.match(rb"^>+From ", line):
            line = line[1:]
        cur.append(line)
    if cur:
        msgs.append(cur)
    return [b"\n".join(m).rstrip(b"\n") + b"\n" for m in msgs if any(m)]


def _normalize(data):
    data = data.replace(b"\r\n", b"\n")
    if data.startswith(b"From "):         # mbox separator, not a header
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    if not data.endswith(b"\n"):
        data += b"\n"
    return data


def load_real(dest, src, n=None):
    """Prepare a real corpus from a folder of message files or an mbox."""
    src = os.path.abspath(src)
    msgs = []
    if os.path.isfile(src):
        with open(src, "rb") as f:
            msgs = _split_mbox(f.read())
    else:
        paths = []
        for d, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                if name.upper().startswith(("SOURCE", "README")) or \
                        name.endswith((".md", ".json")):
                    continue
                paths.append(os.path.join(d, name))
        for p in paths:
            with open(p, "rb") as f:
                data = f.read()
            if data.startswith(b"From ") and data.count(b"\nFrom ") > 0:
                msgs.extend(_split_mbox(data))
            else:
                msgs.append(_normalize(data))
    msgs = [m for m in msgs if b"\n\n" in m or b":" in m.split(b"\n", 1)[0]]
    if n:
        msgs = msgs[:n]
    meta = {"source": src, "n": len(msgs), "seed": None, "planted": None}
    return _write_prepared(dest, msgs, meta)


def message_paths(prepared):
    cur = os.path.join(prepared, "cur")
    return [os.path.join(cur, n) for n in sorted(os.listdir(cur))]


def read_messages(prepared, limit=None):
    out = []
    for p in message_paths(prepared)[:limit]:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def text_sample(prepared, rng, k=2000):
    """Words from real mail, for drawing queries (CORPUS=DIR)."""
    paths = message_paths(prepared)
    words = []
    for p in rng.sample(paths, min(len(paths), 400)):
        with open(p, "rb") as f:
            data = f.read().decode("utf-8", "replace")
        body = data.split("\n\n", 1)[-1]
        words.extend(re.findall(r"[A-Za-z]{4,14}", body)[:200])
    return words
