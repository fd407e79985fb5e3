//! A manifest changed in a few keys, written in the time those keys take.
//!
//! Segments are cut where a key hashes to a boundary (or at a size cap), so
//! the cut points depend on the keys alone (see `haul_manifest::segment`).
//! A segment none of whose keys changed, reached with the writer between
//! segments, would be written again byte for byte: it is kept as it is,
//! unread. Only the segments holding changes are read and written again,
//! with the segments after them until the writer is back between
//! segments (at the next boundary, almost always the segment's own end).
//! The result is exactly what writing every entry again would give.
//!
//! ```text
//! parent:  [s0][s1][s2][s3][s4]      changes: k (in s1), m (in s3)
//! result:  [s0][s1'][s2][s3'][s4]    s0, s2, s4 kept unread
//! ```

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use haul_manifest::diff::key_order;
use haul_manifest::{ObjectEntry, SegmentRef};

use crate::{Repository, Result};

/// One change to a manifest.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Add the entry, or replace the one of its key.
    Put(ObjectEntry),
    /// Remove the entry of this key, if there is one.
    Delete(String),
}

impl Change {
    fn key(&self) -> &str {
        match self {
            Self::Put(e) => &e.key,
            Self::Delete(k) => k,
        }
    }
}

/// The manifest after the changes, and what they did.
#[derive(Debug, Default)]
pub(crate) struct Spliced {
    pub segments: Vec<SegmentRef>,
    pub added: u64,
    pub replaced: u64,
    pub removed: u64,
}

