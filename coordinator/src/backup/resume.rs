//! A restarted coordinator resumes the backups it left running: each worker of the run is
//! reached again (waiting for it up to the restart grace), and the run re-enters the stage it
//! was in: snapshot (re-taken under the same tag), schema, upload (re-issued: only what is
//! missing is sent), commit (through upload), or cleanup (the recorded outcome is kept).
//! Restores left running are failed with a reason (their staging is kept, so a new restore
//! of the same backup resumes the download).
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringvault_common::{Identifier, RunId, SnapshotTag, layout};
use ringvault_proto::v1 as pb;

use super::{BackupRequest, PlannedNode, RunContext, cleanup, connect_worker, drive, plan};
use crate::db::{RunNodeRow, RunRow};
use crate::run::{BackupStage as Stage, RunHandle, RunKind, RunState};
use crate::{Coordinator, now_ms};

/// At start: resumes every backup left RUNNING by a previous process; fails the restores.
pub async fn recover_unfinished(coord: &Arc<Coordinator>) -> anyhow::Result<()> {
    let runs = coord
        .db
        .call(|db| db.runs(u32::MAX, Some(RunState::Running)))
        .await?;
    for run in runs {
        if run.kind == RunKind::Backup {
            tracing::warn!(run = %run.id, stage = %run.stage, "resuming a backup left running");
            // Active before the server answers anyone: no second run on the cluster, no purge.
            let id = run.id.clone();
            let rows = coord.db.call(move |db| db.run_nodes(&id)).await?;
            let handle = coord.adopt_run(&run, &rows)?;
            tokio::spawn(resume(Arc::clone(coord), run, rows, handle));
        } else {
            let reason = format!(
                "the coordinator stopped while the {} was in stage {}; start it again to resume (staged files are kept)",
                run.kind, run.stage
            );
            fail_unresumable(coord, &run, reason).await?;
        }
    }
    Ok(())
}

/// Fails a run that cannot go on and clears its snapshots once the workers are back.
async fn fail_unresumable(
    coord: &Arc<Coordinator>,
    run: &RunRow,
    reason: String,
) -> anyhow::Result<()> {
    tracing::warn!(run = %run.id, reason, "failing unfinished run");
    let (id, r) = (run.id.clone(), reason);
    coord
        .db
        .call(move |db| db.finish_run(&id, RunState::Failed, &r, now_ms()))
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
    Ok(())
}

async fn resume(
    coord: Arc<Coordinator>,
    run: RunRow,
    rows: Vec<RunNodeRow>,
    handle: Arc<RunHandle>,
) {
    let fail = |e: anyhow::Error| {
        let coord = Arc::clone(&coord);
        let run = run.clone();
        async move {
            coord.runs.release(&run.id);
            let reason = format!(
                "the coordinator restarted in stage {} and could not resume the run: {e:#}",
                run.stage
            );
            if let Err(e) = fail_unresumable(&coord, &run, reason).await {
                tracing::error!(error = %format!("{e:#}"), "failing an unresumable run");
            }
        }
    };
    let mut req = match request_of(&run) {
        Ok(r) => r,
        Err(e) => return fail(e).await,
    };
    let id = run.id.clone();
    match coord.db.call(move |db| db.run_datacenters(&id)).await {
        Ok(dcs) => {
            handle.update(|r| r.datacenters = dcs.clone());
            req.datacenters = dcs;
        }
        Err(e) => return fail(e).await,
    }
    let nodes = match reach_nodes(&coord, &rows).await {
        Ok(n) => n,
        Err(e) => return fail(e).await,
    };
    let (run_id, tag) = match (RunId::parse(&run.id), SnapshotTag::parse(&run.tag)) {
        (Ok(r), Ok(t)) => (r, t),
        _ => {
            coord
                .finish_run(&handle, RunState::Failed, "stored run id or tag is invalid")
                .await;
            return;
        }
    };
    let first = nodes.first().map(|n| n.info.partitioner.clone());
    let planned = plan::Plan {
        cluster_name: run.cluster_name.clone(),
        partitioner: first.unwrap_or_default(),
        nodes,
    };
    let from = run
        .stage
        .backup()
        .unwrap_or(Stage::Snapshot)
        .max(Stage::Snapshot);
    let ctx = RunContext {
        coord: Arc::clone(&coord),
        run_id,
        tag,
        req,
        handle,
        started_ms: run.created_ms,
        resumed: true,
    };
    drive(ctx, planned, from).await;
}

/// The request a stored run was started with.
fn request_of(run: &RunRow) -> anyhow::Result<BackupRequest> {
    Ok(BackupRequest {
        tag: Some(SnapshotTag::parse(&run.tag)?),
        keyspaces: run
            .keyspaces
            .iter()
            .map(|k| Identifier::parse("keyspace", k))
            .collect::<Result<_, _>>()?,
        tables: run
            .tables
            .iter()
            .map(|t| Identifier::parse("table", t))
            .collect::<Result<_, _>>()?,
        cluster_name: Some(run.cluster_name.clone()),
        limits: run.limits,
        schedule_id: (!run.schedule_id.is_empty()).then(|| run.schedule_id.clone()),
        // Filled from the database by the caller.
        datacenters: Vec::new(),
    })
}

/// Reaches every node of the run again, waiting for each worker up to the restart grace.
async fn reach_nodes(
    coord: &Arc<Coordinator>,
    rows: &[RunNodeRow],
) -> anyhow::Result<Vec<PlannedNode>> {
    let grace = coord.worker_grace();
    let calls = rows.iter().map(|row| async move {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let attempt = async {
                let mut client = connect_worker(&row.worker_address).await?;
                let mut info = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.get_node_info(pb::GetNodeInfoRequest {}),
                )
                .await
                .context("no answer within 10s")??
                .into_inner();
                info.worker_address = row.worker_address.clone();
                anyhow::Ok(PlannedNode::new(info, client))
            }
            .await;
            match attempt {
                Ok(n) if n.info.host_id == row.host_id => return Ok(n),
                Ok(n) => anyhow::bail!(
                    "worker {} now serves host {}, not {} (node replaced?)",
                    row.worker_address,
                    n.info.host_id,
                    row.host_id
                ),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "node {} (worker {}) not back within {}s",
                        row.address,
                        row.worker_address,
                        grace.as_secs()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
    futures::future::try_join_all(calls).await
}

/// For a run resumed in cleanup: how it went before the restart. Committed (manifest.json in
/// the store and no recorded error) is success; anything else keeps its recorded error.
pub async fn outcome_before_cleanup(ctx: &RunContext) -> anyhow::Result<()> {
    let id = ctx.run_id.to_string();
    let recorded = ctx
        .coord
        .db
        .call(move |db| db.run(&id))
        .await?
        .map(|r| r.error)
        .unwrap_or_default();
    if !recorded.is_empty() {
        anyhow::bail!("{recorded}");
    }
    match ctx
        .coord
        .store
        .head(&layout::run_manifest(&ctx.run_id))
        .await?
    {
        Some(_) => Ok(()),
        None => anyhow::bail!("the coordinator restarted in cleanup before the run was committed"),
    }
}
