"""End-to-end tests of the embedded demo: scripts/run.sh (what `make run` calls) and
scripts/demo_load.py, with the real tandemd and a real redis-server."""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from harness import (REPO_ROOT, SLOW, RedisServer, binary_path, free_port, sanitizer_report,
                     wait_until)

RUN_SH = REPO_ROOT / "scripts" / "run.sh"
DEMO_LOAD = REPO_ROOT / "scripts" / "demo_load.py"
DEMO = json.loads((REPO_ROOT / "deploy" / "demo" / "conversations.json").read_text())
DAY_MS = 86400 * 1000


def processes_mentioning(text):
    """PIDs of live processes whose command line, working directory or environment
    mentions text (the demo's run directory): what an orphan of run.sh would look like."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # exited, only waiting to be reaped
            seen = []
            for name in ("cmdline", "environ"):
                with open("/proc/%s/%s" % (pid, name), "rb") as f:
                    seen.append(f.read().decode("utf-8", "replace"))
            seen.append(os.readlink("/proc/%s/cwd" % pid))
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if any(text in s for s in seen):
            found.append(int(pid))
    return found


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class DemoRun:
    """scripts/run.sh in the background with a private run directory and a free port."""

    def __init__(self, extra_env=None):
        # Short path: the Redis unix socket lives in it (sun_path is 108 bytes).
        self.dir = tempfile.mkdtemp(prefix="tdemo-", dir="/tmp")
        self.run_dir = os.path.join(self.dir, "run")
        self.port = free_port()
        self.out_path = os.path.join(self.dir, "run.out")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        env.update(TANDEMD=str(binary_path()), TANDEM_RUN_DIR=self.run_dir,
                   TANDEM_LISTEN="127.0.0.1:%d" % self.port,
                   TANDEM_RUN_TIMEOUT=str(int(20 * SLOW)))
        env.update(extra_env or {})
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(["bash", str(RUN_SH)], cwd=str(REPO_ROOT), env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=None):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("run.sh exited with %s:\n%s"
                                     % (self.proc.returncode, self.output()))
            return "Ctrl-C stops everything" in self.output()
        wait_until(ready, timeout or 30 * SLOW, interval=0.1, what="the demo banner")

    def close(self):
        """Safety net when a test failed half-way: stop the script and whatever it left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in processes_mentioning(self.run_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def http_get(url, token=None, timeout=5.0):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def requirements():
    if not shutil.which("redis-server"):
        raise unittest.SkipTest("redis-server is not installed")
    if not binary_path().exists():
        raise unittest.SkipTest("%s is not built" % binary_path())


class RunScriptTest(unittest.TestCase):
    """The whole demo: start, use what the banner says, Ctrl-C, nothing left behind."""

    @classmethod
    def setUpClass(cls):
        requirements()

    def setUp(self):
        self.demo = DemoRun()
        self.addCleanup(self.demo.close)

    def test_demo_serves_every_conversation_and_stops_cleanly_on_sigint(self):
        d = self.demo
        d.wait_ready()
        out = d.output()

        # The banner names the real address and the token, which is the 0600 token file's.
        m = re.search(r"^\s*token\s+(\S+)\s*$", out, re.M)
        self.assertIsNotNone(m, out)
        token = m.group(1)
        token_file = os.path.join(d.run_dir, "token")
        with open(token_file) as f:
            self.assertEqual(f.read().strip(), token)
        self.assertEqual(stat.S_IMODE(os.stat(token_file).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(d.run_dir).st_mode), 0o700)
        base = "http://127.0.0.1:%d" % d.port
        self.assertIn(base + "/healthz", out)

        pids = {}
        for name in ("redis", "tandemd"):
            with open(os.path.join(d.run_dir, name + ".pid")) as f:
                pids[name] = int(f.read())
            self.assertTrue(pid_alive(pids[name]), name)

        # Every demo conversation is served with what the demo file holds.
        now_ms = time.time() * 1000
        for conv in DEMO["conversations"]:
            status, body = http_get("%s/v1/conversations/%s/context" % (base, conv["id"]), token)
            self.assertEqual(status, 200, (conv["id"], body[:300]))
            ctx = json.loads(body)
            self.assertEqual(ctx["conversation_id"], conv["id"])
            self.assertEqual([(m["role"], m["text"]) for m in ctx["messages"]],
                             [(m["role"], m["text"]) for m in
                              sorted(conv["messages"], key=lambda m: -m["ago_s"])])
            for msg in ctx["messages"]:  # loaded relative to now: recent
                self.assertLess(abs(now_ms - msg["ts"]), 2 * 3600 * 1000, msg)
            self.assertEqual(ctx["meta"], conv["meta"])
            cid = conv["meta"]["customer_id"]
            cust = DEMO["customers"][cid]
            self.assertEqual(ctx["customer"]["profile"], cust["profile"])
            self.assertEqual(len(ctx["customer"]["history"]), len(cust["history"]))

        # The frustrated customer's earlier contacts are within the last 30 days.
        status, body = http_get(base + "/v1/conversations/demo-repeat/context", token)
        hist = json.loads(body)["customer"]["history"]
        self.assertGreaterEqual(len(hist), 2)
        for h in hist:
            self.assertLess(now_ms - h["ts"], 30 * DAY_MS, h)
        # The handoff starts with the bot.
        status, body = http_get(base + "/v1/conversations/demo-handoff/context", token)
        ctx = json.loads(body)
        self.assertEqual(ctx["messages"][0]["role"], "bot")
        self.assertEqual(ctx["meta"]["handoff_from_bot"], "1")

        # The token is really required, and a wrong one is refused.
        self.assertEqual(http_get(base + "/v1/conversations/demo-refund/context")[0], 401)
        self.assertEqual(http_get(base + "/v1/conversations/demo-refund/context", "x" * 64)[0], 401)

        # The printed curl commands work as pasted (quoting, port, token).
        if shutil.which("curl"):
            lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("curl -s ")]
            health = [ln for ln in lines if ln.endswith("/healthz")]
            context = [ln for ln in lines if "/context" in ln]
            self.assertTrue(health and context, out)
            for cmd in health + context:
                r = subprocess.run(shlex.split(cmd), capture_output=True, timeout=10 * SLOW)
                self.assertEqual(r.returncode, 0, cmd)
                doc = json.loads(r.stdout)
                self.assertTrue(doc.get("status") == "ok" or doc.get("messages"), (cmd, doc))

        # Ctrl-C: exit 0 and nothing left running.
        d.proc.send_signal(signal.SIGINT)
        rc = d.proc.wait(timeout=20 * SLOW)
        self.assertEqual(rc, 0, d.output()[-3000:])
        for name, pid in pids.items():
            self.assertFalse(pid_alive(pid), "%s (pid %d) still running" % (name, pid))
        self.assertEqual(processes_mentioning(d.run_dir), [], "orphans of run.sh")
        self.assertFalse(os.path.exists(os.path.join(d.run_dir, "tandemd.pid")))
        with open(os.path.join(d.run_dir, "tandemd.log"), errors="replace") as f:
            log = f.read()
        self.assertIsNone(sanitizer_report(log), log[-3000:])


