//! A multipart upload that is never left open: [`MultipartGuard`] aborts it
//! on every way out that did not complete it.
//!
//! A started upload keeps the parts sent so far in the store, invisible and
//! billed, until it is completed or aborted: S3 and GCS never drop it on
//! their own. An error path can abort it, but a future can also stop half
//! way without seeing an error: a sibling failed and the pipeline was
//! dropped, the command was interrupted, the task was aborted. So the guard,
//! not each exit path, owns the cleanup (like mini-redis's `DbDropGuard`):
//! dropped while armed, it spawns the abort on the runtime it is dropped on.

use std::fmt;

use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// Owns a multipart upload until it is completed or aborted.
#[derive(Debug)]
pub struct MultipartGuard {
    /// The upload; `None` once it ended (completed or aborted): disarmed.
    upload: Option<Box<dyn MultipartUpload>>,
    /// Where the upload goes, to name it in warnings.
    url: String,
}

impl MultipartGuard {
    pub fn new(upload: Box<dyn MultipartUpload>, url: impl fmt::Display) -> Self {
        Self {
            upload: Some(upload),
            url: url.to_string(),
        }
    }

    fn upload(&mut self) -> &mut Box<dyn MultipartUpload> {
        self.upload
            .as_mut()
            .expect("a guard holds its upload until `complete` or `abort` consumes the guard")
    }

    /// Sends the next part (see [`MultipartUpload::put_part`]).
    pub fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload().put_part(data)
    }

    /// Completes the upload. If completing fails, the upload is aborted
    /// before the error is returned (as object_store's `WriteMultipart`
    /// does): the caller has nothing left to clean up either way.
    pub async fn complete(mut self) -> object_store::Result<PutResult> {
        // The upload stays in the guard while it completes: if this future
        // is dropped mid-way, `Drop` aborts it. At worst that aborts an
        // upload the store had just completed, which it refuses harmlessly.
        match self.upload().complete().await {
            Ok(put) => {
                self.upload = None;
                Ok(put)
            }
            Err(e) => {
                if let Err(abort) = self.abort_now().await {
                    tracing::warn!(
                        "could not abort the upload of {} after it failed to complete: {abort}",
                        self.url
                    );
                }
                Err(e)
            }
        }
    }

    /// Aborts the upload and waits for the store to confirm: the error path,
    /// where the caller can wait.
    pub async fn abort(mut self) -> object_store::Result<()> {
        self.abort_now().await
    }

    /// Aborts and disarms, whether the store confirmed or not: a failed
    /// abort is reported once, not retried on drop.
    async fn abort_now(&mut self) -> object_store::Result<()> {
        let r = self.upload().abort().await;
        self.upload = None;
        r
    }
}

impl Drop for MultipartGuard {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let url = std::mem::take(&mut self.url);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!("aborting the unfinished upload of {url}");
                runtime.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!("could not abort the unfinished upload of {url}: {e}");
                    }
                });
            }
            Err(_) => tracing::warn!(
                "the unfinished upload of {url} is left open (dropped outside a tokio runtime): \
                 a lifecycle rule for incomplete multipart uploads removes it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::faults::{Faults, FaultyStore, Op, Uploads};

    fn store(faults: Faults) -> Arc<FaultyStore> {
        Arc::new(FaultyStore::new(Arc::new(InMemory::new()), faults))
    }

    async fn start(store: &FaultyStore) -> MultipartGuard {
        let upload = store.put_multipart(&Path::from("o")).await.unwrap();
        let mut guard = MultipartGuard::new(upload, "memory://t/o");
        guard
            .put_part(PutPayload::from(vec![1u8; 100]))
            .await
            .unwrap();
        guard
    }

    /// Waits (a little) for the abort a dropped guard spawned.
    async fn aborted(store: &FaultyStore) -> Uploads {
        for _ in 0..200 {
            if store.uploads().aborted > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        store.uploads()
    }

    #[tokio::test]
    async fn a_completed_upload_is_not_aborted() {
        let s = store(Faults::new());
        start(&s).await.complete().await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!((s.uploads().completed, s.count(Op::Abort)), (1, 0));
        assert!(s.head(&Path::from("o")).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_complete_is_aborted_before_it_returns() {
        let s = store(Faults::new().fail(Op::Complete, 1));
        assert!(start(&s).await.complete().await.is_err());
        // No waiting: the abort was awaited.
        assert_eq!((s.uploads().aborted, s.uploads().open()), (1, 0));
    }

    #[tokio::test]
    async fn a_dropped_guard_aborts_its_upload() {
        let s = store(Faults::new());
        drop(start(&s).await);
        let u = aborted(&s).await;
        assert_eq!((u.aborted, u.open()), (1, 0));
    }

    /// Outside a runtime nothing can run the abort: the guard says so
    /// (a warning) instead of panicking in `Drop`.
    #[test]
    fn a_guard_dropped_outside_a_runtime_does_not_panic() {
        let s = store(Faults::new());
        let guard = futures::executor::block_on(async {
            let upload = s.put_multipart(&Path::from("o")).await.unwrap();
            MultipartGuard::new(upload, "memory://t/o")
        });
        drop(guard);
        assert_eq!(s.uploads().open(), 1);
    }
}
