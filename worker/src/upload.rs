//! Hashing and uploading a snapshot's files. Every file is read once: its BLAKE3 hash is
//! computed from the same chunks that go to the store. Small files (up to one part) are read
//! into one buffer, hashed, and put under their blob key unless the store has it already.
//! Large files stream part by part to a staging key and are renamed to their blob key once
//! the hash is known. A file whose (keyspace, table id, name, size, mtime) was hashed before is
//! not read at all when its blob is in the store. Memory is bounded by `concurrency` parts.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ringvault_common::RunId;
use ringvault_common::hash::{ContentHash, ContentHasher};
use ringvault_common::layout;
use ringvault_common::manifest::FileEntry;
use ringvault_common::store::Store;
use tokio::sync::{Semaphore, mpsc};

use crate::hash_cache::{FileIdentity, HashCache};
use crate::snapshot_files::SnapshotFile;

/// What an upload reports as it goes.
#[derive(Debug, Clone)]
pub enum UploadEvent {
    /// Sent first: what there is to do.
    Plan { files: u64, bytes: u64 },
    /// Bytes of a large file sent so far (delta).
    Progress { bytes: u64 },
    /// One file is in the store.
    FileDone {
        entry: FileEntry,
        mtime_ns: i128,
        uploaded: bool,
        hash_cached: bool,
    },
}

/// Settings of one upload.
pub struct Uploader {
    pub run_id: RunId,
    pub store: Arc<dyn Store>,
    pub cache: HashCache,
    /// Parts read or in flight at once.
    pub concurrency: usize,
    /// Bandwidth cap shared by every upload of this run.
    pub throttle: crate::throttle::Throttle,
}

