#!/usr/bin/env bash
# Multi-core scaling of pool throughput: 64 B echo tasks submitted at once, on 1..W
# workers, next to the raw pipe limit and Python's multiprocessing.Pool on the same
# worker counts, with one caller and with CALLERS (default 16) callers each
# submitting its share (`pool-bench` CALLERS=k); then CPU-bound tasks (`pool-bench cpu`, about 1 ms of work each)
# on the same counts, and their scaling efficiency against the smallest count of 2
# or more workers. Prints RESULT lines and Markdown tables.
#
#   benches/scaling.sh [BIN_DIR] [WORKER_COUNTS]
#
# BIN_DIR holds release builds of pool-bench, bench-worker and raw-echo (default
# target/release); WORKER_COUNTS defaults to "1 2 4 8 14". N (default 200000) tasks
# per run, REPS (default 2) runs per point, interleaved; CPU_TASKS (default 1000)
# CPU-bound tasks per worker, SPIN (default 1000000) iterations each.
set -uo pipefail
bin=${1:-target/release}
counts=${2:-"1 2 4 8 14"}
n=${N:-200000}
reps=${REPS:-2}
cpu_tasks=${CPU_TASKS:-1000}
callers=${CALLERS:-16}
log=$(mktemp)
echo "# $(nproc) cpus: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
py_mp() { # py_mp WORKERS N
  python3 - "$1" "$2" <<'PY'
import multiprocessing as mp, sys, time, json
from itertools import repeat
def echo(x): return x
w, n = int(sys.argv[1]), int(sys.argv[2])
with mp.Pool(w) as pool:
    list(pool.imap_unordered(echo, [b"x" * 64] * 200, chunksize=1))
    t = time.perf_counter()
    got = sum(len(r) for r in pool.imap_unordered(echo, repeat(b"x" * 64, n), chunksize=1))
    dt = time.perf_counter() - t
print("RESULT " + json.dumps({"bench": f"py.mp.tput.w{w}", "metric": "rate", "value": n / dt, "unit": "task/s"}, separators=(",", ":")))
PY
}
for rep in $(seq "$reps"); do
  for w in $counts; do
    TAG="w$w" "$bin/pool-bench" tput "$n" "$w" | tee -a "$log"
    CALLERS=$callers TAG="w$w.c$callers" "$bin/pool-bench" tput "$n" "$w" | tee -a "$log"
    if command -v python3 >/dev/null; then py_mp "$w" "$((n / 4))" | tee -a "$log"; fi
    TAG="w$w" "$bin/pool-bench" cpu "$((cpu_tasks * w))" "$w" | tee -a "$log"
  done
  "$bin/pool-bench" raw-tput 1000000 | tee -a "$log"
done
echo
median() { # median BENCH METRIC (of an even count: the mean of the middle two)
  grep "\"bench\":\"$1\",\"metric\":\"$2\"" "$log" | grep -o '"value": *[0-9.e+]*' | awk -F: '{print $2}' | sort -g |
    awk '{a[NR]=$1} END { if (NR % 2) print a[(NR + 1) / 2]; else if (NR) print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
echo "| workers | cortex-pool, 1 caller (task/s, median) | $callers callers | multiprocessing.Pool (task/s, median) | ratio (1 caller) |"
echo "|---:|---:|---:|---:|---:|"
for w in $counts; do
  ours=$(median "ours.tput.w$w" rate)
  many=$(median "ours.tput.w$w.c$callers" rate)
  py=$(median "py.mp.tput.w$w" rate)
  ratio=$(awk -v a="${ours:-0}" -v b="${py:-0}" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else print "—" }')
  printf "| %s | %.0f | %.0f | %.0f | %s |\n" "$w" "${ours:-0}" "${many:-0}" "${py:-0}" "$ratio"
done
echo
base_w=""
for w in $counts; do
  if [ "$w" -ge 2 ] && [ -z "$base_w" ]; then base_w=$w; fi
done
base_rate=$(median "ours.cpu.w${base_w:-1}" rate)
echo "| workers | CPU-bound (task/s, median) | vs the same work in-process × workers | scaling efficiency vs ${base_w:-1} workers |"
echo "|---:|---:|---:|---:|"
for w in $counts; do
  rate=$(median "ours.cpu.w$w" rate)
  eff=$(median "ours.cpu.w$w" efficiency)
  scale=$(awk -v r="${rate:-0}" -v w="$w" -v b="${base_rate:-0}" -v bw="${base_w:-1}" \
    'BEGIN { if (b > 0) printf "%.3f", (r / w) / (b / bw); else print "—" }')
  printf "| %s | %.1f | %.3f | %s |\n" "$w" "${rate:-0}" "${eff:-0}" "$scale"
done
rm -f "$log"
