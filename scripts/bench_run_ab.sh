#!/usr/bin/env bash
# Two builds of `cortex-pool run -w 2` side by side, rep by rep, next to Python's
# multiprocessing.Pool(2) in the same rep: 100 000 64-byte echo lines with the
# built-in worker, then 20 000 with the Python SDK's example worker (each build
# with its own SDK: OLD_SDK and NEW_SDK, the sdk/python directories; both default
# to this checkout's). Each `run` is timed from start to exit (worker start-up
# included) and fails unless every line is ok; multiprocessing.Pool is timed by
# benches/peers/python/bench.py after its warm-up.
#
#   scripts/bench_run_ab.sh OLD_BIN NEW_BIN [REPS]
#   OLD_SDK=/tmp/old/sdk/python scripts/bench_run_ab.sh /tmp/old/cortex-pool target/release/cortex-pool 3
set -euo pipefail
OLD=$1
NEW=$2
REPS=${3:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
OLD_SDK=${OLD_SDK:-$HERE/sdk/python}
NEW_SDK=${NEW_SDK:-$HERE/sdk/python}
# shellcheck source=scripts/run-bench-lib.sh
. "$HERE/scripts/run-bench-lib.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo_workload "$WORK"
for rep in $(seq "$REPS"); do
  old=$(run_rate 100000 "$OLD" run -w 2 "$WORK/echo100k.jsonl")
  new=$(run_rate 100000 "$NEW" run -w 2 "$WORK/echo100k.jsonl")
  old_py=$(run_rate 20000 "$OLD" run -w 2 "$WORK/echo20k.jsonl" -- python3 "$OLD_SDK/example_worker.py")
  new_py=$(run_rate 20000 "$NEW" run -w 2 "$WORK/echo20k.jsonl" -- python3 "$NEW_SDK/example_worker.py")
  print_rows "$rep" "run, old=$old" "run, new=$new" "Python SDK 20k, old=$old_py" \
    "Python SDK 20k, new=$new_py" "multiprocessing.Pool(2)=$(mp_rate)"
done
