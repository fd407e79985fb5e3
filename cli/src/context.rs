//! Everything a command needs, validated before any work: stores, limits,
//! the config file, and what the binary passes every procedure (the
//! cancellation its signal handlers fire, the sink for the operator's events).

use haul_mover::{Engine, Limits, Location, Repository, StoreConfig, StoreUrl};
use haul_pg::{PgConn, redact_url};
use haul_snapshot::pause::{DEFAULT_PAUSE_TIMEOUT, PauseMethod, PauseSpec};
use haul_snapshot::{Cancel, Events};

use crate::args::{Global, RepoArg};
use crate::config::{FileConfig, parse_duration};
use crate::error::{CliError, Result};

/// Everything a command needs, validated.
pub struct Context {
    /// `--json`: one JSON document on stdout.
    pub json: bool,
    /// Progress bars on stderr (a terminal, and not `--json`).
    pub progress: bool,
    /// Per-store endpoints and credentials (`[[store]]` sections).
    pub stores: StoreConfig,
    /// Budgets of the engine, from the tuning flags.
    pub limits: Limits,
    /// The config file's `[cluster]` and `[restore]` sections.
    pub file: FileConfig,
    /// Fired by the binary's signal handlers.
    pub cancel: Cancel,
    /// Where procedures report what the operator must see.
    pub events: Events,
    /// The config file (`-c`), absolute: shards started by this process
    /// read the same one.
    pub config_path: Option<std::path::PathBuf>,
}

impl Context {
    pub fn new(g: &Global, cancel: Cancel, events: Events) -> Result<Self> {
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
        if let Some(n) = l.list_lanes {
            limits.list_lanes = n;
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
            cancel,
            events,
            config_path: g
                .config
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        })
    }

    /// The tuning flags that give this run's limits: what a child process
    /// (a local shard) is started with, so that it runs with the same.
    pub fn limit_args(&self) -> Vec<String> {
        let l = &self.limits;
        vec![
            format!("--requests={}", l.requests),
            format!("--memory-mib={}", l.memory >> 20),
            format!("--window={}", l.window),
            format!("--list-lanes={}", l.list_lanes),
            format!("--multipart-threshold-mib={}", l.multipart_threshold >> 20),
        ]
    }

    /// The repository: --repo (or HAUL_REPO), else the config file's.
    pub fn repo_url(&self, arg: &RepoArg, restoring: bool) -> Result<String> {
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

    pub fn url(&self, raw: &str) -> Result<StoreUrl> {
        Ok(StoreUrl::parse(raw)?)
    }

    pub fn open(&self, raw: &str, create: bool) -> Result<Location> {
        Ok(self.stores.open(&self.url(raw)?, create)?)
    }

    pub fn engine(&self) -> Engine {
        Engine::new(self.limits.clone())
    }

    pub async fn repo(&self, raw: &str) -> Result<Repository> {
        let loc = self.open(raw, false)?;
        let cred = crate::keys::from_env()?;
        Ok(Repository::open(loc, self.engine(), cred.as_ref()).await?)
    }
}

/// `--db NAME=URL`: the name and the parsed connection. Errors show the
/// URL without its password.
pub fn parse_db(raw: &str) -> Result<(String, PgConn)> {
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

/// `--pause METHOD` with its `--context`, `--namespace` and
/// `--pause-timeout` (flags over the config file's values), validated:
/// `None` for no pause (`none` or nothing given), and an error for cluster
/// flags given without a method. `what` names the command in messages.
pub fn pause_spec(
    method: Option<String>,
    context: Option<String>,
    namespace: Option<String>,
    timeout: Option<String>,
    what: &str,
) -> Result<Option<PauseSpec>> {
    let timeout = timeout
        .map(|t| parse_duration(&t).map_err(|e| CliError::Usage(format!("--pause-timeout: {e}"))))
        .transpose()?
        .unwrap_or(DEFAULT_PAUSE_TIMEOUT);
    let method = match method.as_deref() {
        None | Some("none") => None,
        Some(m) => Some(PauseMethod::parse(m).ok_or_else(|| {
            CliError::Usage(format!(
                "--pause {m:?}: expected one of {}, none",
                PauseMethod::NAMES.join(", ")
            ))
        })?),
    };
    match method {
        Some(method) => Ok(Some(PauseSpec {
            method,
            context,
            namespace,
            timeout,
        })),
        None => {
            for (given, flag) in [
                (context.is_some(), "--context"),
                (namespace.is_some(), "--namespace"),
            ] {
                if given {
                    return Err(CliError::Usage(format!(
                        "{flag} applies to a paused {what}: give --pause METHOD too"
                    )));
                }
            }
            Ok(None)
        }
    }
}
