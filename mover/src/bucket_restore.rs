//! Restore of a snapshot's objects into a target store: plan, then execute.
//!
//! ```text
//! target listing ─┐                  ┌─ known: state says (size, ETag) holds this hash
//! target state  ──┴─ merge ─▶ target ┤
//! snapshot entries ────────── merge ─┴─▶ missing | different | unchanged | extraneous
//!                                         │ missing/different only
//!                                         ▼
//!             fetch chunks ─▶ verify blake3 ─▶ decompress ─▶ PUT (multipart when large)
//! ```
//!
//! An object of the target counts as unchanged when its size matches and its
//! content is known to be the snapshot's: its ETag is the one the snapshot
//! recorded (restoring into the source itself), or the one haul saw when it
//! last wrote or checked it there (the target state, kept in the repository).
//! Otherwise a same-size object is read and hashed, never trusted blindly.
//!
//! The plan is computed first (and is all `--dry-run` does); the execution
//! walks the same merge again, re-deciding each object from fresh listings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use haul_manifest::diff::{Joined, Keyed};
use haul_manifest::shard::KeySplit;
use haul_manifest::{
    ChunkId, ObjectEntry, SegmentRef, Snapshot, SnapshotId, TARGETS_DIR, TargetState,
};
use object_store::{ObjectStoreExt, PutPayload, PutResult};
use serde::Serialize;

use crate::bucket_backup::Shard;
use crate::listing::{self, Listed, SplitHints};
use crate::location::Addr;
use crate::multipart::MultipartGuard;
use crate::{Location, MoverError, Repository, Result, merge, spawned};

/// The plan of a restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestorePlan {
    pub objects_missing: u64,
    pub bytes_missing: u64,
    pub objects_different: u64,
    pub bytes_different: u64,
    pub objects_unchanged: u64,
    pub bytes_unchanged: u64,
    /// In the target, not in the snapshot.
    pub objects_extraneous: u64,
    pub bytes_extraneous: u64,
    /// Same-size objects whose content had to be read to compare.
    pub objects_checked: u64,
}

