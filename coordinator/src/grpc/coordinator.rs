//! The `Coordinator` gRPC service for the CLI. Thin: check the caller's role where a request
//! needs more than the RPC's, convert proto → domain ([`super::convert`]), hand off to domain
//! code, convert back; domain errors become statuses through
//! [`crate::error::CoordinatorError`].
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringvault_common::security::Role;
use ringvault_common::security::authz::principal;
use ringvault_common::{RunId, SnapshotTag};
use ringvault_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{self, limits_from, selection};
use crate::Coordinator;
use crate::backup::{self, BackupRequest};
use crate::db::ScheduleRow;
use crate::error::CoordinatorError;
use crate::schedule::manage;

/// Serves the CLI.
pub struct CoordinatorService {
    coord: Arc<Coordinator>,
}

impl CoordinatorService {
    /// A service over the coordinator's state.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }

    /// The store a request names: the coordinator's own, or a `--from-store` URL (admin only,
    /// and only inside `--allow-from-store`).
    async fn store_for(
        &self,
        who: &ringvault_common::security::authz::Principal,
        url: &str,
    ) -> Result<Arc<dyn ringvault_common::store::Store>, Status> {
        if url.is_empty() {
            return Ok(Arc::clone(&self.coord.store));
        }
        who.require(Role::Admin, "--from-store")?;
        self.check_from_store(url)?;
        ringvault_common::store::open(url)
            .await
            .map_err(|e| CoordinatorError::invalid(e.to_string()).into())
    }

    fn check_from_store(&self, url: &str) -> Result<(), CoordinatorError> {
        self.coord.from_store_allowlist.check(url).map_err(|e| {
            tracing::warn!(error = %e, "refused --from-store");
            CoordinatorError::PermissionDenied(e.to_string())
        })
    }

    async fn schedule_out(&self, s: ScheduleRow) -> Result<pb::Schedule, Status> {
        let id = s.id.clone();
        let events = self
            .coord
            .db
            .call(move |db| db.schedule_events(&id, 10))
            .await
            .map_err(CoordinatorError::Internal)?;
        let mut view = convert::schedule_view(&s, &events);
        crate::restore_test::decorate_schedule(&self.coord, &mut view).await;
        Ok(view)
    }
}

type RunStream = Pin<Box<dyn Stream<Item = Result<pb::Run, Status>> + Send>>;
type VerifyStream = Pin<Box<dyn Stream<Item = Result<pb::VerifyEvent, Status>> + Send>>;

/// Forwards verify progress to the caller's stream without ever blocking the verify.
struct ProgressToStream(tokio::sync::mpsc::Sender<Result<pb::VerifyEvent, Status>>);

