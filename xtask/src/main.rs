//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask test`: the whole test suite (nextest, doc-tests, the facade's
//!   feature matrix, docs with warnings denied, every example, the Python SDK).
//! - `cargo xtask examples`, `cargo xtask quickstart`: just those steps of `test`
//!   (every example; the commands of `docs/quickstart.md`).
//! - `cargo xtask ci`: `cargo fmt --check`, clippy with `-D warnings`, then `test`
//!   (what `.ci/run` runs).
//! - `cargo xtask peers`: builds the benches in release and runs our pool next to
//!   its peers (Python, Node, spawn-per-task, the raw pipe limit); prints one
//!   Markdown table (see `docs/benchmarks.md`).

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
        _ => {
            eprintln!("usage: cargo xtask <ci|test|lint|examples|quickstart|peers>");
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
