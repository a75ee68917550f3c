//! `edgefn logs [NAME]`: log records devices uploaded, across the fleet, oldest first,
//! optionally followed; and the shared time arguments of `logs` and `stats`.
//!
//! Text: one line per record, `time device level function version invocation text`. `--json`:
//! JSON lines (one record per line, as `GET /v1/logs` returns them), so `--follow --json`
//! streams. Records devices dropped before upload are reported on stderr.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use serde_json::Value;

use super::client::Client;
use super::output::{out, text};
use super::CliError;

/// Records per request.
const PAGE: u32 = 1000;
/// Pause between polls with `--follow`.
const POLL: Duration = Duration::from_secs(1);
/// A follower asks again for what arrived this long before the newest record it saw, and
/// skips what it printed: a transaction that committed late is not missed.
const OVERLAP_MS: i64 = 30_000;

#[derive(Args, Debug)]
#[command(
    after_help = "TIME is an RFC 3339 time (2026-05-01T12:00:00Z), Unix milliseconds, \
or a DURATION ago (10m). DURATION is a number with a unit: 30s, 10m, 2h, 1d."
)]
pub struct LogsArgs {
    /// Only this function's records [default: all, agent-level lines included].
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Only records of this device (id or name).
    #[arg(long, value_name = "D", conflicts_with = "group")]
    pub device: Option<String>,
    /// Only records of the devices in this group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Only records at this level or above.
    #[arg(long, value_name = "L", value_parser = ["trace", "debug", "info", "warn", "error"])]
    pub level: Option<String>,
    /// Only records newer than DURATION ago (or since a TIME).
    #[arg(long, value_name = "D", value_parser = parse_since)]
    pub since: Option<TimeArg>,
    /// Only records older than TIME.
    #[arg(long, value_name = "T", value_parser = parse_time, conflicts_with = "follow")]
    pub until: Option<TimeArg>,
    /// Only records whose text contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
    /// Only the records of one invocation.
    #[arg(long, value_name = "ID")]
    pub invocation: Option<String>,
    /// Keep printing records as devices upload them, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// A point in time as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    Ago(Duration),
    UnixMs(i64),
}

impl TimeArg {
    pub fn at(self, now_ms: i64) -> i64 {
        match self {
            TimeArg::Ago(d) => now_ms - d.as_millis() as i64,
            TimeArg::UnixMs(ms) => ms,
        }
    }
}

