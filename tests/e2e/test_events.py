"""End-to-end tests of the live push: GET /v1/conversations/{ID}/events (Server-Sent Events).

What is checked, against a real redis-server and the real tandemd:
  * the stream: headers, "retry:" hint, the snapshot (suggestions, summary, one alert per current
    alert, all with id = newest message id, "0-0" for an empty stream), then per new message
    suggestions + summary + an alert per newly raised type, in message order, never twice;
  * resume with Last-Event-ID (header or ?last_event_id=): a snapshot of the current state
    (of the newest message, or, while the live loop is still working through new messages, of
    the newest one it has finished, followed by the others), no older id, nothing twice; with
    the newest id, nothing until the next message; streams opened while messages arrive;
  * Redis outages: every subscriber is told ("status" events) and nothing added meanwhile is lost
    or pushed twice; a hung Redis (SIGSTOP) too;
  * resources: a disconnected subscriber is freed within ~1-2 s (/metrics gauges), 50
    subscribers get each event exactly once from one recompute, conversations don't leak into
    each other, a slow consumer is told and dropped without harming the others;
  * security: token in the query, wrong tokens, invalid Last-Event-ID, unknown conversation,
    message text that tries to forge an event;
  * the in-process cache (GET .../suggestions and the focus hotkey), heartbeats, a stream
    opened as soon as the server accepts, SIGTERM with streams open.

SSEClient below is a deliberately small, spec-conformant (WHATWG "event stream interpretation")
client on a raw socket, so the tests see exactly the bytes the server sends: any CR, LF or CRLF
ends a line, a blank line ends a block, ":" starts a comment.
"""

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest
import uuid

from harness import (REPO_ROOT, SLOW, RedisServer, RespClient, Response, Tandemd, TandemTestCase,
                     metric_sum, wait_until)

DEMO_KB = str(REPO_ROOT / "deploy" / "demo" / "kb.jsonl")
LINE_END = re.compile(rb"\r\n|\r|\n")  # SSE: any of these ends a line


def msgs_key(conv):
    return "tandem:conv:{%s}:msgs" % conv


def new_conv(tag):
    """A conversation id no other test (or earlier run on the same Redis) uses."""
    return "ev-%s-%s" % (tag, uuid.uuid4().hex[:10])


def resume_kw(via, last_id):
    """SSEClient arguments resuming from last_id by header or by query parameter."""
    if via == "query":
        return {"query": ["last_event_id=" + last_id]}
    return {"last_event_id": last_id}


def c_conv(ev):
    return ev.json["conversation_id"]


def id_tuple(i):
    ms, _, seq = i.partition("-")
    return int(ms), int(seq or 0)


# --------------------------------------------------------------------------------------------
# A small SSE client


class Block:
    """One block of the stream (the lines up to a blank line): an event, a bare "retry:" hint or
    a comment such as ": ping". Fields keep their order and repetitions so a test can see e.g.
    two data lines in one event (which the server must never send)."""

    def __init__(self):
        self.fields = []      # [(name, value)] in stream order
        self.comments = []    # comment texts without the leading ":" and one space

    def _get(self, name):
        vals = [v for n, v in self.fields if n == name]
        return vals[-1] if vals else None

    @property
    def event(self):
        return self._get("event")

    @property
    def id(self):
        return self._get("id")

    @property
    def retry(self):
        return self._get("retry")

    @property
    def data_lines(self):
        return [v for n, v in self.fields if n == "data"]

    @property
    def data(self):
        lines = self.data_lines
        return "\n".join(lines) if lines else None

    @property
    def json(self):
        return json.loads(self.data)

    @property
    def is_event(self):
        # what a browser would dispatch: a block with at least one data line
        return bool(self.data_lines)

    def __repr__(self):
        if self.is_event:
            d = self.data
            return "<%s id=%s data=%s>" % (self.event, self.id, d[:80] + ("..." if len(d) > 80 else ""))
        return "<block fields=%r comments=%r>" % (self.fields, self.comments)


