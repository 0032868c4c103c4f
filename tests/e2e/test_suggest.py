"""End-to-end tests of suggestions, hotkey suggestions and transcript import (reply memory).

Empty conversations (no customer turn yet): the answer is 200 with the brand's most-cited KB
entries from reply memory, or an empty list when there is no history for the brand.
"""
import json
import os
import re
import signal
import tempfile
import time
import unittest

from harness import REPO_ROOT, SLOW, Tandemd, TandemTestCase, wait_until

DEMO_KB = str(REPO_ROOT / "deploy" / "demo" / "kb.jsonl")
DEMO_CONVS = REPO_ROOT / "deploy" / "demo" / "conversations.json"
PREFIX = "tandem:"
SID_RE = re.compile(r"^sg_[0-9a-f]{16}$")


def load_demo(redis, conv_id):
    """Writes one demo conversation (messages, meta, customer profile) into Redis."""
    data = json.loads(DEMO_CONVS.read_text())
    conv = next(c for c in data["conversations"] if c["id"] == conv_id)
    key = "%sconv:{%s}:" % (PREFIX, conv_id)
    redis.cmd("DEL", key + "msgs", key + "meta")
    for m in conv["messages"]:
        args = ["XADD", key + "msgs", "*", "role", m["role"], "text", m["text"]]
        if m.get("author"):
            args += ["author", m["author"]]
        redis.cmd(*args)
    meta = []
    for k, v in conv["meta"].items():
        meta += [k, v]
    redis.cmd("HSET", key + "meta", *meta)
    cid = conv["meta"].get("customer_id")
    if cid:
        prof = []
        for k, v in data["customers"][cid]["profile"].items():
            prof += [k, v]
        redis.cmd("HSET", "%scust:{%s}:profile" % (PREFIX, cid), *prof)
    return conv


def add_conv(redis, conv_id, messages, meta=None):
    key = "%sconv:{%s}:" % (PREFIX, conv_id)
    redis.cmd("DEL", key + "msgs", key + "meta")
    ids = []
    for role, text in messages:
        ids.append(redis.cmd("XADD", key + "msgs", "*", "role", role, "text", text))
    if meta:
        args = []
        for k, v in meta.items():
            args += [k, v]
        redis.cmd("HSET", key + "meta", *args)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


def ndjson(*objs):
    return "".join(json.dumps(o) + "\n" for o in objs)


