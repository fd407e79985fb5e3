//! Format v2: an encrypted, authenticated repository (issue 16), through
//! the binary. Every other test's repository is encrypted too (the test
//! key file, see `common::Haul::new`); these check what encryption promises.

use std::path::{Path, PathBuf};

use crate::common::{Haul, Pg, files, test_key_file};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    if hay.len() < needle.len() {
        return false;
    }
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What whoever reads a file of the repository sees: a chunk's plaintext
/// when it is a plaintext chunk frame (decompressed), else its bytes.
fn readable(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.parse::<haul_manifest::ChunkId>() {
        Ok(id) => match haul_manifest::chunk::decode(&id, &bytes) {
            Ok(plain) => plain.into_owned(),
            Err(_) => bytes,
        },
        Err(_) => bytes,
    }
}

/// The markers found in any file of the repository at `dir` (a pack's
/// blobs decoded as its plaintext index says, when it has one).
fn markers_in(dir: &Path, markers: &[&str]) -> Vec<String> {
    let mut packed: std::collections::HashMap<String, Vec<haul_manifest::pack::Blob>> =
        Default::default();
    let index_dir = dir.join(haul_manifest::pack::INDEX_DIR);
    for f in files(dir).into_iter().filter(|f| f.starts_with(&index_dir)) {
        let bytes = std::fs::read(&f).expect("read");
        for e in haul_manifest::pack::decode(&bytes, "index").unwrap_or_default() {
            packed.insert(e.pack.to_hex(), e.blobs);
        }
    }
    let mut found = Vec::new();
    for f in files(dir) {
        let mut seen = readable(&f);
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        for b in packed.get(name).into_iter().flatten() {
            let at = b.offset as usize;
            let blob = &seen[at..at + b.len as usize];
            if let Ok(plain) = haul_manifest::chunk::decode(&b.name, blob) {
                let plain = plain.into_owned();
                seen.extend_from_slice(&plain);
            }
        }
        for m in markers {
            if contains(&seen, m.as_bytes()) {
                found.push(format!("{m} in {}", f.display()));
            }
        }
    }
    found
}

/// A bucket object, a database row and the Helm values each hold a marker.
/// In an unencrypted repository each is readable (the check works); in an
/// encrypted one none is, and no chunk is stored under the plain blake3 of
/// an object's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_stored_is_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let object = "OBJECT-MARKER-7f3a ".repeat(500);
    std::fs::write(src.join("doc.txt"), &object).expect("write");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "pachd:\n  rootToken: HELM-MARKER-91c2\npostgresql:\n  postgresqlPassword: HELM-MARKER-91c2\n",
    )
    .expect("values");
    let mut markers = vec!["OBJECT-MARKER-7f3a", "HELM-MARKER-91c2"];
    let mut db_args = Vec::new();
    if let Some(pg) = Pg::from_env() {
        let db = pg.create_db("enc").await;
        pg.exec(
            &db,
            "CREATE TABLE secrets (v text); INSERT INTO secrets SELECT 'ROW-MARKER-c0de' FROM generate_series(1, 1000);",
        )
        .await;
        db_args = vec!["--db".to_owned(), format!("dex={}", pg.url(&db))];
        markers.push("ROW-MARKER-c0de");
    }
    let back_up = |haul: &dyn Fn() -> Haul, repo: &str| {
        let mut args = vec![
            "backup".to_owned(),
            "--source".into(),
            format!("file://{}", src.display()),
            "--repo".into(),
            repo.to_owned(),
            "--helm-values".into(),
            values.display().to_string(),
        ];
        args.extend(db_args.iter().cloned());
        haul().run(&args).ok();
        haul().run(["verify", "--repo", repo, "--read-data"]).ok();
    };

    let plain = format!("file://{}/plain", dir.path().display());
    Haul::insecure()
        .run(["init", "--insecure-no-encryption", &plain])
        .ok();
    back_up(&Haul::insecure, &plain);
    let seen = markers_in(&dir.path().join("plain"), &markers);
    for m in &markers {
        assert!(
            seen.iter().any(|s| s.starts_with(m)),
            "the check must see {m} in an unencrypted repository: {seen:?}"
        );
    }

    let repo = format!("file://{}/repo", dir.path().display());
    Haul::new().run(["init", &repo]).ok();
    back_up(&Haul::new, &repo);
    let seen = markers_in(&dir.path().join("repo"), &markers);
    assert!(seen.is_empty(), "{seen:?}");
    let plain_id = blake3::hash(object.as_bytes()).to_hex().to_string();
    assert!(
        !names(&dir.path().join("repo")).contains(&plain_id),
        "no chunk is named by its plain hash"
    );
    assert!(
        names(&dir.path().join("plain")).contains(&plain_id),
        "unencrypted, the chunk is named by its hash"
    );
}

