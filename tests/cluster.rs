//! The cluster procedure end to end through the `haul` binary: fake
//! `kubectl`/`pachctl` (tests/fakes, see cluster_rig.rs) first on PATH, a
//! writer playing the application against the real S3 server and
//! PostgreSQL, and the two-phase backup, the pause guard, the config file,
//! the prediction and the Helm values rewrite.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};

use crate::cluster_rig::Rig;
use crate::common::{Haul, Pg, S3, keys, noise, put, snapshot_count};

/// The replica counts every rig starts with.
fn original_replicas() -> BTreeMap<String, i64> {
    [
        ("deployment/pach-enterprise", 1),
        ("deployment/pachd", 1),
        ("rc/pipeline-edges-v1", 2),
        ("rc/pipeline-montage-v1", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A cluster: its bucket (seeded with objects and their rows), its two
/// databases, a repository, and the fake cluster's rig.
struct Cluster {
    s3: S3,
    pg: Pg,
    rig: Rig,
    source: String,
    store: Arc<dyn ObjectStore>,
    repo: String,
    pachyderm: String,
    dex: String,
}

impl Cluster {
    /// A fresh cluster, or `None` (the test skips) without the services.
    async fn new(tag: &str, seed_objects: u64) -> Option<Self> {
        let s3 = S3::from_env()?;
        let pg = Pg::from_env()?;
        let source = s3.bucket(&format!("{tag}-src"));
        let repo_bucket = s3.bucket(&format!("{tag}-repo"));
        let store = s3.store(&source);
        let pachyderm = pg.create_db(&format!("{tag}_pach")).await;
        let dex = pg.create_db(&format!("{tag}_dex")).await;
        pg.exec(
            &pachyderm,
            "CREATE TABLE commits (id bigserial PRIMARY KEY, key text NOT NULL UNIQUE, size bigint NOT NULL, hash text NOT NULL)",
        )
        .await;
        pg.exec(
            &dex,
            "CREATE TABLE clients (id text PRIMARY KEY, secret text); INSERT INTO clients VALUES ('pachd', 'x'), ('console', 'y')",
        )
        .await;
        let client = pg.client(&pachyderm).await;
        for i in 0..seed_objects {
            let data = noise(16 << 10, i);
            let key = format!("chunk/seed-{i:05}");
            let hash = blake3::hash(&data).to_hex().to_string();
            let size = data.len() as i64;
            put(store.as_ref(), &key, data).await;
            client
                .execute(
                    "INSERT INTO commits (key, size, hash) VALUES ($1, $2, $3)",
                    &[&key, &size, &hash],
                )
                .await
                .expect("insert");
        }
        let repo = format!("s3://{repo_bucket}/haul");
        s3.haul().run(["init", &repo]).ok();
        Some(Self {
            s3,
            pg,
            rig: Rig::new(),
            source: format!("s3://{source}"),
            store,
            repo,
            pachyderm,
            dex,
        })
    }

    /// The same bucket, databases and repository, with a fresh rig.
    fn with_new_rig(&self) -> Cluster {
        Cluster {
            s3: self.s3.clone(),
            pg: self.pg.clone(),
            rig: Rig::new(),
            source: self.source.clone(),
            store: self.store.clone(),
            repo: self.repo.clone(),
            pachyderm: self.pachyderm.clone(),
            dex: self.dex.clone(),
        }
    }

    /// `haul` with S3 credentials and the fakes on PATH.
    fn haul(&self) -> Haul {
        let mut h = self.s3.haul();
        for (k, v) in self.rig.envs() {
            h = h.env(&k, &v);
        }
        h
    }

    /// The arguments of a kubectl-paused backup of this cluster.
    fn backup_args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "--json",
            "backup",
            "--repo",
            &self.repo,
            "--source",
            &self.source,
            "--db",
            &format!("pachyderm={}", self.pg.url(&self.pachyderm)),
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

    /// Calls of one tool, as argument strings without the global flags.
    fn calls_of(&self, tool: &str) -> Vec<String> {
        self.rig
            .calls()
            .into_iter()
            .filter(|c| c[0] == tool)
            .map(|c| {
                let mut out = Vec::new();
                let mut it = c.into_iter().skip(1);
                while let Some(a) = it.next() {
                    if a == "--context" || a == "--namespace" {
                        it.next();
                    } else {
                        out.push(a);
                    }
                }
                out.join(" ")
            })
            .collect()
    }

    fn scaled_down(&self) -> bool {
        self.calls_of("kubectl")
            .iter()
            .any(|c| c.starts_with("scale") && c.ends_with("--replicas=0"))
    }
}

fn phase<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no phase {name} in {report:#}"))
}

/// (a) and (d): with a writer adding objects and rows, the bucket is copied
/// live, the paused pass copies only what came in meanwhile, the cluster is
/// resumed to its counts, and the restored bucket holds exactly the objects
/// the restored rows reference.
#[tokio::test(flavor = "multi_thread")]
async fn two_phase_backup_pauses_only_for_the_delta_and_restores_consistently() {
    let Some(c) = Cluster::new("twophase", 300).await else {
        return;
    };
    let writer = c
        .rig
        .start_writer(c.store.clone(), "", &c.pg.url(&c.pachyderm));
    let t = Instant::now();
    while writer.written() < 20 {
        assert!(t.elapsed() < Duration::from_secs(30), "the writer is stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The dumps start 2 s after their snapshots were exported, so they run
    // (and end) after the resume while the writer keeps writing.
    let haul = c.haul().env("HAUL_FAILPOINTS", "dump=sleep:2");
    let args = c.backup_args(&[]);
    let run = tokio::task::spawn_blocking(move || haul.run(args))
        .await
        .expect("join")
        .ok();
    let report = writer.stop();
    let r = run.json();

    // Pre-copy read the bucket while the writer kept writing.
    let rounds = r["precopy_rounds"].as_u64().expect("precopy_rounds");
    assert!(
        rounds >= 2,
        "a round that read data is followed by another: {r:#}"
    );
    let first = &r["precopy"][0];
    assert!(
        first["objects_read"].as_u64().expect("read") >= 300,
        "{r:#}"
    );
    // The paused pass read only what arrived during the last round: a
    // small part of the bucket.
    let last = phase(&r, "final-copy");
    let total = last["listed"].as_u64().expect("listed");
    let paused_read = last["objects"].as_u64().expect("objects");
    assert!(total >= 320, "{r:#}");
    assert!(
        paused_read < total / 4,
        "the paused pass read {paused_read} of {total} objects: {r:#}"
    );
    assert_eq!(r["objects_read"].as_u64(), Some(paused_read));
    assert!(r["downtime_s"].as_f64().expect("downtime") > 0.0);
    assert!(r["predicted_downtime_s"].as_f64().is_some());
    for p in [
        "check",
        "precopy-1",
        "pause",
        "export",
        "final-copy",
        "resume",
        "dump",
        "commit",
    ] {
        phase(&r, p);
    }
    // Only the pause, the snapshots' export, the final pass and the resume
    // keep the cluster paused; they add up to the downtime. The dumps ran on.
    let paused: Vec<&serde_json::Value> = r["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter(|p| p["paused"] == true)
        .collect();
    let names: Vec<&str> = paused.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pause", "export", "final-copy", "resume"], "{r:#}");
    let paused_s: f64 = paused.iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    let downtime = r["downtime_s"].as_f64().expect("downtime");
    assert!(
        paused_s <= downtime + 1e-6 && paused_s > downtime - 0.5,
        "paused phases {paused_s}s against downtime {downtime}s: {r:#}"
    );
    assert_eq!(phase(&r, "dump")["paused"], false);
    assert!(
        phase(&r, "dump")["seconds"].as_f64().unwrap() >= 2.0,
        "the dumps ended after the resume: {r:#}"
    );
    assert!(
        report.skipped_while_paused > 0,
        "the writer never saw the pause"
    );

    // Resumed with the original counts; pachd scaled down before the workers.
    assert_eq!(c.rig.replicas(), original_replicas());
    assert!(c.rig.running());
    let kubectl = c.calls_of("kubectl");
    let down: Vec<&String> = kubectl
        .iter()
        .filter(|a| a.starts_with("scale") && a.ends_with("--replicas=0"))
        .collect();
    assert_eq!(
        down.first().map(|s| s.as_str()),
        Some("scale deployment pachd --replicas=0"),
        "{kubectl:#?}"
    );
    assert_eq!(down.len(), 3, "{kubectl:#?}");
    for up in [
        "scale deployment pachd --replicas=1",
        "scale replicationcontroller pipeline-edges-v1 --replicas=2",
        "scale replicationcontroller pipeline-montage-v1 --replicas=1",
    ] {
        assert!(kubectl.iter().any(|a| a == up), "no {up:?} in {kubectl:#?}");
    }
    assert!(
        c.rig
            .calls()
            .iter()
            .filter(|a| a[0] == "kubectl")
            .all(|a| a[1..5] == ["--context", "prod", "--namespace", "pachyderm"]),
        "every kubectl call names the context and namespace"
    );

    // Restore into a new bucket and new databases.
    let restored_bucket = c.s3.bucket("twophase-restored");
    let new_pach = Pg::unique("twophase_rpach");
    let new_dex = Pg::unique("twophase_rdex");
    c.haul()
        .run([
            "restore",
            "latest",
            "--repo",
            &c.repo,
            "--to",
            &format!("s3://{restored_bucket}"),
            "--db",
            &format!("pachyderm={}", c.pg.url(&new_pach)),
            "--db",
            &format!("dex={}", c.pg.url(&new_dex)),
        ])
        .ok();
    let rows =
        c.pg.client(&new_pach)
            .await
            .query("SELECT key, size FROM commits", &[])
            .await
            .expect("rows");
    let referenced: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let restored = c.s3.store(&restored_bucket);
    let present: BTreeSet<String> = keys(restored.as_ref(), "").await.into_iter().collect();
    assert!(referenced.len() >= 320, "{} rows", referenced.len());
    let missing: Vec<_> = referenced.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "rows reference objects the restored bucket lacks: {missing:?}"
    );
    // Writes are atomic with the pause: every object has its row.
    let orphans: Vec<_> = present.difference(&referenced).collect();
    assert!(orphans.is_empty(), "objects without rows: {orphans:?}");
    // The snapshot froze the database at the pause: the rows written after
    // the resume, while the dumps still ran, are not in it.
    let seeded = 300;
    assert!(
        referenced.len() < seeded + report.rows,
        "{} rows restored of {seeded} seeded and {} written",
        referenced.len(),
        report.rows
    );
    let dex_rows: i64 =
        c.pg.client(&new_dex)
            .await
            .query_one("SELECT count(*) FROM clients", &[])
            .await
            .expect("dex")
            .get(0);
    assert_eq!(dex_rows, 2);
}

/// pg_dump starts, and takes its table locks, while the cluster is paused;
/// its data waits until the cluster runs again. So DDL the application runs
/// after the resume (a migration at start-up) cannot change what the dump
/// shows: it waits for the dump, and the snapshot has the old schema.
#[tokio::test(flavor = "multi_thread")]
async fn a_dump_held_past_the_resume_keeps_its_table_locks() {
    let Some(c) = Cluster::new("heldlocks", 5).await else {
        return;
    };
    // More than pipes and the first read hold (a few hundred KiB), so
    // pg_dump is still running while held.
    c.pg.exec(
        &c.pachyderm,
        "INSERT INTO commits (key, size, hash) SELECT 'pad-' || g, 0, repeat('x', 200) \
         FROM generate_series(1, 20000) g",
    )
    .await;
    // The dumps' data is held 4 s past the resume.
    let haul = c.haul().env("HAUL_FAILPOINTS", "dump-held=sleep:4");
    let args = c.backup_args(&[]);
    let run = tokio::task::spawn_blocking(move || haul.run(args));
    let t = Instant::now();
    while !c
        .calls_of("kubectl")
        .iter()
        .any(|a| a == "scale deployment pachd --replicas=1")
    {
        assert!(t.elapsed() < Duration::from_secs(60), "never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = c.pg.client(&c.pachyderm).await;
    app.batch_execute("SET lock_timeout = '500ms'")
        .await
        .unwrap();
    let ddl = app
        .batch_execute("ALTER TABLE commits ADD COLUMN late int")
        .await
        .expect_err("DDL while the held dump holds its locks");
    assert!(
        format!("{ddl:?}").contains("lock timeout"),
        "the migration waits for the dump: {ddl:?}"
    );
    let r = run.await.expect("join").ok().json();
    assert!(
        phase(&r, "dump")["seconds"].as_f64().unwrap() >= 4.0,
        "{r:#}"
    );
    // Once the dump is done, the migration goes through.
    app.batch_execute("ALTER TABLE commits ADD COLUMN late int")
        .await
        .expect("DDL after the dump");
}

/// (b): whichever phase fails, the cluster ends as it began and nothing is
/// committed.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_is_resumed_after_a_failure_in_any_phase() {
    let Some(base) = Cluster::new("failures", 20).await else {
        return;
    };
    // (failpoint, kubectl call made to fail, pause timeout, expected stderr, pauses?)
    // `dump` and `commit` fail after the resume: the cluster runs again by then.
    let cases: [(&str, &str, &str, &str, bool); 7] = [
        ("precopy", "", "5m", "failure injected at precopy", false),
        (
            "",
            "scale replicationcontroller pipeline-montage-v1 --replicas=0",
            "5m",
            "cannot pause the cluster",
            true,
        ),
        ("paused", "", "5m", "failure injected at paused", true),
        ("paused=panic", "", "5m", "panic", true),
        ("dump", "", "5m", "failure injected at dump", true),
        ("commit", "", "5m", "failure injected at commit", true),
        ("", "", "1s", "did not pause within 1s", true),
    ];
    for (failpoint, fail_call, timeout, needle, pauses) in cases {
        let c = base.with_new_rig();
        if !fail_call.is_empty() {
            c.rig
                .fail_on(fail_call, 1, "Error from server (Conflict): injected");
        }
        if timeout == "1s" {
            // Pods that never stop.
            c.rig.update(|s| s["pod_linger_s"] = serde_json::json!(-1));
        }
        let before = snapshot_count(c.s3.haul(), &c.repo);
        let run = c
            .haul()
            .env("HAUL_FAILPOINTS", failpoint)
            .run(c.backup_args(&["--pause-timeout", timeout]));
        let run = run.fails_with(1, needle);
        assert_eq!(
            c.rig.replicas(),
            original_replicas(),
            "case {failpoint:?}/{fail_call:?}: not resumed:\n{}",
            run.stderr
        );
        assert_eq!(c.scaled_down(), pauses, "case {failpoint:?}/{fail_call:?}");
        let after_resume = matches!(failpoint, "dump" | "commit");
        if pauses && !after_resume {
            assert!(
                run.stderr.contains("resuming the cluster"),
                "{}",
                run.stderr
            );
        }
        if after_resume {
            assert!(run.stderr.contains("cluster resumed"), "{}", run.stderr);
        }
        assert_eq!(
            snapshot_count(c.s3.haul(), &c.repo),
            before,
            "case {failpoint:?}: a snapshot was committed"
        );
    }
}

/// (b): resuming that fails is loud, names the commands, exits 4; the
/// other steps are still taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_resume_is_loud_and_exits_4() {
    let Some(c) = Cluster::new("resumefail", 10).await else {
        return;
    };
    c.rig.fail_on(
        "scale deployment pachd --replicas=1",
        -1,
        "Error from server: etcd unavailable",
    );
    let run = c
        .haul()
        .run(c.backup_args(&[]))
        .fails_with(4, "THE CLUSTER IS STILL PAUSED");
    assert!(
        run.stderr.contains(
            "kubectl --context prod --namespace pachyderm scale deployment pachd --replicas=1"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("IS committed"), "{}", run.stderr);
    // The one JSON document says what was committed beside what failed.
    let j = run.json();
    assert_eq!(j["exit_code"], 4, "{j:#}");
    let snapshot = &j["components"][0];
    assert_eq!(snapshot["component"], "snapshot", "{j:#}");
    assert_eq!(snapshot["ok"], true);
    assert!(
        snapshot["done"]
            .as_str()
            .unwrap()
            .starts_with("committed as "),
        "{j:#}"
    );
    assert_eq!(j["components"][1]["component"], "cluster");
    assert_eq!(j["components"][1]["ok"], false);
    let r = c.rig.replicas();
    assert_eq!(r["deployment/pachd"], 0, "pachd could not be resumed");
    assert_eq!(r["rc/pipeline-edges-v1"], 2, "the other steps still ran");
    assert_eq!(snapshot_count(c.s3.haul(), &c.repo), 1);
}

/// (b): SIGINT, SIGTERM, SIGHUP (a dropped SSH session) and SIGQUIT in the
/// paused phase resume the cluster first, then exit 128 + the signal.
#[tokio::test(flavor = "multi_thread")]
async fn signals_in_the_paused_phase_resume_the_cluster() {
    let Some(base) = Cluster::new("signals", 10).await else {
        return;
    };
    for (signal, code) in [("INT", 130), ("TERM", 143), ("HUP", 129), ("QUIT", 131)] {
        let c = base.with_new_rig();
        let mut cmd = crate::common::haul_command();
        cmd.args(c.backup_args(&[]))
            .envs(c.rig.envs())
            .env("AWS_ENDPOINT_URL", &c.s3.endpoint)
            .env("AWS_ACCESS_KEY_ID", &c.s3.key)
            .env("AWS_SECRET_ACCESS_KEY", &c.s3.secret)
            .env("AWS_REGION", "us-east-1")
            .env("HAUL_FAILPOINTS", "paused=sleep:60")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn haul");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("cluster paused") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("haul never paused the cluster");
        assert_eq!(c.rig.replicas()["deployment/pachd"], 0);
        let kill = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        let status = child.wait().expect("wait");
        let stderr = reader.join().expect("reader");
        assert_eq!(status.code(), Some(code), "SIG{signal}:\n{stderr}");
        assert!(
            stderr.contains(&format!("interrupted by SIG{signal}")),
            "{stderr}"
        );
        assert_eq!(
            c.rig.replicas(),
            original_replicas(),
            "SIG{signal}:\n{stderr}"
        );
        assert_eq!(snapshot_count(c.s3.haul(), &c.repo), 0);
    }
}

/// A closed stderr (the SSH session that ran haul went away) while paused:
/// haul still backs up, resumes and exits 0 (it used to panic, exit 101).
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stderr_does_not_stop_a_paused_backup() {
    let Some(c) = Cluster::new("closedstderr", 10).await else {
        return;
    };
    let mut child = crate::common::haul_command()
        .args(c.backup_args(&[]))
        .envs(c.rig.envs())
        .env("AWS_ENDPOINT_URL", &c.s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", &c.s3.key)
        .env("AWS_SECRET_ACCESS_KEY", &c.s3.secret)
        .env("AWS_REGION", "us-east-1")
        .env("HAUL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn haul");
    drop(child.stderr.take());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert_eq!(c.rig.replicas(), original_replicas());
    assert_eq!(snapshot_count(c.s3.haul(), &c.repo), 1);
}

/// Starts a paused backup of `c` with `env`, waits until its stderr shows
/// `marker` and `ready` holds, then kills it with SIGKILL. Returns its stderr.
fn kill_9_when(
    c: &Cluster,
    env: &[(&str, &str)],
    marker: &str,
    ready: impl Fn() -> bool,
) -> String {
    let mut cmd = crate::common::haul_command();
    cmd.args(c.backup_args(&[]))
        .envs(c.rig.envs())
        .env("AWS_ENDPOINT_URL", &c.s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", &c.s3.key)
        .env("AWS_SECRET_ACCESS_KEY", &c.s3.secret)
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn haul");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("haul never got there");
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    reader.join().expect("reader")
}

/// (3): `kill -9` while pods are still stopping (the pause step) and in
/// the paused window leaves the cluster paused, with a pause record in the
/// repository; `haul resume` restores the exact replica counts and removes
/// the record. A stale record is resumed by the next backup, loudly, which
/// then backs up as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backup_is_resumed_from_its_pause_record() {
    let Some(base) = Cluster::new("kill9", 10).await else {
        return;
    };
    // The pause step: pods linger, haul waits for them when it is killed.
    let c = base.with_new_rig();
    c.rig.update(|s| s["pod_linger_s"] = serde_json::json!(30));
    let all_scaled = || {
        c.calls_of("kubectl")
            .iter()
            .filter(|a| a.starts_with("scale") && a.ends_with("--replicas=0"))
            .count()
            == 3
    };
    let stderr = kill_9_when(&c, &[], "the pause record is", all_scaled);
    assert!(stderr.contains("haul resume --repo"), "{stderr}");
    // Killed before any `cluster paused` line: the record was written first.
    assert!(!stderr.contains("cluster paused in"), "{stderr}");
    let down = c.rig.replicas();
    assert!(
        [
            "deployment/pachd",
            "rc/pipeline-edges-v1",
            "rc/pipeline-montage-v1"
        ]
        .iter()
        .all(|w| down[*w] == 0),
        "{down:?}\n{stderr}"
    );
    let out = c.haul().run(["--json", "resume", "--repo", &c.repo]).ok();
    let r = out.json();
    assert_eq!(r["resumed"].as_array().map(Vec::len), Some(1), "{r:#}");
    assert_eq!(r["resumed"][0]["method"], "kubectl");
    assert_eq!(r["resumed"][0]["steps"][0]["name"], "pachd");
    assert_eq!(c.rig.replicas(), original_replicas());
    // The record is gone: a second resume finds nothing.
    let again = c.haul().run(["--json", "resume", "--repo", &c.repo]).ok();
    assert_eq!(again.json()["resumed"].as_array().map(Vec::len), Some(0));

    // The paused window: the next backup resumes first, then backs up.
    let c = base.with_new_rig();
    let stderr = kill_9_when(
        &c,
        &[("HAUL_FAILPOINTS", "paused=sleep:60")],
        "cluster paused in",
        || true,
    );
    assert!(stderr.contains("the pause record is"), "{stderr}");
    let down = c.rig.replicas();
    assert_eq!(down["deployment/pachd"], 0, "{down:?}");
    let before = snapshot_count(c.s3.haul(), &c.repo);
    let run = c.haul().run(c.backup_args(&[])).ok();
    assert!(
        run.stderr
            .contains("A BACKUP THAT DIED LEFT THE CLUSTER PAUSED"),
        "{}",
        run.stderr
    );
    assert_eq!(c.rig.replicas(), original_replicas());
    assert_eq!(snapshot_count(c.s3.haul(), &c.repo), before + 1);
    let none = c.haul().run(["--json", "resume", "--repo", &c.repo]).ok();
    assert_eq!(none.json()["resumed"].as_array().map(Vec::len), Some(0));
}

/// (c): pachctl's active context must be the one named; a wrong one is
/// refused before anything is paused. The right one pauses and unpauses.
#[tokio::test(flavor = "multi_thread")]
async fn pachctl_refuses_a_wrong_context_and_pauses_the_right_one() {
    let Some(c) = Cluster::new("context", 10).await else {
        return;
    };
    let args = |ctx: &str| -> Vec<String> {
        let mut a = c.backup_args(&[]);
        let i = a.iter().position(|x| x == "kubectl").expect("pause arg");
        a[i] = "pachctl".into();
        let j = a.iter().position(|x| x == "prod").expect("context arg");
        a[j] = ctx.into();
        a
    };
    c.haul()
        .run(args("staging"))
        .fails_with(1, "pachctl's active-context is \"prod\", not \"staging\"");
    assert!(
        !c.calls_of("pachctl")
            .iter()
            .any(|a| a == "enterprise pause"),
        "paused despite the wrong context"
    );
    assert_eq!(snapshot_count(c.s3.haul(), &c.repo), 0);

    let r = c.haul().run(args("prod")).ok().json();
    let calls = c.calls_of("pachctl");
    let pause = calls
        .iter()
        .position(|a| a == "enterprise pause")
        .expect("paused");
    let unpause = calls
        .iter()
        .position(|a| a == "enterprise unpause")
        .expect("unpaused");
    assert!(pause < unpause);
    assert_eq!(c.rig.state()["paused"], "unpaused");
    assert!(
        !c.scaled_down(),
        "pachctl's pause does not scale with kubectl"
    );
    assert_eq!(r["pause"]["method"], "pachctl");

    // kubectl with an unknown context fails before pausing anything.
    let mut a = c.backup_args(&[]);
    let j = a.iter().position(|x| x == "prod").expect("context arg");
    a[j] = "nowhere".into();
    c.haul()
        .run(a)
        .fails_with(1, "context \"nowhere\" does not exist");
    assert!(!c.scaled_down());
}

/// (e): an Enterprise Server: pach-enterprise is scaled, pachd untouched,
/// and no object store is involved (the repository is a local folder).
#[tokio::test(flavor = "multi_thread")]
async fn the_enterprise_server_backup_touches_no_object_store() {
    let Some(pg) = Pg::from_env() else { return };
    let dex = pg.create_db("ent_dex").await;
    pg.exec(
        &dex,
        "CREATE TABLE clients (id text PRIMARY KEY); INSERT INTO clients VALUES ('a')",
    )
    .await;
    let rig = Rig::new();
    let dir = tempfile::tempdir().expect("tmp");
    let repo = format!("file://{}/repo", dir.path().display());
    // No S3 settings at all: any object store access would fail.
    let haul = |args: Vec<String>| {
        let mut h = Haul::new().env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        for (k, v) in rig.envs() {
            h = h.env(&k, &v);
        }
        h.run(args)
    };
    haul(vec!["init".into(), repo.clone()]).ok();
    let base = vec![
        "--json".to_owned(),
        "backup".into(),
        "--repo".into(),
        repo.clone(),
        "--db".into(),
        format!("dex={}", pg.url(&dex)),
        "--pause".into(),
        "enterprise".into(),
    ];
    let mut with_source = base.clone();
    with_source.extend(["--source".into(), "s3://pach-data".into()]);
    haul(with_source).fails_with(1, "an Enterprise Server has no object store");

    let r = haul(base).ok().json();
    let kubectl: Vec<Vec<String>> = rig
        .calls()
        .into_iter()
        .filter(|c| c[0] == "kubectl")
        .collect();
    assert!(
        kubectl.iter().any(|c| c.ends_with(&[
            "scale".into(),
            "deployment".into(),
            "pach-enterprise".into(),
            "--replicas=0".into()
        ])),
        "{kubectl:?}"
    );
    assert!(
        kubectl.iter().any(|c| c.ends_with(&[
            "scale".into(),
            "deployment".into(),
            "pach-enterprise".into(),
            "--replicas=1".into()
        ])),
        "{kubectl:?}"
    );
    assert!(
        kubectl.iter().all(|c| !c.contains(&"pachd".to_owned())),
        "pachd touched: {kubectl:?}"
    );
    assert_eq!(rig.replicas()["deployment/pach-enterprise"], 1);
    assert_eq!(r["precopy_rounds"], 0);
    assert_eq!(r["databases"][0]["name"], "dex");
    let snaps = haul(vec![
        "--json".into(),
        "snapshots".into(),
        "--repo".into(),
        repo,
    ])
    .ok()
    .json();
    assert_eq!(snaps[0]["source"], serde_json::Value::Null);
}

/// (f), item 5, item 3: a config file describes the cluster; the backup
/// keeps the Helm values; `--dry-run` predicts from the run history without
/// pausing; the whole cluster is restored with one command whose values
/// file points at the new databases and bucket.
#[tokio::test(flavor = "multi_thread")]
async fn config_file_prediction_and_helm_values_round_trip() {
    let Some(c) = Cluster::new("config", 50).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("values.yaml"),
        "# production values\n\
         deployTarget: AMAZON\n\
         global:\n  postgresql:\n    postgresqlHost: \"pg.prod.internal\" # managed\n    postgresqlPort: \"5432\"\n    postgresqlUsername: pachyderm\n    postgresqlDatabase: pachyderm\n    identityDatabaseFullNameOverride: dex\n\
         pachd:\n  storage:\n    backend: AMAZON\n    amazon:\n      bucket: \"pach-prod-data\" # the data\n      region: us-east-1\n\
         console:\n  enabled: true\n",
    )
    .expect("values");
    let restored_bucket = c.s3.bucket("config-restored");
    let new_pach = Pg::unique("config_rpach");
    let new_dex = Pg::unique("config_rdex");
    let config = dir.path().join("prod.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nrepo = \"{repo}\"\nsource = \"{source}\"\npause = \"kubectl\"\ncontext = \"prod\"\n\
             helm_values = \"values.yaml\"\nlabels = {{ cluster = \"prod\" }}\n\
             [cluster.databases]\npachyderm = \"{pach}\"\ndex = \"{dex}\"\n\
             [restore]\nto = \"s3://{restored_bucket}\"\nhelm_values_out = \"restored-values.yaml\"\n\
             [restore.databases]\npachyderm = \"{new_pach_url}\"\ndex = \"{new_dex_url}\"\n",
            repo = c.repo,
            source = c.source,
            pach = c.pg.url(&c.pachyderm),
            dex = c.pg.url(&c.dex),
            new_pach_url = c.pg.url(&new_pach),
            new_dex_url = c.pg.url(&new_dex),
        ),
    )
    .expect("config");
    let cfg = config.display().to_string();

    // Without history: a prediction from defaults, and nothing paused.
    let p = c
        .haul()
        .run(["--json", "backup", "-c", &cfg, "--dry-run"])
        .ok()
        .json();
    assert_eq!(p["pause"]["workloads"][0]["name"], "pachd");
    assert_eq!(p["forecast"]["model"]["samples"], 0);
    assert!(!c.scaled_down(), "a dry run paused the cluster");

    // Flags override the file: no pre-copy at all.
    let r = c
        .haul()
        .run(["--json", "backup", "-c", &cfg, "--precopy-rounds", "0"])
        .ok()
        .json();
    assert_eq!(r["precopy_rounds"], 0);
    assert!(r["helm_values"].is_string());
    assert_eq!(phase(&r, "final-copy")["objects"], 50);
    let r = c.haul().run(["--json", "backup", "-c", &cfg]).ok().json();
    assert_eq!(
        r["precopy_rounds"], 1,
        "a quiet bucket needs one round: {r:#}"
    );

    // With history: the model is fitted on the passes so far.
    let p = c
        .haul()
        .run([
            "--json",
            "backup",
            "-c",
            &cfg,
            "--dry-run",
            "--max-downtime",
            "10m",
        ])
        .ok()
        .json();
    let f = &p["forecast"];
    assert!(
        f["model"]["samples"].as_u64().expect("samples") >= 2,
        "{f:#}"
    );
    assert!(
        f["model"]["pause_s"].as_f64().expect("pause_s") > 0.0,
        "{f:#}"
    );
    assert!(f["predicted_downtime_s"].as_f64().expect("predicted") > 0.0);
    assert_eq!(f["fits"], true);
    let text = c
        .haul()
        .run(["backup", "-c", &cfg, "--dry-run"])
        .ok()
        .stdout;
    assert!(
        text.contains("downtime:") && text.contains("predicted"),
        "{text}"
    );

    // A budget that cannot be met leaves the cluster running, commits nothing.
    let before = snapshot_count(c.s3.haul(), &c.repo);
    let down_calls = c
        .calls_of("kubectl")
        .iter()
        .filter(|a| a.ends_with("--replicas=0"))
        .count();
    c.haul()
        .run(["backup", "-c", &cfg, "--max-downtime", "1ms"])
        .fails_with(1, "the downtime budget cannot be met");
    assert_eq!(snapshot_count(c.s3.haul(), &c.repo), before);
    assert_eq!(
        c.calls_of("kubectl")
            .iter()
            .filter(|a| a.ends_with("--replicas=0"))
            .count(),
        down_calls,
        "paused despite the budget"
    );

    // The whole cluster in one command: plan first, then the values file.
    let plan = c
        .haul()
        .run(["restore", "latest", "-c", &cfg, "--dry-run"])
        .ok()
        .stdout;
    assert!(plan.contains("global.postgresql.postgresqlHost"), "{plan}");
    assert!(!dir.path().join("restored-values.yaml").exists());
    c.haul().run(["restore", "latest", "-c", &cfg]).ok();
    let out = std::fs::read_to_string(dir.path().join("restored-values.yaml")).expect("values out");
    assert!(
        out.contains(&format!("bucket: \"{restored_bucket}\""))
            || out.contains(&format!("bucket: {restored_bucket}")),
        "{out}"
    );
    assert!(out.contains(&new_pach) && out.contains(&new_dex), "{out}");
    assert!(
        out.contains(&c.pg.host) && out.contains(&format!("\"{}\"", c.pg.port)),
        "{out}"
    );
    assert!(
        out.contains("# production values")
            && out.contains("# the data")
            && out.contains("region: us-east-1"),
        "comments and other keys are kept:\n{out}"
    );
    let n: i64 =
        c.pg.client(&new_pach)
            .await
            .query_one("SELECT count(*) FROM commits", &[])
            .await
            .expect("count")
            .get(0);
    assert_eq!(n, 50);
    let restored = c.s3.store(&restored_bucket);
    assert_eq!(keys(restored.as_ref(), "").await.len(), 50);
}

/// Issue 19: a running cluster backed up with `--shards 3 --executor
/// kubernetes`: every pass (pre-copy rounds and the paused one) is an
/// Indexed Job applied with `kubectl apply` (the fake runs its pods as
/// processes, each with its JOB_COMPLETION_INDEX) and deleted after; the
/// cluster is paused once and resumed to its counts; the snapshot restores
/// consistently (every row's object, no orphan); nothing stays staged.
#[tokio::test(flavor = "multi_thread")]
async fn a_sharded_backup_runs_its_passes_as_indexed_jobs_and_pauses_once() {
    let Some(c) = Cluster::new("shardjob", 200).await else {
        return;
    };
    let conf = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        conf.path().join("haul.toml"),
        format!(
            "[cluster]\nrepo = \"{}\"\nsource = \"{}\"\n",
            c.repo, c.source
        ),
    )
    .expect("config");
    let writer = c
        .rig
        .start_writer(c.store.clone(), "", &c.pg.url(&c.pachyderm));
    let t = Instant::now();
    while writer.written() < 20 {
        assert!(t.elapsed() < Duration::from_secs(30), "the writer is stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = conf.path().join("haul.toml").display().to_string();
    let haul = c
        .haul()
        .env("FAKE_IMAGE_BIN", env!("CARGO_BIN_EXE_haul"))
        .env(
            "FAKE_KUBE_MOUNTS",
            &format!("/etc/haul={}", conf.path().display()),
        );
    let mut args = vec!["-c".to_owned(), config];
    args.extend(c.backup_args(&["--shards", "3", "--executor", "kubernetes"]));
    let run = tokio::task::spawn_blocking(move || haul.run(args))
        .await
        .expect("join")
        .ok();
    let report = writer.stop();
    let r = run.json();
    assert!(r["precopy_rounds"].as_u64() >= Some(1), "{r:#}");
    assert!(r["downtime_s"].as_f64().expect("downtime") > 0.0);
    assert_eq!(c.rig.replicas(), original_replicas());
    assert!(c.rig.running());
    assert!(
        report.skipped_while_paused > 0,
        "the writer never saw the pause"
    );

    // One Job per pass, each deleted; one pause.
    let kubectl = c.calls_of("kubectl");
    let applied = kubectl.iter().filter(|a| *a == "apply -f -").count();
    let deleted = kubectl
        .iter()
        .filter(|a| a.starts_with("delete job haul-backup-"))
        .count();
    let passes = r["precopy_rounds"].as_u64().expect("rounds") as usize + 1;
    assert_eq!(applied, passes, "{kubectl:#?}");
    assert_eq!(deleted, passes, "{kubectl:#?}");
    let pauses = kubectl
        .iter()
        .filter(|a| *a == "scale deployment pachd --replicas=0")
        .count();
    assert_eq!(pauses, 1, "{kubectl:#?}");
    assert!(
        c.rig.state()["jobs"]
            .as_object()
            .is_none_or(|j| j.is_empty())
    );

    // The snapshot is consistent: every row's object, and no orphan.
    let restored_bucket = c.s3.bucket("shardjob-restored");
    let new_pach = Pg::unique("shardjob_rpach");
    c.haul()
        .run([
            "restore",
            "latest",
            "--repo",
            &c.repo,
            "--to",
            &format!("s3://{restored_bucket}"),
            "--db",
            &format!("pachyderm={}", c.pg.url(&new_pach)),
        ])
        .ok();
    let rows =
        c.pg.client(&new_pach)
            .await
            .query("SELECT key FROM commits", &[])
            .await
            .expect("rows");
    let referenced: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let restored = c.s3.store(&restored_bucket);
    let present: BTreeSet<String> = keys(restored.as_ref(), "").await.into_iter().collect();
    assert!(referenced.len() >= 220, "{} rows", referenced.len());
    assert_eq!(referenced, present, "rows and objects agree");
    // Nothing left under staging/ in the repository.
    let repo_bucket = c
        .repo
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .expect("bucket");
    let staged = keys(c.s3.store(repo_bucket).as_ref(), "haul/staging").await;
    assert!(staged.is_empty(), "{staged:?}");
}

/// A shard pod that fails (injected in index 1 of 3) leaves its record
/// missing: the coordinator waits `--wait`, then refuses, naming the shard;
/// the Job is deleted and nothing is committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_shard_pod_is_named_and_commits_nothing() {
    let Some(c) = Cluster::new("shardfail", 30).await else {
        return;
    };
    let conf = tempfile::tempdir().expect("tempdir");
    let config = conf.path().join("haul.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nrepo = \"{}\"\nsource = \"{}\"\n",
            c.repo, c.source
        ),
    )
    .expect("config");
    c.haul()
        .env("FAKE_IMAGE_BIN", env!("CARGO_BIN_EXE_haul"))
        .env(
            "FAKE_KUBE_MOUNTS",
            &format!("/etc/haul={}", conf.path().display()),
        )
        .env("HAUL_FAILPOINTS", "shard-1=fail")
        .run([
            "-c",
            &config.display().to_string(),
            "backup",
            "--shards",
            "3",
            "--executor",
            "kubernetes",
            "--wait",
            "4s",
        ])
        .fails_with(1, "1 of 3 shard(s) have not finished (no record): 1");
    let kubectl = c.calls_of("kubectl");
    assert!(
        kubectl
            .iter()
            .any(|a| a.starts_with("delete job haul-backup-")),
        "{kubectl:#?}"
    );
    assert_eq!(snapshot_count(c.haul(), &c.repo), 0);
}

/// Pachyderm's three steps to write a chunk object: a row (`uploaded =
/// false`), the object `chunk/<hex id>.<gen as %016x>`, then `uploaded =
/// true` (each step only when asked). Returns the key.
async fn pachyderm_chunk(
    client: &tokio_postgres::Client,
    store: &dyn ObjectStore,
    data: Vec<u8>,
    put_object: bool,
    uploaded: bool,
) -> (String, Vec<u8>) {
    let id = blake3::hash(&data).as_bytes().to_vec();
    let size = data.len() as i64;
    let generation: i64 = client
        .query_one(
            "INSERT INTO storage.chunk_objects (chunk_id, size) VALUES ($1, $2) RETURNING gen",
            &[&id, &size],
        )
        .await
        .expect("insert")
        .get(0);
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("chunk/{hex}.{generation:016x}");
    if put_object {
        put(store, &key, data.clone()).await;
    }
    if uploaded {
        mark_uploaded(client, &key).await;
    }
    (key, data)
}

/// The `gen` of the chunk object `key` (`chunk/<id>.<gen as %016x>`).
fn generation(key: &str) -> i64 {
    i64::from_str_radix(key.rsplit('.').next().expect("gen"), 16).expect("gen")
}

/// `UPDATE … SET uploaded = true` for the chunk object `key`.
async fn mark_uploaded(client: &tokio_postgres::Client, key: &str) {
    client
        .execute(
            "UPDATE storage.chunk_objects SET uploaded = true WHERE gen = $1",
            &[&generation(key)],
        )
        .await
        .expect("update");
}

/// `--final-pass pachyderm`: the paused pass copies what Pachyderm's paused
/// database says was written since the last pre-copy round began (a new
/// chunk, and an old row whose upload finished late), lists only the keys
/// outside `chunk/`, and never lists `chunk/` (an object there without an
/// uploaded row is not taken); the restore is exact.
#[tokio::test(flavor = "multi_thread")]
async fn the_pachyderm_final_pass_copies_what_the_paused_database_names() {
    let Some(c) = Cluster::new("journal", 0).await else {
        return;
    };
    let store = c.store.as_ref();
    let pach = c.pg.client(&c.pachyderm).await;
    pach.batch_execute(
        "CREATE SCHEMA storage;
         CREATE TABLE storage.chunk_objects (
             chunk_id BYTEA NOT NULL, gen BIGSERIAL NOT NULL,
             uploaded BOOLEAN NOT NULL DEFAULT FALSE, tombstone BOOLEAN NOT NULL DEFAULT FALSE,
             size INT8 NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
             PRIMARY KEY (chunk_id, gen))",
    )
    .await
    .expect("schema");

    // Refused before anything is paused: no pause, or not Pachyderm's database.
    c.haul()
        .run([
            "backup",
            "--repo",
            &c.repo,
            "--source",
            &c.source,
            "--final-pass",
            "pachyderm",
        ])
        .fails_with(1, "--final-pass pachyderm applies to a paused backup");
    let not_pachyderm = [
        "backup".to_owned(),
        "--repo".into(),
        c.repo.clone(),
        "--source".into(),
        c.source.clone(),
        "--db".into(),
        format!("pachyderm={}", c.pg.url(&c.dex)),
        "--pause".into(),
        "kubectl".into(),
        "--context".into(),
        "prod".into(),
        "--namespace".into(),
        "pachyderm".into(),
        "--final-pass".into(),
        "pachyderm".into(),
    ];
    c.haul()
        .run(not_pachyderm)
        .fails_with(1, "no table storage.chunk_objects");
    assert!(!c.scaled_down(), "a refused backup paused the cluster");

    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..40u64 {
        let (k, d) = pachyderm_chunk(&pach, store, noise(3000 + i as usize, i), true, true).await;
        expected.insert(k, d);
    }
    // Around `chunk/` in path and byte order alike.
    for k in [
        "a/first",
        "chunk",
        "chunk.txt",
        "chunk-old/x",
        "chunk0/y",
        "zz/last",
    ] {
        let d = noise(500, k.len() as u64);
        put(store, k, d.clone()).await;
        expected.insert(k.to_owned(), d);
    }
    // A row written before the backup whose upload finishes only later.
    let (late, late_data) = pachyderm_chunk(&pach, store, noise(4000, 100), false, false).await;

    let hold = tempfile::tempdir().expect("tempdir");
    let haul = c
        .haul()
        .env("FAKE_HOLD_PAUSE", hold.path().to_str().expect("utf-8"));
    let args = c.backup_args(&["--final-pass", "pachyderm", "--precopy-rounds", "1"]);
    let run = tokio::task::spawn_blocking(move || haul.run(args));

    // The pre-copy round is over and haul is pausing: the application's last writes.
    let t = Instant::now();
    while !hold.path().join("held").exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "haul never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (new, new_data) = pachyderm_chunk(&pach, store, noise(5000, 101), true, true).await;
    expected.insert(new.clone(), new_data);
    put(store, &late, late_data.clone()).await;
    mark_uploaded(&pach, &late).await;
    expected.insert(late.clone(), late_data);
    // Uploading when paused: no row says it is there, so nothing needs it.
    let (in_flight, _) = pachyderm_chunk(&pach, store, noise(600, 102), true, false).await;
    // Uploaded, then deleted by Pachyderm's garbage collection.
    let (gone, _) = pachyderm_chunk(&pach, store, noise(700, 103), true, true).await;
    pach.execute(
        "UPDATE storage.chunk_objects SET tombstone = true WHERE gen = $1",
        &[&generation(&gone)],
    )
    .await
    .expect("tombstone");
    // Outside chunk/: listed while paused, so new, changed and deleted keys count.
    for (k, d) in [("b/new", noise(800, 104)), ("chunk.txt", noise(900, 105))] {
        put(store, k, d.clone()).await;
        expected.insert(k.to_owned(), d);
    }
    store
        .delete(&object_store::path::Path::from("zz/last"))
        .await
        .expect("delete");
    expected.remove("zz/last");
    std::fs::write(hold.path().join("release"), b"").expect("release");

    let r = run.await.expect("join").ok().json();
    assert_eq!(r["final_pass"], "pachyderm", "{r:#}");
    assert_eq!(
        r["journal_objects"], 2,
        "the new chunk and the late upload: {r:#}"
    );
    let last = phase(&r, "final-copy");
    assert_eq!(last["paused"], true);
    assert_eq!(
        last["objects"], 4,
        "2 chunk objects, b/new, chunk.txt: {r:#}"
    );
    assert_eq!(r["objects_removed"], 1, "zz/last: {r:#}");
    assert_eq!(
        c.rig.replicas(),
        original_replicas(),
        "resumed to its counts"
    );

    let restored_bucket = c.s3.bucket("journal-restored");
    c.haul()
        .run([
            "restore",
            "latest",
            "--repo",
            &c.repo,
            "--to",
            &format!("s3://{restored_bucket}"),
        ])
        .ok();
    let restored: BTreeMap<String, Vec<u8>> =
        crate::common::contents(c.s3.store(&restored_bucket).as_ref(), "")
            .await
            .into_iter()
            .collect();
    assert!(
        !restored.contains_key(&in_flight),
        "chunk/ was listed while paused"
    );
    assert!(
        !restored.contains_key(&gone),
        "a tombstoned chunk was taken"
    );
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(restored == expected, "restored contents differ");
}
