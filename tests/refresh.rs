//! Refreshing a running staging cluster (`haul restore --pause`) through the
//! binary, against SeaweedFS, PostgreSQL and the fake cluster rig.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use crate::cluster_rig::Rig;
use crate::common::{Haul, Pg, S3, contents, noise, put};

/// A production snapshot and a staging cluster that differs from it.
struct Staging {
    s3: S3,
    pg: Pg,
    repo: String,
    /// Production's bucket contents at the backup.
    prod: Vec<(String, Vec<u8>)>,
    /// Production's `pachyderm` database at the backup.
    prod_rows: Vec<String>,
    bucket: String,
    store: Arc<dyn ObjectStore>,
    pach: String,
    dex: String,
}

async fn rows(pg: &Pg, db: &str) -> Vec<String> {
    pg.client(db)
        .await
        .query("SELECT key || '=' || val FROM items ORDER BY key", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

impl Staging {
    async fn new(tag: &str) -> Option<Self> {
        let s3 = S3::from_env()?;
        let pg = Pg::from_env()?;
        // Production: 40 objects, two databases, one snapshot.
        let src = s3.bucket(&format!("{tag}-prod"));
        let src_store = s3.store(&src);
        for i in 0..40u64 {
            put(
                src_store.as_ref(),
                &format!("chunk/{i:03}"),
                noise(3000 + i as usize * 10, i),
            )
            .await;
        }
        let prod_pach = pg.create_db(&format!("{tag}_ppach")).await;
        let prod_dex = pg.create_db(&format!("{tag}_pdex")).await;
        for db in [&prod_pach, &prod_dex] {
            pg.exec(
                db,
                "CREATE TABLE items (key text PRIMARY KEY, val text); \
                 INSERT INTO items SELECT 'k' || i, 'prod-' || md5(i::text) FROM generate_series(1, 500) i",
            )
            .await;
        }
        let repo = format!("s3://{}/haul", s3.bucket(&format!("{tag}-repo")));
        s3.haul().run(["init", &repo]).ok();
        s3.haul()
            .run([
                "backup",
                "--repo",
                &repo,
                "--source",
                &format!("s3://{src}"),
                "--db",
                &format!("pachyderm={}", pg.url(&prod_pach)),
                "--db",
                &format!("dex={}", pg.url(&prod_dex)),
            ])
            .ok();
        let prod = contents(src_store.as_ref(), "").await;
        let prod_rows = rows(&pg, &prod_pach).await;

        // Staging: half the objects as in production, five that differ, five
        // production lacks; databases with staging's own rows.
        let bucket = s3.bucket(&format!("{tag}-stg"));
        let store = s3.store(&bucket);
        for (i, (k, v)) in prod.iter().enumerate().take(20) {
            let v = if i < 5 {
                noise(v.len(), 9000 + i as u64)
            } else {
                v.clone()
            };
            put(store.as_ref(), k, v).await;
        }
        for i in 0..5u64 {
            put(
                store.as_ref(),
                &format!("chunk/stg-{i}"),
                noise(100, 7000 + i),
            )
            .await;
        }
        let pach = pg.create_db(&format!("{tag}_spach")).await;
        let dex = pg.create_db(&format!("{tag}_sdex")).await;
        for db in [&pach, &dex] {
            pg.exec(
                db,
                "CREATE TABLE items (key text PRIMARY KEY, val text); \
                 INSERT INTO items SELECT 'k' || i, 'staging-' || i FROM generate_series(1, 50) i",
            )
            .await;
        }
        Some(Self {
            s3,
            pg,
            repo,
            prod,
            prod_rows,
            bucket,
            store,
            pach,
            dex,
        })
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "--json",
            "restore",
            "latest",
            "--repo",
            &self.repo,
            "--to",
            &format!("s3://{}", self.bucket),
            "--db",
            &format!("pachyderm={}", self.pg.url(&self.pach)),
            "--db",
            &format!("dex={}", self.pg.url(&self.dex)),
            "--pause",
            "kubectl",
            "--context",
            "prod",
            "--namespace",
            "pachyderm",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    }

    fn haul(&self, rig: &Rig) -> Haul {
        let mut h = self.s3.haul();
        for (k, v) in rig.envs() {
            h = h.env(&k, &v);
        }
        h
    }

    async fn bucket_now(&self) -> BTreeMap<String, Vec<u8>> {
        contents(self.store.as_ref(), "")
            .await
            .into_iter()
            .collect()
    }
}

fn scaled_down(rig: &Rig) -> bool {
    rig.calls().iter().any(|c| {
        c[0] == "kubectl"
            && c.iter().any(|a| a == "scale")
            && c.last().is_some_and(|a| a == "--replicas=0")
    })
}

/// The refreshed staging equals the snapshot: bucket bytes and database
/// rows; the previous databases are kept, or dropped with --drop-previous.
/// Failures before the swap (live, or right after pausing) leave staging's
/// keys and databases as they were, with only added objects, no side
/// database, and the cluster resumed.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_staging_is_refreshed_with_a_short_pause() {
    let Some(st) = Staging::new("refresh").await else {
        return;
    };
    let before = st.bucket_now().await;
    let before_rows = rows(&st.pg, &st.pach).await;

    // Failures before the swap, live and paused.
    for (failpoint, pauses) in [
        ("refresh-live", false),
        ("refresh-paused", true),
        ("refresh-swap", true),
    ] {
        let rig = Rig::new();
        let run = st
            .haul(&rig)
            .env("HAUL_FAILPOINTS", failpoint)
            .run(st.args(&["--delete-extraneous"]))
            .fails_with(1, &format!("failure injected at {failpoint}"));
        assert_eq!(scaled_down(&rig), pauses, "{failpoint}: {}", run.stderr);
        assert!(rig.running(), "{failpoint}: not resumed\n{}", run.stderr);
        assert_eq!(
            rows(&st.pg, &st.pach).await,
            before_rows,
            "{failpoint}: database changed"
        );
        for db in [&st.pach, &st.dex] {
            assert!(
                !st.pg.exists(&format!("{db}_haul_next")).await,
                "{failpoint}: side database left"
            );
        }
        let now = st.bucket_now().await;
        if failpoint != "refresh-swap" {
            // Nothing that was there changed: no overwrite, no delete.
            for (k, v) in &before {
                assert_eq!(
                    now.get(k),
                    Some(v),
                    "{failpoint}: {k} changed before the pause"
                );
            }
        }
    }
    // The live phase added what staging lacked.
    let now = st.bucket_now().await;
    assert!(st.prod.iter().all(|(k, _)| now.contains_key(k)));

    // The refresh itself, with a session of the paused cluster left open
    // and a database setting of staging's own that the swap must keep.
    st.pg
        .admin(&[format!(
            "ALTER DATABASE \"{}\" SET work_mem = '7MB'",
            st.pach
        )])
        .await;
    let leftover = st.pg.client(&st.pach).await;
    let rig = Rig::new();
    let run = st.haul(&rig).run(st.args(&["--delete-extraneous"])).ok();
    assert!(
        leftover.simple_query("SELECT 1").await.is_err(),
        "the paused cluster's session was ended for the swap"
    );
    let settings: Vec<String> = st
        .pg
        .client("postgres")
        .await
        .query(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d \
             ON d.oid = s.setdatabase WHERE d.datname = $1",
            &[&st.pach],
        )
        .await
        .expect("settings")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        settings,
        ["work_mem=7MB"],
        "the refreshed database keeps staging's settings"
    );
    let r = run.json();
    assert!(scaled_down(&rig) && rig.running(), "{}", run.stderr);
    let bucket = st.bucket_now().await;
    let prod: BTreeMap<String, Vec<u8>> = st.prod.iter().cloned().collect();
    assert_eq!(bucket, prod, "staging's bucket equals the snapshot's");
    assert_eq!(rows(&st.pg, &st.pach).await, st.prod_rows);
    assert_eq!(
        rows(&st.pg, &format!("{}_haul_prev", st.pach)).await,
        before_rows
    );
    for d in r["databases"].as_array().expect("databases") {
        assert_eq!(d["swapped"], true, "{r:#}");
        assert!(
            d["previous"]
                .as_str()
                .is_some_and(|p| p.ends_with("_haul_prev"))
        );
    }
    let paused: Vec<&str> = r["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter(|p| p["paused"] == true)
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        paused,
        ["pause", "final-copy", "swap", "delete", "resume"],
        "{r:#}"
    );
    let downtime = r["downtime_s"].as_f64().expect("downtime_s");
    assert!(downtime > 0.0 && downtime < 30.0, "{r:#}");
    assert_eq!(r["paused"]["objects_deleted"], 5, "{r:#}");
    assert_eq!(
        r["live"]["objects_copied"], 0,
        "the failed runs already added: {r:#}"
    );

    // Again, dropping the previous databases: nothing to copy, a swap.
    let rig = Rig::new();
    let r = st.haul(&rig).run(st.args(&["--drop-previous"])).ok().json();
    assert_eq!(r["paused"]["objects_copied"], 0, "{r:#}");
    assert!(r["databases"][0]["previous"].is_null(), "{r:#}");
    assert!(!st.pg.exists(&format!("{}_haul_prev", st.pach)).await);
    assert_eq!(rows(&st.pg, &st.pach).await, st.prod_rows);

    // A dry run plans and predicts from the history, changing nothing.
    let rig = Rig::new();
    let plan = st.haul(&rig).run(st.args(&["--dry-run"])).ok().json();
    assert!(plan["predicted_downtime_s"].as_f64().is_some(), "{plan:#}");
    assert!(!scaled_down(&rig));
}

