//! Placeholder until worker-sdk lands.
pub(crate) fn run() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