/// `--since`: a DURATION ago or a TIME; a bare number is refused (seconds or milliseconds?).
pub fn parse_since(s: &str) -> Result<TimeArg, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{s}` has no unit: write a duration such as {s}s or 10m, or an RFC 3339 time"
        ));
    }
    parse_time(s)
}

/// TIME: RFC 3339, Unix milliseconds, `now` or a DURATION ago.
pub fn parse_time(s: &str) -> Result<TimeArg, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(TimeArg::UnixMs)
            .map_err(|_| format!("`{s}` is too large for Unix milliseconds"));
    }
    if s == "now" {
        return Ok(TimeArg::Ago(Duration::ZERO));
    }
    if s.len() >= 5 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) && s.as_bytes()[4] == b'-' {
        let t = humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("`{s}` is before 1970"))?
            .as_millis() as i64;
        return Ok(TimeArg::UnixMs(ms));
    }
    humantime::parse_duration(s)
        .map(TimeArg::Ago)
        .map_err(|e| format!("`{s}` is neither a duration (10m, 2h, 1d) nor a time: {e}"))
}

/// Unix ms as RFC 3339 UTC with milliseconds.
pub fn time_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// One record for people.
pub fn log_line(v: &Value) -> String {
    let version = match (&v["function"], &v["version"]) {
        (Value::Null, _) => "-".to_string(),
        (_, Value::Null) => "latest".to_string(),
        (_, n) => n.to_string(),
    };
    let escaped: String = text(&v["text"])
        .chars()
        .flat_map(|c| match c {
            '\n' => "\\n".chars().collect::<Vec<_>>(),
            '\r' => "\\r".chars().collect(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect();
    format!(
        "{} {} {:<5} {} {} {} {}\n",
        time_ms(v["time_ms"].as_i64().unwrap_or(0)),
        text(&v["device"]),
        text(&v["level"]),
        text(&v["function"]),
        version,
        text(&v["invocation_id"]),
        escaped
    )
}

/// The stderr notes about records devices dropped before upload.
pub fn drop_notes(dropped: &Value) -> String {
    dropped
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "note: device {} dropped {} log and {} invocation records before upload (disk budget or retention)\n",
                text(&d["device"]),
                d["logs"],
                d["invocations"]
            )
        })
        .collect()
}

fn now_ms() -> i64 {
    crate::now_ms()
}

pub fn run(c: &Client, json: bool, a: LogsArgs) -> Result<(), CliError> {
    let now = now_ms();
    let mut query: Vec<(String, String)> = vec![("limit".into(), PAGE.to_string())];
    let mut add = |k: &str, v: String| query.push((k.into(), v));
    if let Some(n) = &a.name {
        add("function", n.clone());
    }
    if let Some(d) = &a.device {
        add("device", d.clone());
    }
    if let Some(g) = &a.group {
        add("group", g.clone());
    }
    if let Some(l) = &a.level {
        add("level", l.clone());
    }
    if let Some(t) = a.since {
        add("since_ms", t.at(now).to_string());
    }
    if let Some(t) = a.until {
        add("until_ms", t.at(now).to_string());
    }
    if let Some(g) = &a.grep {
        add("grep", g.clone());
    }
    if let Some(i) = &a.invocation {
        add("invocation", i.clone());
    }
    let path = |extra: &[(String, String)]| -> String {
        let all: Vec<String> = query
            .iter()
            .chain(extra)
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect();
        format!("/v1/logs?{}", all.join("&"))
    };
    let page = c.get(&path(&[]))?;
    let print = |records: &[Value]| {
        let mut t = String::new();
        for r in records {
            if json {
                t.push_str(&serde_json::to_string(r).expect("JSON"));
                t.push('\n');
            } else {
                t.push_str(&log_line(r));
            }
        }
        out(&t);
    };
    let records = page["records"].as_array().cloned().unwrap_or_default();
    print(&records);
    eprint!("{}", drop_notes(&page["dropped"]));
    if !a.follow {
        return Ok(());
    }
    // Follow by arrival at the cloud: devices upload late (and after outages, much later).
    let mut follower = Follower::new(now - OVERLAP_MS);
    for r in &records {
        follower.fresh(r);
    }
    loop {
        std::thread::sleep(POLL);
        let since = follower.newest - OVERLAP_MS;
        let page = c.get(&path(&[("received_since_ms".into(), since.to_string())]))?;
        let fresh: Vec<Value> = page["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| follower.fresh(r))
            .cloned()
            .collect();
        print(&fresh);
    }
}

/// What `--follow` printed recently, to skip it when a poll overlaps the previous one.
struct Follower {
    seen: HashSet<(String, i64)>,
    /// `(received_ms, device_id, seq)` of `seen`, to forget the oldest.
    by_arrival: BTreeSet<(i64, String, i64)>,
    /// The newest `received_ms` seen.
    newest: i64,
}

impl Follower {
    fn new(start: i64) -> Follower {
        Follower {
            seen: HashSet::new(),
            by_arrival: BTreeSet::new(),
            newest: start,
        }
    }

    /// Remembers `r`; true if it was not seen before.
    fn fresh(&mut self, r: &Value) -> bool {
        let key = (text(&r["device_id"]), r["seq"].as_i64().unwrap_or(0));
        let received = r["received_ms"].as_i64().unwrap_or(0);
        self.newest = self.newest.max(received);
        self.by_arrival.insert((received, key.0.clone(), key.1));
        // Forget what is too old to come again.
        while let Some(first) = self.by_arrival.first().cloned() {
            if first.0 >= self.newest - 2 * OVERLAP_MS {
                break;
            }
            self.by_arrival.remove(&first);
            self.seen.remove(&(first.1, first.2));
        }
        self.seen.insert(key)
    }
}

/// Percent-encodes a query value.
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_since("10m"),
            Ok(TimeArg::Ago(Duration::from_secs(600)))
        );
        assert!(parse_since("600").unwrap_err().contains("600s"));
        assert_eq!(
            parse_time("1714564800000"),
            Ok(TimeArg::UnixMs(1_714_564_800_000))
        );
        assert_eq!(
            parse_time("2024-05-01T12:00:00Z"),
            Ok(TimeArg::UnixMs(1_714_564_800_000))
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(TimeArg::Ago(Duration::from_secs(1)).at(5_000), 4_000);
    }

    #[test]
    fn lines_and_notes() {
        let r = json!({"device": "pi-7", "device_id": "d-1", "seq": 1, "time_ms": 1_714_564_800_123i64,
            "level": "warn", "function": "echo", "version": 3, "invocation_id": "01HX",
            "text": "hot\nline", "received_ms": 0});
        assert_eq!(
            log_line(&r),
            "2024-05-01T12:00:00.123Z pi-7 warn  echo 3 01HX hot\\nline\n"
        );
        let n = drop_notes(&json!([{"device": "pi-7", "logs": 5, "invocations": 2}]));
        assert!(n.contains("pi-7 dropped 5 log and 2 invocation"), "{n}");
    }

    #[test]
    fn a_follower_skips_what_it_printed() {
        let mut f = Follower::new(0);
        let r = |seq: i64, at: i64| json!({"device_id": "d-1", "seq": seq, "received_ms": at});
        assert!(f.fresh(&r(1, 1_000)));
        assert!(!f.fresh(&r(1, 1_000)), "seen");
        assert!(f.fresh(&r(2, 1_000)));
        assert_eq!(f.newest, 1_000);
        assert!(f.fresh(&r(3, 1_000 + 3 * OVERLAP_MS)));
        assert!(
            !f.seen.contains(&("d-1".to_string(), 1)),
            "forgotten once out of reach"
        );
    }
}
