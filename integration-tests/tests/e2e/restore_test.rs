//! Test restores (`verify RUN --restore-test`, schedules with `--restore-test`) on the real
//! test bed: the backup is loaded into scratch keyspaces through the real download, verify and
//! sstableloader path, and what reads back is compared with counts an independent client took
//! at backup time; the scratch keyspaces must be gone afterwards and live tables untouched.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::{bed, cluster, runs};
use scylla::client::session::Session;
use serde_json::Value;

/// A scratch file store, removed with the deployment that uses it.
fn store_url(tag: &str) -> String {
    ringvault_integration_tests::runs::file_store_url(&format!("restore-test-{tag}"))
        .expect("a path under the temp directory")
}

/// Keyspace `ks` with replication factor 1 (no partition on two nodes: the comparison is
/// exact) and the given tables, of the shape `cluster::write_rows` fills. Collections are
/// frozen: an INSERT into a non-frozen collection also writes a collection tombstone, and an
/// SSTable with tombstones is compared as a bound (except in tables named `*_tomb`).
async fn create_rf1(s: &Session, ks: &str, tables: &[&str]) -> anyhow::Result<()> {
    s.query_unpaged(
        format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"),
        (),
    )
    .await?;
    s.query_unpaged(
        format!("CREATE TYPE {ks}.address (street text, zip int)"),
        (),
    )
    .await?;
    for t in tables {
        let (set, map) = if t.ends_with("_tomb") {
            ("set<text>", "map<text, int>")
        } else {
            ("frozen<set<text>>", "frozen<map<text, int>>")
        };
        s.query_unpaged(
            format!(
                "CREATE TABLE {ks}.{t} (id bigint, seq int, name text, salary double, hired timestamp, active boolean, \
                 tags {set}, scores {map}, home frozen<address>, uid uuid, payload blob, PRIMARY KEY (id, seq)) \
                 WITH compaction = {{'class': 'SizeTieredCompactionStrategy', 'enabled': 'false'}}"
            ),
            (),
        )
        .await?;
    }
    s.await_schema_agreement().await?;
    Ok(())
}

/// (partitions, rows) of a table, counted by the independent client.
async fn client_counts(s: &Session, ks: &str, table: &str) -> anyhow::Result<(u64, u64)> {
    use futures::TryStreamExt;
    let mut st = scylla::statement::unprepared::Statement::new(format!(
        "SELECT DISTINCT id FROM {ks}.{table}"
    ));
    st.set_consistency(scylla::statement::Consistency::All);
    let mut ids = s.query_iter(st, ()).await?.rows_stream::<(i64,)>()?;
    let mut partitions = 0;
    while ids.try_next().await?.is_some() {
        partitions += 1;
    }
    let rows = cluster::all_rows(s, ks, table).await?.len() as u64;
    Ok((partitions, rows))
}

/// Keyspaces whose name starts with `prefix`.
async fn keyspaces_like(s: &Session, prefix: &str) -> anyhow::Result<Vec<String>> {
    let res = s
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
        .await?
        .into_rows_result()?;
    Ok(res
        .rows::<(String,)>()?
        .filter_map(Result::ok)
        .map(|(k,)| k)
        .filter(|k| k.starts_with(prefix))
        .collect())
}

/// `verify RUN --restore-test ARGS --output json`: (exit code, report).
fn restore_test(d: &Deployment, run: &str, args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let mut all = vec!["verify", run, "--restore-test", "--output", "json"];
    all.extend_from_slice(args);
    let out = d.cli(&all)?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "verify --restore-test: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code().unwrap_or(-1), v))
}

