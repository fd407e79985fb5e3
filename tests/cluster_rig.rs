//! A fake Pachyderm cluster for tests of haul's pause: fake `kubectl` and
//! `pachctl` executables (Python, in `tests/fakes/`) first on PATH, sharing a
//! state file, and a writer that plays the application: it writes chunk
//! objects and rows while the cluster runs and stops the moment it is paused.
//!
//! ```text
//!   test ──Rig::update/state──┐
//!   haul ──kubectl / pachctl──┼─ flock(lock) ─ state.json, calls.log
//!   Writer (own thread) ──────┘        └─ while running: S3 object + row
//! ```
//!
//! Every reader and writer of `state.json` holds an exclusive flock on
//! `lock`. The writer holds it across one object write and its INSERT, so a
//! pause (a `kubectl scale` or `pachctl enterprise pause`, which take the
//! same lock) falls between two writes: once it has returned, nothing more is
//! written until the cluster runs again.
//!
//! The state (see [`initial_state`]) is plain JSON, so a test shapes the
//! cluster with [`Rig::update`]. Keys beyond the contract: `paused_at`
//! (when `enterprise pause` ran) and `scaled_to_zero`
//! (`"deployment/pachd" -> {"at": unix seconds, "from": replicas}`), which
//! make pods linger for `pod_linger_s` after a scale to zero.
//!
//! The rig proves itself with the `rig_` tests at the end of this file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

/// The fakes, in the source tree (symlinked into each rig's `bin/`).
const FAKES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fakes");
/// How often `wait_for` looks at the state.
const POLL: Duration = Duration::from_millis(20);
/// The writer's pause between two chunks while the cluster runs…
const WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// …and between two looks at the state while it is paused.
const PAUSED_INTERVAL: Duration = Duration::from_millis(20);
/// Chunk sizes: 1 KiB to 64 KiB.
const CHUNK_MIN: usize = 1 << 10;
const CHUNK_MAX: usize = 64 << 10;

/// The cluster every rig starts with: two kube contexts, pachd and an
/// enterprise server with one replica each, two pipelines' worker rcs,
/// pods that take 0.3 s to go away, nothing paused, no failures armed.
pub fn initial_state() -> Value {
    json!({
        "contexts": ["prod", "staging"],
        "current_context": "prod",
        "pachctl": {"active_context": "prod", "active_enterprise_context": "enterprise"},
        "deployments": {"pachd": 1, "pach-enterprise": 1},
        "rcs": {"pipeline-edges-v1": 2, "pipeline-montage-v1": 1},
        "pod_linger_s": 0.3,
        "fail": [],
        "paused": "unpaused",
        "paused_at": null,
        "scaled_to_zero": {},
    })
}

/// Whether the application may write in this state: every deployment
/// (pachd, and the enterprise server if the state has one) has replicas and
/// pachctl has not paused the cluster. So scaling either server to zero, or
/// `enterprise pause`, stops the writer; a test of a cluster without an
/// enterprise server removes `deployments["pach-enterprise"]`.
pub fn running(state: &Value) -> bool {
    let up = state["deployments"]
        .as_object()
        .is_some_and(|d| !d.is_empty() && d.values().all(|r| r.as_i64().unwrap_or(0) > 0));
    up && state["paused"] == "unpaused"
}

