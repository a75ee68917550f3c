//! Remote invoke (docs/cloud-api.md, "Remote invoke"): requests the cloud relays over the
//! cloud-side broker to `edgefn/devices/{device_id}/invoke`, taken by the same connection as
//! nudges ([`super::nudge`]).
//!
//! A request runs only if [`verify_invoke`] accepts it (signed by a signing key the enrolled
//! root certifies, for this device, not expired, replying under this device's own topic) and
//! its request id was not seen before: ids are kept until their request expires
//! ([`SeenRequests`]), and a request issued before this agent started is refused too (the
//! connection's session is clean, so only a replay can bring one). It then takes the daemon's
//! direct invoke path, as the admin API's invoke does (sync with the log tail, or async), and
//! the reply goes to the request's `reply_to`. Refusals are logged (stderr and a `warn` log
//! record); authentic requests for this device (expired, unknown function, disabled, ...) also
//! get a refused reply, forgeries, others' requests and replays only the log.
//!
//! A request with a job operation (`InvokeRequest::job`, `protocol::jobs`) is verified and
//! replay-checked the same way, then runs the admin API's job operation (`api::jobs`) on the
//! blocking pool; the reply carries the same document the local API answers, or a refusal
//! whose code follows the API's error (`not_found`, `conflict`, `disabled`, `invalid`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use edgefn_cloud::protocol::invoke::{
    refusal, tail, verify_invoke, InvokeMessage, InvokeReply, InvokeRequest as Remote, ReplyStatus,
    TailLine,
};
use edgefn_cloud::protocol::jobs::{JobOp, ResultsPage, MAX_PAGE_BYTES};
use edgefn_cloud::protocol::VerifyError;
use rumqttc::{Client, QoS};

use crate::api::{jobs, ApiError};
use crate::daemon::{Daemon, InvokeError, InvokeRequest};
use crate::pool::OwnedEvent;
use crate::store::{Level, LogLine, Qualifier, StoreError};

/// Most request ids remembered at once: beyond, requests are refused as throttled (only the
/// cloud can sign them, so this bounds memory against a runaway cloud, not an attacker).
const MAX_SEEN: usize = 100_000;

/// Request ids seen, each until its request expires: a replay within the expiry is refused, and
/// after it the request is refused as expired anyway. A plain state machine (no I/O).
#[derive(Debug, Default)]
pub struct SeenRequests {
    expires: HashMap<String, i64>,
}

/// What [`SeenRequests::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    New,
    Replay,
    Full,
}

impl SeenRequests {
    /// Notes `id` (valid until `expires_ms`) unless it was seen; forgets expired ids first.
    pub fn admit(&mut self, id: &str, expires_ms: i64, now_ms: i64) -> Admission {
        if self.expires.contains_key(id) {
            return Admission::Replay;
        }
        self.expires.retain(|_, e| *e >= now_ms);
        if self.expires.len() >= MAX_SEEN {
            return Admission::Full;
        }
        self.expires.insert(id.to_owned(), expires_ms);
        Admission::New
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.expires.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expires.is_empty()
    }
}

/// The refusal code of an invocation that did not run.
fn code_of(e: &InvokeError) -> &'static str {
    match e {
        InvokeError::Store(
            StoreError::UnknownFunction(_)
            | StoreError::UnknownVersion { .. }
            | StoreError::UnknownAlias { .. },
        ) => refusal::NOT_FOUND,
        InvokeError::Disabled(_) => refusal::DISABLED,
        InvokeError::Throttled { .. } => refusal::THROTTLED,
        _ => refusal::INVALID,
    }
}

/// Takes requests for one device (see the module docs).
pub struct RemoteInvoker {
    daemon: Daemon,
    device_id: String,
    /// The enrolled root public key (base64), the only trust anchor.
    root: String,
    /// The daemon's runtime: invocations run there, never on the MQTT thread.
    runtime: tokio::runtime::Handle,
    seen: Mutex<SeenRequests>,
    /// When this agent started (Unix ms): older requests can only be replays.
    started_ms: i64,
}

