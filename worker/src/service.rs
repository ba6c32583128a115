//! The worker's gRPC edge: each handler parses its request ([`crate::convert`]), calls the
//! node's domain code ([`LocalNode`], [`crate::snapshot`], [`crate::staged`],
//! [`crate::schema`]) and converts the answer back. Domain errors become a status in one place
//! ([`WorkerError::into_status`]); event streams of long jobs (Upload, Download) are forwarded
//! by one [`forward`].
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringvault_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::WorkerError;
use crate::metrics::{Op, WorkerMetrics};
use crate::snapshot::SnapshotOptions;
use crate::upload::{UploadEvent, Uploader};

pub use crate::node::{DataDirsError, LocalNode, Resolved};

/// The tonic `Worker` service.
pub struct WorkerService {
    node: Arc<LocalNode>,
}

impl WorkerService {
    /// Serves `node`.
    pub fn new(node: Arc<LocalNode>) -> Self {
        Self { node }
    }
}

/// A stream of a long job's events, as sent to the coordinator.
type EventStream<P> = Pin<Box<dyn tokio_stream::Stream<Item = Result<P, Status>> + Send>>;

/// How one kind of long job's events are forwarded.
struct Forwarding<E, P> {
    /// For the task error and the log line (`upload`, `download`).
    what: &'static str,
    /// Counted as failed when the job fails.
    op: Op,
    /// Counts an event in the metrics.
    count: fn(&WorkerMetrics, &E),
    /// The messages for events that were queued together.
    to_proto: fn(Vec<E>) -> Vec<P>,
    /// The error a failed job ends the stream with.
    failed: fn(anyhow::Error) -> WorkerError,
}

const UPLOAD: Forwarding<UploadEvent, pb::UploadEvent> = Forwarding {
    what: "upload",
    op: Op::Upload,
    count: WorkerMetrics::upload_event,
    to_proto: |events| {
        ringvault_proto::coalesce::upload_events(
            events.into_iter().map(convert::upload_event).collect(),
        )
    },
    failed: WorkerError::Internal,
};

/// [`UPLOAD`] for a coordinator that does not read `FilesDone`: one message per event.
const UPLOAD_ONE_BY_ONE: Forwarding<UploadEvent, pb::UploadEvent> = Forwarding {
    to_proto: |events| events.into_iter().map(convert::upload_event).collect(),
    ..UPLOAD
};

const DOWNLOAD: Forwarding<crate::restore::DownloadEvent, pb::DownloadEvent> = Forwarding {
    what: "download",
    op: Op::Download,
    count: WorkerMetrics::download_event,
    to_proto: |events| events.into_iter().map(convert::download_event).collect(),
    failed: |e| WorkerError::refused(format!("{e:#}")),
};

