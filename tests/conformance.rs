//! One conformance suite over haul's view of a store (sorted listing, ranged
//! reads, multipart writes, the chunk repository), run against memory, local
//! files and the real S3 server.

use bytes::Bytes;
use futures::TryStreamExt;
use haul_mover::{
    Engine, Limits, Location, MoverError, Repository, StoreConfig, StoreUrl, listing,
};
use object_store::{ObjectStoreExt, PutPayload};

use crate::common::{
    AZURITE_ACCOUNT, AZURITE_KEY, Alt, S3, contents, noise, s3_dump_exact, s3_put_exact,
};

/// Keys whose byte order differs from a naive directory walk, and unicode.
const KEYS: [&str; 9] = [
    "a-c",
    "a/b-",
    "a/b/c",
    "a0",
    "b",
    "chunk/00ff.1",
    "Z",
    "é/x",
    "a/a/a/a",
];

async fn suite(loc: Location) {
    // Sorted listing of tricky keys, with sizes.
    for (i, k) in KEYS.iter().enumerate() {
        loc.store
            .put(
                &loc.key_path(k).expect("key"),
                PutPayload::from(vec![b'x'; i + 1]),
            )
            .await
            .expect("put");
    }
    let listed: Vec<listing::Listed> = listing::sorted(&loc).try_collect().await.expect("list");
    let mut want: Vec<&str> = KEYS.to_vec();
    want.sort_by(|a, b| haul_manifest::diff::key_order(a, b));
    assert_eq!(
        listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
        want,
        "{}",
        loc.url
    );
    for l in &listed {
        let i = KEYS.iter().position(|k| *k == l.key).expect("known key");
        assert_eq!(l.size, i as u64 + 1);
    }

    // Ranged reads and multipart writes of parts above S3's 5 MiB minimum.
    let big = noise((5 << 20) + 4321, 9);
    let path = loc.path("big/object");
    let mut up = loc.store.put_multipart(&path).await.expect("multipart");
    up.put_part(PutPayload::from(big[..5 << 20].to_vec()))
        .await
        .expect("part 1");
    up.put_part(PutPayload::from(big[5 << 20..].to_vec()))
        .await
        .expect("part 2");
    up.complete().await.expect("complete");
    let got = loc
        .store
        .get_range(&path, 100..5_000_100)
        .await
        .expect("range");
    assert_eq!(&got[..], &big[100..5_000_100]);

    // The chunk repository: write once, read verified, list, detect
    // damage; with the chunk loose, and packed.
    for packed in [false, true] {
        let repo_loc = loc.child(if packed { "repo-packed" } else { "repo" });
        let mut config = haul_manifest::RepoConfig::new(
            haul_manifest::RepoId::from_random([packed as u8; 16]),
            chrono::Utc::now(),
        );
        if !packed {
            config.pack = None;
        }
        let repo = Repository::init_with(
            repo_loc.clone(),
            Engine::new(Limits::default()),
            None,
            config,
        )
        .await
        .expect("init");
        let text = Bytes::from("manifest line\n".repeat(1000));
        let (id, uploaded) = repo.put_plain(text.clone()).await.expect("put chunk");
        assert!(
            uploaded > 0 && uploaded < text.len() as u64,
            "compressible chunk is stored compressed"
        );
        let (again, uploaded2) = repo.put_plain(text.clone()).await.expect("put again");
        assert_eq!(
            (again, uploaded2),
            (id, 0),
            "an existing chunk is not uploaded again"
        );
        // Packed: read while its pack is still in memory (written first).
        assert_eq!(repo.read_chunk(id).await.expect("read"), text);
        repo.flush_packs().await.expect("flush");
        let reopened = Repository::open(repo_loc.clone(), Engine::new(Limits::default()), None)
            .await
            .expect("open");
        assert!(
            reopened
                .list_chunks()
                .await
                .expect("list chunks")
                .contains(&id)
        );
        assert_eq!(reopened.read_chunk(id).await.expect("read"), text);
        // Damage: the loose chunk overwritten, or its pack cut short.
        let damaged = if packed {
            let packs: Vec<_> = repo_loc
                .store
                .list(Some(&repo_loc.path(haul_manifest::pack::PACKS_DIR)))
                .try_collect()
                .await
                .expect("list packs");
            assert_eq!(packs.len(), 1, "{packs:?}");
            repo_loc.relative(&packs[0].location)
        } else {
            haul_manifest::chunk_path(&id)
        };
        repo_loc
            .store
            .put(
                &repo_loc.path(&damaged),
                PutPayload::from_static(b"HLCK\x01\x01garbage-garbage"),
            )
            .await
            .expect("damage");
        let reopened = Repository::open(repo_loc.clone(), Engine::new(Limits::default()), None)
            .await
            .expect("open");
        let read = reopened.read_chunk(id).await;
        assert!(matches!(read, Err(MoverError::Corrupt { .. })), "{read:?}");
        assert!(matches!(
            Repository::init(repo_loc.clone(), Engine::new(Limits::default()), None).await,
            Err(MoverError::NotEmpty { .. })
        ));
    }

    // Deletes.
    for k in KEYS {
        loc.store
            .delete(&loc.key_path(k).expect("key"))
            .await
            .expect("delete");
    }
    let left: Vec<String> = listing::sorted(&loc)
        .map_ok(|l| l.key)
        .try_collect::<Vec<_>>()
        .await
        .expect("list");
    assert!(
        left.iter().all(|k| k.starts_with("big/")
            || k.starts_with("repo/")
            || k.starts_with("repo-packed/")),
        "{left:?}"
    );
}

