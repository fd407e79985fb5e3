//! The JSON documents of a repository. Field names are part of format v1:
//! add fields with `#[serde(default)]`; never rename or repurpose one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::run::Phase;

use crate::{ChunkId, FormatError, RepoId, SnapshotId, tree};

/// The repository format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// The version of the snapshot roots this crate writes and reads: 3 added
/// chunk lists ([`DatabaseRecord::chunk_lists`]). A haul that reads roots
/// only up to 2 refuses a version 3 root (with "upgrade haul") instead of
/// finding a dump with no chunks in it.
pub const SNAPSHOT_VERSION: u32 = 3;

/// `haul-repo.json`: written once by `haul init`, read by every command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Always `"haul"`: tells a person what this file is.
    pub format: String,
    pub version: u32,
    pub id: RepoId,
    pub created: DateTime<Utc>,
    /// Size of the fixed chunks objects are cut into: a power of two, ≥ 1 KiB.
    pub object_chunk_size: u64,
    /// Content-defined chunking of database dumps.
    pub cdc: CdcParams,
    /// zstd level for chunks that compress.
    pub zstd_level: i32,
    /// Average number of entries per manifest segment (a power of two).
    pub segment_entries: u32,
    /// Format v2: the cipher, the settings' MAC and the key slots. `None`
    /// in a v1 repository and in one made with `--insecure-no-encryption`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::crypto::Encryption>,
    /// Format v2: small chunks are gathered into packs (see [`crate::pack`]).
    /// `None` in v1 repositories and in v2 ones written before packs:
    /// every chunk is then loose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<crate::pack::PackParams>,
    /// S3 Object Lock: chunks, packs, indexes and snapshot roots are
    /// written with a retention date this many days ahead, so nobody (not
    /// even haul's own credentials) can delete or overwrite them before it.
    /// `None`: no retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// S3 Object Lock retention for the immutable objects of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    /// Days from the write until an object may be deleted.
    pub days: u32,
    pub mode: LockMode,
}

/// S3 Object Lock's two modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete early.
    Governance,
    /// Nobody may delete early, not even the account's root user.
    Compliance,
}

