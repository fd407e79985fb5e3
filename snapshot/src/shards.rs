//! Sharded bucket passes: one backup's key space cut into N ranges, each
//! copied by its own process, with the repository as the only rendezvous
//! (see `haul_manifest::shard` for the records).
//!
//! ```text
//! plan        staging/<id>/plan.json: parent, base, the split (balanced by bytes)
//! run_shard   one range ─▶ segments ─▶ staging/<id>/shard-<k>.json
//! gather      wait for all N records of the plan ─▶ one BucketRecord (segments concatenated)
//! commit      gather ─▶ snapshots/<id>.json ─▶ staging removed     (haul backup --commit ID)
//! ShardedPass the coordinator's pass: plan ─▶ executor (local children | Kubernetes Job)
//!             ─▶ gather; a backup with --shards N runs every pass this way
//! ```
//!
//! Shards compare their range with the same base (the parent snapshot, or
//! the previous pass of the same backup, cut alike), so their segments are
//! exactly the segments one process would have written for those keys,
//! cut at the shard boundaries, and concatenate into one valid manifest.

use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use haul_manifest::diff::key_order;
use haul_manifest::shard::{self, KeySplit, ShardBase, ShardPlan, ShardRecord, ShardStats};
use haul_manifest::{BucketRecord, Phase, PhaseKind, Snapshot, SnapshotId};
use haul_mover::bucket_backup::{self as bucket, BackupStats, BucketBackup, Shard};
use haul_mover::{Location, Repository, listing};
use serde::Serialize;
use tokio::time::Instant;

use crate::backup::BackupReport;
use crate::error::{Result, SnapshotError};
use crate::host;

/// What one shard did, as `haul backup --shard K/N --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub staging: SnapshotId,
    pub shard: u32,
    pub shards: u32,
    /// The plan's digest the record names.
    pub plan: String,
    pub parent: Option<SnapshotId>,
    /// The shard's keys: at or above `from`, below `to` (none: unbounded).
    pub from: Option<String>,
    pub to: Option<String>,
    pub segments: usize,
    #[serde(flatten)]
    pub stats: BackupStats,
    pub duration_s: f64,
}

/// Writes the plan of a new staged backup of `source`: the split (given,
/// or computed from `base`'s manifest, else the source's first page) and
/// what the shards compare with.
pub async fn write_plan(
    repo: &Repository,
    source: &Location,
    staging: SnapshotId,
    shards: u32,
    parent: Option<SnapshotId>,
    base: Option<(ShardBase, &BucketRecord)>,
    split: Option<KeySplit>,
) -> Result<ShardPlan> {
    let (split, expected_bytes) = match split {
        Some(s) => {
            let n = s.shards() as usize;
            (s, vec![0; n])
        }
        None => {
            let segments = base.map(|(_, b)| b.segments.as_slice());
            listing::shard_split(source, segments, shards).await?
        }
    };
    let plan = ShardPlan {
        version: shard::SHARD_VERSION,
        staging,
        created: Utc::now(),
        source: source.url.to_string(),
        parent,
        base: base.map(|(b, _)| b),
        split,
        expected_bytes,
    };
    repo.write_json(&shard::plan_path(staging), &plan).await?;
    Ok(plan)
}

/// The plan a shard works from: the staged one, or, when there is none
/// yet (the shards of a Kubernetes Job start without a coordinator), a new
/// one against the newest snapshot of the source. Shards that raced to
/// write differing plans are found by the commit (their records name
/// another plan's digest).
pub async fn plan_for_shard(
    repo: &Repository,
    source: &Location,
    staging: SnapshotId,
    shards: u32,
) -> Result<ShardPlan> {
    let plan = match repo.shard_plan(staging).await? {
        Some(p) => p,
        None => {
            let parent = crate::backup::parent_of(repo, Some(source), &[]).await?;
            let base = parent
                .as_ref()
                .and_then(|p| Some((ShardBase::Snapshot(p.id), p.bucket.as_ref()?)));
            write_plan(
                repo,
                source,
                staging,
                shards,
                parent.as_ref().map(|p| p.id),
                base,
                None,
            )
            .await?
        }
    };
    let url = source.url.to_string();
    if plan.source != url {
        return Err(SnapshotError::StagingMismatch {
            staging: staging.to_string(),
            why: format!("it backs up {}, not {url}", plan.source),
        });
    }
    if plan.split.shards() != shards {
        return Err(SnapshotError::StagingMismatch {
            staging: staging.to_string(),
            why: format!(
                "it is cut into {} shards, not {shards}",
                plan.split.shards()
            ),
        });
    }
    Ok(plan)
}

