"""The security gate in front of every request: Host (421), Origin (403), CORS preflight,
token (401), routing (404/405), media type (415), body size (413) and id validation (400,
with no Redis command issued)."""

import base64
import time
import unittest

from harness import SLOW, TandemTestCase, read_response


def chunked(data, size):
    out = b""
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


class HostTest(TandemTestCase):

    def get(self, host, path="/healthz", token=False, **kw):
        return self.srv.request("GET", path, headers={"Host": host}, token=token, **kw)

    def test_allowed_hosts(self):
        p = self.srv.port
        for host in ("127.0.0.1:%d" % p, "localhost:%d" % p, "[::1]:%d" % p,
                     "LOCALHOST:%d" % p, "LocalHost:%d" % p):
            with self.subTest(host=host):
                r = self.get(host)
                self.assertEqual(r.status, 200, r)
                r = self.get(host, path="/v1/focus", token=True)
                self.assertIn(r.status, (200, 404), r)

    def test_rejected_hosts(self):
        p = self.srv.port
        bad = ["evil.com:%d" % p, "localhost.evil.com:%d" % p, "localhost", "127.0.0.1",
               "[::1]", "127.0.0.1:%d" % (p + 1 if p < 65535 else p - 1), "",
               "127.0.0.1:%d.evil.com" % p, "evil.com", "127.0.0.2:%d" % p, "0.0.0.0:%d" % p,
               "localhost:%d@evil.com" % p, "127.0.0.1:%d:%d" % (p, p), "localhost:0%d" % p,
               "evil.com:%d, localhost:%d" % (p, p)]
        for host in bad:
            for path, token in (("/healthz", False), ("/v1/focus", True), ("/metrics", False),
                                ("/readyz", False)):
                with self.subTest(host=host, path=path):
                    r = self.get(host, path=path, token=token)
                    self.assertError(r, 421, "host_not_allowed")
                    self.assertSecurityHeaders(r)

    def test_duplicate_host(self):
        h = self.srv.base_host
        for second in (h, "evil.com:%d" % self.srv.port):
            with self.subTest(second=second):
                r = self.srv.raw("GET /healthz HTTP/1.1\r\nHost: %s\r\nHost: %s\r\n\r\n" % (h, second))
                self.assertIsNotNone(r, "no answer to a duplicate Host")
                self.assertError(r, 421, "host_not_allowed")

    def test_missing_host_http11(self):
        r = self.srv.raw("GET /healthz HTTP/1.1\r\n\r\n")
        self.assertIsNotNone(r, "no answer to a request without Host")
        self.assertError(r, 421, "host_not_allowed")

    def test_missing_host_http10(self):
        r = self.srv.raw("GET /healthz HTTP/1.0\r\n\r\n")
        self.assertIsNotNone(r, "no answer to an HTTP/1.0 request without Host")
        self.assertError(r, 421, "host_not_allowed")

    def test_host_checked_before_origin_and_token(self):
        r = self.srv.request("GET", "/v1/focus", token=False,
                             headers={"Host": "evil.com:%d" % self.srv.port,
                                      "Origin": "http://evil.com"})
        self.assertError(r, 421, "host_not_allowed")

    def test_rebinding_preflight(self):
        r = self.srv.request("OPTIONS", "/v1/focus", token=False,
                             headers={"Host": "evil.com:%d" % self.srv.port,
                                      "Origin": "http://evil.com:%d" % self.srv.port,
                                      "Access-Control-Request-Method": "GET"})
        self.assertError(r, 421, "host_not_allowed")
        self.assertIsNone(r.header("Access-Control-Allow-Origin"), r)


