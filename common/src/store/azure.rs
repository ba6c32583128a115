//! `az://account/container/prefix[?endpoint=...]` backend: Azure Blob Storage (or Azurite) on
//! `azure_storage_blob` 1.x, the maintained GA SDK.
//!
//! **Credentials**, from the environment, never from the URL (the first that applies wins;
//! `AZURE_STORAGE_AUTH=sas|key|service-principal|workload-identity|managed-identity|cli` forces
//! one):
//! 1. `AZURE_STORAGE_SAS_TOKEN`: a SAS (account or container) put in every request's query.
//! 2. `AZURE_STORAGE_KEY`: the account key. The GA SDK has no Shared Key credential, so an
//!    account SAS (blob service, read/write/delete/list/add/create, 6 hours) is signed here with
//!    HMAC-SHA256 and re-signed every hour; the key itself never leaves the process.
//! 3. `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`: a service principal.
//! 4. `AZURE_FEDERATED_TOKEN_FILE`: workload identity (AKS).
//! 5. Otherwise managed identity (user-assigned when `AZURE_CLIENT_ID` is set); `cli` uses the
//!    Azure CLI's login (`az login`) for operators' machines.
//!
//! Entra ID tokens are only sent over https (the SDK refuses plain http with a credential).
//! Error messages are scrubbed of any `sig=` value.
//!
//! **Integrity.** Every upload is staged as blocks, each with a transactional CRC64 (the NVMe
//! polynomial, little-endian bytes: what Azure calls CRC64) that the service checks before it
//! keeps the block; `commit_block_list` then assembles the blob. A small `put` is one block and
//! a commit; an empty one is a plain upload (nothing to corrupt). Multipart parts are blocks
//! staged in parallel; `abort` leaves the uncommitted blocks to the service, which discards them
//! after a week (there is no call to drop uncommitted blocks of a blob that does not exist).
//!
//! **Deletes** of more than one blob use Blob Batch (256 per request, `multipart/mixed`, see
//! `batch`), sent over `reqwest` because the 1.x SDK has no batch call.
//! **Rename** is a server-side Copy Blob (same account: authorised by the request itself), waited
//! for, then a delete of the source.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, StatusCode, Transport, Url};
use azure_storage_blob::models::{
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientStageBlockOptions, BlockLookupList, CopyStatus,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error_chain as chain;
use super::{ByteStream, MultipartUpload, ObjectMeta, Store, StoreError, StoreResult, batch};
use crate::layout::ObjectKey;

const PART_SIZE: usize = 8 << 20;
/// Sub-requests per Blob Batch request (the service's limit).
const BATCH_MAX: usize = 256;
/// Blob Batch at container scope needs 2020-04-08 or later; the SAS is signed for this one.
const BATCH_API_VERSION: &str = "2025-01-05";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// Same page size as S3 and GCS.
const LIST_PAGE: i32 = 1000;
/// Account SAS signed from a key: valid this long, re-signed after `SAS_REFRESH`.
const SAS_VALIDITY: chrono::Duration = chrono::Duration::hours(6);
const SAS_REFRESH: Duration = Duration::from_secs(3600);
const COPY_WAIT: Duration = Duration::from_secs(3600);

enum Auth {
    Sas(String),
    Key { key: Vec<u8> },
    Token(Arc<dyn TokenCredential>),
}

/// A store in an Azure Blob container.
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    account: String,
    container: String,
    prefix: String,
    /// The account's blob endpoint, e.g. `https://acct.blob.core.windows.net`.
    endpoint: String,
    custom_endpoint: bool,
    auth: Auth,
    client: Mutex<Option<(Instant, Arc<BlobContainerClient>)>>,
    /// For Blob Batch, which the SDK does not offer.
    http: reqwest::Client,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `e` with SAS signatures removed from its message (a failed request's URL carries one).
fn scrubbed(e: StoreError) -> StoreError {
    match e {
        StoreError::Backend { op, key, message } => StoreError::Backend {
            op,
            key,
            message: scrub(&message),
        },
        StoreError::Transient { op, key, message } => StoreError::Transient {
            op,
            key,
            message: scrub(&message),
        },
        other => other,
    }
}

/// Removes SAS signatures from a message.
fn scrub(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        let tail = &rest[i + 4..];
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace() || c == ')')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn az_err(op: &'static str, key: &str) -> impl FnOnce(azure_core::Error) -> StoreError {
    let key = key.to_string();
    move |e| {
        let code = match e.kind() {
            azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
            _ => None,
        };
        let text = e.to_string();
        // The service's <Message> (first line) rather than the whole XML body.
        let detail = text
            .split_once("<Message>")
            .and_then(|(_, rest)| rest.split(['\n', '<']).next())
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(300).collect());
        let message = scrub(&match (&code, e.http_status()) {
            (Some(c), Some(s)) => format!("{c} (HTTP {}): {detail}", u16::from(s)),
            (None, Some(s)) => format!("HTTP {}: {detail}", u16::from(s)),
            _ => chain(&e),
        });
        match e.http_status() {
            Some(s) => StoreError::http(op, &key, u16::from(s), message),
            None if matches!(
                e.kind(),
                azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection
            ) =>
            {
                StoreError::Transient { op, key, message }
            }
            None => StoreError::Backend { op, key, message },
        }
    }
}

fn is_not_found(e: &azure_core::Error) -> bool {
    e.http_status() == Some(StatusCode::NotFound)
}

fn crc64(data: &[u8]) -> Vec<u8> {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
        .to_le_bytes()
        .to_vec()
}

/// An account SAS (query string without `?`) for the blob service, signed with the account
/// key. String-to-sign for sv >= 2020-12-06:
/// `account\nsp\nss\nsrt\nst\nse\nsip\nspr\nsv\nses\n`.
fn account_sas(account: &str, key: &[u8], https_only: bool) -> Result<String, String> {
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (sv, sp, ss, srt) = ("2025-01-05", "rwdlac", "b", "sco");
    let st = fmt(now - chrono::Duration::minutes(5));
    let se = fmt(now + SAS_VALIDITY);
    let spr = if https_only { "https" } else { "https,http" };
    let string_to_sign = format!("{account}\n{sp}\n{ss}\n{srt}\n{st}\n{se}\n\n{spr}\n{sv}\n\n");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("account key unusable: {e}"))?;
    mac.update(string_to_sign.as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    Ok(url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", sv)
        .append_pair("ss", ss)
        .append_pair("srt", srt)
        .append_pair("sp", sp)
        .append_pair("st", &st)
        .append_pair("se", &se)
        .append_pair("spr", spr)
        .append_pair("sig", &sig)
        .finish())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn auth_from_env(account: &str) -> Result<Auth, String> {
    let forced = env("AZURE_STORAGE_AUTH");
    let mode = match forced.as_deref() {
        Some(m) => m.to_string(),
        None if env("AZURE_STORAGE_SAS_TOKEN").is_some() => "sas".into(),
        None if env("AZURE_STORAGE_KEY").is_some() => "key".into(),
        None if env("AZURE_CLIENT_SECRET").is_some() => "service-principal".into(),
        None if env("AZURE_FEDERATED_TOKEN_FILE").is_some() => "workload-identity".into(),
        None => "managed-identity".into(),
    };
    let cred_err = |e: azure_core::Error| format!("Azure credential ({mode}): {}", chain(&e));
    Ok(match mode.as_str() {
        "sas" => {
            let sas = env("AZURE_STORAGE_SAS_TOKEN")
                .ok_or("AZURE_STORAGE_AUTH=sas but AZURE_STORAGE_SAS_TOKEN is not set")?;
            Auth::Sas(sas.trim_start_matches('?').to_string())
        }
        "key" => {
            let key = env("AZURE_STORAGE_KEY")
                .ok_or("AZURE_STORAGE_AUTH=key but AZURE_STORAGE_KEY is not set")?;
            let key = B64
                .decode(key.trim())
                .map_err(|_| format!("AZURE_STORAGE_KEY for {account} is not base64"))?;
            Auth::Key { key }
        }
        "service-principal" => {
            let (Some(tenant), Some(client), Some(secret)) = (
                env("AZURE_TENANT_ID"),
                env("AZURE_CLIENT_ID"),
                env("AZURE_CLIENT_SECRET"),
            ) else {
                return Err(
                    "a service principal needs AZURE_TENANT_ID, AZURE_CLIENT_ID and \
                            AZURE_CLIENT_SECRET"
                        .into(),
                );
            };
            Auth::Token(
                azure_identity::ClientSecretCredential::new(
                    &tenant,
                    client,
                    Secret::new(secret),
                    None,
                )
                .map_err(cred_err)?,
            )
        }
        "workload-identity" => {
            Auth::Token(azure_identity::WorkloadIdentityCredential::new(None).map_err(cred_err)?)
        }
        "managed-identity" => {
            let options =
                env("AZURE_CLIENT_ID").map(|id| azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(id)),
                    ..Default::default()
                });
            Auth::Token(azure_identity::ManagedIdentityCredential::new(options).map_err(cred_err)?)
        }
        "cli" => Auth::Token(azure_identity::AzureCliCredential::new(None).map_err(cred_err)?),
        other => {
            return Err(format!(
                "AZURE_STORAGE_AUTH={other:?} is not one of sas, key, service-principal, \
                 workload-identity, managed-identity, cli"
            ));
        }
    })
}

