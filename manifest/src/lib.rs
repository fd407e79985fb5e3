//! haul's repository format, version 2 (and version 1, still read): the
//! types that are written to a repository, and the pure functions that
//! produce and check them.
//!
//! This crate does no I/O and knows nothing of tokio or object stores: the
//! engine (`haul-mover`) fetches and stores bytes; this crate says what those
//! bytes mean. Everything here can be property-tested in memory.
//!
//! ```text
//!   haul-mover ──bytes──▶ chunk::encode / decode ──▶ ChunkId (blake3 of plaintext)
//!              ──entries─▶ segment::SegmentWriter ──▶ segment chunks ──▶ Snapshot (root)
//!              ──listing─▶ diff::merge_join(listing, parent entries) ──▶ plan
//! ```
//!
//! # Repository format v1 (and v2's layout)
//!
//! A repository is a prefix in an object store (`s3://bucket/prefix`,
//! `file:///path`, ...). Every path below is relative to that prefix.
//!
//! | path | what it holds |
//! |---|---|
//! | `haul-repo.json` | [`RepoConfig`]: format version, repository id, chunker and codec settings; in v2 the key slots. Written by `haul init`, rewritten by `haul key add/remove`. The only plaintext object of an encrypted repository. |
//! | `chunks/<2 hex>/<64 hex>` | one chunk: the blake3 of its plaintext names it. Immutable; written only if absent; verified on every read. See [`chunk`]. |
//! | `snapshots/<id>.json` | [`Snapshot`], the root of one backup. Written last: a snapshot exists only when everything it names exists. |
//! | `runs/<time>-<kind>-<id>.json` | [`RunRecord`]: the timing of one backup or restore, used to predict downtime. |
//! | `targets/<hash>.json` | [`TargetState`]: what haul last wrote into a restore target, so the next restore can skip what is already there. |
//! | `packs/…`, `index/…` | format v2: small chunks gathered into packs, and where each is (see **Packs** below). |
//! | `config/<time>.json` | Object Lock only: a locked copy of each version of `haul-repo.json` (which `haul key` rewrites, so it is never locked itself); read when `haul-repo.json` is gone. |
//! | `prune/<time>-<id>.json` | [`prune::PruneMark`]: what a prune found unreferenced and when; a later prune deletes it after the grace period (see [`prune`]). |
//! | `pruning/<time>-<id>.json` | a prune running now (host, pid, start): a second prune refuses to start beside it; removed at its end, or as stale once its process is gone from this host or 6 hours have passed. |
//! | `pauses/<run>.json` | [`PauseRecord`]: a cluster a backup paused and what resumes it; written before the first change to the cluster, removed after the resume (see [`pause`]). |
//! | `staging/<id>/plan.json`, `staging/<id>/shard-<k>.json` | a backup made by shards, before its commit: [`shard::ShardPlan`] (the parent, and where the key space is cut) and one [`shard::ShardRecord`] per shard (its segments); the commit writes `snapshots/<id>.json` from them and removes the folder (see [`shard`]). |
//! | `targets/<hash>-shard-<k>-of-<n>.json` | [`TargetState`] of one range of a target, written by restore shard `k` of `n`; a complete set stands for the whole target. |
//!
//! **Chunks.** A chunk blob is a 14-byte header followed by the payload:
//! magic `HLCK`, format byte `1`, codec byte (`0` raw, `1` zstd), and the
//! plaintext length as a little-endian u64. Payloads are compressed with zstd
//! unless a sample shows the data does not compress (already compressed or
//! encrypted data, such as Pachyderm's chunks, is stored raw).
//!
//! **Objects.** An object is cut into fixed-size chunks of
//! [`RepoConfig::object_chunk_size`] bytes (a power of two), so that chunk `i`
//! is exactly the byte range a ranged GET or a multipart part covers. Its
//! [`ObjectEntry::hash`] is the plain blake3 of the whole object, computed
//! from the chunks' BLAKE3 subtree chaining values (see [`tree`]) so chunks can
//! be hashed in parallel and out of order.
//!
//! **Database dumps** are cut with content-defined chunking (FastCDC with
//! [`RepoConfig::cdc`]), so that a small change in a database changes few
//! chunks of the next dump. A [`DatabaseRecord`] in the snapshot root names
//! the dump's chunks in order (their concatenation is the output of
//! `pg_dump --format=custom --compress=0`, whose blake3 is `hash`), the
//! server and pg_dump versions, and the row count of every table taken in
//! the same MVCC snapshot as the dump. Roots of version 3
//! ([`SNAPSHOT_VERSION`]) name the chunks through a *chunk list*: pieces
//! stored as chunks, each holding ids and plaintext lengths, cut by
//! content so an unchanged stretch of a dump costs nothing ([`chunklist`]);
//! older roots list the ids inline (`chunks`), and are still read. The optional [`GlobalsRecord`]
//! (`Snapshot::globals`) holds `pg_dumpall --globals-only` (roles,
//! tablespaces) as plain SQL, chunked the same way.
//!
//! **Manifests.** A snapshot's object listing is a sequence of *segments*:
//! chunks whose plaintext is JSON lines of [`ObjectEntry`], sorted by key in
//! *path order* ([`diff::key_order`]: bytes, with `/` before every other
//! byte — the order of a depth-first walk). Segment boundaries are cut where the blake3 of
//! a key meets a condition (see [`segment`]), so an unchanged key range
//! produces byte-identical segments and costs nothing in the next snapshot.
//!
//! # Format v2: encrypted and authenticated
//!
//! Version 2 keeps v1's layout and adds, in `haul-repo.json`, an
//! `encryption` section ([`crypto::Encryption`]): the cipher, a MAC of the
//! other settings, and the key slots that wrap the repository's random
//! master key (a password through Argon2id, or a key file). With it, every
//! other object is *sealed* ([`crypto`]): `HLS2`, a random 24-byte nonce,
//! XChaCha20-Poly1305 ciphertext and tag, with associated data binding the
//! object to its repository, its kind (chunk, snapshot, record) and its
//! name, so an altered, moved or replayed object is refused, never read.
//! A chunk's sealed plaintext is its v1 frame (header and zstd or raw
//! payload); it is stored under `chunks/<2 hex>/<keyed id>` where the keyed
//! id is blake3 keyed with a key derived from the master key over the
//! chunk's id, so the names reveal nothing about content while identical
//! chunks still share one name within the repository (deduplication). The
//! ids inside manifests and roots stay the plain blake3 of the plaintext,
//! checked after every decryption as in v1.
//!
//! `haul init --insecure-no-encryption` makes a v2 repository without the
//! section, stored exactly as v1 stores it. A v1 repository is read (and
//! written) as before. A repository without keys refuses a key, and one with
//! keys refuses to be opened without one: an attacker who rewrote
//! `haul-repo.json` to drop the section cannot make haul trust plaintext
//! where sealed data was expected. The settings' MAC catches settings
//! changed without the key.
//!
//! **Packs** ([`pack`]). A v2 repository made by this haul sets
//! `pack` in `haul-repo.json` ([`pack::PackParams`]: chunks whose stored
//! blob is under 1 MiB go into packs of 8 MiB; `haul init --pack-size`).
//! Such a chunk's blob, byte for byte what `chunks/` would hold, is
//! appended to a pack instead:
//!
//! | path | what it holds |
//! |---|---|
//! | `packs/<2 hex>/<64 hex>` | blobs back to back, then a trailer (the pack's own index entry, sealed as a record named by the pack's path) and its length as a u32. The name is random. |
//! | `index/<64 hex>` | which blobs each pack holds (stored name, offset, length), sealed as a record named by its path. Written after the packs it names and before any snapshot root that needs them; never rewritten. |
//!
//! A reader loads every index, finds a chunk there (a ranged GET of its
//! blob) or else under `chunks/`. Loose chunks stay valid in every
//! repository: packs add a place a chunk can be, never change what a chunk
//! is, so v2 repositories written before packs (no `pack` setting: every
//! chunk loose) read and write as before, and a v1 repository never packs.
//! A pack no index names (a killed backup's) holds nothing a snapshot
//! needs.

