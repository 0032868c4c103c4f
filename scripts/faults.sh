#!/usr/bin/env bash
# The fault suite (tests/faults/test_*.py): Redis killed, paused, restarted, LOADING, out of
# memory, ACL revoked; network latency, resets, lost replies and 1-byte slices through the fault
# proxy (tests/faults/proxy.py); slow readers, 1,000 event streams vanishing, SIGTERM with
# streams open; LLM faults when the LLM engine is wired. Needs build/tandemd (make).
#   scripts/faults.sh                       # everything (~2 minutes)
#   FAULTS_PATTERN='test_proxy*.py' scripts/faults.sh
#   BUILD=build-asan scripts/faults.sh      # against the sanitizer build
# Ends with one line "N passed, N failed[, N skipped]"; exit 1 on any failure.
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
export TANDEMD="${TANDEMD:-$BUILD/tandemd}"
if [ ! -x "$TANDEMD" ]; then
    echo "faults: $TANDEMD not found; run make first" >&2
    exit 2
fi
out=$(mktemp "${TMPDIR:-/tmp}/tandem-faults.XXXXXX")
trap 'rm -f "$out"' EXIT
"$PYTHON" -m unittest discover -s tests/faults -p "${FAULTS_PATTERN:-test_*.py}" -v 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
read -r p f s < <(awk -f tests/unittest_counts.awk "$out")
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
line="$p passed, $f failed"
[ "$s" -gt 0 ] && line="$line, $s skipped"
echo "$line"
[ "$f" -eq 0 ]
