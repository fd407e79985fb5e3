//! How fast the server lists, for BENCHMARKS.md: listing the source is the
//! floor of every incremental backup (and of haul's paused phase).
//!
//! ```text
//! s3probe list BUCKET/PREFIX LANES
//! ```
//!
//! Lists everything under the prefix in one sequential listing (what haul and
//! rclone do), then again in `LANES` key ranges at once, cut at the first
//! listing's quantiles, each range listed from its `start-after` key. Both
//! counts must agree. Credentials and the endpoint come from the `AWS_*`
//! environment variables. Prints one JSON line.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, cmd, at, lanes] if cmd == "list" => list(at, lanes.parse()?).await,
        _ => Err("usage: s3probe list BUCKET/PREFIX LANES".into()),
    }
}

fn open(at: &str) -> Result<(Arc<dyn ObjectStore>, Path), Error> {
    let (bucket, prefix) = at.split_once('/').unwrap_or((at, ""));
    let s = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(true)
        .build()?;
    Ok((Arc::new(s), Path::from(prefix)))
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
