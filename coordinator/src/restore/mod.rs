//! Restore runs: schema first, then data. [`start`] reads the backup from the store (the
//! coordinator's, or any store URL: the bucket alone suffices), checks the selection, the target
//! nodes, their disk and the schema, and refuses with a reason before anything changes. The run
//! then moves through persisted stages: schema (create what is missing), download (each worker
//! stages and verifies its files), import (`nodetool import`, same topology) or load
//! (sstableloader, any topology), cleanup (staging removed once the data is in).
pub(crate) mod data;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::CoordinatorError;
use futures::TryStreamExt;
use ringvault_common::store::Store;
use ringvault_common::{Identifier, RunId};
use ringvault_proto::v1 as pb;

use crate::backup::{PlannedNode, reach_cluster};
use crate::catalog::{self, FileTotals, NodeSummary};
use crate::db::{RunNodeRow, RunRow};
use crate::run::{
    NodeState, RestoreStage as Stage, RunHandle, RunKind, RunStage, RunState, SnapshotMark,
};
use crate::{Coordinator, now_ms};

/// Keyspaces restored only when asked for by name: restoring roles or repair history over a
/// live cluster is a decision, not a default.
const SYSTEM_KEYSPACES: &[&str] = &["system_auth", "system_distributed", "system_traces"];

/// How data reaches the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `nodetool import` on each node of the same topology.
    Import,
    /// sstableloader: rows reach the right replicas on any topology.
    Loader,
}

/// A validated restore request.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub backup_run: RunId,
    pub keyspaces: Vec<Identifier>,
    pub tables: Vec<Identifier>,
    pub mode: Option<Mode>,
    pub force_schema: bool,
    pub from_store: Option<String>,
    pub cluster_name: Option<String>,
}

/// The tables of one backup node a target stages: the worker lists their files from the
/// node's manifest in the store itself, and checks them against these totals.
#[derive(Debug, Clone)]
pub struct SourceShare {
    pub source_host_id: String,
    /// (keyspace, table) with at least one file to restore.
    pub tables: BTreeMap<(String, String), FileTotals>,
}

impl SourceShare {
    /// The tables of `node` that `keep` keeps and that hold files to restore.
    pub fn of(node: NodeSummary, keep: impl Fn(&str, &str) -> bool) -> Self {
        Self {
            source_host_id: node.node.host_id.to_string(),
            tables: node
                .tables
                .into_iter()
                .filter(|((ks, t), n)| n.files > 0 && keep(ks, t))
                .collect(),
        }
    }

    /// The files and bytes of this source the target stages.
    pub fn totals(&self) -> FileTotals {
        let mut t = FileTotals::default();
        for n in self.tables.values() {
            t += *n;
        }
        t
    }
}

/// A target node and the backup nodes whose files it stages.
#[derive(Clone)]
pub struct Assignment {
    pub target: PlannedNode,
    pub sources: Vec<SourceShare>,
}

impl Assignment {
    /// The files and bytes this target stages.
    pub fn totals(&self) -> FileTotals {
        let mut t = FileTotals::default();
        for s in &self.sources {
            t += s.totals();
        }
        t
    }

    /// Whether this target stages nothing.
    pub fn is_empty(&self) -> bool {
        self.totals().files == 0
    }

    /// The (source node, keyspace, table) groups this target stages.
    pub fn staged_tables(&self) -> BTreeSet<(String, String, String)> {
        self.sources
            .iter()
            .flat_map(|s| {
                s.tables
                    .keys()
                    .map(|(ks, t)| (s.source_host_id.clone(), ks.clone(), t.clone()))
            })
            .collect()
    }

    /// What a Download names: per source node, the tables and their totals.
    pub fn selections(&self) -> Vec<pb::ManifestSelection> {
        self.sources
            .iter()
            .filter(|s| !s.tables.is_empty())
            .map(|s| {
                let total = s.totals();
                pb::ManifestSelection {
                    source_host_id: s.source_host_id.clone(),
                    tables: s
                        .tables
                        .keys()
                        .map(|(ks, t)| pb::TableRef {
                            keyspace: ks.clone(),
                            table: t.clone(),
                            table_id: String::new(),
                        })
                        .collect(),
                    files: total.files,
                    bytes: total.bytes,
                }
            })
            .collect()
    }
}

