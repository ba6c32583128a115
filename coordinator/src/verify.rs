//! `verify`: proof that a committed backup is intact. Every blob its node manifests name must
//! be in the store with the recorded size (HEAD); `deep` downloads each distinct blob once, in
//! parallel under a bandwidth cap, and re-hashes it. The report is per node and table, with
//! every problem named (missing, wrong size, wrong hash, unreadable), plus manifest totals
//! that disagree with the node manifests.
use crate::error::CoordinatorError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use ringvault_common::RunId;
use ringvault_common::hash::{ContentHash, ContentHasher};
use ringvault_common::layout;
use ringvault_common::manifest::{FileEntry, NodeManifest};
use ringvault_common::store::Store;
use ringvault_common::throttle::Throttle;

use crate::catalog;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub deep: bool,
    /// Bytes per second read from the store in deep mode (0: unlimited).
    pub bandwidth: u64,
    /// Blobs checked at once.
    pub concurrency: usize,
}

/// Progress so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyProgress {
    pub blobs_total: u64,
    pub blobs_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

/// Receives progress while a verify runs.
pub trait VerifyObserver: Send + Sync {
    fn progress(&self, p: VerifyProgress);
}

/// One thing wrong with a backup.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub host_id: String,
    pub address: String,
    pub keyspace: String,
    pub table: String,
    pub name: String,
    pub hash: String,
    /// missing, size, hash, error, manifest
    pub kind: &'static str,
    pub detail: String,
}

/// Files of one table on one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableReport {
    pub host_id: String,
    pub address: String,
    pub keyspace: String,
    pub table: String,
    pub files: u64,
    pub bytes: u64,
    pub problems: u64,
}

/// The outcome.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub run_id: String,
    pub deep: bool,
    pub files: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub bytes_read: u64,
    pub tables: Vec<TableReport>,
    pub problems: Vec<Problem>,
    pub elapsed_ms: u64,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What is wrong with one blob, if anything.
