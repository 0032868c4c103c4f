#!/usr/bin/env bash
# Real-browser tests of the agent panel and the extension: Playwright (playwright-core) driving
# Debian's chromium headless against a private redis-server and tandemd (tests/browser/lib/).
#   bash tests/browser/run.sh                 # all *.test.mjs files
#   bash tests/browser/run.sh panel.test.mjs  # some of them
# Environment: TANDEMD (default build/tandemd), BUILD (screenshots go to $BUILD/screenshots),
# CHROMIUM (default /usr/bin/chromium), HEADED=1 to watch (needs a display).
# Ends with one line "N passed, N failed[, N skipped]" like tests/run_all.sh; exit 1 on failure.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$HERE" || exit 2

export BUILD=${BUILD:-build}
export TANDEMD=${TANDEMD:-$BUILD/tandemd}
case $TANDEMD in /*) ;; *) TANDEMD=$ROOT/$TANDEMD ;; esac
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

fail_setup() { echo "browser tests: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
command -v node >/dev/null || fail_setup "node not found (make deps)"
[ -x "$CHROMIUM" ] || fail_setup "$CHROMIUM not found (make deps installs Debian's chromium)"
command -v redis-server >/dev/null || fail_setup "redis-server not found (make deps)"
[ -x "$TANDEMD" ] || fail_setup "$TANDEMD not found (build it: make)"
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund --loglevel=error >&2 || fail_setup "npm ci failed in tests/browser"
fi
mkdir -p "$ROOT/$BUILD/screenshots"

files=("$@")
if [ ${#files[@]} -eq 0 ]; then files=(*.test.mjs); fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# one file at a time: two cores are shared with everything else
node --test --test-concurrency=1 --test-reporter=spec "${files[@]}" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
# node's summary: "ℹ pass N" / "ℹ fail N" / "ℹ skipped N"
p=$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$out" | tail -n 1)
f=$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$out" | tail -n 1)
s=$(sed -n 's/^ℹ skipped \([0-9]*\)$/\1/p' "$out" | tail -n 1)
p=${p:-0} f=${f:-0} s=${s:-0}
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
echo "screenshots: $ROOT/$BUILD/screenshots/"
summary="$p passed, $f failed"
if [ "$s" -gt 0 ]; then summary="$summary, $s skipped"; fi
echo "$summary"
[ "$f" -eq 0 ]
