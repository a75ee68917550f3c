//! Counts behind `GET /v1/status` (`edgefn-agent status`): what the agent holds and what is
//! still waiting to leave it, read in one transaction.

use super::{Result, Store};
use rusqlite::OptionalExtension;
use serde::Serialize;

/// Counts of what the store holds. Every field is a plain count of rows (or a flag), so the
/// numbers add up with what `function list`, `mapping list` and `dead-letters` show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Functions, of which enabled, of which managed by the cloud.
    pub functions: u64,
    pub functions_enabled: u64,
    pub functions_cloud: u64,
    /// Event-source mappings, of which paused.
    pub mappings: u64,
    pub mappings_paused: u64,
    /// MQTT messages committed but not yet acknowledged by the broker (the durable outbox).
    pub outbox: u64,
    /// Events accepted but not yet delivered: paused mappings' backlogs, pending destinations.
    pub queued_events: u64,
    /// Events whose delivery failed for good.
    pub dead_letters: u64,
    /// The device this store is enrolled as (cloud sync), if any.
    pub device: Option<String>,
    /// Deployments rolled back on this device (reported `failed` to the cloud).
    pub cloud_failures: u64,
}

impl Store {
    /// The counts of [`StoreCounts`], consistent with each other (one read transaction).
    pub fn status_counts(&self) -> Result<StoreCounts> {
        self.read(|tx| {
            let count = |sql: &str| -> Result<u64> {
                Ok(tx
                    .prepare_cached(sql)?
                    .query_row([], |r| r.get::<_, i64>(0))?
                    .max(0) as u64)
            };
            let (functions, functions_enabled, functions_cloud) = tx
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(enabled), 0),
                            coalesce(sum(origin = 'cloud'), 0) FROM functions",
                )?
                .query_row([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
            let (mappings, mappings_paused) = tx
                .prepare_cached("SELECT count(*), coalesce(sum(NOT enabled), 0) FROM mappings")?
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            let device = tx
                .prepare_cached("SELECT value FROM meta WHERE key = 'cloud.device'")?
                .query_row([], |r| r.get::<_, String>(0))
                .optional()?;
            Ok(StoreCounts {
                functions: functions as u64,
                functions_enabled: functions_enabled as u64,
                functions_cloud: functions_cloud as u64,
                mappings: mappings as u64,
                mappings_paused: mappings_paused as u64,
                outbox: count("SELECT count(*) FROM outbox")?,
                queued_events: count("SELECT count(*) FROM event_queue")?,
                dead_letters: count("SELECT count(*) FROM dead_letters")?,
                device,
                cloud_failures: count("SELECT count(*) FROM cloud_failures")?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::mappings::{NewMapping, Source};
    use crate::store::test_support::temp_store;
    use crate::store::Origin;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn an_empty_store_counts_nothing() {
        let (_dir, store) = temp_store();
        assert_eq!(store.status_counts().unwrap(), Default::default());
    }

    #[test]
    fn counts_follow_functions_mappings_and_enrollment() {
        let (_dir, store) = temp_store();
        for (name, origin) in [
            ("a", Origin::Local),
            ("b", Origin::Local),
            ("c", Origin::Cloud),
        ] {
            store.create_function(name, MODULE, "", origin).unwrap();
        }
        store.set_enabled("b", false).unwrap();
        let topic = |t: &str| Source::Mqtt {
            filter: t.into(),
            qos: 1,
            shared_group: None,
        };
        store
            .create_mapping(&NewMapping::new("a", topic("x/1")))
            .unwrap();
        let m = store
            .create_mapping(&NewMapping::new("a", topic("x/2")))
            .unwrap();
        store.set_mapping_enabled(&m.id, false).unwrap();
        store.cloud_bind_device("dev-1").unwrap();

        let c = store.status_counts().unwrap();
        assert_eq!(
            (c.functions, c.functions_enabled, c.functions_cloud),
            (3, 2, 1)
        );
        assert_eq!((c.mappings, c.mappings_paused), (2, 1));
        assert_eq!(c.device.as_deref(), Some("dev-1"));
        assert_eq!((c.outbox, c.queued_events, c.dead_letters), (0, 0, 0));
    }
}
