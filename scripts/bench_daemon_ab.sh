#!/usr/bin/env bash
# Two builds' daemons side by side, rep by rep, next to Python's
# multiprocessing.Pool(2) in the same rep: `submit --wait` of N 64-byte echo
# tasks (scripts/echo-tasks.sh) to a fresh 2-worker daemon with the default
# settings (durability = "fsync"), the rate `submit` reports; then
# multiprocessing.Pool(2) timed by benches/peers/python/bench.py.
#
#   scripts/bench_daemon_ab.sh OLD_BIN NEW_BIN [REPS]
#   N=30000 CORTEX_POOL_DURABILITY=relaxed scripts/bench_daemon_ab.sh /tmp/old/cortex-pool target/release/cortex-pool 3
set -euo pipefail
OLD=$1
NEW=$2
REPS=${3:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/run-bench-lib.sh
. "$HERE/scripts/run-bench-lib.sh"
rate() {
  BIN=$1 N=${N:-30000} "$HERE/scripts/daemon-cpu.sh" | sed -n 's/.*submit --wait: \([0-9]*\) tasks\/s.*/\1/p'
}
printf '%-4s %-34s %12s %8s\n' rep what task/s vs_mp
for rep in $(seq "$REPS"); do
  old=$(rate "$OLD")
  new=$(rate "$NEW")
  print_rows "$rep" "submit --wait, old=$old" "submit --wait, new=$new" "multiprocessing.Pool(2)=$(mp_rate)"
done
