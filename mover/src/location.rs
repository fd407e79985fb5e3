//! Stores by URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix`, `file:///abs/path` and `memory://name`.
//!
//! Settings come, in this order of precedence, from the matching `[[store]]`
//! section of the config file, then the environment the way the cloud's own
//! tools read it (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_ENDPOINT_URL, ...;
//! every AZURE_* and GOOGLE_* variable object_store's builders know), on top
//! of haul's own client options (timeouts, AWS_CA_BUNDLE). A section's key
//! that its kind of store does not use is refused, not ignored.
//! Credentials never appear in a URL: a URL with a user or password is refused.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{Certificate, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::Deserialize;

use crate::s3sdk::{SdkS3, SdkSettings};
use crate::{MoverError, Result};

/// The kinds of store haul speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    S3,
    Gcs,
    Azure,
    File,
    Memory,
}

/// A parsed store URL. `prefix` has no leading or trailing `/`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub scheme: Scheme,
    /// Bucket or container; the absolute directory for `file://`; the name for `memory://`.
    pub bucket: String,
    pub prefix: String,
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |reason: &str| MoverError::BadUrl {
            url: redact(raw),
            reason: reason.into(),
        };
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
            bad("expected SCHEME://..., one of s3://bucket/prefix, gs://, az://, file:///absolute/path, memory://name")
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Scheme::S3,
            "gs" | "gcs" => Scheme::Gcs,
            "az" | "azure" | "abfs" => Scheme::Azure,
            "file" => Scheme::File,
            "memory" => Scheme::Memory,
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}: use s3://, gs://, az://, file:// or memory://"
                )));
            }
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(bad(
                "query strings and fragments are not allowed; put settings in the config file",
            ));
        }
        if scheme == Scheme::File {
            if !rest.starts_with('/') {
                return Err(bad("file URLs need an absolute path: file:///abs/path"));
            }
            let path = normalize_fs_path(FsPath::new(rest));
            return Ok(Self {
                scheme,
                bucket: path.to_string_lossy().into_owned(),
                prefix: String::new(),
            });
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') || bucket.contains(':') {
            return Err(bad(
                "credentials and ports do not belong in the URL; use environment variables or the config file",
            ));
        }
        if bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
            return Err(bad("the prefix has empty, '.' or '..' segments"));
        }
        Ok(Self {
            scheme,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// Does one of these two locations contain the other?
    pub fn overlaps(&self, other: &StoreUrl) -> bool {
        if self.scheme != other.scheme
            || (self.scheme != Scheme::File && self.bucket != other.bucket)
        {
            return false;
        }
        let (a, b) = if self.scheme == Scheme::File {
            (self.bucket.clone(), other.bucket.clone())
        } else {
            (self.prefix.clone(), other.prefix.clone())
        };
        let within = |inner: &str, outer: &str| {
            let outer = outer.trim_end_matches('/');
            outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
        };
        within(&a, &b) || within(&b, &a)
    }

    /// This URL with `/sub` appended to the prefix.
    pub fn join(&self, sub: &str) -> StoreUrl {
        let mut u = self.clone();
        if u.scheme == Scheme::File {
            u.bucket = format!("{}/{}", u.bucket.trim_end_matches('/'), sub);
        } else if u.prefix.is_empty() {
            u.prefix = sub.to_owned();
        } else {
            u.prefix = format!("{}/{sub}", u.prefix);
        }
        u
    }
}

impl Scheme {
    /// As URLs spell it: `s3`, `gs`, `az`, `file`, `memory`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
            Scheme::File => "file",
            Scheme::Memory => "memory",
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scheme == Scheme::File {
            return write!(f, "file://{}", self.bucket);
        }
        let scheme = self.scheme.name();
        if self.prefix.is_empty() {
            write!(f, "{scheme}://{}", self.bucket)
        } else {
            write!(f, "{scheme}://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// Drops anything between `://` and `@` so an URL typed with a password never echoes it.
fn redact(raw: &str) -> String {
    match (raw.find("://"), raw.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &raw[..s], &raw[at..]),
        _ => raw.to_owned(),
    }
}

/// Resolves `.` and `..` without touching the file system (the path may not exist yet).
fn normalize_fs_path(p: &FsPath) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out
}

/// A config file's parse error as `line N: what`, without the line itself:
/// toml quotes the offending line, and a secret put there by mistake
/// (`secret_access_key = "..."`) would be printed.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!(
            "line {}: {}",
            text[..span.start.min(text.len())].matches('\n').count() + 1,
            e.message().trim()
        ),
        None => e.message().trim().to_owned(),
    }
}

