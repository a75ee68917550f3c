//! Per-minute statistics buckets and queries over them.
//!
//! Every committed invocation adds to the bucket of (function, version key, minute of its start):
//! counts, sums and two histograms (duration, and latency = event time to start). A query merges
//! the histograms of the buckets in its window, so p50/p95/p99 over any window are the
//! percentiles of the recorded values (within the histogram's 1.6%), never averages of
//! percentiles.
//!
//! What counts as what: an invocation is one that ran (every outcome but `throttled`); an error
//! is one that ran and did not succeed; a throttle is a `throttled` outcome; a retry is a run with
//! `attempt > 1`. Durations and latencies are recorded for runs only.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::records::{InvocationRecord, Outcome, ParseEnumError};
use crate::stats::Histogram;

/// Length of a stats bucket.
pub const MINUTE_MS: i64 = 60_000;

/// Most points a series may have.
pub const MAX_SERIES_POINTS: usize = 10_000;

/// Which code a stat is about: `latest` or a published version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum VersionKey {
    Latest,
    Version(u32),
}

impl From<Option<u32>> for VersionKey {
    fn from(version: Option<u32>) -> Self {
        version.map_or(VersionKey::Latest, VersionKey::Version)
    }
}

impl fmt::Display for VersionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionKey::Latest => f.write_str("latest"),
            VersionKey::Version(v) => write!(f, "{v}"),
        }
    }
}

impl FromStr for VersionKey {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(VersionKey::Latest);
        }
        match s.parse::<u32>() {
            Ok(v) if v > 0 => Ok(VersionKey::Version(v)),
            _ => Err(ParseEnumError::new("version key", s)),
        }
    }
}

impl From<VersionKey> for String {
    fn from(key: VersionKey) -> String {
        key.to_string()
    }
}

