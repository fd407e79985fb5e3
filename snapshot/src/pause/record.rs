//! The pause record: a guard's journal kept in the repository
//! (`pauses/<run>.json`), so that a pause survives haul's death. It is
//! written before the first change to the cluster, rewritten before every
//! further step and every `HEARTBEAT` while the cluster stays paused, and
//! removed once the cluster is resumed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use haul_manifest::pause::{PAUSE_RECORD_VERSION, pause_record_path};
use haul_manifest::{PauseRecord, PausedBy, SnapshotId};
use haul_mover::Repository;

use super::journal::Journal;
use super::runner::command_line;
use super::spec::{PauseSpec, PauseStep, step_command};
use crate::error::Result;
use crate::host;

/// How often a paused run rewrites its record.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// A record on another machine whose heartbeat is older than this belongs
/// to a run that died (eight heartbeats missed).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// Whether the run that wrote a pause record still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its process still runs (same machine), or its heartbeat is fresh.
    Alive,
    /// Its process is gone, or its heartbeat stopped.
    Dead,
}

/// Judges a record's run: on this machine by its process, elsewhere by its heartbeat.
pub fn liveness(by: &PausedBy) -> Liveness {
    if host::hostname().as_deref() == Some(by.host.as_str()) {
        let alive = match (host::process_start(by.pid), by.pid_start) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        return if alive {
            Liveness::Alive
        } else {
            Liveness::Dead
        };
    }
    let age = (Utc::now() - by.heartbeat).to_std().unwrap_or_default();
    if age > STALE_AFTER {
        Liveness::Dead
    } else {
        Liveness::Alive
    }
}

/// The pause records of a repository, oldest first.
pub async fn records(repo: &Repository) -> Result<Vec<PauseRecord>> {
    let mut v: Vec<PauseRecord> = repo.pause_records().await?;
    v.sort_by_key(|r| r.by.started);
    Ok(v)
}

/// A guard's journal in the repository. Shared with its heartbeat task.
pub struct RepoJournal {
    repo: Repository,
    /// The record as last written; `None` once cleared.
    record: Arc<Mutex<Option<PauseRecord>>>,
    spec: PauseSpec,
    run: SnapshotId,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Called once, with the record's resume commands, when it is first written.
    on_first_write: Box<dyn Fn(&PauseRecord) + Send + Sync>,
}

impl std::fmt::Debug for RepoJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoJournal")
            .field("repo", &self.repo.url())
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl RepoJournal {
    pub fn new(
        repo: Repository,
        spec: &PauseSpec,
        run: SnapshotId,
        on_first_write: impl Fn(&PauseRecord) + Send + Sync + 'static,
    ) -> Self {
        Self {
            repo,
            record: Arc::default(),
            spec: spec.clone(),
            run,
            heartbeat: Mutex::default(),
            on_first_write: Box::new(on_first_write),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<PauseRecord>> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the record's heartbeat fresh until cleared (or dropped).
    fn start_heartbeat(&self) {
        let (repo, record) = (self.repo.clone(), self.record.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let current = {
                    let mut r = record.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(r) = r.as_mut() else { return };
                    r.by.heartbeat = Utc::now();
                    r.clone()
                };
                if let Err(e) = repo
                    .write_json(&pause_record_path(&current.run), &current)
                    .await
                {
                    tracing::warn!(
                        "could not refresh the pause record: {}",
                        haul_mover::error_chain(&e)
                    );
                }
            }
        });
        *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    fn stop_heartbeat(&self) {
        if let Some(t) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

impl Drop for RepoJournal {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Journal for RepoJournal {
    fn write<'a>(&'a self, steps: &'a [PauseStep]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let now = Utc::now();
            let (record, first) = {
                let mut slot = self.lock();
                let first = slot.is_none();
                let by = match slot.as_ref() {
                    Some(r) => PausedBy {
                        heartbeat: now,
                        ..r.by.clone()
                    },
                    None => {
                        let pid = std::process::id();
                        PausedBy {
                            host: host::hostname().unwrap_or_else(|| "unknown".into()),
                            pid,
                            pid_start: host::process_start(pid),
                            started: now,
                            heartbeat: now,
                        }
                    }
                };
                let record = PauseRecord {
                    version: PAUSE_RECORD_VERSION,
                    run: self.run,
                    method: self.spec.method,
                    context: self.spec.context.clone(),
                    namespace: self.spec.namespace.clone(),
                    steps: steps.to_vec(),
                    by,
                    resume_commands: steps
                        .iter()
                        .map(|s| {
                            let (p, a) = step_command(s, &self.spec);
                            command_line(p, &a)
                        })
                        .collect(),
                };
                *slot = Some(record.clone());
                (record, first)
            };
            self.repo
                .write_json(&pause_record_path(&self.run), &record)
                .await?;
            if first {
                (self.on_first_write)(&record);
                self.start_heartbeat();
            }
            Ok(())
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.stop_heartbeat();
            *self.lock() = None;
            self.repo.delete(&pause_record_path(&self.run)).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(host: &str, pid: u32, pid_start: Option<u64>, heartbeat_age_s: i64) -> PausedBy {
        let now = Utc::now();
        PausedBy {
            host: host.into(),
            pid,
            pid_start,
            started: now,
            heartbeat: now - chrono::Duration::seconds(heartbeat_age_s),
        }
    }

    #[test]
    fn a_run_is_alive_by_its_process_here_and_by_its_heartbeat_elsewhere() {
        let here = host::hostname().expect("hostname");
        let me = std::process::id();
        let start = host::process_start(me);
        assert_eq!(liveness(&by(&here, me, start, 3600)), Liveness::Alive);
        // The same pid, started at another time: a reused pid, not the run.
        let other_start = start.map(|s| s + 1);
        assert_eq!(liveness(&by(&here, me, other_start, 0)), Liveness::Dead);
        assert_eq!(liveness(&by(&here, u32::MAX - 1, None, 0)), Liveness::Dead);
        // Another machine: only the heartbeat tells.
        assert_eq!(liveness(&by("elsewhere", me, None, 10)), Liveness::Alive);
        assert_eq!(liveness(&by("elsewhere", me, None, 600)), Liveness::Dead);
    }
}
