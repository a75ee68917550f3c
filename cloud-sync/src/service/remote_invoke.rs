//! Remote invoke (docs/cloud-api.md, "Remote invoke"): a direct invocation of a function on one
//! device, relayed over the cloud-side MQTT broker ([`super::broker`]).
//!
//! The replica that takes the operator's request checks it, signs an
//! [`InvokeRequest`](crate::protocol::InvokeRequest) for the device with the active signing key
//! (context `invoke`, with its certificate, expiring [`EXPIRY_GRACE_MS`] after the wait), waits
//! for the device's reply on its own reply topic, and returns it. No reply within the wait is
//! [`RemoteInvokeError::Timeout`], which says when the device was last seen (device requests note
//! it; an agent uploading telemetry is seen every 10 s), so an offline device is plain to see.
//! Job operations (`remote_jobs.rs`) travel the same way ([`Service::relay`]).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::{signing, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::invoke::{
    refusal, InvokeMessage, InvokeReply, InvokeRequest, ReplyStatus, DEFAULT_TIMEOUT_MS,
    EXPIRY_GRACE_MS, MAX_PAYLOAD_BYTES, MAX_TIMEOUT_MS,
};
use crate::protocol::jobs::JobOp;
use crate::protocol::names::{check_name, Qualifier};
use crate::protocol::{Context, KeyCert, Signed};
use crate::store::StoreError;

/// What the operator asks for.
#[derive(Clone, Debug)]
pub struct RemoteInvoke {
    pub function: String,
    /// `latest`, a version or an alias.
    pub qualifier: String,
    pub payload: Vec<u8>,
    pub is_async: bool,
    pub log_tail: bool,
    /// How long to wait for the device (default [`DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: Option<u64>,
}

/// The device's answer (a sync invocation that ran, successfully or not, or an accepted async
/// one), with the device it came from.
#[derive(Clone, Debug)]
pub struct RemoteAnswer {
    /// The device's name.
    pub device: String,
    pub device_id: String,
    pub reply: InvokeReply,
}

/// Why a remote invocation gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteInvokeError {
    /// Bad input, unknown device, store trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cloud runs without `--mqtt`.
    #[error(
        "remote invoke needs a cloud-side MQTT broker: start the cloud with \
         `edgefn-cloud serve --mqtt URL`, and the agents with `[cloud] mqtt`"
    )]
    NoBroker,
    /// The broker is unreachable.
    #[error("{0}")]
    BrokerDown(String),
    /// No reply within the wait.
    #[error("device {device} did not answer within {waited}; {seen}")]
    Timeout {
        device: String,
        waited: String,
        /// "last seen 3m ago" / "it was never seen".
        seen: String,
    },
    /// The device did not run it.
    #[error("device {device} refused: {message}")]
    Refused {
        device: String,
        /// One of [`refusal`].
        code: String,
        message: String,
    },
    /// A reply that is not a reply to this request.
    #[error("device {device} sent a reply that is not valid: {detail}")]
    BadReply { device: String, detail: String },
}

