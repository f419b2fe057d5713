#!/bin/bash
# Three outboxd hosts on one PostgreSQL outbox. Uses $DB, or starts a throwaway
# server with tests/pg.sh (Debian `postgresql` package) and stops it at the end.
#   examples/postgres-multi/run.sh            # from the repository root, after `make`
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${DB:-}" ]; then
  pgdir=$(mktemp -d /tmp/outboxd-example-pg.XXXXXX)
  DB=$(bash tests/pg.sh start "$pgdir")
  trap 'bash tests/pg.sh stop "$pgdir"' EXIT
  echo "throwaway PostgreSQL at $DB"
fi
./outboxd init --db "$DB"
psql -qX "$DB" -c "INSERT INTO outbox (topic, key, payload)
                   SELECT 'order.created', 'order-' || (g % 20), json_build_object('n', g)::text
                   FROM generate_series(1, 300) g"
pids=""
for h in a b c; do
  HOST_NAME=$h ./outboxd run examples/postgres-multi/handler.lua --db "$DB" --batch 5 --log text \
    2> "/tmp/outboxd-example-$h.log" &
  pids="$pids $!"
done
# Until nothing is pending or processing, then a graceful stop (SIGTERM drains).
until [ "$(psql -qAtX "$DB" -c "SELECT count(*) FROM outbox WHERE status IN ('pending','processing')")" = 0 ]; do
  sleep 0.2
done
kill -TERM $pids
wait $pids
for h in a b c; do echo "host $h handled $(grep -c 'handled' "/tmp/outboxd-example-$h.log") events"; done
./outboxd status --db "$DB"
