//! `haul backup`: a bucket and/or databases into one snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use haul_manifest::SnapshotId;
use haul_mover::MoverError;
use haul_pg::{DbLimits, DbSource, PgConn};
use haul_snapshot::backup::{self, BackupRequest, FinalPass};
use haul_snapshot::pause::PauseSpec;
use haul_snapshot::shards;

use crate::args::{ClusterArgs, ShardArgs};
use crate::config::{ClusterSection, parse_duration};
use crate::context::{Context, parse_db, pause_spec};
use crate::error::{CliError, Outcome, Result};
use crate::output::{ProgressView, bytes, emit};

/// Pre-copy rounds at most, by default.
const DEFAULT_PRECOPY_ROUNDS: u32 = 8;

/// The cluster options, flags over the config file, validated.
#[derive(Debug)]
pub struct ClusterChoice {
    pub pause: Option<PauseSpec>,
    pub max_downtime: Option<Duration>,
    pub precopy_rounds: u32,
    pub final_pass: FinalPass,
    pub helm_values: Option<PathBuf>,
}

impl ClusterChoice {
    pub fn merge(flags: ClusterArgs, file: &ClusterSection) -> Result<Self> {
        let duration = |flag: &str, v: Option<String>| -> Result<Option<Duration>> {
            v.map(|s| parse_duration(&s).map_err(|e| CliError::Usage(format!("--{flag}: {e}"))))
                .transpose()
        };
        let max_downtime = duration(
            "max-downtime",
            flags.max_downtime.or(file.max_downtime.clone()),
        )?;
        let pause = pause_spec(
            flags.pause.or(file.pause.clone()),
            flags.context.or(file.context.clone()),
            flags.namespace.or(file.namespace.clone()),
            flags.pause_timeout.or(file.pause_timeout.clone()),
            "backup",
        )?;
        if pause.is_none() && max_downtime.is_some() {
            return Err(CliError::Usage(
                "--max-downtime applies to a paused backup: give --pause METHOD too".into(),
            ));
        }
        let final_pass = match flags.final_pass.or(file.final_pass.clone()) {
            Some(s) => s
                .parse::<FinalPass>()
                .map_err(|e| CliError::Usage(format!("--final-pass {e}")))?,
            None => FinalPass::List,
        };
        if pause.is_none() && final_pass != FinalPass::List {
            return Err(CliError::Usage(
                "--final-pass pachyderm applies to a paused backup: give --pause METHOD too".into(),
            ));
        }
        Ok(Self {
            pause,
            max_downtime,
            final_pass,
            precopy_rounds: flags
                .precopy_rounds
                .or(file.precopy_rounds)
                .unwrap_or(DEFAULT_PRECOPY_ROUNDS),
            helm_values: flags.helm_values.or(file.helm_values.clone()),
        })
    }
}

/// The arguments of `haul backup`, as typed.
#[derive(Debug)]
pub struct BackupArgs<'a> {
    pub source: Option<&'a str>,
    pub repo_url: &'a str,
    pub db: &'a [String],
    pub db_globals: Option<&'a str>,
    /// Keep the roles' password hashes in the roles capture.
    pub role_passwords: bool,
    pub dry_run: bool,
    pub labels: &'a [String],
    pub cluster: ClusterChoice,
    pub shards: ShardArgs,
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CliError::Usage(format!("--label {l:?}: expected KEY=VALUE")))
        })
        .collect()
}

/// A staged backup's id, as typed.
fn staging_id(flag: &str, id: &str) -> Result<SnapshotId> {
    id.parse().map_err(|_| {
        CliError::Usage(format!(
            "{flag} {id:?}: a staged backup's id is 16 hex digits (as `haul job backup` prints)"
        ))
    })
}

