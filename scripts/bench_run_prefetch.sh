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
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# {"type":"echo","payload":"…"} padded to 64 bytes per line (newline included).
lines() {
  python3 - "$1" "$2" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        head = '{"type":"echo","payload":"'
        tail = '"}'
        f.write(head + str(i).rjust(63 - len(head) - len(tail), "x") + tail + "\n")
PY
}
lines "$WORK/echo100k.jsonl" 100000
lines "$WORK/echo20k.jsonl" 20000

# Tasks per second of `run ARGS FILE` (N lines); fails unless every line is ok.
rate() {
  local n=$1 file=$2
  shift 2
  local start end ok
  start=$(date +%s.%N)
  ok=$("$BIN" run "$file" "$@" 2>/dev/null | grep -c '"status":"ok"')
  end=$(date +%s.%N)
  [ "$ok" = "$n" ] || { echo "only $ok of $n tasks ok: $*" >&2; exit 1; }
  echo "$n / ($end - $start)" | bc -l
}

mp() {
  python3 "$HERE/benches/peers/python/bench.py" mp tput |
    sed -n 's/.*"value": *\([0-9.]*\).*/\1/p'
}

printf '%-4s %-34s %12s %8s\n' rep what task/s vs_mp
for rep in $(seq "$REPS"); do
  def=$(rate 100000 "$WORK/echo100k.jsonl" -w 2)
  zero=$(rate 100000 "$WORK/echo100k.jsonl" -w 2 --prefetch 0)
  py=$(rate 20000 "$WORK/echo20k.jsonl" -w 2 -- python3 "$HERE/sdk/python/example_worker.py")
  pool=$(mp)
  for row in "run -w 2 (default)=$def" "run -w 2 --prefetch 0=$zero" \
    "run -w 2 Python SDK, 20k (default)=$py" "multiprocessing.Pool(2)=$pool"; do
    what=${row%=*}
    value=${row##*=}
    printf '%-4s %-34s %12.0f %8.2f\n' "$rep" "$what" "$value" "$(echo "$value / $pool" | bc -l)"
  done
done
