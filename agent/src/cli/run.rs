//! `edgefn-agent run`: the long-running agent (store, admin API, invocation workers).

use anyhow::{bail, Context};
#[cfg(feature = "embedded-broker")]
use edgefn_agent::broker::{BrokerOptions, EmbeddedBroker};
use edgefn_agent::config::{AgentConfig, MqttUrl, DEFAULT_CONFIG};
use edgefn_agent::daemon::Daemon;
use edgefn_agent::paths;
use edgefn_agent::store::{Store, StoreOptions, Synchronous};
use edgefn_agent::triggers::mqtt::MqttConfig;
use edgefn_agent::triggers::{TriggerConfig, Triggers};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Data directory (store, admin token) [default: $EDGEFN_DATA_DIR, /var/lib/edgefn if it
    /// exists, else ./edgefn-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Config file (TOML; `edgefn-agent config` prints the commented default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Admin API listen address [default: 127.0.0.1:7878]; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// HTTP trigger listen address [default: 127.0.0.1:8080]; `off` disables it (builds without
    /// the `http-trigger` feature have none).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// The gateway's MQTT broker: mqtt://HOST:PORT, mqtts://HOST:PORT, `embedded` (in-process
    /// broker) or `none` [default: the config's mqtt.url, else none].
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
}

/// Stack of the threads that run invocations: generous, since wasmi's dispatch uses the host
/// stack (see runtime::limits::FUEL_SLICE); only touched pages are resident.
const WORKER_STACK: usize = 8 << 20;

pub fn print_config() -> anyhow::Result<ExitCode> {
    print!("{DEFAULT_CONFIG}");
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Before any thread starts: every thread's arena would otherwise keep its own free memory.
    edgefn_agent::memory::limit_arenas();
    edgefn_agent::triggers::mqtt::install_crypto_provider();
    let mut config = match &args.config {
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    };
    if let Some(api) = args.api {
        config.api_listen = api;
    }
    match args.http.as_deref() {
        Some("off") => config.http_listen = None,
        #[cfg(not(feature = "http-trigger"))]
        Some(a) => {
            bail!("--http {a}: this build has no HTTP trigger (cargo feature `http-trigger`)")
        }
        #[cfg(feature = "http-trigger")]
        Some(a) => {
            config.http_listen = Some(a.parse().with_context(|| {
                format!("--http {a:?} is not an address like 127.0.0.1:8080 or `off`")
            })?)
        }
        None => {}
    }
    if cfg!(not(feature = "http-trigger")) {
        // The config file's [http] listen (default 127.0.0.1:8080) has nothing to start.
        config.http_listen = None;
    }
    if let Some(url) = &args.mqtt {
        config.mqtt.url = MqttUrl::parse(url).map_err(|e| anyhow::anyhow!("--mqtt: {e}"))?;
    }
    let data_dir = args
        .data_dir
        .clone()
        .or(config.data_dir.clone())
        .unwrap_or_else(paths::default_data_dir);
    create_private_dir(&data_dir)?;
    let token = ensure_token(&paths::admin_token_path(&data_dir))?;
    let options = StoreOptions {
        synchronous: if config.sync_full {
            Synchronous::Full
        } else {
            Synchronous::Normal
        },
        cache_kib: config.cache_kib,
        page_size: config.page_size,
        ..StoreOptions::default()
    };
    let db = data_dir.join("agent.db");
    let store = Store::open_with(&db, &options)
        .with_context(|| format!("cannot open the store {}", db.display()))?;
    let workers = config.worker_threads();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(workers + 4)
        .thread_stack_size(WORKER_STACK)
        .thread_name("edgefn-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("cannot listen on {} for the admin API", config.api_listen))?;
        let addr = listener.local_addr()?;
        let daemon = Daemon::new(store, &config);
        let http = match config.http_listen {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| {
                format!("cannot listen on {a} for the HTTP trigger (--http ADDR or `off`)")
            })?),
            None => None,
        };
        let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
        let (mqtt, _broker) = mqtt_link(&config, &data_dir)?;
        if mqtt.is_some() {
            daemon.enable_outbox();
        }
        let mqtt_url = mqtt.as_ref().map(|m| {
            format!(
                "mqtt{}://{}:{} (MQTT {})",
                if m.tls { "s" } else { "" },
                m.host,
                m.port,
                if m.version == 5 { "5" } else { "3.1.1" }
            )
        });
        let _triggers = Triggers::start(daemon.clone(), TriggerConfig { http, mqtt }).await;
        // Batch jobs: runs submitted jobs and resumes those a previous run left unfinished.
        let _jobs = edgefn_agent::jobs::JobRunner::start(daemon.clone());
        let status = format!(
            "admin API http://{addr}, HTTP trigger {}, MQTT {}, data dir {}, {workers} workers",
            http_addr.map_or("off".to_string(), |a| format!("http://{a}")),
            mqtt_url.as_deref().unwrap_or("off"),
            data_dir.display()
        );
        eprintln!("edgefn-agent {} ready: {status}", env!("CARGO_PKG_VERSION"));
        edgefn_agent::systemd::ready(&status);
        if let Some(every) = edgefn_agent::systemd::watchdog_interval() {
            tokio::spawn(edgefn_agent::systemd::watchdog(daemon.clone(), every));
        }
        let warm = daemon.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = warm.prewarm_all() {
                eprintln!("edgefn-agent: prewarming failed: {e}");
            }
        });
        tokio::spawn(daemon.clone().retention_loop());
        // Flow runs (docs/flows.md): continues the runs a previous agent left running.
        tokio::spawn(edgefn_agent::flows::engine::run(daemon.clone()));
        // Cloud sync, if this device is enrolled (src/sync, docs/cloud-api.md).
        match edgefn_agent::sync::start(
            daemon.clone(),
            &data_dir,
            config.cloud.clone(),
            config.upload.clone(),
        ) {
            Ok(Some(s)) => eprintln!(
                "edgefn-agent: cloud sync with {} as device {}",
                s.cloud, s.device_id
            ),
            Ok(None) => {}
            Err(e) => eprintln!("edgefn-agent: cloud sync not started: {e}"),
        }
        let shutdown = async {
            shutdown_signal().await;
            edgefn_agent::systemd::stopping();
        };
        edgefn_agent::api::serve(listener, daemon, &token, shutdown).await?;
        eprintln!("edgefn-agent: shut down");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Keeps the embedded broker running while held (nothing in builds without it).
