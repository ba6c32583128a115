//! Stage `commit`: the run's lease (`runs/<id>/lease.json`, every blob it refers to, including
//! those reused without uploading) is written first, then the commit waits for every purge
//! sweep window announced on the store to close; only then is every blob checked to be in the
//! store with its recorded size, the node manifests written, and `manifest.json` last, making
//! the run a backup. The lease is deleted after the commit. Workers may have reported a blob
//! present from their own memory (`trust_seen_blobs`); when one is missing here, the upload
//! runs once more with every blob asked for (and put back), and the check is repeated. See `docs/design.md` ("Purge
//! protocol") for why this order keeps a concurrent purge of any coordinator from deleting a
//! reused blob.
use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
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
/// Shard listings at once: each holds its shard's keys in memory until checked.
const LIST_PARALLELISM: usize = 16;

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

/// Keys most stores return per listing page (S3, GCS; Azure returns up to 5,000).
const LIST_PAGE: u64 = 1_000;

/// The blobs not in the store with their recorded size, described. Checked by listing the
/// blob shards (`blobs/<2 hex>/`) the run touches when that takes fewer requests than one HEAD
/// per blob: a repeat backup of 10,000 files per node then asks the store a few hundred times,
/// not 10,000 times per node. A listing and a HEAD both see the store as it is when asked, so
/// the purge protocol's ordering holds either way. The store's size is estimated from the
/// coordinator's known-blob index; an estimate that is low costs more listing pages, never a
/// wrong answer.
async fn missing_blobs(ctx: &RunContext, blobs: &[(ContentHash, u64)]) -> Vec<String> {
    let known = ctx
        .coord
        .db
        .call(|db| db.known_blob_count())
        .await
        .unwrap_or(u64::MAX);
    let mut shards: BTreeMap<String, Vec<(ContentHash, u64)>> = BTreeMap::new();
    for (h, s) in blobs {
        shards
            .entry(layout::blob_shard(h))
            .or_default()
            .push((h.clone(), *s));
    }
    let shard_count = shards.len();
    let by_listing = listing_is_cheaper(blobs.len() as u64, shard_count as u64, known);
    let started = std::time::Instant::now();
    let missing: Vec<String> = if by_listing {
        futures::stream::iter(shards)
            .map(|(prefix, want)| {
                let store = std::sync::Arc::clone(&ctx.coord.store);
                async move { check_shard(store, prefix, want).await }
            })
            .buffer_unordered(LIST_PARALLELISM)
            .flat_map(futures::stream::iter)
            .collect()
            .await
    } else {
        futures::stream::iter(blobs.iter().cloned())
            .map(|(hash, size)| {
                let store = std::sync::Arc::clone(&ctx.coord.store);
                async move { check_blob(store, hash, size).await }
            })
            .buffer_unordered(HEAD_PARALLELISM)
            .filter_map(|x| async move { x })
            .collect()
            .await
    };
    tracing::info!(
        run = %ctx.run_id,
        blobs = blobs.len(),
        missing = missing.len(),
        how = if by_listing { "shard listings" } else { "HEADs" },
        shards = shard_count,
        ms = started.elapsed().as_millis() as u64,
        "checked the run's blobs in the store"
    );
    missing
}

/// Whether listing `shards` shard folders of a store holding about `known` blobs takes fewer
/// than half the requests of one HEAD per blob (a listing page is slower than a HEAD).
fn listing_is_cheaper(blobs: u64, shards: u64, known: u64) -> bool {
    let pages = shards.saturating_add(known.max(blobs) / LIST_PAGE);
    blobs > pages.saturating_mul(2)
}

