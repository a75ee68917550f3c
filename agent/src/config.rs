//! The agent's configuration file (TOML). `edgefn-agent config` prints [`DEFAULT_CONFIG`], the
//! commented default; every key is optional and command-line flags override the file.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented default configuration, as `edgefn-agent config` prints it.
pub const DEFAULT_CONFIG: &str = r#"# edgefn-agent configuration. Every key is optional; shown values are the defaults.
# Command-line flags (--data-dir, --api) override this file.

# Where the store (SQLite), the admin token and other state live.
# Default: $EDGEFN_DATA_DIR, else /var/lib/edgefn if it exists, else ./edgefn-data
# data_dir = "/var/lib/edgefn"

[api]
# The admin API (functions, aliases, invoke, logs, stats, /metrics). Keep it on loopback:
# anyone holding <data_dir>/admin.token can manage functions.
listen = "127.0.0.1:7878"

[http]
# The HTTP trigger: POST PATH invokes the function mapped to PATH (mapping create --http PATH).
# "" disables it.
listen = "127.0.0.1:8080"

[mqtt]
# The gateway's broker for MQTT triggers and function publishes:
#   ""               no MQTT (publishes are logged and dropped)
#   "embedded"       an in-process broker (MQTT 3.1.1) on embedded_listen, or a free port if taken
#   "mqtt://HOST:PORT" or "mqtts://HOST:PORT" (TLS; see ca_file, cert_file, key_file)
url = ""
# 5 (MQTT 5) or 3 (MQTT 3.1.1). The embedded broker always uses 3.
version = 5
# Stable client id, so the broker keeps the agent's session across restarts ("" = edgefn-<host>).
client_id = ""
session_expiry = "1d"
keep_alive = "30s"
max_packet_bytes = 1048576
embedded_listen = "127.0.0.1:1883"
# ca_file = "/etc/edgefn/ca.pem"          # default: the system's CA certificates
# cert_file = "/etc/edgefn/client.pem"    # client certificate and key, if the broker wants one
# key_file = "/etc/edgefn/client.key"
# username = ""
# password = ""

[cloud]
# Cloud sync (docs/cloud-api.md). It runs once the device is enrolled
# (`edgefn-agent enroll --cloud URL --token T` writes <data_dir>/cloud.json) unless disabled here.
enabled = true
# Long-poll wait of GET /v1/device/desired (at most 300s): a change arrives at once anyway.
poll_wait = "60s"
# A newly activated version is watched this long: its edgefn_init must succeed, and
# health_failures failed invocations (traps, limits) within the window roll it back.
health_window = "30s"
health_failures = 3
# Longest pause between retries while the cloud is unreachable (the agent keeps running its
# local state).
retry_max = "60s"
# A cloud-side MQTT broker to take nudges (edgefn/devices/{id}/desired) and signed remote invoke
# requests (edgefn/devices/{id}/invoke, `edgefn invoke --device`) from, e.g.
# "mqtt://cloud-broker:1883" or "mqtts://cloud-broker:8883" (TLS). "" = none (the long-poll
# alone, no remote invoke). It is not the [mqtt] broker above: its TLS files are set here.
mqtt = ""
# mqtt_ca_file = "/etc/edgefn/cloud-ca.pem"        # default: the system's CA certificates
# mqtt_cert_file = "/etc/edgefn/cloud-client.pem"  # client certificate and key, if the broker
# mqtt_key_file = "/etc/edgefn/cloud-client.key"   # wants one

[upload]
# Telemetry upload to the cloud (docs/cloud-api.md, "Telemetry upload"): log records,
# invocation records and per-minute stats, in zlib-compressed batches. Runs while the device is
# enrolled and [cloud] is enabled, unless disabled here.
enabled = true
# How often new records are sent. A backlog (after the cloud was unreachable) is sent batch
# after batch without waiting.
interval = "10s"
# Log + invocation records per batch at most (1..=20000); batches also stay under ~4 MiB raw.
batch_records = 2000
# Longest pause between attempts while the cloud is unreachable (capped exponential backoff
# from 1s, with jitter).
retry_max = "5m"
# Disk budget of the log and invocation records kept on the device, uploaded or not (estimated
# bytes; B, KiB, MiB, GiB). Over it the oldest records are dropped first; records dropped before
# they were uploaded are counted and the counts are uploaded. Applies whether or not the device
# is enrolled; checked every [retention] interval.
disk_budget = "64MiB"

