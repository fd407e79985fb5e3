//! `verify`: every chunk a snapshot names exists; with `read_data`, every
//! chunk is read back and its blake3 checked, and every object, dump and
//! roles record is checked to be as long as its chunks (a manifest that
//! says otherwise would restore wrong, or fail the restore).

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use haul_manifest::{ChunkId, Snapshot, SnapshotId};
use serde::Serialize;

use crate::{MoverError, Repository, Result};

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub objects: u64,
    /// Distinct chunks referenced (objects, segments, database dumps, Helm values).
    pub chunks: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    /// Chunks referenced but absent.
    pub missing: Vec<String>,
    /// Chunks present but damaged, with the reason.
    pub damaged: Vec<String>,
    /// With `read_data`: objects (and dumps) whose recorded size is not
    /// their chunks' total, each as `what: recorded N bytes, chunks hold M`.
    pub size_mismatches: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.damaged.is_empty() && self.size_mismatches.is_empty()
    }
}

/// `what`'s recorded size against its chunks' total, when every chunk was
/// read (a missing or damaged one is reported already).
fn check_size(
    sizes: &HashMap<ChunkId, u64>,
    what: impl FnOnce() -> String,
    recorded: u64,
    chunks: &[ChunkId],
    out: &mut Vec<String>,
) {
    let held: Option<u64> = chunks.iter().map(|c| sizes.get(c).copied()).sum();
    if let Some(held) = held
        && held != recorded
    {
        out.push(format!(
            "{}: recorded {recorded} bytes, its chunks hold {held}",
            what()
        ));
    }
}

/// Verifies `snapshots` of `repo`.
pub async fn verify(
    repo: &Repository,
    snapshots: &[Snapshot],
    read_data: bool,
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        snapshots: snapshots.len() as u64,
        ..Default::default()
    };
    let mut wanted: HashSet<ChunkId> = HashSet::new();
    repo.engine
        .progress
        .start("verify: reading manifests", 0, 0);
    // Each dump's chunks, by snapshot and database, for the size check below.
    let mut dumps: HashMap<(SnapshotId, &str), Vec<ChunkId>> = HashMap::new();
    for snap in snapshots {
        for d in &snap.databases {
            wanted.extend(d.chunk_lists.iter().copied());
            match repo.dump_chunks(d).await {
                Ok(ids) => {
                    wanted.extend(ids.iter().copied());
                    dumps.insert((snap.id, d.name.as_str()), ids);
                }
                Err(e @ MoverError::Corrupt { .. }) => report.damaged.push(crate::error_chain(&e)),
                Err(e) => return Err(e),
            }
        }
        wanted.extend(snap.helm_values);
        wanted.extend(snap.globals.iter().flat_map(|g| g.chunks.iter().copied()));
        let Some(bucket) = &snap.bucket else { continue };
        wanted.extend(bucket.segments.iter().map(|s| s.id));
        // A segment that cannot be read is reported, and its objects cannot be checked.
        for seg in &bucket.segments {
            match repo
                .entries(vec![seg.clone()])
                .try_collect::<Vec<_>>()
                .await
            {
                Ok(entries) => {
                    report.objects += entries.len() as u64;
                    repo.engine.progress.add(entries.len() as u64, 0);
                    for e in &entries {
                        wanted.extend(e.chunk_ids().iter().copied());
                    }
                }
                Err(e @ MoverError::Corrupt { .. }) => report.damaged.push(crate::error_chain(&e)),
                Err(e) => return Err(e),
            }
        }
    }
    report.chunks = wanted.len() as u64;
    let present = repo.list_chunks().await?;
    let mut missing: Vec<ChunkId> = wanted
        .iter()
        .filter(|id| !present.contains(&repo.chunk_name(id)))
        .copied()
        .collect();
    missing.sort();
    report.missing = missing.iter().map(ToString::to_string).collect();

    if read_data {
        let mut to_read: Vec<ChunkId> = wanted
            .into_iter()
            .filter(|id| present.contains(&repo.chunk_name(id)))
            .collect();
        to_read.sort();
        repo.engine
            .progress
            .start("verify: reading chunks", to_read.len() as u64, 0);
        // Packed chunks are read a whole pack at a time (which checks the
        // pack's trailer too), loose ones one by one.
        let (packs, loose) = repo.group_by_pack(to_read).await?;
        let pack_bytes = repo.config().pack.map_or(0, |p| u64::from(p.size));
        let mut results: Vec<(ChunkId, Result<u64>)> = stream::iter(packs)
            .map(|group| async move {
                let _memory = repo.engine.reserve(pack_bytes + pack_bytes / 8).await;
                let read = repo.read_pack(&group).await?;
                let ok = read.iter().filter_map(|r| r.1.as_ref().ok()).copied();
                let (n, bytes) = ok.fold((0, 0), |(n, b), len| (n + 1, b + len));
                repo.engine.progress.add(n, bytes);
                Ok::<_, MoverError>(read)
            })
            .buffer_unordered(repo.engine.limits.requests)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        results.extend(
            stream::iter(loose)
                .map(|id| async move {
                    let r = repo.read_chunk(id).await.map(|b| b.len() as u64);
                    if let Ok(n) = &r {
                        repo.engine.progress.add(1, *n);
                    }
                    (id, r)
                })
                .buffer_unordered(repo.engine.limits.requests)
                .collect::<Vec<_>>()
                .await,
        );
        let mut sizes: HashMap<ChunkId, u64> = HashMap::new();
        for (id, r) in results {
            match r {
                Ok(n) => {
                    report.chunks_read += 1;
                    report.bytes_read += n;
                    sizes.insert(id, n);
                }
                Err(e @ MoverError::Corrupt { .. }) => report.damaged.push(crate::error_chain(&e)),
                Err(e) => return Err(e),
            }
        }
        report.damaged.sort();
        // The manifests again (segments are small against the data just
        // read), each entry against its chunks.
        let out = &mut report.size_mismatches;
        for snap in snapshots {
            for d in &snap.databases {
                let what = || format!("snapshot {}: database {}", snap.id, d.name);
                // A list that could not be read was reported above.
                if let Some(chunks) = dumps.get(&(snap.id, d.name.as_str())) {
                    check_size(&sizes, what, d.bytes, chunks, out);
                }
            }
            if let Some(g) = &snap.globals {
                let what = || format!("snapshot {}: roles", snap.id);
                check_size(&sizes, what, g.bytes, &g.chunks, out);
            }
            let Some(bucket) = &snap.bucket else { continue };
            for seg in &bucket.segments {
                // Unreadable segments were reported above.
                let Ok(entries) = repo
                    .entries(vec![seg.clone()])
                    .try_collect::<Vec<_>>()
                    .await
                else {
                    continue;
                };
                for e in &entries {
                    let what = || format!("snapshot {}: {}", snap.id, e.key);
                    check_size(&sizes, what, e.size, e.chunk_ids(), out);
                }
            }
        }
    }
    Ok(report)
}
