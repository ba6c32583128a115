//! The object-store trait and its backends. A store is a flat key space under a prefix with a
//! handful of operations (put, get, head, list, delete, multipart upload, rename); behaviour
//! common to all backends (retries, throttling, dry-run) belongs in wrappers, not in backends.
//!
//! Stores are opened from a URL ([`open`]): `file:///abs/dir` or
//! `s3://bucket/prefix[?endpoint=http://host:port&region=r]`. Credentials never appear in a
//! URL: S3 takes them from the AWS standard chain (environment, profile, IMDS, web identity).
mod file;
mod s3;
mod url;

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

pub use self::url::{StoreUrl, redact as redact_url};
use crate::layout::ObjectKey;

/// Failures of a store operation. Messages carry the provider's text, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {key}: {message}")]
    Backend {
        op: &'static str,
        key: String,
        message: String,
    },
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Size of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
}

/// Bytes of an object as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = StoreResult<Bytes>> + Send>>;

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
    /// Deletes keys in the store's batch form; absent keys are not an error.
    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()>;
    /// Starts a multipart upload to `key`; parts may be sent in parallel.
    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>>;
    /// Moves an object to a new key (server-side where the store can).
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()>;
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

/// Opens the store a URL names.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
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
    }
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
