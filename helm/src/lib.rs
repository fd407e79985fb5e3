//! A Pachyderm Helm values file pointed at restore targets.
//!
//! ```text
//! haul-cli ──▶ haul-helm (this crate: pure text in, text out; no I/O, no other haul crate)
//!
//! backup:  values.yaml ─▶ kept byte-exact with the snapshot (haul-snapshot stores it)
//! restore: databases ─▶ PostgreSQL target ┐
//!          bucket    ─▶ bucket target     ┴─▶ rewrite(values.yaml, targets) ─▶ values for `helm upgrade`
//! ```
//!
//! Operators keep comments and layout in their values, so a rewrite changes
//! only the values it targets and leaves every other byte as it was: the
//! file is parsed with positions (`tree.rs`), each target value is replaced
//! where it stands or inserted as a new line in its block mapping
//! (`splice.rs`), and the result is parsed again and compared leaf by leaf
//! with the original before it is returned. What cannot be spliced safely (a
//! flow mapping, a block scalar, an anchored value, several documents) is an
//! error naming the path and line, never a wrong file.
//!
//! Keys written (Pachyderm 2.x chart):
//! - `global.postgresql.postgresqlHost`, `postgresqlPort` (always quoted),
//!   `postgresqlUsername`, `postgresqlSSL`, `postgresqlDatabase` (the
//!   `pachyderm` database), `identityDatabaseFullNameOverride` (the `dex` one);
//! - the bucket of the backend in use: `pachd.storage.amazon.bucket` (and
//!   `customEndpoint`), `pachd.storage.minio.bucket` (and `endpoint`),
//!   `pachd.storage.google.bucket`, `pachd.storage.microsoft.container`;
//!   `pachd.storage.storageURL` when set, keeping its scheme.
//!
//! Passwords are never written; what the operator must still do is returned
//! as warnings.

mod splice;
mod tree;

use std::collections::BTreeMap;

use serde::Serialize;

use splice::{Kind, Place, Write};
use tree::{Node, line};

/// Where the restored data lives, as far as the values must know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelmTargets {
    /// The server the databases were restored to.
    pub postgres: Option<PgTarget>,
    /// The database the snapshot's `pachyderm` database was restored into.
    pub pachyderm_database: Option<String>,
    /// The database the snapshot's `dex` database was restored into.
    pub dex_database: Option<String>,
    /// The bucket the snapshot's objects were restored into.
    pub bucket: Option<BucketTarget>,
}

/// A PostgreSQL server. No password: haul never writes one into values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    /// `None` keeps the values' user.
    pub user: Option<String>,
    /// libpq's `sslmode` (`disable`, `require`, `verify-full`...); `None` keeps the values' mode.
    pub sslmode: Option<String>,
}

/// A bucket: `s3` (AMAZON or MINIO), `gs` (GOOGLE) or `az` (MICROSOFT, a container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTarget {
    pub scheme: String,
    pub bucket: String,
    /// The object store's URL when it is not the provider's default
    /// (`https://minio.internal:9000`).
    pub endpoint: Option<String>,
}

/// The rewritten values and what was done to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    pub text: String,
    /// In the order they were made; empty when the values already pointed at the targets.
    pub changes: Vec<Change>,
    /// What the operator must check or do by hand before deploying.
    pub warnings: Vec<String>,
}

/// One value set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Dotted path: `global.postgresql.postgresqlHost`.
    pub path: String,
    /// The value replaced; `None` when the key was missing or null.
    pub old: Option<String>,
    pub new: String,
}

