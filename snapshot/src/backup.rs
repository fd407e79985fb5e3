//! The backup procedure: copy what changed, then commit the snapshot root.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use haul_manifest::{Phase, RunRecord, Snapshot, SnapshotId};
use haul_mover::backup::{self as bucket, BackupPlan, BackupStats};
use haul_mover::{Location, Repository};
use serde::Serialize;

use crate::{Result, SnapshotError, tool_version};

/// What to back up.
#[derive(Debug)]
pub struct BackupRequest<'a> {
    pub repo: &'a Repository,
    pub source: Option<&'a Location>,
    pub labels: BTreeMap<String, String>,
}

/// The result of a committed backup, as `haul backup --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub parent: Option<SnapshotId>,
    #[serde(flatten)]
    pub stats: BackupStats,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
}

/// What a backup would do, as `haul backup --dry-run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPreview {
    pub parent: Option<SnapshotId>,
    #[serde(flatten)]
    pub plan: BackupPlan,
}

/// The newest snapshot of the same source: the base of an incremental backup.
async fn parent_of(repo: &Repository, source: &Location) -> Result<Option<Snapshot>> {
    let url = source.url.to_string();
    let snaps = repo.snapshots().await?;
    Ok(snaps
        .into_iter()
        .rev()
        .find(|s| s.bucket.as_ref().is_some_and(|b| b.url == url)))
}

/// Plans a backup without reading object data or writing anything.
pub async fn preview(req: &BackupRequest<'_>) -> Result<BackupPreview> {
    let source = req.source.ok_or(SnapshotError::NothingToBackUp)?;
    let parent = parent_of(req.repo, source).await?;
    let plan = bucket::plan(
        req.repo,
        source,
        parent.as_ref().and_then(|p| p.bucket.as_ref()),
    )
    .await?;
    Ok(BackupPreview {
        parent: parent.map(|p| p.id),
        plan,
    })
}

/// Runs a backup and commits its snapshot.
pub async fn run(req: &BackupRequest<'_>) -> Result<BackupReport> {
    let source = req.source.ok_or(SnapshotError::NothingToBackUp)?;
    let repo = req.repo;
    let started = Utc::now();
    let t0 = Instant::now();
    let id = haul_mover::new_snapshot_id()?;
    let parent = parent_of(repo, source).await?;
    let parent_bucket = parent.as_ref().and_then(|p| p.bucket.as_ref());

    let done = bucket::backup(repo, source, parent_bucket).await?;
    let copy_phase = Phase {
        name: "copy".into(),
        seconds: t0.elapsed().as_secs_f64(),
        objects: done.stats.objects_read,
        bytes: done.stats.bytes_read,
    };

    let snapshot = Snapshot {
        version: haul_manifest::FORMAT_VERSION,
        id,
        time: started,
        parent: parent.as_ref().map(|p| p.id),
        tool: tool_version(),
        hostname: hostname(),
        bucket: Some(done.record),
        databases: Vec::new(),
        helm_values: None,
        phases: vec![copy_phase.clone()],
        labels: req.labels.clone(),
    };
    let t_commit = Instant::now();
    repo.write_snapshot(&snapshot).await?;
    let commit_phase = Phase {
        name: "commit".into(),
        seconds: t_commit.elapsed().as_secs_f64(),
        objects: 0,
        bytes: 0,
    };
    let phases = vec![copy_phase, commit_phase];
    let duration_s = t0.elapsed().as_secs_f64();
    let report = BackupReport {
        snapshot: id,
        parent: snapshot.parent,
        stats: done.stats,
        duration_s,
        phases,
    };
    record_run(
        repo,
        "backup",
        id,
        started,
        duration_s,
        &report.phases,
        &report,
    )
    .await;
    Ok(report)
}

/// Best effort: a run record that cannot be written is a warning, never a failed backup.
pub(crate) async fn record_run(
    repo: &Repository,
    kind: &str,
    snapshot: SnapshotId,
    started: chrono::DateTime<Utc>,
    seconds: f64,
    phases: &[Phase],
    stats: &impl Serialize,
) {
    let stats = match serde_json::to_value(stats) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let run = RunRecord {
        kind: kind.into(),
        snapshot,
        started,
        seconds,
        phases: phases.to_vec(),
        stats,
    };
    if let Err(e) = repo.write_run(&run).await {
        tracing::warn!(
            "could not record this run's timings: {}",
            haul_mover::error_chain(&e)
        );
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
