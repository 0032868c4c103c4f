"""End-to-end tests of the LLM engine (issue 4): tandemd against tests/fake_llm/fake_openai.py.

What is checked, with a real redis-server, the real tandemd and the protocol-faithful fake:
  * privacy: no PII of the conversation (customer, agent, note and bot messages, the customer
    profile and the conversation meta that KB templates pull in, the live summary) reaches the
    model server in any form (as written, without separators, full-width digits, zero-width
    characters, JSON escapes); placeholders ([CARD_1] ...) are sent instead; the API key (from the
    environment or a file) is sent as "Authorization: Bearer" and never appears in the log;
  * the budget: a slow first byte, a stall mid-stream, a hung server fall back to the local answer
    within the budget (+ a small margin) with the right fallback_reason, while /healthz and other
    conversations keep being served;
  * every failure mode of the fake (429 with Retry-After inside / outside the budget, 5xx, 4xx,
    408, malformed, truncated, error events, too large, not JSON, a leaked card, an unknown URL,
    an injected SSE event) and the accepted answer forms (strings, fence, non-streaming, CRLF,
    keep-alive comments, 3-byte fragments, no [DONE], [DONE] then silence);
  * the circuit breaker: opens after N consecutive failures, answers circuit_open without calling
    the model, probes after the cool-down (a failed probe re-opens it) and closes on success;
  * /metrics counts every outcome (tandem_llm_requests_total{outcome}, attempts, retries,
    validation reasons, breaker gauge);
  * progressive SSE: the local suggestions event first, then the model's with the same id; a newer
    message cancels the older model call (no event for the old id); an injected "event:" stays
    inside one data line;
  * lifecycle: a client that disconnects while its request waits for the model, SIGTERM while a
    request is parked;
  * latency: a completed model answer is handed over at once (not on the worker's next timer).

Each class runs one fake server (killed in tearDownClass; --exit-on-stdin-eof makes it exit
with the test process), one Redis and one tandemd. Bounds are scaled by SLOW.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import unittest
import uuid

from harness import REPO_ROOT, SLOW, Tandemd, TandemTestCase, metric_sum, wait_until
from test_events import SSEClient

DEMO_KB = str(REPO_ROOT / "deploy" / "demo" / "kb.jsonl")
FAKE = str(REPO_ROOT / "tests" / "fake_llm" / "fake_openai.py")
PREFIX = "tandem:"
MARGIN = 0.35 * SLOW        # what a fallback may take beyond its deadline (scheduling, HTTP, Python)
FAST = 0.25 * SLOW          # "answers at once" for requests that must not wait for the model
LOCAL_SOURCES = {"kb", "memory"}


def new_id(tag):
    return "llm-%s-%s" % (tag, uuid.uuid4().hex[:10])


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban):
    s = re.sub(r"\s", "", iban).upper()
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


# ---- the fake model server ------------------------------------------------------------------


class FakeLLM:
    """tests/fake_llm/fake_openai.py on a free port; stop() kills it."""

    def __init__(self, require_key=None):
        argv = [sys.executable, FAKE, "--port", "0", "--exit-on-stdin-eof"]
        if require_key:
            argv += ["--require-key", require_key]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"PORT (\d+) PID (\d+)", line)
        if not m:
            self.stop()
            raise AssertionError("fake LLM server did not start: %r" % line)
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d/v1" % self.port

    def _call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5 * SLOW)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            out = r.read()
            if r.status != 200:
                raise AssertionError("fake %s %s -> %d %r" % (method, path, r.status, out[:200]))
            return json.loads(out)
        finally:
            c.close()

    def control(self, **kw):
        return self._call("POST", "/_control", kw)

    def reset(self):
        return self._call("POST", "/_reset", {})

    def prompts(self):
        return self._call("GET", "/_prompts")["prompts"]

    def requests(self):
        return self._call("GET", "/_stats")["requests"]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # --exit-on-stdin-eof
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


# ---- test base ------------------------------------------------------------------------------


class LLMCase(TandemTestCase):
    """One fake model server + Redis + tandemd per class. LLM_ENV adds to the LLM settings."""

    LLM_ENV = {}
    FAKE_KEY = None
    KB = DEMO_KB
    fake = None

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeLLM(require_key=cls.FAKE_KEY)
        try:
            super().setUpClass()
        except Exception:
            cls.fake.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.fake.stop()

    @classmethod
    def server_env(cls):
        env = {"TANDEM_KB": cls.KB, "TANDEM_LLM_URL": cls.fake.url, "TANDEM_LLM_MODEL": "fake-model",
               "TANDEM_LLM_TIMEOUT_MS": "1500", "TANDEM_LLM_BREAKER_FAILURES": "1000"}
        env.update(cls.LLM_ENV)
        return env

    def setUp(self):
        super().setUp()
        self.fake.reset()

    # -- conversations --

    def add_msg(self, conv, text, role="customer"):
        r = self.redis.cmd("XADD", "%sconv:{%s}:msgs" % (PREFIX, conv), "*", "role", role, "text", text)
        return r.decode() if isinstance(r, bytes) else r

    def new_conv(self, tag, text="Hi, where is my refund? I was charged twice for the same order."):
        conv = new_id(tag)
        self.add_msg(conv, text)
        return conv

    # -- requests --

    def suggest(self, conv, engine="llm", timeout=None, k=None):
        path = "/v1/conversations/%s/suggestions?engine=%s" % (conv, engine)
        if k:
            path += "&k=%d" % k
        t0 = time.monotonic()
        r = self.srv.request("GET", path, timeout=timeout)
        dt = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        return r.json, dt, r

    def metrics(self):
        return self.srv.metrics()

    def outcomes(self, m=None):
        m = m if m is not None else self.metrics()
        return {lab["outcome"]: v for n, lab, v in m if n == "tandem_llm_requests_total"}

    def assertOutcomeDelta(self, before, after, want, n=1):
        """Exactly n requests ended with outcome want and none with another outcome."""
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
        diff = {k: v for k, v in diff.items() if v}
        self.assertEqual(diff, {want: n}, "tandem_llm_requests_total changes")

    def assertLocal(self, ans, reason):
        self.assertEqual(ans.get("engine"), "local", ans)
        self.assertEqual(ans.get("fallback_reason"), reason, ans)
        self.assertTrue(ans["suggestions"], ans)
        for s in ans["suggestions"]:
            self.assertIn(s.get("source"), LOCAL_SOURCES, s)

    def assertLLM(self, ans):
        self.assertEqual(ans.get("engine"), "llm", ans)
        self.assertNotIn("fallback_reason", ans)
        self.assertTrue(ans["suggestions"], ans)
        for s in ans["suggestions"]:
            self.assertEqual(s.get("source"), "llm", s)
            self.assertIsInstance(s.get("text"), str)
            self.assertTrue(s["text"].strip(), s)

    def while_parked(self, conv, engine="llm"):
        """Starts GET suggestions in a thread and returns once the fake received the model call
        (so the request is parked in tandemd). Returns (thread, result dict)."""
        res = {}
        n0 = self.fake.requests()

        def run():
            try:
                res["ans"], res["dt"], _ = self.suggest(conv, engine=engine, timeout=10 * SLOW)
            except Exception as e:  # noqa: BLE001 - reported by the caller
                res["err"] = e
        th = threading.Thread(target=run, daemon=True)
        th.start()
        wait_until(lambda: self.fake.requests() > n0 or not th.is_alive(), 3 * SLOW,
                   what="the model call to reach the fake")
        return th, res

    def assertServesMeanwhile(self):
        """While a request waits for the model: /healthz and another conversation's local answer
        come back at once."""
        t0 = time.monotonic()
        r = self.srv.request("GET", "/healthz", token=False, timeout=2 * SLOW)
        dt = time.monotonic() - t0
        self.assertEqual(r.status, 200)
        self.assertLess(dt, FAST, "/healthz took %.3fs while an LLM request was waiting" % dt)
        other = self.new_conv("other")
        ans, dt, _ = self.suggest(other, engine="local", timeout=2 * SLOW)
        self.assertEqual(ans["engine"], "local")
        self.assertLess(dt, FAST, "a local answer took %.3fs while an LLM request was waiting" % dt)


# ---- 1. privacy ------------------------------------------------------------------------------

API_KEY = "sk-tandem-e2e-" + uuid.uuid4().hex
FILE_KEY = "sk-file-e2e-" + uuid.uuid4().hex

# PII written into the conversation, the profile and the meta. Each value: the forms that must
# never reach the model (compared after NFKC, zero-width removal and lower-casing).
CARD_A = "4111 1111 1111 1111"
CARD_B = "5555-5555-5555-4444"
CARD_C = "2223003122003222"          # Mastercard 2-series, written compact
CARD_FW = "３７８２ ８２２４６３ １０００５"  # Amex 378282246310005 in full-width digits
IBAN_A = "GB82 WEST 1234 5698 7654 32"
IBAN_B = "DE89370400440532013000"
EMAIL_A = "anna.lindqvist@example.com"
EMAIL_P = "Anna.Profile@Example.org"
PHONE_A = "+46 70 123 45 67"
PHONE_US = "(415) 555-0132"
PHONE_ZW = "+46\u200b70\u200b765\u200b43\u200b21"  # zero-width spaces inside
PHONE_P = "+44 20 7946 0958"
SSN_A = "078-05-1120"
SSN_P = "219-09-9999"
PNR_A = "811218-9876"
PNR_P = "19900101-0017"


def pii_forms():
    """(label, form) pairs that must not appear in anything sent to the model."""
    out = []

    def digits(s):
        return re.sub(r"\D", "", unicodedata.normalize("NFKC", s))
    for label, v in (("card", CARD_A), ("card", CARD_B), ("card", CARD_C), ("card", CARD_FW)):
        d = digits(v)
        out += [(label, d), (label, " ".join(d[i:i + 4] for i in range(0, len(d), 4))),
                (label, "-".join(d[i:i + 4] for i in range(0, len(d), 4)))]
    for v in (IBAN_A, IBAN_B):
        c = re.sub(r"\s", "", v).lower()
        out += [("iban", c), ("iban", " ".join(c[i:i + 4] for i in range(0, len(c), 4))), ("iban", c[4:])]
    for v in (EMAIL_A, EMAIL_P):
        out += [("email", v.lower()), ("email", v.lower().split("@")[0] + "@")]
    for v in (PHONE_A, PHONE_US, PHONE_ZW, PHONE_P):
        d = digits(v.replace("\u200b", ""))
        out += [("phone", d)]
        if d.startswith(("46", "44")):
            out += [("phone", d[2:]), ("phone", "0" + d[2:])]
    for v in (SSN_A, SSN_P):
        out += [("ssn", v), ("ssn", digits(v)), ("ssn", v.replace("-", " "))]
    for v in (PNR_A, PNR_P):
        d = digits(v)
        out += [("pnr", v), ("pnr", d), ("pnr", d[-10:])]
    return out


ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
SEP_BETWEEN = re.compile(r"(?<=[0-9a-z])[ \t\n\r\u00a0.\-/()]+(?=[0-9a-z])")
UNICODE_ESC = re.compile(r"\\u([0-9a-fA-F]{4})")


def views_of(body):
    """The ways a prompt body could carry a value: as sent, JSON-decoded (twice: the blocks
    inside the user message are JSON too), NFKC-normalised, without zero-width characters,
    lower-cased, and with separators between letters/digits removed."""
    texts = [body]
    try:
        obj = json.loads(body)
        for m in obj.get("messages", []):
            if isinstance(m.get("content"), str):
                texts.append(m["content"])
    except ValueError:
        pass
    out = []
    for t in texts:
        t = UNICODE_ESC.sub(lambda m: chr(int(m.group(1), 16)), t)
        t = unicodedata.normalize("NFKC", t).translate(ZERO_WIDTH).lower()
        out.append(t)
        out.append(SEP_BETWEEN.sub("", t))
    return out


PRIVACY_KB = [
    {"id": "refund-card", "title": "Refund to your card",
     "body": "Hi {{customer.first_name}}, the refund for the double charge goes back to your card. "
             "We confirm by e-mail to {{customer.email}} and by text to {{customer.phone}}. "
             "Case: {{conversation.subject}}",
     "tags": ["refund", "card", "charged"], "lang": "en"},
    {"id": "charged-twice", "title": "Charged twice",
     "body": "Hi {{customer.name}}, sorry about the double charge. We have your details on file "
             "(ID {{customer.ssn}}, personnummer {{customer.personnummer}}, account {{customer.iban}}).",
     "tags": ["charged", "twice", "refund"], "lang": "en",
     "url": "https://help.example.com/charged-twice"},
    {"id": "contact-us", "title": "Contact us", "body": "Reach us any time: https://help.example.com/contact",
     "url": "https://help.example.com/contact", "tags": ["contact"], "lang": "en"},
]


class PrivacyTest(LLMCase):
    """Nothing personal leaves the machine; the key goes only into the Authorization header."""

    FAKE_KEY = API_KEY
    LLM_ENV = {"TANDEM_LLM_API_KEY": API_KEY, "TANDEM_LOG_LEVEL": "debug", "TANDEM_LLM_TIMEOUT_MS": "3000"}

    @classmethod
    def setUpClass(cls):
        cls.kb_dir = tempfile.mkdtemp(prefix="tandem-llm-kb-")
        cls.KB = os.path.join(cls.kb_dir, "kb.jsonl")
        with open(cls.KB, "w") as f:
            for e in PRIVACY_KB:
                f.write(json.dumps(e) + "\n")
        try:
            super().setUpClass()
        except Exception:
            shutil.rmtree(cls.kb_dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.kb_dir, ignore_errors=True)

    def test_test_data_is_valid_pii(self):
        # the redactor only masks real values: invalid test data would prove nothing
        for v in (CARD_A, CARD_B, CARD_C, CARD_FW):
            self.assertTrue(luhn_ok(re.sub(r"\D", "", unicodedata.normalize("NFKC", v))), v)
        for v in (IBAN_A, IBAN_B):
            self.assertTrue(iban_ok(v), v)
        for v in (PNR_A, PNR_P):
            self.assertTrue(luhn_ok(re.sub(r"\D", "", v)[-10:]), v)

    def write_conversation(self):
        conv = new_id("pii")
        cid = new_id("cust")
        key = "%sconv:{%s}:" % (PREFIX, conv)
        self.redis.cmd("HSET", "%scust:{%s}:profile" % (PREFIX, cid), "name", "Anna Lindqvist",
                       "email", EMAIL_P, "phone", PHONE_P, "ssn", SSN_P, "personnummer", PNR_P,
                       "iban", IBAN_B, "tier", "gold")
        self.redis.cmd("HSET", key + "meta", "customer_id", cid, "lang", "en", "agent_name", "Sam",
                       "subject", "Card %s charged twice, call %s" % (CARD_B, PHONE_US))
        msgs = [
            ("customer", "Hi! My card %s was charged twice for the same order. Refund please!" % CARD_A),
            ("bot", "I can help. Please confirm the account (IBAN %s) and your e-mail." % IBAN_A),
            ("customer", "E-mail: %s, phone %s or %s. Also the card %s and %s was used."
             % (EMAIL_A, PHONE_A, PHONE_ZW, CARD_C, CARD_FW)),
            ("note", "Verified: SSN %s, personnummer %s" % (SSN_A, PNR_A)),
            ("agent", "Thanks Anna, I see the double charge on %s. I'll write to %s." % (CARD_A, EMAIL_A)),
            ("customer", "My personnummer is %s and SSN %s, IBAN %s. Where is my refund?" % (PNR_A, SSN_A, IBAN_A)),
        ]
        for role, text in msgs:
            self.redis.cmd("XADD", key + "msgs", "*", "role", role, "text", text)
        return conv

    def assertNoPII(self, prompts):
        forms = pii_forms()
        self.assertTrue(prompts, "the fake recorded no prompt")
        for i, p in enumerate(prompts):
            views = views_of(p["body"])
            for label, form in forms:
                f = form.lower()
                for v in views:
                    self.assertNotIn(f, v, "prompt %d sends %s %r: %s" % (i, label, form, p["body"][:300]))
            for ph in ("[CARD_1]", "[CARD_2]", "[IBAN_1]", "[EMAIL_1]", "[PHONE_1]", "[SSN_1]", "[PNR_1]"):
                self.assertIn(ph, p["body"], "prompt %d lacks the placeholder %s" % (i, ph))

    def test_no_pii_reaches_the_model(self):
        conv = self.write_conversation()
        # GET (the conversation is not watched: no summary)
        ans, _, _ = self.suggest(conv, engine="llm")
        self.assertLLM(ans)  # the fake required the key: it was sent
        # the template-filled local answer carries the profile's values: they are grounding too
        local, _, _ = self.suggest(conv, engine="local")
        self.assertIn(EMAIL_P, json.dumps(local), "the KB template did not pull in the profile (test setup)")
        # the live path: a subscriber makes the conversation watched (summary in the prompt)
        sse = SSEClient(self.srv, conv)
        try:
            self.assertEqual(sse.status, 200)
            sse.read_until(lambda b: b.event == "summary", what="snapshot")
            mid = self.add_msg(conv, "Please call me on %s, card %s again." % (PHONE_A, CARD_A))
            sse.read_until(lambda b: b.event == "suggestions" and b.id == mid and b.json.get("engine") == "llm",
                           timeout=5 * SLOW, what="the model's suggestions event")
        finally:
            sse.close()
        prompts = self.fake.prompts()
        self.assertGreaterEqual(len(prompts), 2, prompts)
        self.assertNoPII(prompts)
        self.assertIn("<summary>", prompts[-1]["body"])

    def test_api_key_sent_as_bearer_never_logged(self):
        conv = self.new_conv("key")
        ans, _, _ = self.suggest(conv)
        self.assertLLM(ans)
        prompts = self.fake.prompts()
        self.assertEqual(len(prompts), 1)
        self.assertEqual(prompts[0]["auth"], "Bearer " + API_KEY)
        self.assertNotIn(API_KEY, prompts[0]["body"])
        self.assertNotIn(API_KEY, self.srv.log_text())
        self.assertNotIn(API_KEY, self.srv.stdout_text())
        self.assertNotIn(API_KEY, self.srv.request("GET", "/metrics", token=False).text)
        # debug logging was on and the LLM client logged: the check saw real log lines
        self.assertTrue(any(r.get("msg") == "llm_start" for r in self.srv.log_records()))

    def test_log_holds_no_pii(self):
        conv = self.write_conversation()
        self.suggest(conv)
        log = self.srv.log_text()
        for label, form in pii_forms():
            self.assertNotIn(form.lower(), log.lower(), "the log holds %s %r" % (label, form))


# ---- 2. the budget -----------------------------------------------------------------------------


class BudgetTest(LLMCase):
    """Only the total budget (700 ms): a slow, stalled or hung model ends as "timeout"."""

    BUDGET = 0.7
    LLM_ENV = {"TANDEM_LLM_TIMEOUT_MS": "700"}

    def check_timeout(self, mode):
        self.fake.control(default=mode)
        conv = self.new_conv("budget")
        before = self.outcomes()
        th, res = self.while_parked(conv)
        self.assertServesMeanwhile()
        th.join(5 * SLOW)
        self.assertFalse(th.is_alive(), "the request never came back (%s)" % mode)
        self.assertNotIn("err", res, res)
        self.assertLocal(res["ans"], "timeout")
        self.assertLessEqual(res["dt"], self.BUDGET + MARGIN, "%s: answered after %.3fs" % (mode, res["dt"]))
        self.assertGreaterEqual(res["dt"], self.BUDGET - 0.1, "%s: gave up early (%.3fs)" % (mode, res["dt"]))
        self.assertOutcomeDelta(before, self.outcomes(), "timeout")

    def test_hang(self):
        self.check_timeout("hang")

    def test_slow_first_byte(self):
        self.check_timeout("slow_first_byte:3000")

    def test_stall(self):
        self.check_timeout("stall:3000")

    def test_engine_local_never_calls_the_model(self):
        conv = self.new_conv("local")
        ans, dt, _ = self.suggest(conv, engine="local")
        self.assertEqual(ans["engine"], "local")
        self.assertNotIn("fallback_reason", ans)
        self.assertEqual(self.fake.requests(), 0)

    def test_auto_uses_the_model_and_caches(self):
        conv = self.new_conv("auto")
        ans, _, _ = self.suggest(conv, engine="auto")
        self.assertLLM(ans)
        self.assertEqual(self.fake.requests(), 1)
        # same state: the newest answer comes from the in-process cache, no model call
        self.fake.control(default="hang")
        again, dt, _ = self.suggest(conv, engine="auto")
        self.assertLLM(again)
        self.assertLess(dt, FAST)
        self.assertEqual([s["id"] for s in again["suggestions"]], [s["id"] for s in ans["suggestions"]])
        self.assertEqual(self.fake.requests(), 1)

    def test_not_configured(self):
        srv = Tandemd(self.redis, env={"TANDEM_KB": DEMO_KB})
        try:
            conv = self.new_conv("nollm")
            r = srv.request("GET", "/v1/conversations/%s/suggestions?engine=llm" % conv)
            self.assertEqual(r.status, 200, r)
            self.assertLocal(r.json, "llm_not_configured")
            r = srv.request("GET", "/v1/conversations/%s/suggestions?engine=auto" % conv)
            self.assertEqual(r.json["engine"], "local")
            self.assertEqual(self.fake.requests(), 0)
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.close()


# ---- 3. failure modes and accepted forms -------------------------------------------------------

# mode (or script) -> expected outcome, upstream requests, max seconds (None: budget + margin)
FAILURES = [
    ("slow_first_byte:2000", "first_byte_timeout", 1, 0.3),
    ("stall:3000", "stalled", 1, 0.3),
    ("hang", "first_byte_timeout", 1, 0.3),
    ("429:5", "http_429", 1, 0.0),            # Retry-After beyond the budget: give up at once
    ("429:date", "http_429", 1, 0.0),         # an HTTP-date: "later than we can wait"
    (["429:1", "429:1"], "http_429", 2, 1.0),  # the second Retry-After no longer fits
    ("500", "http_5xx", 3, None),
    ("503", "http_5xx", 3, None),
    ("408", "http_408", 3, None),
    ("401", "http_4xx", 1, 0.0),               # not retried
    ("malformed", "malformed", 1, 0.0),
    ("truncated", "truncated", 1, 0.0),
    ("error_event", "upstream_error", 1, 0.0),
    ("huge", "too_large", 1, 0.0),
    ("not_json", "validation_failed", 1, 0.0),
    ("leak_card", "validation_failed", 1, 0.0),
    ("bad_url", "validation_failed", 1, 0.0),
]

# answers tandem must accept (engine "llm"): mode -> upstream requests, min seconds
ACCEPTED = [
    ("normal", 1, 0.0),
    ("strings", 1, 0.0),
    ("fence", 1, 0.0),
    ("nonstream", 1, 0.0),
    ("crlf", 1, 0.0),
    ("keepalive", 1, 0.0),
    ("fragment", 1, 0.0),
    ("no_done", 1, 0.0),
    ("done_then_hang:5000", 1, 0.0),
    ("inject", 1, 0.0),
    (["429:1", "normal"], 2, 0.95),   # Retry-After inside the budget is honoured
    (["500", "normal"], 2, 0.0),
    (["503", "500", "normal"], 3, 0.0),
    (["408", "normal"], 2, 0.0),
]


class FallbackTest(LLMCase):
    """Budget 1.5 s, first byte 300 ms, stall 300 ms; the breaker never opens here."""

    BUDGET = 1.5
    LLM_ENV = {"TANDEM_LLM_TIMEOUT_MS": "1500", "TANDEM_LLM_FIRST_BYTE_MS": "300",
               "TANDEM_LLM_STALL_MS": "300"}

    def set_mode(self, mode):
        self.fake.reset()
        if isinstance(mode, list):
            self.fake.control(script=mode, default="hang")
        else:
            self.fake.control(default=mode)

    def run_case(self, mode):
        self.set_mode(mode)
        conv = self.new_conv("mode")
        m0 = self.metrics()
        ans, dt, r = self.suggest(conv)
        return ans, dt, r, m0, self.metrics()

    def test_failures_fall_back_to_local(self):
        for mode, outcome, n_up, max_s in FAILURES:
            with self.subTest(mode=mode):
                ans, dt, r, m0, m1 = self.run_case(mode)
                self.assertLocal(ans, outcome)
                limit = self.BUDGET + MARGIN if max_s is None else max_s + MARGIN
                self.assertLessEqual(dt, limit, "%s took %.3fs" % (mode, dt))
                self.assertEqual(self.fake.requests(), n_up, "upstream requests for %s" % mode)
                self.assertOutcomeDelta(self.outcomes(m0), self.outcomes(m1), outcome)
                self.assertEqual(metric_sum(m1, "tandem_llm_attempts_total") - metric_sum(m0, "tandem_llm_attempts_total"),
                                 n_up, "attempts_total")
                self.assertEqual(metric_sum(m1, "tandem_llm_retries_total") - metric_sum(m0, "tandem_llm_retries_total"),
                                 n_up - 1, "retries_total")
                # nothing the model wrote is shown when its answer was rejected
                # the model's card as it writes it: a suggestion id (hex) may hold "4111"
                self.assertNotIn(b"4111 1111", r.body)
                self.assertNotIn(b"evil.example.net", r.body)

    def test_validation_reasons_counted(self):
        for mode, why in (("not_json", "not_json"), ("leak_card", "pii"), ("bad_url", "unknown_url")):
            with self.subTest(mode=mode):
                m0 = self.metrics()
                ans, _, _, _, m1 = self.run_case(mode)
                self.assertLocal(ans, "validation_failed")
                d = (metric_sum(m1, "tandem_llm_validation_failures_total", reason=why)
                     - metric_sum(m0, "tandem_llm_validation_failures_total", reason=why))
                self.assertEqual(d, 1, "validation reason %s" % why)

    def test_accepted_answers(self):
        for mode, n_up, min_s in ACCEPTED:
            with self.subTest(mode=mode):
                ans, dt, r, m0, m1 = self.run_case(mode)
                self.assertLLM(ans)
                self.assertLessEqual(dt, self.BUDGET + MARGIN, "%s took %.3fs" % (mode, dt))
                self.assertGreaterEqual(dt, min_s, "%s: Retry-After not honoured (%.3fs)" % (mode, dt))
                self.assertEqual(self.fake.requests(), n_up)
                self.assertOutcomeDelta(self.outcomes(m0), self.outcomes(m1), "ok")
                self.assertGreaterEqual(len(ans["suggestions"]), 1)
                self.assertLessEqual(len(ans["suggestions"]), 3)
                for s in ans["suggestions"]:
                    self.assertRegex(s["id"], r"^sg_[0-9a-f]{16}$")
                    self.assertTrue(s.get("ai_generated", True))
                if mode == "strings":
                    self.assertTrue(all("kb_id" not in s for s in ans["suggestions"]), ans)
                if mode == "normal":
                    # the fake cites the first grounding id it was sent: it comes back as kb_id
                    self.assertIn("kb_id", ans["suggestions"][0], ans)

    def test_inject_stays_inside_one_json_string(self):
        ans, _, r, _, _ = self.run_case("inject")
        self.assertLLM(ans)
        text = ans["suggestions"][0]["text"]
        self.assertIn("\n\nevent: alert\ndata:", text)  # kept verbatim, as data
        self.assertNotIn(b"\n\nevent: alert", r.body)    # escaped in the JSON answer
        self.assertNotIn(b"\nevent:", r.body)

    def test_meanwhile_the_server_serves(self):
        for mode in ("hang", "stall:3000", "slow_first_byte:2000"):
            with self.subTest(mode=mode):
                self.set_mode(mode)
                conv = self.new_conv("meanwhile")
                th, res = self.while_parked(conv)
                self.assertServesMeanwhile()
                th.join(5 * SLOW)
                self.assertFalse(th.is_alive())
                self.assertNotIn("err", res, res)
                self.assertEqual(res["ans"]["engine"], "local")

    def test_parallel_conversations_do_not_wait_for_each_other(self):
        # one hung model call does not delay another conversation's healthy one
        self.fake.control(script=["hang"], default="normal")
        slow = self.new_conv("hung")
        th, res = self.while_parked(slow)
        fast = self.new_conv("healthy")
        ans, dt, _ = self.suggest(fast)
        self.assertLLM(ans)
        self.assertLess(dt, FAST + 0.1 * SLOW)
        th.join(5 * SLOW)
        self.assertEqual(res["ans"]["fallback_reason"], "first_byte_timeout")

    def test_answer_handed_over_at_once(self):
        # A finished model answer must reach the client at once. When a transfer finishes inside
        # the second curl_multi_perform() of the LLM worker's loop (src/llm.c worker_main), the
        # worker sleeps until its next timer (POLL_MAX_MS = 1 s, or the stall / first-byte timer)
        # before it hands the answer over: a few % of streamed answers take up to a second more.
        # Statistical: 40 answers streamed in 1-byte pieces (the race is likely), each must be fast.
        self.fake.control(default="normal", chunk=1)  # many small writes: the race is likely
        slow = []
        for i in range(40):
            conv = self.new_conv("handover")
            ans, dt, _ = self.suggest(conv)
            self.assertLLM(ans)
            if dt > FAST:
                slow.append(round(dt, 3))
                break
        self.assertEqual(slow, [], "a model answer that was complete took %ss to reach the client "
                                   "(lost wake-up in src/llm.c worker_main)" % slow)


# ---- 4. the circuit breaker ---------------------------------------------------------------------


class BreakerTest(LLMCase):
    """Opens after 2 consecutive failures; a probe after 600 ms. The key comes from a file."""

    COOLDOWN = 0.6

    @classmethod
    def setUpClass(cls):
        cls.key_dir = tempfile.mkdtemp(prefix="tandem-llm-key-")
        cls.key_file = os.path.join(cls.key_dir, "key")
        with open(cls.key_file, "w") as f:
            f.write(FILE_KEY + "\n")
        os.chmod(cls.key_file, 0o600)
        try:
            super().setUpClass()
        except Exception:
            shutil.rmtree(cls.key_dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.key_dir, ignore_errors=True)

    @classmethod
    def server_env(cls):
        env = super().server_env()
        env.update({"TANDEM_LLM_BREAKER_FAILURES": "2", "TANDEM_LLM_BREAKER_COOLDOWN_MS": "600",
                    "TANDEM_LLM_API_KEY_FILE": cls.key_file})
        return env

    def breaker(self, m=None):
        return metric_sum(m if m is not None else self.metrics(), "tandem_llm_breaker_state")

    def ask(self, tag="br"):
        return self.suggest(self.new_conv(tag))

    def close_breaker(self):
        """Leaves the breaker closed for the next test."""
        self.fake.control(default="normal")
        if self.breaker() != 0:
            time.sleep(self.COOLDOWN + 0.05)
        ans, _, _ = self.ask("reset")
        self.assertLLM(ans)
        self.assertEqual(self.breaker(), 0)

    def test_opens_and_recovers(self):
        self.close_breaker()
        self.fake.reset()
        self.fake.control(default="malformed")
        m0 = self.metrics()
        opens0 = metric_sum(m0, "tandem_llm_breaker_opens_total")
        self.assertLocal(self.ask()[0], "malformed")
        self.assertEqual(self.breaker(), 0, "one failure must not open the breaker")
        self.assertLocal(self.ask()[0], "malformed")
        self.assertEqual(self.breaker(), 1, "two consecutive failures open it")
        self.assertEqual(metric_sum(self.metrics(), "tandem_llm_breaker_opens_total"), opens0 + 1)
        # open: the model is not called, the answer is immediate
        n = self.fake.requests()
        ans, dt, _ = self.ask()
        self.assertLocal(ans, "circuit_open")
        self.assertLess(dt, FAST)
        self.assertEqual(self.fake.requests(), n, "an open breaker must not call the model")
        # after the cool-down one probe goes out; it fails: open again, no further call
        time.sleep(self.COOLDOWN + 0.05)
        self.assertLocal(self.ask()[0], "malformed")
        self.assertEqual(self.fake.requests(), n + 1)
        self.assertEqual(self.breaker(), 1)
        self.assertLocal(self.ask()[0], "circuit_open")
        self.assertEqual(self.fake.requests(), n + 1)
        # healthy again: the next probe succeeds and closes it
        self.fake.control(default="normal")
        time.sleep(self.COOLDOWN + 0.05)
        self.assertLLM(self.ask()[0])
        self.assertEqual(self.breaker(), 0)
        self.assertLLM(self.ask()[0])
        self.assertEqual(self.fake.requests(), n + 3)
        self.assertOutcomeDelta({k: v for k, v in self.outcomes(m0).items() if k not in ("malformed", "ok")},
                                {k: v for k, v in self.outcomes().items() if k not in ("malformed", "ok")},
                                "circuit_open", 2)
        m1 = self.metrics()
        self.assertEqual(self.outcomes(m1)["malformed"] - self.outcomes(m0)["malformed"], 3)
        self.assertEqual(self.outcomes(m1)["ok"] - self.outcomes(m0)["ok"], 2)

    def test_unusable_answer_is_not_an_outage(self):
        # validation failures mean the server answered: they reset the failure count
        self.close_breaker()
        self.fake.reset()
        self.fake.control(script=["malformed", "not_json", "malformed", "normal"])
        self.assertLocal(self.ask()[0], "malformed")
        self.assertLocal(self.ask()[0], "validation_failed")
        self.assertLocal(self.ask()[0], "malformed")
        self.assertEqual(self.breaker(), 0)
        self.assertLLM(self.ask()[0])

    def test_key_file_sent_as_bearer_never_logged(self):
        self.close_breaker()
        self.fake.reset()
        self.assertLLM(self.ask()[0])
        self.assertEqual(self.fake.prompts()[-1]["auth"], "Bearer " + FILE_KEY)
        self.assertNotIn(FILE_KEY, self.srv.log_text())


# ---- 5. metrics ------------------------------------------------------------------------------


class MetricsTest(LLMCase):

    def test_families_and_labels(self):
        m = self.metrics()
        names = {n for n, _, _ in m}
        for fam in ("tandem_llm_requests_total", "tandem_llm_breaker_state", "tandem_llm_breaker_opens_total",
                    "tandem_llm_attempts_total", "tandem_llm_retries_total", "tandem_llm_inflight",
                    "tandem_llm_validation_failures_total", "tandem_llm_request_duration_seconds_bucket",
                    "tandem_llm_request_duration_seconds_count"):
            self.assertIn(fam, names)
        outcomes = set(self.outcomes(m))
        for o in ("ok", "timeout", "first_byte_timeout", "stalled", "http_429", "http_5xx", "http_4xx",
                  "malformed", "truncated", "validation_failed", "circuit_open", "cancelled", "shutdown"):
            self.assertIn(o, outcomes)

    def test_histogram_counts_each_request(self):
        m0 = self.metrics()
        for mode in ("normal", "malformed", "500"):
            self.fake.control(default=mode)
            self.suggest(self.new_conv("hist"))
        m1 = self.metrics()
        d = (metric_sum(m1, "tandem_llm_request_duration_seconds_count")
             - metric_sum(m0, "tandem_llm_request_duration_seconds_count"))
        self.assertEqual(d, 3)
        self.assertEqual(sum(self.outcomes(m1).values()) - sum(self.outcomes(m0).values()), 3)
        self.assertEqual(metric_sum(m1, "tandem_llm_inflight"), 0)


# ---- 6. progressive SSE ------------------------------------------------------------------------


class ProgressiveTest(LLMCase):
    """Local suggestions at once, the model's when they arrive, on the same event id."""

    LLM_ENV = {"TANDEM_LLM_TIMEOUT_MS": "3000"}

    def open(self, conv):
        sse = SSEClient(self.srv, conv)
        self.addCleanup(sse.close)
        self.assertEqual(sse.status, 200)
        sse.read_until(lambda b: b.event == "summary", what="snapshot")
        return sse

    @staticmethod
    def is_sugg(b, mid, engine):
        return b.event == "suggestions" and b.id == mid and b.is_event and b.json.get("engine") == engine

    def test_local_then_llm_same_id(self):
        self.fake.control(default="slow_first_byte:300")
        conv = self.new_conv("prog")
        sse = self.open(conv)
        mid = self.add_msg(conv, "I was charged twice, please refund the duplicate.")
        t0 = time.monotonic()
        blocks = sse.read_until(lambda b: b.event == "suggestions" and b.id == mid, what="local suggestions")
        t_local = time.monotonic() - t0
        self.assertEqual(blocks[-1].json["engine"], "local", blocks[-1])
        blocks = sse.read_until(lambda b: self.is_sugg(b, mid, "llm"), timeout=5 * SLOW, what="llm suggestions")
        t_llm = time.monotonic() - t0
        ev = blocks[-1]
        self.assertEqual(ev.json.get("based_on"), mid)
        for s in ev.json["suggestions"]:
            self.assertEqual(s["source"], "llm")
        self.assertLess(t_local, 0.25 * SLOW, "the local event waited for the model")
        self.assertGreater(t_llm, 0.25)
        # the pushed answer is the cached one: GET auto on the same state is instant, no model call
        n = self.fake.requests()
        ans, dt, _ = self.suggest(conv, engine="auto")
        self.assertLLM(ans)
        self.assertLess(dt, FAST)
        self.assertEqual(self.fake.requests(), n)
        self.assertEqual([s["id"] for s in ans["suggestions"]][:len(ev.json["suggestions"])],
                         [s["id"] for s in ev.json["suggestions"]][:len(ans["suggestions"])])

    def test_newer_message_cancels_older_call(self):
        self.fake.control(default="slow_first_byte:1000")
        conv = self.new_conv("newer")
        sse = self.open(conv)
        before = self.outcomes()
        m1 = self.add_msg(conv, "I was charged twice.")
        seen = sse.read_until(lambda b: b.event == "suggestions" and b.id == m1, what="local event of m1")
        wait_until(lambda: self.fake.requests() >= 1, 2 * SLOW, what="the model call for m1")
        m2 = self.add_msg(conv, "Hello? Where is the refund for the double charge?")
        seen += sse.read_until(lambda b: self.is_sugg(b, m2, "llm"), timeout=5 * SLOW, what="llm event of m2")
        # the old call's slot is gone: nothing for m1 arrives later either
        deadline = time.monotonic() + 0.5 * SLOW
        while time.monotonic() < deadline:
            b = sse.next(max(0.0, deadline - time.monotonic()))
            if b is not None:
                seen.append(b)
        self.assertFalse([b for b in seen if self.is_sugg(b, m1, "llm")], "an llm event for the older message")
        after = self.outcomes()
        self.assertEqual(after["cancelled"] - before["cancelled"], 1, "the older model call was not cancelled")
        self.assertEqual(after["ok"] - before["ok"], 1)

    def test_last_subscriber_leaving_cancels_the_call(self):
        # nobody is left to see the model's answer: the call is dropped (and, under ASan, its
        # state must be freed even though its callback never runs)
        self.fake.control(default="slow_first_byte:2000")
        conv = self.new_conv("leave")
        sse = self.open(conv)
        before = self.outcomes()
        mid = self.add_msg(conv, "I was charged twice.")
        sse.read_until(lambda b: b.event == "suggestions" and b.id == mid, what="local event")
        wait_until(lambda: self.fake.requests() >= 1, 2 * SLOW, what="the model call")
        sse.close()
        wait_until(lambda: self.outcomes().get("cancelled", 0) > before.get("cancelled", 0), 1.8 * SLOW,
                   what="the pending model call to be cancelled when the last subscriber left")
        self.assertEqual(metric_sum(self.metrics(), "tandem_llm_inflight"), 0)

    def test_inject_never_creates_an_event(self):
        self.fake.control(default="inject")
        conv = self.new_conv("inject")
        sse = self.open(conv)
        mid = self.add_msg(conv, "Refund for the double charge please.")
        blocks = sse.read_until(lambda b: self.is_sugg(b, mid, "llm"), timeout=5 * SLOW, what="llm event")
        ev = blocks[-1]
        self.assertEqual(len(ev.data_lines), 1, ev.fields)
        self.assertIn("\n\nevent: alert\ndata:", ev.json["suggestions"][0]["text"])
        for b in blocks:
            self.assertFalse(b.event == "alert" and "pwned" in (b.data or ""), "an injected event: %r" % b)
            self.assertNotIn("pwned", " ".join(v for n, v in b.fields if n != "data"))
        self.assertNotIn(b"\nevent: alert\ndata: {\"type\":\"fraud\"", bytes(sse.all_body))

    def test_failed_model_call_pushes_nothing_more(self):
        self.fake.control(default="malformed")
        conv = self.new_conv("pushfail")
        sse = self.open(conv)
        mid = self.add_msg(conv, "Refund please.")
        seen = sse.read_until(lambda b: b.event == "suggestions" and b.id == mid, what="local event")
        wait_until(lambda: self.fake.requests() >= 1, 2 * SLOW, what="the model call")
        deadline = time.monotonic() + 0.5 * SLOW
        while time.monotonic() < deadline:
            b = sse.next(max(0.0, deadline - time.monotonic()))
            if b is not None:
                seen.append(b)
        self.assertEqual([b.json["engine"] for b in seen if b.event == "suggestions" and b.id == mid], ["local"])


