#!/usr/bin/env bash
# One measurement of the cortex-pool CLI for `cargo xtask peers`, printed as a
# RESULT line (the format of shared/perf): N echo tasks of a 64 B payload
# (scripts/echo-tasks.sh) through
#   run           `cortex-pool run -w 2`, timed from start to exit
#                 (bench `ours.cli.run`);
#   run-python    the same with the Python SDK's example worker, started by
#                 the interpreter `python3` resolves to (not a version
#                 manager's shim) (`ours.cli.run.sdk.python`, N defaults to
#                 20 000);
#   daemon        `submit --wait` to a fresh 2-worker daemon with the default
#                 settings, the rate `submit` reports (`ours.cli.daemon`);
#   daemon-memory the same with `durability = "memory"` (no store: what the
#                 durable store costs, beside the row above)
#                 (`ours.cli.daemon.memory`).
# Fails unless every task ends ok.
#
#   scripts/cli-peer.sh target/release/cortex-pool run|run-python|daemon|daemon-memory [N]
set -euo pipefail
USAGE="usage: cli-peer.sh BIN run|run-python|daemon|daemon-memory [N]"
BIN=$(realpath "${1:?$USAGE}")
MODE=${2:?$USAGE}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/run-bench-lib.sh
. "$HERE/scripts/run-bench-lib.sh"
case $MODE in
  run-python) N=${3:-20000} ;;
  *) N=${3:-100000} ;;
esac
dir=$(mktemp -d)
export CORTEX_POOL_RUNTIME_DIR="$dir/run"
cleanup() {
  if [[ $MODE == daemon* ]]; then
    "$BIN" daemon stop --timeout-s 20 >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
"$HERE/scripts/echo-tasks.sh" "$N" > "$dir/tasks.jsonl"

result() {
  printf 'RESULT {"bench":"%s","metric":"rate","value":%s,"unit":"task/s"}\n' "$1" "$2"
}

case $MODE in
  run)
    result ours.cli.run "$(run_rate "$N" "$BIN" run -w 2 "$dir/tasks.jsonl")"
    ;;
  run-python)
    # The interpreter itself, as `sys.executable` names it: where `python3` is
    # a version manager's shim (pyenv's is a shell script that runs `pyenv
    # exec`), each worker's start would otherwise pay for the shim too (about
    # 70 ms here, against 30 ms for the interpreter).
    python=$(python3 -c 'import sys; print(sys.executable)')
    result ours.cli.run.sdk.python "$(run_rate "$N" "$BIN" run -w 2 "$dir/tasks.jsonl" -- \
      "$python" "$HERE/sdk/python/example_worker.py")"
    ;;
  daemon|daemon-memory)
    export CORTEX_POOL_POOL_SIZE=2 CORTEX_POOL_MIN_WORKERS=2
    name=ours.cli.daemon
    if [[ $MODE == daemon-memory ]]; then
      export CORTEX_POOL_DURABILITY=memory
      name=ours.cli.daemon.memory
    fi
    "$BIN" daemon start >/dev/null
    "$BIN" submit --wait "$dir/tasks.jsonl" 2>"$dir/submit-err" >/dev/null
    summary=$(grep -o '[0-9]* ok, 0 failed, 0 dead-lettered, 0 invalid; .* ([0-9]* tasks/s)' \
      "$dir/submit-err" || true)
    [[ $summary == "$N ok, "* ]] || { echo "not every task ok: $(cat "$dir/submit-err")" >&2; exit 1; }
    result "$name" "$(grep -o '([0-9]* tasks/s)' <<<"$summary" | tr -dc 0-9)"
    ;;
  *)
    echo "unknown mode $MODE (run, run-python, daemon, daemon-memory)" >&2
    exit 2
    ;;
esac
