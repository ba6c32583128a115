//! The object-store trait and its backends. A store is a flat key space under a prefix with a
//! handful of operations (put, get, head, list, delete, multipart upload, rename); behaviour
//! common to all backends (retries, throttling, dry-run) belongs in wrappers, not in backends.
//!
//! Stores are opened from a URL ([`open`]):
//!
//! | URL | backend | credentials |
//! |---|---|---|
//! | `file:///abs/dir` | `file` | none |
//! | `s3://bucket/prefix[?endpoint=..&region=..]` | `s3` | AWS standard chain (env, profile, IMDS, web identity) |
//! | `gs://bucket/prefix[?endpoint=..]` | `gcs` | Google ADC; anonymous for a plain-`http://` emulator endpoint |
//! | `az://account/container/prefix[?endpoint=..]` | `azure` | SAS, account key, or Entra ID from the environment |
//!
//! An `https://` endpoint behind a private CA is trusted once the operator names the CA
//! (`--store-ca-file`, [`trust_store_ca`]).
//!
//! Credentials never appear in a URL, an error or a log line. [`open`] wraps every backend in a
//! [`RetryingStore`], so transient failures (5xx, 429, timeouts, resets) are retried in one
//! place; backends disable their SDKs' own retries so attempts do not multiply.
mod azure;
mod batch;
mod file;
mod gcs;
mod retry;
mod s3;
mod tls;
mod url;

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

pub use self::retry::{RetryPolicy, RetryingStore};
pub use self::tls::{StoreCa, trust_store_ca};
pub use self::url::{StoreUrl, redact as redact_url};
use crate::layout::ObjectKey;

/// Failures of a store operation. Messages carry the provider's text, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The operator's store CA file (`--store-ca-file`) is missing or holds no certificate.
    #[error("store CA file {path}: {reason}")]
    BadCa { path: String, reason: String },
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// A permanent failure: retrying the same request cannot help (403, 404 of a container,
    /// 400 checksum mismatch, a bad request).
    #[error("{op} {key}: {message}")]
    Backend {
        op: &'static str,
        key: String,
        message: String,
    },
    /// A failure that the same request may not meet again: HTTP 5xx, 429, 408, a timeout, a
    /// refused or reset connection. [`RetryingStore`] retries these.
    #[error("{op} {key}: {message}")]
    Transient {
        op: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    /// Whether the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether retrying the operation may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            // A server certificate the client does not trust stays untrusted: a missing or
            // wrong --store-ca-file is reported at once, not after every retry.
            Self::Transient { message, .. } => !message.contains("invalid peer certificate"),
            Self::Io { source, .. } => io_is_transient(source),
            Self::NotFound { .. }
            | Self::BadUrl { .. }
            | Self::BadCa { .. }
            | Self::Backend { .. } => false,
        }
    }

    /// A failure of `op` on `key` for an HTTP `status`: transient for 408, 429 and 5xx.
    pub(crate) fn http(op: &'static str, key: &str, status: u16, message: String) -> Self {
        let key = key.to_string();
        if status_is_transient(status) {
            Self::Transient { op, key, message }
        } else {
            Self::Backend { op, key, message }
        }
    }
}

/// HTTP statuses worth retrying: request timeout, too many requests, server errors.
pub(crate) fn status_is_transient(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// `e` and its sources, each once, joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A failed `reqwest` call of `op` on `key`: transient when the connection, the request or the
/// body failed or timed out.
pub(crate) fn reqwest_err(
    op: &'static str,
    key: &str,
) -> impl FnOnce(reqwest::Error) -> StoreError {
    let key = key.to_string();
    move |e| {
        let message = error_chain(&e);
        if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
            StoreError::Transient { op, key, message }
        } else {
            StoreError::Backend { op, key, message }
        }
    }
}

/// The HTTP client of the calls a backend makes itself (GCS JSON API, Azure Blob Batch); it
/// trusts the operator's store CA as well as the built-in roots.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(300));
    tls::with_store_ca_012(b)?.build()
}

fn io_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::TimedOut
            | K::Interrupted
            | K::ConnectionReset
            | K::ConnectionRefused
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
    )
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Size (and, from listings, age) of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch, when the store says (listings).
    pub modified_ms: Option<i64>,
}

/// Bytes of an object as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = StoreResult<Bytes>> + Send>>;

/// The body of a [`Store::put_streamed`]: each call yields a fresh stream of the same bytes
/// from their start, so a failed attempt can be made again.
pub type BodySource = Arc<dyn Fn() -> ByteStream + Send + Sync>;