class SuggestTest(TandemTestCase):
    @classmethod
    def server_env(cls):
        return {"TANDEM_KB": DEMO_KB}

    def suggest(self, conv_id, query=""):
        return self.srv.request("GET", "/v1/conversations/%s/suggestions%s" % (conv_id, query))

    def import_ndjson(self, body, ctype="application/x-ndjson"):
        return self.srv.request("POST", "/v1/transcripts", body=body, headers={"Content-Type": ctype})

    def llen(self):
        return int(self.redis.cmd("LLEN", PREFIX + "memory:replies"))

    def assertSuggestionShape(self, s, rank):
        self.assertRegex(s["id"], SID_RE)
        self.assertEqual(s["rank"], rank)
        self.assertIsInstance(s["text"], str)
        self.assertTrue(s["text"].strip())
        self.assertIn(s["source"], ("kb", "memory"))
        self.assertIs(s["ai_generated"], True)
        self.assertGreaterEqual(s["score"], 0.0)
        self.assertLessEqual(s["score"], 1.0)
        self.assertNotIn("{{", s["text"])

    # -- suggestions ---------------------------------------------------------------------------

    def test_demo_refund(self):
        load_demo(self.redis, "demo-refund")
        r = self.suggest("demo-refund")
        self.assertEqual(r.status, 200, r)
        self.assertSecurityHeaders(r)
        body = r.json
        self.assertEqual(body["conversation_id"], "demo-refund")
        self.assertEqual(body["engine"], "local")
        self.assertNotIn("fallback_reason", body)
        newest = self.redis.cmd("XREVRANGE", PREFIX + "conv:{demo-refund}:msgs", "+", "-", "COUNT", "1")[0][0]
        self.assertEqual(body["based_on"], newest.decode())
        self.assertIsInstance(body["took_ms"], (int, float))
        sug = body["suggestions"]
        self.assertEqual(len(sug), 3)
        for i, s in enumerate(sug):
            self.assertSuggestionShape(s, i + 1)
            self.assertEqual(s["source"], "kb")
            self.assertIn("kb_id", s)
            self.assertIn("title", s)
        scores = [s["score"] for s in sug]
        self.assertEqual(scores, sorted(scores, reverse=True))
        # a refund question after a return: the refund entries lead
        self.assertIn(sug[0]["kb_id"], ("refund-status", "refund-timeline", "partial-refund"))
        self.assertTrue({"refund-status", "refund-timeline"} & {s["kb_id"] for s in sug})
        # placeholders filled from the profile (first name) and meta (agent name)
        top = next(s for s in sug if s["kb_id"] in ("refund-status", "refund-timeline"))
        self.assertIn("Anna", top["text"])
        self.assertNotIn("merchant-payout", [s["kb_id"] for s in sug])

    def test_same_state_same_ids_cached(self):
        load_demo(self.redis, "demo-double-charge")
        first = self.suggest("demo-double-charge").json
        self.redis.reset_stats()
        second = self.suggest("demo-double-charge")
        self.assertEqual(second.status, 200)
        self.assertEqual([s["id"] for s in first["suggestions"]], [s["id"] for s in second.json["suggestions"]])
        self.assertEqual(first["suggestions"], second.json["suggestions"])
        # a repeat is one round trip: one script that reads the newest id and the cached answer
        # (commandstats also counts the commands the script runs); no context fetch, no writes
        cmds = self.redis.commands_since_reset()
        cmds.pop("ping", None)
        self.assertEqual(cmds, {"eval": 1, "exists": 1, "xrevrange": 1, "get": 1, "hgetall": 1})
        # each suggestion is stored by id for feedback, with a 24 h TTL
        sid = first["suggestions"][0]["id"]
        rec = self.redis.cmd("HGETALL", PREFIX + "sugg:" + sid)
        rec = {rec[i].decode(): rec[i + 1].decode() for i in range(0, len(rec), 2)}
        self.assertEqual(rec["conversation_id"], "demo-double-charge")
        self.assertEqual(rec["kb_id"], first["suggestions"][0]["kb_id"])
        self.assertEqual(rec["engine"], "local")
        self.assertEqual(rec["text"], first["suggestions"][0]["text"])
        self.assertEqual(rec["based_on"], first["based_on"])
        ttl = int(self.redis.cmd("TTL", PREFIX + "sugg:" + sid))
        self.assertTrue(3600 < ttl <= 86400, ttl)
        # a new message: a new state, new ids
        self.redis.cmd("XADD", PREFIX + "conv:{demo-double-charge}:msgs", "*", "role", "customer",
                       "text", "Any update on the duplicate charge?")
        third = self.suggest("demo-double-charge").json
        self.assertNotEqual(third["based_on"], first["based_on"])
        self.assertFalse({s["id"] for s in third["suggestions"]} & {s["id"] for s in first["suggestions"]})

    def test_metrics(self):
        load_demo(self.redis, "demo-refund")
        self.suggest("demo-refund", "?k=2")
        self.suggest("demo-refund", "?k=2")
        r = self.srv.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        m = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                m[name] = float(value)
        self.assertEqual(m["tandem_knowledge_base_entries"], 26)
        self.assertGreater(m["tandem_knowledge_base_bytes"], 10000)
        self.assertGreaterEqual(m['tandem_suggestions_total{cache="hit"}'], 1)
        self.assertGreaterEqual(m['tandem_suggestions_total{cache="miss"}'], 1)
        self.assertIn("tandem_memory_replies", m)

    def test_k_bounds(self):
        load_demo(self.redis, "demo-fraud")
        r = self.suggest("demo-fraud", "?k=1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json["suggestions"]), 1)
        r = self.suggest("demo-fraud", "?k=10")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(1 <= len(r.json["suggestions"]) <= 10)
        for i, s in enumerate(r.json["suggestions"]):
            self.assertSuggestionShape(s, i + 1)
        for bad in ("0", "11", "-1", "abc", "3.5", "", "1000000000000000000000", "%201"):
            r = self.suggest("demo-fraud", "?k=" + bad)
            self.assertError(r, 400, "bad_request")
            self.assertIn("k", r.json["error"]["message"])

    def test_engine_param(self):
        load_demo(self.redis, "demo-fraud")
        r = self.suggest("demo-fraud", "?engine=gpt")
        self.assertError(r, 400, "bad_request")
        r = self.suggest("demo-fraud", "?engine=LOCAL")
        self.assertError(r, 400, "bad_request")
        r = self.suggest("demo-fraud", "?engine=local")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["engine"], "local")
        self.assertNotIn("fallback_reason", r.json)
        r = self.suggest("demo-fraud", "?engine=llm&k=2")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["engine"], "local")
        self.assertEqual(r.json["fallback_reason"], "llm_not_configured")
        self.assertEqual(len(r.json["suggestions"]), 2)

    def test_unknown_and_bad_conversation(self):
        self.assertError(self.suggest("no-such-conversation"), 404, "conversation_not_found")
        self.assertError(self.suggest("x" * 129), 400, "invalid_id")
        r = self.srv.request("GET", "/v1/conversations/demo-refund/suggestions", token=False)
        self.assertEqual(r.status, 401, r)

    def test_empty_conversation(self):
        add_conv(self.redis, "e2e-empty", [("agent", "Hello! How can I help you today?")],
                 {"brand": "brand-without-history"})
        r = self.suggest("e2e-empty")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["suggestions"], [])
        # only noise from the customer: nothing matches either
        add_conv(self.redis, "e2e-noise", [("customer", "zzzq qqxv")], {"brand": "brand-without-history"})
        r = self.suggest("e2e-noise")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["suggestions"], [])

    def test_brand_scoping(self):
        add_conv(self.redis, "e2e-payout", [("customer", "When is a merchant payout made?")], {"brand": "lumenpay"})
        ids = [s["kb_id"] for s in self.suggest("e2e-payout", "?k=10").json["suggestions"]]
        self.assertNotIn("merchant-payout", ids)
        add_conv(self.redis, "e2e-payout-b", [("customer", "When is a merchant payout made?")],
                 {"brand": "lumenpay-business"})
        ids = [s["kb_id"] for s in self.suggest("e2e-payout-b", "?k=10").json["suggestions"]]
        self.assertEqual(ids[0], "merchant-payout")
        self.assertNotIn("contact-human", ids)

    def cache_hits(self):
        r = self.srv.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        for line in r.text.splitlines():
            if line.startswith('tandem_suggestions_total{cache="hit"} '):
                return float(line.rpartition(" ")[2])
        self.fail("no cache hit counter in /metrics")

    def test_meta_change_invalidates_cache(self):
        # the reviewer's reproduction: no brand yet, so the lumenpay-only entry is suggested
        add_conv(self.redis, "e2e-meta-brand",
                 [("customer", "I want to talk to a real person, a human agent please")])
        first = self.suggest("e2e-meta-brand")
        self.assertEqual(first.status, 200, first)
        self.assertEqual(first.json["suggestions"][0]["kb_id"], "contact-human")
        self.assertIn("[first name]", first.json["suggestions"][0]["text"])
        # the connector learns brand and customer; no new message
        self.redis.cmd("HSET", PREFIX + "conv:{e2e-meta-brand}:meta",
                       "brand", "lumenpay-business", "customer_id", "lp-c-1001")
        hits = self.cache_hits()
        second = self.suggest("e2e-meta-brand")
        self.assertEqual(second.status, 200, second)
        self.assertEqual(self.cache_hits(), hits)  # recomputed, not served from the cache
        ids = [s["kb_id"] for s in second.json["suggestions"]]
        self.assertNotIn("contact-human", ids)
        # the same answer as a request that never hit the old cache entry (another k)
        fresh = self.suggest("e2e-meta-brand", "?k=4").json
        self.assertEqual(ids, [s["kb_id"] for s in fresh["suggestions"]][:len(ids)])
        # and back: the first answer's brand scope again, recomputed once more
        self.redis.cmd("HDEL", PREFIX + "conv:{e2e-meta-brand}:meta", "brand", "customer_id")
        third = self.suggest("e2e-meta-brand").json
        self.assertEqual(third["suggestions"][0]["kb_id"], "contact-human")
        self.assertEqual(self.cache_hits(), hits)

    def test_meta_unchanged_cache_hit(self):
        # one field not valid UTF-8: the context cleans it, the script's copy must digest the same
        meta = [("brand", "lumenpay"), ("customer_id", "lp-c-1001"), ("agent_name", "Mia"),
                ("subject", b"caf\xe9 \x00 human")]
        add_conv(self.redis, "e2e-meta-same", [("customer", "I want to talk to a real person, a human agent please")])
        key = PREFIX + "conv:{e2e-meta-same}:meta"
        self.redis.cmd("HSET", key, *[x for kv in meta for x in kv])
        first = self.suggest("e2e-meta-same").json
        self.assertIn("Mia", first["suggestions"][0]["text"])
        # the same meta written again, fields in the other order: still the same state
        self.redis.cmd("DEL", key)
        self.redis.cmd("HSET", key, *[x for kv in reversed(meta) for x in kv])
        hits = self.cache_hits()
        self.redis.reset_stats()
        second = self.suggest("e2e-meta-same")
        self.assertEqual(second.status, 200, second)
        # still one round trip: the script (and the commands it runs), no context fetch, no writes
        # (read before /metrics, which reads Redis itself)
        cmds = self.redis.commands_since_reset()
        cmds.pop("ping", None)
        self.assertEqual(cmds, {"eval": 1, "exists": 1, "xrevrange": 1, "get": 1, "hgetall": 1})
        self.assertEqual(second.json["suggestions"], first["suggestions"])
        self.assertEqual(self.cache_hits(), hits + 1)

    # -- reply memory --------------------------------------------------------------------------

    def test_transcripts_import_and_memory(self):
        before = self.llen()
        body = ndjson(
            {"id": "e2e-t1", "brand": "e2e-brand", "messages": [
                {"role": "agent", "text": "Hi! How can I help?"},
                {"role": "customer", "text": "my parcel from the shop never arrived"},
                {"role": "agent", "text": "@user4 So sorry! Please follow "
                                          "https://web.archive.org/web/20200101000000/https://help.lumenpay.example/articles/item-not-received."}]},
            {"id": "e2e-t2", "brand": "e2e-brand", "messages": [
                {"role": "customer", "text": "the parcel still has not arrived"},
                {"role": "agent", "text": "Please send us a DM with your order number."},
                {"role": "customer", "text": "done"},
                {"role": "agent", "text": "Thanks, we have it."}]},
        )
        r = self.import_ndjson(body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"imported": 2, "replies": 3})
        self.assertEqual(self.llen(), before + 3)
        rec = json.loads(self.redis.cmd("LINDEX", PREFIX + "memory:replies", str(before)))
        self.assertEqual(rec["b"], "e2e-brand")
        self.assertEqual(rec["c"], "my parcel from the shop never arrived")
        add_conv(self.redis, "e2e-mem", [("customer", "Hello, my parcel never arrived")], {"brand": "e2e-brand"})
        sug = self.suggest("e2e-mem", "?k=5").json["suggestions"]
        top = sug[0]
        self.assertEqual(top["source"], "memory")
        self.assertEqual(top["kb_id"], "item-not-received")
        self.assertTrue(top["text"].startswith("So sorry!"), top)  # the old @handle is gone
        self.assertRegex(top["memory_id"], r"^m_[0-9a-f]{16}$")
        texts = [s["text"] for s in sug]
        self.assertIn("Please send us a DM with your order number.", texts)
        # no customer turn yet: the brand's most cited entries
        add_conv(self.redis, "e2e-mem-empty", [("agent", "Hi there")], {"brand": "e2e-brand"})
        sug = self.suggest("e2e-mem-empty").json["suggestions"]
        self.assertEqual([s["kb_id"] for s in sug], ["item-not-received"])

    def test_transcripts_bad(self):
        good = {"id": "ok-1", "brand": "b", "messages": [{"role": "customer", "text": "hi"},
                                                          {"role": "agent", "text": "hello"}]}
        before = self.llen()
        cases = [
            (ndjson(good) + '{"id": "x", "messages": [\n', "line 2"),
            (ndjson(good, good) + "\n" + ndjson({"id": 5, "messages": []}), "line 4"),
            (ndjson({"id": "x", "messages": "hello"}), "line 1"),
            (ndjson({"id": "x", "messages": [{"role": "customer", "text": 42}]}), "line 1"),
            (ndjson({"id": "x", "messages": [{"role": "wizard", "text": "hi"}]}), "line 1"),
            (ndjson({"id": "x", "brand": ["b"], "messages": []}), "line 1"),
            (ndjson(good) + "[1, 2]\n", "line 2"),
            ("", None),
            ("\n\n", None),
        ]
        for body, where in cases:
            with self.subTest(body=body[:60]):
                r = self.import_ndjson(body)
                self.assertError(r, 400, "invalid_json")
                if where:
                    self.assertIn(where, r.json["error"]["message"])
                self.assertEqual(self.llen(), before)  # nothing imported
        r = self.import_ndjson(ndjson(good), ctype="application/json")
        self.assertEqual(r.status, 415, r)
        self.assertEqual(self.llen(), before)

    def test_other_sidecar_sees_import(self):
        other = Tandemd(self.redis, env={"TANDEM_KB": DEMO_KB})
        try:
            add_conv(self.redis, "e2e-shared", [("customer", "my voucher code is rejected at checkout")],
                     {"brand": "e2e-shared-brand"})
            r = other.request("GET", "/v1/conversations/e2e-shared/suggestions")
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("Vouchers: paste the code without spaces.", [s["text"] for s in r.json["suggestions"]])
            body = ndjson({"id": "e2e-shared-1", "brand": "e2e-shared-brand", "messages": [
                {"role": "customer", "text": "voucher code rejected at checkout"},
                {"role": "agent", "text": "Vouchers: paste the code without spaces."}]})
            self.assertEqual(self.import_ndjson(body).status, 200)
            self.redis.cmd("XADD", PREFIX + "conv:{e2e-shared}:msgs", "*", "role", "customer", "text", "any idea?")

            def seen():
                r = other.request("GET", "/v1/conversations/e2e-shared/suggestions")
                return "Vouchers: paste the code without spaces." in [s["text"] for s in r.json["suggestions"]]

            wait_until(seen, 5 * SLOW, interval=0.2, what="the other sidecar to see the import")
        finally:
            rc = other.stop()
            other.check(require_alive=False)
            other.close()
            self.assertEqual(rc, 0)

    # -- hotkeys ------------------------------------------------------------------------------

    def test_focus_suggestion_text(self):
        load_demo(self.redis, "demo-refund")
        add_conv(self.redis, "e2e-focus-empty", [("agent", "Hello")], {"brand": "none-here"})
        try:
            self.assertEqual(self.srv.request("PUT", "/v1/focus", body={"conversation_id": None}).status, 200)
            self.assertError(self.srv.request("GET", "/v1/focus/suggestions/1?format=text"), 404, "no_focus")
            r = self.srv.request("PUT", "/v1/focus", body={"conversation_id": "demo-refund"})
            self.assertEqual(r.status, 200, r)
            full = self.suggest("demo-refund").json["suggestions"]
            r = self.srv.request("GET", "/v1/focus/suggestions/1?format=text")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.header("Content-Type").startswith("text/plain"), r)
            self.assertEqual(r.text, full[0]["text"])
            r = self.srv.request("GET", "/v1/focus/suggestions/2")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["id"], full[1]["id"])
            self.assertEqual(r.json["rank"], 2)
            self.assertEqual(r.json["conversation_id"], "demo-refund")
            for bad in ("0", "11", "x", "-1"):
                self.assertError(self.srv.request("GET", "/v1/focus/suggestions/%s?format=text" % bad),
                                 400, "bad_request")
            self.assertError(self.srv.request("GET", "/v1/focus/suggestions/1?format=xml"), 400, "bad_request")
            self.srv.request("PUT", "/v1/focus", body={"conversation_id": "e2e-focus-empty"})
            self.assertError(self.srv.request("GET", "/v1/focus/suggestions/1?format=text"), 404, "not_found")
        finally:
            self.srv.request("PUT", "/v1/focus", body={"conversation_id": None})


