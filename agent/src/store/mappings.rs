//! Event-source mappings: which source (MQTT filter, cron schedule, fixed interval, HTTP path)
//! feeds which function qualifier, with delivery settings (enabled, retries, destinations).
//! See docs/triggers.md for what the trigger runtime does with them.
//!
//! - A mapping's id is `m-` + a ULID; its name (unique, default = the id) may be used wherever
//!   an id is, so names that look like ids (`m-...`) are reserved for the mapping's own id.
//! - Everything is validated here, so the admin API, the CLI and cloud sync give the same errors:
//!   MQTT filters, QoS, shared-subscription group names, cron expressions ([`parse_cron`]),
//!   intervals, HTTP paths (unique among HTTP mappings), destinations ([`Destination::parse`]),
//!   and the mapped function, which must exist when the mapping is created or pointed at it.
//!   Its qualifier is only checked for syntax: an alias may come and go, and a mapping whose
//!   qualifier does not resolve fails delivery like any other refused event.
//! - Deleting a function does not delete its mappings: they stay (listed, editable), and their
//!   events fail delivery (a dead letter, or the on-failure destination) until a function of
//!   that name exists again or the mapping is changed or deleted.
//! - Deleting a mapping deletes the events queued for it (a paused mapping's backlog).
//! - A mapping may target a flow instead: `function = "flow:NAME"` ([`FLOW_TARGET`]; the flow
//!   must exist, the qualifier is unused); each event then starts a run (docs/flows.md).
//! - Every change writes an info log line for the mapping's function (like lifecycle changes) and
//!   bumps the `mappings.revision` counter ([`Store::mappings_revision`]) in the same
//!   transaction, so the trigger runtime can poll one small row to see that something changed.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Deserializer, Serialize};

use super::db::{next_ulid, now_ms, Store};
use super::error::{Result, StoreError};
use super::functions::ensure_exists;
use super::logs::lifecycle;
use super::names::validate_function_name;
use super::qualifier::Qualifier;
use super::queue;
use edgefn_cloud::protocol::mapping::{check_mapping_name, check_retries};
/// The rules of a mapping on its own (sources of every kind, cron, destinations, names, retries)
/// are shared with the cloud's registry (`protocol::mapping`), so both refuse the same mappings
/// with the same words.
pub use edgefn_cloud::protocol::mapping::{
    parse_cron, Batching, Destination, FileFormat, Missed, PartitionKey, Source,
    DEFAULT_BATCH_SIZE, FLOW_TARGET, MAPPING_ID_PREFIX, MAX_BATCH_SIZE, MAX_BATCH_WINDOW_MS,
    MAX_HTTP_PATH_LEN, MAX_RETRIES, MIN_INTERVAL_MS,
};

/// The mapped function, or flow (`flow:NAME`), must exist.
fn ensure_target(tx: &Transaction<'_>, target: &str) -> Result<()> {
    match target.strip_prefix(FLOW_TARGET) {
        Some(flow) if !super::flows::flow_exists(tx, flow)? => {
            Err(StoreError::UnknownFlow(flow.to_string()))
        }
        Some(_) => Ok(()),
        None => ensure_exists(tx, target),
    }
}

/// Key of the mappings revision in `meta`.
const REVISION_KEY: &str = "mappings.revision";

pub(crate) fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidMapping {
        reason: reason.into(),
    }
}

/// A stored mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// `m-` + ULID, assigned at creation.
    pub id: String,
    /// Unique; the id unless given. Schedule events carry it as their subject.
    pub name: String,
    pub function: String,
    /// `latest`, a version number or an alias.
    pub qualifier: String,
    pub source: Source,
    /// `false` while paused.
    pub enabled: bool,
    /// Async retries after the first attempt.
    pub retries: u32,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Mapping {
    /// `NAME:QUALIFIER` of the mapped function.
    pub fn target(&self) -> String {
        if self.function.starts_with(FLOW_TARGET) {
            return self.function.clone();
        }
        format!("{}:{}", self.function, self.qualifier)
    }
}

/// What [`Store::create_mapping`] needs; `None` fields take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMapping {
    pub function: String,
    /// Default `latest`.
    #[serde(default)]
    pub qualifier: Option<String>,
    pub source: Source,
    /// Default: the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Default 2.
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub on_success: Option<Destination>,
    #[serde(default)]
    pub on_failure: Option<Destination>,
    /// Default `true`; `false` creates the mapping paused.
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl NewMapping {
    /// A mapping of `function:latest` from `source` with default settings.
    pub fn new(function: impl Into<String>, source: Source) -> NewMapping {
        NewMapping {
            function: function.into(),
            qualifier: None,
            source,
            name: None,
            retries: None,
            on_success: None,
            on_failure: None,
            enabled: None,
        }
    }
}