/// What names a repository shows: its files' names, and the chunk names
/// its pack indexes hold where they can be read.
fn names(dir: &Path) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for f in files(dir) {
        let bytes = std::fs::read(&f).expect("read");
        for e in haul_manifest::pack::decode(&bytes, "index").unwrap_or_default() {
            out.extend(e.blobs.iter().map(|b| b.name.to_hex()));
        }
        out.insert(f.file_name().expect("name").to_string_lossy().into_owned());
    }
    out
}

/// A flipped byte in any chunk, segment or snapshot root; a root swapped
/// for another snapshot's; a root replayed from another repository with the
/// same key: each is refused (exit 3), and nothing is restored from it.
#[test]
fn tampering_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), "first version ".repeat(100)).expect("write");
    let repo_dir = dir.path().join("repo");
    let repo = format!("file://{}", repo_dir.display());
    let source = format!("file://{}", src.display());
    Haul::new().run(["init", &repo]).ok();
    let backup = |repo: &str| {
        Haul::new()
            .run(["--json", "backup", "--source", &source, "--repo", repo])
            .ok()
            .json()["snapshot"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let first = backup(&repo);
    std::fs::write(src.join("a"), "second version ".repeat(100)).expect("write");
    let second = backup(&repo);
    let root = |id: &str| repo_dir.join(format!("snapshots/{id}.json"));
    let to = dir.path().join("out");
    let restore = |id: &str| {
        Haul::new().run([
            "restore",
            id,
            "--repo",
            &repo,
            "--to",
            &format!("file://{}", to.display()),
        ])
    };

    // Every stored file, one flipped byte at a time (restored after).
    let stored: Vec<PathBuf> = files(&repo_dir)
        .into_iter()
        .filter(|p| !p.ends_with("haul-repo.json") && !p.starts_with(repo_dir.join("runs")))
        .collect();
    assert!(stored.len() >= 4, "{stored:?}");
    for f in &stored {
        let good = std::fs::read(f).expect("read");
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x01;
        std::fs::write(f, &bad).expect("write");
        let r = Haul::new().run(["verify", "--repo", &repo, "--read-data"]);
        assert_eq!(r.code, 3, "{}: {}", f.display(), r.stderr);
        assert!(
            r.stderr.contains("refused") || r.stderr.contains("damaged"),
            "{}: {}",
            f.display(),
            r.stderr
        );
        std::fs::write(f, &good).expect("restore the file");
    }
    Haul::new()
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();

    // The first root under the second's name.
    let second_root = std::fs::read(root(&second)).expect("read");
    std::fs::copy(root(&first), root(&second)).expect("swap");
    restore(&second).fails_with(3, "refused");
    assert!(
        !to.join("a").exists(),
        "nothing restored from a swapped root"
    );
    std::fs::write(root(&second), &second_root).expect("put back");

    // A root of another repository (same key file) under this one's name.
    let other_dir = dir.path().join("other");
    let other = format!("file://{}", other_dir.display());
    Haul::new().run(["init", &other]).ok();
    let theirs = backup(&other);
    std::fs::copy(
        other_dir.join(format!("snapshots/{theirs}.json")),
        repo_dir.join(format!("snapshots/{theirs}.json")),
    )
    .expect("replay");
    restore(&theirs).fails_with(3, "refused");
    assert!(!to.join("a").exists());
    std::fs::remove_file(repo_dir.join(format!("snapshots/{theirs}.json"))).expect("rm");

    // Settings changed without the key.
    let cfg_path = repo_dir.join("haul-repo.json");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let mut v: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    v["zstd_level"] = 19.into();
    std::fs::write(&cfg_path, v.to_string()).expect("write");
    Haul::new()
        .run(["snapshots", "--repo", &repo])
        .fails_with(3, "changed by someone without the key");
    std::fs::write(&cfg_path, cfg).expect("put back");
    restore(&second).ok();
    assert_eq!(
        std::fs::read_to_string(to.join("a")).expect("restored"),
        "second version ".repeat(100)
    );
}

/// Keys: no key, a wrong key and a key for an unencrypted repository exit
/// 5; init needs a key or --insecure-no-encryption; add a password slot
/// (from a command), a key file slot, rotate the first key out, and the
/// data reads with each remaining key, never with a removed one. The key
/// file haul generates is private; argv never carries a key.
#[test]
fn keys_are_added_removed_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), b"keyed").expect("write");
    let repo = format!("file://{}/repo", dir.path().display());
    let source = format!("file://{}", src.display());

    Haul::new()
        .without_key()
        .run(["init", &repo])
        .fails_with(1, "--insecure-no-encryption");
    Haul::new().run(["init", &repo]).ok();
    Haul::new()
        .run(["backup", "--source", &source, "--repo", &repo])
        .ok();
    Haul::new()
        .without_key()
        .run(["snapshots", "--repo", &repo])
        .fails_with(5, "no key was given");

    let keyfile = dir.path().join("second.key");
    Haul::new()
        .run(["key", "generate", keyfile.to_str().expect("utf-8")])
        .ok();
    let mode = std::fs::metadata(&keyfile)
        .expect("key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    Haul::new()
        .run(["key", "generate", keyfile.to_str().expect("utf-8")])
        .fails_with(1, "never replaced");
    let second = || {
        Haul::new()
            .without_key()
            .env("HAUL_KEY_FILE", keyfile.to_str().expect("utf-8"))
    };
    second()
        .run(["snapshots", "--repo", &repo])
        .fails_with(5, "opens none of its key slots");

    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "correct horse battery staple\n").expect("pw");
    let added = Haul::new()
        .run([
            "--json",
            "key",
            "add",
            "--repo",
            &repo,
            "--new-password-command",
            &format!("cat {}", pw_file.display()),
            "--label",
            "ops vault",
        ])
        .ok()
        .json();
    assert_eq!(added["kind"], "password", "{added}");
    Haul::new()
        .run([
            "key",
            "add",
            "--repo",
            &repo,
            "--new-key-file",
            keyfile.to_str().expect("utf-8"),
        ])
        .ok();
    let list = Haul::new()
        .run(["--json", "key", "list", "--repo", &repo])
        .ok()
        .json();
    let slots = list["slots"].as_array().expect("slots").clone();
    assert_eq!(slots.len(), 3, "{list}");
    assert!(!list.to_string().contains("correct horse"), "{list}");

    // Rotate: the test key's slot goes; the password and the new file open.
    let first_slot = slots[0]["id"].as_str().expect("id").to_owned();
    second()
        .run(["key", "remove", "--repo", &repo, &first_slot])
        .ok();
    Haul::new()
        .run(["snapshots", "--repo", &repo])
        .fails_with(5, "opens none");
    let by_password = |pw: &str| {
        Haul::new().without_key().env("HAUL_PASSWORD", pw).run([
            "--json",
            "snapshots",
            "--repo",
            &repo,
        ])
    };
    assert_eq!(
        by_password("correct horse battery staple")
            .ok()
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    by_password("wrong horse").fails_with(5, "opens none");
    Haul::new()
        .without_key()
        .env("HAUL_PASSWORD_FILE", pw_file.to_str().expect("utf-8"))
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();
    second()
        .env("HAUL_PASSWORD", "x")
        .run(["snapshots", "--repo", &repo])
        .fails_with(1, "set only one");
    // The last slots cannot all go.
    let left = second()
        .run(["--json", "key", "list", "--repo", &repo])
        .ok()
        .json();
    let ids: Vec<String> = left["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    second()
        .run(["key", "remove", "--repo", &repo, &ids[0]])
        .ok();
    second()
        .run(["key", "remove", "--repo", &repo, &ids[1]])
        .fails_with(5, "only key slot");

    // An unencrypted repository refuses a key, and says it is unencrypted.
    let plain = format!("file://{}/plain", dir.path().display());
    Haul::new()
        .without_key()
        .run(["init", "--insecure-no-encryption", &plain])
        .ok();
    Haul::new()
        .run(["snapshots", "--repo", &plain])
        .fails_with(5, "not encrypted");
    let r = Haul::new()
        .without_key()
        .run(["snapshots", "--repo", &plain])
        .ok();
    assert!(r.stderr.contains("NOT ENCRYPTED"), "{}", r.stderr);
    assert!(
        std::fs::read_to_string(test_key_file()).is_ok(),
        "the test key is a file"
    );
}

/// A repository written by haul before format v2 (e072594, committed under
/// tests/data) restores byte-exact and verifies, without a key.
#[test]
fn a_format_v1_repository_is_still_readable() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo_dir = dir.path().join("repo");
    copy_tree(&data.join("v1-repo"), &repo_dir);
    let repo = format!("file://{}", repo_dir.display());
    let cfg = std::fs::read_to_string(repo_dir.join("haul-repo.json")).expect("config");
    assert!(cfg.contains("\"version\": 1"), "{cfg}");
    let v1 = || Haul::new().without_key();
    v1().run(["verify", "--repo", &repo, "--read-data"]).ok();
    let to = dir.path().join("out");
    v1().run([
        "restore",
        "latest",
        "--repo",
        &repo,
        "--to",
        &format!("file://{}", to.display()),
    ])
    .ok();
    let src = data.join("v1-src");
    for f in files(&src) {
        let rel = f.strip_prefix(&src).expect("under");
        assert_eq!(
            std::fs::read(to.join(rel)).expect("restored"),
            std::fs::read(&f).expect("original"),
            "{}",
            rel.display()
        );
    }
    // With a key it is refused: it cannot be what an encrypted one was.
    Haul::new()
        .run(["snapshots", "--repo", &repo])
        .fails_with(5, "format v1");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let dst = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_tree(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).expect("copy");
        }
    }
}