/// Backs up shard `k` of the staged backup `staging` and writes its record
/// (replacing the record of an earlier run of the same shard).
pub async fn run_shard(
    repo: &Repository,
    source: &Location,
    staging: SnapshotId,
    k: u32,
    shards: u32,
) -> Result<ShardReport> {
    let t = Instant::now();
    let started = Utc::now();
    let plan = plan_for_shard(repo, source, staging, shards).await?;
    crate::failpoint::hit(&format!("shard-{k}")).await?;
    let base = base_record(repo, &plan, k).await?;
    let sh = Shard {
        split: &plan.split,
        index: k,
    };
    let done = bucket::backup_shard(repo, source, base.as_ref(), Some(sh)).await?;
    let seconds = t.elapsed().as_secs_f64();
    let record = ShardRecord {
        version: shard::SHARD_VERSION,
        staging,
        shard: k,
        shards,
        plan: plan.digest(),
        host: host::hostname().unwrap_or_default(),
        pid: std::process::id(),
        started,
        finished: Utc::now(),
        segments: done.record.segments.clone(),
        objects: done.record.objects,
        bytes: done.record.bytes,
        stats: to_shard_stats(&done.stats, seconds),
    };
    repo.write_json(&shard::record_path(staging, k), &record)
        .await?;
    let (from, to) = plan.split.range(k);
    Ok(ShardReport {
        staging,
        shard: k,
        shards,
        plan: record.plan,
        parent: plan.parent,
        from,
        to,
        segments: record.segments.len(),
        stats: done.stats,
        duration_s: seconds,
    })
}

/// The manifest shard `k` compares with: its range of the plan's base.
async fn base_record(repo: &Repository, plan: &ShardPlan, k: u32) -> Result<Option<BucketRecord>> {
    Ok(match plan.base {
        None => None,
        Some(ShardBase::Snapshot(id)) => repo.load_snapshot(id).await?.bucket,
        Some(ShardBase::Staging(id)) => {
            let records = repo.shard_records(id).await?;
            let r = records.into_iter().find(|r| r.shard == k).ok_or_else(|| {
                SnapshotError::StagingMismatch {
                    staging: plan.staging.to_string(),
                    why: format!("its base, staged pass {id}, has no record of shard {k}"),
                }
            })?;
            Some(BucketRecord {
                url: plan.source.clone(),
                objects: r.objects,
                bytes: r.bytes,
                segments: r.segments,
            })
        }
    })
}

fn to_shard_stats(s: &BackupStats, seconds: f64) -> ShardStats {
    ShardStats {
        objects_read: s.objects_read,
        bytes_read: s.bytes_read,
        objects_new: s.objects_new,
        objects_changed: s.objects_changed,
        objects_unchanged: s.objects_unchanged,
        objects_removed: s.objects_removed,
        objects_vanished: s.objects_vanished,
        chunks_uploaded: s.chunks_uploaded,
        bytes_uploaded: s.bytes_uploaded,
        seconds,
    }
}

/// Every shard of a staged backup, put together.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub plan: ShardPlan,
    pub backup: BucketBackup,
    /// The slowest shard's seconds.
    pub slowest_s: f64,
}

/// What `haul backup --abandon` removed.
#[derive(Debug, Clone, Serialize)]
pub struct Abandoned {
    pub abandoned: SnapshotId,
    /// How many shards had written their record.
    pub records: u64,
}

