//! haul's procedures, and only them: a snapshot of a whole application
//! (bucket, databases, Helm values) and its restore.
//!
//! ```text
//! haul-cli ──▶ haul-snapshot (this crate) ──▶ haul-pg    (PostgreSQL: dumps in, restores out)
//!                                        ──▶ haul-mover (bucket backup/restore, the repository)
//!                                              └─▶ haul-manifest (formats, phases, run records)
//!
//! cancel, events   what the binary passes in: a cancellation with its reason, a sink for
//!                  what the operator must see (this crate never prints, never owns signals)
//! pause            the cluster's pause control: spec ◀─ runner ◀─ guard ◀─ kubectl │ pachctl
//! predict          rounds and downtime from the run history
//! runs             run records: written after each run, read for predictions
//! backup           check ─▶ (pre-copy rounds, live) ─▶ (pause) ─▶ bucket delta ∥ pg_dumps
//!                  ─▶ commit root (last) ─▶ (resume) ─▶ run record
//! restore          snapshot ─▶ plan (printed) ─▶ execute (roles, then bucket ∥ databases) ─▶ run record
//! refresh          a running cluster from a snapshot: side databases restored live ─▶ pause ─▶
//!                  final bucket pass ─▶ swap by rename ─▶ resume (seconds of downtime)
//! resume           pause records of runs that died ─▶ their clusters resumed (haul resume; every backup first)
//! retention        which snapshots a policy keeps, and why (haul forget, next)
//! ```
//!
//! A snapshot root is written only after everything it names is stored, so
//! an interrupted backup leaves no snapshot, only unreferenced chunks that
//! the next backup reuses.

pub mod backup;
mod cancel;
mod error;
pub mod events;
pub mod failpoint;
mod host;
pub mod pause;
pub mod predict;
pub mod refresh;
pub mod restore;
pub mod resume;
pub mod retention;
pub mod runs;
pub mod shards;
mod units;
mod window;

pub use cancel::Cancel;
pub use error::{ComponentOutcome, Result, SnapshotError};
pub use events::{Event, EventSink, Events};
pub use host::hostname;
pub use units::human_bytes;