fn open(url: &str) -> Location {
    StoreConfig::default()
        .open(&StoreUrl::parse(url).expect("url"), true)
        .expect("open")
}

#[tokio::test]
async fn memory_store_conforms() {
    suite(open("memory://conformance")).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    suite(open(&format!("file://{}/store", dir.path().display()))).await;
}

#[tokio::test]
async fn s3_store_conforms() {
    let Some(s3) = S3::from_env() else { return };
    let bucket = s3.bucket("conf");
    let (endpoint, key, secret) = (s3.endpoint.clone(), s3.key.clone(), s3.secret.clone());
    let cfg = StoreConfig::default().with_env(move |k| match k {
        "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
        "AWS_ACCESS_KEY_ID" => Some(key.clone()),
        "AWS_SECRET_ACCESS_KEY" => Some(secret.clone()),
        _ => None,
    });
    let loc = cfg
        .open(
            &StoreUrl::parse(&format!("s3://{bucket}/some/prefix")).expect("url"),
            false,
        )
        .expect("open");
    suite(loc).await;
}

#[tokio::test]
async fn moto_s3_store_conforms() {
    let Some(moto) = Alt::moto() else { return };
    suite(moto.location(&moto.bucket("conf"))).await;
}

#[tokio::test]
async fn azurite_store_conforms() {
    let Some(az) = Alt::azurite() else { return };
    suite(az.location(&az.bucket("conf"))).await;
}

