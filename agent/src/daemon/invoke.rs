//! The invocation path: resolve the qualifier, refuse a disabled function, run on the pool
//! (or throttle), commit the record, logs and kv writes, then answer.

use super::metrics::{InvocationLabels, VersionLabels};
use super::{version_label, Daemon};
use crate::pool::{OwnedEvent, Throttled};
use crate::runtime::{Invocation, LogLine as GuestLog, Outcome};
use crate::store::{
    CommitExtra, InvocationLog, InvocationOutcome, InvocationRecord, Level, LogFilter, LogRecord,
    OutboxMessage, Outcome as RecordOutcome, Qualifier, StoreError,
};

/// One invocation request.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// Function name.
    pub function: String,
    /// `latest`, a version or an alias.
    pub qualifier: Qualifier,
    /// The event (its id drives the weighted alias split).
    pub event: OwnedEvent,
    /// The invocation id to use (known in advance for async invocations).
    pub invocation_id: String,
}

/// A finished, committed invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// What the runtime reported.
    pub invocation: Invocation,
    /// Function name.
    pub function: String,
    /// The version that ran (`None` = latest).
    pub version: Option<u32>,
}

/// Why an invocation did not run.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Unknown function, version or alias, or a bad qualifier.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The function is disabled.
    #[error("function {0:?} is disabled; enable it to invoke it")]
    Disabled(String),
    /// Every instance busy and the queue full.
    #[error("function {function:?} is {throttled}")]
    Throttled {
        /// Function name.
        function: String,
        /// Details.
        throttled: Throttled,
    },
    /// The stored spec or module is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The record could not be committed.
    #[error("cannot commit the invocation: {0}")]
    Commit(String),
}

impl From<Outcome> for RecordOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => RecordOutcome::Success,
            Outcome::Error => RecordOutcome::Error,
            Outcome::Trap => RecordOutcome::Trap,
            Outcome::OutOfFuel => RecordOutcome::OutOfFuel,
            Outcome::MemoryLimit => RecordOutcome::MemoryLimit,
            Outcome::Timeout => RecordOutcome::Timeout,
            Outcome::EventTooLarge => RecordOutcome::EventTooLarge,
            Outcome::InitFailed => RecordOutcome::InitFailed,
        }
    }
}

impl Daemon {
    /// Runs one invocation to its committed end.
    pub async fn invoke(&self, req: InvokeRequest) -> Result<Invoked, InvokeError> {
        self.invoke_then(req, |_| CommitExtra::default()).await
    }

