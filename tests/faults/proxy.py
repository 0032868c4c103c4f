"""A loopback TCP fault proxy for Redis (Python 3 standard library only).

Sits between tandemd and redis-server (``TANDEM_REDIS_URL=redis://127.0.0.1:<proxy.port>``)
and makes the faults a real server cannot be made to show on demand:

``latency``      seconds added before each chunk is forwarded (both directions)
``slice``        forward in 1-byte writes (TCP_NODELAY), so every reply arrives in pieces
``reset()``      closes every open connection with a TCP RST (SO_LINGER 0)
``refuse``       new connections are accepted and reset at once
``blackhole``    bytes from the client are read and dropped: nothing is forwarded or answered
``error_reply``  each complete RESP command is answered with this error line instead of
                 being forwarded, e.g. ``"LOADING Redis is loading the dataset in memory"``;
                 with ``error_match`` set (bytes), only commands containing it, e.g.
                 ``error_match = b"EVAL"`` and ``"READONLY You can't write against a read only
                 replica."`` for a master demoted under the client's feet
``drop_after_forward``  the next N commands (only those containing ``drop_match`` when it is
                 set, e.g. ``b"EVAL"``) are forwarded and the connection is then reset before
                 their replies come back: the write happened, the client saw an error

Settings apply at once, also to open connections, command by command. Counters:
``connections``, ``commands`` (forwarded), ``answered`` (error replies made up).

Use from a test::

    p = FaultProxy(redis.port)
    srv = Tandemd(None, env={"TANDEM_REDIS_URL": p.url})
    p.latency = 0.2; ...; p.latency = 0
    p.error_reply = "LOADING Redis is loading the dataset in memory"; ...; p.error_reply = None
    p.close()

or by hand: ``python3 tests/faults/proxy.py --upstream 127.0.0.1:6379 --listen 7000 --slice``.
Only loopback addresses are accepted on either side.
"""

import argparse
import socket
import struct
import threading
import time

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _split_commands(buf):
    """Splits complete RESP commands (multibulk or inline) off the front of buf.
    Returns (list of raw command bytes, rest)."""
    out = []
    while buf:
        if buf[:1] == b"*":
            end = buf.find(b"\r\n")
            if end < 0:
                break
            try:
                n = int(buf[1:end])
            except ValueError:
                out.append(buf)  # not RESP: pass it on as is
                return out, b""
            pos = end + 2
            complete = True
            for _ in range(max(n, 0)):
                if buf[pos:pos + 1] != b"$":
                    if pos >= len(buf):
                        complete = False
                        break
                    out.append(buf)
                    return out, b""
                e = buf.find(b"\r\n", pos)
                if e < 0:
                    complete = False
                    break
                ln = int(buf[pos + 1:e])
                pos = e + 2 + ln + 2
                if pos > len(buf):
                    complete = False
                    break
            if not complete:
                break
            out.append(buf[:pos])
            buf = buf[pos:]
        else:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            out.append(buf[:end + 2])
            buf = buf[end + 2:]
    return out, buf


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream_port, upstream_host="127.0.0.1", listen_port=0):
        if upstream_host not in _LOOPBACK:
            raise ValueError("the fault proxy only talks to loopback addresses")
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self.slice = False
        self.refuse = False
        self.blackhole = False
        self.error_reply = None
        self.error_match = None
        self.drop_after_forward = 0
        self.drop_match = None
        self.connections = 0
        self.commands = 0
        self.answered = 0
        self._lock = threading.Lock()
        self._pairs = set()
        self._doomed = set()  # pairs whose replies are lost (drop_after_forward)
        self._closed = False
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", listen_port))
        self._lsock.listen(128)
        self.port = self._lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def clear(self):
        """Back to a transparent proxy."""
        self.latency = 0.0
        self.slice = self.refuse = self.blackhole = False
        self.error_reply = None
        self.error_match = None
        self.drop_after_forward = 0
        self.drop_match = None

    def reset(self):
        """RSTs every open connection (both sides)."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for c, u in pairs:
            _rst_close(c)
            _rst_close(u)
        return len(pairs)

    def open_connections(self):
        with self._lock:
            return len(self._pairs)

    def close(self):
        self._closed = True
        try:
            self._lsock.close()
        except OSError:
            pass
        self.reset()

    # -- internals ---------------------------------------------------------------------------

    def _accept_loop(self):
        while not self._closed:
            try:
                c, _ = self._lsock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            if self.refuse:
                _rst_close(c)
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=2)
                u.settimeout(None)
            except OSError:
                _rst_close(c)
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (c, u)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._client_to_server, args=(pair,), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(pair,), daemon=True).start()

    def _send(self, sock, data):
        if self.latency:
            time.sleep(self.latency)
        if self.slice:
            for i in range(len(data)):
                sock.sendall(data[i:i + 1])
        else:
            sock.sendall(data)

    def _drop(self, pair):
        with self._lock:
            self._pairs.discard(pair)
        _rst_close(pair[0])
        _rst_close(pair[1])
        with self._lock:  # closed first: nothing more can be forwarded on it
            self._doomed.discard(pair)

    def _client_to_server(self, pair):
        c, u = pair
        buf = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                if self.blackhole:
                    continue
                buf += chunk
                cmds, buf = _split_commands(buf)
                for cmd in cmds:
                    err = self.error_reply
                    if err and (self.error_match is None or self.error_match in cmd):
                        with self._lock:
                            self.answered += 1
                        self._send(c, b"-" + err.encode() + b"\r\n")
                        continue
                    # decided (and counted) before forwarding: the reply may be back before this
                    # thread runs again, and from here on none reaches the client
                    with self._lock:
                        self.commands += 1
                        drop = self.drop_after_forward > 0 and (
                            self.drop_match is None or self.drop_match in cmd)
                        if drop:
                            self.drop_after_forward -= 1
                            self._doomed.add(pair)
                    self._send(u, cmd)
                    if drop:
                        time.sleep(0.05)  # let Redis execute it, then lose the reply
                        self._drop(pair)
                        return
        except OSError:
            pass
        self._drop(pair)

    def _server_to_client(self, pair):
        c, u = pair
        try:
            while True:
                chunk = u.recv(65536)
                if not chunk:
                    break
                with self._lock:
                    doomed = pair in self._doomed
                if not doomed:
                    self._send(c, chunk)
        except OSError:
            pass
        self._drop(pair)


def main():
    ap = argparse.ArgumentParser(description="Loopback fault proxy for Redis")
    ap.add_argument("--upstream", default="127.0.0.1:6379", help="host:port of redis-server")
    ap.add_argument("--listen", type=int, default=0, help="port to listen on (127.0.0.1)")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--slice", action="store_true", help="forward in 1-byte writes")
    ap.add_argument("--error-reply", default=None, help="answer every command with this error")
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    p = FaultProxy(int(port), host, a.listen)
    p.latency = a.latency_ms / 1000.0
    p.slice = a.slice
    p.error_reply = a.error_reply
    print("fault proxy on 127.0.0.1:%d -> %s (Ctrl-C stops)" % (p.port, a.upstream), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        p.close()


if __name__ == "__main__":
    main()
