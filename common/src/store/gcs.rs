//! `gs://bucket/prefix[?endpoint=...]` backend: Google Cloud Storage (or fake-gcs-server).
//!
//! **Two routes, one set of credentials.** Object bytes go through `google-cloud-storage`'s
//! `Storage` client (JSON/HTTP uploads and downloads): every upload names its CRC32C, which
//! GCS checks before it stores the object, and the client compares the CRC32C the service
//! reports with it (so a server that does not check, like fake-gcs-server, still cannot make a
//! corrupted upload pass: the object is deleted and the put fails). Reads are validated by the
//! client too. Everything else (metadata, list, delete, compose, rewrite) uses the GCS JSON API
//! over `reqwest` with the same credentials' headers. The SDK's `StorageControl` would be the
//! obvious choice, but it is gRPC-only (`google.storage.v2`), which no emulator speaks
//! (fake-gcs-server's gRPC is the retired v1 API), so the backend could not be tested against
//! anything but real GCS. The JSON API is GCS's documented, stable REST surface, spoken
//! identically by GCS and fake-gcs-server, and needs no extra client crate.
//!
//! **Credentials.** Google's Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`
//! (service-account or external-account file), gcloud's user credentials, workload identity /
//! the metadata server. The one exception: an `endpoint` on plain `http://` is an emulator
//! (Google never serves storage over plain HTTP, and a bearer token must never cross the wire
//! in clear), so requests to it are anonymous; so are requests to an `https://` endpoint that
//! `STORAGE_EMULATOR_HOST` names exactly (the variable Google's client libraries read), e.g.
//! fake-gcs-server over TLS.
//!
//! **Private CA.** The operator's store CA (`--store-ca-file`) is trusted by the JSON API
//! calls. The SDK's uploads and downloads build their own HTTP client, which trusts the system
//! roots or, when set, the bundle `SSL_CERT_FILE` names: a GCS-compatible server behind a
//! private CA also needs `SSL_CERT_FILE` pointing at a bundle that holds that CA.
//!
//! **Multipart.** Each part is a single-shot upload (never resumable, whose session URLs
//! fake-gcs-server builds without the port) of a temporary object
//! `<key>.rv-parts-<upload id>/<number>` (for a key under `tmp/`; for any other key
//! `tmp/parts/<uuid>.rv-parts-<upload id>/<number>`, see `layout::multipart_parts`) carrying its CRC32C; parts may arrive in any order and
//! in parallel. `complete` composes them in order (at most 32 sources per compose call, nested
//! for more), checks that the composed object's CRC32C is the combination of the parts' ones,
//! and deletes the temporary objects; `abort` deletes them. `rename` is a server-side rewrite
//! plus a delete. Memory stays bounded by the parts in flight.
use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_storage::client::Storage;
use serde_json::{Value, json};

use super::{
    ByteStream, MultipartUpload, ObjectMeta, Store, StoreError, StoreResult, batch, error_chain,
    reqwest_err,
};
use crate::layout::ObjectKey;

const PART_SIZE: usize = 8 << 20;
/// Single-shot uploads up to this size (parts and puts stay far below it).
const SINGLE_SHOT_MAX: usize = 64 << 20;
/// GCS composes at most 32 sources per call.
const COMPOSE_MAX: usize = 32;
/// Calls per JSON batch request (the endpoint's limit).
const BATCH_MAX: usize = 100;
const LIST_PAGE: &str = "1000";
/// The fields a list page is asked for: every field [`parse_list_page`] reads, no more. GCS
/// returns only what `fields` names, so a field read here but missing there is always absent.
const LIST_FIELDS: &str = "items(name,size,updated),nextPageToken";
const GOOGLE_API: &str = "https://storage.googleapis.com";

