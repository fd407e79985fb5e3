//! Backup of an object store into a repository.
//!
//! ```text
//! source listing ─┐
//!                 ├─ merge-join ─▶ unchanged: carry the parent's entry
//! parent entries ─┘               new/changed: read ─▶ chunk+hash+compress (CPU pool) ─▶ store chunk if absent
//!                                        │ (ordered window: entries come out in key order)
//!                                        ▼
//!                                 segment sink ─▶ segments ─▶ BucketRecord (the caller commits the root)
//! ```
//!
//! An object whose listing (size, ETag, or mtime when there is no ETag)
//! matches the parent snapshot's entry is neither read nor hashed.

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_manifest::diff::{Joined, key_order};
use haul_manifest::shard::KeySplit;
use haul_manifest::{BucketRecord, ChunkId, ObjectEntry, SegmentRef, chunk, tree};
use serde::Serialize;

use crate::listing::{self, Listed, SplitHints};
use crate::splice::{Change, splice};
use crate::{Location, MoverError, Repository, Result, merge, spawned};

/// What a bucket backup did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupStats {
    /// Objects and bytes in the snapshot.
    pub objects: u64,
    pub bytes: u64,
    /// Objects read from the source (new or changed since the parent).
    pub objects_read: u64,
    pub bytes_read: u64,
    pub objects_new: u64,
    pub objects_changed: u64,
    pub objects_unchanged: u64,
    /// In the parent, gone from the source.
    pub objects_removed: u64,
    /// Listed, then gone before they could be read (deleted while live).
    pub objects_vanished: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
}

/// The outcome of a bucket backup: the record for the snapshot root.
#[derive(Debug, Clone)]
pub struct BucketBackup {
    pub record: BucketRecord,
    pub stats: BackupStats,
}

/// What one object costs to back up.
enum Work {
    Keep(ObjectEntry),
    Read { listed: Listed, changed: bool },
}

/// The plan of a backup: what would be read. Computed without reading data.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupPlan {
    pub objects: u64,
    pub bytes: u64,
    pub objects_new: u64,
    pub objects_changed: u64,
    pub objects_unchanged: u64,
    pub objects_removed: u64,
    /// Bytes that must be read from the source.
    pub bytes_to_read: u64,
}

/// One shard of a sharded backup: the keys of `split` that shard `index`
/// (from 0) holds (see `haul_manifest::shard`).
#[derive(Debug, Clone, Copy)]
pub struct Shard<'a> {
    pub split: &'a KeySplit,
    pub index: u32,
}

impl Shard<'_> {
    /// The segments of a manifest that may hold keys of this shard.
    pub(crate) fn segments(&self, segments: &[SegmentRef]) -> Vec<SegmentRef> {
        let (from, to) = self.split.range(self.index);
        segments
            .iter()
            .filter(|s| from.as_ref().is_none_or(|f| key_order(&s.last, f).is_ge()))
            .filter(|s| to.as_ref().is_none_or(|t| key_order(&s.first, t).is_lt()))
            .cloned()
            .collect()
    }
}

/// Joins the source listing with the parent's entries (of one shard's keys
/// only, with `shard`).
fn work<'a>(
    repo: &'a Repository,
    source: &Location,
    parent: Option<&BucketRecord>,
    shard: Option<Shard<'_>>,
    removed: &'a std::sync::atomic::AtomicU64,
) -> BoxStream<'a, Result<Work>> {
    let lanes = repo.engine.limits.lanes();
    let (parent_entries, source_listing) = match shard {
        None => {
            // The parent's segments say where the source's listing can be cut.
            let hints =
                parent.map_or_else(SplitHints::none, |p| SplitHints::from_segments(&p.segments));
            let entries = match parent {
                Some(p) => repo.entries(p.segments.clone()),
                None => stream::empty().boxed(),
            };
            (entries, listing::in_lanes(source, lanes, hints))
        }
        Some(sh) => {
            let entries = match parent {
                Some(p) => {
                    let (split, k) = (sh.split.clone(), sh.index);
                    repo.entries(sh.segments(&p.segments))
                        .try_filter(move |e| futures::future::ready(split.contains(k, &e.key)))
                        .boxed()
                }
                None => stream::empty().boxed(),
            };
            (entries, listing::shard(source, lanes, sh.split, sh.index))
        }
    };
    merge::join(source_listing, parent_entries)
        .try_filter_map(move |j| futures::future::ready(Ok(classify(j, removed))))
        .boxed()
}

