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

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_manifest::diff::key_order;
use object_store::ObjectMeta;
use object_store::path::Path;

use tokio::sync::mpsc;

use crate::engine::AbortOnDrop;
use crate::location::{Location, Scheme};
use crate::{MoverError, Result};

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

/// Lists everything under `loc` in path order.
pub fn sorted(loc: &Location) -> BoxStream<'static, Result<Listed>> {
    let base = loc.clone();
    let raw: BoxStream<'static, Result<ObjectMeta>> = match loc.url.scheme {
        Scheme::File => walk_sorted(loc.clone()),
        _ => {
            let url = loc.url.to_string();
            loc.store
                .list(Some(&loc.prefix))
                .map_err(move |e| MoverError::store("list", &url, e))
                .boxed()
        }
    };
    let listed = prefetch(raw, PREFETCH)
        .map_ok(move |m| Listed {
            key: base.relative(&m.location),
            size: m.size,
            etag: m.e_tag,
            modified: m.last_modified,
        })
        .boxed();
    to_path_order(listed, loc.url.to_string())
}

/// Listed objects fetched ahead of the consumer: two pages of an S3 listing.
const PREFETCH: usize = 2000;

/// Drives `input` in its own task, up to `ahead` items ahead of the consumer,
/// so a listing's next page is already on its way while the current one is
/// merged and planned (a listing is otherwise fetched only when pulled).
/// The task stops when the stream is dropped; if it dies, the stream ends
/// with an error, never early: a short listing would read as deletions.
fn prefetch<T: Send + 'static>(
    input: BoxStream<'static, Result<T>>,
    ahead: usize,
) -> BoxStream<'static, Result<T>> {
    enum State<T> {
        Idle(BoxStream<'static, Result<T>>),
        Running(mpsc::Receiver<Result<T>>, AbortOnDrop<()>),
        Done,
    }
    stream::unfold(State::Idle(input), move |st| async move {
        let (mut rx, mut task) = match st {
            State::Idle(mut input) => {
                let (tx, rx) = mpsc::channel(ahead);
                let task = tokio::spawn(async move {
                    while let Some(item) = input.next().await {
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                });
                (rx, AbortOnDrop(task))
            }
            State::Running(rx, task) => (rx, task),
            State::Done => return None,
        };
        match rx.recv().await {
            Some(item) => Some((item, State::Running(rx, task))),
            None => match (&mut task.0).await {
                Ok(()) => None,
                Err(e) => Some((
                    Err(MoverError::Task(format!("listing stopped: {e}"))),
                    State::Done,
                )),
            },
        }
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

/// Depth-first walk of a local store, one directory's listing at a time.
fn walk_sorted(loc: Location) -> BoxStream<'static, Result<ObjectMeta>> {
    enum Item {
        Dir(Path),
        Obj(ObjectMeta),
    }
    // A stack of pending items, top = next in order.
    let start = vec![Item::Dir(loc.prefix.clone())];
    stream::try_unfold((loc, start), |(loc, mut stack)| async move {
        while let Some(item) = stack.pop() {
            match item {
                Item::Obj(m) => return Ok(Some((m, (loc, stack)))),
                Item::Dir(dir) => {
                    let prefix = (!dir.as_ref().is_empty()).then_some(&dir);
                    let listed = match loc.store.list_with_delimiter(prefix).await {
                        Ok(l) => l,
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(MoverError::store("list", &loc.url, e)),
                    };
                    let mut children: Vec<(String, Item)> = listed
                        .objects
                        .into_iter()
                        .map(|m| (m.location.as_ref().to_owned(), Item::Obj(m)))
                        .chain(
                            listed
                                .common_prefixes
                                .into_iter()
                                .map(|p| (format!("{p}/"), Item::Dir(p))),
                        )
                        .collect();
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

/// Fails with a clear error if the location cannot be listed (missing bucket,
/// wrong credentials, unreachable endpoint), before any work starts.
pub async fn probe(loc: &Location) -> Result<()> {
    let mut s = loc.store.list(Some(&loc.prefix));
    match s.next().await {
        None | Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(MoverError::store("list", &loc.url, e)),
    }
}

/// Is there anything under `loc`? Returns the first key found.
pub async fn first_key(loc: &Location) -> Result<Option<String>> {
    let mut s = loc.store.list(Some(&loc.prefix));
    match s.next().await {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(loc.relative(&m.location))),
        Some(Err(e)) => Err(MoverError::store("list", &loc.url, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::{StoreConfig, StoreUrl};
    use object_store::{ObjectStoreExt, PutPayload};
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

    #[tokio::test]
    async fn prefetch_passes_everything_through_in_order() {
        let keys: Vec<String> = (0..5000).map(|i| format!("k/{i:06}")).collect();
        let got: Vec<String> = prefetch(listed(&keys), 7)
            .map_ok(|l| l.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got, keys);
    }

    /// A listing whose task dies must end in an error: ending early would
    /// read as every remaining object deleted.
    #[tokio::test]
    async fn prefetch_reports_a_dead_listing_instead_of_ending_early() {
        let keys: Vec<String> = (0..3).map(|i| format!("k/{i}")).collect();
        let dying = listed(&keys)
            .chain(stream::once(async { panic!("the listing task dies") }))
            .boxed();
        let got: Vec<Result<Listed>> = prefetch(dying, 2).collect().await;
        assert_eq!(got.len(), 4, "three keys, then the error");
        assert!(got[..3].iter().all(|r| r.is_ok()));
        let err = got[3].as_ref().unwrap_err().to_string();
        assert!(err.contains("listing stopped"), "{err}");
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

    #[tokio::test]
    async fn local_walk_is_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let loc = StoreConfig::default().open(&url, false).unwrap();
        let keys = [
            "a-c", "a/b-", "a/b/c", "a0", "b", "é/x", "Z", "a/a/a/a", "a.txt",
        ];
        for k in keys {
            loc.store
                .put(&loc.key_path(k).unwrap(), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        let got: Vec<String> = sorted(&loc).map_ok(|l| l.key).try_collect().await.unwrap();
        let mut want: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        want.sort_by(|a, b| key_order(a, b));
        assert_eq!(got, want);
    }
}
