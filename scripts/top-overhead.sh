#!/usr/bin/env bash
# What `cortex-pool top` refreshing 10 times a second costs the daemon: 64 B echo
# tasks through `submit --wait`, with and without `top --interval-ms 100` running
# (in a detached tmux session, so it has a terminal), interleaved in one run.
#
#   cargo build --release -p cortex-pool && scripts/top-overhead.sh
#   BIN=target/release/cortex-pool N=100000 REPS=5 WORKERS=2 scripts/top-overhead.sh
#
# Prints one line per run and, at the end, the median throughput of each side and
# their ratio; then the CPU time the idle daemon and `top` itself spend over
# SECS seconds with `top` refreshing (from /proc/PID/stat, so the machine's load
# does not blur it).
#
#   MODE=windows WINDOWS=60 WINDOW_S=2 scripts/top-overhead.sh
#   MODE=windows CORTEX_POOL_DURABILITY=memory scripts/top-overhead.sh
#   MODE=windows WINDOWS=301 WINDOW_S=3 RATE=9000 scripts/top-overhead.sh
#
# measures finer: one long `submit --wait` runs while `top` is paused (SIGSTOP) and
# resumed (SIGCONT) every WINDOW_S seconds; the daemon's completed-task counter at
# each switch gives the throughput of each window. Neighbouring windows share the
# machine's load, so the ratio of each on-window to the mean of the off-windows
# around it cancels drift; prints the mean and median of those ratios and the
# standard error of the mean, and the ratio of the totals with its jackknife
# standard error.
set -euo pipefail

BIN=$(realpath "${BIN:-target/release/cortex-pool}")
N=${N:-100000}
REPS=${REPS:-5}
WORKERS=${WORKERS:-2}
SECS=${SECS:-10}
command -v tmux >/dev/null || { echo "tmux is needed: sudo apt-get install -y tmux" >&2; exit 2; }