/// `haul backup --shard K/N --staging ID`: one range of the bucket into
/// the staged backup, nothing committed.
async fn shard(ctx: &Context, a: &BackupArgs<'_>, spec: &str) -> Result<Outcome> {
    let index = std::env::var("JOB_COMPLETION_INDEX").ok();
    let (k, n) =
        haul_manifest::shard::parse_shard(spec, index.as_deref()).map_err(CliError::Usage)?;
    let staging = staging_id("--staging", a.shards.staging.as_deref().unwrap_or_default())?;
    if a.dry_run {
        return Err(CliError::Usage(
            "--dry-run with --shard: preview the whole backup without --shard instead".into(),
        ));
    }
    let source_raw = a.source.ok_or_else(|| {
        CliError::Usage("--shard needs the bucket: --source URL (or [cluster] source)".into())
    })?;
    let source_url = ctx.url(source_raw)?;
    let repo_parsed = ctx.url(a.repo_url)?;
    if source_url.overlaps(&repo_parsed) {
        return Err(MoverError::Overlap {
            repo: repo_parsed.to_string(),
            source_url: source_url.to_string(),
        }
        .into());
    }
    let source = ctx.stores.open(&source_url, false)?;
    let repo = ctx.repo(a.repo_url).await?;
    let view = ProgressView::start(repo.engine().progress.clone(), ctx.progress);
    let result = tokio::select! {
        r = shards::run_shard(&repo, &source, staging, k, n) => r,
        signal = ctx.cancel.cancelled() => Err(haul_snapshot::SnapshotError::Interrupted { signal }),
    };
    view.finish().await;
    let r = result?;
    emit(ctx.json, &r, |w| {
        writeln!(
            w,
            "shard {}/{} of staged backup {} written ({:.1}s); commit with `haul backup --commit {}` once all {} have finished",
            r.shard, r.shards, r.staging, r.duration_s, r.staging, r.shards
        )?;
        writeln!(
            w,
            "keys:      from {} to {}",
            r.from.as_deref().unwrap_or("the start"),
            r.to.as_deref().unwrap_or("the end")
        )?;
        let s = &r.stats;
        writeln!(w, "objects:   {} ({})", s.objects, bytes(s.bytes))?;
        writeln!(
            w,
            "read:      {} objects ({}): {} new, {} changed; {} unchanged, {} removed",
            s.objects_read,
            bytes(s.bytes_read),
            s.objects_new,
            s.objects_changed,
            s.objects_unchanged,
            s.objects_removed
        )?;
        writeln!(
            w,
            "uploaded:  {} chunks ({})",
            s.chunks_uploaded,
            bytes(s.bytes_uploaded)
        )?;
        Ok(())
    });
    Ok(Outcome::Done)
}

/// `haul backup --commit ID`: one snapshot of a staged backup's shards.
async fn commit(ctx: &Context, a: &BackupArgs<'_>, id: &str) -> Result<Outcome> {
    let staging = staging_id("--commit", id)?;
    let wait = match &a.shards.wait {
        Some(w) => parse_duration(w).map_err(|e| CliError::Usage(format!("--wait: {e}")))?,
        None => Duration::ZERO,
    };
    let labels = parse_labels(a.labels)?;
    let repo = ctx.repo(a.repo_url).await?;
    let r = tokio::select! {
        r = shards::commit(&repo, staging, wait, labels) => r,
        signal = ctx.cancel.cancelled() => Err(haul_snapshot::SnapshotError::Interrupted { signal }),
    }?;
    emit(ctx.json, &r, |w| {
        let s = &r.stats;
        writeln!(w, "snapshot {} committed from its shards", r.snapshot)?;
        writeln!(
            w,
            "parent:    {}",
            r.parent
                .map_or("none (full backup)".into(), |p| p.to_string())
        )?;
        writeln!(w, "objects:   {} ({})", s.objects, bytes(s.bytes))?;
        writeln!(
            w,
            "read:      {} objects ({}); uploaded {} chunks ({})",
            s.objects_read,
            bytes(s.bytes_read),
            s.chunks_uploaded,
            bytes(s.bytes_uploaded)
        )?;
        Ok(())
    });
    Ok(Outcome::Done)
}

