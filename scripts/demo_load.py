#!/usr/bin/env python3
"""Load the demo conversations (deploy/demo/conversations.json) into Redis in the schema of CONTRACT.md.

Python 3 standard library only: a tiny RESP client, so redis-cli is not needed.
Idempotent: every demo key is deleted and rewritten inside one MULTI/EXEC per conversation or
customer, so readers never see a half-written conversation. Times in the file are relative
(seconds or days before now), so the demo always looks recent.

  python3 scripts/demo_load.py                                   # $TANDEM_REDIS_URL or localhost:6379
  python3 scripts/demo_load.py --redis redis://127.0.0.1:6379/0
  python3 scripts/demo_load.py --ping --wait 10                  # wait until Redis answers PING
  python3 scripts/demo_load.py --add-message demo-refund customer "Any news?"
"""
import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.parse

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "tandem:"
ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ROLES = ("customer", "agent", "bot", "system", "note")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "deploy", "demo", "conversations.json")


class RedisError(Exception):
    """Redis answered with an error reply (as opposed to being unreachable)."""


class UsageError(Exception):
    """Bad URL, bad data file or bad arguments: a message for the user."""


def parse_url(url):
    """Returns a dict: kind ('tcp'|'unix'), host, port, path, db, user, password."""
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    user = urllib.parse.unquote(u.username) if u.username else None
    password = urllib.parse.unquote(u.password) if u.password is not None else None
    if user is not None and password is None:
        user, password = None, user  # redis://secret@host: a password only, as redis-cli reads it
    if user == "":
        user = None
    if u.scheme == "redis":
        try:
            host = u.hostname or "127.0.0.1"
            port = u.port or 6379
        except ValueError:
            raise UsageError("bad port in Redis URL; expected redis://[user:password@]host:port/db")
        db = u.path.strip("/") or q.get("db", ["0"])[0]
        target = {"kind": "tcp", "host": host, "port": port}
    elif u.scheme == "unix":
        if not u.path.startswith("/"):
            raise UsageError("unix Redis URL needs an absolute path: unix:///path/to/redis.sock")
        db = q.get("db", ["0"])[0]
        target = {"kind": "unix", "path": u.path}
    elif u.scheme == "redis-sentinel":
        raise UsageError("redis-sentinel:// is not supported here; point --redis at the master: "
                         "redis://host:port/db")
    else:
        raise UsageError("unsupported Redis URL %r; expected redis://[user:password@]host:port/db "
                         "or unix:///path" % mask_url(url))
    if not db.isdigit():
        raise UsageError("bad database number in Redis URL; expected a number, e.g. redis://host:6379/0")
    target.update(db=int(db), user=user, password=password)
    return target


def mask_url(url):
    """The URL with any password replaced by ***, for messages."""
    return re.sub(r"(//[^/@]*:)[^/@]*@", r"\1***@", url)


class Redis:
    """A minimal RESP2 client: one connection, commands as argv, pipelining."""

    def __init__(self, target, timeout):
        if target["kind"] == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = target["path"]
        else:
            infos = socket.getaddrinfo(target["host"], target["port"], 0, socket.SOCK_STREAM)
            fam, _, _, _, addr = infos[0]
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(addr)
        except OSError:
            self.sock.close()
            raise
        self.rf = self.sock.makefile("rb")
        if target["password"] is not None:
            if target["user"]:
                self.call("AUTH", target["user"], target["password"])
            else:
                self.call("AUTH", target["password"])
        if target["db"]:
            self.call("SELECT", str(target["db"]))

    def close(self):
        try:
            self.rf.close()
        finally:
            self.sock.close()

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def read_reply(self):
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed by Redis")
            return data[:-2].decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read_reply() for _ in range(n)]
        raise ConnectionError("unexpected reply from Redis (is this really a Redis server?)")

    def pipeline(self, commands):
        """Sends every command, then reads every reply. Error replies are returned, not raised."""
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read_reply() for _ in commands]

    def call(self, *args):
        r = self.pipeline([list(args)])[0]
        if isinstance(r, RedisError):
            raise r
        return r


