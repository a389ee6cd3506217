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
import difflib
import io
import json
import os
import random
import re
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

    def recall(self, key, prefix=""):
        f = self.fact_by_key[key]
        f["needed_at"] = self.user(prefix + f["q"])
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


# ============================================================================
# 1. log-triage-01: billing-api 502s after a deploy
# ============================================================================

JAVA_FRAMES = [
    "io.grpc.stub.ClientCalls.toStatusRuntimeException(ClientCalls.java:262)",
    "io.grpc.stub.ClientCalls.getUnchecked(ClientCalls.java:243)",
    "io.grpc.stub.ClientCalls.blockingUnaryCall(ClientCalls.java:156)",
    "com.acme.ledger.v1.LedgerServiceGrpc$LedgerServiceBlockingStub.postEntries(LedgerServiceGrpc.java:611)",
    "com.acme.billing.ledger.LedgerClient.post(LedgerClient.java:214)",
    "com.acme.billing.ledger.LedgerClient.lambda$postWithRetry$3(LedgerClient.java:171)",
    "io.github.resilience4j.retry.Retry.lambda$decorateCheckedSupplier$3(Retry.java:137)",
    "com.acme.billing.settlement.SettlementService.settle(SettlementService.java:98)",
    "com.acme.billing.api.InvoiceController.charge(InvoiceController.java:143)",
    "jdk.internal.reflect.GeneratedMethodAccessor212.invoke(Unknown Source)",
    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:205)",
    "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:883)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)",
    "com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
    "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
    "com.zaxxer.hikari.HikariDataSource.getConnection(HikariDataSource.java:100)",
    "org.hibernate.engine.jdbc.connections.internal.DatasourceConnectionProviderImpl.getConnection(DatasourceConnectionProviderImpl.java:122)",
    "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)",
    "java.base/java.lang.Thread.run(Thread.java:833)",
]


def make_ops_tools(g, t0, svc_profiles, state):
    """Tool implementations shared by the two log-triage conversations.
    svc_profiles: service -> dict(pods, templates by level, logger names)."""

    def rid():
        return "req-" + g.hex(8)

    def fill(tpl):
        return (tpl.replace("{inv}", "inv_" + g.alnum(14))
                .replace("{cus}", "cus_" + g.alnum(12))
                .replace("{ms}", str(g.int(900, 9000)))
                .replace("{n}", str(g.int(2, 400)))
                .replace("{w}", str(g.int(3, 180)))
                .replace("{a}", str(g.int(1, 3)))
                .replace("{off}", str(g.int(10_000_000, 99_999_999)))
                .replace("{p}", str(g.int(0, 23)))
                .replace("{evt}", "evt_" + g.upper(20))
                .replace("{ip}", g.ip("10.42.")))

    def read_logs(args, plant=None):
        svc = args["service"]
        prof = svc_profiles[svc]
        lvl = args.get("level", "INFO")
        limit = args.get("limit", 200)
        order = ["DEBUG", "INFO", "WARN", "ERROR"]
        allowed = [l for l in order if order.index(l) >= order.index(lvl)]
        t = dt.datetime.strptime(args.get("since", iso(t0, False)), "%Y-%m-%dT%H:%M:%SZ")
        lines = []
        plant = plant or {}
        plant_at = {v[0]: v[1] for v in plant.values()}
        n = 0
        while n < limit:
            t = g.later(t, 40, 2500 if lvl == "ERROR" else 900)
            if n in plant_at:
                level, logger, msg = plant_at[n]
                extra = []
            else:
                level = g.wpick([(w, l) for l, w in prof["mix"] if l in allowed])
                logger = g.pick(prof["loggers"])
                msg = fill(g.pick(prof["msgs"][level]))
                extra = []
                if level == "ERROR" and g.chance(0.16):
                    exc = g.pick(prof["exceptions"])
                    extra.append(exc)
                    start = g.int(0, len(JAVA_FRAMES) - 8)
                    for fr in JAVA_FRAMES[start:start + g.int(6, 11)]:
                        extra.append("\tat " + fr)
                    extra.append("\t... %d common frames omitted" % g.int(30, 90))
            pod = g.pick(prof["pods"])
            lines.append("%s %-5s %s [%s] req=%s trace=%s %s - %s" % (
                iso(t), level, svc, pod, rid(), g.hex(16), logger, msg))
            lines.extend(extra)
            n += 1
        hdr = "# source=loki service=%s level>=%s since=%s returned=%d lines (limit %d)\n" % (
            svc, lvl, args.get("since", iso(t0, False)), n, limit)
        return hdr + "\n".join(lines)

    def search_logs(args, plant=None):
        hits = []
        t = t0 + dt.timedelta(minutes=g.int(2, 10))
        services = args.get("services") or list(svc_profiles)
        for i in range(g.int(45, 90)):
            t = g.later(t, 500, 30000)
            svc = g.pick(services)
            prof = svc_profiles[svc]
            level = g.pick(["WARN", "ERROR", "ERROR"])
            hits.append({"ts": iso(t), "service": svc, "pod": g.pick(prof["pods"]), "level": level,
                         "request_id": rid(), "trace_id": g.hex(16), "message": fill(g.pick(prof["msgs"][level]))})
        if plant:
            pos, hit = plant
            hits.insert(pos, hit)
        return jdump({"query": args["query"], "took_ms": g.int(80, 900), "total": len(hits) * g.int(3, 9),
                      "returned": len(hits), "hits": hits})

    def get_metrics(args, plant=None):
        svc, metric = args["service"], args["metric"]
        step = int(args.get("step", "60s").rstrip("s"))
        points = int(args.get("window_minutes", 60)) * 60 // step
        base = {"latency_p99_ms": (180, 420), "error_rate": (0.001, 0.01), "requests_per_s": (300, 900),
                "cpu_cores": (0.4, 1.6), "heap_used_mb": (700, 1400), "consumer_lag": (100, 3000),
                "db_connections_active": (4, 14)}[metric]
        series = []
        end = t0 + dt.timedelta(minutes=args.get("window_minutes", 60) - 3)
        if args.get("window_minutes", 60) <= 15:
            end = t0 + dt.timedelta(minutes=95)
        start = end - dt.timedelta(seconds=points * step)
        for pod in svc_profiles[svc]["pods"][:3]:
            pts = []
            for k in range(points):
                tk = start + dt.timedelta(seconds=k * step)
                ts = int((tk - dt.datetime(1970, 1, 1)).total_seconds())
                v = g.r.uniform(*base)
                bad = t0 + dt.timedelta(minutes=12) <= tk <= t0 + dt.timedelta(minutes=62)
                if bad:
                    v *= g.r.uniform(3, 9) if metric in ("latency_p99_ms", "consumer_lag") else g.r.uniform(1, 2.5)
                if metric == "error_rate":
                    v = round(min(v * (8 if bad else 1), 0.6), 4)
                else:
                    v = round(v, 1)
                pts.append([ts, v])
            series.append({"labels": {"service": svc, "pod": pod, "cluster": "prod-eu-1"}, "values": pts})
        if plant:
            series[plant[0]]["values"][plant[1]][1] = plant[2]
        return jdump({"status": "success", "data": {"resultType": "matrix", "metric": metric,
                      "step_seconds": step, "result": series}}, pretty=True)

    def list_deployments(args, plant=None):
        svc = args["service"]
        deps = []
        t = t0 - dt.timedelta(days=40)
        versions = svc_profiles[svc]["versions"]
        for i, v in enumerate(versions):
            t = t + dt.timedelta(hours=g.int(30, 120))
            if i == len(versions) - 1:
                t = t0 - dt.timedelta(minutes=g.int(14, 22))
            changes = [g.pick(svc_profiles[svc]["changes"]) for _ in range(g.int(2, 5))]
            deps.append({
                "id": "dep-" + g.hex(10), "service": svc, "version": v, "git_sha": g.hex(40),
                "deployed_at": iso(t, False), "deployed_by": g.email(g.person(), "acme.io"),
                "strategy": "rolling", "status": "succeeded", "duration_s": g.int(95, 420),
                "replicas": {"desired": 6, "updated": 6, "available": 6},
                "changes": changes,
                "image": "registry.acme.io/%s@sha256:%s" % (svc, g.hex(64)),
            })
        if plant:
            deps[plant[0]]["changes"] = plant[1]
        deps.reverse()
        return jdump({"service": svc, "count": len(deps), "deployments": deps[:args.get("limit", 20)]}, pretty=True)

    def list_pods(args, plant=None):
        svc = args["service"]
        rows = []
        for p in svc_profiles[svc]["pods"]:
            rows.append([p, "1/1", "Running", str(g.int(0, 2)), "%dh" % g.int(1, 30), g.ip("10.42."),
                         "ip-10-0-%d-%d.eu-west-1.compute.internal" % (g.int(1, 60), g.int(2, 250))])
        if plant:
            rows.insert(plant[0], plant[1])
        return cols_table(["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], rows)

    def get_configmap(args):
        return svc_profiles[args["name"].replace("-config", "")]["configmap"](g)

    def get_trace(args, plant=None):
        t = t0 + dt.timedelta(minutes=g.int(8, 25), seconds=g.int(0, 59))
        spans = []
        root = g.hex(16)
        names = [("api-gateway", "HTTP POST /v1/invoices/charge"), ("billing-api", "InvoiceController.charge"),
                 ("billing-api", "SettlementService.settle"), ("billing-api", "LedgerClient.post"),
                 ("ledger-svc", "LedgerService/PostEntries"), ("ledger-svc", "pg.query INSERT ledger_entries"),
                 ("ledger-svc", "pg.query SELECT balances"), ("billing-api", "kafka.produce billing.events"),
                 ("billing-api", "redis GET idempotency"), ("billing-api", "pg.query UPDATE invoices")]
        for i in range(g.int(18, 34)):
            svc, nm = g.pick(names) if i else names[0]
            attrs = {"service.name": svc, "span.kind": g.pick(["server", "client", "internal"])}
            if nm.startswith("pg."):
                attrs["db.system"] = "postgresql"
                attrs["db.peer"] = g.pick(["ledger-db-primary.internal:5432", "billing-db.internal:5432"])
                attrs["db.statement"] = nm[9:] + " ... /* %s */" % g.hex(6)
            if nm.startswith("HTTP"):
                attrs["http.status_code"] = 502
            spans.append({"span_id": root if i == 0 else g.hex(16), "parent_span_id": None if i == 0 else root,
                          "name": nm, "start": iso(g.later(t, 0, 3000)), "duration_ms": round(g.r.uniform(0.4, 900), 2),
                          "status": g.pick(["OK", "OK", "OK", "ERROR"]), "attributes": attrs})
        if plant:
            spans[plant[0]]["attributes"]["db.peer"] = plant[1]
            spans[plant[0]]["duration_ms"] = 2987.41
            spans[plant[0]]["name"] = "pg.query SELECT balances FOR UPDATE"
        return jdump({"trace_id": args["trace_id"], "span_count": len(spans), "spans": spans}, pretty=True)

    def rollback(args):
        lines = ["rollback requested: %s -> %s" % (args["service"], args["to_version"])]
        t = t0 + dt.timedelta(minutes=58)
        for i in range(6):
            t = g.later(t, 4000, 20000)
            lines.append("%s replica %d/6 updated, readiness probe passed" % (iso(t), i + 1))
        lines.append("rollout status: complete (6/6 available)")
        return "\n".join(lines)

    def post_status(args):
        return jdump({"ok": True, "channel": args["channel"], "ts": "17%s.%s" % (g.digits(8), g.digits(6))})

    return {"read_logs": read_logs, "search_logs": search_logs, "get_metrics": get_metrics,
            "list_deployments": list_deployments, "list_pods": list_pods, "get_configmap": get_configmap,
            "get_trace": get_trace, "rollback_deployment": rollback, "post_status_update": post_status}


OPS_TOOLS = [
    tool("read_logs", "Fetch raw log lines for one service from the log store (oldest first).",
         {"service": S("Service name, e.g. billing-api"),
          "level": S("Minimum level", enum=["DEBUG", "INFO", "WARN", "ERROR"]),
          "since": S("ISO-8601 UTC start time, e.g. 2024-03-12T09:30:00Z"),
          "limit": I("Maximum number of log records (default 200)")}, ["service"]),
    tool("search_logs", "Full-text search across service logs; returns matching records as JSON.",
         {"query": S("Search expression"), "services": A(S("service"), "Restrict to these services"),
          "window": S("Lookback window, e.g. 2h")}, ["query"]),
    tool("get_metrics", "Query a Prometheus-backed metric for a service, one series per pod.",
         {"service": S("Service name"),
          "metric": S("Metric", enum=["latency_p99_ms", "error_rate", "requests_per_s", "cpu_cores",
                                      "heap_used_mb", "consumer_lag", "db_connections_active"]),
          "window_minutes": I("How far back to look"), "step": S("Resolution, e.g. 60s")}, ["service", "metric"]),
    tool("list_deployments", "List recent deployments of a service, newest first.",
         {"service": S("Service name"), "limit": I("Max entries")}, ["service"]),
    tool("list_pods", "List Kubernetes pods of a service including terminated ones.",
         {"service": S("Service name"), "namespace": S("Namespace")}, ["service"]),
    tool("get_configmap", "Read a service's rendered configuration (YAML).",
         {"name": S("ConfigMap name"), "namespace": S("Namespace")}, ["name"]),
    tool("get_trace", "Fetch a distributed trace by trace id.", {"trace_id": S("16-hex trace id")}, ["trace_id"]),
    tool("rollback_deployment", "Roll a service back to an earlier version.",
         {"service": S("Service"), "to_version": S("Target version"), "reason": S("Free text")},
         ["service", "to_version"]),
    tool("post_status_update", "Post an incident status update to a chat channel.",
         {"channel": S("Channel"), "message": S("Markdown text")}, ["channel", "message"]),
]


def billing_configmap(g):
    return """# rendered by helm 3.14.2 at deploy time
apiVersion: v1
kind: ConfigMap
metadata:
  name: billing-api-config
  namespace: payments
  labels:
    app.kubernetes.io/name: billing-api
    app.kubernetes.io/managed-by: Helm
data:
  application.yaml: |
    server:
      port: 8080
      shutdown: graceful
      tomcat:
        threads:
          max: 200
          min-spare: 20
        accept-count: 100
    spring:
      datasource:
        url: jdbc:postgresql://billing-db.internal:5432/billing
        hikari:
          maximum-pool-size: 30
          minimum-idle: 5
          connection-timeout: 30000
          idle-timeout: 600000
          max-lifetime: 1800000
      kafka:
        bootstrap-servers: kafka-0.kafka.internal:9092,kafka-1.kafka.internal:9092,kafka-2.kafka.internal:9092
        producer:
          acks: all
          linger-ms: 5
          compression-type: zstd
    ledger:
      client:
        target: dns:///ledger-svc.payments.svc.cluster.local:9090
        deadline-ms: 3000
        pool:
          max-connections: 16
          max-pending-acquires: 64
          acquire-timeout-ms: 3000
        retry:
          max-attempts: 3
          backoff-ms: [100, 400, 1600]
      circuit-breaker:
        failure-rate-threshold: 50
        sliding-window-size: 50
        wait-duration-in-open-state: 30s
    settlement:
      batch-size: 250
      currency-rounding: HALF_EVEN
      idempotency:
        redis-url: redis://billing-redis.internal:6379/2
        ttl: 24h
    management:
      endpoints:
        web:
          exposure:
            include: health,info,prometheus
    logging:
      level:
        root: INFO
        com.acme.billing.ledger: DEBUG
        org.hibernate.SQL: WARN
  feature-flags.yaml: |
    flags:
      async-settlement: false
      new-tax-engine: true
      ledger-batching: false
      invoice-pdf-v2: true
      dunning-emails-v3: %s
""" % g.pick(["true", "false"])


def conv_log_triage_01(seed):
    g = G(seed)
    t0 = dt.datetime(2024, 3, 12, 9, 30, 0)
    pods = ["billing-api-7d9f8c6b5-" + g.alnum(5) for _ in range(6)]
    ledger_pods = ["ledger-svc-5c8b9d7f4-" + g.alnum(5) for _ in range(4)]
    gw_pods = ["api-gateway-6f7d8c9b-" + g.alnum(5) for _ in range(3)]
    profiles = {
        "billing-api": {
            "pods": pods,
            "mix": [("DEBUG", 10), ("INFO", 50), ("WARN", 20), ("ERROR", 20)],
            "loggers": ["c.a.b.api.InvoiceController", "c.a.b.ledger.LedgerClient", "c.a.b.settlement.SettlementService",
                        "c.a.b.events.EventPublisher", "o.s.web.servlet.DispatcherServlet", "c.z.hikari.pool.HikariPool"],
            "msgs": {
                "DEBUG": ["ledger pool stats active={n} idle=0 pending={w}", "idempotency key hit for {inv}"],
                "INFO": ["POST /v1/invoices/{inv}/charge 200 {ms}ms", "GET /v1/customers/{cus}/balance 200 12ms",
                         "GET /healthz 200 1ms", "published {n} records to billing.events",
                         "settlement batch closed size={n}", "POST /v1/invoices 201 48ms"],
                "WARN": ["Retrying ledger call attempt={a}/3 invoice={inv}", "Slow request GET /v1/customers/{cus}/balance took {ms}ms",
                         "ledger pool pending acquires high: {w}", "HikariPool-1 - Thread starvation or clock leap detected"],
                "ERROR": ["POST /v1/invoices/{inv}/charge -> 502 upstream=ledger-svc elapsed_ms={ms}",
                          "LedgerClient: timeout after 3000ms waiting for connection from pool (active=16, idle=0, waiting={w})",
                          "Failed to settle invoice {inv}: DEADLINE_EXCEEDED",
                          "HikariPool-1 - Connection is not available, request timed out after 30000ms.",
                          "Unhandled exception in request processing for invoice {inv}"],
            },
            "exceptions": ["io.grpc.StatusRuntimeException: DEADLINE_EXCEEDED: deadline exceeded after 2.999s",
                           "java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30000ms.",
                           "com.acme.billing.ledger.LedgerUnavailableException: pool acquire timed out"],
            "versions": ["v2.12.0", "v2.12.1", "v2.13.0", "v2.13.1", "v2.13.2", "v2.14.0", "v2.14.1", "v2.14.2", "v2.14.3"],
            "changes": ["bump spring-boot 3.2.2 -> 3.2.3", "add invoice PDF v2 renderer behind flag",
                        "fix NPE in dunning scheduler", "tax engine: round per line item", "upgrade grpc-java to 1.62.2",
                        "add idempotency keys to /charge", "refactor SettlementService batching", "log request ids in MDC"],
            "configmap": billing_configmap,
        },
        "ledger-svc": {
            "pods": ledger_pods,
            "mix": [("INFO", 60), ("WARN", 25), ("ERROR", 15)],
            "loggers": ["ledger.grpc", "ledger.store", "ledger.pool", "ledger.balance"],
            "msgs": {
                "INFO": ["PostEntries ok entries={n} {ms}us", "GetBalance ok account=acct_{n}", "checkpoint flushed lsn=0/{off}"],
                "WARN": ["slow query SELECT balances FOR UPDATE took {ms}ms", "lock wait on account row acct_{n} {ms}ms",
                         "grpc server queue depth {w}"],
                "ERROR": ["PostEntries failed: canceling statement due to lock timeout", "deadline exceeded before handler ran",
                          "pg: could not serialize access due to concurrent update"],
            },
            "exceptions": ["org.postgresql.util.PSQLException: ERROR: canceling statement due to lock timeout"],
            "versions": ["v5.3.0", "v5.3.1", "v5.4.0"], "changes": ["nothing notable"], "configmap": billing_configmap,
        },
        "api-gateway": {
            "pods": gw_pods,
            "mix": [("INFO", 70), ("WARN", 15), ("ERROR", 15)],
            "loggers": ["envoy.router", "envoy.upstream", "gw.auth"],
            "msgs": {
                "INFO": ["POST /v1/invoices/{inv}/charge 200 upstream=billing-api {ms}ms", "GET /v1/products 200 8ms",
                         "token validated client=app-web"],
                "WARN": ["upstream billing-api slow: {ms}ms", "rate limit near threshold client=partner-{n}"],
                "ERROR": ["POST /v1/invoices/{inv}/charge 502 upstream=billing-api upstream_reset_before_response_started",
                          "upstream connect error or disconnect/reset before headers. reset reason: timeout"],
            },
            "exceptions": ["upstream timeout"], "versions": ["v1.9.0"], "changes": ["nothing"], "configmap": billing_configmap,
        },
    }
    impl = make_ops_tools(g, t0, profiles, {})
    c = Conv("log-triage-01",
             "On-call triage of billing-api 502s after a deploy: logs, metrics, deploy history, traces, rollback.",
             OPS_TOOLS, impl)
    c.system("You are an SRE assistant for Acme Payments. You have read access to logs, metrics, traces "
             "and deploy history, and can roll back services. Be precise, quote evidence from tool output, "
             "and keep the incident channel informed.")
    intro = c.user("We're getting paged: billing-api is throwing 502s on /v1/invoices/*/charge since roughly 09:40 UTC. "
                   "This is incident INC-20931 (sev2). Can you start with the billing-api error logs from 09:30?")
    c.fact("inc", "INC-20931", intro,
           "Remind me, what was the incident number I gave you at the very beginning? I need it for the postmortem doc title.",
           "The incident number you gave at the start was {v} (sev2, billing-api 502s on /v1/invoices/*/charge).")
    breaker_req = "req-9f3a2c71"
    m = c.act(("read_logs", {"service": "billing-api", "level": "ERROR", "since": "2024-03-12T09:30:00Z", "limit": 70},
               {"plant": {"cb": (23, ("ERROR", "i.g.r.circuitbreaker.CircuitBreakerStateMachine",
                                      "CircuitBreaker 'ledger-svc' changed state from CLOSED to OPEN (failure rate 57.1% over 50 calls) triggered_by=" + breaker_req))}}))
    c.fact("breaker", breaker_req, m,
           "In the very first billing-api error dump, the circuit breaker for ledger-svc flipped to OPEN. Which request triggered it?",
           "The breaker transition line said it was triggered_by={v} -- that's the request that pushed ledger-svc over the 50% failure threshold.")
    c.act(("search_logs", {"query": "CircuitBreaker AND ledger-svc", "services": ["billing-api"], "window": "1h"}),
          text="Let me see how widespread the ledger errors are across pods.")
    c.say("The error log is dominated by three patterns, all on the ledger path:\n\n"
          "1. `POST /v1/invoices/{id}/charge -> 502 upstream=ledger-svc` with elapsed times of 1-9 s\n"
          "2. `LedgerClient: timeout after 3000ms waiting for connection from pool (active=16, idle=0, ...)` -- the "
          "client pool is pinned at 16 active connections with nothing idle\n"
          "3. `DEADLINE_EXCEEDED` stack traces from `LedgerClient.post` and Hikari `Connection is not available` timeouts\n\n"
          "The ledger-svc circuit breaker also flipped to OPEN partway through the window, and the search shows the same "
          "errors on every pod, so this isn't a single bad replica. Next I'd like metrics to pin down the start time.")
    c.user("Yes, pull p99 latency, error rate and RPS for billing-api.")
    ms = c.act(("get_metrics", {"service": "billing-api", "metric": "latency_p99_ms", "window_minutes": 45, "step": "60s"},
                {"plant": (1, 27, 4873.62)}),
               ("get_metrics", {"service": "billing-api", "metric": "error_rate", "window_minutes": 45, "step": "60s"}),
               ("get_metrics", {"service": "billing-api", "metric": "requests_per_s", "window_minutes": 45, "step": "60s"}),
               text="Fetching the three series in parallel.")
    c.fact("p99", "4873.62", ms[0],
           "What was the single highest p99 latency value (in ms) in the first latency series you fetched for billing-api?",
           "The peak in that first p99 series was {v} ms, on the second pod's series, well after the step change at ~09:42.")
    c.act(("get_metrics", {"service": "billing-api", "metric": "db_connections_active", "window_minutes": 45, "step": "60s"}),
          text="Also checking DB pool usage to rule out the Postgres side.")
    c.say("Metrics confirm a step change about ten minutes into the window (~09:42 UTC): p99 jumps from ~200-400 ms to "
          "multiple seconds on every pod, error rate climbs from <1% to 5-30%, while RPS barely moves. So this is not "
          "a traffic spike -- each request got slower. Postgres connections on billing-db are only mildly elevated. "
          "Together with the pool-exhaustion errors this points at the ledger client or ledger-svc itself.")
    c.user("Check what was deployed recently, and list the pods too -- someone mentioned restarts.")
    planted_changes = ["ledger client: lower pool max-connections 64 -> 16 to protect ledger-svc",
                       "add idempotency keys to /charge", "upgrade grpc-java to 1.62.2"]
    oom_pod = "billing-api-7d9f8c6b5-q4x2m"
    dp, pp = c.act(("list_deployments", {"service": "billing-api", "limit": 10}, {"plant": (8, planted_changes)}),
                   ("list_pods", {"service": "billing-api", "namespace": "payments"},
                    {"plant": (2, [oom_pod, "0/1", "OOMKilled", "7", "41m", g.ip("10.42."),
                                   "ip-10-0-33-171.eu-west-1.compute.internal"])}))
    c.fact("version", "v2.14.3", dp,
           "Which exact version was the deploy that lowered the ledger client pool size? I want it in the timeline.",
           "That was {v} -- its changelog entry was 'ledger client: lower pool max-connections 64 -> 16 to protect ledger-svc', deployed roughly 15-20 minutes before the errors began.")
    c.fact("oompod", oom_pod, pp,
           "Which pod was the one that had been OOMKilled with 7 restarts in the pod listing?",
           "It was {v} (0/1 ready, OOMKilled, 7 restarts).")
    c.act(("get_configmap", {"name": "billing-api-config", "namespace": "payments"}),
          text="The newest deploy touches the ledger client pool. Let me confirm the live value.")
    c.act(("list_deployments", {"service": "ledger-svc", "limit": 5}),
          text="And make sure ledger-svc didn't ship something at the same time.")
    c.say("Findings:\n\n- The most recent billing-api deploy landed ~15-20 minutes before the errors began, and its changelog "
          "*lowers the ledger client's max connections from 64 to 16*. The live config confirms `ledger.client.pool.max-connections: 16` "
          "with `acquire-timeout-ms: 3000`. With 200 Tomcat threads and ~150 ms ledger latency, 16 connections cap throughput "
          "well below current RPS, so requests queue for the pool and time out at 3 s -> 502 at the gateway.\n"
          "- ledger-svc has not deployed in days.\n"
          "- One billing pod is OOMKilled with several restarts; the rest are Running. Probably a side effect (requests "
          "queueing in memory while waiting for the pool).")
    c.user("Before we blame the config: is ledger-svc itself healthy? Check its logs and latency.")
    c.act(("read_logs", {"service": "ledger-svc", "level": "WARN", "since": "2024-03-12T09:30:00Z", "limit": 60}))
    c.act(("get_metrics", {"service": "ledger-svc", "metric": "latency_p99_ms", "window_minutes": 45, "step": "60s"}),
          ("get_metrics", {"service": "ledger-svc", "metric": "db_connections_active", "window_minutes": 45, "step": "60s"}))
    c.say("ledger-svc has its own warnings -- slow `SELECT balances FOR UPDATE` and row lock waits -- and its p99 also rose. "
          "Some of that is expected when billing retries 3x per call, which amplifies load. A trace of a failing request "
          "would show where the time actually goes.")
    c.user("Go ahead, pick a failing request from the search.")
    sl = c.act(("search_logs", {"query": "status:502 AND path:/v1/invoices/*/charge", "services": ["api-gateway", "billing-api"], "window": "1h"}))
    hits = [h for h in json.loads(c.messages[sl]["content"])["hits"] if h["level"] == "ERROR"]
    tr = c.act(("get_trace", {"trace_id": hits[0]["trace_id"]}, {"plant": (5, "ledger-db-replica-3.internal:5432")}))
    c.fact("dbpeer", "ledger-db-replica-3.internal:5432", tr,
           "In the first trace you pulled, the slowest span (~3 s) was a balances query. Which database host:port was it talking to?",
           "That span's db.peer attribute was {v}, which is odd since FOR UPDATE queries should go to the primary.")
    c.act(("get_trace", {"trace_id": hits[1]["trace_id"]}), text="Comparing with a second failing request.")
    c.say("The first trace shows the gateway span ending in 502 after ~3 s. Inside billing-api most of the time is "
          "`LedgerClient.post` waiting for a pool connection; on the ledger side there's one ~3 s `SELECT balances FOR UPDATE` "
          "span whose db.peer is *not* the primary -- worth a separate ticket. The second trace has no slow DB span at all, "
          "only pool wait. The dominant cost is pool wait in billing-api.")
    c.user("Interesting. Let's also check the INFO logs around startup of the new pods -- did the config load cleanly?")
    st = c.act(("read_logs", {"service": "billing-api", "level": "INFO", "since": "2024-03-12T09:10:00Z", "limit": 80},
                {"plant": {"cfg": (23, ("INFO", "c.a.b.config.ConfigLoader",
                                        "loaded external config from /srv/app/config/billing.yaml (sha256=%s, 214 keys)" % g.hex(16)))}}))
    c.fact("cfgpath", "/srv/app/config/billing.yaml", st,
           "When the new pods started, which file path did ConfigLoader say it loaded the external config from?",
           "ConfigLoader logged that it loaded the external config from {v} (214 keys).")
    c.act(("search_logs", {"query": "\"HikariPool-1 - Start completed\" OR \"Started BillingApplication\"", "services": ["billing-api"], "window": "2h"}))
    c.say("Startup looks clean: the config loader ran, Hikari and the gRPC channel initialised, and readiness passed. "
          "No errors until the pool starts saturating. So it's the new value, not a broken load.")
    c.user("What do the gateway logs look like in the same window?")
    c.act(("read_logs", {"service": "api-gateway", "level": "WARN", "since": "2024-03-12T09:30:00Z", "limit": 50}))
    c.act(("get_metrics", {"service": "api-gateway", "metric": "error_rate", "window_minutes": 45, "step": "60s"}))
    c.say("Gateway shows `502 upstream=billing-api upstream_reset_before_response_started` and upstream timeouts, and its "
          "error rate tracks billing-api's. Nothing gateway-specific.")
    c.user("Look at heap usage and CPU on billing-api as well, for the OOM question.")
    c.act(("get_metrics", {"service": "billing-api", "metric": "heap_used_mb", "window_minutes": 45, "step": "60s"}),
          ("get_metrics", {"service": "billing-api", "metric": "cpu_cores", "window_minutes": 45, "step": "60s"}))
    c.act(("read_logs", {"service": "billing-api", "level": "WARN", "since": "2024-03-12T09:45:00Z", "limit": 45}),
          text="Checking for GC / memory pressure warnings too.")
    c.say("Heap climbs steadily after 09:42 on every pod (queued requests and retry state), CPU is flat, and the WARN log "
          "is all retries and slow-request warnings. The OOM restarts are a consequence of the pool bottleneck, not an "
          "independent leak.")
    c.recall("breaker", prefix="Side question while I fill in the ticket: ")
    c.user("OK. I'm convinced. Roll back billing-api to the previous version, reason 'ledger pool regression'.")
    c.act(("rollback_deployment", {"service": "billing-api", "to_version": "v2.14.2", "reason": "ledger pool regression"}))
    c.act(("list_pods", {"service": "billing-api", "namespace": "payments"}, {"fresh": True}),
          text="Rollback finished; checking the pods.")
    c.act(("get_metrics", {"service": "billing-api", "metric": "error_rate", "window_minutes": 15, "step": "30s"}, {"fresh": True}))
    c.say("Rollback to v2.14.2 completed: 6/6 replicas updated and ready, all pods Running with 0 restarts (the OOMKilled "
          "one has been replaced). The error rate over the last 15 minutes is dropping back under 1%.")
    c.user("Check p99 too, then post a status update to #inc-billing saying we rolled back and are monitoring.")
    c.act(("get_metrics", {"service": "billing-api", "metric": "latency_p99_ms", "window_minutes": 15, "step": "30s"}, {"fresh": True}))
    c.act(("post_status_update", {"channel": "#inc-billing", "message": "Mitigated: billing-api rolled back to v2.14.2 after a ledger client pool regression. 502s stopped; monitoring for 30 min."}))
    c.say("p99 is back in the low hundreds of ms. Status update posted to #inc-billing.")
    c.user("Double-check nothing else is still erroring -- search all services for ERRORs in the last hour, and re-pull "
           "the ledger-svc warnings, I want to eyeball the lock waits myself.")
    c.act(("search_logs", {"query": "level:ERROR", "window": "1h"}),
          ("read_logs", {"service": "ledger-svc", "level": "WARN", "since": "2024-03-12T09:30:00Z", "limit": 60}))
    c.say("Remaining errors are the tail of the incident window plus a handful of ledger lock timeouts; nothing new after "
          "recovery. The ledger-svc WARN window is identical to what I pulled earlier: the lock waits are on `acct_*` rows and "
          "cluster around the same minutes as billing retries. I'd file a follow-up to reduce retry amplification "
          "(3 attempts with backoff 100/400/1600 ms).")
    c.user("One more look at RPS over the original window so I can screenshot it.")
    c.act(("get_metrics", {"service": "billing-api", "metric": "requests_per_s", "window_minutes": 45, "step": "60s"}))
    c.say("Same series as before: flat at 300-900 req/s per pod through the incident, so no traffic spike.")
    c.recall("version", prefix="Great. Now I'm writing the timeline, a few questions. ")
    c.user("And deploy-wise, how long before the first errors did that deploy land, roughly?")
    c.say("About 15-20 minutes: the deploy finished shortly before 09:15 UTC, and the step change in latency and errors is at ~09:42.")
    c.recall("p99")
    c.recall("dbpeer")
    c.recall("oompod")
    c.recall("cfgpath")
    c.user("Draft three follow-up action items.")
    c.say("1. Restore the ledger client pool to 64 connections and alert on `pending acquires > 32` for more than 2 minutes.\n"
          "2. Reduce retry amplification: cap ledger retries at 2 with jitter; make the breaker's half-open probe count explicit.\n"
          "3. Investigate why a `SELECT ... FOR UPDATE` span was routed to a read replica, and add a guard in ledger-svc's router.")
    c.recall("inc")
    return c


# ============================================================================
# 2. ecommerce-orders-01: double captures during a PSP incident
# ============================================================================

STREETS = ["Lindenstrasse", "Hauptstrasse", "Keizersgracht", "Mariahilfer Strasse", "Rue de la Loi",
           "Bahnhofstrasse", "Prinsengracht", "Schillerplatz", "Avenue Louise", "Goethestrasse"]
CITIES = {"DE": ["Berlin", "Hamburg", "Munich", "Cologne", "Leipzig"], "AT": ["Vienna", "Graz", "Linz"],
          "NL": ["Amsterdam", "Utrecht", "Rotterdam"], "BE": ["Brussels", "Antwerp", "Ghent"],
          "FR": ["Lyon", "Lille", "Paris"]}
PRODUCTS = [("NW-MBL-200-M", "Merino Base Layer 200", "M / Charcoal", 69.0),
            ("NW-MBL-200-L", "Merino Base Layer 200", "L / Charcoal", 69.0),
            ("NW-DJK-700-S", "Down Jacket 700", "S / Navy", 289.0),
            ("NW-DJK-700-M", "Down Jacket 700", "M / Navy", 289.0),
            ("NW-TRL-RUN-42", "Trail Runner GTX", "EU 42", 159.0),
            ("NW-TRL-RUN-44", "Trail Runner GTX", "EU 44", 159.0),
            ("NW-SOC-WOOL-3P", "Wool Hiking Socks 3-pack", "One size", 29.9),
            ("NW-BPK-28L", "Daypack 28L", "Olive", 119.0),
            ("NW-SHL-3L-M", "3L Shell Jacket", "M / Red", 349.0),
            ("NW-BNE-MER", "Merino Beanie", "Grey", 34.5),
            ("NW-GLV-LNR", "Liner Gloves", "M", 24.9),
            ("NW-FLC-200-L", "Grid Fleece 200", "L / Black", 99.0)]


def address(g, name, country):
    return {"name": name, "address1": "%s %d" % (g.pick(STREETS), g.int(1, 180)), "address2": None,
            "city": g.pick(CITIES[country]), "zip": g.digits(5 if country in ("DE", "FR") else 4),
            "country_code": country, "phone": "+%s %s" % ({"DE": "49", "AT": "43", "NL": "31", "BE": "32", "FR": "33"}[country], g.digits(10))}


def conv_ecommerce_01(seed):
    g = G(seed)
    day0 = dt.datetime(2024, 5, 18, 0, 0, 0)
    # a pool of orders so that search results and order details agree
    orders = {}
    order_ids = []
    for i in range(150):
        oid = "ORD-%s-%s" % (g.digits(5), g.pick("ABCDEFGHJKLMNPRSTUVW"))
        country = g.pick(["DE", "DE", "DE", "AT", "NL", "BE", "FR"])
        name = g.person()
        items = [g.pick(PRODUCTS) for _ in range(g.int(1, 4))]
        qty = [g.int(1, 2) for _ in items]
        subtotal = round(sum(p[3] * q for p, q in zip(items, qty)), 2)
        created = day0 + dt.timedelta(seconds=g.int(6 * 3600, 23 * 3600))
        orders[oid] = {"id": oid, "number": 10000 + i * 3 + g.int(0, 2), "created": created, "country": country,
                       "name": name, "customer_id": "cus_" + g.alnum(12),
                       "email": g.email(name, g.pick(["gmail.com", "web.de", "gmx.at", "outlook.com", "hotmail.nl", "icloud.com"])),
                       "items": items, "qty": qty, "subtotal": subtotal,
                       "total": round(subtotal + (0 if subtotal > 99 else 4.9), 2),
                       "risk": g.wpick([(80, "low"), (15, "medium"), (5, "high")]), "dup": False}
        order_ids.append(oid)
    order_ids.sort(key=lambda o: orders[o]["created"])
    outage = [o for o in order_ids if dt.datetime(2024, 5, 18, 14, 0) <= orders[o]["created"] <= dt.datetime(2024, 5, 18, 16, 30)]
    dups = [o for o in outage if g.chance(0.35)][:7]
    for o in dups:
        orders[o]["dup"] = True
    b2b = [o for o in order_ids if orders[o]["country"] == "DE" and orders[o]["created"].hour < 12][3]
    orders[b2b].update({"items": [PRODUCTS[0], PRODUCTS[1], PRODUCTS[9], PRODUCTS[10]], "qty": [40, 20, 15, 10],
                        "subtotal": 4812.37, "total": 4812.37})
    psp = {o: "pi_" + g.alnum(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for o in order_ids}
    psp2 = {o: "pi_" + g.alnum(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for o in dups}
    refunds_done = []

    def search_orders(args, plant=None):
        lo = dt.datetime.strptime(args["created_from"], "%Y-%m-%dT%H:%M:%SZ")
        hi = dt.datetime.strptime(args["created_to"], "%Y-%m-%dT%H:%M:%SZ")
        sel = [orders[o] for o in order_ids if lo <= orders[o]["created"] <= hi
               and (not args.get("countries") or orders[o]["country"] in args["countries"])]
        page = args.get("page", 1)
        lim = args.get("limit", 50)
        chunk = sel[(page - 1) * lim: page * lim]
        rows = []
        for o in chunk:
            rows.append({"id": o["id"], "number": "#%d" % o["number"], "created_at": iso(o["created"], False),
                         "customer": {"id": o["customer_id"], "email": o["email"]}, "country": o["country"],
                         "currency": "EUR", "total_price": "%.2f" % o["total"], "financial_status": "paid",
                         "fulfillment_status": g.pick(["fulfilled", "fulfilled", "partial", None]),
                         "items": sum(o["qty"]), "risk_level": o["risk"], "tags": g.picks(["web", "app", "newsletter", "returning", "vip", "first-order"], 2),
                         "dispute": None})
        if plant:
            pos, oid = plant
            rows.insert(pos, {"id": oid, "number": "#%d" % (10000 + g.int(100, 400)), "created_at": iso(g.later(lo, 3600_000, 30000_000), False),
                              "customer": {"id": "cus_" + g.alnum(12), "email": g.email(g.person(), "gmx.de")}, "country": "DE",
                              "currency": "EUR", "total_price": "%.2f" % g.float(120, 400), "financial_status": "paid",
                              "fulfillment_status": "fulfilled", "items": 3, "risk_level": "medium", "tags": ["web", "returning"],
                              "dispute": {"status": "chargeback_opened", "reason": "duplicate", "opened_at": "2024-05-21T08:12:44Z", "amount": "214.80"}})
        return jdump({"orders": rows, "page": page, "page_size": lim, "has_next_page": len(sel) > page * lim,
                      "total_count": len(sel) + (1 if plant else 0)})

    def list_transactions(args, plant=None):
        d = dt.datetime.strptime(args["date"], "%Y-%m-%d")
        rows = []
        for o in order_ids:
            od = orders[o]
            if day(od["created"]) != args["date"]:
                continue
            t = g.later(od["created"], 200, 4000)
            rows.append([iso(t, False), psp[o], o, "authorisation", "%.2f" % od["total"], "EUR", "authorised", g.pick(["visa", "mc", "amex", "ideal", "klarna"])])
            t2 = g.later(t, 2000, 60000)
            rows.append([iso(t2, False), psp[o], o, "capture", "%.2f" % od["total"], "EUR", "captured", rows[-1][-1]])
            if od["dup"]:
                rows.append([iso(g.later(t2, 60_000, 900_000), False), psp2[o], o, "capture", "%.2f" % od["total"], "EUR", "captured", rows[-1][-1]])
        if not rows:
            for k in range(60):
                t = d + dt.timedelta(seconds=g.int(0, 86000))
                rows.append([iso(t, False), "pi_" + g.alnum(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
                             "ORD-%s-%s" % (g.digits(5), g.pick("ABCDEFGHJKLMNPRSTUVW")), g.pick(["authorisation", "capture"]),
                             "%.2f" % g.float(20, 600), "EUR", g.pick(["authorised", "captured", "captured", "refused"]), g.pick(["visa", "mc", "ideal"])])
        rows.sort(key=lambda r: r[0])
        if plant:
            rows.insert(plant[0], [iso(d + dt.timedelta(hours=15, minutes=7, seconds=12), False), plant[1], "ORD-%s-%s" % (g.digits(5), "K"),
                                   "capture", "%.2f" % g.float(100, 300), "EUR", "settlement_hold", "mc"])
        return text_table(["created_at", "psp_reference", "merchant_reference", "type", "amount", "cur", "status", "method"], rows)

    def order_detail(o, plant_tracking=None, total_display=None, b2b=False):
        od = orders[o]
        t = od["created"]
        li = []
        for (sku, title, var, price), q in zip(od["items"], od["qty"]):
            li.append({"id": g.int(10**12, 10**13), "sku": sku, "title": title, "variant_title": var, "quantity": q,
                       "price": "%.2f" % price, "total_discount": "0.00",
                       "tax_lines": [{"title": "VAT", "rate": 0.19 if od["country"] == "DE" else 0.21, "price": "%.2f" % round(price * q * 0.16, 2)}],
                       "fulfillment_service": "manual", "requires_shipping": True})
        tx = [{"id": g.int(10**11, 10**12), "kind": "authorization", "status": "success", "amount": "%.2f" % od["total"],
               "gateway": "adyen", "psp_reference": psp[o], "created_at": iso(g.later(t, 200, 4000), False)},
              {"id": g.int(10**11, 10**12), "kind": "capture", "status": "success", "amount": "%.2f" % od["total"],
               "gateway": "adyen", "psp_reference": psp[o], "created_at": iso(g.later(t, 6000, 60000), False)}]
        if od["dup"]:
            tx.append({"id": g.int(10**11, 10**12), "kind": "capture", "status": "success", "amount": "%.2f" % od["total"],
                       "gateway": "adyen", "psp_reference": psp2[o], "created_at": iso(g.later(t, 70000, 900000), False),
                       "note": "webhook retry after gateway timeout"})
        ship_id = "shp_" + g.alnum(16)
        ful = [{"id": g.int(10**11, 10**12), "status": "success", "shipment_id": ship_id,
                "tracking_company": "DHL", "tracking_number": g.digits(20),
                "warehouse": g.pick(["WH-AMS-01", "WH-MAD-01", "WH-WAW-01"]), "created_at": iso(t + dt.timedelta(hours=g.int(18, 40)), False),
                "shipment_status": g.pick(["delivered", "delivered", "in_transit"])}]
        if plant_tracking:
            ful[0].update({"tracking_company": "UPS", "tracking_number": plant_tracking, "shipment_status": "exception",
                           "exception_reason": "package not scanned at destination hub for 9 days"})
        events = []
        et = t
        for k in range(g.int(10, 22)):
            et = g.later(et, 60_000, 4 * 3600_000)
            events.append({"at": iso(et, False), "type": g.pick(["note", "email_sent", "fulfillment_update", "payment", "risk_analysis", "tag_added"]),
                           "message": g.pick(["Order confirmation email sent to customer", "Risk analysis: %s" % od["risk"],
                                              "Fulfillment created in warehouse", "Shipping label purchased", "Tracking update received",
                                              "Payment captured", "Tag 'returning' added", "Customer viewed order status page",
                                              "Packing slip printed by %s" % g.person()])})
        body = {"id": o, "name": "#%d" % od["number"], "created_at": iso(t, False), "currency": "EUR",
                "customer": {"id": od["customer_id"], "email": od["email"], "name": od["name"]},
                "financial_status": "paid", "fulfillment_status": "fulfilled",
                "tags": ["b2b", "net-30"] if b2b else ["web"],
                "line_items": li,
                "discount_codes": [{"code": "SPRING15", "amount": "%.2f" % round(od["subtotal"] * 0.15, 2), "type": "percentage"}] if g.chance(0.3) and not plant_tracking else [],
                "shipping_lines": [{"title": "DHL Paket", "price": "0.00" if od["subtotal"] > 99 else "4.90"}],
                "subtotal_price": "%.2f" % od["subtotal"], "total_price": "%.2f" % od["total"],
                "total_display": total_display or ("%s EUR" % money(od["total"])),
                "billing_address": address(g, od["name"], od["country"]), "shipping_address": address(g, od["name"], od["country"]),
                "transactions": tx, "fulfillments": ful, "refunds": [r for r in refunds_done if r["order_id"] == o],
                "events": events}
        return body

    def get_order(args, plant=None):
        o = args["order_id"]
        if plant and "tracking" in plant:
            return jdump({"order": order_detail(o, plant_tracking=plant["tracking"])}, pretty=True)
        if plant and "b2b" in plant:
            return jdump({"order": order_detail(o, total_display=plant["b2b"], b2b=True)}, pretty=True)
        return jdump({"order": order_detail(o)}, pretty=True)

    def get_customer(args, plant=None):
        cid = args["customer_id"]
        known = [orders[o] for o in order_ids if orders[o]["customer_id"] == cid]
        name = plant["name"] if plant else (known[0]["name"] if known else g.person())
        recent = []
        t = day0 - dt.timedelta(days=400)
        for k in range(g.int(12, 20)):
            t = t + dt.timedelta(days=g.int(5, 40))
            recent.append({"order_id": "ORD-%s-%s" % (g.digits(5), g.pick("ABCDEFGHJKLMNPRSTUVW")), "created_at": iso(t, False),
                           "total": "%.2f" % g.float(25, 420), "status": g.pick(["fulfilled", "fulfilled", "refunded", "partially_refunded"])})
        body = {"customer": {"id": cid, "name": name, "email": plant["email"] if plant else (known[0]["email"] if known else g.email(name, "gmail.com")),
                             "alternate_emails": [plant["alt"]] if plant else [], "phone": "+49 %s" % g.digits(10),
                             "created_at": "2021-%02d-%02dT10:00:00Z" % (g.int(1, 12), g.int(1, 28)), "state": "enabled",
                             "tags": ["vip", "newsletter"], "accepts_marketing": True, "tax_exempt": False,
                             "orders_count": len(recent), "total_spent": "%.2f" % sum(float(r["total"]) for r in recent),
                             "addresses": [address(g, name, "DE"), address(g, name, "DE")],
                             "notes": "Prefers DHL Packstation delivery. Called support twice in 2023 about sizing.",
                             "loyalty": {"tier": "gold", "points": g.int(400, 4000), "since": "2022-03-01"},
                             "recent_orders": recent}}
        return jdump(body, pretty=True)

    def get_shipment(args):
        t = day0 + dt.timedelta(days=1, hours=9)
        ev = []
        for loc in ["Neuss", "Neuss", "Cologne HUB", "Cologne HUB", "Frankfurt", "Frankfurt", "Hamburg HUB"]:
            t = g.later(t, 3600_000, 20 * 3600_000)
            ev.append({"timestamp": iso(t, False), "location": loc, "code": g.pick(["AR", "DP", "OR", "IT"]),
                       "description": g.pick(["Arrived at facility", "Departed from facility", "Origin scan", "In transit"])})
        ev.append({"timestamp": "2024-05-24T06:12:00Z", "location": "Hamburg HUB", "code": "EX",
                   "description": "Exception: package not located at destination hub"})
        return jdump({"shipment_id": args["shipment_id"], "carrier": "UPS", "service": "Standard", "status": "exception",
                      "weight_kg": 1.4, "events": ev}, pretty=True)

    def get_inventory(args, plant=None):
        levels = []
        for wh in ["WH-AMS-01", "WH-MAD-01", "WH-WAW-01", "WH-LYS-01", "WH-VIE-01"]:
            on_hand = g.int(0, 400)
            levels.append({"warehouse": wh, "on_hand": on_hand, "committed": g.int(0, min(on_hand, 60)),
                           "incoming": g.int(0, 200), "available": None, "bin_locations": ["%s-%02d-%02d" % (g.pick("ABCDE"), g.int(1, 40), g.int(1, 12)) for _ in range(g.int(1, 4))],
                           "last_counted_at": iso(day0 - dt.timedelta(days=g.int(1, 60)), False)})
        for l in levels:
            l["available"] = l["on_hand"] - l["committed"]
        if plant:
            levels.insert(2, {"warehouse": plant, "on_hand": 3, "committed": 11, "incoming": 0, "available": -8,
                              "bin_locations": ["C-07-03"], "last_counted_at": "2024-02-02T07:00:00Z"})
        hist = []
        t = day0 - dt.timedelta(days=30)
        for k in range(g.int(40, 70)):
            t = g.later(t, 3600_000, 20 * 3600_000)
            hist.append({"at": iso(t, False), "warehouse": g.pick(["WH-AMS-01", "WH-MAD-01", "WH-WAW-01", "WH-LYS-01", "WH-VIE-01"]),
                         "delta": g.pick([-1, -1, -2, -1, 24, 48, -3]), "reason": g.pick(["sale", "sale", "return", "receiving", "adjustment"])})
        return jdump({"sku": args["sku"], "levels": levels, "movements_last_30d": hist}, pretty=True)

    def list_refunds(args):
        rows = []
        t = dt.datetime.strptime(args["since"], "%Y-%m-%d")
        for k in range(g.int(60, 90)):
            t = g.later(t, 60_000, 3 * 3600_000)
            rows.append(["re_" + g.alnum(14), "ORD-%s-%s" % (g.digits(5), g.pick("ABCDEFGHJKLMNPRSTUVW")), iso(t, False),
                         "%.2f" % g.float(9, 350), "EUR", g.pick(["customer_return", "damaged", "size_exchange", "goodwill", "duplicate"]),
                         g.pick(["succeeded", "succeeded", "pending"]), g.email(g.person(), "northwind.example")])
        for r in refunds_done:
            rows.append([r["refund_id"], r["order_id"], "2024-05-27T10:%02d:%02dZ" % (g.int(0, 59), g.int(0, 59)), r["amount"], "EUR",
                         r["reason"], r["status"], "ops-assistant@northwind.example"])
        return csv_text(["refund_id", "order_id", "created_at", "amount", "currency", "reason", "status", "created_by"], rows)

    def create_refund(args):
        r = {"refund_id": "re_" + g.alnum(14), "order_id": args["order_id"], "amount": args["amount"], "currency": "EUR",
             "reason": args.get("reason", ""), "status": "pending", "psp_reference": "pi_" + g.alnum(24)}
        refunds_done.append(r)
        return jdump({"refund": r, "message": "Refund submitted to Adyen; settles in 3-5 business days."})

    def add_order_note(args):
        return jdump({"ok": True, "order_id": args["order_id"], "note_id": g.int(10**6, 10**7)})

    impl = {"search_orders": search_orders, "list_transactions": list_transactions, "get_order": get_order,
            "get_customer": get_customer, "get_shipment": get_shipment, "get_inventory": get_inventory,
            "list_refunds": list_refunds, "create_refund": create_refund, "add_order_note": add_order_note}
    tools = [
        tool("search_orders", "Search orders in the shop by creation time and country (paged, compact JSON).",
             {"created_from": S("ISO-8601 UTC"), "created_to": S("ISO-8601 UTC"), "countries": A(S("ISO country code"), "Filter"),
              "status": S("financial status filter", enum=["paid", "refunded", "pending", "any"]), "limit": I("Page size (max 100)"),
              "page": I("1-based page")}, ["created_from", "created_to"]),
        tool("list_transactions", "Export payment-gateway (Adyen) transactions for one day as a table.",
             {"date": S("YYYY-MM-DD"), "gateway": S("Gateway name")}, ["date"]),
        tool("get_order", "Full order record: line items, addresses, transactions, fulfillments, refunds, events.",
             {"order_id": S("Order id, e.g. ORD-12345-A")}, ["order_id"]),
        tool("get_customer", "Customer profile with addresses, loyalty and recent orders.", {"customer_id": S("cus_...")}, ["customer_id"]),
        tool("get_shipment", "Carrier tracking events for a shipment.", {"shipment_id": S("shp_...")}, ["shipment_id"]),
        tool("get_inventory", "Stock levels per warehouse and recent movements for a SKU.", {"sku": S("SKU")}, ["sku"]),
        tool("list_refunds", "Refunds created since a date (CSV).", {"since": S("YYYY-MM-DD")}, ["since"]),
        tool("create_refund", "Refund (part of) an order's captured payment.",
             {"order_id": S("Order id"), "amount": S("Decimal amount"), "reason": S("Reason code")}, ["order_id", "amount"]),
        tool("add_order_note", "Attach an internal note to an order.", {"order_id": S("Order id"), "note": S("Text")}, ["order_id", "note"]),
    ]
    c = Conv("ecommerce-orders-01",
             "E-commerce ops: find and refund duplicate card captures from a payment-gateway incident, plus a lost-parcel complaint.",
             tools, impl)
    c.system("You are an operations assistant for Northwind Outfitters' EU web shop. You can search orders, inspect "
             "payments, inventory and shipments, and issue refunds. Never refund more than was captured twice; "
             "always explain which evidence you used.")
    c.user("Several customers say they were charged twice for orders placed last Saturday (18 May) while Adyen was "
           "having issues in the afternoon. Can you find the paid orders from that afternoon for DE, AT and NL?")
    so = c.act(("search_orders", {"created_from": "2024-05-18T12:00:00Z", "created_to": "2024-05-18T23:59:59Z",
                                  "countries": ["DE", "AT", "NL"], "status": "paid", "limit": 40, "page": 1},
                {"plant": (17, "ORD-48213-X")}))
    c.fact("chargeback", "ORD-48213-X", so,
           "In the very first order search, one order already had a chargeback opened against it. What was that order's id?",
           "That was {v} -- it was the only order in that first search with a dispute (chargeback_opened, reason 'duplicate', 214.80 EUR).")
    c.act(("search_orders", {"created_from": "2024-05-18T12:00:00Z", "created_to": "2024-05-18T23:59:59Z",
                             "countries": ["DE", "AT", "NL"], "status": "paid", "limit": 40, "page": 2}),
          text="There's a second page; fetching it too.")
    c.say("There are a few dozen paid DE/AT/NL orders from Saturday afternoon across two pages. Nothing in the order "
          "records themselves shows a double charge (each has one total and financial_status 'paid'), but one order already "
          "has a chargeback opened with reason 'duplicate', which supports the customers' story. The duplicates would show "
          "up in the gateway's transaction export, so I'll check that next.")
    c.user("Yes, pull the Adyen transactions for that day.")
    tx = c.act(("list_transactions", {"date": "2024-05-18", "gateway": "adyen"},
                {"plant": (41, "pi_3PFx8KQ2eZvKYlo21a7cW9dM")}))
    c.fact("hold", "pi_3PFx8KQ2eZvKYlo21a7cW9dM", tx,
           "In the Adyen export for the 18th there was exactly one transaction stuck in settlement_hold. What was its PSP reference?",
           "The settlement_hold transaction had PSP reference {v} (a Mastercard capture at 15:07:12 UTC).")
    c.act(("list_transactions", {"date": "2024-05-19", "gateway": "adyen"}),
          text="Checking the following day as well, in case late webhook retries captured again after midnight.")
    c.say("Found it. On the 18th, %d orders placed between 14:00 and 16:30 UTC have **two** successful captures with "
          "different PSP references for the same amount: %s. The second capture always comes 1-15 minutes after the first, "
          "consistent with webhook retries after gateway timeouts. The 19th looks clean. There's also one unrelated capture "
          "in `settlement_hold`." % (len(dups), ", ".join(dups)))
    c.user("Open the first three of those orders so we can confirm on the order side.")
    c.act(*[("get_order", {"order_id": o}) for o in dups[:3]], text="Opening all three in parallel.")
    c.act(*[("get_customer", {"customer_id": orders[o]["customer_id"]}) for o in dups[:3]],
          text="Pulling the three customer profiles too, to see whether they're among the people who complained.")
    c.say("Confirmed on all three: each order's `transactions` array has one authorization and two captures for the full "
          "amount; the second capture carries the note 'webhook retry after gateway timeout'. None has a refund yet. The "
          "customers are ordinary web-shop customers with several past orders each.")
    c.user("Spot-check some of the outage-window orders that did NOT get a second capture, to make sure the pattern is clean.")
    clean = [o for o in outage if o not in dups][:9]
    for k in range(0, len(clean), 3):
        c.act(*[("get_order", {"order_id": o}) for o in clean[k:k + 3]])
    c.say("All %d spot-checked orders from the same window have exactly one authorization and one capture. The duplicates are "
          "confined to the orders listed above." % len(clean))
    c.user("Before we refund, check what refunds already went out since Saturday so we don't double-refund anyone.")
    c.act(("list_refunds", {"since": "2024-05-18"}))
    c.say("None of the duplicate-capture orders appear in the refunds since the 18th. The refunds that exist are normal "
          "returns, size exchanges and a few goodwill credits.")
    c.user("OK, refund the duplicate capture on those three orders, reason 'duplicate'.")
    c.act(*[("create_refund", {"order_id": o, "amount": "%.2f" % orders[o]["total"], "reason": "duplicate"}) for o in dups[:3]])
    c.act(("list_refunds", {"since": "2024-05-27"}), text="Checking that the refunds are registered.")
    c.say("Three refunds submitted and visible in the refund list (status pending; Adyen settles in 3-5 business days). Each "
          "refund equals exactly the duplicate capture amount, so the customers end up charged once.")
    cust = "cus_" + g.alnum(12)
    u = c.user("Separate ticket while we're at it: customer %s says her order from the 18th never arrived, and that the "
               "coupon WELCOME-7Q3K she entered wasn't applied. Can you look her up?" % cust)
    c.fact("coupon", "WELCOME-7Q3K", u,
           "What was the coupon code the lost-parcel customer said she had entered?",
           "She said she had entered {v}; the order itself has no discount code applied at all, so it was never redeemed.")
    cu = c.act(("get_customer", {"customer_id": cust},
                {"plant": {"name": "Maja Lindqvist", "email": "maja.lindqvist@gmail.com", "alt": "m.lindqvist@posteo.de"}}))
    c.fact("altmail", "m.lindqvist@posteo.de", cu,
           "What was the alternate email address on the lost-parcel customer's profile?",
           "Her profile lists {v} as the alternate email (the primary is her Gmail address).")
    her = order_ids[60]
    orders[her]["name"] = "Maja Lindqvist"
    orders[her]["email"] = "maja.lindqvist@gmail.com"
    orders[her]["customer_id"] = cust
    oo = c.act(("get_order", {"order_id": her}, {"plant": {"tracking": "1Z9A4E710391245587"}}),
               text="Her most recent order from the 18th is %s; opening it." % her)
    c.fact("tracking", "1Z9A4E710391245587", oo,
           "For the lost parcel, what was the UPS tracking number on the fulfillment?",
           "The fulfillment's UPS tracking number was {v}.")
    ship = json.loads(c.messages[oo]["content"])["order"]["fulfillments"][0]["shipment_id"]
    c.act(("get_shipment", {"shipment_id": ship}))
    c.say("She's a long-standing gold-tier customer. Her order from the 18th shipped via UPS, and the carrier events show "
          "it reached the Hamburg hub and then an exception 'package not located at destination hub' on the 24th with no "
          "scans since. That's a lost parcel. On the coupon: the order doesn't have the code she mentions applied.")
    c.user("Can we reship? Check stock for the merino base layer in M.")
    inv = c.act(("get_inventory", {"sku": "NW-MBL-200-M"}, {"plant": "WH-DUS-02"}))
    c.fact("wh", "WH-DUS-02", inv,
           "Which warehouse showed negative available stock for the merino base layer?",
           "That was {v}: 3 on hand, 11 committed, so -8 available, and it hadn't been counted since early February.")
    c.act(("get_inventory", {"sku": "NW-MBL-200-L"}), text="Also checking size L in case she'd accept it.")
    c.say("Size M is available in several warehouses -- WH-AMS-01 is the closest to her with healthy stock. One warehouse "
          "shows *negative* available stock, which looks like a counting problem worth flagging to logistics. Size L is "
          "also in stock.")
    c.user("Add a note on her order that we're reshipping from Amsterdam and applying the coupon as a goodwill refund of 10 EUR.")
    c.act(("add_order_note", {"order_id": her, "note": "Lost in transit (UPS exception 24 May). Reship from WH-AMS-01 approved. Goodwill 10 EUR for coupon not applied."}),
          ("create_refund", {"order_id": her, "amount": "10.00", "reason": "goodwill"}))
    c.say("Done: note added to %s and a 10.00 EUR goodwill refund submitted." % her)
    c.user("Now the B2B side: there was a bulk order from a business customer on Saturday too, tagged b2b. Find the "
           "Saturday morning orders in DE so I can spot it.")
    c.act(("search_orders", {"created_from": "2024-05-18T00:00:00Z", "created_to": "2024-05-18T11:59:59Z",
                             "countries": ["DE"], "status": "paid", "limit": 50, "page": 1}))
    bo = c.act(("get_order", {"order_id": b2b}, {"plant": {"b2b": "4,812.37 EUR"}}),
               text="%s has an unusually large item count; opening it." % b2b)
    c.fact("b2btotal", "4,812.37 EUR", bo,
           "What was the grand total (as displayed) of the bulk B2B order you opened, the one with 40 base layers?",
           "Its total_display was {v} (net-30 terms, 85 units across four line items).")
    bcust = orders[b2b]["customer_id"]
    c.act(("get_customer", {"customer_id": bcust}), text="And the customer behind it.")
    c.say("That's the bulk order: 40 merino base layers (M), 20 in L, 15 beanies and 10 pairs of liner gloves, tagged "
          "b2b / net-30, with a single capture -- no duplicate there.")
    c.recall("coupon", prefix="Quick one before I forget -- marketing asked. ")
    c.user("Good. Let's finish the duplicates: open the remaining duplicated orders.")
    rest = dups[3:]
    for o in rest:
        c.act(("get_order", {"order_id": o}))
    c.say("All remaining orders show the same double-capture pattern and no existing refunds.")
    c.user("Refund them the same way.")
    for o in rest:
        c.act(("create_refund", {"order_id": o, "amount": "%.2f" % orders[o]["total"], "reason": "duplicate"}))
    c.say("Refunds submitted for the remaining %d orders. In total %d duplicate captures are being refunded, %.2f EUR." % (
        len(rest), len(dups), sum(orders[o]["total"] for o in dups)))
    c.user("Show me the first of the duplicated orders again, I want to see whether the refund shows up on it.")
    c.act(("get_order", {"order_id": dups[0]}))
    c.say("The order record is unchanged from when I first opened it -- the refund isn't reflected yet. Refunds show up on "
          "the order once Adyen confirms them (status pending right now), so that's expected.")
    c.user("And pull the Adyen export for the 19th once more, did anything new come in?")
    c.act(("list_transactions", {"date": "2024-05-19", "gateway": "adyen"}))
    c.say("Identical to the earlier export for the 19th -- no late duplicate captures.")
    c.recall("chargeback", prefix="I'm writing this up for finance now. ")
    c.recall("hold")
    c.user("How many orders were double-captured in total, and over what time window?")
    c.say("%d orders, all placed between 14:00 and 16:30 UTC on 18 May; each got a second capture 1-15 minutes after the "
          "first because of webhook retries." % len(dups))
    c.recall("b2btotal")
    c.recall("wh")
    c.recall("tracking")
    c.recall("altmail")
    return c


# ============================================================================
# 3. refactor-codebase-01: replace float-based parse_amount with Money.parse
# ============================================================================


NOUNS = ["invoice", "payment", "entry", "balance", "statement", "batch", "allocation", "journal", "credit", "fee"]
VERBS = ["load", "build", "apply", "collect", "normalize", "resolve", "summarize", "split", "merge", "validate"]

FUNC_TEMPLATES = [
    r'''def VERB_NOUNs(rows: Iterable[Mapping[str, str]]) -> list[CLS]:
    """VERBC NOUN records from raw rows, skipping malformed ones."""
    out: list[CLS] = []
    for i, row in enumerate(rows):
        try:
            amount = PARSE(row["amount"])
        except (KeyError, ValueError) as exc:
            log.warning("skipping NOUN row %d: %s", i, exc)
            continue
        out.append(CLS(id=row["id"], amount=amount, currency=row.get("currency", "EUR")))
    return out
''',
    r'''@dataclass(frozen=True)
class CLS:
    id: str
    amount: Decimal
    currency: str = "EUR"
    FIELD: Optional[str] = None

    def with_amount(self, amount: Decimal) -> "CLS":
        return replace(self, amount=amount)

    @property
    def is_credit(self) -> bool:
        return self.amount < 0
''',
    r'''def VERB_NOUN_total(items: Sequence[CLS], *, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Sum NOUN amounts and round to cents."""
    total = sum((i.amount for i in items), Decimal("0"))
    return total.quantize(CENT, rounding=rounding)
''',
    r'''def VERB_NOUN_amount(raw: str, default: Optional[Decimal] = None) -> Decimal:
    if not raw or not raw.strip():
        if default is None:
            raise ValueError("empty NOUN amount")
        return default
    value = PARSE(raw)
    if value < 0 and not ALLOW_NEGATIVE:
        raise ValueError(f"negative NOUN: {value}")
    return value
''',
    r'''class CLSRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, NOUN_id: str) -> Optional[CLS]:
        row = self._conn.execute(
            "SELECT id, amount, currency FROM NOUNs WHERE id = ?", (NOUN_id,)
        ).fetchone()
        if row is None:
            return None
        return CLS(id=row[0], amount=PARSE(row[1]), currency=row[2])

    def list_since(self, since: date) -> list[CLS]:
        cur = self._conn.execute(
            "SELECT id, amount, currency FROM NOUNs WHERE created_at >= ? ORDER BY created_at",
            (since.isoformat(),),
        )
        return [CLS(id=r[0], amount=PARSE(r[1]), currency=r[2]) for r in cur]
''',
    r'''def render_NOUN_table(items: Sequence[CLS]) -> str:
    lines = [f"{'id':<24} {'amount':>14} cur"]
    for it in items:
        lines.append(f"{it.id:<24} {it.amount:>14,.2f} {it.currency}")
    return "\n".join(lines)
''',
    r'''def VERB_NOUNs_by_period(items: Iterable[CLS], period: str = "month") -> dict[str, Decimal]:
    buckets: dict[str, Decimal] = defaultdict(lambda: Decimal("0"))
    for it in items:
        key = it.FIELD or "unknown"
        if period == "month":
            key = key[:7]
        buckets[key] += it.amount
    return dict(sorted(buckets.items()))
''',
]

MODULE_HEADER = r'''"""DOC"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from sqlite3 import Connection
from typing import Iterable, Mapping, Optional, Sequence

from ledgerkit.money import CENT, Money, parse_amount

log = logging.getLogger(__name__)

ALLOW_NEGATIVE = ALLOWNEG

'''

MONEY_PY = r'''"""Money type and amount helpers used throughout ledgerkit."""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Iterable, Union

__all__ = ["CENT", "Money", "parse_amount", "format_amount", "allocate"]

CENT = Decimal("0.01")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
Number = Union[int, float, str, Decimal]


@dataclass(frozen=True, order=True)
class Money:
    amount: Decimal
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if not _CURRENCY_RE.match(self.currency):
            raise ValueError(f"bad currency code: {self.currency!r}")
        if not isinstance(self.amount, Decimal):
            object.__setattr__(self, "amount", Decimal(str(self.amount)))

    def __add__(self, other: "Money") -> "Money":
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: "Money") -> "Money":
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> "Money":
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: Number) -> "Money":
        return Money(self.amount * Decimal(str(factor)), self.currency)

    def rounded(self, rounding: str = ROUND_HALF_EVEN) -> "Money":
        return Money(self.amount.quantize(CENT, rounding=rounding), self.currency)

    def _check(self, other: "Money") -> None:
        if not isinstance(other, Money):
            raise TypeError(f"expected Money, got {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    @classmethod
    def zero(cls, currency: str = "EUR") -> "Money":
        return cls(Decimal("0"), currency)


def parse_amount(text: str) -> Decimal:
    """Parse a user- or file-supplied amount such as '1.234,56' or '1,234.56'.

    Goes through float for speed (see history); callers quantize afterwards.
    """
    s = text.strip().replace("\u00a0", "").replace(" ", "")
    if not s:
        raise ValueError("empty amount")
    neg = s.startswith("(") and s.endswith(")")
    s = s.strip("()")
    if "," in s and "." in s:
        if s.rfind(",") > s.rfind("."):
            s = s.replace(".", "").replace(",", ".")
        else:
            s = s.replace(",", "")
    elif "," in s:
        s = s.replace(",", ".")
    value = float(s)
    if neg:
        value = -value
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def format_amount(value: Decimal, currency: str = "EUR", locale: str = "en") -> str:
    q = value.quantize(CENT, rounding=ROUND_HALF_EVEN)
    s = f"{q:,.2f}"
    if locale == "de":
        s = s.replace(",", "_").replace(".", ",").replace("_", ".")
    return f"{s} {currency}"


def allocate(total: Money, weights: Iterable[int]) -> list[Money]:
    """Split `total` proportionally to `weights` without losing cents."""
    ws = list(weights)
    if not ws or sum(ws) <= 0:
        raise ValueError("weights must be positive")
    cents = int((total.amount / CENT).to_integral_value())
    shares = [cents * w // sum(ws) for w in ws]
    for i in range(cents - sum(shares)):
        shares[i % len(shares)] += 1
    return [Money(Decimal(s) * CENT, total.currency) for s in shares]


def sum_money(values: Iterable[Money], currency: str = "EUR") -> Money:
    acc = Money.zero(currency)
    for v in values:
        acc = acc + v
    return acc


def is_zero(value: Decimal) -> bool:
    return value.quantize(CENT) == 0


def clamp(value: Decimal, lo: Decimal, hi: Decimal) -> Decimal:
    return max(lo, min(hi, value))


def percent_of(value: Decimal, pct: Number) -> Decimal:
    return (value * Decimal(str(pct)) / Decimal(100)).quantize(CENT, rounding=ROUND_HALF_EVEN)


def _coerce_decimal_legacy(value: object) -> Decimal:
    # kept for pickled 0.x snapshots; do not use in new code
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(repr(value).strip("'\""))
'''

MONEY_PARSE_NEW = r'''def _normalize_amount_text(text: str) -> str:
    s = text.strip().replace("\u00a0", "").replace(" ", "")
    if not s:
        raise ValueError("empty amount")
    neg = s.startswith("(") and s.endswith(")")
    s = s.strip("()")
    if "," in s and "." in s:
        if s.rfind(",") > s.rfind("."):
            s = s.replace(".", "").replace(",", ".")
        else:
            s = s.replace(",", "")
    elif "," in s:
        s = s.replace(",", ".")
    return "-" + s if neg else s


def _parse_decimal(text: str) -> Decimal:
    try:
        return Decimal(_normalize_amount_text(text)).quantize(CENT, rounding=ROUND_HALF_EVEN)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {text!r}") from exc


def parse_amount(text: str) -> Decimal:
    """Deprecated: use ``Money.parse(text).amount``."""
    warnings.warn("parse_amount() is deprecated; use Money.parse()", DeprecationWarning, stacklevel=2)
    return _parse_decimal(text)
'''

MONEY_CLASSMETHOD = r'''    @classmethod
    def zero(cls, currency: str = "EUR") -> "Money":
        return cls(Decimal("0"), currency)

    @classmethod
    def parse(cls, text: str, currency: str = "EUR") -> "Money":
        """Parse '1.234,56', '1,234.56', '(12.50)' etc. exactly, without going through float."""
        return cls(_parse_decimal(text), currency)
'''

PARSING_PY = r'''"""Tokenising helpers for bank statement and CSV importers."""
from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from typing import Iterator

from ledgerkit.money import parse_amount

_DATE_RES = [
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), "ymd"),
    (re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})$"), "dmy"),
    (re.compile(r"^(\d{2})/(\d{2})/(\d{4})$"), "mdy"),
]


def sniff_delimiter(sample: str) -> str:
    counts = {d: sample.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=counts.get)


def iter_rows(text: str) -> Iterator[dict[str, str]]:
    delim = sniff_delimiter(text[:4096])
    reader = csv.DictReader(io.StringIO(text), delimiter=delim)
    for row in reader:
        yield {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}


def parse_date(text: str) -> str:
    for rx, kind in _DATE_RES:
        m = rx.match(text.strip())
        if not m:
            continue
        a, b, c = m.groups()
        if kind == "ymd":
            return f"{a}-{b}-{c}"
        if kind == "dmy":
            return f"{c}-{b}-{a}"
        return f"{c}-{a}-{b}"
    raise ValueError(f"unrecognised date: {text!r}")


def looks_like_amount(text: str) -> bool:
    # TODO(LK-1187): drop the thousands-separator heuristic once every importer sends ISO amounts
    return bool(re.match(r"^\(?-?[\d.,\s]+\)?$", text.strip()))


def amount_column(row: dict[str, str]) -> Decimal:
    for key in ("amount", "betrag", "montant", "value"):
        if key in row and row[key]:
            return parse_amount(row[key])
    debit, credit = row.get("debit", ""), row.get("credit", "")
    if debit:
        return -parse_amount(debit)
    if credit:
        return parse_amount(credit)
    raise ValueError("row has no amount column")


def split_reference(text: str) -> tuple[str, str]:
    m = re.search(r"(INV|RE|ORD)[-/ ]?(\d{4,})", text, re.I)
    if not m:
        return "", text
    return m.group(1).upper() + "-" + m.group(2), text[: m.start()].strip()
'''


def gen_module(g, doc, uses_parse, n):
    out = MODULE_HEADER.replace("DOC", doc).replace("ALLOWNEG", g.pick(["False", "True"]))
    used = []
    for k in range(n):
        tpl = FUNC_TEMPLATES[(k * 3 + g.int(0, 6)) % len(FUNC_TEMPLATES)]
        noun = g.pick(NOUNS)
        verb = g.pick(VERBS)
        cls = noun.capitalize() + g.pick(["", "Line", "Record", "Item"])
        body = (tpl.replace("VERBC", verb.capitalize()).replace("VERB", verb).replace("NOUN", noun)
                .replace("CLS", cls).replace("FIELD", g.pick(["booked_on", "period", "reference", "value_date"]))
                .replace("PARSE", "parse_amount" if uses_parse and g.chance(0.8) else "Decimal"))
        if body in used:
            continue
        used.append(body)
        out += "\n" + body + "\n"
    return out.rstrip("\n") + "\n"


def gen_tests(g, module, funcs, n):
    out = '"""Tests for %s."""\nfrom decimal import Decimal\n\nimport pytest\n\nfrom ledgerkit.%s import *  # noqa: F401,F403\n' % (module, module)
    for k in range(n):
        noun = g.pick(NOUNS)
        amt = "%d.%02d" % (g.int(1, 9999), g.int(0, 99))
        name = "test_%s_%s_%s" % (g.pick(VERBS), noun, g.pick(["basic", "negative", "rounding", "empty", "german_format", "parenthesised", "large"]))
        out += '\n\ndef %s_%d():\n    rows = [{"id": "%s_%s", "amount": "%s", "currency": "EUR"}]\n    result = load_%ss(rows)\n    assert result[0].amount == Decimal("%s")\n' % (
            name, k, noun[:3], g.alnum(8), amt, noun, amt)
    return out


def conv_refactor_01(seed):
    g = G(seed)
    repo = {}
    repo["pyproject.toml"] = '''[build-system]
requires = ["hatchling>=1.21"]
build-backend = "hatchling.build"

[project]
name = "ledgerkit"
version = "0.14.2"
description = "Small double-entry ledger toolkit with importers and reports"
requires-python = ">=3.10"
dependencies = ["python-dateutil>=2.8", "rich>=13.0", "typer>=0.9"]

[project.optional-dependencies]
dev = ["pytest>=8", "pytest-cov", "mypy>=1.8", "ruff>=0.3", "hypothesis>=6.98"]

[tool.pytest.ini_options]
addopts = "-q --strict-markers"
testpaths = ["tests"]
filterwarnings = ["error::DeprecationWarning:ledgerkit.*"]

[tool.ruff]
line-length = 110
target-version = "py310"
'''
    repo["src/ledgerkit/__init__.py"] = '"""ledgerkit."""\nfrom ledgerkit.money import Money, parse_amount, format_amount\n\n__all__ = ["Money", "parse_amount", "format_amount"]\n__version__ = "0.14.2"\n'
    repo["src/ledgerkit/money.py"] = MONEY_PY
    repo["src/ledgerkit/parsing.py"] = PARSING_PY
    mods = [("invoices", "Invoice model, totals and rounding.", True, 9), ("tax", "VAT computation per line and per invoice.", True, 7),
            ("io/csv_import", "CSV importers for bank and PSP exports.", True, 10), ("io/json_export", "JSON export of ledgers.", False, 6),
            ("reports/aging", "Receivables aging report.", True, 8), ("reports/summary", "Monthly summary report.", True, 7),
            ("ledger", "Journal and posting logic.", False, 9), ("accounts", "Chart of accounts.", False, 6),
            ("fx", "Currency conversion with cached ECB rates.", True, 6), ("cli", "Typer CLI entry points.", True, 8)]
    for m, doc, up, n in mods:
        repo["src/ledgerkit/%s.py" % m] = gen_module(g, doc, up, n)
    for m, doc, up, n in mods[:6]:
        repo["tests/test_%s.py" % m.split("/")[-1]] = gen_tests(g, m.replace("/", "."), None, g.int(10, 18))
    repo["tests/test_invoices.py"] += '''

def test_rounding_half_even_eur():
    inv = [InvoiceLine(id="l1", amount=parse_amount("0.125")), InvoiceLine(id="l2", amount=parse_amount("0.135"))]
    assert build_invoice_total(inv) == Decimal("0.26")
'''
    changelog = ["# Changelog\n"]
    for major in range(14, 2, -1):
        for patch in range(g.int(1, 3), -1, -1):
            changelog.append("\n## 0.%d.%d - 20%02d-%02d-%02d\n" % (major, patch, 18 + major // 4, g.int(1, 12), g.int(1, 28)))
            for _ in range(g.int(2, 6)):
                changelog.append("- %s %s %s (#%d)\n" % (g.pick(["Fix", "Add", "Improve", "Refactor", "Document", "Speed up"]),
                                                       g.pick(NOUNS), g.pick(["rounding", "import for Sparkasse CSV", "report layout",
                                                                              "CLI flags", "type hints", "error messages", "aging buckets",
                                                                              "fx cache invalidation", "json schema"]), g.int(100, 900)))
    repo["CHANGELOG.md"] = "".join(changelog)
    listing_only = (["docs/%s.md" % d for d in ["index", "importers", "reports", "money", "cli", "contributing", "architecture"]] +
                    [".github/workflows/%s.yml" % w for w in ["ci", "release", "docs"]] +
                    ["scripts/%s" % s for s in ["bump_version.py", "gen_fixtures.py", "profile_import.py", "check_changelog.py"]] +
                    ["tests/fixtures/%s_%d.csv" % (b, k) for b in ["sparkasse", "n26", "revolut", "stripe_payouts", "adyen_settlement"] for k in range(1, 4)] +
                    ["migrations/%04d_%s.sql" % (k, g.pick(["init", "add_fx", "index_entries", "add_batches", "rename_cols", "add_tax"])) for k in range(1, 15)] +
                    ["src/ledgerkit/io/__init__.py", "src/ledgerkit/reports/__init__.py", "src/ledgerkit/py.typed",
                     "tests/conftest.py", ".gitignore", ".pre-commit-config.yaml", "LICENSE", "README.md", "mypy.ini", "noxfile.py"])
    sizes = {p: g.int(120, 24000) for p in listing_only}
    backfill = "scripts/one_off/backfill_2019_rates.py"

    def numbered(text, start=1, end=None):
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        end = end or len(lines)
        return "\n".join("%5d  %s" % (i + 1, lines[i]) for i in range(start - 1, min(end, len(lines))))

    def list_files(args, plant=None):
        paths = sorted(list(repo) + listing_only + ([plant] if plant else []))
        rows = []
        for p in paths:
            size = len(repo[p]) if p in repo else (2917 if p == plant else sizes[p])
            mode = "-rwxr-xr-x" if p.startswith("scripts/") else "-rw-r--r--"
            rows.append("%s  %7d  2024-0%d-%02d %02d:%02d  %s" % (mode, size, g.int(1, 6), g.int(1, 28), g.int(0, 23), g.int(0, 59), p))
        return "%d files\n" % len(rows) + "\n".join(rows)

    def read_file(args):
        p = args["path"]
        if p not in repo:
            return "error: %s: no such file" % p
        return "# %s (%d lines)\n" % (p, repo[p].count("\n")) + numbered(repo[p], args.get("start_line", 1), args.get("end_line"))

    def grep(args):
        pat = args["pattern"]
        root = args.get("path", ".")
        hits = []
        for p in sorted(repo):
            if root not in (".", "") and not p.startswith(root):
                continue
            for i, line in enumerate(repo[p].split("\n")):
                if pat in line:
                    hits.append("%s:%d:%s" % (p, i + 1, line))
        return "\n".join(hits) + "\n(%d matches in %d files)" % (len(hits), len({h.split(":")[0]: 1 for h in hits}))

    def apply_patch(args):
        # args["patch"] is a unified diff produced below from the intended edit
        p = args["path"]
        old = repo[p]
        new = pending.pop(p)
        repo[p] = new
        d = list(difflib.unified_diff(old.split("\n"), new.split("\n"), lineterm="", n=2))
        adds = sum(1 for l in d if l.startswith("+") and not l.startswith("+++"))
        dels = sum(1 for l in d if l.startswith("-") and not l.startswith("---"))
        return "patch applied cleanly to %s: %d hunk(s), +%d -%d\nruff: 0 errors\nmypy: Success: no issues found in 1 source file" % (
            p, sum(1 for l in d if l.startswith("@@")), adds, dels)

    pending = {}

    def patch_for(p, new):
        pending[p] = new
        return "\n".join(difflib.unified_diff(repo[p].split("\n"), new.split("\n"), "a/" + p, "b/" + p, lineterm="", n=2))

    run_no = [0]

    def run_tests(args, plant=None, deprecated=()):
        run_no[0] += 1
        sel = args["selector"]
        tests = sorted(p for p in repo if p.startswith("tests/test_") and (sel in ("tests/", "tests") or p == sel))
        total = sum(repo[t].count("def test_") for t in tests)
        lines = ["============================= test session starts ==============================",
                 "platform linux -- Python 3.11.8, pytest-8.1.1, pluggy-1.4.0",
                 "rootdir: /home/dev/ledgerkit", "configfile: pyproject.toml",
                 "plugins: cov-4.1.0, hypothesis-6.98.17", "collected %d items" % total, ""]
        fails = list(plant or [])
        for t in deprecated:
            if t not in tests:
                continue
            names = [n for n in re.findall(r"def (test_\w+)\(", repo[t]) if n != "test_rounding_half_even_eur"]
            for k in sorted(g.r.sample(range(len(names)), min(3, len(names)))):
                mod = "ledgerkit/" + t[len("tests/test_"):]
                tb = ["", "    def %s():" % names[k], "        rows = [...]", ">       result = load_entrys(rows)", "",
                      "src/%s:%d: in load_entrys" % (mod.replace("test_", ""), g.int(20, 90)), "    amount = parse_amount(row[\"amount\"])",
                      "src/ledgerkit/money.py:%d: in parse_amount" % g.int(80, 90),
                      "    warnings.warn(\"parse_amount() is deprecated; use Money.parse()\", DeprecationWarning, stacklevel=2)"]
                fails.append((t, names[k], k, "DeprecationWarning: parse_amount() is deprecated; use Money.parse()", tb))
        done = 0
        for t in tests:
            n = repo[t].count("def test_")
            names = re.findall(r"def (test_\w+)\(", repo[t])
            marks = "".join("F" if any(f[0] == t and f[1] == names[k] for f in fails) else "." for k in range(n))
            done += n
            lines.append("%s %s [%3d%%]" % (t, marks, 100 * done // max(total, 1)))
        if fails:
            lines.append("")
            lines.append("=================================== FAILURES ===================================")
            for t, name, k, msg, tb in fails:
                lines.append("_" * 20 + " " + name + " " + "_" * 20)
                lines.extend(tb)
                lines.append("E       " + msg)
                lines.append("")
            lines.append("=========================== short test summary info ============================")
            for t, name, k, msg, tb in fails:
                lines.append("FAILED %s::%s - %s" % (t, name, msg[:60]))
        npass = total - len(fails)
        if args.get("coverage"):
            lines.append("")
            lines.append("---------- coverage: platform linux, python 3.11.8-final-0 -----------")
            rows = []
            for p in sorted(q for q in repo if q.startswith("src/")):
                st = repo[p].count("\n") * 2 // 3
                miss = g.int(0, st // 5)
                rows.append([p, str(st), str(miss), "%d%%" % (100 * (st - miss) // max(st, 1)),
                             ", ".join("%d-%d" % (a, a + g.int(1, 6)) for a in sorted(g.r.sample(range(10, max(st, 40)), min(miss, 6))))])
            lines.append(cols_table(["Name", "Stmts", "Miss", "Cover", "Missing"], rows, gap=2))
        lines.append("%s %d passed%s, %d warnings in %.2fs %s" % (
            "=" * 20, npass, ", %d failed" % len(fails) if fails else "", g.int(0, 3), g.float(2, 9), "=" * 20))
        return "\n".join(lines)

    def git_log(args, plant=None):
        rows = []
        t = dt.datetime(2024, 6, 20, 16, 0)
        for k in range(args.get("n", 20)):
            t = t - dt.timedelta(hours=g.int(5, 200))
            rows.append("%s %s %-18s %s" % (g.hex(8), t.strftime("%Y-%m-%d"), g.person(),
                                             "%s %s %s" % (g.pick(["fix:", "feat:", "refactor:", "chore:", "docs:", "test:"]), g.pick(NOUNS),
                                                           g.pick(["rounding in totals", "importer edge cases", "typing cleanup", "faster allocation",
                                                                   "handle empty rows", "deprecate helpers", "currency checks"]))))
        if plant:
            rows.insert(plant[0], plant[1])
        return "\n".join(rows)

    def git_diff(args):
        out = []
        for p in sorted(repo):
            if p in orig and orig[p] != repo[p]:
                out.append("diff --git a/%s b/%s\nindex %s..%s 100644" % (p, p, g.hex(7), g.hex(7)))
                out.extend(difflib.unified_diff(orig[p].split("\n"), repo[p].split("\n"), "a/" + p, "b/" + p, lineterm="", n=3))
        return "\n".join(out)

    orig = dict(repo)
    impl = {"list_files": list_files, "read_file": read_file, "grep": grep, "apply_patch": apply_patch,
            "run_tests": run_tests, "git_log": git_log, "git_diff": git_diff}
    tools = [
        tool("list_files", "List files in the repository with size and mtime.", {"path": S("Directory, '.' for root"), "recursive": B("Recurse")}, ["path"]),
        tool("read_file", "Read a file with line numbers.", {"path": S("Repo-relative path"), "start_line": I("First line"), "end_line": I("Last line")}, ["path"]),
        tool("grep", "Search for a fixed string in the repository; prints path:line:text.", {"pattern": S("Fixed string"), "path": S("Limit to this directory")}, ["pattern"]),
        tool("apply_patch", "Apply a unified diff to one file, then run ruff and mypy on it.", {"path": S("File to patch"), "patch": S("Unified diff")}, ["path", "patch"]),
        tool("run_tests", "Run pytest.", {"selector": S("pytest selector, e.g. tests/ or tests/test_tax.py"), "coverage": B("Collect coverage")}, ["selector"]),
        tool("git_log", "One-line git log.", {"path": S("Limit to path"), "n": I("Number of commits")}, []),
        tool("git_diff", "Diff of the working tree against HEAD.", {"staged": B("Only staged changes")}, []),
    ]
    c = Conv("refactor-codebase-01",
             "Codebase refactor: replace a float-based amount parser with an exact Decimal Money.parse across a Python library.",
             tools, impl)
    c.system("You are a coding agent working in the ledgerkit repository (Python 3.11). You can list, read and grep files, "
             "apply unified diffs, run the test suite and inspect git history. Make minimal, well-scoped changes and keep "
             "the public API backward compatible.")
    u = c.user("We need to get rid of `parse_amount` going through float -- it produces rounding bugs. Plan: add an exact "
               "`Money.parse` classmethod, keep `parse_amount` as a deprecated shim, and migrate the call sites. Work on "
               "branch refactor/money-parse-v2. Start by getting an overview of the repo.")
    c.fact("branch", "refactor/money-parse-v2", u,
           "What was the branch name I asked you to work on at the very start? I'm about to open the PR.",
           "You asked me to work on branch {v}.")
    lf = c.act(("list_files", {"path": ".", "recursive": True}, {"plant": backfill}))
    c.fact("backfill", backfill, lf,
           "In the first repo listing there was a one-off backfill script. What was its exact path?",
           "It was {v} (about 2.9 KB, executable), the only file under scripts/one_off/. It doesn't import ledgerkit.money -- the grep for that module only hit src/ and tests/ -- so it needs no migration.")
    mo = c.act(("read_file", {"path": "src/ledgerkit/money.py"}), text="Reading the Money module first.")
    c.fact("legacy", "_coerce_decimal_legacy", mo,
           "What was the name of the private legacy helper at the very bottom of money.py, the one kept for old pickled snapshots?",
           "It was `{v}(value)` -- it converts via str()/repr() and is only kept for pickled 0.x snapshots.")
    c.act(("grep", {"pattern": "parse_amount", "path": "src"}))
    n_sites = grep({"pattern": "parse_amount(", "path": "src"}).count("\n")
    c.say("Overview: `parse_amount` in `money.py` normalises separators and then does `Decimal(float(s))`, which is exactly "
          "where binary rounding creeps in (e.g. '0.125' -> 0.12 vs 0.13 depending on representation). It's re-exported from "
          "`ledgerkit/__init__.py` and used across invoices, tax, CSV import, reports, fx, the CLI and `parsing.py`. Plan:\n\n"
          "1. In `money.py`, split out `_normalize_amount_text` + `_parse_decimal` (pure Decimal), add `Money.parse`, and turn "
          "`parse_amount` into a shim that emits `DeprecationWarning`.\n2. Migrate call sites module by module.\n3. Run tests "
          "after each step; pyproject turns ledgerkit DeprecationWarnings into errors, so any missed call site will fail loudly.")
    c.user("Before changing anything, look at parsing.py and the history of money.py -- I want to know why float was introduced.")
    pa = c.act(("read_file", {"path": "src/ledgerkit/parsing.py"}))
    c.fact("ticket", "LK-1187", pa,
           "What Jira ticket was referenced in the TODO comment inside parsing.py?",
           "The TODO in `looks_like_amount` referenced {v} (drop the thousands-separator heuristic once every importer sends ISO amounts).")
    gl = c.act(("git_log", {"path": "src/ledgerkit/money.py", "n": 40},
                {"plant": (23, "9c41e7ab 2022-11-03 Viktor Petrov      perf: parse amounts via float (2.3x faster CSV import)")}))
    c.fact("sha", "9c41e7ab", gl,
           "What was the short sha of the commit that switched amount parsing to float?",
           "That was {v} ('perf: parse amounts via float (2.3x faster CSV import)', November 2022).")
    c.say("History: float parsing came in as a performance change in late 2022 ('parse amounts via float', claimed 2.3x faster "
          "CSV import). The Decimal path will be a bit slower, but amounts are a small part of import time now. `parsing.py` "
          "calls `parse_amount` in `amount_column` for amount/debit/credit columns, and has a TODO about the thousands-separator "
          "heuristic that we can leave alone for this change.")
    c.user("Get a baseline test run.")
    tb = ["", "    def test_rounding_half_even_eur():", '        inv = [InvoiceLine(id="l1", amount=parse_amount("0.125")), InvoiceLine(id="l2", amount=parse_amount("0.135"))]',
          '>       assert build_invoice_total(inv) == Decimal("0.26")', "E       AssertionError: assert Decimal('0.27') == Decimal('0.26')",
          "E        +  where Decimal('0.27') = build_invoice_total([InvoiceLine(id='l1', amount=Decimal('0.13')), InvoiceLine(id='l2', amount=Decimal('0.14'))])", ""]
    rt = c.act(("run_tests", {"selector": "tests/"},
                {"plant": [("tests/test_invoices.py", "test_rounding_half_even_eur", repo["tests/test_invoices.py"].count("def test_") - 1,
                            "assert Decimal('0.27') == Decimal('0.26')", tb)]}))
    c.fact("failtest", "tests/test_invoices.py::test_rounding_half_even_eur", rt,
           "Which test was failing in the baseline run, before any of our changes? Full pytest node id please.",
           "The baseline failure was {v} -- Decimal('0.27') instead of Decimal('0.26'), caused by the float round-trip.")
    c.act(("read_file", {"path": "tests/test_invoices.py"}), text="One pre-existing failure; looking at the test.")
    c.say("Baseline: one failing test, and it's precisely the bug we're fixing -- `parse_amount('0.125')` goes through float "
          "(0.125 is exact, but 0.135 is 0.13500000000000000888...), so the half-even rounding goes the wrong way and the "
          "invoice total comes out 0.27 instead of 0.26. Everything else passes.")
    c.user("Go ahead with step 1 in money.py.")
    new_money = MONEY_PY.replace('''def parse_amount(text: str) -> Decimal:
    """Parse a user- or file-supplied amount such as '1.234,56' or '1,234.56'.

    Goes through float for speed (see history); callers quantize afterwards.
    """
    s = text.strip().replace("\\u00a0", "").replace(" ", "")
    if not s:
        raise ValueError("empty amount")
    neg = s.startswith("(") and s.endswith(")")
    s = s.strip("()")
    if "," in s and "." in s:
        if s.rfind(",") > s.rfind("."):
            s = s.replace(".", "").replace(",", ".")
        else:
            s = s.replace(",", "")
    elif "," in s:
        s = s.replace(",", ".")
    value = float(s)
    if neg:
        value = -value
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)
''', MONEY_PARSE_NEW).replace('''    @classmethod
    def zero(cls, currency: str = "EUR") -> "Money":
        return cls(Decimal("0"), currency)
''', MONEY_CLASSMETHOD).replace("import re\n", "import re\nimport warnings\n")
    assert new_money.count("_parse_decimal") == 3, "money patch did not apply"
    c.act(("grep", {"pattern": "parse_amount", "path": "src"}), text="Re-checking the exact call-site list before editing.")
    c.act(("apply_patch", {"path": "src/ledgerkit/money.py", "patch": patch_for("src/ledgerkit/money.py", new_money)}))
    c.act(("run_tests", {"selector": "tests/test_invoices.py"}, {"deprecated": ["tests/test_invoices.py"]}))
    c.say("`money.py` now has `Money.parse` backed by an exact `_parse_decimal`, and `parse_amount` is a deprecated shim over "
          "the same code. Because pytest escalates ledgerkit DeprecationWarnings to errors, the invoice tests fail wherever "
          "modules still call the shim -- which gives us the to-do list.")
    c.user("Migrate invoices, tax and the CSV importer next.")
    targets = ["src/ledgerkit/invoices.py", "src/ledgerkit/tax.py", "src/ledgerkit/io/csv_import.py"]
    c.act(*[("read_file", {"path": p}) for p in targets])

    def migrate(text):
        return (text.replace("from ledgerkit.money import CENT, Money, parse_amount", "from ledgerkit.money import CENT, Money")
                .replace("parse_amount(", "Money.parse(").replace("Money.parse(row[1])", "Money.parse(row[1]).amount")
                .replace("Money.parse(r[1])", "Money.parse(r[1]).amount").replace('Money.parse(row["', 'Money.parse(row["')
                .replace("amount = Money.parse(row[", "amount = Money.parse(row[").replace("value = Money.parse(raw)", "value = Money.parse(raw).amount"))

    def migrate2(text):
        t = migrate(text)
        # row["..."] call sites need .amount too
        out = []
        for line in t.split("\n"):
            if "Money.parse(row[\"" in line and not line.rstrip().endswith(".amount"):
                line = line.rstrip() + ".amount" if line.rstrip().endswith(")") else line
            out.append(line)
        return "\n".join(out)

    for p in targets:
        c.act(("apply_patch", {"path": p, "patch": patch_for(p, migrate2(repo[p]))}))
    c.act(("run_tests", {"selector": "tests/"}, {"deprecated": ["tests/test_aging.py", "tests/test_summary.py", "tests/test_csv_import.py"]}))
    c.say("Invoices, tax and the CSV importer now call `Money.parse(...).amount`. The remaining failures are "
          "DeprecationWarnings raised through modules that still use the shim (reports, fx, the CLI and `parsing.py`, "
          "which the CSV-import tests go through).")
    c.user("Do the rest. For parsing.py, only touch the import and amount_column.")
    rest = ["src/ledgerkit/reports/aging.py", "src/ledgerkit/reports/summary.py", "src/ledgerkit/fx.py", "src/ledgerkit/cli.py"]
    c.act(*[("read_file", {"path": p}) for p in rest[:2]])
    c.act(*[("read_file", {"path": p}) for p in rest[2:]])
    for p in rest:
        c.act(("apply_patch", {"path": p, "patch": patch_for(p, migrate2(repo[p]))}))
    new_parsing = (repo["src/ledgerkit/parsing.py"].replace("from ledgerkit.money import parse_amount", "from ledgerkit.money import Money")
                   .replace("return parse_amount(row[key])", "return Money.parse(row[key]).amount")
                   .replace("return -parse_amount(debit)", "return -Money.parse(debit).amount")
                   .replace("return parse_amount(credit)", "return Money.parse(credit).amount"))
    c.act(("apply_patch", {"path": "src/ledgerkit/parsing.py", "patch": patch_for("src/ledgerkit/parsing.py", new_parsing)}))
    c.act(("grep", {"pattern": "parse_amount(", "path": "src"}), text="Checking for leftovers.")
    c.act(("run_tests", {"selector": "tests/"}, {"fresh": True}))
    c.say("All call sites migrated; the only remaining `parse_amount(` references are the shim definition itself and the "
          "re-export. The full suite passes, including the rounding test that failed at baseline.")
    c.user("Tests still use parse_amount in places -- update the invoice test to Money.parse too, then show me the full diff.")
    nt = repo["tests/test_invoices.py"].replace('amount=parse_amount("0.125")', 'amount=Money.parse("0.125").amount').replace(
        'amount=parse_amount("0.135")', 'amount=Money.parse("0.135").amount')
    nt = nt.replace("import pytest\n", "import pytest\n\nfrom ledgerkit.money import Money\n", 1)
    c.act(("apply_patch", {"path": "tests/test_invoices.py", "patch": patch_for("tests/test_invoices.py", nt)}))
    c.act(("git_diff", {}))
    c.say("The diff touches money.py (new helpers, `Money.parse`, deprecated shim), seven modules' call sites, parsing.py's "
          "import and `amount_column`, and the invoice test. No behavioural changes beyond exact parsing.")
    c.recall("ticket", prefix="A reviewer will ask about the separator heuristic, so I'm noting it in the PR now. ")
    c.user("Add a CHANGELOG entry under a new 0.15.0 heading.")
    c.act(("read_file", {"path": "CHANGELOG.md", "start_line": 1, "end_line": 40}))
    newcl = repo["CHANGELOG.md"].replace("# Changelog\n", "# Changelog\n\n## 0.15.0 - unreleased\n- Add `Money.parse` for exact amount parsing (no float round-trip)\n- Deprecate `parse_amount`; it now warns and delegates to the exact parser\n- Fix half-even rounding of amounts like 0.135\n", 1)
    c.act(("apply_patch", {"path": "CHANGELOG.md", "patch": patch_for("CHANGELOG.md", newcl)}))
    c.say("Added the 0.15.0 section with three bullets (new API, deprecation, rounding fix).")
    c.user("Run the whole suite with coverage so I can paste the numbers in the PR.")
    c.act(("run_tests", {"selector": "tests/", "coverage": True}))
    c.say("All green with coverage. money.py and parsing.py are well covered; cli.py has the lowest coverage, as before.")
    c.user("Check the listing once more, is there anything else that imports ledgerkit.money outside src/ and tests/?")
    c.act(("grep", {"pattern": "ledgerkit.money"}))
    c.say("Only src/ and tests/ import `ledgerkit.money`; the docs and scripts don't reference it, so nothing else to update.")
    c.user("Show me the money.py history again, I want to cite it in the PR description.")
    c.act(("git_log", {"path": "src/ledgerkit/money.py", "n": 15}))
    c.say("Here are the 15 most recent commits touching money.py. (This is a shorter window than the first lookup.)")
    c.recall("sha", prefix="For the PR description: ")
    c.recall("failtest")
    c.user("Should we remove the old helper at the bottom of money.py in this PR too?")
    c.say("I'd leave it: it isn't related to parsing, it's only kept for loading pickled 0.x snapshots, and removing it could "
          "break users restoring old data. Better as a separate, announced removal.")
    c.recall("legacy", prefix="Fine. ")
    c.recall("backfill", prefix="Last thing: does the one-off script need migrating? ")
    c.recall("branch")
    return c


# ============================================================================
# 4. data-analysis-01: quarterly business review over a SQL warehouse + CSV exports
# ============================================================================

REGIONS = ["EMEA-DACH", "EMEA-Nordics", "EMEA-UK&I", "EMEA-Benelux", "EMEA-France", "EMEA-Iberia", "EMEA-Italy",
           "EMEA-CEE", "NA-East", "NA-West", "APAC-ANZ", "APAC-Japan"]


def conv_data_analysis_01(seed):
    g = G(seed)
    base = {r: g.float(560_000, 1_150_000) for r in REGIONS}
    st = {}

    def list_tables(args, plant=None):
        rows = []
        for schema, names in [("raw", ["shop_orders", "shop_order_items", "shop_refunds", "crm_accounts", "crm_contacts", "psp_settlements",
                                       "web_sessions", "web_events", "marketing_spend", "support_tickets"]),
                              ("staging", ["stg_orders", "stg_order_items", "stg_refunds", "stg_customers", "stg_products",
                                           "stg_sessions", "stg_spend", "stg_tickets", "stg_fx_rates"]),
                              ("marts", ["fct_orders", "fct_order_items", "fct_refunds", "fct_sessions", "dim_customers", "dim_products",
                                         "dim_regions", "dim_dates", "agg_daily_revenue", "agg_customer_ltv", "agg_cohorts",
                                         "ml_churn_scores", "ml_churn_features"])]:
            for n in names:
                rows.append([schema, n, "{:,}".format(g.int(2_000, 240_000_000)), "%d MB" % g.int(1, 48_000),
                             "2024-10-%02d %02d:%02d" % (g.int(1, 3), g.int(0, 6), g.int(0, 59)), g.pick(["dbt", "dbt", "airbyte", "fivetran"])])
        if plant:
            rows.insert(plant[0], ["staging", plant[1], "{:,}".format(g.int(2_000_000, 9_000_000)), "%d MB" % g.int(300, 900),
                                   "2023-12-14 03:12", "dbt"])
        if args.get("schema"):
            rows = [r for r in rows if r[0] == args["schema"]]
        return text_table(["schema", "table", "rows", "size", "last_loaded", "loader"], rows)

    def describe_table(args):
        cols = {"marts.fct_orders": [("order_id", "varchar(32)", "NO"), ("order_ts", "timestamptz", "NO"), ("customer_id", "varchar(24)", "NO"),
                                     ("region_code", "varchar(16)", "NO"), ("channel", "varchar(16)", "YES"), ("currency", "char(3)", "NO"),
                                     ("gross_amount", "numeric(14,2)", "NO"), ("discount_amount", "numeric(14,2)", "NO"),
                                     ("tax_amount", "numeric(14,2)", "NO"), ("net_amount_eur", "numeric(14,2)", "NO"),
                                     ("refunded_amount_eur", "numeric(14,2)", "NO"), ("status", "varchar(16)", "NO"),
                                     ("source_system", "varchar(16)", "NO"), ("is_test", "boolean", "NO"), ("loaded_at", "timestamptz", "NO")],
                "marts.dim_customers": [("customer_id", "varchar(24)", "NO"), ("company_name", "text", "YES"), ("segment", "varchar(16)", "NO"),
                                        ("region_code", "varchar(16)", "NO"), ("country", "char(2)", "NO"), ("first_order_ts", "timestamptz", "YES"),
                                        ("account_manager", "text", "YES"), ("is_active", "boolean", "NO"), ("created_at", "timestamptz", "NO")],
                "marts.dim_products": [("product_id", "varchar(24)", "NO"), ("sku", "varchar(32)", "NO"), ("name", "text", "NO"),
                                       ("category", "varchar(32)", "NO"), ("subcategory", "varchar(32)", "YES"), ("list_price_eur", "numeric(10,2)", "NO"),
                                       ("launched_on", "date", "YES"), ("discontinued", "boolean", "NO")],
                "marts.agg_daily_revenue": [("day", "date", "NO"), ("region_code", "varchar(16)", "NO"), ("channel", "varchar(16)", "NO"),
                                            ("orders", "integer", "NO"), ("gross", "numeric(14,2)", "NO"), ("refunds", "numeric(14,2)", "NO"),
                                            ("net", "numeric(14,2)", "NO"), ("refreshed_at", "timestamptz", "NO")]}[args["table"]]
        rows = [[n, t, nul, "" if nul == "YES" else g.pick(["", "", "pk" if i == 0 else ""]),
                 "%.1f%%" % (0 if nul == "NO" else g.float(0, 12, 1)), "{:,}".format(g.int(3, 9_000_000))] for i, (n, t, nul) in enumerate(cols)]
        idx = "\nIndexes:\n    \"%s_pkey\" PRIMARY KEY, btree (%s)\n    \"%s_ts_idx\" btree (%s)\n" % (
            args["table"].split(".")[1], cols[0][0], args["table"].split(".")[1], cols[1][0])
        return "Table \"%s\"\n" % args["table"] + text_table(["column", "type", "nullable", "key", "null_frac", "n_distinct"], rows, footer=False) + idx

    def run_sql(args, kind=None, plant=None):
        kind = kind or "generic"
        if kind == "region":
            rows = []
            tot = 0.0
            for r in REGIONS:
                b = base[r]
                m = [round(b * g.r.uniform(0.3, 0.36), 2) for _ in range(3)]
                if plant and r == "EMEA-DACH":
                    m = [428301.18, 431950.22, 424652.15]
                tot += sum(m)
                rows.append([r, money(m[0]), money(m[1]), money(m[2]), money(sum(m)), "%.1f%%" % g.float(-8, 19, 1)])
            if plant:
                assert rows[0][4] == plant
            st["total"] = tot
            rows.sort(key=lambda x: -float(x[4].replace(",", "")))
            return text_table(["region", "jul", "aug", "sep", "q3_total_eur", "yoy"], rows)
        if kind == "total":
            return text_table(["q3_net_revenue_eur", "orders", "customers", "aov_eur"],
                              [[money(st["total"]), "{:,}".format(g.int(60000, 90000)), "{:,}".format(g.int(20000, 30000)), money(g.float(120, 180))]])
        if kind == "daily":
            rows = []
            d = dt.datetime(2024, 7, 1)
            while d < dt.datetime(2024, 10, 1):
                v = sum(base.values()) / 92 * g.r.uniform(0.6, 1.4) * (0.8 if d.weekday() >= 5 else 1.05)
                rows.append([day(d), d.strftime("%a"), "{:,}".format(g.int(400, 1300)), money(v), money(v * g.r.uniform(0.02, 0.08)), money(v * g.r.uniform(0.9, 0.97))])
                d += dt.timedelta(days=1)
            if plant:
                rows[plant[0]][3] = money(g.float(50_000, 70_000))
                rows[plant[0]][4] = money(g.float(100_000, 110_000))
                rows[plant[0]][5] = plant[1]
            return text_table(["day", "dow", "orders", "gross_eur", "refunds_eur", "net_eur"], rows)
        if kind == "refund_batch":
            rows = [["rf_" + g.alnum(10), "ORD-%s" % g.digits(7), "cus_" + g.alnum(10), "2024-07-19 %02d:%02d:%02d" % (g.int(2, 3), g.int(0, 59), g.int(0, 59)),
                     money(g.float(40, 2400)), g.pick(["bulk_cancel", "bulk_cancel", "bulk_cancel", "customer_return"]), "svc-bulk-refund"] for _ in range(70)]
            return text_table(["refund_id", "order_id", "customer_id", "created_at", "amount_eur", "reason", "created_by"], rows)
        if kind == "ltv":
            rows = []
            names = list(COMPANIES)
            g.shuffle(names)
            for k in range(50):
                nm = names[k % len(names)] + ("" if k < len(names) else " " + g.pick(["AG", "BV", "Ltd", "SAS", "Oy", "AB"]))
                rows.append([str(k + 1), "cus_" + g.alnum(10), nm, g.pick(["enterprise", "mid-market", "smb"]), g.pick(REGIONS),
                             money(g.float(40_000, 600_000)), str(g.int(8, 400)), "20%02d-%02d" % (g.int(18, 23), g.int(1, 12))])
            rows.sort(key=lambda x: -float(x[5].replace(",", "")))
            if plant:
                rows.insert(0, ["1", "cus_" + g.alnum(10), plant, "enterprise", "EMEA-Nordics", money(g.float(700_000, 800_000)), "512", "2019-03"])
            for k, r in enumerate(rows):
                r[0] = str(k + 1)
            return text_table(["rank", "customer_id", "company_name", "segment", "region", "ltv_eur", "orders", "first_order"], rows)
        if kind == "segments":
            rows = []
            for seg in ["enterprise", "mid-market", "smb", "self-serve"]:
                for band in ["low", "medium", "high", "critical"]:
                    rows.append([seg, band, "{:,}".format(g.int(50, 9000)), money(g.float(10_000, 2_000_000)), "%.3f" % g.float(0.02, 0.9, 3),
                                 "%.1f%%" % g.float(1, 40, 1)])
            return text_table(["segment", "churn_band", "customers", "q3_revenue_eur", "avg_score", "share_of_revenue"], rows)
        if kind == "cohorts":
            rows = []
            for k in range(24):
                y, mth = 2022 + (k + 9) // 12, (k + 9) % 12 + 1
                rr = [100.0]
                for j in range(1, 13):
                    rr.append(round(rr[-1] * g.r.uniform(0.82, 0.99), 1))
                rows.append(["%d-%02d" % (y, mth), "{:,}".format(g.int(600, 3000))] + ["%.1f" % x for x in rr[: max(1, min(13, 24 - k))]] + [""] * (13 - max(1, min(13, 24 - k))))
            return text_table(["cohort", "size"] + ["m%d" % j for j in range(13)], rows)
        if kind == "category":
            rows = []
            for cat in ["outerwear", "footwear", "base layers", "accessories", "backpacks", "tents", "sleeping", "climbing", "cycling", "kids"]:
                for mth in ["2024-07", "2024-08", "2024-09"]:
                    rows.append([cat, mth, "{:,}".format(g.int(800, 20000)), money(g.float(40_000, 1_600_000)), "%.1f%%" % g.float(20, 60, 1),
                                 "%.1f%%" % g.float(1, 18, 1)])
            return text_table(["category", "month", "units", "net_eur", "gross_margin", "return_rate"], rows)
        if kind == "dups":
            rows = [["ORD-%s" % g.digits(7), str(g.int(2, 3)), g.pick(["shop", "shop", "marketplace", "pos"]), "2024-%02d-%02d" % (g.int(7, 9), g.int(1, 28)),
                     money(g.float(20, 900))] for _ in range(38)]
            return text_table(["order_id", "copies", "source_system", "order_date", "net_amount_eur"], rows)
        if kind == "sources":
            return text_table(["source_system", "orders", "net_eur", "dup_orders", "test_orders"],
                              [[s, "{:,}".format(g.int(1000, 60000)), money(g.float(100_000, 8_000_000)), str(g.int(0, 30)), str(g.int(0, 200))]
                               for s in ["shop", "marketplace", "pos", "b2b_portal", "phone"]])
        return "(0 rows)"

    def list_files(args, plant=None):
        rows = []
        for k in range(40):
            name = "%schurn_scores_part-%04d.csv" % (args["prefix"], k)
            rows.append(["2024-10-02 04:%02d:%02d" % (g.int(10, 50), g.int(0, 59)), "{:>11}".format(g.int(800_000, 1_900_000)), name])
        if plant:
            rows[7] = ["2024-10-02 04:31:09", "{:>11}".format(0), plant]
        rows.append(["2024-10-02 04:52:40", "{:>11}".format(g.int(2000, 4000)), args["prefix"] + "_SUCCESS.json"])
        return "\n".join("%s %s %s" % tuple(r) for r in rows) + "\nTotal Objects: %d\n   Total Size: %d" % (len(rows), sum(int(r[1]) for r in rows))

    def read_csv(args):
        n = args.get("limit", 100)
        rows = []
        for k in range(n):
            rows.append(["cus_" + g.alnum(10), g.pick(["enterprise", "mid-market", "smb", "self-serve"]), g.pick(REGIONS),
                         "%.4f" % g.r.random(), g.pick(["low", "medium", "high", "critical"]), str(g.int(0, 400)), str(g.int(0, 60)),
                         "%.2f" % g.float(0, 30000), "%.3f" % g.r.random(), "%.3f" % g.r.random(), g.pick(["true", "false"]),
                         "2024-10-01T%02d:%02d:%02dZ" % (g.int(0, 23), g.int(0, 59), g.int(0, 59)), "churn-xgb-v%d.%d" % (g.int(3, 4), g.int(0, 9))])
        return csv_text(["customer_id", "segment", "region", "churn_score", "band", "days_since_last_order", "tickets_90d", "spend_90d_eur",
                         "feat_usage_trend", "feat_nps", "has_open_invoice", "scored_at", "model_version"], rows)

    impl = {"list_tables": list_tables, "describe_table": describe_table, "list_files": list_files, "read_csv": read_csv}
    sql_kind = {}

    def run_sql_dispatch(args, plant=None):
        return run_sql(args, kind=sql_kind[args["query"]], plant=plant)
    impl["run_sql"] = run_sql_dispatch
    tools = [
        tool("list_tables", "List warehouse tables with row counts, size and last load time.", {"schema": S("Optional schema filter")}, []),
        tool("describe_table", "Column definitions and statistics for a table.", {"table": S("schema.table")}, ["table"]),
        tool("run_sql", "Run a read-only SQL query on the warehouse (Postgres dialect); returns a text table.",
             {"query": S("SQL"), "timeout_s": I("Timeout seconds")}, ["query"]),
        tool("list_files", "List objects under an S3 prefix.", {"prefix": S("s3://bucket/prefix/")}, ["prefix"]),
        tool("read_csv", "Read the first rows of a CSV object.", {"path": S("s3:// URI"), "limit": I("Max rows")}, ["path"]),
    ]
    c = Conv("data-analysis-01", "Data analysis for a quarterly business review: SQL over a warehouse, CSV exports, anomalies and churn.",
             tools, impl)

    def sql(q, kind, plant=None, text=None):
        sql_kind[q] = kind
        if plant is not None:
            return c.act(("run_sql", {"query": q}, {"plant": plant}), text=text)
        return c.act(("run_sql", {"query": q}), text=text)

    c.system("You are a data analyst assistant with read-only access to the Acme Outdoor analytics warehouse and its S3 "
             "exports. Write clear SQL, explain numbers, and flag data-quality issues.")
    u = c.user("I'm preparing the Q3 2024 business review. Finance's target for Q3 net revenue was 12.9M EUR. I need: revenue "
               "by region, daily trend with anomalies, top customers, and the churn picture. Start by finding your way around.")
    c.fact("target", "12.9M EUR", u,
           "Remind me what Q3 target I gave you at the beginning?",
           "You said finance's Q3 net revenue target was {v}.")
    lt = c.act(("list_tables", {}, {"plant": (13, "stg_orders_dedup_v3")}))
    c.fact("stale", "stg_orders_dedup_v3", lt,
           "Which table in the very first table listing looked stale, not loaded since December 2023?",
           "That was staging.{v} -- last_loaded 2023-12-14 03:12, while everything else loaded in early October 2024.")
    c.act(("list_tables", {"schema": "marts"}), text="Narrowing down to the marts layer.")
    c.act(("describe_table", {"table": "marts.fct_orders"}), ("describe_table", {"table": "marts.dim_customers"}),
          text="The marts look like the right layer. Checking the two main tables.")
    c.say("The warehouse has raw / staging / marts layers loaded by dbt, Airbyte and Fivetran; almost everything was loaded in "
          "the first days of October. One staging table hasn't been loaded since last December -- probably abandoned, I'll avoid it. "
          "`marts.fct_orders` has `net_amount_eur`, `refunded_amount_eur`, `region_code`, `status`, `is_test` and `source_system`, "
          "so revenue = sum(net_amount_eur - refunded_amount_eur) over non-test orders. `dim_customers` gives segment and company.")
    c.user("Revenue by region for Q3, by month, with YoY.")
    q_region = ("SELECT region_code AS region,\n  to_char(sum(net) FILTER (WHERE m = 7), 'FM999,999,990.00') AS jul,\n"
                "  to_char(sum(net) FILTER (WHERE m = 8), 'FM999,999,990.00') AS aug,\n  to_char(sum(net) FILTER (WHERE m = 9), 'FM999,999,990.00') AS sep,\n"
                "  to_char(sum(net), 'FM999,999,990.00') AS q3_total_eur,\n  to_char(100.0 * (sum(net) / nullif(sum(net_ly), 0) - 1), 'FM990.0') || '%' AS yoy\n"
                "FROM (SELECT o.region_code, extract(month FROM o.order_ts) AS m, o.net_amount_eur - o.refunded_amount_eur AS net, ly.net AS net_ly\n"
                "      FROM marts.fct_orders o LEFT JOIN marts.agg_daily_revenue ly ON ly.day = (o.order_ts - interval '1 year')::date AND ly.region_code = o.region_code\n"
                "      WHERE o.order_ts >= '2024-07-01' AND o.order_ts < '2024-10-01' AND NOT o.is_test AND o.status <> 'cancelled') t\n"
                "GROUP BY 1 ORDER BY sum(net) DESC;")
    rg = sql(q_region, "region", plant="1,284,903.55")
    c.fact("topregion", "1,284,903.55", rg,
           "What was the exact Q3 total for the top region in the regional breakdown?",
           "EMEA-DACH led with a Q3 total of {v} EUR.")
    sql("SELECT to_char(sum(net_amount_eur - refunded_amount_eur), 'FM999,999,990.00') AS q3_net_revenue_eur, count(*) AS orders,\n"
        "       count(DISTINCT customer_id) AS customers, to_char(avg(net_amount_eur), 'FM990.00') AS aov_eur\n"
        "FROM marts.fct_orders WHERE order_ts >= '2024-07-01' AND order_ts < '2024-10-01' AND NOT is_test AND status <> 'cancelled';",
        "total", text="And the overall total to compare against the target.")
    short = 12.9e6 - st["total"]
    c.say("EMEA-DACH is the largest region, followed by a cluster of EMEA regions; the two NA regions and APAC are smaller. Total Q3 "
          "net revenue is %s EUR, about %.1fM EUR short of the target you mentioned (%.0f%% attainment). YoY growth varies from "
          "slightly negative to high teens depending on region." % (money(st["total"]), short / 1e6, 100 * st["total"] / 12.9e6))
    c.user("Daily trend next, and flag anything weird.")
    c.act(("describe_table", {"table": "marts.agg_daily_revenue"}), text="There's a pre-aggregated daily table; checking its grain first.")
    dl = sql("SELECT day, to_char(day, 'Dy') AS dow, sum(orders) AS orders, to_char(sum(gross), 'FM999,999,990.00') AS gross_eur,\n"
             "       to_char(sum(refunds), 'FM999,999,990.00') AS refunds_eur, to_char(sum(gross - refunds), 'FM999,999,990.00') AS net_eur\n"
             "FROM marts.agg_daily_revenue WHERE day BETWEEN '2024-07-01' AND '2024-09-30' GROUP BY 1 ORDER BY 1;",
             "daily", plant=(18, "-38,410.07"))
    c.fact("negday", "-38,410.07", dl,
           "What was the negative net revenue figure on that one day in July?",
           "Net revenue on that day was {v} EUR -- gross was normal-ish but refunds exceeded 100k because of the bulk cancellation batch.")
    sql("SELECT refund_id, order_id, customer_id, created_at, amount_eur, reason, created_by\nFROM marts.fct_refunds\n"
        "WHERE created_at::date = '2024-07-19' ORDER BY amount_eur DESC LIMIT 70;", "refund_batch",
        text="One day in July has negative net revenue; drilling into that day's refunds.")
    c.say("The daily series is smooth apart from weekday/weekend seasonality, except **19 July**, where net revenue is negative: "
          "refunds of ~100k EUR against ~60k gross. The refunds that day are almost all `bulk_cancel` created by `svc-bulk-refund` "
          "between 02:00 and 04:00 -- a batch job, not customer behaviour. Worth excluding or annotating in the review.")
    c.user("Top customers by lifetime value, top 50.")
    lv = sql("SELECT row_number() OVER (ORDER BY l.ltv_eur DESC) AS rank, c.customer_id, c.company_name, c.segment, c.region_code AS region,\n"
             "       to_char(l.ltv_eur, 'FM999,999,990.00') AS ltv_eur, l.orders, to_char(c.first_order_ts, 'YYYY-MM') AS first_order\n"
             "FROM marts.agg_customer_ltv l JOIN marts.dim_customers c USING (customer_id)\nORDER BY l.ltv_eur DESC LIMIT 50;",
             "ltv", plant="Halvorsen & Brandt GmbH")
    c.fact("topcust", "Halvorsen & Brandt GmbH", lv,
           "Which company was ranked number one by lifetime value?",
           "Number one by LTV was {v} (enterprise, EMEA-Nordics, customer since 2019, 512 orders).")
    c.say("The top of the LTV list is dominated by enterprise accounts; the #1 account has been a customer since 2019 with over "
          "500 orders. Below the top 10 the mix shifts to mid-market.")
    c.user("Now churn. The data science team drops scores in s3://acme-analytics/exports/2024-09/ -- take a look.")
    fl = c.act(("list_files", {"prefix": "s3://acme-analytics/exports/2024-09/"},
                {"plant": "s3://acme-analytics/exports/2024-09/churn_scores_part-0007.csv"}))
    c.fact("zerofile", "s3://acme-analytics/exports/2024-09/churn_scores_part-0007.csv", fl,
           "One of the churn export part files was zero bytes. What was its full path?",
           "The empty one was {v} (0 bytes, written at 04:31:09).")
    c.act(("read_csv", {"path": "s3://acme-analytics/exports/2024-09/churn_scores_part-0000.csv", "limit": 300}))
    c.act(("read_csv", {"path": "s3://acme-analytics/exports/2024-09/churn_scores_part-0001.csv", "limit": 300}),
          text="Reading a second part to check the schema is consistent.")
    c.act(("read_csv", {"path": "s3://acme-analytics/exports/2024-09/churn_scores_part-0002.csv", "limit": 120}),
          text="And a third, smaller sample, to look at the model_version spread.")
    c.say("The export is 40 part files plus a `_SUCCESS.json`; one part is empty, which means some customers have no score "
          "this month -- I'll raise it with data science. The parts share a schema: customer_id, segment, region, churn_score, "
          "band, a few features and the model version (mostly churn-xgb v3/v4). The same scores are in `marts.ml_churn_scores`, "
          "so I'll use the table for aggregation.")
    c.user("Segment x churn band: customers and Q3 revenue at risk.")
    sql("SELECT c.segment, s.band AS churn_band, count(*) AS customers, to_char(sum(r.net), 'FM999,999,990.00') AS q3_revenue_eur,\n"
        "       round(avg(s.churn_score), 3) AS avg_score, round(100.0 * sum(r.net) / sum(sum(r.net)) OVER (), 1) || '%' AS share_of_revenue\n"
        "FROM marts.ml_churn_scores s JOIN marts.dim_customers c USING (customer_id)\n"
        "JOIN (SELECT customer_id, sum(net_amount_eur - refunded_amount_eur) AS net FROM marts.fct_orders\n"
        "      WHERE order_ts >= '2024-07-01' AND order_ts < '2024-10-01' GROUP BY 1) r USING (customer_id)\nGROUP BY 1, 2 ORDER BY 1, 2;", "segments")
    sql("SELECT cohort, size, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12 FROM marts.agg_cohorts\n"
        "WHERE cohort BETWEEN '2022-10' AND '2024-09' ORDER BY cohort;", "cohorts", text="And the retention cohorts for context.")
    c.say("Revenue at risk concentrates in mid-market 'high' and 'critical' bands. Cohort retention decays fairly uniformly, "
          "roughly 85-95% month-over-month; the recent cohorts aren't noticeably worse than last year's.")
    c.user("Category mix by month?")
    sql("SELECT p.category, to_char(o.order_ts, 'YYYY-MM') AS month, sum(i.quantity) AS units, to_char(sum(i.net_eur), 'FM999,999,990.00') AS net_eur,\n"
        "       round(100.0 * sum(i.net_eur - i.cogs_eur) / nullif(sum(i.net_eur), 0), 1) || '%' AS gross_margin,\n"
        "       round(100.0 * sum(i.returned_qty) / nullif(sum(i.quantity), 0), 1) || '%' AS return_rate\n"
        "FROM marts.fct_order_items i JOIN marts.fct_orders o USING (order_id) JOIN marts.dim_products p USING (product_id)\n"
        "WHERE o.order_ts >= '2024-07-01' AND o.order_ts < '2024-10-01' GROUP BY 1, 2 ORDER BY 1, 2;", "category")
    c.act(("describe_table", {"table": "marts.dim_products"}), text="Checking how categories are defined.")
    c.say("Outerwear and footwear carry most of the revenue; tents and sleeping are seasonal and peak in July. Categories come "
          "straight from `dim_products.category` (no hierarchy), so the numbers are comparable across months.")
    c.user("Before I trust all this: any duplicate orders in fct_orders?")
    sql("SELECT order_id, count(*) AS copies, min(source_system) AS source_system, min(order_ts)::date AS order_date,\n"
        "       to_char(min(net_amount_eur), 'FM999,990.00') AS net_amount_eur\nFROM marts.fct_orders WHERE order_ts >= '2024-07-01' AND order_ts < '2024-10-01'\n"
        "GROUP BY order_id HAVING count(*) > 1 ORDER BY copies DESC, order_date LIMIT 100;", "dups")
    sql("SELECT source_system, count(*) AS orders, to_char(sum(net_amount_eur), 'FM999,999,990.00') AS net_eur,\n"
        "       count(*) - count(DISTINCT order_id) AS dup_orders, count(*) FILTER (WHERE is_test) AS test_orders\n"
        "FROM marts.fct_orders WHERE order_ts >= '2024-07-01' AND order_ts < '2024-10-01' GROUP BY 1 ORDER BY 2 DESC;", "sources")
    c.say("There are a few dozen duplicated order ids across the source connectors, each duplicated 2-3 times. The "
          "revenue effect is small (well under 0.5% of Q3), but I'd dedupe with `DISTINCT ON (order_id)` for the final numbers.")
    c.user("Show me fct_orders' columns once more, I want to copy the names into the appendix.")
    c.act(("describe_table", {"table": "marts.fct_orders"}))
    c.say("Same definition as before: 15 columns from `order_id` to `loaded_at`, primary key on `order_id`, plus the timestamp index.")
    c.recall("target", prefix="For the summary slide: ")
    c.user("Did we hit it?")
    c.say("No -- Q3 net revenue came in about %.1fM EUR below it (%.0f%% attainment), and that's before removing the "
          "duplicate orders, which would lower it slightly further." % (short / 1e6, 100 * st["total"] / 12.9e6))
    c.recall("topregion")
    c.recall("negday", prefix="For the anomaly footnote: ")
    c.recall("topcust")
    c.recall("zerofile", prefix="I'm emailing data science about the churn export. ")
    c.recall("stale", prefix="And for the data-quality appendix: ")
    return c


# ============================================================================
# 5. support-crm-01: B2B SaaS escalation (rate limits + invoice dispute)
# ============================================================================

SUPPORT_SNIPPETS = [
    "We are seeing HTTP 429 responses on the /v2/records endpoint during our nightly sync.",
    "Our integration retries with exponential backoff but the sync still fails after 6 attempts.",
    "Can you confirm what our current rate limit is? The dashboard says 600 requests/minute.",
    "The invoice includes an overage line we do not understand.",
    "This is impacting patient scheduling for three of our clinics.",
    "I have attached the request ids from last night's failures.",
    "Is there a way to raise the burst limit temporarily while we fix batching on our side?",
    "Please escalate this, we have been waiting for an answer since Monday.",
    "Our SSO login via Azure AD started failing for some users after the certificate rotation.",
    "The CSV export times out for date ranges longer than 30 days.",
]
AGENT_SNIPPETS = [
    "Thanks for the details. I've reproduced the 429s on our side and passed them to the platform team.",
    "Your plan includes 600 requests/minute sustained with a burst of 1,200 over 10 seconds.",
    "I've asked billing to review the overage line and will get back to you within one business day.",
    "As a workaround, please use the bulk endpoint /v2/records:batchUpsert which counts as a single request per 500 records.",
    "I'm escalating this to our Tier 2 team and marking it high priority.",
    "Could you share the exact time window (with timezone) of the failing sync?",
    "The certificate rotation requires re-uploading the IdP metadata; instructions are in KB-1042.",
]


def html_msg(g, author, paras, quote=None):
    body = "<div dir=\"ltr\">" + "".join("<p>%s</p>" % p for p in paras)
    if quote:
        body += "<blockquote class=\"gmail_quote\" style=\"margin:0 0 0 .8ex;border-left:1px #ccc solid;padding-left:1ex\">%s</blockquote>" % quote
    body += "<p>--<br>%s</p></div>" % author
    return body


def conv_support_crm_01(seed):
    g = G(seed)
    acc = "acc_" + g.alnum(10)
    t0 = dt.datetime(2024, 10, 15, 8, 0)
    tickets = {}
    ticket_order = []
    tt = t0 - dt.timedelta(days=420)
    subjects = ["429 Too Many Requests during nightly sync", "Invoice question - overage", "SSO login failing for some users",
                "CSV export timeout", "Add new clinic location", "User cannot reset password", "Webhook deliveries delayed",
                "Request for API key rotation", "Feature request: audit log export", "Slow search in records module"]
    for k in range(40):
        tt = tt + dt.timedelta(hours=g.int(100, 260))
        tid = "TCK-%d" % g.int(400000, 599999)
        tickets[tid] = [tt.strftime("%Y-%m-%d"), subjects[k % len(subjects)] if k % 3 else g.pick(subjects), "closed" if k < 34 else g.pick(["open", "pending", "closed"]),
                        g.pick(["low", "normal", "normal", "high"]), g.person(), g.pick(["email", "portal", "phone"])]
        ticket_order.append(tid)
    old_tid = ticket_order[22]
    tickets[old_tid][1:4] = ["Escalation: nightly sync outage (March)", "closed", "high"]
    tickets[old_tid][0] = "2024-03-18"
    sso_tids = [ticket_order[30], ticket_order[37]]
    tickets[sso_tids[0]][1:4] = ["SSO login failing for some users", "closed", "normal"]
    tickets[sso_tids[1]][1:4] = ["SSO login failing after cert rotation", "pending", "high"]
    cur_tid = "TCK-%d" % g.int(400000, 599999)
    tickets[cur_tid] = [t0.strftime("%Y-%m-%d"), "429 Too Many Requests during nightly sync", "open", "urgent", g.person(), "email"]
    ticket_order.append(cur_tid)
    ticket_order.reverse()

    def crm_search(args):
        res = []
        for k in range(8):
            res.append({"type": "account" if k == 0 else g.pick(["account", "contact", "contact", "opportunity"]),
                        "id": acc if k == 0 else g.pick(["acc_", "con_", "opp_"]) + g.alnum(10),
                        "name": "Meridian Health" if k == 0 else g.pick(["Meridian Health Partners", "Meridian Labs", "Meridian Dental Group",
                                                                         g.person(), "Meridian Health - Renewal FY25", "Meridian Freight"]),
                        "score": round(1 - k * 0.07 - g.r.random() * 0.05, 3), "owner": g.person(),
                        "updated_at": iso(t0 - dt.timedelta(days=g.int(1, 300)), False)})
        return jdump({"query": args["query"], "results": res})

    def crm_get_account(args, plant=None):
        contacts = []
        for k in range(g.int(7, 11)):
            nm = g.person()
            contacts.append({"id": "con_" + g.alnum(10), "name": nm, "title": g.pick(["Head of IT", "Billing Manager", "Clinic Ops Lead",
                                                                                     "Integration Engineer", "Procurement", "CFO", "Practice Manager"]),
                             "roles": [g.pick(["billing", "admin", "user", "decision_maker"])], "email": g.email(nm, "meridianhealth.co.uk"),
                             "phone": "+44 %d %s %s" % (g.int(20, 29), g.digits(4), g.digits(4)), "last_activity": iso(t0 - dt.timedelta(days=g.int(1, 90)), False)})
        if plant:
            contacts.insert(3, {"id": "con_" + g.alnum(10), "name": plant, "title": "Director of Clinical Systems",
                                "roles": ["technical_contact", "admin"], "email": "a.okafor@meridianhealth.co.uk", "phone": "+44 20 7946 0321",
                                "last_activity": iso(t0 - dt.timedelta(days=2), False)})
        body = {"account": {"id": acc, "name": "Meridian Health", "domain": "meridianhealth.co.uk", "industry": "Healthcare",
                            "employees": 2400, "country": "GB", "tier": "Enterprise", "arr_gbp": 186000, "health_score": 54,
                            "health_trend": "declining", "renewal_date": "2025-03-31", "csm": g.person(),
                            "created_at": "2020-06-02T09:14:00Z", "contacts": contacts,
                            "notes": [{"at": iso(t0 - dt.timedelta(days=g.int(5, 200)), False), "author": g.person(),
                                       "text": g.pick(["QBR went well, interested in analytics add-on.", "Complained about sync reliability.",
                                                       "Asked for SSO enforcement for all users.", "Budget freeze until April.",
                                                       "Champion left the company; new IT lead onboarding."])} for _ in range(g.int(6, 10))],
                            "integrations": [{"name": n, "status": g.pick(["healthy", "degraded", "healthy"]), "last_sync": iso(t0 - dt.timedelta(hours=g.int(1, 30)), False)}
                                             for n in ["EMIS Web", "Azure AD SSO", "Xero", "Slack", "Nightly records sync (API)"]]}}
        return jdump(body, pretty=True)

    def crm_list_tickets(args, plant=None):
        rows = [[tid] + tickets[tid] for tid in ticket_order]
        if plant:
            rows.insert(4, [plant, (t0 - dt.timedelta(days=3)).strftime("%Y-%m-%d"), "Re: 429 errors again", "merged (duplicate)", "high", g.person(), "email"])
        if args.get("status") == "open":
            rows = [r for r in rows if r[3] in ("open", "pending")]
        return text_table(["ticket", "created", "subject", "status", "priority", "requester", "channel"], rows)

    def crm_get_ticket(args, plant=None):
        tid = args["ticket_id"]
        created, subj, status, prio = tickets[tid][:4]
        t = dt.datetime.strptime(created, "%Y-%m-%d") + dt.timedelta(hours=8)
        thread = []
        prev = None
        for k in range(g.int(6, 12)):
            t = g.later(t, 600_000, 40 * 3600_000)
            cust = k % 2 == 0
            author = g.person() + (", Meridian Health" if cust else ", Streamline Support")
            paras = g.picks(SUPPORT_SNIPPETS if cust else AGENT_SNIPPETS, g.int(2, 4))
            if plant and k == 5:
                paras = ["Following our call, and as agreed with your CFO, we will apply a one-off goodwill credit of %s to your next invoice "
                         "for the March sync outage." % plant, "The credit will appear as a separate line item."]
                cust = False
                author = g.person() + ", Streamline Customer Success"
            body = html_msg(g, author, paras, quote=prev if g.chance(0.5) else None)
            prev = None if (plant and k == 5) else "".join("<p>%s</p>" % p for p in paras[:2])
            thread.append({"id": "msg_" + g.alnum(12), "at": iso(t, False), "from": author,
                           "direction": "inbound" if cust else "outbound", "body_html": body,
                           "attachments": [{"name": "failed_requests_%d.csv" % g.int(1, 9), "size": g.int(2000, 90000)}] if g.chance(0.2) else []})
        return jdump({"ticket": {"id": tid, "subject": subj, "account_id": acc, "status": status,
                                 "priority": prio, "created_at": iso(dt.datetime.strptime(created, "%Y-%m-%d") + dt.timedelta(hours=8), False), "tags": g.picks(["api", "rate-limit", "billing", "escalation", "sso", "export"], 3),
                                 "sla": {"first_response_due": iso(t0 + dt.timedelta(hours=1), False), "breached": False},
                                 "thread": thread}}, pretty=True)

    def usage(args, plant=None):
        y, m = [int(x) for x in args["month"].split("-")]
        d = dt.datetime(y, m, 1)
        days = []
        while d.month == m and d < t0:
            days.append({"date": day(d), "api_calls": g.int(300_000, 1_200_000), "throttled_429": g.int(0, 30_000),
                         "p95_ms": g.int(80, 400), "batch_calls": g.int(0, 2000), "storage_gb": round(410 + d.day * 0.7, 1)})
            d += dt.timedelta(days=1)
        if plant:
            days[plant[0]]["api_calls"] = plant[1]
            days[plant[0]]["throttled_429"] = 212_406
        return jdump({"account_id": acc, "month": args["month"], "plan_limits": {"rpm": 600, "burst_10s": 1200, "monthly_calls_included": 25_000_000},
                      "daily": days, "total_calls": sum(x["api_calls"] for x in days)}, pretty=True)

    invoices = []
    for k in range(29):
        y, m = 2022 + (k + 4) // 12, (k + 4) % 12 + 1
        last = (dt.datetime(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)).day
        num = "INV-%d-%06d" % (y, m * 470 + g.int(0, 40))
        invoices.append([num, "%d-%02d-01" % (y, m), "%d-%02d-%02d" % (y, m, last), "%.2f" % g.float(14000, 19000), "GBP",
                         g.pick(["paid", "paid", "paid", "paid", "credited"]), "%d-%02d-%02d" % (y + (m == 12), m % 12 + 1, g.int(5, 28))])
    invoices[-1][5:] = ["open", ""]

    def list_invoices(args, plant=None):
        rows = [list(r) for r in invoices]
        if plant:
            rows[-2] = [plant, "2024-08-01", "2024-08-31", "17940.00", "GBP", "overdue (47 days)", ""]
        return csv_text(["invoice_number", "period_start", "period_end", "amount", "currency", "status", "paid_on"], rows)

    def get_invoice(args):
        row = [r for r in invoices if r[0] == args["invoice_number"]][0]
        issued = dt.datetime.strptime(row[2], "%Y-%m-%d") + dt.timedelta(days=1)
        lines = [{"description": "Enterprise plan - 250 seats", "qty": 250, "unit_price": "52.00", "amount": "13000.00"},
                 {"description": "API overage - calls above 25,000,000 included", "qty": 4_310_000 if row[5] == "open" else g.int(500_000, 2_000_000),
                  "unit_price": "0.0008", "amount": "3448.00" if row[5] == "open" else "%.2f" % g.float(400, 1600)},
                 {"description": "Analytics add-on", "qty": 1, "unit_price": "950.00", "amount": "950.00"}]
        for k in range(g.int(3, 7)):
            lines.append({"description": "Usage detail: %s" % g.pick(["storage above 400 GB", "SMS notifications", "extra sandbox", "priority support"]),
                          "qty": g.int(1, 900), "unit_price": "%.2f" % g.float(0.05, 20), "amount": "%.2f" % g.float(10, 400)})
        return jdump({"invoice": {"number": row[0], "account_id": acc, "currency": "GBP", "period": [row[1], row[2]], "issued_at": day(issued),
                                  "due_at": day(issued + dt.timedelta(days=30)), "status": row[5], "lines": lines,
                                  "tax": {"rate": 0.2, "amount": "%.2f" % (float(row[3]) / 6)}, "total": row[3], "payment_terms": "net-30",
                                  "po_number": "PO-MH-%s" % g.digits(6)}}, pretty=True)

    def kb_search(args):
        res = []
        for k in range(12):
            res.append({"id": "KB-%d" % g.int(1000, 2999), "title": g.pick(["Rate limits and burst behaviour", "Using batch endpoints",
                                                                               "Handling 429 responses", "Understanding your invoice", "API overage pricing",
                                                                               "SSO certificate rotation", "Export large data sets", "Webhook retries"]),
                        "updated": "2024-%02d-%02d" % (g.int(1, 10), g.int(1, 28)), "score": round(0.95 - k * 0.05, 2),
                        "snippet": g.pick(AGENT_SNIPPETS)})
        res[0].update({"id": "KB-1187", "title": "Rate limits and burst behaviour"})
        res[1].update({"id": "KB-2043", "title": "Using batch endpoints"})
        return jdump({"query": args["query"], "results": res})

    def kb_get(args):
        paras = "".join("<p>%s</p>" % g.pick(AGENT_SNIPPETS + SUPPORT_SNIPPETS[:3]) for _ in range(10))
        table = "<table><tr><th>Plan</th><th>Sustained (req/min)</th><th>Burst (10 s)</th><th>Batch size</th></tr>" + "".join(
            "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td></tr>" % (p, r, r * 2, b) for p, r, b in
            [("Starter", 60, 100), ("Team", 240, 250), ("Business", 400, 500), ("Enterprise", 600, 500), ("Enterprise Plus", 1500, 1000)]) + "</table>"
        title = "Using batch endpoints" if args["article_id"] == "KB-2043" else "Rate limits and burst behaviour"
        return ("<article id=\"%s\"><h1>" + title + "</h1>%s<h2>Limits by plan</h2>%s<h2>Retry guidance</h2>%s<pre>Retry-After: 12\nX-RateLimit-Limit: 600\nX-RateLimit-Remaining: 0\nX-RateLimit-Reset: 1697361600</pre></article>") % (
            args["article_id"], paras, table, "".join("<p>%s</p>" % g.pick(AGENT_SNIPPETS) for _ in range(6)))

    def get_subscription(args):
        return jdump({"subscription": {"account_id": acc, "plan": "Enterprise", "seats": 250, "term": "2024-04-01/2025-03-31",
                                       "entitlements": {"api_rpm": 600, "api_burst_10s": 1200, "monthly_calls_included": 25000000,
                                                        "overage_per_1k_calls_gbp": "0.80", "sandbox_envs": 2, "sso": True, "audit_log_days": 365},
                                       "add_ons": [{"name": "Analytics", "price_gbp": "950.00"}],
                                       "discounts": [{"type": "multi-year", "pct": 8}],
                                       "change_history": [{"at": "2024-04-01", "change": "renewed 12 months"}, {"at": "2023-09-14", "change": "seats 200 -> 250"}]}}, pretty=True)

    def send_reply(args):
        return jdump({"ok": True, "ticket_id": args["ticket_id"], "message_id": "msg_" + g.alnum(12), "cc": args.get("cc", [])})

    def update_ticket(args):
        return jdump({"ok": True, "ticket_id": args["ticket_id"], "status": args.get("status"), "priority": args.get("priority")})

    impl = {"crm_search": crm_search, "crm_get_account": crm_get_account, "crm_list_tickets": crm_list_tickets,
            "crm_get_ticket": crm_get_ticket, "billing_get_usage": usage, "billing_list_invoices": list_invoices,
            "billing_get_invoice": get_invoice, "kb_search": kb_search, "kb_get_article": kb_get,
            "crm_get_subscription": get_subscription, "send_reply": send_reply, "update_ticket": update_ticket}
    tools = [
        tool("crm_search", "Search accounts, contacts and opportunities.", {"query": S("Text")}, ["query"]),
        tool("crm_get_account", "Account record with contacts, notes and integrations.", {"account_id": S("acc_...")}, ["account_id"]),
        tool("crm_list_tickets", "Support tickets for an account.", {"account_id": S("acc_..."), "status": S("open|closed|all")}, ["account_id"]),
        tool("crm_get_ticket", "A ticket with its full message thread (HTML bodies).", {"ticket_id": S("TCK-...")}, ["ticket_id"]),
        tool("billing_get_usage", "Daily API usage for a month.", {"account_id": S("acc_..."), "month": S("YYYY-MM")}, ["account_id", "month"]),
        tool("billing_list_invoices", "All invoices for an account (CSV).", {"account_id": S("acc_...")}, ["account_id"]),
        tool("billing_get_invoice", "Invoice with line items.", {"invoice_number": S("INV-...")}, ["invoice_number"]),
        tool("kb_search", "Search the knowledge base.", {"query": S("Text")}, ["query"]),
        tool("kb_get_article", "Fetch a KB article (HTML).", {"article_id": S("KB-...")}, ["article_id"]),
        tool("crm_get_subscription", "Plan, entitlements and add-ons.", {"account_id": S("acc_...")}, ["account_id"]),
        tool("send_reply", "Send a reply on a ticket.", {"ticket_id": S("Ticket"), "body": S("Markdown"), "cc": A(S("email"), "CC addresses")}, ["ticket_id", "body"]),
        tool("update_ticket", "Change status/priority/tags of a ticket.", {"ticket_id": S("Ticket"), "status": S("Status"), "priority": S("Priority"),
                                                                           "tags": A(S("tag"), "Tags")}, ["ticket_id"]),
    ]
    c = Conv("support-crm-01", "Customer support escalation: CRM lookups, ticket threads, usage and invoices for a B2B SaaS account.", tools, impl)
    c.system("You are a senior support engineer at Streamline (B2B SaaS for healthcare scheduling). You can look up CRM "
             "accounts, tickets, usage and billing, search the knowledge base and reply to customers. Be accurate and empathetic; "
             "never promise credits without evidence.")
    u = c.user("Escalation from Meridian Health: they're hitting 429s during their nightly sync and they dispute the overage "
               "line on the latest invoice. Their account manager is Rafael Quintero -- cc him (r.quintero@streamline.io) on anything "
               "you send. Please dig in.")
    c.fact("am", "Rafael Quintero", u,
           "Who did I say their account manager was, the person to cc?",
           "Their account manager is {v} (r.quintero@streamline.io); he was cc'd on the reply.")
    c.act(("crm_search", {"query": "Meridian Health"}))
    ac = c.act(("crm_get_account", {"account_id": acc}, {"plant": "Dr. Amelia Okafor"}))
    c.fact("techcontact", "Dr. Amelia Okafor", ac,
           "Who is listed as the technical contact on the Meridian account?",
           "The technical contact is {v}, Director of Clinical Systems (roles technical_contact and admin).")
    c.say("Meridian Health is an Enterprise account (250 seats, ~186k GBP ARR, renewal 31 March 2025) with a declining health "
          "score of 54. The 'Nightly records sync (API)' integration is marked degraded, which fits the 429 complaint. There are "
          "several contacts, including billing and a technical contact.")
    c.user("What tickets do they have?")
    tl = c.act(("crm_list_tickets", {"account_id": acc, "status": "all"}, {"plant": "TCK-558120"}))
    c.fact("merged", "TCK-558120", tl,
           "Which ticket in their ticket list had been merged as a duplicate?",
           "{v} ('Re: 429 errors again', created three days before the current escalation) was merged as a duplicate.")
    c.act(("crm_get_ticket", {"ticket_id": cur_tid}), text="Opening the current urgent ticket.")
    c.say("The current ticket (%s, urgent) has a back-and-forth about 429s on /v2/records during the nightly sync; they retry "
          "with exponential backoff but still fail after 6 attempts. There's a long history of similar tickets, plus one older "
          "escalation in the spring." % cur_tid)
    c.user("Open the older escalation from the spring -- I remember we promised them something.")
    ot = c.act(("crm_get_ticket", {"ticket_id": old_tid}, {"plant": "£1,250.00"}))
    c.fact("credit", "£1,250.00", ot,
           "How much goodwill credit was promised to them in that older escalation thread?",
           "Customer Success promised a one-off goodwill credit of {v} on the next invoice, for the March sync outage.")
    c.say("Yes -- in that older thread Customer Success agreed a one-off goodwill credit for the March sync outage, to appear "
          "as a separate line item on the next invoice. I'll check whether it was ever applied.")
    c.user("Look at their API usage for September and October.")
    us = [c.act(("billing_get_usage", {"account_id": acc, "month": "2024-09"}, {"plant": (17, 1482977)}))]
    c.act(("billing_get_usage", {"account_id": acc, "month": "2024-10"}), text="September is heavy; October so far:")
    c.fact("peak", "1482977", us[0],
           "What was the peak daily API call count in their September usage?",
           "The September peak was {v} calls in one day (on the 18th), which is also the day with ~212k throttled requests.")
    c.act(("crm_get_subscription", {"account_id": acc}), text="Comparing against their entitlements.")
    c.say("Their plan: 600 requests/min sustained, 1,200 burst per 10 s, 25M calls/month included, overage at 0.80 GBP per 1k. "
          "In September they went well above the included volume, with one extreme day that also had ~212k throttled calls. "
          "Daily call counts in October are similar. The 429s are real throttling at the documented limits, and the overage "
          "charge follows from volume -- but a lot of that volume comes from retries of throttled requests.")
    c.user("Now the invoices.")
    il = c.act(("billing_list_invoices", {"account_id": acc}, {"plant": "INV-2024-003817"}))
    c.fact("overdue", "INV-2024-003817", il,
           "Which of their invoices was the overdue one?",
           "The overdue invoice is {v} (August 2024 period, 17,940.00 GBP, 47 days overdue).")
    latest = invoices[-1][0]
    c.act(("billing_get_invoice", {"invoice_number": latest}), text="Opening the most recent invoice to see the overage line.")
    prev_inv = invoices[-3][0]
    c.act(("billing_get_invoice", {"invoice_number": prev_inv}), text="And July's, for comparison (August's is the overdue one).")
    c.say("The latest invoice (%s) has an API overage line of 3,448.00 GBP for 4.31M calls above the included 25M. There is no "
          "goodwill credit line on it, so the credit promised in spring was never applied. Separately, one older invoice is still "
          "overdue." % latest)
    c.user("What does the KB say about burst limits? I want to point them at the batch endpoint.")
    c.act(("kb_search", {"query": "rate limit burst 429 batch endpoint"}))
    c.act(("kb_get_article", {"article_id": "KB-1187"}))
    c.act(("kb_get_article", {"article_id": "KB-2043"}), text="Also the batch-endpoint article.")
    c.say("KB 'Rate limits and burst behaviour' documents Enterprise at 600 req/min with a 1,200-per-10s burst, recommends honouring "
          "`Retry-After`, and points to `/v2/records:batchUpsert`, which counts as one request per 500 records. Switching the "
          "nightly sync to batch would cut their call volume by roughly two orders of magnitude.")
    c.user("Draft and send a reply on the current ticket: explain limits, recommend batchUpsert, say billing will review the "
           "overage given retry-inflated volume, and that we'll apply the outstanding goodwill credit. Also bump priority to high.")
    c.act(("send_reply", {"ticket_id": cur_tid, "cc": ["r.quintero@streamline.io"],
                          "body": "Hi team,\n\nThanks for your patience. The 429 responses are our rate limiter: your Enterprise plan allows 600 requests/minute with bursts of 1,200 per 10 seconds. Your nightly sync currently sends one request per record and retries throttled calls, which multiplies volume.\n\nRecommendation: switch the sync to `/v2/records:batchUpsert` (up to 500 records per request) and honour the `Retry-After` header.\n\nOn the invoice: a significant part of the overage volume comes from retried, throttled calls. I've asked billing to review the overage line, and we'll also apply the goodwill credit agreed in the spring, which was not yet reflected.\n\nBest regards,\nStreamline Support"}))
    c.act(("update_ticket", {"ticket_id": cur_tid, "priority": "high", "status": "pending", "tags": ["rate-limit", "billing-review", "escalation"]}))
    c.act(("crm_list_tickets", {"account_id": acc, "status": "open"}), text="Confirming the open ticket list reflects the change.")
    c.say("Reply sent with the account manager in cc, and the ticket is now pending / high priority with billing-review tags.")
    c.user("Let me see the current ticket again to make sure the thread looks right.")
    c.act(("crm_get_ticket", {"ticket_id": cur_tid}))
    c.say("That's the same thread as before (our reply is still propagating to the ticket view and will appear shortly).")
    c.user("Are there other open tickets from them about SSO? Check the two most recent SSO ones.")
    c.act(*[("crm_get_ticket", {"ticket_id": t}) for t in reversed(sso_tids)])
    c.say("Both SSO tickets are about the Azure AD certificate rotation: the older one is closed, the recent one is pending on "
          "the customer re-uploading IdP metadata (KB-1042). Not related to the rate-limit issue.")
    c.user("Check October usage once more -- did the throttling continue after the 10th?")
    c.act(("billing_get_usage", {"account_id": acc, "month": "2024-10"}))
    c.say("Same data as before: throttled requests continue every day in October, typically 0-30k per day. They'll persist "
          "until the sync moves to batch calls.")
    c.recall("techcontact", prefix="I'm writing the internal escalation summary now. Who should engineering talk to on their side? ")
    c.recall("credit")
    c.recall("peak")
    c.recall("overdue", prefix="Finance wants to chase the old balance. ")
    c.recall("merged")
    c.recall("am")
    return c


# ============================================================================
# 6. k8s-infra-01: payments namespace unhealthy after a node-pool upgrade
# ============================================================================

def conv_k8s_01(seed):
    g = G(seed)
    t0 = dt.datetime(2024, 9, 3, 7, 20)
    nodes = ["gke-prod-pool-%s-%s-%s" % (p, g.hex(8), g.alnum(4)) for p in "aaaabbbbcccc"]
    bad_node = "gke-prod-pool-b-7f3c2e1a-x9kq"
    deps = {"payments-api": 6, "payments-worker": 8, "payments-scheduler": 2, "fraud-scorer": 4, "ledger-sync": 3,
            "webhook-dispatcher": 4, "redis-cache": 3, "pgbouncer": 3, "payments-admin": 2}
    pods = {}
    for d, n in deps.items():
        h = g.alnum(10, "bcdfghjklmnpqrstvwxz2456789")[:9] if d != "redis-cache" else None
        for k in range(n):
            name = "%s-%d" % (d, k) if d == "redis-cache" else "%s-%s-%s" % (d, h, g.alnum(5, "bcdfghjklmnpqrstvwxz2456789"))
            pods[name] = {"dep": d, "node": g.pick(nodes), "ip": g.ip("10.8."), "restarts": 0, "status": "Running", "ready": "1/1"}
    workers = [p for p in pods if pods[p]["dep"] == "payments-worker"]
    for p in workers:
        pods[p].update({"status": g.pick(["CrashLoopBackOff", "CrashLoopBackOff", "Error"]), "ready": "0/1", "restarts": g.int(9, 31)})
    pods["redis-cache-2"].update({"status": "Pending", "ready": "0/1", "node": "<none>", "ip": "<none>"})

    def kget(args, plant=None):
        r = args["resource"]
        if r == "nodes":
            rows = []
            for n in nodes:
                rows.append([n, "Ready", "<none>", "%dd" % g.int(1, 2) if "-b-" in n else "%dh" % g.int(8, 11), "v1.29.7-gke.1008000",
                             g.ip("10.128."), "<none>", "Container-Optimized OS from Google", "6.1.90+", "containerd://1.7.19"])
            if plant:
                rows.insert(5, [plant, "NotReady,SchedulingDisabled", "<none>", "9h", "v1.29.7-gke.1008000", g.ip("10.128."), "<none>",
                                "Container-Optimized OS from Google", "6.1.90+", "containerd://1.7.19"])
            return cols_table(["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"], rows)
        if r == "pods":
            sel = args.get("selector", "")
            rows = []
            for p, v in pods.items():
                if sel and ("app=" + v["dep"]) != sel:
                    continue
                rows.append([p, v["ready"], v["status"], str(v["restarts"]) + (" (%dm ago)" % g.int(1, 9) if v["restarts"] else ""),
                             "%dh" % g.int(1, 9), v["ip"], v["node"], "<none>", "<none>"])
            return cols_table(["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"], rows)
        if r == "pvc":
            rows = [["data-pg-%d" % k, "Bound", "pvc-" + g.uuid(), "100Gi", "RWO", "premium-rwo", "212d"] for k in range(3)]
            rows += [["data-redis-cache-%d" % k, "Bound", "pvc-" + g.uuid(), "20Gi", "RWO", "premium-rwo", "212d"] for k in range(2)]
            rows += [["uploads-%s" % g.alnum(5), "Bound", "pvc-" + g.uuid(), "50Gi", "RWX", "filestore-standard", "%dd" % g.int(20, 200)] for k in range(4)]
            if plant:
                rows.append([plant, "Pending", "", "", "", "premium-rwo", "9h"])
            return cols_table(["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"], rows)
        if r == "configmaps":
            rows = [[n, str(g.int(1, 30)), "%dd" % g.int(10, 400)] for n in
                    ["kube-root-ca.crt", "payments-config", "payments-feature-flags-v4", "payments-feature-flags-v5", "payments-feature-flags-v6",
                     "fraud-scorer-model", "ledger-sync-config", "pgbouncer-ini", "redis-cache-scripts", "webhook-targets",
                     "istio-ca-root-cert", "otel-collector-config", "payments-admin-ui", "grafana-dashboards-payments"]]
            if plant:
                rows.insert(6, [plant, "42", "3h"])
            return cols_table(["NAME", "DATA", "AGE"], rows)
        if r == "configmap/payments-config":
            return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: payments-config\n  namespace: payments\n  resourceVersion: \"%s\"\ndata:\n" % g.digits(9) + "".join(
                "  %s: \"%s\"\n" % (k, v) for k, v in [("DB_HOST", "pgbouncer.payments.svc"), ("DB_PORT", "6432"), ("DB_NAME", "payments"),
                                                      ("DB_POOL_MAX", "40"), ("REDIS_URL", "redis://redis-cache:6379/0"), ("QUEUE_PREFETCH", "32"),
                                                      ("WORKER_CONCURRENCY", "16"), ("FEATURE_FLAGS_CONFIGMAP", "payments-feature-flags-v6"),
                                                      ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.observability:4317"), ("LOG_LEVEL", "info")]) + "".join(
                "  RETRY_POLICY_%s: \"%d,%d,%d\"\n" % (n.upper(), g.int(1, 5), g.int(5, 30), g.int(30, 300)) for n in ["card", "sepa", "ideal", "bank", "wallet", "payout"])
        if r == "configmap/payments-feature-flags-v6":
            flags = ["capture_v2_routing", "sepa_instant", "payout_batching", "fraud_shadow_mode", "webhook_signing_v2", "3ds2_frictionless",
                     "ledger_async_post", "refund_auto_approve", "klarna_widget", "apple_pay_domains", "idempotency_strict", "retry_jitter"]
            body = "".join("    %s: %s\n" % (f, g.pick(["true", "false"])) for f in flags) + "".join(
                "    exp_%s_%02d: %s\n" % (g.pick(["checkout", "payout", "risk", "ui"]), k, g.pick(["true", "false"])) for k in range(24))
            return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: payments-feature-flags-v6\n  namespace: payments\ndata:\n  flags.yaml: |\n" + body
        if r == "deployments":
            return cols_table(["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES"],
                              [[d, "%d/%d" % (0 if d == "payments-worker" else n, n), str(n), str(0 if d == "payments-worker" else n), "%dd" % g.int(30, 400), d.split("-")[-1],
                                "europe-docker.pkg.dev/acme-prod/payments/%s:%s" % (d, "2024.09.02-1" if d in ("payments-worker", "payments-api") else "2024.08.%02d-1" % g.int(1, 28))]
                               for d, n in deps.items() if d != "redis-cache"])
        if r == "storageclass":
            return cols_table(["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"],
                              [["premium-rwo", "pd.csi.storage.gke.io", "Delete", "WaitForFirstConsumer", "true", "600d"],
                               ["standard", "kubernetes.io/gce-pd", "Delete", "Immediate", "true", "600d"],
                               ["standard-rwo (default)", "pd.csi.storage.gke.io", "Delete", "WaitForFirstConsumer", "true", "600d"],
                               ["filestore-standard", "filestore.csi.storage.gke.io", "Delete", "WaitForFirstConsumer", "true", "400d"]])
        return "error: the server doesn't have a resource type \"%s\"" % r

    def describe(args, plant=None):
        kind, name = args["kind"], args["name"]
        if kind == "pod":
            v = pods[name]
            digest = plant or ("sha256:" + g.hex(64))
            env = "\n".join("      %s:  <set to the key '%s' of config map 'payments-config'>  Optional: false" % (k, k) for k in
                            ["DB_HOST", "DB_PORT", "DB_NAME", "DB_POOL_MAX", "REDIS_URL", "QUEUE_PREFETCH", "WORKER_CONCURRENCY"])
            ev = "\n".join("  %-7s  %-9s  %-6s  %-17s  %s" % (t, r, a, f, m) for t, r, a, f, m in [
                ("Normal", "Scheduled", "9h", "default-scheduler", "Successfully assigned payments/%s to %s" % (name, v["node"])),
                ("Normal", "Pulled", "9h", "kubelet", "Container image \"europe-docker.pkg.dev/acme-prod/payments/payments-worker:2024.09.02-1\" already present on machine"),
                ("Normal", "Created", "%dm" % g.int(2, 9), "kubelet", "Created container worker"),
                ("Normal", "Started", "%dm" % g.int(2, 9), "kubelet", "Started container worker"),
                ("Warning", "BackOff", "%dm" % g.int(1, 5), "kubelet", "Back-off restarting failed container worker in pod %s_payments(%s)" % (name, g.uuid()))])
            return """Name:             %s
Namespace:        payments
Priority:         1000
Priority Class Name:  payments-high
Service Account:  payments-worker
Node:             %s/%s
Start Time:       Tue, 03 Sep 2024 %02d:%02d:%02d +0000
Labels:           app=payments-worker
                  pod-template-hash=%s
                  version=2024.09.02-1
Annotations:      checksum/config: %s
                  cluster-autoscaler.kubernetes.io/safe-to-evict: true
Status:           Running
IP:               %s
Controlled By:    ReplicaSet/%s
Containers:
  worker:
    Container ID:   containerd://%s
    Image:          europe-docker.pkg.dev/acme-prod/payments/payments-worker:2024.09.02-1
    Image ID:       europe-docker.pkg.dev/acme-prod/payments/payments-worker@%s
    Port:           8081/TCP
    Host Port:      0/TCP
    Command:
      /app/bin/worker
      --queues=payments.capture,payments.refund,payments.payout
    State:          Waiting
      Reason:       CrashLoopBackOff
    Last State:     Terminated
      Reason:       Error
      Exit Code:    1
      Started:      Tue, 03 Sep 2024 07:%02d:%02d +0000
      Finished:     Tue, 03 Sep 2024 07:%02d:%02d +0000
    Ready:          False
    Restart Count:  %d
    Limits:
      cpu:     2
      memory:  1536Mi
    Requests:
      cpu:      500m
      memory:   768Mi
    Liveness:   http-get http://:8081/healthz delay=20s timeout=2s period=10s #success=1 #failure=3
    Readiness:  http-get http://:8081/ready delay=5s timeout=2s period=5s #success=1 #failure=3
    Environment:
%s
      DB_PASSWORD:  <set to the key 'password' in secret 'payments-db-credentials'>  Optional: false
    Mounts:
      /etc/payments/flags from feature-flags (ro)
      /var/run/secrets/kubernetes.io/serviceaccount from kube-api-access-%s (ro)
Conditions:
  Type              Status
  Initialized       True
  Ready             False
  ContainersReady   False
  PodScheduled      True
Volumes:
  feature-flags:
    Type:      ConfigMap (a volume populated by a ConfigMap)
    Name:      payments-flags-current
    Optional:  false
QoS Class:       Burstable
Node-Selectors:  cloud.google.com/gke-nodepool=prod-pool
Tolerations:     node.kubernetes.io/not-ready:NoExecute op=Exists for 300s
                 node.kubernetes.io/unreachable:NoExecute op=Exists for 300s
Events:
  Type     Reason     Age    From               Message
  ----     ------     ----   ----               -------
%s""" % (name, v["node"], g.ip("10.128."), g.int(0, 6), g.int(0, 59), g.int(0, 59), name.split("-")[-2], g.hex(64), v["ip"],
                name.rsplit("-", 1)[0], g.hex(64), digest, g.int(10, 19), g.int(0, 59), g.int(10, 19), g.int(0, 59), v["restarts"], env, g.alnum(5), ev)
        if kind == "statefulset":
            return """Name:               redis-cache
Namespace:          payments
CreationTimestamp:  Mon, 05 Feb 2024 10:12:44 +0000
Selector:           app=redis-cache
Labels:             app=redis-cache
Replicas:           3 desired | 3 total
Update Strategy:    RollingUpdate
  Partition:        0
Pods Status:        2 Running / 1 Waiting / 0 Succeeded / 0 Failed
Pod Template:
  Labels:  app=redis-cache
  Containers:
   redis:
    Image:      redis:7.2.5-alpine
    Port:       6379/TCP
    Command:    redis-server /etc/redis/redis.conf --appendonly yes
    Limits:     cpu: 1, memory: 2Gi
    Requests:   cpu: 250m, memory: 1Gi
    Mounts:
      /data from data (rw)
      /etc/redis from config (rw)
Volume Claims:
  Name:          data
  StorageClass:  premium-rwo
  Labels:        <none>
  Annotations:   <none>
  Capacity:      20Gi
  Access Modes:  [ReadWriteOnce]
Events:
  Type     Reason            Age                  From                    Message
  ----     ------            ----                 ----                    -------
  Normal   SuccessfulDelete  9h                   statefulset-controller  delete Pod redis-cache-2 in StatefulSet redis-cache successful
  Normal   SuccessfulCreate  9h                   statefulset-controller  create Pod redis-cache-2 in StatefulSet redis-cache successful
  Warning  FailedScheduling  %dm (x%d over 9h)    default-scheduler       0/%d nodes are available: 1 node(s) had volume node affinity conflict, %d node(s) didn't match pod anti-affinity rules. preemption: not eligible due to a volume node affinity conflict.
""" % (g.int(1, 9), g.int(80, 130), len(nodes) + 1, len(nodes))
        return "Error from server (NotFound): %s \"%s\" not found" % (kind, name)

    def logs(args):
        name = args["pod"]
        t = t0 - dt.timedelta(minutes=3)
        lines = []
        for k in range(args.get("tail", 100)):
            t = g.later(t, 5, 400)
            lvl = g.wpick([(70, "info"), (20, "warn"), (10, "error")]) if pods[name]["status"] != "Running" else g.wpick([(85, "info"), (15, "warn")])
            msg = g.pick({"info": ["connecting to postgres host=pgbouncer.payments.svc port=6432 db=payments",
                                   "loaded %d feature flags from /etc/payments/flags" % g.int(30, 60), "queue consumer starting queue=payments.capture prefetch=32",
                                   "otel exporter initialised endpoint=http://otel-collector.observability:4317", "migrations up to date version=%d" % g.int(200, 240)],
                          "warn": ["flag 'capture_v2_routing' has unknown type 'percentage_v2', treating as disabled" if pods[name]["status"] != "Running" else "queue depth high: %d" % g.int(100, 900),
                                   "redis connection slow: %dms" % g.int(200, 3000), "retrying postgres connection attempt=%d" % g.int(1, 5)],
                          "error": ["failed to parse feature flags: yaml: unmarshal errors: line %d: cannot unmarshal !!map into bool" % g.int(10, 80),
                                    "redis: dial tcp 10.8.%d.%d:6379: i/o timeout" % (g.int(0, 255), g.int(1, 254))]}[lvl])
            lines.append(jdump({"ts": iso(t), "level": lvl, "logger": g.pick(["worker.main", "worker.flags", "worker.queue", "worker.db"]),
                                "pod": name, "msg": msg}))
        if pods[name]["status"] == "Running":
            return "\n".join(lines)
        lines.append(jdump({"ts": iso(g.later(t, 5, 50)), "level": "fatal", "logger": "worker.main", "pod": name,
                            "msg": "startup failed: feature flags invalid: 1 error(s) decoding: * 'capture_v2_routing' expected type 'bool', got unconvertible type 'map[string]interface {}'"}))
        return "\n".join(lines)

    def events(args):
        rows = []
        t = t0 - dt.timedelta(hours=9)
        good = [n for n in nodes]
        for k in range(g.int(70, 95)):
            t = g.later(t, 20_000, 900_000)
            p = g.pick(list(pods))
            typ, reason, msg = g.pick([
                ("Warning", "BackOff", "Back-off restarting failed container worker in pod %s" % p),
                ("Normal", "Pulled", "Container image already present on machine"),
                ("Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503"),
                ("Normal", "Scheduled", "Successfully assigned payments/%s to %s" % (p, g.pick(good))),
                ("Warning", "FailedScheduling", "0/13 nodes are available: 1 node(s) had volume node affinity conflict"),
                ("Normal", "Killing", "Stopping container %s" % pods[p]["dep"]),
                ("Normal", "SuccessfulCreate", "Created pod: %s" % p)])
            rows.append(["%dm" % ((t0 - t).seconds // 60), typ, reason, "pod/" + p, msg])
        return cols_table(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows)

    def helm_history(args, plant=None):
        rows = []
        for rev in range(31, 43):
            rows.append([str(rev), "%s %s %02d %02d:%02d:%02d 2024" % (g.pick(["Mon", "Tue", "Wed", "Thu", "Fri"]), g.pick(["Jul", "Aug"]), g.int(1, 28),
                                                                        g.int(0, 23), g.int(0, 59), g.int(0, 59)),
                         "superseded", "payments-3.7.%d" % (rev - 31), "2024.%02d.%02d-%d" % (g.int(7, 8), g.int(1, 28), g.int(1, 3)),
                         g.pick(["Upgrade complete", "Upgrade complete", "Rollback to %d" % (rev - 1)])])
        rows[-1][2] = "deployed"
        if plant:
            rows.append(["43", "Tue Sep 03 05:41:12 2024", "failed", plant, "2024.09.02-1",
                         "Upgrade \"payments\" failed: context deadline exceeded"])
        return cols_table(["REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION", "DESCRIPTION"], rows, gap=2)

    def top(args):
        if args["kind"] == "nodes":
            rows = [[n, "%dm" % g.int(300, 3500), "%d%%" % g.int(8, 90), "%dMi" % g.int(3000, 14000), "%d%%" % g.int(20, 92)] for n in nodes]
            return cols_table(["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"], rows)
        rows = [[p, "%dm" % g.int(1, 900), "%dMi" % g.int(20, 1400)] for p, v in pods.items() if v["status"] == "Running"]
        return cols_table(["NAME", "CPU(cores)", "MEMORY(bytes)"], rows)

    def rollout(args):
        if args["action"] == "undo":
            for p in workers:
                pods[p].update({"status": "Running", "ready": "1/1", "restarts": 0})
            return "deployment.apps/%s rolled back\nWaiting for deployment \"%s\" rollout to finish: 4 of 8 updated replicas are available...\n" \
                   "Waiting for deployment \"%s\" rollout to finish: 7 of 8 updated replicas are available...\ndeployment \"%s\" successfully rolled out" % ((args["deployment"],) * 4)
        if args["action"] == "status":
            return "deployment \"%s\" successfully rolled out" % args["deployment"]
        return "deployment.apps/%s restarted" % args["deployment"]

    impl = {"kubectl_get": kget, "kubectl_describe": describe, "kubectl_logs": logs, "kubectl_get_events": events,
            "helm_history": helm_history, "kubectl_top": top, "kubectl_rollout": rollout}
    tools = [
        tool("kubectl_get", "kubectl get <resource> (wide output).", {"resource": S("Resource type or type/name, e.g. pods, nodes, configmap/x"),
                                                                     "namespace": S("Namespace"), "selector": S("Label selector")}, ["resource"]),
        tool("kubectl_describe", "kubectl describe.", {"kind": S("pod|statefulset|node|deployment"), "name": S("Object name"), "namespace": S("Namespace")}, ["kind", "name"]),
        tool("kubectl_logs", "Container logs.", {"pod": S("Pod"), "namespace": S("Namespace"), "container": S("Container"),
                                                 "tail": I("Lines"), "previous": B("Previous container instance")}, ["pod"]),
        tool("kubectl_get_events", "Recent events in a namespace, newest last.", {"namespace": S("Namespace")}, ["namespace"]),
        tool("helm_history", "helm history for a release.", {"release": S("Release"), "namespace": S("Namespace")}, ["release"]),
        tool("kubectl_top", "Resource usage.", {"kind": S("nodes|pods"), "namespace": S("Namespace")}, ["kind"]),
        tool("kubectl_rollout", "kubectl rollout <action> deployment.", {"action": S("status|undo|restart"), "deployment": S("Name"),
                                                                          "namespace": S("Namespace")}, ["action", "deployment"]),
    ]
    c = Conv("k8s-infra-01", "Kubernetes infrastructure debugging after a node-pool upgrade: nodes, pods, events, helm history, PVCs, rollback.",
             tools, impl)
    c.system("You are a platform engineering assistant with kubectl and helm access to the prod-eu GKE cluster. Diagnose "
             "before changing anything, and explain the evidence for each conclusion.")
    u = c.user("Last night's node-pool upgrade (change ticket CHG-7731) finished around 05:30 UTC and since then the payments "
               "namespace is unhealthy: workers crashlooping and something about redis. Can you take a look?")
    c.fact("chg", "CHG-7731", u,
           "What was the change ticket number for the node-pool upgrade? I'll link the postmortem to it.",
           "The node-pool upgrade was change ticket {v}.")
    nd = c.act(("kubectl_get", {"resource": "nodes"}, {"plant": bad_node}))
    c.fact("node", bad_node, nd,
           "Which node was NotReady,SchedulingDisabled in the first node listing?",
           "It was {v} (NotReady,SchedulingDisabled, age 9h -- one of the upgraded pool-b nodes).")
    c.act(("kubectl_get", {"resource": "pods", "namespace": "payments"}))
    c.say("One node in the upgraded pool is `NotReady,SchedulingDisabled`; the rest are Ready on v1.29.7. In `payments`, all 8 "
          "`payments-worker` pods are in CrashLoopBackOff/Error with 9-31 restarts, and `redis-cache-2` is Pending with no node. "
          "Everything else is Running.")
    c.user("Why are the workers crashlooping?")
    w = workers[0]
    ds = c.act(("kubectl_describe", {"kind": "pod", "name": w, "namespace": "payments"},
                {"plant": "sha256:4be1f0c79a2d7e31b86c05f4d3a9e2b17c0f98e4d6c5b3a1f7e29d0c84b6a5f3"}))
    c.fact("digest", "sha256:4be1f0c79a2d7e31b86c05f4d3a9e2b17c0f98e4d6c5b3a1f7e29d0c84b6a5f3", ds,
           "What was the exact image digest (Image ID) of the payments-worker pod you described?",
           "The Image ID was europe-docker.pkg.dev/acme-prod/payments/payments-worker@{v}.")
    c.act(("kubectl_logs", {"pod": w, "namespace": "payments", "previous": True, "tail": 120}))
    c.act(("kubectl_logs", {"pod": workers[3], "namespace": "payments", "previous": True, "tail": 80}),
          text="Checking a second worker to make sure it's the same failure.")
    c.say("The container exits with code 1 at startup. The previous-instance log ends with a fatal: `feature flags invalid: "
          "'capture_v2_routing' expected type 'bool', got ... map`. Earlier lines warn that the flag has an unknown type "
          "`percentage_v2`. So the workers die on a feature-flag schema change, not on the node upgrade itself. The flags are "
          "mounted from a ConfigMap at /etc/payments/flags.")
    c.user("Check the namespace events and the PVCs, for the redis side.")
    c.act(("kubectl_get_events", {"namespace": "payments"}))
    pv = c.act(("kubectl_get", {"resource": "pvc", "namespace": "payments"}, {"plant": "data-redis-cache-2"}))
    c.fact("pvc", "data-redis-cache-2", pv,
           "Which PVC was stuck in Pending?",
           "The Pending claim was {v} (storage class premium-rwo, no volume bound).")
    c.say("Events show repeated BackOff for the workers and `FailedScheduling ... volume node affinity conflict` for redis. "
          "One PVC is Pending with no volume. With `WaitForFirstConsumer` zonal disks, the replacement redis pod can only "
          "schedule in the zone of its disk, and the node it used there is the NotReady one.")
    c.user("What changed in the payments release? Check helm history and the configmaps.")
    hh = c.act(("helm_history", {"release": "payments", "namespace": "payments"}, {"plant": "payments-3.8.1"}))
    c.fact("chart", "payments-3.8.1", hh,
           "Which chart version did the failed helm revision use?",
           "The failed revision 43 used chart {v} (app version 2024.09.02-1), failing with 'context deadline exceeded'.")
    cm = c.act(("kubectl_get", {"resource": "configmaps", "namespace": "payments"}, {"plant": "payments-feature-flags-v7"}))
    c.fact("cm", "payments-feature-flags-v7", cm,
           "Which ConfigMap in the listing was the newest one, created about 3 hours ago?",
           "The newest ConfigMap was {v} (42 keys, age 3h).")
    c.act(("kubectl_get", {"resource": "configmap/payments-config", "namespace": "payments"}), text="And the main config, to see which flags map it references.")
    c.act(("kubectl_get", {"resource": "configmap/payments-feature-flags-v6", "namespace": "payments"}), text="Comparing with the flags the config points at.")
    c.act(("kubectl_get", {"resource": "deployments", "namespace": "payments"}), text="Which deployments picked up the new app version?")
    c.say("Helm history: revision 42 (3.7.x) is the last deployed; revision 43, early this morning with app version "
          "2024.09.02-1, *failed* with a timeout -- but the worker Deployment was already updated, so the pods run the new image. "
          "A new feature-flag ConfigMap appeared 3 hours ago, while `payments-config` still points `FEATURE_FLAGS_CONFIGMAP` at v6. "
          "The new flag format (`percentage_v2`) is what the workers can't parse.")
    c.user("Resource usage on nodes and pods, quickly?")
    c.act(("kubectl_top", {"kind": "nodes"}), ("kubectl_top", {"kind": "pods", "namespace": "payments"}))
    c.say("No resource pressure: nodes are at 8-90% CPU but memory headroom is fine, and the running payments pods are well "
          "within limits. Capacity isn't the issue.")
    c.user("Describe the redis statefulset and show the storage classes.")
    c.act(("kubectl_describe", {"kind": "statefulset", "name": "redis-cache", "namespace": "payments"}),
          ("kubectl_get", {"resource": "storageclass"}))
    c.say("Confirmed: `redis-cache-2` can't schedule because of a volume node affinity conflict -- its zonal disk lives in the "
          "zone whose only eligible node is NotReady, and anti-affinity keeps it off the nodes hosting the other replicas. "
          "Fix: uncordon/repair that node or add a node in that zone; the worker issue is separate.")
    c.user("Roll back payments-worker to the previous ReplicaSet.")
    c.act(("kubectl_rollout", {"action": "undo", "deployment": "payments-worker", "namespace": "payments"}))
    c.act(("kubectl_rollout", {"action": "status", "deployment": "payments-worker", "namespace": "payments"}))
    c.act(("kubectl_get", {"resource": "pods", "namespace": "payments", "selector": "app=payments-worker"}), text="Verifying the workers.")
    c.act(("kubectl_logs", {"pod": workers[0], "namespace": "payments", "tail": 60}), text="And the fresh logs of one worker.")
    c.say("Rolled back: all 8 worker pods are Running 1/1 with 0 restarts on the previous image, which ignores the new flag type.")
    c.user("Check node usage again -- did the rollback move load around?")
    c.act(("kubectl_top", {"kind": "nodes"}))
    c.say("The node usage output is identical to the previous snapshot (metrics-server scrapes every 60s, so it hasn't refreshed yet). "
          "No hotspot either way.")
    c.user("And the events now?")
    c.act(("kubectl_get_events", {"namespace": "payments"}, {"fresh": True}))
    c.say("Worker BackOff events have stopped appearing at the tail; the redis FailedScheduling warnings continue, as expected "
          "until the node is repaired.")
    c.recall("node", prefix="I'll ask the GKE on-call to repair the node. ")
    c.recall("chart", prefix="Drafting the postmortem now. ")
    c.recall("cm", prefix="And the flags: ")
    c.user("Should we delete that new ConfigMap?")
    c.say("Not yet -- keep it for the fix. The right change is to make the worker's flag parser accept the new type (or "
          "publish the new format only after a compatible worker ships), then point `FEATURE_FLAGS_CONFIGMAP` at it.")
    c.recall("pvc")
    c.recall("digest", prefix="Security wants to scan the bad image. ")
    c.recall("chg")
    return c


# ============================================================================
# 7. travel-planning-01: Berlin -> Lisbon -> Porto -> Berlin
# ============================================================================

def conv_travel_01(seed):
    g = G(seed)
    carriers = [("TP", "TAP Air Portugal"), ("LH", "Lufthansa"), ("FR", "Ryanair"), ("U2", "easyJet"), ("IB", "Iberia"),
                ("AF", "Air France"), ("KL", "KLM"), ("LX", "SWISS"), ("EW", "Eurowings")]
    hubs = {"LH": "FRA", "IB": "MAD", "AF": "CDG", "KL": "AMS", "LX": "ZRH", "EW": "DUS"}

    def fno(code):
        return "%s %d" % (code, g.pick([1, 8]) * 1000 + g.int(0, 999))

    def search_flights(args, plant=None):
        d = dt.datetime.strptime(args["date"], "%Y-%m-%d")
        offers = []
        for k in range(g.int(28, 40)):
            code, name = g.pick(carriers)
            dep = d + dt.timedelta(minutes=g.int(5 * 60, 21 * 60))
            segs = []
            if code in hubs and g.chance(0.85):
                a1 = dep + dt.timedelta(minutes=g.int(70, 140))
                d2 = a1 + dt.timedelta(minutes=g.int(50, 240))
                a2 = d2 + dt.timedelta(minutes=g.int(110, 170))
                segs = [{"flight": fno(code), "from": args["origin"], "to": hubs[code], "dep": d.strftime("%Y-%m-%d") + dep.strftime("T%H:%M"),
                         "arr": a1.strftime("%Y-%m-%dT%H:%M"), "aircraft": g.pick(["A320neo", "A321", "B737-800", "E195"])},
                        {"flight": fno(code), "from": hubs[code], "to": args["destination"], "dep": d2.strftime("%Y-%m-%dT%H:%M"),
                         "arr": a2.strftime("%Y-%m-%dT%H:%M"), "aircraft": g.pick(["A320neo", "A321", "B737-800", "A220-300"])}]
            else:
                a1 = dep + dt.timedelta(minutes=g.int(205, 235))
                segs = [{"flight": fno(code), "from": args["origin"], "to": args["destination"], "dep": dep.strftime("%Y-%m-%dT%H:%M"),
                         "arr": a1.strftime("%Y-%m-%dT%H:%M"), "aircraft": g.pick(["A320neo", "A321neo", "B737 MAX 8"])}]
            stops = len(segs) - 1
            price = g.float(130, 290) if code in ("FR", "U2") else g.float(310 if stops == 0 else 220, 780)
            offers.append({"offer_id": "off_" + g.upper(12), "carrier": name, "stops": stops, "segments": segs,
                           "duration_min": int((dt.datetime.strptime(segs[-1]["arr"], "%Y-%m-%dT%H:%M") - dt.datetime.strptime(segs[0]["dep"], "%Y-%m-%dT%H:%M")).total_seconds() // 60),
                           "price": {"total": round(price * args.get("adults", 1), 2), "currency": "EUR", "per_adult": price},
                           "fare": {"brand": g.pick(["Light", "Classic", "Basic", "Standard", "Flex"]), "cabin_bag": g.chance(0.7),
                                    "checked_bags": g.int(0, 1), "changeable": g.chance(0.4), "refundable": g.chance(0.1)},
                           "seats_left": g.int(1, 9)})
        if plant:
            offers.insert(plant[0], {"offer_id": "off_" + g.upper(12), "carrier": "TAP Air Portugal", "stops": 0,
                                     "segments": [{"flight": plant[1], "from": args["origin"], "to": args["destination"],
                                                   "dep": args["date"] + "T06:05", "arr": args["date"] + "T08:40", "aircraft": "A321neo"}],
                                     "duration_min": 215, "price": {"total": 2 * 139.0, "currency": "EUR", "per_adult": 139.0},
                                     "fare": {"brand": "Discount", "cabin_bag": False, "checked_bags": 0, "changeable": False, "refundable": False},
                                     "seats_left": 2})
        offers.sort(key=lambda o: o["price"]["total"])
        return jdump({"search_id": "srch_" + g.alnum(16), "query": args, "offers": offers}, pretty=True)

    def weather(args):
        d = dt.datetime(2024, 10, 11)
        days = []
        for k in range(8):
            days.append({"date": day(d + dt.timedelta(days=k)), "summary": g.pick(["Sunny", "Partly cloudy", "Light rain", "Showers", "Cloudy", "Sunny intervals"]),
                         "t_min_c": g.int(12, 16), "t_max_c": g.int(19, 25), "precip_prob_pct": g.int(0, 80), "precip_mm": g.float(0, 9, 1),
                         "wind_kmh": g.int(5, 35), "uv_index": g.int(2, 6), "sunrise": "07:%02d" % g.int(30, 50), "sunset": "18:%02d" % g.int(50, 59),
                         "hourly": [{"h": h, "t_c": g.int(12, 24), "pp": g.int(0, 90)} for h in range(6, 24, 3)]})
        return jdump({"location": args["city"], "units": "metric", "generated_at": "2024-10-01T06:00:00Z", "daily": days}, pretty=True)

    def hotels(args):
        res = []
        hoods = {"Lisbon": ["Alfama", "Baixa", "Chiado", "Príncipe Real", "Bairro Alto", "Belém", "Avenida da Liberdade"],
                 "Porto": ["Ribeira", "Baixa", "Cedofeita", "Foz do Douro", "Bonfim", "Vila Nova de Gaia"]}[args["city"]]
        for k in range(g.int(24, 32)):
            nightly = g.float(85, 360)
            nights = (dt.datetime.strptime(args["checkout"], "%Y-%m-%d") - dt.datetime.strptime(args["checkin"], "%Y-%m-%d")).days
            res.append({"hotel_id": "htl_" + g.alnum(10), "name": "%s %s" % (g.pick(["Casa", "Hotel", "Palácio", "Pousada", "The", "Residencial"]),
                                                                             g.pick(["do Rio", "Lusitano", "Azulejo", "das Flores", "Miradouro", "Atlântico",
                                                                                     "Douro", "São Bento", "da Sé", "Bela Vista", "Tejo", "Ribeira"])),
                        "neighbourhood": g.pick(hoods), "stars": g.int(3, 5), "review_score": g.float(7.4, 9.6, 1), "reviews": g.int(80, 4000),
                        "nightly_eur": nightly, "total_eur": round(nightly * nights, 2), "free_cancellation_until": "2024-10-%02d" % g.int(5, 10),
                        "amenities": g.picks(["wifi", "breakfast", "air_conditioning", "rooftop", "pool", "gym", "parking", "river_view", "spa", "bar"], g.int(3, 6)),
                        "room": g.pick(["Double Room", "Superior Double", "Deluxe King", "Junior Suite"]),
                        "distance_center_km": g.float(0.2, 4.5, 1)})
        return jdump({"city": args["city"], "checkin": args["checkin"], "checkout": args["checkout"], "guests": args.get("guests", 2), "results": res})

    def trains(args, plant=None):
        rows = []
        t = dt.datetime(2024, 10, 14, 5, 30)
        used = [121, 123, 125, 127, 129, 131, 135, 137, 139, 141]
        for k in range(18):
            t = t + dt.timedelta(minutes=g.int(30, 70))
            typ = g.pick(["AP", "IC", "IC"])
            num = "AP %d" % used[k % len(used)] if typ == "AP" else "IC %d" % g.int(511, 529)
            dur = g.int(168, 185) if typ == "AP" else g.int(195, 215)
            rows.append([num, t.strftime("%H:%M"), (t + dt.timedelta(minutes=dur)).strftime("%H:%M"), "%dh%02d" % (dur // 60, dur % 60),
                         "Lisboa Santa Apolónia", "Porto Campanhã", "%.2f" % (g.float(31, 45) if typ == "AP" else g.float(24, 30)),
                         "%.2f" % (g.float(45, 70) if typ == "AP" else g.float(33, 40)), str(g.int(0, 120))])
        if plant:
            rows.insert(plant[0], [plant[1], "09:39", "12:21", "2h42", "Lisboa Santa Apolónia", "Porto Campanhã", "32.40", "49.90", "14"])
        return "CP - Comboios de Portugal | Lisboa -> Porto | 2024-10-14\n" + cols_table(
            ["train", "dep", "arr", "duration", "from", "to", "2nd_eur", "1st_eur", "seats_2nd"], rows)

    def book_flight(args, plant=None):
        ref = plant or g.upper(6)
        return jdump({"status": "confirmed", "booking_reference": ref, "offer_id": args["offer_id"],
                      "passengers": [{"name": n, "ticket_number": "047-%s" % g.digits(10)} for n in args["passengers"]],
                      "payment": {"method": "card", "last4": "4417", "charged_eur": args.get("expected_total_eur")},
                      "e_ticket_sent_to": args.get("contact_email"), "check_in_opens": "30h before departure"}, pretty=True)

    def book_hotel(args, plant=None):
        return jdump({"status": "confirmed", "confirmation_number": plant or "HX-%s" % g.digits(8), "hotel_id": args["hotel_id"],
                      "checkin": args["checkin"], "checkout": args["checkout"], "guests": 2, "pay_at_hotel": True,
                      "cancellation_policy": "free until 3 days before arrival, then first night charged"}, pretty=True)

    def restaurants(args, plant=None):
        res = []
        for k in range(g.int(16, 24)):
            res.append({"name": "%s %s" % (g.pick(["Taberna", "Tasca", "Restaurante", "Casa", "Adega", "Cervejaria"]),
                                           g.pick(["do Mar", "da Ribeira", "Lusa", "do Bacalhau", "Velha", "do Porto", "Gaivota", "da Avó", "O Marinheiro"])),
                        "cuisine": args.get("cuisine", "portuguese"), "price_level": g.int(1, 4), "rating": g.float(3.9, 4.9, 1),
                        "reviews": g.int(40, 3000), "address": "Rua %s %d" % (g.pick(["das Flores", "de Cedofeita", "do Almada", "de Santa Catarina", "da Bica"]), g.int(1, 300)),
                        "reservations": g.pick(["online", "online", "walk-in only"]), "phone": "+351 2%d %s %s" % (g.int(1, 2), g.digits(3), g.digits(4)),
                        "open": "12:00-15:00, 19:00-23:00", "closed_on": g.pick(["Sunday", "Monday", "none"])})
        if plant:
            res.insert(3, {"name": "Marisqueira do Cais Velho", "cuisine": "seafood", "price_level": 3, "rating": 4.8, "reviews": 1290,
                           "address": "Cais da Ribeira 41", "reservations": "phone only", "phone": plant,
                           "open": "12:30-15:00, 19:30-23:00", "closed_on": "Tuesday"})
        return jdump({"city": args["city"], "results": res})

    def entry(args):
        return ("<h2>Entry requirements: Portugal (for residents of Germany)</h2>\n<ul>\n<li>Schengen internal travel: no border checks "
                "on flights from Germany under normal circumstances.</li>\n<li>EU/EEA nationals: valid national ID card or passport.</li>\n"
                "<li>Non-EU nationals resident in Germany: passport plus German residence permit; max 90 days in any 180.</li>\n"
                "<li>No vaccination requirements.</li>\n<li>Tourist tax: Lisbon 4 EUR per person per night (max 7 nights); Porto 3 EUR per "
                "person per night.</li>\n</ul>\n<h3>Customs</h3>\n<p>" + " ".join(g.pick(["Cash above 10,000 EUR must be declared when entering "
                "from outside the EU.", "No limits on goods for personal use within the EU.", "Medicines for personal use are allowed with a prescription."])
                for _ in range(12)) + "</p>\n<h3>Emergency numbers</h3>\n<p>112 (general), SNS 24 health line 808 24 24 24.</p>")

    def place(args):
        return jdump({"name": args["name"], "city": args["city"], "opening_hours": {d: "%02d:00-%02d:00" % (g.int(9, 10), g.int(17, 19)) for d in
                                                                                     ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                      "closed": g.pick(["mon", "none"]), "ticket_eur": g.float(5, 15), "timed_entry": g.chance(0.6),
                      "typical_wait_min": g.int(10, 90), "tips": [g.pick(["Book online to skip the queue.", "Go early on weekdays.",
                                                                          "Photography without flash allowed.", "Audio guide available in German."]) for _ in range(4)],
                      "reviews_sample": [{"rating": g.int(3, 5), "text": g.pick(["Stunning!", "Very crowded at noon.", "Worth it.", "Too expensive for what it is.",
                                                                                  "Beautiful architecture, long line."])} for _ in range(10)]}, pretty=True)

    impl = {"search_flights": search_flights, "get_weather": weather, "search_hotels": hotels, "get_train_times": trains,
            "book_flight": book_flight, "book_hotel": book_hotel, "search_restaurants": restaurants,
            "get_entry_requirements": entry, "get_place_details": place}
    tools = [
        tool("search_flights", "Search flight offers (prices for all adults).", {"origin": S("IATA"), "destination": S("IATA"), "date": S("YYYY-MM-DD"),
                                                                              "adults": I("Adults"), "cabin": S("economy|premium|business")}, ["origin", "destination", "date"]),
        tool("get_weather", "Daily forecast with hourly detail.", {"city": S("City")}, ["city"]),
        tool("search_hotels", "Hotel availability and prices.", {"city": S("City"), "checkin": S("YYYY-MM-DD"), "checkout": S("YYYY-MM-DD"),
                                                                  "guests": I("Guests")}, ["city", "checkin", "checkout"]),
        tool("get_train_times", "Rail timetable and fares.", {"from": S("Station"), "to": S("Station"), "date": S("YYYY-MM-DD")}, ["from", "to", "date"]),
        tool("book_flight", "Book a flight offer.", {"offer_id": S("off_..."), "passengers": A(S("Full name"), "Passenger names"),
                                                     "contact_email": S("Email"), "expected_total_eur": N("Price check")}, ["offer_id", "passengers"]),
        tool("book_hotel", "Book a hotel room.", {"hotel_id": S("htl_..."), "checkin": S("Date"), "checkout": S("Date"), "room": S("Room type")},
             ["hotel_id", "checkin", "checkout"]),
        tool("search_restaurants", "Find restaurants.", {"city": S("City"), "cuisine": S("Cuisine"), "area": S("Neighbourhood")}, ["city"]),
        tool("get_entry_requirements", "Entry/visa rules.", {"destination": S("Country"), "residence": S("Country of residence")}, ["destination"]),
        tool("get_place_details", "Opening hours and tips for an attraction.", {"name": S("Place"), "city": S("City")}, ["name", "city"]),
    ]
    c = Conv("travel-planning-01", "Travel planning with flight, hotel, rail, weather and restaurant APIs, including bookings.", tools, impl)
    c.system("You are a travel planning assistant with access to flight, hotel, rail, weather and restaurant APIs. Confirm "
             "before booking anything, and keep track of the traveller's constraints.")
    u = c.user("My wife and I want a week in Portugal: fly Berlin -> Lisbon around 11-12 October, a few days in Lisbon, train "
               "to Porto, and fly home from Porto on the 18th. Our hard budget for flights + hotels is 2,400 EUR total. "
               "Names: Jonas Weber and Leonie Weber, email jonas.weber@posteo.de.")
    c.fact("budget", "2,400 EUR", u,
           "What was the hard budget I set for flights and hotels at the start?",
           "Your hard budget for flights plus hotels was {v} in total.")
    fs = [c.act(("search_flights", {"origin": "BER", "destination": "LIS", "date": "2024-10-12", "adults": 2, "cabin": "economy"},
                 {"plant": (0, "TP 537")})),
          c.act(("search_flights", {"origin": "OPO", "destination": "BER", "date": "2024-10-18", "adults": 2, "cabin": "economy"}),
                text="Now the return from Porto.")]
    c.fact("cheapnonstop", "TP 537", fs[0],
           "What was the flight number of that very cheap early-morning TAP nonstop in the first search?",
           "It was {v} (06:05 -> 08:40, 139 EUR per person, Discount fare with no cabin bag).")
    c.say("Outbound on the 12th: the cheapest option is a TAP nonstop at 06:05 for 139 EUR per person, but on a Discount fare "
          "with no cabin bag and no changes. Otherwise the low-cost carriers are around 130-290 EUR per person, and one-stop "
          "options via Frankfurt, Madrid, Paris or Amsterdam cost more. For the return from Porto on the 18th there are "
          "several one-stop options and a few direct low-cost flights.")
    c.user("6am is brutal. Check the 11th as well, and the 17th for the return in case it's cheaper.")
    c.act(("search_flights", {"origin": "OPO", "destination": "BER", "date": "2024-10-17", "adults": 2, "cabin": "economy"}))
    c.act(("search_flights", {"origin": "BER", "destination": "LIS", "date": "2024-10-11", "adults": 2, "cabin": "economy"}),
          text="The 17th isn't meaningfully cheaper. Now the outbound on the 11th.")
    f11 = json.loads(c.messages[-1]["content"])["offers"]
    pick_out = [o for o in f11 if o["stops"] == 0 and o["segments"][0]["dep"][11:13] >= "09"] or f11
    ret = json.loads(c.messages[fs[1]]["content"])["offers"]
    pick_ret = [o for o in ret if o["stops"] == 0] or ret
    out_o, ret_o = pick_out[0], pick_ret[0]
    c.say("On the 11th there's a civilised nonstop: %s (%s) departing %s, %s EUR for two. For the return on the 18th, the best "
          "direct option is %s (%s) at %s, %s EUR for two." % (
              out_o["segments"][0]["flight"], out_o["carrier"], out_o["segments"][0]["dep"][11:], out_o["price"]["total"],
              ret_o["segments"][0]["flight"], ret_o["carrier"], ret_o["segments"][0]["dep"][11:], ret_o["price"]["total"]))
    c.user("What's the weather looking like in both cities?")
    c.act(("get_weather", {"city": "Lisbon"}))
    c.act(("get_weather", {"city": "Porto"}))
    c.say("Mild: Lisbon highs around 19-25 C, Porto similar but with a higher chance of showers on some days. Pack a light "
          "rain jacket for Porto.")
    c.user("Hotels: Lisbon 11-14, Porto 14-18. Something central, good reviews.")
    hs = [c.act(("search_hotels", {"city": "Lisbon", "checkin": "2024-10-11", "checkout": "2024-10-14", "guests": 2})),
          c.act(("search_hotels", {"city": "Porto", "checkin": "2024-10-14", "checkout": "2024-10-18", "guests": 2}), text="Lisbon done; now Porto.")]
    lis = sorted(json.loads(c.messages[hs[0]]["content"])["results"], key=lambda h: (-h["review_score"], h["total_eur"]))
    opo = sorted(json.loads(c.messages[hs[1]]["content"])["results"], key=lambda h: (-h["review_score"], h["total_eur"]))
    lis_h = [h for h in lis if h["total_eur"] < 600][0]
    opo_h = [h for h in opo if h["total_eur"] < 800][0]
    c.say("Best value with high reviews: in Lisbon, %s (%s, %.1f, %.2f EUR for 3 nights); in Porto, %s (%s, %.1f, %.2f EUR for 4 nights)." % (
        lis_h["name"], lis_h["neighbourhood"], lis_h["review_score"], lis_h["total_eur"],
        opo_h["name"], opo_h["neighbourhood"], opo_h["review_score"], opo_h["total_eur"]))
    c.user("And the train to Porto on the 14th?")
    tr = c.act(("get_train_times", {"from": "Lisboa Santa Apolónia", "to": "Porto Campanhã", "date": "2024-10-14"}, {"plant": (4, "AP 133")}))
    c.fact("train", "AP 133", tr,
           "Which train was the fastest mid-morning Alfa Pendular you found for the 14th? I need the train number to buy tickets.",
           "The one I'd take is {v}: Lisboa Santa Apolónia 09:39 -> Porto Campanhã 12:21 (2h42), 32.40 EUR in 2nd class.")
    c.say("Alfa Pendular trains take about 2h50 and Intercidades about 3h20. There's a good mid-morning Alfa Pendular at 09:39 "
          "arriving 12:21, 32.40 EUR per person in 2nd class -- you can buy those on cp.pt; I can't book rail.")
    total = out_o["price"]["total"] + ret_o["price"]["total"] + lis_h["total_eur"] + opo_h["total_eur"]
    c.user("OK, what's the total for those flights and hotels?")
    c.say("Flights %.2f + %.2f, hotels %.2f + %.2f = %.2f EUR, which is %s your budget." % (
        out_o["price"]["total"], ret_o["price"]["total"], lis_h["total_eur"], opo_h["total_eur"], total, "within" if total <= 2400 else "over"))
    c.user("Great, book both flights.")
    bf = [c.act(("book_flight", {"offer_id": out_o["offer_id"], "passengers": ["Jonas Weber", "Leonie Weber"], "contact_email": "jonas.weber@posteo.de",
                                 "expected_total_eur": out_o["price"]["total"]}, {"plant": "Q7XK2M"}))]
    c.act(("book_flight", {"offer_id": ret_o["offer_id"], "passengers": ["Jonas Weber", "Leonie Weber"], "contact_email": "jonas.weber@posteo.de",
                           "expected_total_eur": ret_o["price"]["total"]}), text="Outbound confirmed; booking the return.")
    c.fact("pnr", "Q7XK2M", bf[0],
           "What's the booking reference for our outbound flight to Lisbon?",
           "The outbound booking reference is {v}.")
    c.say("Both flights are confirmed and the e-tickets go to jonas.weber@posteo.de. Check-in opens 30 hours before departure.")
    c.user("Now book both hotels.")
    bh = [c.act(("book_hotel", {"hotel_id": lis_h["hotel_id"], "checkin": "2024-10-11", "checkout": "2024-10-14", "room": lis_h["room"]})),
          c.act(("book_hotel", {"hotel_id": opo_h["hotel_id"], "checkin": "2024-10-14", "checkout": "2024-10-18", "room": opo_h["room"]},
                 {"plant": "HX-90417236"}))]
    c.fact("hotelconf", "HX-90417236", bh[1],
           "What's the confirmation number of the Porto hotel booking?",
           "The Porto hotel confirmation number is {v} (pay at hotel, free cancellation until 3 days before arrival).")
    c.say("Both hotels are booked, pay at the hotel, with free cancellation until 3 days before arrival.")
    c.user("Restaurants: seafood in Porto near the river, and a fado place in Lisbon.")
    rs = [c.act(("search_restaurants", {"city": "Porto", "cuisine": "seafood", "area": "Ribeira"}, {"plant": "+351 22 208 4417"}))]
    c.act(("search_restaurants", {"city": "Lisbon", "cuisine": "fado", "area": "Alfama"}))
    c.fact("phone", "+351 22 208 4417", rs[0],
           "What was the phone number of that top-rated Porto seafood place that only takes phone reservations?",
           "Marisqueira do Cais Velho, Cais da Ribeira 41 -- phone {v} (closed Tuesdays).")
    c.say("In Porto the standout is Marisqueira do Cais Velho on the Ribeira quay (4.8 from ~1,300 reviews), but it only takes "
          "phone reservations and is closed on Tuesdays. In Alfama there are several fado taverns with online booking.")
    c.user("Anything we need for entry? My wife has a Brazilian passport with a German residence permit.")
    c.act(("get_entry_requirements", {"destination": "Portugal", "residence": "Germany"}))
    c.say("She needs her passport plus the German residence permit; no visa for a stay of up to 90 days. You need your ID card "
          "or passport. Note the tourist tax: 4 EUR pp/night in Lisbon and 3 EUR pp/night in Porto, paid at the hotel.")
    c.user("Check opening hours for Livraria Lello and the Jerónimos Monastery.")
    c.act(("get_place_details", {"name": "Livraria Lello", "city": "Porto"}), ("get_place_details", {"name": "Mosteiro dos Jerónimos", "city": "Lisbon"}))
    c.act(("get_place_details", {"name": "Torre de Belém", "city": "Lisbon"}), text="Belém tower is next to Jerónimos, checking it too.")
    c.act(("get_place_details", {"name": "Palácio da Bolsa", "city": "Porto"}), text="And Palácio da Bolsa, which is near your Porto hotel.")
    c.say("Jerónimos and Livraria Lello both have timed entry and get busy at midday; book online and go early. Jerónimos and "
          "the tower are next to each other in Belém, so do them together on Saturday 12 or Sunday 13. Palácio da Bolsa is a "
          "guided-tour-only visit and pairs well with an evening in Ribeira.")
    c.user("Refresh the Porto forecast, I want to plan the Douro day.")
    c.act(("get_weather", {"city": "Porto"}))
    c.say("Same forecast as before (it was generated this morning): the driest day in Porto is the best pick for the Douro "
          "valley trip; avoid the day with the highest precipitation chance.")
    c.recall("pnr", prefix="Let me put everything into my calendar. ")
    c.recall("hotelconf")
    c.recall("train")
    c.recall("phone")
    c.recall("cheapnonstop", prefix="My friend wants to fly on the 12th anyway. ")
    c.recall("budget", prefix="And to double check: ")
    return c


# ============================================================================
# 8. finance-recon-01: September month-end bank reconciliation
# ============================================================================

COUNTERPARTIES = ["Nordlicht Logistik GmbH", "Bürobedarf Schmitt KG", "AWS EMEA SARL", "Google Ireland Ltd", "Stadtwerke Köln",
                  "Techniker Krankenkasse", "Finanzamt Köln-Mitte", "DATEV eG", "Hetzner Online GmbH", "Deutsche Telekom AG",
                  "Atlassian Pty Ltd", "Lufthansa AG", "DB Vertrieb GmbH", "Allianz Versicherungs-AG", "Sparkasse KölnBonn",
                  "Müller Consulting", "Kunde: Brightwater Foods", "Kunde: Cobalt Ridge Media", "Kunde: Dunmore Textiles",
                  "Kunde: Eastgate Pharma", "Kunde: Fjordline Marine", "Kunde: Greystone Legal", "Stripe Payments Europe"]


def conv_finance_recon_01(seed):
    g = G(seed)
    st = {"bank": {}, "gl": {}}

    def gen_txns(n, start, end, ccy):
        out = []
        t = start
        span = (end - start).total_seconds()
        for k in range(n):
            t = start + dt.timedelta(seconds=span * k / n + g.int(0, 3000))
            cp = g.pick(COUNTERPARTIES)
            amt = g.float(200, 48000) if cp.startswith("Kunde") or cp.startswith("Stripe") else -g.float(15, 22000)
            out.append({"date": day(t), "cp": cp, "amount": amt, "ccy": ccy, "id": "TRX-%s-%05d" % (t.strftime("%Y%m%d"), g.int(10000, 99999)),
                        "ref": g.pick(["RE-%d" % g.int(10000, 99999), "INV-%d" % g.int(2024000, 2024999), "SEPA-DD %s" % g.upper(10),
                                       "Lohn 09/2024", "Miete Oktober", "Gutschrift", "Kartenzahlung %s" % g.upper(6)])})
        return out

    def bank(args, plant=None):
        start = dt.datetime.strptime(args["from"], "%Y-%m-%d")
        end = dt.datetime.strptime(args["to"], "%Y-%m-%d")
        ccy = "USD" if "USD" in args["account"] else "EUR"
        tx = gen_txns(g.int(170, 220) if ccy == "EUR" else 70, start, end, ccy)
        st["bank"][args["account"]] = tx
        rows = []
        bal = g.float(800_000, 1_200_000)
        open_bal = bal
        for x in tx:
            bal += x["amount"]
            rows.append([x["id"], x["date"], x["date"], "%.2f" % x["amount"], x["ccy"], x["cp"], "DE%s" % g.digits(20) if g.chance(0.8) else "",
                         x["ref"], "%.2f" % bal])
        if plant:
            rows.insert(len(rows) - 3, ["TRX-20240930-%05d" % g.int(10000, 99999), "2024-09-30", "2024-09-30", "17250.00", ccy, "WIRE IN UNKNOWN REMITTER", "",
                                         plant, "%.2f" % (bal + 17250)])
        head = "# Commerzbank AG | account %s | statement %s..%s | opening balance %.2f %s\n" % (args["account"], args["from"], args["to"], open_bal, ccy)
        return head + csv_text(["transaction_id", "booking_date", "value_date", "amount", "currency", "counterparty", "counterparty_iban",
                                "remittance_info", "balance_after"], rows)

    def ledger(args, plant=None):
        start = dt.datetime.strptime(args["from"], "%Y-%m-%d")
        end = dt.datetime.strptime(args["to"], "%Y-%m-%d")
        tx = gen_txns(g.int(60, 75), start, end, "USD" if args["gl_account"] == "1210" else "EUR")
        entries = []
        for x in tx:
            entries.append({"entry_id": "JE-%s" % g.digits(7), "posting_date": x["date"], "gl_account": args["gl_account"],
                            "amount": x["amount"], "currency": x["ccy"], "counterparty": x["cp"], "document": x["ref"],
                            "source": g.pick(["AP", "AR", "bank_feed", "payroll", "manual"]),
                            "created_by": g.pick(["svc-bankfeed", "svc-ap", "m.hoffmann", "l.castillo", "svc-payroll"]),
                            "approved_by": None, "cost_center": g.pick(["CC-100", "CC-200", "CC-310", "CC-420", None]),
                            "lines": [{"account": args["gl_account"], "debit": max(x["amount"], 0), "credit": max(-x["amount"], 0)},
                                      {"account": g.pick(["4400", "6300", "6805", "1400", "1600", "3806"]), "debit": max(-x["amount"], 0),
                                       "credit": max(x["amount"], 0)}]})
        if plant:
            entries.insert(40, {"entry_id": "JE-%s" % g.digits(7), "posting_date": "2024-09-30", "gl_account": args["gl_account"],
                                "amount": 3912.44, "currency": "EUR", "counterparty": None, "document": "FX-REVAL-2024-09",
                                "source": "manual", "created_by": "l.castillo", "approved_by": plant, "cost_center": None,
                                "memo": "FX revaluation manual override (rate table late)",
                                "lines": [{"account": args["gl_account"], "debit": 3912.44, "credit": 0}, {"account": "6880", "debit": 0, "credit": 3912.44}]})
        st["gl"].setdefault(args["gl_account"], []).extend(entries)
        return jdump({"gl_account": args["gl_account"], "period": {"from": args["from"], "to": args["to"]}, "page": 1,
                      "count": len(entries), "entries": entries}, pretty=True)

    def fx(args, plant=None):
        ref = {"USD": 1.112, "GBP": 0.8353, "CHF": 0.9439, "JPY": 159.8, "SEK": 11.30, "NOK": 11.75, "DKK": 7.4563, "PLN": 4.2788,
               "CZK": 25.14, "HUF": 397.2, "CAD": 1.5076, "AUD": 1.6126, "NZD": 1.7588, "SGD": 1.4333, "HKD": 8.672, "CNY": 7.834,
               "INR": 93.33, "BRL": 6.05, "MXN": 21.92, "ZAR": 19.21, "TRY": 38.09, "KRW": 1466.0, "ILS": 4.152, "AED": 4.095,
               "RON": 4.9746, "BGN": 1.9558, "ISK": 151.9, "THB": 36.04, "MYR": 4.593, "IDR": 16880.0}
        rates = {k: round(v * g.r.uniform(0.994, 1.006), 4 if v < 100 else 2) for k, v in ref.items()}
        rates["BGN"] = 1.9558
        if plant:
            rates["USD"] = plant
        if args["base"] != "EUR":
            b = rates.pop(args["base"])
            rates = {k: round(v / b, 4 if v / b < 100 else 2) for k, v in rates.items()}
            rates["EUR"] = round(1 / b, 4)
        return jdump({"source": "ECB reference rates", "date": args["date"], "base": args["base"], "rates": rates,
                      "published_at": args["date"] + "T14:15:00Z"}, pretty=True)

    def reconcile(args):
        bank = st["bank"][args["bank_account"]]
        gl = st["gl"][args["gl_account"]]
        bank_items = [x for x in bank if g.chance(0.06)]
        gl_items = [e for e in gl if g.chance(0.05) and e["source"] != "manual"]
        eur = args["bank_account"] == "DE-OPS-EUR"
        out = ["Reconciliation %s vs GL %s, period %s" % (args["bank_account"], args["gl_account"], args["period"]),
               "matched: %d pairs (%d exact, %d by reference, %d by amount+date window)" % (
                   len(bank) - len(bank_items), len(bank) - len(bank_items) - 20, 14, 6),
               "", "UNMATCHED BANK ITEMS"]
        out.append(text_table(["transaction_id", "date", "amount", "counterparty"], [[x["id"], x["date"], "%.2f" % x["amount"], x["cp"]] for x in bank_items] +
                              ([["(statement line 2024-09-30)", "2024-09-30", "17250.00", "WIRE IN UNKNOWN REMITTER"]] if eur else [])))
        out += ["", "UNMATCHED GL ITEMS"]
        out.append(text_table(["entry_id", "date", "amount", "source", "document"], [[e["entry_id"], e["posting_date"], "%.2f" % e["amount"], e["source"], e["document"]] for e in gl_items] +
                              ([["(manual)", "2024-09-30", "FX reval", "manual", "FX-REVAL-2024-09"]] if eur else [])))
        out += ["", "bank fees not in GL: %d items, total %.2f" % (g.int(3, 6), -g.float(40, 180))]
        return "\n".join(out)

    def search_payments(args, plant=None):
        rows = []
        for k in range(g.int(18, 26)):
            rows.append(["PAY-2024-%02d-%05d" % (g.int(6, 9), g.int(10000, 99999)), "2024-%02d-%02d" % (g.int(6, 9), g.int(1, 28)), args["vendor"],
                         "RE-%d" % g.int(10000, 99999), "%.2f" % g.float(800, 16000), "EUR", g.pick(["executed", "executed", "executed", "returned"]),
                         g.pick(["m.hoffmann", "svc-ap"])])
        if plant:
            rows.insert(5, ["PAY-2024-09-%05d" % g.int(10000, 99999), "2024-09-12", args["vendor"], "RE-58213", "12480.00", "EUR", "executed", "svc-ap"])
            rows.insert(6, [plant, "2024-09-13", args["vendor"], "RE-58213", "12480.00", "EUR", "executed", "m.hoffmann"])
        return text_table(["payment_id", "executed_on", "vendor", "invoice_ref", "amount", "ccy", "status", "initiated_by"], rows)

    def get_invoice(args):
        lines = [{"pos": k + 1, "text": g.pick(["FTL Köln-Hamburg", "LTL Köln-München", "Lagerung Palette/Monat", "Kommissionierung", "Maut-Zuschlag",
                                                "Dieselzuschlag"]), "qty": g.int(1, 40), "unit_price": g.float(20, 900), "vat_rate": 0.19} for k in range(g.int(8, 16))]
        return jdump({"invoice": {"number": args["invoice_ref"], "vendor_id": "V-1043", "vendor": "Nordlicht Logistik GmbH", "issued": "2024-08-30",
                                  "due": "2024-09-13", "currency": "EUR", "net": 10487.39, "vat": 1992.61, "gross": 12480.00, "lines": lines,
                                  "payment_terms": "14 Tage netto", "status": "paid", "payments": 2}}, pretty=True)

    def get_vendor(args, plant=None):
        hist = [{"changed_at": "2023-02-11T09:12:00Z", "field": "address", "by": "m.hoffmann"},
                {"changed_at": "2024-09-10T16:47:00Z", "field": "bank_account", "by": "portal:vendor-self-service",
                 "old": "DE%s **** **** **** **** %s" % (g.digits(2), g.digits(2)), "new": plant[:4] + " **** **** **** **** " + plant[-2:],
                 "verified_callback": False}]
        return jdump({"vendor": {"id": args["vendor_id"], "name": "Nordlicht Logistik GmbH", "vat_id": "DE%s" % g.digits(9),
                                 "address": {"street": "Hafenstraße 12", "zip": "20457", "city": "Hamburg", "country": "DE"},
                                 "bank": {"iban": plant, "bic": "COBADEFFXXX", "holder": "Nordlicht Logistik GmbH"},
                                 "payment_terms_days": 14, "ytd_spend_eur": 214_880.15, "change_history": hist,
                                 "contacts": [{"name": g.person(), "email": "ap@nordlicht-logistik.de", "phone": "+49 40 %s" % g.digits(8)} for _ in range(3)]}}, pretty=True)

    def post_adj(args):
        return jdump({"ok": True, "entry_id": "JE-%s" % g.digits(7), "gl_account": args["gl_account"], "amount": args["amount"],
                      "status": "pending_approval", "approver_required": True})

    def export_wp(args):
        return jdump({"ok": True, "file": "/finance/close/2024-09/recon_%s_2024-09.xlsx" % args["gl_account"], "sheets": ["Summary", "Matched", "Unmatched", "Adjustments"],
                      "bytes": g.int(80_000, 200_000)})

    impl = {"fetch_bank_statement": bank, "fetch_ledger_entries": ledger, "get_fx_rates": fx, "run_reconciliation": reconcile,
            "search_payments": search_payments, "get_invoice": get_invoice, "get_vendor": get_vendor, "post_adjustment": post_adj,
            "export_workpaper": export_wp}
    tools = [
        tool("fetch_bank_statement", "Bank statement lines (CSV) for an account and period.", {"account": S("Bank account key"), "from": S("YYYY-MM-DD"), "to": S("YYYY-MM-DD")}, ["account", "from", "to"]),
        tool("fetch_ledger_entries", "General-ledger journal entries for an account (JSON).", {"gl_account": S("GL account number"), "from": S("YYYY-MM-DD"), "to": S("YYYY-MM-DD")}, ["gl_account", "from", "to"]),
        tool("get_fx_rates", "ECB reference rates for a date.", {"date": S("YYYY-MM-DD"), "base": S("Base currency")}, ["date", "base"]),
        tool("run_reconciliation", "Auto-match bank lines to GL entries; lists unmatched items.", {"bank_account": S("Bank account key"), "gl_account": S("GL account"), "period": S("YYYY-MM")}, ["bank_account", "gl_account", "period"]),
        tool("search_payments", "Outgoing payments to a vendor.", {"vendor": S("Vendor name"), "from": S("YYYY-MM-DD")}, ["vendor"]),
        tool("get_invoice", "Vendor invoice by reference.", {"invoice_ref": S("Invoice reference")}, ["invoice_ref"]),
        tool("get_vendor", "Vendor master data including bank details and change history.", {"vendor_id": S("V-...")}, ["vendor_id"]),
        tool("post_adjustment", "Create a GL adjustment (needs approval).", {"gl_account": S("GL account"), "amount": N("Signed amount"), "contra_account": S("Contra account"), "memo": S("Memo")}, ["gl_account", "amount", "memo"]),
        tool("export_workpaper", "Export the reconciliation workpaper (xlsx).", {"gl_account": S("GL account"), "period": S("YYYY-MM")}, ["gl_account", "period"]),
    ]
    c = Conv("finance-recon-01", "Financial month-end reconciliation: bank statements vs ledger, FX, duplicate vendor payment, adjustments.", tools, impl)
    c.system("You are a finance operations assistant for Acme Analytics GmbH. You reconcile bank accounts against the general "
             "ledger, investigate differences and prepare adjustments for approval. Never post without stating the evidence.")
    u = c.user("Let's do the September close for the EUR operating account at Commerzbank (bank key DE-OPS-EUR, GL 1200). The "
               "auditors asked for the reconciliation under request AUD-REQ-5521. Start by pulling the statement and the ledger.")
    c.fact("audreq", "AUD-REQ-5521", u,
           "What was the auditor's request id I mentioned at the start? I need it for the email subject.",
           "The auditors' request id is {v}.")
    bs = c.act(("fetch_bank_statement", {"account": "DE-OPS-EUR", "from": "2024-09-01", "to": "2024-09-30"}, {"plant": "RF18539007547034"}))
    c.fact("rfref", "RF18539007547034", bs,
           "What structured creditor reference (the RF... one) was on the unidentified incoming wire in the bank statement?",
           "The unidentified 17,250.00 EUR wire on 30 September carried the creditor reference {v} in its remittance info.")
    c.act(("fetch_ledger_entries", {"gl_account": "1200", "from": "2024-09-01", "to": "2024-09-15"}), text="Statement loaded; now the ledger, first half of the month.")
    lg = c.act(("fetch_ledger_entries", {"gl_account": "1200", "from": "2024-09-16", "to": "2024-09-30"}, {"plant": "k.brandstetter"}))
    c.fact("approver", "k.brandstetter", lg,
           "Who approved the manual FX revaluation override entry in the ledger?",
           "The manual FX revaluation override (FX-REVAL-2024-09) was created by l.castillo and approved by {v}.")
    c.act(("run_reconciliation", {"bank_account": "DE-OPS-EUR", "gl_account": "1200", "period": "2024-09"}))
    c.say("Auto-matching pairs the large majority of statement lines with GL entries. What's left:\n\n- a handful of unmatched "
          "bank items, including a 17,250.00 EUR incoming wire on 30 September from an unknown remitter;\n- a few unmatched GL "
          "items, plus a manual FX revaluation entry (FX-REVAL-2024-09) that has no bank counterpart by nature;\n- several bank "
          "fees that were never booked.\n\nThe FX revaluation is odd on a EUR account; I'll check the rates used.")
    c.user("Yes, check the ECB rates for the 30th.")
    fxm = c.act(("get_fx_rates", {"date": "2024-09-30", "base": "EUR"}, {"plant": 1.1163}))
    c.fact("eurusd", "1.1163", fxm,
           "What EUR/USD rate did the ECB lookup for 30 September return?",
           "The ECB reference rate for 30 September was EUR/USD {v}.")
    c.act(("get_fx_rates", {"date": "2024-09-27", "base": "EUR"}), text="And the previous business day, to see if the override used a stale table.")
    c.say("The month-end ECB table was published on the 30th at 14:15 UTC. The memo on the override says 'rate table late', so "
          "the entry was likely booked with the 27 September rates. Either way, an FX revaluation belongs on the USD account, not "
          "on GL 1200 -- I'd flag it for reversal and rebooking.")
    c.user("Separate thing: AP thinks we paid Nordlicht Logistik twice in September. Check.")
    sp = c.act(("search_payments", {"vendor": "Nordlicht Logistik GmbH", "from": "2024-06-01"}, {"plant": "PAY-2024-09-04471"}))
    c.fact("duppay", "PAY-2024-09-04471", sp,
           "What was the payment id of the second, duplicate payment to Nordlicht?",
           "The duplicate was {v}, executed on 13 September by m.hoffmann -- a day after the svc-ap payment of the same 12,480.00 EUR for RE-58213.")
    c.act(("get_invoice", {"invoice_ref": "RE-58213"}), text="Two payments reference the same invoice; opening it.")
    vd = c.act(("get_vendor", {"vendor_id": "V-1043"}, {"plant": "DE89 3704 0044 0532 0130 00"}))
    c.fact("iban", "DE89 3704 0044 0532 0130 00", vd,
           "What is the new IBAN on the Nordlicht vendor record, the one changed via self-service?",
           "The vendor record now shows IBAN {v} (changed through the self-service portal on 10 September, callback not verified).")
    c.say("Confirmed duplicate: invoice RE-58213 (12,480.00 EUR gross, due 13 September) was paid once by the AP run on the 12th "
          "and again manually on the 13th. More worrying: the vendor's bank account was changed via the self-service portal on "
          "10 September *without a verified callback* -- classic payment-diversion pattern. I'd (1) ask Nordlicht to confirm the "
          "new account by phone using the number on file, (2) request repayment of the duplicate, and (3) block further payments "
          "to this vendor until verified.")
    c.user("Agreed, I'll call them. Now the USD account too: bank key US-OPS-USD, GL 1210.")
    c.act(("fetch_bank_statement", {"account": "US-OPS-USD", "from": "2024-09-01", "to": "2024-09-30"}))
    c.act(("fetch_ledger_entries", {"gl_account": "1210", "from": "2024-09-01", "to": "2024-09-30"}), text="And its ledger.")
    c.act(("get_fx_rates", {"date": "2024-09-30", "base": "USD"}), text="Plus USD-based rates for the revaluation.")
    c.act(("run_reconciliation", {"bank_account": "US-OPS-USD", "gl_account": "1210", "period": "2024-09"}))
    c.say("The USD account reconciles apart from a few timing items and a missing month-end revaluation -- which is where the "
          "manual override on GL 1200 should have gone.")
    c.user("Post adjustments on 1200 for the unbooked bank fees, and a reversal of the FX override.")
    c.act(("post_adjustment", {"gl_account": "1200", "amount": -112.40, "contra_account": "6855", "memo": "Sept bank fees not booked (Commerzbank)"}))
    c.act(("post_adjustment", {"gl_account": "1200", "amount": -3912.44, "contra_account": "6880", "memo": "Reverse FX-REVAL-2024-09 (belongs on 1210)"}),
          text="Fees posted; now the reversal.")
    c.act(("post_adjustment", {"gl_account": "1210", "amount": 3912.44, "contra_account": "6880", "memo": "Rebook Sept FX revaluation on USD account"}),
          text="And rebooking it on the USD account.")
    c.say("Three adjustments created, all pending approval: bank fees on 1200, reversal of the override on 1200, and the rebooking on 1210.")
    c.user("Re-run the EUR reconciliation.")
    c.act(("run_reconciliation", {"bank_account": "DE-OPS-EUR", "gl_account": "1200", "period": "2024-09"}, {"fresh": True}))
    c.say("Remaining open items are the unknown incoming wire and a couple of timing differences -- those go on the workpaper "
          "as reconciling items.")
    c.user("Show me the first half of September ledger again, the auditor wants that page.")
    c.act(("fetch_ledger_entries", {"gl_account": "1200", "from": "2024-09-01", "to": "2024-09-15"}))
    c.say("Here's the same page as before (unchanged -- the adjustments are dated 30 September and pending).")
    c.user("Export the workpaper.")
    c.act(("export_workpaper", {"gl_account": "1200", "period": "2024-09"}), ("export_workpaper", {"gl_account": "1210", "period": "2024-09"}))
    c.say("Both workpapers exported to /finance/close/2024-09/.")
    c.recall("audreq", prefix="Emailing the auditors now. ")
    c.recall("rfref", prefix="Treasury wants to trace the unknown wire. ")
    c.recall("eurusd")
    c.recall("approver", prefix="For the control finding about the override: ")
    c.recall("duppay")
    c.recall("iban", prefix="Last one, for the fraud report: ")
    return c


# ============================================================================
# 9. security-audit-01: AWS account + bastion hosts
# ============================================================================

def conv_security_01(seed):
    g = G(seed)
    t0 = dt.datetime(2024, 11, 18, 9, 0)

    def akid():
        return "AKIA" + g.upper(16)

    def iam_users(args, plant=None):
        users = []
        for k in range(g.int(34, 42)):
            nm = g.pick(FIRST).lower()[0] + "." + g.pick(LAST).lower()
            if g.chance(0.2):
                nm = "svc-" + g.pick(["ci", "backup", "grafana", "etl", "billing-export", "sentry", "terraform", "datadog"]) + ("-%d" % g.int(1, 9) if g.chance(0.3) else "")
            keys = [{"access_key_id": akid(), "status": g.pick(["Active", "Active", "Inactive"]), "created": "20%d-%02d-%02d" % (g.int(21, 24), g.int(1, 12), g.int(1, 28)),
                     "last_used": "2024-11-%02d" % g.int(1, 17) if g.chance(0.8) else None, "last_used_service": g.pick(["s3", "sts", "ec2", "logs", None])}
                    for _ in range(g.int(0, 2))]
            users.append({"user_name": nm, "arn": "arn:aws:iam::418273645091:user/%s" % nm, "created": "20%d-%02d-%02dT10:00:00Z" % (g.int(19, 24), g.int(1, 12), g.int(1, 28)),
                          "password_last_used": "2024-11-%02dT%02d:%02d:00Z" % (g.int(1, 17), g.int(0, 23), g.int(0, 59)) if not nm.startswith("svc-") else None,
                          "mfa_enabled": not nm.startswith("svc-") and g.chance(0.92), "groups": g.picks(["developers", "readonly", "data", "ops", "billing", "oncall"], g.int(1, 3)),
                          "attached_policies": g.picks(["ReadOnlyAccess", "AmazonS3ReadOnlyAccess", "CloudWatchLogsReadOnlyAccess", "acme-deploy", "acme-data-rw"], g.int(0, 2)),
                          "access_keys": keys, "tags": {"team": g.pick(["platform", "data", "payments", "growth", "security"])}})
        if plant:
            users.insert(11, {"user_name": "svc-legacy-export", "arn": "arn:aws:iam::418273645091:user/svc-legacy-export", "created": "2019-05-14T08:22:00Z",
                              "password_last_used": None, "mfa_enabled": False, "groups": ["data"], "attached_policies": ["AmazonS3FullAccess"],
                              "access_keys": [{"access_key_id": plant["key"], "status": "Active", "created": "2019-05-14", "last_used": "2023-09-02",
                                               "last_used_service": "s3"}], "tags": {"team": "data", "owner": "unknown"}})
            users.insert(23, {"user_name": plant["admin"], "arn": "arn:aws:iam::418273645091:user/%s" % plant["admin"], "created": "2022-01-10T10:00:00Z",
                              "password_last_used": "2024-11-15T22:41:00Z", "mfa_enabled": False, "groups": ["ops"], "attached_policies": ["AdministratorAccess"],
                              "access_keys": [], "tags": {"team": "platform"}})
        return jdump({"account_id": "418273645091", "generated_at": iso(t0, False), "users": users}, pretty=True)

    def policy(args):
        stmts = []
        for k in range(g.int(6, 12)):
            stmts.append({"Sid": "S%d%s" % (k, g.upper(4)), "Effect": g.pick(["Allow", "Allow", "Deny"]),
                          "Action": g.picks(["s3:GetObject", "s3:PutObject", "s3:ListBucket", "ec2:Describe*", "logs:*", "kms:Decrypt", "sts:AssumeRole",
                                             "iam:PassRole", "dynamodb:Query", "sqs:SendMessage", "secretsmanager:GetSecretValue"], g.int(1, 4)),
                          "Resource": g.pick(["*", "arn:aws:s3:::acme-data-*", "arn:aws:kms:eu-central-1:418273645091:key/%s" % g.uuid(),
                                              "arn:aws:sqs:eu-central-1:418273645091:payments-*"]),
                          **({"Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}} if g.chance(0.3) else {})})
        return jdump({"PolicyName": args["policy_name"], "DefaultVersionId": "v%d" % g.int(2, 9),
                      "Document": {"Version": "2012-10-17", "Statement": stmts}}, pretty=True)

    def auth_log(args, plant=None):
        host = args["host"]
        t = t0 - dt.timedelta(days=7)
        lines = []
        users = ["ubuntu", "deploy", "admin", "root", "oracle", "test", "git", "postgres", "ftpuser", "user1", "pi", "jenkins"]
        scanners = [g.ip("45.%d." % g.int(1, 200)) for _ in range(6)] + [g.ip("103.%d." % g.int(1, 200)) for _ in range(4)]
        n = args.get("lines", 300)
        burst_at = n * 2 // 3
        for k in range(n):
            t = g.later(t, 1000, 1_800_000)
            pid = g.int(1000, 65000)
            if plant and burst_at <= k < burst_at + 60:
                t = g.later(t, 200, 2500)
                u = g.pick(users)
                line = "sshd[%d]: Failed password for %s%s from %s port %d ssh2" % (pid, "invalid user " if u not in ("ubuntu", "deploy", "root") else "", u, plant, g.int(30000, 65000))
            elif plant and k == burst_at + 60:
                line = "sshd[%d]: Accepted password for deploy from %s port %d ssh2" % (pid, plant, g.int(30000, 65000))
            elif plant and k == burst_at + 61:
                line = "sshd[%d]: pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)" % pid
            else:
                kind = g.wpick([(50, "fail"), (25, "ok"), (10, "close"), (15, "sudo")])
                if kind == "fail":
                    line = "sshd[%d]: Invalid user %s from %s port %d" % (pid, g.pick(users), g.pick(scanners), g.int(30000, 65000))
                elif kind == "ok":
                    line = "sshd[%d]: Accepted publickey for %s from 10.20.%d.%d port %d ssh2: ED25519 SHA256:%s" % (
                        pid, g.pick(["ubuntu", "deploy", "ansible"]), g.int(0, 3), g.int(2, 250), g.int(30000, 65000), g.alnum(43, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
                elif kind == "close":
                    line = "sshd[%d]: Disconnected from authenticating user root %s port %d [preauth]" % (pid, g.pick(scanners), g.int(30000, 65000))
                else:
                    line = "sudo: %s : TTY=pts/%d ; PWD=/home/%s ; USER=root ; COMMAND=/usr/bin/%s" % (
                        g.pick(["ubuntu", "ansible"]), g.int(0, 3), g.pick(["ubuntu", "ansible"]), g.pick(["systemctl restart nginx", "apt-get upgrade -y", "journalctl -u sshd", "docker ps"]))
            lines.append("%s %s %s" % (t.strftime("%b %d %H:%M:%S"), host, line))
        return "\n".join(lines)

    def scan(args):
        target = args["target"]
        rows = []
        if "/" in target:
            out = ["Starting Nmap 7.94 ( https://nmap.org ) at 2024-11-18 09:%02d UTC" % g.int(10, 40)]
            for h in range(g.int(10, 16)):
                ip = "10.20.0.%d" % g.int(2, 250)
                out.append("Nmap scan report for ip-%s.eu-central-1.compute.internal (%s)" % (ip.replace(".", "-"), ip))
                out.append("Host is up (0.00%dms latency)." % g.int(10, 99))
                out.append("PORT     STATE SERVICE    VERSION")
                for p, svc, ver in g.picks([(22, "ssh", "OpenSSH 8.9p1 Ubuntu 3ubuntu0.6"), (80, "http", "nginx 1.24.0"), (443, "ssl/http", "nginx 1.24.0"),
                                            (5432, "postgresql", "PostgreSQL DB 14.11"), (6379, "redis", "Redis key-value store 7.0.12"),
                                            (9100, "http", "Prometheus node_exporter"), (8080, "http-proxy", "Jetty 9.4.51")], g.int(1, 4)):
                    out.append("%-8s open  %-10s %s" % ("%d/tcp" % p, svc, ver))
                out.append("")
            out.append("Nmap done: 256 IP addresses (%d hosts up) scanned in %.2f seconds" % (g.int(10, 16), g.float(20, 90)))
            return "\n".join(out)
        return ("Nmap scan report for %s\nHost is up (0.0012s latency).\nNot shown: 997 filtered tcp ports (no-response)\nPORT    STATE SERVICE VERSION\n"
                "22/tcp  open  ssh     OpenSSH 9.6p1 Ubuntu 3ubuntu13%s (Ubuntu Linux; protocol 2.0)\n| ssh-hostkey:\n|   256 %s (ECDSA)\n|_  256 %s (ED25519)\n"
                "80/tcp  closed http\n443/tcp open  ssl/http nginx 1.24.0 (Ubuntu)\n| ssl-cert: Subject: commonName=bastion.acme.io\n| Not valid after:  2025-01-09T23:59:59\n"
                "Service Info: OS: Linux; CPE: cpe:/o:linux:linux_kernel\n\nNmap done: 1 IP address (1 host up) scanned in 14.%02d seconds" % (
                    target, ".5" if "bastion-02" in target else "", ":".join(g.hex(2) for _ in range(16)), ":".join(g.hex(2) for _ in range(16)), g.int(0, 99)))

    def cves(args, plant=None):
        pkgs = ["libc6", "openssl", "curl", "libxml2", "sudo", "vim", "python3.12", "linux-image-6.8.0-41-generic", "libssh-4", "git", "nginx",
                "libexpat1", "zlib1g", "tar", "less", "bash", "systemd", "gnupg", "wget", "libsqlite3-0"]
        vulns = []
        for p in pkgs:
            for _ in range(g.int(0, 3)):
                vulns.append({"id": "CVE-20%d-%d" % (g.int(22, 24), g.int(20000, 52000)), "package": p, "installed": "%d.%d.%d-%dubuntu%d" % (g.int(1, 9), g.int(0, 20), g.int(0, 9), g.int(1, 5), g.int(1, 9)),
                              "fixed_in": g.pick([None, "%d.%d.%d-%dubuntu%d.1" % (g.int(1, 9), g.int(0, 20), g.int(0, 9), g.int(1, 5), g.int(1, 9))]),
                              "severity": g.pick(["low", "low", "medium", "medium", "high"]), "cvss": g.float(2, 8.8, 1),
                              "summary": g.pick(["Heap buffer overflow in parser", "Use-after-free on error path", "Improper input validation",
                                                 "Denial of service via crafted input", "Information disclosure via timing side channel"])})
        if plant:
            vulns.insert(3, {"id": plant, "package": "openssh-server", "installed": "1:9.6p1-3ubuntu13", "fixed_in": "1:9.6p1-3ubuntu13.3",
                             "severity": "critical", "cvss": 8.1, "summary": "Signal handler race condition in sshd allows unauthenticated remote code execution (glibc-based Linux)"})
        return jdump({"host": args["host"], "os": "Ubuntu 24.04 LTS", "scanned_at": iso(t0, False), "packages_scanned": 812, "vulnerabilities": vulns}, pretty=True)

    def buckets(args, plant=None):
        rows = []
        for n in ["acme-prod-assets", "acme-prod-uploads", "acme-prod-logs", "acme-prod-cloudtrail", "acme-data-lake-raw", "acme-data-lake-curated",
                  "acme-terraform-state", "acme-ci-artifacts", "acme-prod-backups", "acme-staging-assets", "acme-ml-models", "acme-exports-partners",
                  "acme-web-static", "acme-security-findings", "acme-athena-results"]:
            rows.append([n, "eu-central-1", g.pick(["private", "private", "private", "private", "bucket-owner-full-control"]), g.pick(["SSE-KMS", "SSE-S3", "SSE-KMS"]),
                         g.pick(["Enabled", "Enabled", "Suspended"]), "all 4 on" if g.chance(0.85) else "partial", "{:,}".format(g.int(10, 90_000_000)),
                         "%d GiB" % g.int(1, 40000)])
        if plant:
            rows.insert(9, [plant, "eu-central-1", "public-read", "none", "Suspended", "off", "{:,}".format(48_211), "1,904 GiB"])
        return text_table(["bucket", "region", "acl", "encryption", "versioning", "public_access_block", "objects", "size"], rows)

    def sgs(args, plant=None):
        groups = []
        for k in range(g.int(14, 20)):
            rules = []
            for _ in range(g.int(1, 5)):
                p = g.pick([22, 80, 443, 5432, 6379, 9100, 8080])
                rules.append({"protocol": "tcp", "from_port": p, "to_port": p,
                              "sources": [g.pick(["10.20.0.0/16", "sg-" + g.hex(17), "10.30.0.0/16", "pl-" + g.hex(8)])], "description": g.pick(["", "vpn", "internal", "alb"])})
            if g.chance(0.2):
                rules.append({"protocol": "tcp", "from_port": 443, "to_port": 443, "sources": ["0.0.0.0/0"], "description": "public https"})
            groups.append({"group_id": "sg-" + g.hex(17), "name": g.pick(["alb", "web", "api", "db", "cache", "bastion-internal", "monitoring", "batch", "eks-nodes"]) + "-" + g.alnum(4),
                           "vpc_id": args["vpc_id"], "ingress": rules, "egress": [{"protocol": "-1", "destinations": ["0.0.0.0/0"]}]})
        if plant:
            groups.insert(6, {"group_id": plant, "name": "bastion-legacy", "vpc_id": "vpc-0c1d2e3f4a5b6c7d8",
                              "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "sources": ["0.0.0.0/0"], "description": "temp - remove after migration"}],
                              "egress": [{"protocol": "-1", "destinations": ["0.0.0.0/0"]}]})
        return jdump({"vpc_id": args["vpc_id"], "security_groups": groups})

    def trail(args):
        ev = []
        t = t0 - dt.timedelta(days=30)
        for k in range(g.int(40, 70)):
            t = g.later(t, 600_000, 30 * 3600_000)
            nm = g.pick(FIRST).lower()[0] + "." + g.pick(LAST).lower()
            ev.append({"eventTime": iso(t, False), "eventName": args["event_name"], "userIdentity": {"type": "IAMUser", "userName": nm},
                       "sourceIPAddress": g.ip("%d.%d." % (g.pick([62, 84, 91, 178, 213]), g.int(1, 250))), "userAgent": g.pick(["Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)", "aws-cli/2.15.30", "Boto3/1.34.70"]),
                       "additionalEventData": {"MFAUsed": g.pick(["Yes", "Yes", "Yes", "No"])} if args["event_name"] == "ConsoleLogin" else {},
                       "responseElements": {"ConsoleLogin": "Success"} if args["event_name"] == "ConsoleLogin" else {"accessKey": {"status": "Active"}}})
        return jdump({"Events": ev, "NextToken": None}, pretty=True)

    def deactivate(args):
        return jdump({"ok": True, "user_name": args["user_name"], "deactivated_keys": 1, "older_than_days": args["older_than_days"]})

    impl = {"list_iam_users": iam_users, "get_iam_policy": policy, "read_auth_log": auth_log, "scan_ports": scan, "check_cves": cves,
            "list_buckets": buckets, "list_security_groups": sgs, "cloudtrail_lookup": trail, "deactivate_stale_keys": deactivate}
    tools = [
        tool("list_iam_users", "All IAM users with MFA status, policies and access keys.", {}, []),
        tool("get_iam_policy", "Policy document by name.", {"policy_name": S("Policy")}, ["policy_name"]),
        tool("read_auth_log", "Tail /var/log/auth.log on a host.", {"host": S("Host"), "lines": I("Number of lines")}, ["host"]),
        tool("scan_ports", "nmap -sV against a host or CIDR.", {"target": S("Host or CIDR")}, ["target"]),
        tool("check_cves", "Package vulnerability scan of a host.", {"host": S("Host")}, ["host"]),
        tool("list_buckets", "S3 buckets with ACL, encryption and public access block.", {}, []),
        tool("list_security_groups", "Security groups of a VPC.", {"vpc_id": S("vpc-...")}, ["vpc_id"]),
        tool("cloudtrail_lookup", "CloudTrail events by name, last 30 days.", {"event_name": S("Event name")}, ["event_name"]),
        tool("deactivate_stale_keys", "Deactivate a user's access keys not used for N days.", {"user_name": S("IAM user"), "older_than_days": I("Days")}, ["user_name", "older_than_days"]),
    ]
    c = Conv("security-audit-01", "Security audit of an AWS account and bastion hosts: IAM, auth logs, port scans, CVEs, S3, security groups.", tools, impl)
    c.system("You are a cloud security auditor's assistant with read access to the AWS account 418273645091 and the bastion "
             "hosts. Report findings with severity and evidence; only remediate when explicitly asked.")
    u = c.user("Quarterly security audit, tracked in SECOPS-3318. Scope: the prod AWS account and the two bastions. Start with IAM.")
    c.fact("ticket", "SECOPS-3318", u,
           "What was the tracking ticket for this audit? I need it for the report header.",
           "The audit is tracked in {v}.")
    iu = c.act(("list_iam_users", {}, {"plant": {"key": "AKIA4QX7T2M9L3ZB8WQE", "admin": "j.mercer-admin"}}))
    c.fact("stalekey", "AKIA4QX7T2M9L3ZB8WQE", iu,
           "What was the access key id of the stale key that hadn't been used since 2023?",
           "The stale key was {v} on svc-legacy-export (created 2019-05-14, last used 2023-09-02, still Active).")
    c.fact("admin", "j.mercer-admin", iu,
           "Which IAM user had AdministratorAccess attached but no MFA?",
           "That was {v} -- AdministratorAccess attached directly, MFA disabled, console password last used 2024-11-15.")
    c.act(("get_iam_policy", {"policy_name": "acme-data-rw"}), text="Checking the broadest custom policy.")
    c.act(("get_iam_policy", {"policy_name": "acme-deploy"}))
    c.act(("cloudtrail_lookup", {"event_name": "AttachUserPolicy"}), text="And who has been attaching policies directly to users recently.")
    c.say("IAM findings:\n\n- **High**: one human user has `AdministratorAccess` attached directly and **no MFA**, with recent console use.\n"
          "- **High**: a legacy service user has `AmazonS3FullAccess` and an active access key created in 2019 and unused for over a "
          "year, with no owner tag.\n- Medium: several service users have keys older than 1 year.\n- `acme-data-rw` and `acme-deploy` "
          "use wildcard resources in a few statements; `iam:PassRole` on `*` in acme-deploy deserves tightening.")
    c.user("Now the bastions' auth logs.")
    al = c.act(("read_auth_log", {"host": "bastion-01", "lines": 420}, {"plant": "185.220.101.47"}))
    c.fact("ip", "185.220.101.47", al,
           "From which IP address did the successful password login right after the brute-force burst come?",
           "The 'Accepted password for deploy' came from {v}, the same address that produced the burst of ~60 failed passwords just before.")
    c.act(("read_auth_log", {"host": "bastion-02", "lines": 300}), text="And bastion-02 for comparison.")
    c.act(("cloudtrail_lookup", {"event_name": "StartSession"}), text="Checking whether anyone used SSM sessions to the bastions in the same window.")
    c.say("**Critical on bastion-01**: a burst of ~60 failed password attempts from a single external IP, immediately followed by "
          "`Accepted password for deploy` from the same address and a session opened. That means password authentication is "
          "enabled and the `deploy` account has a guessable password. bastion-02 only shows the usual background scanning "
          "(invalid users, preauth disconnects) and key-based logins from the VPN range.")
    c.user("That's bad. Ports and CVEs on the bastion, and a sweep of the bastion subnet.")
    c.act(("scan_ports", {"target": "bastion-01.acme.io"}))
    cv = c.act(("check_cves", {"host": "bastion-01"}, {"plant": "CVE-2024-6387"}))
    c.fact("cve", "CVE-2024-6387", cv,
           "What was the CVE id of the critical OpenSSH finding on bastion-01?",
           "It was {v} in openssh-server 1:9.6p1-3ubuntu13 (signal handler race, unauthenticated RCE), fixed in 1:9.6p1-3ubuntu13.3.")
    c.act(("scan_ports", {"target": "10.20.0.0/24"}), text="Sweeping the subnet.")
    c.act(("scan_ports", {"target": "bastion-02.acme.io"}), text="And bastion-02's exposure.")
    c.say("bastion-01 exposes SSH and HTTPS. The package scan shows a **critical OpenSSH vulnerability** (unauthenticated RCE, "
          "fix available in -ubuntu13.3) plus the usual low/medium backlog. The subnet sweep shows Redis (6379) and PostgreSQL "
          "(5432) reachable from the bastion subnet on a few hosts -- acceptable only if security groups restrict sources.")
    c.user("S3 next.")
    bk = c.act(("list_buckets", {}, {"plant": "acme-prod-backups-legacy"}))
    c.fact("bucket", "acme-prod-backups-legacy", bk,
           "Which S3 bucket was public-read with no encryption?",
           "{v}: ACL public-read, no encryption, versioning suspended, public access block off, ~48k objects / 1.9 TiB.")
    c.say("**Critical**: one backup bucket is `public-read` with no encryption and the public access block off, holding ~1.9 TiB. "
          "Everything else is private and encrypted; one bucket has versioning suspended and two have only a partial public "
          "access block.")
    c.user("Security groups in the prod VPC.")
    sg = c.act(("list_security_groups", {"vpc_id": "vpc-0c1d2e3f4a5b6c7d8"}, {"plant": "sg-0a7f3c9e5d1b24680"}))
    c.fact("sg", "sg-0a7f3c9e5d1b24680", sg,
           "Which security group id allowed SSH from 0.0.0.0/0?",
           "{v} ('bastion-legacy', tcp/22 from 0.0.0.0/0, description 'temp - remove after migration').")
    c.act(("list_security_groups", {"vpc_id": "vpc-04e5f6a7b8c9d0e1f"}), text="Comparing with the staging VPC.")
    c.say("One legacy bastion group allows SSH from 0.0.0.0/0 ('temp - remove after migration'), which explains how the brute "
          "force reached bastion-01. A few groups allow 443 from anywhere for load balancers, which is expected.")
    c.user("CloudTrail: console logins without MFA and access-key creation in the last 30 days.")
    c.act(("cloudtrail_lookup", {"event_name": "ConsoleLogin"}))
    c.act(("cloudtrail_lookup", {"event_name": "CreateAccessKey"}), text="Now key creation events.")
    c.act(("cloudtrail_lookup", {"event_name": "PutBucketAcl"}), text="And ACL changes on buckets, for the public bucket.")
    c.say("A quarter of console logins in the last 30 days were without MFA, from several users; access-key creation events look "
          "routine (CI and data users). No ACL change on the public backup bucket in the last 30 days, so it has been public for "
          "longer than CloudTrail's lookup window. CloudTrail wouldn't show OS-level activity on the bastion.")
    c.recall("ip", prefix="I'm paging the incident responder about bastion-01 right now. ")
    c.user("Deactivate the legacy service user's keys older than 365 days. Leave the rest; I'll coordinate with owners.")
    c.act(("deactivate_stale_keys", {"user_name": "svc-legacy-export", "older_than_days": 365}))
    c.say("Done: one key deactivated on svc-legacy-export (deactivated, not deleted, so it can be re-enabled if something breaks).")
    c.user("Show me the acme-deploy policy again, I want to paste it into the report.")
    c.act(("get_iam_policy", {"policy_name": "acme-deploy"}))
    c.say("Same document as before; the statement to tighten is the `iam:PassRole` on `*`.")
    c.user("Check bastion-02's CVEs too, for completeness.")
    c.act(("check_cves", {"host": "bastion-02"}))
    c.say("bastion-02 has only low/medium findings; it's on a newer OpenSSH build without the critical issue.")
    c.recall("cve")
    c.recall("sg")
    c.recall("bucket")
    c.recall("admin", prefix="Now the IAM section. ")
    c.recall("stalekey")
    c.recall("ticket")
    return c


# ============================================================================
# 10. research-search-01: literature search on context management for agents
# ============================================================================

TOPIC_PHRASES = [
    "long-horizon tool-using agents", "context window management", "observation masking", "LLM-based summarization of history",
    "retrieval-augmented memory", "KV-cache eviction", "prompt compression", "token budget", "recency heuristics",
    "attention sinks", "hierarchical summaries", "episodic memory", "tool output truncation", "semantic deduplication",
    "needle-in-a-haystack recall", "multi-turn software engineering tasks", "cost per solved task", "trajectory length"]
SENTENCES = [
    "We study how {a} interacts with {b} in {c}.",
    "Our experiments show that {a} reduces cost substantially while preserving accuracy on {c}.",
    "Surprisingly, simple {a} matches or outperforms {b} on most benchmarks.",
    "We find that {b} introduces compounding errors when summaries are re-summarized.",
    "The benefits of {a} diminish as {c} grows beyond several hundred turns.",
    "We release code and data to facilitate research on {a}.",
    "Ablations indicate that the choice of {b} matters more than model size.",
    "Prior work on {a} has focused on single-turn settings, leaving {c} under-explored.",
]


def conv_research_01(seed):
    g = G(seed)

    def sent():
        return g.pick(SENTENCES).format(a=g.pick(TOPIC_PHRASES), b=g.pick(TOPIC_PHRASES), c=g.pick(TOPIC_PHRASES))

    def para(n):
        return " ".join(sent() for _ in range(n))

    def title():
        return g.pick(["On", "Rethinking", "Towards", "Scaling", "Understanding", "Efficient", "Less is More:"]) + " " + \
            g.pick(TOPIC_PHRASES).title() + " " + g.pick(["for", "in", "with"]) + " " + g.pick(TOPIC_PHRASES).title()

    def web_search(args, plant=None):
        res = []
        for k in range(args.get("num", 12)):
            host = g.pick(["medium.com", "towardsdatascience.com", "github.com", "arxiv.org", "huggingface.co", "news.ycombinator.com",
                           "www.reddit.com", "lilianweng.github.io", "blog.langchain.dev", "docs.anthropic.com", "openreview.net"])
            slug = "-".join(g.pick(TOPIC_PHRASES).split()[:3]).lower()
            res.append({"rank": k + 1, "title": title(), "url": "https://%s/%s-%s" % (host, slug, g.alnum(6)), "snippet": para(2),
                        "published": "2024-%02d-%02d" % (g.int(1, 10), g.int(1, 28))})
        if plant:
            res.insert(4, {"rank": 5, "title": "KV eviction heuristics that actually work (and three that don't)", "url": plant,
                           "snippet": "A practitioner's comparison of H2O, StreamingLLM-style sinks and recency windows on real agent traces.",
                           "published": "2024-06-03"})
            for k, r in enumerate(res):
                r["rank"] = k + 1
        return jdump({"query": args["query"], "results": res}, pretty=True)

    def arxiv(args):
        entries = []
        for k in range(args.get("max_results", 10)):
            aid = "24%02d.%05d" % (g.int(1, 10), g.int(1000, 29999))
            authors = "".join("<author><name>%s</name></author>" % g.person() for _ in range(g.int(2, 7)))
            entries.append("<entry>\n  <id>http://arxiv.org/abs/%sv%d</id>\n  <updated>2024-%02d-%02dT%02d:00:00Z</updated>\n  <title>%s</title>\n  <summary>%s</summary>\n  %s\n  <category term=\"%s\"/>\n</entry>" % (
                aid, g.int(1, 3), g.int(1, 10), g.int(1, 28), g.int(0, 23), title(), para(5), authors, g.pick(["cs.CL", "cs.LG", "cs.AI", "cs.SE"])))
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n<title>arXiv Query: %s</title>\n<opensearch:totalResults>%d</opensearch:totalResults>\n%s\n</feed>" % (
            args["query"], g.int(80, 900), "\n".join(entries))

    def get_paper(args, plant=None):
        plant = plant or {}
        authors = [{"name": g.person(), "affiliation": g.pick(["TU Munich", "ETH Zurich", "University of Edinburgh", "KAIST", "Mila", "CMU", "Tsinghua University", "INRIA"]),
                    "corresponding": False} for _ in range(g.int(3, 7))]
        if "author" in plant:
            authors.insert(1, {"name": plant["author"], "affiliation": "Universidad Politécnica de Madrid", "corresponding": True})
        sections = [{"heading": h, "text": para(g.int(6, 10))} for h in ["1 Introduction", "2 Related Work", "3 Method", "4 Experimental Setup", "5 Results", "6 Analysis", "7 Limitations"]]
        if "bench" in plant:
            sections[3]["text"] += " We introduce %s, a benchmark of 512 multi-session conversations in which facts introduced early must be recalled hundreds of turns later." % plant["bench"]
        tables = [{"caption": "Table %d: %s" % (k + 1, g.pick(["Main results", "Cost analysis", "Ablation on window size", "Per-task breakdown"])),
                   "rows": [[g.pick(["raw", "masking", "summarize", "hybrid", "retrieval", "truncate"]), "%.1f" % g.float(20, 80, 1), "%.2f" % g.float(0.1, 3)] for _ in range(g.int(6, 10))]}
                  for k in range(3)]
        refs = ["%s et al. (%d). %s. %s." % (g.pick(LAST), g.int(2017, 2024), title(), g.pick(["NeurIPS", "ICLR", "ACL", "EMNLP", "arXiv", "ICML", "TMLR"])) for _ in range(g.int(35, 60))]
        return jdump({"paper_id": args["paper_id"], "title": plant.get("title") or title(), "year": 2024,
                      "doi": plant.get("doi") or "10.48550/arXiv.%s" % args["paper_id"].split(":")[-1],
                      "authors": authors, "abstract": para(6), "sections": sections, "tables": tables, "references": refs,
                      "citation_count": g.int(0, 140)}, pretty=True)

    def fetch_page(args, plant=None):
        body = "".join("<p>%s</p>\n" % para(g.int(3, 6)) for _ in range(g.int(10, 16)))
        if plant:
            body += "<p>In our production agent, switching from full history to observation masking reduced token usage by %s with no measurable loss in task success over 2,000 tickets.</p>\n" % plant
        code = "<pre><code>def mask_observations(messages, keep_last=10):\n    out = []\n    for i, m in enumerate(messages):\n        if m['role'] == 'tool' and i < len(messages) - keep_last:\n            out.append({**m, 'content': '[output omitted]'})\n        else:\n            out.append(m)\n    return out\n</code></pre>\n"
        nav = "<nav>" + " | ".join("<a href=\"/%s\">%s</a>" % (x.lower(), x) for x in ["Home", "Posts", "Talks", "About", "RSS"]) + "</nav>\n"
        return "<!doctype html>\n<html><head><title>%s</title><meta name=\"description\" content=\"%s\"></head>\n<body>\n%s<article>\n<h1>%s</h1>\n<p class=\"byline\">by %s, %s</p>\n%s%s</article>\n<footer>&copy; 2024</footer>\n</body></html>" % (
            title(), sent(), nav, title(), g.person(), "2024-%02d-%02d" % (g.int(1, 10), g.int(1, 28)), body, code)

    def save_note(args):
        return jdump({"ok": True, "note_id": "note_" + g.alnum(10), "chars": len(args["content"])})

    impl = {"web_search": web_search, "arxiv_search": arxiv, "get_paper": get_paper, "fetch_page": fetch_page, "save_note": save_note}
    tools = [
        tool("web_search", "Web search; returns ranked results with snippets.", {"query": S("Query"), "num": I("Results")}, ["query"]),
        tool("arxiv_search", "arXiv API search (Atom XML).", {"query": S("Query"), "max_results": I("Max results")}, ["query"]),
        tool("get_paper", "Full-text paper record (sections, tables, references) by id.", {"paper_id": S("e.g. arxiv:2406.01234")}, ["paper_id"]),
        tool("fetch_page", "Fetch a web page (HTML).", {"url": S("URL")}, ["url"]),
        tool("save_note", "Save a research note.", {"title": S("Title"), "content": S("Markdown")}, ["title", "content"]),
    ]
    c = Conv("research-search-01", "Literature research on context management for LLM agents: web and arXiv search, papers, blog posts, notes.", tools, impl)
    c.system("You are a research assistant. Search the web and arXiv, read papers and posts, and keep precise notes with "
             "sources. Distinguish claims from evidence.")
    u = c.user("I'm presenting at our reading group (slot RG-2024-11) on context management for LLM agents: summarisation vs "
               "observation masking vs retrieval vs KV-cache tricks. Help me find and digest the literature.")
    c.fact("slot", "RG-2024-11", u,
           "Which reading-group slot did I say this was for?",
           "You said it's for reading-group slot {v}.")
    ws = c.act(("web_search", {"query": "LLM agent context window management observation masking vs summarization", "num": 12},
                {"plant": "https://blog.example-ml.org/posts/2024/kv-eviction-heuristics"}))
    c.fact("blogurl", "https://blog.example-ml.org/posts/2024/kv-eviction-heuristics", ws,
           "In the very first web search there was a practitioner post about KV eviction heuristics. What was its URL?",
           "That post was at {v} ('KV eviction heuristics that actually work (and three that don't)', June 2024).")
    c.act(("arxiv_search", {"query": "context compression long-horizon LLM agents", "max_results": 15}), text="Now arXiv.")
    c.say("The web results mix blog posts, GitHub repos and a few papers; the arXiv query returns a good set of 2024 preprints "
          "on context compression, summarisation and memory for agents. I'll open the three most relevant papers first: one on "
          "observation masking vs summarisation, one on hierarchical summaries, and one introducing a long-horizon recall benchmark.")
    c.user("Go ahead.")
    p1 = c.act(("get_paper", {"paper_id": "arxiv:2408.11823"}, {"plant": {"doi": "10.5555/3618408.3619902",
                                                                         "title": "Masking Beats Summarizing? Cheap Observation Pruning for Long-Horizon Agent Context Management"}}))
    c.fact("doi", "10.5555/3618408.3619902", p1,
           "What was the DOI of the observation-masking-vs-summarization paper?",
           "Its DOI is {v}.")
    p2 = c.act(("get_paper", {"paper_id": "arxiv:2405.07719"}, {"plant": {"author": "Ines Valbuena-Ortiz"}}),
               text="Now the hierarchical-summary paper.")
    c.fact("author", "Ines Valbuena-Ortiz", p2,
           "Who was the corresponding author on the hierarchical-summary paper?",
           "The corresponding author was {v} (Universidad Politécnica de Madrid).")
    c.say("Paper 1 argues that masking old tool observations (keeping reasoning and actions) is about as effective as LLM "
          "summarisation at a fraction of the cost, with summarisation sometimes *lengthening* trajectories. Paper 2 proposes "
          "hierarchical summaries with periodic re-summarisation and reports compounding errors past a few hundred turns.")
    c.user("What do practitioners say? Open a couple of the blog posts from the search.")
    blogs = [r["url"] for r in json.loads(c.messages[ws]["content"])["results"] if "example-ml" not in r["url"]][:3]
    bp = c.act(("fetch_page", {"url": blogs[0]}, {"plant": "37.4%"}))
    c.fact("pct", "37.4%", bp,
           "In the first blog post you opened, by what percentage did switching to observation masking reduce token usage?",
           "The post reported a {v} reduction in token usage with no measurable loss in task success over 2,000 tickets.")
    c.act(("fetch_page", {"url": blogs[1]}), text="Second post.")
    c.act(("web_search", {"query": "mask_observations keep_last agent github implementation", "num": 8}),
          text="Looking for the reference implementation the first post mentions.")
    c.say("Practitioners largely echo the masking result: the first post reports a sizeable token reduction from observation "
          "masking in a production support agent, with a short reference implementation (`mask_observations(keep_last=10)`). "
          "The second post is more general and discusses truncation and retrieval trade-offs.")
    c.user("Find benchmarks that test recall of early facts in long agent sessions.")
    c.act(("web_search", {"query": "benchmark long-horizon agent memory recall early facts multi-session", "num": 10}))
    p3 = c.act(("get_paper", {"paper_id": "arxiv:2410.02188"}, {"plant": {"bench": "LongChat-Recall-512"}}),
               text="One result introduces a dedicated benchmark; opening it.")
    c.fact("bench", "LongChat-Recall-512", p3,
           "What was the name of the benchmark introduced in the recall paper?",
           "The benchmark is {v}: 512 multi-session conversations where early facts must be recalled hundreds of turns later.")
    c.say("That paper introduces a benchmark of 512 multi-session conversations that requires recalling facts introduced "
          "hundreds of turns earlier; it's the closest match to what you want to discuss.")
    c.user("Now the KV-cache side.")
    c.act(("arxiv_search", {"query": "KV cache eviction attention sinks long context", "max_results": 12}))
    c.act(("get_paper", {"paper_id": "arxiv:2406.09981"}), text="Opening the most cited one.")
    c.act(("get_paper", {"paper_id": "arxiv:2407.14402"}), text="And a second, more recent one.")
    c.say("KV-cache methods operate below the prompt level: they evict or compress attention state (recency windows, "
          "heavy-hitter tokens, attention sinks). They save memory/latency but don't reduce billed input tokens with API "
          "models, so they're complementary to masking/summarisation rather than a substitute.")
    c.user("Save a note for each of the two camps (prompt-level vs KV-level) with the key claims.")
    c.act(("save_note", {"title": "Prompt-level context management", "content": "- Observation masking ~ summarisation in solve rate at lower cost (paper 1)\n- Hierarchical summaries: compounding errors past a few hundred turns (paper 2)\n- Practitioner report: large token savings from masking\n- Benchmark for long-horizon recall exists (paper 3)"}))
    c.act(("save_note", {"title": "KV-level methods", "content": "- Recency windows, heavy hitters, attention sinks\n- Save memory/latency, not API input tokens\n- Complementary to prompt-level methods"}))
    c.say("Both notes saved.")
    c.user("Re-run the first arXiv search; I want to pick two more papers for the handout.")
    c.act(("arxiv_search", {"query": "context compression long-horizon LLM agents", "max_results": 15}))
    c.act(("get_paper", {"paper_id": "arxiv:2409.04417"}), text="Same 15 results as before. Opening the retrieval-memory paper from that list.")
    c.act(("get_paper", {"paper_id": "arxiv:2403.12968"}), text="And the prompt-compression one.")
    c.say("Both fit the handout: the retrieval-memory paper stores past observations in a vector index and re-injects the top-k "
          "per step; the prompt-compression paper drops low-information tokens with a small scorer model. They cover the two "
          "approaches we hadn't read in full.")
    c.user("Open the third blog post too, then I'm done reading.")
    c.act(("fetch_page", {"url": blogs[2]}))
    c.act(("web_search", {"query": "retrieval memory agent vector store tutorial evaluation", "num": 8}), text="Checking whether that tutorial's claims were evaluated anywhere.")
    c.say("The third post is a tutorial on retrieval-based memory with a vector store; useful as an example, light on evidence, "
          "and the follow-up search found no independent evaluation of it.")
    c.recall("doi", prefix="Building the handout's reference list. ")
    c.recall("author")
    c.recall("bench")
    c.recall("pct", prefix="For my slide on practitioner evidence: ")
    c.recall("blogurl")
    c.recall("slot")
    return c


# ============================================================================
# 11. ci-pipeline-01: red main branch in a Rust workspace (long conversation)
# ============================================================================

CRATES = ["proc-macro2 v1.0.86", "unicode-ident v1.0.12", "libc v0.2.155", "quote v1.0.36", "syn v2.0.72", "cfg-if v1.0.0",
          "autocfg v1.3.0", "memchr v2.7.4", "once_cell v1.19.0", "serde v1.0.204", "serde_derive v1.0.204", "itoa v1.0.11",
          "ryu v1.0.18", "serde_json v1.0.121", "log v0.4.22", "bitflags v2.6.0", "smallvec v1.13.2", "crossbeam-utils v0.8.20",
          "crossbeam-queue v0.3.11", "parking_lot_core v0.9.10", "parking_lot v0.12.3", "lock_api v0.4.12", "scopeguard v1.2.0",
          "bytes v1.6.1", "pin-project-lite v0.2.14", "mio v1.0.1", "socket2 v0.5.7", "tokio-macros v2.4.0", "tokio v1.39.2",
          "futures-core v0.3.30", "futures-util v0.3.30", "slab v0.4.9", "http v1.1.0", "httparse v1.9.4", "hyper v1.4.1",
          "tracing-core v0.1.32", "tracing v0.1.40", "thiserror v1.0.63", "anyhow v1.0.86", "rand_core v0.6.4", "rand v0.8.5",
          "getrandom v0.2.15", "ppv-lite86 v0.2.17", "rand_chacha v0.3.1", "regex-syntax v0.8.4", "regex-automata v0.4.7",
          "regex v1.10.5", "aho-corasick v1.1.3", "cc v1.1.6", "curl-sys v0.4.73+curl-8.8.0", "curl v0.4.46", "cbindgen v0.26.0",
          "toml v0.8.16", "indexmap v2.2.6", "hashbrown v0.14.5", "equivalent v1.0.1", "harbor-macros v0.9.4 (/work/harbor/crates/macros)",
          "harbor-core v0.9.4 (/work/harbor/crates/core)", "harbor-ffi v0.9.4 (/work/harbor/crates/ffi)", "harbor v0.9.4 (/work/harbor)"]
RUST_MODULES = ["mailbox", "scheduler", "context", "model", "agent", "topic", "runtime", "tools", "ffi", "budget"]


def conv_ci_01(seed):
    g = G(seed)
    t0 = dt.datetime(2024, 8, 14, 7, 0)
    authors = [("Jana Horvath", "j.horvath"), ("Amara Osei", "a.osei"), ("Chen Zhang", "c.zhang"), ("Elif Yilmaz", "e.yilmaz"),
               ("Bruno Costa", "b.costa")]
    runs = []
    t = t0 - dt.timedelta(days=3)
    for k in range(30):
        t = t + dt.timedelta(minutes=g.int(40, 240))
        a = g.pick(authors)
        runs.append({"id": 9000000000 + g.int(10**7, 10**8), "sha": g.hex(40), "t": t, "author": a, "status": "success"})
    runs.sort(key=lambda r: r["t"])
    first_red = 14
    runs[first_red]["sha"] = "e41b9c2" + g.hex(33)
    for k in range(first_red, 30):
        runs[k]["status"] = g.pick(["failure", "failure", "success", "failure"])
    runs[first_red]["status"] = "failure"
    runs[-1]["status"] = "failure"
    jobs = {}
    for r in runs:
        jobs[r["id"]] = [{"id": r["id"] * 10 + j, "name": n, "labels": ["ubuntu-22.04-8core"] if j < 4 else ["ubuntu-22.04"],
                          "status": "success"} for j, n in enumerate(["fmt+clippy", "test (debug)", "test (release)", "asan+valgrind", "bundle"])]
        if r["status"] == "failure":
            jobs[r["id"]][g.pick([1, 1, 2, 3])]["status"] = "failure"
    for j in jobs[runs[-1]["id"]]:
        j["status"] = "failure" if j["name"] == "test (debug)" else "success"
    job_status = {j["id"]: j["status"] for js in jobs.values() for j in js}

    def ts(t):
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d%dZ" % (t.microsecond, g.int(0, 9))

    def list_runs(args, plant=None):
        out = []
        for r in reversed(runs[-args.get("limit", 20):]):
            out.append({"id": r["id"], "workflow": "ci", "branch": "main", "event": "push", "head_sha": r["sha"],
                        "head_commit": {"author": {"name": r["author"][0], "email": r["author"][1] + "@harbor.dev"},
                                        "message": g.pick(["scheduler: preempt on urgent messages", "mailbox: lock-free bounded queue",
                                                           "context: token estimates with calibration", "ffi: regenerate header", "ci: cache cargo registry",
                                                           "bench: 10k agents", "model: stream SSE deltas", "docs: README quick start", "tests: C mailbox test"])},
                        "status": "completed", "conclusion": r["status"], "created_at": iso(r["t"], False),
                        "duration_s": g.int(900, 2400), "run_attempt": 1, "html_url": "https://github.com/harbor-rs/harbor/actions/runs/%d" % r["id"]})
        return jdump({"total_count": len(runs), "workflow_runs": out}, pretty=True)

    def list_jobs(args):
        rid = args["run_id"]
        out = []
        for j in jobs[rid]:
            steps = [{"number": k + 1, "name": s, "conclusion": "success", "duration_s": g.int(1, 400)} for k, s in enumerate(
                ["Set up job", "Run actions/checkout@v4", "Run dtolnay/rust-toolchain@stable", "Run Swatinem/rust-cache@v2", "Build", "Test", "Post Run Swatinem/rust-cache@v2", "Complete job"])]
            if j["status"] == "failure":
                steps[5]["conclusion"] = "failure"
            out.append({"id": j["id"], "name": j["name"], "status": "completed", "conclusion": j["status"], "labels": j["labels"],
                        "runner_group": "eu-large" if "8core" in j["labels"][0] else "hosted", "steps": steps})
        return jdump({"run_id": rid, "jobs": out}, pretty=True)

    def job_log(args, plant=None):
        jid = args["job_id"]
        kind = (plant or {}).get("kind", "flaky" if job_status.get(jid) == "failure" else "pass")
        t = t0 + dt.timedelta(minutes=g.int(0, 600))
        L = []

        def add(s):
            nonlocal t
            t = g.later(t, 5, 900)
            L.append(ts(t) + " " + s)
        add("Requested labels: ubuntu-22.04-8core")
        add("Job defined at: harbor-rs/harbor/.github/workflows/ci.yml@refs/heads/main")
        add("Waiting for a runner to pick up this job...")
        add("Job is about to start running on the runner: %s (organization)" % ((plant or {}).get("runner") or "gha-runner-eu-%02d" % g.pick([3, 5, 7, 9, 11, 21, 22])))
        add("Current runner version: '2.317.0'")
        add("##[group]Operating System")
        add("Ubuntu 22.04.4 LTS")
        add("##[endgroup]")
        add("##[group]Run actions/checkout@v4")
        add("Syncing repository: harbor-rs/harbor")
        add("##[endgroup]")
        add("##[group]Run Swatinem/rust-cache@v2")
        add("Cache Configuration")
        add("... Restoring cache ...")
        add("Cache restored from key: v2-cargo-Linux-%s" % g.hex(16))
        add("Cache Size: ~%d MB (%d B)" % (g.int(900, 1800), g.int(900_000_000, 1_800_000_000)))
        add("##[endgroup]")
        add("##[group]Run cargo build --workspace --all-targets --locked")
        for cr in CRATES:
            add("   Compiling %s" % cr)
            if kind == "disk" and cr.startswith("curl-sys"):
                add("error: failed to write /home/runner/work/harbor/harbor/target/debug/deps/libcurl_sys-%s.rlib: No space left on device (os error 28)" % g.hex(16))
                add("")
                add("error: could not compile `curl-sys` (lib) due to 1 previous error")
                add("warning: build failed, waiting for other jobs to finish...")
                add("##[error]Process completed with exit code 101.")
                add("##[group]Run df -h /home/runner")
                add("Filesystem      Size  Used Avail Use% Mounted on")
                add("/dev/root        72G   72G     0 100% /")
                add("##[endgroup]")
                return "\n".join(L)
        add("    Finished `dev` profile [unoptimized + debuginfo] target(s) in %dm %02ds" % (g.int(2, 6), g.int(0, 59)))
        add("##[endgroup]")
        add("##[group]Run cargo test --workspace -q")
        total = 412
        for mod in ["harbor-core", "harbor-ffi", "harbor"]:
            add("     Running unittests src/lib.rs (target/debug/deps/%s-%s)" % (mod.replace("-", "_"), g.hex(16)))
            add("")
            add("running %d tests" % total)
            for k in range(0, total, 88):
                n = min(88, total - k)
                dots = "".join("." for _ in range(n))
                if kind == "flaky" and mod == "harbor-core" and k == 176:
                    dots = dots[:40] + "F" + dots[41:]
                add(dots + " %d/%d" % (k + n, total))
            if kind == "flaky" and mod == "harbor-core":
                add("failures:")
                add("")
                add("---- mailbox::tests::close_wakes_all_receivers stdout ----")
                add("thread 'mailbox::tests::close_wakes_all_receivers' panicked at crates/core/src/mailbox.rs:%d:9:" % g.pick([812, 814]))
                add("assertion `left == right` failed: all receivers must observe CLOSED")
                add("  left: %d" % g.pick([2, 3]))
                add(" right: 4")
                add("note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace")
                add("")
                add("failures:")
                add("    mailbox::tests::close_wakes_all_receivers")
                add("")
                add("test result: FAILED. %d passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in %.2fs" % (total - 4, g.float(30, 60)))
                add("error: test failed, to rerun pass `-p harbor-core --lib`")
                add("##[error]Process completed with exit code 101.")
                return "\n".join(L)
            add("test result: ok. %d passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in %.2fs" % (total - 3, g.float(10, 60)))
            add("")
            total = g.int(40, 120)
        add("##[endgroup]")
        add("Post job cleanup.")
        return "\n".join(L)

    def test_report(args, plant=None):
        cases = []
        for k in range(260):
            mod = g.pick(RUST_MODULES)
            name = "%s::tests::%s_%s_%d" % (mod, g.pick(["send", "recv", "close", "spawn", "preempt", "estimate", "stream", "parse", "drop", "budget"]),
                                           g.pick(["basic", "under_load", "with_deadline", "zero_copy", "in_order", "after_close", "timeout", "roundtrip"]), k)
            tm = g.float(0.001, 4.5, 3)
            cases.append('    <testcase classname="harbor_core" name="%s" time="%.3f"/>' % (name, tm))
        cases.insert(30, '    <testcase classname="harbor_core" name="mailbox::tests::close_wakes_all_receivers" time="0.412">\n'
                         '      <failure message="assertion `left == right` failed: all receivers must observe CLOSED" type="panic">left: 3, right: 4</failure>\n    </testcase>')
        if plant:
            cases.insert(140, '    <testcase classname="harbor" name="%s" time="187.412"/>' % plant)
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="cargo test" tests="%d" failures="1" time="%.3f">\n  <testsuite name="harbor-core" tests="%d">\n%s\n  </testsuite>\n</testsuites>' % (
            len(cases), g.float(200, 400), len(cases), "\n".join(cases)))

    def artifacts(args, plant=None):
        rows = []
        for n in ["target/release/libharbor.so", "target/release/libharbor.a", "include/harbor.h", "coverage/lcov.info", "bench/results.json",
                  "target/debug/test-logs.tar.gz", "valgrind/memcheck.xml", "asan/report.txt", "docs/html.tar.gz", "target/release/harbor-cli"]:
            rows.append([n, "{:,}".format(g.int(4_000, 90_000_000)), "2024-08-%02dT%02d:%02d:%02dZ" % (14, g.int(7, 12), g.int(0, 59), g.int(0, 59)), "sha256:" + g.hex(16)])
        if plant:
            rows.insert(3, [plant, "0", "2024-08-14T10:41:07Z", "sha256:e3b0c44298fc1c14"])
        return text_table(["path", "bytes", "uploaded_at", "digest"], rows)

    def caches(args, plant=None):
        rows = []
        for k in range(g.int(18, 26)):
            rows.append(["%s%s" % (args["key_prefix"], g.hex(16)), g.pick(["refs/heads/main", "refs/pull/%d/merge" % g.int(400, 520)]),
                         "%.1f GB" % g.float(0.6, 1.9, 1), "2024-08-%02d" % g.int(5, 14), "2024-08-%02d" % g.int(10, 14)])
        if plant:
            rows.insert(7, [plant, "refs/heads/main", "9.8 GB", "2024-08-12", "2024-08-14"])
        return text_table(["key", "ref", "size", "created", "last_accessed"], rows) + "\nTotal: %.1f GB of 10 GB repository limit" % g.float(9.6, 9.99)

    def get_file(args):
        lines = ["//! %s: bounded mailboxes with blocking and non-blocking operations." % args["path"], "",
                 "use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};", "use std::sync::{Arc, Condvar, Mutex};",
                 "use std::time::{Duration, Instant};", "", "use crossbeam_queue::ArrayQueue;", ""]
        for k in range(g.int(14, 20)):
            fn = "%s_%s" % (g.pick(["try", "send", "recv", "close", "park", "wake", "drain", "reserve"]), g.pick(["inner", "slow", "fast", "all", "one", "deadline"]))
            lines += ["/// %s" % sent_doc(g), "pub(crate) fn %s_%d(mb: &Mailbox, deadline: Option<Instant>) -> Result<usize, Status> {" % (fn, k),
                      "    let mut spins = 0u32;", "    loop {", "        if mb.closed.load(Ordering::Acquire) {", "            return Err(Status::Closed);", "        }",
                      "        if let Some(n) = mb.queue.len().checked_sub(%d) {" % g.int(0, 3), "            return Ok(n);", "        }",
                      "        spins += 1;", "        if spins < SPIN_LIMIT {", "            std::hint::spin_loop();", "            continue;", "        }",
                      "        let guard = mb.lock.lock().unwrap();", "        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));",
                      "        let _g = match timeout {", "            Some(t) => mb.cv.wait_timeout(guard, t).unwrap().0,", "            None => mb.cv.wait(guard).unwrap(),", "        };",
                      "    }", "}", ""]
        lines += ["#[cfg(test)]", "mod tests {", "    use super::*;", ""]
        for k in range(g.int(10, 16)):
            lines += ["    #[test]", "    fn %s_%d() {" % (g.pick(["send_recv", "bounded_busy", "deadline_expires", "drop_releases"]), k),
                      "        let mb = Mailbox::new(%d);" % g.pick([1, 4, 16, 64]), "        assert_eq!(mb.try_send(Msg::new(%d)), Ok(()));" % k,
                      "        assert_eq!(mb.try_recv().map(|m| m.id()), Ok(%d));" % k, "    }", ""]
        lines += ["    #[test]", "    fn close_wakes_all_receivers() {", "        let mb = Arc::new(Mailbox::new(4));", "        let woke = Arc::new(AtomicUsize::new(0));",
                  "        let hs: Vec<_> = (0..4).map(|_| {", "            let (mb, woke) = (mb.clone(), woke.clone());",
                  "            std::thread::spawn(move || { if mb.recv(None) == Err(Status::Closed) { woke.fetch_add(1, Ordering::SeqCst); } })",
                  "        }).collect();", "        std::thread::sleep(Duration::from_millis(5)); // give receivers time to park",
                  "        mb.close();", "        for h in hs { h.join().unwrap(); }", "        assert_eq!(woke.load(Ordering::SeqCst), 4, \"all receivers must observe CLOSED\");", "    }", "}"]
        return "\n".join("%4d | %s" % (i + 1, l) for i, l in enumerate(lines))

    def get_commit(args):
        diff = ["diff --git a/crates/core/src/mailbox.rs b/crates/core/src/mailbox.rs", "index %s..%s 100644" % (g.hex(7), g.hex(7)),
                "--- a/crates/core/src/mailbox.rs", "+++ b/crates/core/src/mailbox.rs", "@@ -402,14 +402,19 @@ impl Mailbox {"]
        for k in range(40):
            diff.append(g.pick(["+", "-", " ", " "]) + "    " + g.pick(["let n = self.queue.len();", "self.cv.notify_one();", "self.cv.notify_all();",
                                                                     "if self.closed.swap(true, Ordering::AcqRel) { return; }", "drop(guard);",
                                                                     "// wake parked receivers", "self.waiters.fetch_sub(1, Ordering::Release);"]))
        return jdump({"sha": args["sha"], "author": "Chen Zhang <c.zhang@harbor.dev>", "date": "2024-08-12T16:20:44Z",
                      "message": "mailbox: spin-then-park receivers; close() wakes one waiter per slot", "stats": {"additions": 61, "deletions": 23},
                      "files": ["crates/core/src/mailbox.rs"], "patch": "\n".join(diff)}, pretty=True)

    def rerun(args):
        return jdump({"ok": True, "job_id": args["job_id"], "new_run_attempt": 2, "queued_at": iso(t0 + dt.timedelta(hours=5), False)})

    def runner_pool(args):
        return jdump({"group": args["group"], "runners": 24, "online": 23, "busy": g.int(4, 18), "labels": ["ubuntu-22.04-8core"],
                      "disk": {"size_gb": 72, "p50_used_pct": g.int(55, 70), "p95_used_pct": g.int(90, 97), "max_used_pct": 100},
                      "image": "ubuntu-22.04-8core-20240804.1", "auto_cleanup": {"enabled": False, "note": "disabled 2024-07-30 to speed up jobs"},
                      "recent_failures": [{"reason": g.pick(["disk_full", "lost_communication", "timeout"]), "count": g.int(1, 7)} for _ in range(4)]}, pretty=True)

    def delete_caches(args):
        return jdump({"ok": True, "deleted": g.int(5, 12), "freed_gb": g.float(10, 18, 1), "prefix": args["key_prefix"], "older_than_days": args.get("older_than_days")})

    def create_pr(args):
        n = g.int(530, 560)
        return jdump({"number": n, "url": "https://github.com/harbor-rs/harbor/pull/%d" % n, "state": "open", "head": args["branch"]})

    def sent_doc(g_):
        return g_.pick(["Fast path without taking the lock.", "Parks the caller until woken or the deadline passes.",
                        "Wakes waiters after state changes.", "Returns the number of queued messages.", "Used by the FFI layer."])

    impl = {"list_pipeline_runs": list_runs, "list_jobs": list_jobs, "get_job_log": job_log, "get_test_report": test_report,
            "list_artifacts": artifacts, "list_cache_entries": caches, "get_file": get_file, "get_commit": get_commit,
            "rerun_job": rerun, "get_runner_pool": runner_pool, "delete_cache_entries": delete_caches, "create_pull_request": create_pr}
    tools = [
        tool("list_pipeline_runs", "Recent CI workflow runs on a branch.", {"branch": S("Branch"), "limit": I("Max runs")}, ["branch"]),
        tool("list_jobs", "Jobs and steps of a run.", {"run_id": I("Run id")}, ["run_id"]),
        tool("get_job_log", "Raw log of a job.", {"job_id": I("Job id")}, ["job_id"]),
        tool("get_test_report", "JUnit XML test report uploaded by a run.", {"run_id": I("Run id")}, ["run_id"]),
        tool("list_artifacts", "Artifacts uploaded by a run.", {"run_id": I("Run id")}, ["run_id"]),
        tool("list_cache_entries", "GitHub Actions cache entries by key prefix.", {"key_prefix": S("Prefix")}, ["key_prefix"]),
        tool("get_file", "File contents at a ref.", {"path": S("Path"), "ref": S("Git ref")}, ["path"]),
        tool("get_commit", "Commit metadata and patch.", {"sha": S("Commit sha")}, ["sha"]),
        tool("rerun_job", "Re-run a job.", {"job_id": I("Job id")}, ["job_id"]),
        tool("get_runner_pool", "Self-hosted runner group status (aggregated).", {"group": S("Runner group")}, ["group"]),
        tool("delete_cache_entries", "Delete cache entries by prefix and age.", {"key_prefix": S("Prefix"), "older_than_days": I("Age"), "min_size_gb": N("Only entries at least this big")}, ["key_prefix"]),
        tool("create_pull_request", "Open a pull request with a patch.", {"branch": S("Branch"), "title": S("Title"), "body": S("Markdown"), "patch": S("Unified diff")}, ["branch", "title", "patch"]),
    ]
    c = Conv("ci-pipeline-01", "CI debugging on a Rust workspace: red main branch, flaky test, full runner disks, oversized caches, empty release artifact.",
             tools, impl)
    c.system("You are a build/CI engineer assistant for the harbor-rs/harbor repository (Rust workspace with a C ABI). You can "
             "inspect GitHub Actions runs, jobs, logs, artifacts and caches, read files and commits, re-run jobs and open PRs.")
    u = c.user("main has been red on and off for two days and it's blocking the 0.9.4 release. Release manager is Tomasz "
               "Wieczorek, he'll want a summary. Can you figure out what's going on?")
    c.fact("rm", "Tomasz Wieczorek", u,
           "Who did I say the release manager is? I'll send him the summary.",
           "The release manager is {v}.")
    lr = c.act(("list_pipeline_runs", {"branch": "main", "limit": 20}))
    c.fact("firstred", "e41b9c2", lr,
           "What was the short sha (first 7 characters) of the commit whose run was the first red one on main?",
           "The first red run on main was for commit {v}.")
    red = [r for r in runs if r["status"] == "failure"]
    latest = runs[-1]
    c.act(("list_jobs", {"run_id": latest["id"]}), text="Looking at the jobs of the latest run.")
    fj = [j for j in jobs[latest["id"]] if j["status"] == "failure"][0]
    c.act(("get_job_log", {"job_id": fj["id"]}))
    c.say("main went red partway through the last 20 runs and has been flapping since: some runs pass, others fail. The latest "
          "run fails in `%s`: `mailbox::tests::close_wakes_all_receivers` panics with 'all receivers must observe CLOSED' "
          "(left 3 or 2, right 4). That smells like a timing-dependent test. I'll look at the other red runs to see whether it's "
          "always the same failure." % fj["name"])
    c.user("Yes, classify the failures across the red runs.")
    disk_done = False
    for k, r in enumerate(red[-6:-1]):
        c.act(("list_jobs", {"run_id": r["id"]}))
        fjob = [j for j in jobs[r["id"]] if j["status"] == "failure"][0]
        if not disk_done and k == 1:
            dl = c.act(("get_job_log", {"job_id": fjob["id"]}, {"plant": {"kind": "disk", "runner": "gha-runner-eu-14"}}))
            c.fact("runner", "gha-runner-eu-14", dl,
                   "Which runner name was in the header of the job log that died with 'No space left on device'?",
                   "That job ran on {v} (per the log header), and df showed / at 100% of 72G.")
            disk_done = True
        else:
            c.act(("get_job_log", {"job_id": fjob["id"]}))
    c.say("Across the red runs there are two distinct failure modes:\n\n1. **Flaky test** (most runs): "
          "`mailbox::tests::close_wakes_all_receivers` -- fewer than 4 receivers observe CLOSED.\n2. **Disk full** (one run): the "
          "build dies compiling `curl-sys` with `No space left on device (os error 28)`; `df` shows / at 100% of 72G on that "
          "self-hosted runner.\n\nThey're unrelated; the first is a code/test bug, the second infrastructure.")
    c.user("Pull the JUnit report from the latest run, I want to see durations too.")
    tr = c.act(("get_test_report", {"run_id": latest["id"]}, {"plant": "integration::agents::ten_thousand_agents_three_step_loop"}))
    c.fact("slowest", "integration::agents::ten_thousand_agents_three_step_loop", tr,
           "What was the name of the slowest test case in the JUnit report?",
           "The slowest test case was {v} at 187.412 s.")
    c.say("The report has one failure (the mailbox test) and otherwise fast tests, except one integration test that takes about "
          "three minutes on its own -- a candidate for moving to a nightly job.")
    c.user("Why would the runner disk fill up? Check the runner pool and the caches.")
    c.act(("get_runner_pool", {"group": "eu-large"}))
    ce = c.act(("list_cache_entries", {"key_prefix": "v2-cargo-Linux-"}, {"plant": "v2-cargo-Linux-8f2c1d0e9b7a4c3d"}))
    c.fact("bigcache", "v2-cargo-Linux-8f2c1d0e9b7a4c3d", ce,
           "Which cache entry was the oversized ~9.8 GB one?",
           "The oversized entry was {v} (9.8 GB, created 2024-08-12 on refs/heads/main).")
    c.say("Two contributing factors: automatic workspace cleanup on the self-hosted pool was **disabled on 30 July** to speed up "
          "jobs, so `target/` directories accumulate (p95 disk use is already in the 90s), and one cargo cache entry is ~9.8 GB, "
          "which is close to the whole 10 GB repository cache limit and gets restored into the workspace.")
    c.user("Check the artifacts of the latest run too; the release bundle job looked off to Tomasz.")
    ar = c.act(("list_artifacts", {"run_id": latest["id"]}, {"plant": "target/release/bundle/harbor-0.9.4-x86_64-unknown-linux-gnu.tar.zst"}))
    c.fact("emptyart", "target/release/bundle/harbor-0.9.4-x86_64-unknown-linux-gnu.tar.zst", ar,
           "Which release artifact was zero bytes in the latest run?",
           "The empty artifact was {v} (0 bytes; its digest prefix e3b0c442... is the SHA-256 of empty input).")
    c.act(("list_jobs", {"run_id": latest["id"]}))
    c.say("The release bundle artifact in the latest run is **0 bytes** -- its digest is the SHA-256 of empty input. The bundle "
          "job itself reported success, so the packaging step silently produced an empty archive, most likely because the "
          "bundle step ran out of disk or got an empty staging directory. That must not be published.")
    c.user("Let's look at the flaky test code and the commit that touched the mailbox recently.")
    c.act(("get_file", {"path": "crates/core/src/mailbox.rs", "ref": "main"}))
    c.act(("get_commit", {"sha": runs[first_red - 1]["sha"]}), text="The commit just before the first red run touched the mailbox; opening it.")
    c.say("The test spawns 4 receivers, sleeps 5 ms 'to give receivers time to park', then calls `close()` and expects all 4 "
          "to observe CLOSED. The recent commit changed `close()` to wake *one waiter per slot* and made receivers spin before "
          "parking. If a receiver hasn't parked yet when `close()` runs, or the notify is lost, fewer than 4 wake up -> flaky. "
          "Two fixes are needed: `close()` must `notify_all` after setting the flag (under the lock), and the test must not rely "
          "on a sleep.")
    c.user("Re-run the failed jobs of the latest run meanwhile, to confirm flakiness.")
    c.act(("rerun_job", {"job_id": fj["id"]}))
    c.act(("list_pipeline_runs", {"branch": "main", "limit": 5}, {"fresh": True}), text="Checking the run list.")
    c.act(("get_job_log", {"job_id": fj["id"] + 100}), text="Reading the re-run's log.")
    c.say("The re-run passed: same commit, no code change -> confirms the test is flaky rather than deterministically broken.")
    c.user("Open a PR with the fix: notify_all under the lock in close(), and replace the sleep in the test with a barrier on parked receivers.")
    patch = ("--- a/crates/core/src/mailbox.rs\n+++ b/crates/core/src/mailbox.rs\n@@ -410,7 +410,9 @@ impl Mailbox {\n     pub fn close(&self) {\n"
             "-        if self.closed.swap(true, Ordering::AcqRel) { return; }\n-        self.cv.notify_one();\n+        let _g = self.lock.lock().unwrap();\n"
             "+        if self.closed.swap(true, Ordering::AcqRel) { return; }\n+        self.cv.notify_all();\n     }\n"
             "@@ -806,7 +808,8 @@ mod tests {\n-        std::thread::sleep(Duration::from_millis(5)); // give receivers time to park\n"
             "+        while mb.parked_receivers() < 4 { std::thread::yield_now(); }\n         mb.close();\n")
    c.act(("create_pull_request", {"branch": "fix/mailbox-close-wakes-all", "title": "mailbox: close() wakes all parked receivers; deterministic test",
                                    "body": "Fixes the flaky `close_wakes_all_receivers` on main.\n\n- `close()` sets the flag under the lock and uses `notify_all`\n- the test waits for all receivers to park instead of sleeping 5 ms",
                                    "patch": patch}))
    c.say("PR opened from `fix/mailbox-close-wakes-all`.")
    c.recall("runner", prefix="I'm filing the infra ticket for the disk issue now. ")
    c.user("Now the disk problem. Delete the oversized cargo caches -- anything over 5 GB -- and stale ones older than 3 days.")
    c.act(("delete_cache_entries", {"key_prefix": "v2-cargo-Linux-", "min_size_gb": 5}))
    c.act(("delete_cache_entries", {"key_prefix": "v2-cargo-Linux-", "older_than_days": 3}), text="Now the stale ones.")
    c.act(("list_cache_entries", {"key_prefix": "v2-cargo-"}), text="Checking what's left.")
    c.say("Oversized and stale cargo caches deleted; the remaining entries are all 0.6-1.9 GB. I'd also re-enable workspace "
          "auto-cleanup on the eu-large runner group -- that needs an admin, the API I have is read-only for runner config.")
    c.user("Show me the runner pool status again.")
    c.act(("get_runner_pool", {"group": "eu-large"}))
    c.say("Unchanged (it's a snapshot of runner config and disk stats): auto-cleanup is still disabled, p95 disk usage high.")
    c.user("Look at two of the other red runs once more -- the ones before the disk failure -- to make sure nothing else is hiding.")
    for r in red[-6:-4]:
        c.act(("list_jobs", {"run_id": r["id"]}))
    c.say("Same as before: each has exactly one failed job, the mailbox test. Nothing else.")
    c.user("Go through the older runs from before and around the first red one too -- jobs and artifacts -- so we know when the bundle started coming out empty.")
    for r in runs[first_red - 4:first_red + 4]:
        c.act(("list_jobs", {"run_id": r["id"]}))
        c.act(("list_artifacts", {"run_id": r["id"]}), text="Artifacts of run %d." % r["id"])
    c.say("In those eight runs the bundle artifact has a normal size every time, and the job results match the flaky-test "
          "pattern (failures only in the test jobs). So the empty bundle is specific to the latest run, which fits the disk "
          "pressure explanation rather than a packaging regression.")
    c.user("And the test (release) job logs in the latest run -- did release mode pass?")
    rel = [j for j in jobs[latest["id"]] if j["name"] == "test (release)"][0]
    c.act(("get_job_log", {"job_id": rel["id"]}))
    c.say("Release-mode tests passed in the latest run (the flake is timing-dependent and shows up more in debug builds).")
    c.user("OK. Write me the summary for the release manager, then I have some specific questions.")
    c.say("**CI status on main (for the 0.9.4 release)**\n\n1. *Flaky test*: `mailbox::tests::close_wakes_all_receivers` fails "
          "intermittently since the spin-then-park change; `close()` could leave receivers asleep. Fix in PR "
          "`fix/mailbox-close-wakes-all` (notify_all under the lock + deterministic test). Re-run of the latest failure passed.\n"
          "2. *Runner disks*: one self-hosted runner hit 100% disk during the build. Cause: workspace auto-cleanup disabled on "
          "30 July plus an oversized cargo cache. Oversized and stale caches deleted; auto-cleanup needs re-enabling by an admin.\n"
          "3. *Release artifact*: the latest run's release bundle is 0 bytes although the job succeeded -- must not be published; "
          "the bundle step needs a non-empty check.\n\nRecommendation: merge the PR, re-enable cleanup, re-run the release workflow "
          "and verify the bundle size before tagging 0.9.4.")
    c.recall("firstred")
    c.recall("bigcache")
    c.recall("emptyart")
    c.recall("slowest", prefix="Someone suggested moving slow tests to nightly. ")
    c.recall("rm")
    return c


# ============================================================================
# 12. db-performance-01: Postgres orders database slowdown (long conversation)
# ============================================================================

SQL_SHAPES = [
    "SELECT o.id, o.status, o.total_cents FROM orders o WHERE o.customer_id = $1 ORDER BY o.created_at DESC LIMIT $2",
    "SELECT * FROM order_items WHERE order_id = ANY($1)",
    "UPDATE orders SET status = $1, updated_at = now() WHERE id = $2",
    "INSERT INTO order_events (order_id, kind, payload, created_at) VALUES ($1, $2, $3, now())",
    "SELECT count(*) FROM orders WHERE status = $1 AND created_at >= $2",
    "SELECT p.* FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.customer_id = $1 AND p.created_at > $2",
    "SELECT id, email, name FROM customers WHERE id = $1",
    "UPDATE inventory SET reserved = reserved + $1 WHERE sku = $2 AND warehouse_id = $3",
    "SELECT * FROM shipments WHERE tracking_number = $1",
    "DELETE FROM carts WHERE updated_at < now() - interval '30 days' AND id = ANY($1)",
    "SELECT o.id FROM orders o WHERE o.merchant_id = $1 AND o.status IN ($2, $3) AND o.updated_at > $4 ORDER BY o.updated_at LIMIT $5",
    "SELECT sum(total_cents) FROM orders WHERE merchant_id = $1 AND created_at::date = $2",
]
TOP_QUERY = ("SELECT o.id, o.status, o.total_cents, o.updated_at FROM orders o WHERE o.merchant_id = $1 AND o.fulfillment_state = $2 "
             "AND o.updated_at > $3 ORDER BY o.updated_at LIMIT $4")


def conv_db_perf_01(seed):
    g = G(seed)
    t0 = dt.datetime(2024, 10, 30, 10, 0)
    state = {"index": False, "blocker": True, "vacuumed": False}

    def metrics(args, plant=None):
        window_h = {"1h": 1, "24h": 24, "7d": 168}[args["window"]]
        step = 60 if window_h == 1 else (900 if window_h == 24 else 3600)
        pts = []
        now = t0 + dt.timedelta(minutes=80) if state["index"] else t0
        for k in range(window_h * 3600 // step):
            tk = now - dt.timedelta(seconds=(window_h * 3600 - k * step))
            bad = tk >= dt.datetime(2024, 10, 28, 8, 0) and not state["index"]
            base = {"cpu_pct": (25, 45), "active_connections": (40, 90), "replication_lag_s": (0.1, 2.5), "read_iops": (2000, 6000),
                    "commit_tps": (900, 1600)}[args["metric"]]
            v = g.r.uniform(*base) * (g.r.uniform(1.6, 2.2) if bad and args["metric"] != "commit_tps" else 1)
            pts.append({"t": iso(tk, False), "v": round(v, 1)})
        if plant:
            pts[plant[0]]["v"] = plant[1]
        return jdump({"instance": "orders-db-prod-1", "metric": args["metric"], "window": args["window"], "step_s": step,
                      "points": pts, "summary": {"min": min(p["v"] for p in pts), "max": max(p["v"] for p in pts)}}, pretty=True)

    def stat_statements(args, plant=None):
        rows = []
        for k in range(args.get("limit", 20)):
            q = g.pick(SQL_SHAPES)
            calls = g.int(1_000, 9_000_000)
            mean = g.float(0.05, 40, 3)
            rows.append([str(-g.int(10**17, 9 * 10**18) if g.chance(0.5) else g.int(10**17, 9 * 10**18)), "{:,}".format(calls), "{:,.1f}".format(calls * mean),
                         "%.3f" % mean, "{:,}".format(calls * g.int(1, 20)), "%.1f%%" % g.float(90, 100, 1), q])
        rows.sort(key=lambda r: -float(r[2].replace(",", "")))
        if plant:
            rows.insert(0, [plant, "1,204,118", "2,219,418,902.4", "1843.270", "4,911,002", "61.4%", TOP_QUERY])
        return text_table(["queryid", "calls", "total_exec_ms", "mean_ms", "rows", "hit_ratio", "query"], rows)

    def explain(args, plant=None):
        q = args["query"]
        if "fulfillment_state" in q and state["index"]:
            return ("Limit  (cost=0.57..412.80 rows=100 width=44) (actual time=0.041..1.882 rows=100 loops=1)\n"
                    "  Buffers: shared hit=%d\n"
                    "  ->  Index Scan using idx_orders_merchant_fstate_updated on orders o  (cost=0.57..9871.22 rows=2394 width=44) (actual time=0.039..1.861 rows=100 loops=1)\n"
                    "        Index Cond: ((merchant_id = 4411) AND (fulfillment_state = 'awaiting_pick'::text) AND (updated_at > '2024-10-30 09:00:00+00'::timestamp with time zone))\n"
                    "        Buffers: shared hit=%d\n"
                    "Planning:\n  Buffers: shared hit=%d\nPlanning Time: 0.412 ms\nExecution Time: 1.934 ms" % (g.int(90, 140), g.int(90, 140), g.int(10, 40)))
        if "fulfillment_state" in q:
            return ("Limit  (cost=1000.46..918237.11 rows=100 width=44) (actual time=1712.004..1841.771 rows=100 loops=1)\n"
                    "  Buffers: shared hit=%d read=%d dirtied=%d\n"
                    "  ->  Gather Merge  (cost=1000.46..2204411.90 rows=2394 width=44) (actual time=1712.001..1841.740 rows=100 loops=1)\n"
                    "        Workers Planned: 2\n        Workers Launched: 2\n        Buffers: shared hit=%d read=%d\n"
                    "        ->  Sort  (cost=0.44..2203172.51 rows=998 width=44) (actual time=1689.220..1689.301 rows=81 loops=3)\n"
                    "              Sort Key: o.updated_at\n              Sort Method: top-N heapsort  Memory: 37kB\n"
                    "              ->  Parallel Index Scan using idx_orders_merchant_id on orders o  (cost=0.44..2202871.10 rows=998 width=44) (actual time=3.118..1688.902 rows=811 loops=3)\n"
                    "                    Index Cond: (merchant_id = 4411)\n"
                    "                    Filter: ((updated_at > '2024-10-30 09:00:00+00'::timestamp with time zone) AND (fulfillment_state = 'awaiting_pick'::text))\n"
                    "                    Rows Removed by Filter: %s\n"
                    "                    Buffers: shared hit=%d read=%d\n"
                    "Planning:\n  Buffers: shared hit=%d\nPlanning Time: 1.208 ms\nJIT:\n  Functions: 14\n  Options: Inlining true, Optimization true, Expressions true, Deforming true\n"
                    "  Timing: Generation 1.902 ms, Inlining 88.114 ms, Optimization 61.870 ms, Emission 43.551 ms, Total 195.437 ms\nExecution Time: 1843.511 ms" % (
                        g.int(100000, 300000), g.int(300000, 900000), g.int(10, 900), g.int(100000, 300000), g.int(300000, 900000), plant or g.int(100000, 900000),
                        g.int(100000, 300000), g.int(300000, 900000), g.int(10, 40)))
        lines = ["%s  (cost=%.2f..%.2f rows=%d width=%d) (actual time=%.3f..%.3f rows=%d loops=%d)" % (
            g.pick(["Hash Join", "Nested Loop", "Index Scan using orders_pkey on orders o", "Bitmap Heap Scan on order_items", "Seq Scan on carts"]),
            g.float(0, 10), g.float(100, 90000), g.int(1, 50000), g.int(8, 200), g.float(0, 5, 3), g.float(5, 900, 3), g.int(0, 50000), g.int(1, 3))]
        for d in range(g.int(8, 16)):
            lines.append("  " * (d % 5 + 1) + "->  %s  (cost=%.2f..%.2f rows=%d width=%d) (actual time=%.3f..%.3f rows=%d loops=%d)" % (
                g.pick(["Index Scan using order_items_order_id_idx on order_items i", "Hash", "Bitmap Index Scan on payments_created_at_idx",
                        "Seq Scan on customers c", "Memoize", "Index Only Scan using inventory_sku_wh_idx on inventory"]),
                g.float(0, 10), g.float(100, 90000), g.int(1, 50000), g.int(8, 200), g.float(0, 5, 3), g.float(5, 900, 3), g.int(0, 50000), g.int(1, 3)))
            lines.append("  " * (d % 5 + 2) + "Buffers: shared hit=%d read=%d" % (g.int(10, 90000), g.int(0, 20000)))
        lines.append("Planning Time: %.3f ms\nExecution Time: %.3f ms" % (g.float(0.1, 3, 3), g.float(20, 900, 3)))
        return "\n".join(lines)

    def indexes(args, plant=None):
        rows = []
        for k in range(g.int(7, 11)):
            cols = g.picks(["customer_id", "merchant_id", "created_at", "updated_at", "status", "order_id", "sku", "warehouse_id", "kind", "external_ref"], g.int(1, 3))
            nm = "idx_%s_%s" % (args["table"], "_".join(cols))
            rows.append([nm, "{:,}".format(g.int(10_000, 900_000_000)), "%d MB" % g.int(20, 9000), "CREATE INDEX %s ON public.%s USING btree (%s)" % (nm, args["table"], ", ".join(cols))])
        rows.insert(0, ["%s_pkey" % args["table"], "{:,}".format(g.int(10**8, 10**9)), "%d MB" % g.int(500, 4000), "CREATE UNIQUE INDEX %s_pkey ON public.%s USING btree (id)" % (args["table"], args["table"])])
        if plant:
            rows.insert(4, [plant, "0", "14 GB", "CREATE INDEX %s ON public.orders USING btree (legacy_status, created_at)" % plant])
        if args["table"] == "orders":
            rows.insert(2, ["idx_orders_merchant_id", "{:,}".format(g.int(10**8, 10**9)), "2310 MB", "CREATE INDEX idx_orders_merchant_id ON public.orders USING btree (merchant_id)"])
        return text_table(["index", "idx_scan", "size", "definition"], rows)

    def pg_log(args, plant=None):
        t = dt.datetime.strptime(args["since"], "%Y-%m-%dT%H:%M:%SZ")
        lines = []
        for k in range(args.get("lines", 200)):
            t = g.later(t, 200, 120_000)
            pid = g.int(10000, 99999)
            kind = g.wpick([(50, "slow"), (12, "ckpt"), (18, "av"), (10, "conn"), (10, "err")])
            pre = "%s UTC [%d] %s@orders " % (t.strftime("%Y-%m-%d %H:%M:%S.") + "%03d" % g.int(0, 999), pid, g.pick(["api", "worker", "reporting", "admin"]))
            if args.get("filter") == "autovacuum":
                kind = "av"
            if kind == "slow":
                lines.append(pre + "LOG:  duration: %.3f ms  execute <unnamed>: %s" % (g.float(500, 4000, 3), g.pick([TOP_QUERY] * 3 + SQL_SHAPES)))
                lines.append(pre + "DETAIL:  parameters: $1 = '%d', $2 = '%s', $3 = '2024-10-%02d %02d:00:00+00', $4 = '100'" % (
                    g.int(1000, 9999), g.pick(["awaiting_pick", "packed", "shipped"]), g.int(28, 30), g.int(0, 23)))
            elif kind == "ckpt":
                lines.append(pre.split("] ")[0] + "] " + "LOG:  checkpoint complete: wrote %d buffers (%.1f%%); 0 WAL file(s) added, %d removed, %d recycled; write=%.3f s, sync=%.3f s, total=%.3f s" % (
                    g.int(10000, 90000), g.float(1, 12, 1), g.int(0, 9), g.int(10, 60), g.float(100, 270), g.float(0.01, 2), g.float(100, 270)))
            elif kind == "av":
                tbl = g.pick(["order_items", "order_events", "payments", "carts", "inventory", "shipments"])
                lines.append(pre.split("] ")[0] + "] " + "LOG:  automatic vacuum of table \"orders.public.%s\": index scans: %d" % (tbl, g.int(0, 2)))
                lines.append("\tpages: %d removed, %d remain, %d scanned (%.2f%% of total)" % (g.int(0, 90), g.int(10000, 900000), g.int(1000, 90000), g.float(1, 60)))
                lines.append("\ttuples: %d removed, %d remain, %d are dead but not yet removable" % (g.int(1000, 900000), g.int(10**5, 10**8), g.int(0, 5000)))
                lines.append("\tavg read rate: %.3f MB/s, avg write rate: %.3f MB/s" % (g.float(1, 90), g.float(1, 40)))
            elif kind == "conn":
                lines.append(pre + "LOG:  connection authorized: user=%s database=orders application_name=%s SSL enabled (protocol=TLSv1.3)" % (
                    g.pick(["api", "worker"]), g.pick(["orders-api", "fulfillment-worker", "pgbouncer"])))
            else:
                lines.append(pre + "ERROR:  canceling statement due to statement timeout")
                lines.append(pre + "STATEMENT:  " + TOP_QUERY)
        if plant:
            at = len(lines) // 2
            lines[at:at] = ["2024-10-30 06:12:44.118 UTC [51822] LOG:  automatic vacuum of table \"orders.public.orders\": index scans: 0",
                            "\tpages: 0 removed, 9812241 remain, 2210054 scanned (22.52% of total)",
                            "\ttuples: 0 removed, 61234009 remain, 58911020 are dead but not yet removable, oldest xmin: %s" % plant,
                            "\tbuffer usage: 1402211 hits, 812004 misses, 2 dirtied", "\tavg read rate: 41.204 MB/s, avg write rate: 0.000 MB/s",
                            "\tsystem usage: CPU: user: 21.40 s, system: 9.88 s, elapsed: 154.02 s"]
        return "\n".join(lines)

    def table_stats(args):
        tb = args["table"]
        vac = state["vacuumed"] and tb == "orders"
        dead = 0 if vac else (63_410_288 if tb == "orders" else g.int(10_000, 2_000_000))
        return jdump({"table": "public." + tb, "n_live_tup": 61_802_117 if tb == "orders" else g.int(10**6, 4 * 10**8), "n_dead_tup": dead,
                      "dead_ratio": round(dead / 61_802_117, 3) if tb == "orders" else round(g.r.random() * 0.05, 3),
                      "last_vacuum": "2024-10-30T10:%02d:00Z" % g.int(30, 50) if vac else None,
                      "last_autovacuum": "2024-10-%02dT0%d:%02d:00Z" % (g.int(25, 27) if tb == "orders" else 30, g.int(1, 9), g.int(0, 59)),
                      "last_autoanalyze": "2024-10-%02dT0%d:%02d:00Z" % (g.int(25, 29), g.int(1, 9), g.int(0, 59)),
                      "autovacuum_count": g.int(100, 900), "seq_scan": g.int(10, 9000), "idx_scan": g.int(10**7, 10**9),
                      "total_size": "%d GB" % g.int(40, 140) if tb == "orders" else "%d GB" % g.int(1, 60),
                      "toast_size": "%d MB" % g.int(10, 900), "reloptions": ["autovacuum_vacuum_scale_factor=0.2"] if tb == "orders" else [],
                      "estimated_bloat_pct": 0.0 if vac else (47.8 if tb == "orders" else g.float(1, 12, 1))}, pretty=True)

    def locks(args, plant=None):
        rows = []
        for k in range(g.int(14, 22)):
            rows.append([str(g.int(10000, 99999)), g.pick(["orders-api", "fulfillment-worker", "pgbouncer"]), g.pick(["active", "idle in transaction", "active"]),
                         "%02d:%02d:%02d" % (0, g.int(0, 2), g.int(0, 59)), g.pick(["RowExclusiveLock", "AccessShareLock", "RowShareLock"]),
                         g.pick(["orders", "order_items", "payments", "inventory"]), "t", "", g.pick(SQL_SHAPES)[:70]])
        if plant and state["blocker"]:
            rows.insert(3, ["48213", plant, "idle in transaction", "71:42:09", "AccessShareLock", "orders", "t", "",
                            "SELECT m.id, sum(o.total_cents) FROM merchants m JOIN orders o ON o.merchant_id = m.id GROUP BY 1"])
        return text_table(["pid", "application_name", "state", "xact_age", "mode", "relation", "granted", "blocked_by", "query"], rows)

    def run_sql(args):
        q = args["query"]
        if "pg_terminate_backend" in q:
            state["blocker"] = False
            return text_table(["pg_terminate_backend"], [["t"]])
        if "pg_stat_activity" in q:
            rows = [[str(g.int(10000, 99999)), g.pick(["orders-api", "fulfillment-worker", "pgbouncer", "psql"]), g.pick(["active", "idle", "idle in transaction"]),
                     "%02d:%02d:%02d" % (0, g.int(0, 5), g.int(0, 59)), str(g.int(3481000000, 3482900000)), g.pick(SQL_SHAPES)[:60]] for _ in range(g.int(12, 20))]
            if state["blocker"]:
                rows.insert(0, ["48213", "reporting-cron", "idle in transaction", "71:42:09", "-", "SELECT m.id, sum(o.total_cents) FROM merchants m JOIN orders o ..."])
            return text_table(["pid", "application", "state", "xact_age", "backend_xmin", "query"], rows)
        if q.startswith("VACUUM"):
            state["vacuumed"] = True
            out = ["INFO:  vacuuming \"orders.public.orders\""]
            for idx in ["orders_pkey", "idx_orders_merchant_id", "idx_orders_customer_id_created_at", "idx_orders_status_created_at",
                        "idx_orders_merchant_fstate_updated", "idx_orders_external_ref"]:
                out.append("INFO:  scanned index \"%s\" to remove %d row versions" % (idx, 58_911_020 + g.int(0, 4_000_000)))
                out.append("DETAIL:  CPU: user: %.2f s, system: %.2f s, elapsed: %.2f s" % (g.float(10, 90), g.float(1, 20), g.float(30, 300)))
            out.append("INFO:  table \"orders\": removed %d dead item identifiers in %d pages" % (g.int(60_000_000, 63_000_000), g.int(2_000_000, 4_000_000)))
            out.append("INFO:  finished vacuuming \"orders.public.orders\": index scans: 1")
            out.append("pages: 0 removed, 9812241 remain, 9812241 scanned (100.00% of total)")
            out.append("tuples: %d removed, 61802117 remain, 0 are dead but not yet removable" % g.int(60_000_000, 63_000_000))
            out.append("INFO:  analyzing \"public.orders\"\nINFO:  \"orders\": scanned 300000 of 9812241 pages, containing 1889310 live rows and 0 dead rows; 300000 rows in sample, 61802117 estimated total rows\nVACUUM")
            return "\n".join(out)
        if "pg_settings" in q:
            rows = [[n, v, u, s] for n, v, u, s in [("autovacuum", "on", "", "default"), ("autovacuum_max_workers", "3", "", "default"),
                                                   ("autovacuum_naptime", "60", "s", "default"), ("autovacuum_vacuum_cost_limit", "200", "", "default"),
                                                   ("autovacuum_vacuum_cost_delay", "2", "ms", "default"), ("autovacuum_vacuum_scale_factor", "0.2", "", "default"),
                                                   ("autovacuum_vacuum_threshold", "50", "", "default"), ("autovacuum_analyze_scale_factor", "0.1", "", "default"),
                                                   ("autovacuum_freeze_max_age", "200000000", "", "default"), ("idle_in_transaction_session_timeout", "0", "ms", "default"),
                                                   ("statement_timeout", "30000", "ms", "role"), ("maintenance_work_mem", "1048576", "kB", "configuration file"),
                                                   ("max_wal_size", "8192", "MB", "configuration file"), ("checkpoint_timeout", "900", "s", "configuration file")]]
            return text_table(["name", "setting", "unit", "source"], rows)
        rows = [[g.pick(["awaiting_pick", "packed", "shipped", "delivered", "cancelled"]), "{:,}".format(g.int(1000, 9_000_000)), "%.1f%%" % g.float(0, 60)] for _ in range(5)]
        return text_table(["fulfillment_state", "orders", "share"], rows)

    def migrate(args):
        sql = args["sql"]
        if args.get("dry_run"):
            return jdump({"dry_run": True, "statements": sql.count(";"), "locks": ["ShareUpdateExclusiveLock on orders" if "CONCURRENTLY" in sql else "AccessExclusiveLock on orders"],
                          "estimated_duration_s": g.int(600, 2400), "estimated_index_size": "%.1f GB" % g.float(1.5, 4.0), "blocking_writes": "CONCURRENTLY" not in sql})
        if "idx_orders_merchant_fstate_updated" in sql:
            state["index"] = True
        return jdump({"dry_run": False, "ok": True, "duration_s": g.int(600, 2400), "notices": ["CREATE INDEX CONCURRENTLY completed"]})

    impl = {"get_db_metrics": metrics, "pg_stat_statements": stat_statements, "explain_analyze": explain, "list_indexes": indexes,
            "read_pg_log": pg_log, "get_table_stats": table_stats, "get_locks": locks, "run_sql": run_sql, "apply_migration": migrate}
    tools = [
        tool("get_db_metrics", "Instance metrics time series.", {"metric": S("cpu_pct|active_connections|replication_lag_s|read_iops|commit_tps"), "window": S("1h|24h|7d")}, ["metric", "window"]),
        tool("pg_stat_statements", "Top statements from pg_stat_statements.", {"order_by": S("total_exec_time|mean_exec_time|calls"), "limit": I("Rows")}, ["order_by"]),
        tool("explain_analyze", "EXPLAIN (ANALYZE, BUFFERS) a statement with sample parameters on a replica.", {"query": S("SQL with literals")}, ["query"]),
        tool("list_indexes", "Indexes of a table with usage counters and size.", {"table": S("Table")}, ["table"]),
        tool("read_pg_log", "Postgres server log lines.", {"since": S("ISO-8601 UTC"), "lines": I("Max lines"), "filter": S("Optional: autovacuum|errors")}, ["since"]),
        tool("get_table_stats", "pg_stat_user_tables + bloat estimate for a table.", {"table": S("Table")}, ["table"]),
        tool("get_locks", "Current locks joined with pg_stat_activity.", {}, []),
        tool("run_sql", "Run SQL on the primary (read-only role unless approved).", {"query": S("SQL")}, ["query"]),
        tool("apply_migration", "Apply (or dry-run) a schema migration.", {"sql": S("DDL"), "dry_run": B("Only plan")}, ["sql"]),
    ]
    c = Conv("db-performance-01", "Database performance investigation on Postgres: slow queries, plans, indexes, a long transaction blocking vacuum, bloat.",
             tools, impl)
    c.system("You are a database reliability assistant for the orders Postgres 15 cluster (orders-db-prod-1 + 2 replicas). "
             "Investigate with evidence; schema changes that block writes must wait for an approved maintenance window.")
    u = c.user("The orders API p95 has doubled since Monday morning and the DB looks hot. Any blocking schema change has to go into "
               "maintenance window MW-2024-11-03 (Sunday). Please investigate.")
    c.fact("mw", "MW-2024-11-03", u,
           "Which maintenance window did I say blocking schema changes must go into?",
           "Blocking schema changes have to go into maintenance window {v} (Sunday).")
    c.act(("get_db_metrics", {"metric": "cpu_pct", "window": "7d"}))
    c.act(("get_db_metrics", {"metric": "active_connections", "window": "7d"}), text="CPU doubled from Monday 08:00; checking connections.")
    rl = c.act(("get_db_metrics", {"metric": "replication_lag_s", "window": "24h"}, {"plant": (61, 412.73)}), text="And replica lag, since the API reads from replicas.")
    c.fact("lag", "412.73", rl,
           "What was the peak replication lag (in seconds) in the 24h lag series?",
           "Replica lag peaked at {v} s in the 24-hour series.")
    c.say("Since Monday ~08:00 UTC, CPU and active connections run roughly 2x the previous baseline, and replica lag has one "
          "extreme spike of several minutes in the last 24h (normally a second or two). Let's see which statements are eating the time.")
    c.user("Top statements by total time.")
    ss = c.act(("pg_stat_statements", {"order_by": "total_exec_time", "limit": 25}, {"plant": "-6124980934578192204"}))
    c.fact("queryid", "-6124980934578192204", ss,
           "What was the queryid of the top statement by total execution time?",
           "The top statement's queryid was {v} (the merchant + fulfillment_state + updated_at query, ~1.84 s mean).")
    c.say("One statement dominates: a merchant dashboard query filtering `merchant_id`, `fulfillment_state` and `updated_at` "
          "ordered by `updated_at`, with ~1.2M calls at ~1.84 s mean and only 61% buffer hit ratio -- it alone accounts for "
          "the majority of total execution time. Everything else is sub-40 ms.")
    c.user("Explain it with realistic parameters, and show the indexes on orders.")
    ex = c.act(("explain_analyze", {"query": "SELECT o.id, o.status, o.total_cents, o.updated_at FROM orders o WHERE o.merchant_id = 4411 AND o.fulfillment_state = 'awaiting_pick' AND o.updated_at > '2024-10-30 09:00:00+00' ORDER BY o.updated_at LIMIT 100"},
                {"plant": "4817290"}))
    c.fact("rrf", "4817290", ex,
           "In the first EXPLAIN ANALYZE of the dashboard query, how many rows were removed by the filter?",
           "The plan showed 'Rows Removed by Filter: {v}' on the parallel index scan using idx_orders_merchant_id.")
    ix = c.act(("list_indexes", {"table": "orders"}, {"plant": "idx_orders_legacy_status_created"}))
    c.fact("unused", "idx_orders_legacy_status_created", ix,
           "Which index on orders had zero scans and was about 14 GB?",
           "That was {v} (btree on legacy_status, created_at; idx_scan 0, 14 GB).")
    c.say("The plan uses `idx_orders_merchant_id` and then filters on `fulfillment_state` and `updated_at`, discarding millions "
          "of rows per execution, plus a sort and JIT overhead -> ~1.8 s. There's no index covering `(merchant_id, "
          "fulfillment_state, updated_at)`. The index list also shows a large index with **zero scans**, which only costs write "
          "amplification.")
    c.user("But this query isn't new. Why did it get slow on Monday? Check the Postgres log.")
    c.act(("read_pg_log", {"since": "2024-10-28T07:30:00Z", "lines": 170}))
    av = c.act(("read_pg_log", {"since": "2024-10-29T00:00:00Z", "lines": 60, "filter": "autovacuum"}, {"plant": "3481920044"}),
               text="Lots of slow-query lines for it since Monday; checking autovacuum activity on orders.")
    c.fact("xmin", "3481920044", av,
           "What oldest xmin did the autovacuum log line for orders report as holding back cleanup?",
           "Autovacuum on orders reported 'oldest xmin: {v}' with ~58.9M dead tuples not yet removable.")
    c.act(("get_table_stats", {"table": "orders"}))
    c.say("The log explains Monday: autovacuum on `orders` runs but removes **0** tuples -- tens of millions of dead rows are "
          "'not yet removable' because an old transaction holds back the xmin horizon. `orders` is ~48% bloat with more dead "
          "than live tuples. The dashboard query walks the merchant index and has to visit all those dead versions, so a "
          "borderline-inefficient plan became very slow.")
    c.user("Find the transaction holding the horizon.")
    c.act(("run_sql", {"query": "SELECT pid, application_name AS application, state, now() - xact_start AS xact_age, backend_xmin, left(query, 60) AS query FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start LIMIT 20"}))
    lk = c.act(("get_locks", {}, {"plant": "reporting-cron@db-batch-02"}))
    c.fact("blocker", "reporting-cron@db-batch-02", lk,
           "What was the application_name of the session that was idle in transaction for ~71 hours?",
           "It was {v} (pid 48213), idle in transaction for 71:42:09 holding an AccessShareLock on orders.")
    c.say("Found it: pid 48213, a reporting cron session that has been **idle in transaction for ~71 hours** (since Monday "
          "morning), holding an AccessShareLock on orders and pinning the xmin horizon. `idle_in_transaction_session_timeout` is 0, "
          "so nothing kills it.")
    c.user("Terminate it.")
    c.act(("run_sql", {"query": "SELECT pg_terminate_backend(48213)"}))
    c.act(("get_locks", {}, {"fresh": True}), text="Verifying it's gone.")
    c.act(("run_sql", {"query": "SELECT pid, application_name AS application, state, now() - xact_start AS xact_age, backend_xmin, left(query, 60) AS query FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start LIMIT 20"},
           {"fresh": True}), text="And the oldest transactions now.")
    c.say("Terminated. The oldest open transaction is now a few minutes old, so autovacuum can make progress.")
    c.user("Can we add the right index without waiting for Sunday?")
    mig = "CREATE INDEX CONCURRENTLY idx_orders_merchant_fstate_updated ON orders (merchant_id, fulfillment_state, updated_at);"
    c.act(("apply_migration", {"sql": mig, "dry_run": True}))
    c.say("Yes: `CREATE INDEX CONCURRENTLY` only takes a ShareUpdateExclusiveLock and doesn't block writes, so it's allowed outside "
          "the window. Estimated ~2-4 GB and up to ~40 minutes. Shall I run it?")
    c.user("Go.")
    c.act(("apply_migration", {"sql": mig, "dry_run": False}))
    c.act(("explain_analyze", {"query": "SELECT o.id, o.status, o.total_cents, o.updated_at FROM orders o WHERE o.merchant_id = 4411 AND o.fulfillment_state = 'awaiting_pick' AND o.updated_at > '2024-10-30 09:00:00+00' ORDER BY o.updated_at LIMIT 100"},
           {"fresh": True}), text="Index built; re-running the plan.")
    c.say("With the new index the query is an index scan with the sort order for free: ~1.9 ms instead of ~1.8 s.")
    c.user("Now vacuum orders manually so we don't wait for autovacuum.")
    c.act(("run_sql", {"query": "VACUUM (VERBOSE, ANALYZE) orders"}))
    c.act(("get_table_stats", {"table": "orders"}, {"fresh": True}), text="Checking the table stats after vacuum.")
    c.say("VACUUM removed ~60M dead row versions across the table and its indexes; `n_dead_tup` is now 0 and stats are fresh. "
          "(Space is reusable but not returned to the OS; the bloat itself would need pg_repack in the window.)")
    c.recall("rrf", prefix="Quick one for the ticket I'm updating: ")
    c.user("How do the metrics look now?")
    c.act(("get_db_metrics", {"metric": "cpu_pct", "window": "1h"}))
    c.act(("get_db_metrics", {"metric": "replication_lag_s", "window": "1h"}), text="And lag.")
    c.say("CPU in the last hour is back to the pre-Monday baseline and replica lag is back to low single-digit seconds.")
    c.user("Check the other big tables while we're here: order_items and payments.")
    c.act(("list_indexes", {"table": "order_items"}), ("list_indexes", {"table": "payments"}))
    c.act(("get_table_stats", {"table": "order_items"}))
    c.act(("get_table_stats", {"table": "payments"}), text="And payments' stats.")
    c.say("Both look healthy: low dead-tuple ratios, recent autovacuums, and every index has scans. A couple of multi-column "
          "indexes on order_items overlap and could be consolidated later, not urgent.")
    c.user("Do a quick pass over the remaining tables too -- indexes and vacuum stats for each.")
    for tb in ["order_events", "customers", "inventory", "shipments", "carts", "merchants", "refunds", "addresses", "coupons", "audit_log"]:
        c.act(("list_indexes", {"table": tb}), ("get_table_stats", {"table": tb}))
    c.say("All ten tables are in reasonable shape: dead-tuple ratios under 5%, autovacuum ran within the last day on each, and "
          "no other zero-scan indexes of meaningful size. `audit_log` and `order_events` are the largest after orders and would "
          "benefit from time-based partitioning eventually.")
    c.user("Explain the next two heaviest statements as well -- the customer order history and the payments join.")
    c.act(("explain_analyze", {"query": "SELECT o.id, o.status, o.total_cents FROM orders o WHERE o.customer_id = 88123 ORDER BY o.created_at DESC LIMIT 20"}))
    c.act(("explain_analyze", {"query": "SELECT p.* FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.customer_id = 88123 AND p.created_at > '2024-10-01'"}),
          text="Now the payments join.")
    c.say("Both use appropriate indexes and run in tens to hundreds of milliseconds; nothing pathological.")
    c.user("What are the autovacuum settings? I want to prevent this from happening again.")
    c.act(("run_sql", {"query": "SELECT name, setting, unit, source FROM pg_settings WHERE name LIKE 'autovacuum%' OR name IN ('idle_in_transaction_session_timeout', 'statement_timeout', 'maintenance_work_mem', 'max_wal_size', 'checkpoint_timeout') ORDER BY name"}))
    c.say("Defaults everywhere: scale factor 0.2 (on a 60M-row table that's 12M dead rows before autovacuum triggers), cost "
          "limit 200, and no idle-in-transaction timeout. Recommendations:\n\n1. `idle_in_transaction_session_timeout = '15min'` "
          "for the reporting role (or globally) -- this alone would have prevented the incident.\n2. On `orders`: "
          "`autovacuum_vacuum_scale_factor = 0.01`, `autovacuum_vacuum_cost_limit = 2000`.\n3. Drop the unused 14 GB index "
          "and pg_repack `orders` during the maintenance window.\n4. Point reporting at a replica with `hot_standby_feedback` off.")
    c.user("Dry-run the table-level autovacuum change.")
    c.act(("apply_migration", {"sql": "ALTER TABLE orders SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_limit = 2000);", "dry_run": True}))
    c.say("The ALTER TABLE ... SET takes a short lock on orders; it's quick, but by the rule you gave it should go into the window with the index drop and pg_repack.")
    c.user("Check the 7-day connections graph again for the incident doc.")
    c.act(("get_db_metrics", {"metric": "active_connections", "window": "7d"}))
    c.say("Same series as the first pull: connections roughly doubled from Monday 08:00 until the fix.")
    c.user("Last: any errors in the log since the fix?")
    c.act(("read_pg_log", {"since": "2024-10-30T10:30:00Z", "lines": 80, "filter": "errors"}))
    c.say("Only a few statement timeouts from before the index finished building; nothing new after.")
    c.recall("queryid", prefix="Writing the incident doc. ")
    c.recall("xmin")
    c.recall("blocker", prefix="I need to talk to the reporting team. ")
    c.recall("lag")
    c.recall("unused", prefix="For the maintenance-window plan: ")
    c.recall("mw")
    return c


CONVERSATIONS = [
    conv_log_triage_01,
    conv_ecommerce_01,
    conv_refactor_01,
    conv_data_analysis_01,
    conv_support_crm_01,
    conv_k8s_01,
    conv_travel_01,
    conv_finance_recon_01,
    conv_security_01,
    conv_research_01,
    conv_ci_01,
    conv_db_perf_01,
]


# ============================================================================
# self-check
# ============================================================================

MAX_BYTES = 6_000_000
MAX_TOOL_CHARS = 61_440


def _texts(m):
    """Every string of a message that a context policy could keep or drop."""
    out = []
    if isinstance(m.get("content"), str):
        out.append(m["content"])
    for tc in m.get("tool_calls") or []:
        out.append(tc["function"]["name"])
        out.append(tc["function"]["arguments"])
    return out


def validate(convs, nbytes):
    errors = []

    def err(cid, msg):
        errors.append("%s: %s" % (cid, msg))

    if not 10 <= len(convs) <= 14:
        err("*", "expected 10-14 conversations, got %d" % len(convs))
    if nbytes > MAX_BYTES:
        err("*", "file is %d bytes (> %d)" % (nbytes, MAX_BYTES))
    seen_ids = []
    stats = {"messages": 0, "chars": 0, "facts": 0, "tool_msgs": 0, "tool_calls": 0, "parallel": 0,
             "repeats": 0, "pretty": 0, "tool_sizes": [], "turns": [], "gaps": [], "act_ratio": []}
    for conv in convs:
        cid = conv.get("id", "?")
        if sorted(conv) != ["description", "id", "messages", "needed_facts", "tools"]:
            err(cid, "unexpected keys %s" % sorted(conv))
        if cid in seen_ids:
            err(cid, "duplicate id")
        seen_ids.append(cid)
        tools = {}
        for t in conv["tools"]:
            if not (isinstance(t.get("name"), str) and isinstance(t.get("description"), str)
                    and t.get("parameters", {}).get("type") == "object"
                    and isinstance(t["parameters"].get("properties"), dict)):
                err(cid, "malformed tool %r" % t.get("name"))
                continue
            if t["name"] in tools:
                err(cid, "duplicate tool %s" % t["name"])
            tools[t["name"]] = t["parameters"]
        msgs = conv["messages"]
        if not msgs or msgs[0]["role"] != "system":
            err(cid, "first message must be system")
        turns = sum(1 for m in msgs if m["role"] in ("user", "assistant"))
        stats["turns"].append(turns)
        if not 30 <= turns <= 100:
            err(cid, "%d turns (want 30-100)" % turns)
        if not 60 <= len(msgs) <= 250:
            err(cid, "%d messages (want 60-250)" % len(msgs))
        call_ids = []
        by_call = {}   # (name, args) -> list of outputs
        i = 0
        while i < len(msgs):
            m = msgs[i]
            role = m.get("role")
            if role == "system" and i != 0:
                err(cid, "system message at %d" % i)
            if role in ("system", "user"):
                if sorted(m) != ["content", "role"] or not isinstance(m["content"], str) or not m["content"]:
                    err(cid, "bad %s message at %d" % (role, i))
                i += 1
                continue
            if role == "tool":
                err(cid, "orphan tool message at %d" % i)
                i += 1
                continue
            if role != "assistant":
                err(cid, "unknown role %r at %d" % (role, i))
                i += 1
                continue
            tcs = m.get("tool_calls")
            if not tcs:
                if sorted(m) != ["content", "role"] or not isinstance(m["content"], str) or not m["content"]:
                    err(cid, "bad assistant text message at %d" % i)
                i += 1
                continue
            if sorted(m) != ["content", "role", "tool_calls"] or not (m["content"] is None or isinstance(m["content"], str)):
                err(cid, "bad assistant tool-call message at %d" % i)
            if len(tcs) > 1:
                stats["parallel"] += 1
            for k, tc in enumerate(tcs):
                stats["tool_calls"] += 1
                if tc.get("type") != "function" or not isinstance(tc.get("id"), str):
                    err(cid, "bad tool call at %d" % i)
                if tc["id"] in call_ids:
                    err(cid, "duplicate call id %s" % tc["id"])
                call_ids.append(tc["id"])
                fn = tc["function"]
                if fn["name"] not in tools:
                    err(cid, "unknown tool %s at %d" % (fn["name"], i))
                try:
                    args = json.loads(fn["arguments"])
                except ValueError:
                    err(cid, "arguments not JSON at %d" % i)
                    args = None
                if not isinstance(args, dict):
                    err(cid, "arguments not an object at %d" % i)
                elif fn["name"] in tools:
                    schema = tools[fn["name"]]
                    for r in schema.get("required", []):
                        if r not in args:
                            err(cid, "missing required arg %s.%s at %d" % (fn["name"], r, i))
                    for a in args:
                        if a not in schema["properties"]:
                            err(cid, "unknown arg %s.%s at %d" % (fn["name"], a, i))
                j = i + 1 + k
                if j >= len(msgs) or msgs[j].get("role") != "tool" or msgs[j].get("tool_call_id") != tc["id"]:
                    err(cid, "tool call %s at %d not answered at %d" % (tc["id"], i, j))
                    continue
                res = msgs[j]
                if sorted(res) != ["content", "role", "tool_call_id"] or not isinstance(res["content"], str):
                    err(cid, "bad tool message at %d" % j)
                    continue
                out = res["content"]
                stats["tool_sizes"].append(len(out))
                if len(out) > MAX_TOOL_CHARS:
                    err(cid, "tool output at %d is %d chars" % (j, len(out)))
                if out[:1] in "{[" and "\n  " in out[:200]:
                    stats["pretty"] += 1
                key = fn["name"] + " " + fn["arguments"]
                if key in by_call and out in by_call[key]:
                    stats["repeats"] += 1
                by_call.setdefault(key, []).append(out)
            i += 1 + len(tcs)
        stats["tool_msgs"] += sum(1 for m in msgs if m["role"] == "tool")
        n_act = sum(1 for m in msgs if m["role"] == "assistant" and m.get("tool_calls"))
        n_txt = sum(1 for m in msgs if m["role"] == "assistant" and not m.get("tool_calls"))
        stats["act_ratio"].append((cid, n_act, n_txt))
        if n_act <= n_txt:
            err(cid, "only %d of %d assistant messages call tools" % (n_act, n_act + n_txt))
        if not any(len(v) > 1 and v[0] == v[1] for v in by_call.values()):
            err(cid, "no exact repeat of a tool call + output")
        facts = conv["needed_facts"]
        if not 4 <= len(facts) <= 10:
            err(cid, "%d needed_facts (want 4-10)" % len(facts))
        for f in facts:
            fact, a, b = f.get("fact"), f.get("introduced_at"), f.get("needed_at")
            if sorted(f) != ["fact", "introduced_at", "needed_at"] or not isinstance(fact, str) or len(fact) < 4:
                err(cid, "malformed fact %r" % f)
                continue
            if not (0 <= a < b < len(msgs) - 1):
                err(cid, "fact %s: bad indices %r" % (fact, (a, b)))
                continue
            stats["gaps"].append(b - a)
            if b - a < 20:
                err(cid, "fact %s: needed_at - introduced_at = %d < 20" % (fact, b - a))
            if msgs[a]["role"] not in ("tool", "user"):
                err(cid, "fact %s: introduced in a %s message" % (fact, msgs[a]["role"]))
            if msgs[b]["role"] != "user":
                err(cid, "fact %s: needed_at is not a user message" % fact)
            if msgs[b + 1]["role"] != "assistant" or fact not in (msgs[b + 1].get("content") or ""):
                err(cid, "fact %s: answer at %d does not contain it" % (fact, b + 1))
            where = [k for k, m in enumerate(msgs) if any(fact in s for s in _texts(m))]
            if where != [a, b + 1]:
                err(cid, "fact %s: occurs in messages %s, want exactly [%d, %d]" % (fact, where, a, b + 1))
            if any(fact in t["description"] or fact in json.dumps(t) for t in conv["tools"]) or fact in conv["description"]:
                err(cid, "fact %s: leaks into tools/description" % fact)
        stats["messages"] += len(msgs)
        stats["chars"] += sum(len(s) for m in msgs for s in _texts(m))
        stats["facts"] += len(facts)
    sizes = sorted(stats["tool_sizes"])
    if sizes:
        med = sizes[len(sizes) // 2]
        if not 2000 <= med <= 20000:
            err("*", "median tool output %d chars (want 2-20 KB)" % med)
    if stats["parallel"] == 0:
        err("*", "no parallel tool calls")
    if stats["pretty"] == 0:
        err("*", "no pretty-printed JSON tool outputs")
    return errors, stats


def summarize(convs, stats, nbytes):
    sizes = sorted(stats["tool_sizes"])
    print("conversations: %d" % len(convs))
    print("messages: %d (tool results: %d, tool calls: %d, parallel batches: %d)" % (
        stats["messages"], stats["tool_msgs"], stats["tool_calls"], stats["parallel"]))
    print("turns per conversation: min %d / max %d" % (min(stats["turns"]), max(stats["turns"])))
    print("total characters (message text + tool-call arguments): %d" % stats["chars"])
    print("tool output chars: min %d / median %d / p90 %d / max %d; >20 KB: %d" % (
        sizes[0], sizes[len(sizes) // 2], sizes[int(len(sizes) * 0.9)], sizes[-1],
        sum(1 for s in sizes if s > 20000)))
    print("exact repeated tool results: %d; pretty-printed JSON results: %d" % (stats["repeats"], stats["pretty"]))
    print("facts: %d (gap introduced->needed: min %d / median %d / max %d messages)" % (
        stats["facts"], min(stats["gaps"]), sorted(stats["gaps"])[len(stats["gaps"]) // 2], max(stats["gaps"])))
    print("file: %s, %d bytes" % (os.path.relpath(OUT_FILE), nbytes))
    for c in convs:
        m = c["messages"]
        print("  %-22s %3d msgs %3d turns (%2d assistant with tool calls, %2d text) %4d KB %2d facts" % (
            c["id"], len(m), sum(1 for x in m if x["role"] in ("user", "assistant")),
            sum(1 for x in m if x["role"] == "assistant" and x.get("tool_calls")),
            sum(1 for x in m if x["role"] == "assistant" and not x.get("tool_calls")),
            sum(len(s) for x in m for s in _texts(x)) // 1024, len(c["needed_facts"])))


def main():
    if "--check" in sys.argv:
        with open(OUT_FILE, "rb") as f:
            raw = f.read()
        convs = json.loads(raw.decode("utf-8"))
    else:
        convs = [fn(SEED + 1000 * k).to_dict() for k, fn in enumerate(CONVERSATIONS)]
        raw = (json.dumps(convs, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
        with open(OUT_FILE, "wb") as f:
            f.write(raw)
    errors, stats = validate(convs, len(raw))
    summarize(convs, stats, len(raw))
    if errors:
        print("\nSELF-CHECK FAILED (%d problems):" % len(errors))
        for e in errors[:200]:
            print("  " + e)
        sys.exit(1)
    print("self-check: OK")


if __name__ == "__main__":
    main()
