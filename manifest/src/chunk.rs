//! Chunk framing: how a chunk's plaintext is stored as a blob.
//!
//! ```text
//! offset 0  4      5      6                 14
//!        HLCK  | 1  | codec | plaintext len (u64 LE) | payload …
//! ```
//!
//! The codec is chosen per chunk: zstd when a sample of the chunk compresses
//! well enough to be worth the CPU, raw otherwise. Decoding always checks the
//! blake3 of the plaintext against the chunk's id, so a damaged or swapped
//! blob is never returned as data.

use std::borrow::Cow;

use crate::{ChunkId, FormatError};

const MAGIC: &[u8; 4] = b"HLCK";
const FRAME_VERSION: u8 = 1;
/// Length of the header in front of every chunk's payload.
pub const HEADER_LEN: usize = 14;

/// Bytes of a chunk tried with fast zstd to decide whether compressing the
/// whole chunk is worth it. Large enough to see past file headers, small
/// enough to cost well under 1% of a typical chunk.
pub const SAMPLE_LEN: usize = 64 * 1024;
/// Keep zstd only if the sample shrinks to at most this fraction (in percent):
/// gains below ~5% do not pay for compressing and decompressing every chunk.
pub const WORTHWHILE_PERCENT: usize = 95;
/// Chunks shorter than this are stored raw: too small to compress usefully.
pub const MIN_COMPRESS_LEN: usize = 128;
/// No chunk's plaintext is longer: object chunks and dump chunks are capped
/// at 64 MiB by `RepoConfig::validate`, manifest segments stay far below.
/// A header that declares more is damaged, and is refused before anything
/// is allocated for it.
pub const MAX_CHUNK_LEN: u64 = 256 << 20;

/// How a chunk's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

/// A chunk ready to store: its id, header, and compressed payload when zstd
/// paid off. A raw chunk's payload is its plaintext, which the caller still
/// holds: it is not copied, so the engine can send header + plaintext as one
/// request body without another buffer of the chunk's size.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub id: ChunkId,
    pub codec: Codec,
    pub plain_len: usize,
    pub header: [u8; HEADER_LEN],
    /// `Some` for zstd, `None` for raw.
    pub compressed: Option<Vec<u8>>,
}

impl Encoded {
    /// Length of the stored blob.
    pub fn blob_len(&self) -> usize {
        HEADER_LEN + self.compressed.as_ref().map_or(self.plain_len, Vec::len)
    }

    /// The whole blob in one buffer (copies a raw plaintext).
    pub fn to_blob(&self, plain: &[u8]) -> Vec<u8> {
        let mut blob = Vec::with_capacity(self.blob_len());
        blob.extend_from_slice(&self.header);
        blob.extend_from_slice(self.compressed.as_deref().unwrap_or(plain));
        blob
    }
}

/// Hashes `plain`, then frames it as a chunk blob, compressed when worthwhile.
pub fn encode(plain: &[u8], zstd_level: i32) -> Encoded {
    encode_with_id(ChunkId::of(plain), plain, zstd_level)
}

/// Frames `plain` as a chunk blob whose id the caller already computed.
pub fn encode_with_id(id: ChunkId, plain: &[u8], zstd_level: i32) -> Encoded {
    let compressed = worth_compressing(plain)
        .then(|| compress(plain, zstd_level))
        .flatten()
        .filter(|c| c.len() < plain.len());
    let codec = if compressed.is_some() {
        Codec::Zstd
    } else {
        Codec::Raw
    };
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4] = FRAME_VERSION;
    header[5] = codec as u8;
    header[6..].copy_from_slice(&(plain.len() as u64).to_le_bytes());
    Encoded {
        id,
        codec,
        plain_len: plain.len(),
        header,
        compressed,
    }
}

/// Does a sample of `plain` shrink enough under fast zstd?
fn worth_compressing(plain: &[u8]) -> bool {
    if plain.len() < MIN_COMPRESS_LEN {
        return false;
    }
    let sample = &plain[..plain.len().min(SAMPLE_LEN)];
    match compress(sample, 1) {
        Some(c) => c.len() * 100 <= sample.len() * WORTHWHILE_PERCENT,
        None => false,
    }
}

/// zstd at `level`, with a compression context kept per thread and level:
/// creating one costs more than compressing a small chunk (measured:
/// `ZSTD_createCCtx` was 4% of a backup of 20,000 objects of 1–16 KiB).
fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    use std::cell::RefCell;
    thread_local! {
        static CONTEXTS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
            const { RefCell::new(Vec::new()) };
    }
    CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        let at = match c.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                c.push((level, zstd::bulk::Compressor::new(level).ok()?));
                c.len() - 1
            }
        };
        c[at].1.compress(data).ok()
    })
}

/// The plaintext length a blob's header declares, after checking the header.
pub fn plain_len(id: &ChunkId, blob: &[u8]) -> Result<u64, FormatError> {
    header(id, blob).map(|(_, len)| len)
}

