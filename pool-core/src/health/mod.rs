//! Worker health: the [`HealthProbe`] trait, the [`Vitals`] it judges, and the
//! probes the pool ships (heartbeat, memory, task count, lifetime).

mod heartbeat;
mod lifetime;
mod max_tasks;
mod memory;
mod probe;
mod proc_stat;
mod vitals;

pub use heartbeat::HeartbeatProbe;
pub use lifetime::LifetimeProbe;
pub use max_tasks::MaxTasksProbe;
pub use memory::MemoryProbe;
pub use probe::{HealthProbe, ProbeKind, Verdict};
pub use proc_stat::process_rss;
pub use vitals::Vitals;
