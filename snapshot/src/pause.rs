//! Pausing a Pachyderm cluster for the paused phase of a backup, and
//! resuming it whatever happens.
//!
//! Every step that changes the cluster is recorded in a [`PauseGuard`]
//! *before* it is taken, so an interruption at any point (an error, Ctrl-C,
//! SIGTERM, a panic) resumes exactly what was paused, to the replica counts
//! read before pausing. If the guard is dropped without `resume` (a panic
//! past the procedure's own handling), its `Drop` resumes synchronously.
//!
//! | method | check | pause | resume |
//! |---|---|---|---|
//! | `pachctl` | `pachctl config get active-context` = `--context` | `pachctl enterprise pause`, wait for `pause-status` = paused | `pachctl enterprise unpause` |
//! | `enterprise-pachctl` | same with `active-enterprise-context` | same | same |
//! | `kubectl` | deployment `pachd` and worker RCs exist | scale `pachd`, then every worker RC, to 0; wait until their pods are gone | scale each back to its recorded count |
//! | `enterprise` | deployment `pach-enterprise` exists | scale it to 0, wait for its pods | scale it back |

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Result, SnapshotError};

/// How the cluster is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseMethod {
    /// A Pachyderm cluster, through `pachctl enterprise pause` (Enterprise licence).
    Pachctl,
    /// A Pachyderm cluster, by scaling `pachd` and its workers to zero.
    Kubectl,
    /// A standalone Enterprise Server, by scaling `pach-enterprise` to zero.
    Enterprise,
    /// A standalone Enterprise Server, through `pachctl enterprise pause`
    /// against the active enterprise context.
    EnterprisePachctl,
}

impl PauseMethod {
    /// The names `--pause` accepts (besides `none`).
    pub const NAMES: [&'static str; 4] = ["pachctl", "kubectl", "enterprise", "enterprise-pachctl"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pachctl" => Self::Pachctl,
            "kubectl" => Self::Kubectl,
            "enterprise" => Self::Enterprise,
            "enterprise-pachctl" => Self::EnterprisePachctl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pachctl => "pachctl",
            Self::Kubectl => "kubectl",
            Self::Enterprise => "enterprise",
            Self::EnterprisePachctl => "enterprise-pachctl",
        }
    }

    /// An Enterprise Server has databases only, no object store.
    pub fn is_enterprise(self) -> bool {
        matches!(self, Self::Enterprise | Self::EnterprisePachctl)
    }

    fn uses_pachctl(self) -> bool {
        matches!(self, Self::Pachctl | Self::EnterprisePachctl)
    }
}

/// What to pause and how.
#[derive(Debug, Clone)]
pub struct PauseSpec {
    pub method: PauseMethod,
    /// pachctl: the context that must be active; kubectl: `--context`.
    pub context: Option<String>,
    /// kubectl's `--namespace`.
    pub namespace: Option<String>,
    /// How long to wait for pods to go (or pachctl to report `paused`).
    pub timeout: Duration,
}

/// How often a pause in progress is polled.
const POLL: Duration = Duration::from_millis(250);
/// How long one kubectl/pachctl call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts at each resume step before it is reported as failed.
const RESUME_ATTEMPTS: u32 = 3;

const WORKER_SELECTOR: &str = "suite=pachyderm,component=worker";

/// A workload scaled to zero, and the count it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scaled {
    /// `deployment` or `replicationcontroller`.
    pub kind: String,
    pub name: String,
    pub replicas: u64,
}

/// One step that undoes part of a pause.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Undo {
    Scale(Scaled),
    Unpause,
}

/// What `check` found, before anything was changed.
#[derive(Debug, Clone, Serialize)]
pub struct PauseCheck {
    pub method: PauseMethod,
    /// The context that will be paused, when known.
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// kubectl: the workloads and their current replica counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Scaled>,
    /// The cluster was already paused before haul started: it is left paused.
    pub already_paused: bool,
}

