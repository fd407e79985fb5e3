//! Small chunks gathered into packs (format: `haul_manifest::pack`).
//!
//! ```text
//! store_chunk (blob < threshold) ─seal─▶ open pack ─full─▶ PUT packs/… ─▶ unindexed
//!                                          (≤ PACK_SLOTS packs in memory)      │
//! flush_packs (before every snapshot root) ─▶ last pack ─▶ PUT index/… ◀──────┘
//! read_chunk ─▶ located? ranged GET of the blob : GET chunks/…
//! ```
//!
//! A packed chunk counts as stored the moment it is in the open pack (a
//! second copy is never packed); the snapshot root is written only after
//! [`Repository::flush_packs`] has written every pack and an index naming
//! them. A pack or index write that fails makes every later flush fail, so
//! no root ever names a chunk that a failed pack held.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::{self, StreamExt};
use haul_manifest::crypto::Kind;
use haul_manifest::pack::{self, Blob, INDEX_DIR, PACKS_DIR, PackEntry, PackId, PackWriter};
use haul_manifest::{ChunkId, FormatError, chunk};
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Repository, random};
use crate::{MoverError, Result};

/// Packs held in memory at once: the open one and those uploading. Four
/// 8 MiB packs keep a pipeline of small objects moving (one uploads while
/// the next fills) within a fraction of the memory budget.
pub(super) const PACK_SLOTS: usize = 4;
/// An index is written once this many blobs are in packs no index names,
/// so a killed backup leaves at most this many chunks for the next to
/// upload again (it reuses the rest).
const INDEX_EVERY: usize = 50_000;
/// The most one ranged GET of back-to-back packed chunks asks for.
const COALESCE_BYTES: u64 = 8 << 20;

/// Where a packed chunk is.
#[derive(Debug, Clone, Copy)]
struct Located {
    /// Position in `PackState::packs`.
    pack: u32,
    offset: u32,
    len: u32,
}

/// What the repository knows of packs.
#[derive(Debug, Default)]
pub(super) struct PackState {
    /// Every pack named by an index (or written by this process), by position.
    packs: Vec<PackId>,
    /// Every packed chunk, by stored name.
    located: HashMap<ChunkId, Located>,
    /// Chunks in the open pack or in one uploading: stored, not yet readable.
    pending: HashSet<ChunkId>,
    /// Written packs no index names yet.
    unindexed: Vec<PackEntry>,
    unindexed_blobs: usize,
    /// Why a pack or index could not be written: nothing may commit after it.
    failed: Option<String>,
}

/// The pack being filled, and its place among `PACK_SLOTS`.
#[derive(Debug)]
pub(super) struct OpenPack {
    writer: PackWriter,
    _slot: OwnedSemaphorePermit,
}

/// The pack machinery of one repository handle.
#[derive(Debug)]
pub(super) struct Packer {
    pub(super) open: tokio::sync::Mutex<Option<OpenPack>>,
    slots: Arc<Semaphore>,
    state: Mutex<PackState>,
    /// Uploads (and index writes) in flight, and a wake-up when one ends.
    busy: std::sync::atomic::AtomicUsize,
    idle: Notify,
    loaded: tokio::sync::OnceCell<()>,
}

impl Default for Packer {
    fn default() -> Self {
        Self {
            open: tokio::sync::Mutex::new(None),
            slots: Arc::new(Semaphore::new(PACK_SLOTS)),
            state: Mutex::default(),
            busy: 0.into(),
            idle: Notify::new(),
            loaded: tokio::sync::OnceCell::new(),
        }
    }
}

/// Counts an upload as in flight until dropped; an upload dropped before
/// it finished (its task was cancelled) poisons the packer.
struct Busy {
    repo: Repository,
    done: bool,
}

impl Busy {
    fn new(repo: &Repository) -> Self {
        repo.packer.busy.fetch_add(1, Ordering::SeqCst);
        Self {
            repo: repo.clone(),
            done: false,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let packer = &self.repo.packer;
        if !self.done {
            packer.fail("a pack upload was cancelled".into());
        }
        packer.busy.fetch_sub(1, Ordering::SeqCst);
        packer.idle.notify_waiters();
    }
}

impl Packer {
    fn state(&self) -> MutexGuard<'_, PackState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, why: String) {
        self.state().failed.get_or_insert(why);
    }
}

