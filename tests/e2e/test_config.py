"""Configuration: env vars and --flags, bad values (exit 2), --help/--version/--print-config,
the token (env, file, generated), log format/level, Redis URL forms."""

import json
import os
import re
import socket
import stat
import tempfile
import shutil
import unittest

from harness import (REPO_ROOT, RedisServer, RespClient, SentinelServer, Tandemd, free_port,
                     port_is_open, run_tandemd)


def ok_env(**extra):
    env = {"TANDEM_TOKEN": "t0ken-for-config-tests",
           "TANDEM_REDIS_URL": "redis://127.0.0.1:%d/0" % free_port(),
           "TANDEM_LISTEN": "127.0.0.1:%d" % free_port()}
    env.update(extra)
    return env


def read(path):
    with open(path) as f:
        return f.read().strip()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class BadValueTest(unittest.TestCase):
    # (variable, bad value, a word the "accepted form" part of the message must contain)
    CASES = [
        ("TANDEM_LISTEN", "nonsense", "port"),
        ("TANDEM_LISTEN", "127.0.0.1:99999", "port"),
        ("TANDEM_LISTEN", "127.0.0.1:abc", "port"),
        ("TANDEM_LISTEN", "127.0.0.1:", "port"),
        ("TANDEM_LISTEN", "999.1.1.1:8080", "port"),
        ("TANDEM_REDIS_URL", "http://127.0.0.1:6379", "redis://"),
        ("TANDEM_REDIS_URL", "redis://127.0.0.1:notaport/0", "redis://"),
        ("TANDEM_REDIS_URL", "redis://127.0.0.1:6379/abc", "redis://"),
        ("TANDEM_REDIS_URL", "redis://127.0.0.1:70000/0", "redis://"),
        ("TANDEM_REDIS_URL", "unix://relative/path.sock", "unix://"),
        ("TANDEM_REDIS_URL", "redis-sentinel://127.0.0.1:26379", "redis-sentinel://"),
        ("TANDEM_LOG_LEVEL", "loud", "debug"),
        ("TANDEM_LOG_FORMAT", "xml", "json"),
        ("TANDEM_MAX_BODY", "abc", None),
        ("TANDEM_MAX_BODY", "-1", None),
        ("TANDEM_MAX_BODY", "99999999999999999999999", None),
        ("TANDEM_MAX_BODY", "12abc", None),
        ("TANDEM_LLM_TIMEOUT_MS", "soon", None),
        ("TANDEM_LLM_TIMEOUT_MS", "-5", None),
        ("TANDEM_LLM_URL", "ftp://models.example/v1", None),
        ("TANDEM_TOKEN_FILE", "/nonexistent/tandem/token", None),
    ]

    def test_bad_env_values(self):
        for var, value, hint in self.CASES:
            with self.subTest(var=var, value=value):
                env = ok_env(**{var: value})
                if var == "TANDEM_TOKEN_FILE":
                    env["TANDEM_TOKEN"] = None
                cp = run_tandemd([], env=env)
                self.assertEqual(cp.returncode, 2, "exit %s; stderr: %s" % (cp.returncode, cp.stderr))
                self.assertIn(var, cp.stderr)
                if hint:
                    self.assertIn(hint.lower(), cp.stderr.lower(),
                                  "message does not show the accepted form: %s" % cp.stderr)

    def test_bad_flag_values(self):
        for args in (["--listen", "nonsense"], ["--listen=nonsense"], ["--log-level=loud"],
                     ["--redis-url", "http://x"], ["--max-body=abc"]):
            with self.subTest(args=args):
                cp = run_tandemd(args, env=ok_env())
                self.assertEqual(cp.returncode, 2, "exit %s; stderr: %s" % (cp.returncode, cp.stderr))
                flag = args[0].split("=")[0]
                var = "TANDEM_" + flag[2:].upper().replace("-", "_")
                self.assertTrue(var in cp.stderr or flag in cp.stderr, cp.stderr)

    def test_unknown_flag(self):
        cp = run_tandemd(["--no-such-flag"], env=ok_env())
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("--no-such-flag", cp.stderr)

    def test_token_and_token_file_together(self):
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("from-file-token\n")
        try:
            os.chmod(f.name, 0o600)
            cp = run_tandemd([], env=ok_env(TANDEM_TOKEN_FILE=f.name))
            self.assertEqual(cp.returncode, 2, cp.stderr)
            self.assertIn("TANDEM_TOKEN", cp.stderr)
        finally:
            os.unlink(f.name)


