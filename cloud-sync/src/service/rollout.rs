//! The rollout state machine, advanced by a ticker on each replica (every 250 ms) and at once on
//! a `failed` report (idempotent: each step is one transaction over the stored state, aggregate
//! queries over the deployment's devices, never its device list).
//!
//! For a running deployment, with `released` = devices in released batches and `failed` = those
//! that reported failure:
//! 1. `failed * 100 > threshold * released` -> the deployment is rolled back: status
//!    `rolled_back`, every device's state `rolled_back`; desired states drop it, so devices go
//!    back to what the previous deployments give them.
//! 0. A device `released` for `report_timeout_ms` (if set) without a report becomes `failed`.
//! 2. A device `applied` for `health_wait_ms` becomes `healthy`.
//! 3. When every device of the current batch is `healthy` or `failed`, the next batch is
//!    released; after the last one the deployment has `succeeded`.

use super::deployments::get_tx;
use super::Result;
use crate::now_ms;
use crate::params;
use crate::store::Tx;

/// Advances every running deployment; true if anything changed.
pub(crate) fn advance_all(tx: &mut dyn Tx) -> Result<bool> {
    let ids: Vec<String> = tx
        .query(
            "SELECT id FROM deployments WHERE status = 'running' ORDER BY created_ms, id",
            &[],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<_>>()?;
    let mut changed = false;
    for id in ids {
        changed |= advance(tx, &id)?;
    }
    Ok(changed)
}

fn advance(tx: &mut dyn Tx, id: &str) -> Result<bool> {
    let now = now_ms();
    // The deployment without its device list: a step is aggregate queries over its devices
    // (O(1) rows out), so a rollout to 10,000 devices costs the same per step as one to 10.
    let d = get_tx(tx, id, false)?;
    let mut changed = false;
    if d.report_timeout_ms > 0 {
        let error = format!(
            "no status report within {} of release",
            humantime::format_duration(std::time::Duration::from_millis(d.report_timeout_ms))
        );
        let timed_out = tx.execute(
            "UPDATE deployment_devices SET state = 'failed', error = $3
              WHERE deployment_id = $1 AND state = 'released' AND released_ms <= $2",
            params![id, now - d.report_timeout_ms as i64, error],
        )?;
        changed |= timed_out > 0;
    }
    let (released, failed) = {
        let r = tx
            .query_opt(
                "SELECT count(*), coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0)
                   FROM deployment_devices WHERE deployment_id = $1 AND batch <= $2",
                params![id, d.current_batch],
            )?
            .ok_or_else(|| crate::store::StoreError::Db("count(*) returned no row".into()))?;
        (r.i64(0)? as u64, r.i64(1)? as u64)
    };
    let threshold = d.failure_threshold_percent as u64;
    if failed * 100 > threshold * released {
        tx.execute(
            "UPDATE deployment_devices SET state = 'rolled_back'
              WHERE deployment_id = $1 AND state <> 'failed'",
            params![id],
        )?;
        let message = format!(
            "rolled back: {failed} of {released} released devices failed (threshold {threshold}%)"
        );
        tx.execute(
            "UPDATE deployments SET status = 'rolled_back', message = $2, updated_ms = $3 WHERE id = $1",
            params![id, message, now],
        )?;
        return Ok(true);
    }
    changed |= tx.execute(
        "UPDATE deployment_devices SET state = 'healthy'
          WHERE deployment_id = $1 AND state = 'applied' AND applied_ms <= $2",
        params![id, now - d.health_wait_ms as i64],
    )? > 0;
    let batch_done = tx
        .query_opt(
            "SELECT 1 FROM deployment_devices WHERE deployment_id = $1 AND batch = $2
                AND state NOT IN ('healthy', 'failed')",
            params![id, d.current_batch],
        )?
        .is_none();
    if batch_done {
        let next = d.current_batch + 1;
        if next < d.batches {
            tx.execute(
                "UPDATE deployment_devices SET state = 'released', released_ms = $3
                  WHERE deployment_id = $1 AND batch = $2 AND state = 'pending'",
                params![id, next, now],
            )?;
            tx.execute(
                "UPDATE deployments SET current_batch = $2, message = $3, updated_ms = $4 WHERE id = $1",
                params![id, next, format!("batch {} of {} released", next + 1, d.batches), now],
            )?;
        } else {
            let message = if failed > 0 {
                format!("succeeded: {failed} device(s) failed within the threshold")
            } else {
                "succeeded".to_string()
            };
            tx.execute(
                "UPDATE deployments SET status = 'succeeded', message = $2, updated_ms = $3 WHERE id = $1",
                params![id, message, now],
            )?;
        }
        changed = true;
    }
    Ok(changed)
}
