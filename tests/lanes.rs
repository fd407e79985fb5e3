//! `--list-lanes`: a bucket listed in concurrent ranges gives the snapshot a
//! one-lane listing gives, segment for segment, on a first backup (a fan-out
//! over the keys' first characters) and an incremental one (ranges cut at
//! the parent's segments), and restore plans listed in lanes agree too.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;

use crate::common::{Haul, S3, contents, put};

/// Keys that stress path order against byte order, among enough chunk-like
/// keys (more than one 1,000-key page) that a listing is really cut.
pub(crate) fn dataset() -> BTreeMap<String, Vec<u8>> {
    let mut d = BTreeMap::new();
    for i in 0..1100u32 {
        let h = blake3::hash(&i.to_le_bytes()).to_hex();
        d.insert(
            format!("chunk/{}.{}", &h[..16], i % 3),
            i.to_le_bytes().to_vec(),
        );
    }
    for k in [
        "a b",
        "a!",
        "a-b",
        "a.b/c",
        "a/x",
        "a/y z",
        "chunk!",
        "chunk-old/x",
        "chunk.txt",
        "chunk/8 x",
        "chunk/8-x",
        "chunk/8/x",
        "chunk/80",
        "chunk/é",
        "my data/x",
        "my-data/y",
        "my/z",
        "é/x",
        "日本/語",
    ] {
        d.insert(k.to_owned(), k.as_bytes().to_vec());
    }
    d
}

/// A snapshot's bucket record (objects, bytes, every segment) read from a
/// `file://` repository.
fn bucket_record(repo_dir: &Path, snapshot: &Value) -> Value {
    let id = snapshot["snapshot"].as_str().expect("snapshot id");
    let path = repo_dir.join("snapshots").join(format!("{id}.json"));
    let root: Value = serde_json::from_slice(&std::fs::read(&path).expect("snapshot root"))
        .expect("snapshot JSON");
    root["bucket"].clone()
}

/// Backs up `source` into each repository with its number of lanes; every
/// repository must record the same bucket.
fn backup_in_lanes(haul: &dyn Fn() -> Haul, source: &str, repos: &[(&str, &Path)]) -> Value {
    let mut first: Option<Value> = None;
    for (lanes, dir) in repos {
        let repo = format!("file://{}", dir.display());
        let run = haul()
            .run([
                "--json",
                "--list-lanes",
                lanes,
                "backup",
                "--source",
                source,
                "--repo",
                &repo,
            ])
            .ok()
            .json();
        let record = bucket_record(dir, &run);
        assert!(record["segments"].as_array().is_some_and(|s| !s.is_empty()));
        match &first {
            None => first = Some(record),
            Some(want) => assert_eq!(
                &record, want,
                "--list-lanes {lanes} recorded another bucket"
            ),
        }
    }
    first.expect("a repository")
}

#[test]
fn a_local_folder_backs_up_the_same_in_any_number_of_lanes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("source");
    for (k, v) in dataset() {
        // A folder cannot hold a file and a folder of one name: none here do.
        let p = src.join(&k);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, v).expect("write");
    }
    let source = format!("file://{}", src.display());
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));
    for r in [&one, &many] {
        Haul::insecure()
            .run([
                "init",
                "--insecure-no-encryption",
                &format!("file://{}", r.display()),
            ])
            .ok();
    }
    let record = backup_in_lanes(&Haul::insecure, &source, &[("1", &one), ("16", &many)]);
    assert_eq!(record["objects"].as_u64(), Some(dataset().len() as u64));

    // No lanes at all is refused before anything is read or written.
    let repo = format!("file://{}", one.display());
    Haul::insecure()
        .run([
            "--list-lanes",
            "0",
            "backup",
            "--source",
            &source,
            "--repo",
            &repo,
        ])
        .fails_with(1, "list lanes must be at least 1");
    let snapshots = std::fs::read_dir(one.join("snapshots")).expect("snapshots");
    assert_eq!(snapshots.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_bucket_backs_up_and_restores_the_same_in_any_number_of_lanes() {
    let Some(s3) = S3::from_env() else { return };
    let src_bucket = s3.bucket("lanes-src");
    let src = s3.store(&src_bucket);
    let data = dataset();
    futures::stream::iter(&data)
        .map(|(k, v)| {
            let src = &src;
            async move { put(&**src, &format!("data/{k}"), v.clone()).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let source = format!("s3://{src_bucket}/data");
    let dir = tempfile::tempdir().expect("tempdir");
    let repos: Vec<(&str, std::path::PathBuf)> = ["1", "3", "16"]
        .into_iter()
        .map(|l| (l, dir.path().join(format!("repo-{l}"))))
        .collect();
    let repos: Vec<(&str, &Path)> = repos.iter().map(|(l, p)| (*l, p.as_path())).collect();
    let haul = || s3.haul().without_key();
    for (_, r) in &repos {
        haul()
            .run([
                "init",
                "--insecure-no-encryption",
                &format!("file://{}", r.display()),
            ])
            .ok();
    }

    // A first backup: the 16-lane listing fans out under chunk/.
    let first = backup_in_lanes(&haul, &source, &repos);
    assert_eq!(first["objects"].as_u64(), Some(data.len() as u64));

    // Change the source; the next backup cuts its listing at the parent's segments.
    put(&*src, "data/chunk/0000new.0", b"new".to_vec()).await;
    put(&*src, "data/chunk/ffffnew.0", b"new".to_vec()).await;
    put(&*src, "data/chunk/8.5", b"new".to_vec()).await;
    let gone = data.keys().nth(500).expect("a key").clone();
    src.delete(&object_store::path::Path::parse(format!("data/{gone}")).expect("key"))
        .await
        .expect("delete");
    let second = backup_in_lanes(&haul, &source, &repos);
    assert_eq!(second["objects"].as_u64(), Some(data.len() as u64 + 2));

    // Restore from the many-lane repository; the target lists the same in any lanes.
    let dst_bucket = s3.bucket("lanes-dst");
    let target = format!("s3://{dst_bucket}/restored");
    let many = format!("file://{}", repos[2].1.display());
    let restored = haul()
        .run([
            "--json", "restore", "latest", "--repo", &many, "--to", &target,
        ])
        .ok()
        .json();
    assert_eq!(
        restored["objects_copied"].as_u64(),
        Some(data.len() as u64 + 2)
    );
    let dst = s3.store(&dst_bucket);
    assert_eq!(
        contents(&*dst, "restored").await,
        contents(&*src, "data").await
    );
    let mut plans = Vec::new();
    for lanes in ["1", "16"] {
        let plan = haul()
            .run([
                "--json",
                "--list-lanes",
                lanes,
                "restore",
                "latest",
                "--dry-run",
                "--repo",
                &many,
                "--to",
                &target,
            ])
            .ok()
            .json();
        plans.push(plan);
    }
    assert_eq!(plans[0], plans[1], "restore plans in 1 and 16 lanes");
    let bucket = plans[1].get("plan").unwrap_or(&plans[1]);
    let unchanged = bucket["objects_unchanged"].as_u64();
    assert_eq!(unchanged, Some(data.len() as u64 + 2), "{}", plans[1]);
}
