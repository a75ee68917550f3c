//! Fleet statistics: the figures the agent's `stats` shows (docs/agent-api.md, "Stats"),
//! computed over the per-minute buckets devices uploaded. Counts and sums add up; percentiles
//! come from the merged histograms of every bucket in scope (all devices, all minutes), never
//! from averaging per-device or per-minute percentiles.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fleet_logs::{device_scope, DeviceScope, DropInfo};
use super::{Result, Service};
use crate::protocol::histogram::Histogram;
use crate::store::{StoreError, Tx, Value};

/// Length of a bucket.
pub const MINUTE_MS: i64 = 60_000;
/// Most points of a series.
pub const MAX_SERIES_POINTS: i64 = 10_000;

/// What to compute.
#[derive(Clone, Debug, Default)]
pub struct StatsQuery {
    pub function: Option<String>,
    /// `latest`, a version number or an alias of `function`.
    pub qualifier: Option<String>,
    pub scope: DeviceScope,
    /// Window `[now - window_ms, now]`, whole minutes.
    pub window_ms: i64,
    /// Series step (rounded up to whole minutes).
    pub step_ms: i64,
    /// "now" (Unix ms); the caller's clock.
    pub now_ms: i64,
}

/// Additive figures of a set of buckets.
#[derive(Clone, Debug, Default)]
struct Bucket {
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
    fn merge(&mut self, o: &Bucket) {
        self.invocations += o.invocations;
        self.errors += o.errors;
        self.throttles += o.throttles;
        self.retries += o.retries;
        self.fuel_sum = self.fuel_sum.saturating_add(o.fuel_sum);
        self.duration_sum_us = self.duration_sum_us.saturating_add(o.duration_sum_us);
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        self.duration.merge(&o.duration);
        self.latency.merge(&o.latency);
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

/// Mean and percentiles (µs); `None` without samples. As the agent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub avg: Option<f64>,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl Summary {
    fn of(h: &Histogram, sum: u64) -> Summary {
        let n = h.count();
        Summary {
            avg: (n > 0).then(|| sum as f64 / n as f64),
            p50: h.quantile(0.50),
            p95: h.quantile(0.95),
            p99: h.quantile(0.99),
            max: h.max(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Fuel {
    pub total: u64,
    pub avg: Option<f64>,
}

/// The figures of a window, as the agent's `stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub retries: u64,
    pub fuel: Fuel,
    pub duration_us: Summary,
    pub latency_us: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatsGroup {
    pub function: String,
    pub version: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceFigures {
    pub device: String,
    pub device_id: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatsPoint {
    pub start_ms: i64,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The answer of `GET /v1/stats`.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub window_s: i64,
    pub since_ms: i64,
    pub until_ms: i64,
    pub totals: Figures,
    /// Per function and version, all devices merged.
    pub groups: Vec<StatsGroup>,
    /// Per device, everything selected merged.
    pub devices: Vec<DeviceFigures>,
    pub step_ms: i64,
    pub series: Vec<StatsPoint>,
    /// Records devices in scope dropped before upload (their last report).
    pub dropped: Vec<DropInfo>,
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The version keys a qualifier selects: `latest`, `N`, or an alias's version(s) in the registry.
fn version_keys(
    tx: &mut dyn Tx,
    function: &str,
    qualifier: &str,
) -> std::result::Result<Vec<String>, StoreError> {
    if qualifier == "latest" {
        return Ok(vec!["latest".into()]);
    }
    if let Ok(v) = qualifier.parse::<u32>() {
        if v == 0 {
            return Err(StoreError::invalid(
                "version 0 does not exist (versions start at 1)",
            ));
        }
        return Ok(vec![v.to_string()]);
    }
    let row = tx
        .query_opt(
            "SELECT version, also_version FROM aliases WHERE function = $1 AND name = $2",
            crate::params![function, qualifier],
        )?
        .ok_or_else(|| {
            StoreError::not_found(format!("no alias {qualifier} of function {function}"))
        })?;
    let mut keys = vec![row.i64(0)?.to_string()];
    if let Some(also) = row.opt_i64(1)? {
        keys.push(also.to_string());
    }
    Ok(keys)
}

fn report(tx: &mut dyn Tx, q: &StatsQuery) -> std::result::Result<StatsReport, StoreError> {
    if q.window_ms <= 0 {
        return Err(StoreError::invalid("window_s must be at least 1"));
    }
    if q.step_ms <= 0 {
        return Err(StoreError::invalid("series_s must be at least 1"));
    }
    if q.qualifier.is_some() && q.function.is_none() {
        return Err(StoreError::invalid("qualifier needs function"));
    }
    let since = minute_of(q.now_ms - q.window_ms);
    let until = minute_of(q.now_ms + MINUTE_MS - 1);
    let step = (q.step_ms + MINUTE_MS - 1) / MINUTE_MS * MINUTE_MS;
    let points = (until - since + step - 1) / step;
    if points > MAX_SERIES_POINTS {
        return Err(StoreError::invalid(format!(
            "series of {points} points (at most {MAX_SERIES_POINTS}); use a larger series_s"
        )));
    }
    let mut sql = String::from(
        "SELECT s.device_id, coalesce(d.name, s.device_id), s.function, s.version_key,
                s.minute_ms, s.invocations, s.errors, s.throttles, s.retries, s.fuel_sum,
                s.duration_sum_us, s.latency_sum_us, s.duration_hist, s.latency_hist
           FROM device_stats s LEFT JOIN devices d ON d.id = s.device_id
          WHERE s.minute_ms >= $1 AND s.minute_ms < $2",
    );
    let mut params: Vec<Value> = vec![since.into(), until.into()];
    if let Some(f) = &q.function {
        params.push(f.into());
        sql.push_str(&format!(" AND s.function = ${}", params.len()));
        if let Some(qual) = &q.qualifier {
            let keys = version_keys(tx, f, qual)?;
            let mut marks = Vec::new();
            for k in keys {
                params.push(k.into());
                marks.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(" AND s.version_key IN ({})", marks.join(", ")));
        }
    }
    let (scope_sql, scope_params) = device_scope(tx, &q.scope, "s.device_id", params.len())?;
    sql.push_str(&scope_sql);
    params.extend(scope_params);

    let mut totals = Bucket::default();
    let mut groups: BTreeMap<(String, String), Bucket> = BTreeMap::new();
    let mut devices: BTreeMap<(String, String), Bucket> = BTreeMap::new();
    let mut series = vec![Bucket::default(); points as usize];
    for r in tx.query(&sql, &params)? {
        let hist = |i: usize| -> std::result::Result<Histogram, StoreError> {
            match &r.0[i] {
                Value::Blob(b) => Histogram::from_bytes(b)
                    .map_err(|e| StoreError::Db(format!("stored histogram: {e}"))),
                other => Err(StoreError::Db(format!("histogram column holds {other:?}"))),
            }
        };
        let b = Bucket {
            invocations: r.u64(5)?,
            errors: r.u64(6)?,
            throttles: r.u64(7)?,
            retries: r.u64(8)?,
            fuel_sum: r.u64(9)?,
            duration_sum_us: r.u64(10)?,
            latency_sum_us: r.u64(11)?,
            duration: hist(12)?,
            latency: hist(13)?,
        };
        totals.merge(&b);
        let minute = r.i64(4)?;
        series[((minute - since) / step) as usize].merge(&b);
        groups
            .entry((r.text(2)?, r.text(3)?))
            .or_default()
            .merge(&b);
        devices
            .entry((r.text(1)?, r.text(0)?))
            .or_default()
            .merge(&b);
    }
    let mut groups: Vec<StatsGroup> = groups
        .into_iter()
        .map(|((function, version), b)| StatsGroup {
            function,
            version,
            figures: b.figures(),
        })
        .collect();
    // `latest` first, then versions in numeric order (as the agent orders them).
    groups.sort_by_key(|g| {
        (
            g.function.clone(),
            g.version.parse::<u64>().map_or(0, |v| v + 1),
        )
    });
    Ok(StatsReport {
        window_s: q.window_ms / 1000,
        since_ms: since,
        until_ms: until,
        totals: totals.figures(),
        groups,
        devices: devices
            .into_iter()
            .map(|((device, device_id), b)| DeviceFigures {
                device,
                device_id,
                figures: b.figures(),
            })
            .collect(),
        step_ms: step,
        series: series
            .iter()
            .enumerate()
            .map(|(i, b)| StatsPoint {
                start_ms: since + i as i64 * step,
                figures: b.figures(),
            })
            .collect(),
        dropped: super::fleet_logs::drops(tx, &q.scope)?,
    })
}

impl Service {
    /// Fleet statistics over uploaded buckets.
    pub async fn fleet_stats(&self, q: StatsQuery) -> Result<StatsReport> {
        self.store.tx(move |tx| report(tx, &q)).await
    }
}
