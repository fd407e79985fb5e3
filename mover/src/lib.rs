//! haul's engine: moves objects between object stores and a content-addressed
//! repository with bounded concurrency and bounded memory.
//!
//! ```text
//!   haul-cli ──▶ haul-snapshot (the procedures) ──▶ haul-mover (this crate)
//!                      └─▶ haul-pg (dumps) ──────────────▲   │ formats from haul-manifest
//!
//!   limits          every tunable, with its default and why
//!   engine          budgets: requests in flight, bytes in memory, CPU workers; progress counters
//!   location        URL + settings ─▶ Arc<dyn ObjectStore> + prefix (S3, GCS, Azure, file, memory)
//!   listing         sorted, streamed listings of any store, in concurrent lanes
//!   merge           merge-join of sorted streams (listing × manifest)
//!   repo            the repository: chunks (written once), segments, snapshots, runs
//!   bucket_backup   source listing × parent manifest ─▶ read only what changed ─▶ chunks + segments
//!   bucket_restore  snapshot × target listing ─▶ plan ─▶ copy only missing/different (verified)
//!   s3sdk           S3 through the AWS SDK: listings with every key as stored; keys object_store cannot name
//!   multipart       a multipart upload that is aborted on every way out but `complete`
//!   verify          every referenced chunk exists / reads back with the right hash
//!   faults          test support: a store wrapper that fails, cuts short or stalls chosen requests
//! ```
//!
//! Async tasks do I/O; blake3 and zstd run on blocking threads through
//! [`Engine::cpu`]. Every stage is bounded by [`Limits`]: a fixed number of
//! requests in flight, a budget of bytes in memory, a window of objects.

pub mod bucket_backup;
pub mod bucket_restore;
mod engine;
mod error;
pub mod failpoint;
pub mod faults;
mod limits;
pub mod listing;
pub mod location;
pub mod merge;
pub mod multipart;
mod repo;
mod s3sdk;
mod splice;
pub mod verify;

pub use engine::{Engine, Progress};
pub use error::{MoverError, Result, error_chain};
pub use limits::Limits;
pub use location::{Location, Scheme, StoreConfig, StoreUrl, toml_error};
pub use repo::{
    KEEP_RUNS, PackGroup, PruneOptions, PruneReport, REPACK_UNUSED_PERCENT, Repository,
    SegmentSink, grace_before, new_snapshot_id, spawned,
};
