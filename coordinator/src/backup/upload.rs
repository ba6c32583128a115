//! Stage `upload`: every node streams its snapshot to the store in parallel. The coordinator
//! follows each node's event stream, validates every file entry, publishes progress, and
//! persists progress and file rows in batches (every second, or sooner when 50,000 rows wait;
//! followers wait beyond that, so memory stays bounded), never per event. A node whose
//! worker restarts (or whose stream breaks) gets its upload re-issued: the worker re-walks the
//! same snapshot and sends only blobs the store does not have.
//!
//! Workers may report a cached file's blob as present without asking the store when they saw
//! it there recently (`trust_seen_blobs`): the commit stage checks every blob of the run
//! anyway, and when one is missing it calls [`upload_checked`], which re-issues every node's
//! upload with each blob asked for.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::hash::ContentHash;
use ringvault_common::manifest::FileEntry;
use ringvault_common::{Identifier, RelativeName};
use ringvault_proto::v1 as pb;
use tokio::sync::Notify;

use super::{PlannedNode, Retry, RunContext};
use crate::catalog::FileTotals;
use crate::db::RunFileRow;
use crate::run::NodeState;

/// What one node reported: its file rows are in the database (`run_files`), not here, so a
/// run of many nodes and files holds none of them in memory.
pub struct NodeFiles {
    pub host_id: String,
    pub files: u64,
    pub bytes: u64,
}

/// Runs every node's upload; fails naming the first node that failed.
pub async fn upload(ctx: &RunContext, nodes: &[PlannedNode]) -> anyhow::Result<Vec<NodeFiles>> {
    upload_with(ctx, nodes, ctx.coord.opts.trust_seen_blobs).await
}

/// [`upload`] again, every worker asking the store about every blob (none taken on trust):
/// the commit stage's answer to a blob found missing. Rows are upserted, so the run's file
/// list stays one list.
pub async fn upload_checked(
    ctx: &RunContext,
    nodes: &[PlannedNode],
) -> anyhow::Result<Vec<NodeFiles>> {
    upload_with(ctx, nodes, false).await
}

async fn upload_with(
    ctx: &RunContext,
    nodes: &[PlannedNode],
    trust_seen: bool,
) -> anyhow::Result<Vec<NodeFiles>> {
    let pending = Arc::new(PendingRows::default());
    let flusher = {
        let pending = Arc::clone(&pending);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // After a slow flush, the next one second later, not a burst of them.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = pending.full.notified() => {}
                }
                if let Err(e) = flush(ctx, &pending).await {
                    tracing::warn!(error = %format!("{e:#}"), "persisting progress");
                }
            }
        }
    };
    if !trust_seen {
        for n in nodes {
            ctx.handle.update_node(&n.info.host_id, |p| {
                p.files_done = 0;
                p.bytes_done = 0;
            });
        }
    }
    let parallel = ctx.req.limits.parallel_nodes(nodes.len());
    let calls: Vec<_> = nodes
        .iter()
        .map(|n| upload_node(ctx, n, &pending, trust_seen))
        .collect();
    let work = futures::stream::iter(calls)
        .buffer_unordered(parallel)
        .try_collect::<Vec<NodeFiles>>();
    let result = tokio::select! {
        r = work => r,
        _ = flusher => unreachable_flusher(),
        _ = ctx.handle.cancel.cancelled() => Err(anyhow::anyhow!("cancelled by the operator")),
    };
    // The node's failure, if any, is the error to report; a failed last flush otherwise.
    let flushed = flush(ctx, &pending).await;
    let files = result?;
    flushed?;
    Ok(files)
}

fn unreachable_flusher() -> anyhow::Result<Vec<NodeFiles>> {
    Err(anyhow::anyhow!("progress flusher stopped"))
}

/// Rows waiting at most for the flusher: about 12 MB. Followers wait beyond it.
const PENDING_ROWS_MAX: usize = 50_000;