class SSEClient:
    """One GET .../events connection on a raw socket.

    Construction sends the request and reads the response head. On 200 the body is decoded
    from chunked transfer encoding and parsed into Blocks as it arrives; otherwise the whole
    answer is available as self.response (a harness.Response, for assertError).

    token: True = the server's token in the Authorization header, "query" = in ?token=, a str
    = that bearer token, None = none. last_event_id: sent as the Last-Event-ID header.
    rcvbuf: SO_RCVBUF set before connecting (slow-consumer tests); read=False skips reading the
    response head (a client that never reads anything).
    """

    def __init__(self, srv, conv, token=True, last_event_id=None, query=None, rcvbuf=None,
                 timeout=None, read=True, path=None):
        self.srv = srv
        self.timeout = timeout or 5 * SLOW
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(self.timeout)
        try:
            self.sock.connect((srv.host, srv.port))
        except OSError:
            self.sock.close()
            raise
        params = list(query or [])
        if token == "query":
            params.append("token=" + srv.token)
        path = path or "/v1/conversations/%s/events" % conv
        if params:
            path += "?" + "&".join(params)
        head = ["GET %s HTTP/1.1" % path, "Host: %s" % srv.base_host, "Accept: text/event-stream"]
        if token is True:
            head.append("Authorization: Bearer " + srv.token)
        elif isinstance(token, str) and token != "query":
            head.append("Authorization: Bearer " + token)
        if last_event_id is not None:
            head.append("Last-Event-ID: " + last_event_id)
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        # bytearrays and a scan position: events of 100+ KB must not make parsing quadratic
        self.raw = bytearray()      # bytes received and not yet de-chunked
        self.body = bytearray()     # de-chunked bytes not yet parsed into lines
        self.scan = 0               # body[:scan] holds no line terminator
        self.all_body = bytearray() # every de-chunked byte (for byte-level assertions)
        self.blocks = []        # parsed, not yet consumed by next()
        self.cur = Block()
        self.chunk_left = None  # bytes left in the current chunk (None: expecting a size line)
        self.ended = False      # terminating zero-size chunk seen
        self.eof = False        # peer closed the connection
        self.status = None
        self.headers = None
        self.response = None
        if read:
            self._read_head()

    # -- transport -------------------------------------------------------------------------

    def _recv(self, deadline):
        """Reads once; False on time-out. Sets eof when the peer closes (or resets)."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.raw += chunk
        return True

    def _read_head(self):
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.raw:
            if not self._recv(deadline):
                raise AssertionError("no response head from the events endpoint (eof=%s): %r"
                                     % (self.eof, self.raw[:300]))
        end = self.raw.index(b"\r\n\r\n")
        head = bytes(self.raw[:end])
        del self.raw[:end + 4]
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.decode("latin-1").split(" ", 2)
        self.status = int(parts[1])
        self.headers = http.client.parse_headers(io.BytesIO(rest + b"\r\n\r\n"))
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if self.status != 200:
            # an ordinary answer (error envelope): read it whole
            if chunked:
                self._dechunk()
                while not self.ended and self._recv(deadline):
                    self._dechunk()
                body = bytes(self.body)
            else:
                n = int(self.headers.get("Content-Length") or 0)
                while len(self.raw) < n and self._recv(deadline):
                    pass
                body = bytes(self.raw[:n])
            self.response = Response(self.status, parts[2] if len(parts) > 2 else "", self.headers, body)
            self.close()
            return
        if not chunked:
            raise AssertionError("an event stream must be chunked (HTTP/1.1, unknown length): %r"
                                 % dict(self.headers.items()))
        self._dechunk()
        self._parse()

    def _dechunk(self):
        while not self.ended:
            if self.chunk_left is None:
                end = self.raw.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(self.raw[:end]).split(b";")[0].strip(), 16)
                del self.raw[:end + 2]
                if size == 0:
                    self.ended = True
                    return
                self.chunk_left = size
            if self.chunk_left > 0:
                take = self.raw[:self.chunk_left]
                del self.raw[:len(take)]
                self.body += take
                self.all_body += take
                self.chunk_left -= len(take)
                if self.chunk_left > 0:
                    return
            if len(self.raw) < 2:
                return
            if self.raw[:2] != b"\r\n":
                raise AssertionError("bad chunk framing: %r" % bytes(self.raw[:40]))
            del self.raw[:2]
            self.chunk_left = None

    def _parse(self):
        # Lines end at CRLF, CR or LF (a lone CR at the very end may be the first half of a
        # CRLF still in flight, so it waits for more bytes unless the stream has ended).
        while True:
            m = LINE_END.search(self.body, self.scan)
            if not m:
                self.scan = len(self.body)
                return
            if m.group() == b"\r" and m.end() == len(self.body) and not (self.ended or self.eof):
                self.scan = m.start()
                return
            line = bytes(self.body[:m.start()]).decode("utf-8", "replace")
            del self.body[:m.end()]
            self.scan = 0
            if line == "":
                if self.cur.fields or self.cur.comments:
                    self.blocks.append(self.cur)
                self.cur = Block()
            elif line.startswith(":"):
                c = line[1:]
                self.cur.comments.append(c[1:] if c.startswith(" ") else c)
            else:
                name, sep, value = line.partition(":")
                if sep and value.startswith(" "):
                    value = value[1:]
                self.cur.fields.append((name, value))

    def pump(self, deadline):
        """Receives and parses what arrives before deadline; False when nothing came."""
        got = self._recv(deadline)
        self._dechunk()
        self._parse()
        return got

    # -- reading events --------------------------------------------------------------------

    @property
    def closed(self):
        """The server ended the stream (terminating chunk or connection closed)."""
        return self.ended or self.eof

    def next(self, timeout=None):
        """The next block, or None if none arrives within timeout or the stream ended."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.blocks:
            if self.closed:
                return None
            if not self.pump(deadline) and time.monotonic() >= deadline:
                return None
        return self.blocks.pop(0)

    def read_until(self, pred, timeout=None, what="block"):
        """Blocks up to and including the first for which pred(block) is true."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        out = []
        while True:
            b = self.next(max(0.0, deadline - time.monotonic()))
            if b is None:
                raise AssertionError("timed out / stream ended (closed=%s) waiting for %s; got %r"
                                     % (self.closed, what, out[-8:]))
            out.append(b)
            if pred(b):
                return out

    def read_to_end(self, timeout=None):
        """Every block until the server ends the stream."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        out = []
        while True:
            b = self.next(max(0.0, deadline - time.monotonic()))
            if b is not None:
                out.append(b)
                continue
            if self.closed:
                if self.cur.fields or self.cur.comments:
                    out.append(self.cur)  # an unterminated block: part of what was sent
                    self.cur = Block()
                return out
            raise AssertionError("stream did not end within the time-out; got %r" % out[-8:])

    def events(self, blocks):
        return [b for b in blocks if b.is_event]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------