class OriginTest(TandemTestCase):

    def own_origins(self):
        p = self.srv.port
        return ["http://127.0.0.1:%d" % p, "http://localhost:%d" % p, "http://[::1]:%d" % p]

    def bad_origins(self):
        p = self.srv.port
        return ["null", "http://evil.com", "http://127.0.0.1:%d" % (p + 1 if p < 65535 else p - 1),
                "https://127.0.0.1:%d" % p, "http://localhost:%d.evil.com" % p,
                "http://127.0.0.1:%d/" % p, "http://127.0.0.1", "http://localhost",
                "chrome-extension://abcdefghijklmnop", "file://"]

    def test_allowed_origin_echoed(self):
        for origin in self.own_origins():
            for path, token, status in (("/healthz", False, 200), ("/v1/focus", False, 401),
                                        ("/v1/conversations/none/context", True, 404)):
                with self.subTest(origin=origin, path=path):
                    r = self.srv.request("GET", path, token=token, headers={"Origin": origin})
                    self.assertEqual(r.status, status, r)
                    self.assertEqual(r.header("Access-Control-Allow-Origin"), origin, r)
                    vary = [v.strip().lower() for v in ",".join(r.headers.get_all("Vary") or []).split(",")]
                    self.assertIn("origin", vary, r)

    def test_rejected_origins(self):
        for origin in self.bad_origins():
            for path, token in (("/healthz", False), ("/v1/focus", True), ("/v1/focus", False)):
                with self.subTest(origin=origin, path=path, token=token):
                    r = self.srv.request("GET", path, token=token, headers={"Origin": origin})
                    self.assertError(r, 403, "origin_not_allowed")
                    self.assertSecurityHeaders(r)
                    self.assertNotEqual(r.header("Access-Control-Allow-Origin"), origin, r)
                    self.assertNotEqual(r.header("Access-Control-Allow-Origin"), "*", r)

    def test_rejected_origin_writes_nothing(self):
        self.srv.request("PUT", "/v1/focus", body={"conversation_id": None})
        r = self.srv.request("PUT", "/v1/focus", body={"conversation_id": "c-evil"},
                             headers={"Origin": "http://evil.com"})
        self.assertError(r, 403, "origin_not_allowed")
        self.assertError(self.srv.request("GET", "/v1/focus"), 404, "no_focus")

    def test_preflight(self):
        for origin in self.own_origins():
            for path, method in (("/v1/focus", "PUT"),
                                 ("/v1/conversations/c-1/context", "GET")):
                with self.subTest(origin=origin, path=path):
                    r = self.srv.request("OPTIONS", path, token=False, headers={
                        "Origin": origin,
                        "Access-Control-Request-Method": method,
                        "Access-Control-Request-Headers": "authorization, content-type",
                        "Access-Control-Request-Private-Network": "true"})
                    self.assertEqual(r.status, 204, r)
                    self.assertEqual(r.header("Access-Control-Allow-Origin"), origin, r)
                    vary = (r.header("Vary") or "").lower()
                    self.assertIn("origin", vary, r)
                    methods = [m.strip().upper() for m in
                               (r.header("Access-Control-Allow-Methods") or "").split(",")]
                    self.assertIn(method, methods, r)
                    allow_h = [h.strip().lower() for h in
                               (r.header("Access-Control-Allow-Headers") or "").split(",")]
                    self.assertIn("authorization", allow_h, r)
                    self.assertIn("content-type", allow_h, r)
                    self.assertEqual((r.header("Access-Control-Allow-Private-Network") or "").lower(),
                                     "true", r)
                    self.assertSecurityHeaders(r)
                    self.assertEqual(r.body, b"", r)

    def test_preflight_from_bad_origin(self):
        for origin in ("http://evil.com", "null"):
            with self.subTest(origin=origin):
                r = self.srv.request("OPTIONS", "/v1/focus", token=False, headers={
                    "Origin": origin, "Access-Control-Request-Method": "PUT",
                    "Access-Control-Request-Private-Network": "true"})
                self.assertError(r, 403, "origin_not_allowed")
                self.assertIsNone(r.header("Access-Control-Allow-Private-Network"), r)
                self.assertIsNone(r.header("Access-Control-Allow-Origin"), r)


class ConfiguredOriginTest(TandemTestCase):

    @classmethod
    def server_env(cls):
        return {"TANDEM_ALLOWED_ORIGINS": "https://desk.example.com,chrome-extension://abcdefghijklmnop",
                "TANDEM_ALLOWED_HOSTS": "tandem.internal,sidecar.local:9999"}

    def test_configured_origins(self):
        for origin in ("https://desk.example.com", "chrome-extension://abcdefghijklmnop",
                       "http://localhost:%d" % self.srv.port):
            with self.subTest(origin=origin):
                r = self.srv.request("GET", "/v1/focus", headers={"Origin": origin})
                self.assertIn(r.status, (200, 404), r)
                self.assertEqual(r.header("Access-Control-Allow-Origin"), origin, r)
        for origin in ("https://desk.example.com.evil.com", "http://desk.example.com",
                       "https://desk.example.com:8443", "https://evil.desk.example.com",
                       "chrome-extension://other"):
            with self.subTest(origin=origin):
                r = self.srv.request("GET", "/v1/focus", headers={"Origin": origin})
                self.assertError(r, 403, "origin_not_allowed")

    def test_configured_hosts(self):
        p = self.srv.port
        for host in ("tandem.internal:%d" % p, "TANDEM.internal:%d" % p, "sidecar.local:9999",
                     "localhost:%d" % p):
            with self.subTest(host=host):
                r = self.srv.request("GET", "/healthz", headers={"Host": host}, token=False)
                self.assertEqual(r.status, 200, r)
        for host in ("tandem.internal", "tandem.internal:9999", "sidecar.local:%d" % p,
                     "sidecar.local", "x.tandem.internal:%d" % p):
            with self.subTest(host=host):
                r = self.srv.request("GET", "/healthz", headers={"Host": host}, token=False)
                self.assertError(r, 421, "host_not_allowed")