/// One fake cluster: a temporary directory holding `bin/` (the fakes),
/// `state.json`, `lock` and `calls.log`. Dropping it deletes them.
#[derive(Debug)]
pub struct Rig {
    dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("haul-cluster-")
            .tempdir()
            .expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir bin");
        for tool in ["kubectl", "pachctl"] {
            let fake = Path::new(FAKES).join(tool);
            std::os::unix::fs::symlink(&fake, bin.join(tool))
                .unwrap_or_else(|e| panic!("link {}: {e}", fake.display()));
        }
        std::fs::write(dir.path().join("calls.log"), "").expect("calls.log");
        let rig = Rig { dir };
        rig.write_state(&initial_state());
        rig
    }

    /// Where the state lives: `FAKE_CLUSTER_DIR`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the fake tools; a test removes one from it to see
    /// haul cope without it.
    pub fn bin(&self) -> PathBuf {
        self.dir().join("bin")
    }

    /// `PATH` with the fakes first.
    pub fn path_env(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_default();
        format!("{}:{rest}", self.bin().display())
    }

    /// `PATH` and `FAKE_CLUSTER_DIR`, for `Haul::env` or `Command::envs`.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![
            ("PATH".to_owned(), self.path_env()),
            (
                "FAKE_CLUSTER_DIR".to_owned(),
                self.dir().display().to_string(),
            ),
        ]
    }

    /// The state, read under the lock.
    pub fn state(&self) -> Value {
        let _lock = self.lock();
        self.read_state()
    }

    /// Changes the state under the lock.
    pub fn update(&self, f: impl FnOnce(&mut Value)) {
        let _lock = self.lock();
        let mut state = self.read_state();
        f(&mut state);
        self.write_state(&state);
    }

    /// Every invocation of a fake so far, oldest first: the tool's name, then
    /// its arguments.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let _lock = self.lock();
        let log = std::fs::read_to_string(self.dir().join("calls.log")).expect("read calls.log");
        log.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("calls.log: {l}: {e}")))
            .collect()
    }

    /// Replicas of every deployment and rc: `"deployment/pachd" -> 1`,
    /// `"rc/pipeline-edges-v1" -> 2`, …
    pub fn replicas(&self) -> BTreeMap<String, i64> {
        let state = self.state();
        let mut out = BTreeMap::new();
        for (kind, table) in [("deployment", "deployments"), ("rc", "rcs")] {
            for (name, n) in state[table].as_object().into_iter().flatten() {
                out.insert(format!("{kind}/{name}"), n.as_i64().unwrap_or(-1));
            }
        }
        out
    }

    /// Whether the writer would write now (see [`running`]).
    pub fn running(&self) -> bool {
        running(&self.state())
    }

    /// Makes the next `times` calls whose command line (tool name first,
    /// kubectl's `--context`/`--namespace` left out) contains `pattern` fail
    /// with exit 1 and `stderr`; `times < 0` fails them all. A trailing `$`
    /// anchors the pattern at the end: `enterprise pause$` spares
    /// `enterprise pause-status`.
    pub fn fail_on(&self, pattern: &str, times: i64, stderr: &str) {
        self.update(|s| {
            s["fail"]
                .as_array_mut()
                .expect("fail is a list")
                .push(json!({"match": pattern, "times": times, "stderr": stderr}));
        });
    }

    /// Polls the state until `f` holds; panics naming `what` on timeout.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state();
            if f(&state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; state: {state:#}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Runs the fake `kubectl` as haul would: found on [`Rig::path_env`].
    pub fn kubectl(&self, args: &[&str]) -> ToolRun {
        self.tool("kubectl", args)
    }

    /// Runs the fake `pachctl` as haul would.
    pub fn pachctl(&self, args: &[&str]) -> ToolRun {
        self.tool("pachctl", args)
    }

    /// Starts the application's writer: while the cluster is [`running`], it
    /// puts chunk objects `<prefix>/chunk/<seq>-<hex>` of 1–64 KiB of random
    /// bytes into `store` and a row for each into table `commits` of the
    /// database at `pg_url` (created if missing). Stop it with
    /// [`Writer::stop`]; dropping it stops it too, without the report.
    pub fn start_writer(&self, store: Arc<dyn ObjectStore>, prefix: &str, pg_url: &str) -> Writer {
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let shared = Arc::new(Progress::default());
        let job = WriteJob {
            lock: self.dir().join("lock"),
            state: self.dir().join("state.json"),
            store,
            prefix,
            pg_url: pg_url.to_owned(),
            progress: Arc::clone(&shared),
        };
        let thread = std::thread::Builder::new()
            .name("cluster-rig-writer".into())
            .spawn(move || job.run())
            .expect("spawn writer");
        Writer {
            progress: shared,
            thread: Some(thread),
        }
    }

    fn tool(&self, tool: &str, args: &[&str]) -> ToolRun {
        let out = Command::new(tool)
            .args(args)
            .envs(self.envs())
            .output()
            .unwrap_or_else(|e| panic!("run fake {tool}: {e}"));
        ToolRun {
            argv: std::iter::once(tool)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn lock(&self) -> File {
        lock(&self.dir().join("lock"))
    }

    fn read_state(&self) -> Value {
        read_state(&self.dir().join("state.json")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn write_state(&self, state: &Value) {
        // Replace, never rewrite in place, like the fakes do.
        let path = self.dir().join("state.json");
        let tmp = self.dir().join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).expect("json")).expect("write state");
        std::fs::rename(&tmp, &path).expect("replace state");
    }
}

/// Takes the exclusive flock that guards the state; it is released when the
/// returned file is closed.
fn lock(path: &Path) -> File {
    try_lock(path).unwrap_or_else(|e| panic!("{e}"))
}

// The fakes' `fcntl.flock` and `File::lock` are the same flock(2); there is
// no other safe way to take it without a new dependency, so the integration
// tests need Rust 1.89, above the workspace's MSRV.
#[allow(clippy::incompatible_msrv)]
fn try_lock(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| format!("flock {}: {e}", path.display()))?;
    Ok(file)
}

fn read_state(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// What a fake tool did.
#[derive(Debug)]
pub struct ToolRun {
    /// The command line, for messages.
    pub argv: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "`{}` failed:\nstdout:\n{}\nstderr:\n{}",
            self.argv, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, stderr: &str) -> Self {
        assert_eq!(
            (self.code, self.stderr.trim_end()),
            (code, stderr),
            "`{}`: stdout:\n{}",
            self.argv,
            self.stdout
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}):\n{}", self.argv, self.stdout))
    }
}

/// The application writing while the cluster runs. Stop it with
/// [`Writer::stop`]; dropping it stops it as well (a failing test does not
/// leave it writing), discarding the report.
#[derive(Debug)]
pub struct Writer {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<Result<WriterReport, String>>>,
}

/// What the writer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterReport {
    /// Every object written, in order; each has a row in `commits`.
    pub keys: Vec<String>,
    /// Rows inserted into `commits`.
    pub rows: usize,
    /// How many times the writer found the cluster paused and waited.
    pub skipped_while_paused: usize,
}