impl RemoteInvoker {
    /// Call on the daemon's runtime (it keeps a handle to it).
    /// `root` is the enrollment's root public key (base64); checked here.
    pub fn new(daemon: Daemon, device_id: &str, root: &str) -> Result<RemoteInvoker, String> {
        edgefn_cloud::protocol::keycert::decode_public(root)
            .map_err(|e| format!("enrollment: root public key: {e}"))?;
        Ok(RemoteInvoker {
            daemon,
            device_id: device_id.to_owned(),
            root: root.to_owned(),
            runtime: tokio::runtime::Handle::current(),
            seen: Mutex::default(),
            started_ms: edgefn_cloud::now_ms(),
        })
    }

    /// Logs a refusal on stderr and as a `warn` record of the agent's log.
    fn log_refusal(&self, function: Option<&str>, text: String) {
        eprintln!("edgefn-agent: sync: {text}");
        let line = LogLine {
            time_ms: edgefn_cloud::now_ms(),
            level: Level::Warn,
            function: function.map(str::to_owned),
            version: None,
            invocation_id: None,
            text,
        };
        if let Err(e) = self.daemon.store().append_logs(&[line]) {
            eprintln!("edgefn-agent: cannot write a log line: {e}");
        }
    }

    /// Handles one message of the request topic. Runs on the MQTT thread: verification and
    /// refusals here (blocking store writes are fine), the invocation on the runtime. `client`
    /// publishes the reply.
    pub fn on_message(&self, payload: &[u8], client: &Client) {
        let now = edgefn_cloud::now_ms();
        let msg: InvokeMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                self.log_refusal(
                    None,
                    format!("remote invoke refused: malformed request: {e}"),
                );
                return;
            }
        };
        let root = edgefn_cloud::protocol::keycert::decode_public(&self.root)
            .expect("checked in RemoteInvoker::new");
        let req = match verify_invoke(&msg, &root, &self.device_id, now) {
            Ok(r) => r,
            Err(refused) => {
                let function = refused.answerable.as_ref().map(|r| r.function.as_str());
                let id = refused
                    .answerable
                    .as_ref()
                    .map_or(String::new(), |r| format!(" {}", r.request_id));
                self.log_refusal(
                    function,
                    format!("remote invoke{id} refused: {}", refused.error),
                );
                if let Some(r) = refused.answerable {
                    let code = match refused.error {
                        VerifyError::Expired { .. } => refusal::EXPIRED,
                        _ => refusal::INVALID,
                    };
                    self.reply_now(client, &r, code, refused.error.to_string());
                }
                return;
            }
        };
        let admission = self.seen.lock().unwrap_or_else(|e| e.into_inner()).admit(
            &req.request_id,
            req.expires_ms,
            now,
        );
        match admission {
            Admission::New => {}
            Admission::Replay => {
                // No reply: the first delivery answers (a QoS 1 duplicate must not overtake it).
                self.log_refusal(
                    Some(&req.function),
                    format!(
                        "remote invoke {} refused: request already received (replay)",
                        req.request_id
                    ),
                );
                return;
            }
            Admission::Full => {
                let why = "too many remote invoke requests in flight".to_string();
                self.log_refusal(
                    Some(&req.function),
                    format!("remote invoke {} refused: {why}", req.request_id),
                );
                self.reply_now(client, &req, refusal::THROTTLED, why);
                return;
            }
        }
        if req.issued_ms < self.started_ms {
            let why = format!(
                "request issued at {} before this agent started at {} (a replay?)",
                req.issued_ms, self.started_ms
            );
            self.log_refusal(
                Some(&req.function),
                format!("remote invoke {} refused: {why}", req.request_id),
            );
            self.reply_now(client, &req, refusal::EXPIRED, why);
            return;
        }
        if let Some(op) = req.job.clone() {
            let (daemon, client) = (self.daemon.clone(), client.clone());
            let device = self.device_id.clone();
            self.runtime.spawn(async move {
                let (d, dev, r) = (daemon.clone(), device.clone(), req.clone());
                let reply = tokio::task::spawn_blocking(move || run_job(&d, &dev, &r, op))
                    .await
                    .unwrap_or_else(|e| {
                        InvokeReply::refused(
                            &req.request_id,
                            &device,
                            refusal::INVALID,
                            format!("job operation failed: {e}"),
                        )
                    });
                send(&daemon, &client, &req, reply).await;
            });
            return;
        }
        let prepared = B64
            .decode(&req.payload_base64)
            .map_err(|e| format!("payload_base64 is not base64: {e}"))
            .and_then(|data| {
                Qualifier::parse(&req.qualifier)
                    .map(|q| (data, q))
                    .map_err(|e| e.to_string())
            });
        let (data, qualifier) = match prepared {
            Ok(p) => p,
            Err(why) => {
                self.log_refusal(
                    Some(&req.function),
                    format!("remote invoke {} refused: {why}", req.request_id),
                );
                self.reply_now(client, &req, refusal::INVALID, why);
                return;
            }
        };
        let invocation_id = ulid::Ulid::new().to_string();
        let invoke = InvokeRequest {
            function: req.function.clone(),
            qualifier,
            event: OwnedEvent {
                id: invocation_id.clone(),
                source: edgefn_sdk::abi::source::INVOKE.to_string(),
                subject: String::new(),
                time_ms: crate::runtime::now_ms(),
                content_type: String::new(),
                data,
                attempt: 1,
            },
            invocation_id,
        };
        let (daemon, client) = (self.daemon.clone(), client.clone());
        let device = self.device_id.clone();
        self.runtime.spawn(async move {
            let reply = run(&daemon, &device, &req, invoke).await;
            send(&daemon, &client, &req, reply).await;
        });
    }

    /// Publishes a refusal from the MQTT thread (never blocking it: dropped if the queue is full).
    fn reply_now(&self, client: &Client, req: &Remote, code: &str, why: String) {
        let reply = InvokeReply::refused(&req.request_id, &self.device_id, code, why);
        let bytes = serde_json::to_vec(&reply).expect("replies serialise");
        if let Err(e) = client.try_publish(req.reply_to.clone(), QoS::AtLeastOnce, false, bytes) {
            eprintln!(
                "edgefn-agent: sync: cannot publish the refusal of remote invoke {}: {e}",
                req.request_id
            );
        }
    }
}

