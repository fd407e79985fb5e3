//! The stages a backup is made of, for the plain and the two-phase
//! procedure alike: check the request, stage (databases, parent, Helm
//! values), copy the bucket while the databases are dumped, commit the root.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use haul_manifest::{
    BucketRecord, ChunkId, DatabaseRecord, GlobalsRecord, Phase, PhaseKind, RunKind, RunStats,
    Snapshot, SnapshotId,
};
use haul_mover::bucket_backup::{self as bucket, BackupStats};
use haul_mover::{Location, Repository};
use haul_pg::dump::{self, Prepared};
use haul_pg::globals::{self, GlobalsBackupReport, PreparedGlobals};
use haul_pg::{DbBackupReport, DbSource, PgError, tools};
use tokio::time::Instant;

use super::report::{BackupReport, BackupRequest};
use crate::error::{Result, SnapshotError};
use crate::runs;

/// The newest snapshot of the same sources: the base of an incremental
/// bucket backup (databases deduplicate by content whatever the parent).
pub(crate) async fn parent_of(
    repo: &Repository,
    source: Option<&Location>,
    databases: &[DbSource],
) -> Result<Option<Snapshot>> {
    let url = source.map(|s| s.url.to_string());
    let snaps = repo.snapshots().await?;
    Ok(snaps.into_iter().rev().find(|s| match &url {
        Some(url) => s.bucket.as_ref().is_some_and(|b| &b.url == url),
        None => {
            s.bucket.is_none()
                && databases
                    .iter()
                    .any(|d| s.databases.iter().any(|r| r.name == d.name))
        }
    }))
}

pub(crate) fn check_request(req: &BackupRequest<'_>) -> Result<()> {
    if req.source.is_none() && req.databases.is_empty() && req.globals.is_none() {
        return Err(SnapshotError::NothingToBackUp);
    }
    let mut names = HashSet::new();
    for d in &req.databases {
        if !names.insert(d.name.as_str()) {
            return Err(PgError::DuplicateDatabase(d.name.clone()).into());
        }
    }
    if let (Some(p), Some(s)) = (&req.pause, req.source)
        && p.method.is_enterprise()
    {
        return Err(SnapshotError::EnterpriseHasNoBucket {
            source_url: s.url.to_string(),
        });
    }
    Ok(())
}

/// Connects to every database and finds a pg_dump new enough for each.
pub(crate) async fn prepare_databases(req: &BackupRequest<'_>) -> Result<Vec<Prepared>> {
    if req.databases.is_empty() {
        return Ok(Vec::new());
    }
    let tool = tools::find("pg_dump").await?;
    futures::future::try_join_all(
        req.databases
            .iter()
            .map(|d| dump::prepare(d.clone(), &tool)),
    )
    .await
    .map_err(Into::into)
}

pub(crate) async fn prepare_globals(req: &BackupRequest<'_>) -> Result<Option<PreparedGlobals>> {
    match &req.globals {
        Some(c) => Ok(Some(globals::prepare(c.clone()).await?)),
        None => Ok(None),
    }
}

/// Everything checked and read before the first byte is copied.
pub(crate) struct Staged {
    pub id: SnapshotId,
    pub started: DateTime<Utc>,
    pub t0: Instant,
    pub dbs: Vec<Prepared>,
    pub globals: Option<PreparedGlobals>,
    pub parent: Option<Snapshot>,
    pub helm_values: Option<ChunkId>,
    pub phases: Vec<Phase>,
}

/// Checks every database (the caller has checked the request), finds the
/// parent, stores the Helm values.
pub(crate) async fn stage(req: &BackupRequest<'_>) -> Result<Staged> {
    let t0 = Instant::now();
    let started = Utc::now();
    let id = haul_mover::new_snapshot_id()?;
    let dbs = prepare_databases(req).await?;
    let globals = prepare_globals(req).await?;
    let parent = parent_of(req.repo, req.source, &req.databases).await?;
    let helm_values = match &req.helm_values {
        Some(b) => Some(req.repo.put_plain(b.clone()).await?.0),
        None => None,
    };
    Ok(Staged {
        id,
        started,
        t0,
        dbs,
        globals,
        parent,
        helm_values,
        phases: vec![Phase::timed(PhaseKind::Check, t0.elapsed().as_secs_f64())],
    })
}

/// The bucket pass and the dumps, run together.
pub(crate) struct Copied {
    pub stats: BackupStats,
    pub bucket: Option<BucketRecord>,
    pub records: Vec<DatabaseRecord>,
    pub databases: Vec<DbBackupReport>,
    pub globals_record: Option<GlobalsRecord>,
    pub globals_report: Option<GlobalsBackupReport>,
    pub phases: Vec<Phase>,
}