fn scratch_names(report: &Value) -> Vec<String> {
    report["scratch_keyspaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Staging directories of `backup` left on any node.
fn staging_left(d: &Deployment, backup: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for n in 1..=d.testbed.nodes()? {
        let data = PathBuf::from(d.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?);
        let dir = data
            .parent()
            .context("data dir parent")?
            .join("ringvault-staging")
            .join(backup);
        if dir.exists() {
            out.push(dir);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_test_of_two_keyspaces_matches_client_counts_and_leaves_nothing()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&store_url("pass"))?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let (a, b) = (
        cluster::unique_keyspace("rta"),
        cluster::unique_keyspace("rtb"),
    );
    create_rf1(&s, &a, &["employee", "department"]).await?;
    // Same table name in both keyspaces: each keyspace has its own scratch keyspace.
    create_rf1(&s, &b, &["employee", "ledger_tomb"]).await?;
    cluster::write_rows(&s, &a, "employee", 0, 800, 64).await?;
    cluster::write_rows(&s, &a, "department", 0, 120, 16).await?;
    cluster::write_rows(&s, &b, "employee", 0, 300, 32).await?;
    cluster::write_rows(&s, &b, "ledger_tomb", 0, 90, 8).await?;
    cluster::flush(&tb, &a)?;
    cluster::flush(&tb, &b)?;
    let tables = [
        (a.as_str(), "employee"),
        (a.as_str(), "department"),
        (b.as_str(), "employee"),
        (b.as_str(), "ledger_tomb"),
    ];
    // Independent counts and full contents at backup time (no writes from here on).
    let mut counts = Vec::new();
    let mut before = Vec::new();
    for (ks, t) in tables {
        counts.push(client_counts(&s, ks, t).await?);
        before.push(cluster::all_rows(&s, ks, t).await?);
    }
    let backup = runs::backup_done(&d, &["-k", &a, "-k", &b])?;
    let run = backup["id"].as_str().context("id")?.to_string();

    let (code, report) = restore_test(&d, &run, &["--sample", "5"])?;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["state"], "PASSED", "{report:#}");
    assert_eq!(report["scratch_dropped"], true, "{report:#}");
    let got = report["tables"].as_array().context("tables")?;
    assert_eq!(got.len(), 4, "{report:#}");
    for ((ks, t), (partitions, rows)) in tables.iter().zip(&counts) {
        let r = got
            .iter()
            .find(|r| r["keyspace"] == *ks && r["table"] == *t)
            .with_context(|| format!("{ks}.{t} not in the report"))?;
        assert_eq!(r["ok"], true, "{ks}.{t}: {r:#}");
        assert_eq!(r["loaded"], true, "{ks}.{t}: {r:#}");
        // RF 1, one flush per node: the recorded counts are exact; with collection
        // tombstones, the recorded sum is the upper bound.
        let comparison = if t.ends_with("_tomb") {
            "bound"
        } else {
            "exact"
        };
        assert_eq!(r["comparison"], comparison, "{ks}.{t}: {r:#}");
        assert_eq!(r["found_partitions"], *partitions, "{ks}.{t}: {r:#}");
        assert_eq!(r["expected_partitions_max"], *partitions, "{ks}.{t}: {r:#}");
        assert_eq!(r["found_rows"], *rows, "{ks}.{t}: {r:#}");
        assert_eq!(r["expected_rows_max"], *rows, "{ks}.{t}: {r:#}");
        assert_eq!(r["sampled_partitions"], 5, "{ks}.{t}: {r:#}");
    }
    let scratch = scratch_names(&report);
    assert_eq!(scratch.len(), 2, "{report:#}");
    assert!(
        keyspaces_like(&s, "rv_test_")
            .await?
            .iter()
            .all(|k| !scratch.contains(k)),
        "scratch keyspaces left"
    );
    assert!(staging_left(&d, &run)?.is_empty(), "staging left");
    // Live tables untouched: every row equal.
    for ((ks, t), rows) in tables.iter().zip(&before) {
        assert_eq!(
            &cluster::all_rows(&s, ks, t).await?,
            rows,
            "{ks}.{t} changed"
        );
    }
    // The result shows with the backup.
    let list = d.cli_json(&["backups", "list"])?;
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["id"] == run.as_str()))
        .context("backup not listed")?;
    assert_eq!(entry["last_restore_test"]["state"], "PASSED", "{entry:#}");
    let shown = d.cli_json(&["runs", "show", &run])?;
    assert_eq!(shown["last_restore_test"]["state"], "PASSED", "{shown:#}");
    assert!(shown["last_restore_test"]["finished_unix_ms"].as_i64() > Some(0));
    for ks in [&a, &b] {
        s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_blob_fails_the_test_naming_the_file_and_nothing_remains() -> anyhow::Result<()>
{
    let _bed = bed::exclusive().await;
    let url = store_url("corrupt");
    let d = Deployment::start(&url)?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let ks = cluster::unique_keyspace("rtc");
    create_rf1(&s, &ks, &["employee"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 400, 64).await?;
    cluster::flush(&tb, &ks)?;
    let backup = runs::backup_done(&d, &["-k", &ks])?;
    let run = backup["id"].as_str().context("id")?.to_string();
    // Flip the bytes of one Data.db blob (same size: only the hash tells).
    let st = runs::open_store(&d).await?;
    let manifests =
        runs::node_manifests(st.as_ref(), &ringvault_common::RunId::parse(&run)?).await?;
    let victim = manifests
        .iter()
        .flat_map(|m| m.files.iter())
        .find(|f| f.name.as_str().ends_with("-Data.db") && f.size > 0)
        .context("no Data.db in the backup")?
        .clone();
    let root = PathBuf::from(url.trim_start_matches("file://"));
    let hash = victim.hash.to_string();
    let blob = root.join("blobs").join(&hash[..2]).join(&hash);
    let mut bytes = std::fs::read(&blob).with_context(|| format!("{}", blob.display()))?;
    for b in bytes.iter_mut().take(64) {
        *b = !*b;
    }
    std::fs::write(&blob, &bytes)?;

    let (code, report) = restore_test(&d, &run, &[])?;
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["state"], "FAILED", "{report:#}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(victim.name.as_str()) && error.contains("does not match"),
        "the error does not name {}: {error}",
        victim.name
    );
    assert_eq!(report["scratch_dropped"], true, "{report:#}");
    let scratch = scratch_names(&report);
    assert!(!scratch.is_empty());
    assert!(
        keyspaces_like(&s, "rv_test_")
            .await?
            .iter()
            .all(|k| !scratch.contains(k)),
        "scratch keyspace left"
    );
    assert!(staging_left(&d, &run)?.is_empty(), "staging left");
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

async fn scrape(url: &str) -> anyhow::Result<String> {
    let resp = reqwest::get(url).await?;
    anyhow::ensure!(resp.status() == 200, "GET {url}: {}", resp.status());
    Ok(resp.text().await?)
}

fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_backup_with_the_option_is_test_restored_and_reported() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&store_url("schedule"))?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let ks = cluster::unique_keyspace("rts");
    create_rf1(&s, &ks, &["employee"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 200, 16).await?;
    cluster::flush(&tb, &ks)?;
    let (partitions, rows) = client_counts(&s, &ks, "employee").await?;
    d.cli_json(&[
        "schedule",
        "add",
        "tested",
        "--cron",
        "* * * * *",
        "-k",
        &ks,
        "--restore-test",
    ])?;
    // Next minute's backup, then its test restore.
    let deadline = Instant::now() + Duration::from_secs(300);
    let schedule = loop {
        let list = d.cli_json(&["schedule", "list"])?;
        let sched = list
            .as_array()
            .and_then(|l| l.iter().find(|x| x["id"] == "tested"))
            .cloned()
            .context("schedule not listed")?;
        let state = sched["last_restore_test"]["state"].as_str().unwrap_or("");
        if state == "PASSED" || state == "FAILED" {
            break sched;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no test restore after the scheduled backup: {sched:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    d.cli(&["schedule", "remove", "tested"])?;
    assert_eq!(schedule["restore_test"], true, "{schedule:#}");
    let last = &schedule["last_restore_test"];
    assert_eq!(last["state"], "PASSED", "{schedule:#}");
    let backup = last["backup_run_id"]
        .as_str()
        .context("backup id")?
        .to_string();
    let started = schedule["recent"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["outcome"] == "started"))
        .context("no started event")?;
    assert_eq!(started["run_id"], backup.as_str(), "{schedule:#}");
    let test = d.cli_json(&["runs", "show", last["test_run_id"].as_str().unwrap_or("")])?;
    let table = &test["restore_test"]["tables"][0];
    assert_eq!(
        (
            table["found_partitions"].as_u64(),
            table["found_rows"].as_u64()
        ),
        (Some(partitions), Some(rows)),
        "{test:#}"
    );
    let list = d.cli_json(&["backups", "list"])?;
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["id"] == backup.as_str()))
        .context("backup not listed")?;
    assert_eq!(entry["last_restore_test"]["state"], "PASSED", "{entry:#}");
    let cluster_name = entry["cluster_name"].as_str().unwrap_or_default();
    let page = scrape(&d.coordinator_metrics_url()).await?;
    let label = format!("{{cluster=\"{cluster_name}\"}}");
    let at = metric(
        &page,
        &format!("ringvault_last_restore_test_timestamp_seconds{label}"),
    )
    .context("no ringvault_last_restore_test_timestamp_seconds")?;
    assert_eq!(
        (at * 1000.0).round() as i64,
        last["finished_unix_ms"].as_i64().unwrap_or(0),
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            &format!("ringvault_last_restore_test_success{label}")
        ),
        Some(1.0),
        "{page}"
    );
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_mid_test_drops_the_scratch_and_records_the_failure()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let pause = std::env::temp_dir().join(format!("rv-rt-pause-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&pause, b"hold")?;
    // Inherited by the coordinator this test starts (and only by it).
    unsafe { std::env::set_var(ringvault_coordinator::restore_test::PAUSE_ENV, &pause) };
    let started = Deployment::start(&store_url("crash"));
    unsafe { std::env::remove_var(ringvault_coordinator::restore_test::PAUSE_ENV) };
    let mut d = started?;
    let tb = d.testbed.clone();
    let s = cluster::session(&tb).await?;
    let ks = cluster::unique_keyspace("rtk");
    create_rf1(&s, &ks, &["employee"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 200, 16).await?;
    cluster::flush(&tb, &ks)?;
    let backup = runs::backup_done(&d, &["-k", &ks])?;
    let run = backup["id"].as_str().context("id")?.to_string();
    // The CLI waits for the report; it loses its coordinator below.
    let mut cli =
        std::process::Command::new(ringvault_integration_tests::deployment::bin("ringvault")?)
            .arg("--coordinator")
            .arg(&d.coordinator_url)
            .args(d.certs().flags("admin"))
            .args(["verify", run.as_str(), "--restore-test"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
    let mut flag = pause.clone().into_os_string();
    flag.push(".paused");
    let flag = PathBuf::from(flag);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !flag.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the test restore never loaded its data"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scratch = keyspaces_like(&s, "rv_test_").await?;
    let runs_list = d.cli_json(&["runs", "list"])?;
    let test = runs_list
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|r| r["kind"] == "restore_test" && r["source_run_id"] == run.as_str())
        })
        .context("no restore_test run")?["id"]
        .as_str()
        .context("test id")?
        .to_string();
    let mine: Vec<String> = scratch
        .into_iter()
        .filter(|k| {
            let hex: String = test.chars().filter(char::is_ascii_hexdigit).collect();
            k.contains(&hex[hex.len() - 12..])
        })
        .collect();
    assert!(
        !mine.is_empty(),
        "the scratch keyspace does not exist while paused"
    );
    d.kill_coordinator()?;
    std::fs::remove_file(&pause)?;
    let _ = std::fs::remove_file(&flag);
    let _ = cli.kill();
    let _ = cli.wait();
    d.start_coordinator()?;
    // Recorded failed with the reason, and the scratch keyspace dropped once workers are back.
    let deadline = Instant::now() + Duration::from_secs(120);
    let shown = loop {
        let v = d.cli_json(&["runs", "show", &test])?;
        let gone = keyspaces_like(&s, "rv_test_")
            .await?
            .iter()
            .all(|k| !mine.contains(k));
        if v["restore_test"]["scratch_dropped"] == true && gone {
            break v;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "scratch keyspace {mine:?} not dropped after the restart: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(shown["state"], "FAILED", "{shown:#}");
    assert_eq!(shown["restore_test"]["state"], "FAILED", "{shown:#}");
    let error = shown["restore_test"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("coordinator stopped during the test restore") && error.contains("dropped"),
        "{error}"
    );
    assert!(
        shown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("coordinator stopped"),
        "{shown:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !staging_left(&d, &run)?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "staging left after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}
