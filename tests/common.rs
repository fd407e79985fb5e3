//! Helpers shared by the integration tests: running `haul`, reaching the
//! test S3 server, making data.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Connection settings of the test S3 server, from `scripts/services.sh`.
#[derive(Debug, Clone)]
pub struct S3 {
    pub endpoint: String,
    pub key: String,
    pub secret: String,
}

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `bash scripts/test.sh`, which starts SeaweedFS and PostgreSQL")
    })
}

/// A test's service, when its variable is set. A plain `cargo test` (no
/// services) skips the test, saying so on stderr past libtest's capture;
/// under `scripts/test.sh` (`HAUL_TEST_REQUIRE_SERVICES=1`) a missing
/// service is a failure, so CI can never skip silently.
fn service(var: &str, what: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    if std::env::var_os("HAUL_TEST_REQUIRE_SERVICES").is_some() {
        need(var);
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs {what} ({var} is unset; `bash scripts/test.sh` starts the services and runs everything)"
    );
    None
}

/// A bucket name no other test (or test run) uses.
pub fn unique_bucket(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl S3 {
    /// The test S3 server, or `None` (the test skips) without one.
    pub fn from_env() -> Option<Self> {
        Some(Self {
            endpoint: service("HAUL_TEST_S3_ENDPOINT", "the S3 server (SeaweedFS)")?,
            key: need("HAUL_TEST_S3_ACCESS_KEY"),
            secret: need("HAUL_TEST_S3_SECRET_KEY"),
        })
    }

    /// Creates a fresh, uniquely named bucket.
    pub fn bucket(&self, tag: &str) -> String {
        let name = unique_bucket(tag);
        let rclone = format!("{}/rclone", need("HAUL_TOOLS_BIN"));
        let out = Command::new(rclone)
            .args(["--config", "/dev/null", "mkdir", &format!("s3:{name}")])
            .env("RCLONE_CONFIG_S3_TYPE", "s3")
            .env("RCLONE_CONFIG_S3_PROVIDER", "SeaweedFS")
            .env("RCLONE_CONFIG_S3_ENDPOINT", &self.endpoint)
            .env("RCLONE_CONFIG_S3_ACCESS_KEY_ID", &self.key)
            .env("RCLONE_CONFIG_S3_SECRET_ACCESS_KEY", &self.secret)
            .env("RCLONE_CONFIG_S3_FORCE_PATH_STYLE", "true")
            .output()
            .expect("run rclone");
        assert!(
            out.status.success(),
            "rclone mkdir {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(&self.key)
                .with_secret_access_key(&self.secret)
                .build()
                .expect("s3 store"),
        )
    }

    /// `haul` with this server's endpoint and credentials in its environment.
    pub fn haul(&self) -> Haul {
        Haul::new()
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
    }
}

/// Azurite's well-known development account (public, in Azure's docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A second implementation of a store haul speaks to, from
/// `scripts/services.sh`: moto's S3 server or Azurite's blob service.
#[derive(Debug, Clone)]
pub struct Alt {
    pub scheme: &'static str,
    pub endpoint: String,
}

impl Alt {
    /// moto's S3 server (any credentials are accepted).
    pub fn moto() -> Option<Self> {
        Some(Self {
            scheme: "s3",
            endpoint: service("HAUL_TEST_MOTO_ENDPOINT", "moto's S3 server")?,
        })
    }

    /// Azurite's blob service; `endpoint` is the account's URL.
    pub fn azurite() -> Option<Self> {
        Some(Self {
            scheme: "az",
            endpoint: service("HAUL_TEST_AZURITE_ENDPOINT", "Azurite")?,
        })
    }

    /// The environment that reaches this store, as haul and the tests'
    /// `StoreConfig` read it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        if self.scheme == "az" {
            vec![
                ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT.into()),
                ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY.into()),
                ("AZURE_STORAGE_ENDPOINT", self.endpoint.clone()),
                ("AZURE_ALLOW_HTTP", "true".into()),
            ]
        } else {
            vec![
                ("AWS_ENDPOINT_URL", self.endpoint.clone()),
                ("AWS_ACCESS_KEY_ID", "moto".into()),
                ("AWS_SECRET_ACCESS_KEY", "moto".into()),
                ("AWS_REGION", "us-east-1".into()),
            ]
        }
    }

    /// Creates a fresh, uniquely named bucket (container).
    pub fn bucket(&self, tag: &str) -> String {
        let name = unique_bucket(tag);
        let rclone = format!("{}/rclone", need("HAUL_TOOLS_BIN"));
        let mut cmd = Command::new(rclone);
        cmd.args(["--config", "/dev/null", "mkdir", &format!("alt:{name}")]);
        if self.scheme == "az" {
            cmd.env("RCLONE_CONFIG_ALT_TYPE", "azureblob")
                .env("RCLONE_CONFIG_ALT_ACCOUNT", AZURITE_ACCOUNT)
                .env("RCLONE_CONFIG_ALT_KEY", AZURITE_KEY)
                .env("RCLONE_CONFIG_ALT_ENDPOINT", &self.endpoint);
        } else {
            cmd.env("RCLONE_CONFIG_ALT_TYPE", "s3")
                .env("RCLONE_CONFIG_ALT_PROVIDER", "Other")
                .env("RCLONE_CONFIG_ALT_ENDPOINT", &self.endpoint)
                .env("RCLONE_CONFIG_ALT_ACCESS_KEY_ID", "moto")
                .env("RCLONE_CONFIG_ALT_SECRET_ACCESS_KEY", "moto")
                .env("RCLONE_CONFIG_ALT_FORCE_PATH_STYLE", "true");
        }
        let out = cmd.output().expect("run rclone");
        assert!(
            out.status.success(),
            "rclone mkdir {name} on {}: {}",
            self.endpoint,
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// The bucket as haul opens it (`s3://b` or `az://b`, through the
    /// environment above).
    pub fn location(&self, bucket: &str) -> haul_mover::Location {
        let env: std::collections::HashMap<&'static str, String> = self.env().into_iter().collect();
        haul_mover::StoreConfig::default()
            .with_env(move |k| env.get(k).cloned())
            .open(
                &haul_mover::StoreUrl::parse(&format!("{}://{bucket}", self.scheme)).expect("url"),
                false,
            )
            .expect("open")
    }

    /// `haul` reaching this store through its environment.
    pub fn haul(&self) -> Haul {
        self.env()
            .into_iter()
            .fold(Haul::new(), |h, (k, v)| h.env(k, &v))
    }
}

/// A `haul` invocation being built.
#[derive(Debug)]
pub struct Haul {
    cmd: Command,
}

/// What a `haul` invocation did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "haul failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

impl Haul {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_haul"));
        for v in [
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AZURE_STORAGE_ACCOUNT_NAME",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ENDPOINT",
            "AZURE_STORAGE_USE_EMULATOR",
            "AZURE_ALLOW_HTTP",
            "HAUL_CONFIG",
            "HAUL_REPO",
            "HAUL_LOG",
            "HAUL_PASSWORD",
            "HAUL_PASSWORD_FILE",
            "HAUL_PASSWORD_COMMAND",
            "HAUL_KEY_FILE",
        ] {
            cmd.env_remove(v);
        }
        // Every repository a test makes is encrypted, with this key, unless
        // the test says otherwise (`without_key`).
        cmd.env("HAUL_KEY_FILE", test_key_file());
        Self { cmd }
    }

    /// `haul` for an unencrypted repository (`--insecure-no-encryption`):
    /// for tests that read or forge what the repository holds.
    pub fn insecure() -> Self {
        Self::new().without_key()
    }

    /// No key in the environment: for unencrypted repositories (format v1
    /// fixtures, `--insecure-no-encryption`).
    pub fn without_key(mut self) -> Self {
        self.cmd.env_remove("HAUL_KEY_FILE");
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn run<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = self.cmd.args(args).output().expect("run haul");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// The `haul` binary with the test key in its environment, for tests that
/// spawn it themselves (to signal it, to close its pipes).
pub fn haul_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_haul"));
    for v in [
        "HAUL_PASSWORD",
        "HAUL_PASSWORD_FILE",
        "HAUL_PASSWORD_COMMAND",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HAUL_KEY_FILE", test_key_file());
    cmd
}

/// The key file every test's `haul` gets (one per test process, 0600).
pub fn test_key_file() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("haul-test-{}.key", std::process::id()));
        std::fs::write(&path, "7c0ffee0".repeat(8) + "\n").expect("write the test key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path.to_str().expect("utf-8").to_owned()
    })
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Every object of a store under a prefix, as (key relative to prefix, bytes), sorted.
pub async fn contents(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let p = Path::from(prefix);
    let metas: Vec<_> = store.list(Some(&p)).try_collect().await.expect("list");
    let mut out = Vec::new();
    for m in metas {
        let data = store
            .get(&m.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let key = m
            .location
            .as_ref()
            .strip_prefix(prefix)
            .unwrap_or(m.location.as_ref())
            .trim_start_matches('/')
            .to_owned();
        out.push((key, data.to_vec()));
    }
    out.sort();
    out
}

pub async fn put(store: &dyn ObjectStore, key: &str, data: Vec<u8>) {
    store
        .put(&Path::parse(key).expect("key"), PutPayload::from(data))
        .await
        .expect("put");
}

pub async fn keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let p = Path::from(prefix);
    let metas: Vec<_> = store.list(Some(&p)).try_collect().await.expect("list");
    let mut k: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    k.sort();
    k
}

