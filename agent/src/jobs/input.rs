//! A job's input file → its tasks, in order. Nothing is submitted unless the whole input parses.
//!
//! - JSON lines: one JSON value per line (blank lines are skipped, `\r\n` is fine). A line holding
//!   a JSON string gives that string's text as the task's payload (plain text); any other value
//!   gives its compact JSON text (the value's own text without the whitespace between tokens:
//!   numbers and key order stay exactly as written).
//! - CSV (RFC 4180, via the `csv` crate: quoted fields, embedded commas and newlines): the first
//!   row is the header; each further row becomes a JSON object keyed by the header, in header
//!   order, every value a string. Every row must have as many fields as the header.
//!
//! Errors name the line (1-based, as an editor counts) and what is wrong with it.

use crate::store::jobs::MAX_TASKS;
use crate::store::TaskInput;
use std::fmt;

/// The input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per line.
    JsonLines,
    /// A header row, then one task per row.
    Csv,
}

impl Format {
    /// `jsonl` (also `ndjson`, `json-lines`) or `csv`.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json-lines" | "jsonlines" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::JsonLines => "jsonl",
            Format::Csv => "csv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input file gives no tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the input is empty: a job needs at least one task")]
    Empty,
    #[error("line {line}: not UTF-8 text")]
    NotUtf8 { line: u64 },
    #[error("line {line}, column {column}: not a JSON value: {reason}")]
    Json {
        line: u64,
        column: usize,
        reason: String,
    },
    #[error("CSV header (line {line}): column {column} has no name")]
    UnnamedColumn { line: u64, column: usize },
    #[error(
        "CSV header (line {line}): column {column} repeats the name {name:?} of column {first}"
    )]
    DuplicateColumn {
        line: u64,
        column: usize,
        first: usize,
        name: String,
    },
    #[error("CSV line {line}: {found} fields, but the header has {expected}")]
    RaggedRow {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error("CSV line {line}: {reason}")]
    Csv { line: u64, reason: String },
    #[error("the CSV input has a header but no rows: a job needs at least one task")]
    NoRows,
    #[error("more than {max} tasks")]
    TooMany { max: usize },
}

/// Parses `bytes` as `format` into tasks, in input order.
pub fn parse(format: Format, bytes: &[u8]) -> Result<Vec<TaskInput>, InputError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(InputError::Empty);
    }
    match format {
        Format::JsonLines => json_lines(bytes),
        Format::Csv => csv_rows(bytes),
    }
}

fn json_lines(bytes: &[u8]) -> Result<Vec<TaskInput>, InputError> {
    let mut tasks = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| InputError::NotUtf8 { line })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        let json_error = |e: serde_json::Error| InputError::Json {
            line,
            // serde_json counts columns in the trimmed text; add back the leading whitespace.
            column: e.column() + (text.len() - text.trim_start().len()),
            reason: strip_position(&e.to_string()),
        };
        let task = if trimmed.starts_with('"') {
            let s: String = serde_json::from_str(trimmed).map_err(json_error)?;
            TaskInput {
                payload: s.into_bytes(),
                json: false,
            }
        } else {
            serde_json::from_str::<serde::de::IgnoredAny>(trimmed).map_err(json_error)?;
            TaskInput {
                payload: compact_json(trimmed).into_bytes(),
                json: true,
            }
        };
        if tasks.len() == MAX_TASKS {
            return Err(InputError::TooMany { max: MAX_TASKS });
        }
        tasks.push(task);
    }
    Ok(tasks)
}

/// serde_json's message without its ` at line L column C` (relative to the line, so misleading).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Valid JSON text without the whitespace between tokens (strings kept byte for byte).
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

fn csv_rows(bytes: &[u8]) -> Result<Vec<TaskInput>, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header = reader.headers().map_err(|e| csv_error(e, 1))?;
    let header_line = header.position().map_or(1, |p| p.line());
    let headers = header.iter().map(str::to_string).collect::<Vec<_>>();
    for (i, name) in headers.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(InputError::UnnamedColumn {
                line: header_line,
                column: i + 1,
            });
        }
        if let Some(first) = headers[..i].iter().position(|h| h == name) {
            return Err(InputError::DuplicateColumn {
                line: header_line,
                column: i + 1,
                first: first + 1,
                name: name.clone(),
            });
        }
    }
    // The keys, encoded once.
    let keys: Vec<String> = headers
        .iter()
        .map(|h| serde_json::to_string(h).expect("a string always serializes"))
        .collect();
    let mut tasks = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(e, line)),
        }
        if tasks.len() == MAX_TASKS {
            return Err(InputError::TooMany { max: MAX_TASKS });
        }
        let mut json = String::from("{");
        for (i, (key, value)) in keys.iter().zip(record.iter()).enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(key);
            json.push(':');
            json.push_str(&serde_json::to_string(value).expect("a string always serializes"));
        }
        json.push('}');
        tasks.push(TaskInput {
            payload: json.into_bytes(),
            json: true,
        });
    }
    if tasks.is_empty() {
        return Err(InputError::NoRows);
    }
    Ok(tasks)
}