/// Applies `changes` (in any order; one per key) to the manifest
/// `parent`, reading and writing only the segments they touch.
pub(crate) async fn splice(
    repo: &Repository,
    parent: &[SegmentRef],
    mut changes: Vec<Change>,
) -> Result<Spliced> {
    changes.sort_by(|a, b| key_order(a.key(), b.key()));
    // Segment i's zone: the keys after segment i-1's last, up to its own
    // last; the last segment's runs to the end.
    let n = parent.len();
    let mut zones: Vec<Vec<Change>> = (0..n.max(1)).map(|_| Vec::new()).collect();
    let mut i = 0;
    for c in changes {
        while i + 1 < n && key_order(c.key(), &parent[i].last).is_gt() {
            i += 1;
        }
        zones[i].push(c);
    }
    let touched: Vec<usize> = (0..n).filter(|&i| !zones[i].is_empty()).collect();
    let mut read: HashMap<usize, Vec<ObjectEntry>> = stream::iter(touched)
        .map(|i| {
            let (repo, seg) = (repo.clone(), parent[i].clone());
            async move { Ok::<_, crate::MoverError>((i, repo.read_segment(seg).await?)) }
        })
        .buffered(repo.engine.limits.requests.max(1))
        .try_collect()
        .await?;

    let mut out = Spliced::default();
    let mut sink = repo.segment_sink();
    for (i, zone) in zones.into_iter().enumerate() {
        let Some(seg) = parent.get(i) else {
            // No parent segments: the changes are the manifest.
            for c in zone {
                if let Change::Put(e) = c {
                    out.added += 1;
                    sink.push(&e).await?;
                }
            }
            continue;
        };
        if zone.is_empty() && sink.is_between() {
            sink.keep(seg.clone());
            continue;
        }
        let entries = match read.remove(&i) {
            Some(e) => e,
            None => repo.clone().read_segment(seg.clone()).await?,
        };
        let mut changes = zone.into_iter().peekable();
        for e in entries {
            while let Some(c) = changes.next_if(|c| key_order(c.key(), &e.key).is_lt()) {
                if let Change::Put(new) = c {
                    out.added += 1;
                    sink.push(&new).await?;
                }
            }
            match changes.next_if(|c| c.key() == e.key) {
                Some(Change::Put(new)) => {
                    out.replaced += 1;
                    sink.push(&new).await?;
                }
                Some(Change::Delete(_)) => out.removed += 1,
                None => sink.push(&e).await?,
            }
        }
        for c in changes {
            if let Change::Put(new) = c {
                out.added += 1;
                sink.push(&new).await?;
            }
        }
    }
    out.segments = sink.finish().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use std::sync::Arc;

    use chrono::Utc;
    use haul_manifest::{ChunkId, RepoConfig, RepoId};
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::{Engine, Limits, Location, StoreUrl};

    /// A repository in memory whose segments average `avg` entries.
    async fn memory_repo(avg: u32) -> Repository {
        let loc = Location::from_store(
            StoreUrl::parse("memory://splice").unwrap(),
            Arc::new(InMemory::new()),
            Path::default(),
        );
        let mut config = RepoConfig::new(RepoId::from_random([7; 16]), Utc::now());
        config.segment_entries = avg;
        Repository::init_with(loc, Engine::new(Limits::default()), None, config)
            .await
            .unwrap()
    }

    fn entry(key: &str, v: u64) -> ObjectEntry {
        ObjectEntry::new(
            key.into(),
            v,
            Some(format!("{v}")),
            None,
            ChunkId::of(key.as_bytes()),
            vec![],
        )
    }

    async fn write_all(repo: &Repository, es: &BTreeMap<String, u64>) -> Vec<SegmentRef> {
        let mut sorted: Vec<ObjectEntry> = es.iter().map(|(k, v)| entry(k, *v)).collect();
        sorted.sort_by(|a, b| key_order(&a.key, &b.key));
        let mut sink = repo.segment_sink();
        for e in &sorted {
            sink.push(e).await.unwrap();
        }
        sink.finish().await.unwrap()
    }

    #[tokio::test]
    async fn a_splice_writes_what_a_full_rewrite_writes() {
        let repo = memory_repo(16).await;
        // Keys in path order traps ('/' before everything), spread so that
        // boundaries, caps and the segments' zones all get changes.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..12 {
            let mut es: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..(40 * round * round) {
                let k = format!(
                    "{}/{:04x}{}",
                    ["a", "chunk", "chunk.x", "z"][i % 4],
                    next() % 4096,
                    ["", "/x", "-y"][i % 3]
                );
                es.insert(k, i as u64);
            }
            let parent = write_all(&repo, &es).await;
            let mut changes = Vec::new();
            let mut after = es.clone();
            let keys: Vec<String> = es.keys().cloned().collect();
            for j in 0..(1 + next() % 20) {
                match next() % 3 {
                    0 if !keys.is_empty() => {
                        let k = keys[(next() as usize) % keys.len()].clone();
                        if after.remove(&k).is_some() {
                            changes.push(Change::Delete(k));
                        }
                    }
                    1 if !keys.is_empty() => {
                        let k = keys[(next() as usize) % keys.len()].clone();
                        // One change per key: a key not changed yet.
                        if after.get(&k) == es.get(&k) {
                            after.insert(k.clone(), 1000 + j);
                            changes.push(Change::Put(entry(&k, 1000 + j)));
                        }
                    }
                    _ => {
                        let k = format!("chunk/{:04x}.new{j}", next() % 4096);
                        if !after.contains_key(&k) {
                            after.insert(k.clone(), 2000 + j);
                            changes.push(Change::Put(entry(&k, 2000 + j)));
                        }
                    }
                }
            }
            // A key past every other, and one before.
            after.insert("zzzz".into(), 7);
            changes.push(Change::Put(entry("zzzz", 7)));
            after.insert("!".into(), 8);
            changes.push(Change::Put(entry("!", 8)));
            let n_changes = changes.len();
            let spliced = splice(&repo, &parent, changes).await.unwrap();
            let full = write_all(&repo, &after).await;
            assert_eq!(spliced.segments, full, "round {round}");
            let kept = spliced
                .segments
                .iter()
                .filter(|s| parent.contains(s))
                .count();
            // Most segments are kept when the changes are few beside them.
            if parent.len() > 4 * n_changes {
                assert!(
                    kept > 0,
                    "round {round}: nothing kept of {} segments",
                    parent.len()
                );
            }
        }
    }
}
