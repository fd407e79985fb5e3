//! The seam between a procedure and a cluster: what every pause method does.

use futures::future::BoxFuture;

use super::guard::PauseGuard;
use super::spec::{PauseCheck, PauseSpec};
use crate::error::Result;

/// Pauses one cluster one way (kubectl scaling, pachctl pause).
pub trait ClusterControl: Send + Sync + std::fmt::Debug {
    /// What is paused and how.
    fn spec(&self) -> &PauseSpec;

    /// Checks, changing nothing, that the cluster can be paused: the tool
    /// answers, the context is the one asked for, the workloads exist.
    fn check(&self) -> BoxFuture<'_, Result<PauseCheck>>;

    /// Pauses the cluster. Each change is recorded in `guard` before it is
    /// made, so whatever happens next, `guard.resume()` undoes exactly it.
    fn pause<'a>(&'a self, guard: &'a PauseGuard) -> BoxFuture<'a, Result<()>>;
}
