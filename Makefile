# imgspool - plain make. `make` builds, `make test` runs everything under ASan+UBSan,
# `make run` starts the daemon on ./spool, `make demo` shows a job land against the fake upstream.

CC       ?= cc
PKGS     := libcurl jansson inih libcrypto
WARN     := -Wall -Wextra -Wmissing-prototypes -Wshadow -Wformat=2 -Wstrict-prototypes \
            -Wpointer-arith -Wvla -Wno-unused-result
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE $(WARN) -Werror
LIBS     := -lcurl -ljansson -linih -lcrypto -lpthread -lm
SANITIZE := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# The daemon's modules; the CLI's verbs (cli*.c) and the two mains are apart.
CLI_LIB  := $(wildcard src/cli*.c)
SRC      := $(filter-out src/main.c src/imgspool.c $(CLI_LIB),$(wildcard src/*.c))
# The CLI shares the spool protocol's modules with the daemon, never its loop; and its
# configuration's reader, for imgspool -c (the spool and the job limits of a daemon).
CLI_SRC  := $(CLI_LIB) src/job.c src/util.c src/log.c src/spool.c src/syncset.c src/control.c \
            src/result.c src/record.c src/upstream.c src/publish.c src/config.c src/price.c \
            src/secret.c src/crypto.c src/jsontext.c src/fileid.c src/dirtrust.c
CLI_LIBS := -ljansson -linih -lcrypto -lm
B        := build
T        := build/test
UNIT     := $(patsubst tests/unit/%.c,$(T)/%,$(wildcard tests/unit/test_*.c))
INTEG    := $(sort $(wildcard tests/integration/test_*.py))
# Each source is compiled once per flavour: build/obj (optimized), build/test/obj (sanitizers);
# the binaries and the unit tests link those objects. -MMD -MP writes each object's header
# dependencies next to it (.d), read back below.
obj      = $(patsubst src/%.c,$(B)/obj/%.o,$(1))
tobj     = $(patsubst src/%.c,$(T)/obj/%.o,$(1))
DEPFLAGS := -MMD -MP

.PHONY: all deps test unit unit-tsan integration fuzz bench run demo install clean

FUZZ_SECONDS ?= 30

all: $(B)/imgspoold $(B)/imgspool

deps:
	@sh contrib/install-deps.sh

$(B)/obj/%.o: src/%.c | $(B)/obj
	$(CC) $(CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/imgspoold: $(call obj,src/main.c $(SRC))
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(B)/imgspool: $(call obj,src/imgspool.c $(CLI_SRC))
	$(CC) $(CFLAGS) -o $@ $^ $(CLI_LIBS)

# The test build: same code, sanitizers on, used by every test.
$(T)/obj/%.o: src/%.c | $(T)/obj
	$(CC) $(CFLAGS) -O1 $(SANITIZE) $(DEPFLAGS) -c -o $@ $<

$(T)/imgspoold: $(call tobj,src/main.c $(SRC))
	$(CC) $(CFLAGS) -O1 $(SANITIZE) -o $@ $^ $(LIBS)

$(T)/imgspool: $(call tobj,src/imgspool.c $(CLI_SRC))
	$(CC) $(CFLAGS) -O1 $(SANITIZE) -o $@ $^ $(CLI_LIBS)

# A unit test links all of src/ but the two mains.
$(T)/unit/%.o: tests/unit/%.c | $(T)/unit
	$(CC) $(CFLAGS) -O1 $(SANITIZE) $(DEPFLAGS) -Isrc -Itests/unit -c -o $@ $<

$(UNIT): $(T)/test_%: $(T)/unit/test_%.o $(call tobj,$(SRC) $(CLI_LIB))
	$(CC) $(CFLAGS) -O1 $(SANITIZE) -o $@ $^ $(LIBS)
# Kept after linking, so the next build recompiles only what changed.
.SECONDARY: $(patsubst $(T)/%,$(T)/unit/%.o,$(UNIT))

# The unit tests of the modules with threads, under ThreadSanitizer too (it cannot share a
# binary with ASan): a data race fails them (halt_on_error), though it did no harm this run.
TS       := build/tsan
TSAN     := -fsanitize=thread -fno-omit-frame-pointer
TSAN_UNIT := $(TS)/test_http $(TS)/test_iopool $(TS)/test_keyshare_ledger $(TS)/test_log $(TS)/test_loop $(TS)/test_sigwatch $(TS)/test_exitwatch $(TS)/test_notify
export TSAN_OPTIONS := halt_on_error=1 exitcode=66 second_deadlock_stack=1
tsobj    = $(patsubst src/%.c,$(TS)/obj/%.o,$(1))

$(TS)/obj/%.o: src/%.c | $(TS)/obj
	$(CC) $(CFLAGS) -O1 $(TSAN) $(DEPFLAGS) -c -o $@ $<

$(TS)/unit/%.o: tests/unit/%.c | $(TS)/unit
	$(CC) $(CFLAGS) -O1 $(TSAN) $(DEPFLAGS) -Isrc -Itests/unit -c -o $@ $<

$(TSAN_UNIT): $(TS)/test_%: $(TS)/unit/test_%.o $(call tsobj,$(SRC) $(CLI_LIB))
	$(CC) $(CFLAGS) -O1 $(TSAN) -o $@ $^ $(LIBS)
.SECONDARY: $(patsubst $(TS)/%,$(TS)/unit/%.o,$(TSAN_UNIT))

# prove runs each test through tests/unit/run.sh: a unit test gets a TMPDIR of its own under
# build/tmp/, removed when it passes, kept under build/failed-tests/ when it fails.
RUN_TEST := sh tests/unit/run.sh

unit-tsan: deps $(TSAN_UNIT)
	prove -e '$(RUN_TEST)' $(TSAN_UNIT)

$(B) $(T) $(B)/obj $(B)/bench $(T)/obj $(T)/unit $(TS)/obj $(TS)/unit:
	mkdir -p $@

-include $(wildcard $(B)/obj/*.d $(B)/bench/*.d $(T)/obj/*.d $(T)/unit/*.d $(TS)/obj/*.d \
                    $(TS)/unit/*.d)

unit: deps $(UNIT)
	prove -e '$(RUN_TEST)' $(UNIT)

# What an integration test may run: the test build, and the bench rig's fake upstream and
# clients (test_fastup.py).
INTEG_BINS := $(T)/imgspoold $(T)/imgspool $(B)/fastup $(B)/loadgen $(B)/curlgen

integration: deps $(INTEG_BINS)
	IMGSPOOLD=$(CURDIR)/$(T)/imgspoold prove -e '' $(INTEG)

# One integration test with everything it needs built first: make check-fastup runs
# tests/integration/test_fastup.py.
check-%: deps $(INTEG_BINS)
	IMGSPOOLD=$(CURDIR)/$(T)/imgspoold prove -v -e '' tests/integration/test_$*.py

# The parsers' fuzzers run briefly first (FUZZ_SECONDS in all); then unit tests (TAP
# executables; those of the threaded modules under TSan too) and integration tests (executable
# Python scripts printing TAP) under prove.
test: deps $(UNIT) $(TSAN_UNIT) $(INTEG_BINS) $(B)/imgspoold $(B)/imgspool
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)
	IMGSPOOLD=$(CURDIR)/$(T)/imgspoold prove -e '$(RUN_TEST)' $(UNIT) $(TSAN_UNIT) $(INTEG)

fuzz: deps
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)

# Speed and memory figures of the optimized build; prints, asserts nothing (issue 14's targets
# printed beside the figures). BENCH_ONLY=a,b runs only those sections: parse, cli, keyshare,
# gate, cancel, rescan, results, hashflood here, and the sections of tests/bench/bench.py (idle throughput
# instructions syscalls ext4 inflight rss; its docstring lists its other knobs). Long: run under
# nice.
BENCH_ONLY ?=
bench_wants = [ -z "$(BENCH_ONLY)" ] || echo ",$(BENCH_ONLY)," | grep -q ",$(1),"
bench: deps $(B)/imgspoold $(B)/imgspool $(B)/bench_parse $(B)/bench_gate $(B)/bench_cancel \
       $(B)/fastup $(B)/loadgen $(B)/curlgen
	@if $(call bench_wants,parse); then $(B)/bench_parse; fi
	@if $(call bench_wants,gate); then nice python3 tests/bench/bench_gate.py; fi
	@if $(call bench_wants,cancel); then nice python3 tests/bench/bench_cancel.py; fi
	BENCH_ONLY=$(BENCH_ONLY) IMGSPOOLD=$(CURDIR)/$(B)/imgspoold nice python3 tests/bench/bench.py
	@if $(call bench_wants,cli); then \
		IMGSPOOL=$(CURDIR)/$(B)/imgspool nice python3 tests/bench/bench_cli.py; fi
	@if $(call bench_wants,keyshare); then \
		IMGSPOOLD=$(CURDIR)/$(B)/imgspoold nice python3 tests/bench/bench_keyshare.py; fi
	@if $(call bench_wants,rescan); then \
		IMGSPOOLD=$(CURDIR)/$(B)/imgspoold nice python3 tests/bench/bench_backlog.py; fi
	@if $(call bench_wants,results); then IMGSPOOLD=$(CURDIR)/$(B)/imgspoold \
		IMGSPOOL=$(CURDIR)/$(B)/imgspool nice python3 tests/bench/bench_results.py; fi
	@if $(call bench_wants,hashflood); then \
		IMGSPOOLD=$(CURDIR)/$(B)/imgspoold nice python3 tests/bench/bench_hashflood.py; fi
	@if $(call bench_wants,refs); then \
		IMGSPOOLD=$(CURDIR)/$(B)/imgspoold nice python3 tests/bench/bench_refs.py; fi

$(B)/bench/%.o: tests/bench/%.c | $(B)/bench
	$(CC) $(CFLAGS) $(DEPFLAGS) -Isrc -Itests/unit -c -o $@ $<

$(B)/bench_parse $(B)/bench_gate $(B)/bench_cancel: $(B)/%: $(B)/bench/%.o $(call obj,$(SRC))
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

# The fast fake upstream and the raw HTTP clients of bench.py: standalone, no project code.
$(B)/fastup $(B)/loadgen: $(B)/%: $(B)/bench/%.o
	$(CC) $(CFLAGS) -o $@ $^

$(B)/curlgen: $(B)/bench/curlgen.o
	$(CC) $(CFLAGS) -o $@ $^ -lcurl

# The quick start: both binaries, so build/imgspool is there to submit with.
run: deps $(B)/imgspoold $(B)/imgspool
	$(B)/imgspoold -c etc/imgspool.ini

demo: deps $(B)/imgspoold $(B)/imgspool
	python3 contrib/demo.py $(B)/imgspoold $(B)/imgspool

# make install PREFIX=/usr/local DESTDIR=/tmp/stage: the binaries, the man pages (uncompressed),
# the documented example config and the systemd unit, whose paths follow PREFIX. Man pages are
# every contrib/man/*.SECTION: imgspoold(8), imgspool.ini(5) and the client's imgspool(1).
PREFIX  ?= /usr/local
DESTDIR ?=
I       := $(DESTDIR)$(PREFIX)
install: $(B)/imgspoold $(B)/imgspool
	install -d $(I)/sbin $(I)/bin $(I)/share/doc/imgspool $(I)/lib/systemd/system
	install -m 755 $(B)/imgspoold $(I)/sbin/imgspoold
	install -m 755 $(B)/imgspool $(I)/bin/imgspool
	for page in contrib/man/*.[1-8]; do \
		section=$${page##*.}; \
		install -d $(I)/share/man/man$$section && \
		install -m 644 $$page $(I)/share/man/man$$section/ || exit 1; \
	done
	install -m 644 etc/imgspool.ini README.md spool-layout.md $(I)/share/doc/imgspool/
	sed 's|/usr/local|$(PREFIX)|g' contrib/systemd/imgspoold.service > $(I)/lib/systemd/system/imgspoold.service
	chmod 644 $(I)/lib/systemd/system/imgspoold.service

clean:
	rm -rf $(B)
