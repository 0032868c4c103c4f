"""Soak: tandemd under steady load plus faults for a bounded time, sampling its RSS, open files
and threads; they must stay flat.

Runs a private redis-server and tandemd (tests/e2e/harness.py) on loopback and, for SOAK_SECONDS
(default 600):
  * load: keep-alive clients asking suggestions, summary and context of 20 conversations, and
    feedback writes (SOAK_RATE requests per second in all, default 300);
  * live push: ~50 event-stream subscribers, 10 of them replaced every second;
  * messages: 20 XADDs per second spread over the conversations;
  * faults: Redis killed and restarted every SOAK_RESTART_S seconds (default 60, AOF on), and
    paused (SIGSTOP) for 2 s half-way between restarts.
Every 10 s one row goes to build/soak.csv: elapsed seconds, RSS (KiB), open fds, threads, SSE
subscribers, requests answered by status so far. At the end: the verdict on flatness (the mean of
the last third of the samples within 10 % of the middle third for RSS less the reply memory's
tandem_memory_bytes, and within a few units for fds and threads), the status counts, and whether tandemd recovered and stopped cleanly on
SIGTERM. Exit 0 when flat and clean.

    SOAK_SECONDS=120 python3 tests/soak/soak.py       # or: make soak / scripts/soak.sh
"""

import collections
import csv
import http.client
import os
import random
import re
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE.parent / "faults"))

from harness import REPO_ROOT, RedisServer, RespClient, Tandemd, metric_sum, wait_until  # noqa: E402
from writes import Writer  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "300"))
RESTART_S = float(os.environ.get("SOAK_RESTART_S", "60"))
# "bounded" (default): 64 feedback ids per client, repeated, so the data set stays the same size;
# "unique": every feedback is new and its reply is learned, so the reply memory grows (the verdict
# then judges RSS minus tandem_memory_bytes)
FEEDBACK_IDS = os.environ.get("SOAK_FEEDBACK_IDS", "bounded")
SAMPLE_S = 10.0
CSV = Path(os.environ.get("SOAK_CSV", str(REPO_ROOT / "build" / "soak.csv")))
N_CONV = 20
N_SUBS = 50

TEXTS = ["Where is my refund? It has been two weeks.", "My card was declined at checkout.",
         "I want to cancel my order before it ships.", "You charged me twice, this is unacceptable!",
         "Can I change the delivery address?", "thanks, that helped"]


def proc_stats(pid):
    with open("/proc/%d/status" % pid) as f:
        st = f.read()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", st, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", st, re.M).group(1))
    return rss, len(os.listdir("/proc/%d/fd" % pid)), threads


