//! The pause guard: every change a pause makes is recorded here *before* it
//! is made, and `resume` undoes exactly what was recorded, whatever ended
//! the paused phase (success, an error, a signal, a panic).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::journal::Journal;
use super::runner::{Runner, command_line};
use super::spec::{
    POLL, PauseSpec, PauseStep, Program, RESUME_ATTEMPTS, RESUME_RETRY_DELAY, Workload,
    step_command,
};
use crate::error::{Result, SnapshotError};

#[derive(Debug, Default)]
struct GuardState {
    undo: Vec<PauseStep>,
    resumed: bool,
}

/// Resumes what a pause changed. Create it before pausing; call `resume`
/// on every path. If it is dropped without `resume` (a panic past the
/// procedure's own handling), `Drop` resumes synchronously, loudly.
#[derive(Debug)]
pub struct PauseGuard {
    spec: PauseSpec,
    runner: Arc<dyn Runner>,
    /// Where each step is made durable before it is taken (none: memory only).
    journal: Option<Arc<dyn Journal>>,
    state: Mutex<GuardState>,
}

impl PauseGuard {
    pub fn new(spec: &PauseSpec, runner: Arc<dyn Runner>) -> Self {
        Self {
            spec: spec.clone(),
            runner,
            journal: None,
            state: Mutex::default(),
        }
    }

    /// A guard that writes its steps to `journal` before taking each, and
    /// clears it once the cluster is resumed.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// A guard for steps a dead run recorded (`haul resume`): resuming it
    /// undoes them.
    pub fn from_steps(spec: &PauseSpec, runner: Arc<dyn Runner>, steps: Vec<PauseStep>) -> Self {
        let g = Self::new(spec, runner);
        g.lock().undo = steps;
        g
    }

    fn lock(&self) -> MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a step that will undo the change about to be made, durably
    /// when there is a journal. An error means: do not make the change.
    pub(crate) async fn record(&self, u: PauseStep) -> Result<()> {
        let steps = {
            let mut st = self.lock();
            st.undo.push(u);
            st.undo.clone()
        };
        match &self.journal {
            Some(j) => j.write(&steps).await,
            None => Ok(()),
        }
    }

    /// Whether anything was paused (and so needs resuming).
    pub fn paused_anything(&self) -> bool {
        !self.lock().undo.is_empty()
    }

    /// The workloads scaled down, with their recorded counts.
    pub fn scaled(&self) -> Vec<Workload> {
        self.lock()
            .undo
            .iter()
            .filter_map(|u| match u {
                PauseStep::Scale(w) => Some(w.clone()),
                PauseStep::Unpause => None,
            })
            .collect()
    }

    /// The commands that resume the cluster by hand.
    pub fn manual_commands(&self) -> Vec<String> {
        let undo = self.lock().undo.clone();
        undo.iter()
            .map(|u| {
                let (p, a) = step_command(u, &self.spec);
                command_line(p, &a)
            })
            .collect()
    }

    /// Resumes everything recorded, in the order it was paused (pachd
    /// first). Every step is tried `RESUME_ATTEMPTS` times even when
    /// another failed; the error lists the commands still to run by hand.
    pub async fn resume(&self) -> Result<()> {
        let undo = {
            let mut st = self.lock();
            if st.resumed {
                return Ok(());
            }
            st.resumed = true;
            st.undo.clone()
        };
        let mut failed = Vec::new();
        for u in &undo {
            let (program, args) = step_command(u, &self.spec);
            let mut last = String::new();
            let mut ok = false;
            for attempt in 0..RESUME_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(RESUME_RETRY_DELAY).await;
                }
                match self.runner.run(program, &args).await {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(e) => last = haul_mover::error_chain(&e),
                }
            }
            if !ok {
                failed.push((command_line(program, &args), last));
            }
        }
        if undo.contains(&PauseStep::Unpause) && failed.is_empty() {
            self.wait_unpaused().await;
        }
        if failed.is_empty() {
            if let Some(j) = &self.journal
                && let Err(e) = j.clear().await
            {
                tracing::warn!(
                    "the cluster is resumed, but its pause record could not be removed \
                     (the next backup will find it and resume again, harmlessly): {}",
                    haul_mover::error_chain(&e)
                );
            }
            Ok(())
        } else {
            Err(SnapshotError::ResumeFailed {
                commands: failed.iter().map(|(c, _)| c.clone()).collect(),
                reasons: failed.iter().map(|(_, r)| r.clone()).collect(),
            })
        }
    }

    /// After `pachctl enterprise unpause`, waits (up to the timeout) for
    /// the cluster to say so; a cluster slow to come back is a warning.
    async fn wait_unpaused(&self) {
        let started = Instant::now();
        let args = ["enterprise".to_owned(), "pause-status".to_owned()];
        loop {
            match self.runner.run(Program::Pachctl, &args).await {
                Ok(s) if s.trim() == "unpaused" => return,
                Ok(s) if started.elapsed() > self.spec.timeout => {
                    tracing::warn!(
                        "pachctl enterprise unpause ran, but after {}s the cluster says {:?}",
                        self.spec.timeout.as_secs(),
                        s.trim()
                    );
                    return;
                }
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(
                        "cannot read the pause status after unpausing: {}",
                        haul_mover::error_chain(&e)
                    );
                    return;
                }
            }
        }
    }
}

impl Drop for PauseGuard {
    /// The last line of defence (a panic that escaped the procedure):
    /// resume synchronously, each step bounded by the runner's timeout.
    fn drop(&mut self) {
        let undo = {
            let st = self.lock();
            if st.resumed || st.undo.is_empty() {
                return;
            }
            st.undo.clone()
        };
        tracing::error!("resuming the cluster after an unexpected failure");
        for u in &undo {
            let (program, args) = step_command(u, &self.spec);
            if let Err(e) = self.runner.run_blocking(program, &args) {
                tracing::error!(
                    "COULD NOT RESUME: {} failed: {e}; run it by hand",
                    command_line(program, &args)
                );
            }
        }
        self.lock().resumed = true;
    }
}
