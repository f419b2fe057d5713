#!/bin/sh
# `make bench`: runs every tests/bench/*.sh benchmark in turn against ./outboxd.
# Each prints its own figures; the driver fails if any of them fails.
cd "$(dirname "$0")/../.." || exit 1
rc=0
for b in tests/bench/*.sh; do
  [ "$b" = tests/bench/run.sh ] && continue
  echo "== $b"
  bash "$b" || rc=1
done
exit $rc
