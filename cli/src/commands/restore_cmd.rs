//! `haul restore`: a snapshot's bucket and/or databases, plan first.

use std::io::Write;
use std::path::{Path, PathBuf};

use haul_helm::{self as helm, BucketTarget, HelmTargets, PgTarget, Rewritten};
use haul_manifest::Snapshot;
use haul_mover::bucket_restore::{RestoreOptions, RestorePlan};
use haul_mover::{MoverError, Repository, Scheme, StoreUrl};
use haul_pg::reload::Action;
use haul_pg::{DbLimits, DbPlan, DbRestoreOptions, DbTarget, PgConn};
use haul_snapshot::pause::PauseSpec;
use haul_snapshot::refresh::{RefreshJob, RefreshPlan, RefreshReport, RefreshRequest};
use haul_snapshot::restore::{RestoreJob, RestoreRequest};
use serde::Serialize;

use crate::context::{Context, parse_db};
use crate::error::{CliError, Outcome, Result};
use crate::output::{ProgressView, bytes, emit, say};

/// The arguments of `haul restore`, as typed.
#[derive(Debug)]
pub struct RestoreArgs<'a> {
    pub spec: &'a str,
    pub repo_url: &'a str,
    pub to: Option<&'a str>,
    pub db: &'a [String],
    pub db_globals: Option<&'a str>,
    pub clean: bool,
    pub no_owner: bool,
    pub delete_extraneous: bool,
    pub dry_run: bool,
    pub helm_values_out: Option<PathBuf>,
    /// Refresh a running cluster, paused this way.
    pub pause: Option<PauseSpec>,
    pub drop_previous: bool,
    /// Restore only shard K of N of the bucket.
    pub shard: Option<(u32, u32)>,
}

/// The whole plan, as `--dry-run --json` prints it: the same shape as a
/// real run's report (`snapshot`, `target`, the bucket's counters under
/// `plan`), with each database's plan.
#[derive(Debug, Serialize)]
struct Plan {
    snapshot: haul_manifest::SnapshotId,
    target: Option<String>,
    #[serde(rename = "plan")]
    bucket: Option<RestorePlan>,
    databases: Vec<DbPlan>,
    globals: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    helm_values: Option<HelmOut>,
}

/// The Helm values written for the restored cluster.
#[derive(Debug, Clone, Serialize)]
struct HelmOut {
    path: PathBuf,
    #[serde(flatten)]
    rewritten: Rewritten,
}

/// Where the restored cluster's values point: the restore targets.
fn helm_targets(to: Option<&StoreUrl>, dbs: &[DbTarget]) -> (HelmTargets, Vec<String>) {
    let mut warnings = Vec::new();
    let target_of = |name: &str| dbs.iter().find(|d| d.name == name).map(|d| &d.conn);
    let main = target_of("pachyderm").or(dbs.first().map(|d| &d.conn));
    let bucket = to.and_then(|u| {
        let scheme = match u.scheme {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
            Scheme::File | Scheme::Memory => {
                warnings.push(format!(
                    "the bucket target {u} is not an object store Pachyderm can use: the storage settings are left as they were"
                ));
                return None;
            }
        };
        if !u.prefix.is_empty() {
            warnings.push(format!(
                "the bucket target {u} has a prefix ({}); Pachyderm's chart takes a bucket only: the values name the bucket {}",
                u.prefix, u.bucket
            ));
        }
        Some(BucketTarget {
            scheme: scheme.into(),
            bucket: u.bucket.clone(),
            endpoint: None,
        })
    });
    let targets = HelmTargets {
        postgres: main.map(|c| PgTarget {
            host: c.host.clone(),
            port: c.port,
            user: Some(c.user.clone()),
            sslmode: Some(c.ssl.mode.as_str().to_owned()),
        }),
        pachyderm_database: target_of("pachyderm").map(|c| c.dbname.clone()),
        dex_database: target_of("dex").map(|c| c.dbname.clone()),
        bucket,
    };
    (targets, warnings)
}

