//! Proves the test bed's three object-store servers are real, using exactly the crates the
//! product backends will use:
//!
//! * S3 (s3s-fs) through `aws-sdk-s3`,
//! * Azure Blob (Azurite) through `azure_storage_blob` 1.x, authenticated by an account SAS
//!   signed here with the account key (the GA SDK has no Shared Key credential),
//! * GCS (fake-gcs-server) through `google-cloud-storage` 1.x for put/get, and the GCS JSON API
//!   over `reqwest` for list/delete (the SDK's `StorageControl` is gRPC-only, which no emulator
//!   speaks).
//!
//! Each store round-trips a 20 MB random object and an empty object (put, get, list, delete, then
//! get fails with not-found). S3 and Azurite must also refuse a body whose checksum is wrong,
//! while accepting the right one. Keys live under a fresh uuid prefix per run.
use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
use azure_core::http::{StatusCode, Url};
use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlockBlobClientStageBlockOptions,
    BlockBlobClientStageBlockResultHeaders, BlockListType, BlockLookupList,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::TryStreamExt as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use rand::RngCore as _;
use ringvault_integration_tests::bed;
use ringvault_integration_tests::testbed::Testbed;
use sha2::Sha256;

/// "20 MB": deliberately not a multiple of the Azure block size nor of GCS's 8 MiB chunk, and
/// above GCS's 16 MiB resumable-upload threshold.
const BIG_LEN: usize = 20_000_000;
/// Objects below this size go to GCS as one single-shot upload (see the trap in `Gcs::put`).
const GCS_SINGLE_SHOT_MAX: usize = 64 * 1024 * 1024;
/// Azure block size for staged uploads.
const AZ_BLOCK_LEN: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// shared helpers
// ---------------------------------------------------------------------------------------------

fn random_bytes(len: usize) -> Bytes {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

/// A key prefix unique to this test and run.
fn run_prefix(test: &str) -> String {
    format!("it-object-stores/{test}/{}/", uuid::Uuid::new_v4())
}

/// Compares two bodies without dumping megabytes into the failure message.
fn ensure_same(what: &str, expected: &[u8], got: &[u8]) -> Result<()> {
    ensure!(
        expected.len() == got.len(),
        "{what}: length {} read back, {} written",
        got.len(),
        expected.len()
    );
    ensure!(
        blake3::hash(expected) == blake3::hash(got),
        "{what}: content differs (blake3 {} written, {} read back)",
        blake3::hash(expected),
        blake3::hash(got)
    );
    Ok(())
}

fn crc32c(data: &[u8]) -> u32 {
    // CRC-32/ISCSI is CRC32C.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

fn crc64nvme(data: &[u8]) -> u64 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
}

fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    <Sha256 as sha2::Digest>::digest(data).into()
}

/// Same length, every byte changed: a checksum that cannot match.
fn corrupt(digest: &[u8]) -> Vec<u8> {
    digest.iter().map(|b| !b).collect()
}

// ---------------------------------------------------------------------------------------------
// S3 (s3s-fs) via aws-sdk-s3
// ---------------------------------------------------------------------------------------------

struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
}

