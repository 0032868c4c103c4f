"""Core end-to-end tests: health, metrics, common headers, keep-alive, context, focus,
lifecycle (signals) and robustness against junk requests."""

import json
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

from harness import (REPO_ROOT, SLOW, RedisServer, Tandemd, TandemTestCase, metric_sum,
                     parse_metrics, run_tandemd, wait_until)


def conv_key(cid, kind="msgs", prefix="tandem:"):
    return "%sconv:{%s}:%s" % (prefix, cid, kind)


def cust_key(cid, kind, prefix="tandem:"):
    return "%scust:{%s}:%s" % (prefix, cid, kind)


def xadd(redis, key, entry_id, **fields):
    args = ["XADD", key, entry_id]
    for k, v in fields.items():
        args += [k, v]
    return redis.cmd_str(*args)


def hset(redis, key, **fields):
    args = ["HSET", key]
    for k, v in fields.items():
        args += [k, v]
    return redis.cmd(*args)


class HealthAndHeadersTest(TandemTestCase):
    """Health endpoints, the headers every response carries, request ids, keep-alive."""

    def test_healthz(self):
        r = self.srv.request("GET", "/healthz", token=False)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": "ok"})
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"), r)
        self.assertSecurityHeaders(r)

    def test_readyz(self):
        r = self.srv.request("GET", "/readyz", token=False)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": "ready"})
        self.assertSecurityHeaders(r)

    def test_security_headers_on_errors_too(self):
        cases = [
            ("GET", "/nope", {}, True, 404),
            ("GET", "/v1/focus", {}, False, 401),
            ("GET", "/healthz", {"Host": "evil.com:%d" % self.srv.port}, False, 421),
            ("GET", "/v1/focus", {"Origin": "https://evil.example"}, True, 403),
            ("DELETE", "/healthz", {}, False, 405),
            ("PUT", "/v1/focus", {"Content-Type": "text/plain"}, True, 415),
            ("GET", "/v1/conversations/a:b/context", {}, True, 400),
        ]
        for method, path, headers, token, status in cases:
            with self.subTest(method=method, path=path, status=status):
                r = self.srv.request(method, path, headers=headers, token=token,
                                     body="x" if status == 415 else None)
                self.assertEqual(r.status, status, r)
                self.assertSecurityHeaders(r)
                self.assertIsNotNone(r.error_code, "no error envelope: %r" % r)

    def test_request_ids_unique(self):
        ids = set()
        for i in range(20):
            path = "/healthz" if i % 2 else "/does-not-exist"
            r = self.srv.request("GET", path, token=False)
            ids.add(r.header("X-Request-Id"))
        self.assertEqual(len(ids), 20, ids)
        for rid in ids:
            self.assertRegex(rid or "", r"^[0-9a-fA-F]{16}$")

    def test_keep_alive_same_socket(self):
        c = self.srv.connection()
        try:
            r = self.srv.request("GET", "/healthz", conn=c)
            self.assertEqual(r.status, 200, r)
            sock = c.sock
            self.assertIsNotNone(sock, "connection closed after the first response: %r" % r)
            for method, path, body in [("PUT", "/v1/focus", {"conversation_id": "c-keep"}),
                                       ("GET", "/v1/focus", None),
                                       ("GET", "/readyz", None),
                                       ("GET", "/metrics", None),
                                       ("GET", "/healthz", None)]:
                r = self.srv.request(method, path, body=body, conn=c)
                self.assertEqual(r.status, 200, (method, path, r))
                self.assertNotEqual((r.header("Connection") or "").lower(), "close", r)
                self.assertIs(c.sock, sock, "server closed the keep-alive connection after "
                                            "%s %s" % (method, path))
        finally:
            c.close()

    def test_keep_alive_after_error_responses(self):
        c = self.srv.connection()
        try:
            r = self.srv.request("GET", "/healthz", conn=c)
            sock = c.sock
            for method, path, token in [("GET", "/nope", True), ("GET", "/v1/focus", False),
                                        ("GET", "/v1/conversations/no-such-conv/context", True),
                                        ("GET", "/healthz", True)]:
                r = self.srv.request(method, path, conn=c, token=token)
                self.assertLess(r.status, 500, r)
                self.assertNotEqual((r.header("Connection") or "").lower(), "close", r)
                self.assertIs(c.sock, sock, "socket closed after %s %s -> %d"
                              % (method, path, r.status))
        finally:
            c.close()

    def test_head_or_405_is_well_formed(self):
        # HEAD is not required; whatever the answer, the connection must stay usable.
        r = self.srv.request("HEAD", "/healthz", token=False)
        self.assertIn(r.status, (200, 405), r)
        r = self.srv.request("GET", "/healthz", token=False)
        self.assertEqual(r.status, 200, r)