/// An object store keyed by [`ObjectKey`].
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// A description for logs and errors (URL without secrets).
    fn describe(&self) -> String;
    /// Preferred part size for [`Store::start_multipart`] uploads.
    fn part_size(&self) -> usize;
    /// Stores `data` under `key`, sending a checksum the server verifies where it can.
    async fn put(&self, key: &ObjectKey, data: Bytes) -> StoreResult<()>;
    /// Streams an object.
    async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream>;
    /// Size of an object, `None` when absent.
    async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>>;
    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>>;
    /// The objects directly in the folder `prefix` (ending in `/`): keys with no `/` after it.
    /// A store that lists one level by delimiter does so (S3: servers that keep objects as files
    /// then read that folder only); the default filters [`Store::list`].
    async fn list_folder(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let mut objects = self.list(prefix).await?;
        objects.retain(|o| {
            o.key
                .as_str()
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.contains('/'))
        });
        Ok(objects)
    }
    /// Deletes keys in the store's batch form; absent keys are not an error.
    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()>;
    /// Largest object [`Store::put_streamed`] sends in one request; 0 when this store has no
    /// streamed put (callers use [`Store::start_multipart`]).
    fn max_streamed_put(&self) -> u64 {
        0
    }
    /// Stores the `size` bytes `body` yields under `key` in one streamed request, with the
    /// CRC32C of all of them for the server to check: bytes that differ are refused and nothing
    /// is stored. One request, one server-side write: no part assembly.
    async fn put_streamed(
        &self,
        key: &ObjectKey,
        size: u64,
        crc32c: u32,
        body: BodySource,
    ) -> StoreResult<()> {
        let _ = (size, crc32c, body);
        Err(StoreError::Backend {
            op: "put_streamed",
            key: key.to_string(),
            message: format!("{} has no streamed put", self.describe()),
        })
    }
    /// Starts a multipart upload to `key`; parts may be sent in parallel.
    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>>;
    /// Moves an object to a new key (server-side where the store can).
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()>;
    /// Whether [`Store::rename`] moves an object without reading or writing its bytes (a
    /// rename within one filesystem). A writer whose key depends on the content (a blob keyed
    /// by its hash) can then write once to a staging key, hashing as it goes, and rename: one
    /// read of the source instead of two. Object stores copy on rename, so the default is no.
    fn renames_without_copy(&self) -> bool {
        false
    }
    /// Where the object `key` lives on this machine's filesystem, for a store that keeps its
    /// objects as local files: a reader can then copy it with `copy_file_range(2)` (one
    /// in-kernel copy, or a reflink where the filesystem shares extents) instead of streaming
    /// it through user memory. The path is built from a validated key under the store's root;
    /// the object may not exist. Other stores return `None`, the default.
    fn local_path(&self, _key: &ObjectKey) -> Option<std::path::PathBuf> {
        None
    }
    /// Checks the store is reachable, exists and accepts these credentials (put, head, delete
    /// of a small probe object).
    async fn check(&self) -> StoreResult<()> {
        let key = ObjectKey::from_listing(&format!("tmp/check-{}", uuid::Uuid::new_v4()))
            .ok_or_else(|| StoreError::Backend {
                op: "check",
                key: String::new(),
                message: "probe key".into(),
            })?;
        self.put(&key, Bytes::from_static(b"ringvault")).await?;
        let meta = self.head(&key).await?;
        self.delete_many(std::slice::from_ref(&key)).await?;
        match meta {
            Some(m) if m.size == 9 => Ok(()),
            other => Err(StoreError::Backend {
                op: "check",
                key: key.to_string(),
                message: format!("probe object read back as {other:?}"),
            }),
        }
    }
}

/// An upload in parts; part numbers start at 1 and every part but the last has the same size.
#[async_trait]
pub trait MultipartUpload: Send + Sync {
    /// Sends part `number`.
    async fn put_part(&self, number: u32, data: Bytes) -> StoreResult<()>;
    /// Assembles the object from every part sent.
    async fn complete(&self) -> StoreResult<()>;
    /// Drops the parts sent.
    async fn abort(&self) -> StoreResult<()>;
}

/// Opens the store a URL names, with the default [`RetryPolicy`].
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with_retry(url, RetryPolicy::default()).await
}

/// Opens the store a URL names, retrying transient failures as `policy` says.
pub async fn open_with_retry(url: &str, policy: RetryPolicy) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(RetryingStore::new(
        open_unwrapped(url).await?,
        policy,
    )))
}

/// Opens the bare backend a URL names, without retries (tests that count requests).
pub async fn open_unwrapped(url: &str) -> StoreResult<Arc<dyn Store>> {
    match StoreUrl::parse(url)? {
        StoreUrl::File { root } => Ok(Arc::new(file::FileStore::new(root)?)),
        StoreUrl::S3 {
            bucket,
            prefix,
            endpoint,
            region,
        } => Ok(Arc::new(
            s3::S3Store::new(bucket, prefix, endpoint, region).await?,
        )),
        StoreUrl::Gcs {
            bucket,
            prefix,
            endpoint,
        } => Ok(Arc::new(
            gcs::GcsStore::new(bucket, prefix, endpoint).await?,
        )),
        StoreUrl::Azure {
            account,
            container,
            prefix,
            endpoint,
        } => Ok(Arc::new(azure::AzureStore::new(
            account, container, prefix, endpoint,
        )?)),
    }
}

/// The largest document (manifest, lease, marker) any reader of the store accepts.
pub const DOCUMENT_LIMIT: usize = 1 << 30;

/// Reads one JSON document ringvault wrote (at most [`DOCUMENT_LIMIT`] bytes); every reader of
/// manifests, leases and markers, coordinator or worker, goes through here. A document that
/// does not parse is a permanent error naming its key.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &ObjectKey,
) -> StoreResult<T> {
    let bytes = get_bytes(store, key, DOCUMENT_LIMIT).await?;
    parse_json(key, &bytes)
}

/// Parses a document read from `key` (see [`get_json`]): for callers that parse elsewhere
/// than where they read, e.g. a large manifest on the blocking pool.
pub fn parse_json<T: serde::de::DeserializeOwned>(key: &ObjectKey, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend {
        op: "parse",
        key: key.to_string(),
        message: format!("not a valid ringvault document: {e}"),
    })
}

/// Reads a whole (small) object: manifests and schema, never SSTables.
pub async fn get_bytes(store: &dyn Store, key: &ObjectKey, limit: usize) -> StoreResult<Vec<u8>> {
    let mut stream = store.get(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(StoreError::Backend {
                op: "get",
                key: key.to_string(),
                message: format!("object larger than the {limit} bytes expected"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
