//! The command line: argument parsing and one module per command.

mod args;
mod input;
mod output;
mod run;
mod summary;

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
    }
}
