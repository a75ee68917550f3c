//! Cloud-managed flows (docs/flows.md, "Flows from the cloud"): the flows a desired state
//! carries, written by its activation (`store/cloud.rs`) in the same transaction as its
//! functions and mappings.
//!
//! The rule is the mappings' and functions': a flow is either local (made with
//! `edgefn-agent flow create`) or cloud-managed (deployed), never both. The names the cloud
//! manages are kept in `meta` (`cloud.flows`, a JSON array), so no schema change is needed; a
//! desired state that names a local flow is refused ([`StoreError::CloudConflict`]), and the
//! local API refuses to update, delete, enable or disable a cloud-managed one
//! ([`StoreError::CloudManaged`], through [`ensure_local_flow`]). A flow the cloud no longer
//! lists is deleted (with its partial trigger matches); its runs stay listed and running ones
//! finish with the definition they started with, as after `flow delete`; the activation bumps
//! the mappings revision, so the trigger runtime reloads the flows' own event sources. The device checks a deployed definition with the same
//! rules as a local one, except that the functions it invokes need not exist yet (they may come
//! with the same deployment, or later): a step whose function is missing fails its run.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::db::now_ms;
use super::error::{Result, StoreError};
use super::flows::{check_http_paths, flow_exists, flow_label};
use super::logs::lifecycle;
use crate::flows::definition::FlowDef;

/// Meta key: the names of the flows cloud sync manages (a JSON array).
const CLOUD_FLOWS_KEY: &str = "cloud.flows";

/// A flow of a desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudFlow {
    pub name: String,
    pub enabled: bool,
    pub definition: FlowDef,
    /// The deployment that brought it.
    pub deployment: String,
}

/// The names of the flows cloud sync manages.
pub(crate) fn cloud_flows(tx: &Transaction<'_>) -> Result<BTreeSet<String>> {
    let text: Option<String> = tx
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([CLOUD_FLOWS_KEY], |r| r.get(0))
        .optional()?;
    match text {
        None => Ok(BTreeSet::new()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("meta {CLOUD_FLOWS_KEY}: {e}"))),
    }
}

/// Fails with [`StoreError::CloudManaged`] for a flow cloud sync manages.
pub(crate) fn ensure_local_flow(tx: &Transaction<'_>, name: &str) -> Result<()> {
    if cloud_flows(tx)?.contains(name) {
        return Err(StoreError::CloudManaged(format!("flow {name}")));
    }
    Ok(())
}

/// Refuses a state whose flows a local flow holds (before anything is written).
pub(crate) fn check_conflicts(tx: &Transaction<'_>, flows: &[CloudFlow]) -> Result<()> {
    let managed = cloud_flows(tx)?;
    for f in flows {
        if !managed.contains(&f.name) && flow_exists(tx, &f.name)? {
            return Err(StoreError::CloudConflict(format!(
                "flow {} exists on this device as a local flow; the cloud-managed one is refused \
                 (delete or rename the local one)",
                f.name
            )));
        }
        f.definition
            .validate()
            .map_err(|e| StoreError::CloudConflict(format!("flow {}: {e}", f.name)))?;
    }
    Ok(())
}

