//! The durable event queue: events accepted but not yet delivered, in arrival order.
//!
//! Two kinds of target use it:
//! - `mapping:<id>`: the events of a paused mapping (an MQTT message is committed here together
//!   with its dedup mark, then acknowledged), delivered in order on resume;
//! - `function:<name>[:<qualifier>]`: a `function:` destination's invocation, committed with the
//!   invocation that produced it, so a chain survives a crash.
//!
//! A row is deleted ([`super::CommitExtra::dequeue`]) in the transaction that commits its
//! delivery's final outcome: delivered exactly once, even across a crash. Rows hold the event as
//! postcard bytes of [`QueuedEvent`]; `seq` never goes backwards (AUTOINCREMENT).

use std::fmt;

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::names::validate_function_name;
use super::qualifier::Qualifier;
use crate::pool::OwnedEvent;

/// Largest number of rows one peek returns.
pub const MAX_PEEK: u32 = 10_000;

/// Where to answer an MQTT 5 request (its response topic and correlation data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub topic: String,
    pub correlation: Option<Vec<u8>>,
}

/// An event at rest: the ABI event's fields plus what delivery needs later (how many function
/// destinations led to it, and where to send an MQTT 5 response). Stored as postcard bytes, in
/// the queue and in dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// The event id (dedup key; drives the weighted alias split).
    pub id: String,
    /// `mqtt`, `schedule`, `http`, `function`, ...
    pub source: String,
    /// Topic, schedule name, path, the previous function's name, ...
    pub subject: String,
    /// Event time, Unix ms.
    pub time_ms: u64,
    /// `""` when unknown.
    pub content_type: String,
    pub data: Vec<u8>,
    /// 1 on first delivery; in a dead letter, the attempts made.
    pub attempt: u32,
    /// Number of function destinations that led to this event (0 for a source's own event).
    pub depth: u32,
    /// MQTT 5 request/response: where the function's response goes.
    pub reply: Option<Reply>,
}

impl QueuedEvent {
    /// A first-delivery event at depth 0, time now, no content type, no reply.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        subject: impl Into<String>,
        data: Vec<u8>,
    ) -> QueuedEvent {
        QueuedEvent {
            id: id.into(),
            source: source.into(),
            subject: subject.into(),
            time_ms: now_ms().max(0) as u64,
            content_type: String::new(),
            data,
            attempt: 1,
            depth: 0,
            reply: None,
        }
    }

    /// The event of a delivery, at rest: with the number of destinations that led to it and
    /// where an MQTT 5 response goes.
    pub fn from_event(event: &OwnedEvent, depth: u32, reply: Option<Reply>) -> QueuedEvent {
        QueuedEvent {
            id: event.id.clone(),
            source: event.source.clone(),
            subject: event.subject.clone(),
            time_ms: event.time_ms,
            content_type: event.content_type.clone(),
            data: event.data.clone(),
            attempt: event.attempt,
            depth,
            reply,
        }
    }

    /// The event to deliver (`depth` and `reply` stay here).
    pub fn to_event(&self) -> OwnedEvent {
        OwnedEvent {
            id: self.id.clone(),
            source: self.source.clone(),
            subject: self.subject.clone(),
            time_ms: self.time_ms,
            content_type: self.content_type.clone(),
            data: self.data.clone(),
            attempt: self.attempt,
        }
    }

    /// The postcard bytes stored in a BLOB.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("postcard encodes owned plain data")
    }

    pub fn decode(bytes: &[u8]) -> Result<QueuedEvent> {
        postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Corrupt(format!("queued event does not decode: {e}")))
    }
}

/// A parsed queue target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum QueueTarget {
    /// A paused mapping's backlog.
    Mapping(String),
    /// A function destination (`qualifier` defaults to `latest`).
    Function { name: String, qualifier: String },
}

impl QueueTarget {
    /// Parses `mapping:<id>` or `function:<name>[:<qualifier>]`.
    pub fn parse(text: &str) -> Result<QueueTarget> {
        let bad = |reason: String| {
            StoreError::InvalidQuery(format!("bad queue target {text:?}: {reason}"))
        };
        if let Some(id) = text.strip_prefix("mapping:") {
            if id.is_empty() {
                return Err(bad("empty mapping id".into()));
            }
            return Ok(QueueTarget::Mapping(id.to_owned()));
        }
        if let Some(rest) = text.strip_prefix("function:") {
            let (name, qualifier) = rest.split_once(':').unwrap_or((rest, "latest"));
            validate_function_name(name).map_err(|e| bad(e.to_string()))?;
            Qualifier::parse(qualifier).map_err(|e| bad(e.to_string()))?;
            return Ok(QueueTarget::Function {
                name: name.to_owned(),
                qualifier: qualifier.to_owned(),
            });
        }
        Err(bad(
            "expected `mapping:<id>` or `function:<name>[:<qualifier>]`".into(),
        ))
    }
}

