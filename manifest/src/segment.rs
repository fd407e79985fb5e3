//! Manifest segments: runs of [`ObjectEntry`] as JSON lines, in key order
//! ([`key_order`]: path order).
//!
//! A writer cuts a segment after an entry whose key hashes to a boundary
//! (about one key in `segment_entries`), so the cut points depend only on the
//! keys themselves: an unchanged range of keys between two boundaries yields a
//! byte-identical segment, hence the same chunk id, which the repository
//! already holds. A hard cap of 4× the average bounds a segment's size.

use crate::diff::key_order;
use crate::{FormatError, ObjectEntry};

/// A finished segment: plaintext ready to be stored as a chunk.
#[derive(Debug, Clone)]
pub struct Segment {
    pub plain: Vec<u8>,
    pub first: String,
    pub last: String,
    pub entries: u64,
    pub bytes: u64,
}

/// Accumulates sorted entries and hands out finished segments.
#[derive(Debug)]
pub struct SegmentWriter {
    mask: u32,
    cap: u64,
    current: Option<Segment>,
}

impl SegmentWriter {
    /// `avg_entries` must be a power of two (checked by `RepoConfig::validate`).
    pub fn new(avg_entries: u32) -> Self {
        let avg = avg_entries.max(1);
        Self {
            mask: avg.next_power_of_two() - 1,
            cap: 4 * avg as u64,
            current: None,
        }
    }

    /// Adds the next entry (keys must ascend). Returns a segment when this
    /// entry closed one.
    pub fn push(&mut self, entry: &ObjectEntry) -> Option<Segment> {
        let seg = self.current.get_or_insert_with(|| Segment {
            plain: Vec::new(),
            first: entry.key.clone(),
            last: String::new(),
            entries: 0,
            bytes: 0,
        });
        debug_assert!(
            seg.entries == 0 || key_order(&seg.last, &entry.key).is_lt(),
            "keys must ascend in path order"
        );
        serde_json::to_writer(&mut seg.plain, entry).expect("entries serialize");
        seg.plain.push(b'\n');
        seg.last.clone_from(&entry.key);
        seg.entries += 1;
        seg.bytes += entry.size;
        if is_boundary(&entry.key, self.mask) || seg.entries >= self.cap {
            return self.current.take();
        }
        None
    }

    /// Whether the writer is between segments (nothing pushed since the
    /// last one closed): where a segment written before may follow as is.
    pub fn is_between(&self) -> bool {
        self.current.is_none()
    }

    /// The last, partial segment.
    pub fn finish(mut self) -> Option<Segment> {
        self.current.take()
    }
}

fn is_boundary(key: &str, mask: u32) -> bool {
    let h = blake3::hash(key.as_bytes());
    let v = u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"));
    v & mask == 0
}

/// Parses a segment's plaintext back into entries, checking their order.
pub fn parse(plain: &[u8], what: &str) -> Result<Vec<ObjectEntry>, FormatError> {
    let mut out: Vec<ObjectEntry> = Vec::new();
    for line in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let e: ObjectEntry = serde_json::from_slice(line).map_err(|source| FormatError::Json {
            what: what.into(),
            source,
        })?;
        if let Some(prev) = out.last()
            && key_order(&prev.key, &e.key).is_ge()
        {
            return Err(FormatError::Invalid {
                what: what.into(),
                reason: format!("keys out of order: {:?} then {:?}", prev.key, e.key),
            });
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkId;

    fn entries(keys: impl IntoIterator<Item = String>) -> Vec<ObjectEntry> {
        keys.into_iter()
            .map(|k| ObjectEntry::new(k.clone(), 1, Some(k), None, ChunkId::of(b"x"), vec![]))
            .collect()
    }

    fn write_all(es: &[ObjectEntry], avg: u32) -> Vec<Segment> {
        let mut w = SegmentWriter::new(avg);
        let mut out: Vec<Segment> = es.iter().filter_map(|e| w.push(e)).collect();
        out.extend(w.finish());
        out
    }

    #[test]
    fn segments_round_trip_and_cover_all_entries() {
        let es = entries((0..5000).map(|i| format!("chunk/{i:06}")));
        let segs = write_all(&es, 64);
        assert!(
            segs.len() > 20,
            "expected many segments, got {}",
            segs.len()
        );
        let back: Vec<ObjectEntry> = segs
            .iter()
            .flat_map(|s| parse(&s.plain, "seg").unwrap())
            .collect();
        assert_eq!(back, es);
        assert!(segs.iter().all(|s| s.entries <= 256));
    }

    #[test]
    fn an_insertion_changes_only_the_segment_around_it() {
        let es = entries((0..5000).map(|i| format!("k{:06}", i * 2)));
        let before: Vec<ChunkId> = write_all(&es, 64)
            .iter()
            .map(|s| ChunkId::of(&s.plain))
            .collect();
        let mut more = es.clone();
        more.insert(2500, entries([format!("k{:06}", 2500 * 2 - 1)]).remove(0));
        let after: Vec<ChunkId> = write_all(&more, 64)
            .iter()
            .map(|s| ChunkId::of(&s.plain))
            .collect();
        let new: Vec<_> = after.iter().filter(|id| !before.contains(id)).collect();
        assert_eq!(new.len(), 1, "one segment changes");
    }

    #[test]
    fn out_of_order_segments_are_rejected() {
        let bad = b"{\"key\":\"b\",\"size\":1,\"hash\":\"".to_vec();
        assert!(parse(&bad, "seg").is_err());
        let es = entries(["b".to_string(), "a".to_string()]);
        let mut plain = Vec::new();
        for e in &es {
            serde_json::to_writer(&mut plain, e).unwrap();
            plain.push(b'\n');
        }
        assert!(parse(&plain, "seg").is_err());
    }
}
