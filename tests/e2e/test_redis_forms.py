"""End-to-end tests of the Redis connection forms: unix socket (with a db number), TCP with
requirepass, an ACL user, a db number, a wrong password (503, a clear log line, no crash),
re-AUTH after a password change and a Redis restart, and --print-config never showing the
password."""

import re
import os
import unittest

from harness import (SLOW, RedisServer, RespClient, Tandemd, TandemTestCase, run_tandemd,
                     wait_until)


def conv_key(cid, kind="msgs", prefix="tandem:"):
    return "%sconv:{%s}:%s" % (prefix, cid, kind)


def client_for(redis, db=0, user=None, password=None):
    """A fresh RESP connection to redis (admin: the default user's password) on db."""
    c = RespClient(port=redis.port, password=None if user else (password or redis.password))
    if user:
        c.cmd("AUTH", user, password)
    if db:
        c.cmd("SELECT", str(db))
    return c


def seed(redis, cid, db=0, text="hello", prefix="tandem:"):
    """Writes a two-message conversation into db (as a connector would)."""
    c = client_for(redis, db=db)
    try:
        k = conv_key(cid, prefix=prefix)
        c.cmd("DEL", k)
        c.cmd("XADD", k, "1700000000000-0", "role", "customer", "text", text)
        c.cmd("XADD", k, "1700000001000-0", "role", "agent", "text", "reply to " + text)
    finally:
        c.close()


# Last commands of the test's own short-lived seeding connections, which Redis may still list
# for a moment after they were closed; tandemd's read path never sends them.
SEED_COMMANDS = {"xadd", "del", "select", "auth", "hset"}


def client_list(redis):
    """CLIENT LIST as a list of dicts, without the harness's own and the seeding connections."""
    own = str(redis.cmd("CLIENT", "ID"))
    text = redis.cmd_str("CLIENT", "LIST")
    out = []
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("id") != own and fields.get("cmd") not in SEED_COMMANDS:
            out.append(fields)
    return out


class RedisFormsMixin:
    """Assertions shared by the connection-form tests."""

    CID = "forms-1"
    assertError = TandemTestCase.assertError  # also for the classes that manage their own servers

    def assertContextWorks(self, srv, cid=None, text="hello"):
        cid = cid or self.CID
        r = srv.request("GET", "/v1/conversations/%s/context" % cid)
        self.assertEqual(r.status, 200, r)
        msgs = r.json["messages"]
        self.assertEqual([m["text"] for m in msgs], [text, "reply to " + text], r)
        self.assertEqual(r.json["based_on"], "1700000001000-0")

    def assertReady(self, srv):
        r = srv.request("GET", "/readyz", token=False)
        self.assertEqual(r.status, 200, r)

    def assertSecretNotLogged(self, srv, *secrets):
        log = srv.log_text() + srv.stdout_text()
        for s in secrets:
            self.assertNotIn(s, log, "a Redis password appears in tandemd's output")

    def tandemd_clients(self, redis):
        """The Redis connections tandemd holds (after it served requests)."""
        return client_list(redis)


# ------------------------------------------------------------------------------------------


class UnixSocketTest(RedisFormsMixin, TandemTestCase):
    """unix:///path/redis.sock"""

    @classmethod
    def redis_options(cls):
        return {"unixsocket": True}

    @classmethod
    def server_env(cls):
        return {"TANDEM_REDIS_URL": "unix://" + cls.redis.unix_path}

    def test_context_and_readiness_over_the_socket(self):
        seed(self.redis, self.CID)
        self.assertReady(self.srv)
        self.assertContextWorks(self.srv)
        clients = self.tandemd_clients(self.redis)
        self.assertTrue(clients, "tandemd holds no Redis connection")
        for c in clients:
            # U: connected over the unix socket (the harness itself uses TCP)
            self.assertIn("U", c.get("flags", ""), "a tandemd connection is not on the unix socket: %r" % c)

    def test_missing_conversation(self):
        r = self.srv.request("GET", "/v1/conversations/not-there/context")
        self.assertError(r, 404, "conversation_not_found")


class UnixSocketDbTest(RedisFormsMixin, TandemTestCase):
    """unix:///path/redis.sock?db=4"""

    @classmethod
    def redis_options(cls):
        return {"unixsocket": True}

    @classmethod
    def server_env(cls):
        return {"TANDEM_REDIS_URL": "unix://%s?db=4" % cls.redis.unix_path}

    def test_db_selected_over_the_socket(self):
        seed(self.redis, "in-db4", db=4)
        seed(self.redis, "in-db0", db=0)
        self.assertContextWorks(self.srv, "in-db4")
        r = self.srv.request("GET", "/v1/conversations/in-db0/context")
        self.assertError(r, 404, "conversation_not_found")
        for c in self.tandemd_clients(self.redis):
            self.assertEqual(c.get("db"), "4", c)


