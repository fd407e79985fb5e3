//! S3 through the AWS SDK, for what object_store cannot say.
//!
//! object_store names objects by [`Path`](object_store::path::Path), which
//! cannot hold every S3 key: not `a//b`, `c/./d`, `dir/` or `/lead`, not a
//! control character. Its listing fails on the first such key (one odd key
//! written by any client stopped every backup), and without
//! `encoding-type=url` an XML listing cannot even carry a control character.
//! So an S3 location lists through [`SdkS3::list`] (keys URL-encoded on the
//! wire, decoded here: every key exactly as stored), and reads, writes and
//! deletes the keys a `Path` cannot carry through the rest of this client.
//! Keys a `Path` carries keep going through object_store, whose path is the
//! measured one.
//!
//! The client is built from the same settings as the object_store client,
//! and asks object_store's own credential provider for credentials (keys,
//! profile, web identity, instance metadata alike), so both sign as the
//! same identity. Errors come back as `object_store::Error`s of the same
//! kinds (`NotFound`, `Precondition`, ...), so callers handle one set.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, retry::RetryConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, EncodingType};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::aws::AwsCredentialProvider;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// One listed object: its whole key in the bucket, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub modified: DateTime<Utc>,
}

/// Where and how the SDK client connects: what the object_store client
/// was built with.
pub(crate) struct SdkSettings {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub virtual_hosted: bool,
    /// PEM roots that replace the system's (AWS_CA_BUNDLE).
    pub ca_bundle: Option<Vec<u8>>,
    pub request_timeout: Duration,
    pub stall_timeout: Duration,
}

/// An S3 bucket through the AWS SDK.
#[derive(Clone)]
pub(crate) struct SdkS3 {
    client: Client,
    bucket: String,
}

impl fmt::Debug for SdkS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SdkS3({})", self.bucket)
    }
}

/// object_store's credential provider, lent to the SDK.
#[derive(Debug)]
struct Lent(AwsCredentialProvider);

impl ProvideCredentials for Lent {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let c = self
                .0
                .get_credential()
                .await
                .map_err(CredentialsError::provider_error)?;
            Ok(Credentials::new(
                c.key_id.clone(),
                c.secret_key.clone(),
                c.token.clone(),
                None,
                "haul (object_store's provider)",
            ))
        })
    }
}

