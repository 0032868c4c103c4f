#!/usr/bin/env bash
# Builds every tests/fuzz/fuzz_*.c with libFuzzer (clang -fsanitize=fuzzer,address,undefined)
# against the sources in src/ (compiled here with the same sanitizers, not build/libtandem.a)
# and runs each for a set time, with its committed seeds in tests/fuzz/corpus/<name>/.
#   scripts/fuzz.sh [seconds] [name...]     # default 60 s each, every target
#   FUZZ_SECONDS=10 scripts/fuzz.sh          # what CI runs
#   FUZZ_JOBS=2 scripts/fuzz.sh              # compile with 2 jobs (default 2)
#   TANDEM_FUZZ_SKIP_KNOWN=1 scripts/fuzz.sh # skip checks for reported, not yet fixed bugs
# New inputs go to build-fuzz/corpus-<name>/ (not committed); a failure leaves its input in
# build-fuzz/crashes/<name>-crash-<sha1> and its log in build-fuzz/logs/<name>.log.
# Ends with one line "N passed, N failed"; exit 1 when a target crashed or did not build.
set -u
cd "$(dirname "$0")/.." || exit 2

SECONDS_EACH=${1:-${FUZZ_SECONDS:-60}}
shift $(($# > 0 ? 1 : 0))
ONLY=("$@")
OUT=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-2}
CC=${FUZZ_CC:-clang}

if ! command -v "$CC" >/dev/null; then
    echo "fuzz: $CC not found (apt-get install clang)" >&2
    exit 2
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS_COMMON="-g -O1 -fno-omit-frame-pointer -std=c11 -D_GNU_SOURCE -Iinclude -I$OUT/gen
  -DTANDEM_VERSION=\"fuzz\" -DTANDEM_GITREV=\"fuzz\" $(pkg-config --cflags libmicrohttpd hiredis jansson libcurl)"
LIBS="$(pkg-config --libs libmicrohttpd hiredis jansson libcurl) -lstemmer -lpthread -lm"

mkdir -p "$OUT/obj" "$OUT/gen" "$OUT/crashes" "$OUT/logs"

# ---- the sources, instrumented (fuzzer-no-link: coverage without a second main) ---------------
data_files=$(ls data/*.txt data/*.json data/*.jsonl 2>/dev/null)
gen="$OUT/gen/embedded_data.c"
if [ ! -f "$gen" ] || [ -n "$(find $data_files scripts/embed.sh -newer "$gen" 2>/dev/null)" ] ||
    [ "$(grep -c '^  {"' "$gen")" != "$(echo "$data_files" | wc -w)" ]; then
    # shellcheck disable=SC2086
    bash scripts/embed.sh "$gen" $data_files
fi
newest_header=$(ls -t include/tandem/*.h | head -1)
objs=()
pending=()
for src in src/*.c "$OUT/gen/embedded_data.c"; do
    [ "$src" = src/main.c ] && continue
    obj="$OUT/obj/$(basename "${src%.c}").o"
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then
        pending+=("$src:$obj")
    fi
done
build_one() {
    local src=${1%%:*} obj=${1##*:}
    # shellcheck disable=SC2086
    $CC $CFLAGS_COMMON -fsanitize=fuzzer-no-link $SAN -c -o "$obj" "$src" 2>"$obj.err" ||
        { echo "fuzz: cannot compile $src:"; cat "$obj.err"; return 1; }
    rm -f "$obj.err"
}
export -f build_one
export CC CFLAGS_COMMON SAN
if [ ${#pending[@]} -gt 0 ]; then
    echo "==== compiling ${#pending[@]} sources with the fuzzer flags"
    printf '%s\n' "${pending[@]}" | xargs -P "$JOBS" -I{} bash -c 'build_one "$1"' _ {} || exit 2
fi
rm -f "$OUT/libtandem-fuzz.a"
ar rcs "$OUT/libtandem-fuzz.a" "${objs[@]}"

# ---- per-target options ----------------------------------------------------------------------
opts_for() {
    case "$1" in
    redact) echo "-max_len=512" ;;
    ids | redis_url) echo "-max_len=512" ;;
    transcripts | llm_chunks) echo "-max_len=8192" ;;
    *) echo "-max_len=4096" ;;
    esac
}

passed=0
failed=0
failures=()
for f in tests/fuzz/fuzz_*.c; do
    name=$(basename "$f" .c)
    name=${name#fuzz_}
    if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " =~ " $name " ]]; then continue; fi
    bin="$OUT/fuzz_$name"
    log="$OUT/logs/$name.log"
    # shellcheck disable=SC2086
    if ! $CC $CFLAGS_COMMON -fsanitize=fuzzer $SAN -o "$bin" "$f" "$OUT/libtandem-fuzz.a" $LIBS >"$log" 2>&1; then
        echo "==== fuzz_$name: BUILD FAILED"
        tail -20 "$log"
        failed=$((failed + 1))
        failures+=("$name (build)")
        continue
    fi
    corpus="$OUT/corpus-$name"
    mkdir -p "$corpus"
    seeds="tests/fuzz/corpus/$name"
    [ -d "$seeds" ] || seeds=""
    dict=""
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    echo "==== fuzz_$name for ${SECONDS_EACH}s"
    # shellcheck disable=SC2046,SC2086
    "$bin" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$OUT/crashes/$name-" $(opts_for "$name") $dict "$corpus" $seeds >"$log" 2>&1
    rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" | sed 's/^/    /'
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "    FAILED (exit $rc): $(grep -m1 -E 'invariant failed|ERROR: |runtime error:|SUMMARY' "$log")"
        ls -t "$OUT/crashes/$name-"* 2>/dev/null | head -1 | sed 's/^/    input: /'
    fi
done
[ ${#failures[@]} -gt 0 ] && echo "==== failing: ${failures[*]} (logs in $OUT/logs/)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
