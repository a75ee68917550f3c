//! The durable stream log of stream mappings (V6; docs/triggers.md, "Streams").
//!
//! A stream mapping's records are appended here before their source is acknowledged (the MQTT
//! message's PUBACK, the file position), numbered per partition from 1. Each partition has a
//! checkpoint: the offset of the last record whose batch's outcome is committed. The checkpoint
//! moves in the same transaction as that invocation's record and kv writes
//! ([`super::CommitExtra::stream_checkpoint`]), and that transaction also deletes the records up
//! to it, so the log only holds what is still to do (bounded disk) and a batch's effects are
//! committed exactly once.
//!
//! - `stream_partitions (mapping, partition)`: `appended` (the last offset given out) and
//!   `checkpoint`; lag = appended - checkpoint. Rows stay after the log is drained, so offsets
//!   are never reused within a partition.
//! - `stream_log (mapping, partition, offset)`: subject (MQTT topic or `FILE:LINE`), append time,
//!   payload bytes.
//! - `stream_files (mapping)`: where a file source's reader is (path, file identity, byte
//!   position, line number, CSV header), written in the transaction that appends the records read
//!   up to there, so a restart neither re-reads nor skips a line.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::dedup;
use super::error::Result;

/// A record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// Partition key (empty: the default partition of records without a key).
    pub partition: String,
    /// MQTT topic, or `FILE:LINE` for file sources.
    pub subject: String,
    /// When it was appended (Unix ms): the batch window and the lag's age count from here.
    pub time_ms: i64,
    pub payload: Vec<u8>,
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub partition: String,
    /// Position in its partition, from 1, without gaps.
    pub offset: i64,
    pub subject: String,
    pub time_ms: i64,
    pub payload: Vec<u8>,
}

/// One MQTT message's records for one mapping ([`Store::stream_append`]).
#[derive(Clone, Debug)]
pub struct Append {
    pub mapping: String,
    pub records: Vec<NewRecord>,
    /// `(session, packet_id, dup)` of a QoS 1/2 message: a redelivery (`dup`) whose mark is
    /// there was appended already and is skipped; otherwise the mark is written with the records.
    pub mark: Option<(String, u16, bool)>,
}

/// Where a file source's reader is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// The path read (a mapping changed to another path starts that one from the beginning).
    pub path: String,
    /// `DEV:INODE` of the file read: another identity at the path means it was rotated.
    pub file_id: String,
    /// Byte offset of the next line to read.
    pub position: u64,
    /// Lines read so far (the next line's number is `line + 1`).
    pub line: u64,
    /// A CSV file's header row, once read.
    pub header: Option<String>,
    /// A file read once that was read to its end.
    pub finished: bool,
}

/// The checkpoint a committed batch moves ([`super::CommitExtra::stream_checkpoint`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCheckpoint {
    pub mapping: String,
    pub partition: String,
    /// The last offset done; records up to it are deleted from the log.
    pub offset: i64,
}

/// A partition with records not yet done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub partition: String,
    pub checkpoint: i64,
    pub appended: i64,
}

/// Lag of one partition (`stats`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    pub mapping: String,
    /// The mapping's name (its id unless named).
    pub name: String,
    pub function: String,
    pub partition: String,
    /// Last offset appended.
    pub appended: i64,
    /// Last offset done.
    pub checkpoint: i64,
    /// Records appended but not yet done.
    pub lag: i64,
    /// Age of the oldest record not yet done, in ms (`None` without lag).
    pub oldest_age_ms: Option<i64>,
}

