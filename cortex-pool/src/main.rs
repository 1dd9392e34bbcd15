//! The `cortex-pool` binary: `run` a batch of tasks on a pool, run the pool
//! `daemon` and talk to it, or act as the built-in demo `worker`.
#![warn(clippy::unwrap_used)]

mod cli;
mod daemon;
mod demo_worker;
mod pool_settings;
mod top;

fn main() -> std::process::ExitCode {
    cli::main()
}
