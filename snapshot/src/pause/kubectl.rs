//! Pausing by scaling: `pachd` (or `pach-enterprise`) first, so it creates
//! no more workers, then every worker replication controller, each to zero;
//! then waiting until their pods are gone.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::control::ClusterControl;
use super::guard::PauseGuard;
use super::runner::Runner;
use super::spec::{
    POLL, PauseCheck, PauseMethod, PauseSpec, PauseStep, Program, WORKER_SELECTOR, Workload,
    WorkloadKind,
};
use crate::error::{Result, SnapshotError};

/// A cluster paused through kubectl (methods `kubectl` and `enterprise`).
#[derive(Debug)]
pub struct Kubectl {
    spec: PauseSpec,
    runner: Arc<dyn Runner>,
}

impl Kubectl {
    pub fn new(spec: PauseSpec, runner: Arc<dyn Runner>) -> Self {
        Self { spec, runner }
    }

    async fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.runner
            .run(Program::Kubectl, &self.spec.kubectl_args(args))
            .await
    }

    async fn get_json(&self, what: &str, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.kubectl(args).await?;
        serde_json::from_str(&out).map_err(|e| SnapshotError::Pause {
            step: what.to_owned(),
            reason: format!("its output is not the JSON expected: {e}"),
        })
    }

    /// The deployment and its current replica count.
    async fn deployment(&self) -> Result<Workload> {
        let name = self.spec.method.deployment();
        let v = self
            .get_json(
                "kubectl get deployment",
                &["get", "deployment", name, "-o", "json"],
            )
            .await?;
        Ok(Workload {
            kind: WorkloadKind::Deployment,
            name: name.to_owned(),
            replicas: v["spec"]["replicas"].as_u64().unwrap_or(1),
        })
    }

    /// Pachyderm's worker replication controllers and their replica counts.
    async fn workers(&self) -> Result<Vec<Workload>> {
        let v = self
            .get_json(
                "kubectl get replicationcontrollers",
                &[
                    "get",
                    "replicationcontrollers",
                    "-l",
                    WORKER_SELECTOR,
                    "-o",
                    "json",
                ],
            )
            .await?;
        Ok(v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        Some(Workload {
                            kind: WorkloadKind::ReplicationController,
                            name: i["metadata"]["name"].as_str()?.to_owned(),
                            replicas: i["spec"]["replicas"].as_u64().unwrap_or(1),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The workloads this method scales, as they are now.
    async fn workloads(&self) -> Result<Vec<Workload>> {
        let mut w = vec![self.deployment().await?];
        if self.spec.method == PauseMethod::Kubectl {
            w.extend(self.workers().await?);
        }
        Ok(w)
    }

    async fn scale_down(&self, guard: &PauseGuard, w: Workload) -> Result<()> {
        if w.replicas == 0 {
            return Ok(());
        }
        let (kind, name) = (w.kind, w.name.clone());
        guard.record(PauseStep::Scale(w)).await?;
        self.kubectl(&["scale", kind.as_str(), &name, "--replicas=0"])
            .await?;
        Ok(())
    }

    /// Waits until no pod matches `selector`, up to the spec's timeout
    /// (counted from `started`, shared by every selector).
    async fn wait_gone(&self, selector: &str, started: Instant) -> Result<()> {
        loop {
            let v = self
                .get_json(
                    "kubectl get pods",
                    &["get", "pods", "-l", selector, "-o", "json"],
                )
                .await?;
            let pods: Vec<String> = v["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if pods.is_empty() {
                return Ok(());
            }
            if started.elapsed() > self.spec.timeout {
                return Err(SnapshotError::PauseTimeout {
                    what: format!(
                        "the pods of {selector} to stop ({} still there: {})",
                        pods.len(),
                        pods.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                    ),
                    seconds: self.spec.timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl ClusterControl for Kubectl {
    fn spec(&self) -> &PauseSpec {
        &self.spec
    }

    fn check(&self) -> BoxFuture<'_, Result<PauseCheck>> {
        Box::pin(async move {
            let workloads = self.workloads().await?;
            Ok(PauseCheck {
                method: self.spec.method,
                context: self.spec.context.clone(),
                namespace: self.spec.namespace.clone(),
                already_paused: workloads[0].replicas == 0,
                workloads,
            })
        })
    }

    fn pause<'a>(&'a self, guard: &'a PauseGuard) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // The deployment first, so it creates no more workers; then the workers it has.
            let deployment = self.deployment().await?;
            let mut selectors = vec![format!("app={}", deployment.name)];
            self.scale_down(guard, deployment).await?;
            if self.spec.method == PauseMethod::Kubectl {
                for w in self.workers().await? {
                    self.scale_down(guard, w).await?;
                }
                selectors.push(WORKER_SELECTOR.into());
            }
            let started = Instant::now();
            for selector in &selectors {
                self.wait_gone(selector, started).await?;
            }
            Ok(())
        })
    }
}
