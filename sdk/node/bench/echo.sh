#!/usr/bin/env bash
# The SDK workers side by side, same run: 64 B echo through `cortex-pool run`.
#
#   sdk/node/bench/echo.sh [CORTEX_POOL_BINARY] [TASKS] [REPS]
#
# For each worker (Rust SDK = the binary's own demo worker, Python SDK, Node SDK),
# interleaved rep by rep:
#   tput  TASKS echo tasks of 64 B at once, `run -w 2` (each worker runs one task at
#         a time, the default): tasks/s.
#   rtt   TASKS echo tasks, `run -w 1`: one worker, one task at a time, so the time
#         per task is one sequential round trip through the pool (µs/task).
# Start-up and shutdown are taken out: each figure uses the wall time of the run minus
# the wall time of the same run on an empty input.
# Needs python3 with msgpack, and `npm ci` done in sdk/node.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${1:-target/release/cortex-pool}
TASKS=${2:-20000}
REPS=${3:-3}
RTT_TASKS=$TASKS
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p cortex-pool" >&2; exit 2; }
command -v node >/dev/null || { echo "node is missing (Node.js 18+)" >&2; exit 2; }
[ -d sdk/node/node_modules/@msgpack/msgpack ] || { echo "run npm ci in sdk/node first" >&2; exit 2; }
python3 -c 'import msgpack' || { echo "python3 with msgpack is needed" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
payload=$(printf 'x%.0s' $(seq 1 57)) # {"msg": <57 chars>} is 64 bytes of MessagePack
for ((i = 0; i < TASKS; i++)); do
  printf '{"type":"echo","payload":{"msg":"%s"}}\n' "$payload"
done > "$tmp/tput.jsonl"
head -n "$RTT_TASKS" "$tmp/tput.jsonl" > "$tmp/rtt.jsonl"
: > "$tmp/empty.jsonl"

declare -A WORKER=(
  [rust]=""
  [python]="python3 sdk/python/example_worker.py"
  [node]="node sdk/node/examples/example-worker.mjs"
)

# Prints the wall-clock seconds of one run (it must succeed).
run() { # workers tasks-file worker-command...
  local w=$1 file=$2
  shift 2
  local extra=()
  [ $# -gt 0 ] && extra=(-- "$@")
  local start end
  start=$(date +%s.%N)
  "$BIN" run -w "$w" --transport stdio "$file" "${extra[@]}" >/dev/null 2>"$tmp/err" ||
    { echo "a run failed: $(tail -n 3 "$tmp/err")" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

for ((rep = 1; rep <= REPS; rep++)); do
  for sdk in rust python node; do
    # shellcheck disable=SC2086 # the worker command is split on purpose
    e2=$(run 2 "$tmp/empty.jsonl" ${WORKER[$sdk]})
    # shellcheck disable=SC2086
    t=$(run 2 "$tmp/tput.jsonl" ${WORKER[$sdk]})
    # shellcheck disable=SC2086
    e1=$(run 1 "$tmp/empty.jsonl" ${WORKER[$sdk]})
    # shellcheck disable=SC2086
    r=$(run 1 "$tmp/rtt.jsonl" ${WORKER[$sdk]})
    awk -v s="$sdk" -v rep="$rep" -v n="$TASKS" -v t="$t" -v e2="$e2" \
      -v m="$RTT_TASKS" -v r="$r" -v e1="$e1" \
      'BEGIN { printf "rep %d %-6s tput %8.0f tasks/s   rtt %7.1f us/task\n", rep, s, n / (t - e2), (r - e1) * 1e6 / m }'
  done
done