impl crate::verify::VerifyObserver for ProgressToStream {
    fn progress(&self, p: crate::verify::VerifyProgress) {
        let _ = self.0.try_send(Ok(pb::VerifyEvent {
            event: Some(pb::verify_event::Event::Progress(pb::VerifyProgress {
                blobs_total: p.blobs_total,
                blobs_done: p.blobs_done,
                bytes_total: p.bytes_total,
                bytes_done: p.bytes_done,
            })),
        }));
    }
}

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
            Some(SnapshotTag::parse(&r.tag).map_err(|e| CoordinatorError::invalid(e.to_string()))?)
        };
        let (keyspaces, tables) = selection(&r.keyspaces, &r.tables)?;
        let (run_id, tag) = backup::start(
            &self.coord,
            BackupRequest {
                tag,
                keyspaces,
                tables,
                cluster_name: (!r.cluster_name.is_empty()).then_some(r.cluster_name),
                limits: limits_from(r.limits)?,
                schedule_id: None,
                datacenters: backup::datacenters(&r.datacenters)?,
            },
        )
        .await?;
        Ok(Response::new(pb::StartBackupResponse {
            run_id: run_id.to_string(),
            tag: tag.to_string(),
            restore_plan: None,
        }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let view = self.coord.run_view(&req.into_inner().run_id).await?;
        let mut run = convert::run_view(&view);
        crate::restore_test::decorate_run(&self.coord, &mut run).await;
        Ok(Response::new(run))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let runs = self.coord.recent_runs(limit).await?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs.iter().map(convert::run_view).collect(),
        }))
    }

    type WatchRunStream = RunStream;

    async fn watch_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let first = self.coord.run_view(&req.into_inner().run_id).await?;
        let Some(handle) = self.coord.runs.get(&first.run.id) else {
            let once = convert::run_view(&first);
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(once)))));
        };
        let mut rx = handle.view.subscribe();
        let coord = Arc::clone(&self.coord);
        let run_id = first.run.id.clone();
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _ = tx.send(Ok(convert::run_view(&first))).await;
            loop {
                // At most a few updates a second, whatever the event rate.
                tokio::time::sleep(Duration::from_millis(250)).await;
                if rx.changed().await.is_err() {
                    break; // run finished: the handle is gone
                }
                let view = rx.borrow_and_update().clone();
                let terminal = view.run.state.is_terminal();
                if tx.send(Ok(convert::run_view(&view))).await.is_err() || terminal {
                    return;
                }
            }
            // Send the final state as recorded.
            let last = coord
                .run_view(&run_id)
                .await
                .map(|v| convert::run_view(&v))
                .map_err(Status::from);
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
        let view = self.coord.cancel_run(&req.into_inner().run_id).await?;
        Ok(Response::new(convert::run_view(&view)))
    }

    async fn start_restore(
        &self,
        req: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::StartBackupResponse>, Status> {
        let r = req.into_inner();
        if !r.from_store_url.is_empty() {
            self.check_from_store(&r.from_store_url)?;
        }
        let backup_run =
            RunId::parse(&r.backup_run_id).map_err(|e| CoordinatorError::invalid(e.to_string()))?;
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
        if r.dry_run {
            let plan = crate::restore::dry_run(&self.coord, &req).await?;
            return Ok(Response::new(pb::StartBackupResponse {
                run_id: String::new(),
                tag: String::new(),
                restore_plan: Some(plan),
            }));
        }
        let run_id = crate::restore::start(&self.coord, req).await?;
        Ok(Response::new(pb::StartBackupResponse {
            run_id: run_id.to_string(),
            tag: String::new(),
            restore_plan: None,
        }))
    }

    type VerifyBackupStream = VerifyStream;

    async fn verify_backup(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<Self::VerifyBackupStream>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        if r.restore_test {
            who.require(Role::Operator, "verify --restore-test")?;
            let stream = crate::restore_test::verify_stream(&self.coord, r).await?;
            return Ok(Response::new(Box::pin(stream)));
        }
        if r.deep {
            who.require(Role::Operator, "verify --deep")?;
        }
        let run = RunId::parse(&r.run_id).map_err(|e| CoordinatorError::invalid(e.to_string()))?;
        let store = self.store_for(&who, &r.from_store_url).await?;
        let opts = crate::verify::VerifyOptions {
            deep: r.deep,
            bandwidth: if r.bandwidth_bytes_per_sec > 0 {
                r.bandwidth_bytes_per_sec
            } else {
                self.coord.opts.verify_bandwidth
            },
            concurrency: if r.concurrency > 0 {
                r.concurrency.min(256) as usize
            } else {
                16
            },
        };
        let coord = Arc::clone(&self.coord);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let observer = ProgressToStream(tx.clone());
            let out = crate::verify::verify_held(&coord, &store, &run, &opts, &observer).await;
            let last = match out {
                Ok(report) => {
                    // Tables and problems in chunks ahead of the report: never one message
                    // the size of the backup.
                    let (events, report) = convert::verify_events(&report);
                    for ev in events {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(report)
                }
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn purge(
        &self,
        req: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeReport>, Status> {
        let r = req.into_inner();
        let policy = crate::purge::RetentionPolicy {
            keep_last: r.keep_last.unwrap_or(self.coord.opts.keep_last),
            keep_days: r.keep_days.unwrap_or(self.coord.opts.keep_days),
        };
        let report = crate::maintenance::run_purge(
            &self.coord,
            crate::maintenance::PurgeRequest {
                dry_run: r.dry_run,
                policy: Some(policy),
                grace: r.grace_secs.map(Duration::from_secs),
                force: r.force,
            },
        )
        .await?;
        Ok(Response::new(convert::purge_report(&report)))
    }

    async fn add_schedule(
        &self,
        req: Request<pb::AddScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        let (keyspaces, tables) = selection(&r.keyspaces, &r.tables)?;
        let retention = r.retention.unwrap_or_default();
        let restore_test = r.restore_test;
        let new = manage::NewSchedule {
            id: r.id,
            cron: r.cron,
            cluster_name: r.cluster_name,
            keyspaces: keyspaces.iter().map(ToString::to_string).collect(),
            tables: tables.iter().map(ToString::to_string).collect(),
            keep_last: retention.keep_last,
            keep_days: retention.keep_days,
            limits: limits_from(r.limits)?,
            missed: r.missed,
        };
        let row = manage::add(&self.coord.db, new, crate::now_ms()).await?;
        let sid = row.id.clone();
        self.coord
            .db
            .call(move |db| crate::restore_test::store::set_schedule_option(db, &sid, restore_test))
            .await
            .map_err(CoordinatorError::Internal)?;
        Ok(Response::new(self.schedule_out(row).await?))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let rows = self
            .coord
            .db
            .call(|db| db.schedules())
            .await
            .map_err(CoordinatorError::Internal)?;
        let mut schedules = Vec::new();
        for s in rows {
            schedules.push(self.schedule_out(s).await?);
        }
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn remove_schedule(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let s = manage::remove(&self.coord.db, &req.into_inner().id).await?;
        Ok(Response::new(self.schedule_out(s).await?))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let s =
            manage::set_paused(&self.coord.db, &req.into_inner().id, true, crate::now_ms()).await?;
        Ok(Response::new(self.schedule_out(s).await?))
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let s = manage::set_paused(&self.coord.db, &req.into_inner().id, false, crate::now_ms())
            .await?;
        Ok(Response::new(self.schedule_out(s).await?))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let who = principal(&req)?;
        let store = self
            .store_for(&who, &req.into_inner().from_store_url)
            .await?;
        let mut backups = crate::restore::list_backups(&store)
            .await
            .map_err(CoordinatorError::Internal)?;
        crate::restore_test::decorate_backups(&self.coord, &mut backups).await;
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
            .map_err(CoordinatorError::Internal)?;
        let workers = rows
            .into_iter()
            .map(|w| {
                let alive = self.coord.alive(w.last_seen_ms);
                convert::worker_status(w, alive)
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn remove_worker(
        &self,
        req: Request<pb::RemoveWorkerRequest>,
    ) -> Result<Response<pb::RemoveWorkerResponse>, Status> {
        let who = principal(&req)?;
        let host_id = ringvault_common::manifest::HostId::parse(&req.into_inner().host_id)
            .map_err(|e| CoordinatorError::invalid(e.to_string()))?
            .to_string();
        let id = host_id.clone();
        let removed = self
            .coord
            .db
            .call(move |db| db.remove_worker(&id))
            .await
            .map_err(CoordinatorError::Internal)?;
        if !removed {
            return Err(
                CoordinatorError::not_found(format!("no worker with host id {host_id}")).into(),
            );
        }
        tracing::info!(host_id, by = %who, "worker removed");
        Ok(Response::new(pb::RemoveWorkerResponse {}))
    }
}
