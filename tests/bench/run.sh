#!/usr/bin/env bash
# make bench: tandemd's speed next to a bare libmicrohttpd server, measured in one run.
#
# Starts a private redis-server, loads the cdp sample data (KB, transcripts, conversations built
# from the dev cases), starts build/tandemd and tests/bench/bare_server on free loopback ports and
# measures: requests/s and latency (wrk) for the bare baseline and GET …/suggestions warm and cold,
# …/summary and …/context; suggestions on a guaranteed cache miss; XADD → SSE delivery over 1,000
# messages; 1,000 SSE subscribers and tandemd's RSS; RSS without a KB, with the cdp KB and with a
# 10,000-entry KB; the cost of one new message in a 10- vs a 10,000-message conversation.
# Prints a table and writes build/bench.json (see tests/bench/README.md). Targets are shown, never
# enforced: the exit code is 0 whenever the bench itself ran.
#
# Environment: TANDEM_DATA_DIR (default ../shared/data from the repo root), BUILD (build),
# TANDEM_THREADS (both servers), BENCH_DURATION (5s), BENCH_CONNECTIONS (16), BENCH_WRK_THREADS (2),
# BENCH_PASSES (2), BENCH_MESSAGES (1000), BENCH_SUBSCRIBERS (1000), BENCH_SSE_CONVS (100),
# BENCH_LOG_LEVEL (warn).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
DATA_DIR=${TANDEM_DATA_DIR:-$ROOT/../shared/data}
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNECTIONS:-16}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
PASSES=${BENCH_PASSES:-2}
MESSAGES=${BENCH_MESSAGES:-1000}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
export BENCH_SSE_CONVS=${BENCH_SSE_CONVS:-100}
export BENCH_COLD_CONVS=${BENCH_COLD_CONVS:-200}
LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
OUT=$BUILD/bench
RES=$OUT/results

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

for tool in wrk redis-server redis-cli curl python3 pkg-config; do
    command -v "$tool" >/dev/null || die "$tool is missing: run 'make deps' (Debian packages: wrk redis-server redis-tools curl)"
done
[ -f "$DATA_DIR/cdp/kb.jsonl" ] || die "no sample data at $DATA_DIR (set TANDEM_DATA_DIR to the directory holding cdp/)"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
[ -x "$BUILD/tandemd" ] || make -s BUILD="$BUILD" "$BUILD/tandemd"

# every TANDEM_* setting of the caller goes, except the thread count (both servers use it)
for v in $(compgen -e | grep '^TANDEM_' || true); do
    [ "$v" = TANDEM_THREADS ] || unset "$v"
done

# ---- processes: every one we start is stopped on exit ----
TMP=$(mktemp -d /tmp/tandem-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # removes $1 from PIDS after we stopped it ourselves
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

# 1,000 streams need 1,000+ descriptors in tandemd and in the client
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SUBSCRIBERS + 256)) ]; then
    say "open-file limit $(ulimit -n) is below $((SUBSCRIBERS + 256)); the subscriber test will fall short"
fi

