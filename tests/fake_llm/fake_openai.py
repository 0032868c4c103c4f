#!/usr/bin/env python3
"""Fake OpenAI-compatible chat-completions server for tandem's LLM tests (Python stdlib only).

Speaks the protocol the way real servers do: POST /v1/chat/completions with "stream": true answers
text/event-stream in HTTP/1.1 chunked encoding (`data: {chunk}` events, then `data: [DONE]`);
without stream it answers one chat.completion JSON object; GET /v1/models lists one model.

Failure modes are picked per request, first match wins:
  1. the model name "fake/<mode>" (e.g. "fake/stall:300"),
  2. the next entry of the control script (POST /_control {"script": ["500", "normal"]}),
  3. the control default (POST /_control {"default": "slow_first_byte:200"}), else "normal".

Modes (":arg" optional):
  normal                 the answer, streamed in small pieces
  slow_first_byte:MS     wait MS before the status line (default 1000)
  stall:MS               send a few events, go silent for MS (default 3000), then drop the connection
  429:SECS               429 with Retry-After: SECS (default 1; "date" sends an HTTP-date)
  500 / 503 / 401 / 408  that status with an OpenAI-style error body
  malformed              a 200 stream whose second event is broken JSON
  truncated              half the stream bytes, then the connection is dropped mid-event
  no_done                ends with finish_reason "stop" but never sends [DONE]
  done_then_hang:MS      sends [DONE] but keeps the response open for MS (default 3000)
  error_event            a 200 stream carrying {"error": {...}}
  inject                 a suggestion that tries to inject an SSE event ("\\n\\nevent: alert\\ndata: ...")
  leak_card              a suggestion that contains a valid card number
  bad_url                a suggestion with a link that was never in the prompt
  fence                  the JSON answer wrapped in a ```json fence
  strings                {"suggestions": ["...", "..."]}
  not_json               plain prose instead of JSON
  nonstream              answers one JSON object even when "stream": true was asked
  crlf                   SSE lines end in \\r\\n
  keepalive              ": keep-alive" comments between events
  fragment               the stream written 3 bytes at a time (splits inside UTF-8 and CRLF)
  huge:BYTES             an answer of BYTES bytes (default 2 MiB)
  hang                   never answers (sleeps 30 s)

Control endpoints (no auth): POST /_control {"default", "script", "reply", "chunk"}; POST /_reset;
GET /_prompts -> {"prompts": [{"auth": header or null, "model", "stream", "body": raw text}]};
GET /_stats -> {"requests": N, "modes": [...]}.
"--require-key KEY" answers 401 unless "Authorization: Bearer KEY" is sent.
On start it prints "PORT <n> PID <pid>" on stdout (use --port 0 for a free port). With
--exit-on-stdin-eof it exits when its stdin closes, so a test that dies cannot leave it behind.
"""
import argparse
import email.utils
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"default": "normal", "script": [], "reply": None, "chunk": 8, "prompts": [], "requests": 0, "modes": []}
REQUIRE_KEY = None
MAX_RECORDED = 1000


def pick_mode(model):
    with LOCK:
        STATE["requests"] += 1
        if isinstance(model, str) and model.startswith("fake/"):
            mode = model[5:]
        elif STATE["script"]:
            mode = STATE["script"].pop(0)
        else:
            mode = STATE["default"]
        STATE["modes"].append(mode)
        return mode


def split_mode(mode):
    name, _, arg = mode.partition(":")
    return name, arg


