#!/usr/bin/env bash
# `make eval`: suggestion quality on real conversations through the real service (see eval.py),
# then the engine in process on the leave-one-out yardstick over cdp's transcripts (loo.c).
#   TANDEM_EVAL_DATA=/path/to/shared/data   the data (default: ../shared/data beside the repo)
#   TANDEMD=build-asan/tandemd              another binary
#   TANDEM_EVAL_LIB=build/libtandem.a       the library loo.c links with (a plain, non-sanitized build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v redis-server >/dev/null || { echo "eval: redis-server not found (make deps)" >&2; exit 2; }
[ -x "${TANDEMD:-build/tandemd}" ] || { echo "eval: ${TANDEMD:-build/tandemd} not built (make)" >&2; exit 2; }

# loo.c includes src/engine_local.c (to reach its tuning table) and links the rest from the
# library: rebuilt every run (a second), so it always measures the engine in this tree.
lib="${TANDEM_EVAL_LIB:-build/libtandem.a}"
loo="$(dirname "$lib")/eval_loo"
loo_args=()
if [ -f "$lib" ]; then
    pkgs="libmicrohttpd hiredis jansson libcurl"
    # shellcheck disable=SC2046 # pkg-config output is a list of flags
    if "${CC:-cc}" -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wshadow -Werror -Iinclude \
        $(pkg-config --cflags $pkgs) -o "$loo" tests/eval/loo.c "$lib" \
        $(pkg-config --libs $pkgs) -lstemmer -lpthread -lm; then
        loo_args=(--loo "$loo")
    else
        echo "eval: building $loo failed; leave-one-out skipped" >&2
    fi
else
    echo "eval: $lib not built (make); leave-one-out skipped" >&2
fi
exec python3 tests/eval/eval.py "${loo_args[@]}" "$@"
