//! Refreshing a running cluster (staging) from a snapshot, with seconds of
//! downtime whatever the database size.
//!
//! ```text
//! check (cluster, live databases, side names) ─▶ side databases <name>_haul_next, created like the live ones
//! live:   bucket: add only the objects staging lacks (never overwrite, never delete)
//!         ∥ pg_restore into each side database ─▶ row counts checked
//! paused: final bucket pass (overwrite what differs) ─▶ swap by rename, one transaction per server
//!         (<name> → <name>_haul_prev, <name>_haul_next → <name>) ─▶ delete extraneous (if asked) ─▶ resume
//! ```
//!
//! Failure before the swap: nothing is swapped, the side databases are
//! dropped, the cluster is resumed. Failure during the swap: it is undone
//! (a server's renames share one transaction; a second server's failure
//! swaps the first back). The previous databases stay as `<name>_haul_prev`
//! until the next refresh's live phase drops them, or `drop_previous`. The pause goes through the
//! same guard and pause record as a backup: `haul resume` recovers a
//! refresh killed while paused.
//!
//! Deleting extraneous keys comes after the swap: killed before it, staging
//! holds the old databases with a bucket that only gained objects; after
//! it, the new databases with their objects all present. The keys deleted
//! are the ones the paused pass found: the paused window lists the bucket
//! once.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use haul_manifest::{Phase, PhaseKind, RunKind, RunStats, Snapshot, SnapshotId};
use haul_mover::bucket_restore::{Executed, Restore, RestoreOptions, RestorePlan, RestoreStats};
use haul_mover::{Location, Repository};
use haul_pg::reload::{self, PlannedDb};
use haul_pg::shape;
use haul_pg::swap::{self, Swap};
use haul_pg::{DbLimits, DbPlan, DbRestoreOptions, DbRestoreReport, DbTarget, PgConn};
use serde::Serialize;
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::error::{Result, SnapshotError};
use crate::events::{Event, Events};
use crate::pause::{self, PauseCheck, PauseReport, PauseSpec, Processes, Runner};
use crate::{failpoint, resume, runs, window};

/// What to refresh, and how to pause it.
#[derive(Debug)]
pub struct RefreshRequest {
    /// The running cluster's bucket.
    pub target: Option<(Location, String)>,
    /// The running cluster's databases (each URL names the live database).
    pub databases: Vec<DbTarget>,
    pub pause: PauseSpec,
    pub delete_extraneous: bool,
    /// Drop the previous databases (`<name>_haul_prev`) once resumed.
    pub drop_previous: bool,
    pub db_options: DbRestoreOptions,
    pub db_limits: DbLimits,
}

/// One database of a refresh, as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshedDb {
    pub name: String,
    /// The live database, refreshed in place by the swap.
    pub database: String,
    pub url: String,
    /// The side database restored into while the cluster ran.
    pub side: String,
    /// Where the previous contents went (`None` once dropped).
    pub previous: Option<String>,
    pub swapped: bool,
    pub restore: DbRestoreReport,
}

/// The plan of a refresh (what `--dry-run` prints).
#[derive(Debug, Clone, Serialize)]
pub struct RefreshPlan {
    pub snapshot: SnapshotId,
    pub target: Option<String>,
    /// The bucket as it is now: what the live phase adds (missing) and the
    /// paused phase overwrites (different) or deletes (extraneous, if asked).
    pub plan: Option<RestorePlan>,
    /// Each database's restore into its side database.
    pub databases: Vec<DbPlan>,
    pub pause: PauseCheck,
    /// From past refreshes of this repository (pause, final pass, swap, resume).
    pub predicted_downtime_s: f64,
}

/// The result of a refresh, as `haul restore --pause ... --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    pub snapshot: SnapshotId,
    pub target: Option<String>,
    pub plan: Option<RestorePlan>,
    /// The live pass: objects added while the cluster ran.
    pub live: RestoreStats,
    /// The paused pass: objects overwritten (and deleted) while paused.
    pub paused: RestoreStats,
    pub databases: Vec<RefreshedDb>,
    pub downtime_s: f64,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
    pub pause: PauseReport,
}

