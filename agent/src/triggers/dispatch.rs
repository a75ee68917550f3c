//! Delivery of events to mapped functions: sync (one attempt) or async (retries with backoff,
//! then destinations or a dead letter), with everything an outcome implies committed in the same
//! transaction as the invocation's final record (docs/triggers.md).

use crate::daemon::{Daemon, InvokeError, InvokeRequest, Invoked};
use crate::pool::OwnedEvent;
use crate::runtime::Invocation;
use crate::store::{
    CommitExtra, DeadLetter, Destination, OutboxMessage, Qualifier, QueuedEvent, Reply,
};
use std::time::Duration;

use crate::store::mappings::FLOW_TARGET;

/// Destinations chain at most this deep (`function:` destinations invoking each other).
pub const MAX_DEPTH: u32 = 8;

/// Where an event goes and how.
#[derive(Debug, Clone)]
pub struct Route {
    /// The mapping it came through (`None` for a direct function destination).
    pub mapping_id: Option<String>,
    pub function: String,
    pub qualifier: String,
    /// Retries after the first attempt (async only).
    pub retries: u32,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
}

impl Route {
    /// The route of a mapping.
    pub fn of(m: &crate::store::Mapping) -> Route {
        Route {
            mapping_id: Some(m.id.clone()),
            function: m.function.clone(),
            qualifier: m.qualifier.clone(),
            retries: m.retries,
            on_success: m.on_success.clone(),
            on_failure: m.on_failure.clone(),
        }
    }
}

/// What the caller commits along with the final outcome (the MQTT dedup mark, the queue row
/// being consumed), and how to answer (MQTT 5 response topic).
#[derive(Debug, Clone, Default)]
pub struct Carry {
    pub dedup_mark: Option<(String, u16)>,
    pub dequeue: Option<i64>,
    pub reply: Option<Reply>,
    /// How many destinations led here.
    pub depth: u32,
    /// The event is held durably upstream (an unacknowledged MQTT QoS 1/2 message, a queue
    /// row): a throttled attempt is backpressure, not a failure. It waits and tries again
    /// without using up an attempt, instead of ending as a dead letter under load.
    pub hold_when_throttled: bool,
}

/// How a delivery ended.
#[derive(Debug)]
pub enum Delivered {
    /// The function succeeded (after `attempts` attempts).
    Success { invoked: Invoked, attempts: u32 },
    /// Every attempt failed; the failure went to `on_failure` or a dead letter.
    Failed { attempts: u32, error: String },
}

/// Where [`Dispatcher::deliver_batch`] reports how one delivery ended.
pub type Done = tokio::sync::oneshot::Sender<Delivered>;

#[derive(Clone)]
pub struct Dispatcher {
    daemon: Daemon,
}

/// Longest wait before a held event (see [`Carry::hold_when_throttled`]) tries its throttled
/// attempt again.
const THROTTLED_WAIT_MAX: Duration = Duration::from_secs(1);

/// Delay before retry `n` (1-based): 100 ms doubling, capped at 10 s.
pub fn retry_delay(n: u32) -> Duration {
    Duration::from_millis(
        100u64
            .saturating_mul(1 << (n.saturating_sub(1)).min(7))
            .min(10_000),
    )
}