/// A csv error as an [`InputError`] naming the line (`fallback` when it has no position).
fn csv_error(e: csv::Error, fallback: u64) -> InputError {
    let line = e.position().map_or(fallback, |p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => InputError::RaggedRow {
            line,
            expected: *expected_len,
            found: *len,
        },
        csv::ErrorKind::Utf8 { .. } => InputError::NotUtf8 { line },
        _ => InputError::Csv {
            line,
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(format: Format, text: &str) -> Vec<(String, bool)> {
        parse(format, text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|t| (String::from_utf8(t.payload).unwrap(), t.json))
            .collect()
    }

    #[test]
    fn json_lines_give_string_text_or_compact_json() {
        let text = "\"plain text\"\n{ \"b\": 1,  \"a\": [1, 2.50, \"x y\"] }\r\n\n  42  \n\"with \\\"quotes\\\"\"\n[ ]";
        assert_eq!(
            payloads(Format::JsonLines, text),
            [
                ("plain text".to_string(), false),
                (r#"{"b":1,"a":[1,2.50,"x y"]}"#.to_string(), true),
                ("42".to_string(), true),
                ("with \"quotes\"".to_string(), false),
                ("[]".to_string(), true),
            ]
        );
    }

    #[test]
    fn bad_json_lines_name_the_line_and_column() {
        let e = parse(Format::JsonLines, b"1\n{\"a\": }\n3").unwrap_err();
        assert!(
            matches!(
                e,
                InputError::Json {
                    line: 2,
                    column: 7,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "line 2, column 7: not a JSON value: expected value"
        );
        let e = parse(Format::JsonLines, b"1\n2 3\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2,"), "{e}");
        assert!(e.to_string().contains("trailing characters"), "{e}");
        let e = parse(Format::JsonLines, b"1\n\xff\n").unwrap_err();
        assert_eq!(e, InputError::NotUtf8 { line: 2 });
        assert_eq!(
            parse(Format::JsonLines, b" \n\n").unwrap_err(),
            InputError::Empty
        );
        assert_eq!(parse(Format::Csv, b"").unwrap_err(), InputError::Empty);
    }

    #[test]
    fn csv_rows_become_objects_keyed_by_the_header() {
        let text = "\u{feff}id,name,note\n1,Ada,\"likes, commas\"\n2,\"Bob \"\"B\"\"\",\"two\nlines\"\r\n\n3,é,\n";
        assert_eq!(
            payloads(Format::Csv, text),
            [
                (
                    r#"{"id":"1","name":"Ada","note":"likes, commas"}"#.into(),
                    true
                ),
                (
                    r#"{"id":"2","name":"Bob \"B\"","note":"two\nlines"}"#.into(),
                    true
                ),
                (r#"{"id":"3","name":"é","note":""}"#.into(), true),
            ]
        );
    }

    #[test]
    fn bad_csv_names_the_line_or_column() {
        let e = parse(Format::Csv, b"a,b\n1,2\n3\n4,5\n").unwrap_err();
        assert_eq!(
            e,
            InputError::RaggedRow {
                line: 3,
                expected: 2,
                found: 1
            }
        );
        assert_eq!(e.to_string(), "CSV line 3: 1 fields, but the header has 2");
        let e = parse(Format::Csv, b"a,b\n1,2,3\n").unwrap_err();
        assert!(
            matches!(
                e,
                InputError::RaggedRow {
                    line: 2,
                    found: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse(Format::Csv, b"a,,c\n1,2,3\n").unwrap_err();
        assert_eq!(e, InputError::UnnamedColumn { line: 1, column: 2 });
        let e = parse(Format::Csv, b"a,b,a\n1,2,3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CSV header (line 1): column 3 repeats the name \"a\" of column 1"
        );
        assert_eq!(
            parse(Format::Csv, b"a,b\n").unwrap_err(),
            InputError::NoRows
        );
        let e = parse(Format::Csv, b"a\nok\n\xff\n").unwrap_err();
        assert_eq!(e, InputError::NotUtf8 { line: 3 });
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(Format::parse("JSONL"), Some(Format::JsonLines));
        assert_eq!(Format::parse("ndjson"), Some(Format::JsonLines));
        assert_eq!(Format::parse("csv"), Some(Format::Csv));
        assert_eq!(Format::parse("xml"), None);
    }

    #[test]
    fn compact_json_keeps_strings_exactly() {
        assert_eq!(
            compact_json("{ \"a b\" : \"c\\\\\" , \"d\":1 }"),
            "{\"a b\":\"c\\\\\",\"d\":1}"
        );
    }
}
