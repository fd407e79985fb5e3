//! The backup procedure: check every database, copy what changed from the
//! bucket while the databases are dumped, then commit the snapshot root.
//!
//! Everything that can be checked before writing is checked first (each
//! database answers, its pg_dump is new enough, the cluster's context), so
//! a bad URL or password costs nothing. The root is written last: if the
//! copy or any dump fails, there is no snapshot.
//!
//! With a pause method the procedure has two phases (see [`crate::cluster`]):
//! pre-copy rounds while the cluster runs, then pause, final pass and dumps,
//! commit, resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use haul_manifest::{BucketRecord, ChunkId, GlobalsRecord, Phase, RunRecord, Snapshot, SnapshotId};
use haul_mover::backup::{self as bucket, BackupPlan, BackupStats};
use haul_mover::{Location, Repository};
use serde::Serialize;

use crate::db::dump::{self, Prepared};
use crate::db::globals::{self, GlobalsBackupReport, PreparedGlobals};
use crate::db::{DbBackupReport, DbLimits, DbPreview, DbSource, PgConn, tools};
use crate::pause::{Cluster, PauseCheck, PauseReport, PauseSpec};
use crate::predict::{self, Forecast, Model, Round};
use crate::{Result, SnapshotError, tool_version};

/// Past backups a prediction learns from.
pub const HISTORY_RUNS: usize = 20;

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
    /// Pause the cluster for the final bucket pass and the dumps.
    pub pause: Option<PauseSpec>,
    /// With a pause: keep pre-copying until the paused phase is predicted to fit.
    pub max_downtime: Option<Duration>,
    /// With a pause: at most this many live pre-copy rounds (0: none).
    pub max_rounds: u32,
    /// A Helm values file to keep with the snapshot.
    pub helm_values: Option<Bytes>,
}

/// The result of a committed backup, as `haul backup --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub parent: Option<SnapshotId>,
    /// The bucket's counters (all zero without --source). With a pause,
    /// those of the final, paused pass.
    #[serde(flatten)]
    pub stats: BackupStats,
    pub databases: Vec<DbBackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsBackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helm_values: Option<ChunkId>,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
    /// Pause to resume, measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_s: Option<f64>,
    /// What the paused phase was predicted to take when haul paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_downtime_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precopy_rounds: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub precopy: Vec<Round>,
    /// Bytes per second the bucket changed while the cluster ran (measured
    /// between the last pre-copy round and the paused pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_bps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseReport>,
}

/// What a backup would do, as `haul backup --dry-run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPreview {
    pub parent: Option<SnapshotId>,
    #[serde(flatten)]
    pub plan: Option<BackupPlan>,
    pub databases: Vec<DbPreview>,
    /// The cluster to pause, as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseCheck>,
    /// Pre-copy rounds and downtime predicted from the run history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
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

pub(crate) fn check_request(req: &BackupRequest<'_>) -> Result<()> {
    if req.source.is_none() && req.databases.is_empty() && req.globals.is_none() {
        return Err(SnapshotError::NothingToBackUp);
    }
    let mut names = std::collections::HashSet::new();
    for d in &req.databases {
        if !names.insert(d.name.as_str()) {
            return Err(SnapshotError::DuplicateDatabase(d.name.clone()));
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

/// The run history, for predictions; unreadable history predicts from defaults.
pub(crate) async fn history(repo: &Repository) -> Vec<RunRecord> {
    repo.runs("backup", HISTORY_RUNS).await.unwrap_or_else(|e| {
        tracing::warn!(
            "cannot read the run history: {}",
            haul_mover::error_chain(&e)
        );
        Vec::new()
    })
}

/// Plans a backup without reading object data or writing anything; checks
/// that every database answers and that the cluster can be paused.
pub async fn preview(req: &BackupRequest<'_>) -> Result<BackupPreview> {
    check_request(req)?;
    let pause = match &req.pause {
        Some(spec) => Some(Cluster::new(spec.clone()).check().await?),
        None => None,
    };
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
    let forecast = match &req.pause {
        Some(_) => {
            let model = Model::from_history(&history(req.repo).await, true);
            let (listed, first) = plan
                .as_ref()
                .map_or((0, 0), |p| (p.objects, p.bytes_to_read));
            let rounds = if plan.is_some() { req.max_rounds } else { 0 };
            Some(predict::forecast(
                &model,
                listed,
                first,
                req.max_downtime.map(|d| d.as_secs_f64()),
                rounds,
            ))
        }
        None => None,
    };
    Ok(BackupPreview {
        parent: parent.map(|p| p.id),
        plan,
        databases,
        pause,
        forecast,
    })
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
        phases: vec![Phase::timed("check", t0.elapsed().as_secs_f64())],
    })
}

/// The bucket pass and the dumps, run together.
pub(crate) struct Copied {
    pub stats: BackupStats,
    pub bucket: Option<BucketRecord>,
    pub records: Vec<haul_manifest::DatabaseRecord>,
    pub databases: Vec<DbBackupReport>,
    pub globals_record: Option<GlobalsRecord>,
    pub globals_report: Option<GlobalsBackupReport>,
    pub phases: Vec<Phase>,
}

/// Copies the bucket against `base` while every database is dumped. The
/// bucket pass is the phase `pass_name`; the dumps together the phase `dump`.
pub(crate) async fn copy_and_dump(
    req: &BackupRequest<'_>,
    dbs: Vec<Prepared>,
    prepared_globals: Option<PreparedGlobals>,
    base: Option<&BucketRecord>,
    pass_name: &str,
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
        let dumped =
            futures::future::try_join_all(dbs.into_iter().map(|p| p.dump(repo, &req.db_limits)));
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
                name: pass_name.into(),
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
            name: "dump".into(),
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
    phases.push(Phase::timed("commit", t_commit.elapsed().as_secs_f64()));
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

/// Runs a backup and commits its snapshot.
pub async fn run(req: &BackupRequest<'_>) -> Result<BackupReport> {
    if req.pause.is_some() {
        return crate::cluster::run(req).await;
    }
    check_request(req)?;
    let mut staged = stage(req).await?;
    let dbs = std::mem::take(&mut staged.dbs);
    let globals = staged.globals.take();
    let parent_bucket = staged.parent.as_ref().and_then(|p| p.bucket.clone());
    let copied = copy_and_dump(req, dbs, globals, parent_bucket.as_ref(), "copy").await?;
    let mut phases = staged.phases.clone();
    phases.extend(copied.phases.iter().cloned());
    let report = commit(req, &staged, copied, phases).await?;
    record_run(req.repo, "backup", &report, staged.started).await;
    Ok(report)
}

/// Records a backup's timings for future predictions (best effort).
pub(crate) async fn record_run(
    repo: &Repository,
    kind: &str,
    report: &BackupReport,
    started: DateTime<Utc>,
) {
    record(
        repo,
        kind,
        report.snapshot,
        started,
        report.duration_s,
        &report.phases,
        report,
    )
    .await;
}

/// Best effort: a run record that cannot be written is a warning, never a failed backup.
pub(crate) async fn record(
    repo: &Repository,
    kind: &str,
    snapshot: SnapshotId,
    started: DateTime<Utc>,
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
