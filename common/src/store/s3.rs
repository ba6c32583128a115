//! `s3://` backend on aws-sdk-s3. Every put and every part carries a CRC32C computed here that
//! the server checks before it accepts the bytes, so a corrupted upload is refused, not found
//! at restore. Credentials come from the AWS standard chain; an `endpoint` parameter selects an
//! S3-compatible server (path-style addressing).
//!
//! A whole file of up to [`MAX_STREAMED_PUT`] goes up as one streamed `PutObject`
//! ([`Store::put_streamed`]) with the CRC32C of all its bytes: one request and one write on the
//! server, where a multipart upload costs a request per part and, on many servers, a second
//! pass that assembles the parts. A streamed body cannot be hashed before it is sent, so it
//! travels as `UNSIGNED-PAYLOAD` (the signed CRC32C header still binds the bytes).
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use bytes::Bytes;

use super::{BodySource, ByteStream, MultipartUpload, ObjectMeta, Store, StoreError, StoreResult};
use crate::hash::crc32c_base64;
use crate::layout::ObjectKey;

const PART_SIZE: usize = 8 << 20;
const MAX_COPY: u64 = 5 << 30;
/// S3's limit for one `PutObject`.
const MAX_STREAMED_PUT: u64 = 5 << 30;
const DELETE_BATCH: usize = 1000;

/// A body stream the SDK can share between threads: it is only ever polled through `&mut`,
/// so the mutex is never locked.
struct SyncStream(std::sync::Mutex<ByteStream>);

impl futures::Stream for SyncStream {
    type Item = StoreResult<Bytes>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.as_mut().poll_next(cx)
    }
}

/// A store in an S3 bucket (or an S3-compatible server).
#[derive(Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
}

fn backend<E: std::error::Error + 'static>(
    op: &'static str,
    key: &str,
) -> impl FnOnce(E) -> StoreError {
    let key = key.to_string();
    move |e| StoreError::Backend {
        op,
        key,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Errors of SDK calls: the service's code, message and HTTP status when the server answered,
/// the transport's error chain otherwise.
fn sdk<E>(op: &'static str, key: &str) -> impl FnOnce(SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let key = key.to_string();
    move |e| match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let message = format!(
                "{} (HTTP {status}): {}",
                se.err().code().unwrap_or("error"),
                se.err().message().unwrap_or("no message")
            );
            StoreError::http(op, &key, status, message)
        }
        // No usable answer: the connection failed, timed out or was cut, or the response was
        // unreadable (an empty 503, say). The same request may well succeed next time.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Transient {
                op,
                key,
                message: DisplayErrorContext(&e).to_string(),
            }
        }
        other => StoreError::Backend {
            op,
            key,
            message: DisplayErrorContext(other).to_string(),
        },
    }
}

