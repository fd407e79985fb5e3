//! Sorted listings. Backup and restore merge a listing with a manifest in one
//! pass, so every listing must come in key order (path order, see
//! [`haul_manifest::diff::key_order`]), streamed page by page: a bucket of
//! millions of keys never sits in memory.
//!
//! Stores disagree on order. AWS S3, GCS, Azure and the in-memory store list
//! in byte order, where `a-b` comes before `a/x`; SeaweedFS lists in path
//! order, where everything under `a/` comes first. [`sorted`] accepts either
//! and yields path order: a key is held back only while keys that sort
//! before it in path order may still arrive, which in byte order can only
//! happen for keys with a byte below `/` (space, `!`..`.`) right where a
//! sibling directory begins. Pachyderm's `chunk/<hash>.<gen>` keys are held
//! for one key at most. Whatever the store does, the output is checked to be
//! strictly ascending, so a store with yet another order fails loudly
//! instead of producing a wrong plan. Local directories are walked
//! depth-first in path order.
//!
//! A whole bucket is listed with [`in_lanes`]: the key space cut into ranges
//! listed concurrently (`listing/lanes.rs` says why they join back in path
//! order), each range put in order as above, their concatenation checked
//! again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_manifest::diff::key_order;
use haul_manifest::shard::KeySplit;
use object_store::path::Path;

use crate::location::{Location, Scheme};
use crate::s3sdk::{Failed, SdkS3};
use crate::{MoverError, Result};

mod lanes;

pub use lanes::SplitHints;

/// One listed object, its key relative to the listed location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub modified: DateTime<Utc>,
}

impl haul_manifest::diff::Keyed for Listed {
    fn key(&self) -> &str {
        &self.key
    }
}

/// Lists everything under `loc` in path order, in one lane.
pub fn sorted(loc: &Location) -> BoxStream<'static, Result<Listed>> {
    let raw: BoxStream<'static, Result<Listed>> = match loc.url.scheme {
        Scheme::File => walk_sorted(loc.clone()),
        _ => resumable(loc, "", None),
    };
    to_path_order(lanes::prefetch(raw, PREFETCH), loc.url.to_string())
}

/// Lists everything under `loc` in path order, in up to `lanes` ranges
/// listed at once (see `listing/lanes.rs`), cut where `hints` suggest. The same
/// listing as [`sorted`], sooner. Local directories are walked in one lane:
/// the disk is not a round trip away.
pub fn in_lanes(
    loc: &Location,
    lanes: usize,
    hints: SplitHints,
) -> BoxStream<'static, Result<Listed>> {
    in_lanes_from(loc, lanes, hints, lanes::FIRST_PAGE)
}

/// Lists shard `k` of `split` (see `haul_manifest::shard`) in path order,
/// its ranges in up to `lanes` at once: the keys [`in_lanes`] would list
/// that fall in the shard, without listing the others. A local directory
/// is walked whole and filtered.
pub fn shard(
    loc: &Location,
    lanes: usize,
    split: &KeySplit,
    k: u32,
) -> BoxStream<'static, Result<Listed>> {
    let url = loc.url.to_string();
    if loc.url.scheme == Scheme::File {
        let split = split.clone();
        return sorted(loc)
            .try_filter(move |l| futures::future::ready(split.contains(k, &l.key)))
            .boxed();
    }
    let pieces = {
        let (loc, url) = (loc.clone(), url.clone());
        lanes::shard_parts(split, k)
            .into_iter()
            .map(move |p| to_path_order(lanes::objects(&loc, p), url.clone()))
    };
    ascending(lanes::in_order(pieces, lanes), url)
}

/// Lists every key of `loc` that is not under `dir` (a directory, ending
/// in `/`), in path order, without listing `dir`: what a backup that learns
/// of `dir`'s changes elsewhere still lists. A local directory is walked
/// whole and filtered.
pub fn outside(loc: &Location, lanes: usize, dir: &str) -> BoxStream<'static, Result<Listed>> {
    let url = loc.url.to_string();
    if loc.url.scheme == Scheme::File {
        let dir = dir.to_owned();
        return sorted(loc)
            .try_filter(move |l| futures::future::ready(!l.key.starts_with(&dir)))
            .boxed();
    }
    let pieces = {
        let (loc, url) = (loc.clone(), url.clone());
        lanes::outside_parts(dir)
            .into_iter()
            .map(move |p| to_path_order(lanes::objects(&loc, p), url.clone()))
    };
    ascending(lanes::in_order(pieces, lanes), url)
}

