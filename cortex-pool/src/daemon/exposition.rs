//! The text format a `/metrics` scrape is answered in, chosen from the
//! request's `Accept` header.
//!
//! The series are encoded as OpenMetrics (`# EOF` at the end, a counter's
//! `# TYPE` naming its family without the `_total` its sample carries).
//! Prometheus asks for OpenMetrics and gets that text as it is, under
//! OpenMetrics' content type. A scraper that does not ask for it gets the
//! classic Prometheus text (`version=0.0.4`): the same samples, with the
//! metadata in the classic form, where a `# TYPE` line names the sample
//! (`…_total`) and there is no `# EOF`; served under OpenMetrics' name
//! instead, a classic parser would read every counter as untyped.

/// What an OpenMetrics scrape is served as.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a classic scrape is served as.
pub(crate) const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text format of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0, what the series are encoded as.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4.
    Classic,
}

impl Format {
    /// The format a request with this `head` (its request line and header
    /// lines) asks for: OpenMetrics when an `Accept` header names
    /// `application/openmetrics-text` with a weight above zero, else classic.
    pub(crate) fn asked_in(head: &str) -> Self {
        let accepts = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
            .flat_map(|(_, value)| value.split(','));
        for range in accepts {
            let mut parts = range.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("");
            if kind.eq_ignore_ascii_case("application/openmetrics-text") && weighed(parts) {
                return Self::OpenMetrics;
            }
        }
        Self::Classic
    }

    /// The `Content-Type` of an answer in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS,
            Self::Classic => CLASSIC,
        }
    }

    /// `openmetrics` (the series as encoded) in this format.
    pub(crate) fn render(self, openmetrics: String) -> String {
        match self {
            Self::OpenMetrics => openmetrics,
            Self::Classic => classic(&openmetrics),
        }
    }
}

/// Whether a media range's parameters leave it a weight above zero (no
/// `q`, or a `q` that is not zero; an unreadable `q` counts as given).
fn weighed<'a>(params: impl Iterator<Item = &'a str>) -> bool {
    params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
        .and_then(|(_, q)| q.trim().parse::<f64>().ok())
        .is_none_or(|q| q > 0.0)
}

/// OpenMetrics text in the classic format: `# EOF` and `# UNIT` dropped, and
/// a counter family's `# HELP` and `# TYPE` naming its `_total` sample.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        match metadata(line) {
            Some((kind, name, rest)) if counters.contains(name) => {
                out.push_str(&format!("# {kind} {name}_total{rest}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A `# HELP` or `# TYPE` line's keyword, family name and what follows the
/// name.
fn metadata(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.strip_prefix("# ")?;
    let (kind, rest) = rest.split_once(' ')?;
    if kind != "HELP" && kind != "TYPE" {
        return None;
    }
    let end = rest.find(' ').unwrap_or(rest.len());
    Some((kind, &rest[..end], &rest[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCODED: &str = "# HELP cortex_pool_tasks_submitted Tasks accepted.\n\
        # TYPE cortex_pool_tasks_submitted counter\n\
        cortex_pool_tasks_submitted_total 5\n\
        # HELP cortex_pool_workers Workers.\n\
        # TYPE cortex_pool_workers gauge\n\
        cortex_pool_workers 2\n\
        # UNIT cortex_pool_workers workers\n\
        # EOF\n";

    #[test]
    fn prometheus_s_accept_header_gets_openmetrics() {
        let head = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2\r\n\r\n";
        assert_eq!(Format::asked_in(head), Format::OpenMetrics);
        assert_eq!(Format::OpenMetrics.render(ENCODED.to_owned()), ENCODED);
        assert_eq!(Format::OpenMetrics.content_type(), OPENMETRICS);
    }

    #[test]
    fn no_accept_a_classic_one_or_a_zero_weight_gets_classic_text() {
        for head in [
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\naccept: text/plain;version=0.0.4\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; q=0\r\n\r\n",
            "GET /metrics HTTP/1.0\nAccept: */*\n\n",
        ] {
            assert_eq!(Format::asked_in(head), Format::Classic, "{head:?}");
        }
        assert_eq!(Format::Classic.content_type(), CLASSIC);
    }

    #[test]
    fn classic_text_names_counter_samples_in_its_metadata_and_has_no_eof() {
        assert_eq!(
            Format::Classic.render(ENCODED.to_owned()),
            "# HELP cortex_pool_tasks_submitted_total Tasks accepted.\n\
             # TYPE cortex_pool_tasks_submitted_total counter\n\
             cortex_pool_tasks_submitted_total 5\n\
             # HELP cortex_pool_workers Workers.\n\
             # TYPE cortex_pool_workers gauge\n\
             cortex_pool_workers 2\n"
        );
    }
}
