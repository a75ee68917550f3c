//! Output of the client verbs: aligned text tables for people, JSON for programs, and the
//! formatting of times, durations and sizes they share.
//!
//! A 60-line table helper instead of a table crate: the verbs need only left/right aligned
//! columns of plain text, and the agent binary runs on small gateways.

use serde_json::Value;
use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Writes `text` to stdout as is and flushes (so `logs --follow` shows lines as they come).
pub fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes raw bytes to stdout (an invocation's response, exactly).
pub fn out_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// `--json`: one pretty-printed JSON document and a newline.
pub fn json_document(v: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(v).expect("a JSON value always serializes");
    out(&format!("{text}\n"))
}

/// `logs --json`: one compact JSON object per line (JSON lines).
pub fn json_line(v: &Value) -> String {
    format!("{v}\n")
}

/// A table of text columns separated by two spaces; the header row is upper case by convention.
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (numbers).
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            self.right[c] = true;
        }
        self
    }

    /// Adds a row; missing cells are blank, control characters are escaped.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        let mut row: Vec<String> = cells
            .iter()
            .map(|c| escape_text(c.as_ref()).into_owned())
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - width(cell));
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `label:  value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$}  {}\n", format!("{k}:"), escape_text(v)))
        .collect()
}

/// Unix ms as RFC 3339 UTC with milliseconds: `2024-05-01T12:00:00.000Z`.
pub fn time_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Unix ms as RFC 3339 UTC to the second (series buckets start on whole minutes).
pub fn time_s(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Seconds as a duration: `3600` → `1h`.
pub fn span(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Microseconds for people: `850us`, `12.30ms`, `1.25s`; `-` when absent.
pub fn micros(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1_000.0 => format!("{us:.0}us"),
        Some(us) if us < 1_000_000.0 => format!("{:.2}ms", us / 1e3),
        Some(us) => format!("{:.2}s", us / 1e6),
    }
}

/// A count or average as a whole number; `-` when absent.
pub fn whole(n: Option<f64>) -> String {
    n.map_or_else(|| "-".into(), |n| format!("{:.0}", n))
}

/// Bytes for people: `812 B`, `12.1 KiB`, `3.4 MiB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

/// A share in 0..=1 as a percentage: `0.1` → `10%`, `1/3` → `33.3%`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{:.0}%", p)
    } else {
        format!("{:.1}%", p)
    }
}

/// The first 12 hex digits of a sha256 (enough to tell versions apart in a table).
pub fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Control characters (other than tab) escaped as `\n`, `\u{1b}`, ...: text from functions
/// must not forge extra log lines or drive the terminal.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let mut t = Table::new(&["NAME", "VERSIONS", "NOTE"]).right(&[1]);
        t.row(&["echo", "3", ""]);
        t.row(&["threshold-alert", "12", "x"]);
        assert_eq!(
            t.render(),
            "NAME             VERSIONS  NOTE\n\
             echo                    3\n\
             threshold-alert        12  x\n"
        );
    }

    #[test]
    fn table_pads_short_rows_and_escapes_cells() {
        let mut t = Table::new(&["A", "B"]);
        t.row(&["a\nb"]);
        assert_eq!(t.render(), "A     B\na\\nb\n");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("name", "echo".into()), ("enabled", "yes".into())]);
        assert_eq!(text, "name:     echo\nenabled:  yes\n");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_ms(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(time_s(1_714_564_800_123), "2024-05-01T12:00:00Z");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(90), "1m 30s");
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(micros(None), "-");
        assert_eq!(micros(Some(850.4)), "850us");
        assert_eq!(micros(Some(12_300.0)), "12.30ms");
        assert_eq!(micros(Some(1_250_000.0)), "1.25s");
        assert_eq!(whole(Some(10.6)), "11");
        assert_eq!(size(812), "812 B");
        assert_eq!(size(12_390), "12.1 KiB");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(percent(0.1), "10%");
        assert_eq!(percent(0.9), "90%");
        assert_eq!(percent(1.0 / 3.0), "33.3%");
        assert_eq!(short_sha("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_sha("abc"), "abc");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_text("plain\ttext"), "plain\ttext");
        assert_eq!(escape_text("a\nb\r\u{1b}[31m"), "a\\nb\\r\\u{1b}[31m");
    }

    #[test]
    fn json_lines_are_compact() {
        let v = serde_json::json!({"seq": 1, "text": "a\nb"});
        assert_eq!(json_line(&v), "{\"seq\":1,\"text\":\"a\\nb\"}\n");
    }
}