/// File rows received and not yet written, shared by every node's follower and the flusher.
/// Bounded: a follower that finds [`PENDING_ROWS_MAX`] rows waiting wakes the flusher and waits
/// until it has taken them, so a coordinator behind SQLite slows the workers' streams (gRPC
/// flow control) instead of holding ever more rows. At most two batches are in memory: the one
/// being written and the one filling.
#[derive(Default)]
struct PendingRows {
    rows: Mutex<Vec<RunFileRow>>,
    /// Wakes the flusher before its tick.
    full: Notify,
    /// Wakes the followers once the flusher has taken the rows.
    taken: Notify,
    /// Held by the flush writing rows ([`flush`]).
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl PendingRows {
    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Vec<RunFileRow>>> {
        self.rows
            .lock()
            .map_err(|_| anyhow::anyhow!("pending rows lock poisoned"))
    }

    fn push(&self, rows: Vec<RunFileRow>) -> anyhow::Result<()> {
        self.lock()?.extend(rows);
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Vec<RunFileRow>> {
        let rows = std::mem::take(&mut *self.lock()?);
        self.taken.notify_waiters();
        Ok(rows)
    }

    /// Returns once fewer than [`PENDING_ROWS_MAX`] rows wait.
    async fn room(&self) -> anyhow::Result<()> {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if self.lock()?.len() < PENDING_ROWS_MAX {
                return Ok(());
            }
            self.full.notify_one();
            taken.await;
        }
    }
}

/// Writes the pending rows. One flush at a time: the write holds `writing` until its
/// blocking task ends, even when the flusher is dropped while it waits (the upload finished),
/// so the last flush, and the commit after it, never overtake rows still being written.
async fn flush(ctx: &RunContext, pending: &PendingRows) -> anyhow::Result<()> {
    let writing = Arc::clone(&pending.writing).lock_owned().await;
    let rows = pending.take()?;
    let id = ctx.run_id.to_string();
    if !rows.is_empty() {
        ctx.coord
            .db
            .call(move |db| {
                let _writing = writing;
                db.insert_files(&id, &rows)
            })
            .await?;
    }
    ctx.persist_nodes().await
}

async fn upload_node(
    ctx: &RunContext,
    n: &PlannedNode,
    pending: &PendingRows,
    trust_seen: bool,
) -> anyhow::Result<NodeFiles> {
    let host = n.info.host_id.clone();
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        let failed = match follow(ctx, n, pending, trust_seen).await {
            Ok(files) => break Ok(files),
            Err(FollowError::Other(e)) => break Err(e),
            Err(FollowError::Call(status)) => status,
        };
        match ctx.retry_decision(n, &failed, attempt).await {
            Ok(Retry::Reissue) => ctx.handle.update_node(&host, |p| {
                p.retries += 1;
                p.files_done = 0;
                p.bytes_done = 0;
            }),
            Ok(Retry::GiveUp) => {
                break Err(anyhow::anyhow!(
                    "upload failed: {} ({:?})",
                    failed.message(),
                    failed.code()
                ));
            }
            Err(e) => break Err(e),
        }
    };
    match &result {
        Ok(_) => ctx
            .handle
            .update_node(&host, |p| p.state = NodeState::Uploaded),
        Err(e) => ctx.handle.update_node(&host, |p| {
            p.state = NodeState::Failed;
            p.error = format!("{e:#}");
        }),
    }
    result.with_context(|| n.label())
}

