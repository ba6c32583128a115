//! Operations on the real test bed: purge over five backups with overlapping blobs (counted
//! here from the manifests, independently of the coordinator), verify finding corrupt and
//! missing blobs, and a one-minute cron schedule with retention and a missed window.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use ringvault_common::RunId;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::runs::{self, id_of, node_manifests, now_ms, open_store};
use ringvault_integration_tests::testbed::Testbed;
use ringvault_integration_tests::{bed, cluster};
use serde_json::Value;

/// Every key in the store, with its size.
async fn listing(d: &Deployment) -> anyhow::Result<BTreeMap<String, u64>> {
    let st = open_store(d).await?;
    Ok(st
        .list("")
        .await?
        .into_iter()
        .map(|o| (o.key.to_string(), o.size))
        .collect())
}

/// The blob hashes a run refers to, and whether one is named by two nodes.
async fn run_blobs(d: &Deployment, run: &str) -> anyhow::Result<(BTreeSet<String>, bool)> {
    let st = open_store(d).await?;
    let mut all = BTreeSet::new();
    let mut per_node: Vec<BTreeSet<String>> = Vec::new();
    for m in node_manifests(st.as_ref(), &RunId::parse(run)?).await? {
        let set: BTreeSet<String> = m.files.iter().map(|f| f.hash.to_string()).collect();
        all.extend(set.iter().cloned());
        per_node.push(set);
    }
    let shared_across_nodes = per_node
        .iter()
        .enumerate()
        .any(|(i, a)| per_node[i + 1..].iter().any(|b| !a.is_disjoint(b)));
    Ok((all, shared_across_nodes))
}

