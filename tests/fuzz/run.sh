#!/bin/sh
# run.sh [SECONDS] - build the libFuzzer targets (job file, upstream response, configuration
# file) and run each for a third of SECONDS (default 30 in all) on a copy of its seed corpus
# under build/fuzz/, with tests/fuzz/NAME.dict as its dictionary when there is one.
#
# Needs clang with its libFuzzer runtime: on Debian 12, `apt-get install clang libclang-rt-14-dev`.
# Installs nothing. Writes only under build/fuzz/ (never into tests/fuzz/corpus/). Prints one
# line per fuzzer and exits non-zero on a build failure, a crash, a leak, undefined behaviour or a
# timeout; the input that did it is kept in build/fuzz/artifacts/, the full output in
# build/fuzz/NAME.log. Reproduce with: build/fuzz/fuzz_NAME build/fuzz/artifacts/NAME-crash-...
#
# Environment: FUZZ_CC (default clang), FUZZ_ARGS (extra libFuzzer flags, e.g. -jobs=4).

set -u

total=${1:-30}
case $total in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac
names="job upstream config"
per=$((total / 3))
[ "$per" -ge 1 ] || per=1

cd "$(dirname "$0")/../.." || exit 2
[ -f src/job.c ] && [ -d tests/fuzz/corpus ] || {
	echo "fuzz: cannot find the imgspool source tree" >&2
	exit 2
}

cc=${FUZZ_CC:-clang}
out=build/fuzz
san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
cflags="-g -O1 -std=c11 -D_GNU_SOURCE $san -fno-omit-frame-pointer -Wall -Wextra -Isrc"
srcs="src/job.c src/upstream.c src/jsontext.c src/util.c src/log.c src/crypto.c src/secret.c"
# The configuration's reader and what it calls: inih, prices, sync modes.
config_srcs="src/config.c src/price.c src/syncset.c"
hint="on Debian 12: apt-get install clang libclang-rt-14-dev"

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "fuzz: $cc not found ($hint)" >&2
	exit 2
fi
mkdir -p "$out" || exit 2

# Can this compiler link a fuzzer at all? clang without compiler-rt's libFuzzer fails here.
cat >"$out/probe.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { (void)data; (void)size; return 0; }
EOF
# shellcheck disable=SC2086 # $san is a list of flags
if ! "$cc" $san -o "$out/probe" "$out/probe.c" >"$out/probe.log" 2>&1; then
	echo "fuzz: $cc cannot link -fsanitize=fuzzer,address,undefined:" \
		"the libFuzzer/sanitizer runtime is missing ($hint)" >&2
	sed -n '1,5s/^/  /p' "$out/probe.log" >&2
	exit 2
fi

status=0
for name in $names; do
	extra=
	[ "$name" = config ] && extra="$config_srcs -linih"
	# shellcheck disable=SC2086 # $cflags, $srcs and $extra are lists
	if ! "$cc" $cflags -o "$out/fuzz_$name" "tests/fuzz/fuzz_$name.c" $srcs $extra -ljansson -lcrypto; then
		echo "fuzz_$name: BUILD FAILED" >&2
		status=1
	fi
done
[ "$status" -eq 0 ] || exit 1

for name in $names; do
	corpus=$out/corpus/$name
	dict=
	[ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
	log=$out/$name.log
	rm -rf "$corpus"
	mkdir -p "$corpus" "$out/artifacts" || exit 2
	cp tests/fuzz/corpus/"$name"/* "$corpus"/ || exit 2
	seeds=$(ls "$corpus" | wc -l)

	start=$(date +%s)
	# shellcheck disable=SC2086 # $dict may be empty; FUZZ_ARGS is a list of flags
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
		"$out/fuzz_$name" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 \
		-max_len=262144 -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" \
		$dict ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))

	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -n 1 |
		sed 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/')
	files=$(ls "$corpus" | wc -l)
	line="${runs:-?} runs in $secs s (${speed:-?} exec/s), ${cov:-cov ?}, corpus $seeds -> $files"

	if [ "$rc" -eq 0 ]; then
		echo "fuzz_$name: ok: $line"
		continue
	fi
	status=1
	what=$(grep -m 1 -E '^SUMMARY: |ERROR: libFuzzer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' "$log")
	art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
	echo "fuzz_$name: FAILED (exit $rc): ${what:-see the log}; input ${art:-none}; log $log; $line"
	# The report itself, from the sanitizer's first line to its SUMMARY, without libFuzzer's frames.
	sed -n '/^==[0-9]*==ERROR\|runtime error:\|deadly signal\|ERROR: libFuzzer/,/^SUMMARY/p' "$log" |
		grep -v -e 'fuzzer::' -e '__sanitizer_print_stack_trace' -e 'libc_start' -e ' in _start ' \
			-e 'rudimentary signal' -e 'Combine libFuzzer' -e '^ *$' |
		head -n 40 | sed 's/^/  /'
done
exit "$status"
