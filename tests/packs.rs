//! Packs (issue 17): many small objects become a few large writes, and
//! come back byte-exact; a damaged or missing pack is found and named.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Haul, files, noise, read_tree};

/// 1,500 objects of 1–16 KiB (half noise, half text) and one of 3 MiB.
fn small_objects(src: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    for i in 0..1500u64 {
        let len = 1024 + (i as usize * 7919) % (15 * 1024);
        let body = if i % 2 == 0 {
            noise(len, i)
        } else {
            format!("row {i} ").repeat(len / 8).into_bytes()
        };
        data.insert(format!("d{:02}/o{i:05}", i % 13), body);
    }
    data.insert("big".into(), noise(3 << 20, 9_999));
    for (k, v) in &data {
        let p = src.join(k);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, v).expect("write");
    }
    data
}

/// Stored objects per top folder of a repository.
fn stored(repo: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in files(repo) {
        let rel = f.strip_prefix(repo).expect("inside");
        let top = rel
            .iter()
            .next()
            .expect("top")
            .to_string_lossy()
            .into_owned();
        *out.entry(top).or_insert(0) += 1;
    }
    out
}

/// An encrypted repository packs small chunks: 1,501 objects are a
/// handful of stored objects, restore byte-exact, and verify reads every
/// pack whole. An incremental backup adds one pack and one index and
/// reuses everything else; `--pack-size 0` stores one object per chunk.
#[test]
fn small_objects_are_packed_and_restored_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let data = small_objects(&src);
    let repo_dir = dir.path().join("repo");
    let repo = format!("file://{}", repo_dir.display());
    let source = format!("file://{}", src.display());
    Haul::new().run(["init", &repo]).ok();
    let backup = |repo: &str| {
        Haul::new()
            .run(["--json", "backup", "--source", &source, "--repo", repo])
            .ok()
            .json()
    };
    let b1 = backup(&repo);
    assert_eq!(b1["objects"], 1501, "{b1}");
    let s = stored(&repo_dir);
    // ~6 MiB of small chunks (the text compresses): one pack; the 3 MiB
    // object loose.
    assert_eq!(s.get("packs"), Some(&1), "{s:?}");
    assert_eq!(s.get("index"), Some(&1), "{s:?}");
    assert_eq!(s.get("chunks"), Some(&1), "{s:?}");

    Haul::new()
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();
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
    assert!(read_tree(&out) == data, "restored byte-exact");

    // Ten objects change: ten chunks and a segment go into one new pack.
    for i in 0..10u64 {
        let k = format!("d{:02}/o{i:05}", i % 13);
        std::fs::write(src.join(&k), noise(2000, 50_000 + i)).expect("write");
    }
    // (The restore recorded its target: a pack of manifest, an index.)
    let s1 = stored(&repo_dir);
    let b2 = backup(&repo);
    assert_eq!(b2["objects_read"], 10, "{b2}");
    let s2 = stored(&repo_dir);
    assert_eq!(s2["packs"], s1["packs"] + 1, "{s2:?}");
    assert_eq!(s2["index"], s1["index"] + 1, "{s2:?}");
    assert_eq!(s2.get("chunks"), Some(&1), "{s2:?}");
    // Nothing changed: no new chunk, so no pack, no index.
    let b3 = backup(&repo);
    assert_eq!(b3["chunks_uploaded"], 0, "{b3}");
    assert_eq!(
        stored(&repo_dir),
        BTreeMap::from_iter(s2.into_iter().map(|(k, v)| {
            let v = if k == "runs" || k == "snapshots" {
                v + 1
            } else {
                v
            };
            (k, v)
        }))
    );

    // Without packs: one stored object per chunk.
    let loose_dir = dir.path().join("loose");
    let loose = format!("file://{}", loose_dir.display());
    Haul::new().run(["init", "--pack-size", "0", &loose]).ok();
    backup(&loose);
    let s = stored(&loose_dir);
    assert!(s.get("chunks").copied().unwrap_or(0) > 1500, "{s:?}");
    assert_eq!(s.get("packs"), None, "{s:?}");
    Haul::new()
        .run(["init", "--pack-size", "300", &format!("{loose}-2")])
        .fails_with(2, "300");
}

