//! Batch jobs on a device, relayed from the cloud (docs/cloud-api.md, "Batch jobs on a device"):
//! submit, status, list, cancel and results of the agent's jobs (docs/agent-api.md, "Jobs"),
//! each a signed request over the remote-invoke channel ([`Service::relay`]) that the device
//! answers with the document its own API gives. The cloud keeps nothing about the jobs: they are
//! the device's, stored and run there (and resumed there after a restart), so they go on while
//! the device is offline; only asking needs it online.

use super::remote_invoke::{check_timeout, Outgoing, RemoteInvokeError};
use super::Service;
use crate::protocol::jobs::{JobOp, MAX_INPUT_BYTES, MAX_LIST};
use crate::protocol::names::{check_name, Qualifier};
use crate::store::StoreError;

/// The device's answer to a job operation.
#[derive(Clone, Debug)]
pub struct JobAnswer {
    /// The device's name.
    pub device: String,
    pub device_id: String,
    /// The job document, the list, or a results page (`protocol::jobs`).
    pub body: serde_json::Value,
}

/// Checks what the cloud can check before relaying (the device checks the rest with its
/// rules: the function, the input's lines, the job).
fn check(op: &JobOp) -> Result<(), StoreError> {
    let bad_id = |id: &str| {
        (id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| StoreError::invalid(format!("bad job id {id:?}")))
    };
    match op {
        JobOp::Submit {
            function,
            qualifier,
            format,
            input,
            parallelism,
            retries,
        } => {
            check_name(function).map_err(StoreError::invalid)?;
            Qualifier::parse(qualifier).map_err(StoreError::invalid)?;
            if !matches!(format.as_str(), "jsonl" | "csv") {
                return Err(StoreError::bad_request(format!(
                    "unknown format {format:?}: jsonl or csv"
                )));
            }
            if input.len() > MAX_INPUT_BYTES {
                return Err(StoreError::invalid(format!(
                    "input of {} bytes: a job relayed from the cloud carries at most {} bytes \
                     (split it into several jobs, or submit on the device)",
                    input.len(),
                    MAX_INPUT_BYTES
                )));
            }
            if !(1..=256).contains(parallelism) {
                return Err(StoreError::invalid(format!(
                    "parallelism {parallelism}: 1..=256"
                )));
            }
            if *retries > 100 {
                return Err(StoreError::invalid(format!("retries {retries}: 0..=100")));
            }
            Ok(())
        }
        JobOp::Status { id } | JobOp::Cancel { id } => bad_id(id).map_or(Ok(()), Err),
        JobOp::Results { id, limit, .. } => {
            if let Some(e) = bad_id(id) {
                return Err(e);
            }
            if *limit == 0 || *limit > MAX_LIST {
                return Err(StoreError::bad_request(format!(
                    "limit must be 1 to {MAX_LIST}"
                )));
            }
            Ok(())
        }
        JobOp::List { limit, .. } => {
            if *limit == 0 || *limit > MAX_LIST {
                return Err(StoreError::bad_request(format!(
                    "limit must be 1 to {MAX_LIST}"
                )));
            }
            Ok(())
        }
    }
}

impl Service {
    /// Relays a job operation to `device` (id or name) and waits for its answer
    /// (`timeout_ms`, default 10 s).
    pub async fn remote_job(
        &self,
        device: String,
        op: JobOp,
        timeout_ms: Option<u64>,
    ) -> Result<JobAnswer, RemoteInvokeError> {
        check(&op)?;
        let timeout_ms = check_timeout(timeout_ms)?;
        let (function, qualifier) = match &op {
            JobOp::Submit {
                function,
                qualifier,
                ..
            } => (function.clone(), qualifier.clone()),
            _ => (String::new(), String::new()),
        };
        let answer = self
            .relay(
                device,
                Outgoing {
                    function,
                    qualifier,
                    payload: Vec::new(),
                    is_async: false,
                    log_tail: false,
                    timeout_ms,
                    job: Some(op),
                },
            )
            .await?;
        let Some(body) = answer.reply.job else {
            return Err(RemoteInvokeError::BadReply {
                device: format!("{} ({})", answer.device, answer.device_id),
                detail: "an answer without a job document (an agent too old for jobs?)".into(),
            });
        };
        Ok(JobAnswer {
            device: answer.device,
            device_id: answer.device_id,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_checked_before_they_travel() {
        let submit = |format: &str, input: String, parallelism: u32| JobOp::Submit {
            function: "f".into(),
            qualifier: "latest".into(),
            format: format.into(),
            input,
            parallelism,
            retries: 2,
        };
        assert!(check(&submit("jsonl", "1\n".into(), 4)).is_ok());
        let e = check(&submit("xml", "1\n".into(), 1)).unwrap_err();
        assert!(e.to_string().contains("xml"), "{e}");
        let e = check(&submit("csv", "x".repeat(MAX_INPUT_BYTES + 1), 1)).unwrap_err();
        assert!(e.to_string().contains("at most 1048576 bytes"), "{e}");
        assert!(check(&submit("csv", "a\n".into(), 0)).is_err());
        assert!(check(&JobOp::Status { id: "../x".into() }).is_err());
        assert!(check(&JobOp::List {
            state: None,
            limit: 0
        })
        .is_err());
    }
}
