//! The worker's side of a restore: downloads a node's files from the store into a staging
//! directory on the data directory's filesystem, verifying every file's size and BLAKE3 hash
//! as it is written; a file already staged is not fetched again (it is re-hashed instead), so
//! an interrupted restore resumes. Every file verified by a restore attempt is hard-linked into
//! that attempt's own directory, and only that directory is handed to `nodetool import` or
//! sstableloader: leftovers of earlier attempts, stray files and `.partial` files are never
//! imported.
//!
//! Staging layout (every component validated before it is joined: no `..`, no absolute paths):
//! - `<staging>/<backup-run>/files/<source-host>/<keyspace>/<table>/<file>`: downloaded files,
//!   kept across attempts;
//! - `<staging>/<backup-run>/attempts/<attempt>/<source-host>/<keyspace>/<table>/<file>`: the
//!   files verified by one attempt (hard links), ending in `<keyspace>/<table>` as
//!   sstableloader expects.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::hash::{ContentHash, ContentHasher};
use ringvault_common::layout;
use ringvault_common::manifest::HostId;
use ringvault_common::store::Store;
use ringvault_common::{Identifier, RelativeName, RunId};
use tokio::sync::mpsc;

/// A file to restore, validated.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub source_host: HostId,
    pub keyspace: Identifier,
    pub table: Identifier,
    pub name: RelativeName,
    pub size: u64,
    pub hash: ContentHash,
}

/// The restorable files of some tables of one backup node's manifest, as a Download names
/// them, with the totals the coordinator planned from the same manifest.
#[derive(Debug, Clone)]
pub struct ManifestSelection {
    pub source_host: HostId,
    /// (keyspace, table) whose files are restored.
    pub tables: BTreeSet<(Identifier, Identifier)>,
    pub files: u64,
    pub bytes: u64,
}

/// Lists the files of `selections` from the backup's node manifests in the store (read one at a
/// time, validated as they parse). A manifest naming another run or host, or whose selected
/// files do not add up to the totals the coordinator planned, is refused: the worker never
/// stages a different set than the plan shows.
pub async fn list_from_manifests(
    store: &dyn Store,
    run: &RunId,
    selections: &[ManifestSelection],
) -> anyhow::Result<Vec<StagedFile>> {
    let mut out = Vec::new();
    for sel in selections {
        let key = layout::node_manifest(run, &sel.source_host);
        let m: ringvault_common::manifest::NodeManifest =
            ringvault_common::store::get_json(store, &key)
                .await
                .with_context(|| format!("reading the node manifest {key}"))?;
        anyhow::ensure!(
            m.run_id == *run && m.node.host_id == sel.source_host,
            "{key} names run {} of host {}",
            m.run_id,
            m.node.host_id
        );
        let before = out.len();
        let mut bytes = 0u64;
        for f in m.files {
            if !f.is_restorable() || !sel.tables.contains(&(f.keyspace.clone(), f.table.clone())) {
                continue;
            }
            bytes += f.size;
            out.push(StagedFile {
                source_host: sel.source_host.clone(),
                keyspace: f.keyspace,
                table: f.table,
                name: f.name,
                size: f.size,
                hash: f.hash,
            });
        }
        let files = (out.len() - before) as u64;
        anyhow::ensure!(
            (files, bytes) == (sel.files, sel.bytes),
            "{key} lists {files} files ({bytes} bytes) of the selected tables, the restore plan {} ({} bytes)",
            sel.files,
            sel.bytes
        );
    }
    Ok(out)
}

/// Where one table's downloaded files of one source node are kept (across attempts).
pub fn table_dir(
    staging: &Path,
    run: &RunId,
    host: &HostId,
    ks: &Identifier,
    table: &Identifier,
) -> PathBuf {
    staging
        .join(run.as_str())
        .join("files")
        .join(host.as_str())
        .join(ks.as_str())
        .join(table.as_str())
}