impl RestorePlan {
    pub fn objects_to_copy(&self) -> u64 {
        self.objects_missing + self.objects_different
    }
    pub fn bytes_to_copy(&self) -> u64 {
        self.bytes_missing + self.bytes_different
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreStats {
    pub objects_copied: u64,
    pub bytes_copied: u64,
    pub objects_skipped: u64,
    pub objects_extraneous: u64,
    pub objects_deleted: u64,
    pub objects_failed: u64,
    /// Objects that differ from the snapshot, left as they are by an
    /// add-only pass (see [`RestoreOptions::add_only`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub objects_deferred: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What [`Restore::run`] did, and the extraneous keys it found.
#[derive(Debug, Clone, Default)]
pub struct Executed {
    pub stats: RestoreStats,
    /// In the target, not in the snapshot, in key order (deleted only when
    /// the options asked for it).
    pub extraneous: Vec<String>,
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Delete target objects that are not in the snapshot.
    pub delete_extraneous: bool,
    /// Copy only what the target lacks: never overwrite a key, never delete
    /// one. The live pass of a refresh, while the target's application runs
    /// and may read any key it has.
    pub add_only: bool,
}

/// A target object, with the content hash haul knows it to have (if any).
#[derive(Debug, Clone)]
struct TargetObject {
    listed: Listed,
    known: Option<ChunkId>,
}

impl Keyed for TargetObject {
    fn key(&self) -> &str {
        &self.listed.key
    }
}

/// What to do with one key.
#[derive(Debug)]
enum Decision {
    Copy {
        entry: ObjectEntry,
        missing: bool,
    },
    Keep {
        entry: ObjectEntry,
        etag: Option<String>,
    },
    Extraneous(Listed),
}

/// The name (under `targets/`) of a target's state: a hash of its URL.
fn state_name(target: &Location) -> String {
    let h = blake3::hash(target.url.to_string().as_bytes());
    h.to_hex()[..32].to_owned()
}

/// Where the state of a target lives in the repository.
fn state_path(target: &Location) -> String {
    format!("{TARGETS_DIR}/{}.json", state_name(target))
}

/// Where shard `k` of `n` records its range of a target's state.
fn shard_state_path(target: &Location, k: u32, n: u32) -> String {
    format!("{TARGETS_DIR}/{}-shard-{k}-of-{n}.json", state_name(target))
}

/// What haul knows the target holds: the state the last restore into it
/// wrote. A restore by shards writes one state per shard (its range); the
/// newest knowledge wins: for shard `k`, its own range's state or the whole
/// one; for a whole restore, the whole state or a complete set of shard
/// states, concatenated. Only a hint: every entry is checked against the
/// target's listing before it is trusted.
async fn read_state(
    repo: &Repository,
    target: &Location,
    shard: Option<(&KeySplit, u32)>,
) -> Result<Option<TargetState>> {
    let url = target.url.to_string();
    let whole: Option<TargetState> = repo.read_json(&state_path(target)).await?;
    let whole = whole.filter(|s| s.url == url);
    let newer = |a: Option<TargetState>, b: Option<TargetState>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.time > a.time { b } else { a }),
        (a, b) => a.or(b),
    };
    if let Some((split, k)) = shard {
        let own: Option<TargetState> = repo
            .read_json(&shard_state_path(target, k, split.shards()))
            .await?;
        return Ok(newer(whole, own.filter(|s| s.url == url)));
    }
    // A complete set of shard states newer than the whole one?
    let prefix = format!("{}-shard-", state_name(target));
    let mut sets: HashMap<u32, Vec<(u32, String)>> = HashMap::new();
    for name in repo
        .json_names(TARGETS_DIR, "list restore targets of")
        .await?
    {
        if let Some((k, n)) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.split_once("-of-"))
            .and_then(|(k, n)| Some((k.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
        {
            sets.entry(n).or_default().push((k, name));
        }
    }
    let mut best = whole;
    for (n, mut names) in sets {
        if names.len() != n as usize {
            continue;
        }
        names.sort();
        let mut parts = Vec::new();
        for (_, name) in &names {
            let st: Option<TargetState> = repo
                .read_json(&format!("{TARGETS_DIR}/{name}.json"))
                .await?;
            parts.extend(st.filter(|s| s.url == url));
        }
        let oldest = parts.iter().map(|p| p.time).min();
        if parts.len() != n as usize || best.as_ref().is_some_and(|b| Some(b.time) >= oldest) {
            continue;
        }
        best = Some(TargetState {
            url: url.clone(),
            snapshot: parts[0].snapshot,
            time: oldest.unwrap_or_else(Utc::now),
            segments: parts.into_iter().flat_map(|p| p.segments).collect(),
        });
    }
    Ok(best)
}

/// Restorer of one snapshot's objects into one target.
#[derive(Debug)]
pub struct Restore<'a> {
    repo: &'a Repository,
    snapshot: &'a Snapshot,
    target: Location,
    state: Option<TargetState>,
    /// Target objects whose content was read: key → (the listing that was
    /// read, its hash). A later pass (the paused one of a refresh) trusts
    /// it only for the same listing: an object rewritten since is read again.
    checked: Mutex<HashMap<String, (Listed, ChunkId)>>,
    /// Only this shard's keys (see `haul_manifest::shard`).
    shard: Option<(KeySplit, u32)>,
}

impl<'a> Restore<'a> {
    pub async fn new(
        repo: &'a Repository,
        snapshot: &'a Snapshot,
        target: Location,
    ) -> Result<Self> {
        Self::new_shard(repo, snapshot, target, None).await
    }

    /// A restorer of shard `k` of `split` only: the keys of the snapshot
    /// and of the target in its range (the target is listed in that range
    /// only); extraneous objects are those of its range.
    pub async fn new_shard(
        repo: &'a Repository,
        snapshot: &'a Snapshot,
        target: Location,
        shard: Option<(KeySplit, u32)>,
    ) -> Result<Self> {
        if target.url.overlaps(&repo.loc.url) {
            return Err(MoverError::Overlap {
                repo: repo.url(),
                source_url: target.url.to_string(),
            });
        }
        listing::probe(&target).await?;
        let state = read_state(repo, &target, shard.as_ref().map(|(s, k)| (s, *k))).await?;
        Ok(Self {
            repo,
            snapshot,
            target,
            state,
            checked: Mutex::new(HashMap::new()),
            shard,
        })
    }

    /// Entries of `segments` (of this shard only, with one).
    fn range_entries(
        &self,
        segments: &[SegmentRef],
    ) -> futures::stream::BoxStream<'a, Result<ObjectEntry>> {
        match &self.shard {
            None => self.repo.entries(segments.to_vec()),
            Some((split, k)) => {
                let sh = Shard { split, index: *k };
                let (split, k) = (split.clone(), *k);
                self.repo
                    .entries(sh.segments(segments))
                    .try_filter(move |e| futures::future::ready(split.contains(k, &e.key)))
                    .boxed()
            }
        }
    }

    fn entries(&self) -> futures::stream::BoxStream<'a, Result<ObjectEntry>> {
        match &self.snapshot.bucket {
            Some(b) => self.range_entries(&b.segments),
            None => stream::empty().boxed(),
        }
    }

