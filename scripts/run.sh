#!/usr/bin/env bash
# `make run`: the embedded demo — a private redis-server, the demo data, tandemd on 127.0.0.1:8787; Ctrl-C stops it all.
#
# Environment (all optional):
#   TANDEM_LISTEN      where tandemd listens (default 127.0.0.1:8787)
#   TANDEM_REDIS_URL   use this Redis instead of starting one; the demo data is then loaded only
#                      with TANDEM_DEMO_LOAD=1 (it is somebody else's Redis)
#   TANDEM_KB          knowledge base (default deploy/demo/kb.jsonl)
#   TANDEM_RUN_DIR     state directory: token, Redis data, logs (default ./.run)
#   TANDEM_RUN_TIMEOUT seconds to wait for Redis and for tandemd to come up (default 20)
#   TANDEMD            the binary (default build/tandemd; e.g. build-asan/tandemd)
# Every other TANDEM_* variable (LLM, log level, ...) is passed through to tandemd.
#
# Why the children get their own sessions (setsid): a Ctrl-C in the terminal then reaches only
# this script, which stops tandemd first (so in-flight requests finish against a live Redis) and
# Redis last, instead of both racing to exit on the same SIGINT.
# shellcheck disable=SC2317  # functions called from traps look unreachable to shellcheck
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BIN=${TANDEMD:-$ROOT/build/tandemd}
RUN_DIR=${TANDEM_RUN_DIR:-$ROOT/.run}
LISTEN=${TANDEM_LISTEN:-127.0.0.1:8787}
KB=${TANDEM_KB:-$ROOT/deploy/demo/kb.jsonl}
WAIT_S=${TANDEM_RUN_TIMEOUT:-20}
EXTERNAL_REDIS=${TANDEM_REDIS_URL:-}
DEMO_IDS=(demo-refund demo-double-charge demo-fraud demo-repeat demo-handoff)

REDIS_PID="" TANDEMD_PID="" TAIL_PID="" SOCK_TMPDIR="" CLEANED=0 FORCE=0

