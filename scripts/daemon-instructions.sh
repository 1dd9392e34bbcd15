#!/usr/bin/env bash
# Instructions a task of the whole daemon, counted by callgrind (repeatable
# where wall-clock rates are not): scripts/daemon-callgrind.sh run with N and
# with 2N tasks, each thread's total of the second run less the first's, over
# N, so the daemon's start and stop cancel out. Printed for the whole daemon,
# the store's thread (`task-store`, absent with durability "memory") and the
# rest (the runtime's threads: socket requests, the feeder, the pool).
#
#   cargo build --release -p cortex-pool && scripts/daemon-instructions.sh
#   CORTEX_POOL_DURABILITY=memory N=10000 scripts/daemon-instructions.sh
#   BIN=/tmp/old/cortex-pool scripts/daemon-instructions.sh
#
# Under callgrind the threads run one at a time and the daemon at ~2 000
# tasks/s: the store goes idle and writes rows mid-run, which a full-speed
# run of this size leaves for later, and the pool's dispatch splits between
# its actor and its lanes otherwise than at full speed. Compare two builds
# with it, not a count with a full-speed profile.
set -euo pipefail

N=${N:-10000}
OUT=${OUT:-target/callgrind/daemon-instructions}
here=$(dirname "$0")

# Each thread's total instructions in run directory $1, one "file total" a line.
totals() {
    for f in "$1"/cg.out-*; do
        printf '%s %s\n' "$f" "$(grep -m1 -E '^(summary|totals):' "$f" | awk '{ print $2 }')"
    done
}
# Whether callgrind's file $1 is the store's thread (its writer's loop).
# (The whole annotation first: `grep -q` ending a pipe early fails it.)
is_store() {
    local counts
    counts=$(callgrind_annotate --inclusive=yes "$1" 2>/dev/null)
    grep -q 'writer::commit \[' <<<"$counts"
}
# The store thread's total and the others' in run directory $1: "store rest".
split() {
    local store=0 rest=0
    while read -r f n; do
        if is_store "$f"; then store=$((store + n)); else rest=$((rest + n)); fi
    done < <(totals "$1")
    echo "$store $rest"
}

N=$N OUT="$OUT/1" "$here/daemon-callgrind.sh" >/dev/null
N=$((2 * N)) OUT="$OUT/2" "$here/daemon-callgrind.sh" >/dev/null
read -r store1 rest1 < <(split "$OUT/1")
read -r store2 rest2 < <(split "$OUT/2")
store=$(((store2 - store1) / N))
rest=$(((rest2 - rest1) / N))
echo "daemon instructions a task ($N tasks more, durability ${CORTEX_POOL_DURABILITY:-default}):"
echo "  whole daemon: $((store + rest))"
echo "  store thread: $store"
echo "  other threads: $rest"
