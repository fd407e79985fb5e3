//! Pausing through `pachctl enterprise pause` (methods `pachctl` and
//! `enterprise-pachctl`), after checking that the active context is the one
//! asked for, then waiting for `pause-status` to say `paused`.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::control::ClusterControl;
use super::guard::PauseGuard;
use super::runner::Runner;
use super::spec::{POLL, PauseCheck, PauseMethod, PauseSpec, PauseStep, Program};
use crate::error::{Result, SnapshotError};

/// A cluster paused through pachctl.
#[derive(Debug)]
pub struct Pachctl {
    spec: PauseSpec,
    runner: Arc<dyn Runner>,
}

impl Pachctl {
    pub fn new(spec: PauseSpec, runner: Arc<dyn Runner>) -> Self {
        Self { spec, runner }
    }

    async fn pachctl(&self, args: &[&str]) -> Result<String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        self.runner.run(Program::Pachctl, &args).await
    }

    /// `unpaused`, `partially-paused` or `paused`.
    async fn pause_status(&self) -> Result<String> {
        Ok(self
            .pachctl(&["enterprise", "pause-status"])
            .await?
            .trim()
            .to_owned())
    }
}

impl ClusterControl for Pachctl {
    fn spec(&self) -> &PauseSpec {
        &self.spec
    }

    fn check(&self) -> BoxFuture<'_, Result<PauseCheck>> {
        Box::pin(async move {
            let key = if self.spec.method == PauseMethod::Pachctl {
                "active-context"
            } else {
                "active-enterprise-context"
            };
            let active = self
                .pachctl(&["config", "get", key])
                .await?
                .trim()
                .to_owned();
            if let Some(wanted) = &self.spec.context
                && *wanted != active
            {
                return Err(SnapshotError::WrongContext {
                    key,
                    active,
                    wanted: wanted.clone(),
                });
            }
            let status = self.pause_status().await?;
            Ok(PauseCheck {
                method: self.spec.method,
                context: Some(active),
                namespace: None,
                workloads: Vec::new(),
                already_paused: status == "paused",
            })
        })
    }

    fn pause<'a>(&'a self, guard: &'a PauseGuard) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.pause_status().await? == "paused" {
                tracing::warn!("the cluster is already paused: haul leaves it paused afterwards");
                return Ok(());
            }
            guard.record(PauseStep::Unpause).await?;
            self.pachctl(&["enterprise", "pause"]).await?;
            let started = Instant::now();
            loop {
                let status = self.pause_status().await?;
                if status == "paused" {
                    return Ok(());
                }
                if started.elapsed() > self.spec.timeout {
                    return Err(SnapshotError::PauseTimeout {
                        what: format!(
                            "pachctl enterprise pause-status to say paused (it says {status:?})"
                        ),
                        seconds: self.spec.timeout.as_secs(),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }
}
