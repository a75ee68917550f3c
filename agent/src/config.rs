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

[runtime]
# Threads that run invocations (0 = one per CPU core).
workers = 0

[store]
# SQLite synchronous mode: "normal" survives an agent crash or kill -9 (WAL); "full" also
# survives power loss at the cost of an fsync per commit (slower on SD cards).
synchronous = "normal"
# Invocations committed together in one transaction at most (group commit).
max_batch = 256

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
    runtime: RawRuntime,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
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
        let max_batch = raw.store.max_batch.unwrap_or(256);
        if max_batch == 0 {
            return Err(err("store.max_batch must be at least 1".into()));
        }
        Ok(AgentConfig {
            data_dir: raw.data_dir,
            api_listen,
            workers: raw.runtime.workers.unwrap_or(0),
            sync_full,
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
        assert_eq!(
            AgentConfig::parse("", Path::new("x")).unwrap(),
            c,
            "an empty file means defaults"
        );
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
        let e = AgentConfig::parse("[apii]\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("apii"), "{e}");
    }
}