class KbReloadTest(TandemTestCase):
    """SIGHUP reloads TANDEM_KB without dropping requests; a broken file keeps the old KB."""

    kb_dir = None

    @classmethod
    def server_env(cls):
        cls.kb_dir = tempfile.mkdtemp(prefix="tandem-e2e-kb-")
        cls.kb_path = os.path.join(cls.kb_dir, "kb.jsonl")
        with open(cls.kb_path, "w") as f:
            f.write(json.dumps({"id": "old-entry", "title": "Parcel tracking", "body": "Track it here."}) + "\n")
        return {"TANDEM_KB": cls.kb_path}

    def ids(self):
        r = self.srv.request("GET", "/v1/conversations/e2e-reload/suggestions?k=5")
        self.assertEqual(r.status, 200, r)
        return [s["kb_id"] for s in r.json["suggestions"]]

    def test_sighup_reload(self):
        add_conv(self.redis, "e2e-reload", [("customer", "where is my parcel tracking number")])
        self.assertEqual(self.ids(), ["old-entry"])
        with open(self.kb_path, "w") as f:
            f.write(json.dumps({"id": "new-entry", "title": "Parcel tracking number", "body": "New text."}) + "\n")
        self.srv.send_signal(signal.SIGHUP)
        wait_until(lambda: self.ids() == ["new-entry"], 5 * SLOW, interval=0.1, what="the reloaded KB")
        # a broken KB on reload: logged, the old one keeps serving
        with open(self.kb_path, "w") as f:
            f.write('{"id": "broken"}\n')
        self.srv.send_signal(signal.SIGHUP)
        wait_until(lambda: "kb_reload_failed" in self.srv.log_text(), 5 * SLOW, what="the reload failure log")
        self.assertEqual(self.ids(), ["new-entry"])

    def test_bad_kb_fails_startup(self):
        bad = os.path.join(self.kb_dir, "bad.jsonl")
        with open(bad, "w") as f:
            f.write(json.dumps({"id": "a", "body": "x"}) + "\n" + '{"id": "b", "body": }\n')
        srv = Tandemd(self.redis, env={"TANDEM_KB": bad}, wait=False)
        try:
            rc = srv.wait_exit(10 * SLOW)
            self.assertNotEqual(rc, 0)
            self.assertIn("bad.jsonl:2:", srv.log_text())
        finally:
            srv.close()


if __name__ == "__main__":
    unittest.main()
