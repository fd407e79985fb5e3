//! End to end through the `haul` binary: back up a bucket, change it, back up
//! again, restore, refresh, verify, and survive a corrupt chunk.

use std::collections::BTreeMap;

use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::common::{Haul, S3, contents, keys, noise, put};

/// A bucket shaped like a small Pachyderm cluster: chunk objects of varied
/// sizes (two span several 8 MiB repository chunks), and a few small files.
fn dataset() -> BTreeMap<String, Vec<u8>> {
    let mut d = BTreeMap::new();
    for i in 0..40u64 {
        d.insert(
            format!("chunk/{i:04}.0"),
            noise(1000 + (i as usize * 7919) % 90_000, i),
        );
    }
    d.insert("chunk/big.0".into(), noise(20 << 20, 100));
    d.insert("chunk/exact.0".into(), noise(16 << 20, 101));
    d.insert("meta/empty".into(), Vec::new());
    d.insert("meta/text".into(), b"pachyderm metadata ".repeat(10_000));
    d
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backup_change_backup_restore_refresh_verify() {
    let Some(s3) = S3::from_env() else { return };
    let src_bucket = s3.bucket("src");
    let repo_bucket = s3.bucket("repo");
    let src = s3.store(&src_bucket);
    let data = dataset();
    for (k, v) in &data {
        put(&*src, &format!("data/{k}"), v.clone()).await;
    }
    let source = format!("s3://{src_bucket}/data");
    let repo = format!("s3://{repo_bucket}/backups/pach");
    let haul = || s3.haul().without_key();

    haul().run(["init", "--insecure-no-encryption", &repo]).ok();

    // Full backup: everything read once.
    let b1 = haul()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    assert_eq!(num(&b1, "objects"), data.len() as u64);
    assert_eq!(num(&b1, "objects_read"), data.len() as u64);
    assert_eq!(
        num(&b1, "bytes"),
        data.values().map(|v| v.len() as u64).sum::<u64>()
    );
    assert!(num(&b1, "chunks_uploaded") >= data.len() as u64);
    let snap1 = b1["snapshot"].as_str().expect("id").to_owned();

    // Change the source: add two, overwrite one with the same size, delete one.
    put(&*src, "data/chunk/new-a.0", noise(5000, 200)).await;
    put(&*src, "data/chunk/new-b.0", noise(7000, 201)).await;
    let same_size = noise(data["chunk/0003.0"].len(), 202);
    put(&*src, "data/chunk/0003.0", same_size.clone()).await;
    src.delete(&Path::from("data/chunk/0005.0"))
        .await
        .expect("delete");

    // The dry run predicts exactly the delta and writes nothing.
    let plan = haul()
        .run([
            "--json",
            "backup",
            "--dry-run",
            "--source",
            &source,
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(
        (num(&plan, "objects_new"), num(&plan, "objects_changed")),
        (2, 1),
        "{plan}"
    );
    assert_eq!(num(&plan, "objects_removed"), 1);

    // Incremental backup: only the three changed objects are read.
    let b2 = haul()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    assert_eq!(b2["parent"].as_str(), Some(snap1.as_str()));
    assert_eq!(num(&b2, "objects_read"), 3, "{b2}");
    assert_eq!(num(&b2, "objects_new"), 2);
    assert_eq!(
        num(&b2, "objects_changed"),
        1,
        "same-size overwrite must be caught"
    );
    assert_eq!(num(&b2, "objects_removed"), 1);
    assert_eq!(num(&b2, "objects_unchanged"), data.len() as u64 - 2);
    assert_eq!(num(&b2, "bytes_read"), 5000 + 7000 + same_size.len() as u64);
    assert_eq!(num(&b2, "objects"), data.len() as u64 + 1);

    // The listing shows both snapshots, the second pointing at the first.
    let snaps = haul()
        .run(["--json", "snapshots", "--repo", &repo])
        .ok()
        .json();
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["parent"].as_str(), Some(snap1.as_str()));

    // Restore the latest snapshot into an empty bucket; compare every byte.
    // A low multipart threshold sends the 16 and 20 MiB objects through multipart.
    let dst_bucket = s3.bucket("dst");
    let target = format!("s3://{dst_bucket}/restored");
    let r1 = haul()
        .run([
            "--json",
            "--multipart-threshold-mib",
            "8",
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &target,
        ])
        .ok()
        .json();
    assert_eq!(num(&r1, "objects_copied"), data.len() as u64 + 1);
    assert_eq!(num(&r1, "objects_skipped"), 0);
    let dst = s3.store(&dst_bucket);
    assert_eq!(
        contents(&*dst, "restored").await,
        contents(&*src, "data").await
    );

    // Restoring the same snapshot again moves nothing.
    let again = haul()
        .run([
            "--json", "restore", "latest", "--repo", &repo, "--to", &target,
        ])
        .ok()
        .json();
    assert_eq!(num(&again, "objects_copied"), 0, "{again}");

    // Restore the older snapshot over the newer target: only the difference
    // moves (the overwritten object and the deleted one); the two objects
    // added later are extraneous and kept until asked to delete them.
    let older = haul()
        .run([
            "--json", "restore", &snap1, "--repo", &repo, "--to", &target,
        ])
        .ok()
        .json();
    assert_eq!(num(&older, "objects_copied"), 2, "{older}");
    assert_eq!(num(&older["plan"], "objects_missing"), 1);
    assert_eq!(num(&older["plan"], "objects_different"), 1);
    assert_eq!(num(&older, "objects_extraneous"), 2);
    assert_eq!(num(&older, "objects_deleted"), 0);
    assert!(
        dst.head(&Path::from("restored/chunk/new-a.0"))
            .await
            .is_ok(),
        "extraneous objects are kept"
    );
    let exact = haul()
        .run([
            "--json",
            "restore",
            &snap1,
            "--repo",
            &repo,
            "--to",
            &target,
            "--delete-extraneous",
        ])
        .ok()
        .json();
    assert_eq!(
        (
            num(&exact, "objects_copied"),
            num(&exact, "objects_deleted")
        ),
        (0, 2),
        "{exact}"
    );
    let want: Vec<(String, Vec<u8>)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        contents(&*dst, "restored").await,
        want,
        "the target equals the first snapshot exactly"
    );

    // Verify: sound, then one damaged chunk is found and named.
    haul().run(["verify", "--repo", &repo, "--read-data"]).ok();
    let victim = &data["chunk/0007.0"];
    let id = blake3::hash(victim).to_hex().to_string();
    // The victim is small: its blob is in a pack. Noise is stored raw, so
    // its bytes are found in whichever stored object holds them.
    let repo_store = s3.store(&repo_bucket);
    let stored: Vec<Path> = keys(&*repo_store, "backups/pach/packs")
        .await
        .into_iter()
        .map(Path::from)
        .collect();
    let mut damaged = false;
    for path in stored {
        let mut blob = repo_store
            .get(&path)
            .await
            .expect("pack exists")
            .bytes()
            .await
            .expect("bytes")
            .to_vec();
        let Some(at) = blob
            .windows(victim.len())
            .position(|w| w == victim.as_slice())
        else {
            continue;
        };
        blob[at + victim.len() / 2] ^= 0xff;
        repo_store
            .put(&path, blob.into())
            .await
            .expect("damage the chunk");
        damaged = true;
        break;
    }
    assert!(damaged, "the victim's bytes are in a pack");
    haul().run(["verify", "--repo", &repo]).ok(); // every chunk still exists
    let v = haul()
        .run(["verify", "--repo", &repo, "--read-data"])
        .fails_with(3, "damaged");
    assert!(
        v.stdout.contains(&id),
        "verify names the damaged chunk:\n{}",
        v.stdout
    );

    // A restore meets the damaged chunk: that object is never written, the
    // others are, and haul exits 3 naming it.
    let fresh = s3.bucket("fresh");
    let r = haul().run([
        "restore",
        &snap1,
        "--repo",
        &repo,
        "--to",
        &format!("s3://{fresh}"),
    ]);
    let r = r.fails_with(3, &id[..16]);
    assert!(r.stderr.contains("chunk/0007.0"), "{}", r.stderr);
    let restored = keys(&*s3.store(&fresh), "").await;
    assert!(
        !restored.contains(&"chunk/0007.0".to_owned()),
        "a damaged object is never written"
    );
    assert_eq!(restored.len(), data.len() - 1);
}

#[test]
fn local_backup_and_restore_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    for (k, v) in dataset()
        .into_iter()
        .filter(|(k, _)| !k.contains("big") && !k.contains("exact"))
    {
        let p = src.join(&k);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, v).expect("write");
    }
    let repo = format!("file://{}/repo", dir.path().display());
    let source = format!("file://{}", src.display());
    Haul::new().run(["init", &repo]).ok();
    Haul::new()
        .run(["backup", "--source", &source, "--repo", &repo])
        .ok();
    // Overwrite with the same size: the mtime changes, so the object is read.
    std::fs::write(src.join("meta/text"), b"PACHYDERM METADATA ".repeat(10_000)).expect("rewrite");
    let b = Haul::new()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    assert_eq!(num(&b, "objects_read"), 1, "{b}");
    let out = dir.path().join("out");
    Haul::new()
        .run([
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("file://{}", out.display()),
        ])
        .ok();
    for (k, _) in dataset()
        .into_iter()
        .filter(|(k, _)| !k.contains("big") && !k.contains("exact"))
    {
        assert_eq!(
            std::fs::read(out.join(&k)).expect("restored"),
            std::fs::read(src.join(&k)).expect("source"),
            "{k}"
        );
    }
    Haul::new()
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();
}

