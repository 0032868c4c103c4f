"""End-to-end test harness for tandemd (Python 3 standard library only).

Everything an end-to-end test needs to drive a real ``tandemd`` against a real,
throw-away ``redis-server``:

``RedisServer``
    A private redis-server on a free loopback port (never 6379), without
    persistence, in its own temporary directory.  ``stop()`` kills it,
    ``restart()`` brings it back on the same port (data is gone),
    ``pause()``/``resume()`` freeze it with SIGSTOP/SIGCONT (a hung Redis).
    ``cmd(*args)`` speaks RESP directly, so tests need no redis-cli::

        redis = RedisServer()
        redis.cmd("XADD", "tandem:conv:{c-1}:msgs", "*", "role", "customer", "text", "hi")
        redis.reset_stats(); ...; redis.commands_since_reset()  # {'xrange': 1, ...}

``SentinelServer``
    A redis-sentinel watching a ``RedisServer`` (for ``redis-sentinel://`` URLs).

``Tandemd``
    The server under test.  Binary from ``$TANDEMD`` (default ``build/tandemd``),
    optionally prefixed by ``$TANDEM_WRAPPER`` (e.g. ``valgrind --error-exitcode=99
    --leak-check=full``; time-outs are then scaled by ``SLOW``).  It gets a free
    port, a random token, JSON logs and a private ``XDG_RUNTIME_DIR``; any other
    ``TANDEM_*`` variable of the caller's environment is removed so the run is
    reproducible.  stderr (the log) goes to a file: ``log_text()``, ``log_records()``.
    ``request()`` sends one HTTP request and returns a ``Response``; ``raw()``
    sends exact bytes (duplicate Host headers, junk) and parses the answer::

        srv = Tandemd(redis)                       # started and healthy
        r = srv.request("GET", "/v1/focus")        # Authorization added
        assert r.status == 404 and r.error_code == "no_focus"
        r = srv.request("GET", "/healthz", headers={"Host": "evil.com:%d" % srv.port})
        srv.stop()                                 # SIGTERM; returns the exit code

    ``check()`` raises ``AssertionError`` if the process died or printed a
    sanitizer report (``ERROR: AddressSanitizer``, ``runtime error:`` …).

``TandemTestCase``
    A ``unittest.TestCase`` base that starts one Redis and one tandemd per class
    (``cls.redis``, ``cls.srv``), checks after every test that the server is
    still alive and clean (restarting it for the next test if not), and at the
    end of the class stops it with SIGTERM and requires exit code 0.  Override
    ``server_env()`` (class method) to pass extra environment.

``run_tandemd(args, env)``
    Runs the binary to completion (``--help``, bad configuration, …) and returns a
    ``subprocess.CompletedProcess`` with text stdout/stderr.

Useful module-level helpers: ``free_port()``, ``port_is_open(port)``,
``wait_until(pred, timeout)`` (poll instead of sleeping), ``parse_metrics(text)`` and
``metric_sum(samples, name, **labels)``, ``read_response(sock)``, ``SLOW`` (time-out
multiplier: scale every bound you assert on), ``REPO_ROOT``.

Environment: ``TANDEMD`` (binary), ``TANDEM_WRAPPER`` (prefix command),
``TANDEM_TEST_TIMEOUT_SCALE`` (overrides ``SLOW``).

A new test file (``tests/e2e/test_<area>.py``, run by ``tests/run_all.sh``)::

    from harness import TandemTestCase

    class SummaryTest(TandemTestCase):
        @classmethod
        def server_env(cls):
            return {"TANDEM_KB": "data/kb.jsonl"}

        def test_missing_conversation(self):
            r = self.srv.request("GET", "/v1/conversations/nope/summary")
            self.assertError(r, 404, "conversation_not_found")   # envelope + status
            self.assertSecurityHeaders(r)                           # no-store, nosniff, id

Tests in one class share the server and Redis: flush or use distinct ids
(``self.redis.flush()`` in ``setUp``) and leave global state (focus) as you found it.
"""