/// Moves a checkpoint forward (never back) and trims the log behind it, in the caller's
/// transaction.
pub(crate) fn checkpoint(tx: &Transaction<'_>, c: &StreamCheckpoint) -> Result<()> {
    tx.prepare_cached(
        "UPDATE stream_partitions SET checkpoint = max(checkpoint, ?3)
          WHERE mapping = ?1 AND partition = ?2",
    )?
    .execute(params![c.mapping, c.partition, c.offset])?;
    tx.prepare_cached(
        "DELETE FROM stream_log WHERE mapping = ?1 AND partition = ?2 AND offset <= ?3",
    )?
    .execute(params![c.mapping, c.partition, c.offset])?;
    Ok(())
}

/// Deletes everything of a mapping's stream (the mapping is being deleted).
pub(crate) fn delete_mapping(tx: &Transaction<'_>, mapping: &str) -> Result<u64> {
    let dropped = tx
        .prepare_cached("DELETE FROM stream_log WHERE mapping = ?1")?
        .execute([mapping])?;
    tx.prepare_cached("DELETE FROM stream_partitions WHERE mapping = ?1")?
        .execute([mapping])?;
    tx.prepare_cached("DELETE FROM stream_files WHERE mapping = ?1")?
        .execute([mapping])?;
    Ok(dropped as u64)
}

/// Whether the mapping still exists. An append that reaches the store after its mapping was
/// deleted (an MQTT message handed to the appender just before the delete, a file reader's last
/// read) must not write: nothing would ever consume or delete those rows.
fn mapping_exists(tx: &Transaction<'_>, mapping: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM mappings WHERE id = ?1")?
        .exists([mapping])?)
}

fn append_records(tx: &Transaction<'_>, mapping: &str, records: &[NewRecord]) -> Result<()> {
    for r in records {
        let offset: i64 = tx
            .prepare_cached(
                "INSERT INTO stream_partitions (mapping, partition, appended, checkpoint)
                 VALUES (?1, ?2, 1, 0)
                 ON CONFLICT (mapping, partition) DO UPDATE SET appended = appended + 1
                 RETURNING appended",
            )?
            .query_row(params![mapping, r.partition], |row| row.get(0))?;
        tx.prepare_cached(
            "INSERT INTO stream_log (mapping, partition, offset, subject, time_ms, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            mapping,
            r.partition,
            offset,
            r.subject,
            r.time_ms,
            r.payload
        ])?;
    }
    Ok(())
}

fn write_position(tx: &Transaction<'_>, mapping: &str, p: &FilePosition) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO stream_files (mapping, path, file_id, position, line, header, finished)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (mapping) DO UPDATE SET path = excluded.path, file_id = excluded.file_id,
             position = excluded.position, line = excluded.line, header = excluded.header,
             finished = excluded.finished",
    )?
    .execute(params![
        mapping,
        p.path,
        p.file_id,
        p.position as i64,
        p.line as i64,
        p.header,
        p.finished
    ])?;
    Ok(())
}