/// Per-store settings through the binary: a config file gives the source its
/// endpoint and the names of its credential variables; an AWS profile gives
/// the repository its own. No AWS_* credential variable is set at all. The
/// repository's chunks go up with signed SHA-256 payloads
/// (`payload = "signed"`, not the default) and read back whole.
#[tokio::test]
async fn s3_settings_from_config_file_and_aws_profile() {
    let Some(s3) = S3::from_env() else { return };
    let src_bucket = s3.bucket("cfgsrc");
    let repo_bucket = s3.bucket("cfgrepo");
    put(&*s3.store(&src_bucket), "chunk/a.0", noise(3000, 1)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("haul.toml");
    std::fs::write(
        &config,
        format!(
            "[[store]]\nurl = \"s3://{src_bucket}\"\nendpoint = \"{}\"\naccess_key_id_env = \"SRC_KEY\"\n\
             secret_access_key_env = \"SRC_SECRET\"\n\n[[store]]\nurl = \"s3://{repo_bucket}\"\nprofile = \"backup\"\n\
             payload = \"signed\"\n",
            s3.endpoint
        ),
    )
    .expect("config");
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.key, s3.secret
        ),
    )
    .expect("credentials");
    let aws_config = dir.path().join("config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile backup]\nregion = us-east-1\nendpoint_url = {}\n",
            s3.endpoint
        ),
    )
    .expect("aws config");
    let haul = || {
        Haul::new()
            .env("SRC_KEY", &s3.key)
            .env("SRC_SECRET", &s3.secret)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                creds.to_str().expect("utf-8"),
            )
            .env("AWS_CONFIG_FILE", aws_config.to_str().expect("utf-8"))
            .env("HAUL_CONFIG", config.to_str().expect("utf-8"))
    };
    let repo = format!("s3://{repo_bucket}/r");
    haul().run(["init", &repo]).ok();
    let b = haul()
        .run([
            "--json",
            "backup",
            "--source",
            &format!("s3://{src_bucket}"),
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(num(&b, "objects_read"), 1);
    haul().run(["verify", "--repo", &repo, "--read-data"]).ok();

    // A wrong secret behind the named variable: access denied, never echoed.
    let bad = haul()
        .env("SRC_SECRET", "not-the-secret-91c2")
        .run([
            "backup",
            "--source",
            &format!("s3://{src_bucket}"),
            "--repo",
            &repo,
        ])
        .fails_with(1, "access denied");
    assert!(!bad.stderr.contains("not-the-secret-91c2"));
    // A profile that does not exist is named in the error.
    Haul::new()
        .env("AWS_PROFILE", "nosuchprofile")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            creds.to_str().expect("utf-8"),
        )
        .env("AWS_CONFIG_FILE", aws_config.to_str().expect("utf-8"))
        .run(["snapshots", "--repo", &repo])
        .fails_with(1, "nosuchprofile");
}

