//! Functions: create, update `latest`, enable/disable, get, list, delete.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::alias::{self, AliasInfo};
use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::kv::KvUsage;
use super::logs::lifecycle;
use super::modules;
use super::names::validate_function_name;
use super::records::ParseEnumError;
use super::versions::{self, VersionInfo};

/// Who manages a function: created on this device, or delivered by cloud sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Local,
    Cloud,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Cloud => "cloud",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Origin {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Origin::Local),
            "cloud" => Ok(Origin::Cloud),
            _ => Err(ParseEnumError::new("origin", s)),
        }
    }
}

impl ToSql for Origin {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Origin {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// One line of `function list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSummary {
    pub name: String,
    /// A disabled function refuses invocations (the daemon checks this).
    pub enabled: bool,
    pub origin: Origin,
    pub created_ms: i64,
    /// Last change of latest, the versions, aliases or the enabled flag.
    pub updated_ms: i64,
    pub latest_sha256: String,
    pub latest_size: u64,
    /// Counts changes of latest (starts at 1), so caches of `latest` can tell they are stale.
    pub latest_revision: u64,
    /// Number of versions that currently exist.
    pub versions: u32,
    /// Number of aliases.
    pub aliases: u32,
    /// Highest version number ever published (`None` before the first publish). The next
    /// publish gets `last_version + 1` even if that version was deleted.
    pub last_version: Option<u32>,
}

/// Everything `function get` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDetail {
    #[serde(flatten)]
    pub summary: FunctionSummary,
    /// The spec of latest, as given (TOML; opaque to the store).
    pub latest_spec: String,
    /// Oldest first.
    pub versions: Vec<VersionInfo>,
    /// By name.
    pub aliases: Vec<AliasInfo>,
    pub kv: KvUsage,
}

/// What [`Store::update_function`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    /// False when the new module and spec equal the old ones (nothing was written).
    pub changed: bool,
    pub function: FunctionSummary,
}

/// What [`Store::delete_function`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedFunction {
    pub versions: u32,
    pub aliases: u32,
    pub kv_entries: u64,
}

const SUMMARY_COLUMNS: &str = "f.name, f.enabled, f.origin, f.created_ms, f.updated_ms,
    f.latest_sha256, m.size, f.latest_revision,
    (SELECT count(*) FROM versions v WHERE v.function = f.name), f.last_version,
    (SELECT count(*) FROM aliases a WHERE a.function = f.name)";

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<FunctionSummary> {
    let last_version: u32 = row.get(9)?;
    Ok(FunctionSummary {
        name: row.get(0)?,
        enabled: row.get(1)?,
        origin: row.get(2)?,
        created_ms: row.get(3)?,
        updated_ms: row.get(4)?,
        latest_sha256: row.get(5)?,
        latest_size: row.get(6)?,
        latest_revision: row.get(7)?,
        versions: row.get(8)?,
        aliases: row.get(10)?,
        last_version: (last_version > 0).then_some(last_version),
    })
}

/// The summary of `name`, or [`StoreError::UnknownFunction`].
pub(crate) fn summary(tx: &Transaction<'_>, name: &str) -> Result<FunctionSummary> {
    tx.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM functions f JOIN modules m ON m.sha256 = f.latest_sha256
         WHERE f.name = ?1"
    ))?
    .query_row([name], summary_from_row)
    .optional()?
    .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))
}

/// Fails with [`StoreError::UnknownFunction`] unless `name` exists.
pub(crate) fn ensure_exists(tx: &Transaction<'_>, name: &str) -> Result<()> {
    if exists(tx, name)? {
        Ok(())
    } else {
        Err(StoreError::UnknownFunction(name.to_owned()))
    }
}