fn s3(tb: &Testbed) -> Result<S3> {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let credentials = Credentials::new(
        tb.var("RV_S3_ACCESS_KEY")?,
        tb.var("RV_S3_SECRET_KEY")?,
        None,
        None,
        "ringvault-testbed",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(tb.var("RV_S3_ENDPOINT")?)
        .region(Region::new(tb.var("RV_S3_REGION")?))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    Ok(S3 {
        client: aws_sdk_s3::Client::from_conf(config),
        bucket: tb.var("RV_S3_BUCKET")?,
    })
}

impl S3 {
    async fn get(&self, key: &str) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("S3 get_object {key}"))?;
        Ok(out.body.collect().await?.into_bytes())
    }

    /// Every key (with its size) under `prefix`, following continuation tokens.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("S3 list_objects_v2 prefix {prefix}"))?;
            for obj in page.contents() {
                found.push((
                    obj.key().unwrap_or_default().to_string(),
                    obj.size().unwrap_or(-1),
                ));
            }
        }
        Ok(found)
    }

    /// Asserts that `key` does not exist: get_object fails with NoSuchKey / 404.
    async fn ensure_absent(&self, key: &str) -> Result<()> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => bail!("S3 object {key} exists, expected it absent"),
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                let service = err.into_service_error();
                ensure!(
                    service.is_no_such_key() && status == Some(404),
                    "S3 get_object {key}: expected NoSuchKey/404, got status {status:?}: {service:?}"
                );
                Ok(())
            }
        }
    }

    /// After a put refused with BadDigest, real S3 has stored nothing. s3s-fs 0.14.1 does not
    /// match that: its `put_object` renames the temp file into place (`file_writer.done()`)
    /// *before* comparing Content-MD5 / x-amz-checksum-*, so it answers 400 BadDigest yet keeps
    /// the object. Accept exactly that deviation (the stored body is the one sent), report it,
    /// and remove the object; anything else fails.
    async fn after_refused_put(&self, key: &str, sent: &[u8]) -> Result<()> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                self.ensure_absent(key).await
            }
            Err(err) => Err(anyhow::Error::new(err).context(format!("S3 head_object {key}"))),
            Ok(_) => {
                ensure_same(
                    &format!("S3 object left by a refused put {key}"),
                    sent,
                    &self.get(key).await?,
                )?;
                println!(
                    "S3 KNOWN DEVIATION (s3s-fs 0.14.1): refused put left {key} in place; deleting it"
                );
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .with_context(|| format!("S3 delete_object {key}"))?;
                self.ensure_absent(key).await
            }
        }
    }

    async fn round_trip(&self, key: &str, data: Bytes) -> Result<()> {
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()))
            .send()
            .await
            .with_context(|| format!("S3 put_object {key} ({} bytes)", data.len()))?;
        println!(
            "S3 put {key} ({} bytes): etag {:?}, crc32 {:?}",
            data.len(),
            put.e_tag(),
            put.checksum_crc32()
        );

        ensure_same(&format!("S3 get {key}"), &data, &self.get(key).await?)?;

        let prefix = &key[..=key.rfind('/').context("key without '/'")?];
        let listed = self.list(prefix).await?;
        ensure!(
            listed.contains(&(key.to_string(), data.len() as i64)),
            "S3 listing of {prefix} lacks {key} with size {}: {listed:?}",
            data.len()
        );

        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("S3 delete_object {key}"))?;
        self.ensure_absent(key).await?;
        let listed = self.list(prefix).await?;
        ensure!(
            !listed.iter().any(|(k, _)| k == key),
            "S3 listing still shows deleted {key}: {listed:?}"
        );
        Ok(())
    }
}

#[tokio::test]
async fn s3_round_trips_20mb_and_empty_objects() -> Result<()> {
    let _bed = bed::shared().await;
    let s3 = s3(&Testbed::load()?)?;
    let prefix = run_prefix("s3-round-trip");
    s3.round_trip(&format!("{prefix}big.bin"), random_bytes(BIG_LEN))
        .await?;
    s3.round_trip(&format!("{prefix}empty.bin"), Bytes::new())
        .await?;
    Ok(())
}

/// Expects a put to have been refused as a bad digest: HTTP 400 and error code BadDigest.
fn ensure_bad_digest<O: std::fmt::Debug>(
    what: &str,
    result: Result<
        O,
        aws_sdk_s3::error::SdkError<
            aws_sdk_s3::operation::put_object::PutObjectError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    >,
) -> Result<()> {
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match result {
        Ok(out) => bail!("S3 accepted {what}: {out:?}"),
        Err(err) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            let code = err.code().map(str::to_string);
            println!("S3 refused {what}: status {status:?}, code {code:?}");
            ensure!(
                status == Some(400) && code.as_deref() == Some("BadDigest"),
                "S3 {what}: expected 400 BadDigest, got status {status:?} code {code:?}: {err:?}"
            );
            Ok(())
        }
    }
}

