//! Where a pause guard makes its steps durable: each step is written before
//! it is taken, so that if haul dies, what to undo survives it (a pause
//! record in the repository, see `record`).

use futures::future::BoxFuture;

use super::spec::PauseStep;
use crate::error::Result;

/// Durable storage of a guard's steps.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Writes every step recorded so far; called before the last one is taken.
    fn write<'a>(&'a self, steps: &'a [PauseStep]) -> BoxFuture<'a, Result<()>>;

    /// The cluster is resumed: nothing is left to undo.
    fn clear(&self) -> BoxFuture<'_, Result<()>>;
}
