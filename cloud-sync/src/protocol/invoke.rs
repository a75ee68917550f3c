//! Remote invoke (docs/cloud-api.md, "Remote invoke"): a direct invocation the cloud relays to
//! one device over the cloud-side MQTT broker, and the device's reply.
//!
//! ```text
//! cloud ──InvokeMessage (signed, QoS 1)──► edgefn/devices/{device}/invoke
//! device ──InvokeReply (JSON, QoS 1)──────► the request's reply_to,
//!                                           edgefn/devices/{device}/invoke/reply/{replica}/{request}
//! ```
//!
//! The request is signed (context `invoke`) by a signing key the root certifies, exactly as a
//! desired-state document is, and names its device, a random request id and an expiry a few
//! seconds past the time the cloud waits: a device runs no unsigned, foreign, expired or
//! replayed request ([`verify_invoke`]; replays are the device's to remember, request ids until
//! their expiry). The reply is not signed: that it comes from the device rests on the broker's
//! ACLs (a device may write only under its own `edgefn/devices/{device}/invoke/reply/`).

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::keycert::KeyCert;
use super::signed::{Context, Signed};
use super::verify::{verify_key_cert, VerifyError};

/// Largest payload a remote invocation carries (it travels base64 inside a signed payload,
/// itself base64: ~1.8x on the wire).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Longest time the cloud waits for a reply.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// The time the cloud waits when the request names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// A request expires this long after the cloud stops waiting (delivery and clock skew).
pub const EXPIRY_GRACE_MS: i64 = 5_000;
/// A device refuses a request that expires further ahead than this: it must remember every
/// request id until its expiry, so the expiry bounds that memory.
pub const MAX_HORIZON_MS: i64 = MAX_TIMEOUT_MS as i64 + 60_000;
/// The log tail of a reply keeps the newest lines of the invocation up to this many bytes of
/// text (as Lambda's `LogType=Tail`, 4 KB).
pub const MAX_TAIL_BYTES: usize = 4096;
/// The largest MQTT packet either side sends or takes on the cloud-side broker: a request
/// with the largest payload, or a reply with the largest response (1 MiB) and its tail.
pub const MAX_PACKET_BYTES: usize = 4 << 20;

/// The topic a device takes requests on.
pub fn request_topic(device: &str) -> String {
    format!("edgefn/devices/{device}/invoke")
}

/// Every reply topic of a device starts with this (its broker ACL lets only it write there).
pub fn reply_prefix(device: &str) -> String {
    format!("edgefn/devices/{device}/invoke/reply/")
}

/// What the cloud publishes to [`request_topic`]: the signing key's certificate (signed by the
/// root) and the signed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeMessage {
    /// Certificates of the key that signed `request` (context `key`, signed by `root`).
    pub keys: Vec<Signed<KeyCert>>,
    /// The request (context `invoke`).
    pub request: Signed<InvokeRequest>,
}

/// Payload of the signed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// The device id this request is for.
    pub device: String,
    /// Random (128 bits, hex): names the reply and lets the device refuse a replay.
    pub request_id: String,
    pub function: String,
    /// `latest`, a version number or an alias.
    pub qualifier: String,
    /// The event's data.
    pub payload_base64: String,
    /// Answer at once with the invocation id (`accepted`) and run in the background.
    #[serde(rename = "async")]
    pub is_async: bool,
    /// Include the invocation's newest log lines ([`MAX_TAIL_BYTES`]) in the reply.
    pub log_tail: bool,
    /// How long the cloud waits for the reply.
    pub timeout_ms: u64,
    pub issued_ms: i64,
    /// The device refuses the request after this time.
    pub expires_ms: i64,
    /// Where to publish the reply: under [`reply_prefix`] of `device`.
    pub reply_to: String,
    /// Instead of an invocation, an operation on the device's batch jobs (`protocol::jobs`;
    /// `function` and `qualifier` are then those of a submission, or empty). Absent from
    /// plain invocations, so they read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<super::jobs::JobOp>,
}

/// What the device answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// A sync invocation ran (successfully or not: see `outcome`).
    Done,
    /// An async invocation was accepted (`invocation_id`) and runs in the background.
    Accepted,
    /// The device did not run it (`code`, `error`).
    Refused,
}

/// Why a device refused to run a request (`code` of a refused reply).
pub mod refusal {
    /// No such function, version or alias on the device.
    pub const NOT_FOUND: &str = "not_found";
    /// The function is disabled.
    pub const DISABLED: &str = "disabled";
    /// Every instance busy and the queue full.
    pub const THROTTLED: &str = "throttled";
    /// The request expired before the device got it (or too far ahead: clock skew).
    pub const EXPIRED: &str = "expired";
    /// Anything else (a bad qualifier, an unusable stored module, bad job input, ...).
    pub const INVALID: &str = "invalid";
    /// The job is in a state that does not allow it (cancel of a finished job).
    pub const CONFLICT: &str = "conflict";
}

/// A log line of the tail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailLine {
    pub time_ms: i64,
    /// `trace` .. `error`.
    pub level: String,
    pub text: String,
}