impl LockMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "governance" => Some(Self::Governance),
            "compliance" => Some(Self::Compliance),
            _ => None,
        }
    }

    /// As S3 spells it (`GOVERNANCE`, `COMPLIANCE`).
    pub fn s3_name(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

impl ObjectLock {
    /// Until when an object written at `written` is locked.
    pub fn until(&self, written: DateTime<Utc>) -> DateTime<Utc> {
        written
            .checked_add_signed(chrono::Duration::days(i64::from(self.days)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// FastCDC sizes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl RepoConfig {
    /// Default object chunk size: 8 MiB, Pachyderm's average chunk, and above
    /// S3's 5 MiB minimum multipart part so a chunk can be a part.
    pub const DEFAULT_OBJECT_CHUNK_SIZE: u64 = 8 << 20;
    /// Dump chunks average 128 KiB (32 KiB to 512 KiB). Measured with
    /// `benches/dumpchurn.py` on a Pachyderm-shaped database (BENCHMARKS.md,
    /// "Dump chunking"): after 1% of the rows appended, or 1% updated among
    /// the newest, or the oldest 1% expired and replaced, the next backup
    /// uploads 2–3% of the dump against 9–10% at 1 MiB, for ~5% more time;
    /// the chunks go into packs, and the list of them into chunk-list pieces
    /// (not the snapshot root). Repositories keep the sizes they were made with.
    pub const DEFAULT_CDC: CdcParams = CdcParams {
        min: 32 << 10,
        avg: 128 << 10,
        max: 512 << 10,
    };
    /// zstd level 3: zstd's default, ~300 MB/s per core on text-like dumps.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
    /// ~4096 entries (~200 KiB compressed) per segment.
    pub const DEFAULT_SEGMENT_ENTRIES: u32 = 4096;
    /// The largest object or dump chunk a repository may be configured for.
    pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

    pub fn new(id: RepoId, created: DateTime<Utc>) -> Self {
        Self {
            format: "haul".into(),
            version: FORMAT_VERSION,
            id,
            created,
            object_chunk_size: Self::DEFAULT_OBJECT_CHUNK_SIZE,
            cdc: Self::DEFAULT_CDC,
            zstd_level: Self::DEFAULT_ZSTD_LEVEL,
            segment_entries: Self::DEFAULT_SEGMENT_ENTRIES,
            encryption: None,
            pack: Some(crate::pack::PackParams::DEFAULT),
            object_lock: None,
        }
    }

    /// The settings every chunk follows, as the MAC of a v2 repository
    /// covers them: everything but the `encryption` section itself.
    pub fn settings_bytes(&self) -> Vec<u8> {
        let plain = Self {
            encryption: None,
            ..self.clone()
        };
        serde_json::to_vec(&plain).expect("config serializes")
    }

    /// Parses and checks `haul-repo.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        let c: Self = serde_json::from_slice(bytes).map_err(|source| FormatError::Json {
            what: crate::REPO_CONFIG_PATH.into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        let invalid = |reason: String| FormatError::Invalid {
            what: crate::REPO_CONFIG_PATH.into(),
            reason,
        };
        if self.format != "haul" {
            return Err(invalid(format!(
                "format is {:?}, not \"haul\"",
                self.format
            )));
        }
        if self.version > FORMAT_VERSION {
            return Err(FormatError::TooNew {
                what: "this repository".into(),
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        if let Some(lock) = self.object_lock
            && !(1..=36_500).contains(&lock.days)
        {
            return Err(invalid(format!(
                "object_lock.days is {}: it must be 1 to 36500",
                lock.days
            )));
        }
        if !tree::valid_chunk_size(self.object_chunk_size)
            || self.object_chunk_size > Self::MAX_CHUNK_SIZE
        {
            return Err(invalid(format!(
                "object_chunk_size {} is not a power of two from 1 KiB to 64 MiB",
                self.object_chunk_size
            )));
        }
        let CdcParams { min, avg, max } = self.cdc;
        if !(64 <= min && min <= avg && avg <= max) {
            return Err(invalid(format!(
                "cdc sizes must satisfy 64 <= min <= avg <= max, got {min}/{avg}/{max}"
            )));
        }
        if let Some(p) = &self.pack {
            if self.version < 2 {
                return Err(invalid("packs in a version 1 repository".into()));
            }
            p.validate().map_err(invalid)?;
        }
        if let Some(e) = &self.encryption {
            if self.version < 2 || e.cipher != crate::crypto::CIPHER {
                return Err(invalid(format!(
                    "encryption {:?} in a version {} repository is not one haul knows",
                    e.cipher, self.version
                )));
            }
            if e.slots.is_empty() {
                return Err(invalid("an encrypted repository without key slots".into()));
            }
        }
        if !self.segment_entries.is_power_of_two() {
            return Err(invalid(format!(
                "segment_entries {} is not a power of two",
                self.segment_entries
            )));
        }
        Ok(())
    }
}

/// One object of a snapshot: a line of a manifest segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Key relative to the source prefix.
    pub key: String,
    pub size: u64,
    /// The source store's ETag, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The source store's last-modified time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<DateTime<Utc>>,
    /// blake3 of the whole object.
    pub hash: ChunkId,
    /// The object's chunks, in order. Left out when the object is a single
    /// chunk, whose id is then `hash` (most objects: this keeps segments small).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
}

impl ObjectEntry {
    /// Builds an entry, folding the single-chunk case.
    pub fn new(
        key: String,
        size: u64,
        etag: Option<String>,
        modified: Option<DateTime<Utc>>,
        hash: ChunkId,
        chunks: Vec<ChunkId>,
    ) -> Self {
        let chunks = if chunks.len() == 1 && chunks[0] == hash {
            Vec::new()
        } else {
            chunks
        };
        Self {
            key,
            size,
            etag,
            modified,
            hash,
            chunks,
        }
    }

    /// The ids of the chunks that hold this object, in order.
    pub fn chunk_ids(&self) -> &[ChunkId] {
        if self.size == 0 {
            &[]
        } else if self.chunks.is_empty() {
            std::slice::from_ref(&self.hash)
        } else {
            &self.chunks
        }
    }

    /// Is the listed object (size, etag, modified) the one this entry recorded?
    /// The ETag decides when both sides have one (S3 changes it on every
    /// overwrite, even of the same size); otherwise the modification time does.
    pub fn matches_listing(
        &self,
        size: u64,
        etag: Option<&str>,
        modified: Option<DateTime<Utc>>,
    ) -> bool {
        if self.size != size {
            return false;
        }
        match (self.etag.as_deref(), etag) {
            (Some(a), Some(b)) => a == b,
            _ => self.modified.is_some() && self.modified == modified,
        }
    }
}

/// A manifest segment named by a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub id: ChunkId,
    pub first: String,
    pub last: String,
    pub entries: u64,
    /// Sum of the sizes of the objects listed.
    pub bytes: u64,
}

/// The object store part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// The source URL, without credentials.
    pub url: String,
    pub objects: u64,
    pub bytes: u64,
    pub segments: Vec<SegmentRef>,
}

/// A database dump held by a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// The name the operator gave it (`pachyderm`, `dex`).
    pub name: String,
    /// The database's own name on the server.
    pub database: String,
    pub server_version: String,
    /// e.g. `custom`.
    pub format: String,
    /// pg_dump options used, without connection settings.
    #[serde(default)]
    pub options: Vec<String>,
    /// The dump's chunks, in order, in roots before version 3 (see
    /// [`SNAPSHOT_VERSION`]); empty when `chunk_lists` names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
    /// The pieces of the dump's chunk list, in order (see
    /// [`crate::chunklist`]): roots of version 3 and later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_lists: Vec<ChunkId>,
    /// How many chunks the dump has (informational; the list decides).
    #[serde(default)]
    pub chunk_count: u64,
    /// Length of the dump.
    pub bytes: u64,
    /// blake3 of the whole dump.
    pub hash: ChunkId,
    /// Row count per table (`schema.table`), taken in the dump's MVCC snapshot.
    #[serde(default)]
    pub tables: BTreeMap<String, u64>,
    /// Where it was dumped from: the URL without its password.
    #[serde(default)]
    pub url: String,
    /// `pg_dump --version` of the dumping tool: a restore needs a
    /// pg_restore at least as new to read the archive.
    #[serde(default)]
    pub pg_dump_version: String,
    /// What makes the database itself beyond its contents, read when it
    /// was dumped; a restore creates a missing target like it. (Snapshots
    /// of older haul versions have none: the target is created plainly.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<DatabaseShape>,
}

/// A database's owner, encoding, locale, connection limit, settings and
/// privileges (`pg_database`, `pg_db_role_setting`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseShape {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// -1: no limit.
    pub connection_limit: i32,
    /// `ALTER DATABASE ... SET` settings (`key=value`) for every role.
    #[serde(default)]
    pub settings: Vec<String>,
    /// The database's privileges; `None` when they are the defaults.
    #[serde(default)]
    pub grants: Option<Vec<DatabaseGrant>>,
}

/// One privilege on a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    /// The role, or `None` for PUBLIC.
    pub grantee: Option<String>,
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    pub privilege: String,
    pub grantable: bool,
}