/// Reads a committed backup's node manifests one stream at a time and keeps only their
/// summaries, in address order (the order loader mode spreads them over the targets).
pub async fn summaries(
    store: &Arc<dyn Store>,
    manifest: &ringvault_common::manifest::RunManifest,
) -> Result<Vec<NodeSummary>, CoordinatorError> {
    let mut out: Vec<NodeSummary> = catalog::node_manifests(store, manifest)
        .map_ok(|m| NodeSummary::of(&m))
        .try_collect()
        .await?;
    in_address_order(&mut out);
    Ok(out)
}

/// Orders backup nodes by address: the order loader mode (restores and test restores alike)
/// spreads them over the targets.
pub(crate) fn in_address_order(nodes: &mut [NodeSummary]) {
    nodes.sort_by(|a, b| a.node.address.cmp(&b.node.address));
}

/// Everything a restore run needs after planning.
pub struct RestorePlan {
    pub store: Arc<dyn Store>,
    pub store_url: String,
    pub backup_run: RunId,
    pub mode: Mode,
    /// Schema objects to create: before the data, and views after it.
    pub schema: schema::SchemaPlan,
    pub nodes: Vec<PlannedNode>,
    pub assignments: Vec<Assignment>,
    /// Bytes per second each worker reads from the store (0: unlimited).
    pub bandwidth: u64,
}