import atexit
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Sanitizer and valgrind reports that make a run fail even if every answer was right.
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "ERROR: ThreadSanitizer",
    "ERROR: MemorySanitizer",
    # valgrind (TANDEM_WRAPPER=valgrind ...): memory errors, not leaks (those fail via exit 99)
    "Invalid read of size",
    "Invalid write of size",
    "Invalid free()",
    "Conditional jump or move depends on uninitialised",
    "Use of uninitialised value",
    "Syscall param",
)


def _wrapper():
    w = os.environ.get("TANDEM_WRAPPER", "").strip()
    return shlex.split(w) if w else []


def _slow_factor():
    env = os.environ.get("TANDEM_TEST_TIMEOUT_SCALE")
    if env:
        return float(env)
    return 10.0 if _wrapper() else 1.0


# Multiply every time-out by this: valgrind makes the server ~10-50x slower.
SLOW = _slow_factor()

_live_processes = set()


@atexit.register
def _kill_leftovers():
    # Never leave a server behind when the test run aborts.
    for p in list(_live_processes):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass


def free_port():
    """A currently free TCP port on 127.0.0.1 (never 6379 or 8787)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (6379, 8787):
            return port


def port_is_open(port, host="127.0.0.1", timeout=0.2):
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerDied(AssertionError):
    """The server process exited when it should not have."""


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or raises AssertionError
    after timeout seconds. Exceptions from pred count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except ServerDied:
            raise  # no point in waiting for a dead process
        except Exception as e:  # noqa: BLE001 - polling: any failure means "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def binary_path():
    """The tandemd binary: $TANDEMD (relative to the cwd, else to the repo root)."""
    p = Path(os.environ.get("TANDEMD", "build/tandemd"))
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    return p.resolve()


# Signals a crash dies of (abort(), a bad pointer, an illegal instruction, a bus or FPU error).
CRASH_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE)


def _tail(text, n=40):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------------
# Redis


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


class RespClient:
    """A minimal RESP2 client: one socket, synchronous commands, reconnects on demand."""

    def __init__(self, host="127.0.0.1", port=6379, unix_path=None, password=None, timeout=5.0):
        self.host, self.port, self.unix_path = host, port, unix_path
        self.password, self.timeout = password, timeout
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.buf = None, b""

    def _connect(self):
        if self.unix_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.unix_path)
        else:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock, self.buf = s, b""
        if self.password:
            self._roundtrip(("AUTH", self.password))

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif not isinstance(a, (bytes, bytearray)):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError("bad RESP reply %r" % line)

    def _roundtrip(self, args):
        self.sock.sendall(self.encode(args))
        r = self._reply()
        if isinstance(r, RedisError):
            raise r
        return r

    def cmd(self, *args):
        """Sends one command; returns str (status), int, bytes (bulk), list or None.
        Raises RedisError on an error reply."""
        if self.sock is None:
            self._connect()
        try:
            return self._roundtrip(args)
        except RedisError:
            raise
        except Exception:
            self.close()
            raise


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


class RedisServer:
    """A private redis-server on 127.0.0.1:<free port>; see the module docstring.

    password: sets requirepass; acl_user=(name, password) adds an ACL user;
    unixsocket=True also listens on <dir>/redis.sock (self.unix_path).
    """

    def __init__(self, password=None, acl_user=None, unixsocket=False, extra_args=(), start=True):
        if not shutil.which("redis-server"):
            raise unittest.SkipTest("redis-server is not installed")
        self.dir = tempfile.mkdtemp(prefix="tandem-redis-")
        self.port = free_port()
        self.password = password
        self.acl_user = acl_user
        self.unix_path = os.path.join(self.dir, "redis.sock") if unixsocket else None
        self.extra_args = list(extra_args)
        self.proc = None
        self.client = None
        if start:
            self.start()

    @property
    def url(self):
        """redis://127.0.0.1:PORT/0 (with the password if one is set)."""
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def _argv(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--protected-mode", "no", "--loglevel", "warning",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.unix_path:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        argv += self.extra_args
        return argv

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        _live_processes.add(self.proc)
        self.client = RespClient(port=self.port, password=self.password)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            c = RespClient(port=self.port, password=self.password, timeout=0.5)
            try:
                return c.cmd("PING") == "PONG"
            finally:
                c.close()

        try:
            wait_until(ready, timeout, what="redis-server on port %d" % self.port)
        except AssertionError:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server failed to start: %s" % self._log())
            raise
        if self.acl_user:
            name, pw = self.acl_user
            self.cmd("ACL", "SETUSER", name, "on", ">" + pw, "~*", "&*", "+@all")
        return self

    def _log(self):
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def cmd(self, *args):
        """One command on the harness's own connection (see RespClient.cmd)."""
        try:
            return self.client.cmd(*args)
        except (ConnectionError, OSError):
            # The server may have been restarted since: one fresh attempt.
            self.client.close()
            return self.client.cmd(*args)

    def cmd_str(self, *args):
        """Like cmd() but bulk strings decoded to str."""
        return _decode(self.cmd(*args))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Kills redis-server (SIGKILL: an outage, not a shutdown)."""
        if self.client:
            self.client.close()
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case it was paused
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc:
            _live_processes.discard(self.proc)

    def restart(self, timeout=10.0):
        """Stops if running, then starts again on the same port (empty data set)."""
        self.stop()
        # The port may linger briefly; redis sets SO_REUSEADDR so this normally just works.
        return self.start(timeout=timeout)

    def pause(self):
        """SIGSTOP: connections stay open, nothing answers (a hung Redis)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self):
        """Stops the server and removes its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers for assertions ------------------------------------------------------------

    def reset_stats(self):
        self.cmd("CONFIG", "RESETSTAT")

    def commandstats(self):
        """{command: calls} from INFO commandstats ('config|resetstat' style names)."""
        info = _decode(self.cmd("INFO", "commandstats"))
        out = {}
        for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", info, re.M):
            out[m.group(1).lower()] = int(m.group(2))
        return out

    def commands_since_reset(self):
        """Commands run since reset_stats(), without the harness's own INFO/CONFIG calls."""
        return {k: v for k, v in self.commandstats().items()
                if not (k == "info" or k.startswith("config"))}

    def info(self, section=""):
        """INFO as a dict of str."""
        text = _decode(self.cmd("INFO", section) if section else self.cmd("INFO"))
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def flush(self):
        self.cmd("FLUSHALL")


