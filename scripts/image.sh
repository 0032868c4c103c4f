#!/usr/bin/env bash
# `make image` / `make image-test`: build the tandem container image with podman, without Docker
# Hub or a Docker engine, and test it against a real Redis.
#
#   scripts/image.sh build   base image (debootstrap, cached) + `podman build` of ./Dockerfile
#   scripts/image.sh test    run the image against a loopback redis-server and check it
#
# Why a home-made base: the Dockerfile starts FROM docker.io/library/debian:bookworm-slim, and
# the registry may be unreachable (it is in CI). debootstrap --variant=minbase of the same release
# from the Debian mirror apt already uses, trimmed the way the official slim image is, imported
# under that name, gives the same userland; builds then run with --pull=never. A real
# bookworm-slim already in podman's storage is used as it is.
#
# Environment (all optional):
#   TANDEM_IMAGE          image name (default localhost/tandem; tagged :$VERSION and :latest)
#   TANDEM_DEBIAN_MIRROR  mirror for debootstrap (default: the one in apt's sources, else
#                         http://deb.debian.org/debian)
#   TANDEM_IMAGE_REBASE=1 make the base again (new debootstrap) instead of using the cache
#   TANDEM_IMAGE_KEEP=1   image-test leaves its temporary directory (logs) behind
#   BUILD                 build directory for the cached base (default build)
#
# Needs root (debootstrap, rootful podman) and: podman buildah runc debootstrap fuse-overlayfs
# slirp4netns uidmap redis-server (make image installs them). The runtime is runc and ulimits
# are explicit, because a container sandbox often cannot raise RLIMIT_NOFILE to podman's default
# (1048576): the hard limit of this shell is used when it is lower than 65536.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VERSION=$(cat VERSION 2>/dev/null || echo 0.0.0)
IMAGE=${TANDEM_IMAGE:-localhost/tandem}
BASE_TAG=docker.io/library/debian:bookworm-slim
BUILD=${BUILD:-build}
CACHE_DIR=$ROOT/$BUILD/image
BASE_TAR=$CACHE_DIR/debian-bookworm-minbase.tar
SIZE_LIMIT_MB=100

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and rootful podman); run it as root or in CI"
for t in podman debootstrap runc; do
    command -v "$t" >/dev/null || die "$t not found: run make image (it installs the packages) or make deps"
done

# nofile: 65536 unless the sandbox's hard limit is lower (raising it needs CAP_SYS_RESOURCE).
hard=$(ulimit -Hn)
NOFILE=65536
[ "$hard" != unlimited ] && [ "$hard" -lt "$NOFILE" ] && NOFILE=$hard
hardp=$(ulimit -Hu)
NPROC=4096
[ "$hardp" != unlimited ] && [ "$hardp" -lt "$NPROC" ] && NPROC=$hardp
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
ULIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")

