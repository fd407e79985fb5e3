//! The backup procedure: check every database, copy what changed from the
//! bucket while the databases are dumped, then commit the snapshot root.
//!
//! ```text
//! report     the request and the reports (what --json prints)
//! stages     check ─▶ stage (databases, parent, Helm values) ─▶ copy ∥ dump ─▶ commit ─▶ run record
//! preview    --dry-run: plan, databases, cluster, forecast
//! two_phase  with a pause: pre-copy rounds live ─▶ pause ─▶ final pass ∥ dumps ─▶ commit ─▶ resume
//! ```
//!
//! A backup first resumes any cluster that a backup which died (`kill -9`)
//! left paused, from its pause record (see `crate::resume`).
//!
//! Everything that can be checked before writing is checked first (each
//! database answers, its pg_dump is new enough, the cluster's context), so
//! a bad URL or password costs nothing. The root is written last: if the
//! copy or any dump fails, or the run is cancelled, there is no snapshot.

mod preview;
mod report;
mod stages;
mod two_phase;

use std::sync::Arc;

use haul_manifest::PhaseKind;
use haul_pg::gate::GateWait;

pub use preview::preview;
pub use report::{BackupPreview, BackupReport, BackupRequest, FinalPass, PACHYDERM_DB};
pub(crate) use stages::{parent_of, tool_version};

use crate::cancel::Cancel;
use crate::error::{Result, SnapshotError};
use crate::events::Events;
use crate::pause::{DEFAULT_PAUSE_TIMEOUT, Processes, Runner};
use crate::resume;

/// Runs a backup and commits its snapshot; with a pause method, the
/// two-phase backup of a running cluster.
pub async fn run(
    req: &BackupRequest<'_>,
    cancel: &Cancel,
    events: &Events,
) -> Result<BackupReport> {
    let runner: Arc<dyn Runner> = Arc::new(Processes);
    let timeout = req
        .pause
        .as_ref()
        .map_or(DEFAULT_PAUSE_TIMEOUT, |p| p.timeout);
    // First, whatever a backup that died left paused is resumed.
    resume::recover_before_backup(
        req.repo,
        runner.clone(),
        timeout,
        req.pause.is_some(),
        events.as_ref(),
    )
    .await?;
    let report = match &req.pause {
        Some(spec) => two_phase::run(req, spec, runner, cancel, events).await,
        None => tokio::select! {
            r = plain(req) => r,
            signal = cancel.cancelled() => Err(SnapshotError::Interrupted { signal }),
        },
    };
    // A sharded backup's passes are committed (or failed): their records go.
    if let Some(sh) = req.shards {
        sh.clean_up(req.repo).await;
    }
    report
}

/// A backup without a pause: one pass over the bucket, the dumps beside it.
async fn plain(req: &BackupRequest<'_>) -> Result<BackupReport> {
    stages::check_request(req)?;
    let mut staged = stages::stage(req).await?;
    let dbs = std::mem::take(&mut staged.dbs);
    let globals = staged.globals.take();
    let parent_bucket = staged.parent.as_ref().and_then(|p| p.bucket.clone());
    // The bucket pass while the databases are dumped.
    let t_export = tokio::time::Instant::now();
    let exported = stages::export(dbs).await?;
    let dumps = stages::dump_all(
        req.repo.clone(),
        exported,
        globals,
        req.db_limits.clone(),
        t_export,
        GateWait::open(),
    );
    let (pass, dumped) = futures::try_join!(
        stages::bucket_pass(
            req,
            parent_bucket.as_ref(),
            staged.parent.as_ref(),
            PhaseKind::Copy
        ),
        dumps
    )?;
    let mut phases = staged.phases.clone();
    phases.extend(pass.phase.iter().chain(&dumped.phase).cloned());
    let report = stages::commit(req, &staged, pass, dumped, phases).await?;
    stages::record_run(req.repo, &report, staged.started).await;
    Ok(report)
}