[runtime]
# Threads that run invocations (0 = one per CPU core).
workers = 0

[store]
# SQLite synchronous mode: "normal" survives an agent crash or kill -9 (WAL); "full" also
# survives power loss at the cost of an fsync per commit (slower on SD cards).
synchronous = "normal"
# Invocations committed together in one transaction at most (group commit).
max_batch = 256
# SQLite page cache of each of the store's three connections, in KiB (at most; it fills as
# pages are read). More helps big log and stats queries a little and costs RAM.
cache_kib = 2048
# SQLite page size of a new store, bytes (a power of two, 512..65536; an existing store keeps
# its own). Every commit appends each page it changes to the WAL, so smaller pages write less
# to the SD card per invocation (1024: ~3x less than SQLite's usual 4096).
page_size = 1024

[retention]
# Log and invocation records older than this are deleted ("7d", "12h", ...).
max_age = "7d"
# At most this many log records are kept (oldest dropped first; drops are counted).
max_log_records = 200000
# At most this many invocation records are kept.
max_invocation_records = 100000
# How often retention runs.
interval = "1m"
"#;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a bad value.
    #[error("bad config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The agent configuration with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Data directory (`None`: resolved by [`crate::paths::default_data_dir`]).
    pub data_dir: Option<PathBuf>,
    /// SQLite page cache per store connection, KiB (`[store] cache_kib`).
    pub cache_kib: u32,
    /// SQLite page size of a store created at start, bytes (`[store] page_size`).
    pub page_size: u32,
    /// Admin API listen address.
    pub api_listen: SocketAddr,
    /// Invocation worker threads (0 = CPU cores).
    pub workers: usize,
    /// SQLite `synchronous=FULL` instead of `NORMAL`.
    pub sync_full: bool,
    /// Most invocations per commit transaction.
    pub max_batch: usize,
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// Most log records kept.
    pub max_log_records: u64,
    /// Most invocation records kept.
    pub max_invocation_records: u64,
    /// Retention period.
    pub retention_interval: Duration,
    /// HTTP trigger listen address (`None` = disabled).
    pub http_listen: Option<SocketAddr>,
    /// MQTT settings.
    pub mqtt: MqttSettings,
    /// Cloud sync settings (`[cloud]`).
    pub cloud: crate::sync::SyncSettings,
    /// Telemetry upload settings (`[upload]`).
    pub upload: crate::sync::UploadSettings,
}

/// Where MQTT comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttUrl {
    /// No MQTT.
    None,
    /// The in-process broker.
    Embedded,
    /// An external broker (`mqtt://` or `mqtts://`).
    External(String),
}