impl Repository {
    /// Is a chunk whose stored blob is `blob_len` bytes packed here?
    pub(super) fn packs_blob(&self, blob_len: usize) -> bool {
        self.config
            .pack
            .is_some_and(|p| blob_len < p.threshold as usize)
    }

    /// Loads every index once (nothing to load in a repository without packs).
    async fn load_index(&self) -> Result<()> {
        if self.config.pack.is_none() {
            return Ok(());
        }
        self.packer
            .loaded
            .get_or_try_init(|| async {
                let read = self.read_indexes().await?;
                let mut s = self.packer.state();
                for (_, entries) in &read {
                    for e in entries {
                        s.add(e);
                    }
                }
                Ok::<_, MoverError>(())
            })
            .await?;
        Ok(())
    }

    /// Every index of the repository: its path and the packs it names.
    pub(super) async fn read_indexes(&self) -> Result<Vec<(String, Vec<PackEntry>)>> {
        let listed: Vec<_> = crate::listing::resumable(&self.loc, INDEX_DIR, None)
            .try_collect()
            .await?;
        stream::iter(listed)
            .map(|l| async move {
                let name = format!("{INDEX_DIR}/{}", l.key.rsplit('/').next().unwrap_or(""));
                let bytes = {
                    let _r = self.engine.request().await;
                    self.loc.get_bytes(&self.loc.path(&name)).await
                }
                .map_err(|e| MoverError::store("read a pack index from", &self.loc.url, e))?;
                let plain = self.open_sealed(Kind::Record, &name, bytes)?;
                let entries =
                    pack::decode(&plain, &name).map_err(|e| self.corrupt(name.clone(), e))?;
                Ok::<_, MoverError>((name, entries))
            })
            .buffer_unordered(self.engine.limits.read_ahead.max(1))
            .try_collect()
            .await
    }

    /// Is the chunk stored as `name` packed (or being packed) here?
    pub(super) async fn is_packed(&self, name: &ChunkId) -> Result<bool> {
        if self.config.pack.is_none() {
            return Ok(false);
        }
        self.load_index().await?;
        let s = self.packer.state();
        Ok(s.located.contains_key(name) || s.pending.contains(name))
    }

    /// Adds a chunk to the open pack unless it is packed already, and
    /// writes the pack once it is full. Returns whether it was added.
    pub(super) async fn store_packed(
        &self,
        name: ChunkId,
        enc: chunk::Encoded,
        plain: Bytes,
    ) -> Result<bool> {
        // A chunk in a pack a prune marked counts as absent: stored again.
        let marked = &self.marks().await?.packs;
        let live = |s: &PackState| {
            s.pending.contains(&name)
                || s.located
                    .get(&name)
                    .is_some_and(|l| !marked.contains(&s.packs[l.pack as usize]))
        };
        self.load_index().await?;
        if live(&self.packer.state()) {
            return Ok(false);
        }
        if let Some(why) = self.packer.state().failed.clone() {
            return Err(MoverError::Task(format!(
                "a pack could not be written: {why}"
            )));
        }
        let sealed = match &self.keys {
            Some(keys) => {
                let keys = keys.clone();
                let payload = enc.compressed.clone();
                let plain = plain.clone();
                let id = enc.id;
                Some(
                    self.engine
                        .cpu_for(plain.len(), move || {
                            let payload = payload.as_deref().unwrap_or(&plain);
                            keys.seal_parts(Kind::Chunk, &id.to_hex(), &[&enc.header, payload])
                        })
                        .await?,
                )
            }
            None => None,
        };
        let full = {
            let mut open = self.packer.open.lock().await;
            {
                let mut s = self.packer.state();
                if live(&s) {
                    return Ok(false);
                }
                s.pending.insert(name);
            }
            if open.is_none() {
                let slot = self
                    .packer
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed");
                let size = self.config.pack.map_or(0, |p| p.size as usize);
                *open = Some(OpenPack {
                    writer: PackWriter::new(ChunkId(random()?), size + size / 8),
                    _slot: slot,
                });
            }
            let Some(p) = open.as_mut() else {
                unreachable!("opened above")
            };
            match &sealed {
                Some(s) => p.writer.push(name, &[s]),
                None => {
                    let payload = enc.compressed.as_deref().unwrap_or(&plain);
                    p.writer.push(name, &[&enc.header, payload]);
                }
            }
            let size = self.config.pack.map_or(0, |p| p.size as usize);
            if p.writer.len() >= size {
                open.take()
            } else {
                None
            }
        };
        if let Some(p) = full {
            // In the background: the caller's object is done, and the
            // pipeline keeps filling the next pack while this one uploads
            // (waiting here stalled the ordered window behind the upload).
            // The slot the pack holds bounds how many upload at once;
            // flush_packs waits for them and reports any failure.
            let busy = Busy::new(self);
            let repo = self.clone();
            tokio::spawn(async move {
                let _ = repo.write_pack(p, busy).await;
            });
        }
        Ok(true)
    }

