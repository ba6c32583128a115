//! End-to-end cluster backups on the real test bed (Cassandra 5.0 nodes, real stores): each
//! test runs its own coordinator and workers ([`Deployment`]) and checks the result
//! independently (data directories, nodetool, the store's bytes re-hashed here).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use ringvault_common::RunId;
use ringvault_common::layout;
use ringvault_common::manifest::NodeManifest;
use ringvault_common::store::{self, Store};
use ringvault_integration_tests::cluster;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::testbed::Testbed;
use ringvault_integration_tests::{bed, runs};
use runs::{
    az_store_url, file_store_url, gs_store_url, node_manifests, open_store, output_text,
    s3_store_url, set_store_env,
};
use serde_json::Value;

/// Streams every blob the run refers to and re-hashes it here; returns the number checked.
async fn rehash_all_blobs(st: &dyn Store, manifests: &[NodeManifest]) -> anyhow::Result<usize> {
    let wanted: BTreeMap<String, u64> = manifests
        .iter()
        .flat_map(|m| m.files.iter().map(|f| (f.hash.to_string(), f.size)))
        .collect();
    for (hash, size) in &wanted {
        let h = ringvault_common::hash::ContentHash::parse(hash)?;
        let mut stream = st.get(&layout::blob(&h)).await?;
        let mut hasher = blake3::Hasher::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            hasher.update(&chunk);
        }
        anyhow::ensure!(n == *size, "blob {hash}: {n} bytes stored, {size} recorded");
        anyhow::ensure!(
            hasher.finalize().to_hex().as_str() == hash,
            "blob {hash} re-hashes differently"
        );
    }
    Ok(wanted.len())
}

fn backup(d: &Deployment, args: &[&str]) -> anyhow::Result<Value> {
    runs::backup_done(d, args)
}

fn run_id(v: &Value) -> anyhow::Result<RunId> {
    Ok(RunId::parse(v["id"].as_str().context("run id")?)?)
}