/// Logs a refused reply and publishes the reply to the request's `reply_to`.
async fn send(daemon: &Daemon, client: &Client, req: &Remote, reply: InvokeReply) {
    if reply.status == ReplyStatus::Refused {
        let what = match &req.job {
            Some(op) => format!("remote job {}", op.name()),
            None => "remote invoke".into(),
        };
        let text = format!(
            "{what} {} refused: {}",
            req.request_id,
            reply.error.as_deref().unwrap_or("")
        );
        eprintln!("edgefn-agent: sync: {text}");
        let line = LogLine {
            time_ms: edgefn_cloud::now_ms(),
            level: Level::Warn,
            function: Some(req.function.clone()).filter(|f| !f.is_empty()),
            version: None,
            invocation_id: None,
            text,
        };
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || d.store().append_logs(&[line])).await;
    }
    let bytes = serde_json::to_vec(&reply).expect("replies serialise");
    let topic = req.reply_to.clone();
    let c = client.clone();
    // Blocking: waits for room in the client's queue (the MQTT thread drains it).
    let sent =
        tokio::task::spawn_blocking(move || c.publish(topic, QoS::AtLeastOnce, false, bytes)).await;
    if !matches!(sent, Ok(Ok(()))) {
        eprintln!(
            "edgefn-agent: sync: cannot publish the reply to remote request {}",
            req.request_id
        );
    }
}

/// The refusal code of an admin API error (relayed job operations).
fn code_of_api(e: &ApiError) -> &'static str {
    match (e.status(), e.code()) {
        (404, _) => refusal::NOT_FOUND,
        (_, "disabled") => refusal::DISABLED,
        (409, _) => refusal::CONFLICT,
        (429, _) => refusal::THROTTLED,
        _ => refusal::INVALID,
    }
}

