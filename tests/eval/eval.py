#!/usr/bin/env python3
"""Suggestion quality on real conversations, measured through the real service (make eval).

For each data set a private redis-server and build/tandemd (TANDEM_KB = the set's kb.jsonl)
are started; cdp's transcripts.jsonl is imported through POST /v1/transcripts; every dev case is
written to Redis as a conversation (meta brand) and GET .../suggestions?k=5 is asked. Measured:
R@1/3/5 of gold_kb_id among the suggestions' kb_ids, ROUGE-L F1 of the top suggestion and the
best of the top 3 against next_agent_reply (@handles and URLs removed), and the server-side
took_ms. Two baselines are computed here, in the same run, from the same files:
  popularity  each brand's most-cited KB entries in the imported transcripts
  bm25        plain BM25 (k1 1.2, b 0.75, no stemming) over title+body+tags, query = all
              customer turns, brand-scoped like tandem
With --loo BIN (run.sh builds tests/eval/loo.c), the engine is also measured in process on the
leave-one-out yardstick: each of cdp's transcripts asked with the memory of all the others
(416 cases instead of 62, split by whether memory had ever seen the gold article), the dev
cases again, and the engine's latency on 50-message conversations; its table is printed after
this one and its figures go to eval.json under "in_process".
Python 3 standard library only. Writes build/eval.json; exit status 1 when a target is missed.

  python3 tests/eval/eval.py [--data DIR] [--out build/eval.json] [--only cdp|abcd] [--loo BIN]
Environment: TANDEM_EVAL_DATA (default ../shared/data beside the repository), TANDEMD.
"""
import argparse
import collections
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import RedisServer, Tandemd  # noqa: E402

PREFIX = "tandem:"
TARGETS = {"cdp": 0.48, "abcd": 0.75}  # R@3, from the issue
K = 5

# ---------------------------------------------------------------------------------------------
# text helpers (baselines and ROUGE)

STOP = set("""a about above after again against all am an and any are as at be because been before being
below between both but by can cannot could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself me more most
my myself no nor not of off on once only or other ought our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why with would you your yours
yourself yourselves hi hello hey thanks thank please""".split())

WORD = re.compile(r"[^\W_]+", re.U)
HANDLE = re.compile(r"@\w+")
URL = re.compile(r"(?:https?://|www\.)\S+", re.I)


def words(text):
    return WORD.findall(text.lower())


def rouge_tokens(text):
    return words(URL.sub(" ", HANDLE.sub(" ", text or "")))


def rouge_l(cand, ref):
    """ROUGE-L F1 over word tokens (LCS)."""
    a, b = rouge_tokens(cand), rouge_tokens(ref)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


ARCHIVE = re.compile(r"^(?:https?://)?(?:www\.)?web\.archive\.org/web/[^/]+/", re.I)


def norm_url(u):
    """The same normalisation tandem applies (text_url_normalize)."""
    u = u.strip()
    for _ in range(3):
        v = ARCHIVE.sub("", u)
        if v == u:
            break
        u = re.sub(r"^(https?):/(?!/)", r"\1://", v, flags=re.I)
    u = re.sub(r"^[a-z]+://", "", u, flags=re.I)
    u = re.sub(r"^www\.", "", u, flags=re.I)
    u = u.split("#", 1)[0]
    while u and (u[-1] in ".,;:!?)]}>'\"*/" or u.endswith("\u2026") or u.endswith("\u201d") or u.endswith("\u2019")):
        u = u[:-1]
    if u.endswith("?"):
        u = u[:-1]
    u = u.rstrip("/")
    host, sep, rest = u.partition("/")
    host = re.sub(r":\d+$", "", host)
    u = (host + sep + rest).lower()
    return u.replace("/?", "?")


def links(text, by_url):
    out = []
    for u in re.findall(r"(?:https?://|www\.)[^\s\"<>]+", text or "", re.I):
        n = norm_url(u)
        k = by_url.get(n)
        if k is None and "?" in n:
            k = by_url.get(n.split("?", 1)[0])
        if k is not None and k not in out:
            out.append(k)
    return out


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def brands_of(e):
    b = e.get("brands") or ([e["brand"]] if e.get("brand") else [])
    return {x.lower() for x in b}


def allowed(e, brand):
    b = brands_of(e)
    return not brand or not b or brand.lower() in b