/// What one key of a listing joined with the parent's entries costs: kept
/// when the listing matches the entry, read when it is new or changed,
/// nothing (counted in `removed`) when it is gone.
fn classify(
    j: Joined<Listed, ObjectEntry>,
    removed: &std::sync::atomic::AtomicU64,
) -> Option<Work> {
    match j {
        Joined::Left(listed) => Some(Work::Read {
            listed,
            changed: false,
        }),
        Joined::Right(_) => {
            removed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        }
        Joined::Both(listed, old) => {
            if old.matches_listing(listed.size, listed.etag.as_deref(), Some(listed.modified)) {
                Some(Work::Keep(old))
            } else {
                Some(Work::Read {
                    listed,
                    changed: true,
                })
            }
        }
    }
}

/// What changed under one directory of a source since a backup of it, as
/// the application that writes there recorded it (for Pachyderm, see
/// `haul_pg::journal`): its keys stand for a listing of the directory.
#[derive(Debug, Clone)]
pub struct Journal {
    /// The directory (ending in `/`) whose changes `keys` hold.
    pub dir: String,
    /// Keys under `dir`, relative to the source, in any order.
    pub keys: Vec<String>,
}

/// What a listing would say of the journal's `key`.
async fn head(repo: &Repository, source: &Location, dir: &str, key: String) -> Result<Listed> {
    if !key.starts_with(dir) {
        return Err(MoverError::Object {
            key,
            reason: format!("named by the record of changes under {dir}, but not under it"),
        });
    }
    let _r = repo.engine.request().await;
    match source.head_at(&source.addr(&key)?).await {
        Ok(m) => Ok(Listed {
            key,
            size: m.size,
            etag: m.etag,
            modified: m.modified,
        }),
        Err(object_store::Error::NotFound { .. }) => Err(MoverError::Object {
            reason: format!(
                "the application's record says it was written, but {} has no such object: \
                 its record and its bucket disagree (back up with a listing to see the bucket as it is)",
                source.url
            ),
            key,
        }),
        Err(e) => Err(MoverError::store("read", source.url.join(&key), e)),
    }
}

/// Computes what a backup would read, without reading object data.
pub async fn plan(
    repo: &Repository,
    source: &Location,
    parent: Option<&BucketRecord>,
) -> Result<BackupPlan> {
    listing::probe(source).await?;
    let removed = std::sync::atomic::AtomicU64::new(0);
    let mut plan = BackupPlan::default();
    let mut s = work(repo, source, parent, None, &removed);
    while let Some(w) = s.try_next().await? {
        match w {
            Work::Keep(e) => {
                plan.objects_unchanged += 1;
                plan.bytes += e.size;
            }
            Work::Read { listed, changed } => {
                if changed {
                    plan.objects_changed += 1
                } else {
                    plan.objects_new += 1
                }
                plan.bytes += listed.size;
                plan.bytes_to_read += listed.size;
            }
        }
        plan.objects += 1;
    }
    drop(s);
    plan.objects_removed = removed.into_inner();
    Ok(plan)
}

/// Backs up `source` into `repo`, incrementally against `parent`.
pub async fn backup(
    repo: &Repository,
    source: &Location,
    parent: Option<&BucketRecord>,
) -> Result<BucketBackup> {
    backup_shard(repo, source, parent, None).await
}

