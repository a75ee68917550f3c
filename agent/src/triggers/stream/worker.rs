//! Consumers of stream mappings: one task per enabled stream mapping, which runs one worker per
//! partition with records to do. A partition's worker is the only one reading it: it takes up
//! to `batch_size` records after the checkpoint (waiting up to `batch_window` for a fuller
//! batch), invokes the function with them as one event, and on success commits the checkpoint
//! with the invocation's record and effects. A failing batch is retried and bisected
//! ([`super::bisect`]); a record that fails alone goes to the on-failure destination (or a dead
//! letter) and the checkpoint passes it in the same commit.
//!
//! Pausing, changing or deleting a mapping stops its workers between two invocations (never
//! during one), and a changed mapping's new task starts only after the old one ended, so two
//! workers never hold one partition.

use super::bisect::{Bisect, Failed};
use super::{encode, file, Hub};
use crate::daemon::{InvokeError, InvokeRequest};
use crate::runtime::{Invocation, Outcome};
use crate::store::mappings::FLOW_TARGET;
use crate::store::stream::{StreamCheckpoint, StreamRecord};
use crate::store::{Batching, CommitExtra, Level, Mapping, Qualifier, Source};
use crate::triggers::dispatch::{
    failure_extra, retry_delay, success_extra, Carry, Dispatcher, Route,
};
use crate::triggers::Mappings;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A worker without records for this long ends (its mapping's task starts a new one when
/// records come).
const IDLE: Duration = Duration::from_secs(2);

/// How often a mapping's task looks for partitions with records besides being woken.
const SCAN: Duration = Duration::from_millis(500);

/// Longest wait of a throttled or refused batch before it tries again.
const HOLD_MAX: Duration = Duration::from_secs(1);

/// Starts and stops the tasks of stream mappings as the mapping set changes.
pub async fn supervise(dispatcher: Dispatcher, hub: Hub, mut mappings: Mappings) {
    // Per mapping id: (updated_ms, stop signal, task).
    let mut running: HashMap<String, (i64, watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
    loop {
        let current = mappings.borrow_and_update().clone();
        let wanted: HashMap<&str, &Mapping> = current
            .iter()
            .filter(|m| m.source.is_stream())
            .map(|m| (m.id.as_str(), m))
            .collect();
        let mut previous: HashMap<String, JoinHandle<()>> = HashMap::new();
        running.retain(|id, (updated, stop, task)| {
            if wanted
                .get(id.as_str())
                .is_some_and(|m| m.updated_ms == *updated)
            {
                return true;
            }
            let _ = stop.send(true);
            // Dropping a JoinHandle detaches the task: it finishes its current invocation.
            let (dummy_tx, _) = watch::channel(true);
            let _ = std::mem::replace(stop, dummy_tx);
            previous.insert(id.clone(), std::mem::replace(task, tokio::spawn(async {})));
            false
        });
        for (id, m) in wanted {
            if running.contains_key(id) {
                continue;
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let before = previous.remove(id);
            let task = tokio::spawn(run_mapping(
                dispatcher.clone(),
                hub.clone(),
                m.clone(),
                stop_rx,
                before,
            ));
            running.insert(id.to_string(), (m.updated_ms, stop_tx, task));
        }
        if mappings.changed().await.is_err() {
            for (_, (_, stop, _)) in running {
                let _ = stop.send(true);
            }
            return;
        }
    }
}

/// What every worker of one mapping shares.
struct Ctx {
    dispatcher: Dispatcher,
    mapping: Mapping,
    route: Route,
    batching: Batching,
    qualifier: Option<Qualifier>,
}

/// One stream mapping: its file reader (file sources, paused or not) and, while enabled, its
/// partition workers.
async fn run_mapping(
    dispatcher: Dispatcher,
    hub: Hub,
    mapping: Mapping,
    mut stop: watch::Receiver<bool>,
    before: Option<JoinHandle<()>>,
) {
    if let Some(b) = before {
        let _ = b.await;
    }
    let store = dispatcher.daemon().store().clone();
    let reader = match &mapping.source {
        Source::StreamFile {
            path,
            format,
            follow,
            partition_key,
            ..
        } => Some(tokio::spawn(file::run(
            store.clone(),
            hub.clone(),
            file::FileSource {
                mapping: mapping.id.clone(),
                path: path.clone(),
                format: *format,
                follow: *follow,
                key: partition_key.clone(),
            },
            stop.clone(),
        ))),
        _ => None,
    };
    let Some(batching) = mapping.source.batching() else {
        return;
    };
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    if mapping.enabled {
        let ctx = Arc::new(Ctx {
            route: Route::of(&mapping),
            qualifier: Qualifier::parse(&mapping.qualifier).ok(),
            dispatcher,
            mapping,
            batching,
        });
        let mut appended = hub.watch(&ctx.mapping.id);
        loop {
            if *stop.borrow() {
                break;
            }
            workers.retain(|_, w| !w.is_finished());
            let (st, id) = (store.clone(), ctx.mapping.id.clone());
            if let Ok(Ok(pending)) =
                tokio::task::spawn_blocking(move || st.stream_pending(&id)).await
            {
                for p in pending {
                    if let Entry::Vacant(slot) = workers.entry(p.partition.clone()) {
                        slot.insert(tokio::spawn(partition_worker(
                            ctx.clone(),
                            p.partition,
                            p.checkpoint,
                            stop.clone(),
                            hub.watch(&ctx.mapping.id),
                        )));
                    }
                }
            }
            tokio::select! {
                _ = appended.changed() => {}
                _ = tokio::time::sleep(SCAN) => {}
                _ = stop.changed() => {}
            }
        }
    } else {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    }
    for (_, w) in workers {
        let _ = w.await;
    }
    if let Some(r) = reader {
        let _ = r.await;
    }
}

/// Consumes one partition in order until it has been idle for [`IDLE`] or `stop`.
async fn partition_worker(
    ctx: Arc<Ctx>,
    partition: String,
    mut checkpoint: i64,
    mut stop: watch::Receiver<bool>,
    mut appended: watch::Receiver<u64>,
) {
    let store = ctx.dispatcher.daemon().store().clone();
    let size = ctx.batching.size as usize;
    loop {
        if *stop.borrow() {
            return;
        }
        let (st, id, p) = (store.clone(), ctx.mapping.id.clone(), partition.clone());
        let records =
            match tokio::task::spawn_blocking(move || st.stream_read(&id, &p, checkpoint, size))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    eprintln!("edgefn-agent: stream {}: cannot read: {e}", ctx.mapping.id);
                    tokio::time::sleep(HOLD_MAX).await;
                    continue;
                }
                Err(_) => return,
            };
        if records.is_empty() {
            tokio::select! {
                _ = appended.changed() => continue,
                _ = tokio::time::sleep(IDLE) => return,
                _ = stop.changed() => return,
            }
        }
        if records.len() < size && ctx.batching.window_ms > 0 {
            let due = records[0].time_ms + ctx.batching.window_ms as i64;
            let now = crate::runtime::now_ms() as i64;
            if now < due {
                tokio::select! {
                    _ = appended.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis((due - now) as u64)) => {}
                    _ = stop.changed() => return,
                }
                // Read again: more may have come, or the window is over.
                if crate::runtime::now_ms() as i64 >= due {
                    // Deliver what there is (re-reading below would wait again otherwise).
                } else {
                    continue;
                }
            }
        }
        match process(&ctx, &records, &mut stop).await {
            Some(done) => checkpoint = done,
            None => return,
        }
    }
}

