//! The two-phase backup of a running cluster: downtime follows the change,
//! not the bucket's size.
//!
//! ```text
//! check (databases, pg_dump, cluster context)
//!   ─▶ pre-copy round 1..n, cluster running (each copies what changed during the one before)
//!   ─▶ pause ─▶ final pass (list + delta) ∥ pg_dumps ─▶ commit root ─▶ resume
//! ```
//!
//! From the first step, SIGINT and SIGTERM are handled here: before the
//! pause they stop the backup (nothing is committed), after it they stop
//! it and resume the cluster first. A panic in the paused phase is caught
//! and resumes too; [`PauseGuard`]'s `Drop` covers anything that escapes.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;
use haul_manifest::{BucketRecord, Phase};
use haul_mover::backup as bucket;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::backup::{self, BackupReport, BackupRequest, Staged};
use crate::pause::{Cluster, PauseGuard, PauseReport};
use crate::predict::{self, Model, Next, Round};
use crate::{Result, SnapshotError, failpoint, human_bytes};

/// SIGINT and SIGTERM, taken over from their default (killing haul).
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        let make = |k| {
            signal(k).map_err(|e| SnapshotError::Pause {
                step: "installing the SIGINT/SIGTERM handlers".into(),
                reason: e.to_string(),
            })
        };
        Ok(Self {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Messages the operator must see even with `--json` (they go to stderr).
fn say(msg: impl AsRef<str>) {
    eprintln!("haul: {}", msg.as_ref());
}

/// What the live phase leaves for the paused one.
struct Live {
    staged: Staged,
    base: Option<BucketRecord>,
    rounds: Vec<Round>,
    model: Model,
}

/// Checks, then pre-copies while the cluster runs.
async fn live(req: &BackupRequest<'_>, cluster: &Cluster) -> Result<Live> {
    backup::check_request(req)?;
    let check = cluster.check().await?;
    if check.already_paused {
        say("the cluster is already paused: it will be left paused");
    }
    let staged = backup::stage(req).await?;
    let mut model = Model::from_history(&backup::history(req.repo).await, true);
    let mut base = staged.parent.as_ref().and_then(|p| p.bucket.clone());
    let mut rounds: Vec<Round> = Vec::new();
    let budget = req.max_downtime.map(|d| d.as_secs_f64());
    let Some(source) = req.source else {
        return Ok(Live {
            staged,
            base,
            rounds,
            model,
        });
    };
    if req.max_rounds == 0 {
        say("no pre-copy (--precopy-rounds 0): the whole delta is copied while paused");
    }
    while (rounds.len() as u32) < req.max_rounds {
        failpoint::hit("precopy").await?;
        let k = rounds.len() as u32 + 1;
        let t = Instant::now();
        let done = bucket::backup(req.repo, source, base.as_ref()).await?;
        let seconds = t.elapsed().as_secs_f64();
        let s = &done.stats;
        model.observe(s.objects, s.bytes_read, seconds);
        let rate = predict::change_rate(&rounds, s.bytes_read);
        let predicted = predict::predict_after(&model, s.objects, seconds, rate);
        rounds.push(Round {
            round: k,
            seconds,
            objects: s.objects,
            objects_read: s.objects_read,
            bytes_read: s.bytes_read,
            predicted_downtime_s: predicted,
        });
        say(format!(
            "pre-copy round {k} (cluster running): {} of {} objects read ({}) in {seconds:.1}s; paused phase predicted at {predicted:.1}s",
            s.objects_read,
            s.objects,
            human_bytes(s.bytes_read)
        ));
        base = Some(done.record);
        match predict::decide(&model, &rounds, budget, req.max_rounds) {
            Next::Precopy => {}
            Next::Pause => break,
            Next::GiveUp(why) => {
                return Err(SnapshotError::DowntimeBudget { why });
            }
        }
    }
    if let (Some(b), Some(last)) = (budget, rounds.last())
        && last.predicted_downtime_s > b
    {
        return Err(SnapshotError::DowntimeBudget {
            why: format!(
                "after {} pre-copy round(s) (the most --precopy-rounds allows) the paused phase is predicted at {:.1}s, over the {b:.1}s allowed",
                rounds.len(),
                last.predicted_downtime_s
            ),
        });
    }
    Ok(Live {
        staged,
        base,
        rounds,
        model,
    })
}

/// The two-phase backup.
pub(crate) async fn run(req: &BackupRequest<'_>) -> Result<BackupReport> {
    let spec = req.pause.clone().ok_or(SnapshotError::Pause {
        step: "the cluster backup".into(),
        reason: "no pause method given".into(),
    })?;
    let cluster = Cluster::new(spec.clone());
    let mut signals = Signals::install()?;

    // Live: nothing paused yet, so a signal just stops the backup.
    let live = tokio::select! {
        r = live(req, &cluster) => r?,
        sig = signals.recv() => {
            say(format!("{sig}: stopping; the cluster was not paused and nothing was committed"));
            return Err(SnapshotError::Interrupted { signal: sig });
        }
    };
    let Live {
        mut staged,
        base,
        rounds,
        model,
    } = live;
    // What the last round predicted (without rounds: pause, commit, resume).
    let predicted = rounds
        .last()
        .map_or(model.paused_seconds(0, 0.0), |r| r.predicted_downtime_s);
    let dbs = std::mem::take(&mut staged.dbs);
    let globals = staged.globals.take();

    // Paused: everything from here resumes the cluster, whatever happens.
    let guard = PauseGuard::new(&spec);
    let t_pause = Instant::now();
    let mut pause_s = 0.0;
    let paused = async {
        say(format!("pausing the cluster ({})", spec.method.name()));
        cluster.pause(&guard).await?;
        pause_s = t_pause.elapsed().as_secs_f64();
        if guard.paused_anything() {
            say(format!(
                "cluster paused in {pause_s:.1}s; if haul is killed, resume it by hand with: {}",
                guard.manual_commands().join(" && ")
            ));
        }
        failpoint::hit("paused").await?;
        let copied = backup::copy_and_dump(req, dbs, globals, base.as_ref(), "final-copy").await?;
        failpoint::hit("commit").await?;
        let mut phases = staged.phases.clone();
        for r in &rounds {
            phases.push(Phase {
                name: format!("precopy-{}", r.round),
                seconds: r.seconds,
                objects: r.objects_read,
                bytes: r.bytes_read,
                listed: r.objects,
            });
        }
        phases.push(Phase::timed("pause", pause_s));
        phases.extend(copied.phases.iter().cloned());
        backup::commit(req, &staged, copied, phases).await
    };
    let outcome = tokio::select! {
        r = AssertUnwindSafe(paused).catch_unwind() => r.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(SnapshotError::Panicked { what })
        }),
        sig = signals.recv() => Err(SnapshotError::Interrupted { signal: sig }),
    };
    if let Err(e) = &outcome {
        say(format!(
            "backup failed ({}); nothing was committed; resuming the cluster",
            haul_mover::error_chain(e)
        ));
    }

    // Resume on every path. Signals arriving now are held, not obeyed.
    let t_resume = Instant::now();
    let scaled = guard.scaled();
    let resumed = guard.resume().await;
    let resume_s = t_resume.elapsed().as_secs_f64();
    let downtime_s = t_pause.elapsed().as_secs_f64();
    match (&resumed, &outcome) {
        (Ok(()), _) if guard.paused_anything() => say(format!(
            "cluster resumed; it was paused for {downtime_s:.1}s"
        )),
        (Err(_), Ok(r)) => say(format!(
            "snapshot {} IS committed, but the cluster could not be resumed",
            r.snapshot
        )),
        _ => {}
    }
    resumed?;
    let mut report = outcome?;
    report.phases.push(Phase::timed("resume", resume_s));
    let final_bytes = report.stats.bytes_read as f64;
    report.change_bps = rounds
        .last()
        .map(|r| final_bytes / (r.seconds + pause_s).max(1e-3));
    report.downtime_s = Some(downtime_s);
    report.predicted_downtime_s = Some(predicted);
    report.precopy_rounds = Some(rounds.len() as u32);
    report.precopy = rounds;
    report.pause = Some(PauseReport {
        method: spec.method,
        context: spec.context.clone(),
        namespace: spec.namespace.clone(),
        scaled,
        pause_s,
        resume_s,
        resumed: true,
    });
    report.duration_s = staged.t0.elapsed().as_secs_f64();
    backup::record_run(req.repo, "backup", &report, staged.started).await;
    Ok(report)
}
