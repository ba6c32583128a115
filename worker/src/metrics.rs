//! The worker's Prometheus `/metrics` page (`--metrics-listen`): in-process counters of what
//! this worker did since it started (files and bytes uploaded, skipped, hashed and downloaded,
//! snapshots taken and cleared, failed operations) and the uploads in progress. They live in
//! one [`WorkerMetrics`] shared through `Arc` by the gRPC service, which counts the events its
//! uploads and downloads report.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use ringvault_common::metrics::{MetricsText, NO_LABELS};

use crate::restore::DownloadEvent;
use crate::upload::UploadEvent;

/// An operation whose failures are counted, the `op` label of `ringvault_worker_errors_total`.
/// Discriminants index [`Op::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Snapshot,
    ClearSnapshot,
    Upload,
    Download,
    Import,
    Load,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Snapshot,
        Op::ClearSnapshot,
        Op::Upload,
        Op::Download,
        Op::Import,
        Op::Load,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Snapshot => "snapshot",
            Op::ClearSnapshot => "clear_snapshot",
            Op::Upload => "upload",
            Op::Download => "download",
            Op::Import => "import",
            Op::Load => "load",
        }
    }
}

/// Counters of one worker process.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    files_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    files_skipped: AtomicU64,
    bytes_skipped: AtomicU64,
    bytes_read: AtomicU64,
    files_downloaded: AtomicU64,
    bytes_downloaded: AtomicU64,
    snapshots_taken: AtomicU64,
    snapshots_cleared: AtomicU64,
    errors: [AtomicU64; Op::ALL.len()],
    uploads_in_progress: AtomicU64,
}

/// Counts an upload as in progress until dropped.
#[derive(Debug)]
pub struct UploadInProgress(Arc<WorkerMetrics>);