class RequirepassTest(RedisFormsMixin, TandemTestCase):
    """redis://:password@host:port/0 against requirepass."""

    PASSWORD = "tcp-requirepass-Secret1"

    @classmethod
    def redis_options(cls):
        return {"password": cls.PASSWORD}

    def test_context_with_password(self):
        self.assertIn(":%s@" % self.PASSWORD, self.srv.env["TANDEM_REDIS_URL"])
        seed(self.redis, self.CID)
        self.assertReady(self.srv)
        self.assertContextWorks(self.srv)
        self.assertTrue(self.tandemd_clients(self.redis))
        self.assertSecretNotLogged(self.srv, self.PASSWORD)

    def test_percent_encoded_password(self):
        # a password with URL-special characters, percent-encoded in the URL
        pw = "p@ss:w/rd%1"
        self.redis.cmd("CONFIG", "SET", "requirepass", pw)
        try:
            enc = "p%40ss%3Aw%2Frd%251"
            srv = Tandemd(self.redis, env={
                "TANDEM_REDIS_URL": "redis://:%s@127.0.0.1:%d/0" % (enc, self.redis.port)})
            try:
                c = RespClient(port=self.redis.port, password=pw)
                c.cmd("DEL", conv_key("pct"))
                c.cmd("XADD", conv_key("pct"), "1700000000000-0", "role", "customer", "text", "hello")
                c.cmd("XADD", conv_key("pct"), "1700000001000-0", "role", "agent", "text", "reply to hello")
                c.close()
                self.assertReady(srv)
                self.assertContextWorks(srv, "pct")
                self.assertSecretNotLogged(srv, pw, enc)
                self.assertEqual(srv.stop(), 0)
                srv.check(require_alive=False)
            finally:
                srv.close()
        finally:
            # the harness's own connection stays authenticated; put the class password back
            self.redis.cmd("CONFIG", "SET", "requirepass", self.PASSWORD)


class AclUserTest(RedisFormsMixin, TandemTestCase):
    """redis://tandem:pw@host:port/0 with an ACL user limited to tandem:* keys. The default user
    has another password, so a password-only AUTH would fail: the user form must be used."""

    ADMIN_PASSWORD = "acl-admin-Secret2"
    USER_PASSWORD = "acl-user-Secret3"

    @classmethod
    def redis_options(cls):
        return {"password": cls.ADMIN_PASSWORD}

    @classmethod
    def server_env(cls):
        cls.redis.cmd("ACL", "SETUSER", "tandem", "on", ">" + cls.USER_PASSWORD, "~tandem:*", "+@all")
        return {"TANDEM_REDIS_URL": "redis://tandem:%s@127.0.0.1:%d/0" % (cls.USER_PASSWORD, cls.redis.port)}

    def test_context_as_acl_user(self):
        seed(self.redis, self.CID)
        self.assertReady(self.srv)
        self.assertContextWorks(self.srv)
        clients = self.tandemd_clients(self.redis)
        self.assertTrue(clients)
        for c in clients:
            self.assertEqual(c.get("user"), "tandem", "tandemd is not authenticated as the ACL user: %r" % c)
        self.assertSecretNotLogged(self.srv, self.USER_PASSWORD, self.ADMIN_PASSWORD)

    def test_wrong_acl_password(self):
        srv = Tandemd(self.redis, env={
            "TANDEM_REDIS_URL": "redis://tandem:not-the-password@127.0.0.1:%d/0" % self.redis.port})
        try:
            r = srv.request("GET", "/readyz", token=False)
            self.assertError(r, 503, "redis_unavailable")
            r = srv.request("GET", "/v1/conversations/%s/context" % self.CID)
            self.assertError(r, 503, "redis_unavailable")
            self.assertTrue(any(rec.get("msg") == "redis_auth_failed" for rec in srv.log_records()),
                            srv.log_text())
            self.assertSecretNotLogged(srv, "not-the-password")
            srv.check()
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.close()