impl RefreshReport {
    /// Databases whose restored row counts differ from the snapshot's.
    pub fn mismatched(&self) -> Vec<&DbRestoreReport> {
        self.databases
            .iter()
            .map(|d| &d.restore)
            .filter(|r| !r.row_count_mismatches.is_empty())
            .collect()
    }
}

/// A side database and everything its swap needs.
#[derive(Debug)]
struct Side {
    swap: Swap,
    /// The live database's connection (its server, its credentials).
    conn: PgConn,
    /// The restore into the side database, as planned before it existed
    /// (it is planned again once created, to restore into it).
    planned: PlannedDb,
    target: DbTarget,
}

/// A refresh whose checks are done and whose plan can be shown.
#[derive(Debug)]
pub struct RefreshJob<'a> {
    repo: &'a Repository,
    snapshot: &'a Snapshot,
    req: RefreshRequest,
    restore: Option<Restore<'a>>,
    runner: Arc<dyn Runner>,
    sides: Vec<Side>,
    pub plan: RefreshPlan,
    t0: Instant,
}

/// The run history's view of a refresh's paused phases.
fn predict(history: &[haul_manifest::RunRecord]) -> f64 {
    let mut totals: Vec<f64> = history
        .iter()
        .map(|r| {
            r.phases
                .iter()
                .filter(|p| p.paused)
                .map(|p| p.seconds)
                .sum::<f64>()
        })
        .filter(|s| *s > 0.0)
        .collect();
    totals.sort_by(f64::total_cmp);
    // No past refresh: pausing and resuming through kubectl waits for pods.
    totals.get(totals.len() / 2).copied().unwrap_or(10.0)
}

impl<'a> RefreshJob<'a> {
    /// Checks the cluster, the live databases and the bucket, and plans.
    /// Changes nothing.
    pub async fn plan(
        repo: &'a Repository,
        snapshot: &'a Snapshot,
        req: RefreshRequest,
        events: &Events,
    ) -> Result<Self> {
        let t0 = Instant::now();
        let runner: Arc<dyn Runner> = Arc::new(Processes);
        resume::recover_before_backup(
            repo,
            runner.clone(),
            req.pause.timeout,
            true,
            events.as_ref(),
        )
        .await?;
        let check = pause::control(req.pause.clone(), runner.clone())
            .check()
            .await?;
        let mut sides_targets = Vec::new();
        let mut swaps = Vec::new();
        for t in &req.databases {
            let (next, prev) = swap::names(&t.name, &t.conn)?;
            let admin = swap::admin(&t.conn, &t.name).await?;
            if !swap::exists(&admin, &t.name, &t.conn, &t.conn.dbname).await? {
                return Err(SnapshotError::NotRunning {
                    what: format!(
                        "database {} ({}) does not exist: a refresh swaps a live database; \
                         restore without --pause to create it",
                        t.name,
                        t.conn.display_url()
                    ),
                });
            }
            sides_targets.push(DbTarget {
                name: t.name.clone(),
                conn: t.conn.with_dbname(&next),
            });
            swaps.push(Swap {
                name: t.name.clone(),
                live: t.conn.dbname.clone(),
                next,
                prev,
            });
        }
        // The side databases do not exist yet: they are created (like the
        // live ones) when the live phase starts.
        let planned = reload::plan(snapshot, &sides_targets, req.db_options).await?;
        let sides: Vec<Side> = planned
            .into_iter()
            .zip(swaps)
            .zip(&req.databases)
            .zip(sides_targets)
            .map(|(((planned, swap), t), target)| Side {
                swap,
                conn: t.conn.clone(),
                planned,
                target,
            })
            .collect();
        let (restore, plan) = match &req.target {
            Some((loc, _)) => {
                if snapshot.bucket.is_none() {
                    return Err(SnapshotError::NoBucket {
                        id: snapshot.id.to_string(),
                    });
                }
                let r = Restore::new(repo, snapshot, loc.clone()).await?;
                let p = r.plan().await?;
                (Some(r), Some(p))
            }
            None => (None, None),
        };
        let history = repo.runs(RunKind::Restore, runs::HISTORY_RUNS).await?;
        let plan = RefreshPlan {
            snapshot: snapshot.id,
            target: req.target.as_ref().map(|(_, u)| u.clone()),
            plan,
            databases: sides.iter().map(|s| s.planned.plan.clone()).collect(),
            pause: check,
            predicted_downtime_s: predict(&history),
        };
        Ok(Self {
            repo,
            snapshot,
            req,
            restore,
            runner,
            sides,
            plan,
            t0,
        })
    }