class AllowedHostOriginTest(TandemTestCase):
    """Every allowed Host is also our own origin: the panel served at http://tandem.local:PORT/panel/
    sends Origin: http://tandem.local:PORT with its calls."""

    @classmethod
    def server_env(cls):
        return {"TANDEM_ALLOWED_HOSTS": "tandem.local,[fd00::7],desk-gw:9999"}

    def own(self):
        p = self.srv.port
        return [("tandem.local:%d" % p, "http://tandem.local:%d" % p),
                ("[fd00::7]:%d" % p, "http://[fd00::7]:%d" % p),
                ("desk-gw:9999", "http://desk-gw:9999"),
                ("127.0.0.1:%d" % p, "http://127.0.0.1:%d" % p)]

    def test_panel_origin_on_allowed_host(self):
        for host, origin in self.own():
            with self.subTest(origin=origin):
                r = self.srv.request("PUT", "/v1/focus", body={"conversation_id": "c-panel"},
                                     headers={"Host": host, "Origin": origin})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("Access-Control-Allow-Origin"), origin, r)
                r = self.srv.request("POST", "/v1/suggestions/sg_0000000000000000/feedback",
                                     body={"action": "accepted"}, headers={"Host": host, "Origin": origin})
                self.assertEqual(r.status, 404, r)  # past the gate: an unknown suggestion
                r = self.srv.request("OPTIONS", "/v1/focus", token=False, headers={
                    "Host": host, "Origin": origin, "Access-Control-Request-Method": "PUT"})
                self.assertEqual(r.status, 204, r)
                self.assertEqual(r.header("Access-Control-Allow-Origin"), origin, r)

    def test_other_forms_still_rejected(self):
        p = self.srv.port
        other = p + 1 if p < 65535 else p - 1
        for origin in ("https://tandem.local:%d" % p, "http://tandem.local", "http://tandem.local:%d" % other,
                       "http://x.tandem.local:%d" % p, "http://desk-gw:%d" % p, "http://desk-gw",
                       "http://[fd00::7]", "http://fd00::7:%d" % p, "null"):
            with self.subTest(origin=origin):
                r = self.srv.request("PUT", "/v1/focus", body={"conversation_id": "c-evil"},
                                     headers={"Host": "tandem.local:%d" % p, "Origin": origin})
                self.assertError(r, 403, "origin_not_allowed")


