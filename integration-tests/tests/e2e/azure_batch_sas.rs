//! Azure batch deletes under the two kinds of SAS an operator hands ringvault, against Azurite:
//! - a container SAS (`sr=c`): the batch goes at container scope and deletes every blob;
//! - an account SAS without the delete permission: the service answers the batch itself with
//!   202 and every sub-request with 403; the delete must fail naming a blob, and nothing is
//!   deleted (a batch answer is read part by part, never taken as success from its status).
//!
//! Credentials are process-wide environment variables, so this test holds the bed exclusively
//! while it sets them step by step, and puts them back however it ends.
use anyhow::{Context, Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use ringvault_common::layout::ObjectKey;
use ringvault_common::store::{self, Store};
use ringvault_integration_tests::bed;
use ringvault_integration_tests::guards::EnvVars;
use ringvault_integration_tests::testbed::Testbed;
use sha2::Sha256;

const VERSION: &str = "2025-01-05";
const BLOBS: usize = 300;

fn sign(key_b64: &str, string_to_sign: &str) -> Result<String> {
    let key = B64.decode(key_b64.trim()).context("account key")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)?;
    mac.update(string_to_sign.as_bytes());
    Ok(B64.encode(mac.finalize().into_bytes()))
}

fn window() -> (String, String) {
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    (
        fmt(now - chrono::Duration::minutes(5)),
        fmt(now + chrono::Duration::hours(1)),
    )
}

/// A service SAS for the whole container, with permissions `sp`.
fn container_sas(account: &str, container: &str, key: &str, sp: &str) -> Result<String> {
    let (st, se) = window();
    let resource = format!("/blob/{account}/{container}");
    let to_sign =
        format!("{sp}\n{st}\n{se}\n{resource}\n\n\nhttps,http\n{VERSION}\nc\n\n\n\n\n\n\n");
    let sig = sign(key, &to_sign)?;
    Ok(query(&[
        ("sv", VERSION),
        ("sr", "c"),
        ("sp", sp),
        ("st", &st),
        ("se", &se),
        ("spr", "https,http"),
        ("sig", &sig),
    ]))
}

/// An account SAS for the blob service, with permissions `sp`.
fn account_sas(account: &str, key: &str, sp: &str) -> Result<String> {
    let (st, se) = window();
    let to_sign = format!("{account}\n{sp}\nb\nsco\n{st}\n{se}\n\nhttps,http\n{VERSION}\n\n");
    let sig = sign(key, &to_sign)?;
    Ok(query(&[
        ("sv", VERSION),
        ("ss", "b"),
        ("srt", "sco"),
        ("sp", sp),
        ("st", &st),
        ("se", &se),
        ("spr", "https,http"),
        ("sig", &sig),
    ]))
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn key(s: &str) -> Result<ObjectKey> {
    ObjectKey::from_listing(s).with_context(|| format!("bad key {s}"))
}

/// Opens the store at `url` with only `sas` as credential.
async fn open_with_sas(url: &str, sas: &str) -> Result<std::sync::Arc<dyn Store>> {
    // SAFETY: the test holds the bed exclusively; no other test reads the environment
    // meanwhile.
    unsafe {
        std::env::remove_var("AZURE_STORAGE_KEY");
        std::env::set_var("AZURE_STORAGE_AUTH", "sas");
        std::env::set_var("AZURE_STORAGE_SAS_TOKEN", sas);
    }
    Ok(store::open(url).await?)
}

async fn put_blobs(st: &dyn Store) -> Result<Vec<ObjectKey>> {
    let mut keys = Vec::with_capacity(BLOBS);
    for i in 0..BLOBS {
        let k = key(&format!("blobs/b{i:04}"))?;
        st.put(&k, Bytes::from(format!("blob {i}"))).await?;
        keys.push(k);
    }
    Ok(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_batch_deletes_obey_the_sas_and_report_refused_parts() -> Result<()> {
    let _bed = bed::exclusive().await;
    let _env = EnvVars::save(&[
        "AZURE_STORAGE_AUTH",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_KEY",
    ]);
    let tb = Testbed::load()?;
    let account = tb.var("RV_AZ_ACCOUNT")?;
    let container = tb.var("RV_AZ_CONTAINER")?;
    let account_key = tb.var("RV_AZ_KEY")?;
    let url = format!(
        "az://{account}/{container}/batch-sas/{}?endpoint={}",
        uuid::Uuid::new_v4().simple(),
        tb.var("RV_AZ_ENDPOINT")?
    );

    // Blobs written with the account key.
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("AZURE_STORAGE_AUTH");
        std::env::remove_var("AZURE_STORAGE_SAS_TOKEN");
        std::env::set_var("AZURE_STORAGE_KEY", &account_key);
    }
    let owner = store::open(&url).await?;
    let keys = put_blobs(owner.as_ref()).await?;

    // Read-only account SAS: the batch is answered, every part refused, nothing deleted.
    let read_only = open_with_sas(&url, &account_sas(&account, &account_key, "rl")?).await?;
    let err = read_only
        .delete_many(&keys)
        .await
        .expect_err("a delete without the delete permission must fail");
    let message = err.to_string();
    println!("refused as expected: {message}");
    ensure!(
        message.contains("blobs/b"),
        "the error names no blob: {message}"
    );
    ensure!(!message.contains("sig="), "the error leaks a signature");
    ensure!(!err.is_transient(), "a 403 must not be retried: {message}");
    let left = owner.list("blobs/").await?;
    ensure!(
        left.len() == BLOBS,
        "{} of {BLOBS} blobs left after a refused batch",
        left.len()
    );

    // Container SAS with delete: the batch goes at container scope and deletes everything
    // (two requests of 256 and 44), a blob already gone included.
    let deleter = open_with_sas(
        &url,
        &container_sas(&account, &container, &account_key, "rdl")?,
    )
    .await?;
    let mut doomed = keys.clone();
    doomed.push(key("blobs/never-existed")?);
    deleter
        .delete_many(&doomed)
        .await
        .context("batch delete with a container SAS")?;
    let left = owner.list("blobs/").await?;
    ensure!(left.is_empty(), "{} blobs left after the batch", left.len());
    Ok(())
}