async fn plan(
    coord: &Arc<Coordinator>,
    req: &RestoreRequest,
) -> Result<RestorePlan, CoordinatorError> {
    let (store, store_url) = match &req.from_store {
        Some(url) => (
            ringvault_common::store::open(url)
                .await
                .map_err(|e| CoordinatorError::invalid(e.to_string()))?,
            url.clone(),
        ),
        None => (Arc::clone(&coord.store), coord.opts.store.clone()),
    };
    let backup = catalog::load_header(&store, &req.backup_run).await?;
    let sources = summaries(&store, &backup.manifest).await?;
    // What the backup holds.
    let held: BTreeMap<String, BTreeSet<String>> = sources
        .iter()
        .flat_map(|n| n.tables.keys())
        .fold(BTreeMap::new(), |mut m, (ks, t)| {
            m.entry(ks.clone())
                .or_insert_with(BTreeSet::new)
                .insert(t.clone());
            m
        });
    let keyspaces: BTreeSet<String> = if req.keyspaces.is_empty() {
        held.keys()
            .filter(|k| {
                !SYSTEM_KEYSPACES.contains(&k.as_str())
                    && !ringvault_common::cql::NON_DATA_KEYSPACES.contains(&k.as_str())
            })
            .cloned()
            .collect()
    } else {
        for k in &req.keyspaces {
            if !held.contains_key(k.as_str()) {
                return Err(CoordinatorError::not_found(format!(
                    "keyspace {k} is not in backup {}",
                    req.backup_run
                )));
            }
        }
        req.keyspaces.iter().map(ToString::to_string).collect()
    };
    let tables = if req.tables.is_empty() {
        None
    } else {
        let ks = keyspaces.iter().next().cloned().unwrap_or_default();
        for t in &req.tables {
            if !held.get(&ks).is_some_and(|ts| ts.contains(t.as_str())) {
                return Err(CoordinatorError::not_found(format!(
                    "table {ks}.{t} is not in backup {}",
                    req.backup_run
                )));
            }
        }
        Some(req.tables.iter().map(ToString::to_string).collect())
    };
    let scope = schema::Scope {
        keyspaces,
        tables,
        views: schema::views(&backup.schema),
    };
    let (_cluster, nodes) = reach_cluster(coord, req.cluster_name.as_deref()).await?;
    // Every worker can log in to its node and its role may write every restored table, before
    // any schema is created or file imported.
    let writes: Vec<pb::TableRef> = held
        .iter()
        .filter(|(ks, _)| scope.keyspaces.contains(ks.as_str()))
        .flat_map(|(ks, ts)| {
            ts.iter()
                .filter(|t| scope.keeps(ks, t))
                .map(|t| pb::TableRef {
                    keyspace: ks.clone(),
                    table: t.clone(),
                    table_id: String::new(),
                })
        })
        .collect();
    crate::backup::check_access(&nodes, &writes, "restore").await?;

    // Same topology: the same host ids with the same tokens.
    let live_tokens: BTreeMap<&str, BTreeSet<&String>> = nodes
        .iter()
        .map(|n| (n.info.host_id.as_str(), n.info.tokens.iter().collect()))
        .collect();
    let same = sources.len() == nodes.len()
        && sources.iter().all(|b| {
            live_tokens
                .get(b.node.host_id.as_str())
                .is_some_and(|live| *live == b.node.tokens.iter().collect::<BTreeSet<_>>())
        });
    let mode = match req.mode {
        Some(Mode::Import) if !same => {
            return Err(CoordinatorError::refused(
                "--mode import needs the backup's topology (same host ids and tokens); use --mode loader",
            ));
        }
        Some(m) => m,
        None if same => Mode::Import,
        None => Mode::Loader,
    };
    let mut assignments: Vec<Assignment> = nodes
        .iter()
        .map(|n| Assignment {
            target: n.clone(),
            sources: Vec::new(),
        })
        .collect();
    for (i, src) in sources.into_iter().enumerate() {
        let idx = match mode {
            Mode::Import => nodes
                .iter()
                .position(|n| n.info.host_id == src.node.host_id.as_str())
                .unwrap_or(0),
            Mode::Loader => i % nodes.len().max(1),
        };
        if let Some(a) = assignments.get_mut(idx) {
            a.sources
                .push(SourceShare::of(src, |ks, t| scope.keeps(ks, t)));
        }
    }
    if assignments.iter().all(Assignment::is_empty) {
        return Err(CoordinatorError::refused(
            "the selection holds no SSTable in this backup",
        ));
    }
    // Disk for staging (on the data directory's filesystem).
    for a in &assignments {
        let need = a.totals().bytes;
        let free = a.target.info.free_bytes.first().copied().unwrap_or(0);
        if need > free {
            return Err(CoordinatorError::refused(format!(
                "{}: not enough disk for staging: {need} bytes to download, {free} bytes free",
                a.target.label()
            )));
        }
    }
    // Schema: compare with the live one before anything is created.
    let first = nodes
        .first()
        .ok_or_else(|| CoordinatorError::refused("no target node"))?;
    let live = first
        .client
        .clone()
        .describe_schema(pb::DescribeSchemaRequest {})
        .await
        .map_err(|e| CoordinatorError::from_worker(first.label(), &e))?
        .into_inner()
        .rows
        .into_iter()
        .map(|r| ringvault_common::manifest::SchemaRow {
            keyspace: r.keyspace,
            kind: r.kind,
            name: r.name,
            statement: r.statement,
        })
        .collect::<Vec<_>>();
    let schema = schema::plan(&backup.schema, &live, &scope, req.force_schema)
        .map_err(CoordinatorError::refused)?;
    // The worker checks every object (and that the cluster allows UDFs and views) now, so a
    // restore it would refuse is refused before anything changes.
    if !schema.before_data.is_empty() || !schema.views.is_empty() {
        check_schema(first, schema.all(), "schema check").await?;
    }
    Ok(RestorePlan {
        store,
        store_url,
        backup_run: req.backup_run.clone(),
        mode,
        schema,
        nodes,
        assignments,
        bandwidth: 0,
    })
}

/// Validates and plans a restore with every check of [`start`], and says what it would do;
/// nothing is recorded or changed.
pub async fn dry_run(
    coord: &Arc<Coordinator>,
    req: &RestoreRequest,
) -> Result<pb::RestorePlanSummary, CoordinatorError> {
    let planned = plan(coord, req).await?;
    let mut total = FileTotals::default();
    for a in &planned.assignments {
        total += a.totals();
    }
    Ok(pb::RestorePlanSummary {
        mode: match planned.mode {
            Mode::Import => "import",
            Mode::Loader => "loader",
        }
        .into(),
        target_nodes: planned.nodes.len() as u32,
        files: total.files,
        bytes: total.bytes,
        schema_objects: planned.schema.all().len() as u32,
    })
}

