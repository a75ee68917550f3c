//! `edgefn-cloud init` and `serve`: the directory layout and start-up.
//!
//! ```text
//! DIR/root.key        root secret key (base64 seed, 0600): certifies signing keys; keep it
//!                     offline in production and copy it in only to rotate keys
//! DIR/root.pub        root public key (base64): devices' trust anchor
//! DIR/signing.key     the first signing key (0600), imported into the store at first start
//! DIR/signing.cert    its certificate (JSON Signed<KeyCert>)
//! DIR/operator.token  the operator's bearer token (0600)
//! DIR/cloud.db        the SQLite store (default --db)
//! DIR/artifacts/      module bytes by sha256 (default --artifacts)
//! ```

pub mod nudge;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api;
use crate::keys::{self, hash_token, random_token};
use crate::now_ms;
use crate::protocol::keycert::{decode_public, encode_public, key_id};
use crate::protocol::{KeyCert, Signed};
use crate::service::{artifacts::Artifacts, signing, Service, Settings};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Default validity of the signing key made by `init`.
pub const DEFAULT_KEY_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// What `init` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    pub dir: PathBuf,
    pub root_key_id: String,
    pub signing_key_id: String,
    pub signing_key_expires_ms: i64,
}

/// Creates the root key pair, a signing key certified by it and the operator token in `dir`.
/// Refuses to overwrite an existing root key.
pub fn init(dir: &Path, key_validity: Duration) -> Result<InitReport, ServerError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| ServerError::Io(p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let root_path = dir.join("root.key");
    if root_path.exists() {
        return Err(ServerError::Setup(format!(
            "{} exists: this directory is already initialised",
            root_path.display()
        )));
    }
    let root = keys::generate();
    keys::write_secret_file(&root_path, &keys::encode_secret(&root)).map_err(io(&root_path))?;
    let pub_path = dir.join("root.pub");
    std::fs::write(
        &pub_path,
        format!("{}\n", encode_public(&root.verifying_key())),
    )
    .map_err(io(&pub_path))?;
    let now = now_ms();
    let (signing, cert) = keys::issue_signing_key(&root, now, key_validity.as_millis() as i64);
    let sk = dir.join("signing.key");
    keys::write_secret_file(&sk, &keys::encode_secret(&signing)).map_err(io(&sk))?;
    let sc = dir.join("signing.cert");
    std::fs::write(&sc, serde_json::to_string_pretty(&cert).unwrap()).map_err(io(&sc))?;
    let tp = dir.join("operator.token");
    keys::write_secret_file(&tp, &random_token("op-")).map_err(io(&tp))?;
    Ok(InitReport {
        dir: dir.to_owned(),
        root_key_id: key_id(&root.verifying_key()),
        signing_key_id: key_id(&signing.verifying_key()),
        signing_key_expires_ms: now + key_validity.as_millis() as i64,
    })
}

/// `serve` options.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://DIR/cloud.db`.
    pub db: Option<String>,
    /// Default `DIR/artifacts`.
    pub artifacts: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub settings: Settings,
    /// How often rollouts advance without status reports (health waits).
    pub tick: Duration,
    /// A cloud-side broker to publish nudges and relay remote invocations through ([`nudge`],
    /// `service::remote_invoke`).
    pub mqtt: Option<nudge::BrokerOptions>,
    /// How often the store's change revision is polled (changes made by other replicas).
    pub revision_poll: Duration,
    /// How often telemetry retention (`settings.telemetry_retention_ms`) runs.
    pub retention_interval: Duration,
}

impl ServeOptions {
    pub fn new(dir: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            dir: dir.into(),
            listen: "127.0.0.1:8443".parse().unwrap(),
            db: None,
            artifacts: None,
            tls: None,
            settings: Settings::default(),
            tick: Duration::from_millis(250),
            mqtt: None,
            revision_poll: Duration::from_millis(500),
            retention_interval: Duration::from_secs(60),
        }
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://ADDR` or `https://ADDR`.
    pub url: String,
    pub service: Service,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and writes the last-seen times noted
    /// since the last periodic write.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        // Before waiting for the requests in flight (a caller may time that wait out), and
        // after.
        if let Err(e) = self.service.flush_presence().await {
            eprintln!("recording when devices were last seen: {e}");
        }
        let out = self.task.await.unwrap_or(Ok(()));
        if let Err(e) = self.service.flush_presence().await {
            eprintln!("recording when devices were last seen: {e}");
        }
        out
    }

    /// Runs until the server fails.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }
}

fn read(path: &Path) -> Result<String, ServerError> {
    std::fs::read_to_string(path).map_err(|e| {
        ServerError::Setup(format!(
            "{}: {e} (run `edgefn-cloud init --dir {}` first)",
            path.display(),
            path.parent().unwrap_or(path).display()
        ))
    })
}

