//! Measures purge's sweep on a real store: writes N unreferenced 1 KiB blobs (and nothing
//! else) under a fresh prefix, then runs the coordinator's own `purge` (grace 0) and prints
//! how long listing + deleting took, the delete requests sent and blobs per second.
//!
//! ```sh
//! cargo build --release -p ringvault-integration-tests --bin rv-purge-bench
//! target/release/rv-purge-bench --backend s3 --blobs 20000
//! ```
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use rand::RngCore;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_coordinator::purge::{self, PurgeOptions, RetentionPolicy};
use ringvault_integration_tests::testbed::Testbed;

#[tokio::main]
async fn main() -> Result<()> {
    let mut backend = "file".to_string();
    let mut blobs = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context("missing value");
        match a.as_str() {
            "--backend" => backend = val()?,
            "--blobs" => blobs = val()?.parse()?,
            other => bail!(
                "unknown argument {other:?}; usage: rv-purge-bench [--backend file|s3|gs|az] [--blobs N]"
            ),
        }
    }
    let tb = Testbed::load()?;
    tb.export_store_credentials()?;
    let url = tb.fresh_store_url(&backend, "purge-bench")?;
    let store = ringvault_common::store::open(&url).await?;
    let t = Instant::now();
    let puts = futures::stream::iter(0..blobs)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            async move {
                let mut data = vec![0u8; 1024];
                rand::rng().fill_bytes(&mut data);
                let key = layout::blob(&ContentHash::of(&data));
                store.put(&key, Bytes::from(data)).await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for p in puts {
        p?;
    }
    let put_s = t.elapsed().as_secs_f64();
    let opts = PurgeOptions {
        dry_run: false,
        default_policy: RetentionPolicy::default(),
        schedule_policies: HashMap::new(),
        grace: Duration::ZERO,
        running_blobs: BTreeSet::new(),
        running_runs: BTreeSet::new(),
        now_ms: chrono::Utc::now().timestamp_millis(),
        pause: None,
    };
    let t = Instant::now();
    let report = purge::purge(&store, &opts).await?;
    let purge_s = t.elapsed().as_secs_f64();
    let left = store.list(layout::BLOBS_PREFIX).await?.len();
    println!("store             : {}", store.describe());
    println!("blobs written     : {blobs} x 1 KiB in {put_s:.1} s");
    println!(
        "purge             : {} blobs deleted in {purge_s:.2} s = {:.0} blobs/s, {} delete request(s), {left} left",
        report.blobs_deleted,
        report.blobs_deleted as f64 / purge_s,
        report.delete_requests
    );
    if left != 0 || report.blobs_deleted != blobs as u64 {
        bail!(
            "purge left {left} blobs / deleted {} of {blobs}",
            report.blobs_deleted
        );
    }
    Ok(())
}
