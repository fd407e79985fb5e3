//! Probes of the S3 server behind figures of BENCHMARKS.md: how fast it
//! lists (the floor of every incremental backup and of haul's paused phase),
//! and how fast the leanest possible client moves bytes through it (the
//! ceiling a backup's throughput is a fraction of).
//!
//! ```text
//! s3probe list BUCKET/PREFIX LANES
//! s3probe copy SRC_BUCKET/PREFIX DST_BUCKET/PREFIX PARALLEL
//! s3probe upload DIR DST_BUCKET/PREFIX PARALLEL
//! ```
//!
//! `list` lists everything under the prefix in one sequential listing (what
//! haul and rclone do), then again in `LANES` key ranges at once, cut at the
//! first listing's quantiles, each range listed from its `start-after` key.
//! Both counts must agree.
//!
//! `copy` is the raw copy: list the source, then for `PARALLEL` objects at
//! once GET the whole object and PUT it unchanged, with an unsigned payload
//! and no checksum. It does the least work any copy can (no hashing, no
//! framing, one request each way per object), so its throughput is the copy
//! ceiling of the server on this machine: what haul's backup from a bucket
//! of the same server is measured against.
//!
//! `upload` reads every file under DIR into memory first (not timed), then
//! PUTs them all, `PARALLEL` at once, unsigned: the server's upload ceiling
//! for the same bytes, with no source to read from.
//!
//! Credentials and the endpoint come from the `AWS_*` environment variables.
//! Each prints one JSON line.

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, cmd, at, lanes] if cmd == "list" => list(at, lanes.parse()?).await,
        [_, cmd, from, to, n] if cmd == "copy" => copy(from, to, n.parse()?).await,
        [_, cmd, dir, to, n] if cmd == "upload" => upload(dir, to, n.parse()?).await,
        _ => Err("usage: s3probe list BUCKET/PREFIX LANES | \
                  copy SRC_BUCKET/PREFIX DST_BUCKET/PREFIX PARALLEL | \
                  upload DIR DST_BUCKET/PREFIX PARALLEL"
            .into()),
    }
}

fn open(at: &str) -> Result<(Arc<dyn ObjectStore>, Path), Error> {
    let (bucket, prefix) = at.split_once('/').unwrap_or((at, ""));
    let s = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(true)
        .with_unsigned_payload(true)
        .build()?;
    Ok((Arc::new(s), Path::from(prefix)))
}

/// `prefix/rest`, or `rest` alone under an empty prefix.
fn under(prefix: &Path, rest: &str) -> Path {
    if prefix.as_ref().is_empty() {
        Path::from(rest)
    } else {
        Path::from(format!("{prefix}/{rest}"))
    }
}

#[allow(clippy::print_stdout)]
fn report(what: &str, objects: usize, bytes: u64, seconds: f64) {
    println!(
        r#"{{"probe": "{what}", "objects": {objects}, "bytes": {bytes}, "seconds": {seconds:.3}, "mib_s": {:.1}}}"#,
        bytes as f64 / f64::from(1 << 20) / seconds
    );
}

/// The raw copy: whole-object GET then PUT, `parallel` objects at once.
async fn copy(from: &str, to: &str, parallel: usize) -> Result<(), Error> {
    let ((src, sp), (dst, dp)) = (open(from)?, open(to)?);
    let t0 = Instant::now();
    let objects: Vec<_> = src.list(Some(&sp)).try_collect().await?;
    let strip = sp.as_ref().len() + usize::from(!sp.as_ref().is_empty());
    let bytes = futures::stream::iter(&objects)
        .map(|m| {
            let (src, dst) = (&src, &dst);
            let target = under(&dp, &m.location.as_ref()[strip..]);
            async move {
                let body = src.get(&m.location).await?.bytes().await?;
                let n = body.len() as u64;
                dst.put(&target, PutPayload::from(body)).await?;
                Ok::<_, Error>(n)
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_fold(0u64, |a, n| async move { Ok(a + n) })
        .await?;
    report("copy", objects.len(), bytes, t0.elapsed().as_secs_f64());
    Ok(())
}

/// The raw upload of every file under `dir`, read into memory beforehand.
async fn upload(dir: &str, to: &str, parallel: usize) -> Result<(), Error> {
    let (dst, dp) = open(to)?;
    let mut files = Vec::new();
    let mut todo = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
                files.push((rel, PutPayload::from(std::fs::read(&p)?)));
            }
        }
    }
    let bytes: u64 = files.iter().map(|(_, b)| b.content_length() as u64).sum();
    let t0 = Instant::now();
    futures::stream::iter(&files)
        .map(|(rel, body)| {
            let dst = &dst;
            let target = under(&dp, rel);
            async move { dst.put(&target, body.clone()).await.map(|_| ()) }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<()>()
        .await?;
    report("upload", files.len(), bytes, t0.elapsed().as_secs_f64());
    Ok(())
}

/// Lists once in one lane, then again in `lanes` key ranges at once (cut at
/// the first listing's quantiles, each lane from `start-after`).
async fn list(at: &str, lanes: usize) -> Result<(), Error> {
    let (store, p) = open(at)?;
    let t0 = Instant::now();
    let keys: Vec<String> = store
        .list(Some(&p))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await?;
    let one = t0.elapsed().as_secs_f64();
    let lanes = lanes.clamp(1, keys.len().max(1));
    let bounds: Vec<String> = (1..lanes)
        .map(|i| keys[i * keys.len() / lanes].clone())
        .collect();
    let t1 = Instant::now();
    let counts = futures::future::try_join_all((0..lanes).map(|i| {
        let store = store.clone();
        let p = p.clone();
        let from = i.checked_sub(1).map(|j| bounds[j].clone());
        let to = bounds.get(i).cloned();
        async move {
            let s = match &from {
                Some(f) => store.list_with_offset(Some(&p), &Path::from(f.as_str())),
                None => store.list(Some(&p)),
            };
            let n = s
                .try_take_while(|m| {
                    let keep = to
                        .as_ref()
                        .is_none_or(|t| m.location.as_ref() <= t.as_str());
                    futures::future::ready(Ok(keep))
                })
                .try_fold(0usize, |n, _| async move { Ok(n + 1) })
                .await?;
            Ok::<_, Error>(n)
        }
    }))
    .await?;
    let many = t1.elapsed().as_secs_f64();
    #[allow(clippy::print_stdout)]
    {
        println!(
            r#"{{"keys": {}, "one_lane_s": {one:.3}, "lanes": {lanes}, "lanes_s": {many:.3}, "lane_keys": {}}}"#,
            keys.len(),
            counts.iter().sum::<usize>()
        );
    }
    Ok(())
}