class MetricsTest(TandemTestCase):

    def scrape(self):
        r = self.srv.request("GET", "/metrics", token=False)
        self.assertEqual(r.status, 200, r)
        return r, parse_metrics(r.text)

    def test_content_type_and_promtool(self):
        self.srv.request("GET", "/healthz", token=False)
        self.srv.request("GET", "/v1/focus")
        r, _ = self.scrape()
        ctype = re.sub(r"\s+", "", (r.header("Content-Type") or "").lower())
        self.assertTrue(ctype.startswith("text/plain;version=0.0.4"), r.header("Content-Type"))
        self.assertSecurityHeaders(r)
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool not installed")
        p = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n%s%s\n--- exposition:\n%s"
                         % (p.stdout.decode(), p.stderr.decode(), r.text[:3000]))

    def test_required_series(self):
        self.srv.request("GET", "/healthz", token=False)
        _, samples = self.scrape()
        names = {n for n, _, _ in samples}
        for name in ("tandem_http_requests_total", "tandem_http_request_duration_seconds_bucket",
                     "tandem_redis_errors_total", "tandem_redis_reconnects_total",
                     "tandem_build_info"):
            self.assertIn(name, names)
        for n, labels, _ in samples:
            if n == "tandem_http_requests_total":
                self.assertLessEqual({"route", "method", "code"}, set(labels), labels)
            if n == "tandem_http_request_duration_seconds_bucket":
                self.assertLessEqual({"route", "le"}, set(labels), labels)
        info = [(lab, v) for n, lab, v in samples if n == "tandem_build_info"]
        self.assertEqual(len(info), 1, info)
        labels, value = info[0]
        self.assertEqual(value, 1.0)
        self.assertTrue(labels.get("revision"), labels)
        version = (REPO_ROOT / "VERSION").read_text().strip()
        self.assertEqual(labels.get("version"), version, labels)

    def test_counts_increase(self):
        healthz = dict(name="tandem_http_requests_total", method="GET", code="200",
                       route=lambda v: "healthz" in v)
        self.srv.request("GET", "/healthz", token=False)
        _, before = self.scrape()
        b = metric_sum(before, **healthz)
        self.assertGreaterEqual(b, 1, "no tandem_http_requests_total series for GET /healthz 200")
        for _ in range(3):
            self.srv.request("GET", "/healthz", token=False)
        self.srv.request("GET", "/v1/focus", token=False)  # 401
        _, after = self.scrape()
        self.assertGreaterEqual(metric_sum(after, **healthz), b + 3)
        self.assertGreaterEqual(metric_sum(after, "tandem_http_requests_total", code="401"), 1)
        # Histogram: the +Inf bucket of the healthz route counts these requests as well.
        inf = metric_sum(after, "tandem_http_request_duration_seconds_bucket", le="+Inf",
                         route=lambda v: "healthz" in v)
        self.assertGreaterEqual(inf, b + 3)
        # Buckets are cumulative.
        buckets = sorted(((float(lab["le"]), v) for n, lab, v in after
                          if n == "tandem_http_request_duration_seconds_bucket"
                          and "healthz" in lab.get("route", "")), key=lambda x: x[0])
        values = [v for _, v in buckets]
        self.assertEqual(values, sorted(values), buckets)

    def test_build_info_matches_version_flag(self):
        _, samples = self.scrape()
        version = [lab for n, lab, _ in samples if n == "tandem_build_info"][0]["version"]
        cp = run_tandemd(["--version"])
        self.assertEqual(cp.returncode, 0, cp)
        self.assertIn(version, cp.stdout + cp.stderr)


