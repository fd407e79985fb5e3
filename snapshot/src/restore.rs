//! The restore procedure: plan every part (bucket, databases, roles), show
//! the plan, then execute: roles first (the databases' owners), then the
//! bucket and the databases at once.

use chrono::Utc;
use haul_manifest::{Phase, PhaseKind, RunKind, RunStats, Snapshot, SnapshotId};
use haul_mover::bucket_restore::{Restore, RestoreOptions, RestorePlan, RestoreStats};
use haul_mover::{Location, Repository};
use serde::Serialize;
use tokio::time::Instant;

use crate::cancel::Cancel;
use crate::error::{ComponentOutcome, Result, SnapshotError};
use crate::runs;
use crate::units::human_bytes;
use haul_pg::globals::{self, GlobalsRestoreReport, GlobalsTarget};
use haul_pg::reload::{self, PlannedDb};
use haul_pg::{DbLimits, DbPlan, DbRestoreOptions, DbRestoreReport, DbTarget, PgConn};

/// What to restore, and where.
#[derive(Debug, Default)]
pub struct RestoreRequest {
    /// The bucket to restore into.
    pub target: Option<(Location, String)>,
    pub databases: Vec<DbTarget>,
    /// A server to replay the snapshot's roles on.
    pub globals: Option<PgConn>,
    pub db_options: DbRestoreOptions,
    pub db_limits: DbLimits,
    /// Restore only shard K of N of the bucket (see `haul_manifest::shard`):
    /// its range of keys, cut from the snapshot's manifest alike by every
    /// shard.
    pub shard: Option<(u32, u32)>,
}

/// The range a restore shard covers, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreShard {
    pub shard: u32,
    pub shards: u32,
    /// Keys at or above `from`, below `to` (none: unbounded).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The bucket part of a restore.
#[derive(Debug)]
struct BucketJob<'a> {
    restore: Restore<'a>,
    url: String,
}

/// A restore whose plan is computed and can be shown before it runs.
#[derive(Debug)]
pub struct RestoreJob<'a> {
    repo: &'a Repository,
    snapshot: &'a Snapshot,
    bucket: Option<BucketJob<'a>>,
    /// The bucket's plan, when a bucket target was given.
    pub plan: Option<RestorePlan>,
    databases: Vec<PlannedDb>,
    globals: Option<GlobalsTarget>,
    db_options: DbRestoreOptions,
    db_limits: DbLimits,
    plan_seconds: f64,
    /// The range, for a restore shard.
    pub shard: Option<RestoreShard>,
}

/// The result of a restore, as `haul restore --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    /// The bucket restored into, if any.
    pub target: Option<String>,
    pub plan: Option<RestorePlan>,
    /// The bucket's counters (all zero without a bucket target).
    #[serde(flatten)]
    pub stats: RestoreStats,
    pub databases: Vec<DbRestoreReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsRestoreReport>,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
    /// The range restored, for a restore shard (`--shard K/N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<RestoreShard>,
}

impl RestoreReport {
    /// Databases whose row counts differ from the snapshot's.
    pub fn mismatched(&self) -> Vec<&DbRestoreReport> {
        self.databases
            .iter()
            .filter(|d| !d.row_count_mismatches.is_empty())
            .collect()
    }
}

impl<'a> RestoreJob<'a> {
    /// Checks every target and computes the plan. Writes nothing.
    pub async fn plan(
        repo: &'a Repository,
        snapshot: &'a Snapshot,
        req: RestoreRequest,
    ) -> Result<Self> {
        let t0 = Instant::now();
        if req.globals.is_some() && snapshot.globals.is_none() {
            return Err(SnapshotError::NoGlobals {
                snapshot: snapshot.id.to_string(),
            });
        }
        let databases = reload::plan(snapshot, &req.databases, req.db_options).await?;
        let globals = match req.globals {
            Some(c) => Some(globals::plan_restore(c).await?),
            None => None,
        };
        let mut shard = None;
        let (bucket, plan) = match req.target {
            Some((target, url)) => {
                let Some(b) = &snapshot.bucket else {
                    return Err(SnapshotError::NoBucket {
                        id: snapshot.id.to_string(),
                    });
                };
                let range = match req.shard {
                    None => None,
                    Some((k, n)) => {
                        // Every shard cuts the snapshot's manifest alike.
                        let (split, _) =
                            haul_mover::listing::shard_split(&target, Some(&b.segments), n).await?;
                        let (from, to) = split.range(k);
                        shard = Some(RestoreShard {
                            shard: k,
                            shards: n,
                            from,
                            to,
                        });
                        Some((split, k))
                    }
                };
                let restore = Restore::new_shard(repo, snapshot, target, range).await?;
                let plan = restore.plan().await?;
                (Some(BucketJob { restore, url }), Some(plan))
            }
            None => (None, None),
        };
        Ok(Self {
            repo,
            snapshot,
            bucket,
            plan,
            databases,
            globals,
            db_options: req.db_options,
            db_limits: req.db_limits,
            plan_seconds: t0.elapsed().as_secs_f64(),
            shard,
        })
    }

    /// Where each database goes and what happens to it.
    pub fn database_plans(&self) -> Vec<DbPlan> {
        self.databases.iter().map(|d| d.plan.clone()).collect()
    }