class DbNumberTest(RedisFormsMixin, TandemTestCase):
    """redis://host:port/3: data written to db 3 is found, db 0 is not used."""

    @classmethod
    def server_env(cls):
        return {"TANDEM_REDIS_URL": "redis://127.0.0.1:%d/3" % cls.redis.port}

    def test_db3_used_db0_not(self):
        seed(self.redis, "only-in-db3", db=3, text="three")
        seed(self.redis, "only-in-db0", db=0, text="zero")
        db0_keys_before = self.redis.cmd("DBSIZE")
        self.assertContextWorks(self.srv, "only-in-db3", text="three")
        r = self.srv.request("GET", "/v1/conversations/only-in-db0/context")
        self.assertError(r, 404, "conversation_not_found")
        self.assertReady(self.srv)
        clients = self.tandemd_clients(self.redis)
        self.assertTrue(clients)
        for c in clients:
            self.assertEqual(c.get("db"), "3", "a tandemd connection is on db %s" % c.get("db"))
        self.assertEqual(self.redis.cmd("DBSIZE"), db0_keys_before)

    def test_db_survives_reconnect(self):
        # hiredis drops SELECT on reconnect: after a Redis restart tandemd must SELECT again
        seed(self.redis, "db3-after-restart", db=3, text="again")
        self.assertContextWorks(self.srv, "db3-after-restart", text="again")
        self.redis.restart()
        seed(self.redis, "db3-after-restart", db=3, text="again")
        seed(self.redis, "db3-after-restart", db=0, text="wrong db")

        def ok():
            r = self.srv.request("GET", "/v1/conversations/db3-after-restart/context")
            return r.status == 200 and r
        r = wait_until(ok, 10 * SLOW, interval=0.1, what="context after the Redis restart")
        self.assertEqual(r.json["messages"][0]["text"], "again")
        for c in self.tandemd_clients(self.redis):
            self.assertEqual(c.get("db"), "3", c)


class WrongPasswordTest(RedisFormsMixin, TandemTestCase):
    """A wrong password: /readyz 503, API 503, a clear log line, and the process keeps serving."""

    PASSWORD = "the-right-Secret4"
    WRONG = "the-wrong-Secret5"

    @classmethod
    def redis_options(cls):
        return {"password": cls.PASSWORD}

    @classmethod
    def server_env(cls):
        return {"TANDEM_REDIS_URL": "redis://:%s@127.0.0.1:%d/0" % (cls.WRONG, cls.redis.port)}

    def test_not_ready_and_logged(self):
        seed(self.redis, self.CID)
        for _ in range(3):
            r = self.srv.request("GET", "/readyz", token=False)
            self.assertError(r, 503, "redis_unavailable")
            self.assertIn("Redis", r.json["error"]["message"])
        r = self.srv.request("GET", "/v1/conversations/%s/context" % self.CID)
        self.assertError(r, 503, "redis_unavailable")
        # still serving everything that does not need Redis
        self.assertEqual(self.srv.request("GET", "/healthz", token=False).status, 200)
        self.assertEqual(self.srv.request("GET", "/metrics", token=False).status, 200)
        recs = [rec for rec in self.srv.log_records() if rec.get("msg") == "redis_auth_failed"]
        self.assertTrue(recs, "no redis_auth_failed log line:\n%s" % self.srv.log_text())
        self.assertEqual(recs[0].get("level"), "error", recs[0])
        self.assertIn("TANDEM_REDIS_URL", " ".join(str(v) for v in recs[0].values()))
        self.assertSecretNotLogged(self.srv, self.WRONG, self.PASSWORD)

    def test_metrics_count_the_errors(self):
        self.srv.request("GET", "/readyz", token=False)
        samples = self.srv.metrics()
        errors = [v for (name, labels, v) in samples if name == "tandem_redis_errors_total"]
        self.assertTrue(errors and errors[0] >= 1, errors)


