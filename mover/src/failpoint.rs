//! Failure injection for tests that must stop haul at a precise step (a
//! phase of the cluster procedure, a step of prune) and check what it left.
//!
//! `HAUL_FAILPOINTS=paused,commit=sleep:30` makes the point `paused` fail
//! and the point `commit` sleep 30 s first. Compiled into debug builds
//! only: a release binary ignores the variable.

/// The variable naming the failpoints to trigger.
pub const FAILPOINTS_ENV: &str = "HAUL_FAILPOINTS";

/// Triggers the failpoint `name` if the environment asks for it: sleeps,
/// panics, or returns `Err(name)` for the caller to fail with.
pub async fn hit(name: &str) -> Result<(), String> {
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
            return Err(name.to_owned());
        }
    }
    Ok(())
}
