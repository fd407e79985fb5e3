//! Prune: delete what no snapshot references, in two steps and without a
//! lock (the protocol is in [`haul_manifest::prune`]).
//!
//! ```text
//! prune:  T0 ─▶ roots + restore-target records ─▶ referenced (stored names)
//!            ─▶ listing of chunks/, packs/, index/ (with sizes and times)
//!            ─▶ sweep each mark older than the grace period:
//!                 copy the referenced blobs of its packs into new packs,
//!                 write one index of every pack that stays, delete the old
//!                 indexes, then the packs and loose chunks still unreferenced
//!                 and written before the mark, then the mark
//!            ─▶ mark what is unreferenced now (time T0)
//! backup: marks ─▶ a marked chunk counts as absent: stored again
//! ```
//!
//! Every step leaves a valid repository if it is killed: a new index is
//! written before the old ones go, and an index never names a pack after
//! the pack is deleted without another index naming the pack's copy.
//! One prune at a time: two sweeping at once could each rewrite the index
//! from a listing the other is changing, so each records itself under
//! `pruning/` and refuses to start beside a live one.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use haul_manifest::crypto::Kind;
use haul_manifest::pack::{self, PACKS_DIR, PackEntry, PackId, PackWriter};
use haul_manifest::prune::{PRUNE_DIR, PRUNE_MARK_VERSION, PruneMark, mark_path};
use haul_manifest::{
    CHUNKS_DIR, ChunkId, FormatError, RUNS_DIR, RunKind, Snapshot, TARGETS_DIR, TargetState,
};
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;

use super::{Repository, random};
use crate::{MoverError, Result};

/// A pack is repacked (its referenced chunks copied, the pack deleted) once
/// at least this share of its bytes is unreferenced, in percent.
pub const REPACK_UNUSED_PERCENT: u64 = 20;
/// Run records kept per kind (the newest): downtime predictions read a few.
pub const KEEP_RUNS: usize = 100;

/// What prune may do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long a mark waits before its sweep: longer than any backup runs.
    pub grace: std::time::Duration,
    /// Count and report only; write and delete nothing.
    pub dry_run: bool,
    /// Where this runs, recorded in the mark for the operator.
    pub host: String,
    /// Snapshots to count as gone (a dry run of `forget --prune`).
    pub forgetting: Vec<haul_manifest::SnapshotId>,
}

/// What prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub repository: String,
    pub dry_run: bool,
    pub grace_s: f64,
    /// Snapshots forgotten first (`haul forget --prune`); 0 for `haul prune`.
    pub snapshots_removed: u64,
    pub snapshots: u64,
    /// Chunks the snapshots and restore-target records reference.
    pub chunks_referenced: u64,
    /// Chunks deleted by sweeps (loose ones and those in deleted packs).
    pub chunks_deleted: u64,
    /// Bytes deleted, less the bytes of packs written to keep referenced
    /// chunks of repacked packs.
    pub bytes_freed: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    pub indexes_written: u64,
    pub indexes_deleted: u64,
    /// Marks swept this run.
    pub marks_swept: u64,
    /// The mark made this run: chunks and packs, and their bytes.
    pub marked_chunks: u64,
    pub marked_packs: u64,
    pub marked_bytes: u64,
    /// Marks waiting for their grace period, and the earliest time one is due.
    pub marks_pending: u64,
    pub next_sweep: Option<DateTime<Utc>>,
    pub runs_deleted: u64,
    /// Incomplete multipart uploads aborted in the repository's bucket
    /// (and, from the command, in restore targets).
    pub uploads_aborted: u64,
    /// Unreferenced chunks and packs still under Object Lock retention:
    /// left for a prune after `locked_until`.
    pub locked: u64,
    pub locked_until: Option<DateTime<Utc>>,
}

/// The folder of running prunes' records.
pub const PRUNING_DIR: &str = "pruning";
/// A running prune's record older than this many hours is stale.
pub const PRUNE_STALE_AFTER_H: i64 = 6;

/// `pruning/<time>-<id>.json`: a prune running now.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Pruning {
    host: String,
    pid: u32,
    time: DateTime<Utc>,
}

