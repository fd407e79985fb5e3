//! What a procedure has to tell the operator while it runs, as values: the
//! binary decides how to show them (haul prints them on stderr, also with
//! `--json`, because a paused cluster concerns whoever is watching).

use std::fmt;

use haul_manifest::SnapshotId;

use crate::predict::Round;
use crate::units::human_bytes;

/// One thing the operator should see now.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The cluster was paused before haul started; haul leaves it so.
    AlreadyPaused,
    /// `--precopy-rounds 0`: everything is copied while paused.
    NoPrecopy,
    /// A pre-copy round ended, the cluster running.
    PrecopyRound(Round),
    /// Pausing begins.
    Pausing { method: &'static str },
    /// `--final-pass pachyderm`: what Pachyderm's paused database says was
    /// written since the last live round, copied instead of a listing.
    Journal { objects: u64 },
    /// The paused pass listed a large Pachyderm bucket: `--final-pass
    /// pachyderm` would not have.
    FinalPassHint { objects: u64, seconds: f64 },
    /// The cluster is paused; these commands resume it by hand.
    Paused {
        seconds: f64,
        resume_commands: Vec<String>,
    },
    /// Stopped by a signal before anything was paused.
    StoppedBeforePause { signal: &'static str },
    /// The paused phase failed; the cluster is being resumed.
    FailedWhilePaused { error: String },
    /// A refresh failed while paused; the cluster is being resumed.
    RefreshFailedWhilePaused { error: String, swapped: bool },
    /// The cluster runs again.
    Resumed { downtime_s: f64 },
    /// The snapshot exists, but resuming failed.
    CommittedButNotResumed { snapshot: SnapshotId },
    /// The pause record is in the repository, before the first change to
    /// the cluster: if haul dies, it says what to resume.
    PauseRecorded {
        record: String,
        repo: String,
        resume_commands: Vec<String>,
    },
    /// A pause record of a run that died: its cluster is resumed first.
    DeadRunLeftPaused {
        run: SnapshotId,
        host: String,
        pid: u32,
        since: String,
        resume_commands: Vec<String>,
    },
    /// What a pause record listed is resumed, and the record removed.
    RecordResumed { run: SnapshotId },
    /// A pause record whose run still runs: left alone.
    RecordOfLiveRun {
        run: SnapshotId,
        host: String,
        pid: u32,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyPaused => {
                f.write_str("the cluster is already paused: it will be left paused")
            }
            Self::Journal { objects } => write!(
                f,
                "final pass from Pachyderm's record: {objects} chunk object(s) written since the last \
                 pre-copy round (the bucket's chunk/ is not listed while paused)"
            ),
            Self::FinalPassHint { objects, seconds } => write!(
                f,
                "tip: the paused pass listed all {objects} objects ({seconds:.1}s of the downtime); \
                 with --final-pass pachyderm it would read Pachyderm's record of the chunks written \
                 since the last pre-copy round instead, and the downtime would not grow with the bucket"
            ),
            Self::NoPrecopy => f.write_str(
                "no pre-copy (--precopy-rounds 0): the whole delta is copied while paused",
            ),
            Self::PrecopyRound(r) => write!(
                f,
                "pre-copy round {} (cluster running): {} of {} objects read ({}) in {:.1}s; paused phase predicted at {:.1}s",
                r.round,
                r.objects_read,
                r.objects,
                human_bytes(r.bytes_read),
                r.seconds,
                r.predicted_downtime_s
            ),
            Self::Pausing { method } => write!(f, "pausing the cluster ({method})"),
            Self::Paused {
                seconds,
                resume_commands,
            } => write!(
                f,
                "cluster paused in {seconds:.1}s; if haul is killed, resume it by hand with: {}",
                resume_commands.join(" && ")
            ),
            Self::StoppedBeforePause { signal } => write!(
                f,
                "{signal}: stopping; the cluster was not paused and nothing was committed"
            ),
            Self::FailedWhilePaused { error } => write!(
                f,
                "backup failed ({error}); nothing was committed; resuming the cluster"
            ),
            Self::RefreshFailedWhilePaused { error, swapped } => write!(
                f,
                "refresh failed ({error}); {}; resuming the cluster",
                if *swapped {
                    "the databases WERE swapped: staging runs on the snapshot's databases"
                } else {
                    "no database was swapped (side databases dropped): staging runs on its own databases"
                }
            ),
            Self::Resumed { downtime_s } => {
                write!(f, "cluster resumed; it was paused for {downtime_s:.1}s")
            }
            Self::CommittedButNotResumed { snapshot } => write!(
                f,
                "snapshot {snapshot} IS committed, but the cluster could not be resumed"
            ),
            Self::PauseRecorded {
                record,
                repo,
                resume_commands,
            } => write!(
                f,
                "pausing: the pause record is {record}; if haul dies, `haul resume --repo {repo}` \
                 resumes the cluster (by hand: {})",
                resume_commands.join(" && ")
            ),
            Self::DeadRunLeftPaused {
                run,
                host,
                pid,
                since,
                resume_commands,
            } => write!(
                f,
                "A BACKUP THAT DIED LEFT THE CLUSTER PAUSED (run {run}, pid {pid} on {host}, paused at {since}): \
                 resuming what it paused first: {}",
                resume_commands.join(" && ")
            ),
            Self::RecordResumed { run } => {
                write!(
                    f,
                    "resumed what run {run} paused; its pause record is removed"
                )
            }
            Self::RecordOfLiveRun { run, host, pid } => write!(
                f,
                "run {run} (pid {pid} on {host}) is still running with the cluster paused: left alone"
            ),
        }
    }
}

/// A shared event sink, as procedures take it (a pause record's writer
/// keeps a handle to report the record as soon as it exists).
pub type Events = std::sync::Arc<dyn EventSink>;

/// Where a procedure sends its events.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// Drops every event (for callers with nobody to tell).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl EventSink for Quiet {
    fn emit(&self, _: Event) {}
}
