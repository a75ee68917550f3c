//! The embedded MQTT broker: [rumqttd] 0.20 running in-process, so a first run of the agent needs
//! no broker installed (`mqtt.url = "embedded"`).
//!
//! [`EmbeddedBroker::start`] binds one plain-TCP listener and returns once it accepts connections;
//! [`EmbeddedBroker::start_on_free_port_or`] falls back to a free loopback port when the preferred
//! one (usually 127.0.0.1:1883, where a Mosquitto may already run) is taken. Dropping the handle
//! closes the listener and every client connection.
//!
//! # What it supports
//!
//! - **MQTT 3.1.1 only.** A listener of rumqttd speaks exactly one protocol version and there is no
//!   negotiation: MQTT 5 (and 3.1) clients are disconnected at CONNECT without a CONNACK. Point the
//!   agent's MQTT client at it with protocol version 3.1.1.
//! - QoS 0, 1 and 2; retained messages; last wills; wildcard filters; shared subscriptions
//!   (`$share/GROUP/FILTER`, round robin).
//! - Persistent sessions (clean session off): subscriptions and undelivered messages are kept while
//!   the client is away, and QoS 1/2 messages the client had not acknowledged are sent again when it
//!   reconnects. They are re-read from the broker's log and sent as new: without the DUP flag and
//!   under a packet id numbered afresh for the new connection (Mosquitto resends the same packet
//!   id with DUP). A receiver that must process each message once cannot tell a redelivery from
//!   a new message by the packet: it needs a dedup key in the message itself.
//! - Limits ([`BrokerOptions`]): packets up to 1 MiB (the agent's default `mqtt.max_packet_bytes`),
//!   at most 100 connections, at most 100 QoS 1/2 messages in flight to each client (fixed in
//!   rumqttd), each subscribed filter keeping the last ~4 MiB of messages in memory — that log is
//!   also all a disconnected persistent session can catch up on.
//!
//! # What it does not do (use Mosquitto for these)
//!
//! - Nothing survives the agent's process: sessions, queued and retained messages live in memory
//!   only, so a restart (or a crash) of the agent loses them — and publishers lose their broker
//!   while the agent is down. The exactly-once and restart guarantees of the MQTT trigger need an
//!   external broker.
//! - No TLS, no websocket, no authentication or ACLs: it is meant for loopback. Binding another
//!   address opens an unauthenticated broker to that network.
//! - No MQTT 5 features (request/response properties, user properties, session expiry).
//! - Acknowledgements must come in the order the messages were sent (the agent sends them so): an
//!   acknowledgement out of order disconnects the client.
//! - Messages are delivered at the subscription's QoS, even when published at a lower one.
//! - A client beyond the connection limit gets no CONNACK (its connect times out) rather than a
//!   refusal.
//! - rumqttd keeps a little state per client id and per topic ever seen until the process exits,
//!   and its routing thread outlives [`EmbeddedBroker`] (rumqttd 0.20 cannot stop it); start one
//!   broker per process.
//!
//! rumqttd logs through `tracing`; the agent installs no `tracing` subscriber (nor a `log` logger,
//! which `tracing` falls back to), so the broker is silent. A subscriber added later should filter
//! the `rumqttd` target (`rumqttd=warn`): it logs every client disconnect as an error.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};

/// How long [`EmbeddedBroker::start`] waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many free ports to try when another process takes the one picked first.
const FREE_PORT_ATTEMPTS: usize = 5;
/// Size of one segment of a filter's in-memory message log, and how many segments it keeps.
const LOG_SEGMENT_BYTES: usize = 1 << 20;
const LOG_SEGMENTS: usize = 4;
/// How long a new TCP connection may take to send its CONNECT packet.
const CONNECT_TIMEOUT_MS: u16 = 10_000;
/// Packets rumqttd reads from one connection before handing them to its router.
const READ_BATCH: usize = 100;
/// QoS 0 messages the router hands to one connection at a time.
const QOS0_BATCH: u64 = 200;

