#!/usr/bin/env bash
# `cortex-pool run -w 2` throughput with the default prefetch window and with
# `--prefetch 0`, next to Python's multiprocessing.Pool(2) doing the same echo, in
# the same run: $REPS interleaved reps over 100 000 64-byte echo lines (the built-in
# Rust worker), then the Python SDK's example worker under `run -w 2` on 20 000
# lines. Each `run` is timed from start to exit (worker start-up included);
# multiprocessing.Pool is timed by benches/peers/python/bench.py after its warm-up.
#
#   cargo build --release -p cortex-pool && scripts/bench_run_prefetch.sh [BIN] [REPS]
set -euo pipefail
BIN=${1:-target/release/cortex-pool}
REPS=${2:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/run-bench-lib.sh
. "$HERE/scripts/run-bench-lib.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo_workload "$WORK"
for rep in $(seq "$REPS"); do
  def=$(run_rate 100000 "$BIN" run "$WORK/echo100k.jsonl" -w 2)
  zero=$(run_rate 100000 "$BIN" run "$WORK/echo100k.jsonl" -w 2 --prefetch 0)
  py=$(run_rate 20000 "$BIN" run "$WORK/echo20k.jsonl" -w 2 -- python3 "$HERE/sdk/python/example_worker.py")
  print_rows "$rep" "run -w 2 (default)=$def" "run -w 2 --prefetch 0=$zero" \
    "run -w 2 Python SDK, 20k (default)=$py" "multiprocessing.Pool(2)=$(mp_rate)"
done
