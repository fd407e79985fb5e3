//! The bounds of database streaming, with their defaults and reasons.

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
    /// Batches of chunks (~2 MiB each) read ahead of pg_restore: hides the
    /// store's latency.
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