/// Chunks and packs some mark names: backups do not reuse them.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    pub(crate) loose: HashSet<ChunkId>,
    pub(crate) packs: HashSet<PackId>,
}

/// One listed object: size and last modification.
#[derive(Debug, Clone, Copy)]
struct Obj {
    size: u64,
    modified: DateTime<Utc>,
}

/// What the repository holds, as listed.
#[derive(Debug, Default)]
struct Inventory {
    loose: HashMap<ChunkId, Obj>,
    packs: HashMap<PackId, Obj>,
    /// Every index: its path and the packs it names.
    indexes: Vec<(String, Vec<PackEntry>)>,
}

impl Inventory {
    /// The blobs of each pack, as the indexes say (a pack named twice:
    /// either entry; they are the same pack).
    fn pack_blobs(&self) -> HashMap<PackId, &PackEntry> {
        let mut out = HashMap::new();
        for (_, entries) in &self.indexes {
            for e in entries {
                out.entry(e.pack).or_insert(e);
            }
        }
        out
    }
}

impl Repository {
    /// Until when an object written at `modified` is under the
    /// repository's Object Lock retention (`None`: it is not, or no more).
    pub fn locked_until(&self, modified: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = self.config.object_lock?.until(modified);
        (until > Utc::now()).then_some(until)
    }

    /// Until when the object at `rel` is locked (one HEAD; `None` without
    /// Object Lock, or once the retention has passed).
    pub async fn object_locked_until(&self, rel: &str) -> Result<Option<DateTime<Utc>>> {
        if self.config.object_lock.is_none() {
            return Ok(None);
        }
        let _r = self.engine.request().await;
        match self.loc.store.head(&self.loc.path(rel)).await {
            Ok(meta) => Ok(self.locked_until(meta.last_modified)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(MoverError::store("look at", &self.loc.url, e)),
        }
    }

    /// The chunks and packs of every mark, loaded once per handle: a backup
    /// stores a marked chunk again rather than reuse it.
    pub(crate) async fn marks(&self) -> Result<&Marks> {
        self.marks
            .get_or_try_init(|| async {
                let mut m = Marks::default();
                // Boxed: every chunk check awaits this; keep its future small.
                for (_, mark) in Box::pin(self.load_marks()).await? {
                    m.loose.extend(mark.loose);
                    m.packs.extend(mark.packs);
                }
                Ok::<_, MoverError>(m)
            })
            .await
    }

    async fn load_marks(&self) -> Result<Vec<(String, PruneMark)>> {
        let mut out = Vec::new();
        for name in self.json_names(PRUNE_DIR, "list prune marks of").await? {
            let rel = format!("{PRUNE_DIR}/{name}.json");
            let Some(mark) = self.read_json::<PruneMark>(&rel).await? else {
                continue;
            };
            if mark.version > PRUNE_MARK_VERSION {
                return Err(self.corrupt(
                    rel.clone(),
                    FormatError::TooNew {
                        what: rel,
                        found: mark.version,
                        supported: PRUNE_MARK_VERSION,
                    },
                ));
            }
            out.push((rel, mark));
        }
        Ok(out)
    }

    /// Sweeps the marks older than the grace period, then marks what no
    /// snapshot references now. With a grace of 0, the new mark is swept
    /// at once (safe only while no backup runs).
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let mut report = PruneReport {
            repository: self.url(),
            dry_run: opts.dry_run,
            grace_s: opts.grace.as_secs_f64(),
            ..Default::default()
        };
        self.flush_packs().await?;
        if opts.dry_run {
            self.prune_passes(opts, &mut report).await?;
            return Ok(report);
        }
        let mine = self.begin_prune(opts).await?;
        let done = self.prune_passes(opts, &mut report).await;
        // Whatever happened: a record left behind only makes the next
        // prune on this host check that this process is gone.
        let ended = self.delete(&mine).await;
        done?;
        ended?;
        Ok(report)
    }