class EventsBase(TandemTestCase):
    """Helpers; one tandemd and one Redis per class; each test uses its own conversations."""

    clients = []

    def setUp(self):
        super().setUp()
        self.clients = []
        self.gauges0 = self.gauges()

    def tearDown(self):
        try:
            for c in self.clients:
                c.close()
            # Every stream a test opened is freed and its conversation unwatched within ~1-2 s
            # (this also keeps the gauges of the next test from counting our leftovers).
            if self.srv.alive():
                wait_until(lambda: self.gauges() == self.gauges0, 3 * SLOW,
                           what="gauges back to %r after the test's streams closed" % (self.gauges0,))
        finally:
            super().tearDown()

    def gauges(self):
        m = self.srv.metrics()
        return (metric_sum(m, "tandem_sse_subscribers"), metric_sum(m, "tandem_watch_conversations"))

    def check_slow_consumer(self, text, batch):
        """A subscriber that stops reading is sent an "error" (slow_consumer) event after the
        events already on their way, and dropped; a healthy subscriber of the same
        conversation gets everything. text(i): the i-th message's text; batch: messages added
        before waiting for the healthy subscriber to catch up."""
        conv = new_conv("slow")
        first = self.xadd(conv, "hello")
        subs0 = self.metric("tandem_sse_subscribers")
        dropped0 = self.metric("tandem_sse_dropped_total")
        # a healthy subscriber on the same conversation, drained by a thread
        good = self.open_ok(conv)
        self.read_snapshot(good, first)
        good_blocks, good_summaries, stop = [], set(), threading.Event()

        def drain():
            try:
                while not stop.is_set() and not good.closed:
                    b = good.next(0.2)
                    if b is not None:
                        good_blocks.append(b)
                        if b.event == "summary":
                            good_summaries.add(b.id)
            except OSError:
                pass  # closed by tearDown after a failure
        th = threading.Thread(target=drain, daemon=True)
        th.start()
        # the slow one: a tiny receive buffer, and it never reads
        slow = self.sub(conv, rcvbuf=2048, read=False)
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0 + 2, 2 * SLOW,
                   what="slow subscriber registered")
        # Loopback TCP absorbs ~1-2 MB in the server's send buffer before the queue (256 events
        # / 4 MiB) fills, so it takes a few hundred small events. Messages are added in batches,
        # each once the healthy subscriber has the previous one: the backlog (and the test's
        # duration) stays bounded and the healthy subscriber never falls behind.
        ids = []
        deadline = time.monotonic() + 25 * SLOW
        while self.metric("tandem_sse_dropped_total") == dropped0:
            self.assertLess(time.monotonic(), deadline, "slow consumer not dropped after %d "
                            "messages" % len(ids))
            self.assertLess(len(ids), 4000, "slow consumer not dropped")
            if ids:
                wait_until(lambda: ids[-1] in good_summaries, 10 * SLOW, interval=0.005,
                           what="healthy subscriber keeping up")
            for _ in range(batch):
                ids.append(self.xadd(conv, text(len(ids))))
        self.assertEqual(self.metric("tandem_sse_dropped_total"), dropped0 + 1)
        # now read what the slow client was sent: well-formed events, then the error, then the end
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        slow._read_head()
        self.assertEqual(slow.status, 200)
        blocks = slow.read_to_end(timeout=20 * SLOW)
        self.assertTrue(slow.closed)
        self.assertTrue(blocks, "nothing received")
        last = blocks[-1]
        spliced = [i for i, b in enumerate(blocks)
                   if len(b.data_lines) > 1 or "event: error" in (b.data or "")]
        self.assertFalse(spliced, "an event cut short when the queue was dropped runs into the "
                                  "error event (the client sees a broken %r event, never the error): "
                                  "...%r" % (blocks[spliced[0]].event if spliced else None,
                                             bytes(slow.all_body[-300:])))
        self.assertEqual(last.event, "error", "the last block must be the error event: %r" % blocks[-3:])
        self.assertEqual(last.json["error"]["code"], "slow_consumer")
        self.assertEqual(len(last.data_lines), 1)
        seen = [b.id for b in blocks[:-1] if b.is_event]
        self.assertEqual(seen, sorted(seen, key=id_tuple), "slow client: ids out of order")
        for b in blocks[:-1]:
            if not b.is_event:
                continue
            self.assertIn(b.event, ("suggestions", "summary", "alert"),
                          "a malformed/forged event before the error: %r" % b)
            self.assertEqual(len(b.data_lines), 1, "a truncated event was spliced into the next: %r"
                             % ([n for n, _ in b.fields],))
            self.assertEqual(b.json["conversation_id"], conv)
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0 + 1, 3 * SLOW,
                   what="slow subscriber freed")
        # the healthy subscriber got everything, in order, once
        wait_until(lambda: ids[-1] in good_summaries, 10 * SLOW, what="healthy subscriber caught up")
        stop.set()
        th.join(5)
        evs = [b for b in good_blocks if b.is_event]
        self.assertEqual([e.id for e in evs if e.event == "summary"], ids)
        self.assertFalse([b for b in good_blocks if b.event == "error"])

    # -- helpers ---------------------------------------------------------------------------

    def sub(self, conv, **kw):
        c = SSEClient(self.srv, conv, **kw)
        self.clients.append(c)
        return c

    def open_ok(self, conv, **kw):
        c = self.sub(conv, **kw)
        self.assertEqual(c.status, 200, c.response)
        return c

    def xadd(self, conv, text, role="customer", entry_id="*", **fields):
        args = ["XADD", msgs_key(conv), entry_id, "role", role, "text", text]
        for k, v in fields.items():
            args += [k, v]
        return self.redis.cmd_str(*args)

    def metric(self, name, **labels):
        return metric_sum(self.srv.metrics(), name, **labels)

    def read_snapshot(self, c, newest):
        """Reads the retry hint and the snapshot (suggestions, summary, alerts) of a new stream
        whose newest message is `newest`; returns the snapshot's events."""
        first = c.next()
        self.assertIsNotNone(first, "nothing on a new stream")
        self.assertEqual(first.retry, "3000", "a stream must start with the retry hint: %r" % first)
        self.assertFalse(first.is_event, first)
        blocks = c.read_until(lambda b: b.event == "summary", what="snapshot summary")
        evs = c.events(blocks)
        self.assertEqual([e.event for e in evs], ["suggestions", "summary"], blocks)
        summary = evs[1].json
        n_alerts = len(summary["conversation"]["alerts"])
        for _ in range(n_alerts):
            b = c.next()
            self.assertIsNotNone(b, "missing snapshot alert")
            self.assertEqual(b.event, "alert", b)
            evs.append(b)
        for e in evs:
            self.assertEqual(e.id, newest, e)
            self.assertEqual(len(e.data_lines), 1, e)
        self.assertEqual([e.json["alert"]["type"] for e in evs[2:]],
                         [a["type"] for a in summary["conversation"]["alerts"]])
        return evs

    def check_message_events(self, evs, conv, ids, prev_alert_types):
        """evs: the events pushed for messages ids (in order). Checks per message: suggestions,
        summary, then one alert per alert type of that summary not in the previous state; ids
        in order; payloads describe that message. Returns the last state's alert types."""
        pos = 0
        for mid in ids:
            mine = []
            while pos < len(evs) and evs[pos].id == mid:
                mine.append(evs[pos])
                pos += 1
            names = [e.event for e in mine]
            self.assertGreaterEqual(len(mine), 2, "message %s: events %r (all: %r)" % (mid, names, evs))
            self.assertEqual(names[:2], ["suggestions", "summary"], "message %s: %r" % (mid, mine))
            for e in mine:
                self.assertEqual(len(e.data_lines), 1, e)
                d = e.json
                self.assertEqual(d["conversation_id"], conv, e)
                self.assertEqual(d["based_on"], mid, e)
            sugg = mine[0].json
            self.assertLessEqual(len(sugg["suggestions"]), 3, sugg)
            types = [a["type"] for a in mine[1].json["conversation"]["alerts"]]
            expect_new = [t for t in types if t not in prev_alert_types]
            self.assertEqual([e.json["alert"]["type"] for e in mine[2:]], expect_new,
                             "message %s: alert events" % mid)
            self.assertTrue(all(n == "alert" for n in names[2:]), names)
            prev_alert_types = types
        self.assertEqual(pos, len(evs), "events after the expected ones (duplicates, out of "
                                        "order or foreign): %r" % evs[pos:])
        return prev_alert_types



