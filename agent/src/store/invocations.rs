//! Invocation records: written by [`Store::commit`], read back by id (async invoke status) or
//! listed per function.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::{Result, StoreError};
use super::records::InvocationRecord;

/// Largest `limit` of an invocation listing.
pub const MAX_INVOCATION_LIMIT: u32 = 10_000;

const COLUMNS: &str = "id, function, version, qualifier, source, subject, event_id, attempt,
    event_time_ms, start_ms, duration_us, fuel_used, outcome, error";

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<InvocationRecord> {
    Ok(InvocationRecord {
        id: row.get(0)?,
        function: row.get(1)?,
        version: row.get(2)?,
        qualifier: row.get(3)?,
        source: row.get(4)?,
        subject: row.get(5)?,
        event_id: row.get(6)?,
        attempt: row.get(7)?,
        event_time_ms: row.get(8)?,
        start_ms: row.get(9)?,
        duration_us: row.get(10)?,
        fuel_used: row.get(11)?,
        outcome: row.get(12)?,
        error: row.get(13)?,
    })
}

/// Inserts a record unless its id is already stored; returns whether it was inserted.
pub(crate) fn insert(tx: &Transaction<'_>, r: &InvocationRecord) -> Result<bool> {
    let inserted = tx
        .prepare_cached(&format!(
            "INSERT INTO invocations ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (id) DO NOTHING"
        ))?
        .execute(params![
            r.id,
            r.function,
            r.version,
            r.qualifier,
            r.source,
            r.subject,
            r.event_id,
            r.attempt,
            r.event_time_ms,
            r.start_ms,
            r.duration_us,
            r.fuel_used,
            r.outcome,
            r.error,
        ])?;
    Ok(inserted > 0)
}

/// Which invocation records to list; newest `limit` matching, returned oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InvocationFilter {
    pub function: Option<String>,
    /// Only records with `start_ms >= since_ms`.
    pub since_ms: Option<i64>,
    pub limit: u32,
}

impl Default for InvocationFilter {
    fn default() -> Self {
        Self {
            function: None,
            since_ms: None,
            limit: 100,
        }
    }
}

impl Store {
    /// The record of one invocation.
    pub fn invocation(&self, id: &str) -> Result<InvocationRecord> {
        self.read(|tx| {
            tx.prepare_cached(&format!("SELECT {COLUMNS} FROM invocations WHERE id = ?1"))?
                .query_row([id], record_from_row)
                .optional()?
                .ok_or_else(|| StoreError::UnknownInvocation(id.to_owned()))
        })
    }

    /// Recent invocation records, oldest first.
    pub fn invocations(&self, filter: &InvocationFilter) -> Result<Vec<InvocationRecord>> {
        if filter.limit == 0 || filter.limit > MAX_INVOCATION_LIMIT {
            return Err(StoreError::InvalidQuery(format!(
                "invocation limit must be 1..={MAX_INVOCATION_LIMIT}, not {}",
                filter.limit
            )));
        }
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        if let Some(function) = &filter.function {
            conditions.push("function = ?");
            args.push(Value::Text(function.clone()));
        }
        if let Some(since) = filter.since_ms {
            conditions.push("start_ms >= ?");
            args.push(Value::Integer(since));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        args.push(Value::Integer(i64::from(filter.limit)));
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT seq, {COLUMNS} FROM invocations {where_clause}
                                    ORDER BY seq DESC LIMIT ?)
              ORDER BY seq ASC"
        );
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), record_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::Outcome;
    use crate::store::test_support::{outcome, record, temp_store};

    #[test]
    fn records_round_trip_with_every_field() {
        let (_dir, store) = temp_store();
        let mut r = record("f", "inv-1", Outcome::OutOfFuel);
        r.version = Some(3);
        r.qualifier = "prod".into();
        r.attempt = 2;
        r.error = Some("out of fuel after 1000 units".into());
        r.fuel_used = 1000;
        store.commit(&[outcome(r.clone())]).unwrap();
        assert_eq!(store.invocation("inv-1").unwrap(), r);
        assert!(matches!(
            store.invocation("nope"),
            Err(StoreError::UnknownInvocation(_))
        ));
    }

    #[test]
    fn listing_filters_and_orders() {
        let (_dir, store) = temp_store();
        let batch: Vec<_> = (0..6)
            .map(|i| {
                let mut r = record(
                    if i % 2 == 0 { "a" } else { "b" },
                    &format!("i{i}"),
                    Outcome::Success,
                );
                r.start_ms = 1_000 * i;
                outcome(r)
            })
            .collect();
        store.commit(&batch).unwrap();
        let ids = |f: InvocationFilter| -> Vec<String> {
            store
                .invocations(&f)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(InvocationFilter::default()).len(), 6);
        assert_eq!(
            ids(InvocationFilter {
                function: Some("a".into()),
                ..InvocationFilter::default()
            }),
            ["i0", "i2", "i4"]
        );
        assert_eq!(
            ids(InvocationFilter {
                since_ms: Some(3_000),
                limit: 2,
                ..InvocationFilter::default()
            }),
            ["i4", "i5"]
        );
        assert!(store
            .invocations(&InvocationFilter {
                limit: 0,
                ..InvocationFilter::default()
            })
            .is_err());
    }
}