class AuthAndRoutingTest(TandemTestCase):

    def test_token_required(self):
        tok = self.srv.token
        bad = {
            "missing": None,
            "wrong": "Bearer wrong-token",
            "basic": "Basic " + base64.b64encode(("user:" + tok).encode()).decode(),
            "prefix": "Bearer " + tok[:-1],
            "longer": "Bearer " + tok + "x",
            "no scheme": tok,
            "scheme only": "Bearer",
            "empty": "",
        }
        for what, value in bad.items():
            for method, path in (("GET", "/v1/focus"), ("GET", "/v1/conversations/c-1/context"),
                                 ("PUT", "/v1/focus"), ("GET", "/v1/no-such-endpoint"),
                                 ("GET", "/v1/conversations/c-1/nope"), ("DELETE", "/v1/focus")):
                with self.subTest(auth=what, method=method, path=path):
                    r = self.srv.request(method, path, token=False,
                                         headers={"Authorization": value},
                                         body={"conversation_id": "c-1"} if method == "PUT" else None)
                    self.assertError(r, 401, "unauthorized")
                    self.assertSecurityHeaders(r)

    def test_query_token_not_accepted_outside_sse(self):
        r = self.srv.request("GET", "/v1/focus?token=" + self.srv.token, token=False)
        self.assertError(r, 401, "unauthorized")

    def test_token_not_needed_outside_v1(self):
        for path in ("/healthz", "/readyz", "/metrics"):
            with self.subTest(path=path):
                self.assertEqual(self.srv.request("GET", path, token=False).status, 200)

    def test_unknown_paths(self):
        for path in ("/", "/nope", "/v2/focus", "/healthz/extra", "/v1x/focus", "/V1/focus"):
            with self.subTest(path=path):
                r = self.srv.request("GET", path, token=False)
                self.assertError(r, 404, "not_found")
        for path in ("/v1/nope", "/v1/conversations/c-1/nope", "/v1/conversations/c-1",
                     "/v1/focus/extra/more/segments", "/v1/"):
            with self.subTest(path=path):
                r = self.srv.request("GET", path)
                self.assertError(r, 404, "not_found")

    def test_wrong_method(self):
        for method, path, must_allow in (("POST", "/healthz", "GET"), ("DELETE", "/v1/focus", "PUT"),
                                         ("POST", "/v1/focus", "GET"),
                                         ("PUT", "/v1/conversations/c-1/context", "GET"),
                                         ("PATCH", "/metrics", "GET")):
            with self.subTest(method=method, path=path):
                r = self.srv.request(method, path,
                                     body={} if method in ("POST", "PUT", "PATCH") else None)
                self.assertError(r, 405, "method_not_allowed")
                allow = [m.strip().upper() for m in (r.header("Allow") or "").split(",")]
                self.assertIn(must_allow, allow, r)
                self.assertSecurityHeaders(r)

    def test_media_type(self):
        body = b'{"conversation_id":"c-1"}'
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                      None, "application/jsonx", "text/json", "application/json-seq"):
            with self.subTest(ctype=ctype):
                r = self.srv.request("PUT", "/v1/focus", body=body, headers={"Content-Type": ctype})
                self.assertError(r, 415, "unsupported_media_type")
        for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
            with self.subTest(ctype=ctype):
                r = self.srv.request("PUT", "/v1/focus", body=body, headers={"Content-Type": ctype})
                self.assertEqual(r.status, 200, r)

    def test_allowed_origin_with_error(self):
        origin = "http://localhost:%d" % self.srv.port
        r = self.srv.request("GET", "/v1/focus", token=False, headers={"Origin": origin})
        self.assertError(r, 401, "unauthorized")
        self.assertEqual(r.header("Access-Control-Allow-Origin"), origin)


