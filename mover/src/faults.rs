//! Test support: an [`ObjectStore`] that makes the store it wraps misbehave
//! on cue, and counts what it was asked to do. haul itself never uses it.
//!
//! Real stores fail in ways a clean in-memory store never shows: a request
//! fails, a listing is cut off half way, a GET body ends early because the
//! connection dropped, a request never answers. Wrap any store (usually
//! [`InMemory`](object_store::memory::InMemory)) in a [`FaultyStore`], tell
//! it which operation to spoil with [`Faults`], run the code under test
//! against it, then ask it what happened: how often each [`Op`] ran, and
//! whether any multipart upload was left open ([`FaultyStore::uploads`]).
//!
//! ```
//! use std::sync::Arc;
//! use haul_mover::faults::{Faults, FaultyStore, Op, Stall};
//! use object_store::{ObjectStore, memory::InMemory};
//!
//! let store = Arc::new(FaultyStore::new(
//!     Arc::new(InMemory::new()),
//!     Faults::new()
//!         .fail(Op::PutPart, 2)             // the second part of any upload fails
//!         .cut_list(1, 100)                 // the first listing ends in an error after 100 keys
//!         .stall(Op::Complete, 1, Stall::Forever),
//! ));
//! let target: Arc<dyn ObjectStore> = store.clone();
//! // ... run the code under test against `target`, then:
//! assert_eq!(store.uploads().open(), 0, "no upload left behind");
//! ```
//!
//! Operations are numbered per [`Op`] from 1, in the order they reach the
//! store, whatever their path: `fail(Op::Put, 3)` fails the third put. A
//! spoiled operation never reaches the wrapped store (a stalled one does,
//! late). Stalls sleep with `tokio::time::sleep`, so a test on tokio's
//! paused clock (`#[tokio::test(start_paused = true)]`) does not wait.

use std::fmt;
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// The operations a [`FaultyStore`] counts and can spoil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A single PUT (`put_opts`).
    Put,
    /// Starting a multipart upload (`put_multipart_opts`).
    StartUpload,
    /// One part of a multipart upload (`MultipartUpload::put_part`).
    PutPart,
    /// Completing a multipart upload.
    Complete,
    /// Aborting a multipart upload.
    Abort,
    /// A GET with a body, whole or ranged (`get_opts`).
    Get,
    /// A HEAD (`get_opts` with `head` set).
    Head,
    /// A recursive listing (`list`, `list_with_offset`).
    List,
    /// One level of a listing (`list_with_delimiter`).
    ListDir,
    /// One path of a `delete_stream`.
    Delete,
    /// `copy_opts`.
    Copy,
    /// `rename_opts`.
    Rename,
}

impl Op {
    const COUNT: usize = 12;

    fn index(self) -> usize {
        self as usize
    }
}

/// How a stalled operation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// It never answers: the caller must time out or give up.
    Forever,
    /// It answers after this long (tokio time: pausable in tests).
    For(Duration),
}

impl Stall {
    async fn wait(self) {
        match self {
            Stall::Forever => std::future::pending().await,
            Stall::For(d) => tokio::time::sleep(d).await,
        }
    }
}

/// What happens to one spoiled operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It fails at once.
    Fail,
    /// A listing that yields this many entries, then an error.
    CutList {
        after: usize,
    },
    /// A GET whose body ends, without an error, after this many bytes.
    Truncate {
        keep: u64,
    },
    Stall(Stall),
    /// The operation is done, but its answer is lost: the caller sees an
    /// error (an ambiguous write).
    LoseReply,
}

/// Which operations a [`FaultyStore`] spoils. One fault per operation: when
/// two rules name the same one, the first given wins.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Vec<(Op, u64, Fault)>,
}

impl Faults {
    /// No faults: the store only counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `nth` `op` fails with an error, without reaching the wrapped
    /// store (a listing fails before its first entry).
    pub fn fail(self, op: Op, nth: u64) -> Self {
        self.rule(op, nth, Fault::Fail)
    }

    /// The `nth` listing yields at most `after` entries, then an error: a
    /// listing cut off midway.
    pub fn cut_list(self, nth: u64, after: usize) -> Self {
        self.rule(Op::List, nth, Fault::CutList { after })
    }

    /// The body of the `nth` GET ends after `keep` bytes, without an error,
    /// while the object's metadata still gives its full size: a connection
    /// cut mid-body that the client took for the end.
    pub fn truncate_get(self, nth: u64, keep: u64) -> Self {
        self.rule(Op::Get, nth, Fault::Truncate { keep })
    }

    /// The `nth` put is done, then fails: the reply was lost on the way.
    pub fn lose_reply(self, nth: u64) -> Self {
        self.rule(Op::Put, nth, Fault::LoseReply)
    }

    /// The `nth` `op` answers late, or never.
    pub fn stall(self, op: Op, nth: u64, stall: Stall) -> Self {
        self.rule(op, nth, Fault::Stall(stall))
    }

