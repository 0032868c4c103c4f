"""Network faults between tandemd and Redis, made by the fault proxy (proxy.py): latency,
connection resets, replies sliced into 1-byte writes. About 20 s."""

import json
import os
import time
import unittest

from common import CONV, SLOW, FaultCase, wait_until
from proxy import FaultProxy


class ProxyFaultTest(FaultCase):

    def server_env(self):
        return {"TANDEM_REDIS_TIMEOUT_MS": "500"}

    def redis_url(self):
        self.proxy = FaultProxy(self.redis.port)
        self.addCleanup(self.proxy.close)
        return self.proxy.url

    def test_latency_below_and_above_the_timeout(self):
        keys = ["lat-%d" % i for i in range(3)]
        self.proxy.latency = 0.1  # per hop: ~0.2 s per round trip, under the 500 ms timeout
        try:
            for k in keys:
                self.writer.write(k, deadline_s=10 * SLOW)
            r = self.context()
            self.assertEqual(r.status, 200, r)
            self.proxy.latency = 0.6  # over it
            t0 = time.monotonic()
            r = self.context(timeout=10 * SLOW)
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.error_code, "redis_unavailable", r)
            self.assertLess(time.monotonic() - t0, 3 * SLOW)
            r = self.writer.try_once("lat-x", timeout=10 * SLOW)
            self.assertEqual(r.status, 503, r)
        finally:
            self.proxy.latency = 0
        wait_until(self.healthy, 10 * SLOW, interval=0.1, what="recovery after latency")
        self.writer.write("lat-x")  # it may have been applied although answered 503: not twice
        self.assertExactlyOnce(keys + ["lat-x"])

    def test_accepted_then_reset_backs_off(self):
        """Something that accepts and then resets (a proxy whose Redis is down) is not Redis
        back: the reconnect backoff keeps growing instead of restarting at every connect."""
        self.assertTrue(self.healthy())
        self.proxy.refuse = True
        self.proxy.reset()
        try:
            c0, t0 = self.proxy.connections, time.monotonic()
            while time.monotonic() - t0 < 3:
                self.assertEqual(self.context().status, 503)
                time.sleep(0.01)
            rate = (self.proxy.connections - c0) / (time.monotonic() - t0)
            # backoff 50 ms doubling to 2 s: ~2.5 connects/s per thread (workers, one per CPU
            # with at least 2, and the watcher); a backoff reset by every accepted connect gave
            # ~12/s per thread
            threads = min(max(os.cpu_count() or 2, 2), 64) + 1
            self.assertLess(rate, 6 * threads, "%.0f connections/s from %d threads to a Redis that resets "
                            "each one" % (rate, threads))
        finally:
            self.proxy.refuse = False
        wait_until(self.healthy, 10 * SLOW, interval=0.1, what="recovery once connections are served")

    def test_connection_reset(self):
        keys = ["rst-before-%d" % i for i in range(3)]
        for k in keys:
            self.writer.write(k)
        self.assertTrue(self.healthy())  # every worker holds a proxied connection
        self.assertGreater(self.proxy.reset(), 0)
        # A stale connection gets one retry on a fresh one: no error reaches the client.
        for _ in range(8):
            r = self.context()
            self.assertEqual(r.status, 200, r)
        self.proxy.reset()
        self.writer.write("rst-x", deadline_s=5 * SLOW)
        self.assertExactlyOnce(keys + ["rst-x"])
        # nothing accepts: 503, then back
        self.proxy.refuse = True
        self.proxy.reset()
        try:
            r = self.context()
            self.assertEqual(r.status, 503, r)
        finally:
            self.proxy.refuse = False
        wait_until(self.healthy, 10 * SLOW, interval=0.1, what="recovery after refused connections")

    def test_reply_lost_after_the_write(self):
        # The write reaches Redis, the connection dies before the reply: tandem sends it again
        # on a fresh connection (or the client retries with the same key after a 503), and the
        # entry exists once.
        before = ["lost-before-%d" % i for i in range(3)]
        for k in before:
            self.writer.write(k)
        self.proxy.drop_match = b"EVAL"  # the feedback script (the transcript RPUSH: b"RPUSH")
        if self.writer.mode != "feedback":
            self.proxy.drop_match = b"RPUSH"
        executed0 = self.redis.commandstats()
        for i in range(3):
            self.proxy.drop_after_forward = 1  # executed by Redis, the reply lost
            commands0 = self.proxy.commands
            self.writer.write("lost-%d" % i, deadline_s=15 * SLOW)
            if self.proxy.drop_after_forward:
                stored = [l for l in self.srv.log_text().splitlines() if "feedback_stored" in l][-3:]
                self.fail("the write of lost-%d never reached the proxy as a %r: %d commands forwarded meanwhile, "
                          "attempts %r, errors %r, last stored %r" % (
                              i, self.proxy.drop_match, self.proxy.commands - commands0,
                              dict(self.writer.attempts), dict(self.writer.errors), stored))
        executed = {k: v - executed0.get(k, 0) for k, v in self.redis.commandstats().items()}
        self.assertTrue(executed.get("eval", 0) + executed.get("evalsha", 0) + executed.get("rpush", 0) >= 3,
                        "the lost-reply writes were not executed by Redis: %r" % executed)
        self.assertExactlyOnce(before + ["lost-%d" % i for i in range(3)])

    def test_one_byte_slices(self):
        big = "tandem:conv:{slice-1}:msgs"
        text = "Ünïcødé ✓ 😀 " * 800  # ~13 KB with multi-byte characters across every boundary
        self.redis.cmd("XADD", big, "*", "role", "customer", "text", text)
        self.proxy.slice = True
        try:
            r = self.srv.request("GET", "/v1/conversations/slice-1/context", timeout=30 * SLOW)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["messages"][0]["text"], text)
            keys = ["slice-%d" % i for i in range(3)]
            for k in keys:
                self.writer.write(k, deadline_s=20 * SLOW)
            r = self.srv.request("GET", "/v1/conversations/%s/suggestions" % CONV, timeout=30 * SLOW)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.json["suggestions"], r.json)
        finally:
            self.proxy.slice = False
        self.assertExactlyOnce(keys)
        json.dumps(r.json)


if __name__ == "__main__":
    unittest.main()
