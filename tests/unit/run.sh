#!/bin/sh
# run.sh TEST [ARG...] - prove's runner for make unit and make test (prove -e 'sh tests/unit/run.sh').
#
# A unit test (an executable under build/) runs with TMPDIR a fresh directory of its own under
# build/tmp/, so a test that crashes leaves nothing in /tmp. That directory is removed when the
# test passes; when it fails, or passes but left something behind there, it is moved to
# build/failed-tests/TEST/ for a look and the run fails. An integration test (*.py) keeps its own
# harness (tests/lib/harness.py does the same) and is run by python3, whatever its file mode.
# A failed unit test's "not ok" lines and their diagnostics also go to stderr, which prove shows
# without -v, so a CI log says which check failed and where.

set -u
case $1 in
*.py) exec python3 "$@" ;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd) || exit 2
name=$(basename "$(dirname "$1")")-$(basename "$1")
mkdir -p "$root/build/tmp" || exit 2
scratch=$(mktemp -d "$root/build/tmp/$name.XXXXXX") || exit 2

out=$scratch.tap
TMPDIR=$scratch "$@" > "$out"
rc=$?
cat "$out"
if [ "$rc" -ne 0 ] || grep -q '^not ok' "$out"; then
	grep -A20 '^not ok' "$out" | grep -E '^(not ok|#)' >&2
fi
rm -f "$out"

left=$(ls -A "$scratch")
if [ "$rc" -eq 0 ] && [ -z "$left" ]; then
	rmdir "$scratch"
	exit 0
fi
kept=$root/build/failed-tests/$name
if mkdir -p "$kept" && mv "$scratch" "$kept/"; then
	kept=$kept/$(basename "$scratch")
else
	kept="$scratch (not moved)"
fi
if [ "$rc" -eq 0 ]; then
	echo "$1: passed but left behind in its TMPDIR:" $left >&2
	rc=1
fi
echo "$1: its TMPDIR kept: $kept" >&2
exit "$rc"
