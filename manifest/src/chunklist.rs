//! Chunk lists: a database dump's chunks, in order, stored as chunks
//! themselves so a snapshot root names a few list pieces instead of every
//! chunk of every dump.
//!
//! ```text
//! piece plaintext:  HLCL | 1 | (chunk id: 32 bytes, plaintext length: u32 LE) × n
//! ```
//!
//! A dump of 10 GB cut into 64 KiB chunks has 160,000 of them: inline in the
//! root that was 10 MB of JSON read by every `haul snapshots`; as pieces it
//! is ~300 ids. Pieces are cut where an entry's id meets a condition (about
//! one entry in [`AVG_ENTRIES`], at most [`MAX_ENTRIES`]), so an unchanged
//! stretch of a dump yields byte-identical pieces, which the repository
//! already holds. A piece is a chunk like any other: named by the blake3 of
//! its plaintext and checked on every read, so its contents are trusted as
//! far as the root that names it.
//!
//! Each entry carries the chunk's plaintext length: the sum must equal the
//! dump's length (checked by readers), and a later backup can tell where in
//! the previous dump a chunk lay.

use crate::{ChunkId, FormatError};

const MAGIC: &[u8; 4] = b"HLCL";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 5;
const ENTRY_LEN: usize = 36;
/// About one entry in this many ends a piece (~18 KiB of plaintext).
pub const AVG_ENTRIES: usize = 512;
/// No piece holds more entries.
pub const MAX_ENTRIES: usize = 4 * AVG_ENTRIES;

/// One chunk of a list: its id and plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry {
    pub id: ChunkId,
    pub len: u32,
}

/// Cuts `entries` into pieces' plaintexts, in order.
pub fn pieces(entries: &[ListEntry]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut piece = new_piece();
    let mut n = 0;
    for e in entries {
        piece.extend_from_slice(&e.id.0);
        piece.extend_from_slice(&e.len.to_le_bytes());
        n += 1;
        if is_boundary(&e.id) || n >= MAX_ENTRIES {
            out.push(std::mem::replace(&mut piece, new_piece()));
            n = 0;
        }
    }
    if n > 0 {
        out.push(piece);
    }
    out
}

fn new_piece() -> Vec<u8> {
    let mut p = Vec::with_capacity(HEADER_LEN + 64 * ENTRY_LEN);
    p.extend_from_slice(MAGIC);
    p.push(VERSION);
    p
}

fn is_boundary(id: &ChunkId) -> bool {
    // Ids are blake3 hashes: their bytes are uniform.
    let b = &id.0;
    (u16::from_le_bytes([b[0], b[1]]) as usize).is_multiple_of(AVG_ENTRIES)
}

/// Parses a piece's plaintext. `what` names it in errors.
pub fn parse(plain: &[u8], what: &str) -> Result<Vec<ListEntry>, FormatError> {
    let invalid = |reason: &str| FormatError::Invalid {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    if plain.len() < HEADER_LEN || &plain[..4] != MAGIC {
        return Err(invalid("not a chunk list (bad magic)"));
    }
    if plain[4] != VERSION {
        return Err(invalid(&format!(
            "chunk list version {} is not one this haul reads",
            plain[4]
        )));
    }
    let body = &plain[HEADER_LEN..];
    if !body.len().is_multiple_of(ENTRY_LEN) {
        return Err(invalid(
            "chunk list length is not a whole number of entries",
        ));
    }
    Ok(body
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            ListEntry {
                id: ChunkId(id),
                len: u32::from_le_bytes([e[32], e[33], e[34], e[35]]),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u32) -> Vec<ListEntry> {
        (0..n)
            .map(|i| ListEntry {
                id: ChunkId::of(&i.to_le_bytes()),
                len: i * 3 + 1,
            })
            .collect()
    }

    #[test]
    fn pieces_round_trip_in_order() {
        let all = entries(5000);
        let pieces = pieces(&all);
        assert!(pieces.len() > 3, "5000 entries make several pieces");
        let back: Vec<ListEntry> = pieces
            .iter()
            .flat_map(|p| parse(p, "piece").expect("parses"))
            .collect();
        assert_eq!(back, all);
        assert!(pieces.iter().all(|p| (p.len() - 5) / 36 <= MAX_ENTRIES));
    }

    #[test]
    fn an_unchanged_stretch_makes_the_same_pieces() {
        let all = entries(6000);
        let mut changed = all.clone();
        changed[5900].len += 1;
        let (a, b) = (pieces(&all), pieces(&changed));
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(
            same + 1 >= a.len(),
            "only the last piece differs: {same} of {}",
            a.len()
        );
        assert_ne!(a.last(), b.last());
    }

    #[test]
    fn damaged_pieces_are_refused() {
        let p = pieces(&entries(3)).remove(0);
        assert!(parse(&p[..p.len() - 1], "p").is_err());
        let mut bad = p.clone();
        bad[0] = b'X';
        assert!(parse(&bad, "p").is_err());
        let mut newer = p;
        newer[4] = 2;
        let e = parse(&newer, "p").expect_err("refused").to_string();
        assert!(e.contains("version 2"), "{e}");
        assert!(parse(b"", "p").is_err());
    }

    #[test]
    fn an_empty_list_has_no_pieces() {
        assert!(pieces(&[]).is_empty());
    }
}
