//! haul's PostgreSQL layer: connection settings as libpq reads them, dumps
//! streamed into the repository and restores fed from it, roles, row counts.
//!
//! ```text
//! haul-cli ──▶ haul-snapshot ──▶ haul-pg (this crate) ──▶ haul-mover (the repository: chunks in, chunks out)
//!                                                        └─▶ haul-manifest (DatabaseRecord, GlobalsRecord)
//!
//! connection:  passfile ◀─ config (URL + PG* environment) ◀─ tls ◀─ conn (tokio-postgres Client)
//! programs:    tools (pg_dump ≥ server) ─▶ process (a client program, its stderr, its exit)
//! backup:      conn ─▶ dump: exported MVCC snapshot ─▶ pg_dump --snapshot ─stdout─▶ stream::store
//!                      (FastCDC ─▶ put_plain)  ∥  tables::count in the same snapshot
//!                      (both held back by a gate while a cluster is paused)
//!              globals: pg_dumpall --globals-only ─▶ stream::store
//!              (restored statement by statement over the protocol, never through psql)
//! restore:     reload::plan (create / restore / replace; refuse a non-empty target)
//!              ─▶ stream::feed (read_chunk, verified) ─stdin─▶ pg_restore --single-transaction
//!              ─▶ tables::count, compared with the snapshot's
//! ```
//!
//! Secrets: a password is read from the URL, PGPASSWORD or the passfile,
//! kept in [`config::Secret`] (which prints as `***`), and handed to client
//! programs only through their environment; their stderr has it removed.
//! This crate never prints: what an operator should see comes back in
//! reports and errors, or goes to `tracing`.

mod archive;
pub mod config;
pub mod conn;
pub mod dump;
mod error;
pub mod gate;
pub mod globals;
pub mod journal;
mod limits;
mod passfile;
mod process;
pub mod reload;
pub mod shape;
mod statements;
mod stream;
pub mod swap;
mod tables;
mod tls;
pub mod tools;

pub use config::{PgConn, redact_url};
pub use dump::{DbBackupReport, DbPreview, DbSource};
pub use error::{PgError, Result};
pub use limits::DbLimits;
pub use reload::{DbPlan, DbRestoreOptions, DbRestoreReport, DbTarget};
pub use stream::check_cdc;