    /// Drops every side database (best effort: a failure is a warning).
    async fn drop_sides(&self) {
        for s in &self.sides {
            let dropped = async {
                let admin = swap::admin(&s.conn, &s.swap.name).await?;
                swap::drop_if_exists(&admin, &s.swap.name, &s.conn, &s.swap.next).await
            };
            if let Err(e) = dropped.await {
                tracing::warn!(
                    "could not drop the side database {}: {}",
                    s.swap.next,
                    haul_mover::error_chain(&e)
                );
            }
        }
    }

    /// Live: the side databases are created and restored, the bucket gains
    /// what it lacks. The cluster runs throughout and sees no key change.
    async fn live(&self) -> Result<(RestoreStats, Vec<DbRestoreReport>)> {
        for s in &self.sides {
            let admin = swap::admin(&s.conn, &s.swap.name).await?;
            swap::drop_if_exists(&admin, &s.swap.name, &s.conn, &s.swap.next).await?;
            // The previous refresh's databases make room for this one's now,
            // while the cluster runs: dropping a database waits for a
            // checkpoint, which costs a second or more of a paused window.
            swap::drop_if_exists(&admin, &s.swap.name, &s.conn, &s.swap.prev).await?;
            // Like the live database: the swap changes nothing but the data.
            let like = shape::read(&admin, &s.swap.name, &s.conn, &s.swap.live).await?;
            shape::create(
                &admin,
                &s.swap.name,
                &s.conn,
                &s.swap.next,
                Some(&like),
                false,
            )
            .await?;
        }
        failpoint::hit("refresh-live").await?;
        // Planned again now that the side databases exist (empty): restore into them.
        let targets: Vec<DbTarget> = self.sides.iter().map(|s| s.target.clone()).collect();
        let planned = reload::plan(self.snapshot, &targets, self.req.db_options).await?;
        let add_only = RestoreOptions {
            add_only: true,
            ..RestoreOptions::default()
        };
        let bucket = async {
            match (&self.restore, &self.plan.plan) {
                (Some(r), Some(p)) => Ok(r.execute(&add_only, p).await?),
                _ => Ok::<_, SnapshotError>(RestoreStats::default()),
            }
        };
        let dbs = futures::future::join_all(
            planned
                .iter()
                .map(|p| p.execute(self.repo, self.req.db_options, &self.req.db_limits)),
        );
        let (bucket, dbs) = tokio::join!(bucket, dbs);
        let dbs = dbs.into_iter().collect::<Result<Vec<_>, _>>()?;
        let stats = bucket?;
        if let Some(bad) = dbs.iter().find(|d| !d.row_count_mismatches.is_empty()) {
            return Err(SnapshotError::RefreshCheck {
                what: format!(
                    "database {}: the side database's row counts differ from the snapshot's in {} table(s) \
                     (e.g. {})",
                    bad.name,
                    bad.row_count_mismatches.len(),
                    bad.row_count_mismatches[0].table
                ),
            });
        }
        Ok((stats, dbs))
    }

