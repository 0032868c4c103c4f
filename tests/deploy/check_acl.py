#!/usr/bin/env python3
"""The least-privilege Redis user of deploy/k8s/redis/users.acl against what tandem really does.

1. Static: the Redis commands tandem's sources send (argv arrays, ARG("…") macros and the
   redis.call('…') of its Lua scripts, in the src/*.c files that talk to Redis) must be exactly
   the commands the ACL allows: a missing one breaks tandem in production, an extra one is more
   privilege than it needs. Names are confirmed against COMMAND LIST of the real redis-server.
2. Live: redis-server loads the ACL file; tandemd (build/tandemd, with the environment of
   deploy/k8s/configmap.yaml and the KB of deploy/k8s/kb/, laid out as kubelet mounts a
   ConfigMap: symlinks into ..data) logs in as that user and every
   endpoint that touches Redis is exercised (context, suggestions twice, summary, feedback twice,
   transcripts, focus, quality, events with a new message arriving). No request may fail with a
   5xx and Redis' ACL LOG must stay empty, so key patterns are proven too, not only commands.

Usage: check_acl.py TANDEMD CONFIG_ENV_JSON      (tests/deploy/run.sh calls it)
Prints one line per check and "N passed, N failed".
"""
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ACL_FILE = os.path.join(ROOT, "deploy", "k8s", "redis", "users.acl")
# Sent on every connection and allowed to every user by Redis itself, or sent to Sentinel (which
# has its own users), not to the data Redis.
NOT_IN_DATA_ACL = {"auth", "hello", "sentinel"}

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cli(port, *args, user=None, password=None):
    cmd = ["redis-cli", "-p", str(port)]
    if user:
        cmd += ["--user", user, "--pass", password, "--no-auth-warning"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10).stdout


# ---- static ------------------------------------------------------------------------------------

def acl_rules():
    lines = [ln for ln in open(ACL_FILE, encoding="utf-8").read().splitlines() if ln.strip()]
    check("users.acl has exactly one line, for user tandem", len(lines) == 1 and lines[0].startswith("user tandem "))
    allowed, selectors = set(), []
    # selectors "( … )" are separate permission sets; the commands they add count as allowed
    for sel in re.findall(r"\(([^)]*)\)", lines[0]):
        selectors.append(sel)
    for tok in re.sub(r"\([^)]*\)", " ", lines[0]).split() + " ".join(selectors).split():
        if tok.startswith("+") and not tok.startswith("+@"):
            allowed.add(tok[1:].lower())
    check("users.acl denies all commands first (-@all) and all channels (resetchannels)",
          "-@all" in lines[0].split() and "resetchannels" in lines[0].split())
    check("users.acl has no +@category grants (every command named)", "+@" not in lines[0])
    check("users.acl grants no keys outside the tandem: prefix",
          all(re.match(r"^(%R|%W|%RW)?~tandem:", t) for t in re.findall(r"\S*~\S+", lines[0])))
    return lines[0], allowed


