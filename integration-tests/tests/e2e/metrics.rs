//! The Prometheus `/metrics` pages of the real binaries: a coordinator alone (no Cassandra
//! needed) serves the text format with every family, and after two backups on the test bed
//! both the workers' in-process counters and the coordinator's SQLite-derived ones show the
//! second run's files as skipped (already in the store).
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ringvault_integration_tests::deployment::{Deployment, bin, free_port, tail};
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::runs::file_store_url;
use ringvault_integration_tests::{bed, cluster};
use serde_json::Value;

/// GETs `url`; returns (status, content type, body).
async fn get(url: &str) -> anyhow::Result<(u16, String, String)> {
    let resp = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .text()
        .await
        .with_context(|| format!("body of {url}"))?;
    Ok((status, content_type, body))
}

/// The page at `url`, checked to be a 200 in the Prometheus text format.
async fn scrape(url: &str) -> anyhow::Result<String> {
    let (status, content_type, body) = get(url).await?;
    anyhow::ensure!(status == 200, "GET {url}: {status}\n{body}");
    anyhow::ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "GET {url}: content type {content_type:?}"
    );
    Ok(body)
}

/// The value of one series (`name` or `name{labels}` exactly as rendered) on `page`.
fn value(page: &str, series: &str) -> anyhow::Result<f64> {
    let line = page
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .with_context(|| format!("no {series} in\n{page}"))?;
    line.parse()
        .with_context(|| format!("{series}: value {line:?}"))
}

/// A label value escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A coordinator process killed on drop.
struct Coordinator(Child);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_serves_metrics_without_cassandra() -> anyhow::Result<()> {
    let _bed = bed::shared().await;
    let dir = tempfile::Builder::new().prefix("rv-metrics-").tempdir()?;
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store)?;
    let log = dir.path().join("coordinator.log");
    let grpc = free_port("127.0.0.1")?;
    let metrics = free_port("127.0.0.1")?;
    let mut c = Coordinator(
        Command::new(bin("ringvault-coordinator")?)
            .arg("--listen")
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--db")
            .arg(dir.path().join("coordinator.db"))
            .arg("--store")
            .arg(format!("file://{}", store.display()))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics}"))
            .arg("--insecure-loopback")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ringvault-coordinator")?,
    );
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        if let Ok(page) = scrape(&url).await {
            break page;
        }
        if let Some(status) = c.0.try_wait()? {
            anyhow::bail!("coordinator exited ({status}): {}", tail(&log));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no metrics on {url}: {}",
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value(&page, "ringvault_coordinator_up")?, 1.0);
    assert!(
        page.lines()
            .any(|l| l.starts_with("ringvault_build_info{version=\"") && l.ends_with("} 1")),
        "{page}"
    );
    for kind in ["backup", "restore"] {
        for state in ["RUNNING", "DONE", "FAILED", "CANCELLED"] {
            assert_eq!(
                value(
                    &page,
                    &format!("ringvault_runs{{kind=\"{kind}\",state=\"{state}\"}}")
                )?,
                0.0
            );
        }
        assert_eq!(
            value(
                &page,
                &format!("ringvault_run_errors_total{{kind=\"{kind}\"}}")
            )?,
            0.0
        );
    }
    for family in [
        "# TYPE ringvault_coordinator_up gauge",
        "# TYPE ringvault_runs gauge",
        "# TYPE ringvault_run_errors_total counter",
        "# TYPE ringvault_workers gauge",
        "# HELP ringvault_workers ",
        "# TYPE ringvault_backup_files_uploaded_total counter",
        "# TYPE ringvault_backup_bytes_uploaded_total counter",
        "# TYPE ringvault_backup_files_skipped_total counter",
        "# TYPE ringvault_backup_bytes_skipped_total counter",
        "# TYPE ringvault_last_successful_backup_timestamp_seconds gauge",
    ] {
        assert!(
            page.lines().any(|l| l.starts_with(family)),
            "no {family:?} in\n{page}"
        );
    }
    let (status, _, _) = get(&format!("http://127.0.0.1:{metrics}/other")).await?;
    assert_eq!(status, 404);
    Ok(())
}

fn backup(d: &Deployment, ks: &str) -> anyhow::Result<Value> {
    let v = d.cli_json(&["backup", "-k", ks, "--wait"])?;
    anyhow::ensure!(
        v["state"] == "DONE",
        "backup of {ks} ended {}: {}",
        v["state"],
        v["error"]
    );
    Ok(v)
}

/// The workers' counters of one name, summed over every worker.
async fn workers_sum(d: &Deployment, nodes: usize, series: &str) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for n in 1..=nodes {
        sum += value(&scrape(&d.worker_metrics_url(n)).await?, series)?;
    }
    Ok(sum)
}

