//! Bytes between a client program and the repository, never through a file.
//!
//! ```text
//! backup:  child stdout ─▶ chunker thread (FastCDC + blake3 of the whole stream)
//!            ─▶ bounded channel ─▶ put_plain (hash, zstd, upload if absent), n in flight, in order
//! restore: chunk ids ─▶ read_chunk (verified), n ahead, in order ─▶ child stdin
//! ```
//!
//! The chunker runs on its own blocking thread: it reads the pipe in
//! blocking mode and does the CPU work of cutting and hashing off the async
//! runtime. Memory is bounded by `max chunk × (queued + in flight + 1)`.

use std::io::Read;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use haul_manifest::{CdcParams, ChunkId};
use haul_mover::Repository;
use tokio::io::AsyncWriteExt;

use crate::error::{PgError, Result};
use crate::limits::DbLimits;

/// A stream stored as chunks.
#[derive(Debug, Clone)]
pub struct Stored {
    pub chunks: Vec<ChunkId>,
    /// Each chunk's plaintext length.
    pub lens: Vec<u32>,
    pub bytes: u64,
    pub hash: ChunkId,
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
}

/// Checks CDC sizes against what FastCDC accepts (it asserts, it does not return errors).
pub fn check_cdc(p: CdcParams) -> std::result::Result<(), String> {
    use fastcdc::v2020::{
        AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
    };
    let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
    let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
        && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
        && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
        && min <= avg
        && avg <= max;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the repository's dump chunk sizes {min}/{avg}/{max} are outside what FastCDC \
             supports (min {MINIMUM_MIN}..{MINIMUM_MAX}, avg {AVERAGE_MIN}..{AVERAGE_MAX}, \
             max {MAXIMUM_MIN}..{MAXIMUM_MAX})"
        ))
    }
}

/// Cuts `source` (a pipe, read in blocking mode) into content-defined chunks
/// and stores them. `what` names the stream in errors.
pub async fn store<R: Read + Send + 'static>(
    repo: &Repository,
    source: R,
    limits: &DbLimits,
    what: &str,
) -> Result<Stored> {
    let cdc = repo.config().cdc;
    check_cdc(cdc).map_err(|reason| PgError::Stream {
        what: what.to_owned(),
        reason,
    })?;
    // One reservation for the whole stream, from the budget the bucket copy
    // shares: the chunker's buffer, the queue and the chunks in flight.
    let _memory = repo
        .engine()
        .reserve(cdc.max as u64 * (limits.chunks_queued + limits.chunks_in_flight + 1) as u64)
        .await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(limits.chunks_queued);
    let chunker = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        let cut = fastcdc::v2020::StreamCDC::new(
            source,
            cdc.min as usize,
            cdc.avg as usize,
            cdc.max as usize,
        );
        for chunk in cut {
            let item = chunk.map_err(std::io::Error::from).map(|c| {
                hasher.update(&c.data);
                total += c.length as u64;
                Bytes::from(c.data)
            });
            let failed = item.is_err();
            // A closed channel means the storing side gave up: stop reading,
            // which closes the pipe and ends the writer.
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
        (ChunkId(*hasher.finalize().as_bytes()), total)
    });
    let chunks = stream::poll_fn(|cx| rx.poll_recv(cx))
        .map(|item| async move {
            let plain = item.map_err(|e| PgError::Stream {
                what: what.to_owned(),
                reason: format!("reading its output failed: {e}"),
            })?;
            let len = plain.len() as u64;
            let (id, uploaded) = repo.put_plain(plain).await?;
            repo.engine().progress.add(0, len);
            // FastCDC's largest chunk is far below 4 GiB.
            Ok::<_, PgError>((id, uploaded, len as u32))
        })
        .buffered(limits.chunks_in_flight.max(1));
    let mut out = Stored {
        chunks: Vec::new(),
        lens: Vec::new(),
        bytes: 0,
        hash: ChunkId::of(b""),
        chunks_uploaded: 0,
        bytes_uploaded: 0,
    };
    let stored: Result<()> = chunks
        .try_for_each(|(id, uploaded, len)| {
            out.chunks.push(id);
            out.lens.push(len);
            if uploaded > 0 {
                out.chunks_uploaded += 1;
                out.bytes_uploaded += uploaded;
            }
            futures::future::ready(Ok(()))
        })
        .await;
    // Dropping the receiver (on error) unblocks the chunker thread.
    drop(rx);
    stored?;
    let (hash, bytes) = chunker
        .await
        .map_err(|e| PgError::from(haul_mover::MoverError::Task(e.to_string())))?;
    out.hash = hash;
    out.bytes = bytes;
    Ok(out)
}

/// Bytes of dump chunks read in one batch when restoring.
const READ_BATCH_BYTES: u64 = 2 << 20;

/// Writes the chunks, in order and verified, to `sink` (a child's stdin),
/// reading a few ahead. Checks the whole stream's length and blake3 against
/// the record before the last byte is handed over, so a program that reads
/// to the end never sees a stream the snapshot did not hold.
pub async fn feed<W: tokio::io::AsyncWrite + Unpin>(
    repo: &Repository,
    chunks: &[ChunkId],
    expect_bytes: u64,
    expect_hash: ChunkId,
    limits: &DbLimits,
    sink: &mut W,
    what: &str,
) -> Result<()> {
    // Chunks are read in batches of ~2 MiB: packed chunks of a dump lie
    // back to back, so a batch is usually one ranged GET (small chunks
    // read one at a time would make latency the limit).
    let cdc = repo.config().cdc;
    let batch = (READ_BATCH_BYTES / u64::from(cdc.avg.max(1))).max(1) as usize;
    let _memory = repo
        .engine()
        .reserve(u64::from(cdc.max) * batch as u64 * (limits.read_ahead as u64 + 1))
        .await;
    let mut reads = stream::iter(chunks.chunks(batch))
        .map(|ids| repo.read_chunks(ids))
        .buffered(limits.read_ahead.max(1))
        .map_ok(|batch| stream::iter(batch.into_iter().map(Ok::<_, haul_mover::MoverError>)))
        .try_flatten();
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let mut held: Option<Bytes> = None;
    let write_err = |source: std::io::Error| PgError::StreamWrite {
        what: what.to_owned(),
        source,
    };
    while let Some(plain) = reads.try_next().await? {
        hasher.update(&plain);
        total += plain.len() as u64;
        repo.engine().progress.add(0, plain.len() as u64);
        // Hold one chunk back: the last is written only after the check.
        if let Some(prev) = held.replace(plain) {
            sink.write_all(&prev).await.map_err(write_err)?;
        }
    }
    let hash = ChunkId(*hasher.finalize().as_bytes());
    if total != expect_bytes || hash != expect_hash {
        return Err(PgError::Stream {
            what: what.to_owned(),
            reason: format!(
                "the chunks hold {total} bytes with blake3 {hash}, the snapshot says {expect_bytes} bytes with {expect_hash}"
            ),
        });
    }
    if let Some(last) = held {
        sink.write_all(&last).await.map_err(write_err)?;
    }
    sink.flush().await.map_err(write_err)?;
    Ok(())
}