/// Removes the staged backup `staging` (its plan and records) without
/// committing it. Refuses an id with no plan in the repository.
pub async fn abandon(repo: &Repository, staging: SnapshotId) -> Result<Abandoned> {
    if repo.shard_plan(staging).await?.is_none() {
        return Err(SnapshotError::NoStaging {
            staging: staging.to_string(),
            path: shard::plan_path(staging),
        });
    }
    let records = repo.shard_records(staging).await?.len() as u64;
    repo.remove_staging(staging).await?;
    Ok(Abandoned {
        abandoned: staging,
        records,
    })
}

/// Waits (up to `wait`) until every shard of `staging` has a record of the
/// staged plan, then concatenates them. Refuses, naming the shards, when
/// some are still missing (or were made from another plan) at the end.
pub async fn gather(repo: &Repository, staging: SnapshotId, wait: Duration) -> Result<Gathered> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(200);
    loop {
        let plan = repo
            .shard_plan(staging)
            .await?
            .ok_or_else(|| SnapshotError::NoStaging {
                staging: staging.to_string(),
                path: shard::plan_path(staging),
            })?;
        let records = repo.shard_records(staging).await?;
        let n = plan.split.shards();
        let digest = plan.digest();
        let missing: Vec<u32> = (0..n)
            .filter(|k| !records.iter().any(|r| r.shard == *k))
            .collect();
        let other_plan: Vec<u32> = records
            .iter()
            .filter(|r| r.shard < n && r.plan != digest)
            .map(|r| r.shard)
            .collect();
        if missing.is_empty() && other_plan.is_empty() {
            return concatenate(plan, records);
        }
        if Instant::now() >= deadline {
            return Err(SnapshotError::ShardsIncomplete {
                staging: staging.to_string(),
                shards: n,
                missing,
                other_plan,
            });
        }
        tokio::time::sleep(pause.min(deadline - Instant::now())).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One bucket record from the shards' records, in shard order.
fn concatenate(plan: ShardPlan, records: Vec<ShardRecord>) -> Result<Gathered> {
    let mut stats = BackupStats::default();
    let mut segments = Vec::new();
    let mut slowest_s: f64 = 0.0;
    for r in records.iter().filter(|r| r.shard < plan.split.shards()) {
        // Disjoint ranges in order: each shard's first key after the
        // previous shard's last.
        if let (Some(prev), Some(first)) = (segments.last(), r.segments.first()) {
            let prev: &haul_manifest::SegmentRef = prev;
            if key_order(&prev.last, &first.first).is_ge() {
                return Err(SnapshotError::StagingMismatch {
                    staging: plan.staging.to_string(),
                    why: format!(
                        "shard {}'s keys do not follow the previous shard's ({:?} then {:?})",
                        r.shard, prev.last, first.first
                    ),
                });
            }
        }
        segments.extend(r.segments.iter().cloned());
        let s = &r.stats;
        stats.objects += r.objects;
        stats.bytes += r.bytes;
        stats.objects_read += s.objects_read;
        stats.bytes_read += s.bytes_read;
        stats.objects_new += s.objects_new;
        stats.objects_changed += s.objects_changed;
        stats.objects_unchanged += s.objects_unchanged;
        stats.objects_removed += s.objects_removed;
        stats.objects_vanished += s.objects_vanished;
        stats.chunks_uploaded += s.chunks_uploaded;
        stats.bytes_uploaded += s.bytes_uploaded;
        slowest_s = slowest_s.max(s.seconds);
    }
    let record = BucketRecord {
        url: plan.source.clone(),
        objects: stats.objects,
        bytes: stats.bytes,
        segments,
    };
    Ok(Gathered {
        plan,
        backup: BucketBackup { record, stats },
        slowest_s,
    })
}

/// `haul backup --commit ID`: gathers every shard of a staged backup
/// (waiting up to `wait` for shards still running), writes its snapshot
/// root (id `staging`, the plan's parent) and removes the staging records.
pub async fn commit(
    repo: &Repository,
    staging: SnapshotId,
    wait: Duration,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<BackupReport> {
    let t0 = Instant::now();
    let g = gather(repo, staging, wait).await?;
    let copy = Phase {
        objects: g.backup.stats.objects_read,
        bytes: g.backup.stats.bytes_read,
        listed: g.backup.stats.objects,
        ..Phase::timed(PhaseKind::Copy, g.slowest_s)
    };
    let snapshot = Snapshot {
        version: haul_manifest::SNAPSHOT_VERSION,
        id: staging,
        time: g.plan.created,
        parent: g.plan.parent,
        tool: crate::backup::tool_version(),
        hostname: host::hostname(),
        bucket: Some(g.backup.record),
        databases: Vec::new(),
        globals: None,
        helm_values: None,
        phases: vec![copy.clone()],
        labels,
    };
    let t = Instant::now();
    crate::failpoint::hit("root").await?;
    repo.write_snapshot(&snapshot).await?;
    let commit = Phase::timed(PhaseKind::Commit, t.elapsed().as_secs_f64());
    // The records are no longer needed: the root names the segments.
    repo.remove_staging(staging).await?;
    Ok(BackupReport::new(
        staging,
        snapshot.parent,
        g.backup.stats,
        t0.elapsed().as_secs_f64(),
        vec![copy, commit],
    ))
}

/// How the coordinator starts a pass's shards.
#[derive(Debug)]
pub enum Executor {
    /// N child processes of this machine: `program global… backup
    /// backup_args… --shard K/N --staging ID` (the global flags give the
    /// config and tuning, the backup's the repository and the source).
    Local {
        program: std::path::PathBuf,
        global: Vec<String>,
        backup_args: Vec<String>,
    },
    /// An Indexed Job: `kubectl apply -f -` of the manifest `job` makes for
    /// a staging id (its pods run `--shard auto/N`), records awaited in the
    /// repository, then `kubectl delete job`, whatever happened.
    Kubernetes {
        job: JobMaker,
        context: Option<String>,
        namespace: Option<String>,
    },
}

/// Makes the Indexed Job of a staging id: (its name, its manifest).
pub struct JobMaker(pub Box<dyn Fn(SnapshotId) -> (String, serde_json::Value) + Send + Sync>);

impl std::fmt::Debug for JobMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobMaker")
    }
}

