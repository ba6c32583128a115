//! The `Coordinator` gRPC service for the CLI. Thin: validate, convert proto ↔ domain, hand off
//! to [`crate::backup`] and [`crate::db`].
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringvault_common::{Identifier, RunId, SnapshotTag};
use ringvault_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::Coordinator;
use crate::backup::{self, BackupRequest};

/// Serves the CLI.
pub struct CoordinatorService {
    coord: Arc<Coordinator>,
}

impl CoordinatorService {
    /// A service over the coordinator's state.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }

    async fn load_run(&self, id: &str) -> Result<pb::Run, Status> {
        let run_id = RunId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(h) = self.active(run_id.as_str()) {
            return Ok(h.snapshot());
        }
        let id = run_id.to_string();
        let found = self
            .coord
            .db
            .call(move |db| {
                let Some(run) = db.run(&id)? else {
                    return Ok(None);
                };
                let nodes = db.run_nodes(&id)?;
                let tables = db.table_totals(&id)?;
                Ok(Some(backup::run_view(&run, &nodes, &tables)))
            })
            .await
            .map_err(internal)?;
        found.ok_or_else(|| Status::not_found(format!("run {run_id} not found")))
    }

    fn active(&self, id: &str) -> Option<Arc<crate::progress::RunHandle>> {
        self.coord
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(id).cloned())
    }
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

fn invalid(e: impl ToString) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Validates a keyspace/table selection: plain names, and tables only with exactly one keyspace.
fn selection(
    keyspaces: &[String],
    tables: &[String],
) -> Result<(Vec<Identifier>, Vec<Identifier>), Status> {
    let keyspaces = keyspaces
        .iter()
        .map(|k| Identifier::parse("keyspace", k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let tables = tables
        .iter()
        .map(|t| Identifier::parse("table", t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if !tables.is_empty() && keyspaces.len() != 1 {
        return Err(Status::invalid_argument(
            "a table selection needs exactly one keyspace (-k KEYSPACE -t TABLE)",
        ));
    }
    Ok((keyspaces, tables))
}

type RunStream = Pin<Box<dyn Stream<Item = Result<pb::Run, Status>> + Send>>;

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for CoordinatorService {
    async fn start_backup(
        &self,
        req: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::StartBackupResponse>, Status> {
        let r = req.into_inner();
        let tag = if r.tag.is_empty() {
            None
        } else {
            Some(SnapshotTag::parse(&r.tag).map_err(invalid)?)
        };
        let (keyspaces, tables) = selection(&r.keyspaces, &r.tables)?;
        let cluster_name = (!r.cluster_name.is_empty()).then_some(r.cluster_name);
        let (run_id, tag) = backup::start(
            &self.coord,
            BackupRequest {
                tag,
                keyspaces,
                tables,
                cluster_name,
            },
        )
        .await?;
        Ok(Response::new(pb::StartBackupResponse {
            run_id: run_id.to_string(),
            tag: tag.to_string(),
        }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        self.load_run(&req.into_inner().run_id)
            .await
            .map(Response::new)
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let rows = self
            .coord
            .db
            .call(move |db| db.runs(limit, None))
            .await
            .map_err(internal)?;
        let mut runs = Vec::with_capacity(rows.len());
        for r in rows {
            runs.push(match self.active(&r.id) {
                Some(h) => h.snapshot(),
                None => {
                    let id = r.id.clone();
                    let nodes = self
                        .coord
                        .db
                        .call(move |db| db.run_nodes(&id))
                        .await
                        .map_err(internal)?;
                    backup::run_view(&r, &nodes, &[])
                }
            });
        }
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    type WatchRunStream = RunStream;

    async fn watch_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = req.into_inner().run_id;
        let first = self.load_run(&id).await?;
        let Some(handle) = self.active(&first.id) else {
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(first)))));
        };
        let mut rx = handle.view.subscribe();
        let coord = Arc::clone(&self.coord);
        let run_id = first.id.clone();
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _ = tx.send(Ok(first)).await;
            loop {
                // At most a few updates a second, whatever the event rate.
                tokio::time::sleep(Duration::from_millis(250)).await;
                if rx.changed().await.is_err() {
                    break; // run finished: the handle is gone
                }
                let view = rx.borrow_and_update().clone();
                let terminal = view.state != "RUNNING";
                if tx.send(Ok(view)).await.is_err() || terminal {
                    return;
                }
            }
            // Send the final state as recorded.
            let svc = CoordinatorService { coord };
            let last = svc.load_run(&run_id).await;
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn cancel_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let id = req.into_inner().run_id;
        let run = self.load_run(&id).await?;
        match self.active(&run.id) {
            Some(h) => {
                h.cancel.cancel();
                Ok(Response::new(h.snapshot()))
            }
            None => Err(Status::failed_precondition(format!(
                "run {} is not running (state {})",
                run.id, run.state
            ))),
        }
    }

    async fn start_restore(
        &self,
        req: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::StartBackupResponse>, Status> {
        let r = req.into_inner();
        let backup_run = RunId::parse(&r.backup_run_id).map_err(invalid)?;
        let (keyspaces, tables) = selection(&r.keyspaces, &r.tables)?;
        let req = crate::restore::RestoreRequest {
            backup_run,
            keyspaces,
            tables,
            mode: crate::restore::parse_mode(&r.mode)?,
            force_schema: r.force_schema,
            from_store: (!r.from_store_url.is_empty()).then_some(r.from_store_url),
            cluster_name: (!r.cluster_name.is_empty()).then_some(r.cluster_name),
        };
        let run_id = crate::restore::start(&self.coord, req).await?;
        Ok(Response::new(pb::StartBackupResponse {
            run_id: run_id.to_string(),
            tag: String::new(),
        }))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let url = req.into_inner().from_store_url;
        let store = if url.is_empty() {
            Arc::clone(&self.coord.store)
        } else {
            ringvault_common::store::open(&url).await.map_err(invalid)?
        };
        let backups = crate::restore::list_backups(&store)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListBackupsResponse { backups }))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let rows = self
            .coord
            .db
            .call(|db| db.workers())
            .await
            .map_err(internal)?;
        let workers = rows
            .into_iter()
            .map(|w| pb::WorkerStatus {
                alive: self.coord.alive(w.last_seen_ms),
                last_seen_unix_ms: w.last_seen_ms,
                node: Some(pb::NodeInfo {
                    cluster_name: w.cluster_name,
                    host_id: w.host_id,
                    address: w.address,
                    datacenter: w.datacenter,
                    rack: w.rack,
                    tokens: w.tokens,
                    data_dirs: w.data_dirs,
                    cassandra_version: w.cassandra_version,
                    worker_address: w.worker_address,
                    free_bytes: Vec::new(),
                    partitioner: String::new(),
                }),
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }
}
