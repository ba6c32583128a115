//! Stage `commit`: each node's manifest goes to the store; every blob the run refers to is
//! checked to be in the store with its recorded size; only then is `manifest.json` written,
//! last, making the run a backup.
use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_common::manifest::{FORMAT_VERSION, HostId, NodeManifest, NodeTotals, RunManifest};

use super::schema::describe;
use super::upload::NodeFiles;
use super::{PlannedNode, RunContext};
use crate::now_ms;

const HEAD_PARALLELISM: usize = 32;

/// Commits the run.
pub async fn commit(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    files: Vec<NodeFiles>,
) -> anyhow::Result<()> {
    let store = &ctx.coord.store;
    // A resumed run may have committed before the restart: its marker is never rewritten.
    if store
        .head(&layout::run_manifest(&ctx.run_id))
        .await?
        .is_some()
    {
        tracing::info!(run = %ctx.run_id, "already committed before the restart");
        return Ok(());
    }
    let mut blobs: BTreeMap<ContentHash, u64> = BTreeMap::new();
    for nf in &files {
        for f in &nf.files {
            if let Some(size) = blobs.insert(f.hash.clone(), f.size)
                && size != f.size
            {
                anyhow::bail!(
                    "blob {} recorded with two sizes ({size} and {})",
                    f.hash,
                    f.size
                );
            }
        }
    }
    // Every blob must be in the store with its size before anything claims the run is done.
    let wanted: Vec<(ContentHash, u64)> = blobs.iter().map(|(h, s)| (h.clone(), *s)).collect();
    let missing: Vec<String> = futures::stream::iter(wanted)
        .map(|(hash, size)| {
            let store = std::sync::Arc::clone(store);
            async move { check_blob(store, hash, size).await }
        })
        .buffer_unordered(HEAD_PARALLELISM)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    if !missing.is_empty() {
        anyhow::bail!(
            "{} blob(s) not in the store as recorded, e.g. {}",
            missing.len(),
            missing[0]
        );
    }
    write_manifests(ctx, nodes, &files, blobs).await
}

async fn check_blob(
    store: std::sync::Arc<dyn ringvault_common::store::Store>,
    hash: ContentHash,
    size: u64,
) -> Option<String> {
    match store.head(&layout::blob(&hash)).await {
        Ok(Some(m)) if m.size == size => None,
        Ok(Some(m)) => Some(format!("{hash}: stored {} bytes, expected {size}", m.size)),
        Ok(None) => Some(format!("{hash}: missing")),
        Err(e) => Some(format!("{hash}: {e}")),
    }
}

async fn write_manifests(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    files: &[NodeFiles],
    blobs: BTreeMap<ContentHash, u64>,
) -> anyhow::Result<()> {
    let store = &ctx.coord.store;
    let mut totals = Vec::new();
    for n in nodes {
        let nf = files
            .iter()
            .find(|f| f.host_id == n.info.host_id)
            .ok_or_else(|| anyhow::anyhow!("{} reported no files", n.label()))?;
        let manifest = NodeManifest {
            format_version: FORMAT_VERSION,
            run_id: ctx.run_id.clone(),
            node: describe(n)?,
            snapshot_taken_unix_ms: ctx.started_ms,
            files: nf.files.clone(),
        };
        let host = HostId::parse(&n.info.host_id)?;
        store
            .put(
                &layout::node_manifest(&ctx.run_id, &host),
                Bytes::from(serde_json::to_vec(&manifest)?),
            )
            .await?;
        totals.push(NodeTotals {
            host_id: host,
            address: n.info.address.clone(),
            files: nf.files.len() as u64,
            bytes: nf.files.iter().map(|f| f.size).sum(),
        });
    }
    let manifest = RunManifest {
        format_version: FORMAT_VERSION,
        run_id: ctx.run_id.clone(),
        tag: ctx.tag.clone(),
        cluster_name: ctx.handle.cluster_name.clone(),
        keyspaces: ctx.req.keyspaces.iter().map(ToString::to_string).collect(),
        tables: ctx.req.tables.iter().map(ToString::to_string).collect(),
        started_unix_ms: ctx.started_ms,
        committed_unix_ms: now_ms(),
        hash_algorithm: ContentHash::ALGORITHM.into(),
        total_files: totals.iter().map(|t| t.files).sum(),
        total_bytes: totals.iter().map(|t| t.bytes).sum(),
        distinct_blobs: blobs.len() as u64,
        schedule: ctx.req.schedule_id.clone().unwrap_or_default(),
        nodes: totals,
    };
    store
        .put(
            &layout::run_manifest(&ctx.run_id),
            Bytes::from(serde_json::to_vec_pretty(&manifest)?),
        )
        .await?;
    let id = ctx.run_id.to_string();
    let rows: Vec<(String, u64)> = blobs.into_iter().map(|(h, s)| (h.to_string(), s)).collect();
    ctx.coord
        .db
        .call(move |db| db.record_blobs(&id, &rows, now_ms()))
        .await?;
    ctx.handle.update(|r| {
        for n in &mut r.nodes {
            n.state = "DONE".into();
        }
    });
    Ok(())
}
