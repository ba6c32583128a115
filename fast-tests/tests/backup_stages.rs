//! The backup stages of the real coordinator against three in-process fake workers and a
//! `file://` store, in seconds: a backup commits every file once (blobs deduplicated across
//! nodes, manifests, schema and topology written, the lease gone, every snapshot cleared); a
//! node failing during upload fails the run naming it and clears the snapshots of every node;
//! a worker restarting mid-upload gets its upload re-issued and the backup still commits
//! exactly its files; cancel stops a run and cleans up; a second backup of a cluster with a run
//! in progress is refused.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, ensure};
use ringvault_common::RunId;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_common::manifest::{NodeManifest, RunManifest, Topology};
use ringvault_common::store::{Store, get_bytes};
use ringvault_fast_tests::fake_worker::{Call, FakeFile, FakeWorker, Script};
use ringvault_fast_tests::harness::Harness;
use ringvault_proto::v1 as pb;

/// Node `n`'s files: two tables of `ks1` with two files each; the `CompressionInfo.db` of
/// `ks1.t1` is the same bytes on every node (one blob for all of them).
fn files(n: u8) -> Vec<FakeFile> {
    vec![
        FakeFile::new(
            "ks1",
            "t1",
            "nb-1-big-Data.db",
            format!("t1 data of node {n}"),
        ),
        FakeFile::new("ks1", "t1", "nb-1-big-CompressionInfo.db", "shared bytes"),
        FakeFile::new(
            "ks1",
            "t2",
            "nb-1-big-Data.db",
            format!("t2 data of node {n}"),
        ),
        FakeFile::new(
            "ks1",
            "t2",
            ".t2_idx/nb-1-big-Data.db",
            format!("t2 index of node {n}"),
        ),
    ]
}

fn scripts(n: usize) -> Vec<Script> {
    vec![Script::default(); n]
}

async fn json<T: serde::de::DeserializeOwned>(
    st: &dyn Store,
    key: &layout::ObjectKey,
) -> anyhow::Result<T> {
    let bytes = get_bytes(st, key, 16 << 20)
        .await
        .with_context(|| format!("reading {key}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {key}"))
}

/// Every snapshot of `tag` was cleared on every node, and no other snapshot is left.
fn assert_cleared(nodes: &[FakeWorker], tag: &str) -> anyhow::Result<()> {
    for w in nodes {
        ensure!(
            w.snapshots().is_empty(),
            "{} still holds snapshots {:?}",
            w.label(),
            w.snapshots()
        );
        ensure!(
            w.calls().contains(&Call::Clear { tag: tag.into() }),
            "{} was never asked to clear {tag}: {:?}",
            w.label(),
            w.calls()
        );
    }
    Ok(())
}

fn node<'a>(run: &'a pb::Run, w: &FakeWorker) -> anyhow::Result<&'a pb::NodeProgress> {
    run.nodes
        .iter()
        .find(|n| n.host_id == w.host_id())
        .with_context(|| format!("{} is not in the run's view", w.label()))
}

/// The node never sent a blob it (or anyone) had already stored.
fn assert_no_blob_sent_twice(w: &FakeWorker) -> anyhow::Result<()> {
    let puts = w.puts();
    let distinct: BTreeSet<&ContentHash> = puts.iter().collect();
    ensure!(
        distinct.len() == puts.len(),
        "{} sent a blob twice: {puts:?}",
        w.label()
    );
    Ok(())
}

fn uploads(w: &FakeWorker) -> usize {
    w.calls()
        .iter()
        .filter(|c| matches!(c, Call::Upload { .. }))
        .count()
}

