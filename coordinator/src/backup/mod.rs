//! Backup runs. [`start`] validates the request and plans the run synchronously (so bad input
//! is refused before anything changes), records it, and spawns [`drive`], which moves the run
//! through its persisted stages, one file each: plan, snapshot, schema, upload, commit, cleanup.
//! Whatever happens, cleanup clears every snapshot this run took.
mod cleanup;
mod commit;
mod plan;
mod schema;
mod snapshot;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use ringvault_common::{Identifier, RunId, SnapshotTag};
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::worker_client::WorkerClient;
use tonic::Status;
use tonic::transport::Channel;

pub use self::plan::{PlannedNode, reach_cluster};
use crate::db::{RunNodeRow, RunRow};
use crate::progress::{RunHandle, RunState, Stage};
use crate::{Coordinator, now_ms};

/// A validated backup request.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub tag: Option<SnapshotTag>,
    pub keyspaces: Vec<Identifier>,
    pub tables: Vec<Identifier>,
    pub cluster_name: Option<String>,
}

impl BackupRequest {
    /// The selection as sent to workers.
    pub fn selection(&self) -> pb::Selection {
        pb::Selection {
            keyspaces: self.keyspaces.iter().map(ToString::to_string).collect(),
            tables: self.tables.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Connects to a worker's gRPC address.
pub async fn connect_worker(addr: &str) -> anyhow::Result<WorkerClient<Channel>> {
    let ep = tonic::transport::Endpoint::from_shared(addr.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok(WorkerClient::new(ep.connect().await?))
}

/// Validates, plans and starts a backup; returns once the run is recorded and running.
pub async fn start(
    coord: &Arc<Coordinator>,
    req: BackupRequest,
) -> Result<(RunId, SnapshotTag), Status> {
    let run_id = RunId::new();
    let tag = match &req.tag {
        Some(t) => t.clone(),
        None => default_tag(&run_id)?,
    };
    let planned = plan::plan(coord, &req, &tag).await?;
    let cluster = planned.cluster_name.clone();
    let row = RunRow {
        id: run_id.to_string(),
        kind: "backup".into(),
        tag: tag.to_string(),
        cluster_name: cluster.clone(),
        state: RunState::Running.as_str().into(),
        stage: Stage::Snapshot.as_str().into(),
        keyspaces: req.keyspaces.iter().map(ToString::to_string).collect(),
        tables: req.tables.iter().map(ToString::to_string).collect(),
        store_url: coord.opts.store.clone(),
        created_ms: now_ms(),
        finished_ms: 0,
        error: String::new(),
        source_run_id: String::new(),
    };
    let node_rows: Vec<RunNodeRow> = planned
        .nodes
        .iter()
        .map(|n| RunNodeRow {
            host_id: n.info.host_id.clone(),
            address: n.info.address.clone(),
            worker_address: n.info.worker_address.clone(),
            state: "PLANNED".into(),
            snapshot: "none".into(),
            ..Default::default()
        })
        .collect();
    let handle = coord.record_start(&row, &node_rows).await?;
    tracing::info!(run = %run_id, %tag, cluster, nodes = planned.nodes.len(), "backup started");
    let ctx = RunContext {
        coord: Arc::clone(coord),
        run_id: run_id.clone(),
        tag: tag.clone(),
        req,
        handle,
        started_ms: row.created_ms,
    };
    tokio::spawn(drive(ctx, planned));
    Ok((run_id, tag))
}

fn default_tag(run: &RunId) -> Result<SnapshotTag, Status> {
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let short: String = run.as_str().chars().rev().take(6).collect();
    SnapshotTag::parse(&format!("rv-{ts}-{short}")).map_err(|e| Status::internal(e.to_string()))
}

/// What every stage of one run needs.
pub struct RunContext {
    pub coord: Arc<Coordinator>,
    pub run_id: RunId,
    pub tag: SnapshotTag,
    pub req: BackupRequest,
    pub handle: Arc<RunHandle>,
    pub started_ms: i64,
}

impl RunContext {
    async fn enter(&self, stage: Stage) -> anyhow::Result<()> {
        if self.handle.cancel.is_cancelled() {
            anyhow::bail!("cancelled by the operator");
        }
        self.handle.update(|r| r.stage = stage.as_str().into());
        let id = self.run_id.to_string();
        self.coord
            .db
            .call(move |db| db.set_stage(&id, stage.as_str()))
            .await?;
        tracing::info!(run = %self.run_id, stage = stage.as_str(), "stage");
        Ok(())
    }

    /// Writes the nodes' progress rows from the live view.
    async fn persist_nodes(&self) -> anyhow::Result<()> {
        self.coord.persist_nodes(&self.handle).await
    }
}

async fn drive(ctx: RunContext, planned: plan::Plan) {
    let nodes = planned.nodes;
    let result = run_stages(&ctx, &nodes, &planned.cluster_name, &planned.partitioner).await;
    let _ = ctx.enter_cleanup().await;
    let cleanup = cleanup::clear_snapshots(&ctx, &nodes).await;
    let (state, error) = match (&result, &cleanup) {
        (Ok(()), Ok(())) => (RunState::Done, String::new()),
        (Ok(()), Err(c)) => (RunState::Done, format!("backup committed, but {c:#}")),
        (Err(e), Ok(())) => (
            if ctx.handle.cancel.is_cancelled() {
                RunState::Cancelled
            } else {
                RunState::Failed
            },
            format!("{e:#}"),
        ),
        (Err(e), Err(c)) => (RunState::Failed, format!("{e:#}; also {c:#}")),
    };
    if state == RunState::Done {
        let _ = ctx.enter(Stage::Done).await;
    }
    ctx.coord.finish_run(&ctx.handle, state, &error).await;
}

impl RunContext {
    async fn enter_cleanup(&self) -> anyhow::Result<()> {
        self.handle
            .update(|r| r.stage = Stage::Cleanup.as_str().into());
        let id = self.run_id.to_string();
        self.coord
            .db
            .call(move |db| db.set_stage(&id, Stage::Cleanup.as_str()))
            .await
    }
}

async fn run_stages(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    cluster: &str,
    partitioner: &str,
) -> anyhow::Result<()> {
    ctx.enter(Stage::Snapshot).await?;
    snapshot::take(ctx, nodes).await?;
    ctx.enter(Stage::Schema).await?;
    schema::save(ctx, nodes, cluster, partitioner).await?;
    ctx.enter(Stage::Upload).await?;
    let files = upload::upload(ctx, nodes).await?;
    ctx.enter(Stage::Commit).await?;
    commit::commit(ctx, nodes, files).await
}

/// Converts a live node view to its row.
pub fn node_row(n: &pb::NodeProgress) -> RunNodeRow {
    RunNodeRow {
        host_id: n.host_id.clone(),
        address: n.address.clone(),
        worker_address: n.worker_address.clone(),
        state: n.state.clone(),
        snapshot: n.snapshot.clone(),
        files_total: n.files_total,
        files_done: n.files_done,
        bytes_total: n.bytes_total,
        bytes_done: n.bytes_done,
        files_uploaded: n.files_uploaded,
        bytes_uploaded: n.bytes_uploaded,
        error: n.error.clone(),
    }
}

/// Builds the CLI's view of a run from its rows.
pub fn run_view(r: &RunRow, nodes: &[RunNodeRow], tables: &[crate::db::TableTotals]) -> pb::Run {
    pb::Run {
        id: r.id.clone(),
        kind: r.kind.clone(),
        tag: r.tag.clone(),
        cluster_name: r.cluster_name.clone(),
        state: r.state.clone(),
        stage: r.stage.clone(),
        keyspaces: r.keyspaces.clone(),
        tables: r.tables.clone(),
        store_url: ringvault_common::store::redact_url(&r.store_url),
        created_unix_ms: r.created_ms,
        finished_unix_ms: r.finished_ms,
        error: r.error.clone(),
        source_run_id: r.source_run_id.clone(),
        nodes: nodes
            .iter()
            .map(|n| pb::NodeProgress {
                host_id: n.host_id.clone(),
                address: n.address.clone(),
                state: n.state.clone(),
                files_total: n.files_total,
                files_done: n.files_done,
                bytes_total: n.bytes_total,
                bytes_done: n.bytes_done,
                bytes_uploaded: n.bytes_uploaded,
                files_uploaded: n.files_uploaded,
                error: n.error.clone(),
                worker_address: n.worker_address.clone(),
                snapshot: n.snapshot.clone(),
            })
            .collect(),
        table_summaries: tables
            .iter()
            .map(|t| pb::TableSummary {
                keyspace: t.keyspace.clone(),
                table: t.table.clone(),
                files: t.files,
                bytes: t.bytes,
            })
            .collect(),
    }
}

/// At start: every run left RUNNING by a previous process is failed with the stage it was in,
/// and the snapshots it took are cleared as soon as their workers are back.
pub async fn recover_unfinished(coord: &Arc<Coordinator>) -> anyhow::Result<()> {
    let runs = coord
        .db
        .call(|db| db.runs(u32::MAX, Some(RunState::Running.as_str())))
        .await?;
    for run in runs {
        let reason = format!(
            "the coordinator stopped while the run was in stage {}; the run was not resumed and its snapshots are cleared",
            run.stage
        );
        tracing::warn!(run = %run.id, reason, "failing unfinished run");
        let (id, r) = (run.id.clone(), reason.clone());
        coord
            .db
            .call(move |db| db.finish_run(&id, RunState::Failed.as_str(), &r, now_ms()))
            .await?;
        let id = run.id.clone();
        let nodes = coord.db.call(move |db| db.run_nodes(&id)).await?;
        if let Ok(tag) = SnapshotTag::parse(&run.tag) {
            tokio::spawn(cleanup::clear_after_restart(
                Arc::clone(coord),
                run.id.clone(),
                tag,
                nodes,
            ));
        }
    }
    Ok(())
}