/// Streams a job's events to the caller as they come, counting each; a caller that goes away
/// aborts the job, and a failed job ends the stream with its error (counted and logged).
/// Events that queued up while the previous message was sent go together (up to
/// [`ringvault_proto::coalesce::MAX_EVENTS`]), so a fast job sends fewer, larger messages and
/// a slow one is not delayed. `guard` is held until the stream ends.
fn forward<E: Send + 'static, P: Send + 'static>(
    how: Forwarding<E, P>,
    metrics: Arc<WorkerMetrics>,
    mut events: mpsc::Receiver<E>,
    job: tokio::task::JoinHandle<anyhow::Result<()>>,
    guard: impl Send + 'static,
) -> EventStream<P> {
    let (out_tx, out_rx) = mpsc::channel::<Result<P, Status>>(256);
    tokio::spawn(async move {
        let _guard = guard;
        while let Some(first) = events.recv().await {
            let batch = ringvault_proto::coalesce::queued(first, || events.try_recv().ok());
            for ev in &batch {
                (how.count)(&metrics, ev);
            }
            for msg in (how.to_proto)(batch) {
                if out_tx.send(Ok(msg)).await.is_err() {
                    job.abort();
                    return;
                }
            }
        }
        let end = match job.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => (how.failed)(e),
            Err(e) => WorkerError::internal(format!("{} task: {e}", how.what)),
        }
        .into_status();
        metrics.error(how.op);
        tracing::error!(error = %end.message(), "{} failed", how.what);
        let _ = out_tx.send(Err(end)).await;
    });
    Box::pin(ReceiverStream::new(out_rx))
}

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        self.node.require_data_dirs().await?;
        let info = self.node.info().await.map_err(WorkerError::from)?;
        Ok(Response::new(info))
    }

    async fn get_ring(
        &self,
        _: Request<pb::GetRingRequest>,
    ) -> Result<Response<pb::GetRingResponse>, Status> {
        let cql = self.node.cql().await.map_err(WorkerError::from)?;
        let nodes = crate::topology::ring(cql)
            .await
            .map_err(WorkerError::from)?;
        Ok(Response::new(pb::GetRingResponse {
            nodes: nodes.into_iter().map(convert::ring_node).collect(),
        }))
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let cql = self.node.cql().await.map_err(WorkerError::from)?;
        let tables = cql.tables().await.map_err(WorkerError::from)?;
        Ok(Response::new(pb::ListTablesResponse {
            tables: tables.into_iter().map(convert::table_ref).collect(),
        }))
    }

    async fn check_storage(
        &self,
        req: Request<pb::CheckStorageRequest>,
    ) -> Result<Response<pb::CheckStorageResponse>, Status> {
        let url = req.into_inner().store_url;
        let store = self.node.open_store(&url).await?;
        store.check().await.map_err(|e| {
            WorkerError::refused(format!("store {} is not usable: {e}", store.describe()))
        })?;
        Ok(Response::new(pb::CheckStorageResponse {}))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let req = req.into_inner();
        let tag = convert::tag(&req.tag)?;
        let opts = SnapshotOptions {
            min_free_bytes: req.min_free_bytes,
            replace_existing: req.replace_existing,
            ttl: (req.ttl_seconds > 0).then(|| Duration::from_secs(req.ttl_seconds)),
        };
        self.node
            .take_snapshot(&tag, &req.selection.unwrap_or_default(), &opts)
            .await?;
        Ok(Response::new(pb::SnapshotResponse {
            taken_at_unix_ms: now_ms(),
        }))
    }

    async fn find_snapshot(
        &self,
        req: Request<pb::FindSnapshotRequest>,
    ) -> Result<Response<pb::FindSnapshotResponse>, Status> {
        let tag = convert::tag(&req.into_inner().tag)?;
        let dirs = self.node.snapshot_dirs(&tag).await?;
        Ok(Response::new(pb::FindSnapshotResponse {
            dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
        }))
    }

    async fn clear_snapshot(
        &self,
        req: Request<pb::ClearSnapshotRequest>,
    ) -> Result<Response<pb::ClearSnapshotResponse>, Status> {
        let tag = convert::tag(&req.into_inner().tag)?;
        let existed = self.node.clear_snapshot(&tag).await?;
        Ok(Response::new(pb::ClearSnapshotResponse { existed }))
    }

    async fn describe_schema(
        &self,
        _: Request<pb::DescribeSchemaRequest>,
    ) -> Result<Response<pb::DescribeSchemaResponse>, Status> {
        let cql = self.node.cql().await.map_err(WorkerError::from)?;
        let rows = cql.describe_schema().await.map_err(WorkerError::from)?;
        Ok(Response::new(pb::DescribeSchemaResponse {
            schema_cql: crate::cql::schema_script(&rows),
            rows: rows.into_iter().map(convert::schema_row).collect(),
        }))
    }

    async fn apply_schema(
        &self,
        req: Request<pb::ApplySchemaRequest>,
    ) -> Result<Response<pb::ApplySchemaResponse>, Status> {
        let req = req.into_inner();
        let applied = self.node.apply_schema(&req.objects, req.dry_run).await?;
        Ok(Response::new(pb::ApplySchemaResponse { applied }))
    }

    type DownloadStream = EventStream<pb::DownloadEvent>;

    async fn download(
        &self,
        req: Request<tonic::Streaming<pb::DownloadRequest>>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let (req, files) = receive_download(req.into_inner()).await?;
        self.node.check_store(&req.store_url)?;
        let concurrency = self.node.concurrency_for(req.concurrency)?;
        let run = convert::run_id(&req.backup_run_id)?;
        let attempt = convert::attempt_id(&req.attempt_id)?;
        let mut files = files
            .into_iter()
            .map(convert::staged_file)
            .collect::<Result<Vec<_>, _>>()?;
        let selections = req
            .from_manifests
            .into_iter()
            .map(convert::manifest_selection)
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.node.open_store(&req.store_url).await?;
        if !selections.is_empty() {
            files.extend(
                crate::restore::list_from_manifests(store.as_ref(), &run, &selections)
                    .await
                    .map_err(|e| WorkerError::refused(format!("{e:#}")))?,
            );
        }
        // Two entries for one path would be fetched into one file: refused before anything
        // is written.
        crate::restore::refuse_duplicates(&files).map_err(WorkerError::invalid)?;
        self.node
            .check_staging_space(files.iter().map(|f| f.size).sum())?;
        let (ev_tx, ev_rx) = mpsc::channel(256);
        let job = tokio::spawn(crate::restore::download(
            store,
            self.node.staging.clone(),
            run,
            attempt,
            files,
            concurrency,
            crate::throttle::Throttle::new(req.bandwidth_bytes_per_sec),
            ev_tx,
        ));
        let metrics = Arc::clone(&self.node.metrics);
        Ok(Response::new(forward(DOWNLOAD, metrics, ev_rx, job, ())))
    }

    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let table = convert::staged_table(req.into_inner().table)?;
        let output = self.node.import_staged(&table).await?;
        Ok(Response::new(pb::ImportResponse { output }))
    }

    async fn load(
        &self,
        req: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let req = req.into_inner();
        let table = convert::staged_table(req.table)?;
        let output = self
            .node
            .load_staged(&table, &req.hosts, &req.target_keyspace)
            .await?;
        Ok(Response::new(pb::LoadResponse { output }))
    }

    async fn check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let writes = req.into_inner().writes;
        self.node
            .check_access(&writes)
            .await
            .map_err(WorkerError::refused)?;
        Ok(Response::new(pb::CheckAccessResponse {}))
    }

    async fn clean_staging(
        &self,
        req: Request<pb::CleanStagingRequest>,
    ) -> Result<Response<pb::CleanStagingResponse>, Status> {
        let run = convert::run_id(&req.into_inner().backup_run_id)?;
        self.node.clean_staging(&run).await?;
        Ok(Response::new(pb::CleanStagingResponse {}))
    }

    async fn drop_scratch_keyspace(
        &self,
        req: Request<pb::DropScratchKeyspaceRequest>,
    ) -> Result<Response<pb::DropScratchKeyspaceResponse>, Status> {
        let ks = req.into_inner().keyspace;
        crate::scratch::check_scratch(&ks).map_err(WorkerError::invalid)?;
        let cql = self.node.cql().await.map_err(WorkerError::from)?;
        let existed = cql
            .drop_scratch_keyspace(&ks)
            .await
            .map_err(WorkerError::from)?;
        tracing::info!(keyspace = %ks, existed, "scratch keyspace dropped");
        Ok(Response::new(pb::DropScratchKeyspaceResponse { existed }))
    }

    async fn count_scratch_table(
        &self,
        req: Request<pb::CountScratchTableRequest>,
    ) -> Result<Response<pb::CountScratchTableResponse>, Status> {
        let req = req.into_inner();
        crate::scratch::check_scratch(&req.keyspace).map_err(WorkerError::invalid)?;
        convert::table_name(&req.table)?;
        let cql = self.node.cql().await.map_err(WorkerError::from)?;
        let c = cql
            .count_scratch_table(&req.keyspace, &req.table, req.sample)
            .await
            .map_err(|e| WorkerError::refused(format!("{e:#}")))?;
        Ok(Response::new(pb::CountScratchTableResponse {
            partitions: c.partitions,
            rows: c.rows,
            sampled_partitions: c.sampled_partitions,
            sampled_rows: c.sampled_rows,
        }))
    }

    type UploadStream = EventStream<pb::UploadEvent>;

    async fn upload(
        &self,
        req: Request<pb::UploadRequest>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let req = req.into_inner();
        self.node.check_store(&req.store_url)?;
        let concurrency = self.node.concurrency_for(req.concurrency)?;
        let tag = convert::tag(&req.tag)?;
        let run_id = convert::run_id(&req.run_id)?;
        let resolved = self
            .node
            .resolve(&req.selection.unwrap_or_default())
            .await?;
        self.node.require_data_dirs().await?;
        self.node
            .require_snapshot_for_upload(&tag, &resolved)
            .await?;
        let store = self.node.open_store(&req.store_url).await?;
        let files = self.node.snapshot_files(&tag, resolved).await?;
        let uploader = Arc::new(Uploader {
            run_id,
            store,
            cache: self.node.cache.clone(),
            concurrency,
            throttle: crate::throttle::Throttle::new(req.bandwidth_bytes_per_sec),
            gentle: self.node.gentle_reads,
            store_key: crate::hash_cache::store_key(&req.store_url),
            trust_seen: req.trust_seen_blobs,
            held_pages_max: crate::upload::HELD_PAGES_MAX,
        });
        let (ev_tx, ev_rx) = mpsc::channel::<UploadEvent>(256);
        let metrics = Arc::clone(&self.node.metrics);
        let in_progress = metrics.upload_started();
        let job = tokio::spawn(uploader.run(files, ev_tx));
        let how = if req.accepts_files_done {
            UPLOAD
        } else {
            UPLOAD_ONE_BY_ONE
        };
        Ok(Response::new(forward(
            how,
            metrics,
            ev_rx,
            job,
            in_progress,
        )))
    }
}

