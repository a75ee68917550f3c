//! Flows (V7): definitions (`flows`) and durable runs (`flow_runs`), see docs/flows.md.
//!
//! - A definition is validated when it is created or updated ([`FlowDef::validate`], plus the
//!   functions it invokes must exist); it is stored as JSON with a revision that counts updates.
//! - A run row holds the definition it started with, its status and its whole state
//!   ([`RunState`] as JSON), rewritten after every step: a restarted agent continues each
//!   `running` row where it was. A run's start commits with what its trigger carries (the MQTT
//!   dedup mark, the consumed queue row), and its end with its destination (on-success /
//!   on-failure), each in one transaction.
//! - Finished runs beyond [`KEEP_FINISHED_RUNS`] per flow are deleted as new runs start.
//! - Changes write an info log line for `flow:NAME`, like function lifecycle changes, and bump
//!   the mappings revision, so the trigger runtime reloads the flows' event sources
//!   (`flows/sources.rs`).
//! - Partial AND matches of triggers and runs waiting for events: `flow_events.rs` (V8).

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::commit::apply_extra;
use super::db::{next_ulid, now_ms, Store};
use super::error::{Result, StoreError};
use super::functions::exists;
use super::logs::lifecycle;
use super::records::{CommitExtra, LogLine};
use crate::flows::definition::FlowDef;
use crate::flows::run::{RunState, RunStatus};

/// Finished runs kept per flow (the newest).
pub const KEEP_FINISHED_RUNS: i64 = 1000;

/// Prefix of run ids (`r-` + a ULID, so ids sort by start time).
pub const RUN_ID_PREFIX: &str = "r-";

/// A stored flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowInfo {
    pub name: String,
    pub definition: FlowDef,
    pub enabled: bool,
    /// 1 at creation, +1 per update.
    pub revision: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Runs not finished yet.
    pub running: u64,
    /// Partial AND matches of its trigger waiting for their other sources.
    #[serde(default)]
    pub partials: u64,
    /// Partial AND matches dropped because their window ended (or the trigger changed).
    #[serde(default)]
    pub partials_expired: u64,
}

/// One run, with its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRun {
    pub id: String,
    pub flow: String,
    /// The flow revision it runs.
    pub revision: u32,
    pub status: RunStatus,
    /// What started it: `manual`, `mapping:ID`, ...
    pub trigger: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub state: RunState,
    /// The definition it runs (a later update does not change it).
    #[serde(skip)]
    pub definition: FlowDef,
}

/// The label of the log lines about a flow.
pub fn flow_label(name: &str) -> String {
    format!("flow:{name}")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn parse_def(text: &str) -> Result<FlowDef> {
    serde_json::from_str(text).map_err(|e| corrupt("stored flow definition", e))
}

/// Validates `def` for flow `name`: the definition itself, then that each function exists.
fn validate(tx: &Transaction<'_>, name: &str, def: &FlowDef) -> Result<()> {
    crate::store::names::validate_function_name(name).map_err(|e| match e {
        StoreError::InvalidName { name, reason } => {
            StoreError::InvalidFlow(format!("invalid flow name {name:?}: {reason}"))
        }
        e => e,
    })?;
    if let Some(n) = &def.name {
        if n != name {
            return Err(StoreError::InvalidFlow(format!(
                "the definition is named {n:?} but is stored as {name:?}: drop `name` or make \
                 them agree"
            )));
        }
    }
    def.validate()
        .map_err(|e| StoreError::InvalidFlow(e.to_string()))?;
    check_http_paths(tx, name, def)?;
    for s in &def.steps {
        if let Some(f) = &s.function {
            let function = f.split_once(':').map_or(f.as_str(), |(n, _)| n);
            if !exists(tx, function)? {
                return Err(StoreError::InvalidFlow(format!(
                    "invalid flow: step {:?}: unknown function {function:?} (create it first)",
                    s.name
                )));
            }
        }
    }
    Ok(())
}

/// The HTTP paths of `def`'s sources must be free: not twice in it, not a mapping's, not
/// another flow's (the HTTP trigger routes a path to one target).
pub(crate) fn check_http_paths(tx: &Transaction<'_>, name: &str, def: &FlowDef) -> Result<()> {
    let paths = crate::flows::sources::http_paths(def);
    if paths.is_empty() {
        return Ok(());
    }
    let taken = |path: &str, by: String| {
        Err(StoreError::InvalidFlow(format!(
            "invalid flow: HTTP path {path:?} is already taken by {by}"
        )))
    };
    for (i, path) in paths.iter().enumerate() {
        if paths[..i].contains(path) {
            return taken(path, "another source of this flow".into());
        }
        let mapping: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM mappings
                  WHERE source_kind = 'http' AND json_extract(source, '$.path') = ?1",
            )?
            .query_row([path], |r| r.get(0))
            .optional()?;
        if let Some(m) = mapping {
            return taken(path, format!("mapping {m}"));
        }
    }
    for path in &paths {
        if let Some(other) = flow_using_http_path(tx, path, Some(name))? {
            return taken(path, format!("flow {other}"));
        }
    }
    Ok(())
}

