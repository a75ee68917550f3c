//! Aliases: a name pointing at a version, optionally with a second version that receives a share
//! (`weight`) of the events (canary rollouts).
//!
//! The split is deterministic by event id: [`split_point`] hashes the id to a number in `[0, 1)`
//! and [`pick_version`] takes the second version iff that number is below the weight. The same
//! event (e.g. an MQTT redelivery or a retry) therefore always reaches the same version, and over
//! many events the second version's share converges to the weight. Both are pure functions so the
//! daemon can use them without the store (e.g. on a cached alias table).

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::db::{now_ms, Store};
use super::error::{Result, StoreError};
use super::functions::{ensure_exists, touch};
use super::logs::lifecycle;
use super::names::validate_alias_name;
use super::versions;

/// The second version of a weighted alias and its share of events.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedVersion {
    pub version: u32,
    /// Share of events routed to `version`, in `[0, 1]`.
    pub weight: f64,
}

/// Where an alias points. In JSON it is flat, as in the admin API:
/// `{"version": 1, "also_version": 2, "weight": 0.1}` (the last two both or neither).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "FlatTarget", try_from = "FlatTarget")]
pub struct AliasTarget {
    /// Receives every event not routed to `also`.
    pub version: u32,
    /// Optional second version with its weight.
    pub also: Option<WeightedVersion>,
}

impl AliasTarget {
    /// An alias for exactly one version.
    pub fn single(version: u32) -> Self {
        Self {
            version,
            also: None,
        }
    }

    /// `version`, with `weight` of the events going to `also`.
    pub fn weighted(version: u32, also: u32, weight: f64) -> Self {
        Self {
            version,
            also: Some(WeightedVersion {
                version: also,
                weight,
            }),
        }
    }

    /// Checks the target on its own (weight range, distinct versions); the store also checks
    /// that the versions exist.
    pub fn validate(&self, alias: &str) -> Result<()> {
        let invalid = |reason: String| StoreError::InvalidAlias {
            alias: alias.to_owned(),
            reason,
        };
        if let Some(also) = self.also {
            if !(0.0..=1.0).contains(&also.weight) {
                return Err(invalid(format!(
                    "weight {} is outside 0..1 (it is the share of version {})",
                    also.weight, also.version
                )));
            }
            if also.version == self.version {
                return Err(invalid(format!(
                    "the second version must differ from the first ({})",
                    self.version
                )));
            }
        }
        Ok(())
    }

    /// The version that serves `event_id`; see [`pick_version`].
    pub fn pick(&self, event_id: &str) -> u32 {
        pick_version(self, event_id)
    }
}

/// The JSON shape of [`AliasTarget`].
#[derive(Serialize, Deserialize)]
struct FlatTarget {
    version: u32,
    also_version: Option<u32>,
    weight: Option<f64>,
}

impl From<AliasTarget> for FlatTarget {
    fn from(t: AliasTarget) -> Self {
        FlatTarget {
            version: t.version,
            also_version: t.also.map(|a| a.version),
            weight: t.also.map(|a| a.weight),
        }
    }
}

impl TryFrom<FlatTarget> for AliasTarget {
    type Error = &'static str;
    fn try_from(f: FlatTarget) -> std::result::Result<Self, Self::Error> {
        match (f.also_version, f.weight) {
            (None, None) => Ok(AliasTarget::single(f.version)),
            (Some(also), Some(weight)) => Ok(AliasTarget::weighted(f.version, also, weight)),
            _ => Err("also_version and weight go together"),
        }
    }
}

/// A stored alias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AliasInfo {
    pub function: String,
    pub name: String,
    #[serde(flatten)]
    pub target: AliasTarget,
    pub updated_ms: i64,
}

