//! The `cortex-pool` binary: `run` a batch of tasks on a pool, or act as the
//! built-in demo `worker`.
#![warn(clippy::unwrap_used)]

mod cli;
mod demo_worker;

fn main() -> std::process::ExitCode {
    cli::main()
}