/// The canonical text: `mapping:<id>`, `function:<name>:<qualifier>`.
impl fmt::Display for QueueTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueTarget::Mapping(id) => write!(f, "mapping:{id}"),
            QueueTarget::Function { name, qualifier } => write!(f, "function:{name}:{qualifier}"),
        }
    }
}

/// The target of a mapping's backlog: `mapping:<id>`.
pub fn mapping_target(id: &str) -> String {
    format!("mapping:{id}")
}

/// The target of a function destination: `function:<name>:<qualifier>`.
pub fn function_target(name: &str, qualifier: &str) -> String {
    format!("function:{name}:{qualifier}")
}

/// A queued event with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRow {
    pub seq: i64,
    pub target: String,
    pub event: QueuedEvent,
    pub created_ms: i64,
}

fn row_from(row: &Row<'_>) -> rusqlite::Result<(i64, String, Vec<u8>, i64)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode_rows(rows: Vec<(i64, String, Vec<u8>, i64)>) -> Result<Vec<QueuedRow>> {
    rows.into_iter()
        .map(|(seq, target, bytes, created_ms)| {
            Ok(QueuedRow {
                seq,
                target,
                event: QueuedEvent::decode(&bytes)?,
                created_ms,
            })
        })
        .collect()
}

/// Appends an event for `target` in the caller's transaction; returns its seq. The target must
/// parse ([`QueueTarget::parse`]).
pub(crate) fn enqueue(tx: &Transaction<'_>, target: &str, event: &QueuedEvent) -> Result<i64> {
    QueueTarget::parse(target)?;
    tx.prepare_cached("INSERT INTO event_queue (target, event, created_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![target, event.encode(), now_ms()])?;
    Ok(tx.last_insert_rowid())
}

/// Deletes one row (a delivered event); false if it was already gone.
pub(crate) fn dequeue(tx: &Transaction<'_>, seq: i64) -> Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM event_queue WHERE seq = ?1")?
        .execute([seq])?
        > 0)
}

pub(crate) fn count_target(tx: &Transaction<'_>, target: &str) -> Result<u64> {
    Ok(tx
        .prepare_cached("SELECT count(*) FROM event_queue WHERE target = ?1")?
        .query_row([target], |r| r.get(0))?)
}

pub(crate) fn delete_target(tx: &Transaction<'_>, target: &str) -> Result<u64> {
    Ok(tx
        .prepare_cached("DELETE FROM event_queue WHERE target = ?1")?
        .execute([target])? as u64)
}

fn check_limit(limit: u32) -> Result<i64> {
    if limit == 0 || limit > MAX_PEEK {
        return Err(StoreError::InvalidQuery(format!(
            "limit {limit} is outside 1..={MAX_PEEK}"
        )));
    }
    Ok(i64::from(limit))
}

impl Store {
    /// Appends an event for `target` in its own transaction (inside a commit, use
    /// [`super::CommitExtra::enqueue`]); returns its seq.
    pub fn enqueue(&self, target: &str, event: &QueuedEvent) -> Result<i64> {
        self.write(|tx| enqueue(tx, target, event))
    }

    /// The oldest `limit` queued events, in arrival order.
    pub fn queue_peek(&self, limit: u32) -> Result<Vec<QueuedRow>> {
        self.queue_peek_after(0, limit)
    }

