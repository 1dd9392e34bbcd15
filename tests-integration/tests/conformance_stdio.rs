//! cfg: unix. The conformance suite against the stdio transport.
#![cfg(unix)]

use tests_integration::conformance::TestResult;
use tests_integration::Subject;
use transport_ipc::StdioTransport;

fn subject() -> TestResult<Subject<StdioTransport>> {
    Ok(Subject::new(
        StdioTransport::new(),
        env!("CARGO_BIN_EXE_conformance-worker"),
    ))
}

tests_integration::conformance_suite!(subject);
