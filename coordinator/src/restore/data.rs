//! Stages `download`, `import`/`load` and `cleanup` of a restore: each target worker stages and
//! verifies its files (every worker finishes verifying before any import starts, so a corrupt
//! blob stops the restore before live data is touched), then imports or loads table by table,
//! then its staging directory is removed.
use std::future::Future;

use ringvault_proto::v1 as pb;

use super::{Assignment, Mode, RestorePlan};
use crate::Coordinator;
use crate::run::{NodeState, RunHandle};

/// Downloads every assignment in parallel; fails naming the node and the file.
pub async fn download_all(
    coord: &Coordinator,
    handle: &RunHandle,
    plan: &RestorePlan,
) -> anyhow::Result<()> {
    let _ = coord;
    let calls = plan
        .assignments
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| async move {
            let r = download(handle, plan, a).await;
            let host = &a.target.info.host_id;
            match &r {
                Ok(()) => handle.update_node(host, |p| p.state = NodeState::Staged),
                Err(e) => handle.update_node(host, |p| {
                    p.state = NodeState::Failed;
                    p.error = format!("{e:#}");
                }),
            }
            r.map_err(|e| anyhow::anyhow!("{}: {e:#}", a.target.label()))
        });
    join_all_nodes(calls).await
}

async fn download(handle: &RunHandle, plan: &RestorePlan, a: &Assignment) -> anyhow::Result<()> {
    let host = a.target.info.host_id.clone();
    handle.update_node(&host, |p| p.state = NodeState::Downloading);
    // The worker lists its files from the node manifests in the store: the request names the
    // tables of each source node and the totals it must find.
    let request = pb::DownloadRequest {
        backup_run_id: plan.backup_run.to_string(),
        store_url: plan.store_url.clone(),
        files: Vec::new(),
        concurrency: 0,
        bandwidth_bytes_per_sec: plan.bandwidth,
        attempt_id: handle.id.clone(),
        from_manifests: a.selections(),
    };
    let expected = a.totals().files;
    let mut stream = a
        .target
        .client
        .clone()
        .download(tokio_stream::iter([request]))
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner();
    let mut done = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(ev)) => match ev.event {
                Some(pb::download_event::Event::Progress(p)) => {
                    handle.update_node(&host, |x| x.bytes_done += p.bytes)
                }
                Some(pb::download_event::Event::File(f)) => {
                    done += 1;
                    handle.update_node(&host, |x| {
                        x.files_done += 1;
                        if !f.already_staged {
                            x.files_uploaded += 1;
                            x.bytes_uploaded += f.file.as_ref().map(|f| f.size).unwrap_or(0);
                        }
                    });
                }
                Some(pb::download_event::Event::Plan(_)) | None => {}
            },
            Ok(None) => break,
            Err(e) => anyhow::bail!("{}", e.message()),
        }
    }
    anyhow::ensure!(done == expected, "worker staged {done} of {expected} files");
    Ok(())
}

/// Runs `step` on every table an assignment staged (given as the `StagedTable` its Import or
/// Load names: only the files this run's Download verified), nodes in parallel and a node's
/// tables one after another. A failing step (the worker's message) marks its node failed and
/// stops that node; a node whose tables all passed becomes `done`. Fails with every failed
/// node's error, as `node: {verb}ks.table: message`.
pub async fn each_staged_table<'a, F, Fut>(
    handle: &'a RunHandle,
    plan: &'a RestorePlan,
    verb: &str,
    done: NodeState,
    step: F,
) -> anyhow::Result<()>
where
    F: Fn(&'a Assignment, pb::StagedTable) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let calls = plan.assignments.iter().filter(|a| !a.is_empty()).map(|a| {
        let (step, done) = (&step, done.clone());
        async move {
            let host = &a.target.info.host_id;
            for (src, ks, table) in a.staged_tables() {
                let staged = pb::StagedTable {
                    backup_run_id: plan.backup_run.to_string(),
                    source_host_id: src,
                    keyspace: ks.clone(),
                    table: table.clone(),
                    attempt_id: handle.id.clone(),
                };
                if let Err(msg) = step(a, staged).await {
                    handle.update_node(host, |p| {
                        p.state = NodeState::Failed;
                        p.error = msg.clone();
                    });
                    anyhow::bail!("{}: {verb}{ks}.{table}: {msg}", a.target.label());
                }
            }
            handle.update_node(host, |p| p.state = done);
            anyhow::Ok(())
        }
    });
    join_all_nodes(calls).await
}

/// Awaits every node's call; fails with all their errors, joined.
async fn join_all_nodes(
    calls: impl Iterator<Item = impl Future<Output = anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let errors: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// Imports (or loads) every staged table, nodes in parallel, tables one after another.
pub async fn apply_all(handle: &RunHandle, plan: &RestorePlan) -> anyhow::Result<()> {
    let hosts: Vec<String> = plan.nodes.iter().map(|n| n.info.address.clone()).collect();
    each_staged_table(handle, plan, "", NodeState::Done, |a, staged| {
        let hosts = hosts.clone();
        async move {
            let t = format!("{}.{}", staged.keyspace, staged.table);
            handle.update_node(&a.target.info.host_id, |p| {
                p.state = if plan.mode == Mode::Import {
                    NodeState::Importing(t)
                } else {
                    NodeState::Loading(t)
                }
            });
            let mut client = a.target.client.clone();
            let r = match plan.mode {
                Mode::Import => client
                    .import(pb::ImportRequest {
                        table: Some(staged),
                    })
                    .await
                    .map(|_| ()),
                Mode::Loader => client
                    .load(pb::LoadRequest {
                        table: Some(staged),
                        hosts,
                        target_keyspace: String::new(),
                    })
                    .await
                    .map(|_| ()),
            };
            r.map_err(|e| e.message().to_string())
        }
    })
    .await
}

/// Removes the staging directories once the data is in.
pub async fn clean_all(plan: &RestorePlan) -> anyhow::Result<()> {
    for a in &plan.assignments {
        a.target
            .client
            .clone()
            .clean_staging(pb::CleanStagingRequest {
                backup_run_id: plan.backup_run.to_string(),
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!("{}: removing staging: {}", a.target.label(), e.message())
            })?;
    }
    Ok(())
}
