//! Flows' event sources in the store (V8, docs/flows.md): trigger events (`any` starts a run;
//! `all` collects one event per source in a partial match per key until all came, then starts
//! one run), partial matches expiring at the end of their window, and runs waiting at `wait`
//! steps, matched to events by their correlation key.
//!
//! Each event's effect commits in one transaction with what its trigger carries (the MQTT dedup
//! mark), so a QoS 1 message is stored in a partial match, starts a run, or resolves a wait
//! exactly once across crashes. A resolved wait holds its event in `flow_waits` until the run's
//! driver takes it: the driver is the only writer of a run's state, and its save deletes the
//! row (the state no longer waits) in the same transaction.

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::{json, Value};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::flows::{apply_all, flow_label, get, insert_run, json, FlowRun};
use super::records::{CommitExtra, Level, LogLine};
use crate::flows::envelope::envelope;
use crate::flows::run::{RunState, RunStatus};
use crate::pool::OwnedEvent;

/// What a trigger event did.
#[derive(Clone, Debug, PartialEq)]
pub enum TriggerOutcome {
    /// It started a run (`any`, or the last missing source of an `all`).
    Started(Box<FlowRun>),
    /// It is stored in the partial match of `key` (`None`: the trigger has no key); `have`:
    /// the sources (indexes) that came so far, of `of`.
    Partial {
        key: Option<String>,
        have: Vec<usize>,
        of: usize,
    },
}

fn log(tx: &Transaction<'_>, flow: &str, level: Level, text: String) -> Result<()> {
    super::logs::insert(
        tx,
        &LogLine {
            time_ms: now_ms(),
            level,
            function: Some(flow_label(flow)),
            version: None,
            invocation_id: None,
            text,
        },
    )
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidFlow(msg)
}

/// The subjects of the events a partial match holds, for log lines.
fn came(events: &[Value]) -> String {
    let subjects: Vec<String> = events
        .iter()
        .filter(|e| !e.is_null())
        .map(|e| {
            format!(
                "{} {}",
                e["index"].as_u64().map_or(0, |i| i + 1),
                e["subject"].as_str().unwrap_or("")
            )
        })
        .collect();
    subjects.join(", ")
}