#[cfg(feature = "embedded-broker")]
type BrokerHandle = EmbeddedBroker;
#[cfg(not(feature = "embedded-broker"))]
type BrokerHandle = std::convert::Infallible;

/// The MQTT settings to connect with, starting the embedded broker if asked (kept alive by the
/// returned handle).
fn mqtt_link(
    config: &AgentConfig,
    data_dir: &Path,
) -> anyhow::Result<(Option<MqttConfig>, Option<BrokerHandle>)> {
    let m = &config.mqtt;
    let client_id = if m.client_id.is_empty() {
        default_client_id(data_dir)
    } else {
        m.client_id.clone()
    };
    let (url, version, broker) = match &m.url {
        MqttUrl::None => return Ok((None, None)),
        MqttUrl::External(url) => (url.clone(), m.version, None),
        #[cfg(not(feature = "embedded-broker"))]
        MqttUrl::Embedded => bail!(
            "mqtt `embedded`: this build has no embedded broker (cargo feature `embedded-broker`); \
             use mqtt://HOST:PORT"
        ),
        #[cfg(feature = "embedded-broker")]
        MqttUrl::Embedded => {
            let options = BrokerOptions {
                max_packet_bytes: m.max_packet_bytes,
                ..BrokerOptions::default()
            };
            let b = EmbeddedBroker::start_on_free_port_or_with(m.embedded_listen, &options)
                .context("cannot start the embedded MQTT broker")?;
            // rumqttd speaks MQTT 3.1.1 only.
            (format!("mqtt://{}", b.addr()), 3, Some(b))
        }
    };
    let mut cfg =
        MqttConfig::from_url(&url, &client_id).map_err(|e| anyhow::anyhow!("mqtt.url: {e}"))?;
    cfg.version = version;
    cfg.session_expiry = m.session_expiry;
    cfg.keep_alive = m.keep_alive;
    cfg.max_packet_bytes = m.max_packet_bytes;
    cfg.ca_file = m.ca_file.clone();
    cfg.client_cert = m.cert_file.clone().zip(m.key_file.clone());
    cfg.credentials = m
        .username
        .clone()
        .map(|u| (u, m.password.clone().unwrap_or_default()));
    Ok((Some(cfg), broker))
}

/// `edgefn-<hostname>-<hash of the data dir>`: stable across restarts (the broker keeps the
/// session), distinct for two agents on one host.
fn default_client_id(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: stable across Rust versions, unlike std's DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("edgefn-{}-{:08x}", host.trim(), h as u32)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Reads the admin token, creating it (32 random bytes, hex, mode 0600) on first start.
fn ensure_token(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => bail!(
            "the admin token file {} is empty; delete it to get a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the admin token {}", path.display()))
        }
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the admin token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the admin token {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}
