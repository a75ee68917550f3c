//! The MQTT link actor: owns the connection (`run(self)`), follows the mapping set, hands
//! messages to the dispatcher, sends acks in arrival order once committed, and drains the outbox.

use super::acks::{AckQueue, Ticket};
use super::wire::{self, AckToken, Client, Message, Notice};
use super::MqttConfig;
use crate::pool::OwnedEvent;
use crate::runtime::topic;
use crate::store::{Mapping, OutboxRow, QueuedEvent, Reply, Source, Store};
use crate::triggers::dispatch::{Carry, Delivered, Dispatcher, Done, Route};
use crate::triggers::Mappings;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Outbox rows in flight at once.
const OUTBOX_WINDOW: usize = wire::OUTGOING_INFLIGHT as usize;

/// Rows kept in memory for sending at most; beyond (while disconnected, say) they are sent
/// from the store.
const READY_MAX: usize = 4096;

pub struct Link {
    cfg: MqttConfig,
    dispatcher: Dispatcher,
    mappings: Mappings,
    /// Dedup session key: broker + client id (packet ids are per session).
    session: String,
    in_progress: InProgress,
    /// Mappings whose durable queue is known to be empty (checked on their first message, then
    /// kept up to date here): their messages go straight to the dispatcher. A paused mapping's
    /// messages, and those of a mapping with events still queued, go to its queue.
    known_empty: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Appends the messages of stream mappings to their log (acked once committed).
    streams: Option<crate::triggers::stream::Appender>,
}

/// The QoS 1/2 packet ids being processed. After a reconnect the broker redelivers (`dup`) a
/// message whose first delivery may still be running here (a slow function, a long retry
/// backoff); its dedup mark is not written yet, so the redelivery ran the function a second
/// time. Now a redelivery first waits for the delivery in progress of its packet id to finish.
#[derive(Clone, Default)]
struct InProgress(Arc<std::sync::Mutex<HashMap<u16, Arc<tokio::sync::Mutex<()>>>>>);

/// A packet id claimed in arrival order: held at once, or to wait for.
enum Claim {
    Held(Claimed),
    Wait(InProgress, u16, Arc<tokio::sync::Mutex<()>>),
}

/// A held packet id; released on drop.
struct Claimed {
    map: InProgress,
    pkid: u16,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl InProgress {
    /// Claims `pkid` for the message that just arrived (synchronously, so claims follow the
    /// arrival order).
    fn claim(&self, pkid: u16) -> Claim {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(pkid).or_default().clone()
        };
        match lock.clone().try_lock_owned() {
            Ok(guard) => Claim::Held(Claimed {
                map: self.clone(),
                pkid,
                guard: Some(guard),
            }),
            Err(_) => Claim::Wait(self.clone(), pkid, lock),
        }
    }
}

impl Claim {
    /// Waits until the earlier delivery of the same packet id, if any, has finished.
    async fn acquire(self) -> Claimed {
        match self {
            Claim::Held(c) => c,
            Claim::Wait(map, pkid, lock) => Claimed {
                map,
                pkid,
                guard: Some(lock.lock_owned().await),
            },
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.pkid)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.pkid);
        }
    }
}

/// Gathers the live deliveries of the messages in progress into batches for
/// [`Dispatcher::deliver_batch`]: while one batch runs its guests, the next fills up; it runs
/// its guests while the previous one commits. Under load this is one hop to
/// the blocking pool and one group commit per batch instead of per message; a lone message
/// goes through at once.
#[derive(Clone)]
struct Batcher(mpsc::UnboundedSender<(Route, OwnedEvent, Carry, Done)>);

/// Messages (deliveries) per batch at most.
const BATCH_MAX: usize = 64;

