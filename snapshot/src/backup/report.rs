//! What a backup is asked to do and what it reports: the procedure's
//! contract with the binary (the reports are what `--json` prints).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use haul_manifest::{ChunkId, Phase, SnapshotId};
use haul_mover::bucket_backup::{BackupPlan, BackupStats};
use haul_mover::{Location, Repository};
use haul_pg::globals::GlobalsBackupReport;
use haul_pg::{DbBackupReport, DbLimits, DbPreview, DbSource, PgConn};
use serde::Serialize;

use crate::pause::{PauseCheck, PauseReport, PauseSpec};
use crate::predict::{Forecast, Round};

/// How the paused pass of a two-phase backup finds what changed since the
/// last live round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalPass {
    /// List the whole bucket: right for any application; the paused window
    /// grows with the object count.
    #[default]
    List,
    /// Read Pachyderm's record of its chunk objects in the paused
    /// `pachyderm` database (see `haul_pg::journal`) and list only the keys
    /// outside `chunk/`: the paused window follows the change, whatever
    /// the bucket's size.
    Pachyderm,
}

impl std::str::FromStr for FinalPass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "list" => Ok(Self::List),
            "pachyderm" => Ok(Self::Pachyderm),
            other => Err(format!("{other:?}: expected list or pachyderm")),
        }
    }
}

/// The database `--final-pass pachyderm` reads: the operator's name for it.
pub const PACHYDERM_DB: &str = "pachyderm";

/// What to back up.
#[derive(Debug)]
pub struct BackupRequest<'a> {
    pub repo: &'a Repository,
    pub source: Option<&'a Location>,
    /// Databases to dump, each under the operator's name for it.
    pub databases: Vec<DbSource>,
    /// A server whose roles to capture (`pg_dumpall --globals-only`).
    pub globals: Option<PgConn>,
    /// Capture the roles' password hashes too (else `--no-role-passwords`).
    pub role_passwords: bool,
    pub labels: BTreeMap<String, String>,
    pub db_limits: DbLimits,
    /// Pause the cluster for the final bucket pass and the dumps.
    pub pause: Option<PauseSpec>,
    /// With a pause: keep pre-copying until the paused phase is predicted to fit.
    pub max_downtime: Option<Duration>,
    /// With a pause: at most this many live pre-copy rounds (0: none).
    pub max_rounds: u32,
    /// A Helm values file to keep with the snapshot.
    pub helm_values: Option<Bytes>,
    /// Copy the bucket with shards (`--shards N`) instead of in this process.
    pub shards: Option<&'a crate::shards::ShardedPass>,
    /// With a pause: how the paused pass finds what changed.
    pub final_pass: FinalPass,
}

/// The result of a committed backup, as `haul backup --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub parent: Option<SnapshotId>,
    /// The bucket's counters (all zero without --source). With a pause,
    /// those of the final, paused pass.
    #[serde(flatten)]
    pub stats: BackupStats,
    pub databases: Vec<DbBackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsBackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_values: Option<ChunkId>,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
    /// Pause to resume, measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_s: Option<f64>,
    /// What the paused phase was predicted to take when haul paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_downtime_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precopy_rounds: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub precopy: Vec<Round>,
    /// Bytes per second the bucket changed while the cluster ran (measured
    /// between the last pre-copy round and the paused pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_bps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseReport>,
    /// With a pause: how the paused pass found what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_pass: Option<FinalPass>,
    /// With `--final-pass pachyderm`: the chunk objects Pachyderm's record
    /// named as written since the last live round (all read while paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_objects: Option<u64>,
}

impl BackupReport {
    /// The report of snapshot `snapshot`, of `parent`, that copied `stats`
    /// in `duration_s` (nothing else done: no databases, no pause).
    pub(crate) fn new(
        snapshot: SnapshotId,
        parent: Option<SnapshotId>,
        stats: BackupStats,
        duration_s: f64,
        phases: Vec<Phase>,
    ) -> Self {
        Self {
            snapshot,
            parent,
            stats,
            databases: Vec::new(),
            globals: None,
            helm_values: None,
            duration_s,
            phases,
            downtime_s: None,
            predicted_downtime_s: None,
            precopy_rounds: None,
            precopy: Vec::new(),
            change_bps: None,
            pause: None,
            final_pass: None,
            journal_objects: None,
        }
    }
}

/// What a backup would do, as `haul backup --dry-run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPreview {
    pub parent: Option<SnapshotId>,
    #[serde(flatten)]
    pub plan: Option<BackupPlan>,
    pub databases: Vec<DbPreview>,
    /// The cluster to pause, as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseCheck>,
    /// Pre-copy rounds and downtime predicted from the run history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}
