#!/bin/sh
# Bench driver (`make bench`): runs every tests/bench/*.sh but this one, in turn.
# Each prints plain result lines; a failing benchmark is reported and the rest go on.
cd "$(dirname "$0")" || exit 1
rc=0
for b in *.sh; do
  [ "$b" = run.sh ] && continue
  echo "== $b"
  bash "./$b" || { echo "bench $b failed (exit $?)"; rc=1; }
done
exit $rc
