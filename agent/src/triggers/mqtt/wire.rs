//! One face over rumqttc's MQTT 5 (`v5`) and 3.1.1 clients: options, subscribe, publish, ack,
//! and the events the link cares about. Everything protocol-version specific lives here.

use super::MqttConfig;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use std::time::Duration;

/// An incoming PUBLISH, whatever the protocol version.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub pkid: u16,
    /// Set on redelivery; with `pkid` it drives dedup.
    pub dup: bool,
    /// MQTT 5 request/response.
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
    pub content_type: Option<String>,
    /// What `ack` needs.
    pub token: AckToken,
}

/// The original packet, which rumqttc needs to acknowledge it.
#[derive(Debug, Clone)]
pub enum AckToken {
    V5(p5::Publish),
    V4(rumqttc::Publish),
}

/// What the event loop reported.
// `Message` is nearly every notice, moved once into the link: boxing it would add an allocation
// per message to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Notice {
    Connected {
        session_present: bool,
    },
    Message(Message),
    /// The broker acknowledged our publish `pkid` (PUBACK for QoS 1, PUBCOMP for QoS 2).
    Acked(u16),
    /// rumqttc sent our next publish with this packet id (0 for QoS 0).
    Sent(u16),
    Other,
}

#[derive(Clone)]
pub enum Client {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

pub enum EventLoop {
    V5(Box<rumqttc::v5::EventLoop>),
    V4(Box<rumqttc::EventLoop>),
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

/// QoS 1/2 messages the broker may send us before we acknowledge (MQTT 5 receive maximum; an
/// MQTT 3.1.1 broker applies its own limit, Mosquitto's `max_inflight_messages`, default 20).
/// Acks wait for commits, so this is the commit pipeline's depth; it stays within a function's
/// default queue (`max_queue` 64 plus the running one).
pub const RECEIVE_MAXIMUM: u16 = 64;

/// Our publishes in flight at once (the link's outbox window). Also rumqttc's upper limit: by
/// default it sizes its table of in-flight publishes by the broker's receive maximum, and
/// Mosquitto announces 65,535, so every MQTT 5 connection held a 13.5 MiB table, written in
/// full (measured: 28 of the idle agent's 28.5 MiB RSS with 10 functions were 13.8 MiB of it).
pub const OUTGOING_INFLIGHT: u16 = 256;

/// Builds the client and its event loop (nothing connects until the loop is polled).
pub fn connect(cfg: &MqttConfig) -> Result<(Client, EventLoop), String> {
    let transport = cfg.transport()?;
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(10);
    // Room for a burst of messages waiting for their commit.
    let cap = 1024;
    if cfg.version == 5 {
        let mut o = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        o.set_keep_alive(cfg.keep_alive)
            .set_clean_start(false)
            .set_session_expiry_interval(Some(
                cfg.session_expiry.as_secs().min(u32::MAX as u64) as u32
            ))
            .set_manual_acks(true)
            // Flow control: without it an MQTT 5 broker may send up to 65,535 QoS 1/2 messages
            // before our first ack. (Mosquitto 2.0.11 exceeds it once acks flow, so the link
            // also bounds the messages in progress itself.)
            .set_receive_maximum(Some(RECEIVE_MAXIMUM))
            .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
            .set_max_packet_size(Some(cfg.max_packet_bytes as u32))
            .set_transport(transport)
            .set_request_channel_capacity(cap);
        if let Some((u, p)) = &cfg.credentials {
            o.set_credentials(u, p);
        }
        o.set_network_options(net);
        let (client, el) = rumqttc::v5::AsyncClient::new(o, cap);
        Ok((Client::V5(client), EventLoop::V5(Box::new(el))))
    } else {
        let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
        o.set_keep_alive(cfg.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes)
            .set_transport(transport)
            .set_request_channel_capacity(cap);
        if let Some((u, p)) = &cfg.credentials {
            o.set_credentials(u, p);
        }
        let (client, mut el) = rumqttc::AsyncClient::new(o, cap);
        el.set_network_options(net);
        Ok((Client::V4(client), EventLoop::V4(Box::new(el))))
    }
}

impl EventLoop {
    /// The next event; `Err` means the connection dropped (poll again to reconnect).
    pub async fn poll(&mut self) -> Result<Notice, String> {
        match self {
            EventLoop::V5(el) => {
                use rumqttc::v5::{Event, Incoming};
                Ok(match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Incoming::ConnAck(c)) => Notice::Connected {
                        session_present: c.session_present,
                    },
                    Event::Incoming(Incoming::Publish(p)) => {
                        let props = p.properties.clone().unwrap_or_default();
                        Notice::Message(Message {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.clone(),
                            qos: p.qos as u8,
                            pkid: p.pkid,
                            dup: p.dup,
                            response_topic: props.response_topic,
                            correlation: props.correlation_data,
                            content_type: props.content_type,
                            token: AckToken::V5(p),
                        })
                    }
                    Event::Incoming(Incoming::PubAck(a)) => Notice::Acked(a.pkid),
                    Event::Incoming(Incoming::PubComp(a)) => Notice::Acked(a.pkid),
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Notice::Sent(pkid),
                    _ => Notice::Other,
                })
            }
            EventLoop::V4(el) => {
                use rumqttc::{Event, Incoming};
                Ok(match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Incoming::ConnAck(c)) => Notice::Connected {
                        session_present: c.session_present,
                    },
                    Event::Incoming(Incoming::Publish(p)) => Notice::Message(Message {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        qos: p.qos as u8,
                        pkid: p.pkid,
                        dup: p.dup,
                        response_topic: None,
                        correlation: None,
                        content_type: None,
                        token: AckToken::V4(p),
                    }),
                    Event::Incoming(Incoming::PubAck(a)) => Notice::Acked(a.pkid),
                    Event::Incoming(Incoming::PubComp(a)) => Notice::Acked(a.pkid),
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Notice::Sent(pkid),
                    _ => Notice::Other,
                })
            }
        }
    }
}

impl Client {
    pub async fn subscribe(&self, filter: &str, qos: u8) -> Result<(), String> {
        match self {
            Client::V5(c) => c
                .subscribe(filter, qos5(qos))
                .await
                .map_err(|e| e.to_string()),
            Client::V4(c) => c
                .subscribe(filter, qos4(qos))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn unsubscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V5(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
            Client::V4(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
        }
    }

    /// Publishes; MQTT 5 adds the correlation data and an `edgefn-id` user property.
    pub async fn publish(
        &self,
        topic: &str,
        qos: u8,
        payload: Bytes,
        correlation: Option<Bytes>,
        message_id: &str,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => {
                let props = p5::PublishProperties {
                    correlation_data: correlation,
                    user_properties: vec![("edgefn-id".into(), message_id.into())],
                    ..Default::default()
                };
                c.publish_with_properties(topic, qos5(qos), false, payload, props)
                    .await
                    .map_err(|e| e.to_string())
            }
            Client::V4(c) => c
                .publish(topic, qos4(qos), false, payload.to_vec())
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn ack(&self, token: &AckToken) -> Result<(), String> {
        match (self, token) {
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V4(c), AckToken::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("ack token of the other protocol version".into()),
        }
    }
}

/// Reconnect delay after `failures` consecutive failures: 100 ms doubling, capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(9)).min(30_000))
}