dir=$(mktemp -d)
export CORTEX_POOL_RUNTIME_DIR="$dir/run"
export CORTEX_POOL_POOL_SIZE="$WORKERS" CORTEX_POOL_MIN_WORKERS=1
# A fresh tmux server for each start of `top`: starting a session on a server that
# is still shutting down from the last kill fails ("server exited unexpectedly").
starts=0
tmux_socket="cortex-top-overhead-$$-0"
cleanup() {
    for i in $(seq 0 "$starts"); do
        tmux -L "cortex-top-overhead-$$-$i" kill-server 2>/dev/null || true
    done
    "$BIN" daemon stop --timeout-s 20 >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

"$(dirname "$0")/echo-tasks.sh" "$N" > "$dir/tasks.jsonl"

"$BIN" daemon start >/dev/null

# Tasks per second of one `submit --wait` of every line.
one_run() {
    local t0 t1
    t0=$(date +%s%N)
    "$BIN" submit --wait "$dir/tasks.jsonl" >/dev/null
    t1=$(date +%s%N)
    echo $((N * 1000000000 / (t1 - t0)))
}

top_on() {
    starts=$((starts + 1))
    tmux_socket="cortex-top-overhead-$$-$starts"
    tmux -L "$tmux_socket" new-session -d -s top -x 80 -y 24 \
        "exec env CORTEX_POOL_RUNTIME_DIR='$CORTEX_POOL_RUNTIME_DIR' '$BIN' top --interval-ms 100"
    for _ in $(seq 100); do
        tmux -L "$tmux_socket" capture-pane -p -t top 2>/dev/null | grep -q "q quit" && return
        sleep 0.1
    done
    echo "top did not start" >&2
    exit 1
}

top_off() { tmux -L "$tmux_socket" kill-server 2>/dev/null || true; }

# The daemon's lifetime count of completed tasks.
completed() { "$BIN" metrics --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["tasks"]["completed"])'; }

# Throughput in windows with `top` paused and running, alternating.
windows() {
    local count=${WINDOWS:-60} width=${WINDOW_S:-2}
    # Enough tasks to outlast every window at well above today's rate (RATE
    # tasks a second: 20 000 by default, for durability = "memory"; about 9 000
    # is enough with the default store), and room for all of them in the queue.
    local lines=$((count * width * ${RATE:-20000}))
    export CORTEX_POOL_MAX_QUEUE_LEN=$((lines + 1000))
    "$BIN" daemon restart >/dev/null
    "$(dirname "$0")/echo-tasks.sh" "$lines" > "$dir/long.jsonl"
    top_on
    local top_pid
    top_pid=$(tmux -L "$tmux_socket" display-message -p -t top '#{pane_pid}')
    kill -STOP "$top_pid"
    "$BIN" submit --wait "$dir/long.jsonl" >/dev/null &
    local submit=$!
    sleep $((2 * width)) # the submission gets going
    local rates=() states=() c0 c1 t0 t1 i
    c0=$(completed); t0=$(date +%s%N)
    for i in $(seq "$count"); do
        if ((i % 2)); then kill -CONT "$top_pid"; states+=(on); else kill -STOP "$top_pid"; states+=(off); fi
        sleep "$width"
        c1=$(completed); t1=$(date +%s%N)
        rates+=($(((c1 - c0) * 1000000000 / (t1 - t0))))
        echo "window $i top ${states[-1]}: ${rates[-1]} tasks/s"
        c0=$c1; t0=$t1
    done
    kill -CONT "$top_pid"
    kill "$submit" 2>/dev/null || true
    wait "$submit" 2>/dev/null || true
    top_off
    printf '%s\n' "${rates[@]}" | awk -v n="$count" '
        { r[NR] = $1 }
        END {
            # Each on-window (odd) against the mean of the off-windows beside it.
            # Windows with nothing done before the first task completed are
            # skipped, and the first pair after them (the submission is still
            # ramping up); a window with nothing done after that ends the
            # series (the submission ended).
            for (first = 1; first <= n && r[first] <= 0; first++) {}
            first += 2
            for (i = first; i <= n; i++) if (r[i] <= 0) { n = i - 1; break }
            if (n % 2 == 0) n--
            if (first % 2 == 0) first++
            for (i = first; i <= n; i += 2) {
                if (i == n) off = r[i - 1]; else off = (r[i - 1] + r[i + 1]) / 2
                if (off <= 0) continue
                k++; q[k] = r[i] / off; sum += q[k]; sumsq += q[k] * q[k]
                on_w[k] = r[i]; off_w[k] = off; son += r[i]; soff += off
            }
            mean = sum / k; sd = sqrt((sumsq - k * mean * mean) / (k - 1))
            # The ratio of the totals, and its jackknife standard error (each
            # pair left out in turn): one slow window moves it less than the mean.
            tot = son / soff
            for (a = 1; a <= k; a++) { jk[a] = (son - on_w[a]) / (soff - off_w[a]); jm += jk[a] / k }
            for (a = 1; a <= k; a++) jv += (jk[a] - jm) ^ 2
            jse = sqrt(jv * (k - 1) / k)
            for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (q[b] < q[a]) { t = q[a]; q[a] = q[b]; q[b] = t }
            med = (k % 2) ? q[(k + 1) / 2] : (q[k / 2] + q[k / 2 + 1]) / 2
            printf "on/off ratio over %d window pairs: mean %.4f (%+.2f %%), standard error %.4f, median %.4f\n",
                k, mean, (mean - 1) * 100, sd / sqrt(k), med
            printf "ratio of totals (on / off beside them): %.4f (%+.2f %%), jackknife standard error %.4f\n",
                tot, (tot - 1) * 100, jse
        }'
}

if [[ ${MODE:-runs} == windows ]]; then
    windows
    exit 0
fi

one_run >/dev/null # warm-up
without=() with=() ratios=()
for rep in $(seq "$REPS"); do
    # Alternate which side goes first, so a drift in the machine's load hits both.
    if ((rep % 2)); then order="without with"; else order="with without"; fi
    for side in $order; do
        if [[ $side == with ]]; then top_on; fi
        rate=$(one_run)
        top_off
        echo "rep $rep $side top: $rate tasks/s"
        if [[ $side == with ]]; then with+=("$rate"); else without+=("$rate"); fi
    done
    ratios+=("$(awk -v a="${without[-1]}" -v b="${with[-1]}" 'BEGIN { printf "%.4f", b / a }')")
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m_without=$(median "${without[@]}")
m_with=$(median "${with[@]}")
echo "median without top: $m_without tasks/s; with top at 10 refreshes/s: $m_with tasks/s"
awk -v a="$m_without" -v b="$m_with" 'BEGIN { printf "ratio of the medians with/without: %.3f (%+.1f %%)\n", b / a, (b / a - 1) * 100 }'
# Each rep's pair ran back to back, so its ratio cancels the load drift between reps.
sorted_ratios=$(printf '%s\n' "${ratios[@]}" | sort -n | tr '\n' ' ')
echo "per-rep ratios with/without, sorted: $sorted_ratios"
echo "median per-rep ratio: $(median "${ratios[@]}")"

# CPU time (user + system, all threads) of a process, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
daemon_pid=$(cat "$CORTEX_POOL_RUNTIME_DIR/daemon.pid")
d0=$(ticks "$daemon_pid"); sleep "$SECS"; d1=$(ticks "$daemon_pid")
top_on
top_pid=$(tmux -L "$tmux_socket" display-message -p -t top '#{pane_pid}')
d2=$(ticks "$daemon_pid"); t2=$(ticks "$top_pid"); sleep "$SECS"
d3=$(ticks "$daemon_pid"); t3=$(ticks "$top_pid")
top_off
awk -v idle=$((d1 - d0)) -v with=$((d3 - d2)) -v top=$((t3 - t2)) -v hz="$hz" -v s="$SECS" 'BEGIN {
    printf "idle daemon CPU: %.1f ms/s without top, %.1f ms/s with top at 10 refreshes/s; top itself: %.1f ms/s\n",
        idle * 1000 / hz / s, with * 1000 / hz / s, top * 1000 / hz / s }'

