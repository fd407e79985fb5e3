//! Resuming clusters that backups paused and never resumed: what `haul
//! resume` does, and what every backup does first with the records of runs
//! that died.
//!
//! ```text
//! pauses/*.json ─▶ liveness (this machine: its process; elsewhere: its heartbeat)
//!   dead (or --force) ─▶ guard from the recorded steps ─▶ resume ─▶ record removed
//!   alive             ─▶ left alone (a backup that must pause refuses instead)
//! ```

use std::sync::Arc;
use std::time::Duration;

use haul_manifest::pause::pause_record_path;
use haul_manifest::{PauseMethod, PauseRecord, PauseStep, PausedBy, SnapshotId};
use haul_mover::Repository;
use serde::Serialize;

use crate::error::{Result, SnapshotError};
use crate::events::{Event, EventSink};
use crate::pause::record::{self, Liveness, RepoJournal};
use crate::pause::{PauseGuard, PauseSpec, Runner};

/// One pause record, as `haul resume --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    pub run: SnapshotId,
    pub method: PauseMethod,
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// What was (or would be) undone, in order.
    pub steps: Vec<PauseStep>,
    pub paused_by: PausedBy,
    /// The run that wrote it still runs.
    pub alive: bool,
    pub resumed: bool,
}

/// What `haul resume` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeReport {
    pub resumed: Vec<RecordReport>,
    /// Records of runs still alive, left alone (without `--force`).
    pub left: Vec<RecordReport>,
}

fn report(r: &PauseRecord, alive: bool, resumed: bool) -> RecordReport {
    RecordReport {
        run: r.run,
        method: r.method,
        context: r.context.clone(),
        namespace: r.namespace.clone(),
        steps: r.steps.clone(),
        paused_by: r.by.clone(),
        alive,
        resumed,
    }
}

/// Undoes what `r` lists, then removes it. A step that fails after its
/// retries leaves the record in place and fails with the commands to run.
async fn resume_one(
    repo: &Repository,
    r: &PauseRecord,
    runner: Arc<dyn Runner>,
    timeout: Duration,
) -> Result<()> {
    let spec = PauseSpec {
        method: r.method,
        context: r.context.clone(),
        namespace: r.namespace.clone(),
        timeout,
    };
    let journal = RepoJournal::new(repo.clone(), &spec, r.run, |_| {});
    PauseGuard::from_steps(&spec, runner, r.steps.clone())
        .with_journal(Arc::new(journal))
        .resume()
        .await
}

/// `haul resume`: resumes what every record of a dead run lists (every
/// record with `force`), oldest first.
pub async fn resume(
    repo: &Repository,
    runner: Arc<dyn Runner>,
    timeout: Duration,
    force: bool,
    events: &dyn EventSink,
) -> Result<ResumeReport> {
    let mut out = ResumeReport::default();
    for r in record::records(repo).await? {
        let alive = record::liveness(&r.by) == Liveness::Alive;
        if alive && !force {
            events.emit(Event::RecordOfLiveRun {
                run: r.run,
                host: r.by.host.clone(),
                pid: r.by.pid,
            });
            out.left.push(report(&r, alive, false));
            continue;
        }
        resume_one(repo, &r, runner.clone(), timeout).await?;
        events.emit(Event::RecordResumed { run: r.run });
        out.resumed.push(report(&r, alive, true));
    }
    Ok(out)
}

/// What a backup does first: the clusters that runs which died left paused
/// are resumed, loudly. A live run's record makes a backup that would pause
/// refuse (two runs must not pause one cluster); one that pauses nothing
/// goes on.
pub async fn recover_before_backup(
    repo: &Repository,
    runner: Arc<dyn Runner>,
    timeout: Duration,
    pausing: bool,
    events: &dyn EventSink,
) -> Result<()> {
    for r in record::records(repo).await? {
        if record::liveness(&r.by) == Liveness::Alive {
            if pausing {
                return Err(SnapshotError::PausedByAnother {
                    run: r.run.to_string(),
                    host: r.by.host.clone(),
                    pid: r.by.pid,
                    record: format!("{}/{}", repo.url(), pause_record_path(&r.run)),
                });
            }
            events.emit(Event::RecordOfLiveRun {
                run: r.run,
                host: r.by.host.clone(),
                pid: r.by.pid,
            });
            continue;
        }
        events.emit(Event::DeadRunLeftPaused {
            run: r.run,
            host: r.by.host.clone(),
            pid: r.by.pid,
            since: r
                .by
                .started
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            resume_commands: r.resume_commands.clone(),
        });
        resume_one(repo, &r, runner.clone(), timeout).await?;
        events.emit(Event::RecordResumed { run: r.run });
    }
    Ok(())
}
