# tandem — hand-written GNU make. `make run` starts the demo, `make test` runs every test.
.DEFAULT_GOAL := all
SHELL := /bin/bash

CC      ?= cc
BUILD   ?= build
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GITREV  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

PKGS    := libmicrohttpd hiredis jansson libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lstemmer

WARN    := -Wall -Wextra -Wpedantic -Wformat=2 -Wshadow -Wconversion -Wno-sign-conversion \
           -Wstrict-prototypes -Wmissing-prototypes -Wvla -fno-common
WERROR  ?= -Werror
OPT     ?= -O2 -g
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(WERROR) -fstack-protector-strong \
           -Iinclude -I$(BUILD)/gen $(PKG_CFLAGS) \
           -DTANDEM_VERSION='"$(VERSION)"' -DTANDEM_GITREV='"$(GITREV)"'
LDLIBS  += $(PKG_LIBS) -lpthread -lm

SRCS     := $(wildcard src/*.c)
LIB_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(filter-out src/main.c,$(SRCS)))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
# Data files compiled into the binary (DESIGN: data lives in files, the build embeds it).
EMBED_SRCS := $(wildcard data/*.txt data/*.json data/*.jsonl) $(wildcard panel/*.html panel/*.js panel/*.css)
EMBED_GEN  := $(BUILD)/gen/embedded_data.c

# Debian packages needed to build, test and run (make deps installs them).
DEB_PKGS := build-essential pkg-config clang libmicrohttpd-dev libhiredis-dev libjansson-dev \
            libcurl4-openssl-dev libstemmer-dev libcmocka-dev redis-server redis-tools \
            python3 valgrind wrk prometheus curl nodejs chromium systemd strace
# Container image without Docker Hub (scripts/image.sh): podman + a debootstrap base.
IMAGE_PKGS := podman buildah runc debootstrap fuse-overlayfs slirp4netns uidmap redis-server redis-tools curl python3

.PHONY: all test unit e2e asan valgrind run deps format clean bench eval fuzz test-browser image image-test deploy-check faults soak
all: $(BUILD)/tandemd $(BUILD)/tandem

$(BUILD)/obj/%.o: src/%.c $(wildcard include/tandem/*.h) | $(BUILD)/obj
	@echo "  CC $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(EMBED_GEN): scripts/embed.sh $(EMBED_SRCS) Makefile | $(BUILD)/obj
	@mkdir -p $(BUILD)/gen
	@bash scripts/embed.sh $@ $(EMBED_SRCS)

$(BUILD)/obj/embedded_data.o: $(EMBED_GEN)
	@$(CC) $(CFLAGS) -Wno-overlength-strings -c -o $@ $<

$(BUILD)/libtandem.a: $(LIB_OBJS) $(BUILD)/obj/embedded_data.o
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/tandemd: $(BUILD)/obj/main.o $(BUILD)/libtandem.a
	@echo "  LD $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# the command-line client for hotkey tools (deploy/hotkeys/README.md)
$(BUILD)/tandem: tools/tandem.c $(BUILD)/libtandem.a $(wildcard include/tandem/*.h)
	@echo "  LD $@"
	@$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libtandem.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libtandem.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -Wno-missing-prototypes -o $@ $< $(BUILD)/libtandem.a $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

# ---- tests ---------------------------------------------------------------
unit: $(UNIT_BINS)
e2e: $(BUILD)/tandemd $(BUILD)/tandem
test: deps all $(UNIT_BINS)
	@BUILD=$(BUILD) bash tests/run_all.sh

# the agent panel and the browser extension in a real browser (Playwright + Debian's chromium)
test-browser: all
	@BUILD=$(BUILD) bash tests/browser/run.sh

asan:
	$(MAKE) BUILD=build-asan CC=clang OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	        LDFLAGS="-fsanitize=address,undefined" test

valgrind: all $(UNIT_BINS)
	@BUILD=$(BUILD) TANDEM_VALGRIND=1 bash tests/run_all.sh

deps:
	@bash scripts/deps.sh $(DEB_PKGS)
	@[ -d tests/browser/node_modules/playwright-core ] || \
	    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

run: deps all
	@bash scripts/run.sh

bench: deps all
	@bash tests/bench/run.sh

eval: deps all
	@bash tests/eval/run.sh

# libFuzzer over every parser of untrusted bytes (tests/fuzz/README.md)
FUZZ_SECONDS ?= 60
fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

# Redis killed/paused/LOADING/OOM/ACL, a fault proxy, vanishing streams, allocation failures
faults: deps all
	@BUILD=$(BUILD) bash scripts/faults.sh

# load plus faults for SOAK_SECONDS (default 600); RSS, fds and threads must stay flat
soak: deps all
	@BUILD=$(BUILD) bash scripts/soak.sh

image:
	@bash scripts/deps.sh $(IMAGE_PKGS)
	@bash scripts/image.sh build

image-test: image
	@bash scripts/image.sh test

deploy-check: deps all
	@BUILD=$(BUILD) bash tests/deploy/run.sh

format:
	clang-format -i src/*.c include/tandem/*.h tests/unit/*.c

clean:
	rm -rf build build-asan build-fuzz
