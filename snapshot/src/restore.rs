//! The restore procedure: plan, show, execute.

use std::time::Instant;

use chrono::Utc;
use haul_manifest::{Phase, Snapshot, SnapshotId};
use haul_mover::restore::{Restore, RestoreOptions, RestorePlan, RestoreStats};
use haul_mover::{Location, Repository};
use serde::Serialize;

use crate::backup::record_run;
use crate::{Result, SnapshotError};

/// A restore whose plan is computed and can be shown before it runs.
#[derive(Debug)]
pub struct RestoreJob<'a> {
    repo: &'a Repository,
    snapshot: &'a Snapshot,
    restore: Restore<'a>,
    pub plan: RestorePlan,
    plan_seconds: f64,
}

/// The result of a restore, as `haul restore --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    pub target: String,
    pub plan: RestorePlan,
    #[serde(flatten)]
    pub stats: RestoreStats,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
}

impl<'a> RestoreJob<'a> {
    /// Computes the plan of restoring `snapshot`'s bucket into `target`.
    pub async fn plan(
        repo: &'a Repository,
        snapshot: &'a Snapshot,
        target: Location,
    ) -> Result<Self> {
        if snapshot.bucket.is_none() {
            return Err(SnapshotError::NoBucket {
                id: snapshot.id.to_string(),
            });
        }
        let t0 = Instant::now();
        let restore = Restore::new(repo, snapshot, target).await?;
        let plan = restore.plan().await?;
        Ok(Self {
            repo,
            snapshot,
            restore,
            plan,
            plan_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Carries the plan out.
    pub async fn execute(self, opts: &RestoreOptions, target_url: &str) -> Result<RestoreReport> {
        let started = Utc::now();
        let t0 = Instant::now();
        let stats = self.restore.execute(opts, &self.plan).await?;
        let copy = Phase {
            name: "copy".into(),
            seconds: t0.elapsed().as_secs_f64(),
            objects: stats.objects_copied,
            bytes: stats.bytes_copied,
        };
        let plan = Phase {
            name: "plan".into(),
            seconds: self.plan_seconds,
            objects: 0,
            bytes: 0,
        };
        let phases = vec![plan, copy];
        let duration_s = self.plan_seconds + t0.elapsed().as_secs_f64();
        let report = RestoreReport {
            snapshot: self.snapshot.id,
            target: target_url.to_owned(),
            plan: self.plan,
            stats,
            duration_s,
            phases,
        };
        record_run(
            self.repo,
            "restore",
            self.snapshot.id,
            started,
            duration_s,
            &report.phases,
            &report.stats,
        )
        .await;
        Ok(report)
    }
}