/// Per-store settings of the config file (`[[store]]` sections).
///
/// ```toml
/// [[store]]
/// url = "s3://prod-backups"                 # applies to this URL and everything under it
/// endpoint = "https://minio.internal:9000"
/// region = "eu-west-1"
/// profile = "backup"                        # a profile of ~/.aws/credentials
/// access_key_id_env = "BACKUP_AWS_ACCESS_KEY_ID"      # or: the names of env vars
/// secret_access_key_env = "BACKUP_AWS_SECRET_ACCESS_KEY"
/// payload = "signed"                        # or "crc64nvme" (the default)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub session_token_env: Option<String>,
    /// Allow plain http even when the endpoint is not spelled `http://`.
    pub allow_http: Option<bool>,
    /// Address buckets as `bucket.endpoint` instead of `endpoint/bucket`.
    pub virtual_hosted_style: Option<bool>,
    /// How request bodies written to S3 are protected (see [`Payload`]).
    pub payload: Option<Payload>,
    /// Azure: the storage account (else AZURE_STORAGE_ACCOUNT_NAME).
    pub account: Option<String>,
    /// Azure: the name of the variable holding the account's access key
    /// (else AZURE_STORAGE_ACCOUNT_KEY, or the other credentials the
    /// environment gives).
    pub access_key_env: Option<String>,
    /// Azure: talk to the Azurite emulator (its well-known account).
    pub use_emulator: Option<bool>,
    /// GCS: a service account key file (else GOOGLE_SERVICE_ACCOUNT, or
    /// the application default credentials).
    pub service_account_path: Option<String>,
}

impl StoreSettings {
    /// The keys this section sets that its URL's kind of store has no use
    /// for: refused, not silently ignored.
    fn misplaced(&self, scheme: Scheme) -> Vec<&'static str> {
        let s3 = [
            ("region", self.region.is_some()),
            ("profile", self.profile.is_some()),
            ("access_key_id_env", self.access_key_id_env.is_some()),
            (
                "secret_access_key_env",
                self.secret_access_key_env.is_some(),
            ),
            ("session_token_env", self.session_token_env.is_some()),
            ("virtual_hosted_style", self.virtual_hosted_style.is_some()),
            ("payload", self.payload.is_some()),
        ];
        let azure = [
            ("account", self.account.is_some()),
            ("access_key_env", self.access_key_env.is_some()),
            ("use_emulator", self.use_emulator.is_some()),
        ];
        let gcs = [("service_account_path", self.service_account_path.is_some())];
        let foreign: Vec<(&'static str, bool)> = match scheme {
            Scheme::S3 => azure.into_iter().chain(gcs).collect(),
            Scheme::Azure => s3.into_iter().chain(gcs).collect(),
            Scheme::Gcs => s3.into_iter().chain(azure).collect(),
            Scheme::File | Scheme::Memory => s3
                .into_iter()
                .chain(azure)
                .chain(gcs)
                .chain([
                    ("endpoint", self.endpoint.is_some()),
                    ("allow_http", self.allow_http.is_some()),
                ])
                .collect(),
        };
        foreign
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| k)
            .collect()
    }
}

/// The environment variables haul passes to the Azure and GCS clients when
/// the environment is replaced (tests); the real environment is read whole,
/// every `AZURE_*` and `GOOGLE_*` variable the clients know.
const CLOUD_VARS: &[&str] = &[
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURE_STORAGE_ENDPOINT",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_ALLOW_HTTP",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_STORAGE_ENDPOINT",
    "GOOGLE_ALLOW_HTTP",
];

/// How the bodies haul writes to S3 are protected in transit.
///
/// The default is the checksum, not the signature: the SHA-256 of a signed
/// body was 38% of haul's CPU in a backup (BENCHMARKS.md), and a server need
/// not check it: SeaweedFS stores a body whose signed SHA-256 is wrong, yet
/// refuses one whose CRC64-NVME is wrong (`BadDigest`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// The body is not signed (`UNSIGNED-PAYLOAD`) and carries a CRC64-NVME
    /// checksum instead, as the AWS SDKs do by default since 2025. AWS S3 and
    /// servers with flexible checksums (SeaweedFS, recent MinIO) verify it;
    /// on a server that ignores it, TLS protects the body.
    #[default]
    Crc64nvme,
    /// SigV4 signs the SHA-256 of every body, for servers that verify the
    /// signed hash but not flexible checksums (older MinIO, Ceph). Costs one
    /// SHA-256 pass over every byte written.
    Signed,
}

