//! Prune (issue 18): what only forgotten snapshots referenced is deleted,
//! in two steps (mark, then sweep after a grace period), without a lock;
//! what any snapshot still references is never lost, whether a backup runs
//! meanwhile or the prune is killed half-way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;

use crate::common::{Haul, files, haul_command, noise, read_tree};

/// A source folder and an encrypted `file://` repository (packs on).
struct Rig {
    dir: tempfile::TempDir,
    src: PathBuf,
    repo: String,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let repo = format!("file://{}/repo", dir.path().display());
        Haul::new().run(["init", &repo]).ok();
        Self { dir, src, repo }
    }

    fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Makes the source hold exactly `data`.
    fn set(&self, data: &BTreeMap<String, Vec<u8>>) {
        std::fs::remove_dir_all(&self.src).expect("clear");
        for (k, v) in data {
            let p = self.src.join(k);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, v).expect("write");
        }
    }

    fn backup(&self) -> serde_json::Value {
        Haul::new()
            .run([
                "--json",
                "backup",
                "--source",
                &format!("file://{}", self.src.display()),
                "--repo",
                &self.repo,
            ])
            .ok()
            .json()
    }

    fn prune(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json", "prune", "--repo", &self.repo];
        all.extend_from_slice(args);
        Haul::new().run(all).ok().json()
    }

    /// Restores `snapshot` and checks it holds exactly `data`.
    fn restores_exact(&self, snapshot: &str, data: &BTreeMap<String, Vec<u8>>, tag: &str) {
        let to = self.dir.path().join(tag);
        Haul::new()
            .run([
                "restore",
                snapshot,
                "--repo",
                &self.repo,
                "--to",
                &format!("file://{}", to.display()),
            ])
            .ok();
        assert_eq!(&read_tree(&to), data, "snapshot {snapshot} restores exact");
    }

    fn verify_read_data(&self) {
        let v = Haul::new().run(["verify", "--repo", &self.repo, "--read-data"]);
        assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    }

    fn size(&self) -> u64 {
        files(&self.repo_dir())
            .iter()
            .map(|f| std::fs::metadata(f).expect("meta").len())
            .sum()
    }
}

/// `n` small incompressible files under `prefix` (packed), seeded by `seed`.
fn small(prefix: &str, n: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}/f{i:03}"),
                noise(2000 + (i as usize % 7) * 500, seed + i),
            )
        })
        .collect()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

