//! Faults a real network makes, injected between haul and the real S3
//! server by `benches/latency_proxy.py --fault`: answers cut off midway
//! (listings and object bodies) and a request that never answers. Every
//! run must end with the right data, retried, not failed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::{Haul, S3, contents, noise, put};

/// The proxy, killed when dropped.
struct Proxy {
    child: Child,
    endpoint: String,
}

impl Proxy {
    fn start(s3: &S3, faults: &[&str]) -> Self {
        let upstream = s3
            .endpoint
            .rsplit(':')
            .next()
            .expect("port")
            .trim_end_matches('/')
            .to_owned();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/latency_proxy.py");
        let mut cmd = Command::new("python3");
        cmd.args([
            script,
            "--listen",
            "0",
            "--upstream",
            &upstream,
            "--delay-ms",
            "0",
        ]);
        for f in faults {
            cmd.args(["--fault", f]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start latency_proxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let port = line
            .trim()
            .strip_prefix("ready ")
            .expect("ready PORT")
            .to_owned();
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn haul(&self, s3: &S3) -> Haul {
        s3.haul().env("AWS_ENDPOINT_URL", &self.endpoint)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listings cut off midway (the source's first three pages, the repository's
/// pause records) and object
/// bodies cut off midway, in a backup, a verify and a restore: each is
/// resumed or retried, and the restored bucket is the source.
#[tokio::test(flavor = "multi_thread")]
async fn cut_off_answers_are_resumed_or_retried() {
    let Some(s3) = S3::from_env() else { return };
    let (src, repo_b, dst) = (
        s3.bucket("cutsrc"),
        s3.bucket("cutrepo"),
        s3.bucket("cutdst"),
    );
    let store = s3.store(&src);
    for i in 0..2500u64 {
        put(
            &*store,
            &format!("k/{i:05}"),
            noise(600 + (i as usize % 7) * 100, i),
        )
        .await;
    }
    let repo = format!("s3://{repo_b}/haul");
    s3.haul().run(["init", &repo]).ok();
    let proxy = Proxy::start(
        &s3,
        &[
            &format!("cut:GET /{src}?list-type=2:3"),
            "cut:list-type=2&prefix=haul%2Fpauses:1",
            &format!("cut:GET /{src}/k/00007:1"),
            &format!("cut:GET /{repo_b}/haul/packs/:2"),
        ],
    );
    let r = proxy
        .haul(&s3)
        .run([
            "--json",
            "backup",
            "--source",
            &format!("s3://{src}"),
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(r["objects"], 2500, "{r:#}");
    proxy
        .haul(&s3)
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();
    proxy
        .haul(&s3)
        .run([
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("s3://{dst}"),
        ])
        .ok();
    assert_eq!(
        contents(&*s3.store(&dst), "").await,
        contents(&*store, "").await
    );
}

/// A listing request that never answers: it times out (30 s without a
/// byte) and is retried within the retry budget; the backup succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_never_answers_is_retried() {
    let Some(s3) = S3::from_env() else { return };
    let (src, repo_b) = (s3.bucket("stallsrc"), s3.bucket("stallrepo"));
    put(&*s3.store(&src), "a", noise(100, 1)).await;
    let repo = format!("s3://{repo_b}/haul");
    s3.haul().run(["init", &repo]).ok();
    let proxy = Proxy::start(&s3, &["stall:list-type=2:1"]);
    let t = std::time::Instant::now();
    let r = proxy
        .haul(&s3)
        .run([
            "--json",
            "backup",
            "--source",
            &format!("s3://{src}"),
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(r["objects"], 1, "{r:#}");
    assert!(t.elapsed().as_secs() >= 25, "it did wait for the stall");
}
