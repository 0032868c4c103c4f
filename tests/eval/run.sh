#!/usr/bin/env bash
# `make eval`: suggestion quality on real conversations through the real service (see eval.py).
#   TANDEM_EVAL_DATA=/path/to/shared/data   the data (default: ../shared/data beside the repo)
#   TANDEMD=build-asan/tandemd              another binary
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v redis-server >/dev/null || { echo "eval: redis-server not found (make deps)" >&2; exit 2; }
[ -x "${TANDEMD:-build/tandemd}" ] || { echo "eval: ${TANDEMD:-build/tandemd} not built (make)" >&2; exit 2; }
exec python3 tests/eval/eval.py "$@"
