//! Backup runs. [`start`] validates the request and plans the run synchronously (so bad input
//! is refused before anything changes), records it, and spawns [`drive`], which moves the run
//! through its persisted stages, one file each: plan, snapshot, schema, upload, commit, cleanup.
//! Whatever happens, cleanup clears every snapshot this run took. A node whose worker dies
//! mid-run gets its work re-issued once the worker is back ([`PlannedNode::after_failure`]);
//! a coordinator that restarts resumes its runs from their persisted stage ([`resume`]).
mod access;
mod cleanup;
mod commit;
mod plan;
mod resume;
mod schema;
mod snapshot;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use crate::error::CoordinatorError;
use ringvault_common::{Identifier, RunId, SnapshotTag};
use ringvault_proto::v1 as pb;
use ringvault_proto::v1::worker_client::WorkerClient;
use tonic::Status;
use tonic::transport::Channel;

pub use self::access::check_access;
pub use self::plan::{PlannedNode, Retry, reach_cluster, reach_cluster_in};
pub use self::resume::recover_unfinished;
use crate::db::{RunNodeRow, RunRow};
use crate::run::{
    BackupStage as Stage, NodeState, RunHandle, RunKind, RunStage, RunState, SnapshotMark,
};
use crate::{Coordinator, now_ms};

/// A validated backup request.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub tag: Option<SnapshotTag>,
    pub keyspaces: Vec<Identifier>,
    pub tables: Vec<Identifier>,
    pub cluster_name: Option<String>,
    /// As asked; unset ones are resolved from the config when the run starts.
    pub limits: crate::limits::RunLimits,
    /// The schedule starting this run, if any.
    pub schedule_id: Option<String>,
    /// Only the nodes of these datacenters (`--dc`); empty: the whole ring. Recorded with the run.
    pub datacenters: Vec<String>,
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

/// Validates `--dc` names: non-empty, printable, at most 128 characters; duplicates dropped.
pub fn datacenters(names: &[String]) -> Result<Vec<String>, CoordinatorError> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
            return Err(CoordinatorError::invalid(format!(
                "bad datacenter name {n:?} (1 to 128 printable characters)"
            )));
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

static WORKER_SECURITY: std::sync::OnceLock<ringvault_common::security::ClientSecurity> =
    std::sync::OnceLock::new();

/// How this process reaches workers (its certificate and CA); set once at start.
pub fn set_worker_security(s: ringvault_common::security::ClientSecurity) {
    let _ = WORKER_SECURITY.set(s);
}

/// How much a worker may send the coordinator before it reads (HTTP/2 flow control, per
/// stream and per connection; the protocol's default, about four event messages of
/// [`ringvault_proto::coalesce::MAX_EVENTS`]). Workers answer with small messages (events,
/// node info), so this costs no speed; hyper's client default, 2 MiB per stream and 5 MiB per
/// connection, let 1,000 workers park up to gigabytes in a coordinator that had fallen behind
/// (peak RSS 708 MiB at 1,000 × 5,000 files).
const WORKER_RECEIVE_WINDOW: u32 = 65_535;

/// Connects to a worker's gRPC address: `https://` with this coordinator's certificate, or
/// `http://` on loopback only.
pub async fn connect_worker(addr: &str) -> anyhow::Result<WorkerClient<Channel>> {
    let security = WORKER_SECURITY.get().cloned().unwrap_or_default();
    let channel = security
        .connect(addr, |ep| {
            ep.connect_timeout(Duration::from_secs(5))
                .tcp_keepalive(Some(Duration::from_secs(10)))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .initial_stream_window_size(WORKER_RECEIVE_WINDOW)
                .initial_connection_window_size(WORKER_RECEIVE_WINDOW)
        })
        .await?;
    Ok(WorkerClient::new(channel)
        .max_decoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE)
        .max_encoding_message_size(ringvault_common::service::MAX_GRPC_MESSAGE))
}

/// Validates, plans and starts a backup; returns once the run is recorded and running.
pub async fn start(
    coord: &Arc<Coordinator>,
    req: BackupRequest,
) -> Result<(RunId, SnapshotTag), CoordinatorError> {
    let run_id = RunId::new();
    let tag = match &req.tag {
        Some(t) => t.clone(),
        None => default_tag(&run_id)?,
    };
    let _no_purge = coord.runs.start_guard("backup")?;
    let mut req = req;
    req.limits = req.limits.or(coord.default_limits());
    let planned = plan::plan(coord, &req, &tag).await?;
    let cluster = planned.cluster_name.clone();
    let row = RunRow {
        id: run_id.to_string(),
        kind: RunKind::Backup,
        tag: tag.to_string(),
        cluster_name: cluster.clone(),
        state: RunState::Running,
        stage: RunStage::Backup(Stage::Snapshot),
        keyspaces: req.keyspaces.iter().map(ToString::to_string).collect(),
        tables: req.tables.iter().map(ToString::to_string).collect(),
        store_url: coord.opts.store.clone(),
        created_ms: now_ms(),
        finished_ms: 0,
        error: String::new(),
        source_run_id: String::new(),
        limits: req.limits,
        schedule_id: req.schedule_id.clone().unwrap_or_default(),
    };
    let node_rows: Vec<RunNodeRow> = planned
        .nodes
        .iter()
        .map(|n| RunNodeRow {
            host_id: n.info.host_id.clone(),
            address: n.info.address.clone(),
            worker_address: n.info.worker_address.clone(),
            state: NodeState::Planned,
            snapshot: SnapshotMark::None,
            ..Default::default()
        })
        .collect();
    let handle = coord.record_start(&row, &node_rows).await?;
    if !req.datacenters.is_empty() {
        let (id, dcs) = (run_id.to_string(), req.datacenters.clone());
        coord
            .db
            .call(move |db| db.set_run_datacenters(&id, &dcs))
            .await
            .map_err(CoordinatorError::Internal)?;
        handle.update(|r| r.datacenters = req.datacenters.clone());
    }
    tracing::info!(run = %run_id, %tag, cluster, nodes = planned.nodes.len(), datacenters = ?req.datacenters, "backup started");
    let ctx = RunContext {
        coord: Arc::clone(coord),
        run_id: run_id.clone(),
        tag: tag.clone(),
        req,
        handle,
        started_ms: row.created_ms,
        resumed: false,
    };
    tokio::spawn(drive(ctx, planned, Stage::Snapshot));
    Ok((run_id, tag))
}