/// Reads an environment variable (the process environment unless replaced in tests).
type EnvReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Everything needed to open stores: the `[[store]]` sections and a way to
/// read the environment (replaceable in tests).
#[derive(Clone, Default)]
pub struct StoreConfig {
    pub stores: Vec<StoreSettings>,
    env: Option<EnvReader>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("stores", &self.stores)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// Reads the `[[store]]` sections of a TOML config file (other sections are
    /// for other parts of haul and are ignored here).
    pub fn from_toml(text: &str, path: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            store: Vec<StoreSettings>,
        }
        let f: File = toml::from_str(text).map_err(|e| MoverError::Config {
            path: path.into(),
            reason: toml_error(text, &e),
        })?;
        for s in &f.store {
            let url = StoreUrl::parse(&s.url).map_err(|e| MoverError::Config {
                path: path.into(),
                reason: e.to_string(),
            })?;
            let misplaced = s.misplaced(url.scheme);
            if !misplaced.is_empty() {
                return Err(MoverError::Config {
                    path: path.into(),
                    reason: format!(
                        "[[store]] {}: {} {} no setting of a {}:// store (see `haul --help` for each kind's keys)",
                        s.url,
                        misplaced.join(", "),
                        if misplaced.len() == 1 { "is" } else { "are" },
                        url.scheme.name()
                    ),
                });
            }
        }
        Ok(Self {
            stores: f.store,
            env: None,
        })
    }

    /// Replaces the process environment as the source of `AWS_*` settings.
    pub fn with_env(
        mut self,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env = Some(Arc::new(env));
        self
    }

    fn var(&self, name: &str) -> Option<String> {
        let v = match &self.env {
            Some(f) => f(name),
            None => std::env::var(name).ok(),
        };
        v.filter(|s| !s.is_empty())
    }

    /// The settings whose URL is the longest prefix of `url`.
    fn settings_for(&self, url: &StoreUrl) -> StoreSettings {
        self.stores
            .iter()
            .filter_map(|s| StoreUrl::parse(&s.url).ok().map(|u| (u, s)))
            .filter(|(u, _)| {
                u.scheme == url.scheme
                    && u.bucket == url.bucket
                    && (u.prefix.is_empty()
                        || url.prefix == u.prefix
                        || url.prefix.starts_with(&format!("{}/", u.prefix)))
            })
            .max_by_key(|(u, _)| u.prefix.len())
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// Opens the store behind `url`. `create` makes a missing local directory.
    pub fn open(&self, url: &StoreUrl, create: bool) -> Result<Location> {
        let fail = |e: object_store::Error| MoverError::store("open", url, e);
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match url.scheme {
            Scheme::Memory => (memory_store(&url.bucket), Path::default()),
            Scheme::File => {
                let dir = PathBuf::from(&url.bucket);
                if create {
                    std::fs::create_dir_all(&dir).map_err(|source| MoverError::Io {
                        what: format!("cannot create {}", dir.display()),
                        source,
                    })?;
                } else if !dir.is_dir() {
                    return Err(MoverError::Io {
                        what: format!("{url}"),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no such directory",
                        ),
                    });
                }
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(fail)?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), Path::default())
            }
            Scheme::S3 => {
                let b = self.s3_builder(url)?;
                let s3 = b.clone().build().map_err(fail)?;
                let sdk = self.sdk_s3(url, &b, &s3)?;
                return Ok(Location {
                    url: url.clone(),
                    store: Arc::new(s3),
                    prefix: prefix_path(url)?,
                    sdk: Some(Arc::new(sdk)),
                });
            }
            Scheme::Gcs => (
                Arc::new(self.gcs_builder(url)?.build().map_err(fail)?),
                prefix_path(url)?,
            ),
            Scheme::Azure => (
                Arc::new(self.azure_builder(url)?.build().map_err(fail)?),
                prefix_path(url)?,
            ),
        };
        Ok(Location {
            url: url.clone(),
            store,
            prefix,
            sdk: None,
        })
    }

    /// The AWS SDK client beside object_store's for an S3 location (see
    /// `s3sdk`): same endpoint, region, addressing style, CA bundle and
    /// credentials.
    fn sdk_s3(
        &self,
        url: &StoreUrl,
        b: &AmazonS3Builder,
        s3: &object_store::aws::AmazonS3,
    ) -> Result<SdkS3> {
        use object_store::aws::AmazonS3ConfigKey as K;
        let ca_bundle = self.ca_bundle()?.map(|(_, pem)| pem);
        let settings = SdkSettings {
            bucket: url.bucket.clone(),
            region: b
                .get_config_value(&K::Region)
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint: b.get_config_value(&K::Endpoint),
            virtual_hosted: b
                .get_config_value(&K::VirtualHostedStyleRequest)
                .is_some_and(|v| v == "true"),
            ca_bundle,
            request_timeout: REQUEST_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
        };
        SdkS3::new(settings, s3.credentials().clone()).map_err(|e| MoverError::Config {
            path: url.to_string(),
            reason: format!("cannot set up the S3 client: {e}"),
        })
    }

    fn s3_builder(&self, url: &StoreUrl) -> Result<AmazonS3Builder> {
        let s = self.settings_for(url);
        let profile_name = s.profile.clone().or_else(|| self.var("AWS_PROFILE"));
        let profile = match &profile_name {
            Some(name) => Some(self.aws_profile(name)?),
            None => None,
        };
        let from_profile = |k: &str| profile.as_ref().and_then(|p| p.get(k).cloned());

        // Start from the environment so web-identity, container and instance
        // credentials keep working, then apply what we resolved explicitly.
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_retry(retry());
        if s.access_key_id_env.is_none() && s.profile.is_none() && self.env.is_none() {
            b = AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .with_retry(retry());
        }

        let from_named = |n: &Option<String>| -> Result<Option<String>> {
            n.as_deref()
                .map(|name| self.named_var(url, name))
                .transpose()
        };
        let (key, secret, token) = if s.access_key_id_env.is_some() {
            (
                from_named(&s.access_key_id_env)?,
                from_named(&s.secret_access_key_env)?,
                from_named(&s.session_token_env)?,
            )
        } else if s.profile.is_none() && self.var("AWS_ACCESS_KEY_ID").is_some() {
            (
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                self.var("AWS_SESSION_TOKEN"),
            )
        } else {
            (
                from_profile("aws_access_key_id"),
                from_profile("aws_secret_access_key"),
                from_profile("aws_session_token"),
            )
        };
        if let Some(k) = key {
            b = b.with_access_key_id(k);
            match secret {
                Some(sec) => b = b.with_secret_access_key(sec),
                None => {
                    return Err(MoverError::BadUrl {
                        url: url.to_string(),
                        reason: "an access key id is set but no secret access key".into(),
                    });
                }
            }
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }

        let region = s
            .region
            .clone()
            .or_else(|| self.var("AWS_REGION"))
            .or_else(|| self.var("AWS_DEFAULT_REGION"))
            .or_else(|| from_profile("region"))
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);

        let endpoint = s
            .endpoint
            .clone()
            .or_else(|| self.var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| self.var("AWS_ENDPOINT_URL"))
            .or_else(|| from_profile("endpoint_url"));
        let mut allow_http = s.allow_http.unwrap_or(false);
        if let Some(ep) = endpoint {
            if ep.contains('@') {
                return Err(MoverError::BadUrl {
                    url: "endpoint".into(),
                    reason: "credentials do not belong in the endpoint URL".into(),
                });
            }
            allow_http |= ep.starts_with("http://");
            warn_plain_http(&ep);
            b = b.with_endpoint(ep.trim_end_matches('/'));
            b = b.with_virtual_hosted_style_request(s.virtual_hosted_style.unwrap_or(false));
        } else if let Some(v) = s.virtual_hosted_style {
            b = b.with_virtual_hosted_style_request(v);
        }
        if s.payload.unwrap_or_default() == Payload::Crc64nvme {
            b = b
                .with_unsigned_payload(true)
                .with_checksum_algorithm(object_store::aws::Checksum::CRC64NVME);
        }
        let opts = self.client_options()?.with_allow_http(allow_http);
        Ok(b.with_allow_http(allow_http).with_client_options(opts))
    }

    /// A variable a `[[store]]` section names for a credential. Unset, it is
    /// an error: the client would fall back to other credentials (instance
    /// metadata) without a word.
    fn named_var(&self, url: &StoreUrl, name: &str) -> Result<String> {
        self.var(name).ok_or_else(|| MoverError::BadUrl {
            url: url.to_string(),
            reason: format!("the config file's [[store]] section names {name}, which is not set"),
        })
    }

    /// The environment's variables starting with `prefix` (`AZURE_`,
    /// `GOOGLE_`), as the cloud's own builder reads them.
    fn prefixed_vars(&self, prefix: &str) -> Vec<(String, String)> {
        match &self.env {
            None => std::env::vars()
                .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
                .collect(),
            Some(_) => CLOUD_VARS
                .iter()
                .filter(|k| k.starts_with(prefix))
                .filter_map(|k| self.var(k).map(|v| ((*k).to_owned(), v)))
                .collect(),
        }
    }

    /// Azure: haul's client options first, then every `AZURE_*` variable
    /// the client knows (so `AZURE_ALLOW_HTTP` and the rest add to them),
    /// then the `[[store]]` section.
    fn azure_builder(&self, url: &StoreUrl) -> Result<MicrosoftAzureBuilder> {
        use object_store::azure::AzureConfigKey;
        let s = self.settings_for(url);
        let mut b = MicrosoftAzureBuilder::new()
            .with_container_name(&url.bucket)
            .with_client_options(self.client_options()?)
            .with_retry(retry());
        for (k, v) in self.prefixed_vars("AZURE_") {
            if let Ok(key) = k.to_ascii_lowercase().parse::<AzureConfigKey>() {
                b = b.with_config(key, v);
            }
        }
        if let Some(a) = &s.account {
            b = b.with_account(a);
        }
        if let Some(name) = &s.access_key_env {
            b = b.with_access_key(self.named_var(url, name)?);
        }
        if let Some(e) = s.use_emulator {
            b = b.with_use_emulator(e);
        }
        if let Some(ep) = s
            .endpoint
            .clone()
            .or_else(|| self.var("AZURE_STORAGE_ENDPOINT"))
        {
            warn_plain_http(&ep);
        }
        if let Some(ep) = &s.endpoint {
            b = b.with_endpoint(ep.trim_end_matches('/').to_owned());
            if ep.starts_with("http://") {
                b = b.with_allow_http(true);
            }
        }
        if let Some(h) = s.allow_http {
            b = b.with_allow_http(h);
        }
        Ok(b)
    }

    /// GCS: as Azure, with `GOOGLE_*` variables.
    fn gcs_builder(&self, url: &StoreUrl) -> Result<GoogleCloudStorageBuilder> {
        use object_store::gcp::GoogleConfigKey;
        let s = self.settings_for(url);
        let mut b = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&url.bucket)
            .with_client_options(self.client_options()?)
            .with_retry(retry());
        for (k, v) in self.prefixed_vars("GOOGLE_") {
            if let Ok(key) = k.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                b = b.with_config(key, v);
            }
        }
        if let Some(p) = &s.service_account_path {
            b = b.with_service_account_path(p);
        }
        if let Some(ep) = s
            .endpoint
            .clone()
            .or_else(|| self.var("GOOGLE_STORAGE_ENDPOINT"))
        {
            warn_plain_http(&ep);
        }
        if let Some(ep) = &s.endpoint {
            b = b.with_config(
                GoogleConfigKey::BaseUrl,
                ep.trim_end_matches('/').to_owned(),
            );
        }
        // The section's allow_http, else the endpoint's scheme decides.
        let allow = s
            .allow_http
            .or_else(|| s.endpoint.as_deref().map(|ep| ep.starts_with("http://")));
        if let Some(h) = allow {
            b = b.with_config(
                GoogleConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                h.to_string(),
            );
        }
        Ok(b)
    }

    /// Reads a profile from the shared credentials and config files.
    fn aws_profile(&self, name: &str) -> Result<HashMap<String, String>> {
        let home = self.var("HOME").unwrap_or_default();
        let creds = self
            .var("AWS_SHARED_CREDENTIALS_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/credentials"));
        let config = self
            .var("AWS_CONFIG_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/config"));
        let mut out = HashMap::new();
        let mut found = false;
        for (file, section) in [
            (config, format!("profile {name}")),
            (creds, name.to_owned()),
        ] {
            let Ok(ini) = ini::Ini::load_from_file(&file) else {
                continue;
            };
            let sec = ini
                .section(Some(section.as_str()))
                .or_else(|| ini.section(Some(name)));
            if let Some(sec) = sec {
                found = true;
                for (k, v) in sec.iter() {
                    out.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        if !found {
            return Err(MoverError::Config {
                path: "~/.aws/credentials".into(),
                reason: format!(
                    "AWS profile {name:?} not found in the shared credentials or config file"
                ),
            });
        }
        Ok(out)
    }

    /// The CA bundle AWS_CA_BUNDLE names, read: its path and PEM bytes.
    fn ca_bundle(&self) -> Result<Option<(String, Vec<u8>)>> {
        let Some(path) = self.var("AWS_CA_BUNDLE") else {
            return Ok(None);
        };
        let pem = std::fs::read(&path).map_err(|source| MoverError::Io {
            what: format!("cannot read AWS_CA_BUNDLE {path}"),
            source,
        })?;
        Ok(Some((path, pem)))
    }

    /// HTTP client options: the CA bundle operators point AWS tools at, and
    /// timeouts suited to multi-megabyte transfers.
    fn client_options(&self) -> Result<ClientOptions> {
        let mut o = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_read_timeout(STALL_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(10))
            .with_pool_max_idle_per_host(64);
        if let Some((bundle, pem)) = self.ca_bundle()? {
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| MoverError::Config {
                path: bundle.clone(),
                reason: format!("AWS_CA_BUNDLE is not a PEM bundle: {e}"),
            })?;
            // The bundle replaces the system's roots, as the AWS SDKs and CLI
            // do: an operator who names a CA trusts that CA, not also every
            // public one.
            o = o.with_no_system_certificates(true);
            for c in certs {
                o = o.with_root_certificate(c);
            }
        }
        Ok(o)
    }
}