/// A partial update ([`Store::update_mapping`]): `None` keeps a field; for the destinations,
/// `Some(None)` removes one. In JSON an absent field is kept and `null` removes a destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub function: Option<String>,
    #[serde(default)]
    pub qualifier: Option<String>,
    /// Replaces the whole source (any kind).
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default, deserialize_with = "some_nullable")]
    pub on_success: Option<Option<Destination>>,
    #[serde(default, deserialize_with = "some_nullable")]
    pub on_failure: Option<Option<Destination>>,
}

impl MappingPatch {
    pub fn is_empty(&self) -> bool {
        *self == MappingPatch::default()
    }
}

/// A present field (even `null`) is `Some(...)`; an absent one is `None` through `default`.
pub(crate) fn some_nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// What [`Store::set_mapping_enabled`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingToggled {
    /// False when the mapping already was in that state (nothing was written).
    pub changed: bool,
    pub mapping: Mapping,
}

const COLUMNS: &str = "id, name, function, qualifier, source, enabled, retries, on_success,
    on_failure, created_ms, updated_ms";

fn mapping_from_row(row: &Row<'_>) -> rusqlite::Result<Mapping> {
    let json = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let dest = |i: usize| -> rusqlite::Result<Option<Destination>> {
        row.get::<_, Option<String>>(i)?
            .map(|t| {
                Destination::parse(&t).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(invalid(e)),
                    )
                })
            })
            .transpose()
    };
    let source: String = row.get(4)?;
    Ok(Mapping {
        id: row.get(0)?,
        name: row.get(1)?,
        function: row.get(2)?,
        qualifier: row.get(3)?,
        source: serde_json::from_str(&source).map_err(|e| json(4, e))?,
        enabled: row.get(5)?,
        retries: row.get(6)?,
        on_success: dest(7)?,
        on_failure: dest(8)?,
        created_ms: row.get(9)?,
        updated_ms: row.get(10)?,
    })
}

/// The mapping with this id or name, if any.
pub(crate) fn find(tx: &Transaction<'_>, id_or_name: &str) -> Result<Option<Mapping>> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE id = ?1 OR name = ?1
              ORDER BY id = ?1 DESC LIMIT 1"
        ))?
        .query_row([id_or_name], mapping_from_row)
        .optional()?)
}

/// The mapping with this id or name, or [`StoreError::UnknownMapping`].
pub(crate) fn get(tx: &Transaction<'_>, id_or_name: &str) -> Result<Mapping> {
    find(tx, id_or_name)?.ok_or_else(|| StoreError::UnknownMapping(id_or_name.to_owned()))
}

/// Fails with [`StoreError::CloudManaged`] for a mapping cloud sync manages.
fn ensure_local_mapping(tx: &Transaction<'_>, m: &Mapping) -> Result<()> {
    let origin: String = tx
        .prepare_cached("SELECT origin FROM mappings WHERE id = ?1")?
        .query_row([&m.id], |r| r.get(0))?;
    if origin == "cloud" {
        return Err(StoreError::CloudManaged(format!(
            "mapping {} ({})",
            m.id, m.name
        )));
    }
    Ok(())
}

pub(crate) fn bump_revision(tx: &Transaction<'_>) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
    )?
    .execute([REVISION_KEY])?;
    Ok(())
}

/// Checks a mapping (new or updated) against the rules and the other mappings.
pub(crate) fn validate(tx: &Transaction<'_>, m: &Mapping) -> Result<()> {
    validate_function_name(m.function.strip_prefix(FLOW_TARGET).unwrap_or(&m.function))?;
    Qualifier::parse(&m.qualifier)?;
    m.source.validate().map_err(invalid)?;
    check_retries(m.retries).map_err(invalid)?;
    if m.name != m.id {
        check_mapping_name(&m.name).map_err(invalid)?;
    }
    let taken: Option<String> = tx
        .prepare_cached("SELECT id FROM mappings WHERE name = ?1 AND id <> ?2")?
        .query_row(params![m.name, m.id], |r| r.get(0))
        .optional()?;
    if let Some(other) = taken {
        return Err(StoreError::MappingExists {
            name: m.name.clone(),
            id: other,
        });
    }
    if let Source::Http { path } = &m.source {
        let taken: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM mappings
                  WHERE source_kind = 'http' AND json_extract(source, '$.path') = ?1 AND id <> ?2",
            )?
            .query_row(params![path, m.id], |r| r.get(0))
            .optional()?;
        if let Some(other) = taken {
            return Err(StoreError::HttpPathTaken {
                path: path.clone(),
                mapping: other,
            });
        }
        if let Some(flow) = super::flows::flow_using_http_path(tx, path, None)? {
            return Err(invalid(format!(
                "HTTP path {path:?} is already taken by the trigger or a wait step of flow {flow}"
            )));
        }
    }
    Ok(())
}

