//! Why the pool's health is what it is: the alerts still active (raised in the
//! last 5 minutes, the window in which a critical one keeps the pool `critical`)
//! for the `status` reply, and the lines `daemon status` prints from it.

use std::time::{SystemTime, UNIX_EPOCH};

use pool_core::manager::Alert;
use serde_json::Value;

/// How long an alert counts as active, in milliseconds (the window in which a
/// critical one keeps the pool critical).
pub(crate) const ACTIVE_MS: u64 = pool_core::manager::CRITICAL_WINDOW.as_millis() as u64;

/// The most active alerts a `status` reply carries (the newest).
const MOST: usize = 20;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The alerts raised in the last 5 minutes, oldest first, at most the newest 20.
pub(crate) fn active(alerts: Vec<Alert>, now_ms: u64) -> Vec<Alert> {
    let since = now_ms.saturating_sub(ACTIVE_MS);
    let mut active: Vec<Alert> = alerts
        .into_iter()
        .filter(|a| a.timestamp >= since)
        .collect();
    let skip = active.len().saturating_sub(MOST);
    active.drain(..skip);
    active
}

/// The human lines about health from a `status` reply: the reasons when it is not
/// healthy, then the active alerts.
pub(crate) fn lines(status: &Value, now_ms: u64) -> Vec<String> {
    let health = &status["metrics"]["health"];
    let mut out = Vec::new();
    if health["status"].as_str() != Some("healthy") {
        let mut why = Vec::new();
        let critical = health["alerts"]["critical"].as_u64().unwrap_or(0);
        if critical > 0 {
            why.push(format!("{critical} critical alert(s) in the last 5 min"));
        }
        if health["restartBreakerOpen"].as_bool() == Some(true) {
            why.push("restart breaker open (workers keep dying or failing to start)".to_owned());
        }
        let capacity = &health["capacity"];
        if capacity["capacityPercent"].as_u64().is_some_and(|p| p < 80) {
            why.push(format!(
                "{} of {} target workers healthy",
                capacity["healthy"], capacity["total"]
            ));
        }
        if !why.is_empty() {
            out.push(format!("why: {}", why.join("; ")));
        }
    }
    let alerts = status["alerts"].as_array().map_or(&[][..], Vec::as_slice);
    if !alerts.is_empty() {
        out.push("alerts (last 5 min):".to_owned());
        for a in alerts {
            let ago = now_ms.saturating_sub(a["timestamp"].as_u64().unwrap_or(now_ms)) / 1000;
            let worker = a["workerId"]
                .as_str()
                .map(|w| format!(" {w}"))
                .unwrap_or_default();
            out.push(format!(
                "  {} {}{worker}: {} ({ago} s ago)",
                a["severity"].as_str().unwrap_or("?"),
                a["type"].as_str().unwrap_or("?"),
                a["message"].as_str().unwrap_or(""),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_critical_pool_says_why_and_lists_its_alerts() {
        let status = json!({
            "metrics": {"health": {
                "status": "critical",
                "alerts": {"critical": 1},
                "restartBreakerOpen": true,
                "capacity": {"capacityPercent": 25, "healthy": 1, "total": 4},
            }},
            "alerts": [{
                "severity": "critical", "type": "restart-breaker-open", "workerId": null,
                "message": "5 workers in a row crashed", "timestamp": 1_000_000,
            }],
        });
        let lines = lines(&status, 1_012_000);
        assert_eq!(
            lines,
            [
                "why: 1 critical alert(s) in the last 5 min; restart breaker open (workers \
                 keep dying or failing to start); 1 of 4 target workers healthy",
                "alerts (last 5 min):",
                "  critical restart-breaker-open: 5 workers in a row crashed (12 s ago)",
            ]
        );
    }

    #[test]
    fn a_healthy_pool_without_alerts_prints_nothing() {
        let status = json!({"metrics": {"health": {"status": "healthy"}}, "alerts": []});
        assert!(lines(&status, 0).is_empty());
    }
}
