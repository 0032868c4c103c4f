"""LLM faults: the model server errors, hangs, stalls mid-stream, sends malformed or truncated
answers. Each request still gets the local answer within the time budget (engine "local" with a
fallback_reason), and the LLM is used again once it behaves. Runs only when the LLM engine is
wired into the suggestion handler and tests/fake_llm/fake_openai.py exists; skipped otherwise.
About 15 s."""

import json
import subprocess
import sys
import time
import unittest

from common import CONV, SLOW, FaultCase, wait_until
from writes import REPO_ROOT

FAKE = REPO_ROOT / "tests" / "fake_llm" / "fake_openai.py"
BUDGET_MS = 800


def llm_wired():
    try:
        src = (REPO_ROOT / "src" / "api_suggest.c").read_text()
    except OSError:
        return False
    return FAKE.exists() and ('#include "tandem/llm.h"' in src)


@unittest.skipUnless(llm_wired(), "the LLM engine is not wired into the suggestion handler yet")
class LlmFaultTest(FaultCase):

    def setUp(self):
        self.fake = subprocess.Popen([sys.executable, str(FAKE), "--port", "0", "--exit-on-stdin-eof"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.stop_fake)
        line = self.fake.stdout.readline().split()
        self.fake_port = int(line[1])
        super().setUp()

    def stop_fake(self):
        self.fake.stdin.close()
        try:
            self.fake.wait(5)
        except subprocess.TimeoutExpired:
            self.fake.kill()
            self.fake.wait(5)
        self.fake.stdout.close()

    def server_env(self):
        return {"TANDEM_LLM_URL": "http://127.0.0.1:%d/v1" % self.fake_port, "TANDEM_LLM_MODEL": "fake",
                "TANDEM_LLM_TIMEOUT_MS": str(BUDGET_MS)}

    def control(self, default):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.fake_port, timeout=5)
        c.request("POST", "/_control", body=json.dumps({"default": default}),
                  headers={"Content-Type": "application/json"})
        c.getresponse().read()
        c.close()

    def ask(self, n):
        # a new message each time so no cache answers
        self.redis.cmd("XADD", "tandem:conv:{%s}:msgs" % CONV, "*", "role", "customer", "text",
                       "refund question number %d" % n)
        t0 = time.monotonic()
        r = self.srv.request("GET", "/v1/conversations/%s/suggestions?engine=llm" % CONV, timeout=30 * SLOW)
        return r, time.monotonic() - t0

    def test_faults_fall_back_within_budget(self):
        n = 0
        for mode in ("500", "503", "hang", "stall:3000", "slow_first_byte:3000", "malformed", "truncated",
                     "error_event", "not_json", "huge:3000000", "429:1"):
            with self.subTest(mode=mode):
                self.control(mode)
                n += 1
                r, took = self.ask(n)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json.get("engine"), "local", r.json)
                self.assertTrue(r.json.get("fallback_reason"), r.json)
                self.assertTrue(r.json.get("suggestions"), r.json)
                self.assertLess(took, (BUDGET_MS / 1000.0 + 1.0) * SLOW, "%s took %.2fs" % (mode, took))
        self.control("normal")

        def llm_back():
            nonlocal n
            n += 1
            r, _ = self.ask(n)
            return r.status == 200 and r.json.get("engine") == "llm"
        wait_until(llm_back, 30 * SLOW, interval=0.5, what="the LLM engine used again")


if __name__ == "__main__":
    unittest.main()