/// Has `node` check `objects` (an `ApplySchema` dry run: every object, and that the cluster
/// allows UDFs and views) without creating anything; a refusal keeps its class.
pub(crate) async fn check_schema(
    node: &PlannedNode,
    objects: Vec<pb::SchemaObject>,
    what: &str,
) -> Result<(), CoordinatorError> {
    node.client
        .clone()
        .apply_schema(pb::ApplySchemaRequest {
            objects,
            dry_run: true,
        })
        .await
        .map_err(|e| CoordinatorError::from_worker(node.label(), &e).context(what))?;
    Ok(())
}

/// The run's node rows of a plan's assignments: each target planned, with its file and byte
/// totals (restores and test restores record them alike).
pub(crate) fn planned_nodes(assignments: &[Assignment]) -> Vec<RunNodeRow> {
    assignments
        .iter()
        .map(|a| {
            let totals = a.totals();
            RunNodeRow {
                host_id: a.target.info.host_id.clone(),
                address: a.target.info.address.clone(),
                worker_address: a.target.info.worker_address.clone(),
                state: NodeState::Planned,
                snapshot: SnapshotMark::None,
                files_total: totals.files,
                bytes_total: totals.bytes,
                ..Default::default()
            }
        })
        .collect()
}

/// Validates and plans a restore, records it and starts it.
pub async fn start(
    coord: &Arc<Coordinator>,
    req: RestoreRequest,
) -> Result<RunId, CoordinatorError> {
    let _no_purge = coord.runs.start_guard("restore")?;
    let planned = plan(coord, &req).await?;
    let cluster = planned
        .nodes
        .first()
        .map(|n| n.info.cluster_name.clone())
        .unwrap_or_default();
    let run_id = RunId::new();
    let row = RunRow {
        id: run_id.to_string(),
        kind: RunKind::Restore,
        tag: format!("restore-of-{}", planned.backup_run),
        cluster_name: cluster.clone(),
        state: RunState::Running,
        stage: RunStage::Restore(Stage::Schema),
        keyspaces: req.keyspaces.iter().map(ToString::to_string).collect(),
        tables: req.tables.iter().map(ToString::to_string).collect(),
        store_url: planned.store_url.clone(),
        created_ms: now_ms(),
        finished_ms: 0,
        error: String::new(),
        source_run_id: planned.backup_run.to_string(),
        limits: Default::default(),
        schedule_id: String::new(),
    };
    let nodes = planned_nodes(&planned.assignments);
    let handle = coord.record_start(&row, &nodes).await?;
    tracing::info!(run = %run_id, backup = %planned.backup_run, mode = ?planned.mode, schema_objects = planned.schema.before_data.len() + planned.schema.views.len(), "restore started");
    tokio::spawn(drive(Arc::clone(coord), handle, planned));
    Ok(run_id)
}

async fn enter(coord: &Coordinator, handle: &RunHandle, stage: Stage) -> anyhow::Result<()> {
    if handle.cancel.is_cancelled() {
        anyhow::bail!("cancelled by the operator");
    }
    handle.update(|r| r.run.stage = RunStage::Restore(stage));
    let id = handle.id.clone();
    coord
        .db
        .call(move |db| db.set_stage(&id, RunStage::Restore(stage)))
        .await
}

async fn drive(coord: Arc<Coordinator>, handle: Arc<RunHandle>, plan: RestorePlan) {
    let result = async {
        enter(&coord, &handle, Stage::Schema).await?;
        apply_schema(&plan, &plan.schema.before_data).await?;
        enter(&coord, &handle, Stage::Download).await?;
        let r = data::download_all(&coord, &handle, &plan).await;
        coord.persist_nodes(&handle).await?;
        r?;
        match plan.mode {
            Mode::Import => enter(&coord, &handle, Stage::Import).await?,
            Mode::Loader => enter(&coord, &handle, Stage::Load).await?,
        }
        let r = data::apply_all(&handle, &plan).await;
        coord.persist_nodes(&handle).await?;
        r?;
        // Views last: Cassandra builds them from the restored base tables.
        apply_schema(&plan, &plan.schema.views).await?;
        enter(&coord, &handle, Stage::Cleanup).await?;
        data::clean_all(&plan).await
    }
    .await;
    let (state, error) = match &result {
        Ok(()) => (RunState::Done, String::new()),
        Err(e) if handle.cancel.is_cancelled() => (RunState::Cancelled, format!("{e:#}")),
        Err(e) => (RunState::Failed, format!("{e:#}")),
    };
    if state == RunState::Done {
        let _ = enter(&coord, &handle, Stage::Done).await;
    }
    coord.finish_run(&handle, state, &error).await;
}

