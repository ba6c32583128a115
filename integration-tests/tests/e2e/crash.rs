//! Crash survival on the real test bed: a worker `kill -9`ed at five different points of a
//! backup (and restarted), and the coordinator `kill -9`ed at five others (and restarted).
//! Every run must end DONE with a backup that passes `verify --deep`, the restarted worker
//! must only upload what was missing, and no snapshot may remain on any node.
use std::time::Duration;

use anyhow::Context;
use ringvault_coordinator::test_hooks::CLEANUP_PAUSE_ENV;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::guards::{EnvVars, Keyspaces};
use ringvault_integration_tests::runs::{self, node_number};
use ringvault_integration_tests::testbed::Testbed;
use ringvault_integration_tests::{bed, cluster};
use serde_json::Value;

/// A keyspace whose SSTables are many mid-sized files (eight flushes of ~400 KB per node), so
/// a throttled upload lasts ~10 s per node and its progress moves in small steps.
async fn chunked_keyspace(tb: &Testbed, prefix: &str) -> anyhow::Result<(String, Keyspaces)> {
    let ks = cluster::unique_keyspace(prefix);
    let guard = Keyspaces::new(tb, &ks);
    let s = cluster::session(tb).await?;
    cluster::create_keyspace(&s, tb, &ks, &["big"]).await?;
    for chunk in 0..8 {
        cluster::write_rows(&s, &ks, "big", chunk * 50, 50, 8192).await?;
        cluster::flush(tb, &ks)?;
    }
    Ok((ks, guard))
}

/// Where to strike.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// A node is taking its snapshot.
    Snapshotting,
    /// Node 2's upload has started (some bytes, under 40%).
    UploadStart,
    /// Node 2's upload is past half (50–90%).
    UploadMiddle,
    /// One node has finished uploading while another still uploads (one node at a time).
    AfterOneNodeUploaded,
    /// The run is clearing its snapshots (held there by the coordinator's test hook).
    Cleanup,
}

impl Point {
    fn nodes_at_once(self) -> Option<&'static str> {
        matches!(self, Point::AfterOneNodeUploaded).then_some("1")
    }

    /// The node to strike, once the run is at this point.
    fn victim(self, v: &Value) -> Option<usize> {
        let nodes = v["nodes"].as_array()?;
        let by_state = |state: &str| {
            nodes
                .iter()
                .find(|n| n["state"] == state)
                .and_then(|n| node_number(n["address"].as_str()?))
        };
        let node2 = nodes
            .iter()
            .find(|n| n["address"].as_str().and_then(node_number) == Some(2))?;
        let share = |n: &Value| {
            let total = n["bytes_total"].as_u64().unwrap_or(0);
            if total == 0 {
                0.0
            } else {
                n["bytes_done"].as_u64().unwrap_or(0) as f64 / total as f64
            }
        };
        match self {
            Point::Snapshotting if v["stage"] == "snapshot" => {
                if node2["state"] == "SNAPSHOTTING" {
                    Some(2)
                } else {
                    by_state("SNAPSHOTTING")
                }
            }
            Point::UploadStart if v["stage"] == "upload" => {
                let s = share(node2);
                (s > 0.0 && s < 0.4).then_some(2)
            }
            Point::UploadMiddle if v["stage"] == "upload" => {
                let s = share(node2);
                (0.5..0.9).contains(&s).then_some(2)
            }
            Point::AfterOneNodeUploaded if v["stage"] == "upload" => {
                by_state("UPLOADING")?;
                by_state("UPLOADED")
            }
            Point::Cleanup if v["stage"] == "cleanup" => nodes
                .iter()
                .find(|n| n["snapshot"] == "taken")
                .and_then(|n| node_number(n["address"].as_str()?)),
            _ => None,
        }
    }
}

/// What gets killed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Worker,
    Coordinator,
}