say() { printf 'run: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }   # the EXIT trap stops whatever was started

# 1 when pid is a live process (a zombie child that has exited does not count).
alive() {
    local pid=$1 stat
    [ -n "$pid" ] || return 1
    # (not $(<file): under set -e its failure ends the script even inside `|| ...`)
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# SIGTERM, wait up to $3 seconds (a second Ctrl-C cuts the wait short), then SIGKILL; reap.
stop_pid() {
    local pid=$1 name=$2 limit=$(( ${3:-5} * 10 )) i=0
    [ -n "$pid" ] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        while alive "$pid" && [ "$i" -lt "$limit" ] && [ "$FORCE" = 0 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if alive "$pid"; then
            say "$name (pid $pid) did not stop; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    [ "$CLEANED" = 1 ] && return 0
    CLEANED=1
    set +e # stop everything we can, whatever fails on the way
    if [ -n "$TANDEMD_PID" ]; then
        stop_pid "$TANDEMD_PID" tandemd 7
        rm -f "$RUN_DIR/tandemd.pid"
    fi
    # tail exits by itself once tandemd is gone (--pid), after printing its last log lines.
    for _ in 1 2 3 4 5 6 7 8 9 10; do alive "$TAIL_PID" || break; sleep 0.1; done
    stop_pid "$TAIL_PID" tail 1
    if [ -n "$REDIS_PID" ]; then
        stop_pid "$REDIS_PID" redis-server 10
        rm -f "$RUN_DIR/redis.pid"
    fi
    [ -n "$SOCK_TMPDIR" ] && rm -rf "$SOCK_TMPDIR"
    return 0
}

on_signal() {
    # A second signal while stopping means "hurry": skip the grace periods.
    trap 'FORCE=1' INT TERM HUP
    say "stopping (SIG$1)..."
    cleanup
    say "stopped"
    exit 0
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap cleanup EXIT

# Shows the last lines of a log on stderr, indented.
show_log() {
    [ -s "$1" ] || { say "($1 is empty)"; return 0; }
    say "last lines of $1:"
    tail -n "${2:-20}" "$1" | sed 's/^/    /' >&2
}

# Prints a path relative to the repository when it is inside it (shorter banner).
rel() { case $1 in "$ROOT"/*) printf '%s' "${1#"$ROOT"/}" ;; *) printf '%s' "$1" ;; esac; }

# ---- checks -------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 not found (run: make deps)"
[ -x "$BIN" ] || die "$(rel "$BIN") not found or not executable: build it first (make run builds it)"
[ -r "$KB" ] || die "knowledge base $KB not readable (TANDEM_KB)"
case $WAIT_S in '' | *[!0-9]*) die "TANDEM_RUN_TIMEOUT must be a whole number of seconds" ;; esac

case $LISTEN in
    \[*\]:*) L_HOST=${LISTEN%\]:*}; L_HOST=${L_HOST#\[}; L_PORT=${LISTEN##*\]:} ;;
    *:*) L_HOST=${LISTEN%:*}; L_PORT=${LISTEN##*:} ;;
    *) die "TANDEM_LISTEN=$LISTEN: expected host:port, e.g. 127.0.0.1:8787" ;;
esac
case $L_PORT in '' | *[!0-9]* | 0) die "TANDEM_LISTEN=$LISTEN: expected host:port with a port from 1 to 65535" ;; esac
# The address curl should use: a wildcard listener is reached through loopback.
case $L_HOST in
    '' | 0.0.0.0) URL_HOST=127.0.0.1 ;;
    :: | ::0) URL_HOST='[::1]' ;;
    *:*) URL_HOST="[$L_HOST]" ;;
    *) URL_HOST=$L_HOST ;;
esac
BASE="http://$URL_HOST:$L_PORT"

# Is the listen port free? Same bind tandemd will do (SO_REUSEADDR, as libmicrohttpd sets it).
if ! why=$(python3 - "$L_HOST" "$L_PORT" <<'EOF'
import socket, sys
host, port = sys.argv[1] or "0.0.0.0", int(sys.argv[2])
try:
    fam, typ, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(fam, typ, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.close()
except OSError as e:
    print("in use" if e.errno == 98 else (e.strerror or str(e)))
    sys.exit(1)
EOF
); then
    if [ "$why" = "in use" ]; then
        die "port $L_PORT on $L_HOST is already in use (another tandemd or make run?). See who has it with: ss -ltnp 'sport = :$L_PORT' — stop it, or pick another port: TANDEM_LISTEN=127.0.0.1:$((L_PORT + 1)) make run"
    fi
    die "cannot listen on $LISTEN: $why"
fi

# ---- state directory, lock, leftovers of a killed run -----------------------------------
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
exec 9>"$RUN_DIR/lock"
flock -n 9 || die "another scripts/run.sh is already using $(rel "$RUN_DIR") (stop it first, or set TANDEM_RUN_DIR)"

# We hold the lock, so a live process named in a pid file belongs to a run that was killed
# without cleaning up (kill -9, closed terminal). Stop it only when it is provably that run's.
for name in tandemd redis; do
    f=$RUN_DIR/$name.pid
    [ -f "$f" ] || continue
    old=$(<"$f")
    rm -f "$f"
    case $old in '' | *[!0-9]*) continue ;; esac
    alive "$old" || continue
    ours=0
    if [ "$name" = redis ]; then
        # redis-server rewrites its command line, but it runs in its data directory.
        [ "$(readlink "/proc/$old/cwd" 2>/dev/null)" = "$RUN_DIR/redis" ] && ours=1
    elif tr '\0' '\n' 2>/dev/null <"/proc/$old/environ" | grep -qxF -- "TANDEM_TOKEN_FILE=$RUN_DIR/token"; then
        ours=1
    fi
    if [ "$ours" = 1 ]; then
        say "stopping $name (pid $old) left over from an earlier run"
        kill -TERM "$old" 2>/dev/null || true
        for _ in $(seq 50); do alive "$old" || break; sleep 0.1; done
    fi
done

# ---- token: 32 random bytes as hex, 0600; kept across runs so clients stay configured ----
TOKEN_FILE=$RUN_DIR/token
TOKEN=""
if [ -f "$TOKEN_FILE" ] && [ -O "$TOKEN_FILE" ] && [ "$(stat -c %a "$TOKEN_FILE")" = 600 ]; then
    TOKEN=$(tr -d ' \r\n' <"$TOKEN_FILE")
    [ "${#TOKEN}" -ge 32 ] || TOKEN=""
fi
TOKEN_NOTE="kept from the last run; delete it for a new one"
if [ -z "$TOKEN" ]; then
    rm -f "$TOKEN_FILE"
    TOKEN=$(od -An -vtx1 -N32 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$TOKEN" >"$TOKEN_FILE")
    TOKEN_NOTE="new"
fi

# ---- Redis -------------------------------------------------------------------------------
ping_redis() { python3 "$ROOT/scripts/demo_load.py" --redis "$1" --ping --quiet --timeout 1 "${@:2}"; }

if [ -n "$EXTERNAL_REDIS" ]; then
    REDIS_URL=$EXTERNAL_REDIS
    ping_redis "$REDIS_URL" --wait "$WAIT_S" || die "TANDEM_REDIS_URL does not answer (see above); unset it to use a private Redis"
    REDIS_NOTE="yours (TANDEM_REDIS_URL)"
else
    command -v redis-server >/dev/null || die "redis-server not found: run make deps, or set TANDEM_REDIS_URL"
    mkdir -p "$RUN_DIR/redis"
    # A unix socket in our 0700 directory: no port to collide, no TCP for other local users.
    # sun_path holds 107 bytes; a deep checkout gets a private directory elsewhere.
    SOCK=$RUN_DIR/redis.sock
    if [ "${#SOCK}" -gt 100 ]; then
        SOCK_TMPDIR=$(mktemp -d "${XDG_RUNTIME_DIR:-/tmp}/tandem-run.XXXXXX")
        SOCK=$SOCK_TMPDIR/redis.sock
    fi
    rm -f "$SOCK"
    cat >"$RUN_DIR/redis.conf" <<EOF
# Written by scripts/run.sh on each start; edits are overwritten.
port 0
bind 127.0.0.1
protected-mode yes
unixsocket $SOCK
unixsocketperm 700
dir $RUN_DIR/redis
dbfilename dump.rdb
logfile $RUN_DIR/redis.log
daemonize no
EOF
    : >"$RUN_DIR/redis.log"
    setsid redis-server "$RUN_DIR/redis.conf" </dev/null >>"$RUN_DIR/redis.log" 2>&1 9>&- &
    REDIS_PID=$!
    echo "$REDIS_PID" >"$RUN_DIR/redis.pid"
    REDIS_URL=unix://$SOCK
    REDIS_NOTE="private redis-server (pid $REDIS_PID, data in $(rel "$RUN_DIR")/redis/)"
    deadline=$((SECONDS + WAIT_S))
    until [ -S "$SOCK" ] && ping_redis "$REDIS_URL" 2>/dev/null; do
        if ! alive "$REDIS_PID"; then
            show_log "$RUN_DIR/redis.log"
            die "redis-server exited during start-up"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$RUN_DIR/redis.log"
            die "redis-server did not answer PING within ${WAIT_S}s"
        fi
        sleep 0.1
    done
fi

DEMO_LOADED=0
if [ -z "$EXTERNAL_REDIS" ] || [ "${TANDEM_DEMO_LOAD:-0}" = 1 ]; then
    python3 "$ROOT/scripts/demo_load.py" --redis "$REDIS_URL" --quiet \
        || die "loading the demo data into Redis failed (see above)"
    DEMO_LOADED=1
fi

# ---- tandemd -----------------------------------------------------------------------------
: >"$RUN_DIR/tandemd.log"
env -u TANDEM_TOKEN -u TANDEM_RUN_DIR -u TANDEM_DEMO_LOAD -u TANDEM_RUN_TIMEOUT \
    TANDEM_LISTEN="$LISTEN" TANDEM_REDIS_URL="$REDIS_URL" TANDEM_KB="$KB" \
    TANDEM_TOKEN_FILE="$TOKEN_FILE" TANDEM_LOG_FORMAT="${TANDEM_LOG_FORMAT:-text}" \
    setsid "$BIN" </dev/null >>"$RUN_DIR/tandemd.log" 2>&1 9>&- &
TANDEMD_PID=$!
echo "$TANDEMD_PID" >"$RUN_DIR/tandemd.pid"

healthy() {
    python3 - "$BASE/healthz" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}
deadline=$((SECONDS + WAIT_S))
until healthy; do
    if ! alive "$TANDEMD_PID"; then
        wait "$TANDEMD_PID" && rc=0 || rc=$?
        TANDEMD_PID=""
        show_log "$RUN_DIR/tandemd.log"
        die "tandemd exited during start-up (status $rc)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        show_log "$RUN_DIR/tandemd.log"
        die "tandemd did not answer $BASE/healthz within ${WAIT_S}s"
    fi
    sleep 0.1
done

# ---- banner ------------------------------------------------------------------------------
AUTH="Authorization: Bearer $TOKEN"
KB_N="?"
[ -f "$KB" ] && KB_N=$(grep -c '[^[:space:]]' "$KB" || true)
# shellcheck disable=SC2016  # printed for the user's shell to expand
if [ -n "$EXTERNAL_REDIS" ]; then ADD_REDIS='"$TANDEM_REDIS_URL"'; else ADD_REDIS=$REDIS_URL; fi
cat <<EOF

  tandem demo is running — $("$BIN" --version 2>/dev/null | head -n 1 || echo tandemd)
    API      $BASE   (pid $TANDEMD_PID)
    token    $TOKEN
             ($(rel "$TOKEN_FILE"), $TOKEN_NOTE)
    Redis    $REDIS_NOTE
    KB       $(rel "$KB") ($KB_N entries)
EOF
if [ "$DEMO_LOADED" = 1 ]; then
    printf '    demo     %s\n' "${DEMO_IDS[*]}"
else
    printf '    demo     not loaded into your Redis (TANDEM_DEMO_LOAD=1 loads it)\n'
fi
cat <<EOF

  Try (copy and paste):
    curl -s $BASE/healthz
    curl -s -H '$AUTH' $BASE/v1/conversations/demo-refund/context
    curl -s -H '$AUTH' '$BASE/v1/conversations/demo-double-charge/suggestions?k=3'
    curl -s -H '$AUTH' $BASE/v1/conversations/demo-repeat/summary
    curl -s -X PUT -H '$AUTH' -H 'Content-Type: application/json' -d '{"conversation_id":"demo-fraud"}' $BASE/v1/focus
    curl -s -H '$AUTH' '$BASE/v1/focus/suggestions/1?format=text'
    curl -N -H '$AUTH' $BASE/v1/conversations/demo-refund/events
  and, in another terminal, a new customer message for the events stream above:
    python3 scripts/demo_load.py --redis $ADD_REDIS --add-message demo-refund customer "Any news on my refund?"

  Logs: $(rel "$RUN_DIR")/tandemd.log$( [ -n "$REDIS_PID" ] && printf ', %s/redis.log' "$(rel "$RUN_DIR")"). Ctrl-C stops everything.

EOF

# Follow the log until tandemd exits or a signal arrives (the trap then stops everything).
tail -n +1 -f -s 0.2 --pid="$TANDEMD_PID" "$RUN_DIR/tandemd.log" 9>&- &
TAIL_PID=$!
wait "$TANDEMD_PID" && rc=0 || rc=$?
TANDEMD_PID=""
sleep 0.2
how="status $rc"
[ "$rc" -gt 128 ] && how="killed by signal $((rc - 128))"
say "tandemd exited by itself ($how); stopping Redis"
show_log "$RUN_DIR/tandemd.log" 10
exit 1
