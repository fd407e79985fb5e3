//! The record of a run (`runs/…json`) and the phases of a snapshot: the
//! contract between the procedures that time their work and the prediction
//! that learns from it.
//!
//! Phase names and statistics are typed here rather than matched as strings,
//! so renaming a report field cannot silently blind the downtime prediction.
//! The serialised names are the ones repositories already hold: a record
//! written by an older haul reads into the same types.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SnapshotId;

/// What a phase of a run was. Serialised as its name (`copy`, `precopy-2`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PhaseKind {
    /// Checking the request, the databases and the cluster before any write.
    Check,
    /// A backup's bucket pass without a pause (`copy`), or a restore's copy.
    Copy,
    /// Pre-copy round N (1-based) of a two-phase backup, the cluster running.
    Precopy(u32),
    /// Scaling the cluster down (or `pachctl enterprise pause`) until it is paused.
    Pause,
    /// Exporting each database's MVCC snapshot while paused: the moment
    /// the dumps show, however long they run after the resume.
    Export,
    /// The bucket pass while paused.
    FinalCopy,
    /// The database dumps (together).
    Dump,
    /// Writing the snapshot root.
    Commit,
    /// Swapping refreshed databases in by rename (a refresh, paused).
    Swap,
    /// Deleting a target's extraneous objects (a refresh, paused).
    Delete,
    /// Resuming the cluster.
    Resume,
    /// A restore's plan.
    Plan,
    /// Replaying the roles before a restore.
    Roles,
    /// A name this haul does not know (written by a newer one): kept, ignored.
    Other(String),
}

impl PhaseKind {
    /// Whether this phase lists the bucket and copies what changed: the
    /// passes a prediction fits its listing and copy costs on.
    pub fn is_bucket_pass(&self) -> bool {
        matches!(self, Self::Copy | Self::FinalCopy | Self::Precopy(_))
    }
}

impl fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Check => f.write_str("check"),
            Self::Copy => f.write_str("copy"),
            Self::Precopy(n) => write!(f, "precopy-{n}"),
            Self::Pause => f.write_str("pause"),
            Self::Export => f.write_str("export"),
            Self::FinalCopy => f.write_str("final-copy"),
            Self::Dump => f.write_str("dump"),
            Self::Commit => f.write_str("commit"),
            Self::Swap => f.write_str("swap"),
            Self::Delete => f.write_str("delete"),
            Self::Resume => f.write_str("resume"),
            Self::Plan => f.write_str("plan"),
            Self::Roles => f.write_str("roles"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl FromStr for PhaseKind {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "check" => Self::Check,
            "copy" => Self::Copy,
            "pause" => Self::Pause,
            "export" => Self::Export,
            "final-copy" => Self::FinalCopy,
            "dump" => Self::Dump,
            "commit" => Self::Commit,
            "swap" => Self::Swap,
            "delete" => Self::Delete,
            "resume" => Self::Resume,
            "plan" => Self::Plan,
            "roles" => Self::Roles,
            _ => match s.strip_prefix("precopy-").and_then(|n| n.parse().ok()) {
                Some(n) => Self::Precopy(n),
                None => Self::Other(s.to_owned()),
            },
        })
    }
}

impl Serialize for PhaseKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PhaseKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

/// The timing of one phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: PhaseKind,
    pub seconds: f64,
    #[serde(default)]
    pub objects: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Objects listed (the bucket's size in objects when the phase lists
    /// it; what a prediction scales listing time by). Zero otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub listed: u64,
    /// Whether the cluster was paused during this phase: the paused phases
    /// of a run are sequential and add up to its downtime. (Records of
    /// older runs say nothing: false.)
    #[serde(default)]
    pub paused: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Phase {
    /// A phase that took `seconds` and moved nothing.
    pub fn timed(name: PhaseKind, seconds: f64) -> Self {
        Self {
            name,
            seconds,
            objects: 0,
            bytes: 0,
            listed: 0,
            paused: false,
        }
    }

    /// The same phase, marked as spent with the cluster paused.
    pub fn while_paused(self) -> Self {
        Self {
            paused: true,
            ..self
        }
    }
}

/// What kind of run a record is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    Backup,
    Restore,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }
}

/// The figures of a run that later runs learn from. Every field is optional
/// on reading: records of older runs carry only some of them, and other
/// counters (haul 0.1 stored every numeric field of its report) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Bytes per second the bucket changed while the cluster ran, measured
    /// between the last pre-copy round and the paused pass (two-phase backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_bps: Option<f64>,
    /// Seconds the cluster was paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_s: Option<f64>,
    /// What the paused phase was predicted to take when haul paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_downtime_s: Option<f64>,
}

/// `runs/…json`: what one backup or restore did and how long each phase took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    pub snapshot: SnapshotId,
    pub started: DateTime<Utc>,
    pub seconds: f64,
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub stats: RunStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip_and_unknown_ones_survive() {
        for name in [
            "check",
            "copy",
            "precopy-1",
            "precopy-12",
            "pause",
            "export",
            "final-copy",
            "dump",
            "commit",
            "swap",
            "delete",
            "resume",
            "plan",
            "roles",
            "from-the-future",
        ] {
            let kind: PhaseKind = name.parse().unwrap();
            assert_eq!(kind.to_string(), name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<PhaseKind>(&json).unwrap(), kind);
        }
        assert_eq!(
            "precopy-x".parse::<PhaseKind>().unwrap(),
            PhaseKind::Other("precopy-x".into())
        );
    }

    /// A run record as haul 0.1 wrote it (stats: the report's numeric fields).
    #[test]
    fn an_older_run_record_reads_into_the_typed_contract() {
        let old = r#"{"kind":"backup","snapshot":"0123456789abcdef","started":"2026-11-30T10:00:00Z",
            "seconds":12.5,"phases":[{"name":"check","seconds":0.1,"objects":0,"bytes":0},
            {"name":"precopy-1","seconds":9.0,"objects":3,"bytes":100,"listed":500},
            {"name":"final-copy","seconds":1.0,"objects":1,"bytes":10,"listed":500}],
            "stats":{"change_bps":42.5,"downtime_s":2.0,"objects":500.0,"bytes_read":10.0,"duration_s":12.5}}"#;
        let r: RunRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.kind, RunKind::Backup);
        assert_eq!(r.phases[1].name, PhaseKind::Precopy(1));
        assert!(r.phases[2].name.is_bucket_pass());
        assert_eq!(r.stats.change_bps, Some(42.5));
        assert_eq!(r.stats.downtime_s, Some(2.0));
    }
}
