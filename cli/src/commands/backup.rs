//! `haul backup`: a bucket and/or databases into one snapshot.

use std::collections::BTreeMap;

use haul_mover::MoverError;
use haul_snapshot::backup::{self, BackupRequest};
use haul_snapshot::db::{DbLimits, DbSource, PgConn};

use super::{CliError, Context, Outcome, Result, parse_db};
use crate::output::{ProgressView, bytes, emit};

/// The arguments of `haul backup`, as typed.
#[derive(Debug)]
pub struct BackupArgs<'a> {
    pub source: Option<&'a str>,
    pub repo_url: &'a str,
    pub db: &'a [String],
    pub db_globals: Option<&'a str>,
    pub dry_run: bool,
    pub labels: &'a [String],
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

pub async fn backup(ctx: &Context, a: BackupArgs<'_>) -> Result<Outcome> {
    let labels = parse_labels(a.labels)?;
    let databases =
        a.db.iter()
            .map(|raw| parse_db(raw).map(|(name, conn)| DbSource { name, conn }))
            .collect::<Result<Vec<_>>>()?;
    let globals = a.db_globals.map(PgConn::parse).transpose()?;
    let source_url = a.source.map(|s| ctx.url(s)).transpose()?;
    let repo_parsed = ctx.url(a.repo_url)?;
    // Refuse before touching anything: a backup inside its own source would copy itself.
    if let Some(s) = &source_url {
        if s.overlaps(&repo_parsed) {
            return Err(MoverError::Overlap {
                repo: repo_parsed.to_string(),
                source_url: s.to_string(),
            }
            .into());
        }
    }
    let source = source_url.map(|u| ctx.stores.open(&u, false)).transpose()?;
    let repo = ctx.repo(a.repo_url).await?;
    let req = BackupRequest {
        repo: &repo,
        source: source.as_ref(),
        databases,
        globals,
        labels,
        db_limits: DbLimits::default(),
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

    let view = ProgressView::start(repo.engine.progress.clone(), ctx.progress);
    let result = backup::run(&req).await;
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
        if req.source.is_some() {
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
