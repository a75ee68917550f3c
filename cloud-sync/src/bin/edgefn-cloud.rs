//! `edgefn-cloud`: the cloud sync service (`init`, `serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgefn_cloud::server::{self, ServeOptions};

#[derive(Parser)]
#[command(
    name = "edgefn-cloud",
    version,
    about = "The edgefn cloud sync service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: `Serve`'s many options cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create the root key pair, a signing key certified by it and the operator token.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Validity of the signing key (`365d`, `90d`, ...).
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        key_validity: Duration,
    },
    /// Rotate the signing key where the root key is, straight on the store (running servers
    /// pick the new key up at once); the API's `key rotate` needs the root key on the server.
    RotateKey {
        #[arg(long)]
        dir: PathBuf,
        /// The store (default `sqlite://DIR/cloud.db`).
        #[arg(long, env = "EDGEFN_CLOUD_DB")]
        db: Option<String>,
        /// Validity of the new signing key.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        key_validity: Duration,
    },
    /// Serve the API.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// `sqlite://PATH` (default `sqlite://DIR/cloud.db`) or `postgres://...` (`?schema=NAME`
        /// selects a schema of its own).
        #[arg(long, env = "EDGEFN_CLOUD_DB")]
        db: Option<String>,
        /// Where module bytes are kept (default DIR/artifacts); replicas share it.
        #[arg(long)]
        artifacts: Option<PathBuf>,
        /// PEM certificate chain: serve HTTPS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// A cloud-side MQTT broker (`mqtt://HOST[:PORT]`, `mqtts://` for TLS) to nudge devices
        /// through when their desired state changes (topic `edgefn/devices/{device_id}/desired`).
        #[arg(long)]
        mqtt: Option<String>,
        /// PEM CA certificate(s) to trust for `mqtts://` (default: the system's roots).
        #[arg(long, requires = "mqtt")]
        mqtt_ca: Option<PathBuf>,
        /// PEM client certificate for the broker (with --mqtt-key).
        #[arg(long, requires_all = ["mqtt", "mqtt_key"])]
        mqtt_cert: Option<PathBuf>,
        #[arg(long, requires = "mqtt_cert")]
        mqtt_key: Option<PathBuf>,
        /// How long a desired-state document is valid.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        document_ttl: Duration,
        /// How long uploaded logs, invocation records and stats are kept (by their time),
        /// or `forever`.
        #[arg(long, default_value = "30d", value_parser = parse_retention)]
        retention: Retention,
        /// How often retention runs.
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        retention_interval: Duration,
    },
}

/// `--retention`: a duration, or `None` for `forever`.
#[derive(Clone, Debug)]
struct Retention(Option<Duration>);

/// `--retention`: a duration of at least a minute, or `forever`.
fn parse_retention(s: &str) -> Result<Retention, String> {
    if s == "forever" {
        return Ok(Retention(None));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is neither a duration (30d, 12h) nor `forever`: {e}"))?;
    if d < Duration::from_secs(60) {
        return Err(format!("`{s}` is shorter than a minute"));
    }
    Ok(Retention(Some(d)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { dir, key_validity } => {
            let r = server::init(&dir, key_validity)?;
            println!("initialised {}", r.dir.display());
            println!("root key     {} (root.key, root.pub)", r.root_key_id);
            println!(
                "signing key  {} (signing.key, signing.cert), valid {}",
                r.signing_key_id,
                humantime::format_duration(key_validity)
            );
            println!(
                "operator token in {}",
                r.dir.join("operator.token").display()
            );
            Ok(())
        }
        Command::RotateKey {
            dir,
            db,
            key_validity,
        } => {
            let k = server::rotate_key_offline(&dir, db.as_deref(), key_validity)?;
            println!(
                "signing key {} is active; the old one retires once every device runs it",
                k.id
            );
            Ok(())
        }
        Command::Serve {
            dir,
            listen,
            db,
            artifacts,
            tls_cert,
            tls_key,
            mqtt,
            mqtt_ca,
            mqtt_cert,
            mqtt_key,
            document_ttl,
            retention,
            retention_interval,
        } => {
            let mut opts = ServeOptions::new(dir);
            opts.listen = listen;
            opts.db = db;
            opts.artifacts = artifacts;
            opts.tls = tls_cert.zip(tls_key);
            opts.mqtt = mqtt.map(|url| server::nudge::BrokerOptions {
                url,
                ca: mqtt_ca,
                client_cert: mqtt_cert.zip(mqtt_key),
            });
            opts.settings.document_ttl_ms = document_ttl.as_millis() as i64;
            opts.settings.telemetry_retention_ms = retention.0.map(|d| d.as_millis() as i64);
            opts.retention_interval = retention_interval;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let running = server::start(opts).await?;
                // The line tests and scripts wait for.
                println!("listening on {}", running.url);
                let service = running.service.clone();
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = running.wait() => r?,
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                // Last-seen times noted since the last periodic write.
                if let Err(e) = service.flush_presence().await {
                    eprintln!("recording when devices were last seen: {e}");
                }
                anyhow::Ok(())
            })
        }
    }
}
