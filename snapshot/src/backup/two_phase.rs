//! The two-phase backup of a running cluster: downtime follows the change,
//! not the bucket's size.
//!
//! ```text
//! check (databases, pg_dump, cluster context)
//!   ─▶ pre-copy round 1..n, cluster running (each copies what changed during the one before)
//!   ─▶ pause ─▶ export snapshots, start pg_dumps (held) ─▶ final pass (list + delta)
//!   ─▶ resume ─▶ the dumps run on ─▶ commit root
//! ```
//!
//! Cancellation comes in from the caller: before the pause it stops the
//! backup (nothing is committed), after it it stops it and resumes the
//! cluster first. A panic in the paused phase is caught and resumes too;
//! the pause guard's `Drop` covers anything that escapes (see `window`).

use std::sync::Arc;

use haul_manifest::{BucketRecord, Phase, PhaseKind};
use haul_pg::gate::Gate;
use tokio::time::Instant;

use haul_pg::journal::Mark;

use super::report::{BackupReport, BackupRequest, FinalPass, PACHYDERM_DB};
use super::stages::{self, Staged};
use crate::cancel::Cancel;
use crate::error::{Result, SnapshotError};
use crate::events::{Event, EventSink, Events};
use crate::pause::{self, ClusterControl, PauseReport, PauseSpec, Runner};
use crate::predict::{self, Model, Next, Round};
use crate::{failpoint, runs, window};

/// What the live phase leaves for the paused one.
struct Live {
    staged: Staged,
    base: Option<BucketRecord>,
    rounds: Vec<Round>,
    model: Model,
    /// With `--final-pass pachyderm`: the mark taken just before the last
    /// round listed the bucket (see `haul_pg::journal`).
    mark: Option<Mark>,
    /// Listing, though `--final-pass pachyderm` could have been used.
    could_journal: bool,
}

/// Objects from which a listed paused pass suggests `--final-pass pachyderm`.
const HINT_OBJECTS: u64 = 100_000;

/// Checks, then pre-copies while the cluster runs.
async fn live(
    req: &BackupRequest<'_>,
    cluster: &dyn ClusterControl,
    events: &dyn EventSink,
) -> Result<Live> {
    stages::check_request(req)?;
    let check = cluster.check().await?;
    if check.already_paused {
        events.emit(Event::AlreadyPaused);
    }
    let staged = stages::stage(req).await?;
    let could_journal = req.final_pass == FinalPass::List
        && req.source.is_some()
        && req.shards.is_none()
        && req.max_rounds > 0
        && match stages::pachyderm_db(&staged.dbs) {
            Some(db) => db.journal_check().await.is_ok(),
            None => false,
        };
    let journal = match req.final_pass {
        FinalPass::List => None,
        FinalPass::Pachyderm => {
            let db = stages::pachyderm_db(&staged.dbs).ok_or_else(|| SnapshotError::FinalPass {
                why: "it reads Pachyderm's database, which must be given as --db pachyderm=URL"
                    .into(),
            })?;
            db.journal_check().await?;
            Some(db)
        }
    };
    let mut mark = None;
    let mut model = Model::from_history(&runs::history(req.repo).await, true);
    let mut base = staged.parent.as_ref().and_then(|p| p.bucket.clone());
    let mut rounds: Vec<Round> = Vec::new();
    let budget = req.max_downtime.map(|d| d.as_secs_f64());
    let Some(source) = req.source else {
        return Ok(Live {
            staged,
            base,
            rounds,
            model,
            mark,
            could_journal,
        });
    };
    if req.max_rounds == 0 {
        events.emit(Event::NoPrecopy);
    }
    while (rounds.len() as u32) < req.max_rounds {
        failpoint::hit("precopy").await?;
        let k = rounds.len() as u32 + 1;
        let t = Instant::now();
        if let Some(db) = journal {
            // Before the listing begins: what the round cannot have seen
            // was written at or after this mark.
            mark = Some(db.journal_mark().await?);
        }
        let done = stages::copy(req, source, base.as_ref(), staged.parent.as_ref()).await?;
        let seconds = t.elapsed().as_secs_f64();
        let s = &done.stats;
        model.observe(s.objects, s.bytes_read, seconds);
        let rate = predict::change_rate(&rounds, s.bytes_read);
        // A paused pass from Pachyderm's record does not list the bucket.
        let listed = if journal.is_some() { 0 } else { s.objects };
        let predicted = predict::predict_after(&model, listed, seconds, rate);
        let round = Round {
            round: k,
            seconds,
            objects: s.objects,
            objects_read: s.objects_read,
            bytes_read: s.bytes_read,
            predicted_downtime_s: predicted,
        };
        events.emit(Event::PrecopyRound(round.clone()));
        rounds.push(round);
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
        mark,
        could_journal,
    })
}

