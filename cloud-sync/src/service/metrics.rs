//! The cloud's own health in Prometheus text format (`GET /metrics`): HTTP requests by route and
//! status with their latency, telemetry ingest (batches stored / duplicate, records, wire
//! bytes), cloud retention deletions, and database errors. The agent's metrics crate
//! (prometheus-client: no global registry, no dependencies of note) so the workspace has one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::StoreError;

/// Store errors seen by request handlers and background tasks (see [`note_store_error`]): one
/// process-wide count, because errors are converted where no service handle is at hand.
static DB_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts `e` if it is a database failure (not a rule of the domain refusing a request).
pub fn note_store_error(e: &StoreError) {
    if matches!(
        e,
        StoreError::Db(_) | StoreError::Retry(_) | StoreError::Config(_)
    ) {
        DB_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The matched route (`/v1/functions/{name}`), so label values stay few.
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `stored` or `duplicate`.
    pub result: String,
}

/// The metrics and their registry.
pub struct CloudMetrics {
    registry: Registry,
    /// HTTP requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer, seconds (long-polls included: they wait by design).
    pub request_seconds: Family<RouteLabels, Histogram>,
    /// Telemetry batches by result.
    pub ingest_batches: Family<ResultLabels, Counter>,
    /// Records stored by ingest (`logs`, `invocations`, `stats`).
    pub ingest_records: Family<KindLabels, Counter>,
    /// Compressed bytes of stored batches.
    pub ingest_bytes: Counter,
    /// Rows deleted by cloud retention (`logs`, `invocations`, `stats`, `batches`).
    pub retention_deleted: Family<KindLabels, Counter>,
    /// Mirrors [`DB_ERRORS`] at every scrape.
    db_errors: Counter,
}

impl Default for CloudMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefn_cloud");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        let ingest_batches = Family::<ResultLabels, Counter>::default();
        let ingest_records = Family::<KindLabels, Counter>::default();
        let ingest_bytes = Counter::default();
        let retention_deleted = Family::<KindLabels, Counter>::default();
        let db_errors = Counter::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            request_seconds.clone(),
        );
        registry.register(
            "ingest_batches",
            "Telemetry batches received, stored or duplicate",
            ingest_batches.clone(),
        );
        registry.register(
            "ingest_records",
            "Telemetry records stored",
            ingest_records.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Compressed bytes of stored telemetry batches",
            ingest_bytes.clone(),
        );
        registry.register(
            "retention_deleted",
            "Rows deleted by cloud retention",
            retention_deleted.clone(),
        );
        registry.register(
            "db_errors",
            "Database errors seen by requests and background tasks",
            db_errors.clone(),
        );
        CloudMetrics {
            registry,
            requests,
            request_seconds,
            ingest_batches,
            ingest_records,
            ingest_bytes,
            retention_deleted,
            db_errors,
        }
    }
}

impl CloudMetrics {
    /// One answered request.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// One ingested batch.
    pub fn ingested(&self, i: &super::telemetry::Ingested, wire_bytes: u64) {
        let result = if i.duplicate { "duplicate" } else { "stored" };
        self.ingest_batches
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if i.duplicate {
            return;
        }
        for (kind, n) in [
            ("logs", i.logs),
            ("invocations", i.invocations),
            ("stats", i.stats),
        ] {
            self.ingest_records
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(n);
        }
        self.ingest_bytes.inc_by(wire_bytes);
    }

    /// One retention run.
    pub fn pruned(&self, p: &super::telemetry::Pruned) {
        for (kind, n) in [
            ("logs", p.logs),
            ("invocations", p.invocations),
            ("stats", p.stats),
            ("batches", p.batches),
        ] {
            self.retention_deleted
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(n);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let seen = DB_ERRORS.load(Ordering::Relaxed);
        let counted = self.db_errors.get();
        if seen > counted {
            self.db_errors.inc_by(seen - counted);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