/// Runs one backup, kills at `point`, restarts, and checks the outcome.
async fn strike(tb: &Testbed, ks: &str, target: Target, point: Point) -> anyhow::Result<String> {
    let mut args = vec!["--upload-bandwidth", "300000"];
    if let Some(n) = point.nodes_at_once() {
        args.extend(["--nodes-at-once", n]);
    }
    // The cleanup stage lasts a few tens of milliseconds: the coordinator's test hook holds it
    // (before any snapshot is cleared) until the kill and restart are done. The hook reaches
    // the coordinator through this process's environment while it starts (the bed is held
    // exclusively); a restarted coordinator runs without it.
    let hook_dir = tempfile::tempdir()?;
    let pause = hook_dir.path().join("cleanup");
    let mut d = if matches!(point, Point::Cleanup) {
        std::fs::write(&pause, b"hold")?;
        let env = EnvVars::save(&[CLEANUP_PAUSE_ENV]);
        // SAFETY: the bed is held exclusively; no other thread reads the environment now.
        unsafe { std::env::set_var(CLEANUP_PAUSE_ENV, &pause) };
        let d = Deployment::start_with(&runs::file_store_url("crash")?, &args);
        drop(env);
        d?
    } else {
        Deployment::start_with(&runs::file_store_url("crash")?, &args)?
    };
    let started = d.cli_json(&["backup", "-k", ks])?;
    let run = started["id"].as_str().context("id")?.to_string();
    let tag = started["tag"].as_str().context("tag")?.to_string();
    let (victim, at) = runs::wait_until(&d, &run, &format!("{point:?}"), |v| point.victim(v))?;
    match target {
        Target::Worker => {
            d.kill_worker(victim)?;
            // Down for a second: the scenario's outage, not a wait for a condition.
            std::thread::sleep(Duration::from_secs(1));
            d.start_worker(victim)?;
        }
        Target::Coordinator => {
            d.kill_coordinator()?;
            std::thread::sleep(Duration::from_millis(500));
            d.start_coordinator()?;
        }
    }
    if pause.exists() {
        std::fs::remove_file(&pause)?;
    }
    let v = runs::wait_for_end(&d, &run, Duration::from_secs(180))?;
    let ctx = format!(
        "{target:?} killed at {point:?} (stage {}, victim node {victim})",
        at["stage"]
    );
    anyhow::ensure!(
        v["state"] == "DONE",
        "{ctx}: run ended {} ({}), want DONE",
        v["state"],
        v["error"]
    );
    // Only what was missing went up again: no file counted as uploaded twice.
    for n in v["nodes"].as_array().context("nodes")? {
        let (up, total) = (
            n["files_uploaded"].as_u64().unwrap_or(0),
            n["files_total"].as_u64().unwrap_or(0),
        );
        anyhow::ensure!(
            up <= total && total > 0,
            "{ctx}: node {} uploaded {up} files of {total}",
            n["address"]
        );
    }
    if target == Target::Worker && !matches!(point, Point::AfterOneNodeUploaded | Point::Cleanup) {
        let node = v["nodes"]
            .as_array()
            .and_then(|ns| {
                ns.iter()
                    .find(|n| n["address"].as_str().and_then(node_number) == Some(victim))
            })
            .context("victim node")?;
        anyhow::ensure!(
            node["retries"].as_u64().unwrap_or(0) >= 1,
            "{ctx}: the victim's work was never re-issued: {node}"
        );
    }
    let (code, report) = runs::verify(&d, &run, true)?;
    anyhow::ensure!(
        code == 0 && report["ok"] == true,
        "{ctx}: verify --deep failed ({code}): {report}"
    );
    for n in 1..=tb.nodes()? {
        let left = cluster::snapshot_dirs(tb, n, &tag)?;
        anyhow::ensure!(left.is_empty(), "{ctx}: node {n} keeps {left:?}");
    }
    let retries: Vec<u64> = v["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| n["retries"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "{ctx}: DONE in {:.1}s, retries per node {retries:?}, deep verify of {} blobs OK",
        (v["finished_unix_ms"].as_i64().unwrap_or(0) - v["created_unix_ms"].as_i64().unwrap_or(0))
            as f64
            / 1000.0,
        report["blobs"]
    );
    Ok(tag)
}

async fn five_points(target: Target, prefix: &str) -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    let (ks, _keyspaces) = chunked_keyspace(&tb, prefix).await?;
    let mut tags = Vec::new();
    let mut failures = Vec::new();
    for point in [
        Point::Snapshotting,
        Point::UploadStart,
        Point::UploadMiddle,
        Point::AfterOneNodeUploaded,
        Point::Cleanup,
    ] {
        match strike(&tb, &ks, target, point).await {
            Ok(tag) => tags.push(tag),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    // nodetool agrees no snapshot of these runs is left anywhere.
    for n in 1..=tb.nodes()? {
        let listed = tb.nodetool(n, &["listsnapshots"])?;
        for tag in &tags {
            anyhow::ensure!(
                !listed.contains(tag.as_str()),
                "node {n} lists snapshot {tag}"
            );
        }
    }
    let s = cluster::session(&tb).await?;
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_at_five_points_and_restarted_still_completes_the_backup()
-> anyhow::Result<()> {
    five_points(Target::Worker, "crashw").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_at_five_other_points_and_restarted_resumes_the_backup()
-> anyhow::Result<()> {
    five_points(Target::Coordinator, "crashc").await
}