/// Runs one batch to its end (bisecting failures); returns the new checkpoint, or `None` when
/// stopped between two attempts.
async fn process(
    ctx: &Ctx,
    records: &[StreamRecord],
    stop: &mut watch::Receiver<bool>,
) -> Option<i64> {
    let mut bisect = Bisect::new(records.len(), ctx.route.retries);
    let mut checkpoint = records[0].offset - 1;
    while let Some(a) = bisect.current() {
        let slice = &records[a.range.clone()];
        match attempt(ctx, slice, a.tries, stop).await? {
            true => {
                bisect.succeeded();
                checkpoint = slice[slice.len() - 1].offset;
            }
            false => match bisect.failed() {
                Failed::Split => {}
                Failed::Poison(i) => {
                    // Committed by the attempt's last try: the failure path and the checkpoint.
                    checkpoint = records[i].offset;
                    ctx.dispatcher.daemon().log_agent(
                        Some(&ctx.mapping.function),
                        None,
                        Level::Warn,
                        format!(
                            "stream mapping {}: record {} of partition {:?} failed on its own; \
                             sent to {} and passed",
                            ctx.mapping.id,
                            records[i].offset,
                            records[i].partition,
                            ctx.mapping
                                .on_failure
                                .as_ref()
                                .map_or_else(|| "the dead letters".into(), |d| d.to_string())
                        ),
                    );
                }
            },
        }
    }
    Some(checkpoint)
}