/// Makes the cloud-managed flows exactly `flows`: removes the others the cloud managed, creates
/// or updates these (a changed definition is a new revision; running runs keep theirs).
pub(crate) fn write_flows(tx: &Transaction<'_>, flows: &[CloudFlow], why: &str) -> Result<()> {
    let wanted: BTreeSet<&str> = flows.iter().map(|f| f.name.as_str()).collect();
    for name in cloud_flows(tx)? {
        if !wanted.contains(name.as_str()) && flow_exists(tx, &name)? {
            tx.prepare_cached("DELETE FROM flows WHERE name = ?1")?
                .execute([&name])?;
            tx.prepare_cached("DELETE FROM flow_partials WHERE flow = ?1")?
                .execute([&name])?;
            lifecycle(
                tx,
                &flow_label(&name),
                None,
                &format!("cloud: flow {name} removed ({why})"),
            )?;
        }
    }
    let now = now_ms();
    for f in flows {
        // Its HTTP sources route to it alone (not a mapping's or another flow's path).
        check_http_paths(tx, &f.name, &f.definition)
            .map_err(|e| StoreError::CloudConflict(format!("flow {}: {e}", f.name)))?;
        let mut def = f.definition.clone();
        def.name = None;
        let text = serde_json::to_string(&def).expect("definitions serialize");
        let old: Option<(String, bool)> = tx
            .prepare_cached("SELECT definition, enabled FROM flows WHERE name = ?1")?
            .query_row([&f.name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let what = match old {
            None => {
                tx.prepare_cached(
                    "INSERT INTO flows (name, definition, enabled, revision, created_ms, updated_ms)
                     VALUES (?1, ?2, ?3, 1, ?4, ?4)",
                )?
                .execute(params![f.name, text, f.enabled, now])?;
                "created"
            }
            Some((d, e)) if serde_json::from_str::<FlowDef>(&d).ok().as_ref() == Some(&def) => {
                if e == f.enabled {
                    continue;
                }
                tx.prepare_cached(
                    "UPDATE flows SET enabled = ?2, updated_ms = ?3 WHERE name = ?1",
                )?
                .execute(params![f.name, f.enabled, now])?;
                if f.enabled {
                    "enabled"
                } else {
                    "disabled"
                }
            }
            Some(_) => {
                tx.prepare_cached(
                    "UPDATE flows SET definition = ?2, enabled = ?3, revision = revision + 1,
                            updated_ms = ?4
                      WHERE name = ?1",
                )?
                .execute(params![f.name, text, f.enabled, now])?;
                "updated"
            }
        };
        lifecycle(
            tx,
            &flow_label(&f.name),
            None,
            &format!(
                "cloud: flow {} {what} (deployment {}, {why})",
                f.name, f.deployment
            ),
        )?;
    }
    let names: Vec<&str> = wanted.into_iter().collect();
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?
    .execute(params![
        CLOUD_FLOWS_KEY,
        serde_json::to_string(&names).expect("names serialize")
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::store::cloud::CloudState;
    use crate::store::test_support::temp_store;
    use crate::store::Origin;

    fn def() -> FlowDef {
        FlowDef::parse("[[steps]]\nname = \"a\"\nfunction = \"f\"\n").unwrap()
    }

    fn state(sequence: u64, flows: &[(&str, bool)]) -> CloudState {
        CloudState {
            sequence,
            key_id: "k-1".into(),
            flows: flows
                .iter()
                .map(|(name, enabled)| CloudFlow {
                    name: name.to_string(),
                    enabled: *enabled,
                    definition: def(),
                    deployment: "dep-1".into(),
                })
                .collect(),
            ..CloudState::default()
        }
    }

    #[test]
    fn local_and_cloud_flows_never_share_a_name() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        store.create_flow("mine", &def()).unwrap();
        let none = HashMap::new();
        // A state naming a local flow is refused, and writes nothing.
        let e = store
            .cloud_activate(
                &state(1, &[("mine", true), ("theirs", true)]),
                &none,
                &|| {},
            )
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::CloudConflict(m) if m.contains("flow mine exists on this device as a local flow")),
            "{e}"
        );
        assert!(store.get_flow("theirs").is_err());
        // A cloud flow: created, guarded from the local API, disabled, then removed.
        store
            .cloud_activate(&state(2, &[("theirs", true)]), &none, &|| {})
            .unwrap();
        assert_eq!(store.get_flow("theirs").unwrap().revision, 1);
        for e in [
            store.delete_flow("theirs").unwrap_err(),
            store.set_flow_enabled("theirs", false).unwrap_err(),
            store.update_flow("theirs", &def()).unwrap_err(),
        ] {
            assert!(
                matches!(&e, StoreError::CloudManaged(m) if m == "flow theirs"),
                "{e}"
            );
        }
        store.set_flow_enabled("mine", false).unwrap();
        store
            .cloud_activate(&state(3, &[("theirs", false)]), &none, &|| {})
            .unwrap();
        assert!(!store.get_flow("theirs").unwrap().enabled);
        store.cloud_activate(&state(4, &[]), &none, &|| {}).unwrap();
        assert!(matches!(
            store.get_flow("theirs"),
            Err(StoreError::UnknownFlow(_))
        ));
        // The name is free for a local flow again; the local one was never touched.
        store.create_flow("theirs", &def()).unwrap();
        store.delete_flow("theirs").unwrap();
        assert!(!store.get_flow("mine").unwrap().enabled);
    }
}
