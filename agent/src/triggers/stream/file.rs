//! File sources: CSV or JSON lines read once or followed like `tail -F`, each line (CSV: each
//! row after the header) a record. The reader's position (path, file identity, byte offset, line
//! number, CSV header) is committed in the transaction that appends the records read up to it,
//! so a restart neither re-reads nor skips a line.
//!
//! - A line is a record once its `\n` is there (a writer's half-written last line waits); a file
//!   read once takes a last line without `\n` at its end.
//! - CSV: RFC 4180 (`"` quotes, `""` inside quotes, a quoted field may span lines); the first row
//!   is the header; each row becomes a JSON object keyed by it (string values; extra fields get
//!   keys `_4`, `_5`, ... by position from 1). Blank lines are skipped.
//! - Followed files: another file at the path (rotation: different device/inode) or a file
//!   shorter than the position (truncation) is read from its start.
//! - Backpressure: while the mapping has [`MAX_BACKLOG`] records not yet done (paused, or a slow
//!   function), the reader waits, so the log stays bounded.

use super::Hub;
use crate::store::stream::{FilePosition, NewRecord};
use crate::store::{FileFormat, PartitionKey, Store};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use tokio::sync::watch;

/// Records of a mapping not yet done beyond which its file reader waits.
pub const MAX_BACKLOG: i64 = 50_000;

/// Bytes read per step (and records appended per transaction at most, [`MAX_LINES`]).
const CHUNK: usize = 256 << 10;
const MAX_LINES: usize = 1024;

/// How often a followed file (or a missing one) is looked at again.
const POLL: Duration = Duration::from_millis(200);

/// What a file source reads.
#[derive(Clone, Debug)]
pub struct FileSource {
    pub mapping: String,
    pub path: String,
    pub format: FileFormat,
    pub follow: bool,
    pub key: PartitionKey,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Appended this many records (0: only the position moved, a header or blank lines).
    Read(usize),
    /// Nothing new (followed file, or missing file).
    Idle,
    /// A file read once is done.
    Finished,
    /// Too much not yet done.
    Backlogged,
}