/// `restore --dry-run` prints the plan and changes nothing.
#[tokio::test]
async fn restore_dry_run_changes_nothing() {
    let Some(s3) = S3::from_env() else { return };
    let src_bucket = s3.bucket("drysrc");
    let src = s3.store(&src_bucket);
    put(&*src, "chunk/a.0", noise(3000, 1)).await;
    put(&*src, "chunk/b.0", noise(4000, 2)).await;
    let repo = format!("s3://{}/r", s3.bucket("dryrepo"));
    s3.haul().run(["init", &repo]).ok();
    s3.haul()
        .run([
            "backup",
            "--source",
            &format!("s3://{src_bucket}"),
            "--repo",
            &repo,
        ])
        .ok();
    let dst_bucket = s3.bucket("drydst");
    let dst = s3.store(&dst_bucket);
    put(&*dst, "chunk/a.0", noise(3000, 1)).await;
    put(&*dst, "stray", noise(10, 3)).await;
    let before = contents(&*dst, "").await;
    let plan = s3
        .haul()
        .run([
            "--json",
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("s3://{dst_bucket}"),
            "--dry-run",
            "--delete-extraneous",
        ])
        .ok()
        .json();
    // The same shape as a real run's report: the bucket's plan under `plan`.
    assert!(
        plan["target"]
            .as_str()
            .is_some_and(|t| t.contains(&dst_bucket)),
        "{plan}"
    );
    let plan = &plan["plan"];
    assert_eq!(num(plan, "objects_missing"), 1, "{plan}");
    assert_eq!(num(plan, "objects_unchanged"), 1);
    assert_eq!(
        num(plan, "objects_checked"),
        1,
        "same-size object of unknown content is read, not trusted"
    );
    assert_eq!(num(plan, "objects_extraneous"), 1);
    assert_eq!(
        contents(&*dst, "").await,
        before,
        "a dry run changes nothing"
    );
}