    /// Swaps every database, one transaction per server; a failure on a
    /// later server swaps the earlier ones back.
    async fn swap_all(&self) -> Result<()> {
        let mut by_server: BTreeMap<String, Vec<&Side>> = BTreeMap::new();
        for s in &self.sides {
            by_server.entry(s.conn.server()).or_default().push(s);
        }
        let mut done: Vec<&Vec<&Side>> = Vec::new();
        for group in by_server.values() {
            let first = group[0];
            let swapped = async {
                let mut admin = swap::admin(&first.conn, &first.swap.name).await?;
                // Dropped while live (see `live`); only one left since (by
                // hand, or a refresh killed after its swap) is dropped here.
                for s in group {
                    swap::drop_if_exists(&admin, &s.swap.name, &s.conn, &s.swap.prev).await?;
                }
                let swaps: Vec<Swap> = group.iter().map(|s| s.swap.clone()).collect();
                swap::swap(&mut admin, &first.conn, &swaps).await
            };
            if let Err(e) = swapped.await {
                for g in done.iter().rev() {
                    let back = async {
                        let mut admin = swap::admin(&g[0].conn, &g[0].swap.name).await?;
                        let swaps: Vec<Swap> = g.iter().map(|s| s.swap.clone()).collect();
                        swap::swap_back(&mut admin, &g[0].conn, &swaps).await
                    };
                    if let Err(b) = back.await {
                        tracing::error!(
                            "COULD NOT SWAP BACK the databases on {}: {}",
                            g[0].conn.server(),
                            haul_mover::error_chain(&b)
                        );
                    }
                }
                return Err(e.into());
            }
            done.push(group);
        }
        Ok(())
    }