/// The SDK's transport when the operator named a store CA: a reqwest client shaped like the
/// SDK's default (timeouts, no redirects) that trusts the CA besides the system roots.
fn sdk_transport() -> Result<Option<Transport>, String> {
    let Some(ca) = super::tls::store_ca() else {
        return Ok(None);
    };
    let err = |e: reqwest_azure::Error| format!("store CA {}: {e}", ca.path().display());
    let certs = reqwest_azure::Certificate::from_pem_bundle(ca.pem()).map_err(err)?;
    let client = reqwest_azure::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest_azure::redirect::Policy::none())
        .tls_certs_merge(certs)
        .build()
        .map_err(err)?;
    Ok(Some(Transport::new(Arc::new(client))))
}

impl AzureStore {
    /// Opens `container` of `account` (at `endpoint` when given, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`) with credentials from the environment.
    pub fn new(
        account: String,
        container: String,
        prefix: String,
        endpoint: Option<String>,
    ) -> StoreResult<Self> {
        let auth = auth_from_env(&account).map_err(|message| StoreError::Backend {
            op: "open",
            key: format!("az://{account}/{container}/{prefix}"),
            message,
        })?;
        let http = super::http_client().map_err(|e| StoreError::Backend {
            op: "open",
            key: format!("az://{account}/{container}/{prefix}"),
            message: format!("HTTP client: {e}"),
        })?;
        let inner = Inner {
            custom_endpoint: endpoint.is_some(),
            endpoint: endpoint
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
                .trim_end_matches('/')
                .to_string(),
            account,
            container,
            prefix,
            auth,
            client: Mutex::new(None),
            http,
        };
        inner.container_client()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    fn full(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    fn open_err(&self, message: String) -> StoreError {
        StoreError::Backend {
            op: "open",
            key: format!("az://{}/{}/{}", self.account, self.container, self.prefix),
            message: scrub(&message),
        }
    }

    /// The container client, (re)built with a fresh SAS when signed from a key.
    fn container_client(&self) -> StoreResult<Arc<BlobContainerClient>> {
        let mut slot = self
            .client
            .lock()
            .map_err(|_| self.open_err("client cache poisoned".into()))?;
        if let Some((made, c)) = slot.as_ref()
            && (!matches!(self.auth, Auth::Key { .. }) || made.elapsed() < SAS_REFRESH)
        {
            return Ok(Arc::clone(c));
        }
        let mut url = Url::parse(&format!("{}/{}", self.endpoint, self.container))
            .map_err(|e| self.open_err(format!("container URL: {e}")))?;
        let credential = match &self.auth {
            Auth::Sas(sas) => {
                url.set_query(Some(sas));
                None
            }
            Auth::Key { key } => {
                let https_only = !self.custom_endpoint || url.scheme() == "https";
                let sas =
                    account_sas(&self.account, key, https_only).map_err(|m| self.open_err(m))?;
                url.set_query(Some(&sas));
                None
            }
            Auth::Token(t) => Some(Arc::clone(t)),
        };
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                // Retries belong to the store wrapper (`RetryingStore`).
                retry: RetryOptions::none(),
                transport: sdk_transport().map_err(|m| self.open_err(m))?,
                ..Default::default()
            },
            ..Default::default()
        };
        let client = Arc::new(
            BlobContainerClient::new(url, credential, Some(options))
                .map_err(|e| self.open_err(chain(&e)))?,
        );
        *slot = Some((Instant::now(), Arc::clone(&client)));
        Ok(client)
    }

