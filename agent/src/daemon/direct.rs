//! Direct invocations (someone asked to run a function now, rather than an event source): the
//! admin API's `POST /v1/functions/{name}/invoke` and remote invoke from the cloud
//! (`sync::remote`) go through here, so both behave the same: sync with an optional log tail,
//! or async (refused at once when it cannot run, its outcome logged with the invocation id).

use super::{Daemon, InvokeError, InvokeRequest, Invoked};
use crate::store::{Level, LogFilter, LogLine, LogRecord};

impl Daemon {
    /// Runs `req` to its committed end; with `log_tail: Some(n)`, also returns the invocation's
    /// newest `n` log lines (oldest first).
    pub async fn invoke_direct(
        &self,
        req: InvokeRequest,
        log_tail: Option<u32>,
    ) -> Result<(Invoked, Vec<LogRecord>), InvokeError> {
        let done = self.invoke(req).await?;
        let logs = match log_tail {
            Some(limit) => {
                let d = self.clone();
                let filter = LogFilter {
                    invocation_id: Some(done.invocation.id.clone()),
                    limit,
                    ..LogFilter::default()
                };
                tokio::task::spawn_blocking(move || d.store().logs(&filter))
                    .await
                    .expect("log query never panics")?
            }
            None => Vec::new(),
        };
        Ok((done, logs))
    }

    /// Refuses now what cannot run (an unknown function, version or alias, a disabled function)
    /// and runs the rest in the background. Nobody waits for the answer: its outcome goes to the
    /// logs (with the invocation id, so `logs --invocation ID` shows it) as well as to stats.
    pub async fn invoke_async(&self, req: InvokeRequest) -> Result<(), InvokeError> {
        let d = self.clone();
        let (name, qualifier) = (req.function.clone(), req.qualifier.clone());
        let resolved =
            tokio::task::spawn_blocking(move || d.store().resolve(&name, &qualifier, ""))
                .await
                .expect("resolution never panics")?;
        if !resolved.enabled {
            return Err(InvokeError::Disabled(req.function));
        }
        let d = self.clone();
        tokio::spawn(async move {
            let (id, function) = (req.invocation_id.clone(), req.function.clone());
            let (level, version, text) = match d.invoke(req).await {
                Ok(done) => {
                    let inv = &done.invocation;
                    let level = if inv.is_success() {
                        Level::Info
                    } else {
                        Level::Error
                    };
                    let text = format!(
                        "async invocation finished: {} in {} us",
                        inv.outcome,
                        inv.duration.as_micros()
                    );
                    (level, done.version, text)
                }
                Err(e) => (
                    Level::Warn,
                    None,
                    format!("async invocation {id} did not run: {e}"),
                ),
            };
            let line = LogLine {
                time_ms: crate::runtime::now_ms() as i64,
                level,
                function: Some(function),
                version,
                invocation_id: Some(id),
                text,
            };
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = d.store().append_logs(&[line]) {
                    eprintln!("edgefn-agent: cannot write a log line: {e}");
                }
            })
            .await;
        });
        Ok(())
    }
}
