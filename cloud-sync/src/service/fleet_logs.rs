//! Fleet log and invocation queries over what devices uploaded: filters by function, device or
//! group, level, time, text and invocation, as the agent's `logs` has them, plus the records
//! each device dropped before upload.

use serde::Serialize;

use super::{Result, Service};
use crate::protocol::telemetry::LEVELS;
use crate::store::{StoreError, Tx, Value};

/// Largest `limit` of a query.
pub const MAX_LIMIT: u32 = 10_000;

/// Which devices a query covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeviceScope {
    #[default]
    All,
    /// A device id or name.
    Device(String),
    /// A group name.
    Group(String),
}

/// `AND column IN (...)` for a scope, with its parameters numbered after `n` others.
pub(crate) fn device_scope(
    tx: &mut dyn Tx,
    scope: &DeviceScope,
    column: &str,
    n: usize,
) -> std::result::Result<(String, Vec<Value>), StoreError> {
    match scope {
        DeviceScope::All => Ok((String::new(), Vec::new())),
        DeviceScope::Device(d) => {
            let id = tx
                .query_opt(
                    "SELECT id FROM devices WHERE id = $1 OR name = $1",
                    crate::params![d.as_str()],
                )?
                .ok_or_else(|| StoreError::not_found(format!("no device {d}")))?
                .text(0)?;
            Ok((format!(" AND {column} = ${}", n + 1), vec![id.into()]))
        }
        DeviceScope::Group(g) => {
            if tx
                .query_opt(
                    "SELECT name FROM device_groups WHERE name = $1",
                    crate::params![g.as_str()],
                )?
                .is_none()
            {
                return Err(StoreError::not_found(format!("no group {g}")));
            }
            Ok((
                format!(
                    " AND {column} IN (SELECT device_id FROM group_members WHERE group_name = ${})",
                    n + 1
                ),
                vec![g.into()],
            ))
        }
    }
}

/// Records a device dropped before they were uploaded, as its newest batch reported them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropInfo {
    pub device: String,
    pub device_id: String,
    pub logs: u64,
    pub invocations: u64,
    /// When its newest batch arrived.
    pub last_upload_ms: i64,
}

/// Drop counts of the devices in scope (only those that dropped something).
pub(crate) fn drops(
    tx: &mut dyn Tx,
    scope: &DeviceScope,
) -> std::result::Result<Vec<DropInfo>, StoreError> {
    let (scope_sql, params) = device_scope(tx, scope, "t.device_id", 0)?;
    let rows = tx.query(
        &format!(
            "SELECT t.device_id, coalesce(d.name, t.device_id), t.dropped_logs,
                    t.dropped_invocations, t.last_received_ms
               FROM device_telemetry t LEFT JOIN devices d ON d.id = t.device_id
              WHERE (t.dropped_logs > 0 OR t.dropped_invocations > 0){scope_sql}
              ORDER BY 2"
        ),
        &params,
    )?;
    rows.iter()
        .map(|r| {
            Ok(DropInfo {
                device_id: r.text(0)?,
                device: r.text(1)?,
                logs: r.u64(2)?,
                invocations: r.u64(3)?,
                last_upload_ms: r.i64(4)?,
            })
        })
        .collect()
}

/// Which log records to return.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub function: Option<String>,
    pub scope: DeviceScope,
    /// Minimum level, 0..=4.
    pub min_level: Option<u8>,
    /// `time_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// `time_ms < until_ms`.
    pub until_ms: Option<i64>,
    /// Case-insensitive substring of the text.
    pub grep: Option<String>,
    pub invocation: Option<String>,
    /// Only records the cloud received at or after this (follow mode; callers overlap and
    /// de-duplicate by `(device_id, seq)`).
    pub received_since_ms: Option<i64>,
    /// The newest `limit` matching records (oldest first); with `received_since_ms`, the first
    /// `limit` received.
    pub limit: u32,
}

/// A stored log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetLog {
    pub device: String,
    pub device_id: String,
    /// The device's log position.
    pub seq: i64,
    pub time_ms: i64,
    pub level: String,
    pub function: Option<String>,
    pub version: Option<i64>,
    pub invocation_id: Option<String>,
    pub text: String,
    pub received_ms: i64,
}

/// The answer of `GET /v1/logs`.
#[derive(Clone, Debug, Serialize)]
pub struct LogPage {
    pub records: Vec<FleetLog>,
    /// Devices in scope that dropped records before upload.
    pub dropped: Vec<DropInfo>,
}