/// Backs up one shard of `source` (all of it with `None`): the record
/// holds the shard's keys only; shards' segments concatenate in order.
pub async fn backup_shard(
    repo: &Repository,
    source: &Location,
    parent: Option<&BucketRecord>,
    shard: Option<Shard<'_>>,
) -> Result<BucketBackup> {
    let removed = std::sync::atomic::AtomicU64::new(0);
    let work = work(repo, source, parent, shard, &removed);
    run(repo, source, parent, work, &removed).await
}

/// Backs up `source` into `repo` against `parent`, with `journal` standing
/// for the listing of its directory: the keys outside it are listed and
/// compared with the parent's; under it, only the journal's keys are read
/// (a HEAD each, for the size and ETag a listing would give) and every
/// other entry of the parent is kept, one deleted since included (a
/// superset of the source, never less). The manifest is spliced (see
/// `splice`): the time this takes follows the changes, not the bucket.
pub async fn backup_journal(
    repo: &Repository,
    source: &Location,
    parent: &BucketRecord,
    journal: Journal,
) -> Result<BucketBackup> {
    refuse_overlap(repo, source)?;
    listing::probe(source).await?;
    let Journal { dir, mut keys } = journal;
    keys.sort_by(|a, b| key_order(a, b));
    keys.dedup();
    let progress = &repo.engine.progress;
    progress.start("backup", keys.len() as u64, 0);

    // Outside `dir`: the listing joined with the parent's entries there
    // (from the few segments not wholly under `dir`).
    let outside_segments: Vec<SegmentRef> = parent
        .segments
        .iter()
        .filter(|s| !(s.first.starts_with(&dir) && s.last.starts_with(&dir)))
        .cloned()
        .collect();
    let parent_outside = {
        let dir = dir.clone();
        repo.entries(outside_segments)
            .try_filter(move |e| futures::future::ready(!e.key.starts_with(&dir)))
    };
    let outside = merge::join(
        listing::outside(source, repo.engine.limits.lanes(), &dir),
        parent_outside,
    )
    .try_filter_map(|j| {
        futures::future::ready(Ok(match j {
            Joined::Left(listed) => Some(Ok(listed)),
            Joined::Both(listed, old) => {
                let same =
                    old.matches_listing(listed.size, listed.etag.as_deref(), Some(listed.modified));
                (!same).then_some(Ok(listed))
            }
            Joined::Right(old) => Some(Err(old.key)),
        }))
    });
    // Under `dir`: the journal's keys, as a listing would show them.
    let named = {
        let (source, dir) = (source.clone(), dir.clone());
        stream::iter(keys)
            .map(move |key| {
                let (source, dir) = (source.clone(), dir.clone());
                async move { head(repo, &source, &dir, key).await.map(Ok) }
            })
            .buffered(repo.engine.limits.requests.max(1))
    };
    let vanished = std::sync::atomic::AtomicU64::new(0);
    let stats = std::sync::Mutex::new(BackupStats::default());
    let changes: Vec<Change> = outside
        .chain(named)
        .map_ok(|item| async {
            let listed = match item {
                Ok(listed) => listed,
                Err(gone) => return Ok(Change::Delete(gone)),
            };
            let key = listed.key.clone();
            let (r, s) = (repo.clone(), source.clone());
            match spawned(async move { read_object(&r, &s, listed).await }).await? {
                Some((e, up)) => {
                    let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
                    st.objects_read += 1;
                    st.bytes_read += e.size;
                    st.chunks_uploaded += up.chunks;
                    st.bytes_uploaded += up.bytes;
                    progress.add(1, e.size);
                    Ok(Change::Put(e))
                }
                None => {
                    vanished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(Change::Delete(key))
                }
            }
        })
        .try_buffered(repo.engine.limits.window)
        .try_collect()
        .await?;

    let spliced = splice(repo, &parent.segments, changes).await?;
    let mut stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
    stats.objects = spliced.segments.iter().map(|s| s.entries).sum();
    stats.bytes = spliced.segments.iter().map(|s| s.bytes).sum();
    stats.objects_new = spliced.added;
    stats.objects_changed = spliced.replaced;
    stats.objects_removed = spliced.removed;
    stats.objects_vanished = vanished.into_inner();
    stats.objects_unchanged = stats.objects - spliced.added - spliced.replaced;
    Ok(BucketBackup {
        record: BucketRecord {
            url: source.url.to_string(),
            objects: stats.objects,
            bytes: stats.bytes,
            segments: spliced.segments,
        },
        stats,
    })
}

