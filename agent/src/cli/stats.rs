//! `edgefn-agent stats [NAME]`: invocation statistics over a window (totals) and per bucket
//! (series), for all functions, one function, or one qualifier of it.

use super::client::{api_path, AgentOpts, Client};
use super::output::{self, fields, micros, span, time_s, whole, Table};
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "DURATION is a number with a unit (30s, 10m, 2h, 1d) or a bare number of \
seconds. The agent keeps per-minute buckets, so --series is best a whole number of minutes."
)]
pub struct StatsArgs {
    /// Only this function [default: all functions].
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Only invocations through this qualifier: `latest`, a version number or an alias.
    #[arg(long, value_name = "Q", requires = "name")]
    qualifier: Option<String>,
    /// How far back the totals and the series go [default: the agent's, 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    window: Option<u64>,
    /// Width of one series bucket [default: the agent's, 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    series: Option<u64>,
    #[command(flatten)]
    opts: AgentOpts,
}

/// The stats document of docs/agent-api.md. Percentiles may be absent (no invocations).
#[derive(Debug, Deserialize)]
struct StatsDoc {
    window_s: Option<u64>,
    totals: Stats,
    #[serde(default)]
    series: Vec<Bucket>,
    /// Lag per partition of the stream mappings.
    #[serde(default)]
    streams: Vec<PartitionLag>,
}