fn like_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn logs(tx: &mut dyn Tx, q: &LogQuery) -> std::result::Result<LogPage, StoreError> {
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(StoreError::invalid(format!(
            "limit must be 1..={MAX_LIMIT}, not {}",
            q.limit
        )));
    }
    let mut sql = String::from(
        "SELECT l.device_id, coalesce(d.name, l.device_id), l.seq, l.time_ms, l.level,
                l.function, l.version, l.invocation_id, l.text, l.received_ms
           FROM device_logs l LEFT JOIN devices d ON d.id = l.device_id WHERE 1 = 1",
    );
    let mut params: Vec<Value> = Vec::new();
    let mut add = |sql: &mut String, cond: &str, v: Value| {
        params.push(v);
        sql.push_str(&cond.replace('#', &format!("${}", params.len())));
    };
    if let Some(f) = &q.function {
        add(&mut sql, " AND l.function = #", f.into());
    }
    if let Some(l) = q.min_level {
        add(&mut sql, " AND l.level >= #", i64::from(l).into());
    }
    if let Some(t) = q.since_ms {
        add(&mut sql, " AND l.time_ms >= #", t.into());
    }
    if let Some(t) = q.until_ms {
        add(&mut sql, " AND l.time_ms < #", t.into());
    }
    if let Some(g) = &q.grep {
        add(
            &mut sql,
            " AND lower(l.text) LIKE # ESCAPE '\\'",
            like_pattern(g).into(),
        );
    }
    if let Some(i) = &q.invocation {
        add(&mut sql, " AND l.invocation_id = #", i.into());
    }
    if let Some(r) = q.received_since_ms {
        add(&mut sql, " AND l.received_ms >= #", r.into());
    }
    let (scope_sql, scope_params) = device_scope(tx, &q.scope, "l.device_id", params.len())?;
    sql.push_str(&scope_sql);
    params.extend(scope_params);
    let follow = q.received_since_ms.is_some();
    sql.push_str(if follow {
        " ORDER BY l.received_ms, l.time_ms, l.device_id, l.seq"
    } else {
        " ORDER BY l.time_ms DESC, l.device_id DESC, l.seq DESC"
    });
    sql.push_str(&format!(" LIMIT {}", q.limit));
    let mut records = tx
        .query(&sql, &params)?
        .iter()
        .map(|r| {
            Ok(FleetLog {
                device_id: r.text(0)?,
                device: r.text(1)?,
                seq: r.i64(2)?,
                time_ms: r.i64(3)?,
                level: LEVELS[r.i64(4)?.clamp(0, 4) as usize].to_owned(),
                function: r.opt_text(5)?,
                version: r.opt_i64(6)?,
                invocation_id: r.opt_text(7)?,
                text: r.text(8)?,
                received_ms: r.i64(9)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, StoreError>>()?;
    if follow {
        records.sort_by_key(|r| (r.time_ms, r.device_id.clone(), r.seq));
    } else {
        records.reverse();
    }
    Ok(LogPage {
        records,
        dropped: drops(tx, &q.scope)?,
    })
}

/// Which invocation records to return (the newest `limit`, oldest first).
#[derive(Clone, Debug, Default)]
pub struct InvocationQuery {
    pub function: Option<String>,
    pub scope: DeviceScope,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub id: Option<String>,
    pub limit: u32,
}

/// A stored invocation record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetInvocation {
    pub device: String,
    pub device_id: String,
    pub seq: i64,
    pub id: String,
    pub function: String,
    pub version: Option<i64>,
    pub qualifier: String,
    pub source: String,
    pub subject: String,
    pub event_id: String,
    pub attempt: i64,
    pub event_time_ms: i64,
    pub start_ms: i64,
    pub duration_us: i64,
    pub fuel_used: i64,
    pub outcome: String,
    pub error: Option<String>,
}

fn invocations(
    tx: &mut dyn Tx,
    q: &InvocationQuery,
) -> std::result::Result<Vec<FleetInvocation>, StoreError> {
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(StoreError::invalid(format!(
            "limit must be 1..={MAX_LIMIT}, not {}",
            q.limit
        )));
    }
    let mut sql = String::from(
        "SELECT i.device_id, coalesce(d.name, i.device_id), i.seq, i.id, i.function, i.version,
                i.qualifier, i.source, i.subject, i.event_id, i.attempt, i.event_time_ms,
                i.start_ms, i.duration_us, i.fuel_used, i.outcome, i.error
           FROM device_invocations i LEFT JOIN devices d ON d.id = i.device_id WHERE 1 = 1",
    );
    let mut params: Vec<Value> = Vec::new();
    let mut add = |sql: &mut String, cond: &str, v: Value| {
        params.push(v);
        sql.push_str(&cond.replace('#', &format!("${}", params.len())));
    };
    if let Some(f) = &q.function {
        add(&mut sql, " AND i.function = #", f.into());
    }
    if let Some(t) = q.since_ms {
        add(&mut sql, " AND i.start_ms >= #", t.into());
    }
    if let Some(t) = q.until_ms {
        add(&mut sql, " AND i.start_ms < #", t.into());
    }
    if let Some(id) = &q.id {
        add(&mut sql, " AND i.id = #", id.into());
    }
    let (scope_sql, scope_params) = device_scope(tx, &q.scope, "i.device_id", params.len())?;
    sql.push_str(&scope_sql);
    params.extend(scope_params);
    sql.push_str(&format!(
        " ORDER BY i.start_ms DESC, i.device_id DESC, i.seq DESC LIMIT {}",
        q.limit
    ));
    let mut out = tx
        .query(&sql, &params)?
        .iter()
        .map(|r| {
            Ok(FleetInvocation {
                device_id: r.text(0)?,
                device: r.text(1)?,
                seq: r.i64(2)?,
                id: r.text(3)?,
                function: r.text(4)?,
                version: r.opt_i64(5)?,
                qualifier: r.text(6)?,
                source: r.text(7)?,
                subject: r.text(8)?,
                event_id: r.text(9)?,
                attempt: r.i64(10)?,
                event_time_ms: r.i64(11)?,
                start_ms: r.i64(12)?,
                duration_us: r.i64(13)?,
                fuel_used: r.i64(14)?,
                outcome: r.text(15)?,
                error: r.opt_text(16)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, StoreError>>()?;
    out.reverse();
    Ok(out)
}

impl Service {
    /// Fleet log records.
    pub async fn fleet_logs(&self, q: LogQuery) -> Result<LogPage> {
        self.store.tx(move |tx| logs(tx, &q)).await
    }

    /// Fleet invocation records.
    pub async fn fleet_invocations(&self, q: InvocationQuery) -> Result<Vec<FleetInvocation>> {
        self.store.tx(move |tx| invocations(tx, &q)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grep_patterns_escape_wildcards_and_fold_case() {
        assert_eq!(like_pattern("50% Done_"), "%50\\% done\\_%");
        assert_eq!(like_pattern("a\\b"), "%a\\\\b%");
    }
}