/// Copies the bucket against `base` while every database is dumped. The
/// bucket pass is the phase `pass`; the dumps together the phase `dump`.
pub(crate) async fn copy_and_dump(
    req: &BackupRequest<'_>,
    dbs: Vec<Prepared>,
    prepared_globals: Option<PreparedGlobals>,
    base: Option<&BucketRecord>,
    pass: PhaseKind,
) -> Result<Copied> {
    let repo = req.repo;
    let copy_bucket = async {
        match req.source {
            Some(source) => {
                let t = Instant::now();
                let done = bucket::backup(repo, source, base).await?;
                Ok(Some((done, t.elapsed().as_secs_f64())))
            }
            None => Ok::<_, SnapshotError>(None),
        }
    };
    let dumps = async {
        let t = Instant::now();
        let dumped = async {
            futures::future::try_join_all(dbs.into_iter().map(|p| p.dump(repo, &req.db_limits)))
                .await
                .map_err(SnapshotError::from)
        };
        let dump_globals = async {
            match prepared_globals {
                Some(g) => Ok(Some(g.dump(repo, &req.db_limits).await?)),
                None => Ok::<_, SnapshotError>(None),
            }
        };
        let (d, g) = futures::try_join!(dumped, dump_globals)?;
        Ok::<_, SnapshotError>((d, g, t.elapsed().as_secs_f64()))
    };
    let (done, (dumped, globals, dump_s)) = futures::try_join!(copy_bucket, dumps)?;
    let (records, databases): (Vec<_>, Vec<_>) = dumped.into_iter().unzip();
    let (globals_record, globals_report) = globals.unzip();
    let mut phases = Vec::new();
    let (stats, bucket) = match done {
        Some((d, seconds)) => {
            phases.push(Phase {
                name: pass,
                seconds,
                objects: d.stats.objects_read,
                bytes: d.stats.bytes_read,
                listed: d.stats.objects,
            });
            (d.stats, Some(d.record))
        }
        None => (BackupStats::default(), None),
    };
    if !databases.is_empty() || globals_report.is_some() {
        phases.push(Phase {
            name: PhaseKind::Dump,
            seconds: dump_s,
            objects: databases.len() as u64,
            bytes: databases.iter().map(|d| d.bytes).sum::<u64>()
                + globals_report.as_ref().map_or(0, |g| g.bytes),
            listed: 0,
        });
    }
    Ok(Copied {
        stats,
        bucket,
        records,
        databases,
        globals_record,
        globals_report,
        phases,
    })
}

/// Writes the snapshot root: the backup exists from here on. Returns the
/// report, without the cluster's fields.
pub(crate) async fn commit(
    req: &BackupRequest<'_>,
    staged: &Staged,
    copied: Copied,
    mut phases: Vec<Phase>,
) -> Result<BackupReport> {
    let snapshot = Snapshot {
        version: haul_manifest::FORMAT_VERSION,
        id: staged.id,
        time: staged.started,
        parent: staged.parent.as_ref().map(|p| p.id),
        tool: tool_version(),
        hostname: hostname(),
        bucket: copied.bucket,
        databases: copied.records,
        globals: copied.globals_record,
        helm_values: staged.helm_values,
        phases: phases.clone(),
        labels: req.labels.clone(),
    };
    let t_commit = Instant::now();
    req.repo.write_snapshot(&snapshot).await?;
    phases.push(Phase::timed(
        PhaseKind::Commit,
        t_commit.elapsed().as_secs_f64(),
    ));
    Ok(BackupReport {
        snapshot: staged.id,
        parent: snapshot.parent,
        stats: copied.stats,
        databases: copied.databases,
        globals: copied.globals_report,
        helm_values: staged.helm_values,
        duration_s: staged.t0.elapsed().as_secs_f64(),
        phases,
        downtime_s: None,
        predicted_downtime_s: None,
        precopy_rounds: None,
        precopy: Vec::new(),
        change_bps: None,
        pause: None,
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Records a backup's timings for future predictions (best effort).
pub(crate) async fn record_run(repo: &Repository, report: &BackupReport, started: DateTime<Utc>) {
    let stats = RunStats {
        change_bps: report.change_bps,
        downtime_s: report.downtime_s,
        predicted_downtime_s: report.predicted_downtime_s,
    };
    runs::record(
        repo,
        RunKind::Backup,
        report.snapshot,
        started,
        report.duration_s,
        &report.phases,
        stats,
    )
    .await;
}

/// `haul 0.1.0`: recorded in every snapshot.
fn tool_version() -> String {
    format!("haul {}", env!("CARGO_PKG_VERSION"))
}