/// Reads the snapshot's values and rewrites them for the targets (writes nothing).
async fn rewrite_helm(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &Path,
    to: Option<&StoreUrl>,
    dbs: &[DbTarget],
) -> Result<HelmOut> {
    let id = snapshot.helm_values.ok_or_else(|| {
        CliError::Usage(format!(
            "--helm-values-out: snapshot {} holds no Helm values (back up with --helm-values FILE to keep them)",
            snapshot.id
        ))
    })?;
    let data = repo.read_chunk(id).await?;
    let text = String::from_utf8(data.to_vec()).map_err(|_| {
        CliError::Usage(format!(
            "the Helm values of snapshot {} are not UTF-8 text",
            snapshot.id
        ))
    })?;
    let (targets, mut warnings) = helm_targets(to, dbs);
    let mut rewritten = helm::rewrite(&text, &targets)
        .map_err(|e| CliError::Usage(format!("--helm-values-out: {e}")))?;
    warnings.append(&mut rewritten.warnings);
    rewritten.warnings = warnings;
    Ok(HelmOut {
        path: path.to_owned(),
        rewritten,
    })
}

/// Writes the file whole or not at all (a temporary file renamed over it).
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let fail =
        |e: std::io::Error| CliError::Usage(format!("--helm-values-out {}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "values.yaml".into());
    let tmp = path.with_file_name(format!(".{name}.haul-tmp"));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn helm_text(w: &mut dyn Write, h: &HelmOut, done: bool) -> std::io::Result<()> {
    writeln!(
        w,
        "  helm values -> {} ({} change(s){})",
        h.path.display(),
        h.rewritten.changes.len(),
        if done {
            ""
        } else {
            ", written after the restore"
        }
    )?;
    for c in &h.rewritten.changes {
        writeln!(
            w,
            "    {}: {} -> {}",
            c.path,
            c.old.as_deref().unwrap_or("(unset)"),
            c.new
        )?;
    }
    for warning in &h.rewritten.warnings {
        writeln!(w, "    warning: {warning}")?;
    }
    Ok(())
}

fn bucket_plan_text(
    w: &mut dyn Write,
    p: &RestorePlan,
    target: &str,
    delete_extraneous: bool,
) -> std::io::Result<()> {
    writeln!(w, "  bucket -> {target}")?;
    writeln!(
        w,
        "    missing:     {:>8} objects  {:>10}  (will copy)",
        p.objects_missing,
        bytes(p.bytes_missing)
    )?;
    writeln!(
        w,
        "    different:   {:>8} objects  {:>10}  (will copy)",
        p.objects_different,
        bytes(p.bytes_different)
    )?;
    writeln!(
        w,
        "    unchanged:   {:>8} objects  {:>10}  (kept)",
        p.objects_unchanged,
        bytes(p.bytes_unchanged)
    )?;
    let extra = if delete_extraneous {
        "will delete"
    } else {
        "kept; --delete-extraneous removes them"
    };
    writeln!(
        w,
        "    extraneous:  {:>8} objects  {:>10}  ({extra})",
        p.objects_extraneous,
        bytes(p.bytes_extraneous)
    )?;
    if p.objects_checked > 0 {
        writeln!(
            w,
            "    ({} same-size objects were read to compare their content)",
            p.objects_checked
        )?;
    }
    Ok(())
}

fn db_plan_text(w: &mut dyn Write, d: &DbPlan) -> std::io::Result<()> {
    let what = match d.action {
        Action::Replace => format!(
            "{}: it holds {} tables",
            d.action.describe(),
            d.tables_in_target
        ),
        a => a.describe().to_owned(),
    };
    writeln!(
        w,
        "  database {} -> {} ({what}; {} tables, dump {}, PostgreSQL {})",
        d.name,
        d.url,
        d.tables,
        bytes(d.dump_bytes),
        d.server_version
    )
}

pub async fn restore(ctx: &Context, a: RestoreArgs<'_>) -> Result<Outcome> {
    if a.shard.is_some() && a.to.is_none() {
        return Err(CliError::Usage(
            "--shard restores a range of the bucket: give --to URL (or [restore] to)".into(),
        ));
    }
    if a.to.is_none() && a.db.is_empty() && a.db_globals.is_none() {
        return Err(CliError::Usage(
            "nothing to restore: give --to URL (a bucket) and/or --db NAME=URL (a database)".into(),
        ));
    }
    let databases =
        a.db.iter()
            .map(|raw| parse_db(raw).map(|(name, conn)| DbTarget { name, conn }))
            .collect::<Result<Vec<_>>>()?;
    let globals = a.db_globals.map(PgConn::parse).transpose()?;
    let target_url = a.to.map(|t| ctx.url(t)).transpose()?;
    let repo = ctx.repo(a.repo_url).await?;
    if let Some(t) = &target_url
        && t.overlaps(repo.store_url())
    {
        return Err(MoverError::Overlap {
            repo: repo.url(),
            source_url: t.to_string(),
        }
        .into());
    }
    let snapshot = repo.find_snapshot(a.spec).await?;
    let target = match &target_url {
        Some(u) => Some((ctx.stores.open(u, !a.dry_run)?, u.to_string())),
        None => None,
    };
    if let Some(spec) = a.pause.clone() {
        if a.db_globals.is_some() {
            return Err(CliError::Usage(
                "--db-globals cannot be combined with --pause: replay the roles with a restore \
                 without --pause first (they do not disturb a running cluster)"
                    .into(),
            ));
        }
        let helm = match &a.helm_values_out {
            Some(path) => {
                Some(rewrite_helm(&repo, &snapshot, path, target_url.as_ref(), &databases).await?)
            }
            None => None,
        };
        let req = RefreshRequest {
            target,
            databases,
            pause: spec,
            delete_extraneous: a.delete_extraneous,
            drop_previous: a.drop_previous,
            db_options: DbRestoreOptions {
                clean: true,
                no_owner: a.no_owner,
            },
            db_limits: DbLimits::default(),
        };
        return Box::pin(refresh(ctx, &a, &repo, &snapshot, req, helm)).await;
    }
    let req = RestoreRequest {
        target,
        databases,
        globals,
        db_options: DbRestoreOptions {
            clean: a.clean,
            no_owner: a.no_owner,
        },
        db_limits: DbLimits::default(),
        shard: a.shard,
    };
    let helm = match &a.helm_values_out {
        Some(path) => {
            Some(rewrite_helm(&repo, &snapshot, path, target_url.as_ref(), &req.databases).await?)
        }
        None => None,
    };
    let job = RestoreJob::plan(&repo, &snapshot, req).await?;
    let plan = Plan {
        snapshot: snapshot.id,
        target: job.target_url().map(str::to_owned),
        bucket: job.plan.clone(),
        databases: job.database_plans(),
        globals: job.globals_target(),
        helm_values: helm.clone(),
    };
    let target_text = job.target_url().unwrap_or_default().to_owned();
    let plan_text = |w: &mut dyn Write| -> std::io::Result<()> {
        writeln!(w, "restore plan: snapshot {}", snapshot.id)?;
        if let Some(g) = &plan.globals {
            writeln!(
                w,
                "  roles -> {g} (replayed first; roles that exist are updated)"
            )?;
        }
        if let Some(p) = &plan.bucket {
            bucket_plan_text(w, p, &target_text, a.delete_extraneous)?;
        }
        for d in &plan.databases {
            db_plan_text(w, d)?;
        }
        if let Some(h) = &plan.helm_values {
            helm_text(w, h, false)?;
        }
        Ok(())
    };
    if a.dry_run {
        emit(ctx.json, &plan, |w| {
            plan_text(w)?;
            writeln!(w, "dry run: nothing changed")
        });
        return Ok(Outcome::Done);
    }
    if !ctx.json {
        let _ = plan_text(&mut std::io::stderr());
    }
    let view = ProgressView::start(repo.engine().progress.clone(), ctx.progress);
    let result = job
        .execute(
            &RestoreOptions {
                delete_extraneous: a.delete_extraneous,
                ..RestoreOptions::default()
            },
            &ctx.cancel,
        )
        .await;
    view.finish().await;
    let r = result?;
    if let Some(h) = &helm {
        write_atomically(&h.path, &h.rewritten.text)?;
    }
    #[derive(Serialize)]
    struct Done<'a> {
        #[serde(flatten)]
        report: &'a haul_snapshot::restore::RestoreReport,
        #[serde(skip_serializing_if = "Option::is_none")]
        helm_values: Option<&'a HelmOut>,
    }
    let done = Done {
        report: &r,
        helm_values: helm.as_ref(),
    };
    emit(ctx.json, &done, |w| {
        writeln!(w, "restored snapshot {} ({:.1}s)", r.snapshot, r.duration_s)?;
        if let Some(s) = &r.shard {
            writeln!(
                w,
                "shard:       {}/{}, keys from {} to {}",
                s.shard,
                s.shards,
                s.from.as_deref().unwrap_or("the start"),
                s.to.as_deref().unwrap_or("the end")
            )?;
        }
        if let Some(g) = &r.globals {
            writeln!(
                w,
                "roles:       replayed on {} ({} statement(s) failed{})",
                g.url,
                g.errors.len(),
                if g.errors.is_empty() {
                    String::new()
                } else {
                    format!(": {}", g.errors.join("; "))
                }
            )?;
        }
        if let Some(t) = &r.target {
            let s = &r.stats;
            writeln!(w, "bucket:      {t}")?;
            writeln!(
                w,
                "copied:      {} objects ({})",
                s.objects_copied,
                bytes(s.bytes_copied)
            )?;
            writeln!(
                w,
                "skipped:     {} objects already in place",
                s.objects_skipped
            )?;
            writeln!(
                w,
                "extraneous:  {} objects ({} deleted)",
                s.objects_extraneous, s.objects_deleted
            )?;
        }
        for d in &r.databases {
            let check = if d.row_count_mismatches.is_empty() {
                "row counts match the snapshot".to_owned()
            } else {
                format!(
                    "ROW COUNTS DIFFER in {} table(s)",
                    d.row_count_mismatches.len()
                )
            };
            writeln!(
                w,
                "database {} -> {}: {} restored, {} tables checked, {} rows: {check} ({:.1}s)",
                d.name,
                d.url,
                bytes(d.bytes),
                d.tables_checked,
                d.rows,
                d.duration_s
            )?;
        }
        if let Some(h) = &helm {
            helm_text(w, h, true)?;
        }
        Ok(())
    });
    let bad = r.mismatched();
    if !bad.is_empty() {
        for d in bad {
            for m in &d.row_count_mismatches {
                say(&format!(
                    "error: database {}: table {} has {} rows, the snapshot has {}",
                    d.name,
                    m.table,
                    m.found
                        .map_or("no such table".to_owned(), |n| n.to_string()),
                    m.expected
                ));
            }
        }
        return Ok(Outcome::Damaged);
    }
    Ok(Outcome::Done)
}

/// `haul restore --pause ...`: refreshes a running cluster (see
/// `haul_snapshot::refresh`), plan first.
async fn refresh(
    ctx: &Context,
    a: &RestoreArgs<'_>,
    repo: &Repository,
    snapshot: &Snapshot,
    req: RefreshRequest,
    helm: Option<HelmOut>,
) -> Result<Outcome> {
    let job = RefreshJob::plan(repo, snapshot, req, &ctx.events).await?;
    let plan = &job.plan;
    let plan_text = |w: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            w,
            "refresh plan: snapshot {} into a running cluster ({}{}), paused about {:.1}s (from past refreshes)",
            plan.snapshot,
            plan.pause.method.name(),
            plan.pause
                .context
                .as_deref()
                .map(|c| format!(", context {c}"))
                .unwrap_or_default(),
            plan.predicted_downtime_s
        )?;
        if let (Some(p), Some(t)) = (&plan.plan, &plan.target) {
            writeln!(w, "  bucket -> {t}")?;
            writeln!(
                w,
                "    missing:     {:>8} objects  {:>10}  (added while the cluster runs)",
                p.objects_missing,
                bytes(p.bytes_missing)
            )?;
            writeln!(
                w,
                "    different:   {:>8} objects  {:>10}  (overwritten while paused)",
                p.objects_different,
                bytes(p.bytes_different)
            )?;
            writeln!(
                w,
                "    unchanged:   {:>8} objects  {:>10}  (kept)",
                p.objects_unchanged,
                bytes(p.bytes_unchanged)
            )?;
            writeln!(
                w,
                "    extraneous:  {:>8} objects  {:>10}  ({})",
                p.objects_extraneous,
                bytes(p.bytes_extraneous),
                if a.delete_extraneous {
                    "deleted while paused, after the swap"
                } else {
                    "kept; --delete-extraneous removes them"
                }
            )?;
        }
        for d in &plan.databases {
            writeln!(
                w,
                "  database {} -> {} (restored while running; swapped in by rename while paused; \
                 {} tables, dump {})",
                d.name,
                d.url,
                d.tables,
                bytes(d.dump_bytes)
            )?;
        }
        if let Some(h) = &helm {
            helm_text(w, h, false)?;
        }
        Ok(())
    };
    if a.dry_run {
        #[derive(Serialize)]
        struct DryRun<'a> {
            #[serde(flatten)]
            plan: &'a RefreshPlan,
            #[serde(skip_serializing_if = "Option::is_none")]
            helm_values: Option<&'a HelmOut>,
        }
        let out = DryRun {
            plan,
            helm_values: helm.as_ref(),
        };
        emit(ctx.json, &out, |w| {
            plan_text(w)?;
            writeln!(w, "dry run: nothing changed")
        });
        return Ok(Outcome::Done);
    }
    if !ctx.json {
        let _ = plan_text(&mut std::io::stderr());
    }
    let view = ProgressView::start(repo.engine().progress.clone(), ctx.progress);
    let result = Box::pin(job.execute(&ctx.cancel, &ctx.events)).await;
    view.finish().await;
    let r = result?;
    if let Some(h) = &helm {
        write_atomically(&h.path, &h.rewritten.text)?;
    }
    #[derive(Serialize)]
    struct Done<'a> {
        #[serde(flatten)]
        report: &'a RefreshReport,
        #[serde(skip_serializing_if = "Option::is_none")]
        helm_values: Option<&'a HelmOut>,
    }
    let done = Done {
        report: &r,
        helm_values: helm.as_ref(),
    };
    emit(ctx.json, &done, |w| {
        writeln!(
            w,
            "refreshed the running cluster from snapshot {}: paused {:.1}s ({:.1}s in all)",
            r.snapshot, r.downtime_s, r.duration_s
        )?;
        if let Some(t) = &r.target {
            writeln!(w, "bucket:      {t}")?;
            writeln!(
                w,
                "added live:  {} objects ({})",
                r.live.objects_copied,
                bytes(r.live.bytes_copied)
            )?;
            writeln!(
                w,
                "paused:      {} objects overwritten or added ({}), {} deleted",
                r.paused.objects_copied,
                bytes(r.paused.bytes_copied),
                r.paused.objects_deleted
            )?;
        }
        for d in &r.databases {
            writeln!(
                w,
                "database {} -> {}: {}; {} rows checked; previous contents {}",
                d.name,
                d.url,
                if d.swapped {
                    "swapped in"
                } else {
                    "NOT swapped"
                },
                d.restore.rows,
                d.previous
                    .as_deref()
                    .map_or("dropped".to_owned(), |p| format!("kept as {p}"))
            )?;
        }
        if let Some(h) = &helm {
            helm_text(w, h, true)?;
        }
        Ok(())
    });
    Ok(Outcome::Done)
}