/// The cluster-wide objects of a PostgreSQL server (roles, tablespaces), as
/// `pg_dumpall --globals-only` prints them: plain SQL, cut like a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalsRecord {
    /// The server, as a URL without its password.
    pub url: String,
    pub server_version: String,
    pub pg_dumpall_version: String,
    pub chunks: Vec<ChunkId>,
    pub bytes: u64,
    /// blake3 of the whole SQL text.
    pub hash: ChunkId,
}

/// `snapshots/<id>.json`: the root of a backup. Written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// e.g. `haul 0.1.0`.
    pub tool: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub bucket: Option<BucketRecord>,
    #[serde(default)]
    pub databases: Vec<DatabaseRecord>,
    /// Roles and tablespaces of a database server, when the backup captured them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsRecord>,
    /// Chunk holding the Helm values file, when one was given.
    #[serde(default)]
    pub helm_values: Option<ChunkId>,
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Free-form labels (application version, cluster name, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn from_json(bytes: &[u8], what: &str) -> Result<Self, FormatError> {
        let s: Self = serde_json::from_slice(bytes).map_err(|source| FormatError::Json {
            what: what.into(),
            source,
        })?;
        if s.version > SNAPSHOT_VERSION {
            return Err(FormatError::TooNew {
                what: what.into(),
                found: s.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        Ok(s)
    }

    pub fn objects(&self) -> u64 {
        self.bucket.as_ref().map_or(0, |b| b.objects)
    }

    pub fn bytes(&self) -> u64 {
        self.bucket.as_ref().map_or(0, |b| b.bytes)
    }
}

/// `targets/<hash>.json`: the objects haul wrote to (or found identical in) a
/// restore target, with the ETag the target gave them. The next restore to
/// that target trusts an object whose size and ETag still match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    pub url: String,
    pub snapshot: SnapshotId,
    pub time: DateTime<Utc>,
    /// Segments of [`ObjectEntry`] whose `etag` is the *target's* ETag.
    pub segments: Vec<SegmentRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> ObjectEntry {
        ObjectEntry::new(
            key.into(),
            5,
            Some("e1".into()),
            None,
            ChunkId::of(b"hello"),
            vec![ChunkId::of(b"hello")],
        )
    }

    #[test]
    fn single_chunk_entries_fold_their_chunk_list() {
        let e = entry("a");
        assert!(e.chunks.is_empty());
        assert_eq!(e.chunk_ids(), &[ChunkId::of(b"hello")]);
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains("chunks"), "{line}");
        assert_eq!(serde_json::from_str::<ObjectEntry>(&line).unwrap(), e);
        let empty = ObjectEntry::new("z".into(), 0, None, None, ChunkId::of(b""), vec![]);
        assert!(empty.chunk_ids().is_empty());
    }

    #[test]
    fn listing_match_prefers_etag() {
        let e = entry("a");
        assert!(e.matches_listing(5, Some("e1"), None));
        assert!(
            !e.matches_listing(5, Some("e2"), None),
            "same size, new etag: overwritten"
        );
        assert!(!e.matches_listing(6, Some("e1"), None));
        assert!(
            !e.matches_listing(5, None, None),
            "no way to tell: treat as changed"
        );
    }

    #[test]
    fn repo_config_round_trips_and_rejects_bad_values() {
        let c = RepoConfig::new(RepoId::from_random([7; 16]), Utc::now());
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(RepoConfig::from_json(&json).unwrap(), c);
        let mut bad = c.clone();
        bad.object_chunk_size = 3000;
        assert!(bad.validate().is_err());
        let mut newer = c.clone();
        newer.version = FORMAT_VERSION + 1;
        assert!(matches!(newer.validate(), Err(FormatError::TooNew { .. })));
        assert!(RepoConfig::from_json(b"{\"format\":\"x\"}").is_err());
    }
}
