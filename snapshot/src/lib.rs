//! haul's procedures: a snapshot of a whole application and its restore.
//!
//! ```text
//! haul-cli ──▶ haul-snapshot ──▶ haul-mover (bucket backup/restore, repository)
//!                  │               └─▶ haul-manifest (formats)
//!                  ├─ backup:  check databases ─▶ bucket delta ∥ pg_dumps ─▶ commit root (last) ─▶ run record
//!                  ├─ restore: snapshot ─▶ plan (printed) ─▶ execute (bucket ∥ databases) ─▶ run record
//!                  └─ db:      PostgreSQL: connections, pg_dump/pg_restore streams, row counts
//! ```
//!
//! A snapshot root is written only after everything it names is stored, so
//! an interrupted backup leaves no snapshot, only unreferenced chunks that
//! the next backup reuses.

pub mod backup;
pub mod db;
mod error;
pub mod restore;

pub use error::SnapshotError;

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// `haul 0.1.0`: recorded in every snapshot.
pub fn tool_version() -> String {
    format!("haul {}", env!("CARGO_PKG_VERSION"))
}