impl TryFrom<String> for VersionKey {
    type Error = ParseEnumError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl ToSql for VersionKey {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for VersionKey {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// The start of the minute containing `time_ms`.
pub fn minute_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Raw additive figures of one bucket (or of a merge of buckets).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Bucket {
    invocations: u64,
    errors: u64,
    throttles: u64,
    retries: u64,
    fuel_sum: u64,
    duration_sum_us: u64,
    latency_sum_us: u64,
    duration: Histogram,
    latency: Histogram,
}

impl Bucket {
    /// Adds one invocation record.
    pub(crate) fn add_record(&mut self, record: &InvocationRecord) {
        if record.outcome == Outcome::Throttled {
            self.throttles += 1;
            return;
        }
        self.invocations += 1;
        if !record.outcome.is_success() {
            self.errors += 1;
        }
        if record.attempt > 1 {
            self.retries += 1;
        }
        self.fuel_sum = self.fuel_sum.saturating_add(record.fuel_used);
        self.duration_sum_us = self.duration_sum_us.saturating_add(record.duration_us);
        let latency = record.latency_us();
        self.latency_sum_us = self.latency_sum_us.saturating_add(latency);
        self.duration.record(record.duration_us);
        self.latency.record(latency);
    }

    fn merge(&mut self, other: &Bucket) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.retries += other.retries;
        self.fuel_sum = self.fuel_sum.saturating_add(other.fuel_sum);
        self.duration_sum_us = self.duration_sum_us.saturating_add(other.duration_sum_us);
        self.latency_sum_us = self.latency_sum_us.saturating_add(other.latency_sum_us);
        self.duration.merge(&other.duration);
        self.latency.merge(&other.latency);
    }

    fn figures(&self) -> Figures {
        Figures {
            invocations: self.invocations,
            errors: self.errors,
            throttles: self.throttles,
            retries: self.retries,
            fuel: Fuel {
                total: self.fuel_sum,
                avg: (self.invocations > 0).then(|| self.fuel_sum as f64 / self.invocations as f64),
            },
            duration_us: Summary::of(&self.duration, self.duration_sum_us),
            latency_us: Summary::of(&self.latency, self.latency_sum_us),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Histogram> {
    Histogram::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("stats histogram: {e}")))
}

/// Adds `delta` to the stored bucket (creating it) in the caller's transaction.
pub(crate) fn add_to_bucket(
    tx: &Transaction<'_>,
    function: &str,
    key: VersionKey,
    minute_ms: i64,
    delta: &Bucket,
) -> Result<()> {
    let stored: Option<(Vec<u8>, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT duration_hist, latency_hist FROM stats
              WHERE function = ?1 AND version_key = ?2 AND minute_ms = ?3",
        )?
        .query_row(params![function, key, minute_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    // A stored histogram that does not decode (only possible through corruption) must not
    // block the commit point forever: that minute's distribution restarts from this delta,
    // while its counts and sums stay exact. Queries still report the corruption until then.
    let (mut duration, mut latency) = match stored {
        Some((d, l)) => (
            Histogram::from_bytes(&d).unwrap_or_default(),
            Histogram::from_bytes(&l).unwrap_or_default(),
        ),
        None => (Histogram::new(), Histogram::new()),
    };
    duration.merge(&delta.duration);
    latency.merge(&delta.latency);
    tx.prepare_cached(
        "INSERT INTO stats (function, version_key, minute_ms, invocations, errors, throttles,
                            retries, fuel_sum, duration_sum_us, latency_sum_us,
                            duration_hist, latency_hist)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (function, version_key, minute_ms) DO UPDATE SET
            invocations = invocations + excluded.invocations,
            errors = errors + excluded.errors,
            throttles = throttles + excluded.throttles,
            retries = retries + excluded.retries,
            fuel_sum = fuel_sum + excluded.fuel_sum,
            duration_sum_us = duration_sum_us + excluded.duration_sum_us,
            latency_sum_us = latency_sum_us + excluded.latency_sum_us,
            duration_hist = excluded.duration_hist,
            latency_hist = excluded.latency_hist,
            unsent = 1",
    )?
    .execute(params![
        function,
        key,
        minute_ms,
        delta.invocations,
        delta.errors,
        delta.throttles,
        delta.retries,
        delta.fuel_sum,
        delta.duration_sum_us,
        delta.latency_sum_us,
        duration.to_bytes(),
        latency.to_bytes(),
    ])?;
    Ok(())
}

/// Mean and percentiles of a distribution (microseconds); `None` without samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub avg: Option<f64>,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl Summary {
    fn of(histogram: &Histogram, sum: u64) -> Summary {
        let count = histogram.count();
        Summary {
            avg: (count > 0).then(|| sum as f64 / count as f64),
            p50: histogram.quantile(0.50),
            p95: histogram.quantile(0.95),
            p99: histogram.quantile(0.99),
            max: histogram.max(),
        }
    }
}

/// Fuel used by runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fuel {
    pub total: u64,
    /// Per run; `None` without runs.
    pub avg: Option<f64>,
}

/// The figures of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub retries: u64,
    pub fuel: Fuel,
    /// Duration of runs.
    pub duration_us: Summary,
    /// Event time to start of runs.
    pub latency_us: Summary,
}

/// What to compute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    /// Only this function.
    pub function: Option<String>,
    /// Only these version keys (see [`Store::version_keys`] for a qualifier's keys).
    pub versions: Option<Vec<VersionKey>>,
    /// Window start; the bucket of the minute containing it is the first one included.
    pub since_ms: i64,
    /// Window end (exclusive, minute resolution); `None` = now.
    pub until_ms: Option<i64>,
    /// Series step (rounded up to whole minutes); `None` = no series.
    pub step_ms: Option<i64>,
}

/// Figures of one (function, version) over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsGroup {
    pub function: String,
    pub version: VersionKey,
    #[serde(flatten)]
    pub figures: Figures,
}

/// One point of a series: the figures of `[start_ms, start_ms + step)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsPoint {
    pub start_ms: i64,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The answer to a [`StatsQuery`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Effective window: `[since_ms, until_ms)`, aligned to minutes.
    pub since_ms: i64,
    pub until_ms: i64,
    /// Totals over everything selected.
    pub totals: Figures,
    /// Totals per function and version, ordered.
    pub groups: Vec<StatsGroup>,
    /// Effective step (a multiple of a minute), when a series was asked for.
    pub step_ms: Option<i64>,
    /// Consecutive points covering the window, empty ones included.
    pub series: Vec<StatsPoint>,
}

