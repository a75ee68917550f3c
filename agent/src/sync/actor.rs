//! The sync actor: state + inbox + `run(self)` on a thread of its own (blocking HTTP, blocking
//! store calls; never on the daemon's reactor).
//!
//! States of one round: poll (long-poll with the ETag) -> verify -> stage (download missing
//! modules) -> activate (one transaction) -> health window (init check of every new version,
//! then failed invocations counted) -> healthy, or rolled back. A refused document (bad
//! signature, unknown key, expired, sequence going backwards, module hash/size mismatch, a name
//! held by a local function) changes nothing on the device; the reason is logged (stderr and
//! the agent's log records) and reported as `failed` for the deployments it brought. While the
//! cloud is unreachable the agent keeps running its local state and retries with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use edgefn_cloud::protocol::keycert::decode_public;
use edgefn_cloud::protocol::{
    verify_desired, DeploymentReport, DesiredDocument, ReportState, StatusReport, VerifiedState,
};

use super::client::{ClientError, CloudClient, Desired};
use super::enrollment::Enrollment;
use super::stage::{pause_here, StageError, Stager};
use super::test_hook;
use crate::daemon::Daemon;
use crate::store::cloud::{
    CloudAlias, CloudFlow, CloudFunction, CloudMapping, CloudState, CloudVersion, Health,
};
use crate::store::{Destination, Level, Qualifier, Source, StoreError};

/// What the actor's inbox takes.
#[derive(Debug, Clone)]
pub enum SyncMessage {
    /// The cloud says the desired state moved to this sequence: poll at once.
    Nudge(u64),
}

/// The `[cloud]` settings the actor uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSettings {
    /// Run sync when enrolled.
    pub enabled: bool,
    /// Long-poll wait (`?wait=`), at most 300 s.
    pub poll_wait: Duration,
    /// How long a new version is watched after activation.
    pub health_window: Duration,
    /// Failed invocations (traps, limits, init failures) of a new version within the window
    /// that trigger a rollback.
    pub health_failures: u64,
    /// Longest pause between retries while the cloud is unreachable.
    pub retry_max: Duration,
    /// A cloud-side MQTT broker to take nudges from (`mqtt://` or `mqtts://` with its own CA
    /// and client certificate: the same connection options as the trigger link's broker, set
    /// separately under `[cloud]`).
    pub nudge_mqtt: Option<crate::triggers::mqtt::MqttConfig>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            enabled: true,
            poll_wait: Duration::from_secs(60),
            health_window: Duration::from_secs(30),
            health_failures: 3,
            retry_max: Duration::from_secs(60),
            nudge_mqtt: None,
        }
    }
}

/// Why a document was not applied.
enum Refusal {
    /// For good (until the document changes): report it.
    Refused(String),
    /// Transient (network): retry later with the same ETag.
    Later(String),
}

pub struct SyncActor {
    daemon: Daemon,
    client: CloudClient,
    enrollment: Enrollment,
    /// The root public key (base64): the trust anchor from the enrollment.
    root: String,
    settings: SyncSettings,
    stager: Stager,
    inbox: Receiver<SyncMessage>,
    /// ETag of the last document handled (applied or refused for good).
    etag: Option<String>,
    /// Deployments of refused documents, with why (reported `failed`).
    refused: BTreeMap<String, String>,
    /// The last report the cloud accepted.
    reported: Option<StatusReport>,
    /// Versions whose init check passed in the current health window: (sequence, f, v).
    init_checked: BTreeSet<(u64, String, u32)>,
    /// The last refusal logged (not repeated every poll).
    last_problem: Option<String>,
}

impl SyncActor {
    pub fn new(
        daemon: Daemon,
        data_dir: &Path,
        enrollment: Enrollment,
        settings: SyncSettings,
        inbox: Receiver<SyncMessage>,
    ) -> Result<SyncActor, String> {
        decode_public(&enrollment.root_public_key)
            .map_err(|e| format!("enrollment: root public key: {e}"))?;
        let root = enrollment.root_public_key.clone();
        let client = CloudClient::new(
            &enrollment.cloud,
            enrollment.ca_file.as_deref(),
            Some(&enrollment.credential),
        )
        .map_err(|e| e.to_string())?;
        Ok(SyncActor {
            daemon,
            client,
            enrollment,
            root,
            settings,
            stager: Stager::new(data_dir),
            inbox,
            etag: None,
            refused: BTreeMap::new(),
            reported: None,
            init_checked: BTreeSet::new(),
            last_problem: None,
        })
    }