fn purge(d: &Deployment, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["purge"];
    all.extend_from_slice(args);
    d.cli_json(&all)
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_across_five_overlapping_backups_deletes_exactly_the_unreferenced_blobs()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    let d = Deployment::start(&runs::s3_store_url(&tb)?)?;
    let ks = cluster::unique_keyspace("purge");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["t"]).await?;
    // Five backups: three that add SSTables (each includes the earlier ones), then a major
    // compaction replaces them all, then one more flush.
    let mut ids = Vec::new();
    for i in 0..5i64 {
        if i == 3 {
            for n in 1..=tb.nodes()? {
                tb.nodetool(n, &["compact", &ks])?;
            }
        } else {
            cluster::write_rows(&s, &ks, "t", i * 100, 100, 2048).await?;
            cluster::flush(&tb, &ks)?;
        }
        ids.push(id_of(&runs::backup_done(&d, &["-k", &ks])?)?);
    }
    let mut refs = Vec::new();
    let mut shared_across_nodes = false;
    for id in &ids {
        let (set, shared) = run_blobs(&d, id).await?;
        shared_across_nodes |= shared;
        refs.push(set);
    }
    let kept: BTreeSet<String> = refs[3].union(&refs[4]).cloned().collect();
    let expired: BTreeSet<String> = refs[..3].iter().flatten().cloned().collect();
    // The test only means something if blobs overlap across runs and nodes.
    assert!(shared_across_nodes, "no blob shared by two nodes");
    assert!(!refs[0].is_disjoint(&refs[1]), "runs 1 and 2 share no blob");
    assert!(
        !expired.is_disjoint(&kept),
        "no blob shared by an expiring and a kept run"
    );
    // Leftovers: an unreferenced blob, a staging object and a run folder never committed.
    let st = open_store(&d).await?;
    let orphan = ContentHash::of(b"uploaded by a backup that failed");
    st.put(
        &layout::blob(&orphan),
        Bytes::from_static(b"uploaded by a backup that failed"),
    )
    .await?;
    st.put(
        &layout::staging(&RunId::new(), &uuid::Uuid::new_v4().to_string()),
        Bytes::from_static(b"x"),
    )
    .await?;
    // Not a key ringvault writes: never deleted, however old.
    let foreign = layout::ObjectKey::from_listing("tmp/foreign.txt").context("key")?;
    st.put(&foreign, Bytes::from_static(b"someone else's file"))
        .await?;
    st.put(
        &layout::run_schema(&RunId::new()),
        Bytes::from_static(b"-- never committed"),
    )
    .await?;
    let mut doomed: BTreeSet<String> = expired.difference(&kept).cloned().collect();
    doomed.insert(orphan.to_string());
    let before = listing(&d).await?;
    let stored_blobs: BTreeSet<String> = before
        .keys()
        .filter_map(|k| k.strip_prefix("blobs/"))
        .filter_map(|k| k.split('/').nth(1))
        .map(str::to_string)
        .collect();
    assert_eq!(
        stored_blobs
            .difference(&kept)
            .cloned()
            .collect::<BTreeSet<_>>(),
        doomed,
        "the store holds blobs this test does not account for"
    );

    // A grace period below the minimum without --force: refused, nothing deleted.
    let refused = d.cli(&["purge", "--keep-last", "2", "--grace-secs", "0"])?;
    assert!(
        !refused.status.success(),
        "purge --grace-secs 0 ran without --force"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("--force"), "{why}");
    assert_eq!(
        listing(&d).await?,
        before,
        "a refused purge changed the store"
    );

    // Dry run: the report, and nothing deleted.
    let dry = purge(
        &d,
        &[
            "--dry-run",
            "--keep-last",
            "2",
            "--grace-secs",
            "0",
            "--force",
        ],
    )?;
    let expired_ids: BTreeSet<String> = ids[..3].iter().cloned().collect();
    let reported = |v: &Value| -> BTreeSet<String> {
        v["runs_deleted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["run_id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(reported(&dry), expired_ids, "{dry}");
    assert_eq!(dry["blobs_deleted"], doomed.len() as u64, "{dry}");
    assert_eq!(dry["leftovers_deleted"], 2, "{dry}");
    assert_eq!(listing(&d).await?, before, "a dry run changed the store");

    let real = purge(&d, &["--keep-last", "2", "--grace-secs", "0", "--force"])?;
    assert_eq!(real["foreign_kept"], 1, "{real}");
    assert_eq!(reported(&real), expired_ids, "{real}");
    assert_eq!(real["blobs_deleted"], doomed.len() as u64, "{real}");
    assert_eq!(real["blobs_referenced"], kept.len() as u64, "{real}");
    let reclaimed: u64 = before
        .iter()
        .filter(|(k, _)| doomed.iter().any(|h| k.ends_with(h.as_str())))
        .map(|(_, s)| *s)
        .sum();
    assert_eq!(real["bytes_deleted"], reclaimed, "{real}");
    let after = listing(&d).await?;
    for k in before.keys() {
        let gone = !after.contains_key(k);
        let should_go = doomed.iter().any(|h| k.ends_with(h.as_str()))
            || ids[..3]
                .iter()
                .any(|id| k.starts_with(&format!("runs/{id}/")))
            || (k.starts_with("tmp/") && k != "tmp/foreign.txt")
            || (k.starts_with("runs/") && !ids.iter().any(|id| k.contains(id.as_str())));
        assert_eq!(gone, should_go, "{k}: deleted={gone}, expected {should_go}");
    }
    for id in &ids[3..] {
        let (code, v) = runs::verify(&d, id, true)?;
        assert!(
            code == 0 && v["ok"] == true,
            "kept run {id} does not verify: {v}"
        );
    }
    let listed: Vec<String> = d
        .cli_json(&["backups", "list"])?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, vec![ids[4].clone(), ids[3].clone()]);
    let (code, v) = runs::verify(&d, &ids[0], false).unwrap_or((-1, Value::Null));
    assert_ne!(code, 0, "a purged backup still verifies: {v}");

    // Again: nothing left to delete.
    let again = purge(&d, &["--keep-last", "2", "--grace-secs", "0", "--force"])?;
    assert_eq!(again["blobs_deleted"], 0, "{again}");
    assert_eq!(again["objects_deleted"], 0, "{again}");

    // With the default grace period, run 4 expires but its fresh blobs stay.
    let young = purge(&d, &["--keep-last", "1"])?;
    assert_eq!(
        reported(&young),
        BTreeSet::from([ids[3].clone()]),
        "{young}"
    );
    assert_eq!(young["blobs_deleted"], 0, "{young}");
    assert!(
        young["blobs_too_young"].as_u64().unwrap_or(0) > 0,
        "{young}"
    );
    let (code, v) = runs::verify(&d, &ids[4], true)?;
    assert!(code == 0 && v["ok"] == true, "{v}");
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_corrupt_and_missing_blobs_by_node_and_table() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    let url = runs::file_store_url("verify")?;
    let root = std::path::PathBuf::from(url.trim_start_matches("file://"));
    let d = Deployment::start(&url)?;
    let ks = cluster::unique_keyspace("verify");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["a", "b"]).await?;
    cluster::write_rows(&s, &ks, "a", 0, 200, 1024).await?;
    cluster::write_rows(&s, &ks, "b", 0, 200, 1024).await?;
    cluster::flush(&tb, &ks)?;
    let run = id_of(&runs::backup_done(&d, &["-k", &ks])?)?;

    let (code, v) = runs::verify(&d, &run, false)?;
    assert!(code == 0 && v["ok"] == true, "{v}");
    let tables = v["tables"].as_array().context("tables")?;
    assert_eq!(
        tables.len(),
        2 * tb.nodes()?,
        "one row per node and table: {v}"
    );
    let (code, deep) = runs::verify(&d, &run, true)?;
    assert!(code == 0 && deep["ok"] == true, "{deep}");
    assert!(deep["bytes_read"].as_u64().unwrap_or(0) > 0, "{deep}");

    // Corrupt one Data.db of node 2 (same size) and remove one file of node 3's table b.
    let st = open_store(&d).await?;
    let manifests = node_manifests(st.as_ref(), &RunId::parse(&run)?).await?;
    let on = |n: usize| {
        manifests
            .iter()
            .find(|m| runs::node_number(&m.node.address) == Some(n))
            .context("node manifest")
    };
    let corrupt = on(2)?
        .files
        .iter()
        .find(|f| f.table.as_str() == "a" && f.name.as_str().ends_with("-Data.db"))
        .context("a Data.db")?
        .clone();
    let gone = on(3)?
        .files
        .iter()
        .find(|f| f.table.as_str() == "b" && f.name.as_str().ends_with("-Data.db"))
        .context("a Data.db")?
        .clone();
    let path = |h: &ContentHash| root.join(layout::blob(h).as_str());
    let mut bytes = std::fs::read(path(&corrupt.hash))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path(&corrupt.hash), &bytes)?;
    std::fs::remove_file(path(&gone.hash))?;

    // Replicas flush identical SSTables, so one blob may back files of several nodes: every
    // file whose blob is wrong is named, with its node and table.
    let files_of = |h: &ContentHash| -> BTreeSet<(String, String, String)> {
        manifests
            .iter()
            .flat_map(|m| {
                m.files.iter().filter(|f| &f.hash == h).map(|f| {
                    (
                        m.node.address.clone(),
                        f.table.to_string(),
                        f.name.to_string(),
                    )
                })
            })
            .collect()
    };
    let reported = |v: &Value, kind: &str| -> BTreeSet<(String, String, String)> {
        v["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["kind"] == kind && p["keyspace"] == ks.as_str())
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (s("address"), s("table"), s("name"))
            })
            .collect()
    };
    let (code, v) = runs::verify(&d, &run, false)?;
    assert_eq!(code, 2, "{v}");
    assert_eq!(reported(&v, "missing"), files_of(&gone.hash), "{v}");
    assert!(
        reported(&v, "hash").is_empty(),
        "a same-size corruption is only seen by --deep: {v}"
    );
    let (code, v) = runs::verify(&d, &run, true)?;
    assert_eq!(code, 2, "{v}");
    assert_eq!(reported(&v, "missing"), files_of(&gone.hash), "{v}");
    assert_eq!(reported(&v, "hash"), files_of(&corrupt.hash), "{v}");
    let all = v["problems"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(
        all,
        files_of(&gone.hash).len() + files_of(&corrupt.hash).len(),
        "{v}"
    );
    let bad_tables: BTreeSet<(String, String)> = files_of(&gone.hash)
        .into_iter()
        .chain(files_of(&corrupt.hash))
        .map(|(a, t, _)| (a, t))
        .collect();
    let flagged: BTreeSet<(String, String)> = v["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["problems"].as_u64().unwrap_or(0) > 0)
        .map(|t| {
            (
                t["address"].as_str().unwrap_or_default().to_string(),
                t["table"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(flagged, bad_tables, "{v}");

    // Bad input: clear errors, exit 4 for an unknown run, 3 for a malformed id.
    for (arg, needle, code) in [
        (RunId::new().to_string(), "not found", 4),
        ("../etc".to_string(), "run id", 3),
    ] {
        let out = d.cli(&["verify", &arg])?;
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{arg}: {text}");
        assert!(text.contains(needle), "{arg}: {text}");
    }
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

/// The runs started by schedule `id`, oldest first.
fn scheduled_runs(d: &Deployment, id: &str) -> Vec<Value> {
    let mut v: Vec<Value> = d
        .cli_json(&["runs", "list"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["schedule_id"] == id)
        .collect();
    v.sort_by_key(|r| r["created_unix_ms"].as_i64().unwrap_or(0));
    v
}

fn wait_scheduled(
    d: &Deployment,
    id: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    runs::poll(
        &format!("{count} runs of schedule {id}"),
        limit,
        Duration::from_millis(500),
        || {
            let v = scheduled_runs(d, id);
            Ok((v.len() >= count).then_some(v))
        },
    )
}

fn backups(d: &Deployment) -> Vec<String> {
    d.cli_json(&["backups", "list"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect()
}

fn wait_backups(d: &Deployment, want: &[String]) -> anyhow::Result<()> {
    runs::poll(
        &format!("backups {want:?}"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || Ok((backups(d) == want).then_some(())),
    )
    .with_context(|| format!("backups now {:?}", backups(d)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_minute_schedule_backs_up_on_time_trims_and_runs_a_missed_window_once()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    let mut d = Deployment::start(&runs::file_store_url("sched")?)?;
    let ks = cluster::unique_keyspace("sched");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["t"]).await?;
    cluster::write_rows(&s, &ks, "t", 0, 50, 512).await?;
    cluster::flush(&tb, &ks)?;

    // Bad input changes nothing.
    for (args, needle) in [
        (
            vec!["schedule", "add", "x", "--cron", "61 * * * *"],
            "minute",
        ),
        (
            vec!["schedule", "add", "x", "--cron", "* * * *"],
            "5 fields",
        ),
        (
            vec!["schedule", "add", "Bad Id", "--cron", "* * * * *"],
            "schedule id",
        ),
        (
            vec![
                "schedule",
                "add",
                "x",
                "--cron",
                "* * * * *",
                "--missed",
                "sometimes",
            ],
            "run-once or skip",
        ),
        (
            vec![
                "schedule",
                "add",
                "x",
                "--cron",
                "* * * * *",
                "-k",
                "bad/ks",
            ],
            "keyspace",
        ),
        (vec!["schedule", "pause", "nosuch"], "not found"),
        (vec!["schedule", "remove", "nosuch"], "not found"),
    ] {
        let out = d.cli(&args)?;
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        // Exit 4 when the schedule named does not exist, 3 for any other bad input.
        let code = if needle == "not found" { 4 } else { 3 };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    assert_eq!(d.cli_json(&["schedule", "list"])?, serde_json::json!([]));

    let added = d.cli_json(&[
        "schedule",
        "add",
        "every-minute",
        "--cron",
        "* * * * *",
        "-k",
        &ks,
        "--keep-last",
        "1",
    ])?;
    let due = added[0]["next_due_unix_ms"].as_i64().context("next due")?;
    assert_eq!(due % 60_000, 0, "due on a minute boundary: {added}");
    assert!(due > now_ms() && due <= now_ms() + 60_000, "{added}");
    let dup = d.cli(&["schedule", "add", "every-minute", "--cron", "* * * * *"])?;
    assert_eq!(
        dup.status.code(),
        Some(5),
        "a schedule id in use is a conflict"
    );

    // Two windows: each backup starts on time; retention keeps only the newest.
    let mut done = Vec::new();
    for n in 1..=2 {
        let runs = wait_scheduled(&d, "every-minute", n, Duration::from_secs(130))?;
        let r = &runs[n - 1];
        let created = r["created_unix_ms"].as_i64().unwrap_or(0);
        assert!(
            created % 60_000 < 10_000,
            "scheduled run {n} started {} ms after its minute",
            created % 60_000
        );
        let id = id_of(r)?;
        let end = runs::wait_for_end(&d, &id, Duration::from_secs(60))?;
        assert_eq!(end["state"], "DONE", "{end}");
        done.push(id);
    }
    wait_backups(&d, &done[1..])?;

    // The coordinator is down across the next window: on restart, the window is recorded as
    // missed and run once.
    d.kill_coordinator()?;
    let next_boundary = (now_ms() / 60_000 + 1) * 60_000;
    let restart_at = next_boundary + 35_000;
    std::thread::sleep(Duration::from_millis((restart_at - now_ms()).max(0) as u64));
    d.start_coordinator()?;
    let restarted = now_ms();
    let runs_now = wait_scheduled(&d, "every-minute", 3, Duration::from_secs(20))?;
    let third = &runs_now[2];
    let created = third["created_unix_ms"].as_i64().unwrap_or(0);
    assert!(
        created >= restarted && created - restarted < 30_000,
        "the missed window was not run at restart"
    );
    let third_id = id_of(third)?;
    let list = d.cli_json(&["schedule", "list"])?;
    let events = list[0]["recent"].as_array().context("events")?;
    let missed = events
        .iter()
        .find(|e| e["outcome"] == "missed")
        .context("no missed event recorded")?;
    assert_eq!(missed["due_unix_ms"], next_boundary, "{list}");
    let detail = missed["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("1 window(s)") && detail.contains("running once now"),
        "{detail}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["outcome"] == "started" && e["run_id"] == third_id.as_str()),
        "{list}"
    );
    let end = runs::wait_for_end(&d, &third_id, Duration::from_secs(60))?;
    assert_eq!(end["state"], "DONE", "{end}");
    wait_backups(&d, std::slice::from_ref(&third_id))?;

    // Pause, then remove.
    let paused = d.cli_json(&["schedule", "pause", "every-minute"])?;
    assert_eq!(paused[0]["paused"], true);
    d.cli_json(&["schedule", "remove", "every-minute"])?;
    assert_eq!(d.cli_json(&["schedule", "list"])?, serde_json::json!([]));
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn per_run_limits_bound_nodes_at_once_and_are_recorded_with_the_run() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    let d = Deployment::start(&runs::file_store_url("limits")?)?;
    let ks = cluster::unique_keyspace("limits");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["t"]).await?;
    for chunk in 0..3 {
        cluster::write_rows(&s, &ks, "t", chunk * 40, 40, 8192).await?;
        cluster::flush(&tb, &ks)?;
    }
    // Bad limits are refused before anything runs.
    let out = d.cli(&["backup", "-k", &ks, "--bandwidth", "5X"])?;
    assert_eq!(out.status.code(), Some(3), "usage error: bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));

    let started = d.cli_json(&[
        "backup",
        "-k",
        &ks,
        "--nodes-at-once",
        "1",
        "--bandwidth",
        "400K",
        "--concurrency",
        "2",
    ])?;
    let run = id_of(&started)?;
    // One node at a time, snapshotting and uploading: never two at once.
    let mut most = 0;
    let mut seen_upload = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        anyhow::ensure!(Instant::now() < deadline, "run {run} did not end");
        let Some(v) = runs::show(&d, &run) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let busy = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["state"] == "UPLOADING" || n["state"] == "SNAPSHOTTING")
            .count();
        most = most.max(busy);
        seen_upload |= v["stage"] == "upload";
        if v["state"] != "RUNNING" {
            break v;
        }
        std::thread::sleep(Duration::from_millis(30));
    };
    assert_eq!(end["state"], "DONE", "{end}");
    assert!(seen_upload);
    assert_eq!(most, 1, "nodes worked at once: {most}");
    assert_eq!(
        end["limits"],
        serde_json::json!({"upload_concurrency": 2, "upload_bandwidth": 409600, "nodes_at_once": 1}),
        "{end}"
    );
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}
