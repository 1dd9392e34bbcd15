//! The `cortex-pool` binary: `run` a batch of tasks on a pool, run the pool
//! `daemon` and talk to it, or act as the built-in demo `worker`.
#![warn(clippy::unwrap_used)]

mod cli;
mod daemon;
mod demo_worker;
mod pool_settings;
mod set_once;
mod top;

/// The binary's allocator: `run`, the daemon and the demo worker allocate a few
/// small blocks per task on several threads, where mimalloc's thread-local
/// free lists cost a fraction of the system allocator's arenas (figures in
/// `docs/benchmarks.md`, "The binary's allocator"). Built without transparent
/// huge pages (the `no_thp` feature, see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