class BodyLimitTest(TandemTestCase):
    LIMIT = 1024

    @classmethod
    def server_env(cls):
        return {"TANDEM_MAX_BODY": str(cls.LIMIT)}

    def padded(self, n):
        doc = b'{"conversation_id":"c-1"}'
        return doc + b" " * (n - len(doc))

    def put_raw(self, head, body, timeout=None):
        return self.srv.raw(("PUT /v1/focus HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                             "Content-Type: application/json\r\n" + head + "\r\n").encode() + body,
                            timeout=timeout)

    def test_exact_limit_ok(self):
        r = self.srv.request("PUT", "/v1/focus", body=self.padded(self.LIMIT),
                             headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)

    def test_declared_too_large(self):
        r = self.srv.request("PUT", "/v1/focus", body=self.padded(self.LIMIT + 1),
                             headers={"Content-Type": "application/json"})
        self.assertError(r, 413, "payload_too_large")
        self.assertSecurityHeaders(r)

    def test_declared_huge_answers_without_reading(self):
        # 1 GB declared, nothing sent: the answer must come from the headers alone.
        t0 = time.monotonic()
        r = self.put_raw("Content-Length: 1000000000\r\n", b"", timeout=5 * SLOW)
        self.assertIsNotNone(r, "connection closed without an answer")
        self.assertError(r, 413, "payload_too_large")
        self.assertLess(time.monotonic() - t0, 3 * SLOW)

    def test_chunked_within_limit(self):
        r = self.put_raw("Transfer-Encoding: chunked\r\n", chunked(self.padded(self.LIMIT), 100))
        self.assertIsNotNone(r)
        self.assertEqual(r.status, 200, r)

    def test_chunked_too_large(self):
        r = self.put_raw("Transfer-Encoding: chunked\r\n", chunked(self.padded(self.LIMIT + 1), 100))
        self.assertIsNotNone(r, "connection closed without an answer")
        self.assertError(r, 413, "payload_too_large")

    def test_chunked_much_too_large(self):
        # 64 KiB of chunks against a 1 KiB limit: drained (or cut off), then 413.
        r = self.put_raw("Transfer-Encoding: chunked\r\n", chunked(b" " * 65536, 1024))
        self.assertIsNotNone(r, "connection closed without an answer")
        self.assertError(r, 413, "payload_too_large")

    def test_too_large_writes_nothing(self):
        self.srv.request("PUT", "/v1/focus", body={"conversation_id": None})
        self.srv.request("PUT", "/v1/focus", body=self.padded(self.LIMIT + 10),
                         headers={"Content-Type": "application/json"})
        self.assertError(self.srv.request("GET", "/v1/focus"), 404, "no_focus")


class DefaultBodyLimitTest(TandemTestCase):

    def test_default_is_1mib(self):
        doc = b'{"conversation_id":"c-1"}'
        ok = doc + b" " * (1048576 - len(doc))
        r = self.srv.request("PUT", "/v1/focus", body=ok, headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("PUT", "/v1/focus", body=ok + b" ",
                             headers={"Content-Type": "application/json"})
        self.assertError(r, 413, "payload_too_large")


class FramingTest(TandemTestCase):
    """Body framing the gate refuses before routing: an unknown transfer coding (501, which
    libmicrohttpd would wait on forever), Transfer-Encoding with Content-Length (400, the
    request-smuggling shape). Either way the connection is closed: the body cannot be skipped."""

    HEAD = ("PUT /v1/focus HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n")
    BODY = b'{"conversation_id":"c-smuggled"}'
    NEXT = b"GET /v1/focus HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"

    def setUp(self):
        super().setUp()
        self.srv.request("PUT", "/v1/focus", body={"conversation_id": None})

    def answer_then_close(self, head, body=b""):
        """Sends head + body + a pipelined GET; returns the one response. The server must answer
        without waiting for more and then close (the GET is never answered)."""
        data = (self.HEAD + head + "\r\n").encode() + body + self.NEXT
        data = data.replace(b"{host}", self.srv.base_host.encode()).replace(b"{token}", self.srv.token.encode())
        s = self.srv.raw_socket(timeout=3 * SLOW)
        try:
            s.sendall(data)
            t0 = time.monotonic()
            r = read_response(s, method="PUT", timeout=3 * SLOW)
            self.assertIsNotNone(r, "closed without an answer")
            self.assertLess(time.monotonic() - t0, 2 * SLOW)
            try:
                rest = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                rest = b""
            self.assertEqual(rest, b"", "the connection stayed open and answered the next request")
            return r
        finally:
            s.close()

    def test_unknown_transfer_coding_is_501(self):
        for te in ("gzip", "deflate", "identity", "gzip, chunked", "chunked, gzip", "x-custom"):
            with self.subTest(te=te):
                r = self.answer_then_close("Transfer-Encoding: %s\r\n" % te, self.BODY)
                self.assertError(r, 501, "not_implemented")
                self.assertSecurityHeaders(r)
                self.assertIn("chunked", r.json["error"]["message"])
        self.assertError(self.srv.request("GET", "/v1/focus"), 404, "no_focus")

    def test_unknown_transfer_coding_on_get(self):
        r = self.srv.raw("GET /v1/focus HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                         "Transfer-Encoding: gzip\r\n\r\n", timeout=3 * SLOW)
        self.assertIsNotNone(r, "closed without an answer")
        self.assertError(r, 501, "not_implemented")

    def test_transfer_encoding_with_content_length_is_400(self):
        for te, body in (("chunked", chunked(self.BODY, 8)), ("gzip", self.BODY)):
            with self.subTest(te=te):
                r = self.answer_then_close("Content-Length: %d\r\nTransfer-Encoding: %s\r\n" % (len(body), te),
                                           body)
                self.assertError(r, 400, "bad_request")
                self.assertSecurityHeaders(r)
        self.assertError(self.srv.request("GET", "/v1/focus"), 404, "no_focus")

    def test_repeated_content_length_is_400(self):
        n = len(self.BODY)
        for values in ((n, n), (n, 2), (2, n)):
            with self.subTest(values=values):
                r = self.answer_then_close("Content-Length: %d\r\nContent-Length: %d\r\n" % values, self.BODY)
                self.assertError(r, 400, "bad_request")
                self.assertIn("Content-Length", r.json["error"]["message"])
        self.assertError(self.srv.request("GET", "/v1/focus"), 404, "no_focus")

    def test_repeated_transfer_encoding_is_400(self):
        r = self.answer_then_close("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                                   chunked(self.BODY, 8))
        self.assertError(r, 400, "bad_request")

    def test_repeated_authorization_is_400(self):
        tok = "Authorization: Bearer %s\r\n" % self.srv.token
        for second in (tok, "Authorization: Bearer wrong\r\n"):
            for req in ("GET /v1/focus HTTP/1.1\r\nHost: {host}\r\n" + tok + second + "\r\n",
                        "GET /healthz HTTP/1.1\r\nHost: {host}\r\n" + second + second + "\r\n"):
                with self.subTest(req=req.split("\r\n")[0], second=second.strip()[:22]):
                    r = self.srv.raw(req)
                    self.assertIsNotNone(r, "closed without an answer")
                    self.assertError(r, 400, "bad_request")
                    self.assertIn("Authorization", r.json["error"]["message"])
        body = '{"conversation_id":"c-twice"}'
        r = self.srv.raw((self.HEAD.replace("Authorization", "X-Other") + tok + tok +
                          "Content-Length: %d\r\n\r\n%s" % (len(body), body)), method="PUT")
        self.assertError(r, 400, "bad_request")
        self.assertError(self.srv.request("GET", "/v1/focus"), 404, "no_focus")

    def test_chunked_alone_still_served(self):
        r = self.srv.raw((self.HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(self.BODY, 8),
                         method="PUT")
        self.assertIsNotNone(r)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.srv.get_json("/v1/focus")["conversation_id"], "c-smuggled")


class InvalidIdTest(TandemTestCase):
    BAD_IDS = ["a:*", "x%0D%0AFLUSHALL", "x" * 129, "%C3%A9", "", "a%20b", "%2A", "a%7Bb%7D",
               "a%22b", "%E2%80%8B"]

    def setUp(self):
        super().setUp()
        self.redis.flush()
        self.redis.cmd("XADD", "tandem:conv:{ok}:msgs", "1700000000000-0", "role", "customer",
                       "text", "hi")
        # Warm up: every connection/thread of the server has talked to Redis before we count.
        for _ in range(4):
            self.assertEqual(self.srv.request("GET", "/v1/conversations/ok/context").status, 200)
        self.srv.request("GET", "/readyz", token=False)

    def test_bad_ids_rejected_without_redis(self):
        self.redis.reset_stats()
        for bad in self.BAD_IDS:
            with self.subTest(id=bad[:20]):
                r = self.srv.request("GET", "/v1/conversations/%s/context" % bad)
                self.assertError(r, 400, "invalid_id")
                self.assertSecurityHeaders(r)
        self.assertEqual(self.redis.commands_since_reset(), {},
                         "Redis commands were issued for invalid ids")

    def test_bad_focus_ids_rejected_without_redis(self):
        self.redis.reset_stats()
        for bad in ("a:*", "x\r\nFLUSHALL", "x" * 129, "\u00e9", ""):
            with self.subTest(id=bad[:20]):
                r = self.srv.request("PUT", "/v1/focus", body={"conversation_id": bad})
                self.assertError(r, 400, "invalid_id")
        self.assertEqual(self.redis.commands_since_reset(), {})

    def test_raw_bytes_in_id(self):
        self.redis.reset_stats()
        for raw_id in (b"\xc3\xa9", b"a\xffb", b"a*b", b"a:b", b"a{b"):
            with self.subTest(id=raw_id):
                r = self.srv.raw(b"GET /v1/conversations/" + raw_id + b"/context HTTP/1.1\r\n"
                                 b"Host: {host}\r\nAuthorization: Bearer {token}\r\n\r\n")
                self.assertIsNotNone(r)
                self.assertError(r, 400, "invalid_id")
        self.assertEqual(self.redis.commands_since_reset(), {})

    def test_id_boundary(self):
        self.redis.cmd("XADD", "tandem:conv:{%s}:msgs" % ("y" * 128), "1700000000000-0",
                       "role", "customer", "text", "hi")
        self.assertEqual(self.srv.request("GET", "/v1/conversations/%s/context" % ("y" * 128)).status, 200)
        self.assertError(self.srv.request("GET", "/v1/conversations/%s/context" % ("y" * 129)),
                         400, "invalid_id")

    def test_auth_before_id_validation(self):
        r = self.srv.request("GET", "/v1/conversations/a:*/context", token=False)
        self.assertError(r, 401, "unauthorized")


if __name__ == "__main__":
    unittest.main()