/// Says once per endpoint that a plain-http endpoint off this machine
/// carries credentials' signatures and data unencrypted (loopback is quiet:
/// it never leaves the machine).
fn warn_plain_http(endpoint: &str) {
    static SAID: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let name = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return;
    }
    let first = SAID
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(endpoint.to_owned());
    if first {
        tracing::warn!(
            "{endpoint} is plain http: the data, and what proves the credentials, cross the \
             network unencrypted; use https unless the network is yours alone"
        );
    }
}

/// The URL's prefix as a store path, verbatim.
fn prefix_path(url: &StoreUrl) -> Result<Path> {
    Path::parse(&url.prefix).map_err(|e| MoverError::BadUrl {
        url: url.to_string(),
        reason: format!("the prefix is not a valid key: {e}"),
    })
}

/// A whole request (an 8 MiB chunk at a slow 100 kB/s takes 80 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// A request that receives nothing for this long is stalled: it fails and
/// is retried (a stalled connection used to hold a run for the whole
/// request timeout, then fail it without a retry).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long retries of one request may go on: several stalls' worth, so a
/// stall is retried, while a dead endpoint still fails in minutes.
const RETRY_BUDGET: Duration = Duration::from_secs(180);

/// Retries with backoff for transient errors (stalls included), within
/// [`RETRY_BUDGET`].
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        retry_timeout: RETRY_BUDGET,
        ..Default::default()
    }
}