class BM25:
    def __init__(self, kb, k1=1.2, b=0.75):
        self.kb, self.k1, self.b = kb, k1, b
        self.docs = []
        for e in kb:
            toks = [w for w in words(" ".join([e.get("title", ""), e["body"], " ".join(e.get("tags", []))]))
                    if w not in STOP]
            self.docs.append(collections.Counter(toks))
        self.lens = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lens) / len(self.lens)) if self.lens else 1.0
        df = collections.Counter(t for d in self.docs for t in d)
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def search(self, text, brand, k):
        q = collections.Counter(w for w in words(text) if w not in STOP and w in self.idf)
        scores = []
        for i, d in enumerate(self.docs):
            if not allowed(self.kb[i], brand):
                continue
            s = 0.0
            for t, qn in q.items():
                tf = d.get(t)
                if tf:
                    s += qn * self.idf[t] * tf * (self.k1 + 1) / (
                        tf + self.k1 * (1 - self.b + self.b * self.lens[i] / self.avg))
            if s > 0:
                scores.append((-s, self.kb[i]["id"], i))
        scores.sort()
        return [i for _, _, i in scores[:k]]


# ---------------------------------------------------------------------------------------------
# measuring


class Scores:
    def __init__(self):
        self.hits = collections.Counter()
        self.n_gold = 0
        self.rouge1, self.rouge3 = [], []

    def add(self, gold, kb_ids, texts, reply):
        if gold:
            self.n_gold += 1
            for k in (1, 3, 5):
                if gold in kb_ids[:k]:
                    self.hits[k] += 1
        if reply:
            self.rouge1.append(rouge_l(texts[0], reply) if texts else 0.0)
            self.rouge3.append(max([rouge_l(t, reply) for t in texts[:3]] or [0.0]))

    def result(self):
        r = {"cases_with_gold": self.n_gold, "cases_with_reply": len(self.rouge1)}
        for k in (1, 3, 5):
            r["R@%d" % k] = round(self.hits[k] / self.n_gold, 4) if self.n_gold else None
        r["rougeL_top1"] = round(statistics.mean(self.rouge1), 4) if self.rouge1 else None
        r["rougeL_best3"] = round(statistics.mean(self.rouge3), 4) if self.rouge3 else None
        return r


def write_case(redis, conv_id, case):
    key = "%sconv:{%s}:" % (PREFIX, conv_id)
    redis.cmd("DEL", key + "msgs", key + "meta")
    for i, m in enumerate(case["messages"]):
        # explicit ids: 1 ms apart, so every message has its own stream time
        redis.cmd("XADD", key + "msgs", "%d-0" % (1_600_000_000_000 + i), "role", m["role"], "text", m["text"] or "")
    meta = ["lang", case.get("lang") or "en"]
    if case.get("brand"):
        meta += ["brand", case["brand"]]
    redis.cmd("HSET", key + "meta", *meta)


