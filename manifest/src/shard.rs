//! `staging/<id>/…`: a backup made by shards, before it is committed.
//!
//! A bucket too large for one machine is backed up by N processes (pods of
//! a Kubernetes Indexed Job, or local children), each over one range of the
//! key space. They share nothing but the repository:
//!
//! ```text
//!  staging/<id>/plan.json          ShardPlan: the parent and where the key space is cut
//!  staging/<id>/shard-<k>.json     ShardRecord: shard k's segments and counters
//!        │ all N present, all of the same plan
//!        ▼
//!  snapshots/<id>.json             one root: the shards' segments, concatenated in order
//! ```
//!
//! The first shard to start (or the coordinator, before any) writes the
//! plan; every shard reads it, so all cut the key space alike. A shard
//! writes its segments (chunks, like any backup's) and then its record; a
//! shard run again replaces its own record. The commit checks that every
//! shard's record is there and was made from the plan the commit reads,
//! concatenates their segments (disjoint ranges, in key order) and writes
//! one snapshot root; the staging folder is then removed. Until the commit
//! nothing is a snapshot: a missing or failed shard makes it refuse.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::diff::key_order;
use crate::{SegmentRef, SnapshotId};

/// The folder of staged shard backups, relative to the repository prefix.
pub const STAGING_DIR: &str = "staging";

/// The version of the plan and records this haul writes and reads.
pub const SHARD_VERSION: u32 = 1;

/// Where a key space is cut into shards, and into listing ranges within
/// each. Keys are relative to the listed location.
///
/// `dir` is the directory whose keys are cut (`""`, or ending in `/`);
/// `bounds` are names below it, ascending in path order, made only of
/// characters that sort above `/` (so byte and path order agree on them);
/// `splits` are the bounds where shards 1..N start (N − 1 of them, each
/// one of `bounds`, ascending; repeated when a shard is empty). Shard 0
/// also holds every key before `dir`, the last shard every key after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySplit {
    pub dir: String,
    pub bounds: Vec<String>,
    pub splits: Vec<String>,
}

impl KeySplit {
    /// How many shards the split makes.
    pub fn shards(&self) -> u32 {
        self.splits.len() as u32 + 1
    }

    /// Checks what a plan read from a repository must hold: bounds and
    /// splits ascending, splits among the bounds, `dir` a directory.
    pub fn check(&self) -> Result<(), String> {
        if !(self.dir.is_empty() || self.dir.ends_with('/')) {
            return Err(format!("cut directory {:?} does not end in /", self.dir));
        }
        let plain = |s: &String| !s.is_empty() && !s.chars().any(|c| c <= '/' || c == '\u{7f}');
        if !self.bounds.iter().all(plain) {
            return Err("a bound holds a character at or below `/`".into());
        }
        if self
            .bounds
            .windows(2)
            .any(|w| key_order(&w[0], &w[1]).is_ge())
        {
            return Err("bounds are not strictly ascending".into());
        }
        if self
            .splits
            .windows(2)
            .any(|w| key_order(&w[0], &w[1]).is_gt())
        {
            return Err("splits are not ascending".into());
        }
        if let Some(s) = self.splits.iter().find(|s| !self.bounds.contains(s)) {
            return Err(format!("split {s:?} is not one of the bounds"));
        }
        Ok(())
    }

    /// The shard (0-based) a key belongs to.
    pub fn shard_of(&self, key: &str) -> u32 {
        self.splits
            .iter()
            .take_while(|s| key_order(key, &format!("{}{s}", self.dir)).is_ge())
            .count() as u32
    }

    /// Shard `k`'s keys: at or above its start, below the next shard's
    /// (`None`: no bound on that side).
    pub fn range(&self, k: u32) -> (Option<String>, Option<String>) {
        let at = |i: usize| self.splits.get(i).map(|s| format!("{}{s}", self.dir));
        let k = k as usize;
        (
            k.checked_sub(1).and_then(at),
            if k < self.splits.len() { at(k) } else { None },
        )
    }

    /// Whether `key` is in shard `k`.
    pub fn contains(&self, k: u32, key: &str) -> bool {
        self.shard_of(key) == k
    }
}

/// `staging/<id>/plan.json`: what every shard of one backup shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub version: u32,
    /// The staging id: the id the committed snapshot will have.
    pub staging: SnapshotId,
    pub created: DateTime<Utc>,
    /// The source, without credentials.
    pub source: String,
    /// The snapshot the committed root will name as its parent, if any.
    pub parent: Option<SnapshotId>,
    /// What each shard compares the source with (its range of it): the
    /// parent, or the shards of an earlier pass of the same backup (a
    /// pre-copy round), which used the same split.
    pub base: Option<ShardBase>,
    pub split: KeySplit,
    /// Bytes each shard was expected to hold when the plan was made (from
    /// the parent; equal shares of an unknown total for a first backup).
    pub expected_bytes: Vec<u64>,
}

impl ShardPlan {
    /// A short digest of the plan: each record names the plan it was made
    /// from, so the commit can refuse records of another plan.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&json).to_hex()[..16].to_owned()
    }
}