/// The committed backup holds exactly each node's files, every blob is stored with the bytes
/// its hash names, and the run's schema, topology and manifests are in the store.
async fn assert_committed(h: &Harness, run: &str, nodes: &[FakeWorker]) -> anyhow::Result<()> {
    let st = h.store.as_ref();
    let id = RunId::parse(run)?;
    let m: RunManifest = json(st, &layout::run_manifest(&id)).await?;
    let want_files: usize = nodes.iter().map(|w| w.files().len()).sum();
    let distinct: BTreeSet<ContentHash> = nodes
        .iter()
        .flat_map(|w| w.files().iter().map(FakeFile::hash))
        .collect();
    ensure!(m.total_files == want_files as u64, "manifest: {m:?}");
    ensure!(m.distinct_blobs == distinct.len() as u64, "manifest: {m:?}");
    ensure!(m.nodes.len() == nodes.len(), "manifest: {m:?}");
    for w in nodes {
        let host = ringvault_common::manifest::HostId::parse(&w.host_id())?;
        let nm: NodeManifest = json(st, &layout::node_manifest(&id, &host)).await?;
        let got: BTreeMap<(String, String, String), ContentHash> = nm
            .files
            .iter()
            .map(|f| {
                (
                    (
                        f.keyspace.to_string(),
                        f.table.to_string(),
                        f.name.to_string(),
                    ),
                    f.hash.clone(),
                )
            })
            .collect();
        let want: BTreeMap<(String, String, String), ContentHash> = w
            .files()
            .iter()
            .map(|f| {
                (
                    (f.keyspace.clone(), f.table.clone(), f.name.clone()),
                    f.hash(),
                )
            })
            .collect();
        ensure!(
            nm.files.len() == want.len() && got == want,
            "{}: the node manifest lists {:?}, the node holds {:?}",
            w.label(),
            got,
            want
        );
    }
    for f in nodes.iter().flat_map(|w| w.files()) {
        let bytes = get_bytes(st, &layout::blob(&f.hash()), 1 << 20).await?;
        ensure!(
            ContentHash::of(&bytes) == f.hash() && bytes == f.content.as_ref(),
            "blob {} does not hold the file's bytes",
            f.hash()
        );
    }
    let stored_blobs = st.list("blobs/").await?.len();
    ensure!(
        stored_blobs == distinct.len(),
        "{stored_blobs} blobs stored, {} distinct files",
        distinct.len()
    );
    let topology: Topology = json(st, &layout::run_topology(&id)).await?;
    let hosts: BTreeSet<String> = topology
        .nodes
        .iter()
        .map(|n| n.host_id.as_str().to_string())
        .collect();
    let want_hosts: BTreeSet<String> = nodes.iter().map(FakeWorker::host_id).collect();
    ensure!(hosts == want_hosts, "topology: {topology:?}");
    let schema = get_bytes(st, &layout::run_schema(&id), 1 << 20).await?;
    ensure!(
        String::from_utf8_lossy(&schema).contains("CREATE TABLE ks1.t2"),
        "schema.cql lacks the tables"
    );
    ensure!(
        st.head(&layout::run_lease(&id)).await?.is_none(),
        "the run's lease was left after the commit"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_three_nodes_commits_every_file_once_and_clears_its_snapshots()
-> anyhow::Result<()> {
    let h = Harness::start(&[]).await?;
    let nodes = h.cluster(files, scripts(3)).await?;
    let started = h.start_backup(&["ks1"]).await?;
    let run = h.wait_end(&started.run_id).await?;
    ensure!(
        run.state == "DONE",
        "run ended {}: {}",
        run.state,
        run.error
    );
    ensure!(run.stage == "done", "run ended in stage {}", run.stage);
    for w in &nodes {
        let n = node(&run, w)?;
        ensure!(
            n.state == "DONE" && n.snapshot == "cleared" && n.retries == 0,
            "{}: {n:?}",
            w.label()
        );
        ensure!(
            n.files_done == 4 && n.files_total == 4,
            "{}: {n:?}",
            w.label()
        );
        ensure!(
            w.calls()
                == vec![
                    Call::Snapshot {
                        tag: started.tag.clone(),
                        replace: false
                    },
                    Call::Upload {
                        tag: started.tag.clone()
                    },
                    Call::Clear {
                        tag: started.tag.clone()
                    },
                ],
            "{}: calls {:?}",
            w.label(),
            w.calls()
        );
    }
    // Each node sent each of its blobs at most once (the shared one may race between nodes),
    // and the run counts exactly what was sent.
    for w in &nodes {
        assert_no_blob_sent_twice(w)?;
        ensure!(
            node(&run, w)?.files_uploaded == w.puts().len() as u64,
            "{}: the run counts {} files uploaded, the node sent {}",
            w.label(),
            node(&run, w)?.files_uploaded,
            w.puts().len()
        );
    }
    assert_committed(&h, &started.run_id, &nodes).await?;
    assert_cleared(&nodes, &started.tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failing_during_upload_fails_the_run_naming_it_and_clears_every_snapshot()
-> anyhow::Result<()> {
    let h = Harness::start(&[]).await?;
    let mut s = scripts(3);
    s[1].fail_upload_after = Some((
        1,
        tonic::Code::Internal,
        "reading nb-1-big-CompressionInfo.db: input/output error".into(),
    ));
    let nodes = h.cluster(files, s).await?;
    let started = h.start_backup(&["ks1"]).await?;
    let run = h.wait_end(&started.run_id).await?;
    ensure!(
        run.state == "FAILED",
        "run ended {}: {}",
        run.state,
        run.error
    );
    let failing = &nodes[1];
    ensure!(
        run.error.contains(&failing.label()) && run.error.contains("input/output error"),
        "the error does not name the failing node and its reason: {}",
        run.error
    );
    let n = node(&run, failing)?;
    ensure!(
        n.state == "FAILED" && n.error.contains("input/output error"),
        "{n:?}"
    );
    // The worker answered the failure itself: not re-issued.
    ensure!(uploads(failing) == 1, "calls {:?}", failing.calls());
    for w in &nodes {
        ensure!(node(&run, w)?.snapshot == "cleared", "{}", w.label());
    }
    assert_cleared(&nodes, &started.tag)?;
    let id = RunId::parse(&started.run_id)?;
    ensure!(
        h.store.head(&layout::run_manifest(&id)).await?.is_none(),
        "a failed run was committed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarting_mid_upload_gets_its_upload_reissued_and_the_backup_commits()
-> anyhow::Result<()> {
    let h = Harness::start(&[]).await?;
    let mut s = scripts(3);
    s[2].restart_upload_after = Some(2);
    let nodes = h.cluster(files, s).await?;
    let before = nodes[2].info().instance_id;
    let started = h.start_backup(&["ks1"]).await?;
    let run = h.wait_end(&started.run_id).await?;
    ensure!(
        run.state == "DONE",
        "run ended {}: {}",
        run.state,
        run.error
    );
    let restarted = &nodes[2];
    ensure!(
        restarted.info().instance_id != before,
        "the fake did not restart"
    );
    let n = node(&run, restarted)?;
    ensure!(n.retries == 1, "{n:?}");
    ensure!(uploads(restarted) == 2, "calls {:?}", restarted.calls());
    for w in &nodes[..2] {
        ensure!(uploads(w) == 1, "{}: calls {:?}", w.label(), w.calls());
    }
    // The re-issued upload found the first attempt's blobs in the store: none went up twice.
    ensure!(
        restarted.puts().len() >= 2,
        "the first attempt sent {:?}",
        restarted.puts()
    );
    for w in &nodes {
        assert_no_blob_sent_twice(w)?;
    }
    assert_committed(&h, &started.run_id, &nodes).await?;
    assert_cleared(&nodes, &started.tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_backup_and_clears_every_snapshot() -> anyhow::Result<()> {
    let h = Harness::start(&[]).await?;
    let s = vec![
        Script {
            hold_upload: true,
            ..Default::default()
        };
        3
    ];
    let nodes = h.cluster(files, s).await?;
    let started = h.start_backup(&["ks1"]).await?;
    for w in &nodes {
        w.wait_holding().await;
    }
    let view = h
        .client
        .clone()
        .cancel_run(pb::GetRunRequest {
            run_id: started.run_id.clone(),
        })
        .await?
        .into_inner();
    ensure!(view.stage == "upload", "cancelled in stage {}", view.stage);
    let run = h.wait_end(&started.run_id).await?;
    ensure!(
        run.state == "CANCELLED" && run.error.contains("cancelled"),
        "run ended {}: {}",
        run.state,
        run.error
    );
    assert_cleared(&nodes, &started.tag)?;
    let id = RunId::parse(&started.run_id)?;
    ensure!(
        h.store.head(&layout::run_manifest(&id)).await?.is_none(),
        "a cancelled run was committed"
    );
    // A run that has ended cannot be cancelled again.
    let again = h
        .client
        .clone()
        .cancel_run(pb::GetRunRequest {
            run_id: started.run_id.clone(),
        })
        .await
        .expect_err("cancelling an ended run");
    ensure!(
        again.message().contains("not running"),
        "{}",
        again.message()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_of_a_cluster_is_refused_while_one_runs() -> anyhow::Result<()> {
    let h = Harness::start(&[]).await?;
    let s = vec![
        Script {
            hold_upload: true,
            ..Default::default()
        };
        3
    ];
    let nodes = h.cluster(files, s).await?;
    let first = h.start_backup(&["ks1"]).await?;
    for w in &nodes {
        w.wait_holding().await;
    }
    let refused = h
        .start_backup(&["ks1"])
        .await
        .expect_err("a second run on a busy cluster");
    ensure!(
        refused.code() == tonic::Code::Aborted,
        "a conflict is Aborted, refused with {:?}: {}",
        refused.code(),
        refused.message()
    );
    ensure!(
        refused.message().contains(&first.run_id),
        "the refusal does not name the running run: {}",
        refused.message()
    );
    for w in &nodes {
        let snaps: Vec<Call> = w
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Snapshot { .. }))
            .collect();
        ensure!(
            snaps
                == vec![Call::Snapshot {
                    tag: first.tag.clone(),
                    replace: false
                }],
            "{}: the refused run snapshotted: {snaps:?}",
            w.label()
        );
        w.release_uploads();
    }
    let run = h.wait_end(&first.run_id).await?;
    ensure!(
        run.state == "DONE",
        "run ended {}: {}",
        run.state,
        run.error
    );
    // The cluster is free again.
    let next = h.start_backup(&["ks1"]).await?;
    let run = h.wait_end(&next.run_id).await?;
    ensure!(
        run.state == "DONE",
        "run ended {}: {}",
        run.state,
        run.error
    );
    assert_cleared(&nodes, &next.tag)
}