/// Limits of the embedded broker. The defaults suit a gateway: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// Largest packet a client may send (its remaining length), in bytes. Keep it equal to the
    /// agent's `mqtt.max_packet_bytes` so whatever the agent may publish is accepted.
    pub max_packet_bytes: usize,
    /// Most clients connected at once.
    pub max_connections: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            max_packet_bytes: 1 << 20,
            max_connections: 100,
        }
    }
}

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Another process (another broker?) listens on the address already.
    #[error(
        "embedded MQTT broker cannot listen on {addr}: port {port} is already in use \
         (is another MQTT broker running? use it, or choose another embedded listen address)",
        port = addr.port()
    )]
    AddrInUse { addr: SocketAddr },
    /// The address cannot be bound for another reason (not a local address, no permission, ...).
    #[error("embedded MQTT broker cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The broker's thread or runtime could not be created.
    #[error("embedded MQTT broker for {addr} cannot start its thread: {source}")]
    Thread {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The listener was bound but did not accept a connection in time, or stopped.
    #[error("embedded MQTT broker on {addr} is not accepting connections: {reason}")]
    NotAccepting { addr: SocketAddr, reason: String },
}

impl BrokerError {
    fn from_bind(addr: SocketAddr, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::AddrInUse {
            BrokerError::AddrInUse { addr }
        } else {
            BrokerError::Bind { addr, source }
        }
    }
}