    /// Writes a pack, makes its chunks readable, and writes an index when
    /// enough packs are waiting for one.
    async fn write_pack(&self, p: OpenPack, mut busy: Busy) -> Result<()> {
        let OpenPack { writer, _slot } = p;
        let name = pack::pack_path(&writer.id);
        let (entry, bytes) = writer.finish(|t| self.seal(Kind::Record, &name, t));
        let written = {
            let _r = self.engine.request().await;
            self.put_immutable(&self.loc.path(&name), PutPayload::from(bytes))
                .await
        };
        if let Err(e) = written {
            let e = MoverError::store("write a pack to", &self.loc.url, e);
            self.packer.fail(e.to_string());
            busy.done = true;
            return Err(e);
        }
        drop(_slot);
        let index_now = {
            let mut s = self.packer.state();
            for b in &entry.blobs {
                s.pending.remove(&b.name);
            }
            s.add(&entry);
            s.unindexed_blobs += entry.blobs.len();
            s.unindexed.push(entry);
            s.unindexed_blobs >= INDEX_EVERY
        };
        let r = if index_now {
            self.write_index().await
        } else {
            Ok(())
        };
        busy.done = true;
        r
    }

    /// Writes one index naming every written pack no index names yet.
    async fn write_index(&self) -> Result<()> {
        let entries = {
            let mut s = self.packer.state();
            s.unindexed_blobs = 0;
            std::mem::take(&mut s.unindexed)
        };
        if entries.is_empty() {
            return Ok(());
        }
        let name = pack::index_path(&ChunkId(random()?));
        let bytes = self.seal(Kind::Record, &name, pack::encode(&entries));
        let _r = self.engine.request().await;
        if let Err(e) = self
            .put_immutable(&self.loc.path(&name), PutPayload::from(bytes))
            .await
        {
            let e = MoverError::store("write a pack index to", &self.loc.url, e);
            self.packer.fail(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Writes the open pack and an index of every pack written so far, and
    /// waits for uploads in flight: afterwards every chunk stored through
    /// this handle is readable by anyone. Fails if any pack or index of this
    /// handle failed to be written.
    pub async fn flush_packs(&self) -> Result<()> {
        if self.config.pack.is_none() {
            return Ok(());
        }
        let open = self.packer.open.lock().await.take();
        if let Some(p) = open {
            if p.writer.is_empty() {
                drop(p);
            } else {
                let busy = Busy::new(self);
                self.write_pack(p, busy).await?;
            }
        }
        loop {
            let idle = self.packer.idle.notified();
            if self.packer.busy.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
        if let Some(why) = self.packer.state().failed.clone() {
            return Err(MoverError::Task(format!(
                "a pack could not be written, so nothing can be committed: {why}"
            )));
        }
        self.write_index().await
    }

    /// The pack and range of a packed chunk (flushing first if it is still
    /// in memory); `None` for a loose one.
    pub(super) async fn locate(&self, name: &ChunkId) -> Result<Option<(PackId, Blob)>> {
        if !self.is_packed(name).await? {
            return Ok(None);
        }
        if self.packer.state().pending.contains(name) {
            self.flush_packs().await?;
        }
        let s = self.packer.state();
        Ok(s.located.get(name).map(|l| {
            (
                s.packs[l.pack as usize],
                Blob {
                    name: *name,
                    offset: l.offset,
                    len: l.len,
                },
            )
        }))
    }

    /// Reads chunks in order, each checked against its id, in as few
    /// requests as it takes: packed chunks that lie back to back in one pack
    /// (a dump's, or a folder's small files, stored in order) come in one
    /// ranged GET of at most 8 MiB; loose ones one GET each.
    pub async fn read_chunks(&self, ids: &[ChunkId]) -> Result<Vec<Bytes>> {
        let mut located = Vec::with_capacity(ids.len());
        for id in ids {
            located.push((*id, self.locate(&self.chunk_name(id)).await?));
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut i = 0;
        while i < located.len() {
            let (id, Some((pack, first))) = located[i] else {
                out.push(self.read_chunk(located[i].0).await?);
                i += 1;
                continue;
            };
            // The run of blobs that follow each other in this pack.
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.len);
            let mut j = i + 1;
            while let Some((_, Some((p, b)))) = located.get(j) {
                let next_end = end + u64::from(b.len);
                if *p != pack || u64::from(b.offset) != end || next_end - start > COALESCE_BYTES {
                    break;
                }
                end = next_end;
                j += 1;
            }
            let span = Blob {
                name: first.name,
                offset: first.offset,
                // At most COALESCE_BYTES, far below 4 GiB.
                len: (end - start) as u32,
            };
            let bytes = self.read_packed(id, pack, span).await?;
            for (id, at) in &located[i..j] {
                let Some((_, b)) = at else { continue };
                let from = (u64::from(b.offset) - start) as usize;
                let blob = bytes.slice(from..from + b.len as usize);
                out.push(self.decode_blob(*id, blob).await?);
            }
            i = j;
        }
        Ok(out)
    }

    /// Reads one packed blob with a ranged GET. A pack that is gone or
    /// shorter than its index says is damage, named by the chunk.
    pub(super) async fn read_packed(&self, id: ChunkId, pack: PackId, b: Blob) -> Result<Bytes> {
        let path = self.loc.path(&pack::pack_path(&pack));
        let range = u64::from(b.offset)..u64::from(b.offset) + u64::from(b.len);
        let got = {
            let _r = self.engine.request().await;
            self.loc.store.get_range(&path, range.clone()).await
        };
        let damaged = |reason: String| {
            self.corrupt(
                format!("chunk {id}"),
                FormatError::CorruptChunk { id, reason },
            )
        };
        match got {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Ok(bytes) => Err(damaged(format!(
                "pack {} holds {} of its {} bytes",
                pack.short(),
                bytes.len(),
                b.len
            ))),
            Err(object_store::Error::NotFound { .. }) => Err(damaged(format!(
                "its pack {} is missing from the repository",
                pack.short()
            ))),
            Err(e) => match self.loc.store.head(&path).await {
                Ok(meta) if meta.size < range.end => Err(damaged(format!(
                    "its pack {} is {} bytes, shorter than its index says",
                    pack.short(),
                    meta.size
                ))),
                _ => Err(MoverError::store("read a pack from", &self.loc.url, e)),
            },
        }
    }

    /// Stored names of every packed chunk whose pack is in the repository.
    pub(super) async fn list_packed(&self) -> Result<HashSet<ChunkId>> {
        if self.config.pack.is_none() {
            return Ok(HashSet::new());
        }
        self.load_index().await?;
        let present: HashSet<PackId> = crate::listing::resumable(&self.loc, PACKS_DIR, None)
            .try_filter_map(|l| async move {
                Ok(l.key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse::<PackId>().ok()))
            })
            .try_collect()
            .await?;
        let s = self.packer.state();
        Ok(s.located
            .iter()
            .filter(|(_, l)| present.contains(&s.packs[l.pack as usize]))
            .map(|(name, _)| *name)
            .collect())
    }

    /// The packs that hold the chunks `ids`, each with the chunks it holds
    /// (in pack order); chunks not packed are returned apart.
    pub async fn group_by_pack(&self, ids: Vec<ChunkId>) -> Result<(Vec<PackGroup>, Vec<ChunkId>)> {
        let mut loose = Vec::new();
        if self.config.pack.is_none() {
            return Ok((Vec::new(), ids));
        }
        self.load_index().await?;
        let s = self.packer.state();
        let mut groups: HashMap<u32, Vec<(u32, ChunkId)>> = HashMap::new();
        for id in ids {
            match s.located.get(&self.chunk_name(&id)) {
                Some(l) => groups.entry(l.pack).or_default().push((l.offset, id)),
                None => loose.push(id),
            }
        }
        // What the index says each of these packs holds, in one pass.
        let mut indexed: HashMap<u32, Vec<Blob>> = HashMap::new();
        for (name, l) in &s.located {
            if groups.contains_key(&l.pack) {
                indexed.entry(l.pack).or_default().push(Blob {
                    name: *name,
                    offset: l.offset,
                    len: l.len,
                });
            }
        }
        let mut out: Vec<PackGroup> = groups
            .into_iter()
            .map(|(p, mut chunks)| {
                chunks.sort();
                PackGroup {
                    pack: s.packs[p as usize],
                    chunks: chunks.into_iter().map(|c| c.1).collect(),
                    indexed: indexed.remove(&p).unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by_key(|g| g.pack);
        Ok((out, loose))
    }

    /// Reads a whole pack once and checks it: its trailer against the
    /// index, and each of `group.chunks` against its id. Returns each
    /// chunk's plaintext length or its damage; an unreadable pack damages
    /// them all.
    pub async fn read_pack(&self, group: &PackGroup) -> Result<Vec<(ChunkId, Result<u64>)>> {
        let name = pack::pack_path(&group.pack);
        let damaged_all = |reason: String| -> Vec<(ChunkId, Result<u64>)> {
            group
                .chunks
                .iter()
                .map(|&id| {
                    let e = self.corrupt(
                        format!("chunk {id}"),
                        FormatError::CorruptChunk {
                            id,
                            reason: reason.clone(),
                        },
                    );
                    (id, Err(e))
                })
                .collect()
        };
        let bytes = {
            let _r = self.engine.request().await;
            self.loc.get_bytes(&self.loc.path(&name)).await
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(damaged_all(format!(
                    "its pack {} is missing from the repository",
                    group.pack.short()
                )));
            }
            Err(e) => return Err(MoverError::store("read a pack from", &self.loc.url, e)),
        };
        let expected = group.indexed.clone();
        if let Err(reason) = self.check_trailer(&name, &bytes, expected) {
            return Ok(damaged_all(format!(
                "its pack {} {reason}",
                group.pack.short()
            )));
        }
        let mut out = Vec::with_capacity(group.chunks.len());
        let by_name: HashMap<ChunkId, &Blob> = group.indexed.iter().map(|b| (b.name, b)).collect();
        for &id in &group.chunks {
            let r = match by_name.get(&self.chunk_name(&id)) {
                Some(b) => {
                    let at = b.offset as usize;
                    let blob = bytes.slice(at..at + b.len as usize);
                    self.decode_blob(id, blob).await.map(|p| p.len() as u64)
                }
                None => Err(self.corrupt(
                    format!("chunk {id}"),
                    FormatError::CorruptChunk {
                        id,
                        reason: "no index names it".into(),
                    },
                )),
            };
            out.push((id, r));
        }
        Ok(out)
    }

    /// Checks a pack's trailer: present, authentic, and the same blobs the
    /// indexes say (each index names a pack once, so they must agree).
    fn check_trailer(
        &self,
        name: &str,
        bytes: &Bytes,
        mut expected: Vec<Blob>,
    ) -> std::result::Result<(), String> {
        let n = bytes.len();
        if n < 4 {
            return Err(format!("is {n} bytes long"));
        }
        let len =
            u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]) as usize;
        if len > n - 4 {
            return Err("has a damaged trailer length".into());
        }
        let trailer = bytes.slice(n - 4 - len..n - 4);
        let plain = self
            .open_sealed(Kind::Record, name, trailer)
            .map_err(|e| format!("has a trailer that is {}", crate::error_chain(&e)))?;
        let entries =
            pack::decode(&plain, name).map_err(|e| format!("has a damaged trailer: {e}"))?;
        let [entry] = entries.as_slice() else {
            return Err("has a trailer naming several packs".into());
        };
        if entry.blob_bytes() != (n - 4 - len) as u64
            || entry.pack.to_hex() != name.rsplit('/').next().unwrap_or("")
        {
            return Err("has a trailer that does not describe it".into());
        }
        // A chunk in two packs (two backups wrote it at once) is located in one.
        let held: HashSet<&Blob> = entry.blobs.iter().collect();
        expected.retain(|b| !held.contains(b));
        if let Some(b) = expected.first() {
            return Err(format!(
                "does not hold blob {} where the index says",
                b.name.short()
            ));
        }
        Ok(())
    }
}

/// Chunks to read from one pack.
#[derive(Debug, Clone)]
pub struct PackGroup {
    pub pack: PackId,
    pub chunks: Vec<ChunkId>,
    /// Every blob the index says the pack holds.
    indexed: Vec<Blob>,
}

impl PackState {
    fn add(&mut self, e: &PackEntry) {
        let pack = self.packs.len() as u32;
        self.packs.push(e.pack);
        for b in &e.blobs {
            self.located.insert(
                b.name,
                Located {
                    pack,
                    offset: b.offset,
                    len: b.len,
                },
            );
        }
    }
}