/// The `[mqtt]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    pub url: MqttUrl,
    pub version: u8,
    pub client_id: String,
    pub session_expiry: Duration,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    pub embedded_listen: SocketAddr,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl MqttUrl {
    /// Parses the `url` setting (or `run --mqtt`).
    pub fn parse(url: &str) -> Result<MqttUrl, String> {
        match url.trim() {
            "" | "none" => Ok(MqttUrl::None),
            "embedded" => Ok(MqttUrl::Embedded),
            u if u.starts_with("mqtt://") || u.starts_with("mqtts://") => {
                Ok(MqttUrl::External(u.to_string()))
            }
            u => Err(format!(
                "`{u}` is not \"\", \"embedded\", mqtt://HOST:PORT or mqtts://HOST:PORT"
            )),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig::parse(DEFAULT_CONFIG, Path::new("<default>"))
            .expect("the default config parses")
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    mqtt: RawMqtt,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    cloud: RawCloud,
    #[serde(default)]
    upload: RawUpload,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpload {
    enabled: Option<bool>,
    interval: Option<String>,
    batch_records: Option<u64>,
    retry_max: Option<String>,
    disk_budget: Option<String>,
}

/// A size such as `64MiB`, `512KiB`, `1GiB`, `100000` (bytes); `KB`/`MB`/`GB` are powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 64MiB or 500KB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    enabled: Option<bool>,
    poll_wait: Option<String>,
    health_window: Option<String>,
    health_failures: Option<u64>,
    retry_max: Option<String>,
    mqtt: Option<String>,
    mqtt_ca_file: Option<PathBuf>,
    mqtt_cert_file: Option<PathBuf>,
    mqtt_key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Option<String>,
    version: Option<u8>,
    client_id: Option<String>,
    session_expiry: Option<String>,
    keep_alive: Option<String>,
    max_packet_bytes: Option<usize>,
    embedded_listen: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    workers: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    synchronous: Option<String>,
    max_batch: Option<usize>,
    cache_kib: Option<u32>,
    page_size: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age: Option<String>,
    max_log_records: Option<u64>,
    max_invocation_records: Option<u64>,
    interval: Option<String>,
}

impl AgentConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        AgentConfig::parse(&text, path)
    }

    /// Parses config text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        let err = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let listen = raw.api.listen.as_deref().unwrap_or("127.0.0.1:7878");
        let api_listen = listen.parse().map_err(|_| {
            err(format!(
                "api.listen: `{listen}` is not an address like 127.0.0.1:7878"
            ))
        })?;
        let sync_full = match raw.store.synchronous.as_deref().unwrap_or("normal") {
            "normal" => false,
            "full" => true,
            other => {
                return Err(err(format!(
                    "store.synchronous: `{other}` is not `normal` or `full`"
                )))
            }
        };
        let duration =
            |key: &str, v: Option<&str>, default: &str| -> Result<Duration, ConfigError> {
                let v = v.unwrap_or(default);
                humantime::parse_duration(v).map_err(|e| err(format!("{key}: `{v}`: {e}")))
            };
        let cache_kib = raw.store.cache_kib.unwrap_or(2048);
        if !(64..=1 << 20).contains(&cache_kib) {
            return Err(err(format!(
                "store.cache_kib must be 64..=1048576, not {cache_kib}"
            )));
        }
        let page_size = raw
            .store
            .page_size
            .unwrap_or(crate::store::DEFAULT_PAGE_SIZE);
        if !(page_size.is_power_of_two() && (512..=65536).contains(&page_size)) {
            return Err(err(format!(
                "store.page_size must be a power of two in 512..=65536, not {page_size}"
            )));
        }
        let max_batch = raw.store.max_batch.unwrap_or(256);
        if max_batch == 0 {
            return Err(err("store.max_batch must be at least 1".into()));
        }
        let http_listen = match raw.http.listen.as_deref().unwrap_or("127.0.0.1:8080") {
            "" => None,
            a => Some(a.parse().map_err(|_| {
                err(format!(
                    "http.listen: `{a}` is not an address like 127.0.0.1:8080"
                ))
            })?),
        };
        let m = raw.mqtt;
        let version = m.version.unwrap_or(5);
        if version != 5 && version != 3 {
            return Err(err(format!("mqtt.version must be 5 or 3, not {version}")));
        }
        let embedded = m.embedded_listen.as_deref().unwrap_or("127.0.0.1:1883");
        let max_packet_bytes = m.max_packet_bytes.unwrap_or(1 << 20);
        if !(1024..=256 << 20).contains(&max_packet_bytes) {
            return Err(err(format!(
                "mqtt.max_packet_bytes must be 1024..=268435456, not {max_packet_bytes}"
            )));
        }
        if m.cert_file.is_some() != m.key_file.is_some() {
            return Err(err("mqtt.cert_file and mqtt.key_file go together".into()));
        }
        let mqtt = MqttSettings {
            url: MqttUrl::parse(m.url.as_deref().unwrap_or(""))
                .map_err(|e| err(format!("mqtt.url: {e}")))?,
            version,
            client_id: m.client_id.unwrap_or_default(),
            session_expiry: duration("mqtt.session_expiry", m.session_expiry.as_deref(), "1d")?,
            keep_alive: duration("mqtt.keep_alive", m.keep_alive.as_deref(), "30s")?,
            max_packet_bytes,
            embedded_listen: embedded.parse().map_err(|_| {
                err(format!(
                    "mqtt.embedded_listen: `{embedded}` is not an address"
                ))
            })?,
            ca_file: m.ca_file,
            cert_file: m.cert_file,
            key_file: m.key_file,
            username: m.username,
            password: m.password,
        };
        let c = raw.cloud;
        let poll_wait = duration("cloud.poll_wait", c.poll_wait.as_deref(), "60s")?;
        if poll_wait.as_secs() < 1 || poll_wait.as_secs() > 300 {
            return Err(err("cloud.poll_wait must be 1s..=300s".into()));
        }
        let nudge_mqtt = match c.mqtt.as_deref().unwrap_or("").trim() {
            "" => {
                if c.mqtt_ca_file.is_some() || c.mqtt_cert_file.is_some() {
                    return Err(err(
                        "cloud.mqtt_ca_file and cloud.mqtt_cert_file need cloud.mqtt".into(),
                    ));
                }
                None
            }
            u => {
                // The client id is the device's (sync::nudge), known once enrolled.
                let mut m = crate::triggers::mqtt::MqttConfig::from_url(u, "")
                    .map_err(|e| err(format!("cloud.mqtt: {e}")))?;
                if c.mqtt_cert_file.is_some() != c.mqtt_key_file.is_some() {
                    return Err(err(
                        "cloud.mqtt_cert_file and cloud.mqtt_key_file go together".into(),
                    ));
                }
                if !m.tls && (c.mqtt_ca_file.is_some() || c.mqtt_cert_file.is_some()) {
                    return Err(err(format!(
                        "cloud.mqtt_ca_file and cloud.mqtt_cert_file are for mqtts:// (cloud.mqtt is `{u}`)"
                    )));
                }
                m.version = 3;
                m.ca_file = c.mqtt_ca_file;
                m.client_cert = c.mqtt_cert_file.zip(c.mqtt_key_file);
                Some(m)
            }
        };
        let cloud = crate::sync::SyncSettings {
            enabled: c.enabled.unwrap_or(true),
            poll_wait,
            health_window: duration("cloud.health_window", c.health_window.as_deref(), "30s")?,
            health_failures: c.health_failures.unwrap_or(3).max(1),
            retry_max: duration("cloud.retry_max", c.retry_max.as_deref(), "60s")?
                .max(std::time::Duration::from_millis(100)),
            nudge_mqtt,
        };
        let u = raw.upload;
        let batch_records = u.batch_records.unwrap_or(2000);
        if !(1..=20_000).contains(&batch_records) {
            return Err(err(format!(
                "upload.batch_records must be 1..=20000, not {batch_records}"
            )));
        }
        let disk_budget_text = u.disk_budget.as_deref().unwrap_or("64MiB");
        let disk_budget =
            parse_size(disk_budget_text).map_err(|e| err(format!("upload.disk_budget: {e}")))?;
        if disk_budget < 64 << 10 {
            return Err(err(format!(
                "upload.disk_budget: `{disk_budget_text}` is below the smallest budget, 64KiB"
            )));
        }
        let interval = duration("upload.interval", u.interval.as_deref(), "10s")?;
        if interval < Duration::from_millis(100) {
            return Err(err("upload.interval must be at least 100ms".into()));
        }
        let upload = crate::sync::UploadSettings {
            enabled: u.enabled.unwrap_or(true),
            interval,
            batch_records: batch_records as usize,
            retry_max: duration("upload.retry_max", u.retry_max.as_deref(), "5m")?
                .max(Duration::from_secs(1)),
            disk_budget,
        };
        Ok(AgentConfig {
            upload,
            cloud,
            http_listen,
            mqtt,
            data_dir: raw.data_dir,
            api_listen,
            workers: raw.runtime.workers.unwrap_or(0),
            sync_full,
            cache_kib,
            page_size,
            max_batch,
            max_age: duration("retention.max_age", raw.retention.max_age.as_deref(), "7d")?,
            max_log_records: raw.retention.max_log_records.unwrap_or(200_000),
            max_invocation_records: raw.retention.max_invocation_records.unwrap_or(100_000),
            retention_interval: duration(
                "retention.interval",
                raw.retention.interval.as_deref(),
                "1m",
            )?,
        })
    }

    /// Worker threads to use: `workers`, or the number of CPU cores.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_gives_the_defaults() {
        let c = AgentConfig::default();
        assert_eq!(c.api_listen, "127.0.0.1:7878".parse().unwrap());
        assert_eq!(c.max_age, Duration::from_secs(7 * 86400));
        assert!(!c.sync_full);
        assert_eq!(c.upload.disk_budget, 64 << 20);
        assert_eq!(c.upload.batch_records, 2000);
        assert_eq!(c.upload.interval, Duration::from_secs(10));
        assert_eq!(
            AgentConfig::parse("", Path::new("x")).unwrap(),
            c,
            "an empty file means defaults"
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = AgentConfig::parse("[api]\nlisten = \"nope\"", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.toml") && e.contains("api.listen"), "{e}");
        let e = AgentConfig::parse("[retention]\nmax_age = \"forever\"", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention.max_age"), "{e}");
        let e = AgentConfig::parse("[store]\nsynchronous = \"maybe\"", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.synchronous"), "{e}");
        let e = AgentConfig::parse("[upload]\ndisk_budget = \"lots\"", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upload.disk_budget") && e.contains("lots"),
            "{e}"
        );
        let e = AgentConfig::parse("[upload]\nbatch_records = 0", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload.batch_records"), "{e}");
        let e = AgentConfig::parse("[store]\ncache_kib = 1", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.cache_kib"), "{e}");
        let e = AgentConfig::parse("[store]\npage_size = 3000", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.page_size") && e.contains("3000"), "{e}");
        let c = AgentConfig::parse("[store]\npage_size = 1024", Path::new("a.toml")).unwrap();
        assert_eq!(c.page_size, 1024);
        let e = AgentConfig::parse("[apii]\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("apii"), "{e}");
    }

    #[test]
    fn the_nudge_broker_takes_mqtts_with_its_own_tls_files() {
        let parse = |t: &str| AgentConfig::parse(t, Path::new("a.toml"));
        let c = parse("[cloud]\nmqtt = \"mqtt://cloud:1884\"").unwrap();
        let m = c.cloud.nudge_mqtt.unwrap();
        assert_eq!((m.host.as_str(), m.port, m.tls), ("cloud", 1884, false));
        let c = parse(
            "[cloud]\nmqtt = \"mqtts://cloud\"\nmqtt_ca_file = \"/ca.pem\"\n\
             mqtt_cert_file = \"/c.pem\"\nmqtt_key_file = \"/c.key\"",
        )
        .unwrap();
        let m = c.cloud.nudge_mqtt.unwrap();
        assert_eq!((m.port, m.tls), (8883, true));
        assert_eq!(m.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(
            m.client_cert,
            Some(("/c.pem".into(), "/c.key".into())),
            "{m:?}"
        );
        assert_eq!(c.mqtt.ca_file, None, "[mqtt] is another broker");
        for (text, want) in [
            ("mqtt = \"http://x\"", "cloud.mqtt"),
            (
                "mqtt = \"mqtts://x\"\nmqtt_cert_file = \"/c.pem\"",
                "go together",
            ),
            (
                "mqtt = \"mqtt://x\"\nmqtt_ca_file = \"/ca.pem\"",
                "are for mqtts://",
            ),
            ("mqtt_ca_file = \"/ca.pem\"", "need cloud.mqtt"),
        ] {
            let e = parse(&format!("[cloud]\n{text}")).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
