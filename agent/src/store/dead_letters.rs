//! Dead letters: events whose delivery failed for good (every attempt failed and the mapping has
//! no on-failure destination, the function is disabled or gone, a chain got too deep, ...).
//!
//! A dead letter is written in the transaction of the event's final outcome
//! ([`super::CommitExtra::dead_letter`]), or on its own with [`Store::commit_extra`] when the
//! event never ran. It keeps the whole event (postcard [`QueuedEvent`]), so it can be inspected
//! and replayed. Dead letters age out with the records ([`super::Retention::max_age`]) and are
//! bounded in number ([`super::Retention::max_dead_letter_rows`]); drops are counted.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{next_ulid, now_ms, Store};
use super::error::{Result, StoreError};
use super::queue::QueuedEvent;

/// Largest `limit` of a dead-letter query.
pub const MAX_DEAD_LETTER_LIMIT: u32 = 10_000;

/// A failed event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// A ULID (time-ordered).
    pub id: String,
    /// The mapping it came through (`None` for a function destination's event).
    pub mapping_id: Option<String>,
    pub function: String,
    pub qualifier: String,
    pub event: QueuedEvent,
    /// Attempts made (0 when it never ran).
    pub attempts: u32,
    /// How the last attempt ended (an invocation outcome such as `error` or `timeout`), or why
    /// the event could not run (`disabled`, `rejected`, `depth_exceeded`, ...).
    pub outcome: String,
    pub error: String,
    pub created_ms: i64,
}

impl DeadLetter {
    /// A dead letter with a fresh id, created now.
    pub fn new(
        mapping_id: Option<String>,
        function: &str,
        qualifier: &str,
        event: QueuedEvent,
        attempts: u32,
        outcome: &str,
        error: &str,
    ) -> DeadLetter {
        DeadLetter {
            id: next_ulid().to_string(),
            mapping_id,
            function: function.to_owned(),
            qualifier: qualifier.to_owned(),
            event,
            attempts,
            outcome: outcome.to_owned(),
            error: error.to_owned(),
            created_ms: now_ms(),
        }
    }
}

/// Which dead letters to list: the newest `limit`, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterFilter {
    /// Only those of this mapping id.
    pub mapping_id: Option<String>,
    /// Only those of this function.
    pub function: Option<String>,
    /// 1..=[`MAX_DEAD_LETTER_LIMIT`].
    pub limit: u32,
}

impl Default for DeadLetterFilter {
    fn default() -> Self {
        Self {
            mapping_id: None,
            function: None,
            limit: 100,
        }
    }
}

/// Writes a dead letter in the caller's transaction; an id already stored is left alone (a
/// retried commit). Returns whether it was written.
pub(crate) fn insert(tx: &Transaction<'_>, d: &DeadLetter) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO dead_letters (id, mapping_id, function, qualifier, event, attempts,
                                       outcome, error, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            d.id,
            d.mapping_id,
            d.function,
            d.qualifier,
            d.event.encode(),
            d.attempts,
            d.outcome,
            d.error,
            d.created_ms
        ])?
        > 0)
}

const COLUMNS: &str =
    "id, mapping_id, function, qualifier, event, attempts, outcome, error, created_ms";

type RawRow = (DeadLetter, Vec<u8>);

fn row_from(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        DeadLetter {
            id: row.get(0)?,
            mapping_id: row.get(1)?,
            function: row.get(2)?,
            qualifier: row.get(3)?,
            event: QueuedEvent::new("", "", "", Vec::new()),
            attempts: row.get(5)?,
            outcome: row.get(6)?,
            error: row.get(7)?,
            created_ms: row.get(8)?,
        },
        row.get(4)?,
    ))
}

fn decode((mut d, bytes): RawRow) -> Result<DeadLetter> {
    d.event = QueuedEvent::decode(&bytes)?;
    Ok(d)
}