    /// The target listing joined with what haul knows of the target's content.
    fn target_objects(&self) -> futures::stream::BoxStream<'a, Result<TargetObject>> {
        let state_entries = match &self.state {
            Some(s) => self.range_entries(&s.segments),
            None => stream::empty().boxed(),
        };
        // The snapshot's segments cut the target's listing: a target being
        // restored into holds about the snapshot's keys.
        let hints = self
            .snapshot
            .bucket
            .as_ref()
            .map_or_else(SplitHints::none, |b| SplitHints::from_segments(&b.segments));
        let lanes = self.repo.engine.limits.lanes();
        let target = match &self.shard {
            None => listing::in_lanes(&self.target, lanes, hints),
            Some((split, k)) => listing::shard(&self.target, lanes, split, *k),
        };
        merge::join(target, state_entries)
            .try_filter_map(|j| {
                futures::future::ready(Ok(match j {
                    Joined::Left(listed) => Some(TargetObject {
                        listed,
                        known: None,
                    }),
                    Joined::Right(_) => None,
                    Joined::Both(listed, st) => {
                        let known = st.matches_listing(
                            listed.size,
                            listed.etag.as_deref(),
                            Some(listed.modified),
                        );
                        Some(TargetObject {
                            known: known.then_some(st.hash),
                            listed,
                        })
                    }
                }))
            })
            .boxed()
    }

    /// Decides each key of the snapshot and the target, in key order.
    fn decisions(&self) -> futures::stream::BoxStream<'_, Result<Decision>> {
        merge::join(self.entries(), self.target_objects())
            .map_ok(move |j| async move {
                Ok(match j {
                    Joined::Left(entry) => Decision::Copy {
                        entry,
                        missing: true,
                    },
                    Joined::Right(t) => Decision::Extraneous(t.listed),
                    Joined::Both(entry, t) => self.decide(entry, t).await?,
                })
            })
            .try_buffered(self.repo.engine.limits.window)
            .boxed()
    }

    async fn decide(&self, entry: ObjectEntry, t: TargetObject) -> Result<Decision> {
        let keep = |entry: ObjectEntry| Decision::Keep {
            entry,
            etag: t.listed.etag.clone(),
        };
        if entry.size != t.listed.size {
            return Ok(Decision::Copy {
                entry,
                missing: false,
            });
        }
        if let Some(h) = t.known {
            return Ok(if h == entry.hash {
                keep(entry)
            } else {
                Decision::Copy {
                    entry,
                    missing: false,
                }
            });
        }
        // Restoring into the store the snapshot came from: same ETag, same object.
        let same_store = self
            .snapshot
            .bucket
            .as_ref()
            .is_some_and(|b| b.url == self.target.url.to_string());
        if same_store
            && entry.matches_listing(
                t.listed.size,
                t.listed.etag.as_deref(),
                Some(t.listed.modified),
            )
        {
            return Ok(keep(entry));
        }
        let known = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&entry.key)
            .filter(|(seen, _)| same_version(seen, &t.listed))
            .map(|(_, h)| *h);
        let hash = match known {
            Some(h) => h,
            None => {
                // Unknown content of the right size: read and hash it.
                let (repo, target, key) =
                    (self.repo.clone(), self.target.clone(), entry.key.clone());
                let h = spawned(hash_object(repo, target, key)).await?;
                self.checked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(entry.key.clone(), (t.listed.clone(), h));
                h
            }
        };
        if hash == entry.hash {
            Ok(keep(entry))
        } else {
            Ok(Decision::Copy {
                entry,
                missing: false,
            })
        }
    }

    /// Computes the plan without changing anything.
    pub async fn plan(&self) -> Result<RestorePlan> {
        let mut plan = RestorePlan::default();
        let mut d = self.decisions();
        while let Some(dec) = d.try_next().await? {
            match dec {
                Decision::Copy {
                    entry,
                    missing: true,
                } => {
                    plan.objects_missing += 1;
                    plan.bytes_missing += entry.size;
                }
                Decision::Copy {
                    entry,
                    missing: false,
                } => {
                    plan.objects_different += 1;
                    plan.bytes_different += entry.size;
                }
                Decision::Keep { entry, .. } => {
                    plan.objects_unchanged += 1;
                    plan.bytes_unchanged += entry.size;
                }
                Decision::Extraneous(l) => {
                    plan.objects_extraneous += 1;
                    plan.bytes_extraneous += l.size;
                }
            }
        }
        plan.objects_checked = self.checked.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        Ok(plan)
    }

    /// Copies what is missing or different; deletes extraneous objects when
    /// asked; records the target's state for the next restore.
    pub async fn execute(&self, opts: &RestoreOptions, plan: &RestorePlan) -> Result<RestoreStats> {
        Ok(self.run(opts, Some(plan)).await?.stats)
    }

    /// [`Self::execute`], also returning the extraneous keys it found
    /// (deleted or not), for a caller that deletes them later (a refresh,
    /// after its swap) without listing the target again. `plan` only sizes
    /// the progress report: a pass without one decides from its own listing.
    pub async fn run(&self, opts: &RestoreOptions, plan: Option<&RestorePlan>) -> Result<Executed> {
        let engine = &self.repo.engine;
        let (objects, bytes) = plan.map_or((0, 0), |p| (p.objects_to_copy(), p.bytes_to_copy()));
        engine.progress.start("restore", objects, bytes);
        let stats = Mutex::new(RestoreStats::default());
        let failures: Mutex<Vec<(String, MoverError)>> = Mutex::new(Vec::new());
        let extraneous: Mutex<Vec<Listed>> = Mutex::new(Vec::new());
        // Whether this run wrote anything, and the ETag → key of what it
        // wrote under a key a store may normalise (only those can come back
        // under another name): not one entry per object copied.
        let wrote_any = AtomicBool::new(false);
        let written: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
        let max_errors = engine.limits.max_object_errors;
        // One object not restored: counted, and the run goes on until too
        // many have failed.
        let fail = |key: &str, e: MoverError| {
            tracing::error!("{key}: not restored: {}", crate::error_chain(&e));
            let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
            f.push((key.to_owned(), e));
            if f.len() >= max_errors {
                return Err(MoverError::ObjectsFailed {
                    failed: f.len(),
                    first: format!(
                        "stopped after {max_errors} failures; {}: {}",
                        f[0].0,
                        crate::error_chain(&f[0].1)
                    ),
                });
            }
            Ok(())
        };

        let mut outcomes = self
            .decisions()
            .map_ok(|dec| async {
                Ok::<_, MoverError>(match dec {
                    Decision::Keep { entry, etag } => {
                        stats
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .objects_skipped += 1;
                        Some(ObjectEntry {
                            etag,
                            chunks: Vec::new(),
                            ..entry
                        })
                    }
                    Decision::Extraneous(l) => {
                        stats
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .objects_extraneous += 1;
                        extraneous.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                        None
                    }
                    Decision::Copy { missing: false, .. } if opts.add_only => {
                        stats
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .objects_deferred += 1;
                        None
                    }
                    Decision::Copy { entry, .. } => match spawned(copy_object(
                        self.repo.clone(),
                        self.target.clone(),
                        entry.clone(),
                    ))
                    .await
                    {
                        Ok(put) => {
                            wrote_any.store(true, Ordering::Relaxed);
                            if let Some(etag) = &put.e_tag
                                && may_be_normalised(&entry.key)
                            {
                                written
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(etag.clone(), entry.key.clone());
                            }
                            if let Err(e) = self.stored_as_named(&entry.key, entry.size).await {
                                fail(&entry.key, e)?;
                                return Ok(None);
                            }
                            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                            s.objects_copied += 1;
                            s.bytes_copied += entry.size;
                            engine.progress.add(1, entry.size);
                            Some(ObjectEntry {
                                etag: put.e_tag,
                                modified: None,
                                chunks: Vec::new(),
                                ..entry
                            })
                        }
                        Err(e)
                            if matches!(
                                e,
                                MoverError::Corrupt { .. } | MoverError::Object { .. }
                            ) =>
                        {
                            fail(&entry.key, e)?;
                            None
                        }
                        Err(e) => return Err(e),
                    },
                })
            })
            .try_buffered(engine.limits.window);

        // Record what the target now holds, in key order, as it happens.
        let mut sink = self.repo.segment_sink();
        while let Some(state_entry) = outcomes.try_next().await? {
            if let Some(e) = state_entry {
                sink.push(&e).await?;
            }
        }
        drop(outcomes);
        let segments: Vec<SegmentRef> = sink.finish().await?;
        let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
        let extraneous = extraneous.into_inner().unwrap_or_else(|p| p.into_inner());
        let written = written.into_inner().unwrap_or_else(|p| p.into_inner());
        let extraneous = self
            .not_written_here(extraneous, wrote_any.into_inner(), &written, &mut failures)
            .await?;
        stats.objects_failed = failures.len() as u64;

        if opts.delete_extraneous && !opts.add_only && failures.is_empty() {
            stats.objects_deleted = self.delete_keys(&extraneous).await?;
        }
        self.save_state(self.snapshot.id, segments).await?;
        if let Some((key, e)) = failures.first() {
            return Err(MoverError::ObjectsFailed {
                failed: failures.len(),
                first: format!("{key}: {}", crate::error_chain(e)),
            });
        }
        Ok(Executed { stats, extraneous })
    }

    /// A key some store may store under another name (`a\\b`, `a//b`,
    /// `a/./b`, a control character, ...) is looked for in a listing after
    /// it is written (a HEAD would not tell: Azurite normalises the name it
    /// is asked for too). A target that normalised it fails the key, by
    /// name, instead of holding it silently under another.
    /// The listed size must be the size written: SeaweedFS turns `dir/`
    /// into a directory and lists it empty.
    async fn stored_as_named(&self, key: &str, size: u64) -> Result<()> {
        if !may_be_normalised(key) {
            return Ok(());
        }
        let _r = self.repo.engine.request().await;
        let reason = match listing::listed_as_named(&self.target, key).await? {
            Some(l) if l.size == size => return Ok(()),
            Some(l) => format!(
                "written ({size} bytes), but the target lists it with {} bytes: it does not hold \
                 keys like this one as objects",
                l.size
            ),
            None => "written, but the target does not list it under this name: it normalises \
                     keys like this one"
                .into(),
        };
        Err(MoverError::Object {
            key: key.to_owned(),
            reason,
        })
    }

    /// The extraneous keys that are still what the listing showed: a key
    /// whose object changed since was written during this run, by haul (a
    /// store that normalises keys, such as Azurite turning `a\b` into `a/b`,
    /// stored a key haul wrote under this other name) or by someone else,
    /// and is never deleted. A normalised key is a failure of the key haul
    /// wrote: the target cannot hold it as it is (`written` holds the keys
    /// a store may normalise, by the ETag their write returned). Nothing to
    /// check when the run wrote nothing.
    async fn not_written_here(
        &self,
        extraneous: Vec<Listed>,
        wrote_any: bool,
        written: &HashMap<String, String>,
        failures: &mut Vec<(String, MoverError)>,
    ) -> Result<Vec<String>> {
        if !wrote_any {
            return Ok(extraneous.into_iter().map(|l| l.key).collect());
        }
        let now: Vec<(Listed, Option<String>)> = stream::iter(extraneous)
            .map(|l| async move {
                let _r = self.repo.engine.request().await;
                let addr = self.target.addr(&l.key)?;
                match self.target.head_at(&addr).await {
                    Ok(m) => Ok((l, m.etag)),
                    Err(object_store::Error::NotFound { .. }) => Ok((l, None)),
                    Err(e) => Err(MoverError::store(
                        "check an extraneous object of",
                        self.target.url.join(&l.key),
                        e,
                    )),
                }
            })
            .buffered(self.repo.engine.limits.window.max(1))
            .try_collect()
            .await?;
        let mut keep = Vec::new();
        for (l, etag) in now {
            match etag {
                // Gone meanwhile: nothing to delete.
                None => {}
                Some(e) if l.etag.as_ref() == Some(&e) => keep.push(l.key),
                Some(e) => match written.get(&e) {
                    Some(wrote) => {
                        tracing::error!("{wrote}: the target stored it as {}", l.key);
                        let failure = MoverError::Object {
                            key: wrote.clone(),
                            reason: format!(
                                "the target stored it as {:?}: this store cannot hold the key as it is \
                                 (kept, not deleted as extraneous)",
                                l.key
                            ),
                        };
                        // Said more precisely than when it was written.
                        match failures.iter_mut().find(|(k, _)| k == wrote) {
                            Some(f) => f.1 = failure,
                            None => failures.push((wrote.clone(), failure)),
                        }
                    }
                    None => tracing::warn!(
                        "{}: rewritten during the restore by someone else: not deleted",
                        l.key
                    ),
                },
            }
        }
        Ok(keep)
    }

    /// Deletes these keys from the target (extraneous ones a pass found).
    /// Returns how many.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<u64> {
        // Never through a link out of a local target.
        for k in keys {
            self.target.check_no_link(k)?;
        }
        let n = keys.len() as u64;
        let mut paths = Vec::new();
        let mut others = Vec::new();
        for k in keys {
            match self.target.addr(k)? {
                Addr::Path(p) => paths.push(Ok(p)),
                a => others.push((k, a)),
            }
        }
        let url = self.target.url.to_string();
        self.target
            .store
            .delete_stream(stream::iter(paths).boxed())
            .try_for_each(|_| futures::future::ready(Ok(())))
            .await
            .map_err(|e| MoverError::store("delete extraneous objects from", &url, e))?;
        for (k, a) in others {
            self.target
                .delete_at(&a)
                .await
                .map_err(|e| MoverError::store("delete", self.target.url.join(k), e))?;
        }
        Ok(n)
    }

    async fn save_state(&self, snapshot: SnapshotId, segments: Vec<SegmentRef>) -> Result<()> {
        let state = TargetState {
            url: self.target.url.to_string(),
            snapshot,
            time: Utc::now(),
            segments,
        };
        let path = match &self.shard {
            None => state_path(&self.target),
            Some((split, k)) => shard_state_path(&self.target, *k, split.shards()),
        };
        self.repo.write_json(&path, &state).await
    }
}