/// `kill -9` while staging is paused: `haul resume` resumes it, and the
/// next refresh cleans up the side databases and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_refresh_is_resumed() {
    let Some(st) = Staging::new("refreshkill").await else {
        return;
    };
    let rig = Rig::new();
    let mut cmd = crate::common::haul_command();
    cmd.args(st.args(&[]))
        .envs(rig.envs())
        .env("AWS_ENDPOINT_URL", &st.s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", &st.s3.key)
        .env("AWS_SECRET_ACCESS_KEY", &st.s3.secret)
        .env("AWS_REGION", "us-east-1")
        .env("HAUL_FAILPOINTS", "refresh-paused=sleep:60")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn haul");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("cluster paused in") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the refresh never paused");
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let stderr = reader.join().expect("reader");
    assert!(!rig.running(), "{stderr}");
    let out = st
        .haul(&rig)
        .run(["--json", "resume", "--repo", &st.repo])
        .ok();
    assert_eq!(out.json()["resumed"].as_array().map(Vec::len), Some(1));
    assert!(rig.running());
    // The side databases the dead run left are dropped by the next refresh.
    let r = st.haul(&Rig::new()).run(st.args(&[])).ok().json();
    assert_eq!(r["databases"][0]["swapped"], true, "{r:#}");
    assert_eq!(rows(&st.pg, &st.pach).await, st.prod_rows);
}

/// Staging refreshed, but the resume fails: exit 4, and the one JSON
/// document says the refresh was done beside what failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_that_cannot_resume_says_what_was_done() {
    let Some(st) = Staging::new("refreshnoresume").await else {
        return;
    };
    let rig = Rig::new();
    rig.fail_on(
        "scale deployment pachd --replicas=1",
        -1,
        "Error from server: etcd unavailable",
    );
    let run = st
        .haul(&rig)
        .run(st.args(&[]))
        .fails_with(4, "THE CLUSTER IS STILL PAUSED");
    let j = run.json();
    assert_eq!(j["exit_code"], 4, "{j:#}");
    assert_eq!(j["components"][0]["component"], "staging", "{j:#}");
    assert_eq!(j["components"][0]["ok"], true, "{j:#}");
    assert_eq!(j["components"][1]["component"], "cluster", "{j:#}");
    assert_eq!(rows(&st.pg, &st.pach).await, st.prod_rows, "swapped");
}