class EventsTest(EventsBase):
    """The demo KB: small events (the slow consumer hits the 256-event limit)."""

    @classmethod
    def server_env(cls):
        return {"TANDEM_KB": DEMO_KB}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # A subscriber that lives through the whole class: test_zz_heartbeat checks that it
        # got ": ping" comments (15 s apart) without a test of its own sleeping for them.
        cls.ping_conv = new_conv("ping")
        cls.redis.cmd("XADD", msgs_key(cls.ping_conv), "*", "role", "customer", "text", "hello")
        cls.ping_opened = time.monotonic()
        cls.ping_client = SSEClient(cls.srv, cls.ping_conv)

    @classmethod
    def tearDownClass(cls):
        if cls.ping_client:
            cls.ping_client.close()
        super().tearDownClass()

    def test_slow_consumer_is_dropped(self):
        self.check_slow_consumer(lambda i: "Where is my refund? Order %d, I paid 49.99 on "
                                           "2024-05-0%d and returned it." % (i, i % 9 + 1),
                                 batch=20)

    # -- the stream ------------------------------------------------------------------------

    def test_snapshot_then_events_in_order(self):
        conv = new_conv("order")
        first = self.xadd(conv, "Hi, where is my refund for order 12345? I think it was fraud")
        c = self.open_ok(conv)
        self.assertTrue(c.headers.get("Content-Type", "").startswith("text/event-stream"), c.headers)
        self.assertEqual(c.headers.get("Cache-Control"), "no-store")
        snap = self.read_snapshot(c, first)
        prev_types = [a["type"] for a in snap[1].json["conversation"]["alerts"]]
        self.assertIn("fraud", prev_types)
        self.assertEqual(snap[0].json["based_on"], first)

        recomputes0 = self.metric("tandem_watch_recomputes_total")
        texts = ["Thanks for waiting, let me check that for you.",
                 "It has been a week already and nothing arrived.",
                 "I want to cancel my subscription.",            # new alert type: cancellation
                 "Could you also update my address please?",
                 "Please cancel my subscription today.",          # cancellation again: no new event
                 "Otherwise I will talk to my lawyer.",           # new alert type: legal
                 ]
        texts = (texts * 4)[:22]
        ids = []
        for i, t in enumerate(texts):
            ids.append(self.xadd(conv, t, role="agent" if i % 6 == 0 else "customer"))
        sentinel = self.xadd(conv, "ok")
        blocks = c.read_until(lambda b: b.event == "suggestions" and b.id == sentinel,
                              timeout=15 * SLOW, what="the sentinel's suggestions")
        evs = [b for b in c.events(blocks) if b.id != sentinel]
        self.assertEqual(sorted(set(e.id for e in evs), key=id_tuple), ids,
                         "every message, none else")
        seen_ids = [e.id for e in evs]
        self.assertEqual(seen_ids, sorted(seen_ids, key=id_tuple), "ids out of order")
        self.check_message_events(evs, conv, ids, prev_types)
        # alerts: cancellation raised once at the first cancel message, legal at the lawyer one
        alerts = [(e.id, e.json["alert"]["type"]) for e in evs if e.event == "alert"]
        self.assertIn((ids[2], "cancellation"), alerts)
        self.assertIn((ids[5], "legal"), alerts)
        self.assertEqual(len([a for a in alerts if a[1] == "cancellation"]), 1, alerts)
        # one recompute per message (the sentinel's is included once it is done)
        wait_until(lambda: self.metric("tandem_watch_recomputes_total") - recomputes0 >= len(ids) + 1,
                   5 * SLOW, what="recomputes")
        self.assertEqual(self.metric("tandem_watch_recomputes_total") - recomputes0, len(ids) + 1)

    def test_empty_stream_snapshot_id_is_0_0(self):
        conv = new_conv("empty")
        mid = self.xadd(conv, "soon gone")
        self.redis.cmd("XDEL", msgs_key(conv), mid)  # the stream exists, with no entries
        c = self.open_ok(conv)
        evs = self.read_snapshot(c, "0-0")
        self.assertIsInstance(evs[0].json["suggestions"], list)
        self.assertEqual(evs[1].json["conversation"]["alerts"], [])
        new = self.xadd(conv, "Now I have a question about my invoice")
        blocks = c.read_until(lambda b: b.event == "summary", what="first message's summary")
        self.assertEqual([(e.event, e.id) for e in c.events(blocks)],
                         [("suggestions", new), ("summary", new)])

    def check_resumed(self, c, last_seen, missed):
        """c resumed from last_seen after the messages `missed` were added. What must arrive:
        the retry hint, a snapshot (suggestions, summary, every current alert) of some state S
        newer than last_seen, then the events of every message after S, up to the newest; no
        id at or before last_seen, nothing twice. Returns S."""
        b = c.next()
        self.assertEqual(b.retry, "3000", b)
        newest = missed[-1]
        blocks = c.read_until(lambda x: x.event == "summary" and x.id == newest, timeout=5 * SLOW,
                              what="the newest message's summary")
        evs = c.events(blocks)
        for e in evs:
            self.assertIn(e.id, missed, "an id at/before Last-Event-ID or unknown: %r" % e)
        snap_id = evs[0].id
        self.assertEqual(evs[0].event, "suggestions", "a resumed stream must start with a snapshot "
                         "(suggestions first); got %r" % evs[:4])
        snap = [e for e in evs if e.id == snap_id]
        types = [a["type"] for a in snap[1].json["conversation"]["alerts"]]
        self.assertEqual([e.event for e in snap], ["suggestions", "summary"] + ["alert"] * len(types),
                         "the snapshot at %s" % snap_id)
        rest = missed[missed.index(snap_id) + 1:]
        self.check_message_events(evs[len(snap):], c_conv(evs[0]), rest, types)
        return snap_id

    def test_resume_with_last_event_id(self):
        conv = new_conv("resume")
        first = self.xadd(conv, "Hello, my parcel is late")
        c = self.open_ok(conv)
        self.read_snapshot(c, first)
        c.close()
        # Unwatched meanwhile (the stream is freed first): the snapshot is computed from Redis
        # and is exactly the newest state.
        wait_until(lambda: self.gauges() == self.gauges0, 3 * SLOW, what="first stream freed")
        missed = [self.xadd(conv, "message %d about my late parcel" % i) for i in range(5)]
        newest = missed[-1]
        for kw in ({"last_event_id": first}, {"query": ["last_event_id=" + first]}):
            with self.subTest(watched=False, **kw):
                c2 = self.open_ok(conv, **kw)
                self.assertEqual(self.check_resumed(c2, first, missed), newest)
                c2.close()
                wait_until(lambda: self.gauges() == self.gauges0, 3 * SLOW, what="stream freed")

        # Watched meanwhile (another subscriber stays): the live loop may still be working
        # through the missed messages, so the snapshot may describe an earlier one of them;
        # the rest must follow, each once.
        keeper = self.open_ok(conv)
        self.read_snapshot(keeper, newest)
        for key in ("last_event_id", "query"):
            with self.subTest(watched=True, via=key):
                last_seen = newest
                missed = [self.xadd(conv, "watched %d: still no parcel" % i) for i in range(8)]
                newest = missed[-1]
                c2 = self.open_ok(conv, **resume_kw(key, last_seen))
                self.check_resumed(c2, last_seen, missed)
                c2.close()

        # Resuming from the newest id: nothing until the next message.
        for key in ("last_event_id", "query"):
            with self.subTest(resume_from="newest", via=key):
                c3 = self.open_ok(conv, **resume_kw(key, newest))
                b = c3.next()
                self.assertEqual(b.retry, "3000", b)
                self.assertFalse(b.is_event)
                # no sleep: if a snapshot (or anything else) had been sent, it would come
                # before the next message's events
                nxt = self.xadd(conv, "still waiting")
                newest = nxt
                blocks = c3.read_until(lambda b: b.event == "summary" and b.id == nxt,
                                       what="next summary")
                self.assertEqual([(e.event, e.id) for e in c3.events(blocks)],
                                 [("suggestions", nxt), ("summary", nxt)])
                c3.close()

    def test_invalid_requests(self):
        conv = new_conv("bad")
        self.xadd(conv, "hello")
        subs0 = self.metric("tandem_sse_subscribers")
        watched0 = self.metric("tandem_watch_conversations")
        path = "/v1/conversations/%s/events" % conv
        for bad in ("abc", "123-", "-1", "1-2-3", "1 -0", "0x10-0", "1-0;", "9" * 60 + "-0"):
            with self.subTest(last_event_id=bad):
                r = self.srv.request("GET", path, headers={"Last-Event-ID": bad})
                self.assertError(r, 400, "bad_request")
                q = bad.replace(" ", "%20").replace(";", "%3B")
                r = self.srv.request("GET", path + "?last_event_id=" + q)
                self.assertError(r, 400, "bad_request")
        r = self.srv.request("GET", "/v1/conversations/%s/events" % new_conv("none"))
        self.assertError(r, 404, "conversation_not_found")
        r = self.srv.request("GET", "/v1/conversations/%s/events" % new_conv("none"),
                             headers={"Last-Event-ID": "1-0"})
        self.assertError(r, 404, "conversation_not_found")
        r = self.srv.request("GET", "/v1/conversations/bad%20id/events")
        self.assertEqual(r.status, 400, r)
        # tokens
        r = self.srv.request("GET", path, token=False)
        self.assertError(r, 401, "unauthorized")
        r = self.srv.request("GET", path, token="wrong-" + self.srv.token)
        self.assertError(r, 401, "unauthorized")
        r = self.srv.request("GET", path + "?token=wrong", token=False)
        self.assertError(r, 401, "unauthorized")
        c = self.sub(conv, token=None, query=["token=" + self.srv.token[:-1]])
        self.assertError(c.response, 401, "unauthorized")
        # a refused request leaves no subscriber and no watched conversation behind
        self.assertEqual(self.metric("tandem_sse_subscribers"), subs0)
        self.assertEqual(self.metric("tandem_watch_conversations"), watched0)
        # the token in the query works (EventSource cannot send headers)
        c = self.open_ok(conv, token="query")
        self.assertEqual(c.next().retry, "3000")
        self.assertEqual(c.read_until(lambda b: b.is_event)[-1].event, "suggestions")

    def test_text_cannot_forge_events(self):
        conv = new_conv("inject")
        evil = ["hi\n\nevent: alert\ndata: {}\n\n",
                "x\r\rid: 9999999999999-0\r\revent: alert\r\rdata: {\"forged\":1}\r\r",
                "y\r\n\r\nevent: status\r\ndata: {\"redis\":\"ok\"}\r\n\r\n: ping\n\nretry: 1\n\n",
                "data: {}\u2028\u2029\x85event: alert"]
        first = self.xadd(conv, evil[0])
        c = self.open_ok(conv)
        snap = self.read_snapshot(c, first)
        ids = [self.xadd(conv, t) for t in evil[1:]]
        sentinel = self.xadd(conv, "plain")
        blocks = c.read_until(lambda b: b.event == "suggestions" and b.id == sentinel,
                              what="sentinel")
        for b in blocks:
            self.assertTrue(b.is_event, "unexpected non-event block %r" % b)
            self.assertEqual([n for n, _ in b.fields].count("data"), 1, b)
            self.assertIn(b.event, ("suggestions", "summary", "alert"), b)
            self.assertIn(b.id, ids + [sentinel], b)
            self.assertIsInstance(b.json, dict)
            self.assertNotIn(b.json, ({}, {"forged": 1}))
        for b in blocks:
            self.assertEqual([n for n, _ in b.fields], ["id", "event", "data"], b)
        self.check_message_events([b for b in blocks if b.id != sentinel], conv, ids,
                                  [a["type"] for a in snap[1].json["conversation"]["alerts"]])

    def test_bad_utf8_does_not_stall_the_stream(self):
        conv = new_conv("utf8")
        first = self.xadd(conv, "hello")
        c = self.open_ok(conv)
        self.read_snapshot(c, first)
        bad = self.redis.cmd_str("XADD", msgs_key(conv), "*", "role", "customer",
                                 "text", b"caf\xc3 \xff\xfe broken \xed\xa0\x80 utf-8")
        good = self.xadd(conv, "and a normal message after it")
        blocks = c.read_until(lambda b: b.event == "summary" and b.id == good, timeout=5 * SLOW,
                              what="the next good message's summary")
        for b in c.events(blocks):
            self.assertEqual(len(b.data_lines), 1, b)
            b.json  # valid JSON (invalid UTF-8 must have been replaced or dropped)
            self.assertIn(b.id, (bad, good))

    # -- many subscribers, isolation, cleanup ----------------------------------------------

    def test_many_subscribers_one_recompute(self):
        conv = new_conv("many")
        first = self.xadd(conv, "Hello, I need help with my payment plan")
        n = 50
        subs0 = self.metric("tandem_sse_subscribers")
        clients = [self.open_ok(conv) for _ in range(n)]
        for c in clients:
            self.read_snapshot(c, first)
        self.assertEqual(self.metric("tandem_sse_subscribers"), subs0 + n)
        m = self.metrics_now()
        rec0, ev0 = m["tandem_watch_recomputes_total"], m["tandem_sse_events_total"]

        pings = 0
        for round_ in range(2):
            mid = self.xadd(conv, "Can I move my next instalment by a week? (%d)" % round_)
            payloads = set()
            for i, c in enumerate(clients):
                blocks = c.read_until(lambda b: b.event == "summary", what="summary at client %d" % i)
                if i == 0:
                    pings += sum(1 for b in blocks if "ping" in b.comments)
                evs = c.events(blocks)
                self.assertEqual([(e.event, e.id) for e in evs],
                                 [("suggestions", mid), ("summary", mid)],
                                 "client %d: exactly the new message's events, once" % i)
                payloads.add((evs[0].data, evs[1].data))
            self.assertEqual(len(payloads), 1, "every subscriber must get the same events")
        wait_until(lambda: self.metric("tandem_watch_recomputes_total") - rec0 >= 2, 5 * SLOW,
                   what="recomputes")
        m = self.metrics_now()
        self.assertEqual(m["tandem_watch_recomputes_total"] - rec0, 2,
                         "one recompute per message however many subscribers")
        # 2 events x 50 subscribers x 2 messages; a heartbeat in between adds one per stream
        extra = m["tandem_sse_events_total"] - ev0 - 2 * 2 * n
        self.assertTrue(extra == 0 or (pings and extra % m["tandem_sse_subscribers"] == 0),
                        "tandem_sse_events_total grew by %d more than 200 (pings seen: %d)"
                        % (extra, pings))
        for c in clients:
            c.close()
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0, 3 * SLOW,
                   what="subscribers gauge back to %d" % subs0)

    def metrics_now(self):
        out = {}
        for name, labels, v in self.srv.metrics():
            if not labels:
                out[name] = v
        return out

    def test_subscribers_joining_while_messages_arrive(self):
        """Streams opened while the live loop is busy with a stream of messages: each gets a
        snapshot of some state S, then every later message's suggestions, summary and new
        alerts, once. (A join between the live loop pushing a message's suggestions and
        updating its cache gets a snapshot of the previous state, and never the suggestions of
        that message: its summary arrives alone.) Longer messages make each recompute take a
        few ms, so joins land inside that window."""
        conv = new_conv("join")
        filler = " ".join("The parcel with the blue jumper and the grey scarf was sent back "
                          "on Monday by tracked post %d." % i for i in range(30))
        last = None
        for i in range(20):
            last = self.xadd(conv, "background %d: %s" % (i, filler))
        keeper = self.open_ok(conv)  # watched from the start: joins use the live cache
        self.read_snapshot(keeper, last)
        ids = []

        def writer():
            rc = RespClient(port=self.redis.port)
            try:
                for i in range(60):
                    ids.append(rc.cmd("XADD", msgs_key(conv), "*", "role", "customer", "text",
                                      "update %d: %s" % (i, filler)).decode())
                    time.sleep(0.004)  # a busy conversation, not a burst
            finally:
                rc.close()
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        clients = []
        while th.is_alive() and len(clients) < 40:
            clients.append(self.open_ok(conv))
            time.sleep(0.003)
        th.join(30)
        sentinel = self.xadd(conv, "done")
        all_ids = ids + [sentinel]
        broken = []
        for n, c in enumerate(clients):
            self.assertEqual(c.next().retry, "3000")
            blocks = c.read_until(lambda b: b.event == "summary" and b.id == sentinel,
                                  timeout=10 * SLOW, what="client %d: the sentinel's summary" % n)
            evs = c.events(blocks)
            snap_id = evs[0].id
            self.assertEqual(evs[0].event, "suggestions",
                             "client %d: the stream must start with a snapshot: %r" % (n, evs[:3]))
            snap = [e for e in evs if e.id == snap_id]
            types = [a["type"] for a in snap[1].json["conversation"]["alerts"]]
            self.assertEqual([e.event for e in snap],
                             ["suggestions", "summary"] + ["alert"] * len(types),
                             "client %d: snapshot at %s" % (n, snap_id))
            rest = [i for i in all_ids if id_tuple(i) > id_tuple(snap_id)]
            try:
                self.check_message_events(evs[len(snap):], conv, rest, types)
            except AssertionError as e:
                broken.append("stream %d (snapshot %s): %s" % (n, snap_id, str(e)[:300]))
        self.assertFalse(broken, "%d of %d streams opened during updates lost events; first: %s"
                         % (len(broken), len(clients), broken[:1]))

    def test_conversations_do_not_leak(self):
        a, b = new_conv("iso-a"), new_conv("iso-b")
        fa, fb = self.xadd(a, "hello from a"), self.xadd(b, "hello from b")
        ca, cb = self.open_ok(a), self.open_ok(b)
        self.read_snapshot(ca, fa)
        self.read_snapshot(cb, fb)
        ids = {a: [], b: []}
        for i in range(4):
            ids[a].append(self.xadd(a, "a says %d: my card was declined" % i))
            ids[b].append(self.xadd(b, "b says %d: I want to change my address" % i))
        sent = {a: self.xadd(a, "a done"), b: self.xadd(b, "b done")}
        for conv, c in ((a, ca), (b, cb)):
            blocks = c.read_until(lambda x, s=sent[conv]: x.event == "suggestions" and x.id == s,
                                  what="%s sentinel" % conv)
            evs = [e for e in c.events(blocks) if e.id != sent[conv]]
            for e in evs:
                self.assertEqual(e.json["conversation_id"], conv, e)
                self.assertIn(e.id, ids[conv], e)
            self.assertEqual(sorted(set(e.id for e in evs), key=id_tuple), ids[conv])

    def test_disconnected_subscriber_is_freed(self):
        conv = new_conv("free")
        first = self.xadd(conv, "hello")
        subs0 = self.metric("tandem_sse_subscribers")
        watched0 = self.metric("tandem_watch_conversations")
        opened0 = self.metric("tandem_sse_streams_opened_total")
        for name in ("tandem_sse_streams_opened_total", "tandem_sse_events_total",
                     "tandem_sse_dropped_total", "tandem_watch_conversations",
                     "tandem_watch_recomputes_total", "tandem_sse_subscribers"):
            self.assertIn(name, self.metrics_now(), "metric %s missing" % name)

        # 1. an idle (parked) stream whose client goes away
        c = self.open_ok(conv)
        self.read_snapshot(c, first)
        self.assertEqual(self.metric("tandem_sse_subscribers"), subs0 + 1)
        self.assertEqual(self.metric("tandem_watch_conversations"), watched0 + 1)
        self.assertEqual(self.metric("tandem_sse_streams_opened_total"), opened0 + 1)
        c.close()
        t0 = time.monotonic()
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0, 2.5 * SLOW,
                   what="subscriber freed after disconnect")
        took = time.monotonic() - t0
        wait_until(lambda: self.metric("tandem_watch_conversations") == watched0, 2 * SLOW,
                   what="conversation unwatched")
        self.assertLess(took, 2.5 * SLOW)

        # 2. a client that never read anything and leaves while events are queued
        c = self.sub(conv, read=False)
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0 + 1, 2 * SLOW,
                   what="second subscriber")
        for i in range(3):
            self.xadd(conv, "more %d" % i)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0, 2.5 * SLOW,
                   what="subscriber freed after reset")
        wait_until(lambda: self.metric("tandem_watch_conversations") == watched0, 2 * SLOW,
                   what="conversation unwatched")

        # 3. many quick connect/disconnects leave nothing behind
        for _ in range(20):
            c = self.open_ok(conv)
            c.next()
            c.close()
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0, 3 * SLOW,
                   what="all short-lived subscribers freed")
        # and the server still streams to a new one
        c = self.open_ok(conv)
        self.assertEqual(c.next().retry, "3000")

    # -- Redis outages ---------------------------------------------------------------------

    def test_subscriber_survives_redis_restart(self):
        """Redis is killed and comes back with its data (as a production Redis with RDB/AOF
        does); messages the connector wrote while tandemd could not see Redis are pushed once,
        in order, none older again.

        To make "written meanwhile" deterministic (not a race with the watcher's reconnect),
        the new messages are written by a second redis-server on another port that loads the
        dump of the killed one and saves it back; the original port then comes back with that
        data. tandemd never talks to the second server."""
        conv = new_conv("outage")
        first = self.xadd(conv, "hello before the outage")
        c1, c2 = self.open_ok(conv), self.open_ok(conv)
        for c in (c1, c2):
            self.read_snapshot(c, first)
        before = self.xadd(conv, "one more before the outage")
        prev_types = None
        for c in (c1, c2):
            b = c.read_until(lambda b: b.event == "summary" and b.id == before,
                             what="pre-outage summary")[-1]
            prev_types = [a["type"] for a in b.json["conversation"]["alerts"]]

        self.assertEqual(self.redis.cmd("SAVE"), "OK")
        self.redis.stop()  # SIGKILL
        for c in (c1, c2):
            b = c.read_until(lambda b: b.event == "status", timeout=5 * SLOW,
                             what="status unavailable")[-1]
            self.assertEqual(b.json["redis"], "unavailable", b)
            self.assertIsNone(b.id, "a status event must not move Last-Event-ID")
            self.assertEqual(len(b.data_lines), 1)
        self.assertEqual(self.metric("tandem_watch_redis_up"), 0)
        # a new subscriber cannot be served without Redis: 503 with the envelope
        r = self.srv.request("GET", "/v1/conversations/%s/events" % conv)
        self.assertError(r, 503, "redis_unavailable")

        side = RedisServer(extra_args=["--dir", self.redis.dir])
        try:
            self.assertEqual(side.cmd("XLEN", msgs_key(conv)), 2, "the dump was not loaded")
            meanwhile = [side.cmd_str("XADD", msgs_key(conv), "*", "role", "customer", "text",
                                      "written during the outage %d" % i) for i in range(3)]
            self.assertEqual(side.cmd("SAVE"), "OK")
        finally:
            side.close()
        self.redis.start()
        self.assertEqual(self.redis.cmd("XLEN", msgs_key(conv)), 5)

        for c in (c1, c2):
            blocks = c.read_until(lambda b: b.event == "summary" and b.id == meanwhile[-1],
                                  timeout=10 * SLOW, what="the last outage message's summary")
            status = [b for b in blocks if b.event == "status"]
            self.assertEqual([s.json["redis"] for s in status], ["ok"], blocks)
            self.assertTrue(blocks.index(status[0]) < min(i for i, b in enumerate(blocks) if b.id),
                            "status ok should come before the resumed events")
            evs = [b for b in c.events(blocks) if b.event != "status"]
            self.check_message_events(evs, conv, meanwhile, prev_types)
        after = self.xadd(conv, "and after the outage")
        for c in (c1, c2):
            blocks = c.read_until(lambda b: b.event == "summary", what="post-outage summary")
            self.assertEqual([(e.event, e.id) for e in c.events(blocks)],
                             [("suggestions", after), ("summary", after)])
        self.assertEqual(self.metric("tandem_watch_redis_up"), 1)

    def test_hung_redis(self):
        conv = new_conv("hung")
        first = self.xadd(conv, "hello")
        c = self.open_ok(conv)
        self.read_snapshot(c, first)
        self.redis.pause()
        try:
            b = c.read_until(lambda b: b.event == "status", timeout=6 * SLOW,
                             what="status unavailable")[-1]
            self.assertEqual(b.json["redis"], "unavailable")
        finally:
            self.redis.resume()
        b = c.read_until(lambda b: b.event == "status", timeout=8 * SLOW, what="status ok")[-1]
        self.assertEqual(b.json["redis"], "ok")
        mid = self.xadd(conv, "are you there?")
        blocks = c.read_until(lambda b: b.event == "summary", what="summary after SIGCONT")
        self.assertEqual([(e.event, e.id) for e in c.events(blocks)],
                         [("suggestions", mid), ("summary", mid)])

    # -- slow consumers --------------------------------------------------------------------

    # -- cache, focus ----------------------------------------------------------------------

    def test_suggestions_served_from_live_cache(self):
        conv = new_conv("cache")
        first = self.xadd(conv, "Where is my refund?")
        c = self.open_ok(conv)
        self.read_snapshot(c, first)
        mid = self.xadd(conv, "I returned the parcel two weeks ago and still no refund")
        blocks = c.read_until(lambda b: b.event == "summary" and b.id == mid, what="summary")
        pushed = [b for b in blocks if b.event == "suggestions"][-1].json
        live0 = self.metric("tandem_suggestions_total", cache="live")
        self.redis.reset_stats()
        ans = self.srv.get_json("/v1/conversations/%s/suggestions" % conv)
        cmds = {k: v for k, v in self.redis.commands_since_reset().items()
                if k not in ("xread", "client|id", "client|unblock", "client")}
        self.assertEqual(ans["based_on"], mid)
        self.assertEqual(self.metric("tandem_suggestions_total", cache="live"), live0 + 1)
        self.assertEqual(cmds, {}, "a watched conversation's suggestions need no Redis command")
        self.assertEqual([s["text"] for s in ans["suggestions"]],
                         [s["text"] for s in pushed["suggestions"]][:len(ans["suggestions"])])
        self.assertEqual([s["id"] for s in ans["suggestions"]][:3],
                         [s["id"] for s in pushed["suggestions"]][:3],
                         "the cached answer is the pushed one (same suggestion ids)")
        self.assertIsInstance(ans["took_ms"], (int, float))
        # other k: sliced from the same cached state (a different code path), same order
        two = self.srv.get_json("/v1/conversations/%s/suggestions?k=2" % conv)
        self.assertEqual([s["id"] for s in two["suggestions"]], [s["id"] for s in ans["suggestions"]][:2])
        self.assertEqual({k: v for k, v in two.items() if k not in ("suggestions", "took_ms")},
                         {k: v for k, v in ans.items() if k not in ("suggestions", "took_ms")})
        pushed_summary = [b for b in blocks if b.event == "summary"][-1].json
        self.redis.reset_stats()
        summ = self.srv.get_json("/v1/conversations/%s/summary" % conv)
        cmds = {k: v for k, v in self.redis.commands_since_reset().items()
                if k not in ("xread", "client|id", "client|unblock", "client")}
        self.assertEqual(cmds, {}, "a watched conversation's summary needs no Redis command")
        self.assertEqual(summ["based_on"], mid)
        self.assertIsInstance(summ.pop("took_ms"), (int, float))
        self.assertEqual(summ, {k: v for k, v in pushed_summary.items() if k != "took_ms"},
                         "the cached summary is the pushed one")

    def test_focus_is_watched_and_hotkey_text(self):
        conv = new_conv("focus")
        self.xadd(conv, "Hi, I was charged twice for my order")
        watched0 = self.metric("tandem_watch_conversations")
        try:
            r = self.srv.request("PUT", "/v1/focus", body={"conversation_id": conv})
            self.assertEqual(r.status, 200, r)
            wait_until(lambda: self.metric("tandem_watch_conversations") == watched0 + 1, 2 * SLOW,
                       what="focused conversation watched")
            mid = self.xadd(conv, "Can you refund the second charge please?")

            def live_answer():
                # the live loop's answer for the new message (a GET right after the XADD may
                # still get the previous state, or be computed from Redis)
                before = self.metric("tandem_suggestions_total", cache="live")
                ans = self.srv.get_json("/v1/conversations/%s/suggestions" % conv)
                hit = self.metric("tandem_suggestions_total", cache="live") == before + 1
                return ans if hit and ans["based_on"] == mid else None
            full = wait_until(live_answer, 5 * SLOW, what="the live cache's answer for the new message")
            live0 = self.metric("tandem_suggestions_total", cache="live")
            r = self.srv.request("GET", "/v1/focus/suggestions/1?format=text")
            self.assertEqual(r.status, 200, r)
            self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)
            self.assertEqual(r.text, full["suggestions"][0]["text"])
            self.assertEqual(self.metric("tandem_suggestions_total", cache="live"), live0 + 1,
                             "the hotkey must be served from the live cache")
            self.assertGreaterEqual(len(full["suggestions"]), 2, full)
            j = self.srv.get_json("/v1/focus/suggestions/2?format=json")
            self.assertEqual((j["based_on"], j["text"], j["conversation_id"]),
                             (mid, full["suggestions"][1]["text"], conv))
        finally:
            self.srv.request("PUT", "/v1/focus", body={"conversation_id": None})
        wait_until(lambda: self.metric("tandem_watch_conversations") == watched0, 2 * SLOW,
                   what="unfocused conversation no longer watched")

    # -- heartbeat, shutdown ---------------------------------------------------------------

    def test_zz_heartbeat(self):
        """Runs last: the class-long subscriber must have got ': ping' within ~15 s."""
        c = self.ping_client
        left = self.ping_opened + 18 * SLOW - time.monotonic()
        blocks = c.read_until(lambda b: "ping" in b.comments, timeout=max(left, 1.0),
                              what="a ': ping' heartbeat")
        ping = blocks[-1]
        self.assertEqual(ping.fields, [], "a heartbeat is a bare comment")
        self.assertFalse(c.closed)