def evaluate(name, data_dir, log):
    kb_path = data_dir / name / "kb.jsonl"
    tr_path = data_dir / name / "transcripts.jsonl"
    dev = read_jsonl(data_dir / name / "dev_cases.jsonl")
    kb = read_jsonl(kb_path)
    by_id = {e["id"]: e for e in kb}
    by_url = {}
    for e in kb:
        if e.get("url"):
            by_url.setdefault(norm_url(e["url"]), e["id"])
    transcripts = read_jsonl(tr_path) if tr_path.exists() else []

    # popularity baseline: citations per brand in the transcripts
    pop = collections.defaultdict(collections.Counter)
    rep = {}
    for t in transcripts:
        for m in t["messages"]:
            if m["role"] != "agent":
                continue
            for kid in links(m["text"], by_url):
                pop[(t.get("brand") or "").lower()][kid] += 1
                rep.setdefault(((t.get("brand") or "").lower(), kid), m["text"])
    bm25 = BM25(kb)

    out = {"dataset": name, "kb_entries": len(kb), "transcripts": len(transcripts), "dev_cases": len(dev)}
    redis = RedisServer()
    srv = None
    try:
        srv = Tandemd(redis, env={"TANDEM_KB": str(kb_path), "TANDEM_LOG_LEVEL": "warn"})
        if transcripts:
            body = tr_path.read_bytes()
            t0 = time.monotonic()
            r = srv.request("POST", "/v1/transcripts", body=body,
                            headers={"Content-Type": "application/x-ndjson"}, timeout=120)
            if r.status != 200:
                raise SystemExit("eval: importing %s failed: %r" % (tr_path, r))
            out["import"] = dict(r.json, seconds=round(time.monotonic() - t0, 3))
            log("%s: imported %d transcripts, %d replies" % (name, r.json["imported"], r.json["replies"]))
        systems = {"tandem": Scores(), "popularity": Scores(), "bm25": Scores()}
        took = []
        for n, case in enumerate(dev):
            conv_id = re.sub(r"[^A-Za-z0-9._-]", "_", case["id"])[:120] or "case-%d" % n
            write_case(redis, conv_id, case)
            r = srv.request("GET", "/v1/conversations/%s/suggestions?k=%d" % (conv_id, K))
            if r.status != 200:
                raise SystemExit("eval: %s: %r" % (conv_id, r))
            sug = r.json["suggestions"]
            took.append(r.json["took_ms"])
            gold, reply = case.get("gold_kb_id"), case.get("next_agent_reply")
            systems["tandem"].add(gold, [s.get("kb_id") for s in sug], [s["text"] for s in sug], reply)
            brand = (case.get("brand") or "").lower()
            top = [kid for kid, _ in sorted(pop[brand].items(), key=lambda x: (-x[1], x[0]))][:K]
            systems["popularity"].add(gold, top, [rep[(brand, kid)] for kid in top], reply)
            cust = "\n".join(m["text"] or "" for m in case["messages"] if m["role"] == "customer")
            hits = bm25.search(cust, case.get("brand"), K)
            systems["bm25"].add(gold, [kb[i]["id"] for i in hits], [kb[i]["body"] for i in hits], reply)
        out["systems"] = {k: v.result() for k, v in systems.items()}
        took.sort()
        out["took_ms"] = {"p50": took[len(took) // 2], "p99": took[min(len(took) - 1, int(len(took) * 0.99))],
                          "max": took[-1]} if took else None
        # the same question again is answered from the cache
        if dev:
            conv_id = re.sub(r"[^A-Za-z0-9._-]", "_", dev[-1]["id"])[:120]
            cached = [srv.request("GET", "/v1/conversations/%s/suggestions?k=%d" % (conv_id, K)).json["took_ms"]
                      for _ in range(20)]
            out["took_ms_cached_p50"] = sorted(cached)[len(cached) // 2]
        rc = srv.stop()
        srv.check(require_alive=False)
        if rc != 0:
            raise SystemExit("eval: tandemd exited with %s" % rc)
    finally:
        if srv is not None:
            srv.close()
        redis.close()
    del by_id
    return out


def fmt(v, pct=False):
    if v is None:
        return "    -"
    return "%5.3f" % v


def in_process(binary, data, log):
    """Runs the leave-one-out harness, prints its table, returns its figures (None on failure:
    the server-level figures above stand on their own)."""
    log("leave-one-out over cdp's transcripts (in process)")
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        r = subprocess.run([binary, "--data", str(data), "--json", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=600)
        if r.returncode != 0:
            log("%s failed (%d): %s" % (binary, r.returncode, r.stderr.strip()))
            return None
        print("\nin process (tests/eval/loo.c): cdp-loo = each transcript asked with the memory of all the others;")
        print("'gold seen' = memory holds a citation of the gold article by the brand's agents, 'unseen' = it does not")
        print(r.stdout.rstrip())
        with open(path) as f:
            return json.load(f)
    finally:
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("TANDEM_EVAL_DATA") or str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(REPO / "build" / "eval.json"))
    ap.add_argument("--only", choices=sorted(TARGETS))
    ap.add_argument("--loo", metavar="BIN", help="the in-process harness (tests/eval/loo.c) to run as well")
    args = ap.parse_args()
    data = Path(args.data)
    names = [args.only] if args.only else ["cdp", "abcd"]
    for nm in names:
        if not (data / nm / "kb.jsonl").exists() or not (data / nm / "dev_cases.jsonl").exists():
            raise SystemExit("eval: %s/%s/{kb,dev_cases}.jsonl not found; set TANDEM_EVAL_DATA or --data "
                             "to the shared data directory" % (data, nm))

    def log(msg):
        print("eval: " + msg, file=sys.stderr, flush=True)

    results = []
    for nm in names:
        log("%s: running" % nm)
        results.append(evaluate(nm, data, log))

    print()
    print("%-6s %-11s %5s %6s %6s %6s %9s %9s" % ("data", "system", "n", "R@1", "R@3", "R@5", "RL-top1", "RL-best3"))
    print("-" * 66)
    failed = []
    for res in results:
        for sysname in ("tandem", "popularity", "bm25"):
            s = res["systems"][sysname]
            if sysname == "popularity" and not res["transcripts"]:
                continue  # no history to count citations in
            print("%-6s %-11s %5d %6s %6s %6s %9s %9s" % (
                res["dataset"], sysname, s["cases_with_gold"], fmt(s["R@1"]), fmt(s["R@3"]), fmt(s["R@5"]),
                fmt(s["rougeL_top1"]), fmt(s["rougeL_best3"])))
        t = res["took_ms"]
        print("%-6s server took_ms p50 %.3f  p99 %.3f  (cached p50 %.3f)" % (
            res["dataset"], t["p50"], t["p99"], res.get("took_ms_cached_p50", float("nan"))))
        target = TARGETS[res["dataset"]]
        got = res["systems"]["tandem"]["R@3"]
        ok = got is not None and got >= target
        res["target_R@3"] = target
        res["target_met"] = ok
        print("%-6s target R@3 >= %.2f: %s (%.3f)" % (res["dataset"], target, "met" if ok else "MISSED", got or 0))
        print("-" * 66)
        if not ok:
            failed.append(res["dataset"])
    out = {"k": K, "results": results, "generated_unix": int(time.time())}
    if args.loo and not args.only:
        out["in_process"] = in_process(args.loo, data, log)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote %s" % args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
