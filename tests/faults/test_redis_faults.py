"""Redis faults: killed, paused (SIGSTOP), restarted, LOADING, out of memory, ACL revoked.

Each test: writes before the fault; during it a clear error (status + envelope code) for
writes, and for reads what the fault allows; recovery without restarting tandemd; then every
write, retried by the client with the same key until accepted, is stored exactly once.
Redis runs with appendfsync always where it restarts, so an acknowledged write survives.
About 40 s.
"""

import collections
import subprocess
import time
import unittest

from common import CONV, SLOW, FaultCase, wait_until
from harness import RedisError, RespClient
from proxy import FaultProxy

AOF = ("--appendonly", "yes", "--appendfsync", "always")


class RedisFaultTest(FaultCase):
    redis_args = AOF

    def write_all(self, keys):
        for k in keys:
            self.writer.write(k, deadline_s=20 * SLOW)

    def recover_and_finish(self, failed_key, before, tag):
        wait_until(self.healthy, 15 * SLOW, interval=0.1, what="recovery after %s" % tag)
        self.writer.write(failed_key, deadline_s=10 * SLOW)  # the client's retry
        after = ["%s-after-%d" % (tag, i) for i in range(5)]
        self.write_all(after)
        self.assertExactlyOnce(before + [failed_key] + after)
        r = self.context()
        self.assertEqual(r.status, 200, r)
        self.assertIn("refund", r.json["messages"][0]["text"])

    def test_killed(self):
        before = ["kill-before-%d" % i for i in range(5)]
        self.write_all(before)
        self.redis.stop()
        t0 = time.monotonic()
        self.assertEnvelope(self.writer.try_once("kill-x"), 503, "redis_unavailable")
        self.assertEnvelope(self.context(), 503, "redis_unavailable")
        self.assertEnvelope(self.srv.request("GET", "/readyz", token=False), 503, "redis_unavailable")
        self.assertLess(time.monotonic() - t0, 3 * SLOW, "errors with Redis down must be fast")
        self.redis.start()
        self.recover_and_finish("kill-x", before, "kill")

    def test_paused(self):
        before = ["pause-before-%d" % i for i in range(5)]
        self.write_all(before)
        self.redis.pause()
        try:
            t0 = time.monotonic()
            # The command reaches the stopped Redis and runs when it resumes: the client is told
            # 503 although the write will happen; its retry (same feedback_id) must not double it.
            r = self.writer.try_once("pause-x", timeout=10 * SLOW)
            took = time.monotonic() - t0
            self.assertEnvelope(r, 503, "redis_unavailable")
            self.assertLess(took, 3 * SLOW, "a hung Redis held the write %.1fs (timeout 1 s)" % took)
            self.assertEnvelope(self.context(timeout=10 * SLOW), 503, "redis_unavailable")
            self.assertEqual(self.srv.request("GET", "/healthz", token=False).status, 200)
        finally:
            self.redis.resume()
        self.recover_and_finish("pause-x", before, "pause")

    def test_restarted(self):
        before = ["restart-before-%d" % i for i in range(5)]
        self.write_all(before)
        self.assertTrue(self.healthy())  # every worker holds a connection that is about to go stale
        try:
            self.redis.client.cmd("SHUTDOWN", "NOSAVE")  # graceful: clients see the connection close
        except (ConnectionError, OSError):
            pass
        self.redis.proc.wait(10)
        self.redis.start()
        # The first request on each stale connection is retried once on a fresh one: no error.
        for _ in range(8):
            r = self.context()
            self.assertEqual(r.status, 200, r)
        self.write_all(["restart-x"])
        self.recover_and_finish("restart-x", before, "restart")

    def test_back_for_every_worker(self):
        """Once Redis is back, no worker keeps answering 503 for the rest of its reconnect backoff
        (jittered, doubling up to 2 s): the first thread that gets through lets the others retry."""
        self.assertTrue(self.healthy())
        self.redis.stop()
        # Requests on every worker during the outage push each one's backoff towards its cap.
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            self.assertEnvelope(self.context(), 503, "redis_unavailable")
            time.sleep(0.02)
        self.redis.start()
        wait_until(lambda: self.srv.request("GET", "/readyz", token=False).status == 200, 10 * SLOW,
                   interval=0.02, what="readiness (one worker reconnects)")
        statuses = [self.context().status for _ in range(16)]  # new connections: every worker
        self.assertEqual(statuses, [200] * 16, "workers still in their backoff after Redis came back")

    def test_out_of_memory(self):
        before = ["oom-before-%d" % i for i in range(5)]
        self.write_all(before)
        self.redis.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.redis.cmd("CONFIG", "SET", "maxmemory", "1")
        try:
            self.assertEnvelope(self.writer.try_once("oom-x"), 503, "redis_unavailable")
            r = self.srv.request("POST", "/v1/transcripts", body='{"id":"oom-t","messages":[{"role":"customer",'
                                 '"text":"q"},{"role":"agent","text":"a"}]}\n',
                                 headers={"Content-Type": "application/x-ndjson"})
            self.assertEnvelope(r, 503, "redis_unavailable")
            # reads go on
            r = self.context()
            self.assertEqual(r.status, 200, r)
            r = self.srv.request("GET", "/v1/conversations/%s/suggestions" % CONV)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.srv.request("GET", "/readyz", token=False).status, 200)
        finally:
            self.redis.cmd("CONFIG", "SET", "maxmemory", "0")
        self.recover_and_finish("oom-x", before, "oom")
        records = self.redis.cmd("LRANGE", "tandem:memory:replies", 0, -1) or []
        self.assertFalse([r for r in records if b'"oom-t"' in r], "the refused import was stored")


