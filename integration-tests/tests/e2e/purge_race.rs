//! Two coordinators on one store (two deployments, one S3 prefix, the same Cassandra test bed):
//! coordinator A's purge is paused by its test hook (`RINGVAULT_TEST_PURGE_PAUSE_FILE`) between
//! listing the blobs and sweeping them, while coordinator B commits a backup that reuses,
//! without uploading, blobs only the backup A is expiring names. The purge must keep them and
//! B's backup must verify deep (docs/design.md, "Purge protocol", interleaving 3).
//!
//! The hook is passed to A's process through this process's environment, set while A starts
//! and removed before B starts: the test holds the bed exclusively, so no other test reads the
//! environment (or starts a process) meanwhile.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ringvault_common::RunId;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_coordinator::maintenance::PAUSE_ENV;
use ringvault_integration_tests::deployment::{self, Deployment};
use ringvault_integration_tests::guards::{EnvVars, Keyspaces};
use ringvault_integration_tests::runs::{self, id_of, node_manifests, open_store};
use ringvault_integration_tests::testbed::Testbed;
use ringvault_integration_tests::{bed, cluster};
use serde_json::Value;

async fn blobs_of(d: &Deployment, run: &str) -> anyhow::Result<BTreeSet<String>> {
    let st = open_store(d).await?;
    Ok(node_manifests(st.as_ref(), &RunId::parse(run)?)
        .await?
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.hash.to_string()))
        .collect())
}

fn wait_for_file(path: &Path, purge: &std::thread::JoinHandle<anyhow::Result<Value>>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !path.exists() {
        assert!(
            !purge.is_finished(),
            "the purge ended without reaching its pause"
        );
        assert!(Instant::now() < deadline, "the purge never paused");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_paused_between_listing_and_sweep_keeps_a_blob_another_coordinator_reuses()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    let url = runs::s3_store_url(&tb)?;
    let hook_dir = tempfile::tempdir()?;
    let pause = hook_dir.path().join("pause");
    let paused = hook_dir.path().join("pause.paused");
    // SAFETY: the bed is held exclusively; nothing else reads or writes the environment
    // while the coordinators start. The guard removes the hook even if A fails to start.
    let hook = EnvVars::save(&[PAUSE_ENV]);
    unsafe { std::env::set_var(PAUSE_ENV, &pause) };
    let a = Deployment::start(&url)?;
    drop(hook);
    let b = Deployment::start(&url)?;

    let s = cluster::session(&tb).await?;
    let (ks_x, ks_y) = (
        cluster::unique_keyspace("race_x"),
        cluster::unique_keyspace("race_y"),
    );
    let mut keyspaces = Keyspaces::new(&tb, &ks_x);
    keyspaces.also(&ks_y);
    for ks in [&ks_x, &ks_y] {
        cluster::create_keyspace(&s, &tb, ks, &["t"]).await?;
        cluster::write_rows(&s, ks, "t", 0, 200, 1024).await?;
        cluster::flush(&tb, ks)?;
    }
    // On A: backup X (expires under --keep-last 1), then Y (kept).
    let x = id_of(&runs::backup_done(&a, &["-k", &ks_x])?)?;
    let y = id_of(&runs::backup_done(&a, &["-k", &ks_y])?)?;
    let only_x: BTreeSet<String> = blobs_of(&a, &x)
        .await?
        .difference(&blobs_of(&a, &y).await?)
        .cloned()
        .collect();
    assert!(!only_x.is_empty(), "X names no blob of its own");

    // A's purge: X expires, its blobs are older than the (forced) zero grace. It pauses after
    // listing the blobs.
    std::fs::write(&pause, b"hold")?;
    let coordinator_url = a.coordinator_url.clone();
    let admin = a.certs().flags("admin");
    let purge = std::thread::spawn(move || -> anyhow::Result<Value> {
        let out = std::process::Command::new(deployment::bin("ringvault")?)
            .args(["--coordinator", &coordinator_url])
            .args(&admin)
            .args(["purge", "--keep-last", "1", "--grace-secs", "0", "--force"])
            .args(["--output", "json"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "purge failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    });
    wait_for_file(&paused, &purge);

    // Meanwhile on B: a backup of the same data, every blob already in the store.
    let z_view = runs::backup_done(&b, &["-k", &ks_x])?;
    let z = id_of(&z_view)?;
    // The SSTables are the same as X's: their blobs were in the store before B started, so B
    // recorded them without uploading (only snapshot metadata such as the snapshot's own
    // manifest differs).
    let files = |k: &str| -> u64 {
        z_view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n[k].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(
        files("files_uploaded") < files("files_total"),
        "B reused nothing: {z_view}"
    );
    let reused: BTreeSet<String> = blobs_of(&b, &z)
        .await?
        .intersection(&only_x)
        .cloned()
        .collect();
    assert!(!reused.is_empty(), "B reuses no blob only X names");

    // A resumes: re-checks, finds B's backup, keeps what it reuses.
    std::fs::remove_file(&pause)?;
    let report = purge
        .join()
        .map_err(|_| anyhow::anyhow!("purge thread panicked"))??;
    let expired: Vec<&str> = report["runs_deleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert!(expired.contains(&x.as_str()), "X did not expire: {report}");
    assert!(
        report["blobs_protected_late"].as_u64().unwrap_or(0) >= reused.len() as u64,
        "the re-check did not protect B's blobs: {report}"
    );
    let st = open_store(&b).await?;
    for h in &reused {
        let key = layout::blob(&ContentHash::parse(h)?);
        assert!(st.head(&key).await?.is_some(), "reused blob {h} deleted");
    }
    assert!(
        st.head(&layout::run_manifest(&RunId::parse(&x)?))
            .await?
            .is_none(),
        "X still committed"
    );
    let (code, v) = runs::verify(&b, &z, true)?;
    assert!(
        code == 0 && v["ok"] == true,
        "B's backup does not verify: {v}"
    );
    // No lease or sweep marker is left behind.
    assert!(st.list(layout::PURGES_PREFIX).await?.is_empty());
    assert!(
        st.head(&layout::run_lease(&RunId::parse(&z)?))
            .await?
            .is_none()
    );
    for ks in [&ks_x, &ks_y] {
        s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    }
    Ok(())
}
