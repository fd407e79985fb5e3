//! Run records (`runs/` in the repository): every backup and restore writes
//! its phases and figures, and predictions read them back.

use chrono::{DateTime, Utc};
use haul_manifest::{Phase, RunKind, RunRecord, RunStats, SnapshotId};
use haul_mover::Repository;

/// Past backups a prediction learns from.
pub const HISTORY_RUNS: usize = 20;

/// The backup history, for predictions, oldest first; unreadable history
/// predicts from defaults (with a warning).
pub async fn history(repo: &Repository) -> Vec<RunRecord> {
    repo.runs(RunKind::Backup, HISTORY_RUNS)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the run history: {}",
                haul_mover::error_chain(&e)
            );
            Vec::new()
        })
}

/// Records a run's timings. Best effort: a run record that cannot be
/// written is a warning, never a failed backup or restore.
pub async fn record(
    repo: &Repository,
    kind: RunKind,
    snapshot: SnapshotId,
    started: DateTime<Utc>,
    seconds: f64,
    phases: &[Phase],
    stats: RunStats,
) {
    let run = RunRecord {
        kind,
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