fn source_json(source: &Source) -> String {
    serde_json::to_string(source).expect("a Source always serializes")
}

/// `mapping m-... (name)` for log lines.
fn label(m: &Mapping) -> String {
    if m.name == m.id {
        format!("mapping {}", m.id)
    } else {
        format!("mapping {} ({})", m.id, m.name)
    }
}

/// What changed between two versions of a mapping, for the log line.
fn changes(old: &Mapping, new: &Mapping) -> Vec<String> {
    let dest = |d: &Option<Destination>| d.as_ref().map_or("none".into(), |d| d.to_string());
    let mut out = Vec::new();
    if old.name != new.name {
        out.push(format!("name {}", new.name));
    }
    if old.function != new.function || old.qualifier != new.qualifier {
        out.push(format!("function {}", new.target()));
    }
    if old.source != new.source {
        out.push(format!("source {}", new.source));
    }
    if old.enabled != new.enabled {
        out.push(if new.enabled { "resumed" } else { "paused" }.into());
    }
    if old.retries != new.retries {
        out.push(format!("retries {}", new.retries));
    }
    if old.on_success != new.on_success {
        out.push(format!("on-success {}", dest(&new.on_success)));
    }
    if old.on_failure != new.on_failure {
        out.push(format!("on-failure {}", dest(&new.on_failure)));
    }
    out
}

pub(crate) fn write_row(tx: &Transaction<'_>, m: &Mapping, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO mappings (id, name, function, qualifier, source_kind, source, enabled,
                               retries, on_success, on_failure, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    } else {
        "UPDATE mappings SET name = ?2, function = ?3, qualifier = ?4, source_kind = ?5,
                source = ?6, enabled = ?7, retries = ?8, on_success = ?9, on_failure = ?10,
                created_ms = ?11, updated_ms = ?12
          WHERE id = ?1"
    };
    tx.prepare_cached(sql)?.execute(params![
        m.id,
        m.name,
        m.function,
        m.qualifier,
        m.source.kind(),
        source_json(&m.source),
        m.enabled,
        m.retries,
        m.on_success.as_ref().map(ToString::to_string),
        m.on_failure.as_ref().map(ToString::to_string),
        m.created_ms,
        m.updated_ms,
    ])?;
    Ok(())
}

impl Store {
    /// Creates a mapping. The function must exist; see the module docs for the rules.
    pub fn create_mapping(&self, new: &NewMapping) -> Result<Mapping> {
        let id = format!("{MAPPING_ID_PREFIX}{}", next_ulid());
        let now = now_ms();
        let m = Mapping {
            name: new.name.clone().unwrap_or_else(|| id.clone()),
            id,
            function: new.function.clone(),
            qualifier: new.qualifier.clone().unwrap_or_else(|| "latest".into()),
            source: new.source.clone(),
            enabled: new.enabled.unwrap_or(true),
            retries: new.retries.unwrap_or(2),
            on_success: new.on_success.clone(),
            on_failure: new.on_failure.clone(),
            created_ms: now,
            updated_ms: now,
        };
        self.write(|tx| {
            validate(tx, &m)?;
            ensure_target(tx, &m.function)?;
            write_row(tx, &m, true)?;
            let paused = if m.enabled { "" } else { ", paused" };
            lifecycle(
                tx,
                &m.function,
                None,
                &format!(
                    "{} created: {} -> {}{paused}",
                    label(&m),
                    m.source,
                    m.target()
                ),
            )?;
            bump_revision(tx)?;
            Ok(m)
        })
    }

    /// The mapping with this id or name.
    pub fn get_mapping(&self, id_or_name: &str) -> Result<Mapping> {
        self.read(|tx| get(tx, id_or_name))
    }