    /// Carries the refresh out: live phase, pause, final pass and swap, resume.
    pub async fn execute(self, cancel: &Cancel, events: &Events) -> Result<RefreshReport> {
        let started = Utc::now();
        let spec = self.req.pause.clone();
        let mut phases = vec![Phase::timed(
            PhaseKind::Plan,
            self.t0.elapsed().as_secs_f64(),
        )];

        // Live: the cluster runs; cancelling stops and cleans up.
        let t_live = Instant::now();
        let live = tokio::select! {
            r = self.live() => r,
            signal = cancel.cancelled() => Err(SnapshotError::Interrupted { signal }),
        };
        let (live_stats, restored) = match live {
            Ok(x) => x,
            Err(e) => {
                self.drop_sides().await;
                return Err(e);
            }
        };
        phases.push(Phase {
            objects: live_stats.objects_copied,
            bytes: live_stats.bytes_copied + restored.iter().map(|d| d.bytes).sum::<u64>(),
            ..Phase::timed(PhaseKind::Copy, t_live.elapsed().as_secs_f64())
        });

        // Paused: the same guard, pause record and window as a backup.
        let run = haul_mover::new_snapshot_id()?;
        let guard = window::recorded_guard(self.repo, &spec, self.runner.clone(), run, events);
        let cluster = pause::control(spec.clone(), self.runner.clone());
        let t_pause = Instant::now();
        let mut paused_phases = Vec::new();
        let mut swapped = false;
        let paused = async {
            let pause = window::pause(cluster.as_ref(), &guard, events.as_ref(), t_pause).await?;
            let pause_s = pause.seconds;
            paused_phases.push(pause);
            failpoint::hit("refresh-paused").await?;
            let t = Instant::now();
            // One listing of the target while paused: this pass decides each
            // key afresh (objects read while live are not read again unless
            // rewritten since) and finds the extraneous keys deleted below.
            let Executed {
                stats: copied,
                extraneous,
            } = match &self.restore {
                Some(r) => r.run(&RestoreOptions::default(), None).await?,
                None => Executed::default(),
            };
            paused_phases.push(
                Phase {
                    objects: copied.objects_copied,
                    bytes: copied.bytes_copied,
                    ..Phase::timed(PhaseKind::FinalCopy, t.elapsed().as_secs_f64())
                }
                .while_paused(),
            );
            failpoint::hit("refresh-swap").await?;
            let t = Instant::now();
            self.swap_all().await?;
            swapped = !self.sides.is_empty();
            paused_phases
                .push(Phase::timed(PhaseKind::Swap, t.elapsed().as_secs_f64()).while_paused());
            let mut stats = copied;
            if self.req.delete_extraneous
                && let Some(r) = &self.restore
            {
                let t = Instant::now();
                stats.objects_deleted = r.delete_keys(&extraneous).await?;
                paused_phases.push(
                    Phase {
                        objects: stats.objects_deleted,
                        ..Phase::timed(PhaseKind::Delete, t.elapsed().as_secs_f64())
                    }
                    .while_paused(),
                );
            }
            Ok::<_, SnapshotError>((stats, pause_s))
        };
        let outcome = window::guarded(paused, cancel).await;
        if let Err(e) = &outcome {
            events.emit(Event::RefreshFailedWhilePaused {
                error: haul_mover::error_chain(e),
                swapped,
            });
            if !swapped {
                self.drop_sides().await;
            }
        }
        let window::Resumed {
            scaled,
            result: resumed,
            resume_s,
            downtime_s,
            phase,
        } = window::resume(&guard, t_pause, events.as_ref()).await;
        paused_phases.push(phase);
        let (paused_stats, pause_s) = match outcome {
            Ok(x) => x,
            Err(e) => return Err(resumed.err().unwrap_or(e)),
        };
        if let Err(e) = resumed {
            // Refreshed, but left paused: say both, for --json too.
            return Err(SnapshotError::done_but_not_resumed(
                "refresh",
                "staging",
                format!(
                    "refreshed from snapshot {}: {} objects copied, {} deleted, {} database(s) swapped",
                    self.snapshot.id,
                    live_stats.objects_copied + paused_stats.objects_copied,
                    paused_stats.objects_deleted,
                    self.sides.len()
                ),
                e,
            ));
        }
        phases.extend(paused_phases);

        let mut databases = Vec::new();
        for (s, r) in self.sides.iter().zip(restored) {
            let mut previous = Some(s.swap.prev.clone());
            if self.req.drop_previous {
                let dropped = async {
                    let admin = swap::admin(&s.conn, &s.swap.name).await?;
                    swap::drop_if_exists(&admin, &s.swap.name, &s.conn, &s.swap.prev).await
                };
                match dropped.await {
                    Ok(()) => previous = None,
                    Err(e) => tracing::warn!(
                        "could not drop the previous database {}: {}",
                        s.swap.prev,
                        haul_mover::error_chain(&e)
                    ),
                }
            }
            databases.push(RefreshedDb {
                name: s.swap.name.clone(),
                database: s.swap.live.clone(),
                url: s.conn.display_url(),
                side: s.swap.next.clone(),
                previous,
                swapped,
                restore: r,
            });
        }
        let duration_s = self.t0.elapsed().as_secs_f64();
        let report = RefreshReport {
            snapshot: self.snapshot.id,
            target: self.plan.target.clone(),
            plan: self.plan.plan.clone(),
            live: live_stats,
            paused: paused_stats,
            databases,
            downtime_s,
            duration_s,
            phases,
            pause: PauseReport {
                method: spec.method,
                context: spec.context.clone(),
                namespace: spec.namespace.clone(),
                scaled,
                pause_s,
                resume_s,
                resumed: true,
            },
        };
        runs::record(
            self.repo,
            RunKind::Restore,
            self.snapshot.id,
            started,
            duration_s,
            &report.phases,
            RunStats {
                downtime_s: Some(downtime_s),
                predicted_downtime_s: Some(self.plan.predicted_downtime_s),
                ..RunStats::default()
            },
        )
        .await;
        Ok(report)
    }
}