impl SdkS3 {
    pub(crate) fn new(
        s: SdkSettings,
        credentials: AwsCredentialProvider,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(s.stall_timeout)
            .operation_attempt_timeout(s.request_timeout)
            .build();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new(s.region))
            .credentials_provider(Lent(credentials))
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(6))
            // S3-compatible servers (SeaweedFS, older MinIO, Ceph) refuse the
            // newer flexible checksums; send them only where S3 requires one.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &s.endpoint {
            b = b.endpoint_url(ep).force_path_style(!s.virtual_hosted);
        }
        if let Some(pem) = s.ca_bundle {
            use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
            let trust = TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(pem);
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(TlsContext::builder().with_trust_store(trust).build()?)
                .build_https();
            b = b.http_client(http);
        }
        Ok(Self {
            client: Client::from_conf(b.build()),
            bucket: s.bucket,
        })
    }

    /// Multipart uploads under `prefix` started before `before`, as (key,
    /// upload id): uploads a killed writer left, which S3 keeps (and bills)
    /// until they are aborted.
    pub(crate) async fn stale_uploads(
        &self,
        prefix: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, Failed> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| Failed::from_sdk(e, prefix))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id())
                    && time(u.initiated()) < before
                {
                    out.push((k.to_owned(), id.to_owned()));
                }
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// Aborts one multipart upload; one already gone is no error.
    pub(crate) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Failed> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = Failed::from_sdk(e, key);
                match f.error {
                    object_store::Error::NotFound { .. } => Ok(()),
                    _ => Err(f),
                }
            }
        }
    }

    /// The keys starting with `prefix`, after `start_after` when given, in
    /// the store's order, page by page.
    pub(crate) fn list(
        &self,
        prefix: String,
        start_after: Option<String>,
    ) -> BoxStream<'static, Result<RawObject, Failed>> {
        struct State {
            sdk: SdkS3,
            prefix: String,
            start_after: Option<String>,
            /// Keys up to this one are skipped: the listing started earlier.
            skip_to: Option<String>,
            token: Option<String>,
            done: bool,
        }
        // A server may echo `start-after` into its XML answer unescaped
        // (moto does), which no parser accepts when it holds a character
        // XML cannot carry: start before that character, skip up to the key.
        let (start_after, skip_to) = match start_after {
            Some(a) => match a.find(|c: char| c < ' ' && !matches!(c, '\t' | '\n' | '\r')) {
                Some(i) => (Some(a[..i].to_owned()), Some(a)),
                None => (Some(a), None),
            },
            None => (None, None),
        };
        let st = State {
            sdk: self.clone(),
            prefix,
            start_after,
            skip_to,
            token: None,
            done: false,
        };
        stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let page = st
                .sdk
                .client
                .list_objects_v2()
                .bucket(&st.sdk.bucket)
                .prefix(&st.prefix)
                .encoding_type(EncodingType::Url)
                .set_start_after(st.start_after.clone())
                .set_continuation_token(st.token.clone())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    st.done = true;
                    let e = Failed::from_sdk(e, &st.prefix);
                    return Some((stream::iter(vec![Err(e)]), st));
                }
            };
            let mut out = Vec::with_capacity(page.contents().len());
            for o in page.contents() {
                let raw = o.key().unwrap_or_default();
                let Some(key) = url_decoded(raw) else {
                    st.done = true;
                    out.push(Err(Failed::garbled(format!(
                        "the listing sent a key that does not decode ({raw:?})"
                    ))));
                    break;
                };
                if st
                    .skip_to
                    .as_ref()
                    .is_some_and(|to| key.as_bytes() <= to.as_bytes())
                {
                    continue;
                }
                out.push(Ok(RawObject {
                    key,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(str::to_owned),
                    modified: time(o.last_modified()),
                }));
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => st.token = Some(t.to_owned()),
                _ => st.done = true,
            }
            Some((stream::iter(out), st))
        })
        .flatten()
        .boxed()
    }

    /// Size, ETag and modification time of `key`.
    pub(crate) async fn head(&self, key: &str) -> object_store::Result<RawObject> {
        let h = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, key).error)?;
        Ok(RawObject {
            key: key.to_owned(),
            size: h.content_length().unwrap_or(0).max(0) as u64,
            etag: h.e_tag().map(str::to_owned),
            modified: time(h.last_modified()),
        })
    }

    /// `key`'s bytes (those in `range` when given), if its ETag is still
    /// `if_match` when given.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<String>,
    ) -> object_store::Result<Bytes> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1))))
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, key).error)?;
        let body = got.body.collect().await.map_err(|e| generic(key, e))?;
        Ok(body.into_bytes())
    }

    /// Writes `key` in one request.
    pub(crate) async fn put(&self, key: &str, body: PutPayload) -> object_store::Result<PutResult> {
        self.put_object(key, body, None).await
    }

    /// Writes `key` with an Object Lock retention (`mode` as S3 spells it)
    /// until `until`.
    pub(crate) async fn put_locked(
        &self,
        key: &str,
        body: PutPayload,
        mode: &str,
        until: DateTime<Utc>,
    ) -> object_store::Result<PutResult> {
        self.put_object(key, body, Some((mode, until))).await
    }

    /// One PUT, with an Object Lock retention when `lock` says so (and then
    /// a CRC32 checksum: S3 wants one with a retention).
    async fn put_object(
        &self,
        key: &str,
        body: PutPayload,
        lock: Option<(&str, DateTime<Utc>)>,
    ) -> object_store::Result<PutResult> {
        let bytes: Bytes = body.into();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes));
        if let Some((mode, until)) = lock {
            req = req
                .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::from(mode))
                .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                    until.timestamp(),
                ))
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
        }
        let put = req
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, key).error)?;
        Ok(PutResult {
            e_tag: put.e_tag().map(str::to_owned),
            version: put.version_id().map(str::to_owned),
            extensions: Default::default(),
        })
    }

    /// Does the bucket have Object Lock enabled?
    pub(crate) async fn lock_enabled(&self) -> object_store::Result<bool> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => Ok(o
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled")),
            Err(e) => {
                let f = Failed::from_sdk(e, &self.bucket);
                match f.error {
                    // "ObjectLockConfigurationNotFoundError" comes as a 404;
                    // some servers answer 400 or 501 when they have no Object Lock.
                    object_store::Error::NotFound { .. } => Ok(false),
                    object_store::Error::Generic { .. } if !f.transient => Ok(false),
                    e => Err(e),
                }
            }
        }
    }

    /// Deletes `key` (deleting a missing key succeeds, as in S3).
    pub(crate) async fn delete(&self, key: &str) -> object_store::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, key).error)?;
        Ok(())
    }

    /// Starts a multipart upload of `key`, as object_store's upload type so
    /// that [`crate::multipart::MultipartGuard`] owns it alike.
    pub(crate) async fn put_multipart(
        &self,
        key: &str,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, key).error)?;
        let upload_id = started
            .upload_id()
            .ok_or_else(|| generic(key, "the store started an upload without an upload id"))?
            .to_owned();
        Ok(Box::new(SdkUpload {
            sdk: self.clone(),
            key: key.to_owned(),
            upload_id,
            parts: Arc::new(Mutex::new(Vec::new())),
        }))
    }
}

