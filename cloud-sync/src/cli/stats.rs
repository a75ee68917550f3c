//! `edgefn stats [NAME]`: invocation statistics over the fleet (or a device or group), the same
//! figures as the agent's `stats`: totals, per function version, per device and a series.
//! Percentiles are computed by the cloud from the merged histograms of every device's buckets.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::client::Client;
use super::logs::{drop_notes, percent};
use super::output::{fields, json as print_json, out, text, time, Table};
use super::CliError;

#[derive(Args, Debug)]
#[command(
    after_help = "DURATION is a number with a unit: 30s, 10m, 2h, 1d. Buckets are per \
minute, so --series is best a whole number of minutes."
)]
pub struct StatsArgs {
    /// Only this function [default: all functions].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Only this device (id or name).
    #[arg(long, value_name = "D", conflicts_with = "group")]
    pub device: Option<String>,
    /// Only the devices in this group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Only invocations of these versions: `latest`, a version number or an alias (as the
    /// registry has it now).
    #[arg(long, value_name = "Q", requires = "name")]
    pub qualifier: Option<String>,
    /// How far back [default: 1h].
    #[arg(long, value_name = "D", value_parser = parse_span)]
    pub window: Option<Duration>,
    /// Width of one series point [default: 1m up to a day].
    #[arg(long, value_name = "D", value_parser = parse_span)]
    pub series: Option<Duration>,
}

fn parse_span(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration such as 30s, 10m, 2h or 1d: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than a second"));
    }
    Ok(d)
}

fn micros(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(us) if us >= 1_000_000.0 => format!("{:.2}s", us / 1e6),
        Some(us) if us >= 1_000.0 => format!("{:.2}ms", us / 1e3),
        Some(us) => format!("{us:.0}µs"),
    }
}

fn summary(v: &Value) -> String {
    format!(
        "avg {}  p50 {}  p95 {}  p99 {}  max {}",
        micros(&v["avg"]),
        micros(&v["p50"]),
        micros(&v["p95"]),
        micros(&v["p99"]),
        micros(&v["max"])
    )
}

/// The report for people.
pub fn render(r: &Value) -> String {
    let t = &r["totals"];
    let mut s = fields(&[
        (
            "window",
            format!(
                "{} .. {}",
                time(r["since_ms"].as_i64()),
                time(r["until_ms"].as_i64())
            ),
        ),
        ("invocations", text(&t["invocations"])),
        ("errors", text(&t["errors"])),
        ("throttles", text(&t["throttles"])),
        ("retries", text(&t["retries"])),
        ("duration", summary(&t["duration_us"])),
        ("latency", summary(&t["latency_us"])),
        (
            "fuel",
            format!(
                "total {}  avg {}",
                t["fuel"]["total"],
                text(&t["fuel"]["avg"])
            ),
        ),
    ]);
    let row = |first: Vec<String>, f: &Value| -> Vec<String> {
        let mut cells = first;
        cells.extend([
            text(&f["invocations"]),
            text(&f["errors"]),
            micros(&f["duration_us"]["p50"]),
            micros(&f["duration_us"]["p99"]),
            micros(&f["latency_us"]["p99"]),
        ]);
        cells
    };
    let groups = r["groups"].as_array().cloned().unwrap_or_default();
    if !groups.is_empty() {
        let mut table = Table::new(&[
            "FUNCTION",
            "VERSION",
            "INVOCATIONS",
            "ERRORS",
            "P50",
            "P99",
            "LATENCY P99",
        ]);
        for g in &groups {
            table.row(row(vec![text(&g["function"]), text(&g["version"])], g));
        }
        s.push('\n');
        s.push_str(&table.render());
    }
    let devices = r["devices"].as_array().cloned().unwrap_or_default();
    if !devices.is_empty() {
        let mut table = Table::new(&[
            "DEVICE",
            "INVOCATIONS",
            "ERRORS",
            "P50",
            "P99",
            "LATENCY P99",
        ]);
        for d in &devices {
            table.row(row(vec![text(&d["device"])], d));
        }
        s.push('\n');
        s.push_str(&table.render());
    }
    let points: Vec<&Value> = r["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["invocations"].as_u64().unwrap_or(0) + p["throttles"].as_u64().unwrap_or(0) > 0
        })
        .collect();
    if !points.is_empty() {
        let mut table = Table::new(&["FROM", "INVOCATIONS", "ERRORS", "P50", "P99", "LATENCY P99"]);
        for p in points {
            table.row(row(vec![time(p["start_ms"].as_i64())], p));
        }
        s.push('\n');
        s.push_str(&table.render());
    }
    s
}

pub fn run(c: &Client, json: bool, a: StatsArgs) -> Result<(), CliError> {
    let mut q: Vec<String> = Vec::new();
    if let Some(n) = &a.name {
        q.push(format!("function={}", percent(n)));
    }
    if let Some(x) = &a.qualifier {
        q.push(format!("qualifier={}", percent(x)));
    }
    if let Some(d) = &a.device {
        q.push(format!("device={}", percent(d)));
    }
    if let Some(g) = &a.group {
        q.push(format!("group={}", percent(g)));
    }
    if let Some(w) = a.window {
        q.push(format!("window_s={}", w.as_secs()));
    }
    if let Some(s) = a.series {
        q.push(format!("series_s={}", s.as_secs()));
    }
    let r = c.get(&format!("/v1/stats?{}", q.join("&")))?;
    if json {
        print_json(&r);
    } else {
        out(&render(&r));
    }
    eprint!("{}", drop_notes(&r["dropped"]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn micros_pick_a_unit() {
        assert_eq!(micros(&json!(12)), "12µs");
        assert_eq!(micros(&json!(1500)), "1.50ms");
        assert_eq!(micros(&json!(2_500_000)), "2.50s");
        assert_eq!(micros(&Value::Null), "-");
        assert!(parse_span("0s").is_err());
        assert!(parse_span("10 parsecs").is_err());
    }

    #[test]
    fn render_shows_totals_groups_and_devices() {
        let f = json!({"invocations": 3, "errors": 1, "throttles": 0, "retries": 0,
            "fuel": {"total": 30, "avg": 10.0},
            "duration_us": {"avg": 1000.0, "p50": 900, "p95": 2000, "p99": 2000, "max": 2000},
            "latency_us": {"avg": 5.0, "p50": 5, "p95": 5, "p99": 5, "max": 5}});
        let mut g = f.clone();
        g["function"] = json!("echo");
        g["version"] = json!("2");
        let mut d = f.clone();
        d["device"] = json!("pi-7");
        let r = json!({"since_ms": 0, "until_ms": 60000, "totals": f, "groups": [g],
            "devices": [d], "series": [], "dropped": []});
        let text = render(&r);
        assert!(text.contains("invocations:"), "{text}");
        assert!(text.contains("echo") && text.contains("pi-7"), "{text}");
        assert!(text.contains("900µs"), "{text}");
    }
}
