//! Pausing a Pachyderm cluster for the paused phase of a backup, and
//! resuming it whatever happens.
//!
//! ```text
//! spec (method, cluster, workloads, undo steps) ◀─ runner (kubectl/pachctl processes, or a fake)
//!      ◀─ journal (where steps are made durable) ◀─ record (a pause record in the repository)
//!      ◀─ guard (records each step before it is taken; resume undoes exactly those)
//!      ◀─ control (the trait) ◀─ kubectl │ pachctl (the two ways to pause)
//! ```
//!
//! | method | check | pause | resume |
//! |---|---|---|---|
//! | `pachctl` | `pachctl config get active-context` = `--context` | `pachctl enterprise pause`, wait for `pause-status` = paused | `pachctl enterprise unpause` |
//! | `enterprise-pachctl` | same with `active-enterprise-context` | same | same |
//! | `kubectl` | deployment `pachd` and worker RCs exist | scale `pachd`, then every worker RC, to 0; wait until their pods are gone | scale each back to its recorded count |
//! | `enterprise` | deployment `pach-enterprise` exists | scale it to 0, wait for its pods | scale it back |
//!
//! Every wait and retry runs on tokio's clock, so the tests below drive
//! them in milliseconds against a fake cluster with `start_paused`.

mod control;
mod guard;
mod journal;
mod kubectl;
mod pachctl;
pub mod record;
mod runner;
mod spec;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use control::ClusterControl;
pub use guard::PauseGuard;
pub use journal::Journal;
pub use kubectl::Kubectl;
pub use pachctl::Pachctl;
pub use runner::{Processes, Runner, command_line};
pub use spec::{
    DEFAULT_PAUSE_TIMEOUT, PauseCheck, PauseMethod, PauseReport, PauseSpec, PauseStep, Program,
    Workload, WorkloadKind,
};

/// The control for `spec`'s method, running its tools through `runner`.
pub fn control(spec: PauseSpec, runner: Arc<dyn Runner>) -> Box<dyn ClusterControl> {
    if spec.method.uses_pachctl() {
        Box::new(Pachctl::new(spec, runner))
    } else {
        Box::new(Kubectl::new(spec, runner))
    }
}