impl Uploader {
    /// Uploads every file, reporting on `events`; fails on the first error.
    pub async fn run(
        self: Arc<Self>,
        files: Vec<SnapshotFile>,
        events: mpsc::Sender<UploadEvent>,
    ) -> anyhow::Result<()> {
        let total: u64 = files.iter().map(|f| f.size).sum();
        send(
            &events,
            UploadEvent::Plan {
                files: files.len() as u64,
                bytes: total,
            },
        )
        .await?;
        let budget = Arc::new(Semaphore::new(self.concurrency.max(1)));
        futures::stream::iter(files)
            .map(|f| {
                let me = Arc::clone(&self);
                let budget = Arc::clone(&budget);
                let events = events.clone();
                async move {
                    let path = f.path.display().to_string();
                    me.upload_one(f, budget, events)
                        .await
                        .with_context(|| format!("uploading {path}"))
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn upload_one(
        &self,
        f: SnapshotFile,
        budget: Arc<Semaphore>,
        events: mpsc::Sender<UploadEvent>,
    ) -> anyhow::Result<()> {
        let identity = FileIdentity {
            keyspace: f.keyspace.to_string(),
            table_id: f.table_id.clone(),
            name: f.name.to_string(),
            size: f.size,
            mtime_ns: f.mtime_ns,
        };
        if let Some(hash) = self.cache.get(&identity)?
            && self.blob_present(&hash, f.size).await?
        {
            send(&events, UploadEvent::Progress { bytes: f.size }).await?;
            return done(&events, &f, hash, false, true).await;
        }
        let part = self.store.part_size();
        let (hash, uploaded) = if f.size as usize <= part {
            let r = self.upload_small(&f, &budget).await?;
            send(&events, UploadEvent::Progress { bytes: f.size }).await?;
            r
        } else {
            self.upload_large(&f, &budget, &events).await?
        };
        self.cache.put(&identity, &hash)?;
        done(&events, &f, hash, uploaded, false).await
    }

    async fn blob_present(&self, hash: &ContentHash, size: u64) -> anyhow::Result<bool> {
        Ok(self
            .store
            .head(&layout::blob(hash))
            .await?
            .is_some_and(|m| m.size == size))
    }

    async fn upload_small(
        &self,
        f: &SnapshotFile,
        budget: &Semaphore,
    ) -> anyhow::Result<(ContentHash, bool)> {
        let _permit = budget.acquire().await.context("upload budget closed")?;
        let path = f.path.clone();
        let size = f.size as usize;
        let (data, hash) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Bytes, ContentHash)> {
                let file =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                let mut buf = vec![0u8; size];
                file.read_exact_at(&mut buf, 0)
                    .with_context(|| format!("reading {} ({size} bytes)", path.display()))?;
                let mut extra = [0u8; 1];
                if file.read_at(&mut extra, size as u64)? != 0 {
                    anyhow::bail!("{} grew while it was read", path.display());
                }
                let hash = ContentHash::of(&buf);
                Ok((Bytes::from(buf), hash))
            })
            .await
            .context("hashing task")??;
        if self.blob_present(&hash, f.size).await? {
            return Ok((hash, false));
        }
        self.throttle.take(data.len() as u64).await;
        self.store.put(&layout::blob(&hash), data).await?;
        Ok((hash, true))
    }

    async fn upload_large(
        &self,
        f: &SnapshotFile,
        budget: &Arc<Semaphore>,
        events: &mpsc::Sender<UploadEvent>,
    ) -> anyhow::Result<(ContentHash, bool)> {
        let part = self.store.part_size() as u64;
        let staging = layout::staging(&self.run_id, &uuid::Uuid::new_v4().to_string());
        let upload: Arc<dyn ringvault_common::store::MultipartUpload> =
            Arc::from(self.store.start_multipart(&staging).await?);
        let file =
            Arc::new(File::open(&f.path).with_context(|| format!("opening {}", f.path.display()))?);
        let mut hasher = ContentHasher::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut offset = 0u64;
        let mut number = 1u32;
        let result: anyhow::Result<()> = async {
            while offset < f.size {
                let permit = Arc::clone(budget)
                    .acquire_owned()
                    .await
                    .context("upload budget closed")?;
                let len = part.min(f.size - offset) as usize;
                let (file2, h) = (Arc::clone(&file), std::mem::take(&mut hasher));
                let (data, h) = tokio::task::spawn_blocking(
                    move || -> anyhow::Result<(Bytes, ContentHasher)> {
                        let mut buf = vec![0u8; len];
                        file2.read_exact_at(&mut buf, offset)?;
                        let mut h = h;
                        h.update(&buf);
                        Ok((Bytes::from(buf), h))
                    },
                )
                .await
                .context("reading task")??;
                hasher = h;
                self.throttle.take(data.len() as u64).await;
                let up = Arc::clone(&upload);
                let ev = events.clone();
                tasks.spawn(async move {
                    let n = data.len() as u64;
                    let r = up.put_part(number, data).await;
                    drop(permit);
                    r?;
                    let _ = ev.send(UploadEvent::Progress { bytes: n }).await;
                    anyhow::Ok(())
                });
                // Surface a failed part early instead of reading the rest of the file.
                while let Some(r) = tasks.try_join_next() {
                    r.context("part task")??;
                }
                offset += len as u64;
                number += 1;
            }
            let mut extra = [0u8; 1];
            if file.read_at(&mut extra, f.size)? != 0 {
                anyhow::bail!("{} grew while it was read", f.path.display());
            }
            while let Some(r) = tasks.join_next().await {
                r.context("part task")??;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.complete().await?;
        let hash = hasher.finish();
        if self.blob_present(&hash, f.size).await? {
            self.store
                .delete_many(std::slice::from_ref(&staging))
                .await?;
            return Ok((hash, false));
        }
        self.store.rename(&staging, &layout::blob(&hash)).await?;
        Ok((hash, true))
    }
}

/// What a `Statistics.db` says about its SSTable (partitions, rows, timestamps), recorded in
/// the node manifest for test restores. Read with a size cap; a file that cannot be parsed is
/// logged and recorded without numbers (the backup itself does not depend on them).
async fn sstable_stats(f: &SnapshotFile) -> Option<ringvault_common::sstable_stats::SstableStats> {
    use ringvault_common::sstable_stats as st;
    let name = f.name.as_str();
    if !st::is_statistics(name) || f.size > st::MAX_STATISTICS_BYTES {
        return None;
    }
    let version = st::version_of(name)?.to_string();
    let path = f.path.clone();
    let size = f.size;
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<st::SstableStats> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; size as usize];
        file.read_exact_at(&mut buf, 0)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(st::parse(&buf, &version)?)
    })
    .await;
    match r {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!(file = %f.path.display(), error = %format!("{e:#}"), "SSTable statistics not recorded");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "statistics task");
            None
        }
    }
}

async fn send(events: &mpsc::Sender<UploadEvent>, e: UploadEvent) -> anyhow::Result<()> {
    events
        .send(e)
        .await
        .map_err(|_| anyhow::anyhow!("the coordinator stopped listening"))
}

async fn done(
    events: &mpsc::Sender<UploadEvent>,
    f: &SnapshotFile,
    hash: ContentHash,
    uploaded: bool,
    hash_cached: bool,
) -> anyhow::Result<()> {
    let entry = FileEntry {
        keyspace: f.keyspace.clone(),
        table: f.table.clone(),
        table_id: f.table_id.clone(),
        name: f.name.clone(),
        size: f.size,
        hash,
        data_dir_index: f.data_dir_index,
        sstable: sstable_stats(f).await,
    };
    send(
        events,
        UploadEvent::FileDone {
            entry,
            mtime_ns: f.mtime_ns,
            uploaded,
            hash_cached,
        },
    )
    .await
}
