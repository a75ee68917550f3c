//! Schedules: cron expressions (with seconds, UTC, croner) and fixed intervals. The next fire
//! time is always computed from the previous *scheduled* time, so nothing drifts; the last fire
//! time is persisted so a restart can apply the mapping's missed-run policy.

use super::dispatch::{Carry, Dispatcher, Route};
use crate::pool::OwnedEvent;
use crate::store::{Mapping, Missed, Source};
use croner::Cron;

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<Cron>),
    /// Every `interval_ms`, aligned to `anchor_ms` (the mapping's creation).
    Every {
        interval_ms: u64,
        anchor_ms: i64,
    },
}

/// Parses a cron expression (the store's parser: 6 fields with seconds, or 5 = second 0).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    crate::store::mappings::parse_cron(expr).map_err(|e| e.to_string())
}

impl Schedule {
    /// The schedule of a `cron` or `every` mapping.
    pub fn of(m: &Mapping) -> Option<Result<Schedule, String>> {
        match &m.source {
            Source::Cron { expr, .. } => {
                Some(parse_cron(expr).map(|c| Schedule::Cron(Box::new(c))))
            }
            Source::Every { interval_ms, .. } => Some(Ok(Schedule::Every {
                interval_ms: (*interval_ms).max(1),
                anchor_ms: m.created_ms,
            })),
            _ => None,
        }
    }

    /// The first fire time strictly after `after_ms` (Unix ms).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every {
                interval_ms,
                anchor_ms,
            } => {
                let i = *interval_ms as i64;
                let k = if after_ms < *anchor_ms {
                    0
                } else {
                    (after_ms - anchor_ms) / i + 1
                };
                Some(anchor_ms + k * i)
            }
            Schedule::Cron(c) => {
                let t = chrono::DateTime::from_timestamp_millis(after_ms)?;
                c.find_next_occurrence(&t, false)
                    .ok()
                    .map(|n| n.timestamp_millis())
            }
        }
    }

    /// The last fire time at or before `at_ms`, not before `since_ms` (for `run-once`).
    pub fn last_between(&self, since_ms: i64, at_ms: i64) -> Option<i64> {
        let mut t = self.next_after(since_ms)?;
        if t > at_ms {
            return None;
        }
        // Walk forward; bounded, since a missed window is at most the downtime.
        for _ in 0..1_000_000 {
            match self.next_after(t) {
                Some(n) if n <= at_ms => t = n,
                _ => return Some(t),
            }
        }
        Some(t)
    }
}

/// Runs one schedule mapping until the task is aborted. `at_start_up`: the agent just started,
/// so runs missed since the last one are downtime, for the mapping's missed-run policy.
pub async fn run(dispatcher: Dispatcher, mapping: Mapping, at_start_up: bool) {
    let schedule = match Schedule::of(&mapping) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            log(
                &dispatcher,
                &mapping,
                crate::store::Level::Error,
                format!("schedule not started: {e}"),
            );
            return;
        }
        None => return,
    };
    let missed = match &mapping.source {
        Source::Cron { missed, .. } | Source::Every { missed, .. } => *missed,
        _ => Missed::Skip,
    };
    let key = format!("schedule.last.{}", mapping.id);
    let store = dispatcher.daemon().store().clone();
    let now = crate::runtime::now_ms() as i64;
    let stored = {
        let (s, k) = (store.clone(), key.clone());
        tokio::task::spawn_blocking(move || s.meta_get(&k))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    };
    let mut last = match stored.and_then(|v| v.parse::<i64>().ok()) {
        Some(last) => {
            if missed == Missed::RunOnce && at_start_up {
                if let Some(t) = schedule.last_between(last, now) {
                    log(
                        &dispatcher,
                        &mapping,
                        crate::store::Level::Info,
                        format!(
                            "schedule {}: runs were missed while the agent was down; one catch-up \
                             run for {} (missed: run-once)",
                            mapping.name,
                            rfc3339(t)
                        ),
                    );
                    fire(&dispatcher, &mapping, t).await;
                }
            }
            now.max(last)
        }
        None => now,
    };
    loop {
        let Some(next) = schedule.next_after(last) else {
            return;
        };
        let wait = next - crate::runtime::now_ms() as i64;
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
        }
        fire(&dispatcher, &mapping, next).await;
        last = next;
        let (s, k) = (store.clone(), key.clone());
        let _ = tokio::task::spawn_blocking(move || s.meta_set(&k, &next.to_string())).await;
    }
}

/// Delivers one scheduled event (in the background: a slow function never delays the schedule).
async fn fire(dispatcher: &Dispatcher, mapping: &Mapping, time_ms: i64) {
    let event = OwnedEvent {
        id: format!("{}@{time_ms}", mapping.id),
        source: edgefn_sdk::abi::source::SCHEDULE.into(),
        subject: mapping.name.clone(),
        time_ms: time_ms as u64,
        content_type: String::new(),
        data: Vec::new(),
        attempt: 1,
    };
    let (d, route) = (dispatcher.clone(), Route::of(mapping));
    tokio::spawn(async move {
        d.deliver(&route, event, Carry::default()).await;
    });
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn log(dispatcher: &Dispatcher, m: &Mapping, level: crate::store::Level, text: String) {
    let d = dispatcher.daemon().clone();
    let f = m.function.clone();
    tokio::task::spawn_blocking(move || d.log_agent(Some(&f), None, level, text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_do_not_drift() {
        let s = Schedule::Every {
            interval_ms: 1000,
            anchor_ms: 500,
        };
        assert_eq!(s.next_after(0), Some(500));
        assert_eq!(s.next_after(500), Some(1500));
        assert_eq!(s.next_after(1499), Some(1500));
        // Hours later, still on the grid.
        assert_eq!(
            s.next_after(3_600_000 * 5 + 777),
            Some(3_600_000 * 5 + 1500)
        );
        assert_eq!(s.last_between(500, 4000), Some(3500));
        assert_eq!(s.last_between(3500, 3600), None);
    }

    #[test]
    fn cron_with_seconds() {
        let c = Schedule::Cron(Box::new(parse_cron("*/10 * * * * *").unwrap()));
        assert_eq!(c.next_after(1_700_000_000_000), Some(1_700_000_010_000));
        assert_eq!(c.next_after(1_700_000_001_000), Some(1_700_000_010_000));
        let five = Schedule::Cron(Box::new(parse_cron("0 * * * *").unwrap()));
        assert_eq!(five.next_after(1_700_000_000_000), Some(1_700_002_800_000));
        assert!(parse_cron("61 * * * * *").is_err());
        assert!(parse_cron("not cron").unwrap_err().contains("not cron"));
    }
}
