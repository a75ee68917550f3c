//! `edgefn-agent logs [NAME]`: the agent's log records, oldest first, optionally followed.
//!
//! Text: one line per record, `time level function version invocation text` (`-` where a field
//! does not apply, `latest` for an unpublished version). `--json`: JSON lines, one API LogRecord
//! object per line, so `--follow --json` can be piped to a program record by record.

use super::client::{api_path, AgentOpts, Client};
use super::output::{self, escape_text, time_ms};
use serde::Deserialize;
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records asked for per request; a full page means more are waiting.
const PAGE: usize = 1000;
/// Pause between polls with `--follow`.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --json the output is JSON lines: one LogRecord object per line \
(seq, time_ms, level, function, version, invocation_id, text), not one array, so that --follow \
can stream.\n\nTIME is an RFC 3339 time (2024-05-01T12:00:00Z, or with an offset), Unix \
milliseconds (1714564800000), or a DURATION ago (10m). DURATION is a number with a unit: 30s, \
10m, 2h, 1d, 1h30m."
)]
pub struct LogsArgs {
    /// Only this function's records [default: all, including agent-level lines].
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Only records at this level or above.
    #[arg(long, value_name = "LEVEL", value_enum)]
    level: Option<Level>,
    /// Only records newer than DURATION ago (or since an RFC 3339 time).
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    since: Option<TimeSpec>,
    /// Only records older than TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "follow")]
    until: Option<TimeSpec>,
    /// Only records whose text contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// Only the records of one invocation.
    #[arg(long, value_name = "ID")]
    invocation: Option<String>,
    /// Keep polling for new records (every 500 ms) until interrupted (Ctrl-C).
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    opts: AgentOpts,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A point in time as given: some time ago (resolved when the command runs) or absolute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeSpec {
    Ago(Duration),
    UnixMs(u64),
}

impl TimeSpec {
    pub fn to_unix_ms(self, now_ms: u64) -> u64 {
        match self {
            TimeSpec::Ago(d) => now_ms.saturating_sub(d.as_millis() as u64),
            TimeSpec::UnixMs(ms) => ms,
        }
    }
}

/// LogRecord, as docs/agent-api.md defines it.
#[derive(Debug, Deserialize)]
pub struct LogRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub level: String,
    pub function: Option<String>,
    /// A number; null for agent-level lines and for `latest`.
    #[serde(default)]
    pub version: Value,
    pub invocation_id: Option<String>,
    pub text: String,
}

#[derive(Debug, Deserialize)]
struct Page {
    records: Vec<Value>,
    next_seq: u64,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.opts)?;
    let now = now_ms();
    let mut query: Vec<(&str, String)> = vec![("limit", PAGE.to_string())];
    if let Some(n) = &args.name {
        query.push(("function", n.clone()));
    }
    if let Some(l) = args.level {
        query.push(("level", format!("{l:?}").to_lowercase()));
    }
    if let Some(t) = args.since {
        query.push(("since_ms", t.to_unix_ms(now).to_string()));
    }
    if let Some(t) = args.until {
        query.push(("until_ms", t.to_unix_ms(now).to_string()));
    }
    if let Some(g) = &args.grep {
        query.push(("grep", g.clone()));
    }
    if let Some(i) = &args.invocation {
        query.push(("invocation", i.clone()));
    }
    let path = api_path(&["logs"]);
    let mut after: Option<u64> = None;
    loop {
        let mut q = query.clone();
        if let Some(a) = after {
            q.push(("after_seq", a.to_string()));
        }
        let page: Page = client.decode(&client.get(&path, &q)?)?;
        let mut text = String::new();
        for v in &page.records {
            let r: LogRecord = client.decode(v)?;
            // Guard against printing a record twice should a page overlap the previous one.
            if after.is_some_and(|a| r.seq <= a) {
                continue;
            }
            if args.opts.json {
                text.push_str(&output::json_line(v));
            } else {
                text.push_str(&log_line(&r));
            }
        }
        output::out(&text)?;
        let full = page.records.len() >= PAGE;
        // `next_seq` is what to pass as `after_seq` next (docs/agent-api.md).
        after = Some(after.map_or(page.next_seq, |a| a.max(page.next_seq)));
        if full {
            continue;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(POLL);
    }
}

