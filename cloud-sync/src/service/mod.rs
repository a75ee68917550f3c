//! The domain of the cloud service, over [`Store`]: one file per concept.
//!
//! - [`artifacts`]: module bytes stored once by sha256 (files, written atomically).
//! - [`functions`]: functions, `latest`, publish (signed manifests), versions, enable/disable.
//! - [`aliases`]: aliases with weighted second versions.
//! - [`mappings`]: event-source mappings (CRUD, pause/resume).
//! - [`signing`]: signing keys in the store: import, the active key, rotation, retirement.
//! - [`devices`]: enrollment tokens, enrollment, device credentials, device records.
//! - [`groups`]: device groups.
//! - [`desired`]: building, signing and caching a device's desired-state document, and the
//!   in-memory sequence per device that answers unchanged polls.
//! - [`presence`]: when devices were last seen, noted in memory and written in batches.
//! - [`deployments`]: creating deployments, per-device state, status reports, cancel.
//! - [`rollout`]: the rollout state machine (batches, health wait, failure threshold, rollback).
//! - [`telemetry`]: devices' upload batches stored exactly once; cloud retention of them.
//! - [`fleet_logs`], [`fleet_stats`]: queries over uploaded logs, invocations and stats buckets
//!   (percentiles from merged histograms).
//! - [`metrics`]: the cloud's own Prometheus metrics.
//! - [`broker`]: the connection to the cloud-side MQTT broker (`serve --mqtt`): nudges out,
//!   remote invoke requests out, their replies in.
//! - [`remote_invoke`]: a direct invocation relayed to one device: the signed request, the
//!   wait for its reply, and the offline error.
//!
//! Every change that may alter a device's desired state calls [`Service::changed`], which wakes
//! long-polls in this process and moves its change generation (the document cache's validity);
//! other replicas notice within their poll interval.

pub mod aliases;
pub mod artifacts;
pub mod broker;
pub mod deployments;
pub mod desired;
pub mod devices;
pub mod fleet_logs;
pub mod fleet_stats;
pub mod flows;
pub mod functions;
pub mod groups;
pub mod mappings;
pub mod metrics;
pub mod presence;
pub mod remote_invoke;
pub mod remote_jobs;
pub mod rollout;
pub mod signing;
pub mod telemetry;

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// Tunables of a running service.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a desired-state document is valid (re-issued after half of it).
    pub document_ttl_ms: i64,
    /// How long uploaded telemetry is kept (`serve --retention`; `None` = for ever).
    pub telemetry_retention_ms: Option<i64>,
    /// Validity of signing keys made by `key rotate`.
    pub key_validity_ms: i64,
    /// How long an enrollment token is valid.
    pub enroll_token_ttl_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            document_ttl_ms: 7 * 24 * 3600 * 1000,
            telemetry_retention_ms: Some(30 * 24 * 3600 * 1000),
            key_validity_ms: 365 * 24 * 3600 * 1000,
            enroll_token_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

/// The service: store, artifacts, keys, change notifications. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub store: Store,
    pub artifacts: artifacts::Artifacts,
    pub settings: Settings,
    /// The root public key devices trust.
    pub root_public: VerifyingKey,
    /// The root secret key, when this server holds it (needed by `key rotate`).
    pub root_secret: Option<Arc<ed25519_dalek::SigningKey>>,
    /// sha256 of the operator token.
    pub operator_token_hash: String,
    /// The cloud's own metrics (`GET /metrics`).
    pub metrics: Arc<metrics::CloudMetrics>,
    /// The change generation: moves on every [`Service::changed`] here and on every change
    /// another replica made (seen through the store's revision). Long-polls wait on it.
    changes: Arc<watch::Sender<u64>>,
    /// Per device, the sequence of its current document at a generation, so unchanged polls
    /// are answered without the store.
    documents: Arc<desired::DocCache>,
    /// Last-seen times noted by device requests, written to the store in batches.
    presence: Arc<presence::Presence>,
    /// The cloud-side MQTT broker, once `serve --mqtt` connected it: remote invoke needs it.
    broker: Arc<std::sync::OnceLock<Arc<broker::BrokerLink>>>,
}

impl Service {
    pub fn new(
        store: Store,
        artifacts: artifacts::Artifacts,
        settings: Settings,
        root_public: VerifyingKey,
        root_secret: Option<ed25519_dalek::SigningKey>,
        operator_token_hash: String,
    ) -> Service {
        Service {
            store,
            artifacts,
            settings,
            root_public,
            root_secret: root_secret.map(Arc::new),
            operator_token_hash,
            metrics: Arc::new(metrics::CloudMetrics::default()),
            changes: Arc::new(watch::channel(0).0),
            documents: Arc::default(),
            presence: Arc::default(),
            broker: Arc::default(),
        }
    }

    /// Relays remote invocations through `link` from now on (once; later calls are ignored).
    pub fn attach_broker(&self, link: Arc<broker::BrokerLink>) {
        let _ = self.broker.set(link);
    }

    /// The current change generation (see [`Service::changed`]).
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Something that may change desired states happened: wake long-polls here, and bump the
    /// store's revision so that other replicas' watchers ([`Service::watch_revision`]) wake
    /// theirs.
    pub fn changed(&self) {
        self.notify_local();
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store
                .tx(|tx| tx.execute("UPDATE revision SET value = value + 1 WHERE id = 1", &[]))
                .await
            {
                eprintln!("bumping the revision: {e}");
            }
        });
    }

    fn notify_local(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Polls the store's revision every `period` and wakes this process's long-polls and
    /// nudger when it moves (a change made by another replica). Runs for ever.
    pub async fn watch_revision(self, period: std::time::Duration) {
        let mut last = None;
        loop {
            let current = self
                .store
                .read(|tx| {
                    tx.query_one("SELECT value FROM revision WHERE id = 1", &[])?
                        .i64(0)
                })
                .await;
            match current {
                Ok(v) if last.is_some_and(|l| l != v) => {
                    last = Some(v);
                    self.notify_local();
                }
                Ok(v) => last = Some(v),
                Err(e) => eprintln!("watching the revision: {e}"),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// A receiver that sees [`Service::changed`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Result of service calls.
pub type Result<T> = std::result::Result<T, StoreError>;
