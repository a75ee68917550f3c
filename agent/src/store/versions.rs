//! Published versions: immutable snapshots of `latest`, numbered 1, 2, 3, ... per function.
//! A number is never handed out twice, even after its version was deleted.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::functions::{ensure_exists, touch};
use super::logs::lifecycle;
use super::modules;

/// A published version (without its module bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub function: String,
    pub version: u32,
    pub sha256: String,
    pub size: u64,
    /// The spec at publish time, as given.
    pub spec: String,
    pub description: String,
    pub created_ms: i64,
}

/// What [`Store::publish`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub version: u32,
    /// False when latest was identical to the newest version, which is returned instead of a
    /// duplicate.
    pub created: bool,
}

const COLUMNS: &str =
    "v.function, v.version, v.sha256, m.size, v.spec, v.description, v.created_ms";

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<VersionInfo> {
    Ok(VersionInfo {
        function: row.get(0)?,
        version: row.get(1)?,
        sha256: row.get(2)?,
        size: row.get(3)?,
        spec: row.get(4)?,
        description: row.get(5)?,
        created_ms: row.get(6)?,
    })
}

/// All versions of `function`, oldest first (empty for an unknown function).
pub(crate) fn list(tx: &Transaction<'_>, function: &str) -> Result<Vec<VersionInfo>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM versions v JOIN modules m ON m.sha256 = v.sha256
          WHERE v.function = ?1 ORDER BY v.version"
    ))?;
    let rows = stmt.query_map([function], version_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One version, or [`StoreError::UnknownFunction`] / [`StoreError::UnknownVersion`].
pub(crate) fn get(tx: &Transaction<'_>, function: &str, version: u32) -> Result<VersionInfo> {
    let found = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM versions v JOIN modules m ON m.sha256 = v.sha256
              WHERE v.function = ?1 AND v.version = ?2"
        ))?
        .query_row(params![function, version], version_from_row)
        .optional()?;
    match found {
        Some(v) => Ok(v),
        None => {
            ensure_exists(tx, function)?;
            Err(StoreError::UnknownVersion {
                function: function.to_owned(),
                version,
            })
        }
    }
}

