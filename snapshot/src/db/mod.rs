//! The database half of a snapshot: PostgreSQL dumps streamed into the
//! repository, and restored from it.
//!
//! ```text
//! pgurl, passfile: URL + PG* environment + passfile ─▶ conn::PgConn
//! conn, tls: PgConn ─▶ tokio-postgres over rustls │ libpq environment for client programs
//! backup:  conn ─▶ tools (pg_dump ≥ server)
//!          ─▶ dump: exported MVCC snapshot ─▶ pg_dump --snapshot ─stdout─▶ stream::store
//!                   (FastCDC ─▶ put_plain)  ∥  tables::count in the same snapshot
//!          globals: pg_dumpall --globals-only ─▶ stream::store
//! restore: restore::plan (create / restore / replace; refuse a non-empty target)
//!          ─▶ stream::feed (read_chunk, verified) ─stdin─▶ pg_restore --single-transaction
//!          ─▶ tables::count, compared with the snapshot's
//! ```
//!
//! Secrets: a password is read from the URL, PGPASSWORD or the passfile,
//! kept in [`conn::Secret`] (which prints as `***`), and handed to client
//! programs only through their environment; their stderr has it removed.

pub mod conn;
pub mod dump;
pub mod globals;
mod passfile;
mod pgurl;
mod process;
pub mod restore;
mod stream;
mod tables;
mod tls;
pub mod tools;

pub use conn::PgConn;
pub use dump::{DbBackupReport, DbPreview, DbSource};
pub use restore::{DbPlan, DbRestoreOptions, DbRestoreReport, DbTarget};

/// The bounds of database streaming, with their defaults and reasons.
#[derive(Debug, Clone)]
pub struct DbLimits {
    /// Chunks cut from a dump and waiting to be stored: keeps the chunker
    /// busy while uploads run, without letting it run far ahead.
    pub chunks_queued: usize,
    /// Chunks of one dump being compressed and uploaded at once (kept in
    /// order). Four 1 MiB-average chunks keep an object store busy while
    /// pg_dump, usually the slower side, keeps writing.
    pub chunks_in_flight: usize,
    /// Chunks read ahead of pg_restore: hides the store's latency.
    pub read_ahead: usize,
}

impl Default for DbLimits {
    fn default() -> Self {
        Self {
            chunks_queued: 2,
            chunks_in_flight: 4,
            read_ahead: 4,
        }
    }
}
