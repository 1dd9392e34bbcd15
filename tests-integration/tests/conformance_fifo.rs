//! cfg: unix. The conformance suite against the FIFO transport; its FIFO directory
//! must hold as many entries after the workers as before.
#![cfg(unix)]

use tests_integration::conformance::TestResult;
use tests_integration::Subject;
use transport_fifo::FifoTransport;

fn subject() -> TestResult<Subject<FifoTransport>> {
    let transport = FifoTransport::new()?;
    let dir = transport.dir().to_owned();
    Ok(Subject::new(transport, env!("CARGO_BIN_EXE_conformance-worker")).with_leftovers(dir))
}

tests_integration::conformance_suite!(subject);
