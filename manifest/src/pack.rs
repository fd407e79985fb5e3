//! Packs: many small chunk blobs in one stored object, and the index that
//! says where each one is.
//!
//! A backup of many small objects is bound by requests, not bytes: one PUT
//! per 4 KiB chunk costs a round trip each. Chunks whose stored blob is
//! smaller than [`PackParams::threshold`] are appended to a pack instead,
//! and a pack is written once it holds [`PackParams::size`] bytes:
//!
//! ```text
//! packs/<2 hex>/<64 hex>   blob ‖ blob ‖ … ‖ trailer ‖ trailer length (u32 LE)
//! index/<64 hex>           HLIX ‖ 1 ‖ entries (sealed in an encrypted repository)
//! ```
//!
//! A blob in a pack is byte for byte what a loose chunk stores under
//! `chunks/` (the v1 frame, sealed as the chunk's id in an encrypted
//! repository), so reading one is a ranged GET followed by the same checks.
//! Pack names are random: they say nothing about what a pack holds.
//!
//! The **index** objects list, for each pack, the blobs it holds: the
//! chunk's stored name (its keyed id when encrypted), the offset and the
//! length. A backup writes its packs, then an index naming them, and only
//! then the snapshot root: a root never names a chunk no index locates.
//! Index objects are never rewritten; a reader loads them all. A pack that
//! no index names (a killed backup's) is garbage for prune to reclaim.
//!
//! The **trailer** repeats the pack's own index entry (sealed as the record
//! `packs/<2 hex>/<64 hex>` in an encrypted repository), so a lost index
//! can be rebuilt from the packs alone. Readers use the index.

use serde::{Deserialize, Serialize};

use crate::{ChunkId, FormatError};

/// Folder of packs.
pub const PACKS_DIR: &str = "packs";
/// Folder of pack indexes.
pub const INDEX_DIR: &str = "index";

const MAGIC: &[u8; 4] = b"HLIX";
const VERSION: u8 = 1;
/// A pack's name plus its blob count.
const PACK_HEADER: usize = 32 + 4;
/// A blob's name, offset and length.
const BLOB_LEN: usize = 32 + 4 + 4;

/// When chunks are packed (`RepoConfig::pack`). Absent in v1 repositories
/// and in v2 repositories written before packs: every chunk there is loose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackParams {
    /// Chunks whose stored blob is smaller than this many bytes are packed;
    /// larger ones stay loose (one object each, a ranged read or a
    /// multipart part of their own). 0 packs nothing.
    pub threshold: u32,
    /// A pack is written once its blobs reach this many bytes.
    pub size: u32,
}

impl PackParams {
    /// Below 1 MiB a request's round trip costs more than the bytes; at
    /// 8 MiB a pack is one efficient PUT, and four in flight stay well
    /// inside the memory budget (see BENCHMARKS.md, "Packs").
    pub const DEFAULT: PackParams = PackParams {
        threshold: 1 << 20,
        size: 8 << 20,
    };
    /// The largest pack haul writes or accepts: offsets are u32.
    pub const MAX_SIZE: u32 = 256 << 20;

    pub fn validate(&self) -> Result<(), String> {
        if self.size < self.threshold || self.size > Self::MAX_SIZE {
            return Err(format!(
                "pack size {} must be at least the threshold {} and at most {}",
                self.size,
                self.threshold,
                Self::MAX_SIZE
            ));
        }
        Ok(())
    }
}

/// The random name of a pack.
pub type PackId = ChunkId;

/// Path of a pack relative to the repository prefix: `packs/ab/abcdef…`.
pub fn pack_path(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{PACKS_DIR}/{}/{hex}", &hex[..2])
}

/// Path of an index object relative to the repository prefix.
pub fn index_path(id: &ChunkId) -> String {
    format!("{INDEX_DIR}/{}", id.to_hex())
}

/// Where one blob is in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Blob {
    /// The chunk's stored name (see the crate docs: the keyed id when encrypted).
    pub name: ChunkId,
    pub offset: u32,
    pub len: u32,
}

/// One pack and its blobs, in the order they are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub pack: PackId,
    pub blobs: Vec<Blob>,
}

impl PackEntry {
    /// Bytes of blobs (the pack without its trailer).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs
            .last()
            .map_or(0, |b| u64::from(b.offset) + u64::from(b.len))
    }
}