    /// Stages `data` as block `id` of `name`, with its CRC64 checked by the service.
    async fn stage(&self, name: &str, id: &[u8], data: Bytes) -> StoreResult<()> {
        let options = BlockBlobClientStageBlockOptions {
            transactional_content_crc64: Some(crc64(&data)),
            ..Default::default()
        };
        self.container_client()?
            .blob_client(name)
            .block_blob_client()
            .stage_block(id, data.len() as u64, data.into(), Some(options))
            .await
            .map_err(az_err("put", name))?;
        Ok(())
    }

    async fn commit(&self, name: &str, ids: Vec<Vec<u8>>) -> StoreResult<()> {
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let content = list.try_into().map_err(az_err("put", name))?;
        self.container_client()?
            .blob_client(name)
            .block_blob_client()
            .commit_block_list(content, None)
            .await
            .map_err(az_err("put", name))?;
        Ok(())
    }

    /// Deletes `names` with Blob Batch requests ([`BATCH_MAX`] sub-requests each,
    /// a few at once); a blob already gone counts as deleted.
    async fn delete_names(&self, names: Vec<String>) -> StoreResult<()> {
        if let [only] = names.as_slice() {
            return self.delete_one(only).await;
        }
        batch::in_batches(names, BATCH_MAX, |chunk| async move {
            self.delete_batch(&chunk).await.map_err(scrubbed)
        })
        .await
    }

