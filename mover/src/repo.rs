//! A haul repository in an object store (format: see `haul_manifest`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, FuturesOrdered, StreamExt, TryStreamExt};
use haul_manifest::crypto::{self, Credential, Encryption, Keys, Kind};
use haul_manifest::pause::PAUSES_DIR;
use haul_manifest::segment::{self, SegmentWriter};
use haul_manifest::shard::{self, ShardPlan, ShardRecord};
use haul_manifest::{
    CHUNKS_DIR, CONFIG_COPIES_DIR, ChunkId, DatabaseRecord, ObjectEntry, PauseRecord,
    REPO_CONFIG_PATH, RUNS_DIR, RepoConfig, RepoId, RunKind, RunRecord, SNAPSHOTS_DIR, SegmentRef,
    Snapshot, SnapshotId, chunk, chunklist,
};
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::OnceCell;

use crate::engine::AbortOnDrop;
use crate::{Engine, Location, MoverError, Result, listing};

mod packs;
mod prune;
pub use packs::PackGroup;
pub use prune::{KEEP_RUNS, PruneOptions, PruneReport, REPACK_UNUSED_PERCENT, grace_before};

/// An opened repository. Cloning is cheap (one `Arc`): transfers run as
/// their own tasks, each holding a clone.
#[derive(Debug, Clone)]
pub struct Repository(Arc<RepoInner>);

/// What a repository handle shares. Its fields are the engine's own (the
/// type is not exported): other crates see a repository through
/// [`Repository`]'s methods.
#[derive(Debug)]
pub struct RepoInner {
    /// Where the repository lives (store and prefix).
    pub(crate) loc: Location,
    /// `haul-repo.json`: chunk sizes and codec settings every write follows.
    pub(crate) config: RepoConfig,
    /// The budgets (requests, memory, CPU) all of this repository's transfers share.
    pub(crate) engine: Engine,
    /// Chunks known to exist: found by a HEAD or written by this process,
    /// and, once `listed`, every chunk of the repository. A chunk that
    /// exists is never uploaded again.
    known: Mutex<HashSet<ChunkId>>,
    /// Set once the whole `chunks/` listing is merged into `known`: after
    /// `Limits::head_checks` HEADs, one listing costs less than more HEADs.
    listed: OnceCell<()>,
    /// Set by the first chunk check, which looks at the top of `chunks/`
    /// once (unless a parent snapshot already says there are chunks): in a
    /// repository that holds no chunk yet, nothing needs checking (`listed`
    /// is set at once), so a first backup makes one request here instead of
    /// a HEAD per chunk.
    looked: OnceCell<()>,
    /// HEAD requests made so far to check for a chunk.
    pub(crate) heads: AtomicUsize,
    /// About how many chunks the repository holds, when a caller knows
    /// (see [`Repository::expect_chunks`]).
    expected_chunks: AtomicUsize,
    /// Format v2's keys: everything stored is sealed with them and chunks
    /// are named by their keyed id. `None`: a v1 or an unencrypted v2
    /// repository, stored as v1 stores it.
    keys: Option<Arc<Keys>>,
    /// Small chunks on their way into packs, and where packed chunks are.
    packer: packs::Packer,
    /// What prune marks name: never reused by a backup (loaded once).
    marks: OnceCell<prune::Marks>,
}

impl std::ops::Deref for Repository {
    type Target = RepoInner;
    fn deref(&self) -> &RepoInner {
        &self.0
    }
}

/// Runs `fut` as its own task and waits for it.
///
/// Work that holds a shared permit (a request slot, a CPU worker, memory)
/// must never sit un-polled inside a stream combinator while its consumer
/// waits for the same permits elsewhere (writing a segment, say): that is a
/// deadlock. A spawned task makes progress, and releases its permits, on its
/// own; the combinator then only holds its result.
///
/// The task starts at once, not when the returned future is first polled,
/// and is aborted if that future is dropped (a failed pipeline stops its work).
pub fn spawned<T, E>(
    fut: impl std::future::Future<Output = std::result::Result<T, E>> + Send + 'static,
) -> impl std::future::Future<Output = std::result::Result<T, E>> + Send + 'static
where
    T: Send + 'static,
    E: From<MoverError> + Send + 'static,
{
    let mut task = AbortOnDrop(tokio::spawn(fut));
    async move {
        (&mut task.0)
            .await
            .map_err(|e| E::from(MoverError::Task(e.to_string())))?
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| MoverError::Task(format!("no randomness: {e}")))?;
    Ok(b)
}

/// The keys of `config`'s repository, from the credential given.
fn unlock(
    loc: &Location,
    config: &RepoConfig,
    cred: Option<&Credential>,
) -> Result<Option<Arc<Keys>>> {
    let key_error = |reason: String| MoverError::Key {
        url: loc.url.to_string(),
        reason,
    };
    let (enc, cred) = match (&config.encryption, cred) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(key_error(format!(
                "it is not encrypted (format v{}{}), but a key was given: refusing to trust \
                 unauthenticated data where encrypted data was expected",
                config.version,
                if config.version >= 2 {
                    ", made with --insecure-no-encryption"
                } else {
                    ""
                }
            )));
        }
        (Some(_), None) => {
            return Err(key_error("it is encrypted, and no key was given".into()));
        }
        (Some(e), Some(c)) => (e, c),
    };
    let master = cred
        .unlock(&config.id, &enc.slots)
        .map_err(|e| MoverError::format(loc.url.to_string(), REPO_CONFIG_PATH, e))?;
    let Some(master) = master else {
        let kind = match cred.kind() {
            crypto::SlotKind::Password => "password",
            crypto::SlotKind::KeyFile => "key file",
        };
        let n = enc.slots.iter().filter(|s| s.kind == cred.kind()).count();
        return Err(key_error(format!(
            "the {kind} given opens none of its key slots ({n} of that kind, {} in all)",
            enc.slots.len()
        )));
    };
    let keys = Keys::new(&config.id, master);
    if keys.config_mac(&config.settings_bytes()) != enc.check {
        return Err(MoverError::format(
            loc.url.to_string(),
            REPO_CONFIG_PATH,
            haul_manifest::FormatError::Unauthentic {
                what: REPO_CONFIG_PATH.into(),
                reason: "its settings were changed by someone without the key".into(),
            },
        ));
    }
    Ok(Some(Arc::new(keys)))
}

