"""Shared set-up for the fault suite: the e2e harness on the path, and a test case base with a
Redis, a tandemd (small KB so suggestions and feedback work) and a Writer (writes.py)."""

import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, HERE)

from harness import SLOW, RedisServer, Tandemd, binary_path, wait_until  # noqa: E402,F401
from writes import Writer  # noqa: E402

CONV = "fault-1"


def asan_binary():
    """True when the tandemd under test is an AddressSanitizer build (its allocator keeps freed
    memory in quarantine, so RSS says nothing about leaks, and it owns malloc)."""
    try:
        with open(binary_path(), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


class FaultCase(unittest.TestCase):
    """One Redis and one tandemd per test (faults leave state behind)."""

    redis_args = ()
    redis_kwargs = {}

    def server_env(self):
        return {}

    def redis_url(self):
        return self.redis.url

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tandem-fault-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.redis = RedisServer(extra_args=list(self.redis_args), **self.redis_kwargs)
        self.addCleanup(self.redis.close)
        env = Writer.server_env(self.tmp)
        env["TANDEM_REDIS_URL"] = self.redis_url()
        env.update(self.server_env())
        self.srv = Tandemd(None, env=env)
        self.addCleanup(self.srv.close)
        self.redis.cmd("XADD", "tandem:conv:{%s}:msgs" % CONV, "*", "role", "customer",
                       "text", "Where is my refund? My card was charged twice.")
        self.writer = Writer(self.srv)
        self.writer.prepare(self.redis.cmd)

    def tearDown(self):
        self.srv.check()
        self.assertEqual(self.srv.stop(), 0, "tandemd did not exit 0 on SIGTERM")

    # -- helpers -----------------------------------------------------------------------------

    def context(self, timeout=None):
        return self.srv.request("GET", "/v1/conversations/%s/context" % CONV, timeout=timeout)

    def healthy(self, n=8):
        """Ready, and every worker (new connections spread over them) reads and writes."""
        if self.srv.request("GET", "/readyz", token=False).status != 200:
            return False
        return all(self.context().status == 200 for _ in range(n))

    def assertEnvelope(self, r, status, code):
        self.assertIsNotNone(r, "no answer")
        self.assertEqual(r.status, status, r)
        self.assertIsNotNone(r.json, r)
        self.assertEqual(r.json.get("error", {}).get("code"), code, r)
        self.assertTrue(r.json["error"].get("message"), r)

    def assertExactlyOnce(self, keys, redis_cmd=None):
        missing, dup = self.writer.audit(redis_cmd or self.redis.cmd, keys)
        self.assertEqual(missing, [], "lost writes (%s)" % self.writer.mode)
        self.assertEqual(dup, {}, "writes stored more than once (%s); failed attempts: %r"
                         % (self.writer.mode, dict(self.writer.errors)))
