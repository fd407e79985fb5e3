//! One conformance suite over haul's view of a store (sorted listing, ranged
//! reads, multipart writes, the chunk repository), run against memory, local
//! files and the real S3 server.

use bytes::Bytes;
use futures::TryStreamExt;
use haul_mover::{
    Engine, Limits, Location, MoverError, Repository, StoreConfig, StoreUrl, listing,
};
use object_store::{ObjectStoreExt, PutPayload};

use crate::common::{S3, noise};

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

    // The chunk repository: write once, read verified, list, detect damage.
    let repo_loc = loc.child("repo");
    let repo = Repository::init(repo_loc.clone(), Engine::new(Limits::default()))
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
    assert_eq!(repo.read_chunk(id).await.expect("read"), text);
    let reopened = Repository::open(repo_loc.clone(), Engine::new(Limits::default()))
        .await
        .expect("open");
    assert!(
        reopened
            .list_chunks()
            .await
            .expect("list chunks")
            .contains(&id)
    );
    let chunk_path = repo_loc.path(&haul_manifest::chunk_path(&id));
    repo_loc
        .store
        .put(
            &chunk_path,
            PutPayload::from_static(b"HLCK\x01\x01garbage-garbage"),
        )
        .await
        .expect("damage");
    assert!(matches!(
        reopened.read_chunk(id).await,
        Err(MoverError::Corrupt { .. })
    ));
    assert!(matches!(
        Repository::init(repo_loc.clone(), Engine::new(Limits::default())).await,
        Err(MoverError::NotEmpty { .. })
    ));

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
        left.iter()
            .all(|k| k.starts_with("big/") || k.starts_with("repo/")),
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