/// The directory of one restore attempt.
pub fn attempt_root(staging: &Path, run: &RunId, attempt: &RunId) -> PathBuf {
    staging
        .join(run.as_str())
        .join("attempts")
        .join(attempt.as_str())
}

/// Where one attempt links one table's verified files: what Import/Load take.
pub fn attempt_table_dir(
    staging: &Path,
    run: &RunId,
    attempt: &RunId,
    host: &HostId,
    ks: &Identifier,
    table: &Identifier,
) -> PathBuf {
    attempt_root(staging, run, attempt)
        .join(host.as_str())
        .join(ks.as_str())
        .join(table.as_str())
}

/// A file list that names one file twice: refused before anything is written, since two
/// entries would be fetched into one path.
pub fn refuse_duplicates(files: &[StagedFile]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for f in files {
        let key = (
            f.source_host.as_str(),
            f.keyspace.as_str(),
            f.table.as_str(),
            f.name.as_str(),
        );
        if !seen.insert(key) {
            return Err(format!(
                "file {}.{}/{} of node {} is listed twice",
                f.keyspace, f.table, f.name, f.source_host
            ));
        }
    }
    Ok(())
}

/// What a download reports.
#[derive(Debug, Clone)]
pub enum DownloadEvent {
    Plan {
        files: u64,
        bytes: u64,
        present: u64,
    },
    Progress {
        bytes: u64,
    },
    FileDone {
        file: StagedFile,
        already_staged: bool,
    },
}

/// Where one file goes.
struct Paths {
    /// The downloaded file, kept across attempts.
    kept: PathBuf,
    /// Its link in the attempt's directory.
    linked: PathBuf,
}

fn paths(staging: &Path, run: &RunId, attempt: &RunId, f: &StagedFile) -> Paths {
    Paths {
        kept: table_dir(staging, run, &f.source_host, &f.keyspace, &f.table).join(f.name.as_str()),
        linked: attempt_table_dir(staging, run, attempt, &f.source_host, &f.keyspace, &f.table)
            .join(f.name.as_str()),
    }
}