fn check_size(entry: &ObjectEntry, got: u64) -> Result<()> {
    if got != entry.size {
        return Err(MoverError::Object {
            key: entry.key.clone(),
            reason: format!(
                "its chunks hold {got} bytes, the snapshot says {}",
                entry.size
            ),
        });
    }
    Ok(())
}

/// Keys that some store keeps under another name: a backslash (Azure and
/// Azurite turn it into `/`), empty, `.` or `..` segments, a leading or
/// trailing `/`, control characters.
fn may_be_normalised(key: &str) -> bool {
    key.contains('\\')
        || key.chars().any(char::is_control)
        || key.starts_with('/')
        || key.ends_with('/')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
}

/// A failed write. A store that refuses one of the keys some stores cannot
/// hold (SeaweedFS refuses `c/./d` with 400) fails that object, by name,
/// and the restore goes on; any other failure (credentials, a missing
/// bucket, an unreachable store) stops it as before.
fn write_error(
    key: &str,
    op: &'static str,
    url: &crate::StoreUrl,
    e: object_store::Error,
) -> MoverError {
    let systemic = matches!(
        e,
        object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotFound { .. }
    );
    if may_be_normalised(key) && !systemic {
        return MoverError::Object {
            key: key.to_owned(),
            reason: format!(
                "the target refused this key ({}): it cannot hold keys like this one",
                crate::error_chain(&e)
            ),
        };
    }
    MoverError::store(op, url, e)
}

