# outboxd — one non-recursive Makefile.
#   make            build ./outboxd
#   make run        build and run the demo handler on the embedded default store
#   make check      unit tests (Check) and end-to-end tests against the real binary
#   make asan       the same tests under AddressSanitizer and UBSan
#   make bench      throughput / latency / memory benchmarks (prints medians)
#   make fuzz       differential fuzzing of the JSON decoder against cjson
#   make install    PREFIX=/usr/local DESTDIR=
# V=1 shows full commands.

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
BIN     ?= outboxd
CC      ?= cc

ifeq ($(V),1)
Q :=
else
Q := @
endif

# Debian packages the build needs; `make deps` installs the missing ones when root.
DEB_PKGS := pkg-config libluajit2-5.1-dev libuv1-dev check libsqlite3-dev lua-cjson-dev \
            libcurl4-openssl-dev libpq-dev libhttp-parser-dev libhiredis-dev libnats-dev
PKGS     := luajit libuv sqlite3 libcurl libpq hiredis libnats
# What the end-to-end tests drive besides the binary: a PostgreSQL server, the
# sqlite3, curl and jq command-line tools, Redis (server and redis-cli), NATS, and
# promtool (package prometheus) to lint /metrics. `make check` installs them the same way.
TEST_PKGS := postgresql sqlite3 curl jq redis-server redis-tools nats-server prometheus

DEPS_OK := $(shell pkg-config --exists $(PKGS) check 2>/dev/null && \
             test -e /usr/lib/$(shell $(CC) -dumpmachine)/liblua5.1-cjson.so && \
             test -e /usr/include/http_parser.h && \
             grep -qs lua_setexdata2 $$(pkg-config --variable=includedir luajit)/lua.h && echo yes)
# (lua_setexdata2 is OpenResty's LuaJIT, libluajit2-5.1-dev: the host keeps each
# coroutine's task there. Debian's plain libluajit-5.1-dev lacks it and is replaced.)
ifneq ($(DEPS_OK),yes)
ifneq ($(filter-out deps clean,$(or $(MAKECMDGOALS),all)),)
$(info outboxd: installing or checking build dependencies)
DEPS_RC := $(shell sh tests/deps.sh $(DEB_PKGS) >&2; echo $$?)
ifneq ($(DEPS_RC),0)
$(error missing Debian packages; as root run: apt-get install $(DEB_PKGS))
endif
endif
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# lua5.1-cjson.pc requires lua5.1.pc (PUC Lua); LuaJIT provides that ABI, so link it by name.
CJSON_LIBS := -llua5.1-cjson
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
           -Wcast-qual -Wwrite-strings -Wformat=2 -Wundef -Wvla -Wno-unused-parameter
OPT     ?= -O2 -g
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Werror=implicit-function-declaration \
           -MMD -MP -Isrc -I$(BUILD) $(PKG_CFLAGS)
LDFLAGS ?=
LDLIBS  += $(PKG_LIBS) $(CJSON_LIBS) -lhttp_parser -lm -lpthread -ldl

# Core modules: pure C, no libuv, no Lua. Unit-tested with a fake clock.
CORE_SRC := src/limiter.c src/breaker.c src/memmon.c src/backoff.c src/idset.c src/bucket.c \
            src/adaptive.c src/routes.c src/timers.c src/topics.c src/blockcache.c src/walvfs.c