#[derive(Debug, Deserialize)]
struct PartitionLag {
    name: String,
    partition: String,
    appended: i64,
    checkpoint: i64,
    lag: i64,
    oldest_age_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Stats {
    invocations: u64,
    errors: u64,
    throttles: u64,
    retries: u64,
    duration_us: Percentiles,
    latency_us: Percentiles,
    fuel: Fuel,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Percentiles {
    avg: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Fuel {
    total: Option<f64>,
    avg: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Bucket {
    start_ms: u64,
    #[serde(flatten)]
    stats: Stats,
}

pub fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.opts)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(n) = &args.name {
        query.push(("function", n.clone()));
    }
    if let Some(q) = &args.qualifier {
        query.push(("qualifier", q.clone()));
    }
    if let Some(w) = args.window {
        query.push(("window_s", w.to_string()));
    }
    if let Some(s) = args.series {
        query.push(("series_s", s.to_string()));
    }
    let v = client.get(&api_path(&["stats"]), &query)?;
    if args.opts.json {
        output::json_document(&v)?;
    } else {
        let doc: StatsDoc = client.decode(&v)?;
        let scope = (args.name.as_deref(), args.qualifier.as_deref());
        output::out(&(render(scope, &doc) + &render_streams(&doc)))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The stream lag table (empty without stream partitions).
fn render_streams(doc: &StatsDoc) -> String {
    if doc.streams.is_empty() {
        return String::new();
    }
    let mut t = Table::new(&[
        "STREAM",
        "PARTITION",
        "APPENDED",
        "CHECKPOINT",
        "LAG",
        "OLDEST",
    ])
    .right(&[2, 3, 4, 5]);
    for p in &doc.streams {
        t.row(&[
            p.name.clone(),
            if p.partition.is_empty() {
                "(default)".into()
            } else {
                p.partition.clone()
            },
            p.appended.to_string(),
            p.checkpoint.to_string(),
            p.lag.to_string(),
            p.oldest_age_ms
                .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
        ]);
    }
    format!("\n{}", t.render())
}

fn render((name, qualifier): (Option<&str>, Option<&str>), doc: &StatsDoc) -> String {
    let t = &doc.totals;
    let mut text = fields(&[
        ("function", name.unwrap_or("all").to_string()),
        ("qualifier", qualifier.unwrap_or("all").to_string()),
        ("window", doc.window_s.map_or("-".into(), span)),
    ]);
    text.push('\n');
    let mut counts = Table::new(&[
        "INVOCATIONS",
        "ERRORS",
        "THROTTLES",
        "RETRIES",
        "FUEL TOTAL",
        "FUEL AVG",
    ])
    .right(&[0, 1, 2, 3, 4, 5]);
    counts.row(&[
        t.invocations.to_string(),
        t.errors.to_string(),
        t.throttles.to_string(),
        t.retries.to_string(),
        whole(t.fuel.total),
        whole(t.fuel.avg),
    ]);
    text.push_str(&counts.render());
    text.push('\n');
    let mut times = Table::new(&["", "AVG", "P50", "P95", "P99"]).right(&[1, 2, 3, 4]);
    for (label, p) in [("duration", &t.duration_us), ("latency", &t.latency_us)] {
        times.row(&[
            label.to_string(),
            micros(p.avg),
            micros(p.p50),
            micros(p.p95),
            micros(p.p99),
        ]);
    }
    text.push_str(&times.render());
    text.push('\n');
    // The agent sends every bucket of the window; people need only those with something in it.
    let busy: Vec<&Bucket> = doc
        .series
        .iter()
        .filter(|b| b.stats.invocations > 0 || b.stats.throttles > 0)
        .collect();
    if busy.is_empty() {
        text.push_str("no series buckets in the window\n");
        return text;
    }
    let mut series = Table::new(&[
        "START",
        "INVOCATIONS",
        "ERRORS",
        "THROTTLES",
        "RETRIES",
        "DUR AVG",
        "DUR P95",
        "DUR P99",
        "LAT P95",
        "FUEL AVG",
    ])
    .right(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for b in busy {
        let s = &b.stats;
        series.row(&[
            time_s(b.start_ms),
            s.invocations.to_string(),
            s.errors.to_string(),
            s.throttles.to_string(),
            s.retries.to_string(),
            micros(s.duration_us.avg),
            micros(s.duration_us.p95),
            micros(s.duration_us.p99),
            micros(s.latency_us.p95),
            whole(s.fuel.avg),
        ]);
    }
    text.push_str(&series.render());
    text
}

/// `--window` / `--series`: a duration in whole seconds, at least 1 (bare numbers are seconds,
/// as the API's `window_s` / `series_s`).
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        std::time::Duration::from_secs(s.parse().map_err(|_| format!("`{s}` is too large"))?)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a duration (30s, 10m, 2h, 1d): {e}"))?
    };
    if d.subsec_nanos() != 0 {
        return Err(format!("`{s}` is not a whole number of seconds"));
    }
    match d.as_secs() {
        0 => Err("the duration must be at least 1s".into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_become_seconds() {
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("10m"), Ok(600));
        assert_eq!(parse_seconds("2h"), Ok(7200));
        assert_eq!(parse_seconds("1d"), Ok(86_400));
        assert_eq!(parse_seconds("3600"), Ok(3600));
        assert!(parse_seconds("0s").is_err());
        assert!(parse_seconds("1500ms").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("").is_err());
    }

    #[test]
    fn qualifier_needs_a_function() {
        use crate::cli::Cli;
        use clap::Parser;
        assert!(Cli::try_parse_from(["edgefn-agent", "stats", "--qualifier", "prod"]).is_err());
        assert!(Cli::try_parse_from(["edgefn-agent", "stats", "f", "--qualifier", "prod"]).is_ok());
        assert!(
            Cli::try_parse_from(["edgefn-agent", "stats", "--window", "2h", "--series", "5m"])
                .is_ok()
        );
    }

    #[test]
    fn totals_and_series_render() {
        let doc: StatsDoc = serde_json::from_value(json!({
            "window_s": 3600,
            "totals": {"invocations": 120, "errors": 3, "throttles": 0, "retries": 1,
                "duration_us": {"avg": 1200.0, "p50": 1000, "p95": 3100, "p99": 5000},
                "latency_us": {"avg": 310, "p50": 250, "p95": 900, "p99": 1200},
                "fuel": {"total": 1200300, "avg": 10002.5}},
            "series": [{"start_ms": 1_714_564_800_000u64, "invocations": 120, "errors": 3,
                "throttles": 0, "retries": 1,
                "duration_us": {"avg": 1200.0, "p50": 1000, "p95": 3100, "p99": 5000},
                "latency_us": {"avg": null, "p50": null, "p95": null, "p99": null},
                "fuel": {"total": 1200300, "avg": 10002}}]
        }))
        .unwrap();
        let text = render((Some("echo"), None), &doc);
        let expected = "\
function:   echo
qualifier:  all
window:     1h

INVOCATIONS  ERRORS  THROTTLES  RETRIES  FUEL TOTAL  FUEL AVG
        120       3          0        1     1200300     10002

             AVG     P50     P95     P99
duration  1.20ms  1.00ms  3.10ms  5.00ms
latency    310us   250us   900us  1.20ms

START                 INVOCATIONS  ERRORS  THROTTLES  RETRIES  DUR AVG  DUR P95  DUR P99  LAT P95  FUEL AVG
2024-05-01T12:00:00Z          120       3          0        1   1.20ms   3.10ms   5.00ms        -     10002
";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_buckets_are_not_listed() {
        let doc: StatsDoc = serde_json::from_value(json!({
            "window_s": 180, "totals": {"invocations": 2},
            "series": [{"start_ms": 0}, {"start_ms": 60_000, "invocations": 2}, {"start_ms": 120_000}]
        }))
        .unwrap();
        let text = render((None, None), &doc);
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("START"))
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[1].starts_with("1970-01-01T00:01:00Z"), "{text}");
        let idle: StatsDoc = serde_json::from_value(
            json!({"window_s": 60, "totals": {}, "series": [{"start_ms": 0}]}),
        )
        .unwrap();
        assert!(render((None, None), &idle).contains("no series buckets"));
    }

    #[test]
    fn empty_stats_render() {
        let doc: StatsDoc =
            serde_json::from_value(json!({"window_s": 60, "totals": {}, "series": []})).unwrap();
        let text = render((None, None), &doc);
        assert!(text.contains("no series buckets"), "{text}");
        assert!(text.contains("\nduration    -    -    -    -\n"), "{text}");
        assert!(text.contains("\n          0       0          0        0           -         -\n"));
    }
}