/// Why values could not be rewritten. Each names the path and line to look
/// at; none quotes a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelmError {
    #[error("the values file is not valid YAML: {message} (line {line}, column {column})")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },

    #[error(
        "the values file holds more than one YAML document (another starts at line {line}); \
         Helm reads one: keep that one alone in the file and run again"
    )]
    MultiDocument { line: usize },

    #[error(
        "cannot rewrite `{path}`: `{mapping}` (line {line}) is a flow mapping (`{{...}}`); \
         write it as a block mapping, one key per line, and run again"
    )]
    FlowMapping {
        path: String,
        mapping: String,
        line: usize,
    },

    #[error("cannot rewrite `{path}`: `{parent}` (line {line}) is {found}, not a mapping of keys")]
    NotAMapping {
        path: String,
        parent: String,
        line: usize,
        found: String,
    },

    #[error("cannot rewrite `{path}` (line {line}): {reason}; set it by hand")]
    Unsupported {
        path: String,
        line: usize,
        reason: String,
    },

    #[error("`{path}` is given twice (lines {first} and {second}): remove one and run again")]
    DuplicateKey {
        path: String,
        first: usize,
        second: usize,
    },

    #[error(
        "`pachd.storage.backend` (line {line}) is {value:?}; the chart knows AMAZON, GOOGLE, \
         MICROSOFT, MINIO and LOCAL"
    )]
    UnknownBackend { value: String, line: usize },

    #[error(
        "cannot tell which storage backend the values use: neither `pachd.storage.backend` nor \
         `deployTarget` names one, and {found}; set `pachd.storage.backend` and run again"
    )]
    AmbiguousBackend { found: String },

    #[error(
        "the values use storage backend {backend} (from {from}), which cannot reach the restored \
         bucket {target}: set `pachd.storage.backend` and its section for the target yourself, \
         then run again"
    )]
    BackendMismatch {
        backend: String,
        from: String,
        target: String,
    },

    #[error("`pachd.storage.storageURL` (line {line}) is {url}: {reason}")]
    StorageUrl {
        /// Without its query, which may hold settings the operator did not mean to print.
        url: String,
        line: usize,
        reason: String,
    },

    #[error(
        "bucket target scheme {scheme:?}: the values can point at s3 (AMAZON, MINIO), gs (GOOGLE) or az (MICROSOFT)"
    )]
    UnknownScheme { scheme: String },

    #[error("invalid target: {what}")]
    InvalidTarget { what: String },

    #[error(
        "internal error: the rewritten values do not read back as intended at `{path}` ({detail}); \
         nothing was written: please report this with the values file"
    )]
    Verify { path: String, detail: String },
}

/// Rewrites `values` so that the chart deploys against `targets`.
///
/// Idempotent: rewriting the result again changes nothing. Targets equal to
/// what the values already say leave the text as it is.
pub fn rewrite(values: &str, targets: &HelmTargets) -> Result<Rewritten, HelmError> {
    let doc = tree::parse(values)?;
    let mut warnings = Vec::new();
    let writes = plan(values, doc.root.as_ref(), targets, &mut warnings)?;
    let step = splice::indent_step(values, &doc);

    // Refuse what cannot be spliced before changing anything, with the
    // file's own line numbers.
    for write in &writes {
        match splice::locate(values, &doc, &write.path, step)? {
            Place::Found { scalar, key } if scalar.is_null() || scalar.value != write.value => {
                splice::check_replaceable(values, &write.dotted(), scalar, key)?;
            }
            _ => {}
        }
    }

    // One value at a time, each located afresh: a key inserted by one write
    // (a new `global.postgresql`) is where the next one goes.
    let mut text = values.to_owned();
    let mut changes = Vec::new();
    for write in &writes {
        let current = tree::parse(&text).map_err(|e| HelmError::Verify {
            path: write.dotted(),
            detail: e.to_string(),
        })?;
        let place = splice::locate(&text, &current, &write.path, step)?;
        let (edits, old) = splice::edits(&text, &place, write, step);
        if edits.is_empty() {
            continue;
        }
        text = splice::apply(&text, edits);
        changes.push((write, old));
    }

    verify(&doc, &text, &changes)?;
    Ok(Rewritten {
        text,
        changes: changes
            .into_iter()
            .map(|(write, old)| Change {
                path: write.dotted(),
                old,
                new: write.value.clone(),
            })
            .collect(),
        warnings,
    })
}