/// Why following one node's upload stopped.
enum FollowError {
    /// The call or its stream failed: maybe re-issue.
    Call(tonic::Status),
    /// The worker's answer was wrong: never re-issued.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for FollowError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

async fn follow(
    ctx: &RunContext,
    n: &PlannedNode,
    pending: &PendingRows,
    trust_seen: bool,
) -> Result<NodeFiles, FollowError> {
    let host: Arc<str> = Arc::from(n.info.host_id.as_str());
    ctx.handle
        .update_node(&host, |p| p.state = NodeState::Uploading);
    let req = pb::UploadRequest {
        run_id: ctx.run_id.to_string(),
        tag: ctx.tag.to_string(),
        store_url: ctx.coord.opts.store.clone(),
        selection: Some(ctx.req.selection()),
        concurrency: ctx.req.limits.upload_concurrency,
        bandwidth_bytes_per_sec: ctx.req.limits.upload_bandwidth,
        trust_seen_blobs: trust_seen,
        accepts_files_done: true,
    };
    let mut stream = n
        .client
        .clone()
        .upload(req)
        .await
        .map_err(FollowError::Call)?
        .into_inner();
    let mut plan: Option<pb::UploadPlan> = None;
    let (mut files, mut bytes) = (0u64, 0u64);
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => return Err(FollowError::Call(e)),
        };
        let batch = match msg.event {
            Some(pb::upload_event::Event::Plan(p)) => {
                ctx.handle.update_node(&host, |x| {
                    x.files_total = p.total_files;
                    x.bytes_total = p.total_bytes;
                });
                plan = Some(p);
                continue;
            }
            Some(pb::upload_event::Event::Progress(p)) => {
                ctx.handle
                    .update_node(&host, |x| x.bytes_done += p.bytes_read);
                continue;
            }
            // A worker older than `FilesDone` sends one file per message.
            Some(pb::upload_event::Event::File(done)) => pb::FilesDone {
                files: vec![done],
                bytes_read: 0,
            },
            Some(pb::upload_event::Event::Files(batch)) => batch,
            None => continue,
        };
        let added = files_done(ctx, &host, pending, batch)?;
        files += added.files;
        bytes += added.bytes;
        pending.room().await?;
    }
    let plan = plan.ok_or_else(|| anyhow::anyhow!("worker ended the upload without a plan"))?;
    if files != plan.total_files || bytes != plan.total_bytes {
        return Err(FollowError::Other(anyhow::anyhow!(
            "worker reported {files} files / {bytes} bytes but planned {} / {}",
            plan.total_files,
            plan.total_bytes
        )));
    }
    Ok(NodeFiles {
        host_id: host.to_string(),
        files,
        bytes,
    })
}

/// Files a worker reports done: validated, counted in the run's view with one update, and
/// queued as rows for the next flush under one lock.
fn files_done(
    ctx: &RunContext,
    host: &Arc<str>,
    pending: &PendingRows,
    batch: pb::FilesDone,
) -> anyhow::Result<FileTotals> {
    let mut rows = Vec::with_capacity(batch.files.len());
    let (mut added, mut uploaded) = (FileTotals::default(), FileTotals::default());
    for d in batch.files {
        let f = d
            .file
            .ok_or_else(|| anyhow::anyhow!("worker sent a file event without a file"))?;
        let entry = entry_from_proto(&f)?;
        added.files += 1;
        added.bytes += entry.size;
        if d.uploaded {
            uploaded.files += 1;
            uploaded.bytes += entry.size;
        }
        rows.push(RunFileRow {
            host_id: Arc::clone(host),
            keyspace: entry.keyspace.into(),
            table: entry.table.into(),
            table_id: entry.table_id,
            name: entry.name.into(),
            data_dir_index: entry.data_dir_index,
            size: entry.size,
            hash: entry.hash.into(),
            uploaded: d.uploaded,
            sstable: entry.sstable,
        });
    }
    ctx.handle.update_node(host, |x| {
        x.files_done += added.files;
        x.files_uploaded += uploaded.files;
        x.bytes_uploaded += uploaded.bytes;
        x.bytes_done += batch.bytes_read;
    });
    pending.push(rows)?;
    Ok(added)
}

/// Validates a worker's file entry: names, ids and hash are checked before they are trusted.
pub fn entry_from_proto(f: &pb::FileEntry) -> anyhow::Result<FileEntry> {
    if f.table_id.len() != 32 || !f.table_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("bad table id {:?}", f.table_id);
    }
    Ok(FileEntry {
        keyspace: Identifier::parse("keyspace", &f.keyspace)?,
        table: Identifier::parse("table", &f.table)?,
        table_id: f.table_id.to_ascii_lowercase(),
        name: RelativeName::parse(&f.name)?,
        size: f.size,
        hash: ContentHash::parse(&f.hash)?,
        data_dir_index: f.data_dir_index,
        sstable: f
            .sstable
            .as_ref()
            .map(crate::restore_test::stats_from_proto),
    })
}
