"""The live loop's state under the cases a review found wrong (real redis-server, real tandemd):

* a key of the wrong type (a connector's mistake) neither spins the loop nor stalls the other
  conversations' events: a string `meta` reads as no meta, a string `msgs` is left out of XREAD;
* a deleted conversation (its messages stream gone, e.g. erased) is no longer served from the
  cached answers of a watched conversation;
* meta written after the first message (brand, agent) reaches the cached answers and the
  streams without a new message;
* a KB reload (SIGHUP) reaches the cached fast path and new streams' snapshots at once, not at
  the next message;
* a stream opened while the loop is behind (it computes and primes the cache itself) does not
  make the loop take that state's alerts as already pushed to the older streams;
* the model's wording of suggestions already pushed reaches a stream opened while the model call
  was in flight (its snapshot is at the same message id).
"""

import json
import os
import shutil
import signal
import tempfile
import time
import unittest

from harness import SLOW, RedisServer, Tandemd, wait_until
from test_events import DEMO_KB, SSEClient
from test_llm import FakeLLM


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WatchStateTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tandem-watch-state-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.kb = os.path.join(self.tmp, "kb.jsonl")
        shutil.copy(DEMO_KB, self.kb)
        self.redis = RedisServer()
        self.addCleanup(self.redis.close)

    def tearDown(self):
        # SIGTERM, exit 0, and no sanitizer report: under make asan, LeakSanitizer checks what
        # the loop held for its conversations is freed
        if getattr(self, "srv", None):
            self.assertEqual(self.srv.stop(), 0)

    def metric(self, name):
        r = self.srv.request("GET", "/metrics")
        for line in r.body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def start(self, **env):
        env.setdefault("TANDEM_KB", self.kb)
        self.srv = Tandemd(self.redis, env=env)
        self.addCleanup(self.srv.close)
        return self.srv

    def xadd(self, conv, text):
        eid = self.redis.cmd("XADD", "tandem:conv:{%s}:msgs" % conv, "*", "role", "customer", "text", text)
        return eid.decode() if isinstance(eid, bytes) else eid

    def focus(self, conv):
        r = self.srv.request("PUT", "/v1/focus", body=json.dumps({"conversation_id": conv}).encode(),
                             headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)

    def stream(self, conv):
        s = SSEClient(self.srv, conv)
        self.addCleanup(s.close)
        s.read_until(lambda b: b.event == "summary", what="%s snapshot" % conv)
        return s

    def assert_live(self, s, conv, text):
        eid = self.xadd(conv, text)
        return s.read_until(lambda b: b.event == "suggestions" and b.id == eid, timeout=3 * SLOW,
                            what="the live event for %s" % eid)

    def test_wrongly_typed_keys_do_not_stall_the_loop(self):
        self.start()
        self.xadd("good", "where is my refund")
        good = self.stream("good")
        # meta written as a string: the conversation is served without meta, the loop goes on
        self.xadd("badmeta", "hello, my parcel never arrived")
        self.redis.cmd("SET", "tandem:conv:{badmeta}:meta", "oops")
        self.focus("badmeta")
        for what in ("context", "suggestions", "summary"):
            r = self.srv.request("GET", "/v1/conversations/badmeta/%s" % what)
            self.assertEqual(r.status, 200, (what, r))
        time.sleep(0.5)
        c0, t0 = cpu_seconds(self.srv.proc.pid), time.monotonic()
        time.sleep(1.5)
        busy = (cpu_seconds(self.srv.proc.pid) - c0) / (time.monotonic() - t0)
        self.assertLess(busy, 0.3, "tandemd used %.0f%% of a CPU while idle" % (100 * busy))
        seen = self.assert_live(good, "good", "the parcel is broken")
        # the messages key itself a string: XREAD refuses the whole call; the others still flow
        self.redis.cmd("SET", "tandem:conv:{badmsgs}:msgs", "oops")
        self.focus("badmsgs")
        time.sleep(0.5)
        seen += self.assert_live(good, "good", "and the box was wet")
        self.assertEqual(self.srv.request("GET", "/readyz", token=False).status, 200)
        self.assertFalse(any(b.event == "status" for b in seen),
                         "a key of the wrong type was reported as Redis being unavailable")
        wait_until(lambda: "watch_not_a_stream" in self.srv.log_text(), 3 * SLOW, what="the warning")

    def test_a_deleted_conversation_is_not_served_from_the_cache(self):
        self.start()
        self.xadd("gone", "where is my refund, I am Anna Svensson")
        self.focus("gone")
        s = self.stream("gone")
        for what in ("suggestions", "summary"):
            self.assertEqual(self.srv.request("GET", "/v1/conversations/gone/%s" % what).status, 200)
        self.redis.cmd("DEL", "tandem:conv:{gone}:msgs")

        def all_404():
            return all(self.srv.request("GET", "/v1/conversations/gone/%s" % what).status == 404
                       for what in ("suggestions", "summary", "context"))
        wait_until(all_404, 5 * SLOW, interval=0.1, what="404 for the deleted conversation")
        r = self.srv.request("GET", "/v1/focus/suggestions/1?format=text")
        self.assertEqual(r.status, 404, r)
        late = SSEClient(self.srv, "gone")
        self.addCleanup(late.close)
        self.assertEqual(late.status, 404)
        # written again: served again, live
        eid = self.xadd("gone", "hello again")
        s.read_until(lambda b: b.event == "suggestions" and b.id == eid, timeout=3 * SLOW,
                     what="the new message's event")
        self.assertEqual(self.srv.request("GET", "/v1/conversations/gone/suggestions").status, 200)

    def test_meta_written_later_reaches_cache_and_streams(self):
        self.start()
        mid = self.xadd("late-meta", "I want to talk to a real person, a human agent please")
        self.focus("late-meta")
        s = self.stream("late-meta")
        r = self.srv.request("GET", "/v1/conversations/late-meta/suggestions")
        self.assertEqual(r.json["suggestions"][0]["kb_id"], "contact-human", r.json)
        # the connector writes the brand now: contact-human is another brand's entry
        self.redis.cmd("HSET", "tandem:conv:{late-meta}:meta", "brand", "lumenpay-business")
        blk = s.read_until(lambda b: b.event == "suggestions", timeout=5 * SLOW,
                           what="the suggestions recomputed for the new meta")
        self.assertEqual(blk[-1].id, mid)
        self.assertNotIn("contact-human", [x["kb_id"] for x in blk[-1].json["suggestions"]])
        r = self.srv.request("GET", "/v1/conversations/late-meta/suggestions")
        self.assertNotIn("contact-human", [x["kb_id"] for x in r.json["suggestions"]])
        r = self.srv.request("GET", "/v1/focus/suggestions/1")
        self.assertNotEqual(r.json["kb_id"], "contact-human", r.json)
        # unchanged meta: nothing is pushed again
        with self.assertRaises(AssertionError):
            s.read_until(lambda b: b.event == "suggestions", timeout=3)

    def test_meta_change_after_the_newest_message_was_deleted_settles(self):
        """XDEL of the newest message then a meta change: one recompute, not one every probe."""
        self.start()
        self.xadd("shrunk", "I want to talk to a real person")
        self.xadd("shrunk", "a human agent please")
        self.focus("shrunk")
        self.stream("shrunk")
        newest = self.redis.cmd("XREVRANGE", "tandem:conv:{shrunk}:msgs", "+", "-", "COUNT", "1")[0][0]
        self.redis.cmd("XDEL", "tandem:conv:{shrunk}:msgs", newest)
        before = self.metric("tandem_watch_recomputes_total")
        self.redis.cmd("HSET", "tandem:conv:{shrunk}:meta", "brand", "lumenpay-business")
        time.sleep(7)  # three probes
        extra = self.metric("tandem_watch_recomputes_total") - before
        self.assertLessEqual(extra, 1, "%d recomputes for one meta change" % extra)
        r = self.srv.request("GET", "/v1/conversations/shrunk/suggestions")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("contact-human", [x["kb_id"] for x in r.json["suggestions"]])

    def test_kb_reload_reaches_the_cached_answers(self):
        self.start()
        self.xadd("c1", "where is my refund")
        first = self.stream("c1")  # the conversation is watched: its answers are cached

        def texts(path):
            r = self.srv.request("GET", path)
            self.assertEqual(r.status, 200, r)
            return [s["text"] for s in r.json["suggestions"]]
        before = texts("/v1/conversations/c1/suggestions")
        self.assertTrue(before)
        self.assertFalse(any(t.startswith("NEWKB") for t in before))
        with open(self.kb) as f:
            entries = [json.loads(line) for line in f if line.strip()]
        with open(self.kb + ".tmp", "w") as f:
            for e in entries:
                e["body"] = "NEWKB " + e["body"]
                f.write(json.dumps(e) + "\n")
        os.rename(self.kb + ".tmp", self.kb)
        self.srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "kb_reloaded" in self.srv.log_text(), 5 * SLOW, what="the reload")
        second = SSEClient(self.srv, "c1")  # computes afresh with the new KB, primes the cache
        self.addCleanup(second.close)
        blk = second.read_until(lambda b: b.event == "suggestions", what="second snapshot")
        self.assertTrue(all(s["text"].startswith("NEWKB") for s in blk[-1].json["suggestions"] if s["source"] == "kb"))
        after = texts("/v1/conversations/c1/suggestions")  # the cached fast path
        self.assertTrue(any(t.startswith("NEWKB") for t in after), after)
        third = SSEClient(self.srv, "c1")  # the shared snapshot events
        self.addCleanup(third.close)
        blk = third.read_until(lambda b: b.event == "suggestions", what="third snapshot")
        self.assertTrue(any(s["text"].startswith("NEWKB") for s in blk[-1].json["suggestions"]))
        first.close()

    def test_a_primed_snapshot_does_not_swallow_alerts(self):
        self.start()
        self.xadd("c1", "Hi, where is my refund?")
        self.xadd("busy", "hello")
        old = self.stream("c1")
        self.stream("busy")
        # the cache is dropped (KB reload), and the loop is kept busy with another conversation
        self.srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "kb_reloaded" in self.srv.log_text(), 5 * SLOW, what="the reload")
        long = "I was charged twice for my order and the refund has not arrived yet, " * 40
        for i in range(200):
            self.xadd("busy", long + str(i))
        mid = self.xadd("c1", "Otherwise I will talk to my lawyer.")
        late = SSEClient(self.srv, "c1")  # opened while the loop works through "busy"
        self.addCleanup(late.close)
        late.read_until(lambda b: b.event == "summary", what="the late stream's snapshot")
        blk = old.read_until(lambda b: b.event == "alert" and b.id == mid, timeout=15 * SLOW,
                             what="the legal alert on the older stream")
        self.assertEqual(blk[-1].json["alert"]["type"], "legal", blk[-1].json)

    def test_the_model_answer_reaches_a_stream_opened_while_it_was_asked(self):
        fake = FakeLLM()
        self.addCleanup(fake.stop)
        fake.control(default="slow_first_byte:1000")
        self.start(TANDEM_LLM_URL=fake.url, TANDEM_LLM_MODEL="fake-model", TANDEM_LLM_TIMEOUT_MS="4000",
                   TANDEM_LLM_BREAKER_FAILURES="1000")
        self.xadd("c1", "Hi, where is my refund?")
        first = self.stream("c1")
        mid = self.xadd("c1", "I was charged twice, please refund the duplicate.")
        first.read_until(lambda b: b.event == "summary" and b.id == mid, what="the local state")
        second = SSEClient(self.srv, "c1")  # the model call for mid is in flight
        self.addCleanup(second.close)
        snap = second.read_until(lambda b: b.event == "summary", what="the second snapshot")
        self.assertEqual(snap[-1].id, mid)
        for s in (first, second):
            blk = s.read_until(lambda b: b.event == "suggestions" and b.json.get("engine") == "llm",
                               timeout=8 * SLOW, what="the model's suggestions")
            self.assertEqual(blk[-1].id, mid)


if __name__ == "__main__":
    unittest.main()