impl Drop for UploadInProgress {
    fn drop(&mut self) {
        self.0.uploads_in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl WorkerMetrics {
    /// Counts one event of an upload: a finished file is uploaded or skipped (its blob was
    /// already stored), and read unless its hash came from the cache.
    pub fn upload_event(&self, ev: &UploadEvent) {
        if let UploadEvent::FileDone {
            entry,
            uploaded,
            hash_cached,
            ..
        } = ev
        {
            if *uploaded {
                add(&self.files_uploaded, 1);
                add(&self.bytes_uploaded, entry.size);
            } else {
                add(&self.files_skipped, 1);
                add(&self.bytes_skipped, entry.size);
            }
            if !*hash_cached {
                add(&self.bytes_read, entry.size);
            }
        }
    }

    /// Counts one event of a restore download: a file fetched from the store.
    pub fn download_event(&self, ev: &DownloadEvent) {
        if let DownloadEvent::FileDone {
            file,
            already_staged: false,
        } = ev
        {
            add(&self.files_downloaded, 1);
            add(&self.bytes_downloaded, file.size);
        }
    }

    /// Counts a snapshot taken.
    pub fn snapshot_taken(&self) {
        add(&self.snapshots_taken, 1);
    }

    /// Counts a snapshot cleared.
    pub fn snapshot_cleared(&self) {
        add(&self.snapshots_cleared, 1);
    }

    /// Counts a failed operation.
    pub fn error(&self, op: Op) {
        add(&self.errors[op as usize], 1);
    }

    /// Marks an upload in progress until the returned guard is dropped.
    pub fn upload_started(self: &Arc<Self>) -> UploadInProgress {
        add(&self.uploads_in_progress, 1);
        UploadInProgress(Arc::clone(self))
    }

    /// The page.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let mut m = MetricsText::new();
        m.gauge(
            "ringvault_worker_up",
            "1 while the worker serves.",
            [(NO_LABELS, 1.0)],
        );
        m.gauge(
            "ringvault_build_info",
            "Version of this ringvault worker; the value is always 1.",
            [([("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        );
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "ringvault_worker_files_uploaded_total",
                "Snapshot files this worker uploaded to the store.",
                &self.files_uploaded,
            ),
            (
                "ringvault_worker_bytes_uploaded_total",
                "Bytes of snapshot files this worker uploaded to the store.",
                &self.bytes_uploaded,
            ),
            (
                "ringvault_worker_files_skipped_total",
                "Snapshot files not uploaded because their content was already in the store.",
                &self.files_skipped,
            ),
            (
                "ringvault_worker_bytes_skipped_total",
                "Bytes of snapshot files not uploaded because their content was already in the store.",
                &self.bytes_skipped,
            ),
            (
                "ringvault_worker_bytes_read_total",
                "Bytes of snapshot files read and hashed (files whose hash was cached are not read).",
                &self.bytes_read,
            ),
            (
                "ringvault_worker_files_downloaded_total",
                "Files restores downloaded from the store (already staged files excluded).",
                &self.files_downloaded,
            ),
            (
                "ringvault_worker_bytes_downloaded_total",
                "Bytes restores downloaded from the store.",
                &self.bytes_downloaded,
            ),
            (
                "ringvault_worker_snapshots_taken_total",
                "Snapshots taken on this node.",
                &self.snapshots_taken,
            ),
            (
                "ringvault_worker_snapshots_cleared_total",
                "Snapshots that existed and were cleared on this node.",
                &self.snapshots_cleared,
            ),
        ];
        for (name, help, c) in counters {
            m.counter(name, help, [(NO_LABELS, get(c))]);
        }
        m.counter(
            "ringvault_worker_errors_total",
            "Failed operations, by operation.",
            Op::ALL
                .iter()
                .zip(&self.errors)
                .map(|(op, c)| ([("op", op.label())], get(c))),
        );
        m.gauge(
            "ringvault_worker_uploads_in_progress",
            "Upload streams (one per backup run on this node) in progress.",
            [(NO_LABELS, get(&self.uploads_in_progress))],
        );
        m.finish()
    }
}

/// Binds `addr` and serves `GET /metrics` from `metrics` on a spawned task.
pub async fn spawn(addr: SocketAddr, metrics: Arc<WorkerMetrics>) -> anyhow::Result<()> {
    let listener = ringvault_common::metrics::bind(addr)
        .await
        .with_context(|| format!("binding metrics listener {addr}"))?;
    tracing::info!(listen = %addr, "metrics serving");
    ringvault_common::metrics::serve(listener, move || {
        let metrics = Arc::clone(&metrics);
        async move { Ok(metrics.render()) }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_common::hash::ContentHash;
    use ringvault_common::manifest::FileEntry;
    use ringvault_common::{Identifier, RelativeName};

    fn entry(size: u64) -> anyhow::Result<FileEntry> {
        Ok(FileEntry {
            keyspace: Identifier::parse("keyspace", "ks")?,
            table: Identifier::parse("table", "t")?,
            table_id: "0".repeat(32),
            name: RelativeName::parse("nb-1-big-Data.db")?,
            size,
            hash: ContentHash::of(b"x"),
            data_dir_index: 0,
            sstable: None,
        })
    }

    fn line_value(page: &str, series: &str) -> Option<String> {
        page.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    #[test]
    fn counts_upload_events_errors_and_uploads_in_progress() -> anyhow::Result<()> {
        let m = Arc::new(WorkerMetrics::default());
        let done = |size, uploaded, hash_cached| -> anyhow::Result<UploadEvent> {
            Ok(UploadEvent::FileDone {
                entry: entry(size)?,
                mtime_ns: 0,
                uploaded,
                hash_cached,
            })
        };
        m.upload_event(&UploadEvent::Plan {
            files: 3,
            bytes: 111,
        });
        m.upload_event(&UploadEvent::Progress { bytes: 100 });
        m.upload_event(&done(100, true, false)?);
        m.upload_event(&done(10, false, false)?);
        m.upload_event(&done(1, false, true)?);
        m.snapshot_taken();
        m.error(Op::ClearSnapshot);
        m.error(Op::Load);
        m.error(Op::Load);
        let guard = m.upload_started();
        let page = m.render();
        for (series, want) in [
            ("ringvault_worker_up", "1"),
            ("ringvault_worker_files_uploaded_total", "1"),
            ("ringvault_worker_bytes_uploaded_total", "100"),
            ("ringvault_worker_files_skipped_total", "2"),
            ("ringvault_worker_bytes_skipped_total", "11"),
            ("ringvault_worker_bytes_read_total", "110"),
            ("ringvault_worker_snapshots_taken_total", "1"),
            ("ringvault_worker_snapshots_cleared_total", "0"),
            ("ringvault_worker_files_downloaded_total", "0"),
            ("ringvault_worker_errors_total{op=\"clear_snapshot\"}", "1"),
            ("ringvault_worker_errors_total{op=\"load\"}", "2"),
            ("ringvault_worker_errors_total{op=\"upload\"}", "0"),
            ("ringvault_worker_uploads_in_progress", "1"),
        ] {
            assert_eq!(
                line_value(&page, series).as_deref(),
                Some(want),
                "{series} in\n{page}"
            );
        }
        drop(guard);
        assert_eq!(
            line_value(&m.render(), "ringvault_worker_uploads_in_progress").as_deref(),
            Some("0")
        );
        Ok(())
    }
}