impl Writer {
    /// Stops the writer and reports what it wrote; panics with the writer's
    /// error if it had one.
    #[track_caller]
    pub fn stop(mut self) -> WriterReport {
        self.progress.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("writer thread");
        match thread.join() {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => panic!("the cluster rig's writer failed: {e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Chunks written so far (each an object and a row). Panics with the
    /// writer's error if it has failed, so a test waiting for progress sees
    /// the cause rather than a timeout.
    #[track_caller]
    pub fn written(&self) -> usize {
        if let Some(e) = self.progress.error.lock().expect("writer error").as_ref() {
            panic!("the cluster rig's writer failed: {e}");
        }
        self.progress.written.load(Ordering::Relaxed)
    }

    /// Times the writer found the cluster paused so far.
    pub fn skipped(&self) -> usize {
        self.progress.skipped.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.progress.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Its result goes unreported: either stop() already reported,
            // or the test is failing for another reason.
            let _ = thread.join();
        }
    }
}

/// Shared between a [`Writer`] and its thread.
#[derive(Debug, Default)]
struct Progress {
    stop: AtomicBool,
    written: AtomicUsize,
    skipped: AtomicUsize,
    /// The writer's error, as soon as it has one (also returned by the thread).
    error: Mutex<Option<String>>,
}

/// Everything the writer thread needs.
struct WriteJob {
    lock: PathBuf,
    state: PathBuf,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    pg_url: String,
    progress: Arc<Progress>,
}

impl WriteJob {
    fn run(self) -> Result<WriterReport, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let result = runtime.block_on(self.write_while_running());
        if let Err(e) = &result {
            *self.progress.error.lock().expect("writer error") = Some(e.clone());
        }
        result
    }

    async fn write_while_running(&self) -> Result<WriterReport, String> {
        let (db, conn) = tokio_postgres::connect(&self.pg_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.pg_url))?;
        tokio::spawn(conn);
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS commits (id bigserial PRIMARY KEY, key text NOT NULL UNIQUE, \
             size bigint NOT NULL, hash text NOT NULL)",
        )
        .await
        .map_err(|e| format!("create table commits: {e}"))?;
        let seed = seed();
        let mut report = WriterReport {
            keys: Vec::new(),
            rows: 0,
            skipped_while_paused: 0,
        };
        while !self.progress.stop.load(Ordering::Relaxed) {
            let lock = try_lock(&self.lock)?;
            if !running(&read_state(&self.state)?) {
                drop(lock);
                report.skipped_while_paused += 1;
                self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(PAUSED_INTERVAL).await;
                continue;
            }
            let seq = report.keys.len();
            let (id, data) = chunk(&seed, seq as u64);
            let key = format!("{}chunk/{seq:06}-{id}", self.prefix);
            let hash = blake3::hash(&data).to_hex().to_string();
            let size = data.len() as i64;
            let location =
                object_store::path::Path::parse(&key).map_err(|e| format!("{key}: {e}"))?;
            self.store
                .put(&location, PutPayload::from(data))
                .await
                .map_err(|e| format!("put {key}: {e}"))?;
            report.keys.push(key.clone());
            db.execute(
                "INSERT INTO commits (key, size, hash) VALUES ($1, $2, $3)",
                &[&key, &size, &hash],
            )
            .await
            .map_err(|e| format!("insert {key}: {e}"))?;
            report.rows += 1;
            // Counted before the lock goes: once a pause has returned,
            // `written()` is final until the cluster runs again.
            self.progress.written.fetch_add(1, Ordering::Relaxed);
            drop(lock);
            tokio::time::sleep(WRITE_INTERVAL).await;
        }
        Ok(report)
    }
}

