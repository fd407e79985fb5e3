//! One function per command: validated inputs in, a printed result out.

use std::collections::BTreeMap;
use std::io::Write;

use haul_manifest::Snapshot;
use haul_mover::restore::RestoreOptions;
use haul_mover::{
    Engine, Limits, Location, MoverError, Repository, StoreConfig, StoreUrl, error_chain,
};
use haul_snapshot::SnapshotError;
use haul_snapshot::backup::{self, BackupRequest};
use haul_snapshot::restore::RestoreJob;
use serde::Serialize;

use crate::args::{Cli, Command, Global};
use crate::output::{ProgressView, bytes, emit};

/// How a command ended when it did not fail outright.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// It ran to the end but found damaged data.
    Damaged,
}

/// Any error of a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Mover(#[from] MoverError),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub fn chain(&self) -> String {
        error_chain(self)
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Snapshot(e) => e.hint(),
            Self::Mover(e) => e.hint(),
            Self::Usage(_) => Some("see `haul --help`".into()),
        }
    }

    pub fn is_damage(&self) -> bool {
        let m = match self {
            Self::Snapshot(SnapshotError::Mover(m)) | Self::Mover(m) => m,
            _ => return false,
        };
        matches!(
            m,
            MoverError::Corrupt { .. } | MoverError::ObjectsFailed { .. }
        )
    }
}

type Result<T> = std::result::Result<T, CliError>;

/// Everything a command needs, validated.
struct Context {
    json: bool,
    progress: bool,
    stores: StoreConfig,
    limits: Limits,
}

impl Context {
    fn new(g: &Global) -> Result<Self> {
        let stores = match &g.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::Usage(format!("cannot read config file {}: {e}", path.display()))
                })?;
                StoreConfig::from_toml(&text, &path.display().to_string())?
            }
            None => StoreConfig::default(),
        };
        let mut limits = Limits::default();
        let l = &g.limits;
        if let Some(n) = l.requests {
            limits.requests = n;
        }
        if let Some(m) = l.memory_mib {
            limits.memory = m << 20;
        }
        if let Some(w) = l.window {
            limits.window = w;
        }
        if let Some(t) = l.multipart_threshold_mib {
            limits.multipart_threshold = t << 20;
        }
        Ok(Self {
            json: g.json,
            progress: !g.no_progress && !g.json,
            stores,
            limits,
        })
    }

    fn url(&self, raw: &str) -> Result<StoreUrl> {
        Ok(StoreUrl::parse(raw)?)
    }

    fn open(&self, raw: &str, create: bool) -> Result<Location> {
        Ok(self.stores.open(&self.url(raw)?, create)?)
    }

    fn engine(&self) -> Engine {
        Engine::new(self.limits.clone())
    }

    async fn repo(&self, raw: &str) -> Result<Repository> {
        let loc = self.open(raw, false)?;
        Ok(Repository::open(loc, self.engine()).await?)
    }
}

pub async fn run(cli: Cli) -> Result<Outcome> {
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Init { repo } => init(&ctx, &repo).await,
        Command::Backup {
            source,
            repo,
            dry_run,
            label,
        } => backup(&ctx, source.as_deref(), &repo.url, dry_run, &label).await,
        Command::Snapshots { repo } => snapshots(&ctx, &repo.url).await,
        Command::Restore {
            snapshot,
            repo,
            to,
            delete_extraneous,
            dry_run,
        } => restore(&ctx, &snapshot, &repo.url, &to, delete_extraneous, dry_run).await,
        Command::Verify {
            snapshot,
            repo,
            read_data,
        } => verify(&ctx, snapshot.as_deref(), &repo.url, read_data).await,
    }
}

async fn init(ctx: &Context, raw: &str) -> Result<Outcome> {
    let loc = ctx.open(raw, true)?;
    let repo = Repository::init(loc, ctx.engine()).await?;
    #[derive(Serialize)]
    struct Out<'a> {
        repository: String,
        id: String,
        config: &'a haul_manifest::RepoConfig,
    }
    let out = Out {
        repository: repo.url(),
        id: repo.config.id.to_string(),
        config: &repo.config,
    };
    emit(ctx.json, &out, |w| {
        writeln!(w, "created repository {} (id {})", out.repository, out.id)
    });
    Ok(Outcome::Done)
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

async fn backup(
    ctx: &Context,
    source: Option<&str>,
    repo_url: &str,
    dry_run: bool,
    labels: &[String],
) -> Result<Outcome> {
    let labels = parse_labels(labels)?;
    let source_url = source.map(|s| ctx.url(s)).transpose()?;
    let repo_parsed = ctx.url(repo_url)?;
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
    let repo = ctx.repo(repo_url).await?;
    let req = BackupRequest {
        repo: &repo,
        source: source.as_ref(),
        labels,
    };

    if dry_run {
        let p = backup::preview(&req).await?;
        emit(ctx.json, &p, |w| {
            writeln!(w, "dry run: nothing read, nothing written")?;
            writeln!(
                w,
                "parent snapshot:  {}",
                p.parent
                    .map_or("none (full backup)".into(), |p| p.to_string())
            )?;
            writeln!(
                w,
                "objects:          {} ({})",
                p.plan.objects,
                bytes(p.plan.bytes)
            )?;
            writeln!(w, "  new:            {}", p.plan.objects_new)?;
            writeln!(w, "  changed:        {}", p.plan.objects_changed)?;
            writeln!(w, "  unchanged:      {}", p.plan.objects_unchanged)?;
            writeln!(w, "  removed:        {}", p.plan.objects_removed)?;
            writeln!(w, "would read:       {}", bytes(p.plan.bytes_to_read))
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
        )
    });
    Ok(Outcome::Done)
}