/// Creates schema objects through the first target node's worker.
async fn apply_schema(plan: &RestorePlan, objects: &[pb::SchemaObject]) -> anyhow::Result<()> {
    if objects.is_empty() {
        return Ok(());
    }
    let first = plan
        .nodes
        .first()
        .ok_or_else(|| anyhow::anyhow!("no target node"))?;
    first
        .client
        .clone()
        .apply_schema(pb::ApplySchemaRequest {
            objects: objects.to_vec(),
            dry_run: false,
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("creating the schema on {}: {}", first.label(), e.message())
        })?;
    Ok(())
}

/// Parses a `--mode` value.
pub fn parse_mode(s: &str) -> Result<Option<Mode>, CoordinatorError> {
    match s {
        "" => Ok(None),
        "import" => Ok(Some(Mode::Import)),
        "loader" => Ok(Some(Mode::Loader)),
        other => Err(CoordinatorError::invalid(format!(
            "unknown mode {other:?} (import, loader)"
        ))),
    }
}

/// The committed backups of a store, for `backups list`.
pub async fn list_backups(st: &Arc<dyn Store>) -> anyhow::Result<Vec<pb::BackupSummary>> {
    Ok(catalog::list(st)
        .await?
        .into_iter()
        .map(|m| pb::BackupSummary {
            run_id: m.run_id.to_string(),
            tag: m.tag.to_string(),
            cluster_name: m.cluster_name,
            keyspaces: m.keyspaces,
            tables: m.tables,
            committed_unix_ms: m.committed_unix_ms,
            nodes: m.nodes.len() as u64,
            files: m.total_files,
            bytes: m.total_bytes,
            last_restore_test: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_common::manifest::fixtures::{self, FixtureFile};
    use ringvault_common::manifest::{HostId, NodeManifest};

    fn manifest(files: &[(&str, &str, &str, u64)]) -> NodeManifest {
        fixtures::node_manifest(
            &RunId::new(),
            &HostId::parse("4e5dcf79-dd51-4419-9aaf-4510118f5425").expect("host"),
            files
                .iter()
                .map(|&(ks, t, name, size)| FixtureFile::named(ks, t, name, size))
                .collect(),
        )
    }

    fn key(ks: &str, t: &str) -> (String, String) {
        (ks.into(), t.into())
    }

    #[test]
    fn a_share_counts_only_the_restorable_files_of_the_kept_tables() {
        let summary = NodeSummary::of(&manifest(&[
            ("ks", "t", "nb-1-big-Data.db", 100),
            ("ks", "t", "nb-1-big-Index.db", 10),
            ("ks", "t", "manifest.json", 5),
            ("ks", "only_bookkeeping", "schema.cql", 3),
            ("ks", "dropped", "nb-2-big-Data.db", 1000),
        ]));
        // The summary still says which tables the backup holds, bookkeeping-only ones too.
        assert_eq!(
            summary.tables.keys().cloned().collect::<Vec<_>>(),
            vec![
                key("ks", "dropped"),
                key("ks", "only_bookkeeping"),
                key("ks", "t")
            ]
        );
        assert_eq!(
            summary.tables[&key("ks", "t")],
            FileTotals {
                files: 2,
                bytes: 110
            }
        );
        let share = SourceShare::of(summary, |_, t| t != "dropped");
        // A kept table with nothing to restore is not staged; an unkept one is not either.
        assert_eq!(
            share.tables.keys().cloned().collect::<Vec<_>>(),
            vec![key("ks", "t")]
        );
        assert_eq!(share.source_host_id, "4e5dcf79-dd51-4419-9aaf-4510118f5425");
    }
}
