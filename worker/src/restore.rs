//! The worker's side of a restore: downloads a node's files from the store into a staging
//! directory on the data directory's filesystem, verifying every file's size and BLAKE3 hash
//! as it is written; a file already staged and verified is not fetched again, so an interrupted
//! restore resumes. Staged tables are then handed to `nodetool import` or sstableloader.
//!
//! Staging layout: `<staging>/<backup-run>/<source-host>/<keyspace>/<table>/<file>`; every
//! component is validated before it is joined (no `..`, no absolute paths).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::hash::{ContentHash, ContentHasher};
use ringvault_common::layout;
use ringvault_common::manifest::HostId;
use ringvault_common::store::Store;
use ringvault_common::{Identifier, RelativeName, RunId};
use tokio::io::AsyncWriteExt;
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

/// Where one table's files of one source node are staged.
pub fn table_dir(
    staging: &Path,
    run: &RunId,
    host: &HostId,
    ks: &Identifier,
    table: &Identifier,
) -> PathBuf {
    staging
        .join(run.as_str())
        .join(host.as_str())
        .join(ks.as_str())
        .join(table.as_str())
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

/// Downloads and verifies `files`; refuses up front when the staging filesystem lacks space.
pub async fn download(
    store: Arc<dyn Store>,
    staging: PathBuf,
    run: RunId,
    files: Vec<StagedFile>,
    concurrency: usize,
    events: mpsc::Sender<DownloadEvent>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("creating staging directory {}", staging.display()))?;
    // What is already staged and verified is not fetched again.
    let mut present = Vec::with_capacity(files.len());
    for f in &files {
        let path =
            table_dir(&staging, &run, &f.source_host, &f.keyspace, &f.table).join(f.name.as_str());
        present.push(already_staged(&path, f).await?);
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
            let (store, staging, run, events) = (
                Arc::clone(&store),
                staging.clone(),
                run.clone(),
                events.clone(),
            );
            async move {
                let path = table_dir(&staging, &run, &f.source_host, &f.keyspace, &f.table)
                    .join(f.name.as_str());
                if !present {
                    fetch(store.as_ref(), &f, &path, &events).await?;
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

async fn already_staged(path: &Path, f: &StagedFile) -> anyhow::Result<bool> {
    match tokio::fs::metadata(path).await {
        Ok(m) if m.len() == f.size => {
            let p = path.to_path_buf();
            let hash = tokio::task::spawn_blocking(move || hash_file(&p))
                .await
                .context("hashing task")??;
            Ok(hash == f.hash)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
    }
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
    path: &Path,
    events: &mpsc::Sender<DownloadEvent>,
) -> anyhow::Result<()> {
    let label = format!(
        "{}.{}/{} from node {}",
        f.keyspace, f.table, f.name, f.source_host
    );
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = path.with_file_name(format!(
        "{}.partial",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut stream = store
        .get(&layout::blob(&f.hash))
        .await
        .with_context(|| format!("fetching {label}"))?;
    let mut hasher = ContentHasher::new();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("fetching {label}"))?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
        if written > f.size {
            break;
        }
        out.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        send(
            events,
            DownloadEvent::Progress {
                bytes: chunk.len() as u64,
            },
        )
        .await?;
    }
    out.sync_all()
        .await
        .with_context(|| format!("syncing {}", partial.display()))?;
    drop(out);
    let got = hasher.finish();
    if written != f.size || got != f.hash {
        let _ = tokio::fs::remove_file(&partial).await;
        anyhow::bail!(
            "{label}: the stored blob does not match the backup (expected {} bytes with hash {}, got {}{} bytes with hash {got}); nothing was imported",
            f.size,
            f.hash,
            if written > f.size { "more than " } else { "" },
            written
        );
    }
    tokio::fs::rename(&partial, path)
        .await
        .with_context(|| format!("renaming {}", partial.display()))?;
    Ok(())
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

    #[tokio::test]
    async fn verifies_downloads_resumes_and_refuses_corrupt_blobs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ringvault_common::store::open(&format!(
            "file://{}",
            dir.path().join("store").display()
        ))
        .await?;
        let data = Bytes::from_static(b"sstable bytes");
        let good = ContentHash::of(&data);
        store.put(&layout::blob(&good), data.clone()).await?;
        let staging = dir.path().join("staging");
        let run = RunId::new();
        let (tx, mut rx) = mpsc::channel(64);
        download(
            Arc::clone(&store),
            staging.clone(),
            run.clone(),
            vec![file(good.clone(), data.len() as u64)?],
            2,
            tx,
        )
        .await?;
        let mut staged_again = None;
        while let Some(e) = rx.recv().await {
            if let DownloadEvent::FileDone { already_staged, .. } = e {
                staged_again = Some(already_staged);
            }
        }
        assert_eq!(staged_again, Some(false));
        // Second time: already staged and verified, not fetched.
        let (tx, mut rx) = mpsc::channel(64);
        download(
            Arc::clone(&store),
            staging.clone(),
            run.clone(),
            vec![file(good.clone(), data.len() as u64)?],
            2,
            tx,
        )
        .await?;
        let mut resumed = None;
        while let Some(e) = rx.recv().await {
            if let DownloadEvent::FileDone { already_staged, .. } = e {
                resumed = Some(already_staged);
            }
        }
        assert_eq!(resumed, Some(true));
        // A blob whose bytes no longer match its hash is refused, naming the file.
        let other = RunId::new();
        let claimed = ContentHash::of(b"what the backup recorded");
        store
            .put(
                &layout::blob(&claimed),
                Bytes::from_static(b"what the backup recorded!"),
            )
            .await?;
        let (tx, _rx) = mpsc::channel(64);
        let err = download(
            Arc::clone(&store),
            staging.clone(),
            other.clone(),
            vec![file(claimed, 24)?],
            2,
            tx,
        )
        .await
        .expect_err("corrupt blob accepted");
        assert!(
            format!("{err:#}").contains("ks.t/nb-1-big-Data.db"),
            "{err:#}"
        );
        let host = HostId::parse("4e5dcf79-dd51-4419-9aaf-4510118f5425")?;
        let d = table_dir(
            &staging,
            &other,
            &host,
            &Identifier::parse("k", "ks")?,
            &Identifier::parse("t", "t")?,
        );
        assert!(
            !d.join("nb-1-big-Data.db").exists(),
            "corrupt file left staged"
        );
        Ok(())
    }
}
