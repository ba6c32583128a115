//! The `Coordinator` gRPC service for the CLI. Thin: validate, convert proto ↔ domain, hand off
//! to [`crate::backup`] and [`crate::db`].
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringvault_common::security::Role;
use ringvault_common::security::authz::principal;
use ringvault_common::{Identifier, RunId, SnapshotTag};
use ringvault_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::Coordinator;
use crate::backup::{self, BackupRequest};
use crate::db::{ScheduleEventRow, ScheduleRow};
use crate::limits::RunLimits;
use crate::schedule::cron::Cron;

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
                let mut view = backup::run_view(&run, &nodes, &tables);
                view.datacenters = db.run_datacenters(&id)?;
                Ok(Some(view))
            })
            .await
            .map_err(internal)?;
        found.ok_or_else(|| Status::not_found(format!("run {run_id} not found")))
    }

    /// Opens a `--from-store` URL, refused unless it is inside `--allow-from-store` (or is the
    /// coordinator's own store).
    async fn open_from_store(
        &self,
        url: &str,
    ) -> Result<Arc<dyn ringvault_common::store::Store>, Status> {
        self.check_from_store(url)?;
        ringvault_common::store::open(url).await.map_err(invalid)
    }

    fn check_from_store(&self, url: &str) -> Result<(), Status> {
        self.coord.from_store_allowlist.check(url).map_err(|e| {
            tracing::warn!(error = %e, "refused --from-store");
            Status::permission_denied(e.to_string())
        })
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

/// Validates a keyspace/table selection: plain names, never a keyspace without data of its own
/// (`system`, `system_schema`, the virtual ones), and tables only with exactly one keyspace.
fn selection(
    keyspaces: &[String],
    tables: &[String],
) -> Result<(Vec<Identifier>, Vec<Identifier>), Status> {
    if let Some(k) = keyspaces.iter().find(|k| {
        ringvault_common::cql::NON_DATA_KEYSPACES
            .iter()
            .any(|s| s.eq_ignore_ascii_case(k))
    }) {
        return Err(Status::invalid_argument(format!(
            "keyspace {k} cannot be backed up or restored: {} hold node-local state, the schema \
             (saved with every backup and recreated from it) or virtual tables, not data",
            ringvault_common::cql::NON_DATA_KEYSPACES.join(", ")
        )));
    }
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
type VerifyStream = Pin<Box<dyn Stream<Item = Result<pb::VerifyEvent, Status>> + Send>>;

/// The most parts in flight per node a run may ask for.
pub const MAX_UPLOAD_CONCURRENCY: u32 = 256;

fn limits_from(l: Option<pb::RunLimits>) -> Result<RunLimits, Status> {
    let l = l
        .map(|l| RunLimits {
            upload_concurrency: l.upload_concurrency,
            upload_bandwidth: l.upload_bandwidth,
            nodes_at_once: l.nodes_at_once,
        })
        .unwrap_or_default();
    if l.upload_concurrency > MAX_UPLOAD_CONCURRENCY {
        return Err(Status::invalid_argument(format!(
            "concurrency {} is over the limit of {MAX_UPLOAD_CONCURRENCY} parts in flight per node",
            l.upload_concurrency
        )));
    }
    Ok(l)
}

fn limits_to(l: RunLimits) -> pb::RunLimits {
    pb::RunLimits {
        upload_concurrency: l.upload_concurrency,
        upload_bandwidth: l.upload_bandwidth,
        nodes_at_once: l.nodes_at_once,
    }
}

/// A schedule id: 1–48 of `a-z 0-9 _ -`, starting with a letter or digit.
fn schedule_id(id: &str) -> Result<String, Status> {
    let ok = !id.is_empty()
        && id.len() <= 48
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(id.to_string())
    } else {
        Err(Status::invalid_argument(format!(
            "schedule id {id:?} must be 1-48 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        )))
    }
}

fn schedule_view(s: &ScheduleRow, events: &[ScheduleEventRow]) -> pb::Schedule {
    pb::Schedule {
        id: s.id.clone(),
        cron: s.cron.clone(),
        keyspaces: s.keyspaces.clone(),
        tables: s.tables.clone(),
        cluster_name: s.cluster_name.clone(),
        retention: Some(pb::RetentionPolicy {
            keep_last: s.keep_last,
            keep_days: s.keep_days,
        }),
        limits: Some(limits_to(s.limits)),
        missed: s.missed.clone(),
        paused: s.paused,
        next_due_unix_ms: if s.paused { 0 } else { s.next_due_ms },
        recent: events
            .iter()
            .map(|e| pb::ScheduleEvent {
                due_unix_ms: e.due_ms,
                at_unix_ms: e.at_ms,
                outcome: e.outcome.clone(),
                run_id: e.run_id.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        restore_test: false,
        last_restore_test: None,
    }
}

/// Tables or problems per verify message (each a few hundred bytes).
const VERIFY_CHUNK: usize = 2_000;

fn verify_report(r: &crate::verify::VerifyReport) -> pb::VerifyReport {
    pb::VerifyReport {
        run_id: r.run_id.clone(),
        deep: r.deep,
        files: r.files,
        blobs: r.blobs,
        bytes: r.bytes,
        bytes_read: r.bytes_read,
        ok: r.ok(),
        elapsed_ms: r.elapsed_ms,
        tables: r
            .tables
            .iter()
            .map(|t| pb::VerifyTable {
                host_id: t.host_id.clone(),
                address: t.address.clone(),
                keyspace: t.keyspace.clone(),
                table: t.table.clone(),
                files: t.files,
                bytes: t.bytes,
                problems: t.problems,
            })
            .collect(),
        problems: r
            .problems
            .iter()
            .map(|p| pb::VerifyProblem {
                host_id: p.host_id.clone(),
                address: p.address.clone(),
                keyspace: p.keyspace.clone(),
                table: p.table.clone(),
                name: p.name.clone(),
                hash: p.hash.clone(),
                kind: p.kind.to_string(),
                detail: p.detail.clone(),
            })
            .collect(),
    }
}

fn purge_report(r: &crate::purge::PurgeReport) -> pb::PurgeReport {
    pb::PurgeReport {
        dry_run: r.dry_run,
        backups_kept: r.backups_kept,
        runs_deleted: r
            .runs_deleted
            .iter()
            .map(|e| pb::PurgedRun {
                run_id: e.run_id.clone(),
                tag: e.tag.clone(),
                cluster_name: e.cluster_name.clone(),
                group: e.group.clone(),
                committed_unix_ms: e.committed_unix_ms,
                reason: e.reason.clone(),
            })
            .collect(),
        blobs_total: r.blobs_total,
        blobs_referenced: r.blobs_referenced,
        blobs_deleted: r.blobs_deleted,
        bytes_deleted: r.bytes_deleted,
        blobs_too_young: r.blobs_too_young,
        objects_deleted: r.objects_deleted,
        delete_requests: r.delete_requests,
        leftovers_deleted: r.leftovers_deleted,
        elapsed_ms: r.elapsed_ms,
        blobs_age_unknown: r.blobs_age_unknown,
        blobs_protected_late: r.blobs_protected_late,
        foreign_kept: r.foreign_kept,
    }
}

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

impl CoordinatorService {
    async fn schedule_row(&self, id: &str) -> Result<ScheduleRow, Status> {
        let id = schedule_id(id)?;
        let all = self
            .coord
            .db
            .call(|db| db.schedules())
            .await
            .map_err(internal)?;
        all.into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Status::not_found(format!("schedule {id} not found")))
    }

    async fn schedule_out(&self, s: ScheduleRow) -> Result<pb::Schedule, Status> {
        let id = s.id.clone();
        let events = self
            .coord
            .db
            .call(move |db| db.schedule_events(&id, 10))
            .await
            .map_err(internal)?;
        let mut view = schedule_view(&s, &events);
        crate::restore_test::decorate_schedule(&self.coord, &mut view).await;
        Ok(view)
    }

    async fn set_paused(&self, id: &str, paused: bool) -> Result<pb::Schedule, Status> {
        let mut s = self.schedule_row(id).await?;
        let cron = Cron::parse(&s.cron).map_err(|e| Status::internal(e.to_string()))?;
        // Resuming starts from the next window: the paused time is not "missed".
        let next = crate::schedule::next_due(&cron, crate::now_ms());
        let id = s.id.clone();
        self.coord
            .db
            .call(move |db| db.set_schedule_paused(&id, paused, next))
            .await
            .map_err(internal)?;
        s.paused = paused;
        s.next_due_ms = next;
        self.schedule_out(s).await
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
            Some(SnapshotTag::parse(&r.tag).map_err(invalid)?)
        };
        let (keyspaces, tables) = selection(&r.keyspaces, &r.tables)?;
        let cluster_name = (!r.cluster_name.is_empty()).then_some(r.cluster_name);
        let datacenters = backup::datacenters(&r.datacenters)?;
        let (run_id, tag) = backup::start(
            &self.coord,
            BackupRequest {
                tag,
                keyspaces,
                tables,
                cluster_name,
                limits: limits_from(r.limits)?,
                schedule_id: None,
                datacenters,
            },
        )
        .await?;
        Ok(Response::new(pb::StartBackupResponse {
            run_id: run_id.to_string(),
            tag: tag.to_string(),
        }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let mut run = self.load_run(&req.into_inner().run_id).await?;
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
        if !r.from_store_url.is_empty() {
            self.check_from_store(&r.from_store_url)?;
        }
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
        let run = RunId::parse(&r.run_id).map_err(invalid)?;
        let store = if r.from_store_url.is_empty() {
            Arc::clone(&self.coord.store)
        } else {
            who.require(Role::Admin, "--from-store")?;
            self.open_from_store(&r.from_store_url).await?
        };
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
        // Held for the whole verify: a purge cannot sweep what is being checked.
        let coord = Arc::clone(&self.coord);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let _no_purge = coord.purge_lock.read().await;
            let observer = ProgressToStream(tx.clone());
            let out = match crate::verify::verify(&store, &run, &opts, &observer).await {
                Ok(report) => {
                    // Tables and problems in chunks ahead of the report: never one message
                    // the size of the backup.
                    let mut r = verify_report(&report);
                    let tables = std::mem::take(&mut r.tables);
                    let problems = std::mem::take(&mut r.problems);
                    for c in tables.chunks(VERIFY_CHUNK) {
                        let ev = pb::verify_event::Event::Tables(pb::VerifyTables {
                            tables: c.to_vec(),
                        });
                        if tx
                            .send(Ok(pb::VerifyEvent { event: Some(ev) }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    for c in problems.chunks(VERIFY_CHUNK) {
                        let ev = pb::verify_event::Event::Problems(pb::VerifyProblems {
                            problems: c.to_vec(),
                        });
                        if tx
                            .send(Ok(pb::VerifyEvent { event: Some(ev) }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(pb::VerifyEvent {
                        event: Some(pb::verify_event::Event::Report(r)),
                    })
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    Err(
                        if msg.contains("not found") || msg.contains("never committed") {
                            Status::not_found(msg)
                        } else {
                            Status::internal(msg)
                        },
                    )
                }
            };
            let _ = tx.send(out).await;
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
        let grace = r.grace_secs.map(Duration::from_secs);
        let report = crate::maintenance::run_purge(
            &self.coord,
            crate::maintenance::PurgeRequest {
                dry_run: r.dry_run,
                policy: Some(policy),
                grace,
                force: r.force,
            },
        )
        .await?;
        Ok(Response::new(purge_report(&report)))
    }

    async fn add_schedule(
        &self,
        req: Request<pb::AddScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        let id = schedule_id(&r.id)?;
        let restore_test = r.restore_test;
        let cron = Cron::parse(&r.cron).map_err(invalid)?;
        if cron.next_after(chrono::Utc::now()).is_none() {
            return Err(Status::invalid_argument(format!(
                "cron expression {:?} never fires",
                r.cron
            )));
        }
        let (keyspaces, tables) = selection(&r.keyspaces, &r.tables)?;
        let missed = match r.missed.as_str() {
            "" | "run-once" => "run-once",
            "skip" => "skip",
            other => {
                return Err(Status::invalid_argument(format!(
                    "missed policy {other:?} must be run-once or skip"
                )));
            }
        };
        let retention = r.retention.unwrap_or_default();
        let now = crate::now_ms();
        let row = ScheduleRow {
            id,
            cron: cron.as_str().to_string(),
            cluster_name: r.cluster_name,
            keyspaces: keyspaces.iter().map(ToString::to_string).collect(),
            tables: tables.iter().map(ToString::to_string).collect(),
            keep_last: retention.keep_last,
            keep_days: retention.keep_days,
            limits: limits_from(r.limits)?,
            missed: missed.into(),
            paused: false,
            next_due_ms: crate::schedule::next_due(&cron, now),
            created_ms: now,
        };
        let stored = row.clone();
        self.coord
            .db
            .call(move |db| db.insert_schedule(&stored))
            .await
            .map_err(|e| Status::already_exists(format!("{e:#}")))?;
        let sid = row.id.clone();
        self.coord
            .db
            .call(move |db| crate::restore_test::store::set_schedule_option(db, &sid, restore_test))
            .await
            .map_err(internal)?;
        tracing::info!(schedule = row.id, cron = row.cron, "schedule added");
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
            .map_err(internal)?;
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
        let s = self.schedule_row(&req.into_inner().id).await?;
        let id = s.id.clone();
        self.coord
            .db
            .call(move |db| db.delete_schedule(&id))
            .await
            .map_err(internal)?;
        tracing::info!(schedule = s.id, "schedule removed");
        Ok(Response::new(self.schedule_out(s).await?))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        Ok(Response::new(
            self.set_paused(&req.into_inner().id, true).await?,
        ))
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        Ok(Response::new(
            self.set_paused(&req.into_inner().id, false).await?,
        ))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let who = principal(&req)?;
        let url = req.into_inner().from_store_url;
        let store = if url.is_empty() {
            Arc::clone(&self.coord.store)
        } else {
            who.require(Role::Admin, "--from-store")?;
            self.open_from_store(&url).await?
        };
        let mut backups = crate::restore::list_backups(&store)
            .await
            .map_err(internal)?;
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
                    instance_id: String::new(),
                    free_bytes: Vec::new(),
                    partitioner: String::new(),
                }),
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
            .map_err(invalid)?
            .to_string();
        let id = host_id.clone();
        let removed = self
            .coord
            .db
            .call(move |db| db.remove_worker(&id))
            .await
            .map_err(internal)?;
        if !removed {
            return Err(Status::not_found(format!(
                "no worker with host id {host_id}"
            )));
        }
        tracing::info!(host_id, by = %who, "worker removed");
        Ok(Response::new(pb::RemoveWorkerResponse {}))
    }
}