/// The reply (JSON, not signed: see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeReply {
    pub request_id: String,
    /// The device that answers.
    pub device: String,
    pub status: ReplyStatus,
    /// With `refused`: one of [`refusal`].
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub invocation_id: Option<String>,
    #[serde(default)]
    pub function: String,
    /// The version that ran (`None` = latest).
    #[serde(default)]
    pub version: Option<u32>,
    /// With `done`: the agent's outcome (`success`, `error`, `trap`, ...).
    #[serde(default)]
    pub outcome: Option<String>,
    /// The function's error message, or why the request was refused.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub response_base64: String,
    #[serde(default)]
    pub duration_us: u64,
    #[serde(default)]
    pub fuel_used: u64,
    /// The newest log lines of the invocation, oldest first (with `log_tail`).
    #[serde(default)]
    pub logs: Vec<TailLine>,
    /// Older lines were left out of `logs` to stay within [`MAX_TAIL_BYTES`].
    #[serde(default)]
    pub logs_truncated: bool,
    /// With `done` for a job operation: the job document (`submit`, `status`, `cancel`), the
    /// list of jobs (`list`) or a `protocol::jobs::ResultsPage` (`results`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_json::Value>,
}

impl InvokeReply {
    /// A refusal of `request_id` by `device`.
    pub fn refused(request_id: &str, device: &str, code: &str, error: String) -> InvokeReply {
        InvokeReply {
            request_id: request_id.to_owned(),
            device: device.to_owned(),
            status: ReplyStatus::Refused,
            code: Some(code.to_owned()),
            invocation_id: None,
            function: String::new(),
            version: None,
            outcome: None,
            error: Some(error),
            response_base64: String::new(),
            duration_us: 0,
            fuel_used: 0,
            logs: Vec::new(),
            logs_truncated: false,
            job: None,
        }
    }
}

/// Keeps the newest lines whose texts fit in [`MAX_TAIL_BYTES`] (at least the newest line,
/// cut to fit); `true` if some were left out or cut.
pub fn tail(lines: Vec<TailLine>) -> (Vec<TailLine>, bool) {
    let mut kept = Vec::new();
    let mut bytes = 0;
    let mut truncated = false;
    for mut line in lines.into_iter().rev() {
        if bytes + line.text.len() > MAX_TAIL_BYTES {
            if kept.is_empty() {
                let mut cut = MAX_TAIL_BYTES;
                while !line.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.text.truncate(cut);
                kept.push(line);
            }
            truncated = true;
            break;
        }
        bytes += line.text.len();
        kept.push(line);
    }
    kept.reverse();
    (kept, truncated)
}

/// Why [`verify_invoke`] refused a request, and whether it may be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub error: VerifyError,
    /// The request, when it is authentic (its signature checked out) and for this device, so a
    /// refusal can be published to its `reply_to`; `None` for forgeries and others' requests,
    /// which are only logged.
    pub answerable: Option<Box<InvokeRequest>>,
}