/// Encodes index entries (an index object's plaintext, or a pack's trailer).
pub fn encode(entries: &[PackEntry]) -> Vec<u8> {
    let blobs: usize = entries.iter().map(|e| e.blobs.len()).sum();
    let mut out = Vec::with_capacity(5 + entries.len() * PACK_HEADER + blobs * BLOB_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    for e in entries {
        out.extend_from_slice(&e.pack.0);
        out.extend_from_slice(&(e.blobs.len() as u32).to_le_bytes());
        for b in &e.blobs {
            out.extend_from_slice(&b.name.0);
            out.extend_from_slice(&b.offset.to_le_bytes());
            out.extend_from_slice(&b.len.to_le_bytes());
        }
    }
    out
}

/// Decodes and checks index entries: blobs must lie one after the other
/// from offset 0, none empty, so a forged index cannot point a read
/// outside what its pack claims to hold.
pub fn decode(bytes: &[u8], what: &str) -> Result<Vec<PackEntry>, FormatError> {
    let invalid = |reason: String| FormatError::Invalid {
        what: what.to_owned(),
        reason,
    };
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(invalid("not a pack index (no HLIX header)".into()));
    };
    let Some((&version, mut rest)) = rest.split_first() else {
        return Err(invalid("cut short after its header".into()));
    };
    if version != VERSION {
        return Err(FormatError::TooNew {
            what: what.to_owned(),
            found: u32::from(version),
            supported: u32::from(VERSION),
        });
    }
    let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, FormatError> {
        if rest.len() < n {
            return Err(invalid("cut short".into()));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let id_at = |b: &[u8], at: usize| {
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[at..at + 32]);
        ChunkId(id)
    };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let head = take(&mut rest, PACK_HEADER)?;
        let pack = id_at(&head, 0);
        let count = u32_at(&head, 32) as usize;
        if count == 0 || count > rest.len() / BLOB_LEN {
            return Err(invalid(format!(
                "pack {} claims {count} blobs",
                pack.short()
            )));
        }
        let raw = take(&mut rest, count * BLOB_LEN)?;
        let mut blobs = Vec::with_capacity(count);
        let mut end: u64 = 0;
        for b in raw.chunks_exact(BLOB_LEN) {
            let blob = Blob {
                name: id_at(b, 0),
                offset: u32_at(b, 32),
                len: u32_at(b, 36),
            };
            if u64::from(blob.offset) != end || blob.len == 0 {
                return Err(invalid(format!(
                    "pack {}: blob {} at {}+{} does not follow the one before (ends at {end})",
                    pack.short(),
                    blob.name.short(),
                    blob.offset,
                    blob.len
                )));
            }
            end += u64::from(blob.len);
            if end > u64::from(PackParams::MAX_SIZE) {
                return Err(invalid(format!("pack {} is too large", pack.short())));
            }
            blobs.push(blob);
        }
        entries.push(PackEntry { pack, blobs });
    }
    Ok(entries)
}

/// Gathers blobs into a pack's bytes, in memory.
#[derive(Debug)]
pub struct PackWriter {
    pub id: PackId,
    bytes: Vec<u8>,
    blobs: Vec<Blob>,
}

impl PackWriter {
    pub fn new(id: PackId, capacity: usize) -> Self {
        Self {
            id,
            bytes: Vec::with_capacity(capacity),
            blobs: Vec::new(),
        }
    }

    /// Appends one stored blob (its parts concatenated) under `name`.
    pub fn push(&mut self, name: ChunkId, parts: &[&[u8]]) {
        let offset = self.bytes.len() as u32;
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.blobs.push(Blob {
            name,
            offset,
            len: self.bytes.len() as u32 - offset,
        });
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// The blob named `name`, if this pack holds it.
    pub fn blob(&self, name: &ChunkId) -> Option<&[u8]> {
        let b = self.blobs.iter().find(|b| b.name == *name)?;
        let at = b.offset as usize;
        Some(&self.bytes[at..at + b.len as usize])
    }

    /// The pack's entry and its bytes, once `seal` (the identity in an
    /// unencrypted repository) has turned the trailer's plaintext into
    /// what is stored.
    pub fn finish(self, seal: impl FnOnce(Vec<u8>) -> Vec<u8>) -> (PackEntry, Vec<u8>) {
        let entry = PackEntry {
            pack: self.id,
            blobs: self.blobs,
        };
        let trailer = seal(encode(std::slice::from_ref(&entry)));
        let mut bytes = self.bytes;
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        (entry, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pack: u8, lens: &[u32]) -> PackEntry {
        let mut w = PackWriter::new(ChunkId([pack; 32]), 0);
        for (i, &n) in lens.iter().enumerate() {
            w.push(ChunkId([i as u8; 32]), &[&vec![7u8; n as usize]]);
        }
        w.finish(|t| t).0
    }

    #[test]
    fn index_round_trips() {
        let entries = vec![entry(1, &[10, 20, 1]), entry(2, &[5])];
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes, "index").unwrap(), entries);
        assert_eq!(entries[0].blob_bytes(), 31);
        assert!(decode(&encode(&[]), "empty").unwrap().is_empty());
    }

    #[test]
    fn forged_or_damaged_indexes_are_refused() {
        let good = encode(&[entry(1, &[10, 20])]);
        // Cut anywhere after the header: refused, never a partial answer.
        for cut in 1..good.len() {
            if cut == 5 {
                continue; // the header alone is an empty index
            }
            assert!(decode(&good[..cut], "index").is_err(), "cut at {cut}");
        }
        // A blob that overlaps the one before.
        let mut e = entry(1, &[10, 20]);
        e.blobs[1].offset = 5;
        assert!(decode(&encode(&[e]), "index").is_err());
        // An empty blob; a pack claiming more blobs than the bytes hold.
        let mut e = entry(1, &[10]);
        e.blobs[0].len = 0;
        assert!(decode(&encode(&[e]), "index").is_err());
        let mut bad = good.clone();
        bad[5 + 32] = 200;
        assert!(decode(&bad, "index").is_err());
        assert!(decode(b"HLIX\x09", "index").is_err());
        assert!(decode(b"nope", "index").is_err());
    }

    #[test]
    fn a_pack_ends_with_its_own_entry() {
        let mut w = PackWriter::new(ChunkId([9; 32]), 64);
        w.push(ChunkId([1; 32]), &[b"ab", b"cd"]);
        w.push(ChunkId([2; 32]), &[b"xyz"]);
        assert_eq!(w.blob(&ChunkId([2; 32])), Some(&b"xyz"[..]));
        let (entry, bytes) = w.finish(|t| t);
        assert_eq!(&bytes[..7], b"abcdxyz");
        let n = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let trailer = &bytes[bytes.len() - 4 - n..bytes.len() - 4];
        assert_eq!(decode(trailer, "trailer").unwrap(), vec![entry]);
    }
}