/// Where to cut `loc` into `n` shards balanced by bytes: from `segments`
/// (a snapshot of it), or from its first page. Returns the split and the
/// bytes each shard is expected to hold (zeros without segments).
pub async fn shard_split(
    loc: &Location,
    segments: Option<&[haul_manifest::SegmentRef]>,
    n: u32,
) -> Result<(KeySplit, Vec<u64>)> {
    lanes::shard_split(loc, segments, n).await
}

/// [`in_lanes`], with a store of fewer than `first_page` keys listed whole.
fn in_lanes_from(
    loc: &Location,
    lanes: usize,
    hints: SplitHints,
    first_page: usize,
) -> BoxStream<'static, Result<Listed>> {
    if lanes <= 1 || loc.url.scheme == Scheme::File {
        return sorted(loc);
    }
    let (loc, url) = (loc.clone(), loc.url.to_string());
    let listed = stream::once(async move {
        let parts = lanes::plan(&loc, &hints, first_page).await?;
        let url = loc.url.to_string();
        let pieces = parts
            .into_iter()
            .map(move |p| to_path_order(lanes::objects(&loc, p), url.clone()));
        Ok::<_, MoverError>(lanes::in_order(pieces, lanes))
    })
    .try_flatten()
    .boxed();
    ascending(listed, url)
}

/// Listed objects fetched ahead of the consumer: two pages of an S3 listing.
const PREFETCH: usize = 2000;

/// Times in a row a listing whose page broke off is resumed without getting
/// a key further; the waits between them double from [`RESUME_WAIT`].
const LIST_RESUMES: u32 = 5;
const RESUME_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A page of a listing that broke off: its body was cut or stalled, or
/// came back as truncated XML. object_store retries a request that fails,
/// not a body that breaks off after the answer began; every cloud client of
/// object_store words it as an error about the "list response".
fn broke_off(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
        && crate::error_chain(e).contains("list response")
}

/// What a listing asks: an S3 bucket through the AWS SDK (every key as
/// stored, see `s3sdk`), any other store through object_store.
enum Pager {
    Store {
        loc: Location,
        prefix: Path,
    },
    Sdk {
        sdk: std::sync::Arc<SdkS3>,
        /// The whole key prefix listed: the location's and `dir`'s, with `/`.
        prefix: String,
        /// The location's own prefix, with `/`: cut from every listed key.
        root: String,
    },
}

impl Pager {
    fn new(loc: &Location, dir: &str) -> Result<Self> {
        Ok(match &loc.sdk {
            Some(sdk) => {
                let root = match loc.prefix.as_ref() {
                    "" => String::new(),
                    p => format!("{p}/"),
                };
                let prefix = match dir {
                    "" => root.clone(),
                    d => format!("{root}{d}/"),
                };
                Pager::Sdk {
                    sdk: sdk.clone(),
                    prefix,
                    root,
                }
            }
            None => Pager::Store {
                prefix: match dir {
                    "" => loc.prefix.clone(),
                    d => loc.key_path(d)?,
                },
                loc: loc.clone(),
            },
        })
    }

    /// The listing from the start, or after the key `after` (relative to
    /// the location).
    fn page(&self, after: Option<&str>) -> Result<BoxStream<'static, Result<Listed, Failed>>> {
        Ok(match self {
            Pager::Store { loc, prefix } => {
                let raw = match after {
                    None => loc.store.list(Some(prefix)),
                    Some(a) => loc.store.list_with_offset(Some(prefix), &loc.key_path(a)?),
                };
                let base = loc.clone();
                raw.map(move |r| match r {
                    Ok(m) => Ok(Listed {
                        key: base.relative(&m.location),
                        size: m.size,
                        etag: m.e_tag,
                        modified: m.last_modified,
                    }),
                    Err(e) => Err(Failed {
                        transient: broke_off(&e),
                        error: e,
                    }),
                })
                .boxed()
            }
            Pager::Sdk { sdk, prefix, root } => {
                let root = root.clone();
                sdk.list(prefix.clone(), after.map(|a| format!("{root}{a}")))
                    .map(move |r| {
                        r.map(|o| Listed {
                            key: o
                                .key
                                .strip_prefix(root.as_str())
                                .unwrap_or(&o.key)
                                .to_owned(),
                            size: o.size,
                            etag: o.etag,
                            modified: o.modified,
                        })
                    })
                    .boxed()
            }
        })
    }
}