/// A store in a GCS bucket.
pub struct GcsStore {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    storage: Storage,
    http: reqwest::Client,
    /// `None`: anonymous (emulator).
    credentials: Option<Credentials>,
    api: String,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn gcs_err(op: &'static str, key: &str) -> impl FnOnce(google_cloud_storage::Error) -> StoreError {
    let key = key.to_string();
    move |e| {
        let message = error_chain(&e);
        match e.http_status_code() {
            Some(status) => StoreError::http(op, &key, status, format!("HTTP {status}: {message}")),
            None if e.is_timeout() || e.is_io() || e.is_transport() || e.is_connect() => {
                StoreError::Transient { op, key, message }
            }
            None => StoreError::Backend { op, key, message },
        }
    }
}

/// The checksum mismatch the client reports when the service stored other bytes than it sent.
fn mismatch_generation(e: &google_cloud_storage::Error) -> Option<i64> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(google_cloud_storage::error::WriteError::ChecksumMismatch { object, .. }) =
            c.downcast_ref::<google_cloud_storage::error::WriteError>()
        {
            return Some(object.generation);
        }
        cur = c.source();
    }
    None
}

fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

fn crc32c_combine(a: u32, b: u32, b_len: u64) -> u32 {
    crc_fast::checksum_combine(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        u64::from(a),
        u64::from(b),
        b_len,
    ) as u32
}