fn default_tag(run: &RunId) -> Result<SnapshotTag, CoordinatorError> {
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let short: String = run.as_str().chars().rev().take(6).collect();
    SnapshotTag::parse(&format!("rv-{ts}-{short}"))
        .map_err(|e| CoordinatorError::Internal(e.into()))
}

/// Attempts of one node's call per stage before the stage fails.
const MAX_ATTEMPTS: u32 = 5;

/// What every stage of one run needs.
pub struct RunContext {
    pub coord: Arc<Coordinator>,
    pub run_id: RunId,
    pub tag: SnapshotTag,
    pub req: BackupRequest,
    pub handle: Arc<RunHandle>,
    pub started_ms: i64,
    /// Resumed by a restarted coordinator: snapshots with the run's tag are its own.
    pub resumed: bool,
}

impl RunContext {
    async fn enter(&self, stage: Stage) -> anyhow::Result<()> {
        if self.handle.cancel.is_cancelled() {
            anyhow::bail!("cancelled by the operator");
        }
        self.handle
            .update(|r| r.run.stage = RunStage::Backup(stage));
        let id = self.run_id.to_string();
        self.coord
            .db
            .call(move |db| db.set_stage(&id, RunStage::Backup(stage)))
            .await?;
        tracing::info!(run = %self.run_id, stage = stage.as_str(), "stage");
        Ok(())
    }

    /// After attempt `attempt` of a call to node `n` failed: re-issue it (the worker restarted
    /// and is back) or give up; at most [`MAX_ATTEMPTS`] attempts per node and stage.
    async fn retry_decision(
        &self,
        n: &PlannedNode,
        failed: &Status,
        attempt: u32,
    ) -> anyhow::Result<Retry> {
        if attempt >= MAX_ATTEMPTS {
            return Ok(Retry::GiveUp);
        }
        n.after_failure(failed, self.coord.worker_grace(), &self.handle.cancel)
            .await
    }

    /// Writes the nodes' progress rows from the live view.
    async fn persist_nodes(&self) -> anyhow::Result<()> {
        self.coord.persist_nodes(&self.handle).await
    }
}

/// Moves the run from stage `from` to its end; cleanup runs whatever happened.
async fn drive(ctx: RunContext, planned: plan::Plan, from: Stage) {
    let nodes = planned.nodes.clone();
    let result = if from == Stage::Cleanup || from == Stage::Done {
        resume::outcome_before_cleanup(&ctx).await
    } else {
        run_stages(&ctx, &nodes, &planned, from).await
    };
    // The outcome is recorded before cleanup, so a coordinator restarted during cleanup
    // still knows how the run went.
    let outcome = match &result {
        Ok(()) => String::new(),
        Err(e) => format!("{e:#}"),
    };
    let id = ctx.run_id.to_string();
    if let Err(e) = ctx
        .coord
        .db
        .call(move |db| db.set_error(&id, &outcome))
        .await
    {
        tracing::warn!(error = %format!("{e:#}"), "recording the run's outcome");
    }
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
        let stage = RunStage::Backup(Stage::Cleanup);
        self.handle.update(|r| r.run.stage = stage);
        let id = self.run_id.to_string();
        self.coord.db.call(move |db| db.set_stage(&id, stage)).await
    }
}

/// The stages from `from` on. A resumed run re-enters at its stage; commit is entered
/// through upload again (re-issued uploads only HEAD what is already stored).
async fn run_stages(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    planned: &plan::Plan,
    from: Stage,
) -> anyhow::Result<()> {
    if from <= Stage::Snapshot {
        ctx.enter(Stage::Snapshot).await?;
        snapshot::take(ctx, nodes).await?;
    }
    if from <= Stage::Schema {
        ctx.enter(Stage::Schema).await?;
        schema::save(ctx, nodes, &planned.cluster_name, &planned.partitioner).await?;
    }
    ctx.enter(Stage::Upload).await?;
    let files = upload::upload(ctx, nodes).await?;
    ctx.enter(Stage::Commit).await?;
    commit::commit(ctx, nodes, files).await
}

#[cfg(test)]
mod datacenter_tests {
    #[test]
    fn dc_names_are_checked_and_deduplicated() {
        let ok = super::datacenters(&["dc1".into(), "dc2".into(), "dc1".into()]);
        assert_eq!(ok.ok(), Some(vec!["dc1".to_string(), "dc2".to_string()]));
        for bad in ["", "a\nb"] {
            let e = super::datacenters(&[bad.to_string()]).expect_err("accepted");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
        assert!(super::datacenters(&["x".repeat(129)]).is_err());
    }
}
