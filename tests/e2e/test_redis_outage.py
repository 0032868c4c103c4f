"""Redis outages: readiness, fast 503s, recovery without restarting tandemd, metrics."""

import threading
import time
import unittest

from harness import SLOW, RedisServer, Tandemd, TandemTestCase, free_port, metric_sum, wait_until

CONV = "tandem:conv:{out-1}:msgs"


class RedisOutageTest(TandemTestCase):

    def setUp(self):
        super().setUp()
        self.seed()

    def seed(self):
        self.redis.cmd("DEL", CONV)
        self.redis.cmd("XADD", CONV, "1700000000000-0", "role", "customer", "text", "hello")

    def context(self, **kw):
        return self.srv.request("GET", "/v1/conversations/out-1/context", **kw)

    def all_ok(self, n=8):
        return all(self.context().status == 200 and
                   self.srv.request("GET", "/readyz", token=False).status == 200 for _ in range(n))

    def redis_counters(self):
        s = self.srv.metrics()
        return (metric_sum(s, "tandem_redis_errors_total"),
                metric_sum(s, "tandem_redis_reconnects_total"))

    def test_kill_and_restart(self):
        self.assertEqual(self.context().status, 200)
        self.assertEqual(self.srv.request("GET", "/readyz", token=False).status, 200)
        errors0, reconnects0 = self.redis_counters()

        self.redis.stop()
        t0 = time.monotonic()
        r = self.context()
        took = time.monotonic() - t0
        self.assertError(r, 503, "redis_unavailable")
        self.assertLess(took, 2.0 * SLOW, "context took %.2fs with Redis down" % took)
        self.assertSecurityHeaders(r)

        t0 = time.monotonic()
        r = self.srv.request("GET", "/readyz", token=False)
        self.assertError(r, 503, "redis_unavailable")
        self.assertLess(time.monotonic() - t0, 2.0 * SLOW)

        # Everything that does not need Redis keeps working.
        self.assertEqual(self.srv.request("GET", "/healthz", token=False).status, 200)
        self.assertEqual(self.srv.request("GET", "/metrics", token=False).status, 200)
        self.assertEqual(self.srv.request("PUT", "/v1/focus", body={"conversation_id": "out-1"}).status, 200)
        self.assertEqual(self.srv.request("GET", "/v1/focus").status, 200)

        # Repeated calls while down stay fast (no pile-up of connect time-outs).
        t0 = time.monotonic()
        for _ in range(5):
            self.assertEqual(self.context().status, 503)
        self.assertLess(time.monotonic() - t0, 5.0 * SLOW)

        self.redis.restart()
        self.seed()
        wait_until(lambda: self.srv.request("GET", "/readyz", token=False).status == 200,
                   10 * SLOW, interval=0.1, what="/readyz 200 after Redis came back")
        # Fully recovered: every worker (new connections spread over them) answers again.
        wait_until(self.all_ok, 10 * SLOW, interval=0.1, what="context 200 after Redis came back")
        r = self.context()
        self.assertEqual(r.json["messages"][0]["text"], "hello")
        self.assertEqual(self.srv.request("GET", "/readyz", token=False).json, {"status": "ready"})

        errors1, reconnects1 = self.redis_counters()
        self.assertGreater(errors1, errors0, "tandem_redis_errors_total did not go up")
        self.assertGreater(reconnects1, reconnects0, "tandem_redis_reconnects_total did not go up")

    def test_hung_redis_times_out(self):
        self.assertEqual(self.context().status, 200)
        self.redis.pause()
        try:
            # Health must not depend on Redis, even while requests are stuck on it.
            stuck = {}
            t = threading.Thread(target=lambda: stuck.setdefault("r", self.context(timeout=30 * SLOW)),
                                 daemon=True)
            t.start()
            # A worker blocked on Redis may delay the connections it polls, but only up to the
            # Redis command time-out (TANDEM_REDIS_TIMEOUT_MS, default 1 s).
            t0 = time.monotonic()
            self.assertEqual(self.srv.request("GET", "/healthz", token=False, timeout=5 * SLOW).status, 200)
            self.assertLess(time.monotonic() - t0, 3.0 * SLOW)
            t0 = time.monotonic()
            r = self.context(timeout=30 * SLOW)
            took = time.monotonic() - t0
            self.assertError(r, 503, "redis_unavailable")
            self.assertLess(took, 5.0 * SLOW, "context took %.2fs with Redis hung" % took)
            t.join(30 * SLOW)
            self.assertEqual(stuck.get("r").status if stuck.get("r") else None, 503)
        finally:
            self.redis.resume()
        wait_until(self.all_ok, 10 * SLOW, interval=0.1, what="context 200 after Redis resumed")
        self.assertEqual(self.context().json["messages"][0]["text"], "hello")

    def test_repeated_outages(self):
        for i in range(3):
            with self.subTest(round=i):
                self.redis.stop()
                self.assertEqual(self.context().status, 503)
                self.redis.restart()
                self.seed()
                wait_until(self.all_ok, 10 * SLOW, interval=0.1, what="recovery in round %d" % i)


class StartWithoutRedisTest(unittest.TestCase):
    """tandemd must start (and be live, not ready) while Redis is down, and become ready
    when it appears."""

    def test_start_without_redis(self):
        redis = RedisServer(start=False)
        srv = None
        try:
            srv = Tandemd(redis)  # Redis's port is free: nothing listens yet
            r = srv.request("GET", "/readyz", token=False)
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.error_code, "redis_unavailable", r)
            self.assertEqual(srv.request("GET", "/healthz", token=False).status, 200)
            r = srv.request("GET", "/v1/conversations/x/context")
            self.assertEqual(r.status, 503, r)
            redis.start()
            redis.cmd("XADD", "tandem:conv:{x}:msgs", "1700000000000-0", "role", "agent", "text", "hi")
            wait_until(lambda: srv.request("GET", "/readyz", token=False).status == 200,
                       10 * SLOW, interval=0.1, what="/readyz after Redis started")
            # Each worker reconnects on its own schedule: allow a few seconds for all of them.
            wait_until(lambda: all(srv.request("GET", "/v1/conversations/x/context").status == 200
                                   for _ in range(8)),
                       10 * SLOW, interval=0.1, what="context after Redis started")
            srv.check()
            self.assertEqual(srv.stop(), 0)
        finally:
            if srv:
                srv.close()
            redis.close()

    def test_nothing_listening_anywhere(self):
        # A Redis URL pointing at a closed port must not delay start-up or health.
        port = free_port()
        srv = Tandemd(None, env={"TANDEM_REDIS_URL": "redis://127.0.0.1:%d/0" % port})
        try:
            t0 = time.monotonic()
            for _ in range(3):
                self.assertEqual(srv.request("GET", "/readyz", token=False).status, 503)
            self.assertLess(time.monotonic() - t0, 3 * SLOW)
            srv.check()
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.close()


if __name__ == "__main__":
    unittest.main()
