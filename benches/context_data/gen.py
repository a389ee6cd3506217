#!/usr/bin/env python3
"""Deterministic generator for the context-compaction evaluation set.

    python3 benches/context_data/gen.py            # regenerate + self-check
    python3 benches/context_data/gen.py --check    # only validate the existing file

Writes benches/context_data/conversations.json: long, tool-heavy agent
conversations in OpenAI chat format, each with "needed_facts" -- exact strings
introduced once (mostly deep inside a large tool output) and asked for again
much later.  Only the Python standard library is used; every random choice comes
from random.Random instances seeded from SEED, so the output is byte-identical
on every run (no set iteration, no clocks, no hash()).
"""
import csv
import datetime as dt
import io
import json
import os
import random
import sys

SEED = 20240917
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_FILE = os.path.join(HERE, "conversations.json")

# ----------------------------------------------------------------------------
# random data helpers
# ----------------------------------------------------------------------------

FIRST = ["Amara", "Bjorn", "Chen", "Daniela", "Emeka", "Farah", "Giulia", "Hiroshi",
         "Ingrid", "Jonas", "Kavya", "Luca", "Mei", "Nadia", "Oskar", "Priya",
         "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wanjiru", "Xavier",
         "Yara", "Zoltan", "Aoife", "Bruno", "Chiara", "Dmitri", "Elif", "Femi",
         "Hana", "Ivan", "Jana", "Kofi", "Leila", "Mateo", "Noor", "Olga"]
LAST = ["Andersen", "Bauer", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia",
        "Haddad", "Ishikawa", "Jansen", "Kowalski", "Larsen", "Moreau", "Nakamura",
        "Osei", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Varga",
        "Weber", "Yilmaz", "Zhang", "Novak", "Mendes", "Kaur", "Lindqvist", "Brennan",
        "Costa", "Hoffmann", "Ivanova", "Silva", "Kim", "Nguyen", "Murphy", "Sato",
        "Horvath", "Fontaine"]
COMPANIES = ["Aldergrove Logistics", "Brightwater Foods", "Cobalt Ridge Media",
             "Dunmore Textiles", "Eastgate Pharma", "Fjordline Marine", "Greystone Legal",
             "Harborview Dental", "Ironbark Mining", "Juniper Analytics", "Kestrel Aviation",
             "Lakeshore Retail", "Meridian Health", "Northpoint Energy", "Oakhurst Schools",
             "Pinecrest Hotels", "Quarry Lane Builders", "Redfern Motors", "Silverline Telecom",
             "Tidewater Insurance", "Upland Farms", "Vantage Robotics", "Westbrook Clinics",
             "Yellowfin Seafood", "Zephyr Wind"]