/// Maps an event id to a number in `[0, 1)`, uniformly and stably (the first 8 bytes of its
/// sha256; not std's per-process randomized hasher, so every agent and every restart agrees).
pub fn split_point(event_id: &str) -> f64 {
    let digest = Sha256::digest(event_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable in an f64, so the result is < 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The version of `target` that serves `event_id`: the second version iff
/// `split_point(event_id) < weight`.
pub fn pick_version(target: &AliasTarget, event_id: &str) -> u32 {
    match target.also {
        Some(also) if split_point(event_id) < also.weight => also.version,
        _ => target.version,
    }
}

fn alias_from_row(row: &Row<'_>) -> rusqlite::Result<AliasInfo> {
    let also_version: Option<u32> = row.get(3)?;
    let weight: Option<f64> = row.get(4)?;
    Ok(AliasInfo {
        function: row.get(0)?,
        name: row.get(1)?,
        target: AliasTarget {
            version: row.get(2)?,
            also: also_version
                .zip(weight)
                .map(|(version, weight)| WeightedVersion { version, weight }),
        },
        updated_ms: row.get(5)?,
    })
}

const COLUMNS: &str = "function, name, version, also_version, weight, updated_ms";

/// All aliases of `function`, by name.
pub(crate) fn list(tx: &Transaction<'_>, function: &str) -> Result<Vec<AliasInfo>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM aliases WHERE function = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([function], alias_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One alias, or [`StoreError::UnknownFunction`] / [`StoreError::UnknownAlias`].
pub(crate) fn get(tx: &Transaction<'_>, function: &str, alias: &str) -> Result<AliasInfo> {
    let found = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM aliases WHERE function = ?1 AND name = ?2"
        ))?
        .query_row(params![function, alias], alias_from_row)
        .optional()?;
    match found {
        Some(a) => Ok(a),
        None => {
            ensure_exists(tx, function)?;
            Err(StoreError::UnknownAlias {
                function: function.to_owned(),
                alias: alias.to_owned(),
            })
        }
    }
}

fn describe(target: &AliasTarget) -> String {
    match target.also {
        None => format!("version {}", target.version),
        Some(also) => format!(
            "version {} with {:.1}% to version {}",
            target.version,
            also.weight * 100.0,
            also.version
        ),
    }
}

impl Store {
    /// Creates or replaces an alias. The versions must exist; see [`AliasTarget::validate`].
    pub fn set_alias(
        &self,
        function: &str,
        alias: &str,
        target: &AliasTarget,
    ) -> Result<AliasInfo> {
        validate_alias_name(alias)?;
        target.validate(alias)?;
        self.write(|tx| {
            super::functions::ensure_local(tx, function)?;
            versions::get(tx, function, target.version)?;
            if let Some(also) = target.also {
                versions::get(tx, function, also.version)?;
            }
            tx.prepare_cached(
                "INSERT INTO aliases (function, name, version, also_version, weight, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (function, name) DO UPDATE SET
                    version = excluded.version, also_version = excluded.also_version,
                    weight = excluded.weight, updated_ms = excluded.updated_ms",
            )?
            .execute(params![
                function,
                alias,
                target.version,
                target.also.map(|a| a.version),
                target.also.map(|a| a.weight),
                now_ms()
            ])?;
            touch(tx, function)?;
            lifecycle(
                tx,
                function,
                None,
                &format!("alias {alias} set to {}", describe(target)),
            )?;
            get(tx, function, alias)
        })
    }

    /// One alias.
    pub fn get_alias(&self, function: &str, alias: &str) -> Result<AliasInfo> {
        self.read(|tx| get(tx, function, alias))
    }

    /// The aliases of a function, by name.
    pub fn list_aliases(&self, function: &str) -> Result<Vec<AliasInfo>> {
        self.read(|tx| {
            ensure_exists(tx, function)?;
            list(tx, function)
        })
    }

    /// Deletes an alias.
    pub fn delete_alias(&self, function: &str, alias: &str) -> Result<()> {
        self.write(|tx| {
            super::functions::ensure_local(tx, function)?;
            get(tx, function, alias)?;
            tx.prepare_cached("DELETE FROM aliases WHERE function = ?1 AND name = ?2")?
                .execute(params![function, alias])?;
            touch(tx, function)?;
            lifecycle(tx, function, None, &format!("alias {alias} deleted"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{lifecycle_texts, temp_store};
    use crate::store::Origin;

    fn with_versions(n: u32) -> (tempfile::TempDir, Store) {
        let (dir, store) = temp_store();
        store
            .create_function("f", b"m0", "", Origin::Local)
            .unwrap();
        for i in 1..=n {
            store
                .update_function("f", Some(format!("m{i}").as_bytes()), None)
                .unwrap();
            store.publish("f", "").unwrap();
        }
        (dir, store)
    }

    #[test]
    fn split_point_is_stable_and_in_range() {
        assert_eq!(split_point("evt-1"), split_point("evt-1"));
        assert_ne!(split_point("evt-1"), split_point("evt-2"));
        // Pinned: must never change between releases, or in-flight events would switch versions.
        let expected = {
            let d = Sha256::digest(b"abc");
            (u64::from_be_bytes(d[..8].try_into().unwrap()) >> 11) as f64 / (1u64 << 53) as f64
        };
        assert_eq!(split_point("abc"), expected);
        assert!((split_point("abc") - 0.7283).abs() < 1e-4); // 0xba7816bf... / 2^64
        for i in 0..1000 {
            let u = split_point(&format!("e{i}"));
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn weighted_split_matches_the_weight_and_is_deterministic() {
        for weight in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0] {
            let target = AliasTarget::weighted(1, 2, weight);
            let n = 10_000;
            let ids: Vec<String> = (0..n).map(|i| format!("01HZX{i:08}")).collect();
            let to_second = ids
                .iter()
                .filter(|id| pick_version(&target, id) == 2)
                .count();
            let share = to_second as f64 / n as f64;
            assert!(
                (share - weight).abs() <= 0.015,
                "weight {weight}: share {share}"
            );
            for id in ids.iter().take(500) {
                assert_eq!(pick_version(&target, id), target.pick(id));
                assert_eq!(
                    pick_version(&target, id),
                    pick_version(&target, &id.clone())
                );
            }
        }
        assert_eq!(pick_version(&AliasTarget::single(7), "anything"), 7);
    }

    #[test]
    fn set_get_list_replace_delete() {
        let (_dir, store) = with_versions(3);
        let prod = store
            .set_alias("f", "prod", &AliasTarget::single(1))
            .unwrap();
        assert_eq!((prod.function.as_str(), prod.name.as_str()), ("f", "prod"));
        assert_eq!(prod.target, AliasTarget::single(1));
        let canary = AliasTarget::weighted(2, 3, 0.1);
        store.set_alias("f", "beta", &canary).unwrap();
        assert_eq!(store.get_alias("f", "beta").unwrap().target, canary);
        let names: Vec<_> = store
            .list_aliases("f")
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["beta", "prod"]);
        // Replace: weighted -> single clears the second version.
        store
            .set_alias("f", "beta", &AliasTarget::single(3))
            .unwrap();
        assert_eq!(
            store.get_alias("f", "beta").unwrap().target,
            AliasTarget::single(3)
        );
        assert_eq!(store.get_function("f").unwrap().aliases.len(), 2);

        store.delete_alias("f", "beta").unwrap();
        assert!(matches!(
            store.get_alias("f", "beta"),
            Err(StoreError::UnknownAlias { .. })
        ));
        let texts = lifecycle_texts(&store, "f");
        assert!(
            texts
                .iter()
                .any(|t| t == "alias beta set to version 2 with 10.0% to version 3"),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "alias beta deleted"));
    }

    #[test]
    fn validation_errors() {
        let (_dir, store) = with_versions(2);
        for weight in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    store.set_alias("f", "c", &AliasTarget::weighted(1, 2, weight)),
                    Err(StoreError::InvalidAlias { .. })
                ),
                "weight {weight} accepted"
            );
        }
        assert!(matches!(
            store.set_alias("f", "c", &AliasTarget::weighted(1, 1, 0.5)),
            Err(StoreError::InvalidAlias { .. })
        ));
        for name in ["latest", "3", ""] {
            assert!(matches!(
                store.set_alias("f", name, &AliasTarget::single(1)),
                Err(StoreError::InvalidName { .. })
            ));
        }
        assert!(matches!(
            store.set_alias("f", "c", &AliasTarget::single(9)),
            Err(StoreError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            store.set_alias("f", "c", &AliasTarget::weighted(1, 9, 0.5)),
            Err(StoreError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            store.set_alias("nope", "c", &AliasTarget::single(1)),
            Err(StoreError::UnknownFunction(_))
        ));
        assert!(matches!(
            store.delete_alias("f", "missing"),
            Err(StoreError::UnknownAlias { .. })
        ));
        assert!(matches!(
            store.list_aliases("nope"),
            Err(StoreError::UnknownFunction(_))
        ));
        assert!(store.list_aliases("f").unwrap().is_empty());
    }

    #[test]
    fn json_shape_is_flat() {
        let json = serde_json::to_value(AliasTarget::weighted(1, 2, 0.25)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version": 1, "also_version": 2, "weight": 0.25})
        );
        let single: AliasTarget = serde_json::from_str(r#"{"version": 3}"#).unwrap();
        assert_eq!(single, AliasTarget::single(3));
        assert!(serde_json::from_str::<AliasTarget>(r#"{"version": 3, "weight": 0.5}"#).is_err());
        let info = AliasInfo {
            function: "f".into(),
            name: "prod".into(),
            target: AliasTarget::single(1),
            updated_ms: 5,
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["name"], "prod");
        assert_eq!(json["version"], 1);
        assert!(json["also_version"].is_null());
    }

    #[test]
    fn database_constraints_back_the_validation() {
        let (_dir, store) = with_versions(2);
        let insert = |sql: &str| store.write(|tx| Ok(tx.execute(sql, [])?));
        // Weight without second version, out-of-range weight, unknown version: all refused.
        for sql in [
            "INSERT INTO aliases VALUES ('f', 'a', 1, NULL, 0.5, 0)",
            "INSERT INTO aliases VALUES ('f', 'a', 1, 2, 1.5, 0)",
            "INSERT INTO aliases VALUES ('f', 'a', 9, NULL, NULL, 0)",
        ] {
            assert!(insert(sql).is_err(), "{sql}");
        }
    }
}
