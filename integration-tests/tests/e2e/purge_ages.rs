//! Object ages on every store of the test bed (fake-gcs-server, the S3 server, Azurite, a
//! directory): every listed object carries its age, and the coordinator's purge deletes an
//! unreferenced blob older than the grace period and keeps a younger one.
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_common::store::{self, Store};
use ringvault_coordinator::purge::{self, PurgeOptions, RetentionPolicy};
use ringvault_integration_tests::bed;
use ringvault_integration_tests::runs::{now_ms, set_store_env};
use ringvault_integration_tests::testbed::Testbed;

async fn modified(st: &dyn Store, h: &ContentHash) -> anyhow::Result<i64> {
    let key = layout::blob(h);
    let listed = st.list(layout::BLOBS_PREFIX).await?;
    let o = listed
        .iter()
        .find(|o| o.key == key)
        .ok_or_else(|| anyhow::anyhow!("{key} not listed"))?;
    o.modified_ms
        .ok_or_else(|| anyhow::anyhow!("{} lists {key} without its age", st.describe()))
}

async fn older_blob_goes_younger_stays(backend: &str) -> anyhow::Result<()> {
    let tb = Testbed::load()?;
    let url = tb.fresh_store_url(backend, "ages")?;
    let st = store::open(&url).await?;
    let old = ContentHash::of(format!("old {url}").as_bytes());
    st.put(&layout::blob(&old), Bytes::from(format!("old {url}")))
        .await?;
    let old_at = modified(st.as_ref(), &old).await?;
    // Let the store's clock move on by more than the grace period below.
    while now_ms() < old_at + 3_000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let young = ContentHash::of(format!("young {url}").as_bytes());
    st.put(&layout::blob(&young), Bytes::from(format!("young {url}")))
        .await?;
    let young_at = modified(st.as_ref(), &young).await?;
    assert!(
        young_at >= old_at + 3_000,
        "{backend}: {old_at} then {young_at}"
    );
    let opts = PurgeOptions {
        dry_run: false,
        default_policy: RetentionPolicy::default(),
        schedule_policies: HashMap::new(),
        grace: Duration::from_secs(2),
        running_blobs: BTreeSet::new(),
        running_runs: BTreeSet::new(),
        now_ms: young_at + 1_000,
        pause: None,
    };
    let r = purge::purge(&st, &opts).await?;
    assert_eq!(
        (r.blobs_deleted, r.blobs_too_young, r.blobs_age_unknown),
        (1, 1, 0),
        "{backend}: {r:?}"
    );
    assert!(st.head(&layout::blob(&old)).await?.is_none(), "{backend}");
    assert!(st.head(&layout::blob(&young)).await?.is_some(), "{backend}");
    st.delete_many(&[layout::blob(&young)]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_gcs_s3_azure_and_file_an_old_unreferenced_blob_goes_and_a_young_one_stays()
-> anyhow::Result<()> {
    let _bed = bed::shared().await;
    set_store_env(&Testbed::load()?)?;
    for backend in ["gs", "s3", "az", "file"] {
        older_blob_goes_younger_stays(backend).await?;
    }
    Ok(())
}
