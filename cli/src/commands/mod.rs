//! One function per command: validated inputs in, a printed result out.
//! The two long ones, with their databases, have their own modules.

mod backup;
mod restore;

use haul_manifest::Snapshot;
use haul_mover::{
    Engine, Limits, Location, MoverError, Repository, StoreConfig, StoreUrl, error_chain,
};
use haul_snapshot::SnapshotError;
use haul_snapshot::db::PgConn;
use haul_snapshot::db::conn::redact_url;
use serde::Serialize;

use crate::args::{Cli, Command, Global, RepoArg};
use crate::config::{FileConfig, merge_databases};
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

    /// The exit code (see main's doc).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Snapshot(SnapshotError::ResumeFailed { .. }) => 4,
            Self::Snapshot(SnapshotError::Interrupted { signal }) => {
                if *signal == "SIGINT" {
                    130
                } else {
                    143
                }
            }
            _ if self.is_damage() => crate::EXIT_DAMAGED,
            _ => 1,
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
    /// The config file's [cluster] and [restore] sections.
    file: FileConfig,
}

impl Context {
    fn new(g: &Global) -> Result<Self> {
        let (stores, file) = match &g.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::Usage(format!("cannot read config file {}: {e}", path.display()))
                })?;
                (
                    StoreConfig::from_toml(&text, &path.display().to_string())?,
                    FileConfig::parse(&text, path)?,
                )
            }
            None => (StoreConfig::default(), FileConfig::default()),
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
            file,
        })
    }

    /// The repository: --repo (or HAUL_REPO), else the config file's.
    fn repo_url(&self, arg: &RepoArg, restoring: bool) -> Result<String> {
        let from_file = if restoring {
            self.file
                .restore
                .repo
                .clone()
                .or(self.file.cluster.repo.clone())
        } else {
            self.file.cluster.repo.clone()
        };
        arg.url.clone().or(from_file).ok_or_else(|| {
            CliError::Usage(
                "no repository: give --repo URL (or HAUL_REPO, or `repo` in the config file's [cluster] section)"
                    .into(),
            )
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

/// `--db NAME=URL`: the name and the parsed connection. Errors show the
/// URL without its password.
fn parse_db(raw: &str) -> Result<(String, PgConn)> {
    let (name, url) = raw.split_once('=').ok_or_else(|| {
        CliError::Usage(format!(
            "--db {}: expected NAME=postgresql://USER@HOST/DATABASE",
            redact_url(raw)
        ))
    })?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !valid {
        // Not `name` itself: a URL given without a name would print its password.
        return Err(CliError::Usage(format!(
            "--db {}: expected NAME=URL, NAME being letters, digits, '_', '-' or '.' (e.g. pachyderm=postgresql://...)",
            redact_url(raw)
        )));
    }
    Ok((name.to_owned(), PgConn::parse(url)?))
}

pub async fn run(cli: Cli) -> Result<Outcome> {
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Init { repo } => init(&ctx, &repo).await,
        Command::Backup {
            source,
            repo,
            db,
            db_globals,
            dry_run,
            label,
            cluster,
        } => {
            let file = &ctx.file.cluster;
            let repo_url = ctx.repo_url(&repo, false)?;
            let db = merge_databases(&file.databases, &db);
            let mut labels: Vec<String> = file
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.extend(label);
            let args = backup::BackupArgs {
                source: source.as_deref().or(file.source.as_deref()),
                repo_url: &repo_url,
                db: &db,
                db_globals: db_globals.as_deref().or(file.db_globals.as_deref()),
                dry_run,
                labels: &labels,
                cluster: backup::ClusterChoice::merge(cluster, file)?,
            };
            backup::backup(&ctx, args).await
        }
        Command::Snapshots { repo } => snapshots(&ctx, &ctx.repo_url(&repo, true)?).await,
        Command::Restore {
            snapshot,
            repo,
            to,
            db,
            db_globals,
            clean,
            no_owner,
            delete_extraneous,
            dry_run,
            helm_values_out,
        } => {
            let file = &ctx.file.restore;
            let repo_url = ctx.repo_url(&repo, true)?;
            let db = merge_databases(&file.databases, &db);
            let args = restore::RestoreArgs {
                spec: &snapshot,
                repo_url: &repo_url,
                to: to.as_deref().or(file.to.as_deref()),
                db: &db,
                db_globals: db_globals.as_deref().or(file.db_globals.as_deref()),
                clean: clean || file.clean,
                no_owner: no_owner || file.no_owner,
                delete_extraneous: delete_extraneous || file.delete_extraneous,
                dry_run,
                helm_values_out: helm_values_out.or(file.helm_values_out.clone()),
            };
            restore::restore(&ctx, args).await
        }
        Command::Verify {
            snapshot,
            repo,
            read_data,
        } => {
            let repo_url = ctx.repo_url(&repo, true)?;
            verify(&ctx, snapshot.as_deref(), &repo_url, read_data).await
        }
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
            "{:<16}  {:<20}  {:>10}  {:>10}  {:<16}  source [databases]",
            "ID", "TIME", "OBJECTS", "SIZE", "PARENT"
        )?;
        for r in &rows {
            let dbs = if r.databases.is_empty() {
                String::new()
            } else {
                format!(" [{}]", r.databases.join(", "))
            };
            writeln!(
                w,
                "{:<16}  {:<20}  {:>10}  {:>10}  {:<16}  {}{dbs}",
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