impl Store {
    /// Appends MQTT messages' records in one transaction, with their dedup marks. Returns, per
    /// append, whether it was written (`false`: a redelivery already appended, or the mapping
    /// was deleted meanwhile: the message is acknowledged and dropped).
    pub fn stream_append(&self, appends: &[Append]) -> Result<Vec<bool>> {
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let now = now_ms();
            let mut written = Vec::with_capacity(appends.len());
            let mut exists: Vec<(&str, bool)> = Vec::new();
            for a in appends {
                let live = match exists.iter().find(|(m, _)| *m == a.mapping) {
                    Some((_, live)) => *live,
                    None => {
                        let live = mapping_exists(tx, &a.mapping)?;
                        exists.push((&a.mapping, live));
                        live
                    }
                };
                if !live {
                    written.push(false);
                    continue;
                }
                if let Some((session, pkid, dup)) = &a.mark {
                    let marked = *dup && dedup::is_marked(tx, session, *pkid)?;
                    if marked {
                        written.push(false);
                        continue;
                    }
                    dedup::mark(tx, session, *pkid, now)?;
                }
                append_records(tx, &a.mapping, &a.records)?;
                written.push(true);
            }
            Ok(written)
        })
    }

    /// Appends records read from a file and the reader's new position, in one transaction
    /// (nothing, once the mapping is deleted).
    pub fn stream_append_file(
        &self,
        mapping: &str,
        records: &[NewRecord],
        position: &FilePosition,
    ) -> Result<()> {
        self.write(|tx| {
            if !mapping_exists(tx, mapping)? {
                return Ok(());
            }
            append_records(tx, mapping, records)?;
            write_position(tx, mapping, position)
        })
    }

    /// Where the file source of `mapping` stopped reading (`None` before its first read).
    pub fn stream_file_position(&self, mapping: &str) -> Result<Option<FilePosition>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT path, file_id, position, line, header, finished
                       FROM stream_files WHERE mapping = ?1",
                )?
                .query_row([mapping], |r| {
                    Ok(FilePosition {
                        path: r.get(0)?,
                        file_id: r.get(1)?,
                        position: r.get::<_, i64>(2)? as u64,
                        line: r.get::<_, i64>(3)? as u64,
                        header: r.get(4)?,
                        finished: r.get(5)?,
                    })
                })
                .optional()?)
        })
    }

    /// The partitions of `mapping` with records not yet done.
    pub fn stream_pending(&self, mapping: &str) -> Result<Vec<Pending>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT partition, checkpoint, appended FROM stream_partitions
                  WHERE mapping = ?1 AND appended > checkpoint ORDER BY partition",
            )?;
            let rows = stmt.query_map([mapping], |r| {
                Ok(Pending {
                    partition: r.get(0)?,
                    checkpoint: r.get(1)?,
                    appended: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Records not yet done in all partitions of `mapping` (a file reader's backpressure).
    pub fn stream_backlog(&self, mapping: &str) -> Result<i64> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT coalesce(sum(appended - checkpoint), 0) FROM stream_partitions
                      WHERE mapping = ?1",
                )?
                .query_row([mapping], |r| r.get(0))?)
        })
    }

    /// The checkpoint of one partition (0 before anything was done).
    pub fn stream_checkpoint(&self, mapping: &str, partition: &str) -> Result<i64> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT checkpoint FROM stream_partitions WHERE mapping = ?1 AND partition = ?2",
                )?
                .query_row(params![mapping, partition], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Up to `limit` records of a partition after offset `after`, in order.
    pub fn stream_read(
        &self,
        mapping: &str,
        partition: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StreamRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT offset, subject, time_ms, payload FROM stream_log
                  WHERE mapping = ?1 AND partition = ?2 AND offset > ?3
                  ORDER BY offset LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![mapping, partition, after, limit as i64], |r| {
                Ok(StreamRecord {
                    partition: partition.to_owned(),
                    offset: r.get(0)?,
                    subject: r.get(1)?,
                    time_ms: r.get(2)?,
                    payload: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Lag per partition of the stream mappings (of one function if given), by mapping and
    /// partition. Partitions without lag are included (lag 0) so a drained stream shows too.
    pub fn stream_lag(&self, function: Option<&str>) -> Result<Vec<PartitionLag>> {
        self.read(|tx| {
            let now = now_ms();
            let mut stmt = tx.prepare_cached(
                "SELECT p.mapping, m.name, m.function, p.partition, p.appended, p.checkpoint,
                        (SELECT l.time_ms FROM stream_log l
                          WHERE l.mapping = p.mapping AND l.partition = p.partition
                            AND l.offset > p.checkpoint ORDER BY l.offset LIMIT 1)
                   FROM stream_partitions p JOIN mappings m ON m.id = p.mapping
                  WHERE ?1 IS NULL OR m.function = ?1
                  ORDER BY p.mapping, p.partition",
            )?;
            let rows = stmt.query_map([function], |r| {
                let (appended, checkpoint): (i64, i64) = (r.get(4)?, r.get(5)?);
                let oldest: Option<i64> = r.get(6)?;
                Ok(PartitionLag {
                    mapping: r.get(0)?,
                    name: r.get(1)?,
                    function: r.get(2)?,
                    partition: r.get(3)?,
                    appended,
                    checkpoint,
                    lag: appended - checkpoint,
                    oldest_age_ms: oldest.map(|t| (now - t).max(0)),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::CommitExtra;

    fn rec(partition: &str, payload: &str) -> NewRecord {
        NewRecord {
            partition: partition.into(),
            subject: format!("t/{partition}"),
            time_ms: 1_000,
            payload: payload.as_bytes().to_vec(),
        }
    }

    /// A store with function `f` and stream mappings named `names`; their ids, in order.
    fn store_with(names: &[&str]) -> (tempfile::TempDir, Store, Vec<String>) {
        let (dir, store) = temp_store();
        store
            .create_function("f", b"m", "", crate::store::Origin::Local)
            .unwrap();
        let ids = names
            .iter()
            .map(|n| {
                let mut new = crate::store::NewMapping::new(
                    "f",
                    crate::store::Source::StreamMqtt {
                        filter: format!("{n}/+"),
                        partition_key: crate::triggers::stream::PartitionKey::whole_topic(),
                        batch_size: 10,
                        batch_window_ms: 0,
                    },
                );
                new.name = Some((*n).into());
                store.create_mapping(&new).unwrap().id
            })
            .collect();
        (dir, store, ids)
    }

    fn append(store: &Store, mapping: &str, recs: Vec<NewRecord>) {
        let written = store
            .stream_append(&[Append {
                mapping: mapping.into(),
                records: recs,
                mark: None,
            }])
            .unwrap();
        assert_eq!(written, [true]);
    }

    #[test]
    fn offsets_per_partition_checkpoint_and_trim() {
        let (_dir, store, ids) = store_with(&["one"]);
        let m1 = ids[0].as_str();
        append(
            &store,
            m1,
            vec![rec("a", "1"), rec("b", "1"), rec("a", "2")],
        );
        append(&store, m1, vec![rec("a", "3")]);
        let a = store.stream_read(m1, "a", 0, 10).unwrap();
        assert_eq!(
            a.iter()
                .map(|r| (r.offset, r.payload.clone()))
                .collect::<Vec<_>>(),
            [(1, b"1".to_vec()), (2, b"2".to_vec()), (3, b"3".to_vec())]
        );
        assert_eq!(store.stream_read(m1, "a", 1, 1).unwrap()[0].offset, 2);
        let pending = store.stream_pending(m1).unwrap();
        assert_eq!(
            pending,
            [
                Pending {
                    partition: "a".into(),
                    checkpoint: 0,
                    appended: 3
                },
                Pending {
                    partition: "b".into(),
                    checkpoint: 0,
                    appended: 1
                }
            ]
        );
        store
            .commit_extra(&CommitExtra {
                stream_checkpoint: Some(StreamCheckpoint {
                    mapping: m1.into(),
                    partition: "a".into(),
                    offset: 2,
                }),
                ..CommitExtra::default()
            })
            .unwrap();
        // Trimmed behind the checkpoint; the checkpoint never moves back.
        assert_eq!(store.stream_read(m1, "a", 0, 10).unwrap().len(), 1);
        assert_eq!(store.stream_checkpoint(m1, "a").unwrap(), 2);
        store
            .commit_extra(&CommitExtra {
                stream_checkpoint: Some(StreamCheckpoint {
                    mapping: m1.into(),
                    partition: "a".into(),
                    offset: 1,
                }),
                ..CommitExtra::default()
            })
            .unwrap();
        assert_eq!(store.stream_checkpoint(m1, "a").unwrap(), 2);
        assert_eq!(store.stream_backlog(m1).unwrap(), 2);
        // Offsets go on after the log drained.
        store
            .commit_extra(&CommitExtra {
                stream_checkpoint: Some(StreamCheckpoint {
                    mapping: m1.into(),
                    partition: "a".into(),
                    offset: 3,
                }),
                ..CommitExtra::default()
            })
            .unwrap();
        append(&store, m1, vec![rec("a", "4")]);
        assert_eq!(store.stream_read(m1, "a", 3, 10).unwrap()[0].offset, 4);
    }

    #[test]
    fn a_marked_redelivery_is_not_appended_twice() {
        let (_dir, store, ids) = store_with(&["one"]);
        let m1 = ids[0].as_str();
        let first = Append {
            mapping: m1.into(),
            records: vec![rec("a", "x")],
            mark: Some((format!("s|{m1}"), 7, false)),
        };
        let redelivery = Append {
            mark: Some((format!("s|{m1}"), 7, true)),
            ..first.clone()
        };
        assert_eq!(
            store
                .stream_append(&[first.clone(), redelivery.clone()])
                .unwrap(),
            [true, false]
        );
        // A new message (dup = false) reusing the packet id is appended.
        assert_eq!(store.stream_append(&[first]).unwrap(), [true]);
        assert_eq!(store.stream_read(m1, "a", 0, 10).unwrap().len(), 2);
    }

    #[test]
    fn appends_after_the_mapping_was_deleted_leave_nothing_behind() {
        let (_dir, store, ids) = store_with(&["gone", "kept"]);
        let (gone, kept) = (ids[0].as_str(), ids[1].as_str());
        append(&store, gone, vec![rec("a", "1")]);
        store.delete_mapping(gone).unwrap();
        // A message handed to the appender before the delete commits after it: skipped (and
        // acknowledged), while the same group's appends to a live mapping are written.
        let late = |mapping: &str, pkid| Append {
            mapping: mapping.into(),
            records: vec![rec("a", "2")],
            mark: Some((format!("s|{mapping}"), pkid, false)),
        };
        assert_eq!(
            store
                .stream_append(&[late(gone, 1), late(kept, 2)])
                .unwrap(),
            [false, true]
        );
        let pos = FilePosition {
            path: "/tmp/x.jsonl".into(),
            ..FilePosition::default()
        };
        store
            .stream_append_file(gone, &[rec("", "{}")], &pos)
            .unwrap();
        let rows = |table: &str| -> i64 {
            store
                .read(|tx| {
                    Ok(tx.query_row(
                        &format!("SELECT count(*) FROM {table} WHERE mapping = ?1"),
                        [gone],
                        |r| r.get(0),
                    )?)
                })
                .unwrap()
        };
        assert_eq!(
            (
                rows("stream_log"),
                rows("stream_partitions"),
                rows("stream_files")
            ),
            (0, 0, 0)
        );
        assert!(!store.dedup_is_marked(&format!("s|{gone}"), 1).unwrap());
        assert_eq!(store.stream_backlog(kept).unwrap(), 1);
    }

    #[test]
    fn file_positions_commit_with_their_records() {
        let (_dir, store, ids) = store_with(&["file"]);
        let mf = ids[0].as_str();
        assert_eq!(store.stream_file_position(mf).unwrap(), None);
        let pos = FilePosition {
            path: "/tmp/x.csv".into(),
            file_id: "1:2".into(),
            position: 40,
            line: 3,
            header: Some("a,b".into()),
            finished: false,
        };
        store
            .stream_append_file(mf, &[rec("", "{}"), rec("", "{}")], &pos)
            .unwrap();
        assert_eq!(store.stream_file_position(mf).unwrap(), Some(pos));
        assert_eq!(store.stream_backlog(mf).unwrap(), 2);
        store
            .write(|tx| delete_mapping(tx, mf).map(|_| ()))
            .unwrap();
        assert_eq!(store.stream_file_position(mf).unwrap(), None);
        assert_eq!(store.stream_backlog(mf).unwrap(), 0);
    }
}