    fn rule(mut self, op: Op, nth: u64, fault: Fault) -> Self {
        self.rules.push((op, nth, fault));
        self
    }
}

/// How many multipart uploads were started, completed and aborted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploads {
    pub started: u64,
    pub completed: u64,
    pub aborted: u64,
}

impl Uploads {
    /// Uploads started but neither completed nor aborted: on S3 these keep
    /// their parts, invisible and billed, forever.
    pub fn open(&self) -> u64 {
        self.started
            .saturating_sub(self.completed)
            .saturating_sub(self.aborted)
    }
}

/// What the store and its uploads share: the faults and the counters.
#[derive(Debug)]
struct Shared {
    faults: Faults,
    /// Operations seen, per [`Op`].
    ops: [AtomicU64; Op::COUNT],
    started: AtomicU64,
    completed: AtomicU64,
    aborted: AtomicU64,
}

impl Shared {
    /// Counts one `op`; returns its number and its fault, if any.
    fn count(&self, op: Op) -> (u64, Option<Fault>) {
        let n = self.ops[op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        let fault = self
            .faults
            .rules
            .iter()
            .find(|(o, nth, _)| *o == op && *nth == n)
            .map(|(_, _, f)| *f);
        (n, fault)
    }

    /// Counts one `op` and applies its fault: fails a failure, waits out a
    /// stall. Returns a fault the caller applies to the answer (cut, truncate).
    async fn enter(&self, op: Op) -> Result<Option<Fault>> {
        let (n, fault) = self.count(op);
        match fault {
            Some(Fault::Fail) => Err(injected(op, n)),
            Some(Fault::Stall(s)) => {
                s.wait().await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

fn injected(op: Op, n: u64) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected fault: {op:?} #{n} failed").into(),
    }
}

/// An [`ObjectStore`] that delegates to another and spoils the operations
/// its [`Faults`] name. See the module doc.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                faults,
                ops: Default::default(),
                started: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                aborted: AtomicU64::new(0),
            }),
        }
    }

    /// How many times `op` reached this store, spoiled or not.
    pub fn count(&self, op: Op) -> u64 {
        self.shared.ops[op.index()].load(Ordering::SeqCst)
    }

    /// The multipart uploads started through this store, and how they ended.
    /// An upload counts as completed or aborted once the wrapped store said so.
    pub fn uploads(&self) -> Uploads {
        let s = &self.shared;
        // Ends first: an upload is started before it ends, so `open` never underflows.
        let completed = s.completed.load(Ordering::SeqCst);
        let aborted = s.aborted.load(Ordering::SeqCst);
        Uploads {
            started: s.started.load(Ordering::SeqCst),
            completed,
            aborted,
        }
    }

    /// A listing, spoiled as its fault says.
    fn listing(
        &self,
        inner: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (n, fault) = self.shared.count(Op::List);
        let cut = match fault {
            Some(Fault::Fail) => Some(0),
            Some(Fault::CutList { after }) => Some(after),
            _ => None,
        };
        let body = match cut {
            None => inner,
            // Worded as object_store's clients word a body that broke off.
            Some(after) => inner
                .take(after)
                .chain(stream::once(ready(Err(object_store::Error::Generic {
                    store: "FaultyStore",
                    source: format!(
                        "Error getting list response body: injected fault: List #{n} cut off"
                    )
                    .into(),
                }))))
                .boxed(),
        };
        match fault {
            // Nothing, for a while (or ever), then the listing.
            Some(Fault::Stall(s)) => stream::once(s.wait())
                .filter_map(|()| ready(None))
                .chain(body)
                .boxed(),
            _ => body,
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

/// A GET answer whose body ends after `keep` bytes.
fn truncate(r: GetResult, keep: u64) -> GetResult {
    let (meta, range) = (r.meta.clone(), r.range.clone());
    let (attributes, extensions) = (r.attributes.clone(), r.extensions.clone());
    let body = r
        .into_stream()
        .scan(keep, |left, piece| {
            ready(match piece {
                Ok(_) if *left == 0 => None,
                Ok(mut bytes) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes.truncate(n as usize);
                    Some(Ok(bytes))
                }
                Err(e) => Some(Err(e)),
            })
        })
        .boxed();
    GetResult {
        payload: GetResultPayload::Stream(body),
        meta,
        range,
        attributes,
        extensions,
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let fault = self.shared.enter(Op::Put).await?;
        let put = self.inner.put_opts(location, payload, opts).await?;
        if matches!(fault, Some(Fault::LoseReply)) {
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: "injected fault: the put was done, its reply lost".into(),
            });
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.shared.enter(Op::StartUpload).await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        self.shared.started.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FaultyUpload {
            inner,
            shared: self.shared.clone(),
            open: true,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        let fault = self.shared.enter(op).await?;
        let r = self.inner.get_opts(location, options).await?;
        Ok(match fault {
            Some(Fault::Truncate { keep }) => truncate(r, keep),
            _ => r,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let shared = self.shared.clone();
        let counted = locations
            .then(move |path| {
                let shared = shared.clone();
                async move {
                    let path = path?;
                    shared.enter(Op::Delete).await?;
                    Ok(path)
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.shared.enter(Op::ListDir).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.shared.enter(Op::Copy).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.shared.enter(Op::Rename).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload through a [`FaultyStore`].
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    shared: Arc<Shared>,
    /// Not yet counted as completed or aborted.
    open: bool,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (n, fault) = self.shared.count(Op::PutPart);
        if fault == Some(Fault::Fail) {
            return Box::pin(ready(Err(injected(Op::PutPart, n))));
        }
        // Handed to the wrapped upload now, as the caller did: parts keep their order.
        let part = self.inner.put_part(data);
        Box::pin(async move {
            if let Some(Fault::Stall(s)) = fault {
                s.wait().await;
            }
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.shared.enter(Op::Complete).await?;
        let put = self.inner.complete().await?;
        if std::mem::take(&mut self.open) {
            self.shared.completed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(put)
    }

    async fn abort(&mut self) -> Result<()> {
        self.shared.enter(Op::Abort).await?;
        self.inner.abort().await?;
        if std::mem::take(&mut self.open) {
            self.shared.aborted.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    fn store(faults: Faults) -> FaultyStore {
        FaultyStore::new(Arc::new(InMemory::new()), faults)
    }

    async fn put(s: &FaultyStore, key: &str, len: usize) -> Result<PutResult> {
        s.put(&Path::from(key), PutPayload::from(vec![7u8; len]))
            .await
    }

    #[tokio::test]
    async fn the_nth_put_fails_and_writes_nothing() {
        let s = store(Faults::new().fail(Op::Put, 2));
        put(&s, "a", 1).await.unwrap();
        let err = put(&s, "b", 1).await.unwrap_err().to_string();
        assert!(err.contains("injected fault: Put #2"), "{err}");
        put(&s, "c", 1).await.unwrap();
        assert_eq!(s.count(Op::Put), 3);
        assert!(
            s.head(&Path::from("b")).await.is_err(),
            "b was never written"
        );
        assert_eq!(s.count(Op::Head), 1);
    }

    #[tokio::test]
    async fn a_listing_is_cut_after_k_entries() {
        let s = store(Faults::new().cut_list(1, 2));
        for k in ["a", "b", "c", "d"] {
            put(&s, k, 1).await.unwrap();
        }
        let mut first = s.list(None);
        for _ in 0..2 {
            first.try_next().await.unwrap().expect("an entry");
        }
        assert!(first.try_next().await.is_err(), "cut after two entries");
        let second: Vec<_> = s.list(None).try_collect().await.unwrap();
        assert_eq!(second.len(), 4, "only the first listing is cut");
    }

    #[tokio::test]
    async fn a_truncated_body_ends_early_without_an_error() {
        let s = store(Faults::new().truncate_get(1, 10));
        put(&s, "a", 100).await.unwrap();
        let r = s.get(&Path::from("a")).await.unwrap();
        assert_eq!(r.meta.size, 100, "the metadata still says the whole size");
        assert_eq!(r.bytes().await.unwrap().len(), 10);
        let whole = s.get(&Path::from("a")).await.unwrap().bytes().await;
        assert_eq!(whole.unwrap().len(), 100);
    }

    /// On tokio's paused clock a stall costs no real time.
    #[tokio::test(start_paused = true)]
    async fn stalls_answer_late_or_never() {
        let s = store(
            Faults::new()
                .stall(Op::Put, 1, Stall::For(Duration::from_secs(30)))
                .stall(Op::Get, 1, Stall::Forever),
        );
        let start = tokio::time::Instant::now();
        put(&s, "a", 1).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(30));
        let a = Path::from("a");
        let never = tokio::time::timeout(Duration::from_secs(3600), s.get(&a));
        assert!(never.await.is_err(), "the first GET never answers");
        assert!(s.get(&a).await.is_ok(), "the second does");
    }

    #[tokio::test]
    async fn uploads_are_counted_until_they_end() {
        let s = store(Faults::new().fail(Op::PutPart, 2).fail(Op::Complete, 1));
        let mut a = s.put_multipart(&Path::from("a")).await.unwrap();
        let mut b = s.put_multipart(&Path::from("b")).await.unwrap();
        a.put_part(PutPayload::from(vec![1u8; 10])).await.unwrap();
        assert!(a.put_part(PutPayload::from(vec![2u8; 10])).await.is_err());
        assert!(a.complete().await.is_err(), "the first complete fails");
        assert_eq!(s.uploads().open(), 2);
        a.abort().await.unwrap();
        b.put_part(PutPayload::from(vec![3u8; 10])).await.unwrap();
        b.complete().await.unwrap();
        let want = Uploads {
            started: 2,
            completed: 1,
            aborted: 1,
        };
        assert_eq!((s.uploads(), s.uploads().open()), (want, 0));
        assert_eq!(s.count(Op::PutPart), 3);
        assert_eq!(s.count(Op::Complete), 2);
    }
}
