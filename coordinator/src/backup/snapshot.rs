//! Stage `snapshot`: `nodetool snapshot` on every node at once, with one tag and the safety-net
//! TTL. A node whose snapshot succeeded is marked so cleanup clears it whatever happens next.
use ringvault_proto::v1 as pb;

use super::{PlannedNode, RunContext};

/// Takes the run's snapshot on every node; fails naming each node that refused.
pub async fn take(ctx: &RunContext, nodes: &[PlannedNode]) -> anyhow::Result<()> {
    let req = pb::SnapshotRequest {
        tag: ctx.tag.to_string(),
        selection: Some(ctx.req.selection()),
        ttl_seconds: ctx.coord.opts.snapshot_ttl_secs,
        min_free_bytes: ctx.coord.opts.min_free_bytes,
    };
    let calls = nodes.iter().map(|n| {
        let req = req.clone();
        async move {
            ctx.handle
                .update_node(&n.info.host_id, |p| p.state = "SNAPSHOTTING".into());
            let r = n.client.clone().snapshot(req).await;
            match &r {
                Ok(_) => ctx.handle.update_node(&n.info.host_id, |p| {
                    p.state = "SNAPSHOT_TAKEN".into();
                    p.snapshot = "taken".into();
                }),
                Err(e) => ctx.handle.update_node(&n.info.host_id, |p| {
                    p.state = "FAILED".into();
                    p.error = e.message().to_string();
                }),
            }
            r.map(|_| ())
                .map_err(|e| format!("{}: {}", n.label(), e.message()))
        }
    });
    let results = futures::future::join_all(calls).await;
    ctx.persist_nodes().await?;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        anyhow::bail!("snapshot failed on {}", errors.join("; "));
    }
    Ok(())
}
