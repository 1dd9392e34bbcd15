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

# Tasks per second of one command that runs N lines; fails unless every line is ok.
rate() {
  local n=$1 start end ok
  shift
  start=$(date +%s.%N)
  ok=$("$@" 2>/dev/null | grep -c '"status":"ok"')
  end=$(date +%s.%N)
  [ "$ok" = "$n" ] || { echo "only $ok of $n tasks ok: $*" >&2; exit 1; }
  echo "$n / ($end - $start)" | bc -l
}

mp() {
  python3 "$HERE/benches/peers/python/bench.py" mp tput |
    sed -n 's/.*"value": *\([0-9.]*\).*/\1/p'
}

printf '%-4s %-30s %12s %8s\n' rep what task/s vs_mp
for rep in $(seq "$REPS"); do
  old=$(rate 100000 "$OLD" run -w 2 "$WORK/echo100k.jsonl")
  new=$(rate 100000 "$NEW" run -w 2 "$WORK/echo100k.jsonl")
  old_py=$(rate 20000 "$OLD" run -w 2 "$WORK/echo20k.jsonl" -- python3 "$OLD_SDK/example_worker.py")
  new_py=$(rate 20000 "$NEW" run -w 2 "$WORK/echo20k.jsonl" -- python3 "$NEW_SDK/example_worker.py")
  pool=$(mp)
  for row in "run, old=$old" "run, new=$new" "Python SDK 20k, old=$old_py" \
    "Python SDK 20k, new=$new_py" "multiprocessing.Pool(2)=$pool"; do
    printf '%-4s %-30s %12.0f %8.2f\n' "$rep" "${row%=*}" "${row##*=}" "$(echo "${row##*=} / $pool" | bc -l)"
  done
done