/// Drops the partial matches whose window ended by `now` (of `flow`, or of every flow): each
/// is logged (warn, for `flow:NAME`) and counted in the flow's `partials_expired`.
fn expire(tx: &Transaction<'_>, flow: Option<&str>, now: i64) -> Result<usize> {
    let rows: Vec<(String, String, String, i64)> = tx
        .prepare_cached(
            "SELECT flow, key, events, first_ms FROM flow_partials
              WHERE expires_ms <= ?1 AND (?2 IS NULL OR flow = ?2)",
        )?
        .query_map(params![now, flow], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (flow, key, events, first_ms) in &rows {
        tx.prepare_cached("DELETE FROM flow_partials WHERE flow = ?1 AND key = ?2")?
            .execute(params![flow, key])?;
        tx.prepare_cached(
            "UPDATE flows SET partials_expired = partials_expired + 1 WHERE name = ?1",
        )?
        .execute([flow])?;
        let events: Vec<Value> = serde_json::from_str(events).unwrap_or_default();
        let have = events.iter().filter(|e| !e.is_null()).count();
        log(
            tx,
            flow,
            Level::Warn,
            format!(
                "trigger: partial match for key {key:?} expired {} ms after its first event \
                 with {have} of {} sources (came: {}); dropped",
                now - first_ms,
                events.len(),
                came(&events)
            ),
        )?;
    }
    Ok(rows.len())
}

/// Makes `flow_waits` follow the waits of run `run`'s state: rows for steps that wait, none for
/// steps that no longer do (a resolved event is taken with the state that took it).
pub(crate) fn sync_waits(tx: &Transaction<'_>, run: &str, state: &RunState) -> Result<()> {
    if state.status != RunStatus::Running || state.waits.is_empty() {
        tx.prepare_cached("DELETE FROM flow_waits WHERE run = ?1")?
            .execute([run])?;
        return Ok(());
    }
    let stored: Vec<String> = tx
        .prepare_cached("SELECT step FROM flow_waits WHERE run = ?1")?
        .query_map([run], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for step in stored.iter().filter(|s| !state.waits.contains_key(*s)) {
        tx.prepare_cached("DELETE FROM flow_waits WHERE run = ?1 AND step = ?2")?
            .execute(params![run, step])?;
    }
    for (step, w) in &state.waits {
        tx.prepare_cached(
            "INSERT INTO flow_waits (run, step, flow, key, deadline_ms)
             SELECT ?1, ?2, flow, ?3, ?4 FROM flow_runs WHERE id = ?1
             ON CONFLICT (run, step) DO NOTHING",
        )?
        .execute(params![run, step, w.key, w.deadline_ms])?;
    }
    Ok(())
}

impl Store {
    /// Event of source `index` of flow `flow`'s trigger: starts a run (`any`, or the last
    /// missing source of an `all` whose partial match is still in its window), or is stored in
    /// the partial match of its key; with `extra` in the same transaction. Fails (the event is
    /// refused) when the flow is unknown or disabled, has no such source any more, or the event
    /// of a keyed `all` has no key.
    pub fn flow_trigger_event(
        &self,
        flow: &str,
        index: usize,
        event: &OwnedEvent,
        trigger: &str,
        extra: &CommitExtra,
    ) -> Result<TriggerOutcome> {
        let outbox_max = self.outbox_max_rows();
        self.write(|tx| {
            let f = get(tx, flow)?;
            if !f.enabled {
                return Err(invalid(format!(
                    "flow {flow:?} is disabled; enable it to start runs"
                )));
            }
            let Some(t) = f.definition.trigger.clone() else {
                return Err(invalid(format!(
                    "flow {flow:?} has no trigger any more (its definition changed)"
                )));
            };
            let (sources, all) = t.sources();
            let Some(src) = sources.get(index) else {
                return Err(invalid(format!(
                    "flow {flow:?} has no trigger source {} any more (its definition changed)",
                    index + 1
                )));
            };
            let of = sources.len();
            let key_def = src.key(t.key.as_deref());
            let key = key_def
                .as_ref()
                .and_then(|k| k.extract(&event.subject, &event.data));
            let env = envelope(index, src, event, key.as_deref());
            if !all {
                let input = json!({ "key": key, "events": [env] });
                let run = insert_run(tx, f, input, trigger)?;
                apply_all(tx, extra, outbox_max)?;
                return Ok(TriggerOutcome::Started(Box::new(run)));
            }
            if key_def.is_some() && key.is_none() {
                return Err(invalid(format!(
                    "trigger of flow {flow:?}: the event on {:?} has no key ({}): it cannot \
                     join a match",
                    event.subject,
                    src.key.as_deref().or(t.key.as_deref()).unwrap_or_default()
                )));
            }
            let now = now_ms();
            expire(tx, Some(flow), now)?;
            let pkey = key.clone().unwrap_or_default();
            let stored: Option<(u32, String)> = tx
                .prepare_cached(
                    "SELECT revision, events FROM flow_partials WHERE flow = ?1 AND key = ?2",
                )?
                .query_row(params![flow, pkey], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let mut events = match stored {
                Some((rev, text)) if rev == f.revision => {
                    serde_json::from_str::<Vec<Value>>(&text).unwrap_or_default()
                }
                Some(_) => {
                    // The trigger changed since: its sources may differ; start over.
                    tx.prepare_cached("DELETE FROM flow_partials WHERE flow = ?1 AND key = ?2")?
                        .execute(params![flow, pkey])?;
                    tx.prepare_cached(
                        "UPDATE flows SET partials_expired = partials_expired + 1
                          WHERE name = ?1",
                    )?
                    .execute([flow])?;
                    log(
                        tx,
                        flow,
                        Level::Warn,
                        format!(
                            "trigger: partial match for key {pkey:?} dropped: the flow was \
                             updated"
                        ),
                    )?;
                    Vec::new()
                }
                None => Vec::new(),
            };
            let fresh = events.is_empty();
            events.resize(of, Value::Null);
            // A source that comes again before the match completes: its latest event counts.
            events[index] = env;
            if events.iter().all(|e| !e.is_null()) {
                tx.prepare_cached("DELETE FROM flow_partials WHERE flow = ?1 AND key = ?2")?
                    .execute(params![flow, pkey])?;
                let summary = came(&events);
                let input = json!({ "key": key, "events": events });
                let run = insert_run(tx, f, input, trigger)?;
                log(
                    tx,
                    flow,
                    Level::Info,
                    format!(
                        "trigger: all {of} sources came for key {pkey:?} ({summary}): run {}",
                        run.id
                    ),
                )?;
                apply_all(tx, extra, outbox_max)?;
                return Ok(TriggerOutcome::Started(Box::new(run)));
            }
            if fresh {
                tx.prepare_cached(
                    "INSERT INTO flow_partials (flow, key, revision, events, first_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    flow,
                    pkey,
                    f.revision,
                    json(&events),
                    now,
                    now.saturating_add(t.window_ms() as i64)
                ])?;
            } else {
                tx.prepare_cached(
                    "UPDATE flow_partials SET events = ?3 WHERE flow = ?1 AND key = ?2",
                )?
                .execute(params![flow, pkey, json(&events)])?;
            }
            apply_all(tx, extra, outbox_max)?;
            let have = events
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.is_null())
                .map(|(i, _)| i)
                .collect();
            Ok(TriggerOutcome::Partial { key, have, of })
        })
    }

    /// Event `index` of wait step `step` of `flow`: resolves the waits of the runs waiting
    /// there whose correlation key it has (every waiting run there when the wait has no key),
    /// with `extra` in the same transaction. Returns the runs it resolved; an event no run
    /// waits for is dropped.
    pub fn flow_wait_event(
        &self,
        flow: &str,
        step: &str,
        index: usize,
        event: &OwnedEvent,
        extra: &CommitExtra,
    ) -> Result<Vec<String>> {
        let outbox_max = self.outbox_max_rows();
        self.write(|tx| {
            let wait = match get(tx, flow) {
                Ok(f) => f
                    .definition
                    .step(step)
                    .and_then(|s| s.wait.clone())
                    .filter(|w| index < w.events.len()),
                Err(StoreError::UnknownFlow(_)) => None,
                Err(e) => return Err(e),
            };
            let mut runs = Vec::new();
            if let Some(w) = wait {
                let src = &w.events[index];
                let key = src
                    .key(None)
                    .and_then(|k| k.extract(&event.subject, &event.data));
                if w.key.is_none() || key.is_some() {
                    let env = envelope(index, src, event, key.as_deref());
                    runs = tx
                        .prepare_cached(
                            "SELECT run FROM flow_waits
                              WHERE flow = ?1 AND step = ?2 AND event IS NULL AND deadline_ms > ?3
                                AND (?4 IS NULL OR key = ?4)
                              ORDER BY run",
                        )?
                        .query_map(params![flow, step, now_ms(), key], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?;
                    for run in &runs {
                        tx.prepare_cached(
                            "UPDATE flow_waits SET event_index = ?3, event = ?4
                              WHERE run = ?1 AND step = ?2",
                        )?
                        .execute(params![run, step, index, json(&env)])?;
                    }
                }
            }
            apply_all(tx, extra, outbox_max)?;
            Ok(runs)
        })
    }

    /// Drops the partial matches whose window has ended (logged and counted); how many.
    pub fn expire_flow_partials(&self) -> Result<usize> {
        let now = now_ms();
        // A read first: the engine asks every second, and mostly nothing is due.
        let due = self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT 1 FROM flow_partials WHERE expires_ms <= ?1 LIMIT 1")?
                .query_row([now], |_| Ok(()))
                .optional()?
                .is_some())
        })?;
        if !due {
            return Ok(0);
        }
        self.write(|tx| expire(tx, None, now))
    }

    /// The events that resolved waits of run `run` and are not taken yet: (step, index of the
    /// event in the wait's `events`, its envelope).
    pub fn resolved_flow_waits(&self, run: &str) -> Result<Vec<(String, usize, Value)>> {
        self.read(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT step, event_index, event FROM flow_waits
                      WHERE run = ?1 AND event IS NOT NULL ORDER BY step",
                )?
                .query_map([run], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|(s, i, e)| {
                    (
                        s,
                        i.max(0) as usize,
                        serde_json::from_str(&e).unwrap_or(Value::Null),
                    )
                })
                .collect())
        })
    }

    /// Runs to drive now, oldest first: running ones, except those that only wait for events
    /// while none has come and no deadline has passed.
    pub fn runnable_flow_run_ids(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM flow_runs r WHERE status = 'running' AND (waiting = 0 OR EXISTS
                   (SELECT 1 FROM flow_waits w WHERE w.run = r.id
                       AND (w.event IS NOT NULL OR w.deadline_ms <= ?1)))
                  ORDER BY id",
            )?;
            let rows = stmt.query_map([now_ms()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::FlowDef;
    use crate::store::test_support::temp_store;
    use crate::store::Origin;

    fn event(subject: &str, data: &str) -> OwnedEvent {
        OwnedEvent {
            id: "e".into(),
            source: "mqtt".into(),
            subject: subject.into(),
            time_ms: 1,
            content_type: String::new(),
            data: data.as_bytes().to_vec(),
            attempt: 1,
        }
    }

    const AND: &str = r#"
        [trigger]
        all = [{ mqtt = "t/+/a", name = "a" }, { mqtt = "t/+/b" }]
        key = "topic:2"
        window = "1h"
        [[steps]]
        name = "s"
        function = "f"
    "#;

    #[test]
    fn an_all_trigger_joins_by_key_and_starts_one_run() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        store
            .create_flow("j", &FlowDef::parse(AND).unwrap())
            .unwrap();
        let x = CommitExtra::default();
        let ev = |s: &str| store.flow_trigger_event("j", 0, &event(s, "1"), "t", &x);
        assert!(matches!(
            ev("t/k1/a").unwrap(),
            TriggerOutcome::Partial { .. }
        ));
        assert!(matches!(
            ev("t/k2/a").unwrap(),
            TriggerOutcome::Partial { .. }
        ));
        // The same source again: still partial, its latest event counts.
        let again = store
            .flow_trigger_event("j", 0, &event("t/k1/a", "2"), "t", &x)
            .unwrap();
        assert_eq!(
            again,
            TriggerOutcome::Partial {
                key: Some("k1".into()),
                have: vec![0],
                of: 2
            }
        );
        assert_eq!(store.get_flow("j").unwrap().partials, 2);
        let done = store
            .flow_trigger_event("j", 1, &event("t/k1/b", r#"{"v": 3}"#), "t", &x)
            .unwrap();
        let TriggerOutcome::Started(run) = done else {
            panic!("{done:?}")
        };
        assert_eq!(run.state.input["key"], "k1");
        assert_eq!(run.state.input["events"][0]["data"], 2);
        assert_eq!(run.state.input["events"][0]["name"], "a");
        assert_eq!(run.state.input["events"][1]["data"]["v"], 3);
        assert_eq!(run.state.input["events"][1]["subject"], "t/k1/b");
        assert_eq!(store.get_flow("j").unwrap().partials, 1);
        // An event without its key is refused.
        let e = store
            .flow_trigger_event("j", 1, &event("t", "1"), "t", &x)
            .unwrap_err();
        assert!(e.to_string().contains("has no key"), "{e}");
    }

    #[test]
    fn http_paths_are_one_target_each() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        store
            .create_mapping(&crate::store::NewMapping::new(
                "f",
                crate::store::Source::Http { path: "/h".into() },
            ))
            .unwrap();
        let def = |path: &str| {
            FlowDef::parse(&format!(
                "[trigger]\nany = [{{ http = \"{path}\" }}]\n[[steps]]\nname = \"s\"\nfunction = \"f\"\n"
            ))
            .unwrap()
        };
        let e = store.create_flow("a", &def("/h")).unwrap_err().to_string();
        assert!(
            e.contains("HTTP path \"/h\" is already taken by mapping m-"),
            "{e}"
        );
        store.create_flow("a", &def("/g")).unwrap();
        let e = store.create_flow("b", &def("/g")).unwrap_err().to_string();
        assert!(e.contains("taken by flow a"), "{e}");
        store.update_flow("a", &def("/g")).unwrap();
        let e = store
            .create_mapping(&crate::store::NewMapping::new(
                "f",
                crate::store::Source::Http { path: "/g".into() },
            ))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("taken by the trigger or a wait step of flow a"),
            "{e}"
        );
    }

    #[test]
    fn partials_expire_at_the_end_of_their_window() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let def = AND.replace("1h", "100ms");
        store
            .create_flow("j", &FlowDef::parse(&def).unwrap())
            .unwrap();
        let x = CommitExtra::default();
        store
            .flow_trigger_event("j", 0, &event("t/k/a", "1"), "t", &x)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        // Too late to join: it starts a new partial match.
        let late = store
            .flow_trigger_event("j", 1, &event("t/k/b", "1"), "t", &x)
            .unwrap();
        assert!(matches!(late, TriggerOutcome::Partial { .. }), "{late:?}");
        let f = store.get_flow("j").unwrap();
        assert_eq!((f.partials, f.partials_expired), (1, 1));
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert_eq!(store.expire_flow_partials().unwrap(), 1);
        let f = store.get_flow("j").unwrap();
        assert_eq!((f.partials, f.partials_expired), (0, 2));
    }
}