fn header(id: &ChunkId, blob: &[u8]) -> Result<(Codec, u64), FormatError> {
    let corrupt = |reason: &str| FormatError::CorruptChunk {
        id: *id,
        reason: reason.to_owned(),
    };
    if blob.len() < HEADER_LEN {
        return Err(corrupt("shorter than a chunk header"));
    }
    if &blob[..4] != MAGIC {
        return Err(corrupt("no chunk header (bad magic)"));
    }
    if blob[4] != FRAME_VERSION {
        return Err(corrupt(&format!("unknown chunk frame version {}", blob[4])));
    }
    let codec = match blob[5] {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        other => return Err(corrupt(&format!("unknown codec {other}"))),
    };
    let len = u64::from_le_bytes(blob[6..14].try_into().expect("8 bytes"));
    if len > MAX_CHUNK_LEN {
        return Err(corrupt(&format!(
            "header declares {len} bytes, more than any chunk holds"
        )));
    }
    Ok((codec, len))
}

/// Decodes a chunk blob and checks that its plaintext hashes to `id`. A raw
/// chunk's plaintext is borrowed from the blob, not copied.
pub fn decode<'a>(id: &ChunkId, blob: &'a [u8]) -> Result<Cow<'a, [u8]>, FormatError> {
    let plain = decode_unverified(id, blob)?;
    let actual = ChunkId::of(&plain);
    if actual != *id {
        return Err(FormatError::HashMismatch { id: *id, actual });
    }
    Ok(plain)
}

/// Decodes a chunk blob without checking its hash.
fn decode_unverified<'a>(id: &ChunkId, blob: &'a [u8]) -> Result<Cow<'a, [u8]>, FormatError> {
    let corrupt = |reason: String| FormatError::CorruptChunk { id: *id, reason };
    let (codec, len) = header(id, blob)?;
    let payload = &blob[HEADER_LEN..];
    let len = usize::try_from(len).map_err(|_| corrupt("declared length too large".into()))?;
    match codec {
        Codec::Raw => {
            if payload.len() != len {
                return Err(corrupt(format!(
                    "payload is {} bytes, header says {len}",
                    payload.len()
                )));
            }
            Ok(Cow::Borrowed(payload))
        }
        Codec::Zstd => {
            // Stream-decode at most len + 1 bytes: memory follows what the
            // payload really holds, not what a damaged header claims.
            let mut plain = Vec::new();
            let decoder = zstd::stream::read::Decoder::new(payload)
                .map_err(|e| corrupt(format!("zstd payload does not decode: {e}")))?;
            std::io::Read::read_to_end(
                &mut std::io::Read::take(decoder, len as u64 + 1),
                &mut plain,
            )
            .map_err(|e| corrupt(format!("zstd payload does not decode: {e}")))?;
            if plain.len() != len {
                return Err(corrupt(format!(
                    "decompressed to {} bytes, header says {len}",
                    plain.len()
                )));
            }
            Ok(Cow::Owned(plain))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 32);
        let mut counter = seed;
        while out.len() < n {
            out.extend_from_slice(blake3::hash(&counter.to_le_bytes()).as_bytes());
            counter += 1;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn compressible_data_is_zstd_and_noise_is_raw() {
        let text = b"pachyderm chunk metadata ".repeat(10_000);
        let e = encode(&text, 3);
        assert_eq!(e.codec, Codec::Zstd);
        let blob = e.to_blob(&text);
        assert_eq!(blob.len(), e.blob_len());
        assert!(blob.len() < text.len() / 10);
        assert_eq!(&*decode(&e.id, &blob).unwrap(), &text[..]);

        let rnd = noise(300_000, 7);
        let e = encode(&rnd, 3);
        assert_eq!(e.codec, Codec::Raw);
        let blob = e.to_blob(&rnd);
        assert_eq!(blob.len(), rnd.len() + HEADER_LEN);
        assert!(matches!(decode(&e.id, &blob).unwrap(), Cow::Borrowed(_)));
        assert_eq!(&*decode(&e.id, &blob).unwrap(), &rnd[..]);
    }

    #[test]
    fn damage_is_detected() {
        let text = b"some text that compresses, some text that compresses".repeat(100);
        for plain in [text, noise(5000, 1)] {
            let e = encode(&plain, 3);
            let blob = e.to_blob(&plain);
            // A flipped payload byte: either zstd or the hash check notices.
            let mut bad = blob.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x55;
            assert!(decode(&e.id, &bad).is_err());
            // Truncation and a wrong id.
            assert!(decode(&e.id, &blob[..blob.len() - 1]).is_err());
            assert!(decode(&e.id, &blob[..5]).is_err());
            // A damaged length field is refused, not allocated.
            let mut huge = blob.clone();
            huge[6..14].copy_from_slice(&u64::MAX.to_le_bytes());
            assert!(decode(&e.id, &huge).is_err());
            let mut longer = blob.clone();
            longer[6..14].copy_from_slice(&(plain.len() as u64 + 1).to_le_bytes());
            assert!(decode(&e.id, &longer).is_err());
            assert!(matches!(
                decode(&ChunkId::of(b"other"), &blob),
                Err(FormatError::HashMismatch { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(data in proptest::collection::vec(any::<u8>(), 0..5000), repeat in 1usize..50) {
            let plain: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            let e = encode(&plain, 3);
            prop_assert_eq!(e.id, ChunkId::of(&plain));
            let blob = e.to_blob(&plain);
            prop_assert_eq!(&*decode(&e.id, &blob).unwrap(), &plain[..]);
        }
    }
}