def connect(url, timeout, wait):
    """Connects and PINGs, retrying for up to `wait` seconds. Raises UsageError with a clear reason."""
    target = parse_url(url)
    deadline = time.monotonic() + wait
    while True:
        try:
            r = Redis(target, timeout)
            try:
                if r.call("PING") != "PONG":
                    raise ConnectionError("unexpected answer to PING")
            except BaseException:
                r.close()
                raise
            return r
        except RedisError as e:
            # NOAUTH / WRONGPASS / LOADING: only LOADING is worth waiting for.
            if not str(e).startswith("LOADING") or time.monotonic() >= deadline:
                raise UsageError("Redis at %s refused: %s" % (mask_url(url), e))
        except (OSError, ConnectionError) as e:
            if time.monotonic() >= deadline:
                how = " within %gs" % wait if wait > 0 else ""
                raise UsageError("cannot reach Redis at %s%s: %s" % (mask_url(url), how, e))
        time.sleep(0.1)


def check_id(what, s):
    if not isinstance(s, str) or not ID_RE.match(s):
        raise UsageError("%s %r is not a valid id (1-128 of [A-Za-z0-9._-])" % (what, s))


def check_fields(what, d):
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in d.items()):
        raise UsageError("%s must be an object of string fields" % what)


def load_data(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror))
    except ValueError as e:
        raise UsageError("%s is not valid JSON: %s" % (path, e))
    customers = data.get("customers", {})
    convs = data.get("conversations", [])
    if not isinstance(customers, dict) or not isinstance(convs, list):
        raise UsageError("%s: expected {\"customers\": {...}, \"conversations\": [...]}" % path)
    for cid, c in customers.items():
        check_id("customer id", cid)
        check_fields("customers.%s.profile" % cid, c.get("profile", {}))
        for h in c.get("history", []):
            if not isinstance(h.get("ago_days"), (int, float)) or h["ago_days"] < 0:
                raise UsageError("customers.%s.history: every entry needs ago_days >= 0" % cid)
            check_fields("customers.%s.history entry" % cid,
                         {k: v for k, v in h.items() if k != "ago_days"})
    for c in convs:
        check_id("conversation id", c.get("id"))
        check_fields("conversation %s meta" % c["id"], c.get("meta", {}))
        cust = c.get("meta", {}).get("customer_id")
        if cust is not None:
            check_id("conversation %s customer_id" % c["id"], cust)
        if not c.get("messages"):
            raise UsageError("conversation %s has no messages" % c["id"])
        for m in c["messages"]:
            if m.get("role") not in ROLES or not isinstance(m.get("text"), str):
                raise UsageError("conversation %s: every message needs a role (%s) and a text"
                                 % (c["id"], ", ".join(ROLES)))
            if not isinstance(m.get("ago_s"), (int, float)) or m["ago_s"] < 0:
                raise UsageError("conversation %s: every message needs ago_s >= 0" % c["id"])
    return customers, convs


class StreamIds:
    """Explicit, strictly increasing stream ids from millisecond times."""

    def __init__(self):
        self.ms, self.seq = -1, 0

    def next(self, ms):
        if ms <= self.ms:
            self.seq += 1
        else:
            self.ms, self.seq = ms, 0
        return "%d-%d" % (self.ms, self.seq)


def key(prefix, kind, ident, suffix):
    # The braces are literal Redis Cluster hash tags (CONTRACT.md).
    return "%s%s:{%s}:%s" % (prefix, kind, ident, suffix)


