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
# The CLI shares the spool protocol's modules with the daemon, never its loop.
CLI_SRC  := $(CLI_LIB) src/job.c src/util.c src/log.c src/spool.c src/control.c src/result.c \
            src/upstream.c
HDR      := $(wildcard src/*.h)
B        := build
T        := build/test
UNIT     := $(patsubst tests/unit/%.c,$(T)/%,$(wildcard tests/unit/test_*.c))
INTEG    := $(sort $(wildcard tests/integration/test_*.py))

.PHONY: all deps test unit integration fuzz bench run demo install clean

FUZZ_SECONDS ?= 30

all: $(B)/imgspoold $(B)/imgspool

deps:
	@sh contrib/install-deps.sh

$(B)/imgspoold: src/main.c $(SRC) $(HDR) | $(B)
	$(CC) $(CFLAGS) -o $@ src/main.c $(SRC) $(LIBS)

$(B)/imgspool: src/imgspool.c $(CLI_SRC) $(HDR) | $(B)
	$(CC) $(CFLAGS) -o $@ src/imgspool.c $(CLI_SRC) -ljansson -lm

# The test build: same code, sanitizers on, used by every test.
$(T)/imgspoold: src/main.c $(SRC) $(HDR) | $(T)
	$(CC) $(CFLAGS) -O1 $(SANITIZE) -o $@ src/main.c $(SRC) $(LIBS)

$(T)/imgspool: src/imgspool.c $(CLI_SRC) $(HDR) | $(T)
	$(CC) $(CFLAGS) -O1 $(SANITIZE) -o $@ src/imgspool.c $(CLI_SRC) -ljansson -lm

$(T)/test_%: tests/unit/test_%.c tests/unit/tap.h $(SRC) $(CLI_LIB) $(HDR) | $(T)
	$(CC) $(CFLAGS) -O1 $(SANITIZE) -Isrc -Itests/unit -o $@ $< $(SRC) $(CLI_LIB) $(LIBS)

$(B) $(T):
	mkdir -p $@

unit: deps $(UNIT)
	prove -e '' $(UNIT)

integration: deps $(T)/imgspoold
	IMGSPOOLD=$(CURDIR)/$(T)/imgspoold prove -e '' $(INTEG)

# The parsers' fuzzers run briefly first (FUZZ_SECONDS in all); then unit tests (TAP
# executables) and integration tests (executable Python scripts printing TAP) under prove.
test: deps $(UNIT) $(T)/imgspoold $(T)/imgspool $(B)/imgspoold $(B)/imgspool
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)
	IMGSPOOLD=$(CURDIR)/$(T)/imgspoold prove -e '' $(UNIT) $(INTEG)

fuzz: deps
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)

# Speed and memory figures of the optimized build; prints, asserts nothing.
bench: deps $(B)/imgspoold $(B)/imgspool $(B)/bench_parse
	$(B)/bench_parse
	IMGSPOOLD=$(CURDIR)/$(B)/imgspoold python3 tests/bench/bench.py
	IMGSPOOL=$(CURDIR)/$(B)/imgspool python3 tests/bench/bench_cli.py

$(B)/bench_parse: tests/bench/bench_parse.c $(SRC) $(HDR) | $(B)
	$(CC) $(CFLAGS) -Isrc -Itests/unit -o $@ $< $(SRC) $(LIBS)

# The quick start: both binaries, so build/imgspool is there to submit with.
run: deps $(B)/imgspoold $(B)/imgspool
	$(B)/imgspoold -c etc/imgspool.ini

demo: deps $(B)/imgspoold $(B)/imgspool
	python3 contrib/demo.py $(B)/imgspoold $(B)/imgspool

# make install PREFIX=/usr/local DESTDIR=/tmp/stage: the binaries, the man pages (uncompressed),
# the documented example config and the systemd unit, whose paths follow PREFIX. Man pages are
# every man/*.SECTION: imgspoold(8), imgspool.ini(5), and the client's imgspool(1) when present.
PREFIX  ?= /usr/local
DESTDIR ?=
I       := $(DESTDIR)$(PREFIX)
install: $(B)/imgspoold $(B)/imgspool
	install -d $(I)/sbin $(I)/bin $(I)/share/doc/imgspool $(I)/lib/systemd/system
	install -m 755 $(B)/imgspoold $(I)/sbin/imgspoold
	install -m 755 $(B)/imgspool $(I)/bin/imgspool
	for page in man/*.[1-8]; do \
		section=$${page##*.}; \
		install -d $(I)/share/man/man$$section && \
		install -m 644 $$page $(I)/share/man/man$$section/ || exit 1; \
	done
	install -m 644 etc/imgspool.ini README.md spool-layout.md $(I)/share/doc/imgspool/
	sed 's|/usr/local|$(PREFIX)|g' contrib/systemd/imgspoold.service > $(I)/lib/systemd/system/imgspoold.service
	chmod 644 $(I)/lib/systemd/system/imgspoold.service

clean:
	rm -rf $(B)
