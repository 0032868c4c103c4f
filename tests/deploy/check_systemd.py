#!/usr/bin/env python3
"""Checks deploy/systemd/tandem.service without a running systemd (CI has none).

1. `systemd-analyze --user verify` accepts the unit with no warning at all (unknown keys and bad
   values are only warnings there, so any output fails), with %h pointing at a home that has
   ~/.local/bin/tandemd.
2. `systemd-analyze --user security --offline=yes` exposure stays at or below the ratchet.
3. The sandbox fits tandemd: tandemd runs under strace through a real workload (token created
   in $XDG_RUNTIME_DIR/tandem, Redis, the API, SSE, SIGHUP reload, SIGTERM), and every system
   call it made must pass the unit's SystemCallFilter= (expanded with systemd-analyze
   syscall-filter), every socket family RestrictAddressFamilies=, and no mapping may be writable
   and executable (MemoryDenyWriteExecute=). What this does not cover: code paths the workload
   does not reach (the LLM client over https is not exercised), and the user manager itself.

Usage: check_systemd.py TANDEMD
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.environ.get("TANDEM_UNIT") or os.path.join(ROOT, "deploy", "systemd", "tandem.service")
EXPOSURE_MAX = "6.4"  # systemd 252's score of the unit today; lower it when hardening improves

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


def unit_values(key):
    vals = []
    for line in open(UNIT, encoding="utf-8"):
        m = re.match(rf"^{key}=(.*)$", line.strip())
        if m:
            vals.append(m.group(1).strip())
    return vals


_groups = {}


def expand(name):
    """Syscall names of a systemd syscall group (recursively) or of a single name."""
    if not name.startswith("@"):
        return {name}
    if name not in _groups:
        out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True).stdout
        names = set()
        for line in out.splitlines()[1:]:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("@"):
                names |= expand(s)
            else:
                names.add(s)
        _groups[name] = names
    return _groups[name]


def allowed_syscalls():
    allowed = None
    for v in unit_values("SystemCallFilter"):
        deny = v.startswith("~")
        names = set()
        for item in v.lstrip("~").split():
            names |= expand(item)
        if deny:
            allowed = (allowed if allowed is not None else set()) - names
        else:
            allowed = (allowed or set()) | names
    return allowed


def analyze_checks(tandemd, home, run):
    os.makedirs(os.path.join(home, ".local", "bin"))
    shutil.copy(tandemd, os.path.join(home, ".local", "bin", "tandemd"))
    env = dict(os.environ, HOME=home, XDG_RUNTIME_DIR=run)
    r = subprocess.run(["systemd-analyze", "--user", "verify", UNIT], capture_output=True, text=True, env=env)
    check("systemd-analyze --user verify: no errors and no warnings", r.returncode == 0 and not (r.stdout + r.stderr).strip(),
          (r.stdout + r.stderr).strip()[:500])
    r = subprocess.run(["systemd-analyze", "--user", "security", "--offline=yes", f"--threshold={float(EXPOSURE_MAX) * 10:.0f}",
                        UNIT], capture_output=True, text=True, env=env)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    check(f"systemd-analyze security: exposure {m.group(1) if m else '?'} <= {EXPOSURE_MAX}",
          m is not None and float(m.group(1)) <= float(EXPOSURE_MAX), r.stderr.strip()[:300])


FAMILIES = {"AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}


def sandbox_checks(tandemd, run):
    if not shutil.which("strace") or not shutil.which("redis-server"):
        check("strace and redis-server are installed (make deps)", False)
        return
    allowed = allowed_syscalls()
    check("the unit's SystemCallFilter expands to a syscall list", bool(allowed) and "read" in allowed)
    fams = set()
    for v in unit_values("RestrictAddressFamilies"):
        fams |= {FAMILIES.get(f, -1) for f in v.split()}
    tmp = tempfile.mkdtemp(prefix="tandem-sd-")
    procs = []
    child = None
    try:
        rport, tport = free_port(), free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(redis)
        time.sleep(0.3)
        subprocess.run(["redis-cli", "-p", str(rport), "XADD", "tandem:conv:{sd-1}:msgs", "*", "role", "customer",
                        "text", "I was charged twice, where is my refund?"], capture_output=True)
        os.makedirs(os.path.join(run, "tandem"), mode=0o700, exist_ok=True)  # what RuntimeDirectory= makes
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        env.update(XDG_RUNTIME_DIR=run, TANDEM_LISTEN=f"127.0.0.1:{tport}", TANDEM_LOG_FORMAT="text",
                   TANDEM_REDIS_URL=f"redis://127.0.0.1:{rport}/0", TANDEM_KB=os.path.join(ROOT, "deploy", "k8s", "kb"))
        trace = os.path.join(tmp, "strace.out")
        td = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, tandemd], env=env,
                              stdout=open(os.path.join(tmp, "tandemd.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(td)
        base = f"http://127.0.0.1:{tport}"
        up = False
        for _ in range(100):
            try:
                up = urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
                break
            except OSError:
                time.sleep(0.1)
        check("tandemd starts under strace", up, open(os.path.join(tmp, "tandemd.log")).read()[-400:])
        # Signals go to tandemd, strace's child: strace itself would detach on them.
        try:
            with open(f"/proc/{td.pid}/task/{td.pid}/children") as f:
                child = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            child = None
        check("found tandemd under strace", child is not None)
        tok_path = os.path.join(run, "tandem", "token")
        check("the token is created in $XDG_RUNTIME_DIR/tandem/token, mode 0600",
              os.path.exists(tok_path) and (os.stat(tok_path).st_mode & 0o777) == 0o600)
        if up:
            token = open(tok_path).read().strip()
            for path in ["/readyz", "/metrics", "/v1/conversations/sd-1/context", "/v1/conversations/sd-1/suggestions",
                         "/v1/conversations/sd-1/summary"]:
                req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
                try:
                    urllib.request.urlopen(req, timeout=5).read()
                except OSError:
                    pass
            s = socket.create_connection(("127.0.0.1", tport), timeout=3)
            s.sendall((f"GET /v1/conversations/sd-1/events HTTP/1.1\r\nHost: 127.0.0.1:{tport}\r\n"
                       f"Authorization: Bearer {token}\r\n\r\n").encode())
            time.sleep(0.5)
            subprocess.run(["redis-cli", "-p", str(rport), "XADD", "tandem:conv:{sd-1}:msgs", "*", "role", "customer",
                            "text", "any news?"], capture_output=True)
            time.sleep(0.5)
            s.close()
            if child:
                os.kill(child, signal.SIGHUP)  # reload the KB
                time.sleep(0.3)
        if child:
            os.kill(child, signal.SIGTERM)
        try:
            rc = td.wait(10)  # strace exits with its tracee's status
        except subprocess.TimeoutExpired:
            if child:
                os.kill(child, signal.SIGKILL)
            td.kill()
            rc = td.wait()
        check("tandemd (under strace) exits 0 on SIGTERM", rc == 0, f"exit {rc}")
        calls, bad_fam, wx = set(), set(), []
        for line in open(trace, encoding="utf-8", errors="replace"):
            m = re.match(r"^\d+\s+(\w+)\(", line)
            if not m:
                continue
            calls.add(m.group(1))
            if m.group(1) == "socket":
                f = re.match(r"^\d+\s+socket\((AF_\w+)", line)
                if f and FAMILIES.get(f.group(1), -1) not in fams:
                    bad_fam.add(f.group(1))
            if m.group(1) in ("mmap", "mprotect") and "PROT_WRITE" in line and "PROT_EXEC" in line:
                wx.append(line.strip())
        # execve of tandemd itself happens before the filter applies (systemd installs it first,
        # then execs): it is allowed by @system-service anyway.
        check(f"strace saw the workload ({len(calls)} distinct system calls)", len(calls) > 20)
        denied = sorted(c for c in calls if c not in allowed)
        check("every system call tandemd made passes SystemCallFilter=", not denied, ", ".join(denied))
        check("every socket family it opened passes RestrictAddressFamilies=", not bad_fam, ", ".join(sorted(bad_fam)))
        check("no writable+executable mapping (MemoryDenyWriteExecute=)", not wx, "; ".join(wx[:3]))
    finally:
        if child:
            try:
                os.kill(child, signal.SIGKILL)  # only if a failure above left it running
            except ProcessLookupError:
                pass
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) != 2:
        print("usage: check_systemd.py TANDEMD")
        return 2
    tandemd = os.path.abspath(sys.argv[1])
    if not shutil.which("systemd-analyze"):
        check("systemd-analyze is installed (package systemd)", False)
    else:
        tmp = tempfile.mkdtemp(prefix="tandem-unit-")
        try:
            home, run = os.path.join(tmp, "home"), os.path.join(tmp, "run")
            os.makedirs(run, mode=0o700)
            analyze_checks(tandemd, home, run)
            sandbox_checks(tandemd, run)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
