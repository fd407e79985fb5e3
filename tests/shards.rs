//! Shards (issue 19): one bucket backed up by N processes, each over one
//! range of its keys, committed as one snapshot. What one process would
//! have backed up, exactly; a missing or failed shard commits nothing.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;

use crate::common::{Haul, S3, contents, files, put};
use crate::lanes::dataset;

/// An S3 source under `data/` holding [`dataset`] (keys that stress path
/// order, more than a page of chunk-like keys), and two `file://`
/// repositories: one backed up by one process, one by shards.
struct Rig {
    s3: S3,
    src_bucket: String,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn new(data: &BTreeMap<String, Vec<u8>>) -> Option<Self> {
        let s3 = S3::from_env()?;
        let src_bucket = s3.bucket("shards-src");
        let src = s3.store(&src_bucket);
        futures::stream::iter(data)
            .map(|(k, v)| {
                let src = &src;
                async move { put(&**src, &format!("data/{k}"), v.clone()).await }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let rig = Self {
            s3,
            src_bucket,
            dir,
        };
        for r in ["one", "sharded"] {
            rig.haul().run(["init", &rig.repo(r)]).ok();
        }
        Some(rig)
    }

    fn haul(&self) -> Haul {
        self.s3.haul()
    }

    fn source(&self) -> String {
        format!("s3://{}/data", self.src_bucket)
    }

    fn repo(&self, name: &str) -> String {
        format!("file://{}/{name}", self.dir.path().display())
    }

    fn backup(&self, repo: &str, extra: &[&str]) -> Value {
        let source = self.source();
        let repo = self.repo(repo);
        let mut args = vec!["--json", "backup", "--source", &source, "--repo", &repo];
        args.extend_from_slice(extra);
        self.haul().run(args).ok().json()
    }

    /// Files left under the sharded repository's `staging/`.
    fn staged_files(&self) -> usize {
        count(&self.dir.path().join("sharded").join("staging"))
    }

    /// Restores the sharded repository's latest snapshot into a new bucket
    /// and checks it equals the source; then the one-process repository's
    /// latest, planned against that bucket, finds every object unchanged
    /// (same keys, sizes and blake3 hashes) and nothing else.
    async fn same_as_one_process(&self, objects: u64) {
        let dst_bucket = self.s3.bucket("shards-dst");
        let target = format!("s3://{dst_bucket}/r");
        let restored = self
            .haul()
            .run([
                "--json",
                "restore",
                "latest",
                "--repo",
                &self.repo("sharded"),
                "--to",
                &target,
            ])
            .ok()
            .json();
        assert_eq!(
            restored["objects_copied"].as_u64(),
            Some(objects),
            "{restored}"
        );
        let (src, dst) = (self.s3.store(&self.src_bucket), self.s3.store(&dst_bucket));
        assert_eq!(contents(&*dst, "r").await, contents(&*src, "data").await);
        let plan = self
            .haul()
            .run([
                "--json",
                "restore",
                "latest",
                "--dry-run",
                "--repo",
                &self.repo("one"),
                "--to",
                &target,
            ])
            .ok()
            .json();
        let plan = plan.get("plan").unwrap_or(&plan);
        assert_eq!(plan["objects_unchanged"].as_u64(), Some(objects), "{plan}");
        for k in ["objects_missing", "objects_different", "objects_extraneous"] {
            assert_eq!(plan[k].as_u64(), Some(0), "{k}: {plan}");
        }
    }
}

/// Files under `dir` (none if it does not exist).
fn count(dir: &std::path::Path) -> usize {
    if dir.exists() { files(dir).len() } else { 0 }
}

/// Four local shards back up what one process does, first in full (the key
/// space fanned out from the first page), then incrementally (cut by bytes
/// at the parent's segments): same objects, same hashes, byte-exact
/// restores, `verify --read-data` clean, nothing left staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_local_shards_back_up_what_one_process_does() {
    let data = dataset();
    let Some(rig) = Rig::new(&data).await else {
        return;
    };
    let n = data.len() as u64;

    let one = rig.backup("one", &[]);
    let sharded = rig.backup("sharded", &["--shards", "4"]);
    for k in ["objects", "bytes", "objects_new"] {
        assert_eq!(sharded[k], one[k], "{k}: {sharded}");
    }
    assert_eq!(sharded["objects"].as_u64(), Some(n));
    assert_eq!(rig.staged_files(), 0, "staging records are removed");
    rig.same_as_one_process(n).await;

    // Change the source: two keys new, one gone, one rewritten.
    let src = rig.s3.store(&rig.src_bucket);
    put(&*src, "data/chunk/0000new.0", b"new".to_vec()).await;
    put(&*src, "data/zzz-new", b"new too".to_vec()).await;
    put(&*src, "data/a b", b"rewritten".to_vec()).await;
    let gone = data.keys().nth(500).expect("a key").clone();
    src.delete(&object_store::path::Path::parse(format!("data/{gone}")).expect("key"))
        .await
        .expect("delete");
    let one = rig.backup("one", &[]);
    let sharded = rig.backup("sharded", &["--shards", "4"]);
    for k in [
        "objects",
        "bytes",
        "objects_new",
        "objects_changed",
        "objects_removed",
        "objects_unchanged",
        "objects_read",
    ] {
        assert_eq!(sharded[k], one[k], "{k}: {sharded}");
    }
    assert_eq!(sharded["objects_new"].as_u64(), Some(2));
    assert_eq!(sharded["objects_read"].as_u64(), Some(3));
    assert_eq!(rig.staged_files(), 0);
    rig.same_as_one_process(n + 1).await;
    let v = rig
        .haul()
        .run(["verify", "--repo", &rig.repo("sharded"), "--read-data"]);
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
}

/// Shards run by hand (as the pods of an Indexed Job would): the commit
/// refuses while one is missing, naming it, and commits nothing; a shard
/// run twice replaces its own record; once all are there, one snapshot.
/// A failed local shard fails the backup, and nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_failed_shard_commits_nothing() {
    let data = dataset();
    let Some(rig) = Rig::new(&data).await else {
        return;
    };
    let (source, repo) = (rig.source(), rig.repo("sharded"));
    let staging = "00c0ffee00c0ffee";
    let shard = |k: &str| {
        rig.haul()
            .run([
                "--json",
                "backup",
                "--source",
                &source,
                "--repo",
                &repo,
                "--shard",
                k,
                "--staging",
                staging,
            ])
            .ok()
            .json()
    };
    let s0 = shard("0/3");
    assert_eq!(s0["shard"].as_u64(), Some(0));
    assert!(s0["from"].is_null() && s0["to"].is_string(), "{s0}");
    // auto/N reads the index Kubernetes gives each pod.
    let s2 = rig
        .haul()
        .env("JOB_COMPLETION_INDEX", "2")
        .run([
            "--json",
            "backup",
            "--source",
            &source,
            "--repo",
            &repo,
            "--shard",
            "auto/3",
            "--staging",
            staging,
        ])
        .ok()
        .json();
    assert_eq!(s2["shard"].as_u64(), Some(2));
    assert_eq!(s2["plan"], s0["plan"], "every shard works from one plan");