def default_reply(req, name):
    """The answer content: k options grounded on the first kb_id seen in the prompt."""
    user = ""
    for m in req.get("messages", []):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            user = m["content"]
    k = 3
    mk = re.search(r"Draft (\d+) reply option", user)
    if mk:
        k = max(1, min(10, int(mk.group(1))))
    kb_ids = re.findall(r'"kb_id":"([^"\\]+)"', user)
    texts = [
        "Thanks for your patience — I'm looking into this for you right now.",
        "I'm sorry about the trouble. Could you confirm the order number so I can check it?",
        "Thank you for reaching out! Here is what happens next: we review it within 2 days.",
        "Tack för att du väntade — jag kollar det direkt.",
    ]
    items = []
    for i in range(k):
        t = texts[i % len(texts)] + ("" if i < len(texts) else " (%d)" % (i + 1))
        item = {"text": t}
        if i == 0 and kb_ids:
            item["kb_id"] = kb_ids[0]
        items.append(item)
    if name == "inject":
        items[0]["text"] = 'Sure.\n\nevent: alert\ndata: {"type":"fraud","text":"pwned"}\n\n'
    elif name == "leak_card":
        items[0]["text"] = "I can see the card 4111 1111 1111 1111 on your account."
    elif name == "bad_url":
        items[0]["text"] = "Please log in at https://evil.example.net/login to confirm."
    if name == "strings":
        return json.dumps({"suggestions": [it["text"] for it in items]}, ensure_ascii=False)
    content = json.dumps({"suggestions": items}, ensure_ascii=False)
    if name == "fence":
        return "```json\n" + content + "\n```"
    if name == "not_json":
        return "Here are some replies you could send: thank the customer and apologise."
    return content


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1"

    def log_message(self, fmt, *args):  # quiet: tests read stdout
        pass

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- helpers ---------------------------------------------------------------
    def send_json(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_error_json(self, status, message, typ, extra=None):
        self.send_json(status, {"error": {"message": message, "type": typ, "param": None, "code": None}}, extra)

    def chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self):
        """Closes the socket without finishing the response (a crashed or cut upstream)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    # -- routes ----------------------------------------------------------------
    def do_GET(self):
        if self.path == "/v1/models":
            return self.send_json(200, {"object": "list", "data": [
                {"id": "fake", "object": "model", "created": 0, "owned_by": "tandem-tests"}]})
        if self.path == "/_prompts":
            with LOCK:
                return self.send_json(200, {"prompts": list(STATE["prompts"])})
        if self.path == "/_stats":
            with LOCK:
                return self.send_json(200, {"requests": STATE["requests"], "modes": list(STATE["modes"])})
        self.send_error_json(404, "not found", "invalid_request_error")

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/_control":
            try:
                ctl = json.loads(raw or b"{}")
            except ValueError:
                return self.send_error_json(400, "bad control JSON", "invalid_request_error")
            with LOCK:
                for key in ("default", "script", "reply", "chunk"):
                    if key in ctl:
                        STATE[key] = list(ctl[key]) if key == "script" else ctl[key]
            return self.send_json(200, {"ok": True})
        if self.path == "/_reset":
            with LOCK:
                STATE.update({"default": "normal", "script": [], "reply": None, "chunk": 8, "prompts": [],
                              "requests": 0, "modes": []})
            return self.send_json(200, {"ok": True})
        if self.path != "/v1/chat/completions":
            return self.send_error_json(404, "not found", "invalid_request_error")
        text = raw.decode("utf-8", "replace")
        try:
            req = json.loads(raw)
            if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
                raise ValueError("messages")
        except ValueError:
            return self.send_error_json(400, "could not parse the JSON body", "invalid_request_error")
        auth = self.headers.get("Authorization")
        with LOCK:
            STATE["prompts"].append({"auth": auth, "model": req.get("model"), "stream": req.get("stream"),
                                     "path": self.path, "body": text})
            del STATE["prompts"][:-MAX_RECORDED]
        if REQUIRE_KEY is not None and auth != "Bearer " + REQUIRE_KEY:
            return self.send_error_json(401, "Incorrect API key provided", "invalid_request_error")
        mode = pick_mode(req.get("model"))
        try:
            self.answer(req, mode)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def answer(self, req, mode):
        name, arg = split_mode(mode)
        if name == "hang":
            time.sleep(30)
            return self.drop()
        if name == "slow_first_byte":
            time.sleep(int(arg or 1000) / 1000.0)
        if name == "429":
            ra = email.utils.formatdate(time.time() + 60, usegmt=True) if arg == "date" else (arg or "1")
            return self.send_error_json(429, "Rate limit reached for requests", "requests", {"Retry-After": ra})
        if name in ("500", "503", "401", "408"):
            return self.send_error_json(int(name), "The server had an error while processing your request.",
                                        "server_error" if name[0] == "5" else "invalid_request_error")
        with LOCK:
            content = STATE["reply"] if STATE["reply"] is not None else default_reply(req, name)
            piece = max(1, int(STATE["chunk"]))
        if name == "huge":
            content = "x" * int(arg or 2 * 1024 * 1024)
            piece = 65536
        model = req.get("model") or "fake"
        created = int(time.time())
        if not req.get("stream") or name == "nonstream":
            if name == "malformed":
                return self.send_json(200, {"id": "chatcmpl-fake", "choices": "nope"})
            return self.send_json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}})
        nl = b"\r\n" if name == "crlf" else b"\n"

        def event(delta, finish=None):
            obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": None,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + nl + nl

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": content[i:i + piece]}) for i in range(0, len(content), piece)]
        if name == "malformed":
            events.insert(2, b'data: {"choices":[{"delta":{"content":"oops"}' + nl + nl)
        if name == "error_event":
            events = [events[0], b'data: {"error":{"message":"model overloaded","type":"server_error"}}' + nl + nl]
        events.append(event({}, "stop"))
        if name != "no_done":
            events.append(b"data: [DONE]" + nl + nl)
        if name == "keepalive":
            events = [e for ev in events for e in (b": keep-alive" + nl + nl, ev)]

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        stream = b"".join(events)
        if name == "truncated":
            self.chunk(stream[:len(stream) // 2])
            return self.drop()
        if name == "stall":
            self.chunk(b"".join(events[:3]))
            time.sleep(int(arg or 3000) / 1000.0)
            return self.drop()
        if name == "fragment":
            for i in range(0, len(stream), 3):
                self.chunk(stream[i:i + 3])
                if i % 6 == 0:
                    time.sleep(0.0002)  # let the pieces arrive as separate reads
            return self.end_chunks()
        if name == "done_then_hang":
            self.chunk(stream)
            time.sleep(int(arg or 3000) / 1000.0)
            return self.end_chunks()
        for ev in events:
            self.chunk(ev)
        self.end_chunks()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gives up (timeouts, cancels) is normal here, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main():
    global REQUIRE_KEY
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--require-key", default=None)
    ap.add_argument("--default-mode", default="normal")
    ap.add_argument("--exit-on-stdin-eof", action="store_true")
    a = ap.parse_args()
    REQUIRE_KEY = a.require_key
    STATE["default"] = a.default_mode
    srv = Server((a.host, a.port), Handler)
    if a.exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    print("PORT %d PID %d" % (srv.server_address[1], os.getpid()), flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
