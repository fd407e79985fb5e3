use haul_mover::MoverError;
use haul_pg::PgError;

/// What can go wrong in a procedure. Database variants name the database
/// (the operator's name for it) and the server, never a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error(transparent)]
    Mover(#[from] MoverError),

    /// Boxed: PostgreSQL's errors carry more context than the rest.
    #[error(transparent)]
    Pg(Box<PgError>),

    #[error("nothing to back up: give --source (a bucket) and/or --db NAME=URL (a database)")]
    NothingToBackUp,

    #[error("snapshot {id} has no bucket to restore")]
    NoBucket { id: String },

    #[error("snapshot {snapshot} holds no roles (it was taken without --db-globals)")]
    NoGlobals { snapshot: String },

    #[error("{tool} not found on PATH")]
    ClusterToolMissing { tool: &'static str },

    #[error("pachctl's {key} is {active:?}, not {wanted:?}: refusing to pause another cluster")]
    WrongContext {
        key: &'static str,
        active: String,
        wanted: String,
    },

    #[error("cannot pause the cluster: {step}: {reason}")]
    Pause { step: String, reason: String },

    #[error("the cluster did not pause within {seconds}s: waited for {what}")]
    PauseTimeout { what: String, seconds: u64 },

    #[error("THE CLUSTER IS STILL PAUSED: resuming it failed: {}", reasons.join("; "))]
    ResumeFailed {
        commands: Vec<String>,
        reasons: Vec<String>,
    },

    #[error(
        "another haul run has this cluster paused (run {run}, pid {pid} on {host}, pause record {record})"
    )]
    PausedByAnother {
        run: String,
        host: String,
        pid: u32,
        record: String,
    },

    #[error("cannot refresh: {what}")]
    NotRunning { what: String },

    #[error("refresh stopped before the swap, nothing changed in the running databases: {what}")]
    RefreshCheck { what: String },

    #[error("--final-pass pachyderm: {why}")]
    FinalPass { why: String },

    #[error("interrupted by {signal}")]
    Interrupted { signal: &'static str },

    #[error(
        "the downtime budget cannot be met: {why}; the cluster was left running and nothing was committed"
    )]
    DowntimeBudget { why: String },

    #[error("an Enterprise Server has no object store, but --source {source_url} was given")]
    EnterpriseHasNoBucket { source_url: String },

    #[error("internal error (panic) during the paused phase: {what}")]
    Panicked { what: String },

    #[error("staged backup {staging}: {}; nothing was committed", incomplete(*shards, missing, other_plan))]
    ShardsIncomplete {
        staging: String,
        shards: u32,
        /// Shards with no record.
        missing: Vec<u32>,
        /// Shards whose record was made from another plan than the one in
        /// the repository (a plan rewritten since, by a shard of a later run).
        other_plan: Vec<u32>,
    },

    #[error("no staged backup {staging} in the repository (its plan, {path}, is missing)")]
    NoStaging { staging: String, path: String },

    #[error("staged backup {staging} does not match this run: {why}")]
    StagingMismatch { staging: String, why: String },

    #[error("shard {shard} of {shards} failed ({status}){}", tail(stderr))]
    ShardFailed {
        shard: u32,
        shards: u32,
        status: String,
        /// The end of what the shard wrote on stderr.
        stderr: String,
    },

    #[error("failure injected at {0} (HAUL_FAILPOINTS)")]
    Injected(String),

    /// Some components of a run were done, others failed: each one's
    /// outcome, and the first failure (its hint and exit code are the run's).
    #[error("{what} partly failed ({}): {source}", failed(outcomes))]
    Partial {
        what: &'static str,
        outcomes: Vec<ComponentOutcome>,
        source: Box<SnapshotError>,
    },
}

/// What happened to one component of a run (the bucket, a database).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentOutcome {
    /// `bucket`, or `database NAME`.
    pub component: String,
    pub ok: bool,
    /// What was done (`ok`), or what was left (not `ok`).
    pub done: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ComponentOutcome {
    /// A component that was done: what was done.
    pub fn done(component: impl Into<String>, done: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            ok: true,
            done: done.into(),
            error: None,
        }
    }

    /// A component that failed: why, and what was left.
    pub fn failed(
        component: impl Into<String>,
        error: &dyn std::error::Error,
        left: impl Into<String>,
    ) -> Self {
        Self {
            component: component.into(),
            ok: false,
            done: left.into(),
            error: Some(haul_mover::error_chain(error)),
        }
    }
}

