# Helpers for end-to-end tests: each test is a bash function `t_NAME` in a
# tests/e2e/test_*.sh file; run.sh calls them one by one in a fresh temp folder.
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/outboxd}

# Every failed assertion is recorded, so a test fails even when a later line passes.
fail() { echo "    FAIL: $*" >&2; [ -n "${FAILFLAG:-}" ] && echo "$*" >> "$FAILFLAG"; return 1; }

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }

# assert_grep PATTERN FILE WHAT
assert_grep() { grep -qE -- "$1" "$2" || { fail "$3: /$1/ not in $2"; sed 's/^/      | /' "$2" | tail -20 >&2; return 1; }; }
assert_no_grep() { ! grep -qE -- "$1" "$2" || fail "$3: /$1/ found in $2"; }

# ndjson N [TOPIC] [PAYLOAD]: N event lines
ndjson() {
  local n=$1 topic=${2:-t} payload=${3:-'"x"'}
  awk -v n="$n" -v t="$topic" -v p="$payload" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"topic\":\"%s\",\"payload\":%s}\n", t, p }'
}

# field NAME FILE: value of the last text-log field NAME=VALUE in FILE
field() { grep -oE "(^| )$1=[^ ]+" "$2" | tail -1 | sed -E "s/^ ?$1=//"; }

# wait_for PATTERN FILE SECONDS
wait_for() {
  local i=0 max=$(( ${3:-10} * 20 ))
  while [ $i -lt $max ]; do grep -qE -- "$1" "$2" 2>/dev/null && return 0; sleep 0.05; i=$((i + 1)); done
  fail "timed out waiting for /$1/ in $2"
}
