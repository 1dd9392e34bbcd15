#!/usr/bin/env bash
# `submit` throughput of the daemon for each durability mode, same run:
# 100 000 echo tasks of 64 bytes each, submitted without --wait to a 2-worker
# daemon; each mode's time is the best of $ROUNDS runs.
#
#   cargo build --release -p cortex-pool && scripts/bench_submit.sh [BIN] [ROUNDS]
set -euo pipefail
BIN=${1:-target/release/cortex-pool}
ROUNDS=${2:-3}
N=100000
WORK=$(mktemp -d)
trap 'for m in memory relaxed fsync; do CORTEX_POOL_RUNTIME_DIR=$WORK/$m "$BIN" daemon stop >/dev/null 2>&1 || true; done; rm -rf "$WORK"' EXIT
# shellcheck source=scripts/run-bench-lib.sh
. "$(dirname "$0")/run-bench-lib.sh"
echo_lines "$WORK/tasks.jsonl" "$N"
printf '%-8s %10s %12s\n' mode seconds tasks/s
for mode in memory relaxed fsync; do
  best=""
  for round in $(seq "$ROUNDS"); do
    dir=$WORK/$mode
    rm -rf "$dir"
    export CORTEX_POOL_RUNTIME_DIR=$dir CORTEX_POOL_DURABILITY=$mode CORTEX_POOL_POOL_SIZE=2 CORTEX_POOL_MIN_WORKERS=1
    "$BIN" daemon start >/dev/null
    start=$(date +%s.%N)
    "$BIN" submit "$WORK/tasks.jsonl" >/dev/null 2>&1
    end=$(date +%s.%N)
    "$BIN" daemon stop --timeout-s 60 >/dev/null
    t=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%-8s %10.3f %12.0f\n' "$mode" "$best" "$(echo "$N / $best" | bc -l)"
done