    async fn prune_passes(&self, opts: &PruneOptions, report: &mut PruneReport) -> Result<()> {
        crate::failpoint::hit("prune-start")
            .await
            .map_err(|p| MoverError::Task(format!("failpoint {p}: injected failure")))?;
        let marked = self.prune_pass(opts, report, true).await?;
        if marked && opts.grace.is_zero() && !opts.dry_run {
            // The roots again: one may have been committed since T0.
            self.prune_pass(opts, report, false).await?;
        }
        if !opts.dry_run {
            report.runs_deleted = self.delete_old_runs().await?;
            // Uploads a killed backup left: older than the grace period,
            // so none of a backup still running.
            let before = grace_before(opts.grace);
            report.uploads_aborted = self.loc.abort_stale_uploads(before).await?;
        }
        Ok(())
    }

    /// Records this prune under `pruning/` and refuses to go on while
    /// another is running: two sweeping at once could each rewrite the
    /// index from a listing the other is changing. Not a lock a dead
    /// process leaves behind: a record of a process gone from this host,
    /// or older than [`PRUNE_STALE_AFTER_H`] hours, is removed. Returns
    /// this prune's record, to delete at the end.
    async fn begin_prune(&self, opts: &PruneOptions) -> Result<String> {
        let others = self.prunes_running(opts, None).await?;
        if let Some((_, p)) = others.first() {
            return Err(self.busy(p));
        }
        let now = Utc::now();
        let rel = format!(
            "{PRUNING_DIR}/{}-{}.json",
            now.format("%Y%m%dT%H%M%S%.6fZ"),
            &ChunkId(random()?).to_hex()[..12]
        );
        let me = Pruning {
            host: opts.host.clone(),
            pid: std::process::id(),
            time: now,
        };
        self.write_json(&rel, &me).await?;
        // Two that started together: the one whose record sorts first goes on.
        let others = self.prunes_running(opts, Some(&rel)).await?;
        if let Some((_, p)) = others.iter().find(|(r, _)| r.as_str() < rel.as_str()) {
            let e = self.busy(p);
            self.delete(&rel).await?;
            return Err(e);
        }
        Ok(rel)
    }

