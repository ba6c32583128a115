//! "Never silently partial" on the real test bed: a node without a worker stops the backup
//! before any snapshot; a worker whose data directories differ from the node's refuses to
//! start; a selected table whose snapshot vanished fails the re-issued upload naming it; a
//! restore imports exactly the files its own attempt verified (planted leftovers never reach
//! Cassandra), a Download listing one file twice is refused before anything is written, and a
//! blob gone from the store after the workers last saw it there is put back before the commit.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ringvault_common::RunId;
use ringvault_common::layout;
use ringvault_integration_tests::deployment::Deployment;
use ringvault_integration_tests::guards::Keyspaces;
use ringvault_integration_tests::runs::{
    self, file_store_url, node_number, output_text, wait_for_end, wait_until,
};
use ringvault_integration_tests::{bed, cluster};
use ringvault_proto::v1 as pb;
use serde_json::Value;

/// Host id of test-bed node `n`, as `nodetool info` prints it.
fn host_id(d: &Deployment, n: usize) -> anyhow::Result<String> {
    let info = d.testbed.nodetool(n, &["info"])?;
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "ID").then(|| v.trim().to_string())
        })
        .context("nodetool info printed no ID")
}

fn staging_dir(d: &Deployment, n: usize) -> anyhow::Result<PathBuf> {
    let data = PathBuf::from(d.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?);
    Ok(data
        .parent()
        .context("data dir has no parent")?
        .join("ringvault-staging"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_a_worker_stops_the_backup_naming_it_before_any_snapshot()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    // Coordinator and workers beside nodes 1 and 2 only: node 3 never had a worker.
    let mut d = Deployment::start_some(&file_store_url("ring")?, &[], &[1, 2])?;
    let tb = d.testbed.clone();
    let out = d.cli(&["backup", "--tag", "ring-uncovered"])?;
    assert!(
        !out.status.success(),
        "backup accepted: {}",
        output_text(&out)
    );
    let text = output_text(&out);
    let node3 = tb.var("RV_NODE3_ADDRESS")?;
    let id3 = host_id(&d, 3)?;
    assert!(
        text.contains(&node3) && text.contains(&id3) && text.contains("DC "),
        "refusal does not name node 3 ({node3}, {id3}) with its DC: {text}"
    );
    for n in 1..=2 {
        assert!(
            !text.contains(&host_id(&d, n)?),
            "node {n} has a worker but is named: {text}"
        );
    }
    cluster::assert_no_snapshot(&tb, "ring-uncovered")?;
    // --dc naming a datacenter that does not exist is refused too, changing nothing.
    let out = d.cli(&["backup", "--tag", "ring-nodc", "--dc", "no-such-dc"])?;
    assert!(!out.status.success(), "unknown --dc accepted");
    assert!(
        output_text(&out).contains("no-such-dc"),
        "{}",
        output_text(&out)
    );
    cluster::assert_no_snapshot(&tb, "ring-nodc")?;
    // With node 3's worker started, the whole ring is covered and the run is recorded with
    // its --dc (the test bed is one datacenter).
    d.start_worker(3)?;
    d.wait_workers(3)?;
    let dc = d.cli_json(&["workers", "list"])?[0]["datacenter"]
        .as_str()
        .context("datacenter")?
        .to_string();
    let ks = cluster::unique_keyspace("ringdc");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["t"]).await?;
    cluster::write_rows(&s, &ks, "t", 0, 50, 10).await?;
    cluster::flush(&tb, &ks)?;
    let v = d.cli_json(&["backup", "--wait", "-k", &ks, "--dc", &dc])?;
    assert_eq!(v["state"], "DONE", "{v}");
    assert_eq!(v["datacenters"], serde_json::json!([dc]), "{v}");
    let shown = d.cli_json(&["runs", "show", v["id"].as_str().context("id")?])?;
    assert_eq!(shown["datacenters"], serde_json::json!([dc]), "{shown}");
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_data_dirs_differ_from_the_node_refuses_to_start() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let mut d = Deployment::start_some(&file_store_url("ddirs")?, &[], &[])?;
    let extra = d.dir.path().join("not-a-cassandra-dir");
    std::fs::create_dir_all(&extra)?;
    let extra_s = extra.display().to_string();
    d.set_worker_extra_args(1, &["--data-dir", &extra_s]);
    let refused = d
        .worker_start_refused(1, Duration::from_secs(60))?
        .context("worker with an extra data dir kept running")?;
    assert!(
        refused.contains(&extra_s) && refused.contains("data_file_directories"),
        "refusal does not name {extra_s}: {refused}"
    );
    // Started with another directory instead of the node's: refused naming the node's
    // directory it lacks.
    d.set_worker_extra_args(1, &[]);
    d.set_worker_data_dirs(1, Some(vec![extra.clone()]));
    let node_dir = d.testbed.var("RV_NODE1_DATA_DIR")?;
    let refused = d
        .worker_start_refused(1, Duration::from_secs(60))?
        .context("worker without the node's data dir kept running")?;
    assert!(
        refused.contains(&format!("data_file_directories include {node_dir}")),
        "refusal does not name the missing {node_dir}: {refused}"
    );
    // With the node's own set it starts and registers.
    d.set_worker_data_dirs(1, None);
    d.start_worker(1)?;
    d.wait_workers(1)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_snapshot_removed_before_a_reissued_upload_fails_the_run_naming_it()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let mut d =
        Deployment::start_with(&file_store_url("tsnap")?, &["--upload-bandwidth", "150000"])?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace("tsnap");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["big", "small"]).await?;
    // Replication factor 1: node 2 uploads its own rows, which takes seconds at this rate.
    s.query_unpaged(
        format!(
            "ALTER KEYSPACE {ks} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
        (),
    )
    .await?;
    cluster::write_rows(&s, &ks, "big", 0, 400, 8192).await?;
    cluster::write_rows(&s, &ks, "small", 0, 40, 10).await?;
    cluster::flush(&tb, &ks)?;
    let started = d.cli_json(&["backup", "-k", &ks])?;
    let run = started["id"].as_str().context("id")?.to_string();
    let tag = started["tag"].as_str().context("tag")?.to_string();
    wait_until(&d, &run, "node 2 mid-upload", |v| {
        let n2 = v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["address"].as_str().and_then(node_number) == Some(2))?;
        let (done, total) = (n2["bytes_done"].as_u64()?, n2["bytes_total"].as_u64()?);
        (v["stage"] == "upload" && n2["state"] == "UPLOADING" && done < total).then_some(())
    })?;
    d.kill_worker(2)?;
    // Table `small`'s snapshot directory disappears on node 2 while its worker is down.
    let gone: Vec<PathBuf> = cluster::snapshot_dirs(&tb, 2, &tag)?
        .into_iter()
        .filter(|p| {
            p.parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|n| n.to_string_lossy().starts_with("small-"))
        })
        .collect();
    anyhow::ensure!(gone.len() == 1, "node 2 snapshot dirs of small: {gone:?}");
    std::fs::remove_dir_all(&gone[0])?;
    d.start_worker(2)?;
    let v: Value = wait_for_end(&d, &run, Duration::from_secs(180))?;
    assert_eq!(v["state"], "FAILED", "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!("{ks}.small")),
        "error does not name {ks}.small: {err}"
    );
    cluster::assert_no_snapshot(&tb, &tag)?;
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