/// A multipart upload through the SDK. Parts are numbered as they are
/// sent; their ETags fill in as they finish.
#[derive(Debug)]
struct SdkUpload {
    sdk: SdkS3,
    key: String,
    upload_id: String,
    parts: Arc<Mutex<Vec<Option<String>>>>,
}

#[async_trait::async_trait]
impl MultipartUpload for SdkUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = {
            let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            parts.push(None);
            parts.len() - 1
        };
        let (sdk, key, id, parts) = (
            self.sdk.clone(),
            self.key.clone(),
            self.upload_id.clone(),
            self.parts.clone(),
        );
        Box::pin(async move {
            let bytes: Bytes = data.into();
            let done = sdk
                .client
                .upload_part()
                .bucket(&sdk.bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(index as i32 + 1)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| Failed::from_sdk(e, &key).error)?;
            let etag = done
                .e_tag()
                .ok_or_else(|| generic(&key, "the store answered a part without an ETag"))?;
            parts.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(etag.to_owned());
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Vec<CompletedPart> = {
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::with_capacity(parts.len());
            for (i, etag) in parts.iter().enumerate() {
                let Some(etag) = etag else {
                    return Err(generic(
                        &self.key,
                        format!("part {} was never confirmed", i + 1),
                    ));
                };
                out.push(
                    CompletedPart::builder()
                        .part_number(i as i32 + 1)
                        .e_tag(etag)
                        .build(),
                );
            }
            out
        };
        let done = self
            .sdk
            .client
            .complete_multipart_upload()
            .bucket(&self.sdk.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, &self.key).error)?;
        Ok(PutResult {
            e_tag: done.e_tag().map(str::to_owned),
            version: done.version_id().map(str::to_owned),
            extensions: Default::default(),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.sdk
            .client
            .abort_multipart_upload()
            .bucket(&self.sdk.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| Failed::from_sdk(e, &self.key).error)?;
        Ok(())
    }
}

/// A failed request, and whether asking again may help: the store did not
/// answer, or its answer broke off (the SDK retried it already).
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: object_store::Error,
    pub transient: bool,
}

impl Failed {
    fn from_sdk<E>(e: SdkError<E, HttpResponse>, key: &str) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let transient = match status {
            None => true,
            Some(s) => s >= 500 || s == 429 || s < 300,
        };
        // Never the SDK's Debug output of the whole response (it holds the body).
        let text = match &e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                match (err.code(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_owned(),
                    _ => crate::error_chain(err),
                }
            }
            other => crate::error_chain(other),
        };
        let text = match status {
            Some(s) => format!("{text} (HTTP {s})"),
            None => text,
        };
        let source: Box<dyn std::error::Error + Send + Sync> = text.into();
        let path = key.to_owned();
        let error = match status {
            Some(404) => object_store::Error::NotFound { path, source },
            Some(412) => object_store::Error::Precondition { path, source },
            Some(304) => object_store::Error::NotModified { path, source },
            Some(403) => object_store::Error::PermissionDenied { path, source },
            Some(401) => object_store::Error::Unauthenticated { path, source },
            _ => object_store::Error::Generic {
                store: "S3",
                source,
            },
        };
        Self { error, transient }
    }

    fn garbled(reason: String) -> Self {
        Self {
            error: object_store::Error::Generic {
                store: "S3",
                source: reason.into(),
            },
            transient: false,
        }
    }
}

/// An S3 time as chrono's; the earliest time when the store sent none.
fn time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn generic(
    key: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> object_store::Error {
    let source = e.into();
    object_store::Error::Generic {
        store: "S3",
        source: format!("{key}: {source}").into(),
    }
}

/// A key as a listing with `encoding-type=url` sends it: `%XX` escapes and
/// `+` for a space (S3 escapes a `+` itself as `%2B`). `None` when the bytes
/// are not UTF-8 or an escape is broken.
fn url_decoded(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_decode_exactly() {
        for (wire, key) in [
            ("plain/key", "plain/key"),
            ("a%2F%2Fb", "a//b"),
            ("sp+ace%2Bplus", "sp ace+plus"),
            ("odd%01key", "odd\u{1}key"),
            ("%C3%A9t%C3%A9", "été"),
            ("pct%2541", "pct%41"),
        ] {
            assert_eq!(url_decoded(wire).as_deref(), Some(key), "{wire}");
        }
        for bad in ["%", "%4", "%zz", "%FF"] {
            assert_eq!(url_decoded(bad), None, "{bad}");
        }
    }
}