impl Batcher {
    /// One batch runs its guests at a time (two at once contended for the same instances and
    /// fell back to queueing one by one); the next starts as soon as the current one's guests
    /// are done, while it commits ([`Daemon::invoke_batch`](crate::daemon::Daemon::invoke_batch)).
    fn start(dispatcher: Dispatcher) -> (Batcher, AbortOnDrop) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let running = Arc::new(Semaphore::new(1));
        let task = tokio::spawn(async move {
            let mut items = Vec::with_capacity(BATCH_MAX);
            loop {
                let Ok(turn) = running.clone().acquire_owned().await else {
                    return;
                };
                if rx.recv_many(&mut items, BATCH_MAX).await == 0 {
                    return;
                }
                let (d, batch) = (dispatcher.clone(), std::mem::take(&mut items));
                tokio::spawn(async move { d.deliver_batch(batch, Some(turn)).await });
            }
        });
        (Batcher(tx), AbortOnDrop(task))
    }

    /// Delivers `event` with the next batch; the receiver resolves when its delivery ended.
    fn submit(
        &self,
        route: Route,
        event: OwnedEvent,
        carry: Carry,
    ) -> Option<oneshot::Receiver<Delivered>> {
        let (done, ended) = oneshot::channel();
        self.0.send((route, event, carry, done)).ok()?;
        Some(ended)
    }
}