class Soak:
    def __init__(self):
        self.stop = threading.Event()
        self.statuses = collections.Counter()
        self.lock = threading.Lock()
        self.redis = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "everysec"])
        self.tmp = self.redis.dir
        env = Writer.server_env(self.tmp)
        env.update({"TANDEM_MAX_CONNECTIONS": "4096", "TANDEM_LOG_LEVEL": "warn"})
        self.srv = Tandemd(self.redis, env=env)
        self.convs = ["soak-%d" % i for i in range(N_CONV)]
        self.redis_lock = threading.Lock()  # restarts vs. the XADD thread's own client

    def count(self, status):
        with self.lock:
            self.statuses[status] += 1

    def seed(self):
        for c in self.convs:
            key = "tandem:conv:{%s}:msgs" % c
            if not self.redis.cmd("EXISTS", key):
                for i in range(30):
                    self.redis.cmd("XADD", key, "*", "role", "customer" if i % 2 == 0 else "agent",
                                   "text", random.choice(TEXTS))
                self.redis.cmd("HSET", "tandem:conv:{%s}:meta" % c, "customer_id", "cust-" + c)

    # -- workers -----------------------------------------------------------------------------

    def load(self, idx, share):
        interval = share / RATE
        conn = None
        writer = Writer(self.srv)
        rc = RespClient(port=self.redis.port, timeout=2)  # hiredis-like: one client per thread
        n = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            c = random.choice(self.convs)
            n += 1
            try:
                if conn is None:
                    conn = self.srv.connection(timeout=5)
                if n % 20 == 0 and writer.sids:
                    # a bounded set of feedback ids, each always on the same suggestion: the write
                    # path runs (the first time stores, the rest are recognised duplicates) without
                    # growing the data set, so a growing RSS means a leak, not more replies learned
                    fid = n // 20 if FEEDBACK_IDS == "unique" else n // 20 % 64
                    r = writer.try_once("soak-fb-%d-%d" % (idx, fid), timeout=5)
                    self.count(r.status if r is not None else "conn_error")
                else:
                    if not writer.sids:
                        try:
                            writer.prepare(rc.cmd, conv=self.convs[idx])
                        except Exception:  # noqa: BLE001 - Redis may be restarting
                            pass
                    path = random.choice(["suggestions", "summary", "context", "suggestions?k=5"])
                    r = self.srv.request("GET", "/v1/conversations/%s/%s" % (c, path), conn=conn)
                    self.count(r.status)
                    if (r.header("Connection") or "").lower() == "close":
                        conn.close()
                        conn = None
            except (OSError, http.client.HTTPException):
                self.count("conn_error")
                if conn:
                    conn.close()
                conn = None
            left = interval - (time.monotonic() - t0)
            if left > 0:
                self.stop.wait(left)
        if conn:
            conn.close()
        rc.close()

    def subscribers(self):
        socks = collections.deque()
        while not self.stop.is_set():
            while len(socks) >= N_SUBS:
                socks.popleft().close()
                if len(socks) < N_SUBS - 10:
                    break
            for _ in range(10):
                if len(socks) >= N_SUBS:
                    break
                try:
                    s = socket.create_connection((self.srv.host, self.srv.port), timeout=5)
                    s.setblocking(False)
                    s.send(("GET /v1/conversations/%s/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n"
                            % (random.choice(self.convs), self.srv.base_host, self.srv.token)).encode())
                    socks.append(s)
                except OSError:
                    self.count("sse_conn_error")
            # drain what they got so they stay fast readers
            for s in socks:
                try:
                    while s.recv(65536):
                        pass
                except (BlockingIOError, OSError):
                    pass
            self.stop.wait(1.0)
        for s in socks:
            s.close()

    def messages(self):
        rc = RespClient(port=self.redis.port, timeout=2)
        while not self.stop.is_set():
            c = random.choice(self.convs)
            try:
                with self.redis_lock:
                    rc.cmd("XADD", "tandem:conv:{%s}:msgs" % c, "MAXLEN", "~", "200", "*", "role", "customer",
                                   "text", random.choice(TEXTS))
            except Exception:  # noqa: BLE001 - Redis is being restarted
                pass
            self.stop.wait(1.0 / 20)
        rc.close()

    def faults(self):
        t0 = time.monotonic()
        next_pause = RESTART_S / 2
        next_restart = RESTART_S
        while not self.stop.is_set():
            el = time.monotonic() - t0
            if el >= next_pause:
                next_pause += RESTART_S
                self.redis.pause()
                self.stop.wait(2.0)
                self.redis.resume()
                print("  [%5.0fs] Redis paused for 2 s" % el, flush=True)
            if el >= next_restart:
                next_restart += RESTART_S
                with self.redis_lock:
                    self.redis.restart()
                self.seed()
                print("  [%5.0fs] Redis killed and restarted" % el, flush=True)
            self.stop.wait(0.2)

    # -- run ---------------------------------------------------------------------------------

    def run(self):
        self.seed()
        pid = self.srv.proc.pid
        CSV.parent.mkdir(parents=True, exist_ok=True)
        threads = [threading.Thread(target=self.load, args=(0, 2), daemon=True),
                   threading.Thread(target=self.load, args=(1, 2), daemon=True),
                   threading.Thread(target=self.subscribers, daemon=True),
                   threading.Thread(target=self.messages, daemon=True),
                   threading.Thread(target=self.faults, daemon=True)]
        print("soak: %.0f s, %.0f req/s, Redis restart every %.0f s; samples -> %s" % (SECONDS, RATE, RESTART_S, CSV),
              flush=True)
        for t in threads:
            t.start()
        rows = []
        t0 = time.monotonic()
        with open(CSV, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["elapsed_s", "rss_kib", "fds", "threads", "sse_subscribers", "ok", "errors",
                        "memory_bytes", "memory_replies"])
            while True:
                el = time.monotonic() - t0
                if not self.srv.alive():
                    print("soak: tandemd died", flush=True)
                    break
                rss, fds, thr = proc_stats(pid)
                try:
                    m = self.srv.metrics()
                    subs = int(metric_sum(m, "tandem_sse_subscribers"))
                    mem_b, mem_n = int(metric_sum(m, "tandem_memory_bytes")), int(metric_sum(m, "tandem_memory_replies"))
                except Exception:  # noqa: BLE001
                    subs = mem_b = mem_n = -1
                with self.lock:
                    ok = sum(v for k, v in self.statuses.items() if isinstance(k, int) and k < 300)
                    bad = sum(self.statuses.values()) - ok
                row = [round(el), rss, fds, thr, subs, ok, bad, mem_b, mem_n]
                rows.append(row)
                w.writerow(row)
                f.flush()
                print("  [%5.0fs] rss %6d KiB  fds %4d  threads %3d  sse %4d  ok %7d  errors %5d  memory %d B / %d"
                      % tuple(row), flush=True)
                if el >= SECONDS:
                    break
                time.sleep(min(SAMPLE_S, max(0.5, SECONDS - el)))
        self.stop.set()
        for t in threads:
            t.join(15)
        return rows

    def finish(self, rows):
        ok = True
        # recovered by itself after the last fault
        try:
            wait_until(lambda: self.srv.request("GET", "/readyz", token=False).status == 200, 15, interval=0.2,
                       what="ready at the end")
            wait_until(lambda: metric_sum(self.srv.metrics(), "tandem_sse_subscribers") == 0, 10, interval=0.2,
                       what="subscribers gone")
        except AssertionError as e:
            print("soak: %s" % e)
            ok = False
        print("soak: answers by status: %s" % dict(sorted(self.statuses.items(), key=str)))
        unexpected = {k: v for k, v in self.statuses.items() if k not in (200, 202, 503, "conn_error", "sse_conn_error")}
        if unexpected:
            print("soak: unexpected answers: %r" % unexpected)
            ok = False
        n = len(rows)
        if n >= 6:
            mid = rows[n // 3: 2 * n // 3]
            last = rows[2 * n // 3:]

            def mean(rs, i):
                return sum(r[i] for r in rs) / len(rs)
            # RSS less what the reply memory legitimately holds (it grows with learned replies)
            for r in rows:
                r.append(r[1] - max(r[7], 0) // 1024)
            for name, i, slack in (("rss_kib", 9, 0.10), ("fds", 2, 5), ("threads", 3, 2)):
                a, b = mean(mid, i), mean(last, i)
                flat = b <= a * (1 + slack) if isinstance(slack, float) else b <= a + slack
                print("soak: %-8s middle third %10.1f  last third %10.1f  %s" % (name, a, b, "flat" if flat else "GROWING"))
                ok &= flat
        else:
            print("soak: too few samples (%d) for a verdict; run longer (SOAK_SECONDS)" % n)
        try:
            rc = self.srv.stop(timeout=10)
            print("soak: tandemd exit code on SIGTERM: %s" % rc)
            ok &= rc == 0
        except AssertionError as e:
            print("soak: %s" % e)
            ok = False
        print("soak: verdict: %s" % ("FLAT and clean" if ok else "NOT flat or not clean"))
        return ok

    def close(self):
        self.srv.close()
        self.redis.close()


def main():
    s = Soak()
    try:
        rows = s.run()
        ok = s.finish(rows)
    finally:
        s.close()
    print("%d passed, %d failed" % ((1, 0) if ok else (0, 1)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