impl SnapshotError {
    /// The run's work was done (`component`: `done`), but resuming the
    /// cluster failed (`resume`): both, the resume failure's exit code and
    /// hint first.
    pub(crate) fn done_but_not_resumed(
        what: &'static str,
        component: &str,
        done: String,
        resume: SnapshotError,
    ) -> Self {
        Self::Partial {
            what,
            outcomes: vec![
                ComponentOutcome::done(component, done),
                ComponentOutcome::failed(
                    "cluster",
                    &resume,
                    "still paused: resume it by hand (see the hint), or `haul resume`",
                ),
            ],
            source: Box::new(resume),
        }
    }
}

fn incomplete(shards: u32, missing: &[u32], other_plan: &[u32]) -> String {
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} of {shards} shard(s) have not finished (no record): {}",
            missing.len(),
            list(missing)
        ));
    }
    if !other_plan.is_empty() {
        parts.push(format!(
            "shard(s) {} were made from another plan than the staged one",
            list(other_plan)
        ));
    }
    parts.join("; ")
}

fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(":\n{t}")
    }
}

fn failed(outcomes: &[ComponentOutcome]) -> String {
    let (bad, good): (Vec<_>, Vec<_>) = outcomes.iter().partition(|o| !o.ok);
    let names = |v: &[&ComponentOutcome]| {
        v.iter()
            .map(|o| o.component.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if good.is_empty() {
        format!("failed: {}", names(&bad))
    } else {
        format!("failed: {}; done: {}", names(&bad), names(&good))
    }
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

impl From<PgError> for SnapshotError {
    fn from(e: PgError) -> Self {
        Self::Pg(Box::new(e))
    }
}

impl SnapshotError {
    /// The engine's error inside, if this is one (directly or through a
    /// database stream): the CLI judges damaged data by it.
    pub fn mover(&self) -> Option<&MoverError> {
        match self {
            Self::Partial { source, .. } => source.mover(),
            Self::Mover(m) => Some(m),
            Self::Pg(e) => match e.as_ref() {
                PgError::Mover(m) => Some(m.as_ref()),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Partial { source, .. } => source.hint(),
            Self::Mover(e) => e.hint(),
            Self::Pg(e) => e.hint(),
            Self::ClusterToolMissing { tool } => Some(format!(
                "install {tool}, or choose another --pause method (pachctl, kubectl, enterprise, enterprise-pachctl, none)"
            )),
            Self::WrongContext { key, wanted, .. } => Some(format!(
                "switch with `pachctl config set {key} {wanted}`, or pass the --context that is active"
            )),
            Self::PauseTimeout { .. } => Some(
                "the cluster was resumed; --pause-timeout waits longer (pods may take their termination grace period to stop)".into(),
            ),
            Self::Pause { .. } => Some("the cluster was resumed to its state before the backup".into()),
            Self::ResumeFailed { commands, .. } => Some(format!(
                "resume it by hand now:\n  {}",
                commands.join("\n  ")
            )),
            Self::DowntimeBudget { .. } => Some(
                "raise --max-downtime, allow more rounds (--precopy-rounds), or back up when the cluster is quieter; \
                 `haul backup --dry-run` predicts the downtime"
                    .into(),
            ),
            Self::PausedByAnother { .. } => Some(
                "wait for that run to end; if it is dead (a lost machine whose heartbeat is less than two \
                 minutes old), `haul resume --force --repo URL` resumes its cluster"
                    .into(),
            ),
            Self::ShardsIncomplete { staging, shards, .. } => Some(format!(
                "run each missing shard again (`haul backup --shard K/{shards} --staging {staging}`, \
                 with the same source and repository), then commit again (`haul backup --commit \
                 {staging}`); --wait DURATION waits for shards still running"
            )),
            Self::NoStaging { .. } => Some(
                "a staged backup's id is printed by `haul job backup` and by the first shard; \
                 committed ones are removed (see `haul snapshots`)"
                    .into(),
            ),
            Self::EnterpriseHasNoBucket { .. } => Some(
                "back up the Enterprise Server's databases only (--db dex=...), without --source".into(),
            ),
            _ => None,
        }
    }
}