    let commit = |wait: &str| {
        rig.haul().run([
            "--json", "backup", "--repo", &repo, "--commit", staging, "--wait", wait,
        ])
    };
    commit("0s").fails_with(1, "1 of 3 shard(s) have not finished (no record): 1");
    let snapshots = rig.dir.path().join("sharded").join("snapshots");
    assert_eq!(count(&snapshots), 0, "nothing committed");

    // Shard 1, run twice: its record is replaced, not doubled.
    let s1 = shard("1/3");
    let again = shard("1/3");
    assert_eq!(again["objects"], s1["objects"]);
    assert_eq!(rig.staged_files(), 4, "a plan and three records");
    let total: u64 = [&s0, &again, &s2]
        .iter()
        .map(|s| s["objects"].as_u64().expect("objects"))
        .sum();
    assert_eq!(
        total,
        data.len() as u64,
        "the shards' ranges cover every key once"
    );
    for s in [&s0, &again, &s2] {
        assert!(s["objects"].as_u64() > Some(100), "balanced shards: {s}");
    }

    let done = commit("5s").ok().json();
    assert_eq!(done["snapshot"].as_str(), Some(staging));
    assert_eq!(done["objects"].as_u64(), Some(data.len() as u64));
    assert_eq!(rig.staged_files(), 0);
    rig.backup("one", &[]);
    rig.same_as_one_process(data.len() as u64).await;
    // Committed staging ids are gone: a second commit says so.
    commit("0s").fails_with(1, "no staged backup 00c0ffee00c0ffee");

    // A staged backup given up: its files go, and it can no longer commit.
    shard("0/3");
    let gone = rig
        .haul()
        .run(["--json", "backup", "--repo", &repo, "--abandon", staging])
        .ok()
        .json();
    assert_eq!(gone["abandoned"], staging);
    assert_eq!(gone["records"], 1);
    assert_eq!(rig.staged_files(), 0);
    commit("0s").fails_with(1, "no staged backup 00c0ffee00c0ffee");
    rig.haul()
        .run(["backup", "--repo", &repo, "--abandon", staging])
        .fails_with(1, "no staged backup 00c0ffee00c0ffee");

    // A shard that fails (injected in shard 2 of 4) fails the backup.
    let before = count(&snapshots);
    rig.haul()
        .env("HAUL_FAILPOINTS", "shard-2=fail")
        .run([
            "--json", "backup", "--source", &source, "--repo", &repo, "--shards", "4",
        ])
        .fails_with(1, "shard 2 of 4 failed");
    assert_eq!(count(&snapshots), before, "nothing committed");
    assert_eq!(
        rig.staged_files(),
        0,
        "the failed pass's records are removed"
    );
}