/// Opens the store, imports the first signing key, binds and serves.
pub async fn start(opts: ServeOptions) -> Result<Running, ServerError> {
    api::tls::install_ring();
    let dir = &opts.dir;
    let root_public = decode_public(&read(&dir.join("root.pub"))?)
        .map_err(|e| ServerError::Setup(format!("{}: {e}", dir.join("root.pub").display())))?;
    let root_secret = match std::fs::read_to_string(dir.join("root.key")) {
        Ok(t) => Some(
            keys::decode_secret(&t).map_err(|e| ServerError::Setup(format!("root.key: {e}")))?,
        ),
        Err(_) => None,
    };
    let operator = read(&dir.join("operator.token"))?.trim().to_owned();
    let db = opts
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("cloud.db").display()));
    let store = tokio::task::spawn_blocking(move || Store::open(&db))
        .await
        .map_err(|e| ServerError::Setup(e.to_string()))??;
    if let Ok(secret) = std::fs::read_to_string(dir.join("signing.key")) {
        let key = keys::decode_secret(&secret)
            .map_err(|e| ServerError::Setup(format!("signing.key: {e}")))?;
        let cert: Signed<KeyCert> = serde_json::from_str(&read(&dir.join("signing.cert"))?)
            .map_err(|e| ServerError::Setup(format!("signing.cert: {e}")))?;
        crate::protocol::verify_key_cert(&cert, &root_public, now_ms())
            .map_err(|e| ServerError::Setup(format!("signing.cert: {e}")))?;
        let s = store.clone();
        tokio::task::spawn_blocking(move || signing::import_if_empty(&s, &key, &cert))
            .await
            .map_err(|e| ServerError::Setup(e.to_string()))??;
    }
    warn_if_key_expires_soon(&store).await;
    let artifacts = Artifacts::open(
        &opts
            .artifacts
            .clone()
            .unwrap_or_else(|| dir.join("artifacts")),
    )?;
    let service = Service::new(
        store,
        artifacts,
        opts.settings.clone(),
        root_public,
        root_secret,
        hash_token(&operator),
    );
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServerError::Io(format!("listen on {}", opts.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Io("local address".into(), e))?;
    let app = api::router(service.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let (task, url) = match &opts.tls {
        Some((cert, key)) => {
            let config = api::tls::server_config(cert, key).map_err(ServerError::Setup)?;
            let tls = api::tls::TlsListener::new(listener, config)
                .map_err(|e| ServerError::Io("tls".into(), e))?;
            let task = tokio::spawn(async move {
                axum::serve(tls, app).with_graceful_shutdown(shutdown).await
            });
            (task, format!("https://{addr}"))
        }
        None => {
            let task = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            });
            (task, format!("http://{addr}"))
        }
    };
    if let Some(broker) = &opts.mqtt {
        // One connection per replica for nudges and remote invoke.
        let link =
            nudge::BrokerLink::connect(broker).map_err(|e| ServerError::Setup(e.to_string()))?;
        service.attach_broker(link.clone());
        nudge::start(service.clone(), link);
    }
    tokio::spawn(service.clone().watch_revision(opts.revision_poll));
    if let Some(max_age_ms) = opts.settings.telemetry_retention_ms {
        let pruner = service.clone();
        let period = opts.retention_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match pruner.prune_telemetry(max_age_ms).await {
                    Ok(p) => pruner.metrics.pruned(&p),
                    Err(e) => {
                        crate::service::metrics::note_store_error(&e);
                        eprintln!("telemetry retention: {e}");
                    }
                }
            }
        });
    }
    tokio::spawn(service.clone().flush_presence_periodically());
    let ticker = service.clone();
    let period = opts.tick;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = ticker.tick().await {
                eprintln!("rollout tick: {e}");
            }
        }
    });
    Ok(Running {
        addr,
        url,
        service,
        shutdown: Some(tx),
        task,
    })
}

/// Devices refuse documents signed by an expired key: say so at start when the active key has
/// less than 30 days left.
async fn warn_if_key_expires_soon(store: &Store) {
    let active = store
        .tx(|tx| {
            tx.query_opt(
                "SELECT id, not_after_ms FROM signing_keys WHERE state = 'active'",
                &[],
            )?
            .map(|r| Ok((r.text(0)?, r.i64(1)?)))
            .transpose()
        })
        .await;
    if let Ok(Some((id, not_after_ms))) = active {
        let left = not_after_ms - now_ms();
        if left < 30 * 24 * 3600 * 1000 {
            eprintln!(
                "warning: signing key {id} expires in {} days: run `edgefn key rotate`",
                left.max(0) / (24 * 3600 * 1000)
            );
        }
    }
}

/// `edgefn-cloud rotate-key`: a new signing key certified by `DIR/root.key`, written straight
/// into the store at `db` (default `sqlite://DIR/cloud.db`), so the root key need not be on any
/// server. Running servers pick it up at once. Blocking: call it outside an async runtime.
pub fn rotate_key_offline(
    dir: &Path,
    db: Option<&str>,
    validity: Duration,
) -> Result<signing::KeyInfo, ServerError> {
    let root = keys::read_secret_file(&dir.join("root.key")).map_err(ServerError::Setup)?;
    let db = db
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("cloud.db").display()));
    let store = Store::open(&db)?;
    Ok(signing::rotate_offline(
        &store,
        &root,
        validity.as_millis() as i64,
    )?)
}