/// A key no other writer (in this run or an earlier one) starts from.
fn seed() -> [u8; 32] {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes())
        .update(&std::process::id().to_le_bytes())
        .update(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Chunk `seq`: a 16-hex-digit id and 1–64 KiB of random bytes.
fn chunk(seed: &[u8; 32], seq: u64) -> (String, Vec<u8>) {
    let mut xof = blake3::Hasher::new_keyed(seed)
        .update(&seq.to_le_bytes())
        .finalize_xof();
    let mut head = [0u8; 12];
    xof.fill(&mut head);
    let id: String = head[..8].iter().map(|b| format!("{b:02x}")).collect();
    let pick = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
    let mut data = vec![0u8; CHUNK_MIN + pick % (CHUNK_MAX - CHUNK_MIN + 1)];
    xof.fill(&mut data);
    (id, data)
}

// ------------------------------------------------------------ the rig's tests

use object_store::throttle::{ThrottleConfig, ThrottledStore};

use crate::common::{Pg, S3, contents, keys};

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_owned())
        .collect()
}

/// Polls `kubectl get pods -l selector` until it lists `n` pods.
#[track_caller]
fn wait_for_pods(rig: &Rig, selector: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pods = rig
            .kubectl(&["get", "pods", "-l", selector, "-o", "json"])
            .ok()
            .json();
        if names(&pods).len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{selector}: still {pods:#} after {timeout:?}"
        );
        std::thread::sleep(POLL);
    }
}