/// The listing of the directory `dir` of `loc` (`""`: all of it), after
/// the key `after` when given, resumed after the last key it gave when a
/// page breaks off or the store stops answering: a cut listing costs a
/// request, never the run. The store's order carries over: a listing
/// resumed after its last key goes on where it was, in byte or path order
/// alike.
pub(crate) fn resumable(
    loc: &Location,
    dir: &str,
    after: Option<String>,
) -> BoxStream<'static, Result<Listed>> {
    struct State {
        pager: Pager,
        last: Option<String>,
        page: Option<BoxStream<'static, Result<Listed, Failed>>>,
        failures: u32,
        done: bool,
        url: String,
    }
    let url = loc.url.to_string();
    let pager = match Pager::new(loc, dir) {
        Ok(p) => p,
        Err(e) => return stream::once(futures::future::ready(Err(e))).boxed(),
    };
    let st = State {
        pager,
        last: after,
        page: None,
        failures: 0,
        done: false,
        url,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let page = match &mut st.page {
                Some(p) => p,
                None => match st.pager.page(st.last.as_deref()) {
                    Ok(p) => st.page.insert(p),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                },
            };
            match page.next().await {
                None => return None,
                Some(Ok(l)) => {
                    st.last = Some(l.key.clone());
                    st.failures = 0;
                    return Some((Ok(l), st));
                }
                Some(Err(f)) if f.transient && st.failures < LIST_RESUMES => {
                    let wait = RESUME_WAIT * 2u32.pow(st.failures);
                    st.failures += 1;
                    tracing::warn!(
                        "listing {} broke off ({}); resuming after {} in {wait:?}",
                        st.url,
                        crate::error_chain(&f.error),
                        st.last.as_deref().unwrap_or("the start")
                    );
                    st.page = None;
                    tokio::time::sleep(wait).await;
                }
                Some(Err(f)) => {
                    st.done = true;
                    return Some((Err(MoverError::store("list", &st.url, f.error)), st));
                }
            }
        }
    })
    .boxed()
}

/// Fails the listing at the first key that does not come strictly after the
/// one before it in path order. Pieces of a listing are each put in order;
/// this checks that they were cut and joined right.
fn ascending(
    input: BoxStream<'static, Result<Listed>>,
    url: String,
) -> BoxStream<'static, Result<Listed>> {
    let mut last: Option<String> = None;
    input
        .and_then(move |item| {
            let out = match last.take() {
                Some(prev) if key_order(&prev, &item.key).is_ge() => Err(MoverError::Unsorted {
                    url: url.clone(),
                    prev,
                    key: item.key,
                }),
                _ => {
                    last = Some(item.key.clone());
                    Ok(item)
                }
            };
            futures::future::ready(out)
        })
        .boxed()
}

/// A key ordered by [`key_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathKey(String);

impl Ord for PathKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        key_order(&self.0, &other.0)
    }
}

impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Can `key` be released, given that every key still to come sorts after
/// `max_seen` in byte order? Only keys of the form `key[..j] + "/" + …`, where
/// `key[j]` is the first byte below `/`, can still precede it in path order;
/// they all sort below `key[..j] + "0"` in byte order.
fn released(key: &str, max_seen: &str) -> bool {
    match key.bytes().position(|c| c < b'/') {
        None => true,
        Some(j) => {
            let mut bound = key.as_bytes()[..j].to_vec();
            bound.push(b'/' + 1);
            max_seen.as_bytes() >= bound.as_slice()
        }
    }
}

/// Brings a byte-ordered or path-ordered listing into path order.
fn to_path_order(
    input: BoxStream<'static, Result<Listed>>,
    url: String,
) -> BoxStream<'static, Result<Listed>> {
    struct State {
        input: BoxStream<'static, Result<Listed>>,
        pending: BTreeMap<PathKey, Listed>,
        max_seen: String,
        last_out: Option<String>,
        done: bool,
        url: String,
    }
    let st = State {
        input,
        pending: BTreeMap::new(),
        max_seen: String::new(),
        last_out: None,
        done: false,
        url,
    };
    stream::try_unfold(st, |mut st| async move {
        loop {
            if let Some((k, _)) = st.pending.first_key_value() {
                if st.done || released(&k.0, &st.max_seen) {
                    let (_, item) = st.pending.pop_first().expect("non-empty");
                    if let Some(prev) = &st.last_out
                        && key_order(prev, &item.key).is_ge()
                    {
                        return Err(MoverError::Unsorted {
                            url: st.url.clone(),
                            prev: prev.clone(),
                            key: item.key,
                        });
                    }
                    st.last_out = Some(item.key.clone());
                    return Ok(Some((item, st)));
                }
            } else if st.done {
                return Ok(None);
            }
            match st.input.next().await {
                None => st.done = true,
                Some(Err(e)) => return Err(e),
                Some(Ok(item)) => {
                    if item.key.as_bytes() > st.max_seen.as_bytes() {
                        st.max_seen.clone_from(&item.key);
                    }
                    let prev = st.pending.insert(PathKey(item.key.clone()), item);
                    if let Some(dup) = prev {
                        return Err(MoverError::Unsorted {
                            url: st.url.clone(),
                            prev: dup.key.clone(),
                            key: dup.key,
                        });
                    }
                }
            }
        }
    })
    .boxed()
}