/// Refuses a source that holds the repository (a backup would copy itself).
fn refuse_overlap(repo: &Repository, source: &Location) -> Result<()> {
    if source.url.overlaps(&repo.loc.url) {
        return Err(MoverError::Overlap {
            repo: repo.url(),
            source_url: source.url.to_string(),
        });
    }
    Ok(())
}

/// Runs the work of a backup: reads what it says to, writes the segments.
async fn run<'a>(
    repo: &'a Repository,
    source: &Location,
    parent: Option<&BucketRecord>,
    work: BoxStream<'a, Result<Work>>,
    removed: &std::sync::atomic::AtomicU64,
) -> Result<BucketBackup> {
    // Before anything is listed (the work is a lazy stream).
    refuse_overlap(repo, source)?;
    listing::probe(source).await?;
    if let Some(p) = parent {
        repo.expect_chunks(p.objects + p.bytes / repo.config.object_chunk_size);
    }
    let progress = &repo.engine.progress;
    progress.start("backup", parent.map_or(0, |p| p.objects), 0);

    let stats = std::sync::Mutex::new(BackupStats::default());
    let add =
        |f: &dyn Fn(&mut BackupStats)| f(&mut stats.lock().unwrap_or_else(|p| p.into_inner()));

    let mut entries = work
        .map_ok(|w| async {
            match w {
                Work::Keep(e) => {
                    add(&|s| s.objects_unchanged += 1);
                    progress.add(1, 0);
                    Ok(Some(e))
                }
                Work::Read { listed, changed } => {
                    // Its own task: it holds request, memory and CPU permits that the
                    // segment writer below also needs (see `spawned`).
                    let (r, s) = (repo.clone(), source.clone());
                    let out = spawned(async move { read_object(&r, &s, listed).await }).await?;
                    match &out {
                        Some((e, up)) => add(&|s| {
                            if changed {
                                s.objects_changed += 1
                            } else {
                                s.objects_new += 1
                            }
                            s.objects_read += 1;
                            s.bytes_read += e.size;
                            s.chunks_uploaded += up.chunks;
                            s.bytes_uploaded += up.bytes;
                        }),
                        None => add(&|s| s.objects_vanished += 1),
                    }
                    if let Some((e, _)) = &out {
                        progress.add(1, e.size);
                    }
                    Ok(out.map(|(e, _)| e))
                }
            }
        })
        .try_buffered(repo.engine.limits.window);

    let mut sink = repo.segment_sink();
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Some(e) = entries.try_next().await? {
        let Some(e) = e else { continue };
        objects += 1;
        bytes += e.size;
        sink.push(&e).await?;
    }
    drop(entries);
    let segments = sink.finish().await?;
    let mut stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
    stats.objects = objects;
    stats.bytes = bytes;
    stats.objects_removed = removed.load(std::sync::atomic::Ordering::Relaxed);
    Ok(BucketBackup {
        record: BucketRecord {
            url: source.url.to_string(),
            objects,
            bytes,
            segments,
        },
        stats,
    })
}

/// Chunks and bytes one object added to the repository.
#[derive(Debug, Default)]
struct Uploaded {
    chunks: u64,
    bytes: u64,
}

/// Times an object is re-read when it changes between its listing and its read.
const REREAD_ATTEMPTS: usize = 3;