#[test]
fn rig_kubectl_gets_deployments_in_known_contexts_and_logs_every_call() {
    let rig = Rig::new();
    let get_pachd = ["get", "deployment", "pachd", "-o", "json"];
    let d = rig.kubectl(&get_pachd).ok().json();
    assert_eq!(
        (&d["kind"], &d["metadata"]["name"], &d["spec"]["replicas"]),
        (&json!("Deployment"), &json!("pachd"), &json!(1))
    );
    assert_eq!(d["status"]["replicas"], 1);
    let e = rig
        .kubectl(&[
            "--context",
            "staging",
            "--namespace",
            "pachyderm",
            "get",
            "deployment",
            "pach-enterprise",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(e["metadata"]["name"], "pach-enterprise");
    rig.kubectl(&[
        "--context=staging",
        "-n",
        "pachyderm",
        "get",
        "deploy",
        "pachd",
        "-ojson",
    ])
    .ok();
    rig.kubectl(&[
        "--context",
        "dev",
        "get",
        "deployment",
        "pachd",
        "-o",
        "json",
    ])
    .fails_with(1, r#"error: context "dev" does not exist"#);
    rig.kubectl(&["get", "deployment", "pachyderm", "-o", "json"])
        .fails_with(
            1,
            r#"Error from server (NotFound): deployments.apps "pachyderm" not found"#,
        );
    // Without --context, the current context counts.
    rig.update(|s| s["current_context"] = json!("gone"));
    rig.kubectl(&get_pachd)
        .fails_with(1, r#"error: context "gone" does not exist"#);
    rig.kubectl(&[
        "--context",
        "prod",
        "get",
        "deployment",
        "pachd",
        "-o",
        "json",
    ])
    .ok();

    let calls = rig.calls();
    assert_eq!(calls.len(), 7, "{calls:?}");
    assert_eq!(
        calls[0],
        strings(&["kubectl", "get", "deployment", "pachd", "-o", "json"])
    );
    assert_eq!(
        calls[3],
        strings(&[
            "kubectl",
            "--context",
            "dev",
            "get",
            "deployment",
            "pachd",
            "-o",
            "json"
        ])
    );
    assert_eq!(calls[6][..3], strings(&["kubectl", "--context", "prod"]));
}

#[test]
fn rig_kubectl_scales_deployments_and_worker_rcs() {
    let rig = Rig::new();
    let workers = [
        "get",
        "replicationcontrollers",
        "-l",
        "suite=pachyderm,component=worker",
        "-o",
        "json",
    ];
    let rcs = rig.kubectl(&workers).ok().json();
    assert_eq!(names(&rcs), ["pipeline-edges-v1", "pipeline-montage-v1"]);
    assert_eq!(rcs["items"][0]["spec"]["replicas"], 2);
    assert_eq!(rcs["items"][1]["spec"]["replicas"], 1);

    let out = rig
        .kubectl(&["scale", "deployment", "pachd", "--replicas=0"])
        .ok();
    assert_eq!(out.stdout, "deployment.apps/pachd scaled\n");
    let out = rig
        .kubectl(&[
            "--context",
            "prod",
            "scale",
            "rc",
            "pipeline-edges-v1",
            "--replicas=0",
        ])
        .ok();
    assert_eq!(
        out.stdout,
        "replicationcontroller/pipeline-edges-v1 scaled\n"
    );
    rig.kubectl(&[
        "scale",
        "replicationcontroller",
        "pipeline-montage-v1",
        "--replicas=3",
    ])
    .ok();
    rig.kubectl(&["scale", "deployment", "nope", "--replicas=0"])
        .fails_with(
            1,
            r#"Error from server (NotFound): deployments.apps "nope" not found"#,
        );
    rig.kubectl(&["scale", "rc", "nope", "--replicas=0"])
        .fails_with(
            1,
            r#"Error from server (NotFound): replicationcontrollers "nope" not found"#,
        );

    let expected: BTreeMap<String, i64> = [
        ("deployment/pach-enterprise", 1),
        ("deployment/pachd", 0),
        ("rc/pipeline-edges-v1", 0),
        ("rc/pipeline-montage-v1", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(rig.replicas(), expected);
    assert!(!rig.running());
    assert!(rig.state()["scaled_to_zero"]["deployment/pachd"]["at"].is_f64());
    let rcs = rig
        .kubectl(&[
            "get",
            "rc",
            "-l",
            "component=worker,suite=pachyderm",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(rcs["items"][0]["spec"]["replicas"], 0);
    assert_eq!(rcs["items"][1]["spec"]["replicas"], 3);
    assert_eq!(
        rig.kubectl(&["get", "deployment", "pachd", "-o", "json"])
            .ok()
            .json()["spec"]["replicas"],
        0
    );

    rig.kubectl(&["scale", "deployment", "pachd", "--replicas=1"])
        .ok();
    assert!(rig.running());
    // The enterprise server counts too.
    rig.kubectl(&["scale", "deployment", "pach-enterprise", "--replicas=0"])
        .ok();
    assert!(!rig.running());
    rig.update(|s| {
        s["deployments"]
            .as_object_mut()
            .expect("deployments")
            .remove("pach-enterprise");
    });
    assert!(rig.running());
}

#[test]
fn rig_pods_linger_after_a_scale_to_zero_then_vanish() {
    let rig = Rig::new();
    let linger = Duration::from_secs(2);
    rig.update(|s| s["pod_linger_s"] = json!(linger.as_secs_f64()));
    let pachd = rig
        .kubectl(&["get", "pods", "-l", "app=pachd", "-o", "json"])
        .ok()
        .json();
    assert_eq!(names(&pachd).len(), 1);
    assert!(pachd["items"][0]["metadata"]["deletionTimestamp"].is_null());
    let workers = "suite=pachyderm,component=worker";
    wait_for_pods(&rig, workers, 3, Duration::ZERO);
    wait_for_pods(&rig, "app=pach-enterprise", 1, Duration::ZERO);

    let scaled = Instant::now();
    rig.kubectl(&["scale", "deployment", "pachd", "--replicas=0"])
        .ok();
    rig.kubectl(&["scale", "rc", "pipeline-edges-v1", "--replicas=0"])
        .ok();
    let lingering = rig
        .kubectl(&["get", "pods", "-l", "app=pachd", "-o", "json"])
        .ok()
        .json();
    if scaled.elapsed() < linger {
        assert_eq!(names(&lingering), names(&pachd));
        assert!(lingering["items"][0]["metadata"]["deletionTimestamp"].is_string());
        wait_for_pods(&rig, workers, 3, Duration::ZERO);
    }
    wait_for_pods(&rig, "app=pachd", 0, Duration::from_secs(20));
    assert!(
        scaled.elapsed() >= linger,
        "pods went in {:?}",
        scaled.elapsed()
    );
    wait_for_pods(&rig, workers, 1, Duration::from_secs(20));
    wait_for_pods(&rig, "app=pach-enterprise", 1, Duration::ZERO);

    // Back up: pods at once, none terminating.
    rig.kubectl(&["scale", "deployment", "pachd", "--replicas=2"])
        .ok();
    let up = rig
        .kubectl(&["get", "pods", "-l", "app=pachd", "-o", "json"])
        .ok()
        .json();
    assert_eq!(names(&up).len(), 2);
    assert!(up["items"][1]["metadata"]["deletionTimestamp"].is_null());
}

#[test]
fn rig_pods_never_vanish_with_a_negative_linger() {
    let rig = Rig::new();
    rig.update(|s| s["pod_linger_s"] = json!(-1));
    rig.kubectl(&["scale", "deployment", "pachd", "--replicas=0"])
        .ok();
    rig.kubectl(&["scale", "rc", "pipeline-montage-v1", "--replicas=0"])
        .ok();
    rig.pachctl(&["enterprise", "pause"]).ok();
    std::thread::sleep(Duration::from_secs(1));
    wait_for_pods(&rig, "app=pachd", 1, Duration::ZERO);
    wait_for_pods(&rig, "suite=pachyderm,component=worker", 3, Duration::ZERO);
    assert_eq!(
        rig.pachctl(&["enterprise", "pause-status"]).ok().stdout,
        "partially-paused\n"
    );
}

#[test]
fn rig_pachctl_contexts_and_pause() {
    let rig = Rig::new();
    assert_eq!(
        rig.pachctl(&["config", "get", "active-context"])
            .ok()
            .stdout,
        "prod\n"
    );
    assert_eq!(
        rig.pachctl(&["config", "get", "active-enterprise-context"])
            .ok()
            .stdout,
        "enterprise\n"
    );
    assert_eq!(
        rig.pachctl(&["enterprise", "pause-status"]).ok().stdout,
        "unpaused\n"
    );

    let linger = Duration::from_secs(2);
    rig.update(|s| s["pod_linger_s"] = json!(linger.as_secs_f64()));
    let paused = Instant::now();
    rig.pachctl(&["enterprise", "pause"]).ok();
    assert!(!rig.running(), "paused at once for the writer");
    let status = rig.pachctl(&["enterprise", "pause-status"]).ok().stdout;
    if paused.elapsed() < linger {
        assert_eq!(status, "partially-paused\n");
    }
    loop {
        let status = rig.pachctl(&["enterprise", "pause-status"]).ok().stdout;
        if status == "paused\n" {
            break;
        }
        assert_eq!(status, "partially-paused\n");
        assert!(paused.elapsed() < Duration::from_secs(20), "never paused");
        std::thread::sleep(POLL);
    }
    assert!(paused.elapsed() >= linger);

    rig.pachctl(&["enterprise", "unpause"]).ok();
    assert_eq!(
        rig.pachctl(&["enterprise", "pause-status"]).ok().stdout,
        "unpaused\n"
    );
    rig.wait_for("the cluster to run", Duration::from_secs(5), running);

    rig.update(|s| s["pachctl"]["active_enterprise_context"] = Value::Null);
    rig.pachctl(&["config", "get", "active-enterprise-context"])
        .fails_with(1, "no active enterprise context");
    let calls = rig.calls();
    assert_eq!(
        calls[0],
        strings(&["pachctl", "config", "get", "active-context"])
    );
    assert!(calls.iter().all(|c| c[0] == "pachctl"), "{calls:?}");
}

#[test]
fn rig_failure_injection() {
    let rig = Rig::new();
    let scale = ["scale", "deployment", "pachd", "--replicas=0"];
    rig.fail_on(
        "scale deployment pachd",
        1,
        "Error from server (Forbidden): no scaling today",
    );
    rig.kubectl(&scale)
        .fails_with(1, "Error from server (Forbidden): no scaling today");
    assert_eq!(
        rig.replicas()["deployment/pachd"],
        1,
        "a failed call changes nothing"
    );
    assert_eq!(rig.state()["fail"][0]["times"], 0);
    rig.kubectl(&scale).ok();

    // Global flags are left out of the match.
    rig.fail_on(
        "kubectl get deployment pachd",
        2,
        "Unable to connect to the server",
    );
    let get = [
        "--context",
        "staging",
        "-n",
        "pachyderm",
        "get",
        "deployment",
        "pachd",
        "-o",
        "json",
    ];
    rig.kubectl(&get)
        .fails_with(1, "Unable to connect to the server");
    rig.kubectl(&get)
        .fails_with(1, "Unable to connect to the server");
    rig.kubectl(&get).ok();

    // `$` anchors the end; times < 0 fails every time.
    rig.fail_on("enterprise pause$", -1, "rpc error: code = Unavailable");
    for _ in 0..2 {
        rig.pachctl(&["enterprise", "pause"])
            .fails_with(1, "rpc error: code = Unavailable");
    }
    assert_eq!(
        rig.pachctl(&["enterprise", "pause-status"]).ok().stdout,
        "unpaused\n"
    );
    rig.fail_on("pause-status", 1, "boom");
    rig.pachctl(&["enterprise", "pause-status"])
        .fails_with(1, "boom");
    assert_eq!(rig.state()["fail"][2]["times"], -1);
    assert_eq!(rig.calls().len(), 9);
}

#[test]
fn rig_unknown_commands_fail_loudly() {
    let rig = Rig::new();
    for args in [
        &["delete", "deployment", "pachd"][..],
        &["get", "deployment", "pachd"],
        &["get", "deployment", "pachd", "-o", "yaml"],
        &["get", "pods", "-l", "app=nginx", "-o", "json"],
        &["get", "rc", "-l", "suite=pachyderm", "-o", "json"],
        &["scale", "statefulset", "postgres", "--replicas=0"],
        &[
            "scale",
            "deployment",
            "pachd",
            "--replicas=0",
            "--timeout=5s",
        ],
        &[],
    ] {
        let run = rig.kubectl(args);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.starts_with("fake kubectl: "), "{run:?}");
    }
    for args in [
        &["version"][..],
        &["enterprise", "pause", "--now"],
        &["config", "get"],
    ] {
        let run = rig.pachctl(args);
        assert_eq!(run.code, 2, "{run:?}");
    }
    assert_eq!(rig.calls().len(), 11);
    assert_eq!(rig.replicas()["deployment/pachd"], 1);
    // Without FAKE_CLUSTER_DIR, a fake cannot know its cluster.
    let out = Command::new("kubectl")
        .args(["get", "deployment", "pachd", "-o", "json"])
        .env("PATH", rig.path_env())
        .env_remove("FAKE_CLUSTER_DIR")
        .output()
        .expect("run kubectl");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn rig_lock_keeps_updates_and_fake_calls_from_clobbering_each_other() {
    let rig = Rig::new();
    rig.update(|s| s["counter"] = json!(0));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let rig = &rig;
            scope.spawn(move || {
                for i in 0..3 {
                    let n = (t * 3 + i).to_string();
                    rig.kubectl(&[
                        "scale",
                        "rc",
                        "pipeline-edges-v1",
                        &format!("--replicas={n}"),
                    ])
                    .ok();
                    for _ in 0..5 {
                        rig.update(|s| s["counter"] = json!(s["counter"].as_i64().expect("n") + 1));
                    }
                }
            });
        }
    });
    assert_eq!(rig.state()["counter"], 60);
    assert_eq!(rig.calls().len(), 12);
}

#[test]
fn rig_wait_for_names_what_it_waited_for() {
    let rig = Rig::new();
    rig.wait_for("nothing", Duration::ZERO, |s| s["paused"] == "unpaused");
    let timeout = std::panic::catch_unwind(|| {
        rig.wait_for("pachd to go", Duration::from_millis(100), |s| {
            s["deployments"]["pachd"] == 0
        });
    })
    .expect_err("times out");
    let message = timeout.downcast_ref::<String>().expect("message");
    assert!(message.contains("waiting for pachd to go"), "{message}");
    assert_eq!(
        rig.envs()[1],
        (
            "FAKE_CLUSTER_DIR".to_owned(),
            rig.dir().display().to_string()
        )
    );
}

/// Waits for `done`, on the test's runtime, up to a generous timeout.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// `(key, size, hash)` of every row of `commits`, in insertion order.
async fn commits(pg: &Pg, db: &str) -> Vec<(String, i64, String)> {
    pg.client(db)
        .await
        .query("SELECT key, size, hash FROM commits ORDER BY id", &[])
        .await
        .expect("select commits")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The writer writes while the cluster runs, nothing once `pause` has
/// returned, and again after `resume` (a few times over, as a write racing
/// the pause is a matter of timing); objects and rows match one to one.
async fn writer_pauses_between_writes(tool: &str, pause: &[&str], resume: &[&str]) {
    let (Some(s3), Some(pg)) = (S3::from_env(), Pg::from_env()) else {
        return;
    };
    let store = s3.store(&s3.bucket("rig"));
    let db = pg.create_db("rig").await;
    let rig = Rig::new();
    // Slow puts widen the window in which a pause meets a write in flight:
    // without the lock held across the write, it would land after the pause.
    let slow = ThrottleConfig {
        wait_put_per_call: Duration::from_millis(100),
        ..ThrottleConfig::default()
    };
    let slow: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(Arc::clone(&store), slow));
    let writer = rig.start_writer(slow, "app", &pg.url(&db));
    for cycle in 0..3 {
        let before = writer.written();
        until("writes", || writer.written() >= before + 5).await;

        rig.tool(tool, pause).ok();
        let at_pause = writer.written();
        let objects = keys(&*store, "app").await;
        let rows = commits(&pg, &db).await;
        assert_eq!(
            (objects.len(), rows.len()),
            (at_pause, at_pause),
            "cycle {cycle}"
        );
        let skipped = writer.skipped();
        until("the writer to see the pause", || {
            writer.skipped() >= skipped + 5
        })
        .await;
        assert_eq!(writer.written(), at_pause, "cycle {cycle}");
        assert_eq!(keys(&*store, "app").await, objects, "cycle {cycle}");
        assert_eq!(commits(&pg, &db).await, rows, "cycle {cycle}");

        rig.tool(tool, resume).ok();
    }
    let resumed = writer.written();
    until("writes to resume", || writer.written() >= resumed + 5).await;
    let report = writer.stop();

    assert!(report.skipped_while_paused >= 5, "{report:?}");
    assert_eq!(report.rows, report.keys.len());
    assert_eq!(keys(&*store, "app").await, report.keys);
    let rows = commits(&pg, &db).await;
    let objects = contents(&*store, "app").await;
    assert_eq!(rows.len(), objects.len());
    for ((key, size, hash), (rel, data)) in rows.iter().zip(&objects) {
        assert_eq!(key, &format!("app/{rel}"));
        assert!(rel.starts_with("chunk/"), "{rel}");
        assert_eq!(*size as usize, data.len());
        assert!((CHUNK_MIN..=CHUNK_MAX).contains(&data.len()));
        assert_eq!(hash, blake3::hash(data).to_hex().as_str());
    }
}

#[tokio::test]
async fn rig_writer_stops_once_kubectl_scales_pachd_to_zero() {
    writer_pauses_between_writes(
        "kubectl",
        &["scale", "deployment", "pachd", "--replicas=0"],
        &["scale", "deployment", "pachd", "--replicas=1"],
    )
    .await;
}

#[tokio::test]
async fn rig_writer_stops_once_pachctl_pauses() {
    writer_pauses_between_writes(
        "pachctl",
        &["enterprise", "pause"],
        &["enterprise", "unpause"],
    )
    .await;
}

#[test]
fn rig_writer_reports_its_error() {
    let rig = Rig::new();
    let writer = rig.start_writer(
        Arc::new(object_store::memory::InMemory::new()),
        "",
        "postgresql://postgres@127.0.0.1:1/none",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.written())) {
            Err(panic) => break panic,
            Ok(_) => assert!(Instant::now() < deadline, "the writer never failed"),
        }
        std::thread::sleep(POLL);
    };
    let seen = seen.downcast_ref::<String>().expect("message").clone();
    assert!(seen.contains("connect to postgresql://"), "{seen}");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.stop()))
        .expect_err("stop re-raises");
    assert_eq!(stopped.downcast_ref::<String>(), Some(&seen));
}
