//! The screen, one file per panel: `header` (health, its reasons, counts),
//! `activity` (throughput sparkline, latency percentiles), `workers` (the
//! table), `log` (alerts and events), `footer` (keys, prompts, errors),
//! `overlay` (help, dead letters); `layout` places them for the terminal's size
//! and `format` holds the shared number formats.

mod activity;
mod footer;
mod format;
mod header;
mod layout;
mod log;
mod overlay;
mod workers;

#[cfg(test)]
mod tests;

pub(crate) use layout::draw;