/// The test PostgreSQL server from `scripts/services.sh`: its `postgres`
/// superuser connects over TCP without a password; other roles need theirs.
#[derive(Debug, Clone)]
pub struct Pg {
    /// `postgresql://postgres@127.0.0.1:PORT`, without a database.
    base: String,
    pub host: String,
    pub port: u16,
}

impl Pg {
    /// The test PostgreSQL server, or `None` (the test skips) without one.
    pub fn from_env() -> Option<Self> {
        let url = service("HAUL_TEST_PG_URL", "PostgreSQL")?;
        let rest = url
            .strip_prefix("postgresql://")
            .unwrap_or_else(|| panic!("HAUL_TEST_PG_URL={url} is not a postgresql:// URL"));
        let authority = rest.split('/').next().expect("authority");
        let hostport = authority.rsplit('@').next().expect("host");
        let (host, port) = hostport
            .rsplit_once(':')
            .expect("HAUL_TEST_PG_URL has a port");
        Some(Self {
            base: format!("postgresql://{authority}"),
            host: host.to_owned(),
            port: port.parse().expect("port"),
        })
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.base)
    }

    /// The URL of database `db` as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@{}:{}/{db}",
            self.host, self.port
        )
    }

    /// A database (or role) name no other test uses.
    pub fn unique(tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "t_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to the test PostgreSQL at {} ({e}): run the tests with `bash scripts/test.sh`",
                    self.url(db)
                )
            });
        tokio::spawn(conn);
        client
    }

    pub async fn exec(&self, db: &str, sql: &str) {
        self.client(db)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Runs statements one by one in the `postgres` database (CREATE and
    /// DROP DATABASE cannot share a transaction with anything).
    pub async fn admin(&self, statements: &[String]) {
        let c = self.client("postgres").await;
        for sql in statements {
            c.batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }

    /// Creates a fresh database; returns its name.
    pub async fn create_db(&self, tag: &str) -> String {
        let name = Self::unique(tag);
        self.exec("postgres", &format!("CREATE DATABASE {name}"))
            .await;
        name
    }

    pub async fn exists(&self, db: &str) -> bool {
        self.client("postgres")
            .await
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .expect("query")
            .is_some()
    }
}

/// Number of snapshots in a repository, through `haul snapshots --json`.
pub fn snapshot_count(haul: Haul, repo: &str) -> usize {
    haul.run(["--json", "snapshots", "--repo", repo])
        .ok()
        .json()
        .as_array()
        .map_or(0, Vec::len)
}

/// Writes `objects` into an S3 bucket with boto3 (`tests/s3keys.py`), keys
/// exactly as given, whatever haul's clients make of them. Returns the keys
/// the server refused.
pub fn s3_put_exact(
    endpoint: &str,
    creds: (&str, &str),
    bucket: &str,
    objects: &[(String, Vec<u8>)],
) -> Vec<String> {
    let input: Vec<(String, String)> = objects
        .iter()
        .map(|(k, v)| (k.clone(), to_hex(v)))
        .collect();
    let out = s3keys(
        "put",
        endpoint,
        creds,
        bucket,
        &serde_json::to_vec(&input).expect("json"),
    );
    serde_json::from_slice(&out).expect("refused keys")
}

/// Every object of an S3 bucket as boto3 lists and reads it, keys exact, in
/// byte order.
pub fn s3_dump_exact(endpoint: &str, creds: (&str, &str), bucket: &str) -> Vec<(String, Vec<u8>)> {
    let out = s3keys("dump", endpoint, creds, bucket, b"");
    let pairs: Vec<(String, String)> = serde_json::from_slice(&out).expect("dump");
    pairs.into_iter().map(|(k, h)| (k, from_hex(&h))).collect()
}

/// Runs `tests/s3keys.py OP` (boto3) against a bucket: see the script.
pub fn s3keys(
    op: &str,
    endpoint: &str,
    creds: (&str, &str),
    bucket: &str,
    stdin: &[u8],
) -> Vec<u8> {
    use std::io::Write;
    let python = format!("{}/python", need("HAUL_TOOLS_BIN"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/s3keys.py");
    let mut child = Command::new(python)
        .args([script, op, endpoint, creds.0, creds.1, bucket])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    let out = child.wait_with_output().expect("s3keys.py");
    assert!(
        out.status.success(),
        "s3keys.py {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every file under `dir`, recursively.
pub fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` by relative path, with its bytes.
pub fn read_tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .map(|f| {
            let k = f.strip_prefix(dir).expect("inside").display().to_string();
            (k, std::fs::read(&f).expect("read"))
        })
        .collect()
}