/// `memory://name` stores live for the process: the same name is the same store.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut map = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(name.to_owned())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// How one object key is reached (see [`Location::addr`]).
#[derive(Debug, Clone)]
pub(crate) enum Addr {
    Path(Path),
    /// S3, a key no `Path` can carry: its whole key in the bucket.
    Sdk(Arc<SdkS3>, String),
}

/// What a HEAD request tells of an object.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub size: u64,
    pub etag: Option<String>,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// An opened store and the prefix haul works under.
#[derive(Clone)]
pub struct Location {
    pub url: StoreUrl,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// S3 only: the AWS SDK beside `store`, for listings and for the keys
    /// `store` cannot name (see `s3sdk`).
    pub(crate) sdk: Option<Arc<SdkS3>>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({})", self.url)
    }
}

impl Location {
    /// A location over a store opened elsewhere: a wrapped store, such as
    /// the fault-injecting one of tests ([`crate::faults`]). `url` names it
    /// in messages and overlap checks, and its scheme says how it is listed:
    /// a `file://` location is walked on disk, not listed through `store`.
    pub fn from_store(url: StoreUrl, store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self {
            url,
            store,
            prefix,
            sdk: None,
        }
    }

    /// The store path of an object key relative to this location, taken
    /// verbatim: `Path::from` would percent-encode non-ASCII and some
    /// punctuation, silently addressing another object, and `Path::parse`
    /// drops a leading or trailing `/`. Keys with empty, `.` or `..`
    /// segments, control characters or an outer `/` cannot be addressed
    /// (`Location::addr` reaches them on S3).
    pub fn key_path(&self, key: &str) -> Result<Path> {
        let full = self.full_key(key);
        let unaddressable = |reason: String| MoverError::Object {
            key: key.to_owned(),
            reason: format!("this key cannot be addressed through object_store paths: {reason}"),
        };
        let p = Path::parse(&full).map_err(|e| unaddressable(e.to_string()))?;
        if p.as_ref() != full {
            return Err(unaddressable("it starts or ends with `/`".into()));
        }
        Ok(p)
    }

