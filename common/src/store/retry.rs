//! Retries as a wrapper: [`RetryingStore`] wraps any [`Store`] and repeats an operation that
//! failed with a transient error ([`StoreError::is_transient`]: HTTP 5xx, 429, 408, timeouts,
//! refused or reset connections) with exponential backoff and full jitter, up to a number of
//! attempts. Permanent failures (403, 404, a refused checksum, a bad request) are returned at
//! once. Keeping this out of the backends gives every store the same behaviour, and the
//! backends turn their SDKs' own retries off so that attempts do not multiply.
//!
//! Only whole requests are retried: a [`Store::get`] is retried until its response starts;
//! an error in the middle of a body stream is the caller's to handle.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;

use super::{BodySource, ByteStream, MultipartUpload, ObjectMeta, Store, StoreError, StoreResult};
use crate::layout::ObjectKey;

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// Upper bound of the first backoff; it doubles after each failed attempt.
    pub base_delay: Duration,
    /// Upper bound of any single backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts, backoffs drawn from [0, 200 ms], [0, 400 ms], ... capped at 10 s: about
    /// half a minute of server trouble is ridden out.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based): uniform in [0, min(max, base·2^(retry-1))].
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .min(self.max_delay);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    async fn run<T, F, Fut>(&self, op: &str, what: &str, mut f: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut attempt = 1u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.max_attempts.max(1) => {
                    let pause = self.backoff(attempt);
                    tracing::warn!(
                        op,
                        object = what,
                        attempt,
                        pause_ms = pause.as_millis() as u64,
                        error = %e,
                        "transient store error; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A store whose operations are retried on transient failures.
#[derive(Debug)]
pub struct RetryingStore {
    inner: Arc<dyn Store>,
    policy: RetryPolicy,
}

impl RetryingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

#[async_trait]
impl Store for RetryingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn part_size(&self) -> usize {
        self.inner.part_size()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> StoreResult<()> {
        self.policy
            .run("put", key.as_str(), || self.inner.put(key, data.clone()))
            .await
    }

    fn max_streamed_put(&self) -> u64 {
        self.inner.max_streamed_put()
    }

    fn renames_without_copy(&self) -> bool {
        self.inner.renames_without_copy()
    }

    /// Forwarded: a local copy is one system call on a local filesystem, not retried here.
    fn local_path(&self, key: &ObjectKey) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }

    async fn put_streamed(
        &self,
        key: &ObjectKey,
        size: u64,
        crc32c: u32,
        body: BodySource,
    ) -> StoreResult<()> {
        self.policy
            .run("put", key.as_str(), || {
                self.inner
                    .put_streamed(key, size, crc32c, Arc::clone(&body))
            })
            .await
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream> {
        self.policy
            .run("get", key.as_str(), || self.inner.get(key))
            .await
    }

    async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>> {
        self.policy
            .run("head", key.as_str(), || self.inner.head(key))
            .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.policy
            .run("list", prefix, || self.inner.list(prefix))
            .await
    }

    async fn list_folder(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.policy
            .run("list", prefix, || self.inner.list_folder(prefix))
            .await
    }

    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()> {
        let first = keys.first().map(|k| k.to_string()).unwrap_or_default();
        self.policy
            .run("delete", &first, || self.inner.delete_many(keys))
            .await
    }

    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>> {
        let upload = self
            .policy
            .run("put", key.as_str(), || self.inner.start_multipart(key))
            .await?;
        Ok(Box::new(RetryingMultipart {
            inner: upload,
            policy: self.policy,
            key: key.clone(),
        }))
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()> {
        self.policy
            .run("rename", from.as_str(), || async {
                match self.inner.rename(from, to).await {
                    // A retried rename whose first attempt did move the object.
                    Err(StoreError::NotFound { .. }) if self.inner.head(to).await?.is_some() => {
                        Ok(())
                    }
                    other => other,
                }
            })
            .await
    }
}

struct RetryingMultipart {
    inner: Box<dyn MultipartUpload>,
    policy: RetryPolicy,
    key: ObjectKey,
}

#[async_trait]
impl MultipartUpload for RetryingMultipart {
    async fn put_part(&self, number: u32, data: Bytes) -> StoreResult<()> {
        self.policy
            .run("put part", self.key.as_str(), || {
                self.inner.put_part(number, data.clone())
            })
            .await
    }

    async fn complete(&self) -> StoreResult<()> {
        self.policy
            .run("complete", self.key.as_str(), || self.inner.complete())
            .await
    }

    async fn abort(&self) -> StoreResult<()> {
        self.policy
            .run("abort", self.key.as_str(), || self.inner.abort())
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A store whose `head` fails with the given errors first, then answers.
    #[derive(Debug)]
    struct Flaky {
        errors: Mutex<Vec<StoreError>>,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Store for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn part_size(&self) -> usize {
            1
        }
        async fn put(&self, _: &ObjectKey, _: Bytes) -> StoreResult<()> {
            Ok(())
        }
        async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream> {
            Err(StoreError::NotFound {
                key: key.to_string(),
            })
        }
        async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self
                .errors
                .lock()
                .map_err(|_| StoreError::Backend {
                    op: "head",
                    key: String::new(),
                    message: "poisoned".into(),
                })?
                .pop();
            match next {
                Some(e) => Err(e),
                None => Ok(Some(ObjectMeta {
                    key: key.clone(),
                    size: 1,
                    modified_ms: None,
                })),
            }
        }
        async fn list(&self, _: &str) -> StoreResult<Vec<ObjectMeta>> {
            Ok(Vec::new())
        }
        async fn delete_many(&self, _: &[ObjectKey]) -> StoreResult<()> {
            Ok(())
        }
        async fn start_multipart(&self, _: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>> {
            Err(StoreError::Backend {
                op: "put",
                key: String::new(),
                message: "unsupported".into(),
            })
        }
        async fn rename(&self, _: &ObjectKey, _: &ObjectKey) -> StoreResult<()> {
            Ok(())
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::from_listing("a/b").expect("valid key")
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let inner = Arc::new(Flaky {
            errors: Mutex::new(vec![
                StoreError::http("head", "a/b", 429, "slow down".into()),
                StoreError::http("head", "a/b", 503, "unavailable".into()),
            ]),
            calls: AtomicU32::new(0),
        });
        let store = RetryingStore::new(inner.clone(), fast());
        let got = store.head(&key()).await.expect("third attempt succeeds");
        assert_eq!(got.map(|m| m.size), Some(1));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried_and_attempts_are_bounded() {
        for status in [400u16, 403, 404] {
            let inner = Arc::new(Flaky {
                errors: Mutex::new(vec![StoreError::http("head", "a/b", status, "no".into())]),
                calls: AtomicU32::new(0),
            });
            let store = RetryingStore::new(inner.clone(), fast());
            let err = store.head(&key()).await.expect_err("permanent");
            assert!(!err.is_transient(), "{status}");
            assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "{status}");
        }
        let inner = Arc::new(Flaky {
            errors: Mutex::new(
                (0..10)
                    .map(|_| StoreError::http("head", "a/b", 500, "down".into()))
                    .collect(),
            ),
            calls: AtomicU32::new(0),
        });
        let store = RetryingStore::new(inner.clone(), fast());
        assert!(store.head(&key()).await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy::default();
        for retry in 1..30 {
            let d = p.backoff(retry);
            assert!(d <= p.max_delay, "{d:?}");
            assert!(d <= p.base_delay * 2u32.pow(retry.min(20) - 1), "{d:?}");
        }
    }
}