    fn log(&self, level: Level, text: String) {
        eprintln!("edgefn-agent: sync: {text}");
        self.daemon
            .log_agent(None, None, level, format!("sync: {text}"));
    }

    /// Runs for ever.
    pub fn run(mut self) {
        self.log(
            Level::Info,
            format!(
                "device {} ({}) syncing with {}",
                self.enrollment.device_id, self.enrollment.device_name, self.enrollment.cloud
            ),
        );
        match self
            .daemon
            .store()
            .cloud_bind_device(&self.enrollment.device_id)
        {
            Ok(true) => self.log(
                Level::Warn,
                "enrolled as another device: the previous device's sequence is forgotten".into(),
            ),
            Ok(false) => {}
            Err(e) => self.log(Level::Error, format!("store: {e}")),
        }
        let mut backoff = Duration::from_millis(500);
        let mut unreachable = false;
        let mut poll_now = true;
        loop {
            self.check_health();
            self.send_report();
            let pending = matches!(
                self.daemon.store().cloud_slots(),
                Ok((Some(c), _)) if c.health == Health::Pending
            );
            // During a health window the actor wakes up every second to watch it.
            let wait = if poll_now {
                0
            } else if pending {
                1
            } else {
                self.settings.poll_wait.as_secs().clamp(1, 300)
            };
            poll_now = false;
            match self.client.desired(self.etag.as_deref(), wait) {
                Ok(answer) => {
                    if unreachable {
                        self.log(Level::Info, "the cloud is reachable again".into());
                        unreachable = false;
                    }
                    backoff = Duration::from_millis(500);
                    if let Desired::Document { doc, etag } = answer {
                        match self.handle(&doc) {
                            Ok(()) => self.etag = etag,
                            Err(Refusal::Refused(why)) => {
                                if self.last_problem.as_deref() != Some(why.as_str()) {
                                    self.log(Level::Error, format!("desired state refused: {why}"));
                                    self.last_problem = Some(why);
                                }
                                self.etag = etag;
                            }
                            Err(Refusal::Later(why)) => {
                                self.log(Level::Warn, format!("{why}; retrying in {backoff:?}"));
                                poll_now = self.sleep(backoff);
                                backoff = (backoff * 2).min(self.settings.retry_max);
                            }
                        }
                    }
                }
                Err(e) => {
                    if !unreachable {
                        self.log(
                            Level::Warn,
                            format!("{e}; running the local state, retrying with backoff"),
                        );
                        unreachable = true;
                    }
                    if let ClientError::Refused { status: 401, .. } = e {
                        backoff = self.settings.retry_max;
                    }
                    poll_now = self.sleep(backoff);
                    backoff = (backoff * 2).min(self.settings.retry_max);
                }
            }
            // Nudges that came while polling: poll again at once if one is news.
            while let Ok(SyncMessage::Nudge(seq)) = self.inbox.try_recv() {
                eprintln!("edgefn-agent: sync: nudged (sequence {seq})");
                if self.etag.as_deref() != Some(&format!("\"{seq}\"")) {
                    poll_now = true;
                }
            }
        }
    }

