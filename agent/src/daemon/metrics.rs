//! Prometheus metrics of the agent (`GET /metrics`): per function and version, invocations by
//! outcome, throttles, a duration histogram and warm instances.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of per-invocation metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// Function name.
    pub function: String,
    /// Version number or `latest`.
    pub version: String,
    /// How it ended (`success`, `error`, `trap`, ..., `throttled`).
    pub outcome: String,
}

/// Labels of per-version metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Function name.
    pub function: String,
    /// Version number or `latest`.
    pub version: String,
}

/// Labels of the retention metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `logs`, `invocations` or `stats_buckets`.
    pub kind: String,
}

/// The agent's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Invocations by outcome (throttled ones included, with outcome `throttled`).
    pub invocations: Family<InvocationLabels, Counter>,
    /// Failed invocations (any outcome but success and throttled).
    pub errors: Family<VersionLabels, Counter>,
    /// Invocations refused because max_concurrency and max_queue were reached.
    pub throttles: Family<VersionLabels, Counter>,
    /// Guest time per invocation, seconds.
    pub duration: Family<VersionLabels, Histogram>,
    /// Live instances (warm or running).
    pub warm_instances: Family<VersionLabels, Gauge>,
    /// Records deleted by retention since the store was created (age or row bounds).
    pub records_dropped: Family<KindLabels, Gauge>,
    /// MQTT publishes of successful invocations, committed to the outbox (they have no log
    /// line: one per publish was most of the log rows under MQTT load).
    pub publishes: Family<VersionLabels, Counter>,
    /// Telemetry batches the cloud acknowledged (sync/upload.rs): with the next three, whether
    /// and how fast a device drains its records to the cloud.
    pub upload_batches: Counter,
    /// Log + invocation records in acknowledged batches.
    pub upload_records: Counter,
    /// Compressed bytes of acknowledged batches (what went over the wire).
    pub upload_bytes: Counter,
    /// Upload attempts that failed (cloud unreachable or refusing).
    pub upload_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefn");
        let invocations = Family::<InvocationLabels, Counter>::default();
        let errors = Family::<VersionLabels, Counter>::default();
        let throttles = Family::<VersionLabels, Counter>::default();
        // 10 µs .. ~5 s in factor-2.5 steps.
        let duration = Family::<VersionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1e-5, 2.5, 15,
            ))
        });
        let warm_instances = Family::<VersionLabels, Gauge>::default();
        let records_dropped = Family::<KindLabels, Gauge>::default();
        let publishes = Family::<VersionLabels, Counter>::default();
        registry.register("invocations", "Invocations by outcome", invocations.clone());
        registry.register("errors", "Failed invocations", errors.clone());
        registry.register(
            "throttles",
            "Invocations refused by max_concurrency/max_queue",
            throttles.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Guest time per invocation",
            duration.clone(),
        );
        registry.register(
            "warm_instances",
            "Live instances per function version",
            warm_instances.clone(),
        );
        registry.register(
            "records_dropped",
            "Records deleted by retention (all time)",
            records_dropped.clone(),
        );
        registry.register(
            "publishes",
            "MQTT publishes of successful invocations (to the outbox)",
            publishes.clone(),
        );
        let upload_batches = Counter::default();
        let upload_records = Counter::default();
        let upload_bytes = Counter::default();
        let upload_failures = Counter::default();
        registry.register(
            "upload_batches",
            "Telemetry batches the cloud acknowledged",
            upload_batches.clone(),
        );
        registry.register(
            "upload_records",
            "Log and invocation records in acknowledged batches",
            upload_records.clone(),
        );
        registry.register(
            "upload_bytes",
            "Compressed bytes of acknowledged telemetry batches",
            upload_bytes.clone(),
        );
        registry.register(
            "upload_failures",
            "Telemetry upload attempts that failed",
            upload_failures.clone(),
        );
        Metrics {
            upload_batches,
            upload_records,
            upload_bytes,
            upload_failures,
            registry,
            invocations,
            errors,
            throttles,
            duration,
            warm_instances,
            records_dropped,
            publishes,
        }
    }
}

impl Metrics {
    /// A telemetry batch was acknowledged.
    pub fn upload_sent(&self, records: u64, wire_bytes: u64) {
        self.upload_batches.inc();
        self.upload_records.inc_by(records);
        self.upload_bytes.inc_by(wire_bytes);
    }

    /// A telemetry upload attempt failed.
    pub fn upload_failed(&self) {
        self.upload_failures.inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