    fn busy(&self, p: &Pruning) -> MoverError {
        MoverError::Busy {
            url: self.url(),
            reason: format!(
                "another prune is running on {} (pid {}, since {}): run one prune at a time; \
                 if it died on another machine, its record expires {PRUNE_STALE_AFTER_H} hours \
                 after it started",
                p.host,
                p.pid,
                p.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }

    /// The prunes running now, by record, other than `mine`; stale records
    /// are deleted on the way.
    async fn prunes_running(
        &self,
        opts: &PruneOptions,
        mine: Option<&str>,
    ) -> Result<Vec<(String, Pruning)>> {
        let mut out = Vec::new();
        let stale_before = Utc::now() - chrono::Duration::hours(PRUNE_STALE_AFTER_H);
        for name in self
            .json_names(PRUNING_DIR, "list running prunes of")
            .await?
        {
            let rel = format!("{PRUNING_DIR}/{name}.json");
            if Some(rel.as_str()) == mine {
                continue;
            }
            let Some(p) = self.read_json::<Pruning>(&rel).await? else {
                continue;
            };
            let gone_here =
                p.host == opts.host && !std::path::Path::new(&format!("/proc/{}", p.pid)).exists();
            if p.time < stale_before || gone_here {
                tracing::warn!(
                    "removing the record of a prune that is no longer running ({} pid {})",
                    p.host,
                    p.pid
                );
                self.delete(&rel).await?;
                continue;
            }
            out.push((rel, p));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// One look at the repository: sweep what is due, then (if `mark`)
    /// mark. Returns whether a mark was written.
    async fn prune_pass(
        &self,
        opts: &PruneOptions,
        report: &mut PruneReport,
        mark: bool,
    ) -> Result<bool> {
        let t0 = Utc::now();
        let progress = &self.engine.progress;
        progress.start("prune: reading snapshots", 0, 0);
        let mut snaps = self.snapshots().await?;
        snaps.retain(|s| !opts.forgetting.contains(&s.id));
        report.snapshots = snaps.len() as u64;
        let referenced = self.referenced(&snaps).await?;
        report.chunks_referenced = referenced.len() as u64;
        progress.start("prune: listing the repository", 0, 0);
        let mut inv = self.inventory().await?;
        let marks = self.load_marks().await?;
        let grace = chrono::Duration::from_std(opts.grace).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let (due, pending): (Vec<_>, Vec<_>) = marks
            .into_iter()
            .partition(|(_, m)| m.time.checked_add_signed(grace).is_some_and(|t| t <= now));
        report.marks_pending = pending.len() as u64;
        report.next_sweep = pending
            .iter()
            .filter_map(|(_, m)| m.time.checked_add_signed(grace))
            .min();
        if !due.is_empty() {
            progress.start("prune: sweeping", 0, 0);
            self.sweep(&due, &referenced, &mut inv, opts.dry_run, report)
                .await?;
        }
        if !mark {
            return Ok(false);
        }
        // Mark what is unreferenced now and no pending mark names yet.
        let mut already: HashSet<ChunkId> = HashSet::new();
        for (_, m) in &pending {
            already.extend(m.loose.iter().copied());
            already.extend(m.packs.iter().copied());
        }
        let mut new = PruneMark {
            version: PRUNE_MARK_VERSION,
            time: t0,
            host: opts.host.clone(),
            pid: std::process::id(),
            loose: Vec::new(),
            packs: Vec::new(),
            bytes: 0,
        };
        let lock = |report: &mut PruneReport, obj: &Obj| match self.locked_until(obj.modified) {
            Some(until) => {
                report.locked += 1;
                report.locked_until = report.locked_until.max(Some(until));
                true
            }
            None => false,
        };
        for (name, obj) in &inv.loose {
            if !referenced.contains_key(name) && !already.contains(name) && obj.modified < t0 {
                if lock(report, obj) {
                    continue;
                }
                new.loose.push(*name);
                new.bytes += obj.size;
            }
        }
        let blobs = inv.pack_blobs();
        for (id, obj) in &inv.packs {
            if already.contains(id) || obj.modified >= t0 {
                continue;
            }
            let unused = match blobs.get(id) {
                // Not in any index: a killed backup's pack.
                None => obj.size,
                Some(e) => unreferenced(e, &referenced).map(|b| u64::from(b.len)).sum(),
            };
            if unused > 0 && unused * 100 >= obj.size * REPACK_UNUSED_PERCENT {
                if lock(report, obj) {
                    continue;
                }
                new.packs.push(*id);
                new.bytes += unused;
                report.marked_chunks += blobs
                    .get(id)
                    .map_or(0, |e| unreferenced(e, &referenced).count() as u64);
            }
        }
        report.marked_chunks += new.loose.len() as u64;
        report.marked_packs = new.packs.len() as u64;
        report.marked_bytes = new.bytes;
        if new.loose.is_empty() && new.packs.is_empty() {
            return Ok(false);
        }
        new.loose.sort();
        new.packs.sort();
        if !opts.dry_run {
            let id = ChunkId(random()?).to_hex();
            self.write_json(&mark_path(t0, &id[..16]), &new).await?;
            report.marks_pending += 1;
            let due = t0.checked_add_signed(grace);
            report.next_sweep = match (report.next_sweep, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(true)
    }

    /// Deletes what `due` marks name and is still unreferenced and older
    /// than its mark; repacks the referenced chunks of marked packs first.
    async fn sweep(
        &self,
        due: &[(String, PruneMark)],
        referenced: &HashMap<ChunkId, ChunkId>,
        inv: &mut Inventory,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<()> {
        let blobs = inv.pack_blobs();
        let mut loose_gone: Vec<ChunkId> = Vec::new();
        let mut packs_gone: Vec<PackId> = Vec::new();
        for (_, m) in due {
            for name in &m.loose {
                if referenced.contains_key(name) {
                    continue;
                }
                if let Some(obj) = inv
                    .loose
                    .get(name)
                    .filter(|o| o.modified < m.time && self.locked_until(o.modified).is_none())
                {
                    loose_gone.push(*name);
                    report.chunks_deleted += 1;
                    report.bytes_freed += obj.size;
                }
            }
            for id in &m.packs {
                if let Some(obj) = inv
                    .packs
                    .get(id)
                    .filter(|o| o.modified < m.time && self.locked_until(o.modified).is_none())
                {
                    packs_gone.push(*id);
                    report.bytes_freed += obj.size;
                    report.chunks_deleted += blobs
                        .get(id)
                        .map_or(0, |e| unreferenced(e, referenced).count() as u64);
                }
            }
        }
        loose_gone.sort();
        loose_gone.dedup();
        packs_gone.sort();
        packs_gone.dedup();
        let gone: HashSet<PackId> = packs_gone.iter().copied().collect();

        // The referenced chunks of the packs that go, less those a pack
        // that stays (or a loose chunk that stays) holds too: copied first.
        let mut live: Vec<(PackId, Vec<pack::Blob>)> = Vec::new();
        let mut needed: HashSet<ChunkId> = HashSet::new();
        for id in &packs_gone {
            if let Some(e) = blobs.get(id) {
                let l: Vec<pack::Blob> = e
                    .blobs
                    .iter()
                    .filter(|b| referenced.contains_key(&b.name))
                    .copied()
                    .collect();
                needed.extend(l.iter().map(|b| b.name));
                live.push((*id, l));
            }
        }
        if !needed.is_empty() {
            let loose_going: HashSet<&ChunkId> = loose_gone.iter().collect();
            for n in inv.loose.keys() {
                if !loose_going.contains(n) {
                    needed.remove(n);
                }
            }
            for (id, e) in &blobs {
                if !gone.contains(id) && inv.packs.contains_key(id) {
                    for b in &e.blobs {
                        needed.remove(&b.name);
                    }
                }
            }
        }
        drop(blobs);
        let mut written: Vec<PackEntry> = Vec::new();
        let mut writer: Option<PackWriter> = None;
        let pack_size = self.config.pack.map_or(8 << 20, |p| p.size as usize);
        for (id, blobs) in live {
            let copy: Vec<pack::Blob> = blobs
                .into_iter()
                .filter(|b| needed.contains(&b.name))
                .collect();
            if copy.is_empty() {
                continue;
            }
            report.packs_repacked += 1;
            if dry_run {
                continue;
            }
            let whole = self.get_whole(&pack::pack_path(&id)).await?;
            for b in copy {
                // Once: a chunk in two packs that go is copied from the first.
                if !needed.remove(&b.name) {
                    continue;
                }
                let range = b.offset as usize..(b.offset as usize + b.len as usize);
                let Some(blob) = whole.get(range) else {
                    return Err(self.corrupt(
                        format!("pack {}", id.short()),
                        FormatError::Invalid {
                            what: format!("pack {}", id.short()),
                            reason: "shorter than its index says: repair it before pruning".into(),
                        },
                    ));
                };
                // Checked before it is copied: damage is never spread.
                let plain_id = referenced.get(&b.name).copied().unwrap_or(b.name);
                self.decode_blob(plain_id, Bytes::copy_from_slice(blob))
                    .await?;
                let mut w = match writer.take() {
                    Some(w) => w,
                    None => PackWriter::new(ChunkId(random()?), pack_size + pack_size / 8),
                };
                w.push(b.name, &[blob]);
                if w.len() >= pack_size {
                    written.push(self.put_pack(w).await?);
                } else {
                    writer = Some(w);
                }
            }
        }
        if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
            written.push(self.put_pack(w).await?);
        }
        report.packs_written += written.len() as u64;
        let now = Utc::now();
        for e in &written {
            let size = e.blobs.iter().map(|b| u64::from(b.len)).sum();
            inv.packs.insert(
                e.pack,
                Obj {
                    size,
                    modified: now,
                },
            );
        }
        for e in &written {
            report.bytes_freed = report
                .bytes_freed
                .saturating_sub(e.blobs.iter().map(|b| u64::from(b.len)).sum());
        }
        report.packs_deleted += packs_gone.len() as u64;
        report.marks_swept += due.len() as u64;
        if dry_run {
            return Ok(());
        }

        // One index of every pack that stays, then the old indexes, then
        // the packs, then the loose chunks, then the marks.
        let dangling = inv
            .indexes
            .iter()
            .flat_map(|(_, es)| es.iter())
            .any(|e| !inv.packs.contains_key(&e.pack));
        if !packs_gone.is_empty() || !written.is_empty() || dangling {
            let mut stay: Vec<PackEntry> = written;
            let mut seen: HashSet<PackId> = stay.iter().map(|e| e.pack).collect();
            for (_, es) in &inv.indexes {
                for e in es {
                    if !gone.contains(&e.pack)
                        && inv.packs.contains_key(&e.pack)
                        && seen.insert(e.pack)
                    {
                        stay.push(e.clone());
                    }
                }
            }
            let mut new_indexes = Vec::new();
            for part in stay.chunks(1000) {
                let name = pack::index_path(&ChunkId(random()?));
                let bytes = self.seal(Kind::Record, &name, pack::encode(part));
                self.put_raw(&name, bytes).await?;
                report.indexes_written += 1;
                new_indexes.push((name, part.to_vec()));
            }
            let old: Vec<String> = inv.indexes.iter().map(|(p, _)| p.clone()).collect();
            report.indexes_deleted += old.len() as u64;
            self.delete_all(old).await?;
            inv.indexes = new_indexes;
        }
        // A test stops here: the index is rewritten, nothing else deleted.
        crate::failpoint::hit("prune-sweep")
            .await
            .map_err(|p| MoverError::Task(format!("failpoint {p}: injected failure")))?;
        self.delete_all(packs_gone.iter().map(pack::pack_path).collect())
            .await?;
        for id in &packs_gone {
            inv.packs.remove(id);
        }
        self.delete_all(loose_gone.iter().map(haul_manifest::chunk_path).collect())
            .await?;
        for name in &loose_gone {
            inv.loose.remove(name);
        }
        self.delete_all(due.iter().map(|(p, _)| p.clone()).collect())
            .await?;
        Ok(())
    }

    /// Stored names of every chunk a snapshot, a restore-target record or
    /// a staged shard's record references, with the chunk's id. Any error stops the prune: nothing
    /// is deleted on a partial view.
    async fn referenced(&self, snaps: &[Snapshot]) -> Result<HashMap<ChunkId, ChunkId>> {
        let mut ids = Names {
            repo: self,
            map: HashMap::new(),
        };
        for snap in snaps {
            for d in &snap.databases {
                ids.extend(d.chunk_lists.iter().copied());
                ids.extend(self.dump_chunks(d).await?);
            }
            ids.extend(snap.helm_values);
            if let Some(g) = &snap.globals {
                ids.extend(g.chunks.iter().copied());
            }
            if let Some(b) = &snap.bucket {
                ids.extend(b.segments.iter().map(|s| s.id));
                let mut entries = self.entries(b.segments.clone());
                while let Some(e) = entries.try_next().await? {
                    ids.extend(e.chunk_ids().iter().copied());
                }
            }
        }
        for t in self.target_states().await? {
            ids.extend(t.segments.iter().map(|s| s.id));
        }
        // Shards of a backup not committed yet (running, or failed and to
        // be re-run): what they stored is kept as if committed.
        for staging in self.staging_ids().await? {
            for r in self.shard_records(staging).await? {
                ids.extend(r.segments.iter().map(|s| s.id));
                let mut entries = self.entries(r.segments.clone());
                while let Some(e) = entries.try_next().await? {
                    ids.extend(e.chunk_ids().iter().copied());
                }
            }
        }
        Ok(ids.map)
    }

    /// Lists loose chunks, packs and indexes (reading every index).
    async fn inventory(&self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        let listed: Vec<_> = crate::listing::resumable(&self.loc, CHUNKS_DIR, None)
            .try_collect()
            .await?;
        for l in listed {
            if let Some(name) = l.key.rsplit('/').next().and_then(|n| n.parse().ok()) {
                inv.loose.insert(
                    name,
                    Obj {
                        size: l.size,
                        modified: l.modified,
                    },
                );
            }
        }
        if self.config.pack.is_none() {
            return Ok(inv);
        }
        let listed: Vec<_> = crate::listing::resumable(&self.loc, PACKS_DIR, None)
            .try_collect()
            .await?;
        for l in listed {
            if let Some(id) = l.key.rsplit('/').next().and_then(|n| n.parse().ok()) {
                inv.packs.insert(
                    id,
                    Obj {
                        size: l.size,
                        modified: l.modified,
                    },
                );
            }
        }
        inv.indexes = self.read_indexes().await?;
        Ok(inv)
    }

    /// Every restore-target record (`targets/`).
    async fn target_states(&self) -> Result<Vec<TargetState>> {
        let mut out = Vec::new();
        for name in self
            .json_names(TARGETS_DIR, "list restore targets of")
            .await?
        {
            let rel = format!("{TARGETS_DIR}/{name}.json");
            out.extend(self.read_json::<TargetState>(&rel).await?);
        }
        Ok(out)
    }

    /// The URLs of the restore targets haul has written (`targets/`).
    pub async fn target_urls(&self) -> Result<Vec<String>> {
        let mut urls: Vec<String> = self
            .target_states()
            .await?
            .into_iter()
            .map(|t| t.url)
            .collect();
        urls.sort();
        urls.dedup();
        Ok(urls)
    }

    /// Keeps the newest [`KEEP_RUNS`] run records of each kind.
    async fn delete_old_runs(&self) -> Result<u64> {
        let names = self.json_names(RUNS_DIR, "list run records of").await?;
        let mut old = Vec::new();
        for kind in [RunKind::Backup, RunKind::Restore] {
            let suffix = format!("-{}-", kind.as_str());
            let mut mine: Vec<&String> = names.iter().filter(|n| n.contains(&suffix)).collect();
            // Names start with the UTC start time: they sort by time.
            mine.sort();
            let n = mine.len().saturating_sub(KEEP_RUNS);
            old.extend(mine[..n].iter().map(|n| format!("{RUNS_DIR}/{n}.json")));
        }
        let n = old.len() as u64;
        self.delete_all(old).await?;
        Ok(n)
    }

    async fn get_whole(&self, rel: &str) -> Result<Bytes> {
        let _r = self.engine.request().await;
        self.loc
            .get_bytes(&self.loc.path(rel))
            .await
            .map_err(|e| MoverError::store("read from", &self.loc.url, e))
    }

    async fn put_raw(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let _r = self.engine.request().await;
        self.put_immutable(&self.loc.path(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| MoverError::store("write to", &self.loc.url, e))
    }

    async fn put_pack(&self, w: PackWriter) -> Result<PackEntry> {
        let name = pack::pack_path(&w.id);
        let (entry, bytes) = w.finish(|t| self.seal(Kind::Record, &name, t));
        self.put_raw(&name, bytes).await?;
        Ok(entry)
    }

    /// Deletes objects (relative paths), many per request where the store
    /// can; one already gone is no error.
    async fn delete_all(&self, rels: Vec<String>) -> Result<()> {
        if rels.is_empty() {
            return Ok(());
        }
        let paths: Vec<_> = rels.iter().map(|r| Ok(self.loc.path(r))).collect();
        let _r = self.engine.request().await;
        self.loc
            .store
            .delete_stream(stream::iter(paths).boxed())
            .map(|r| match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            })
            .try_collect::<Vec<()>>()
            .await
            .map_err(|e| MoverError::store("delete from", &self.loc.url, e))?;
        Ok(())
    }
}

/// The time a grace period before now began (the earliest time there is,
/// for a grace longer than the calendar).
pub fn grace_before(grace: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| Utc::now().checked_sub_signed(g))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Referenced chunks by stored name, with their ids, collected as they are
/// found (one map, not a set of ids and then a map).
struct Names<'a> {
    repo: &'a Repository,
    map: HashMap<ChunkId, ChunkId>,
}

impl Extend<ChunkId> for Names<'_> {
    fn extend<I: IntoIterator<Item = ChunkId>>(&mut self, ids: I) {
        for id in ids {
            self.map.insert(self.repo.chunk_name(&id), id);
        }
    }
}

/// The blobs of a pack that no snapshot references.
fn unreferenced<'a>(
    e: &'a PackEntry,
    referenced: &'a HashMap<ChunkId, ChunkId>,
) -> impl Iterator<Item = &'a pack::Blob> {
    e.blobs.iter().filter(|b| !referenced.contains_key(&b.name))
}