/// Everything haul writes is private to its user whatever the umask it was
/// started with: a `file://` repository (it holds the dumps) and a restore
/// into a local folder.
#[test]
fn files_haul_writes_are_private() {
    use std::os::unix::fs::PermissionsExt;
    fn modes(dir: &std::path::Path, out: &mut Vec<(String, u32)>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let mode = std::fs::metadata(&p)
                .expect("metadata")
                .permissions()
                .mode();
            out.push((p.display().to_string(), mode & 0o777));
            if p.is_dir() {
                modes(&p, out);
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    std::fs::write(src.join("d/x"), b"data").expect("write");
    let repo = format!("file://{}/repo", dir.path().display());
    let to = format!("file://{}/restored", dir.path().display());
    // A permissive umask in the shell that starts haul.
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("umask 000; {cmd}")])
            .env("HAUL_KEY_FILE", crate::common::test_key_file())
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let haul = env!("CARGO_BIN_EXE_haul");
    sh(&format!("{haul} init {repo}"));
    sh(&format!(
        "{haul} backup --source file://{} --repo {repo}",
        src.display()
    ));
    sh(&format!("{haul} restore latest --repo {repo} --to {to}"));
    let mut all = Vec::new();
    modes(&dir.path().join("repo"), &mut all);
    modes(&dir.path().join("restored"), &mut all);
    assert!(all.len() > 5, "{all:?}");
    let open: Vec<_> = all.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
}