/// The same version of an object: same size, ETag and modification time.
fn same_version(a: &Listed, b: &Listed) -> bool {
    a.size == b.size && a.etag == b.etag && a.modified == b.modified
}

/// Reads and hashes a target object (to compare content of unknown origin).
async fn hash_object(repo: Repository, target: Location, key: String) -> Result<ChunkId> {
    let _r = repo.engine.request().await;
    let url = target.url.join(&key);
    let fail = |e| MoverError::store("read", &url, e);
    let mut h = blake3::Hasher::new();
    match target.addr(&key)? {
        Addr::Path(p) => {
            let mut body = target.store.get(&p).await.map_err(fail)?.into_stream();
            while let Some(piece) = body.next().await {
                h.update(&piece.map_err(fail)?);
            }
        }
        // Through the SDK, in ranges: never the whole object in memory.
        a => {
            const PIECE: u64 = 8 << 20;
            let head = target.head_at(&a).await.map_err(fail)?;
            let mut at = 0;
            while at < head.size {
                let end = (at + PIECE).min(head.size);
                let piece = target
                    .get_at(&a, Some(at..end), head.etag.clone())
                    .await
                    .map_err(fail)?;
                h.update(&piece);
                at = end;
            }
        }
    }
    Ok(ChunkId::from(h.finalize()))
}

