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

/// What a schedule does next, decided by [`Planner::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due before this time (Unix ms): sleep until then.
    SleepUntil(i64),
    /// Deliver the event of this scheduled time (Unix ms) now.
    Fire(i64),
    /// The agent was stalled (machine suspended, clock jumped) over `count` scheduled times,
    /// the last of them `last_ms`, and the policy was `skip`: none fires.
    Skipped { count: u64, last_ms: i64 },
}

/// A running schedule's state, with no I/O (the loop in [`run`] owns the clock and the
/// sleeping): which scheduled time is next, and what to do when the agent wakes up late.
///
/// Each next time is computed from the previous *scheduled* time, so late wake-ups never shift
/// the grid (no drift over hours). A wake-up late by less than a period fires the one time that
/// is due, late. When several times are due at once (the agent stalled for more than a period),
/// the mapping's missed-run policy applies, as after downtime: `skip` fires none of them,
/// `run-once` fires the last of them once.
#[derive(Debug, Clone)]
pub struct Planner {
    schedule: Schedule,
    missed: Missed,
    /// The last scheduled time dealt with (fired or skipped).
    last_ms: i64,
}

impl Planner {
    /// A schedule whose times after `last_ms` are still to come.
    pub fn new(schedule: Schedule, missed: Missed, last_ms: i64) -> Planner {
        Planner {
            schedule,
            missed,
            last_ms,
        }
    }

    /// The last scheduled time dealt with (to persist).
    pub fn last_ms(&self) -> i64 {
        self.last_ms
    }

    /// What to do at `now_ms`; `None` when the schedule has no further times.
    pub fn step(&mut self, now_ms: i64) -> Option<Step> {
        let next = self.schedule.next_after(self.last_ms)?;
        if now_ms < next {
            return Some(Step::SleepUntil(next));
        }
        match self.schedule.next_after(next) {
            // Only `next` is due: fire it (late or not).
            Some(after) if after > now_ms => {
                self.last_ms = next;
                Some(Step::Fire(next))
            }
            // Several are due: missed runs.
            _ => {
                let last = self.schedule.last_between(self.last_ms, now_ms)?;
                self.last_ms = last;
                match self.missed {
                    Missed::RunOnce => Some(Step::Fire(last)),
                    Missed::Skip => Some(Step::Skipped {
                        count: self.count_between(next, last),
                        last_ms: last,
                    }),
                }
            }
        }
    }

    /// Scheduled times in `first..=last` (both scheduled times).
    fn count_between(&self, first: i64, last: i64) -> u64 {
        let mut n = 1;
        let mut t = first;
        while t < last && n < 1_000_000 {
            match self.schedule.next_after(t) {
                Some(next) => t = next,
                None => break,
            }
            n += 1;
        }
        n
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
    let last = match stored.and_then(|v| v.parse::<i64>().ok()) {
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
    let mut planner = Planner::new(schedule, missed, last);
    loop {
        let Some(step) = planner.step(crate::runtime::now_ms() as i64) else {
            return;
        };
        match step {
            Step::SleepUntil(t) => {
                let wait = t - crate::runtime::now_ms() as i64;
                if wait > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
                }
                continue;
            }
            Step::Fire(t) => fire(&dispatcher, &mapping, t).await,
            Step::Skipped { count, last_ms } => log(
                &dispatcher,
                &mapping,
                crate::store::Level::Warn,
                format!(
                    "schedule {}: the agent was stalled; {count} runs up to {} were missed and \
                     skipped (missed: skip)",
                    mapping.name,
                    rfc3339(last_ms)
                ),
            ),
        }
        let (s, k, done) = (store.clone(), key.clone(), planner.last_ms());
        let _ = tokio::task::spawn_blocking(move || s.meta_set(&k, &done.to_string())).await;
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

    /// Runs a planner against a simulated clock from `start` to `end`: every sleep wakes up
    /// late by a pseudo-random 0..`jitter_ms`, and at `stall` (start, length) the agent is
    /// frozen. Returns the fired and skipped scheduled times.
    fn simulate(
        mut p: Planner,
        start: i64,
        end: i64,
        jitter_ms: i64,
        stall: Option<(i64, i64)>,
    ) -> (Vec<i64>, Vec<(u64, i64)>) {
        let (mut now, mut seed) = (start, 0x2545_f491_4f6c_dd1d_u64);
        let (mut fired, mut skipped) = (Vec::new(), Vec::new());
        while now < end {
            match p.step(now).unwrap() {
                Step::SleepUntil(t) => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    now = t + (seed % jitter_ms.max(1) as u64) as i64;
                    if let Some((at, len)) = stall {
                        if now >= at && now < at + len {
                            now = at + len;
                        }
                    }
                }
                Step::Fire(t) => fired.push(t),
                Step::Skipped { count, last_ms } => skipped.push((count, last_ms)),
            }
        }
        (fired, skipped)
    }

    #[test]
    fn six_hours_of_late_wake_ups_do_not_drift() {
        let every = Schedule::Every {
            interval_ms: 1000,
            anchor_ms: 250,
        };
        let hours = 6 * 3_600_000;
        let (fired, skipped) = simulate(Planner::new(every, Missed::Skip, 0), 0, hours, 300, None);
        assert!(skipped.is_empty());
        assert_eq!(
            fired.len(),
            6 * 3600,
            "one per second, none lost or doubled"
        );
        assert!(fired
            .iter()
            .enumerate()
            .all(|(i, t)| *t == 250 + i as i64 * 1000));

        let cron = Schedule::Cron(Box::new(parse_cron("*/15 * * * * *").unwrap()));
        let t0 = 1_700_000_000_000;
        let (fired, _) = simulate(
            Planner::new(cron, Missed::Skip, t0),
            t0,
            t0 + hours,
            900,
            None,
        );
        assert_eq!(fired.len(), 6 * 3600 / 15);
        assert!(fired.iter().all(|t| t % 15_000 == 0), "on the cron grid");
    }

    #[test]
    fn a_stall_longer_than_a_period_applies_the_missed_policy() {
        let every = || Schedule::Every {
            interval_ms: 60_000,
            anchor_ms: 0,
        };
        // Frozen from 10:30 (minutes) for an hour: 60 scheduled times pass.
        let stall = Some((630_000, 3_600_000));
        let (fired, skipped) = simulate(
            Planner::new(every(), Missed::Skip, 0),
            0,
            7_200_000,
            10,
            stall,
        );
        assert_eq!(skipped, vec![(60, 4_200_000)]);
        assert!(!fired.contains(&660_000) && fired.contains(&4_260_000));
        // Scheduled times in (0, 2 h): 119, of which 60 fell in the stall.
        assert_eq!(fired.len(), 119 - 60);

        let (fired, skipped) = simulate(
            Planner::new(every(), Missed::RunOnce, 0),
            0,
            7_200_000,
            10,
            stall,
        );
        assert!(skipped.is_empty());
        assert_eq!(fired.len(), 119 - 60 + 1, "one catch-up run");
        assert!(fired.contains(&4_200_000) && !fired.contains(&4_140_000));

        // Late by less than a period: the due time fires, late.
        let mut p = Planner::new(every(), Missed::Skip, 0);
        assert_eq!(p.step(59_000), Some(Step::SleepUntil(60_000)));
        assert_eq!(p.step(119_999), Some(Step::Fire(60_000)));
        assert_eq!(p.step(119_999), Some(Step::SleepUntil(120_000)));
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
