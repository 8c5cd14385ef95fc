"""The SEARCH query set: 12 classes, built from what the corpus planted
(generated corpus) or drawn from the mail's own text (CORPUS=DIR)."""

import collections
import random
import re

from imapc import Atom

CLASSES = ["rare word", "common word", "infix", "1-2 chars", "phrase",
           "reversed phrase", "FROM address part", "SUBJECT", "HEADER",
           "non-ASCII", "NOT", "OR"]
# Classes whose keys search message text (BODY/TEXT): the 100x target.
BODY_CLASSES = ["rare word", "common word", "infix", "1-2 chars", "phrase",
                "reversed phrase", "non-ASCII", "NOT", "OR"]

B, T, F, S, H = (Atom("BODY"), Atom("TEXT"), Atom("FROM"), Atom("SUBJECT"),
                 Atom("HEADER"))
NOT, OR = Atom("NOT"), Atom("OR")


class Query:
    def __init__(self, cls, criteria):
        self.cls = cls
        self.criteria = list(criteria)
        self.charset = "UTF-8" if any(
            not isinstance(c, Atom) and any(ord(ch) > 127 for ch in c)
            for c in self.criteria) else None

    @property
    def text(self):
        return " ".join(c if isinstance(c, Atom) else '"%s"' % c
                        for c in self.criteria)


def generated(planted):
    vocab = planted["vocab_head"]
    rank = planted["vocab_rank"]
    long_common = planted["common4"]
    two = [w for w in vocab if len(w) == 2][:1] or ["fy"]
    mid, mid2 = rank["2000"], rank["8000"]
    rare, rare2 = rank["30000"], rank["20000"]
    (p1, r1), (p2, r2) = planted["phrases"][:2]
    q = [
        Query("rare word", [B, rare]),
        Query("rare word", [T, rare2]),
        Query("rare word", [B, "INV-2023-0042"]),
        Query("common word", [B, long_common[0]]),
        Query("common word", [T, long_common[1]]),
        Query("common word", [B, rank["50"]]),
        Query("infix", [B, mid[1:-1]]),
        Query("infix", [B, mid2[2:-2]]),
        Query("infix", [B, "2023-004"]),
        Query("1-2 chars", [B, two[0]]),
        Query("1-2 chars", [B, "x"]),
        Query("1-2 chars", [T, "qz"]),
        Query("phrase", [B, p1]),
        Query("phrase", [T, p2]),
        Query("reversed phrase", [B, r1]),
        Query("reversed phrase", [T, r2]),
        Query("FROM address part", [F, "kim3@example.com"]),
        Query("FROM address part", [F, "example.org"]),
        Query("FROM address part", [F, "hkim391"]),
        Query("SUBJECT", [S, "invoice"]),
        Query("SUBJECT", [S, rank["50"]]),
        Query("SUBJECT", [S, "Fwd"]),
        Query("HEADER", [H, Atom("X-Mailer"), "Thunderbird"]),
        Query("HEADER", [H, Atom("List-Id"), "dev.lists"]),
        Query("non-ASCII", [B, "café"]),
        Query("non-ASCII", [B, "東京"]),
        Query("non-ASCII", [T, "спасибо"]),
        Query("non-ASCII", [S, "Grüße"]),
        Query("NOT", [B, long_common[0], NOT, B, mid]),
        Query("NOT", [B, p1, NOT, B, long_common[2]]),
        Query("OR", [OR, B, rare, B, "INV-2023-0042"]),
        Query("OR", [OR, S, "invoice", F, "kim3@example.com"]),
    ]
    return q


def from_real(prepared_paths, seed=1):
    """Queries drawn from real mail (CORPUS=DIR)."""
    rng = random.Random("queries-%s" % seed)
    words = collections.Counter()
    subjects, froms, lines, nonascii = [], [], [], collections.Counter()
    for p in rng.sample(prepared_paths, min(len(prepared_paths), 600)):
        with open(p, "rb") as f:
            data = f.read().decode("utf-8", "replace")
        head, _, body = data.partition("\n\n")
        for h in head.split("\n"):
            if h.lower().startswith("subject:"):
                subjects.extend(re.findall(r"[A-Za-z]{5,12}", h[8:]))
            elif h.lower().startswith("from:"):
                froms.extend(re.findall(r"([\w.+-]+)@([\w.-]+\.\w+)", h))
        ws = re.findall(r"[A-Za-z]{4,14}", body[:20000])
        words.update(w.lower() for w in ws)
        nonascii.update(re.findall(r"\b\w*[^\x00-\x7f]\w*\b", body[:20000]))
        for line in body.split("\n")[:80]:
            t = re.findall(r"[A-Za-z]{3,12}", line)
            if len(t) >= 3 and len(line) < 120:
                lines.append(t[:3])
    common = [w for w, _ in words.most_common(40) if len(w) >= 4]
    rare = [w for w, c in words.items() if c == 1 and len(w) >= 6]
    rng.shuffle(rare)
    mid = [w for w, c in words.most_common(3000)[1000:1200] if len(w) >= 7]
    phrase = [" ".join(t) for t in rng.sample(lines, min(2, len(lines)))]
    rev = [" ".join(reversed(p.split())) for p in phrase]
    # U+FFFD marks bytes that were not UTF-8 (legacy charsets): not a key
    # anyone would type.
    na = [w for w, _ in nonascii.most_common(50)
          if len(w) >= 3 and "\ufffd" not in w][:2] or ["é"]
    fr = froms[:1] or [("root", "example.com")]
    q = [Query("rare word", [B, w]) for w in rare[:2]]
    q += [Query("common word", [B, w]) for w in common[:2]]
    q += [Query("infix", [B, w[1:-1]]) for w in mid[:2]]
    q += [Query("1-2 chars", [B, "x"]), Query("1-2 chars", [T, "qz"])]
    q += [Query("phrase", [B, p]) for p in phrase]
    q += [Query("reversed phrase", [B, p]) for p in rev]
    q += [Query("FROM address part", [F, fr[0][0]]),
          Query("FROM address part", [F, fr[0][1]])]
    q += [Query("SUBJECT", [S, w]) for w in subjects[:2]]
    q += [Query("HEADER", [H, Atom("X-Mailer"), "Mozilla"]),
          Query("HEADER", [H, Atom("Content-Type"), "multipart"])]
    q += [Query("non-ASCII", [B, w]) for w in na]
    if common and mid:
        q.append(Query("NOT", [B, common[0], NOT, B, mid[0]]))
    if len(rare) >= 4:
        q.append(Query("OR", [OR, B, rare[2], B, rare[3]]))
    return q