/// Invokes the function with `slice` up to `tries` times; `Some(true)` on success (committed
/// with the checkpoint at its end). A single record's last failing try commits its failure
/// path and moves the checkpoint past it. `None` when stopped.
async fn attempt(
    ctx: &Ctx,
    slice: &[StreamRecord],
    tries: u32,
    stop: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let event = encode::event(&ctx.mapping.id, slice);
    let single = slice.len() == 1;
    // Committed with the batch's success (or its single record's final failure).
    let checkpoint = StreamCheckpoint {
        mapping: ctx.mapping.id.clone(),
        partition: slice[0].partition.clone(),
        offset: slice[slice.len() - 1].offset,
    };
    let mut n = 1;
    let mut held = 0;
    let mut complained = false;
    while n <= tries {
        if *stop.borrow() {
            return None;
        }
        let mut event = event.clone();
        event.attempt = n;
        let last = n == tries;
        if let Some(flow) = ctx.route.function.strip_prefix(FLOW_TARGET) {
            // A stream mapping to `flow:NAME`: the batch starts one run (its input is the
            // batch's JSON), committed with the checkpoint; the run's steps retry on their own.
            let extra = CommitExtra {
                stream_checkpoint: Some(checkpoint.clone()),
                ..CommitExtra::default()
            };
            let input = crate::flows::value_from_bytes(&event.data);
            let trigger = format!("mapping:{}", ctx.mapping.id);
            match crate::flows::start(ctx.dispatcher.daemon(), flow, input, &trigger, extra).await {
                Ok(_) => return Some(true),
                // Unknown or disabled flow: the stream waits (in order), as for a function.
                Err(e) => {
                    complain_once(ctx, slice, &mut complained, &e);
                    hold(stop, HOLD_MAX).await;
                    continue;
                }
            }
        }
        let Some(qualifier) = ctx.qualifier.clone() else {
            eprintln!(
                "edgefn-agent: stream mapping {}: bad qualifier {:?}",
                ctx.mapping.id, ctx.mapping.qualifier
            );
            hold(stop, HOLD_MAX).await;
            continue;
        };
        let req = InvokeRequest {
            function: ctx.route.function.clone(),
            qualifier,
            invocation_id: ulid::Ulid::new().to_string(),
            event: event.clone(),
        };
        let (route, ev, checkpoint) = (ctx.route.clone(), event.clone(), checkpoint.clone());
        let finish = move |inv: &Invocation| {
            let carry = Carry::default();
            if inv.is_success() {
                let mut extra = success_extra(&route, inv, &carry);
                extra.stream_checkpoint = Some(checkpoint);
                return extra;
            }
            let is_final = last || inv.outcome == Outcome::EventTooLarge;
            if single && is_final {
                let error = inv.error.clone().unwrap_or_default();
                let mut extra = failure_extra(&route, &ev, &carry, n, inv.outcome.as_str(), &error);
                extra.stream_checkpoint = Some(checkpoint);
                return extra;
            }
            Default::default()
        };
        match ctx.dispatcher.daemon().invoke_then(req, finish).await {
            Ok(invoked) if invoked.invocation.is_success() => return Some(true),
            Ok(invoked) => {
                if last || invoked.invocation.outcome == Outcome::EventTooLarge {
                    return Some(false);
                }
                hold(stop, retry_delay(n)).await;
                n += 1;
                held = 0;
            }
            // Backpressure: the records wait durably; the same attempt once there is room.
            Err(InvokeError::Throttled { .. }) => {
                held += 1;
                hold(stop, retry_delay(held).min(HOLD_MAX)).await;
            }
            // Disabled or unknown function, unusable module: the stream waits (in order) until
            // the function can run again rather than dead-lettering every record.
            Err(e) => {
                complain_once(ctx, slice, &mut complained, &e);
                hold(stop, HOLD_MAX).await;
            }
        }
    }
    Some(false)
}

/// Logs once per batch (under the mapping's target) that the partition waits, and why.
fn complain_once(
    ctx: &Ctx,
    slice: &[StreamRecord],
    complained: &mut bool,
    why: &dyn std::fmt::Display,
) {
    if !*complained {
        ctx.dispatcher.daemon().log_agent(
            Some(&ctx.mapping.function),
            None,
            Level::Warn,
            format!(
                "stream mapping {}: partition {:?} waits: {why}",
                ctx.mapping.id, slice[0].partition
            ),
        );
        *complained = true;
    }
}

/// Sleeps `d`, or less when stopped.
async fn hold(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}