/// Writes one object; the object appears only if every chunk verified.
/// Runs as its own task (see `spawned`); so do its chunk reads and part
/// uploads, which hold permits while the loop below waits on others.
async fn copy_object(repo: Repository, target: Location, entry: ObjectEntry) -> Result<PutResult> {
    target.check_no_link(&entry.key)?;
    let entry = &entry;
    let engine = &repo.engine;
    let addr = target.addr(&entry.key)?;
    let url = target.url.join(&entry.key);
    let ids = entry.chunk_ids().to_vec();
    let chunk_size = repo.config.object_chunk_size;
    let _memory = engine.reserve_object(entry.size, chunk_size).await;
    let chunks = stream::iter(ids)
        .map(|id| {
            let r = repo.clone();
            spawned(async move { r.read_chunk(id).await })
        })
        .buffered(engine.limits.object_parts);

    if entry.size <= engine.limits.multipart_threshold {
        let parts: Vec<Bytes> = chunks.try_collect().await?;
        check_size(entry, parts.iter().map(|b| b.len() as u64).sum())?;
        let _r = engine.request().await;
        return target
            .put_at(&addr, PutPayload::from_iter(parts))
            .await
            .map_err(|e| write_error(&entry.key, "write", &url, e));
    }

    // From here on the guard aborts the upload on any way out but `complete`:
    // an error below, or this future dropped (a sibling failed, the task was
    // aborted). Never a half-written object or an orphaned upload behind.
    let mut upload = {
        let _r = engine.request().await;
        let started = target
            .put_multipart_at(&addr)
            .await
            .map_err(|e| write_error(&entry.key, "start an upload of", &url, e))?;
        MultipartGuard::new(started, &url)
    };
    let sent = async {
        let mut chunks = std::pin::pin!(chunks);
        let mut in_flight = FuturesUnordered::new();
        let mut part: Vec<Bytes> = Vec::new();
        let mut part_len = 0u64;
        let mut total = 0u64;
        loop {
            let next = chunks.try_next().await?;
            if let Some(c) = &next {
                part_len += c.len() as u64;
                total += c.len() as u64;
                part.push(c.clone());
            }
            if part_len >= engine.limits.part_size || (next.is_none() && part_len > 0) {
                while in_flight.len() >= engine.limits.object_parts {
                    in_flight.try_next().await?;
                }
                let permit = engine.request().await;
                let fut = upload.put_part(PutPayload::from_iter(std::mem::take(&mut part)));
                let part_url = url.to_string();
                in_flight.push(spawned(async move {
                    let r = fut
                        .await
                        .map_err(|e| MoverError::store("upload a part of", part_url, e));
                    drop(permit);
                    r
                }));
                part_len = 0;
            }
            if next.is_none() {
                break;
            }
        }
        check_size(entry, total)?;
        while in_flight.try_next().await?.is_some() {}
        Ok(())
    }
    .await;
    if let Err(e) = sent {
        if let Err(abort) = upload.abort().await {
            tracing::warn!("could not abort the upload of {url}: {abort}");
        }
        return Err(e);
    }
    let _r = engine.request().await;
    // A failed complete is aborted by the guard before it returns.
    upload
        .complete()
        .await
        .map_err(|e| MoverError::store("complete the upload of", &url, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use haul_manifest::FORMAT_VERSION;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::faults::{Faults, FaultyStore, Op, Stall, Uploads};
    use crate::{Engine, Limits, StoreConfig, StoreUrl, new_snapshot_id};

    /// Large enough for three parts: two 8 MiB chunks, then 2 MiB.
    const BIG: usize = 18 << 20;

    /// Deterministic incompressible bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// A repository holding a snapshot of `big` (multipart) and `small` (one
    /// PUT), and an empty target behind a [`FaultyStore`] with `faults`.
    async fn setup(
        name: &str,
        faults: Faults,
    ) -> (Repository, Snapshot, Location, Arc<FaultyStore>) {
        let cfg = StoreConfig::default();
        let open = |what: &str| {
            cfg.open(
                &StoreUrl::parse(&format!("memory://{name}-{what}")).unwrap(),
                true,
            )
            .unwrap()
        };
        let src = open("src");
        for (key, data) in [("big", noise(BIG, 1)), ("small", noise(1000, 2))] {
            src.store
                .put(&src.path(key), PutPayload::from(data))
                .await
                .unwrap();
        }
        // Anything above 1 MiB goes multipart, in parts of S3's smallest size.
        let limits = Limits {
            multipart_threshold: 1 << 20,
            part_size: 5 << 20,
            ..Limits::default()
        };
        let repo = Repository::init(open("repo"), Engine::new(limits), None)
            .await
            .unwrap();
        let backed_up = crate::bucket_backup::backup(&repo, &src, None)
            .await
            .unwrap();
        let snapshot = Snapshot {
            version: FORMAT_VERSION,
            id: new_snapshot_id().unwrap(),
            time: Utc::now(),
            parent: None,
            tool: "test".into(),
            hostname: None,
            bucket: Some(backed_up.record),
            databases: Vec::new(),
            globals: None,
            helm_values: None,
            phases: Vec::new(),
            labels: Default::default(),
        };
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), faults));
        let target = Location::from_store(
            StoreUrl::parse(&format!("memory://{name}-target")).unwrap(),
            faulty.clone(),
            Path::default(),
        );
        (repo, snapshot, target, faulty)
    }

    async fn restore(repo: &Repository, snapshot: &Snapshot, target: Location) -> Result<()> {
        let r = Restore::new(repo, snapshot, target).await?;
        let plan = r.plan().await?;
        r.execute(&RestoreOptions::default(), &plan).await?;
        Ok(())
    }

    /// Waits up to 10 s (real time) for `done`.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    fn ended(completed: u64, aborted: u64) -> Uploads {
        Uploads {
            started: 1,
            completed,
            aborted,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_upload_is_completed_and_nothing_is_aborted() {
        let (repo, snap, target, store) = setup("mp-ok", Faults::new()).await;
        restore(&repo, &snap, target).await.unwrap();
        assert_eq!(store.uploads(), ended(1, 0));
        assert_eq!((store.count(Op::PutPart), store.count(Op::Abort)), (3, 0));
        let big = store.get(&Path::from("big")).await.unwrap().bytes().await;
        assert_eq!(big.unwrap().as_ref(), noise(BIG, 1).as_slice());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_part_aborts_the_upload() {
        let (repo, snap, target, store) =
            setup("mp-part", Faults::new().fail(Op::PutPart, 2)).await;
        let err = restore(&repo, &snap, target).await.unwrap_err();
        assert!(
            crate::error_chain(&err).contains("upload a part of"),
            "{err}"
        );
        assert_eq!(store.uploads(), ended(0, 1));
        assert!(store.head(&Path::from("big")).await.is_err(), "no object");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_complete_aborts_the_upload() {
        let (repo, snap, target, store) =
            setup("mp-complete", Faults::new().fail(Op::Complete, 1)).await;
        let err = restore(&repo, &snap, target).await.unwrap_err();
        assert!(
            crate::error_chain(&err).contains("complete the upload of"),
            "{err}"
        );
        assert_eq!(store.uploads(), ended(0, 1));
    }

    /// The restore is dropped while a part hangs (as when a sibling fails or
    /// the command is interrupted): no error path runs, the guard aborts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restore_dropped_mid_upload_aborts_the_upload() {
        let (repo, snap, target, store) = setup(
            "mp-drop",
            Faults::new().stall(Op::PutPart, 2, Stall::Forever),
        )
        .await;
        let task = tokio::spawn(async move { restore(&repo, &snap, target).await });
        eventually("the second part", || store.count(Op::PutPart) >= 2).await;
        assert_eq!(store.uploads().open(), 1);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        eventually("the abort", || store.uploads().aborted == 1).await;
        assert_eq!(store.uploads(), ended(0, 1));
    }

    /// A refresh reads a same-size object of unknown content while live and
    /// remembers what it found; the paused pass trusts that only for the
    /// same version: an object rewritten in between is read again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checked_object_rewritten_since_is_read_again() {
        let (repo, snap, target, store) = setup("recheck", Faults::new()).await;
        let small = Path::from("small");
        let put = |data: Vec<u8>| {
            let (store, small) = (store.clone(), small.clone());
            async move { store.put(&small, PutPayload::from(data)).await.unwrap() }
        };
        // Staging holds the snapshot's `small` (unknown to haul) and a key
        // of its own.
        put(noise(1000, 2)).await;
        store
            .put(&Path::from("own"), PutPayload::from(vec![1u8; 10]))
            .await
            .unwrap();
        let r = Restore::new(&repo, &snap, target).await.unwrap();
        let plan = r.plan().await.unwrap();
        assert_eq!(
            (plan.objects_checked, plan.objects_unchanged),
            (1, 1),
            "{plan:?}"
        );
        let gets = store.count(Op::Get);
        // The running application rewrites it, same size, other bytes.
        put(noise(1000, 3)).await;
        let done = r.run(&RestoreOptions::default(), None).await.unwrap();
        assert_eq!(done.stats.objects_copied, 2, "big, and small again");
        assert_eq!(done.extraneous, ["own"], "found, and kept");
        assert_eq!(done.stats.objects_deleted, 0);
        assert!(store.count(Op::Get) > gets, "small was read again");
        let got = store.get(&small).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), noise(1000, 2).as_slice());
        assert_eq!(r.delete_keys(&done.extraneous).await.unwrap(), 1);
        assert!(store.head(&Path::from("own")).await.is_err());
    }
}
