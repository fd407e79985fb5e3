//! What a pause is: the method, the cluster it applies to, the workloads it
//! scales, and the steps that undo it. The leaf of the pause module: every
//! other file of it builds on these types.

use std::time::Duration;

use serde::Serialize;

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

/// How the cluster is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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

    /// Whether the pause goes through `pachctl` (else through kubectl scaling).
    pub fn uses_pachctl(self) -> bool {
        matches!(self, Self::Pachctl | Self::EnterprisePachctl)
    }

    /// The deployment a kubectl pause scales first.
    pub fn deployment(self) -> &'static str {
        match self {
            Self::Enterprise | Self::EnterprisePachctl => "pach-enterprise",
            Self::Pachctl | Self::Kubectl => "pachd",
        }
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

/// The kinds of workload a kubectl pause scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// `pachd` or `pach-enterprise`.
    Deployment,
    /// A pipeline's workers.
    #[serde(rename = "replicationcontroller")]
    ReplicationController,
}

impl WorkloadKind {
    /// The resource name kubectl takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::ReplicationController => "replicationcontroller",
        }
    }
}

/// A workload and its replica count before the pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub replicas: u64,
}

/// One step that undoes part of a pause, recorded before the change it undoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Scale a workload back to its recorded count.
    Scale(Workload),
    /// `pachctl enterprise unpause`.
    Unpause,
}

impl Undo {
    /// The command that takes this step.
    pub fn command(&self, spec: &PauseSpec) -> (Program, Vec<String>) {
        match self {
            Self::Scale(w) => (
                Program::Kubectl,
                spec.kubectl_args(&[
                    "scale",
                    w.kind.as_str(),
                    &w.name,
                    &format!("--replicas={}", w.replicas),
                ]),
            ),
            Self::Unpause => (
                Program::Pachctl,
                vec!["enterprise".into(), "unpause".into()],
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for n in PauseMethod::NAMES {
            assert_eq!(PauseMethod::parse(n).map(PauseMethod::name), Some(n));
        }
        assert!(PauseMethod::parse("none").is_none());
    }

    #[test]
    fn workload_kinds_keep_kubectl_names() {
        let w = Workload {
            kind: WorkloadKind::ReplicationController,
            name: "pipeline-a-v1".into(),
            replicas: 3,
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"replicationcontroller","name":"pipeline-a-v1","replicas":3}"#
        );
        assert_eq!(serde_json::from_str::<Workload>(&json).unwrap(), w);
    }
}
