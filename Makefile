# lxmpp - build, dependencies, tests, sanitizers, fuzzing, benchmarks.
# `make demo` and `make test` work on a fresh Debian 12 machine: both install
# what they need (make deps) and build first.

# LUA picks the Lua the core is built for and the specs run under: lua5.4
# (the default, built into build/), lua5.3, lua5.1 or luajit (LuaJIT 2.1),
# each built into a directory of its own (build-lua5.3/, build-lua5.1/,
# build-luajit/) so versions never overwrite each other; the headers come
# from pkg-config (Debian's lua5.1, luajit, lua5.3, lua5.4 .pc files).
LUA       ?= lua5.4
LUA_INC   ?= $(patsubst -I%,%,$(firstword $(shell pkg-config --cflags-only-I $(LUA) 2>/dev/null)))
ifeq ($(LUA_INC),)
LUA_INC   := /usr/include/$(LUA)
endif
ifeq ($(LUA),lua5.4)
BUILD     ?= build
else
BUILD     ?= build-$(LUA)
endif
CC        ?= cc
BUSTED    ?= busted --lua=$(LUA)
WARN      := -std=c99 -Wall -Wextra -pedantic -Wshadow -Wmissing-prototypes -Werror
CFLAGS    ?= -O2 -g
ALL_CFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -I$(LUA_INC) -D_POSIX_C_SOURCE=200809L
LIBS      := -lexpat -lidn -lssl -lcrypto -luv -lcares