/// The files of one SSTable (all components of the generation of some `*-Data.db`) of
/// `ks.table` on node `n`.
fn one_sstable(d: &Deployment, n: usize, ks: &str, table: &str) -> anyhow::Result<Vec<PathBuf>> {
    let data = PathBuf::from(d.testbed.var(&format!("RV_NODE{n}_DATA_DIR"))?).join(ks);
    let tdir = std::fs::read_dir(&data)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{table}-")))
        })
        .context("table dir")?;
    let names: Vec<String> = std::fs::read_dir(&tdir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let data_file = names
        .iter()
        .find(|n| n.ends_with("-Data.db"))
        .context("no Data.db")?;
    let prefix = data_file.trim_end_matches("Data.db").to_string();
    Ok(names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|n| tdir.join(n))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_leftovers_in_staging_are_never_imported() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start(&file_store_url("plant")?)?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace("plant");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    // Same columns in both tables: an SSTable of `department` would import into `employee`.
    cluster::create_keyspace(&s, &tb, &ks, &["employee", "department"]).await?;
    cluster::write_rows(&s, &ks, "employee", 0, 300, 50).await?;
    cluster::write_rows(&s, &ks, "department", 100_000, 200, 50).await?;
    cluster::flush(&tb, &ks)?;
    let v = d.cli_json(&["backup", "--wait", "-k", &ks])?;
    assert_eq!(v["state"], "DONE", "{v}");
    let run = v["id"].as_str().context("id")?.to_string();
    let employee = cluster::all_rows(&s, &ks, "employee").await?;
    s.query_unpaged(format!("TRUNCATE {ks}.employee"), ())
        .await?;
    // On every node, in the staging directory of this backup's employee files: a complete
    // real SSTable of `department` renamed to generation 999, a lone `nb-999-big-Data.db`,
    // and an `x.partial`.
    for n in 1..=tb.nodes()? {
        let dir = staging_dir(&d, n)?
            .join(&run)
            .join("files")
            .join(host_id(&d, n)?)
            .join(&ks)
            .join("employee");
        std::fs::create_dir_all(&dir)?;
        for f in one_sstable(&d, n, &ks, "department")? {
            let name = f
                .file_name()
                .context("name")?
                .to_string_lossy()
                .into_owned();
            // <version>-<generation>-big-<Component>
            let mut parts = name.splitn(3, '-');
            let (ver, _gen, rest) = (
                parts.next().context("version")?,
                parts.next().context("generation")?,
                parts.next().context("component")?,
            );
            std::fs::copy(&f, dir.join(format!("{ver}-999-{rest}")))?;
        }
        std::fs::write(dir.join("nb-999-big-Data.db"), b"not an sstable")?;
        std::fs::write(dir.join("x.partial"), b"half a file")?;
    }
    let out = d.cli(&[
        "restore", "--wait", &run, "-k", &ks, "-t", "employee", "--output", "json",
    ])?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| output_text(&out))?;
    assert_eq!(v["state"], "DONE", "{v}");
    assert_eq!(
        cluster::all_rows(&s, &ks, "employee").await?,
        employee,
        "employee does not hold exactly its backed-up rows"
    );
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_listing_one_file_twice_is_refused_before_anything_is_written()
-> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let d = Deployment::start_some(&file_store_url("dup")?, &[], &[1])?;
    let mut client = d.worker_client(1).await?;
    let backup_run = ringvault_common::RunId::new().to_string();
    let entry = |hash: &str| pb::RestoreFile {
        source_host_id: "4e5dcf79-dd51-4419-9aaf-4510118f5425".into(),
        keyspace: "ks".into(),
        table: "t".into(),
        name: "nb-1-big-Data.db".into(),
        size: 3,
        hash: hash.into(),
    };
    // The two entries arrive in two chunks, as a large list would.
    let chunks = vec![
        pb::DownloadRequest {
            backup_run_id: backup_run.clone(),
            store_url: d.store_url.clone(),
            files: vec![entry(&"a".repeat(64))],
            concurrency: 0,
            attempt_id: ringvault_common::RunId::new().to_string(),
            bandwidth_bytes_per_sec: 0,
            ..Default::default()
        },
        pb::DownloadRequest {
            files: vec![entry(&"b".repeat(64))],
            ..Default::default()
        },
    ];
    let err = match client.download(tokio_stream_iter(chunks)).await {
        Err(e) => e,
        Ok(resp) => {
            let mut st = resp.into_inner();
            loop {
                match st.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => anyhow::bail!("duplicate download accepted"),
                    Err(e) => break e,
                }
            }
        }
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("twice"), "{}", err.message());
    let staged = staging_dir(&d, 1)?.join(&backup_run);
    assert!(!staged.exists(), "staging written: {}", staged.display());
    Ok(())
}