    /// [`Daemon::invoke`], committing what `finish` derives from the invocation (destinations,
    /// dead letters, MQTT dedup marks, ...) in the same transaction as its record. The function's
    /// own publishes go to the outbox with it when MQTT is configured.
    pub async fn invoke_then(
        &self,
        req: InvokeRequest,
        finish: impl FnOnce(&Invocation) -> CommitExtra + Send,
    ) -> Result<Invoked, InvokeError> {
        let d = self.clone();
        let (function, qualifier, id, event) = (
            req.function.clone(),
            req.qualifier.clone(),
            req.invocation_id.clone(),
            req.event.clone(),
        );
        // One hop to the blocking pool: resolve, then run right there if an instance is free
        // (a second hop cost ~11 µs of a ~70 µs in-process invocation, benches/daemon.rs).
        let (resolved, pool, ran) = tokio::task::spawn_blocking(move || {
            let r = d.store().resolve(&function, &qualifier, &event.id)?;
            if !r.enabled {
                return Err(InvokeError::Disabled(function));
            }
            let pool = d.pool_for(&r)?;
            let ran = pool.try_run_blocking(id, &event);
            Ok((r, pool, ran))
        })
        .await
        .expect("resolution and the guest call never panic")?;
        let version = resolved.version;
        let labels = VersionLabels {
            function: req.function.clone(),
            version: version_label(version),
        };
        let base = |outcome: RecordOutcome| InvocationRecord {
            id: req.invocation_id.clone(),
            function: req.function.clone(),
            version,
            qualifier: req.qualifier.to_string(),
            source: req.event.source.clone(),
            subject: req.event.subject.clone(),
            event_id: req.event.id.clone(),
            attempt: req.event.attempt,
            event_time_ms: req.event.time_ms as i64,
            start_ms: crate::runtime::now_ms() as i64,
            duration_us: 0,
            fuel_used: 0,
            outcome,
            error: None,
        };
        // `slot` (if the invocation wrote kv) is held until the commit below.
        let ran = match ran {
            Some(r) => Ok(r),
            // Every instance was busy: wait in the pool's queue (or be throttled).
            None => {
                pool.invoke(req.invocation_id.clone(), req.event.clone())
                    .await
            }
        };
        let (inv, init_logs, slot) = match ran {
            Ok(r) => r,
            Err(throttled) => {
                let mut record = base(RecordOutcome::Throttled);
                record.error = Some(throttled.to_string());
                self.metrics().throttles.get_or_create(&labels).inc();
                self.count(&labels, "throttled");
                let outcome = InvocationOutcome {
                    record,
                    logs: Vec::new(),
                    kv_writes: Vec::new(),
                    extra: Default::default(),
                };
                self.committer()
                    .commit(outcome)
                    .await
                    .map_err(InvokeError::Commit)?;
                return Err(InvokeError::Throttled {
                    function: req.function,
                    throttled,
                });
            }
        };
        self.update_warm_gauge(&req.function, version, &pool);
        let mut record = base(inv.outcome.into());
        record.start_ms = inv.started_ms as i64;
        record.duration_us = inv.duration.as_micros() as u64;
        record.fuel_used = inv.fuel_used;
        record.error = inv.error.clone();
        let outcome = InvocationOutcome {
            record,
            logs: invocation_logs(&inv, &init_logs, req.event.attempt),
            kv_writes: inv
                .effects
                .kv_writes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()).into())
                .collect(),
            extra: self.extra_for(&inv, finish(&inv)),
        };
        let committed = self.committer().commit(outcome).await;
        drop(slot);
        committed.map_err(InvokeError::Commit)?;
        let m = self.metrics();
        self.count(&labels, inv.outcome.as_str());
        if !inv.is_success() {
            m.errors.get_or_create(&labels).inc();
        }
        m.duration
            .get_or_create(&labels)
            .observe(inv.duration.as_secs_f64());
        Ok(Invoked {
            invocation: inv,
            function: req.function,
            version,
        })
    }

    fn count(&self, labels: &VersionLabels, outcome: &str) {
        let l = InvocationLabels {
            function: labels.function.clone(),
            version: labels.version.clone(),
            outcome: outcome.to_string(),
        };
        self.metrics().invocations.get_or_create(&l).inc();
    }

    /// The extras of a finished invocation: its publishes (on success, when MQTT is configured)
    /// first, then what the caller derived.
    fn extra_for(&self, inv: &Invocation, mut extra: CommitExtra) -> CommitExtra {
        if inv.is_success() && self.publishes_to_outbox() && !inv.effects.publishes.is_empty() {
            let mut outbox: Vec<OutboxMessage> = inv
                .effects
                .publishes
                .iter()
                .map(|p| OutboxMessage::new(&p.topic, p.data.clone(), p.qos as u8, None))
                .collect();
            outbox.append(&mut extra.outbox);
            extra.outbox = outbox;
        }
        extra
    }

    /// The committed log records of one invocation (for `--log-tail`).
    pub async fn invocation_logs(&self, invocation_id: &str) -> Result<Vec<LogRecord>, StoreError> {
        let d = self.clone();
        let filter = LogFilter {
            invocation_id: Some(invocation_id.to_string()),
            ..LogFilter::default()
        };
        tokio::task::spawn_blocking(move || d.store().logs(&filter))
            .await
            .expect("log query never panics")
    }
}

/// The lines an invocation commits: `edgefn_init`'s (if a new instance started), the guest's,
/// then the host's notes (dropped lines, publishes, a discarded instance). Notes of a failure,
/// and of a success after retries, name the `attempt` (async deliveries retry).
fn invocation_logs(inv: &Invocation, init_logs: &[GuestLog], attempt: u32) -> Vec<InvocationLog> {
    let line = |l: &GuestLog| InvocationLog {
        time_ms: l.time_ms as i64,
        level: l.level,
        text: l.text.clone(),
    };
    let mut logs: Vec<InvocationLog> = init_logs.iter().chain(&inv.logs).map(line).collect();
    let now = crate::runtime::now_ms() as i64;
    let mut note = |level: Level, text: String| {
        logs.push(InvocationLog {
            time_ms: now,
            level,
            text,
        })
    };
    if inv.logs_dropped > 0 {
        note(
            Level::Warn,
            format!(
                "{} log lines dropped (per-invocation limit)",
                inv.logs_dropped
            ),
        );
    }
    for p in &inv.effects.publishes {
        note(
            Level::Debug,
            format!(
                "publish {} qos={} bytes={}",
                p.topic,
                p.qos as u8,
                p.data.len()
            ),
        );
    }
    if !inv.is_success() && !inv.outcome.ends_instance() {
        // A function error: the outcome is in the logs too (`logs --level error`, and the only
        // trace of an async invocation's failure besides stats).
        note(
            Level::Error,
            format!(
                "invocation failed (attempt {attempt}): {}: {}",
                inv.outcome,
                inv.error.as_deref().unwrap_or("")
            ),
        );
    }
    if inv.is_success() && attempt > 1 {
        note(
            Level::Info,
            format!("invocation succeeded (attempt {attempt})"),
        );
    }
    if inv.outcome.ends_instance() {
        note(
            Level::Warn,
            format!(
                "instance failure (attempt {attempt}): {}: {}; the next event gets a fresh instance",
                inv.outcome,
                inv.error.as_deref().unwrap_or("")
            ),
        );
    }
    logs
}