impl Dispatcher {
    pub fn new(daemon: Daemon) -> Dispatcher {
        Dispatcher { daemon }
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// One attempt, no retries (HTTP); destinations apply as for async deliveries.
    pub async fn sync(
        &self,
        route: &Route,
        event: OwnedEvent,
        carry: Carry,
    ) -> Result<Invoked, InvokeError> {
        if route.function.starts_with(FLOW_TARGET) {
            return match self.deliver_flow(route, event, carry).await {
                Delivered::Success { invoked, .. } => Ok(invoked),
                Delivered::Failed { error, .. } => Err(InvokeError::Invalid(error)),
            };
        }
        let req = self.request(route, event.clone())?;
        let (r, e) = (route.clone(), event);
        self.daemon
            .invoke_then(req, move |inv| final_extra(&r, &e, inv, &carry, 1, true))
            .await
    }

    /// Async delivery: attempts with backoff until success or `retries` are used up.
    pub async fn deliver(&self, route: &Route, event: OwnedEvent, carry: Carry) -> Delivered {
        if route.function.starts_with(FLOW_TARGET) {
            return self.deliver_flow(route, event, carry).await;
        }
        self.deliver_from(route, event, carry, 1, String::new())
            .await
    }

    /// Async deliveries of several events, their first attempts together
    /// ([`Daemon::invoke_batch`]: one hop to the blocking pool, one group commit). Returns once
    /// those are committed; each event's [`Delivered`] goes to its `done`. An event whose first
    /// attempt does not end its delivery (a retriable failure, throttled) goes on like
    /// [`Dispatcher::deliver`] in a task of its own. `ran` is dropped once the guests have run
    /// (see [`Daemon::invoke_batch`]).
    pub async fn deliver_batch<T: Send + 'static>(
        &self,
        items: Vec<(Route, OwnedEvent, Carry, Done)>,
        ran: Option<T>,
    ) {
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for (route, mut event, carry, done) in items {
            if route.function.starts_with(FLOW_TARGET) {
                let _ = done.send(self.deliver_flow(&route, event, carry).await);
                continue;
            }
            event.attempt = 1;
            match self.request(&route, event.clone()) {
                Ok(req) => {
                    let last = route.retries == 0;
                    let (r, e, c) = (route.clone(), event.clone(), carry.clone());
                    let finish: crate::daemon::Finish = Box::new(move |inv| {
                        final_extra(&r, &e, inv, &c, 1, last || !retriable(inv))
                    });
                    batch.push((req, finish));
                    sent.push((route, event, carry, done));
                }
                Err(e) => {
                    let refused = self.refuse(&route, &event, &carry, 1, e.to_string()).await;
                    let _ = done.send(refused);
                }
            }
        }
        let outcomes = self.daemon.invoke_batch(batch, ran).await;
        for ((route, event, carry, done), result) in sent.into_iter().zip(outcomes) {
            let last = route.retries == 0;
            match result {
                Ok(invoked) if invoked.invocation.is_success() => {
                    let _ = done.send(Delivered::Success {
                        invoked,
                        attempts: 1,
                    });
                }
                Ok(invoked) if last || !retriable(&invoked.invocation) => {
                    let _ = done.send(Delivered::Failed {
                        attempts: 1,
                        error: failure_text(invoked),
                    });
                }
                // A retriable failure: the retries go on by themselves.
                Ok(invoked) => {
                    let (d, error) = (self.clone(), failure_text(invoked));
                    tokio::spawn(async move {
                        tokio::time::sleep(retry_delay(1)).await;
                        let _ = done.send(d.deliver_from(&route, event, carry, 2, error).await);
                    });
                }
                // Throttled: start over as `deliver` does, which also waits out the throttle of
                // an event held upstream.
                Err(InvokeError::Throttled { .. }) => {
                    let d = self.clone();
                    tokio::spawn(async move {
                        let _ = done.send(d.deliver(&route, event, carry).await);
                    });
                }
                Err(e) => {
                    let refused = self.refuse(&route, &event, &carry, 1, e.to_string()).await;
                    let _ = done.send(refused);
                }
            }
        }
    }

    /// [`Dispatcher::deliver`] from attempt `first` (`last_error`: how the one before failed).
    async fn deliver_from(
        &self,
        route: &Route,
        mut event: OwnedEvent,
        carry: Carry,
        first: u32,
        mut last_error: String,
    ) -> Delivered {
        let attempts = route.retries + 1;
        let mut attempt = first;
        let mut throttled_in_a_row = 0;
        while attempt <= attempts {
            event.attempt = attempt;
            let last = attempt == attempts;
            let req = match self.request(route, event.clone()) {
                Ok(r) => r,
                Err(e) => {
                    return self
                        .refuse(route, &event, &carry, attempt, e.to_string())
                        .await
                }
            };
            let (r, e, c) = (route.clone(), event.clone(), carry.clone());
            let result = self
                .daemon
                .invoke_then(req, move |inv| {
                    final_extra(&r, &e, inv, &c, attempt, last || !retriable(inv))
                })
                .await;
            match result {
                Ok(invoked) if invoked.invocation.is_success() => {
                    return Delivered::Success {
                        invoked,
                        attempts: attempt,
                    }
                }
                Ok(invoked) if !retriable(&invoked.invocation) => {
                    // Committed as the final outcome (with its dead letter or on_failure).
                    return Delivered::Failed {
                        attempts: attempt,
                        error: failure_text(invoked),
                    };
                }
                Ok(invoked) => last_error = failure_text(invoked),
                // Backpressure: the same attempt again once the function has room.
                Err(InvokeError::Throttled { .. }) if carry.hold_when_throttled => {
                    throttled_in_a_row += 1;
                    tokio::time::sleep(retry_delay(throttled_in_a_row).min(THROTTLED_WAIT_MAX))
                        .await;
                    continue;
                }
                // Throttled: a failed attempt like any other, retried after the backoff.
                Err(InvokeError::Throttled { throttled, .. }) => last_error = throttled.to_string(),
                // Disabled, unknown function/version/alias, unusable module: retrying cannot help.
                Err(e) => {
                    return self
                        .refuse(route, &event, &carry, attempt, e.to_string())
                        .await
                }
            }
            if last {
                if matches!(result_kind(&last_error), Kind::Throttled) {
                    // The throttled last attempt left no record to carry the extras: commit them now.
                    return self
                        .refuse(route, &event, &carry, attempt, last_error)
                        .await;
                }
                return Delivered::Failed {
                    attempts,
                    error: last_error,
                };
            }
            throttled_in_a_row = 0;
            tokio::time::sleep(retry_delay(attempt)).await;
            attempt += 1;
        }
        Delivered::Failed {
            attempts,
            error: last_error,
        }
    }