fn u64_of(v: &Value, key: &str) -> anyhow::Result<u64> {
    v[key].as_u64().with_context(|| format!("{key} in {v}"))
}

fn files_uploaded(v: &Value) -> anyhow::Result<u64> {
    v["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| u64_of(n, "files_uploaded"))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_backup_count_uploaded_and_skipped_files() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("metrics")?)?;
    let tb = d.testbed.clone();
    let nodes = tb.nodes()?;
    let ks = cluster::unique_keyspace("metrics");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["employee"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 1000, 200).await?;
    cluster::flush(&tb, &ks)?;

    let v1 = backup(&d, &ks)?;
    let up1 = workers_sum(&d, nodes, "ringvault_worker_files_uploaded_total").await?;
    let skipped1 = workers_sum(&d, nodes, "ringvault_worker_files_skipped_total").await?;
    assert_eq!(up1, files_uploaded(&v1)? as f64);
    assert!(up1 > 0.0, "the first backup uploaded nothing");

    // The same, unchanged SSTables again: only the snapshots' manifest.json may be new.
    let v2 = backup(&d, &ks)?;
    let files2 = u64_of(&v2, "files_total")?;
    let uploaded2 = files_uploaded(&v2)?;
    let up2 = workers_sum(&d, nodes, "ringvault_worker_files_uploaded_total").await? - up1;
    let skipped2 = workers_sum(&d, nodes, "ringvault_worker_files_skipped_total").await? - skipped1;
    assert_eq!(up2, uploaded2 as f64);
    assert_eq!(skipped2, (files2 - uploaded2) as f64);
    assert!(
        skipped2 >= (files2 - nodes as u64) as f64 && skipped2 > 0.0,
        "second run skipped {skipped2} of {files2} files"
    );
    for n in 1..=nodes {
        let page = scrape(&d.worker_metrics_url(n)).await?;
        assert_eq!(value(&page, "ringvault_worker_up")?, 1.0);
        assert_eq!(value(&page, "ringvault_worker_snapshots_taken_total")?, 2.0);
        assert_eq!(
            value(&page, "ringvault_worker_snapshots_cleared_total")?,
            2.0
        );
        assert_eq!(value(&page, "ringvault_worker_uploads_in_progress")?, 0.0);
        assert!(value(&page, "ringvault_worker_bytes_read_total")? > 0.0);
        assert!(value(&page, "ringvault_worker_bytes_skipped_total")? > 0.0);
        for op in ["snapshot", "clear_snapshot", "upload"] {
            assert_eq!(
                value(
                    &page,
                    &format!("ringvault_worker_errors_total{{op=\"{op}\"}}")
                )?,
                0.0
            );
        }
    }

    // The coordinator's counters come from its database: both runs, every node.
    let cluster = escape(v2["cluster_name"].as_str().context("cluster_name")?);
    let page = scrape(&d.coordinator_metrics_url()).await?;
    let c = |name: &str| format!("{name}{{cluster=\"{cluster}\"}}");
    let worker_files_skipped =
        workers_sum(&d, nodes, "ringvault_worker_files_skipped_total").await?;
    let worker_bytes_skipped =
        workers_sum(&d, nodes, "ringvault_worker_bytes_skipped_total").await?;
    let worker_files_up = workers_sum(&d, nodes, "ringvault_worker_files_uploaded_total").await?;
    let worker_bytes_up = workers_sum(&d, nodes, "ringvault_worker_bytes_uploaded_total").await?;
    assert_eq!(
        value(&page, &c("ringvault_backup_files_skipped_total"))?,
        worker_files_skipped
    );
    assert_eq!(
        value(&page, &c("ringvault_backup_bytes_skipped_total"))?,
        worker_bytes_skipped
    );
    assert_eq!(
        value(&page, &c("ringvault_backup_files_uploaded_total"))?,
        worker_files_up
    );
    assert_eq!(
        value(&page, &c("ringvault_backup_bytes_uploaded_total"))?,
        worker_bytes_up
    );
    let finished_ms = u64_of(&v2, "finished_unix_ms")?;
    let last = value(
        &page,
        &c("ringvault_last_successful_backup_timestamp_seconds"),
    )?;
    assert!(
        (last - finished_ms as f64 / 1000.0).abs() < 0.002,
        "last successful backup at {last}, run 2 finished at {finished_ms} ms"
    );
    assert_eq!(
        value(&page, "ringvault_runs{kind=\"backup\",state=\"DONE\"}")?,
        2.0
    );
    assert_eq!(
        value(&page, "ringvault_run_errors_total{kind=\"backup\"}")?,
        0.0
    );
    assert_eq!(
        value(
            &page,
            &format!("ringvault_workers{{cluster=\"{cluster}\",state=\"up\"}}")
        )?,
        nodes as f64
    );
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}