/// Reads one object into the repository. `None` when it vanished.
async fn read_object(
    repo: &Repository,
    source: &Location,
    mut listed: Listed,
) -> Result<Option<(ObjectEntry, Uploaded)>> {
    for _ in 0..REREAD_ATTEMPTS {
        match read_version(repo, source, &listed).await {
            Ok(done) => return Ok(Some(done)),
            Err(ReadError::Gone) => return gone(repo, source, &listed.key).await,
            Err(ReadError::Changed) => {
                // Overwritten since it was listed: read the new version.
                let _r = repo.engine.request().await;
                match source.head_at(&source.addr(&listed.key)?).await {
                    Ok(m) => {
                        listed = Listed {
                            key: listed.key,
                            size: m.size,
                            etag: m.etag,
                            modified: m.modified,
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => {
                        return gone(repo, source, &listed.key).await;
                    }
                    Err(e) => {
                        return Err(MoverError::store("read", source.url.join(&listed.key), e));
                    }
                }
            }
            Err(ReadError::Other(e)) => return Err(e),
        }
    }
    Err(MoverError::Object {
        key: listed.key,
        reason: format!(
            "changed {REREAD_ATTEMPTS} times while being read; is something rewriting it?"
        ),
    })
}

/// A listed object that reads as not found: deleted since it was listed
/// (`None`: it vanished, which a live backup expects), unless a listing
/// still shows it, in which case this client cannot address its key (a
/// control character object_store translates, say): an error naming it,
/// never a silent skip.
async fn gone(
    repo: &Repository,
    source: &Location,
    key: &str,
) -> Result<Option<(ObjectEntry, Uploaded)>> {
    // An S3 listing without `encoding-type=url` cannot carry a control
    // character in its XML: SeaweedFS sends U+FFFD instead, a name nothing
    // can be read by.
    if key.contains('\u{FFFD}') {
        return Err(MoverError::Object {
            key: key.to_owned(),
            reason: "listed with U+FFFD (a character the store's listing could not carry), and \
                     no object has that name: haul cannot read this key yet (rename the object \
                     to back it up)"
                .into(),
        });
    }
    let _r = repo.engine.request().await;
    if listing::lists_as_named(source, key).await? {
        return Err(MoverError::Object {
            key: key.to_owned(),
            reason: "listed, but every read of it finds nothing: haul cannot address this key \
                     in this store (rename the object to back it up)"
                .into(),
        });
    }
    Ok(None)
}

enum ReadError {
    Gone,
    Changed,
    Other(MoverError),
}

impl From<MoverError> for ReadError {
    fn from(e: MoverError) -> Self {
        Self::Other(e)
    }
}

/// Reads the version of an object that `listed` describes, chunk by chunk,
/// with ranged GETs pinned to its ETag.
async fn read_version(
    repo: &Repository,
    source: &Location,
    listed: &Listed,
) -> Result<(ObjectEntry, Uploaded), ReadError> {
    let chunk_size = repo.config.object_chunk_size;
    let n = listed.size.div_ceil(chunk_size);
    let entry = |hash: ChunkId, chunks: Vec<ChunkId>| {
        ObjectEntry::new(
            listed.key.clone(),
            listed.size,
            listed.etag.clone(),
            Some(listed.modified),
            hash,
            chunks,
        )
    };
    if n == 0 {
        return Ok((entry(ChunkId::of(b""), Vec::new()), Uploaded::default()));
    }
    let engine = &repo.engine;
    let _memory = engine.reserve_object(listed.size, chunk_size).await;
    let addr = source.addr(&listed.key)?;
    let level = repo.config.zstd_level;

    let parts: Vec<(ChunkId, Option<[u8; 32]>, u64)> = stream::iter(0..n)
        .map(|i| {
            let addr = &addr;
            async move {
                let start = i * chunk_size;
                let end = (start + chunk_size).min(listed.size);
                let range = (n > 1).then_some(start..end);
                let data: Bytes = {
                    let _r = engine.request().await;
                    match source.get_at(addr, range, listed.etag.clone()).await {
                        Ok(b) => b,
                        Err(object_store::Error::NotFound { .. }) => return Err(ReadError::Gone),
                        Err(object_store::Error::Precondition { .. }) => {
                            return Err(ReadError::Changed);
                        }
                        Err(e) => {
                            return Err(
                                MoverError::store("read", source.url.join(&listed.key), e).into()
                            );
                        }
                    }
                };
                if data.len() as u64 != end - start {
                    // A store without ETags changed the object under us.
                    return Err(ReadError::Changed);
                }
                let d = data.clone();
                let (enc, cv) = engine
                    .cpu_for(d.len(), move || match (n, start) {
                        (1, _) => (chunk::encode(&d, level), None),
                        // The first chunk's id and chaining value share one pass.
                        (_, 0) => {
                            let (id, cv) = tree::first_chunk_hashes(&d);
                            (chunk::encode_with_id(id.into(), &d, level), Some(cv))
                        }
                        _ => (chunk::encode(&d, level), Some(tree::chunk_cv(&d, start))),
                    })
                    .await?;
                let (id, len) = (enc.id, enc.blob_len() as u64);
                let uploaded = repo.store_chunk(enc, data).await?;
                Ok::<_, ReadError>((id, cv, if uploaded { len } else { 0 }))
            }
        })
        .buffered(engine.limits.object_parts)
        .try_collect()
        .await?;

    let up = Uploaded {
        chunks: parts.iter().filter(|p| p.2 > 0).count() as u64,
        bytes: parts.iter().map(|p| p.2).sum(),
    };
    let ids: Vec<ChunkId> = parts.iter().map(|p| p.0).collect();
    let hash = if n == 1 {
        ids[0]
    } else {
        let cvs: Vec<[u8; 32]> = parts
            .iter()
            .map(|p| p.1.expect("multi-chunk objects carry CVs"))
            .collect();
        ChunkId::from(tree::object_hash(&cvs))
    };
    Ok((entry(hash, ids), up))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::{Engine, Limits, StoreConfig, StoreUrl};

    /// A fresh repository's settings, with small chunks packed or loose.
    fn config(packed: bool) -> haul_manifest::RepoConfig {
        let mut c = haul_manifest::RepoConfig::new(
            haul_manifest::RepoId::from_random([7; 16]),
            chrono::Utc::now(),
        );
        if !packed {
            c.pack = None;
        }
        c
    }

    /// A chunk the repository holds is never uploaded again, whether the
    /// check is a HEAD request (the first `head_checks` chunks) or the
    /// listing of every chunk (after that), or both within one backup.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_the_repository_holds_are_not_uploaded_again() {
        let cfg = StoreConfig::default();
        for (head_checks, packed) in [(0, false), (5, false), (10_000, false), (0, true)] {
            let open = |name: String| {
                cfg.open(&StoreUrl::parse(&format!("memory://{name}")).unwrap(), true)
                    .unwrap()
            };
            let (a, b) = (
                open(format!("dd-a-{head_checks}-{packed}")),
                open(format!("dd-b-{head_checks}-{packed}")),
            );
            for i in 0..40u32 {
                let body = PutPayload::from(i.to_le_bytes().repeat(100 + i as usize));
                for src in [&a, &b] {
                    src.store
                        .put(&src.path(&format!("k/{i:04}")), body.clone())
                        .await
                        .unwrap();
                }
            }
            let limits = Limits {
                head_checks,
                ..Limits::default()
            };
            let repo = Repository::init_with(
                open(format!("dd-repo-{head_checks}-{packed}")),
                Engine::new(limits),
                None,
                config(packed),
            )
            .await
            .unwrap();
            let first = backup(&repo, &a, None).await.unwrap();
            assert!(first.stats.chunks_uploaded >= 40, "{:?}", first.stats);
            // What a commit does first: packs are readable once flushed.
            repo.flush_packs().await.unwrap();
            // A second handle: nothing known in memory, everything checked.
            let repo = Repository::open(
                repo.loc.clone(),
                Engine::new(Limits {
                    head_checks,
                    ..Limits::default()
                }),
                None,
            )
            .await
            .unwrap();
            let second = backup(&repo, &b, None).await.unwrap();
            assert_eq!(second.stats.objects_read, 40);
            assert_eq!(
                second.stats.chunks_uploaded, 0,
                "head_checks = {head_checks}: {:?}",
                second.stats
            );
        }
    }

    /// A first backup into a repository without chunks asks about none of
    /// them: one look at `chunks/` instead of a HEAD per chunk. A repository
    /// that holds chunks is still asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_repository_is_not_asked_about_each_chunk() {
        let cfg = StoreConfig::default();
        let open = |name: &str| {
            cfg.open(&StoreUrl::parse(&format!("memory://{name}")).unwrap(), true)
                .unwrap()
        };
        let src = open("fresh-src");
        for i in 0..20u32 {
            src.store
                .put(
                    &src.path(&format!("k/{i:04}")),
                    PutPayload::from(i.to_le_bytes().repeat(50 + i as usize)),
                )
                .await
                .unwrap();
        }
        for packed in [false, true] {
            let repo = Repository::init_with(
                open(&format!("fresh-repo-{packed}")),
                Engine::new(Limits::default()),
                None,
                config(packed),
            )
            .await
            .unwrap();
            let first = backup(&repo, &src, None).await.unwrap();
            assert!(first.stats.chunks_uploaded >= 20, "{:?}", first.stats);
            assert_eq!(repo.heads.load(std::sync::atomic::Ordering::Relaxed), 0);
            repo.flush_packs().await.unwrap();

            let again = Repository::open(repo.loc.clone(), Engine::new(Limits::default()), None)
                .await
                .unwrap();
            let second = backup(&again, &src, None).await.unwrap();
            assert_eq!(second.stats.chunks_uploaded, 0, "{:?}", second.stats);
            // Loose chunks are asked about; packed ones are in the index.
            let heads = again.heads.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(heads > 0, !packed, "{heads} HEADs");
        }
    }

    /// Regression: an incremental backup of a few segments' worth of objects
    /// hung forever. The segment writer waited for a CPU permit that parent
    /// segment reads held while no one polled them. Work that holds permits
    /// now runs as its own task. One CPU worker makes the contention certain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incremental_backup_spanning_segments_does_not_deadlock() {
        let cfg = StoreConfig::default();
        let src = cfg
            .open(&StoreUrl::parse("memory://deadlock-src").unwrap(), true)
            .unwrap();
        for i in 0..20_000 {
            let body = if i % 1000 == 0 {
                PutPayload::from(vec![i as u8; 3000])
            } else {
                PutPayload::default()
            };
            src.store
                .put(&src.path(&format!("k/{i:08}")), body)
                .await
                .unwrap();
        }
        let limits = Limits {
            cpu: 1,
            ..Limits::default()
        };
        let repo_loc = cfg
            .open(&StoreUrl::parse("memory://deadlock-repo").unwrap(), true)
            .unwrap();
        let repo = Repository::init(repo_loc, Engine::new(limits), None)
            .await
            .unwrap();
        let in_time = |f| tokio::time::timeout(Duration::from_secs(60), f);
        let first = in_time(backup(&repo, &src, None))
            .await
            .expect("first backup hung")
            .unwrap();
        assert!(
            first.record.segments.len() >= 3,
            "the test needs several segments"
        );
        let second = in_time(backup(&repo, &src, Some(&first.record)))
            .await
            .expect("second backup hung")
            .unwrap();
        assert_eq!(second.stats.objects_unchanged, 20_000);
        assert_eq!(
            second.record.segments, first.record.segments,
            "unchanged keys give identical segments"
        );
    }
}