/// One shard's listing against the blobs of the run in it: those absent or of another size,
/// described (all of them, when the listing fails).
async fn check_shard(
    store: std::sync::Arc<dyn ringvault_common::store::Store>,
    prefix: String,
    want: Vec<(ContentHash, u64)>,
) -> Vec<String> {
    let listed: HashMap<String, u64> = match store.list_folder(&prefix).await {
        Ok(objects) => objects
            .into_iter()
            .map(|o| (o.key.as_str().to_string(), o.size))
            .collect(),
        Err(e) => {
            return want
                .iter()
                .map(|(h, _)| format!("{h}: listing {prefix}: {e}"))
                .collect();
        }
    };
    want.into_iter()
        .filter_map(
            |(hash, size)| match listed.get(layout::blob(&hash).as_str()) {
                Some(&s) if s == size => None,
                Some(&s) => Some(format!("{hash}: stored {s} bytes, expected {size}")),
                None => Some(format!("{hash}: missing")),
            },
        )
        .collect()
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

/// File rows of node manifests held at once while they are written (each node's rows, then
/// its entries and their JSON: some 600 bytes a file, so about 30 MB).
const MANIFEST_FILES_IN_FLIGHT: u64 = 50_000;
/// Most node manifests written at once.
const MANIFEST_PARALLELISM_MAX: usize = 16;

/// Node manifests written at once: as many of the largest node's as fit
/// [`MANIFEST_FILES_IN_FLIGHT`], at least one. At 5,000 files a node that is ten, so the
/// database reads of one overlap the encoding and store writes of the others; at 100,000
/// files one at a time, so memory stays bounded by the largest node.
fn manifest_parallelism(files: &[NodeFiles]) -> usize {
    let largest = files.iter().map(|f| f.files).max().unwrap_or(0).max(1);
    usize::try_from(MANIFEST_FILES_IN_FLIGHT / largest)
        .unwrap_or(MANIFEST_PARALLELISM_MAX)
        .clamp(1, MANIFEST_PARALLELISM_MAX)
}

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
    // In node order, a new one started as soon as any finishes (not four at a time, each
    // four waiting for its slowest).
    let writes: Vec<_> = nodes
        .iter()
        .map(|n| write_node_manifest(ctx, n, files))
        .collect();
    let totals: Vec<NodeTotals> = futures::stream::iter(writes)
        .buffered(manifest_parallelism(files))
        .try_collect()
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> ContentHash {
        ContentHash::of(&[n])
    }

    fn node(files: u64) -> NodeFiles {
        NodeFiles {
            host_id: String::new(),
            files,
            bytes: 0,
        }
    }

    #[test]
    fn manifests_written_at_once_shrink_as_the_largest_node_grows() {
        assert_eq!(manifest_parallelism(&[node(10), node(5_000)]), 10);
        assert_eq!(manifest_parallelism(&[node(100_000), node(3)]), 1);
        assert_eq!(manifest_parallelism(&[node(2_000_000)]), 1);
        assert_eq!(manifest_parallelism(&[node(10)]), MANIFEST_PARALLELISM_MAX);
        assert_eq!(manifest_parallelism(&[]), MANIFEST_PARALLELISM_MAX);
    }

    #[test]
    fn a_large_run_is_checked_by_listing_and_a_small_one_by_heads() {
        // 31,200 blobs over 256 shards of a store of 100,000: 356 pages against 31,200 HEADs.
        assert!(listing_is_cheaper(31_200, 256, 100_000));
        // 24 blobs in 20 shards: HEADs.
        assert!(!listing_is_cheaper(24, 20, 24));
        // A small run in a store of ten million blobs: 10,256 pages, so HEADs.
        assert!(!listing_is_cheaper(5_000, 256, 10_000_000));
        // An unknown store size (the index unreadable) never lists.
        assert!(!listing_is_cheaper(1_000_000, 256, u64::MAX));
    }

    #[tokio::test]
    async fn a_shard_listing_names_the_missing_and_the_wrong_sized_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let store = ringvault_common::store::open(&url).await.expect("store");
        let (present, short, gone) = (hash(1), hash(2), hash(3));
        store
            .put(&layout::blob(&present), Bytes::from_static(b"abcd"))
            .await
            .expect("put");
        store
            .put(&layout::blob(&short), Bytes::from_static(b"ab"))
            .await
            .expect("put");
        let mut problems = Vec::new();
        for (h, size) in [(&present, 4u64), (&short, 4), (&gone, 4)] {
            problems.extend(
                check_shard(
                    std::sync::Arc::clone(&store),
                    layout::blob_shard(h),
                    vec![(h.clone(), size)],
                )
                .await,
            );
        }
        assert_eq!(
            problems,
            vec![
                format!("{short}: stored 2 bytes, expected 4"),
                format!("{gone}: missing"),
            ]
        );
    }
}