    /// A `flow:NAME` route: the event starts a run of the flow (docs/flows.md), stored with
    /// the carried marks in one transaction; the run goes on in the flow engine. An unknown or
    /// disabled flow fails the event like a disabled function (on_failure or dead letter).
    async fn deliver_flow(&self, route: &Route, event: OwnedEvent, carry: Carry) -> Delivered {
        let flow = &route.function[FLOW_TARGET.len()..];
        let extra = CommitExtra {
            dedup_mark: carry.dedup_mark.clone(),
            dequeue: carry.dequeue,
            ..CommitExtra::default()
        };
        // A source of the flow's `[trigger]` or of one of its wait steps (flows/sources.rs).
        if let Some(source) = route
            .mapping_id
            .as_deref()
            .and_then(crate::flows::sources::SourceRef::parse)
        {
            return match crate::flows::events::source_event(
                &self.daemon,
                source,
                event.clone(),
                extra,
            )
            .await
            {
                Ok(invoked) => Delivered::Success {
                    invoked,
                    attempts: 1,
                },
                Err(e) => self.refuse(route, &event, &carry, 0, e.to_string()).await,
            };
        }
        let trigger = route
            .mapping_id
            .as_ref()
            .map_or_else(|| "event".to_string(), |m| format!("mapping:{m}"));
        let input = crate::flows::value_from_bytes(&event.data);
        match crate::flows::start(&self.daemon, flow, input, &trigger, extra).await {
            Ok(run) => Delivered::Success {
                invoked: crate::flows::events::started_invocation(&route.function, &run.id),
                attempts: 1,
            },
            Err(e) => self.refuse(route, &event, &carry, 0, e.to_string()).await,
        }
    }

    fn request(&self, route: &Route, event: OwnedEvent) -> Result<InvokeRequest, InvokeError> {
        Ok(InvokeRequest {
            function: route.function.clone(),
            qualifier: Qualifier::parse(&route.qualifier)?,
            invocation_id: ulid::Ulid::new().to_string(),
            event,
        })
    }

    /// An event that cannot run at all: its failure path (on_failure or dead letter) and the
    /// carried marks are committed without an invocation record.
    async fn refuse(
        &self,
        route: &Route,
        event: &OwnedEvent,
        carry: &Carry,
        attempts: u32,
        error: String,
    ) -> Delivered {
        let mut extra = failure_extra(route, event, carry, attempts, "rejected", &error);
        extra.dedup_mark = carry.dedup_mark.clone();
        extra.dequeue = carry.dequeue;
        let store = self.daemon.store().clone();
        match tokio::task::spawn_blocking(move || store.commit_extra(&extra)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("edgefn-agent: cannot record a refused event: {e}"),
            Err(e) => eprintln!("edgefn-agent: cannot record a refused event: {e}"),
        }
        Delivered::Failed { attempts, error }
    }
}

/// How a failed attempt is reported: `outcome: error`.
fn failure_text(invoked: Invoked) -> String {
    format!(
        "{}: {}",
        invoked.invocation.outcome,
        invoked.invocation.error.unwrap_or_default()
    )
}

/// Whether another attempt could end differently: not after a success, and not for an event
/// larger than the function's `max_event_bytes` (the same event is refused again).
fn retriable(inv: &Invocation) -> bool {
    !inv.is_success() && inv.outcome != crate::runtime::Outcome::EventTooLarge
}

enum Kind {
    Throttled,
    Other,
}

fn result_kind(error: &str) -> Kind {
    if error.starts_with("throttled") {
        Kind::Throttled
    } else {
        Kind::Other
    }
}