def build_commands(customers, convs, prefix, now_ms):
    """Returns [(label, [command, ...])], one MULTI/EXEC block per customer and conversation."""
    blocks = []
    for cid, c in sorted(customers.items()):
        prof, hist = key(prefix, "cust", cid, "profile"), key(prefix, "cust", cid, "history")
        cmds = [["DEL", prof, hist]]
        if c.get("profile"):
            cmds.append(["HSET", prof] + [x for kv in sorted(c["profile"].items()) for x in kv])
        ids = StreamIds()
        for h in sorted(c.get("history", []), key=lambda h: -h["ago_days"]):
            ms = now_ms - int(h["ago_days"] * 86400000)
            fields = [x for k, v in h.items() if k != "ago_days" for x in (k, v)]
            cmds.append(["XADD", hist, ids.next(ms)] + fields)
        blocks.append(("customer " + cid, cmds))
    for c in convs:
        msgs, meta = key(prefix, "conv", c["id"], "msgs"), key(prefix, "conv", c["id"], "meta")
        cmds = [["DEL", msgs, meta]]
        if c.get("meta"):
            cmds.append(["HSET", meta] + [x for kv in sorted(c["meta"].items()) for x in kv])
        ids = StreamIds()
        for m in sorted(c["messages"], key=lambda m: -m["ago_s"]):
            ms = now_ms - int(m["ago_s"] * 1000)
            fields = ["role", m["role"], "text", m["text"], "ts", str(ms)]
            if m.get("author"):
                fields += ["author", m["author"]]
            cmds.append(["XADD", msgs, ids.next(ms)] + fields)
        blocks.append(("conversation " + c["id"], cmds))
    return blocks


def run_blocks(r, blocks):
    for label, cmds in blocks:
        replies = r.pipeline([["MULTI"]] + cmds + [["EXEC"]])
        bad = [x for x in replies if isinstance(x, RedisError)]
        if isinstance(replies[-1], list):
            bad += [x for x in replies[-1] if isinstance(x, RedisError)]
        if bad or replies[-1] is None:
            raise UsageError("writing %s failed: %s" % (label, bad[0] if bad else "transaction aborted"))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Load tandem's demo conversations into Redis.")
    ap.add_argument("--redis", default=os.environ.get("TANDEM_REDIS_URL") or DEFAULT_URL,
                    help="redis://[user:password@]host:port/db or unix:///path "
                         "(default: $TANDEM_REDIS_URL, else %s)" % DEFAULT_URL)
    ap.add_argument("--prefix", default=os.environ.get("TANDEM_REDIS_PREFIX") or DEFAULT_PREFIX,
                    help="key prefix (default: $TANDEM_REDIS_PREFIX, else %s)" % DEFAULT_PREFIX)
    ap.add_argument("--data", default=DEFAULT_DATA, help="the demo file (default: %(default)s)")
    ap.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="keep trying to reach Redis for this long (default: one try)")
    ap.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                    help="connect/command timeout (default: %(default)s)")
    ap.add_argument("--ping", action="store_true", help="only check that Redis answers PING")
    ap.add_argument("--dry-run", action="store_true", help="validate the file, print the keys, "
                    "do not connect")
    ap.add_argument("--add-message", nargs=3, metavar=("CONV_ID", "ROLE", "TEXT"),
                    help="append one message to a conversation (e.g. to see SSE events)")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.dry_run:
            customers, convs = load_data(a.data)
            for label, cmds in build_commands(customers, convs, a.prefix, int(time.time() * 1000)):
                print("%s: %s" % (label, " ".join(cmds[0][1:])))
            return 0
        if a.add_message:
            cid, role, text = a.add_message
            check_id("conversation id", cid)
            if role not in ROLES:
                raise UsageError("role must be one of %s" % ", ".join(ROLES))
        else:
            customers, convs = load_data(a.data) if not a.ping else ({}, [])
        r = connect(a.redis, a.timeout, a.wait)
        try:
            if a.ping:
                if not a.quiet:
                    print("Redis at %s answers PING" % mask_url(a.redis))
                return 0
            if a.add_message:
                msgs = key(a.prefix, "conv", cid, "msgs")
                if not r.call("EXISTS", msgs):
                    raise UsageError("conversation %s does not exist (no %s)" % (cid, msgs))
                eid = r.call("XADD", msgs, "*", "role", role, "text", text,
                             "ts", str(int(time.time() * 1000)))
                if not a.quiet:
                    print("added %s to %s" % (eid, msgs))
                return 0
            run_blocks(r, build_commands(customers, convs, a.prefix, int(time.time() * 1000)))
        finally:
            r.close()
        if not a.quiet:
            print("demo: loaded %d conversations (%s) and %d customers into %s, prefix %r"
                  % (len(convs), ", ".join(c["id"] for c in convs), len(customers),
                     mask_url(a.redis), a.prefix))
        return 0
    except (UsageError, RedisError) as e:
        print("demo_load: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as e:
        print("demo_load: Redis connection failed: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