# ---- build the bench tools with the Makefile's own CFLAGS ----
mkdir -p "$OUT" "$RES"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/results
rm -f "$RES"/*.json
say "building bench tools"
# shellcheck disable=SC2016 # $(CFLAGS) is for make, not for the shell
CFLAGS_MK=$(make -s --no-print-directory BUILD="$BUILD" -f Makefile -f - bench-print-cflags <<<'bench-print-cflags: ; @echo $(CFLAGS)')
CC=${CC:-cc}
# shellcheck disable=SC2086,SC2046 # flag lists are meant to split
$CC $CFLAGS_MK -o "$OUT/bare_server" tests/bench/bare_server.c $(pkg-config --libs libmicrohttpd) -lpthread
# shellcheck disable=SC2086,SC2046 # flag lists are meant to split
$CC $CFLAGS_MK -o "$OUT/sse_latency" tests/bench/sse_latency.c $(pkg-config --libs hiredis) -lm
CLIENT=$OUT/sse_latency

# ---- Redis and data ----
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    --loglevel warning --logfile "$OUT/redis.log" &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$RPORT" ping >/dev/null || die "redis-server did not start (see $OUT/redis.log)"
say "loading conversations into redis on port $RPORT"
python3 tests/bench/bench_data.py redis "$DATA_DIR" "tandem:" | redis-cli -p "$RPORT" --pipe >"$TMP/pipe.out"
grep -q 'errors: 0' "$TMP/pipe.out" || die "loading Redis failed: $(cat "$TMP/pipe.out")"
python3 tests/bench/bench_data.py texts "$DATA_DIR" >"$TMP/texts.txt"
python3 tests/bench/bench_data.py kb10k "$DATA_DIR" 10000 >"$TMP/kb10k.jsonl"
: >"$TMP/empty.jsonl"

TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
BASE_ARGS=(--token "$TOKEN" --redis-port "$RPORT" --texts "$TMP/texts.txt")

# ---- tandemd ----
TPID=
TPORT=
start_tandemd() { # $1 = label, $2 = KB path or "" for none
    TPORT=$(free_port)
    local env=(TANDEM_LISTEN="127.0.0.1:$TPORT" TANDEM_REDIS_URL="redis://127.0.0.1:$RPORT/0"
               TANDEM_TOKEN="$TOKEN" TANDEM_LOG_LEVEL="$LOG_LEVEL" XDG_RUNTIME_DIR="$TMP")
    [ -n "$2" ] && env+=(TANDEM_KB="$2")
    env "${env[@]}" "$BUILD/tandemd" 2>"$OUT/tandemd-$1.log" &
    TPID=$!
    PIDS+=("$TPID")
    for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$TPORT/healthz" >/dev/null 2>&1 && break
        kill -0 "$TPID" 2>/dev/null || die "tandemd ($1) exited at start-up; see $OUT/tandemd-$1.log"
        sleep 0.05
    done
    curl -fsS "http://127.0.0.1:$TPORT/healthz" >/dev/null || die "tandemd ($1) is not healthy"
    sleep 0.5 # settle before RSS readings
}
stop_tandemd() {
    kill -TERM "$TPID" 2>/dev/null || true
    wait "$TPID" 2>/dev/null || true
    forget_pid "$TPID"
}
status_of() { # GET path on tandemd with the token; prints the status code
    curl -s --max-time 3 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$TPORT$1" || true
}
put_json() { # name key value: adds {"key": value} to results/name.json
    python3 - "$RES/$1.json" "$2" "$3" <<'EOF'
import json, os, sys
path, key, value = sys.argv[1:4]
d = json.load(open(path)) if os.path.exists(path) else {}
try:
    d[key] = json.loads(value)
except ValueError:
    d[key] = value
json.dump(d, open(path, "w"))
EOF
}
skip() { put_json skipped "$1" "\"$2\""; say "skipped $1: $2"; }

wrk_run() { # name url [cycle path]; writes results/wrk_<name>.json
    local name=$1 url=$2 cycle=${3:-0} path=${4:-/}
    say "wrk $name ($DURATION, $CONNS connections)"
    BENCH_TOKEN=$TOKEN BENCH_CYCLE=$cycle BENCH_PATH=$path \
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s tests/bench/wrk.lua "$url" >"$OUT/wrk_$name.txt" 2>&1 || true
    grep '^BENCHJSON ' "$OUT/wrk_$name.txt" | sed 's/^BENCHJSON //' >"$RES/wrk_$name.json" || true
    [ -s "$RES/wrk_$name.json" ] || skip "wrk_$name" "wrk gave no result (see $OUT/wrk_$name.txt)"
}

client_run() { # name mode args...; writes results/<name>.json
    local name=$1
    shift
    say "sse_latency $*"
    local rc=0
    "$CLIENT" "$@" --port "$TPORT" "${BASE_ARGS[@]}" >"$RES/$name.json" 2>"$OUT/$name.err" || rc=$?
    [ "$rc" = 0 ] || echo "sse_latency exit status $rc" >>"$OUT/$name.err"
    if ! kill -0 "$TPID" 2>/dev/null; then
        echo "tandemd is gone (see $OUT/tandemd-*.log)" >>"$OUT/$name.err"
    fi
    if ! grep -q '"mode"' "$RES/$name.json"; then
        rm -f "$RES/$name.json"
        skip "$name" "$(grep -v '^sse_latency exit' "$OUT/$name.err" | tail -n1 | tr '"' "'" | tr -d "\\\\") (exit $rc)"
    fi
}

START=$(date +%s)
put_json meta threads "${TANDEM_THREADS:-0}"
put_json meta log_level "\"$LOG_LEVEL\""
put_json meta wrk "\"-t$WRK_THREADS -c$CONNS -d$DURATION\""
put_json meta passes "$PASSES"
put_json meta loadavg_start "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
put_json meta cpus "$(nproc)"
put_json meta kb10k_bytes "$(stat -c %s "$TMP/kb10k.jsonl")"
put_json meta cdp_kb_entries "$(grep -c . "$DATA_DIR/cdp/kb.jsonl")"

# ---- 1. memory without a KB ----
say "tandemd without a KB"
start_tandemd nokb ""
put_json memory rss_kb_no_kb "$(rss_kb "$TPID")"
stop_tandemd

# ---- 2. the cdp KB: HTTP throughput, misses, SSE latency, per-message cost ----
say "tandemd with the cdp KB"
start_tandemd cdp "$DATA_DIR/cdp/kb.jsonl"
put_json memory rss_kb_cdp_kb "$(rss_kb "$TPID")"
code=$(curl -s -o "$TMP/import.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$DATA_DIR/cdp/transcripts.jsonl" \
    "http://127.0.0.1:$TPORT/v1/transcripts" || true)
if [ "$code" = 200 ] || [ "$code" = 201 ] || [ "$code" = 202 ]; then
    put_json memory transcripts_import "$(cat "$TMP/import.json")"
else
    skip transcripts "POST /v1/transcripts answered $code"
fi
put_json memory rss_kb_cdp_kb_transcripts "$(rss_kb "$TPID")"

TBASE="http://127.0.0.1:$TPORT"
BPORT=$(free_port)
"$OUT/bare_server" "$BPORT" >"$TMP/bare.out" &
BPID=$!
PIDS+=("$BPID")
for _ in $(seq 100); do grep -q ready "$TMP/bare.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$TMP/bare.out" || die "bare_server did not start"

sugg=$(status_of "/v1/conversations/bench-warm/suggestions?k=3")
summ=$(status_of "/v1/conversations/bench-cold-0/summary")
# the events route works when a stream opens (curl gives up after a second; the stream stays open)
events=$(curl -s --max-time 1 -o /dev/null -w '%{http_code} %{content_type}' -H "Authorization: Bearer $TOKEN" \
    "$TBASE/v1/conversations/bench-warm/events" || true)
case $events in "200 text/event-stream"*) EVENTS_OK=1 ;; *) EVENTS_OK=0 ;; esac
events="answered: $events"

# one idle subscriber keeps bench-warm watched (in-process cache) for the whole HTTP section
HOLD=0
if [ "$sugg" = 200 ] && [ "$EVENTS_OK" = 1 ]; then
    "$CLIENT" hold --conv bench-warm --port "$TPORT" "${BASE_ARGS[@]}" >"$TMP/hold.out" 2>"$OUT/hold.err" &
    HPID=$!
    PIDS+=("$HPID")
    for _ in $(seq 100); do grep -q ready "$TMP/hold.out" 2>/dev/null && break; sleep 0.05; done
    if grep -q ready "$TMP/hold.out"; then
        HOLD=1
        sleep 0.3
    else
        skip wrk_suggestions_warm "no SSE subscriber could hold bench-warm: $(tail -n1 "$OUT/hold.err")"
    fi
elif [ "$sugg" = 200 ]; then
    skip wrk_suggestions_warm "GET …/events is not available ($events): nothing keeps a conversation watched"
fi

# The rows alternate, PASSES times, and report.py keeps each row's best pass: on a shared machine
# a neighbour's burst then hurts one pass of one row, not the ratio.
for pass in $(seq "$PASSES"); do
    wrk_run "bare_$pass" "http://127.0.0.1:$BPORT/"
    wrk_run "context_$pass" "$TBASE/" "$BENCH_COLD_CONVS" "/v1/conversations/bench-cold-%d/context"
    if [ "$HOLD" = 1 ]; then
        wrk_run "suggestions_warm_$pass" "$TBASE/v1/conversations/bench-warm/suggestions?k=3"
    fi
    if [ "$sugg" = 200 ]; then
        wrk_run "suggestions_cold_$pass" "$TBASE/" "$BENCH_COLD_CONVS" "/v1/conversations/bench-cold-%d/suggestions?k=3"
    fi
    if [ "$summ" = 200 ]; then
        wrk_run "summary_$pass" "$TBASE/" "$BENCH_COLD_CONVS" "/v1/conversations/bench-cold-%d/summary"
    fi
done
if [ "$HOLD" = 1 ]; then
    kill "$HPID" 2>/dev/null || true
    wait "$HPID" 2>/dev/null || true
    forget_pid "$HPID"
fi
kill "$BPID" 2>/dev/null || true
wait "$BPID" 2>/dev/null || true
forget_pid "$BPID"

if [ "$sugg" = 200 ]; then
    client_run suggestions_miss miss --conv bench-miss --messages 300
else
    skip wrk_suggestions_warm "GET …/suggestions answered $sugg"
    skip wrk_suggestions_cold "GET …/suggestions answered $sugg"
    skip suggestions_miss "GET …/suggestions answered $sugg"
fi
[ "$summ" = 200 ] || skip wrk_summary "GET …/summary answered $summ"

if [ "$EVENTS_OK" = 1 ]; then
    client_run sse_latency latency --conv bench-lat --messages "$MESSAGES" --interval-us 3000
    # one new message at a time, deleted again, so each conversation keeps its length (10 / 10,000)
    # (100 messages: the context window, 50 by default, is full — the fair reference for "flat")
    client_run cost_short latency --conv bench-short --messages 100 --interval-us 2000 --sequential --xdel
    client_run cost_mid latency --conv bench-mid --messages 100 --interval-us 2000 --sequential --xdel
    client_run cost_long latency --conv bench-long --messages 100 --interval-us 2000 --sequential --xdel
else
    skip sse_latency "GET …/events is not available ($events)"
    skip cost_short "GET …/events is not available ($events)"
    skip cost_mid "GET …/events is not available ($events)"
    skip cost_long "GET …/events is not available ($events)"
fi
put_json memory rss_kb_cdp_after_load "$(rss_kb "$TPID")"
stop_tandemd

# ---- SLOT: LLM overhead (issue 4 item 7) ----
# tandemd (cdp KB) asks tests/fake_llm/fake_openai.py on loopback. tests/bench/llm_overhead.py adds a
# customer message before every GET …/suggestions?engine=llm (the LLM cache misses), then replays
# the exact body tandem sent straight to the fake: tandem's latency minus the fake's own, for the
# fake's "normal" mode and with a fixed 50 ms before its first byte. Writes results/llm.json.
LLM_REQUESTS=${BENCH_LLM_REQUESTS:-200}
say "tandemd with the fake LLM server: engine=llm overhead ($LLM_REQUESTS requests per mode)"
python3 tests/fake_llm/fake_openai.py --port 0 >"$TMP/fake_llm.out" 2>"$OUT/fake_llm.err" &
FPID=$!
PIDS+=("$FPID")
for _ in $(seq 100); do grep -q '^PORT ' "$TMP/fake_llm.out" 2>/dev/null && break; sleep 0.05; done
FPORT=$(awk '/^PORT / {print $2; exit}' "$TMP/fake_llm.out")
if [ -z "$FPORT" ]; then
    skip llm "the fake LLM server did not start (see $OUT/fake_llm.err)"
else
    # start_tandemd passes the exported environment on; the breaker must not open mid-run
    export TANDEM_LLM_URL="http://127.0.0.1:$FPORT/v1" TANDEM_LLM_MODEL=fake-model \
        TANDEM_LLM_TIMEOUT_MS=4000 TANDEM_LLM_BREAKER_FAILURES=1000
    start_tandemd llm "$DATA_DIR/cdp/kb.jsonl"
    unset TANDEM_LLM_URL TANDEM_LLM_MODEL TANDEM_LLM_TIMEOUT_MS TANDEM_LLM_BREAKER_FAILURES
    rc=0
    python3 tests/bench/llm_overhead.py --tandem-port "$TPORT" --token "$TOKEN" --redis-port "$RPORT" \
        --fake-port "$FPORT" --texts "$TMP/texts.txt" --requests "$LLM_REQUESTS" \
        --modes "normal,slow_first_byte:50" --conv-prefix bench-cold-1 >"$RES/llm.json" 2>"$OUT/llm.err" || rc=$?
    if [ "$rc" != 0 ] || ! grep -q '"modes"' "$RES/llm.json"; then
        rm -f "$RES/llm.json"
        skip llm "$(tail -n1 "$OUT/llm.err" | tr '"' "'" | tr -d "\\\\") (exit $rc)"
    fi
    stop_tandemd
fi
kill "$FPID" 2>/dev/null || true
wait "$FPID" 2>/dev/null || true
forget_pid "$FPID"

# ---- 3. a 10,000-entry KB: memory, and 1,000 subscribers on one process ----
say "tandemd with a 10,000-entry KB"
start_tandemd kb10k "$TMP/kb10k.jsonl"
put_json memory rss_kb_10k_kb "$(rss_kb "$TPID")"
if [ "$EVENTS_OK" = 1 ]; then
    client_run sse_fanout fanout --conv-prefix bench-fan --convs "$BENCH_SSE_CONVS" --subscribers "$SUBSCRIBERS" \
        --rounds 3 --interval-us 3000 --burst --pid "$TPID" --timeout-ms 10000
else
    skip sse_fanout "GET …/events is not available ($events)"
fi
stop_tandemd

put_json meta seconds "$(($(date +%s) - START))"
put_json meta loadavg_end "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
python3 tests/bench/report.py "$RES" "$BUILD/bench.json"
