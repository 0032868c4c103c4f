#!/usr/bin/env bash
# Runs every test (unit binaries in $BUILD/tests/, then the e2e suite) and ends with exactly one
# summary line "N passed, N failed[, N skipped]" that CI parses; exit status 1 on any failure.
#   BUILD=build-asan bash tests/run_all.sh     # the sanitizer build
#   TANDEM_VALGRIND=1 bash tests/run_all.sh    # everything under valgrind
#   TANDEM_E2E_PATTERN='test_gate.py' ...      # only some e2e files
set -u
cd "$(dirname "$0")/.." || exit 2

BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
PATTERN=${TANDEM_E2E_PATTERN:-test_*.py}
VALGRIND=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/tandem-tests.XXXXXX")
trap 'rm -rf "$LOGDIR"' EXIT

passed=0
failed=0
skipped=0
failures=()

# cmocka: a test starts with "[ RUN      ] name" and ends with OK/FAILED/SKIPPED for that name.
# The "[  FAILED  ] name" lines of the final summary come when no test is open and are ignored;
# a test that never ends (crash) is a failure.
count_cmocka() {
    awk '
        /^\[ RUN      \] /  { if (cur != "") f++; cur = substr($0, 14); next }
        /^\[       OK \] /  { if (cur != "") { p++; cur = "" } next }
        /^\[  FAILED  \] /  { if (cur != "") { f++; cur = "" } next }
        /^\[  SKIPPED \] /  { if (cur != "") { s++; cur = "" } next }
        END { if (cur != "") f++; print p + 0, f + 0, s + 0 }' "$1"
}

# unittest -v: counted by tests/unittest_counts.awk (subTests, docstrings, split status lines).
count_unittest() { awk -f tests/unittest_counts.awk "$1"; }

add_counts() { # name rc "p f s"
    local name=$1 rc=$2 p f s
    read -r p f s <<<"$3"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed before/after its tests, valgrind errors, import errors...
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    if [ "$f" -gt 0 ]; then failures+=("$name (exit $rc, $f failed)"); fi
}

# ---- unit tests ---------------------------------------------------------------------------
if [ -d "$BUILD/tests" ]; then
    for t in "$BUILD"/tests/*; do
        if [ ! -f "$t" ] || [ ! -x "$t" ]; then continue; fi
        name=$(basename "$t")
        out="$LOGDIR/$name.out"
        echo "==== $name"
        if [ "${TANDEM_VALGRIND:-0}" = 1 ]; then
            "${VALGRIND[@]}" "$t" >"$out" 2>&1
        else
            "$t" >"$out" 2>&1
        fi
        rc=$?
        cat "$out"
        add_counts "$name" "$rc" "$(count_cmocka "$out")"
    done
else
    echo "==== no unit tests in $BUILD/tests"
fi

# ---- end-to-end tests ---------------------------------------------------------------------
echo "==== e2e ($PATTERN)"
export TANDEMD="${TANDEMD:-$BUILD/tandemd}"
if [ "${TANDEM_VALGRIND:-0}" = 1 ]; then
    export TANDEM_WRAPPER="${TANDEM_WRAPPER:-${VALGRIND[*]}}"
fi
out="$LOGDIR/e2e.out"
"$PYTHON" -m unittest discover -s tests/e2e -p "$PATTERN" -v 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
add_counts e2e "$rc" "$(count_unittest "$out")"

# ---- browser tests: the agent panel and the extension in chromium (tests/browser/run.sh) -----
# Not under valgrind (the browser's time-outs are not scaled); TANDEM_BROWSER_TESTS=0 skips them.
if [ "${TANDEM_BROWSER_TESTS:-1}" = 1 ] && [ "${TANDEM_VALGRIND:-0}" != 1 ]; then
    echo "==== browser"
    out="$LOGDIR/browser.out"
    BUILD=$BUILD TANDEMD=$TANDEMD bash tests/browser/run.sh 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    counts=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed\(, \([0-9]*\) skipped\)\{0,1\}$/\1 \2 \4/p' "$out" | tail -n 1)
    read -r bp bf bs <<<"$counts"
    add_counts browser "$rc" "${bp:-0} ${bf:-0} ${bs:-0}"
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "==== failing: ${failures[*]}"
fi
summary="$passed passed, $failed failed"
if [ "$skipped" -gt 0 ]; then summary="$summary, $skipped skipped"; fi
echo "$summary"
[ "$failed" -eq 0 ]