/// Depth-first walk of a local store in path order, one directory at a
/// time, with `std::fs`: every file whatever its name (object_store's own
/// listing hides names like `report#2`, taking them for its temporary
/// files). A name haul cannot carry (not UTF-8, or not a valid key) fails
/// the listing, naming it; nothing is skipped silently.
fn walk_sorted(loc: Location) -> BoxStream<'static, Result<Listed>> {
    let start = vec![Walked::Dir(loc.prefix.clone())];
    stream::try_unfold((loc, start), |(loc, mut stack)| async move {
        while let Some(item) = stack.pop() {
            match item {
                Walked::Obj(m) => return Ok(Some((m, (loc, stack)))),
                Walked::Dir(dir) => {
                    let root = std::path::PathBuf::from(&loc.url.bucket);
                    let url = loc.url.to_string();
                    let mut children =
                        tokio::task::spawn_blocking(move || read_dir(&root, &dir, &url))
                            .await
                            .map_err(|e| MoverError::Task(e.to_string()))??;
                    // Reverse path order onto the stack so the smallest pops first.
                    children.sort_by(|a, b| key_order(&b.0, &a.0));
                    stack.extend(children.into_iter().map(|(_, i)| i));
                }
            }
        }
        Ok(None)
    })
    .boxed()
}

/// An entry of a local directory being walked.
enum Walked {
    Dir(Path),
    Obj(Listed),
}

/// One directory's entries, each with the key it sorts by (`dir/` for a
/// directory). Symbolic links are followed, as object_store does.
fn read_dir(root: &std::path::Path, dir: &Path, url: &str) -> Result<Vec<(String, Walked)>> {
    let fs_dir = dir
        .parts()
        .fold(root.to_path_buf(), |p, part| p.join(part.as_ref()));
    let io = |what: String| move |source| MoverError::Io { what, source };
    let entries = match std::fs::read_dir(&fs_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.map_err(io(format!("cannot list {}", fs_dir.display())))?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot list {}", fs_dir.display())))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| MoverError::Object {
                key: format!("{url}/{dir}/{}", n.to_string_lossy()),
                reason: "its file name is not UTF-8, which no object key can carry: rename it"
                    .into(),
            })?;
        let key = if dir.as_ref().is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        let location = Path::parse(&key).map_err(|e| MoverError::Object {
            key: key.clone(),
            reason: format!("not a valid object key ({e}): rename it"),
        })?;
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_link {
            // Followed only while it stays inside the folder backed up.
            let (to, within) = (
                std::fs::canonicalize(entry.path()),
                std::fs::canonicalize(root),
            );
            if let (Ok(to), Ok(within)) = (&to, &within)
                && !to.starts_with(within)
            {
                return Err(MoverError::Object {
                    key,
                    reason: format!(
                        "a symbolic link out of the folder listed (to {}): refusing to follow it",
                        to.display()
                    ),
                });
            }
        }
        let md = match std::fs::metadata(entry.path()) {
            Ok(md) => md,
            // Gone since the directory was read, or a dangling link.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!("{url}: {key} vanished or is a dangling link: not backed up");
                continue;
            }
            Err(e) => return Err(io(format!("cannot read {}", entry.path().display()))(e)),
        };
        if md.is_dir() {
            out.push((format!("{key}/"), Walked::Dir(location)));
        } else if md.is_file() {
            let modified = md
                .modified()
                .map_err(io(format!("cannot read {}", entry.path().display())))?;
            out.push((
                key.clone(),
                Walked::Obj(Listed {
                    key,
                    modified: modified.into(),
                    size: md.len(),
                    etag: Some(local_etag(&md, modified)),
                }),
            ));
        } else {
            tracing::warn!("{url}: {key} is neither a file nor a directory: not backed up");
        }
    }
    Ok(out)
}

/// The ETag object_store gives a local file (inode, mtime in microseconds,
/// size), so snapshots taken through its listing still match.
fn local_etag(md: &std::fs::Metadata, modified: std::time::SystemTime) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = modified
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{mtime:x}-{:x}\"", md.ino(), md.len())
}

/// Fails with a clear error if the location cannot be listed (missing bucket,
/// wrong credentials, unreachable endpoint), before any work starts.
pub async fn probe(loc: &Location) -> Result<()> {
    match resumable(loc, "", None).next().await {
        None | Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e),
    }
}

/// Does a listing of `loc` show `key` under exactly this name? Lists from
/// just before it (the key without its last character), up to a page.
/// For keys a store may not hold or address as named: a HEAD or GET would
/// not tell, since it is subject to the same translation as the write.
pub(crate) async fn lists_as_named(loc: &Location, key: &str) -> Result<bool> {
    Ok(listed_as_named(loc, key).await?.is_some())
}