pub(crate) fn exists(tx: &Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM functions WHERE name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fails with [`StoreError::CloudManaged`] if `name` is managed by cloud sync: the local API
/// never changes what the cloud manages (the next desired state would silently undo it).
pub(crate) fn ensure_local(tx: &Transaction<'_>, name: &str) -> Result<()> {
    let origin: Option<Origin> = tx
        .prepare_cached("SELECT origin FROM functions WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if origin == Some(Origin::Cloud) {
        return Err(StoreError::CloudManaged(format!("function {name:?}")));
    }
    Ok(())
}

/// Marks the function as changed now.
pub(crate) fn touch(tx: &Transaction<'_>, name: &str) -> Result<()> {
    tx.prepare_cached("UPDATE functions SET updated_ms = ?2 WHERE name = ?1")?
        .execute(params![name, now_ms()])?;
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

impl Store {
    /// Creates a function with its `latest` module and spec. The spec is stored as given.
    pub fn create_function(
        &self,
        name: &str,
        module: &[u8],
        spec: &str,
        origin: Origin,
    ) -> Result<FunctionSummary> {
        validate_function_name(name)?;
        self.write(|tx| {
            if exists(tx, name)? {
                return Err(StoreError::FunctionExists(name.to_owned()));
            }
            let sha = modules::put(tx, module)?;
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO functions (name, enabled, origin, created_ms, updated_ms,
                                        latest_sha256, latest_spec, latest_revision)
                 VALUES (?1, 1, ?2, ?3, ?3, ?4, ?5, 1)",
            )?
            .execute(params![name, origin, now, sha, spec])?;
            lifecycle(
                tx,
                name,
                None,
                &format!(
                    "function created ({origin}, module {}, {} bytes)",
                    short(&sha),
                    module.len()
                ),
            )?;
            summary(tx, name)
        })
    }

    /// Replaces the module and/or the spec of `latest` (`None` keeps the current one). Published
    /// versions are not affected.
    pub fn update_function(
        &self,
        name: &str,
        module: Option<&[u8]>,
        spec: Option<&str>,
    ) -> Result<Updated> {
        self.write(|tx| {
            super::functions::ensure_local(tx, name)?;
            let (old_sha, old_spec): (String, String) = tx
                .prepare_cached("SELECT latest_sha256, latest_spec FROM functions WHERE name = ?1")?
                .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))?;
            let new_sha = match module {
                Some(bytes) => modules::put(tx, bytes)?,
                None => old_sha.clone(),
            };
            let new_spec = spec.unwrap_or(&old_spec);
            let module_changed = new_sha != old_sha;
            let spec_changed = new_spec != old_spec;
            if !module_changed && !spec_changed {
                return Ok(Updated {
                    changed: false,
                    function: summary(tx, name)?,
                });
            }
            tx.prepare_cached(
                "UPDATE functions SET latest_sha256 = ?2, latest_spec = ?3,
                        latest_revision = latest_revision + 1, updated_ms = ?4
                  WHERE name = ?1",
            )?
            .execute(params![name, new_sha, new_spec, now_ms()])?;
            if module_changed {
                modules::collect_if_unused(tx, &old_sha)?;
            }
            let what = match (module_changed, spec_changed) {
                (true, true) => format!("module {} and spec", short(&new_sha)),
                (true, false) => format!("module {}", short(&new_sha)),
                _ => "spec".to_owned(),
            };
            lifecycle(tx, name, None, &format!("latest updated: {what}"))?;
            Ok(Updated {
                changed: true,
                function: summary(tx, name)?,
            })
        })
    }

    /// Enables or disables a function. Returns whether the flag changed.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool> {
        self.write(|tx| {
            super::functions::ensure_local(tx, name)?;
            let current: bool = tx
                .prepare_cached("SELECT enabled FROM functions WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))?;
            if current == enabled {
                return Ok(false);
            }
            tx.prepare_cached(
                "UPDATE functions SET enabled = ?2, updated_ms = ?3 WHERE name = ?1",
            )?
            .execute(params![name, enabled, now_ms()])?;
            let text = if enabled {
                "function enabled"
            } else {
                "function disabled"
            };
            lifecycle(tx, name, None, text)?;
            Ok(true)
        })
    }

    /// A function with its versions, aliases and kv usage.
    pub fn get_function(&self, name: &str) -> Result<FunctionDetail> {
        self.read(|tx| {
            let summary = summary(tx, name)?;
            let latest_spec: String = tx
                .prepare_cached("SELECT latest_spec FROM functions WHERE name = ?1")?
                .query_row([name], |r| r.get(0))?;
            let kv = super::kv::usage(tx, name)?;
            Ok(FunctionDetail {
                summary,
                latest_spec,
                versions: versions::list(tx, name)?,
                aliases: alias::list(tx, name)?,
                kv,
            })
        })
    }

    /// All functions, by name.
    pub fn list_functions(&self) -> Result<Vec<FunctionSummary>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM functions f
                   JOIN modules m ON m.sha256 = f.latest_sha256
                  ORDER BY f.name"
            ))?;
            let rows = stmt.query_map([], summary_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Deletes a function with its versions, aliases and kv entries, and the modules nothing
    /// else uses. Its invocation and log records stay until retention drops them.
    pub fn delete_function(&self, name: &str) -> Result<DeletedFunction> {
        self.write(|tx| {
            super::functions::ensure_local(tx, name)?;
            let latest_sha: String = tx
                .prepare_cached("SELECT latest_sha256 FROM functions WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))?;
            let mut shas: Vec<String> = tx
                .prepare_cached("SELECT DISTINCT sha256 FROM versions WHERE function = ?1")?
                .query_map([name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            shas.push(latest_sha);
            let kv_entries = tx
                .prepare_cached("DELETE FROM kv WHERE function = ?1")?
                .execute([name])? as u64;
            let aliases = tx
                .prepare_cached("DELETE FROM aliases WHERE function = ?1")?
                .execute([name])? as u32;
            let versions = tx
                .prepare_cached("DELETE FROM versions WHERE function = ?1")?
                .execute([name])? as u32;
            tx.prepare_cached("DELETE FROM functions WHERE name = ?1")?
                .execute([name])?;
            for sha in shas {
                modules::collect_if_unused(tx, &sha)?;
            }
            lifecycle(
                tx,
                name,
                None,
                &format!(
                    "function deleted ({versions} versions, {aliases} aliases, {kv_entries} kv entries)"
                ),
            )?;
            Ok(DeletedFunction {
                versions,
                aliases,
                kv_entries,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{lifecycle_texts, temp_store};
    use crate::store::{AliasTarget, KvWrite};

    #[test]
    fn create_get_list() {
        let (_dir, store) = temp_store();
        let created = store
            .create_function("thermo", b"wasm-1", "[limits]\nfuel = 10\n", Origin::Local)
            .unwrap();
        assert_eq!(created.name, "thermo");
        assert!(created.enabled);
        assert_eq!(created.origin, Origin::Local);
        assert_eq!(created.latest_size, 6);
        assert_eq!(created.latest_sha256, modules::sha256_hex(b"wasm-1"));
        assert_eq!(created.latest_revision, 1);
        assert_eq!((created.versions, created.aliases), (0, 0));
        assert_eq!(created.last_version, None);

        store
            .create_function("alpha", b"x", "", Origin::Cloud)
            .unwrap();
        let list = store.list_functions().unwrap();
        assert_eq!(
            list.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["alpha", "thermo"]
        );
        assert_eq!(list[0].origin, Origin::Cloud);

        let detail = store.get_function("thermo").unwrap();
        assert_eq!(detail.summary, created);
        assert_eq!(detail.latest_spec, "[limits]\nfuel = 10\n");
        assert!(detail.versions.is_empty() && detail.aliases.is_empty());
        assert_eq!(detail.kv, KvUsage::default());
        assert_eq!(lifecycle_texts(&store, "thermo").len(), 1);
    }

    #[test]
    fn create_errors() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        assert!(matches!(
            store.create_function("f", b"m2", "", Origin::Local),
            Err(StoreError::FunctionExists(n)) if n == "f"
        ));
        assert!(matches!(
            store.create_function("bad name", b"m", "", Origin::Local),
            Err(StoreError::InvalidName { .. })
        ));
        assert!(matches!(
            store.get_function("nope"),
            Err(StoreError::UnknownFunction(n)) if n == "nope"
        ));
    }

    #[test]
    fn update_changes_latest_only_when_different() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "s1", Origin::Local)
            .unwrap();
        let same = store.update_function("f", Some(b"m1"), Some("s1")).unwrap();
        assert!(!same.changed);
        assert_eq!(same.function.latest_revision, 1);

        let spec_only = store.update_function("f", None, Some("s2")).unwrap();
        assert!(spec_only.changed);
        assert_eq!(spec_only.function.latest_revision, 2);
        assert_eq!(spec_only.function.latest_sha256, modules::sha256_hex(b"m1"));

        let module_only = store.update_function("f", Some(b"m2"), None).unwrap();
        assert_eq!(module_only.function.latest_revision, 3);
        assert_eq!(store.get_function("f").unwrap().latest_spec, "s2");
        assert_eq!(store.module_count().unwrap(), 1); // m1 was collected

        assert!(matches!(
            store.update_function("nope", None, Some("x")),
            Err(StoreError::UnknownFunction(_))
        ));
        let texts = lifecycle_texts(&store, "f");
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[1].contains("updated: spec"));
        assert!(texts[2].contains("updated: module"));
    }

    #[test]
    fn enable_disable() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        assert!(!store.set_enabled("f", true).unwrap());
        assert!(store.set_enabled("f", false).unwrap());
        assert!(!store.get_function("f").unwrap().summary.enabled);
        assert!(!store.set_enabled("f", false).unwrap());
        assert!(store.set_enabled("f", true).unwrap());
        assert!(store.list_functions().unwrap()[0].enabled);
        assert!(matches!(
            store.set_enabled("nope", true),
            Err(StoreError::UnknownFunction(_))
        ));
        let texts = lifecycle_texts(&store, "f");
        assert_eq!(&texts[1..], ["function disabled", "function enabled"]);
    }

    #[test]
    fn delete_removes_everything_but_records() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "", Origin::Local)
            .unwrap();
        store.publish("f", "one").unwrap();
        store.update_function("f", Some(b"m2"), None).unwrap();
        store.publish("f", "two").unwrap();
        store
            .set_alias("f", "prod", &AliasTarget::single(1))
            .unwrap();
        store
            .apply_kv_writes(
                "f",
                &[KvWrite::set(*b"k", *b"v"), KvWrite::set(*b"k2", *b"v")],
            )
            .unwrap();
        let deleted = store.delete_function("f").unwrap();
        assert_eq!(
            deleted,
            DeletedFunction {
                versions: 2,
                aliases: 1,
                kv_entries: 2
            }
        );
        assert!(matches!(
            store.get_function("f"),
            Err(StoreError::UnknownFunction(_))
        ));
        assert!(matches!(
            store.kv_get("f", b"k"),
            Err(StoreError::UnknownFunction(_))
        ));
        assert_eq!(store.module_count().unwrap(), 0);
        // Its log lines remain (they age out by retention), including the deletion itself.
        let texts = lifecycle_texts(&store, "f");
        assert!(
            texts.last().unwrap().starts_with("function deleted"),
            "{texts:?}"
        );
        assert!(matches!(
            store.delete_function("f"),
            Err(StoreError::UnknownFunction(_))
        ));

        // The name can be reused; the new function starts from scratch.
        let again = store
            .create_function("f", b"m3", "", Origin::Local)
            .unwrap();
        assert_eq!((again.versions, again.last_version), (0, None));
        assert_eq!(store.kv_usage("f").unwrap(), KvUsage::default());
    }
}
