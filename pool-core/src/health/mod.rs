//! Worker health: the [`HealthProbe`] trait, the [`Vitals`] it judges, and the
//! probes the pool ships.

mod heartbeat;
mod probe;
mod vitals;

pub use heartbeat::HeartbeatProbe;
pub use probe::{HealthProbe, Verdict};
pub use vitals::Vitals;