/// A fresh snapshot id.
pub fn new_snapshot_id() -> Result<SnapshotId> {
    Ok(SnapshotId::from_random(random()?))
}

impl Repository {
    /// Creates a repository at an empty location.
    /// With a credential, the repository is encrypted (format v2, see
    /// `haul_manifest::crypto`) and the credential is its first key slot;
    /// without, it is not (`--insecure-no-encryption`).
    pub async fn init(loc: Location, engine: Engine, cred: Option<&Credential>) -> Result<Self> {
        let config = RepoConfig::new(RepoId::from_random(random()?), Utc::now());
        Self::init_with(loc, engine, cred, config).await
    }

    /// [`Repository::init`] with settings of the caller's choosing (a
    /// fresh `RepoConfig::new`, changed): the repository id and the
    /// encryption section are the caller's to leave alone.
    pub async fn init_with(
        loc: Location,
        engine: Engine,
        cred: Option<&Credential>,
        mut config: RepoConfig,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| MoverError::format(loc.url.to_string(), REPO_CONFIG_PATH, e))?;
        if let Some(found) = listing::first_key(&loc).await? {
            let what = if found == REPO_CONFIG_PATH {
                "it is a haul repository already".to_owned()
            } else {
                format!("it holds {found:?}")
            };
            return Err(MoverError::NotEmpty {
                url: loc.url.to_string(),
                found: what,
            });
        }
        if config.object_lock.is_some() {
            let enabled = match &loc.sdk {
                Some(sdk) => Box::pin(sdk.lock_enabled()).await.map_err(|e| {
                    MoverError::store("read the Object Lock setting of", &loc.url, e)
                })?,
                None => {
                    return Err(MoverError::BadUrl {
                        url: loc.url.to_string(),
                        reason: "Object Lock is an S3 feature: the repository must be an s3:// URL"
                            .into(),
                    });
                }
            };
            if !enabled {
                return Err(MoverError::BadUrl {
                    url: loc.url.to_string(),
                    reason: "the bucket does not have Object Lock enabled (it can only be \
                             enabled when the bucket is created: `aws s3api create-bucket \
                             --object-lock-enabled-for-bucket`)"
                        .into(),
                });
            }
        }
        // Refused limits leave nothing behind: checked before the first write.
        engine
            .limits
            .check(config.object_chunk_size)
            .map_err(MoverError::Limits)?;
        let keys = match cred {
            None => None,
            Some(c) => {
                let keys = Keys::new(&config.id, random()?);
                let slot = c
                    .new_slot(&keys, "made by haul init")
                    .map_err(|e| MoverError::format(loc.url.to_string(), "a key slot", e))?;
                config.encryption = Some(Encryption {
                    cipher: crypto::CIPHER.into(),
                    check: keys.config_mac(&config.settings_bytes()),
                    slots: vec![slot],
                });
                Some(Arc::new(keys))
            }
        };
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        let repo = Self::with_config(loc, config, engine, keys)?;
        repo.put_locked_config(&json).await?;
        repo.loc
            .store
            .put(&repo.loc.path(REPO_CONFIG_PATH), PutPayload::from(json))
            .await
            .map_err(|e| MoverError::store("write haul-repo.json to", &repo.loc.url, e))?;
        Ok(repo)
    }

    /// Opens an existing repository.
    /// An encrypted repository needs a credential that opens one of its
    /// key slots; an unencrypted one refuses a credential (whoever made it
    /// unencrypted may have replaced an encrypted one: its data would be
    /// trusted unauthenticated).
    pub async fn open(loc: Location, engine: Engine, cred: Option<&Credential>) -> Result<Self> {
        let bytes = loc.get_bytes(&loc.path(REPO_CONFIG_PATH)).await;
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => {
                // Distinguish "no such bucket" from "not a repository".
                listing::probe(&loc).await?;
                // Under Object Lock, a locked copy of every version stays.
                match Self::locked_config(&loc).await? {
                    Some((name, b)) => {
                        tracing::warn!(
                            "{} has no haul-repo.json: opening it with its locked copy {name} \
                             (restore it with `haul key list` after checking the bucket's history)",
                            loc.url
                        );
                        b
                    }
                    None => {
                        return Err(MoverError::NotARepository {
                            url: loc.url.to_string(),
                        });
                    }
                }
            }
            Err(e) => return Err(MoverError::store("read haul-repo.json from", &loc.url, e)),
        };
        let config = RepoConfig::from_json(&bytes)
            .map_err(|source| MoverError::format(loc.url.to_string(), REPO_CONFIG_PATH, source))?;
        let keys = unlock(&loc, &config, cred)?;
        Self::with_config(loc, config, engine, keys)
    }

    fn with_config(
        loc: Location,
        config: RepoConfig,
        engine: Engine,
        keys: Option<Arc<Keys>>,
    ) -> Result<Self> {
        engine
            .limits
            .check(config.object_chunk_size)
            .map_err(MoverError::Limits)?;
        Ok(Self(Arc::new(RepoInner {
            loc,
            config,
            engine,
            known: Mutex::default(),
            listed: OnceCell::new(),
            looked: OnceCell::new(),
            heads: AtomicUsize::new(0),
            expected_chunks: AtomicUsize::new(0),
            keys,
            packer: packs::Packer::default(),
            marks: OnceCell::new(),
        })))
    }

    /// The key slots of an encrypted repository (none otherwise).
    pub fn slots(&self) -> &[crypto::KeySlot] {
        self.config
            .encryption
            .as_ref()
            .map_or(&[], |e| e.slots.as_slice())
    }

    /// Adds a key slot for `new` (the data is not re-encrypted: the slot
    /// wraps the same master key). Rewrites `haul-repo.json`.
    pub async fn add_slot(&self, new: &Credential, label: &str) -> Result<crypto::KeySlot> {
        let Some(keys) = &self.keys else {
            return Err(self.key_error("it is not encrypted: it has no key slots"));
        };
        let slot = new
            .new_slot(keys, label)
            .map_err(|e| self.corrupt("a key slot".into(), e))?;
        let mut config = self.config.clone();
        if let Some(e) = &mut config.encryption {
            e.slots.push(slot.clone());
        }
        self.write_config(&config).await?;
        Ok(slot)
    }

    /// Removes key slot `id`; never the last one.
    pub async fn remove_slot(&self, id: &str) -> Result<crypto::KeySlot> {
        let mut config = self.config.clone();
        let Some(e) = &mut config.encryption else {
            return Err(self.key_error("it is not encrypted: it has no key slots"));
        };
        let Some(at) = e.slots.iter().position(|s| s.id == id) else {
            return Err(self.key_error(&format!(
                "it has no key slot {id:?} (`haul key list` shows them)"
            )));
        };
        if e.slots.len() == 1 {
            return Err(self.key_error(
                "that is its only key slot: add another first (`haul key add`), or the data can never be read again",
            ));
        }
        let slot = e.slots.remove(at);
        self.write_config(&config).await?;
        Ok(slot)
    }

    fn key_error(&self, reason: &str) -> MoverError {
        MoverError::Key {
            url: self.url(),
            reason: reason.to_owned(),
        }
    }

    async fn write_config(&self, config: &RepoConfig) -> Result<()> {
        config
            .validate()
            .map_err(|e| self.corrupt(REPO_CONFIG_PATH.into(), e))?;
        let json = serde_json::to_vec_pretty(config).expect("config serializes");
        self.put_locked_config(&json).await?;
        self.loc
            .store
            .put(&self.loc.path(REPO_CONFIG_PATH), PutPayload::from(json))
            .await
            .map_err(|e| MoverError::store("write haul-repo.json to", &self.loc.url, e))?;
        Ok(())
    }

    /// Under Object Lock, `haul-repo.json` (rewritten by `haul key`, so
    /// never locked itself) is also written as a locked copy,
    /// `config/<time>.json`: deleting it cannot make the data unreadable.
    async fn put_locked_config(&self, json: &[u8]) -> Result<()> {
        if self.config.object_lock.is_none() {
            return Ok(());
        }
        let name = format!(
            "{CONFIG_COPIES_DIR}/{}.json",
            Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
        );
        self.put_immutable(&self.loc.path(&name), PutPayload::from(json.to_vec()))
            .await
            .map_err(|e| {
                MoverError::store("write a locked copy of haul-repo.json to", &self.loc.url, e)
            })?;
        Ok(())
    }

    /// The newest locked copy of `haul-repo.json`, if any.
    async fn locked_config(loc: &Location) -> Result<Option<(String, Bytes)>> {
        let listed: Vec<_> = listing::resumable(loc, CONFIG_COPIES_DIR, None)
            .try_collect()
            .await?;
        let Some(newest) = listed.iter().map(|l| l.key.clone()).max() else {
            return Ok(None);
        };
        let name = format!(
            "{CONFIG_COPIES_DIR}/{}",
            newest.rsplit('/').next().unwrap_or_default()
        );
        let bytes = loc.get_bytes(&loc.path(&name)).await.map_err(|e| {
            MoverError::store("read a locked copy of haul-repo.json from", &loc.url, e)
        })?;
        Ok(Some((name, bytes)))
    }

    /// Is the repository encrypted (format v2 with keys)?
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The name chunk `id` is stored under: its keyed id in an encrypted
    /// repository, the id itself otherwise.
    pub fn chunk_name(&self, id: &ChunkId) -> ChunkId {
        match &self.keys {
            Some(k) => k.chunk_name(id),
            None => *id,
        }
    }

    /// `plain` as stored: sealed as the `kind` object `name` when encrypted.
    fn seal(&self, kind: Kind, name: &str, plain: Vec<u8>) -> Vec<u8> {
        match &self.keys {
            Some(k) => k.seal(kind, name, &plain),
            None => plain,
        }
    }

    /// Stored bytes opened as the `kind` object `name` (checked, when
    /// encrypted: refused unless sealed as exactly that, here).
    fn open_sealed(&self, kind: Kind, name: &str, stored: Bytes) -> Result<Bytes> {
        match &self.keys {
            Some(k) => k
                .open(kind, name, &stored)
                .map(Bytes::from)
                .map_err(|e| self.corrupt(name.to_owned(), e)),
            None => Ok(stored),
        }
    }

    pub fn url(&self) -> String {
        self.loc.url.to_string()
    }

    /// The store URL of the repository (to check it against sources and targets).
    pub fn store_url(&self) -> &crate::StoreUrl {
        &self.loc.url
    }

    /// `haul-repo.json`: the settings every chunk of this repository follows.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The budgets and progress counters this repository's transfers share.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn corrupt(&self, what: String, source: haul_manifest::FormatError) -> MoverError {
        MoverError::format(self.url(), what, source)
    }

    // ---- chunks -------------------------------------------------------

    /// The chunks known to exist (see `RepoInner::known`).
    fn known_chunks(&self) -> std::sync::MutexGuard<'_, HashSet<ChunkId>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the repository it holds about `chunks` chunks (a parent
    /// snapshot's size says so), which sets how many chunks are checked
    /// with a HEAD before listing them all is cheaper.
    pub fn expect_chunks(&self, chunks: u64) {
        let n = usize::try_from(chunks).unwrap_or(usize::MAX);
        self.expected_chunks.fetch_max(n, Ordering::Relaxed);
    }

    /// Does the repository hold chunk `id` (at `path`)? Nothing to ask in a
    /// repository that held no chunk when first looked at; otherwise a HEAD
    /// request for the first `head_checks` chunks asked about, then one
    /// listing of every chunk.
    async fn has_chunk(&self, id: &ChunkId, path: &object_store::path::Path) -> Result<bool> {
        if self.known_chunks().contains(id) {
            return Ok(true);
        }
        // A chunk a prune marked may be deleted by its sweep: store it again.
        if self.marks().await?.loose.contains(id) {
            return Ok(false);
        }
        self.looked
            .get_or_try_init(|| async {
                // A parent snapshot's chunks say the answer without a request.
                let known_full = self.expected_chunks.load(Ordering::Relaxed) > 0;
                if !known_full && self.chunk_folders().await?.is_empty() {
                    // Already set only if another task listed everything.
                    let _ = self.listed.set(());
                }
                Ok::<_, MoverError>(())
            })
            .await?;
        if self.listed.get().is_some() {
            // Everything is known: the repository was empty, or another task
            // listed every chunk after this one looked at `known` above.
            return Ok(self.known_chunks().contains(id));
        }
        let allowed =
            (self.engine.limits.head_checks).max(self.expected_chunks.load(Ordering::Relaxed) / 20);
        if self.heads.fetch_add(1, Ordering::Relaxed) < allowed {
            let _r = self.engine.request().await;
            return match self.loc.store.head(path).await {
                Ok(_) => {
                    self.known_chunks().insert(*id);
                    Ok(true)
                }
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(MoverError::store("look for a chunk in", &self.loc.url, e)),
            };
        }
        self.listed
            .get_or_try_init(|| async {
                let mut all = self.list_loose_chunks().await?;
                let marked = &self.marks().await?.loose;
                all.retain(|n| !marked.contains(n));
                self.known_chunks().extend(all);
                Ok::<_, MoverError>(())
            })
            .await?;
        Ok(self.known_chunks().contains(id))
    }

    /// Every chunk in the repository by the name it is stored under (see
    /// [`Repository::chunk_name`]): loose ones and packed ones whose pack
    /// is there.
    pub async fn list_chunks(&self) -> Result<HashSet<ChunkId>> {
        let mut all = self.list_loose_chunks().await?;
        all.extend(self.list_packed().await?);
        Ok(all)
    }

    /// Every loose chunk by its stored name, listed one `chunks/xx/`
    /// folder at a time with several listings in flight.
    async fn list_loose_chunks(&self) -> Result<HashSet<ChunkId>> {
        let sets: Vec<Vec<ChunkId>> = stream::iter(self.chunk_folders().await?)
            .map(|p| async move {
                let _r = self.engine.request().await;
                let dir = self.loc.relative(&p);
                let listed: Vec<_> = crate::listing::resumable(&self.loc, &dir, None)
                    .try_collect()
                    .await?;
                Ok::<_, MoverError>(
                    listed
                        .iter()
                        .filter_map(|l| l.key.rsplit('/').next()?.parse().ok())
                        .collect(),
                )
            })
            .buffer_unordered(self.engine.limits.read_ahead.max(1) * 4)
            .try_collect()
            .await?;
        Ok(sets.into_iter().flatten().collect())
    }

    /// The `chunks/xx/` folders that hold chunks, from one listing.
    async fn chunk_folders(&self) -> Result<Vec<object_store::path::Path>> {
        let dir = self.loc.child(CHUNKS_DIR);
        let _r = self.engine.request().await;
        match self.loc.store.list_with_delimiter(Some(&dir.prefix)).await {
            Ok(t) => Ok(t.common_prefixes),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(MoverError::store("list chunks of", &self.loc.url, e)),
        }
    }

    /// Stores an encoded chunk unless the repository has it. Returns whether
    /// it was uploaded. `plain` is the chunk's plaintext (the payload of a raw chunk).
    pub async fn store_chunk(&self, enc: chunk::Encoded, plain: Bytes) -> Result<bool> {
        let name = self.chunk_name(&enc.id);
        if self.packs_blob(enc.blob_len()) {
            return self.store_packed(name, enc, plain).await;
        }
        let path = self.loc.path(&haul_manifest::chunk_path(&name));
        if self.has_chunk(&name, &path).await? {
            return Ok(false);
        }
        let body = match &self.keys {
            Some(keys) => {
                let keys = keys.clone();
                let sealed = self
                    .engine
                    .cpu_for(plain.len(), move || {
                        let payload = enc.compressed.as_deref().unwrap_or(&plain);
                        keys.seal_parts(Kind::Chunk, &enc.id.to_hex(), &[&enc.header, payload])
                    })
                    .await?;
                PutPayload::from(sealed)
            }
            None => {
                let header = Bytes::copy_from_slice(&enc.header);
                match enc.compressed {
                    Some(c) => PutPayload::from_iter([header, Bytes::from(c)]),
                    None => PutPayload::from_iter([header, plain]),
                }
            }
        };
        {
            let _r = self.engine.request().await;
            self.put_immutable(&path, body)
                .await
                .map_err(|e| MoverError::store("upload a chunk to", &self.loc.url, e))?;
        }
        self.known_chunks().insert(name);
        Ok(true)
    }

    /// Writes an object that is never rewritten (a chunk, pack, index or
    /// snapshot root), with the repository's Object Lock retention when it
    /// has one (through the AWS SDK: object_store cannot set it).
    pub(crate) async fn put_immutable(
        &self,
        path: &object_store::path::Path,
        body: PutPayload,
    ) -> object_store::Result<object_store::PutResult> {
        match (&self.config.object_lock, &self.loc.sdk) {
            (None, _) => self.loc.store.put(path, body).await,
            (Some(lock), Some(sdk)) => {
                // Boxed: the SDK's future is large, and every write awaits this.
                Box::pin(sdk.put_locked(
                    path.as_ref(),
                    body,
                    lock.mode.s3_name(),
                    lock.until(Utc::now()),
                ))
                .await
            }
            (Some(_), None) => Err(object_store::Error::NotSupported {
                source: "this repository uses S3 Object Lock: it is written only through s3://"
                    .into(),
            }),
        }
    }

    /// Hashes, compresses and stores a piece of plaintext. Returns its id and
    /// the bytes uploaded (0 when the repository already had it).
    pub async fn put_plain(&self, plain: Bytes) -> Result<(ChunkId, u64)> {
        let level = self.config.zstd_level;
        let p = plain.clone();
        let enc = self
            .engine
            .cpu_for(p.len(), move || chunk::encode(&p, level))
            .await?;
        let (id, len) = (enc.id, enc.blob_len() as u64);
        let uploaded = self.store_chunk(enc, plain).await?;
        Ok((id, if uploaded { len } else { 0 }))
    }

    /// Stores a dump's chunk list as pieces (see [`chunklist`]). Returns
    /// the pieces' ids, in order, and the bytes uploaded.
    pub async fn put_chunk_list(
        &self,
        entries: &[chunklist::ListEntry],
    ) -> Result<(Vec<ChunkId>, u64)> {
        let mut ids = Vec::new();
        let mut uploaded = 0;
        for piece in chunklist::pieces(entries) {
            let (id, up) = self.put_plain(Bytes::from(piece)).await?;
            ids.push(id);
            uploaded += up;
        }
        Ok((ids, uploaded))
    }

    /// A dump's chunks, in order: from its chunk list's pieces (read and
    /// checked; their lengths must add up to the dump's), or inline in a
    /// root written before chunk lists.
    pub async fn dump_chunks(&self, db: &DatabaseRecord) -> Result<Vec<ChunkId>> {
        if db.chunk_lists.is_empty() {
            return Ok(db.chunks.clone());
        }
        let what = format!("the chunk list of database {}", db.name);
        let mut ids = Vec::with_capacity(usize::try_from(db.chunk_count).unwrap_or(0));
        let mut total = 0u64;
        let pieces: Vec<Bytes> = stream::iter(db.chunk_lists.iter().copied())
            .map(|id| self.read_chunk(id))
            .buffered(self.engine.limits.read_ahead.max(1))
            .try_collect()
            .await?;
        for plain in pieces {
            let entries =
                chunklist::parse(&plain, &what).map_err(|e| self.corrupt(what.clone(), e))?;
            for e in entries {
                total += u64::from(e.len);
                ids.push(e.id);
            }
        }
        if total != db.bytes {
            return Err(self.corrupt(
                what.clone(),
                haul_manifest::FormatError::Invalid {
                    what,
                    reason: format!(
                        "its chunks hold {total} bytes, the snapshot says the dump has {}",
                        db.bytes
                    ),
                },
            ));
        }
        Ok(ids)
    }

    /// Reads a chunk and checks it against its id. Missing and damaged
    /// chunks are errors that name the chunk.
    pub async fn read_chunk(&self, id: ChunkId) -> Result<Bytes> {
        let name = self.chunk_name(&id);
        let blob = match self.locate(&name).await? {
            Some((pack, b)) => self.read_packed(id, pack, b).await?,
            None => self.read_loose(id, &name).await?,
        };
        self.decode_blob(id, blob).await
    }

    async fn read_loose(&self, id: ChunkId, name: &ChunkId) -> Result<Bytes> {
        let path = self.loc.path(&haul_manifest::chunk_path(name));
        let blob = {
            let _r = self.engine.request().await;
            self.loc.get_bytes(&path).await
        };
        blob.map_err(|e| match e {
            object_store::Error::NotFound { .. } => self.corrupt(
                format!("chunk {id}"),
                haul_manifest::FormatError::CorruptChunk {
                    id,
                    reason: "missing from the repository".into(),
                },
            ),
            e => MoverError::store("read a chunk from", &self.loc.url, e),
        })
    }

    /// A stored blob opened (when sealed), decoded and checked against `id`.
    async fn decode_blob(&self, id: ChunkId, blob: Bytes) -> Result<Bytes> {
        let url = self.url();
        let keys = self.keys.clone();
        self.engine
            .cpu_for(blob.len(), move || {
                let blob = match keys {
                    Some(k) => match k.open(Kind::Chunk, &id.to_hex(), &blob) {
                        Ok(plain) => Bytes::from(plain),
                        Err(source) => {
                            return Err(MoverError::Corrupt {
                                url,
                                what: format!("chunk {id}"),
                                source,
                            });
                        }
                    },
                    None => blob,
                };
                match chunk::decode(&id, &blob) {
                    Ok(std::borrow::Cow::Borrowed(b)) => Ok(blob.slice_ref(b)),
                    Ok(std::borrow::Cow::Owned(v)) => Ok(Bytes::from(v)),
                    Err(source) => Err(MoverError::Corrupt {
                        url,
                        what: format!("chunk {id}"),
                        source,
                    }),
                }
            })
            .await?
    }

    // ---- manifests ----------------------------------------------------

    /// The entries of a manifest, in key order, reading a few segments ahead.
    pub fn entries(&self, segments: Vec<SegmentRef>) -> BoxStream<'static, Result<ObjectEntry>> {
        let repo = self.clone();
        stream::iter(segments)
            .map(move |s| spawned(repo.clone().read_segment(s)))
            .buffered(self.engine.limits.read_ahead.max(1))
            .map_ok(|entries| stream::iter(entries.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    pub(crate) async fn read_segment(self, s: SegmentRef) -> Result<Vec<ObjectEntry>> {
        let what = format!("segment {}", s.id);
        let plain = self.read_chunk(s.id).await?;
        let entries = segment::parse(&plain, &what).map_err(|e| self.corrupt(what.clone(), e))?;
        if entries.len() as u64 != s.entries {
            let reason = format!(
                "holds {} entries, the snapshot says {}",
                entries.len(),
                s.entries
            );
            return Err(self.corrupt(
                what.clone(),
                haul_manifest::FormatError::Invalid { what, reason },
            ));
        }
        Ok(entries)
    }

    /// Writes sorted entries as segments; returns the segment list.
    pub fn segment_sink(&self) -> SegmentSink<'_> {
        SegmentSink {
            repo: self,
            writer: SegmentWriter::new(self.config.segment_entries),
            storing: FuturesOrdered::new(),
            segments: Vec::new(),
        }
    }

    // ---- snapshots ----------------------------------------------------

    /// Names of the `.json` files in a folder of the repository, without
    /// the suffix. `op` names the listing in errors ("list snapshots of").
    pub(crate) async fn json_names(&self, dir: &str, op: &'static str) -> Result<Vec<String>> {
        let listed: Vec<_> = crate::listing::resumable(&self.loc, dir, None)
            .try_collect()
            .await
            .map_err(|e| match e {
                MoverError::Store { url, source, .. } => MoverError::Store { op, url, source },
                e => e,
            })?;
        Ok(listed
            .iter()
            .filter_map(|l| Some(l.key.rsplit('/').next()?.strip_suffix(".json")?.to_owned()))
            .collect())
    }

    /// Ids of every snapshot in the repository.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let names = self.json_names(SNAPSHOTS_DIR, "list snapshots of").await?;
        Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
    }

    pub async fn load_snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        let path = self.loc.path(&haul_manifest::snapshot_path(&id));
        let bytes = self.loc.get_bytes(&path).await;
        let bytes = bytes.map_err(|e| match e {
            object_store::Error::NotFound { .. } => MoverError::UnknownSnapshot {
                url: self.url(),
                spec: id.to_string(),
            },
            e => MoverError::store("read a snapshot from", &self.loc.url, e),
        })?;
        let bytes = self.open_sealed(Kind::Snapshot, &id.to_string(), bytes)?;
        Snapshot::from_json(&bytes, &format!("snapshot {id}"))
            .map_err(|e| self.corrupt(format!("snapshot {id}"), e))
    }

    /// Every snapshot, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let ids = self.snapshot_ids().await?;
        let mut snaps: Vec<Snapshot> = stream::iter(ids)
            .map(|id| self.load_snapshot(id))
            .buffer_unordered(self.engine.limits.read_ahead.max(1))
            .try_collect()
            .await?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(snaps)
    }

    /// Finds a snapshot by id, unique id prefix, or `latest`.
    pub async fn find_snapshot(&self, spec: &str) -> Result<Snapshot> {
        let unknown = || MoverError::UnknownSnapshot {
            url: self.url(),
            spec: spec.to_owned(),
        };
        if spec == "latest" {
            return self.snapshots().await?.pop().ok_or_else(unknown);
        }
        if let Ok(id) = spec.parse::<SnapshotId>() {
            return self.load_snapshot(id).await;
        }
        if spec.is_empty() || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let ids: Vec<SnapshotId> = self
            .snapshot_ids()
            .await?
            .into_iter()
            .filter(|id| id.to_string().starts_with(&spec.to_ascii_lowercase()))
            .collect();
        match ids.as_slice() {
            [] => Err(unknown()),
            [one] => self.load_snapshot(*one).await,
            many => Err(MoverError::AmbiguousSnapshot {
                url: self.url(),
                spec: spec.to_owned(),
                matches: many
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Commits a snapshot: its root is written last, after everything it names.
    ///
    /// A failed write may still have happened (the reply was lost): the
    /// root is read back before the failure is reported, so "committed" and
    /// "not committed" are both said only when true.
    pub async fn write_snapshot(&self, snap: &Snapshot) -> Result<()> {
        // Every chunk the root names must be readable before it exists.
        self.flush_packs().await?;
        let path = self.loc.path(&haul_manifest::snapshot_path(&snap.id));
        let json = serde_json::to_vec_pretty(snap).expect("snapshot serializes");
        let json = self.seal(Kind::Snapshot, &snap.id.to_string(), json);
        let written = self
            .put_immutable(&path, PutPayload::from(json.clone()))
            .await;
        let Err(e) = written else {
            return Ok(());
        };
        let check = match self.loc.get_bytes(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        match check {
            Ok(Some(b)) if b.as_ref() == json.as_slice() => {
                tracing::warn!(
                    "writing snapshot {} reported an error ({e}), but it is in the repository, whole",
                    snap.id
                );
                Ok(())
            }
            Ok(_) => Err(MoverError::store(
                "write the snapshot root to",
                &self.loc.url,
                e,
            )),
            Err(check) => Err(MoverError::CommitUnknown {
                url: self.url(),
                snapshot: snap.id.to_string(),
                write: e.to_string(),
                check: check.to_string(),
            }),
        }
    }

    /// Records the timing of a run (best effort for the caller to report).
    pub async fn write_run(&self, run: &RunRecord) -> Result<()> {
        let name = format!(
            "{RUNS_DIR}/{}-{}-{}.json",
            run.started.format("%Y%m%dT%H%M%SZ"),
            run.kind.as_str(),
            run.snapshot
        );
        self.write_json(&name, run).await
    }

    /// The newest `limit` run records of `kind`, oldest first. Records that
    /// cannot be read are skipped with a warning: they only feed predictions.
    pub async fn runs(&self, kind: RunKind, limit: usize) -> Result<Vec<RunRecord>> {
        let suffix = format!("-{}-", kind.as_str());
        let mut names = self.json_names(RUNS_DIR, "list run records of").await?;
        names.retain(|n| n.contains(&suffix));
        // Names start with the UTC start time, so they sort by time.
        names.sort();
        let start = names.len().saturating_sub(limit);
        let mut runs = Vec::new();
        for name in &names[start..] {
            match self
                .read_json::<RunRecord>(&format!("{RUNS_DIR}/{name}.json"))
                .await
            {
                Ok(Some(r)) => runs.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping run record {name}: {}", crate::error_chain(&e)),
            }
        }
        Ok(runs)
    }

    /// Every pause record of the repository (`pauses/`): clusters paused
    /// by backups that have not resumed them (yet, or ever).
    pub async fn pause_records(&self) -> Result<Vec<PauseRecord>> {
        let mut out = Vec::new();
        for name in self.json_names(PAUSES_DIR, "list pause records of").await? {
            if let Some(r) = self
                .read_json::<PauseRecord>(&format!("{PAUSES_DIR}/{name}.json"))
                .await?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The plan of a staged (sharded) backup, if written.
    pub async fn shard_plan(&self, staging: SnapshotId) -> Result<Option<ShardPlan>> {
        let plan: Option<ShardPlan> = self.read_json(&shard::plan_path(staging)).await?;
        if let Some(p) = &plan {
            p.split.check().map_err(|reason| {
                self.corrupt(
                    shard::plan_path(staging),
                    haul_manifest::FormatError::Invalid {
                        what: "shard plan".into(),
                        reason,
                    },
                )
            })?;
        }
        Ok(plan)
    }

    /// Every shard record of a staged backup (in shard order).
    pub async fn shard_records(&self, staging: SnapshotId) -> Result<Vec<ShardRecord>> {
        let dir = shard::staging_dir(staging);
        let mut out = Vec::new();
        for name in self.json_names(&dir, "list shard records of").await? {
            if name.starts_with("shard-")
                && let Some(r) = self
                    .read_json::<ShardRecord>(&format!("{dir}/{name}.json"))
                    .await?
            {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.shard);
        Ok(out)
    }

    /// Ids of the staged backups in the repository (committed ones are
    /// removed; these are running, failed, or abandoned).
    pub async fn staging_ids(&self) -> Result<Vec<SnapshotId>> {
        let listed: Vec<_> = crate::listing::resumable(&self.loc, shard::STAGING_DIR, None)
            .try_collect()
            .await?;
        let mut ids: Vec<SnapshotId> = listed
            .iter()
            .filter_map(|l| l.key.split('/').nth(1)?.parse().ok())
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// Removes a staged backup's plan and records.
    pub async fn remove_staging(&self, staging: SnapshotId) -> Result<()> {
        let dir = shard::staging_dir(staging);
        for name in self.json_names(&dir, "list shard records of").await? {
            self.delete(&format!("{dir}/{name}.json")).await?;
        }
        Ok(())
    }

    /// Deletes one of the repository's small documents (a pause record).
    /// A document already gone is not an error.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.loc.store.delete(&self.loc.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(MoverError::store("delete from", &self.loc.url, e)),
        }
    }

    /// Reads a small JSON document of the repository, if present.
    pub async fn read_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<Option<T>> {
        let bytes = self.loc.get_bytes(&self.loc.path(rel)).await;
        match bytes {
            Ok(b) => serde_json::from_slice(&self.open_sealed(Kind::Record, rel, b)?)
                .map(Some)
                .map_err(|e| {
                    self.corrupt(
                        rel.to_owned(),
                        haul_manifest::FormatError::Json {
                            what: rel.into(),
                            source: e,
                        },
                    )
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(MoverError::store("read from", &self.loc.url, e)),
        }
    }

    /// Writes a record (sealed as `rel`). Packs are flushed first: a record
    /// may name chunks (a restore target's manifest), and must never name
    /// one no index locates.
    pub async fn write_json<T: serde::Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        self.flush_packs().await?;
        let json = serde_json::to_vec_pretty(value).expect("document serializes");
        let json = self.seal(Kind::Record, rel, json);
        self.loc
            .store
            .put(&self.loc.path(rel), PutPayload::from(json))
            .await
            .map_err(|e| MoverError::store("write to", &self.loc.url, e))?;
        Ok(())
    }
}

/// Collects sorted entries into segments and stores each as it closes, up
/// to `read_ahead` at once.
#[derive(Debug)]
pub struct SegmentSink<'a> {
    repo: &'a Repository,
    writer: SegmentWriter,
    /// Segments being stored, in manifest order; at most `read_ahead`.
    storing: FuturesOrdered<BoxFuture<'static, Result<SegmentRef>>>,
    segments: Vec<SegmentRef>,
}

impl SegmentSink<'_> {
    /// Adds the next entry. A full segment is stored in the background: the
    /// pipeline feeding the sink keeps moving while it uploads.
    pub async fn push(&mut self, entry: &ObjectEntry) -> Result<()> {
        if let Some(seg) = self.writer.push(entry) {
            self.store(seg);
            while self.storing.len() > self.repo.engine.limits.read_ahead.max(1) {
                self.next_stored().await?;
            }
        }
        Ok(())
    }

    /// Whether a segment written before may follow as is: the writer is
    /// between segments, so writing its entries again would cut it alike.
    pub(crate) fn is_between(&self) -> bool {
        self.writer.is_between()
    }

    /// Adds a segment written before, unchanged (see [`Self::is_between`]).
    pub(crate) fn keep(&mut self, seg: SegmentRef) {
        debug_assert!(self.writer.is_between());
        self.storing
            .push_back(futures::future::ready(Ok(seg)).boxed());
    }

    fn store(&mut self, seg: segment::Segment) {
        let repo = self.repo.clone();
        self.storing.push_back(
            spawned(async move {
                let (id, _) = repo.put_plain(Bytes::from(seg.plain)).await?;
                Ok(SegmentRef {
                    id,
                    first: seg.first,
                    last: seg.last,
                    entries: seg.entries,
                    bytes: seg.bytes,
                })
            })
            .boxed(),
        );
    }

    async fn next_stored(&mut self) -> Result<bool> {
        match self.storing.next().await {
            Some(r) => {
                self.segments.push(r?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Stores the last segment and waits for every segment to be stored.
    pub async fn finish(mut self) -> Result<Vec<SegmentRef>> {
        let writer = std::mem::replace(&mut self.writer, SegmentWriter::new(1));
        if let Some(seg) = writer.finish() {
            self.store(seg);
        }
        while self.next_stored().await? {}
        Ok(self.segments)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use haul_manifest::{FORMAT_VERSION, Snapshot};
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::faults::{Faults, FaultyStore, Op};
    use crate::{Limits, StoreUrl};

    fn snapshot() -> Snapshot {
        Snapshot {
            version: FORMAT_VERSION,
            id: new_snapshot_id().unwrap(),
            time: Utc::now(),
            parent: None,
            tool: "test".into(),
            hostname: None,
            bucket: None,
            databases: Vec::new(),
            globals: None,
            helm_values: None,
            phases: Vec::new(),
            labels: Default::default(),
        }
    }

    async fn repo(name: &str, faults: Faults) -> Repository {
        let store = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), faults));
        let loc = Location::from_store(
            StoreUrl::parse(&format!("memory://{name}")).unwrap(),
            store,
            Path::default(),
        );
        Repository::init(loc, Engine::new(Limits::default()), None)
            .await
            .unwrap()
    }

    /// Chunks stored one after another in a pack come back in one ranged
    /// GET; a loose chunk among them costs one more, and the run after it one.
    #[tokio::test]
    async fn chunks_back_to_back_in_a_pack_are_read_in_one_request() {
        let store = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), Faults::new()));
        let loc = Location::from_store(
            StoreUrl::parse("memory://coalesce").unwrap(),
            store.clone(),
            Path::default(),
        );
        let repo = Repository::init(loc, Engine::new(Limits::default()), None)
            .await
            .unwrap();
        assert!(repo.config().pack.is_some());
        let mut ids = Vec::new();
        let mut plains = Vec::new();
        for i in 0..200u32 {
            let plain = Bytes::from(format!("chunk {i} ").repeat(300));
            ids.push(repo.put_plain(plain.clone()).await.unwrap().0);
            plains.push(plain);
        }
        // Incompressible and over the pack threshold: stored loose.
        let mut noise = vec![0u8; 2 << 20];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        let noise = Bytes::from(noise);
        let (loose, _) = repo.put_plain(noise.clone()).await.unwrap();
        for i in 200..300u32 {
            let plain = Bytes::from(format!("chunk {i} ").repeat(300));
            ids.push(repo.put_plain(plain.clone()).await.unwrap().0);
            plains.push(plain);
        }
        repo.flush_packs().await.unwrap();

        let before = store.count(Op::Get);
        assert_eq!(repo.read_chunks(&ids).await.unwrap(), plains);
        assert_eq!(store.count(Op::Get) - before, 1, "one pack, one request");

        let mut mixed = ids[..100].to_vec();
        mixed.push(loose);
        mixed.extend_from_slice(&ids[100..]);
        let mut want = plains[..100].to_vec();
        want.push(noise);
        want.extend_from_slice(&plains[100..]);
        let before = store.count(Op::Get);
        assert_eq!(repo.read_chunks(&mixed).await.unwrap(), want);
        assert_eq!(store.count(Op::Get) - before, 3);
    }

    /// The root's write fails, yet the root is there (its reply was lost):
    /// that is a commit. Failed for real, it is not; nothing is claimed
    /// that a read-back did not show. (Put #1 is `haul-repo.json`.)
    #[tokio::test]
    async fn an_ambiguous_commit_is_read_back_before_it_is_reported() {
        let lost = repo("commit-lost-reply", Faults::new().lose_reply(2)).await;
        let snap = snapshot();
        lost.write_snapshot(&snap).await.unwrap();
        assert_eq!(lost.load_snapshot(snap.id).await.unwrap(), snap);

        let failed = repo("commit-failed", Faults::new().fail(Op::Put, 2)).await;
        let snap = snapshot();
        assert!(matches!(
            failed.write_snapshot(&snap).await,
            Err(MoverError::Store { .. })
        ));
        assert!(failed.load_snapshot(snap.id).await.is_err());
    }
}