#[tokio::test]
async fn s3_refuses_put_with_wrong_checksum() -> Result<()> {
    let _bed = bed::shared().await;
    let s3 = s3(&Testbed::load()?)?;
    let prefix = run_prefix("s3-bad-checksum");
    let data = random_bytes(1024 * 1024 + 17);
    let good_crc32c = B64.encode(crc32c(&data).to_be_bytes());
    let good_sha256 = B64.encode(sha256(&data));
    let good_md5 = B64.encode(md5_digest(&data));
    let put = |key: &str| {
        s3.client
            .put_object()
            .bucket(&s3.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()))
    };

    // Wrong x-amz-checksum-crc32c.
    let key = format!("{prefix}wrong-crc32c.bin");
    let result = put(&key)
        .checksum_crc32_c(B64.encode(corrupt(&crc32c(&data).to_be_bytes())))
        .send()
        .await;
    ensure_bad_digest("a wrong x-amz-checksum-crc32c", result)?;
    s3.after_refused_put(&key, &data).await?;

    // Wrong x-amz-checksum-sha256.
    let key = format!("{prefix}wrong-sha256.bin");
    let result = put(&key)
        .checksum_sha256(B64.encode(corrupt(&sha256(&data))))
        .send()
        .await;
    ensure_bad_digest("a wrong x-amz-checksum-sha256", result)?;
    s3.after_refused_put(&key, &data).await?;

    // Wrong Content-MD5 (the SDK still adds its own, correct, CRC32).
    let key = format!("{prefix}wrong-md5.bin");
    let result = put(&key)
        .content_md5(B64.encode(corrupt(&md5_digest(&data))))
        .send()
        .await;
    ensure_bad_digest("a wrong Content-MD5", result)?;
    s3.after_refused_put(&key, &data).await?;

    // The right values are accepted, each on its own and all together, and the body reads back.
    let mut accepted = Vec::new();
    let key = format!("{prefix}right-crc32c.bin");
    put(&key)
        .checksum_crc32_c(&good_crc32c)
        .send()
        .await
        .context("S3 refused the correct CRC32C")?;
    accepted.push(key);
    let key = format!("{prefix}right-sha256.bin");
    put(&key)
        .checksum_sha256(&good_sha256)
        .send()
        .await
        .context("S3 refused the correct SHA-256")?;
    accepted.push(key);
    let key = format!("{prefix}right-md5-and-crc32c.bin");
    put(&key)
        .content_md5(&good_md5)
        .checksum_crc32_c(&good_crc32c)
        .send()
        .await
        .context("S3 refused the correct Content-MD5 + CRC32C")?;
    accepted.push(key);

    let listed: BTreeSet<String> = s3
        .list(&prefix)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: BTreeSet<String> = accepted.iter().cloned().collect();
    ensure!(
        listed == expected,
        "S3 listing after the checksum puts: {listed:?}, expected exactly {expected:?}"
    );
    for key in &accepted {
        ensure_same(&format!("S3 get {key}"), &data, &s3.get(key).await?)?;
        s3.client
            .delete_object()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("S3 delete_object {key}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Azure Blob (Azurite) via azure_storage_blob 1.x + account SAS
// ---------------------------------------------------------------------------------------------

/// An account SAS (query string, without '?') for the blob service, signed with the account key.
///
/// String-to-sign for sv >= 2020-12-06:
/// `account \n sp \n ss \n srt \n st \n se \n sip \n spr \n sv \n ses \n` (trailing newline).
fn azure_account_sas(account: &str, account_key_b64: &str) -> Result<String> {
    let key = B64
        .decode(account_key_b64)
        .context("account key is not base64")?;
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let sv = "2025-01-05"; // signed version
    let sp = "rwdlac"; // read write delete list add create (this order is mandatory)
    let ss = "b"; // blob service
    let srt = "sco"; // service, container, object
    let st = fmt(now - chrono::Duration::minutes(5)); // clock skew slack
    let se = fmt(now + chrono::Duration::hours(2));
    let spr = "https,http"; // Azurite is plain http
    let (sip, ses) = ("", "");
    let string_to_sign =
        format!("{account}\n{sp}\n{ss}\n{srt}\n{st}\n{se}\n{sip}\n{spr}\n{sv}\n{ses}\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)?;
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

fn azure_container(tb: &Testbed) -> Result<BlobContainerClient> {
    let endpoint = tb.var("RV_AZ_ENDPOINT")?;
    let container = tb.var("RV_AZ_CONTAINER")?;
    let sas = azure_account_sas(&tb.var("RV_AZ_ACCOUNT")?, &tb.var("RV_AZ_KEY")?)?;
    let mut url = Url::parse(&format!("{}/{container}", endpoint.trim_end_matches('/')))?;
    url.set_query(Some(&sas));
    // No credential: the SAS in the URL authorises every request (http is allowed then).
    Ok(BlobContainerClient::new(url, None, None)?)
}

/// The error code (x-ms-error-code) of an Azure HTTP error, if any.
fn azure_error_code(err: &azure_core::Error) -> Option<String> {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

/// Expects an Azure call to have failed with HTTP 400 and the given x-ms-error-code.
fn ensure_azure_400<T>(what: &str, result: azure_core::Result<T>, code: &str) -> Result<()> {
    match result {
        Ok(_) => bail!("Azurite accepted {what}"),
        Err(err) => {
            let status = err.http_status();
            let got = azure_error_code(&err);
            println!("Azurite refused {what}: status {status:?}, code {got:?}");
            ensure!(
                status == Some(StatusCode::BadRequest) && got.as_deref() == Some(code),
                "Azurite {what}: expected 400 {code}, got status {status:?} code {got:?}: {err}"
            );
            Ok(())
        }
    }
}

async fn azure_list(container: &BlobContainerClient, prefix: &str) -> Result<Vec<(String, u64)>> {
    let options = BlobContainerClientListBlobsOptions {
        prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    let mut pages = container.list_blobs(Some(options))?.into_pages();
    let mut found = Vec::new();
    while let Some(page) = pages.try_next().await? {
        for item in page.into_model()?.blob_items {
            let size = item
                .properties
                .as_ref()
                .and_then(|p| p.content_length)
                .unwrap_or(u64::MAX);
            found.push((item.name.unwrap_or_default(), size));
        }
    }
    Ok(found)
}

async fn azure_download(container: &BlobContainerClient, name: &str) -> Result<Bytes> {
    let blob = container.blob_client(name);
    let response = blob
        .download(None)
        .await
        .with_context(|| format!("Azure download {name}"))?;
    Ok(response.body.collect().await?)
}

async fn azure_ensure_absent(container: &BlobContainerClient, name: &str) -> Result<()> {
    let blob = container.blob_client(name);
    ensure!(
        !blob.exists().await?,
        "Azure blob {name} exists, expected it absent"
    );
    match blob.download(None).await {
        Ok(_) => bail!("Azure download of absent {name} succeeded"),
        Err(err) => {
            ensure!(
                err.http_status() == Some(StatusCode::NotFound)
                    && azure_error_code(&err).as_deref() == Some("BlobNotFound"),
                "Azure download of absent {name}: expected 404 BlobNotFound, got {err}"
            );
            Ok(())
        }
    }
}

/// Block IDs must all have the same length within a blob.
fn block_id(i: usize) -> Vec<u8> {
    format!("block-{i:06}").into_bytes()
}

/// Stages `data` as AZ_BLOCK_LEN blocks in parallel, each with a transactional CRC64 (which the
/// server checks and echoes), and commits them.
async fn azure_put_blocks(container: &BlobContainerClient, name: &str, data: &Bytes) -> Result<()> {
    let block_blob = container.blob_client(name).block_blob_client();
    let blocks: Vec<(Vec<u8>, Bytes)> = (0..data.len().div_ceil(AZ_BLOCK_LEN))
        .map(|i| {
            let start = i * AZ_BLOCK_LEN;
            let end = (start + AZ_BLOCK_LEN).min(data.len());
            (block_id(i), data.slice(start..end))
        })
        .collect();
    ensure!(blocks.len() >= 2, "expected several blocks");
    futures::future::try_join_all(blocks.iter().map(|(id, chunk)| {
        let block_blob = &block_blob;
        async move {
            let crc = crc64nvme(chunk).to_le_bytes().to_vec();
            let options = BlockBlobClientStageBlockOptions {
                transactional_content_crc64: Some(crc.clone()),
                ..Default::default()
            };
            let response = block_blob
                .stage_block(id, chunk.len() as u64, chunk.clone().into(), Some(options))
                .await
                .with_context(|| format!("Azure stage_block {name} {id:?}"))?;
            let echoed = response.content_crc64()?;
            ensure!(
                echoed.as_deref() == Some(crc.as_slice()),
                "Azure stage_block echoed x-ms-content-crc64 {echoed:?}, sent {crc:?}"
            );
            anyhow::Ok(())
        }
    }))
    .await?;
    let list = BlockLookupList {
        latest: Some(blocks.iter().map(|(id, _)| id.clone()).collect()),
        ..Default::default()
    };
    block_blob
        .commit_block_list(list.try_into()?, None)
        .await
        .with_context(|| format!("Azure commit_block_list {name}"))?;
    println!(
        "Azure staged and committed {name}: {} blocks, {} bytes",
        blocks.len(),
        data.len()
    );
    Ok(())
}

async fn azure_round_trip(
    container: &BlobContainerClient,
    name: &str,
    data: &Bytes,
    prefix: &str,
) -> Result<()> {
    ensure_same(
        &format!("Azure download {name}"),
        data,
        &azure_download(container, name).await?,
    )?;
    let listed = azure_list(container, prefix).await?;
    ensure!(
        listed.contains(&(name.to_string(), data.len() as u64)),
        "Azure listing of {prefix} lacks {name} with size {}: {listed:?}",
        data.len()
    );
    container
        .blob_client(name)
        .delete(None)
        .await
        .with_context(|| format!("Azure delete {name}"))?;
    azure_ensure_absent(container, name).await?;
    let listed = azure_list(container, prefix).await?;
    ensure!(
        !listed.iter().any(|(n, _)| n == name),
        "Azure listing still shows deleted {name}: {listed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn azurite_round_trips_20mb_and_empty_blobs() -> Result<()> {
    let _bed = bed::shared().await;
    let container = azure_container(&Testbed::load()?)?;
    let prefix = run_prefix("azure-round-trip");

    let big_name = format!("{prefix}big.bin");
    let big = random_bytes(BIG_LEN);
    azure_put_blocks(&container, &big_name, &big).await?;
    azure_round_trip(&container, &big_name, &big, &prefix).await?;

    let empty_name = format!("{prefix}empty.bin");
    container
        .blob_client(&empty_name)
        .upload(Bytes::new().into(), None)
        .await
        .with_context(|| format!("Azure upload {empty_name}"))?;
    azure_round_trip(&container, &empty_name, &Bytes::new(), &prefix).await?;
    Ok(())
}

#[tokio::test]
async fn azurite_refuses_block_with_wrong_checksum() -> Result<()> {
    let _bed = bed::shared().await;
    let container = azure_container(&Testbed::load()?)?;
    let name = format!("{}blob.bin", run_prefix("azure-bad-checksum"));
    let block_blob = container.blob_client(&name).block_blob_client();
    let a = random_bytes(256 * 1024 + 3);
    let b = random_bytes(512 * 1024 + 5);
    let stage = |id: usize, data: &Bytes, md5: Option<Vec<u8>>, crc64: Option<Vec<u8>>| {
        let options = BlockBlobClientStageBlockOptions {
            transactional_content_md5: md5,
            transactional_content_crc64: crc64,
            ..Default::default()
        };
        let id = block_id(id);
        let data = data.clone();
        let block_blob = &block_blob;
        async move {
            block_blob
                .stage_block(&id, data.len() as u64, data.into(), Some(options))
                .await
        }
    };

    // Wrong transactional MD5, wrong CRC64, and the right CRC64 in the wrong byte order.
    ensure_azure_400(
        "a block with a wrong Content-MD5",
        stage(1, &a, Some(corrupt(&md5_digest(&a))), None).await,
        "Md5Mismatch",
    )?;
    ensure_azure_400(
        "a block with a wrong x-ms-content-crc64",
        stage(2, &a, None, Some(corrupt(&crc64nvme(&a).to_le_bytes()))).await,
        "Crc64Mismatch",
    )?;
    ensure_azure_400(
        "a block with a big-endian x-ms-content-crc64",
        stage(3, &a, None, Some(crc64nvme(&a).to_be_bytes().to_vec())).await,
        "Crc64Mismatch",
    )?;
    azure_ensure_absent(&container, &name).await?;

    // The right MD5 and the right (little-endian) CRC64 are accepted.
    stage(4, &a, Some(md5_digest(&a).to_vec()), None)
        .await
        .context("Azurite refused a block with the correct MD5")?;
    stage(5, &b, None, Some(crc64nvme(&b).to_le_bytes().to_vec()))
        .await
        .context("Azurite refused a block with the correct CRC64")?;

    // Only the accepted blocks were kept, uncommitted.
    let blocks = block_blob
        .get_block_list(BlockListType::All, None)
        .await?
        .into_model()?;
    let names = |list: &Option<Vec<azure_storage_blob::models::Block>>| -> BTreeSet<Vec<u8>> {
        list.iter()
            .flatten()
            .filter_map(|b| b.name.clone())
            .collect()
    };
    ensure!(
        names(&blocks.committed_blocks).is_empty(),
        "committed blocks present before any commit: {:?}",
        blocks.committed_blocks
    );
    let uncommitted = names(&blocks.uncommitted_blocks);
    ensure!(
        uncommitted == BTreeSet::from([block_id(4), block_id(5)]),
        "uncommitted blocks: {uncommitted:?}, expected only the two accepted ones"
    );
    azure_ensure_absent(&container, &name).await?;

    // A block list naming a refused block cannot be committed.
    let bad_list = BlockLookupList {
        latest: Some(vec![block_id(4), block_id(1)]),
        ..Default::default()
    };
    ensure_azure_400(
        "a commit naming a refused block",
        block_blob
            .commit_block_list(bad_list.try_into()?, None)
            .await,
        "InvalidBlockList",
    )?;
    azure_ensure_absent(&container, &name).await?;

    // The accepted blocks commit and read back as a||b.
    let good_list = BlockLookupList {
        latest: Some(vec![block_id(4), block_id(5)]),
        ..Default::default()
    };
    block_blob
        .commit_block_list(good_list.try_into()?, None)
        .await
        .context("Azure commit of the accepted blocks")?;
    let expected = [a.as_ref(), b.as_ref()].concat();
    ensure_same(
        &format!("Azure download {name}"),
        &expected,
        &azure_download(&container, &name).await?,
    )?;
    container.blob_client(&name).delete(None).await?;
    azure_ensure_absent(&container, &name).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// GCS (fake-gcs-server) via google-cloud-storage 1.x + JSON API for list/delete
// ---------------------------------------------------------------------------------------------

struct Gcs {
    storage: google_cloud_storage::client::Storage,
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
}

async fn gcs(tb: &Testbed) -> Result<Gcs> {
    let endpoint = tb.var("RV_GCS_ENDPOINT")?;
    let storage = google_cloud_storage::client::Storage::builder()
        .with_endpoint(&endpoint)
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .context("building the GCS Storage client")?;
    Ok(Gcs {
        storage,
        http: reqwest::Client::new(),
        endpoint,
        bucket: tb.var("RV_GCS_BUCKET")?,
    })
}

impl Gcs {
    /// The bucket in the form the `Storage` client wants.
    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    /// `{endpoint}/storage/v1/b/{bucket}/o[/{object}]`, each segment percent-encoded ('/' too).
    fn json_url(&self, object: Option<&str>) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.endpoint)?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| anyhow::anyhow!("GCS endpoint {} is not a base", self.endpoint))?;
            segments
                .pop_if_empty()
                .extend(["storage", "v1", "b", &self.bucket, "o"]);
            if let Some(object) = object {
                segments.push(object);
            }
        }
        Ok(url)
    }

    async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let object = self
            .storage
            .write_object(self.bucket_path(), name, data.clone())
            // TRAP: the client sends `Host` without the port and fake-gcs-server builds the
            // resumable session URL from `Host` (its `-external-url` flag does not change that),
            // so resumable chunks go to 127.0.0.1:80 and retry for ~10 minutes. Single-shot
            // (multipart) uploads do not follow a server-built URL, so use them here.
            .with_resumable_upload_threshold(GCS_SINGLE_SHOT_MAX)
            .send_buffered()
            .await
            .with_context(|| format!("GCS write_object {name} ({} bytes)", data.len()))?;
        ensure!(
            object.size == data.len() as i64,
            "GCS write_object {name}: server reports size {}, wrote {}",
            object.size,
            data.len()
        );
        let crc = object.checksums.as_ref().and_then(|c| c.crc32c);
        println!(
            "GCS put {name} ({} bytes): crc32c {crc:?}, generation {}",
            data.len(),
            object.generation
        );
        ensure!(
            crc.is_none_or(|c| c == crc32c(&data)),
            "GCS reports crc32c {crc:?}, body has {}",
            crc32c(&data)
        );
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let mut response = self
            .storage
            .read_object(self.bucket_path(), name)
            .send()
            .await
            .with_context(|| format!("GCS read_object {name}"))?;
        let mut body = Vec::with_capacity(usize::try_from(response.object().size).unwrap_or(0));
        while let Some(chunk) = response
            .next()
            .await
            .transpose()
            .with_context(|| format!("GCS read_object {name} body"))?
        {
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    /// Every object (with its size) under `prefix`, via the JSON API, following page tokens.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut found = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut url = self.json_url(None)?;
            url.query_pairs_mut().append_pair("prefix", prefix);
            if let Some(token) = &page_token {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let page: serde_json::Value = self
                .http
                .get(url.clone())
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("GCS JSON list {url}"))?
                .json()
                .await?;
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().context("list item without name")?;
                // The JSON API encodes int64 as a string.
                let size = item["size"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .context("list item without size")?;
                found.push((name.to_string(), size));
            }
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let url = self.json_url(Some(name))?;
        let response = self.http.delete(url.clone()).send().await?;
        // Real GCS answers 204 No Content; fake-gcs-server answers 200 OK.
        ensure!(
            response.status().is_success(),
            "GCS JSON DELETE {url}: status {}",
            response.status()
        );
        Ok(())
    }

    async fn ensure_absent(&self, name: &str) -> Result<()> {
        match self
            .storage
            .read_object(self.bucket_path(), name)
            .send()
            .await
        {
            Ok(_) => bail!("GCS object {name} exists, expected it absent"),
            Err(err) => {
                ensure!(
                    err.http_status_code() == Some(404),
                    "GCS read_object {name}: expected 404, got {err:?}"
                );
                Ok(())
            }
        }
    }

    async fn round_trip(&self, name: &str, data: Bytes, prefix: &str) -> Result<()> {
        self.put(name, data.clone()).await?;
        ensure_same(&format!("GCS get {name}"), &data, &self.get(name).await?)?;
        let listed = self.list(prefix).await?;
        ensure!(
            listed.contains(&(name.to_string(), data.len() as u64)),
            "GCS listing of {prefix} lacks {name} with size {}: {listed:?}",
            data.len()
        );
        self.delete(name).await?;
        self.ensure_absent(name).await?;
        let listed = self.list(prefix).await?;
        ensure!(
            !listed.iter().any(|(n, _)| n == name),
            "GCS listing still shows deleted {name}: {listed:?}"
        );
        Ok(())
    }
}

#[tokio::test]
async fn gcs_round_trips_20mb_and_empty_objects() -> Result<()> {
    let _bed = bed::shared().await;
    let gcs = gcs(&Testbed::load()?).await?;
    let prefix = run_prefix("gcs-round-trip");
    gcs.round_trip(&format!("{prefix}big.bin"), random_bytes(BIG_LEN), &prefix)
        .await?;
    gcs.round_trip(&format!("{prefix}empty.bin"), Bytes::new(), &prefix)
        .await?;
    Ok(())
}