/// The flow (other than `except`) one of whose sources is `POST path`, if any.
pub(crate) fn flow_using_http_path(
    tx: &Transaction<'_>,
    path: &str,
    except: Option<&str>,
) -> Result<Option<String>> {
    let flows: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT name, definition FROM flows WHERE (?1 IS NULL OR name <> ?1)
                AND definition LIKE '%\"http\"%'",
        )?
        .query_map([except], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, text) in flows {
        let Ok(d) = parse_def(&text) else { continue };
        if crate::flows::sources::http_paths(&d).contains(&path) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn flow_from_row(row: &Row<'_>) -> rusqlite::Result<(FlowInfo, String)> {
    Ok((
        FlowInfo {
            name: row.get(0)?,
            definition: FlowDef::default(),
            enabled: row.get(2)?,
            revision: row.get(3)?,
            created_ms: row.get(4)?,
            updated_ms: row.get(5)?,
            running: row.get(6)?,
            partials: row.get(7)?,
            partials_expired: row.get(8)?,
        },
        row.get(1)?,
    ))
}

const FLOW_COLUMNS: &str = "name, definition, enabled, revision, created_ms, updated_ms,
     (SELECT count(*) FROM flow_runs r WHERE r.flow = flows.name AND r.status = 'running'),
     (SELECT count(*) FROM flow_partials p WHERE p.flow = flows.name), partials_expired";

pub(crate) fn get(tx: &Transaction<'_>, name: &str) -> Result<FlowInfo> {
    let row = tx
        .prepare_cached(&format!("SELECT {FLOW_COLUMNS} FROM flows WHERE name = ?1"))?
        .query_row([name], flow_from_row)
        .optional()?;
    let (mut f, def) = row.ok_or_else(|| StoreError::UnknownFlow(name.to_string()))?;
    f.definition = parse_def(&def)?;
    Ok(f)
}

const RUN_COLUMNS: &str =
    "id, flow, revision, status, trigger, created_ms, updated_ms, state, definition";

type RawRun = (
    String,
    String,
    u32,
    String,
    String,
    i64,
    i64,
    String,
    String,
);

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RawRun> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

fn run_from_raw(raw: RawRun) -> Result<FlowRun> {
    let (id, flow, revision, _status, trigger, created_ms, updated_ms, state, def) = raw;
    let state: RunState =
        serde_json::from_str(&state).map_err(|e| corrupt(&format!("state of run {id}"), e))?;
    Ok(FlowRun {
        status: state.status,
        id,
        flow,
        revision,
        trigger,
        created_ms,
        updated_ms,
        state,
        definition: parse_def(&def)?,
    })
}

impl Store {
    /// Creates flow `name` (validated; its functions must exist).
    pub fn create_flow(&self, name: &str, def: &FlowDef) -> Result<FlowInfo> {
        let mut def = def.clone();
        self.write(|tx| {
            validate(tx, name, &def)?;
            def.name = None;
            let now = now_ms();
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO flows (name, definition, enabled, revision, created_ms, updated_ms)
                     VALUES (?1, ?2, 1, 1, ?3, ?3) ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![name, json(&def), now])?;
            if inserted == 0 {
                return Err(StoreError::FlowExists(name.to_string()));
            }
            lifecycle(
                tx,
                &flow_label(name),
                None,
                &format!("flow {name} created ({} steps)", def.steps.len()),
            )?;
            super::mappings::bump_revision(tx)?;
            get(tx, name)
        })
    }

    /// Replaces the definition of `name` (new runs use it; running ones keep theirs).
    pub fn update_flow(&self, name: &str, def: &FlowDef) -> Result<FlowInfo> {
        let mut def = def.clone();
        self.write(|tx| {
            let old = get(tx, name)?;
            super::cloud_flows::ensure_local_flow(tx, name)?;
            validate(tx, name, &def)?;
            def.name = None;
            if old.definition == def {
                return Ok(old);
            }
            tx.prepare_cached(
                "UPDATE flows SET definition = ?2, revision = revision + 1, updated_ms = ?3
                  WHERE name = ?1",
            )?
            .execute(params![name, json(&def), now_ms()])?;
            lifecycle(
                tx,
                &flow_label(name),
                None,
                &format!("flow {name} updated to revision {}", old.revision + 1),
            )?;
            super::mappings::bump_revision(tx)?;
            get(tx, name)
        })
    }

    pub fn get_flow(&self, name: &str) -> Result<FlowInfo> {
        self.read(|tx| get(tx, name))
    }

    /// Every flow, by name.
    pub fn list_flows(&self) -> Result<Vec<FlowInfo>> {
        self.read(|tx| {
            let mut stmt =
                tx.prepare_cached(&format!("SELECT {FLOW_COLUMNS} FROM flows ORDER BY name"))?;
            let rows = stmt
                .query_map([], flow_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(mut f, d)| {
                    f.definition = parse_def(&d)?;
                    Ok(f)
                })
                .collect()
        })
    }

    /// Deletes flow `name`; its runs stay listed, and running ones finish with the definition
    /// they started with. Mappings that target it stay, and their events fail (dead letters)
    /// until a flow of that name exists again.
    pub fn delete_flow(&self, name: &str) -> Result<FlowInfo> {
        self.write(|tx| {
            let f = get(tx, name)?;
            super::cloud_flows::ensure_local_flow(tx, name)?;
            tx.prepare_cached("DELETE FROM flows WHERE name = ?1")?
                .execute([name])?;
            tx.prepare_cached("DELETE FROM flow_partials WHERE flow = ?1")?
                .execute([name])?;
            lifecycle(tx, &flow_label(name), None, &format!("flow {name} deleted"))?;
            super::mappings::bump_revision(tx)?;
            Ok(f)
        })
    }

    /// Enables or disables `name`: a disabled flow starts no new runs (running ones go on).
    pub fn set_flow_enabled(&self, name: &str, enabled: bool) -> Result<FlowInfo> {
        self.write(|tx| {
            let f = get(tx, name)?;
            super::cloud_flows::ensure_local_flow(tx, name)?;
            if f.enabled == enabled {
                return Ok(f);
            }
            tx.prepare_cached("UPDATE flows SET enabled = ?2, updated_ms = ?3 WHERE name = ?1")?
                .execute(params![name, enabled, now_ms()])?;
            let what = if enabled { "enabled" } else { "disabled" };
            lifecycle(tx, &flow_label(name), None, &format!("flow {name} {what}"))?;
            super::mappings::bump_revision(tx)?;
            get(tx, name)
        })
    }

    /// Starts a run of flow `name` on `input`: its first steps entered (choices and parallel
    /// fan-outs taken), stored with `extra` (what the trigger commits with it) in one
    /// transaction. Fails if the flow is unknown or disabled.
    pub fn start_flow_run(
        &self,
        name: &str,
        input: serde_json::Value,
        trigger: &str,
        extra: &CommitExtra,
    ) -> Result<FlowRun> {
        let outbox_max = self.outbox_max_rows();
        self.write(|tx| {
            let f = get(tx, name)?;
            let run = insert_run(tx, f, input, trigger)?;
            apply_all(tx, extra, outbox_max)?;
            Ok(run)
        })
    }

    /// Stores the state of run `id` (after a step), with its log lines and `extra` (its
    /// destination when it ended) in the same transaction.
    pub fn save_flow_run(
        &self,
        id: &str,
        state: &RunState,
        logs: &[LogLine],
        extra: &CommitExtra,
    ) -> Result<()> {
        let outbox_max = self.outbox_max_rows();
        self.write(|tx| {
            for l in logs {
                super::logs::insert(tx, l)?;
            }
            let n = tx
                .prepare_cached(
                    "UPDATE flow_runs SET status = ?2, state = ?3, updated_ms = ?4, waiting = ?5
                      WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    state.status.as_str(),
                    json(state),
                    now_ms(),
                    state.only_waiting()
                ])?;
            if n == 0 {
                return Err(StoreError::UnknownFlowRun(id.to_string()));
            }
            super::flow_events::sync_waits(tx, id, state)?;
            apply_all(tx, extra, outbox_max)
        })
    }

    /// One run.
    pub fn flow_run(&self, id: &str) -> Result<FlowRun> {
        self.read(|tx| {
            let raw = tx
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM flow_runs WHERE id = ?1"
                ))?
                .query_row([id], run_from_row)
                .optional()?
                .ok_or_else(|| StoreError::UnknownFlowRun(id.to_string()))?;
            run_from_raw(raw)
        })
    }

    /// The newest `limit` runs of flow `name` (newest first), optionally of one status.
    pub fn flow_runs(
        &self,
        name: &str,
        status: Option<RunStatus>,
        limit: u32,
    ) -> Result<Vec<FlowRun>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM flow_runs WHERE flow = ?1 AND (?2 IS NULL OR status = ?2)
                  ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(
                    params![name, status.map(RunStatus::as_str), limit],
                    run_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(run_from_raw).collect()
        })
    }

    /// Every run not finished yet (to continue after a restart), oldest first.
    pub fn running_flow_runs(&self) -> Result<Vec<FlowRun>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM flow_runs WHERE status = 'running' ORDER BY id"
            ))?;
            let rows = stmt
                .query_map([], run_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(run_from_raw).collect()
        })
    }

    /// Ids of the runs not finished yet, oldest first.
    pub fn running_flow_run_ids(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt =
                tx.prepare_cached("SELECT id FROM flow_runs WHERE status = 'running' ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    /// Whether flow `name` exists (mappings may target `flow:NAME`).
    pub fn flow_exists(&self, name: &str) -> Result<bool> {
        self.read(|tx| flow_exists(tx, name))
    }
}

/// Starts a run of flow `f` on `input` in the caller's transaction (fails if the flow is
/// disabled): its first steps entered, its waits registered.
pub(crate) fn insert_run(
    tx: &Transaction<'_>,
    f: FlowInfo,
    input: serde_json::Value,
    trigger: &str,
) -> Result<FlowRun> {
    let name = f.name.as_str();
    if !f.enabled {
        return Err(StoreError::InvalidFlow(format!(
            "flow {name:?} is disabled; enable it to start runs"
        )));
    }
    let now = now_ms();
    let state = RunState::start(&f.definition, input, now);
    let run = FlowRun {
        id: format!("{RUN_ID_PREFIX}{}", next_ulid()),
        flow: name.to_string(),
        revision: f.revision,
        status: state.status,
        trigger: trigger.to_string(),
        created_ms: now,
        updated_ms: now,
        state,
        definition: f.definition,
    };
    tx.prepare_cached(
        "INSERT INTO flow_runs (id, flow, revision, definition, status, state, trigger,
                                created_ms, updated_ms, waiting)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
    )?
    .execute(params![
        run.id,
        run.flow,
        run.revision,
        json(&run.definition),
        run.status.as_str(),
        json(&run.state),
        run.trigger,
        now,
        run.state.only_waiting()
    ])?;
    super::flow_events::sync_waits(tx, &run.id, &run.state)?;
    tx.prepare_cached(
        "DELETE FROM flow_runs WHERE flow = ?1 AND status <> 'running' AND id <
           (SELECT id FROM flow_runs WHERE flow = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![name, KEEP_FINISHED_RUNS])?;
    Ok(run)
}

pub(crate) fn flow_exists(tx: &Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM flows WHERE name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn apply_all(tx: &Transaction<'_>, extra: &CommitExtra, outbox_max: u64) -> Result<()> {
    if extra.is_empty() {
        return Ok(());
    }
    let mut summary = Default::default();
    apply_extra(tx, extra, now_ms(), &mut summary, None)?;
    if !extra.outbox.is_empty() {
        super::outbox::enforce_bound(tx, outbox_max)?;
    }
    Ok(())
}

pub(crate) fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{lifecycle_texts, temp_store};
    use crate::store::{Origin, OutboxMessage};

    fn def(text: &str) -> FlowDef {
        FlowDef::parse(text).unwrap()
    }

    const SEQ: &str = "[[steps]]\nname = \"a\"\nfunction = \"f\"\nnext = \"b\"\n\
                       [[steps]]\nname = \"b\"\nfunction = \"f\"\n";

    #[test]
    fn lifecycle_validates_and_logs() {
        let (_dir, store) = temp_store();
        let e = store.create_flow("fl", &def(SEQ)).unwrap_err().to_string();
        assert!(e.contains("step \"a\": unknown function \"f\""), "{e}");
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let f = store.create_flow("fl", &def(SEQ)).unwrap();
        assert_eq!((f.revision, f.enabled, f.running), (1, true, 0));
        assert!(matches!(
            store.create_flow("fl", &def(SEQ)),
            Err(StoreError::FlowExists(_))
        ));
        let bad = "[[steps]]\nname = \"a\"\nfunction = \"f\"\nnext = \"a\"\n";
        let e = store.update_flow("fl", &def(bad)).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        let one = "[[steps]]\nname = \"a\"\nfunction = \"f\"\n";
        assert_eq!(store.update_flow("fl", &def(one)).unwrap().revision, 2);
        assert!(!store.set_flow_enabled("fl", false).unwrap().enabled);
        let e = store
            .start_flow_run(
                "fl",
                serde_json::json!(1),
                "manual",
                &CommitExtra::default(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("disabled"), "{e}");
        store.set_flow_enabled("fl", true).unwrap();
        assert_eq!(store.list_flows().unwrap().len(), 1);
        store.delete_flow("fl").unwrap();
        assert!(matches!(
            store.get_flow("fl"),
            Err(StoreError::UnknownFlow(_))
        ));
        assert_eq!(
            lifecycle_texts(&store, "flow:fl"),
            [
                "flow fl created (2 steps)",
                "flow fl updated to revision 2",
                "flow fl disabled",
                "flow fl enabled",
                "flow fl deleted"
            ]
        );
    }

    #[test]
    fn runs_persist_their_state_and_definition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let id;
        {
            let store = Store::open(&path).unwrap();
            store.create_function("f", b"m", "", Origin::Local).unwrap();
            store.create_flow("fl", &def(SEQ)).unwrap();
            let run = store
                .start_flow_run(
                    "fl",
                    serde_json::json!({"x": 1}),
                    "manual",
                    &CommitExtra::default(),
                )
                .unwrap();
            id = run.id.clone();
            let mut state = run.state.clone();
            state.attempt_started("a", "inv-1");
            state.succeeded(&run.definition, "a", serde_json::json!("A"), 5);
            let extra = CommitExtra {
                outbox: vec![OutboxMessage::new("t/x", b"m".to_vec(), 1, None)],
                ..CommitExtra::default()
            };
            store.save_flow_run(&id, &state, &[], &extra).unwrap();
            // An update after the start does not change the running run.
            store
                .update_flow("fl", &def("[[steps]]\nname = \"z\"\nfunction = \"f\"\n"))
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let running = store.running_flow_runs().unwrap();
        assert_eq!(running.len(), 1);
        let run = &running[0];
        assert_eq!(run.id, id);
        assert_eq!(run.state.steps["a"].result, Some(serde_json::json!("A")));
        assert_eq!(run.definition.steps.len(), 2);
        assert_eq!(run.state.ready(&run.definition)[0].step, "b");
        assert_eq!(store.flow_runs("fl", None, 10).unwrap().len(), 1);
        assert_eq!(store.get_flow("fl").unwrap().running, 1);
    }
}