/// Deletes an applied Job when dropped (done, failed or cancelled), so its
/// pods never outlive the backup that started them.
struct AppliedJob {
    kubectl: Vec<String>,
    name: String,
}

impl Drop for AppliedJob {
    fn drop(&mut self) {
        let out = std::process::Command::new("kubectl")
            .args(&self.kubectl)
            .args([
                "delete",
                "job",
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                "could not delete Job {}: {}; delete it by hand (kubectl delete job {})",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim(),
                self.name
            ),
            Err(e) => tracing::warn!("could not run kubectl to delete Job {}: {e}", self.name),
        }
    }
}

/// `kubectl apply -f -` of `manifest`.
async fn apply(kubectl: &[String], manifest: &serde_json::Value) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let failed = |why: String| SnapshotError::ShardFailed {
        shard: 0,
        shards: 0,
        status: format!("kubectl apply of the shards' Job failed: {why}"),
        stderr: String::new(),
    };
    let mut child = tokio::process::Command::new("kubectl")
        .args(kubectl)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run kubectl: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = serde_json::to_vec(manifest).unwrap_or_default();
        stdin
            .write_all(&json)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// A backup's bucket passes, each run by `shards` processes: the
/// coordinator's side (`haul backup --shards N`).
#[derive(Debug)]
pub struct ShardedPass {
    pub shards: u32,
    pub executor: Executor,
    /// How long to wait for the shards' records once they are started.
    pub wait: Duration,
    state: Mutex<PassState>,
}

#[derive(Debug, Default)]
struct PassState {
    /// The split every pass of this backup uses (so a pass's base is the
    /// previous pass's records, shard by shard).
    split: Option<KeySplit>,
    /// The previous pass: its staging id and its record.
    last: Option<(SnapshotId, BucketRecord)>,
    /// Every staging id written, removed at the end.
    staged: Vec<SnapshotId>,
}