impl Store {
    /// The newest `filter.limit` matching dead letters, oldest first.
    pub fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        if filter.limit == 0 || filter.limit > MAX_DEAD_LETTER_LIMIT {
            return Err(StoreError::InvalidQuery(format!(
                "limit {} is outside 1..={MAX_DEAD_LETTER_LIMIT}",
                filter.limit
            )));
        }
        let rows = self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT * FROM (
                     SELECT {COLUMNS} FROM dead_letters
                      WHERE (?1 IS NULL OR mapping_id = ?1) AND (?2 IS NULL OR function = ?2)
                      ORDER BY created_ms DESC, id DESC LIMIT ?3)
                 ORDER BY created_ms, id"
            ))?;
            let rows = stmt.query_map(
                params![filter.mapping_id, filter.function, filter.limit],
                row_from,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        rows.into_iter().map(decode).collect()
    }

    /// One dead letter, or [`StoreError::UnknownDeadLetter`].
    pub fn dead_letter(&self, id: &str) -> Result<DeadLetter> {
        let row = self.read(|tx| {
            Ok(tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"))?
                .query_row([id], row_from)
                .optional()?)
        })?;
        decode(row.ok_or_else(|| StoreError::UnknownDeadLetter(id.to_owned()))?)
    }

    /// Deletes one dead letter (e.g. after replaying it), or [`StoreError::UnknownDeadLetter`].
    pub fn delete_dead_letter(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                .execute([id])?;
            if n == 0 {
                return Err(StoreError::UnknownDeadLetter(id.to_owned()));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::CommitExtra;

    fn letter(mapping: Option<&str>, function: &str, created_ms: i64) -> DeadLetter {
        let mut event = QueuedEvent::new("e", "mqtt", "in/1", b"\x00\xffpayload".to_vec());
        event.attempt = 3;
        DeadLetter {
            created_ms,
            ..DeadLetter::new(
                mapping.map(String::from),
                function,
                "latest",
                event,
                3,
                "error",
                "boom",
            )
        }
    }

    fn put(store: &Store, d: &DeadLetter) {
        store
            .commit_extra(&CommitExtra {
                dead_letter: Some(d.clone()),
                ..CommitExtra::default()
            })
            .unwrap();
    }

    #[test]
    fn list_get_delete() {
        let (_dir, store) = temp_store();
        let a1 = letter(Some("m-a"), "f", 1_000);
        let b1 = letter(Some("m-b"), "g", 2_000);
        let a2 = letter(Some("m-a"), "f", 3_000);
        let chain = letter(None, "h", 4_000);
        for d in [&a1, &b1, &a2, &chain] {
            put(&store, d);
        }
        put(&store, &a1); // a retried commit does not duplicate it
        let all = store.dead_letters(&DeadLetterFilter::default()).unwrap();
        assert_eq!(all, [a1.clone(), b1.clone(), a2.clone(), chain.clone()]);
        let of_a = store
            .dead_letters(&DeadLetterFilter {
                mapping_id: Some("m-a".into()),
                ..DeadLetterFilter::default()
            })
            .unwrap();
        assert_eq!(of_a, [a1.clone(), a2.clone()]);
        let newest = store
            .dead_letters(&DeadLetterFilter {
                limit: 2,
                ..DeadLetterFilter::default()
            })
            .unwrap();
        assert_eq!(newest, [a2.clone(), chain.clone()]);
        let of_g = store
            .dead_letters(&DeadLetterFilter {
                function: Some("g".into()),
                ..DeadLetterFilter::default()
            })
            .unwrap();
        assert_eq!(of_g, std::slice::from_ref(&b1));

        assert_eq!(store.dead_letter(&b1.id).unwrap(), b1);
        assert_eq!(
            store.dead_letter(&b1.id).unwrap().event.data,
            b"\x00\xffpayload"
        );
        store.delete_dead_letter(&b1.id).unwrap();
        assert!(matches!(
            store.dead_letter(&b1.id),
            Err(StoreError::UnknownDeadLetter(_))
        ));
        assert!(matches!(
            store.delete_dead_letter(&b1.id),
            Err(StoreError::UnknownDeadLetter(_))
        ));
        assert!(store
            .dead_letters(&DeadLetterFilter {
                limit: 0,
                ..DeadLetterFilter::default()
            })
            .is_err());
    }
}
