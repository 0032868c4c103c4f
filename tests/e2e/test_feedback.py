"""End-to-end tests of feedback on suggestions, quality figures, the quality report and learning.

POST /v1/suggestions/{SID}/feedback: each action, validation, unknown and expired suggestions,
idempotency through feedback_id (sequential and concurrent), concurrent feedback on one
suggestion, redaction, Redis refusing the write (OOM, read-only replica, down: 503 and nothing
written). GET /v1/quality (all-time and ?since=), /metrics, GET /v1/quality/report and
scripts/quality_report.py. Learning: edited replies become the suggestion for the next similar
conversation; rejected ones rank lower in similar situations, also on another sidecar.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest

from harness import REPO_ROOT, SLOW, Tandemd, TandemTestCase, free_port, metric_sum, wait_until
from test_suggest import add_conv, load_demo, ndjson

DEMO_KB = str(REPO_ROOT / "deploy" / "demo" / "kb.jsonl")
PREFIX = "tandem:"
STREAM = PREFIX + "feedback"
TAG = "{%sfeedback}" % PREFIX
CONTRACT_FIELDS = ["suggestion_id", "conversation_id", "kb_id", "engine", "action", "final_text",
                   "edit_distance", "agent_id", "ts"]
REFUND_Q = "Hi, I sent the jacket back last week and my refund still has not arrived. Where is my refund?"
CHARGE_Q = "I was charged twice for the same order, there are two payments on my card. Please fix the double charge."


def decode(v):
    return v.decode() if isinstance(v, bytes) else v


def entries(redis, key=STREAM):
    """The stream as [(id, {field: value})], oldest first."""
    out = []
    for eid, fields in redis.cmd("XRANGE", key, "-", "+"):
        f = [decode(x) for x in fields]
        out.append((decode(eid), dict(zip(f[0::2], f[1::2]))))
    return out


def hgetall(redis, key):
    r = [decode(x) for x in redis.cmd("HGETALL", key)]
    return dict(zip(r[0::2], r[1::2]))


class FeedbackBase(TandemTestCase):
    @classmethod
    def server_env(cls):
        return {"TANDEM_KB": DEMO_KB}

    def setUp(self):
        super().setUp()
        self.redis.flush()

    def suggest(self, conv_id, srv=None, k=3):
        r = (srv or self.srv).request("GET", "/v1/conversations/%s/suggestions?k=%d" % (conv_id, k))
        self.assertEqual(r.status, 200, r)
        return r.json["suggestions"]

    def feedback(self, sid, body, srv=None, headers=None, **kw):
        headers = dict(headers or {})
        if isinstance(body, (str, bytes)):
            headers.setdefault("Content-Type", "application/json")
        return (srv or self.srv).request("POST", "/v1/suggestions/%s/feedback" % sid, body=body, headers=headers,
                                         **kw)

    def customer(self, conv_id, text, name=None, brand="lumenpay"):
        """A one-turn conversation of brand; with name, a customer profile too."""
        meta = {"brand": brand, "lang": "en", "agent_name": "Jordan"}
        if name:
            meta["customer_id"] = "cust-" + conv_id
            self.redis.cmd("HSET", "%scust:{cust-%s}:profile" % (PREFIX, conv_id), "name", name)
        add_conv(self.redis, conv_id, [("customer", text)], meta)

    def top(self, conv_id, text=REFUND_Q, name=None):
        self.customer(conv_id, text, name)
        return self.suggest(conv_id)[0]

    def quality(self, query=""):
        r = self.srv.request("GET", "/v1/quality" + query)
        self.assertEqual(r.status, 200, r)
        return r.json


class FeedbackTest(FeedbackBase):

    # -- each action ---------------------------------------------------------------------------

    def test_accepted(self):
        load_demo(self.redis, "demo-refund")
        sg = self.suggest("demo-refund")[0]
        t0 = int(time.time() * 1000)
        r = self.feedback(sg["id"], {"action": "accepted", "agent_id": "ag-17"})
        self.assertEqual(r.status, 202, r)
        self.assertSecurityHeaders(r)
        self.assertEqual(set(r.json), {"feedback_entry_id", "duplicate"})
        self.assertIs(r.json["duplicate"], False)
        (eid, e), = entries(self.redis)
        self.assertEqual(r.json["feedback_entry_id"], eid)
        self.assertEqual(list(e)[:len(CONTRACT_FIELDS)], CONTRACT_FIELDS)  # the contract's fields, first
        self.assertEqual(e["suggestion_id"], sg["id"])
        self.assertEqual(e["conversation_id"], "demo-refund")
        self.assertEqual(e["kb_id"], sg["kb_id"])
        self.assertEqual(e["engine"], "local")
        self.assertEqual(e["action"], "accepted")
        self.assertEqual(e["final_text"], sg["text"])  # accepted as shown (no PII in it)
        self.assertEqual(e["edit_distance"], "0")
        self.assertEqual(e["agent_id"], "ag-17")
        self.assertTrue(t0 <= int(e["ts"]) <= int(time.time() * 1000))
        self.assertEqual(e["first_action"], "1")
        self.assertEqual(e["source"], sg["source"])

    def test_edited_distance_in_code_points(self):
        sg = self.top("c-edit")
        # two code points more: an accented letter (2 bytes) and an emoji (4 bytes)
        final = sg["text"] + "\u00e9\U0001F600"
        r = self.feedback(sg["id"], {"action": "edited", "final_text": final, "agent_id": "ag-1",
                                     "time_to_action_ms": 4200})
        self.assertEqual(r.status, 202, r)
        (eid, e), = entries(self.redis)
        self.assertEqual(e["action"], "edited")
        self.assertEqual(e["final_text"], final)
        self.assertEqual(e["edit_distance"], "2")
        self.assertEqual(e["time_to_action_ms"], "4200")
        # a rewrite: distance counted per character, not per byte
        sg2 = self.top("c-edit2")
        r = self.feedback(sg2["id"], {"action": "edited", "final_text": "\u00c5sa h\u00e4r"})
        self.assertEqual(r.status, 202, r)
        e2 = entries(self.redis)[-1][1]
        self.assertLessEqual(int(e2["edit_distance"]), len(sg2["text"]))
        self.assertGreaterEqual(int(e2["edit_distance"]), len(sg2["text"]) - 7)

    def test_rejected(self):
        sg = self.top("c-rej")
        r = self.feedback(sg["id"], {"action": "rejected", "reason": "wrong topic", "agent_id": "ag-2"})
        self.assertEqual(r.status, 202, r)
        (eid, e), = entries(self.redis)
        self.assertEqual(e["action"], "rejected")
        self.assertEqual(e["final_text"], "")
        self.assertEqual(e["edit_distance"], "")
        self.assertEqual(e["reason"], "wrong topic")
        # a rejection is remembered for ranking, as words' hashes only
        (rid, rej), = entries(self.redis, PREFIX + "feedback:%s:rejections" % TAG)
        self.assertEqual(rej["target"], sg["kb_id"])
        self.assertEqual(rej["brand"], "lumenpay")
        self.assertNotIn("refund", rej["terms"])
        self.assertRegex(rej["terms"], r"^[0-9a-f]{16}( [0-9a-f]{16})*$")
        # nothing is learned from a rejection
        self.assertEqual(int(self.redis.cmd("LLEN", PREFIX + "memory:replies")), 0)

    # -- bad input -----------------------------------------------------------------------------

    def test_validation(self):
        sg = self.top("c-val")
        sid = sg["id"]
        for bad_sid in ("sg_123", "sg_0123456789ABCDEF", "xx_0123456789abcdef", "sg_0123456789abcdef0"):
            r = self.feedback(bad_sid, {"action": "accepted"})
            self.assertError(r, 400, "invalid_id")
        cases = [
            ({}, "'action' is required"),
            ({"action": "maybe"}, "'action' is required"),
            ({"action": "edited"}, "'final_text' is required"),
            ({"action": "edited", "final_text": ""}, "must not be empty"),
            ({"action": "edited", "final_text": 42}, "must be a string"),
            ({"action": "accepted", "agent_id": ""}, "'agent_id'"),
            ({"action": "accepted", "feedback_id": "has space"}, "'feedback_id'"),
            ({"action": "accepted", "time_to_action_ms": -3}, "'time_to_action_ms'"),
            ({"action": "accepted", "shown_at_ms": "yesterday"}, "'shown_at_ms'"),
            ({"action": "accepted", "finalText": "x"}, "unknown field 'finalText'"),
            ({"action": "edited", "final_text": "x" * 32769}, "too long"),
            ({"action": "accepted", "reason": "r" * 1001}, "'reason' is too long"),
        ]
        for body, msg in cases:
            r = self.feedback(sid, body)
            self.assertError(r, 400, "invalid_json")
            self.assertIn(msg, r.json["error"]["message"], body)
        r = self.feedback(sid, b'{"action": "edited", "final_text": "caf\xe9"}')  # Latin-1, not UTF-8
        self.assertError(r, 400, "invalid_json")
        r = self.feedback(sid, '{"action": "accepted",')
        self.assertError(r, 400, "invalid_json")
        r = self.feedback(sid, '["accepted"]')
        self.assertError(r, 400, "invalid_json")
        r = self.feedback(sid, '{"action":"accepted"}', headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 415, r)
        r = self.feedback(sid, {"action": "accepted"}, token=False)
        self.assertError(r, 401, "unauthorized")
        r = self.feedback(sid, {"action": "accepted", "conversation_id": "another-conv"})
        self.assertError(r, 409, "conflict")
        r = self.srv.request("GET", "/v1/suggestions/%s/feedback" % sid)
        self.assertEqual(r.status, 405, r)
        # none of it was written
        self.assertEqual(int(self.redis.cmd("XLEN", STREAM)), 0)

    def test_unknown_and_expired(self):
        r = self.feedback("sg_0000000000000000", {"action": "accepted"})
        self.assertError(r, 404, "not_found")
        self.assertIn("expired", r.json["error"]["message"])
        sg = self.top("c-exp")
        self.redis.cmd("DEL", PREFIX + "sugg:" + sg["id"])
        self.assertError(self.feedback(sg["id"], {"action": "accepted"}), 404, "not_found")
        # expiry by TTL (the record lives 24 h; here 1 ms)
        sg2 = self.top("c-exp2", CHARGE_Q)
        self.assertGreater(int(self.redis.cmd("TTL", PREFIX + "sugg:" + sg2["id"])), 86000)
        self.redis.cmd("PEXPIRE", PREFIX + "sugg:" + sg2["id"], 1)
        time.sleep(0.05)
        self.assertError(self.feedback(sg2["id"], {"action": "edited", "final_text": "x"}), 404, "not_found")
        self.assertEqual(int(self.redis.cmd("XLEN", STREAM)), 0)

    # -- idempotency and concurrency ---------------------------------------------------------

    def test_duplicate_feedback_id_sequential(self):
        sg = self.top("c-dup")
        body = {"action": "edited", "final_text": "Thanks, sorted!", "feedback_id": "fb-0001"}
        r1 = self.feedback(sg["id"], body)
        self.assertEqual(r1.status, 202, r1)
        self.assertIs(r1.json["duplicate"], False)
        r2 = self.feedback(sg["id"], dict(body, final_text="a retry may even differ"))
        self.assertEqual(r2.status, 202, r2)
        self.assertEqual(r2.json, {"feedback_entry_id": r1.json["feedback_entry_id"], "duplicate": True})
        self.assertEqual(len(entries(self.redis)), 1)
        q = self.quality()["engines"]["local"]
        self.assertEqual((q["edited"], q["actions"]), (1, 1))
        self.assertEqual(int(self.redis.cmd("LLEN", PREFIX + "memory:replies")), 1)
        # the key that remembers it expires (7 days)
        ttl = int(self.redis.cmd("TTL", PREFIX + "feedback:%s:id:fb-0001" % TAG))
        self.assertTrue(600000 <= ttl <= 604800, ttl)
        # the same feedback_id for another suggestion is a client bug: 409, nothing written
        other = self.top("c-dup2", CHARGE_Q)
        r3 = self.feedback(other["id"], body)
        self.assertError(r3, 409, "conflict")
        self.assertEqual(len(entries(self.redis)), 1)
        # without feedback_id every call is an entry
        self.assertEqual(self.feedback(sg["id"], {"action": "accepted"}).status, 202)
        self.assertEqual(self.feedback(sg["id"], {"action": "accepted"}).status, 202)
        self.assertEqual(len(entries(self.redis)), 3)

    def parallel(self, n, fn):
        results = [None] * n
        barrier = threading.Barrier(n)

        def run(i):
            barrier.wait()
            results[i] = fn(i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30 * SLOW)
        return results

    def test_duplicate_feedback_id_concurrent(self):
        sg = self.top("c-cdup")
        body = {"action": "rejected", "reason": "not helpful", "feedback_id": "fb-race"}
        rs = self.parallel(10, lambda i: self.feedback(sg["id"], body))
        self.assertTrue(all(r.status == 202 for r in rs), rs)
        self.assertEqual(len({r.json["feedback_entry_id"] for r in rs}), 1, rs)
        self.assertEqual(sum(1 for r in rs if not r.json["duplicate"]), 1, rs)
        self.assertEqual(len(entries(self.redis)), 1)
        self.assertEqual(self.quality()["engines"]["local"]["rejected"], 1)
        self.assertEqual(int(self.redis.cmd("XLEN", PREFIX + "feedback:%s:rejections" % TAG)), 1)

    def test_concurrent_feedback_on_one_suggestion(self):
        sg = self.top("c-conc")
        rs = self.parallel(10, lambda i: self.feedback(sg["id"], {
            "action": ("accepted", "edited", "rejected")[i % 3], "agent_id": "ag-%d" % i,
            "final_text": "reply %d" % i if i % 3 == 1 else None, "time_to_action_ms": 1000 + i}))
        self.assertTrue(all(r.status == 202 and r.json["duplicate"] is False for r in rs), rs)
        ids = {r.json["feedback_entry_id"] for r in rs}
        self.assertEqual(len(ids), 10)
        es = entries(self.redis)
        self.assertEqual({eid for eid, _ in es}, ids)
        # exactly one of them was the first action on the suggestion
        self.assertEqual(sum(e["first_action"] == "1" for _, e in es), 1)
        q = self.quality()["engines"]["local"]
        self.assertEqual((q["accepted"], q["edited"], q["rejected"]), (4, 3, 3))
        counters = hgetall(self.redis, PREFIX + "quality:%s:engine" % TAG)
        self.assertEqual(counters["local|tta_n"], "1")

    # -- redaction -----------------------------------------------------------------------------

    def test_final_text_redacted(self):
        sg = self.top("c-pii", name="Anna Berg")
        final = ("Hi Anna, I refunded card 4111 1111 1111 1111; the receipt went to anna.berg@example.com. "
                 "Jordan")
        r = self.feedback(sg["id"], {"action": "edited", "final_text": final,
                                     "reason": "call me on +46 70 123 45 67"})
        self.assertEqual(r.status, 202, r)
        e = entries(self.redis)[0][1]
        self.assertNotIn("4111", e["final_text"])
        self.assertNotIn("anna.berg@example.com", e["final_text"])
        self.assertIn("[CARD_1]", e["final_text"])
        self.assertIn("[EMAIL_1]", e["final_text"])
        self.assertNotIn("123 45 67", e["reason"])
        # the distance is the agent's real edit, measured before redaction
        self.assertGreater(int(e["edit_distance"]), 0)
        # the reply memory learns the redacted text, with the names turned back into placeholders
        (rec,) = [json.loads(decode(x)) for x in self.redis.cmd("LRANGE", PREFIX + "memory:replies", 0, -1)]
        self.assertNotIn("4111", rec["r"])
        self.assertNotIn("example.com", rec["r"])
        self.assertTrue(rec["r"].startswith("Hi {{customer.first_name}}, I refunded card [CARD_1]"), rec)
        self.assertTrue(rec["r"].endswith("{{agent.name}}"), rec)
        self.assertEqual(rec["k"], sg["kb_id"])
        self.assertEqual(rec["s"], "feedback")
        for blob in self.redis.cmd("KEYS", PREFIX + "*feedback*"):
            if decode(self.redis.cmd("TYPE", blob)) == "string":
                # the card as written (with its spaces): hex ids in the blob may hold "4111"
                self.assertNotIn(b"4111 1111", self.redis.cmd("GET", blob))

    # -- Redis refuses -------------------------------------------------------------------------

    def written(self):
        return (int(self.redis.cmd("XLEN", STREAM)), int(self.redis.cmd("LLEN", PREFIX + "memory:replies")),
                hgetall(self.redis, PREFIX + "quality:%s:engine" % TAG),
                sorted(decode(k) for k in self.redis.cmd("KEYS", "*")))

    def test_out_of_memory(self):
        sg = self.top("c-oom")
        before = self.written()
        self.redis.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.redis.cmd("CONFIG", "SET", "maxmemory", "1")
        try:
            for body in ({"action": "edited", "final_text": "learned first"},
                         {"action": "rejected", "reason": "no"},
                         {"action": "accepted", "feedback_id": "fb-oom"}):
                r = self.feedback(sg["id"], body)
                self.assertError(r, 503, "redis_unavailable")
        finally:
            self.redis.cmd("CONFIG", "SET", "maxmemory", "0")
        self.assertEqual(self.written(), before)
        # the retry after Redis recovered is stored once
        r = self.feedback(sg["id"], {"action": "accepted", "feedback_id": "fb-oom"})
        self.assertEqual(r.status, 202, r)
        self.assertIs(r.json["duplicate"], False)
        self.assertEqual(len(entries(self.redis)), 1)

    def test_read_only_replica(self):
        sg = self.top("c-ro")
        before = self.written()
        # a replica of a master that does not exist: reads work, writes are refused (READONLY)
        self.redis.cmd("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            r = self.feedback(sg["id"], {"action": "edited", "final_text": "must not be lost silently"})
            self.assertError(r, 503, "redis_unavailable")
            r = self.feedback(sg["id"], {"action": "rejected"})
            self.assertError(r, 503, "redis_unavailable")
        finally:
            self.redis.cmd("REPLICAOF", "NO", "ONE")
        self.assertEqual(self.written(), before)
        wait_until(lambda: self.feedback(sg["id"], {"action": "rejected", "feedback_id": "fb-ro"}).status == 202,
                   10 * SLOW, interval=0.2, what="feedback accepted again after REPLICAOF NO ONE")
        self.assertEqual(len(entries(self.redis)), 1)
        # a worker that met READONLY reconnects (after its backoff) to find the new master
        self.wait_all_workers()

    def wait_all_workers(self):
        wait_until(lambda: all(self.srv.request("GET", "/v1/quality").status == 200 for _ in range(8)),
                   10 * SLOW, interval=0.1, what="every worker answering again")

    def test_redis_down(self):
        sg = self.top("c-down")
        self.redis.stop()
        try:
            r = self.feedback(sg["id"], {"action": "accepted"})
            self.assertError(r, 503, "redis_unavailable")
            self.assertError(self.srv.request("GET", "/v1/quality"), 503, "redis_unavailable")
            self.assertEqual(self.srv.request("GET", "/metrics", token=False).status, 200)
        finally:
            self.redis.restart()
        # every worker reconnects by itself (after its backoff)
        self.wait_all_workers()

    # -- quality figures -----------------------------------------------------------------------

    def test_quality_json_and_metrics(self):
        m0 = self.srv.metrics()
        sgs = [self.top("c-q%d" % i) for i in range(3)]
        engines = self.quality()["engines"]
        self.assertIn("local", engines, "no shown counter: quality_note_shown() must be called where suggestions "
                                        "are recorded (api_suggest.c store_records)")
        shown = engines["local"]["shown"]
        self.assertGreaterEqual(shown, 3 * 3, "suggestions are counted as shown where they are recorded")
        self.assertEqual(self.feedback(sgs[0]["id"], {"action": "accepted", "time_to_action_ms": 1000}).status, 202)
        self.assertEqual(self.feedback(sgs[1]["id"], {"action": "edited", "final_text": sgs[1]["text"] + "!!",
                                                      "time_to_action_ms": 3000}).status, 202)
        self.assertEqual(self.feedback(sgs[2]["id"], {"action": "rejected", "time_to_action_ms": 5000}).status, 202)
        q = self.quality()
        self.assertEqual(q["scope"], "all_time")
        self.assertIs(q["per_agent"], False)
        self.assertNotIn("agents", q)
        loc = q["engines"]["local"]
        self.assertEqual((loc["accepted"], loc["edited"], loc["rejected"], loc["actions"]), (1, 1, 1, 3))
        self.assertEqual(loc["shown"], shown)
        self.assertAlmostEqual(loc["acceptance_rate"], 0.667, places=3)
        self.assertAlmostEqual(loc["mean_edit_distance"], 1.0)  # (0 + 2) / 2
        self.assertAlmostEqual(loc["mean_time_to_first_action_ms"], 3000.0)
        self.assertAlmostEqual(loc["used_per_shown"], round(2 / shown, 3))
        kbq = {k["kb_id"]: k for k in q["kb_entries"]}
        self.assertEqual(sum(k["actions"] for k in kbq.values()), 3)
        self.assertIn(sgs[0]["kb_id"], kbq)
        self.assertTrue(kbq[sgs[0]["kb_id"]]["title"])
        self.assertGreaterEqual(kbq[sgs[0]["kb_id"]]["shown"], 3)

        # since: from the stream; an ISO date, unix ms, the future
        qs = self.quality("?since=2020-01-01")
        self.assertEqual(qs["scope"], "since")
        self.assertEqual(qs["scanned"], 3)
        self.assertIs(qs["truncated"], False)
        self.assertIsNone(qs["engines"]["local"]["shown"])
        self.assertEqual(qs["engines"]["local"]["actions"], 3)
        self.assertAlmostEqual(qs["engines"]["local"]["mean_time_to_first_action_ms"], 3000.0)
        future = self.quality("?since=%d" % (int(time.time() * 1000) + 3600000))
        self.assertEqual((future["scanned"], future["engines"]), (0, {}))
        self.assertEqual(self.quality("?since=2020-01-01T00:00:00%2B01:00")["scanned"], 3)
        r = self.srv.request("GET", "/v1/quality?since=last-week")
        self.assertError(r, 400, "bad_request")

        # /metrics: per engine, fleet-wide from Redis, plus this process's counters
        m1 = self.srv.metrics()
        self.assertEqual(metric_sum(m1, "tandem_quality_feedback", engine="local", action="accepted"), 1)
        self.assertEqual(metric_sum(m1, "tandem_quality_feedback", engine="local", action="rejected"), 1)
        self.assertEqual(metric_sum(m1, "tandem_quality_shown", engine="local"), shown)
        self.assertAlmostEqual(metric_sum(m1, "tandem_quality_acceptance_ratio", engine="local"), 2 / 3, places=4)
        self.assertAlmostEqual(metric_sum(m1, "tandem_quality_time_to_first_action_seconds_mean", engine="local"), 3)
        for action in ("accepted", "edited", "rejected"):
            self.assertEqual(metric_sum(m1, "tandem_feedback_stored_total", action=action) -
                             metric_sum(m0, "tandem_feedback_stored_total", action=action), 1)
        self.assertEqual(metric_sum(m1, "tandem_feedback_learned_total") -
                         metric_sum(m0, "tandem_feedback_learned_total"), 2)
        # per-KB figures stay out of /metrics (cardinality)
        self.assertFalse([n for n, labels, _ in m1 if "kb_id" in labels])

    def test_since_scan_is_bounded(self):
        # 10,001 entries written straight to the stream: the answer says where it stopped
        pipe = []
        for i in range(10001):
            pipe.append(("XADD", STREAM, "*", "suggestion_id", "sg_%016x" % i, "conversation_id", "c", "kb_id",
                         "refund-status", "engine", "local", "action", "accepted", "final_text", "x",
                         "edit_distance", "0", "agent_id", "", "ts", "0"))
        for cmd in pipe:
            self.redis.cmd(*cmd)
        q = self.quality("?since=0")
        self.assertEqual(q["scanned"], 10000)
        self.assertIs(q["truncated"], True)
        self.assertEqual(q["scan_limit"], 10000)
        self.assertGreater(q["covered_from_ms"], 0)
        self.assertEqual(q["engines"]["local"]["accepted"], 10000)


class PerAgentTest(FeedbackBase):
    @classmethod
    def server_env(cls):
        return {"TANDEM_KB": DEMO_KB, "TANDEM_QUALITY_PER_AGENT": "1"}

    def test_per_agent_figures(self):
        sg = self.top("c-ag")
        for agent, action in (("ag-1", "accepted"), ("ag-1", "rejected"), ("ag-2", "accepted")):
            self.assertEqual(self.feedback(sg["id"], {"action": action, "agent_id": agent}).status, 202)
        q = self.quality()
        self.assertIs(q["per_agent"], True)
        agents = {a["agent_id"]: a for a in q["agents"]}
        self.assertEqual((agents["ag-1"]["accepted"], agents["ag-1"]["rejected"]), (1, 1))
        self.assertEqual(agents["ag-2"]["accepted"], 1)
        self.assertIsNone(agents["ag-1"]["shown"])  # suggestions are not shown per agent
        qs = self.quality("?since=2020-01-01")
        self.assertEqual({a["agent_id"] for a in qs["agents"]}, {"ag-1", "ag-2"})
        # never a label on /metrics
        self.assertFalse([n for n, labels, _ in self.srv.metrics() if "agent_id" in labels])


class ReportTest(FeedbackBase):

    def test_report_and_cli(self):
        # one KB entry rejected and rewritten again and again (suggested first: rejections change rankings)
        sgs = [self.top("c-r%d" % i, CHARGE_Q) for i in range(4)]
        bad = sgs[0]["kb_id"]
        for i, sg in enumerate(sgs):
            self.assertEqual(sg["kb_id"], bad)
            if i < 2:
                body = {"action": "rejected", "reason": "customer %d asked to write to x%d@example.com" % (i, i)}
            else:
                body = {"action": "edited", "final_text": "We reversed the second payment today, card 4111 1111 "
                                                          "1111 1111 sees it in 3 days."}
            self.assertEqual(self.feedback(sg["id"], body).status, 202)
        # agents' own frequent reply that no KB entry has, and a KB body pasted as is
        voucher = ("Hi %s, as a thank-you for your patience we sent a 10%% loyalty voucher by SMS; it is valid for "
                   "30 days on your next Northwind order.")
        with open(DEMO_KB, encoding="utf-8") as f:
            body = next(e for e in map(json.loads, f) if e["id"] == "contact-human")["body"]
        kb_body = re.sub(r"\{\{[^}]*\}\}", "%s", body, count=1)
        kb_body = re.sub(r"\{\{[^}]*\}\}", "Jordan", kb_body)
        kb_sample = " ".join(body.split()[3:8])
        lines = []
        for i, name in enumerate(("Anna", "Ben", "Cleo", "Dana")):
            lines.append({"id": "t-v%d" % i, "brand": "lumenpay", "messages": [
                {"role": "customer", "text": "my order took forever, this is annoying"},
                {"role": "agent", "text": voucher % name}]})
            lines.append({"id": "t-k%d" % i, "brand": "lumenpay", "messages": [
                {"role": "customer", "text": "can someone call me"},
                {"role": "agent", "text": kb_body % name}]})
        r = self.srv.request("POST", "/v1/transcripts", body=ndjson(*lines),
                             headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(r.status, 200, r)

        r = self.srv.request("GET", "/v1/quality/report?min_actions=3")
        self.assertEqual(r.status, 200, r)
        rep = r.json
        self.assertEqual(rep["feedback_scanned"], 4)
        (cand,) = [c for c in rep["rewrite_candidates"] if c["kb_id"] == bad]
        self.assertEqual((cand["rejected"], cand["edited"], cand["actions"]), (2, 2, 4))
        self.assertIn("often_rejected", cand["why"])
        self.assertIn("heavily_edited", cand["why"])
        self.assertTrue(cand["title"])
        self.assertEqual(len(cand["examples"]), 3)
        blob = json.dumps(cand["examples"])
        self.assertNotIn("example.com", blob)
        self.assertNotIn("4111 1111", blob)  # ids in the examples may hold "4111"
        self.assertIn("[EMAIL_1]", blob)
        self.assertIn("[CARD_1]", blob)
        # with a higher bar it is not judged yet
        rep5 = self.srv.request("GET", "/v1/quality/report?min_actions=5").json
        self.assertEqual(rep5["rewrite_candidates"], [])

        macros = rep["macro_candidates"]
        voucher_m = [m for m in macros if any("loyalty voucher" in x for x in m["examples"])]
        self.assertEqual(len(voucher_m), 1, macros)
        self.assertEqual(voucher_m[0]["count"], 4)
        self.assertEqual(voucher_m[0]["from_transcripts"], 4)
        self.assertEqual(len(voucher_m[0]["examples"]), 3)
        self.assertFalse([m for m in macros if any(kb_sample in x for x in m["examples"])],
                         "a reply that is a KB entry's body is not a new macro")

        for q in ("min_actions=0", "limit=101", "min_cluster=x"):
            self.assertError(self.srv.request("GET", "/v1/quality/report?" + q), 400, "bad_request")

        # the CLI prints the same report as text
        cli = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "quality_report.py"),
                              "--url", "http://127.0.0.1:%d" % self.srv.port, "--min-actions", "3"],
                             env=dict(os.environ, TANDEM_TOKEN=self.srv.token), capture_output=True, text=True,
                             timeout=30 * SLOW)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertIn("KB entries to rewrite", cli.stdout)
        self.assertIn(bad, cli.stdout)
        self.assertIn("often rejected", cli.stdout)
        self.assertIn("New macro candidates", cli.stdout)
        self.assertIn("loyalty voucher", cli.stdout)
        self.assertNotIn("4111 1111", cli.stdout)
        bad_token = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "quality_report.py"),
                                    "--url", "http://127.0.0.1:%d" % self.srv.port, "--token", "x" * 20],
                                   capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(bad_token.returncode, 1)
        self.assertIn("401", bad_token.stderr)


class LearningTest(FeedbackBase):

    def test_edits_become_the_suggestion(self):
        correction = ("Hi %s, good news: the shop confirmed your return, so your refund is approved. It reaches "
                      "your bank in 2-3 business days; reply here if it has not by then.")
        names = ("Anna Berg", "Ben Okafor", "Cleo Martin")
        texts = (REFUND_Q, "Where is my refund? I returned the jacket last week and nothing has arrived yet.",
                 "I returned my order last week, when do I get my refund? It still has not arrived.")
        before = self.top("c-learn-before", REFUND_Q, name="Dana Smith")
        self.assertNotIn("good news", before["text"])
        edited = set()
        for i, (name, text) in enumerate(zip(names, texts)):
            sg = self.top("c-learn-%d" % i, text, name=name)
            edited.add(sg["kb_id"])
            r = self.feedback(sg["id"], {"action": "edited", "final_text": correction % name.split()[0],
                                         "agent_id": "ag-17"})
            self.assertEqual(r.status, 202, r)
        want = correction % "Dana"

        def learned():
            top = self.top("c-learn-after", "My refund has not arrived, I returned the jacket last week. Where is it?",
                           name="Dana Smith")
            return top if top["text"] == want else None

        # each sidecar reads new replies within a second (memory.h MEMORY_CHECK_MS)
        top = wait_until(learned, 10 * SLOW, interval=0.2, what="the agents' correction as the top suggestion")
        self.assertIn(top["kb_id"], edited)
        self.assertEqual(top["source"], "memory")
        # another situation is not affected
        other = self.top("c-learn-other", "I cannot log in to the app, it says my password is wrong", name="Eve Li")
        self.assertNotIn("good news", other["text"])


class RejectionTest(FeedbackBase):
    """Its own server: the learning test's reply memory must not weigh in (a flushed Redis reaches
    the in-process snapshot only at the next sync)."""

    def setUp(self):
        super().setUp()
        # a sidecar reads the rejection stream where it records suggestions (quality_note_shown),
        # after ranking: one computed answer, and the previous test's rejections are forgotten
        self.customer("c-warm", REFUND_Q)
        self.suggest("c-warm")

    def test_rejections_rank_lower_in_similar_situations(self):
        base = self.suggest_ids("c-rj-base", CHARGE_Q)
        unrelated = self.suggest_ids("c-rj-unrel-base", REFUND_Q)
        rejected = base[0][0]
        self.assertEqual(rejected, "duplicate-charge", "the ranking before any rejection (a flushed rejection "
                                                       "stream is noticed by quality_note_shown in api_suggest.c)")
        shown = []
        for i, text in enumerate((CHARGE_Q, "Two payments for one order were taken from my card, I was charged "
                                            "twice. Please refund the double charge.")):
            self.customer("c-rj-%d" % i, text)
            shown.append(self.suggest("c-rj-%d" % i))
        for sgs in shown:  # the agents saw it among the suggestions and said no
            (sg,) = [s for s in sgs if s.get("kb_id") == rejected]
            self.assertEqual(self.feedback(sg["id"], {"action": "rejected", "reason": "not this"}).status, 202)
        after = self.suggest_ids("c-rj-after", "I see two charges on my card for a single order, I was charged twice.")
        ids = [k for k, _ in after]
        self.assertNotEqual(ids[0], rejected, after)
        if rejected in ids:
            self.assertLess(dict(after)[rejected], base[0][1])
        # a different situation ranks exactly as before
        self.assertEqual(self.suggest_ids("c-rj-unrel-after", REFUND_Q), unrelated)

        # a second sidecar on the same Redis ranks it lower too (it reads the rejections when it
        # records suggestions: quality_note_shown)
        other = Tandemd(self.redis, env=self.server_env())
        try:
            self.customer("c-rj-other-1", CHARGE_Q)
            self.suggest("c-rj-other-1", srv=other)  # first computed answer brings the table up to date
            self.customer("c-rj-other-2", CHARGE_Q)
            top = self.suggest("c-rj-other-2", srv=other)[0]
            self.assertNotEqual(top["kb_id"], rejected, "the other sidecar did not read the rejection: "
                                                        "quality_note_shown() syncs the table (api_suggest.c)")
        finally:
            self.assertEqual(other.stop(), 0)
            other.close()

    def test_rejection_table_reads_in_batches_and_caps(self):
        sg = self.top("c-rb", CHARGE_Q)
        key = PREFIX + "feedback:%s:rejections" % TAG

        def indexed():
            return metric_sum(self.srv.metrics(), "tandem_feedback_rejections_indexed")

        def add(n):
            for i in range(n):
                self.redis.cmd("XADD", key, "*", "target", "t-%d" % i, "brand", "lumenpay", "terms",
                               "%016x" % (i + 1))

        self.assertEqual(self.feedback(sg["id"], {"action": "rejected"}).status, 202)
        n0 = indexed()
        self.assertGreaterEqual(n0, 1)
        add(2500)  # other sidecars' rejections: read in batches of 1,000 after the last one seen
        self.assertEqual(self.feedback(sg["id"], {"action": "rejected"}).status, 202)
        self.assertEqual(indexed(), min(n0 + 2501, 8192))
        add(7000)
        self.assertEqual(self.feedback(sg["id"], {"action": "rejected"}).status, 202)
        self.assertEqual(indexed(), 8192)  # the newest FEEDBACK_REJECT_MAX_RECORDS

    def test_deleted_rejections_are_forgotten(self):
        shown = []
        for i in range(2):
            self.customer("c-del-%d" % i, CHARGE_Q)
            shown.append(self.suggest("c-del-%d" % i)[0])
        for sg in shown:
            self.assertEqual(self.feedback(sg["id"], {"action": "rejected"}).status, 202)
        self.assertNotEqual(self.suggest_ids("c-del-a", CHARGE_Q)[0][0], shown[0]["kb_id"])
        # an operator resets the rejections; the next one written starts a new stream (new epoch)
        self.redis.cmd("DEL", PREFIX + "feedback:%s:rejections" % TAG, PREFIX + "feedback:%s:rejections:epoch" % TAG)
        other = self.top("c-del-refund", REFUND_Q)
        self.assertEqual(self.feedback(other["id"], {"action": "rejected"}).status, 202)
        self.assertEqual(self.suggest_ids("c-del-b", CHARGE_Q)[0][0], shown[0]["kb_id"])

    def suggest_ids(self, conv_id, text):
        self.customer(conv_id, text)
        return [(s.get("kb_id") or s.get("memory_id"), s["score"]) for s in self.suggest(conv_id)]


if __name__ == "__main__":
    unittest.main()
