//! MQTT nudges (optional, `serve --mqtt URL`): when something changes, the server brings every
//! enrolled device's desired-state document up to date and publishes, for each device whose
//! sequence moved, `{"sequence": N}` (QoS 1, not retained) to `edgefn/devices/{device_id}/desired`
//! on the cloud-side broker. An agent that holds a connection there fetches at once instead of
//! waiting for its next poll; the nudge carries nothing to trust, the fetched document is
//! verified as always. Each replica nudges for every change it sees (its own, and through the
//! store's revision the others'). `mqtts://` uses rustls (ring), optionally with a client
//! certificate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS, TlsConfiguration, Transport};

use super::ServerError;
use crate::service::Service;

/// The topic of a device's nudges.
pub fn topic(device_id: &str) -> String {
    format!("edgefn/devices/{device_id}/desired")
}

/// Where and how to reach the cloud-side broker.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// `mqtt://HOST[:PORT]` (default port 1883) or `mqtts://HOST[:PORT]` (TLS, default 8883).
    pub url: String,
    /// PEM CA certificate(s) to trust for `mqtts://` (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Parses the URL: (host, port, tls).
fn parse(url: &str) -> Result<(String, u16, bool), ServerError> {
    let bad = |why: &str| ServerError::Setup(format!("--mqtt {url:?}: {why}"));
    let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return Err(bad("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_owned(), port, tls))
}

/// TLS with rustls (the ring provider, installed at start).
fn tls_transport(opts: &BrokerOptions) -> Result<Transport, ServerError> {
    let setup = ServerError::Setup;
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| setup(format!("{}: {e}", p.display())));
    let mut roots = rustls::RootCertStore::empty();
    match &opts.ca {
        Some(p) => {
            for cert in rustls_pemfile::certs(&mut &read(p)?[..]) {
                let cert = cert.map_err(|e| setup(format!("{}: {e}", p.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| setup(format!("{}: {e}", p.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| setup(e.to_string()))?
    .with_root_certificates(roots);
    let config = match &opts.client_cert {
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut &read(cert)?[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| setup(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut &read(key)?[..])
                .map_err(|e| setup(format!("{}: {e}", key.display())))?
                .ok_or_else(|| setup(format!("{}: no private key in it", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| setup(format!("MQTT client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))))
}

/// Starts the nudger: an MQTT client (reconnecting) and the task that publishes nudges.
pub fn start(service: Service, broker: &BrokerOptions) -> Result<(), ServerError> {
    let (host, port, tls) = parse(&broker.url)?;
    let mut options = MqttOptions::new(
        crate::keys::random_token("edgefn-cloud-")
            .chars()
            .take(23)
            .collect::<String>(),
        host,
        port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    if tls {
        options.set_transport(tls_transport(broker)?);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                eprintln!("mqtt nudges: {e}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut changes = service.subscribe();
        let mut sent: HashMap<String, u64> = HashMap::new();
        let mut first = true;
        loop {
            changes.borrow_and_update();
            match service.refresh_documents().await {
                Ok(current) => {
                    for (device, sequence) in current {
                        if sent.get(&device) == Some(&sequence) {
                            continue;
                        }
                        if !first {
                            let payload = serde_json::json!({"sequence": sequence}).to_string();
                            if let Err(e) = client
                                .publish(topic(&device), QoS::AtLeastOnce, false, payload)
                                .await
                            {
                                eprintln!("mqtt nudge to {device}: {e}");
                            }
                        }
                        sent.insert(device, sequence);
                    }
                    first = false;
                }
                Err(e) => eprintln!("mqtt nudges: {e}"),
            }
            if changes.changed().await.is_err() {
                return;
            }
            // Let a burst of changes settle into one round of nudges.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Ok(())
}
