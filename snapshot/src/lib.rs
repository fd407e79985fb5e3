//! haul's procedures: a snapshot of a whole application and its restore.
//!
//! ```text
//! haul-cli ──▶ haul-snapshot ──▶ haul-mover (bucket backup/restore, repository)
//!                  │               └─▶ haul-manifest (formats)
//!                  ├─ backup:  check databases ─▶ bucket delta ∥ pg_dumps ─▶ commit root (last) ─▶ run record
//!                  ├─ cluster: check ─▶ pre-copy rounds (live) ─▶ pause ─▶ final delta ∥ pg_dumps ─▶ commit ─▶ resume
//!                  │           (pause: the guard; predict: rounds and downtime from the run history)
//!                  ├─ restore: snapshot ─▶ plan (printed) ─▶ execute (bucket ∥ databases) ─▶ run record
//!                  └─ db:      PostgreSQL: connections, pg_dump/pg_restore streams, row counts
//! ```
//!
//! A snapshot root is written only after everything it names is stored, so
//! an interrupted backup leaves no snapshot, only unreferenced chunks that
//! the next backup reuses.

pub mod backup;
mod cluster;
pub mod db;
mod error;
pub mod failpoint;
pub mod helm;
pub mod pause;
pub mod predict;
pub mod restore;

pub use error::SnapshotError;

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// `haul 0.1.0`: recorded in every snapshot.
pub fn tool_version() -> String {
    format!("haul {}", env!("CARGO_PKG_VERSION"))
}

/// `1.5 GiB`: sizes in messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
