//! Qualifier resolution: which module and spec serve an invocation of `NAME:QUALIFIER`.

use rusqlite::{OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::alias::{self, pick_version};
use super::db::Store;
use super::error::{Result, StoreError};
use super::qualifier::Qualifier;
use super::stats::VersionKey;
use super::versions;

/// What serves an invocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub function: String,
    /// What was asked for.
    pub qualifier: Qualifier,
    /// The version that runs; `None` = latest.
    pub version: Option<u32>,
    /// The module to run (fetch bytes with [`Store::module`] on a cache miss).
    pub sha256: String,
    /// The spec to run it with (TOML, as stored).
    pub spec: String,
    /// A disabled function must refuse invocations; the daemon decides how to report that.
    pub enabled: bool,
    /// Revision of latest (only meaningful when `version` is `None`): a warm instance of latest
    /// built from an older revision is stale.
    pub latest_revision: u64,
}

impl Resolved {
    /// The stats key of what runs.
    pub fn version_key(&self) -> VersionKey {
        VersionKey::from(self.version)
    }
}

struct FunctionRow {
    enabled: bool,
    sha256: String,
    spec: String,
    revision: u64,
}

fn function_row(tx: &Transaction<'_>, name: &str) -> Result<FunctionRow> {
    tx.prepare_cached(
        "SELECT enabled, latest_sha256, latest_spec, latest_revision FROM functions WHERE name = ?1",
    )?
    .query_row([name], |r| {
        Ok(FunctionRow {
            enabled: r.get(0)?,
            sha256: r.get(1)?,
            spec: r.get(2)?,
            revision: r.get(3)?,
        })
    })
    .optional()?
    .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))
}

impl Store {
    /// Resolves `function:qualifier` for the event `event_id`. For a weighted alias the version
    /// is chosen deterministically from the event id ([`pick_version`]).
    pub fn resolve(
        &self,
        function: &str,
        qualifier: &Qualifier,
        event_id: &str,
    ) -> Result<Resolved> {
        self.read(|tx| {
            let row = function_row(tx, function)?;
            let version = match qualifier {
                Qualifier::Latest => None,
                Qualifier::Version(v) => Some(*v),
                Qualifier::Alias(name) => Some(pick_version(
                    &alias::get(tx, function, name)?.target,
                    event_id,
                )),
            };
            let (sha256, spec) = match version {
                None => (row.sha256, row.spec),
                Some(v) => {
                    let info = versions::get(tx, function, v)?;
                    (info.sha256, info.spec)
                }
            };
            Ok(Resolved {
                function: function.to_owned(),
                qualifier: qualifier.clone(),
                version,
                sha256,
                spec,
                enabled: row.enabled,
                latest_revision: row.revision,
            })
        })
    }

    /// The stats keys a qualifier covers: `latest`, the version, or an alias's version(s).
    /// Used to answer `stats NAME --qualifier Q`.
    pub fn version_keys(&self, function: &str, qualifier: &Qualifier) -> Result<Vec<VersionKey>> {
        self.read(|tx| {
            function_row(tx, function)?;
            Ok(match qualifier {
                Qualifier::Latest => vec![VersionKey::Latest],
                Qualifier::Version(v) => {
                    versions::get(tx, function, *v)?;
                    vec![VersionKey::Version(*v)]
                }
                Qualifier::Alias(name) => {
                    let target = alias::get(tx, function, name)?.target;
                    let mut keys = vec![VersionKey::Version(target.version)];
                    keys.extend(target.also.map(|a| VersionKey::Version(a.version)));
                    keys
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::modules::sha256_hex;
    use crate::store::test_support::temp_store;
    use crate::store::{AliasTarget, Origin};

    fn setup() -> (tempfile::TempDir, Store) {
        let (dir, store) = temp_store();
        store
            .create_function("f", b"m1", "s1", Origin::Local)
            .unwrap();
        store.publish("f", "").unwrap();
        store.update_function("f", Some(b"m2"), Some("s2")).unwrap();
        store.publish("f", "").unwrap();
        store.update_function("f", Some(b"m3"), Some("s3")).unwrap();
        (dir, store)
    }

    #[test]
    fn resolves_latest_version_and_alias() {
        let (_dir, store) = setup();
        let latest = store.resolve("f", &Qualifier::Latest, "e").unwrap();
        assert_eq!(latest.version, None);
        assert_eq!(latest.sha256, sha256_hex(b"m3"));
        assert_eq!(latest.spec, "s3");
        assert_eq!(latest.latest_revision, 3);
        assert!(latest.enabled);
        assert_eq!(latest.version_key(), VersionKey::Latest);

        let v1 = store.resolve("f", &Qualifier::Version(1), "e").unwrap();
        assert_eq!((v1.version, v1.spec.as_str()), (Some(1), "s1"));
        assert_eq!(v1.sha256, sha256_hex(b"m1"));

        store
            .set_alias("f", "prod", &AliasTarget::single(2))
            .unwrap();
        let prod = store
            .resolve("f", &Qualifier::parse("prod").unwrap(), "e")
            .unwrap();
        assert_eq!((prod.version, prod.spec.as_str()), (Some(2), "s2"));
        assert_eq!(prod.qualifier, Qualifier::Alias("prod".into()));

        store.set_enabled("f", false).unwrap();
        assert!(!store.resolve("f", &Qualifier::Latest, "e").unwrap().enabled);
    }

    #[test]
    fn weighted_alias_resolution_follows_the_event_id() {
        let (_dir, store) = setup();
        let target = AliasTarget::weighted(1, 2, 0.3);
        store.set_alias("f", "canary", &target).unwrap();
        let q = Qualifier::Alias("canary".into());
        let mut to_two = 0;
        for i in 0..2_000 {
            let id = format!("evt-{i}");
            let resolved = store.resolve("f", &q, &id).unwrap();
            assert_eq!(resolved.version, Some(target.pick(&id)));
            assert_eq!(
                store.resolve("f", &q, &id).unwrap().version,
                resolved.version
            );
            if resolved.version == Some(2) {
                to_two += 1;
                assert_eq!(resolved.spec, "s2");
            }
        }
        assert!((to_two as f64 / 2_000.0 - 0.3).abs() < 0.04, "{to_two}");
    }

    #[test]
    fn resolution_errors() {
        let (_dir, store) = setup();
        assert!(matches!(
            store.resolve("nope", &Qualifier::Latest, "e"),
            Err(StoreError::UnknownFunction(_))
        ));
        assert!(matches!(
            store.resolve("f", &Qualifier::Version(9), "e"),
            Err(StoreError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            store.resolve("f", &Qualifier::Alias("ghost".into()), "e"),
            Err(StoreError::UnknownAlias { .. })
        ));
    }

    #[test]
    fn version_keys_of_qualifiers() {
        let (_dir, store) = setup();
        store
            .set_alias("f", "canary", &AliasTarget::weighted(1, 2, 0.3))
            .unwrap();
        assert_eq!(
            store.version_keys("f", &Qualifier::Latest).unwrap(),
            [VersionKey::Latest]
        );
        assert_eq!(
            store.version_keys("f", &Qualifier::Version(2)).unwrap(),
            [VersionKey::Version(2)]
        );
        assert_eq!(
            store
                .version_keys("f", &Qualifier::Alias("canary".into()))
                .unwrap(),
            [VersionKey::Version(1), VersionKey::Version(2)]
        );
        assert!(store.version_keys("f", &Qualifier::Version(5)).is_err());
        assert!(store.version_keys("nope", &Qualifier::Latest).is_err());
    }
}
