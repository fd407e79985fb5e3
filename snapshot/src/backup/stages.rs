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
use haul_pg::dump::{self, Exported, Prepared};
use haul_pg::gate::GateWait;
use haul_pg::globals::{self, GlobalsBackupReport, PreparedGlobals};
use haul_pg::{DbBackupReport, DbLimits, DbSource, PgError, tools};
use tokio::time::Instant;

use super::report::{BackupReport, BackupRequest, FinalPass, PACHYDERM_DB};
use crate::error::{Result, SnapshotError};
use crate::{host, runs};

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
    if req.final_pass == FinalPass::Pachyderm {
        let why = if req.pause.is_none() {
            "it reads Pachyderm's database while the cluster is paused: give --pause METHOD"
        } else if req.source.is_none() {
            "there is no bucket to copy: give --source"
        } else if req.shards.is_some() {
            "sharded passes list their key ranges: drop --shards, or use --final-pass list"
        } else if req.max_rounds == 0 {
            "it copies what changed since the last live pre-copy round: --precopy-rounds must be at least 1"
        } else if !req.databases.iter().any(|d| d.name == PACHYDERM_DB) {
            "it reads Pachyderm's database, which must be given as --db pachyderm=URL"
        } else {
            return Ok(());
        };
        return Err(SnapshotError::FinalPass { why: why.into() });
    }
    Ok(())
}

