//! The long-running agent: the store, the function pools, the invocation path, group commit,
//! metrics and retention, wired in one place. The admin API ([`crate::api`]) and (later) the
//! triggers drive it through [`Daemon`].

mod committer;
mod direct;
mod invoke;
mod metrics;

pub use committer::Committer;
pub use invoke::{Finish, InvokeError, InvokeRequest, Invoked};
pub use metrics::Metrics;

use crate::config::AgentConfig;
use crate::pool::Pool;
use crate::runtime::{KvRead, Runtime};
use crate::spec::FunctionSpec;
use crate::store::{Resolved, Retention, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The agent's shared state; cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

/// A pool's key: (function, version; `None` = latest).
type PoolKey = (String, Option<u32>);

struct Inner {
    store: Store,
    runtime: Runtime,
    /// Pools by (function, version; `None` = latest). Each remembers the module and spec it was
    /// built from, so a changed `latest` gets a fresh pool on its next invocation.
    pools: Mutex<HashMap<PoolKey, Arc<PoolEntry>>>,
    committer: Committer,
    metrics: Metrics,
    retention: Retention,
    retention_interval: Duration,
    /// Set when an MQTT link runs: function publishes then go to the durable outbox (else they
    /// are only logged).
    outbox: std::sync::atomic::AtomicBool,
}

struct PoolEntry {
    sha256: String,
    spec: String,
    pool: Arc<Pool>,
}

/// The committed kv data of one function, read through the store.
struct StoreKv {
    store: Store,
    function: String,
}

impl KvRead for StoreKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.store
            .kv_get(&self.function, key)
            .map_err(|e| e.to_string())
    }
}