    /// The oldest `limit` queued events after position `after_seq`, in arrival order.
    pub fn queue_peek_after(&self, after_seq: i64, limit: u32) -> Result<Vec<QueuedRow>> {
        let limit = check_limit(limit)?;
        let rows = self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, target, event, created_ms FROM event_queue
                  WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after_seq, limit], row_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        decode_rows(rows)
    }

    /// The oldest `limit` events queued for `target` after `after_seq`, in arrival order (a
    /// resumed mapping's backlog).
    pub fn queue_peek_target(
        &self,
        target: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedRow>> {
        let limit = check_limit(limit)?;
        let rows = self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, target, event, created_ms FROM event_queue
                  WHERE target = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![target, after_seq, limit], row_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        decode_rows(rows)
    }

    /// One queued event, if still queued.
    pub fn queue_get(&self, seq: i64) -> Result<Option<QueuedRow>> {
        let row = self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT seq, target, event, created_ms FROM event_queue WHERE seq = ?1",
                )?
                .query_row([seq], row_from)
                .optional()?)
        })?;
        Ok(decode_rows(row.into_iter().collect())?.pop())
    }

    /// Deletes one queued event in its own transaction (inside a commit, use
    /// [`super::CommitExtra::dequeue`]); false if it was already gone.
    pub fn queue_delete(&self, seq: i64) -> Result<bool> {
        self.write(|tx| dequeue(tx, seq))
    }

    /// Number of queued events.
    pub fn queue_count(&self) -> Result<u64> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT count(*) FROM event_queue")?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// Number of events queued for `target`.
    pub fn queue_count_target(&self, target: &str) -> Result<u64> {
        self.read(|tx| count_target(tx, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    fn event(id: &str) -> QueuedEvent {
        QueuedEvent {
            reply: Some(Reply {
                topic: "resp/1".into(),
                correlation: Some(vec![0, 255, 7]),
            }),
            content_type: "application/json".into(),
            depth: 3,
            time_ms: 1_700_000_000_000,
            ..QueuedEvent::new(id, "mqtt", "a/b", id.as_bytes().to_vec())
        }
    }

    #[test]
    fn events_come_back_in_arrival_order_per_target() {
        let (_dir, store) = temp_store();
        let (a, b) = (mapping_target("m-1"), function_target("f", "latest"));
        let mut seqs = Vec::new();
        for i in 0..6 {
            let target = if i % 2 == 0 { &a } else { &b };
            seqs.push(store.enqueue(target, &event(&format!("e{i}"))).unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let all = store.queue_peek(100).unwrap();
        assert_eq!(
            all.iter().map(|r| r.event.id.as_str()).collect::<Vec<_>>(),
            ["e0", "e1", "e2", "e3", "e4", "e5"]
        );
        assert_eq!(all[0].event, event("e0"));
        assert_eq!(all[1].target, "function:f:latest");
        let only_a = store.queue_peek_target(&a, 0, 100).unwrap();
        assert_eq!(
            only_a
                .iter()
                .map(|r| r.event.id.as_str())
                .collect::<Vec<_>>(),
            ["e0", "e2", "e4"]
        );
        let after = store.queue_peek_target(&a, only_a[0].seq, 1).unwrap();
        assert_eq!(after[0].event.id, "e2");
        assert_eq!(store.queue_peek_after(seqs[4], 10).unwrap().len(), 1);
        assert_eq!(store.queue_count_target(&a).unwrap(), 3);
        assert_eq!(store.queue_count().unwrap(), 6);

        assert!(store.queue_delete(seqs[0]).unwrap());
        assert!(!store.queue_delete(seqs[0]).unwrap());
        assert_eq!(store.queue_get(seqs[0]).unwrap(), None);
        assert_eq!(store.queue_get(seqs[1]).unwrap().unwrap().event.id, "e1");
        assert_eq!(store.queue_peek(1).unwrap()[0].event.id, "e1");
        // Seqs are never reused, even after the newest row was deleted.
        store.queue_delete(seqs[5]).unwrap();
        assert!(store.enqueue(&a, &event("e6")).unwrap() > seqs[5]);
    }

    #[test]
    fn converts_to_and_from_the_delivered_event() {
        let queued = event("e");
        let owned = queued.to_event();
        assert_eq!((owned.id.as_str(), owned.data.as_slice()), ("e", &b"e"[..]));
        assert_eq!(owned.content_type, "application/json");
        assert_eq!(
            QueuedEvent::from_event(&owned, queued.depth, queued.reply.clone()),
            queued
        );
    }

    #[test]
    fn targets_and_limits_are_checked() {
        let (_dir, store) = temp_store();
        for bad in [
            "",
            "mapping:",
            "function:",
            "function:a b",
            "function:f:0",
            "x:y",
        ] {
            assert!(
                matches!(
                    store.enqueue(bad, &event("e")),
                    Err(StoreError::InvalidQuery(_))
                ),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            QueueTarget::parse("function:f").unwrap(),
            QueueTarget::Function {
                name: "f".into(),
                qualifier: "latest".into()
            }
        );
        assert_eq!(
            QueueTarget::parse("function:f:prod").unwrap().to_string(),
            "function:f:prod"
        );
        assert_eq!(
            QueueTarget::parse("mapping:m-1").unwrap(),
            QueueTarget::Mapping("m-1".into())
        );
        assert!(store.queue_peek(0).is_err());
        assert!(store.queue_peek(MAX_PEEK + 1).is_err());
        assert_eq!(store.queue_count().unwrap(), 0);
    }

    #[test]
    fn queued_events_survive_reopen() {
        let (dir, store) = temp_store();
        store.enqueue("mapping:m-1", &event("e")).unwrap();
        drop(store);
        let store = Store::open(dir.path().join("store.db")).unwrap();
        assert_eq!(store.queue_peek(10).unwrap()[0].event, event("e"));
    }
}