/// The coordinator's shards (`--shards N`), if asked for.
fn sharded_pass(ctx: &Context, a: &BackupArgs<'_>) -> Result<Option<shards::ShardedPass>> {
    let Some(n) = a.shards.shards else {
        return Ok(None);
    };
    let wait = a
        .shards
        .wait
        .as_deref()
        .map(|w| parse_duration(w).map_err(|e| CliError::Usage(format!("--wait: {e}"))))
        .transpose()?;
    let source = a.source.ok_or_else(|| {
        CliError::Usage("--shards needs the bucket: --source URL (or [cluster] source)".into())
    })?;
    let executor = match a.shards.executor.as_deref().unwrap_or("local") {
        "local" => {
            let program = std::env::current_exe().map_err(|e| {
                CliError::Usage(format!("cannot find this haul binary to start shards: {e}"))
            })?;
            let mut global = ctx.limit_args();
            if let Some(c) = &ctx.config_path {
                global.push(format!("--config={}", c.display()));
            }
            shards::Executor::Local {
                program,
                global,
                backup_args: vec![
                    format!("--repo={}", a.repo_url),
                    format!("--source={source}"),
                ],
            }
        }
        "kubernetes" => {
            if ctx.config_path.is_none() {
                return Err(CliError::Usage(
                    "--executor kubernetes: the pods read the config file from a Secret, so give \
                     it here too: -c FILE (see `haul job --help`)"
                        .into(),
                ));
            }
            let spec = a.cluster.pause.as_ref();
            let (context, namespace) = (
                spec.and_then(|p| p.context.clone()),
                spec.and_then(|p| p.namespace.clone()),
            );
            let template = crate::job::JobSpec {
                kind: crate::job::JobKind::Backup {
                    staging: String::new(),
                },
                shards: n,
                image: a
                    .shards
                    .image
                    .clone()
                    .unwrap_or_else(|| format!("haul:{}", env!("CARGO_PKG_VERSION"))),
                namespace: namespace.clone(),
                config_secret: "haul-config".into(),
                env_secret: "haul-env".into(),
                extra_args: ctx.limit_args(),
                limits: ctx.limits.clone(),
            };
            let job = shards::JobMaker(Box::new(move |staging| {
                let spec = crate::job::JobSpec {
                    kind: crate::job::JobKind::Backup {
                        staging: staging.to_string(),
                    },
                    ..template.clone()
                };
                (spec.name(), spec.indexed_job())
            }));
            return Ok(Some(shards::ShardedPass::new(
                n,
                shards::Executor::Kubernetes {
                    job,
                    context,
                    namespace,
                },
                wait.unwrap_or(Duration::from_secs(24 * 3600)),
            )));
        }
        other => {
            return Err(CliError::Usage(format!(
                "--executor {other:?}: expected local or kubernetes"
            )));
        }
    };
    // Local shards exit when done: their records are there or they failed.
    let wait = wait.unwrap_or(Duration::from_secs(10));
    Ok(Some(shards::ShardedPass::new(n, executor, wait)))
}