/// Runs one verified job operation (blocking: the store); the reply to send.
fn run_job(daemon: &Daemon, device: &str, req: &Remote, op: JobOp) -> InvokeReply {
    let answer: Result<serde_json::Value, ApiError> = match op {
        JobOp::Submit {
            function,
            qualifier,
            format,
            input,
            parallelism,
            retries,
        } => jobs::submit_job(
            daemon,
            jobs::Submit {
                function,
                qualifier: Some(qualifier),
                format: Some(format),
                input: Some(input),
                items: None,
                parallelism: Some(parallelism),
                retries: Some(retries),
            },
        )
        .map(|d| serde_json::to_value(d).expect("job documents serialise")),
        JobOp::Status { id } => jobs::job_doc(daemon, &id).map(|d| json_of(&d)),
        JobOp::List { state, limit } => {
            jobs::list_jobs(daemon, state.as_deref(), limit).map(|l| json_of(&l))
        }
        JobOp::Cancel { id } => daemon
            .store()
            .cancel_job(&id)
            .map(|j| json_of(&j))
            .map_err(ApiError::from),
        JobOp::Results { id, from, limit } => {
            jobs::results_page(daemon, &id, from, limit, Some(MAX_PAGE_BYTES))
                .map(|(lines, next_index)| json_of(&ResultsPage { lines, next_index }))
        }
    };
    match answer {
        Ok(job) => InvokeReply {
            status: ReplyStatus::Done,
            code: None,
            function: req.function.clone(),
            error: None,
            job: Some(job),
            ..InvokeReply::refused(&req.request_id, device, "", String::new())
        },
        Err(e) => InvokeReply::refused(
            &req.request_id,
            device,
            code_of_api(&e),
            e.message().to_owned(),
        ),
    }
}

fn json_of(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).expect("API documents serialise")
}

/// Runs one verified request through the daemon's direct invoke path; the reply to send.
async fn run(daemon: &Daemon, device: &str, req: &Remote, invoke: InvokeRequest) -> InvokeReply {
    let refused =
        |e: &InvokeError| InvokeReply::refused(&req.request_id, device, code_of(e), e.to_string());
    let invocation_id = invoke.invocation_id.clone();
    if req.is_async {
        return match daemon.invoke_async(invoke).await {
            Ok(()) => InvokeReply {
                status: ReplyStatus::Accepted,
                code: None,
                invocation_id: Some(invocation_id),
                function: req.function.clone(),
                error: None,
                ..InvokeReply::refused(&req.request_id, device, "", String::new())
            },
            Err(e) => refused(&e),
        };
    }
    // Every line of the invocation (at most `max_log_lines`, 1000, plus host lines), cut to
    // the newest 4 KiB below.
    match daemon
        .invoke_direct(invoke, req.log_tail.then_some(2_000))
        .await
    {
        Ok((done, logs)) => {
            let lines = logs
                .into_iter()
                .map(|l| TailLine {
                    time_ms: l.time_ms,
                    level: l.level.as_str().to_owned(),
                    text: l.text,
                })
                .collect();
            let (logs, logs_truncated) = tail(lines);
            let inv = done.invocation;
            InvokeReply {
                request_id: req.request_id.clone(),
                device: device.to_owned(),
                status: ReplyStatus::Done,
                code: None,
                invocation_id: Some(inv.id),
                function: done.function,
                version: done.version,
                outcome: Some(inv.outcome.as_str().to_owned()),
                error: inv.error,
                response_base64: B64.encode(&inv.response),
                duration_us: inv.duration.as_micros() as u64,
                fuel_used: inv.fuel_used,
                logs,
                logs_truncated,
                job: None,
            }
        }
        Err(e) => refused(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_until_they_expire() {
        let mut s = SeenRequests::default();
        assert_eq!(s.admit("a", 1_000, 0), Admission::New);
        assert_eq!(s.admit("a", 1_000, 500), Admission::Replay);
        assert_eq!(s.admit("b", 2_000, 500), Admission::New);
        assert_eq!(s.len(), 2);
        // `a` expired: forgotten on the next admission (a replay of it is refused as expired
        // by verify_invoke before it gets here).
        assert_eq!(s.admit("c", 3_000, 1_500), Admission::New);
        assert_eq!(s.len(), 2);
        assert_eq!(s.admit("b", 2_000, 1_600), Admission::Replay);
    }
}