/// Checks everything a device must before it runs a request: the key certificates against
/// `root` at `now_ms` (as for a desired state), the signature (context `invoke`), that it is
/// for `device`, not expired, not expiring further ahead than [`MAX_HORIZON_MS`], and that its
/// `reply_to` lies under the device's own [`reply_prefix`]. Replays are the caller's to refuse.
pub fn verify_invoke(
    msg: &InvokeMessage,
    root: &VerifyingKey,
    device: &str,
    now_ms: i64,
) -> Result<InvokeRequest, Refused> {
    let forged = |error| Refused {
        error,
        answerable: None,
    };
    let what = "invoke request";
    let mut signer = None;
    let mut key_error = None;
    for cert in &msg.keys {
        match verify_key_cert(cert, root, now_ms) {
            Ok((id, key)) if id == msg.request.key_id => signer = Some(key),
            Ok(_) => {}
            Err(e) => {
                let names_it = cert
                    .payload_unverified()
                    .is_ok_and(|c| c.key_id == msg.request.key_id);
                if names_it {
                    key_error = Some(e);
                }
            }
        }
    }
    let Some(signer) = signer else {
        return Err(forged(key_error.unwrap_or(VerifyError::UnknownKey {
            what: what.into(),
            key_id: msg.request.key_id.clone(),
        })));
    };
    let req = msg
        .request
        .verify(Context::Invoke, &signer, what)
        .map_err(forged)?;
    if req.device != device {
        return Err(forged(VerifyError::WrongDevice {
            what: format!("{what} {}", req.request_id),
            expected: device.to_owned(),
            got: req.device,
        }));
    }
    let refuse = |error| Refused {
        error,
        answerable: Some(Box::new(req.clone())),
    };
    if !req.reply_to.starts_with(&reply_prefix(device)) || req.reply_to.contains(['+', '#', '\0']) {
        // Not answerable: the reply would go where this device may not (or should not) write.
        return Err(forged(VerifyError::Malformed(format!(
            "{what} {}: reply_to {:?} is not under {}",
            req.request_id,
            req.reply_to,
            reply_prefix(device)
        ))));
    }
    if now_ms > req.expires_ms {
        return Err(refuse(VerifyError::Expired {
            what: format!("{what} {}", req.request_id),
            expires_ms: req.expires_ms,
            now_ms,
        }));
    }
    if req.expires_ms - now_ms > MAX_HORIZON_MS {
        return Err(refuse(VerifyError::Malformed(format!(
            "{what} {} expires at {}, more than {} s ahead of this device's clock ({now_ms}): \
             are the clocks set?",
            req.request_id,
            req.expires_ms,
            MAX_HORIZON_MS / 1000
        ))));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate, issue_signing_key};
    use crate::protocol::keycert::key_id;

    fn line(n: usize, len: usize) -> TailLine {
        TailLine {
            time_ms: n as i64,
            level: "info".into(),
            text: "x".repeat(len),
        }
    }

    #[test]
    fn the_tail_keeps_the_newest_lines_within_4_kib() {
        let (kept, cut) = tail((0..10).map(|n| line(n, 1000)).collect());
        assert!(cut);
        assert_eq!(
            kept.iter().map(|l| l.time_ms).collect::<Vec<_>>(),
            vec![6, 7, 8, 9]
        );
        let (kept, cut) = tail((0..3).map(|n| line(n, 10)).collect());
        assert!(!cut);
        assert_eq!(kept.len(), 3);
        // One line longer than the whole tail is cut, not dropped.
        let (kept, cut) = tail(vec![line(0, 10), line(1, 5000)]);
        assert!(cut);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].text.len(), MAX_TAIL_BYTES);
        assert_eq!(tail(Vec::new()), (Vec::new(), false));
    }

    fn request(device: &str, now: i64) -> InvokeRequest {
        InvokeRequest {
            device: device.into(),
            request_id: "r1".into(),
            function: "f".into(),
            qualifier: "latest".into(),
            payload_base64: String::new(),
            is_async: false,
            log_tail: false,
            timeout_ms: 10_000,
            issued_ms: now,
            expires_ms: now + 15_000,
            reply_to: format!("{}c1/r1", reply_prefix(device)),
            job: None,
        }
    }

    #[test]
    fn requests_are_checked_like_documents() {
        let now = 1_000_000;
        let root = generate();
        let (key, cert) = issue_signing_key(&root, now - 1000, 3_600_000);
        let kid = key_id(&key.verifying_key());
        let msg = |r: &InvokeRequest| InvokeMessage {
            keys: vec![cert.clone()],
            request: Signed::sign(r, Context::Invoke, &kid, &key),
        };
        let rp = root.verifying_key();
        let good = request("d1", now);
        assert_eq!(verify_invoke(&msg(&good), &rp, "d1", now), Ok(good.clone()));

        // For another device: not answered.
        let e = verify_invoke(&msg(&good), &rp, "d2", now).unwrap_err();
        assert!(matches!(e.error, VerifyError::WrongDevice { .. }));
        assert!(e.answerable.is_none());

        // Expired: authentic, answered.
        let e = verify_invoke(&msg(&good), &rp, "d1", now + 16_000).unwrap_err();
        assert!(matches!(e.error, VerifyError::Expired { .. }), "{e:?}");
        assert_eq!(e.answerable, Some(Box::new(good.clone())));

        // Too far ahead.
        let mut far = good.clone();
        far.expires_ms = now + MAX_HORIZON_MS + 1;
        assert!(verify_invoke(&msg(&far), &rp, "d1", now)
            .unwrap_err()
            .answerable
            .is_some());

        // A reply elsewhere.
        let mut elsewhere = good.clone();
        elsewhere.reply_to = "edgefn/devices/d2/invoke/reply/x".into();
        assert!(verify_invoke(&msg(&elsewhere), &rp, "d1", now)
            .unwrap_err()
            .answerable
            .is_none());

        // An unknown key (certified by another root), and a signature made for a document.
        let other_root = generate();
        let (k2, c2) = issue_signing_key(&other_root, now - 1000, 3_600_000);
        let forged = InvokeMessage {
            keys: vec![c2],
            request: Signed::sign(&good, Context::Invoke, &key_id(&k2.verifying_key()), &k2),
        };
        let e = verify_invoke(&forged, &rp, "d1", now).unwrap_err();
        assert!(matches!(e.error, VerifyError::BadSignature { .. }), "{e:?}");
        assert!(e.answerable.is_none());
        let no_cert = InvokeMessage {
            keys: vec![],
            request: msg(&good).request,
        };
        let e = verify_invoke(&no_cert, &rp, "d1", now).unwrap_err();
        assert!(matches!(e.error, VerifyError::UnknownKey { .. }), "{e:?}");
        let wrong_context = InvokeMessage {
            keys: vec![cert.clone()],
            request: Signed::sign(&good, Context::Desired, &kid, &key),
        };
        let e = verify_invoke(&wrong_context, &rp, "d1", now).unwrap_err();
        assert!(matches!(e.error, VerifyError::BadSignature { .. }), "{e:?}");
        // An expired signing key.
        let e = verify_invoke(&msg(&good), &rp, "d1", now + 3_600_000).unwrap_err();
        assert!(matches!(e.error, VerifyError::KeyExpired { .. }), "{e:?}");
        assert!(e.answerable.is_none());
    }
}