pub async fn backup(ctx: &Context, a: BackupArgs<'_>) -> Result<Outcome> {
    if let Some(id) = a.shards.commit.clone() {
        return commit(ctx, &a, &id).await;
    }
    if let Some(id) = a.shards.abandon.clone() {
        let staging = staging_id("--abandon", &id)?;
        let repo = ctx.repo(a.repo_url).await?;
        let r = shards::abandon(&repo, staging).await?;
        emit(ctx.json, &r, |w| {
            writeln!(
                w,
                "staged backup {} abandoned: its plan and {} shard record(s) removed, nothing committed; \
                 `haul prune` frees its chunks",
                r.abandoned, r.records
            )
        });
        return Ok(Outcome::Done);
    }
    if let Some(spec) = a.shards.shard.clone() {
        return shard(ctx, &a, &spec).await;
    }
    let sharded = sharded_pass(ctx, &a)?;
    let labels = parse_labels(a.labels)?;
    let databases =
        a.db.iter()
            .map(|raw| parse_db(raw).map(|(name, conn)| DbSource { name, conn }))
            .collect::<Result<Vec<_>>>()?;
    let globals = a.db_globals.map(PgConn::parse).transpose()?;
    let source_url = a.source.map(|s| ctx.url(s)).transpose()?;
    let repo_parsed = ctx.url(a.repo_url)?;
    // Refuse before touching anything: a backup inside its own source would copy itself.
    if let Some(s) = &source_url
        && s.overlaps(&repo_parsed)
    {
        return Err(MoverError::Overlap {
            repo: repo_parsed.to_string(),
            source_url: s.to_string(),
        }
        .into());
    }
    let helm_values = match &a.cluster.helm_values {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--helm-values {}: {e}", path.display())))?;
            let text = String::from_utf8(text).map_err(|_| {
                CliError::Usage(format!(
                    "--helm-values {}: not a text (UTF-8) file",
                    path.display()
                ))
            })?;
            // Refuse now a file the restore could not rewrite.
            haul_helm::rewrite(&text, &Default::default())
                .map_err(|e| CliError::Usage(format!("--helm-values {}: {e}", path.display())))?;
            Some(bytes::Bytes::from(text))
        }
        None => None,
    };
    let source = source_url.map(|u| ctx.stores.open(&u, false)).transpose()?;
    let repo = ctx.repo(a.repo_url).await?;
    let req = BackupRequest {
        repo: &repo,
        source: source.as_ref(),
        databases,
        globals,
        role_passwords: a.role_passwords,
        labels,
        db_limits: DbLimits::default(),
        pause: a.cluster.pause.clone(),
        max_downtime: a.cluster.max_downtime,
        max_rounds: a.cluster.precopy_rounds,
        helm_values,
        shards: sharded.as_ref(),
        final_pass: a.cluster.final_pass,
    };

    if a.dry_run {
        let p = backup::preview(&req).await?;
        emit(ctx.json, &p, |w| {
            writeln!(w, "dry run: nothing read, nothing written")?;
            writeln!(
                w,
                "parent snapshot:  {}",
                p.parent
                    .map_or("none (full backup)".into(), |p| p.to_string())
            )?;
            if let Some(plan) = &p.plan {
                writeln!(
                    w,
                    "objects:          {} ({})",
                    plan.objects,
                    bytes(plan.bytes)
                )?;
                writeln!(w, "  new:            {}", plan.objects_new)?;
                writeln!(w, "  changed:        {}", plan.objects_changed)?;
                writeln!(w, "  unchanged:      {}", plan.objects_unchanged)?;
                writeln!(w, "  removed:        {}", plan.objects_removed)?;
                writeln!(w, "would read:       {}", bytes(plan.bytes_to_read))?;
            }
            if let Some(c) = &p.pause {
                writeln!(
                    w,
                    "pause:            {} (context {}{})",
                    c.method.name(),
                    c.context.as_deref().unwrap_or("current"),
                    c.namespace
                        .as_deref()
                        .map_or(String::new(), |n| format!(", namespace {n}"))
                )?;
                for s in &c.workloads {
                    writeln!(
                        w,
                        "  {} {}: {} replica(s) now",
                        s.kind.as_str(),
                        s.name,
                        s.replicas
                    )?;
                }
                if c.already_paused {
                    writeln!(w, "  (already paused: it would be left paused)")?;
                }
            }
            if let Some(f) = &p.forecast {
                let m = &f.model;
                writeln!(
                    w,
                    "pre-copy:         {} round(s), ~{:.0}s with the cluster running",
                    f.precopy_rounds, f.precopy_s
                )?;
                writeln!(
                    w,
                    "downtime:         ~{:.1}s predicted (pause {:.1}s, final pass and dumps, resume {:.1}s){}",
                    f.predicted_downtime_s,
                    m.pause_s,
                    m.resume_s,
                    match f.fits {
                        Some(true) => ", within --max-downtime",
                        Some(false) => ", OVER --max-downtime",
                        None => "",
                    }
                )?;
                writeln!(
                    w,
                    "  from {} past pass(es): {:.0} µs per listed object, {}/s copied{}",
                    m.samples,
                    m.per_object_s * 1e6,
                    bytes((1.0 / m.per_byte_s) as u64),
                    m.change_bps.map_or(String::new(), |r| format!(
                        ", bucket changing at {}/s",
                        bytes(r as u64)
                    ))
                )?;
                for n in &f.notes {
                    writeln!(w, "  note: {n}")?;
                }
            }
            for d in &p.databases {
                writeln!(
                    w,
                    "database {}: {} ({} tables, {} on disk), PostgreSQL {}, with {}",
                    d.name,
                    d.url,
                    d.tables,
                    bytes(d.size),
                    d.server_version,
                    d.pg_dump
                )?;
            }
            Ok(())
        });
        return Ok(Outcome::Done);
    }

    let view = ProgressView::start(repo.engine().progress.clone(), ctx.progress);
    let result = backup::run(&req, &ctx.cancel, &ctx.events).await;
    view.finish().await;
    let r = result?;
    emit(ctx.json, &r, |w| {
        let s = &r.stats;
        writeln!(
            w,
            "snapshot {} committed ({:.1}s)",
            r.snapshot, r.duration_s
        )?;
        writeln!(
            w,
            "parent:    {}",
            r.parent
                .map_or("none (full backup)".into(), |p| p.to_string())
        )?;
        for r in &r.precopy {
            writeln!(
                w,
                "pre-copy:  round {}: {} objects read ({}) in {:.1}s, cluster running",
                r.round,
                r.objects_read,
                bytes(r.bytes_read),
                r.seconds
            )?;
        }
        if let Some(d) = r.downtime_s {
            writeln!(
                w,
                "downtime:  {d:.1}s paused (predicted {:.1}s), cluster resumed",
                r.predicted_downtime_s.unwrap_or(0.0)
            )?;
        }
        if let Some(n) = r.journal_objects {
            writeln!(
                w,
                "final:     from Pachyderm's record: {n} chunk object(s) written since the last pre-copy; chunk/ not listed while paused"
            )?;
        }
        if req.source.is_some() {
            writeln!(w, "objects:   {} ({})", s.objects, bytes(s.bytes))?;
            writeln!(
                w,
                "read:      {} objects ({}): {} new, {} changed; {} unchanged, {} removed{}",
                s.objects_read,
                bytes(s.bytes_read),
                s.objects_new,
                s.objects_changed,
                s.objects_unchanged,
                s.objects_removed,
                if r.downtime_s.is_some() {
                    " (paused pass, against the last pre-copy)"
                } else {
                    ""
                }
            )?;
            if s.objects_vanished > 0 {
                writeln!(
                    w,
                    "vanished:  {} objects were deleted while the backup ran",
                    s.objects_vanished
                )?;
            }
            writeln!(
                w,
                "uploaded:  {} chunks ({})",
                s.chunks_uploaded,
                bytes(s.bytes_uploaded)
            )?;
        }
        for d in &r.databases {
            writeln!(
                w,
                "database {}: dump {} in {} chunks, uploaded {} chunks ({}); {} tables, {} rows; PostgreSQL {} ({:.1}s)",
                d.name,
                bytes(d.bytes),
                d.chunks,
                d.chunks_uploaded,
                bytes(d.bytes_uploaded),
                d.tables,
                d.rows,
                d.server_version,
                d.duration_s
            )?;
        }
        if let Some(g) = &r.globals {
            writeln!(
                w,
                "roles:     {} from {} (uploaded {})",
                bytes(g.bytes),
                g.url,
                bytes(g.bytes_uploaded)
            )?;
        }
        Ok(())
    });
    Ok(Outcome::Done)
}