impl Store {
    /// Totals, per-version groups and an optional series over a window of stats buckets.
    pub fn stats(&self, query: &StatsQuery) -> Result<StatsReport> {
        let since = minute_of(query.since_ms);
        // Round the end up to a whole minute, so the current (partial) minute is included.
        let until = minute_of(
            query
                .until_ms
                .unwrap_or_else(now_ms)
                .saturating_add(MINUTE_MS - 1),
        );
        if until <= since {
            return Err(StoreError::InvalidQuery("stats window is empty".into()));
        }
        let step = match query.step_ms {
            None => None,
            Some(step) if step <= 0 => {
                return Err(StoreError::InvalidQuery(format!("series step {step} ms")))
            }
            Some(step) => {
                let step = (step + MINUTE_MS - 1) / MINUTE_MS * MINUTE_MS;
                let points = (until - since + step - 1) / step;
                if points as usize > MAX_SERIES_POINTS {
                    return Err(StoreError::InvalidQuery(format!(
                        "series of {points} points (at most {MAX_SERIES_POINTS}); use a larger step"
                    )));
                }
                Some(step)
            }
        };

        let mut sql = String::from(
            "SELECT function, version_key, minute_ms, invocations, errors, throttles, retries,
                    fuel_sum, duration_sum_us, latency_sum_us, duration_hist, latency_hist
               FROM stats WHERE minute_ms >= ? AND minute_ms < ?",
        );
        let mut args = vec![Value::Integer(since), Value::Integer(until)];
        if let Some(function) = &query.function {
            sql.push_str(" AND function = ?");
            args.push(Value::Text(function.clone()));
        }
        if let Some(keys) = &query.versions {
            if keys.is_empty() {
                return Err(StoreError::InvalidQuery("empty version filter".into()));
            }
            sql.push_str(" AND version_key IN (");
            sql.push_str(&vec!["?"; keys.len()].join(", "));
            sql.push(')');
            args.extend(keys.iter().map(|k| Value::Text(k.to_string())));
        }

        let mut totals = Bucket::default();
        let mut groups: BTreeMap<(String, VersionKey), Bucket> = BTreeMap::new();
        let mut series: Vec<Bucket> = match step {
            Some(step) => vec![Bucket::default(); ((until - since + step - 1) / step) as usize],
            None => Vec::new(),
        };
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(args))?;
            while let Some(row) = rows.next()? {
                let function: String = row.get(0)?;
                let key: VersionKey = row.get(1)?;
                let minute: i64 = row.get(2)?;
                let bucket = Bucket {
                    invocations: row.get(3)?,
                    errors: row.get(4)?,
                    throttles: row.get(5)?,
                    retries: row.get(6)?,
                    fuel_sum: row.get(7)?,
                    duration_sum_us: row.get(8)?,
                    latency_sum_us: row.get(9)?,
                    duration: decode(row.get_ref(10)?.as_blob().map_err(rusqlite::Error::from)?)?,
                    latency: decode(row.get_ref(11)?.as_blob().map_err(rusqlite::Error::from)?)?,
                };
                totals.merge(&bucket);
                if let Some(step) = step {
                    series[((minute - since) / step) as usize].merge(&bucket);
                }
                groups.entry((function, key)).or_default().merge(&bucket);
            }
            Ok(())
        })?;

        Ok(StatsReport {
            since_ms: since,
            until_ms: until,
            totals: totals.figures(),
            groups: groups
                .into_iter()
                .map(|((function, version), bucket)| StatsGroup {
                    function,
                    version,
                    figures: bucket.figures(),
                })
                .collect(),
            step_ms: step,
            series: series
                .iter()
                .enumerate()
                .map(|(i, bucket)| StatsPoint {
                    start_ms: since + i as i64 * step.unwrap_or(0),
                    figures: bucket.figures(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{outcome, record, temp_store};

    const T0: i64 = 1_700_000_040_000; // a minute boundary

    fn rec(
        function: &str,
        version: Option<u32>,
        start_ms: i64,
        duration_us: u64,
        outcome_: Outcome,
    ) -> InvocationRecord {
        let mut r = record(
            function,
            &format!("{function}-{start_ms}-{duration_us}-{outcome_}"),
            outcome_,
        );
        r.version = version;
        r.start_ms = start_ms;
        r.event_time_ms = start_ms - 5; // 5 ms latency
        r.duration_us = duration_us;
        r.fuel_used = 100;
        r
    }

    #[test]
    fn figures_equal_what_was_recorded() {
        let (_dir, store) = temp_store();
        let mut records = Vec::new();
        for i in 0..100u64 {
            let mut r = rec(
                "f",
                Some(1),
                T0 + (i as i64 % 3) * MINUTE_MS,
                1_000 * (i + 1),
                Outcome::Success,
            );
            if i % 10 == 0 {
                r.outcome = Outcome::Error;
            }
            if i % 20 == 0 {
                r.attempt = 2;
            }
            records.push(r);
        }
        records.push(rec("f", Some(1), T0, 0, Outcome::Throttled));
        records.push(rec("f", None, T0, 7_000, Outcome::Trap));
        records.push(rec("g", Some(4), T0, 9_000, Outcome::Success));
        store
            .commit(&records.iter().cloned().map(outcome).collect::<Vec<_>>())
            .unwrap();

        let report = store
            .stats(&StatsQuery {
                function: Some("f".into()),
                versions: Some(vec![VersionKey::Version(1)]),
                since_ms: T0,
                until_ms: Some(T0 + 10 * MINUTE_MS),
                step_ms: Some(MINUTE_MS),
            })
            .unwrap();
        let t = report.totals;
        assert_eq!(t.invocations, 100);
        assert_eq!(t.errors, 10);
        assert_eq!(t.throttles, 1);
        assert_eq!(t.retries, 5);
        assert_eq!(t.fuel.total, 100 * 100);
        assert_eq!(t.fuel.avg, Some(100.0));
        // Durations 1..=100 ms: mean 50.5 ms exactly (sums are exact), percentiles within 1.6%.
        assert_eq!(t.duration_us.avg, Some(50_500.0));
        let close = |got: Option<u64>, want: f64| {
            let got = got.unwrap() as f64;
            assert!((got - want).abs() <= want / 64.0, "{got} vs {want}");
        };
        close(t.duration_us.p50, 50_000.0);
        close(t.duration_us.p95, 95_000.0);
        close(t.duration_us.p99, 99_000.0);
        assert_eq!(t.duration_us.max, Some(100_000));
        assert_eq!(t.latency_us.avg, Some(5_000.0));
        assert_eq!(t.latency_us.p99, Some(5_000));

        // Series: 10 points of a minute; 34 + 33 + 33 runs in the first three.
        assert_eq!(report.series.len(), 10);
        assert_eq!(report.step_ms, Some(MINUTE_MS));
        let counts: Vec<u64> = report
            .series
            .iter()
            .map(|p| p.figures.invocations)
            .collect();
        assert_eq!(counts, [34, 33, 33, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(report.series[1].start_ms, T0 + MINUTE_MS);
        assert_eq!(report.series[3].figures.duration_us.p50, None);
        assert_eq!(report.groups.len(), 1);

        // Everything: latest of f and version 4 of g are groups of their own.
        let all = store
            .stats(&StatsQuery {
                since_ms: T0,
                until_ms: Some(T0 + 10 * MINUTE_MS),
                ..StatsQuery::default()
            })
            .unwrap();
        assert_eq!(all.totals.invocations, 102);
        assert_eq!(all.totals.errors, 11);
        let keys: Vec<(String, VersionKey)> = all
            .groups
            .iter()
            .map(|g| (g.function.clone(), g.version))
            .collect();
        assert_eq!(
            keys,
            [
                ("f".into(), VersionKey::Latest),
                ("f".into(), VersionKey::Version(1)),
                ("g".into(), VersionKey::Version(4))
            ]
        );
        assert!(all.series.is_empty());
    }

    #[test]
    fn commits_accumulate_into_the_same_bucket() {
        let (_dir, store) = temp_store();
        let mut expected = Histogram::new();
        for batch in 0..5u64 {
            let records: Vec<_> = (0..20u64)
                .map(|i| {
                    let mut r = rec(
                        "f",
                        None,
                        T0 + 1_000,
                        100 * (batch * 20 + i + 1),
                        Outcome::Success,
                    );
                    r.id = format!("b{batch}-{i}");
                    expected.record(r.duration_us);
                    outcome(r)
                })
                .collect();
            store.commit(&records).unwrap();
        }
        let report = store
            .stats(&StatsQuery {
                since_ms: T0,
                until_ms: Some(T0 + MINUTE_MS),
                ..StatsQuery::default()
            })
            .unwrap();
        assert_eq!(report.totals.invocations, 100);
        assert_eq!(report.totals.duration_us.p95, expected.quantile(0.95));
        assert_eq!(report.totals.duration_us.p50, expected.quantile(0.5));
    }

    #[test]
    fn window_and_step_are_aligned_and_bounded() {
        let (_dir, store) = temp_store();
        store
            .commit(&[
                outcome(rec("f", None, T0 - MINUTE_MS, 1, Outcome::Success)),
                outcome(rec("f", None, T0 + 30_000, 1, Outcome::Success)),
                outcome(rec("f", None, T0 + 5 * MINUTE_MS, 1, Outcome::Success)),
            ])
            .unwrap();
        let report = store
            .stats(&StatsQuery {
                since_ms: T0 + 10_000, // inside the minute T0: that bucket counts
                until_ms: Some(T0 + 4 * MINUTE_MS + 1),
                step_ms: Some(90_000), // rounded up to 2 minutes
                ..StatsQuery::default()
            })
            .unwrap();
        assert_eq!(report.since_ms, T0);
        assert_eq!(report.until_ms, T0 + 5 * MINUTE_MS);
        assert_eq!(report.totals.invocations, 1);
        assert_eq!(report.step_ms, Some(2 * MINUTE_MS));
        assert_eq!(report.series.len(), 3);
        assert_eq!(report.series[0].figures.invocations, 1);

        let bad = |q: StatsQuery| matches!(store.stats(&q), Err(StoreError::InvalidQuery(_)));
        assert!(bad(StatsQuery {
            since_ms: T0,
            until_ms: Some(T0 - 2 * MINUTE_MS),
            ..StatsQuery::default()
        }));
        assert!(bad(StatsQuery {
            since_ms: T0,
            step_ms: Some(0),
            ..StatsQuery::default()
        }));
        assert!(bad(StatsQuery {
            since_ms: 0,
            until_ms: Some(T0),
            step_ms: Some(MINUTE_MS),
            ..StatsQuery::default()
        }));
        assert!(bad(StatsQuery {
            since_ms: T0,
            versions: Some(vec![]),
            ..StatsQuery::default()
        }));
    }

    #[test]
    fn a_corrupt_histogram_is_reported_not_misread() {
        let (_dir, store) = temp_store();
        store
            .commit(&[outcome(rec("f", None, T0, 10, Outcome::Success))])
            .unwrap();
        store
            .write(|tx| Ok(tx.execute("UPDATE stats SET duration_hist = x'ff00'", [])?))
            .unwrap();
        let err = store.stats(&StatsQuery::default()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        // Committing into the corrupt bucket still works and repairs its histogram.
        let mut again = rec("f", None, T0, 10, Outcome::Success);
        again.id = "again".into();
        store.commit(&[outcome(again)]).unwrap();
        let totals = store.stats(&StatsQuery::default()).unwrap().totals;
        assert_eq!(totals.invocations, 2);
        assert_eq!(totals.duration_us.p50, Some(10));
    }

    #[test]
    fn version_keys_parse_and_serialize() {
        assert_eq!("latest".parse::<VersionKey>().unwrap(), VersionKey::Latest);
        assert_eq!("12".parse::<VersionKey>().unwrap(), VersionKey::Version(12));
        assert!("0".parse::<VersionKey>().is_err());
        assert!("prod".parse::<VersionKey>().is_err());
        assert_eq!(
            serde_json::to_string(&VersionKey::Version(3)).unwrap(),
            "\"3\""
        );
        assert_eq!(VersionKey::from(None), VersionKey::Latest);
        assert_eq!(minute_of(T0 + 59_999), T0);
        assert_eq!(minute_of(-1), -MINUTE_MS);
    }
}
