//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask test`: the whole test suite (nextest, doc-tests, the facade's
//!   feature matrix, docs with warnings denied, every example, the chaos
//!   scenarios, the Python SDK).
//! - `cargo xtask examples`, `cargo xtask quickstart`: just those steps of `test`
//!   (every example; the commands of `docs/quickstart.md`).
//! - `cargo xtask ci`: `cargo fmt --check`, clippy with `-D warnings`, then `test`
//!   (what `.ci/run` runs).
//! - `cargo xtask chaos`: attacks the real binary (kill storms, SIGSTOP, rogue
//!   workers, hostile input, signals, resource limits, planted symlinks; the
//!   daemon under SIGHUP rolls and control-socket fuzz) and prints
//!   a table of submitted / ok / failed / dead-lettered / lost / settled twice /
//!   orphans per scenario; fails on any lost, twice, orphan or crash. Part of `test`.
//! - `cargo xtask peers`: builds the benches in release and runs our pool next to
//!   its peers (Python, Node, spawn-per-task, the raw pipe limit); prints one
//!   Markdown table (see `docs/benchmarks.md`).
//! - `cargo xtask callgrind`: instructions per 64 B echo task, manager side and
//!   worker side, counted with `valgrind --tool=callgrind` (`RESULT` lines).

mod callgrind;
mod chaos;
mod deps;
mod nats;
mod peers;
mod steps;

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "ci" => steps::lint().and_then(|()| steps::test()),
        "test" => steps::test(),
        "lint" => steps::lint(),
        "examples" => steps::examples(),
        "quickstart" => steps::quickstart(),
        "peers" => peers::peers(),
        "callgrind" => callgrind::callgrind(),
        "chaos" => chaos::chaos(),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|test|lint|examples|quickstart|peers|chaos|callgrind>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
