#!/bin/bash
# tests/stress.sh [MAKE ARGS]: runs `make check` while one busy loop per core
# (nproc) spins beside it, to prove the suite holds on a loaded machine. The loops
# are stopped however the run ends; the exit status is make check's.
cd "$(dirname "$0")/.." || exit 1
n=$(nproc)
loops=()
stop_loops() {
  [ ${#loops[@]} -gt 0 ] || return 0
  kill "${loops[@]}" 2> /dev/null
  wait "${loops[@]}" 2> /dev/null
  loops=()
}
trap stop_loops EXIT
trap 'stop_loops; exit 130' INT TERM
for _ in $(seq 1 "$n"); do
  ( while :; do :; done ) &
  loops+=($!)
done
echo "stress: make check beside $n busy loops" >&2
start=$SECONDS
make check "$@"
rc=$?
stop_loops
echo "stress: make check exited $rc after $((SECONDS - start)) s beside $n busy loops" >&2
exit $rc