    /// Sleeps up to `d`; `true` if a nudge woke it.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.inbox.recv_timeout(left) {
                Ok(SyncMessage::Nudge(seq)) => {
                    eprintln!("edgefn-agent: sync: nudged (sequence {seq})");
                    return true;
                }
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left),
            }
        }
    }

    /// Verifies, stages and activates one document.
    fn handle(&mut self, doc: &DesiredDocument) -> Result<(), Refusal> {
        let store = self.daemon.store().clone();
        let last = store
            .cloud_sequence()
            .map_err(|e| Refusal::Later(format!("store: {e}")))?;
        let now = edgefn_cloud::now_ms();
        let root = decode_public(&self.root)
            .map_err(|e| Refusal::Refused(format!("enrollment: root public key: {e}")))?;
        let verified = match verify_desired(
            doc,
            &root,
            &self.enrollment.device_id,
            last.as_ref().map(|(s, _)| *s),
            now,
        ) {
            Ok(v) => v,
            Err(e) => {
                let why = e.to_string();
                self.refuse_deployments(unverified_deployments(doc), &why);
                return Err(Refusal::Refused(why));
            }
        };
        if last.as_ref().is_some_and(|(s, _)| *s == verified.sequence) {
            return Ok(()); // the state we run
        }
        let deployments: BTreeSet<String> = verified
            .functions
            .iter()
            .map(|f| f.deployment.clone())
            .chain(verified.mappings.iter().map(|m| m.deployment.clone()))
            .chain(verified.flows.iter().map(|f| f.deployment.clone()))
            .collect();
        let failures = store
            .cloud_failures()
            .map_err(|e| Refusal::Later(format!("store: {e}")))?;
        if let Some(f) = failures
            .iter()
            .find(|f| deployments.contains(&f.deployment))
        {
            let why = format!(
                "deployment {} failed on this device and was rolled back ({}); waiting for a \
                 desired state without it",
                f.deployment, f.error
            );
            return Err(Refusal::Refused(why));
        }
        let state = match to_cloud_state(&verified) {
            Ok(s) => s,
            Err(why) => {
                self.refuse_deployments(deployments, &why);
                return Err(Refusal::Refused(why));
            }
        };
        // Stage: download what the store lacks.
        let missing: BTreeSet<String> = store
            .missing_modules(state.modules().iter())
            .map_err(|e| Refusal::Later(format!("store: {e}")))?
            .into_iter()
            .collect();
        let mut staged = HashMap::new();
        for f in &verified.functions {
            for m in &f.versions {
                if missing.contains(&m.sha256) && !staged.contains_key(&m.sha256) {
                    match self.stager.fetch(&self.client, m) {
                        Ok(bytes) => {
                            staged.insert(m.sha256.clone(), bytes);
                        }
                        Err(StageError::Verify(e)) => {
                            let why = e.to_string();
                            self.refuse_deployments([f.deployment.clone()], &why);
                            return Err(Refusal::Refused(why));
                        }
                        Err(e) => return Err(Refusal::Later(e.to_string())),
                    }
                }
            }
        }
        // Activate: one transaction.
        let hook = || {
            if test_hook("activate") {
                pause_here("activate");
            }
        };
        match store.cloud_activate(&state, &staged, &hook) {
            Ok(applied) => {
                for f in &applied.functions {
                    self.daemon.invalidate(f);
                }
                self.stager.clean(staged.into_keys());
                self.refused.clear();
                self.last_problem = None;
                let names: Vec<String> = state
                    .functions
                    .iter()
                    .map(|f| {
                        let vs: Vec<String> =
                            f.versions.iter().map(|v| v.version.to_string()).collect();
                        format!("{} [{}]", f.name, vs.join(","))
                    })
                    .collect();
                self.log(
                    Level::Info,
                    format!(
                        "activated sequence {} (key {}): functions {}; {} mappings",
                        state.sequence,
                        state.key_id,
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(" ")
                        },
                        state.mappings.len()
                    ),
                );
                Ok(())
            }
            Err(StoreError::CloudConflict(why)) => {
                self.refuse_deployments(deployments, &why);
                Err(Refusal::Refused(why))
            }
            Err(e) => Err(Refusal::Later(format!("activation failed: {e}"))),
        }
    }

    /// Remembers deployments of a refused document to report them `failed` (those the device
    /// runs now are left alone).
    fn refuse_deployments(&mut self, deployments: impl IntoIterator<Item = String>, why: &str) {
        let running = match self.daemon.store().cloud_slots() {
            Ok((Some(c), _)) => c.state.deployments(),
            _ => BTreeSet::new(),
        };
        for d in deployments {
            if !running.contains(&d) {
                self.refused
                    .insert(d, format!("desired state refused: {why}"));
            }
        }
    }

    /// The health window of the current state: init check of its new versions, failed
    /// invocations counted, rollback or healthy.
    fn check_health(&mut self) {
        let store = self.daemon.store().clone();
        let Ok((Some(current), previous)) = store.cloud_slots() else {
            return;
        };
        if current.health != Health::Pending {
            return;
        }
        let seq = current.state.sequence;
        let old = previous.map(|p| p.state.versions()).unwrap_or_default();
        let new: Vec<(String, u32, String)> = current
            .state
            .versions()
            .into_iter()
            .filter(|v| !old.contains(v))
            .collect();
        let deployment_of = |f: &str| {
            current
                .state
                .functions
                .iter()
                .find(|x| x.name == f)
                .map(|x| (x.deployment.clone(), x.enabled))
                .unwrap_or_default()
        };
        for (f, v, _) in &new {
            let (deployment, enabled) = deployment_of(f);
            if !enabled {
                continue;
            }
            let key = (seq, f.clone(), *v);
            if !self.init_checked.contains(&key) {
                if let Err(why) = self.init_check(f, *v) {
                    self.roll_back(&deployment, seq, why);
                    return;
                }
                self.init_checked.insert(key);
            }
            match store.failures_since(f, *v, current.activated_ms) {
                Ok((n, last)) if n >= self.settings.health_failures => {
                    let why = format!(
                        "{f} version {v}: {n} failed invocations within the health window (last: {})",
                        last.unwrap_or_default()
                    );
                    self.roll_back(&deployment, seq, why);
                    return;
                }
                Ok(_) => {}
                Err(e) => self.log(Level::Warn, format!("health check: {e}")),
            }
        }
        let age = edgefn_cloud::now_ms() - current.activated_ms;
        if age >= self.settings.health_window.as_millis() as i64 {
            match store.cloud_mark_healthy(seq) {
                Ok(true) => self.log(
                    Level::Info,
                    format!("sequence {seq} is healthy (health window passed)"),
                ),
                Ok(false) => {}
                Err(e) => self.log(Level::Warn, format!("cannot mark healthy: {e}")),
            }
            self.init_checked.retain(|(s, _, _)| *s != seq);
        }
    }

    /// Loads version `v` of `f` and starts one instance (runs `edgefn_init`).
    fn init_check(&self, f: &str, v: u32) -> Result<(), String> {
        let r = self
            .daemon
            .store()
            .resolve(f, &Qualifier::Version(v), "")
            .map_err(|e| format!("{f} version {v}: {e}"))?;
        let pool = self
            .daemon
            .pool_for(&r)
            .map_err(|e| format!("{f} version {v}: cannot load: {e}"))?;
        match pool.prewarm(1).into_iter().next() {
            None => Ok(()),
            Some(e) => Err(format!("{f} version {v}: init failed: {e}")),
        }
    }

    fn roll_back(&mut self, deployment: &str, seq: u64, why: String) {
        match self.daemon.store().cloud_rollback(deployment, &why) {
            Ok(applied) => {
                for f in &applied.functions {
                    self.daemon.invalidate(f);
                }
                self.log(
                    Level::Error,
                    format!(
                        "rolled back sequence {seq} to the last good state: deployment \
                         {deployment} failed: {why}"
                    ),
                );
                let warm = self.daemon.clone();
                for f in &applied.functions {
                    let _ = warm.prewarm_function(f);
                }
            }
            Err(e) => self.log(Level::Error, format!("rollback failed: {e}")),
        }
        self.init_checked.retain(|(s, _, _)| *s != seq);
    }

    /// The report of what the device runs now.
    fn report(&self) -> Option<StatusReport> {
        let store = self.daemon.store();
        let (sequence, key_id) = match store.cloud_sequence().ok()? {
            Some((s, k)) => (s, Some(k).filter(|k| !k.is_empty())),
            None => (0, None),
        };
        let mut deployments: BTreeMap<String, DeploymentReport> = BTreeMap::new();
        for f in store.cloud_failures().ok()? {
            deployments.insert(
                f.deployment.clone(),
                DeploymentReport {
                    deployment: f.deployment,
                    state: ReportState::Failed,
                    error: Some(f.error),
                },
            );
        }
        for (d, why) in &self.refused {
            deployments.insert(
                d.clone(),
                DeploymentReport {
                    deployment: d.clone(),
                    state: ReportState::Failed,
                    error: Some(why.clone()),
                },
            );
        }
        if let (Some(c), _) = store.cloud_slots().ok()? {
            let state = match c.health {
                Health::Pending => ReportState::Applied,
                Health::Healthy => ReportState::Healthy,
            };
            for d in c.state.deployments() {
                deployments.insert(
                    d.clone(),
                    DeploymentReport {
                        deployment: d,
                        state,
                        error: None,
                    },
                );
            }
        }
        Some(StatusReport {
            sequence,
            key_id,
            deployments: deployments.into_values().collect(),
        })
    }

    /// Sends the report if it changed since the cloud last accepted one.
    fn send_report(&mut self) {
        let Some(report) = self.report() else { return };
        if self.reported.as_ref() == Some(&report) {
            return;
        }
        match self.client.report(&report) {
            Ok(()) => {
                let states: Vec<String> = report
                    .deployments
                    .iter()
                    .map(|d| format!("{} {}", d.deployment, d.state.as_str()))
                    .collect();
                eprintln!(
                    "edgefn-agent: sync: reported sequence {}: {}",
                    report.sequence,
                    if states.is_empty() {
                        "no deployments".into()
                    } else {
                        states.join(", ")
                    }
                );
                self.reported = Some(report);
            }
            Err(e) => eprintln!("edgefn-agent: sync: status report failed (will retry): {e}"),
        }
    }
}