/// A running in-process MQTT 3.1.1 broker. Dropping it closes its listener and connections.
#[derive(Debug)]
#[must_use = "the broker stops when this handle is dropped"]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a broker listening on `listen` with the default [`BrokerOptions`]; port 0 picks a
    /// free port. Returns once the listener accepts connections; fails with
    /// [`BrokerError::AddrInUse`] when the port is taken.
    pub fn start(listen: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        Self::start_with(listen, &BrokerOptions::default())
    }

    /// [`start`](Self::start) with explicit limits.
    pub fn start_with(
        listen: SocketAddr,
        options: &BrokerOptions,
    ) -> Result<EmbeddedBroker, BrokerError> {
        if listen.port() == 0 {
            return Self::start_on_free_port(listen.ip(), options);
        }
        // Fail fast (before rumqttd spawns its router) when the port is plainly taken; `launch`
        // still catches a process that takes it in between.
        drop(TcpListener::bind(listen).map_err(|e| BrokerError::from_bind(listen, e))?);
        Self::launch(listen, options)
    }

    /// Starts a broker on `preferred` (e.g. 127.0.0.1:1883) or, when that port is in use, on a
    /// free port of the loopback interface (127.0.0.1, or ::1 for an IPv6 `preferred`). Check
    /// [`addr`](Self::addr) for where it listens. Other errors (e.g. no permission) are returned.
    pub fn start_on_free_port_or(preferred: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        Self::start_on_free_port_or_with(preferred, &BrokerOptions::default())
    }

    /// [`start_on_free_port_or`](Self::start_on_free_port_or) with explicit limits.
    pub fn start_on_free_port_or_with(
        preferred: SocketAddr,
        options: &BrokerOptions,
    ) -> Result<EmbeddedBroker, BrokerError> {
        match Self::start_with(preferred, options) {
            Err(BrokerError::AddrInUse { .. }) => {
                let loopback = match preferred {
                    SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                Self::start_on_free_port(loopback, options)
            }
            other => other,
        }
    }

    /// The address the broker listens on (with the actual port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Picks a free port on `ip` (bind port 0, read it, release it) and starts there; another
    /// process may grab the port in between, so a few ports are tried.
    fn start_on_free_port(
        ip: IpAddr,
        options: &BrokerOptions,
    ) -> Result<EmbeddedBroker, BrokerError> {
        let any = SocketAddr::new(ip, 0);
        let mut last = None;
        for _ in 0..FREE_PORT_ATTEMPTS {
            let addr = TcpListener::bind(any)
                .and_then(|l| l.local_addr())
                .map_err(|e| BrokerError::from_bind(any, e))?;
            match Self::launch(addr, options) {
                Err(e @ BrokerError::AddrInUse { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Starts rumqttd's router and one MQTT 3.1.1 server on `addr`, on threads of their own.
    fn launch(addr: SocketAddr, options: &BrokerOptions) -> Result<EmbeddedBroker, BrokerError> {
        let router_tx = Router::new(0, router_config(options)).spawn();
        let server = Server::new(server_settings(addr, options), router_tx, V4);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ServeFailure>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("mqtt-broker".to_owned())
            .spawn(move || serve(server, ready_tx, stop_rx))
            .map_err(|source| BrokerError::Thread { addr, source })?;
        let mut broker = EmbeddedBroker {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(ServeFailure::Runtime(source))) => {
                return Err(BrokerError::Thread { addr, source })
            }
            Ok(Err(ServeFailure::Bind(e))) => return Err(BrokerError::from_bind(addr, e)),
            Err(_) => {
                return Err(BrokerError::NotAccepting {
                    addr,
                    reason: "its thread did not report the listener".to_owned(),
                })
            }
        }
        broker.wait_accepting(Instant::now() + READY_TIMEOUT)?;
        Ok(broker)
    }

    /// Connects to the listener until it accepts (it does at once: the socket is bound and
    /// listening when the server thread reports ready) or the deadline passes.
    fn wait_accepting(&mut self, deadline: Instant) -> Result<(), BrokerError> {
        let target = connectable(self.addr);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error =
                match TcpStream::connect_timeout(&target, left.max(Duration::from_millis(1))) {
                    Ok(_probe) => return Ok(()),
                    Err(e) => e,
                };
            let stopped = self.thread.as_ref().is_none_or(|t| t.is_finished());
            if stopped || Instant::now() >= deadline {
                return Err(BrokerError::NotAccepting {
                    addr: self.addr,
                    reason: if stopped {
                        "its server stopped".to_owned()
                    } else {
                        format!("connecting for {READY_TIMEOUT:?}: {error}")
                    },
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why the server thread ended before listening.
enum ServeFailure {
    Runtime(io::Error),
    Bind(io::Error),
}

/// The server thread: a current-thread runtime running rumqttd's accept loop (and its
/// connections) until `stop` fires or the handle is dropped; then the runtime is dropped, which
/// closes the listener and every connection.
fn serve(
    mut server: Server<V4>,
    ready: mpsc::Sender<Result<(), ServeFailure>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(ServeFailure::Runtime(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let mut accept_loop = pin!(server.start(LinkType::Remote));
        // rumqttd binds its listener synchronously in the first poll of its accept loop (tokio
        // resolves a `SocketAddr` without waiting), so after one poll either the loop failed to
        // bind or it is listening and waits for connections.
        match poll_fn(|cx| Poll::Ready(accept_loop.as_mut().poll(cx))).await {
            Poll::Pending => {
                let _ = ready.send(Ok(()));
            }
            Poll::Ready(result) => {
                let _ = ready.send(Err(ServeFailure::Bind(bind_error(result))));
                return;
            }
        }
        tokio::select! {
            _ = accept_loop => {}
            _ = stop => {}
        }
    });
}

/// The `io::Error` behind rumqttd's server error (binding is its only way to end), keeping the
/// OS error code so `AddrInUse` is recognised.
fn bind_error<E: std::error::Error + 'static>(result: Result<(), E>) -> io::Error {
    let error = match result {
        Ok(()) => return io::Error::other("rumqttd's accept loop ended"),
        Err(e) => e,
    };
    match std::error::Error::source(&error).and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => match io.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(io.kind(), io.to_string()),
        },
        None => io::Error::other(error.to_string()),
    }
}

/// Where to connect to reach a listener on `addr` (an unspecified address means loopback).
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn router_config(options: &BrokerOptions) -> RouterConfig {
    RouterConfig {
        max_connections: options.max_connections,
        max_outgoing_packet_count: QOS0_BATCH,
        max_segment_size: LOG_SEGMENT_BYTES,
        max_segment_count: LOG_SEGMENTS,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

fn server_settings(addr: SocketAddr, options: &BrokerOptions) -> ServerSettings {
    ServerSettings {
        name: "edgefn-embedded-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT_MS,
            max_payload_size: options.max_packet_bytes,
            max_inflight_count: READ_BATCH,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, QoS};

    const WAIT: Duration = Duration::from_secs(10);

    fn loopback0() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    fn client(broker: &EmbeddedBroker, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
        let addr = broker.addr();
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_clean_session(clean)
            .set_manual_acks(!clean)
            .set_keep_alive(Duration::from_secs(5));
        AsyncClient::new(options, 16)
    }

    /// Polls `events` until `pick` returns something, or fails after [`WAIT`].
    async fn next<T>(
        events: &mut EventLoop,
        mut pick: impl FnMut(Incoming) -> Option<T>,
    ) -> Result<T, ConnectionError> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Incoming(packet) = events.poll().await? {
                    if let Some(found) = pick(packet) {
                        return Ok(found);
                    }
                }
            }
        })
        .await
        .expect("timed out waiting for an MQTT packet")
    }

    /// Drives a publisher's event loop in the background; yields the packet id of each publish
    /// the broker completes (PUBACK for QoS 1, PUBCOMP for QoS 2).
    fn pub_acks(mut events: EventLoop) -> tokio::sync::mpsc::UnboundedReceiver<u16> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                let pkid = match event {
                    Event::Incoming(Incoming::PubAck(ack)) => ack.pkid,
                    Event::Incoming(Incoming::PubComp(comp)) => comp.pkid,
                    _ => continue,
                };
                if tx.send(pkid).is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn subscribed(events: &mut EventLoop) {
        next(events, |p| matches!(p, Incoming::SubAck(_)).then_some(()))
            .await
            .unwrap();
    }

    fn publish_of(p: Incoming) -> Option<rumqttc::Publish> {
        match p {
            Incoming::Publish(p) => Some(p),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qos1_roundtrip_of_100_kib() {
        let broker = EmbeddedBroker::start(loopback0()).unwrap();
        assert!(broker.addr().ip().is_loopback());
        assert_ne!(broker.addr().port(), 0);

        let (sub, mut sub_events) = client(&broker, "sub", true);
        sub.subscribe("sensors/+/big", QoS::AtLeastOnce)
            .await
            .unwrap();
        subscribed(&mut sub_events).await;

        let (publisher, pub_events) = client(&broker, "pub", true);
        let mut pub_acks = pub_acks(pub_events);
        let payload: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        publisher
            .publish("sensors/a/big", QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();

        let got = next(&mut sub_events, publish_of).await.unwrap();
        assert_eq!(got.topic, "sensors/a/big");
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert_eq!(got.payload.len(), payload.len());
        assert!(got.payload == payload, "payload changed in transit");
        tokio::time::timeout(WAIT, pub_acks.recv())
            .await
            .expect("PUBACK in time")
            .expect("a PUBACK");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qos2_roundtrip() {
        let broker = EmbeddedBroker::start(loopback0()).unwrap();
        let (sub, mut sub_events) = client(&broker, "sub2", true);
        sub.subscribe("q2/#", QoS::ExactlyOnce).await.unwrap();
        subscribed(&mut sub_events).await;

        let (publisher, pub_events) = client(&broker, "pub2", true);
        let mut completed = pub_acks(pub_events);
        publisher
            .publish("q2/x", QoS::ExactlyOnce, false, "once")
            .await
            .unwrap();
        let got = next(&mut sub_events, publish_of).await.unwrap();
        assert_eq!(
            (got.qos, &got.payload[..]),
            (QoS::ExactlyOnce, &b"once"[..])
        );
        tokio::time::timeout(WAIT, completed.recv())
            .await
            .expect("PUBCOMP in time")
            .expect("a PUBCOMP");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retained_message_reaches_a_later_subscriber() {
        let broker = EmbeddedBroker::start(loopback0()).unwrap();
        let (publisher, pub_events) = client(&broker, "pub", true);
        let mut pub_acks = pub_acks(pub_events);
        publisher
            .publish("status/gw", QoS::AtLeastOnce, true, "online")
            .await
            .unwrap();
        pub_acks.recv().await.unwrap();

        let (sub, mut sub_events) = client(&broker, "late", true);
        sub.subscribe("status/#", QoS::AtLeastOnce).await.unwrap();
        let got = next(&mut sub_events, publish_of).await.unwrap();
        assert_eq!(&got.payload[..], b"online");
    }

    /// Persistent sessions: a message the subscriber received but did not acknowledge comes again
    /// when it reconnects (without DUP, under a fresh packet id: see the module docs), and so do
    /// messages published while it was away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_session_keeps_messages_while_away() {
        let broker = EmbeddedBroker::start(loopback0()).unwrap();
        let (sub, mut sub_events) = client(&broker, "agent", false);
        sub.subscribe("in/#", QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut sub_events).await;

        let (publisher, pub_events) = client(&broker, "pub", true);
        let mut pub_acks = pub_acks(pub_events);
        publisher
            .publish("in/x", QoS::AtLeastOnce, false, "unacked")
            .await
            .unwrap();
        pub_acks.recv().await.unwrap();
        let first = next(&mut sub_events, publish_of).await.unwrap();
        assert_eq!(&first.payload[..], b"unacked");
        // Go away without acknowledging it (like a crash).
        drop((sub, sub_events));

        publisher
            .publish("in/x", QoS::AtLeastOnce, false, "while-away")
            .await
            .unwrap();
        pub_acks.recv().await.unwrap();

        let (sub, mut sub_events) = client(&broker, "agent", false);
        let present = next(&mut sub_events, |p| match p {
            Incoming::ConnAck(ack) => Some(ack.session_present),
            _ => None,
        })
        .await
        .unwrap();
        assert!(present, "the broker kept the session");
        let mut got = Vec::new();
        while got.len() < 2 {
            let p = next(&mut sub_events, publish_of).await.unwrap();
            assert!(!p.dup, "rumqttd resends without DUP");
            sub.ack(&p).await.unwrap();
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
        assert_eq!(got, ["unacked", "while-away"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packets_over_the_limit_end_the_connection() {
        let options = BrokerOptions {
            max_packet_bytes: 64 * 1024,
            ..BrokerOptions::default()
        };
        let broker = EmbeddedBroker::start_with(loopback0(), &options).unwrap();
        let (publisher, mut events) = client(&broker, "big", true);
        publisher
            .publish("t", QoS::AtLeastOnce, false, vec![0u8; 65 * 1024])
            .await
            .unwrap();
        let outcome = next(&mut events, |p| match p {
            Incoming::PubAck(_) => Some("acknowledged"),
            _ => None,
        })
        .await;
        assert!(
            outcome.is_err(),
            "the broker accepted a packet over its limit"
        );
    }

    /// Documents the limitation: an MQTT 5 client gets no CONNACK from the embedded broker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt5_clients_are_refused() {
        let broker = EmbeddedBroker::start(loopback0()).unwrap();
        let addr = broker.addr();
        let options = rumqttc::v5::MqttOptions::new("v5", addr.ip().to_string(), addr.port());
        let (_client, mut events) = rumqttc::v5::AsyncClient::new(options, 4);
        let outcome = tokio::time::timeout(WAIT, events.poll())
            .await
            .expect("the broker answers at once");
        assert!(outcome.is_err(), "MQTT 5 connect succeeded: {outcome:?}");
    }

    #[test]
    fn a_port_taken_after_the_probe_is_detected_too() {
        // `launch` is what runs after the probe: the port may have been taken in between.
        let holder = TcpListener::bind(loopback0()).unwrap();
        let taken = holder.local_addr().unwrap();
        let err = EmbeddedBroker::launch(taken, &BrokerOptions::default()).unwrap_err();
        assert!(
            matches!(err, BrokerError::AddrInUse { addr } if addr == taken),
            "{err:?}"
        );
    }

    #[test]
    fn taken_port_is_a_clear_error() {
        let holder = TcpListener::bind(loopback0()).unwrap();
        let taken = holder.local_addr().unwrap();
        let err = EmbeddedBroker::start(taken).unwrap_err();
        assert!(
            matches!(err, BrokerError::AddrInUse { addr } if addr == taken),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&taken.to_string()), "{message}");
        assert!(message.contains("already in use"), "{message}");
    }

    #[test]
    fn port_taken_by_another_embedded_broker_is_a_clear_error() {
        let first = EmbeddedBroker::start(loopback0()).unwrap();
        let err = EmbeddedBroker::start(first.addr()).unwrap_err();
        assert!(matches!(err, BrokerError::AddrInUse { .. }), "{err:?}");
        assert!(err.to_string().contains(&first.addr().port().to_string()));
    }

    #[test]
    fn falls_back_to_a_free_port_when_the_preferred_one_is_taken() {
        let holder = TcpListener::bind(loopback0()).unwrap();
        let taken = holder.local_addr().unwrap();
        let broker = EmbeddedBroker::start_on_free_port_or(taken).unwrap();
        assert_ne!(broker.addr().port(), taken.port());
        assert!(broker.addr().ip().is_loopback());
        TcpStream::connect(broker.addr()).unwrap();
    }

    #[test]
    fn prefers_the_preferred_port_when_free() {
        let free = TcpListener::bind(loopback0())
            .unwrap()
            .local_addr()
            .unwrap();
        let broker = EmbeddedBroker::start_on_free_port_or(free).unwrap();
        assert_eq!(broker.addr(), free);
    }

    #[test]
    fn dropping_the_broker_releases_its_port() {
        let broker = EmbeddedBroker::start(loopback0()).unwrap();
        let addr = broker.addr();
        drop(broker);
        assert!(
            TcpStream::connect(addr).is_err(),
            "nothing listens any more"
        );
        drop(EmbeddedBroker::start(addr).unwrap());
    }

    #[test]
    fn other_bind_errors_are_not_mistaken_for_a_taken_port() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this machine.
        let addr: SocketAddr = "192.0.2.1:1883".parse().unwrap();
        let err = EmbeddedBroker::start_on_free_port_or(addr).unwrap_err();
        assert!(matches!(err, BrokerError::Bind { .. }), "{err:?}");
        assert!(err.to_string().contains("192.0.2.1:1883"), "{err}");
    }
}
