"""Writes through tandemd that a fault must neither lose nor duplicate, and their audit.

tandem writes Redis in two places a client depends on:

* ``POST /v1/suggestions/{SID}/feedback`` -> one entry in the ``tandem:feedback`` stream; a
  repeated ``feedback_id`` is stored once (CONTRACT.md), so a client may retry after any error;
* ``POST /v1/transcripts`` -> one RPUSH of records into ``tandem:memory:replies``.

``Writer`` uses feedback when the route is in ``src/api.c`` (it is being written), else
transcript imports, so the fault and failover suites exercise whichever exists. Each write has
a unique key; ``write()`` retries with the same key until tandem answers 2xx (the way a client
is told to), and ``audit()`` reads Redis and reports keys that are missing or stored more than
once.

    w = Writer(srv)                 # srv: a harness.Tandemd started with w.server_env(tmpdir)
    w.prepare(redis_cmd)            # feedback: a conversation and suggestion ids to act on
    w.write("k-1")                  # retries until 2xx
    missing, dup = w.audit(redis_cmd, ["k-1", ...])
"""

import collections
import json
import os
import time
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FEEDBACK_ROUTE = '"/v1/suggestions/*/feedback"'
CONV = "wr-1"

KB_LINES = [
    {"id": "refund-status", "title": "Where is my refund?", "tags": ["refund"],
     "body": "Hi {{customer.name}}, your refund is on its way and arrives within 5 days."},
    {"id": "card-declined", "title": "My card was declined", "tags": ["card", "payment"],
     "body": "Sorry about that! Please check the card's expiry date and try again."},
    {"id": "cancel-order", "title": "Cancel my order", "tags": ["cancel", "order"],
     "body": "I can cancel the order for you; it is not shipped yet."},
]


def feedback_available():
    try:
        return FEEDBACK_ROUTE in (REPO_ROOT / "src" / "api.c").read_text()
    except OSError:
        return False


class WriteFailed(AssertionError):
    pass


class Writer:
    def __init__(self, srv=None, mode=None, prefix="tandem:"):
        self.srv = srv
        self.mode = mode or ("feedback" if feedback_available() else "transcripts")
        self.prefix = prefix
        self.sids = []
        self.attempts = collections.Counter()
        self.errors = collections.Counter()  # status (or exception name) of failed attempts

    # -- set-up ------------------------------------------------------------------------------

    @staticmethod
    def server_env(tmpdir):
        """Environment for the Tandemd: a small KB (feedback needs suggestions)."""
        path = os.path.join(tmpdir, "kb.jsonl")
        with open(path, "w") as f:
            for e in KB_LINES:
                f.write(json.dumps(e) + "\n")
        return {"TANDEM_KB": path}

    def prepare(self, redis_cmd, conv=CONV):
        """Feedback mode: writes a conversation and collects suggestion ids to act on."""
        if self.mode != "feedback":
            return
        key = "%sconv:{%s}:msgs" % (self.prefix, conv)
        if not redis_cmd("EXISTS", key):
            redis_cmd("XADD", key, "*", "role", "customer", "text", "Where is my refund? It is late.")
        r = self.srv.request("GET", "/v1/conversations/%s/suggestions?k=3" % conv)
        if r.status != 200 or not r.json or not r.json.get("suggestions"):
            raise AssertionError("no suggestions to give feedback on: %r" % r)
        self.sids = [s["id"] for s in r.json["suggestions"]]

    # -- writing -----------------------------------------------------------------------------

    def _once(self, key, timeout):
        if self.mode == "feedback":
            sid = self.sids[zlib.crc32(key.encode()) % len(self.sids)]
            body = {"action": "accepted", "feedback_id": key, "agent_id": "agent-7"}
            return self.srv.request("POST", "/v1/suggestions/%s/feedback" % sid, body=body, timeout=timeout)
        line = json.dumps({"id": key, "messages": [
            {"role": "customer", "text": "question for %s" % key},
            {"role": "agent", "text": "answer for %s" % key}]})
        return self.srv.request("POST", "/v1/transcripts", body=line + "\n",
                                headers={"Content-Type": "application/x-ndjson"}, timeout=timeout)

    def try_once(self, key, timeout=5.0):
        """One attempt: the Response, or None when the connection failed."""
        self.attempts[key] += 1
        try:
            r = self._once(key, timeout)
        except OSError as e:
            self.errors[type(e).__name__] += 1
            return None
        if r.status >= 300:
            self.errors[r.status] += 1
        return r

    def write(self, key, deadline_s=30.0, timeout=5.0):
        """Retries (same key) until 2xx; returns the seconds it took. A 4xx other than 429 is
        a client error a retry cannot fix: WriteFailed at once."""
        t0 = time.monotonic()
        while True:
            r = self.try_once(key, timeout)
            if r is not None and 200 <= r.status < 300:
                return time.monotonic() - t0
            if r is not None and 400 <= r.status < 500 and r.status != 429:
                raise WriteFailed("write %s: %r" % (key, r))
            if time.monotonic() - t0 > deadline_s:
                raise WriteFailed("write %s not accepted within %.0fs (last: %r)" % (key, deadline_s, r))
            time.sleep(0.05)

    # -- audit -------------------------------------------------------------------------------

    def stored(self, redis_cmd):
        """Counter of keys as stored in Redis."""
        c = collections.Counter()
        if self.mode == "feedback":
            entries = redis_cmd("XRANGE", self.prefix + "feedback", "-", "+") or []
            for _id, fields in entries:
                d = dict(zip(fields[0::2], fields[1::2]))
                fid = d.get(b"feedback_id")
                if fid is not None:
                    c[fid.decode()] += 1
        else:
            for rec in redis_cmd("LRANGE", self.prefix + "memory:replies", 0, -1) or []:
                c[json.loads(rec)["t"]] += 1
        return c

    def audit(self, redis_cmd, keys):
        """(missing keys, {key: count} of keys stored more than once)."""
        c = self.stored(redis_cmd)
        missing = [k for k in keys if c[k] == 0]
        dup = {k: n for k, n in c.items() if n > 1}
        return missing, dup