/// Downloads and verifies `files` for restore attempt `attempt`, linking each verified file
/// into the attempt's directory (started afresh); refuses duplicates and, up front, a staging
/// filesystem without the space.
#[allow(clippy::too_many_arguments)] // one call site; the settings of one Download request
pub async fn download(
    store: Arc<dyn Store>,
    staging: PathBuf,
    run: RunId,
    attempt: RunId,
    files: Vec<StagedFile>,
    concurrency: usize,
    throttle: crate::throttle::Throttle,
    events: mpsc::Sender<DownloadEvent>,
) -> anyhow::Result<()> {
    refuse_duplicates(&files).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("creating staging directory {}", staging.display()))?;
    // The attempt's directory holds only what this call verifies: a re-issued download of the
    // same attempt starts it again.
    let root = attempt_root(&staging, &run, &attempt);
    match tokio::fs::remove_dir_all(&root).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", root.display())),
    }
    // What is already staged is linked and verified again, not fetched.
    let mut present = Vec::with_capacity(files.len());
    for f in &files {
        present.push(link_if_staged(&paths(&staging, &run, &attempt, f), f).await?);
    }
    let missing: u64 = files
        .iter()
        .zip(&present)
        .filter(|(_, p)| !**p)
        .map(|(f, _)| f.size)
        .sum();
    let free = free_bytes(&staging)?;
    if missing > free {
        anyhow::bail!(
            "not enough disk for staging: {missing} bytes to download, {free} bytes free in {}",
            staging.display()
        );
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let n_present = present.iter().filter(|p| **p).count() as u64;
    send(
        &events,
        DownloadEvent::Plan {
            files: files.len() as u64,
            bytes: total,
            present: n_present,
        },
    )
    .await?;
    futures::stream::iter(files.into_iter().zip(present))
        .map(|(f, present)| {
            let (store, events) = (Arc::clone(&store), events.clone());
            let p = paths(&staging, &run, &attempt, &f);
            let throttle = throttle.clone();
            async move {
                if !present {
                    fetch(store.as_ref(), &f, &p, &throttle, &events).await?;
                } else {
                    send(&events, DownloadEvent::Progress { bytes: f.size }).await?;
                }
                send(
                    &events,
                    DownloadEvent::FileDone {
                        file: f,
                        already_staged: present,
                    },
                )
                .await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Links a file kept by an earlier attempt into this attempt and hashes the link (the very
/// inode that will be imported); a mismatch removes the link and says "fetch it".
async fn link_if_staged(p: &Paths, f: &StagedFile) -> anyhow::Result<bool> {
    match tokio::fs::metadata(&p.kept).await {
        Ok(m) if m.is_file() && m.len() == f.size => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("stat {}", p.kept.display())),
    }
    link(&p.kept, &p.linked).await?;
    let linked = p.linked.clone();
    let hash = tokio::task::spawn_blocking(move || hash_file(&linked))
        .await
        .context("hashing task")??;
    let len = tokio::fs::metadata(&p.linked)
        .await
        .with_context(|| format!("stat {}", p.linked.display()))?
        .len();
    if hash == f.hash && len == f.size {
        return Ok(true);
    }
    tokio::fs::remove_file(&p.linked)
        .await
        .with_context(|| format!("removing {}", p.linked.display()))?;
    Ok(false)
}

/// Hard-links `from` as `to` (which must not exist), creating `to`'s directory.
async fn link(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    tokio::fs::hard_link(from, to)
        .await
        .with_context(|| format!("linking {} to {}", from.display(), to.display()))
}

fn hash_file(path: &Path) -> anyhow::Result<ContentHash> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

async fn fetch(
    store: &dyn Store,
    f: &StagedFile,
    p: &Paths,
    throttle: &crate::throttle::Throttle,
    events: &mpsc::Sender<DownloadEvent>,
) -> anyhow::Result<()> {
    let label = format!(
        "{}.{}/{} from node {}",
        f.keyspace, f.table, f.name, f.source_host
    );
    if let Some(dir) = p.kept.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // A temporary file of this fetch alone, created exclusively (never one left by another).
    let partial = p.kept.with_file_name(format!(
        "{}.{}.partial",
        p.kept
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let job = FetchJob {
        f,
        partial: &partial,
        label: &label,
        throttle,
        events,
    };
    let result = fetch_into(store, &job).await;
    let result = match result {
        // Linked before it is renamed into place: the attempt gets exactly the bytes checked.
        Ok(()) => match link(&partial, &p.linked).await {
            Ok(()) => tokio::fs::rename(&partial, &p.kept)
                .await
                .with_context(|| format!("renaming {}", partial.display())),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

/// Bytes gathered from the network before one blocking write (and hash) of them: network
/// chunks are small (16-64 KiB), and a write call per chunk costs more than the write.
const WRITE_BLOCK: usize = 4 << 20;

/// One blob being fetched into its own partial file: what the backup recorded of it, where it
/// goes, what errors call it, and the run's throttle and event stream.
struct FetchJob<'a> {
    f: &'a StagedFile,
    partial: &'a Path,
    label: &'a str,
    throttle: &'a crate::throttle::Throttle,
    events: &'a mpsc::Sender<DownloadEvent>,
}

async fn fetch_into(store: &dyn Store, job: &FetchJob<'_>) -> anyhow::Result<()> {
    if let Some(blob) = store.local_path(&layout::blob(&job.f.hash)) {
        return copy_local(&blob, job).await;
    }
    let out = create_partial(job.partial)?;
    let mut sink = BlockSink {
        out,
        hasher: ContentHasher::new(),
        path: job.partial.to_path_buf(),
    };
    let mut stream = store
        .get(&layout::blob(&job.f.hash))
        .await
        .with_context(|| format!("fetching {}", job.label))?;
    let mut block = bytes::BytesMut::with_capacity(WRITE_BLOCK.min(job.f.size as usize));
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("fetching {}", job.label))?;
        job.throttle.take(chunk.len() as u64).await;
        written += chunk.len() as u64;
        if written > job.f.size {
            break;
        }
        block.extend_from_slice(&chunk);
        if block.len() >= WRITE_BLOCK {
            let n = block.len() as u64;
            sink = write_block(sink, block.split().freeze()).await?;
            send(job.events, DownloadEvent::Progress { bytes: n }).await?;
        }
    }
    let n = block.len() as u64;
    let sink = write_block(sink, block.freeze()).await?;
    if n > 0 {
        send(job.events, DownloadEvent::Progress { bytes: n }).await?;
    }
    settle(sink.out, sink.hasher, sink.path, job.f, job.label, written).await
}

/// Syncs a fetched file and refuses it if its size or hash is not what the backup recorded.
async fn settle(
    out: std::fs::File,
    hasher: ContentHasher,
    path: PathBuf,
    f: &StagedFile,
    label: &str,
    written: u64,
) -> anyhow::Result<()> {
    let got = tokio::task::spawn_blocking(move || -> anyhow::Result<ContentHash> {
        out.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        Ok(hasher.finish())
    })
    .await
    .context("syncing task")??;
    check_fetched(f, label, written, &got)
}

/// Creates a fetch's own partial file (never one that exists), readable for hashing.
fn create_partial(partial: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(partial)
        .with_context(|| format!("creating {}", partial.display()))
}

/// Refuses a fetched file whose size or hash is not what the backup recorded.
fn check_fetched(
    f: &StagedFile,
    label: &str,
    written: u64,
    got: &ContentHash,
) -> anyhow::Result<()> {
    if written != f.size || *got != f.hash {
        anyhow::bail!(
            "{label}: the stored blob does not match the backup (expected {} bytes with hash {}, got {}{} bytes with hash {got}); nothing was imported",
            f.size,
            f.hash,
            if written > f.size { "more than " } else { "" },
            written
        );
    }
    Ok(())
}

/// Bytes copied per step of a local copy, then hashed from the copy before the next step.
const COPY_CHUNK: u64 = 8 << 20;

/// Copies a blob kept as a local file (a `file://` store) into `partial` without passing
/// its bytes through user memory: `copy_file_range(2)` (std falls back to a buffered copy
/// where the kernel cannot), a step of [`COPY_CHUNK`] at a time. Each step's bytes are then
/// hashed from the copy itself, mapped from the page cache, so what is verified is what will
/// be imported. Throttled and reported a step at a time, like a streamed fetch.
async fn copy_local(blob: &Path, job: &FetchJob<'_>) -> anyhow::Result<()> {
    let src = std::fs::File::open(blob)
        .with_context(|| format!("fetching {}: opening {}", job.label, blob.display()))?;
    let out = create_partial(job.partial)?;
    let mut copy = LocalCopy {
        src,
        out,
        hasher: ContentHasher::new(),
        written: 0,
        path: job.partial.to_path_buf(),
    };
    loop {
        let (c, n) = tokio::task::spawn_blocking(move || copy.step().map(|n| (copy, n)))
            .await
            .context("copying task")??;
        copy = c;
        if n == 0 {
            break;
        }
        job.throttle.take(n).await;
        send(job.events, DownloadEvent::Progress { bytes: n }).await?;
        if copy.written > job.f.size {
            break;
        }
    }
    let written = copy.written;
    settle(copy.out, copy.hasher, copy.path, job.f, job.label, written).await
}

/// A local copy in progress: the blob, the partial file, and the hash of what was copied.
struct LocalCopy {
    src: std::fs::File,
    out: std::fs::File,
    hasher: ContentHasher,
    written: u64,
    path: PathBuf,
}

impl LocalCopy {
    /// Copies up to [`COPY_CHUNK`] more bytes and hashes them as they now are in the copy;
    /// returns how many (0 at the blob's end).
    fn step(&mut self) -> anyhow::Result<u64> {
        use std::io::Read;
        let n = std::io::copy(&mut (&self.src).take(COPY_CHUNK), &mut &self.out)
            .with_context(|| format!("copying into {}", self.path.display()))?;
        if n == 0 {
            return Ok(0);
        }
        let len = usize::try_from(n).context("copy step larger than memory")?;
        // SAFETY: the mapping is read-only and of a file this fetch created exclusively (a
        // unique `.partial` name, `create_new`); nothing else writes or truncates it, and the
        // mapping is dropped before the next write to it.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(self.written)
                .len(len)
                .populate()
                .map(&self.out)
        }
        .with_context(|| format!("mapping {}", self.path.display()))?;
        self.hasher.update(&map);
        self.written += n;
        Ok(n)
    }
}

/// A partial file being written, with the hash of what was written so far.
struct BlockSink {
    out: std::fs::File,
    hasher: ContentHasher,
    path: PathBuf,
}

/// Hashes and appends one block off the async threads; hands the sink back.
async fn write_block(mut sink: BlockSink, block: bytes::Bytes) -> anyhow::Result<BlockSink> {
    use std::io::Write;
    if block.is_empty() {
        return Ok(sink);
    }
    tokio::task::spawn_blocking(move || -> anyhow::Result<BlockSink> {
        sink.hasher.update(&block);
        sink.out
            .write_all(&block)
            .with_context(|| format!("writing {}", sink.path.display()))?;
        Ok(sink)
    })
    .await
    .context("writing task")?
}

fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

async fn send(events: &mpsc::Sender<DownloadEvent>, e: DownloadEvent) -> anyhow::Result<()> {
    events
        .send(e)
        .await
        .map_err(|_| anyhow::anyhow!("the coordinator stopped listening"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn file(hash: ContentHash, size: u64) -> anyhow::Result<StagedFile> {
        Ok(StagedFile {
            source_host: HostId::parse("4e5dcf79-dd51-4419-9aaf-4510118f5425")?,
            keyspace: Identifier::parse("keyspace", "ks")?,
            table: Identifier::parse("table", "t")?,
            name: RelativeName::parse("nb-1-big-Data.db")?,
            size,
            hash,
        })
    }

    async fn run_download(
        store: &Arc<dyn Store>,
        staging: &Path,
        run: &RunId,
        attempt: &RunId,
        files: Vec<StagedFile>,
    ) -> anyhow::Result<Vec<bool>> {
        Ok(download_counting(store, staging, run, attempt, files)
            .await?
            .0)
    }

    /// Runs a download; returns, per file done, whether it was already staged, and the sum
    /// of the progress reported.
    async fn download_counting(
        store: &Arc<dyn Store>,
        staging: &Path,
        run: &RunId,
        attempt: &RunId,
        files: Vec<StagedFile>,
    ) -> anyhow::Result<(Vec<bool>, u64)> {
        let (tx, mut rx) = mpsc::channel(64);
        let collect = tokio::spawn(async move {
            let (mut out, mut progress) = (Vec::new(), 0u64);
            while let Some(e) = rx.recv().await {
                match e {
                    DownloadEvent::FileDone { already_staged, .. } => out.push(already_staged),
                    DownloadEvent::Progress { bytes } => progress += bytes,
                    DownloadEvent::Plan { .. } => {}
                }
            }
            (out, progress)
        });
        download(
            Arc::clone(store),
            staging.to_path_buf(),
            run.clone(),
            attempt.clone(),
            files,
            2,
            crate::throttle::Throttle::new(0),
            tx,
        )
        .await?;
        Ok(collect.await?)
    }

    /// The directory of `attempt` that `f` is linked into.
    fn linked_dir(staging: &Path, run: &RunId, attempt: &RunId, f: &StagedFile) -> PathBuf {
        attempt_table_dir(staging, run, attempt, &f.source_host, &f.keyspace, &f.table)
    }

    fn names(dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    }

    /// A node manifest of `host` in `run` with, per (keyspace, table, name), a file of
    /// `size` bytes.
    fn node_manifest(
        run: &RunId,
        host: &HostId,
        files: &[(&str, &str, &str, u64)],
    ) -> anyhow::Result<ringvault_common::manifest::NodeManifest> {
        use ringvault_common::manifest::fixtures::{self, FixtureFile};
        Ok(fixtures::node_manifest(
            run,
            host,
            files
                .iter()
                .map(|&(ks, t, name, size)| FixtureFile::named(ks, t, name, size))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn lists_the_selected_tables_from_the_node_manifest_and_refuses_other_totals()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = file_store(dir.path(), true).await?;
        let run = RunId::new();
        let host = HostId::parse("4e5dcf79-dd51-4419-9aaf-4510118f5425")?;
        let m = node_manifest(
            &run,
            &host,
            &[
                ("ks", "t", "nb-1-big-Data.db", 100),
                ("ks", "t", "nb-1-big-Index.db", 10),
                ("ks", "t", "manifest.json", 5),
                ("ks", "t", ".idx/nb-1-big-Data.db", 7),
                ("ks", "other", "nb-2-big-Data.db", 1000),
                ("ks2", "t", "nb-3-big-Data.db", 3000),
            ],
        )?;
        store
            .put(
                &layout::node_manifest(&run, &host),
                Bytes::from(serde_json::to_vec(&m)?),
            )
            .await?;
        let selection = |files, bytes| -> anyhow::Result<ManifestSelection> {
            Ok(ManifestSelection {
                source_host: host.clone(),
                tables: [(
                    Identifier::parse("keyspace", "ks")?,
                    Identifier::parse("table", "t")?,
                )]
                .into(),
                files,
                bytes,
            })
        };
        // Only ks.t's SSTable components: not its bookkeeping, not another table or keyspace.
        let listed = list_from_manifests(store.as_ref(), &run, &[selection(2, 110)?]).await?;
        let mut names: Vec<String> = listed.iter().map(|f| f.name.to_string()).collect();
        names.sort();
        assert_eq!(names, vec!["nb-1-big-Data.db", "nb-1-big-Index.db"]);
        assert!(listed.iter().all(|f| f.source_host == host
            && f.keyspace.as_str() == "ks"
            && f.table.as_str() == "t"));
        assert_eq!(
            listed[0].hash,
            ContentHash::of(listed[0].name.as_str().as_bytes())
        );
        // Totals that differ from what the plan counted: refused, naming the manifest.
        let err = list_from_manifests(store.as_ref(), &run, &[selection(3, 110)?])
            .await
            .expect_err("a manifest with other totals than the plan was accepted");
        assert!(
            format!("{err:#}").contains(
                "lists 2 files (110 bytes) of the selected tables, the restore plan 3 (110 bytes)"
            ),
            "{err:#}"
        );
        // A manifest stored under one host's key but naming another: refused.
        let other = HostId::parse("0e5dcf79-dd51-4419-9aaf-4510118f5425")?;
        store
            .put(
                &layout::node_manifest(&run, &other),
                Bytes::from(serde_json::to_vec(&m)?),
            )
            .await?;
        let mut wrong = selection(2, 110)?;
        wrong.source_host = other;
        let err = list_from_manifests(store.as_ref(), &run, &[wrong])
            .await
            .expect_err("a manifest naming another host was accepted");
        assert!(format!("{err:#}").contains("of host 4e5dcf79"), "{err:#}");
        // A run with no manifest for the host: refused, naming the key.
        let err = list_from_manifests(store.as_ref(), &RunId::new(), &[selection(2, 110)?])
            .await
            .expect_err("a missing manifest was accepted");
        assert!(
            format!("{err:#}").contains("reading the node manifest runs/"),
            "{err:#}"
        );
        Ok(())
    }

    /// A file store under `dir`, opened as the worker opens it; with `local: false` its
    /// local paths are hidden, so blobs are streamed as from an object store.
    async fn file_store(dir: &Path, local: bool) -> anyhow::Result<Arc<dyn Store>> {
        let inner =
            ringvault_common::store::open(&format!("file://{}", dir.join("store").display()))
                .await?;
        let store: Arc<dyn Store> =
            Arc::new(crate::test_store::Recording::new(inner, local, local));
        assert_eq!(
            store
                .local_path(&layout::blob(&ContentHash::of(b"x")))
                .is_some(),
            local
        );
        Ok(store)
    }

    #[tokio::test]
    async fn copies_from_a_local_store_verifies_resumes_and_refuses_corrupt_blobs()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        verifies_resumes_and_refuses_corrupt(dir.path(), file_store(dir.path(), true).await?).await
    }

    #[tokio::test]
    async fn streams_from_an_object_store_verifies_resumes_and_refuses_corrupt_blobs()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        verifies_resumes_and_refuses_corrupt(dir.path(), file_store(dir.path(), false).await?).await
    }

    /// A blob is fetched, verified and linked; a second attempt links what is staged without
    /// fetching; a blob whose bytes no longer match its hash is refused and leaves nothing.
    async fn verifies_resumes_and_refuses_corrupt(
        dir: &Path,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<()> {
        let data = Bytes::from_static(b"sstable bytes");
        let good = ContentHash::of(&data);
        store.put(&layout::blob(&good), data.clone()).await?;
        let staging = dir.join("staging");
        let run = RunId::new();
        let first = RunId::new();
        let f = file(good.clone(), data.len() as u64)?;
        assert_eq!(
            run_download(&store, &staging, &run, &first, vec![f.clone()]).await?,
            vec![false]
        );
        // Second attempt: already staged, verified again and linked, not fetched.
        let second = RunId::new();
        assert_eq!(
            run_download(&store, &staging, &run, &second, vec![f.clone()]).await?,
            vec![true]
        );
        let linked = linked_dir(&staging, &run, &second, &f);
        assert_eq!(names(&linked)?, vec!["nb-1-big-Data.db"]);
        // A blob whose bytes no longer match its hash is refused, naming the file.
        let other = RunId::new();
        let claimed = ContentHash::of(b"what the backup recorded");
        store
            .put(
                &layout::blob(&claimed),
                Bytes::from_static(b"what the backup recorded!"),
            )
            .await?;
        let err = run_download(&store, &staging, &other, &first, vec![file(claimed, 24)?])
            .await
            .expect_err("corrupt blob accepted");
        assert!(
            format!("{err:#}").contains("ks.t/nb-1-big-Data.db"),
            "{err:#}"
        );
        let kept = table_dir(&staging, &other, &f.source_host, &f.keyspace, &f.table);
        assert!(names(&kept)?.is_empty(), "corrupt or partial file left");
        let linked = linked_dir(&staging, &other, &first, &f);
        assert!(
            !linked.join("nb-1-big-Data.db").exists(),
            "corrupt file linked"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_local_blob_is_copied_in_steps_hashed_from_the_copy_and_a_longer_one_refused()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = file_store(dir.path(), true).await?;
        // Two whole copy steps and a ragged end, of bytes that do not repeat.
        let len = 2 * COPY_CHUNK as usize + 4097;
        let data: Vec<u8> = (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8)
            .collect();
        let hash = ContentHash::of(&data);
        let blob = layout::blob(&hash);
        store.put(&blob, Bytes::from(data.clone())).await?;
        let staging = dir.path().join("staging");
        let (run, attempt) = (RunId::new(), RunId::new());
        let f = file(hash.clone(), len as u64)?;
        let (done, progress) =
            download_counting(&store, &staging, &run, &attempt, vec![f.clone()]).await?;
        assert_eq!(done, vec![false]);
        assert_eq!(progress, len as u64, "every byte counted once");
        let linked = linked_dir(&staging, &run, &attempt, &f);
        assert!(
            std::fs::read(linked.join("nb-1-big-Data.db"))? == data,
            "copy differs"
        );
        let kept = table_dir(&staging, &run, &f.source_host, &f.keyspace, &f.table);
        assert_eq!(
            names(&kept)?,
            vec!["nb-1-big-Data.db"],
            "a partial file left"
        );
        // The blob is untouched, a separate file (a copy, not a link).
        let path = store.local_path(&blob).expect("a local store");
        assert!(std::fs::read(&path)? == data, "blob changed");
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                std::fs::metadata(&path)?.nlink(),
                1,
                "the blob was linked, not copied"
            );
        }
        // A blob holding more than the backup recorded is refused, naming the file.
        let other = RunId::new();
        let mut longer = data[..COPY_CHUNK as usize].to_vec();
        let short = file(ContentHash::of(&longer), COPY_CHUNK)?;
        longer.extend_from_slice(b"appended");
        store
            .put(&layout::blob(&short.hash), Bytes::from(longer))
            .await?;
        let err = download_counting(&store, &staging, &other, &attempt, vec![short])
            .await
            .expect_err("a longer blob accepted");
        assert!(
            format!("{err:#}").contains(&format!("expected {COPY_CHUNK} bytes"))
                && format!("{err:#}").contains("got more than"),
            "{err:#}"
        );
        let kept = table_dir(&staging, &other, &f.source_host, &f.keyspace, &f.table);
        assert!(names(&kept)?.is_empty(), "a refused copy left behind");
        Ok(())
    }

    #[tokio::test]
    async fn an_attempt_holds_only_the_files_it_verified() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = file_store(dir.path(), true).await?;
        let data = Bytes::from_static(b"sstable bytes");
        let good = ContentHash::of(&data);
        store.put(&layout::blob(&good), data.clone()).await?;
        let staging = dir.path().join("staging");
        let run = RunId::new();
        let f = file(good.clone(), data.len() as u64)?;
        // Leftovers in the kept directory, and a stale attempt directory of the same attempt.
        let kept = table_dir(&staging, &run, &f.source_host, &f.keyspace, &f.table);
        std::fs::create_dir_all(&kept)?;
        std::fs::write(kept.join("nb-999-big-Data.db"), b"planted")?;
        std::fs::write(kept.join("x.partial"), b"planted")?;
        std::fs::write(kept.join("nb-1-big-Data.db.partial"), b"planted")?;
        let attempt = RunId::new();
        let linked = linked_dir(&staging, &run, &attempt, &f);
        std::fs::create_dir_all(&linked)?;
        std::fs::write(linked.join("nb-998-big-Data.db"), b"stale")?;
        run_download(&store, &staging, &run, &attempt, vec![f]).await?;
        assert_eq!(names(&linked)?, vec!["nb-1-big-Data.db"]);
        assert_eq!(
            std::fs::read(linked.join("nb-1-big-Data.db"))?,
            data.to_vec()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_file_listed_twice_is_refused_before_anything_is_written() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = file_store(dir.path(), true).await?;
        let staging = dir.path().join("staging");
        let a = file(ContentHash::of(b"a"), 1)?;
        let b = file(ContentHash::of(b"b"), 1)?;
        let err = run_download(&store, &staging, &RunId::new(), &RunId::new(), vec![a, b])
            .await
            .expect_err("duplicate accepted");
        assert!(format!("{err:#}").contains("listed twice"), "{err:#}");
        assert!(!staging.exists(), "staging written");
        Ok(())
    }
}
