//! The scrape's two formats. prometheus-client writes OpenMetrics text only; Prometheus
//! scrapers that do not ask for OpenMetrics (and `promtool check metrics`) read the older
//! text format 0.0.4, where a counter's TYPE line names the `_total` series, an info metric
//! is a gauge named `…_info`, and there is no `# UNIT` or `# EOF`. The conversion is line by
//! line, over text fulcrum itself produced.

use std::fmt::Write as _;

/// What the scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (the default).
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics only when the `Accept` header names it (Prometheus sends it first, with
    /// text/plain as the fallback); anything else, or no header, gets the text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';');
                let media = params.next().unwrap_or("").trim();
                let refused = params.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f64>().is_ok_and(|q| q <= 0.0))
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Rewrites an OpenMetrics exposition in the text format 0.0.4.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE; the family's 0.0.4 name is known only from TYPE.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        if let Some(help) = help.take() {
            // A HELP without a TYPE: kept as it was.
            let _ = writeln!(out, "# HELP {help}");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_chosen_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some(prometheus), Format::OpenMetrics),
            (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
            (Some("application/openmetrics-text;q=0"), Format::Text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn counters_info_and_eof_become_the_text_format() {
        let openmetrics = "# HELP fulcrum_requests Requests.\n\
            # TYPE fulcrum_requests counter\n\
            fulcrum_requests_total{pool=\"web\"} 3\n\
            # HELP fulcrum_build Build.\n\
            # TYPE fulcrum_build info\n\
            fulcrum_build_info{version=\"0.1.0\"} 1\n\
            # HELP fulcrum_wait_seconds Wait.\n\
            # TYPE fulcrum_wait_seconds histogram\n\
            # UNIT fulcrum_wait_seconds seconds\n\
            fulcrum_wait_seconds_sum 0.5\n\
            fulcrum_wait_seconds_count 1\n\
            fulcrum_wait_seconds_bucket{le=\"+Inf\"} 1\n\
            # EOF\n";
        assert_eq!(
            to_text(openmetrics),
            "# HELP fulcrum_requests_total Requests.\n\
             # TYPE fulcrum_requests_total counter\n\
             fulcrum_requests_total{pool=\"web\"} 3\n\
             # HELP fulcrum_build_info Build.\n\
             # TYPE fulcrum_build_info gauge\n\
             fulcrum_build_info{version=\"0.1.0\"} 1\n\
             # HELP fulcrum_wait_seconds Wait.\n\
             # TYPE fulcrum_wait_seconds histogram\n\
             fulcrum_wait_seconds_sum 0.5\n\
             fulcrum_wait_seconds_count 1\n\
             fulcrum_wait_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