/// Most files one Download may list.
const MAX_DOWNLOAD_FILES: usize = 10_000_000;

/// Reads a Download's chunks: the header from the first message (later ones may repeat it or
/// leave it empty), the files from all.
async fn receive_download(
    mut stream: tonic::Streaming<pb::DownloadRequest>,
) -> Result<(pb::DownloadRequest, Vec<pb::RestoreFile>), Status> {
    let mut head = stream
        .message()
        .await?
        .ok_or_else(|| WorkerError::invalid("empty Download request stream"))?;
    let mut files = std::mem::take(&mut head.files);
    while let Some(mut chunk) = stream.message().await? {
        let same = |a: &str, b: &str| a.is_empty() || a == b;
        if !same(&chunk.backup_run_id, &head.backup_run_id)
            || !same(&chunk.store_url, &head.store_url)
            || !same(&chunk.attempt_id, &head.attempt_id)
        {
            return Err(WorkerError::invalid(
                "a later Download chunk names another run, store or attempt",
            )
            .into());
        }
        if !chunk.from_manifests.is_empty() {
            return Err(WorkerError::invalid(
                "from_manifests belongs in the first Download chunk only",
            )
            .into());
        }
        files.append(&mut chunk.files);
        if files.len() > MAX_DOWNLOAD_FILES {
            return Err(WorkerError::invalid(format!(
                "more than {MAX_DOWNLOAD_FILES} files in one Download"
            ))
            .into());
        }
    }
    Ok((head, files))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// A test kind: events are numbers, failures refusals.
    const NUMBERS: Forwarding<u64, u64> = Forwarding {
        what: "count",
        op: Op::Download,
        count: |_, _| {},
        to_proto: |ns| ns.into_iter().map(|n| n * 10).collect(),
        failed: |e| WorkerError::refused(format!("{e:#}")),
    };

    /// The messages an upload's queued events become, for a coordinator that reads
    /// `FilesDone` or one that does not.
    async fn upload_messages(
        how: Forwarding<UploadEvent, pb::UploadEvent>,
    ) -> anyhow::Result<Vec<pb::UploadEvent>> {
        use ringvault_common::manifest::fixtures::{self, FixtureFile};
        let run = ringvault_common::RunId::new();
        let host =
            ringvault_common::manifest::HostId::parse("4e5dcf79-dd51-4419-9aaf-4510118f5425")?;
        let files = ["nb-1-big-Data.db", "nb-1-big-TOC.txt"]
            .map(|name| FixtureFile::named("ks", "t", name, 10));
        let manifest = fixtures::node_manifest(&run, &host, files.into());
        let (tx, rx) = mpsc::channel(8);
        tx.send(UploadEvent::Plan {
            files: 2,
            bytes: 20,
        })
        .await?;
        for entry in manifest.files {
            tx.send(UploadEvent::Progress { bytes: 10 }).await?;
            tx.send(UploadEvent::FileDone {
                entry,
                mtime_ns: 0,
                uploaded: true,
                hash_cached: false,
            })
            .await?;
        }
        drop(tx);
        let job = tokio::spawn(async { anyhow::Ok(()) });
        let out: Vec<_> = forward(how, Arc::default(), rx, job, ()).collect().await;
        Ok(out.into_iter().collect::<Result<_, _>>()?)
    }

    #[tokio::test]
    async fn files_done_batches_only_for_a_coordinator_that_reads_them() -> anyhow::Result<()> {
        use pb::upload_event::Event;
        let kinds = |msgs: &[pb::UploadEvent]| -> Vec<&'static str> {
            msgs.iter()
                .map(|m| match &m.event {
                    Some(Event::Plan(_)) => "plan",
                    Some(Event::Progress(_)) => "progress",
                    Some(Event::File(_)) => "file",
                    Some(Event::Files(_)) => "files",
                    None => "none",
                })
                .collect()
        };
        let batched = upload_messages(UPLOAD).await?;
        assert_eq!(kinds(&batched), ["plan", "files"]);
        let Some(Event::Files(f)) = &batched[1].event else {
            anyhow::bail!("no FilesDone");
        };
        assert_eq!((f.files.len(), f.bytes_read), (2, 20));
        let one_by_one = upload_messages(UPLOAD_ONE_BY_ONE).await?;
        assert_eq!(
            kinds(&one_by_one),
            ["plan", "progress", "file", "progress", "file"]
        );
        Ok(())
    }

    #[tokio::test]
    async fn events_queued_together_are_converted_together() -> anyhow::Result<()> {
        // A kind whose message is the sum of the events it stands for.
        const SUMS: Forwarding<u64, u64> = Forwarding {
            to_proto: |ns| vec![ns.iter().sum()],
            ..NUMBERS
        };
        let (tx, rx) = mpsc::channel(8);
        for n in 1..=3 {
            tx.send(n).await?;
        }
        drop(tx);
        let job = tokio::spawn(async { anyhow::Ok(()) });
        let out: Vec<_> = forward(SUMS, Arc::default(), rx, job, ()).collect().await;
        let out: Vec<u64> = out.into_iter().map(|r| r.expect("no error")).collect();
        assert_eq!(out, [6], "three queued events, one message");
        Ok(())
    }

    #[tokio::test]
    async fn events_pass_in_order_and_a_finished_job_ends_the_stream() {
        let (tx, rx) = mpsc::channel(4);
        let job = tokio::spawn(async move {
            for n in 1..=3 {
                tx.send(n).await?;
            }
            anyhow::Ok(())
        });
        let out: Vec<_> = forward(NUMBERS, Arc::default(), rx, job, ())
            .collect()
            .await;
        let out: Vec<u64> = out.into_iter().map(|r| r.expect("no error")).collect();
        assert_eq!(out, [10, 20, 30]);
    }

    #[tokio::test]
    async fn a_failed_job_ends_the_stream_with_its_error_and_is_counted() {
        let (tx, rx) = mpsc::channel(4);
        let job = tokio::spawn(async move {
            tx.send(1).await?;
            anyhow::bail!("disk gone")
        });
        let metrics = Arc::new(WorkerMetrics::default());
        let out: Vec<_> = forward(NUMBERS, Arc::clone(&metrics), rx, job, ())
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().ok(), Some(&10));
        let e = out[1].as_ref().expect_err("the job's error");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.message(), "disk gone");
        assert!(
            metrics
                .render()
                .contains("ringvault_worker_errors_total{op=\"download\"} 1"),
            "{}",
            metrics.render()
        );
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_aborts_the_job() {
        let (tx, rx) = mpsc::channel(1);
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
        let job = tokio::spawn(async move {
            // Dropped when the job is aborted: the receiver then sees the sender gone.
            let _gone = gone_tx;
            for n in 0.. {
                tx.send(n).await?;
            }
            anyhow::Ok(())
        });
        let mut stream = forward(NUMBERS, Arc::default(), rx, job, ());
        assert!(stream.next().await.is_some());
        drop(stream);
        assert!(gone_rx.await.is_err(), "the job ended");
    }
}
