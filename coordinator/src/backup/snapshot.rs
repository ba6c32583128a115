//! Stage `snapshot`: `nodetool snapshot` on every node (or `nodes_at_once` at a time), with
//! one tag and the safety-net TTL. A node is marked `requested` (and persisted) before the
//! call, so cleanup clears a snapshot even when the worker died while taking it; a worker that
//! restarts mid-call gets the snapshot re-issued, replacing its own partial one.
use crate::run::{NodeState, SnapshotMark};
use futures::StreamExt;
use ringvault_proto::v1 as pb;

use super::{PlannedNode, Retry, RunContext};

/// Takes the run's snapshot on every node; fails naming each node that refused.
pub async fn take(ctx: &RunContext, nodes: &[PlannedNode]) -> anyhow::Result<()> {
    for n in nodes {
        ctx.handle.update_node(&n.info.host_id, |p| {
            p.state = NodeState::Waiting;
            if p.snapshot != SnapshotMark::Taken {
                p.snapshot = SnapshotMark::Requested;
            }
        });
    }
    ctx.persist_nodes().await?;
    let parallel = ctx.req.limits.parallel_nodes(nodes.len());
    // Futures built up front: a closure over `&PlannedNode` would not be `Send` for every
    // lifetime once the run is spawned.
    let calls: Vec<_> = nodes.iter().map(|n| take_on(ctx, n)).collect();
    let results: Vec<Result<(), String>> = futures::stream::iter(calls)
        .buffer_unordered(parallel)
        .collect()
        .await;
    ctx.persist_nodes().await?;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        anyhow::bail!("snapshot failed on {}", errors.join("; "));
    }
    Ok(())
}

async fn take_on(ctx: &RunContext, n: &PlannedNode) -> Result<(), String> {
    let host = &n.info.host_id;
    ctx.handle
        .update_node(host, |p| p.state = NodeState::Snapshotting);
    let mut replace = ctx.resumed;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let req = pb::SnapshotRequest {
            tag: ctx.tag.to_string(),
            selection: Some(ctx.req.selection()),
            ttl_seconds: ctx.coord.opts.snapshot_ttl_secs,
            min_free_bytes: ctx.coord.opts.min_free_bytes,
            replace_existing: replace,
        };
        let failed = match n.client.clone().snapshot(req).await {
            Ok(_) => {
                ctx.handle.update_node(host, |p| {
                    p.state = NodeState::SnapshotTaken;
                    p.snapshot = SnapshotMark::Taken;
                });
                return Ok(());
            }
            Err(status) => status,
        };
        match ctx.retry_decision(n, &failed, attempt).await {
            Ok(Retry::Reissue) => {
                // The earlier attempt may have left a partial snapshot under the tag.
                replace = true;
                ctx.handle.update_node(host, |p| p.retries += 1);
            }
            Ok(Retry::GiveUp) => {
                let msg = failed.message().to_string();
                ctx.handle.update_node(host, |p| {
                    p.state = NodeState::Failed;
                    p.error = msg.clone();
                });
                return Err(format!("{}: {msg}", n.label()));
            }
            Err(e) => {
                let msg = format!("{e:#}");
                ctx.handle.update_node(host, |p| {
                    p.state = NodeState::Failed;
                    p.error = msg.clone();
                });
                return Err(msg);
            }
        }
    }
}