# ---- 7/8. lifecycle: disconnects and SIGTERM ------------------------------------------------------


class LifecycleTest(LLMCase):
    """Budget 3 s so that what happens before it ends is visible."""

    LLM_ENV = {"TANDEM_LLM_TIMEOUT_MS": "3000"}

    def send_raw(self, conv):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5 * SLOW)
        s.sendall(("GET /v1/conversations/%s/suggestions?engine=llm HTTP/1.1\r\nHost: %s\r\n"
                   "Authorization: Bearer %s\r\n\r\n" % (conv, self.srv.base_host, self.srv.token)).encode())
        return s

    def inflight(self):
        return metric_sum(self.metrics(), "tandem_llm_inflight")

    def test_client_disconnect_cancels_upstream(self):
        # Issue 4: "a client that disconnects cancels its upstream call". Observable as
        # tandem_llm_requests_total{outcome="cancelled"} + 1 and tandem_llm_inflight back to 0 long
        # before the model call's own deadline (first byte 2.5 s here).
        self.fake.control(default="hang")
        conv = self.new_conv("disc")
        before = self.outcomes()
        s = self.send_raw(conv)
        wait_until(lambda: self.fake.requests() >= 1, 3 * SLOW, what="the model call")
        self.assertEqual(self.inflight(), 1)
        t0 = time.monotonic()
        s.close()
        try:
            # the server stays healthy meanwhile
            self.assertServesMeanwhile()
            try:
                wait_until(lambda: self.inflight() == 0, 1.0 * SLOW, what="inflight 0")
                freed = time.monotonic() - t0
            except AssertionError:
                freed = None
            after = self.outcomes()
            self.assertIsNotNone(freed, "the model call of a client that went away is still running 1 s later "
                                        "(outcomes so far: %r)" % {k: after[k] - before.get(k, 0) for k in after
                                                                  if after[k] != before.get(k, 0)})
            self.assertEqual(after.get("cancelled", 0) - before.get("cancelled", 0), 1)
        finally:
            # either way, the call ends within the budget and nothing is left behind
            wait_until(lambda: self.inflight() == 0, 4 * SLOW, what="inflight back to 0")

    def test_client_disconnect_server_stays_healthy(self):
        # several clients give up while parked; every slot is freed by the end of the budget
        self.fake.control(default="slow_first_byte:1000")
        socks = [self.send_raw(self.new_conv("gone")) for _ in range(5)]
        wait_until(lambda: self.fake.requests() >= 5, 3 * SLOW, what="five model calls")
        for s in socks:
            s.close()
        self.assertServesMeanwhile()
        wait_until(lambda: self.inflight() == 0, 4 * SLOW, what="inflight back to 0")
        self.fake.control(default="normal")
        ans, _, _ = self.suggest(self.new_conv("after"))
        self.assertLLM(ans)

    def test_sigterm_while_parked(self):
        # budget and first-byte deadline beyond the 3 s shutdown grace: the LLM client's stop
        # ends the call ("shutdown") and the parked request answers with the local suggestions
        srv = Tandemd(self.redis, env=dict(self.server_env(), TANDEM_LLM_TIMEOUT_MS="10000",
                                           TANDEM_LLM_FIRST_BYTE_MS="9000"))
        try:
            self.fake.control(default="hang")
            conv = self.new_conv("term")
            res = {}

            def run():
                try:
                    r = srv.request("GET", "/v1/conversations/%s/suggestions?engine=llm" % conv, timeout=15)
                    res["resp"] = r
                except (OSError, http.client.HTTPException) as e:
                    res["closed"] = e
            th = threading.Thread(target=run, daemon=True)
            th.start()
            wait_until(lambda: self.fake.requests() >= 1, 3 * SLOW, what="the model call")
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            rc = srv.wait_exit(5 * SLOW)
            took = time.monotonic() - t0
            th.join(2 * SLOW)
            self.assertEqual(rc, 0)
            self.assertLess(took, 5 * SLOW)
            self.assertFalse(th.is_alive(), "the client hangs after the server exited")
            if "resp" in res:
                r = res["resp"]
                self.assertEqual(r.status, 200, r)
                self.assertLocal(r.json, "shutdown")
            else:
                self.assertIn("closed", res)
            srv.check(require_alive=False)
        finally:
            srv.close()


if __name__ == "__main__":
    unittest.main()
