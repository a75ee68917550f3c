//! When devices were last seen, recorded without a write per request.
//!
//! Every authenticated device request used to update `devices.last_seen_ms` in a write
//! transaction of its own: with a fleet polling, most of the store's work (and, on SQLite, the
//! one writer lock) went to that. Now a request only notes the time in memory; a background task
//! ([`Service::flush_presence`], every [`FLUSH_INTERVAL`] from `server::start`, and once when the
//! server stops) writes the noted times in batches. `device list/get` merge the noted times, so
//! this replica shows them at once; another replica's (and the store's) view lags by up to
//! [`FLUSH_INTERVAL`], and a crash loses at most that much of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Result, Service};
use crate::params;

/// How often noted times are written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Most devices updated in one transaction (keeps each write short; on PostgreSQL a conflict
/// re-runs only one chunk).
const CHUNK: usize = 500;

/// Last-seen times not written yet, by device id.
#[derive(Default)]
pub(crate) struct Presence {
    pending: Mutex<HashMap<String, i64>>,
}

impl Presence {
    /// Notes that `device` was seen at `at_ms`.
    pub(crate) fn seen(&self, device: &str, at_ms: i64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(device) {
            Some(t) => *t = (*t).max(at_ms),
            None => {
                p.insert(device.to_owned(), at_ms);
            }
        }
    }

    /// The noted time of `device`, if newer than `stored`.
    pub(crate) fn merge(&self, device: &str, stored: Option<i64>) -> Option<i64> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match (p.get(device).copied(), stored) {
            (Some(n), Some(s)) => Some(n.max(s)),
            (n, s) => n.or(s),
        }
    }

    /// Forgets a deleted device.
    pub(crate) fn forget(&self, device: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(device);
    }

    fn take(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .collect()
    }
}

impl Service {
    /// Writes the noted last-seen times to the store. A chunk that fails is noted again for the
    /// next flush.
    pub async fn flush_presence(&self) -> Result<()> {
        let all = self.presence.take();
        let mut first_error = None;
        for chunk in all.chunks(CHUNK) {
            let rows = chunk.to_vec();
            let written = self
                .store
                .tx(move |tx| {
                    for (id, at) in &rows {
                        // Never moves back (a status report may have written a newer time).
                        tx.execute(
                            "UPDATE devices SET last_seen_ms = $2
                              WHERE id = $1 AND (last_seen_ms IS NULL OR last_seen_ms < $2)",
                            params![id, *at],
                        )?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = written {
                for (id, at) in chunk {
                    self.presence.seen(id, *at);
                }
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes every [`FLUSH_INTERVAL`], for ever.
    pub async fn flush_presence_periodically(self) {
        let mut interval = tokio::time::interval(FLUSH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = self.flush_presence().await {
                eprintln!("recording when devices were last seen: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Presence;

    #[test]
    fn noted_times_only_move_forward_and_merge_with_the_stored_one() {
        let p = Presence::default();
        assert_eq!(p.merge("d", None), None);
        assert_eq!(p.merge("d", Some(5)), Some(5));
        p.seen("d", 10);
        p.seen("d", 7);
        assert_eq!(p.merge("d", Some(5)), Some(10));
        assert_eq!(p.merge("d", Some(12)), Some(12));
        assert_eq!(p.merge("d", None), Some(10));
        p.forget("d");
        assert_eq!(p.merge("d", None), None);
        p.seen("e", 1);
        assert_eq!(p.take(), vec![("e".to_string(), 1)]);
        assert_eq!(p.merge("e", None), None);
    }
}
