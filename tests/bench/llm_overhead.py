#!/usr/bin/env python3
"""tandem's overhead on engine=llm, for `make bench` (Python 3 standard library only).

    llm_overhead.py --tandem-port P --token T --redis-port R --fake-port F --texts FILE
                    [--requests N] [--modes normal,slow_first_byte:50] [--conv-prefix bench-cold-1]

For each mode of tests/fake_llm/fake_openai.py and each of N rounds: one new customer message
(XADD, so the LLM cache misses), then GET …/suggestions?engine=llm on tandemd (timed: the client
latency); then the exact chat-completions body tandem sent (read back from the fake's /_prompts)
is posted straight to the fake and its whole streamed answer read (timed: the fake's own latency).
Both clients keep their connection alive, as tandem's libcurl does. The two series share the
machine's noise because they alternate. Prints one JSON object on stdout:

    {"requests", "modes": {mode: {"tandem": {p50_ms, p90_ms, p99_ms, max_ms, mean_ms},
                                  "fake": {...}, "paired_overhead": {...},
                                  "overhead_p50_ms", "overhead_p99_ms", "slow_rounds",
                                  "llm_answers", "fresh", "fallbacks": {reason: n}}},
     "fake_p50_ms", "fake_p99_ms", "tandem_p50_ms", "tandem_p99_ms",
     "overhead_p50_ms", "overhead_p99_ms"}   <- the first mode's figures, at the top level

overhead_pXX_ms = tandem pXX - fake pXX; paired_overhead = the distribution of (tandem - fake)
per round; slow_rounds = rounds where tandem took 250 ms more than the fake. Exit status 1 when
nothing could be measured.
"""

import argparse
import http.client
import json
import math
import socket
import sys
import time


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")


def resp_cmd(r, *args):
    """One Redis command (RESP) on r; returns the reply line (bulk strings: their value)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    r.sock.sendall(b"".join(out))
    f = r.f
    line = f.readline()
    if line.startswith(b"$"):
        n = int(line[1:])
        val = f.read(n + 2)[:-2] if n >= 0 else None
        return val.decode() if val is not None else None
    if line.startswith(b"-"):
        raise RuntimeError("redis: %s" % line.decode().strip())
    return line.decode().strip()


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return round(s[k], 3)


def summary(values):
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": pct(values, 50), "p90_ms": pct(values, 90), "p99_ms": pct(values, 99),
            "max_ms": round(max(values), 3), "mean_ms": round(sum(values) / len(values), 3)}


class Client:
    """A keep-alive HTTP/1.1 client that reconnects when the server closed the connection."""

    def __init__(self, port, timeout=15.0):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def call(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if r.will_close:
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem-port", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--fake-port", type=int, required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--modes", default="normal,slow_first_byte:50")
    ap.add_argument("--conv-prefix", default="bench-cold-1")
    ap.add_argument("--prefix", default="tandem:")
    a = ap.parse_args()

    with open(a.texts, encoding="utf-8") as f:
        texts = [t.strip() for t in f if t.strip()] or ["Hi, where is my refund?"]
    rs = Redis(a.redis_port)
    tandem = Client(a.tandem_port)
    fake = Client(a.fake_port)
    ctl = Client(a.fake_port)
    auth = {"Authorization": "Bearer " + a.token}

    def fake_ctl(path, obj=None):
        st, data = ctl.call("POST" if obj is not None else "GET", path,
                            body=json.dumps(obj).encode() if obj is not None else None,
                            headers={"Content-Type": "application/json"} if obj is not None else None)
        if st != 200:
            raise RuntimeError("fake %s -> %d" % (path, st))
        return json.loads(data)

    out = {"requests": a.requests, "modes": {}}
    for mi, mode in enumerate([m for m in a.modes.split(",") if m]):
        conv = "%s%d" % (a.conv_prefix, mi)
        key = "%sconv:{%s}:msgs" % (a.prefix, conv)
        t_tandem, t_fake, paired = [], [], []
        llm = fresh = 0
        fallbacks = {}
        # one untimed round first: connections opened, the first prompt built
        for i in range(a.requests + 1):
            fake_ctl("/_reset", {})
            fake_ctl("/_control", {"default": mode})
            mid = resp_cmd(rs, "XADD", key, "*", "role", "customer", "text", texts[i % len(texts)])
            t0 = time.perf_counter()
            st, data = tandem.call("GET", "/v1/conversations/%s/suggestions?engine=llm&k=3" % conv, headers=auth)
            dt = (time.perf_counter() - t0) * 1000.0
            if st != 200:
                raise RuntimeError("tandem answered %d: %r" % (st, data[:200]))
            ans = json.loads(data)
            prompts = fake_ctl("/_prompts")["prompts"]
            if not prompts:
                fallbacks[ans.get("fallback_reason") or "no_prompt"] = fallbacks.get(
                    ans.get("fallback_reason") or "no_prompt", 0) + 1
                continue
            body = prompts[-1]["body"].encode("utf-8")
            hdrs = {"Content-Type": "application/json",
                    "Accept": "text/event-stream" if prompts[-1].get("stream") else "application/json"}
            if prompts[-1].get("auth"):
                hdrs["Authorization"] = prompts[-1]["auth"]
            t0 = time.perf_counter()
            fst, fdata = fake.call("POST", "/v1/chat/completions", body=body, headers=hdrs)
            df = (time.perf_counter() - t0) * 1000.0
            if fst != 200 or (prompts[-1].get("stream") and b"[DONE]" not in fdata):
                raise RuntimeError("the fake answered the replay with %d" % fst)
            if i == 0:
                continue
            if ans.get("engine") == "llm":
                llm += 1
            else:
                r = ans.get("fallback_reason") or "?"
                fallbacks[r] = fallbacks.get(r, 0) + 1
            fresh += ans.get("based_on") == mid
            t_tandem.append(dt)
            t_fake.append(df)
            paired.append(dt - df)
        st_t, st_f = summary(t_tandem), summary(t_fake)
        entry = {"conversation": conv, "tandem": st_t, "fake": st_f, "paired_overhead": summary(paired),
                 "llm_answers": llm, "fresh": fresh, "fallbacks": fallbacks,
                 # answers that took a quarter second more than the fake needed: tandem stalled
                 "slow_rounds": sum(1 for d in paired if d > 250.0),
                 "overhead_p50_ms": None, "overhead_p99_ms": None}
        if st_t["n"] and st_f["n"]:
            entry["overhead_p50_ms"] = round(st_t["p50_ms"] - st_f["p50_ms"], 3)
            entry["overhead_p99_ms"] = round(st_t["p99_ms"] - st_f["p99_ms"], 3)
        out["modes"][mode] = entry
        if mi == 0:
            out.update({"mode": mode, "fake_p50_ms": st_f.get("p50_ms"), "fake_p99_ms": st_f.get("p99_ms"),
                        "tandem_p50_ms": st_t.get("p50_ms"), "tandem_p99_ms": st_t.get("p99_ms"),
                        "overhead_p50_ms": entry["overhead_p50_ms"], "overhead_p99_ms": entry["overhead_p99_ms"]})
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if any(m["tandem"]["n"] for m in out["modes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
