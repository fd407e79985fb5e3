//! The backup procedure: check every database, copy what changed from the
//! bucket while the databases are dumped, then commit the snapshot root.
//!
//! Everything that can be checked before writing is checked first (each
//! database answers, its pg_dump is new enough), so a bad URL or password
//! costs nothing. The root is written last: if the copy or any dump fails,
//! there is no snapshot.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use haul_manifest::{Phase, RunRecord, Snapshot, SnapshotId};
use haul_mover::backup::{self as bucket, BackupPlan, BackupStats};
use haul_mover::{Location, Repository};
use serde::Serialize;

use crate::db::dump::{self, Prepared};
use crate::db::globals::{self, GlobalsBackupReport, PreparedGlobals};
use crate::db::{DbBackupReport, DbLimits, DbPreview, DbSource, PgConn, tools};
use crate::{Result, SnapshotError, tool_version};

/// What to back up.
#[derive(Debug)]
pub struct BackupRequest<'a> {
    pub repo: &'a Repository,
    pub source: Option<&'a Location>,
    /// Databases to dump, each under the operator's name for it.
    pub databases: Vec<DbSource>,
    /// A server whose roles to capture (`pg_dumpall --globals-only`).
    pub globals: Option<PgConn>,
    pub labels: BTreeMap<String, String>,
    pub db_limits: DbLimits,
}

/// The result of a committed backup, as `haul backup --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub parent: Option<SnapshotId>,
    /// The bucket's counters (all zero without --source).
    #[serde(flatten)]
    pub stats: BackupStats,
    pub databases: Vec<DbBackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsBackupReport>,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
}

/// What a backup would do, as `haul backup --dry-run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPreview {
    pub parent: Option<SnapshotId>,
    #[serde(flatten)]
    pub plan: Option<BackupPlan>,
    pub databases: Vec<DbPreview>,
}

/// The newest snapshot of the same sources: the base of an incremental
/// bucket backup (databases deduplicate by content whatever the parent).
async fn parent_of(
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

fn check_request(req: &BackupRequest<'_>) -> Result<()> {
    if req.source.is_none() && req.databases.is_empty() && req.globals.is_none() {
        return Err(SnapshotError::NothingToBackUp);
    }
    let mut names = std::collections::HashSet::new();
    for d in &req.databases {
        if !names.insert(d.name.as_str()) {
            return Err(SnapshotError::DuplicateDatabase(d.name.clone()));
        }
    }
    Ok(())
}

/// Connects to every database and finds a pg_dump new enough for each.
async fn prepare_databases(req: &BackupRequest<'_>) -> Result<Vec<Prepared>> {
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
}

async fn prepare_globals(req: &BackupRequest<'_>) -> Result<Option<PreparedGlobals>> {
    match &req.globals {
        Some(c) => Ok(Some(globals::prepare(c.clone()).await?)),
        None => Ok(None),
    }
}

/// Plans a backup without reading object data or writing anything; checks
/// that every database answers.
pub async fn preview(req: &BackupRequest<'_>) -> Result<BackupPreview> {
    check_request(req)?;
    let parent = parent_of(req.repo, req.source, &req.databases).await?;
    let plan = match req.source {
        Some(source) => Some(
            bucket::plan(
                req.repo,
                source,
                parent.as_ref().and_then(|p| p.bucket.as_ref()),
            )
            .await?,
        ),
        None => None,
    };
    let prepared = prepare_databases(req).await?;
    prepare_globals(req).await?;
    let databases = futures::future::try_join_all(prepared.iter().map(Prepared::preview)).await?;
    Ok(BackupPreview {
        parent: parent.map(|p| p.id),
        plan,
        databases,
    })
}

/// Runs a backup and commits its snapshot.
pub async fn run(req: &BackupRequest<'_>) -> Result<BackupReport> {
    check_request(req)?;
    let repo = req.repo;
    let started = Utc::now();
    let t0 = Instant::now();
    let id = haul_mover::new_snapshot_id()?;
    let prepared = prepare_databases(req).await?;
    let prepared_globals = prepare_globals(req).await?;
    let parent = parent_of(repo, req.source, &req.databases).await?;
    let parent_bucket = parent.as_ref().and_then(|p| p.bucket.as_ref());
    let check_phase = Phase {
        name: "check".into(),
        seconds: t0.elapsed().as_secs_f64(),
        objects: 0,
        bytes: 0,
    };

    let t_copy = Instant::now();
    let copy_bucket = async {
        match req.source {
            Some(source) => Ok(Some(bucket::backup(repo, source, parent_bucket).await?)),
            None => Ok::<_, SnapshotError>(None),
        }
    };
    let dumps =
        futures::future::try_join_all(prepared.into_iter().map(|p| p.dump(repo, &req.db_limits)));
    let dump_globals = async {
        match prepared_globals {
            Some(g) => Ok(Some(g.dump(repo, &req.db_limits).await?)),
            None => Ok::<_, SnapshotError>(None),
        }
    };
    let (done, dumped, globals) = futures::try_join!(copy_bucket, dumps, dump_globals)?;
    let (stats, bucket_record) = match done {
        Some(d) => (d.stats, Some(d.record)),
        None => (BackupStats::default(), None),
    };
    let (records, databases): (Vec<_>, Vec<_>) = dumped.into_iter().unzip();
    let (globals_record, globals_report) = globals.unzip();
    let copy_phase = Phase {
        name: "copy".into(),
        seconds: t_copy.elapsed().as_secs_f64(),
        objects: stats.objects_read,
        bytes: stats.bytes_read
            + databases.iter().map(|d| d.bytes).sum::<u64>()
            + globals_report.as_ref().map_or(0, |g| g.bytes),
    };

    let snapshot = Snapshot {
        version: haul_manifest::FORMAT_VERSION,
        id,
        time: started,
        parent: parent.as_ref().map(|p| p.id),
        tool: tool_version(),
        hostname: hostname(),
        bucket: bucket_record,
        databases: records,
        globals: globals_record,
        helm_values: None,
        phases: vec![check_phase.clone(), copy_phase.clone()],
        labels: req.labels.clone(),
    };
    let t_commit = Instant::now();
    repo.write_snapshot(&snapshot).await?;
    let commit_phase = Phase {
        name: "commit".into(),
        seconds: t_commit.elapsed().as_secs_f64(),
        objects: 0,
        bytes: 0,
    };
    let phases = vec![check_phase, copy_phase, commit_phase];
    let duration_s = t0.elapsed().as_secs_f64();
    let report = BackupReport {
        snapshot: id,
        parent: snapshot.parent,
        stats,
        databases,
        globals: globals_report,
        duration_s,
        phases,
    };
    record_run(
        repo,
        "backup",
        id,
        started,
        duration_s,
        &report.phases,
        &report,
    )
    .await;
    Ok(report)
}

/// Best effort: a run record that cannot be written is a warning, never a failed backup.
pub(crate) async fn record_run(
    repo: &Repository,
    kind: &str,
    snapshot: SnapshotId,
    started: chrono::DateTime<Utc>,
    seconds: f64,
    phases: &[Phase],
    stats: &impl Serialize,
) {
    let stats = match serde_json::to_value(stats) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let run = RunRecord {
        kind: kind.into(),
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

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