/// The manifest shards compare the source with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardBase {
    /// A committed snapshot's bucket.
    Snapshot(SnapshotId),
    /// The records of another staging id (of the same split).
    Staging(SnapshotId),
}

/// What one shard did: `staging/<id>/shard-<k>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub version: u32,
    pub staging: SnapshotId,
    pub shard: u32,
    pub shards: u32,
    /// [`ShardPlan::digest`] of the plan the shard read.
    pub plan: String,
    pub host: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The shard's range of the manifest, in key order.
    pub segments: Vec<SegmentRef>,
    pub objects: u64,
    pub bytes: u64,
    pub stats: ShardStats,
}

/// A shard's counters, summed by the commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub objects_read: u64,
    pub bytes_read: u64,
    pub objects_new: u64,
    pub objects_changed: u64,
    pub objects_unchanged: u64,
    pub objects_removed: u64,
    pub objects_vanished: u64,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Seconds the shard's pass took.
    pub seconds: f64,
}

/// The folder of one staged backup.
pub fn staging_dir(id: SnapshotId) -> String {
    format!("{STAGING_DIR}/{id}")
}

/// Path of a staged backup's plan.
pub fn plan_path(id: SnapshotId) -> String {
    format!("{}/plan.json", staging_dir(id))
}

/// Path of shard `k`'s record.
pub fn record_path(id: SnapshotId, k: u32) -> String {
    format!("{}/shard-{k:05}.json", staging_dir(id))
}

/// A shard as the operator names it: `K/N` (K counted from 0, as
/// Kubernetes' `JOB_COMPLETION_INDEX`), or `auto/N`, which reads
/// `JOB_COMPLETION_INDEX` (passed in as `index`).
pub fn parse_shard(s: &str, index: Option<&str>) -> Result<(u32, u32), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("--shard {s:?}: expected K/N (e.g. 0/4) or auto/N"))?;
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| (1..=4096).contains(n))
        .ok_or_else(|| format!("--shard {s:?}: N must be a number from 1 to 4096"))?;
    let k = if k == "auto" {
        let i = index.ok_or_else(|| {
            format!(
                "--shard {s:?}: JOB_COMPLETION_INDEX is not set (it is in the pods of a \
                 Kubernetes Indexed Job); give the index instead, e.g. --shard 0/{n}"
            )
        })?;
        i.trim()
            .parse::<u32>()
            .map_err(|_| format!("JOB_COMPLETION_INDEX={i:?} is not a number"))?
    } else {
        k.parse::<u32>()
            .map_err(|_| format!("--shard {s:?}: K must be a number or `auto`"))?
    };
    if k >= n {
        return Err(format!(
            "--shard {s:?}: K counts from 0, so it must be below N ({n})"
        ));
    }
    Ok((k, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> KeySplit {
        KeySplit {
            dir: "chunk/".into(),
            bounds: vec!["4".into(), "8".into(), "c".into()],
            splits: vec!["4".into(), "c".into()],
        }
    }

    #[test]
    fn keys_fall_in_one_shard_in_path_order() {
        let s = split();
        assert!(s.check().is_ok());
        assert_eq!(s.shards(), 3);
        for (key, k) in [
            ("a.txt", 0),
            ("chunk", 0),
            ("chunk/0abc", 0),
            ("chunk/3fff/x", 0),
            ("chunk/4", 1),
            ("chunk/4000", 1),
            ("chunk/bfff", 1),
            ("chunk/c", 2),
            ("chunk/ffff", 2),
            // After every key under chunk/ in path order.
            ("chunk.txt", 2),
            ("chunk-old/x", 2),
            ("zzz", 2),
        ] {
            assert_eq!(s.shard_of(key), k, "{key}");
            assert!(s.contains(k, key));
        }
        assert_eq!(s.range(0), (None, Some("chunk/4".into())));
        assert_eq!(s.range(1), (Some("chunk/4".into()), Some("chunk/c".into())));
        assert_eq!(s.range(2), (Some("chunk/c".into()), None));
    }

    #[test]
    fn bad_splits_are_refused() {
        let mut s = split();
        s.splits = vec!["c".into(), "4".into()];
        assert!(s.check().is_err());
        let mut s = split();
        s.splits = vec!["5".into()];
        assert!(s.check().is_err());
        let mut s = split();
        s.bounds.push("a/b".into());
        assert!(s.check().is_err());
    }

    #[test]
    fn shards_parse() {
        assert_eq!(parse_shard("0/4", None), Ok((0, 4)));
        assert_eq!(parse_shard("3/4", None), Ok((3, 4)));
        assert_eq!(parse_shard("auto/4", Some("2")), Ok((2, 4)));
        assert!(parse_shard("4/4", None).is_err());
        assert!(
            parse_shard("auto/4", None)
                .unwrap_err()
                .contains("JOB_COMPLETION_INDEX")
        );
        assert!(parse_shard("1", None).is_err());
        assert!(parse_shard("1/0", None).is_err());
    }
}
