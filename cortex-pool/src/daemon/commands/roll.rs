//! `cortex-pool roll`: a rolling restart on the current worker command (what
//! `SIGHUP` does after re-reading the configuration), waiting until it is over.

use crate::cli::args::RollArgs;
use crate::daemon::protocol::Request;
use std::process::ExitCode;

use super::{call, finish, runtime, settings};

/// `cortex-pool roll`.
pub(crate) fn roll(args: RollArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(&rt, &settings, Request::Roll)?;
        println!("replaced {} worker(s)", value["replaced"]);
        Ok(ExitCode::SUCCESS)
    })())
}
