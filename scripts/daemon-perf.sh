#!/usr/bin/env bash
# `perf record` of a fresh 2-worker daemon during one `submit --wait` of N
# 64 B echo tasks (scripts/echo-tasks.sh), with call graphs, into OUTF. Then,
# for the store's thread by symbol:
#
#   perf report -i "$OUTF" --no-children --comm task-store --sort sym \
#       --stdio -g none --percentage relative
#
#   cargo build --release -p cortex-pool && scripts/daemon-perf.sh
#   N=30000 OUTF=/tmp/memory.data CORTEX_POOL_DURABILITY=memory scripts/daemon-perf.sh
set -euo pipefail

N=${N:-100000}
OUTF=${OUTF:-target/daemon-perf.data}
MIN_WORKERS=2
export CORTEX_POOL_MAX_QUEUE_LEN=10000000
recorder=
on_exit() {
    if [[ -n $recorder ]]; then
        kill -INT "$recorder" 2>/dev/null || true
    fi
}
# shellcheck source=scripts/fresh-daemon.sh
source "$(dirname "$0")/fresh-daemon.sh"

"$BIN" daemon start >/dev/null
pid=$(cat "$CORTEX_POOL_RUNTIME_DIR/daemon.pid")
perf record -F 2999 -g -p "$pid" -o "$OUTF" 2>/dev/null &
recorder=$!
sleep 0.5
"$BIN" submit --wait "$dir/tasks.jsonl" 2>&1 >/dev/null | tail -1
kill -INT "$recorder"
wait "$recorder" || true
recorder=
echo "perf data: $OUTF"