class BigEventsTest(EventsBase):
    """A KB whose entries are ~30 KB: each suggestions event (~130 KB) is larger than the
    server's per-connection write buffer, so it always goes out in pieces, and the slow
    consumer hits the 4 MiB limit while an event is half sent."""

    @classmethod
    def setUpClass(cls):
        cls.kb_dir = tempfile.mkdtemp(prefix="tandem-bigkb-")
        with open(os.path.join(cls.kb_dir, "kb.jsonl"), "w") as f:
            for i in range(3):
                body = "Your refund, part %d: " % i + " ".join("detail%d" % j for j in range(4000))
                f.write(json.dumps({"id": "big-%d" % i, "title": "Refund %d" % i, "body": body,
                                    "tags": ["refund"], "lang": "en"}) + "\n")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.kb_dir, ignore_errors=True)

    @classmethod
    def server_env(cls):
        return {"TANDEM_KB": os.path.join(cls.kb_dir, "kb.jsonl")}

    def test_slow_consumer_big_events(self):
        self.check_slow_consumer(lambda i: "Where is my refund? (%d)" % i, batch=8)


class DisconnectLogTest(EventsBase):
    """Subscribers that close their tab are routine: libmicrohttpd's "Failed to send ... The
    socket is no longer available for sending" about them is logged at debug, not warn."""

    @classmethod
    def server_env(cls):
        return {"TANDEM_LOG_LEVEL": "debug"}

    def mhd_records(self, level):
        return [r for r in self.srv.log_records() if r.get("msg") == "http_server" and r.get("level") == level]

    def test_closed_streams_are_not_warnings(self):
        conv = new_conv("gone")
        first = self.xadd(conv, "hello")
        subs0 = self.metric("tandem_sse_subscribers")
        clients = [self.open_ok(conv) for _ in range(4)]
        for c in clients:
            self.read_snapshot(c, first)
            c.close()  # FIN: the server learns it only when it writes the next event
        self.xadd(conv, "anyone there?")
        wait_until(lambda: self.metric("tandem_sse_subscribers") == subs0, 3 * SLOW,
                   what="closed subscribers freed")
        wait_until(lambda: any("no longer available" in r.get("detail", "") for r in self.mhd_records("debug")),
                   2 * SLOW, what="libmicrohttpd's disconnect message at debug")
        self.assertEqual(self.mhd_records("warn"), [])


