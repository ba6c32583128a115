//! Stage `commit`: the run's lease (`runs/<id>/lease.json`, every blob it refers to, including
//! those reused without uploading) is written first, then the commit waits for every purge
//! sweep window announced on the store to close; only then is every blob checked to be in the
//! store with its recorded size, the node manifests written, and `manifest.json` last, making
//! the run a backup. The lease is deleted after the commit. Workers may have reported a blob
//! present from their own memory (`trust_seen_blobs`); when one is missing here, the upload
//! runs once more with every blob asked for (and put back), and the check is repeated. See `docs/design.md` ("Purge
//! protocol") for why this order keeps a concurrent purge of any coordinator from deleting a
//! reused blob.
use bytes::Bytes;
use futures::StreamExt;
use ringvault_common::hash::ContentHash;
use ringvault_common::layout;
use ringvault_common::manifest::{
    FORMAT_VERSION, FileEntry, HostId, NodeManifest, NodeTotals, RecordedRetention, RunLease,
    RunManifest,
};
use ringvault_common::{Identifier, RelativeName};

use super::schema::describe;
use super::upload::NodeFiles;
use super::{PlannedNode, RunContext};
use crate::db::RunFileRow;
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
    let blobs = lease_blobs(ctx).await?;
    crate::purge::wait_for_sweeps(store.as_ref()).await?;
    // Every blob must be in the store with its size before anything claims the run is done.
    let mut missing = missing_blobs(ctx, &blobs).await;
    let (files, blobs) = if missing.is_empty() {
        (files, blobs)
    } else {
        // Workers may have taken a blob's presence from their own memory (`trust_seen_blobs`)
        // and a purge removed it since: every node's upload again, each blob asked for and
        // put back if gone, then every blob checked once more. The lease already covers
        // them, and every purge window that opened before it has closed.
        tracing::warn!(
            run = %ctx.run_id,
            missing = missing.len(),
            example = %missing[0],
            "blobs missing at commit; uploading again with every blob checked"
        );
        let files = super::upload::upload_checked(ctx, nodes).await?;
        let blobs = lease_blobs(ctx).await?;
        missing = missing_blobs(ctx, &blobs).await;
        (files, blobs)
    };
    if !missing.is_empty() {
        anyhow::bail!(
            "{} blob(s) not in the store as recorded, e.g. {}",
            missing.len(),
            missing[0]
        );
    }
    write_manifests(ctx, nodes, &files, blobs).await?;
    let lease_key = layout::run_lease(&ctx.run_id);
    if let Err(e) = store.delete_many(std::slice::from_ref(&lease_key)).await {
        tracing::warn!(run = %ctx.run_id, error = %e, "lease left behind (it expires)");
    }
    Ok(())
}

/// The run's distinct blobs from its file rows (one hash with two sizes fails here), written
/// to the run's lease before anything relies on them: a purge sweep window opened from then
/// on sees the lease; one opened before must close before the blobs are checked.
async fn lease_blobs(ctx: &RunContext) -> anyhow::Result<Vec<(ContentHash, u64)>> {
    let id = ctx.run_id.to_string();
    let blobs: Vec<(ContentHash, u64)> = ctx
        .coord
        .db
        .call(move |db| db.run_blobs(&id))
        .await?
        .into_iter()
        .map(|(h, s)| Ok((ContentHash::parse(&h)?, s)))
        .collect::<anyhow::Result<_>>()?;
    let lease = RunLease {
        run_id: ctx.run_id.clone(),
        written_unix_ms: now_ms(),
        expires_unix_ms: now_ms() + crate::purge::LEASE_TTL.as_millis() as i64,
        blobs: blobs.iter().map(|(h, _)| h.clone()).collect(),
    };
    ctx.coord
        .store
        .put(
            &layout::run_lease(&ctx.run_id),
            Bytes::from(serde_json::to_vec(&lease)?),
        )
        .await?;
    Ok(blobs)
}

/// The blobs not in the store with their recorded size, described.
async fn missing_blobs(ctx: &RunContext, blobs: &[(ContentHash, u64)]) -> Vec<String> {
    futures::stream::iter(blobs.iter().cloned())
        .map(|(hash, size)| {
            let store = std::sync::Arc::clone(&ctx.coord.store);
            async move { check_blob(store, hash, size).await }
        })
        .buffer_unordered(HEAD_PARALLELISM)
        .filter_map(|x| async move { x })
        .collect()
        .await
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

/// Node manifests written at once: each holds one node's file list in memory.
const MANIFEST_PARALLELISM: usize = 4;

/// Writes one node's manifest from its file rows in the database; they must be exactly what
/// its upload reported.
async fn write_node_manifest(
    ctx: &RunContext,
    n: &PlannedNode,
    files: &[NodeFiles],
) -> anyhow::Result<NodeTotals> {
    let nf = files
        .iter()
        .find(|f| f.host_id == n.info.host_id)
        .ok_or_else(|| anyhow::anyhow!("{} reported no files", n.label()))?;
    let (id, host_id) = (ctx.run_id.to_string(), n.info.host_id.clone());
    let entries = ctx
        .coord
        .db
        .call(move |db| db.node_files(&id, &host_id))
        .await?
        .into_iter()
        .map(entry_from_row)
        .collect::<anyhow::Result<Vec<FileEntry>>>()?;
    let bytes: u64 = entries.iter().map(|f| f.size).sum();
    if entries.len() as u64 != nf.files || bytes != nf.bytes {
        anyhow::bail!(
            "{}: {} files / {bytes} bytes recorded, but its upload reported {} / {}",
            n.label(),
            entries.len(),
            nf.files,
            nf.bytes
        );
    }
    let manifest = NodeManifest {
        format_version: FORMAT_VERSION,
        run_id: ctx.run_id.clone(),
        node: describe(n)?,
        snapshot_taken_unix_ms: ctx.started_ms,
        files: entries,
    };
    let host = HostId::parse(&n.info.host_id)?;
    ctx.coord
        .store
        .put(
            &layout::node_manifest(&ctx.run_id, &host),
            Bytes::from(serde_json::to_vec(&manifest)?),
        )
        .await?;
    Ok(NodeTotals {
        host_id: host,
        address: n.info.address.clone(),
        files: nf.files,
        bytes: nf.bytes,
    })
}

/// A file row as recorded during upload (validated then), checked again on the way out.
fn entry_from_row(r: RunFileRow) -> anyhow::Result<FileEntry> {
    Ok(FileEntry {
        keyspace: Identifier::parse("keyspace", &r.keyspace)?,
        table: Identifier::parse("table", &r.table)?,
        table_id: r.table_id,
        name: RelativeName::parse(&r.name)?,
        size: r.size,
        hash: ContentHash::parse(&r.hash)?,
        data_dir_index: r.data_dir_index,
        sstable: r.sstable,
    })
}

async fn write_manifests(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    files: &[NodeFiles],
    blobs: Vec<(ContentHash, u64)>,
) -> anyhow::Result<()> {
    let store = &ctx.coord.store;
    let mut totals: Vec<NodeTotals> = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(MANIFEST_PARALLELISM) {
        let written =
            futures::future::try_join_all(chunk.iter().map(|n| write_node_manifest(ctx, n, files)))
                .await?;
        totals.extend(written);
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