/// [`lists_as_named`], with what the listing says of the key.
pub(crate) async fn listed_as_named(loc: &Location, key: &str) -> Result<Option<Listed>> {
    /// Keys listed after the key's near predecessor while looking for it.
    const NEAR_KEYS: usize = 1000;
    // S3: the keys under the longest prefix of it that every store takes
    // as given (SeaweedFS answers a listing from `a//` with an `a//b` it
    // does not hold), until it is found or the listing is past it.
    if let Some(sdk) = &loc.sdk {
        const SCAN_KEYS: usize = 10_000;
        let full = loc.full_key(key);
        let root_len = full.len() - key.len();
        let prefix = full[..root_len + plain_prefix(key).len()].to_owned();
        let mut listed = sdk.list(prefix, None).take(SCAN_KEYS);
        while let Some(o) = listed.next().await {
            let o = o.map_err(|f| MoverError::store("list", loc.url.join(key), f.error))?;
            if o.key == full {
                return Ok(Some(Listed {
                    key: key.to_owned(),
                    size: o.size,
                    etag: o.etag,
                    modified: o.modified,
                }));
            }
            if o.key.as_bytes() > full.as_bytes() && key_order(&o.key, &full).is_gt() {
                break;
            }
        }
        return Ok(None);
    }
    // Elsewhere from just before it: the key shortened by a character until
    // it is a valid path.
    let mut before = key.to_owned();
    let after = loop {
        if before.pop().is_none() {
            break None;
        }
        if loc.key_path(&before).is_ok() {
            break Some(before);
        }
    };
    let listed: Vec<Listed> = resumable(loc, "", after)
        .take(NEAR_KEYS)
        .try_collect()
        .await?;
    Ok(listed.into_iter().find(|l| l.key == key))
}

/// The start of `key` before anything a store may take for something
/// else: an empty, `.` or `..` segment (cut where the segment starts), a
/// backslash or a control character.
fn plain_prefix(key: &str) -> &str {
    let mut seg_start = 0;
    for (i, c) in key.char_indices() {
        if c == '\\' || c.is_control() {
            return &key[..i];
        }
        if c == '/' {
            let seg = &key[seg_start..i];
            if seg.is_empty() || seg == "." || seg == ".." {
                return &key[..seg_start];
            }
            seg_start = i + 1;
        }
    }
    match &key[seg_start..] {
        "" | "." | ".." => &key[..seg_start],
        _ => key,
    }
}

