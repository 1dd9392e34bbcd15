# Shared by the `cortex-pool run` benchmark scripts (source it; it defines
# functions only):
#   echo_lines PATH N      N lines of {"type":"echo","payload":"…"}, each padded
#                          to 64 bytes (newline included)
#   run_rate N CMD...      tasks per second of CMD (a `run` of N lines), timed
#                          from start to exit; fails unless every line is ok
#   mp_rate                multiprocessing.Pool(2) on the same echo, timed by
#                          benches/peers/python/bench.py after its warm-up
#   print_rows REP ROW...  one line per ROW ("what=task/s"), with its ratio to
#                          the last ROW (multiprocessing.Pool)
#   echo_workload DIR      DIR/echo100k.jsonl and DIR/echo20k.jsonl (echo_lines)
#                          and the header of the table print_rows fills

RUN_BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

echo_lines() {
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

run_rate() {
  local n=$1 start end ok
  shift
  start=$(date +%s.%N)
  ok=$("$@" 2>/dev/null | grep -c '"status":"ok"')
  end=$(date +%s.%N)
  [ "$ok" = "$n" ] || { echo "only $ok of $n tasks ok: $*" >&2; exit 1; }
  echo "$n / ($end - $start)" | bc -l
}

mp_rate() {
  python3 "$RUN_BENCH_ROOT/benches/peers/python/bench.py" mp tput |
    sed -n 's/.*"value": *\([0-9.]*\).*/\1/p'
}

print_rows() {
  local rep=$1 pool=${!#} row
  shift
  for row in "$@"; do
    printf '%-4s %-34s %12.0f %8.2f\n' "$rep" "${row%=*}" "${row##*=}" \
      "$(echo "${row##*=} / ${pool##*=}" | bc -l)"
  done
}

echo_workload() {
  echo_lines "$1/echo100k.jsonl" 100000
  echo_lines "$1/echo20k.jsonl" 20000
  printf '%-4s %-34s %12s %8s\n' rep what task/s vs_mp
}