impl ShardedPass {
    pub fn new(shards: u32, executor: Executor, wait: Duration) -> Self {
        Self {
            shards,
            executor,
            wait,
            state: Mutex::new(PassState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PassState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass over `source` against `base` (the parent snapshot's bucket,
    /// or an earlier pass of this backup), by the shards.
    pub(crate) async fn pass(
        &self,
        repo: &Repository,
        source: &Location,
        base: Option<&BucketRecord>,
        parent: Option<&Snapshot>,
    ) -> Result<BucketBackup> {
        let staging = haul_mover::new_snapshot_id()?;
        let (split, last) = {
            let st = self.state();
            (st.split.clone(), st.last.clone())
        };
        let base_ref = match base {
            None => None,
            Some(b) => match &last {
                Some((id, rec)) if rec == b => Some((ShardBase::Staging(*id), b)),
                _ => match parent {
                    Some(p) if p.bucket.as_ref() == Some(b) => Some((ShardBase::Snapshot(p.id), b)),
                    _ => {
                        return Err(SnapshotError::StagingMismatch {
                            staging: staging.to_string(),
                            why: "its base is neither the parent snapshot nor an earlier pass"
                                .into(),
                        });
                    }
                },
            },
        };
        self.state().staged.push(staging);
        let plan = write_plan(
            repo,
            source,
            staging,
            self.shards,
            parent.map(|p| p.id),
            base_ref,
            split,
        )
        .await?;
        self.state().split = Some(plan.split.clone());
        let g = match &self.executor {
            Executor::Local { .. } => {
                self.start(staging).await?;
                gather(repo, staging, self.wait).await?
            }
            Executor::Kubernetes {
                job,
                context,
                namespace,
            } => {
                let mut kubectl = Vec::new();
                if let Some(c) = context {
                    kubectl.extend(["--context".to_owned(), c.clone()]);
                }
                if let Some(n) = namespace {
                    kubectl.extend(["--namespace".to_owned(), n.clone()]);
                }
                let (name, manifest) = (job.0)(staging);
                apply(&kubectl, &manifest).await?;
                let _applied = AppliedJob { kubectl, name };
                gather(repo, staging, self.wait).await?
            }
        };
        self.state().last = Some((staging, g.backup.record.clone()));
        Ok(g.backup)
    }

    /// Starts the shards of `staging` and, for local ones, waits for them.
    async fn start(&self, staging: SnapshotId) -> Result<()> {
        match &self.executor {
            Executor::Kubernetes { .. } => Ok(()),
            Executor::Local {
                program,
                global,
                backup_args,
            } => {
                let runs = (0..self.shards).map(|k| {
                    let mut cmd = tokio::process::Command::new(program);
                    cmd.args(global)
                        .args(["--json", "--no-progress", "backup"])
                        .args(backup_args)
                        .args([
                            "--shard",
                            &format!("{k}/{}", self.shards),
                            "--staging",
                            &staging.to_string(),
                        ])
                        .stdin(std::process::Stdio::null())
                        .kill_on_drop(true);
                    async move {
                        let out = cmd.output().await.map_err(|e| SnapshotError::ShardFailed {
                            shard: k,
                            shards: self.shards,
                            status: format!("could not start {}: {e}", program.display()),
                            stderr: String::new(),
                        })?;
                        if out.status.success() {
                            Ok(())
                        } else {
                            Err(SnapshotError::ShardFailed {
                                shard: k,
                                shards: self.shards,
                                status: out.status.to_string(),
                                stderr: last_lines(&String::from_utf8_lossy(&out.stderr), 8),
                            })
                        }
                    }
                });
                futures::future::try_join_all(runs).await?;
                Ok(())
            }
        }
    }

    /// Removes every staging record this backup wrote (best effort: what
    /// is left is removed by a later prune's inventory or by hand).
    pub async fn clean_up(&self, repo: &Repository) {
        let staged = std::mem::take(&mut self.state().staged);
        for id in staged {
            if let Err(e) = repo.remove_staging(id).await {
                tracing::warn!("could not remove staged pass {id}: {e}");
            }
        }
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
