//! Failure injection for the tests of the cluster procedure: the guard
//! must resume the cluster whichever phase fails, and a test needs a way to
//! make each phase fail (or linger, to deliver a signal in it).
//!
//! `HAUL_FAILPOINTS=paused,commit=sleep:30` makes the phase `paused` fail
//! and the phase `commit` sleep 30 s first. Compiled into debug builds only:
//! a release binary ignores the variable.

use crate::error::{Result, SnapshotError};

/// The variable naming the failpoints to trigger.
pub const FAILPOINTS_ENV: &str = "HAUL_FAILPOINTS";

/// Triggers the failpoint `name` if the environment asks for it.
pub async fn hit(name: &str) -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let Ok(spec) = std::env::var(FAILPOINTS_ENV) else {
        return Ok(());
    };
    for item in spec.split(',').map(str::trim) {
        let (point, action) = item.split_once('=').unwrap_or((item, "fail"));
        if point != name {
            continue;
        }
        if let Some(secs) = action.strip_prefix("sleep:") {
            let secs: f64 = secs.parse().unwrap_or(0.0);
            tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
        } else if action == "panic" {
            panic!("failpoint {name}: injected panic");
        } else {
            return Err(SnapshotError::Injected(name.to_owned()));
        }
    }
    Ok(())
}
