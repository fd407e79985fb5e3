//! What a pause is: the method, the cluster it applies to, the workloads it
//! scales, and the steps that undo it (those are repository types, in
//! `haul_manifest::pause`, since a pause record holds them). The leaf of the
//! pause module: every other file of it builds on these.

use std::time::Duration;

pub use haul_manifest::{PauseMethod, PauseStep, Workload, WorkloadKind};
use serde::Serialize;

/// How long a pause waits for pods to go, unless told (`--pause-timeout`).
pub const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a pause in progress is polled.
pub const POLL: Duration = Duration::from_millis(250);
/// Attempts at each resume step before it is reported as failed.
pub const RESUME_ATTEMPTS: u32 = 3;
/// Wait between two attempts at a resume step: long enough for an API
/// server's brief hiccup, short against a paused cluster's cost.
pub const RESUME_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A cluster tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Kubectl,
    Pachctl,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kubectl => "kubectl",
            Self::Pachctl => "pachctl",
        }
    }
}

/// The label of Pachyderm's pipeline workers.
pub const WORKER_SELECTOR: &str = "suite=pachyderm,component=worker";

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

impl PauseSpec {
    /// `kubectl` arguments for this cluster: `--context`, `--namespace`, then `args`.
    pub fn kubectl_args(&self, args: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(c) = &self.context {
            v.extend(["--context".to_owned(), c.clone()]);
        }
        if let Some(n) = &self.namespace {
            v.extend(["--namespace".to_owned(), n.clone()]);
        }
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    }
}

/// The command that takes `step` on the cluster `spec` names.
pub fn step_command(step: &PauseStep, spec: &PauseSpec) -> (Program, Vec<String>) {
    match step {
        PauseStep::Scale(w) => (
            Program::Kubectl,
            spec.kubectl_args(&[
                "scale",
                w.kind.as_str(),
                &w.name,
                &format!("--replicas={}", w.replicas),
            ]),
        ),
        PauseStep::Unpause => (
            Program::Pachctl,
            vec!["enterprise".into(), "unpause".into()],
        ),
    }
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
    pub workloads: Vec<Workload>,
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
    pub scaled: Vec<Workload>,
    pub pause_s: f64,
    pub resume_s: f64,
    pub resumed: bool,
}