def used_commands(known):
    """Redis commands in the sources that talk to Redis, with CLIENT subcommands as client|x."""
    used = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "src"))):
        if not name.endswith(".c"):
            continue
        path = os.path.join(ROOT, "src", name)
        src = open(path, encoding="utf-8").read()
        if not re.search(r"store_command|store_pipeline|redisCommandArgv|redisAppendCommandArgv", src):
            continue
        found = []
        # first element of an argv initializer: {"XREVRANGE", key, ...} / {"CLIENT", "ID"}
        found += re.findall(r'\{\s*"([A-Z]+)"(?:\s*,\s*"([A-Z]+)")?', src)
        # argv[0] = "RPUSH"; av[argc++] = "EVAL"; ARG("EVAL")
        found += [(m, "") for m in re.findall(r'\]\s*=\s*"([A-Z]+)"', src)]
        found += [(m, "") for m in re.findall(r'\bARG\("([A-Z]+)"\)', src)]
        # Lua: redis.call('HSET', ...) / redis.pcall
        found += [(m, "") for m in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", src)]
        for cmd, sub in found:
            c = cmd.lower()
            if c not in known or c in NOT_IN_DATA_ACL:
                continue  # an argument keyword (COUNT, BLOCK, EX, NX...) or not for this ACL
            key = f"{c}|{sub.lower()}" if c == "client" and sub else c
            used.setdefault(key, set()).add(name)
    return used


def static_checks(port):
    line, allowed = acl_rules()
    known = set(x.strip().lower() for x in redis_cli(port, "COMMAND", "LIST").split())
    if not check("COMMAND LIST of the redis-server answered", len(known) > 100, f"{len(known)} names"):
        return line
    used = used_commands(known)
    check("found the commands tandem sends (sanity: PING, XREVRANGE, EVAL among them)",
          {"ping", "xrevrange", "eval"} <= set(used), ", ".join(sorted(used)))
    for c in sorted(used):
        check(f"tandem sends {c.upper()} ({', '.join(sorted(used[c]))}): the ACL allows it", c in allowed,
              f"add +{c} to deploy/k8s/redis/users.acl")
    for c in sorted(allowed - set(used)):
        check(f"the ACL allows {c.upper()}: tandem sends it", False,
              "no source sends it: remove it from deploy/k8s/redis/users.acl (least privilege)")
    return line


# ---- live ----------------------------------------------------------------------------------------

class Tandem:
    def __init__(self, port, token):
        self.port, self.token = port, token

    def req(self, method, path, body=None, ctype="application/json", auth=True):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = {"Host": f"localhost:{self.port}"}
        if auth:
            h["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            h["Content-Type"] = ctype
            body = body if isinstance(body, bytes) else json.dumps(body).encode()
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data


def sse_event_after(t, conv, trigger, timeout=5.0):
    """Opens the events stream, runs trigger(), returns the first 'event:' name seen after it."""
    s = socket.create_connection(("127.0.0.1", t.port), timeout=timeout)
    s.sendall((f"GET /v1/conversations/{conv}/events HTTP/1.1\r\nHost: localhost:{t.port}\r\n"
               f"Authorization: Bearer {t.token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    buf = b""
    deadline = time.time() + timeout
    triggered = False
    names = []
    try:
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
            if not triggered and b"\r\n\r\n" in buf:
                # the first snapshot (if any) is not what we wait for: clear and trigger
                time.sleep(0.3)
                buf = b""
                trigger()
                triggered = True
                continue
            if triggered:
                names += re.findall(rb"^event: (\w+)", buf, re.M)
                if names:
                    break
    finally:
        s.close()
    return names[0].decode() if names else None


def live_checks(tandemd, env_json, acl_line):
    tmp = tempfile.mkdtemp(prefix="tandem-acl-")
    procs = []
    try:
        rport, tport = free_port(), free_port()
        pw = secrets.token_hex(16)
        digest = hashlib.sha256(pw.encode()).hexdigest()
        with open(os.path.join(tmp, "users.acl"), "w", encoding="utf-8") as f:
            f.write("user default on nopass ~* &* +@all\n")
            f.write(re.sub(r"#[0-9a-f]{64}", "#" + digest, acl_line) + "\n")
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp, "--aclfile", os.path.join(tmp, "users.acl"),
                                  "--logfile", os.path.join(tmp, "redis.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(redis)
        for _ in range(100):
            if redis_cli(rport, "PING").strip() == "PONG":
                break
            time.sleep(0.05)
        if not check("redis-server loads users.acl (with a real password hash)",
                     redis_cli(rport, "PING").strip() == "PONG"):
            return
        static_checks(rport)

        # a conversation and a customer, as a connector writes them (admin user)
        redis_cli(rport, "XADD", "tandem:conv:{acl-1}:msgs", "*", "role", "customer",
                  "text", "Hi, I was charged twice for my order. Where is my refund?")
        redis_cli(rport, "HSET", "tandem:conv:{acl-1}:meta", "customer_id", "cust-1", "lang", "en")
        redis_cli(rport, "HSET", "tandem:cust:{cust-1}:profile", "name", "Anna Example")
        redis_cli(rport, "XADD", "tandem:cust:{cust-1}:history", "*", "conv_id", "old-1",
                  "summary", "asked about a refund", "outcome", "solved", "tags", "refund")

        # The KB directory laid out the way kubelet mounts a ConfigMap (atomic writer): each key
        # a symlink into ..data, which links to a timestamped directory.
        kb = os.path.join(tmp, "kb")
        stamp = os.path.join(kb, "..2025_01_01_00_00_00.000000000")
        os.makedirs(stamp)
        src_kb = os.path.join(ROOT, "deploy", "k8s", "kb")
        for name in os.listdir(src_kb):
            shutil.copy(os.path.join(src_kb, name), os.path.join(stamp, name))
            os.symlink(os.path.join("..data", name), os.path.join(kb, name))
        os.symlink(os.path.basename(stamp), os.path.join(kb, "..data"))

        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        env.update(json.load(open(env_json, encoding="utf-8")))
        token = secrets.token_hex(32)
        env.update({"TANDEM_LISTEN": f"127.0.0.1:{tport}", "TANDEM_TOKEN": token,
                    "TANDEM_REDIS_URL": f"redis://tandem:{pw}@127.0.0.1:{rport}/0",
                    "TANDEM_KB": kb})
        env.pop("TANDEM_TOKEN_FILE", None)
        log = open(os.path.join(tmp, "tandemd.log"), "w", encoding="utf-8")
        td = subprocess.Popen([tandemd], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(td)
        t = Tandem(tport, token)
        st = 0
        for _ in range(100):
            try:
                st, _ = t.req("GET", "/readyz", auth=False)
                if st == 200:
                    break
            except OSError:
                pass
            if td.poll() is not None:
                break
            time.sleep(0.05)
        check("tandemd starts with deploy/k8s's ConfigMap environment and KB (ConfigMap layout), as the ACL user; /readyz 200",
              st == 200, f"status {st}, exit {td.poll()}: " + open(log.name, encoding="utf-8").read()[-600:])
        if st != 200:
            return
        want = sum(1 for n in os.listdir(src_kb) if n.endswith(".jsonl")
                   for ln in open(os.path.join(src_kb, n), encoding="utf-8") if ln.strip())
        m = re.search(r'"msg":"kb_loaded","entries":(\d+)', open(log.name, encoding="utf-8").read())
        check(f"the KB was read through the symlinks ({want} entries)", m is not None and int(m.group(1)) == want,
              m.group(0) if m else "no kb_loaded log line")

        def ok(name, method, path, body=None, ctype="application/json", want=(200,)):
            status, data = t.req(method, path, body, ctype)
            check(f"{method} {path.split('?')[0]} -> {status}", status in want, data[:300].decode("utf-8", "replace"))
            return status, data

        ok("context", "GET", "/v1/conversations/acl-1/context")
        _, data = ok("suggestions", "GET", "/v1/conversations/acl-1/suggestions?k=3")
        ok("suggestions (cached)", "GET", "/v1/conversations/acl-1/suggestions?k=3")
        ok("summary", "GET", "/v1/conversations/acl-1/summary")
        try:
            sid = json.loads(data)["suggestions"][0]["id"]
        except (ValueError, KeyError, IndexError):
            sid = None
        if check("suggestions came back (needed for feedback)", sid is not None, data[:200].decode("utf-8", "replace")):
            fb = {"action": "edited", "final_text": "Hi Anna, your refund is on its way.",
                  "agent_id": "agent-1", "feedback_id": "fb-acl-1"}
            ok("feedback", "POST", f"/v1/suggestions/{sid}/feedback", fb, want=(200, 201, 202))
            ok("feedback repeated", "POST", f"/v1/suggestions/{sid}/feedback", fb, want=(200, 201, 202))
        ok("focus put", "PUT", "/v1/focus", {"conversation_id": "acl-1"}, want=(200, 204))
        ok("focus suggestion", "GET", "/v1/focus/suggestions/1?format=text")
        nd = json.dumps({"id": "t-acl", "messages": [
            {"role": "customer", "text": "My card was charged twice"},
            {"role": "agent", "text": "Sorry about that, the second charge is a pending authorisation."}]}) + "\n"
        ok("transcripts", "POST", "/v1/transcripts", nd.encode(), "application/x-ndjson")
        ok("quality", "GET", "/v1/quality", want=(200, 404))
        ok("metrics", "GET", "/metrics")
        ev = sse_event_after(t, "acl-1", lambda: redis_cli(
            rport, "XADD", "tandem:conv:{acl-1}:msgs", "*", "role", "customer", "text", "Any news on the refund?"))
        check("events: a new message pushes an event (XREAD, CLIENT ID/UNBLOCK as the ACL user)",
              ev is not None, "no event within 5 s")
        time.sleep(0.3)
        acl_log = redis_cli(rport, "ACL", "LOG")
        check("Redis' ACL LOG is empty: no command or key was refused", acl_log.strip() == "",
              " ".join(acl_log.split())[:600])
        td.terminate()
        try:
            rc = td.wait(10)
        except subprocess.TimeoutExpired:
            td.kill()
            rc = td.wait()
        check("tandemd exits 0 on SIGTERM", rc == 0, f"exit {rc}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if os.environ.get("TANDEM_KEEP_TMP") == "1":
            print(f"# logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-2])
        return 2
    acl_line = open(ACL_FILE, encoding="utf-8").read().strip()
    live_checks(os.path.abspath(sys.argv[1]), sys.argv[2], acl_line)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