fn tokio_stream_iter(
    v: Vec<pb::DownloadRequest>,
) -> impl futures::Stream<Item = pb::DownloadRequest> + Send + 'static {
    futures::stream::iter(v)
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

/// Fake small files planted into a real snapshot: node 1's worker runs nodetool through a
/// wrapper that, after the real `nodetool snapshot`, writes `count` small distinct files into
/// the snapshot directory of table `many` (Cassandra's own files stay as they are).
const MANY_FILES: usize = 100_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_100k_files_backs_up_verifies_and_plans_its_restore() -> anyhow::Result<()> {
    let _bed = bed::exclusive().await;
    let mut d = Deployment::start_some(&file_store_url("many")?, &[], &[])?;
    let tb = d.testbed.clone();
    let ks = cluster::unique_keyspace("many");
    let _keyspaces = Keyspaces::new(&tb, &ks);
    let s = cluster::session(&tb).await?;
    cluster::create_keyspace(&s, &tb, &ks, &["many", "real"]).await?;
    cluster::write_rows(&s, &ks, "real", 0, 100, 10).await?;
    cluster::flush(&tb, &ks)?;
    let wrapper = d.dir.path().join("nodetool-many");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\n\"{real}\" \"$@\" || exit $?\n\
             if [ \"$1\" = snapshot ]; then\n\
               for dir in \"{data}/{ks}\"/many-*/snapshots/\"$3\"; do\n\
                 [ -d \"$dir\" ] || continue\n\
                 cd \"$dir\" && for i in $(seq -f %06g 1 {MANY_FILES}); do echo \"fake $i\" > \"rv-fake-$i.txt\"; done\n\
               done\n\
             fi\n",
            real = tb.var("RV_NODE1_NODETOOL")?,
            data = tb.var("RV_NODE1_DATA_DIR")?,
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    d.set_worker_nodetool(1, wrapper);
    for n in 1..=tb.nodes()? {
        d.start_worker(n)?;
    }
    d.wait_workers(tb.nodes()?)?;
    let started = std::time::Instant::now();
    let out = d.cli(&["backup", "--wait", "-k", &ks, "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| output_text(&out))?;
    let backup_secs = started.elapsed().as_secs();
    assert_eq!(v["state"], "DONE", "{v}");
    let run = v["id"].as_str().context("id")?.to_string();
    let node1 = v["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .find(|n| n["address"].as_str().and_then(node_number) == Some(1))
        .context("node 1")?
        .clone();
    assert!(
        node1["files_total"].as_u64().unwrap_or(0) >= MANY_FILES as u64,
        "node 1 backed up {} files",
        node1["files_total"]
    );
    // verify: every blob present with its size; the report's lists arrive in chunks.
    let (code, report) = ringvault_integration_tests::runs::verify(&d, &run, false)?;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["files"].as_u64().unwrap_or(0) >= MANY_FILES as u64,
        "{report}"
    );
    // The restore plan (100k files for node 1) is built and its file list delivered: every
    // file is staged and verified by the worker.
    let started = std::time::Instant::now();
    let out = d.cli(&[
        "restore", "--wait", &run, "-k", &ks, "-t", "many", "--output", "json",
    ])?;
    let restore_secs = started.elapsed().as_secs();
    let text = output_text(&out);
    assert!(
        !text.to_lowercase().contains("message too large")
            && !text.contains("message length too large"),
        "{text}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).with_context(|| text.clone())?;
    let r1 = r["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .find(|n| n["address"].as_str().and_then(node_number) == Some(1))
        .context("node 1")?
        .clone();
    assert_eq!(r1["files_total"].as_u64(), Some(MANY_FILES as u64), "{r}");
    assert_eq!(r1["files_done"].as_u64(), Some(MANY_FILES as u64), "{r}");
    let coord_kib = peak_rss_kib(d.coordinator_pid().context("coordinator")?)?;
    let worker_kib = peak_rss_kib(d.worker_pid(1).context("worker 1")?)?;
    eprintln!(
        "100k files: backup {backup_secs} s, restore {restore_secs} s (state {}, stage {}, error {:?}); peak RSS coordinator {coord_kib} KiB, worker 1 {worker_kib} KiB",
        r["state"], r["stage"], r["error"]
    );
    // The fake files are not SSTables: `nodetool import` finds nothing to load in them and
    // the restore ends DONE. What matters here is that the list travelled and was verified.
    assert_eq!(r["state"], "DONE", "{r}");
    // Staging (kept by a failed restore) and the store's 100k blobs are removed here.
    let _ = std::fs::remove_dir_all(staging_dir(&d, 1)?.join(&run));
    if let Some(dir) = d.store_url.strip_prefix("file://") {
        let _ = std::fs::remove_dir_all(dir);
    }
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}

/// Workers remember which blobs they saw in the store and, on a repeat backup, do not ask the
/// store about them again; the commit checks every blob. A blob removed from the store after
/// the first backup (as a purge of the only backup naming it would) is then missing at commit:
/// the run uploads again with every blob asked for, puts it back, and commits a whole backup.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_gone_since_the_workers_saw_it_is_put_back_before_the_commit() -> anyhow::Result<()>
{
    let _bed = bed::shared().await;
    let url = file_store_url("seen")?;
    let root = PathBuf::from(url.trim_start_matches("file://"));
    let d = Deployment::start(&url)?;
    let ks = cluster::unique_keyspace("seen");
    let _keyspaces = Keyspaces::new(&d.testbed, &ks);
    let s = cluster::session(&d.testbed).await?;
    cluster::create_keyspace(&s, &d.testbed, &ks, &["t"]).await?;
    cluster::write_rows(&s, &ks, "t", 0, 200, 1024).await?;
    cluster::flush(&d.testbed, &ks)?;
    let first = runs::backup_done(&d, &["-k", &ks])?;
    let first_id = runs::id_of(&first)?;

    // One Data.db blob of the first backup disappears from the store.
    let st = runs::open_store(&d).await?;
    let manifests = runs::node_manifests(st.as_ref(), &RunId::parse(&first_id)?).await?;
    let gone = manifests
        .iter()
        .flat_map(|m| m.files.iter())
        .find(|f| f.name.as_str().ends_with("-Data.db"))
        .context("a Data.db in the first backup")?
        .clone();
    let blob_path = root.join(layout::blob(&gone.hash).as_str());
    std::fs::remove_file(&blob_path)
        .with_context(|| format!("removing {}", blob_path.display()))?;

    // Nothing changed on the nodes: every worker answers from its memory, the commit finds
    // the blob missing, and the upload runs again with every blob checked.
    let second = runs::backup_done(&d, &["-k", &ks])?;
    let second_id = runs::id_of(&second)?;
    let uploaded: u64 = second["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| n["files_uploaded"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        uploaded >= 1,
        "the missing blob was not sent again: {second}"
    );
    assert_eq!(
        std::fs::metadata(&blob_path)?.len(),
        gone.size,
        "the blob is back with its size"
    );
    let log = std::fs::read_to_string(d.log("coordinator"))?;
    assert!(
        log.contains("blobs missing at commit; uploading again with every blob checked"),
        "the workers asked the store (no commit-time repair happened), or it was not logged"
    );
    let (code, report) = runs::verify(&d, &second_id, true)?;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    s.query_unpaged(format!("DROP KEYSPACE {ks}"), ()).await?;
    Ok(())
}
