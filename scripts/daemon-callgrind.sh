#!/usr/bin/env bash
# Instructions a task on the daemon's store thread, counted by callgrind
# (repeatable where wall-clock rates are not): a foreground daemon under
# `valgrind --tool=callgrind --separate-threads=yes`, one `submit --wait` of N
# 64 B echo tasks (scripts/echo-tasks.sh), then the store thread's inclusive
# counts per task for its operations. The checkpoints' row writes are left
# out of `commit`: under callgrind the daemon runs ~2 000 tasks/s, slow enough
# to go idle and write rows mid-run, which a full-speed run of this size
# leaves for later.
#
#   cargo build --release -p cortex-pool && scripts/daemon-callgrind.sh
#   BIN=/tmp/old/cortex-pool N=30000 OUT=/tmp/cg-old scripts/daemon-callgrind.sh
set -euo pipefail

N=${N:-30000}
OUT=${OUT:-target/callgrind/daemon}
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
STOP_TIMEOUT_S=120
# shellcheck source=scripts/fresh-daemon.sh
source "$(dirname "$0")/fresh-daemon.sh"
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.out" \
    "$BIN" daemon run 2>"$OUT/daemon.err" &
for _ in $(seq 300); do
    [[ -S $CORTEX_POOL_RUNTIME_DIR/daemon.sock ]] && break
    sleep 0.2
done
"$BIN" submit --wait "$dir/tasks.jsonl" 2>&1 >/dev/null | tail -1
"$BIN" daemon stop --timeout-s 120 >/dev/null
wait

# The store thread's file is the one whose counts include the writer's loop.
for f in "$OUT"/cg.out-*; do
    counts=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null)
    grep -q 'writer::commit \[' <<<"$counts" || continue
    per_task() { grep -E "$1" <<<"$counts" | head -1 | awk -v n="$N" '{ gsub(",", "", $1); printf "%d", $1 / n }'; }
    commit=$(per_task 'writer::commit \[')
    checkpoint=$(per_task 'writer::checkpoint \[')
    echo "store thread ($f), instructions a task:"
    echo "  commit without the checkpoints: $((commit - checkpoint))"
    for op in accept settle claim; do
        echo "  $op: $(per_task "Overlay>::$op\$")"
    done
done