impl S3Store {
    /// Builds a client from the AWS standard configuration chain plus the URL's overrides.
    pub async fn new(
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
    ) -> StoreResult<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            conf = conf.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(e) = &endpoint {
            conf = conf.endpoint_url(e).force_path_style(true);
        }
        // Retries belong to the store wrapper (`RetryingStore`), not to each SDK.
        conf = conf.retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(ca) = super::tls::store_ca() {
            conf = conf.http_client(https_client_trusting(ca.pem()).map_err(|e| {
                StoreError::BadCa {
                    path: ca.path().display().to_string(),
                    reason: format!("S3 HTTP client: {e}"),
                }
            })?);
        }
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            bucket,
            prefix,
            endpoint,
        })
    }

    fn full(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// Every object under `prefix`; with a delimiter, only those directly in that folder.
    async fn list_under(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> StoreResult<Vec<ObjectMeta>> {
        let full_prefix = format!("{}{}", self.prefix, prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .into_paginator()
            .send();

        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk("list", &full_prefix))?;
            for obj in page.contents() {
                let Some(k) = obj.key() else { continue };
                let Some(rel) = k.strip_prefix(&self.prefix) else {
                    continue;
                };
                if let Some(key) = ObjectKey::from_listing(rel) {
                    out.push(ObjectMeta {
                        key,
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        modified_ms: obj.last_modified().and_then(|t| t.to_millis().ok()),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The SDK's default HTTPS client (rustls with aws-lc, the system roots) plus the CAs in `pem`.
fn https_client_trusting(
    pem: &[u8],
) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, String> {
    use aws_smithy_http_client::tls;
    let trust = tls::TrustStore::default()
        .with_native_roots(true)
        .with_pem_certificate(pem.to_vec());
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("s3://{}/{} (endpoint {e})", self.bucket, self.prefix),
            None => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    fn part_size(&self) -> usize {
        PART_SIZE
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> StoreResult<()> {
        let full = self.full(key);
        let crc = crc32c_base64(&data);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .checksum_crc32_c(crc)
            .body(SdkStream::from(data))
            .send()
            .await
            .map_err(sdk("put", &full))?;
        Ok(())
    }

    fn max_streamed_put(&self) -> u64 {
        MAX_STREAMED_PUT
    }

    async fn put_streamed(
        &self,
        key: &ObjectKey,
        size: u64,
        crc32c: u32,
        body: BodySource,
    ) -> StoreResult<()> {
        use base64::Engine;
        use futures::TryStreamExt;
        let full = self.full(key);
        let length = i64::try_from(size).map_err(|_| StoreError::Backend {
            op: "put",
            key: full.clone(),
            message: format!("{size} bytes is too large for one request"),
        })?;
        let frames = SyncStream(std::sync::Mutex::new(body())).map_ok(http_body::Frame::data);
        let stream = SdkStream::from_body_1_x(http_body_util::StreamBody::new(frames));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_length(length)
            .checksum_crc32_c(
                base64::engine::general_purpose::STANDARD.encode(crc32c.to_be_bytes()),
            )
            .body(stream)
            .send()
            .await
            .map_err(sdk("put", &full))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream> {
        let full = self.full(key);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(404) =>
            {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(sdk("get", &full)(e)),
        };
        let body = out.body;
        let s = futures::stream::unfold((body, full), |(mut body, full)| async move {
            match body.try_next().await {
                Ok(Some(b)) => Some((Ok(b), (body, full))),
                Ok(None) => None,
                Err(e) => {
                    let err = StoreError::Transient {
                        op: "get",
                        key: full.clone(),
                        message: DisplayErrorContext(&e).to_string(),
                    };
                    Some((Err(err), (body, full)))
                }
            }
        });
        Ok(Box::pin(s))
    }

    async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>> {
        let full = self.full(key);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(o) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: o.content_length().unwrap_or(0).max(0) as u64,
                modified_ms: None,
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk("head", &full)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.list_under(prefix, None).await
    }

    async fn list_folder(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.list_under(prefix, Some("/")).await
    }

    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut ids = Vec::with_capacity(batch.len());
            for k in batch {
                ids.push(
                    ObjectIdentifier::builder()
                        .key(self.full(k))
                        .build()
                        .map_err(backend("delete", k.as_str()))?,
                );
            }
            let first = batch.first().map(|k| k.to_string()).unwrap_or_default();
            let del = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(backend("delete", &first))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(del)
                .send()
                .await
                .map_err(sdk("delete", &first))?;
            if let Some(err) = out.errors().first() {
                return Err(StoreError::Backend {
                    op: "delete",
                    key: err.key().unwrap_or_default().to_string(),
                    message: format!(
                        "{}: {}",
                        err.code().unwrap_or("?"),
                        err.message().unwrap_or("?")
                    ),
                });
            }
        }
        Ok(())
    }

    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>> {
        let full = self.full(key);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(sdk("put", &full))?;
        let upload_id = out.upload_id().unwrap_or_default().to_string();
        if upload_id.is_empty() {
            return Err(StoreError::Backend {
                op: "put",
                key: full,
                message: "no upload id returned".into(),
            });
        }
        Ok(Box::new(S3Multipart {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full,
            upload_id,
            parts: Mutex::new(Vec::new()),
        }))
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()> {
        let (src, dst) = (self.full(from), self.full(to));
        let size = self
            .head(from)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                key: from.to_string(),
            })?
            .size;
        let source = format!("{}/{}", self.bucket, src);
        if size <= MAX_COPY {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(&dst)
                .copy_source(&source)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .send()
                .await
                .map_err(sdk("copy", &dst))?;
        } else {
            self.copy_in_parts(&source, &dst, size).await?;
        }
        self.delete_many(std::slice::from_ref(from)).await
    }
}

impl S3Store {
    /// CopyObject stops at 5 GiB; larger objects are copied server-side part by part.
    async fn copy_in_parts(&self, source: &str, dst: &str, size: u64) -> StoreResult<()> {
        let part = 512u64 << 20;
        let up = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(dst)
            .send()
            .await
            .map_err(sdk("copy", dst))?;
        let upload_id = up.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut n = 1i32;
        while start < size {
            let end = (start + part).min(size) - 1;
            let r = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(dst)
                .upload_id(&upload_id)
                .part_number(n)
                .copy_source(source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(dst)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                    return Err(sdk("copy", dst)(e));
                }
            };
            let etag = r
                .copy_part_result()
                .and_then(|c| c.e_tag())
                .unwrap_or_default()
                .to_string();
            parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
            start = end + 1;
            n += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(dst)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk("copy", dst))?;
        Ok(())
    }
}

struct S3Multipart {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Mutex<Vec<CompletedPart>>,
}

#[async_trait]
impl MultipartUpload for S3Multipart {
    async fn put_part(&self, number: u32, data: Bytes) -> StoreResult<()> {
        let crc = crc32c_base64(&data);
        let n = i32::try_from(number).map_err(backend("put", &self.key))?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(n)
            .checksum_crc32_c(&crc)
            .body(SdkStream::from(data))
            .send()
            .await
            .map_err(sdk("put", &self.key))?;
        let part = CompletedPart::builder()
            .part_number(n)
            .e_tag(out.e_tag().unwrap_or_default())
            .checksum_crc32_c(out.checksum_crc32_c().unwrap_or(&crc))
            .build();
        self.parts
            .lock()
            .map_err(|_| StoreError::Backend {
                op: "put",
                key: self.key.clone(),
                message: "part list poisoned".into(),
            })?
            .push(part);
        Ok(())
    }

    async fn complete(&self) -> StoreResult<()> {
        let mut parts =
            std::mem::take(&mut *self.parts.lock().map_err(|_| StoreError::Backend {
                op: "put",
                key: self.key.clone(),
                message: "part list poisoned".into(),
            })?);
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk("put", &self.key))?;
        Ok(())
    }

    async fn abort(&self) -> StoreResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(sdk("abort", &self.key))?;
        Ok(())
    }
}