class InfoFlagsTest(unittest.TestCase):

    def test_help(self):
        cp = run_tandemd(["--help"], env=ok_env())
        self.assertEqual(cp.returncode, 0, cp.stderr)
        out = cp.stdout + cp.stderr
        self.assertTrue("TANDEM_LISTEN" in out or "--listen" in out, out)
        self.assertTrue("TANDEM_REDIS_URL" in out or "--redis-url" in out, out)

    def test_version(self):
        cp = run_tandemd(["--version"], env=ok_env())
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn((REPO_ROOT / "VERSION").read_text().strip(), cp.stdout)

    def test_help_does_not_need_valid_config(self):
        cp = run_tandemd(["--help"], env={"TANDEM_LISTEN": None, "TANDEM_TOKEN": None})
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def parse_config(self, out):
        cfg = {}
        for line in out.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            m = re.match(r"^(TANDEM_[A-Z0-9_]+)=(.*)$", line)
            self.assertIsNotNone(m, "not a TANDEM_X=value line: %r" % line)
            cfg[m.group(1)] = m.group(2)
        return cfg

    def test_print_config_masks_secrets(self):
        secrets_ = ["tok-SECRET-1234567890", "sk-LLMSECRET-abcdef", "redisPW-SECRET-xyz"]
        rport = free_port()
        env = {"TANDEM_TOKEN": secrets_[0], "TANDEM_LLM_API_KEY": secrets_[1],
               "TANDEM_LLM_URL": "http://127.0.0.1:9/v1", "TANDEM_LLM_MODEL": "m",
               "TANDEM_REDIS_URL": "redis://tandem:%s@127.0.0.1:%d/2" % (secrets_[2], rport),
               "TANDEM_REDIS_PREFIX": "acme:", "TANDEM_LISTEN": "127.0.0.1:%d" % free_port(),
               "TANDEM_LOG_LEVEL": "debug"}
        cp = run_tandemd(["--print-config"], env=env)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        for s in secrets_:
            self.assertNotIn(s, cp.stdout + cp.stderr)
        cfg = self.parse_config(cp.stdout)
        self.assertEqual(cfg.get("TANDEM_TOKEN"), "***", cfg)
        self.assertEqual(cfg.get("TANDEM_LLM_API_KEY"), "***", cfg)
        self.assertIn("***", cfg.get("TANDEM_REDIS_URL", ""), cfg)
        self.assertIn("127.0.0.1:%d" % rport, cfg.get("TANDEM_REDIS_URL", ""), cfg)
        self.assertEqual(cfg.get("TANDEM_REDIS_PREFIX"), "acme:")
        self.assertEqual(cfg.get("TANDEM_LISTEN"), env["TANDEM_LISTEN"])
        self.assertEqual(cfg.get("TANDEM_LOG_LEVEL"), "debug")
        self.assertEqual(cfg.get("TANDEM_LLM_MODEL"), "m")

    def test_print_config_defaults(self):
        cp = run_tandemd(["--print-config"], env={"TANDEM_TOKEN": "x" * 20})
        self.assertEqual(cp.returncode, 0, cp.stderr)
        cfg = self.parse_config(cp.stdout)
        self.assertEqual(cfg.get("TANDEM_LISTEN"), "127.0.0.1:8787")
        self.assertEqual(cfg.get("TANDEM_REDIS_PREFIX"), "tandem:")
        self.assertEqual(cfg.get("TANDEM_MAX_BODY"), "1048576")
        for var in ("TANDEM_REDIS_URL", "TANDEM_LOG_LEVEL", "TANDEM_LOG_FORMAT", "TANDEM_ALLOWED_HOSTS",
                    "TANDEM_ALLOWED_ORIGINS", "TANDEM_KB", "TANDEM_LLM_URL", "TANDEM_LLM_TIMEOUT_MS"):
            self.assertIn(var, cfg)

    def test_print_config_flags_override_env(self):
        cp = run_tandemd(["--print-config", "--listen=127.0.0.1:9001", "--redis-prefix", "f:"],
                         env={"TANDEM_TOKEN": "x" * 20, "TANDEM_LISTEN": "127.0.0.1:9000"})
        self.assertEqual(cp.returncode, 0, cp.stderr)
        cfg = self.parse_config(cp.stdout)
        self.assertEqual(cfg.get("TANDEM_LISTEN"), "127.0.0.1:9001")
        self.assertEqual(cfg.get("TANDEM_REDIS_PREFIX"), "f:")


class FlagsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def run_server(self, **kw):
        srv = Tandemd(self.redis, **kw)
        self.addCleanup(srv.close)
        return srv

    def finish(self, srv):
        srv.check()
        self.assertEqual(srv.stop(), 0)

    def test_listen_flag_forms(self):
        for form in ("space", "equals"):
            with self.subTest(form=form):
                port = free_port()
                addr = "127.0.0.1:%d" % port
                args = ["--listen", addr] if form == "space" else ["--listen=" + addr]
                srv = self.run_server(port=port, env={"TANDEM_LISTEN": None}, args=args)
                self.assertEqual(srv.request("GET", "/healthz").status, 200)
                self.finish(srv)

    def test_flag_overrides_env(self):
        env_port, flag_port = free_port(), free_port()
        srv = self.run_server(port=flag_port, env={"TANDEM_LISTEN": "127.0.0.1:%d" % env_port},
                              args=["--listen", "127.0.0.1:%d" % flag_port])
        self.assertEqual(srv.request("GET", "/healthz").status, 200)
        self.assertFalse(port_is_open(env_port))
        self.finish(srv)

    def test_prefix_and_max_body_flags(self):
        self.redis.cmd("XADD", "flag:conv:{f-1}:msgs", "1700000000000-0", "role", "customer",
                       "text", "via flag")
        srv = self.run_server(args=["--redis-prefix=flag:", "--max-body", "2000"])
        r = srv.request("GET", "/v1/conversations/f-1/context")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["messages"][0]["text"], "via flag")
        body = b'{"conversation_id":"c"}'
        r = srv.request("PUT", "/v1/focus", body=body + b" " * (2001 - len(body)),
                        headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 413, r)
        r = srv.request("PUT", "/v1/focus", body=body + b" " * (2000 - len(body)),
                        headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.finish(srv)

    def test_ipv6_listen(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback")
        srv = self.run_server(host="::1")
        r = srv.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(srv.request("GET", "/v1/focus", headers={"Host": "localhost:%d" % srv.port}).status, 404)
        self.finish(srv)


class TokenTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def new_tmp(self):
        d = tempfile.mkdtemp(prefix="tandem-token-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def start(self, tmpdir, **kw):
        srv = Tandemd(self.redis, token=None, tmpdir=tmpdir, **kw)
        self.addCleanup(srv.kill)
        return srv

    def assertAuthWorks(self, srv, token):
        self.assertIn(srv.request("GET", "/v1/focus", token=token).status, (200, 404))
        self.assertEqual(srv.request("GET", "/v1/focus", token=False).status, 401)
        self.assertEqual(srv.request("GET", "/v1/focus", token=token + "x").status, 401)

    def test_token_file(self):
        tmp = self.new_tmp()
        path = os.path.join(tmp, "tok")
        with open(path, "w") as f:
            f.write("file-token-0123456789\n")
        os.chmod(path, 0o600)
        srv = self.start(tmp, env={"TANDEM_TOKEN_FILE": path})
        self.assertAuthWorks(srv, "file-token-0123456789")
        self.assertEqual(srv.stop(), 0)

    def test_generated_token_in_xdg_runtime_dir(self):
        tmp = self.new_tmp()
        srv = self.start(tmp)
        tdir = os.path.join(srv.xdg_runtime_dir, "tandem")
        path = os.path.join(tdir, "token")
        self.assertTrue(os.path.isfile(path), "no token file at %s; log:\n%s" % (path, srv.log_text()))
        self.assertEqual(mode(path), 0o600)
        self.assertEqual(mode(tdir), 0o700)
        token = read(path)
        self.assertGreaterEqual(len(token), 16)
        self.assertRegex(token, r"^\S+$")
        self.assertAuthWorks(srv, token)
        self.assertIn(path, srv.log_text(), "the token file's path is not logged")
        self.assertNotIn(token, srv.log_text() + srv.stdout_text(), "the token itself is logged")

        # Reused on the next start.
        self.assertEqual(srv.stop(), 0)
        srv.start()
        self.assertEqual(read(path), token)
        self.assertAuthWorks(srv, token)
        self.assertEqual(srv.stop(), 0)

        # Refused when group/other-readable.
        for bad_mode in (0o640, 0o604, 0o644):
            with self.subTest(mode=oct(bad_mode)):
                os.chmod(path, bad_mode)
                cp = run_tandemd([], env=dict(srv.env), tmpdir=tmp)
                self.assertEqual(cp.returncode, 2, cp.stderr)
                self.assertIn("token", cp.stderr.lower())
        srv.check(require_alive=False)

    def test_generated_tokens_differ(self):
        tokens = set()
        for _ in range(2):
            tmp = self.new_tmp()
            srv = self.start(tmp)
            tokens.add(read(os.path.join(srv.xdg_runtime_dir, "tandem", "token")))
            self.assertEqual(srv.stop(), 0)
        self.assertEqual(len(tokens), 2)

    def test_generated_token_home_fallback(self):
        tmp = self.new_tmp()
        srv = self.start(tmp, env={"XDG_RUNTIME_DIR": None})
        tdir = os.path.join(srv.env["HOME"], ".local", "state", "tandem")
        path = os.path.join(tdir, "token")
        self.assertTrue(os.path.isfile(path), "no token file at %s; log:\n%s" % (path, srv.log_text()))
        self.assertEqual(mode(path), 0o600)
        self.assertEqual(mode(tdir), 0o700)
        self.assertAuthWorks(srv, read(path))
        self.assertEqual(srv.stop(), 0)


class LoggingTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def exercise(self, srv):
        srv.request("GET", "/healthz")
        srv.request("GET", "/v1/focus", token="WRONG-token-should-not-be-logged")
        srv.request("GET", "/v1/conversations/c-1/context")
        srv.request("GET", "/nope")
        srv.request("PUT", "/v1/focus", body="{bad json", headers={"Content-Type": "application/json"})

    def run_logged(self, **env):
        srv = Tandemd(self.redis, env=dict(env, TANDEM_LLM_API_KEY="sk-never-log-this-key"))
        self.addCleanup(srv.close)
        self.exercise(srv)
        srv.check()
        self.assertEqual(srv.stop(), 0)
        lines = [ln for ln in srv.log_text().splitlines()
                 if ln.strip() and not ln.startswith("==")]  # valgrind lines
        for secret in (srv.token, "WRONG-token-should-not-be-logged", "sk-never-log-this-key"):
            self.assertNotIn(secret, srv.log_text(), "a secret is in the log")
        return lines

    def test_json_logs(self):
        lines = self.run_logged(TANDEM_LOG_FORMAT="json", TANDEM_LOG_LEVEL="debug")
        self.assertTrue(lines, "nothing logged at debug level")
        for ln in lines:
            v = json.loads(ln)
            self.assertIsInstance(v, dict, ln)

    def test_text_logs(self):
        lines = self.run_logged(TANDEM_LOG_FORMAT="text", TANDEM_LOG_LEVEL="debug")
        self.assertTrue(lines)
        self.assertFalse(all(ln.lstrip().startswith("{") for ln in lines), lines[:3])

    def test_log_level_filters(self):
        debug = self.run_logged(TANDEM_LOG_LEVEL="debug")
        error = self.run_logged(TANDEM_LOG_LEVEL="error")
        self.assertLess(len(error), len(debug), "TANDEM_LOG_LEVEL=error logs as much as debug")


class RedisUrlTest(unittest.TestCase):

    def check_context(self, srv, cid="u-1", status=200):
        r = srv.request("GET", "/v1/conversations/%s/context" % cid)
        self.assertEqual(r.status, status, r)
        return r

    def seed(self, client, cid="u-1"):
        client.cmd("XADD", "tandem:conv:{%s}:msgs" % cid, "1700000000000-0", "role", "customer",
                   "text", "hi")

    def serve(self, redis_url, redis=None):
        srv = Tandemd(None, env={"TANDEM_REDIS_URL": redis_url})
        self.addCleanup(srv.close)
        return srv

    def done(self, srv):
        srv.check()
        self.assertEqual(srv.stop(), 0)

    def test_db_number(self):
        redis = RedisServer()
        self.addCleanup(redis.close)
        c = RespClient(port=redis.port)
        self.addCleanup(c.close)
        c.cmd("SELECT", "3")
        self.seed(c, "in-db3")
        self.seed(redis.client, "in-db0")
        srv = self.serve("redis://127.0.0.1:%d/3" % redis.port)
        self.check_context(srv, "in-db3", 200)
        self.check_context(srv, "in-db0", 404)
        self.done(srv)

    def test_password(self):
        redis = RedisServer(password="s3cret-pw")
        self.addCleanup(redis.close)
        self.seed(redis)
        srv = self.serve("redis://:s3cret-pw@127.0.0.1:%d/0" % redis.port)
        self.check_context(srv)
        self.assertNotIn("s3cret-pw", srv.log_text())
        self.done(srv)

    def test_acl_user(self):
        redis = RedisServer(password="admin-pw", acl_user=("tandem", "user-pw"))
        self.addCleanup(redis.close)
        self.seed(redis)
        srv = self.serve("redis://tandem:user-pw@127.0.0.1:%d/0" % redis.port)
        self.check_context(srv)
        self.done(srv)

    def test_wrong_password_not_ready(self):
        redis = RedisServer(password="right-pw")
        self.addCleanup(redis.close)
        srv = self.serve("redis://:wrong-pw@127.0.0.1:%d/0" % redis.port)
        self.assertEqual(srv.request("GET", "/readyz").status, 503)
        self.done(srv)

    def test_unix_socket(self):
        redis = RedisServer(unixsocket=True)
        self.addCleanup(redis.close)
        self.seed(redis, "u-db0")
        c = RespClient(unix_path=redis.unix_path)
        self.addCleanup(c.close)
        c.cmd("SELECT", "2")
        self.seed(c, "u-db2")
        srv = self.serve("unix://%s" % redis.unix_path)
        self.check_context(srv, "u-db0", 200)
        self.check_context(srv, "u-db2", 404)
        self.done(srv)
        srv = self.serve("unix://%s?db=2" % redis.unix_path)
        self.check_context(srv, "u-db2", 200)
        self.check_context(srv, "u-db0", 404)
        self.done(srv)

    def test_sentinel(self):
        redis = RedisServer()
        self.addCleanup(redis.close)
        self.seed(redis)
        sentinel = SentinelServer(redis, "mymaster")
        self.addCleanup(sentinel.close)
        srv = self.serve("redis-sentinel://127.0.0.1:%d/mymaster" % sentinel.port)
        self.check_context(srv)
        self.assertEqual(srv.request("GET", "/readyz").status, 200)
        self.done(srv)
        # The first sentinel is down: the next one is asked.
        dead = free_port()
        srv = self.serve("redis-sentinel://127.0.0.1:%d,127.0.0.1:%d/mymaster" % (dead, sentinel.port))
        self.check_context(srv)
        self.done(srv)


if __name__ == "__main__":
    unittest.main()