/// Three restore shards (as the pods of `haul job restore` run them)
/// together restore the whole bucket byte-exact, each deleting only the
/// extraneous objects of its own range; their three target records, put
/// together, tell the next whole restore what the target holds, so it
/// reads nothing to find every object unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_shards_together_restore_the_whole_bucket() {
    let data = dataset();
    let Some(rig) = Rig::new(&data).await else {
        return;
    };
    rig.backup("sharded", &["--shards", "2"]);
    let dst_bucket = rig.s3.bucket("shards-rst");
    let dst = rig.s3.store(&dst_bucket);
    // Extraneous objects at both ends of the key space, and a wrong one.
    for k in ["r/!first", "r/chunk/0000extra", "r/zzzz-last"] {
        put(&*dst, k, b"extra".to_vec()).await;
    }
    put(&*dst, "r/a b", b"wrong".to_vec()).await;
    let target = format!("s3://{dst_bucket}/r");
    let repo = rig.repo("sharded");
    let mut copied = 0;
    let mut deleted = 0;
    for k in 0..3 {
        let r = rig
            .haul()
            .env("JOB_COMPLETION_INDEX", &k.to_string())
            .run([
                "--json",
                "restore",
                "latest",
                "--repo",
                &repo,
                "--to",
                &target,
                "--delete-extraneous",
                "--shard",
                "auto/3",
            ])
            .ok()
            .json();
        assert_eq!(r["shard"]["shard"].as_u64(), Some(k), "{r}");
        copied += r["objects_copied"].as_u64().expect("copied");
        deleted += r["objects_deleted"].as_u64().expect("deleted");
    }
    assert_eq!(
        copied,
        data.len() as u64,
        "each object restored by one shard"
    );
    assert_eq!(deleted, 3);
    let src = rig.s3.store(&rig.src_bucket);
    assert_eq!(contents(&*dst, "r").await, contents(&*src, "data").await);

    let plan = rig
        .haul()
        .run([
            "--json",
            "restore",
            "latest",
            "--dry-run",
            "--repo",
            &repo,
            "--to",
            &target,
        ])
        .ok()
        .json();
    let plan = plan.get("plan").unwrap_or(&plan);
    assert_eq!(
        plan["objects_unchanged"].as_u64(),
        Some(data.len() as u64),
        "{plan}"
    );
    assert_eq!(
        plan["objects_checked"].as_u64(),
        Some(0),
        "the shards' records were used: {plan}"
    );
}

/// `haul job backup|restore` print Kubernetes manifests that validate
/// against Kubernetes' own schemas (kubernetes-validate, strict, offline):
/// an Indexed Job of N pods running `--shard auto/N`, and the Job that
/// commits the staged backup. The Dockerfile they name passes hadolint.
#[test]
fn the_job_manifests_validate_against_kubernetes_schemas() {
    if S3::from_env().is_none() {
        return;
    }
    let tools = std::path::PathBuf::from(std::env::var("HAUL_TOOLS_BIN").expect("HAUL_TOOLS_BIN"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prod.toml");
    std::fs::write(
        &config,
        "[cluster]\nrepo = \"s3://backups/pach\"\nsource = \"s3://pach-data\"\n\
         [restore]\nto = \"s3://pach-restored\"\n",
    )
    .expect("config");
    let config = config.display().to_string();
    let validate = |file: &std::path::Path| {
        for version in ["1.29.0", "1.37.0"] {
            let out = std::process::Command::new(tools.join("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", version])
                .arg(file)
                .output()
                .expect("run kubernetes-validate");
            assert!(
                out.status.success(),
                "{} does not validate against {version}:\n{}{}",
                file.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };

    let backup = Haul::new()
        .run([
            "-c",
            &config,
            "job",
            "backup",
            "--shards",
            "4",
            "-n",
            "backups",
            "--staging",
            "00c0ffee00c0ffee",
        ])
        .ok();
    let yaml = dir.path().join("backup.yaml");
    std::fs::write(&yaml, &backup.stdout).expect("write");
    validate(&yaml);
    assert!(backup.stdout.contains("completionMode: \"Indexed\""));
    assert!(backup.stdout.contains("\"--shard=auto/4\""));
    assert!(backup.stdout.contains("\"--commit=00c0ffee00c0ffee\""));

    let json = Haul::new()
        .run([
            "--json", "-c", &config, "job", "restore", "latest", "--shards", "3",
        ])
        .ok()
        .json();
    let manifests = json["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "a restore needs no commit: {json}");
    assert_eq!(manifests[0]["spec"]["completions"], 3);
    assert_eq!(manifests[0]["spec"]["parallelism"], 3);
    let file = dir.path().join("restore.json");
    std::fs::write(&file, serde_json::to_vec(&manifests[0]).expect("json")).expect("write");
    validate(&file);

    // The pods need the config file: without one, a clear refusal.
    Haul::new()
        .run(["job", "backup", "--shards", "2"])
        .fails_with(1, "haul job needs the config file");

    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile");
    let out = std::process::Command::new(tools.join("hadolint"))
        .arg(dockerfile)
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
