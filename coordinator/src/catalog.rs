//! The backup catalog: reading backups from a store alone, through the keys
//! [`ringvault_common::layout`] builds and parses. The run manifests (`runs/*/manifest.json`)
//! list what is committed; a run folder without one is not a backup. Restore, verify and
//! `backups list` read backups only through here.
use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::RunId;
use ringvault_common::layout;
use ringvault_common::manifest::{NodeManifest, RunManifest, SchemaRow, Topology};
use ringvault_common::store::{self, Store, StoreError};

use crate::error::CoordinatorError;

/// The largest document (manifest, lease, marker) any reader of the store accepts.
pub const MANIFEST_LIMIT: usize = 1 << 30;

/// A committed backup, everything restore needs.
pub struct Backup {
    pub manifest: RunManifest,
    pub topology: Topology,
    pub schema: Vec<SchemaRow>,
    pub nodes: Vec<NodeManifest>,
}

/// Reads one JSON document ringvault wrote (bounded by [`MANIFEST_LIMIT`]); every reader of
/// manifests, leases and markers goes through here.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    st: &dyn Store,
    key: &layout::ObjectKey,
) -> anyhow::Result<T> {
    let bytes = store::get_bytes(st, key, MANIFEST_LIMIT).await?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{key} is not a valid ringvault document"))
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

/// Loads a committed backup, every node manifest in memory (restore plans need them all); a
/// run without `manifest.json` is refused as never committed.
pub async fn load(st: &Arc<dyn Store>, run: &RunId) -> Result<Backup, CoordinatorError> {
    let BackupHeader {
        manifest,
        topology,
        schema,
    } = load_header(st, run).await?;
    let nodes = node_manifests(st, &manifest).try_collect().await?;
    Ok(Backup {
        manifest,
        topology,
        schema,
        nodes,
    })
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
/// parsed at once; one naming another host than its key is an error.
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
                let m: NodeManifest = read_json(st.as_ref(), &key).await?;
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
