//! The command line: argument parsing and one module per command.

pub(crate) mod args;
mod collect;
mod dead_pool;
mod events_file;
mod feed;
pub(crate) mod input;
mod interrupt;
pub(crate) mod json_str;
pub(crate) mod output;
mod progress;
mod reader;
mod run;
pub(crate) mod summary;
pub(crate) mod task_fields;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Exit status for usage and configuration errors.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Parses the command line and runs the command.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Worker => crate::demo_worker::run(),
        Command::Daemon { command } => crate::daemon::commands::daemon(command),
        Command::Submit(args) => crate::daemon::commands::submit(*args),
        Command::Metrics(args) => crate::daemon::commands::metrics(args),
        Command::Workers(args) => crate::daemon::commands::workers(args),
        Command::Dlq { command } => crate::daemon::commands::dlq(command),
        Command::Scale(args) => crate::daemon::commands::scale(args),
        Command::Roll(args) => crate::daemon::commands::roll(args),
        Command::Top(args) => crate::top::top(*args),
        Command::Result(args) => crate::daemon::commands::result(args),
        Command::Wait(args) => crate::daemon::commands::wait(args),
        Command::Tasks(args) => crate::daemon::commands::tasks(args),
    }
}