class SentinelServer:
    """A redis-sentinel monitoring `master` (a RedisServer) as `name`."""

    def __init__(self, master, name="mymaster"):
        self.dir = tempfile.mkdtemp(prefix="tandem-sentinel-")
        self.port = free_port()
        self.name = name
        conf = Path(self.dir, "sentinel.conf")
        lines = ["port %d" % self.port, "bind 127.0.0.1", "dir %s" % self.dir,
                 "protected-mode no", "logfile %s" % os.path.join(self.dir, "sentinel.log"),
                 "sentinel monitor %s 127.0.0.1 %d 1" % (name, master.port)]
        if master.password:
            lines.append("sentinel auth-pass %s %s" % (name, master.password))
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _live_processes.add(self.proc)
        self.client = RespClient(port=self.port)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("sentinel exited")
            c = RespClient(port=self.port, timeout=0.5)
            try:
                addr = c.cmd("SENTINEL", "get-master-addr-by-name", name)
            finally:
                c.close()
            return addr and int(addr[1]) == master.port

        wait_until(ready, 10, what="redis-sentinel on port %d" % self.port)

    def close(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _live_processes.discard(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# HTTP


class Response:
    """One HTTP answer. headers: an http.client.HTTPMessage (case-insensitive .get(),
    .get_all()); body: bytes; json: the parsed body when Content-Type is JSON, else None."""

    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.json = None
        ctype = (headers.get("Content-Type") or "").lower()
        if "json" in ctype and body:
            try:
                self.json = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self.json = None

    def header(self, name, default=None):
        return self.headers.get(name, default)

    @property
    def error_code(self):
        """error.code of the error envelope, or None."""
        try:
            return self.json["error"]["code"]
        except (TypeError, KeyError):
            return None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        b = self.body[:300]
        return "<Response %d %r %r>" % (self.status, dict(self.headers.items()), b)


def _encode_body(body, headers):
    if body is None:
        return None
    if isinstance(body, (dict, list)) or body is True or body is False:
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def read_response(sock, method="GET", timeout=5.0):
    """Parses one HTTP response from a connected socket (Content-Length, chunked or
    close-delimited). Returns a Response, or None if the peer closed without answering."""
    sock.settimeout(timeout)
    resp = http.client.HTTPResponse(sock, method=method)
    try:
        resp.begin()
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
        return None
    body = resp.read()
    return Response(resp.status, resp.reason, resp.headers, body)


# --------------------------------------------------------------------------------------------
# tandemd


def base_env(tmpdir):
    """The caller's environment without TANDEM_* variables, with a private runtime dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.pop("TANDEMD", None)
    xdg = os.path.join(tmpdir, "xdg")
    os.makedirs(xdg, mode=0o700, exist_ok=True)
    env["XDG_RUNTIME_DIR"] = xdg
    env["HOME"] = os.path.join(tmpdir, "home")
    os.makedirs(env["HOME"], exist_ok=True)
    return env


def _apply(env, extra):
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def sanitizer_report(text):
    """The first sanitizer/UB report line in text, or None."""
    for line in text.splitlines():
        if any(p in line for p in SANITIZER_PATTERNS):
            return line
    return None


def run_tandemd(args=(), env=None, timeout=None, tmpdir=None):
    """Runs tandemd to completion with base_env() + env (None values remove a variable).
    Returns subprocess.CompletedProcess (text stdout/stderr). Raises AssertionError if it
    does not finish within timeout (default 10 s * SLOW) or prints a sanitizer report."""
    own_tmp = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="tandem-run-")
    try:
        e = _apply(base_env(tmpdir), env)
        argv = _wrapper() + [str(binary_path())] + [str(a) for a in args]
        try:
            cp = subprocess.run(argv, env=e, capture_output=True, text=True, errors="replace",
                                timeout=timeout or 10 * SLOW, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as ex:
            raise AssertionError("tandemd %s did not exit within %ss; stderr: %s"
                                 % (" ".join(map(str, args)), ex.timeout, ex.stderr))
        rep = sanitizer_report(cp.stderr)
        if rep:
            raise AssertionError("sanitizer report from tandemd %s: %s\n%s"
                                 % (" ".join(map(str, args)), rep, _tail(cp.stderr)))
        return cp
    finally:
        if own_tmp:
            shutil.rmtree(tmpdir, ignore_errors=True)


class Tandemd:
    """A running tandemd; see the module docstring.

    redis:   a RedisServer (sets TANDEM_REDIS_URL) or None.
    env:     extra/overriding environment; a None value removes the variable (e.g.
             {"TANDEM_TOKEN": None} to let the server generate its token).
    args:    extra command-line arguments.
    token:   the bearer token to configure (default: random); None = don't set one.
    port:    the listen port (default: a free one). listen= overrides TANDEM_LISTEN's host.
    wait:    wait for /healthz (default True); False to test start-up failures.
    """

    def __init__(self, redis=None, env=None, args=(), token="", port=None, wait=True,
                 start=True, tmpdir=None, host="127.0.0.1"):
        self.exe = binary_path()
        if not self.exe.exists():
            raise AssertionError("tandemd binary not found at %s (build it with make, or set "
                                 "TANDEMD)" % self.exe)
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="tandem-e2e-")
        self.port = port or free_port()
        self.host = host
        self.token = secrets.token_hex(16) if token == "" else token
        self.redis = redis
        self.env = base_env(self.tmpdir)
        self.env["TANDEM_LISTEN"] = ("[%s]:%d" if ":" in host else "%s:%d") % (host, self.port)
        if redis is not None:
            self.env["TANDEM_REDIS_URL"] = redis.url
        if self.token is not None:
            self.env["TANDEM_TOKEN"] = self.token
        self.env["TANDEM_LOG_FORMAT"] = "json"
        _apply(self.env, env)
        self.args = [str(a) for a in args]
        self.proc = None
        self.returncode = None
        self.log_path = os.path.join(self.tmpdir, "stderr.log")
        self.out_path = os.path.join(self.tmpdir, "stdout.log")
        self._checked_upto = 0
        self._n_starts = 0
        if start:
            self.start(wait=wait)

    # -- process lifecycle -----------------------------------------------------------------

    @property
    def argv(self):
        return _wrapper() + [str(self.exe)] + self.args

    @property
    def xdg_runtime_dir(self):
        return self.env.get("XDG_RUNTIME_DIR")

    def start(self, wait=True, timeout=None):
        """Starts the process (stderr appended to log_path) and, if wait, waits for /healthz."""
        self._n_starts += 1
        err = open(self.log_path, "ab")
        out = open(self.out_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        finally:
            err.close()
            out.close()
        _live_processes.add(self.proc)
        self.returncode = None
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=None):
        timeout = timeout or 10 * SLOW

        def healthy():
            if self.proc.poll() is not None:
                raise ServerDied("tandemd exited with %s during start-up:\n%s"
                                 % (self.proc.returncode, _tail(self.log_text())))
            try:
                return self.request("GET", "/healthz", token=False, timeout=1 * SLOW).status == 200
            except OSError:
                return False

        try:
            wait_until(healthy, timeout, interval=0.02, what="tandemd /healthz on port %d" % self.port)
        except ServerDied:
            raise
        except AssertionError:
            raise AssertionError("tandemd not healthy after %.0fs:\n%s" % (timeout, _tail(self.log_text())))

    def wait_exit(self, timeout=None):
        """Waits for the process to exit; returns the exit code (negative: signal) or
        raises AssertionError (the process is then killed)."""
        timeout = timeout if timeout is not None else 5 * SLOW
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            _live_processes.discard(self.proc)
            raise AssertionError("tandemd did not exit within %.1fs after the signal:\n%s"
                                 % (timeout, _tail(self.log_text())))
        _live_processes.discard(self.proc)
        return self.returncode

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Sends sig (default SIGTERM) and returns the exit code; AssertionError if the
        process is still running after timeout (default 5 s * SLOW) or its log holds a
        sanitizer report (LeakSanitizer only reports at exit). Safe to call twice."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            _live_processes.discard(self.proc)
        else:
            self.proc.send_signal(sig)
            self.wait_exit(timeout)
        self.check(require_alive=False)
        if self.returncode is not None and -self.returncode in CRASH_SIGNALS:
            # always a bug: say what the process wrote last (glibc and libmicrohttpd say why)
            raise AssertionError("tandemd died of signal %d:\n%s" % (-self.returncode, _tail(self.log_text())))
        return self.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc:
            _live_processes.discard(self.proc)

    def restart(self, wait=True):
        """SIGTERM (exit code must be 0), then start again with the same settings."""
        rc = self.stop()
        if rc != 0:
            raise AssertionError("tandemd exited with %s on SIGTERM:\n%s" % (rc, _tail(self.log_text())))
        return self.start(wait=wait)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        """Kills the process if needed and removes the temporary directory."""
        self.kill()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def check(self, require_alive=True):
        """AssertionError if the process died (when require_alive) or a sanitizer report
        appeared in the log since the last check()."""
        text = self.log_text()
        new = text[self._checked_upto:]
        self._checked_upto = len(text)
        rep = sanitizer_report(new)
        if rep:
            raise AssertionError("tandemd sanitizer report: %s\n%s" % (rep, _tail(new, 60)))
        if require_alive and not self.alive():
            raise ServerDied("tandemd died (exit code %s):\n%s" % (self.proc.returncode, _tail(text)))

    # -- logs ------------------------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_records(self):
        """Every stderr line that parses as a JSON object (valgrind lines are skipped)."""
        out = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if isinstance(v, dict):
                    out.append(v)
        return out

    # -- HTTP ------------------------------------------------------------------------------

    @property
    def base_host(self):
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def connection(self, timeout=None):
        """A new http.client.HTTPConnection to the server (for keep-alive tests)."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or 5 * SLOW)

    def request(self, method, path, body=None, headers=None, token=True, conn=None,
                timeout=None):
        """Sends one request and returns a Response.

        body:    dict/list (sent as JSON, Content-Type application/json unless given),
                 str or bytes (sent as is), or None.
        headers: extra headers; "Host" replaces the default 127.0.0.1:PORT; a value of
                 None omits that header (e.g. {"Host": None}).
        token:   True = "Authorization: Bearer <self.token>", a str = that token,
                 False/None = no Authorization header (unless given in headers).
        conn:    an existing HTTPConnection to reuse (keep-alive); otherwise a new one
                 that is closed afterwards.
        """
        headers = dict(headers or {})
        data = _encode_body(body, headers)
        own = conn is None
        c = conn or self.connection(timeout)
        try:
            c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            hdrs = {"Host": self.base_host}
            if token is True and self.token is not None:
                hdrs["Authorization"] = "Bearer " + self.token
            elif isinstance(token, str):
                hdrs["Authorization"] = "Bearer " + token
            if data is not None:
                hdrs["Content-Length"] = str(len(data))
            elif method in ("POST", "PUT", "PATCH"):
                hdrs["Content-Length"] = "0"
            lower = {k.lower(): k for k in hdrs}
            for k, v in headers.items():
                if k.lower() in lower:
                    del hdrs[lower[k.lower()]]
                hdrs[k] = v
            for k, v in hdrs.items():
                if v is not None:
                    c.putheader(k, v)
            try:
                c.endheaders(data)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The server may answer (413, 415, 401...) and close before reading the whole
                # body; the answer is usually still readable.
                send_error = e
            else:
                send_error = None
            try:
                r = c.getresponse()
            except (OSError, http.client.HTTPException):
                if send_error is not None:
                    raise send_error
                raise
            body_bytes = r.read()
            return Response(r.status, r.reason, r.headers, body_bytes)
        finally:
            if own:
                c.close()

    def get_json(self, path, **kw):
        """GET path, assert 200, return the parsed JSON body."""
        r = self.request("GET", path, **kw)
        if r.status != 200 or r.json is None:
            raise AssertionError("GET %s: expected 200 JSON, got %r" % (path, r))
        return r.json

    def raw_socket(self, timeout=None):
        """A connected socket to the server."""
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout or 5 * SLOW)
        s.connect((self.host, self.port))
        return s

    def raw(self, data, method="GET", timeout=None, shut_write=False):
        """Sends exact bytes on a new connection and parses one response (a Response, or
        None if the server closed without answering). "{host}" and "{token}" in data are
        replaced by base_host and the token. shut_write half-closes after sending."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        data = data.replace(b"{host}", self.base_host.encode()).replace(
            b"{token}", (self.token or "").encode())
        s = self.raw_socket(timeout)
        try:
            try:
                s.sendall(data)
                if shut_write:
                    s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer (e.g. 413) before reading everything
            try:
                return read_response(s, method=method, timeout=timeout or 5 * SLOW)
            except (ConnectionResetError, BrokenPipeError):
                return None
        finally:
            s.close()

    def raw_exchange(self, data, timeout=2.0):
        """Sends bytes, then reads whatever comes back until the server closes or
        `timeout` seconds of silence. Returns the bytes read (possibly b'')."""
        s = self.raw_socket()
        got = b""
        try:
            try:
                s.sendall(data)
            except OSError:
                pass  # closed or stopped reading (e.g. after answering 431/413)
            s.settimeout(timeout)
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except (ConnectionResetError, BrokenPipeError):
                    break
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        return got

    # -- metrics ---------------------------------------------------------------------------

    def metrics(self):
        """GET /metrics parsed: list of (name, {labels}, float value)."""
        r = self.request("GET", "/metrics", token=False)
        if r.status != 200:
            raise AssertionError("GET /metrics -> %r" % r)
        return parse_metrics(r.text)


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text format -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError("unparsable metrics line: %r" % line)
        labels = {}
        if m.group(3):
            pos = 0
            s = m.group(3)
            while pos < len(s):
                lm = _LABEL_RE.match(s, pos)
                if not lm:
                    raise AssertionError("unparsable labels in %r" % line)
                labels[lm.group(1)] = (lm.group(2).replace('\\"', '"').replace("\\n", "\n")
                                       .replace("\\\\", "\\"))
                pos = lm.end()
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric_sum(samples, name, **match):
    """Sum of the samples called name whose labels include match (values: str, or a
    callable taking the label value)."""
    total = 0.0
    for n, labels, v in samples:
        if n != name:
            continue
        ok = True
        for k, want in match.items():
            have = labels.get(k)
            if callable(want):
                ok = have is not None and want(have)
            else:
                ok = have == want
            if not ok:
                break
        if ok:
            total += v
    return total


# --------------------------------------------------------------------------------------------
# unittest base


class TandemTestCase(unittest.TestCase):
    """One Redis + one tandemd per test class; see the module docstring.

    Subclasses may override server_env() / server_args() / redis_options() (classmethods).
    """

    redis = None
    srv = None

    @classmethod
    def server_env(cls):
        return {}

    @classmethod
    def server_args(cls):
        return []

    @classmethod
    def redis_options(cls):
        return {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = RedisServer(**cls.redis_options())
        try:
            cls.srv = Tandemd(cls.redis, env=cls.server_env(), args=cls.server_args())
        except Exception:
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.srv is not None:
                srv = cls.srv
                cls.srv = None
                try:
                    if srv.alive():
                        rc = srv.stop()
                        srv.check(require_alive=False)
                        if rc != 0:
                            raise AssertionError("tandemd exited with %s on SIGTERM:\n%s"
                                                 % (rc, _tail(srv.log_text())))
                finally:
                    srv.close()
        finally:
            if cls.redis is not None:
                cls.redis.close()
                cls.redis = None
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.redis is not None and not self.redis.alive():
            self.redis.restart()
        if self.srv is not None and not self.srv.alive():
            # An earlier test killed it (and failed for it); give this test a fresh one.
            self.srv.start()
        if self.redis is not None:
            try:
                os.kill(self.redis.proc.pid, signal.SIGCONT)
            except OSError:
                pass

    def tearDown(self):
        try:
            if self.srv is not None:
                self.srv.check()
        finally:
            super().tearDown()

    # -- assertions ------------------------------------------------------------------------

    def assertError(self, r, status, code):
        """r is the error envelope {"error":{"code","message"}} with this status and code."""
        self.assertEqual(r.status, status, r)
        self.assertIsNotNone(r.json, "error body is not JSON: %r" % r)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r)
        self.assertIsInstance(r.json.get("error"), dict, r)
        self.assertEqual(r.json["error"].get("code"), code, r)
        msg = r.json["error"].get("message")
        self.assertIsInstance(msg, str, r)
        self.assertTrue(msg.strip(), "empty error message: %r" % r)

    def assertSecurityHeaders(self, r):
        """Headers every response must carry."""
        self.assertEqual(r.header("Cache-Control"), "no-store", r)
        self.assertEqual((r.header("X-Content-Type-Options") or "").lower(), "nosniff", r)
        rid = r.header("X-Request-Id") or ""
        self.assertRegex(rid, r"^[0-9a-fA-F]{16}$", "X-Request-Id: %r" % r)