impl Store {
    /// Publishes `latest` as a new immutable version numbered one above the highest number ever
    /// used. If latest (module and spec) equals the newest existing version, returns that version
    /// with `created: false` instead of making a duplicate.
    pub fn publish(&self, function: &str, description: &str) -> Result<Published> {
        self.write(|tx| {
            super::functions::ensure_local(tx, function)?;
            let (sha, spec, last): (String, String, u32) = tx
                .prepare_cached(
                    "SELECT latest_sha256, latest_spec, last_version FROM functions WHERE name = ?1",
                )?
                .query_row([function], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
                .ok_or_else(|| StoreError::UnknownFunction(function.to_owned()))?;
            let newest: Option<(u32, String, String)> = tx
                .prepare_cached(
                    "SELECT version, sha256, spec FROM versions WHERE function = ?1
                      ORDER BY version DESC LIMIT 1",
                )?
                .query_row([function], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((version, newest_sha, newest_spec)) = newest {
                if newest_sha == sha && newest_spec == spec {
                    return Ok(Published {
                        version,
                        created: false,
                    });
                }
            }
            let version = last.checked_add(1).ok_or_else(|| {
                StoreError::Corrupt(format!("{function}: version numbers exhausted"))
            })?;
            tx.prepare_cached(
                "INSERT INTO versions (function, version, sha256, spec, description, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![function, version, sha, spec, description, now_ms()])?;
            tx.prepare_cached("UPDATE functions SET last_version = ?2 WHERE name = ?1")?
                .execute(params![function, version])?;
            touch(tx, function)?;
            let text = if description.is_empty() {
                format!("published version {version}")
            } else {
                format!("published version {version}: {description}")
            };
            lifecycle(tx, function, Some(version), &text)?;
            Ok(Published {
                version,
                created: true,
            })
        })
    }

    /// One version of a function.
    pub fn get_version(&self, function: &str, version: u32) -> Result<VersionInfo> {
        self.read(|tx| get(tx, function, version))
    }

    /// All versions of a function, oldest first.
    pub fn list_versions(&self, function: &str) -> Result<Vec<VersionInfo>> {
        self.read(|tx| {
            ensure_exists(tx, function)?;
            list(tx, function)
        })
    }

    /// Deletes a version. Fails with [`StoreError::VersionInUse`] (naming the aliases) while an
    /// alias points at it. Its number is not reused.
    pub fn delete_version(&self, function: &str, version: u32) -> Result<()> {
        self.write(|tx| {
            super::functions::ensure_local(tx, function)?;
            let info = get(tx, function, version)?;
            let aliases: Vec<String> = tx
                .prepare_cached(
                    "SELECT name FROM aliases
                      WHERE function = ?1 AND (version = ?2 OR also_version = ?2)
                      ORDER BY name",
                )?
                .query_map(params![function, version], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if !aliases.is_empty() {
                return Err(StoreError::VersionInUse {
                    function: function.to_owned(),
                    version,
                    aliases,
                });
            }
            tx.prepare_cached("DELETE FROM versions WHERE function = ?1 AND version = ?2")?
                .execute(params![function, version])?;
            modules::collect_if_unused(tx, &info.sha256)?;
            touch(tx, function)?;
            lifecycle(
                tx,
                function,
                Some(version),
                &format!("version {version} deleted"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{lifecycle_texts, temp_store};
    use crate::store::{AliasTarget, Origin, WeightedVersion};

    #[test]
    fn publish_numbers_versions_and_snapshots_latest() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "s1", Origin::Local)
            .unwrap();
        assert_eq!(
            store.publish("f", "first").unwrap(),
            Published {
                version: 1,
                created: true
            }
        );
        store.update_function("f", Some(b"m2"), Some("s2")).unwrap();
        assert_eq!(store.publish("f", "").unwrap().version, 2);

        let v1 = store.get_version("f", 1).unwrap();
        assert_eq!(v1.sha256, modules::sha256_hex(b"m1"));
        assert_eq!(
            (v1.spec.as_str(), v1.description.as_str(), v1.size),
            ("s1", "first", 2)
        );
        let all = store.list_versions("f").unwrap();
        assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
        let summary = store.get_function("f").unwrap().summary;
        assert_eq!((summary.versions, summary.last_version), (2, Some(2)));
        let texts = lifecycle_texts(&store, "f");
        assert!(
            texts.contains(&"published version 1: first".to_string()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"published version 2".to_string()),
            "{texts:?}"
        );
    }

    #[test]
    fn publishing_unchanged_latest_returns_the_existing_version() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "s1", Origin::Local)
            .unwrap();
        store.publish("f", "").unwrap();
        assert_eq!(
            store.publish("f", "again").unwrap(),
            Published {
                version: 1,
                created: false
            }
        );
        // A spec change alone is a change.
        store.update_function("f", None, Some("s2")).unwrap();
        assert_eq!(store.publish("f", "").unwrap().version, 2);
        // Going back to an older state is a new version too: only the newest one is compared.
        store.update_function("f", None, Some("s1")).unwrap();
        assert_eq!(store.publish("f", "").unwrap().version, 3);
        assert_eq!(store.list_versions("f").unwrap().len(), 3);
    }

    #[test]
    fn version_numbers_are_never_reused() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "", Origin::Local)
            .unwrap();
        store.publish("f", "").unwrap();
        store.update_function("f", Some(b"m2"), None).unwrap();
        store.publish("f", "").unwrap();
        store.delete_version("f", 2).unwrap();
        // Latest still equals the deleted version 2, but the newest *existing* one is 1.
        assert_eq!(
            store.publish("f", "").unwrap(),
            Published {
                version: 3,
                created: true
            }
        );
        store.delete_version("f", 3).unwrap();
        store.delete_version("f", 1).unwrap();
        store.update_function("f", Some(b"m4"), None).unwrap();
        assert_eq!(store.publish("f", "").unwrap().version, 4);
    }

    #[test]
    fn unknown_function_and_version_errors() {
        let (_dir, store) = temp_store();
        assert!(matches!(
            store.publish("nope", ""),
            Err(StoreError::UnknownFunction(_))
        ));
        assert!(matches!(
            store.get_version("nope", 1),
            Err(StoreError::UnknownFunction(_))
        ));
        assert!(matches!(
            store.list_versions("nope"),
            Err(StoreError::UnknownFunction(_))
        ));
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        assert!(matches!(
            store.get_version("f", 1),
            Err(StoreError::UnknownVersion { version: 1, .. })
        ));
        assert!(matches!(
            store.delete_version("f", 7),
            Err(StoreError::UnknownVersion { version: 7, .. })
        ));
        assert!(matches!(
            store.delete_version("nope", 1),
            Err(StoreError::UnknownFunction(_))
        ));
    }

    #[test]
    fn deleting_an_aliased_version_names_the_aliases() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "", Origin::Local)
            .unwrap();
        store.publish("f", "").unwrap();
        store.update_function("f", Some(b"m2"), None).unwrap();
        store.publish("f", "").unwrap();
        store
            .set_alias("f", "prod", &AliasTarget::single(1))
            .unwrap();
        store
            .set_alias(
                "f",
                "canary",
                &AliasTarget {
                    version: 2,
                    also: Some(WeightedVersion {
                        version: 1,
                        weight: 0.1,
                    }),
                },
            )
            .unwrap();
        let err = store.delete_version("f", 1).unwrap_err();
        match &err {
            StoreError::VersionInUse {
                version, aliases, ..
            } => {
                assert_eq!(*version, 1);
                assert_eq!(aliases, &["canary", "prod"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("canary, prod"), "{err}");
        assert!(store.get_version("f", 1).is_ok());

        store.delete_alias("f", "prod").unwrap();
        store.delete_alias("f", "canary").unwrap();
        store.delete_version("f", 1).unwrap();
        assert!(lifecycle_texts(&store, "f").contains(&"version 1 deleted".to_string()));
    }

    #[test]
    fn versions_are_immutable_in_the_database() {
        let (_dir, store) = temp_store();
        store
            .create_function("f", b"m1", "", Origin::Local)
            .unwrap();
        store.publish("f", "").unwrap();
        let err = store
            .write(|tx| {
                tx.execute("UPDATE versions SET spec = 'x' WHERE function = 'f'", [])?;
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
    }
}