class RunScriptFailureTest(unittest.TestCase):
    """run.sh refuses clearly and leaves nothing behind when it cannot start."""

    @classmethod
    def setUpClass(cls):
        requirements()

    def test_busy_port_is_reported(self):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            d = DemoRun({"TANDEM_LISTEN": "127.0.0.1:%d" % port})
            self.addCleanup(d.close)
            rc = d.proc.wait(timeout=20 * SLOW)
        self.assertNotEqual(rc, 0)
        self.assertRegex(d.output(), r"port %d .*already in use" % port)
        self.assertEqual(processes_mentioning(d.run_dir), [])

    def test_tandemd_failing_at_start_shows_its_log_and_stops_redis(self):
        d = DemoRun({"TANDEM_LOG_LEVEL": "chatty"})  # tandemd refuses a bad value
        self.addCleanup(d.close)
        rc = d.proc.wait(timeout=30 * SLOW)
        out = d.output()
        self.assertNotEqual(rc, 0, out)
        self.assertIn("TANDEM_LOG_LEVEL", out)  # tandemd's own message, shown by run.sh
        self.assertIn("exited during start-up", out)
        self.assertEqual(processes_mentioning(d.run_dir), [], out)


class DemoLoadTest(unittest.TestCase):
    """scripts/demo_load.py against a throw-away Redis: schema, idempotence, prefix."""

    @classmethod
    def setUpClass(cls):
        if not shutil.which("redis-server"):
            raise unittest.SkipTest("redis-server is not installed")
        cls.redis = RedisServer(password="s3cret pass")

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flush()

    def load(self, *args, env=None):
        url = "redis://:%s@127.0.0.1:%d/0" % ("s3cret%20pass", self.redis.port)
        e = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        e.update(env or {})
        return subprocess.run([sys.executable, str(DEMO_LOAD), "--redis", url, "-q"] + list(args),
                              capture_output=True, text=True, env=e, timeout=30)

    def test_load_is_idempotent_and_follows_the_schema(self):
        for _ in range(2):  # the second run replaces, never appends
            r = self.load()
            self.assertEqual(r.returncode, 0, r.stderr)
        now_ms = time.time() * 1000
        for conv in DEMO["conversations"]:
            key = "tandem:conv:{%s}:msgs" % conv["id"]
            self.assertEqual(self.redis.cmd("XLEN", key), len(conv["messages"]))
            entries = self.redis.cmd_str("XRANGE", key, "-", "+")
            for eid, fields in entries:
                f = dict(zip(fields[::2], fields[1::2]))
                self.assertIn(f["role"], ("customer", "agent", "bot", "system", "note"))
                self.assertEqual(int(f["ts"]), int(eid.split("-")[0]))
                self.assertLess(now_ms - int(f["ts"]), 2 * 3600 * 1000)
            meta = self.redis.cmd_str("HGETALL", "tandem:conv:{%s}:meta" % conv["id"])
            self.assertEqual(dict(zip(meta[::2], meta[1::2])), conv["meta"])
        for cid, cust in DEMO["customers"].items():
            hkey = "tandem:cust:{%s}:history" % cid
            self.assertEqual(self.redis.cmd("XLEN", hkey), len(cust["history"]))
            prof = self.redis.cmd_str("HGETALL", "tandem:cust:{%s}:profile" % cid)
            self.assertEqual(dict(zip(prof[::2], prof[1::2])), cust["profile"])

    def test_prefix_is_honoured(self):
        r = self.load(env={"TANDEM_REDIS_PREFIX": "acme:"})
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = self.redis.cmd_str("KEYS", "*")
        self.assertTrue(keys)
        self.assertTrue(all(k.startswith("acme:") for k in keys), keys)

    def test_add_message_appends_to_an_existing_conversation_only(self):
        self.assertEqual(self.load().returncode, 0)
        key = "tandem:conv:{demo-refund}:msgs"
        before = self.redis.cmd("XLEN", key)
        r = self.load("--add-message", "demo-refund", "customer", "Any news?")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.redis.cmd("XLEN", key), before + 1)
        r = self.load("--add-message", "no-such-conv", "customer", "hi")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("does not exist", r.stderr)
        self.assertEqual(self.redis.cmd("EXISTS", "tandem:conv:{no-such-conv}:msgs"), 0)

    def test_unreachable_redis_is_a_clear_error(self):
        port = free_port()
        r = subprocess.run([sys.executable, str(DEMO_LOAD), "--redis",
                            "redis://:pw@127.0.0.1:%d/0" % port], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach Redis", r.stderr)
        self.assertNotIn("pw@", r.stderr)  # the password is masked


if __name__ == "__main__":
    unittest.main()
