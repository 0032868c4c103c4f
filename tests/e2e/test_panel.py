"""The agent panel's static files at /panel/: public (no token), behind the Host and Origin
gate, served with a strict Content-Security-Policy, and nothing else of the embedded data.
The page itself is tested in a real browser by tests/browser/ (make test-browser)."""

import re
import unittest

from harness import TandemTestCase

CSP_REQUIRED = ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                "base-uri 'none'", "form-action 'none'", "frame-ancestors 'self' chrome-extension:")


class PanelTest(TandemTestCase):

    def get(self, path, **kw):
        kw.setdefault("token", False)
        return self.srv.request("GET", path, **kw)

    def assertPanelHeaders(self, r):
        self.assertSecurityHeaders(r)
        csp = r.header("Content-Security-Policy") or ""
        for part in CSP_REQUIRED:
            self.assertIn(part, csp, r)
        self.assertNotIn("unsafe", csp, r)
        self.assertEqual(r.header("Cross-Origin-Resource-Policy"), "same-origin", r)

    def test_files_without_token(self):
        for path, ctype, marker in (("/panel/", "text/html; charset=utf-8", b"<!doctype html>"),
                                    ("/panel/index.html", "text/html; charset=utf-8", b"panel.js"),
                                    ("/panel/panel.js", "text/javascript; charset=utf-8", b"'use strict'"),
                                    ("/panel/panel.css", "text/css; charset=utf-8", b":root")):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("Content-Type"), ctype, r)
                self.assertIn(marker, r.body)
                self.assertPanelHeaders(r)

    def test_a_token_is_not_needed_but_harmless(self):
        r = self.get("/panel/", token=True)
        self.assertEqual(r.status, 200, r)
        r = self.get("/panel/", token="wrong-token-wrong-token")
        self.assertEqual(r.status, 200, r)

    def test_head(self):
        r = self.srv.request("HEAD", "/panel/panel.js", token=False)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")
        self.assertPanelHeaders(r)

    def test_redirect_keeps_query(self):
        for path, want in (("/panel", "/panel/"),
                           ("/panel?conversation=c-42", "/panel/?conversation=c-42"),
                           ("/panel?conversation=a%20b&embed=1", "/panel/?conversation=a%20b&embed=1")):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertEqual(r.status, 308, r)
                self.assertEqual(r.header("Location"), want, r)
                self.assertSecurityHeaders(r)

    def test_redirect_never_leaves_the_server(self):
        # a query that looks like a URL stays a query on our own path
        r = self.get("/panel?next=//evil.com/x&u=http://evil.com")
        self.assertEqual(r.status, 308, r)
        loc = r.header("Location")
        self.assertTrue(loc.startswith("/panel/?"), loc)
        self.assertNotIn("//", loc)

    def test_unknown_and_other_embedded_files(self):
        for path in ("/panel/nope.js", "/panel/stopwords_en.txt", "/panel/alert_rules.json",
                     "/panel/llm_system_prompt.txt", "/panel/..", "/panel/%2e%2e",
                     "/panel/panel.js/x", "/panel/../healthz", "/panel//panel.js"):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertIn(r.status, (404,), r)
                self.assertError(r, 404, "not_found")

    def test_methods(self):
        for method in ("POST", "PUT", "DELETE"):
            with self.subTest(method=method):
                r = self.srv.request(method, "/panel/", token=False, body={"x": 1})
                self.assertIn(r.status, (405, 415), r)
                self.assertIsNotNone(r.error_code, r)

    def test_gate_still_applies(self):
        p = self.srv.port
        r = self.get("/panel/", headers={"Host": "evil.com:%d" % p})
        self.assertError(r, 421, "host_not_allowed")
        r = self.get("/panel/", headers={"Origin": "http://evil.com"})
        self.assertError(r, 403, "origin_not_allowed")

    def test_page_follows_its_csp(self):
        html = self.get("/panel/").text
        self.assertNotRegex(html, r"<style", "inline style element")
        self.assertNotRegex(html, r"\sstyle=", "inline style attribute")
        self.assertNotRegex(html, r"\son[a-z]+=", "inline event handler")
        scripts = re.findall(r"<script\b[^>]*>", html)
        self.assertTrue(scripts)
        for s in scripts:
            self.assertRegex(s, r'\ssrc="[^"]+"', s)
        js = self.get("/panel/panel.js").text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function"):
            self.assertNotIn(sink, js)

    def test_api_from_the_panel_still_needs_the_token(self):
        # the page is public; what it shows is not
        r = self.srv.request("GET", "/v1/focus", token=False,
                             headers={"Origin": "http://127.0.0.1:%d" % self.srv.port})
        self.assertError(r, 401, "unauthorized")


if __name__ == "__main__":
    unittest.main()
