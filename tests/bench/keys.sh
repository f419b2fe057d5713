#!/bin/bash
# Per-key order against no keys: one host, `run --once`, no-op handler, N events spread
# over 20, 1000 and N keys (per-key order, the default), next to the same N events
# without keys; SQLite and PostgreSQL (when OUTBOX_TEST_PG is set). Prints events/s
# (median of RUNS, runs alternating between the cases) and keyed / keyless.
# BENCH_KEYS_N (default 10^5), RUNS (3), BATCH (50), KEYS ("20 1000 N").
. "$(dirname "$0")/lib.sh"
set -u
N=${BENCH_KEYS_N:-100000}
RUNS=${RUNS:-3}
BATCH=${BATCH:-50}
KEYS=${KEYS:-"20 1000 $N"}
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
tmp=$(mktemp -d /tmp/outboxd-bench-keys.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
echo 'return function(ev) end' > noop.lua

# key_expr K: the SQL for the key of row i (NULL without keys)
key_expr() { [ "$1" = 0 ] && echo NULL || echo "'k' || (i % $1)"; }

# SQLite: a template per key count, copied for every run.
sqlite_fill() {
  rm -f "tpl$1.db"*
  "$OUTBOXD" init --db "tpl$1.db" 2> /dev/null || return 1
  sqlite3 "tpl$1.db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
    INSERT INTO outbox (topic, key, payload) SELECT 'orders', $(key_expr "$1"),
    '{\"order\": ' || i || '}' FROM n"
}
sqlite_prepare() { rm -f x.db*; cp "tpl$1.db" x.db; echo x.db; }

pg_db="${OUTBOX_TEST_PG:-}"; pg_db="${pg_db%/*}/bench_keys_$$"
pg_fill() { :; }
pg_prepare() {
  psql -qAtX "$pg_db" -c "TRUNCATE outbox" -c "INSERT INTO outbox (topic, key, payload)
    SELECT 'orders', $(key_expr "$1"), '{\"order\": ' || i || '}' FROM generate_series(1, $N) i" \
    -c "VACUUM ANALYZE outbox" > /dev/null || return 1
  echo "$pg_db"
}

# run STORE K: events/s of one run over a fresh outbox
run() {
  local db t0 t1
  db=$("$1_prepare" "$2") || return 1
  t0=$(date +%s%N)
  "$OUTBOXD" run noop.lua --db "$db" --once --batch "$BATCH" --log json 2> run.log \
    || { echo "run failed: $(tail -1 run.log)" >&2; return 1; }
  t1=$(date +%s%N)
  grep -q "\"processed\":$N" run.log || { echo "not all processed: $(grep stopped run.log)" >&2; return 1; }
  echo $(( N * 1000000000 / (t1 - t0) ))
}

bench() {
  local store=$1 k i
  declare -A res
  for k in 0 $KEYS; do "${store}_fill" "$k" || return 1; done
  for i in $(seq 1 "$RUNS"); do
    for k in 0 $KEYS; do res[$k]="${res[$k]:-} $(run "$store" "$k")" || return 1; done
  done
  local base
  base=$(printf '%s\n' ${res[0]} | median)
  echo "$store keyless: $base events/s (N=$N, batch $BATCH; runs:${res[0]})"
  for k in $KEYS; do
    local m
    m=$(printf '%s\n' ${res[$k]} | median)
    echo "$store $k keys: $m events/s, $(( m * 100 / (base > 0 ? base : 1) ))% of keyless (runs:${res[$k]})"
  done
}

bench sqlite
if [ -n "${OUTBOX_TEST_PG:-}" ]; then
  admin="${OUTBOX_TEST_PG%/*}/postgres"
  PGOPTIONS='-c client_min_messages=warning' psql -qX "$admin" -c "DROP DATABASE IF EXISTS bench_keys_$$" \
    -c "CREATE DATABASE bench_keys_$$" > /dev/null
  trap 'psql -qX "$admin" -c "DROP DATABASE IF EXISTS bench_keys_$$ WITH (FORCE)" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
  "$OUTBOXD" init --db "$pg_db" 2> /dev/null
  bench pg
else
  echo "   pg: OUTBOX_TEST_PG not set (run through tests/with-pg.sh)"
fi