class ContextTest(TandemTestCase):

    def setUp(self):
        super().setUp()
        self.redis.flush()

    def context(self, cid, **kw):
        return self.srv.request("GET", "/v1/conversations/%s/context" % cid, **kw)

    def test_full_context(self):
        k = conv_key("c-42")
        xadd(self.redis, k, "1700000000000-0", role="customer", text="Where is my refund?")
        xadd(self.redis, k, "1700000001000-0", role="bot", text="Let me check.")
        xadd(self.redis, k, "1700000002000-0", role="agent", text="Hi Anna!", author="Bob",
             ts="1700000002500")
        hset(self.redis, conv_key("c-42", "meta"), customer_id="cust-7", brand="acme",
             channel="chat", subject="Refund", lang="en", status="open")
        hset(self.redis, cust_key("cust-7", "profile"), name="Anna Example", tier="gold",
             country="SE", since="2019")
        xadd(self.redis, cust_key("cust-7", "history"), "1690000000000-0", conv_id="c-1",
             summary="Asked about delivery", outcome="resolved", tags="shipping,delivery")
        xadd(self.redis, cust_key("cust-7", "history"), "1695000000000-0", conv_id="c-9",
             summary="Refund requested", outcome="escalated", tags="refund")

        r = self.context("c-42")
        self.assertEqual(r.status, 200, r)
        self.assertSecurityHeaders(r)
        j = r.json
        self.assertEqual(j["conversation_id"], "c-42")
        self.assertEqual(j["based_on"], "1700000002000-0")
        self.assertEqual(j["messages"], [
            {"id": "1700000000000-0", "role": "customer", "text": "Where is my refund?",
             "ts": 1700000000000},
            {"id": "1700000001000-0", "role": "bot", "text": "Let me check.", "ts": 1700000001000},
            {"id": "1700000002000-0", "role": "agent", "text": "Hi Anna!", "author": "Bob",
             "ts": 1700000002500},
        ])
        for f, v in (("brand", "acme"), ("channel", "chat"), ("subject", "Refund"),
                     ("lang", "en"), ("status", "open")):
            self.assertEqual(j["meta"].get(f), v, j["meta"])
        cust = j["customer"]
        self.assertEqual(cust["id"], "cust-7")
        self.assertEqual(cust["profile"], {"name": "Anna Example", "tier": "gold",
                                           "country": "SE", "since": "2019"})
        self.assertEqual(cust["history"], [
            {"id": "1695000000000-0", "ts": 1695000000000, "conv_id": "c-9",
             "summary": "Refund requested", "outcome": "escalated", "tags": ["refund"]},
            {"id": "1690000000000-0", "ts": 1690000000000, "conv_id": "c-1",
             "summary": "Asked about delivery", "outcome": "resolved",
             "tags": ["shipping", "delivery"]},
        ])

    def test_last_50_oldest_first(self):
        k = conv_key("long")
        ids = []
        for i in range(60):
            ids.append(xadd(self.redis, k, "%d-0" % (1700000000000 + i * 1000),
                            role="customer" if i % 2 else "agent", text="message %d" % i))
        j = self.context("long").json
        self.assertIsNotNone(j)
        self.assertEqual(len(j["messages"]), 50)
        self.assertEqual([m["id"] for m in j["messages"]], ids[10:])
        self.assertEqual([m["text"] for m in j["messages"]], ["message %d" % i for i in range(10, 60)])
        self.assertEqual(j["based_on"], ids[-1])

    def test_no_meta_no_customer(self):
        xadd(self.redis, conv_key("solo"), "1700000000000-0", role="customer", text="hello")
        j = self.context("solo").json
        self.assertIsNotNone(j)
        self.assertIsNone(j["customer"]["id"])
        self.assertEqual(j["customer"]["profile"], {})
        self.assertEqual(j["customer"]["history"], [])
        self.assertEqual(j["meta"], {})

    def test_customer_without_profile_or_history(self):
        xadd(self.redis, conv_key("c-2"), "1700000000000-0", role="customer", text="hi")
        hset(self.redis, conv_key("c-2", "meta"), customer_id="ghost")
        j = self.context("c-2").json
        self.assertEqual(j["customer"]["id"], "ghost")
        self.assertEqual(j["customer"]["profile"], {})
        self.assertEqual(j["customer"]["history"], [])

    def test_history_entry_without_tags(self):
        xadd(self.redis, conv_key("c-3"), "1700000000000-0", role="customer", text="hi")
        hset(self.redis, conv_key("c-3", "meta"), customer_id="cu")
        xadd(self.redis, cust_key("cu", "history"), "1690000000000-0", conv_id="c-0",
             summary="s", outcome="resolved")
        j = self.context("c-3").json
        self.assertEqual(len(j["customer"]["history"]), 1)
        self.assertEqual(j["customer"]["history"][0]["tags"], [])

    def test_empty_stream_exists(self):
        k = conv_key("emptied")
        eid = xadd(self.redis, k, "*", role="customer", text="x")
        self.redis.cmd("XDEL", k, eid)
        self.assertEqual(self.redis.cmd("EXISTS", k), 1)
        r = self.context("emptied")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["messages"], [])
        self.assertIsNone(r.json["based_on"])

    def test_missing_conversation(self):
        r = self.context("does-not-exist")
        self.assertError(r, 404, "conversation_not_found")
        # meta alone does not make a conversation
        hset(self.redis, conv_key("meta-only", "meta"), brand="acme")
        self.assertError(self.context("meta-only"), 404, "conversation_not_found")

    def test_text_round_trip(self):
        texts = ['quotes " and \\ backslash', "newline\nand\ttab", "emoji \U0001F600 ünïcödé 日本語",
                 "<script>alert(1)</script>", "x" * 5000]
        k = conv_key("rt")
        for i, t in enumerate(texts):
            xadd(self.redis, k, "%d-0" % (1700000000000 + i), role="customer", text=t)
        j = self.context("rt").json
        self.assertEqual([m["text"] for m in j["messages"]], texts)

    def test_valid_id_edge_cases(self):
        for cid in ("A.b_c-9", "x" * 128, "0", "a..b"):
            with self.subTest(cid=cid[:20]):
                xadd(self.redis, conv_key(cid), "1700000000000-0", role="customer", text="hi")
                r = self.context(cid)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json["conversation_id"], cid)

    def test_needs_token(self):
        xadd(self.redis, conv_key("c-1"), "1700000000000-0", role="customer", text="hi")
        self.assertError(self.context("c-1", token=False), 401, "unauthorized")
        self.assertError(self.context("c-1", token="wrong"), 401, "unauthorized")


