"""End-to-end tests for GET /v1/conversations/{ID}/summary: sections, facts, alerts, customer
history, bot handoff, PII masking, empty and unknown conversations, operator alert rules."""

import json
import os
import tempfile
import time

from harness import TandemTestCase

DAY_MS = 86400000


def conv_key(cid, kind="msgs"):
    return "tandem:conv:{%s}:%s" % (cid, kind)


def cust_key(cid, kind):
    return "tandem:cust:{%s}:%s" % (cid, kind)


def now_ms():
    return int(time.time() * 1000)


class SummaryTest(TandemTestCase):

    def setUp(self):
        super().setUp()
        self.redis.flush()

    def add(self, cid, role, text, entry_id="*"):
        return self.redis.cmd_str("XADD", conv_key(cid), entry_id, "role", role, "text", text)

    def meta(self, cid, **fields):
        args = ["HSET", conv_key(cid, "meta")]
        for k, v in fields.items():
            args += [k, v]
        self.redis.cmd(*args)

    def summary(self, cid):
        r = self.srv.request("GET", "/v1/conversations/%s/summary" % cid)
        self.assertEqual(r.status, 200, r)
        self.assertIsNotNone(r.json, r)
        self.assertSecurityHeaders(r)
        return r.json

    def test_demo_conversation(self):
        cid = "demo-1"
        self.meta(cid, customer_id="cust-1", brand="acme")
        self.redis.cmd("HSET", cust_key("cust-1", "profile"), "name", "Anna Berg", "tier", "gold",
                       "country", "SE", "since", "2019-03-01")
        t = now_ms()
        for age, conv, outcome in ((70, "old-3", "resolved"), (12, "old-2", "resolved"),
                                   (3, "old-1", "unresolved")):  # a stream grows oldest first
            self.redis.cmd("XADD", cust_key("cust-1", "history"), "%d-0" % (t - age * DAY_MS),
                           "conv_id", conv, "summary", "Refund for order A12345", "outcome",
                           outcome, "tags", "refund,billing")
        self.add(cid, "customer", "Hi")
        self.add(cid, "customer", "I was charged twice for order #A12345, $49.99 each time, on "
                                  "May 3. Please refund one. My card is 4111 1111 1111 1111.")
        self.add(cid, "agent", "Hi Anna, sorry about that! Could you confirm the email address "
                               "on the account?")
        self.add(cid, "customer", "anna.berg@example.com. I already contacted you last week.")
        last = self.add(cid, "customer", "How long will the refund take?")
        s = self.summary(cid)
        self.assertEqual(s["conversation_id"], cid)
        self.assertEqual(s["based_on"], last)
        self.assertIsInstance(s["took_ms"], (int, float))
        conv = s["conversation"]
        self.assertIn("charged twice", conv["wants"])
        facts = conv["facts"]
        self.assertIn("A12345", facts["order_numbers"])
        self.assertEqual(facts["amounts"][0]["value"], 49.99)
        self.assertEqual(facts["amounts"][0]["currency"], "USD")
        self.assertTrue(any(d["text"] == "May 3" for d in facts["dates"]), facts)
        asked = [x for x in conv["tried"] if x["kind"] == "asked"]
        self.assertTrue(asked and "email" in asked[0].get("asked_for", []), conv["tried"])
        self.assertEqual([q["message_id"] for q in conv["open_questions"]], [last])
        types = {a["type"]: a for a in conv["alerts"]}
        self.assertIn("billing_error", types)
        self.assertIn("repeat_contact", types)
        for a in conv["alerts"]:
            self.assertIn(a["severity"], ("low", "medium", "high"))
            self.assertTrue(a["reason"])
        self.assertIn(conv["sentiment"]["label"], ("negative", "neutral", "positive"))
        self.assertEqual(len(conv["sentiment"]["per_turn"]), 4)
        self.assertNotIn("handoff", conv)
        cust = s["customer"]
        self.assertEqual(cust["id"], "cust-1")
        self.assertEqual(cust["tier"], "gold")
        self.assertEqual(cust["profile"]["name"], "Anna Berg")
        self.assertEqual(cust["contacts_30d"], 2)
        self.assertEqual(cust["contacts_90d"], 3)
        self.assertTrue(cust["repeat_contact"])
        self.assertEqual(cust["last_outcomes"][0]["outcome"], "unresolved")
        self.assertIn("3 contacts in the last 90 days", cust["history_summary"])
        # PII never leaves in the summary
        body = json.dumps(s)
        self.assertNotIn("anna.berg@example.com", body)
        self.assertNotIn("4111 1111", body)  # not "4111": a score or an id may hold it
        # same state, same answer (apart from the time it took)
        s2 = self.summary(cid)
        s.pop("took_ms")
        s2.pop("took_ms")
        self.assertEqual(s, s2)

    def test_frustrated_customer(self):
        cid = "angry-1"
        self.add(cid, "customer", "My order still hasn't arrived")
        self.add(cid, "agent", "Sorry, let me check.")
        self.add(cid, "customer", "This is ridiculous. Absolutely useless service!!!")
        trigger = self.add(cid, "customer", "I am furious, worst company ever. I want to speak "
                                            "to a manager NOW")
        conv = self.summary(cid)["conversation"]
        frus = [a for a in conv["alerts"] if a["type"] == "frustration"]
        self.assertEqual(len(frus), 1, conv["alerts"])
        self.assertEqual(frus[0]["severity"], "high")
        self.assertEqual(frus[0]["message_id"], trigger)
        self.assertTrue(frus[0]["excerpt"])
        self.assertEqual(conv["sentiment"]["label"], "negative")
        self.assertLess(conv["sentiment"]["score"], -0.4)

    def test_negated_and_benign_do_not_alert(self):
        cid = "calm-1"
        self.add(cid, "customer", "Hi! This is not fraud, just a question: how do I update my "
                                  "billing address? I don't want to cancel my subscription.")
        conv = self.summary(cid)["conversation"]
        self.assertEqual(conv["alerts"], [])

    def test_bot_handoff(self):
        cid = "handoff-1"
        self.meta(cid, handoff_from_bot="1")
        self.add(cid, "bot", "Hi, I'm the virtual assistant. What can I help you with?")
        self.add(cid, "customer", "my parcel never arrived and I want a refund")
        self.add(cid, "bot", "Sorry, I didn't understand that. Could you rephrase?")
        self.add(cid, "customer", "talk to a human please")
        last_bot = self.add(cid, "bot", "Connecting you to an agent now.")
        agent = self.add(cid, "agent", "Hi, this is Sam, I'm looking at your parcel now.")
        h = self.summary(cid)["conversation"]["handoff"]
        self.assertEqual(h["bot_messages"], 3)
        self.assertEqual(h["customer_messages"], 2)
        codes = [x["code"] for x in h["reasons"]]
        self.assertIn("customer_asked_for_human", codes)
        self.assertIn("bot_could_not_help", codes)
        self.assertEqual(h["last_bot_message_id"], last_bot)
        self.assertEqual(h["first_agent_message_id"], agent)
        self.assertIn("parcel", h["customer_said"])
        self.assertTrue(h["reason"].startswith("Handed over"))
        self.assertTrue(h["bot_steps"])

    def test_unknown_conversation(self):
        r = self.srv.request("GET", "/v1/conversations/no-such-conv/summary")
        self.assertError(r, 404, "conversation_not_found")

    def test_bad_id(self):
        r = self.srv.request("GET", "/v1/conversations/bad%20id/summary")
        self.assertEqual(r.status, 400, r)

    def test_needs_token(self):
        self.add("tok-1", "customer", "hello")
        r = self.srv.request("GET", "/v1/conversations/tok-1/summary", token=False)
        self.assertError(r, 401, r.error_code or "unauthorized")

    def test_empty_conversation(self):
        cid = "empty-1"
        entry = self.add(cid, "customer", "x")
        self.redis.cmd("XDEL", conv_key(cid), entry)
        s = self.summary(cid)
        conv = s["conversation"]
        self.assertEqual(conv["wants"], "")
        self.assertEqual(conv["tried"], [])
        self.assertEqual(conv["open_questions"], [])
        self.assertEqual(conv["alerts"], [])
        for k in ("order_numbers", "amounts", "dates"):
            self.assertEqual(conv["facts"][k], [])
        self.assertEqual(conv["sentiment"]["label"], "neutral")
        self.assertEqual(conv["sentiment"]["per_turn"], [])
        self.assertEqual(s["customer"]["contacts_30d"], 0)
        self.assertFalse(s["customer"]["repeat_contact"])


class OperatorRulesTest(TandemTestCase):
    """TANDEM_ALERT_RULES adds to the built-in rules (merge by id)."""

    rules_path = None

    @classmethod
    def server_env(cls):
        fd, cls.rules_path = tempfile.mkstemp(prefix="tandem-rules-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"rules": [
                {"id": "competitor", "type": "competitor_mention", "severity": "low",
                 "reason": "Customer mentions a competitor", "phrases": ["globex|initech"]},
                {"id": "chargeback", "disabled": True},
            ]}, f)
        return {"TANDEM_ALERT_RULES": cls.rules_path}

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.rules_path:
            os.unlink(cls.rules_path)

    def test_operator_rule_fires(self):
        cid = "ops-1"
        self.redis.cmd("XADD", conv_key(cid), "*", "role", "customer", "text",
                       "Globex gives me this for free. I'll do a chargeback.")
        r = self.srv.request("GET", "/v1/conversations/%s/summary" % cid)
        self.assertEqual(r.status, 200, r)
        types = [a["type"] for a in r.json["conversation"]["alerts"]]
        self.assertIn("competitor_mention", types)
        self.assertNotIn("legal", types)  # the chargeback rule was disabled
