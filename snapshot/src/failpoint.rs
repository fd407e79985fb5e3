//! Failure injection for the tests of the cluster procedure: the guard
//! must resume the cluster whichever phase fails, and a test needs a way to
//! make each phase fail (or linger, to deliver a signal in it). See
//! [`haul_mover::failpoint`] (`HAUL_FAILPOINTS`; debug builds only).

use crate::error::{Result, SnapshotError};

pub use haul_mover::failpoint::FAILPOINTS_ENV;

/// Triggers the failpoint `name` if the environment asks for it.
pub async fn hit(name: &str) -> Result<()> {
    haul_mover::failpoint::hit(name)
        .await
        .map_err(SnapshotError::Injected)
}