/// Sends the acks that are due (in arrival order).
async fn send_acks(client: &Client, due: Vec<AckToken>) {
    for token in due {
        if let Err(e) = client.ack(&token).await {
            eprintln!("edgefn-agent: MQTT ack failed: {e}");
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls rumqttc's event loop on a task of its own and forwards what it reports; after a
/// connection error it waits the reconnect backoff before polling again (which reconnects).
///
/// `EventLoop::poll` is not cancel-safe: as a `select!` branch it was dropped whenever another
/// branch won (an ack to send, the outbox tick), and dropped mid-connect it closes the connection
/// it just opened, so the link connected twice (or more) on every (re)connect.
fn poll_in_background(
    mut events: wire::EventLoop,
) -> (mpsc::UnboundedReceiver<Result<Notice, String>>, AbortOnDrop) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let ev = events.poll().await;
            match &ev {
                Ok(Notice::Connected { .. }) => failures = 0,
                Err(_) => failures += 1,
                Ok(_) => {}
            }
            let failed = ev.is_err();
            if tx.send(ev).is_err() {
                return;
            }
            if failed {
                tokio::time::sleep(wire::backoff(failures)).await;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// Publishes from the outbox in flight: rows sent in order wait for their packet id
/// (`Notice::Sent`), then for the broker's ack.
#[derive(Default)]
struct Outbox {
    /// Highest outbox seq handed to the client.
    sent_upto: i64,
    /// Rows the group commit just wrote, handed over in memory (seq order): sent from here
    /// while they follow `sent_upto` without a gap, which saves reading them back. A gap (rows
    /// written outside the group commit, dropped by the bound, or before a restart) sends from
    /// the store until the link has caught up.
    ready: VecDeque<OutboxRow>,
    /// Sent rows waiting for rumqttc to report their packet id, in send order: (seq, qos).
    awaiting_pkid: VecDeque<(i64, u8)>,
    /// Packet id → outbox seq, waiting for PUBACK/PUBCOMP.
    awaiting_ack: HashMap<u16, i64>,
}

impl Link {
    pub fn new(cfg: MqttConfig, dispatcher: Dispatcher, mappings: Mappings) -> Link {
        let session = format!("{}:{}/{}", cfg.host, cfg.port, cfg.client_id);
        Link {
            cfg,
            dispatcher,
            mappings,
            session,
            in_progress: InProgress::default(),
            known_empty: Default::default(),
            streams: None,
        }
    }

    /// Feeds the stream mappings' messages to `appender`.
    pub fn with_streams(mut self, appender: crate::triggers::stream::Appender) -> Link {
        self.streams = Some(appender);
        self
    }

    fn store(&self) -> &Store {
        self.dispatcher.daemon().store()
    }

    /// Runs until the task is aborted; reconnects with capped exponential backoff.
    pub async fn run(self) {
        let (client, events) = match wire::connect(&self.cfg) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("edgefn-agent: MQTT disabled: {e}");
                return;
            }
        };
        let (mut notices, _poller) = poll_in_background(events);
        let (batcher, _batcher_task) = Batcher::start(self.dispatcher.clone());
        // Messages being processed at once. Mosquitto 2.0.11 does not hold to our MQTT 5
        // receive maximum once acks flow (measured: ~300 unacknowledged of a 1,000 burst), and
        // QoS 0 has no flow control at all: unbounded, a burst became one task per message, far
        // more than a function's queue takes, throttled into dead letters.
        let in_progress = Arc::new(Semaphore::new(wire::RECEIVE_MAXIMUM as usize));
        let mut queue_turn: Option<oneshot::Receiver<()>> = None;
        let mut acks: AckQueue<AckToken> = AckQueue::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Ticket, AckToken)>();
        let mut subscribed: BTreeMap<String, u8> = BTreeMap::new();
        let mut outbox = Outbox::default();
        let mut connected = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut mappings = self.mappings.clone();
        // Outbox rows are published as soon as a group commit wrote them, from memory (the
        // tick is the fallback, for rows written outside the group commit), and acknowledged
        // rows are deleted by the group commit too.
        let committer = self.dispatcher.daemon().committer().clone();
        let mut committed_rows = committer.outbox_rows();
        loop {
            tokio::select! {
                Some(ev) = notices.recv() => match ev {
                    Ok(Notice::Connected { session_present }) => {
                        connected = true;
                        eprintln!("edgefn-agent: MQTT connected to {}:{} (session present: {session_present})", self.cfg.host, self.cfg.port);
                        // Resubscribe everything: a lost session lost its subscriptions.
                        subscribed.clear();
                        self.sync_subscriptions(&client, &mut subscribed).await;
                        if !session_present {
                            // rumqttc dropped its in-flight publishes: send the outbox again.
                            outbox = Outbox::default();
                            // Nothing of the lost session will be redelivered: its dedup marks
                            // could only match new messages that reuse their packet ids.
                            let (store, session) = (self.store().clone(), self.session.clone());
                            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.dedup_clear_session(&session)).await {
                                eprintln!("edgefn-agent: cannot clear the dedup marks of the lost MQTT session: {e}");
                            }
                        }
                        self.pump_outbox(&client, &mut outbox).await;
                    }
                    Ok(Notice::Message(m)) => {
                        // Waits (holding back this loop, not the messages in progress, which
                        // release their permits as they finish) while the window is full, and
                        // meanwhile acknowledges the messages that finish. (Waiting without
                        // acking let acks fall hundreds of messages behind the commits: the
                        // broker counts unacknowledged messages against its queue limit, and
                        // Mosquitto 2.0.11, which sends past our receive maximum, then dropped
                        // newer messages for this session.)
                        let permit = loop {
                            tokio::select! {
                                biased;
                                Some((ticket, token)) = done_rx.recv() => {
                                    send_acks(&client, acks.finish(ticket, token)).await;
                                }
                                permit = in_progress.clone().acquire_owned() => {
                                    break permit.expect("the semaphore is never closed");
                                }
                            }
                        };
                        self.on_message(m, &mut acks, &done_tx, permit, &mut queue_turn, &batcher)
                    }
                    // rumqttc resending an unacknowledged publish of the resumed session: a
                    // row already waiting for its ack, not the next one sent. (Taking it for
                    // the next row mismatched rows and packet ids after a broker restart: rows
                    // deleted on another row's ack, others never deleted.)
                    Ok(Notice::Sent(pkid)) if pkid != 0 && outbox.awaiting_ack.contains_key(&pkid) => {}
                    Ok(Notice::Sent(pkid)) => {
                        if let Some((seq, qos)) = outbox.awaiting_pkid.pop_front() {
                            if qos == 0 {
                                committer.published(vec![seq]);
                            } else {
                                outbox.awaiting_ack.insert(pkid, seq);
                            }
                        }
                    }
                    Ok(Notice::Acked(pkid)) => {
                        if let Some(seq) = outbox.awaiting_ack.remove(&pkid) {
                            committer.published(vec![seq]);
                        }
                    }
                    Ok(Notice::Other) => {}
                    Err(e) => {
                        if connected {
                            eprintln!("edgefn-agent: MQTT connection lost: {e}");
                        }
                        connected = false;
                        // Unacked messages will be redelivered by the broker; forget their acks.
                        acks.reset();
                    }
                },
                Some((ticket, token)) = done_rx.recv() => {
                    send_acks(&client, acks.finish(ticket, token)).await;
                }
                changed = mappings.changed() => {
                    if changed.is_err() { return; }
                    if connected {
                        self.sync_subscriptions(&client, &mut subscribed).await;
                    }
                }
                Some(rows) = committed_rows.recv() => {
                    outbox.ready.extend(rows);
                    if outbox.ready.len() > READY_MAX {
                        outbox.ready.clear();
                    }
                    if connected {
                        self.pump_outbox(&client, &mut outbox).await;
                    }
                }
                _ = tick.tick() => {
                    if connected {
                        self.pump_outbox(&client, &mut outbox).await;
                    }
                }
            }
        }
    }

    /// Subscribes to the filters of the MQTT mappings (highest QoS per filter), unsubscribes
    /// from filters no mapping uses any more.
    async fn sync_subscriptions(&self, client: &Client, subscribed: &mut BTreeMap<String, u8>) {
        let mut want: BTreeMap<String, u8> = BTreeMap::new();
        for m in self.mappings.borrow().iter() {
            if let (Source::StreamMqtt { filter, .. }, Some(_)) = (&m.source, &self.streams) {
                let q = want.entry(filter.clone()).or_insert(0);
                *q = (*q).max(1);
            }
            if let Source::Mqtt {
                filter,
                qos,
                shared_group,
            } = &m.source
            {
                let f = match shared_group {
                    Some(g) => format!("$share/{g}/{filter}"),
                    None => filter.clone(),
                };
                let q = want.entry(f).or_insert(0);
                *q = (*q).max(*qos);
            }
        }
        for (f, _) in subscribed
            .clone()
            .iter()
            .filter(|(f, _)| !want.contains_key(*f))
        {
            let _ = client.unsubscribe(f).await;
            subscribed.remove(f);
        }
        for (f, q) in &want {
            if subscribed.get(f) != Some(q) {
                match client.subscribe(f, *q).await {
                    Ok(()) => {
                        subscribed.insert(f.clone(), *q);
                    }
                    Err(e) => eprintln!("edgefn-agent: MQTT subscribe {f} failed: {e}"),
                }
            }
        }
    }

    /// Hands a message to every mapping whose filter matches; its ack (QoS ≥ 1) is released
    /// once all of them committed.
    fn on_message(
        &self,
        m: Message,
        acks: &mut AckQueue<AckToken>,
        done: &mpsc::UnboundedSender<(Ticket, AckToken)>,
        permit: OwnedSemaphorePermit,
        queue_turn: &mut Option<oneshot::Receiver<()>>,
        batcher: &Batcher,
    ) {
        let targets: Vec<Mapping> = self
            .mappings
            .borrow()
            .iter()
            .filter(|mp| matches!(&mp.source, Source::Mqtt { filter, .. } if topic::matches(filter, &m.topic)))
            .cloned()
            .collect();
        let ticket = (m.qos > 0).then(|| acks.arrive());
        // Stream mappings: appended to their log in arrival order (handed over now, before
        // any later message), the ack waiting for the commit.
        let mut appended = Vec::new();
        if let Some(appender) = &self.streams {
            for mp in self.mappings.borrow().iter() {
                if let Source::StreamMqtt {
                    filter,
                    partition_key,
                    ..
                } = &mp.source
                {
                    if !topic::matches(filter, &m.topic) {
                        continue;
                    }
                    let record = crate::store::stream::NewRecord {
                        partition: partition_key.extract(&m.topic, &m.payload),
                        subject: m.topic.clone(),
                        time_ms: crate::runtime::now_ms() as i64,
                        payload: m.payload.to_vec(),
                    };
                    appended.push(
                        appender.submit(crate::store::stream::Append {
                            mapping: mp.id.clone(),
                            records: vec![record],
                            mark: (m.qos > 0)
                                .then(|| (format!("{}|{}", self.session, mp.id), m.pkid, m.dup)),
                        }),
                    );
                }
            }
        }
        let claim = (m.qos > 0).then(|| self.in_progress.claim(m.pkid));
        // Messages that may go to a mapping's queue take turns in arrival order (each message's
        // task runs on its own, so their queue commits raced and a paused mapping's queue came
        // out of order).
        let via_queue = {
            let mut empty = self.known_empty.lock().unwrap_or_else(|p| p.into_inner());
            for mp in targets.iter().filter(|mp| !mp.enabled) {
                // Its queue is about to have this message: later ones follow it there.
                empty.remove(&mp.id);
            }
            targets.iter().any(|mp| !empty.contains(&mp.id))
        };
        let turn = via_queue.then(|| {
            let (tx, rx) = oneshot::channel::<()>();
            (queue_turn.replace(rx), tx)
        });
        let known_empty = self.known_empty.clone();
        let batcher = batcher.clone();
        let dispatcher = self.dispatcher.clone();
        let session = self.session.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _claimed = match claim {
                Some(c) => Some(c.acquire().await),
                None => None,
            };
            let turn = match turn {
                Some((previous, mine)) => {
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    Some(mine)
                }
                None => None,
            };
            let store = dispatcher.daemon().store().clone();
            let reply = m.response_topic.clone().map(|topic| Reply {
                topic,
                correlation: m.correlation.as_ref().map(|c| c.to_vec()),
            });
            // Phase 1, in turn: the dedup check, and the queue for mappings that are paused or
            // still have queued events (after a resume, or from before a restart), so that
            // resume delivers the queue in arrival order, then live messages.
            let mut live = Vec::new();
            for mapping in targets {
                let mark = (m.qos > 0).then(|| (format!("{session}|{}", mapping.id), m.pkid));
                if let (true, Some((s, pkid))) = (m.dup, &mark) {
                    // A redelivery of a message this mapping already committed: ack only.
                    let (st, s2, p) = (store.clone(), s.clone(), *pkid);
                    if let Ok(Ok(true)) =
                        tokio::task::spawn_blocking(move || st.dedup_is_marked(&s2, p)).await
                    {
                        continue;
                    }
                }
                let event = OwnedEvent {
                    id: format!("mqtt-{}", ulid::Ulid::new()),
                    source: edgefn_sdk::abi::source::MQTT.into(),
                    subject: m.topic.clone(),
                    time_ms: crate::runtime::now_ms(),
                    content_type: m.content_type.clone().unwrap_or_default(),
                    data: m.payload.to_vec(),
                    attempt: 1,
                };
                let target = format!("mapping:{}", mapping.id);
                let queue_it = if !mapping.enabled {
                    true
                } else if known_empty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&mapping.id)
                {
                    false
                } else {
                    let (st, t) = (store.clone(), target.clone());
                    match tokio::task::spawn_blocking(move || st.queue_count_target(&t)).await {
                        Ok(Ok(0)) => {
                            known_empty
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(mapping.id.clone());
                            false
                        }
                        Ok(Ok(_)) => true,
                        // Cannot tell: deliver; the queue worker still drains the queue.
                        _ => false,
                    }
                };
                if !queue_it {
                    live.push((mapping, event, mark));
                    continue;
                }
                // Queued durably with its dedup mark; the queue worker delivers it once the
                // mapping is enabled.
                let queued = QueuedEvent::from_event(&event, 0, reply.clone());
                let extra = crate::store::CommitExtra {
                    enqueue: vec![(target, queued)],
                    dedup_mark: mark,
                    ..Default::default()
                };
                // Until it is committed: giving up would leave the message unacknowledged, and
                // acks go out in arrival order, so every later ack would wait for a reconnect.
                let mut delay = Duration::from_millis(100);
                loop {
                    let (st, ex) = (store.clone(), extra.clone());
                    match tokio::task::spawn_blocking(move || st.commit_extra(&ex)).await {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => eprintln!("edgefn-agent: cannot queue an MQTT message for a paused mapping: {e}; retrying in {delay:?}"),
                        // The runtime is shutting down: the broker redelivers after a restart.
                        Err(_) => return,
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
            drop(turn);
            // Phase 2: live deliveries, batched with other messages' (all of this message's
            // at once: they are independent).
            let mut deliveries = Vec::new();
            for (mapping, event, mark) in live {
                let carry = Carry {
                    dedup_mark: mark,
                    dequeue: None,
                    reply: reply.clone(),
                    depth: 0,
                    // Unacknowledged, so the broker holds it: wait out a throttle.
                    hold_when_throttled: m.qos > 0,
                };
                deliveries.push(batcher.submit(Route::of(&mapping), event, carry));
            }
            for delivery in deliveries {
                let ended = match delivery {
                    Some(ended) => ended.await.is_ok(),
                    None => false,
                };
                if !ended {
                    // The link is shutting down: leave the message unacknowledged.
                    return;
                }
            }
            for committed in appended {
                if committed.await.is_err() {
                    return; // shutting down: unacknowledged, redelivered
                }
            }
            if let Some(t) = ticket {
                let _ = done.send((t, m.token));
            }
        });
    }

    /// Sends outbox rows not yet sent, up to the window: the ones handed over in memory while
    /// they follow on from what was sent, otherwise the next ones from the store.
    async fn pump_outbox(&self, client: &Client, outbox: &mut Outbox) {
        loop {
            let in_flight = outbox.awaiting_pkid.len() + outbox.awaiting_ack.len();
            if in_flight >= OUTBOX_WINDOW {
                return;
            }
            while outbox
                .ready
                .front()
                .is_some_and(|r| r.seq <= outbox.sent_upto)
            {
                outbox.ready.pop_front();
            }
            let room = OUTBOX_WINDOW - in_flight;
            // After this batch: whether there may be more to send now.
            let more;
            let rows: Vec<OutboxRow> = match outbox.ready.front() {
                Some(r) if r.seq == outbox.sent_upto + 1 => {
                    let n = outbox.ready.len().min(room);
                    // Emptied: the store holds nothing newer that was committed before these.
                    more = outbox.ready.len() > n;
                    outbox.ready.drain(..n).collect()
                }
                _ => {
                    let (store, after, limit) = (
                        self.store().clone(),
                        outbox.sent_upto,
                        OUTBOX_WINDOW - in_flight,
                    );
                    let rows = match tokio::task::spawn_blocking(move || {
                        store.outbox_pending(limit as u32, after)
                    })
                    .await
                    {
                        Ok(Ok(rows)) => rows,
                        _ => return,
                    };
                    more = rows.len() == room;
                    if !more {
                        // Caught up with the store: rows still waiting in memory past the
                        // newest stored one were dropped by the outbox bound.
                        let newest = rows.last().map_or(outbox.sent_upto, |r| r.seq);
                        outbox.ready.retain(|r| r.seq <= newest);
                    }
                    rows
                }
            };
            for row in rows {
                let qos = row.qos.min(2);
                match client
                    .publish(
                        &row.topic,
                        qos,
                        row.payload.into(),
                        row.correlation.map(Into::into),
                        &row.message_id,
                    )
                    .await
                {
                    Ok(()) => {
                        outbox.sent_upto = row.seq;
                        outbox.awaiting_pkid.push_back((row.seq, qos));
                    }
                    Err(e) => {
                        eprintln!("edgefn-agent: MQTT publish to {} failed: {e}", row.topic);
                        return;
                    }
                }
            }
            if !more {
                return;
            }
        }
    }
}