/// Damage to packs, in an unencrypted repository: a flipped byte in a
/// packed chunk, a cut trailer and a deleted pack are each found by verify
/// (exit 3); a restore writes every object it can read, never the damaged
/// one, and exits 3 naming it. A lost index makes its packs' chunks missing.
#[test]
fn damaged_and_missing_packs_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let data = small_objects(&src);
    let repo_dir = dir.path().join("repo");
    let repo = format!("file://{}", repo_dir.display());
    Haul::insecure()
        .run(["init", "--insecure-no-encryption", &repo])
        .ok();
    Haul::insecure()
        .run([
            "backup",
            "--source",
            &format!("file://{}", src.display()),
            "--repo",
            &repo,
        ])
        .ok();
    let packs: Vec<_> = files(&repo_dir.join("packs"));
    assert_eq!(packs.len(), 1);
    let verify = || Haul::insecure().run(["verify", "--repo", &repo, "--read-data"]);
    verify().ok();

    // One byte of one noise object flipped inside its pack.
    let victim_key = "d05/o00018";
    let victim = &data[victim_key];
    let (pack, at) = packs
        .iter()
        .find_map(|p| {
            let b = std::fs::read(p).expect("read");
            let at = b
                .windows(victim.len())
                .position(|w| w == victim.as_slice())?;
            Some((p.clone(), at))
        })
        .expect("the victim's bytes are in a pack");
    let good = std::fs::read(&pack).expect("read");
    let mut bad = good.clone();
    bad[at + victim.len() / 2] ^= 0x01;
    std::fs::write(&pack, &bad).expect("flip");
    let v = verify().fails_with(3, "damaged");
    let victim_id = blake3::hash(victim).to_hex().to_string();
    assert!(v.stdout.contains(&victim_id), "{}", v.stdout);
    let out = dir.path().join("out");
    let r = Haul::insecure().run([
        "--json",
        "restore",
        "latest",
        "--repo",
        &repo,
        "--to",
        &format!("file://{}", out.display()),
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stdout.contains(victim_key), "{}", r.stdout);
    let mut restored = read_tree(&out);
    assert!(!restored.contains_key(victim_key), "never a damaged object");
    restored.insert(victim_key.to_owned(), victim.clone());
    assert!(restored == data, "every other object restored exact");

    // The pack's trailer cut off: verify, which reads packs whole, says so.
    std::fs::write(&pack, &good[..good.len() - 4]).expect("cut");
    let v = verify().fails_with(3, "damaged");
    assert!(v.stdout.contains("trailer"), "{}", v.stdout);

    // The pack gone altogether: its chunks are missing, named.
    std::fs::remove_file(&pack).expect("rm");
    let v = Haul::insecure()
        .run(["verify", "--repo", &repo])
        .fails_with(3, "missing");
    assert!(v.stdout.contains("missing"), "{}", v.stdout);
    std::fs::write(&pack, &good).expect("put back");
    verify().ok();

    // The index gone: every packed chunk is missing (the packs alone do
    // not make a chunk readable).
    let index_dir = repo_dir.join("index");
    let kept = dir.path().join("index-kept");
    std::fs::rename(&index_dir, &kept).expect("move the indexes away");
    Haul::insecure()
        .run(["verify", "--repo", &repo])
        .fails_with(3, "missing");
    std::fs::rename(&kept, &index_dir).expect("put back");
    verify().ok();
}

/// `haul init`'s chunk settings land in `haul-repo.json` (what `--json`
/// prints), and sizes out of range are refused before anything is written.
#[test]
fn init_sets_pack_and_dump_chunk_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}/repo", dir.path().display());
    let out = Haul::new()
        .run([
            "--json",
            "init",
            "--pack-size",
            "16",
            "--dump-chunk-kib",
            "64",
            &repo,
        ])
        .ok()
        .json();
    let c = &out["config"];
    assert_eq!(c["pack"]["size"], 16 << 20, "{c}");
    assert_eq!(c["pack"]["threshold"], 1 << 20, "{c}");
    assert_eq!(
        (&c["cdc"]["min"], &c["cdc"]["avg"], &c["cdc"]["max"]),
        (&(16 << 10).into(), &(64 << 10).into(), &(256 << 10).into()),
        "{c}"
    );
    let other = format!("file://{}/other", dir.path().display());
    Haul::new()
        .run(["init", "--dump-chunk-kib", "0", &other])
        .fails_with(2, "--dump-chunk-kib");
    assert!(!dir.path().join("other").exists(), "nothing written");
}
