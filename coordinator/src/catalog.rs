//! The backup catalog: reading backups from a store alone, through the keys
//! [`ringvault_common::layout`] builds and parses. The run manifests (`runs/*/manifest.json`)
//! list what is committed; a run folder without one is not a backup. Restore, verify and
//! `backups list` read backups only through here, a node manifest at a time: no reader holds
//! every file of a large backup.
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use ringvault_common::RunId;
use ringvault_common::layout;
use ringvault_common::manifest::{NodeDescription, NodeManifest, RunManifest, SchemaRow, Topology};
use ringvault_common::store::{self, Store, StoreError};

use crate::error::CoordinatorError;

/// Files and bytes: of one table on one backup node, or of a restore's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileTotals {
    pub files: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for FileTotals {
    fn add_assign(&mut self, o: Self) {
        self.files += o.files;
        self.bytes += o.bytes;
    }
}

/// What a restore plan keeps of one node manifest: the node, and for every (keyspace, table)
/// it holds files of, the totals of the files a restore brings back
/// ([`FileEntry::is_restorable`](ringvault_common::manifest::FileEntry::is_restorable); zero
/// for a table with bookkeeping files only). The file list itself stays in the store: each
/// worker reads its share from there.
#[derive(Debug, Clone)]
pub struct NodeSummary {
    pub node: NodeDescription,
    pub tables: BTreeMap<(String, String), FileTotals>,
}

impl NodeSummary {
    pub fn of(m: &NodeManifest) -> Self {
        let mut tables: BTreeMap<(String, String), FileTotals> = BTreeMap::new();
        for f in &m.files {
            let t = tables
                .entry((f.keyspace.to_string(), f.table.to_string()))
                .or_default();
            if f.is_restorable() {
                *t += FileTotals {
                    files: 1,
                    bytes: f.size,
                };
            }
        }
        Self {
            node: m.node.clone(),
            tables,
        }
    }
}

/// Reads one JSON document ringvault wrote ([`store::get_json`]).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    st: &dyn Store,
    key: &layout::ObjectKey,
) -> anyhow::Result<T> {
    Ok(store::get_json(st, key).await?)
}

/// Node manifests read at once by [`node_manifests`]: each is parsed whole (one node's file
/// list), so this bounds the memory of a streamed read as well as its latency.
pub const NODE_MANIFEST_PARALLELISM: usize = 8;

/// A committed backup without its node manifests: what a reader that streams them needs first.
pub struct BackupHeader {
    pub manifest: RunManifest,
    pub topology: Topology,
    pub schema: Vec<SchemaRow>,
}

/// Loads a committed backup's run manifest, topology and schema; a run without
/// `manifest.json` is refused as never committed.
pub async fn load_header(
    st: &Arc<dyn Store>,
    run: &RunId,
) -> Result<BackupHeader, CoordinatorError> {
    let manifest: RunManifest = match read_json(st.as_ref(), &layout::run_manifest(run)).await {
        Ok(m) => m,
        Err(e)
            if e.downcast_ref::<StoreError>()
                .is_some_and(|s| matches!(s, StoreError::NotFound { .. })) =>
        {
            let any = st.list(&layout::run_prefix(run)).await?;
            if any.is_empty() {
                return Err(CoordinatorError::not_found(format!(
                    "backup {run} not found in {}",
                    st.describe()
                )));
            }
            return Err(CoordinatorError::not_found(format!(
                "backup {run} was never committed (no manifest.json in {}); it cannot be restored",
                st.describe()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if &manifest.run_id != run {
        return Err(CoordinatorError::Internal(anyhow::anyhow!(
            "manifest of {run} names run {}",
            manifest.run_id
        )));
    }
    let topology: Topology = read_json(st.as_ref(), &layout::run_topology(run)).await?;
    let schema: Vec<SchemaRow> = read_json(st.as_ref(), &layout::run_schema_rows(run)).await?;
    Ok(BackupHeader {
        manifest,
        topology,
        schema,
    })
}

/// The node manifests `manifest` names, in its order, [`NODE_MANIFEST_PARALLELISM`] read and
/// parsed at once, each parse on the blocking pool (a 5,000-file manifest is a megabyte of
/// JSON: parsed where it is read, every parse of a 1,000-node plan ran on one thread); one
/// naming another host than its key is an error.
pub fn node_manifests(
    st: &Arc<dyn Store>,
    manifest: &RunManifest,
) -> futures::stream::BoxStream<'static, Result<NodeManifest, CoordinatorError>> {
    let run = manifest.run_id.clone();
    let hosts: Vec<_> = manifest.nodes.iter().map(|n| n.host_id.clone()).collect();
    let st = Arc::clone(st);
    futures::stream::iter(hosts)
        .map(move |host| {
            let (st, key) = (Arc::clone(&st), layout::node_manifest(&run, &host));
            async move {
                // A committed backup missing a manifest is a damaged store, not a bad request.
                let bytes = store::get_bytes(st.as_ref(), &key, store::DOCUMENT_LIMIT)
                    .await
                    .map_err(anyhow::Error::from)?;
                let m: NodeManifest =
                    tokio::task::spawn_blocking(move || store::parse_json(&key, &bytes))
                        .await
                        .map_err(|e| anyhow::anyhow!("parsing node manifest of {host}: {e}"))?
                        .map_err(anyhow::Error::from)?;
                if m.node.host_id != host {
                    return Err(CoordinatorError::Internal(anyhow::anyhow!(
                        "node manifest {host} names host {}",
                        m.node.host_id
                    )));
                }
                Ok(m)
            }
        })
        .buffered(NODE_MANIFEST_PARALLELISM)
        .boxed()
}

/// Every committed backup in a store, newest first.
pub async fn list(st: &Arc<dyn Store>) -> anyhow::Result<Vec<RunManifest>> {
    let objects = st.list(layout::RUNS_PREFIX).await?;
    let mut out = Vec::new();
    for run in objects
        .iter()
        .filter_map(|o| layout::parse_run_manifest(&o.key))
    {
        out.push(read_json::<RunManifest>(st.as_ref(), &layout::run_manifest(&run)).await?);
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.committed_unix_ms));
    Ok(out)
}