/// Through the binary, across two implementations nobody here wrote: a
/// bucket on Azurite (reached through `[[store]]` settings alone) backed up
/// into a repository on moto's S3 (reached through the environment),
/// verified, restored into both, and backed up again incrementally.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_round_trips_through_moto_and_azurite() {
    let (Some(moto), Some(az)) = (Alt::moto(), Alt::azurite()) else {
        return;
    };
    let (src, dst) = (az.bucket("src"), az.bucket("dst"));
    let (repo_bucket, s3_dst) = (moto.bucket("repo"), moto.bucket("dst"));
    let source = az.location(&src);
    let mut want = Vec::new();
    for (i, key) in ["a", "dir/b c", "dir/é", "big/object", "z/0"]
        .iter()
        .enumerate()
    {
        let len = if *key == "big/object" {
            (9 << 20) + 7
        } else {
            1000 * i
        };
        let data = noise(len, i as u64);
        source
            .store
            .put(
                &source.key_path(key).expect("key"),
                PutPayload::from(data.clone()),
            )
            .await
            .expect("put");
        want.push((key.to_string(), data));
    }
    want.sort();

    // Azurite through the config file only: endpoint, account, key variable.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("stores.toml");
    let section = |c: &str| {
        format!(
            "[[store]]\nurl = \"az://{c}\"\nendpoint = \"{}\"\naccount = \"{AZURITE_ACCOUNT}\"\naccess_key_env = \"TEST_AZ_KEY\"\n",
            az.endpoint
        )
    };
    std::fs::write(
        &config,
        section(&src) + &section(&dst) + &section("no-such-container"),
    )
    .expect("config");
    let haul = || {
        moto.haul()
            .env("HAUL_CONFIG", config.to_str().expect("utf-8"))
            .env("TEST_AZ_KEY", AZURITE_KEY)
    };
    let repo = format!("s3://{repo_bucket}/haul");
    haul().run(["init", &repo]).ok();
    let first = haul()
        .run([
            "--json",
            "backup",
            "--source",
            &format!("az://{src}"),
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(first["objects_read"], 5, "{first:#}");
    haul().run(["verify", "--repo", &repo, "--read-data"]).ok();
    for to in [format!("az://{dst}"), format!("s3://{s3_dst}")] {
        haul()
            .run(["restore", "latest", "--repo", &repo, "--to", &to])
            .ok();
    }
    let restored_az = az.location(&dst);
    assert_eq!(contents(&*restored_az.store, "").await, want, "Azurite");
    let restored_s3 = moto.location(&s3_dst);
    assert_eq!(contents(&*restored_s3.store, "").await, want, "moto");
    let again = haul()
        .run([
            "--json",
            "backup",
            "--source",
            &format!("az://{src}"),
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(again["objects_read"], 0, "incremental: {again:#}");

    // A missing container is named as one.
    let missing = haul().run([
        "backup",
        "--source",
        "az://no-such-container",
        "--repo",
        &repo,
    ]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("hint: the container of az://no-such-container does not exist"),
        "{}",
        missing.stderr
    );
    // A wrong key is access denied, with Azure's variables in the hint.
    let denied = haul()
        .env("TEST_AZ_KEY", &AZURITE_KEY.replace('E', "F"))
        .run([
            "backup",
            "--source",
            &format!("az://{src}"),
            "--repo",
            &repo,
        ]);
    assert_ne!(denied.code, 0);
    assert!(
        denied.stderr.contains("AZURE_STORAGE_ACCOUNT_KEY") && !denied.stderr.contains("AWS_"),
        "{}",
        denied.stderr
    );
}

/// Azurite stores `back\slash` as `back/slash`. A restore says so, by key,
/// and exits non-zero; the next restore with --delete-extraneous, which
/// sees `back/slash` as extraneous and writes `back\slash` again, never
/// deletes the object it has just written.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_target_normalises_is_named_and_never_deleted() {
    let Some(az) = Alt::azurite() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("back\\slash"), b"odd").expect("write");
    std::fs::write(src.join("plain"), b"fine").expect("write");
    let repo = format!("file://{}/repo", dir.path().display());
    az.haul().run(["init", &repo]).ok();
    az.haul()
        .run([
            "backup",
            "--source",
            &format!("file://{}", src.display()),
            "--repo",
            &repo,
        ])
        .ok();
    let dst = az.bucket("norm");
    let restore = || {
        az.haul().run([
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("az://{dst}"),
            "--delete-extraneous",
        ])
    };
    let first = restore();
    assert_ne!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stderr.contains("back\\slash") && first.stderr.contains("normalises"),
        "{}",
        first.stderr
    );
    let second = restore();
    assert_ne!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stderr.contains("stored it as \"back/slash\""),
        "{}",
        second.stderr
    );
    let target = az.location(&dst);
    let held = contents(&*target.store, "").await;
    assert_eq!(
        held,
        vec![
            ("back/slash".to_owned(), b"odd".to_vec()),
            ("plain".to_owned(), b"fine".to_vec())
        ],
        "nothing haul wrote was deleted"
    );
}

