//! `prune/<time>-<id>.json`: what a prune found unreferenced, and when.
//!
//! Prune deletes in two steps, with no lock: a *mark* records the chunks
//! and packs no snapshot referenced at `time`; a later prune (after the
//! grace period) *sweeps* the mark, deleting what is still unreferenced and
//! was last written before `time`. In between:
//!
//! - backups that start after the mark read it and never reuse a marked
//!   chunk: they store it again (into a new pack, or rewriting the loose
//!   object, whose new modification time then spares it);
//! - a backup that started before the mark and reused a marked chunk
//!   commits within the grace period (the grace must exceed the longest
//!   backup), so its root references the chunk when the sweep looks.
//!
//! Readers ignore marks: a marked chunk is still where the index says
//! until the sweep.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ChunkId;
use crate::pack::PackId;

/// The folder of prune marks, relative to the repository prefix.
pub const PRUNE_DIR: &str = "prune";

/// The version of the mark this haul writes and reads.
pub const PRUNE_MARK_VERSION: u32 = 1;

/// One prune's mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneMark {
    pub version: u32,
    /// When the referenced set was computed: nothing written after it is
    /// ever deleted by this mark.
    pub time: DateTime<Utc>,
    /// Where the prune ran (`host`, `pid`), for the operator.
    pub host: String,
    pub pid: u32,
    /// Loose chunks, by stored name.
    pub loose: Vec<ChunkId>,
    /// Packs holding no referenced chunk, or too few to keep (repacked at
    /// the sweep: the referenced ones are copied into a new pack first).
    pub packs: Vec<PackId>,
    /// Bytes the marked objects take.
    pub bytes: u64,
}

/// Path of a mark: sorts by time.
pub fn mark_path(time: DateTime<Utc>, id: &str) -> String {
    format!(
        "{PRUNE_DIR}/{}-{id}.json",
        time.format("%Y%m%dT%H%M%S%.3fZ")
    )
}
