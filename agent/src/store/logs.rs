//! Log records: appending lines and querying them with filters.
//!
//! Query results are ordered oldest first ("newest last", like a terminal). Without `after_seq`
//! a query returns the newest `limit` matching lines; with `after_seq` (the cursor of
//! `logs --follow`) it returns the oldest `limit` matching lines after that position, so a
//! follower never skips lines.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::records::{Level, LogLine, LogRecord};

/// Largest `limit` a log query may ask for.
pub const MAX_LOG_LIMIT: u32 = 10_000;

/// Which log lines to return. `LogFilter::default()` returns the newest 100 lines of everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogFilter {
    /// Only lines of this function (agent-level lines have no function and are then excluded).
    pub function: Option<String>,
    /// Only lines at this level or above.
    #[serde(with = "super::records::level_name::option")]
    pub min_level: Option<Level>,
    /// Only lines with `time_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only lines with `time_ms < until_ms`.
    pub until_ms: Option<i64>,
    /// Only lines containing this text, ignoring ASCII case (SQLite's LIKE folds ASCII only).
    pub grep: Option<String>,
    /// Only lines of this invocation.
    pub invocation_id: Option<String>,
    /// Only lines after this position, oldest first (follow mode).
    pub after_seq: Option<i64>,
    /// At most this many lines (1..=[`MAX_LOG_LIMIT`]).
    pub limit: u32,
}

impl Default for LogFilter {
    fn default() -> Self {
        Self {
            function: None,
            min_level: None,
            since_ms: None,
            until_ms: None,
            grep: None,
            invocation_id: None,
            after_seq: None,
            limit: 100,
        }
    }
}

/// Escapes `%`, `_` and the escape character itself for `LIKE ... ESCAPE '\'`.
pub(crate) fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Appends one line in the caller's transaction.
pub(crate) fn insert(tx: &Transaction<'_>, line: &LogLine) -> Result<()> {
    insert_parts(
        tx,
        line.time_ms,
        line.level,
        line.function.as_deref(),
        line.version,
        line.invocation_id.as_deref(),
        &line.text,
    )
}

/// Appends one line from its parts (saves cloning into a [`LogLine`] on the commit path).
pub(crate) fn insert_parts(
    tx: &Transaction<'_>,
    time_ms: i64,
    level: Level,
    function: Option<&str>,
    version: Option<u32>,
    invocation_id: Option<&str>,
    text: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO logs (time_ms, level, function, version, invocation_id, text)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        time_ms,
        level as u8,
        function,
        version,
        invocation_id,
        text
    ])?;
    Ok(())
}

/// Writes a lifecycle line (created, updated, published, ...) about `function`, at info level,
/// in the transaction that makes the change.
pub(crate) fn lifecycle(
    tx: &Transaction<'_>,
    function: &str,
    version: Option<u32>,
    text: &str,
) -> Result<()> {
    insert_parts(
        tx,
        now_ms(),
        Level::Info,
        Some(function),
        version,
        None,
        text,
    )
}

fn log_from_row(row: &Row<'_>) -> rusqlite::Result<LogRecord> {
    Ok(LogRecord {
        seq: row.get(0)?,
        time_ms: row.get(1)?,
        // The CHECK constraint keeps stored levels in 0..=4.
        level: Level::from_i32(row.get(2)?),
        function: row.get(3)?,
        version: row.get(4)?,
        invocation_id: row.get(5)?,
        text: row.get(6)?,
    })
}

impl Store {
    /// Appends log lines that belong to no committed invocation (agent lines, instance
    /// failures, ...), in one transaction.
    pub fn append_logs(&self, lines: &[LogLine]) -> Result<()> {
        self.write(|tx| {
            for line in lines {
                insert(tx, line)?;
            }
            Ok(())
        })
    }