APP_SRC  := $(filter-out $(CORE_SRC) src/main.c,$(wildcard src/*.c))
LUA_SRC  := $(wildcard lua/*.lua)

CORE_OBJ := $(CORE_SRC:src/%.c=$(BUILD)/%.o)
APP_OBJ  := $(APP_SRC:src/%.c=$(BUILD)/%.o) $(BUILD)/lua_embed.o
MAIN_OBJ := $(BUILD)/main.o

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# The HTTP receiver the e2e tests, the bench and examples/webhook-relay talk to.
RECEIVER := $(BUILD)/receiver
JS_BENCH := $(BUILD)/js_bench
# A stand-in for systemd's notification socket, for the e2e tests.
NOTIFY_LISTEN := $(BUILD)/notify-listen

.PHONY: all run check unit e2e bench asan install uninstall clean deps format fuzz
all: $(BIN)

$(BIN): $(MAIN_OBJ) $(APP_OBJ) $(CORE_OBJ)
	@echo "  LINK    $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -Wl,-E

$(BUILD)/%.o: src/%.c | $(BUILD)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# lua/*.lua are embedded into the binary as C strings.
$(BUILD)/lua_embed.c: $(LUA_SRC) tests/embed.sh | $(BUILD)
	@echo "  EMBED   $(LUA_SRC)"
	$(Q)sh tests/embed.sh $(LUA_SRC) > $@
$(BUILD)/lua_embed.o: $(BUILD)/lua_embed.c
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<

# Every unit test binary: its test file (which builds a suite, unit_suite) and the
# one runner main, tests/unit/check_main.c.
$(BUILD)/tests/check_main.o: tests/unit/check_main.c tests/unit/check_main.h | $(BUILD)
	@mkdir -p $(BUILD)/tests
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(CHECK_CFLAGS) -c -o $@ $<

$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/tests/check_main.o $(CORE_OBJ) $(APP_OBJ) | $(BUILD)
	@mkdir -p $(BUILD)/tests
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/tests/check_main.o $(CORE_OBJ) $(APP_OBJ) $(LDLIBS) $(CHECK_LIBS)

$(RECEIVER): tests/tools/receiver.c | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

# The NATS benchmark's ceiling: JetStream publishes with cnats' own async API.
$(JS_BENCH): tests/tools/js_bench.c | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)
$(NOTIFY_LISTEN): tests/tools/notify-listen.c | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

$(BUILD):
	$(Q)mkdir -p $(BUILD)

run: $(BIN)
	$(Q)sh tests/run-demo.sh

unit: $(UNIT_BIN)
	$(Q)set -e; for t in $(UNIT_BIN); do echo "== $$t"; CK_DEFAULT_TIMEOUT=120 $$t; done

e2e: $(BIN) $(RECEIVER) $(NOTIFY_LISTEN)
	$(Q)sh tests/deps.sh $(TEST_PKGS)
	$(Q)OUTBOXD=$(abspath $(BIN)) RECEIVER=$(abspath $(RECEIVER)) NOTIFY_LISTEN=$(abspath $(NOTIFY_LISTEN)) \
	  bash tests/with-pg.sh bash tests/e2e/run.sh

check: unit e2e
	@echo "make check: all tests passed"

asan:
	$(Q)$(MAKE) BUILD=build-asan BIN=build-asan/outboxd OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" check

bench: $(BIN) $(RECEIVER) $(JS_BENCH)
	$(Q)sh tests/deps.sh $(TEST_PKGS)
	$(Q)RECEIVER=$(abspath $(RECEIVER)) JS_BENCH=$(abspath $(JS_BENCH)) bash tests/with-pg.sh bash tests/bench/run.sh

# Differential fuzzing of the JSON decoder against cjson (libFuzzer; needs clang and
# libclang-rt-14-dev, installed when missing). Not part of `make check`.
FUZZ_CC   ?= clang
FUZZ_TIME ?= 60
FUZZ_BIN  := $(BUILD)/fuzz/fuzz_json
fuzz:
	$(Q)sh tests/deps.sh clang libclang-rt-14-dev
	$(Q)mkdir -p $(BUILD)/fuzz/corpus
	@echo "  FUZZ    $(FUZZ_BIN)"
	$(Q)$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
	  $(PKG_CFLAGS) -o $(FUZZ_BIN) tests/fuzz/fuzz_json.c src/json.c src/ndjson.c src/utf8.c \
	  $(PKG_LIBS) $(CJSON_LIBS) -lm
	$(Q)LSAN_OPTIONS=suppressions=$(abspath tests/fuzz/lsan.supp) $(FUZZ_BIN) \
	  -max_total_time=$(FUZZ_TIME) -max_len=4096 -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus

# The unit's /usr/local paths are rewritten for PREFIX; uninstall removes exactly
# what install put (same PREFIX and DESTDIR), and the folders it made when empty.
UNITDIR ?= $(PREFIX)/lib/systemd/system
HANDLERS := $(notdir $(wildcard handlers/*.lua))

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/outboxd/handlers $(DESTDIR)$(UNITDIR)
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/outboxd
	install -m 644 handlers/*.lua $(DESTDIR)$(PREFIX)/share/outboxd/handlers/
	sed 's|/usr/local|$(PREFIX)|g' examples/systemd/outboxd.service > $(DESTDIR)$(UNITDIR)/outboxd.service
	chmod 644 $(DESTDIR)$(UNITDIR)/outboxd.service

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/outboxd $(DESTDIR)$(UNITDIR)/outboxd.service
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/outboxd/handlers/,$(HANDLERS))
	-rmdir $(DESTDIR)$(PREFIX)/share/outboxd/handlers $(DESTDIR)$(PREFIX)/share/outboxd 2>/dev/null

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c tests/tools/*.c

clean:
	rm -rf build build-asan outboxd

deps:
	$(Q)sh tests/deps.sh $(DEB_PKGS)

-include $(wildcard $(BUILD)/*.d)