/// The extras of an attempt: nothing unless it is the final one.
fn final_extra(
    route: &Route,
    event: &OwnedEvent,
    inv: &Invocation,
    carry: &Carry,
    attempt: u32,
    is_final: bool,
) -> CommitExtra {
    if !is_final {
        return CommitExtra::default();
    }
    let mut extra = if inv.is_success() {
        success_extra(route, inv, carry)
    } else {
        let error = inv.error.clone().unwrap_or_default();
        failure_extra(route, event, carry, attempt, inv.outcome.as_str(), &error)
    };
    extra.dedup_mark = carry.dedup_mark.clone();
    extra.dequeue = carry.dequeue;
    extra
}

pub(crate) fn success_extra(route: &Route, inv: &Invocation, carry: &Carry) -> CommitExtra {
    let mut extra = CommitExtra::default();
    if let Some(reply) = &carry.reply {
        extra.outbox.push(OutboxMessage::new(
            &reply.topic,
            inv.response.clone(),
            1,
            reply.correlation.clone(),
        ));
    }
    match &route.on_success {
        Some(Destination::Topic(t)) => {
            extra
                .outbox
                .push(OutboxMessage::new(t, inv.response.clone(), 1, None))
        }
        Some(Destination::Function { .. }) if carry.depth >= MAX_DEPTH => {
            let event = QueuedEvent::new(
                inv.id.clone(),
                edgefn_sdk::abi::source::FUNCTION,
                route.function.clone(),
                inv.response.clone(),
            );
            let error = format!(
                "destination chain deeper than {MAX_DEPTH}: not invoking {}",
                route
                    .on_success
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
            extra.dead_letter = Some(DeadLetter::new(
                route.mapping_id.clone(),
                &route.function,
                &route.qualifier,
                event,
                1,
                "rejected",
                &error,
            ));
        }
        Some(Destination::Function { name, qualifier }) => {
            let next = QueuedEvent {
                id: format!("{}:{}", inv.id, name),
                source: edgefn_sdk::abi::source::FUNCTION.into(),
                subject: route.function.clone(),
                time_ms: crate::runtime::now_ms(),
                content_type: String::new(),
                data: inv.response.clone(),
                attempt: 1,
                depth: carry.depth + 1,
                reply: None,
            };
            extra
                .enqueue
                .push((destination_target(name, qualifier), next));
        }
        None => {}
    }
    extra
}

pub(crate) fn failure_extra(
    route: &Route,
    event: &OwnedEvent,
    carry: &Carry,
    attempts: u32,
    outcome: &str,
    error: &str,
) -> CommitExtra {
    use base64::Engine as _;
    let mut extra = CommitExtra::default();
    let envelope = serde_json::json!({
        "mapping": route.mapping_id,
        "function": route.function,
        "qualifier": route.qualifier,
        "outcome": outcome,
        "error": error,
        "attempts": attempts,
        "event_id": event.id,
        "source": event.source,
        "subject": event.subject,
        "data_base64": base64::engine::general_purpose::STANDARD.encode(&event.data),
    });
    let body = serde_json::to_vec(&envelope).expect("JSON of plain values");
    let queued = QueuedEvent {
        id: event.id.clone(),
        source: event.source.clone(),
        subject: event.subject.clone(),
        time_ms: event.time_ms,
        content_type: event.content_type.clone(),
        data: event.data.clone(),
        attempt: attempts,
        depth: carry.depth,
        reply: carry.reply.clone(),
    };
    match &route.on_failure {
        Some(Destination::Topic(t)) => extra.outbox.push(OutboxMessage::new(t, body, 1, None)),
        Some(Destination::Function { name, qualifier }) if carry.depth < MAX_DEPTH => {
            let next = QueuedEvent {
                id: format!("{}:failed:{}", event.id, name),
                source: edgefn_sdk::abi::source::FUNCTION.into(),
                subject: route.function.clone(),
                time_ms: crate::runtime::now_ms(),
                content_type: "application/json".into(),
                data: body,
                attempt: 1,
                depth: carry.depth + 1,
                reply: None,
            };
            extra
                .enqueue
                .push((destination_target(name, qualifier), next));
        }
        _ => {
            extra.dead_letter = Some(DeadLetter::new(
                route.mapping_id.clone(),
                &route.function,
                &route.qualifier,
                queued,
                attempts,
                outcome,
                error,
            ))
        }
    }
    extra
}

/// The queue target of a `function:` destination.
pub fn destination_target(name: &str, qualifier: &str) -> String {
    format!("function:{name}:{qualifier}")
}