    /// All mappings (of one function if given), oldest first.
    pub fn list_mappings(&self, function: Option<&str>) -> Result<Vec<Mapping>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM mappings WHERE ?1 IS NULL OR function = ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([function], mapping_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Changes the fields `patch` gives. Pointing a mapping at another function requires that
    /// function to exist; nothing is written when nothing changes.
    pub fn update_mapping(&self, id_or_name: &str, patch: &MappingPatch) -> Result<Mapping> {
        self.write(|tx| {
            let old = get(tx, id_or_name)?;
            ensure_local_mapping(tx, &old)?;
            let mut m = old.clone();
            if let Some(name) = &patch.name {
                m.name = name.clone();
            }
            if let Some(function) = &patch.function {
                m.function = function.clone();
            }
            if let Some(qualifier) = &patch.qualifier {
                m.qualifier = qualifier.clone();
            }
            if let Some(source) = &patch.source {
                m.source = source.clone();
            }
            if let Some(enabled) = patch.enabled {
                m.enabled = enabled;
            }
            if let Some(retries) = patch.retries {
                m.retries = retries;
            }
            if let Some(d) = &patch.on_success {
                m.on_success = d.clone();
            }
            if let Some(d) = &patch.on_failure {
                m.on_failure = d.clone();
            }
            validate(tx, &m)?;
            if m == old {
                return Ok(m);
            }
            if m.function != old.function {
                ensure_target(tx, &m.function)?;
            }
            m.updated_ms = now_ms().max(old.updated_ms);
            write_row(tx, &m, false)?;
            let mut text = format!("{} updated: {}", label(&m), changes(&old, &m).join(", "));
            if m.function != old.function {
                text.push_str(&format!(" (was {})", old.target()));
                lifecycle(
                    tx,
                    &old.function,
                    None,
                    &format!("{} moved to function {}", label(&m), m.target()),
                )?;
            }
            lifecycle(tx, &m.function, None, &text)?;
            bump_revision(tx)?;
            Ok(m)
        })
    }

    /// Pauses (`false`) or resumes (`true`) a mapping.
    pub fn set_mapping_enabled(&self, id_or_name: &str, enabled: bool) -> Result<MappingToggled> {
        self.write(|tx| {
            let mut m = get(tx, id_or_name)?;
            ensure_local_mapping(tx, &m)?;
            if m.enabled == enabled {
                return Ok(MappingToggled {
                    changed: false,
                    mapping: m,
                });
            }
            m.enabled = enabled;
            m.updated_ms = now_ms().max(m.updated_ms);
            tx.prepare_cached("UPDATE mappings SET enabled = ?2, updated_ms = ?3 WHERE id = ?1")?
                .execute(params![m.id, m.enabled, m.updated_ms])?;
            let what = if enabled {
                let queued = queue::count_target(tx, &queue::mapping_target(&m.id))?;
                format!("resumed ({queued} queued events to deliver)")
            } else {
                "paused".to_owned()
            };
            lifecycle(tx, &m.function, None, &format!("{} {what}", label(&m)))?;
            bump_revision(tx)?;
            Ok(MappingToggled {
                changed: true,
                mapping: m,
            })
        })
    }

    /// Deletes a mapping and the events queued for it; returns what was deleted.
    pub fn delete_mapping(&self, id_or_name: &str) -> Result<Mapping> {
        self.write(|tx| {
            let m = get(tx, id_or_name)?;
            ensure_local_mapping(tx, &m)?;
            tx.prepare_cached("DELETE FROM mappings WHERE id = ?1")?
                .execute([&m.id])?;
            let dropped = queue::delete_target(tx, &queue::mapping_target(&m.id))?
                + super::stream::delete_mapping(tx, &m.id)?;
            let queued = if dropped > 0 {
                format!(" ({dropped} queued events dropped)")
            } else {
                String::new()
            };
            lifecycle(
                tx,
                &m.function,
                None,
                &format!("{} deleted{queued}", label(&m)),
            )?;
            bump_revision(tx)?;
            Ok(m)
        })
    }

    /// Counts changes of mappings (0 before the first one). The trigger runtime polls it to
    /// reload its mappings only when they changed: one primary-key read.
    pub fn mappings_revision(&self) -> Result<u64> {
        self.read(|tx| {
            let value: Option<String> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([REVISION_KEY], |r| r.get(0))
                .optional()?;
            value.map_or(Ok(0), |v| {
                v.parse()
                    .map_err(|_| StoreError::Corrupt(format!("{REVISION_KEY} is {v:?}")))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{lifecycle_texts, temp_store};
    use crate::store::{Origin, QueuedEvent};

    fn mqtt(filter: &str) -> Source {
        Source::Mqtt {
            filter: filter.into(),
            qos: 1,
            shared_group: None,
        }
    }

    fn http(path: &str) -> Source {
        Source::Http { path: path.into() }
    }

    fn store_with(functions: &[&str]) -> (tempfile::TempDir, Store) {
        let (dir, store) = temp_store();
        for f in functions {
            store.create_function(f, b"m", "", Origin::Local).unwrap();
        }
        (dir, store)
    }

    #[track_caller]
    fn invalid_reason(r: Result<Mapping>) -> String {
        match r {
            Err(StoreError::InvalidMapping { reason }) => reason,
            other => panic!("expected InvalidMapping, got {other:?}"),
        }
    }

    #[test]
    fn create_get_list_with_defaults() {
        let (_dir, store) = store_with(&["f", "g"]);
        let m = store
            .create_mapping(&NewMapping::new("f", mqtt("sensors/+/temp")))
            .unwrap();
        assert!(m.id.starts_with("m-") && m.id.len() == 28, "{}", m.id);
        assert_eq!(m.name, m.id);
        assert_eq!(m.qualifier, "latest");
        assert!(m.enabled);
        assert_eq!(m.retries, 2);
        assert_eq!((m.on_success.clone(), m.on_failure.clone()), (None, None));
        assert_eq!(m.created_ms, m.updated_ms);
        assert_eq!(store.get_mapping(&m.id).unwrap(), m);

        let every = store
            .create_mapping(&NewMapping {
                qualifier: Some("prod".into()),
                name: Some("tick".into()),
                retries: Some(0),
                on_success: Some(Destination::parse("topic:out/tick").unwrap()),
                on_failure: Some(Destination::parse("function:g:2").unwrap()),
                enabled: Some(false),
                ..NewMapping::new(
                    "g",
                    Source::Every {
                        interval_ms: 30_000,
                        missed: Missed::RunOnce,
                    },
                )
            })
            .unwrap();
        assert_eq!(store.get_mapping("tick").unwrap(), every);
        assert!(!every.enabled);
        assert_eq!(every.target(), "g:prod");
        assert_eq!(
            store
                .list_mappings(None)
                .unwrap()
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            [m.id.as_str(), every.id.as_str()]
        );
        assert_eq!(
            store.list_mappings(Some("g")).unwrap(),
            std::slice::from_ref(&every)
        );
        assert!(store.list_mappings(Some("zzz")).unwrap().is_empty());
        assert!(matches!(
            store.get_mapping("m-nope"),
            Err(StoreError::UnknownMapping(id)) if id == "m-nope"
        ));
        // One source may feed several functions, and one function may have several sources.
        store
            .create_mapping(&NewMapping::new("g", mqtt("sensors/+/temp")))
            .unwrap();
        store
            .create_mapping(&NewMapping::new("f", http("/f")))
            .unwrap();
        assert_eq!(store.list_mappings(Some("f")).unwrap().len(), 2);
        assert_eq!(store.list_mappings(Some("g")).unwrap().len(), 2);
    }

    #[test]
    fn every_validation_error_is_clear() {
        let (_dir, store) = store_with(&["f"]);
        let create = |source: Source| store.create_mapping(&NewMapping::new("f", source));
        let cases: Vec<(Source, &str)> = vec![
            (mqtt("a/#/b"), "bad MQTT topic filter \"a/#/b\""),
            (mqtt("a/b+"), "`+` must be a whole level"),
            (mqtt(""), "empty topic filter"),
            (mqtt("$share/g/a"), "without `$share/GROUP/`"),
            (
                Source::Mqtt {
                    filter: "a".into(),
                    qos: 3,
                    shared_group: None,
                },
                "bad MQTT qos 3",
            ),
            (
                Source::Mqtt {
                    filter: "a".into(),
                    qos: 0,
                    shared_group: Some("g/x".into()),
                },
                "bad shared subscription group \"g/x\"",
            ),
            (
                Source::Mqtt {
                    filter: "a".into(),
                    qos: 0,
                    shared_group: Some(String::new()),
                },
                "empty shared subscription group",
            ),
            (
                Source::Cron {
                    expr: "61 * * * * *".into(),
                    missed: Missed::Skip,
                },
                "bad cron expression \"61 * * * * *\"",
            ),
            (
                Source::Cron {
                    expr: "every day".into(),
                    missed: Missed::Skip,
                },
                "bad cron expression",
            ),
            (
                Source::Cron {
                    expr: "0 0 0 30 2 *".into(),
                    missed: Missed::Skip,
                },
                "never fires",
            ),
            (
                Source::Every {
                    interval_ms: 99,
                    missed: Missed::Skip,
                },
                "interval 99ms is too short: at least 100ms",
            ),
            (http("convert"), "must start with `/`"),
            (http("/a?b=1"), "no query"),
            (http("/a b"), "no spaces"),
        ];
        for (source, needle) in cases {
            let reason = invalid_reason(create(source.clone()));
            assert!(reason.contains(needle), "{source:?}: {reason}");
        }
        // Function, qualifier, name, retries, destinations.
        assert!(matches!(
            store.create_mapping(&NewMapping::new("nope", mqtt("a"))),
            Err(StoreError::UnknownFunction(f)) if f == "nope"
        ));
        assert!(matches!(
            store.create_mapping(&NewMapping::new("bad name", mqtt("a"))),
            Err(StoreError::InvalidName { .. })
        ));
        assert!(matches!(
            store.create_mapping(&NewMapping {
                qualifier: Some("0".into()),
                ..NewMapping::new("f", mqtt("a"))
            }),
            Err(StoreError::InvalidQualifier { .. })
        ));
        let reason = invalid_reason(store.create_mapping(&NewMapping {
            name: Some("a b".into()),
            ..NewMapping::new("f", mqtt("a"))
        }));
        assert!(reason.contains("bad mapping name \"a b\""), "{reason}");
        let reason = invalid_reason(store.create_mapping(&NewMapping {
            name: Some("m-mine".into()),
            ..NewMapping::new("f", mqtt("a"))
        }));
        assert!(reason.contains("reserved"), "{reason}");
        let reason = invalid_reason(store.create_mapping(&NewMapping {
            retries: Some(101),
            ..NewMapping::new("f", mqtt("a"))
        }));
        assert!(reason.contains("at most 100"), "{reason}");
        for (text, needle) in [
            ("topic:a/+", "wildcards"),
            ("topic:", "empty topic"),
            ("function:bad name", "invalid name"),
            ("function:f:0", "invalid qualifier"),
            (
                "queue:x",
                "expected `topic:TOPIC` or `function:NAME[:QUALIFIER]`",
            ),
            ("", "expected `topic:TOPIC`"),
        ] {
            match Destination::parse(text).map_err(invalid) {
                Err(StoreError::InvalidMapping { reason }) => {
                    assert!(
                        reason.contains(&format!("bad destination {text:?}")),
                        "{reason}"
                    );
                    assert!(reason.contains(needle), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(store.list_mappings(None).unwrap().is_empty());
        assert_eq!(store.mappings_revision().unwrap(), 0);
    }

    #[test]
    fn good_sources_are_accepted() {
        let (_dir, store) = store_with(&["f"]);
        for source in [
            mqtt("#"),
            mqtt("+/x/#"),
            Source::Mqtt {
                filter: "a/b".into(),
                qos: 2,
                shared_group: Some("workers".into()),
            },
            Source::Cron {
                expr: "*/10 * * * * *".into(),
                missed: Missed::Skip,
            },
            Source::Cron {
                expr: "0 12 * * MON-FRI".into(), // 5 fields: second 0
                missed: Missed::RunOnce,
            },
            Source::Cron {
                expr: "@hourly".into(),
                missed: Missed::Skip,
            },
            Source::Every {
                interval_ms: 100,
                missed: Missed::Skip,
            },
            http("/"),
            http("/convert/celsius"),
        ] {
            store
                .create_mapping(&NewMapping::new("f", source.clone()))
                .unwrap_or_else(|e| panic!("{source:?}: {e}"));
        }
        assert_eq!(
            store.list_mappings(None).unwrap()[2]
                .source
                .subscription()
                .as_deref(),
            Some("$share/workers/a/b")
        );
    }

    #[test]
    fn names_and_http_paths_are_unique() {
        let (_dir, store) = store_with(&["f", "g"]);
        let a = store
            .create_mapping(&NewMapping {
                name: Some("convert".into()),
                ..NewMapping::new("f", http("/convert"))
            })
            .unwrap();
        match store.create_mapping(&NewMapping::new("g", http("/convert"))) {
            Err(e @ StoreError::HttpPathTaken { .. }) => {
                assert!(e.to_string().contains(&a.id), "{e}");
                assert!(e.to_string().contains("/convert"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        match store.create_mapping(&NewMapping {
            name: Some("convert".into()),
            ..NewMapping::new("g", mqtt("x"))
        }) {
            Err(e @ StoreError::MappingExists { .. }) => {
                assert!(e.to_string().contains("convert"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // A path differing only by a trailing slash is another path; an MQTT filter equal to
        // a path is no conflict.
        store
            .create_mapping(&NewMapping::new("g", http("/convert/")))
            .unwrap();
        store
            .create_mapping(&NewMapping::new("g", mqtt("/convert")))
            .unwrap();
        // Updating a mapping to its own path or name is fine; to another's is not.
        let b = store
            .create_mapping(&NewMapping::new("g", http("/b")))
            .unwrap();
        store
            .update_mapping(
                &a.id,
                &MappingPatch {
                    name: Some("convert".into()),
                    source: Some(http("/convert")),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
        assert!(matches!(
            store.update_mapping(
                &b.id,
                &MappingPatch {
                    source: Some(http("/convert")),
                    ..MappingPatch::default()
                }
            ),
            Err(StoreError::HttpPathTaken { .. })
        ));
        assert!(matches!(
            store.update_mapping(
                &b.id,
                &MappingPatch {
                    name: Some("convert".into()),
                    ..MappingPatch::default()
                }
            ),
            Err(StoreError::MappingExists { .. })
        ));
        // Once the path is free, it can be taken.
        store.delete_mapping("convert").unwrap();
        store
            .update_mapping(
                &b.id,
                &MappingPatch {
                    source: Some(http("/convert")),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
    }

    #[test]
    fn update_is_partial_and_validated() {
        let (_dir, store) = store_with(&["f", "g"]);
        let m = store
            .create_mapping(&NewMapping {
                on_success: Some(Destination::parse("topic:out").unwrap()),
                ..NewMapping::new("f", mqtt("in"))
            })
            .unwrap();
        let rev = store.mappings_revision().unwrap();

        // Nothing changes: nothing written.
        let same = store
            .update_mapping(&m.id, &MappingPatch::default())
            .unwrap();
        assert_eq!(same, m);
        assert_eq!(store.mappings_revision().unwrap(), rev);

        let u = store
            .update_mapping(
                &m.id,
                &MappingPatch {
                    retries: Some(5),
                    source: Some(Source::Cron {
                        expr: "0 * * * * *".into(),
                        missed: Missed::Skip,
                    }),
                    on_failure: Some(Some(Destination::parse("function:g").unwrap())),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
        assert_eq!(u.retries, 5);
        assert_eq!(u.source.kind(), "cron");
        assert_eq!(u.on_success, m.on_success, "kept");
        assert_eq!(u.on_failure.as_ref().unwrap().to_string(), "function:g");
        assert!(u.updated_ms >= m.updated_ms);
        assert_eq!(u.created_ms, m.created_ms);
        assert_eq!(store.get_mapping(&m.id).unwrap(), u);
        assert_eq!(store.mappings_revision().unwrap(), rev + 1);

        // Remove a destination, rename, point at another function.
        let u = store
            .update_mapping(
                &m.id,
                &MappingPatch {
                    on_success: Some(None),
                    name: Some("hourly".into()),
                    function: Some("g".into()),
                    qualifier: Some("3".into()),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
        assert_eq!(u.on_success, None);
        assert_eq!(store.get_mapping("hourly").unwrap().target(), "g:3");

        // Errors leave the mapping as it was.
        assert!(matches!(
            store.update_mapping(
                "hourly",
                &MappingPatch {
                    function: Some("nope".into()),
                    ..MappingPatch::default()
                }
            ),
            Err(StoreError::UnknownFunction(_))
        ));
        invalid_reason(store.update_mapping(
            "hourly",
            &MappingPatch {
                source: Some(Source::Every {
                    interval_ms: 10,
                    missed: Missed::Skip,
                }),
                ..MappingPatch::default()
            },
        ));
        assert!(matches!(
            store.update_mapping("m-none", &MappingPatch::default()),
            Err(StoreError::UnknownMapping(_))
        ));
        assert_eq!(store.get_mapping("hourly").unwrap(), u);
        // The name can go back to the id.
        let back = store
            .update_mapping(
                "hourly",
                &MappingPatch {
                    name: Some(m.id.clone()),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
        assert_eq!(back.name, back.id);
    }

    #[test]
    fn pause_resume_delete_and_revision() {
        let (_dir, store) = store_with(&["f"]);
        assert_eq!(store.mappings_revision().unwrap(), 0);
        let m = store
            .create_mapping(&NewMapping::new("f", mqtt("in")))
            .unwrap();
        assert_eq!(store.mappings_revision().unwrap(), 1);

        let t = store.set_mapping_enabled(&m.id, false).unwrap();
        assert!(t.changed && !t.mapping.enabled);
        assert!(!store.get_mapping(&m.id).unwrap().enabled);
        assert_eq!(store.mappings_revision().unwrap(), 2);
        // Idempotent: no change, no revision bump.
        assert!(!store.set_mapping_enabled(&m.id, false).unwrap().changed);
        assert_eq!(store.mappings_revision().unwrap(), 2);

        // Events queued while paused survive resume, and go with the mapping on delete.
        let target = queue::mapping_target(&m.id);
        store
            .enqueue(
                &target,
                &QueuedEvent::new("e1", "mqtt", "in", b"x".to_vec()),
            )
            .unwrap();
        let t = store.set_mapping_enabled(&m.id, true).unwrap();
        assert!(t.changed && t.mapping.enabled);
        assert_eq!(store.queue_count().unwrap(), 1);
        assert_eq!(store.mappings_revision().unwrap(), 3);

        let deleted = store.delete_mapping(&m.id).unwrap();
        assert_eq!(deleted.id, m.id);
        assert_eq!(store.queue_count().unwrap(), 0);
        assert_eq!(store.mappings_revision().unwrap(), 4);
        assert!(matches!(
            store.delete_mapping(&m.id),
            Err(StoreError::UnknownMapping(_))
        ));
        assert!(matches!(
            store.set_mapping_enabled(&m.id, true),
            Err(StoreError::UnknownMapping(_))
        ));

        let texts = lifecycle_texts(&store, "f");
        let about: Vec<&String> = texts.iter().filter(|t| t.contains(&m.id)).collect();
        assert_eq!(about.len(), 4, "{texts:?}");
        assert!(about[0].ends_with("created: mqtt in (qos 1) -> f:latest"));
        assert!(about[1].ends_with("paused"));
        assert!(about[2].contains("resumed (1 queued events to deliver)"));
        assert!(about[3].contains("deleted (1 queued events dropped)"));
    }

    #[test]
    fn changes_are_logged_for_the_function() {
        let (_dir, store) = store_with(&["f", "g"]);
        let m = store
            .create_mapping(&NewMapping {
                name: Some("temps".into()),
                ..NewMapping::new("f", mqtt("t/#"))
            })
            .unwrap();
        store
            .update_mapping(
                "temps",
                &MappingPatch {
                    function: Some("g".into()),
                    retries: Some(0),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
        let f = lifecycle_texts(&store, "f");
        let g = lifecycle_texts(&store, "g");
        assert_eq!(
            f.last().unwrap(),
            &format!("mapping {} (temps) moved to function g:latest", m.id)
        );
        assert_eq!(
            g.last().unwrap(),
            &format!(
                "mapping {} (temps) updated: function g:latest, retries 0 (was f:latest)",
                m.id
            )
        );
    }

    #[test]
    fn mappings_outlive_their_function() {
        let (_dir, store) = store_with(&["f"]);
        let m = store
            .create_mapping(&NewMapping::new("f", mqtt("in")))
            .unwrap();
        store.delete_function("f").unwrap();
        assert_eq!(store.get_mapping(&m.id).unwrap(), m);
        // Still editable (fields other than the function), pausable and deletable.
        store
            .update_mapping(
                &m.id,
                &MappingPatch {
                    retries: Some(1),
                    ..MappingPatch::default()
                },
            )
            .unwrap();
        store.set_mapping_enabled(&m.id, false).unwrap();
        store.delete_mapping(&m.id).unwrap();
    }

    #[test]
    fn json_shapes() {
        let (_dir, store) = store_with(&["f"]);
        let m = store
            .create_mapping(&NewMapping {
                on_success: Some(Destination::parse("function:f:prod").unwrap()),
                ..NewMapping::new(
                    "f",
                    Source::Every {
                        interval_ms: 1000,
                        missed: Missed::RunOnce,
                    },
                )
            })
            .unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v["source"],
            serde_json::json!({"kind": "every", "interval_ms": 1000, "missed": "run-once"})
        );
        assert_eq!(v["on_success"], "function:f:prod");
        assert_eq!(v["on_failure"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Mapping>(v).unwrap(), m);

        // Defaults and refusals of the source JSON.
        let s: Source = serde_json::from_str(r#"{"kind":"mqtt","filter":"a"}"#).unwrap();
        assert_eq!(s, mqtt("a"));
        let s: Source = serde_json::from_str(r#"{"kind":"cron","expr":"* * * * * *"}"#).unwrap();
        assert_eq!(s.missed(), Some(Missed::Skip));
        for bad in [
            r#"{"kind":"smtp","filter":"a"}"#,
            r#"{"filter":"a"}"#,
            r#"{"kind":"mqtt","filter":"a","extra":1}"#,
            r#"{"kind":"every","interval_ms":"5s"}"#,
            r#"{"kind":"cron","expr":"* * * * * *","missed":"later"}"#,
        ] {
            assert!(serde_json::from_str::<Source>(bad).is_err(), "{bad}");
        }
        // Patch: absent keeps, null removes.
        let p: MappingPatch = serde_json::from_str(r#"{"on_failure": null}"#).unwrap();
        assert_eq!((p.on_success, p.on_failure), (None, Some(None)));
        let p: MappingPatch =
            serde_json::from_str(r#"{"on_success": "topic:a", "retries": 1}"#).unwrap();
        assert_eq!(p.on_success, Some(Some(Destination::Topic("a".into()))));
        assert!(serde_json::from_str::<MappingPatch>(r#"{"on_success": "nowhere"}"#).is_err());
        assert!(serde_json::from_str::<MappingPatch>(r#"{"colour": 1}"#).is_err());
    }

    #[test]
    fn destinations_round_trip_through_text() {
        for (text, canonical) in [
            ("topic:a/b", "topic:a/b"),
            ("function:f", "function:f"),
            ("function:f:latest", "function:f"),
            ("function:f:3", "function:f:3"),
            ("function:f:prod", "function:f:prod"),
        ] {
            let d = Destination::parse(text).unwrap();
            assert_eq!(d.to_string(), canonical);
            assert_eq!(Destination::parse(canonical).unwrap(), d);
        }
        assert_eq!(
            Destination::parse("function:f").unwrap(),
            Destination::Function {
                name: "f".into(),
                qualifier: "latest".into()
            }
        );
    }

    #[test]
    fn display_of_sources() {
        assert_eq!(mqtt("a/+").to_string(), "mqtt a/+ (qos 1)");
        assert_eq!(
            Source::Mqtt {
                filter: "a".into(),
                qos: 0,
                shared_group: Some("g".into())
            }
            .to_string(),
            "mqtt a (qos 0, shared group g)"
        );
        assert_eq!(
            Source::Every {
                interval_ms: 90_000,
                missed: Missed::RunOnce
            }
            .to_string(),
            "every 1m 30s (missed: run-once)"
        );
        assert_eq!(http("/x").to_string(), "http /x");
    }
}
