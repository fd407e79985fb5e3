//! `pauses/<run>.json`: the record of a cluster paused by a backup, written
//! before the first change to the cluster and removed after it is resumed.
//! If haul dies in between (`kill -9`, a lost machine), the record says
//! exactly what to undo: `haul resume` (or the next backup) reads it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::SnapshotId;

/// The folder of pause records, relative to the repository prefix.
pub const PAUSES_DIR: &str = "pauses";

/// The version of the pause record this haul writes and reads.
pub const PAUSE_RECORD_VERSION: u32 = 1;

/// Path of the pause record of run `run`.
pub fn pause_record_path(run: &SnapshotId) -> String {
    format!("{PAUSES_DIR}/{run}.json")
}

/// How the cluster is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The kinds of workload a kubectl pause scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `pachd` or `pach-enterprise`.
    #[serde(rename = "deployment")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub replicas: u64,
}

/// One step that undoes part of a pause, recorded before the change it undoes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum PauseStep {
    /// Scale a workload back to its recorded count.
    Scale(Workload),
    /// `pachctl enterprise unpause`.
    Unpause,
}

/// Who paused the cluster: enough to tell whether that process still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedBy {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), so a
    /// reused pid is not mistaken for the run that paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub started: DateTime<Utc>,
    /// Rewritten while the cluster stays paused: a record whose heartbeat
    /// stopped belongs to a dead run, whichever machine it ran on.
    pub heartbeat: DateTime<Utc>,
}

/// `pauses/<run>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseRecord {
    pub version: u32,
    /// The id of the snapshot the run was making.
    pub run: SnapshotId,
    pub method: PauseMethod,
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// What to undo, in the order it was paused (each written before taken).
    pub steps: Vec<PauseStep>,
    pub by: PausedBy,
    /// The same steps as commands, for an operator reading the record.
    pub resume_commands: Vec<String>,
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
    fn steps_keep_kubectl_names() {
        let s = PauseStep::Scale(Workload {
            kind: WorkloadKind::ReplicationController,
            name: "pipeline-a-v1".into(),
            replicas: 3,
        });
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"step":"scale","kind":"replicationcontroller","name":"pipeline-a-v1","replicas":3}"#
        );
        assert_eq!(serde_json::from_str::<PauseStep>(&json).unwrap(), s);
        assert_eq!(
            serde_json::to_string(&PauseStep::Unpause).unwrap(),
            r#"{"step":"unpause"}"#
        );
    }
}
