#!/usr/bin/env bash
# Checks of deploy/: the Kubernetes base (schema, unknown fields, tandem's own requirements, the
# kustomize rendering when kubectl is there), the Redis ACL user (against the sources and live),
# and the systemd user unit (systemd-analyze, and the sandbox against an strace of tandemd).
# Ends with one line "N passed, N failed"; exit status 1 on any failure.
#
#   BUILD=build bash tests/deploy/run.sh        (make deploy-check; needs $BUILD/tandemd)
#
# Needs node + npm (the machine's Node.js; the npm packages kubernetes-models and yaml are
# installed into tests/deploy/node_modules from package-lock.json), python3, redis-server,
# systemd-analyze (package systemd), strace. kubectl is optional: `kubectl kustomize` renders
# the base and the result is checked too; without kubectl that step is reported as skipped.
set -u
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
TANDEMD=$BUILD/tandemd
HERE=tests/deploy
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tandem-deploy.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

passed=0 failed=0 skipped=0
# Runs a checker, shows its lines, adds its "N passed, N failed" to the totals.
run() {
    local name=$1 out rc p f
    shift
    echo "== $name"
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -Ev '^[0-9]+ passed, [0-9]+ failed$'
    read -r p f < <(printf '%s\n' "$out" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' | tail -n 1)
    p=${p:-0} f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $name exited with status $rc"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

fail() { echo "FAIL $*"; failed=$((failed + 1)); }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    fail "node and npm are needed for the Kubernetes schema checks"
else
    if [ ! -d $HERE/node_modules/kubernetes-models ] || [ $HERE/package-lock.json -nt $HERE/node_modules/.package-lock.json ]; then
        (cd $HERE && npm ci --no-audit --no-fund --loglevel=error >"$TMP/npm.log" 2>&1) \
            || { cat "$TMP/npm.log"; fail "npm ci in tests/deploy"; }
    fi
    rendered=()
    if command -v kubectl >/dev/null && kubectl kustomize deploy/k8s >"$TMP/rendered.yaml" 2>"$TMP/kustomize.err"; then
        rendered=(--rendered "$TMP/rendered.yaml")
    elif command -v kubectl >/dev/null; then
        cat "$TMP/kustomize.err"
        fail "kubectl kustomize deploy/k8s"
    else
        echo "skip kubectl not installed: the kustomize rendering is not checked"
        skipped=$((skipped + 1))
    fi
    run "deploy/k8s" node $HERE/check_k8s.mjs "${rendered[@]}" --env-json "$TMP/env.json"

    # The checker must be able to fail: each mutation of a copy of the base has to be caught.
    echo "== the k8s checker catches broken manifests"
    mutate() { # name file sed-expression
        rm -rf "$TMP/mut" && cp -r deploy/k8s "$TMP/mut" && sed -i "$3" "$TMP/mut/$2"
        if node $HERE/check_k8s.mjs --dir "$TMP/mut" >"$TMP/mut.out" 2>&1; then
            fail "mutation not caught: $1"
        else
            echo "ok   mutation caught: $1"
            passed=$((passed + 1))
        fi
    }
    mutate "a misspelt field" deployment.yaml 's/imagePullPolicy: IfNotPresent/imagePullPolcy: IfNotPresent/'
    mutate "a probe without tandem's Host header" deployment.yaml '0,/value: localhost:8787/s//value: 10.0.0.1:8787/'
    mutate "tandem as a plain init container" deployment.yaml 's/restartPolicy: Always/restartPolicy: OnFailure/'
    mutate "a world-readable token" deployment.yaml 's/defaultMode: 288/defaultMode: 0444/'
    mutate "a string where an integer belongs" deployment.yaml 's/replicas: 2/replicas: "2"/'
    mutate "tandem's port open to other pods" networkpolicy.yaml 's/port: 8080/port: 8787/'
fi

if [ ! -x "$TANDEMD" ]; then
    fail "$TANDEMD not built (make all)"
else
    if [ -s "$TMP/env.json" ]; then
        run "Redis ACL user" python3 $HERE/check_acl.py "$TANDEMD" "$TMP/env.json"
    else
        fail "no ConfigMap environment from check_k8s.mjs: the ACL live check needs it"
    fi
    run "systemd user unit" python3 $HERE/check_systemd.py "$TANDEMD"
fi

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