    /// The server the roles will be replayed on, if any.
    pub fn globals_target(&self) -> Option<String> {
        self.globals.as_ref().map(|g| g.conn.display_url())
    }

    /// The bucket target's URL, if any.
    pub fn target_url(&self) -> Option<&str> {
        self.bucket.as_ref().map(|b| b.url.as_str())
    }

    /// Carries the plan out; stops (with whatever was written so far left
    /// in place, and no run record) when `cancel` fires.
    pub async fn execute(self, opts: &RestoreOptions, cancel: &Cancel) -> Result<RestoreReport> {
        tokio::select! {
            r = self.run(opts) => r,
            signal = cancel.cancelled() => Err(SnapshotError::Interrupted { signal }),
        }
    }

    /// A run where the bucket or a database failed: each component's
    /// outcome, so nobody has to guess what the target now holds. Only the
    /// first failure when nothing else was restored.
    fn partly(
        &self,
        stats: Result<RestoreStats>,
        dbs: Vec<Result<DbRestoreReport>>,
    ) -> SnapshotError {
        let mut outcomes = Vec::new();
        let mut first = None;
        let mut fail = |component: String, e: SnapshotError, left: String| {
            let out = ComponentOutcome::failed(component, &e, left);
            first.get_or_insert(e);
            out
        };
        if let Some(b) = &self.bucket {
            outcomes.push(match stats {
                Ok(s) => ComponentOutcome::done(
                    "bucket",
                    format!(
                        "{}: {} objects copied ({}), {} already in place, {} deleted",
                        b.url,
                        s.objects_copied,
                        human_bytes(s.bytes_copied),
                        s.objects_skipped,
                        s.objects_deleted
                    ),
                ),
                Err(e) => fail(
                    "bucket".into(),
                    e,
                    format!(
                        "{}: partly restored; run the restore again to finish it",
                        b.url
                    ),
                ),
            });
        }
        for (d, r) in self.databases.iter().zip(dbs) {
            let plan = &d.plan;
            let component = format!("database {}", plan.name);
            outcomes.push(match r {
                Ok(rep) => ComponentOutcome::done(
                    component,
                    format!(
                        "restored into {} ({} tables, {} rows)",
                        plan.url, rep.tables_checked, rep.rows
                    ),
                ),
                Err(e) => fail(component, e, format!("{} left as it was", plan.url)),
            });
        }
        let source = first.expect("a component failed");
        if outcomes.len() == 1 {
            return source;
        }
        SnapshotError::Partial {
            what: "restore",
            outcomes,
            source: Box::new(source),
        }
    }

    async fn run(self, opts: &RestoreOptions) -> Result<RestoreReport> {
        let started = Utc::now();
        let t0 = Instant::now();
        let repo = self.repo;

        let globals = match (&self.globals, &self.snapshot.globals) {
            (Some(g), Some(record)) => Some(g.apply(repo, record, &self.db_limits).await?),
            _ => None,
        };
        let roles_seconds = t0.elapsed().as_secs_f64();

        let t_copy = Instant::now();
        let copy_bucket = async {
            match (&self.bucket, &self.plan) {
                (Some(b), Some(plan)) => b.restore.execute(opts, plan).await.map_err(Into::into),
                _ => Ok::<_, SnapshotError>(RestoreStats::default()),
            }
        };
        // Every database runs to its end (a failed one drops what it
        // created); the first error is reported after all have finished.
        let restore_dbs = futures::future::join_all(
            self.databases
                .iter()
                .map(|d| d.execute(repo, self.db_options, &self.db_limits)),
        );
        let (stats, dbs) = tokio::join!(copy_bucket, restore_dbs);
        let dbs: Vec<Result<DbRestoreReport>> =
            dbs.into_iter().map(|r| r.map_err(Into::into)).collect();
        if stats.is_err() || dbs.iter().any(Result::is_err) {
            return Err(self.partly(stats, dbs));
        }
        let databases = dbs.into_iter().collect::<Result<Vec<_>>>()?;
        let stats = stats?;

        let mut phases = vec![Phase::timed(PhaseKind::Plan, self.plan_seconds)];
        if let Some(g) = &globals {
            phases.push(Phase {
                bytes: g.bytes,
                ..Phase::timed(PhaseKind::Roles, roles_seconds)
            });
        }
        phases.push(Phase {
            objects: stats.objects_copied,
            bytes: stats.bytes_copied + databases.iter().map(|d| d.bytes).sum::<u64>(),
            ..Phase::timed(PhaseKind::Copy, t_copy.elapsed().as_secs_f64())
        });
        let duration_s = self.plan_seconds + t0.elapsed().as_secs_f64();
        let report = RestoreReport {
            snapshot: self.snapshot.id,
            target: self.bucket.as_ref().map(|b| b.url.clone()),
            plan: self.plan,
            stats,
            databases,
            globals,
            duration_s,
            phases,
            shard: self.shard.clone(),
        };
        runs::record(
            self.repo,
            RunKind::Restore,
            self.snapshot.id,
            started,
            duration_s,
            &report.phases,
            RunStats::default(),
        )
        .await;
        Ok(report)
    }
}