class LifecycleTest(unittest.TestCase):
    """Streams at the edges of the process's life."""

    def test_subscribe_right_after_start(self):
        """A stream opened as soon as /healthz answers must be live. (The SSE hub's watch hook
        used to be installed by watch_start() after http_start() had begun accepting: a stream
        opened in between was never watched and got no events, and tandem_watch_conversations
        stayed 0.) The window is short, so a few fresh servers are tried."""
        redis = RedisServer()
        try:
            for round_ in range(3):
                conv = new_conv("early%d" % round_)
                redis.cmd("XADD", msgs_key(conv), "*", "role", "customer", "text", "hello")
                srv = Tandemd(redis, wait=False)
                c = None
                try:
                    def opened():
                        nonlocal c
                        c = SSEClient(srv, conv, timeout=2 * SLOW)
                        return c.status == 200
                    wait_until(opened, 10 * SLOW, interval=0.001, what="first stream")
                    c.read_until(lambda b: b.event == "summary", what="snapshot")
                    mid = redis.cmd_str("XADD", msgs_key(conv), "*", "role", "customer", "text", "hi?")
                    blocks = c.read_until(lambda b: b.event == "summary" and b.id == mid,
                                          timeout=3 * SLOW, what="the first live message's events")
                    self.assertEqual([(e.event, e.id) for e in c.events(blocks)],
                                     [("suggestions", mid), ("summary", mid)])
                    self.assertEqual(metric_sum(srv.metrics(), "tandem_watch_conversations"), 1)
                finally:
                    if c:
                        c.close()
                    rc = srv.stop()
                    srv.close()
                self.assertEqual(rc, 0)
        finally:
            redis.close()

    def test_sigterm_ends_streams(self):
        """SIGTERM with streams open: every stream ends and the server exits 0 within 5 s."""
        redis = RedisServer()
        srv = None
        clients = []
        try:
            srv = Tandemd(redis)
            convs = [new_conv("term%d" % i) for i in range(2)]
            for cv in convs:
                redis.cmd("XADD", msgs_key(cv), "*", "role", "customer", "text", "hello")
            for i in range(4):
                c = SSEClient(srv, convs[i % 2])
                clients.append(c)
                self.assertEqual(c.status, 200)
                c.read_until(lambda b: b.event == "summary", what="snapshot")
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            for c in clients:
                c.read_to_end(timeout=5 * SLOW)
                self.assertTrue(c.closed)
            rc = srv.wait_exit(5 * SLOW)
            self.assertEqual(rc, 0, srv.log_text()[-2000:])
            self.assertLess(time.monotonic() - t0, 5 * SLOW)
            srv.check(require_alive=False)
        finally:
            for c in clients:
                c.close()
            if srv:
                srv.close()
            redis.close()


if __name__ == "__main__":
    unittest.main()
