# Sourced by the daemon-*.sh scripts, not run: a private runtime directory for
# a fresh daemon of WORKERS workers (default 2; MIN_WORKERS default 1), N 64 B
# echo tasks (scripts/echo-tasks.sh) in "$dir/tasks.jsonl", and an EXIT trap
# that runs the caller's `on_exit` when it defines one, stops the daemon
# (waiting up to STOP_TIMEOUT_S seconds, default 20), waits for background
# jobs and removes the directory. Sets BIN (default target/release/cortex-pool)
# to an absolute path and `dir`.

BIN=$(realpath "${BIN:-target/release/cortex-pool}")
dir=$(mktemp -d)
export CORTEX_POOL_RUNTIME_DIR="$dir/run"
export CORTEX_POOL_POOL_SIZE="${WORKERS:-2}" CORTEX_POOL_MIN_WORKERS="${MIN_WORKERS:-1}"

fresh_daemon_cleanup() {
    if declare -F on_exit >/dev/null; then
        on_exit
    fi
    "$BIN" daemon stop --timeout-s "${STOP_TIMEOUT_S:-20}" >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap fresh_daemon_cleanup EXIT

"$(dirname "${BASH_SOURCE[0]}")/echo-tasks.sh" "$N" > "$dir/tasks.jsonl"