/// "5s", "3m", "2h", "4d" (rounded down).
fn short_duration(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// How [`RemoteInvokeError::Timeout`] describes when a device was last seen.
pub fn last_seen_text(last_seen_ms: Option<i64>, now_ms: i64) -> String {
    match last_seen_ms {
        None => "it was never seen".into(),
        Some(t) if now_ms - t < 1000 => "last seen just now".into(),
        Some(t) => format!("last seen {} ago", short_duration(now_ms - t)),
    }
}

/// A random request id: 128 bits, hex.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The device, as the request needs it.
struct Target {
    id: String,
    name: String,
    last_seen_ms: Option<i64>,
}

/// One request to relay, checked: an invocation or a job operation.
pub(crate) struct Outgoing {
    pub function: String,
    pub qualifier: String,
    pub payload: Vec<u8>,
    pub is_async: bool,
    pub log_tail: bool,
    pub timeout_ms: u64,
    pub job: Option<JobOp>,
}

impl Service {
    /// Relays `req` to `device` (id or name) and waits for its reply (see the module docs).
    pub async fn remote_invoke(
        &self,
        device: String,
        req: RemoteInvoke,
    ) -> Result<RemoteAnswer, RemoteInvokeError> {
        check_name(&req.function).map_err(StoreError::invalid)?;
        let qualifier = Qualifier::parse(&req.qualifier).map_err(StoreError::invalid)?;
        if req.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::invalid(format!(
                "payload of {} bytes: remote invoke carries at most {} bytes",
                req.payload.len(),
                MAX_PAYLOAD_BYTES
            ))
            .into());
        }
        let timeout_ms = check_timeout(req.timeout_ms)?;
        let answer = self
            .relay(
                device,
                Outgoing {
                    function: req.function.clone(),
                    qualifier: qualifier.to_string(),
                    payload: req.payload,
                    is_async: req.is_async,
                    log_tail: req.log_tail,
                    timeout_ms,
                    job: None,
                },
            )
            .await?;
        let bad = |detail: &str| RemoteInvokeError::BadReply {
            device: format!("{} ({})", answer.device, answer.device_id),
            detail: detail.into(),
        };
        match answer.reply.status {
            ReplyStatus::Accepted if !req.is_async => Err(bad("an async answer to a sync request")),
            ReplyStatus::Done if req.is_async => Err(bad("a sync answer to an async request")),
            _ => Ok(answer),
        }
    }

    /// Signs `out` for `device` (id or name), publishes it and waits for the reply: the reply
    /// when the device ran it ([`RemoteInvokeError::Refused`] when it did not).
    pub(crate) async fn relay(
        &self,
        device: String,
        out: Outgoing,
    ) -> Result<RemoteAnswer, RemoteInvokeError> {
        let link = self
            .broker
            .get()
            .cloned()
            .ok_or(RemoteInvokeError::NoBroker)?;
        let timeout_ms = out.timeout_ms;
        let (target, key_id, key, cert) = self
            .store
            .read(move |tx| {
                let id = super::devices::resolve_device(tx, &device)?;
                let r = tx.query_one(
                    "SELECT name, credential_hash, last_seen_ms FROM devices
                      WHERE id = $1",
                    params![&id],
                )?;
                let (name, enrolled, last_seen_ms) =
                    (r.text(0)?, r.opt_text(1)?.is_some(), r.opt_i64(2)?);
                if !enrolled {
                    return Err(StoreError::conflict(format!(
                        "device {name} ({id}) is not enrolled yet"
                    )));
                }
                let (key_id, key) = signing::active_key(tx)?;
                let cert = tx
                    .query_one(
                        "SELECT cert FROM signing_keys WHERE id = $1",
                        params![&key_id],
                    )?
                    .text(0)?;
                let cert: Signed<KeyCert> = serde_json::from_str(&cert)
                    .map_err(|e| StoreError::Db(format!("stored key certificate: {e}")))?;
                Ok((
                    Target {
                        id,
                        name,
                        last_seen_ms,
                    },
                    key_id,
                    key,
                    cert,
                ))
            })
            .await?;
        let label = format!("{} ({})", target.name, target.id);
        let now = now_ms();
        let request_id = request_id();
        let request = InvokeRequest {
            device: target.id.clone(),
            request_id: request_id.clone(),
            function: out.function,
            qualifier: out.qualifier,
            payload_base64: B64.encode(&out.payload),
            is_async: out.is_async,
            log_tail: out.log_tail,
            timeout_ms,
            issued_ms: now,
            expires_ms: now + timeout_ms as i64 + EXPIRY_GRACE_MS,
            reply_to: link.reply_topic(&target.id, &request_id),
            job: out.job,
        };
        let message = InvokeMessage {
            keys: vec![cert],
            request: Signed::sign(&request, Context::Invoke, &key_id, &key),
        };
        let bytes = serde_json::to_vec(&message).expect("protocol types serialise");
        let reply = link
            .request(
                &target.id,
                &request_id,
                bytes,
                Duration::from_millis(timeout_ms),
            )
            .await
            .map_err(|e| RemoteInvokeError::BrokerDown(e.to_string()))?;
        let Some(reply) = reply else {
            let seen = self.presence.merge(&target.id, target.last_seen_ms);
            return Err(RemoteInvokeError::Timeout {
                device: label,
                waited: humantime::format_duration(Duration::from_millis(timeout_ms)).to_string(),
                seen: last_seen_text(seen, now_ms()),
            });
        };
        let bad = |detail: String| RemoteInvokeError::BadReply {
            device: label.clone(),
            detail,
        };
        let reply: InvokeReply = serde_json::from_slice(&reply).map_err(|e| bad(e.to_string()))?;
        if reply.request_id != request_id || reply.device != target.id {
            return Err(bad(format!(
                "it answers request {} of device {}",
                reply.request_id, reply.device
            )));
        }
        if reply.status == ReplyStatus::Refused {
            return Err(RemoteInvokeError::Refused {
                device: label,
                code: reply.code.unwrap_or_else(|| refusal::INVALID.into()),
                message: reply.error.unwrap_or_default(),
            });
        }
        Ok(RemoteAnswer {
            device: target.name,
            device_id: target.id,
            reply,
        })
    }
}

/// The wait of a request: `timeout_ms` or [`DEFAULT_TIMEOUT_MS`], at most [`MAX_TIMEOUT_MS`].
pub(crate) fn check_timeout(timeout_ms: Option<u64>) -> Result<u64, RemoteInvokeError> {
    let timeout_ms = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(
            StoreError::invalid(format!("timeout_ms {timeout_ms}: 1..={MAX_TIMEOUT_MS}")).into(),
        );
    }
    Ok(timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_reads_well() {
        let now = 10_000_000;
        assert_eq!(last_seen_text(None, now), "it was never seen");
        assert_eq!(last_seen_text(Some(now - 300), now), "last seen just now");
        assert_eq!(last_seen_text(Some(now - 4_500), now), "last seen 4s ago");
        assert_eq!(last_seen_text(Some(now - 185_000), now), "last seen 3m ago");
        assert_eq!(
            last_seen_text(Some(now - 2 * 86_400_000), now),
            "last seen 2d ago"
        );
        assert_eq!(short_duration(10_000), "10s");
        assert_eq!(short_duration(90_000), "1m");
    }
}
