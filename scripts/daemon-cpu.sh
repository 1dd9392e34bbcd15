#!/usr/bin/env bash
# The daemon's own CPU time (user + system, all threads, from /proc/PID/stat) for
# one `submit --wait` of N 64 B echo tasks to a fresh WORKERS-worker daemon, and the
# throughput `submit` reports. CPU time barely moves with the machine's load, so it
# compares two builds where wall-clock rates cannot.
#
#   cargo build --release -p cortex-pool && scripts/daemon-cpu.sh
#   BIN=/tmp/old/cortex-pool N=30000 WORKERS=2 scripts/daemon-cpu.sh
#   BACKLOG=1 scripts/daemon-cpu.sh
#
# With BACKLOG=1 the tasks are submitted without --wait (all of them queue up in
# the store first) and the time runs until the pool has completed them all.
#
# The line ends with the CPU a task of the `submit` client (user + system, from
# bash's `time`) and of the whole machine (busy time from /proc/stat, every
# process and the kernel), so the daemon's share can be read beside them.
#
# With THREADS=1 a second line gives the daemon's CPU by thread name (ms, from
# /proc/PID/task/*/stat): whether the store's one thread (`task-store`) bounds
# the rate.
set -euo pipefail

N=${N:-30000}
# shellcheck source=scripts/fresh-daemon.sh
source "$(dirname "$0")/fresh-daemon.sh"

"$BIN" daemon start >/dev/null
pid=$(cat "$CORTEX_POOL_RUNTIME_DIR/daemon.pid")
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
# Each thread name with its CPU ticks, summed over the threads of that name.
threads() {
    for t in "/proc/$pid/task/"*; do
        printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{ print $14 + $15 }' "$t/stat")"
    done | awk '{ a[$1] += $2 } END { for (k in a) print k, a[k] }' | sort
}
completed() { "$BIN" metrics --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["tasks"]["completed"])'; }
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
TIMEFORMAT='%U %S'
t0=$(ticks)
b0=$(busy)
threads > "$dir/threads-before"
if [[ ${BACKLOG:-0} == 1 ]]; then
    start=$(date +%s%N)
    { time "$BIN" submit "$dir/tasks.jsonl" >/dev/null; } 2>"$dir/client-time"
    while (($(completed) < N)); do sleep 0.2; done
    rate="$((N * 1000000000 / ($(date +%s%N) - start))) tasks/s (backlog)"
else
    { time "$BIN" submit --wait "$dir/tasks.jsonl" 2>"$dir/submit-err" >/dev/null; } 2>"$dir/client-time"
    rate=$(grep -o '[0-9]* tasks/s' "$dir/submit-err")
fi
t1=$(ticks)
b1=$(busy)
threads > "$dir/threads-after"
hz=$(getconf CLK_TCK)
read -r cu cs < "$dir/client-time"
awk -v t=$((t1 - t0)) -v b=$((b1 - b0)) -v hz="$hz" -v n="$N" -v rate="$rate" -v c="$cu $cs" 'BEGIN {
    split(c, cc, " ")
    printf "daemon CPU: %.2f s for %d tasks (%.1f us a task); submit --wait: %s; client %.1f us, machine %.1f us a task\n",
        t / hz, n, t / hz / n * 1e6, rate, (cc[1] + cc[2]) / n * 1e6, b / hz / n * 1e6 }'
if [[ ${THREADS:-0} == 1 ]]; then
    join "$dir/threads-before" "$dir/threads-after" |
        awk -v hz="$hz" '{ d = $3 - $2; if (d > 0) printf "%s %d ms  ", $1, d * 1000 / hz } END { print "" }'
fi