SRC       := $(wildcard csrc/*.c)
HDR       := $(wildcard csrc/*.h)
ENGINES   := csrc/stream.c csrc/serialize.c csrc/xmlchar.c csrc/utf8.c csrc/sasl.c \
             csrc/saslprep.c csrc/prep.c csrc/sasl_client.c csrc/sasl_server.c \
             csrc/stream_tree.c csrc/ws.c

# Debian packages the project needs (build, tests, peers, fuzzing, benchmarks).
# NAME>=VERSION asks for at least that version: `make deps` installs what is
# missing and upgrades what is older (a fresh Debian 12 image ships expat
# 2.5.0-1+deb12u1, before the security updates), then checks the result.
DEB_PKGS  := build-essential pkg-config lua5.4 liblua5.4-dev \
             libexpat1>=2.5.0-1+deb12u2 libexpat1-dev>=2.5.0-1+deb12u2 \
             libssl-dev libuv1-dev libc-ares-dev libidn-dev lua-busted lua-check \
             luarocks lua-expat lua-socket prosody python3-slixmpp libstrophe-dev openssl \
             clang libclang-rt-14-dev valgrind lua-sql-sqlite3 lua-filesystem \
             ejabberd go-sendxmpp sendxmpp poezio chromium libpurple-dev \
             luajit libluajit-5.1-dev lua5.1 liblua5.1-0-dev lua5.3 liblua5.3-dev lua-bit32 \
             love xvfb xauth

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
# the Lua specs start their helper processes with (spec/support/lua_bin.lua)
export LXMPP_LUA := $(LUA)

FUZZ_SECONDS ?= 60

# Spec files run SPEC_JOBS at a time, one busted process each
# (tools/run-specs, which prints one summary line for them all); 1 runs
# the suite in one busted process as before.
SPEC_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
ifeq ($(SPEC_JOBS),1)
RUN_SPECS = $(1) $(2)
else
RUN_SPECS = tools/run-specs $(SPEC_JOBS) $(1) -- $(2)
endif

.PHONY: all deps web-deps build test compat-expat check valgrind fuzz bench bench-parse bench-transport bench-echo bench-server bench-s2s demo demo-web demo-federation lint clean docs \
        format-check test-fast test-unit test-luas test-rocks test-interop luajit-core

all: build

# prints the packages of DEB_PKGS that are missing or older than asked
DEPS_NEEDED = for spec in $(foreach p,$(DEB_PKGS),'$(p)'); do \
	  p=$${spec%%>=*}; min=; [ "$$p" = "$$spec" ] || min=$${spec\#*>=}; \
	  v=$$(dpkg-query -W -f='$${Status} $${Version}\n' "$$p" 2>/dev/null | sed -n 's/^install ok installed //p'); \
	  if [ -z "$$v" ]; then echo "$$p"; \
	  elif [ -n "$$min" ] && dpkg --compare-versions "$$v" lt "$$min"; then echo "$$p"; fi; \
	done

deps:
	@need=$$($(DEPS_NEEDED)); \
	if [ -n "$$need" ]; then \
	  echo "installing or upgrading:" $$need; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$need || exit 1; \
	  left=$$($(DEPS_NEEDED)); \
	  if [ -n "$$left" ]; then echo "make deps: still missing or too old:" $$left; exit 1; fi; \
	fi
	@$(MAKE) --no-print-directory web-deps

# The web peers of spec/interop/web_*_spec.lua (web/package.json: Converse.js,
# playwright-core driving Debian's chromium, @xmpp/client), installed from
# web/package-lock.json by `npm ci` when the lock file changes. They need
# Node.js 20.10 or later with its npm (a Debian 12 machine here has
# nodesource's nodejs 20, which bundles npm; Debian's own nodejs 18 is too
# old for @xmpp/client's WebSocket); where node or npm is missing,
# Debian's nodejs and npm are installed, and the version check says so.
web-deps: web/node_modules/.lxmpp-npm-ci

web/node_modules/.lxmpp-npm-ci: web/package.json web/package-lock.json
	@command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1 || { \
	  echo "installing nodejs npm"; SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends nodejs npm; }
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<10)) { console.error("make web-deps: Node.js "+process.version+" is older than 20.10"); process.exit(1) }'
	cd web && npm ci --no-audit --no-fund
	@touch $@

build: $(BUILD)/lxmpp/core.so

$(BUILD)/lxmpp/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(SRC) $(LIBS)

test: deps build luajit-core
	$(call RUN_SPECS,$(BUSTED),spec)

# the core built for LuaJIT whatever LUA is: spec/interop/game_loops_spec.lua
# runs the game-loop examples on LuaJIT (luajit, and LÖVE under Xvfb)
luajit-core:
	@$(MAKE) --no-print-directory build LUA=luajit

# .busted's tasks: the fast specs (seconds, for the edit-run loop; no server,
# slow or interop specs) and the interop specs against other projects' peers.
# `make test` runs everything.
test-fast: build
	$(BUSTED)

# the fast specs under one Lua: `make test-unit LUA=luajit` (or lua5.1,
# lua5.3, lua5.4), building the core for it first (test-fast, under the
# name CI and the README use for it)
test-unit: test-fast

# the other Luas lxmpp supports (CI; README "Lua versions"): the whole
# suite on LuaJIT 2.1, the Lua games embed (`make test LUA=luajit`), then
# test-rocks; one summary line per run (five)
test-luas:
	@rc=0; echo "=== luajit (the whole suite)"; $(MAKE) --no-print-directory test LUA=luajit || rc=1; \
	$(MAKE) --no-print-directory test-rocks || rc=1; exit $$rc

# for each of ROCK_LUAS, `luarocks --lua-version=V make` installs the rock
# into a tree of its own (LuaJIT: 5.1's paths, LuaJIT's headers), and the
# fast specs run against that installed rock, not the checkout
# (tools/test-rocks); one summary line per Lua
ROCK_LUAS ?= lua5.1 lua5.3 luajit lua5.4
test-rocks: deps
	tools/test-rocks $(ROCK_LUAS)

test-interop: deps build luajit-core
	$(BUSTED) --run=interop

# docs/xeps.md from its one source, lua/lxmpp/xeps.lua; the LuaLS stubs
# types/ from theirs, the ### headings of docs/api.md (spec/docs_spec.lua
# fails when either drifts)
docs: build
	$(LUA) -e 'io.write(require("lxmpp.xeps").markdown())' > docs/xeps.md
	$(LUA) tools/gen-stubs.lua

lint: format-check
	luacheck lua spec bench examples fuzz/make_corpus.lua bin/lxmpp tools/fix-indent.lua tools/gen-stubs.lua

# Lua indentation is two spaces (.editorconfig): fails listing the files
# that indent with tabs (`$(LUA) tools/fix-indent.lua` converts them); part
# of lint since the tree was converted.
format-check:
	$(LUA) tools/fix-indent.lua --check

# The core against an expat.h without XML_SetReparseDeferralEnabled (expat
# before 2.6.0 and unpatched distributions, such as a fresh Debian 12 image):
# it must still compile under -Werror, load and parse. CI runs this stage.
EXPAT_H ?= /usr/include/expat.h
compat-expat: deps
	@mkdir -p build-compat/inc build-compat/lxmpp
	sed -e '/^XMLPARSEAPI(XML_Bool)$$/{N;/XML_SetReparseDeferralEnabled/d;}' \
	    -e '/XML_SetReparseDeferralEnabled/d' $(EXPAT_H) >build-compat/inc/expat.h
	@! grep -q XML_SetReparseDeferralEnabled build-compat/inc/expat.h
	$(CC) $(ALL_CFLAGS) -Ibuild-compat/inc -shared -o build-compat/lxmpp/core.so $(SRC) $(LIBS)
	LUA_CPATH='$(CURDIR)/build-compat/?.so;;' $(BUSTED) spec/stream_parser_spec.lua spec/stream_strcache_spec.lua

# The core as lxmpp-scm-1.rockspec builds it: luarocks' builtin backend
# compiles with its own CFLAGS (no -fvisibility=hidden, no warnings), so
# spec/exports_spec.lua checks that lx.h alone keeps everything but
# luaopen_lxmpp_core out of the dynamic symbol table.
ROCK_CFLAGS ?= $(shell luarocks --lua-version=5.4 config variables.CFLAGS 2>/dev/null || echo -O2 -fPIC)
build-rock/lxmpp/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	gcc $(ROCK_CFLAGS) -I$(LUA_INC) -Icsrc -D_POSIX_C_SOURCE=200809L -shared -o $@ $(SRC) $(LIBS)

# ASan + UBSan over the whole spec suite. The lua5.4 binary is not
# instrumented, so the sanitizer runtime is preloaded.
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
build-asan/lxmpp/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	gcc $(WARN) $(ASAN_FLAGS) -fPIC -fvisibility=hidden -I$(LUA_INC) -D_POSIX_C_SOURCE=200809L -shared -o $@ $(SRC) $(LIBS)

# (the preload goes to busted alone, through env: tools/run-specs' own
# sort and xargs, not instrumented, abort under LeakSanitizer; build/ too:
# the programs the specs start, bin/lxmpp and the examples, load it)
check: deps build build-asan/lxmpp/core.so luajit-core
	LUA_CPATH='$(CURDIR)/build-asan/?.so;;' \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(call RUN_SPECS,env LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" $(BUSTED),spec)

# libFuzzer targets for the pure engines, seeded from the spec data.
FUZZ_CC    := clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c99 -D_POSIX_C_SOURCE=200809L -Icsrc \
              -Wall -Wextra -pedantic -Werror
FUZZERS    := build-fuzz/fuzz_stream build-fuzz/fuzz_roundtrip build-fuzz/fuzz_sasl build-fuzz/fuzz_tls \
              build-fuzz/fuzz_ws
build-fuzz/%: fuzz/%.c $(ENGINES) $(HDR)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(ENGINES) -lexpat -lidn -lcrypto

# the TLS engine (OpenSSL on memory BIOs) is pure C too, but needs libssl
build-fuzz/fuzz_tls: fuzz/fuzz_tls.c csrc/tls.c $(HDR)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< csrc/tls.c -lssl -lcrypto

fuzz: deps build $(FUZZERS)
	rm -rf build-fuzz/corpus && $(LUA) fuzz/make_corpus.lua build-fuzz/corpus
	@for f in $(FUZZERS); do \
	  n=$$(basename $$f); mkdir -p build-fuzz/work-$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
	      -print_final_stats=1 build-fuzz/work-$$n build-fuzz/corpus >build-fuzz/$$n.log 2>&1 \
	    && echo "fuzz $$n: clean" \
	    || { tail -60 build-fuzz/$$n.log; echo "fuzz $$n: FAILED"; exit 1; }; \
	done

build-bench/expat_floor: bench/expat_floor.c
	@mkdir -p $(@D)
	$(CC) -O2 $(WARN) -o $@ $< -lexpat

# the stream parser and serializer against Prosody's and a bare expat loop
# (stanzas per second); `make bench-parse LUA=luajit` measures lxmpp on
# LuaJIT, Prosody still on Lua 5.4 (docs/performance.md)
BENCH_PARSE_N ?= 100000
bench-parse: deps build build-bench/expat_floor
	LXMPP_EXPAT_FLOOR=$(CURDIR)/build-bench/expat_floor $(LUA) bench/parse.lua $(BENCH_PARSE_N)

# stanzas through a TLS loopback pair, against `openssl speed` (MB of stanzas)
BENCH_TRANSPORT_MB ?= 200
bench-transport: deps build
	$(LUA) bench/transport.lua $(BENCH_TRANSPORT_MB)

# pinger + echo bot through one Prosody, lxmpp against slixmpp (messages per library)
BENCH_ECHO_N    ?= 20000
BENCH_ECHO_REPS ?= 3
bench-echo: deps build
	LXMPP_BENCH_REPS=$(BENCH_ECHO_REPS) $(LUA) bench/echo.lua $(BENCH_ECHO_N)

# lxmpp.server against Prosody: messages routed between client pairs (server CPU
# per message) and memory per idle connection; raises the open file limit
BENCH_SERVER_K ?= 5000
bench-server: deps build
	ulimit -n "$$(ulimit -Hn)" && $(LUA) bench/server.lua $(BENCH_SERVER_K)

# messages routed across server-to-server streams per server CPU second,
# lxmpp against Prosody as the receiving server (bench/s2s.lua;
# docs/performance.md, "Federation (s2s)")
BENCH_S2S_N ?= 20000
bench-s2s: deps build
	$(LUA) bench/s2s.lua $(BENCH_S2S_N)

bench: deps build build-bench/expat_floor
	LXMPP_EXPAT_FLOOR=$(CURDIR)/build-bench/expat_floor $(LUA) bench/parse.lua $(BENCH_PARSE_N)
	$(LUA) bench/transport.lua $(BENCH_TRANSPORT_MB)
	LXMPP_BENCH_REPS=$(BENCH_ECHO_REPS) $(LUA) bench/echo.lua $(BENCH_ECHO_N)

demo: deps build
	$(LUA) examples/demo.lua

# The same from a browser: the server's web side (WebSocket, BOSH, host-meta)
# serving Converse.js from web/ (installed by make deps), the dictionary bot
# in your roster; prints the address to open.
demo-web: deps build
	$(LUA) examples/demo_web.lua

# Federation: two embedded servers (discovery.nasa.guv, europa.nasa.guv) with
# certificates of a CA made on the fly, routing to each other over s2s, an
# SMS gateway component on one of them, and a scripted conversation across
# them printing which server routes what where; exits 0 when all arrived.
demo-federation: deps build
	$(LUA) examples/demo_federation.lua

clean:
	rm -rf build build-asan build-fuzz build-bench build-compat build-rock build-lua5.1 build-luajit build-lua5.3

# The suite under Valgrind's memcheck (slow; CI runs it too), without
# spec/interop: those specs check other projects' clients and servers against
# ours over the same C paths the rest of the suite drives, and mostly wait on
# those peers (make check runs them under ASan+UBSan). Nor spec/docs_spec.lua:
# it runs the documentation's examples, which call what the module specs
# already drive (about 260 s under Valgrind, which CI's 30 minutes need for
# LuaJIT's whole suite); make check runs it under ASan+UBSan. Nor the
# federation specs of policies, bidi, multiplexing, hostile dialback and
# XEP details (server_s2s_{policy,bidi,piggyback,hostile,xeps}_spec): they
# drive the s2s Lua logic over the TLS, stream and net C paths that
# server_s2s_spec and server_s2s_multi_spec (kept here) already run under
# Valgrind (about 130 s more there); make check runs them under ASan+UBSan.
# VALGRIND_SPECS=spec runs everything.
VALGRIND_SKIP := spec/docs_spec.lua spec/server_s2s_policy_spec.lua spec/server_s2s_bidi_spec.lua \
                 spec/server_s2s_piggyback_spec.lua spec/server_s2s_hostile_spec.lua spec/server_s2s_xeps_spec.lua
VALGRIND_SPECS ?= $(filter-out $(VALGRIND_SKIP),$(wildcard spec/*_spec.lua))
valgrind: deps build
	$(call RUN_SPECS,valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --suppressions=$(CURDIR)/.ci/valgrind.supp $(LUA) /usr/bin/busted,$(VALGRIND_SPECS))