/// The manifests list exactly what an independent `nodetool snapshot` of the same, unchanged
/// tables produces on each node (names and sizes; `manifest.json` only by name, as it embeds a
/// timestamp).
fn assert_manifests_match_nodetool(
    tb: &Testbed,
    ks: &str,
    manifests: &[NodeManifest],
    tables: Option<&[&str]>,
) -> anyhow::Result<()> {
    let reference_tag = format!("ref-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut expected = BTreeMap::new();
    for n in 1..=tb.nodes()? {
        match tables {
            Some(ts) => tb.nodetool(
                n,
                &[
                    "snapshot",
                    "-t",
                    &reference_tag,
                    "-kt",
                    &ts.iter()
                        .map(|t| format!("{ks}.{t}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ],
            )?,
            None => tb.nodetool(n, &["snapshot", "-t", &reference_tag, ks])?,
        };
        let listing = cluster::snapshot_listing(tb, n, ks, &reference_tag)?;
        tb.nodetool(n, &["clearsnapshot", "-t", &reference_tag])?;
        expected.insert(tb.var(&format!("RV_NODE{n}_ADDRESS"))?, listing);
    }
    anyhow::ensure!(
        manifests.len() == expected.len(),
        "{} node manifests for {} nodes",
        manifests.len(),
        expected.len()
    );
    for m in manifests {
        let want = expected
            .get(&m.node.address)
            .with_context(|| format!("manifest for unknown node {}", m.node.address))?;
        let got: BTreeSet<(String, String, u64)> = m
            .files
            .iter()
            .filter(|f| f.keyspace.as_str() == ks)
            .map(|f| (f.table.to_string(), f.name.to_string(), f.size))
            .collect();
        let strip =
            |s: &BTreeSet<(String, String, u64)>| -> BTreeSet<(String, String, Option<u64>)> {
                s.iter()
                    .map(|(t, n, z)| (t.clone(), n.clone(), (n != "manifest.json").then_some(*z)))
                    .collect()
            };
        anyhow::ensure!(
            strip(&got) == strip(want),
            "node {}: manifest differs from nodetool snapshot\n manifest: {got:?}\n nodetool: {want:?}",
            m.node.address
        );
        anyhow::ensure!(
            got.iter().any(|(_, n, _)| n.ends_with("-Data.db")),
            "node {} backed up no Data.db",
            m.node.address
        );
    }
    Ok(())
}

async fn keyspace_backup_end_to_end(store_url: String) -> anyhow::Result<()> {
    let d = Deployment::start(&store_url)?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace("org");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["employee", "department"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 1500, 300).await?;
    cluster::write_rows(&s, &ks, "department", 0, 200, 50).await?;
    cluster::flush(&tb, &ks)?;
    let st = open_store(&d).await?;

    // 1. One keyspace, named tag.
    let tag = format!("2023.06.27-{}", &ks[4..]);
    let v = backup(&d, &["-k", &ks, "--tag", &tag])?;
    assert_eq!(v["tag"], tag.as_str());
    let run = run_id(&v)?;
    let manifests = node_manifests(st.as_ref(), &run).await?;
    assert_manifests_match_nodetool(&tb, &ks, &manifests, None)?;
    let checked = rehash_all_blobs(st.as_ref(), &manifests).await?;
    assert!(checked > 0);
    let schema = String::from_utf8(
        store::get_bytes(st.as_ref(), &layout::run_schema(&run), 64 << 20).await?,
    )?;
    for t in ["employee", "department"] {
        assert!(
            schema.contains(&format!("CREATE TABLE {ks}.{t}")),
            "schema lacks {ks}.{t}:\n{schema}"
        );
    }
    assert!(
        schema.contains("WITH ID ="),
        "schema lacks table ids (WITH INTERNALS)"
    );
    cluster::assert_no_snapshot(&tb, &tag)?;
    let shown = d.cli_json(&["runs", "show", run.as_str()])?;
    assert_eq!(shown["state"], "DONE");
    assert_eq!(shown["nodes"].as_array().map(Vec::len), Some(tb.nodes()?));
    assert!(
        shown["tables_summary"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x["table"] == "employee"))
    );

    // 2. Repeat with no writes: no SSTable byte goes up; the only new blobs are the snapshot
    //    manifest.json files (they carry the snapshot time).
    let blobs_before: BTreeSet<String> = st
        .list(layout::BLOBS_PREFIX)
        .await?
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    let v2 = backup(&d, &["-k", &ks])?;
    let run2 = run_id(&v2)?;
    let manifests2 = node_manifests(st.as_ref(), &run2).await?;
    let blobs_after: BTreeSet<String> = st
        .list(layout::BLOBS_PREFIX)
        .await?
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    let new: BTreeSet<&String> = blobs_after.difference(&blobs_before).collect();
    let manifest_json_blobs: BTreeSet<String> = manifests2
        .iter()
        .flat_map(|m| {
            m.files
                .iter()
                .filter(|f| f.name.as_str() == "manifest.json")
                .map(|f| layout::blob(&f.hash).to_string())
        })
        .collect();
    for k in &new {
        assert!(
            manifest_json_blobs.contains(*k),
            "repeat backup uploaded {k}, which is not a snapshot manifest.json"
        );
    }
    let sstable_bytes_up: u64 = v2["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| n["bytes_uploaded"].as_u64().unwrap_or(0))
        .sum();
    let manifest_bytes: u64 = manifests2
        .iter()
        .flat_map(|m| m.files.iter())
        .filter(|f| f.name.as_str() == "manifest.json")
        .map(|f| f.size)
        .sum();
    assert!(
        sstable_bytes_up <= manifest_bytes,
        "repeat backup uploaded {sstable_bytes_up} bytes, more than the {manifest_bytes} of manifest.json"
    );

    // 3. New writes and a flush: only the new SSTables' bytes go up.
    cluster::write_rows(&s, &ks, "employee", 100_000, 300, 300).await?;
    cluster::flush(&tb, &ks)?;
    let v3 = backup(&d, &["-k", &ks])?;
    let run3 = run_id(&v3)?;
    let manifests3 = node_manifests(st.as_ref(), &run3).await?;
    let old_hashes: BTreeSet<String> = manifests2
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.hash.to_string()))
        .collect();
    let new_bytes: u64 = manifests3
        .iter()
        .flat_map(|m| m.files.iter())
        .filter(|f| !old_hashes.contains(f.hash.as_str()))
        .map(|f| f.size)
        .sum();
    let uploaded3: u64 = v3["bytes_uploaded"].as_u64().context("bytes_uploaded")?;
    let total3: u64 = v3["bytes_total"].as_u64().context("bytes_total")?;
    assert!(uploaded3 > 0, "new SSTables were not uploaded");
    assert!(
        uploaded3 <= new_bytes,
        "uploaded {uploaded3} bytes, but only {new_bytes} bytes of files are new"
    );
    assert!(
        uploaded3 < total3,
        "everything was uploaded again ({uploaded3} of {total3})"
    );
    rehash_all_blobs(st.as_ref(), &manifests3).await?;
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn keyspace_backup_to_file_store_matches_nodetool_and_deduplicates() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    keyspace_backup_end_to_end(file_store_url("ks")?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keyspace_backup_to_s3_matches_nodetool_and_deduplicates() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    keyspace_backup_end_to_end(s3_store_url(&tb)?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keyspace_backup_to_gcs_matches_nodetool_and_deduplicates() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    keyspace_backup_end_to_end(gs_store_url(&tb)?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keyspace_backup_to_azure_matches_nodetool_and_deduplicates() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    set_store_env(&tb)?;
    keyspace_backup_end_to_end(az_store_url(&tb)?).await
}

#[tokio::test(flavor = "multi_thread")]
async fn table_and_full_backups_hold_exactly_their_selection() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("sel")?)?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace("sel");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["employee", "salary"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 500, 100).await?;
    cluster::write_rows(&s, &ks, "salary", 0, 500, 100).await?;
    cluster::flush(&tb, &ks)?;
    let st = open_store(&d).await?;

    // One table.
    let v = backup(&d, &["-k", &ks, "-t", "employee"])?;
    let run = run_id(&v)?;
    let manifests = node_manifests(st.as_ref(), &run).await?;
    assert_manifests_match_nodetool(&tb, &ks, &manifests, Some(&["employee"]))?;
    for m in &manifests {
        assert!(
            m.files
                .iter()
                .all(|f| f.keyspace.as_str() == ks && f.table.as_str() == "employee"),
            "table backup holds other tables"
        );
    }
    rehash_all_blobs(st.as_ref(), &manifests).await?;
    cluster::assert_no_snapshot(&tb, v["tag"].as_str().context("tag")?)?;

    // Everything: user keyspaces and system_auth, never node-local `system`.
    let v = backup(&d, &[])?;
    let run = run_id(&v)?;
    let manifests = node_manifests(st.as_ref(), &run).await?;
    for m in &manifests {
        let keyspaces: BTreeSet<&str> = m.files.iter().map(|f| f.keyspace.as_str()).collect();
        assert!(
            keyspaces.contains(ks.as_str()) && keyspaces.contains("system_auth"),
            "{keyspaces:?}"
        );
        assert!(
            !keyspaces.contains("system") && !keyspaces.contains("system_schema"),
            "{keyspaces:?}"
        );
    }
    let schema = String::from_utf8(
        store::get_bytes(st.as_ref(), &layout::run_schema(&run), 64 << 20).await?,
    )?;
    assert!(schema.contains(&format!("CREATE TABLE {ks}.salary")));
    cluster::assert_no_snapshot(&tb, v["tag"].as_str().context("tag")?)?;
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_before_any_snapshot() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("bad")?)?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace("bad");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["employee"]).await?;
    let long = "x".repeat(201);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-k", "no_such_keyspace", "--tag", "t-unknown-ks"],
            "keyspace no_such_keyspace does not exist",
        ),
        (
            vec!["-k", &ks, "-t", "no_such_table", "--tag", "t-unknown-table"],
            "does not exist",
        ),
        (vec!["-k", &ks, "--tag", "a/b"], "'/'"),
        (vec!["-k", &ks, "--tag", "a..b"], "'..'"),
        (vec!["-k", &ks, "--tag", "a b"], "' '"),
        (vec!["-k", &ks, "--tag", &long], "201 characters"),
        (
            vec!["-k", "../etc", "--tag", "t-bad-ks"],
            "not a plain identifier",
        ),
    ];
    for (args, why) in &cases {
        let mut all = vec!["backup"];
        all.extend_from_slice(args);
        let out = d.cli(&all)?;
        assert!(!out.status.success(), "{args:?} was accepted");
        let text = output_text(&out);
        assert!(text.contains(why), "{args:?}: expected {why:?} in {text}");
    }
    for tag in ["t-unknown-ks", "t-unknown-table", "t-bad-ks"] {
        for n in 1..=tb.nodes()? {
            assert!(
                cluster::snapshot_dirs(&tb, n, tag)?.is_empty(),
                "snapshot {tag} was taken on node {n}"
            );
        }
    }
    let runs = d.cli_json(&["runs", "list"])?;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(0),
        "a refused request left a run: {runs}"
    );

    // A tag that already exists on one node is refused, naming that node; nothing is taken elsewhere.
    let tag = format!("taken-{}", &ks[4..]);
    tb.nodetool(2, &["snapshot", "-t", &tag, &ks])?;
    let out = d.cli(&["backup", "-k", &ks, "--tag", &tag])?;
    tb.nodetool(2, &["clearsnapshot", "-t", &tag])?;
    assert!(!out.status.success());
    let text = output_text(&out);
    let node2 = tb.var("RV_NODE2_ADDRESS")?;
    assert!(
        text.contains("already exists") && text.contains(&node2),
        "{text}"
    );
    for n in [1, 3] {
        assert!(
            cluster::snapshot_dirs(&tb, n, &tag)?.is_empty(),
            "node {n} was snapshotted"
        );
    }
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_down_at_plan_time_stops_the_run_naming_the_node() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let mut d = Deployment::start(&file_store_url("down")?)?;
    let tb = d.testbed.clone();
    d.kill_worker(3)?;
    let out = d.cli(&["backup", "--tag", "down-at-plan"])?;
    assert!(!out.status.success());
    let text = output_text(&out);
    assert!(
        text.contains(&tb.var("RV_NODE3_ADDRESS")?) && text.contains("did not start"),
        "{text}"
    );
    cluster::assert_no_snapshot(&tb, "down-at-plan")?;
    // Once the worker is back, backups run again.
    d.start_worker(3)?;
    d.wait_workers(tb.nodes()?)?;
    Ok(())
}