async fn snapshots(ctx: &Context, repo_url: &str) -> Result<Outcome> {
    let repo = ctx.repo(repo_url).await?;
    let snaps = repo.snapshots().await?;
    #[derive(Serialize)]
    struct Row {
        id: String,
        time: String,
        objects: u64,
        bytes: u64,
        parent: Option<String>,
        source: Option<String>,
        databases: Vec<String>,
    }
    let rows: Vec<Row> = snaps
        .iter()
        .map(|s: &Snapshot| Row {
            id: s.id.to_string(),
            time: s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            objects: s.objects(),
            bytes: s.bytes(),
            parent: s.parent.map(|p| p.to_string()),
            source: s.bucket.as_ref().map(|b| b.url.clone()),
            databases: s.databases.iter().map(|d| d.name.clone()).collect(),
        })
        .collect();
    emit(ctx.json, &rows, |w| {
        if rows.is_empty() {
            return writeln!(w, "no snapshots in {}", repo.url());
        }
        writeln!(
            w,
            "{:<16}  {:<20}  {:>10}  {:>10}  {:<16}  source",
            "ID", "TIME", "OBJECTS", "SIZE", "PARENT"
        )?;
        for r in &rows {
            writeln!(
                w,
                "{:<16}  {:<20}  {:>10}  {:>10}  {:<16}  {}",
                r.id,
                r.time,
                r.objects,
                bytes(r.bytes),
                r.parent.as_deref().unwrap_or("-"),
                r.source.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    });
    Ok(Outcome::Done)
}

async fn restore(
    ctx: &Context,
    spec: &str,
    repo_url: &str,
    to: &str,
    delete_extraneous: bool,
    dry_run: bool,
) -> Result<Outcome> {
    let target_url = ctx.url(to)?;
    let repo = ctx.repo(repo_url).await?;
    if target_url.overlaps(&repo.loc.url) {
        return Err(MoverError::Overlap {
            repo: repo.url(),
            source_url: target_url.to_string(),
        }
        .into());
    }
    let snapshot = repo.find_snapshot(spec).await?;
    let target = ctx.stores.open(&target_url, !dry_run)?;
    let job = RestoreJob::plan(&repo, &snapshot, target).await?;
    let p = job.plan.clone();
    let plan_text = |w: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            w,
            "restore plan: snapshot {} -> {}",
            snapshot.id, target_url
        )?;
        writeln!(
            w,
            "  missing:     {:>8} objects  {:>10}  (will copy)",
            p.objects_missing,
            bytes(p.bytes_missing)
        )?;
        writeln!(
            w,
            "  different:   {:>8} objects  {:>10}  (will copy)",
            p.objects_different,
            bytes(p.bytes_different)
        )?;
        writeln!(
            w,
            "  unchanged:   {:>8} objects  {:>10}  (kept)",
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
            "  extraneous:  {:>8} objects  {:>10}  ({extra})",
            p.objects_extraneous,
            bytes(p.bytes_extraneous)
        )?;
        if p.objects_checked > 0 {
            writeln!(
                w,
                "  ({} same-size objects were read to compare their content)",
                p.objects_checked
            )?;
        }
        Ok(())
    };
    if dry_run {
        emit(ctx.json, &p, |w| {
            plan_text(w)?;
            writeln!(w, "dry run: nothing changed")
        });
        return Ok(Outcome::Done);
    }
    if !ctx.json {
        let _ = plan_text(&mut std::io::stderr());
    }
    let view = ProgressView::start(repo.engine.progress.clone(), ctx.progress);
    let result = job
        .execute(
            &RestoreOptions { delete_extraneous },
            &target_url.to_string(),
        )
        .await;
    view.finish().await;
    let r = result?;
    emit(ctx.json, &r, |w| {
        let s = &r.stats;
        writeln!(
            w,
            "restored snapshot {} to {} ({:.1}s)",
            r.snapshot, r.target, r.duration_s
        )?;
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
        )
    });
    Ok(Outcome::Done)
}

async fn verify(
    ctx: &Context,
    spec: Option<&str>,
    repo_url: &str,
    read_data: bool,
) -> Result<Outcome> {
    let repo = ctx.repo(repo_url).await?;
    let snaps = match spec {
        Some(s) => vec![repo.find_snapshot(s).await?],
        None => repo.snapshots().await?,
    };
    let view = ProgressView::start(repo.engine.progress.clone(), ctx.progress);
    let result = haul_mover::verify::verify(&repo, &snaps, read_data).await;
    view.finish().await;
    let r = result?;
    emit(ctx.json, &r, |w| {
        writeln!(
            w,
            "checked {} snapshot(s), {} objects, {} chunks{}",
            r.snapshots,
            r.objects,
            r.chunks,
            if read_data {
                format!(", read {} ({})", r.chunks_read, bytes(r.bytes_read))
            } else {
                String::new()
            }
        )?;
        for m in &r.missing {
            writeln!(w, "MISSING chunk {m}")?;
        }
        for d in &r.damaged {
            writeln!(w, "DAMAGED {d}")?;
        }
        if r.ok() {
            writeln!(w, "ok: no problems found")
        } else {
            writeln!(w, "PROBLEMS FOUND")
        }
    });
    if !r.ok() {
        eprintln!(
            "error: {} missing and {} damaged chunk(s) in {}",
            r.missing.len(),
            r.damaged.len(),
            repo.url()
        );
        return Ok(Outcome::Damaged);
    }
    Ok(Outcome::Done)
}