class LoadingTest(FaultCase):
    """LOADING (Redis reading its data set at start-up) answered by the fault proxy: a real
    one lasts only while a large RDB loads and cannot be timed by a test."""

    def redis_url(self):
        self.proxy = FaultProxy(self.redis.port)
        self.addCleanup(self.proxy.close)
        return self.proxy.url

    def test_loading(self):
        before = ["load-before-%d" % i for i in range(5)]
        for k in before:
            self.writer.write(k)
        self.proxy.error_reply = "LOADING Redis is loading the dataset in memory"
        try:
            self.assertEnvelope(self.writer.try_once("load-x"), 503, "redis_unavailable")
            self.assertEnvelope(self.context(), 503, "redis_unavailable")
            r = self.srv.request("GET", "/readyz", token=False)
            self.assertEnvelope(r, 503, "redis_unavailable")
            self.assertGreater(self.proxy.answered, 0)
        finally:
            self.proxy.error_reply = None
        wait_until(self.healthy, 10 * SLOW, interval=0.1, what="recovery after LOADING")
        self.writer.write("load-x")
        self.assertExactlyOnce(before + ["load-x"])


class RealLoadingTest(FaultCase):
    """A real LOADING: Redis restarted on a 3-million-key RDB answers -LOADING for ~2 s."""

    redis_args = ("--enable-debug-command", "yes")

    def test_loading_for_real(self):
        before = ["rl-before-%d" % i for i in range(5)]
        for k in before:
            self.writer.write(k)
        self.redis.cmd("DEBUG", "POPULATE", "3000000", "filler", "50")
        self.redis.cmd("SAVE")
        self.redis.stop()
        # start it again without waiting for it to answer PING (the harness would wait)
        self.redis.proc = subprocess.Popen(self.redis._argv(), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        probe = RespClient(port=self.redis.port, timeout=1)
        seen = collections.Counter()
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline:
            try:
                loading = False
                probe.cmd("PING")
            except RedisError as e:
                loading = str(e).startswith("LOADING")
            except OSError:
                probe.close()
                time.sleep(0.02)
                continue
            if not loading:
                break
            r = self.writer.try_once("rl-x")
            seen["write %s" % (r.status if r is not None else "closed")] += 1
            if r is not None and r.status != 202:
                self.assertEnvelope(r, 503, "redis_unavailable")
            r = self.context()
            seen["context %d" % r.status] += 1
            if r.status != 200:
                self.assertEnvelope(r, 503, "redis_unavailable")
            r = self.srv.request("GET", "/readyz", token=False)
            seen["readyz %d" % r.status] += 1
        probe.close()
        self.assertTrue(seen["context 503"] > 0, "no request fell into the LOADING window: %r" % seen)
        wait_until(self.healthy, 30 * SLOW, interval=0.1, what="recovery after LOADING")
        self.writer.write("rl-x")
        self.assertExactlyOnce(before + ["rl-x"])


class AclTest(FaultCase):
    """tandem logs in as an ACL user; the operator revokes it."""

    redis_args = AOF
    redis_kwargs = {"acl_user": ("tandem", "s3cret-pw")}

    def redis_url(self):
        return "redis://tandem:s3cret-pw@127.0.0.1:%d/0" % self.redis.port

    def restore(self):
        self.redis.cmd("ACL", "SETUSER", "tandem", "on", "+@all", "~*", "&*")

    def test_permissions_revoked(self):
        before = ["acl-before-%d" % i for i in range(5)]
        for k in before:
            self.writer.write(k)
        self.redis.cmd("ACL", "SETUSER", "tandem", "-@all")
        try:
            # NOPERM: Redis is up and refuses this user; a 503 telling the operator to fix the
            # ACL, not a 500 "internal error".
            self.assertEnvelope(self.writer.try_once("acl-x"), 503, "redis_unavailable")
            self.assertEnvelope(self.context(), 503, "redis_unavailable")
            self.assertEnvelope(self.srv.request("GET", "/readyz", token=False), 503, "redis_unavailable")
        finally:
            self.restore()
        wait_until(self.healthy, 10 * SLOW, interval=0.1, what="recovery after the ACL was restored")
        self.writer.write("acl-x")
        self.assertExactlyOnce(before + ["acl-x"])

    def test_user_disabled(self):
        before = ["off-before-%d" % i for i in range(5)]
        for k in before:
            self.writer.write(k)
        self.redis.cmd("ACL", "SETUSER", "tandem", "off")
        self.redis.cmd("CLIENT", "KILL", "USER", "tandem")
        try:
            self.assertEnvelope(self.writer.try_once("off-x"), 503, "redis_unavailable")
            self.assertEnvelope(self.context(), 503, "redis_unavailable")
            self.assertEnvelope(self.srv.request("GET", "/readyz", token=False), 503, "redis_unavailable")
            self.assertTrue(any("redis_auth_failed" in str(rec) for rec in self.srv.log_records()),
                            "the failed AUTH is not logged")
        finally:
            self.restore()
        wait_until(self.healthy, 10 * SLOW, interval=0.1, what="recovery after the user was enabled")
        self.writer.write("off-x")
        self.assertExactlyOnce(before + ["off-x"])


if __name__ == "__main__":
    unittest.main()