/// The two-phase backup of the cluster `spec` names.
pub(crate) async fn run(
    req: &BackupRequest<'_>,
    spec: &PauseSpec,
    runner: Arc<dyn Runner>,
    cancel: &Cancel,
    events: &Events,
) -> Result<BackupReport> {
    let cluster = pause::control(spec.clone(), runner.clone());

    // Live: nothing paused yet, so cancelling just stops the backup.
    let live = tokio::select! {
        r = live(req, cluster.as_ref(), events.as_ref()) => r?,
        signal = cancel.cancelled() => {
            events.emit(Event::StoppedBeforePause { signal });
            return Err(SnapshotError::Interrupted { signal });
        }
    };
    let Live {
        mut staged,
        base,
        rounds,
        model,
        mark,
        could_journal,
    } = live;
    // What the last round predicted (without rounds: pause, commit, resume).
    let predicted = rounds
        .last()
        .map_or(model.paused_seconds(0, 0.0), |r| r.predicted_downtime_s);
    let dbs = std::mem::take(&mut staged.dbs);
    let globals = staged.globals.take();

    // Paused: everything from here resumes the cluster, whatever happens.
    // While paused: pause, export every database's snapshot, start the dumps
    // from those snapshots (pg_dump takes its table locks, then waits at the
    // gate), copy the bucket's final delta. Then resume at once; the dumps
    // run on, still showing the databases at the pause.
    //
    // Why that is consistent (for Pachyderm, and any application whose
    // database only references immutable, content-addressed objects): every
    // object the paused databases reference was in the bucket when the final
    // delta was copied, and what the application writes or garbage-collects
    // after the resume can reach neither the exported snapshots nor the
    // chunks already copied. The root is committed only once every dump has
    // finished, so a failed dump still commits nothing.
    //
    // The pause record goes to the repository before the first change to
    // the cluster, and is reported at once with the commands that resume it.
    let guard = window::recorded_guard(req.repo, spec, runner, staged.id, events);
    // Holds the dumps' data back until the cluster runs again (see
    // `haul_pg::gate`): pg_dump starts, and locks its tables, while paused.
    let (gate, gate_wait) = Gate::closed();
    let t_pause = Instant::now();
    let mut paused_phases: Vec<Phase> = Vec::new();
    let paused = async {
        let pause = window::pause(cluster.as_ref(), &guard, events.as_ref(), t_pause).await?;
        let pause_s = pause.seconds;
        paused_phases.push(pause);
        failpoint::hit("paused").await?;
        let t_export = Instant::now();
        let exported = stages::export(dbs).await?;
        if !exported.is_empty() {
            paused_phases.push(
                Phase::timed(PhaseKind::Export, t_export.elapsed().as_secs_f64()).while_paused(),
            );
        }
        // With --final-pass pachyderm: the chunk objects written since the
        // last round began listing, as the exported snapshot shows them.
        // The final pass begins here: with a mark, by reading the record.
        let t_final = Instant::now();
        let journal = match (mark, &base) {
            (Some(mark), Some(_)) => {
                let db = exported.iter().find(|e| e.name() == PACHYDERM_DB);
                let db = db.ok_or_else(|| SnapshotError::FinalPass {
                    why: "the pachyderm database was not exported".into(),
                })?;
                let keys = db.uploaded_since(mark).await?;
                events.emit(Event::Journal {
                    objects: keys.len() as u64,
                });
                Some(keys)
            }
            _ => None,
        };
        let journal_objects = journal.as_ref().map(|k| k.len() as u64);
        // Its own task: it outlives this paused phase, and is aborted (pg_dump
        // killed) if the backup stops before the dumps are awaited.
        let dumps = haul_mover::spawned({
            let (repo, limits) = (req.repo.clone(), req.db_limits.clone());
            async move {
                failpoint::hit("dump").await?;
                stages::dump_all(repo, exported, globals, limits, t_export, gate_wait).await
            }
        });
        let pass = match (journal, &base) {
            (Some(keys), Some(base)) => stages::journal_pass(req, base, keys, t_final).await?,
            _ => {
                stages::bucket_pass(
                    req,
                    base.as_ref(),
                    staged.parent.as_ref(),
                    PhaseKind::FinalCopy,
                )
                .await?
            }
        };
        paused_phases.extend(pass.phase.clone().map(Phase::while_paused));
        Ok::<_, SnapshotError>((pass, dumps, pause_s, journal_objects))
    };
    let outcome = window::guarded(paused, cancel).await;
    if let Err(e) = &outcome {
        events.emit(Event::FailedWhilePaused {
            error: haul_mover::error_chain(e),
        });
    }

    // Resume on every path. Cancelling again now changes nothing.
    let window::Resumed {
        scaled,
        result: resumed,
        resume_s,
        downtime_s,
        phase,
    } = window::resume(&guard, t_pause, events.as_ref()).await;
    paused_phases.push(phase);
    let (pass, dumps, pause_s, journal_objects) = match outcome {
        Ok(done) => done,
        // A resume that failed is the more urgent news.
        Err(e) => return Err(resumed.err().unwrap_or(e)),
    };

    // Live again (or, if resuming failed, still worth committing): the
    // dumps finish, then the root is committed.
    let finished = async {
        failpoint::hit("dump-held").await?;
        gate.open();
        let dumped = dumps.await?;
        failpoint::hit("commit").await?;
        Ok::<_, SnapshotError>(dumped)
    };
    let dumped = tokio::select! {
        r = finished => r,
        signal = cancel.cancelled() => Err(SnapshotError::Interrupted { signal }),
    };
    let dumped = match dumped {
        Ok(d) => d,
        Err(e) => return Err(resumed.err().unwrap_or(e)),
    };
    let mut phases = staged.phases.clone();
    for r in &rounds {
        phases.push(Phase {
            objects: r.objects_read,
            bytes: r.bytes_read,
            listed: r.objects,
            ..Phase::timed(PhaseKind::Precopy(r.round), r.seconds)
        });
    }
    phases.extend(paused_phases);
    phases.extend(dumped.phase.clone());
    let final_bytes = pass.stats.bytes_read as f64;
    let committed = stages::commit(req, &staged, pass, dumped, phases).await;
    if let Err(e) = resumed {
        let Ok(r) = &committed else { return Err(e) };
        events.emit(Event::CommittedButNotResumed {
            snapshot: r.snapshot,
        });
        // What was done beside what failed, for --json too.
        return Err(SnapshotError::done_but_not_resumed(
            "backup",
            "snapshot",
            format!("committed as {}", r.snapshot),
            e,
        ));
    }
    let mut report = committed?;
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
    report.final_pass = req.source.map(|_| match journal_objects {
        Some(_) => FinalPass::Pachyderm,
        None => FinalPass::List,
    });
    report.journal_objects = journal_objects;
    if could_journal && report.stats.objects >= HINT_OBJECTS {
        let seconds = report
            .phases
            .iter()
            .find(|p| p.name == PhaseKind::FinalCopy)
            .map_or(0.0, |p| p.seconds);
        events.emit(Event::FinalPassHint {
            objects: report.stats.objects,
            seconds,
        });
    }
    report.duration_s = staged.t0.elapsed().as_secs_f64();
    stages::record_run(req.repo, &report, staged.started).await;
    Ok(report)
}
