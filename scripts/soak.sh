#!/usr/bin/env bash
# Soak: load + event streams + messages + Redis restarts and pauses for a bounded time, sampling
# tandemd's RSS, open fds and threads every 10 s into build/soak.csv; prints a verdict on
# flatness and exits 1 when they grow or the server did not recover or stop cleanly.
#   scripts/soak.sh                  # 10 minutes
#   SOAK_SECONDS=120 scripts/soak.sh # shorter; SOAK_RATE (req/s, 300), SOAK_RESTART_S (60)
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
export TANDEMD="${TANDEMD:-$BUILD/tandemd}"
if [ ! -x "$TANDEMD" ]; then
    echo "soak: $TANDEMD not found; run make first" >&2
    exit 2
fi
export SOAK_CSV="${SOAK_CSV:-$BUILD/soak.csv}"
exec "${PYTHON:-python3}" tests/soak/soak.py