    /// Aborts the multipart uploads under this location that started
    /// before `before` (S3 only; elsewhere there are none to find). Returns
    /// how many.
    pub async fn abort_stale_uploads(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let Some(sdk) = &self.sdk else {
            return Ok(0);
        };
        let prefix = self.full_key("");
        let stale = sdk
            .stale_uploads(&prefix, before)
            .await
            .map_err(|f| MoverError::store("list multipart uploads of", &self.url, f.error))?;
        for (key, id) in &stale {
            sdk.abort_upload(key, id).await.map_err(|f| {
                MoverError::store("abort a multipart upload in", &self.url, f.error)
            })?;
        }
        Ok(stale.len() as u64)
    }

    /// The whole object at `path` (a store path, prefix included).
    pub(crate) async fn get_bytes(&self, path: &Path) -> object_store::Result<bytes::Bytes> {
        match self.store.get(path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        }
    }

    /// `key` as the store names it: under the location's prefix.
    pub(crate) fn full_key(&self, key: &str) -> String {
        if self.prefix.as_ref().is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// How `key` is reached: through object_store when a path can carry it,
    /// else, on S3, through the AWS SDK; anywhere else it is an error that
    /// names the key.
    pub(crate) fn addr(&self, key: &str) -> Result<Addr> {
        match self.key_path(key) {
            Ok(p) => Ok(Addr::Path(p)),
            Err(e) => match &self.sdk {
                Some(sdk) => Ok(Addr::Sdk(sdk.clone(), self.full_key(key))),
                None => Err(e),
            },
        }
    }

    /// Size, ETag and modification time of the object at `a`.
    pub(crate) async fn head_at(&self, a: &Addr) -> object_store::Result<Head> {
        match a {
            Addr::Path(p) => self.store.head(p).await.map(|m| Head {
                size: m.size,
                etag: m.e_tag,
                modified: m.last_modified,
            }),
            Addr::Sdk(sdk, key) => sdk.head(key).await.map(|o| Head {
                size: o.size,
                etag: o.etag,
                modified: o.modified,
            }),
        }
    }

    /// The bytes of the object at `a` (those in `range` when given), if its
    /// ETag is still `if_match` when given.
    pub(crate) async fn get_at(
        &self,
        a: &Addr,
        range: Option<std::ops::Range<u64>>,
        if_match: Option<String>,
    ) -> object_store::Result<bytes::Bytes> {
        match a {
            Addr::Path(p) => {
                let opts = object_store::GetOptions::default()
                    .with_range(range.map(object_store::GetRange::Bounded))
                    .with_if_match(if_match);
                self.store.get_opts(p, opts).await?.bytes().await
            }
            Addr::Sdk(sdk, key) => sdk.get(key, range, if_match).await,
        }
    }

    /// Writes the object at `a` in one request.
    pub(crate) async fn put_at(
        &self,
        a: &Addr,
        body: object_store::PutPayload,
    ) -> object_store::Result<object_store::PutResult> {
        match a {
            Addr::Path(p) => self.store.put(p, body).await,
            Addr::Sdk(sdk, key) => sdk.put(key, body).await,
        }
    }

    /// Starts a multipart upload of the object at `a`.
    pub(crate) async fn put_multipart_at(
        &self,
        a: &Addr,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        match a {
            Addr::Path(p) => self.store.put_multipart(p).await,
            Addr::Sdk(sdk, key) => sdk.put_multipart(key).await,
        }
    }

    /// Deletes the object at `a`.
    pub(crate) async fn delete_at(&self, a: &Addr) -> object_store::Result<()> {
        match a {
            Addr::Path(p) => self.store.delete(p).await,
            Addr::Sdk(sdk, key) => sdk.delete(key).await,
        }
    }

    /// For a local folder: refuses a key whose way down passes through a
    /// symbolic link (`ln/x` with `ln` pointing out of the folder), which
    /// writing or deleting it would follow out of the target. Other stores
    /// have no links: always fine.
    pub fn check_no_link(&self, key: &str) -> Result<()> {
        if self.url.scheme != Scheme::File {
            return Ok(());
        }
        let mut p = PathBuf::from(&self.url.bucket);
        let parts: Vec<&str> = key.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            p.push(part);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(MoverError::Object {
                        key: key.to_owned(),
                        reason: format!(
                            "{} is a symbolic link: refusing to write or delete through it",
                            p.display()
                        ),
                    });
                }
                Ok(_) => {}
                // Not there yet: nothing below it can be a link.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// The store path of one of haul's own names (`chunks/ab/…`,
    /// `snapshots/….json`): plain ASCII, so building it cannot fail.
    pub fn path(&self, name: &str) -> Path {
        debug_assert!(
            name.bytes().all(|b| b.is_ascii_graphic()),
            "internal name {name:?}"
        );
        self.key_path(name)
            .expect("haul's own names are valid paths")
    }

    /// `key` relative to this location, from a full store path.
    pub fn relative(&self, p: &Path) -> String {
        let full = p.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            full.to_owned()
        } else {
            full.strip_prefix(pre)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(full)
                .to_owned()
        }
    }