class G:
    """Thin wrapper around random.Random with data-shaped helpers."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def hex(self, n):
        return "%0*x" % (n, self.r.getrandbits(4 * n))

    def digits(self, n):
        return str(self.r.randint(1, 9)) + "".join(str(self.r.randint(0, 9)) for _ in range(n - 1))

    def alnum(self, n, alphabet="abcdefghijklmnopqrstuvwxyz0123456789"):
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def upper(self, n):
        return self.alnum(n, "ABCDEFGHJKLMNPQRSTUVWXYZ23456789")

    def pick(self, seq):
        return self.r.choice(seq)

    def picks(self, seq, k):
        return self.r.sample(seq, k)

    def wpick(self, pairs):
        total = sum(w for w, _ in pairs)
        x = self.r.uniform(0, total)
        for w, v in pairs:
            x -= w
            if x <= 0:
                return v
        return pairs[-1][1]

    def int(self, a, b):
        return self.r.randint(a, b)

    def float(self, a, b, nd=2):
        return round(self.r.uniform(a, b), nd)

    def chance(self, p):
        return self.r.random() < p

    def person(self):
        return "%s %s" % (self.pick(FIRST), self.pick(LAST))

    def email(self, name, domain):
        a, b = name.lower().split(" ", 1)
        return "%s.%s@%s" % (a, b.replace(" ", ""), domain)

    def ip(self, prefix="10."):
        parts = prefix.rstrip(".").split(".")
        while len(parts) < 4:
            parts.append(str(self.r.randint(1, 254)))
        return ".".join(parts)

    def uuid(self):
        h = self.hex(32)
        return "%s-%s-4%s-%s-%s" % (h[:8], h[8:12], h[13:16], "89ab"[self.r.randint(0, 3)] + h[17:20], h[20:])

    def later(self, t, lo_ms, hi_ms):
        return t + dt.timedelta(milliseconds=self.r.randint(lo_ms, hi_ms))

    def shuffle(self, xs):
        self.r.shuffle(xs)
        return xs


def iso(t, ms=True):
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if ms:
        s += ".%03d" % (t.microsecond // 1000)
    return s + "Z"


def day(t):
    return t.strftime("%Y-%m-%d")


def money(x):
    """1234.5 -> '1,234.50'"""
    return "{:,.2f}".format(x)


def jdump(obj, pretty=False):
    if pretty:
        return json.dumps(obj, indent=2, ensure_ascii=False)
    return json.dumps(obj, ensure_ascii=False)


def text_table(headers, rows, footer=True):
    """psql-style text table."""
    hs = [str(h) for h in headers]
    rs = [["" if v is None else str(v) for v in row] for row in rows]
    w = [max([len(hs[i])] + [len(r[i]) for r in rs]) for i in range(len(hs))]
    out = [" " + " | ".join(hs[i].center(w[i]) for i in range(len(hs)))]
    out.append("-" + "-+-".join("-" * w[i] for i in range(len(hs))) + "-")
    for r in rs:
        cells = []
        for i, v in enumerate(r):
            num = v.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()
            cells.append(v.rjust(w[i]) if num else v.ljust(w[i]))
        out.append(" " + " | ".join(cells))
    if footer:
        out.append("(%d row%s)" % (len(rs), "" if len(rs) == 1 else "s"))
    return "\n".join(out)


def cols_table(headers, rows, gap=3):
    """kubectl / docker style whitespace-aligned columns."""
    rs = [[str(v) for v in row] for row in rows]
    w = [max([len(headers[i])] + [len(r[i]) for r in rs]) for i in range(len(headers))]
    lines = [(" " * gap).join(headers[i].ljust(w[i]) for i in range(len(headers))).rstrip()]
    for r in rs:
        lines.append((" " * gap).join(r[i].ljust(w[i]) for i in range(len(r))).rstrip())
    return "\n".join(lines)


def csv_text(headers, rows):
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(headers)
    for row in rows:
        wr.writerow(row)
    return buf.getvalue()


# ----------------------------------------------------------------------------
# tool schemas
# ----------------------------------------------------------------------------

def tool(name, description, props, required=()):
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": list(required)}}


def S(desc, **kw):
    d = {"type": "string", "description": desc}
    d.update(kw)
    return d


def I(desc, **kw):
    d = {"type": "integer", "description": desc}
    d.update(kw)
    return d


def N(desc):
    return {"type": "number", "description": desc}


def B(desc):
    return {"type": "boolean", "description": desc}


def A(items, desc):
    return {"type": "array", "items": items, "description": desc}


# ----------------------------------------------------------------------------
# conversation builder
# ----------------------------------------------------------------------------

class Conv:
    def __init__(self, cid, description, tools, impl):
        self.id = cid
        self.description = description
        self.tools = tools
        self.impl = impl
        self.messages = []
        self.facts = []
        self.fact_by_key = {}
        self.cache = {}
        self.ncall = 0

    def _add(self, m):
        self.messages.append(m)
        return len(self.messages) - 1

    def system(self, text):
        return self._add({"role": "system", "content": text})

    def user(self, text):
        return self._add({"role": "user", "content": text})

    def say(self, text):
        return self._add({"role": "assistant", "content": text})

    def act(self, *calls, text=None):
        """One assistant message with 1..n tool calls, then the results in order.

        Each call is (name, args) or (name, args, kw).  kw is passed to the tool
        implementation (used to plant facts); kw {"fresh": True} bypasses the
        result cache.  A repeated (name, args) returns the identical cached
        output, like a real idempotent read."""
        tcs, outs = [], []
        for c in calls:
            name, args = c[0], c[1]
            kw = dict(c[2]) if len(c) > 2 else {}
            fresh = kw.pop("fresh", False)
            key = name + " " + json.dumps(args, sort_keys=True)
            if key in self.cache and not fresh and not kw:
                out = self.cache[key]
            else:
                out = self.impl[name](args, **kw)
                self.cache[key] = out
            self.ncall += 1
            cid = "call_%d" % self.ncall
            tcs.append({"id": cid, "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}})
            outs.append((cid, out))
        self._add({"role": "assistant", "content": text, "tool_calls": tcs})
        idx = [self._add({"role": "tool", "tool_call_id": cid, "content": out}) for cid, out in outs]
        return idx[0] if len(idx) == 1 else idx

    def fact(self, key, value, at, question, answer):
        """Register `value` (already present in message `at`).  `answer` must
        contain '{v}' where the value is restated."""
        assert value in self.messages[at]["content"], (self.id, key, value)
        assert "{v}" in answer and "{v}" not in question
        f = {"fact": value, "introduced_at": at, "needed_at": None,
             "q": question, "a": answer.replace("{v}", value)}
        self.facts.append(f)
        self.fact_by_key[key] = f

    def recall(self, key):
        f = self.fact_by_key[key]
        f["needed_at"] = self.user(f["q"])
        self.say(f["a"])

    def to_dict(self):
        for f in self.facts:
            assert f["needed_at"] is not None, (self.id, f["fact"])
        return {
            "id": self.id,
            "description": self.description,
            "tools": self.tools,
            "messages": self.messages,
            "needed_facts": [{"fact": f["fact"], "introduced_at": f["introduced_at"],
                              "needed_at": f["needed_at"]} for f in self.facts],
        }