/// The values to set, in order, and the warnings that go with them.
fn plan(
    text: &str,
    root: Option<&Node>,
    targets: &HelmTargets,
    warnings: &mut Vec<String>,
) -> Result<Vec<Write>, HelmError> {
    let mut writes = Vec::new();
    let mut set = |path: &[&'static str], value: &str, kind: Kind| {
        writes.push(Write {
            path: path.to_vec(),
            value: value.to_owned(),
            kind,
        });
    };
    let pg_key = |key| ["global", "postgresql", key];

    if let Some(pg) = &targets.postgres {
        non_empty("the PostgreSQL host", &pg.host)?;
        set(&pg_key("postgresqlHost"), &pg.host, Kind::Text);
        set(&pg_key("postgresqlPort"), &pg.port.to_string(), Kind::Port);
        if let Some(user) = &pg.user {
            non_empty("the PostgreSQL user", user)?;
            set(&pg_key("postgresqlUsername"), user, Kind::Text);
        }
        if let Some(mode) = &pg.sslmode {
            non_empty("the PostgreSQL sslmode", mode)?;
            set(&pg_key("postgresqlSSL"), mode, Kind::Text);
        }
        postgres_warnings(text, root, pg, warnings);
    }
    if let Some(name) = &targets.pachyderm_database {
        non_empty("the pachyderm database name", name)?;
        set(&pg_key("postgresqlDatabase"), name, Kind::Text);
    }
    if let Some(name) = &targets.dex_database {
        non_empty("the dex database name", name)?;
        set(
            &pg_key("identityDatabaseFullNameOverride"),
            name,
            Kind::Text,
        );
    }
    if let Some(bucket) = &targets.bucket {
        for (path, value) in bucket_writes(text, root, bucket, warnings)? {
            set(&path, &value, Kind::Text);
        }
    }
    Ok(writes)
}

fn non_empty(what: &str, value: &str) -> Result<(), HelmError> {
    if value.trim().is_empty() {
        return Err(HelmError::InvalidTarget {
            what: format!("{what} is empty"),
        });
    }
    Ok(())
}

/// What the operator must still do for the new server: its password, and
/// turning off the chart's bundled server.
fn postgres_warnings(text: &str, root: Option<&Node>, pg: &PgTarget, warnings: &mut Vec<String>) {
    let value = |path: &[&str]| {
        root.and_then(|r| r.text_at(path))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let server = format!("{}:{}", pg.host, pg.port);
    let user = pg
        .user
        .clone()
        .or_else(|| value(&["global", "postgresql", "postgresqlUsername"]))
        .unwrap_or_else(|| "pachyderm".into());
    let secret = value(&["global", "postgresql", "postgresqlExistingSecretName"]);
    let password = value(&["global", "postgresql", "postgresqlPassword"]);
    warnings.push(match (secret, password) {
        (Some(secret), _) => format!(
            "haul does not write passwords: make sure the secret `{secret}` \
             (global.postgresql.postgresqlExistingSecretName) holds the password of user `{user}` on {server}"
        ),
        (None, Some(_)) => format!(
            "haul does not write passwords: make sure global.postgresql.postgresqlPassword is the \
             password of user `{user}` on {server}, or set it yourself"
        ),
        (None, None) => format!(
            "the values set no PostgreSQL password, so the chart's default would be used: set the \
             password of user `{user}` on {server} in global.postgresql.postgresqlPassword or \
             postgresqlExistingSecretName yourself"
        ),
    });

    match root.and_then(|r| r.at(&["postgresql", "enabled"])).and_then(Node::as_scalar) {
        Some(s) if is_true(s) => warnings.push(format!(
            "`postgresql.enabled` is true (line {}): the chart would deploy its bundled PostgreSQL \
             server; set `postgresql.enabled: false` to use {server}",
            line(text, s.text_start)
        )),
        Some(_) => {}
        None => warnings.push(format!(
            "`postgresql.enabled` is not set and the chart deploys its bundled PostgreSQL server by \
             default; set `postgresql.enabled: false` to use {server}"
        )),
    }

    let old_layout = root
        .and_then(|r| r.get("pachd"))
        .and_then(|pachd| pachd.entry("postgresql"))
        .filter(|(_, v)| matches!(v, Node::Mapping(_)));
    if let Some((key, _)) = old_layout {
        warnings.push(format!(
            "`pachd.postgresql` (line {}) is an early chart's layout that haul does not rewrite; \
             Pachyderm 2.x charts read `global.postgresql`",
            line(text, key.start())
        ));
    }
}

/// `true` as Helm reads it (YAML 1.1 booleans).
fn is_true(s: &tree::Scalar) -> bool {
    s.style == saphyr_parser::ScalarStyle::Plain
        && matches!(
            s.value.to_ascii_lowercase().as_str(),
            "true" | "yes" | "on" | "y"
        )
}

/// The storage backends of the chart (`pachd.storage.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Amazon,
    Google,
    Microsoft,
    Minio,
    Local,
}