# The Debian mirror apt uses here (deb822 .sources first, then one-line sources.list).
mirror() {
    if [ -n "${TANDEM_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$TANDEM_DEBIAN_MIRROR"
        return
    fi
    local m=""
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' || true)
    [ -n "$m" ] || m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' \
        /etc/apt/sources.list 2>/dev/null || true)
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# Trims a minbase tree the way the official slim image does (debuerreotype's slimify): no docs,
# man pages or translations now or in later installs, no apt caches, no host identity files.
slim_rootfs() {
    local r=$1 m=$2
    cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Written by tandem's scripts/image.sh (the rules of the official debian slim images).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
    cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' >"$r/etc/apt/apt.conf.d/docker-no-languages"
    printf 'Acquire::GzipIndexes "true";\n' >"$r/etc/apt/apt.conf.d/docker-gzip-indexes"
    printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$r/etc/apt/apt.conf.d/docker-autoremove-suggests"
    # Security updates matter for a runtime image: same sources as the official image.
    local sec=${m%/debian}/debian-security
    rm -f "$r/etc/apt/sources.list"
    cat >"$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $m
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $sec
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$r/usr/share/man/"* "$r/usr/share/info/"* "$r/usr/share/groff/"* "$r/usr/share/lintian/"* \
        "$r/usr/share/linda/"*
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* \
        "$r/var/log/"*.log "$r/var/log/apt/"* "$r/tmp/"* "$r/var/tmp/"* "$r/debootstrap" \
        "$r/var/cache/debconf/"*-old "$r/var/lib/dpkg/"*-old "$r/var/cache/ldconfig/aux-cache"
    mkdir -p "$r/var/lib/apt/lists/partial"
    # podman provides these per container; the build host's must not leak into the image.
    rm -f "$r/etc/resolv.conf" "$r/etc/hostname"
    : >"$r/etc/hosts"
    [ -e "$r/etc/machine-id" ] && : >"$r/etc/machine-id"
    return 0
}

# Makes sure $BASE_TAG is in podman's storage: already there, from the cached tarball, or by a
# new debootstrap (a few minutes; then cached under $BUILD/image/).
ensure_base() {
    if [ "${TANDEM_IMAGE_REBASE:-0}" = 1 ]; then
        rm -f "$BASE_TAR"
        "${PODMAN[@]}" rmi -f "$BASE_TAG" >/dev/null 2>&1 || true
    fi
    if "${PODMAN[@]}" image exists "$BASE_TAG"; then
        say "base: $BASE_TAG already in podman's storage"
        return 0
    fi
    mkdir -p "$CACHE_DIR"
    if [ ! -s "$BASE_TAR" ]; then
        local m rootfs t0=$SECONDS
        m=$(mirror)
        rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
        say "base: debootstrap --variant=minbase bookworm from $m (cached in $BUILD/image/ afterwards)"
        if ! debootstrap --variant=minbase bookworm "$rootfs" "$m" >"$CACHE_DIR/debootstrap.log" 2>&1; then
            tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
            rm -rf "$rootfs"
            die "debootstrap failed (log: $BUILD/image/debootstrap.log)"
        fi
        slim_rootfs "$rootfs" "$m"
        tar --numeric-owner --xattrs --acls -C "$rootfs" -cf "$BASE_TAR.tmp" .
        mv "$BASE_TAR.tmp" "$BASE_TAR"
        rm -rf "$rootfs"
        say "base: rootfs made in $((SECONDS - t0)) s ($(du -m "$BASE_TAR" | cut -f1) MB)"
    fi
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$BASE_TAR" "$BASE_TAG" >/dev/null
    say "base: imported $BUILD/image/$(basename "$BASE_TAR") as $BASE_TAG"
}

image_size_bytes() { "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1"; }

cmd_build() {
    local t0=$SECONDS rev
    # The logs and the size go here even when the base image was already in podman's storage
    # (a clean clone on a machine that built the image before).
    mkdir -p "$CACHE_DIR"
    ensure_base
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    say "build: $IMAGE:$VERSION ($rev)"
    # --format docker keeps HEALTHCHECK (the OCI image format has no field for it);
    # --network host: the build stages reach the Debian mirror without a CNI bridge.
    "${PODMAN[@]}" build --pull=never --format docker --network host "${ULIMITS[@]}" \
        --layers --force-rm \
        --build-arg TANDEM_VERSION="$VERSION" --build-arg TANDEM_GITREV="$rev" \
        -t "$IMAGE:$VERSION" -t "$IMAGE:latest" -f Dockerfile . >"$CACHE_DIR/build.log" 2>&1 || {
        tail -n 30 "$CACHE_DIR/build.log" >&2
        die "podman build failed (log: $BUILD/image/build.log)"
    }
    # Intermediate build-stage images are not needed once the image is tagged.
    "${PODMAN[@]}" image prune -f >/dev/null 2>&1 || true
    local size mb
    size=$(image_size_bytes "$IMAGE:latest")
    mb=$(( (size + 999999) / 1000000 ))
    say "built $IMAGE:$VERSION in $((SECONDS - t0)) s; size $mb MB ($size bytes, uncompressed)"
    printf '%s\n' "$size" >"$CACHE_DIR/size"
    [ "$mb" -le "$SIZE_LIMIT_MB" ] || die "image is $mb MB, over the $SIZE_LIMIT_MB MB budget"
}

# ---- image-test ------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$*"; }
check() { # name command...
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

# HTTP status of a GET (curl prints 000 when it cannot connect).
status() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$@" || true; }

cmd_test() {
    command -v redis-server >/dev/null || die "redis-server not found (make deps)"
    command -v curl >/dev/null || die "curl not found (make deps)"
    "${PODMAN[@]}" image exists "$IMAGE:latest" || die "no image $IMAGE:latest: run make image first"
    local rport tport pw token
    # Globals, not locals: the EXIT trap runs after this function has returned.
    CTR="tandem-image-test-$$" BAD_CTR="tandem-image-test-bad-$$" REDIS_PID="" SSE_PID=""
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/tandem-image-test.XXXXXX")
    local tmp=$TMP ctr=$CTR bad_ctr=$BAD_CTR
    chmod 755 "$tmp"
    # shellcheck disable=SC2317  # called from the trap
    cleanup() {
        set +e
        [ -n "$SSE_PID" ] && kill "$SSE_PID" 2>/dev/null
        "${PODMAN[@]}" rm -f -t 0 "$CTR" "$BAD_CTR" >/dev/null 2>&1
        if [ -n "$REDIS_PID" ]; then
            kill "$REDIS_PID" 2>/dev/null
            wait "$REDIS_PID" 2>/dev/null
        fi
        if [ "${TANDEM_IMAGE_KEEP:-0}" = 1 ]; then say "logs kept in $TMP"; else rm -rf "$TMP"; fi
    }
    trap cleanup EXIT

    # Redis on loopback with the least-privilege user of deploy/k8s (its ACL file, with the hash
    # of a password made here), so the image test also proves the ACL is enough for tandem.
    rport=$(free_port)
    pw=$(od -An -vtx1 -N16 /dev/urandom | tr -d ' \n')
    local hash
    hash=$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)
    {
        printf 'user default on nopass ~* &* +@all\n'
        sed -E "s/#[0-9a-f]{64}/#$hash/" deploy/k8s/redis/users.acl
    } >"$tmp/users.acl"
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --aclfile "$tmp/users.acl" --dir "$tmp" --logfile "$tmp/redis.log" </dev/null >/dev/null 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 50); do
        redis-cli -p "$rport" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    check "redis-server loads deploy/k8s/redis/users.acl" bash -c "redis-cli -p $rport ping | grep -q PONG"

    # The token the way Kubernetes mounts a Secret with fsGroup: root-owned, group 10001, 0440.
    token=$(od -An -vtx1 -N32 /dev/urandom | tr -d ' \n')
    mkdir -p "$tmp/secret"
    printf '%s\n' "$token" >"$tmp/secret/token"
    chown 0:10001 "$tmp/secret/token"
    chmod 0440 "$tmp/secret/token"

    # Data a connector would write (as the admin user): one conversation.
    redis-cli -p "$rport" XADD 'tandem:conv:{img-1}:msgs' '*' role customer \
        text 'Hi, I was charged twice for my order, where is my refund?' >/dev/null
    redis-cli -p "$rport" HSET 'tandem:conv:{img-1}:meta' customer_id cust-1 lang en >/dev/null
    redis-cli -p "$rport" HSET 'tandem:cust:{cust-1}:profile' name 'Anna Example' >/dev/null

    tport=$(free_port)
    local t0
    # Host network: the container reaches the loopback Redis; tandem listens on a free loopback
    # port (the image's 0.0.0.0 default would expose it on the host). Read-only root, no
    # capabilities, no privilege escalation: the securityContext of deploy/k8s.
    "${PODMAN[@]}" run -d --name "$ctr" --network host "${ULIMITS[@]}" \
        --read-only --cap-drop=all --security-opt=no-new-privileges \
        -e TANDEM_LISTEN="127.0.0.1:$tport" \
        -e TANDEM_REDIS_URL="redis://tandem:$pw@127.0.0.1:$rport/0" \
        -e TANDEM_TOKEN_FILE=/run/secrets/tandem/token \
        -v "$tmp/secret:/run/secrets/tandem:ro" \
        -e TANDEM_KB=/etc/tandem/kb -v "$ROOT/deploy/k8s/kb:/etc/tandem/kb:ro" \
        "$IMAGE:latest" >/dev/null 2>"$tmp/podman-run.log" || {
        cat "$tmp/podman-run.log" >&2
        die "podman run failed"
    }
    local base="http://127.0.0.1:$tport" st=000
    for _ in $(seq 100); do
        st=$(status "$base/healthz")
        [ "$st" = 200 ] && break
        sleep 0.1
    done
    check "GET /healthz is 200 (got $st)" test "$st" = 200
    st=$(status "$base/readyz")
    check "GET /readyz is 200 with Redis up (got $st)" test "$st" = 200
    st=$(status -H 'Host: evil.example:80' "$base/healthz")
    check "a foreign Host header is refused (got $st)" test "$st" = 421 -o "$st" = 403
    st=$(status -H 'Host: localhost:'"$tport" "$base/healthz")
    check "Host: localhost:<port> (the probes' header) is allowed (got $st)" test "$st" = 200
    st=$(status "$base/panel/index.html")
    check "the agent panel is compiled into the image (GET /panel/index.html: $st)" test "$st" = 200
    st=$(status "$base/v1/conversations/img-1/context")
    check "/v1 without the token is 401 (got $st)" test "$st" = 401
    local auth="Authorization: Bearer $token"
    st=$(status -H "$auth" "$base/v1/conversations/img-1/context")
    check "context with the mounted token, as the ACL user, is 200 (got $st)" test "$st" = 200
    st=$(status -H "$auth" "$base/v1/conversations/img-1/suggestions?k=3")
    check "suggestions (EVAL cache + records under the ACL) is 200 (got $st)" test "$st" = 200
    st=$(status -H "$auth" "$base/v1/conversations/img-1/suggestions?k=3")
    check "suggestions again (cache hit) is 200 (got $st)" test "$st" = 200
    st=$(status -H "$auth" "$base/v1/conversations/img-1/summary")
    check "summary is 200 (got $st)" test "$st" = 200
    local sid
    sid=$(curl -s -m 3 -H "$auth" "$base/v1/conversations/img-1/suggestions?k=1" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["suggestions"][0]["id"])' 2>/dev/null || true)
    st=$(status -X POST -H "$auth" -H 'Content-Type: application/json' \
        -d '{"action":"accepted","final_text":"Thanks, refund is on its way.","agent_id":"a-1","feedback_id":"img-fb-1"}' \
        "$base/v1/suggestions/${sid:-none}/feedback")
    check "feedback on a suggestion is 202 (got $st)" test "$st" = 202
    st=$(status -X POST -H "$auth" -H 'Content-Type: application/x-ndjson' --data-binary \
        '{"id":"t-img","messages":[{"role":"customer","text":"charged twice"},{"role":"agent","text":"The second charge is a pending authorisation."}]}' \
        "$base/v1/transcripts")
    check "transcripts import is 200 (got $st)" test "$st" = 200

    local user
    user=$("${PODMAN[@]}" inspect --format '{{.Config.User}}' "$ctr")
    check "runs as the unprivileged user (User=$user)" test "$user" = 10001:10001
    local pid1
    pid1=$("${PODMAN[@]}" top "$ctr" pid comm 2>/dev/null | awk 'NR > 1 && $1 == 1 { print $2 }')
    check "tandemd is PID 1 (got '$pid1')" test "$pid1" = tandemd
    local lim
    lim=$("${PODMAN[@]}" exec "$ctr" bash -c 'ulimit -n' 2>/dev/null || echo '?')
    check "nofile ulimit is the explicit $NOFILE (got $lim)" test "$lim" = "$NOFILE"
    check "HEALTHCHECK (bash /dev/tcp, no curl) reports healthy" \
        bash -c "$(printf '%q ' "${PODMAN[@]}") healthcheck run $ctr >/dev/null 2>&1"

    # An open SSE stream must not hold up the shutdown.
    curl -s -N -m 20 -H "$auth" "$base/v1/conversations/img-1/events" >"$tmp/sse.out" 2>/dev/null &
    SSE_PID=$!
    sleep 0.5
    t0=$(date +%s%N)
    "${PODMAN[@]}" stop -t 10 "$ctr" >/dev/null 2>>"$tmp/podman-run.log"
    local ms=$((($(date +%s%N) - t0) / 1000000)) code
    code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$ctr")
    check "SIGTERM (podman stop) with an SSE stream open: exit code 0 (got $code)" test "$code" = 0
    check "SIGTERM: stopped in ${ms} ms (< 5000)" test "$ms" -lt 5000
    check "logs are JSON lines and say stopped" bash -c \
        "'${PODMAN[0]}' logs '$ctr' 2>&1 | grep -q '^{.*\"stopped\"'"
    "${PODMAN[@]}" logs "$ctr" >"$tmp/tandemd.log" 2>&1 || true
    kill "$SSE_PID" 2>/dev/null || true
    wait "$SSE_PID" 2>/dev/null || true
    SSE_PID=""
    check "Redis' ACL LOG is empty: the ACL user of deploy/k8s was enough for all of the above" \
        test "$(redis-cli -p "$rport" ACL LOG | grep -c . || true)" = 0

    # A world-readable token file is refused (start-up fails with a message naming the file).
    chmod 0444 "$tmp/secret/token"
    "${PODMAN[@]}" run --name "$bad_ctr" --network host "${ULIMITS[@]}" \
        -e TANDEM_LISTEN="127.0.0.1:$tport" -e TANDEM_TOKEN_FILE=/run/secrets/tandem/token \
        -v "$tmp/secret:/run/secrets/tandem:ro" "$IMAGE:latest" >"$tmp/bad.log" 2>&1 && code=0 || code=$?
    check "a world-readable token file stops start-up (exit $code)" \
        bash -c "[ $code -ne 0 ] && grep -q 'refusing TANDEM_TOKEN_FILE' '$tmp/bad.log'"

    local size mb
    size=$(image_size_bytes "$IMAGE:latest")
    mb=$(( (size + 999999) / 1000000 ))
    check "image size $mb MB <= $SIZE_LIMIT_MB MB" test "$mb" -le "$SIZE_LIMIT_MB"

    if [ "$FAIL" -ne 0 ]; then
        say "tandemd log:"
        sed 's/^/    /' "$tmp/tandemd.log" >&2 || true
        redis-cli -p "$rport" ACL LOG 2>/dev/null | sed 's/^/    acl: /' >&2 || true
    fi
    printf '%d passed, %d failed\n' "$PASS" "$FAIL"
    [ "$FAIL" -eq 0 ]
}

case ${1:-} in
    build) cmd_build ;;
    test) cmd_test ;;
    *) die "usage: scripts/image.sh build|test" ;;
esac
