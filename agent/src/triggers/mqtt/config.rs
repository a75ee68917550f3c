//! The MQTT connection settings (`[mqtt]` in the agent config, or `run --mqtt URL`).

use std::path::PathBuf;
use std::time::Duration;

/// How to reach the gateway's broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS (rustls, ring).
    pub tls: bool,
    /// 5 (default) or 3 (MQTT 3.1.1).
    pub version: u8,
    /// Stable across restarts, so the broker keeps the session.
    pub client_id: String,
    pub session_expiry: Duration,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    /// PEM CA bundle for `mqtts://` (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that require them.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub credentials: Option<(String, String)>,
}

impl MqttConfig {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` with defaults for the rest.
    pub fn from_url(url: &str, client_id: &str) -> Result<MqttConfig, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "MQTT URL {url:?} must start with mqtt:// or mqtts://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("MQTT URL {url:?}: bad port {p:?}"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("MQTT URL {url:?} has no host"));
        }
        Ok(MqttConfig {
            host: host.to_string(),
            port,
            tls,
            version: 5,
            client_id: client_id.to_string(),
            session_expiry: Duration::from_secs(86_400),
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 1 << 20,
            ca_file: None,
            client_cert: None,
            credentials: None,
        })
    }

    /// The transport: plain TCP, or TLS with rustls (ring provider, installed at start).
    pub(crate) fn transport(&self) -> Result<rumqttc::Transport, String> {
        if !self.tls {
            return Ok(rumqttc::Transport::Tcp);
        }
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(p) => {
                for cert in rustls_pemfile::certs(&mut &read(p)?[..]) {
                    let cert =
                        cert.map_err(|e| format!("bad certificate in {}: {e}", p.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", p.display()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let certs = rustls_pemfile::certs(&mut &read(cert)?[..])
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("bad client certificate {}: {e}", cert.display()))?;
                let key = rustls_pemfile::private_key(&mut &read(key)?[..])
                    .map_err(|e| format!("bad client key {}: {e}", key.display()))?
                    .ok_or_else(|| format!("no private key in {}", key.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            std::sync::Arc::new(config),
        )))
    }
}

/// Installs rustls' ring provider once per process (mixing providers makes rustls panic).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let c = MqttConfig::from_url("mqtt://127.0.0.1:1884", "x").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.tls, c.version),
            ("127.0.0.1", 1884, false, 5)
        );
        let c = MqttConfig::from_url("mqtts://broker.local", "x").unwrap();
        assert_eq!((c.port, c.tls), (8883, true));
        assert!(MqttConfig::from_url("http://x", "x")
            .unwrap_err()
            .contains("mqtt://"));
        assert!(MqttConfig::from_url("mqtt://h:99999", "x")
            .unwrap_err()
            .contains("port"));
        assert!(MqttConfig::from_url("mqtt://", "x")
            .unwrap_err()
            .contains("no host"));
    }
}