/// The kinds of object store a bucket target or a storage URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    S3,
    Gcs,
    Azure,
}

impl Backend {
    const ALL: [Backend; 5] = [
        Backend::Amazon,
        Backend::Google,
        Backend::Microsoft,
        Backend::Minio,
        Backend::Local,
    ];

    fn name(self) -> &'static str {
        match self {
            Backend::Amazon => "AMAZON",
            Backend::Google => "GOOGLE",
            Backend::Microsoft => "MICROSOFT",
            Backend::Minio => "MINIO",
            Backend::Local => "LOCAL",
        }
    }

    fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Its section under `pachd.storage` and the key there naming the bucket.
    fn section(self) -> Option<(&'static str, &'static str)> {
        match self {
            Backend::Amazon => Some(("amazon", "bucket")),
            Backend::Google => Some(("google", "bucket")),
            Backend::Microsoft => Some(("microsoft", "container")),
            Backend::Minio => Some(("minio", "bucket")),
            Backend::Local => None,
        }
    }

    fn store(self) -> Option<Store> {
        match self {
            Backend::Amazon | Backend::Minio => Some(Store::S3),
            Backend::Google => Some(Store::Gcs),
            Backend::Microsoft => Some(Store::Azure),
            Backend::Local => None,
        }
    }
}

impl Store {
    /// A bucket target's scheme, as haul's repository URLs spell it.
    fn of_target(scheme: &str) -> Option<Store> {
        match scheme {
            "s3" => Some(Store::S3),
            "gs" => Some(Store::Gcs),
            "az" | "azure" => Some(Store::Azure),
            _ => None,
        }
    }

    /// A `storageURL` scheme, as Pachyderm spells it.
    fn of_storage_url(scheme: &str) -> Option<Store> {
        match scheme {
            "s3" => Some(Store::S3),
            "gs" => Some(Store::Gcs),
            "azblob" | "az" | "azure" => Some(Store::Azure),
            _ => None,
        }
    }
}

