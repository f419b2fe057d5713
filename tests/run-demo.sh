#!/bin/sh
# `make run`: the main job on the embedded default. Creates outbox.db with a few
# demo events when it has none pending, then runs handlers/demo.lua on it until
# Ctrl-C (or, with ONCE=1, until nothing is left).
set -e
DB=${DB:-outbox.db}
./outboxd init --db "$DB" >/dev/null 2>&1 || ./outboxd init --db "$DB"
pending=$(./outboxd status --db "$DB" --json | sed -E 's/^\{"pending": ([0-9]+).*/\1/')
if [ "$pending" = 0 ]; then
  ./outboxd enqueue --db "$DB" <<'NDJSON'
{"topic": "order.created", "key": "order-1", "payload": {"order": 1, "total": 42.5}}
{"topic": "order.paid", "key": "order-1", "payload": {"order": 1}}
{"topic": "user.signed_up", "payload": {"email": "ada@example.com"}}
{"topic": "order.created", "key": "order-2", "payload": {"order": 2, "total": 7}}
{"topic": "poison", "payload": "not what anyone expects"}
NDJSON
fi
echo "outboxd: running handlers/demo.lua on $DB (Ctrl-C stops; in another terminal: ./outboxd enqueue --db $DB --topic hello --payload '{\"hi\":1}')" >&2
exec ./outboxd run handlers/demo.lua --db "$DB" --log text ${ONCE:+--once}
