//! The cloud-side MQTT broker (`serve --mqtt URL`): one connection per replica that carries
//! nudges out (`server::nudge`), remote invoke requests out and their replies in
//! ([`super::remote_invoke`]).
//!
//! Replies: each replica subscribes (at every connection, the session is clean) to
//! `edgefn/devices/+/invoke/reply/{replica}/+` and names
//! `edgefn/devices/{device}/invoke/reply/{replica}/{request_id}` as a request's `reply_to`, so
//! it gets only the replies to its own requests, and the device's id in the topic is what the
//! broker's ACL lets only that device write (docs/cloud-api.md, "Remote invoke"). A reply is
//! handed to the request waiting for exactly that topic; others are dropped. `mqtts://` uses
//! rustls (ring), optionally with a client certificate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{oneshot, watch};

use crate::protocol::invoke::{reply_prefix, request_topic, MAX_PACKET_BYTES};

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

/// Why the link cannot be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A bad URL or unusable TLS files (at start).
    #[error("{0}")]
    Setup(String),
    /// Not connected (the broker is down or refuses this client).
    #[error("the cloud is not connected to its MQTT broker {0} (it keeps trying)")]
    Down(String),
}

/// Parses the URL: (host, port, tls).
fn parse(url: &str) -> Result<(String, u16, bool), BrokerError> {
    let bad = |why: &str| BrokerError::Setup(format!("--mqtt {url:?}: {why}"));
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
fn tls_transport(opts: &BrokerOptions) -> Result<Transport, BrokerError> {
    let setup = BrokerError::Setup;
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

/// Requests waiting for their reply, by request id: the exact topic the reply must come on
/// (it names the device) and where to hand it.
type Waiters = Arc<Mutex<HashMap<String, (String, oneshot::Sender<Bytes>)>>>;

/// The connection (reconnecting on its own). Cheap to share behind an `Arc`.
pub struct BrokerLink {
    client: AsyncClient,
    /// This replica's segment in reply topics (random per start).
    replica: String,
    /// True from the reply subscription's SubAck until the connection drops: only then can a
    /// request get its reply.
    ready: watch::Receiver<bool>,
    waiters: Waiters,
    /// The broker's URL, for messages.
    url: String,
}

/// Removes a request's waiter however its wait ends.
struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    request_id: &'a str,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.request_id);
    }
}

impl BrokerLink {
    /// Connects (in the background, retrying every second while the broker is unreachable).
    /// Call on a tokio runtime.
    pub fn connect(opts: &BrokerOptions) -> Result<Arc<BrokerLink>, BrokerError> {
        let (host, port, tls) = parse(&opts.url)?;
        let id: String = crate::keys::random_token("")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let mut options = MqttOptions::new(format!("edgefn-cloud-{id}"), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if tls {
            options.set_transport(tls_transport(opts)?);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (ready_tx, ready) = watch::channel(false);
        let waiters: Waiters = Arc::default();
        let filter = format!("edgefn/devices/+/invoke/reply/{id}/+");
        let (sub, routes, url) = (client.clone(), waiters.clone(), opts.url.clone());
        tokio::spawn(async move {
            let mut down = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        down = false;
                        // Never `.await` a send here: this task is what drains the channel.
                        if let Err(e) = sub.try_subscribe(&filter, QoS::AtLeastOnce) {
                            eprintln!("mqtt {url}: cannot subscribe to {filter}: {e}");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let request_id = p.topic.rsplit('/').next().unwrap_or_default();
                        let mut w = routes.lock().unwrap_or_else(|e| e.into_inner());
                        if w.get(request_id)
                            .is_some_and(|(topic, _)| *topic == p.topic)
                        {
                            if let Some((_, tx)) = w.remove(request_id) {
                                let _ = tx.send(p.payload);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ready_tx.send(false);
                        if !down {
                            eprintln!("mqtt {url}: {e}; reconnecting");
                            down = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Arc::new(BrokerLink {
            client,
            replica: id,
            ready,
            waiters,
            url: opts.url.clone(),
        }))
    }

    /// The broker's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Publishes QoS 1, not retained (queued while disconnected).
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// The reply topic of a request to `device`.
    pub fn reply_topic(&self, device: &str, request_id: &str) -> String {
        format!("{}{}/{request_id}", reply_prefix(device), self.replica)
    }

    /// Publishes `message` to `device`'s request topic and waits up to `wait` for the reply on
    /// [`BrokerLink::reply_topic`]; `Ok(None)` when none came. Fails at once (after a few
    /// seconds for a connection being made) when the link is down.
    pub async fn request(
        &self,
        device: &str,
        request_id: &str,
        message: Vec<u8>,
        wait: Duration,
    ) -> Result<Option<Bytes>, BrokerError> {
        let mut ready = self.ready.clone();
        // (The `Ref` that `wait_for` returns must not live across the awaits below.)
        let connected = matches!(
            tokio::time::timeout(wait.min(Duration::from_secs(5)), ready.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        if !connected {
            return Err(BrokerError::Down(self.url.clone()));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                request_id.to_owned(),
                (self.reply_topic(device, request_id), tx),
            );
        let _guard = WaiterGuard {
            waiters: &self.waiters,
            request_id,
        };
        self.client
            .publish(request_topic(device), QoS::AtLeastOnce, false, message)
            .await
            .map_err(|_| BrokerError::Down(self.url.clone()))?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => Ok(Some(reply)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse("mqtt://broker").unwrap(),
            ("broker".into(), 1883, false)
        );
        assert_eq!(
            parse("mqtts://broker:8884/").unwrap(),
            ("broker".into(), 8884, true)
        );
        assert!(parse("http://broker").is_err());
        assert!(parse("mqtt://:1883").is_err());
        assert!(parse("mqtt://b:x").is_err());
    }
}