    /// One Blob Batch request deleting `names`. Each sub-request carries the same
    /// authorisation as the batch: the SAS in its query, or the bearer token.
    async fn delete_batch(&self, names: &[String]) -> StoreResult<()> {
        let Some(first) = names.first() else {
            return Ok(());
        };
        let fail = |message: String| StoreError::Backend {
            op: "delete",
            key: first.clone(),
            message,
        };
        let mut container = self.container_client()?.url().clone();
        let sas = container.query().map(str::to_string);
        container.set_query(None);
        let bearer = match &self.auth {
            Auth::Token(t) => {
                if container.scheme() != "https" {
                    return Err(fail("Entra ID tokens are only sent over https".into()));
                }
                let token = t
                    .get_token(&[STORAGE_SCOPE], None)
                    .await
                    .map_err(|e| fail(format!("Azure credential: {}", chain(&e))))?;
                Some(format!("Bearer {}", token.token.secret()))
            }
            Auth::Sas(_) | Auth::Key { .. } => None,
        };
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            let mut blob = container.clone();
            blob.path_segments_mut()
                .map_err(|()| fail("container URL cannot be a base".into()))?
                .extend(name.split('/'));
            let target = match &sas {
                Some(q) => format!("{}?{q}", blob.path()),
                None => blob.path().to_string(),
            };
            let mut headers = vec![("x-ms-date", date.clone())];
            if let Some(b) = &bearer {
                headers.push(("Authorization", b.clone()));
            }
            parts.push(batch::SubRequest {
                method: "DELETE",
                target,
                headers,
            });
        }
        // An account SAS (it names resource types) is sent at service scope, which every
        // service (Azurite too) accepts with it; a container SAS or a token at container scope,
        // the narrowest right a container-level grant covers.
        let account_sas = sas
            .as_deref()
            .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "srt"));
        let mut url = if account_sas {
            Url::parse(&format!("{}/", self.endpoint))
                .map_err(|e| fail(format!("endpoint URL: {e}")))?
        } else {
            container
        };
        let scope = if account_sas {
            "comp=batch"
        } else {
            "restype=container&comp=batch"
        };
        url.set_query(Some(&match &sas {
            Some(q) => format!("{scope}&{q}"),
            None => scope.to_string(),
        }));
        let mut req = self
            .http
            .post(url.as_str())
            .header("x-ms-version", BATCH_API_VERSION)
            .header("x-ms-date", &date);
        if let Some(b) = &bearer {
            req = req.header("Authorization", b);
        }
        let body = batch::encode(&parts, batch::ContentIds::Bare);
        let answers = batch::send(req, body, first).await?;
        batch::check_deletes(names, &answers)
    }

    async fn delete_one(&self, name: &str) -> StoreResult<()> {
        match self
            .container_client()?
            .blob_client(name)
            .delete(None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(az_err("delete", name)(e)),
        }
    }
}