/// Two snapshots sharing a little; the first forgotten with --prune
/// --grace 0: the repository shrinks by what only it held (a 3 MiB loose
/// chunk, a pack mostly its own, repacked), the kept snapshot restores
/// byte-exact and `verify --read-data` passes; a second prune finds nothing.
#[test]
fn forget_prune_reclaims_what_only_forgotten_snapshots_held() {
    let rig = Rig::new();
    let mut first = small("a", 300, 1);
    first.insert("big".into(), noise(3 << 20, 7));
    rig.set(&first);
    let b1 = rig.backup();
    let s1 = b1["snapshot"].as_str().expect("id").to_owned();

    // The second keeps 30 of the 300 small files: their pack is 90%
    // unreferenced once the first goes.
    let mut second: BTreeMap<String, Vec<u8>> = first
        .iter()
        .filter(|(k, _)| k.starts_with("a/f00") || k.starts_with("a/f01") || k.starts_with("a/f02"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(second.len(), 30);
    second.extend(small("b", 50, 10_000));
    rig.set(&second);
    rig.backup();
    let before = rig.size();

    let out = Haul::new()
        .run([
            "--json", "forget", "--repo", &rig.repo, &s1, "--prune", "--grace", "0",
        ])
        .ok()
        .json();
    assert_eq!(out["snapshots_removed"], 1, "{out}");
    let p = &out["prune"];
    assert_eq!(p["snapshots_removed"], 1, "{p}");
    assert!(
        num(p, "chunks_deleted") >= 271,
        "the big chunk and 270 small ones: {p}"
    );
    assert!(num(p, "packs_repacked") >= 1, "{p}");
    let freed = num(p, "bytes_freed");
    let after = rig.size();
    assert!(freed >= 3 << 20, "{p}");
    assert!(
        before - after >= 3 << 20 && before - after + 64 * 1024 >= freed,
        "the repository shrank from {before} to {after}; prune says {freed} freed"
    );
    rig.restores_exact("latest", &second, "restored");
    rig.verify_read_data();

    let again = rig.prune(&["--grace", "0"]);
    assert_eq!(again["chunks_deleted"], 0, "{again}");
    assert_eq!(again["marked_chunks"], 0, "{again}");
    rig.verify_read_data();
}

/// A mark waits for its grace period; a backup that starts after the mark
/// stores marked chunks again instead of reusing them, and the sweep then
/// spares what it wrote (loose: rewritten after the mark; packed: a new
/// pack). The dry run changes nothing.
#[test]
fn marks_wait_for_grace_and_are_never_reused() {
    let rig = Rig::new();
    let mut gone = small("g", 40, 500);
    gone.insert("big".into(), noise(2 << 20, 77));
    rig.set(&gone);
    let s1 = rig.backup()["snapshot"].as_str().expect("id").to_owned();
    let other = small("o", 10, 900);
    rig.set(&other);
    rig.backup();
    Haul::new().run(["forget", "--repo", &rig.repo, &s1]).ok();

    let dry = rig.prune(&["--dry-run"]);
    assert!(num(&dry, "marked_chunks") >= 41, "{dry}");
    assert!(
        !rig.repo_dir().join("prune").exists(),
        "a dry run writes no mark"
    );

    let marked = rig.prune(&["--grace", "1h"]);
    assert!(num(&marked, "marked_chunks") >= 41, "{marked}");
    assert_eq!(marked["chunks_deleted"], 0, "{marked}");
    assert_eq!(marked["marks_pending"], 1, "{marked}");
    let again = rig.prune(&["--grace", "1h"]);
    assert_eq!(again["chunks_deleted"], 0, "not due yet: {again}");
    assert_eq!(again["marked_chunks"], 0, "already marked: {again}");

    // The same data again, after the mark: stored again, not reused.
    let mut back = gone.clone();
    back.extend(other.clone());
    rig.set(&back);
    let b3 = rig.backup();
    assert!(
        num(&b3, "bytes_uploaded") >= 2 << 20,
        "marked chunks are uploaded again: {b3}"
    );

    // The sweep (grace 0: the mark is due) deletes the old copies only.
    let swept = rig.prune(&["--grace", "0"]);
    assert_eq!(swept["marks_swept"], 1, "{swept}");
    assert!(num(&swept, "packs_deleted") >= 1, "{swept}");
    rig.restores_exact("latest", &back, "restored");
    rig.verify_read_data();
}

/// A backup that started before a prune's mark, reused chunks the mark
/// names, and committed after it: the sweep after the grace period finds
/// them referenced and keeps them; the backup restores byte-exact.
#[test]
fn a_backup_running_through_a_prune_keeps_what_it_reused() {
    let rig = Rig::new();
    let mut data = small("r", 30, 3_000);
    data.insert("big".into(), noise(2 << 20, 31));
    rig.set(&data);
    let s1 = rig.backup()["snapshot"].as_str().expect("id").to_owned();
    Haul::new().run(["forget", "--repo", &rig.repo, &s1]).ok();

    // The same data again, held just before its commit.
    let mut backup = haul_command();
    backup
        .args(["--json", "backup", "--source"])
        .arg(format!("file://{}", rig.src.display()))
        .args(["--repo", &rig.repo])
        .env("HAUL_FAILPOINTS", "root=sleep:6")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = backup.spawn().expect("spawn haul backup");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let marked = rig.prune(&["--grace", "3s"]);
    let out = child.wait_with_output().expect("backup ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    eprintln!("marked while the backup ran: {marked}; backup: {b}");

    std::thread::sleep(std::time::Duration::from_secs(3));
    let swept = rig.prune(&["--grace", "3s"]);
    assert!(num(&swept, "marks_swept") >= 1, "{swept}");
    rig.restores_exact("latest", &data, "restored");
    rig.verify_read_data();
}

/// A prune killed after rewriting the index, before deleting anything else:
/// the repository is valid (verify reads every chunk, the snapshot
/// restores), and the next prune finishes the sweep.
#[test]
fn a_killed_prune_leaves_a_valid_repository() {
    let rig = Rig::new();
    let mut first = small("k", 60, 8_000);
    first.insert("big".into(), noise(2 << 20, 5));
    rig.set(&first);
    let s1 = rig.backup()["snapshot"].as_str().expect("id").to_owned();
    let mut second: BTreeMap<String, Vec<u8>> = first
        .iter()
        .filter(|(k, _)| k.starts_with("k/f00"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(second.len(), 10);
    second.extend(small("m", 20, 9_000));
    rig.set(&second);
    rig.backup();
    Haul::new().run(["forget", "--repo", &rig.repo, &s1]).ok();

    Haul::new()
        .env("HAUL_FAILPOINTS", "prune-sweep")
        .run(["prune", "--repo", &rig.repo, "--grace", "0"])
        .fails_with(1, "failpoint prune-sweep");
    rig.verify_read_data();
    rig.restores_exact("latest", &second, "restored-1");

    let before = rig.size();
    let done = rig.prune(&["--grace", "0"]);
    // The big loose chunk, and the first snapshot's pack (its blobs no
    // longer in the index the killed prune rewrote: counted as a pack).
    assert!(num(&done, "chunks_deleted") >= 1, "{done}");
    assert!(num(&done, "packs_deleted") >= 1, "{done}");
    assert!(before - rig.size() >= 2 << 20, "{done}");
    rig.verify_read_data();
    rig.restores_exact("latest", &second, "restored-2");
}

/// On S3 (SeaweedFS): forget --prune reclaims what only the forgotten
/// snapshot held (through batched deletes), the kept one restores
/// byte-exact, and an incomplete multipart upload a killed run left in the
/// repository's bucket is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_s3_reclaims_and_aborts_stale_uploads() {
    let Some(s3) = crate::common::S3::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let bucket = s3.bucket("prune");
    let repo = format!("s3://{bucket}/repo");
    s3.haul().run(["init", &repo]).ok();
    let write = |data: &BTreeMap<String, Vec<u8>>| {
        let _ = std::fs::remove_dir_all(&src);
        for (k, v) in data {
            let p = src.join(k);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, v).expect("write");
        }
    };
    let source = format!("file://{}", src.display());
    let mut first = small("s", 50, 40_000);
    first.insert("big".into(), noise(3 << 20, 41));
    write(&first);
    let b1 = s3
        .haul()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    let second = small("t", 20, 50_000);
    write(&second);
    s3.haul()
        .run(["backup", "--source", &source, "--repo", &repo])
        .ok();

    // What a killed run leaves: a multipart upload never completed.
    let store = s3.store(&bucket);
    let mut upload = store
        .put_multipart(&object_store::path::Path::from("repo/chunks/ab/unfinished"))
        .await
        .expect("start an upload");
    upload
        .put_part(vec![7u8; 5 << 20].into())
        .await
        .expect("a part");
    drop(upload);

    let out = s3
        .haul()
        .run([
            "--json",
            "forget",
            "--repo",
            &repo,
            b1["snapshot"].as_str().expect("id"),
            "--prune",
            "--grace",
            "0",
        ])
        .ok()
        .json();
    let p = &out["prune"];
    assert!(num(p, "chunks_deleted") >= 51, "{p}");
    assert!(num(p, "bytes_freed") >= 3 << 20, "{p}");
    assert!(num(p, "uploads_aborted") >= 1, "{p}");

    let to = s3.bucket("prune-restored");
    s3.haul()
        .run([
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("s3://{to}"),
        ])
        .ok();
    let restored: BTreeMap<String, Vec<u8>> = crate::common::contents(&*s3.store(&to), "")
        .await
        .into_iter()
        .collect();
    assert_eq!(restored, second);
    let v = s3.haul().run(["verify", "--repo", &repo, "--read-data"]);
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
}

/// Object Lock, against both S3 servers here (moto's and SeaweedFS; both
/// enforce it): every chunk, pack, index and snapshot root is written with
/// the retention, a delete of any of their versions is refused before the
/// date, and forget --prune leaves the locked snapshot (saying until when);
/// it still restores. A bucket without Object Lock is refused at init.
#[test]
fn object_lock_keeps_backups_immutable() {
    let mut ran = 0;
    if let Some(moto) = crate::common::Alt::moto() {
        object_lock_case(&moto.endpoint, ("moto", "moto"), &|| moto.haul(), &|| {
            moto.bucket("unlocked")
        });
        ran += 1;
    }
    if let Some(s3) = crate::common::S3::from_env() {
        object_lock_case(&s3.endpoint, (&s3.key, &s3.secret), &|| s3.haul(), &|| {
            s3.bucket("unlocked")
        });
        ran += 1;
    }
    eprintln!("Object Lock checked against {ran} S3 server(s)");
}

fn object_lock_case(
    endpoint: &str,
    creds: (&str, &str),
    haul: &dyn Fn() -> Haul,
    plain_bucket: &dyn Fn() -> String,
) {
    let bucket = crate::common::unique_bucket("locked");
    crate::common::s3keys("mklocked", endpoint, creds, &bucket, b"");
    let repo = format!("s3://{bucket}/repo");
    let init = haul()
        .run([
            "--json",
            "init",
            &repo,
            "--object-lock",
            "2",
            "--object-lock-mode",
            "compliance",
        ])
        .ok()
        .json();
    assert_eq!(init["config"]["object_lock"]["days"], 2, "{init}");

    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mut data = small("l", 20, 70_000);
    data.insert("big".into(), noise(2 << 20, 71));
    for (k, v) in &data {
        let p = src.join(k);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, v).expect("write");
    }
    let source = format!("file://{}", src.display());
    let b = haul()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    let id = b["snapshot"].as_str().expect("id").to_owned();

    // Nobody can delete a version before the date: not these credentials.
    let mut immutable = Vec::new();
    for dir in ["chunks/", "packs/", "index/", "snapshots/", "config/"] {
        let tried = crate::common::s3keys(
            "try-delete",
            endpoint,
            creds,
            &bucket,
            format!("repo/{dir}").as_bytes(),
        );
        let tried: Vec<(String, Option<String>, Option<String>, String)> =
            serde_json::from_slice(&tried).expect("json");
        assert!(!tried.is_empty() || dir == "chunks/", "nothing under {dir}");
        immutable.extend(tried);
    }
    assert!(immutable.len() >= 4, "{immutable:?}");
    for (key, mode, until, result) in &immutable {
        assert_eq!(mode.as_deref(), Some("COMPLIANCE"), "{key}");
        assert!(until.is_some(), "{key}");
        assert_eq!(result, "refused", "{key} was deleted before its date");
    }
    // haul-repo.json (rewritten by `haul key`) is not locked; destroying
    // it does not make the backups unreadable: its locked copy opens them.
    let gone = crate::common::s3keys(
        "try-delete",
        endpoint,
        creds,
        &bucket,
        b"repo/haul-repo.json",
    );
    assert!(String::from_utf8_lossy(&gone).contains("deleted"));

    let forget = haul()
        .run([
            "--json", "forget", "--repo", &repo, &id, "--prune", "--grace", "0",
        ])
        .ok();
    let out = forget.json();
    assert_eq!(out["snapshots_removed"], 0, "{out}");
    assert_eq!(out["snapshots_locked"], 1, "{out}");
    assert_eq!(out["prune"]["chunks_deleted"], 0, "{out}");
    let text = haul()
        .run(["forget", "--repo", &repo, &id, "--dry-run"])
        .ok();
    assert!(
        text.stdout.contains("under Object Lock until"),
        "{}",
        text.stdout
    );

    let to = dir.path().join("restored");
    haul()
        .run([
            "restore",
            &id,
            "--repo",
            &repo,
            "--to",
            &format!("file://{}", to.display()),
        ])
        .ok();
    assert_eq!(read_tree(&to), data);

    // A bucket made without Object Lock cannot hold such a repository.
    let plain = plain_bucket();
    haul()
        .run(["init", &format!("s3://{plain}/repo"), "--object-lock", "2"])
        .fails_with(1, "does not have Object Lock enabled");
}

/// One prune at a time: a second refuses while the first runs, naming it;
/// a prune killed with -9 leaves a record that does not block the next.
#[test]
fn one_prune_at_a_time_and_a_dead_one_does_not_block() {
    let rig = Rig::new();
    rig.set(&small("p", 5, 123));
    rig.backup();
    let mut first = haul_command();
    first
        .args(["prune", "--repo", &rig.repo, "--grace", "1h"])
        .env("HAUL_FAILPOINTS", "prune-start=sleep:60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = first.spawn().expect("spawn haul prune");
    let running = rig.repo_dir().join("pruning");
    let t0 = std::time::Instant::now();
    while entries(&running) == 0 {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the first prune never recorded itself"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let second = Haul::new().run(["prune", "--repo", &rig.repo, "--grace", "1h"]);
    assert_ne!(second.code, 0, "{}", second.stdout);
    assert!(
        second.stderr.contains("another prune is running") && second.stderr.contains("pid"),
        "{}",
        second.stderr
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(entries(&running), 1, "a killed prune leaves its record");
    let third = rig.prune(&["--grace", "1h"]);
    assert_eq!(third["dry_run"], false, "{third}");
    assert!(entries(&running) == 0, "no record is left behind");
}

/// Files directly in `dir` (0 when it does not exist).
fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.count())
}