/// The backend the chart would use, as the chart decides it
/// (`pachd.storage.backend`, else `deployTarget`), else guessed from the one
/// backend section present, with a warning. `None`: no backend to be seen.
fn resolve_backend(
    text: &str,
    root: Option<&Node>,
    warnings: &mut Vec<String>,
) -> Result<Option<(Backend, String)>, HelmError> {
    let Some(root) = root else { return Ok(None) };
    let scalar = |path: &[&str]| {
        root.at(path)
            .and_then(Node::as_scalar)
            .filter(|s| !s.is_null() && !s.value.is_empty())
    };
    if let Some(s) = scalar(&["pachd", "storage", "backend"]) {
        let line = line(text, s.text_start);
        let backend = Backend::from_name(&s.value).ok_or_else(|| HelmError::UnknownBackend {
            value: s.value.clone(),
            line,
        })?;
        return Ok(Some((
            backend,
            format!("`pachd.storage.backend`, line {line}"),
        )));
    }
    let deploy_target =
        scalar(&["deployTarget"]).and_then(|s| Some((Backend::from_name(&s.value)?, s)));
    if let Some((backend, s)) = deploy_target {
        let line = line(text, s.text_start);
        return Ok(Some((backend, format!("`deployTarget`, line {line}"))));
    }

    let present: Vec<(Backend, bool)> = Backend::ALL
        .into_iter()
        .filter_map(|b| {
            let (section, key) = b.section()?;
            let node = root.at(&["pachd", "storage", section])?;
            matches!(node, Node::Mapping(_))
                .then(|| (b, node.text_at(&[key]).is_some_and(|v| !v.is_empty())))
        })
        .collect();
    let named: Vec<Backend> = present
        .iter()
        .filter(|(_, named)| *named)
        .map(|(b, _)| *b)
        .collect();
    let (candidates, how) = if named.is_empty() {
        (present.iter().map(|(b, _)| *b).collect(), "are all there")
    } else {
        (named, "all name a bucket")
    };
    match candidates.as_slice() {
        [] => Ok(None),
        [backend] => {
            let section = backend.section().map_or("", |(s, _)| s);
            warnings.push(format!(
                "neither `pachd.storage.backend` nor `deployTarget` names the storage backend: \
                 taking {} from the `pachd.storage.{section}` section; set `pachd.storage.backend` \
                 to be sure",
                backend.name()
            ));
            Ok(Some((
                *backend,
                format!("the `pachd.storage.{section}` section"),
            )))
        }
        several => Err(HelmError::AmbiguousBackend {
            found: format!(
                "the sections {} {how}",
                several
                    .iter()
                    .filter_map(|b| b.section())
                    .map(|(s, _)| format!("`pachd.storage.{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The bucket's keys for the backend in use, and the storage URL if set.
fn bucket_writes(
    text: &str,
    root: Option<&Node>,
    target: &BucketTarget,
    warnings: &mut Vec<String>,
) -> Result<Vec<(Vec<&'static str>, String)>, HelmError> {
    non_empty("the bucket name", &target.bucket)?;
    let store = Store::of_target(&target.scheme).ok_or_else(|| HelmError::UnknownScheme {
        scheme: target.scheme.clone(),
    })?;
    let shown = format!("{}://{}", target.scheme, target.bucket);
    let storage_url = root
        .and_then(|r| r.at(&["pachd", "storage", "storageURL"]))
        .and_then(Node::as_scalar)
        .filter(|s| !s.is_null() && !s.value.is_empty());

    let mut writes = Vec::new();
    match resolve_backend(text, root, warnings)? {
        Some((backend, from)) => {
            if backend.store() != Some(store) {
                return Err(HelmError::BackendMismatch {
                    backend: backend.name().into(),
                    from,
                    target: shown,
                });
            }
            let (section, key) = backend
                .section()
                .ok_or_else(|| HelmError::BackendMismatch {
                    backend: backend.name().into(),
                    from: from.clone(),
                    target: shown.clone(),
                })?;
            writes.push((
                vec!["pachd", "storage", section, key],
                target.bucket.clone(),
            ));
            if let Some(endpoint) = &target.endpoint {
                match backend {
                    Backend::Amazon => {
                        writes.push((
                            vec!["pachd", "storage", "amazon", "customEndpoint"],
                            endpoint.clone(),
                        ));
                    }
                    Backend::Minio => {
                        let (host, secure) = minio_endpoint(endpoint)?;
                        writes.push((vec!["pachd", "storage", "minio", "endpoint"], host));
                        let said = root
                            .and_then(|r| r.text_at(&["pachd", "storage", "minio", "secure"]))
                            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                        if let Some(secure) = secure.filter(|&s| s != said) {
                            warnings.push(format!(
                                "the target endpoint {endpoint} is {}: set `pachd.storage.minio.secure` to \"{secure}\"",
                                if secure { "https" } else { "plain http" }
                            ));
                        }
                    }
                    _ => warnings.push(format!(
                        "the target endpoint {endpoint} is not written: the chart has no endpoint \
                         setting for {}",
                        backend.name()
                    )),
                }
            }
        }
        None if storage_url.is_none() => {
            return Err(HelmError::AmbiguousBackend {
                found: "there is no `pachd.storage.amazon`, `google`, `microsoft` or `minio` \
                        section nor `pachd.storage.storageURL`"
                    .into(),
            });
        }
        None => warnings.push(
            "neither `pachd.storage.backend` nor `deployTarget` names the storage backend and no \
             backend section is there: only `pachd.storage.storageURL` is rewritten"
                .into(),
        ),
    }

    if let Some(url) = storage_url {
        let line = line(text, url.text_start);
        let shown_url = url.value.split('?').next().unwrap_or_default().to_owned();
        let error = |reason: String| HelmError::StorageUrl {
            url: shown_url.clone(),
            line,
            reason,
        };
        let (scheme, rest) = url
            .value
            .split_once("://")
            .ok_or_else(|| error("it has no scheme (`s3://`, `gs://`, `azblob://`)".into()))?;
        let url_store = Store::of_storage_url(scheme).ok_or_else(|| {
            error(format!(
                "haul does not know its scheme `{scheme}`: set it by hand"
            ))
        })?;
        if url_store != store {
            return Err(error(format!(
                "its scheme `{scheme}` cannot reach the restored bucket {shown}: change it yourself"
            )));
        }
        let tail = &rest[rest.find(['/', '?', '#']).unwrap_or(rest.len())..];
        if !tail.is_empty() {
            warnings.push(format!(
                "`pachd.storage.storageURL` keeps what follows its bucket ({}): check it fits the target",
                if tail.starts_with('?') { "its query" } else { "its path and query" }
            ));
        }
        writes.push((
            vec!["pachd", "storage", "storageURL"],
            format!("{scheme}://{}{tail}", target.bucket),
        ));
    }
    Ok(writes)
}

/// MinIO's endpoint is `host[:port]`, no scheme; the scheme, if given, says
/// whether the connection is secure.
fn minio_endpoint(endpoint: &str) -> Result<(String, Option<bool>), HelmError> {
    let (secure, rest) = match endpoint.split_once("://") {
        Some(("https", rest)) => (Some(true), rest),
        Some(("http", rest)) => (Some(false), rest),
        Some((scheme, _)) => {
            return Err(HelmError::InvalidTarget {
                what: format!("the MinIO endpoint's scheme {scheme:?} is neither http nor https"),
            });
        }
        None => (None, endpoint),
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(HelmError::InvalidTarget {
            what: format!("the MinIO endpoint {endpoint:?} must be host[:port]"),
        });
    }
    Ok((host.to_owned(), secure))
}

/// Reads the new text back and checks that it differs from the original in
/// the changed values only.
fn verify(
    original: &tree::Doc,
    text: &str,
    changes: &[(&Write, Option<String>)],
) -> Result<(), HelmError> {
    let fail = |path: String, detail: String| HelmError::Verify { path, detail };
    let reread = tree::parse(text).map_err(|e| fail("(whole file)".into(), e.to_string()))?;
    let leaves = |doc: &tree::Doc| -> BTreeMap<Vec<String>, String> {
        doc.root
            .as_ref()
            .map(tree::leaves)
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    let mut expected = leaves(original);
    for (write, _) in changes {
        let path: Vec<String> = write.path.iter().map(|s| (*s).to_owned()).collect();
        // A null parent (`pachd:`) became a mapping.
        expected.retain(|k, _| !(k.len() < path.len() && path.starts_with(k)));
        expected.insert(path, format!("{:?}", write.value));
    }
    let actual = leaves(&reread);
    if expected == actual {
        return Ok(());
    }
    let differs = expected
        .iter()
        .find(|(k, v)| actual.get(*k) != Some(v))
        .map(|(k, v)| {
            (
                k.join("."),
                format!("expected {v}, read {:?}", actual.get(k)),
            )
        })
        .or_else(|| {
            actual
                .iter()
                .find(|(k, _)| !expected.contains_key(*k))
                .map(|(k, v)| (k.join("."), format!("unexpected value {v}")))
        })
        .unwrap_or_default();
    Err(fail(differs.0, differs.1))
}

#[cfg(test)]
mod tests;