//! Compatibility: readers refuse a `haul-repo.json` whose `version` is
//! newer than [`FORMAT_VERSION`], and a snapshot root whose `version` is
//! newer than [`SNAPSHOT_VERSION`].

pub mod chunk;
pub mod chunklist;
pub mod crypto;
pub mod diff;
mod error;
mod id;
mod model;
pub mod pack;
pub mod pause;
pub mod prune;
mod run;
pub mod segment;
pub mod shard;
pub mod tree;

pub use error::FormatError;
pub use id::{ChunkId, InvalidId, RepoId, SnapshotId};
pub use model::{
    BucketRecord, CdcParams, DatabaseGrant, DatabaseRecord, DatabaseShape, FORMAT_VERSION,
    GlobalsRecord, LockMode, ObjectEntry, ObjectLock, RepoConfig, SNAPSHOT_VERSION, SegmentRef,
    Snapshot, TargetState,
};
pub use pause::{PauseMethod, PauseRecord, PauseStep, PausedBy, Workload, WorkloadKind};
pub use run::{Phase, PhaseKind, RunKind, RunRecord, RunStats};

/// Path of the repository's configuration file, relative to the repository prefix.
pub const REPO_CONFIG_PATH: &str = "haul-repo.json";
/// Folder of chunks.
pub const CHUNKS_DIR: &str = "chunks";
/// Folder of snapshot roots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Folder of run records.
pub const RUNS_DIR: &str = "runs";
/// Folder of restore-target states.
pub const TARGETS_DIR: &str = "targets";
/// Folder of the locked copies of `haul-repo.json` (Object Lock only).
pub const CONFIG_COPIES_DIR: &str = "config";

/// Path of a chunk relative to the repository prefix: `chunks/ab/abcdef…`.
pub fn chunk_path(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{CHUNKS_DIR}/{}/{hex}", &hex[..2])
}

/// Path of a snapshot root relative to the repository prefix.
pub fn snapshot_path(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS_DIR}/{id}.json")
}
