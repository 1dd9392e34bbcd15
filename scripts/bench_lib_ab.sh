#!/usr/bin/env bash
# Two builds of the library benches side by side, rep by rep and in alternating
# order: `pool-bench big` (and, for the new build, `BIG_TASK=echo_bytes` and
# `echo_raw`) with `raw-big`, `lat` pinned to CPU 0 with `raw-lat`, then `tput`.
# Each build runs its own `bench-worker`. Prints "REP BUILD MODE VALUE" lines
# (GB/s, µs p50, tasks/s).
#
#   scripts/bench_lib_ab.sh OLD_DIR NEW_DIR [REPS]     # the target/release folders
set -euo pipefail
OLD=$1
NEW=$2
REPS=${3:-4}
value() { sed -n "s/.*\"metric\":\"$1\",\"value\":\([0-9.]*\).*/\1/p"; }
ordered() { if [ $(($1 % 2)) = 1 ]; then echo "$OLD $NEW"; else echo "$NEW $OLD"; fi; }
for rep in $(seq "$REPS"); do
  for d in $(ordered "$rep"); do
    echo "$rep $d big $(WORKER_CMD=$d/bench-worker "$d/pool-bench" big 2>/dev/null | value bw)"
  done
  for task in echo_bytes echo_raw; do
    echo "$rep $NEW big.$task $(BIG_TASK=$task WORKER_CMD=$NEW/bench-worker "$NEW/pool-bench" big 2>/dev/null | value bw)"
  done
  echo "$rep raw raw-big $("$NEW/pool-bench" raw-big 2>/dev/null | value bw)"
done
for rep in $(seq $((REPS * 2))); do
  for d in $(ordered "$rep"); do
    echo "$rep $d lat.same $(WORKER_CMD=$d/bench-worker taskset -c 0 "$d/pool-bench" lat 2>/dev/null | value p50)"
  done
  echo "$rep raw raw-lat.same $(taskset -c 0 "$NEW/pool-bench" raw-lat 2>/dev/null | value p50)"
done
for rep in $(seq $((REPS + REPS / 2))); do
  for d in $(ordered "$rep"); do
    echo "$rep $d tput $(WORKER_CMD=$d/bench-worker "$d/pool-bench" tput 2>/dev/null | value rate)"
  done
done
