"""Redis Cluster: what works, tested against a real 3-node cluster on loopback
(``redis-server --cluster-enabled yes`` x3, ``redis-cli --cluster create ... --cluster-replicas 0``).

The supported statement (README material):

tandem has no Redis Cluster client. It connects to exactly one node, the one in
TANDEM_REDIS_URL, and follows no MOVED or ASK redirection; a redirection is an error reply like
any other. Its schema is cluster-ready: every key of one conversation carries the hash tag
``{ID}`` (``tandem:conv:{ID}:msgs``, ``:meta``, ``:sugg:<k>:<engine>``) and every key of one
customer ``{CID}`` (``tandem:cust:{CID}:profile``, ``:history``), so each command tandem sends
for a conversation touches one slot (the suggestion-cache EVAL takes ``msgs`` and the cache key
together: same slot). Against one node of a cluster that means:

* a conversation whose slot that node serves works: context, suggestions, summary, focus;
* a conversation on another node answers 500 ``internal_error`` (MOVED, logged as
  ``redis_error_reply``), never wrong data; ``/readyz`` stays 200;
* a customer whose slot is on another node is left out of the context (``customer.profile``
  and ``history`` empty, no error), because a customer key that cannot be read degrades to "no
  profile" by design;
* live events (``/events``) work while every watched conversation (subscribed or focused) is in
  one slot: the watcher reads all of them with one ``XREAD``, which the cluster refuses
  (CROSSSLOT) as soon as two slots are involved; the watcher then reports Redis unavailable
  (``status`` event, ``tandem_watch_redis_up 0``) and pushes nothing until the watch set is one
  slot again;
* tandem's global keys live in one slot each, whichever node owns it: ``tandem:memory:replies``
  (transcript imports and learned replies: 500 when the slot is elsewhere), ``tandem:sugg:<SID>``
  (one suggestion record per id, spread over all slots: on the other nodes the write fails and
  is only logged, and feedback on that suggestion then answers 404), ``tandem:feedback`` with
  the feedback module's own keys hash-tagged ``{tandem:feedback}`` into the same slot.

So Redis Cluster is usable only as "one node holds everything tandem needs" (e.g. a cluster
whose slots the connectors place with tags that land on that node); for scale, use one Redis (or
a Sentinel-managed master) per tandem deployment. About 10 s.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from harness import SLOW, RedisServer, Tandemd, free_port, metric_sum, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
from writes import Writer, feedback_available  # noqa: E402


def sse_open(srv, conv):
    s = srv.raw_socket(timeout=10 * SLOW)
    s.sendall(("GET /v1/conversations/%s/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n"
               % (conv, srv.base_host, srv.token)).encode())
    return s


def sse_read_until(sock, pred, timeout):
    """Reads until pred(bytes so far) or timeout; returns the bytes."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
        if pred(got):
            break
    return got


class ClusterTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not shutil.which("redis-cli"):
            raise unittest.SkipTest("redis-cli is not installed")
        cls.nodes = []
        try:
            for _ in range(3):
                # cluster-port: the default (port + 10000) overflows for high free ports
                cls.nodes.append(RedisServer(extra_args=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                                                         "--cluster-port", str(free_port())]))
            cp = subprocess.run(["redis-cli", "--cluster", "create"] +
                                ["127.0.0.1:%d" % n.port for n in cls.nodes] +
                                ["--cluster-replicas", "0", "--cluster-yes"],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if cp.returncode != 0:
                raise AssertionError("redis-cli --cluster create failed: %s %s" % (cp.stdout, cp.stderr))
            wait_until(lambda: all("cluster_state:ok" in n.cmd_str("CLUSTER", "INFO") for n in cls.nodes),
                       30 * SLOW, interval=0.1, what="cluster_state:ok on every node")
            by_port = {n.port: n for n in cls.nodes}
            cls.ranges = [(lo, hi, by_port[int(addr[1])]) for lo, hi, addr, *_ in cls.nodes[0].cmd("CLUSTER", "SLOTS")]
            cls.local = cls.nodes[0]  # tandem's node
            cls.tmp = tempfile.mkdtemp(prefix="tandem-cluster-")
            cls.srv = Tandemd(cls.local, env=Writer.server_env(cls.tmp))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        srv = getattr(cls, "srv", None)
        if srv is not None:
            try:
                srv.check(require_alive=False)
                if srv.alive():
                    assert srv.stop() == 0, "tandemd did not exit 0 on SIGTERM"
            finally:
                srv.close()
            cls.srv = None
        for n in getattr(cls, "nodes", []):
            n.close()
        shutil.rmtree(getattr(cls, "tmp", "/nonexistent"), ignore_errors=True)

    def setUp(self):
        if self.srv is not None and not self.srv.alive():
            self.srv.start()

    def tearDown(self):
        self.srv.check()

    # -- helpers -----------------------------------------------------------------------------

    def slot(self, key):
        return self.local.cmd("CLUSTER", "KEYSLOT", key)

    def owner(self, key):
        s = self.slot(key)
        for lo, hi, node in self.ranges:
            if lo <= s <= hi:
                return node
        raise AssertionError("no node serves slot %d" % s)

    def ids(self, local, n, prefix="c", distinct_slots=True):
        """n conversation ids whose slot is (local=True) or is not on tandem's node."""
        out, slots = [], set()
        for i in range(100000):
            cid = "%s-%d" % (prefix, i)
            on_local = self.owner(cid) is self.local
            if on_local == local and (not distinct_slots or self.slot(cid) not in slots):
                out.append(cid)
                slots.add(self.slot(cid))
                if len(out) == n:
                    return out
        raise AssertionError("no ids found")

    def seed(self, conv, text="Where is my refund? It is late.", customer=None):
        node = self.owner("{%s}" % conv)
        node.cmd("XADD", "tandem:conv:{%s}:msgs" % conv, "*", "role", "customer", "text", text)
        if customer:
            node.cmd("HSET", "tandem:conv:{%s}:meta" % conv, "customer_id", customer)
            self.owner("{%s}" % customer).cmd("HSET", "tandem:cust:{%s}:profile" % customer, "name", "Anna Berg")

    # -- the tests ---------------------------------------------------------------------------

    def test_every_conversation_key_in_its_slot(self):
        # Everything tandem writes for one conversation, recorded on a standalone Redis, then
        # classified with CLUSTER KEYSLOT.
        redis = RedisServer()
        tmp = tempfile.mkdtemp(prefix="tandem-cluster-keys-")
        srv = None
        try:
            srv = Tandemd(redis, env=Writer.server_env(tmp))
            conv, cust = "conv-keys", "cust-keys"
            redis.cmd("XADD", "tandem:conv:{%s}:msgs" % conv, "*", "role", "customer", "text",
                      "My card was declined and I want a refund")
            redis.cmd("HSET", "tandem:conv:{%s}:meta" % conv, "customer_id", cust, "brand", "acme")
            redis.cmd("HSET", "tandem:cust:{%s}:profile" % cust, "name", "Anna Berg")
            redis.cmd("XADD", "tandem:cust:{%s}:history" % cust, "*", "conv_id", "old-1", "summary", "refund")
            self.assertEqual(srv.request("GET", "/v1/conversations/%s/context" % conv).status, 200)
            for q in ("", "?k=1", "?k=5&engine=local"):
                self.assertEqual(srv.request("GET", "/v1/conversations/%s/suggestions%s" % (conv, q)).status, 200)
            self.assertEqual(srv.request("GET", "/v1/conversations/%s/summary" % conv).status, 200)
            self.assertEqual(srv.request("PUT", "/v1/focus", body={"conversation_id": conv}).status, 200)
            self.assertEqual(srv.request("GET", "/v1/focus/suggestions/1?format=text").status, 200)
            s = sse_open(srv, conv)
            sse_read_until(s, lambda b: b"event: suggestions" in b, 5 * SLOW)
            redis.cmd("XADD", "tandem:conv:{%s}:msgs" % conv, "*", "role", "customer", "text", "any news?")
            sse_read_until(s, lambda b: b.count(b"event: suggestions") >= 2, 5 * SLOW)
            s.close()
            w = Writer(srv)
            w.prepare(redis.cmd, conv=conv)
            w.write("keys-1")
            self.assertEqual(srv.request("PUT", "/v1/focus", body={"conversation_id": None}).status, 200)

            keys = [k.decode() for k in redis.cmd("KEYS", "*")]
            conv_slot, cust_slot = self.slot(conv), self.slot(cust)
            global_keys = set()
            for k in keys:
                if "{%s}" % conv in k:
                    self.assertEqual(self.slot(k), conv_slot, k)
                elif "{%s}" % cust in k:
                    self.assertEqual(self.slot(k), cust_slot, k)
                else:
                    global_keys.add(re.sub(r"sg_[0-9a-f]{16}", "<SID>", k))
            self.assertTrue(any(k.endswith(":msgs") and "{%s}" % conv in k for k in keys))
            self.assertTrue(any(":sugg:" in k and "{%s}" % conv in k for k in keys), keys)
            # The global keys, each in a slot of its own; the feedback module's extras share
            # the feedback stream's slot.
            allowed = {"tandem:memory:replies", "tandem:sugg:<SID>", "tandem:feedback"}
            fb_slot = self.slot("tandem:feedback")
            for k in global_keys:
                if "{tandem:feedback}" in k:
                    self.assertEqual(self.slot(k), fb_slot, k)
                else:
                    self.assertIn(k, allowed, "an unexpected global key: %s (all: %s)" % (k, sorted(global_keys)))
            if os.environ.get("TANDEM_CLUSTER_SHOW_KEYS"):
                print("global keys:", sorted(global_keys), "all:", sorted(keys), file=sys.stderr)
            self.assertIn("tandem:sugg:<SID>", global_keys)
            if w.mode == "feedback":
                self.assertIn("tandem:feedback", global_keys)
            else:
                self.assertIn("tandem:memory:replies", global_keys)
            self.assertEqual(srv.stop(), 0)
        finally:
            if srv:
                srv.close()
            redis.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_local_conversation_works(self):
        conv, = self.ids(True, 1, "loc")
        self.seed(conv)
        r = self.srv.request("GET", "/v1/conversations/%s/context" % conv)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["messages"][-1]["text"], "Where is my refund? It is late.")
        for path in ("suggestions", "suggestions", "summary"):  # the second suggestions: the cache EVAL hit
            r = self.srv.request("GET", "/v1/conversations/%s/%s" % (conv, path))
            self.assertEqual(r.status, 200, r)
        cache = "tandem:conv:{%s}:sugg:3:auto" % conv
        self.assertEqual(self.local.cmd("EXISTS", cache), 1, "suggestion cache not written on the local node")

    def test_remote_conversation_is_an_error_not_wrong_data(self):
        conv, = self.ids(False, 1, "rem")
        self.seed(conv)
        for path in ("context", "suggestions", "summary"):
            r = self.srv.request("GET", "/v1/conversations/%s/%s" % (conv, path))
            self.assertEqual(r.status, 500, "%s: %r" % (path, r))
            self.assertEqual(r.error_code, "internal_error", r)
        self.assertEqual(self.srv.request("GET", "/readyz", token=False).status, 200)
        self.assertTrue(any(rec.get("event") == "redis_error_reply" or "redis_error_reply" in json.dumps(rec)
                            for rec in self.srv.log_records()), "MOVED not logged as redis_error_reply")
        # an id nobody wrote at all, on a remote slot: the same error (the node cannot know)
        missing, = self.ids(False, 1, "nobody")
        r = self.srv.request("GET", "/v1/conversations/%s/context" % missing)
        self.assertEqual(r.status, 500, r)

    def test_customer_on_another_node_is_left_out(self):
        conv, = self.ids(True, 1, "cust-conv")
        cust, = self.ids(False, 1, "cust")
        self.seed(conv, customer=cust)
        r = self.srv.request("GET", "/v1/conversations/%s/context" % conv)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["customer"]["profile"], {}, r.json)
        # the same customer on tandem's node is read
        conv2, = self.ids(True, 1, "cust-conv2")
        cust2, = self.ids(True, 1, "cust2")
        self.seed(conv2, customer=cust2)
        r = self.srv.request("GET", "/v1/conversations/%s/context" % conv2)
        self.assertEqual(r.json["customer"]["profile"], {"name": "Anna Berg"}, r.json)

    def test_global_keys_work_only_where_their_slot_is(self):
        local_memory = self.owner("tandem:memory:replies") is self.local
        line = json.dumps({"id": "cl-1", "messages": [{"role": "customer", "text": "hi"},
                                                       {"role": "agent", "text": "hello"}]})
        r = self.srv.request("POST", "/v1/transcripts", body=line + "\n",
                             headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 200 if local_memory else 500, r)
        if feedback_available():
            conv, = self.ids(True, 1, "fb")
            self.seed(conv)
            w = Writer(self.srv)
            w.prepare(self.local.cmd, conv=conv)
            local_fb = self.owner("tandem:feedback") is self.local
            local_sids = [s for s in w.sids if self.owner("tandem:sugg:" + s) is self.local]
            if local_sids:
                w.sids = local_sids
                r = w.try_once("cl-fb-1")
                self.assertEqual(r.status // 100, 2 if local_fb else 5, r)

    def test_events_need_one_slot(self):
        a, b = self.ids(True, 2, "ev")  # both on tandem's node, in two slots
        self.seed(a)
        self.seed(b)
        sa = sse_open(self.srv, a)
        try:
            got = sse_read_until(sa, lambda x: b"event: suggestions" in x, 5 * SLOW)
            self.assertIn(b"event: suggestions", got)
            self.local.cmd("XADD", "tandem:conv:{%s}:msgs" % a, "*", "role", "customer", "text", "card declined")
            got = sse_read_until(sa, lambda x: x.count(b"event: suggestions") >= 1, 5 * SLOW)
            self.assertIn(b"event: suggestions", got, "one watched conversation: live events work")

            sb = sse_open(self.srv, b)  # now the watch set spans two slots
            try:
                sse_read_until(sb, lambda x: b"event: suggestions" in x, 5 * SLOW)
                self.local.cmd("XADD", "tandem:conv:{%s}:msgs" % a, "*", "role", "customer", "text", "hello?")
                got = sse_read_until(sa, lambda x: b"event: status" in x, 5 * SLOW)
                self.assertIn(b'"redis":"unavailable"', got, "CROSSSLOT XREAD: the watcher reports Redis down")
                self.assertNotIn(b"event: suggestions", got)
                wait_until(lambda: metric_sum(self.srv.metrics(), "tandem_watch_redis_up") == 0, 5 * SLOW,
                           what="tandem_watch_redis_up 0")
            finally:
                sb.close()
            # one slot again: events resume, with what was missed
            got = sse_read_until(sa, lambda x: b'"redis":"ok"' in x and b"event: suggestions" in x, 10 * SLOW)
            self.assertIn(b'"redis":"ok"', got)
            self.assertIn(b"event: suggestions", got)
        finally:
            sa.close()

    def test_remote_subscription_fails_cleanly(self):
        conv, = self.ids(False, 1, "evr")
        self.seed(conv)
        s = sse_open(self.srv, conv)
        try:
            got = sse_read_until(s, lambda x: b"\r\n\r\n" in x and b"}" in x, 5 * SLOW)
        finally:
            s.close()
        self.assertTrue(got.startswith(b"HTTP/1.1 500"), got[:200])
        self.assertIn(b"internal_error", got)
        wait_until(lambda: metric_sum(self.srv.metrics(), "tandem_sse_subscribers") == 0, 5 * SLOW,
                   what="no subscriber left behind")


if __name__ == "__main__":
    unittest.main()