/// One record for people: `time level function version invocation text`.
pub fn log_line(r: &LogRecord) -> String {
    let version = match (&r.function, &r.version) {
        (None, _) => "-".to_string(),
        (Some(_), Value::Null) => "latest".to_string(),
        (Some(_), Value::String(s)) => s.clone(),
        (Some(_), v) => v.to_string(),
    };
    format!(
        "{} {:<5} {} {} {} {}\n",
        time_ms(r.time_ms),
        r.level,
        r.function.as_deref().unwrap_or("-"),
        version,
        r.invocation_id.as_deref().unwrap_or("-"),
        escape_text(&r.text)
    )
}

/// `--since`: a DURATION ago, or an RFC 3339 time. A bare number is refused: seconds and Unix
/// milliseconds would both be plausible readings.
pub fn parse_since(s: &str) -> Result<TimeSpec, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{s}` has no unit: write a duration such as {s}s or 10m, or an RFC 3339 time"
        ));
    }
    parse_time(s)
}

/// TIME: an RFC 3339 time, Unix milliseconds, `now`, or a DURATION ago.
pub fn parse_time(s: &str) -> Result<TimeSpec, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(TimeSpec::UnixMs)
            .map_err(|_| format!("`{s}` is too large for Unix milliseconds"));
    }
    if s == "now" {
        return Ok(TimeSpec::Ago(Duration::ZERO));
    }
    // A date starts with four digits and a dash; everything else is read as a duration.
    if s.len() >= 5 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) && s.as_bytes()[4] == b'-' {
        return parse_rfc3339(s).map(TimeSpec::UnixMs);
    }
    humantime::parse_duration(s)
        .map(TimeSpec::Ago)
        .map_err(|e| format!("`{s}` is neither a duration (10m, 2h, 30s, 1d) nor a time: {e}"))
}

/// RFC 3339 to Unix ms, with any UTC offset (humantime alone takes only `Z` / `+00:00`).
fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = |e: &dyn std::fmt::Display| format!("`{s}` is not an RFC 3339 time: {e}");
    if !s.is_ascii() {
        return Err(bad(&"non-ASCII characters"));
    }
    let b = s.as_bytes();
    let n = b.len();
    // `...+HH:MM` / `...-HH:MM`: parse as UTC, then move by the offset.
    // The offset follows the seconds (index 19 on), so only strings of 25+ bytes can have one.
    let (utc, offset_s): (String, i64) =
        if n >= 25 && matches!(b[n - 6], b'+' | b'-') && b[n - 3] == b':' {
            let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
            if !digits(n - 5..n - 3) || !digits(n - 2..n) {
                return Err(bad(&"bad offset"));
            }
            let hh: i64 = s[n - 5..n - 3].parse().map_err(|_| bad(&"bad offset"))?;
            let mm: i64 = s[n - 2..].parse().map_err(|_| bad(&"bad offset"))?;
            if !(0..24).contains(&hh) || !(0..60).contains(&mm) {
                return Err(bad(&"offset out of range"));
            }
            let sign = if b[n - 6] == b'-' { -1 } else { 1 };
            (format!("{}Z", &s[..n - 6]), sign * (hh * 3600 + mm * 60))
        } else {
            (s.to_ascii_uppercase(), 0)
        };
    let t = humantime::parse_rfc3339(&utc).map_err(|e| bad(&e))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| bad(&e))?
        .as_millis() as i64;
    // Local time = UTC + offset, so UTC = local - offset.
    u64::try_from(ms - offset_s * 1000).map_err(|_| bad(&"before 1970"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H: u64 = 3_600_000;

    #[test]
    fn durations_are_times_ago() {
        let ago = |s| parse_since(s).map(|t| t.to_unix_ms(100 * H));
        assert_eq!(ago("10m"), Ok(100 * H - 600_000));
        assert_eq!(ago("2h"), Ok(98 * H));
        assert_eq!(ago("30s"), Ok(100 * H - 30_000));
        assert_eq!(ago("1d"), Ok(76 * H));
        assert_eq!(ago("1h30m"), Ok(100 * H - 90 * 60_000));
        assert_eq!(ago("1000d"), Ok(0), "clamped at the epoch");
        assert!(parse_since("600").unwrap_err().contains("600s"));
        assert!(parse_since("10 parsecs").is_err());
        assert!(parse_since("").is_err());
    }

    #[test]
    fn times_are_rfc3339_unix_ms_or_ago() {
        assert_eq!(
            parse_time("1714564800000"),
            Ok(TimeSpec::UnixMs(1_714_564_800_000))
        );
        assert_eq!(
            parse_time("2024-05-01T12:00:00Z"),
            Ok(TimeSpec::UnixMs(1_714_564_800_000))
        );
        assert_eq!(
            parse_time("2024-05-01t12:00:00.250z"),
            Ok(TimeSpec::UnixMs(1_714_564_800_250))
        );
        assert_eq!(
            parse_time("2024-05-01T14:00:00+02:00"),
            Ok(TimeSpec::UnixMs(1_714_564_800_000))
        );
        assert_eq!(
            parse_time("2024-05-01T07:30:00.5-04:30"),
            Ok(TimeSpec::UnixMs(1_714_564_800_500))
        );
        assert_eq!(
            parse_time("5m"),
            Ok(TimeSpec::Ago(Duration::from_secs(300)))
        );
        assert_eq!(parse_time("now"), Ok(TimeSpec::Ago(Duration::ZERO)));
        // Also accepted by --since.
        assert_eq!(
            parse_since("2024-05-01T12:00:00Z"),
            Ok(TimeSpec::UnixMs(1_714_564_800_000))
        );
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "2024-05-01T12:00:00+2:00",
            "yesterday",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} was accepted");
        }
    }

    fn record(v: Value) -> LogRecord {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lines_show_every_field() {
        let r = record(
            json!({"seq": 1, "time_ms": 1_714_564_800_123u64, "level": "warn",
            "function": "echo", "version": 3, "invocation_id": "01HX", "text": "hot"}),
        );
        assert_eq!(
            log_line(&r),
            "2024-05-01T12:00:00.123Z warn  echo 3 01HX hot\n"
        );
        let r = record(
            json!({"seq": 2, "time_ms": 0, "level": "info", "function": "echo",
            "version": null, "invocation_id": null, "text": "published version 1"}),
        );
        assert_eq!(
            log_line(&r),
            "1970-01-01T00:00:00.000Z info  echo latest - published version 1\n"
        );
        let r = record(
            json!({"seq": 3, "time_ms": 0, "level": "error", "function": null,
            "version": null, "invocation_id": null, "text": "a\nforged line"}),
        );
        assert_eq!(
            log_line(&r),
            "1970-01-01T00:00:00.000Z error - - - a\\nforged line\n"
        );
    }

    #[test]
    fn flags_parse() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["edgefn-agent", "logs"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| match c.command {
                Command::Logs(l) => l,
                other => panic!("{other:?}"),
            })
        };
        let l = parse(&[
            "echo", "--level", "warn", "--since", "10m", "--grep", "x", "--json",
        ])
        .unwrap();
        assert_eq!(l.name.as_deref(), Some("echo"));
        assert!(matches!(l.level, Some(Level::Warn)));
        assert!(l.opts.json);
        assert!(parse(&["--level", "loud"]).is_err());
        assert!(parse(&["--follow", "--until", "5m"]).is_err());
        assert!(parse(&["--since", "10"]).is_err());
    }
}