class PrefixTest(TandemTestCase):

    @classmethod
    def server_env(cls):
        return {"TANDEM_REDIS_PREFIX": "acme:"}

    def test_prefix_is_used(self):
        self.redis.flush()
        xadd(self.redis, conv_key("p-1", prefix="acme:"), "1700000000000-0", role="customer",
             text="prefixed")
        hset(self.redis, conv_key("p-1", "meta", prefix="acme:"), customer_id="cx")
        hset(self.redis, cust_key("cx", "profile", prefix="acme:"), name="Pat")
        xadd(self.redis, conv_key("p-2"), "1700000000000-0", role="customer", text="default")
        r = self.srv.request("GET", "/v1/conversations/p-1/context")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["messages"][0]["text"], "prefixed")
        self.assertEqual(r.json["customer"]["profile"], {"name": "Pat"})
        r = self.srv.request("GET", "/v1/conversations/p-2/context")
        self.assertError(r, 404, "conversation_not_found")


class FocusTest(TandemTestCase):

    def focus(self):
        return self.srv.request("GET", "/v1/focus")

    def put(self, body, **kw):
        return self.srv.request("PUT", "/v1/focus", body=body, **kw)

    def test_focus_cycle(self):
        self.put({"conversation_id": None})
        self.assertError(self.focus(), 404, "no_focus")
        t0 = int(time.time() * 1000)
        r = self.put({"conversation_id": "c-1"})
        t1 = int(time.time() * 1000)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["conversation_id"], "c-1")
        self.assertIsInstance(r.json["since"], int)
        self.assertTrue(t0 - 1000 <= r.json["since"] <= t1 + 1000, (t0, r.json, t1))
        g = self.focus()
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.json, r.json)
        r2 = self.put({"conversation_id": "c-2"})
        self.assertEqual(r2.json["conversation_id"], "c-2")
        self.assertEqual(self.focus().json["conversation_id"], "c-2")
        r3 = self.put({"conversation_id": None})
        self.assertIn(r3.status, (200, 204), r3)
        self.assertError(self.focus(), 404, "no_focus")

    def test_invalid_id_keeps_focus(self):
        self.assertEqual(self.put({"conversation_id": "keep-me"}).status, 200)
        for bad in ("a:*", "", "x" * 129, "é", "a b", "a/b", "a\r\nFLUSHALL"):
            with self.subTest(bad=bad[:10]):
                self.assertError(self.put({"conversation_id": bad}), 400, "invalid_id")
        self.assertEqual(self.focus().json["conversation_id"], "keep-me")

    def test_malformed_json_reports_position(self):
        r = self.put('{"conversation_id": "c-1",\n  oops}',
                     headers={"Content-Type": "application/json"})
        self.assertError(r, 400, "invalid_json")
        msg = r.json["error"]["message"].lower()
        self.assertRegex(msg, r"line\D{0,3}2\b", msg)
        self.assertIn("column", msg)

    def test_wrong_shapes(self):
        for body in ('[]', '{}', '{"conversation_id": 5}', '"c-1"', '',
                     '{"conversation_id": ["c-1"]}', '{"conversation_id": "c-1"} trailing'):
            with self.subTest(body=body):
                r = self.put(body, headers={"Content-Type": "application/json"})
                self.assertEqual(r.status, 400, r)
                self.assertIn(r.error_code, ("invalid_json", "invalid_id", "bad_request"), r)

    def test_json_content_type_with_charset(self):
        r = self.put('{"conversation_id":"c-cs"}',
                     headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(r.status, 200, r)

    def test_focus_needs_token(self):
        self.assertError(self.srv.request("GET", "/v1/focus", token=False), 401, "unauthorized")
        r = self.put({"conversation_id": "c-x"}, token="nope")
        self.assertError(r, 401, "unauthorized")


class LifecycleTest(unittest.TestCase):
    """Each test runs its own server: signals end it."""

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.resume()
        self.srv = Tandemd(self.redis)

    def tearDown(self):
        self.redis.resume()
        try:
            self.srv.check(require_alive=False)
        finally:
            self.srv.close()

    def assertStops(self, sig, limit=5.0):
        t0 = time.monotonic()
        rc = self.srv.stop(sig, timeout=limit * SLOW)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, "exit code %s after %s:\n%s" % (rc, sig, self.srv.log_text()[-2000:]))
        self.assertLess(took, limit * SLOW)
        return took

    def test_sigterm_idle(self):
        self.assertStops(signal.SIGTERM)

    def test_sigint_idle(self):
        self.assertStops(signal.SIGINT)

    def test_sigterm_with_keepalive_connection_open(self):
        c = self.srv.connection()
        r = self.srv.request("GET", "/healthz", conn=c)
        self.assertEqual(r.status, 200)
        try:
            self.assertStops(signal.SIGTERM)
        finally:
            c.close()

    def test_sigterm_during_partial_upload(self):
        s = self.srv.raw_socket()
        try:
            s.sendall(("PUT /v1/focus HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                       "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"conv"
                       % (self.srv.base_host, self.srv.token)).encode())
            time.sleep(0.2)  # let the server start reading the body
            self.assertStops(signal.SIGTERM)
        finally:
            s.close()

    def test_sigterm_with_request_in_flight(self):
        xadd(self.redis, conv_key("inflight"), "1700000000000-0", role="customer", text="hi")
        self.assertEqual(self.srv.request("GET", "/v1/conversations/inflight/context").status, 200)
        self.redis.pause()  # the next context request hangs inside Redis
        result = {}

        def call():
            try:
                result["r"] = self.srv.request("GET", "/v1/conversations/inflight/context",
                                               timeout=15 * SLOW)
            except Exception as e:  # noqa: BLE001 - recorded for the report only
                result["e"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        time.sleep(0.3)  # no observable "in flight" state: give the request time to arrive
        self.assertStops(signal.SIGTERM)
        self.redis.resume()
        t.join(15 * SLOW)

    def test_new_requests_while_draining_get_503(self):
        # A request in flight keeps the server draining; one that arrives meanwhile is told to go
        # elsewhere (and the connection closed) while the first one finishes.
        xadd(self.redis, conv_key("drain"), "1700000000000-0", role="customer", text="hi")
        self.assertEqual(self.srv.request("GET", "/v1/conversations/drain/context").status, 200)
        self.redis.pause()  # the next context request hangs inside Redis (up to its 1 s time-out)
        result = {}

        def call():
            try:
                result["r"] = self.srv.request("GET", "/v1/conversations/drain/context", timeout=15 * SLOW)
            except Exception as e:  # noqa: BLE001 - recorded for the report only
                result["e"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        try:
            time.sleep(0.2)  # no observable "in flight" state: give the request time to arrive
            self.srv.send_signal(signal.SIGTERM)
            wait_until(lambda: '"msg":"stopping"' in self.srv.log_text(), 2 * SLOW, interval=0.01,
                       what="the stopping log line")
            r = self.srv.request("GET", "/healthz", token=False)
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.json["error"]["code"], "shutting_down", r)
            self.assertEqual((r.headers.get("Connection") or "").lower(), "close")
        finally:
            self.redis.resume()
        t.join(15 * SLOW)
        self.assertIn("r", result, result)  # the drained request got its answer
        self.assertEqual(self.srv.stop(timeout=5 * SLOW), 0)

    def test_sigterm_with_slow_readers(self):
        # Several connections with half-sent requests must not keep it alive.
        socks = []
        try:
            for _ in range(5):
                s = self.srv.raw_socket()
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: ")
                socks.append(s)
            time.sleep(0.1)
            self.assertStops(signal.SIGTERM)
        finally:
            for s in socks:
                s.close()


class RobustnessTest(TandemTestCase):
    """Junk on the wire must never crash the server."""

    def assertStillHealthy(self, what):
        self.assertTrue(self.srv.alive(), "tandemd died after %s:\n%s"
                        % (what, self.srv.log_text()[-3000:]))
        r = self.srv.request("GET", "/healthz", token=False)
        self.assertEqual(r.status, 200, "after %s: %r" % (what, r))

    def test_garbage_requests(self):
        rnd = random.Random(1234)
        host = b"{host}"
        payloads = {
            "invalid request line": b"GARBAGE\r\n\r\n",
            "only method": b"GET\r\n\r\n",
            "bad version": b"GET /healthz HTTP/9.9\r\nHost: " + host + b"\r\n\r\n",
            "no version": b"GET /healthz\r\n\r\n",
            "huge header": b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nX-Big: "
                           + b"a" * 300000 + b"\r\n\r\n",
            "many headers": b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n"
                            + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
            "huge url": b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            "binary junk": bytes(rnd.getrandbits(8) for _ in range(8192)),
            "binary junk with crlf": bytes(rnd.getrandbits(8) for _ in range(2000)) + b"\r\n\r\n",
            "nul in path": b"GET /heal\x00thz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            "half request line": b"GET /heal",
            "half headers": b"GET /healthz HTTP/1.1\r\nHost: 127",
            "half body": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer {token}"
                         b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"c",
            "bad chunked": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer {token}"
                           b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"ZZZ\r\nabc\r\n0\r\n\r\n",
            "chunk size overflow": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host
                                   + b"\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json"
                                   b"\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n",
            "negative content-length": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host
                                       + b"\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n",
            "overflowing content-length": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host
                                          + b"\r\nContent-Type: application/json\r\n"
                                          b"Content-Length: 99999999999999999999999999\r\n\r\n",
            "two content-lengths": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host
                                   + b"\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json"
                                   b"\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n{\"a\":",
            "bad percent escapes": b"GET /v1/conversations/%ZZ%/context HTTP/1.1\r\nHost: " + host
                                   + b"\r\nAuthorization: Bearer {token}\r\n\r\n",
            "header without colon": b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nNoColonHere\r\n\r\n",
            "bare LF": b"GET /healthz HTTP/1.1\nHost: " + host + b"\n\n",
            "pipelined junk": b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n" + b"\x16\x03\x01junk" * 10,
            "tls client hello": bytes.fromhex("16030100a5010000a10303") + bytes(160),
            "deep json": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer {token}"
                         b"\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
                         + b"[" * 100000 + b"]" * 100000,
            "invalid utf-8 json": b"PUT /v1/focus HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer {token}"
                                  b"\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n"
                                  b"{\"conversation_id\":\"\xff\xfe\xc0\"}",
        }
        for what, data in payloads.items():
            with self.subTest(what=what):
                data = data.replace(b"{host}", self.srv.base_host.encode()).replace(
                    b"{token}", self.srv.token.encode())
                self.srv.raw_exchange(data, timeout=0.3)
                self.assertStillHealthy(what)

    def test_json_errors_answer_400(self):
        for what, body in (("deep", "[" * 100000 + "]" * 100000),
                           ("invalid utf-8", b'{"conversation_id":"\xff\xfe"}'),
                           ("nul escape", '{"conversation_id":"c\\u0000d"}'),
                           ("lone surrogate", '{"conversation_id":"\\ud800"}'),
                           ("huge number", '{"conversation_id":1' + "0" * 400 + '}')):
            with self.subTest(what=what):
                r = self.srv.request("PUT", "/v1/focus", body=body,
                                     headers={"Content-Type": "application/json"})
                self.assertEqual(r.status, 400, r)
                self.assertIsNotNone(r.error_code, r)
        self.assertStillHealthy("bad JSON bodies")

    def test_invalid_utf8_in_redis(self):
        # Connector data is not validated by anyone else: bytes that are not UTF-8 must not
        # crash the server, and whatever it answers must be valid JSON.
        self.redis.cmd("XADD", conv_key("bin"), "1700000000000-0", "role", "customer",
                       "text", b"caf\xe9 \xff\xfe bytes", "author", b"\xc0\xaf")
        self.redis.cmd("HSET", conv_key("bin", "meta"), "customer_id", "cb", "subject", b"\xff")
        self.redis.cmd("HSET", cust_key("cb", "profile"), b"na\xffme", b"\xfe")
        r = self.srv.request("GET", "/v1/conversations/bin/context")
        self.assertIn(r.status, (200, 500, 502), r)
        self.assertIsNotNone(r.json, "answer is not valid JSON: %r" % r)
        json.dumps(r.json)
        self.assertStillHealthy("non-UTF-8 data in Redis")

    def test_wrong_types_in_redis(self):
        # A key of the wrong type (a connector bug) must give an error envelope, not a crash.
        self.redis.cmd("SET", conv_key("wt"), "not a stream")
        r = self.srv.request("GET", "/v1/conversations/wt/context")
        self.assertGreaterEqual(r.status, 400, r)
        self.assertIsNotNone(r.error_code, r)
        self.redis.cmd("XADD", conv_key("wt2"), "1700000000000-0", "role", "customer", "text", "hi")
        self.redis.cmd("SET", conv_key("wt2", "meta"), "not a hash")
        r = self.srv.request("GET", "/v1/conversations/wt2/context")
        self.assertIsNotNone(r.json, r)
        self.redis.cmd("XADD", conv_key("wt3"), "1700000000000-0", "notes", "no role or text")
        r = self.srv.request("GET", "/v1/conversations/wt3/context")
        self.assertIsNotNone(r.json, r)
        self.assertStillHealthy("wrong key types")

    def test_many_concurrent_requests(self):
        errors = []
        xadd(self.redis, conv_key("conc"), "1700000000000-0", role="customer", text="hi")

        def worker(n):
            try:
                c = self.srv.connection()
                for i in range(20):
                    path = "/v1/conversations/conc/context" if i % 2 else "/healthz"
                    r = self.srv.request("GET", path, conn=c)
                    if r.status != 200:
                        errors.append((n, i, r))
                c.close()
            except Exception as e:  # noqa: BLE001
                errors.append((n, e))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * SLOW)
        self.assertEqual(errors, [])
        self.assertStillHealthy("concurrent requests")


if __name__ == "__main__":
    unittest.main()
