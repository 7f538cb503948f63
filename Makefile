# zcrm - Zoho CRM delink client: Lua module with a C core on libcurl.
#
#   make                 build build/5.4/zcrm/core.so (Lua 5.4)
#   make LUA=luajit      build build/5.1/zcrm/core.so (Lua 5.1 / LuaJIT ABI)
#   make check           install missing Debian packages, build, run every spec
#   make demo            install, build, start the simulator, delink 250 relations; then the zcrm command
#   make sanitize        specs with the C core built with -fsanitize=address,undefined
#   make valgrind        specs under valgrind --leak-check=full
#   make lint            luacheck on lua/, spec/ and bin/zcrm
#   make fuzz            libFuzzer harnesses fuzz/*_fuzz.c, FUZZ_SECONDS (60) each
#   make install PREFIX=/usr/local
#   make simulator       run the Zoho CRM simulator in the foreground for your own tests
#   make nginx-latency   ping latency of an nginx worker while delinks are in flight (thread pool vs blocking)
#   make bench           zcrm vs Python requests, a curl loop and wrk against the simulator (a table)

LUA ?= lua5.4
ifeq ($(LUA),luajit)
LUA_VERSION ?= 5.1
LUA_INCDIR ?= /usr/include/lua5.1
else
LUA_VERSION ?= 5.4
LUA_INCDIR ?= /usr/include/lua$(LUA_VERSION)
endif

PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
BINDIR ?= $(PREFIX)/bin

CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
ZCRM_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(WARNINGS) \
              -I$(LUA_INCDIR) $(shell pkg-config --cflags libcurl)
CURL_LIBS = $(shell pkg-config --libs libcurl)

BUILD ?= build/$(LUA_VERSION)
CORE = $(BUILD)/zcrm/core.so
SOURCES = $(wildcard csrc/*.c)
HEADERS = $(wildcard csrc/*.h)

BUSTED = $(LUA) /usr/bin/busted --lpath='./?.lua;./lua/?.lua;./lua/?/init.lua' \
         --cpath='./$(BUILD)/?.so' --output=spec/support/summary.lua

.PHONY: all nginx-core deps bench-deps check test demo sanitize valgrind lint fuzz install uninstall simulator bench \
        nginx-latency clean

all: $(CORE)

$(CORE): $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ZCRM_CFLAGS) $(EXTRA_CFLAGS) -shared -o $@ $(SOURCES) $(CURL_LIBS) $(EXTRA_LDFLAGS)

# The LuaJIT build that nginx loads in the nginx specs, whichever Lua runs busted.
nginx-core:
	@$(MAKE) --no-print-directory all LUA=luajit LUA_VERSION=5.1 LUA_INCDIR=/usr/include/lua5.1 \
	  BUILD=build/5.1 CFLAGS="-O2 -g" EXTRA_CFLAGS= EXTRA_LDFLAGS=

deps:
	@tools/install-deps

# The benchmark's extra packages (python3-requests, wrk, GNU time, curl).
bench-deps:
	@tools/install-deps tools/debian-packages-bench.txt

check: deps
	@$(MAKE) --no-print-directory all nginx-core
	$(BUSTED) $(SPECS)

# The specs alone, without the package check (the build must be current).
test: all nginx-core
	$(BUSTED) $(SPECS)

demo: deps
	@$(MAKE) --no-print-directory all
	$(LUA) examples/demo.lua
	LUA=$(LUA) sh examples/demo-cli.sh

# The Lua interpreter is not instrumented, so the sanitizer runtime is preloaded.
# The simulator's nginx is started without LD_PRELOAD (spec/support/simulator.lua).
sanitize: deps
	@$(MAKE) --no-print-directory all BUILD=build/$(LUA_VERSION)-asan CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
	LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/support/lsan.supp \
	  $(MAKE) --no-print-directory test BUILD=build/$(LUA_VERSION)-asan

valgrind: deps all nginx-core
	valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
	  --suppressions=spec/support/valgrind.supp $(BUSTED) $(SPECS)

# luacheck on the Lua code; cppcheck (C core and fuzz harnesses) and a clang -Werror build on the C core.
lint: deps
	luacheck lua spec examples bench bin/zcrm
	cppcheck --enable=warning,style,performance,portability --error-exitcode=1 --quiet -Icsrc csrc/*.c fuzz/*.c
	$(MAKE) --no-print-directory all CC=clang BUILD=build/$(LUA_VERSION)-clang

# libFuzzer (clang, Debian libclang-rt-14-dev): every fuzz/NAME_fuzz.c is built into
# build/fuzz/NAME_fuzz with the pure C core (csrc/*.c without the Lua glue and the libcurl
# transport) and run FUZZ_SECONDS on fuzz/corpus/NAME by fuzz/run; any crash fails.
# A new harness (e.g. fuzz/reply_fuzz.c for the response reader) needs only its file and
# a seed corpus directory.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_HARNESSES = $(wildcard fuzz/*_fuzz.c)
FUZZ_BINS = $(patsubst fuzz/%.c,build/fuzz/%,$(FUZZ_HARNESSES))
FUZZ_CORE = $(filter-out csrc/zcrm_lua.c csrc/zcrm_http_curl.c,$(SOURCES))
FUZZ_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(WARNINGS) -Icsrc

build/fuzz/%_fuzz: fuzz/%_fuzz.c $(FUZZ_CORE) $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_CORE)

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	fuzz/run $(FUZZ_SECONDS) $(FUZZ_BINS)

# The zcrm command goes to $(BINDIR), its #! line naming the Lua it was installed for.
install: all
	install -d $(DESTDIR)$(LUA_LIBDIR)/zcrm $(DESTDIR)$(LUA_SHAREDIR)/zcrm/cli $(DESTDIR)$(BINDIR)
	install -m 0755 $(CORE) $(DESTDIR)$(LUA_LIBDIR)/zcrm/core.so
	install -m 0644 lua/zcrm/*.lua $(DESTDIR)$(LUA_SHAREDIR)/zcrm/
	install -m 0644 lua/zcrm/cli/*.lua $(DESTDIR)$(LUA_SHAREDIR)/zcrm/cli/
	sed '1s|^#!.*|#!/usr/bin/env $(LUA)|' bin/zcrm >$(DESTDIR)$(BINDIR)/zcrm
	chmod 0755 $(DESTDIR)$(BINDIR)/zcrm

uninstall:
	rm -rf $(DESTDIR)$(LUA_LIBDIR)/zcrm $(DESTDIR)$(LUA_SHAREDIR)/zcrm $(DESTDIR)$(BINDIR)/zcrm

simulator: deps
	$(LUA) spec/support/simulator.lua

# Ping latency of one nginx worker while 20 slow delinks are in flight: zcrm's thread
# pool vs the C session called directly (blocking). bench/nginx_latency.lua.
nginx-latency: nginx-core
	$(LUA) bench/nginx_latency.lua

# A benchmark, not a test: prints a table (about 5 minutes), never fails on the numbers.
# It runs zcrm under lua5.4 (build/5.4), whatever LUA says.
bench: deps bench-deps all
	lua5.4 bench/run.lua

clean:
	rm -rf build