/// Keys S3 holds that object_store's paths cannot carry (`a//b`, `c/./d`,
/// `dir/`, `/lead`, control characters, `.` and `..`) used to fail every
/// listing, or vanish from backups. Written with boto3 into moto, which
/// holds them as given, each round-trips byte-exact through a backup and a
/// restore into another bucket, and an incremental backup and a second
/// restore with --delete-extraneous find nothing to do. Restored into
/// SeaweedFS, which normalises or refuses several of them, the restore
/// names each such key, exits non-zero, and deletes nothing it wrote.
#[tokio::test]
async fn every_awkward_s3_key_round_trips_or_is_named() {
    let (Some(moto), Some(s3)) = (Alt::moto(), S3::from_env()) else {
        return;
    };
    let keys = [
        "a//b",
        "c/./d",
        "e/../f",
        "dir/",
        "/lead",
        "tab\there",
        "cr\rhere",
        "odd\u{1}key",
        "del\u{7f}",
        "sp ace",
        "plus+sign",
        "pct%41",
        "back\\slash",
        "é/ü",
        "q?x=1&y",
        "hash#2",
        "..",
        ".",
        "x/..",
        "y/.",
        "plain",
    ];
    let objects: Vec<(String, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_owned(), noise(100 + i, i as u64)))
        .collect();
    let moto_creds = ("moto", "moto");
    let src = moto.bucket("keys");
    let refused = s3_put_exact(&moto.endpoint, moto_creds, &src, &objects);
    assert!(refused.is_empty(), "moto refused {refused:?}");
    let want = s3_dump_exact(&moto.endpoint, moto_creds, &src);
    assert_eq!(want.len(), keys.len(), "moto holds every key as written");

    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}/repo", dir.path().display());
    moto.haul().run(["init", &repo]).ok();
    let source = format!("s3://{src}");
    let first = moto
        .haul()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    assert_eq!(first["objects_read"], keys.len(), "{first:#}");
    moto.haul()
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();
    let again = moto
        .haul()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    assert_eq!(again["objects_read"], 0, "{again:#}");

    let dst = moto.bucket("keys-dst");
    let restore = |to: &str| {
        moto.haul().run([
            "--json",
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            to,
            "--delete-extraneous",
        ])
    };
    let to = format!("s3://{dst}");
    let r = restore(&to).ok().json();
    assert_eq!(r["objects_copied"], keys.len(), "{r:#}");
    assert_eq!(s3_dump_exact(&moto.endpoint, moto_creds, &dst), want);
    let r = restore(&to).ok().json();
    assert_eq!(
        (r["objects_copied"].as_u64(), r["objects_deleted"].as_u64()),
        (Some(0), Some(0)),
        "{r:#}"
    );
    assert_eq!(s3_dump_exact(&moto.endpoint, moto_creds, &dst), want);

    // SeaweedFS: `a//b` becomes `a/b`, `dir/` an empty directory, `c/./d`
    // is refused...: each named, nothing haul wrote deleted.
    let sw = s3.bucket("keys-sw");
    let to_sw = || {
        s3.haul().run([
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("s3://{sw}"),
            "--delete-extraneous",
        ])
    };
    let sw_creds = (s3.key.as_str(), s3.secret.as_str());
    for round in 0..2 {
        let r = to_sw();
        assert_ne!(r.code, 0, "{}", r.stderr);
        for k in ["a//b", "dir/", "c/./d", "/lead"] {
            assert!(
                r.stderr.contains(k),
                "round {round}: {k} not named: {}",
                r.stderr
            );
        }
        let held = s3_dump_exact(&s3.endpoint, sw_creds, &sw);
        for k in ["plain", "odd\u{1}key", "sp ace", "plus+sign", "tab\there"] {
            let w = want.iter().find(|(w, _)| w == k).expect("wanted");
            assert!(
                held.contains(w),
                "round {round}: {k} not restored: {held:?}"
            );
        }
    }
}