/// The database `--final-pass pachyderm` reads, among the prepared ones.
pub(crate) fn pachyderm_db(dbs: &[Prepared]) -> Option<&Prepared> {
    dbs.iter().find(|d| d.source.name == PACHYDERM_DB)
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
        Some(c) => Ok(Some(globals::prepare(c.clone(), req.role_passwords).await?)),
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

/// A bucket pass: what it read and the record the snapshot root takes.
pub(crate) struct Pass {
    pub stats: BackupStats,
    pub bucket: Option<BucketRecord>,
    /// The pass's phase (none without a source).
    pub phase: Option<Phase>,
}

/// Copies what changed in `source` against `base`: in this process, or
/// by the shards of `req.shards` (`parent` is the snapshot `base` may be).
pub(crate) async fn copy(
    req: &BackupRequest<'_>,
    source: &Location,
    base: Option<&BucketRecord>,
    parent: Option<&Snapshot>,
) -> Result<bucket::BucketBackup> {
    match req.shards {
        Some(sh) => sh.pass(req.repo, source, base, parent).await,
        None => Ok(bucket::backup(req.repo, source, base).await?),
    }
}

/// Lists the source and copies what changed against `base` (nothing without
/// a source). The pass is the phase `kind`.
pub(crate) async fn bucket_pass(
    req: &BackupRequest<'_>,
    base: Option<&BucketRecord>,
    parent: Option<&Snapshot>,
    kind: PhaseKind,
) -> Result<Pass> {
    let Some(source) = req.source else {
        return Ok(Pass {
            stats: BackupStats::default(),
            bucket: None,
            phase: None,
        });
    };
    let t = Instant::now();
    let done = copy(req, source, base, parent).await?;
    Ok(Pass::of(done, kind, t))
}

/// The paused pass of `--final-pass pachyderm`: the keys outside `chunk/`
/// listed, the chunk objects Pachyderm's record names as written since the
/// last live round (`keys`) read, every other entry of `base` kept. The
/// phase counts from `t`, when the record began to be read.
pub(crate) async fn journal_pass(
    req: &BackupRequest<'_>,
    base: &BucketRecord,
    keys: Vec<String>,
    t: Instant,
) -> Result<Pass> {
    let Some(source) = req.source else {
        return Err(SnapshotError::FinalPass {
            why: "there is no bucket to copy: give --source".into(),
        });
    };
    let journal = bucket::Journal {
        dir: haul_pg::journal::CHUNK_DIR.into(),
        keys,
    };
    let done = bucket::backup_journal(req.repo, source, base, journal).await?;
    let mut pass = Pass::of(done, PhaseKind::FinalCopy, t);
    // It did not list the bucket: what a prediction scales listing by.
    if let Some(p) = &mut pass.phase {
        p.listed = 0;
    }
    Ok(pass)
}

impl Pass {
    /// A pass that copied `done`, begun at `t`, as the phase `kind`.
    fn of(done: bucket::BucketBackup, kind: PhaseKind, t: Instant) -> Self {
        let phase = Phase {
            objects: done.stats.objects_read,
            bytes: done.stats.bytes_read,
            listed: done.stats.objects,
            ..Phase::timed(kind, t.elapsed().as_secs_f64())
        };
        Pass {
            stats: done.stats,
            bucket: Some(done.record),
            phase: Some(phase),
        }
    }
}

/// The databases and roles, dumped.
pub(crate) struct Dumped {
    pub records: Vec<DatabaseRecord>,
    pub databases: Vec<DbBackupReport>,
    pub globals_record: Option<GlobalsRecord>,
    pub globals_report: Option<GlobalsBackupReport>,
    /// The dumps together, from the export of their snapshots (none without databases).
    pub phase: Option<Phase>,
}

/// Fixes the moment every database's dump will show (milliseconds each).
pub(crate) async fn export(dbs: Vec<Prepared>) -> Result<Vec<Exported>> {
    Ok(futures::future::try_join_all(dbs.into_iter().map(Prepared::export)).await?)
}

/// Dumps every exported database and the roles into `repo`; the phase
/// counts from `exported`, when the snapshots were taken. Owns what it
/// needs, so it can run as its own task past the end of a paused phase;
/// the dumps' data waits for `gate`.
pub(crate) async fn dump_all(
    repo: Repository,
    dbs: Vec<Exported>,
    globals: Option<PreparedGlobals>,
    limits: DbLimits,
    exported: Instant,
    gate: GateWait,
) -> Result<Dumped> {
    let t = exported;
    let dumped = futures::future::try_join_all(
        dbs.into_iter()
            .map(|e| e.dump(&repo, &limits, gate.clone())),
    );
    let dump_globals = async {
        match globals {
            Some(g) => Ok(Some(g.dump(&repo, &limits).await?)),
            None => Ok::<_, PgError>(None),
        }
    };
    let (dumped, globals) = futures::try_join!(dumped, dump_globals)?;
    let (records, databases): (Vec<_>, Vec<_>) = dumped.into_iter().unzip();
    let (globals_record, globals_report) = globals.unzip();
    let phase = (!databases.is_empty() || globals_report.is_some()).then(|| Phase {
        objects: databases.len() as u64,
        bytes: databases.iter().map(|d| d.bytes).sum::<u64>()
            + globals_report.as_ref().map_or(0, |g| g.bytes),
        ..Phase::timed(PhaseKind::Dump, t.elapsed().as_secs_f64())
    });
    Ok(Dumped {
        records,
        databases,
        globals_record,
        globals_report,
        phase,
    })
}

/// Writes the snapshot root: the backup exists from here on. Returns the
/// report, without the cluster's fields.
pub(crate) async fn commit(
    req: &BackupRequest<'_>,
    staged: &Staged,
    pass: Pass,
    dumped: Dumped,
    mut phases: Vec<Phase>,
) -> Result<BackupReport> {
    let snapshot = Snapshot {
        version: haul_manifest::SNAPSHOT_VERSION,
        id: staged.id,
        time: staged.started,
        parent: staged.parent.as_ref().map(|p| p.id),
        tool: tool_version(),
        hostname: host::hostname(),
        bucket: pass.bucket,
        databases: dumped.records,
        globals: dumped.globals_record,
        helm_values: staged.helm_values,
        phases: phases.clone(),
        labels: req.labels.clone(),
    };
    let t_commit = Instant::now();
    crate::failpoint::hit("root").await?;
    req.repo.write_snapshot(&snapshot).await?;
    phases.push(Phase::timed(
        PhaseKind::Commit,
        t_commit.elapsed().as_secs_f64(),
    ));
    Ok(BackupReport {
        databases: dumped.databases,
        globals: dumped.globals_report,
        helm_values: staged.helm_values,
        ..BackupReport::new(
            staged.id,
            snapshot.parent,
            pass.stats,
            staged.t0.elapsed().as_secs_f64(),
            phases,
        )
    })
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
pub(crate) fn tool_version() -> String {
    format!("haul {}", env!("CARGO_PKG_VERSION"))
}
