#!/bin/bash
# Runs every t_* function of tests/e2e/test_*.sh against the real binary, each in
# its own temporary folder. Prints one line per test and "N passed, N failed".
cd "$(dirname "$0")" || exit 1
here=$(pwd)
. ./lib.sh
pass=0; failed=0; failures=""
only=${1:-}
for f in test_*.sh; do
  # lib.sh again before each file: a helper one file defines under a lib name
  # (its own wait_count, say) serves that file's tests only
  . ./lib.sh
  # shellcheck disable=SC1090
  . "./$f"
  for t in $(grep -oE '^t_[a-z0-9_]+' "$f"); do
    [ -n "$only" ] && [[ "$t" != *"$only"* ]] && continue
    dir=$(mktemp -d /tmp/outboxd-e2e.XXXXXX)
    start=$(date +%s%N)
    if (cd "$dir" && HERE="$here" FAILFLAG="$dir/.failed" "$t") > "$dir/test.out" 2>&1 &&
       [ ! -s "$dir/.failed" ]; then
      pass=$((pass + 1)); printf 'ok    %-40s %6d ms\n' "$t" $(( ($(date +%s%N) - start) / 1000000 ))
      rm -rf "$dir"
    else
      failed=$((failed + 1)); failures="$failures $t"
      printf 'FAIL  %s (kept %s)\n' "$t" "$dir"; sed 's/^/  /' "$dir/test.out" | tail -30
    fi
  done
done
echo "e2e: $pass passed, $failed failed"
[ $failed -eq 0 ]
