//! The small clients: `metrics`, `workers`, `dlq`, `scale`.

use crate::cli::args::{DlqCommand, MetricsArgs, ScaleArgs, WorkersArgs};
use crate::daemon::protocol::Request;
use crate::daemon::queue::cli as queue_cli;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

use super::listing::listing;
use super::{call, finish, runtime, settings, settings_for_queue, Fail};

/// `cortex-pool metrics`.
pub(crate) fn metrics(args: MetricsArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(
            &rt,
            &settings,
            Request::Metrics {
                prometheus: args.prometheus,
            },
        )?;
        match value {
            Value::String(text) => print!("{text}"),
            value => println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            ),
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool workers`.
pub(crate) fn workers(args: WorkersArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(&rt, &settings, Request::Workers)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<12} {:>8} {:<9} {:>9} {:>10} {:>10} {:>12}",
            "ID", "PID", "STATE", "IN_FLIGHT", "DONE", "RSS_MB", "UPTIME_S"
        );
        for w in value.as_array().into_iter().flatten() {
            println!(
                "{:<12} {:>8} {:<9} {:>9} {:>10} {:>10.1} {:>12.1}",
                w["id"].as_str().unwrap_or("?"),
                w["pid"].as_u64().unwrap_or(0),
                w["state"].as_str().unwrap_or("?"),
                w["inFlight"].as_u64().unwrap_or(0),
                w["tasksDone"].as_u64().unwrap_or(0),
                w["rssBytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
                w["uptimeMs"].as_f64().unwrap_or(0.0) / 1000.0,
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool dlq …`.
pub(crate) fn dlq(command: DlqCommand) -> ExitCode {
    finish((|| {
        let (config, queue, request) = match &command {
            DlqCommand::List { config, queue } => (config, queue, Request::DlqList { paged: true }),
            DlqCommand::Retry { config, queue, ids } => (
                config,
                queue,
                Request::DlqRetry {
                    ids: (!ids.is_empty()).then(|| ids.clone()),
                },
            ),
            DlqCommand::Purge { config, queue } => (config, queue, Request::DlqPurge),
        };
        let settings = settings_for_queue(config, queue.as_deref())?;
        let rt = runtime()?;
        let value = match queue {
            Some(url) => rt
                .block_on(async {
                    let source = queue_cli::connect(&settings, url).await?;
                    queue_cli::dlq(&source, request).await
                })
                .map_err(|e| Fail(1, e))?,
            None if matches!(command, DlqCommand::List { .. }) => {
                // The daemon's dead letters, in pages as they come.
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                listing(&rt, &settings, &request, &mut |entry| {
                    let _ = writeln!(out, "{entry}");
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            None => call(&rt, &settings, request)?,
        };
        match command {
            DlqCommand::List { .. } => {
                for entry in value.as_array().into_iter().flatten() {
                    println!("{entry}");
                }
            }
            DlqCommand::Retry { .. } => {
                for id in value["requeued"].as_array().into_iter().flatten() {
                    println!("requeued {}", id.as_str().unwrap_or("?"));
                }
                let mut missing = Vec::new();
                for id in value["unknown"].as_array().into_iter().flatten() {
                    missing.push(format!("no such task: {}", id.as_str().unwrap_or("?")));
                }
                for t in value["not_dead"].as_array().into_iter().flatten() {
                    missing.push(format!(
                        "task {} is not in the dead-letter queue (status {})",
                        t["id"].as_str().unwrap_or("?"),
                        t["status"].as_str().unwrap_or("?")
                    ));
                }
                for id in value["not_a_task"].as_array().into_iter().flatten() {
                    missing.push(format!(
                        "dead letter {} was no task (invalid_input): kept as it is; \
                         read it with `dlq list` and submit it again corrected",
                        id.as_str().unwrap_or("?")
                    ));
                }
                if !missing.is_empty() {
                    return Err(Fail(1, missing.join("\ncortex-pool: ")));
                }
            }
            DlqCommand::Purge { .. } => {
                let ids = value.as_array().cloned().unwrap_or_default();
                for id in &ids {
                    println!("removed {}", id.as_str().unwrap_or("?"));
                }
                println!("purged {} dead letters", ids.len());
            }
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool scale N`.
pub(crate) fn scale(args: ScaleArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(&rt, &settings, Request::Scale { size: args.size })?;
        println!("target size {}", value["size"]);
        Ok(ExitCode::SUCCESS)
    })())
}