    /// A location under this one.
    pub fn child(&self, sub: &str) -> Location {
        Location {
            url: self.url.join(sub),
            store: self.store.clone(),
            prefix: self.path(sub),
            sdk: self.sdk.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_config_error_names_the_line_never_its_text() {
        let text = "[[store]]\nurl = \"s3://b\"\nsecret_access_key = \"hunter2\"\n";
        let err = StoreConfig::from_toml(text, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("secret_access_key"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_store_section_refuses_keys_of_another_kind_of_store() {
        for (toml, bad) in [
            ("url = \"az://c\"\nregion = \"eu\"", "region"),
            (
                "url = \"gs://b\"\naccess_key_id_env = \"K\"",
                "access_key_id_env",
            ),
            ("url = \"s3://b\"\naccount = \"acct\"", "account"),
            (
                "url = \"file:///tmp/x\"\nendpoint = \"http://h\"",
                "endpoint",
            ),
        ] {
            let err = StoreConfig::from_toml(&format!("[[store]]\n{toml}\n"), "c.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad), "{toml}: {err}");
        }
        let ok = "[[store]]\nurl = \"az://c\"\naccount = \"a\"\naccess_key_env = \"K\"\nendpoint = \"http://127.0.0.1:1/a\"\n";
        StoreConfig::from_toml(ok, "c.toml").unwrap();
    }

    #[test]
    fn azure_and_gcs_merge_the_environment_with_haul_s_client_options() {
        use object_store::ClientConfigKey as C;
        use object_store::azure::AzureConfigKey as A;
        use object_store::gcp::GoogleConfigKey as G;
        let cfg = StoreConfig::from_toml(
            "[[store]]\nurl = \"az://c\"\naccount = \"acct\"\naccess_key_env = \"MY_KEY\"\n",
            "c.toml",
        )
        .unwrap()
        .with_env(env_of(&[
            ("AZURE_ALLOW_HTTP", "true"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "from-env"),
            ("MY_KEY", "a2V5"),
            ("GOOGLE_ALLOW_HTTP", "true"),
            ("GOOGLE_SERVICE_ACCOUNT", "/sa.json"),
        ]));
        let az = cfg
            .azure_builder(&StoreUrl::parse("az://c/p").unwrap())
            .unwrap();
        assert_eq!(
            az.get_config_value(&A::Client(C::AllowHttp)).as_deref(),
            Some("true")
        );
        assert!(
            az.get_config_value(&A::Client(C::Timeout)).is_some(),
            "haul's timeouts stay"
        );
        assert_eq!(
            az.get_config_value(&A::AccountName).as_deref(),
            Some("acct")
        );
        assert_eq!(az.get_config_value(&A::AccessKey).as_deref(), Some("a2V5"));
        let gs = cfg
            .gcs_builder(&StoreUrl::parse("gs://b").unwrap())
            .unwrap();
        assert_eq!(
            gs.get_config_value(&G::Client(C::AllowHttp)).as_deref(),
            Some("true")
        );
        assert!(gs.get_config_value(&G::Client(C::Timeout)).is_some());
        assert_eq!(
            gs.get_config_value(&G::ServiceAccount).as_deref(),
            Some("/sa.json")
        );
        // An S3 key variable named but unset is an error too.
        let s3 = StoreConfig::from_toml(
            "[[store]]\nurl = \"s3://b\"\naccess_key_id_env = \"K\"\nsecret_access_key_env = \"S\"\n",
            "c.toml",
        )
        .unwrap()
        .with_env(env_of(&[("K", "key")]));
        let err = s3
            .s3_builder(&StoreUrl::parse("s3://b").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("names S, which is not set"),
            "{err}"
        );
        // A key variable named but unset is an error, not a fallback.
        let unset = StoreConfig::from_toml(
            "[[store]]\nurl = \"az://c\"\naccess_key_env = \"NOPE\"\n",
            "c.toml",
        )
        .unwrap()
        .with_env(env_of(&[]));
        let err = unset
            .azure_builder(&StoreUrl::parse("az://c").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
    }

    #[test]
    fn parses_every_scheme() {
        let u = StoreUrl::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(
            (u.scheme, u.bucket.as_str(), u.prefix.as_str()),
            (Scheme::S3, "bucket", "a/b")
        );
        assert_eq!(u.to_string(), "s3://bucket/a/b");
        assert_eq!(StoreUrl::parse("gs://b").unwrap().scheme, Scheme::Gcs);
        assert_eq!(StoreUrl::parse("az://c/p").unwrap().scheme, Scheme::Azure);
        let f = StoreUrl::parse("file:///tmp/x/../y").unwrap();
        assert_eq!(f.bucket, "/tmp/y");
        assert_eq!(StoreUrl::parse("memory://t").unwrap().bucket, "t");
    }

    #[test]
    fn refuses_bad_urls_without_echoing_secrets() {
        for bad in [
            "ftp://x",
            "bucket",
            "file://relative",
            "s3://",
            "s3://b/../c",
            "s3://b?x=1",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
        let e = StoreUrl::parse("s3://AKIA:supersecret@bucket/p")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("supersecret"), "{e}");
    }

    #[test]
    fn overlap_is_by_bucket_and_path_segment() {
        let o = |a: &str, b: &str| {
            StoreUrl::parse(a)
                .unwrap()
                .overlaps(&StoreUrl::parse(b).unwrap())
        };
        assert!(o("s3://b", "s3://b/backup"));
        assert!(o("s3://b/data", "s3://b/data/backup"));
        assert!(o("s3://b/data", "s3://b/data"));
        assert!(!o("s3://b/data", "s3://b/data-backup"));
        assert!(!o("s3://b/data", "s3://c/data"));
        assert!(!o("s3://b/data", "gs://b/data"));
        assert!(o("file:///srv/data", "file:///srv/data/repo"));
        assert!(!o("file:///srv/data", "file:///srv/database"));
    }

    #[test]
    fn settings_pick_the_longest_matching_prefix_and_env_names() {
        let cfg = StoreConfig::from_toml(
            r#"
            [[store]]
            url = "s3://b"
            endpoint = "http://one"
            [[store]]
            url = "s3://b/deep"
            endpoint = "http://two"
            access_key_id_env = "K2"
            secret_access_key_env = "S2"
            "#,
            "t.toml",
        )
        .unwrap()
        .with_env(|k| match k {
            "K2" => Some("key2".into()),
            "S2" => Some("secret2".into()),
            _ => None,
        });
        let s = cfg.settings_for(&StoreUrl::parse("s3://b/deep/er").unwrap());
        assert_eq!(s.endpoint.as_deref(), Some("http://two"));
        let s = cfg.settings_for(&StoreUrl::parse("s3://b/other").unwrap());
        assert_eq!(s.endpoint.as_deref(), Some("http://one"));
        assert!(
            cfg.open(&StoreUrl::parse("s3://b/deep").unwrap(), false)
                .is_ok()
        );
        assert!(StoreConfig::from_toml("[[store]]\nurl = \"nope\"", "t.toml").is_err());
        assert!(
            StoreConfig::from_toml("[[store]]\nurl = \"s3://b\"\nsecret = \"x\"", "t.toml")
                .is_err()
        );
    }

    #[test]
    fn payload_setting_names_its_choices() {
        let cfg = StoreConfig::from_toml(
            "[[store]]\nurl = \"s3://b\"\npayload = \"crc64nvme\"",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.stores[0].payload, Some(Payload::Crc64nvme));
        let err =
            StoreConfig::from_toml("[[store]]\nurl = \"s3://b\"\npayload = \"crc32\"", "t.toml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("signed") && err.contains("crc64nvme"), "{err}");
    }
}