/// What a pause did, as the backup report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PauseReport {
    pub method: PauseMethod,
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Workloads scaled down and back up, with their original counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<Scaled>,
    pub pause_s: f64,
    pub resume_s: f64,
    pub resumed: bool,
}

/// Runs kubectl or pachctl for one cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    spec: PauseSpec,
}

impl Cluster {
    pub fn new(spec: PauseSpec) -> Self {
        Self { spec }
    }

    pub fn spec(&self) -> &PauseSpec {
        &self.spec
    }

    async fn kubectl(&self, args: &[&str]) -> Result<String> {
        call("kubectl", &kubectl_args(&self.spec, args)).await
    }

    async fn pachctl(&self, args: &[&str]) -> Result<String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        call("pachctl", &args).await
    }

    fn deployment(&self) -> &'static str {
        match self.spec.method {
            PauseMethod::Enterprise => "pach-enterprise",
            _ => "pachd",
        }
    }

    async fn replicas_of(&self, kind: &str, name: &str) -> Result<u64> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"]).await?;
        let v: serde_json::Value = parse_json("kubectl get", &out)?;
        Ok(v["spec"]["replicas"].as_u64().unwrap_or(1))
    }

    async fn workers(&self) -> Result<Vec<Scaled>> {
        let out = self
            .kubectl(&[
                "get",
                "replicationcontrollers",
                "-l",
                WORKER_SELECTOR,
                "-o",
                "json",
            ])
            .await?;
        let v: serde_json::Value = parse_json("kubectl get replicationcontrollers", &out)?;
        Ok(v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        Some(Scaled {
                            kind: "replicationcontroller".into(),
                            name: i["metadata"]["name"].as_str()?.to_owned(),
                            replicas: i["spec"]["replicas"].as_u64().unwrap_or(1),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn pause_status(&self) -> Result<String> {
        Ok(self
            .pachctl(&["enterprise", "pause-status"])
            .await?
            .trim()
            .to_owned())
    }

    /// Checks, changing nothing, that the cluster can be paused: the tool
    /// answers, the context is the one asked for, the workloads exist.
    pub async fn check(&self) -> Result<PauseCheck> {
        let spec = &self.spec;
        if spec.method.uses_pachctl() {
            let key = if spec.method == PauseMethod::Pachctl {
                "active-context"
            } else {
                "active-enterprise-context"
            };
            let active = self
                .pachctl(&["config", "get", key])
                .await?
                .trim()
                .to_owned();
            if let Some(wanted) = &spec.context
                && *wanted != active
            {
                return Err(SnapshotError::WrongContext {
                    key,
                    active,
                    wanted: wanted.clone(),
                });
            }
            let status = self.pause_status().await?;
            return Ok(PauseCheck {
                method: spec.method,
                context: Some(active),
                namespace: None,
                workloads: Vec::new(),
                already_paused: status == "paused",
            });
        }
        let name = self.deployment();
        let mut workloads = vec![Scaled {
            kind: "deployment".into(),
            name: name.into(),
            replicas: self.replicas_of("deployment", name).await?,
        }];
        if spec.method == PauseMethod::Kubectl {
            workloads.extend(self.workers().await?);
        }
        Ok(PauseCheck {
            method: spec.method,
            context: spec.context.clone(),
            namespace: spec.namespace.clone(),
            already_paused: workloads[0].replicas == 0,
            workloads,
        })
    }

    /// Pauses the cluster. Each change is recorded in `guard` before it is
    /// made, so whatever happens next, `guard.resume()` undoes exactly it.
    pub async fn pause(&self, guard: &PauseGuard) -> Result<()> {
        if self.spec.method.uses_pachctl() {
            if self.pause_status().await? == "paused" {
                tracing::warn!("the cluster is already paused: haul leaves it paused afterwards");
                return Ok(());
            }
            guard.record(Undo::Unpause);
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
        }
        // pachd first, so it creates no more workers; then the workers it has.
        let name = self.deployment();
        let replicas = self.replicas_of("deployment", name).await?;
        self.scale_down(
            guard,
            Scaled {
                kind: "deployment".into(),
                name: name.into(),
                replicas,
            },
        )
        .await?;
        let mut selectors = vec![format!("app={name}")];
        if self.spec.method == PauseMethod::Kubectl {
            for w in self.workers().await? {
                self.scale_down(guard, w).await?;
            }
            selectors.push(WORKER_SELECTOR.into());
        }
        let started = Instant::now();
        for selector in &selectors {
            loop {
                let out = self
                    .kubectl(&["get", "pods", "-l", selector, "-o", "json"])
                    .await?;
                let v: serde_json::Value = parse_json("kubectl get pods", &out)?;
                let pods: Vec<String> = v["items"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if pods.is_empty() {
                    break;
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
        Ok(())
    }

    async fn scale_down(&self, guard: &PauseGuard, w: Scaled) -> Result<()> {
        if w.replicas == 0 {
            return Ok(());
        }
        let (kind, name) = (w.kind.clone(), w.name.clone());
        guard.record(Undo::Scale(w));
        self.kubectl(&["scale", &kind, &name, "--replicas=0"])
            .await?;
        Ok(())
    }
}

fn kubectl_args(spec: &PauseSpec, args: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(c) = &spec.context {
        v.extend(["--context".to_owned(), c.clone()]);
    }
    if let Some(n) = &spec.namespace {
        v.extend(["--namespace".to_owned(), n.clone()]);
    }
    v.extend(args.iter().map(|s| (*s).to_owned()));
    v
}

fn parse_json(what: &str, out: &str) -> Result<serde_json::Value> {
    serde_json::from_str(out).map_err(|e| SnapshotError::Pause {
        step: what.to_owned(),
        reason: format!("its output is not the JSON expected: {e}"),
    })
}

/// `program args...` as a shell would take it, for messages and for the
/// operator to copy.
fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs a cluster tool; its stdout, or an error with its stderr.
async fn call(program: &'static str, args: &[String]) -> Result<String> {
    let line = command_line(program, args);
    tracing::info!("running {line}");
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CALL_TIMEOUT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::ClusterToolMissing { tool: program });
        }
        Ok(Err(e)) => {
            return Err(SnapshotError::Pause {
                step: line,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(SnapshotError::Pause {
                step: line,
                reason: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            });
        }
    };
    if !out.status.success() {
        return Err(SnapshotError::Pause {
            step: line,
            reason: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The blocking twin of `call`, for `Drop`.
fn call_blocking(program: &str, args: &[String]) -> std::result::Result<(), String> {
    match std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Default)]
struct GuardState {
    undo: Vec<Undo>,
    resumed: bool,
}

/// Resumes what a pause changed. Create it before pausing; call `resume`
/// on every path.
#[derive(Debug)]
pub struct PauseGuard {
    spec: PauseSpec,
    state: Arc<Mutex<GuardState>>,
}

impl PauseGuard {
    pub fn new(spec: &PauseSpec) -> Self {
        Self {
            spec: spec.clone(),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, u: Undo) {
        self.lock().undo.push(u);
    }

    /// Whether anything was paused (and so needs resuming).
    pub fn paused_anything(&self) -> bool {
        !self.lock().undo.is_empty()
    }

    /// The workloads scaled down, with their recorded counts.
    pub fn scaled(&self) -> Vec<Scaled> {
        self.lock()
            .undo
            .iter()
            .filter_map(|u| match u {
                Undo::Scale(s) => Some(s.clone()),
                Undo::Unpause => None,
            })
            .collect()
    }

    fn step_command(&self, u: &Undo) -> (&'static str, Vec<String>) {
        match u {
            Undo::Scale(s) => (
                "kubectl",
                kubectl_args(
                    &self.spec,
                    &[
                        "scale",
                        &s.kind,
                        &s.name,
                        &format!("--replicas={}", s.replicas),
                    ],
                ),
            ),
            Undo::Unpause => ("pachctl", vec!["enterprise".into(), "unpause".into()]),
        }
    }

    /// The commands that resume the cluster by hand.
    pub fn manual_commands(&self) -> Vec<String> {
        let undo = self.lock().undo.clone();
        undo.iter()
            .map(|u| {
                let (p, a) = self.step_command(u);
                command_line(p, &a)
            })
            .collect()
    }

    /// Resumes everything recorded, in the order it was paused (pachd
    /// first). Every step is tried (three times) even when another failed;
    /// the error lists the commands still to run by hand.
    pub async fn resume(&self) -> Result<()> {
        let undo = {
            let mut st = self.lock();
            if st.resumed {
                return Ok(());
            }
            st.resumed = true;
            st.undo.clone()
        };
        let mut failed = Vec::new();
        for u in &undo {
            let (program, args) = self.step_command(u);
            let mut last = String::new();
            let mut ok = false;
            for attempt in 0..RESUME_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                match call(program, &args).await {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(e) => last = haul_mover::error_chain(&e),
                }
            }
            if !ok {
                failed.push((command_line(program, &args), last));
            }
        }
        if undo.contains(&Undo::Unpause) && failed.is_empty() {
            self.wait_unpaused().await;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(SnapshotError::ResumeFailed {
                commands: failed.iter().map(|(c, _)| c.clone()).collect(),
                reasons: failed.iter().map(|(_, r)| r.clone()).collect(),
            })
        }
    }

    /// After `pachctl enterprise unpause`, waits (up to the timeout) for
    /// the cluster to say so; a cluster slow to come back is a warning.
    async fn wait_unpaused(&self) {
        let started = Instant::now();
        loop {
            match call("pachctl", &["enterprise".into(), "pause-status".into()]).await {
                Ok(s) if s.trim() == "unpaused" => return,
                Ok(s) if started.elapsed() > self.spec.timeout => {
                    tracing::warn!(
                        "pachctl enterprise unpause ran, but after {}s the cluster says {:?}",
                        self.spec.timeout.as_secs(),
                        s.trim()
                    );
                    return;
                }
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(
                        "cannot read the pause status after unpausing: {}",
                        haul_mover::error_chain(&e)
                    );
                    return;
                }
            }
        }
    }
}

impl Drop for PauseGuard {
    /// The last line of defence (a panic that escaped the procedure):
    /// resume synchronously, loudly.
    fn drop(&mut self) {
        let undo = {
            let st = self.lock();
            if st.resumed || st.undo.is_empty() {
                return;
            }
            st.undo.clone()
        };
        eprintln!("haul: resuming the cluster after an unexpected failure");
        for u in &undo {
            let (program, args) = self.step_command(u);
            if let Err(e) = call_blocking(program, &args) {
                eprintln!(
                    "haul: COULD NOT RESUME: {} failed: {e}\nhaul: run it by hand",
                    command_line(program, &args)
                );
            }
        }
        self.lock().resumed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PauseSpec {
        PauseSpec {
            method: PauseMethod::Kubectl,
            context: Some("prod cluster".into()),
            namespace: Some("pach".into()),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn manual_commands_quote_and_keep_order() {
        let g = PauseGuard::new(&spec());
        g.record(Undo::Scale(Scaled {
            kind: "deployment".into(),
            name: "pachd".into(),
            replicas: 2,
        }));
        g.record(Undo::Scale(Scaled {
            kind: "replicationcontroller".into(),
            name: "pipeline-a-v1".into(),
            replicas: 3,
        }));
        assert_eq!(
            g.manual_commands(),
            vec![
                "kubectl --context 'prod cluster' --namespace pach scale deployment pachd --replicas=2",
                "kubectl --context 'prod cluster' --namespace pach scale replicationcontroller pipeline-a-v1 --replicas=3",
            ]
        );
        // Nothing ran: mark it resumed so Drop does not call kubectl.
        g.lock().resumed = true;
    }

    #[test]
    fn method_names_round_trip() {
        for n in PauseMethod::NAMES {
            assert_eq!(PauseMethod::parse(n).map(PauseMethod::name), Some(n));
        }
        assert!(PauseMethod::parse("none").is_none());
    }
}
