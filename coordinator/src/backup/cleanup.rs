//! Stage `cleanup`: `nodetool clearsnapshot -t TAG` on every node where this run took a
//! snapshot, whether the run succeeded or not. After a coordinator restart the same is done
//! for runs it could not resume, as soon as their workers are back. A node whose snapshot was
//! only requested (the worker died during the call) is cleared too: it may have been taken.
use std::sync::Arc;
use std::time::Duration;

use ringvault_common::SnapshotTag;
use ringvault_proto::v1 as pb;

use super::{PlannedNode, Retry, RunContext, connect_worker};
use crate::Coordinator;
use crate::db::RunNodeRow;
use crate::run::SnapshotMark;

const CLEAR_TIMEOUT: Duration = Duration::from_secs(60);

/// Clears the run's snapshot on every node that took it; reports the nodes where that failed.
pub async fn clear_snapshots(ctx: &RunContext, nodes: &[PlannedNode]) -> anyhow::Result<()> {
    crate::test_hooks::pause(
        crate::test_hooks::CLEANUP_PAUSE_ENV,
        "backup cleanup before clearing snapshots",
    )
    .await;
    let view = ctx.handle.snapshot();
    let taken: Vec<&PlannedNode> = nodes
        .iter()
        .filter(|n| {
            view.nodes
                .iter()
                .any(|v| v.host_id == n.info.host_id && v.snapshot.may_exist())
        })
        .collect();
    let calls = taken.iter().map(|n| clear_on(ctx, n));
    let errors: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    ctx.persist_nodes().await?;
    if !errors.is_empty() {
        anyhow::bail!(
            "snapshot {} not cleared on {} (its TTL of {}s will remove it)",
            ctx.tag,
            errors.join("; "),
            ctx.coord.opts.snapshot_ttl_secs
        );
    }
    Ok(())
}

/// Clears the snapshot on one node, re-issuing it if the worker restarts meanwhile.
async fn clear_on(ctx: &RunContext, n: &PlannedNode) -> Result<(), String> {
    // Cleanup runs after a cancel too: waiting for a worker must not stop on the run's token.
    let never = tokio_util::sync::CancellationToken::new();
    for _ in 0..3 {
        let r = tokio::time::timeout(
            CLEAR_TIMEOUT,
            n.client.clone().clear_snapshot(pb::ClearSnapshotRequest {
                tag: ctx.tag.to_string(),
            }),
        )
        .await;
        let failed = match r {
            Ok(Ok(_)) => {
                ctx.handle
                    .update_node(&n.info.host_id, |p| p.snapshot = SnapshotMark::Cleared);
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => tonic::Status::unavailable(format!("no answer within {CLEAR_TIMEOUT:?}")),
        };
        match n
            .after_failure(&failed, ctx.coord.worker_grace(), &never)
            .await
        {
            Ok(Retry::Reissue) => ctx.handle.update_node(&n.info.host_id, |p| p.retries += 1),
            Ok(Retry::GiveUp) => return Err(format!("{}: {}", n.label(), failed.message())),
            Err(e) => return Err(format!("{e:#}")),
        }
    }
    Err(format!("{}: clearsnapshot kept failing", n.label()))
}

/// After a restart: waits (up to ten minutes) for each worker of the run to be back, then
/// clears the run's snapshot there and records it.
pub async fn clear_after_restart(
    coord: Arc<Coordinator>,
    run_id: String,
    tag: SnapshotTag,
    nodes: Vec<RunNodeRow>,
) {
    for mut node in nodes.into_iter().filter(|n| n.snapshot.may_exist()) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let result = async {
                let mut client = connect_worker(&node.worker_address).await?;
                client
                    .clear_snapshot(pb::ClearSnapshotRequest {
                        tag: tag.to_string(),
                    })
                    .await?;
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(run = run_id, node = node.address, %tag, "cleared the snapshot of an unfinished run");
                    node.snapshot = SnapshotMark::Cleared;
                    let (id, row) = (run_id.clone(), node.clone());
                    if let Err(e) = coord.db.call(move |db| db.put_run_node(&id, &row)).await {
                        tracing::warn!(error = %format!("{e:#}"), "recording a cleared snapshot");
                    }
                    break;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %format!("{e:#}"), node = node.address, "worker not back yet");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), node = node.address, %tag, "giving up clearing the snapshot; its TTL will remove it");
                    break;
                }
            }
        }
    }
}