impl Daemon {
    /// A daemon over `store` configured by `config`.
    pub fn new(store: Store, config: &AgentConfig) -> Daemon {
        let committer = Committer::start(store.clone(), config.max_batch);
        let retention = Retention {
            max_age: Some(config.max_age),
            max_log_rows: Some(config.max_log_records),
            max_invocation_rows: Some(config.max_invocation_records),
            max_record_bytes: Some(config.upload.disk_budget),
            ..Retention::default()
        };
        Daemon {
            inner: Arc::new(Inner {
                store,
                runtime: Runtime::new(),
                pools: Mutex::new(HashMap::new()),
                committer,
                metrics: Metrics::default(),
                retention,
                retention_interval: config.retention_interval,
                outbox: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Sends function publishes to the durable outbox from now on (an MQTT link drains it).
    pub fn enable_outbox(&self) {
        self.inner
            .outbox
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn publishes_to_outbox(&self) -> bool {
        self.inner.outbox.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.inner.committer
    }

    /// Forgets the pools of `function` (after it changed or was deleted); running invocations
    /// finish on the instances they hold.
    pub fn invalidate(&self, function: &str) {
        let mut pools = self.inner.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|(f, v), _| {
            let keep = f != function;
            if !keep {
                let labels = metrics::VersionLabels {
                    function: f.clone(),
                    version: version_label(*v),
                };
                self.inner
                    .metrics
                    .warm_instances
                    .get_or_create(&labels)
                    .set(0);
            }
            keep
        });
    }

    /// The pool for a resolved function version, created (module loaded and validated, min
    /// instances started) on first use. Blocking: call it off the reactor.
    pub(crate) fn pool_for(&self, r: &Resolved) -> Result<Arc<Pool>, InvokeError> {
        let key = (r.function.clone(), r.version);
        if let Some(e) = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if e.sha256 == r.sha256 && e.spec == r.spec {
                return Ok(e.pool.clone());
            }
        }
        let spec = FunctionSpec::parse(&r.spec).map_err(|e| InvokeError::Invalid(e.to_string()))?;
        let bytes = self
            .inner
            .store
            .module(&r.sha256)
            .map_err(InvokeError::Store)?;
        let module = self.inner.runtime.load(&bytes).map_err(|e| {
            InvokeError::Invalid(format!("stored module of {} cannot load: {e}", r.function))
        })?;
        let kv = Arc::new(StoreKv {
            store: self.inner.store.clone(),
            function: r.function.clone(),
        });
        let pool = Arc::new(Pool::new(self.inner.runtime.clone(), module, &spec, kv));
        {
            // Two first invocations may race here: the first pool in wins, so a version never
            // has two pools (two concurrency bounds, two views of uncommitted kv).
            let mut pools = self.inner.pools.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = pools.get(&key) {
                if e.sha256 == r.sha256 && e.spec == r.spec {
                    return Ok(e.pool.clone());
                }
            }
            let entry = Arc::new(PoolEntry {
                sha256: r.sha256.clone(),
                spec: r.spec.clone(),
                pool: pool.clone(),
            });
            pools.insert(key, entry);
        }
        for e in pool.prewarm(spec.min_instances) {
            // What `edgefn_init` logged says why (the SDK logs its error there).
            let mut lines: Vec<crate::store::LogLine> = match &e {
                crate::runtime::InstanceError::Init { logs, .. } => logs
                    .iter()
                    .map(|l| crate::store::LogLine {
                        time_ms: l.time_ms as i64,
                        level: l.level,
                        function: Some(r.function.clone()),
                        version: r.version,
                        invocation_id: None,
                        text: l.text.clone(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            lines.push(crate::store::LogLine {
                time_ms: crate::runtime::now_ms() as i64,
                level: crate::store::Level::Warn,
                function: Some(r.function.clone()),
                version: r.version,
                invocation_id: None,
                text: format!("warm instance failed to start: {e}"),
            });
            if let Err(e) = self.inner.store.append_logs(&lines) {
                eprintln!("edgefn-agent: cannot write a log line: {e}");
            }
        }
        self.update_warm_gauge(&r.function, r.version, &pool);
        Ok(pool)
    }

    fn update_warm_gauge(&self, function: &str, version: Option<u32>, pool: &Pool) {
        let labels = metrics::VersionLabels {
            function: function.to_string(),
            version: version_label(version),
        };
        self.inner
            .metrics
            .warm_instances
            .get_or_create(&labels)
            .set(pool.live_instances() as i64);
    }

    /// Appends an agent-side log line (about a function, or the agent when `function` is None).
    pub fn log_agent(
        &self,
        function: Option<&str>,
        version: Option<u32>,
        level: crate::store::Level,
        text: String,
    ) {
        let line = crate::store::LogLine {
            time_ms: crate::runtime::now_ms() as i64,
            level,
            function: function.map(str::to_string),
            version,
            invocation_id: None,
            text,
        };
        if let Err(e) = self.inner.store.append_logs(&[line]) {
            eprintln!("edgefn-agent: cannot write a log line: {e}");
        }
    }

    /// Starts the `min_instances` of every enabled function (latest and every aliased version).
    /// Blocking; run it in the background after start-up.
    pub fn prewarm_all(&self) -> Result<(), StoreError> {
        for f in self.inner.store.list_functions()? {
            self.prewarm_function(&f.name)?;
        }
        Ok(())
    }

    /// Starts the `min_instances` of `name`'s latest and aliased versions, if it is enabled
    /// (after start-up, and after a change that dropped or added its pools). Versions that are
    /// already warm are left as they are. Blocking.
    pub fn prewarm_function(&self, name: &str) -> Result<(), StoreError> {
        let detail = self.inner.store.get_function(name)?;
        if !detail.summary.enabled {
            return Ok(());
        }
        let mut qualifiers = vec![crate::store::Qualifier::Latest];
        for a in &detail.aliases {
            qualifiers.push(crate::store::Qualifier::Version(a.target.version));
            if let Some(also) = &a.target.also {
                qualifiers.push(crate::store::Qualifier::Version(also.version));
            }
        }
        for q in qualifiers {
            let r = self.inner.store.resolve(name, &q, "")?;
            if FunctionSpec::parse(&r.spec)
                .map(|s| s.min_instances > 0)
                .unwrap_or(false)
            {
                if let Err(e) = self.pool_for(&r) {
                    self.log_agent(
                        Some(name),
                        r.version,
                        crate::store::Level::Warn,
                        format!("cannot prewarm: {e}"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs retention every configured interval until the task is dropped.
    pub async fn retention_loop(self) {
        let mut tick = tokio::time::interval(self.inner.retention_interval);
        loop {
            tick.tick().await;
            let d = self.clone();
            let result = tokio::task::spawn_blocking(move || {
                d.inner.store.prune(&d.inner.retention)?;
                // Hand what pruning (and the invocations since the last pass) freed back to
                // the kernel: a gateway's RSS should fall back after a burst.
                crate::memory::trim();
                d.inner.store.dropped_totals()
            })
            .await;
            match result {
                Ok(Ok(totals)) => {
                    let m = &self.inner.metrics.records_dropped;
                    let kinds = [
                        ("logs", totals.logs),
                        ("invocations", totals.invocations),
                        ("stats_buckets", totals.stats_buckets),
                    ];
                    for (kind, n) in kinds {
                        let labels = metrics::KindLabels { kind: kind.into() };
                        m.get_or_create(&labels).set(n as i64);
                    }
                }
                Ok(Err(e)) => eprintln!("edgefn-agent: retention failed: {e}"),
                Err(e) => eprintln!("edgefn-agent: retention task failed: {e}"),
            }
        }
    }
}

/// `latest` or the version number, as metrics and records name versions.
pub fn version_label(version: Option<u32>) -> String {
    version.map_or_else(|| "latest".to_string(), |v| v.to_string())
}