    /// Log lines matching `filter`, oldest first; see the module docs for which ones.
    pub fn logs(&self, filter: &LogFilter) -> Result<Vec<LogRecord>> {
        if filter.limit == 0 || filter.limit > MAX_LOG_LIMIT {
            return Err(StoreError::InvalidQuery(format!(
                "log limit must be 1..={MAX_LOG_LIMIT}, not {}",
                filter.limit
            )));
        }
        let mut conditions: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(function) = &filter.function {
            conditions.push("function = ?");
            args.push(Value::Text(function.clone()));
        }
        if let Some(level) = filter.min_level {
            conditions.push("level >= ?");
            args.push(Value::Integer(level as i64));
        }
        if let Some(since) = filter.since_ms {
            conditions.push("time_ms >= ?");
            args.push(Value::Integer(since));
        }
        if let Some(until) = filter.until_ms {
            conditions.push("time_ms < ?");
            args.push(Value::Integer(until));
        }
        if let Some(grep) = &filter.grep {
            conditions.push("text LIKE ? ESCAPE '\\'");
            args.push(Value::Text(format!("%{}%", like_escape(grep))));
        }
        if let Some(id) = &filter.invocation_id {
            conditions.push("invocation_id = ?");
            args.push(Value::Text(id.clone()));
        }
        if let Some(after) = filter.after_seq {
            conditions.push("seq > ?");
            args.push(Value::Integer(after));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        const COLUMNS: &str = "seq, time_ms, level, function, version, invocation_id, text";
        // Follow mode reads forward from the cursor; otherwise take the newest lines and
        // return them oldest first.
        let sql = if filter.after_seq.is_some() {
            format!("SELECT {COLUMNS} FROM logs {where_clause} ORDER BY seq ASC LIMIT ?")
        } else {
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM logs {where_clause} ORDER BY seq DESC LIMIT ?)
                 ORDER BY seq ASC"
            )
        };
        args.push(Value::Integer(i64::from(filter.limit)));
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), log_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The position of the newest log line (0 when there is none): where `logs --follow` starts
    /// when it should only show new lines.
    pub fn latest_log_seq(&self) -> Result<i64> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT coalesce(max(seq), 0) FROM logs")?
                .query_row([], |r| r.get(0))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    fn line(
        time_ms: i64,
        level: Level,
        function: Option<&str>,
        inv: Option<&str>,
        text: &str,
    ) -> LogLine {
        LogLine {
            time_ms,
            level,
            function: function.map(Into::into),
            version: None,
            invocation_id: inv.map(Into::into),
            text: text.into(),
        }
    }

    fn texts(records: &[LogRecord]) -> Vec<&str> {
        records.iter().map(|r| r.text.as_str()).collect()
    }

    fn seeded() -> (tempfile::TempDir, Store) {
        let (dir, store) = temp_store();
        store
            .append_logs(&[
                line(1_000, Level::Info, Some("a"), Some("i1"), "a starts"),
                line(
                    2_000,
                    Level::Debug,
                    Some("a"),
                    Some("i1"),
                    "a detail 50% done",
                ),
                line(3_000, Level::Error, Some("b"), Some("i2"), "b FAILED"),
                line(4_000, Level::Warn, None, None, "agent: disk low"),
                line(5_000, Level::Info, Some("b"), Some("i3"), "b under_score"),
                line(6_000, Level::Trace, Some("a"), Some("i4"), "a trace"),
            ])
            .unwrap();
        (dir, store)
    }

    fn query(store: &Store, f: impl FnOnce(&mut LogFilter)) -> Vec<String> {
        let mut filter = LogFilter::default();
        f(&mut filter);
        texts(&store.logs(&filter).unwrap())
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn unfiltered_returns_everything_oldest_first() {
        let (_dir, store) = seeded();
        let all = store.logs(&LogFilter::default()).unwrap();
        assert_eq!(all.len(), 6);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(all[3].function, None);
        assert_eq!(all[2].level, Level::Error);
        assert_eq!(store.latest_log_seq().unwrap(), all[5].seq);
    }

    #[test]
    fn filter_by_function() {
        let (_dir, store) = seeded();
        assert_eq!(
            query(&store, |f| f.function = Some("b".into())),
            ["b FAILED", "b under_score"]
        );
        assert!(query(&store, |f| f.function = Some("zzz".into())).is_empty());
    }

    #[test]
    fn filter_by_min_level() {
        let (_dir, store) = seeded();
        assert_eq!(
            query(&store, |f| f.min_level = Some(Level::Warn)),
            ["b FAILED", "agent: disk low"]
        );
    }

    #[test]
    fn filter_by_time_window() {
        let (_dir, store) = seeded();
        assert_eq!(
            query(&store, |f| {
                f.since_ms = Some(2_000);
                f.until_ms = Some(4_000);
            }),
            ["a detail 50% done", "b FAILED"]
        );
    }

    #[test]
    fn grep_is_case_insensitive_and_treats_wildcards_literally() {
        let (_dir, store) = seeded();
        assert_eq!(
            query(&store, |f| f.grep = Some("failed".into())),
            ["b FAILED"]
        );
        assert_eq!(
            query(&store, |f| f.grep = Some("50%".into())),
            ["a detail 50% done"]
        );
        // `_` must not match any character: only the line with a literal underscore.
        assert_eq!(
            query(&store, |f| f.grep = Some("r_s".into())),
            ["b under_score"]
        );
        assert!(query(&store, |f| f.grep = Some("%".into())).len() == 1);
        assert!(query(&store, |f| f.grep = Some("\\".into())).is_empty());
        assert_eq!(like_escape(r"a\b%c_d"), r"a\\b\%c\_d");
    }

    #[test]
    fn filter_by_invocation() {
        let (_dir, store) = seeded();
        assert_eq!(
            query(&store, |f| f.invocation_id = Some("i1".into())),
            ["a starts", "a detail 50% done"]
        );
    }

    #[test]
    fn limit_keeps_the_newest_and_after_seq_follows_forward() {
        let (_dir, store) = seeded();
        assert_eq!(query(&store, |f| f.limit = 2), ["b under_score", "a trace"]);
        let all = store.logs(&LogFilter::default()).unwrap();
        let follow = store
            .logs(&LogFilter {
                after_seq: Some(all[1].seq),
                limit: 2,
                ..LogFilter::default()
            })
            .unwrap();
        assert_eq!(texts(&follow), ["b FAILED", "agent: disk low"]);
        let done = store
            .logs(&LogFilter {
                after_seq: Some(all[5].seq),
                ..LogFilter::default()
            })
            .unwrap();
        assert!(done.is_empty());
    }

    #[test]
    fn filters_combine() {
        let (_dir, store) = seeded();
        assert_eq!(
            query(&store, |f| {
                f.function = Some("a".into());
                f.min_level = Some(Level::Debug);
                f.grep = Some("A ".into());
            }),
            ["a starts", "a detail 50% done"]
        );
    }

    #[test]
    fn filter_and_records_have_the_api_json_shape() {
        let filter: LogFilter =
            serde_json::from_str(r#"{"function": "a", "min_level": "warn"}"#).unwrap();
        assert_eq!(filter.min_level, Some(Level::Warn));
        assert_eq!(filter.limit, LogFilter::default().limit);
        let none: LogFilter = serde_json::from_str(r#"{"min_level": null}"#).unwrap();
        assert_eq!(none.min_level, None);
        assert!(serde_json::from_str::<LogFilter>(r#"{"min_level": "loud"}"#).is_err());

        let (_dir, store) = seeded();
        let record = &store.logs(&LogFilter::default()).unwrap()[0];
        let json = serde_json::to_value(record).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.len(),
            [
                "seq",
                "time_ms",
                "level",
                "function",
                "version",
                "invocation_id",
                "text"
            ]
            .len()
        );
        assert_eq!(json["level"], "info");
    }

    #[test]
    fn bad_limits_are_rejected() {
        let (_dir, store) = seeded();
        for limit in [0, MAX_LOG_LIMIT + 1] {
            let err = store
                .logs(&LogFilter {
                    limit,
                    ..LogFilter::default()
                })
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidQuery(_)));
        }
    }

    #[test]
    fn queries_use_indexes() {
        let (_dir, store) = seeded();
        let plan = |sql: &str| -> String {
            store
                .read(|tx| {
                    let mut stmt = tx.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = stmt.query_map([], |r| r.get::<_, String>(3))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
                })
                .unwrap()
        };
        assert!(
            plan("SELECT * FROM logs WHERE function = 'a' ORDER BY seq DESC LIMIT 5")
                .contains("logs_by_function")
        );
        assert!(
            plan("SELECT * FROM logs WHERE invocation_id = 'x' ORDER BY seq DESC")
                .contains("logs_by_invocation")
        );
        assert!(plan("SELECT seq FROM logs WHERE time_ms < 5 LIMIT 10").contains("logs_by_time"));
    }
}
