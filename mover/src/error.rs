use haul_manifest::FormatError;

/// What can go wrong in the engine. Every variant names the store URL, key or
/// path it concerns; URLs never carry credentials (they are refused in URLs
/// and only ever read from the environment or a profile).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoverError {
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("cannot {op} {url}")]
    Store {
        op: &'static str,
        url: String,
        #[source]
        source: object_store::Error,
    },

    #[error(
        "the repository {repo} overlaps the source {source_url}: a backup must go to a separate place"
    )]
    Overlap { repo: String, source_url: String },

    #[error("{url} is not a haul repository (it has no haul-repo.json)")]
    NotARepository { url: String },

    #[error("{url} is not empty ({found}); a repository needs an empty location")]
    NotEmpty { url: String, found: String },

    #[error("no snapshot {spec:?} in {url}")]
    UnknownSnapshot { url: String, spec: String },

    #[error("snapshot prefix {spec:?} is ambiguous in {url}: it matches {matches}")]
    AmbiguousSnapshot {
        url: String,
        spec: String,
        matches: String,
    },

    #[error(
        "writing snapshot {snapshot} to {url} failed ({write}) and reading it back failed too ({check}): \
         it may or may not be committed"
    )]
    CommitUnknown {
        url: String,
        snapshot: String,
        write: String,
        check: String,
    },

    /// Written by a newer haul: not damage, a reason to upgrade. (Boxed: a
    /// second inline `FormatError` would cost every error 8 bytes.)
    #[error("{what} in {url} is too new for this haul")]
    TooNew {
        url: String,
        what: String,
        #[source]
        source: Box<FormatError>,
    },

    #[error("cannot open the repository {url}: {reason}")]
    Key { url: String, reason: String },

    #[error("{what} in {url} is damaged")]
    Corrupt {
        url: String,
        what: String,
        #[source]
        source: FormatError,
    },

    #[error("config file {path}: {reason}")]
    Config { path: String, reason: String },

    #[error("{url} listed {key:?} after {prev:?}: listings must be sorted by key")]
    Unsorted {
        url: String,
        prev: String,
        key: String,
    },

    #[error("{key}: {reason}")]
    Object { key: String, reason: String },

    #[error("{failed} object(s) could not be restored; first: {first}")]
    ObjectsFailed { failed: usize, first: String },

    #[error("invalid limits: {0}")]
    Limits(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("background task failed: {0}")]
    Task(String),

    /// Another process is doing what may only run once at a time.
    #[error("{url}: {reason}")]
    Busy { url: String, reason: String },
}

impl MoverError {
    pub(crate) fn store(
        op: &'static str,
        url: impl std::fmt::Display,
        source: object_store::Error,
    ) -> Self {
        Self::Store {
            op,
            url: url.to_string(),
            source,
        }
    }

    /// A sentence an operator can act on, when the cause is recognisable.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Store { source, url, .. } => store_hint(source, url),
            Self::NotARepository { url } => Some(format!(
                "create one with `haul init {url}`, or check the URL"
            )),
            Self::UnknownSnapshot { url, .. } => {
                Some(format!("list snapshots with `haul snapshots --repo {url}`"))
            }
            Self::CommitUnknown { url, snapshot, .. } => Some(format!(
                "`haul snapshots --repo {url}` shows whether {snapshot} is there; if it is not, back up again"
            )),
            Self::TooNew { .. } => Some(format!(
                "this is haul {}: install a newer haul to read this repository; nothing was changed",
                env!("CARGO_PKG_VERSION")
            )),
            Self::Corrupt { url, .. } => Some(format!(
                "run `haul verify --repo {url} --read-data` to find every damaged chunk"
            )),
            Self::Key { .. } => Some(
                "give the repository's key in HAUL_PASSWORD, HAUL_PASSWORD_FILE, HAUL_PASSWORD_COMMAND \
                 or HAUL_KEY_FILE (`haul key list` shows its slots); an unencrypted repository takes none"
                    .into(),
            ),
            Self::Overlap { .. } => {
                Some("choose a repository in another bucket, or a prefix outside the source".into())
            }
            _ => None,
        }
    }
}

/// Which cloud's variables a hint names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    S3,
    Azure,
    Gcs,
}

fn store_hint(e: &object_store::Error, url: &str) -> Option<String> {
    let kind = if url.starts_with("az://") || url.starts_with("azure://") || url.starts_with("abfs")
    {
        Kind::Azure
    } else if url.starts_with("gs://") {
        Kind::Gcs
    } else {
        Kind::S3
    };
    let text = error_chain(e);
    let has = |s: &str| text.contains(s);
    if has("Encountered object with invalid path") {
        return Some(format!(
            "an object of {url} has a key haul's store client cannot carry yet (empty, `.` or `..` \
             segments, or control characters; see the error): rename or move it, or back up a \
             prefix without it"
        ));
    }
    if has("169.254.169.254") {
        return Some(format!(
            "no credentials were found for {url}, and the instance metadata service refused \
             (or is absent): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the \
             store's settings in the config file"
        ));
    }
    if has("NoSuchBucket")
        || has("bucket does not exist")
        || has("The specified bucket does not exist")
        || has("ContainerNotFound")
        || has("The specified container does not exist")
    {
        let what = if kind == Kind::Azure {
            "container"
        } else {
            "bucket"
        };
        Some(format!(
            "the {what} of {url} does not exist: create it, or check the {what} name and endpoint"
        ))
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("403")
        || has("AccessDenied")
        || matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
    {
        Some(format!(
            "access denied: check {} (or the store's settings in the config file) and the {}'s permissions",
            match kind {
                Kind::Azure =>
                    "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, \
                               AZURE_CLIENT_ID / AZURE_CLIENT_SECRET / AZURE_TENANT_ID)",
                Kind::Gcs => "GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS)",
                Kind::S3 => "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
            },
            if kind == Kind::Azure {
                "container"
            } else {
                "bucket"
            }
        ))
    } else if has("error sending request")
        || has("Connection refused")
        || has("dns error")
        || has("connect")
    {
        Some(format!(
            "the store did not answer: check the endpoint ({} or the config file) and the network",
            match kind {
                Kind::Azure => "AZURE_STORAGE_ENDPOINT, AZURE_STORAGE_USE_EMULATOR",
                Kind::Gcs => "GOOGLE_STORAGE_ENDPOINT",
                Kind::S3 => "AWS_ENDPOINT_URL",
            }
        ))
    } else {
        None
    }
}

/// The whole `source()` chain as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

pub type Result<T, E = MoverError> = std::result::Result<T, E>;

impl MoverError {
    /// A format error met reading `what` of the repository at `url`: damage,
    /// or a newer format than this haul reads.
    pub fn format(url: impl Into<String>, what: impl Into<String>, source: FormatError) -> Self {
        let (url, what) = (url.into(), what.into());
        if matches!(source, FormatError::TooNew { .. }) {
            Self::TooNew {
                url,
                what,
                source: Box::new(source),
            }
        } else {
            Self::Corrupt { url, what, source }
        }
    }
}
