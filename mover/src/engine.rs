//! The shared budget of one command: how many requests, how many bytes and
//! how many CPU workers may be busy at once, and the progress counters the
//! CLI draws from.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Limits, MoverError, Result};

/// Work on at most this many bytes runs on the async runtime's own threads
/// (see [`Engine::cpu_for`]): hashing, compressing and sealing 64 KiB take
/// well under the ~100 µs a task may run between awaits.
const INLINE_CPU_BYTES: usize = 64 << 10;

/// Memory is reserved in KiB units: a u32 permit count then covers 4 TiB.
const MEMORY_UNIT: u64 = 1024;

/// Budgets shared by every transfer of a command.
#[derive(Debug, Clone)]
pub struct Engine {
    pub limits: Limits,
    /// One permit per request to a store.
    requests: Arc<Semaphore>,
    /// One permit per KiB of object data held in memory.
    memory: Arc<Semaphore>,
    /// One permit per CPU-bound job (hash, compress, decompress).
    cpu: Arc<Semaphore>,
    pub progress: Arc<Progress>,
}

impl Engine {
    pub fn new(limits: Limits) -> Self {
        let memory_units = (limits.memory / MEMORY_UNIT).clamp(1, u32::MAX as u64) as usize;
        Self {
            requests: Arc::new(Semaphore::new(limits.requests)),
            memory: Arc::new(Semaphore::new(memory_units)),
            cpu: Arc::new(Semaphore::new(limits.cpu)),
            limits,
            progress: Arc::new(Progress::default()),
        }
    }

    /// Waits for a request slot; hold the permit for the request's duration.
    pub async fn request(&self) -> OwnedSemaphorePermit {
        self.requests
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed")
    }

    /// Reserves `bytes` of the memory budget (capped at the whole budget, so
    /// one huge reservation waits for everything else rather than forever).
    /// A task takes everything it needs in one reservation, so no task holds
    /// memory while waiting for more: the budget cannot deadlock.
    pub async fn reserve(&self, bytes: u64) -> OwnedSemaphorePermit {
        let units = bytes
            .div_ceil(MEMORY_UNIT)
            .clamp(1, self.limits.memory / MEMORY_UNIT) as u32;
        self.memory
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("semaphore never closed")
    }

    /// Reserves what transferring one object needs: its size, capped at a
    /// window of `object_parts` chunks, since larger objects stream.
    pub async fn reserve_object(&self, size: u64, chunk_size: u64) -> OwnedSemaphorePermit {
        self.reserve(size.min(chunk_size * self.limits.object_parts as u64))
            .await
    }

    /// [`Engine::cpu`] for work over `bytes` bytes: work on a small piece
    /// (a chunk of a small object, a pack blob) runs in place, since
    /// handing it to a blocking thread and back costs more than the work
    /// (measured: on 20,000 objects of 1–16 KiB, thread hand-offs took more
    /// CPU than hashing, compressing and sealing together).
    pub async fn cpu_for<T: Send + 'static>(
        &self,
        bytes: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        if bytes <= INLINE_CPU_BYTES {
            return Ok(f());
        }
        self.cpu(f).await
    }

    /// Runs CPU-bound work on a blocking thread, off the async runtime.
    pub async fn cpu<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self.cpu.acquire().await.expect("semaphore never closed");
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| MoverError::Task(e.to_string()))
    }
}

/// A spawned task that is aborted when its handle is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counters of the running phase, read by the CLI to draw progress.
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<String>,
    /// Objects and bytes done in this phase.
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    /// Totals of this phase, when known (0 = unknown).
    pub total_objects: AtomicU64,
    pub total_bytes: AtomicU64,
}

impl Progress {
    /// Starts a new phase; totals of 0 mean "not known in advance".
    pub fn start(&self, phase: &str, total_objects: u64, total_bytes: u64) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.to_owned();
        self.objects.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.total_objects.store(total_objects, Ordering::Relaxed);
        self.total_bytes.store(total_bytes, Ordering::Relaxed);
    }

    pub fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn add(&self, objects: u64, bytes: u64) {
        self.objects.fetch_add(objects, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