fn wait_for_stage(d: &Deployment, run: &str, stage: &str) -> anyhow::Result<Value> {
    runs::poll(
        &format!("run {run} uploading in stage {stage} on every node"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let v = d.cli_json(&["runs", "show", run])?;
            let every_node_moving = v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().all(|x| x["bytes_done"].as_u64().unwrap_or(0) > 0));
            if v["stage"] == stage && every_node_moving {
                return Ok(Some(v));
            }
            anyhow::ensure!(
                v["state"] == "RUNNING",
                "run ended before stage {stage}: {v}"
            );
            Ok(None)
        },
    )
}

/// A keyspace big enough that a throttled upload lasts several seconds. With `own_data`, every
/// row lives on one node only (replication factor 1), so no node finds its SSTables already
/// uploaded by a replica and each node's upload takes its own time.
async fn slow_keyspace(
    tb: &Testbed,
    prefix: &str,
    own_data: bool,
) -> anyhow::Result<(String, scylla::client::session::Session, Keyspaces)> {
    let ks = cluster::unique_keyspace(prefix);
    let guard = Keyspaces::new(tb, &ks);
    let s = cluster::session(tb).await?;
    cluster::create_keyspace(&s, tb, &ks, &["big"]).await?;
    if own_data {
        s.query_unpaged(
            format!(
                "ALTER KEYSPACE {ks} WITH replication = \
                 {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
            ),
            (),
        )
        .await?;
    }
    cluster::write_rows(&s, &ks, "big", 0, 400, 8192).await?;
    cluster::flush(tb, &ks)?;
    Ok((ks, s, guard))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_upload_that_does_not_come_back_fails_the_run_naming_it()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    // A worker that comes back in time gets its work re-issued (the crash module); this one
    // stays down past the grace period.
    let mut d = Deployment::start_with(
        &file_store_url("kill")?,
        &[
            "--upload-bandwidth",
            "150000",
            "--worker-restart-grace-secs",
            "3",
        ],
    )?;
    let tb = d.testbed.clone();
    let (ks, s, _keyspaces) = slow_keyspace(&tb, "killw", true).await?;
    let started = d.cli_json(&["backup", "-k", &ks])?;
    let run = started["id"].as_str().context("id")?.to_string();
    let tag = started["tag"].as_str().context("tag")?.to_string();
    // Each node holds its own rows (replication factor 1), so node 2 cannot find its files
    // already uploaded by a replica: strike it while its upload is under way.
    runs::wait_until(&d, &run, "node 2 mid-upload", |v| {
        let n2 = v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["address"].as_str().and_then(runs::node_number) == Some(2))?;
        let (done, total) = (n2["bytes_done"].as_u64()?, n2["bytes_total"].as_u64()?);
        (v["stage"] == "upload" && n2["state"] == "UPLOADING" && done < total).then_some(())
    })?;
    d.kill_worker(2)?;
    let v = runs::wait_for_end(&d, &run, Duration::from_secs(120))?;
    assert_eq!(v["state"], "FAILED", "{v}");
    let node2 = tb.var("RV_NODE2_ADDRESS")?;
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains(&node2)),
        "error does not name {node2}: {}",
        v["error"]
    );
    for n in [1, 3] {
        assert!(
            cluster::snapshot_dirs(&tb, n, &tag)?.is_empty(),
            "snapshot left on node {n}"
        );
    }
    // The killed node's snapshot has the TTL as its safety net; clear it here.
    tb.nodetool(2, &["clearsnapshot", "-t", &tag])?;
    let st = open_store(&d).await?;
    assert!(
        st.head(&layout::run_manifest(&RunId::parse(&run)?))
            .await?
            .is_none(),
        "a failed run was committed"
    );
    d.start_worker(2)?;
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_store_fails_clearly_and_is_never_reported_done() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let tb = Testbed::load()?;
    // Wrong credentials: the coordinator refuses to start, with the server's error.
    let bad = s3_store_url(&tb)?;
    let out = std::process::Command::new(ringvault_integration_tests::deployment::bin(
        "ringvault-coordinator",
    )?)
    .args(["--listen", "127.0.0.1:0", "--insecure-loopback", "--db"])
    .arg(std::env::temp_dir().join(format!("rv-bad-{}.db", uuid::Uuid::new_v4().simple())))
    .args(["--store", &bad])
    .env("AWS_ACCESS_KEY_ID", "wrong")
    .env("AWS_SECRET_ACCESS_KEY", "wrong")
    .env("AWS_REGION", "us-east-1")
    .output()?;
    assert!(!out.status.success());
    let text = output_text(&out);
    assert!(
        text.contains("failed its check")
            && (text.contains("AccessDenied")
                || text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("NotSignedUp")),
        "{text}"
    );
    assert!(
        !text.contains("ringvault-test-secret"),
        "secret leaked: {text}"
    );

    // A store that goes away mid-run: our own S3 server, stopped during the upload.
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("bkt"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = std::process::Command::new(tb.var("RV_S3S_BIN")?)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
        ])
        .arg(tb.var("RV_S3_ACCESS_KEY")?)
        .arg("--secret-key")
        .arg(tb.var("RV_S3_SECRET_KEY")?)
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    runs::poll(
        "the private S3 server listening",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || Ok(std::net::TcpStream::connect(("127.0.0.1", port)).ok()),
    )?;
    let url = format!("s3://bkt/p?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let d = Deployment::start_with(&url, &["--upload-bandwidth", "300000"])?;
    let (ks, s, _keyspaces) = slow_keyspace(&tb, "gone", false).await?;
    let started = d.cli_json(&["backup", "-k", &ks])?;
    let run = started["id"].as_str().context("id")?.to_string();
    let tag = started["tag"].as_str().context("tag")?.to_string();
    wait_for_stage(&d, &run, "upload")?;
    server.kill()?;
    server.wait()?;
    let v = runs::wait_for_end(&d, &run, Duration::from_secs(120))?;
    assert_eq!(v["state"], "FAILED", "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("127.0.0.1:") || err.contains("dispatch") || err.contains("connect"),
        "error lacks the store's failure: {err}"
    );
    cluster::assert_no_snapshot(&tb, &tag)?;
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}
