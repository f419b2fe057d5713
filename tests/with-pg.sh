#!/bin/bash
# Runs a command with OUTBOX_TEST_PG (and OUTBOX_TEST_PGDATA) set. When the caller
# already set OUTBOX_TEST_PG it is used as is; otherwise a throwaway server is
# started with tests/pg.sh and stopped afterwards. Without PostgreSQL binaries the
# command runs without the variable (the PostgreSQL tests then report themselves skipped).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${OUTBOX_TEST_PG:-}" ]; then
  dir=$(mktemp -d /tmp/outboxd-pg.XXXXXX)
  if url=$(bash "$here/pg.sh" start "$dir"); then
    trap 'bash "$here/pg.sh" stop "$dir"' EXIT
    export OUTBOX_TEST_PG=$url OUTBOX_TEST_PGDATA=$dir
  else
    rc=$?
    rm -rf "$dir"
    [ $rc -eq 3 ] || { echo "with-pg: could not start PostgreSQL" >&2; exit 1; }
  fi
fi
"$@"