/// Is there anything under `loc`? Returns the first key found.
pub async fn first_key(loc: &Location) -> Result<Option<String>> {
    resumable(loc, "", None)
        .next()
        .await
        .transpose()
        .map(|l| l.map(|l| l.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::{StoreConfig, StoreUrl};
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use proptest::prelude::*;

    fn listed(keys: &[String]) -> BoxStream<'static, Result<Listed>> {
        let items: Vec<Result<Listed>> = keys
            .iter()
            .map(|k| {
                Ok(Listed {
                    key: k.clone(),
                    size: 0,
                    etag: None,
                    modified: DateTime::<Utc>::MIN_UTC,
                })
            })
            .collect();
        stream::iter(items).boxed()
    }

    async fn reorder(keys: &[String]) -> Result<Vec<String>> {
        to_path_order(listed(keys), "test".into())
            .map_ok(|l| l.key)
            .try_collect()
            .await
    }

    #[tokio::test]
    async fn byte_and_path_ordered_listings_come_out_in_path_order() {
        let byte: Vec<String> = [
            "a", "a b", "a!", "a-b", "a/b", "a/b-c", "a/b/c", "dir-file", "dir/file",
        ]
        .map(String::from)
        .to_vec();
        let path: Vec<String> = [
            "a", "a/b", "a/b/c", "a/b-c", "a b", "a!", "a-b", "dir/file", "dir-file",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(reorder(&byte).await.unwrap(), path);
        assert_eq!(reorder(&path).await.unwrap(), path);
        // Any other order fails loudly.
        let bad: Vec<String> = ["b", "a"].map(String::from).to_vec();
        assert!(matches!(
            reorder(&bad).await,
            Err(MoverError::Unsorted { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_byte_or_path_sorted_set_is_reordered(set in proptest::collection::btree_set("[ab/ .-]{1,6}", 0..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let byte: Vec<String> = set.iter().cloned().collect();
            let mut path = byte.clone();
            path.sort_by(|a, b| key_order(a, b));
            prop_assert_eq!(rt.block_on(reorder(&byte)).unwrap(), path.clone());
            prop_assert_eq!(rt.block_on(reorder(&path)).unwrap(), path);
        }
    }

    #[test]
    fn a_plain_prefix_stops_before_what_a_store_may_rewrite() {
        for (key, want) in [
            ("a//b", "a/"),
            ("c/./d", "c/"),
            ("e/../f", "e/"),
            ("dir/", "dir/"),
            ("/lead", ""),
            ("odd\u{1}key", "odd"),
            ("back\\slash", "back"),
            ("x/..", "x/"),
            ("plain/key", "plain/key"),
            (".", ""),
        ] {
            assert_eq!(plain_prefix(key), want, "{key:?}");
        }
    }

    #[tokio::test]
    async fn local_walk_is_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let loc = StoreConfig::default().open(&url, false).unwrap();
        // `report#2` is what object_store's own listing takes for its
        // temporary files, and hides.
        let keys = [
            "a-c", "a/b-", "a/b/c", "a0", "b", "é/x", "Z", "a/a/a/a", "a.txt", "report#2", "d/x#1",
            "sp ace",
        ];
        for k in keys {
            // Written by hand: object_store refuses to write `report#2`.
            let path = dir.path().join(k);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let got: Vec<String> = sorted(&loc).map_ok(|l| l.key).try_collect().await.unwrap();
        let mut want: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        want.sort_by(|a, b| key_order(a, b));
        assert_eq!(got, want);
        // The same ETags as object_store's listing, where it lists a file.
        let ours: Vec<_> = walk_sorted(loc.clone()).try_collect().await.unwrap();
        let theirs: Vec<object_store::ObjectMeta> =
            loc.store.list(None).try_collect().await.unwrap();
        for m in &theirs {
            let o = ours
                .iter()
                .find(|o| o.key == m.location.as_ref())
                .expect("listed");
            assert_eq!(
                (&o.etag, o.size, o.modified),
                (&m.e_tag, m.size, m.last_modified)
            );
        }
        assert_eq!(ours.len(), theirs.len() + 2, "{theirs:?}");
    }

    #[tokio::test]
    async fn a_local_name_no_key_can_carry_fails_the_listing_by_name() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff")),
            b"x",
        )
        .unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let loc = StoreConfig::default().open(&url, false).unwrap();
        let err = sorted(&loc).try_collect::<Vec<_>>().await.unwrap_err();
        assert!(err.to_string().contains("bad\u{fffd}"), "{err}");
        assert!(crate::error_chain(&err).contains("not UTF-8"), "{err}");
    }

    // ---- lanes ------------------------------------------------------

    /// Keys that stress path order against byte order: punctuation and
    /// spaces right where a sibling directory begins, a file and a
    /// directory of one name, keys at, just below and just above bounds,
    /// keys between a range's offset and its start, unicode.
    fn tricky_keys() -> Vec<String> {
        let mut keys: Vec<String> = [
            "a",
            "a b",
            "a b/c",
            "a!",
            "a-b",
            "a.b/c",
            "a/b",
            "a/b-c",
            "a/b/c",
            "a/x",
            "a0",
            "chunk",
            "chunk!",
            "chunk-old/x",
            "chunk.txt",
            "chunk/0",
            "chunk/0/x",
            "chunk/00ab.1",
            "chunk/00ab.2",
            "chunk/00ab/x",
            "chunk/1",
            "chunk/3fa9",
            "chunk/3fa9.1",
            "chunk/3fa9/x",
            "chunk/7",
            "chunk/7\u{10FFFF}",
            "chunk/7\u{10FFFF}\u{10FFFF}",
            "chunk/7\u{10FFFF}/y",
            "chunj\u{10FFFF}\u{10FFFF}",
            "chunk/8",
            "chunk/8 x",
            "chunk/8-x",
            "chunk/8/x",
            "chunk/80",
            "chunk/a0",
            "chunk/a/z",
            "chunk/ff",
            "chunk/ff/x",
            "chunk/\u{e000}",
            "chunk/é",
            "chunk0",
            "dir-file",
            "dir/file",
            "my data/x",
            "my-data/y",
            "my/z",
            "Z",
            "z",
            "é/x",
            "éa",
            "日本/語",
        ]
        .map(String::from)
        .to_vec();
        for i in 0..120u32 {
            keys.push(hash_key(i));
        }
        keys.sort_by(|a, b| key_order(a, b));
        keys
    }

    /// A key named like Pachyderm's chunks: a hash, then a generation.
    fn hash_key(i: u32) -> String {
        let h = blake3::hash(&i.to_le_bytes()).to_hex();
        format!("chunk/{}.{}", &h[..20], i % 3)
    }

    /// A store that lists in path order the way SeaweedFS does: asked to
    /// start after `k`, it also skips everything under `k/`.
    #[derive(Debug)]
    struct PathOrdered(object_store::memory::InMemory);

    impl std::fmt::Display for PathOrdered {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "PathOrdered")
        }
    }

    impl PathOrdered {
        fn listing(
            &self,
            prefix: Option<&Path>,
            keep: impl Fn(&str) -> bool + Send + 'static,
        ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            let all = self.0.list(prefix);
            stream::once(async move {
                let mut v: Vec<object_store::ObjectMeta> = all.try_collect().await?;
                v.retain(|m| keep(m.location.as_ref()));
                v.sort_by(|a, b| key_order(a.location.as_ref(), b.location.as_ref()));
                Ok::<_, object_store::Error>(stream::iter(v.into_iter().map(Ok)))
            })
            .try_flatten()
            .boxed()
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for PathOrdered {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.listing(prefix, |_| true)
        }
        fn list_with_offset(
            &self,
            prefix: Option<&Path>,
            offset: &Path,
        ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            let offset = offset.as_ref().to_owned();
            self.listing(prefix, move |k| {
                key_order(k, &offset).is_gt() && !k.starts_with(&format!("{offset}/"))
            })
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    /// A location over `store` under the prefix `pre`, holding `keys`.
    async fn holding(
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        keys: &[String],
    ) -> Location {
        let url = StoreUrl::parse("memory://lanes/pre").unwrap();
        let loc = Location::from_store(url, store, Path::from("pre"));
        for k in keys {
            loc.store
                .put(&loc.key_path(k).unwrap(), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        loc
    }

    async fn keys_of(s: BoxStream<'static, Result<Listed>>) -> Result<Vec<String>> {
        s.map_ok(|l| l.key).try_collect().await
    }

    /// Every way to cut: no hints (a fan-out), hints at, between and beside
    /// the keys, hints that put everything in one range or in none.
    fn hint_sets(keys: &[String]) -> Vec<SplitHints> {
        let every = |n: usize| SplitHints::from_keys(keys.iter().step_by(n).cloned(), 1);
        let these = |k: &[&str]| SplitHints::from_keys(k.iter().map(|s| s.to_string()), 1);
        vec![
            SplitHints::none(),
            every(1),
            every(7),
            every(40),
            // Hash names: cut evenly through the hash space, 2 to 12 ranges.
            SplitHints::from_keys((0..12).map(hash_key), 3000),
            SplitHints::from_keys((0..2).map(hash_key), 3000),
            these(&["chunk/3fa9", "chunk/8", "chunk/80", "chunk/a0"]),
            these(&["zzzz"]),
            these(&["a/b/c", "a/b/d", "a/x"]),
            these(&["", "/", "..", "chunk/", " ", "\u{10FFFF}"]),
        ]
    }

    /// The lanes list exactly what one lane lists, on a byte-ordered store
    /// (in memory, like S3) and a path-ordered one (like SeaweedFS), for any
    /// number of lanes and any cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_list_what_one_lane_lists() {
        let all = tricky_keys();
        // The same cuts over a store where the cut directory is gone and its
        // siblings are not.
        let gone: Vec<String> = all
            .iter()
            .filter(|k| !k.starts_with("chunk/"))
            .cloned()
            .collect();
        for keys in [&all, &gone] {
            let stores: [std::sync::Arc<dyn object_store::ObjectStore>; 2] = [
                std::sync::Arc::new(object_store::memory::InMemory::new()),
                std::sync::Arc::new(PathOrdered(object_store::memory::InMemory::new())),
            ];
            for store in stores {
                let loc = holding(store, keys).await;
                assert_eq!(&keys_of(sorted(&loc)).await.unwrap(), keys, "one lane");
                for hints in hint_sets(&all) {
                    for lanes in [1, 2, 3, 16, 64] {
                        for first_page in [0, 5, 1000] {
                            let got = in_lanes_from(&loc, lanes, hints.clone(), first_page);
                            assert_eq!(
                                &keys_of(got).await.unwrap(),
                                keys,
                                "{} with {lanes} lanes, first page {first_page}, {hints:?}",
                                loc.store
                            );
                        }
                    }
                }
            }
        }
    }

    /// With the real first page: a store of fewer keys is listed by that one
    /// request; a larger one is cut, hash names about every 3,000 keys,
    /// other names over their first letter or digit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_stores_are_cut_and_small_ones_are_not() {
        use crate::faults::{Faults, FaultyStore, Op};
        let hashes: Vec<String> = (0..7000).map(hash_key).collect();
        let words: Vec<String> = (0..1500)
            .map(|i| format!("photos/{}{i}.jpg", ["cat", "dog", "owl"][i % 3]))
            .collect();
        for (keys, lists) in [
            (&hashes[..997], 1..=1),
            (&hashes[..], 8..=8),
            (&words[..], 68..=68),
        ] {
            let mut keys = keys.to_vec();
            keys.extend(["meta/x".to_owned(), "a".to_owned()]);
            keys.sort_by(|a, b| key_order(a, b));
            let store = std::sync::Arc::new(FaultyStore::new(
                std::sync::Arc::new(object_store::memory::InMemory::new()),
                Faults::new(),
            ));
            let loc = holding(store.clone(), &keys).await;
            let got = keys_of(in_lanes(&loc, 16, SplitHints::none()))
                .await
                .unwrap();
            assert_eq!(got, keys);
            let n = store.count(Op::List);
            assert!(lists.contains(&n), "{} keys: {n} listings", keys.len());
        }
    }

    /// A lane whose listing is cut midway is resumed after its last key:
    /// the same listing, whichever of the listings is cut and where. One
    /// cut again and again, without a key further, fails the whole listing:
    /// never a shorter one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_lane_is_resumed_and_a_dead_one_fails_the_listing() {
        use crate::faults::{Faults, FaultyStore, Op};
        let keys = tricky_keys();
        let hints = SplitHints::from_keys(keys.iter().step_by(9).cloned(), 1);
        let faulty = |faults| {
            std::sync::Arc::new(FaultyStore::new(
                std::sync::Arc::new(object_store::memory::InMemory::new()),
                faults,
            ))
        };
        let clean = faulty(Faults::new());
        let loc = holding(clean.clone(), &keys).await;
        assert_eq!(
            keys_of(in_lanes_from(&loc, 4, hints.clone(), 5))
                .await
                .unwrap(),
            keys
        );
        let lists = clean.count(Op::List);
        assert!(lists > 10, "{lists} listings");

        let mut resumed = 0;
        for n in 1..=lists {
            for after in [0, 1, 3] {
                let store = faulty(Faults::new().cut_list(n, after));
                let loc = holding(store.clone(), &keys).await;
                let got = keys_of(in_lanes_from(&loc, 4, hints.clone(), 5)).await;
                assert_eq!(got.unwrap(), keys, "listing {n} cut after {after}");
                resumed += usize::from(store.count(Op::List) > lists);
            }
        }
        assert!(resumed > lists as usize, "most cuts hit a lane: {resumed}");

        // One lane (and one listing) cut at once every time: it gives up.
        for lanes in [1, 4] {
            let dead = (1..=200).fold(Faults::new(), |f, n| f.cut_list(n, 0));
            let loc = holding(faulty(dead), &keys).await;
            let err = keys_of(in_lanes_from(&loc, lanes, hints.clone(), 5))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("list"), "{err}");
        }
    }

    /// Local directories are walked in one lane, whatever the lanes asked.
    #[tokio::test]
    async fn a_local_directory_lists_the_same_in_lanes() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let loc = StoreConfig::default().open(&url, false).unwrap();
        // A file cannot also be a directory here.
        let all = tricky_keys();
        let keys: Vec<String> = all
            .iter()
            .filter(|k| !all.iter().any(|o| o.starts_with(&format!("{k}/"))))
            .cloned()
            .collect();
        for k in &keys {
            loc.store
                .put(&loc.key_path(k).unwrap(), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        for lanes in [1, 2, 3, 16, 64] {
            for hints in hint_sets(&keys) {
                let got = keys_of(in_lanes(&loc, lanes, hints)).await.unwrap();
                assert_eq!(got, keys, "{lanes} lanes");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_key_set_lists_the_same_in_lanes(
            set in proptest::collection::btree_set("[ab]{0,2}[/ .0é-]{0,2}[ab/ .0é-]{0,4}", 0..60),
            cuts in proptest::collection::vec("[ab/ .0é-]{0,4}", 0..12),
            lanes in 2usize..20,
            first_page in 0usize..8,
            path_ordered in any::<bool>(),
            every in 0usize..4,
        ) {
            let mut keys: Vec<String> = set
                .into_iter()
                .filter(|k| !k.is_empty() && Path::parse(k).is_ok_and(|p| p.as_ref() == k))
                .collect();
            keys.sort_by(|a, b| key_order(a, b));
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let store: std::sync::Arc<dyn object_store::ObjectStore> = if path_ordered {
                    std::sync::Arc::new(PathOrdered(object_store::memory::InMemory::new()))
                } else {
                    std::sync::Arc::new(object_store::memory::InMemory::new())
                };
                let loc = holding(store, &keys).await;
                // Cut at random strings, or at some of the keys (a cut
                // directory most of them share, its siblings around it).
                let hints = match every {
                    0 => SplitHints::from_keys(cuts, 1),
                    n => SplitHints::from_keys(keys.iter().step_by(n).cloned(), 1),
                };
                keys_of(in_lanes_from(&loc, lanes, hints, first_page)).await
            });
            prop_assert_eq!(got.unwrap(), keys);
        }
    }
}
