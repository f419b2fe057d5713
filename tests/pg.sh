#!/bin/bash
# A throwaway PostgreSQL server for the tests and benchmarks (Debian `postgresql`).
#   tests/pg.sh start DIR    initdb in DIR, start on 127.0.0.1 on a free port, create the
#                            database `outbox`; prints the URL (postgres://postgres@127.0.0.1:PORT/outbox)
#   tests/pg.sh stop DIR     stop the server and remove DIR
#   tests/pg.sh restart DIR  pg_ctl restart (for recovery tests)
# Runs the server as the `postgres` user when started as root. Durability is traded
# for speed (fsync off): the cluster is thrown away anyway.
set -euo pipefail
BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: tests/pg.sh start|stop|restart DIR" >&2; exit 2; }
[ -x "$BIN/pg_ctl" ] || { echo "tests/pg.sh: no PostgreSQL binaries (apt-get install postgresql)" >&2; exit 3; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

start() {
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  local port tries=0
  while :; do
    port=$(free_port)
    if as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
         -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
         >/dev/null 2>&1; then break; fi
    tries=$((tries + 1))
    [ $tries -lt 5 ] || { tail -20 "$dir/server.log" >&2; exit 1; }
  done
  echo "$port" > "$dir/port"
  "$BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE outbox" >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/outbox"
}

stop() {
  [ -d "$dir/data" ] && as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

restart() {
  as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 30 restart >/dev/null
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  *) echo "usage: tests/pg.sh start|stop|restart DIR" >&2; exit 2 ;;
esac
