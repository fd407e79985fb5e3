//! The paused window, as a backup and a refresh share it: a guard whose
//! every step is first written to the repository's pause record, the pause,
//! the paused work (cancellable, and a panic in it still resumes), and the
//! resume on every path.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use haul_manifest::pause::pause_record_path;
use haul_manifest::{Phase, PhaseKind, SnapshotId};
use haul_mover::Repository;
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::error::{Result, SnapshotError};
use crate::events::{Event, EventSink, Events};
use crate::pause::record::RepoJournal;
use crate::pause::{ClusterControl, PauseGuard, PauseSpec, Runner, Workload};

/// A guard for run `run` whose steps go to the repository's pause record,
/// reported (with the commands that resume) as soon as it is written.
pub(crate) fn recorded_guard(
    repo: &Repository,
    spec: &PauseSpec,
    runner: Arc<dyn Runner>,
    run: SnapshotId,
    events: &Events,
) -> PauseGuard {
    let journal = RepoJournal::new(repo.clone(), spec, run, {
        let (events, repo) = (events.clone(), repo.url());
        move |rec| {
            events.emit(Event::PauseRecorded {
                record: format!("{repo}/{}", pause_record_path(&rec.run)),
                repo: repo.clone(),
                resume_commands: rec.resume_commands.clone(),
            })
        }
    });
    PauseGuard::new(spec, runner).with_journal(Arc::new(journal))
}

/// Pauses the cluster through `guard`, saying so; returns the `pause`
/// phase (paused).
pub(crate) async fn pause(
    cluster: &dyn ClusterControl,
    guard: &PauseGuard,
    events: &dyn EventSink,
    t_pause: Instant,
) -> Result<Phase> {
    events.emit(Event::Pausing {
        method: cluster.spec().method.name(),
    });
    cluster.pause(guard).await?;
    let seconds = t_pause.elapsed().as_secs_f64();
    if guard.paused_anything() {
        events.emit(Event::Paused {
            seconds,
            resume_commands: guard.manual_commands(),
        });
    }
    Ok(Phase::timed(PhaseKind::Pause, seconds).while_paused())
}

/// Runs the paused work until it ends or `cancel` fires; a panic in it is
/// an error like any other, so the caller still resumes.
pub(crate) async fn guarded<T>(
    work: impl Future<Output = Result<T>>,
    cancel: &Cancel,
) -> Result<T> {
    tokio::select! {
        r = AssertUnwindSafe(work).catch_unwind() => r.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(SnapshotError::Panicked { what })
        }),
        signal = cancel.cancelled() => Err(SnapshotError::Interrupted { signal }),
    }
}

/// What resuming did.
pub(crate) struct Resumed {
    /// The workloads scaled down and back, with their counts.
    pub scaled: Vec<Workload>,
    pub result: Result<()>,
    pub resume_s: f64,
    /// From the start of the pause to the end of the resume.
    pub downtime_s: f64,
    /// The `resume` phase (paused).
    pub phase: Phase,
}

/// Resumes whatever `guard` recorded (cancelling now changes nothing).
pub(crate) async fn resume(
    guard: &PauseGuard,
    t_pause: Instant,
    events: &dyn EventSink,
) -> Resumed {
    let t = Instant::now();
    let scaled = guard.scaled();
    let result = guard.resume().await;
    let resume_s = t.elapsed().as_secs_f64();
    let downtime_s = t_pause.elapsed().as_secs_f64();
    if result.is_ok() && guard.paused_anything() {
        events.emit(Event::Resumed { downtime_s });
    }
    Resumed {
        scaled,
        result,
        resume_s,
        downtime_s,
        phase: Phase::timed(PhaseKind::Resume, resume_s).while_paused(),
    }
}