/// The deployments a document names, read without trusting it (to report a refusal).
fn unverified_deployments(doc: &DesiredDocument) -> BTreeSet<String> {
    match doc.document.payload_unverified() {
        Ok(s) => s
            .functions
            .iter()
            .map(|f| f.deployment.clone())
            .chain(s.mappings.iter().map(|m| m.deployment.clone()))
            .chain(s.flows.iter().map(|f| f.deployment.clone()))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// The store's form of a verified state; checks names, qualifiers, sources and destinations
/// as the agent's own API would.
fn to_cloud_state(v: &VerifiedState) -> Result<CloudState, String> {
    let mut functions = Vec::new();
    for f in &v.functions {
        crate::store::names::validate_function_name(&f.name).map_err(|e| e.to_string())?;
        let mut versions: Vec<CloudVersion> = f
            .versions
            .iter()
            .map(|m| CloudVersion {
                version: m.version,
                sha256: m.sha256.to_ascii_lowercase(),
                size: m.size,
                spec: m.spec.clone(),
                description: m.description.clone(),
            })
            .collect();
        versions.sort_by_key(|x| x.version);
        if versions.windows(2).any(|w| w[0].version == w[1].version) {
            return Err(format!("function {}: a version is listed twice", f.name));
        }
        if versions.iter().any(|x| x.version == 0) {
            return Err(format!("function {}: version 0", f.name));
        }
        for x in &versions {
            crate::spec::FunctionSpec::parse(&x.spec)
                .map_err(|e| format!("{} version {}: bad spec: {e}", f.name, x.version))?;
        }
        let mut aliases = Vec::new();
        for a in &f.aliases {
            crate::store::names::validate_alias_name(&a.name).map_err(|e| e.to_string())?;
            aliases.push(CloudAlias {
                name: a.name.clone(),
                version: a.version,
                also_version: a.also_version,
                weight: a.weight,
            });
        }
        functions.push(CloudFunction {
            name: f.name.clone(),
            enabled: f.enabled,
            deployment: f.deployment.clone(),
            versions,
            aliases,
        });
    }
    let mut mappings = Vec::new();
    for m in &v.mappings {
        let source: Source = serde_json::from_value(m.source.clone())
            .map_err(|e| format!("mapping {}: bad source: {e}", m.id))?;
        let dest = |d: &Option<String>| {
            d.as_deref()
                .map(Destination::parse)
                .transpose()
                .map_err(|e| format!("mapping {}: {e}", m.id))
        };
        Qualifier::parse(&m.qualifier).map_err(|e| format!("mapping {}: {e}", m.id))?;
        mappings.push(CloudMapping {
            id: m.id.clone(),
            name: m.name.clone(),
            function: m.function.clone(),
            qualifier: m.qualifier.clone(),
            source,
            enabled: m.enabled,
            retries: m.retries,
            on_success: dest(&m.on_success)?,
            on_failure: dest(&m.on_failure)?,
            deployment: m.deployment.clone(),
        });
    }
    let mut flows = Vec::new();
    for f in &v.flows {
        crate::store::names::validate_function_name(&f.name)
            .map_err(|e| format!("flow {}: {e}", f.name))?;
        let definition: crate::flows::FlowDef = serde_json::from_value(f.definition.clone())
            .map_err(|e| format!("flow {}: bad definition: {e}", f.name))?;
        definition
            .validate()
            .map_err(|e| format!("flow {}: {e}", f.name))?;
        flows.push(CloudFlow {
            name: f.name.clone(),
            enabled: f.enabled,
            definition,
            deployment: f.deployment.clone(),
        });
    }
    Ok(CloudState {
        sequence: v.sequence,
        key_id: v.key_id.clone(),
        functions,
        mappings,
        flows,
    })
}