type BlobVerdict = Option<(&'static str, String)>;

/// [`verify`] holding the coordinator's purge lock shared for the whole check: a purge cannot
/// sweep what is being checked.
pub async fn verify_held(
    coord: &crate::Coordinator,
    store: &Arc<dyn Store>,
    run: &RunId,
    opts: &VerifyOptions,
    observer: &dyn VerifyObserver,
) -> Result<VerifyReport, CoordinatorError> {
    let _no_purge = coord.runs.read_guard().await;
    verify(store, run, opts, observer).await
}

/// Verifies committed backup `run` in `store`.
pub async fn verify(
    store: &Arc<dyn Store>,
    run: &RunId,
    opts: &VerifyOptions,
    observer: &dyn VerifyObserver,
) -> Result<VerifyReport, CoordinatorError> {
    let started = Instant::now();
    let header = catalog::load_header(store, run).await?;
    let manifest = &header.manifest;
    let mut report = VerifyReport {
        run_id: run.to_string(),
        deep: opts.deep,
        ..Default::default()
    };
    // First pass over the node manifests, one at a time in memory: the distinct blobs with
    // their recorded size (a hash recorded with two sizes is a problem), and per node and
    // table the files and bytes.
    let mut blobs: BTreeMap<ContentHash, u64> = BTreeMap::new();
    let mut tables: BTreeMap<(String, String, String), TableReport> = BTreeMap::new();
    let mut nodes = catalog::node_manifests(store, manifest);
    while let Some(node) = nodes.try_next().await? {
        let totals = manifest
            .nodes
            .iter()
            .find(|t| t.host_id == node.node.host_id);
        let (files, bytes) = (
            node.files.len() as u64,
            node.files.iter().map(|f| f.size).sum::<u64>(),
        );
        if totals.is_none_or(|t| t.files != files || t.bytes != bytes) {
            report.problems.push(Problem {
                host_id: node.node.host_id.to_string(),
                address: node.node.address.clone(),
                kind: "manifest",
                detail: format!(
                    "node manifest lists {files} files / {bytes} bytes; manifest.json says {:?}",
                    totals.map(|t| (t.files, t.bytes))
                ),
                ..problem_blank()
            });
        }
        for f in &node.files {
            if let Some(size) = blobs.insert(f.hash.clone(), f.size)
                && size != f.size
            {
                report.problems.push(Problem {
                    kind: "manifest",
                    detail: format!("blob recorded with sizes {size} and {}", f.size),
                    ..file_problem(&node, f)
                });
            }
            let t = tables
                .entry(table_key(&node, f))
                .or_insert_with(|| TableReport {
                    host_id: node.node.host_id.to_string(),
                    address: node.node.address.clone(),
                    keyspace: f.keyspace.to_string(),
                    table: f.table.to_string(),
                    ..Default::default()
                });
            t.files += 1;
            t.bytes += f.size;
            report.files += 1;
            report.bytes += f.size;
        }
    }
    drop(nodes);
    let mut progress = VerifyProgress {
        blobs_total: blobs.len() as u64,
        bytes_total: if opts.deep { blobs.values().sum() } else { 0 },
        ..Default::default()
    };
    observer.progress(progress);
    let throttle = Throttle::new(opts.bandwidth);
    report.blobs = blobs.len() as u64;
    let mut checks = futures::stream::iter(blobs)
        .map(|(hash, size)| {
            let (store, throttle, deep) = (Arc::clone(store), throttle.clone(), opts.deep);
            async move {
                let verdict = check_blob(store.as_ref(), &hash, size, deep, &throttle).await;
                (hash, size, verdict)
            }
        })
        .buffer_unordered(opts.concurrency.max(1));
    let mut verdicts: BTreeMap<ContentHash, (&'static str, String)> = BTreeMap::new();
    while let Some((hash, size, verdict)) = checks.next().await {
        progress.blobs_done += 1;
        if opts.deep {
            progress.bytes_done += size;
            report.bytes_read += size;
        }
        observer.progress(progress);
        if let Some(v) = verdict {
            verdicts.insert(hash, v);
        }
    }
    drop(checks);
    // Only when a blob is wrong: a second pass names every file that refers to it.
    if !verdicts.is_empty() {
        let mut nodes = catalog::node_manifests(store, manifest);
        while let Some(node) = nodes.try_next().await? {
            for f in &node.files {
                if let Some((kind, detail)) = verdicts.get(&f.hash) {
                    if let Some(t) = tables.get_mut(&table_key(&node, f)) {
                        t.problems += 1;
                    }
                    report.problems.push(Problem {
                        kind,
                        detail: detail.clone(),
                        ..file_problem(&node, f)
                    });
                }
            }
        }
    }
    report.tables = tables.into_values().collect();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The report's key of a file's table: node address, keyspace, table.
fn table_key(node: &NodeManifest, f: &FileEntry) -> (String, String, String) {
    (
        node.node.address.clone(),
        f.keyspace.to_string(),
        f.table.to_string(),
    )
}

/// A problem naming file `f` of `node` (kind and detail blank).
fn file_problem(node: &NodeManifest, f: &FileEntry) -> Problem {
    Problem {
        host_id: node.node.host_id.to_string(),
        address: node.node.address.clone(),
        keyspace: f.keyspace.to_string(),
        table: f.table.to_string(),
        name: f.name.to_string(),
        hash: f.hash.to_string(),
        ..problem_blank()
    }
}

fn problem_blank() -> Problem {
    Problem {
        host_id: String::new(),
        address: String::new(),
        keyspace: String::new(),
        table: String::new(),
        name: String::new(),
        hash: String::new(),
        kind: "",
        detail: String::new(),
    }
}

/// Checks one blob: HEAD for its size, or (deep) its whole content re-hashed.
async fn check_blob(
    store: &dyn Store,
    hash: &ContentHash,
    size: u64,
    deep: bool,
    throttle: &Throttle,
) -> BlobVerdict {
    let key = layout::blob(hash);
    if !deep {
        return match store.head(&key).await {
            Ok(Some(m)) if m.size == size => None,
            Ok(Some(m)) => Some(("size", format!("stored {} bytes, expected {size}", m.size))),
            Ok(None) => Some(("missing", format!("{key} is not in the store"))),
            Err(e) => Some(("error", e.to_string())),
        };
    }
    let mut stream = match store.get(&key).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Some(("missing", format!("{key} is not in the store")));
        }
        Err(e) => return Some(("error", e.to_string())),
    };
    let mut hasher = ContentHasher::new();
    let mut read = 0u64;
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => {
                throttle.take(chunk.len() as u64).await;
                read += chunk.len() as u64;
                if read > size {
                    return Some((
                        "size",
                        format!("stored object is larger than the recorded {size} bytes"),
                    ));
                }
                hasher.update(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Some(("error", format!("reading {key}: {e}"))),
        }
    }
    if read != size {
        return Some(("size", format!("stored {read} bytes, expected {size}")));
    }
    let got = hasher.finish();
    (&got != hash).then(|| ("hash", format!("content hashes to {got}")))
}
