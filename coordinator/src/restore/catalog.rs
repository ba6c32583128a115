//! Reading backups from a store alone: the run manifests (`runs/*/manifest.json`) list what is
//! committed; a run folder without one is not a backup.
use std::sync::Arc;

use anyhow::Context;
use ringvault_common::RunId;
use ringvault_common::layout;
use ringvault_common::manifest::{NodeManifest, RunManifest, SchemaRow, Topology};
use ringvault_common::store::{self, Store, StoreError};

const MANIFEST_LIMIT: usize = 1 << 30;

/// A committed backup, everything restore needs.
pub struct Backup {
    pub manifest: RunManifest,
    pub topology: Topology,
    pub schema: Vec<SchemaRow>,
    pub nodes: Vec<NodeManifest>,
}

async fn json<T: serde::de::DeserializeOwned>(
    st: &dyn Store,
    key: &layout::ObjectKey,
) -> anyhow::Result<T> {
    let bytes = store::get_bytes(st, key, MANIFEST_LIMIT).await?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{key} is not a valid ringvault document"))
}

/// Loads a committed backup; a run without `manifest.json` is refused as never committed.
pub async fn load(st: &Arc<dyn Store>, run: &RunId) -> anyhow::Result<Backup> {
    let manifest: RunManifest = match json(st.as_ref(), &layout::run_manifest(run)).await {
        Ok(m) => m,
        Err(e)
            if e.downcast_ref::<StoreError>()
                .is_some_and(|s| matches!(s, StoreError::NotFound { .. })) =>
        {
            let any = st.list(&layout::run_prefix(run)).await?;
            if any.is_empty() {
                anyhow::bail!("backup {run} not found in {}", st.describe());
            }
            anyhow::bail!(
                "backup {run} was never committed (no manifest.json in {}); it cannot be restored",
                st.describe()
            );
        }
        Err(e) => return Err(e),
    };
    anyhow::ensure!(
        &manifest.run_id == run,
        "manifest of {run} names run {}",
        manifest.run_id
    );
    let topology: Topology = json(st.as_ref(), &layout::run_topology(run)).await?;
    let schema: Vec<SchemaRow> = json(st.as_ref(), &layout::run_schema_rows(run)).await?;
    let mut nodes = Vec::new();
    for n in &manifest.nodes {
        let m: NodeManifest = json(st.as_ref(), &layout::node_manifest(run, &n.host_id)).await?;
        anyhow::ensure!(
            m.node.host_id == n.host_id,
            "node manifest {} names host {}",
            n.host_id,
            m.node.host_id
        );
        nodes.push(m);
    }
    Ok(Backup {
        manifest,
        topology,
        schema,
        nodes,
    })
}

/// Every committed backup in a store, newest first.
pub async fn list(st: &Arc<dyn Store>) -> anyhow::Result<Vec<RunManifest>> {
    let objects = st.list(layout::RUNS_PREFIX).await?;
    let mut out = Vec::new();
    for o in objects
        .iter()
        .filter(|o| o.key.as_str().ends_with("/manifest.json"))
    {
        let run = o
            .key
            .as_str()
            .trim_start_matches(layout::RUNS_PREFIX)
            .trim_end_matches("/manifest.json");
        let Ok(run) = RunId::parse(run) else { continue };
        out.push(json::<RunManifest>(st.as_ref(), &layout::run_manifest(&run)).await?);
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.committed_unix_ms));
    Ok(out)
}
