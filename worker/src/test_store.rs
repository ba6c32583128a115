//! A store wrapper for the worker's tests: passes every call to a real store, and changes
//! only what it is told to (whether a rename copies, whether objects have local paths), so a
//! test can drive the object-store code paths against a file store it can inspect.
use std::sync::Arc;

use bytes::Bytes;
use ringvault_common::layout;
use ringvault_common::store::{Store, StoreResult};

/// A store that passes every call to a file store, says whether its rename copies and
/// whether it shows its objects' local paths as told, and records the keys multipart
/// uploads, renames and deletes went to.
#[derive(Debug)]
pub struct Recording {
    inner: Arc<dyn Store>,
    free_rename: bool,
    local: bool,
    /// Offers a streamed put (as S3 does), collected and checked here, then put whole.
    streamed: bool,
    calls: std::sync::Mutex<Vec<String>>,
    /// A file whose pages in the page cache are counted at each multipart start, and the counts.
    watched: std::sync::Mutex<(Option<std::path::PathBuf>, Vec<usize>)>,
}

impl Recording {
    /// Wraps `inner`; `local: false` hides its local paths, as an object store has none.
    pub fn new(inner: Arc<dyn Store>, free_rename: bool, local: bool) -> Self {
        Self {
            inner,
            free_rename,
            local,
            streamed: false,
            calls: std::sync::Mutex::new(Vec::new()),
            watched: std::sync::Mutex::new((None, Vec::new())),
        }
    }

    /// The same store with a streamed put, as S3 has: the body is collected, its size and
    /// CRC32C checked, and put whole.
    pub fn with_streamed_put(mut self) -> Self {
        self.streamed = true;
        self
    }

    fn count_watched_pages(&self) {
        if let Ok(mut w) = self.watched.lock()
            && let Some(path) = w.0.clone()
        {
            let n = std::fs::File::open(&path)
                .and_then(|f| {
                    let len = f.metadata()?.len();
                    Ok(crate::page_cache::Residency::of(&f, 0, len).resident_pages())
                })
                .unwrap_or(usize::MAX);
            w.1.push(n);
        }
    }

    /// From now on, counts the pages of `path` in the page cache whenever a multipart upload or
    /// a streamed put starts (the moment a second read of it would begin).
    pub fn watch_pages(&self, path: &std::path::Path) {
        if let Ok(mut w) = self.watched.lock() {
            w.0 = Some(path.to_path_buf());
        }
    }

    /// The counts [`Self::watch_pages`] took, in order.
    pub fn resident_at_send(&self) -> Vec<usize> {
        self.watched.lock().map(|w| w.1.clone()).unwrap_or_default()
    }

    fn record(&self, call: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }

    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Store for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn part_size(&self) -> usize {
        self.inner.part_size()
    }
    async fn put(&self, key: &layout::ObjectKey, data: Bytes) -> StoreResult<()> {
        self.inner.put(key, data).await
    }
    async fn get(
        &self,
        key: &layout::ObjectKey,
    ) -> StoreResult<ringvault_common::store::ByteStream> {
        self.inner.get(key).await
    }
    async fn head(
        &self,
        key: &layout::ObjectKey,
    ) -> StoreResult<Option<ringvault_common::store::ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ringvault_common::store::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete_many(&self, keys: &[layout::ObjectKey]) -> StoreResult<()> {
        for k in keys {
            self.record(format!("delete {k}"));
        }
        self.inner.delete_many(keys).await
    }
    async fn start_multipart(
        &self,
        key: &layout::ObjectKey,
    ) -> StoreResult<Box<dyn ringvault_common::store::MultipartUpload>> {
        self.record(format!("multipart {key}"));
        self.count_watched_pages();
        self.inner.start_multipart(key).await
    }
    async fn rename(&self, from: &layout::ObjectKey, to: &layout::ObjectKey) -> StoreResult<()> {
        self.record(format!("rename {from} {to}"));
        self.inner.rename(from, to).await
    }
    fn max_streamed_put(&self) -> u64 {
        if self.streamed { u64::MAX } else { 0 }
    }
    async fn put_streamed(
        &self,
        key: &layout::ObjectKey,
        size: u64,
        crc32c: u32,
        body: ringvault_common::store::BodySource,
    ) -> StoreResult<()> {
        use futures::StreamExt;
        if !self.streamed {
            return self.inner.put_streamed(key, size, crc32c, body).await;
        }
        self.record(format!("streamed {key}"));
        self.count_watched_pages();
        let mut stream = body();
        let mut all = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk?);
        }
        let mut crc = ringvault_common::hash::Crc32c::default();
        crc.update(&all);
        if all.len() as u64 != size || crc.finish() != crc32c {
            return Err(ringvault_common::store::StoreError::Backend {
                op: "put_streamed",
                key: key.to_string(),
                message: format!(
                    "{} bytes or their CRC32C are not what was announced",
                    all.len()
                ),
            });
        }
        self.inner.put(key, all.freeze()).await
    }
    fn renames_without_copy(&self) -> bool {
        self.free_rename
    }
    fn local_path(&self, key: &layout::ObjectKey) -> Option<std::path::PathBuf> {
        if self.local {
            self.inner.local_path(key)
        } else {
            None
        }
    }
}
