#!/bin/bash
# handler-test: tests handler.lua without a database or a network. Runs the fixture
# events through it with the shipping service stubbed by stub.lua, on a fake clock
# (the one-hour sleep and the 60 s retry take no time), and compares the outcome of
# every attempt with expected.txt. Exits 0 when they match. `make check` runs it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUTBOXD=${OUTBOXD:-$here/../../outboxd}
[ -x "$OUTBOXD" ] || make -C "$here/../.." outboxd
out=$(mktemp /tmp/handler-test.XXXXXX)
trap 'rm -f "$out"' EXIT
# exit 1: some events end dead, as the fixtures intend
rc=0
"$OUTBOXD" test "$here/handler.lua" "$here/fixtures.ndjson" --http-stub "$here/stub.lua" \
  --max-attempts 3 > "$out" || rc=$?
[ $rc -eq 1 ] || { echo "handler-test: outboxd test exited $rc, expected 1 (dead events)"; exit 1; }
# attempts of different events interleave; each event's own lines keep their order
if ! diff -u "$here/expected.txt" <(sort -s -n -k1,1 "$out"); then
  echo "handler-test: outcomes differ from expected.txt"
  exit 1
fi
echo "handler-test: ok ($(grep -vc ' enqueue ' "$out") attempts and $(grep -c ' enqueue ' "$out") enqueued events as expected)"