class ReauthAfterPasswordChangeAndRestartTest(RedisFormsMixin, unittest.TestCase):
    """requirepass changed under tandemd and changed back, then Redis restarted: tandemd
    reconnects and AUTHs again by itself every time."""

    PASSWORD = "reauth-Secret6"
    OTHER = "reauth-Other7"

    def setUp(self):
        self.redis = RedisServer(password=self.PASSWORD)
        try:
            self.srv = Tandemd(self.redis)
        except Exception:
            self.redis.close()
            raise

    def tearDown(self):
        try:
            self.srv.check(require_alive=False)
            alive = self.srv.alive()
            rc = self.srv.stop()
            if alive:
                self.assertEqual(rc, 0, "tandemd exit code on SIGTERM")
            self.assertSecretNotLogged(self.srv, self.PASSWORD, self.OTHER)
        finally:
            self.srv.close()
            self.redis.close()

    def wait_context_ok(self, what):
        def ok():
            r = self.srv.request("GET", "/v1/conversations/%s/context" % self.CID)
            return r.status == 200 and r
        return wait_until(ok, 10 * SLOW, interval=0.1, what=what)

    def test_reauth(self):
        seed(self.redis, self.CID)
        self.assertReady(self.srv)
        self.assertContextWorks(self.srv)

        # 1. the password changes and tandemd's connections are dropped: AUTH fails -> 503
        self.redis.cmd("CONFIG", "SET", "requirepass", self.OTHER)
        self.redis.cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        r = self.srv.request("GET", "/readyz", token=False)
        self.assertError(r, 503, "redis_unavailable")
        r = self.srv.request("GET", "/v1/conversations/%s/context" % self.CID)
        self.assertError(r, 503, "redis_unavailable")
        self.assertTrue(any(rec.get("msg") == "redis_auth_failed" for rec in self.srv.log_records()))

        # 2. changed back: tandemd recovers without a restart
        self.redis.cmd("CONFIG", "SET", "requirepass", self.PASSWORD)
        wait_until(lambda: self.srv.request("GET", "/readyz", token=False).status == 200, 10 * SLOW,
                   interval=0.1, what="/readyz after the password was changed back")
        self.wait_context_ok("context after the password was changed back")

        # 3. Redis restarted (same port, same password, data gone): a new connection, AUTH again
        self.redis.restart()
        seed(self.redis, self.CID)
        self.wait_context_ok("context after the Redis restart")
        self.assertReady(self.srv)
        self.assertTrue(client_list(self.redis), "tandemd did not reconnect")

        # 4. restarted again while idle, then the first request after it must not fail for good
        self.redis.restart()
        seed(self.redis, self.CID)
        self.wait_context_ok("context after the second restart")
        self.srv.check()


class PrintConfigTest(unittest.TestCase):
    """--print-config (and a bad URL's error message) never show the Redis password."""

    CASES = [
        # (URL, secret, expected TANDEM_REDIS_URL line or None)
        ("redis://tandem:hunter2-Secret@127.0.0.1:6380/3", "hunter2-Secret",
         "TANDEM_REDIS_URL=redis://tandem:***@127.0.0.1:6380/3"),
        ("redis://:hunter2-Secret@127.0.0.1:6380/0", "hunter2-Secret",
         "TANDEM_REDIS_URL=redis://:***@127.0.0.1:6380/0"),
        ("redis://hunter2-Secret@127.0.0.1", "hunter2-Secret", "TANDEM_REDIS_URL=redis://***@127.0.0.1"),
        ("redis://tandem:hun%40ter2-Secret@127.0.0.1:6379/0", "ter2-Secret",
         "TANDEM_REDIS_URL=redis://tandem:***@127.0.0.1:6379/0"),
        ("unix://:hunter2-Secret@/run/redis/redis.sock?db=2", "hunter2-Secret",
         "TANDEM_REDIS_URL=unix://:***@/run/redis/redis.sock?db=2"),
        ("redis-sentinel://:hunter2-Secret@10.0.0.1:26379,10.0.0.2:26379/mymaster", "hunter2-Secret", None),
    ]

    def test_env(self):
        for url, secret, line in self.CASES:
            with self.subTest(url=url):
                cp = run_tandemd(["--print-config"], env={"TANDEM_REDIS_URL": url,
                                                          "TANDEM_TOKEN": "print-config-token-0123"})
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertNotIn(secret, cp.stdout + cp.stderr)
                self.assertNotIn("print-config-token-0123", cp.stdout + cp.stderr)
                self.assertIn("TANDEM_TOKEN=***", cp.stdout)
                if line:
                    self.assertIn(line + "\n", cp.stdout)

    def test_flag(self):
        url = "redis://tandem:flag-Secret9@127.0.0.1:6390/1"
        cp = run_tandemd(["--redis-url", url, "--print-config"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        # a valgrind wrapper echoes the command line itself ("==PID== Command: ..."): not ours
        ours = "\n".join(l for l in (cp.stdout + cp.stderr).splitlines() if not re.match(r"==\d+==", l))
        self.assertNotIn("flag-Secret9", ours)
        self.assertIn("TANDEM_REDIS_URL=redis://tandem:***@127.0.0.1:6390/1\n", cp.stdout)

    def test_bad_url_error_does_not_show_password(self):
        # the start-up error names the variable and the form, but must not echo the password
        for url in ("redis://:bad-url-Secret8@127.0.0.1:99999/0",
                    "redis://tandem:bad-url-Secret8@127.0.0.1:6379/notadb"):
            with self.subTest(url=url):
                cp = run_tandemd(["--print-config"], env={"TANDEM_REDIS_URL": url})
                self.assertNotEqual(cp.returncode, 0)
                self.assertIn("TANDEM_REDIS_URL", cp.stderr)
                self.assertNotIn("bad-url-Secret8", cp.stdout + cp.stderr)


if __name__ == "__main__":
    unittest.main()
