# tandem container image: build tandemd on Debian bookworm, run it on bookworm-slim with only the
# runtime libraries, as an unprivileged user. `make image` builds it without Docker Hub (see
# scripts/image.sh), `make image-test` runs it against a real Redis.
#
# Configuration is by environment (every TANDEM_* variable of CONTRACT.md). The image listens on
# 0.0.0.0:8787 so that a published port and Kubernetes probes reach it; tandem still answers only
# requests whose Host header is allowed (localhost, 127.0.0.1, [::1] with the port, plus
# TANDEM_ALLOWED_HOSTS) — a caller that uses another name, e.g. http://tandem:8787 from a
# compose network, needs TANDEM_ALLOWED_HOSTS=tandem:8787. Give it a token with TANDEM_TOKEN_FILE
# (a mounted secret, mode 0400/0440) or TANDEM_TOKEN; without either it generates one under
# $HOME/.local/state/tandem/token and logs the path.

# The same Debian release the tests run on, so the image runs what CI tested.
ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config libmicrohttpd-dev libhiredis-dev libjansson-dev \
        libcurl4-openssl-dev libstemmer-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The source tree without tests, deploy files and build trees (.dockerignore): everything
# `make build/tandemd` may read, including the data and panel files it compiles in.
COPY . .
# There is no .git in the context: the revision comes in as a build argument.
ARG TANDEM_GITREV=unknown
RUN make -j2 GITREV="${TANDEM_GITREV}" build/tandemd \
 && install -D -s -m 0755 build/tandemd /out/usr/local/bin/tandemd \
 && /out/usr/local/bin/tandemd --version

FROM ${DEBIAN_IMAGE}
ARG TANDEM_VERSION=0.0.0
ARG TANDEM_GITREV=unknown
LABEL org.opencontainers.image.title="tandem" \
      org.opencontainers.image.description="Agent-assist sidecar: suggested replies, summaries and alerts from live Redis conversations" \
      org.opencontainers.image.version="${TANDEM_VERSION}" \
      org.opencontainers.image.revision="${TANDEM_GITREV}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# Runtime libraries only: what tandemd links (ldd), libcurl for the LLM engine, CA certificates
# for https:// LLM servers. No compiler, no curl binary, no package lists left behind.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libmicrohttpd12 libhiredis0.14 libjansson4 libcurl4 libstemmer0d ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
           /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/cache/ldconfig/aux-cache \
 && groupadd --system --gid 10001 tandem \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tandem --shell /usr/sbin/nologin tandem \
 && install -d -m 0700 -o 10001 -g 10001 /var/lib/tandem
COPY --from=build /out/ /
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/tandem
ENV HOME=/var/lib/tandem \
    TANDEM_LISTEN=0.0.0.0:8787 \
    TANDEM_LOG_FORMAT=json
EXPOSE 8787
# tandemd is PID 1: it blocks SIGTERM/SIGINT/SIGHUP and takes them with sigwait (a blocked signal
# reaches PID 1 even without a handler), drains in-flight requests for up to 4 s and exits 0.
# SIGHUP reloads the knowledge base. It starts no children, so there is nothing to reap: no init.
STOPSIGNAL SIGTERM
# No curl in the image: bash (Essential in Debian) speaks HTTP/1.0 over /dev/tcp. The check
# connects where TANDEM_LISTEN says (a wildcard address through loopback) and sends
# Host: localhost:<port>, which tandem always allows.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/bin/bash", "-c", "l=${TANDEM_LISTEN:-127.0.0.1:8787}; p=${l##*:}; h=${l%:*}; h=${h#[}; h=${h%]}; case $h in ''|0.0.0.0) h=127.0.0.1;; ::) h=::1;; esac; exec 3<>/dev/tcp/$h/$p || exit 1; printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost:%s\\r\\n\\r\\n' $p >&3; read -r -t 2 v c r <&3; [ \"$c\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/tandemd"]