/// Id of multipart block `number` of upload `upload` (12 characters). Block ids must all have
/// the same length within a blob: every id this backend makes has 32 bytes.
fn block_id(upload: &str, number: u32) -> Vec<u8> {
    format!("m{upload:.12}{number:019}").into_bytes()
}

/// Id of the single block of a small put: derived from the content, so writers racing to put
/// the same bytes under the same key (identical SSTable components on replicas, all going to
/// one content-addressed blob) stage the same block. A commit discards every *other*
/// uncommitted block of the blob; with equal ids the later commit finds the block committed.
fn put_block_id(data: &[u8]) -> Vec<u8> {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    format!("p{crc:016x}{:015x}", data.len() as u64).into_bytes()
}

#[async_trait]
impl Store for AzureStore {
    fn describe(&self) -> String {
        let i = &self.inner;
        if i.custom_endpoint {
            format!(
                "az://{}/{}/{} (endpoint {})",
                i.account, i.container, i.prefix, i.endpoint
            )
        } else {
            format!("az://{}/{}/{}", i.account, i.container, i.prefix)
        }
    }

    fn part_size(&self) -> usize {
        PART_SIZE
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> StoreResult<()> {
        let full = self.inner.full(key);
        if data.is_empty() {
            self.inner
                .container_client()?
                .blob_client(&full)
                .upload(Bytes::new().into(), None)
                .await
                .map_err(az_err("put", &full))?;
            return Ok(());
        }
        let id = put_block_id(&data);
        // Different bytes racing to one key: a commit by the other writer drops our staged
        // block (InvalidBlockList); stage it again, the last commit wins as with any put.
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.inner.stage(&full, &id, data.clone()).await?;
            match self.inner.commit(&full, vec![id.clone()]).await {
                Err(StoreError::Backend { message, .. })
                    if attempt < 6 && message.starts_with("InvalidBlockList") =>
                {
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<ByteStream> {
        let full = self.inner.full(key);
        let resp = match self
            .inner
            .container_client()?
            .blob_client(&full)
            .download(None)
            .await
        {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(az_err("get", &full)(e)),
        };
        let s = resp.body.map(move |r| r.map_err(az_err("get", &full)));
        Ok(Box::pin(s))
    }

    async fn head(&self, key: &ObjectKey) -> StoreResult<Option<ObjectMeta>> {
        let full = self.inner.full(key);
        match self
            .inner
            .container_client()?
            .blob_client(&full)
            .get_properties(None)
            .await
        {
            Ok(r) => Ok(Some(ObjectMeta {
                key: key.clone(),
                modified_ms: None,
                size: r
                    .content_length()
                    .map_err(az_err("head", &full))?
                    .unwrap_or(0),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(az_err("head", &full)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let i = &self.inner;
        let full_prefix = format!("{}{}", i.prefix, prefix);
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(full_prefix.clone()),
            maxresults: Some(LIST_PAGE),
            ..Default::default()
        };
        let mut pages = i
            .container_client()?
            .list_blobs(Some(options))
            .map_err(az_err("list", &full_prefix))?
            .into_pages();
        let mut out = Vec::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(az_err("list", &full_prefix))?
        {
            let page = page.into_model().map_err(az_err("list", &full_prefix))?;
            for item in page.blob_items {
                let Some(name) = item.name else { continue };
                let Some(rel) = name.strip_prefix(&i.prefix) else {
                    continue;
                };
                if let Some(key) = ObjectKey::from_listing(rel) {
                    out.push(ObjectMeta {
                        key,
                        modified_ms: item
                            .properties
                            .as_ref()
                            .and_then(|p| p.last_modified)
                            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64),
                        size: item
                            .properties
                            .as_ref()
                            .and_then(|p| p.content_length)
                            .unwrap_or(0),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_many(&self, keys: &[ObjectKey]) -> StoreResult<()> {
        let names: Vec<String> = keys.iter().map(|k| self.inner.full(k)).collect();
        self.inner.delete_names(names).await
    }

    async fn start_multipart(&self, key: &ObjectKey) -> StoreResult<Box<dyn MultipartUpload>> {
        Ok(Box::new(AzureMultipart {
            inner: Arc::clone(&self.inner),
            name: self.inner.full(key),
            upload: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            parts: Mutex::new(BTreeSet::new()),
        }))
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> StoreResult<()> {
        let i = &self.inner;
        let (src, dst) = (i.full(from), i.full(to));
        let container = i.container_client()?;
        let source_url = container.blob_client(&src).url().to_string();
        let dest = container.blob_client(&dst);
        match dest.start_copy_from_url(source_url, None).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(StoreError::NotFound {
                    key: from.to_string(),
                });
            }
            Err(e) => return Err(az_err("rename", &src)(e)),
        }
        // Same-account copies finish at once or within seconds; wait for the service to say so.
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let props = dest
                .get_properties(None)
                .await
                .map_err(az_err("rename", &dst))?;
            match props.copy_status().map_err(az_err("rename", &dst))? {
                None | Some(CopyStatus::Success) => break,
                Some(CopyStatus::Pending) if started.elapsed() < COPY_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => {
                    let why = props.copy_status_description().ok().flatten();
                    return Err(StoreError::Backend {
                        op: "rename",
                        key: dst,
                        message: scrub(&format!("copy ended as {other:?}: {why:?}")),
                    });
                }
            }
        }
        i.delete_one(&src).await
    }
}

struct AzureMultipart {
    inner: Arc<Inner>,
    name: String,
    upload: String,
    parts: Mutex<BTreeSet<u32>>,
}

impl AzureMultipart {
    fn poisoned(&self) -> StoreError {
        StoreError::Backend {
            op: "put",
            key: self.name.clone(),
            message: "part list poisoned".into(),
        }
    }
}

#[async_trait]
impl MultipartUpload for AzureMultipart {
    async fn put_part(&self, number: u32, data: Bytes) -> StoreResult<()> {
        self.inner
            .stage(&self.name, &block_id(&self.upload, number), data)
            .await?;
        self.parts
            .lock()
            .map_err(|_| self.poisoned())?
            .insert(number);
        Ok(())
    }

    async fn complete(&self) -> StoreResult<()> {
        let parts: Vec<u32> = self
            .parts
            .lock()
            .map_err(|_| self.poisoned())?
            .iter()
            .copied()
            .collect();
        if let Some((i, n)) = parts
            .iter()
            .enumerate()
            .find(|(i, n)| **n as usize != i + 1)
        {
            return Err(StoreError::Backend {
                op: "put",
                key: self.name.clone(),
                message: format!("part {} missing (next part sent is {n})", i + 1),
            });
        }
        let ids = parts.iter().map(|n| block_id(&self.upload, *n)).collect();
        self.inner.commit(&self.name, ids).await
    }

    async fn abort(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length() {
        assert_eq!(block_id("0123456789ab", 1).len(), 32);
        assert_eq!(block_id("0123456789ab", u32::MAX).len(), 32);
        assert_eq!(put_block_id(b"").len(), 32);
        assert_eq!(put_block_id(&[7u8; 100_000]).len(), 32);
        assert_eq!(put_block_id(b"abc"), put_block_id(b"abc"));
        assert_ne!(put_block_id(b"abc"), put_block_id(b"abd"));
    }

    #[test]
    fn scrub_hides_signatures() {
        let s = scrub("GET https://a.blob.core.windows.net/c/x?sv=1&sig=abc%2Bdef&se=2 failed");
        assert!(!s.contains("abc"), "{s}");
        assert!(s.contains("sig=REDACTED&se=2"), "{s}");
    }

    #[test]
    fn account_sas_is_signed_over_the_documented_string() {
        let key = B64
            .decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
            .expect("base64");
        let sas = account_sas("devstoreaccount1", &key, false).expect("signed");
        for p in [
            "sv=2025-01-05",
            "ss=b",
            "srt=sco",
            "sp=rwdlac",
            "spr=https%2Chttp",
            "sig=",
        ] {
            assert!(sas.contains(p), "{sas} lacks {p}");
        }
    }
}
