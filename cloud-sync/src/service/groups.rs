//! Device groups: deployments target a group.

use serde::{Deserialize, Serialize};

use super::devices::resolve_device;
use super::{Result, Service};
use crate::now_ms;
use crate::params;
use crate::protocol::names::check_name;
use crate::store::{StoreError, Tx};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub created_ms: i64,
    /// Device names, sorted.
    pub devices: Vec<String>,
}

pub(crate) fn ensure_group(tx: &mut dyn Tx, name: &str) -> Result<()> {
    match tx.query_opt("SELECT 1 FROM device_groups WHERE name = $1", params![name])? {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found(format!("no group {name}"))),
    }
}

fn get_tx(tx: &mut dyn Tx, name: &str) -> Result<GroupInfo> {
    let r = tx
        .query_opt(
            "SELECT name, created_ms FROM device_groups WHERE name = $1",
            params![name],
        )?
        .ok_or_else(|| StoreError::not_found(format!("no group {name}")))?;
    let devices = tx
        .query(
            "SELECT d.name FROM group_members m JOIN devices d ON d.id = m.device_id
              WHERE m.group_name = $1 ORDER BY d.name",
            params![name],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_>>()?;
    Ok(GroupInfo {
        name: r.text(0)?,
        created_ms: r.i64(1)?,
        devices,
    })
}

impl Service {
    pub async fn create_group(&self, name: String) -> Result<GroupInfo> {
        check_name(&name).map_err(StoreError::invalid)?;
        self.store
            .tx(move |tx| {
                if tx
                    .query_opt(
                        "SELECT 1 FROM device_groups WHERE name = $1",
                        params![&name],
                    )?
                    .is_some()
                {
                    return Err(StoreError::conflict(format!("group {name} already exists")));
                }
                tx.execute(
                    "INSERT INTO device_groups (name, created_ms) VALUES ($1, $2)",
                    params![&name, now_ms()],
                )?;
                get_tx(tx, &name)
            })
            .await
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        self.store
            .tx(|tx| {
                let names: Vec<String> = tx
                    .query("SELECT name FROM device_groups ORDER BY name", &[])?
                    .iter()
                    .map(|r| r.text(0))
                    .collect::<Result<_>>()?;
                names.iter().map(|n| get_tx(tx, n)).collect()
            })
            .await
    }

    pub async fn get_group(&self, name: String) -> Result<GroupInfo> {
        self.store.tx(move |tx| get_tx(tx, &name)).await
    }

    /// Deletes a group (its devices stay); refused while one of its deployments is running.
    pub async fn delete_group(&self, name: String) -> Result<()> {
        self.store
            .tx(move |tx| {
                ensure_group(tx, &name)?;
                if let Some(r) = tx.query_opt(
                    "SELECT id FROM deployments WHERE group_name = $1 AND status = 'running'",
                    params![&name],
                )? {
                    return Err(StoreError::conflict(format!(
                        "deployment {} is rolling out to {name}",
                        r.text(0)?
                    )));
                }
                tx.execute(
                    "DELETE FROM group_members WHERE group_name = $1",
                    params![&name],
                )?;
                tx.execute("DELETE FROM device_groups WHERE name = $1", params![&name])?;
                Ok(())
            })
            .await?;
        self.changed();
        Ok(())
    }

    /// Adds (`member = true`) or removes a device.
    pub async fn set_member(
        &self,
        group: String,
        device: String,
        member: bool,
    ) -> Result<GroupInfo> {
        let out = self
            .store
            .tx(move |tx| {
                ensure_group(tx, &group)?;
                let id = resolve_device(tx, &device)?;
                if member {
                    tx.execute(
                        "INSERT INTO group_members (group_name, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        params![&group, &id],
                    )?;
                } else {
                    tx.execute("DELETE FROM group_members WHERE group_name = $1 AND device_id = $2", params![&group, &id])?;
                }
                get_tx(tx, &group)
            })
            .await?;
        self.changed();
        Ok(out)
    }
}
