//! Sorted listings. Backup and restore merge a listing with a manifest in one
//! pass, so every listing must come in key (byte) order, streamed page by
//! page: a bucket of millions of keys never sits in memory.
//!
//! S3, GCS, Azure and the in-memory store list in key order already. Local
//! directories do not; they are walked depth-first with each directory's
//! entries sorted as if directory names ended in `/`, which yields exactly
//! the byte order of the full keys.

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;

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

/// Lists everything under `loc`, in key order. Fails (rather than yield a
/// wrong plan) if the store ever returns keys out of order.
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
    let url = loc.url.to_string();
    let mut prev: Option<String> = None;
    raw.map(move |m| {
        let m = m?;
        let key = base.relative(&m.location);
        if let Some(p) = &prev {
            if p.as_bytes() >= key.as_bytes() {
                return Err(MoverError::Unsorted {
                    url: url.clone(),
                    prev: p.clone(),
                    key,
                });
            }
        }
        prev = Some(key.clone());
        Ok(Listed {
            key,
            size: m.size,
            etag: m.e_tag,
            modified: m.last_modified,
        })
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
                    // Reverse order onto the stack so the smallest pops first.
                    children.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
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

    #[tokio::test]
    async fn local_walk_is_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let loc = StoreConfig::default().open(&url, false).unwrap();
        let keys = [
            "a-c", "a/b", "a/b-", "a/b/c", "a0", "b", "é/x", "Z", "a/a/a/a",
        ];
        for k in keys {
            loc.store
                .put(&loc.path(k), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        let listed: Vec<String> = sorted(&loc).map_ok(|l| l.key).try_collect().await.unwrap();
        let mut want: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        // "a/b" is both a file and a directory on S3, not on a file system.
        want.retain(|k| k != "a/b");
        want.sort();
        let mut got = listed.clone();
        got.retain(|k| k != "a/b");
        assert_eq!(got, want);
    }
}