/// The JSON API's `crc32c` field: base64 of the big-endian bytes.
fn parse_crc32c(v: &Value) -> Option<u32> {
    let b = B64.decode(v["crc32c"].as_str()?).ok()?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// The object's last update (RFC 3339 `updated`), in milliseconds since the epoch.
fn parse_updated(v: &Value) -> Option<i64> {
    v["updated"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

/// One page of an objects.list answer: the objects under `prefix` (keys relative to it) and
/// the next page's token.
fn parse_list_page(page: &Value, prefix: &str) -> (Vec<ObjectMeta>, Option<String>) {
    let mut out = Vec::new();
    for item in page["items"].as_array().into_iter().flatten() {
        let Some(name) = item["name"].as_str() else {
            continue;
        };
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if let Some(key) = ObjectKey::from_listing(rel) {
            out.push(ObjectMeta {
                key,
                size: parse_size(item).unwrap_or(0),
                modified_ms: parse_updated(item),
            });
        }
    }
    let next = page["nextPageToken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    (out, next)
}

/// The JSON API encodes int64 as a string.
fn parse_size(v: &Value) -> Option<u64> {
    match &v["size"] {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Whether the operator declared `endpoint` an emulator: `STORAGE_EMULATOR_HOST` (the variable
/// Google's client libraries read) names exactly this URL.
fn declared_emulator(endpoint: &str) -> bool {
    std::env::var("STORAGE_EMULATOR_HOST").is_ok_and(|h| {
        let h = h.trim().trim_end_matches('/');
        !h.is_empty() && h == endpoint.trim_end_matches('/')
    })
}

impl GcsStore {
    /// Connects to `bucket` (at `endpoint` when given) with the credentials the module doc names.
    pub async fn new(
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
    ) -> StoreResult<Self> {
        let bad = |message: String| StoreError::Backend {
            op: "open",
            key: format!("gs://{bucket}/{prefix}"),
            message,
        };
        let emulator = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://") || declared_emulator(e));
        let credentials = if emulator {
            None
        } else {
            Some(
                google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| bad(format!("Google credentials: {}", error_chain(&e))))?,
            )
        };
        let mut builder = Storage::builder()
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
            .with_resumable_upload_threshold(SINGLE_SHOT_MAX);
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e);
        }
        builder = match &credentials {
            Some(c) => builder.with_credentials(c.clone()),
            None => builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            ),
        };
        let storage = builder
            .build()
            .await
            .map_err(|e| bad(format!("GCS client: {}", error_chain(&e))))?;
        let http = super::http_client().map_err(|e| bad(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                storage,
                http,
                credentials,
                api: endpoint.clone().unwrap_or_else(|| GOOGLE_API.to_string()),
                bucket,
                prefix,
                endpoint,
            }),
        })
    }
}

impl Inner {
    fn full(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    /// `{api}/storage/v1/b/{bucket}/o[/{object}][/{tail...}]`, each segment percent-encoded.
    fn url(&self, object: Option<&str>, tail: &[&str]) -> StoreResult<reqwest::Url> {
        let b: &str = &self.bucket;
        let base = ["storage", "v1", "b", b, "o"];
        self.api_url(base.into_iter().chain(object).chain(tail.iter().copied()))
    }

    /// `{api}/{segments...}`, each segment percent-encoded.
    fn api_url<'a>(&self, segments: impl Iterator<Item = &'a str>) -> StoreResult<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.api).map_err(|e| StoreError::Backend {
            op: "open",
            key: String::new(),
            message: format!("endpoint: {e}"),
        })?;
        url.path_segments_mut()
            .map_err(|()| StoreError::Backend {
                op: "open",
                key: String::new(),
                message: "endpoint cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A JSON API request with the credentials' headers.
    async fn request(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        op: &'static str,
        key: &str,
    ) -> StoreResult<reqwest::RequestBuilder> {
        let mut req = self.http.request(method, url);
        if let Some(c) = &self.credentials {
            let headers =
                c.headers(http::Extensions::new())
                    .await
                    .map_err(|e| StoreError::Backend {
                        op,
                        key: key.to_string(),
                        message: format!("Google credentials: {}", error_chain(&e)),
                    })?;
            match headers {
                CacheableResource::New { data, .. } => req = req.headers(data),
                CacheableResource::NotModified => {
                    return Err(StoreError::Backend {
                        op,
                        key: key.to_string(),
                        message: "Google credentials returned no headers".into(),
                    });
                }
            }
        }
        Ok(req)
    }

    /// Sends a JSON API request; `Ok(None)` for 404, the parsed body otherwise.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        op: &'static str,
        key: &str,
    ) -> StoreResult<Option<Value>> {
        let resp = req.send().await.map_err(reqwest_err(op, key))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        let text = resp.text().await.map_err(reqwest_err(op, key))?;
        if !(200..300).contains(&status) {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(StoreError::http(
                op,
                key,
                status,
                format!("HTTP {status}: {detail}"),
            ));
        }
        if text.trim().is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Backend {
                op,
                key: key.to_string(),
                message: format!("unreadable JSON answer: {e}"),
            })
    }

    async fn metadata(&self, name: &str) -> StoreResult<Option<Value>> {
        let mut url = self.url(Some(name), &[])?;
        url.query_pairs_mut()
            .append_pair("fields", "name,size,crc32c,generation,updated");
        let req = self
            .request(reqwest::Method::GET, url, "head", name)
            .await?;
        self.send(req, "head", name).await
    }

    /// Uploads `data` as object `name` with its CRC32C. A corrupted upload that the server
    /// stored anyway (an emulator) is deleted and reported as refused.
    async fn upload(&self, op: &'static str, name: &str, data: Bytes) -> StoreResult<u32> {
        let crc = crc32c(&data);
        let res = self
            .storage
            .write_object(self.bucket_path(), name, data)
            .with_resumable_upload_threshold(SINGLE_SHOT_MAX)
            .with_known_crc32c(crc)
            .send_unbuffered()
            .await;
        match res {
            Ok(_) => Ok(crc),
            Err(e) => {
                if let Some(generation) = mismatch_generation(&e) {
                    let _ = self.delete_one(name, Some(generation)).await;
                    return Err(StoreError::Backend {
                        op,
                        key: name.to_string(),
                        message: format!(
                            "the stored bytes do not match the CRC32C sent (refused and \
                             removed): {}",
                            error_chain(&e)
                        ),
                    });
                }
                Err(gcs_err(op, name)(e))
            }
        }
    }

    async fn delete_one(&self, name: &str, generation: Option<i64>) -> StoreResult<()> {
        let mut url = self.url(Some(name), &[])?;
        if let Some(g) = generation {
            url.query_pairs_mut()
                .append_pair("ifGenerationMatch", &g.to_string());
        }
        let req = self
            .request(reqwest::Method::DELETE, url, "delete", name)
            .await?;
        self.send(req, "delete", name).await.map(|_| ())
    }

    /// Deletes `names` through the JSON batch endpoint, [`BATCH_MAX`] per request, a few
    /// requests at once; an object already gone counts as deleted.
    async fn delete_names(&self, names: Vec<String>) -> StoreResult<()> {
        if let [only] = names.as_slice() {
            return self.delete_one(only, None).await;
        }
        batch::in_batches(names, BATCH_MAX, |chunk| async move {
            self.delete_batch(&chunk).await
        })
        .await
    }

    async fn delete_batch(&self, names: &[String]) -> StoreResult<()> {
        let Some(first) = names.first() else {
            return Ok(());
        };
        let parts = names
            .iter()
            .map(|n| {
                Ok(batch::SubRequest {
                    method: "DELETE",
                    target: self.url(Some(n), &[])?.path().to_string(),
                    headers: Vec::new(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let url = self.api_url(["batch", "storage", "v1"].into_iter())?;
        let req = self
            .request(reqwest::Method::POST, url, "delete", first)
            .await?;
        let body = batch::encode(&parts, batch::ContentIds::Angle);
        let answers = batch::send(req, body, first).await?;
        batch::check_deletes(names, &answers)
    }

    /// Composes `sources` (in order) into `dest`; returns the new object's CRC32C.
    async fn compose(&self, sources: &[String], dest: &str) -> StoreResult<Option<u32>> {
        let url = self.url(Some(dest), &["compose"])?;
        let body = json!({
            "sourceObjects": sources.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
            "destination": {"contentType": "application/octet-stream"},
        });
        let req = self
            .request(reqwest::Method::POST, url, "compose", dest)
            .await?
            .json(&body);
        match self.send(req, "compose", dest).await? {
            Some(v) => Ok(parse_crc32c(&v)),
            None => Err(StoreError::Backend {
                op: "compose",
                key: dest.to_string(),
                message: "a part to compose is missing (HTTP 404)".into(),
            }),
        }
    }
}

#[async_trait]
impl Store for GcsStore {
    fn describe(&self) -> String {
        let i = &self.inner;
        match &i.endpoint {
            Some(e) => format!("gs://{}/{} (endpoint {e})", i.bucket, i.prefix),
            None => format!("gs://{}/{}", i.bucket, i.prefix),
        }
    }

    fn part_size(&self) -> usize {
        PART_SIZE
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> StoreResult<()> {
        let full = self.inner.full(key);
        self.inner.upload("put", &full, data).await.map(|_| ())
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream> {
        let full = self.inner.full(key);
        let resp = match self
            .inner
            .storage
            .read_object(self.inner.bucket_path(), &full)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.http_status_code() == Some(404) => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(gcs_err("get", &full)(e)),
        };
        let s = futures::stream::unfold((resp, full), |(mut resp, full)| async move {
            match resp.next().await? {
                Ok(b) => Some((Ok(b), (resp, full))),
                Err(e) => {
                    let err = gcs_err("get", &full)(e);
                    Some((Err(err), (resp, full)))
                }
            }
        });
        Ok(Box::pin(s))
    }

    async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>> {
        let full = self.inner.full(key);
        Ok(self.inner.metadata(&full).await?.map(|v| ObjectMeta {
            key: key.clone(),
            size: parse_size(&v).unwrap_or(0),
            modified_ms: parse_updated(&v),
        }))
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let i = &self.inner;
        let full_prefix = format!("{}{}", i.prefix, prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = i.url(None, &[])?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("prefix", &full_prefix)
                    .append_pair("maxResults", LIST_PAGE)
                    .append_pair("fields", LIST_FIELDS);
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            let req = i
                .request(reqwest::Method::GET, url, "list", &full_prefix)
                .await?;
            let Some(page) = i.send(req, "list", &full_prefix).await? else {
                return Err(StoreError::Backend {
                    op: "list",
                    key: full_prefix,
                    message: format!("bucket {} not found (HTTP 404)", i.bucket),
                });
            };
            let (items, next) = parse_list_page(&page, &i.prefix);
            out.extend(items);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Batched deletes (the JSON batch endpoint, 100 calls per request).
    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()> {
        let names = keys.iter().map(|k| self.inner.full(k)).collect();
        self.inner.delete_names(names).await
    }

    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>> {
        let dest = self.inner.full(key);
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Next to a staging key (purge knows its shape), or else under tmp/parts/.
        let parts_prefix = if key.as_str().starts_with(crate::layout::TMP_PREFIX) {
            format!("{dest}.rv-parts-{}/", &id[..12])
        } else {
            let parts = crate::layout::multipart_parts(&uuid::Uuid::new_v4(), &id[..12]);
            format!("{}/", self.inner.full(&parts))
        };
        Ok(Box::new(GcsMultipart {
            inner: std::sync::Arc::clone(&self.inner),
            parts_prefix,
            dest,
            parts: Mutex::new(BTreeMap::new()),
        }))
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()> {
        let i = &self.inner;
        let (src, dst) = (i.full(from), i.full(to));
        let mut token: Option<String> = None;
        loop {
            let mut url = i.url(Some(&src), &["rewriteTo", "b", &i.bucket, "o", &dst])?;
            if let Some(t) = &token {
                url.query_pairs_mut().append_pair("rewriteToken", t);
            }
            let req = i
                .request(reqwest::Method::POST, url, "rename", &src)
                .await?
                .json(&json!({}));
            let Some(v) = i.send(req, "rename", &src).await? else {
                return Err(StoreError::NotFound {
                    key: from.to_string(),
                });
            };
            if v["done"].as_bool().unwrap_or(true) {
                break;
            }
            match v["rewriteToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => {
                    return Err(StoreError::Backend {
                        op: "rename",
                        key: src,
                        message: "rewrite not done and no rewrite token".into(),
                    });
                }
            }
        }
        i.delete_one(&src, None).await
    }
}

struct GcsMultipart {
    inner: std::sync::Arc<Inner>,
    dest: String,
    parts_prefix: String,
    /// number → (CRC32C, length)
    parts: Mutex<BTreeMap<u32, (u32, u64)>>,
}

impl GcsMultipart {
    fn part_name(&self, number: u32) -> String {
        format!("{}{number:06}", self.parts_prefix)
    }

    fn poisoned(&self) -> StoreError {
        StoreError::Backend {
            op: "put",
            key: self.dest.clone(),
            message: "part list poisoned".into(),
        }
    }

    async fn cleanup(&self, extra: Vec<String>) -> StoreResult<()> {
        let mut names: Vec<String> = self
            .parts
            .lock()
            .map_err(|_| self.poisoned())?
            .keys()
            .map(|n| self.part_name(*n))
            .collect();
        names.extend(extra);
        self.inner.delete_names(names).await
    }
}

#[async_trait]
impl MultipartUpload for GcsMultipart {
    async fn put_part(&self, number: u32, data: Bytes) -> StoreResult<()> {
        let len = data.len() as u64;
        let crc = self
            .inner
            .upload("put", &self.part_name(number), data)
            .await?;
        self.parts
            .lock()
            .map_err(|_| self.poisoned())?
            .insert(number, (crc, len));
        Ok(())
    }

    async fn complete(&self) -> StoreResult<()> {
        let parts: Vec<(u32, (u32, u64))> = self
            .parts
            .lock()
            .map_err(|_| self.poisoned())?
            .iter()
            .map(|(n, v)| (*n, *v))
            .collect();
        if parts.is_empty() {
            self.inner.upload("put", &self.dest, Bytes::new()).await?;
            return Ok(());
        }
        if let Some((i, (n, _))) = parts
            .iter()
            .enumerate()
            .find(|(i, (n, _))| *n as usize != i + 1)
        {
            return Err(StoreError::Backend {
                op: "put",
                key: self.dest.clone(),
                message: format!("part {} missing (next part sent is {n})", i + 1),
            });
        }
        let expected = parts
            .iter()
            .skip(1)
            .fold(parts[0].1.0, |acc, (_, (crc, len))| {
                crc32c_combine(acc, *crc, *len)
            });
        // Compose in rounds of at most 32 sources until one round names the destination.
        let mut level: Vec<String> = parts.iter().map(|(n, _)| self.part_name(*n)).collect();
        let mut intermediates = Vec::new();
        let mut round = 0;
        let got = loop {
            if level.len() <= COMPOSE_MAX {
                break self.inner.compose(&level, &self.dest).await?;
            }
            round += 1;
            let mut next = Vec::new();
            for (j, group) in level.chunks(COMPOSE_MAX).enumerate() {
                let name = format!("{}c{round:02}-{j:06}", self.parts_prefix);
                self.inner.compose(group, &name).await?;
                intermediates.push(name.clone());
                next.push(name);
            }
            level = next;
        };
        if let Some(got) = got
            && got != expected
        {
            let _ = self.inner.delete_one(&self.dest, None).await;
            return Err(StoreError::Backend {
                op: "put",
                key: self.dest.clone(),
                message: format!(
                    "composed object has CRC32C {got:08x}, its parts combine to {expected:08x}"
                ),
            });
        }
        self.cleanup(intermediates).await
    }

    async fn abort(&self) -> StoreResult<()> {
        self.cleanup(Vec::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What GCS does with `fields`: keeps only the named fields (`a,b(c,d)` syntax, one level
    /// of nesting, arrays filtered element-wise).
    fn select(v: &Value, fields: &str) -> Value {
        let mut spec: Vec<(String, Option<String>)> = Vec::new();
        let (mut depth, mut cur) = (0, String::new());
        for c in fields.chars().chain(std::iter::once(',')) {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if c == ',' && depth == 0 {
                let (name, sub) = match cur.split_once('(') {
                    Some((n, rest)) => {
                        (n.to_string(), Some(rest.trim_end_matches(')').to_string()))
                    }
                    None => (cur.clone(), None),
                };
                spec.push((name, sub));
                cur.clear();
            } else {
                cur.push(c);
            }
        }
        let mut out = serde_json::Map::new();
        for (name, sub) in spec {
            let Some(field) = v.get(&name) else { continue };
            let kept = match (&sub, field) {
                (Some(s), Value::Array(a)) => {
                    Value::Array(a.iter().map(|x| select(x, s)).collect())
                }
                (Some(s), x) => select(x, s),
                (None, x) => x.clone(),
            };
            out.insert(name, kept);
        }
        Value::Object(out)
    }

    /// An objects.list answer as the real JSON API returns it without `fields`.
    fn real_page() -> Value {
        json!({
            "kind": "storage#objects",
            "nextPageToken": "CgpibG9icy9hYi94",
            "items": [{
                "kind": "storage#object",
                "id": "bkt/pre/blobs/ab/abcd/1714564800123456",
                "selfLink": "https://www.googleapis.com/storage/v1/b/bkt/o/pre%2Fblobs%2Fab%2Fabcd",
                "mediaLink": "https://storage.googleapis.com/download/storage/v1/b/bkt/o/pre%2Fblobs%2Fab%2Fabcd?generation=1714564800123456&alt=media",
                "name": "pre/blobs/ab/abcd",
                "bucket": "bkt",
                "generation": "1714564800123456",
                "metageneration": "1",
                "contentType": "application/octet-stream",
                "storageClass": "STANDARD",
                "size": "1048576",
                "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
                "crc32c": "AAAAAA==",
                "etag": "CMDr0Z7Q+YUDEAE=",
                "timeCreated": "2024-05-01T12:00:00.123Z",
                "updated": "2024-05-01T12:00:00.123Z",
                "timeStorageClassUpdated": "2024-05-01T12:00:00.123Z"
            }, {
                "kind": "storage#object",
                "name": "elsewhere/x",
                "size": "1",
                "updated": "2024-05-01T12:00:00.123Z"
            }]
        })
    }

    #[test]
    fn a_listing_as_real_gcs_filters_it_still_carries_every_object_age() {
        // Real GCS answers only the fields asked for: parse what it would send.
        let page = select(&real_page(), LIST_FIELDS);
        assert!(page["items"][0].get("kind").is_none(), "fields not applied");
        let (items, next) = parse_list_page(&page, "pre/");
        assert_eq!(next.as_deref(), Some("CgpibG9icy9hYi94"));
        assert_eq!(items.len(), 1, "only objects under the prefix");
        assert_eq!(items[0].key.as_str(), "blobs/ab/abcd");
        assert_eq!(items[0].size, 1_048_576);
        let want = chrono::DateTime::parse_from_rfc3339("2024-05-01T12:00:00.123Z")
            .expect("timestamp")
            .timestamp_millis();
        assert_eq!(items[0].modified_ms, Some(want));
        // The bug this guards against: asking for name and size only loses the age.
        let narrow = select(&real_page(), "items(name,size),nextPageToken");
        assert_eq!(parse_list_page(&narrow, "pre/").0[0].modified_ms, None);
    }

    #[test]
    fn crc32c_combination_matches_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let (a, b) = data.split_at(33_333);
        assert_eq!(
            crc32c_combine(crc32c(a), crc32c(b), b.len() as u64),
            crc32c(&data)
        );
        assert_eq!(
            parse_crc32c(&json!({"crc32c": B64.encode(crc32c(&data).to_be_bytes())})),
            Some(crc32c(&data))
        );
    }
}
