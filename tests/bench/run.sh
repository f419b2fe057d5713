#!/bin/bash
# `make bench`: runs every tests/bench/*.sh (except this driver and lib.sh) in turn. Each prints
# plain result lines; numbers are medians of several runs. Nothing here asserts.
cd "$(dirname "$0")" || exit 1
export OUTBOXD=${OUTBOXD:-$(cd ../.. && pwd)/outboxd}
for b in *.sh; do
  [ "$b" = run.sh ] || [ "$b" = lib.sh ] && continue
  [ -n "${1:-}" ] && [[ "$b" != *"$1"* ]] && continue
  echo "== $b"
  bash "./$b" || echo "   ($b exited $?)"
done
