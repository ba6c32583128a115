//! Stage `commit`: the run's lease (`runs/<id>/lease.json`, every blob it refers to, including
//! those reused without uploading) is written first, then the commit waits for every purge
//! sweep window announced on the store to close; only then is every blob checked to be in the
//! store with its recorded size, the node manifests written, and `manifest.json` last, making
//! the run a backup. The lease is deleted after the commit. See `docs/design.md` ("Purge
//! protocol") for why this order keeps a concurrent purge of any coordinator from deleting a
//! reused blob.
use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_common::manifest::{
    FORMAT_VERSION, HostId, NodeManifest, NodeTotals, RecordedRetention, RunLease, RunManifest,
};

use super::schema::describe;
use super::upload::NodeFiles;
use super::{PlannedNode, RunContext};
use crate::now_ms;
use crate::run::NodeState;

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
    // Announce the blobs before relying on them: a purge sweep window opened from now on sees
    // the lease; one opened before must close before the blobs are checked below.
    let lease = RunLease {
        run_id: ctx.run_id.clone(),
        written_unix_ms: now_ms(),
        expires_unix_ms: now_ms() + crate::purge::LEASE_TTL.as_millis() as i64,
        blobs: blobs.keys().cloned().collect(),
    };
    let lease_key = layout::run_lease(&ctx.run_id);
    store
        .put(&lease_key, Bytes::from(serde_json::to_vec(&lease)?))
        .await?;
    crate::purge::wait_for_sweeps(store.as_ref()).await?;
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
    write_manifests(ctx, nodes, &files, blobs).await?;
    if let Err(e) = store.delete_many(std::slice::from_ref(&lease_key)).await {
        tracing::warn!(run = %ctx.run_id, error = %e, "lease left behind (it expires)");
    }
    Ok(())
}

/// The retention rule of the schedule that started the run, recorded in its manifest.
async fn schedule_retention(ctx: &RunContext) -> anyhow::Result<Option<RecordedRetention>> {
    let Some(id) = ctx.req.schedule_id.clone() else {
        return Ok(None);
    };
    let schedules = ctx.coord.db.call(|db| db.schedules()).await?;
    Ok(schedules
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| RecordedRetention {
            keep_last: s.keep_last,
            keep_days: s.keep_days,
        }))
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
        retention: schedule_retention(ctx).await?,
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
            n.state = NodeState::Done;
        }
    });
    Ok(())
}