/// Runs the reader until `stop` turns true (or a file read once is finished).
pub async fn run(store: Store, hub: Hub, source: FileSource, mut stop: watch::Receiver<bool>) {
    let mut complained = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let (st, src) = (store.clone(), source.clone());
        let step = tokio::task::spawn_blocking(move || step(&st, &src)).await;
        let wait = match step {
            Ok(Ok(Step::Read(n))) => {
                complained = false;
                if n > 0 {
                    hub.appended(&source.mapping);
                }
                continue;
            }
            Ok(Ok(Step::Finished)) => return,
            Ok(Ok(Step::Idle | Step::Backlogged)) => POLL,
            Ok(Err(e)) => {
                if !complained {
                    eprintln!(
                        "edgefn-agent: stream mapping {}: cannot read {}: {e}",
                        source.mapping, source.path
                    );
                    complained = true;
                }
                Duration::from_secs(1)
            }
            Err(_) => return, // shutting down
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// Reads what is new since the stored position and appends it, with the new position.
fn step(store: &Store, src: &FileSource) -> Result<Step, ReadError> {
    let stored = store.stream_file_position(&src.mapping)?;
    let mut pos = match stored {
        Some(p) if p.path == src.path => p,
        // First read, or the mapping now names another file.
        _ => FilePosition {
            path: src.path.clone(),
            ..FilePosition::default()
        },
    };
    if pos.finished && !src.follow {
        return Ok(Step::Finished);
    }
    if store.stream_backlog(&src.mapping)? >= MAX_BACKLOG {
        return Ok(Step::Backlogged);
    }
    let mut file = match std::fs::File::open(&src.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && src.follow => return Ok(Step::Idle),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    let id = format!("{}:{}", meta.dev(), meta.ino());
    if (!pos.file_id.is_empty() && pos.file_id != id) || meta.len() < pos.position {
        // Rotated or truncated: the new content from its start.
        pos = FilePosition {
            path: src.path.clone(),
            file_id: id.clone(),
            ..FilePosition::default()
        };
    }
    pos.file_id = id;
    file.seek(SeekFrom::Start(pos.position))?;
    let mut buf = Vec::with_capacity(CHUNK.min(meta.len().saturating_sub(pos.position) as usize));
    file.by_ref().take(CHUNK as u64).read_to_end(&mut buf)?;
    let at_end = pos.position + buf.len() as u64 >= meta.len();
    let (records, consumed, lines) =
        parse(src, &mut pos.header, &buf, at_end && !src.follow, pos.line);
    if consumed == 0 {
        if at_end && !src.follow {
            pos.finished = true;
            store.stream_append_file(&src.mapping, &[], &pos)?;
            return Ok(Step::Finished);
        }
        if buf.len() >= CHUNK {
            // One record longer than a chunk: refuse it rather than stall forever.
            return Err(std::io::Error::other(format!(
                "line {} is longer than {} KiB",
                pos.line + 1,
                CHUNK >> 10
            ))
            .into());
        }
        return Ok(Step::Idle);
    }
    pos.position += consumed as u64;
    pos.line += lines;
    let n = records.len();
    store.stream_append_file(&src.mapping, &records, &pos)?;
    Ok(Step::Read(n))
}

/// Cuts `buf` into records: returns them, the bytes consumed (whole lines or CSV rows only,
/// plus a last line without `\n` when `take_partial`) and the lines consumed. `header` is read
/// from (and set by) the first CSV row. Stops after [`MAX_LINES`] records.
fn parse(
    src: &FileSource,
    header: &mut Option<String>,
    buf: &[u8],
    take_partial: bool,
    line_before: u64,
) -> (Vec<NewRecord>, usize, u64) {
    let now = crate::runtime::now_ms() as i64;
    let mut records = Vec::new();
    let (mut consumed, mut lines) = (0usize, 0u64);
    while records.len() < MAX_LINES && consumed < buf.len() {
        let rest = &buf[consumed..];
        let Some((len, n_lines)) = next_row(rest, src.format, take_partial) else {
            break;
        };
        let row = trim_eol(&rest[..len]);
        consumed += len;
        let line_no = line_before + lines + 1;
        lines += n_lines;
        if row.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let payload = match src.format {
            FileFormat::Jsonl => row.to_vec(),
            FileFormat::Csv => {
                let text = String::from_utf8_lossy(row);
                match header {
                    None => {
                        *header = Some(text.into_owned());
                        continue;
                    }
                    Some(h) => csv_object(h, &text),
                }
            }
        };
        records.push(NewRecord {
            partition: src.key.extract("", &payload),
            subject: format!("{}:{line_no}", src.path),
            time_ms: now,
            payload,
        });
    }
    (records, consumed, lines)
}

/// The length of the next row of `buf` (with its `\n`) and the lines it spans; `None` when it
/// is not complete yet.
fn next_row(buf: &[u8], format: FileFormat, take_partial: bool) -> Option<(usize, u64)> {
    let mut quoted = false;
    let mut lines = 1;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'"' if format == FileFormat::Csv => quoted = !quoted,
            b'\n' if quoted => lines += 1,
            b'\n' => return Some((i + 1, lines)),
            _ => {}
        }
    }
    (take_partial && !buf.is_empty()).then_some((buf.len(), lines))
}

fn trim_eol(row: &[u8]) -> &[u8] {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.strip_suffix(b"\r").unwrap_or(row)
}

/// The fields of one CSV row (RFC 4180 quoting).
pub fn csv_fields(row: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = row.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// A CSV row as a JSON object keyed by the header.
fn csv_object(header: &str, row: &str) -> Vec<u8> {
    let names = csv_fields(header);
    let mut object = serde_json::Map::new();
    for (i, value) in csv_fields(row).into_iter().enumerate() {
        let key = names
            .get(i)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("_{}", i + 1));
        object.insert(key, serde_json::Value::String(value));
    }
    serde_json::to_vec(&object).expect("JSON of strings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use std::io::Write;

    /// A store with a stream-file mapping (appends need their mapping to exist); its id.
    fn store_with_mapping(path: &std::path::Path) -> (tempfile::TempDir, Store, String) {
        let (dir, store) = temp_store();
        store
            .create_function("f", b"m", "", crate::store::Origin::Local)
            .unwrap();
        let source = crate::store::Source::StreamFile {
            path: path.to_str().unwrap().into(),
            format: FileFormat::Jsonl,
            follow: true,
            partition_key: "json:/dev".parse().unwrap(),
            batch_size: 10,
            batch_window_ms: 0,
        };
        let id = store
            .create_mapping(&crate::store::NewMapping::new("f", source))
            .unwrap()
            .id;
        (dir, store, id)
    }

    fn source(id: &str, path: &std::path::Path, format: FileFormat, follow: bool) -> FileSource {
        FileSource {
            mapping: id.into(),
            path: path.to_str().unwrap().into(),
            format,
            follow,
            key: "json:/dev".parse().unwrap(),
        }
    }

    fn payloads(store: &Store, id: &str, partition: &str) -> Vec<String> {
        store
            .stream_read(id, partition, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload).unwrap())
            .collect()
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields(r#"a,"b,c","d ""q""",,e"#),
            ["a", "b,c", "d \"q\"", "", "e"]
        );
        assert_eq!(
            csv_object("dev,t", "d1,21.5,extra"),
            br#"{"_3":"extra","dev":"d1","t":"21.5"}"#
        );
    }

    #[test]
    fn csv_read_once_with_header_quotes_across_lines_and_a_last_line_without_newline() {
        let files = tempfile::tempdir().unwrap();
        let path = files.path().join("in.csv");
        let (_dir, store, id) = store_with_mapping(&path);
        std::fs::write(&path, "dev,note\r\nd1,\"two\nlines\"\n\nd2,x\nd1,last").unwrap();
        let src = source(&id, &path, FileFormat::Csv, false);
        assert_eq!(step(&store, &src).unwrap(), Step::Read(3));
        assert_eq!(step(&store, &src).unwrap(), Step::Finished);
        assert_eq!(step(&store, &src).unwrap(), Step::Finished);
        assert_eq!(
            payloads(&store, &id, "d1"),
            [
                r#"{"dev":"d1","note":"two\nlines"}"#,
                r#"{"dev":"d1","note":"last"}"#
            ]
        );
        let d2 = store.stream_read(&id, "d2", 0, 10).unwrap();
        assert_eq!(d2[0].subject, format!("{}:5", path.display()));
        // Appending to a file read once does nothing more.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\nd3,y\n")
            .unwrap();
        assert_eq!(step(&store, &src).unwrap(), Step::Finished);
    }

    #[test]
    fn jsonl_followed_waits_for_whole_lines_and_survives_rotation() {
        let files = tempfile::tempdir().unwrap();
        let path = files.path().join("in.jsonl");
        let (_dir, store, id) = store_with_mapping(&path);
        std::fs::write(&path, "{\"dev\":\"a\",\"n\":1}\n{\"dev\":\"a\",\"n\"").unwrap();
        let src = source(&id, &path, FileFormat::Jsonl, true);
        assert_eq!(step(&store, &src).unwrap(), Step::Read(1));
        assert_eq!(step(&store, &src).unwrap(), Step::Idle, "half a line waits");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b":2}\n").unwrap();
        assert_eq!(step(&store, &src).unwrap(), Step::Read(1));
        assert_eq!(step(&store, &src).unwrap(), Step::Idle);
        // A restart reads on from the stored position (the store is all the state there is).
        f.write_all(b"{\"dev\":\"a\",\"n\":3}\n").unwrap();
        assert_eq!(step(&store, &src).unwrap(), Step::Read(1));
        // Rotation: a new file at the path is read from its start.
        std::fs::rename(&path, files.path().join("in.jsonl.1")).unwrap();
        assert_eq!(
            step(&store, &src).unwrap(),
            Step::Idle,
            "missing while followed"
        );
        std::fs::write(&path, "{\"dev\":\"a\",\"n\":4}\n").unwrap();
        assert_eq!(step(&store, &src).unwrap(), Step::Read(1));
        assert_eq!(
            payloads(&store, &id, "a"),
            [
                r#"{"dev":"a","n":1}"#,
                r#"{"dev":"a","n":2}"#,
                r#"{"dev":"a","n":3}"#,
                r#"{"dev":"a","n":4}"#
            ]
        );
    }
}
